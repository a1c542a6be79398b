//! The answer side of requests, fed literal datagrams; and never a panic on garbage.
use super::fixtures::*;
use super::*;

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// `bytes` with the sequence number `seq` (all messages).
fn with_seq(bytes: &[u8], seq: u32) -> Vec<u8> {
    let mut v = bytes.to_vec();
    let mut pos = 0;
    while pos + 16 <= v.len() {
        let len = u32::from_ne_bytes(v[pos..pos + 4].try_into().unwrap()) as usize;
        v[pos + 8..pos + 12].copy_from_slice(&seq.to_ne_bytes());
        pos += (len + 3) & !3;
    }
    v
}

#[test]
fn ack_ends_a_request() {
    let mut ex = Exchange::new("RTM_NEWADDR", 3, false);
    let mut seen = 0;
    assert_eq!(
        ex.feed(ACK, |_| {
            seen += 1;
            Ok(())
        })
        .unwrap(),
        Progress::Done
    );
    assert_eq!(seen, 0);
}

#[test]
fn getlink_collects_then_acks() {
    let mut ex = Exchange::new("RTM_GETLINK", 3, false);
    let mut links = Vec::new();
    let mut on = |m: &Message<'_>| {
        links.push(msg::parse_link(m.payload)?);
        Ok(())
    };
    // The link and the ack may come in one datagram or in two.
    assert_eq!(ex.feed(NEWLINK, &mut on).unwrap(), Progress::More);
    assert_eq!(ex.feed(ACK, &mut on).unwrap(), Progress::Done);
    let mut ex = Exchange::new("RTM_GETLINK", 3, false);
    assert_eq!(ex.feed(&cat(&[NEWLINK, ACK]), &mut on).unwrap(), Progress::Done);
    assert_eq!(links.len(), 2);
    assert_eq!(
        (links[0].name.as_str(), links[0].mtu, links[0].up),
        ("nltest0", 1400, true)
    );
}

#[test]
fn errors_name_the_request_and_keep_errno() {
    let mut ex = Exchange::new("RTM_NEWADDR", 6, false);
    match ex.feed(EEXIST_WITH_MESSAGE, |_| Ok(())) {
        Err(Error::Netlink { op, source }) => {
            assert_eq!(op, "RTM_NEWADDR");
            assert_eq!(source.raw_os_error(), Some(libc::EEXIST));
            assert_eq!(source.kind(), io::ErrorKind::AlreadyExists);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        ex.take_message().as_deref(),
        Some("ipv4: Address already assigned")
    );
}

#[test]
fn other_sequence_numbers_are_skipped() {
    // A late error for request 2, then our ack: the error is not ours.
    let mut ex = Exchange::new("RTM_NEWADDR", 3, false);
    let d = cat(&[&with_seq(EEXIST_WITH_MESSAGE, 2), &with_seq(NEWLINK, 2), ACK]);
    assert_eq!(ex.feed(&d, |_| panic!("not ours")).unwrap(), Progress::Done);
    // Only stale messages: still waiting.
    let mut ex = Exchange::new("RTM_NEWADDR", 4, false);
    assert_eq!(ex.feed(&d, |_| panic!("not ours")).unwrap(), Progress::More);
}

#[test]
fn dump_spans_datagrams_and_ends_with_done() {
    let mut ex = Exchange::new("RTM_GETADDR", 3, true);
    let mut got = Vec::new();
    let mut on = |m: &Message<'_>| {
        if m.kind == msg::RTM_NEWADDR {
            got.extend(msg::parse_address(m.payload)?.map(|a| a.cidr));
        }
        Ok(())
    };
    assert_eq!(ex.feed(NEWADDR_V4, &mut on).unwrap(), Progress::More);
    // A zero error inside a dump does not end it; other types are passed on and skipped.
    assert_eq!(
        ex.feed(&cat(&[ACK, NEWROUTE_V4, NEWADDR_V6]), &mut on).unwrap(),
        Progress::More
    );
    assert_eq!(ex.feed(DONE, &mut on).unwrap(), Progress::Done);
    assert_eq!(got.len(), 2);
    assert!(!ex.interrupted());
}

#[test]
fn dump_errors_and_interruptions() {
    // An error instead of the dump.
    let mut ex = Exchange::new("RTM_GETROUTE", 3, true);
    let e = ex
        .feed(&with_seq(EEXIST_WITH_MESSAGE, 3), |_| Ok(()))
        .unwrap_err();
    assert_eq!(
        (e.raw_os_error(), e.syscall()),
        (Some(libc::EEXIST), Some("RTM_GETROUTE"))
    );
    // NLMSG_DONE carrying an error.
    let mut done = DONE.to_vec();
    done[16..20].copy_from_slice(&(-libc::ENOBUFS).to_ne_bytes());
    let mut ex = Exchange::new("RTM_GETROUTE", 3, true);
    assert_eq!(
        ex.feed(&done, |_| Ok(())).unwrap_err().raw_os_error(),
        Some(libc::ENOBUFS)
    );
    // NLM_F_DUMP_INTR on any message marks the dump for repetition.
    let mut intr = NEWROUTE_V4.to_vec();
    intr[6] |= msg::NLM_F_DUMP_INTR as u8;
    let mut ex = Exchange::new("RTM_GETROUTE", 3, true);
    assert_eq!(ex.feed(&cat(&[&intr, DONE]), |_| Ok(())).unwrap(), Progress::Done);
    assert!(ex.interrupted());
    // NLMSG_DONE does not end a request that is not a dump.
    let mut ex = Exchange::new("RTM_NEWADDR", 3, false);
    assert_eq!(ex.feed(DONE, |_| Ok(())).unwrap(), Progress::More);
}

#[test]
fn malformed_datagrams_and_handler_errors_end_the_exchange() {
    let mut ex = Exchange::new("RTM_GETADDR", 3, true);
    let cut = &NEWADDR_V4[..NEWADDR_V4.len() - 1];
    assert!(matches!(ex.feed(cut, |_| Ok(())), Err(Error::Malformed { .. })));
    let mut ex = Exchange::new("RTM_GETADDR", 3, true);
    let mut bad = NEWADDR_V4.to_vec();
    bad[17] = 99; // prefix length 99 for IPv4
    let r = ex.feed(&bad, |m| msg::parse_address(m.payload).map(drop));
    assert!(matches!(r, Err(Error::Malformed { .. })), "{r:?}");
}

#[test]
fn captured_route_dump_filters_to_main_unicast_through_the_index() {
    let routes: Vec<Cidr> = msg::messages(ROUTE_DUMP)
        .filter_map(|m| msg::parse_route(m.unwrap().payload).unwrap())
        .filter(|r| route_through(r, 2))
        .map(|r| r.dst)
        .collect();
    let want: Vec<Cidr> = ["198.18.2.0/24", "198.18.5.0/24", "2001:db8:1::/64"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(routes, want);
    assert_eq!(
        msg::messages(ROUTE_DUMP)
            .filter(|m| {
                msg::parse_route(m.as_ref().unwrap().payload)
                    .unwrap()
                    .is_some_and(|r| route_through(&r, 3))
            })
            .count(),
        0
    );
}

/// Every parser over every message of `d`, as the client would run them;
/// with `deep`, also over every suffix of the first 64 bytes.
fn run_all(d: &[u8], dump: bool, deep: bool) {
    let mut ex = Exchange::new("X", 3, dump);
    let _ = ex.feed(d, |m| {
        let _ = msg::parse_link(m.payload);
        let _ = msg::parse_address(m.payload);
        let _ = msg::parse_route(m.payload);
        let _ = msg::parse_error(m);
        let _ = msg::parse_done(m);
        Ok(())
    });
    for m in msg::messages(d).flatten() {
        let _ = msg::parse_error(&m);
        let _ = msg::parse_done(&m);
        let _ = msg::parse_link(m.payload);
        let _ = msg::parse_address(m.payload);
        let _ = msg::parse_route(m.payload);
    }
    if deep {
        for start in 0..d.len().min(64) {
            let _ = msg::parse_link(&d[start..]);
            let _ = msg::parse_address(&d[start..]);
            let _ = msg::parse_route(&d[start..]);
            let _ = msg::attrs(d, start, "x").count();
        }
    }
}

#[test]
fn garbage_never_panics() {
    let eexist = with_seq(EEXIST_WITH_MESSAGE, 3);
    let small = cat(&[NEWADDR_V4, NEWADDR_V6, NEWROUTE_V4, NEWLINK, &eexist, ACK, DONE]);
    let mut uncapped = eexist.clone();
    uncapped[7] = 2; // ACK_TLVS without CAPPED: the echoed length is trusted no further than the buffer
    let link = newlink_tun();
    // Every truncation.
    for input in [&small, &uncapped, &link, &ROUTE_DUMP.to_vec()] {
        for cut in 0..=input.len() {
            run_all(&input[..cut], true, false);
            run_all(&input[..cut], false, false);
        }
    }
    // Every byte set to interesting values.
    for input in [&small, &uncapped] {
        for at in 0..input.len() {
            for v in [
                0u8,
                1,
                3,
                4,
                7,
                0x10,
                0x7f,
                0x80,
                0xfe,
                0xff,
                input[at].wrapping_add(1),
            ] {
                let mut m = input.clone();
                m[at] = v;
                run_all(&m, true, true);
                run_all(&m, false, false);
            }
        }
    }
    // Random multi-byte mutations and cuts (a fixed LCG: reproducible).
    let mut seed = 0x2545_f491_u32;
    let mut next = || {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
        (seed >> 8) as usize
    };
    for round in 0..20_000 {
        let mut m = match round % 3 {
            0 => small.clone(),
            1 => link.clone(),
            _ => ROUTE_DUMP.to_vec(),
        };
        for _ in 0..1 + next() % 6 {
            let at = next() % m.len();
            m[at] = next() as u8;
        }
        let cut = next() % (m.len() + 1);
        run_all(&m[..cut], next() % 2 == 0, round % 3 == 0);
    }
}
