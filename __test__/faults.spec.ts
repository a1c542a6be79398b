// Faults from the kernel side, for real, inside a namespace.
import { rootTest, withNetns } from './helpers/netns.js'

interface Faults {
  linkDown: { writeDown: string; idleCpuMsWhileDown: number; readerEnd: string; deliveredAfterUp: boolean }
  deleted: { readerEnd: string; cpuMs: number; writeAfter: string }
  namespace: { readerEnd: string }
}

rootTest('link down under load, device deleted while reading, namespace destroyed: clear errors, no hang, no busy loop', async (t) => {
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
})
