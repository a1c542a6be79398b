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

use crate::gro::{self, Gro, GroConfig};
use crate::gso;
use crate::vnet::{self, VnetHdr};
use crate::{Device, Error, Result};

/// The system calls batched I/O makes on a queue: a trait so that the tests
/// can script the kernel's answers (short frames, `EAGAIN`, `EINVAL`).
trait Io {
    fn read(&self, buf: &mut [u8]) -> io::Result<usize>;
    fn write(&self, buf: &[u8]) -> io::Result<usize>;
    fn writev(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
}

impl Io for Device {
    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        Device::read(self, buf)
    }
    fn write(&self, buf: &[u8]) -> io::Result<usize> {
        Device::write(self, buf)
    }
    fn writev(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        Device::writev(self, bufs)
    }
}

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
        self.recv_io(dev, slab, lens)
    }

    fn recv_io(&mut self, dev: &impl Io, slab: &mut [u8], lens: &mut [u32]) -> Result<usize> {
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

    fn recv_vnet(&mut self, dev: &impl Io, slab: &mut [u8], lens: &mut [u32]) -> Result<usize> {
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
    /// Queues a frame: `hdr`, then the packet gathered from `parts`.
    fn push<'p>(
        &mut self,
        hdr: &[u8; vnet::LEN],
        parts: impl IntoIterator<Item = &'p [u8]>,
        packets: u32,
        ip_bytes: usize,
    ) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(hdr);
        for p in parts {
            self.bytes.extend_from_slice(p);
        }
        self.frames.push((start, self.bytes.len(), packets, ip_bytes));
    }

    /// Replaces frame `i` by the packets laid end to end in `buf` (lengths
    /// `lens`), each with a `GSO_NONE` header, in order. Only for the `EINVAL`
    /// fallback: it may allocate.
    fn replace(&mut self, i: usize, buf: &[u8], lens: &[u32]) {
        let (start, end, _, _) = self.frames[i];
        let added: usize = lens.iter().map(|&l| vnet::LEN + l as usize).sum();
        for f in &mut self.frames[i + 1..] {
            f.0 = f.0 - (end - start) + added;
            f.1 = f.1 - (end - start) + added;
        }
        let mut at = 0;
        let bytes = lens.iter().flat_map(|&l| {
            let p = &buf[at..at + l as usize];
            at += l as usize;
            NO_GSO.iter().chain(p).copied()
        });
        self.bytes.splice(start..end, bytes);
        let mut pos = start;
        let frames = lens.iter().map(|&l| {
            let f = (pos, pos + vnet::LEN + l as usize, 1, l as usize);
            pos = f.1;
            f
        });
        self.frames.splice(i..i + 1, frames);
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

/// The most slices one frame is gathered from: the virtio header, a
/// super-packet's headers, and one payload per segment.
const MAX_IOV: usize = 2 + if gro::MAX_TCP_SEGMENTS > gro::MAX_UDP_SEGMENTS {
    gro::MAX_TCP_SEGMENTS
} else {
    gro::MAX_UDP_SEGMENTS
};

/// Writes one frame, the packet gathered from `parts` (one `writev`, no copy),
/// or queues it behind the backlog (or when it would block).
#[allow(clippy::too_many_arguments)]
fn write_frame<'p>(
    dev: &impl Io,
    vnet: bool,
    hdr: &[u8; vnet::LEN],
    parts: impl Iterator<Item = &'p [u8]> + Clone,
    packets: u32,
    ip_bytes: usize,
    backlog: &mut Backlog,
    counters: &mut TxCounters,
) -> io::Result<()> {
    if !backlog.frames.is_empty() {
        backlog.push(hdr, parts, packets, ip_bytes);
        return Ok(());
    }
    let mut iov = [IoSlice::new(&[]); MAX_IOV];
    let mut n = 0;
    if vnet {
        iov[0] = IoSlice::new(hdr);
        n = 1;
    }
    let mut fits = true;
    for p in parts.clone() {
        match iov.get_mut(n) {
            Some(slot) => *slot = IoSlice::new(p),
            None => fits = false,
        }
        n += 1;
    }
    if !fits {
        // More slices than any unit has (cannot happen for what Gro builds):
        // written from a contiguous copy rather than refused.
        let whole: Vec<u8> = parts.flatten().copied().collect();
        let one = std::iter::once(&whole[..]);
        return write_frame(dev, vnet, hdr, one, packets, ip_bytes, backlog, counters);
    }
    let res = if n == 1 && !vnet {
        dev.write(&iov[0])
    } else {
        dev.writev(&iov[..n])
    };
    match res {
        Ok(_) => {
            counters.writes += 1;
            counters.packets += packets as u64;
            counters.bytes += ip_bytes as u64;
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            backlog.push(hdr, parts, packets, ip_bytes);
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
        self.send_io(dev, packets)
    }

    /// Writes the IP packets that lie end to end in `chunks` (each chunk a
    /// run of whole packets, as a raw byte stream carries them), like
    /// [`Tx::send`]: coalesced by flow across all chunks. Every chunk is
    /// walked first: if one is not whole IPv4/IPv6 packets end to end, nothing
    /// is written and the error says where. Returns the number of packets.
    pub fn send_packed(&mut self, dev: &Device, chunks: &[&[u8]]) -> Result<usize> {
        let packets = packed(chunks)?;
        self.send_io(dev, &packets)
    }

    fn send_io(&mut self, dev: &impl Io, packets: &[&[u8]]) -> Result<usize> {
        self.flush_io(dev)?;
        let total = packets.len();
        let (backlog, counters) = (&mut self.backlog, &mut self.counters);
        if !self.vnet {
            for (i, p) in packets.iter().enumerate() {
                write_frame(
                    dev,
                    false,
                    &NO_GSO,
                    std::iter::once(*p),
                    1,
                    p.len(),
                    backlog,
                    counters,
                )
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
            match write_frame(dev, true, &hdr, u.parts(), n as u32, ip_bytes, backlog, counters) {
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
                        write_frame(
                            dev,
                            true,
                            &NO_GSO,
                            std::iter::once(p),
                            1,
                            p.len(),
                            backlog,
                            counters,
                        )
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
        self.send_frames_io(dev, frames, offloads)
    }

    fn send_frames_io(
        &mut self,
        dev: &impl Io,
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
        self.flush_io(dev)?;
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
                    std::iter::once(pkt),
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
                write_frame(
                    dev,
                    self.vnet,
                    &NO_GSO,
                    std::iter::once(p),
                    1,
                    p.len(),
                    backlog,
                    counters,
                )
                .map_err(|e| Error::sys("write", e))?;
            }
        }
        Ok(frames.len())
    }

    /// Writes the backlog. Returns the number of frames still waiting.
    ///
    /// A coalesced frame the kernel refuses with `EINVAL` is split into its
    /// packets, which take its place at the front of the backlog and are
    /// written one by one, as on the direct path: nothing is lost, and that
    /// protocol is not coalesced any more. Any other refusal drops the refused
    /// frame and returns the error; the rest stays queued.
    pub fn flush(&mut self, dev: &Device) -> Result<usize> {
        self.flush_io(dev)
    }

    fn flush_io(&mut self, dev: &impl Io) -> Result<usize> {
        let mut written = 0;
        let mut failure = None;
        while let Some(&(start, end, packets, ip_bytes)) = self.backlog.frames.get(written) {
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
                Err(e)
                    if e.raw_os_error() == Some(libc::EINVAL) && self.vnet && frame[1] != vnet::GSO_NONE =>
                {
                    let gso = frame[1] & !vnet::GSO_ECN;
                    if !split_queued(
                        &mut self.backlog,
                        written,
                        &mut self.split_buf,
                        &mut self.split_lens,
                    ) {
                        // Not splittable (cannot happen for what this queue built): dropped, reported.
                        written += 1;
                        failure = Some(e);
                        break;
                    }
                    self.counters.fallbacks += 1;
                    let mut cfg = self.gro.config();
                    if gso == vnet::GSO_UDP_L4 {
                        cfg.udp = false;
                    } else {
                        cfg.tcp = false;
                    }
                    self.gro.set_config(cfg);
                }
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

/// Splits queued frame `i` (a virtio header, native-endian, and a
/// super-packet) into its packets, each queued in its place with a `GSO_NONE`
/// header, in order. `buf` and `lens` are scratch space, grown as needed.
/// False (and nothing changed) if the frame does not split.
fn split_queued(backlog: &mut Backlog, i: usize, buf: &mut Vec<u8>, lens: &mut Vec<u32>) -> bool {
    let Some(&(start, end, _, _)) = backlog.frames.get(i) else {
        return false;
    };
    let frame = &backlog.bytes[start..end];
    let Some(hdr) = VnetHdr::decode(frame) else {
        return false;
    };
    let pkt = &frame[vnet::LEN..];
    let Ok(plan) = gso::plan(&hdr, pkt) else {
        return false;
    };
    if buf.len() < plan.bytes {
        buf.resize(plan.bytes, 0);
    }
    if lens.len() < plan.segments {
        lens.resize(plan.segments, 0);
    }
    let Ok(n) = gso::split(&hdr, pkt, buf, lens) else {
        return false;
    };
    backlog.replace(i, buf, &lens[..n]);
    true
}

/// The packets of `chunks`, each a run of whole IP packets end to end (one
/// list per call, not an allocation per packet).
fn packed<'a>(chunks: &[&'a [u8]]) -> Result<Vec<&'a [u8]>> {
    let bytes: usize = chunks.iter().map(|c| c.len()).sum();
    // Typical packets are MTU-sized: room for that many, grown if smaller.
    let mut packets = Vec::with_capacity(bytes / 1280 + chunks.len());
    for chunk in chunks {
        let mut pos = 0usize;
        while pos < chunk.len() {
            let rest = &chunk[pos..];
            match crate::packet::ip_packet_len(rest) {
                Ok(Some(len)) if len <= rest.len() => {
                    packets.push(&rest[..len]);
                    pos += len;
                }
                _ => {
                    return Err(Error::Malformed {
                        what: "packet",
                        offset: pos,
                        len: chunk.len(),
                    })
                }
            }
        }
    }
    Ok(packets)
}

fn send_error(e: io::Error, _done: usize, _total: usize) -> Error {
    // The errno is what callers act on; it stays intact.
    Error::sys("write", e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{checksums_valid, payload, Spec};
    use std::cell::RefCell;
    use std::collections::VecDeque;

    #[test]
    fn packed_walks_runs_of_whole_packets() {
        let a = Spec::udp4().build(b"one");
        let b = Spec::tcp6().build(b"two two");
        let c = Spec::udp4().build(&[7u8; 1000]);
        let run1 = [a.clone(), b.clone()].concat();
        let run2 = c.clone();
        let got = packed(&[&run1, &run2]).unwrap();
        assert_eq!(got, vec![&a[..], &b[..], &c[..]]);
        assert!(packed(&[]).unwrap().is_empty());
        // A run that ends inside a packet, or holds bytes that are not IP, is refused whole.
        let cut = &run1[..run1.len() - 1];
        assert!(
            matches!(packed(&[cut]), Err(Error::Malformed { what: "packet", offset, .. }) if offset == a.len())
        );
        let junk = [a.clone(), vec![0x10; 30]].concat();
        assert!(matches!(
            packed(&[&run2, &junk]),
            Err(Error::Malformed { what: "packet", .. })
        ));
        let short_v4 = [0x45u8, 0, 0, 10];
        assert!(packed(&[&short_v4]).is_err());
    }

    type Answer = Box<dyn FnMut(&[u8]) -> Option<i32>>;

    /// A scripted queue: reads return `reads` in turn (then `EAGAIN`); each
    /// write is shown to `answer`, which refuses it with an errno or lets it
    /// through, and what goes through is kept in `written` (with the number
    /// of slices each came in: 1 for `write`, in `slices`).
    struct Fake {
        reads: RefCell<VecDeque<Vec<u8>>>,
        answer: RefCell<Answer>,
        written: RefCell<Vec<Vec<u8>>>,
        slices: RefCell<Vec<usize>>,
    }

    impl Fake {
        fn new(answer: impl FnMut(&[u8]) -> Option<i32> + 'static) -> Fake {
            Fake {
                reads: RefCell::new(VecDeque::new()),
                answer: RefCell::new(Box::new(answer)),
                written: RefCell::new(Vec::new()),
                slices: RefCell::new(Vec::new()),
            }
        }

        fn take(&self, frame: Vec<u8>) -> io::Result<usize> {
            if let Some(errno) = (self.answer.borrow_mut())(&frame) {
                return Err(io::Error::from_raw_os_error(errno));
            }
            let n = frame.len();
            self.written.borrow_mut().push(frame);
            Ok(n)
        }
    }

    impl Io for Fake {
        fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
            let Some(f) = self.reads.borrow_mut().pop_front() else {
                return Err(io::Error::from_raw_os_error(libc::EAGAIN));
            };
            let n = f.len().min(buf.len());
            buf[..n].copy_from_slice(&f[..n]);
            Ok(n)
        }
        fn write(&self, buf: &[u8]) -> io::Result<usize> {
            self.slices.borrow_mut().push(1);
            self.take(buf.to_vec())
        }
        fn writev(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.slices.borrow_mut().push(bufs.len());
            self.take(bufs.iter().flat_map(|b| b.iter().copied()).collect())
        }
    }

    fn is_gso(frame: &[u8]) -> bool {
        frame[1] != vnet::GSO_NONE
    }

    /// 10 UDP datagrams of one flow, then 5 TCP segments of another: two units.
    fn two_flows() -> Vec<Vec<u8>> {
        let mut v: Vec<Vec<u8>> = (0..10).map(|i| Spec::udp4().build(&payload(1000, i))).collect();
        v.extend((0..5).map(|i| Spec::tcp4().seq(1 + i * 1000).build(&payload(1000, i as u8))));
        v
    }

    /// The IP packets of what went through, each with a `GSO_NONE` header
    /// (asserted), IPv4 ID and header checksum zeroed.
    fn singles(written: &[Vec<u8>]) -> Vec<Vec<u8>> {
        written
            .iter()
            .map(|f| {
                assert_eq!(&f[..vnet::LEN], &NO_GSO, "one packet per write");
                let mut p = f[vnet::LEN..].to_vec();
                assert!(checksums_valid(&p));
                p[4..6].copy_from_slice(&[0, 0]);
                p[10..12].copy_from_slice(&[0, 0]);
                p
            })
            .collect()
    }

    fn without_id(packets: &[Vec<u8>]) -> Vec<Vec<u8>> {
        singles(
            &packets
                .iter()
                .map(|p| [&NO_GSO[..], p].concat())
                .collect::<Vec<_>>(),
        )
    }

    const ALL: GroConfig = GroConfig { tcp: true, udp: true };

    #[test]
    fn a_coalesced_unit_is_one_gathered_write_of_headers_and_payloads() {
        // The super-packet is never built: one writev of the virtio header,
        // the head's fixed-up headers and each member's payload in place;
        // what the device receives is the super-packet all the same.
        let dev = Fake::new(|_| None);
        let packets = two_flows();
        let refs: Vec<&[u8]> = packets.iter().map(|p| p.as_slice()).collect();
        let mut tx = Tx::new(true, ALL);
        assert_eq!(tx.send_io(&dev, &refs).unwrap(), 15);
        assert_eq!(*dev.slices.borrow(), vec![2 + 10, 2 + 5]);
        let mut g = Gro::new(ALL);
        g.coalesce(&refs);
        let want: Vec<Vec<u8>> = g
            .units(&refs)
            .map(|u| [&u.vnet.encode()[..], &u.to_vec()].concat())
            .collect();
        assert_eq!(*dev.written.borrow(), want);
        let mut back = vec![];
        for f in dev.written.borrow().iter() {
            let hdr = VnetHdr::decode(f).unwrap();
            let (mut out, mut lens) = (vec![0u8; 1 << 17], vec![0u32; 64]);
            let n = gso::split(&hdr, &f[vnet::LEN..], &mut out, &mut lens).unwrap();
            let mut at = 0;
            for &l in &lens[..n] {
                back.push([&NO_GSO[..], &out[at..at + l as usize]].concat());
                at += l as usize;
            }
        }
        assert_eq!(singles(&back), without_id(&packets));
        assert_eq!((tx.counters.packets, tx.counters.writes), (15, 2));
    }

    #[test]
    fn direct_write_refused_with_einval_falls_back_to_single_packets() {
        let gso_writes = std::rc::Rc::new(std::cell::Cell::new(0));
        let seen = gso_writes.clone();
        let dev = Fake::new(move |f| {
            if is_gso(f) {
                seen.set(seen.get() + 1);
                Some(libc::EINVAL)
            } else {
                None
            }
        });
        let packets = two_flows();
        let refs: Vec<&[u8]> = packets.iter().map(|p| p.as_slice()).collect();
        let mut tx = Tx::new(true, ALL);
        assert_eq!(tx.send_io(&dev, &refs).unwrap(), 15);
        assert_eq!(singles(&dev.written.borrow()), without_id(&packets));
        assert_eq!(tx.counters.fallbacks, 2);
        assert_eq!((tx.counters.packets, tx.counters.writes), (15, 15));
        assert_eq!(
            tx.gro_config(),
            GroConfig {
                tcp: false,
                udp: false
            }
        );
        // Coalescing is off now: nothing more is offered as GSO.
        assert_eq!(tx.send_io(&dev, &refs).unwrap(), 15);
        assert_eq!(gso_writes.get(), 2);
        assert_eq!(tx.counters.packets, 30);
    }

    #[test]
    fn queued_frame_refused_with_einval_is_written_packet_by_packet() {
        // The first write would block: both units wait in the backlog. Then
        // the kernel refuses every GSO write with EINVAL (as some stable
        // kernels do): the queued super-packets must not be lost.
        let mut calls = 0;
        let dev = Fake::new(move |f| {
            calls += 1;
            match calls {
                1 => Some(libc::EAGAIN),
                _ if is_gso(f) => Some(libc::EINVAL),
                _ => None,
            }
        });
        let packets = two_flows();
        let refs: Vec<&[u8]> = packets.iter().map(|p| p.as_slice()).collect();
        let mut tx = Tx::new(true, ALL);
        assert_eq!(tx.send_io(&dev, &refs).unwrap(), 15);
        assert_eq!(tx.backlog(), 2, "two coalesced frames queued");
        assert!(dev.written.borrow().is_empty());
        assert_eq!(tx.flush_io(&dev).unwrap(), 0);
        assert_eq!(
            singles(&dev.written.borrow()),
            without_id(&packets),
            "every packet, in order"
        );
        assert_eq!(tx.counters.fallbacks, 2);
        let bytes: usize = packets.iter().map(|p| p.len()).sum();
        assert_eq!(
            (tx.counters.packets, tx.counters.writes, tx.counters.bytes),
            (15, 15, bytes as u64)
        );
        assert_eq!(
            tx.gro_config(),
            GroConfig {
                tcp: false,
                udp: false
            }
        );
    }

    #[test]
    fn split_packets_that_would_block_stay_queued_in_order() {
        // EAGAIN first (queued), EINVAL for GSO, and EAGAIN again after three
        // single packets: the rest of the split packets wait at the front of
        // the backlog, ahead of the second unit.
        let mut calls = 0;
        let mut singles_taken = 0;
        let dev = Fake::new(move |f| {
            calls += 1;
            if calls == 1 {
                return Some(libc::EAGAIN);
            }
            if is_gso(f) {
                return Some(libc::EINVAL);
            }
            singles_taken += 1;
            (singles_taken == 4).then_some(libc::EAGAIN)
        });
        let packets = two_flows();
        let refs: Vec<&[u8]> = packets.iter().map(|p| p.as_slice()).collect();
        let mut tx = Tx::new(true, ALL);
        tx.send_io(&dev, &refs).unwrap();
        assert_eq!(
            tx.flush_io(&dev).unwrap(),
            7 + 1,
            "7 datagrams and the TCP unit still queued"
        );
        assert_eq!(dev.written.borrow().len(), 3);
        assert_eq!(tx.flush_io(&dev).unwrap(), 0);
        assert_eq!(singles(&dev.written.borrow()), without_id(&packets));
        assert_eq!((tx.counters.packets, tx.counters.fallbacks), (15, 2));
    }

    #[test]
    fn queued_single_refused_is_dropped_with_the_error_the_rest_stays() {
        let mut calls = 0;
        let dev = Fake::new(move |_| {
            calls += 1;
            match calls {
                1 => Some(libc::EAGAIN),
                2 => Some(libc::EIO),
                _ => None,
            }
        });
        let packets: Vec<Vec<u8>> = (0..3).map(|i| Spec::tcp4().build(&payload(10, i))).collect();
        let refs: Vec<&[u8]> = packets.iter().map(|p| p.as_slice()).collect();
        let mut tx = Tx::new(
            true,
            GroConfig {
                tcp: false,
                udp: false,
            },
        );
        tx.send_io(&dev, &refs).unwrap();
        assert_eq!(tx.backlog(), 3);
        let err = tx.flush_io(&dev).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EIO));
        assert_eq!(tx.backlog(), 2);
        assert_eq!(tx.flush_io(&dev).unwrap(), 0);
        assert_eq!(singles(&dev.written.borrow()), without_id(&packets[1..]));
        assert_eq!(tx.counters.fallbacks, 0);
    }

    #[test]
    fn split_queued_replaces_the_frame_in_place() {
        // Pure: a coalesced frame between two others is split in the backlog.
        let packets: Vec<Vec<u8>> = (0..4).map(|i| Spec::udp6().build(&payload(500, i))).collect();
        let refs: Vec<&[u8]> = packets.iter().map(|p| p.as_slice()).collect();
        let mut g = Gro::new(ALL);
        g.coalesce(&refs);
        let u = g.units(&refs).next().unwrap();
        assert_eq!(u.packets.len(), 4);
        let before = Spec::tcp4().build(&payload(7, 1));
        let after = Spec::tcp6().build(&payload(9, 2));
        let mut b = Backlog::default();
        b.push(&NO_GSO, [&before[..]], 1, before.len());
        b.push(&u.vnet.encode(), u.parts(), 4, 2000);
        b.push(&NO_GSO, [&after[..]], 1, after.len());
        let (mut buf, mut lens) = (Vec::new(), Vec::new());
        assert!(split_queued(&mut b, 1, &mut buf, &mut lens));
        assert_eq!(b.frames.len(), 6);
        let frames: Vec<Vec<u8>> = b.frames.iter().map(|f| b.bytes[f.0..f.1].to_vec()).collect();
        let mut want = vec![before.clone()];
        want.extend(packets.iter().cloned());
        want.push(after.clone());
        let got: Vec<Vec<u8>> = frames.iter().map(|f| f[vnet::LEN..].to_vec()).collect();
        assert_eq!(got, want);
        assert!(frames.iter().all(|f| f[..vnet::LEN] == NO_GSO));
        assert!(b.frames.iter().all(|f| f.2 == 1 && f.3 == f.1 - f.0 - vnet::LEN));
        assert_eq!(b.frames.last().unwrap().1, b.bytes.len());
        // A frame that does not split is left alone.
        assert!(!split_queued(&mut b, 9, &mut buf, &mut lens));
        b.push(&[0, 1, 0, 0, 0, 0, 0, 0, 0, 0], [&[0x45u8][..]], 1, 1);
        assert!(!split_queued(&mut b, 6, &mut buf, &mut lens));
        assert_eq!(b.frames.len(), 7);
    }

    #[test]
    fn malformed_frame_is_counted_dropped_and_the_next_is_delivered() {
        let tcp = Spec::tcp4().build(&payload(300, 1));
        let udp = Spec::udp4().build(&payload(300, 2));
        let hdr = |gso_type, gso_size, csum_offset| VnetHdr {
            flags: vnet::F_NEEDS_CSUM,
            gso_type,
            hdr_len: 0,
            gso_size,
            csum_start: 20,
            csum_offset,
        };
        let frame = |h: VnetHdr, p: &[u8]| [&h.encode()[..], p].concat();
        let dev = Fake::new(|_| None);
        dev.reads.borrow_mut().extend([
            frame(hdr(vnet::GSO_TCPV4, 100, 16), &udp), // TCP GSO type on a UDP packet
            frame(VnetHdr::default(), &tcp),            // good: one packet
            vec![0; 6],                                 // shorter than a virtio header
            frame(hdr(vnet::GSO_TCPV4, 100, 16), &tcp), // good: three segments
        ]);
        let mut rx = Rx::new(true);
        let mut slab = vec![0u8; 1 << 16];
        let mut lens = [0u32; 16];
        assert_eq!(rx.recv_io(&dev, &mut slab, &mut lens).unwrap(), 4);
        let c = rx.counters;
        assert_eq!((c.reads, c.dropped, c.packets), (4, 2, 4));
        assert_eq!(
            &slab[..tcp.len()],
            tcp.as_slice(),
            "the good packet is delivered whole"
        );
        assert_eq!(lens[..4], [340, 140, 140, 140]);
        let mut pos = tcp.len();
        for &l in &lens[1..4] {
            assert!(checksums_valid(&slab[pos..pos + l as usize]));
            pos += l as usize;
        }
        assert_eq!(c.bytes as usize, pos);
    }
}
