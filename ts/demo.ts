// `tunnel-gso demo`: two namespaces joined by a veth pair, a VPN server and
// client across them, TCP traffic through the tunnel, figures, and cleanup.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import * as net from 'node:net'
import * as path from 'node:path'
import { once } from 'node:events'

export interface VpnStats {
  rxPackets: number
  rxReads: number
  txPackets: number
  txWrites: number
  /** Event loop delay p99 over the last interval, ms (perf_hooks.monitorEventLoopDelay). */
  eventLoopP99Ms?: number
  /** Event loop delay p99 since the VPN started, ms. */
  eventLoopP99RunMs?: number
  /** Resident set size, MB. */
  rssMb?: number
}

/**
 * The V8 flags the `tunnel-gso` command runs with (bin/tunnel-gso, which a
 * test compares with this list). A young generation of at most 4 MB per
 * semi-space, where Node's default grows to 16 MB on this kind of machine:
 * at full speed a VPN process's young generation grew 1 -> 32 MB over its
 * first 40-50 s of receiving, its RSS 77 -> 91 MB (+18%) over a 30 s bench
 * run after 40 s of warm-up; with this flag 73-75 MB (+0%, +3%), throughput
 * and event-loop p99 within noise. A scavenge then comes every few
 * megabytes of garbage instead of every 16; what survives one is a few
 * kilobytes, so each is cheap either way.
 */
export const CLI_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=4']

/** A node flag's name, as node reads it: `--max_semi_space_size=8` and `--max-semi-space-size=8` are the same flag. */
function flagName(arg: string): string {
  return arg.split('=')[0]!.replace(/_/g, '-')
}

/**
 * How to run the CLI in the namespaces: this process's node flags, the
 * CLI's own where this process was given no value for them (on its command
 * line or in NODE_OPTIONS, which the child inherits), and the entry point.
 */
export function cliArgv(): string[] {
  const entry = process.argv[1] ?? path.join(__dirname, 'cli.js')
  const given = new Set([...process.execArgv, ...(process.env.NODE_OPTIONS ?? '').split(/\s+/)].filter((a) => a.startsWith('--')).map(flagName))
  const own = CLI_NODE_FLAGS.filter((f) => !given.has(flagName(f)))
  return [...process.execArgv, ...own, entry]
}

export class Topology {
  readonly s: string
  readonly c: string
  readonly children: ChildProcess[] = []
  #up = false

  constructor(tag: string) {
    this.s = `tgso-${tag}-${process.pid}-s`
    this.c = `tgso-${tag}-${process.pid}-c`
  }

  setup(): void {
    const ip = (...a: string[]) => execFileSync('ip', a, { stdio: 'pipe' })
    ip('netns', 'add', this.s)
    this.#up = true
    ip('netns', 'add', this.c)
    ip('link', 'add', 'tgsodemo0', 'netns', this.s, 'type', 'veth', 'peer', 'name', 'tgsodemo1', 'netns', this.c)
    ip('-n', this.s, 'addr', 'add', '198.18.0.1/30', 'dev', 'tgsodemo0')
    ip('-n', this.c, 'addr', 'add', '198.18.0.2/30', 'dev', 'tgsodemo1')
    for (const [ns, dev] of [[this.s, 'tgsodemo0'], [this.c, 'tgsodemo1']] as const) {
      ip('-n', ns, 'link', 'set', 'lo', 'up')
      ip('-n', ns, 'link', 'set', dev, 'up')
    }
  }

  spawn(ns: string, argv: string[]): ChildProcess {
    const child = spawn('ip', ['netns', 'exec', ns, ...argv], { stdio: ['ignore', 'pipe', 'pipe'] })
    this.children.push(child)
    return child
  }

  /** Kills everything started and removes both namespaces. Safe to call twice. */
  teardown(): void {
    for (const c of this.children) if (c.exitCode === null) c.kill('SIGKILL')
    if (!this.#up) return
    this.#up = false
    for (const ns of [this.s, this.c]) {
      try {
        const pids = execFileSync('ip', ['netns', 'pids', ns], { stdio: 'pipe' }).toString().split(/\s+/).filter(Boolean)
        for (const p of pids) process.kill(Number(p), 'SIGKILL')
      } catch {
        // Namespace already gone.
      }
      try {
        execFileSync('ip', ['netns', 'del', ns], { stdio: 'pipe' })
      } catch {
        // Already gone.
      }
    }
  }
}

export function waitForLine(child: ChildProcess, re: RegExp, ms: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = ''
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${re}: ${buf}`)), ms)
    const onData = (d: Buffer) => {
      buf += d.toString()
      const m = re.exec(buf)
      if (m) {
        clearTimeout(timer)
        child.stderr!.off('data', onData)
        child.stdout!.off('data', onData)
        resolve(m[0])
      }
    }
    child.stderr!.on('data', onData)
    child.stdout!.on('data', onData)
    child.once('exit', (code) => reject(new Error(`process exited (${code}) before ${re}: ${buf}`)))
  })
}

export function lastStats(text: string): VpnStats | undefined {
  const lines = text.split('\n').filter((l) => l.includes('stats '))
  const last = lines[lines.length - 1]
  if (!last) return undefined
  return JSON.parse(last.slice(last.indexOf('stats ') + 6)) as VpnStats
}

export interface DemoResult {
  label: string
  bytes: number
  seconds: number
  gbps: number
  server?: VpnStats
  client?: VpnStats
}

/** One run: VPN up, `seconds` of TCP from client to server through the tunnel. */
async function runOnce(label: string, vpnFlags: string[], seconds: number, progress: (s: string) => void, topo: Topology): Promise<DemoResult> {
  const cli = cliArgv()
  // Plaintext is meant: both ends are namespaces of this machine.
  const serverOut: string[] = []
  const clientOut: string[] = []
  const server = topo.spawn(topo.s, [process.execPath, ...cli, 'vpn', 'server', '--listen', '198.18.0.1:7000', '--address', '198.18.1.1/24', '--stats', '--plaintext', ...vpnFlags])
  server.stderr!.on('data', (d: Buffer) => serverOut.push(d.toString()))
  await waitForLine(server, /listening on/, 20_000)
  const client = topo.spawn(topo.c, [process.execPath, ...cli, 'vpn', 'client', '--connect', '198.18.0.1:7000', '--address', '198.18.1.2/24', '--stats', '--plaintext', ...vpnFlags])
  client.stderr!.on('data', (d: Buffer) => clientOut.push(d.toString()))
  await waitForLine(client, /connected to/, 20_000)
  const sink = topo.spawn(topo.s, [process.execPath, ...cli, '_sink', '198.18.1.1', '5201'])
  await waitForLine(sink, /listening/, 20_000)
  const sender = topo.spawn(topo.c, [process.execPath, ...cli, '_send', '198.18.1.1', '5201', String(seconds)])
  sender.stdout!.on('data', (d: Buffer) => {
    for (const line of d.toString().split('\n')) if (line.startsWith('progress ')) progress(`${label}: ${line.slice(9)}`)
  })
  const resultLine = await waitForLine(sender, /^result .*$/m, (seconds + 30) * 1000)
  const r = JSON.parse(resultLine.slice(7)) as { bytes: number; seconds: number }
  for (const p of [client, server]) p.kill('SIGTERM')
  await Promise.all([once(client, 'exit'), once(server, 'exit')])
  sink.kill('SIGKILL')
  const out: DemoResult = { label, bytes: r.bytes, seconds: r.seconds, gbps: (r.bytes * 8) / r.seconds / 1e9 }
  const ss = lastStats(serverOut.join(''))
  const cs = lastStats(clientOut.join(''))
  if (ss) out.server = ss
  if (cs) out.client = cs
  return out
}

function fmtRatio(p: number, s: number): string {
  return s > 0 ? (p / s).toFixed(1) : '-'
}

/** Runs the demo; resolves with an exit code. Ctrl-C cleans up too. */
export async function demo(opts: { seconds: number; log: (s: string) => void }): Promise<number> {
  if (process.getuid?.() !== 0) {
    opts.log('tunnel-gso demo needs root: it creates two network namespaces, a veth pair and tun devices.')
    return 1
  }
  const topo = new Topology('demo')
  const onSignal = () => {
    opts.log('\ninterrupted: cleaning up')
    topo.teardown()
    process.exit(130)
  }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  try {
    opts.log('setting up: namespaces ' + topo.s + ' and ' + topo.c + ', veth 198.18.0.1 <-> 198.18.0.2, tunnel 198.18.1.1 <-> 198.18.1.2')
    topo.setup()
    const results: DemoResult[] = []
    for (const [label, flags] of [
      ['no offload, raw wire', ['--no-offload', '--wire', 'raw']],
      ['offload, raw wire (split/coalesce)', ['--wire', 'raw']],
      ['offload, gso wire (whole)', ['--wire', 'gso']],
    ] as const) {
      opts.log(`running ${label} for ${opts.seconds} s ...`)
      results.push(await runOnce(label, [...flags], opts.seconds, (s) => opts.log(`  ${s}`), topo))
    }
    opts.log('')
    opts.log('TCP through the VPN, client -> server, one run each:')
    opts.log('mode                                   Gbit/s   pkts/read (client tun)  pkts/write (server tun)')
    for (const r of results) {
      opts.log(
        `${r.label.padEnd(38)} ${r.gbps.toFixed(2).padStart(6)}   ${fmtRatio(r.client?.rxPackets ?? 0, r.client?.rxReads ?? 0).padStart(22)}  ${fmtRatio(r.server?.txPackets ?? 0, r.server?.txWrites ?? 0).padStart(23)}`,
      )
    }
    const [a, b, c] = results
    if (a && b && c && a.gbps > 0) {
      opts.log(`\noffload / no offload throughput: raw wire ${(b.gbps / a.gbps).toFixed(2)}x, gso wire ${(c.gbps / a.gbps).toFixed(2)}x`)
    }
    return 0
  } finally {
    topo.teardown()
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
  }
}

/** `_sink HOST PORT`: accepts TCP connections and discards what they send. */
export async function sink(host: string, port: number): Promise<number> {
  const server = net.createServer((s) => {
    s.on('data', () => {})
    s.on('error', () => {})
  })
  server.listen(port, host)
  await once(server, 'listening')
  process.stderr.write('listening\n')
  await new Promise(() => {})
  return 0
}

/** `_send HOST PORT SECONDS`: sends as fast as it can for SECONDS, printing progress. */
export async function send(host: string, port: number, seconds: number): Promise<number> {
  const sock = net.connect({ host, port })
  await once(sock, 'connect')
  const block = Buffer.alloc(256 * 1024, 0x5a)
  const start = process.hrtime.bigint()
  const deadline = start + BigInt(Math.round(seconds * 1e9))
  let bytes = 0
  let lastReport = start
  for (;;) {
    const now = process.hrtime.bigint()
    if (now >= deadline) break
    if (now - lastReport >= 1_000_000_000n) {
      lastReport = now
      const el = Number(now - start) / 1e9
      process.stdout.write(`progress ${(bytes / 1e6).toFixed(0)} MB in ${el.toFixed(0)} s, ${((bytes * 8) / el / 1e9).toFixed(2)} Gbit/s\n`)
    }
    bytes += block.length
    if (!sock.write(block)) await once(sock, 'drain')
  }
  const el = Number(process.hrtime.bigint() - start) / 1e9
  sock.destroy()
  process.stdout.write(`result ${JSON.stringify({ bytes, seconds: el })}\n`)
  return 0
}
