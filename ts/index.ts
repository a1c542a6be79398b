/**
 * tunnel-gso: Linux TUN devices for Node.js that move packets in batches.
 *
 * ```ts
 * import { Tun } from 'tunnel-gso'
 * await using tun = await Tun.open({ addresses: ['198.18.5.1/24'] })
 * for await (const packet of tun) console.log(packet.length)
 * ```
 */
import './platform.js'
import * as binding from '../native/index.js'
import type { NativeTun } from '../native/index.js'
import { TunError, closedError, fromNative, native, nativeAsync } from './errors.js'
import { createReadStream, createWriteStream } from './streams.js'
import type { Readable, Writable } from 'node:stream'
import { performance } from 'node:perf_hooks'
import {
  checkBool,
  checkBoolean,
  checkBytes,
  checkBytesArray,
  checkCidrs,
  checkFd,
  checkId,
  checkMtu,
  checkName,
  checkOptions,
  checkSignal,
  checkBufferSource,
  checkReadBuffer,
  ipPacketLength,
  type BufferSource,
  MIN_MTU_IPV6,
  parseCidr,
  rangeError,
  received,
  typeError,
} from './validate.js'

export { TunError } from './errors.js'
export { FrameSplitter, PacketSplitter } from './streams.js'

/** Options of {@link Tun.open}. Every option is checked before anything is created. */
export interface TunOptions {
  /** Exact name (`vpn0`) or pattern (`vpn%d`), at most 15 bytes. Default: the kernel's `tun%d`. */
  name?: string
  /** MTU, 68 to 65535 (at least 1280 with IPv6 addresses). Default: the kernel's, 1500. */
  mtu?: number
  /** Addresses in CIDR notation, IPv4 and IPv6, set with rtnetlink. */
  addresses?: string[]
  /** Destinations in CIDR notation routed through this device. */
  routes?: string[]
  /** Bring the link up. Default `true`. */
  up?: boolean
  /**
   * Use the virtio-net header and segmentation offload: one read brings a
   * super-packet of up to 64 KiB (split into packets for you), and
   * `writeBatch` coalesces packets of a flow into one write. TCP needs TSO
   * (any kernel), UDP needs USO (Linux 6.2 and later). `false` moves one packet
   * per system call and sets the device's offload mask to 0. Default `true`.
   */
  offload?: boolean
  /**
   * Which protocols `writeBatch` and the write stream coalesce, for kernels
   * with known bugs. Default: both, where offload allows. The environment
   * variables `TUNNEL_GSO_NO_TCP_COALESCE=1` and `TUNNEL_GSO_NO_UDP_COALESCE=1`
   * switch them off too.
   */
  coalesce?: { tcp?: boolean; udp?: boolean }
  /** Open with `IFF_MULTI_QUEUE`, so that {@link Tun.openQueue} can add queues. Default `false`. */
  multiQueue?: boolean
  /**
   * Make the device persistent: it outlives this process. `false` (the default)
   * leaves an existing device's persist flag alone; it never clears it.
   */
  persist?: boolean
  /** uid allowed to open the (persistent) device without `CAP_NET_ADMIN`. */
  owner?: number
  /** gid allowed to open the (persistent) device without `CAP_NET_ADMIN`. */
  group?: number
}

/** Options of {@link Tun.packets}, {@link Tun.batches} and {@link Tun.frames}. */
export interface ReadOptions {
  /** Aborting rejects the pending read with the signal's reason; the device stays open. */
  signal?: AbortSignal
  /**
   * Memory to read into, for callers that recycle it (relays that hand each
   * batch to a socket and get the memory back once the socket took it).
   * Default: fresh memory that is never reused, so keeping a packet is safe.
   *
   * - a `Uint8Array`: every batch is read into it, from its start: the
   *   packets of a batch are valid only until the next batch is read.
   * - a function: called once per batch for the buffer to read into (a pool's
   *   `take`); the packets of a batch are views on what it returned.
   *
   * A buffer must hold at least 65,805 bytes (one largest frame), else
   * `RangeError`. A super-packet whose split does not fit is read into fresh
   * memory of its own instead, so check `batch[0].buffer` before recycling.
   */
  buffer?: Uint8Array | (() => Uint8Array)
}

/** Counters of one queue. Reads and writes count system calls. */
export interface TunStats {
  /** Packets delivered to JavaScript. */
  rxPackets: number
  /** Bytes delivered to JavaScript. */
  rxBytes: number
  /** `read()` system calls that returned data. */
  rxReads: number
  /** Frames from the kernel that were malformed or unsupported, and dropped. */
  rxDropped: number
  /** Packets handed to the kernel. */
  txPackets: number
  /** Bytes handed to the kernel. */
  txBytes: number
  /** `write()` system calls. */
  txWrites: number
  /** Coalesced writes the kernel refused (`EINVAL`), written again one packet at a time. */
  txFallbacks: number
}

/** What the kernel accepted for segmentation offload. */
export interface TunOffload {
  /** TSO4/TSO6. */
  tcp: boolean
  /** USO4/USO6 (Linux 6.2 and later). */
  udp: boolean
}

/** The result of {@link Tun.probe}. */
export interface TunProbe {
  /** `/dev/net/tun` could be opened. */
  tun: boolean
  /** Why it could not, when it could not. */
  tunError?: string
  /** The driver supports the virtio-net header. */
  vnetHdr: boolean
  /** TCP segmentation offload is accepted (needs `CAP_NET_ADMIN` to find out). */
  tcpOffload: boolean
  /** UDP segmentation offload is accepted (Linux 6.2 and later). */
  udpOffload: boolean
  /** This process may create devices (`CAP_NET_ADMIN`). */
  canCreate: boolean
  /** The kernel release, as `uname -r` prints it. */
  kernel: string
}

/** Bytes of one read slab; a new one is allocated when less than {@link MIN_ROOM} is left. */
const SLAB_SIZE = 1 << 20
/** The largest packet one read can return. */
const MIN_ROOM = 65535
/** The largest wire frame: length prefix, virtio header, 64 KiB packet and slack. */
const MIN_FRAME_ROOM = 4 + 10 + 65535 + 256
/** The most packets one native call returns. */
const MAX_BATCH = 1024
/**
 * How long reads that find data every time may go on without letting the
 * event loop turn. Each batch is only a microtask away from the last, so a
 * `for await` over a device that is never empty would otherwise keep
 * timers, I/O and other callbacks waiting for as long as traffic lasts.
 */
const YIELD_AFTER_MS = 1

// Readiness bits of epoll(7), as the native waker reports them.
const EV_IN = 0x1
const EV_OUT = 0x4
const EV_ERR = 0x8
const EV_HUP = 0x10

/**
 * Devices with a read or write waiting for readiness, each in a slot of its
 * own (taken at its first wait, given back at close). Holding them here keeps
 * a device whose only reference is its own waiting iterator alive; the shared
 * timer keeps the event loop alive while any waits (the native waker is weak).
 *
 * Slots, not a Set: a device starts and stops waiting thousands of times a
 * second, and every add and delete on a long-lived Set (or Map) makes V8
 * rebuild its table now and then, in the old generation. That garbage made
 * the heap of a busy VPN grow by 0.3 MB/s between full collections.
 */
const WAITING: Array<object | undefined> = []
const FREE_SLOTS: number[] = []
let waitingCount = 0
let keepAlive: ReturnType<typeof setInterval> | undefined

/**
 * A device's slot in {@link WAITING}: taken at its first wait, given back at
 * close. A device collected without close() (it is never collected while it
 * waits) leaves its empty slot behind: one array element.
 */
class WaitSlot {
  #index = -1

  constructor(readonly device: object) {}

  /** Holds the device (and the event loop) while `waiting`, lets go otherwise. */
  set(waiting: boolean): void {
    if (waiting && this.#index < 0) this.#index = FREE_SLOTS.pop() ?? WAITING.push(undefined) - 1
    if (this.#index < 0) return
    if (waiting && WAITING[this.#index] === undefined) {
      WAITING[this.#index] = this.device
      if (++waitingCount === 1) {
        keepAlive ??= setInterval(() => {}, 2 ** 30)
        keepAlive.ref()
      }
    } else if (!waiting && WAITING[this.#index] !== undefined) {
      WAITING[this.#index] = undefined
      if (--waitingCount === 0) keepAlive?.unref()
    }
  }

  /** At close: not waiting, and the slot goes back for another device. */
  release(): void {
    this.set(false)
    if (this.#index < 0) return
    FREE_SLOTS.push(this.#index)
    this.#index = -1
  }
}

/**
 * The abort listener of one reader (an iterator of {@link Tun.batches} and
 * the like): added once for the reader's life and pointed at its current
 * wait, instead of added and removed at every wait, which grows and shrinks
 * the signal's listener map each time (old-generation garbage once the
 * signal is long-lived, as with {@link WAITING}).
 */
class AbortWatch {
  /** What an abort does now: reject the current wait; undefined between waits. */
  onAbort: (() => void) | undefined
  readonly #fire = (): void => {
    const f = this.onAbort
    this.onAbort = undefined
    f?.()
  }

  constructor(readonly signal: AbortSignal) {
    signal.addEventListener('abort', this.#fire, { once: true })
  }

  dispose(): void {
    this.signal.removeEventListener('abort', this.#fire)
  }
}

/** Throws `ERR_TUN_INVALID_PACKET` unless `p` is exactly one whole IPv4 or IPv6 packet. */
function checkPacket(p: Uint8Array, what: string): void {
  const len = ipPacketLength(p)
  if (typeof len === 'string') throw new TunError(`${what}: ${len}`, 'ERR_TUN_INVALID_PACKET')
  if (len !== p.length) throw new TunError(`${what}: the IP header says ${len} bytes, the buffer has ${p.length}`, 'ERR_TUN_INVALID_PACKET')
}

/** The `coalesce` option with the environment switches applied (`TUNNEL_GSO_NO_TCP_COALESCE=1`, `TUNNEL_GSO_NO_UDP_COALESCE=1`). */
function coalesceOptions(coalesce: TunOptions['coalesce']): { coalesceTcp: boolean; coalesceUdp: boolean } {
  if (coalesce !== undefined && (coalesce === null || typeof coalesce !== 'object')) {
    throw typeError(`coalesce must be an object like { tcp: true, udp: false }, got ${received(coalesce)}`)
  }
  return {
    coalesceTcp: (checkBool(coalesce?.tcp, 'coalesce.tcp') ?? true) && process.env.TUNNEL_GSO_NO_TCP_COALESCE !== '1',
    coalesceUdp: (checkBool(coalesce?.udp, 'coalesce.udp') ?? true) && process.env.TUNNEL_GSO_NO_UDP_COALESCE !== '1',
  }
}

function abortReason(signal: AbortSignal): unknown {
  return signal.reason ?? Object.assign(new Error('The operation was aborted'), { name: 'AbortError', code: 'ABORT_ERR' })
}

/**
 * One queue of a Linux TUN device.
 *
 * Iterate it with `for await` to receive IP packets, write packets with
 * {@link Tun.write} and {@link Tun.writeBatch}, and close it with
 * {@link Tun.close} or `await using`. Leaving a `for await` loop early ends
 * that loop only: the device stays open until `close()`.
 */
export class Tun implements AsyncIterable<Buffer>, AsyncDisposable {
  readonly #native: NativeTun
  readonly #name: string
  readonly #index: number
  #mtu: number
  #closed = false
  #closing: Promise<void> | undefined
  /** Waits for readiness not yet settled; close() resolves when none is left (a count: see {@link WAITING} on Sets). */
  #waits = 0
  #waitsSettled: (() => void) | undefined
  readonly #waitSlot = new WaitSlot(this)
  #slab: Buffer = Buffer.alloc(0)
  #slabPos = 0
  readonly #lensBuf = Buffer.from(new ArrayBuffer(MAX_BATCH * 4))
  readonly #lens = new Uint32Array(this.#lensBuf.buffer, 0, MAX_BATCH)
  #readLock: Promise<void> = Promise.resolve()
  /** When a read last went through the event loop (a wait, or a yield). */
  #turnAt = performance.now()
  #writeLock: Promise<void> = Promise.resolve()
  /** Resolvers of reads and writes waiting for readiness. */
  #readWaiters: Array<(ready: boolean) => void> = []
  #writeWaiters: Array<(ready: boolean) => void> = []

  private constructor(nativeTun: NativeTun, mtu: number) {
    this.#native = nativeTun
    this.#name = nativeTun.name
    this.#index = nativeTun.index
    this.#mtu = mtu
    const waker = Tun.#waker(new WeakRef(this))
    native(() => nativeTun.setWaker(waker))
  }

  /**
   * The function the native poller calls. It holds the device only weakly
   * (and nothing else: a closure made in the constructor would hold the
   * native object too), so an unreachable device is still collected and its
   * finalizer closes the fd.
   */
  static #waker(ref: WeakRef<Tun>): (events: number) => void {
    return (events) => {
      const tun = ref.deref()
      if (tun) tun.#onReady(events)
    }
  }

  /** The poller reported `events`: wake the waiters they concern, re-arm for the rest. */
  #onReady(events: number): void {
    if (this.#closed) return
    const wakeRead = (events & (EV_IN | EV_ERR | EV_HUP)) !== 0 && this.#readWaiters.length > 0
    const wakeWrite = (events & (EV_OUT | EV_ERR | EV_HUP)) !== 0 && this.#writeWaiters.length > 0
    const r = wakeRead ? this.#readWaiters.splice(0) : []
    const w = wakeWrite ? this.#writeWaiters.splice(0) : []
    try {
      this.#arm()
    } catch {
      // The device is failing: wake everyone; their read or write reports why.
      r.push(...this.#readWaiters.splice(0))
      w.push(...this.#writeWaiters.splice(0))
      this.#waitSlot.set(false)
    }
    for (const f of r) f(true)
    for (const f of w) f(true)
  }

  /** Asks the poller for what the current waiters need (one epoll_ctl). */
  #arm(): void {
    const want = (this.#readWaiters.length > 0 ? EV_IN : 0) | (this.#writeWaiters.length > 0 ? EV_OUT : 0)
    this.#waitSlot.set(want !== 0)
    if (want !== 0) this.#native.arm(want)
  }

  /**
   * A promise of readiness (`true`), or `false` when the device is closed,
   * and its waiter (to abandon the wait with {@link Tun.#unwait}).
   */
  #ready(write: boolean): { promise: Promise<boolean>; waiter?: (ready: boolean) => void } {
    if (this.#closed) return { promise: Promise.resolve(false) }
    let waiter: ((ready: boolean) => void) | undefined
    const promise = new Promise<boolean>((resolve, reject) => {
      const list = write ? this.#writeWaiters : this.#readWaiters
      list.push(resolve)
      try {
        this.#arm()
        waiter = resolve
      } catch (e) {
        list.splice(list.indexOf(resolve), 1)
        try {
          this.#arm()
        } catch {
          // Reported by the rejection below.
        }
        reject(e)
      }
    })
    return { promise, waiter }
  }

  /** Takes a waiter out (its wait was abandoned), and re-arms for the rest. */
  #unwait(resolve: (ready: boolean) => void): void {
    for (const list of [this.#readWaiters, this.#writeWaiters]) {
      const i = list.indexOf(resolve)
      if (i >= 0) list.splice(i, 1)
    }
    if (!this.#closed) {
      try {
        this.#arm()
      } catch {
        // The device is failing; the next read or write reports it.
      }
    }
  }

  /**
   * Opens (creating if needed) a TUN device and configures it: MTU,
   * addresses, up, routes, in that order. If any step fails, what was done is
   * undone, the device is closed and the promise rejects with a {@link TunError}.
   *
   * @throws TypeError / RangeError for bad options, before anything is created.
   */
  static async open(options: TunOptions = {}): Promise<Tun> {
    options = checkOptions<TunOptions>(options)
    const name = options.name === undefined ? undefined : checkName(options.name)
    const mtu = options.mtu === undefined ? undefined : checkMtu(options.mtu)
    const addresses = checkCidrs(options.addresses, 'addresses')
    const routes = checkCidrs(options.routes, 'routes')
    const up = checkBool(options.up, 'up') ?? true
    const offload = checkBool(options.offload, 'offload') ?? true
    const { coalesceTcp, coalesceUdp } = coalesceOptions(options.coalesce)
    const multiQueue = checkBool(options.multiQueue, 'multiQueue') ?? false
    const persist = checkBool(options.persist, 'persist') ?? false
    const owner = options.owner === undefined ? undefined : checkId(options.owner, 'owner')
    const group = options.group === undefined ? undefined : checkId(options.group, 'group')
    if (mtu !== undefined && mtu < MIN_MTU_IPV6 && addresses.some((a) => a.family === 6)) {
      throw rangeError(`mtu ${mtu} is below ${MIN_MTU_IPV6}, the minimum for IPv6 addresses`)
    }
    const nt = native(() => binding.NativeTun.open({ name, multiQueue, persist, owner, group, offload, coalesceTcp, coalesceUdp }))
    const undo: Array<() => Promise<void>> = []
    try {
      const index = nt.index
      if (mtu !== undefined) await nativeAsync(() => binding.linkSetMtu(index, mtu))
      for (const a of addresses) {
        const cidr = `${a.address}/${a.prefix}`
        await nativeAsync(() => binding.linkAddAddress(index, cidr))
        undo.push(() => binding.linkRemoveAddress(index, cidr))
      }
      if (up) await nativeAsync(() => binding.linkSetUp(index, true))
      for (const r of routes) {
        const cidr = `${r.address}/${r.prefix}`
        await nativeAsync(() => binding.linkAddRoute(index, cidr))
        undo.push(() => binding.linkRemoveRoute(index, cidr))
      }
      const actualMtu = mtu ?? (await nativeAsync(() => binding.linkGetMtu(index)))
      return new Tun(nt, actualMtu)
    } catch (e) {
      // Nothing half-done: a device we created disappears with its last fd;
      // on a device that existed, what we added is removed again.
      for (const f of undo.reverse()) await f().catch(() => {})
      if (persist && nt.created) {
        try {
          nt.setPersist(false)
        } catch {
          // The device is gone already.
        }
      }
      nt.close()
      throw e
    }
  }

  /**
   * Adopts a tun file descriptor opened by someone else, typically a
   * privileged helper that created the device and passed the descriptor to
   * this unprivileged process (inherited, or over a Unix socket). The
   * descriptor must be attached to a tun device opened with `IFF_NO_PI`; it is
   * owned by the returned `Tun` from now on and closed by {@link Tun.close}.
   * `offload` (default `true`) turns segmentation offload on where the
   * descriptor was opened with a virtio header (`IFF_VNET_HDR`), and off
   * (mask 0) otherwise; the header itself is handled either way. `coalesce`
   * and the environment switches work as for {@link Tun.open}.
   *
   * @throws TypeError `ERR_INVALID_ARG_TYPE` when `fd` is not a number,
   *   RangeError `ERR_OUT_OF_RANGE` when it is not an integer from 0 to 2^31 - 1,
   *   TypeError `ERR_INVALID_ARG_VALUE` when it is not an attached tun descriptor.
   */
  static fromFd(fd: number, options?: Pick<TunOptions, 'offload' | 'coalesce'>): Tun {
    checkFd(fd)
    const o = checkOptions<Pick<TunOptions, 'offload' | 'coalesce'>>(options)
    const offload = checkBool(o.offload, 'offload') ?? true
    const { coalesceTcp, coalesceUdp } = coalesceOptions(o.coalesce)
    const nt = native(() => binding.NativeTun.fromFd(fd, offload, coalesceTcp, coalesceUdp))
    let mtu = 0
    try {
      mtu = native(() => binding.linkGetMtuSync(nt.index))
    } catch {
      // Not visible from this namespace: the MTU stays unknown (0).
    }
    return new Tun(nt, mtu)
  }

  /**
   * What this kernel supports, found by trying (creating a short-lived probe
   * device needs `CAP_NET_ADMIN`; without it the offload fields are `false`).
   */
  static probe(): TunProbe {
    const p = binding.probe()
    const out: TunProbe = {
      tun: p.tun,
      vnetHdr: p.vnetHdr,
      tcpOffload: p.tcpOffload,
      udpOffload: p.udpOffload,
      canCreate: p.canCreate,
      kernel: p.kernel,
    }
    if (p.tunError != null) out.tunError = p.tunError
    return out
  }

  /** The interface name the kernel gave the device. */
  get name(): string {
    return this.#name
  }

  /** The interface index. */
  get index(): number {
    return this.#index
  }

  /** The MTU, as last set or read. */
  get mtu(): number {
    return this.#mtu
  }

  /** What the kernel accepted for segmentation offload. */
  get offload(): TunOffload {
    const o = this.#native.offload
    return { tcp: o.tcp, udp: o.udp }
  }

  /** True once {@link Tun.close} was called. */
  get closed(): boolean {
    return this.#closed
  }

  /** The same as {@link Tun.packets} without a signal. */
  [Symbol.asyncIterator](): AsyncIterator<Buffer> {
    return this.packets()
  }

  /**
   * Yields one complete IP packet per item. Ends when the device is closed.
   * Each packet is a view on a batch buffer that is never reused: keeping it is safe.
   */
  async *packets(options?: ReadOptions): AsyncGenerator<Buffer, void, undefined> {
    for await (const batch of this.batches(options)) yield* batch
  }

  /** Checks the options of a read (argument errors first, then a closed device). */
  #readOptions(options: unknown): { watch: AbortWatch | undefined; source: BufferSource | undefined } {
    const o = checkOptions<ReadOptions>(options)
    const signal = checkSignal(o.signal)
    const source = checkBufferSource(o.buffer)
    this.#assertOpen()
    return { watch: signal && new AbortWatch(signal), source }
  }

  /**
   * Yields arrays of packets: everything that was ready, up to 1024 packets,
   * from one native call. Ends when the device is closed.
   */
  batches(options?: ReadOptions): AsyncGenerator<Buffer[], void, undefined> {
    return this.#batchesOf(options, false)
  }

  /**
   * Yields one Buffer per batch: its packets end to end, as a raw byte
   * stream of IP packets carries them (the same batches as
   * {@link Tun.batches}, without a view per packet). Ends when the device is
   * closed.
   */
  chunks(options?: ReadOptions): AsyncGenerator<Buffer, void, undefined> {
    return this.#packedBatches(options, false)
  }

  /**
   * For relays that carry super-packets whole (the CLI's `--wire gso`):
   * yields arrays of frames as read from the kernel, not split. Each frame is
   * `[u32 big-endian length][10-byte virtio header, little-endian fields][packet]`,
   * and the frames of one array lie end to end in memory, so the array is one
   * contiguous piece of wire. A device opened with `offload: false` yields
   * frames with an all-zero header (one packet each).
   */
  frames(options?: ReadOptions): AsyncGenerator<Buffer[], void, undefined> {
    return this.#batchesOf(options, true)
  }

  /**
   * The batches of {@link Tun.batches} (packets) or {@link Tun.frames}
   * (frames), an array each. Those two return this generator itself, so its
   * options are checked at the first `next()`, as in a generator method.
   */
  async *#batchesOf(options: ReadOptions | undefined, frames: boolean): AsyncGenerator<Buffer[], void, undefined> {
    const { watch, source } = this.#readOptions(options)
    try {
      for (;;) {
        const batch = await this.#readBatch(watch, frames, source)
        if (batch === null) return
        yield batch
      }
    } finally {
      watch?.dispose()
    }
  }

  /**
   * Yields one Buffer per batch: the frames of {@link Tun.frames} end to
   * end, length prefixes included, which is the `--wire gso` byte stream
   * as a relay writes it to its socket (no view per frame). Ends when the
   * device is closed.
   */
  frameChunks(options?: ReadOptions): AsyncGenerator<Buffer, void, undefined> {
    return this.#packedBatches(options, true)
  }

  /**
   * The batches of {@link Tun.chunks} (packets) or {@link Tun.frameChunks}
   * (frames), one Buffer each; returned by those two as {@link Tun.#batchesOf}
   * is by theirs.
   */
  async *#packedBatches(options: ReadOptions | undefined, frames: boolean): AsyncGenerator<Buffer, void, undefined> {
    const { watch, source } = this.#readOptions(options)
    try {
      for (;;) {
        const batch = await this.#readBatch(watch, frames, source, true)
        if (batch === null) return
        yield batch[0]!
      }
    } finally {
      watch?.dispose()
    }
  }

  /**
   * Writes frames as {@link Tun.frames} yields them, without the 4-byte
   * length prefix (virtio header + packet). All are checked before any is
   * written (`ERR_TUN_MALFORMED` otherwise); a frame this device cannot take
   * whole (no offload, or no USO for UDP) is split and written packet by packet.
   */
  async writeFrames(frames: readonly Uint8Array[]): Promise<void> {
    const checked = checkBytesArray(frames, 'frames')
    this.#assertOpen()
    if (checked.length === 0) return
    await this.#sendLocked(() => this.#native.sendFrames(checked))
  }

  /** One batch: views per packet, or (`packed`) one view of them all. */
  async #readBatch(watch: AbortWatch | undefined, frames: boolean, source: BufferSource | undefined, packed = false): Promise<Buffer[] | null> {
    // One reader at a time: the slab position and the lengths array are shared.
    const prev = this.#readLock
    let release!: () => void
    this.#readLock = new Promise<void>((r) => (release = r))
    try {
      await prev
      if (performance.now() - this.#turnAt > YIELD_AFTER_MS) {
        await new Promise<void>((resolve) => setImmediate(resolve))
        this.#turnAt = performance.now()
      }
      // The caller's buffer for this batch, taken once (a pool's take is not
      // called again while the read waits).
      let given: Buffer | undefined
      for (;;) {
        if (this.#closed) return null
        watch?.signal.throwIfAborted()
        let room: Buffer
        if (source !== undefined) {
          given ??= checkReadBuffer(typeof source === 'function' ? source() : source, 'the buffer of this batch')
          room = given
        } else {
          if (this.#slab.length - this.#slabPos < (frames ? MIN_FRAME_ROOM : MIN_ROOM)) {
            this.#slab = Buffer.allocUnsafeSlow(SLAB_SIZE)
            this.#slabPos = 0
          }
          room = this.#slab.subarray(this.#slabPos)
        }
        const n = frames
          ? native(() => this.#native.recvFrames(room, this.#lensBuf))
          : native(() => this.#native.recv(room, this.#lensBuf))
        if (n < 0) {
          // The next super-packet needs more room than is left: fresh memory of its own.
          this.#slab = Buffer.allocUnsafeSlow(Math.max(SLAB_SIZE, -n))
          this.#slabPos = 0
          if (source === undefined) continue
          const k = native(() => this.#native.recv(this.#slab, this.#lensBuf))
          // Not shared with later slab reads: the caller may keep it.
          this.#slabPos = this.#slab.length
          if (k > 0) return this.#cut(this.#slab, k, packed)
          continue
        }
        if (n > 0) {
          const out = this.#cut(room, n, packed)
          if (source === undefined) this.#slabPos += this.#cutEnd
          return out
        }
        const ready = await this.#wait(false, watch)
        this.#turnAt = performance.now()
        if (!ready) return null
      }
    } finally {
      release()
    }
  }

  /** Where the last {@link Tun.#cut} ended. */
  #cutEnd = 0

  /**
   * The first `n` packets of `buf`, as views, by the lengths the native call
   * wrote; `packed`: one view of all of them.
   */
  #cut(buf: Buffer, n: number, packed: boolean): Buffer[] {
    let pos = 0
    if (packed) {
      for (let i = 0; i < n; i++) pos += this.#lens[i]!
      this.#cutEnd = pos
      return [buf.subarray(0, pos)]
    }
    const out = new Array<Buffer>(n)
    for (let i = 0; i < n; i++) {
      const len = this.#lens[i]!
      out[i] = buf.subarray(pos, pos + len)
      pos += len
    }
    this.#cutEnd = pos
    return out
  }

  /** Waits for readiness, counted so that close() can wait for it; an abort of `watch`'s signal abandons the wait. */
  #wait(write: boolean, watch: AbortWatch | undefined): Promise<boolean> {
    const p = new Promise<boolean>((resolve, reject) => {
      const signal = watch?.signal
      if (signal?.aborted) return reject(abortReason(signal))
      const { promise, waiter } = this.#ready(write)
      if (watch) {
        watch.onAbort = () => {
          if (waiter) this.#unwait(waiter)
          reject(abortReason(signal!))
        }
      }
      promise.then(
        (v) => {
          if (watch) watch.onAbort = undefined
          resolve(v)
        },
        (e: unknown) => {
          if (watch) watch.onAbort = undefined
          reject(fromNative(e))
        },
      )
    })
    this.#waits++
    const done = () => {
      if (--this.#waits > 0 || this.#waitsSettled === undefined) return
      const settled = this.#waitsSettled
      this.#waitsSettled = undefined
      settled()
    }
    p.then(done, done)
    return p
  }

  /**
   * Writes one complete IPv4 or IPv6 packet.
   * @throws TunError `ERR_TUN_INVALID_PACKET` if `packet` is not one whole IP packet,
   *   `ERR_TUN_CLOSED` after close, or the kernel's error (`EIO` when the link is down, ...).
   */
  async write(packet: Uint8Array): Promise<void> {
    checkPacket(checkBytes(packet, 'packet'), 'packet')
    this.#assertOpen()
    await this.#sendLocked(() => this.#native.send([packet]))
  }

  /**
   * Writes packets in order. All are checked first: if one is not a complete
   * IP packet, none is written.
   */
  async writeBatch(packets: readonly Uint8Array[]): Promise<void> {
    const checked = checkBytesArray(packets, 'packets')
    for (let i = 0; i < checked.length; i++) checkPacket(checked[i]!, `packets[${i}]`)
    this.#assertOpen()
    if (checked.length === 0) return
    await this.#sendLocked(() => this.#native.send(checked))
  }

  /**
   * Writes IP packets that lie end to end in each chunk, as a raw byte
   * stream carries them (each chunk must hold whole packets only; cut a
   * stream with {@link PacketSplitter.pushRuns}). Coalesced by flow across
   * all chunks, like {@link Tun.writeBatch}, but the packets are found in
   * native code: no per-packet work in JavaScript. All chunks are checked
   * first: if one is not whole IPv4/IPv6 packets end to end, none is written
   * (`ERR_TUN_INVALID_PACKET`).
   */
  async writeChunks(chunks: readonly Uint8Array[]): Promise<void> {
    const checked = checkBytesArray(chunks, 'chunks')
    this.#assertOpen()
    if (checked.length === 0) return
    await this.#sendLocked(() => this.#native.sendPacked(checked))
  }

  /** One writer at a time; what would have blocked waits natively, in order, until the device takes it. */
  async #sendLocked(send: () => number): Promise<void> {
    const prev = this.#writeLock
    let release!: () => void
    this.#writeLock = new Promise<void>((r) => (release = r))
    try {
      await prev
      if (this.#closed) throw closedError()
      native(send)
      while (this.#native.backlog > 0) {
        if (!(await this.#wait(true, undefined))) throw closedError()
        native(() => this.#native.flush())
      }
    } finally {
      release()
    }
  }

  /**
   * A Readable of concatenated IP packets (one chunk per batch, no copy).
   * Destroying the stream stops reading; the device stays open.
   */
  createReadStream(): Readable {
    this.#assertOpen()
    return createReadStream(this)
  }

  /**
   * A Writable that takes concatenated IP packets in any chunking (a packet
   * may span chunks). Bytes that are not an IP packet fail the stream with
   * `ERR_TUN_INVALID_PACKET`; no part of a packet is ever written.
   */
  createWriteStream(): Writable {
    this.#assertOpen()
    return createWriteStream(this)
  }

  /** Sets the MTU (68 to 65535). */
  async setMtu(mtu: number): Promise<void> {
    checkMtu(mtu)
    this.#assertOpen()
    await nativeAsync(() => binding.linkSetMtu(this.#index, mtu))
    this.#mtu = mtu
  }

  /** Adds an address in CIDR notation. */
  async addAddress(cidr: string): Promise<void> {
    const c = parseCidr(cidr)
    this.#assertOpen()
    await nativeAsync(() => binding.linkAddAddress(this.#index, `${c.address}/${c.prefix}`))
  }

  /** Removes an address in CIDR notation. */
  async removeAddress(cidr: string): Promise<void> {
    const c = parseCidr(cidr)
    this.#assertOpen()
    await nativeAsync(() => binding.linkRemoveAddress(this.#index, `${c.address}/${c.prefix}`))
  }

  /** Routes a destination (CIDR) through this device. */
  async addRoute(cidr: string): Promise<void> {
    const c = parseCidr(cidr, 'route')
    this.#assertOpen()
    await nativeAsync(() => binding.linkAddRoute(this.#index, `${c.address}/${c.prefix}`))
  }

  /** Removes a route through this device. */
  async removeRoute(cidr: string): Promise<void> {
    const c = parseCidr(cidr, 'route')
    this.#assertOpen()
    await nativeAsync(() => binding.linkRemoveRoute(this.#index, `${c.address}/${c.prefix}`))
  }

  /** Sets the link up or down. */
  async setUp(up: boolean): Promise<void> {
    checkBoolean(up, 'up')
    this.#assertOpen()
    await nativeAsync(() => binding.linkSetUp(this.#index, up))
  }

  /** Makes the device persistent, or not (a non-persistent device disappears with its last queue). */
  async setPersist(persist: boolean): Promise<void> {
    checkBoolean(persist, 'persist')
    this.#assertOpen()
    native(() => this.#native.setPersist(persist))
  }

  /** Opens another queue of a `multiQueue` device; each queue is a `Tun` of its own. */
  async openQueue(): Promise<Tun> {
    this.#assertOpen()
    const q = native(() => this.#native.openQueue())
    return new Tun(q, this.#mtu)
  }

  /** Counters of this queue. */
  stats(): TunStats {
    const s = this.#native.stats()
    return {
      rxPackets: s.rxPackets,
      rxBytes: s.rxBytes,
      rxReads: s.rxReads,
      rxDropped: s.rxDropped,
      txPackets: s.txPackets,
      txBytes: s.txBytes,
      txWrites: s.txWrites,
      txFallbacks: s.txFallbacks,
    }
  }

  /**
   * Closes this queue. Pending reads end at once (iterators complete), pending
   * writes reject with `ERR_TUN_CLOSED`, and the file descriptor is closed
   * before the promise resolves. Idempotent.
   */
  close(): Promise<void> {
    if (this.#closing) return this.#closing
    this.#closed = true
    this.#native.close()
    this.#waitSlot.release()
    this.#closing = this.#waits === 0 ? Promise.resolve() : new Promise<void>((resolve) => (this.#waitsSettled = resolve))
    for (const f of this.#readWaiters.splice(0)) f(false)
    for (const f of this.#writeWaiters.splice(0)) f(false)
    return this.#closing
  }

  /** `await using tun = await Tun.open()` closes it at the end of the scope. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close()
  }

  #assertOpen(): void {
    if (this.#closed) throw closedError()
  }
}
