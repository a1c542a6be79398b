//! The synchronous device: one queue (file descriptor) of a TUN interface.
//!
//! All I/O is non-blocking: a read or write that would block returns
//! `WouldBlock` (or an empty batch), and the caller waits for readiness with
//! the reactor (feature `tokio`) or its own poller.
//!
//! Error policy: every method returns the kernel's errno wrapped in
//! [`Error::Sys`] with the failing call named; nothing here panics on what
//! the kernel or the caller hands in.
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use crate::sys::tun::{self, TunFd, IFF_MULTI_QUEUE, IFF_NO_PI, IFF_PERSIST, IFF_TUN, IFF_VNET_HDR};
use crate::{Error, Result};

/// The largest packet a read without a virtio header can return.
pub const MAX_PACKET: usize = 65535;

/// How to open a device.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// An exact name (`vpn0`), a pattern (`vpn%d`), or `None` for the kernel's `tun%d`.
    pub name: Option<String>,
    /// Open with `IFF_MULTI_QUEUE`, so that [`Device::open_queue`] can add queues.
    pub multi_queue: bool,
    /// Make the device persistent (`TUNSETPERSIST 1`). `false` leaves an
    /// existing device's persist flag as it is: it never clears it.
    pub persist: bool,
    /// `TUNSETOWNER`: the uid allowed to attach without `CAP_NET_ADMIN`.
    pub owner: Option<u32>,
    /// `TUNSETGROUP`: the gid allowed to attach without `CAP_NET_ADMIN`.
    pub group: Option<u32>,
}

/// What segmentation offload the kernel accepted for a device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offloads {
    /// TSO4 and TSO6: reads may return TCP super-packets, writes may carry them.
    pub tcp: bool,
    /// USO4 and USO6 (Linux >= 6.2): the same for UDP.
    pub udp: bool,
}

/// One queue of a TUN device.
#[derive(Debug)]
pub struct Device {
    fd: TunFd,
    name: String,
    index: u32,
    flags: i16,
    created: bool,
}

/// Checks an interface name or pattern before it reaches the kernel.
pub fn validate_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > tun::IFNAMSIZ_MAX {
        return Err(Error::InvalidArgument(format!(
            "interface name {name:?} must be 1 to {} bytes",
            tun::IFNAMSIZ_MAX
        )));
    }
    if name == "."
        || name == ".."
        || name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0)
    {
        return Err(Error::InvalidArgument(format!(
            "interface name {name:?} must not contain '/', ':', white space or NUL, nor be '.' or '..'"
        )));
    }
    if name.matches('%').count() > 1 || (name.contains('%') && !name.contains("%d")) {
        return Err(Error::InvalidArgument(format!(
            "interface name pattern {name:?} may contain one '%d' and no other '%'"
        )));
    }
    Ok(())
}

impl Device {
    /// Opens (and, if missing, creates) a TUN device with `IFF_TUN | IFF_NO_PI`.
    ///
    /// `vnet_hdr` asks for `IFF_VNET_HDR`: every read and write then carries a
    /// 10-byte `virtio_net_hdr` first (see [`crate::vnet`]).
    pub fn open(opts: &OpenOptions, vnet_hdr: bool) -> Result<Device> {
        let name = opts.name.as_deref().unwrap_or("");
        if !name.is_empty() {
            validate_name(name)?;
        }
        let existed = !name.is_empty() && !name.contains('%') && tun::if_nametoindex(name).is_ok();
        let mut flags = IFF_TUN | IFF_NO_PI;
        if vnet_hdr {
            flags |= IFF_VNET_HDR;
        }
        if opts.multi_queue {
            flags |= IFF_MULTI_QUEUE;
        }
        let fd = TunFd::open_clone_device()?;
        let name = fd.set_iff(name, flags)?;
        // From here on, dropping `fd` removes a device we created (unless persistent).
        if let Some(uid) = opts.owner {
            fd.set_owner(uid)?;
        }
        if let Some(gid) = opts.group {
            fd.set_group(gid)?;
        }
        if vnet_hdr {
            fd.set_vnet_hdr_size(tun::VNET_HDR_LEN as i32)?;
        } else {
            // The offload mask is per device and survives on persistent devices: clear it.
            fd.set_offload(0)?;
        }
        let index = tun::if_nametoindex(&name)?;
        let (_, got) = fd.get_iff()?;
        let dev = Device {
            fd,
            name,
            index,
            flags: got,
            created: !existed,
        };
        if opts.persist {
            dev.set_persist(true)?;
        }
        Ok(dev)
    }

    /// Adopts a tun descriptor opened elsewhere (for example by a privileged
    /// helper that passed it over a Unix socket or as an inherited fd). It must
    /// be attached to a tun device with `IFF_NO_PI` (`TUNSETIFF` done). The
    /// descriptor is checked ([`TunFd::adopt`]) and owned from then on.
    pub fn adopt(fd: RawFd) -> Result<Device> {
        let fd = TunFd::adopt(fd)?;
        let (name, flags) = fd.get_iff().map_err(|e| match e.raw_os_error() {
            Some(libc::EBADFD) => {
                Error::InvalidArgument("the tun descriptor is not attached to a device".into())
            }
            _ => e,
        })?;
        if flags & IFF_TUN == 0 || flags & IFF_NO_PI == 0 {
            return Err(Error::InvalidArgument(format!(
                "descriptor is attached to {name:?} with flags {flags:#x}: need a tun device with IFF_NO_PI"
            )));
        }
        let index = tun::if_nametoindex(&name)?;
        Ok(Device {
            fd,
            name,
            index,
            flags,
            created: false,
        })
    }

    /// Opens one more queue of this multi-queue device. The new queue keeps the
    /// device's existing flags (read back with `TUNGETIFF`).
    pub fn open_queue(&self) -> Result<Device> {
        if self.flags & IFF_MULTI_QUEUE == 0 {
            return Err(Error::InvalidArgument(
                "the device was not opened with multiQueue: true".to_string(),
            ));
        }
        let (name, flags) = self.fd.get_iff()?;
        let flags = flags & !IFF_PERSIST;
        let fd = TunFd::open_clone_device()?;
        let name = fd.set_iff(&name, flags)?;
        let (_, got) = fd.get_iff()?;
        Ok(Device {
            fd,
            name,
            index: self.index,
            flags: got,
            created: false,
        })
    }

    /// The interface name the kernel gave the device.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The interface index.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// True if reads and writes carry a `virtio_net_hdr`.
    pub fn vnet_hdr(&self) -> bool {
        self.flags & IFF_VNET_HDR != 0
    }

    /// True for a multi-queue device.
    pub fn multi_queue(&self) -> bool {
        self.flags & IFF_MULTI_QUEUE != 0
    }

    /// True if this open created the device (it did not exist before).
    pub fn created(&self) -> bool {
        self.created
    }

    /// True if the device is persistent (as the kernel reports it now).
    pub fn persistent(&self) -> Result<bool> {
        Ok(self.fd.get_iff()?.1 & IFF_PERSIST != 0)
    }

    /// `TUNSETPERSIST`.
    pub fn set_persist(&self, persist: bool) -> Result<()> {
        self.fd.set_persist(persist)
    }

    /// `TUNSETOFFLOAD` with a mask of `TUN_F_*` bits.
    pub fn set_offload(&self, mask: u32) -> Result<()> {
        self.fd.set_offload(mask)
    }

    /// Negotiates segmentation offload with the kernel (`TUNSETOFFLOAD`) and
    /// reports what it accepted. `CSUM|TSO4|TSO6` for TCP; `USO4|USO6` for UDP
    /// where the kernel has them (>= 6.2), found by trying: `EINVAL` means
    /// unsupported. Needs a device opened with a virtio header.
    pub fn negotiate_offload(&self, tcp: bool, udp: bool) -> Result<Offloads> {
        use crate::sys::tun::{TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_USO4, TUN_F_USO6};
        if !self.vnet_hdr() || !(tcp || udp) {
            self.fd.set_offload(0)?;
            return Ok(Offloads::default());
        }
        let tcp_mask = if tcp { TUN_F_TSO4 | TUN_F_TSO6 } else { 0 };
        if udp {
            match self
                .fd
                .set_offload(TUN_F_CSUM | tcp_mask | TUN_F_USO4 | TUN_F_USO6)
            {
                Ok(()) => return Ok(Offloads { tcp, udp: true }),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                Err(e) => return Err(e),
            }
        }
        self.fd.set_offload(TUN_F_CSUM | tcp_mask)?;
        Ok(Offloads { tcp, udp: false })
    }

    /// One non-blocking read of one frame (with its virtio header if enabled).
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.fd.read(buf)
    }

    /// One non-blocking write of one frame.
    pub fn write(&self, buf: &[u8]) -> io::Result<usize> {
        self.fd.write(buf)
    }

    /// One non-blocking gathered write of one frame.
    pub fn writev(&self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.fd.writev(bufs)
    }

    /// True if a read would not block now.
    pub fn poll_readable(&self) -> io::Result<bool> {
        self.fd.poll_readable()
    }

    /// True if a write would not block now.
    pub fn poll_writable(&self) -> io::Result<bool> {
        self.fd.poll_writable()
    }
}

impl AsRawFd for Device {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for Device {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// What this kernel and this process can do with TUN devices.
#[derive(Debug, Clone, Default)]
pub struct Probe {
    /// `/dev/net/tun` could be opened.
    pub tun: bool,
    /// Why not, if it could not (`open: No such file or directory`, ...).
    pub tun_error: Option<String>,
    /// The tun driver supports `IFF_VNET_HDR`.
    pub vnet_hdr: bool,
    /// TCP segmentation offload (TSO4/TSO6) was accepted on a probe device.
    /// False when this process may not create a device (no `CAP_NET_ADMIN`).
    pub tcp_offload: bool,
    /// UDP segmentation offload (USO4/USO6, Linux >= 6.2) was accepted.
    pub udp_offload: bool,
    /// A probe device could be created (this process has `CAP_NET_ADMIN`).
    pub can_create: bool,
    /// The running kernel's release (`uname -r`).
    pub kernel: String,
}

/// Finds out what this kernel supports, by trying. Creating the probe device
/// needs `CAP_NET_ADMIN`; without it, the offload fields stay false. The probe
/// device (named `tgsoprobe%d`) exists only for the duration of the call.
pub fn probe() -> Probe {
    let mut p = Probe {
        kernel: tun::kernel_release(),
        ..Probe::default()
    };
    let fd = match TunFd::open_clone_device() {
        Ok(fd) => fd,
        Err(e) => {
            p.tun_error = Some(e.to_string());
            return p;
        }
    };
    p.tun = true;
    if let Ok(features) = fd.features() {
        p.vnet_hdr = features & (IFF_VNET_HDR as u16 as u32) != 0;
    }
    drop(fd);
    let opts = OpenOptions {
        name: Some("tgsoprobe%d".to_string()),
        ..OpenOptions::default()
    };
    if let Ok(dev) = Device::open(&opts, p.vnet_hdr) {
        p.can_create = true;
        if let Ok(off) = dev.negotiate_offload(true, true) {
            p.tcp_offload = off.tcp;
            p.udp_offload = off.udp;
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["tun0", "vpn%d", "a", "abcdefghijklmno"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "abcdefghijklmnop",
            "a/b",
            "a b",
            "a:b",
            ".",
            "..",
            "a%d%d",
            "a%s",
            "a\0b",
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }
}
