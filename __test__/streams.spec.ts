// The stream splitter: pure code, no root.
import test from 'ava'
import { FrameSplitter, MAX_FRAME, PacketSplitter } from '../ts/streams.js'
import { udp4, udp6 } from './helpers/packets.js'

function packets(): Buffer[] {
  const out: Buffer[] = []
  for (let i = 0; i < 12; i++) {
    const payload = Buffer.alloc((i * 97) % 1400, i)
    out.push(i % 3 === 2 ? udp6('2001:db8::1', '2001:db8::2', 1000 + i, 53, payload) : udp4('198.18.0.1', '198.18.0.2', 1000 + i, 53, payload))
  }
  return out
}

/** `stream` cut by the sizes of `plan` (repeated), each chunk a fresh copy, as a socket gives. */
function* chunked(stream: Buffer, plan: number[]): Generator<Buffer> {
  for (let k = 0, pos = 0; pos < stream.length; k++) {
    const n = plan[k % plan.length]!
    yield Buffer.from(stream.subarray(pos, pos + n))
    pos += n
  }
}

test('any chunking of concatenated packets gives back the same packets', (t) => {
  const pkts = packets()
  const stream = Buffer.concat(pkts)
  // Chunk sizes 1, 2, 3, 7, 19, 20, 39, 40, 41, 1000, whole, and a pseudo-random mix.
  const plans: number[][] = [1, 2, 3, 7, 19, 20, 39, 40, 41, 1000, stream.length].map((n) => [n])
  let seed = 7
  plans.push(Array.from({ length: 200 }, () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) % 300) + 1))
  for (const plan of plans) {
    const s = new PacketSplitter()
    const got: Buffer[] = []
    for (const chunk of chunked(stream, plan)) {
      const r = s.push(chunk)
      t.is(r.error, undefined)
      got.push(...r.packets.map((p) => Buffer.from(p)))
    }
    t.is(s.pending, 0, `plan ${plan.slice(0, 3)}`)
    t.deepEqual(got, pkts, `plan ${plan.slice(0, 3)}`)
  }
})

test('pushRuns: any chunking gives runs of whole packets that concatenate to the stream; at most one copy (a spanning packet) per chunk', (t) => {
  const pkts = packets()
  const stream = Buffer.concat(pkts)
  let seed = 11
  const plans: number[][] = [[1], [39], [40], [1000], [stream.length], Array.from({ length: 200 }, () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) % 3000) + 1)]
  for (const plan of plans) {
    const s = new PacketSplitter()
    const got: Buffer[] = []
    for (const chunk of chunked(stream, plan)) {
      const r = s.pushRuns(chunk)
      t.is(r.error, undefined)
      t.true(r.runs.length <= 2, 'the completed spanning packet, then one run')
      // After a completed spanning packet (a copy), the run is a view on the chunk.
      if (r.runs.length === 2) t.is(r.runs[1]!.buffer, chunk.buffer)
      got.push(...r.runs.map((p) => Buffer.from(p)))
    }
    t.is(s.pending, 0)
    t.true(Buffer.concat(got).equals(stream), `plan ${plan.slice(0, 3)}`)
    // Each run is whole packets: cutting it with push gives packets of the original list.
    const again = new PacketSplitter()
    const cut = got.flatMap((run) => again.push(run).packets.map((p) => Buffer.from(p)))
    t.deepEqual(cut, pkts)
  }
})

test('pushRuns: bytes that are not an IP packet are an error with a code; the run before them is kept', (t) => {
  const pkts = packets().slice(0, 3)
  const s = new PacketSplitter()
  const r = s.pushRuns(Buffer.concat([...pkts, Buffer.from([0x00, 1, 2, 3, 4, 5, 6, 7])]))
  t.is(r.runs.length, 1)
  t.true(r.runs[0]!.equals(Buffer.concat(pkts)))
  t.is(r.error?.code, 'ERR_TUN_INVALID_PACKET')
  t.regex(r.error!.message, /byte \d+ of the stream is not an IP packet/)
})

test('bytes that are not an IP packet are an error with a code; the whole packets before them are kept', (t) => {
  const pkts = packets().slice(0, 2)
  const s = new PacketSplitter()
  const r = s.push(Buffer.concat([...pkts, Buffer.from([0x00, 1, 2, 3, 4, 5, 6, 7])]))
  t.deepEqual(r.packets, pkts)
  t.is(r.error?.code, 'ERR_TUN_INVALID_PACKET')
  t.regex(r.error!.message, /not an IP packet/)
})

test('an IPv4 header with a bad length is an error, not a hang', (t) => {
  const bad = Buffer.from(packets()[0]!)
  bad[0] = 0x44 // IHL 16 bytes
  t.is(new PacketSplitter().push(bad).error?.code, 'ERR_TUN_INVALID_PACKET')
  const short = Buffer.from(packets()[0]!)
  short.writeUInt16BE(10, 2) // total length below the header
  t.is(new PacketSplitter().push(short).error?.code, 'ERR_TUN_INVALID_PACKET')
})

test('a partial packet is held, not returned', (t) => {
  const p = packets()[1]!
  const s = new PacketSplitter()
  t.deepEqual(s.push(p.subarray(0, 30)).packets, [])
  t.is(s.pending, 30)
  t.deepEqual(s.push(p.subarray(30)).packets, [p])
  t.is(s.pending, 0)
})

test('FrameSplitter: any chunking of length-prefixed frames gives back the same frames', (t) => {
  const frames = [10, 11, 1500, 65535 + 10, 64].map((n, i) => Buffer.alloc(n, i + 1))
  const wire = Buffer.concat(frames.flatMap((f) => [Buffer.from([f.length >>> 24, (f.length >>> 16) & 255, (f.length >>> 8) & 255, f.length & 255]), f]))
  for (const size of [1, 3, 4, 5, 13, 1000, 70000, wire.length]) {
    const s = new FrameSplitter()
    const got: Buffer[] = []
    for (let pos = 0; pos < wire.length; pos += size) {
      const r = s.push(Buffer.from(wire.subarray(pos, pos + size)))
      t.is(r.error, undefined)
      got.push(...r.frames.map((f) => Buffer.from(f)))
    }
    t.deepEqual(got, frames, `chunk size ${size}`)
    t.is(s.pending, 0)
  }
})

test('FrameSplitter reusedChunks: every chunk read into the same memory (a socket onread buffer) still gives back the same frames', (t) => {
  const frames = [10, 11, 1500, 65535 + 10, 64, 3000].map((n, i) => Buffer.alloc(n, i + 1))
  const wire = Buffer.concat(frames.flatMap((f) => [Buffer.from([f.length >>> 24, (f.length >>> 16) & 255, (f.length >>> 8) & 255, f.length & 255]), f]))
  const run = (reusedChunks: boolean, size: number): { got: Buffer[]; error?: Error; pending: number } => {
    const s = new FrameSplitter({ reusedChunks })
    const mem = Buffer.alloc(size)
    const got: Buffer[] = []
    for (let pos = 0; pos < wire.length; pos += size) {
      const n = wire.copy(mem, 0, pos, pos + size)
      const r = s.push(mem.subarray(0, n))
      // Frames are used before the next read, as the VPN writes them.
      got.push(...r.frames.map((f) => Buffer.from(f)))
      if (r.error) return { got, error: r.error, pending: s.pending }
      // The next read overwrites the memory; so does this, with junk.
      mem.fill(0xee)
    }
    return { got, pending: s.pending }
  }
  for (const size of [1, 3, 5, 13, 1000, 70000, wire.length]) t.deepEqual(run(true, size), { got: frames, pending: 0 }, `chunk size ${size}`)
  // The same without the option keeps views on memory that was overwritten.
  t.notDeepEqual(run(false, 1000), { got: frames, pending: 0 })
})

test('PacketSplitter reusedChunks: every chunk read into the same memory (a socket onread buffer) still gives back the same packets and runs', (t) => {
  // Small and large packets (a 60000-byte one spans many chunks), IPv4 and IPv6.
  const pkts = [...packets(), udp4('198.18.0.1', '198.18.0.2', 7, 9, Buffer.alloc(60000, 0x5a)), ...packets().slice(0, 3)]
  const stream = Buffer.concat(pkts)
  const run = (reusedChunks: boolean, size: number, runs: boolean): { got: Buffer; pending: number } => {
    const s = new PacketSplitter({ reusedChunks })
    const mem = Buffer.alloc(size)
    const got: Buffer[] = []
    for (let pos = 0; pos < stream.length; pos += size) {
      const n = stream.copy(mem, 0, pos, pos + size)
      const r = runs ? s.pushRuns(mem.subarray(0, n)) : s.push(mem.subarray(0, n))
      t.is(r.error, undefined)
      // Used before the next read, as the VPN writes them; then the memory is overwritten.
      got.push(...('runs' in r ? r.runs : r.packets).map((p) => Buffer.from(p)))
      mem.fill(0xee)
    }
    return { got: Buffer.concat(got), pending: s.pending }
  }
  for (const size of [1, 2, 3, 19, 39, 40, 41, 1000, 1500, 70000, stream.length]) {
    for (const runs of [false, true]) t.deepEqual(run(true, size, runs), { got: stream, pending: 0 }, `chunk size ${size}, ${runs ? 'pushRuns' : 'push'}`)
  }
  // Without the option the splitter copies what it holds: the same result.
  t.deepEqual(run(false, 1000, true), { got: stream, pending: 0 })
})

test('FrameSplitter: a 4 GB or too-short length is an error at once, nothing buffered', (t) => {
  for (const len of [0xffffffff, MAX_FRAME + 1, 9, 0]) {
    const s = new FrameSplitter()
    const b = Buffer.alloc(8)
    b.writeUInt32BE(len, 0)
    const r = s.push(b)
    t.is(r.error?.code, 'ERR_TUN_INVALID_FRAME', `length ${len}`)
    t.is(s.pending, 0)
  }
})
