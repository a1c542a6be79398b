// `tunnel-gso vpn`: a point-to-point VPN over TCP, written on the public API.
import * as net from 'node:net'
import * as tls from 'node:tls'
import { readFileSync } from 'node:fs'
import { once } from 'node:events'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { Tun } from './index.js'
import { FrameSplitter, MAX_FRAME, PacketSplitter } from './streams.js'
import { ipPacketLength } from './validate.js'

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
/**
 * Bytes of one read buffer of the device -> socket direction. Packets per
 * read were the same with 1 MiB buffers (a read takes what the device holds,
 * rarely this much), throughput too, at 4-6 MB more RSS.
 */
const SLAB = 1 << 18
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

  /** All buffers are in the socket. */
  get exhausted(): boolean {
    return this.#count - this.#free.length >= MAX_SLABS
  }

  #stopped = false

  /** Resolves when a buffer comes back, or at once after {@link SlabPool.stop}. */
  freed(): Promise<void> {
    if (this.#stopped) return Promise.resolve()
    return new Promise((resolve) => (this.#onFree = resolve))
  }

  /** The socket is gone: nothing will come back; ends the wait of {@link SlabPool.freed}. */
  stop(): void {
    this.#stopped = true
    const f = this.#onFree
    this.#onFree = undefined
    f?.()
  }
}

/**
 * Resolves at the socket's next 'drain', or when it closes. Both listeners
 * go when either fires (a Promise.race with one long-lived 'close' promise
 * would add a reaction to it at every wait, for as long as the connection lives).
 */
function drained(sock: Conn): Promise<void> {
  if (sock.destroyed) return Promise.resolve()
  return new Promise((resolve) => {
    const done = () => {
      sock.off('drain', done)
      sock.off('close', done)
      resolve()
    }
    sock.on('drain', done)
    sock.on('close', done)
  })
}

function peerName(s: Conn): string {
  return `${s.remoteAddress ?? '?'}:${s.remotePort ?? '?'}`
}

/** The `--wire gso` handshake: magic, version, three reserved bytes. */
export const WIRE_MAGIC = Buffer.from('TGSO', 'latin1')
export const WIRE_VERSION = 1
const HELLO = Buffer.concat([WIRE_MAGIC, Buffer.from([WIRE_VERSION, 0, 0, 0])])
/** How long a new connection has to prove itself (TLS, hello, first packet or frame). */
const HANDSHAKE_TIMEOUT_MS = 5000
/** Connections allowed to be unproven at once (a slowloris flood is cut off beyond). */
const MAX_PENDING_HANDSHAKES = 32

/** The one's complement sum of an IPv4 header: 0xffff when its checksum is right. */
function ipv4HeaderSum(h: Buffer): number {
  let sum = 0
  for (let i = 0; i + 1 < h.length; i += 2) sum += h.readUInt16BE(i)
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16)
  return sum
}

/**
 * What a client sends first, so that the server, which lets a connection take
 * over the device only once its first packet (raw wire) or frame (gso wire)
 * has arrived whole and valid, does not wait for traffic: an IPv4 header
 * without payload from 0.0.0.1 to 0.0.0.0, which the other side's kernel
 * drops on arrival (a martian source), so it reaches nobody.
 */
const PROOF_PACKET = (() => {
  const p = Buffer.alloc(20)
  p[0] = 0x45
  p.writeUInt16BE(20, 2)
  p[8] = 1 // TTL
  p[9] = 253 // protocol: for experiments (RFC 3692)
  p.writeUInt32BE(1, 12) // source 0.0.0.1, destination 0.0.0.0
  p.writeUInt16BE(~ipv4HeaderSum(p) & 0xffff, 10)
  return p
})()
/** The same packet as a gso-wire frame: length, all-zero virtio header, packet. */
const PROOF_FRAME = Buffer.concat([Buffer.from([0, 0, 0, 10 + PROOF_PACKET.length]), Buffer.alloc(10), PROOF_PACKET])

/**
 * Reads exactly `n` bytes, leaving the rest buffered; rejects on close, or
 * with "no WHAT within 5000 ms" at `deadline` (a time from Date.now()).
 */
function readExactly(sock: Conn, n: number, deadline: number, what: string): Promise<Buffer> {
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
      // Fewer than asked: what was left when the peer ended.
      if (b) done(b.length < n ? new Error('connection closed during the handshake') : undefined, b)
    }
    const onClose = () => done(new Error('connection closed during the handshake'))
    const timer = setTimeout(() => done(new Error(`no ${what} within ${HANDSHAKE_TIMEOUT_MS} ms`)), Math.max(0, deadline - Date.now()))
    sock.on('readable', tryRead)
    sock.on('close', onClose)
    if (sock.destroyed) onClose()
    else tryRead()
  })
}

/** Checks the peer's hello; throws a clear message on a mismatch. */
function checkHello(b: Buffer): void {
  if (!b.subarray(0, 4).equals(WIRE_MAGIC)) {
    throw new Error(`peer is not speaking the tunnel-gso gso wire (got ${JSON.stringify(b.subarray(0, 4).toString('latin1'))}); is it --wire raw?`)
  }
  if (b[4] !== WIRE_VERSION) throw new Error(`peer speaks gso wire version ${b[4]}, this side speaks ${WIRE_VERSION}`)
}

/** Runs the gso-wire handshake on a fresh connection: the client speaks first. */
async function handshake(sock: Conn, role: 'server' | 'client', deadline: number): Promise<void> {
  if (role === 'client') sock.write(HELLO)
  const hello = await readExactly(sock, HELLO.length, deadline, 'handshake')
  checkHello(hello)
  if (role === 'server') sock.write(HELLO)
}

/**
 * How many bytes the IP packet at the start of `b` needs in all, as far as
 * `b` tells (b.length or less: it is whole); throws if `b` does not start
 * with an IP packet, or with an IPv4 header whose checksum is wrong.
 */
function packetNeeds(b: Buffer): number {
  const len = ipPacketLength(b)
  if (typeof len === 'string') {
    const more = /needs (\d+) bytes/.exec(len)
    if (more) return Number(more[1])
    throw new Error(`not an IP packet: ${len}`)
  }
  if (b[0]! >> 4 === 4) {
    const ihl = (b[0]! & 0x0f) * 4
    if (b.length < ihl) return ihl
    if (ipv4HeaderSum(b.subarray(0, ihl)) !== 0xffff) throw new Error('not an IP packet: the IPv4 header checksum is wrong')
  }
  return len
}

/** The connection is going on: gives back to the socket what was read to prove it. */
function putBack(sock: Conn, bytes: Buffer): void {
  if (sock.readableEnded) throw new Error('connection closed during the handshake')
  sock.unshift(bytes)
}

/** Raw wire: waits until the first bytes are a whole valid IP packet; leaves them buffered for the pump. */
async function firstPacket(sock: Conn, deadline: number): Promise<void> {
  let held = await readExactly(sock, 20, deadline, 'IP packet')
  try {
    for (let need = packetNeeds(held); held.length < need; need = packetNeeds(held)) {
      held = Buffer.concat([held, await readExactly(sock, need - held.length, deadline, 'IP packet')])
    }
  } catch (e) {
    throw new Error(`the first bytes are ${(e as Error).message}`)
  }
  putBack(sock, held)
}

/** Gso wire, after the hello: waits for the first whole frame with a valid packet; leaves it buffered for the pump. */
async function firstFrame(sock: Conn, deadline: number): Promise<void> {
  const head = await readExactly(sock, 4, deadline, 'frame')
  const len = head.readUInt32BE(0)
  const min = 10 + 20
  if (len < min || len > MAX_FRAME) throw new Error(`first frame: frame length ${len} is outside ${min}..${MAX_FRAME}`)
  const frame = await readExactly(sock, len, deadline, 'frame')
  const packet = frame.subarray(10)
  let need: number
  try {
    need = packetNeeds(packet)
  } catch (e) {
    throw new Error(`first frame: ${(e as Error).message}`)
  }
  if (need !== packet.length) throw new Error(`first frame: its IP header says ${need} bytes, the frame holds ${packet.length}`)
  putBack(sock, Buffer.concat([head, frame]))
}

/** How one wire moves data: what to read from the device, how to cut the stream, what to write. */
interface Wire {
  /** Batches read from the device, each as one piece of wire in a buffer `buffer()` returns. */
  read: (signal: AbortSignal, buffer: () => Uint8Array) => AsyncIterable<Buffer>
  cut: (chunk: Buffer) => { items: Buffer[]; error?: Error }
  write: (items: Buffer[]) => Promise<void>
}

/**
 * `--wire raw`: IP packets back to back. Both ways move runs of packets, not
 * a view per packet: the device's batches as one chunk each, and the
 * socket's chunks cut at packet boundaries, whose packets the device finds
 * (and coalesces) natively.
 */
function rawWire(tun: Tun, reusedChunks: boolean): Wire {
  const splitter = new PacketSplitter({ reusedChunks })
  return {
    read: (signal, buffer) => tun.chunks({ signal, buffer }),
    cut: (chunk) => {
      const { runs, error } = splitter.pushRuns(chunk)
      return { items: runs, error }
    },
    write: (runs) => tun.writeChunks(runs),
  }
}

/**
 * `--wire gso`: frames of virtio header + super-packet pass whole between the
 * two kernels; nothing is split or merged in between. Each side's device
 * takes what it can whole and splits the rest itself.
 */
function gsoWire(tun: Tun, reusedChunks: boolean): Wire {
  const splitter = new FrameSplitter({ reusedChunks })
  return {
    read: (signal, buffer) => tun.frameChunks({ signal, buffer }),
    cut: (chunk) => {
      const { frames, error } = splitter.push(chunk)
      return { items: frames, error }
    },
    write: (frames) => tun.writeFrames(frames),
  }
}

/** The wire `--wire` names, made for a connection read into reused chunks or not. */
function wireOf(tun: Tun, wire: VpnOptions['wire']): (reusedChunks: boolean) => Wire {
  return (reusedChunks) => (wire === 'gso' ? gsoWire(tun, reusedChunks) : rawWire(tun, reusedChunks))
}

/**
 * Bytes of the buffer that a plain TCP connection is read into. Reads this
 * large (up to what the socket holds) mean fewer turns of pause, device
 * write and resume per megabyte. The raw wire's event-loop p99 at full
 * speed, 6-s pairs against 1 MiB: 2.7-3.5 instead of 3.4-4.0 ms on one day,
 * within noise on another; 256 KiB was worse than either (6-7 ms).
 */
const READ_BUFFER = 1 << 22

/** Reads from peer connections in this process (all connections), for `--stats`. */
const socketCounters = { socketReads: 0, socketReadBytes: 0, socketReadMaxBytes: 0 }

function countRead(n: number): void {
  socketCounters.socketReads++
  socketCounters.socketReadBytes += n
  if (n > socketCounters.socketReadMaxBytes) socketCounters.socketReadMaxBytes = n
}

/** What {@link adopt} needs of a socket's native handle (Node's TCPWrap). */
interface StreamHandle {
  reading: boolean
  readStop(): number
  useUserBuffer(buf: Uint8Array): void
}

/**
 * Socket -> device without a fresh Buffer per read: moves a plain TCP
 * connection's handle, once the handshake (read as a stream) is over, to a
 * socket made with Node's `onread`, which reads into one reused buffer of
 * READ_BUFFER bytes: up to 4 MiB per read instead of a new 64 KiB Buffer,
 * and no stream machinery per chunk. Node offers `onread` to sockets it
 * connects, not to those a server accepts, hence the move for both (through
 * `_handle` and the `handle` option, which Node's own server uses). Returns
 * the new socket, paused, and the bytes the old one had buffered; or
 * undefined where the move is not possible (TLS, a connection whose end has
 * arrived, writes still queued, a Node without these internals): then the
 * stream is read as before.
 */
function adopt(old: Conn, onread: (n: number) => boolean): { sock: net.Socket; buf: Buffer; rest: Buffer | null } | undefined {
  if (old instanceof tls.TLSSocket || old.destroyed || old.writableLength > 0) return undefined
  const inner = old as unknown as { _handle?: StreamHandle | null; _readableState?: { ended?: boolean } }
  const handle = inner._handle
  if (!handle || typeof handle.readStop !== 'function' || typeof handle.useUserBuffer !== 'function') return undefined
  // Its end has arrived (read or not): the new socket would never see it.
  if (inner._readableState?.ended !== false) return undefined
  handle.reading = false
  if (handle.readStop() !== 0) return undefined
  // The old socket lets go of the handle: destroying it closes nothing.
  inner._handle = null
  const rest = old.read() as Buffer | null
  const buf = Buffer.allocUnsafeSlow(READ_BUFFER)
  const opts = { handle, allowHalfOpen: false, pauseOnCreate: true, readable: true, writable: true, onread: { buffer: buf, callback: onread } }
  const sock = new net.Socket(opts as net.SocketConstructorOpts)
  return { sock, buf, rest }
}

/**
 * Moves data between the device and one connection until either side ends;
 * resolves with the reason. Device -> socket: one socket write per batch (the
 * items of a batch lie end to end in one pooled buffer, which comes back when
 * the socket has taken it), waiting for 'drain' only past SOCKET_BUFFER or
 * when all MAX_SLABS buffers are in the socket. Socket -> device: a plain
 * connection is read into one reused buffer ({@link adopt}) and paused while
 * the device takes each read; a TLS one is read as a stream, whose async
 * iterator pauses the socket while a write is pending.
 */
async function pump(conn: Conn, makeWire: (reusedChunks: boolean) => Wire, log: (m: string) => void): Promise<string> {
  const ac = new AbortController()
  const who = peerName(conn)
  // Filled in below, once the wire exists; no read is delivered before the socket is resumed.
  let deliver: (n: number) => boolean = () => false
  const adopted = adopt(conn, (n) => deliver(n))
  const sock: Conn = adopted?.sock ?? conn
  const wire = makeWire(adopted !== undefined)
  if (adopted) {
    // Either socket closing closes the other: the caller knows only `conn`.
    // (Errors of `sock` are handled by the inbound side below.)
    conn.once('close', () => sock.destroy())
    sock.once('close', () => conn.destroy())
  }
  sock.setNoDelay(true)
  const pool = new SlabPool()
  sock.once('close', () => pool.stop())
  const out = (async () => {
    try {
      for await (const chunk of wire.read(ac.signal, () => pool.take())) {
        if (sock.destroyed) return 'socket closed'
        const ab = chunk.buffer
        sock.write(chunk, () => pool.give(ab))
        if (sock.writableLength > SOCKET_BUFFER) await drained(sock)
        if (pool.exhausted) await pool.freed()
      }
      return 'device closed'
    } catch (e) {
      if ((e as Error).name === 'AbortError') return 'connection ended'
      throw e
    }
  })()
  const failed = (e: unknown): string => {
    const err = e as Error & { code?: string }
    if (err.code === 'ERR_TUN_MALFORMED') log(`vpn: ${who}: dropping connection: malformed frame: ${err.message}`)
    return `connection error: ${err.message}`
  }
  const garbage = (error: Error): string => {
    log(`vpn: ${who}: dropping connection: ${error.message}`)
    return `garbage from peer: ${error.message}`
  }
  const inbound = adopted
    ? new Promise<string>((resolve) => {
        let ended = false
        const finish = (reason: string) => {
          ended = true
          resolve(reason)
        }
        /** Cuts and writes the bytes at the start of the buffer; false: the socket stays paused until the device has them. */
        const take = (bytes: Buffer): boolean => {
          if (ended) return false
          const { items, error } = wire.cut(bytes)
          if (items.length === 0) {
            if (error) finish(garbage(error))
            return !error
          }
          wire.write(items).then(
            () => {
              if (error) finish(garbage(error))
              else if (!ended) sock.resume()
            },
            (e: unknown) => finish(failed(e)),
          )
          return false
        }
        deliver = (n) => {
          countRead(n)
          return take(adopted.buf.subarray(0, n))
        }
        sock.on('end', () => finish('peer closed the connection'))
        sock.on('error', (e: Error) => finish(`connection error: ${e.message}`))
        sock.once('close', () => finish('connection closed'))
        if (adopted.rest === null || take(adopted.rest)) sock.resume()
      })
    : (async () => {
        try {
          for await (const chunk of sock as AsyncIterable<Buffer>) {
            countRead(chunk.length)
            const { items, error } = wire.cut(chunk)
            if (items.length > 0) await wire.write(items)
            if (error) return garbage(error)
          }
          return 'peer closed the connection'
        } catch (e) {
          return failed(e)
        }
      })()
  const reason = await Promise.race([out, inbound])
  ac.abort()
  sock.destroy()
  conn.destroy()
  await Promise.allSettled([out, inbound])
  return reason
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
  // A second monitor, never reset: the p99 of the whole run.
  const run = monitorEventLoopDelay({ resolution: ELD_RESOLUTION_MS })
  if (o.stats) run.enable()
  const delayMs = (h: { percentile(p: number): number }) => Math.round(Math.max(0, h.percentile(99) / 1e6 - ELD_RESOLUTION_MS) * 100) / 100
  const logStats = () => {
    const mb = (n: number) => Math.round(n / 1e5) / 10
    const mem = process.memoryUsage()
    const extra = { eventLoopP99Ms: delayMs(eld), eventLoopP99RunMs: delayMs(run), rssMb: mb(mem.rss), heapUsedMb: mb(mem.heapUsed), heapTotalMb: mb(mem.heapTotal), arrayBuffersMb: mb(mem.arrayBuffers) }
    eld.reset()
    o.log(`vpn: stats ${JSON.stringify({ ...tun.stats(), ...socketCounters, ...extra })}`)
  }
  const timer = o.stats ? setInterval(logStats, 1000) : undefined
  try {
    if (o.role === 'server') await serve(tun, o, tlsCtx, signal)
    else await connectLoop(tun, o, tlsCtx, signal)
  } finally {
    clearInterval(timer)
    if (o.stats) logStats()
    eld.disable()
    run.disable()
    await tun.close()
  }
}

async function serve(tun: Tun, o: VpnOptions, tlsCtx: tls.SecureContextOptions | undefined, signal: AbortSignal): Promise<void> {
  // Connections that have not proven themselves yet, by peer: in the TLS
  // handshake, in the gso-wire hello, or waiting for their first packet or
  // frame. At most MAX_PENDING_HANDSHAKES; cut off at shutdown.
  const pending = new Map<string, Conn>()
  const hold = (who: string, sock: Conn) => {
    pending.set(who, sock)
    sock.once('close', () => {
      if (pending.get(who) === sock) pending.delete(who)
    })
  }
  /** Counts a new TCP connection against the limit; beyond it, cuts it off at once. */
  const admit = (sock: Conn): boolean => {
    const who = peerName(sock)
    sock.on('error', () => {})
    if (pending.size >= MAX_PENDING_HANDSHAKES || signal.aborted) {
      // A flood of connections: each beyond the limit is cut off at once; memory stays bounded.
      o.log(`vpn: ${who}: refused: ${pending.size} handshakes already pending`)
      sock.destroy()
      return false
    }
    hold(who, sock)
    return true
  }

  let active: { sock: Conn; who: string; done: Promise<string> } | undefined
  // Takeovers run one after another, each waiting for the pump it replaces to
  // end before it starts its own: exactly one pump runs on the device.
  let takeovers = Promise.resolve()
  const takeOver = (sock: Conn, who: string) => {
    takeovers = takeovers.then(async () => {
      // Shut down, or gone while it waited for its turn: it replaces nobody.
      if (signal.aborted || sock.destroyed) {
        sock.destroy()
        return
      }
      if (active) {
        // The newest client wins: a reconnecting client replaces its stale connection.
        o.log(`vpn: ${active.who}: replaced by a new connection from ${who}`)
        active.sock.destroy()
        await active.done
      }
      if (signal.aborted) {
        sock.destroy()
        return
      }
      o.log(`vpn: ${who}: connected`)
      const done = pump(sock, wireOf(tun, o.wire), o.log).catch((e: Error) => `error: ${e.message}`)
      const me = { sock, who, done }
      active = me
      void done.then((reason) => {
        o.log(`vpn: ${who}: disconnected (${reason})`)
        if (active === me) active = undefined
      })
    })
  }

  // A connection takes over the device only once it has proven itself (TLS,
  // then the gso-wire hello and a whole valid first frame, or on the raw
  // wire, where a client is connected, a whole valid first IP packet), so
  // junk costs only itself.
  const onConn = async (sock: Conn) => {
    const who = peerName(sock)
    if (tlsCtx) {
      // Counted since its TCP connection came (see 'connection' below).
      sock.on('error', () => {})
      hold(who, sock)
    } else if (!admit(sock)) return
    try {
      const deadline = Date.now() + HANDSHAKE_TIMEOUT_MS
      if (o.wire === 'gso') {
        await handshake(sock, 'server', deadline)
        await firstFrame(sock, deadline)
      } else if (active) {
        // Only a connection that would replace a live client proves itself
        // first: with nobody connected there is nobody to protect, and a raw
        // peer that has nothing to send yet (the Go example's client, say)
        // is let in at once.
        await firstPacket(sock, deadline)
      }
    } catch (e) {
      o.log(`vpn: ${who}: ${signal.aborted ? 'closed: shutting down' : `handshake failed: ${(e as Error).message}`}`)
      sock.destroy()
      return
    } finally {
      if (pending.get(who) === sock) pending.delete(who)
    }
    takeOver(sock, who)
  }
  const server = tlsCtx
    ? tls.createServer({ ...tlsCtx, requestCert: true, rejectUnauthorized: true, handshakeTimeout: HANDSHAKE_TIMEOUT_MS }, (s) => void onConn(s))
    : net.createServer((s) => void onConn(s))
  if (tlsCtx) {
    // TCP connections still in the TLS handshake count against the limit too.
    server.on('connection', (s: net.Socket) => {
      const who = peerName(s)
      s.once('close', () => {
        // Closed in the TLS handshake, and not for a reason logged below: the
        // peer hung up (as a client does that refuses our certificate).
        if (pending.get(who) === s && !signal.aborted) o.log(`vpn: ${who}: TLS handshake failed: closed by the peer`)
      })
      admit(s)
    })
    server.on('tlsClientError', (err: Error & { reason?: string }, s: tls.TLSSocket) => {
      // A socket that no longer knows its peer has closed already (see above).
      if (s.remoteAddress !== undefined && !signal.aborted) {
        const who = peerName(s)
        o.log(`vpn: ${who}: TLS handshake failed: ${err.reason ?? err.message}`)
        pending.delete(who)
      }
      s.destroy()
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
  // No handshake in progress may start a pump now: cut them all off.
  for (const s of pending.values()) s.destroy()
  await takeovers
  active?.sock.destroy()
  await active?.done
}

/** The client's side of one connection: the gso-wire hello, the proof, then the pump. */
async function clientSession(tun: Tun, sock: Conn, o: VpnOptions): Promise<{ reason: string; established: boolean }> {
  if (o.wire === 'gso') {
    try {
      await handshake(sock, 'client', Date.now() + HANDSHAKE_TIMEOUT_MS)
    } catch (e) {
      o.log(`vpn: ${peerName(sock)}: handshake failed: ${(e as Error).message}`)
      return { reason: `handshake failed: ${(e as Error).message}`, established: false }
    }
  }
  sock.write(o.wire === 'gso' ? PROOF_FRAME : PROOF_PACKET)
  const reason = await pump(sock, wireOf(tun, o.wire), o.log)
  return { reason, established: true }
}

async function connectLoop(tun: Tun, o: VpnOptions, tlsCtx: tls.SecureContextOptions | undefined, signal: AbortSignal): Promise<void> {
  const where = `${o.endpoint.host}:${o.endpoint.port}`
  let backoff = 250
  while (!signal.aborted) {
    const sock: Conn = tlsCtx
      ? tls.connect({ ...tlsCtx, host: o.endpoint.host, port: o.endpoint.port, checkServerIdentity: () => undefined })
      : net.connect({ host: o.endpoint.host, port: o.endpoint.port })
    let lastError: Error | undefined
    sock.on('error', (e: Error) => (lastError = e))
    const abort = () => sock.destroy()
    signal.addEventListener('abort', abort, { once: true })
    let outcome: string
    try {
      await Promise.race([
        once(sock, tlsCtx ? 'secureConnect' : 'connect'),
        once(sock, 'close').then(() => {
          throw lastError ?? new Error('connection closed')
        }),
      ])
      o.log(`vpn: connected to ${where}`)
      const started = Date.now()
      const { reason, established } = await clientSession(tun, sock, o)
      // Back off from the start again only after a session that worked for a
      // while; one that fails at once (a refused handshake) backs off further.
      if (established && Date.now() - started >= 1000) backoff = 250
      outcome = `disconnected (${reason})`
    } catch (e) {
      outcome = `cannot connect to ${where}: ${(e as Error).message}`
    } finally {
      signal.removeEventListener('abort', abort)
      sock.destroy()
    }
    if (signal.aborted) {
      o.log(`vpn: ${outcome}`)
      break
    }
    o.log(`vpn: ${outcome}; retrying in ${backoff} ms`)
    // SIGINT/SIGTERM end the wait at once.
    await sleep(backoff, undefined, { signal }).catch(() => {})
    backoff = Math.min(backoff * 2, 10_000)
  }
}
