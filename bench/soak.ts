// Soak: the VPN (gso wire) between two namespaces at full speed for N
// minutes, one TCP stream checked byte for byte (sha256 of what was sent and
// what arrived), fd count and RSS of both VPN processes sampled every 10 s.
// Run as root: node --import tsx bench/soak.ts [minutes] [wire]
// Not part of CI: it is long, and it is a measurement, not a test.
import { readdirSync, readFileSync } from 'node:fs'
import * as path from 'node:path'
import { Topology, waitForLine } from '../ts/demo.js'

const minutes = Number(process.argv[2] ?? 10)
const wire = process.argv[3] ?? 'gso'
const cli = [process.execPath, '--import', 'tsx', path.join(__dirname, '..', 'ts', 'cli.ts')]
const fixtures = path.join(__dirname, '..', '__test__', 'fixtures')

function sample(pid: number): { fds: number; rssMb: number } {
  const fds = readdirSync(`/proc/${pid}/fd`).length
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return { fds, rssMb: m ? Math.round(Number(m[1]) / 1024) : 0 }
}

async function main() {
  const topo = new Topology('soak')
  process.once('SIGINT', () => {
    topo.teardown()
    process.exit(130)
  })
  try {
    topo.setup()
    const server = topo.spawn(topo.s, [...cli, 'vpn', 'server', '--listen', '198.18.0.1:7000', '--address', '198.18.1.1/24', '--wire', wire, '--plaintext'])
    await waitForLine(server, /listening on/, 30_000)
    const client = topo.spawn(topo.c, [...cli, 'vpn', 'client', '--connect', '198.18.0.1:7000', '--address', '198.18.1.2/24', '--wire', wire, '--plaintext'])
    await waitForLine(client, /connected to/, 30_000)
    const sink = topo.spawn(topo.s, [process.execPath, '--import', 'tsx', path.join(fixtures, 'sink.ts'), 'tcp', '198.18.1.1', '5201'])
    await waitForLine(sink, /listening/, 30_000)
    let sinkOut = ''
    sink.stdout!.on('data', (d: Buffer) => (sinkOut += d.toString()))
    // The sender: a time-bounded stream of deterministic bytes, hashed as sent.
    const bytesFor = Math.round(minutes * 60 * 3e9 / 8) // ~3 Gbit/s worth; the sender stops on time below
    const sender = topo.spawn(topo.c, [process.execPath, '--import', 'tsx', path.join(fixtures, 'tcpsend.ts'), '198.18.1.1', '5201', String(bytesFor * 10), String(minutes * 60)])
    let sendOut = ''
    sender.stdout!.on('data', (d: Buffer) => (sendOut += d.toString()))
    const samples: Array<{ t: number; server: ReturnType<typeof sample>; client: ReturnType<typeof sample> }> = []
    const t0 = Date.now()
    const timer = setInterval(() => {
      samples.push({ t: Math.round((Date.now() - t0) / 1000), server: sample(server.pid!), client: sample(client.pid!) })
      const s = samples[samples.length - 1]!
      console.error(`t=${s.t}s server fds ${s.server.fds} rss ${s.server.rssMb} MB, client fds ${s.client.fds} rss ${s.client.rssMb} MB`)
    }, 10_000)
    await new Promise((r) => sender.once('exit', r))
    clearInterval(timer)
    await new Promise((r) => setTimeout(r, 2000))
    console.log(JSON.stringify({ minutes, wire, sent: sendOut.trim(), received: sinkOut.trim(), samples }))
  } finally {
    topo.teardown()
  }
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
