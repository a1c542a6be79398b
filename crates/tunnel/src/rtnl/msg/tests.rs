//! Literal-byte tests (little-endian hosts: netlink is native-endian).
use super::*;
use crate::rtnl::fixtures::{newlink_tun, EEXIST_WITH_MESSAGE, NEWADDR_V4, NEWADDR_V6, ROUTE_DUMP};

fn cidr(s: &str) -> Cidr {
    s.parse().unwrap()
}

fn built(f: impl FnOnce(&mut Vec<u8>) -> Result<()>) -> Vec<u8> {
    let mut buf = vec![0xAA; 7]; // builders clear what was there
    f(&mut buf).unwrap();
    buf
}

#[test]
fn newaddr_v4_bytes() {
    let m = built(|b| address_request(b, RTM_NEWADDR, 9, 7, &cidr("198.18.5.1/24")));
    #[rustfmt::skip]
    let want: &[u8] = &[
        40, 0, 0, 0,  20, 0,  0x05, 0x06,  9, 0, 0, 0,  0, 0, 0, 0, // nlmsghdr: 40 bytes, RTM_NEWADDR, REQUEST|ACK|EXCL|CREATE, seq 9
        2, 24, 0, 0,  7, 0, 0, 0,                                   // ifaddrmsg: AF_INET /24, no flags, scope universe, index 7
        8, 0, 2, 0,  198, 18, 5, 1,                                 // IFA_LOCAL
        8, 0, 1, 0,  198, 18, 5, 1,                                 // IFA_ADDRESS
    ];
    assert_eq!(m, want);
}

#[test]
fn newaddr_v6_bytes() {
    let m = built(|b| address_request(b, RTM_NEWADDR, 1, 3, &cidr("2001:db8::1/64")));
    #[rustfmt::skip]
    let want: &[u8] = &[
        44, 0, 0, 0,  20, 0,  0x05, 0x06,  1, 0, 0, 0,  0, 0, 0, 0,
        10, 64, 0x02, 0,  3, 0, 0, 0,                               // AF_INET6 /64, IFA_F_NODAD, index 3
        20, 0, 1, 0,  0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0,  0, 0, 0, 0, 0, 0, 0, 1, // IFA_ADDRESS
    ];
    assert_eq!(m, want);
}

#[test]
fn deladdr_bytes() {
    let m = built(|b| address_request(b, RTM_DELADDR, 2, 7, &cidr("198.18.5.1/24")));
    #[rustfmt::skip]
    let want: &[u8] = &[
        40, 0, 0, 0,  21, 0,  0x05, 0,  2, 0, 0, 0,  0, 0, 0, 0,    // RTM_DELADDR, REQUEST|ACK
        2, 24, 0, 0,  7, 0, 0, 0,
        8, 0, 2, 0,  198, 18, 5, 1,
        8, 0, 1, 0,  198, 18, 5, 1,
    ];
    assert_eq!(m, want);
    let m = built(|b| address_request(b, RTM_DELADDR, 2, 7, &cidr("2001:db8::1/64")));
    assert_eq!(&m[16..24], &[10, 64, 0, 0, 7, 0, 0, 0], "no NODAD on delete");
}

#[test]
fn newroute_v4_bytes() {
    let m = built(|b| route_request(b, RTM_NEWROUTE, 1, 5, &cidr("198.18.11.77/24")));
    #[rustfmt::skip]
    let want: &[u8] = &[
        52, 0, 0, 0,  24, 0,  0x05, 0x06,  1, 0, 0, 0,  0, 0, 0, 0,
        2, 24, 0, 0,  254, 3, 253, 1,  0, 0, 0, 0,                  // rtmsg: AF_INET /24, main, boot, scope link, unicast
        8, 0, 1, 0,  198, 18, 11, 0,                                // RTA_DST: the network
        8, 0, 4, 0,  5, 0, 0, 0,                                    // RTA_OIF 5
        8, 0, 15, 0,  254, 0, 0, 0,                                 // RTA_TABLE main
    ];
    assert_eq!(m, want);
}

#[test]
fn delroute_v4_bytes() {
    let m = built(|b| route_request(b, RTM_DELROUTE, 1, 5, &cidr("198.18.11.0/24")));
    assert_eq!(&m[0..8], &[52, 0, 0, 0, 25, 0, 0x05, 0]);
    assert_eq!(
        &m[16..28],
        &[2, 24, 0, 0, 254, 3, 255, 1, 0, 0, 0, 0],
        "any scope"
    );
}

#[test]
fn newroute_v6_bytes() {
    let m = built(|b| route_request(b, RTM_NEWROUTE, 4, 5, &cidr("2001:db8:1:2::5/48")));
    #[rustfmt::skip]
    let want: &[u8] = &[
        64, 0, 0, 0,  24, 0,  0x05, 0x06,  4, 0, 0, 0,  0, 0, 0, 0,
        10, 48, 0, 0,  254, 3, 0, 1,  0, 0, 0, 0,                   // AF_INET6 /48, scope universe
        20, 0, 1, 0,  0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0,  0, 0, 0, 0, 0, 0, 0, 0,
        8, 0, 4, 0,  5, 0, 0, 0,
        8, 0, 15, 0,  254, 0, 0, 0,
    ];
    assert_eq!(m, want);
}

#[test]
fn link_change_bytes() {
    let m = built(|b| link_change_request(b, 3, 7, 0, 0, Some(1400)));
    #[rustfmt::skip]
    let want: &[u8] = &[
        40, 0, 0, 0,  16, 0,  0x05, 0,  3, 0, 0, 0,  0, 0, 0, 0,    // RTM_NEWLINK, REQUEST|ACK
        0, 0, 0, 0,  7, 0, 0, 0,  0, 0, 0, 0,  0, 0, 0, 0,          // ifinfomsg: index 7, no flag change
        8, 0, 4, 0,  0x78, 0x05, 0, 0,                              // IFLA_MTU 1400
    ];
    assert_eq!(m, want);
    let up = built(|b| link_change_request(b, 3, 7, IFF_UP, IFF_UP, None));
    assert_eq!(up.len(), 32);
    assert_eq!(
        &up[24..32],
        &[1, 0, 0, 0, 1, 0, 0, 0],
        "flags IFF_UP, change IFF_UP"
    );
    let down = built(|b| link_change_request(b, 3, 7, 0, IFF_UP, None));
    assert_eq!(&down[24..32], &[0, 0, 0, 0, 1, 0, 0, 0], "flags 0, change IFF_UP");
    // Bits outside `change` are never sent.
    let masked = built(|b| link_change_request(b, 3, 7, 0xffff_ffff, IFF_UP, None));
    assert_eq!(&masked[24..28], &[1, 0, 0, 0]);
}

#[test]
fn link_get_delete_create_bytes() {
    let m = built(|b| link_get_request(b, 5, 0, Some("tun0")));
    #[rustfmt::skip]
    let want: &[u8] = &[
        44, 0, 0, 0,  18, 0,  0x05, 0,  5, 0, 0, 0,  0, 0, 0, 0,    // RTM_GETLINK
        0, 0, 0, 0,  0, 0, 0, 0,  0, 0, 0, 0,  0, 0, 0, 0,
        9, 0, 3, 0,  b't', b'u', b'n', b'0', 0, 0, 0, 0,            // IFLA_IFNAME "tun0\0", padded
    ];
    assert_eq!(m, want);
    let m = built(|b| link_get_request(b, 5, 7, None));
    assert_eq!(m.len(), 32);
    assert_eq!(&m[20..24], &[7, 0, 0, 0]);

    let m = built(|b| link_delete_request(b, 6, 7));
    assert_eq!(&m[..8], &[32, 0, 0, 0, 17, 0, 0x05, 0]);
    assert_eq!(&m[20..24], &[7, 0, 0, 0]);

    let m = built(|b| link_create_request(b, 8, "d0", "dummy"));
    #[rustfmt::skip]
    let want: &[u8] = &[
        56, 0, 0, 0,  16, 0,  0x05, 0x06,  8, 0, 0, 0,  0, 0, 0, 0, // RTM_NEWLINK, CREATE|EXCL
        0, 0, 0, 0,  0, 0, 0, 0,  0, 0, 0, 0,  0, 0, 0, 0,
        7, 0, 3, 0,  b'd', b'0', 0, 0,                              // IFLA_IFNAME "d0\0"
        16, 0, 18, 0x80,                                            // IFLA_LINKINFO | NLA_F_NESTED
        9, 0, 1, 0,  b'd', b'u', b'm', b'm', b'y', 0, 0, 0,         //   IFLA_INFO_KIND "dummy"
    ];
    assert_eq!(m, want);
}

#[test]
fn dump_bytes() {
    let m = built(|b| dump_request(b, RTM_GETADDR, 3));
    #[rustfmt::skip]
    let want: &[u8] = &[
        24, 0, 0, 0,  22, 0,  0x05, 0x03,  3, 0, 0, 0,  0, 0, 0, 0, // RTM_GETADDR, REQUEST|ACK|DUMP
        0, 0, 0, 0,  0, 0, 0, 0,                                    // ifaddrmsg: AF_UNSPEC, all interfaces
    ];
    assert_eq!(m, want);
    assert_eq!(built(|b| dump_request(b, RTM_GETROUTE, 3)).len(), 28);
    assert_eq!(built(|b| dump_request(b, RTM_GETLINK, 3)).len(), 32);
    assert!(dump_request(&mut Vec::new(), RTM_NEWADDR, 3).is_err());
}

#[test]
fn bad_arguments_are_caught_before_the_kernel() {
    let mut b = Vec::new();
    let inval = |r: Result<()>| matches!(r, Err(Error::InvalidArgument(_)));
    assert!(inval(address_request(
        &mut b,
        RTM_NEWADDR,
        1,
        0,
        &cidr("198.18.0.1/24")
    )));
    assert!(inval(address_request(
        &mut b,
        RTM_NEWADDR,
        1,
        1 << 31,
        &cidr("198.18.0.1/24")
    )));
    let v4_33 = Cidr {
        addr: "198.18.0.1".parse().unwrap(),
        prefix: 33,
    };
    assert!(inval(address_request(&mut b, RTM_NEWADDR, 1, 1, &v4_33)));
    assert!(inval(route_request(&mut b, RTM_NEWROUTE, 1, 1, &v4_33)));
    assert!(inval(link_change_request(&mut b, 1, 0, 0, 0, Some(1500))));
    assert!(inval(link_delete_request(&mut b, 1, 0)));
    for name in ["", ".", "..", "a/b", "a:b", "a b", "a\0b", "sixteen-chars-xx"] {
        assert!(inval(link_get_request(&mut b, 1, 0, Some(name))), "{name:?}");
        assert!(inval(link_create_request(&mut b, 1, name, "dummy")), "{name:?}");
    }
    assert!(link_get_request(&mut b, 1, 0, Some("fifteen-chars-x")).is_ok());
    let mut m = Builder::new(&mut b, 1, 0, 1);
    assert!(m.attr(1, &[0; 65532]).is_err());
    assert!(m.attr(1, &[0; 65531]).is_ok());
}

#[test]
fn parses_captured_newaddr() {
    let ms: Vec<_> = messages(NEWADDR_V4).collect::<Result<_>>().unwrap();
    assert_eq!(ms.len(), 1);
    let m = ms[0];
    assert_eq!(
        (m.kind, m.flags, m.seq, m.port),
        (RTM_NEWADDR, NLM_F_MULTI, 3, 0xfc5a_9405)
    );
    let a = parse_address(m.payload).unwrap().unwrap();
    assert_eq!(
        a,
        AddressEntry {
            index: 2,
            cidr: cidr("198.18.5.1/24"),
            flags: 0x80
        }
    );

    let m = messages(NEWADDR_V6).next().unwrap().unwrap();
    let a = parse_address(m.payload).unwrap().unwrap();
    assert_eq!(
        a,
        AddressEntry {
            index: 2,
            cidr: cidr("2001:db8:1::1/64"),
            flags: 0x82
        }
    );
}

#[test]
fn parses_captured_newlink() {
    let d = newlink_tun();
    let ms: Vec<_> = messages(&d).collect::<Result<_>>().unwrap();
    assert_eq!(ms.len(), 1);
    assert_eq!(
        (ms[0].kind, ms[0].seq, ms[0].payload.len()),
        (RTM_NEWLINK, 5, 1492)
    );
    let l = parse_link(ms[0].payload).unwrap();
    // Up, but a tun device without an attached queue has no carrier.
    assert_eq!(
        l,
        LinkInfo {
            index: 2,
            name: "nltest0".into(),
            mtu: 1400,
            up: true,
            running: false
        }
    );
}

#[test]
fn parses_captured_route_dump() {
    let routes: Vec<RouteEntry> = messages(ROUTE_DUMP)
        .map(|m| parse_route(m.unwrap().payload).unwrap().unwrap())
        .collect();
    assert_eq!(routes.len(), 7);
    assert_eq!(routes[0].dst, cidr("198.18.2.0/24"));
    assert_eq!(
        (routes[0].table, routes[0].protocol, routes[0].oif),
        (254, RTPROT_BOOT, Some(2))
    );
    assert_eq!((routes[2].dst, routes[2].table), (cidr("198.18.5.1/32"), 255));
    assert_eq!((routes[6].dst, routes[6].kind), (cidr("ff00::/8"), 5)); // RTN_MULTICAST
}

#[test]
fn parses_captured_extended_ack() {
    let m = messages(EEXIST_WITH_MESSAGE).next().unwrap().unwrap();
    assert_eq!(
        (m.kind, m.flags, m.seq),
        (NLMSG_ERROR, NLM_F_CAPPED | NLM_F_ACK_TLVS, 6)
    );
    let ack = parse_error(&m).unwrap();
    assert_eq!(
        ack,
        Ack {
            errno: libc::EEXIST,
            message: Some("ipv4: Address already assigned")
        }
    );
}

#[test]
fn address_prefers_local_over_peer() {
    #[rustfmt::skip]
    let p: &[u8] = &[
        2, 32, 0, 0,  9, 0, 0, 0,
        8, 0, 1, 0,  198, 18, 0, 2,                                 // IFA_ADDRESS: the peer
        8, 0, 2, 0,  198, 18, 0, 1,                                 // IFA_LOCAL: ours
    ];
    assert_eq!(parse_address(p).unwrap().unwrap().cidr, cidr("198.18.0.1/32"));
    // Other families are not ours to judge.
    assert_eq!(parse_address(&[17, 0, 0, 0, 1, 0, 0, 0]).unwrap(), None);
}

#[test]
fn parses_newroute() {
    #[rustfmt::skip]
    let p: &[u8] = &[
        2, 24, 0, 0,  254, 3, 253, 1,  0, 0, 0, 0,
        8, 0, 15, 0,  254, 0, 0, 0,                                 // RTA_TABLE
        8, 0, 1, 0,  198, 18, 2, 0,                                 // RTA_DST
        8, 0, 4, 0,  7, 0, 0, 0,                                    // RTA_OIF
    ];
    let r = parse_route(p).unwrap().unwrap();
    assert_eq!(
        r,
        RouteEntry {
            dst: cidr("198.18.2.0/24"),
            table: 254,
            protocol: RTPROT_BOOT,
            scope: RT_SCOPE_LINK,
            kind: RTN_UNICAST,
            flags: 0,
            oif: Some(7),
        }
    );
    // A default route has no RTA_DST; RTA_TABLE supersedes rtm_table.
    #[rustfmt::skip]
    let p: &[u8] = &[
        10, 0, 0, 0,  252, 4, 0, 1,  0, 0, 0, 0,
        8, 0, 15, 0,  0x10, 0x27, 0, 0,                             // table 10000
    ];
    let r = parse_route(p).unwrap().unwrap();
    assert_eq!((r.dst, r.table, r.oif), (cidr("::/0"), 10000, None));
}

#[test]
fn parses_newlink() {
    let mut p = vec![0, 0, 0xfe, 0xff, 7, 0, 0, 0, 0x41, 0x10, 0, 0, 0, 0, 0, 0]; // UP|RUNNING|MULTICAST
    p.extend_from_slice(&[12, 0, 3, 0, b'n', b'l', b't', b'e', b's', b't', b'0', 0]);
    p.extend_from_slice(&[8, 0, 4, 0, 0x78, 0x05, 0, 0]);
    p.extend_from_slice(&[5, 0, 0x10, 0, 1, 0, 0, 0]); // IFLA_OPERSTATE, padded
    let l = parse_link(&p).unwrap();
    assert_eq!(
        l,
        LinkInfo {
            index: 7,
            name: "nltest0".into(),
            mtu: 1400,
            up: true,
            running: true
        }
    );
    p[8] = 0x01;
    assert!(!parse_link(&p).unwrap().running);
}

#[test]
fn parses_errors_and_acks() {
    // An ack: error 0 and the request's header.
    let mut ack = vec![36, 0, 0, 0, 2, 0, 0x00, 0x01, 9, 0, 0, 0, 0x39, 0x30, 0, 0];
    ack.extend_from_slice(&0i32.to_ne_bytes());
    ack.extend_from_slice(&[40, 0, 0, 0, 20, 0, 0x05, 0x06, 9, 0, 0, 0, 0x39, 0x30, 0, 0]);
    let m = messages(&ack).next().unwrap().unwrap();
    assert_eq!(
        parse_error(&m).unwrap(),
        Ack {
            errno: 0,
            message: None
        }
    );

    // -EEXIST, capped, with an extended-ack message and offset.
    #[rustfmt::skip]
    let err: &[u8] = &[
        64, 0, 0, 0,  2, 0,  0x00, 0x03,  9, 0, 0, 0,  0x39, 0x30, 0, 0, // NLMSG_ERROR, CAPPED|ACK_TLVS
        0xef, 0xff, 0xff, 0xff,                                          // -17
        40, 0, 0, 0,  20, 0,  0x05, 0x06,  9, 0, 0, 0,  0x39, 0x30, 0, 0,
        18, 0, 1, 0,  b'A', b'l', b'r', b'e', b'a', b'd', b'y', b' ', b't', b'h', b'e', b'r', b'e', 0, 0, 0,
        8, 0, 2, 0,  24, 0, 0, 0,                                        // NLMSGERR_ATTR_OFFS
    ];
    let m = messages(err).next().unwrap().unwrap();
    assert_eq!(
        parse_error(&m).unwrap(),
        Ack {
            errno: 17,
            message: Some("Already there")
        }
    );

    // Not capped: the whole request is echoed before the attributes.
    let mut full = vec![0u8; 16];
    full.extend_from_slice(&(-22i32).to_ne_bytes());
    let req = built(|b| address_request(b, RTM_NEWADDR, 9, 7, &cidr("198.18.5.1/24")));
    full.extend_from_slice(&req);
    full.extend_from_slice(&[8, 0, 1, 0, b'b', b'a', b'd', 0]);
    let len = full.len() as u32;
    full[0..4].copy_from_slice(&len.to_ne_bytes());
    full[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
    full[6..8].copy_from_slice(&NLM_F_ACK_TLVS.to_ne_bytes());
    let m = messages(&full).next().unwrap().unwrap();
    assert_eq!(
        parse_error(&m).unwrap(),
        Ack {
            errno: 22,
            message: Some("bad")
        }
    );

    // NLMSG_DONE with an error.
    let done = [
        20, 0, 0, 0, 3, 0, 2, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0xf9, 0xff, 0xff, 0xff,
    ];
    let m = messages(&done).next().unwrap().unwrap();
    assert_eq!(parse_done(&m).unwrap().errno, 7);
}

fn is_malformed<T: std::fmt::Debug>(r: Result<T>) -> bool {
    matches!(r, Err(Error::Malformed { .. }))
}

#[test]
fn truncated_and_inconsistent_replies_are_malformed() {
    // Every truncation of a message: a clean end only at 0 and the full length.
    for cut in 0..=NEWADDR_V4.len() {
        let r: Result<Vec<_>> = messages(&NEWADDR_V4[..cut]).collect();
        if cut == 0 || cut == NEWADDR_V4.len() {
            assert!(r.is_ok(), "cut {cut}");
        } else {
            assert!(is_malformed(r), "cut {cut}");
        }
    }
    // Every truncation of a payload that cuts into an attribute or the fixed header.
    let payload = &NEWADDR_V4[16..];
    for cut in 0..payload.len() {
        let r = parse_address(&payload[..cut]);
        let at_boundary = [16, 24, 36, 44].contains(&cut);
        if at_boundary {
            assert!(r.is_ok(), "cut {cut}");
        } else {
            assert!(is_malformed(r), "cut {cut}");
        }
    }
    // nlmsg_len below the header, or past the datagram.
    let mut m = NEWADDR_V4.to_vec();
    m[0] = 15;
    assert!(is_malformed(messages(&m).collect::<Result<Vec<_>>>()));
    m[0] = 81;
    assert!(is_malformed(messages(&m).collect::<Result<Vec<_>>>()));
    // rta_len below 4 (which would loop forever if trusted), past the end, wrong size.
    let mut p = NEWADDR_V4[16..].to_vec();
    p[8] = 3;
    assert!(is_malformed(parse_address(&p)));
    p[8] = 200;
    assert!(is_malformed(parse_address(&p)));
    p[8] = 7; // a 3-byte IPv4 address
    assert!(is_malformed(parse_address(&p)));
    // A prefix too long for the family.
    let mut p = NEWADDR_V4[16..].to_vec();
    p[1] = 33;
    assert!(is_malformed(parse_address(&p)));
    // No address at all.
    assert!(is_malformed(parse_address(&[2, 24, 0, 0, 7, 0, 0, 0])));
    // Short fixed headers.
    assert!(is_malformed(parse_link(&[0; 15])));
    assert!(is_malformed(parse_route(&[2; 11])));
    assert!(is_malformed(parse_link(&[0; 16])), "no name, no MTU");
    // nlmsgerr too short, or a positive error code.
    let short = [20, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    assert!(is_malformed(parse_error(
        &messages(&short).next().unwrap().unwrap()
    )));
    let mut positive = vec![36, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0];
    positive.extend_from_slice(&[0; 16]);
    assert!(is_malformed(parse_error(
        &messages(&positive).next().unwrap().unwrap()
    )));
    positive[16..20].copy_from_slice(&i32::MIN.to_ne_bytes());
    assert!(is_malformed(parse_error(
        &messages(&positive).next().unwrap().unwrap()
    )));
}

#[test]
fn several_messages_per_datagram() {
    let mut d = NEWADDR_V4.to_vec();
    d.extend_from_slice(NEWADDR_V6);
    d.extend_from_slice(&[20, 0, 0, 0, 3, 0, 2, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    let kinds: Vec<u16> = messages(&d).map(|m| m.unwrap().kind).collect();
    assert_eq!(kinds, [RTM_NEWADDR, RTM_NEWADDR, NLMSG_DONE]);
    // An unpadded last message is accepted; a padded one in the middle is skipped correctly.
    let mut d = vec![17, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0xEE, 0, 0, 0];
    d.extend_from_slice(&[17, 0, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0xEE]);
    let ms: Vec<_> = messages(&d).collect::<Result<_>>().unwrap();
    assert_eq!(ms.len(), 2);
    assert_eq!(ms[1].payload, &[0xEE]);
}
