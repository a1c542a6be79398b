//! Registration of a device with tokio's reactor (`AsyncFd::register` is `unsafe`).
use std::io;
use std::sync::Arc;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::Device;

/// Registers `dev` with the current tokio runtime for read and write readiness.
///
/// Returns an error, not a panic, when called outside a runtime.
pub fn register(dev: Arc<Device>) -> io::Result<AsyncFd<Arc<Device>>> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(io::Error::other("no tokio runtime on this thread"));
    }
    // SAFETY: a `Device` owns its `OwnedFd` for its whole life and never swaps it,
    // so `as_raw_fd()` returns the same open descriptor for as long as the Arc
    // (and hence the `AsyncFd` holding it) lives.
    unsafe { AsyncFd::register_with_interest(dev, Interest::READABLE | Interest::WRITABLE) }
        .map_err(io::Error::from)
}
