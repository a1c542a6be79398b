//! The packet views: never panic, and what they report stays inside the buffer.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tunnel::packet::{ip_packet_len, l4_header_len, parse_ip};

fuzz_target!(|data: &[u8]| {
    let _ = ip_packet_len(data);
    if let Ok(ip) = parse_ip(data) {
        assert!(ip.l4_offset <= ip.total_len, "l4 offset inside the packet");
        assert!(ip.total_len <= data.len(), "total length inside the buffer");
        if let Ok(h) = l4_header_len(data, ip.l4_offset, ip.proto) {
            assert!(ip.l4_offset + h <= data.len());
        }
    }
});
