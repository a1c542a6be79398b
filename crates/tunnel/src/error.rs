//! The core's error type.
//!
//! Every error that comes from the kernel keeps its `io::Error` (and so its
//! errno) and names the operation that failed, so the binding can report
//! `code`, `errno` and `syscall` to JavaScript.
use std::io;

/// A result with the core's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A system call or ioctl failed. `op` is its name (`open`, `TUNSETIFF`, ...).
    #[error("{op}: {source}")]
    Sys {
        /// The system call or ioctl that failed.
        op: &'static str,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// The kernel answered an rtnetlink request with an error.
    #[error("netlink {op}: {source}")]
    Netlink {
        /// The request (`RTM_NEWADDR`, ...).
        op: &'static str,
        /// The errno the kernel answered, as an `io::Error`.
        #[source]
        source: io::Error,
    },
    /// An argument was out of range or malformed.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The device was closed.
    #[error("device is closed")]
    Closed,
    /// Bytes that are not what they claim to be (a packet, a netlink reply, a virtio header).
    #[error("malformed {what} (offset {offset}, length {len})")]
    Malformed {
        /// What was being parsed.
        what: &'static str,
        /// Where the problem is.
        offset: usize,
        /// The length of the input.
        len: usize,
    },
}

impl Error {
    /// Wraps the last OS error for the operation `op`.
    pub fn last_os(op: &'static str) -> Self {
        Error::Sys {
            op,
            source: io::Error::last_os_error(),
        }
    }

    /// Wraps an `io::Error` for the operation `op`.
    pub fn sys(op: &'static str, source: io::Error) -> Self {
        Error::Sys { op, source }
    }

    /// The errno behind this error, if the kernel produced it.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Sys { source, .. } | Error::Netlink { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    /// The failing system call or request, if any.
    pub fn syscall(&self) -> Option<&'static str> {
        match self {
            Error::Sys { op, .. } | Error::Netlink { op, .. } => Some(op),
            _ => None,
        }
    }

    /// True for `EAGAIN`/`EWOULDBLOCK`.
    pub fn is_would_block(&self) -> bool {
        matches!(self, Error::Sys { source, .. } if source.kind() == io::ErrorKind::WouldBlock)
    }
}
