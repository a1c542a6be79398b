// Imported first by the entry point: a clear error on systems without tun support,
// before the native loader looks for a binary that does not exist there.
if (process.platform !== 'linux') {
  const err = new Error(`tunnel-gso works on Linux only (TUN devices, rtnetlink); this is ${process.platform}/${process.arch}`) as Error & { code: string }
  err.code = 'ERR_TUN_UNSUPPORTED_PLATFORM'
  throw err
}
export {}
