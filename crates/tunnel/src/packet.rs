//! Minimal, bounds-checked views of IPv4/IPv6 packets and their TCP/UDP
//! headers: just what GSO split, GRO coalesce and the stream parser need.
//!
//! Nothing here panics: every offset is checked against the buffer, and a
//! packet that does not add up is [`Malformed`].

/// IP protocol number of TCP.
pub const TCP: u8 = 6;
/// IP protocol number of UDP.
pub const UDP: u8 = 17;

/// A packet that does not add up: what is wrong and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed {
    /// What was being read.
    pub what: &'static str,
    /// Where.
    pub offset: usize,
}

fn bad(what: &'static str, offset: usize) -> Malformed {
    Malformed { what, offset }
}

/// The network layer of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ip {
    /// 4 or 6.
    pub version: u8,
    /// Bytes of the IP header, IPv6 extension headers included: where L4 starts.
    pub l4_offset: usize,
    /// The L4 protocol (after IPv6 extension headers).
    pub proto: u8,
    /// The packet length the header claims.
    pub total_len: usize,
    /// IPv4 options or IPv6 extension headers are present.
    pub has_options: bool,
    /// A fragment (IPv4 MF or offset; an IPv6 fragment header).
    pub fragment: bool,
    /// An IPv6 routing header: the pseudo-header's destination is then not the
    /// header's destination field, so checksums cannot be redone from it.
    pub routing: bool,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// The length of the IP packet at the start of `b`: `Ok(None)` when more bytes
/// are needed to tell, `Err` when it is not an IP packet.
pub fn ip_packet_len(b: &[u8]) -> Result<Option<usize>, Malformed> {
    let Some(first) = b.first() else { return Ok(None) };
    match first >> 4 {
        4 => {
            if b.len() < 20 {
                return Ok(None);
            }
            let ihl = ((first & 0x0f) as usize) * 4;
            let total = u16_at(b, 2).unwrap_or(0) as usize;
            if ihl < 20 {
                return Err(bad("IPv4 header length", 0));
            }
            if total < ihl {
                return Err(bad("IPv4 total length", 2));
            }
            Ok(Some(total))
        }
        6 => {
            if b.len() < 40 {
                return Ok(None);
            }
            Ok(Some(40 + u16_at(b, 4).unwrap_or(0) as usize))
        }
        _ => Err(bad("IP version", 0)),
    }
}

/// Parses the IP header of `b` (which must hold the whole packet).
pub fn parse_ip(b: &[u8]) -> Result<Ip, Malformed> {
    let first = *b.first().ok_or(bad("empty packet", 0))?;
    match first >> 4 {
        4 => {
            if b.len() < 20 {
                return Err(bad("IPv4 header", 0));
            }
            let ihl = ((first & 0x0f) as usize) * 4;
            let total = u16_at(b, 2).unwrap_or(0) as usize;
            if ihl < 20 || ihl > b.len() {
                return Err(bad("IPv4 header length", 0));
            }
            if total < ihl || total > b.len() {
                return Err(bad("IPv4 total length", 2));
            }
            let frag = u16_at(b, 6).unwrap_or(0);
            Ok(Ip {
                version: 4,
                l4_offset: ihl,
                proto: b[9],
                total_len: total,
                has_options: ihl > 20,
                fragment: frag & 0x3fff != 0,
                routing: false,
            })
        }
        6 => {
            if b.len() < 40 {
                return Err(bad("IPv6 header", 0));
            }
            let total = 40 + u16_at(b, 4).unwrap_or(0) as usize;
            if total > b.len() {
                return Err(bad("IPv6 payload length", 4));
            }
            let mut next = b[6];
            let mut off = 40;
            let mut fragment = false;
            let mut routing = false;
            // Walk extension headers: hop-by-hop, routing, fragment, destination options, AH.
            for _ in 0..8 {
                match next {
                    0 | 43 | 60 => {
                        routing |= next == 43;
                        let len =
                            (*b.get(off + 1).ok_or(bad("IPv6 extension header", off))? as usize + 1) * 8;
                        next = *b.get(off).ok_or(bad("IPv6 extension header", off))?;
                        off += len;
                    }
                    44 => {
                        fragment = true;
                        next = *b.get(off).ok_or(bad("IPv6 fragment header", off))?;
                        off += 8;
                    }
                    51 => {
                        let len = (*b.get(off + 1).ok_or(bad("IPv6 AH", off))? as usize + 2) * 4;
                        next = *b.get(off).ok_or(bad("IPv6 AH", off))?;
                        off += len;
                    }
                    _ => break,
                }
                if off > total {
                    return Err(bad("IPv6 extension headers", off));
                }
            }
            Ok(Ip {
                version: 6,
                l4_offset: off,
                proto: next,
                total_len: total,
                has_options: off > 40,
                fragment,
                routing,
            })
        }
        _ => Err(bad("IP version", 0)),
    }
}

/// The length of the L4 header at `off`: TCP data offset, or 8 for UDP.
pub fn l4_header_len(b: &[u8], off: usize, proto: u8) -> Result<usize, Malformed> {
    match proto {
        TCP => {
            let doff = ((*b.get(off + 12).ok_or(bad("TCP header", off))? >> 4) as usize) * 4;
            if doff < 20 {
                return Err(bad("TCP data offset", off + 12));
            }
            if off + doff > b.len() {
                return Err(bad("TCP header", off));
            }
            Ok(doff)
        }
        UDP => {
            if off + 8 > b.len() {
                return Err(bad("UDP header", off));
            }
            Ok(8)
        }
        _ => Err(bad("L4 protocol", off)),
    }
}

/// Source and destination address bytes (4 or 16 each).
pub fn addrs(b: &[u8], version: u8) -> (&[u8], &[u8]) {
    if version == 4 {
        (b.get(12..16).unwrap_or(&[]), b.get(16..20).unwrap_or(&[]))
    } else {
        (b.get(8..24).unwrap_or(&[]), b.get(24..40).unwrap_or(&[]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths() {
        let mut v4 = [0u8; 28];
        v4[0] = 0x45;
        v4[2..4].copy_from_slice(&28u16.to_be_bytes());
        v4[9] = UDP;
        assert_eq!(ip_packet_len(&v4), Ok(Some(28)));
        assert_eq!(ip_packet_len(&v4[..10]), Ok(None));
        let ip = parse_ip(&v4).unwrap();
        assert_eq!(
            (ip.version, ip.l4_offset, ip.proto, ip.total_len),
            (4, 20, UDP, 28)
        );
        assert_eq!(l4_header_len(&v4, 20, UDP), Ok(8));
        v4[0] = 0x44;
        assert!(ip_packet_len(&v4).is_err());
        assert!(ip_packet_len(&[0x10; 40]).is_err());
    }

    #[test]
    fn ipv6_extension_headers() {
        // IPv6 + hop-by-hop (8 bytes) + destination options (16 bytes) + UDP.
        let mut p = vec![0u8; 40 + 8 + 16 + 8];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&((8 + 16 + 8) as u16).to_be_bytes());
        p[6] = 0; // hop-by-hop
        p[40] = 60; // next: destination options
        p[41] = 0; // 8 bytes
        p[48] = UDP;
        p[49] = 1; // 16 bytes
        let ip = parse_ip(&p).unwrap();
        assert_eq!((ip.l4_offset, ip.proto, ip.has_options), (64, UDP, true));
        // A lying extension length stays in bounds.
        p[49] = 200;
        assert!(parse_ip(&p).is_err());
    }

    #[test]
    fn no_panic_on_garbage() {
        let mut x = 7u32;
        let mut buf = [0u8; 80];
        for _ in 0..20000 {
            for b in buf.iter_mut() {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                *b = x as u8;
            }
            buf[0] = if x & 1 == 0 { 0x45 } else { 0x60 };
            let len = (x >> 8) as usize % 81;
            let _ = ip_packet_len(&buf[..len]);
            if let Ok(ip) = parse_ip(&buf[..len]) {
                let _ = l4_header_len(&buf[..len], ip.l4_offset, ip.proto);
            }
        }
    }
}
