// Faults from the kernel side, for real, inside a namespace.
import { rootTest, withNetns } from './helpers/netns.js'

interface Faults {
  linkDown: { writeDown: string; idleCpuMsWhileDown: number; readerEnd: string; deliveredAfterUp: boolean }
  deleted: { readerEnd: string; cpuMs: number; writeAfter: string }
  namespace: { readerEnd: string }
  queueGone: { receivedOnOtherQueue: number; readerEnd: string }
}

rootTest('link down under load, device deleted while reading, namespace destroyed, a queue gone: clear errors, no hang, no busy loop', async (t) => {
  const r = await withNetns((ns) => ns.runFixture<Faults>('faults'))
  // Link down: the kernel says EIO to writes; reads wait quietly; up again, traffic flows.
  t.is(r.linkDown.writeDown, 'EIO:write')
  t.true(r.linkDown.idleCpuMsWhileDown < 150, `CPU while down: ${r.linkDown.idleCpuMsWhileDown} ms in 300 ms (a busy loop would burn ~300)`)
  t.true(r.linkDown.deliveredAfterUp)
  t.is(r.linkDown.readerEnd, 'done', 'the reader ended cleanly at close()')
  // Deleted: the waiting read ends with the kernel's EBADFD instead of hanging.
  t.is(r.deleted.readerEnd, 'EBADFD:read')
  t.is(r.deleted.writeAfter, 'EBADFD')
  t.true(r.deleted.cpuMs < 150, `CPU after deletion: ${r.deleted.cpuMs} ms`)
  // Moved into a namespace that is then destroyed: the same.
  t.is(r.namespace.readerEnd, 'EBADFD:read')
  // One queue of a multi-queue device closed: the other takes all the traffic.
  t.is(r.queueGone.receivedOnOtherQueue, 20)
  t.is(r.queueGone.readerEnd, 'done')
})

interface BadInput {
  results: Record<string, string>
  writtenByBadCalls: number
  raceOutcomes: string[]
  afterClose: Record<string, string>
}

rootTest('bad input from JS, table-driven: clear errors with codes, nothing half-written; close racing writes', async (t) => {
  const r = await withNetns((ns) => ns.runFixture<BadInput>('badinput'))
  const want: Record<string, string> = {
    'write(string)': 'TypeError:',
    'write(undefined)': 'TypeError:',
    'write(empty)': 'TunError:ERR_TUN_INVALID_PACKET',
    'write(not IP)': 'TunError:ERR_TUN_INVALID_PACKET',
    'write(truncated)': 'TunError:ERR_TUN_INVALID_PACKET',
    'write(70000 bytes)': 'TunError:ERR_TUN_INVALID_PACKET',
    'writeBatch(not array)': 'TypeError:',
    'writeBatch([good, number])': 'TypeError:',
    'writeBatch([good, truncated])': 'TunError:ERR_TUN_INVALID_PACKET',
    'writeFrames([short])': 'TunError:ERR_TUN_MALFORMED',
    'writeFrames([bad header])': 'TunError:ERR_TUN_MALFORMED',
    'setMtu(-1)': 'RangeError:ERR_OUT_OF_RANGE',
    'setMtu(1e9)': 'RangeError:ERR_OUT_OF_RANGE',
    'setMtu("1400")': 'TypeError:ERR_INVALID_ARG_TYPE',
    'addAddress(42)': 'TypeError:ERR_INVALID_ARG_TYPE',
    'addAddress("x/1")': 'TypeError:ERR_INVALID_ARG_VALUE',
    'addRoute("198.18.0.0/99")': 'RangeError:ERR_OUT_OF_RANGE',
    'setUp("yes")': 'TypeError:',
    'setPersist(1)': 'TypeError:',
    'packets({signal: 1})': 'TypeError:ERR_INVALID_ARG_TYPE',
    'Tun.fromFd("3")': 'TypeError:ERR_INVALID_ARG_TYPE',
    'Tun.fromFd(1.5)': 'TypeError:ERR_INVALID_ARG_TYPE',
  }
  t.deepEqual(r.results, want)
  t.is(r.writtenByBadCalls, 0, 'no bad call wrote anything, not even the good packet of a bad batch')
  for (const o of r.raceOutcomes) t.true(o === 'ok' || o === 'TunError:ERR_TUN_CLOSED', `a write racing close ended as ${o}`)
  for (const [name, o] of Object.entries(r.afterClose)) t.is(o, 'TunError:ERR_TUN_CLOSED', name)
})
