import { Readable, Writable } from 'node:stream'
import { TunError } from './errors.js'
import { ipPacketLength, ipPacketLengthAt } from './validate.js'

/** The largest IP packet (IPv4 total length and IPv6 payload length are 16-bit; jumbograms are not carried). */
const MAX_IP_PACKET = 65535 + 40

/**
 * Cuts a byte stream of concatenated IP packets, in any chunking, into whole
 * packets. A packet that spans chunks is held until it is complete. Packets
 * that lie inside one chunk are returned as views on it (no copy).
 */
export class PacketSplitter {
  /** The start of a packet that is not complete yet, and its length so far (with `reusedChunks`, those bytes are at the front of `#carry` and `#held` stays empty). */
  #held: Buffer[] = []
  #heldBytes = 0
  readonly #reused: boolean
  /**
   * With `reusedChunks`: two buffers of MAX_IP_PACKET bytes, made once. The
   * held bytes live at the front of `#carry`; a packet completed from them is
   * finished in place (and returned as a view of it), and what the chunk
   * leaves over goes to the other buffer, which then becomes `#carry`.
   */
  #carry: Buffer | undefined
  #spare: Buffer | undefined

  /**
   * `reusedChunks`: the caller reads every chunk into the same memory (a
   * socket's `onread` buffer) and uses what one push returns before the
   * next: held bytes and a packet completed from them then live in two
   * buffers made once, instead of copies made per chunk.
   */
  constructor(options?: { reusedChunks?: boolean }) {
    this.#reused = options?.reusedChunks === true
  }

  /** Bytes held back: the start of a packet that is not complete yet. */
  get pending(): number {
    return this.#heldBytes
  }

  /**
   * Adds a chunk; returns the packets completed by it, in order. When the
   * stream holds bytes that are not an IP packet, `error` says why and
   * `packets` holds the whole packets that came before them. Only a packet
   * that spans chunks is copied (once, when it completes); the others are
   * views on `chunk`.
   */
  push(chunk: Uint8Array): { packets: Buffer[]; error?: TunError } {
    return this.#split(chunk, false)
  }

  /**
   * Like {@link PacketSplitter.push}, for writers that find the packets in a
   * run themselves ({@link Tun.writeChunks}): returns runs of whole packets
   * end to end instead of a view per packet: the packet completed from held
   * bytes (a copy), then one view of all the whole packets that follow it in
   * this chunk. No per-packet object is made.
   */
  pushRuns(chunk: Uint8Array): { runs: Buffer[]; error?: TunError } {
    const { packets, error } = this.#split(chunk, true)
    return error ? { runs: packets, error } : { runs: packets }
  }

  /** The packets (or with `runs`, the runs of packets) that `chunk` completes. */
  #split(chunk: Uint8Array, runs: boolean): { packets: Buffer[]; error?: TunError } {
    const buf = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength)
    const packets: Buffer[] = []
    let pos = 0
    if (this.#heldBytes > 0) {
      // Complete the held packet with as few bytes of this chunk as it needs.
      const len = ipPacketLength(this.#head(buf))
      if (typeof len === 'string') {
        if (/needs \d+ bytes/.test(len)) return this.#hold(buf, 0, packets)
        return { packets, error: new TunError(`the stream is not an IP packet: ${len}`, 'ERR_TUN_INVALID_PACKET') }
      }
      if (len > MAX_IP_PACKET) return { packets, error: new TunError(`packet length ${len} is too large`, 'ERR_TUN_INVALID_PACKET') }
      const need = len - this.#heldBytes
      if (buf.length < need) return this.#hold(buf, 0, packets)
      if (this.#reused) {
        // The held bytes are at the front of the carry: finish the packet there.
        const carry = this.#carry!
        buf.copy(carry, this.#heldBytes, 0, need)
        packets.push(carry.subarray(0, len))
        this.#carry = this.#spare
        this.#spare = carry
      } else {
        packets.push(Buffer.concat([...this.#held, buf.subarray(0, need)], len))
      }
      if (this.#held.length > 0) this.#held = []
      this.#heldBytes = 0
      pos = need
    }
    const start = pos
    let error: TunError | undefined
    while (pos < buf.length) {
      const len = ipPacketLengthAt(buf, pos)
      if (typeof len === 'string') {
        // Too short to tell yet, or not an IP packet at all.
        if (/needs \d+ bytes/.test(len)) break
        error = new TunError(`byte ${pos} of the stream is not an IP packet: ${len}`, 'ERR_TUN_INVALID_PACKET')
        break
      }
      if (len > MAX_IP_PACKET) {
        error = new TunError(`packet length ${len} at byte ${pos} is too large`, 'ERR_TUN_INVALID_PACKET')
        break
      }
      if (buf.length - pos < len) break
      if (!runs) packets.push(buf.subarray(pos, pos + len))
      pos += len
    }
    if (runs && pos > start) packets.push(buf.subarray(start, pos))
    if (error) return { packets, error }
    return this.#hold(buf, pos, packets)
  }

  /** The held bytes, followed by up to 40 bytes of `buf` where they are fewer (an IP header's worth, to read the length). */
  #head(buf: Buffer): Buffer {
    if (this.#reused) {
      // Copied behind the held bytes in the carry, where the packet is completed anyway.
      const more = Math.max(0, Math.min(40 - this.#heldBytes, buf.length))
      buf.copy(this.#carry!, this.#heldBytes, 0, more)
      return this.#carry!.subarray(0, this.#heldBytes + more)
    }
    return this.#held.length === 1 && this.#heldBytes >= 40 ? this.#held[0]! : Buffer.concat([...this.#held, buf.subarray(0, 40)])
  }

  /**
   * Keeps a copy of `buf` from `pos` (the caller may reuse its chunk). What
   * is held is the start of one packet no longer than MAX_IP_PACKET (longer
   * lengths are refused before), so it fits the carry.
   */
  #hold(buf: Buffer, pos: number, packets: Buffer[]): { packets: Buffer[] } {
    if (pos >= buf.length) return { packets }
    if (this.#reused) {
      this.#carry ??= Buffer.allocUnsafeSlow(MAX_IP_PACKET)
      this.#spare ??= Buffer.allocUnsafeSlow(MAX_IP_PACKET)
      // The held bytes are known by their count alone: nothing is made per chunk.
      this.#heldBytes += buf.copy(this.#carry, this.#heldBytes, pos)
      return { packets }
    }
    const tail = Buffer.from(buf.subarray(pos))
    this.#held.push(tail)
    this.#heldBytes += tail.length
    return { packets }
  }
}

/** What the streams need of a device. */
export interface PacketDevice {
  batches(options?: { signal?: AbortSignal }): AsyncGenerator<Buffer[], void, undefined>
  writeChunks(chunks: readonly Uint8Array[]): Promise<void>
}

/**
 * A Readable of concatenated IP packets: each chunk is one batch, a single
 * view on the memory the packets were read into (no copy).
 */
export function createReadStream(dev: PacketDevice): Readable {
  const ac = new AbortController()
  let it: AsyncGenerator<Buffer[], void, undefined> | undefined
  return new Readable({
    highWaterMark: 4 << 20,
    async read() {
      try {
        it ??= dev.batches({ signal: ac.signal })
        const r = await it.next()
        if (r.done) {
          this.push(null)
          return
        }
        const batch = r.value
        const first = batch[0]!
        const last = batch[batch.length - 1]!
        // Packets of one batch lie end to end in one buffer.
        const contiguous = first.buffer === last.buffer && batch.every((p, i) => i === 0 || p.byteOffset === batch[i - 1]!.byteOffset + batch[i - 1]!.length)
        this.push(contiguous ? Buffer.from(first.buffer, first.byteOffset, last.byteOffset + last.length - first.byteOffset) : Buffer.concat(batch))
      } catch (e) {
        if ((e as Error).name === 'AbortError') this.push(null)
        else this.destroy(e as Error)
      }
    },
    destroy(err, cb) {
      ac.abort()
      cb(err)
    },
  })
}

/**
 * A Writable that takes concatenated IP packets in any chunking. Whole packets
 * are written with `writeChunks` (coalesced where the device can); a packet
 * split across chunks waits for its end. Bytes that are not an IP packet fail
 * the stream with `ERR_TUN_INVALID_PACKET`; the packets before them are
 * written, no part of a packet ever is. Ending the stream in the middle of a
 * packet fails it the same way.
 */
export function createWriteStream(dev: PacketDevice): Writable {
  const splitter = new PacketSplitter()
  const writeChunks = async (chunks: Uint8Array[]): Promise<void> => {
    const all: Buffer[] = []
    for (const c of chunks) {
      const { runs, error } = splitter.pushRuns(c)
      all.push(...runs)
      if (error) {
        if (all.length > 0) await dev.writeChunks(all)
        throw error
      }
    }
    if (all.length > 0) await dev.writeChunks(all)
  }
  return new Writable({
    highWaterMark: 1 << 20,
    write(chunk: Buffer, _enc, cb) {
      writeChunks([chunk]).then(() => cb(), cb)
    },
    writev(chunks, cb) {
      writeChunks(chunks.map((c) => c.chunk as Buffer)).then(() => cb(), cb)
    },
    final(cb) {
      if (splitter.pending > 0) {
        cb(new TunError(`the stream ended inside a packet (${splitter.pending} bytes held)`, 'ERR_TUN_INVALID_PACKET'))
      } else cb()
    },
  })
}

/** The largest frame body `--wire gso` carries: virtio header, 64 KiB packet, slack. */
export const MAX_FRAME = 10 + 65535 + 256

/**
 * Cuts a `--wire gso` byte stream (`[u32 big-endian length][frame]`...) into
 * frames (virtio header + packet, without the prefix). A length outside
 * 10..MAX_FRAME is an error (`ERR_TUN_INVALID_FRAME`): nothing is buffered
 * for it, so a 4 GB length costs nothing.
 */
export class FrameSplitter {
  /**
   * Chunks not consumed yet (views, no copies), and their total length; the
   * first begins at `#off` (an offset, so that cutting a frame makes one view).
   */
  #chunks: Buffer[] = []
  #off = 0
  #bytes = 0
  readonly #reused: boolean

  /**
   * `reusedChunks`: the caller reads every chunk into the same memory (a
   * socket's `onread` buffer), so the bytes of an incomplete frame are
   * copied before push() returns instead of kept as views.
   */
  constructor(options?: { reusedChunks?: boolean }) {
    this.#reused = options?.reusedChunks === true
  }

  /** Bytes held back: an incomplete frame. */
  get pending(): number {
    return this.#bytes
  }

  /**
   * Assembles the frame that spans chunks; reused by every push(). At most
   * one frame per push() spans chunks (the one that began before the chunk).
   */
  #scratch: Buffer | undefined

  /** Holds the incomplete frame of a `reusedChunks` push(); allocated once. */
  #carry: Buffer | undefined

  /**
   * Adds a chunk (which the caller must not reuse unless it said so with
   * `reusedChunks`). Frames inside one chunk are views on it; a frame that spans
   * chunks is copied once, when it completes, into a buffer that the next
   * push() overwrites: use (write) the frames of one push() before the next.
   */
  push(chunk: Uint8Array): { frames: Buffer[]; error?: TunError } {
    if (chunk.byteLength > 0) {
      this.#chunks.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength))
      this.#bytes += chunk.byteLength
    }
    const frames: Buffer[] = []
    while (this.#bytes >= 4) {
      const len = this.#peekLength()
      if (len < 10 || len > MAX_FRAME) {
        const at = this.#consumed
        this.#chunks = []
        this.#off = 0
        this.#bytes = 0
        return { frames, error: new TunError(`frame length ${len} at byte ${at} is outside 10..${MAX_FRAME}`, 'ERR_TUN_INVALID_FRAME') }
      }
      if (this.#bytes < 4 + len) break
      this.#skip(4)
      frames.push(this.#take(len))
    }
    if (this.#reused && this.#bytes > 0) this.#keep()
    return { frames }
  }

  #consumed = 0

  #peekLength(): number {
    const first = this.#chunks[0]!
    if (first.length - this.#off >= 4) return first.readUInt32BE(this.#off)
    let len = 0
    let got = 0
    let off = this.#off
    for (const c of this.#chunks) {
      for (let i = off; i < c.length && got < 4; i++, got++) len = len * 256 + c[i]!
      off = 0
      if (got === 4) break
    }
    return len
  }

  /** Drops the first chunk once it is used up. */
  #advance(first: Buffer): void {
    if (this.#off === first.length) {
      this.#chunks.shift()
      this.#off = 0
    }
  }

  /** Removes `n` bytes from the front, making no view of them. */
  #skip(n: number): void {
    this.#bytes -= n
    this.#consumed += n
    while (n > 0) {
      const first = this.#chunks[0]!
      const k = Math.min(n, first.length - this.#off)
      this.#off += k
      n -= k
      this.#advance(first)
    }
  }

  /** Removes `n` bytes from the front: a view when they lie in one chunk, else one copy. */
  #take(n: number): Buffer {
    this.#bytes -= n
    this.#consumed += n
    const first = this.#chunks[0]!
    if (first.length - this.#off >= n) {
      const out = first.subarray(this.#off, this.#off + n)
      this.#off += n
      this.#advance(first)
      return out
    }
    this.#scratch ??= Buffer.allocUnsafeSlow(4 + MAX_FRAME)
    const out = this.#scratch.subarray(0, n)
    let got = 0
    while (got < n) {
      const c = this.#chunks[0]!
      const k = Math.min(n - got, c.length - this.#off)
      c.copy(out, got, this.#off, this.#off + k)
      got += k
      this.#off += k
      this.#advance(c)
    }
    return out
  }

  /**
   * Copies what is left (at most one incomplete frame: fewer than
   * 4 + MAX_FRAME bytes) to the front of the carry buffer, so that no read
   * allocates. Only the first chunk can be a view of the carry itself, at or
   * after its front: the copy moves it down (copy handles the overlap).
   */
  #keep(): void {
    this.#carry ??= Buffer.allocUnsafeSlow(4 + MAX_FRAME)
    const carry = this.#carry
    let at = 0
    for (const c of this.#chunks) {
      at += c.copy(carry, at, this.#off)
      this.#off = 0
    }
    this.#chunks = [carry.subarray(0, at)]
  }
}
