//! `/dev/net/tun`: open, the `TUN*` ioctls, and non-blocking read/write.
//!
//! Everything here is a thin, checked wrapper over one system call. Raw file
//! descriptors enter only through the `unsafe fn` [`TunFd::from_raw_fd`] (for
//! Rust callers) or [`TunFd::adopt`], which checks that the number is an open
//! tun descriptor first (for JavaScript, where ownership passes by number).
use std::ffi::{CStr, CString};
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use crate::{Error, Result};

/// The largest interface name, without the terminating NUL (`IFNAMSIZ - 1`).
pub const IFNAMSIZ_MAX: usize = libc::IFNAMSIZ - 1;

/// `IFF_TUN`: layer-3 device.
pub const IFF_TUN: i16 = libc::IFF_TUN as i16;
/// `IFF_NO_PI`: no 4-byte packet-information prefix.
pub const IFF_NO_PI: i16 = libc::IFF_NO_PI as i16;
/// `IFF_VNET_HDR`: every packet is preceded by a `virtio_net_hdr`.
pub const IFF_VNET_HDR: i16 = libc::IFF_VNET_HDR as i16;
/// `IFF_MULTI_QUEUE`: several file descriptors (queues) on one device.
pub const IFF_MULTI_QUEUE: i16 = libc::IFF_MULTI_QUEUE as i16;
/// `IFF_PERSIST` (read-only, reported by `TUNGETIFF`).
pub const IFF_PERSIST: i16 = libc::IFF_PERSIST as i16;

/// The size of `struct virtio_net_hdr` (without the mergeable-buffers field).
pub const VNET_HDR_LEN: usize = 10;

/// `TUN_F_CSUM`: the peer handles partial checksums.
pub const TUN_F_CSUM: u32 = libc::TUN_F_CSUM;
/// `TUN_F_TSO4`.
pub const TUN_F_TSO4: u32 = libc::TUN_F_TSO4;
/// `TUN_F_TSO6`.
pub const TUN_F_TSO6: u32 = libc::TUN_F_TSO6;
/// `TUN_F_USO4` (Linux >= 6.2, together with USO6).
pub const TUN_F_USO4: u32 = libc::TUN_F_USO4;
/// `TUN_F_USO6`.
pub const TUN_F_USO6: u32 = libc::TUN_F_USO6;

/// `struct ifreq` as the tun ioctls use it: a name and a flags word.
#[repr(C)]
struct IfReqFlags {
    name: [libc::c_char; libc::IFNAMSIZ],
    flags: libc::c_short,
    // The kernel copies a whole `struct ifreq` (40 bytes on 64-bit, 32 on 32-bit).
    _pad: [u8; 24],
}

impl IfReqFlags {
    fn new(name: &str, flags: i16) -> Result<Self> {
        let mut req = IfReqFlags {
            name: [0; libc::IFNAMSIZ],
            flags,
            _pad: [0; 24],
        };
        let bytes = name.as_bytes();
        if bytes.len() > IFNAMSIZ_MAX || bytes.contains(&0) {
            return Err(Error::InvalidArgument(format!(
                "interface name {name:?} must be at most {IFNAMSIZ_MAX} bytes and contain no NUL"
            )));
        }
        for (dst, src) in req.name.iter_mut().zip(bytes) {
            *dst = *src as libc::c_char;
        }
        Ok(req)
    }

    fn name(&self) -> String {
        let bytes: Vec<u8> = self
            .name
            .iter()
            .take_while(|c| **c != 0)
            .map(|c| *c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// Retries `f` while it fails with `EINTR`.
pub fn retry_if_interrupted<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Turns a C return value into an `io::Result`: `-1` becomes the last OS error.
pub fn cvt<T: PartialEq + From<i8>>(ret: T) -> io::Result<T> {
    if ret == T::from(-1) {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// An open `/dev/net/tun` file descriptor (one queue of a device).
///
/// Owns its descriptor: it is closed on drop. Not `Clone`.
#[derive(Debug)]
pub struct TunFd {
    fd: OwnedFd,
}

impl TunFd {
    /// Opens `/dev/net/tun` with `O_RDWR | O_CLOEXEC | O_NONBLOCK`, not yet attached.
    pub fn open_clone_device() -> Result<Self> {
        let path = c"/dev/net/tun";
        let ret = retry_if_interrupted(|| {
            // SAFETY: `path` is a valid NUL-terminated string; open has no other preconditions.
            let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC | libc::O_NONBLOCK) };
            cvt(fd)
        })
        .map_err(|e| Error::sys("open", e))?;
        // SAFETY: open returned a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(ret) };
        Ok(TunFd { fd })
    }

    /// Adopts a raw descriptor (for example one passed by a privileged helper).
    ///
    /// Sets `O_NONBLOCK` and `FD_CLOEXEC` on it.
    ///
    /// # Safety
    /// `fd` must be an open descriptor that the caller owns and hands over:
    /// nothing else may use or close it afterwards.
    pub unsafe fn from_raw_fd(fd: RawFd) -> Result<Self> {
        // SAFETY: the caller guarantees that `fd` is open and owned by us from now on.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let this = TunFd { fd };
        this.set_nonblocking()?;
        Ok(this)
    }

    /// Takes over a descriptor that a caller outside Rust (JavaScript's
    /// `Tun.fromFd`) hands over by number, after checking that it is an open
    /// `/dev/net/tun` descriptor attached to a device. From then on it is
    /// owned here and closed on drop; the caller must not use or close it.
    pub fn adopt(fd: RawFd) -> Result<Self> {
        if fd < 0 {
            return Err(Error::InvalidArgument(format!("fd {fd} is negative")));
        }
        // SAFETY: fstat only writes into `st`, a valid, writable stat buffer; an invalid fd gives EBADF.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        cvt(unsafe { libc::fstat(fd, &mut st) }).map_err(|e| Error::sys("fstat", e))?;
        let is_tun = st.st_mode & libc::S_IFMT == libc::S_IFCHR
            && libc::major(st.st_rdev) == 10
            && libc::minor(st.st_rdev) == 200;
        if !is_tun {
            return Err(Error::InvalidArgument(format!(
                "fd {fd} is not a /dev/net/tun descriptor"
            )));
        }
        // SAFETY: `fd` is open (fstat succeeded) and is a tun descriptor; the caller
        // transfers ownership by the contract of this function.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let this = TunFd { fd };
        this.set_nonblocking()?;
        Ok(this)
    }

    fn set_nonblocking(&self) -> Result<()> {
        let raw = self.fd.as_raw_fd();
        // SAFETY: fcntl on a descriptor we own, with integer arguments only.
        let flags = cvt(unsafe { libc::fcntl(raw, libc::F_GETFL) }).map_err(|e| Error::sys("fcntl", e))?;
        // SAFETY: as above.
        cvt(unsafe { libc::fcntl(raw, libc::F_SETFL, flags | libc::O_NONBLOCK) })
            .map_err(|e| Error::sys("fcntl", e))?;
        // SAFETY: as above.
        cvt(unsafe { libc::fcntl(raw, libc::F_SETFD, libc::FD_CLOEXEC) })
            .map_err(|e| Error::sys("fcntl", e))?;
        Ok(())
    }

    /// `TUNSETIFF`: attaches this descriptor to the device `name` (created if
    /// missing; a pattern like `tun%d` picks a free name), with `flags`.
    /// Returns the name the kernel chose.
    pub fn set_iff(&self, name: &str, flags: i16) -> Result<String> {
        let mut req = IfReqFlags::new(name, flags)?;
        // SAFETY: TUNSETIFF reads and writes one `struct ifreq`; `req` is at least that large and lives across the call.
        cvt(unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::TUNSETIFF, &mut req as *mut IfReqFlags) })
            .map_err(|e| Error::sys("TUNSETIFF", e))?;
        Ok(req.name())
    }

    /// `TUNGETIFF`: the attached device's name and flags.
    pub fn get_iff(&self) -> Result<(String, i16)> {
        let mut req = IfReqFlags::new("", 0)?;
        // SAFETY: TUNGETIFF writes one `struct ifreq` into `req`, which is large enough and lives across the call.
        cvt(unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::TUNGETIFF, &mut req as *mut IfReqFlags) })
            .map_err(|e| Error::sys("TUNGETIFF", e))?;
        Ok((req.name(), req.flags))
    }

    fn ioctl_int(&self, op: &'static str, req: libc::Ioctl, arg: libc::c_ulong) -> Result<()> {
        // SAFETY: these tun ioctls take an integer argument by value, not a pointer.
        cvt(unsafe { libc::ioctl(self.fd.as_raw_fd(), req, arg) }).map_err(|e| Error::sys(op, e))?;
        Ok(())
    }

    /// `TUNSETPERSIST`.
    pub fn set_persist(&self, persist: bool) -> Result<()> {
        self.ioctl_int("TUNSETPERSIST", libc::TUNSETPERSIST, persist as libc::c_ulong)
    }

    /// `TUNSETOWNER`.
    pub fn set_owner(&self, uid: u32) -> Result<()> {
        self.ioctl_int("TUNSETOWNER", libc::TUNSETOWNER, uid as libc::c_ulong)
    }

    /// `TUNSETGROUP`.
    pub fn set_group(&self, gid: u32) -> Result<()> {
        self.ioctl_int("TUNSETGROUP", libc::TUNSETGROUP, gid as libc::c_ulong)
    }

    /// `TUNSETOFFLOAD` with a mask of `TUN_F_*` bits.
    pub fn set_offload(&self, mask: u32) -> Result<()> {
        self.ioctl_int("TUNSETOFFLOAD", libc::TUNSETOFFLOAD, mask as libc::c_ulong)
    }

    /// `TUNSETVNETHDRSZ`.
    pub fn set_vnet_hdr_size(&self, size: i32) -> Result<()> {
        let mut size: libc::c_int = size;
        // SAFETY: TUNSETVNETHDRSZ reads one `int` through the pointer, which is valid across the call.
        cvt(unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                libc::TUNSETVNETHDRSZ,
                &mut size as *mut libc::c_int,
            )
        })
        .map_err(|e| Error::sys("TUNSETVNETHDRSZ", e))?;
        Ok(())
    }

    /// `TUNGETFEATURES`: the `IFF_*` flags this kernel's tun driver supports.
    pub fn features(&self) -> Result<u32> {
        let mut features: libc::c_uint = 0;
        // SAFETY: TUNGETFEATURES writes one `unsigned int` through the pointer, valid across the call.
        cvt(unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                libc::TUNGETFEATURES,
                &mut features as *mut libc::c_uint,
            )
        })
        .map_err(|e| Error::sys("TUNGETFEATURES", e))?;
        Ok(features)
    }

    /// One non-blocking `read()`. `Ok(0)` is not expected from a tun device.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        retry_if_interrupted(|| {
            // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the duration of the call.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            cvt(n).map(|n| n as usize)
        })
    }

    /// One non-blocking `write()` of a whole packet.
    pub fn write(&self, buf: &[u8]) -> io::Result<usize> {
        retry_if_interrupted(|| {
            // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the duration of the call.
            let n = unsafe { libc::write(self.fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
            cvt(n).map(|n| n as usize)
        })
    }

    /// One non-blocking `writev()`: the slices form one packet.
    pub fn writev(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let count = bufs.len().min(libc::UIO_MAXIOV as usize) as libc::c_int;
        retry_if_interrupted(|| {
            // SAFETY: `IoSlice` is ABI-compatible with `struct iovec`; the slices stay borrowed across the call.
            let n = unsafe { libc::writev(self.fd.as_raw_fd(), bufs.as_ptr().cast(), count) };
            cvt(n).map(|n| n as usize)
        })
    }

    /// True if a read would not block right now (`poll` with a zero timeout).
    /// An error or hang-up condition also counts as ready: the next read reports it.
    pub fn poll_readable(&self) -> io::Result<bool> {
        self.poll(libc::POLLIN)
    }

    /// True if a write would not block right now.
    pub fn poll_writable(&self) -> io::Result<bool> {
        self.poll(libc::POLLOUT)
    }

    fn poll(&self, events: libc::c_short) -> io::Result<bool> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events,
            revents: 0,
        };
        let n = retry_if_interrupted(|| {
            // SAFETY: one valid `pollfd`, zero timeout.
            cvt(unsafe { libc::poll(&mut pfd, 1, 0) })
        })?;
        Ok(n > 0 && pfd.revents != 0)
    }
}

impl AsRawFd for TunFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for TunFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// `if_nametoindex`: the interface index of `name` in the calling thread's namespace.
pub fn if_nametoindex(name: &str) -> Result<u32> {
    let c = CString::new(name).map_err(|_| Error::InvalidArgument(format!("bad interface name {name:?}")))?;
    // SAFETY: `c` is a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        return Err(Error::last_os("if_nametoindex"));
    }
    Ok(index)
}

/// `if_indextoname`: the current name of interface `index`.
pub fn if_indextoname(index: u32) -> Result<String> {
    let mut buf = [0 as libc::c_char; libc::IFNAMSIZ];
    // SAFETY: `buf` has room for IFNAMSIZ bytes, as if_indextoname requires.
    let ret = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if ret.is_null() {
        return Err(Error::last_os("if_indextoname"));
    }
    // SAFETY: on success the kernel wrote a NUL-terminated name into `buf`.
    let name = unsafe { CStr::from_ptr(buf.as_ptr()) };
    Ok(name.to_string_lossy().into_owned())
}

/// `uname().release`: the running kernel's version string.
pub fn kernel_release() -> String {
    // SAFETY: utsname is plain old data; zeroed is a valid value.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid, writable utsname.
    if unsafe { libc::uname(&mut u) } != 0 {
        return String::new();
    }
    // SAFETY: uname wrote a NUL-terminated string into `release`.
    let r = unsafe { CStr::from_ptr(u.release.as_ptr()) };
    r.to_string_lossy().into_owned()
}
