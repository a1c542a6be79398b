//! The internet checksum (RFC 1071), fast: 32-bit little-endian words (a
//! plain load on the targets we build for, which lets the compiler vectorize
//! the loop) summed into a 64-bit accumulator, folded at the end (2^16 = 1
//! mod 0xffff, so the result equals the 16-bit ones'-complement sum). The
//! sum does not depend on byte order (RFC 1071 2.B): the little-endian sum,
//! folded and byte-swapped, is the big-endian one.

/// Adds `data` to a running sum (in network byte order). Sums can be
/// chained, each part starting at an even offset of what is summed; [`fold`]
/// finishes them.
pub fn add(data: &[u8], mut sum: u64) -> u64 {
    let mut words = data.chunks_exact(4);
    let mut le = 0u64;
    for w in &mut words {
        // No overflow for any input below 2^34 bytes.
        le += u32::from_le_bytes([w[0], w[1], w[2], w[3]]) as u64;
    }
    sum += fold(le).swap_bytes() as u64;
    let mut rest = words.remainder();
    if rest.len() >= 2 {
        sum += u16::from_be_bytes([rest[0], rest[1]]) as u64;
        rest = &rest[2..];
    }
    if let Some(b) = rest.first() {
        sum += (*b as u64) << 8;
    }
    sum
}

/// Folds a sum to 16 bits with end-around carry (not inverted).
pub fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The checksum of `data` with an initial sum: the inverted fold.
pub fn checksum(data: &[u8], initial: u64) -> u16 {
    !fold(add(data, initial))
}

/// The pseudo-header sum of IPv4 or IPv6 for `proto` and an L4 length.
pub fn pseudo(src: &[u8], dst: &[u8], proto: u8, l4_len: u32) -> u64 {
    add(src, add(dst, 0)) + proto as u64 + (l4_len >> 16) as u64 + (l4_len & 0xffff) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_reference_for_every_length_up_to_9001() {
        let mut data = vec![0u8; 9001];
        let mut x = 0x1234_5678u32;
        for b in data.iter_mut() {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = x as u8;
        }
        for len in 0..=9001 {
            for offset in [0usize, 1] {
                if offset > len {
                    continue;
                }
                let d = &data[offset..len];
                assert_eq!(
                    checksum(d, 0),
                    crate::testutil::reference_checksum(d, 0),
                    "len {len} offset {offset}"
                );
            }
        }
        // All-ones data: the sum is 0 mod 0xffff, a corner of the fold.
        let ones = vec![0xffu8; 1500];
        assert_eq!(checksum(&ones, 0), crate::testutil::reference_checksum(&ones, 0));
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(add(&d, 0)), 0xddf2);
        assert_eq!(checksum(&d, 0), !0xddf2);
    }
}
