// `tunnel-gso vpn`: a point-to-point VPN over TCP, written on the public API.
import * as net from 'node:net'
import * as tls from 'node:tls'
import { readFileSync } from 'node:fs'
import { once } from 'node:events'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { Tun } from './index.js'
import { FrameSplitter, PacketSplitter } from './streams.js'

export interface VpnOptions {
  role: 'server' | 'client'
  /** HOST:PORT to listen on (server) or connect to (client). */
  endpoint: { host: string; port: number }
  /** Addresses of the device (CIDR), IPv4 and/or IPv6. */
  addresses: string[]
  routes: string[]
  mtu?: number
  offload: boolean
  wire: 'raw' | 'gso'
  tls?: { cert: string; key: string; ca: string }
  name?: string
  /** Log the device's counters every second and at the end. */
  stats?: boolean
  /** Drop to this user (name or uid) once the device is open and configured. */
  user?: string
  log: (msg: string) => void
}

/**
 * Least privilege: once the device is open and configured (and the TLS files
 * read), become `user` (a name from /etc/passwd, or a numeric uid) with its
 * primary group and no supplementary groups. The open device keeps working.
 */
export function dropPrivileges(user: string): { uid: number; gid: number } {
  let uid: number
  let gid: number
  if (/^\d+$/.test(user)) {
    uid = Number(user)
    gid = uid
  } else {
    const line = readFileSync('/etc/passwd', 'utf8')
      .split('\n')
      .find((l) => l.split(':')[0] === user)
    if (!line) throw new Error(`--user ${user}: no such user`)
    const f = line.split(':')
    uid = Number(f[2])
    gid = Number(f[3])
  }
  if (!process.setuid || !process.setgid || !process.setgroups) throw new Error('--user needs POSIX credentials calls')
  process.setgroups([gid])
  process.setgid(gid)
  process.setuid(uid)
  if (process.getuid?.() !== uid || process.geteuid?.() !== uid) throw new Error(`could not become uid ${uid}`)
  return { uid, gid }
}

/** Parses `HOST:PORT`, `[v6]:PORT`. */
export function parseEndpoint(s: string): { host: string; port: number } {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(s) ?? /^([^:]+):(\d+)$/.exec(s)
  if (!m) throw new Error(`${JSON.stringify(s)} is not HOST:PORT`)
  const port = Number(m[2])
  if (port < 1 || port > 65535) throw new Error(`port ${port} is out of range`)
  return { host: m[1]!, port }
}

type Conn = net.Socket | tls.TLSSocket

/** Bytes the device -> socket direction may queue in the socket before it waits for 'drain'. */
const SOCKET_BUFFER = 4 << 20
/** Bytes of one read buffer of the device -> socket direction. */
const SLAB = 1 << 20
/** Read buffers the device -> socket direction may have in the socket at once. */
const MAX_SLABS = 8

/**
 * Read buffers for the device -> socket direction, reused once the socket has
 * taken what was read into them (its write callback), so that steady traffic
 * allocates nothing and touches the same memory over and over.
 */
class SlabPool {
  readonly #free: ArrayBuffer[] = []
  #count = 0
  #onFree: (() => void) | undefined

  /** A free buffer, or a new one. */
  take(): Uint8Array {
    const ab = this.#free.pop() ?? (this.#count++, new ArrayBuffer(SLAB))
    return new Uint8Array(ab)
  }

  /** Gives back a buffer that `take` returned (others are ignored). */
  give(ab: ArrayBufferLike): void {
    if (ab.byteLength !== SLAB || !(ab instanceof ArrayBuffer)) return
    this.#free.push(ab)
    const f = this.#onFree
    this.#onFree = undefined
    f?.()
  }

  /** All buffers are in the socket: resolves when one comes back. */
  get exhausted(): boolean {
    return this.#count - this.#free.length >= MAX_SLABS
  }

  freed(): Promise<void> {
    return new Promise((resolve) => (this.#onFree = resolve))
  }
}

function peerName(s: Conn): string {
  return `${s.remoteAddress ?? '?'}:${s.remotePort ?? '?'}`
}

/** The `--wire gso` handshake: magic, version, three reserved bytes. */
export const WIRE_MAGIC = Buffer.from('TGSO', 'latin1')
export const WIRE_VERSION = 1
const HELLO = Buffer.concat([WIRE_MAGIC, Buffer.from([WIRE_VERSION, 0, 0, 0])])
const HANDSHAKE_TIMEOUT_MS = 5000
/** Connections allowed to sit in the handshake at once (a slowloris flood is cut off beyond). */
const MAX_PENDING_HANDSHAKES = 32

/** Reads exactly `n` bytes (or rejects on close or after `ms`), leaving the rest buffered. */
function readExactly(sock: Conn, n: number, ms: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const done = (err?: Error, buf?: Buffer) => {
      clearTimeout(timer)
      sock.off('readable', tryRead)
      sock.off('close', onClose)
      if (err) reject(err)
      else resolve(buf!)
    }
    const tryRead = () => {
      const b = sock.read(n) as Buffer | null
      if (b) done(undefined, b)
    }
    const onClose = () => done(new Error('connection closed during the handshake'))
    const timer = setTimeout(() => done(new Error(`no handshake within ${ms} ms`)), ms)
    sock.on('readable', tryRead)
    sock.on('close', onClose)
    tryRead()
  })
}

/** Checks the peer's hello; throws a clear message on a mismatch. */
function checkHello(b: Buffer): void {
  if (!b.subarray(0, 4).equals(WIRE_MAGIC)) {
    throw new Error(`peer is not speaking the tunnel-gso gso wire (got ${JSON.stringify(b.subarray(0, 4).toString('latin1'))}); is it --wire raw?`)
  }
  if (b[4] !== WIRE_VERSION) throw new Error(`peer speaks gso wire version ${b[4]}, this side speaks ${WIRE_VERSION}`)
}

/** Runs the handshake on a fresh connection: the client speaks first. */
async function handshake(sock: Conn, role: 'server' | 'client'): Promise<void> {
  if (role === 'client') sock.write(HELLO)
  const hello = await readExactly(sock, HELLO.length, HANDSHAKE_TIMEOUT_MS)
  checkHello(hello)
  if (role === 'server') sock.write(HELLO)
}

/** How one wire moves data: what to read from the device, how to cut the stream, what to write. */
interface Wire {
  /** Batches read from the device, each into a buffer `buffer()` returns. */
  read: (signal: AbortSignal, buffer: () => Uint8Array) => AsyncIterable<Buffer[]>
  cut: (chunk: Buffer) => { items: Buffer[]; error?: Error }
  write: (items: Buffer[]) => Promise<void>
}

function rawWire(tun: Tun): Wire {
  const splitter = new PacketSplitter()
  return {
    read: (signal, buffer) => tun.batches({ signal, buffer }),
    cut: (chunk) => {
      const { packets, error } = splitter.push(chunk)
      return { items: packets, error }
    },
    write: (packets) => tun.writeBatch(packets),
  }
}

/**
 * `--wire gso`: frames of virtio header + super-packet pass whole between the
 * two kernels; nothing is split or merged in between. Each side's device
 * takes what it can whole and splits the rest itself.
 */
function gsoWire(tun: Tun): Wire {
  const splitter = new FrameSplitter()
  return {
    read: (signal, buffer) => tun.frames({ signal, buffer }),
    cut: (chunk) => {
      const { frames, error } = splitter.push(chunk)
      return { items: frames, error }
    },
    write: (frames) => tun.writeFrames(frames),
  }
}

/**
 * Moves data between the device and one connection until either side ends;
 * resolves with the reason. Device -> socket: one socket write per batch (the
 * items of a batch lie end to end in one pooled buffer, which comes back when
 * the socket has taken it), waiting for 'drain' only past SOCKET_BUFFER or
 * when all MAX_SLABS buffers are in the socket. Socket -> device: the async
 * iterator pauses the socket while a write is pending.
 */
async function pump(sock: Conn, wire: Wire, log: (m: string) => void): Promise<string> {
  const ac = new AbortController()
  const who = peerName(sock)
  sock.setNoDelay(true)
  const pool = new SlabPool()
  const closed = once(sock, 'close').catch(() => {})
  const out = (async () => {
    try {
      for await (const batch of wire.read(ac.signal, () => pool.take())) {
        if (sock.destroyed) return 'socket closed'
        const first = batch[0]!
        const last = batch[batch.length - 1]!
        const ab = first.buffer
        if (ab === last.buffer) {
          sock.write(Buffer.from(ab, first.byteOffset, last.byteOffset + last.length - first.byteOffset), () => pool.give(ab))
        } else {
          sock.write(Buffer.concat(batch))
          pool.give(ab)
        }
        if (sock.writableLength > SOCKET_BUFFER) await Promise.race([once(sock, 'drain'), closed])
        if (pool.exhausted) await Promise.race([pool.freed(), closed])
      }
      return 'device closed'
    } catch (e) {
      if ((e as Error).name === 'AbortError') return 'connection ended'
      throw e
    }
  })()
  const inbound = (async () => {
    try {
      for await (const chunk of sock as AsyncIterable<Buffer>) {
        const { items, error } = wire.cut(chunk)
        if (items.length > 0) await wire.write(items)
        if (error) {
          log(`vpn: ${who}: dropping connection: ${error.message}`)
          return `garbage from peer: ${error.message}`
        }
      }
      return 'peer closed the connection'
    } catch (e) {
      const err = e as Error & { code?: string }
      if (err.code === 'ERR_TUN_MALFORMED') log(`vpn: ${who}: dropping connection: malformed frame: ${err.message}`)
      return `connection error: ${err.message}`
    }
  })()
  const reason = await Promise.race([out, inbound])
  ac.abort()
  sock.destroy()
  await Promise.allSettled([out, inbound])
  return reason
}

/** Handshake (gso wire), then pump until the connection ends. */
async function session(tun: Tun, sock: Conn, o: VpnOptions): Promise<string> {
  if (o.wire === 'raw') return pump(sock, rawWire(tun), o.log)
  try {
    await handshake(sock, o.role)
  } catch (e) {
    o.log(`vpn: ${peerName(sock)}: handshake failed: ${(e as Error).message}`)
    sock.destroy()
    return `handshake failed: ${(e as Error).message}`
  }
  return pump(sock, gsoWire(tun), o.log)
}

/** Runs the VPN until `signal` aborts. */
export async function runVpn(o: VpnOptions, signal: AbortSignal): Promise<void> {
  const tun = await Tun.open({ name: o.name, addresses: o.addresses, routes: o.routes, mtu: o.mtu, offload: o.offload })
  o.log(`vpn: ${o.role}: device ${tun.name} up with ${o.addresses.join(', ')}, mtu ${tun.mtu}, offload tcp=${tun.offload.tcp} udp=${tun.offload.udp}, wire ${o.wire}${o.tls ? ', TLS' : ', plaintext'}`)
  const tlsCtx = o.tls && {
    cert: readFileSync(o.tls.cert),
    key: readFileSync(o.tls.key),
    ca: readFileSync(o.tls.ca),
  }
  if (o.user !== undefined) {
    try {
      const { uid, gid } = dropPrivileges(o.user)
      o.log(`vpn: running as uid ${uid} gid ${gid} from now on`)
    } catch (e) {
      await tun.close()
      throw e
    }
  }
  // The histogram records the time between two ticks of a timer of this
  // period, so the delay is what exceeds the period (as fastify's
  // under-pressure computes it).
  const ELD_RESOLUTION_MS = 10
  const eld = monitorEventLoopDelay({ resolution: ELD_RESOLUTION_MS })
  if (o.stats) eld.enable()
  const logStats = () => {
    const p99 = Math.max(0, eld.percentile(99) / 1e6 - ELD_RESOLUTION_MS)
    const extra = { eventLoopP99Ms: Math.round(p99 * 100) / 100, rssMb: Math.round(process.memoryUsage.rss() / 1e5) / 10 }
    eld.reset()
    o.log(`vpn: stats ${JSON.stringify({ ...tun.stats(), ...extra })}`)
  }
  const timer = o.stats ? setInterval(logStats, 1000) : undefined
  try {
    if (o.role === 'server') await serve(tun, o, tlsCtx, signal)
    else await connectLoop(tun, o, tlsCtx, signal)
  } finally {
    clearInterval(timer)
    if (o.stats) logStats()
    eld.disable()
    await tun.close()
  }
}

async function serve(tun: Tun, o: VpnOptions, tlsCtx: tls.SecureContextOptions | undefined, signal: AbortSignal): Promise<void> {
  let active: { sock: Conn; done: Promise<string> } | undefined
  let handshaking = 0
  const onConn = (sock: Conn) => {
    const who = peerName(sock)
    sock.on('error', () => {})
    if (handshaking >= MAX_PENDING_HANDSHAKES) {
      // A flood of connections: each beyond the limit is cut off at once; memory stays bounded.
      o.log(`vpn: ${who}: refused: ${handshaking} handshakes already pending`)
      sock.destroy()
      return
    }
    const start = async () => {
      // A connection takes over the device only once it has proven itself
      // (TLS, then the gso-wire handshake), so junk cannot evict a client.
      if (o.wire === 'gso') {
        handshaking++
        try {
          await handshake(sock, 'server')
        } catch (e) {
          o.log(`vpn: ${who}: handshake failed: ${(e as Error).message}`)
          sock.destroy()
          return
        } finally {
          handshaking--
        }
      }
      if (active) {
        // The newest client wins: a reconnecting client replaces its stale connection.
        o.log(`vpn: ${peerName(active.sock)}: replaced by a new connection from ${who}`)
        active.sock.destroy()
        await active.done.catch(() => {})
      }
      o.log(`vpn: ${who}: connected`)
      const done = pump(sock, o.wire === 'gso' ? gsoWire(tun) : rawWire(tun), o.log)
      const me = { sock, done }
      active = me
      const reason = await done.catch((e: Error) => `error: ${e.message}`)
      o.log(`vpn: ${who}: disconnected (${reason})`)
      if (active === me) active = undefined
    }
    void start()
  }
  const server = tlsCtx
    ? tls.createServer({ ...tlsCtx, requestCert: true, rejectUnauthorized: true }, onConn)
    : net.createServer(onConn)
  if (tlsCtx) {
    server.on('tlsClientError', (err: Error, s: tls.TLSSocket) => {
      o.log(`vpn: ${s.remoteAddress ?? '?'}:${s.remotePort ?? '?'}: TLS handshake refused: ${err.message}`)
    })
  }
  server.listen(o.endpoint.port, o.endpoint.host)
  await once(server, 'listening')
  o.log(`vpn: listening on ${o.endpoint.host}:${o.endpoint.port}`)
  await new Promise<void>((resolve) => {
    if (signal.aborted) resolve()
    signal.addEventListener('abort', () => resolve(), { once: true })
  })
  server.close()
  active?.sock.destroy()
  await active?.done.catch(() => {})
}

async function connectLoop(tun: Tun, o: VpnOptions, tlsCtx: tls.SecureContextOptions | undefined, signal: AbortSignal): Promise<void> {
  let backoff = 250
  while (!signal.aborted) {
    const sock: Conn = tlsCtx
      ? tls.connect({ ...tlsCtx, host: o.endpoint.host, port: o.endpoint.port, checkServerIdentity: () => undefined })
      : net.connect({ host: o.endpoint.host, port: o.endpoint.port })
    let lastError: Error | undefined
    sock.on('error', (e: Error) => (lastError = e))
    const abort = () => sock.destroy()
    signal.addEventListener('abort', abort, { once: true })
    try {
      await Promise.race([
        once(sock, tlsCtx ? 'secureConnect' : 'connect'),
        once(sock, 'close').then(() => {
          throw lastError ?? new Error('connection closed')
        }),
      ])
      o.log(`vpn: connected to ${o.endpoint.host}:${o.endpoint.port}`)
      backoff = 250
      const reason = await session(tun, sock, o)
      o.log(`vpn: disconnected (${reason})`)
    } catch (e) {
      o.log(`vpn: cannot connect to ${o.endpoint.host}:${o.endpoint.port}: ${(e as Error).message}; retrying in ${backoff} ms`)
    } finally {
      signal.removeEventListener('abort', abort)
      sock.destroy()
    }
    if (signal.aborted) break
    await new Promise((r) => setTimeout(r, backoff))
    backoff = Math.min(backoff * 2, 10_000)
  }
}
