//! Packet builders and checkers for tests and fuzz targets (feature
//! `testutil`), with checksums from a plain reference implementation.
#![allow(missing_docs)]

/// RFC 1071 as written: 16-bit words, carry folded as it goes.
pub fn reference_checksum(data: &[u8], initial: u32) -> u16 {
    let mut sum: u32 = initial;
    let mut i = 0;
    while i + 1 < data.len() {
        sum += u16::from_be_bytes([data[i], data[i + 1]]) as u32;
        sum = (sum & 0xffff) + (sum >> 16);
        i += 2;
    }
    if i < data.len() {
        sum += (data[i] as u32) << 8;
        sum = (sum & 0xffff) + (sum >> 16);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The pseudo-header sum (IPv4 or IPv6: the length fits 16 bits here), not folded.
pub fn pseudo_sum(src: &[u8], dst: &[u8], proto: u8, len: usize) -> u32 {
    let mut s: u32 = 0;
    for c in src.chunks(2).chain(dst.chunks(2)) {
        s += u16::from_be_bytes([c[0], c[1]]) as u32;
    }
    s + proto as u32 + len as u32
}

/// Parameters of a test packet.
#[derive(Clone)]
pub struct Spec {
    pub v6: bool,
    pub udp: bool,
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub ttl: u8,
    pub tos: u8,
    pub df: bool,
    pub id: u16,
    /// IPv6 flow label (20 bits).
    pub flow_label: u32,
    pub tcp_opts: Vec<u8>,
}

impl Spec {
    pub fn tcp4() -> Spec {
        let mut src = [0u8; 16];
        let mut dst = [0u8; 16];
        src[..4].copy_from_slice(&[198, 18, 0, 1]);
        dst[..4].copy_from_slice(&[198, 18, 0, 2]);
        Spec {
            v6: false,
            udp: false,
            src,
            dst,
            sport: 1000,
            dport: 2000,
            seq: 1,
            ack: 1,
            flags: 0x10,
            ttl: 64,
            tos: 0,
            df: true,
            id: 100,
            flow_label: 0,
            tcp_opts: vec![],
        }
    }
    pub fn tcp6() -> Spec {
        let mut s = Spec::tcp4();
        s.v6 = true;
        s.src = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        s.dst = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
        s
    }
    pub fn udp4() -> Spec {
        Spec {
            udp: true,
            ..Spec::tcp4()
        }
    }
    pub fn udp6() -> Spec {
        Spec {
            udp: true,
            ..Spec::tcp6()
        }
    }
    pub fn seq(mut self, seq: u32) -> Spec {
        self.seq = seq;
        self
    }
    pub fn flags(mut self, f: u8) -> Spec {
        self.flags = f;
        self
    }
    /// TCP options (a multiple of 4 bytes).
    pub fn opts(mut self, opts: &[u8]) -> Spec {
        self.tcp_opts = opts.to_vec();
        self
    }

    /// The packet with `payload`, every checksum valid.
    pub fn build(&self, payload: &[u8]) -> Vec<u8> {
        let l4h = if self.udp { 8 } else { 20 + self.tcp_opts.len() };
        let iph = if self.v6 { 40 } else { 20 };
        let total = iph + l4h + payload.len();
        let mut p = vec![0u8; total];
        let (src, dst): (&[u8], &[u8]) = if self.v6 {
            (&self.src, &self.dst)
        } else {
            (&self.src[..4], &self.dst[..4])
        };
        let proto = if self.udp { 17 } else { 6 };
        if self.v6 {
            p[0] = 0x60 | (self.tos >> 4);
            p[1] = (self.tos << 4) | ((self.flow_label >> 16) & 0x0f) as u8;
            p[2..4].copy_from_slice(&(self.flow_label as u16).to_be_bytes());
            p[4..6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
            p[6] = proto;
            p[7] = self.ttl;
            p[8..24].copy_from_slice(src);
            p[24..40].copy_from_slice(dst);
        } else {
            p[0] = 0x45;
            p[1] = self.tos;
            p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            p[4..6].copy_from_slice(&self.id.to_be_bytes());
            if self.df {
                p[6] = 0x40;
            }
            p[8] = self.ttl;
            p[9] = proto;
            p[12..16].copy_from_slice(src);
            p[16..20].copy_from_slice(dst);
            let c = reference_checksum(&p[..20], 0);
            p[10..12].copy_from_slice(&c.to_be_bytes());
        }
        let l4 = iph;
        p[l4..l4 + 2].copy_from_slice(&self.sport.to_be_bytes());
        p[l4 + 2..l4 + 4].copy_from_slice(&self.dport.to_be_bytes());
        if self.udp {
            p[l4 + 4..l4 + 6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        } else {
            p[l4 + 4..l4 + 8].copy_from_slice(&self.seq.to_be_bytes());
            p[l4 + 8..l4 + 12].copy_from_slice(&self.ack.to_be_bytes());
            p[l4 + 12] = ((l4h / 4) as u8) << 4;
            p[l4 + 13] = self.flags;
            p[l4 + 14..l4 + 16].copy_from_slice(&65535u16.to_be_bytes());
            p[l4 + 20..l4 + l4h].copy_from_slice(&self.tcp_opts);
        }
        p[l4 + l4h..].copy_from_slice(payload);
        let ps = pseudo_sum(src, dst, proto, total - l4);
        let mut c = reference_checksum(&p[l4..], ps);
        if self.udp && c == 0 {
            c = 0xffff;
        }
        let at = if self.udp { l4 + 6 } else { l4 + 16 };
        p[at..at + 2].copy_from_slice(&c.to_be_bytes());
        p
    }
}

/// Recomputes the IPv4 header checksum and the TCP/UDP checksum of `p` after
/// a header was changed (reference implementation). The L4 checksum covers
/// everything after the IP headers, to the end of the buffer, with that length
/// in the pseudo-header: the way a coalescer that trusts the buffer checks it.
/// A UDP checksum that is zero in the packet stays zero (no checksum).
pub fn fix_checksums(p: &mut [u8]) {
    let Ok(ip) = crate::packet::parse_ip(p) else {
        return;
    };
    let l4 = ip.l4_offset;
    if ip.version == 4 {
        p[10..12].copy_from_slice(&[0, 0]);
        let c = reference_checksum(&p[..l4], 0);
        p[10..12].copy_from_slice(&c.to_be_bytes());
    }
    let at = match ip.proto {
        6 => l4 + 16,
        17 => l4 + 6,
        _ => return,
    };
    if at + 2 > p.len() || (ip.proto == 17 && p[at..at + 2] == [0, 0]) {
        return;
    }
    p[at..at + 2].copy_from_slice(&[0, 0]);
    let (src, dst) = crate::packet::addrs(p, ip.version);
    let ps = pseudo_sum(src, dst, ip.proto, p.len() - l4);
    let mut c = reference_checksum(&p[l4..], ps);
    if ip.proto == 17 && c == 0 {
        c = 0xffff;
    }
    p[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

/// `p` (IPv6, no extension headers) with an 8-byte hop-by-hop options header
/// (PadN) inserted before its L4 header; payload length updated. L4 checksums
/// stay valid: they do not cover extension headers.
pub fn with_hop_by_hop(p: &[u8]) -> Vec<u8> {
    let mut out = p[..40].to_vec();
    out[6] = 0; // next header: hop-by-hop
    out.extend_from_slice(&[p[6], 0, 1, 4, 0, 0, 0, 0]); // next: the L4 protocol, length 8, PadN
    out.extend_from_slice(&p[40..]);
    let plen = (out.len() - 40) as u16;
    out[4..6].copy_from_slice(&plen.to_be_bytes());
    out
}

/// `p` (IPv4 without options) with `opts` (a multiple of 4 bytes) as IPv4
/// options; lengths and checksums updated.
pub fn with_ipv4_options(p: &[u8], opts: &[u8]) -> Vec<u8> {
    let mut out = p[..20].to_vec();
    out.extend_from_slice(opts);
    out.extend_from_slice(&p[20..]);
    out[0] = 0x40 | ((20 + opts.len()) / 4) as u8;
    let total = out.len() as u16;
    out[2..4].copy_from_slice(&total.to_be_bytes());
    fix_checksums(&mut out);
    out
}

/// True if every checksum of `p` verifies (reference implementation).
pub fn checksums_valid(p: &[u8]) -> bool {
    let Ok(ip) = crate::packet::parse_ip(p) else {
        return false;
    };
    if ip.total_len != p.len() || (ip.proto != 6 && ip.proto != 17) {
        return false;
    }
    if ip.version == 4 && reference_checksum(&p[..ip.l4_offset], 0) != 0 {
        return false;
    }
    let (src, dst) = crate::packet::addrs(p, ip.version);
    let ps = pseudo_sum(src, dst, ip.proto, p.len() - ip.l4_offset);
    reference_checksum(&p[ip.l4_offset..], ps) == 0
}

/// A deterministic payload.
pub fn payload(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}
