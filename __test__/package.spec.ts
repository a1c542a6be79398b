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
