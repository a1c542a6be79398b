//! One-shot readiness without a runtime: one epoll thread per process.
//!
//! A [`Registration`] ties a device to a callback. [`Registration::arm`]
//! asks for one report of readability and/or writability; the callback then
//! runs once, on the poller thread, with the event bits (errors and hang-ups
//! always included), and the device is disarmed until armed again. Arming is
//! one `epoll_ctl` on the caller's thread: it never wakes another thread, and
//! the poller thread sleeps in `epoll_wait` until the kernel has something.
//!
//! The callback must be cheap and must not block: the Node binding posts the
//! bits to the JS thread through a thread-safe function and returns.
use std::collections::HashMap;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::sys::epoll::{Epoll, Event};

pub use crate::sys::epoll::{ERR, HUP, IN, OUT};

/// What runs when an armed device reports.
pub type Callback = Arc<dyn Fn(u32) + Send + Sync>;

struct Poller {
    epoll: Epoll,
    callbacks: Mutex<HashMap<u64, Callback>>,
    next_token: AtomicU64,
}

/// The process's poller, started by the first registration. A failure to
/// start (no descriptors left, say) is not remembered: the next try starts afresh.
static POLLER: Mutex<Option<Arc<Poller>>> = Mutex::new(None);

fn poller() -> io::Result<Arc<Poller>> {
    let mut slot = lock(&POLLER);
    if let Some(p) = slot.as_ref() {
        return Ok(Arc::clone(p));
    }
    let p = Arc::new(Poller {
        epoll: Epoll::new()?,
        callbacks: Mutex::new(HashMap::new()),
        next_token: AtomicU64::new(1),
    });
    let q = Arc::clone(&p);
    std::thread::Builder::new()
        .name("tunnel-poller".into())
        .spawn(move || run(&q))?;
    *slot = Some(Arc::clone(&p));
    Ok(p)
}

fn run(p: &Poller) {
    let mut events = [Event::default(); 64];
    loop {
        let n = match p.epoll.wait(&mut events, -1) {
            Ok(n) => n,
            // Cannot happen on our own epoll fd (EINTR is retried inside);
            // if it did, back off rather than spin, and never stop reporting.
            Err(_) => {
                std::thread::sleep(std::time::Duration::from_millis(10));
                continue;
            }
        };
        for e in &events[..n] {
            let cb = lock(&p.callbacks).get(&e.token).cloned();
            if let Some(cb) = cb {
                cb(e.events);
            }
        }
    }
}

/// What can be registered: a device, or any descriptor that supports poll.
pub type Pollable = Arc<dyn AsRawFd + Send + Sync>;

/// A descriptor registered with the poller; deregistered on drop. It holds
/// the descriptor open for as long as it is registered.
pub struct Registration {
    poller: Arc<Poller>,
    fd: Pollable,
    token: u64,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("token", &self.token)
            .finish()
    }
}

impl Registration {
    /// Registers `fd` (a [`crate::Device`], say), disarmed; `callback` runs on
    /// the poller thread for each report.
    pub fn new(fd: Pollable, callback: Callback) -> io::Result<Self> {
        let poller = poller()?;
        let token = poller.next_token.fetch_add(1, Ordering::Relaxed);
        lock(&poller.callbacks).insert(token, callback);
        if let Err(e) = poller.epoll.add(fd.as_raw_fd(), token) {
            lock(&poller.callbacks).remove(&token);
            return Err(e);
        }
        Ok(Registration { poller, fd, token })
    }

    /// Asks for one report of `events` ([`IN`], [`OUT`], or both; 0 disarms).
    /// If the device is ready already, the report comes at once.
    pub fn arm(&self, events: u32) -> io::Result<()> {
        self.poller
            .epoll
            .arm(self.fd.as_raw_fd(), self.token, events & (IN | OUT))
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // The fd is still open (we hold the device), so this cannot fail in a
        // way that matters; a report already taken by the poller thread finds
        // no callback once it is removed.
        let _ = self.poller.epoll.delete(self.fd.as_raw_fd());
        lock(&self.poller.callbacks).remove(&self.token);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    use std::sync::mpsc;
    use std::time::Duration;

    fn registered() -> (Registration, UnixStream, mpsc::Receiver<u32>) {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let cb: Callback = Arc::new(move |ev| {
            let _ = lock(&tx).send(ev);
        });
        (Registration::new(Arc::new(a), cb).unwrap(), b, rx)
    }

    const NONE: Duration = Duration::from_millis(200);
    const SOON: Duration = Duration::from_secs(5);

    #[test]
    fn reports_once_per_arm_and_only_when_armed() {
        let (reg, mut peer, rx) = registered();
        peer.write_all(b"x").unwrap();
        // Readable, but not armed: no report.
        assert!(rx.recv_timeout(NONE).is_err());
        reg.arm(IN).unwrap();
        assert_eq!(rx.recv_timeout(SOON).unwrap() & IN, IN);
        // One-shot: still readable, but no second report until armed again.
        assert!(rx.recv_timeout(NONE).is_err());
        reg.arm(IN).unwrap();
        assert_eq!(rx.recv_timeout(SOON).unwrap() & IN, IN);
    }

    #[test]
    fn waits_until_ready_and_reports_writable() {
        let (reg, mut peer, rx) = registered();
        reg.arm(IN).unwrap();
        assert!(rx.recv_timeout(NONE).is_err(), "nothing to read yet");
        peer.write_all(b"x").unwrap();
        assert_eq!(rx.recv_timeout(SOON).unwrap() & IN, IN);
        reg.arm(OUT).unwrap();
        assert_eq!(rx.recv_timeout(SOON).unwrap() & OUT, OUT);
    }

    #[test]
    fn disarm_and_drop_stop_reports_and_hangup_is_reported() {
        let (reg, mut peer, rx) = registered();
        reg.arm(IN).unwrap();
        reg.arm(0).unwrap();
        peer.write_all(b"x").unwrap();
        assert!(rx.recv_timeout(NONE).is_err(), "disarmed");
        let (reg2, peer2, rx2) = registered();
        reg2.arm(IN).unwrap();
        drop(peer2);
        assert_ne!(rx2.recv_timeout(SOON).unwrap() & (IN | HUP), 0, "peer closed");
        drop(reg);
        drop(peer);
        assert!(rx.recv_timeout(NONE).is_err(), "deregistered");
    }
}
