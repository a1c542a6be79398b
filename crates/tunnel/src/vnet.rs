//! `struct virtio_net_hdr`: the 10 bytes before every packet on a tun device
//! opened with `IFF_VNET_HDR`. Native-endian (the legacy virtio layout that tun uses).
//!
//! What the kernel hands us is treated as untrusted: [`VnetHdr::decode`] only
//! reads the fields; the GSO code re-derives lengths from the packet itself.

/// Bytes of the header.
pub const LEN: usize = 10;
/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the L4 checksum holds only the pseudo-header sum.
pub const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_F_DATA_VALID`.
pub const F_DATA_VALID: u8 = 2;
/// `VIRTIO_NET_HDR_GSO_NONE`.
pub const GSO_NONE: u8 = 0;
/// `VIRTIO_NET_HDR_GSO_TCPV4`.
pub const GSO_TCPV4: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_TCPV6`.
pub const GSO_TCPV6: u8 = 4;
/// `VIRTIO_NET_HDR_GSO_UDP_L4`.
pub const GSO_UDP_L4: u8 = 5;
/// `VIRTIO_NET_HDR_GSO_ECN` bit.
pub const GSO_ECN: u8 = 0x80;

/// A decoded `virtio_net_hdr`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetHdr {
    /// `F_NEEDS_CSUM`, `F_DATA_VALID`.
    pub flags: u8,
    /// `GSO_*`, possibly with `GSO_ECN`.
    pub gso_type: u8,
    /// Length of the headers (a hint; recomputed on reads).
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Where checksumming starts (the L4 header).
    pub csum_start: u16,
    /// Where the checksum is stored, from `csum_start`.
    pub csum_offset: u16,
}

impl VnetHdr {
    /// Reads a header; `None` if `b` is shorter than [`LEN`].
    pub fn decode(b: &[u8]) -> Option<VnetHdr> {
        Self::decode_with(b, u16::from_ne_bytes)
    }

    /// Reads a header in little-endian byte order (the `--wire gso` format).
    pub fn decode_le(b: &[u8]) -> Option<VnetHdr> {
        Self::decode_with(b, u16::from_le_bytes)
    }

    fn decode_with(b: &[u8], word: fn([u8; 2]) -> u16) -> Option<VnetHdr> {
        let b = b.get(..LEN)?;
        let u16_at = |i: usize| word([b[i], b[i + 1]]);
        Some(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        })
    }

    /// The header's bytes in little-endian byte order (the `--wire gso` format).
    pub fn encode_le(&self) -> [u8; LEN] {
        let mut b = self.encode();
        for i in [2, 4, 6, 8] {
            let v = u16::from_ne_bytes([b[i], b[i + 1]]);
            b[i..i + 2].copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    /// The header's bytes.
    pub fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_short() {
        let h = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 52,
            gso_size: 1448,
            csum_start: 20,
            csum_offset: 16,
        };
        assert_eq!(VnetHdr::decode(&h.encode()), Some(h));
        assert_eq!(VnetHdr::decode_le(&h.encode_le()), Some(h));
        assert_eq!(h.encode_le(), [1, 1, 52, 0, 0xa8, 0x05, 20, 0, 16, 0]);
        assert_eq!(VnetHdr::decode(&[0; 9]), None);
        #[cfg(target_endian = "little")]
        assert_eq!(h.encode(), [1, 1, 52, 0, 0xa8, 0x05, 20, 0, 16, 0]);
    }
}
