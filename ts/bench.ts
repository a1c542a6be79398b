// `tunnel-gso bench` / `npm run bench`: the VPN over TCP between two
// namespaces joined by veth, iperf3 through the tunnel, for each contender in
// one run: a C reference of the same design built here, and the CLI in its
// modes. Prints a table and cleans up. Results are ratios within this run.
import { execFile, execFileSync, type ChildProcess } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import * as net from 'node:net'
import * as path from 'node:path'
import { once } from 'node:events'
import { Topology, cliArgv, waitForLine, type VpnStats } from './demo.js'

interface Contender {
  name: string
  start: (topo: Topology) => Promise<ChildProcess[]>
}

interface Row {
  name: string
  /** Mean over the rounds. */
  fwdGbps: number
  revGbps: number
  /** Each round's Gbit/s, in order. */
  fwdRounds: number[]
  revRounds: number[]
  /** Packets per device read of the sending side, and per device write of the receiving side: forward, reverse. */
  perRead?: [number, number]
  perWrite?: [number, number]
  cpuPerGb: number
  p50Ms: number
  p99Ms: number
  /** Event-loop p99 of the 1-s windows (both VPN processes) logged while this contender ran: median, worst. */
  loopP99Ms?: { median: number; worst: number }
  /**
   * RSS sampled once a second over one continuous full-speed run after the
   * rounds (see {@link memoryRun}): the process whose RSS varied most.
   */
  rss?: { min: number; max: number }
}

const TUN_S = '198.18.1.1'
const TUN_C = '198.18.1.2'

function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    const ticks = Number(fields[11]) + Number(fields[12]) // utime + stime
    return ticks / 100
  } catch {
    return 0
  }
}

/** How far RSS rose over its lowest sample: 0.09 for +9%. */
function spread(r: { min: number; max: number }): number {
  return r.max / Math.max(r.min, 1) - 1
}

function rssMb(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m ? Number(m[1]) / 1024 : 0
  } catch {
    return 0
  }
}

/** iperf3 through the tunnel; asynchronous, so that the bench samples RSS meanwhile. */
async function iperf(topo: Topology, seconds: number, reverse: boolean): Promise<{ gbps: number; bytes: number }> {
  const server = topo.spawn(topo.s, ['iperf3', '-s', '-1', '-B', TUN_S, '-p', '5201'])
  // Give the one-shot server a moment to listen.
  await new Promise((r) => setTimeout(r, 300))
  const out = await new Promise<string>((resolve, reject) =>
    execFile('ip', ['netns', 'exec', topo.c, 'iperf3', '-c', TUN_S, '-p', '5201', '-t', String(seconds), '-J', ...(reverse ? ['-R'] : [])], { maxBuffer: 64 << 20 }, (err, stdout) =>
      err ? reject(err) : resolve(stdout),
    ),
  )
  server.kill('SIGKILL')
  const j = JSON.parse(out) as { end: { sum_received: { bits_per_second: number; bytes: number } } }
  return { gbps: j.end.sum_received.bits_per_second / 1e9, bytes: j.end.sum_received.bytes }
}

/** 100 KB request/response over TCP through the tunnel: p50 and p99 in ms. */
async function requestResponse(topo: Topology, count: number): Promise<{ p50: number; p99: number }> {
  const cli = cliArgv()
  const srv = topo.spawn(topo.s, [process.execPath, ...cli, '_rr', 'server', TUN_S, '5301'])
  await waitForLine(srv, /listening/, 10_000)
  const c = topo.spawn(topo.c, [process.execPath, ...cli, '_rr', 'client', TUN_S, '5301', String(count)])
  const line = await waitForLine(c, /^rr .*$/m, 120_000)
  srv.kill('SIGKILL')
  return JSON.parse(line.slice(3)) as { p50: number; p99: number }
}

/** `_rr server HOST PORT` / `_rr client HOST PORT COUNT`: 1-byte request, 100 KB reply. */
export async function rr(role: string, host: string, port: number, count: number): Promise<number> {
  const REPLY = Buffer.alloc(100 * 1024, 0x61)
  if (role === 'server') {
    const server = net.createServer((s) => {
      s.setNoDelay(true)
      s.on('data', (d: Buffer) => {
        for (let i = 0; i < d.length; i++) s.write(REPLY)
      })
      s.on('error', () => {})
    })
    server.listen(port, host)
    await once(server, 'listening')
    process.stderr.write('listening\n')
    await new Promise(() => {})
  }
  const s = net.connect({ host, port })
  s.setNoDelay(true)
  await once(s, 'connect')
  const times: number[] = []
  let pending = 0
  let resolveOne: (() => void) | undefined
  s.on('data', (d: Buffer) => {
    pending -= d.length
    if (pending <= 0 && resolveOne) resolveOne()
  })
  for (let i = 0; i < count; i++) {
    pending = REPLY.length
    const t0 = process.hrtime.bigint()
    await new Promise<void>((r) => {
      resolveOne = r
      s.write(Buffer.from([1]))
    })
    times.push(Number(process.hrtime.bigint() - t0) / 1e6)
  }
  s.destroy()
  times.sort((a, b) => a - b)
  const q = (p: number) => times[Math.min(times.length - 1, Math.floor((p / 100) * times.length))]!
  process.stdout.write(`rr ${JSON.stringify({ p50: q(50), p99: q(99) })}\n`)
  return 0
}

function cliContender(name: string, flags: string[]): Contender {
  return {
    name,
    async start(topo) {
      const cli = cliArgv()
      // Plaintext is meant: both ends are namespaces of this machine.
      const server = topo.spawn(topo.s, [process.execPath, ...cli, 'vpn', 'server', '--listen', '198.18.0.1:7000', '--address', `${TUN_S}/24`, '--stats', '--plaintext', ...flags])
      await waitForLine(server, /listening on/, 20_000)
      const client = topo.spawn(topo.c, [process.execPath, ...cli, 'vpn', 'client', '--connect', '198.18.0.1:7000', '--address', `${TUN_C}/24`, '--stats', '--plaintext', ...flags])
      await waitForLine(client, /connected to/, 20_000)
      return [server, client]
    },
  }
}

function cContender(binary: string): Contender {
  return {
    name: 'C reference, gso frames',
    async start(topo) {
      const server = topo.spawn(topo.s, [binary, 'server', '198.18.0.1', '7000', 'tgsoref0'])
      await waitForLine(server, /listening/, 10_000)
      const ip = (ns: string, ...a: string[]) => execFileSync('ip', ['-n', ns, ...a])
      ip(topo.s, 'addr', 'add', `${TUN_S}/24`, 'dev', 'tgsoref0')
      ip(topo.s, 'link', 'set', 'tgsoref0', 'up')
      const client = topo.spawn(topo.c, [binary, 'client', '198.18.0.1', '7000', 'tgsoref0'])
      await waitForLine(client, /connected/, 10_000)
      ip(topo.c, 'addr', 'add', `${TUN_C}/24`, 'dev', 'tgsoref0')
      ip(topo.c, 'link', 'set', 'tgsoref0', 'up')
      return [server, client]
    },
  }
}

/** Builds bench/ref-relay.c with the system C compiler into a temporary directory. */
function buildReference(): { binary: string; dir: string } | undefined {
  const src = path.join(__dirname, '..', 'bench', 'ref-relay.c')
  if (!existsSync(src)) return undefined
  const dir = mkdtempSync(path.join(tmpdir(), 'tgso-bench-'))
  const binary = path.join(dir, 'ref-relay')
  try {
    execFileSync('cc', ['-O2', '-pthread', '-o', binary, src], { stdio: 'pipe' })
    return { binary, dir }
  } catch (e) {
    rmSync(dir, { recursive: true, force: true })
    process.stderr.write(`bench: cannot build the C reference (${(e as Error).message.split('\n')[0]}); skipping it\n`)
    return undefined
  }
}

function collect(lines: string[]): VpnStats[] {
  return lines
    .join('')
    .split('\n')
    .filter((l) => l.includes('vpn: stats '))
    .map((l) => JSON.parse(l.slice(l.indexOf('vpn: stats ') + 11)) as VpnStats)
}

/** Counters of both VPN processes as their latest stats line gives them. */
interface Snapshot {
  s?: VpnStats
  c?: VpnStats
  /** Stats lines logged so far, per process. */
  lines: [number, number]
}

/** A contender whose processes run, between its turns too (idle then: no traffic, a timer a second). */
interface Live {
  contender: Contender
  topo: Topology
  procs: ChildProcess[]
  logs: string[][]
  fwd: number[]
  rev: number[]
  bytes: number
  cpu: number
  /** Packets and calls of the data-carrying side, per direction. */
  reads: [{ packets: number; calls: number }, { packets: number; calls: number }]
  writes: [{ packets: number; calls: number }, { packets: number; calls: number }]
  loop: number[]
}

function snapshot(l: Live): Snapshot {
  const [ss, cs] = l.logs.map(collect)
  return { s: ss?.[ss.length - 1], c: cs?.[cs.length - 1], lines: [ss?.length ?? 0, cs?.length ?? 0] }
}

/** Seconds each way that a contender runs, not measured, before its memory run: back from idle to its working size. */
const REWARM_SECONDS = 10

/**
 * RSS over one continuous full-speed run of `seconds` each way (forward,
 * then reverse at once), after REWARM_SECONDS each way. Continuous, not over
 * the rounds: a process that idled while the others had their turn starts
 * its next slice below its working size (V8 shrinks an idle heap) and grows
 * back within seconds, which is not the growth under load that this shows.
 */
async function memoryRun(l: Live, seconds: number): Promise<{ min: number; max: number }> {
  await iperf(l.topo, REWARM_SECONDS, false)
  await iperf(l.topo, REWARM_SECONDS, true)
  const samples: number[][] = l.procs.map(() => [])
  const sample = () => l.procs.forEach((p, i) => samples[i]!.push(rssMb(p.pid!)))
  sample()
  const sampler = setInterval(sample, 1000)
  try {
    await iperf(l.topo, seconds, false)
    await iperf(l.topo, seconds, true)
  } finally {
    clearInterval(sampler)
  }
  sample()
  return samples.map((xs) => ({ min: Math.min(...xs), max: Math.max(...xs) })).reduce((worst, r) => (spread(r) > spread(worst) ? r : worst))
}

/** A second and a bit: long enough for each VPN process to log a stats line that covers what just ran. */
const STATS_SETTLE_MS = 1200

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}

function mean(xs: number[]): number {
  return xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length)
}

/**
 * One measured slice of `l`: iperf3 one way, with its CPU, RSS, device
 * counters and event-loop windows. Waits for a stats line after it, so that
 * the next slice's snapshot holds all of this one.
 */
async function slice(l: Live, seconds: number, reverse: boolean): Promise<void> {
  const before = snapshot(l)
  const cpu0 = l.procs.reduce((a, p) => a + cpuSeconds(p.pid!), 0)
  const r = await iperf(l.topo, seconds, reverse)
  l.cpu += l.procs.reduce((a, p) => a + cpuSeconds(p.pid!), 0) - cpu0
  // The event-loop windows end here: the ones logged while the tunnel idles below are not full speed.
  const busyLines = snapshot(l).lines
  l.bytes += r.bytes
  ;(reverse ? l.rev : l.fwd).push(r.gbps)
  await new Promise((done) => setTimeout(done, STATS_SETTLE_MS))
  const after = snapshot(l)
  // Forward: the client reads its device and the server writes its own; reverse the other way round.
  const [reader, writer] = reverse ? (['s', 'c'] as const) : (['c', 's'] as const)
  const d = reverse ? 1 : 0
  const delta = (k: 's' | 'c', packets: 'rxPackets' | 'txPackets', calls: 'rxReads' | 'txWrites') => ({
    packets: (after[k]?.[packets] ?? 0) - (before[k]?.[packets] ?? 0),
    calls: (after[k]?.[calls] ?? 0) - (before[k]?.[calls] ?? 0),
  })
  const rd = delta(reader, 'rxPackets', 'rxReads')
  const wr = delta(writer, 'txPackets', 'txWrites')
  l.reads[d].packets += rd.packets
  l.reads[d].calls += rd.calls
  l.writes[d].packets += wr.packets
  l.writes[d].calls += wr.calls
  // The 1-s windows logged while iperf3 ran (the first may begin before it, the last end after it).
  l.logs.forEach((log, i) => {
    const stats = collect(log).slice(before.lines[i as 0 | 1], busyLines[i as 0 | 1])
    for (const x of stats) if (x.eventLoopP99Ms !== undefined) l.loop.push(x.eventLoopP99Ms)
  })
}

export async function bench(opts: { seconds: number; warmup: number; rounds: number; only?: string; log: (s: string) => void }): Promise<number> {
  if (process.getuid?.() !== 0) {
    opts.log('tunnel-gso bench needs root: it creates network namespaces, veth and tun devices.')
    return 1
  }
  try {
    execFileSync('iperf3', ['--version'], { stdio: 'pipe' })
  } catch {
    opts.log('tunnel-gso bench needs iperf3 (Debian: apt-get install iperf3).')
    return 1
  }
  const ref = buildReference()
  const contenders: Contender[] = [
    ...(ref ? [cContender(ref.binary)] : []),
    cliContender(GSO, ['--wire', 'gso']),
    cliContender(RAW, ['--wire', 'raw']),
    cliContender(NO_OFFLOAD, ['--wire', 'raw', '--no-offload']),
  ].filter((c) => !opts.only || c.name.includes(opts.only))
  // Whole seconds (iperf3 -t), at least one per slice.
  const sliceSeconds = Math.max(1, Math.ceil(opts.seconds / opts.rounds))
  const live: Live[] = []
  const teardown = () => {
    for (const l of live) l.topo.teardown()
    if (ref) rmSync(ref.dir, { recursive: true, force: true })
  }
  const onSignal = () => {
    teardown()
    process.exit(130)
  }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  const rows: Row[] = []
  let idleP99 = NaN
  try {
    // Every contender is started first, each in namespaces of its own, and
    // stays up: the measured slices then take turns within every round, so
    // that the host's drift over the run (this machine is shared) falls on
    // all of them alike.
    for (const [i, c] of contenders.entries()) {
      opts.log(`bench: starting ${c.name} ...`)
      const topo = new Topology(`bench${i}`)
      const l: Live = {
        contender: c,
        topo,
        procs: [],
        logs: [],
        fwd: [],
        rev: [],
        bytes: 0,
        cpu: 0,
        reads: [
          { packets: 0, calls: 0 },
          { packets: 0, calls: 0 },
        ],
        writes: [
          { packets: 0, calls: 0 },
          { packets: 0, calls: 0 },
        ],
        loop: [],
      }
      live.push(l)
      topo.setup()
      l.procs = await c.start(topo)
      l.logs = l.procs.map(() => [])
      l.procs.forEach((p, k) => p.stderr!.on('data', (d: Buffer) => l.logs[k]!.push(d.toString())))
    }
    // An idle Node process beside them: its event-loop delay is what the
    // machine's scheduling alone costs (2 cores, 4+ busy processes).
    const idle = live[0]?.topo.spawn(live[0].topo.s, [
      process.execPath,
      '-e',
      "const h=require('perf_hooks').monitorEventLoopDelay({resolution:10});h.enable();process.on('SIGTERM',()=>{process.stdout.write('idle '+Math.max(0,h.percentile(99)/1e6-10).toFixed(1)+'\\n');process.exit(0)});setInterval(()=>{},1000)",
    ])
    let idleOut = ''
    idle?.stdout!.on('data', (d: Buffer) => (idleOut += d.toString()))
    // Warm-up (not counted), half each way: JIT, socket buffers, slabs
    // and V8's heap reach their working size in both directions (each
    // process sends in one and receives in the other), so the RSS column
    // shows growth under load, not start-up. V8's young generation grows
    // to its cap (CLI_NODE_FLAGS) over the first seconds that a process
    // receives at full speed; without the cap it took 40-50 s
    // (v8.getHeapSpaceStatistics(), raw wire). 20 s each way covers it.
    const half = Math.max(1, Math.round(opts.warmup / 2))
    for (const l of live) {
      opts.log(`bench: warming up ${l.contender.name} (${half} s each way) ...`)
      await iperf(l.topo, half, false)
      await iperf(l.topo, half, true)
    }
    for (let round = 0; round < opts.rounds; round++) {
      opts.log(`bench: round ${round + 1} of ${opts.rounds}: ${sliceSeconds} s each way per contender ...`)
      // Each round starts with the next contender, so that none always follows the same one.
      for (let k = 0; k < live.length; k++) {
        const l = live[(round + k) % live.length]!
        await slice(l, sliceSeconds, false)
        await slice(l, sliceSeconds, true)
      }
    }
    if (idle) {
      idle.kill('SIGTERM')
      await once(idle, 'exit')
      idleP99 = Number(/idle ([\d.]+)/.exec(idleOut)?.[1] ?? NaN)
    }
    for (const l of live) {
      opts.log(`bench: request/response${l.contender.name.startsWith('tunnel-gso') ? ', then memory at full speed,' : ''} through ${l.contender.name} ...`)
      const lat = await requestResponse(l.topo, 300)
      const cli = l.contender.name.startsWith('tunnel-gso')
      const per = (x: { packets: number; calls: number }) => x.packets / Math.max(1, x.calls)
      rows.push({
        name: l.contender.name,
        fwdGbps: mean(l.fwd),
        revGbps: mean(l.rev),
        fwdRounds: l.fwd,
        revRounds: l.rev,
        perRead: cli ? [per(l.reads[0]), per(l.reads[1])] : undefined,
        perWrite: cli ? [per(l.writes[0]), per(l.writes[1])] : undefined,
        cpuPerGb: l.cpu / (l.bytes / 1e9),
        p50Ms: lat.p50,
        p99Ms: lat.p99,
        loopP99Ms: l.loop.length > 0 ? { median: median(l.loop), worst: Math.max(...l.loop) } : undefined,
        rss: cli ? await memoryRun(l, opts.seconds) : undefined,
      })
    }
    for (const l of live) for (const p of l.procs) p.kill('SIGTERM')
  } finally {
    teardown()
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
  }
  report(rows, { ...opts, sliceSeconds, idleP99 })
  return 0
}

const GSO = 'tunnel-gso --wire gso'
const RAW = 'tunnel-gso --wire raw'
const NO_OFFLOAD = 'tunnel-gso --wire raw --no-offload'

/** The table, each round's throughput, and the targets of the performance issue against what was measured. */
function report(rows: Row[], o: { seconds: number; warmup: number; rounds: number; sliceSeconds: number; idleP99: number; log: (s: string) => void }): void {
  const base = rows[0]
  const f2 = (x: number) => x.toFixed(2)
  const pair = (x: [number, number] | undefined) => (x === undefined ? '-' : `${x[0].toFixed(1)}/${x[1].toFixed(1)}`)
  o.log('')
  o.log(
    `VPN over TCP between two namespaces (veth), iperf3 ${o.rounds} x ${o.sliceSeconds} s each way per contender, the contenders taking turns within each round, after ${o.warmup} s of warm-up each (half each way); machine: ${execFileSync('nproc').toString().trim()} cores, kernel ${execFileSync('uname', ['-r']).toString().trim()}; idle Node process's loop p99 over the run ${Number.isNaN(o.idleP99) ? '-' : o.idleP99.toFixed(1)} ms`,
  )
  const header = ['contender', 'fwd Gbit/s', 'rev Gbit/s', 'vs first (fwd/rev)', 'pkts/read fwd/rev', 'pkts/write fwd/rev', 'CPU s/GB', '100KB p50 ms', 'p99 ms', 'loop p99 ms, 1-s windows: median/worst', `RSS MB over ${2 * o.seconds} s, min-max (spread)`]
  const table = rows.map((r) => [
    r.name,
    f2(r.fwdGbps),
    f2(r.revGbps),
    base ? `${f2(r.fwdGbps / base.fwdGbps)}x/${f2(r.revGbps / base.revGbps)}x` : '',
    pair(r.perRead),
    pair(r.perWrite),
    f2(r.cpuPerGb),
    f2(r.p50Ms),
    f2(r.p99Ms),
    r.loopP99Ms === undefined ? '-' : `${r.loopP99Ms.median.toFixed(1)}/${r.loopP99Ms.worst.toFixed(1)}`,
    r.rss ? `${Math.round(r.rss.min)}-${Math.round(r.rss.max)} (+${Math.round(spread(r.rss) * 100)}%)` : '-',
  ])
  const widths = header.map((h, i) => Math.max(h.length, ...table.map((row) => row[i]!.length)))
  const fmt = (cells: string[]) => '| ' + cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ') + ' |'
  o.log(fmt(header))
  o.log('|' + widths.map((w) => '-'.repeat(w + 2)).join('|') + '|')
  for (const r of table) o.log(fmt(r))
  o.log('')
  o.log('Gbit/s of each round, fwd | rev:')
  for (const r of rows) o.log(`  ${r.name}: ${r.fwdRounds.map(f2).join(' ')} | ${r.revRounds.map(f2).join(' ')}`)
  // The targets of the performance issue, each where its contenders ran.
  const by = (name: string) => rows.find((r) => r.name === name)
  const c = rows.find((r) => r.name.startsWith('C reference'))
  const verdict = (ok: boolean) => (ok ? 'met' : 'NOT met')
  const ratio = (a: Row, b: Row, min: number, what: string) => {
    const fwd = a.fwdGbps / b.fwdGbps
    const rev = a.revGbps / b.revGbps
    const rounds = (x: number[], y: number[]) => x.map((v, i) => f2(v / (y[i] ?? NaN))).join(' ')
    o.log(`  ${what}: ${f2(fwd)}x fwd, ${f2(rev)}x rev (target >= ${min}x both ways): ${verdict(fwd >= min && rev >= min)}; round by round ${rounds(a.fwdRounds, b.fwdRounds)} | ${rounds(a.revRounds, b.revRounds)}`)
  }
  o.log('')
  o.log('Targets:')
  const gso = by(GSO)
  const raw = by(RAW)
  const off = by(NO_OFFLOAD)
  if (gso && c) ratio(gso, c, 0.8, '--wire gso vs the C reference')
  if (raw && off) ratio(raw, off, 3, '--wire raw vs --no-offload')
  const cli = rows.filter((r) => r.name.startsWith('tunnel-gso'))
  if (c) {
    for (const r of cli) {
      const x = `  100 KB p99, ${r.name}: ${f2(r.p99Ms / c.p99Ms)}x the C reference's`
      // The latency target is the offloading VPN's; without offload it is shown for comparison.
      o.log(r === off ? `${x} (no target)` : `${x} (target <= 2x): ${verdict(r.p99Ms <= 2 * c.p99Ms)}`)
    }
  }
  for (const r of cli) {
    if (r.loopP99Ms) o.log(`  event-loop p99 at full speed, ${r.name}: ${r.loopP99Ms.median.toFixed(1)} ms (median 1-s window; worst ${r.loopP99Ms.worst.toFixed(1)}) (target < 5 ms): ${verdict(r.loopP99Ms.median < 5)}`)
    if (r.rss) o.log(`  RSS over ${2 * o.seconds} s at full speed, ${r.name}: +${Math.round(spread(r.rss) * 100)}% (target <= 10%): ${verdict(spread(r.rss) <= 0.1)}`)
  }
}
