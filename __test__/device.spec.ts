// Kernel tests: real tun devices in network namespaces that each test creates and removes.
import test from 'ava'
import { Netns, rootTest, sh, withNetns } from './helpers/netns.js'

interface PingResult {
  v4: { ok: boolean; received: number; error?: string }
  v6: { ok: boolean; received: number; error?: string }
  requests: number
  replies: number
  badReplies: number
  stats: { rxPackets: number; txPackets: number; rxReads: number; txWrites: number }
}

rootTest('ping (ICMP and ICMPv6 echo) answered from for await with write', async (t) => {
  const r = await withNetns((ns) => ns.runFixture<PingResult>('ping'))
  t.true(r.v4.ok, `ping 198.18.5.2 failed: ${r.v4.error}`)
  t.is(r.v4.received, 3)
  t.true(r.v6.ok, `ping -6 2001:db8:5::2 failed: ${r.v6.error}`)
  t.is(r.v6.received, 3)
  t.is(r.requests, 6)
  t.is(r.replies, 6)
  t.is(r.badReplies, 0)
  t.true(r.stats.txPackets >= 6)
  t.true(r.stats.rxPackets >= 6)
})

interface UdpResult {
  writeStream: { datagrams: number; intact: boolean; garbage: string }
  readStream: { found: boolean }
  v4: { inbound: { intact: boolean; checksumsValid: boolean; src: string; srcPort: number }; outbound: { intact: boolean; len: number } }
  v6: { inbound: { intact: boolean; checksumsValid: boolean; src: string; srcPort: number }; outbound: { intact: boolean; len: number } }
}

rootTest('UDP from a real socket arrives intact; a written UDP packet reaches a real socket (IPv4 and IPv6); write and read streams', async (t) => {
  const r = await withNetns((ns) => ns.runFixture<UdpResult>('udp'))
  for (const fam of ['v4', 'v6'] as const) {
    t.true(r[fam].inbound.intact, `${fam} inbound payload`)
    t.true(r[fam].inbound.checksumsValid, `${fam} inbound checksums`)
    t.true(r[fam].outbound.intact, `${fam} outbound payload`)
    t.is(r[fam].outbound.len, 1200)
  }
  t.is(r.v4.inbound.src, '198.18.6.1')
  t.is(r.writeStream.datagrams, 50, 'write stream: every datagram arrived')
  t.true(r.writeStream.intact, 'write stream: payloads intact')
  t.is(r.writeStream.garbage, 'ERR_TUN_INVALID_PACKET')
  t.true(r.readStream.found, 'read stream delivered the datagram')
})

rootTest('close while for await waits ends the loop promptly; close is idempotent; a closed device rejects with ERR_TUN_CLOSED', async (t) => {
  const r = await withNetns((ns) =>
    ns.runFixture<Record<string, unknown> & { loopEndMs: number }>('close'),
  )
  t.true(r.loopEndMs >= 0 && r.loopEndMs < 1000, `loop ended ${r.loopEndMs} ms after close`)
  t.is(r.sameClosePromise, true)
  t.is(r.thirdClose, 'resolved')
  t.is(r.abortResult, 'AbortError')
  for (const k of ['writeAfterClose', 'iterateAfterClose', 'setMtuAfterClose', 'addAddressAfterClose', 'openQueueAfterClose']) {
    t.is(r[k], 'ERR_TUN_CLOSED', k)
  }
  t.is(r.closed, true)
  // 300 ms with reads pending: a 10 ms interval fires about 30 times unless something blocks the loop.
  t.true((r.ticksWhileReading as number) >= 15, `event loop ticks while reads waited: ${r.ticksWhileReading}`)
})

interface PersistResult {
  ok: boolean
  uid: number
  code?: string
  errno?: number
  syscall?: string
}

rootTest('persist + owner: uid 65534 reopens its device without CAP_NET_ADMIN, another uid gets EPERM, it survives close and can be deleted', async (t) => {
  await withNetns(async (ns) => {
    const name = 'tgsopers0'
    const exists = async () => (await ns.ipJson<Array<{ ifname: string }>>('link', 'show')).some((l) => l.ifname === name)
    const created = await ns.runFixture<PersistResult>('persist', [name, 'create-persistent'])
    t.true(created.ok, JSON.stringify(created))
    t.true(await exists(), 'persistent device survives its creator')

    const owner = await ns.runFixture<PersistResult>('persist', [name, 'reopen'], { uid: 65534 })
    t.is(owner.uid, 65534)
    t.true(owner.ok, `owner could not reopen: ${JSON.stringify(owner)}`)
    t.true(await exists(), 'reopening with persist unset does not clear persist')

    const stranger = await ns.runFixture<PersistResult>('persist', [name, 'reopen'], { uid: 65533 })
    t.is(stranger.uid, 65533)
    t.false(stranger.ok)
    t.is(stranger.code, 'EPERM')
    t.is(stranger.errno, -1)
    t.is(stranger.syscall, 'TUNSETIFF')

    const removed = await ns.runFixture<PersistResult>('persist', [name, 'unpersist'])
    t.true(removed.ok, JSON.stringify(removed))
    t.false(await exists(), 'device is gone after persist is cleared and the last fd closed')
  })
})

rootTest('multi-queue: two queues of one device both receive traffic', async (t) => {
  const r = await withNetns((ns) => ns.runFixture<{ counts: number[]; flows: number[]; sameName: boolean }>('multiqueue'))
  t.true(r.sameName)
  t.true(r.counts[0]! > 0, `queue 0 got ${r.counts[0]}`)
  t.true(r.counts[1]! > 0, `queue 1 got ${r.counts[1]}`)
  t.is(r.counts[0]! + r.counts[1]!, 64 * 3)
})

rootTest('200 open/close cycles with a pending read leave no fd behind; await using and GC close too (also devices that waited for readiness once)', async (t) => {
  const r = await withNetns((ns) =>
    ns.runFixture<{ before: number; after: number; afterUsing: number; disposedGone: boolean; afterGc: number; leakedNames: string[]; cycles: number; distinctNames: number }>(
      'fdleak',
      ['200'],
      { timeoutMs: 120_000, nodeFlags: ['--expose-gc'] },
    ),
  )
  t.is(r.cycles, 200)
  t.true(r.after <= r.before, `fds before ${r.before}, after 200 cycles ${r.after}`)
  t.true(r.afterUsing <= r.before, 'await using closed the device')
  t.true(r.disposedGone)
  t.true(r.afterGc >= 0 && r.afterGc <= r.before, `unreferenced devices were closed by the GC: ${r.afterGc} fds, ${r.before} before`)
  t.deepEqual(r.leakedNames, [])
})

interface Snap { mtu: number; up: boolean; addresses: string[]; routes: string[]; mtuProperty?: number }

rootTest('netlink: addresses, routes, MTU and up/down as set are what the kernel reports', async (t) => {
  const r = await withNetns((ns) =>
    ns.runFixture<{ steps: Record<string, Snap>; errors: Record<string, { code?: string; errno?: number; syscall?: string; name?: string }>; failedOpenLeft: boolean; goneAfterClose: boolean }>('netlink'),
  )
  const s = r.steps
  t.is(s.opened!.mtu, 1400)
  t.is(s.opened!.mtuProperty, 1400)
  t.true(s.opened!.up)
  t.deepEqual(s.opened!.addresses, ['198.18.10.1/24', '2001:db8:10::1/64'])
  for (const route of ['198.18.10.0/24', '198.18.11.0/24', '2001:db8:10::/64', '2001:db8:11::/48']) t.true(s.opened!.routes.includes(route), `route ${route} in ${s.opened!.routes}`)
  t.is(s.mtu9000!.mtu, 9000)
  t.is(s.mtu9000!.mtuProperty, 9000)
  t.deepEqual(s.edited!.addresses, ['198.18.12.1/32', '2001:db8:10::1/64'])
  t.true(s.edited!.routes.includes('198.18.13.0/24'))
  t.false(s.edited!.routes.includes('198.18.11.0/24'))
  t.false(s.down!.up)
  t.true(s.upAgain!.up)
  t.is(r.errors.duplicateAddress!.code, 'EEXIST')
  t.is(r.errors.duplicateAddress!.syscall, 'RTM_NEWADDR')
  t.is(typeof r.errors.missingAddress!.errno, 'number')
  t.is(r.errors.missingAddress!.syscall, 'RTM_DELADDR')
  t.is(r.errors.badCidr!.name, 'RangeError')
  t.is(r.errors.badMtu!.name, 'RangeError')
  t.is(r.errors.failedOpen!.code, 'EEXIST')
  t.false(r.failedOpenLeft, 'a failed open removed its device')
  t.true(r.goneAfterClose)
})

rootTest('Tun.probe finds tun, the vnet header and TCP/UDP offload by trying', async (t) => {
  const p = await withNetns((ns) => ns.runFixture<{ tun: boolean; vnetHdr: boolean; tcpOffload: boolean; udpOffload: boolean; canCreate: boolean; kernel: string; uname: string; left: string[] }>('probe'))
  t.true(p.tun)
  t.true(p.canCreate)
  t.true(p.vnetHdr)
  t.true(p.tcpOffload)
  const [major, minor] = p.kernel.split('.').map(Number) as [number, number]
  t.is(p.udpOffload, major > 6 || (major === 6 && minor >= 2), 'USO is there exactly on Linux >= 6.2')
  t.is(p.kernel, p.uname)
  t.deepEqual(p.left, [], 'the probe device is gone')
})

test('kernel tests leave no namespace behind', async (t) => {
  if (process.getuid?.() !== 0) {
    t.pass('not root: no namespaces were created')
    return
  }
  const left = (await sh('ip', ['netns', 'list'])).split('\n').filter((l) => l.startsWith(`tgso-${process.pid}-`))
  t.deepEqual(left, [])
})

export { Netns }
