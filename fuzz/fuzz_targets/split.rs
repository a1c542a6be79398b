//! GSO split of arbitrary frames: never panics, stays in bounds, and every
//! packet it produces is a whole IP packet with valid checksums.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tunnel::gso;
use tunnel::packet::parse_ip;
use tunnel::testutil::checksums_valid;
use tunnel::vnet::{self, VnetHdr};

fuzz_target!(|data: &[u8]| {
    let Some(hdr) = VnetHdr::decode(data) else { return };
    let pkt = &data[vnet::LEN..];
    let mut out = vec![0u8; 1 << 18];
    let mut lens = vec![0u32; 1024];
    let Ok(n) = gso::split(&hdr, pkt, &mut out, &mut lens) else { return };
    let plan = gso::plan(&hdr, pkt).expect("split succeeded, so plan does");
    assert_eq!(n, plan.segments);
    let total: usize = lens[..n].iter().map(|l| *l as usize).sum();
    assert_eq!(total, plan.bytes);
    assert!(total <= out.len());
    if hdr.gso_type & !vnet::GSO_ECN == vnet::GSO_NONE {
        if hdr.flags & vnet::F_NEEDS_CSUM == 0 {
            assert_eq!(&out[..total], pkt);
        }
        return;
    }
    // Segmented: each piece is a well-formed IP packet whose checksums verify.
    let mut pos = 0;
    for &len in &lens[..n] {
        let seg = &out[pos..pos + len as usize];
        pos += len as usize;
        let ip = parse_ip(seg).expect("segment parses");
        assert_eq!(ip.total_len, seg.len());
        assert!(checksums_valid(seg), "segment checksum");
    }
});
