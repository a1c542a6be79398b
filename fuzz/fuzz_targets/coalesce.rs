//! GRO coalesce of packets built from fuzz input (valid ones, plus raw bytes):
//! never panics, every input goes out exactly once, singles unchanged, and
//! every super-packet splits back into exactly its input packets (IPv4 ID
//! aside) with valid checksums: a merge that loses a member's TCP options or
//! flow label fails that. A corrupt packet never comes out valid.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tunnel::gro::{Gro, GroConfig};
use tunnel::gso;
use tunnel::testutil::{checksums_valid, payload, Spec};

fuzz_target!(|data: &[u8]| {
    let mut packets: Vec<Vec<u8>> = Vec::new();
    let mut seqs = [1u32; 4];
    let mut it = data.chunks_exact(4);
    for c in &mut it {
        let flow = (c[0] & 3) as usize;
        let mut spec = match c[0] >> 6 {
            0 => Spec::tcp4(),
            1 => Spec::tcp6(),
            2 => Spec::udp4(),
            _ => Spec::udp6(),
        };
        spec.sport = 1000 + flow as u16;
        let len = 1 + (u16::from_be_bytes([c[1], c[2]]) as usize % 1500);
        spec.flags = if c[3] & 1 == 1 { 0x18 } else { 0x10 };
        spec.ttl = if c[3] & 2 == 2 { 63 } else { 64 };
        if c[3] & 4 == 4 {
            seqs[flow] = seqs[flow].wrapping_add(7); // a gap
        }
        if c[3] & 8 == 8 {
            // TCP timestamps, equal or not between packets of a flow (must match to merge).
            spec.tcp_opts = vec![1, 1, 8, 10, 0, 0, 0, c[2] & 1, 0, 0, 0, 1];
        }
        spec.flow_label = (c[1] & c[2] & 1) as u32; // IPv6 flow label, now and then
        let mut p = spec.seq(seqs[flow]).build(&payload(len, c[3]));
        seqs[flow] = seqs[flow].wrapping_add(len as u32);
        if c[3] & 0xf0 == 0xf0 {
            let at = c[1] as usize % p.len();
            p[at] ^= c[2] | 1; // corrupt one byte
        }
        packets.push(p);
    }
    if !it.remainder().is_empty() {
        packets.push(it.remainder().to_vec()); // not a packet at all
    }
    let refs: Vec<&[u8]> = packets.iter().map(|p| p.as_slice()).collect();
    let mut g = Gro::new(GroConfig { tcp: true, udp: true });
    g.coalesce(&refs);
    let mut seen = vec![false; packets.len()];
    let mut out = vec![0u8; 1 << 18];
    let mut lens = vec![0u32; 256];
    for u in g.units(&refs) {
        assert!(!u.packets.is_empty());
        for &i in u.packets {
            assert!(!seen[i as usize], "packet {i} twice");
            seen[i as usize] = true;
        }
        if u.packets.len() == 1 {
            assert_eq!(u.to_vec(), packets[u.packets[0] as usize], "singles go out unchanged");
            assert_eq!(u.parts().count(), 1);
            continue;
        }
        let whole = u.to_vec();
        assert_eq!(whole.len(), u.len());
        assert!(whole.len() <= 65535);
        assert_eq!(u.parts().count(), 1 + u.packets.len(), "headers, then each payload");
        let n = gso::split(&u.vnet, &whole, &mut out, &mut lens).expect("a unit splits");
        assert_eq!(n, u.packets.len());
        let mut pos = 0;
        for (&i, &len) in u.packets.iter().zip(&lens[..n]) {
            let mut got = out[pos..pos + len as usize].to_vec();
            pos += len as usize;
            assert!(checksums_valid(&got));
            let mut want = packets[i as usize].clone();
            assert!(checksums_valid(&want), "only valid packets merge");
            if want[0] >> 4 == 4 {
                for b in [&mut want, &mut got] {
                    b[4..6].copy_from_slice(&[0, 0]);
                    b[10..12].copy_from_slice(&[0, 0]);
                }
            }
            assert_eq!(got, want);
        }
    }
    assert!(seen.iter().all(|s| *s), "every packet goes out");
});
