// Argument checking: runs without root, touches no kernel state.
import test from 'ava'
import { Tun, TunError } from '../ts/index.js'
import { checkBytesArray, checkFd, checkOptions, ipPacketLength, parseCidr, rangeError, received, typeError, valueError } from '../ts/validate.js'

const bad: Array<[string, unknown, string, string]> = [
  // [what, options, error class, code]
  ['name too long', { name: 'abcdefghijklmnop' }, 'RangeError', 'ERR_OUT_OF_RANGE'],
  ['name empty', { name: '' }, 'RangeError', 'ERR_OUT_OF_RANGE'],
  ['name with slash', { name: 'a/b' }, 'TypeError', 'ERR_INVALID_ARG_VALUE'],
  ['name bad pattern', { name: 'tun%s' }, 'TypeError', 'ERR_INVALID_ARG_VALUE'],
  ['name not a string', { name: 7 }, 'TypeError', 'ERR_INVALID_ARG_TYPE'],
  ['mtu too small', { mtu: 10 }, 'RangeError', 'ERR_OUT_OF_RANGE'],
  ['mtu too large', { mtu: 70000 }, 'RangeError', 'ERR_OUT_OF_RANGE'],
  ['mtu not integer', { mtu: 1400.5 }, 'RangeError', 'ERR_OUT_OF_RANGE'],
  ['mtu not a number', { mtu: '1400' }, 'TypeError', 'ERR_INVALID_ARG_TYPE'],
  ['mtu below IPv6 minimum with IPv6 address', { mtu: 1000, addresses: ['2001:db8::1/64'] }, 'RangeError', 'ERR_OUT_OF_RANGE'],
  ['address not CIDR', { addresses: ['198.18.0.300/24'] }, 'TypeError', 'ERR_INVALID_ARG_VALUE'],
  ['address prefix too long', { addresses: ['198.18.0.1/33'] }, 'RangeError', 'ERR_OUT_OF_RANGE'],
  ['address v6 prefix too long', { addresses: ['2001:db8::1/129'] }, 'RangeError', 'ERR_OUT_OF_RANGE'],
  ['address prefix garbage', { addresses: ['198.18.0.1/2x'] }, 'TypeError', 'ERR_INVALID_ARG_VALUE'],
  ['addresses not an array', { addresses: '198.18.0.1/24' }, 'TypeError', 'ERR_INVALID_ARG_TYPE'],
  ['route not a string', { routes: [42] }, 'TypeError', 'ERR_INVALID_ARG_TYPE'],
  ['up not boolean', { up: 'yes' }, 'TypeError', 'ERR_INVALID_ARG_TYPE'],
  ['owner negative', { owner: -1 }, 'RangeError', 'ERR_OUT_OF_RANGE'],
  ['group not integer', { group: 1.5 }, 'RangeError', 'ERR_OUT_OF_RANGE'],
  ['group not a number', { group: '0' }, 'TypeError', 'ERR_INVALID_ARG_TYPE'],
  ['options not an object', 5, 'TypeError', 'ERR_INVALID_ARG_TYPE'],
  ['options null', null, 'TypeError', 'ERR_INVALID_ARG_TYPE'],
  ['options an array', [], 'TypeError', 'ERR_INVALID_ARG_TYPE'],
  ['coalesce not an object', { coalesce: true }, 'TypeError', 'ERR_INVALID_ARG_TYPE'],
  ['coalesce null', { coalesce: null }, 'TypeError', 'ERR_INVALID_ARG_TYPE'],
  ['coalesce.udp not boolean', { coalesce: { udp: 0 } }, 'TypeError', 'ERR_INVALID_ARG_TYPE'],
  ['offload not boolean', { offload: 1 }, 'TypeError', 'ERR_INVALID_ARG_TYPE'],
  ['multiQueue not boolean', { multiQueue: 'yes' }, 'TypeError', 'ERR_INVALID_ARG_TYPE'],
  ['persist not boolean', { persist: 'false' }, 'TypeError', 'ERR_INVALID_ARG_TYPE'],
  ['routes not an array', { routes: '198.18.0.0/24' }, 'TypeError', 'ERR_INVALID_ARG_TYPE'],
  ['route prefix too long', { routes: ['198.18.0.0/40'] }, 'RangeError', 'ERR_OUT_OF_RANGE'],
]

for (const [what, options, cls, code] of bad) {
  test(`Tun.open rejects ${what} before creating anything`, async (t) => {
    const err = await t.throwsAsync(Tun.open(options as never))
    t.is(err?.constructor, cls === 'RangeError' ? RangeError : TypeError)
    t.is((err as Error & { code?: string }).code, code)
  })
}

test('parseCidr accepts IPv4 and IPv6 with and without prefix', (t) => {
  t.deepEqual(parseCidr('198.18.0.1/24'), { address: '198.18.0.1', family: 4, prefix: 24 })
  t.deepEqual(parseCidr('2001:db8::1'), { address: '2001:db8::1', family: 6, prefix: 128 })
  t.deepEqual(parseCidr('0.0.0.0/0'), { address: '0.0.0.0', family: 4, prefix: 0 })
})

test('ipPacketLength reads the IP header and explains what is wrong', (t) => {
  const v4 = Buffer.alloc(28)
  v4[0] = 0x45
  v4.writeUInt16BE(28, 2)
  t.is(ipPacketLength(v4), 28)
  const v6 = Buffer.alloc(48)
  v6[0] = 0x60
  v6.writeUInt16BE(8, 4)
  t.is(ipPacketLength(v6), 48)
  t.regex(String(ipPacketLength(Buffer.from([0x25, 0, 0]))), /version 2/)
  t.regex(String(ipPacketLength(Buffer.from([0x45, 0, 0]))), /20 bytes/)
  t.regex(String(ipPacketLength(Buffer.alloc(0))), /empty/)
})

test('TunError carries code, errno and syscall', (t) => {
  const e = new TunError('TUNSETIFF: Operation not permitted', 'EPERM', -1, 'TUNSETIFF')
  t.true(e instanceof Error)
  t.is(e.name, 'TunError')
  t.is(e.code, 'EPERM')
  t.is(e.errno, -1)
  t.is(e.syscall, 'TUNSETIFF')
})

test('the argument checks give Node\'s classes and codes', (t) => {
  const cases: Array<[() => unknown, ErrorConstructor | RangeErrorConstructor, string]> = [
    [() => checkFd('3'), TypeError, 'ERR_INVALID_ARG_TYPE'],
    [() => checkFd(-1), RangeError, 'ERR_OUT_OF_RANGE'],
    [() => checkFd(1.5), RangeError, 'ERR_OUT_OF_RANGE'],
    [() => checkOptions(7), TypeError, 'ERR_INVALID_ARG_TYPE'],
    [() => checkBytesArray('x', 'packets'), TypeError, 'ERR_INVALID_ARG_TYPE'],
    [() => checkBytesArray([Buffer.alloc(1), 5], 'packets'), TypeError, 'ERR_INVALID_ARG_TYPE'],
    [() => { throw typeError('x') }, TypeError, 'ERR_INVALID_ARG_TYPE'],
    [() => { throw rangeError('x') }, RangeError, 'ERR_OUT_OF_RANGE'],
    [() => { throw valueError('x') }, TypeError, 'ERR_INVALID_ARG_VALUE'],
  ]
  for (const [f, cls, code] of cases) {
    const err = t.throws(f)
    t.is(err?.constructor, cls)
    t.is((err as Error & { code?: string }).code, code)
  }
  t.regex(t.throws(() => checkBytesArray([Buffer.alloc(1), 5], 'packets'))!.message, /packets\[1\] must be a Uint8Array, got number/)
  t.deepEqual(checkOptions(undefined), {})
  t.is(checkFd(3), 3)
  t.is(received(null), 'null')
  t.is(received([]), 'an array')
  t.is(received(new Map()), 'an instance of Map')
})
