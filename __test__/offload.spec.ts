// The relay: two namespaces joined by two tun devices and a relay built on this
// library (`batches()` of one side into `writeBatch` of the other).
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import * as path from 'node:path'
import type { ExecutionContext } from 'ava'
import { FIXTURES, rootTest, Netns, sh, withNetns } from './helpers/netns.js'

interface Stats { rxPackets: number; rxReads: number; rxDropped: number; txPackets: number; txWrites: number }
interface TcpResult { sentBytes: number; sentSha256: string; bytes: number; sha256: string; offload: { a: { tcp: boolean; udp: boolean } }; statsA: Stats; statsB: Stats }
interface UdpResult { sent: number; size: number; datagrams: number; bad: number; wrongLength: number; bytes: number; distinct: number; offload: { a: { tcp: boolean; udp: boolean } }; statsA: Stats; statsB: Stats }

const MB100 = String(100 * 1000 * 1000)

async function relay<T>(args: string[]): Promise<T> {
  return withNetns(async (a) => {
    const b = await Netns.create()
    try {
      return await a.runFixture<T>('relay', [b.name, ...args], { timeoutMs: 240_000 })
    } finally {
      await b.destroy()
    }
  })
}

for (const family of ['4', '6']) {
  rootTest(`relay with offload: 100 MB of TCP over IPv${family} arrive byte-identical, >= 5 packets per read and per write`, async (t) => {
    const r = await relay<TcpResult>(['tcp', family, MB100, 'on'])
    t.is(r.bytes, r.sentBytes)
    t.is(r.sha256, r.sentSha256)
    t.true(r.offload.a.tcp, 'TSO accepted')
    const perRead = r.statsA.rxPackets / r.statsA.rxReads
    const perWrite = r.statsB.txPackets / r.statsB.txWrites
    t.log(`IPv${family}: ${perRead.toFixed(1)} packets per read, ${perWrite.toFixed(1)} packets per write`)
    t.true(perRead >= 5, `packets per read ${perRead}`)
    t.true(perWrite >= 5, `packets per write ${perWrite}`)
    t.is(r.statsA.rxDropped, 0)
  })
}

for (const family of ['4', '6']) {
  rootTest(`relay with offload: UDP datagrams sent with UDP_SEGMENT over IPv${family} arrive intact and complete`, async (t) => {
    const r = await relay<UdpResult>(['udp', family, '4000', 'on'])
    t.is(r.sent, 4000)
    t.is(r.datagrams, 4000)
    t.is(r.distinct, 4000)
    t.is(r.bad, 0)
    t.is(r.wrongLength, 0, 'every datagram has its sent length')
    t.is(r.bytes, 4000 * r.size)
    t.is(r.statsA.rxDropped, 0)
    if (r.offload.a.udp) {
      const perRead = r.statsA.rxPackets / r.statsA.rxReads
      t.log(`USO on: ${perRead.toFixed(1)} datagrams per read`)
      t.true(perRead >= 5, `datagrams per read ${perRead}`)
    }
  })
}

rootTest('relay with offload: false: 100 MB of TCP arrive byte-identical, one packet per system call', async (t) => {
  const r = await relay<TcpResult>(['tcp', '4', MB100, 'off'])
  t.is(r.bytes, r.sentBytes)
  t.is(r.sha256, r.sentSha256)
  t.false(r.offload.a.tcp)
  t.is(r.statsA.rxPackets, r.statsA.rxReads)
  t.is(r.statsB.txPackets, r.statsB.txWrites)
})

rootTest('relay with offload: false: UDP_SEGMENT datagrams arrive intact and complete', async (t) => {
  const r = await relay<UdpResult>(['udp', '4', '2000', 'off'])
  t.is(r.datagrams, 2000)
  t.is(r.distinct, 2000)
  t.is(r.bad, 0)
  t.is(r.wrongLength, 0, 'every datagram has its sent length')
  t.is(r.bytes, 2000 * r.size)
})

interface FallbackStep { received: number; intact: boolean; stats: { txFallbacks: number; txWrites: number; txPackets: number } }
interface FallbackResult { offload: { tcp: boolean; udp: boolean }; afterBatch: FallbackStep; afterSecond: FallbackStep; afterFrames: FallbackStep }
interface BacklogResult { offload: { tcp: boolean; udp: boolean }; afterQueued: FallbackStep; afterSecond: FallbackStep }

/**
 * Runs the fallback fixture under an LD_PRELOAD shim that stands in for a
 * kernel refusing GSO writes: a writev or write to a tun device whose virtio
 * header has a GSO type fails with EINVAL. Returns the result and what the
 * shim refused.
 */
async function underShim<T>(args: string[], env: Record<string, string> = {}): Promise<{ r: T; refused: string }> {
  const dir = mkdtempSync(path.join(tmpdir(), 'tgso-shim-'))
  try {
    const so = path.join(dir, 'einval_shim.so')
    execFileSync('cc', ['-shared', '-fPIC', '-O2', '-o', so, path.join(__dirname, 'fixtures', 'einval_shim.c'), '-ldl'])
    const report = path.join(dir, 'refused')
    const r = await withNetns((ns) => ns.runFixture<T>('fallback', args, { env: { LD_PRELOAD: so, TUNNEL_SHIM_REPORT: report, ...env } }))
    return { r, refused: readFileSync(report, 'utf8').trim() }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

rootTest('a GSO write the kernel refuses with EINVAL falls back to one packet per write: every datagram arrives intact, and that protocol stops coalescing', async (t) => {
  const { r, refused } = await underShim<FallbackResult>([])
  t.true(r.offload.udp, 'this test needs UDP offload (Linux >= 6.2)')
  t.deepEqual([r.afterBatch.received, r.afterBatch.intact], [20, true], 'coalesced writeBatch refused: all 20 datagrams arrive, intact')
  t.is(r.afterBatch.stats.txFallbacks, 1)
  t.deepEqual([r.afterSecond.received, r.afterSecond.intact], [20, true])
  t.is(r.afterSecond.stats.txFallbacks, 1, 'UDP coalescing is off after the refusal: nothing more is refused')
  t.deepEqual([r.afterFrames.received, r.afterFrames.intact], [5, true], 'a refused whole frame is split and written packet by packet')
  t.is(r.afterFrames.stats.txFallbacks, 2)
  t.is(refused, 'einval=2 eagain=0', 'the shim refused exactly the two GSO writes')
})

rootTest('a coalesced frame queued after EAGAIN and then refused with EINVAL is written one packet per write: nothing is lost', async (t) => {
  // The shim answers the first GSO writev with EAGAIN: the frame waits in
  // the backlog, and writing the backlog (write(2)) is refused with EINVAL.
  const { r, refused } = await underShim<BacklogResult>(['backlog'], { TUNNEL_SHIM_EAGAIN_FIRST: '1' })
  t.true(r.offload.udp, 'this test needs UDP offload (Linux >= 6.2)')
  t.is(refused, 'einval=1 eagain=1', 'queued once, then refused once')
  t.deepEqual([r.afterQueued.received, r.afterQueued.intact], [25, true], 'all 20 datagrams of the refused queued frame arrive, intact, then the 5 written while it waited')
  t.is(r.afterQueued.stats.txFallbacks, 1)
  t.deepEqual([r.afterQueued.stats.txPackets, r.afterQueued.stats.txWrites], [25, 25], 'one packet per write')
  t.deepEqual([r.afterSecond.received, r.afterSecond.intact], [20, true])
  t.is(r.afterSecond.stats.txFallbacks, 1, 'UDP coalescing is off after the refusal')
})

interface CoalesceStep { packets: number; writes: number; fallbacks: number }
interface CoalesceResult { offload: { tcp: boolean; udp: boolean }; tcp: CoalesceStep; udp: CoalesceStep & { received: { count: number; intact: boolean } } }

/** Checks one run of the coalesce fixture: 20 TCP and 20 UDP packets, each protocol coalesced or written one per write. */
function checkCoalesce(t: ExecutionContext, r: CoalesceResult, want: { tcp: boolean; udp: boolean }) {
  t.true(r.offload.tcp && r.offload.udp, 'this test needs TSO and USO (Linux >= 6.2)')
  t.is(r.tcp.packets, 20)
  t.is(r.udp.packets, 20)
  if (want.tcp) t.is(r.tcp.writes, 1, 'TCP coalesced: one write')
  else t.is(r.tcp.writes, r.tcp.packets, 'TCP not coalesced: txWrites === txPackets')
  if (want.udp) t.is(r.udp.writes, 1, 'UDP coalesced: one write')
  else t.is(r.udp.writes, r.udp.packets, 'UDP not coalesced: txWrites === txPackets')
  t.is(r.udp.fallbacks, 0)
  t.deepEqual(r.udp.received, { count: 20, intact: true })
}

const coalesceCases: Array<[string, string[], Record<string, string>, { tcp: boolean; udp: boolean }]> = [
  ['by default, TCP and UDP', [], {}, { tcp: true, udp: true }],
  ['coalesce: { tcp: false }', [JSON.stringify({ tcp: false })], {}, { tcp: false, udp: true }],
  ['coalesce: { udp: false }', [JSON.stringify({ udp: false })], {}, { tcp: true, udp: false }],
  ['TUNNEL_GSO_NO_TCP_COALESCE=1', [], { TUNNEL_GSO_NO_TCP_COALESCE: '1' }, { tcp: false, udp: true }],
  ['TUNNEL_GSO_NO_UDP_COALESCE=1', [], { TUNNEL_GSO_NO_UDP_COALESCE: '1' }, { tcp: true, udp: false }],
]
for (const [what, args, env, want] of coalesceCases) {
  rootTest(`writeBatch coalescing switches: ${what}`, async (t) => {
    const r = await withNetns((ns) => ns.runFixture<CoalesceResult>('offload_coalesce', ['open', ...args], { env }))
    checkCoalesce(t, r, want)
  })
}

for (const want of [{ tcp: false, udp: true }, { tcp: true, udp: false }]) {
  rootTest(`Tun.fromFd takes the coalescing switches: tcp ${want.tcp}, udp ${want.udp}`, async (t) => {
    // A privileged helper creates the device (with a virtio header) and hands
    // its descriptor to an unprivileged process as fd 3.
    const r = await withNetns(async (ns) => {
      const out = await sh('ip', ['netns', 'exec', ns.name, 'env', 'VNET=1', 'python3', path.join(FIXTURES, 'fdhelper.py'), 'tgsocfd0', '198.18.40.1/24', process.execPath, '--import', 'tsx', path.join(FIXTURES, 'offload_coalesce.ts'), 'fromfd', String(want.tcp), String(want.udp)])
      return JSON.parse(out.trim().split('\n').pop()!) as CoalesceResult
    })
    checkCoalesce(t, r, want)
  })
}

interface MaskTraffic { bytes?: number; datagrams?: number; maxLen: number; reads: number; packets: number }
interface MaskPhase { offload: { tcp: boolean; udp: boolean }; mtu: number; features: Record<string, boolean>; featuresAfterClose: Record<string, boolean>; tcp: MaskTraffic; udp: MaskTraffic; stats: { rxPackets: number; rxReads: number; rxDropped: number } }

rootTest('offload: false sets the offload mask of a persistent device that had offload on to 0: no TSO/USO/checksum offload, TCP and UDP_SEGMENT traffic arrives one packet per read', async (t) => {
  const { on, off } = await withNetns((ns) => ns.runFixture<{ on: MaskPhase; off: MaskPhase }>('offload_mask', [], { timeoutMs: 90_000 }))
  const allOn = { 'tx-checksum-ip-generic': true, 'tx-tcp-segmentation': true, 'tx-tcp6-segmentation': true, 'tx-udp-segmentation': true }
  const allOff = { 'tx-checksum-ip-generic': false, 'tx-tcp-segmentation': false, 'tx-tcp6-segmentation': false, 'tx-udp-segmentation': false }
  // Phase 1, offload on: the kernel hands over super-packets.
  t.deepEqual(on.offload, { tcp: true, udp: true }, 'this test needs TSO and USO (Linux >= 6.2)')
  t.deepEqual(on.features, allOn)
  t.deepEqual(on.featuresAfterClose, allOn, 'the mask survives the close of a persistent device')
  t.is(on.tcp.bytes, 4 << 20)
  t.true(on.tcp.packets > on.tcp.reads, `TCP super-packets with offload on (${on.tcp.packets} packets in ${on.tcp.reads} reads)`)
  t.true(on.udp.packets > on.udp.reads, `UDP super-packets with offload on (${on.udp.packets} packets in ${on.udp.reads} reads)`)
  // Phase 2, the same device reopened with offload: false.
  t.deepEqual(off.offload, { tcp: false, udp: false })
  t.deepEqual(off.features, allOff, "the kernel's view: mask 0")
  t.deepEqual(off.featuresAfterClose, allOff)
  t.is(off.tcp.bytes, 4 << 20)
  t.is(off.udp.datagrams, 400)
  t.is(off.stats.rxPackets, off.stats.rxReads, 'one packet per read')
  t.true(off.tcp.maxLen <= off.mtu, `no TCP packet above the MTU (largest ${off.tcp.maxLen})`)
  t.true(off.udp.maxLen <= off.mtu, `no UDP packet above the MTU (largest ${off.udp.maxLen})`)
  t.is(off.stats.rxDropped, 0)
})

rootTest('write stream with offload: false: 100 packets concatenated in one chunk all arrive (not just the first)', async (t) => {
  const r = await withNetns((ns) => ns.runFixture<{ offload: { tcp: boolean }; packets: number; received: number; intact: boolean; chunkBytes: number; stats: { txPackets: number; txWrites: number; txBytes: number } }>('offload_stream'))
  t.false(r.offload.tcp)
  t.is(r.received, 100)
  t.true(r.intact, 'every datagram intact')
  t.is(r.stats.txPackets, 100)
  t.is(r.stats.txWrites, 100)
  t.is(r.stats.txBytes, r.chunkBytes)
})
