//! The Node.js binding: converts options, errors and buffers, nothing more.
//!
//! Data moves through memory that V8 owns (Electron forbids external buffers):
//! JavaScript hands in a slab and a lengths array, Rust reads packets into
//! them on the JS thread with non-blocking calls. Only waiting for readiness
//! happens elsewhere: on the core's poller thread (one `epoll_wait` per
//! process), which posts the event bits to the JS thread through a weak
//! thread-safe function and never holds a JavaScript value.
#![deny(clippy::all)]

use std::sync::Arc;

use napi::bindgen_prelude::*;
use napi::threadsafe_function::ThreadsafeFunctionCallMode;
use napi_derive::napi;
use tunnel::batch::{Rx, Tx};
use tunnel::device::{self, Offloads};
use tunnel::gro::GroConfig;
use tunnel::poller::{Callback, Registration};
use tunnel::rtnl::Netlink;
use tunnel::{Cidr, Device, Error as CoreError, OpenOptions};

/// Turns a core error into a JS error whose `code` the facade decodes:
/// `errno:<n>:<syscall>` for kernel errors, or a Node-style code.
fn to_napi(e: CoreError) -> napi::Error {
    let code = match (&e, e.raw_os_error(), e.syscall()) {
        (_, Some(errno), Some(syscall)) => format!("errno:{errno}:{syscall}"),
        (CoreError::InvalidArgument(_), _, _) => "ERR_INVALID_ARG_VALUE".to_string(),
        (CoreError::Closed, _, _) => "ERR_TUN_CLOSED".to_string(),
        (CoreError::Malformed { what: "packet", .. }, _, _) => "ERR_TUN_INVALID_PACKET".to_string(),
        (CoreError::Malformed { .. }, _, _) => "ERR_TUN_MALFORMED".to_string(),
        _ => "ERR_TUN".to_string(),
    };
    napi::Error::new(Status::GenericFailure, format!("{code}\u{1f}{e}"))
}

fn closed() -> napi::Error {
    to_napi(CoreError::Closed)
}

fn io_err(op: &'static str, e: std::io::Error) -> napi::Error {
    to_napi(CoreError::sys(op, e))
}

/// Options of `NativeTun.open`. Validated by the facade first; checked again here.
#[napi(object)]
#[derive(Default)]
pub struct NativeOpenOptions {
    /// Exact name or a pattern with `%d`; default: the kernel's `tun%d`.
    pub name: Option<String>,
    /// Open with IFF_MULTI_QUEUE. Default false.
    pub multi_queue: Option<bool>,
    /// Make the device persistent. Default false (an existing device's flag is kept).
    pub persist: Option<bool>,
    /// Owner uid (TUNSETOWNER).
    pub owner: Option<u32>,
    /// Owner gid (TUNSETGROUP).
    pub group: Option<u32>,
    /// Use the virtio-net header and segmentation offload. Default true.
    pub offload: Option<bool>,
    /// Coalesce TCP on writes (needs offload). Default true.
    pub coalesce_tcp: Option<bool>,
    /// Coalesce UDP on writes (needs offload and USO). Default true.
    pub coalesce_udp: Option<bool>,
}

/// Counters of one queue. Reads and writes count system calls.
#[napi(object)]
pub struct NativeStats {
    /// Packets delivered to JavaScript.
    pub rx_packets: f64,
    /// Bytes delivered to JavaScript.
    pub rx_bytes: f64,
    /// read() calls that returned data.
    pub rx_reads: f64,
    /// Frames from the kernel that were malformed or unsupported and dropped.
    pub rx_dropped: f64,
    /// Packets handed to the kernel.
    pub tx_packets: f64,
    /// Bytes handed to the kernel.
    pub tx_bytes: f64,
    /// write() calls.
    pub tx_writes: f64,
    /// Coalesced writes the kernel refused, written again packet by packet.
    pub tx_fallbacks: f64,
}

/// What the kernel supports.
#[napi(object)]
pub struct NativeProbe {
    /// /dev/net/tun could be opened.
    pub tun: bool,
    /// Why not.
    pub tun_error: Option<String>,
    /// IFF_VNET_HDR is supported.
    pub vnet_hdr: bool,
    /// TSO4/TSO6 accepted on a probe device.
    pub tcp_offload: bool,
    /// USO4/USO6 accepted on a probe device.
    pub udp_offload: bool,
    /// A device could be created (CAP_NET_ADMIN).
    pub can_create: bool,
    /// uname -r.
    pub kernel: String,
}

/// Offloads the kernel accepted.
#[napi(object)]
pub struct NativeOffload {
    /// TCP segmentation offload.
    pub tcp: bool,
    /// UDP segmentation offload.
    pub udp: bool,
}

struct Shared {
    /// Set by `setWaker`; dropped (deregistered) before the device.
    reg: Option<Registration>,
    dev: Arc<Device>,
}

impl Shared {
    fn dev(&self) -> &Device {
        &self.dev
    }
}

/// One queue of a TUN device. Used by the TypeScript `Tun` class only.
#[napi]
pub struct NativeTun {
    shared: Option<Shared>,
    name: String,
    index: u32,
    offloads: Offloads,
    created: bool,
    rx: Rx,
    tx: Tx,
    lens: Vec<u32>,
}

/// The most packets one `recv` returns.
const MAX_BATCH: usize = 1024;

fn register(dev: Device, offloads: Offloads, gro: GroConfig) -> Result<NativeTun> {
    let vnet = dev.vnet_hdr();
    let name = dev.name().to_string();
    let index = dev.index();
    let created = dev.created();
    Ok(NativeTun {
        shared: Some(Shared {
            reg: None,
            dev: Arc::new(dev),
        }),
        name,
        index,
        offloads,
        created,
        rx: Rx::new(vnet),
        tx: Tx::new(vnet, gro),
        lens: vec![0; MAX_BATCH],
    })
}

#[napi]
impl NativeTun {
    /// Opens (or creates) a device. Synchronous: open(2) and a few ioctls, none of which wait.
    #[napi(factory)]
    pub fn open(options: Option<NativeOpenOptions>) -> Result<NativeTun> {
        let o = options.unwrap_or_default();
        let opts = OpenOptions {
            name: o.name,
            multi_queue: o.multi_queue.unwrap_or(false),
            persist: o.persist.unwrap_or(false),
            owner: o.owner,
            group: o.group,
        };
        let offload = o.offload.unwrap_or(true);
        let dev = Device::open(&opts, offload).map_err(to_napi)?;
        let offloads = dev.negotiate_offload(offload, offload).map_err(to_napi)?;
        let gro = GroConfig {
            tcp: offloads.tcp && o.coalesce_tcp.unwrap_or(true),
            udp: offloads.udp && o.coalesce_udp.unwrap_or(true),
        };
        register(dev, offloads, gro)
    }

    /// Adopts a tun file descriptor opened elsewhere (a privileged helper's).
    /// It must be attached to a tun device with IFF_NO_PI; it is owned (and
    /// closed) by the returned object from now on. `offload` (default true)
    /// asks for segmentation offload where the descriptor has a virtio header;
    /// `coalesceTcp` and `coalesceUdp` (default true) are those of `open`.
    #[napi(factory)]
    pub fn from_fd(
        fd: i32,
        offload: Option<bool>,
        coalesce_tcp: Option<bool>,
        coalesce_udp: Option<bool>,
    ) -> Result<NativeTun> {
        let dev = Device::adopt(fd).map_err(to_napi)?;
        // The offload mask is per device: whatever it was, set it to what is
        // asked and possible (segmentation needs the descriptor's virtio header).
        let on = dev.vnet_hdr() && offload.unwrap_or(true);
        let offloads = dev.negotiate_offload(on, on).map_err(to_napi)?;
        let gro = GroConfig {
            tcp: offloads.tcp && coalesce_tcp.unwrap_or(true),
            udp: offloads.udp && coalesce_udp.unwrap_or(true),
        };
        register(dev, offloads, gro)
    }

    /// Opens another queue of this multi-queue device.
    #[napi]
    pub fn open_queue(&self) -> Result<NativeTun> {
        let shared = self.shared.as_ref().ok_or_else(closed)?;
        let dev = shared.dev().open_queue().map_err(to_napi)?;
        register(dev, self.offloads, self.tx.gro_config())
    }

    /// The interface name.
    #[napi(getter)]
    pub fn name(&self) -> String {
        self.name.clone()
    }

    /// The interface index.
    #[napi(getter)]
    pub fn index(&self) -> u32 {
        self.index
    }

    /// What the kernel accepted.
    #[napi(getter)]
    pub fn offload(&self) -> NativeOffload {
        NativeOffload {
            tcp: self.offloads.tcp,
            udp: self.offloads.udp,
        }
    }

    /// True if this open created the device (it did not exist before).
    #[napi(getter)]
    pub fn created(&self) -> bool {
        self.created
    }

    /// Reads as many packets as are ready and fit, end to end into `slab`,
    /// their lengths into `lens` (native-endian u32 each: read it through a
    /// `Uint32Array` on the same memory). Returns the count; 0 means nothing
    /// is ready (wait with `arm`); a negative number -N means the next
    /// super-packet needs a slab of N bytes. Never waits.
    #[napi]
    pub fn recv(&mut self, mut slab: BufferSlice, mut lens: BufferSlice) -> Result<i64> {
        let shared = self.shared.as_ref().ok_or_else(closed)?;
        let max = (lens.len() / 4).min(self.lens.len());
        let n = self
            .rx
            .recv(shared.dev(), &mut slab, &mut self.lens[..max])
            .map_err(to_napi)?;
        for (dst, len) in lens.chunks_exact_mut(4).zip(&self.lens[..n]) {
            dst.copy_from_slice(&len.to_ne_bytes());
        }
        if n == 0 {
            if let Some(need) = self.rx.needs_room() {
                return Ok(-(need as i64));
            }
        }
        Ok(n as i64)
    }

    /// Reads frames whole (no split), as `--wire gso` carries them: each is a
    /// 4-byte big-endian length, a virtio header (little-endian fields) and a
    /// packet; `lens` gets each frame's length, prefix included. The slab
    /// needs room for one largest frame (65,805 bytes). Returns the count; 0
    /// means nothing is ready. Never waits.
    #[napi]
    pub fn recv_frames(&mut self, mut slab: BufferSlice, mut lens: BufferSlice) -> Result<u32> {
        let shared = self.shared.as_ref().ok_or_else(closed)?;
        let max = (lens.len() / 4).min(self.lens.len());
        let n = self
            .rx
            .recv_frames(shared.dev(), &mut slab, &mut self.lens[..max])
            .map_err(to_napi)?;
        for (dst, len) in lens.chunks_exact_mut(4).zip(&self.lens[..n]) {
            dst.copy_from_slice(&len.to_ne_bytes());
        }
        Ok(n as u32)
    }

    /// Writes frames (virtio header with little-endian fields + packet, no
    /// length prefix). All are checked before any is written; a frame this
    /// device cannot take whole is split and written packet by packet.
    #[napi]
    pub fn send_frames(&mut self, frames: Vec<&[u8]>) -> Result<u32> {
        let shared = self.shared.as_ref().ok_or_else(closed)?;
        let n = self
            .tx
            .send_frames(shared.dev(), &frames, self.offloads)
            .map_err(to_napi)?;
        Ok(n as u32)
    }

    /// Registers this queue with the poller; `waker(events)` is then called
    /// on the JS thread for each report asked for with `arm` (epoll bits:
    /// 0x1 readable, 0x4 writable, 0x8 error, 0x10 hang-up). The waker never
    /// keeps the event loop alive by itself. Once per queue.
    #[napi(ts_args_type = "waker: (events: number) => void")]
    pub fn set_waker(&mut self, waker: Function<u32, ()>) -> Result<()> {
        let shared = self.shared.as_mut().ok_or_else(closed)?;
        if shared.reg.is_some() {
            return Err(to_napi(CoreError::InvalidArgument(
                "the waker is set already".into(),
            )));
        }
        let tsfn = waker
            .build_threadsafe_function::<u32>()
            .callee_handled::<false>()
            .weak::<true>()
            .build()?;
        let cb: Callback = Arc::new(move |events| {
            // Fails only while the environment shuts down: nobody waits then.
            let _ = tsfn.call(events, ThreadsafeFunctionCallMode::NonBlocking);
        });
        let reg = Registration::new(Arc::clone(&shared.dev) as tunnel::poller::Pollable, cb)
            .map_err(|e| io_err("epoll_ctl", e))?;
        shared.reg = Some(reg);
        Ok(())
    }

    /// Asks for one report of `events` (0x1 readable, 0x4 writable; 0
    /// disarms) through the waker. One `epoll_ctl`; never waits.
    #[napi]
    pub fn arm(&self, events: u32) -> Result<()> {
        let reg = self
            .shared
            .as_ref()
            .and_then(|s| s.reg.as_ref())
            .ok_or_else(closed)?;
        reg.arm(events).map_err(|e| io_err("epoll_ctl", e))
    }

    /// Writes whole packets in order, coalesced by flow where the device
    /// allows. All are accepted; what would block waits in a backlog (see
    /// `backlog` and `flush()`). Every packet must be a complete IPv4 or IPv6
    /// packet: the facade checks that before any is written.
    #[napi]
    pub fn send(&mut self, packets: Vec<&[u8]>) -> Result<u32> {
        let shared = self.shared.as_ref().ok_or_else(closed)?;
        let n = self.tx.send(shared.dev(), &packets).map_err(to_napi)?;
        Ok(n as u32)
    }

    /// Writes the IP packets that lie end to end in `chunks` (each a run of
    /// whole packets, as a raw byte stream carries them), coalesced by flow
    /// across all of them, like `send`. Every chunk is walked first: one that
    /// is not whole IPv4/IPv6 packets end to end fails the call
    /// (ERR_TUN_INVALID_PACKET) with nothing written. Returns the packets.
    #[napi]
    pub fn send_packed(&mut self, chunks: Vec<&[u8]>) -> Result<u32> {
        let shared = self.shared.as_ref().ok_or_else(closed)?;
        let n = self.tx.send_packed(shared.dev(), &chunks).map_err(to_napi)?;
        Ok(n as u32)
    }

    /// Frames waiting because a write would have blocked.
    #[napi(getter)]
    pub fn backlog(&self) -> u32 {
        self.tx.backlog() as u32
    }

    /// Writes the backlog; returns how many frames still wait.
    #[napi]
    pub fn flush(&mut self) -> Result<u32> {
        let shared = self.shared.as_ref().ok_or_else(closed)?;
        let n = self.tx.flush(shared.dev()).map_err(to_napi)?;
        Ok(n as u32)
    }

    /// Counters of this queue.
    #[napi]
    pub fn stats(&self) -> NativeStats {
        let (r, t) = (self.rx.counters, self.tx.counters);
        NativeStats {
            rx_packets: r.packets as f64,
            rx_bytes: r.bytes as f64,
            rx_reads: r.reads as f64,
            rx_dropped: r.dropped as f64,
            tx_packets: t.packets as f64,
            tx_bytes: t.bytes as f64,
            tx_writes: t.writes as f64,
            tx_fallbacks: t.fallbacks as f64,
        }
    }

    /// TUNSETPERSIST.
    #[napi]
    pub fn set_persist(&mut self, persist: bool) -> Result<()> {
        let shared = self.shared.as_ref().ok_or_else(closed)?;
        shared.dev().set_persist(persist).map_err(to_napi)
    }

    /// Closes this queue: deregisters it from the poller (no report comes
    /// after this) and closes the descriptor. Idempotent.
    #[napi]
    pub fn close(&mut self) {
        self.shared = None;
    }
}

/// Runs a netlink request on a blocking thread (the kernel answers at once,
/// but the JS thread never waits on a socket).
async fn netlink<T: Send + 'static>(
    f: impl FnOnce(&mut Netlink) -> tunnel::Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(move || {
        let mut nl = Netlink::open()?;
        f(&mut nl)
    })
    .await
    .map_err(|e| napi::Error::from_reason(format!("ERR_TUN\u{1f}netlink task failed: {e}")))?
    .map_err(to_napi)
}

fn parse_cidr(s: &str) -> Result<Cidr> {
    s.parse::<Cidr>().map_err(to_napi)
}

/// Adds an address (CIDR) to interface `index`.
#[napi]
pub async fn link_add_address(index: u32, cidr: String) -> Result<()> {
    let c = parse_cidr(&cidr)?;
    netlink(move |nl| nl.add_address(index, &c)).await
}

/// Removes an address (CIDR) from interface `index`.
#[napi]
pub async fn link_remove_address(index: u32, cidr: String) -> Result<()> {
    let c = parse_cidr(&cidr)?;
    netlink(move |nl| nl.remove_address(index, &c)).await
}

/// Routes `cidr` through interface `index`.
#[napi]
pub async fn link_add_route(index: u32, cidr: String) -> Result<()> {
    let c = parse_cidr(&cidr)?;
    netlink(move |nl| nl.add_route(index, &c)).await
}

/// Removes the route `cidr` through interface `index`.
#[napi]
pub async fn link_remove_route(index: u32, cidr: String) -> Result<()> {
    let c = parse_cidr(&cidr)?;
    netlink(move |nl| nl.remove_route(index, &c)).await
}

/// Sets the MTU of interface `index`.
#[napi]
pub async fn link_set_mtu(index: u32, mtu: u32) -> Result<()> {
    netlink(move |nl| nl.set_mtu(index, mtu)).await
}

/// Sets interface `index` up or down.
#[napi]
pub async fn link_set_up(index: u32, up: bool) -> Result<()> {
    netlink(move |nl| nl.set_up(index, up)).await
}

/// The MTU of interface `index`, read synchronously (one netlink round trip, no waiting).
#[napi]
pub fn link_get_mtu_sync(index: u32) -> Result<u32> {
    let mut nl = Netlink::open().map_err(to_napi)?;
    nl.link(index).map(|l| l.mtu).map_err(to_napi)
}

/// The MTU of interface `index`.
#[napi]
pub async fn link_get_mtu(index: u32) -> Result<u32> {
    netlink(move |nl| nl.link(index).map(|l| l.mtu)).await
}

/// What this kernel and process can do with tun devices.
#[napi]
pub fn probe() -> NativeProbe {
    let p = device::probe();
    NativeProbe {
        tun: p.tun,
        tun_error: p.tun_error,
        vnet_hdr: p.vnet_hdr,
        tcp_offload: p.tcp_offload,
        udp_offload: p.udp_offload,
        can_create: p.can_create,
        kernel: p.kernel,
    }
}
