// The install path: pack, install the tarballs elsewhere, run from there with no toolchain.
import test from 'ava'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import * as path from 'node:path'
import { ROOT, rootTest } from './helpers/netns.js'

const title = 'packed root + linux-x64-gnu packages install and run for await over a real tun with no cargo or compiler on PATH'
if (process.arch !== 'x64') {
  console.warn(`*** SKIPPING the install proof: it packs the linux-x64-gnu package; this is ${process.arch} ***`)
  test.skip(`${title} [x64 only]`, () => {})
} else {
  rootTest(title, async (t) => {
    const { stdout } = await promisify(execFile)('bash', [path.join(ROOT, 'scripts', 'install-proof.sh')], { timeout: 180_000 })
    t.regex(stdout, /install-proof: ok/)
  })
}

// On a system other than Linux, loading the package fails at once with a clear
// error of its own, before the native loader looks for a binary that cannot exist.
for (const platform of ['darwin', 'win32', 'freebsd']) {
  const expected = `tunnel-gso works on Linux only (TUN devices, rtnetlink); this is ${platform}/${process.arch}`
  const fake = `Object.defineProperty(process, 'platform', { value: ${JSON.stringify(platform)} })`

  test(`require('tunnel-gso') on ${platform} throws ERR_TUN_UNSUPPORTED_PLATFORM with a clear message`, async (t) => {
    const script = `${fake}
      let out
      try { require(${JSON.stringify(path.join(ROOT, 'dist', 'index.js'))}); out = 'loaded' }
      catch (e) { out = { name: e.name, code: e.code, message: e.message } }
      console.log(JSON.stringify(out))`
    const { stdout } = await promisify(execFile)(process.execPath, ['-e', script], { cwd: ROOT, timeout: 30_000 })
    t.deepEqual(JSON.parse(stdout.trim()), { name: 'Error', code: 'ERR_TUN_UNSUPPORTED_PLATFORM', message: expected })
  })

  test(`import of the ES module entry on ${platform} fails with ERR_TUN_UNSUPPORTED_PLATFORM`, async (t) => {
    // The platform is faked by a module preloaded with --import, so the entry is imported statically, as an app would.
    const r = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      execFile(process.execPath, ['--import', `data:text/javascript,${encodeURIComponent(fake)}`, path.join(ROOT, 'esm', 'index.mjs')], { cwd: ROOT, timeout: 30_000 }, (err, stdout, stderr) =>
        resolve({ code: err ? ((err as { code?: number }).code ?? null) : 0, stdout, stderr }),
      )
    })
    t.is(r.code, 1, r.stderr)
    t.true(r.stderr.includes(`Error: ${expected}`), r.stderr)
    t.true(r.stderr.includes("code: 'ERR_TUN_UNSUPPORTED_PLATFORM'"), r.stderr)
    t.false(/Cannot find|MODULE_NOT_FOUND|\.node/.test(r.stderr), `the native loader was not reached: ${r.stderr}`)
  })
}
