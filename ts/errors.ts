import { getSystemErrorName } from 'node:util'
import { valueError } from './validate.js'

/**
 * The error every `tunnel-gso` operation rejects with (besides `TypeError` and
 * `RangeError` for bad arguments, thrown before anything is created).
 *
 * - `code`: `EPERM`, `EBUSY`, `EINVAL`, `ENODEV`, ... when the kernel refused;
 *   `ERR_TUN_CLOSED` when the device was closed; `ERR_TUN_INVALID_PACKET` for
 *   bytes that are not a complete IP packet.
 * - `errno`: the kernel's error number, negative as in Node's own system errors
 *   (`-1` for `EPERM`), present when the kernel refused.
 * - `syscall`: the system call, ioctl or netlink request that failed
 *   (`open`, `TUNSETIFF`, `RTM_NEWADDR`, ...), present when the kernel refused.
 */
export class TunError extends Error {
  readonly code: string
  readonly errno?: number
  readonly syscall?: string

  constructor(message: string, code: string, errno?: number, syscall?: string) {
    super(message)
    this.name = 'TunError'
    this.code = code
    if (errno !== undefined) this.errno = errno
    if (syscall !== undefined) this.syscall = syscall
  }
}

/** Linux errnos that Node's own table (libuv's) lacks but tun and netlink return. */
const LINUX_ERRNO: Record<number, string> = {
  61: 'ENODATA',
  74: 'EBADMSG',
  77: 'EBADFD', // a tun fd whose device is gone
  95: 'EOPNOTSUPP',
}

/** A closed-device error. */
export function closedError(): TunError {
  return new TunError('the tun device is closed', 'ERR_TUN_CLOSED')
}

/**
 * Turns an error thrown by the native binding into a `TunError`. The binding
 * encodes `code` (or `errno:<n>:<syscall>`) and the message, separated by U+001F.
 */
export function fromNative(e: unknown): Error {
  if (!(e instanceof Error)) return new TunError(String(e), 'ERR_TUN')
  const sep = e.message.indexOf('\u001f')
  if (sep < 0) return e
  const head = e.message.slice(0, sep)
  const message = e.message.slice(sep + 1)
  const m = /^errno:(\d+):(.+)$/.exec(head)
  if (m) {
    const errno = Number(m[1])
    let code = LINUX_ERRNO[errno] ?? 'ERR_TUN'
    try {
      const name = getSystemErrorName(-errno)
      if (!name.startsWith('Unknown')) code = name
    } catch {
      // An errno Node does not know keeps the name from the table, or the generic code.
    }
    return new TunError(message, code, -errno, m[2])
  }
  // The binding's argument check (a descriptor that is not a tun fd, ...): Node's code, Node's class.
  if (head === 'ERR_INVALID_ARG_VALUE') return valueError(message)
  return new TunError(message, head)
}

/** Calls `f`, converting native errors. */
export function native<T>(f: () => T): T {
  try {
    return f()
  } catch (e) {
    throw fromNative(e)
  }
}

/** Awaits `p`, converting native errors. */
export async function nativeAsync<T>(p: () => Promise<T>): Promise<T> {
  try {
    return await p()
  } catch (e) {
    throw fromNative(e)
  }
}
