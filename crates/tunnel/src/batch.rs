//! Batched reads and writes over a [`Device`].
//!
//! [`Rx::recv`] fills a caller-owned slab with as many complete IP packets as
//! are ready: with the virtio header, each read brings a super-packet that is
//! split ([`crate::gso`]). [`Tx::send`] writes a list of packets: with the
//! virtio header, they are coalesced by flow first ([`crate::gro`]). Both reuse
//! their buffers: nothing is allocated per packet.
//!
//! Error policy: `recv` returns what it moved before an error and reports the
//! error on the next call; `send` returns an error only for what the kernel
//! refused outright (`EINVAL` on a coalesced unit falls back to single packets,
//! and a write that would block moves the rest to a backlog, see [`Tx::flush`]).
use std::io::{self, IoSlice};

use crate::gro::{Gro, GroConfig};
use crate::gso;
use crate::vnet::{self, VnetHdr};
use crate::{Device, Error, Result};

/// The largest frame one read returns without a virtio header.
pub const MAX_PACKET: usize = crate::device::MAX_PACKET;
/// Room for one frame with a virtio header (the kernel's limit is 64 KiB plus headers).
const MAX_FRAME: usize = vnet::LEN + 65535 + 256;

/// Receive-side counters.
#[derive(Debug, Default, Clone, Copy)]
pub struct RxCounters {
    /// Packets delivered.
    pub packets: u64,
    /// Bytes delivered.
    pub bytes: u64,
    /// `read()` calls that returned a frame.
    pub reads: u64,
    /// Frames that were malformed or unsupported, and dropped.
    pub dropped: u64,
}

/// Transmit-side counters.
#[derive(Debug, Default, Clone, Copy)]
pub struct TxCounters {
    /// Packets handed to the kernel.
    pub packets: u64,
    /// Bytes handed to the kernel (IP packets, before coalescing).
    pub bytes: u64,
    /// `write()` calls.
    pub writes: u64,
    /// Coalesced writes the kernel refused with `EINVAL`, written again one packet at a time.
    pub fallbacks: u64,
}

/// Receive state of one queue.
#[derive(Debug)]
pub struct Rx {
    vnet: bool,
    scratch: Vec<u8>,
    /// A frame in `scratch` that did not fit the last slab.
    pending: Option<usize>,
    /// Bytes the pending frame needs once split.
    needs: usize,
    /// Counters since the queue was opened.
    pub counters: RxCounters,
}

impl Rx {
    /// A receiver; `vnet` says whether frames carry a virtio header.
    pub fn new(vnet: bool) -> Self {
        Rx {
            vnet,
            scratch: if vnet { vec![0; MAX_FRAME] } else { Vec::new() },
            pending: None,
            needs: 0,
            counters: RxCounters::default(),
        }
    }

    /// Reads as many packets as are ready and fit into `slab` (end to end),
    /// writing each length to `lens`. Returns the number of packets; `0` means
    /// nothing is ready now, or (see [`Rx::needs_room`]) that the next packets
    /// need a larger slab. Never waits.
    pub fn recv(&mut self, dev: &Device, slab: &mut [u8], lens: &mut [u32]) -> Result<usize> {
        if self.vnet {
            return self.recv_vnet(dev, slab, lens);
        }
        if slab.len() < MAX_PACKET {
            return Err(Error::InvalidArgument(format!(
                "slab of {} bytes is smaller than the largest packet ({MAX_PACKET})",
                slab.len()
            )));
        }
        let mut pos = 0usize;
        let mut count = 0usize;
        while count < lens.len() && slab.len() - pos >= MAX_PACKET {
            match dev.read(&mut slab[pos..]) {
                Ok(0) => break,
                Ok(n) => {
                    self.counters.reads += 1;
                    lens[count] = n as u32;
                    count += 1;
                    pos += n;
                    self.counters.packets += 1;
                    self.counters.bytes += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) if count > 0 => break,
                Err(e) => return Err(Error::sys("read", e)),
            }
        }
        Ok(count)
    }

    /// Reads frames without splitting them, for relays that carry super-packets
    /// whole (`--wire gso`). Each frame lands in `slab` as the wire carries it:
    /// a 4-byte big-endian length, then a virtio header (little-endian fields),
    /// then the packet; `lens` gets each frame's full length (prefix included).
    /// A device without a virtio header yields frames with an all-zero header.
    /// Returns the number of frames; 0 means nothing is ready. Never waits.
    pub fn recv_frames(&mut self, dev: &Device, slab: &mut [u8], lens: &mut [u32]) -> Result<usize> {
        const PREFIX: usize = 4;
        let room_needed = PREFIX + MAX_FRAME;
        if slab.len() < room_needed {
            return Err(Error::InvalidArgument(format!(
                "slab of {} bytes is smaller than one frame ({room_needed})",
                slab.len()
            )));
        }
        let mut pos = 0usize;
        let mut count = 0usize;
        while count < lens.len() && slab.len() - pos >= room_needed {
            let body = pos + PREFIX;
            let pkt_at = if self.vnet { body } else { body + vnet::LEN };
            match dev.read(&mut slab[pkt_at..pos + room_needed]) {
                Ok(0) => break,
                Ok(n) => {
                    self.counters.reads += 1;
                    let frame_len = if self.vnet { n } else { n + vnet::LEN };
                    if !self.vnet {
                        slab[body..body + vnet::LEN].fill(0);
                    }
                    let Some(hdr) = VnetHdr::decode(&slab[body..]) else {
                        self.counters.dropped += 1;
                        continue;
                    };
                    let segments = match gso::plan(&hdr, &slab[body + vnet::LEN..body + frame_len]) {
                        Ok(p) => p.segments,
                        Err(_) => {
                            self.counters.dropped += 1;
                            continue;
                        }
                    };
                    slab[body..body + vnet::LEN].copy_from_slice(&hdr.encode_le());
                    slab[pos..body].copy_from_slice(&(frame_len as u32).to_be_bytes());
                    lens[count] = (PREFIX + frame_len) as u32;
                    count += 1;
                    pos += PREFIX + frame_len;
                    self.counters.packets += segments as u64;
                    self.counters.bytes += (frame_len - vnet::LEN) as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) if count > 0 => break,
                Err(e) => return Err(Error::sys("read", e)),
            }
        }
        Ok(count)
    }

    /// Bytes of slab the next frame needs, when `recv` returned 0 because it did not fit.
    pub fn needs_room(&self) -> Option<usize> {
        self.pending.map(|_| self.needs)
    }

    fn recv_vnet(&mut self, dev: &Device, slab: &mut [u8], lens: &mut [u32]) -> Result<usize> {
        let mut pos = 0usize;
        let mut count = 0usize;
        while count < lens.len() {
            let n = match self.pending.take() {
                Some(n) => n,
                None => match dev.read(&mut self.scratch) {
                    Ok(n) => {
                        self.counters.reads += 1;
                        n
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) if count > 0 => break,
                    Err(e) => return Err(Error::sys("read", e)),
                },
            };
            let frame = &self.scratch[..n];
            let Some(hdr) = VnetHdr::decode(frame) else {
                self.counters.dropped += 1;
                continue;
            };
            let pkt = &frame[vnet::LEN..];
            let plan = match gso::plan(&hdr, pkt) {
                Ok(p) => p,
                Err(_) => {
                    self.counters.dropped += 1;
                    continue;
                }
            };
            if plan.segments > lens.len() {
                // Could never fit one call's lengths array.
                self.counters.dropped += 1;
                continue;
            }
            if plan.segments > lens.len() - count || plan.bytes > slab.len() - pos {
                self.pending = Some(n);
                self.needs = plan.bytes;
                break;
            }
            match gso::split(&hdr, pkt, &mut slab[pos..], &mut lens[count..]) {
                Ok(segs) => {
                    count += segs;
                    pos += plan.bytes;
                    self.counters.packets += segs as u64;
                    self.counters.bytes += plan.bytes as u64;
                }
                Err(_) => self.counters.dropped += 1,
            }
        }
        Ok(count)
    }
}

/// Frames (virtio header + packet) that would have blocked, owned until written.
#[derive(Debug, Default)]
struct Backlog {
    bytes: Vec<u8>,
    /// (start, end, packets carried, IP bytes carried) per frame.
    frames: Vec<(usize, usize, u32, usize)>,
}

impl Backlog {
    fn push(&mut self, hdr: &[u8; vnet::LEN], bytes: &[u8], packets: u32, ip_bytes: usize) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(hdr);
        self.bytes.extend_from_slice(bytes);
        self.frames.push((start, self.bytes.len(), packets, ip_bytes));
    }

    /// Forgets the first `n` frames.
    fn consume(&mut self, n: usize) {
        if n >= self.frames.len() {
            self.bytes.clear();
            self.frames.clear();
            return;
        }
        if n == 0 {
            return;
        }
        let cut = self.frames[n].0;
        self.bytes.drain(..cut);
        self.frames.drain(..n);
        for f in &mut self.frames {
            f.0 -= cut;
            f.1 -= cut;
        }
    }
}

/// Transmit state of one queue.
#[derive(Debug)]
pub struct Tx {
    vnet: bool,
    gro: Gro,
    backlog: Backlog,
    split_buf: Vec<u8>,
    split_lens: Vec<u32>,
    /// Counters since the queue was opened.
    pub counters: TxCounters,
}

const NO_GSO: [u8; vnet::LEN] = [0; vnet::LEN];

/// Writes one frame, or queues it behind the backlog (or when it would block).
#[allow(clippy::too_many_arguments)]
fn write_frame(
    dev: &Device,
    vnet: bool,
    hdr: &[u8; vnet::LEN],
    bytes: &[u8],
    packets: u32,
    ip_bytes: usize,
    backlog: &mut Backlog,
    counters: &mut TxCounters,
) -> io::Result<()> {
    if !backlog.frames.is_empty() {
        backlog.push(hdr, bytes, packets, ip_bytes);
        return Ok(());
    }
    let res = if vnet {
        dev.writev(&[IoSlice::new(hdr), IoSlice::new(bytes)])
    } else {
        dev.write(bytes)
    };
    match res {
        Ok(_) => {
            counters.writes += 1;
            counters.packets += packets as u64;
            counters.bytes += ip_bytes as u64;
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            backlog.push(hdr, bytes, packets, ip_bytes);
            Ok(())
        }
        Err(e) => Err(e),
    }
}

impl Tx {
    /// A transmitter; `vnet` says whether frames carry a virtio header, and
    /// `gro` which protocols may be coalesced (only with a virtio header).
    pub fn new(vnet: bool, gro: GroConfig) -> Self {
        Tx {
            vnet,
            gro: Gro::new(gro),
            backlog: Backlog::default(),
            split_buf: Vec::new(),
            split_lens: Vec::new(),
            counters: TxCounters::default(),
        }
    }

    /// Which protocols are coalesced now (a refused coalesced write turns its protocol off).
    pub fn gro_config(&self) -> GroConfig {
        self.gro.config()
    }

    /// Frames waiting for the device to take them (after a write would have blocked).
    pub fn backlog(&self) -> usize {
        self.backlog.frames.len()
    }

    /// Writes whole packets in order, coalesced by flow where the device
    /// allows. Every packet is accepted: what would block waits in the
    /// backlog ([`Tx::flush`] once the device is writable). Errors are the
    /// kernel's refusals.
    pub fn send(&mut self, dev: &Device, packets: &[&[u8]]) -> Result<usize> {
        self.flush(dev)?;
        let total = packets.len();
        let (backlog, counters) = (&mut self.backlog, &mut self.counters);
        if !self.vnet {
            for (i, p) in packets.iter().enumerate() {
                write_frame(dev, false, &NO_GSO, p, 1, p.len(), backlog, counters)
                    .map_err(|e| send_error(e, i, total))?;
            }
            return Ok(total);
        }
        self.gro.coalesce(packets);
        let mut cfg = self.gro.config();
        let mut done = 0usize;
        for u in self.gro.units(packets) {
            let ip_bytes: usize = u.packets.iter().map(|&i| packets[i as usize].len()).sum();
            let n = u.packets.len();
            let hdr = u.vnet.encode();
            match write_frame(dev, true, &hdr, u.bytes, n as u32, ip_bytes, backlog, counters) {
                Ok(()) => done += n,
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) && n > 1 => {
                    // Some kernels refuse valid GSO writes: never lose the
                    // packets, and stop coalescing that protocol.
                    if u.vnet.gso_type == vnet::GSO_UDP_L4 {
                        cfg.udp = false;
                    } else {
                        cfg.tcp = false;
                    }
                    counters.fallbacks += 1;
                    for &i in u.packets {
                        let p = packets[i as usize];
                        write_frame(dev, true, &NO_GSO, p, 1, p.len(), backlog, counters)
                            .map_err(|e| send_error(e, done, total))?;
                        done += 1;
                    }
                }
                Err(e) => return Err(send_error(e, done, total)),
            }
        }
        self.gro.set_config(cfg);
        Ok(total)
    }

    /// Writes frames as [`Rx::recv_frames`] produces them, without their length
    /// prefix: a virtio header (little-endian fields) and a packet each. All are
    /// checked first; if one is malformed, none is written. A frame whose GSO
    /// type this device does not take (no virtio header, or no TSO/USO) is
    /// split here and written packet by packet; one the kernel refuses with
    /// `EINVAL` likewise.
    pub fn send_frames(
        &mut self,
        dev: &Device,
        frames: &[&[u8]],
        offloads: crate::device::Offloads,
    ) -> Result<usize> {
        for (i, f) in frames.iter().enumerate() {
            let bad = || Error::Malformed {
                what: "frame",
                offset: i,
                len: f.len(),
            };
            let hdr = VnetHdr::decode_le(f).ok_or_else(bad)?;
            gso::plan(&hdr, &f[vnet::LEN..]).map_err(|_| bad())?;
        }
        self.flush(dev)?;
        let (backlog, counters) = (&mut self.backlog, &mut self.counters);
        for f in frames {
            let Some(hdr) = VnetHdr::decode_le(f) else {
                continue;
            };
            let pkt = &f[vnet::LEN..];
            let gso = hdr.gso_type & !vnet::GSO_ECN;
            let takes = self.vnet
                && match gso {
                    vnet::GSO_NONE => true,
                    vnet::GSO_UDP_L4 => offloads.udp,
                    _ => offloads.tcp,
                };
            let segments = gso::plan(&hdr, pkt).map(|p| p.segments).unwrap_or(1);
            if takes {
                match write_frame(
                    dev,
                    true,
                    &hdr.encode(),
                    pkt,
                    segments as u32,
                    pkt.len(),
                    backlog,
                    counters,
                ) {
                    Ok(()) => continue,
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) && gso != vnet::GSO_NONE => {
                        counters.fallbacks += 1;
                    }
                    Err(e) => return Err(Error::sys("write", e)),
                }
            }
            // Split here, and write the packets one by one.
            let plan = gso::plan(&hdr, pkt).map_err(|_| Error::Malformed {
                what: "frame",
                offset: 0,
                len: f.len(),
            })?;
            if self.split_buf.len() < plan.bytes {
                self.split_buf.resize(plan.bytes, 0);
            }
            if self.split_lens.len() < plan.segments {
                self.split_lens.resize(plan.segments, 0);
            }
            let n = gso::split(&hdr, pkt, &mut self.split_buf, &mut self.split_lens).map_err(|_| {
                Error::Malformed {
                    what: "frame",
                    offset: 0,
                    len: f.len(),
                }
            })?;
            let mut at = 0;
            for &len in &self.split_lens[..n] {
                let p = &self.split_buf[at..at + len as usize];
                at += len as usize;
                write_frame(dev, self.vnet, &NO_GSO, p, 1, p.len(), backlog, counters)
                    .map_err(|e| Error::sys("write", e))?;
            }
        }
        Ok(frames.len())
    }

    /// Writes the backlog. Returns the number of frames still waiting.
    pub fn flush(&mut self, dev: &Device) -> Result<usize> {
        let mut written = 0;
        let mut failure = None;
        for &(start, end, packets, ip_bytes) in &self.backlog.frames {
            let frame = &self.backlog.bytes[start..end];
            let res = if self.vnet {
                dev.write(frame)
            } else {
                dev.write(&frame[vnet::LEN..])
            };
            match res {
                Ok(_) => {
                    self.counters.writes += 1;
                    self.counters.packets += packets as u64;
                    self.counters.bytes += ip_bytes as u64;
                    written += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // The refused frame is dropped with the error; the rest stays queued.
                    written += 1;
                    failure = Some(e);
                    break;
                }
            }
        }
        self.backlog.consume(written);
        match failure {
            Some(e) => Err(Error::sys("write", e)),
            None => Ok(self.backlog()),
        }
    }
}

fn send_error(e: io::Error, _done: usize, _total: usize) -> Error {
    // The errno is what callers act on; it stays intact.
    Error::sys("write", e)
}
