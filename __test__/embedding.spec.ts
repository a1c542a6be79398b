// Embedding: worker_threads, and the privileged-helper pattern (Tun.fromFd).
import * as path from 'node:path'
import { FIXTURES, rootTest, sh, withNetns } from './helpers/netns.js'

rootTest('the addon works in three worker_threads and the main thread at once, each with its own device', async (t) => {
  const r = await withNetns((ns) => ns.runFixture<{ results: Array<{ n: number; ok: boolean; name: string }> }>('workers'))
  t.is(r.results.length, 4)
  for (const x of r.results) t.true(x.ok, `thread ${x.n}`)
  t.deepEqual(r.results.map((x) => x.name).sort(), ['wk0', 'wk1', 'wk2', 'wk3'])
})

for (const vnet of [false, true]) {
  rootTest(`Tun.fromFd: an unprivileged process uses a tun descriptor created by a privileged helper${vnet ? ' (with IFF_VNET_HDR: offload on)' : ''}`, async (t) => {
    const r = await withNetns(async (ns) => {
      const out = await sh('ip', ['netns', 'exec', ns.name, 'env', `VNET=${vnet ? 1 : 0}`, 'python3', path.join(FIXTURES, 'fdhelper.py'), 'fdtun0', '198.18.40.1/24', process.execPath, '--import', 'tsx', path.join(FIXTURES, 'fromfd.ts')])
      return JSON.parse(out.trim().split('\n').pop()!) as Record<string, unknown>
    })
    t.is(r.uid, 65534)
    t.true(['EACCES', 'EPERM'].includes(String(r.openWithoutPrivilege)), `open without privilege: ${r.openWithoutPrivilege}`)
    t.is(r.fromFdStdin, 'ERR_INVALID_ARG_VALUE')
    t.is(r.fromFdClosed, 'EBADF')
    t.is(r.fromFdNegative, 'ERR_INVALID_ARG_TYPE')
    t.is(r.name, 'fdtun0')
    t.is(r.mtu, 1500)
    t.is((r.offload as { tcp: boolean }).tcp, vnet)
    t.is(r.inbound, 'hello from an unprivileged process')
    t.is(r.outbound, 'reply through the adopted fd')
    t.is(r.closeAgain, 'ok')
  })
}
