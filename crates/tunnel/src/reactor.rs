//! Readiness on tokio's `AsyncFd` (epoll), for a [`Device`] shared behind an `Arc`.
//!
//! The reactor only waits; the reads and writes themselves stay the
//! synchronous, non-blocking calls of [`Device`], so a caller can do them on
//! its own thread (the Node binding does them on the JS thread, into memory
//! that V8 owns).
use std::io;
use std::sync::Arc;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::Device;

/// A device registered with tokio's reactor.
#[derive(Debug)]
pub struct Reactor {
    afd: AsyncFd<Arc<Device>>,
}

impl Reactor {
    /// Registers `dev` with the current tokio runtime.
    ///
    /// Must be called from within a runtime context; outside one it returns an error.
    pub fn new(dev: Arc<Device>) -> io::Result<Self> {
        Ok(Reactor {
            afd: crate::sys::reactor::register(dev)?,
        })
    }

    /// The device.
    pub fn device(&self) -> &Arc<Device> {
        self.afd.get_ref()
    }

    /// Resolves once a read would not block (or would report an error).
    ///
    /// The readiness tokio caches is checked against the fd with a zero-timeout
    /// `poll`, so a stale edge never turns into a busy loop.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future loses nothing.
    pub async fn readable(&self) -> io::Result<()> {
        loop {
            // ERROR too: a deleted device reports only EPOLLERR, and the read
            // that follows returns its errno (EBADFD) instead of waiting forever.
            let mut guard = self.afd.ready(Interest::READABLE | Interest::ERROR).await?;
            if self.afd.get_ref().poll_readable()? {
                return Ok(());
            }
            guard.clear_ready();
        }
    }

    /// Resolves once a write would not block.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future loses nothing.
    pub async fn writable(&self) -> io::Result<()> {
        loop {
            let mut guard = self.afd.ready(Interest::WRITABLE | Interest::ERROR).await?;
            if self.afd.get_ref().poll_writable()? {
                return Ok(());
            }
            guard.clear_ready();
        }
    }
}
