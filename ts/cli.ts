#!/usr/bin/env node
// The `tunnel-gso` command.
import { parseArgs } from 'node:util'
import { Tun } from './index.js'
import { parseEndpoint, runVpn } from './vpn.js'
import { demo, send, sink } from './demo.js'
import { bench, rr } from './bench.js'

const USAGE = `usage: tunnel-gso <command>

commands:
  info     what this kernel supports (tun, vnet header, TCP/UDP offload)
  vpn server --listen HOST:PORT --address CIDR[,CIDR] [options]
  vpn client --connect HOST:PORT --address CIDR[,CIDR] [options]
           a point-to-point VPN over TCP. Options:
             --mtu N            device MTU
             --routes CIDR,...  more destinations routed through the tunnel
             --name NAME        device name or pattern (default tun%d)
             --no-offload       one packet per system call
             --wire raw|gso     gso (default): a versioned handshake, then
                                frames of virtio header + super-packet, passed
                                whole between the two kernels; raw: IP packets
                                back to back, the Go package's example protocol
                                (no handshake, no framing)
             --tls-cert F --tls-key F --tls-ca F
                                mutual TLS (the CA is the identity)
             --plaintext        no TLS: say so, or give the three TLS files
             --stats            log the device counters every second
             --user NAME|UID    drop to this user once the device is open
  demo     (root) two namespaces, a VPN between them, TCP through it: prints
           throughput and packets per system call with and without offload,
           then removes everything it created (also on Ctrl-C)
           --seconds N        how long each run pushes traffic (default 5)
  bench    (root, iperf3) the VPN between two namespaces for each contender:
           a C reference built here, --wire gso, --wire raw, --no-offload;
           prints Gbit/s both ways, packets per syscall, CPU s/GB, 100 KB
           request/response p50/p99, event loop p99 and RSS
           --seconds N        iperf3 time each way per contender (default 30)
           --rounds N         in N slices, the contenders taking turns in each
                              round (default 3)
           --warmup N         iperf3 time before that, half each way, not counted (default 40)
           --only TEXT        only the contenders whose name contains TEXT
`

function info(): number {
  const p = Tun.probe()
  const rows: Array<[string, string]> = [
    ['kernel', p.kernel],
    ['/dev/net/tun', p.tun ? 'yes' : `no (${p.tunError ?? 'unknown'})`],
    ['virtio-net header', p.vnetHdr ? 'yes' : 'no'],
    ['can create devices', p.canCreate ? 'yes' : 'no (needs CAP_NET_ADMIN)'],
    ['TCP offload (TSO4/6)', p.canCreate ? (p.tcpOffload ? 'yes' : 'no') : 'unknown (needs CAP_NET_ADMIN)'],
    ['UDP offload (USO4/6)', p.canCreate ? (p.udpOffload ? 'yes' : 'no (Linux >= 6.2)') : 'unknown (needs CAP_NET_ADMIN)'],
  ]
  const w = Math.max(...rows.map(([k]) => k.length))
  for (const [k, v] of rows) console.log(`${k.padEnd(w)}  ${v}`)
  return 0
}

async function vpn(argv: string[]): Promise<number> {
  const [role, ...rest] = argv
  if (role !== 'server' && role !== 'client') {
    process.stderr.write(`tunnel-gso vpn: say server or client\n${USAGE}`)
    return 2
  }
  const { values } = parseArgs({
    args: rest,
    options: {
      listen: { type: 'string' },
      connect: { type: 'string' },
      address: { type: 'string' },
      routes: { type: 'string' },
      mtu: { type: 'string' },
      name: { type: 'string' },
      'no-offload': { type: 'boolean' },
      wire: { type: 'string' },
      'tls-cert': { type: 'string' },
      'tls-key': { type: 'string' },
      'tls-ca': { type: 'string' },
      plaintext: { type: 'boolean' },
      stats: { type: 'boolean' },
      user: { type: 'string' },
    },
    strict: true,
  })
  const endpoint = role === 'server' ? values.listen : values.connect
  if (!endpoint) throw new Error(role === 'server' ? '--listen HOST:PORT is required' : '--connect HOST:PORT is required')
  if (!values.address) throw new Error('--address CIDR is required')
  const wire = values.wire ?? 'gso'
  if (wire !== 'raw' && wire !== 'gso') throw new Error(`--wire must be raw or gso, not ${wire}`)
  const tlsFiles = [values['tls-cert'], values['tls-key'], values['tls-ca']]
  if (tlsFiles.some(Boolean) && !tlsFiles.every(Boolean)) throw new Error('TLS needs all of --tls-cert, --tls-key and --tls-ca')
  // Plaintext only when asked for.
  if (values.plaintext && tlsFiles.some(Boolean)) throw new Error('--plaintext and --tls-cert/--tls-key/--tls-ca exclude each other')
  if (!values.plaintext && !tlsFiles.some(Boolean)) {
    throw new Error('no TLS files given: pass --tls-cert/--tls-key/--tls-ca for mutual TLS, or --plaintext to run the tunnel unencrypted and unauthenticated')
  }
  const ac = new AbortController()
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      log(`vpn: ${sig}: shutting down`)
      ac.abort()
    })
  }
  await runVpn(
    {
      role,
      endpoint: parseEndpoint(endpoint),
      addresses: values.address.split(',').filter(Boolean),
      routes: values.routes ? values.routes.split(',').filter(Boolean) : [],
      mtu: values.mtu === undefined ? undefined : Number(values.mtu),
      name: values.name,
      offload: !values['no-offload'],
      stats: values.stats ?? false,
      user: values.user,
      wire,
      tls: tlsFiles.every(Boolean) ? { cert: tlsFiles[0]!, key: tlsFiles[1]!, ca: tlsFiles[2]! } : undefined,
      log,
    },
    ac.signal,
  )
  return 0
}

function log(msg: string): void {
  process.stderr.write(`${new Date().toISOString()} ${msg}\n`)
}

async function main(argv: string[]): Promise<number> {
  const [cmd] = argv
  switch (cmd) {
    case 'info':
      return info()
    case 'vpn':
      return vpn(argv.slice(1))
    case 'demo': {
      const { values } = parseArgs({ args: argv.slice(1), options: { seconds: { type: 'string' } }, strict: true })
      const seconds = values.seconds === undefined ? 5 : Number(values.seconds)
      if (!(seconds > 0 && seconds <= 600)) throw new Error('--seconds must be from 0 to 600')
      return demo({ seconds, log: (s) => console.log(s) })
    }
    case 'bench': {
      const { values } = parseArgs({ args: argv.slice(1), options: { seconds: { type: 'string' }, warmup: { type: 'string' }, rounds: { type: 'string' }, only: { type: 'string' } }, strict: true })
      const seconds = values.seconds === undefined ? 30 : Number(values.seconds)
      if (!(seconds >= 1 && seconds <= 600)) throw new Error('--seconds must be from 1 to 600')
      const warmup = values.warmup === undefined ? 40 : Number(values.warmup)
      if (!(warmup >= 1 && warmup <= 600)) throw new Error('--warmup must be from 1 to 600')
      const rounds = values.rounds === undefined ? 3 : Number(values.rounds)
      if (!(Number.isInteger(rounds) && rounds >= 1 && rounds <= 100)) throw new Error('--rounds must be a whole number from 1 to 100')
      return bench({ seconds, warmup, rounds, only: values.only, log: (s) => console.log(s) })
    }
    case '_rr':
      return rr(argv[1] ?? '', argv[2] ?? '', Number(argv[3]), Number(argv[4] ?? 0))
    case '_sink':
      return sink(argv[1] ?? '', Number(argv[2]))
    case '_send':
      return send(argv[1] ?? '', Number(argv[2]), Number(argv[3]))
    case undefined:
    case '-h':
    case '--help':
    case 'help':
      process.stdout.write(USAGE)
      return cmd === undefined ? 1 : 0
    default:
      process.stderr.write(`tunnel-gso: unknown command ${JSON.stringify(cmd)}\n${USAGE}`)
      return 2
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code
  },
  (e: unknown) => {
    const err = e as Error & { code?: string }
    process.stderr.write(`tunnel-gso: ${err.message}${err.code ? ` (${err.code})` : ''}\n`)
    process.exitCode = 1
  },
)
