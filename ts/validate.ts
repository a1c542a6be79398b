import { isIP } from 'node:net'

/** An error with one of Node's argument codes. */
export type CodedError<E extends Error> = E & { code: string }

/** `TypeError` with `ERR_INVALID_ARG_TYPE`: an argument of the wrong type. */
export function typeError(message: string): CodedError<TypeError> {
  const e = new TypeError(message) as CodedError<TypeError>
  e.code = 'ERR_INVALID_ARG_TYPE'
  return e
}

/** `RangeError` with `ERR_OUT_OF_RANGE`: a number outside what is allowed. */
export function rangeError(message: string): CodedError<RangeError> {
  const e = new RangeError(message) as CodedError<RangeError>
  e.code = 'ERR_OUT_OF_RANGE'
  return e
}

/** `TypeError` with `ERR_INVALID_ARG_VALUE`: the right type, but a value that is not allowed. */
export function valueError(message: string): CodedError<TypeError> {
  const e = new TypeError(message) as CodedError<TypeError>
  e.code = 'ERR_INVALID_ARG_VALUE'
  return e
}

/** What a wrong argument was, for messages: `string`, `null`, `an array`, `an instance of Foo`. */
export function received(value: unknown): string {
  if (value === null) return 'null'
  if (Array.isArray(value)) return 'an array'
  if (typeof value === 'object') {
    const name = (value as object).constructor?.name
    return name ? `an instance of ${name}` : 'an object'
  }
  return typeof value
}

/** Checks an optional options object: `undefined` gives `{}`; anything but a plain object (or null) throws. */
export function checkOptions<T extends object>(value: unknown, what = 'options'): Partial<T> {
  if (value === undefined) return {}
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw typeError(`${what} must be an object, got ${received(value)}`)
  }
  return value as Partial<T>
}

/** Checks a required boolean argument. */
export function checkBoolean(value: unknown, what: string): boolean {
  if (typeof value !== 'boolean') throw typeError(`${what} must be a boolean, got ${received(value)}`)
  return value
}

/** Checks a file descriptor: an integer from 0 to 2^31 - 1. */
export function checkFd(fd: unknown): number {
  if (typeof fd !== 'number') throw typeError(`fd must be a number, got ${received(fd)}`)
  if (!Number.isInteger(fd) || fd < 0 || fd > 0x7fffffff) {
    throw rangeError(`fd must be an integer from 0 to 2147483647, got ${fd}`)
  }
  return fd
}

/**
 * Checks that `value` is a `Uint8Array` (a `Buffer` is one). With `index`,
 * the error names element `what[index]`; the name is made only for the
 * error (a template string per packet is a number-to-string conversion).
 */
export function checkBytes(value: unknown, what: string, index?: number): Uint8Array {
  if (!(value instanceof Uint8Array)) {
    throw typeError(`${index === undefined ? what : `${what}[${index}]`} must be a Uint8Array, got ${received(value)}`)
  }
  return value
}

/**
 * Checks an array of `Uint8Array`s, every element, before anything is done
 * with any. Returns a copy of the array (not of the bytes): what was checked
 * is what gets written, even if the caller changes its array meanwhile.
 */
export function checkBytesArray(value: unknown, what: string): Uint8Array[] {
  if (!Array.isArray(value)) throw typeError(`${what} must be an array of Uint8Array, got ${received(value)}`)
  const copy = (value as unknown[]).slice()
  for (let i = 0; i < copy.length; i++) checkBytes(copy[i], what, i)
  return copy as Uint8Array[]
}

/** A parsed CIDR: the address as written, its family and prefix length. */
export interface ParsedCidr {
  address: string
  family: 4 | 6
  prefix: number
}

/** Parses `198.18.0.1/24` or `2001:db8::1/64`; a bare address gets /32 or /128. */
export function parseCidr(value: unknown, what = 'address'): ParsedCidr {
  if (typeof value !== 'string') throw typeError(`${what} must be a string in CIDR notation, got ${received(value)}`)
  const slash = value.indexOf('/')
  const address = slash < 0 ? value : value.slice(0, slash)
  const family = isIP(address)
  if (family !== 4 && family !== 6) throw valueError(`${what} ${JSON.stringify(value)} is not a CIDR address (like 198.18.0.1/24 or 2001:db8::1/64)`)
  const max = family === 4 ? 32 : 128
  let prefix = max
  if (slash >= 0) {
    const p = value.slice(slash + 1)
    if (!/^\d{1,3}$/.test(p) || (p.length > 1 && p.startsWith('0'))) {
      throw valueError(`${what} ${JSON.stringify(value)} has a bad prefix length`)
    }
    prefix = Number(p)
    if (prefix > max) throw rangeError(`${what} ${JSON.stringify(value)}: prefix length must be 0 to ${max}`)
  }
  return { address, family, prefix }
}

/** Checks an interface name or `%d` pattern (at most 15 bytes). */
export function checkName(name: unknown): string {
  if (typeof name !== 'string') throw typeError(`name must be a string, got ${received(name)}`)
  const bytes = Buffer.byteLength(name)
  if (bytes === 0 || bytes > 15) throw rangeError(`name ${JSON.stringify(name)} must be 1 to 15 bytes, got ${bytes}`)
  if (/[/:\s\0]/.test(name) || name === '.' || name === '..') {
    throw valueError(`name ${JSON.stringify(name)} must not contain '/', ':', white space or NUL`)
  }
  const percents = name.split('%').length - 1
  if (percents > 1 || (percents === 1 && !name.includes('%d'))) {
    throw valueError(`name pattern ${JSON.stringify(name)} may contain one '%d' and no other '%'`)
  }
  return name
}

/** Smallest and largest MTU a tun device takes. */
export const MIN_MTU = 68
export const MAX_MTU = 65535
/** IPv6 needs at least this MTU. */
export const MIN_MTU_IPV6 = 1280

/** Checks an MTU: an integer from 68 to 65535. */
export function checkMtu(mtu: unknown): number {
  if (typeof mtu !== 'number') throw typeError(`mtu must be a number, got ${received(mtu)}`)
  if (!Number.isInteger(mtu) || mtu < MIN_MTU || mtu > MAX_MTU) {
    throw rangeError(`mtu must be an integer from ${MIN_MTU} to ${MAX_MTU}, got ${mtu}`)
  }
  return mtu
}

/** Checks a uid or gid. */
export function checkId(value: unknown, what: string): number {
  if (typeof value !== 'number') throw typeError(`${what} must be a number, got ${received(value)}`)
  if (!Number.isInteger(value) || value < 0 || value > 0xfffffffe) {
    throw rangeError(`${what} must be an integer from 0 to 4294967294, got ${value}`)
  }
  return value
}

/** Checks an optional boolean option. */
export function checkBool(value: unknown, what: string): boolean | undefined {
  if (value === undefined) return undefined
  return checkBoolean(value, what)
}

/** Checks an optional array of CIDR strings. */
export function checkCidrs(value: unknown, what: string): ParsedCidr[] {
  if (value === undefined) return []
  if (!Array.isArray(value)) throw typeError(`${what} must be an array of CIDR strings, got ${received(value)}`)
  return value.map((v, i) => parseCidr(v, `${what}[${i}]`))
}

/** Checks an optional AbortSignal. */
export function checkSignal(signal: unknown): AbortSignal | undefined {
  if (signal === undefined) return undefined
  if (!(signal instanceof AbortSignal)) throw typeError(`signal must be an AbortSignal, got ${received(signal)}`)
  return signal
}

/** The least memory a caller-supplied read buffer must have: one largest frame (length prefix, virtio header, 64 KiB packet, slack). */
export const MIN_READ_BUFFER = 4 + 10 + 65535 + 256

/** Where a read puts its batch: fresh memory (`undefined`), one buffer, or a function returning one per batch. */
export type BufferSource = Uint8Array | (() => Uint8Array)

/** Checks one buffer a read is to fill. */
export function checkReadBuffer(buf: unknown, what = 'buffer'): Buffer {
  if (!(buf instanceof Uint8Array)) throw typeError(`${what} must be a Uint8Array, got ${received(buf)}`)
  if (buf.byteLength < MIN_READ_BUFFER) {
    throw rangeError(`${what} must hold at least ${MIN_READ_BUFFER} bytes (one largest frame), got ${buf.byteLength}`)
  }
  return Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength)
}

/** Checks the `buffer` option of a read: a Uint8Array, a function, or nothing. */
export function checkBufferSource(source: unknown): BufferSource | undefined {
  if (source === undefined) return undefined
  if (typeof source === 'function') return source as () => Uint8Array
  checkReadBuffer(source)
  return source as Uint8Array
}

/**
 * The length of the IP packet at the start of `buf` from its own header, or
 * an explanation of why `buf` does not start with one.
 */
export function ipPacketLength(buf: Uint8Array): number | string {
  return ipPacketLengthAt(buf, 0)
}

/** {@link ipPacketLength} of the packet that starts at byte `at` of `buf` (no view made). */
export function ipPacketLengthAt(buf: Uint8Array, at: number): number | string {
  const have = buf.length - at
  if (have < 1) return 'empty buffer'
  const version = buf[at]! >> 4
  if (version === 4) {
    if (have < 20) return `IPv4 header needs 20 bytes, got ${have}`
    const ihl = (buf[at]! & 0x0f) * 4
    const total = (buf[at + 2]! << 8) | buf[at + 3]!
    if (ihl < 20) return `IPv4 header length ${ihl} is below 20`
    if (total < ihl) return `IPv4 total length ${total} is below the header length ${ihl}`
    return total
  }
  if (version === 6) {
    if (have < 40) return `IPv6 header needs 40 bytes, got ${have}`
    return 40 + ((buf[at + 4]! << 8) | buf[at + 5]!)
  }
  return `IP version ${version} is neither 4 nor 6`
}
