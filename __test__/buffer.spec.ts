// The `buffer` read option, for real: UDP from a socket through a tun read into caller memory.
import { rootTest, withNetns } from './helpers/netns.js'

interface Result {
  fixed: { intact: boolean; allInFixed: boolean; batches: number }
  pool: { intact: boolean; allInPool: boolean; batches: number; takes: number }
  small: string
}

rootTest('batches({ buffer }) reads into one reused buffer, or into a buffer taken once per batch; packets intact', async (t) => {
  const r = await withNetns((ns) => ns.runFixture<Result>('readbuffer'))
  t.true(r.fixed.intact, 'one buffer: every datagram arrived intact, in order')
  t.true(r.fixed.allInFixed, 'one buffer: every batch is a view on it')
  t.true(r.pool.intact, 'pool: every datagram arrived intact, in order')
  t.true(r.pool.allInPool, 'pool: every batch is a view on a pool buffer')
  t.is(r.pool.takes, r.pool.batches, 'pool: the function is called once per batch')
  t.is(r.small, 'RangeError:ERR_OUT_OF_RANGE')
})
