// Tun.chunks() and Tun.writeChunks(), for real: runs of packets through a tun, to and from real sockets.
import { rootTest, withNetns } from './helpers/netns.js'

interface Result {
  written: { packets: number; writes: number; intact: boolean }
  bad: { cut: string; junk: string }
  nothingWritten: boolean
  read: { intact: boolean; count: number; chunks: number; held: number }
  framesRead: { frames: { intact: boolean; prefixesRight: boolean }; frameChunks: { intact: boolean; held: number } }
}

rootTest('writeChunks writes runs of packets coalesced, all or nothing; chunks() yields runs that cut into the packets read; frames() and frameChunks() yield the same datagrams as length-prefixed frames', async (t) => {
  const r = await withNetns((ns) => ns.runFixture<Result>('chunks'))
  t.true(r.written.intact, 'all 40 datagrams arrived intact, in order')
  t.is(r.written.packets, 40)
  t.true(r.written.writes < 40, `coalesced across the two runs: ${r.written.writes} writes`)
  t.is(r.bad.cut, 'ERR_TUN_INVALID_PACKET', 'a run that ends inside a packet')
  t.is(r.bad.junk, 'ERR_TUN_INVALID_PACKET', 'bytes that are not IP in a later run')
  t.true(r.nothingWritten, 'a refused call wrote none of its packets')
  t.is(r.read.count, 20)
  t.true(r.read.intact, 'the datagrams read are the ones sent')
  t.is(r.read.held, 0, 'each chunk ends at a packet boundary')
  t.true(r.framesRead.frames.intact, 'frames(): the 10 datagrams, in order, after a 10-byte virtio header')
  t.true(r.framesRead.frames.prefixesRight, "frames(): each frame's length prefix is its length")
  t.true(r.framesRead.frameChunks.intact, 'frameChunks(): cut by FrameSplitter, the 10 datagrams in order')
  t.is(r.framesRead.frameChunks.held, 0, 'each frame chunk ends at a frame boundary')
})
