#!/usr/bin/env node
// The `tunnel-gso` command.
import { Tun } from './index.js'

const USAGE = `usage: tunnel-gso <command>

commands:
  info     what this kernel supports (tun, vnet header, TCP/UDP offload)
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

function main(argv: string[]): number {
  const [cmd] = argv
  switch (cmd) {
    case 'info':
      return info()
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

process.exitCode = main(process.argv.slice(2))
