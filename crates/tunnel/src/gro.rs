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

/// A write unit: one `write()` of a virtio header and these bytes.
#[derive(Debug, Clone, Copy)]
pub struct Unit<'a> {
    /// The virtio header: `GSO_NONE` with no flags for a single packet.
    pub vnet: VnetHdr,
    /// The IP packet or super-packet.
    pub bytes: &'a [u8],
    /// Indices of the input packets this unit carries, in order (for the
    /// fallback: written one by one if the kernel refuses the unit).
    pub packets: &'a [u32],
}

#[derive(Debug, Clone, Copy)]
struct Flow {
    version: u8,
    proto: u8,
    /// Addresses and ports, zero-padded.
    key: [u8; 36],
    /// TCP ack number; must match to merge.
    ack: u32,
    /// TTL/hop limit, ToS/traffic class, DF, TCP header length: must match.
    attrs: u32,
    /// IPv6 flow label, or the IPv4 flag bits (reserved, DF): must match too,
    /// or a member's value would be lost when the kernel segments the unit.
    label: u32,
}

#[derive(Debug, Clone)]
struct UnitRec {
    flow: Option<Flow>,
    /// First input packet (its headers lead the super-packet).
    head: u32,
    /// Range in `members` of the input packets carried.
    members: Range<usize>,
    /// Range in `arena` of the super-packet; empty for a single.
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
    let attrs = u32::from_be_bytes([ttl, tos, df, l4h as u8]);
    let label = if ip.version == 4 {
        (p[6] & 0xe0) as u32
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
                if self.can_join(u, &c, p.len()) {
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

    fn can_join(&self, u: usize, c: &Candidate, len: usize) -> bool {
        let r = &self.units[u];
        let Some(f) = &r.flow else { return false };
        if r.closed
            || f.ack != c.flow.ack
            || f.attrs != c.flow.attrs
            || f.label != c.flow.label
            || c.payload > r.gso_size
        {
            return false;
        }
        if r.total + c.payload > MAX_SUPER_PACKET || len - c.hdr_len != c.payload {
            return false;
        }
        let count = self.pending.get(u).map_or(0, |m| m.len());
        if c.flow.proto == UDP {
            count < MAX_UDP_SEGMENTS
        } else {
            count < MAX_TCP_SEGMENTS && c.seq == r.next_seq
        }
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
            // Build the super-packet: the head whole, then each member's payload.
            let start = self.arena.len();
            for &m in &self.pending[u] {
                let p = packets[m as usize];
                let from = if m == r.head { 0 } else { r.hdr_len };
                self.arena.extend_from_slice(p.get(from..).unwrap_or(&[]));
            }
            r.bytes = start..self.arena.len();
            let f = r.flow.as_ref().map_or((4, TCP), |f| (f.version, f.proto));
            let b = &mut self.arena[r.bytes.clone()];
            let total = b.len();
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
        self.units.iter().zip(&self.hdrs).map(move |(r, h)| Unit {
            vnet: *h,
            bytes: if r.bytes.is_empty() {
                packets[r.head as usize]
            } else {
                &self.arena[r.bytes.clone()]
            },
            packets: &self.members[r.members.clone()],
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
    use crate::testutil::{checksums_valid, payload, Spec};

    const ALL: GroConfig = GroConfig { tcp: true, udp: true };

    /// Coalesces, returns (unit sizes in packets, unit gso types).
    fn run(packets: &[Vec<u8>], cfg: GroConfig) -> Vec<(Vec<u32>, u8)> {
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

    #[test]
    fn table() {
        let t4 = Spec::tcp4;
        let t6 = Spec::tcp6;
        let psh = 0x18;
        let mut other_flow = Spec::tcp4();
        other_flow.sport = 1001;
        let mut ttl = Spec::tcp4();
        ttl.ttl = 63;
        let mut tos = Spec::tcp4();
        tos.tos = 4;
        let mut no_df = Spec::tcp4();
        no_df.df = false;
        let mut hop = Spec::tcp6();
        hop.ttl = 1;
        let mut tclass = Spec::tcp6();
        tclass.tos = 0x10;
        let mut label = tcp(Spec::tcp6(), 101, 100);
        label[3] ^= 3; // flow label (not covered by any checksum)
        let mut bad_csum = tcp(t4(), 101, 100);
        bad_csum[40] ^= 0xff; // payload byte: L4 checksum no longer matches
        let mut mf = tcp(t4(), 201, 100);
        mf[6] |= 0x20; // more fragments
        type Row = (&'static str, Vec<Vec<u8>>, GroConfig, Vec<(Vec<u32>, u8)>);
        let rows: Vec<Row> = vec![
            // (what, packets, config, expected units: member indices and gso type)
            (
                "three tcp4 in sequence merge",
                vec![tcp(t4(), 1, 100), tcp(t4(), 101, 100), tcp(t4(), 201, 100)],
                ALL,
                vec![(vec![0, 1, 2], vnet::GSO_TCPV4)],
            ),
            (
                "three tcp6 in sequence merge",
                vec![tcp(t6(), 1, 100), tcp(t6(), 101, 100), tcp(t6(), 201, 100)],
                ALL,
                vec![(vec![0, 1, 2], vnet::GSO_TCPV6)],
            ),
            (
                "short last segment ends the unit",
                vec![tcp(t4(), 1, 100), tcp(t4(), 101, 50), tcp(t4(), 151, 100)],
                ALL,
                vec![(vec![0, 1], vnet::GSO_TCPV4), (vec![2], 0)],
            ),
            (
                "PSH in the middle ends the unit",
                vec![
                    tcp(t4(), 1, 100),
                    t4().seq(101).flags(psh).build(&payload(100, 101)),
                    tcp(t4(), 201, 100),
                ],
                ALL,
                vec![(vec![0, 1], vnet::GSO_TCPV4), (vec![2], 0)],
            ),
            (
                "out of order sequence stays apart",
                vec![tcp(t4(), 1, 100), tcp(t4(), 201, 100), tcp(t4(), 101, 100)],
                ALL,
                vec![(vec![0], 0), (vec![1], 0), (vec![2], 0)],
            ),
            (
                "two flows interleaved each merge",
                vec![
                    tcp(t4(), 1, 100),
                    tcp(other_flow.clone(), 1, 100),
                    tcp(t4(), 101, 100),
                    tcp(other_flow.clone(), 101, 100),
                ],
                ALL,
                vec![(vec![0, 2], vnet::GSO_TCPV4), (vec![1, 3], vnet::GSO_TCPV4)],
            ),
            (
                "bad checksum head is written alone",
                vec![bad_csum.clone(), tcp(t4(), 201, 100), tcp(t4(), 301, 100)],
                ALL,
                vec![(vec![0], 0), (vec![1, 2], vnet::GSO_TCPV4)],
            ),
            (
                "bad checksum in the middle is written alone, in order",
                vec![tcp(t4(), 1, 100), bad_csum.clone(), tcp(t4(), 201, 100)],
                ALL,
                vec![(vec![0], 0), (vec![1], 0), (vec![2], 0)],
            ),
            (
                "unequal TTL",
                vec![tcp(t4(), 1, 100), tcp(ttl, 101, 100)],
                ALL,
                vec![(vec![0], 0), (vec![1], 0)],
            ),
            (
                "unequal ToS",
                vec![tcp(t4(), 1, 100), tcp(tos, 101, 100)],
                ALL,
                vec![(vec![0], 0), (vec![1], 0)],
            ),
            (
                "unequal DF",
                vec![tcp(t4(), 1, 100), tcp(no_df, 101, 100)],
                ALL,
                vec![(vec![0], 0), (vec![1], 0)],
            ),
            (
                "MF set",
                vec![tcp(t4(), 101, 100), mf],
                ALL,
                vec![(vec![0], 0), (vec![1], 0)],
            ),
            (
                "unequal hop limit",
                vec![tcp(t6(), 1, 100), tcp(hop, 101, 100)],
                ALL,
                vec![(vec![0], 0), (vec![1], 0)],
            ),
            (
                "unequal traffic class",
                vec![tcp(t6(), 1, 100), tcp(tclass, 101, 100)],
                ALL,
                vec![(vec![0], 0), (vec![1], 0)],
            ),
            (
                "tcp off",
                vec![tcp(t4(), 1, 100), tcp(t4(), 101, 100)],
                GroConfig {
                    tcp: false,
                    udp: true,
                },
                vec![(vec![0], 0), (vec![1], 0)],
            ),
            (
                "udp4 merges",
                vec![
                    Spec::udp4().build(&payload(100, 1)),
                    Spec::udp4().build(&payload(100, 2)),
                    Spec::udp4().build(&payload(60, 3)),
                ],
                ALL,
                vec![(vec![0, 1, 2], vnet::GSO_UDP_L4)],
            ),
            (
                "udp6 merges",
                vec![
                    Spec::udp6().build(&payload(100, 1)),
                    Spec::udp6().build(&payload(100, 2)),
                ],
                ALL,
                vec![(vec![0, 1], vnet::GSO_UDP_L4)],
            ),
            (
                "udp off",
                vec![
                    Spec::udp4().build(&payload(100, 1)),
                    Spec::udp4().build(&payload(100, 2)),
                ],
                GroConfig {
                    tcp: true,
                    udp: false,
                },
                vec![(vec![0], 0), (vec![1], 0)],
            ),
            (
                "tcp and udp mixed",
                vec![
                    tcp(t4(), 1, 100),
                    Spec::udp4().build(&payload(100, 1)),
                    tcp(t4(), 101, 100),
                    Spec::udp4().build(&payload(100, 2)),
                ],
                ALL,
                vec![(vec![0, 2], vnet::GSO_TCPV4), (vec![1, 3], vnet::GSO_UDP_L4)],
            ),
        ];
        for (what, packets, cfg, want) in rows {
            assert_eq!(run(&packets, cfg), want, "{what}");
        }
    }

    #[test]
    fn zero_udp_checksum_is_written_alone() {
        let mut a = Spec::udp4().build(&payload(100, 1));
        a[26..28].copy_from_slice(&[0, 0]);
        let b = Spec::udp4().build(&payload(100, 2));
        assert_eq!(run(&[a, b], ALL), vec![(vec![0], 0), (vec![1], 0)]);
    }

    #[test]
    fn ipv6_extension_headers_are_not_merged() {
        let base = tcp(Spec::tcp6(), 1, 100);
        let mut p = base[..40].to_vec();
        p[6] = 0;
        p.extend_from_slice(&[6, 0, 1, 4, 0, 0, 0, 0]);
        p.extend_from_slice(&base[40..]);
        let plen = (p.len() - 40) as u16;
        p[4..6].copy_from_slice(&plen.to_be_bytes());
        assert_eq!(run(&[p.clone(), p], ALL), vec![(vec![0], 0), (vec![1], 0)]);
    }

    #[test]
    fn caps_64_udp_segments_and_64k() {
        let udp: Vec<Vec<u8>> = (0..100)
            .map(|i| Spec::udp4().build(&payload(100, i as u8)))
            .collect();
        let units = run(&udp, ALL);
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
            return vec![u.bytes.to_vec()];
        }
        let mut out = vec![0u8; 200_000];
        let mut lens = vec![0u32; 256];
        let n = split(&u.vnet, u.bytes, &mut out, &mut lens).unwrap();
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
                assert_eq!(u.bytes, packets[4].as_slice());
            }
        }
    }
}
