// The install path: pack, install the tarballs elsewhere, run from there with no toolchain.
import test from 'ava'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import * as path from 'node:path'
import * as fs from 'node:fs'
import { ROOT, rootTest } from './helpers/netns.js'
import { CLI_NODE_FLAGS } from '../ts/demo.js'

/** Runs `file` and resolves with how it ended (exit code, output), whether it succeeded or not. */
function exitOf(file: string, args: readonly string[], options: { cwd?: string; timeout?: number } = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(file, args, options, (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? null) : 0, stdout, stderr }))
  })
}

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
    const r = await exitOf(process.execPath, ['--import', `data:text/javascript,${encodeURIComponent(fake)}`, path.join(ROOT, 'esm', 'index.mjs')], { cwd: ROOT, timeout: 30_000 })
    t.is(r.code, 1, r.stderr)
    t.true(r.stderr.includes(`Error: ${expected}`), r.stderr)
    t.true(r.stderr.includes("code: 'ERR_TUN_UNSUPPORTED_PLATFORM'"), r.stderr)
    t.false(/Cannot find|MODULE_NOT_FOUND|\.node/.test(r.stderr), `the native loader was not reached: ${r.stderr}`)
  })
}

// The per-platform packages say which systems they are for, so npm installs
// exactly the one that fits (and none elsewhere).
test('every napi target has a platform package whose os, cpu, libc, main, files, version and engines fit it', (t) => {
  const rootPkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string; engines: unknown; napi: { binaryName: string; targets: string[] } }
  const expected: Record<string, { dir: string; cpu: string; libc: string }> = {
    'x86_64-unknown-linux-gnu': { dir: 'linux-x64-gnu', cpu: 'x64', libc: 'glibc' },
    'aarch64-unknown-linux-gnu': { dir: 'linux-arm64-gnu', cpu: 'arm64', libc: 'glibc' },
    'x86_64-unknown-linux-musl': { dir: 'linux-x64-musl', cpu: 'x64', libc: 'musl' },
    'aarch64-unknown-linux-musl': { dir: 'linux-arm64-musl', cpu: 'arm64', libc: 'musl' },
    'armv7-unknown-linux-gnueabihf': { dir: 'linux-arm-gnueabihf', cpu: 'arm', libc: 'glibc' },
  }
  t.deepEqual([...rootPkg.napi.targets].sort(), Object.keys(expected).sort())
  t.deepEqual(fs.readdirSync(path.join(ROOT, 'npm')).sort(), Object.values(expected).map((e) => e.dir).sort())
  for (const e of Object.values(expected)) {
    const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'npm', e.dir, 'package.json'), 'utf8')) as Record<string, unknown>
    const binary = `${rootPkg.napi.binaryName}.${e.dir}.node`
    t.is(pkg.name, `tunnel-gso-${e.dir}`)
    t.deepEqual(pkg.os, ['linux'], e.dir)
    t.deepEqual(pkg.cpu, [e.cpu], e.dir)
    t.deepEqual(pkg.libc, [e.libc], `${e.dir}: libc`)
    t.is(pkg.main, binary, e.dir)
    t.deepEqual(pkg.files, [binary], e.dir)
    t.is(pkg.version, rootPkg.version, e.dir)
    t.deepEqual(pkg.engines, rootPkg.engines, e.dir)
  }
})

test('the tunnel-gso command (bin/tunnel-gso, through sh as the kernel runs it, or through node) runs node with the V8 flags that demo and bench give the VPN processes (CLI_NODE_FLAGS), and node takes them', async (t) => {
  const bin = path.join(ROOT, 'bin', 'tunnel-gso')
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { bin: Record<string, string> }
  t.is(pkg.bin['tunnel-gso'], 'bin/tunnel-gso')
  const lines = fs.readFileSync(bin, 'utf8').split('\n')
  t.is(lines[0], '#!/bin/sh')
  t.is(lines[1], `":" //; exec node ${CLI_NODE_FLAGS.join(' ')} "$0" "$@"`)
  t.true((fs.statSync(bin).mode & 0o111) !== 0, 'bin/tunnel-gso is executable')
  for (const file of ['/bin/sh', process.execPath]) {
    const r = await exitOf(file, [bin, 'no-such-command'])
    // Our usage error (2) and nothing else: not node's refusal of a flag (9, "bad option"), not a shell error.
    t.is(r.code, 2, `${file}: ${r.stderr}`)
    t.is(r.stderr.split('\n')[0], 'tunnel-gso: unknown command "no-such-command"', file)
  }
})

test("demo and bench start the CLI with CLI_NODE_FLAGS unless node was given those flags (either spelling, or in NODE_OPTIONS): the user's value wins", async (t) => {
  const show = `console.log(JSON.stringify(require(${JSON.stringify(path.join(ROOT, 'dist', 'demo.js'))}).cliArgv().filter((a) => a.startsWith('--max') && a.includes('semi'))))`
  const run = async (flags: string[], nodeOptions?: string) => {
    const env = { ...process.env, NODE_OPTIONS: nodeOptions ?? '' }
    const { stdout } = await promisify(execFile)(process.execPath, [...flags, '-e', show], { env })
    return JSON.parse(stdout) as string[]
  }
  t.deepEqual(await run([]), [...CLI_NODE_FLAGS])
  t.deepEqual(await run(['--max-semi-space-size=8']), ['--max-semi-space-size=8'])
  t.deepEqual(await run(['--max_semi_space_size=8']), ['--max_semi_space_size=8'])
  t.deepEqual(await run([], '--max-semi-space-size=2'), [], 'from NODE_OPTIONS: the child inherits it, nothing is added')
})
