//! Kernel tests: they need `CAP_NET_ADMIN`, so they are `#[ignore]`d and
//! counted as ignored in a plain `cargo test`; `npm test` runs them, as root,
//! with `cargo test -p tunnel --lib -- --ignored` (scripts/rust-kernel-tests.sh).
//!
//! Each test also moves its own thread into a fresh network namespace
//! (`unshare(CLONE_NEWNET)`) before touching anything, so the links and
//! addresses it makes can never reach the machine's namespace, tests cannot
//! see each other's links, and everything goes away with the thread. Only
//! 198.18.0.0/15 and 2001:db8::/32 are used.
use std::io;
use std::process::Command;

use super::*;

/// Moves the calling thread into a network namespace of its own.
fn enter_namespace(test: &str) {
    if let Err(e) = crate::sys::rtnl::unshare_network_namespace() {
        panic!("{test}: unshare(CLONE_NEWNET): {e} (kernel tests need root)");
    }
}

fn cidr(s: &str) -> Cidr {
    s.parse().expect("test CIDR")
}

/// The errno and request of a netlink error.
fn errno(r: Result<impl std::fmt::Debug>) -> (i32, &'static str) {
    match r {
        Err(Error::Netlink { op, source }) => (source.raw_os_error().unwrap_or(0), op),
        other => panic!("expected a netlink error, got {other:?}"),
    }
}

/// A link to test against: a dummy link, or, where the kernel has no dummy
/// driver, a persistent tun device made by `ip tuntap add`.
fn test_link(nl: &mut Netlink, name: &str) -> u32 {
    match nl.create_dummy(name) {
        Ok(index) => index,
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
            let status = Command::new("ip")
                .args(["tuntap", "add", "dev", name, "mode", "tun"])
                .status()
                .expect("run `ip tuntap add`");
            assert!(status.success(), "ip tuntap add dev {name}: {status}");
            nl.index_of(name)
                .expect("index_of")
                .expect("the tun device exists")
        }
        Err(e) => panic!("create dummy link {name}: {e}"),
    }
}

#[test]
#[ignore = "kernel test: needs root; `npm test` runs it as root with --ignored"]
fn netlink_addresses_v4_v6() {
    enter_namespace("netlink_addresses_v4_v6");
    let mut nl = Netlink::open().unwrap();
    let a = test_link(&mut nl, "nltest0");
    let b = test_link(&mut nl, "nltest1");
    assert_ne!(a, b);
    let v4 = cidr("198.18.1.1/24");
    let v6 = cidr("2001:db8:1::1/64");
    let other = cidr("198.18.99.1/24");

    nl.add_address(a, &v4).unwrap();
    nl.add_address(a, &v6).unwrap();
    nl.add_address(b, &other).unwrap();
    let got = nl.addresses(a).unwrap();
    assert!(got.contains(&v4) && got.contains(&v6), "{got:?}");
    assert!(!got.contains(&other), "filtered to the index: {got:?}");
    assert_eq!(nl.addresses(b).unwrap(), vec![other]);

    // Twice: EEXIST, named after the request.
    assert_eq!(errno(nl.add_address(a, &v4)), (libc::EEXIST, "RTM_NEWADDR"));
    assert_eq!(errno(nl.add_address(a, &v6)), (libc::EEXIST, "RTM_NEWADDR"));

    nl.remove_address(a, &v4).unwrap();
    let got = nl.addresses(a).unwrap();
    assert!(!got.contains(&v4) && got.contains(&v6), "{got:?}");
    assert_eq!(
        errno(nl.remove_address(a, &v4)),
        (libc::EADDRNOTAVAIL, "RTM_DELADDR")
    );
    nl.remove_address(a, &v6).unwrap();
    assert!(!nl.addresses(a).unwrap().contains(&v6));
    assert_eq!(
        errno(nl.remove_address(a, &v6)),
        (libc::EADDRNOTAVAIL, "RTM_DELADDR")
    );

    // The same address on another interface is another address.
    nl.add_address(a, &other).unwrap();
    assert!(nl.addresses(a).unwrap().contains(&other));
}

#[test]
#[ignore = "kernel test: needs root; `npm test` runs it as root with --ignored"]
fn netlink_ipv6_address_is_usable_at_once() {
    enter_namespace("netlink_ipv6_address_is_usable_at_once");
    let mut nl = Netlink::open().unwrap();
    let a = test_link(&mut nl, "nltest0");
    nl.set_up(a, true).unwrap();
    let v6 = cidr("2001:db8:6::1/64");
    nl.add_address(a, &v6).unwrap();
    // With IFA_F_NODAD the address is never tentative (without it, it stays
    // IFA_F_TENTATIVE here, the link having no carrier), and bind() works at once.
    let entries = nl.address_entries(a).unwrap();
    let e = entries.iter().find(|e| e.cidr == v6).expect("the address");
    assert_ne!(e.flags & u32::from(msg::IFA_F_NODAD), 0, "{e:?}");
    assert_eq!(e.flags & 0x40, 0, "IFA_F_TENTATIVE: {e:?}");
    let sock = std::net::UdpSocket::bind(("2001:db8:6::1", 0));
    assert!(sock.is_ok(), "bind to a fresh IPv6 address: {sock:?}");
}

#[test]
#[ignore = "kernel test: needs root; `npm test` runs it as root with --ignored"]
fn netlink_large_address_dump() {
    enter_namespace("netlink_large_address_dump");
    let mut nl = Netlink::open().unwrap();
    let a = test_link(&mut nl, "nltest0");
    // Enough for a multi-datagram (NLM_F_MULTI) dump.
    let want: Vec<Cidr> = (1..=300)
        .map(|i| cidr(&format!("2001:db8:3::{i:x}/128")))
        .collect();
    for c in &want {
        nl.add_address(a, c).unwrap();
    }
    let got = nl.addresses(a).unwrap();
    for c in &want {
        assert!(got.contains(c), "{c} missing from {} addresses", got.len());
    }
    // The socket is still in step after the dump.
    assert_eq!(nl.link(a).unwrap().index, a);
}

#[test]
#[ignore = "kernel test: needs root; `npm test` runs it as root with --ignored"]
fn netlink_mtu_and_up_down() {
    enter_namespace("netlink_mtu_and_up_down");
    let mut nl = Netlink::open().unwrap();
    let a = test_link(&mut nl, "nltest0");
    let l = nl.link(a).unwrap();
    assert_eq!(
        (l.index, l.name.as_str(), l.up, l.running),
        (a, "nltest0", false, false)
    );

    nl.set_mtu(a, 1400).unwrap();
    assert_eq!(nl.link(a).unwrap().mtu, 1400);
    nl.set_mtu(a, 9000).unwrap();
    assert_eq!(nl.link(a).unwrap().mtu, 9000);
    assert_eq!(errno(nl.set_mtu(a, 1)), (libc::EINVAL, "RTM_NEWLINK"));
    assert_eq!(nl.link(a).unwrap().mtu, 9000);

    nl.set_up(a, true).unwrap();
    let l = nl.link(a).unwrap();
    assert!(l.up, "{l:?}");
    assert_eq!(l.mtu, 9000, "up/down leaves the MTU alone");
    nl.set_up(a, false).unwrap();
    let l = nl.link(a).unwrap();
    assert!(!l.up && !l.running, "{l:?}");
    assert_eq!(nl.index_of("nltest0").unwrap(), Some(a));
    assert_eq!(nl.index_of("lo").unwrap(), Some(1));
}

#[test]
#[ignore = "kernel test: needs root; `npm test` runs it as root with --ignored"]
fn netlink_routes_v4_v6() {
    enter_namespace("netlink_routes_v4_v6");
    let mut nl = Netlink::open().unwrap();
    let a = test_link(&mut nl, "nltest0");
    let b = test_link(&mut nl, "nltest1");
    let v4 = cidr("198.18.2.77/24"); // host bits: the route is to 198.18.2.0/24
    let v6 = cidr("2001:db8:2::5/48");

    // IPv4 needs the device up, and the kernel says why.
    assert_eq!(errno(nl.add_route(a, &v4)), (libc::ENETDOWN, "RTM_NEWROUTE"));
    assert!(nl.last_error_message().is_some(), "extended ack message");

    nl.set_up(a, true).unwrap();
    nl.set_up(b, true).unwrap();
    nl.add_route(a, &v4).unwrap();
    assert!(nl.last_error_message().is_none());
    nl.add_route(a, &v6).unwrap();
    nl.add_route(b, &cidr("198.18.3.0/24")).unwrap();
    let got = nl.routes(a).unwrap();
    assert!(got.contains(&cidr("198.18.2.0/24")), "{got:?}");
    assert!(got.contains(&cidr("2001:db8:2::/48")), "{got:?}");
    assert!(
        !got.contains(&cidr("198.18.3.0/24")),
        "filtered by RTA_OIF: {got:?}"
    );
    assert_eq!(errno(nl.add_route(a, &v4)), (libc::EEXIST, "RTM_NEWROUTE"));

    nl.remove_route(a, &v4).unwrap();
    nl.remove_route(a, &v6).unwrap();
    let got = nl.routes(a).unwrap();
    assert!(!got.contains(&cidr("198.18.2.0/24")), "{got:?}");
    assert!(!got.contains(&cidr("2001:db8:2::/48")), "{got:?}");
    assert_eq!(errno(nl.remove_route(a, &v4)), (libc::ESRCH, "RTM_DELROUTE"));
    assert_eq!(errno(nl.remove_route(a, &v6)), (libc::ESRCH, "RTM_DELROUTE"));

    // An address brings the kernel's prefix route; remove_route leaves it alone.
    nl.add_address(a, &cidr("198.18.4.1/24")).unwrap();
    assert!(nl.routes(a).unwrap().contains(&cidr("198.18.4.0/24")));
    assert_eq!(
        errno(nl.remove_route(a, &cidr("198.18.4.0/24"))),
        (libc::ESRCH, "RTM_DELROUTE")
    );
    assert!(nl.routes(a).unwrap().contains(&cidr("198.18.4.0/24")));
}

#[test]
#[ignore = "kernel test: needs root; `npm test` runs it as root with --ignored"]
fn netlink_unknown_index() {
    enter_namespace("netlink_unknown_index");
    let mut nl = Netlink::open().unwrap();
    let bad = 999_999;
    let enodev = libc::ENODEV;
    assert_eq!(
        errno(nl.add_address(bad, &cidr("198.18.5.1/24"))),
        (enodev, "RTM_NEWADDR")
    );
    assert_eq!(
        errno(nl.add_address(bad, &cidr("2001:db8:5::1/64"))),
        (enodev, "RTM_NEWADDR")
    );
    assert_eq!(errno(nl.set_mtu(bad, 1400)), (enodev, "RTM_NEWLINK"));
    assert_eq!(errno(nl.set_up(bad, true)), (enodev, "RTM_NEWLINK"));
    assert_eq!(errno(nl.link(bad)), (enodev, "RTM_GETLINK"));
    assert_eq!(errno(nl.delete_link(bad)), (enodev, "RTM_DELLINK"));
    assert_eq!(
        errno(nl.add_route(bad, &cidr("198.18.5.0/24"))),
        (enodev, "RTM_NEWROUTE")
    );
    assert_eq!(nl.addresses(bad).unwrap(), vec![]);
    assert_eq!(nl.routes(bad).unwrap(), vec![]);
    assert_eq!(nl.index_of("nosuchlink0").unwrap(), None);
    // Caught before the kernel sees them.
    assert!(matches!(nl.set_mtu(0, 1400), Err(Error::InvalidArgument(_))));
    assert!(matches!(nl.index_of("a/b"), Err(Error::InvalidArgument(_))));
    let too_long = Cidr {
        addr: "198.18.5.1".parse().unwrap(),
        prefix: 33,
    };
    assert!(matches!(
        nl.add_address(1, &too_long),
        Err(Error::InvalidArgument(_))
    ));
    // The connection is still fine.
    assert_eq!(nl.link(1).unwrap().name, "lo");
}

#[test]
#[ignore = "kernel test: needs root; `npm test` runs it as root with --ignored"]
fn netlink_delete_link() {
    enter_namespace("netlink_delete_link");
    let mut nl = Netlink::open().unwrap();
    let a = test_link(&mut nl, "nltest0");
    nl.add_address(a, &cidr("198.18.6.1/24")).unwrap();
    nl.delete_link(a).unwrap();
    assert_eq!(nl.index_of("nltest0").unwrap(), None);
    assert_eq!(errno(nl.link(a)), (libc::ENODEV, "RTM_GETLINK"));
    assert_eq!(errno(nl.delete_link(a)), (libc::ENODEV, "RTM_DELLINK"));
    assert_eq!(nl.addresses(a).unwrap(), vec![]);
}

#[test]
#[ignore = "kernel test: needs root; `npm test` runs it as root with --ignored"]
fn netlink_create_link_by_kind() {
    enter_namespace("netlink_create_link_by_kind");
    let mut nl = Netlink::open().unwrap();
    // IFLA_LINKINFO/IFLA_INFO_KIND against the kernel, with whichever simple kind it has.
    let mut created = None;
    for kind in ["dummy", "ifb"] {
        match nl.create_link("nlkind0", kind) {
            Ok(index) => {
                created = Some(index);
                break;
            }
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                assert_eq!(nl.last_error_message(), Some("Unknown device type"));
            }
            Err(e) => panic!("create {kind}: {e}"),
        }
    }
    let Some(index) = created else {
        eprintln!("SKIP netlink_create_link_by_kind: neither dummy nor ifb in this kernel");
        return;
    };
    assert_eq!(nl.link(index).unwrap().name, "nlkind0");
    let again = nl
        .create_link("nlkind0", "ifb")
        .or_else(|_| nl.create_link("nlkind0", "dummy"));
    assert_eq!(errno(again), (libc::EEXIST, "RTM_NEWLINK"));
    nl.delete_link(index).unwrap();
    assert_eq!(nl.index_of("nlkind0").unwrap(), None);
}

#[test]
#[ignore = "kernel test: needs root; `npm test` runs it as root with --ignored"]
fn netlink_many_requests_on_one_socket() {
    enter_namespace("netlink_many_requests_on_one_socket");
    let mut nl = Netlink::open().unwrap();
    // A receive buffer too small for any answer grows to fit (nothing is cut off).
    nl.rx = vec![0; 8];
    let a = test_link(&mut nl, "nltest0");
    assert_eq!(nl.link(a).unwrap().name, "nltest0");
    assert!(nl.rx.len() > 1000, "{}", nl.rx.len());
    for mtu in 1280..1280 + 300 {
        nl.set_mtu(a, mtu).unwrap();
        if mtu % 50 == 0 {
            assert_eq!(nl.link(a).unwrap().mtu, mtu);
        }
    }
    // Errors in between do not put the socket out of step.
    for _ in 0..20 {
        let _ = errno(nl.link(999_999));
        assert_eq!(nl.link(a).unwrap().index, a);
    }
    let e: io::Error = match nl.link(999_999) {
        Err(Error::Netlink { source, .. }) => source,
        other => panic!("{other:?}"),
    };
    assert_eq!(e.raw_os_error(), Some(libc::ENODEV));
}
