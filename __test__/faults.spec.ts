// Faults from the kernel side, for real, inside a namespace.
import * as path from 'node:path'
import type { ExecutionContext } from 'ava'
import { FIXTURES, rootTest, withNetns } from './helpers/netns.js'

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

interface Detach {
  error?: string
  beforeDetach: number
  detachedFlag: boolean
  kernelOnDetached: { pollEvents: number[]; read: string }
  onOtherQueue: number
  whileDetached: { cpuMs: number; received: number; end: string | null }
  writeDetached: { write: string; delivered: number }
  reattachedFlag: boolean
  afterReattach: number
  end?: { end: string; cpuMs: number; sinceDeleteMs?: number }
  writeAfterDelete?: { write: string; delivered: number }
  close: { closeMs: number; end: string }
  exit: number
}

/** Runs fault_detach.py (it starts the node reader itself) in a fresh namespace. */
async function detachRun(mode: 'delete' | 'close'): Promise<Detach> {
  const out = await withNetns((ns) => ns.exec('python3', [path.join(FIXTURES, 'fault_detach.py'), process.execPath, mode]))
  return JSON.parse(out.trim().split('\n').pop() ?? '') as Detach
}

/** What both runs show up to the final detach. */
function assertDetachedQueue(t: ExecutionContext, r: Detach): void {
  t.is(r.error, undefined, 'the helper saw no hang and no crash')
  t.is(r.beforeDetach, 10, 'the adopted queue read everything while attached')
  t.true(r.detachedFlag, 'TUNGETIFF says the queue is detached')
  // The kernel's side of it (6.18): nothing to see on the fd.
  t.deepEqual(r.kernelOnDetached, { pollEvents: [], read: 'EAGAIN' }, 'a detached queue polls quiet and reads EAGAIN')
  // The traffic goes to the other queue; the reader keeps waiting, quietly.
  t.is(r.onOtherQueue, 20)
  t.is(r.whileDetached.received, 10, 'nothing reached the detached queue')
  t.is(r.whileDetached.end, null, 'the reader neither ended nor failed: there was nothing to report')
  t.true(r.whileDetached.cpuMs < 150, `CPU while detached: ${r.whileDetached.cpuMs} ms in 500 ms (a busy loop would burn ~500)`)
  // Writes on a detached queue still go into the stack.
  t.deepEqual(r.writeDetached, { write: 'ok', delivered: 1 })
  // Re-attached: the same reader, the same for await, gets traffic again.
  t.false(r.reattachedFlag)
  t.is(r.afterReattach, 20, 'the waiting reader resumed after the queue was re-attached')
  t.is(r.exit, 0)
}

rootTest('a queue detached from outside (TUNSETQUEUE IFF_DETACH_QUEUE) while a Tun.fromFd reader waits: the kernel reports nothing (no poll event, reads EAGAIN, writes still delivered), so the reader waits without spinning and resumes when re-attached; detached again and the device deleted, it ends at once with TunError EBADFD (read), writes too', async (t) => {
  const r = await detachRun('delete')
  assertDetachedQueue(t, r)
  t.is(r.end?.end, 'TunError:EBADFD:read', 'the reader of the detached queue ended with the kernel\'s EBADFD')
  t.true((r.end?.sinceDeleteMs ?? Infinity) < 1000, `ended ${r.end?.sinceDeleteMs} ms after the deletion`)
  t.true((r.end?.cpuMs ?? Infinity) < 150, `CPU until it ended: ${r.end?.cpuMs} ms`)
  t.is(r.writeAfterDelete?.write, 'TunError:EBADFD:write')
  t.is(r.writeAfterDelete?.delivered, 0)
  t.is(r.close.end, 'TunError:EBADFD:read', 'close() afterwards is fine')
})

rootTest('a queue detached from outside while a Tun.fromFd reader waits: close() ends the iteration cleanly and at once', async (t) => {
  const r = await detachRun('close')
  assertDetachedQueue(t, r)
  t.is(r.close.end, 'done', 'the for await of the detached queue completed at close()')
  t.true(r.close.closeMs < 500, `close() took ${r.close.closeMs} ms`)
})

interface BadInput {
  results: Record<string, string>
  written: { stats: number; kernel: number; delivered: number }
  control: { mutatedArray: string; stats: number; kernel: number; delivered: number; readAfterBadReads: number }
  race: Record<string, number>
  afterClose: Record<string, string>
}

const TYPE = 'TypeError:ERR_INVALID_ARG_TYPE'
const VALUE = 'TypeError:ERR_INVALID_ARG_VALUE'
const RANGE = 'RangeError:ERR_OUT_OF_RANGE'
const INVALID_PACKET = 'TunError:ERR_TUN_INVALID_PACKET'
const MALFORMED = 'TunError:ERR_TUN_MALFORMED'
const CLOSED = 'TunError:ERR_TUN_CLOSED'

rootTest('bad input from JS, table-driven: every argument error has its exact class and Node code, no bad batch writes any of its packets, closed devices say ERR_TUN_CLOSED, close racing writes', async (t) => {
  const r = await withNetns((ns) => ns.runFixture<BadInput>('badinput'))
  // Class (the constructor, not just the name) and code of every row, exactly.
  const want: Record<string, string> = {
    'write(string)': TYPE,
    'write(undefined)': TYPE,
    'write([good])': TYPE,
    'write(empty)': INVALID_PACKET,
    'write(not IP)': INVALID_PACKET,
    'write(truncated)': INVALID_PACKET,
    'write(70000 bytes)': INVALID_PACKET,
    'writeBatch(not array)': TYPE,
    'writeBatch(undefined)': TYPE,
    'writeBatch([good, number])': TYPE,
    'writeBatch([good, string])': TYPE,
    'writeBatch([good, truncated])': INVALID_PACKET,
    'writeFrames(not array)': TYPE,
    'writeFrames(string)': TYPE,
    'writeFrames([good, number])': TYPE,
    'writeFrames([good, short])': MALFORMED,
    'writeFrames([short])': MALFORMED,
    'writeFrames([bad header])': MALFORMED,
    'setMtu(-1)': RANGE,
    'setMtu(1e9)': RANGE,
    'setMtu(1400.5)': RANGE,
    'setMtu(NaN)': RANGE,
    'setMtu("1400")': TYPE,
    'addAddress(42)': TYPE,
    'addAddress("x/1")': VALUE,
    'addAddress("198.18.0.1/33")': RANGE,
    'removeAddress(42)': TYPE,
    'removeAddress(undefined)': TYPE,
    'removeAddress("nope")': VALUE,
    'removeAddress("198.18.0.1/2x")': VALUE,
    'removeAddress("2001:db8::1/129")': RANGE,
    'addRoute(null)': TYPE,
    'addRoute("198.18.0.0/99")': RANGE,
    'removeRoute(42)': TYPE,
    'removeRoute("198.18.0.300/24")': VALUE,
    'removeRoute("198.18.0.0/33")': RANGE,
    'removeRoute("2001:db8::/1x")': VALUE,
    'setUp("yes")': TYPE,
    'setUp(1)': TYPE,
    'setUp()': TYPE,
    'setPersist(1)': TYPE,
    'setPersist("false")': TYPE,
    'packets(5)': TYPE,
    'packets(null)': TYPE,
    'packets({signal: 1})': TYPE,
    'batches({signal: "x"})': TYPE,
    'frames({signal: {}})': TYPE,
    'packets({buffer: 1000 bytes})': RANGE,
    'batches({buffer: 1000 bytes})': RANGE,
    'frames({buffer: 1000 bytes})': RANGE,
    'frameChunks({signal: 1})': TYPE,
    'frameChunks({buffer: 1000 bytes})': RANGE,
    'packets({buffer: 5})': TYPE,
    'batches({buffer: "x"})': TYPE,
    'frames({buffer: []})': TYPE,
    'packets({buffer: () => "x"})': TYPE,
    'batches({buffer: () => null})': TYPE,
    'frames({buffer: () => ArrayBuffer})': TYPE,
    'batches({buffer: () => 1000 bytes})': RANGE,
    'Tun.fromFd("3")': TYPE,
    'Tun.fromFd(undefined)': TYPE,
    'Tun.fromFd(1.5)': RANGE,
    'Tun.fromFd(-1)': RANGE,
    'Tun.fromFd(2**31)': RANGE,
    'Tun.fromFd(NaN)': RANGE,
    'Tun.fromFd(987, "x")': TYPE,
    'Tun.fromFd(987, {offload: 1})': TYPE,
    'Tun.fromFd(0) (not a tun)': VALUE,
  }
  t.deepEqual(r.results, want)
  // Nothing half-written: the good packets at the front of the bad batches
  // reached neither the library's counters, nor the kernel's, nor the socket
  // they were addressed to. The control (one good write) shows all three count.
  t.deepEqual(r.written, { stats: 0, kernel: 0, delivered: 0 }, 'no bad call wrote anything, not even the good packet of a bad batch')
  t.deepEqual(r.control, { mutatedArray: 'ok', stats: 2, kernel: 2, delivered: 2, readAfterBadReads: 38 }, 'after the bad calls the device writes and reads; a batch is written as checked even if its array changes after the call')
  // close() racing 200 writes: each settles as written or ERR_TUN_CLOSED, and
  // exactly the writes that resolved were delivered.
  const { deliveredToSocket, ok, [CLOSED]: closed, ...other } = r.race
  t.deepEqual(other, {}, 'no write ended otherwise')
  t.true((ok ?? 0) >= 50, `the 50 writes before close() succeeded (${ok})`)
  t.true((closed ?? 0) > 0, 'writes queued behind close() were refused')
  t.is((ok ?? 0) + (closed ?? 0), 200)
  t.is(deliveredToSocket, ok, 'every write that resolved was delivered, none that rejected was')
  const closedNames = ['write', 'writeBatch', 'writeFrames', 'setMtu', 'addAddress', 'removeAddress', 'addRoute', 'removeRoute', 'setUp', 'setPersist', 'openQueue', 'packets', 'batches', 'frames', 'createReadStream', 'createWriteStream']
  t.deepEqual(r.afterClose, Object.fromEntries(closedNames.map((n) => [n, CLOSED])))
})
