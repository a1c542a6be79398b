//! The rtnetlink socket: `socket(AF_NETLINK, SOCK_RAW|SOCK_CLOEXEC, NETLINK_ROUTE)`,
//! bind, send, receive. Messages are built and parsed in [`crate::rtnl`].
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::tun::{cvt, retry_if_interrupted};
use crate::{Error, Result};

/// `NETLINK_CAP_ACK`: error answers carry only the request's header, not the whole request.
const NETLINK_CAP_ACK: libc::c_int = 10;
/// `NETLINK_EXT_ACK`: error answers may carry the kernel's message (Linux >= 4.12).
const NETLINK_EXT_ACK: libc::c_int = 11;

/// How long [`RtnlSocket::recv`] waits for the kernel before failing with `EAGAIN`.
pub const RECV_TIMEOUT_SECS: libc::time_t = 5;

/// A bound `NETLINK_ROUTE` socket in the calling thread's network namespace.
///
/// Owns its descriptor (closed on drop); not `Clone`.
#[derive(Debug)]
pub struct RtnlSocket {
    fd: OwnedFd,
}

fn set_int_option(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: setsockopt reads one `c_int` through the pointer; the length matches it
    // and `value` lives for the duration of the call.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}

impl RtnlSocket {
    /// Opens and binds the socket (kernel-assigned port id) with a receive
    /// timeout of [`RECV_TIMEOUT_SECS`], so that a missing answer is an error,
    /// never a hang. Extended acks and capped acks are asked for where the
    /// kernel has them.
    ///
    /// # Errors
    /// [`Error::Sys`] naming `socket`, `bind` or `setsockopt`.
    pub fn open() -> Result<Self> {
        // SAFETY: socket(2) with constant arguments; no pointers.
        let raw = cvt(unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        })
        .map_err(|e| Error::sys("socket", e))?;
        // SAFETY: socket returned a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };

        // SAFETY: sockaddr_nl is plain old data; all-zero is a valid value
        // (nl_pid 0: the kernel assigns the port id; no multicast groups).
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: `addr` is a valid sockaddr_nl and the length matches it.
        cvt(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        })
        .map_err(|e| Error::sys("bind", e))?;

        let tv = libc::timeval {
            tv_sec: RECV_TIMEOUT_SECS,
            tv_usec: 0,
        };
        // SAFETY: SO_RCVTIMEO reads one timeval through the pointer; the length matches
        // and `tv` lives for the duration of the call.
        cvt(unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        })
        .map_err(|e| Error::sys("setsockopt", e))?;
        // Both are optional: older kernels answer ENOPROTOOPT and send plain acks.
        let _ = set_int_option(&fd, libc::SOL_NETLINK, NETLINK_CAP_ACK, 1);
        let _ = set_int_option(&fd, libc::SOL_NETLINK, NETLINK_EXT_ACK, 1);
        Ok(RtnlSocket { fd })
    }

    /// Sends one request to the kernel. Retries on `EINTR`; a short send is an
    /// error (`WriteZero`).
    pub fn send(&self, msg: &[u8]) -> io::Result<()> {
        // SAFETY: sockaddr_nl is plain old data; all-zero addresses the kernel (pid 0).
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        let n = retry_if_interrupted(|| {
            // SAFETY: `msg` is valid for reads of its length; `addr` is a valid
            // sockaddr_nl of the given size; both outlive the call.
            cvt(unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    msg.as_ptr().cast(),
                    msg.len(),
                    0,
                    (&addr as *const libc::sockaddr_nl).cast(),
                    std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
                )
            })
        })?;
        if usize::try_from(n).ok() != Some(msg.len()) {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "short netlink send"));
        }
        Ok(())
    }

    /// Receives one datagram (one or more netlink messages) into `buf`, or with
    /// `peek` only looks at it and leaves it queued. Retries on `EINTR`.
    ///
    /// Returns the datagram's full length (`MSG_TRUNC`), which is larger than
    /// `buf.len()` when it did not fit: then only `buf.len()` bytes were
    /// written, and, without `peek`, the rest is lost. Fails with `EAGAIN`
    /// after [`RECV_TIMEOUT_SECS`] without an answer.
    pub fn recv(&self, buf: &mut [u8], peek: bool) -> io::Result<usize> {
        let flags = libc::MSG_TRUNC | if peek { libc::MSG_PEEK } else { 0 };
        retry_if_interrupted(|| {
            // SAFETY: `buf` is valid for writes of its length for the duration of
            // the call; with MSG_TRUNC the kernel still writes at most `buf.len()` bytes.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), flags) };
            cvt(n).map(|n| n.unsigned_abs())
        })
    }
}

/// Moves the calling thread into a new, empty network namespace
/// (`unshare(CLONE_NEWNET)`), so that a test's links and addresses can never
/// reach the machine's own namespace. The namespace goes away with the thread.
#[cfg(test)]
pub(crate) fn unshare_network_namespace() -> io::Result<()> {
    // SAFETY: unshare(2) with a constant flag; no pointers. CLONE_NEWNET only
    // changes the calling thread's network namespace.
    cvt(unsafe { libc::unshare(libc::CLONE_NEWNET) }).map(drop)
}
