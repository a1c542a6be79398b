//! An epoll instance: create, add/modify/delete one-shot interests, wait.
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::tun::{cvt, retry_if_interrupted};

/// Readable (`EPOLLIN`).
pub const IN: u32 = libc::EPOLLIN as u32;
/// Writable (`EPOLLOUT`).
pub const OUT: u32 = libc::EPOLLOUT as u32;
/// Error condition (`EPOLLERR`); always reported.
pub const ERR: u32 = libc::EPOLLERR as u32;
/// Hang-up (`EPOLLHUP`); always reported.
pub const HUP: u32 = libc::EPOLLHUP as u32;
const ONESHOT: u32 = libc::EPOLLONESHOT as u32;

/// One readiness event: the token given at registration and the event bits.
#[derive(Debug, Clone, Copy, Default)]
pub struct Event {
    /// The registration's token.
    pub token: u64,
    /// `IN`, `OUT`, `ERR`, `HUP` bits.
    pub events: u32,
}

/// An epoll file descriptor (closed on drop).
#[derive(Debug)]
pub struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    /// `epoll_create1(EPOLL_CLOEXEC)`.
    pub fn new() -> io::Result<Self> {
        // SAFETY: epoll_create1 with a constant flag; no pointers.
        let raw = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: epoll_create1 returned a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(Epoll { fd })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, token: u64, events: u32) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: events | ONESHOT,
            u64: token,
        };
        // SAFETY: `ev` is a valid epoll_event that outlives the call (the
        // kernel copies it; for EPOLL_CTL_DEL it is ignored).
        cvt(unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut ev) }).map(drop)
    }

    /// Registers `fd` with no interest yet (one-shot; see [`Epoll::arm`]).
    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token, 0)
    }

    /// Arms `fd` for one report of `events` (plus errors and hang-ups); after
    /// the report it is disarmed until armed again. Arming with 0 disarms.
    pub fn arm(&self, fd: RawFd, token: u64, events: u32) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, token, events)
    }

    /// Removes `fd`. No report for it arrives after this returns.
    pub fn delete(&self, fd: RawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0)
    }

    /// Waits for events (forever with `timeout_ms` -1); returns how many of
    /// `out` were filled. Retries on `EINTR`.
    pub fn wait(&self, out: &mut [Event], timeout_ms: i32) -> io::Result<usize> {
        const MAX: usize = 64;
        let mut raw = [libc::epoll_event { events: 0, u64: 0 }; MAX];
        let max = out.len().min(MAX) as libc::c_int;
        let n = retry_if_interrupted(|| {
            // SAFETY: `raw` is valid for writes of `max` <= MAX epoll_events
            // for the duration of the call.
            cvt(unsafe { libc::epoll_wait(self.fd.as_raw_fd(), raw.as_mut_ptr(), max, timeout_ms) })
        })?;
        let n = usize::try_from(n).unwrap_or(0).min(out.len());
        for (o, r) in out.iter_mut().zip(&raw[..n]) {
            // Copy out of the (packed) kernel struct by value.
            let (events, token) = (r.events, r.u64);
            *o = Event { token, events };
        }
        Ok(n)
    }
}
