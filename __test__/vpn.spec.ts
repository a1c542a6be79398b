// The `tunnel-gso vpn` CLI between two namespaces joined by a veth pair.
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import * as net from 'node:net'
import * as path from 'node:path'
import type { ExecutionContext } from 'ava'
import { FIXTURES, Netns, ROOT, rootTest, withNetns } from './helpers/netns.js'
import { CLI, Proc, underlay } from './helpers/procs.js'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const NODE_TSX = [process.execPath, '--import', 'tsx']

const SERVER = ['198.18.200.1/24', '2001:db8:200::1/64']
const CLIENT = ['198.18.200.2/24', '2001:db8:200::2/64']

async function ping(ns: Netns, addr: string): Promise<number> {
  const out = await ns.exec('ping', ['-n', '-c', '3', '-i', '0.2', '-W', '2', ...(addr.includes(':') ? ['-6'] : []), addr]).catch((e: { stdout?: string }) => e.stdout ?? '')
  return Number(/(\d+) received/.exec(out)?.[1] ?? 0)
}

async function transfer(t: ExecutionContext, from: Netns, to: Netns, host: string, bytes: number): Promise<void> {
  const port = String(5300 + Math.floor(Math.random() * 100))
  const sink = new Proc(to, [process.execPath, '--import', 'tsx', path.join(FIXTURES, 'sink.ts'), 'tcp', host, port])
  await sink.waitFor(/listening/)
  const sent = JSON.parse(await from.exec(process.execPath, ['--import', 'tsx', path.join(FIXTURES, 'tcpsend.ts'), host, port, String(bytes)])) as { bytes: number; sha256: string }
  await sink.exited
  const got = JSON.parse(sink.out.trim().split('\n').filter((l) => l.startsWith('{')).pop()!) as { bytes: number; sha256: string }
  t.is(got.bytes, bytes, `bytes to ${host}`)
  t.is(got.sha256, sent.sha256, `sha256 to ${host}`)
}

function certs(): { dir: string; ca: string; cert: string; key: string; otherCa: string; otherCert: string; otherKey: string } {
  const dir = mkdtempSync(path.join(tmpdir(), 'tgso-tls-'))
  const o = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' })
  for (const p of ['', 'other-']) {
    o('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', `${p}ca.key`, '-out', `${p}ca.pem`, '-days', '2', '-subj', `/CN=${p}test ca`)
    o('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', `${p}peer.key`, '-out', `${p}peer.csr`, '-subj', `/CN=${p}peer`)
    writeFileSync(path.join(dir, 'ext.cnf'), 'basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n')
    o('x509', '-req', '-in', `${p}peer.csr`, '-CA', `${p}ca.pem`, '-CAkey', `${p}ca.key`, '-CAcreateserial', '-out', `${p}peer.pem`, '-days', '2', '-extfile', 'ext.cnf')
  }
  const f = (n: string) => path.join(dir, n)
  return { dir, ca: f('ca.pem'), cert: f('peer.pem'), key: f('peer.key'), otherCa: f('other-ca.pem'), otherCert: f('other-peer.pem'), otherKey: f('other-peer.key') }
}

interface Stats {
  rxPackets: number
  rxReads: number
  txPackets: number
  txWrites: number
  socketReads: number
  socketReadBytes: number
  socketReadMaxBytes: number
}

/** The counters of the complete `vpn: stats` lines a `--stats` process has logged so far. */
function statsLines(p: Proc): Stats[] {
  return p.out
    .split('\n')
    .slice(0, -1)
    .filter((l) => l.includes('vpn: stats '))
    .map((l) => JSON.parse(l.slice(l.indexOf('vpn: stats ') + 11)) as Stats)
}

/** The counters of the next stats line the process logs (one a second). */
async function nextStats(p: Proc): Promise<Stats> {
  const n = statsLines(p).length
  const deadline = Date.now() + 10_000
  while (statsLines(p).length <= n) {
    if (Date.now() > deadline) throw new Error(`no new stats line; output:\n${p.out}`)
    await sleep(100)
  }
  return statsLines(p).pop()!
}

/** Packets per read and per write between two snapshots of a device's counters. */
function perSyscall(a: Stats, b: Stats): { perRead: number; perWrite: number } {
  return { perRead: (b.rxPackets - a.rxPackets) / (b.rxReads - a.rxReads), perWrite: (b.txPackets - a.txPackets) / (b.txWrites - a.txWrites) }
}

// gso/no-offload-client: super-packets from the server reach a device without offload and are split there.
for (const mode of ['raw', 'raw+tls', 'gso', 'gso+tls', 'gso/no-offload-client'] as const) {
  rootTest(`vpn (${mode} wire): ping both ways over IPv4 and IPv6, 50 MB of TCP intact both ways`, async (t) => {
    const u = await underlay()
    const c = mode.endsWith('+tls') ? certs() : undefined
    const wire = mode.startsWith('gso') ? 'gso' : 'raw'
    const secArgs = (x: typeof c) => (x ? ['--tls-cert', x.cert, '--tls-key', x.key, '--tls-ca', x.ca] : ['--plaintext'])
    const server = new Proc(u.s, [...CLI, 'vpn', 'server', '--listen', '198.18.100.1:7000', '--address', SERVER.join(','), '--wire', wire, '--stats', ...secArgs(c)])
    let client: Proc | undefined
    try {
      await server.waitFor(/listening on/)
      client = new Proc(u.c, [...CLI, 'vpn', 'client', '--connect', '198.18.100.1:7000', '--address', CLIENT.join(','), '--wire', wire, '--stats', ...secArgs(c), ...(mode.includes('no-offload') ? ['--no-offload'] : [])])
      await client.waitFor(/connected to/)
      t.is(await ping(u.c, '198.18.200.1'), 3, 'client -> server IPv4')
      t.is(await ping(u.s, '198.18.200.2'), 3, 'server -> client IPv4')
      t.is(await ping(u.c, '2001:db8:200::1'), 3, 'client -> server IPv6')
      t.is(await ping(u.s, '2001:db8:200::2'), 3, 'server -> client IPv6')
      // The gso wire passes super-packets whole: the sending side's device
      // reads many packets per read, and the receiving side's device writes
      // as many per write, during each 50 MB transfer.
      const whole = mode === 'gso' || mode === 'gso+tls'
      let s0 = await nextStats(server)
      let c0 = await nextStats(client)
      await transfer(t, u.c, u.s, '198.18.200.1', 50e6)
      let s1 = await nextStats(server)
      let c1 = await nextStats(client)
      if (whole) {
        const sent = perSyscall(c0, c1).perRead
        const written = perSyscall(s0, s1).perWrite
        t.log(`client -> server: ${sent.toFixed(1)} packets per read (client), ${written.toFixed(1)} per write (server)`)
        t.true(sent >= 5, `client -> server: the client's device read ${sent.toFixed(1)} packets per read`)
        t.true(written >= 5, `client -> server: the server's device wrote ${written.toFixed(1)} packets per write`)
      }
      ;[s0, c0] = [s1, c1]
      await transfer(t, u.s, u.c, '2001:db8:200::2', 50e6)
      s1 = await nextStats(server)
      c1 = await nextStats(client)
      if (whole) {
        const sent = perSyscall(s0, s1).perRead
        const written = perSyscall(c0, c1).perWrite
        t.log(`server -> client: ${sent.toFixed(1)} packets per read (server), ${written.toFixed(1)} per write (client)`)
        t.true(sent >= 5, `server -> client: the server's device read ${sent.toFixed(1)} packets per read`)
        t.true(written >= 5, `server -> client: the client's device wrote ${written.toFixed(1)} packets per write`)
      }
      // A plain connection is read into one reused 1 MiB buffer, so a read
      // can bring more than the 64 KiB of a stream chunk; TLS is read as a
      // stream. Each side received 50 MB.
      for (const [side, st] of [['server', s1], ['client', c1]] as const) {
        t.log(`${side}: ${st.socketReads} socket reads, ${(st.socketReadBytes / st.socketReads / 1024).toFixed(0)} KiB on average, ${(st.socketReadMaxBytes / 1024).toFixed(0)} KiB at most`)
        t.true(st.socketReadBytes >= 50e6, `${side}: ${st.socketReadBytes} bytes read from the connection`)
        if (c) t.true(st.socketReadMaxBytes <= 65536, `${side} (TLS): reads are stream chunks (${st.socketReadMaxBytes} bytes at most)`)
        else t.true(st.socketReadMaxBytes > 65536, `${side}: reads go into the 1 MiB buffer (${st.socketReadMaxBytes} bytes at most)`)
      }
      t.is(await client.stop(), 0, 'client exits cleanly on SIGTERM')
      t.is(await server.stop(), 0, 'server exits cleanly on SIGTERM')
      t.regex(server.out, /SIGTERM: shutting down/)
    } finally {
      await client?.stop()
      await server.stop()
      await u.destroy()
      if (c) rmSync(c.dir, { recursive: true, force: true })
    }
  })
}

rootTest('vpn: without TLS files and without --plaintext it refuses to start, saying what to pass', async (t) => {
  await withNetns(async (ns) => {
    for (const args of [
      ['server', '--listen', '198.18.100.1:7000'],
      ['client', '--connect', '198.18.100.1:7000'],
    ]) {
      const p = new Proc(ns, [...CLI, 'vpn', ...args, '--address', SERVER[0]!])
      t.is(await p.exited, 1, `vpn ${args[0]} exits non-zero`)
      t.regex(p.out, /no TLS files given: pass --tls-cert\/--tls-key\/--tls-ca for mutual TLS, or --plaintext/)
      t.notRegex(p.out, /vpn: /, 'nothing was started')
    }
    const both = new Proc(ns, [...CLI, 'vpn', 'server', '--listen', '198.18.100.1:7000', '--address', SERVER[0]!, '--plaintext', '--tls-cert', 'c', '--tls-key', 'k', '--tls-ca', 'a'])
    t.is(await both.exited, 1)
    t.regex(both.out, /--plaintext and --tls-cert\/--tls-key\/--tls-ca exclude each other/)
  })
})

rootTest('vpn: a client with a certificate from another CA is refused; the server keeps serving', async (t) => {
  const u = await underlay()
  const c = certs()
  const server = new Proc(u.s, [...CLI, 'vpn', 'server', '--listen', '198.18.100.1:7000', '--address', SERVER[0]!, '--tls-cert', c.cert, '--tls-key', c.key, '--tls-ca', c.ca])
  const procs: Proc[] = [server]
  try {
    await server.waitFor(/listening on/)
    const bad = new Proc(u.c, [...CLI, 'vpn', 'client', '--connect', '198.18.100.1:7000', '--address', CLIENT[0]!, '--tls-cert', c.otherCert, '--tls-key', c.otherKey, '--tls-ca', c.otherCa])
    procs.push(bad)
    await bad.waitFor(/cannot connect/)
    await server.waitFor(/198\.18\.100\.2:\d+: TLS handshake failed: /)
    t.notRegex(bad.out, /connected to/)
    await bad.stop()
    const good = new Proc(u.c, [...CLI, 'vpn', 'client', '--connect', '198.18.100.1:7000', '--address', CLIENT[0]!, '--tls-cert', c.cert, '--tls-key', c.key, '--tls-ca', c.ca])
    procs.push(good)
    await good.waitFor(/connected to/)
    t.is(await ping(u.c, '198.18.200.1'), 3)
  } finally {
    for (const p of procs) await p.stop()
    await u.destroy()
    rmSync(c.dir, { recursive: true, force: true })
  }
})

/** Runs junk.ts in `ns` against the server; resolves with the local port of the connection the server cut off. */
async function junk(t: ExecutionContext, ns: Netns, kind: string): Promise<string> {
  const out = await ns.exec(process.execPath, ['--import', 'tsx', path.join(FIXTURES, 'junk.ts'), '198.18.100.1', '7000', kind])
  const port = /closed by server \(local port (\d+)\)/.exec(out)?.[1]
  t.truthy(port, `${kind}: the server cut the connection off (${out.trim()})`)
  return port ?? '?'
}

rootTest('vpn: a raw-wire client against a gso-wire server fails the handshake with a clear message; a gso client is served next', async (t) => {
  const u = await underlay()
  const server = new Proc(u.s, [...CLI, 'vpn', 'server', '--listen', '198.18.100.1:7000', '--address', SERVER[0]!, '--wire', 'gso', '--plaintext'])
  const procs = [server]
  try {
    await server.waitFor(/listening on/)
    const raw = new Proc(u.c, [...CLI, 'vpn', 'client', '--connect', '198.18.100.1:7000', '--address', CLIENT[0]!, '--wire', 'raw', '--plaintext'])
    procs.push(raw)
    // The raw client's first packet is an IPv4 header: "E\u0000..." is not the magic.
    await server.waitFor(/handshake failed: peer is not speaking the tunnel-gso gso wire \(got "E.*"\); is it --wire raw\?/)
    await raw.stop()
    // A length field of 4 GB after a good handshake: cut off, nothing buffered.
    const port = await junk(t, u.c, 'hugeframe')
    await server.waitFor(new RegExp(`:${port}: handshake failed: first frame: frame length 4294967295 is outside`))
    const good = new Proc(u.c, [...CLI, 'vpn', 'client', '--connect', '198.18.100.1:7000', '--address', CLIENT[0]!, '--wire', 'gso', '--plaintext'])
    procs.push(good)
    await good.waitFor(/connected to/)
    t.is(await ping(u.c, '198.18.200.1'), 3)
  } finally {
    for (const p of procs) await p.stop()
    await u.destroy()
  }
})

rootTest('vpn: a peer with the gso-wire magic and another version is refused with a message naming both versions', async (t) => {
  const u = await underlay()
  const server = new Proc(u.s, [...CLI, 'vpn', 'server', '--listen', '198.18.100.1:7000', '--address', SERVER[0]!, '--wire', 'gso', '--plaintext'])
  try {
    await server.waitFor(/listening on/)
    const port = await junk(t, u.c, 'badversion')
    await server.waitFor(new RegExp(`:${port}: handshake failed: `))
    t.true(server.out.includes(`:${port}: handshake failed: peer speaks gso wire version 2, this side speaks 1\n`), server.out)
  } finally {
    await server.stop()
    await u.destroy()
  }
})

rootTest('vpn: garbage on the socket drops that connection only; the next client is served', async (t) => {
  const u = await underlay()
  const server = new Proc(u.s, [...CLI, 'vpn', 'server', '--listen', '198.18.100.1:7000', '--address', SERVER[0]!, '--wire', 'raw', '--plaintext'])
  let client: Proc | undefined
  try {
    await server.waitFor(/listening on/)
    // A peer in the client namespace that sends random bytes (first byte not
    // 4 or 6). With no client connected a raw peer is let in at once, so the
    // pump finds the garbage and drops the connection.
    const port = await junk(t, u.c, 'garbage')
    await server.waitFor(new RegExp(`:${port}: dropping connection: byte 0 of the stream is not an IP packet: IP version 1 is neither 4 nor 6`))
    client = new Proc(u.c, [...CLI, 'vpn', 'client', '--connect', '198.18.100.1:7000', '--address', CLIENT[0]!, '--wire', 'raw', '--plaintext'])
    await client.waitFor(/connected to/)
    t.is(await ping(u.c, '198.18.200.1'), 3)
    t.is(server.child.exitCode, null, 'server still running')
  } finally {
    await client?.stop()
    await server.stop()
    await u.destroy()
  }
})

// Why the server cut off each kind of junk, by wire (junk.ts's kinds, then the slowloris flood).
const CUT_OFF: Record<'raw' | 'gso' | 'gso+tls', { junk: Record<string, RegExp>; flood: RegExp }> = {
  raw: {
    junk: {
      garbage: /handshake failed: the first bytes are not an IP packet: IP version 1 is neither 4 nor 6/,
      random: /handshake failed: the first bytes are not an IP packet/,
      ipv4badsum: /handshake failed: the first bytes are not an IP packet: the IPv4 header checksum is wrong/,
      hugeframe: /handshake failed: the first bytes are not an IP packet: IP version 5 is neither 4 nor 6/,
    },
    flood: /handshake failed: no IP packet within 5000 ms/,
  },
  gso: {
    junk: {
      garbage: /handshake failed: peer is not speaking the tunnel-gso gso wire/,
      random: /handshake failed: peer is not speaking the tunnel-gso gso wire/,
      ipv4badsum: /handshake failed: peer is not speaking the tunnel-gso gso wire/,
      hugeframe: /handshake failed: first frame: frame length 4294967295 is outside/,
    },
    flood: /handshake failed: no handshake within 5000 ms/,
  },
  'gso+tls': {
    junk: {
      garbage: /TLS handshake failed: /,
      random: /TLS handshake failed: /,
      hugeframe: /TLS handshake failed: /,
    },
    flood: /TLS handshake failed: TLS handshake timeout/,
  },
}

for (const mode of ['raw', 'gso', 'gso+tls'] as const) {
  rootTest(`vpn (${mode} wire): garbage, random bytes, a 4 GB frame length and a slowloris flood from other connections cost only themselves; the live client's ping never stops`, async (t) => {
    const u = await underlay()
    const c = mode === 'gso+tls' ? certs() : undefined
    const wire = mode === 'raw' ? 'raw' : 'gso'
    const sec = c ? ['--tls-cert', c.cert, '--tls-key', c.key, '--tls-ca', c.ca] : ['--plaintext']
    const server = new Proc(u.s, [...CLI, 'vpn', 'server', '--listen', '198.18.100.1:7000', '--address', SERVER[0]!, '--wire', wire, ...sec])
    let client: Proc | undefined
    let pinger: Proc | undefined
    try {
      await server.waitFor(/listening on/)
      client = new Proc(u.c, [...CLI, 'vpn', 'client', '--connect', '198.18.100.1:7000', '--address', CLIENT[0]!, '--wire', wire, ...sec])
      await client.waitFor(/connected to/)
      await server.waitFor(/: connected/)
      t.is(await ping(u.c, '198.18.200.1'), 3, 'before')
      // Ten pings a second through the tunnel while the junk comes in.
      pinger = new Proc(u.c, ['ping', '-n', '-i', '0.1', '-W', '2', '198.18.200.1'])
      await pinger.waitFor(/bytes from/)
      for (const [kind, why] of Object.entries(CUT_OFF[mode].junk)) {
        const port = await junk(t, u.c, kind)
        await server.waitFor(new RegExp(`:${port}: ${why.source}`), 10_000)
      }
      const flood = await u.c.exec(process.execPath, ['--import', 'tsx', path.join(FIXTURES, 'flood.ts'), '198.18.100.1', '7000', '40'])
      const r = JSON.parse(flood.trim().split('\n').pop()!) as { opened: number; closedByServer: number }
      t.is(r.opened, 40)
      t.is(r.closedByServer, 40, 'every silent connection was cut off')
      t.regex(server.out, /refused: 32 handshakes already pending/)
      t.regex(server.out, CUT_OFF[mode].flood)
      pinger.child.kill('SIGINT')
      await pinger.exited
      const m = /(\d+) packets transmitted, (\d+) received/.exec(pinger.out)
      t.truthy(m, pinger.out)
      const [sent, got] = [Number(m?.[1]), Number(m?.[2])]
      t.true(sent >= 50, `pinged for the whole abuse (${sent} pings)`)
      // The last one may still be on its way when ping is stopped.
      t.true(got >= sent - 1, `the live client answered ${got} of ${sent} pings during the abuse`)
      t.is(await ping(u.c, '198.18.200.1'), 3, 'after')
      t.is((client.out.match(/connected to/g) ?? []).length, 1, 'the live client never lost its connection')
      t.notRegex(server.out, /replaced by/)
    } finally {
      pinger?.child.kill('SIGKILL')
      await client?.stop()
      await server.stop()
      await u.destroy()
      if (c) rmSync(c.dir, { recursive: true, force: true })
    }
  })
}

/** Ping, TCP and UDP both ways between the two ends of the tunnel (u.s 198.18.200.1, u.c 198.18.200.2). */
async function pingTcpUdp(t: ExecutionContext, u: { s: Netns; c: Netns }): Promise<void> {
  t.is(await ping(u.c, '198.18.200.1'), 3, 'client side -> server side')
  t.is(await ping(u.s, '198.18.200.2'), 3, 'server side -> client side')
  await transfer(t, u.c, u.s, '198.18.200.1', 5e6)
  await transfer(t, u.s, u.c, '198.18.200.2', 5e6)
  for (const [from, to, host] of [[u.c, u.s, '198.18.200.1'], [u.s, u.c, '198.18.200.2']] as const) {
    const sink = new Proc(to, [process.execPath, '--import', 'tsx', path.join(FIXTURES, 'sink.ts'), 'udp', host, '5400', '200'])
    await sink.waitFor(/listening/)
    await from.exec('python3', [path.join(FIXTURES, 'udp_gso_send.py'), '4', host, '5400', '200', '1000', '1'])
    await sink.exited
    const r = JSON.parse(sink.out.trim().split('\n').filter((l) => l.startsWith('{')).pop()!) as { datagrams: number; bad: number }
    t.is(r.datagrams, 200, `UDP to ${host}`)
    t.is(r.bad, 0)
  }
}

rootTest('vpn server (raw wire) interoperates with an independent implementation of the raw protocol as client: ping, TCP and UDP both ways', async (t) => {
  const u = await underlay()
  const server = new Proc(u.s, [...CLI, 'vpn', 'server', '--listen', '198.18.100.1:7000', '--address', SERVER[0]!, '--wire', 'raw', '--plaintext'])
  let peer: Proc | undefined
  try {
    await server.waitFor(/listening on/)
    peer = new Proc(u.c, ['python3', path.join(FIXTURES, 'rawpeer.py'), 'connect', '198.18.100.1', '7000', 'rawp0', CLIENT[0]!])
    await peer.waitFor(/ready/)
    // The peer takes over with its first packet (the first ping at the latest).
    await pingTcpUdp(t, u)
    t.regex(server.out, /198\.18\.100\.2:\d+: connected/)
  } finally {
    await peer?.stop()
    await server.stop()
    await u.destroy()
  }
})

rootTest('vpn client (raw wire) interoperates with an independent implementation of the raw protocol as server: ping, TCP and UDP both ways', async (t) => {
  const u = await underlay()
  const peer = new Proc(u.s, ['python3', path.join(FIXTURES, 'rawpeer.py'), 'listen', '198.18.100.1', '7000', 'rawp0', SERVER[0]!])
  let client: Proc | undefined
  try {
    await peer.waitFor(/listening/)
    client = new Proc(u.c, [...CLI, 'vpn', 'client', '--connect', '198.18.100.1:7000', '--address', CLIENT[0]!, '--wire', 'raw', '--plaintext'])
    await client.waitFor(/connected to/)
    await peer.waitFor(/ready/)
    await pingTcpUdp(t, u)
    t.is(peer.child.exitCode, null, 'the peer took every byte as IP packets')
  } finally {
    await client?.stop()
    await peer.stop()
    await u.destroy()
  }
})

rootTest('vpn client: a server that fails the handshake at once makes the waits grow (250, 500, 1000 ms ...); SIGTERM during a wait exits 0 at once', async (t) => {
  const u = await underlay()
  const bad = new Proc(u.s, [...NODE_TSX, path.join(FIXTURES, 'vpn_badserver.ts'), '198.18.100.1', '7000', '2'])
  let client: Proc | undefined
  try {
    await bad.waitFor(/listening/)
    client = new Proc(u.c, [...CLI, 'vpn', 'client', '--connect', '198.18.100.1:7000', '--address', CLIENT[0]!, '--wire', 'gso', '--plaintext'])
    await client.waitFor(/retrying in 4000 ms/, 30_000)
    const t0 = Date.now()
    const code = await client.stop()
    const ms = Date.now() - t0
    t.is(code, 0, 'exit code')
    t.true(ms < 1500, `exited ${ms} ms after SIGTERM, in the middle of a 4000 ms wait`)
    t.true(client.out.includes('handshake failed: peer speaks gso wire version 2, this side speaks 1\n'), client.out)
    const waits = [...client.out.matchAll(/connected to [^\n]*\n[^\n]*handshake failed[^\n]*\n[^\n]*retrying in (\d+) ms/g)].map((m) => Number(m[1]))
    t.deepEqual(waits, [250, 500, 1000, 2000, 4000], 'each connection succeeded and its handshake failed; the waits grew')
  } finally {
    await client?.stop()
    await bad.stop()
    await u.destroy()
  }
})

rootTest('vpn server: SIGTERM while connections sit in the handshake (raw, gso, TLS) exits 0 at once', async (t) => {
  const u = await underlay()
  const c = certs()
  try {
    // With nobody connected, the first raw peer is let in at once; the other
    // two would replace it, so they sit in the handshake (no first packet).
    // Those cut off in the wire's handshake are logged; TLS sockets cut off
    // before their ClientHello are not (the exit time shows they did not wait).
    for (const [label, args, taken, cutLogged] of [
      ['raw wire, no first packet yet', ['--wire', 'raw', '--plaintext'], 1, 2],
      ['gso wire, no hello yet', ['--wire', 'gso', '--plaintext'], 0, 3],
      ['TLS, no ClientHello yet', ['--wire', 'gso', '--tls-cert', c.cert, '--tls-key', c.key, '--tls-ca', c.ca], 0, 0],
    ] as const) {
      const server = new Proc(u.s, [...CLI, 'vpn', 'server', '--listen', '198.18.100.1:7000', '--address', SERVER[0]!, ...args])
      let silent: Proc | undefined
      try {
        await server.waitFor(/listening on/)
        silent = new Proc(u.c, [...NODE_TSX, path.join(FIXTURES, 'flood.ts'), '198.18.100.1', '7000', '3'])
        await silent.waitFor(/opened 3/)
        await sleep(300)
        const t0 = Date.now()
        const code = await server.stop()
        const ms = Date.now() - t0
        t.is(code, 0, `${label}: exit code`)
        t.true(ms < 1500, `${label}: exited ${ms} ms after SIGTERM with 3 handshakes pending (their limit is 5000 ms)`)
        t.is(server.out.match(/: connected\n/g)?.length ?? 0, taken, `${label}: ${taken} took over`)
        t.is(server.out.match(/: closed: shutting down\n/g)?.length ?? 0, cutLogged, `${label}: the rest were cut off in the handshake`)
      } finally {
        await silent?.stop()
        await server.stop()
      }
    }
  } finally {
    await u.destroy()
    rmSync(c.dir, { recursive: true, force: true })
  }
})

export { net }

/**
 * Watches the processes a running process starts (and theirs), until stop():
 * what is still running of them afterwards is left behind, whatever its
 * arguments.
 */
function watchDescendants(root: number): { stop: () => void; seen: () => string[]; alive: () => string[] } {
  const seen = new Map<number, string>()
  const sample = () => {
    const rows = execFileSync('ps', ['-eo', 'pid=,ppid=,args=']).toString().split('\n')
    const procs = rows.map((l) => /^\s*(\d+)\s+(\d+)\s+(.*)$/.exec(l)).filter((m) => m !== null)
    for (let grew = true; grew; ) {
      grew = false
      for (const [, pid, ppid, args] of procs) {
        if (!seen.has(Number(pid)) && (Number(ppid) === root || seen.has(Number(ppid)))) {
          seen.set(Number(pid), args!)
          grew = true
        }
      }
    }
  }
  sample()
  const timer = setInterval(sample, 100)
  return {
    stop: () => clearInterval(timer),
    seen: () => [...seen.values()],
    alive: () => {
      const now = new Map(execFileSync('ps', ['-eo', 'pid=,args=']).toString().split('\n').map((l) => /^\s*(\d+)\s+(.*)$/.exec(l)).filter((m) => m !== null).map((m) => [Number(m[1]), m[2]!] as const))
      return [...seen].filter(([pid, args]) => now.get(pid) === args).map(([pid, args]) => `${pid} ${args}`)
    },
  }
}

function leftovers(pid: number, procs: string[]): { ns: string[]; procs: string[]; links: string[] } {
  const ns = execFileSync('ip', ['netns', 'list']).toString().split('\n').filter((l) => l.startsWith(`tgso-demo-${pid}-`))
  const links = execFileSync('ip', ['-o', 'link', 'show']).toString().split('\n').filter((l) => l.includes('tgsodemo'))
  return { ns, procs, links }
}

rootTest('tunnel-gso demo runs to completion, shows progress and packets per system call, and leaves no namespace, link or process behind', async (t) => {
  const demo = new Proc(null, [...CLI, 'demo', '--seconds', '2'])
  const watch = watchDescendants(demo.child.pid!)
  const code = await demo.exited
  watch.stop()
  t.is(code, 0, demo.out)
  t.regex(demo.out, /offload \/ no offload throughput/)
  const labels = ['no offload, raw wire', 'offload, raw wire (split/coalesce)', 'offload, gso wire (whole)']
  const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')
  for (const [i, label] of labels.entries()) {
    t.regex(demo.out, new RegExp(`^  ${esc(label)}: \\d+ MB in \\d+ s, \\d+\\.\\d\\d Gbit/s$`, 'm'), `progress of ${label}`)
    const row = new RegExp(`^${esc(label)} +(\\d+\\.\\d\\d) +(\\d+\\.\\d|-) +(\\d+\\.\\d|-)$`, 'm').exec(demo.out)
    t.truthy(row, `figures of ${label}`)
    const [perRead, perWrite] = [Number(row?.[2]), Number(row?.[3])]
    if (i === 0) {
      t.is(perRead, 1, 'no offload: one packet per read')
      t.is(perWrite, 1, 'no offload: one packet per write')
    } else {
      t.true(perRead > 1, `${label}: ${perRead} packets per read`)
      t.true(perWrite > 1, `${label}: ${perWrite} packets per write`)
    }
  }
  t.regex(demo.out, /pkts\/read \(client tun\)\s+pkts\/write \(server tun\)/)
  // The watch saw what the demo started: the check below is not vacuous.
  for (const what of ['vpn server', 'vpn client', '_sink', '_send']) t.true(watch.seen().some((a) => a.includes(`cli.ts ${what}`)), `saw the demo's ${what}`)
  await sleep(300)
  t.deepEqual(leftovers(demo.child.pid!, watch.alive()), { ns: [], procs: [], links: [] })
})

rootTest('tunnel-gso demo cleans up on Ctrl-C', async (t) => {
  const demo = new Proc(null, [...CLI, 'demo', '--seconds', '20'])
  const watch = watchDescendants(demo.child.pid!)
  await demo.waitFor(/running/)
  await sleep(1500)
  demo.child.kill('SIGINT')
  const code = await demo.exited
  watch.stop()
  t.is(code, 130)
  t.true(watch.seen().some((a) => a.includes('cli.ts vpn server')), "saw the demo's vpn server")
  await sleep(300)
  t.deepEqual(leftovers(demo.child.pid!, watch.alive()), { ns: [], procs: [], links: [] })
})

rootTest('vpn: the client reconnects with backoff after the server restarts', async (t) => {
  const u = await underlay()
  const args = ['--address', SERVER[0]!, '--wire', 'gso', '--plaintext']
  let server = new Proc(u.s, [...CLI, 'vpn', 'server', '--listen', '198.18.100.1:7000', ...args])
  let client: Proc | undefined
  try {
    await server.waitFor(/listening on/)
    client = new Proc(u.c, [...CLI, 'vpn', 'client', '--connect', '198.18.100.1:7000', '--address', CLIENT[0]!, '--wire', 'gso', '--plaintext'])
    await client.waitFor(/connected to/)
    t.is(await ping(u.c, '198.18.200.1'), 3)
    t.is(await server.stop(), 0)
    await client.waitFor(/disconnected/)
    await client.waitFor(/retrying in \d+ ms/)
    server = new Proc(u.s, [...CLI, 'vpn', 'server', '--listen', '198.18.100.1:7000', ...args])
    await server.waitFor(/listening on/)
    await server.waitFor(/: connected/, 30_000)
    t.is((client.out.match(/connected to/g) ?? []).length, 2, 'connected a second time')
    t.is(await ping(u.c, '198.18.200.1'), 3)
  } finally {
    await client?.stop()
    await server.stop()
    await u.destroy()
  }
})

rootTest('tunnel-gso info prints what the kernel supports, as a table', async (t) => {
  await withNetns(async (ns) => {
    const out = await ns.exec(process.execPath, ['--import', 'tsx', path.join(ROOT, 'ts', 'cli.ts'), 'info'])
    t.regex(out, /^kernel\s+\d+\.\d+/m)
    t.regex(out, /^\/dev\/net\/tun\s+yes$/m)
    t.regex(out, /^virtio-net header\s+yes$/m)
    t.regex(out, /^TCP offload \(TSO4\/6\)\s+yes$/m)
    t.regex(out, /^UDP offload \(USO4\/6\)\s+(yes|no \(Linux >= 6\.2\))$/m)
  })
})

rootTest('vpn --user: the server drops to uid 65534 after opening the device and keeps working', async (t) => {
  const u = await underlay()
  const server = new Proc(u.s, [...CLI, 'vpn', 'server', '--listen', '198.18.100.1:7000', '--address', SERVER[0]!, '--plaintext', '--user', '65534'])
  let client: Proc | undefined
  try {
    await server.waitFor(/running as uid 65534/)
    const status = execFileSync('cat', [`/proc/${server.child.pid}/status`]).toString()
    t.regex(status, /^Uid:\s+65534\s+65534\s+65534\s+65534$/m)
    t.regex(status, /^CapEff:\s+0+$/m, 'no capabilities left')
    client = new Proc(u.c, [...CLI, 'vpn', 'client', '--connect', '198.18.100.1:7000', '--address', CLIENT[0]!, '--plaintext'])
    await client.waitFor(/connected to/)
    t.is(await ping(u.c, '198.18.200.1'), 3)
    await transfer(t, u.c, u.s, '198.18.200.1', 5e6)
  } finally {
    await client?.stop()
    await server.stop()
    await u.destroy()
  }
})

rootTest('vpn: a slowloris flood of silent connections is cut off at the handshake with bounded memory; the real client is served', async (t) => {
  const u = await underlay()
  const server = new Proc(u.s, [...CLI, 'vpn', 'server', '--listen', '198.18.100.1:7000', '--address', SERVER[0]!, '--wire', 'gso', '--plaintext'])
  let client: Proc | undefined
  try {
    await server.waitFor(/listening on/)
    const rss = () => Number(/VmRSS:\s+(\d+) kB/.exec(execFileSync('cat', [`/proc/${server.child.pid}/status`]).toString())?.[1] ?? 0) / 1024
    const rssBefore = rss()
    const flood = await u.c.exec(process.execPath, ['--import', 'tsx', path.join(FIXTURES, 'flood.ts'), '198.18.100.1', '7000', '60'])
    const rssAfter = rss()
    t.true(rssAfter - rssBefore < 64, `server RSS ${rssBefore.toFixed(0)} -> ${rssAfter.toFixed(0)} MB across the flood`)
    const r = JSON.parse(flood.trim().split('\n').pop()!) as { opened: number; closedByServer: number }
    t.is(r.opened, 60)
    t.is(r.closedByServer, 60, 'every silent connection was cut off')
    t.regex(server.out, /refused: \d+ handshakes already pending/)
    t.regex(server.out, /handshake failed: no handshake within 5000 ms/)
    client = new Proc(u.c, [...CLI, 'vpn', 'client', '--connect', '198.18.100.1:7000', '--address', CLIENT[0]!, '--plaintext'])
    await client.waitFor(/connected to/)
    t.is(await ping(u.c, '198.18.200.1'), 3)
  } finally {
    await client?.stop()
    await server.stop()
    await u.destroy()
  }
})
