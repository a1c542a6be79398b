//! GRO coalesce: a batch of complete IP packets becomes write units, each a
//! single packet or a super-packet with the virtio header that lets the
//! kernel segment it again.
//!
//! The rules that real implementations converged on: same flow (addresses,
//! ports, and for TCP the acknowledgement number); IPv4 without options, not
//! a fragment; TCP flags exactly ACK or ACK|PSH; equal TTL/hop limit,
//! ToS/traffic class, DF; identical TCP options; sequence numbers that follow
//! on; equal segment sizes with only the last one shorter; nothing after a
//! PSH; at most 65535 bytes; UDP at most 64 segments. Every packet's
//! checksums are verified before it may merge: a corrupt packet is written as
//! it came and never gets a fresh, valid checksum. Per-flow order is kept.
//!
//! A super-packet is not built: only the head's headers are copied (and fixed
//! up for the whole), and the write gathers them with every member's payload
//! from where the caller's packets lie ([`Unit::parts`]).
use std::ops::Range;

use crate::checksum::{add, fold};
use crate::packet::{addrs, l4_header_len, parse_ip, TCP, UDP};
use crate::vnet::{self, VnetHdr};

/// The largest IP packet a unit may become.
pub const MAX_SUPER_PACKET: usize = 65535;
/// The most UDP datagrams one super-packet carries.
pub const MAX_UDP_SEGMENTS: usize = 64;
/// The most TCP segments one super-packet carries (the kernel's `MAX_SKB_FRAGS` bound is larger).
pub const MAX_TCP_SEGMENTS: usize = 64;

/// Which protocols may be coalesced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroConfig {
    /// Coalesce TCP (needs TSO on the device).
    pub tcp: bool,
    /// Coalesce UDP (needs USO on the device, Linux >= 6.2).
    pub udp: bool,
}

/// A write unit: one `writev()` of a virtio header and these bytes.
///
/// A super-packet is never laid out contiguously: its bytes are the head's
/// headers (fixed up, in the coalescer's buffer) followed by every member's
/// payload where it already lies, so the write gathers them
/// ([`Unit::parts`]) and nothing is copied in user space.
#[derive(Debug, Clone, Copy)]
pub struct Unit<'a> {
    /// The virtio header: `GSO_NONE` with no flags for a single packet.
    pub vnet: VnetHdr,
    /// Indices of the input packets this unit carries, in order (for the
    /// fallback: written one by one if the kernel refuses the unit).
    pub packets: &'a [u32],
    /// A single packet whole, or the super-packet's headers.
    head: &'a [u8],
    /// Bytes of headers each member's payload starts after; 0 for a single.
    hdr_len: usize,
    /// Length of the whole IP packet or super-packet.
    len: usize,
    input: &'a [&'a [u8]],
}

impl<'a> Unit<'a> {
    /// The bytes of the IP packet or super-packet in order, as slices to
    /// gather: a single packet is one slice; a super-packet is its headers,
    /// then each member's payload (at most 1 + [`MAX_TCP_SEGMENTS`] slices).
    pub fn parts(&self) -> impl Iterator<Item = &'a [u8]> + Clone + 'a {
        let (input, hdr_len) = (self.input, self.hdr_len);
        let members = if hdr_len == 0 { &[][..] } else { self.packets };
        std::iter::once(self.head).chain(members.iter().map(move |&m| {
            input
                .get(m as usize)
                .and_then(|p| p.get(hdr_len..))
                .unwrap_or(&[])
        }))
    }

    /// Length of the IP packet or super-packet.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true: a unit carries at least one packet (for clippy's `len_without_is_empty`).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The packet or super-packet as one contiguous copy (for tests and
    /// checks; the write path gathers [`Unit::parts`]).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len);
        for p in self.parts() {
            v.extend_from_slice(p);
        }
        v
    }
}

#[derive(Debug, Clone, Copy)]
struct Flow {
    version: u8,
    proto: u8,
    /// Addresses and ports, zero-padded.
    key: [u8; 36],
    /// TCP ack number; must match to merge.
    ack: u32,
    /// TTL/hop limit, ToS/traffic class, DF: must match.
    attrs: u32,
    /// IPv6 flow label, or the IPv4 reserved flag bit: must match too, or a
    /// member's value would be lost when the kernel segments the unit (DF is
    /// in `attrs`; MF makes a fragment, which never merges).
    label: u32,
}

#[derive(Debug, Clone)]
struct UnitRec {
    flow: Option<Flow>,
    /// First input packet (its headers lead the super-packet).
    head: u32,
    /// Range in `members` of the input packets carried.
    members: Range<usize>,
    /// Range in `arena` of the super-packet's fixed-up headers; empty for a single.
    bytes: Range<usize>,
    /// Bytes of IP + L4 headers of the head.
    hdr_len: usize,
    l4: usize,
    gso_size: usize,
    /// Next expected TCP sequence number.
    next_seq: u32,
    /// No packet may join any more (a short segment or a PSH ended it).
    closed: bool,
    psh: bool,
    total: usize,
}

/// Coalesces batches of packets. Reusable: buffers grow to the largest batch
/// and are kept, so a warmed-up `Gro` allocates nothing.
#[derive(Debug)]
pub struct Gro {
    cfg: GroConfig,
    units: Vec<UnitRec>,
    members: Vec<u32>,
    /// The super-packets' headers (payloads stay where they are).
    arena: Vec<u8>,
    /// Indices into `units` of units that may still take packets.
    open: Vec<usize>,
    /// Per-unit member lists while building (flattened at the end).
    pending: Vec<Vec<u32>>,
    /// Final headers, by unit.
    hdrs: Vec<VnetHdr>,
}

struct Candidate {
    flow: Flow,
    l4: usize,
    hdr_len: usize,
    payload: usize,
    seq: u32,
    psh: bool,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The flow of a packet and whether it may be merged at all.
fn classify(p: &[u8], cfg: GroConfig) -> (Option<Flow>, Option<Candidate>) {
    let Ok(ip) = parse_ip(p) else { return (None, None) };
    if ip.proto != TCP && ip.proto != UDP {
        return (None, None);
    }
    let Ok(l4h) = l4_header_len(p, ip.l4_offset, ip.proto) else {
        return (None, None);
    };
    let l4 = ip.l4_offset;
    let (src, dst) = addrs(p, ip.version);
    let mut key = [0u8; 36];
    key[..src.len()].copy_from_slice(src);
    key[16..16 + dst.len()].copy_from_slice(dst);
    key[32..36].copy_from_slice(&p[l4..l4 + 4]);
    let (ttl, tos, df) = if ip.version == 4 {
        (p[8], p[1], p[6] & 0x40)
    } else {
        (p[7], (p[0] << 4) | (p[1] >> 4), 0)
    };
    let attrs = u32::from_be_bytes([0, ttl, tos, df]);
    let label = if ip.version == 4 {
        (p[6] & 0x80) as u32
    } else {
        u32::from_be_bytes([0, p[1] & 0x0f, p[2], p[3]])
    };
    let ack = if ip.proto == TCP { u32_at(p, l4 + 8) } else { 0 };
    let flow = Flow {
        version: ip.version,
        proto: ip.proto,
        key,
        ack,
        attrs,
        label,
    };
    let hdr_len = l4 + l4h;
    let payload = p.len() - hdr_len;
    let enabled = if ip.proto == TCP { cfg.tcp } else { cfg.udp };
    let mergeable = enabled
        && ip.total_len == p.len()
        && !ip.has_options
        && !ip.fragment
        && payload > 0
        && (ip.proto != TCP || matches!(p[l4 + 13], 0x10 | 0x18))
        && (ip.proto != UDP || u16::from_be_bytes([p[l4 + 6], p[l4 + 7]]) != 0)
        && (ip.proto != UDP || u16::from_be_bytes([p[l4 + 4], p[l4 + 5]]) as usize == p.len() - l4)
        && checksums_valid(p, ip.version, l4, ip.proto);
    if !mergeable {
        return (Some(flow), None);
    }
    let seq = if ip.proto == TCP { u32_at(p, l4 + 4) } else { 0 };
    let psh = ip.proto == TCP && p[l4 + 13] & 0x08 != 0;
    (
        Some(flow),
        Some(Candidate {
            flow,
            l4,
            hdr_len,
            payload,
            seq,
            psh,
        }),
    )
}

fn checksums_valid(p: &[u8], version: u8, l4: usize, proto: u8) -> bool {
    if version == 4 && fold(add(&p[..l4], 0)) != 0xffff {
        return false;
    }
    let (s, d) = addrs(p, version);
    let sum = add(s, add(d, 0)) + proto as u64 + (p.len() - l4) as u64;
    fold(add(&p[l4..], sum)) == 0xffff
}

fn same_flow(a: &Flow, b: &Flow) -> bool {
    a.version == b.version && a.proto == b.proto && a.key == b.key
}

impl Gro {
    /// A coalescer with `cfg`.
    pub fn new(cfg: GroConfig) -> Self {
        Gro {
            cfg,
            units: Vec::new(),
            members: Vec::new(),
            arena: Vec::new(),
            open: Vec::new(),
            pending: Vec::new(),
            hdrs: Vec::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> GroConfig {
        self.cfg
    }

    /// Changes which protocols may be coalesced.
    pub fn set_config(&mut self, cfg: GroConfig) {
        self.cfg = cfg;
    }

    /// Forgets the last batch (buffers are kept).
    pub fn reset(&mut self) {
        self.units.clear();
        self.members.clear();
        self.arena.clear();
        self.open.clear();
        for p in &mut self.pending {
            p.clear();
        }
        self.hdrs.clear();
    }

    /// Plans and builds the write units for `packets`.
    pub fn coalesce(&mut self, packets: &[&[u8]]) {
        self.reset();
        for (i, p) in packets.iter().enumerate() {
            let (flow, cand) = classify(p, self.cfg);
            let Some(c) = cand else {
                // Written alone; it also ends any open unit of its flow, so
                // that later packets of that flow stay behind it.
                if let Some(f) = flow {
                    self.open
                        .retain(|&u| !self.units[u].flow.as_ref().is_some_and(|g| same_flow(g, &f)));
                }
                self.start(i as u32, flow, None, packets);
                continue;
            };
            let pos = self
                .open
                .iter()
                .position(|&u| self.units[u].flow.as_ref().is_some_and(|g| same_flow(g, &c.flow)));
            if let Some(at) = pos {
                let u = self.open[at];
                if self.can_join(u, &c, p, packets) {
                    self.join(u, i as u32, &c);
                    if self.units[u].closed {
                        self.open.swap_remove(at);
                    }
                    continue;
                }
                self.open.swap_remove(at);
            }
            self.start(i as u32, Some(c.flow), Some(&c), packets);
        }
        self.finish(packets);
    }

    /// Whether candidate `c` (the packet `p`) may join unit `u`.
    fn can_join(&self, u: usize, c: &Candidate, p: &[u8], packets: &[&[u8]]) -> bool {
        let r = &self.units[u];
        let Some(f) = &r.flow else { return false };
        // (A closed unit is out of `open` already; checked again all the same.)
        if r.closed
            || f.ack != c.flow.ack
            || f.attrs != c.flow.attrs
            || f.label != c.flow.label
            || c.payload > r.gso_size
            || r.total + c.payload > MAX_SUPER_PACKET
        {
            return false;
        }
        let count = self.pending.get(u).map_or(0, |m| m.len());
        if c.flow.proto == UDP {
            return count < MAX_UDP_SEGMENTS;
        }
        // Identical TCP options (and so equal header lengths): the kernel
        // copies the head's options into every segment. At most 40 bytes
        // each, compared in place.
        let head = packets.get(r.head as usize).copied().unwrap_or(&[]);
        let same_options = head.get(r.l4 + 20..r.hdr_len) == p.get(c.l4 + 20..c.hdr_len);
        same_options && count < MAX_TCP_SEGMENTS && c.seq == r.next_seq
    }

    fn start(&mut self, i: u32, flow: Option<Flow>, c: Option<&Candidate>, packets: &[&[u8]]) {
        let u = self.units.len();
        if self.pending.len() <= u {
            self.pending.push(Vec::new());
        }
        self.pending[u].clear();
        self.pending[u].push(i);
        let (l4, hdr_len, gso_size, next_seq, closed, psh) = match c {
            Some(c) => (
                c.l4,
                c.hdr_len,
                c.payload,
                c.seq.wrapping_add(c.payload as u32),
                c.psh,
                c.psh,
            ),
            None => (0, 0, 0, 0, true, false),
        };
        self.units.push(UnitRec {
            flow,
            head: i,
            members: 0..0,
            bytes: 0..0,
            hdr_len,
            l4,
            gso_size,
            next_seq,
            closed,
            psh,
            total: packets[i as usize].len(),
        });
        if c.is_some() && !closed {
            self.open.push(u);
        }
    }

    fn join(&mut self, u: usize, i: u32, c: &Candidate) {
        let r = &mut self.units[u];
        r.total += c.payload;
        r.next_seq = r.next_seq.wrapping_add(c.payload as u32);
        if c.payload < r.gso_size {
            r.closed = true;
        }
        if c.psh {
            r.psh = true;
            r.closed = true;
        }
        self.pending[u].push(i);
    }

    fn finish(&mut self, packets: &[&[u8]]) {
        self.members.clear();
        self.hdrs.clear();
        for u in 0..self.units.len() {
            let start = self.members.len();
            self.members.extend_from_slice(&self.pending[u]);
            let count = self.members.len() - start;
            let r = &mut self.units[u];
            r.members = start..self.members.len();
            if count < 2 {
                r.bytes = 0..0;
                self.hdrs.push(VnetHdr::default());
                continue;
            }
            // The super-packet's headers are the head's, fixed up for the
            // whole; the payloads are gathered from the input when written.
            let start = self.arena.len();
            let head = packets.get(r.head as usize).copied().unwrap_or(&[]);
            self.arena.extend_from_slice(head.get(..r.hdr_len).unwrap_or(&[]));
            r.bytes = start..self.arena.len();
            let f = r.flow.as_ref().map_or((4, TCP), |f| (f.version, f.proto));
            let b = &mut self.arena[r.bytes.clone()];
            let total = r.total;
            let l4 = r.l4;
            if f.0 == 4 {
                b[2..4].copy_from_slice(&(total as u16).to_be_bytes());
                b[10..12].copy_from_slice(&[0, 0]);
                let c = !fold(add(&b[..l4], 0));
                b[10..12].copy_from_slice(&c.to_be_bytes());
            } else {
                b[4..6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
            }
            let l4_len = total - l4;
            let (s, d) = addrs(b, f.0);
            let partial = fold(add(s, add(d, 0)) + f.1 as u64 + l4_len as u64);
            let gso_type;
            let csum_offset;
            if f.1 == TCP {
                if r.psh {
                    b[l4 + 13] |= 0x08;
                }
                b[l4 + 16..l4 + 18].copy_from_slice(&partial.to_be_bytes());
                gso_type = if f.0 == 4 {
                    vnet::GSO_TCPV4
                } else {
                    vnet::GSO_TCPV6
                };
                csum_offset = 16;
            } else {
                b[l4 + 4..l4 + 6].copy_from_slice(&(l4_len as u16).to_be_bytes());
                b[l4 + 6..l4 + 8].copy_from_slice(&partial.to_be_bytes());
                gso_type = vnet::GSO_UDP_L4;
                csum_offset = 6;
            }
            self.hdrs.push(VnetHdr {
                flags: vnet::F_NEEDS_CSUM,
                gso_type,
                hdr_len: r.hdr_len as u16,
                gso_size: r.gso_size as u16,
                csum_start: l4 as u16,
                csum_offset,
            });
        }
    }

    /// The units of the last [`Gro::coalesce`], in an order that keeps every flow's order.
    pub fn units<'a>(&'a self, packets: &'a [&'a [u8]]) -> impl Iterator<Item = Unit<'a>> + 'a {
        self.units.iter().zip(&self.hdrs).map(move |(r, h)| {
            let single = r.bytes.is_empty();
            Unit {
                vnet: *h,
                packets: &self.members[r.members.clone()],
                head: if single {
                    packets.get(r.head as usize).copied().unwrap_or(&[])
                } else {
                    &self.arena[r.bytes.clone()]
                },
                hdr_len: if single { 0 } else { r.hdr_len },
                len: r.total,
                input: packets,
            }
        })
    }

    /// Number of units of the last batch.
    pub fn unit_count(&self) -> usize {
        self.units.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gso::split;
    use crate::testutil::{
        checksums_valid, fix_checksums, payload, pseudo_sum, reference_checksum, with_hop_by_hop,
        with_ipv4_options, Spec,
    };

    const ALL: GroConfig = GroConfig { tcp: true, udp: true };
    const NO_UDP: GroConfig = GroConfig {
        tcp: true,
        udp: false,
    };
    const NO_TCP: GroConfig = GroConfig {
        tcp: false,
        udp: true,
    };
    const ACK: u8 = 0x10;
    const ACK_PSH: u8 = 0x18;

    type Units = Vec<(Vec<u32>, u8)>;

    /// Coalesces, returns (unit sizes in packets, unit gso types).
    fn run(packets: &[Vec<u8>], cfg: GroConfig) -> Units {
        let refs: Vec<&[u8]> = packets.iter().map(|p| p.as_slice()).collect();
        let mut g = Gro::new(cfg);
        g.coalesce(&refs);
        g.units(&refs)
            .map(|u| (u.packets.to_vec(), u.vnet.gso_type))
            .collect()
    }

    fn tcp(spec: Spec, seq: u32, len: usize) -> Vec<u8> {
        spec.seq(seq).build(&payload(len, seq as u8))
    }

    fn udp(spec: Spec, len: usize, seed: u8) -> Vec<u8> {
        spec.build(&payload(len, seed))
    }

    /// `spec` changed by `f`.
    fn with(mut spec: Spec, f: impl FnOnce(&mut Spec)) -> Spec {
        f(&mut spec);
        spec
    }

    /// `p` changed by `f`, then every checksum made valid again (so that only
    /// the rule under test can keep it apart).
    fn fixed(mut p: Vec<u8>, f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        f(&mut p);
        fix_checksums(&mut p);
        p
    }

    /// `p` with the 16-bit field at `at` inverted (a checksum that no longer verifies).
    fn flip(mut p: Vec<u8>, at: usize) -> Vec<u8> {
        p[at] ^= 0xff;
        p[at + 1] ^= 0xff;
        p
    }

    /// The same flow but to the third address (wireguard-go's flow 2: A -> C).
    fn to_c(mut s: Spec) -> Spec {
        if s.v6 {
            s.dst[15] = 3;
        } else {
            s.dst[3] = 3;
        }
        s
    }

    /// A TCP timestamp option (NOP, NOP, TS) with `tsval`: 12 bytes.
    fn ts(tsval: u32) -> Vec<u8> {
        let mut o = vec![1, 1, 8, 10];
        o.extend_from_slice(&tsval.to_be_bytes());
        o.extend_from_slice(&[0, 0, 0, 1]);
        o
    }

    /// Each of `n` packets written alone.
    fn alone(n: u32) -> Units {
        (0..n).map(|i| (vec![i], vnet::GSO_NONE)).collect()
    }

    #[test]
    fn table() {
        let t4 = Spec::tcp4;
        let t6 = Spec::tcp6;
        let u4 = Spec::udp4;
        let u6 = Spec::udp6;
        let (v4, v6, ul4) = (vnet::GSO_TCPV4, vnet::GSO_TCPV6, vnet::GSO_UDP_L4);
        // wireguard-go's "multiple protocols and flows": tcp4, tcp6, udp4, udp6,
        // two flows each (A -> B and A -> C), interleaved.
        let multi = vec![
            tcp(t4(), 1, 100),         // 0: tcp4 flow 1
            udp(u4(), 100, 1),         // 1: udp4 flow 1
            udp(to_c(u4()), 100, 2),   // 2: udp4 flow 2
            tcp(t4(), 101, 100),       // 3: tcp4 flow 1
            tcp(to_c(t4()), 201, 100), // 4: tcp4 flow 2
            tcp(t6(), 1, 100),         // 5: tcp6 flow 1
            tcp(t6(), 101, 100),       // 6: tcp6 flow 1
            tcp(to_c(t6()), 201, 100), // 7: tcp6 flow 2
            udp(u4(), 100, 3),         // 8: udp4 flow 1
            udp(u6(), 100, 4),         // 9: udp6 flow 1
            udp(u6(), 100, 5),         // 10: udp6 flow 1
        ];
        // A UDP packet with a zero checksum field ("no checksum") whose bytes
        // still verify: the checksum it had is added into its first payload
        // word, so the sum is unchanged. Only the zero-checksum rule keeps it apart.
        let zero_csum = {
            let mut p = udp(u4(), 100, 1);
            let c = u16::from_be_bytes([p[26], p[27]]) as u32;
            p[26..28].copy_from_slice(&[0, 0]);
            let w = u16::from_be_bytes([p[28], p[29]]) as u32 + c;
            p[28..30].copy_from_slice(&(((w & 0xffff) + (w >> 16)) as u16).to_be_bytes());
            assert!(checksums_valid(&p));
            p
        };
        type Row = (&'static str, Vec<Vec<u8>>, GroConfig, Units);
        let rows: Vec<Row> = vec![
            // (what, packets, config, expected units: member indices and gso type)
            (
                // The basic case: adjacent segments of one flow become one unit.
                "three tcp4 in sequence merge",
                vec![tcp(t4(), 1, 100), tcp(t4(), 101, 100), tcp(t4(), 201, 100)],
                ALL,
                vec![(vec![0, 1, 2], v4)],
            ),
            (
                // The same over IPv6 (no extension headers).
                "three tcp6 in sequence merge",
                vec![tcp(t6(), 1, 100), tcp(t6(), 101, 100), tcp(t6(), 201, 100)],
                ALL,
                vec![(vec![0, 1, 2], v6)],
            ),
            (
                // Only the last segment may be shorter: it closes the unit.
                "short last segment ends the unit",
                vec![tcp(t4(), 1, 100), tcp(t4(), 101, 50), tcp(t4(), 151, 100)],
                ALL,
                vec![(vec![0, 1], v4), (vec![2], 0)],
            ),
            (
                // A segment larger than the unit's gso_size cannot join it.
                "a larger tcp segment does not join",
                vec![tcp(t4(), 1, 50), tcp(t4(), 51, 100)],
                ALL,
                alone(2),
            ),
            (
                // The same for UDP: gso_size is the first datagram's size.
                "a larger udp datagram does not join",
                vec![udp(u4(), 50, 1), udp(u4(), 100, 2)],
                ALL,
                alone(2),
            ),
            (
                // Nothing after a PSH: it closes the unit.
                "PSH in the middle ends the unit",
                vec![
                    tcp(t4(), 1, 100),
                    tcp(t4().flags(ACK_PSH), 101, 100),
                    tcp(t4(), 201, 100),
                ],
                ALL,
                vec![(vec![0, 1], v4), (vec![2], 0)],
            ),
            (
                // A PSH on the first packet: nothing may follow it in a unit.
                "PSH head stays alone",
                vec![tcp(t4().flags(ACK_PSH), 1, 100), tcp(t4(), 101, 100)],
                ALL,
                alone(2),
            ),
            (
                // wireguard-go's "PSH interleaved", v4 half: the packets after
                // the PSH merge into a new unit.
                "PSH interleaved tcp4",
                vec![
                    tcp(t4(), 1, 100),
                    tcp(t4().flags(ACK_PSH), 101, 100),
                    tcp(t4(), 201, 100),
                    tcp(t4(), 301, 100),
                ],
                ALL,
                vec![(vec![0, 1], v4), (vec![2, 3], v4)],
            ),
            (
                // The v6 half.
                "PSH interleaved tcp6",
                vec![
                    tcp(t6(), 1, 100),
                    tcp(t6().flags(ACK_PSH), 101, 100),
                    tcp(t6(), 201, 100),
                    tcp(t6(), 301, 100),
                ],
                ALL,
                vec![(vec![0, 1], v6), (vec![2, 3], v6)],
            ),
            (
                // wireguard-go's "out of order", its input order (101, 1, 201).
                // wireguard-go prepends seq 1 to the unit of 101 and writes one
                // 340-byte unit, reordering what it was given. This coalescer
                // keeps each flow's order as given (no reordering, no lookups
                // across units): seq 1 does not follow 101, so it ends that unit,
                // and 201 does not follow 1. Three single writes, in order.
                "out of order (101, 1, 201) is written as given",
                vec![tcp(t4(), 101, 100), tcp(t4(), 1, 100), tcp(t4(), 201, 100)],
                ALL,
                alone(3),
            ),
            (
                // Sequence numbers must follow on: a gap ends the unit.
                "out of order (1, 201, 101) stays apart",
                vec![tcp(t4(), 1, 100), tcp(t4(), 201, 100), tcp(t4(), 101, 100)],
                ALL,
                alone(3),
            ),
            (
                // Units are per flow: two interleaved flows give two units.
                "two flows interleaved each merge",
                vec![
                    tcp(t4(), 1, 100),
                    tcp(with(t4(), |s| s.sport = 1001), 1, 100),
                    tcp(t4(), 101, 100),
                    tcp(with(t4(), |s| s.sport = 1001), 101, 100),
                ],
                ALL,
                vec![(vec![0, 2], v4), (vec![1, 3], v4)],
            ),
            (
                // wireguard-go's "multiple protocols and flows".
                "multiple protocols and flows",
                multi.clone(),
                ALL,
                vec![
                    (vec![0, 3], v4),
                    (vec![1, 8], ul4),
                    (vec![2], 0),
                    (vec![4], 0),
                    (vec![5, 6], v6),
                    (vec![7], 0),
                    (vec![9, 10], ul4),
                ],
            ),
            (
                // wireguard-go's "multiple protocols and flows no UDP GRO": TCP
                // still merges, every UDP datagram is written alone, in order.
                "multiple protocols and flows, no UDP coalescing",
                multi,
                NO_UDP,
                vec![
                    (vec![0, 3], v4),
                    (vec![1], 0),
                    (vec![2], 0),
                    (vec![4], 0),
                    (vec![5, 6], v6),
                    (vec![7], 0),
                    (vec![8], 0),
                    (vec![9], 0),
                    (vec![10], 0),
                ],
            ),
            (
                // wireguard-go's "coalesceItemInvalidCSum", both halves: a head
                // whose L4 checksum is wrong is written alone, the next two merge.
                "bad checksum head, tcp4 and udp4",
                vec![
                    flip(tcp(t4(), 1, 100), 36),
                    tcp(t4(), 101, 100),
                    tcp(t4(), 201, 100),
                    flip(udp(u4(), 100, 1), 26),
                    udp(u4(), 100, 2),
                    udp(u4(), 100, 3),
                ],
                ALL,
                vec![(vec![0], 0), (vec![1, 2], v4), (vec![3], 0), (vec![4, 5], ul4)],
            ),
            (
                // A corrupt packet in the middle is written alone, and the unit
                // before it does not take the packets after it.
                "bad checksum in the middle is written alone, in order",
                vec![
                    tcp(t4(), 1, 100),
                    flip(tcp(t4(), 101, 100), 36),
                    tcp(t4(), 201, 100),
                ],
                ALL,
                alone(3),
            ),
            (
                // The IPv4 header checksum is verified too (merging would give
                // the corrupt header a fresh, valid checksum).
                "bad IPv4 header checksum is written alone",
                vec![tcp(t4(), 1, 100), flip(tcp(t4(), 101, 100), 10)],
                ALL,
                alone(2),
            ),
            (
                // A pure ACK (no payload) never merges, and it ends its flow's
                // unit: the next segment must not be written before it.
                "a pure ACK in between keeps its place",
                vec![tcp(t4(), 1, 100), tcp(t4(), 101, 0), tcp(t4(), 101, 100)],
                ALL,
                alone(3),
            ),
            (
                // Two pure ACKs: nothing to segment.
                "pure ACKs do not merge",
                vec![tcp(t4(), 1, 0), tcp(t4(), 1, 0)],
                ALL,
                alone(2),
            ),
            (
                // TCP flags must be exactly ACK or ACK|PSH: FIN is written alone.
                "FIN is written alone",
                vec![
                    tcp(t4(), 1, 100),
                    tcp(t4().flags(0x11), 101, 100),
                    tcp(t4(), 201, 100),
                ],
                ALL,
                alone(3),
            ),
            (
                // URG: the urgent pointer would be copied into every segment.
                "URG is written alone",
                vec![tcp(t4(), 1, 100), tcp(t4().flags(0x30), 101, 100)],
                ALL,
                alone(2),
            ),
            (
                // ECE (ECN echo): not ACK or ACK|PSH, written alone.
                "ECE is written alone",
                vec![tcp(t4(), 1, 100), tcp(t4().flags(0x50), 101, 100)],
                ALL,
                alone(2),
            ),
            (
                // The ACK number is part of the flow match.
                "unequal ACK number",
                vec![tcp(t4(), 1, 100), tcp(with(t4(), |s| s.ack = 2), 101, 100)],
                ALL,
                alone(2),
            ),
            (
                // wireguard-go's "unequal TTL", TCP pair: TTL must match.
                "unequal TTL tcp4",
                vec![tcp(t4(), 1, 100), tcp(with(t4(), |s| s.ttl = 65), 101, 100)],
                ALL,
                alone(2),
            ),
            (
                // Its UDP pair.
                "unequal TTL udp4",
                vec![udp(u4(), 100, 1), udp(with(u4(), |s| s.ttl = 65), 100, 2)],
                ALL,
                alone(2),
            ),
            (
                // wireguard-go's "unequal ToS", TCP pair.
                "unequal ToS tcp4",
                vec![tcp(t4(), 1, 100), tcp(with(t4(), |s| s.tos = 1), 101, 100)],
                ALL,
                alone(2),
            ),
            (
                // Its UDP pair.
                "unequal ToS udp4",
                vec![udp(u4(), 100, 1), udp(with(u4(), |s| s.tos = 1), 100, 2)],
                ALL,
                alone(2),
            ),
            (
                // wireguard-go's "unequal flags DF set", TCP pair: DF must match.
                "unequal DF tcp4",
                vec![tcp(t4(), 1, 100), tcp(with(t4(), |s| s.df = false), 101, 100)],
                ALL,
                alone(2),
            ),
            (
                // Its UDP pair.
                "unequal DF udp4",
                vec![udp(u4(), 100, 1), udp(with(u4(), |s| s.df = false), 100, 2)],
                ALL,
                alone(2),
            ),
            (
                // MF set (header checksum recomputed, so the fragment rule is
                // what keeps it apart): a fragment never merges.
                "MF set tcp4",
                vec![tcp(t4(), 1, 100), fixed(tcp(t4(), 101, 100), |p| p[6] |= 0x20)],
                ALL,
                alone(2),
            ),
            (
                // Its UDP pair (wireguard-go's "unequal flags more fragments set").
                "MF set udp4",
                vec![udp(u4(), 100, 1), fixed(udp(u4(), 100, 2), |p| p[6] |= 0x20)],
                ALL,
                alone(2),
            ),
            (
                // The reserved IPv4 flag bit must match, or it would be lost.
                "unequal IPv4 reserved flag",
                vec![tcp(t4(), 1, 100), fixed(tcp(t4(), 101, 100), |p| p[6] |= 0x80)],
                ALL,
                alone(2),
            ),
            (
                // wireguard-go's "ipv6 unequal hop limit", TCP pair.
                "unequal hop limit tcp6",
                vec![tcp(t6(), 1, 100), tcp(with(t6(), |s| s.ttl = 65), 101, 100)],
                ALL,
                alone(2),
            ),
            (
                // Its UDP pair.
                "unequal hop limit udp6",
                vec![udp(u6(), 100, 1), udp(with(u6(), |s| s.ttl = 65), 100, 2)],
                ALL,
                alone(2),
            ),
            (
                // wireguard-go's "ipv6 unequal traffic class", TCP pair.
                "unequal traffic class tcp6",
                vec![tcp(t6(), 1, 100), tcp(with(t6(), |s| s.tos = 0x10), 101, 100)],
                ALL,
                alone(2),
            ),
            (
                // Its UDP pair.
                "unequal traffic class udp6",
                vec![udp(u6(), 100, 1), udp(with(u6(), |s| s.tos = 0x10), 100, 2)],
                ALL,
                alone(2),
            ),
            (
                // The flow label must match, or it would be lost (not covered
                // by any checksum).
                "unequal flow label tcp6",
                vec![tcp(t6(), 1, 100), tcp(with(t6(), |s| s.flow_label = 3), 101, 100)],
                ALL,
                alone(2),
            ),
            (
                // Identical TCP options: equal ones merge...
                "equal TCP options merge",
                vec![tcp(t4().opts(&ts(7)), 1, 100), tcp(t4().opts(&ts(7)), 101, 100)],
                ALL,
                vec![(vec![0, 1], v4)],
            ),
            (
                // ...timestamps that differ, at the same length, do not.
                "differing TCP timestamps tcp4",
                vec![tcp(t4().opts(&ts(7)), 1, 100), tcp(t4().opts(&ts(8)), 101, 100)],
                ALL,
                alone(2),
            ),
            (
                // The same over IPv6.
                "differing TCP timestamps tcp6",
                vec![tcp(t6().opts(&ts(7)), 1, 100), tcp(t6().opts(&ts(8)), 101, 100)],
                ALL,
                alone(2),
            ),
            (
                // Nor do options of different lengths.
                "TCP options of different lengths",
                vec![tcp(t4().opts(&ts(7)), 1, 100), tcp(t4(), 101, 100)],
                ALL,
                alone(2),
            ),
            (
                // IPv4 options: never merged.
                "IPv4 options",
                vec![
                    with_ipv4_options(&tcp(t4(), 1, 100), &[1, 1, 1, 0]),
                    with_ipv4_options(&tcp(t4(), 101, 100), &[1, 1, 1, 0]),
                ],
                ALL,
                alone(2),
            ),
            (
                // IPv6 extension headers: never merged (two adjacent segments
                // that merge without the header, see "three tcp6 in sequence").
                "IPv6 extension header",
                vec![
                    with_hop_by_hop(&tcp(t6(), 1, 100)),
                    with_hop_by_hop(&tcp(t6(), 101, 100)),
                ],
                ALL,
                alone(2),
            ),
            (
                // A buffer longer than the IP total length (checksum made valid
                // over the whole buffer; the second packet follows on if the
                // trailing bytes were taken as payload).
                "bytes beyond the IP total length",
                vec![
                    fixed(tcp(t4(), 1, 100), |p| p.extend_from_slice(&[0, 0])),
                    tcp(t4(), 103, 100),
                ],
                ALL,
                alone(2),
            ),
            (
                // The UDP length must cover the IP payload exactly.
                "UDP length shorter than the IP payload",
                vec![
                    fixed(udp(u4(), 100, 1), |p| {
                        p[24..26].copy_from_slice(&106u16.to_be_bytes())
                    }),
                    udp(u4(), 100, 2),
                ],
                ALL,
                alone(2),
            ),
            (
                // A zero UDP checksum means none: merging would invent one.
                "zero UDP checksum is written alone",
                vec![zero_csum, udp(u4(), 100, 2)],
                ALL,
                alone(2),
            ),
            (
                // Coalescing switched off per protocol.
                "tcp off",
                vec![tcp(t4(), 1, 100), tcp(t4(), 101, 100)],
                NO_TCP,
                alone(2),
            ),
            (
                // UDP: same flow, equal sizes, a shorter last one: one unit.
                "udp4 merges",
                vec![udp(u4(), 100, 1), udp(u4(), 100, 2), udp(u4(), 60, 3)],
                ALL,
                vec![(vec![0, 1, 2], ul4)],
            ),
            (
                // The same over IPv6.
                "udp6 merges",
                vec![udp(u6(), 100, 1), udp(u6(), 100, 2)],
                ALL,
                vec![(vec![0, 1], ul4)],
            ),
            (
                // UDP coalescing switched off: each datagram alone.
                "udp off",
                vec![udp(u4(), 100, 1), udp(u4(), 100, 2)],
                NO_UDP,
                alone(2),
            ),
            (
                // Same addresses and ports, different protocols: two flows.
                "tcp and udp mixed",
                vec![
                    tcp(t4(), 1, 100),
                    udp(u4(), 100, 1),
                    tcp(t4(), 101, 100),
                    udp(u4(), 100, 2),
                ],
                ALL,
                vec![(vec![0, 2], v4), (vec![1, 3], ul4)],
            ),
        ];
        // Every row is checked; all that fail are reported.
        let mut failed = Vec::new();
        for (what, packets, cfg, want) in rows {
            let got = run(&packets, cfg);
            if got != want {
                failed.push(format!("{what}: got {got:?}, want {want:?}"));
            }
        }
        assert!(failed.is_empty(), "failing rows:\n{}", failed.join("\n"));
    }

    /// Checks the virtio header and the headers of the super-packet of `packets`
    /// (all of one flow, coalesced into one unit).
    fn check_unit(packets: &[Vec<u8>], gso_type: u8) {
        let refs: Vec<&[u8]> = packets.iter().map(|p| p.as_slice()).collect();
        let mut g = Gro::new(ALL);
        g.coalesce(&refs);
        let units: Vec<Unit<'_>> = g.units(&refs).collect();
        assert_eq!(units.len(), 1, "one unit");
        let u = units[0];
        let whole = u.to_vec();
        let b = whole.as_slice();
        assert_eq!(u.len(), b.len());
        // Gathered, not copied: the headers, then each member's payload where it lies.
        let parts: Vec<&[u8]> = u.parts().collect();
        assert_eq!(parts.len(), 1 + packets.len());
        for (part, p) in parts[1..].iter().zip(&refs) {
            let ip = parse_ip(p).unwrap();
            let hdr_len = ip.l4_offset + l4_header_len(p, ip.l4_offset, ip.proto).unwrap();
            assert_eq!(part.as_ptr(), p[hdr_len..].as_ptr(), "payload in place");
        }
        let first = &packets[0];
        let v6 = first[0] >> 4 == 6;
        let (l4, proto) = if v6 { (40, first[6]) } else { (20, first[9]) };
        let l4h = if proto == 6 {
            ((first[l4 + 12] >> 4) * 4) as usize
        } else {
            8
        };
        let (csum_offset, gso_size) = (if proto == 6 { 16 } else { 6 }, first.len() - l4 - l4h);
        assert_eq!(
            u.vnet,
            VnetHdr {
                flags: vnet::F_NEEDS_CSUM,
                gso_type,
                hdr_len: (l4 + l4h) as u16,
                gso_size: gso_size as u16,
                csum_start: l4 as u16,
                csum_offset,
            }
        );
        // The super-packet: the head's headers, then every payload in order.
        let want_len = l4 + l4h + packets.iter().map(|p| p.len() - l4 - l4h).sum::<usize>();
        assert_eq!(b.len(), want_len);
        let payloads: Vec<u8> = packets.iter().flat_map(|p| p[l4 + l4h..].to_vec()).collect();
        assert_eq!(&b[l4 + l4h..], payloads.as_slice());
        if v6 {
            assert_eq!(u16::from_be_bytes([b[4], b[5]]) as usize, b.len() - 40);
        } else {
            assert_eq!(u16::from_be_bytes([b[2], b[3]]) as usize, b.len());
            assert_eq!(reference_checksum(&b[..20], 0), 0, "IPv4 header checksum");
        }
        let l4_len = b.len() - l4;
        if proto == 17 {
            assert_eq!(
                u16::from_be_bytes([b[l4 + 4], b[l4 + 5]]) as usize,
                l4_len,
                "UDP length"
            );
        }
        // The L4 checksum field holds the pseudo-header sum, folded, not
        // complemented (what NEEDS_CSUM means), computed here independently.
        let (src, dst) = if v6 {
            (&b[8..24], &b[24..40])
        } else {
            (&b[12..16], &b[16..20])
        };
        let partial = !reference_checksum(&[], pseudo_sum(src, dst, proto, l4_len));
        let at = l4 + csum_offset as usize;
        assert_eq!(
            u16::from_be_bytes([b[at], b[at + 1]]),
            partial,
            "partial checksum"
        );
        // Finishing it as the kernel would gives a valid checksum over the whole super-packet.
        let mut done = b.to_vec();
        let full = reference_checksum(&done[l4..], 0);
        done[at..at + 2].copy_from_slice(&full.to_be_bytes());
        assert!(checksums_valid(&done), "finished super-packet checksum");
    }

    #[test]
    fn virtio_header_of_a_unit_tcp4_tcp6_udp4_udp6() {
        let tcp3 = |s: fn() -> Spec| {
            vec![
                tcp(s(), 1, 100),
                tcp(s(), 101, 100),
                tcp(s().flags(ACK_PSH), 201, 60),
            ]
        };
        let udp3 = |s: fn() -> Spec| vec![udp(s(), 100, 1), udp(s(), 100, 2), udp(s(), 60, 3)];
        check_unit(&tcp3(Spec::tcp4), vnet::GSO_TCPV4);
        check_unit(&tcp3(Spec::tcp6), vnet::GSO_TCPV6);
        check_unit(&udp3(Spec::udp4), vnet::GSO_UDP_L4);
        check_unit(&udp3(Spec::udp6), vnet::GSO_UDP_L4);
        // With TCP options: hdr_len covers them.
        let opts = |seq, len| tcp(Spec::tcp4().opts(&ts(9)), seq, len);
        check_unit(&[opts(1, 100), opts(101, 100)], vnet::GSO_TCPV4);
    }

    #[test]
    fn a_unit_ending_in_psh_carries_psh() {
        let packets = [
            tcp(Spec::tcp4(), 1, 100),
            tcp(Spec::tcp4().flags(ACK_PSH), 101, 100),
        ];
        let refs: Vec<&[u8]> = packets.iter().map(|p| p.as_slice()).collect();
        let mut g = Gro::new(ALL);
        g.coalesce(&refs);
        let u = g.units(&refs).next().unwrap();
        assert_eq!(u.packets, &[0, 1]);
        assert_eq!(u.to_vec()[33], ACK_PSH);
        assert_eq!(packets[0][33], ACK);
    }

    #[test]
    fn caps_64_udp_segments_and_64k() {
        let udp: Vec<Vec<u8>> = (0..100)
            .map(|i| Spec::udp4().build(&payload(100, i as u8)))
            .collect();
        let units = run(&udp, ALL);
        assert_eq!(units.iter().map(|u| u.0.len()).collect::<Vec<_>>(), vec![64, 36]);
        // TCP too: 100 small segments (10 kB, far below 64 KiB) give 64 + 36.
        let small: Vec<Vec<u8>> = (0..100).map(|i| tcp(Spec::tcp4(), 1 + i * 100, 100)).collect();
        let units = run(&small, ALL);
        assert_eq!(units.iter().map(|u| u.0.len()).collect::<Vec<_>>(), vec![64, 36]);
        let big: Vec<Vec<u8>> = (0..60).map(|i| tcp(Spec::tcp4(), 1 + i * 1400, 1400)).collect();
        let units = run(&big, ALL);
        for (m, _) in &units {
            assert!(m.len() * 1400 + 40 <= MAX_SUPER_PACKET);
        }
        assert_eq!(units.iter().map(|u| u.0.len()).sum::<usize>(), 60);
        assert!(units.len() >= 2);
    }

    /// Splits a unit the way the kernel would segment it.
    fn resplit(u: &Unit<'_>) -> Vec<Vec<u8>> {
        if u.vnet.gso_type == vnet::GSO_NONE {
            return vec![u.to_vec()];
        }
        let mut out = vec![0u8; 200_000];
        let mut lens = vec![0u32; 256];
        let n = split(&u.vnet, &u.to_vec(), &mut out, &mut lens).unwrap();
        let mut pos = 0;
        lens[..n]
            .iter()
            .map(|l| {
                let s = out[pos..pos + *l as usize].to_vec();
                pos += *l as usize;
                s
            })
            .collect()
    }

    #[test]
    fn coalesce_then_split_gives_back_the_input() {
        let mut x = 12345u32;
        let mut rnd = move |n: u32| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x % n
        };
        let mut g = Gro::new(ALL);
        for round in 0..300 {
            // A few flows of random kinds and segment sizes, interleaved.
            let kinds = [Spec::tcp4(), Spec::tcp6(), Spec::udp4(), Spec::udp6()];
            let flows = 1 + rnd(4) as usize;
            let mut specs: Vec<(Spec, u32, usize)> = (0..flows)
                .map(|f| {
                    let mut s = kinds[rnd(4) as usize].clone();
                    s.sport = 1000 + f as u16;
                    (s, 1 + rnd(1 << 30), 1 + rnd(1400) as usize)
                })
                .collect();
            let mut packets = vec![];
            for _ in 0..(1 + rnd(120)) {
                let f = rnd(flows as u32) as usize;
                let (spec, seq, size) = &mut specs[f];
                let len = if rnd(10) == 0 {
                    1 + rnd(*size as u32) as usize
                } else {
                    *size
                };
                let flags = if rnd(15) == 0 { 0x18 } else { 0x10 };
                let p = spec
                    .clone()
                    .seq(*seq)
                    .flags(flags)
                    .build(&payload(len, round as u8));
                *seq = seq.wrapping_add(len as u32);
                packets.push(p);
            }
            let refs: Vec<&[u8]> = packets.iter().map(|p| p.as_slice()).collect();
            g.coalesce(&refs);
            let mut back: Vec<(u32, Vec<u8>)> = vec![];
            for u in g.units(&refs) {
                let segs = resplit(&u);
                assert_eq!(segs.len(), u.packets.len());
                for (i, s) in u.packets.iter().zip(segs) {
                    assert!(checksums_valid(&s), "round {round}: invalid checksum after split");
                    back.push((*i, s));
                }
            }
            back.sort_by_key(|(i, _)| *i);
            assert_eq!(back.len(), packets.len());
            for (i, s) in &back {
                let mut want = packets[*i as usize].clone();
                let mut got = s.clone();
                if want[0] >> 4 == 4 {
                    // The IPv4 ID may differ (and with it the header checksum).
                    for b in [&mut want, &mut got] {
                        b[4..6].copy_from_slice(&[0, 0]);
                        b[10..12].copy_from_slice(&[0, 0]);
                    }
                }
                assert_eq!(got, want, "round {round} packet {i}");
            }
        }
    }

    #[test]
    fn corrupt_packets_never_come_out_valid() {
        let mut packets: Vec<Vec<u8>> = (0..10).map(|i| tcp(Spec::tcp4(), 1 + i * 100, 100)).collect();
        packets[4][50] ^= 1;
        let refs: Vec<&[u8]> = packets.iter().map(|p| p.as_slice()).collect();
        let mut g = Gro::new(ALL);
        g.coalesce(&refs);
        for u in g.units(&refs) {
            if u.packets.contains(&4) {
                assert_eq!(u.packets, &[4]);
                assert_eq!(u.to_vec(), packets[4]);
                assert_eq!(u.parts().count(), 1);
            }
        }
    }
}
