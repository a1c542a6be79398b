//! GSO split: one frame read from the kernel (virtio header + super-packet)
//! becomes complete IP packets, every checksum finished.
//!
//! The virtio header is not trusted: header lengths come from the packet
//! itself, `csum_start`/`csum_offset` are range-checked, and anything that
//! does not add up is an error (the caller counts and drops it). No panics.
use crate::checksum::{add, checksum, fold};
use crate::packet::{addrs, l4_header_len, parse_ip, TCP, UDP};
use crate::vnet::{self, VnetHdr};

/// Why a frame could not be split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum GsoError {
    /// The packet's headers do not add up.
    Malformed {
        /// What.
        what: &'static str,
        /// Where.
        offset: usize,
    },
    /// `csum_start`/`csum_offset` point outside the packet.
    BadCsum {
        /// `csum_start`.
        start: u16,
        /// `csum_offset`.
        offset: u16,
        /// Packet length.
        len: usize,
    },
    /// A GSO type this code does not split (UFO, or a type that does not match the packet).
    Unsupported {
        /// `gso_type`.
        gso_type: u8,
    },
    /// `gso_size` is zero for a GSO frame.
    ZeroGsoSize,
    /// More segments than `lens` has room for (non-fatal: retry with more room).
    TooManySegments {
        /// Segments needed.
        needed: usize,
        /// Room.
        room: usize,
    },
    /// More bytes than `out` has room for (non-fatal: retry with more room).
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Room.
        room: usize,
    },
}

impl From<crate::packet::Malformed> for GsoError {
    fn from(m: crate::packet::Malformed) -> Self {
        GsoError::Malformed {
            what: m.what,
            offset: m.offset,
        }
    }
}

/// What a split will produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Number of packets.
    pub segments: usize,
    /// Total bytes of all packets.
    pub bytes: usize,
    /// Bytes of IP + L4 headers (0 for a frame that is not split).
    hdr_len: usize,
    /// L4 offset.
    l4: usize,
    /// Payload per segment.
    gso_size: usize,
}

/// Works out how many packets and bytes `split` will produce from `pkt`.
pub fn plan(hdr: &VnetHdr, pkt: &[u8]) -> Result<Plan, GsoError> {
    let gso = hdr.gso_type & !vnet::GSO_ECN;
    if gso == vnet::GSO_NONE {
        if hdr.flags & vnet::F_NEEDS_CSUM != 0 {
            let (s, o) = (hdr.csum_start as usize, hdr.csum_offset as usize);
            if s + o + 2 > pkt.len() {
                return Err(GsoError::BadCsum {
                    start: hdr.csum_start,
                    offset: hdr.csum_offset,
                    len: pkt.len(),
                });
            }
        }
        return Ok(Plan {
            segments: 1,
            bytes: pkt.len(),
            hdr_len: 0,
            l4: 0,
            gso_size: 0,
        });
    }
    let ip = parse_ip(pkt)?;
    let want = match gso {
        vnet::GSO_TCPV4 if ip.version == 4 => TCP,
        vnet::GSO_TCPV6 if ip.version == 6 => TCP,
        vnet::GSO_UDP_L4 => UDP,
        _ => {
            return Err(GsoError::Unsupported {
                gso_type: hdr.gso_type,
            })
        }
    };
    if ip.proto != want || ip.fragment || ip.routing {
        return Err(GsoError::Unsupported {
            gso_type: hdr.gso_type,
        });
    }
    if ip.total_len != pkt.len() {
        return Err(GsoError::Malformed {
            what: "IP length differs from the frame",
            offset: 0,
        });
    }
    let l4 = ip.l4_offset;
    let hdr_len = l4 + l4_header_len(pkt, l4, want)?;
    if hdr.gso_size == 0 {
        return Err(GsoError::ZeroGsoSize);
    }
    let payload = pkt.len() - hdr_len;
    let gso_size = hdr.gso_size as usize;
    let segments = payload.div_ceil(gso_size).max(1);
    Ok(Plan {
        segments,
        bytes: payload + segments * hdr_len,
        hdr_len,
        l4,
        gso_size,
    })
}

/// Splits `pkt` (the frame after its virtio header) into complete IP
/// packets laid end to end in `out`, writing each length to `lens`. Returns
/// the number of packets.
pub fn split(hdr: &VnetHdr, pkt: &[u8], out: &mut [u8], lens: &mut [u32]) -> Result<usize, GsoError> {
    let p = plan(hdr, pkt)?;
    if p.segments > lens.len() {
        return Err(GsoError::TooManySegments {
            needed: p.segments,
            room: lens.len(),
        });
    }
    if p.bytes > out.len() {
        return Err(GsoError::BufferTooSmall {
            needed: p.bytes,
            room: out.len(),
        });
    }
    if p.hdr_len == 0 {
        // Not segmented: copy, and finish a partial checksum.
        out[..pkt.len()].copy_from_slice(pkt);
        lens[0] = pkt.len() as u32;
        if hdr.flags & vnet::F_NEEDS_CSUM != 0 {
            let s = hdr.csum_start as usize;
            let at = s + hdr.csum_offset as usize;
            let mut c = checksum(&out[s..pkt.len()], 0);
            // A UDP checksum that computes to zero is sent as all ones.
            if c == 0 && hdr.csum_offset == 6 {
                c = 0xffff;
            }
            out[at..at + 2].copy_from_slice(&c.to_be_bytes());
        }
        return Ok(1);
    }
    let version = pkt[0] >> 4;
    let (h, l4) = (p.hdr_len, p.l4);
    let proto = if h - l4 == 8 { UDP } else { TCP };
    let payload = &pkt[h..];
    let id = u16::from_be_bytes([pkt[4], pkt[5]]);
    let seq = u32::from_be_bytes([pkt[l4 + 4], pkt[l4 + 5], pkt[l4 + 6], pkt[l4 + 7]]);
    let (src, dst) = addrs(pkt, version);
    let pseudo_addrs = add(src, add(dst, 0));
    let mut pos = 0;
    for (i, chunk) in payload
        .chunks(p.gso_size)
        .chain(std::iter::once(&payload[..0]))
        .enumerate()
    {
        if i >= p.segments {
            break;
        }
        let last = i + 1 == p.segments;
        let seg = &mut out[pos..pos + h + chunk.len()];
        seg[..h].copy_from_slice(&pkt[..h]);
        seg[h..].copy_from_slice(chunk);
        let seg_len = seg.len();
        if version == 4 {
            seg[2..4].copy_from_slice(&(seg_len as u16).to_be_bytes());
            seg[4..6].copy_from_slice(&id.wrapping_add(i as u16).to_be_bytes());
            seg[10..12].copy_from_slice(&[0, 0]);
            let c = checksum(&seg[..l4], 0);
            seg[10..12].copy_from_slice(&c.to_be_bytes());
        } else {
            seg[4..6].copy_from_slice(&((seg_len - 40) as u16).to_be_bytes());
        }
        let l4_len = seg_len - l4;
        if proto == TCP {
            let s = seq.wrapping_add((i * p.gso_size) as u32);
            seg[l4 + 4..l4 + 8].copy_from_slice(&s.to_be_bytes());
            let mut flags = seg[l4 + 13];
            if !last {
                flags &= !(0x01 | 0x08); // FIN, PSH only on the last segment
            }
            if i > 0 {
                flags &= !0x80; // CWR only on the first
            }
            seg[l4 + 13] = flags;
            seg[l4 + 16..l4 + 18].copy_from_slice(&[0, 0]);
        } else {
            seg[l4 + 4..l4 + 6].copy_from_slice(&(l4_len as u16).to_be_bytes());
            seg[l4 + 6..l4 + 8].copy_from_slice(&[0, 0]);
        }
        let sum = pseudo_addrs + proto as u64 + l4_len as u64;
        let mut c = !fold(add(&seg[l4..], sum));
        if proto == UDP && c == 0 {
            c = 0xffff;
        }
        let at = if proto == TCP { l4 + 16 } else { l4 + 6 };
        seg[at..at + 2].copy_from_slice(&c.to_be_bytes());
        lens[i] = seg_len as u32;
        pos += seg_len;
    }
    Ok(p.segments)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    fn vhdr(gso_type: u8, gso_size: u16, csum_start: u16, csum_offset: u16) -> VnetHdr {
        VnetHdr {
            flags: vnet::F_NEEDS_CSUM,
            gso_type,
            hdr_len: 0,
            gso_size,
            csum_start,
            csum_offset,
        }
    }

    /// Splits and checks: segment count, lengths, checksums, payload reassembly.
    fn check_split(spec: &Spec, payload_len: usize, gso_size: u16) -> Vec<Vec<u8>> {
        let data = payload(payload_len, 7);
        let pkt = spec.build(&data);
        let gso_type = match (spec.udp, spec.v6) {
            (true, _) => vnet::GSO_UDP_L4,
            (false, false) => vnet::GSO_TCPV4,
            (false, true) => vnet::GSO_TCPV6,
        };
        let l4 = if spec.v6 { 40 } else { 20 };
        let h = vhdr(gso_type, gso_size, l4, if spec.udp { 6 } else { 16 });
        let mut out = vec![0u8; 200_000];
        let mut lens = vec![0u32; 1024];
        let n = split(&h, &pkt, &mut out, &mut lens).unwrap();
        assert_eq!(n, payload_len.div_ceil(gso_size as usize).max(1));
        let mut pos = 0;
        let mut segs = vec![];
        let mut joined = vec![];
        for (i, len) in lens[..n].iter().enumerate() {
            let seg = out[pos..pos + *len as usize].to_vec();
            pos += *len as usize;
            assert!(checksums_valid(&seg), "segment {i} checksum");
            let hl = l4 as usize + if spec.udp { 8 } else { 20 };
            joined.extend_from_slice(&seg[hl..]);
            if !spec.udp {
                let seq = u32::from_be_bytes(seg[l4 as usize + 4..l4 as usize + 8].try_into().unwrap());
                assert_eq!(seq, spec.seq.wrapping_add(i as u32 * gso_size as u32));
            }
            if !spec.v6 {
                assert_eq!(
                    u16::from_be_bytes([seg[4], seg[5]]),
                    spec.id.wrapping_add(i as u16)
                );
            }
            segs.push(seg);
        }
        assert_eq!(joined, data);
        segs
    }

    #[test]
    fn split_tcp4_tcp6_udp4_udp6() {
        // (spec, payload bytes, gso_size): exact multiple, short last segment, single segment.
        for spec in [Spec::tcp4(), Spec::tcp6(), Spec::udp4(), Spec::udp6()] {
            for (len, size) in [
                (1448 * 4, 1448),
                (1000 * 3 + 17, 1000),
                (500, 1448),
                (65000, 1400),
            ] {
                let _ = check_split(&spec, len, size);
            }
        }
    }

    #[test]
    fn fin_and_psh_only_on_last_segment_cwr_only_on_first() {
        let spec = Spec::tcp4().flags(0x10 | 0x08 | 0x01 | 0x80); // ACK PSH FIN CWR
        let segs = check_split(&spec, 3000, 1000);
        assert_eq!(segs[0][33], 0x10 | 0x80);
        assert_eq!(segs[1][33], 0x10);
        assert_eq!(segs[2][33], 0x10 | 0x08 | 0x01);
    }

    #[test]
    fn ipv6_extension_header_payload_length() {
        // TCP over IPv6 with an 8-byte hop-by-hop header.
        let base = Spec::tcp6().build(&payload(3000, 1));
        let mut pkt = base[..40].to_vec();
        pkt[6] = 0; // hop-by-hop
        pkt.extend_from_slice(&[6, 0, 1, 4, 0, 0, 0, 0]); // next TCP, len 8, PadN
        pkt.extend_from_slice(&base[40..]);
        let plen = (pkt.len() - 40) as u16;
        pkt[4..6].copy_from_slice(&plen.to_be_bytes());
        let h = vhdr(vnet::GSO_TCPV6, 1000, 48, 16);
        let mut out = vec![0u8; 10_000];
        let mut lens = [0u32; 8];
        let n = split(&h, &pkt, &mut out, &mut lens).unwrap();
        assert_eq!(n, 3);
        let first = &out[..lens[0] as usize];
        assert_eq!(
            u16::from_be_bytes([first[4], first[5]]) as usize,
            first.len() - 40
        );
        assert_eq!(first.len(), 40 + 8 + 20 + 1000);
    }

    #[test]
    fn gso_none_needs_csum_is_finished() {
        let mut pkt = Spec::udp4().build(&payload(300, 3));
        // Replace the checksum with the pseudo-header partial sum, as the kernel hands it over.
        let (src, dst) = addrs(&pkt, 4);
        let ps = crate::checksum::pseudo(src, dst, UDP, (pkt.len() - 20) as u32);
        pkt[26..28].copy_from_slice(&fold(ps).to_be_bytes());
        let h = vhdr(vnet::GSO_NONE, 0, 20, 6);
        let mut out = vec![0u8; 2000];
        let mut lens = [0u32; 1];
        assert_eq!(split(&h, &pkt, &mut out, &mut lens), Ok(1));
        assert!(checksums_valid(&out[..lens[0] as usize]));
    }

    #[test]
    fn malformed_frames_are_errors() {
        let pkt = Spec::tcp4().build(&payload(3000, 1));
        let mut out = vec![0u8; 10_000];
        let mut lens = [0u32; 16];
        // (header, packet, expected error kind)
        let cases: Vec<(VnetHdr, Vec<u8>)> = vec![
            (vhdr(vnet::GSO_TCPV4, 0, 20, 16), pkt.clone()), // gso_size 0
            (vhdr(vnet::GSO_TCPV6, 1000, 20, 16), pkt.clone()), // v6 type on a v4 packet
            (vhdr(vnet::GSO_UDP_L4, 1000, 20, 6), pkt.clone()), // UDP type on TCP
            (vhdr(3, 1000, 20, 16), pkt.clone()),            // UFO
            (vhdr(vnet::GSO_TCPV4, 1000, 20, 16), pkt[..30].to_vec()), // truncated
            (vhdr(vnet::GSO_NONE, 0, 5000, 16), pkt.clone()), // csum_start beyond the packet
            (vhdr(vnet::GSO_NONE, 0, 20, 5000), pkt.clone()), // csum_offset beyond
            (vhdr(vnet::GSO_TCPV4, 1000, 20, 16), {
                let mut p = pkt.clone();
                p[32] = 0x40;
                p
            }), // data offset 16
        ];
        for (i, (h, p)) in cases.iter().enumerate() {
            assert!(split(h, p, &mut out, &mut lens).is_err(), "case {i}");
        }
        // IPv6 with a routing header: the pseudo-header destination is elsewhere; refused, not guessed.
        let base6 = Spec::tcp6().build(&payload(3000, 1));
        let mut rh = base6[..40].to_vec();
        rh[6] = 43;
        rh.extend_from_slice(&[6, 0, 0, 0, 0, 0, 0, 0]);
        rh.extend_from_slice(&base6[40..]);
        let plen = (rh.len() - 40) as u16;
        rh[4..6].copy_from_slice(&plen.to_be_bytes());
        assert!(matches!(
            split(&vhdr(vnet::GSO_TCPV6, 1000, 48, 16), &rh, &mut out, &mut lens),
            Err(GsoError::Unsupported { .. })
        ));
        // hdr_len is ignored: a lying value does not matter.
        let mut h = vhdr(vnet::GSO_TCPV4, 1000, 20, 16);
        h.hdr_len = 9999;
        assert_eq!(split(&h, &pkt, &mut out, &mut lens), Ok(3));
        // Room errors are distinct.
        assert!(matches!(
            split(&h, &pkt, &mut out, &mut lens[..2]),
            Err(GsoError::TooManySegments { needed: 3, room: 2 })
        ));
        assert!(matches!(
            split(&h, &pkt, &mut out[..100], &mut lens),
            Err(GsoError::BufferTooSmall { .. })
        ));
    }

    #[test]
    fn random_mutations_never_panic() {
        let bases = [
            Spec::tcp4().build(&payload(4000, 1)),
            Spec::udp6().build(&payload(4000, 2)),
        ];
        let mut out = vec![0u8; 200_000];
        let mut lens = vec![0u32; 4096];
        let mut x = 99u32;
        for i in 0..20_000 {
            let mut p = bases[i % 2].clone();
            for _ in 0..3 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let at = x as usize % p.len();
                p[at] = (x >> 8) as u8;
            }
            let cut = (x >> 3) as usize % (p.len() + 1);
            p.truncate(cut);
            let h = VnetHdr {
                flags: (x >> 20) as u8 & 3,
                gso_type: [0, 1, 4, 5, 0x81][(x >> 24) as usize % 5],
                hdr_len: (x >> 5) as u16,
                gso_size: (x >> 12) as u16 % 3000,
                csum_start: (x >> 14) as u16 % 100,
                csum_offset: (x >> 18) as u16 % 40,
            };
            let _ = split(&h, &p, &mut out, &mut lens);
        }
    }
}
