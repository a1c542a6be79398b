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
  fwdGbps: number
  revGbps: number
  perRead?: number
  perWrite?: number
  cpuPerGb: number
  p50Ms: number
  p99Ms: number
  elP99Ms?: number
  /** Event-loop p99 over the whole run (worse of the two VPN processes). */
  elRunP99Ms?: number
  /** Event-loop p99 of an idle Node process during the same run: the scheduling floor. */
  idleP99Ms: number
  /** RSS sampled once a second over the measured window: the process whose RSS varied most. */
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

export async function bench(opts: { seconds: number; warmup: number; only?: string; log: (s: string) => void }): Promise<number> {
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
    cliContender('tunnel-gso --wire gso', ['--wire', 'gso']),
    cliContender('tunnel-gso --wire raw', ['--wire', 'raw']),
    cliContender('tunnel-gso --wire raw --no-offload', ['--wire', 'raw', '--no-offload']),
  ].filter((c) => !opts.only || c.name.includes(opts.only))
  const rows: Row[] = []
  let current: Topology | undefined
  const onSignal = () => {
    current?.teardown()
    if (ref) rmSync(ref.dir, { recursive: true, force: true })
    process.exit(130)
  }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  try {
    for (const c of contenders) {
      opts.log(`bench: ${c.name} ...`)
      const topo = new Topology('bench')
      current = topo
      try {
        topo.setup()
        const procs = await c.start(topo)
        const logs: string[][] = procs.map(() => [])
        procs.forEach((p, i) => p.stderr!.on('data', (d: Buffer) => logs[i]!.push(d.toString())))
        // An idle Node process beside them: its event-loop delay is what the
        // machine's scheduling alone costs (2 cores, 4+ busy processes).
        const idle = topo.spawn(topo.s, [
          process.execPath,
          '-e',
          "const h=require('perf_hooks').monitorEventLoopDelay({resolution:10});h.enable();process.on('SIGTERM',()=>{process.stdout.write('idle '+Math.max(0,h.percentile(99)/1e6-10).toFixed(1)+'\\n');process.exit(0)});setInterval(()=>{},1000)",
        ])
        let idleOut = ''
        idle.stdout!.on('data', (d: Buffer) => (idleOut += d.toString()))
        // Warm-up (not counted), half each way: JIT, socket buffers, slabs
        // and V8's heap reach their working size in both directions (each
        // process sends in one and receives in the other), so the RSS column
        // shows growth under load, not start-up. V8's young generation grows
        // to its cap (CLI_NODE_FLAGS) over the first seconds that a process
        // receives at full speed; without the cap it took 40-50 s
        // (v8.getHeapSpaceStatistics(), raw wire). 20 s each way covers it.
        const half = Math.max(1, Math.round(opts.warmup / 2))
        await iperf(topo, half, false)
        await iperf(topo, half, true)
        const cpu0 = procs.reduce((a, p) => a + cpuSeconds(p.pid!), 0)
        // Each process's RSS, once a second (`ip netns exec` execs the command: same pid).
        const samples: number[][] = procs.map(() => [])
        const sample = () => procs.forEach((p, i) => samples[i]!.push(rssMb(p.pid!)))
        sample()
        const sampler = setInterval(sample, 1000)
        const fwd = await iperf(topo, opts.seconds, false)
        const rev = await iperf(topo, opts.seconds, true)
        clearInterval(sampler)
        sample()
        const cpu = procs.reduce((a, p) => a + cpuSeconds(p.pid!), 0) - cpu0
        idle.kill('SIGTERM')
        await once(idle, 'exit')
        const idleP99 = Number(/idle ([\d.]+)/.exec(idleOut)?.[1] ?? NaN)
        const lat = await requestResponse(topo, 300)
        const [ss, cs] = logs.map(collect)
        const last = (x: VpnStats[] | undefined) => x?.[x.length - 1]
        const sLast = last(ss)
        const cLast = last(cs)
        const els = [...(ss ?? []), ...(cs ?? [])].map((x) => x.eventLoopP99Ms ?? 0)
        const row: Row = {
          name: c.name,
          fwdGbps: fwd.gbps,
          revGbps: rev.gbps,
          cpuPerGb: cpu / ((fwd.bytes + rev.bytes) / 1e9),
          p50Ms: lat.p50,
          p99Ms: lat.p99,
          rss: samples
            .map((xs) => ({ min: Math.min(...xs), max: Math.max(...xs) }))
            .reduce((worst, r) => (spread(r) > spread(worst) ? r : worst)),
          idleP99Ms: idleP99,
        }
        if (cLast && sLast) {
          row.perRead = cLast.rxPackets / Math.max(1, cLast.rxReads)
          row.perWrite = sLast.txPackets / Math.max(1, sLast.txWrites)
        }
        if (els.length > 0) row.elP99Ms = Math.max(...els)
        const runs = [sLast, cLast].flatMap((x) => (x?.eventLoopP99RunMs === undefined ? [] : [x.eventLoopP99RunMs]))
        if (runs.length > 0) row.elRunP99Ms = Math.max(...runs)
        rows.push(row)
        for (const p of procs) p.kill('SIGTERM')
      } finally {
        topo.teardown()
        current = undefined
      }
    }
  } finally {
    if (ref) rmSync(ref.dir, { recursive: true, force: true })
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
  }
  const base = rows[0]
  opts.log('')
  opts.log(`VPN over TCP between two namespaces (veth), iperf3 ${opts.seconds} s each way after ${opts.warmup} s of warm-up (half each way), one run; machine: ${execFileSync('nproc').toString().trim()} cores, kernel ${execFileSync('uname', ['-r']).toString().trim()}`)
  const header = ['contender', 'fwd Gbit/s', 'rev Gbit/s', 'vs first (fwd/rev)', 'pkts/read', 'pkts/write', 'CPU s/GB', '100KB p50 ms', 'p99 ms', 'run loop p99 ms', 'worst 1-s loop p99 ms', 'idle loop p99 ms', 'RSS MB min-max (spread)']
  const table = rows.map((r) => [
    r.name,
    r.fwdGbps.toFixed(2),
    r.revGbps.toFixed(2),
    base ? `${(r.fwdGbps / base.fwdGbps).toFixed(2)}x/${(r.revGbps / base.revGbps).toFixed(2)}x` : '',
    r.perRead === undefined ? '-' : r.perRead.toFixed(1),
    r.perWrite === undefined ? '-' : r.perWrite.toFixed(1),
    r.cpuPerGb.toFixed(2),
    r.p50Ms.toFixed(2),
    r.p99Ms.toFixed(2),
    r.elRunP99Ms === undefined ? '-' : r.elRunP99Ms.toFixed(1),
    r.elP99Ms === undefined ? '-' : r.elP99Ms.toFixed(1),
    Number.isNaN(r.idleP99Ms) ? '-' : r.idleP99Ms.toFixed(1),
    r.rss ? `${Math.round(r.rss.min)}-${Math.round(r.rss.max)} (+${Math.round(spread(r.rss) * 100)}%)` : '-',
  ])
  const widths = header.map((h, i) => Math.max(h.length, ...table.map((row) => row[i]!.length)))
  const fmt = (cells: string[]) => '| ' + cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ') + ' |'
  opts.log(fmt(header))
  opts.log('|' + widths.map((w) => '-'.repeat(w + 2)).join('|') + '|')
  for (const r of table) opts.log(fmt(r))
  return 0
}
