//! A small hand-rolled rtnetlink client: addresses, routes, MTU, up/down,
//! link lookup and deletion.
//!
//! Messages are built and parsed by pure functions over byte buffers in
//! [`msg`]; only [`crate::sys::rtnl`] touches the socket.
//!
//! # Error policy
//! Every request carries `NLM_F_ACK` and a fresh sequence number; answers with
//! another sequence number are skipped. A kernel error comes back as
//! [`Error::Netlink`] naming the request (`RTM_NEWADDR`, ...) with the errno as
//! a raw OS error; the kernel's extended-ack text, if any, is kept in
//! [`Netlink::last_error_message`]. Socket failures are [`Error::Sys`]
//! (`sendto`, `recv`; a missing answer is `ETIMEDOUT` after
//! [`RECV_TIMEOUT_SECS`](crate::sys::rtnl::RECV_TIMEOUT_SECS) seconds), and a
//! reply that does not parse is [`Error::Malformed`]. After a `Sys` or
//! `Malformed` error the socket is replaced before the next request, so
//! leftovers of an abandoned answer can never be mistaken for a new one.
use std::fmt;
use std::io;

use crate::sys::rtnl::RtnlSocket;
use crate::{Cidr, Error, Result};

pub mod msg;

pub use msg::{AddressEntry, LinkInfo};
use msg::{Message, NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP, NLMSG_OVERRUN, NLM_F_DUMP_INTR};

/// How often a dump that the kernel marks inconsistent (`NLM_F_DUMP_INTR`) is repeated.
const DUMP_ATTEMPTS: usize = 5;
/// The first receive buffer; it grows to fit a larger datagram.
const RX_INITIAL: usize = 32 * 1024;
/// No rtnetlink datagram is larger than this; a claim beyond it is malformed.
const RX_MAX: usize = 16 * 1024 * 1024;

/// True for what [`Netlink::routes`] reports: a configured unicast route of
/// the main table whose output interface is `index`.
pub(crate) fn route_through(r: &msg::RouteEntry, index: u32) -> bool {
    r.oif == Some(index)
        && r.table == u32::from(msg::RT_TABLE_MAIN)
        && r.kind == msg::RTN_UNICAST
        && r.flags & msg::RTM_F_CLONED == 0
}

/// Where an exchange stands after a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Progress {
    /// The final answer has not come yet.
    More,
    /// The acknowledgement (or, for a dump, `NLMSG_DONE`) arrived.
    Done,
}

/// The answer side of one request: which messages belong to it and when it
/// ends. Pure: fed datagrams, it never touches a socket.
#[derive(Debug)]
pub(crate) struct Exchange {
    op: &'static str,
    seq: u32,
    dump: bool,
    interrupted: bool,
    message: Option<String>,
}

impl Exchange {
    /// An exchange for the request `op` sent with sequence number `seq`;
    /// `dump` if it was an `NLM_F_DUMP` request (it ends with `NLMSG_DONE`,
    /// otherwise with the acknowledgement).
    pub(crate) fn new(op: &'static str, seq: u32, dump: bool) -> Self {
        Exchange {
            op,
            seq,
            dump,
            interrupted: false,
            message: None,
        }
    }

    /// True if a message of the answer carried `NLM_F_DUMP_INTR`.
    pub(crate) fn interrupted(&self) -> bool {
        self.interrupted
    }

    /// The kernel's extended-ack message, if the final answer carried one.
    pub(crate) fn take_message(&mut self) -> Option<String> {
        self.message.take()
    }

    fn finish(&mut self, ack: msg::Ack<'_>) -> Result<Progress> {
        self.message = ack.message.map(str::to_owned);
        if ack.errno != 0 {
            return Err(Error::Netlink {
                op: self.op,
                source: io::Error::from_raw_os_error(ack.errno),
            });
        }
        Ok(Progress::Done)
    }

    /// Takes one datagram: skips messages of other sequence numbers and
    /// `NLMSG_NOOP`/`NLMSG_OVERRUN`, hands the rest to `on_message`, and maps
    /// the final answer. Messages after the final answer are ignored.
    pub(crate) fn feed(
        &mut self,
        datagram: &[u8],
        mut on_message: impl FnMut(&Message<'_>) -> Result<()>,
    ) -> Result<Progress> {
        for m in msg::messages(datagram) {
            let m = m?;
            if m.seq != self.seq {
                continue; // a late answer to an earlier request
            }
            if m.flags & NLM_F_DUMP_INTR != 0 {
                self.interrupted = true;
            }
            match m.kind {
                NLMSG_NOOP | NLMSG_OVERRUN => {}
                NLMSG_ERROR => {
                    let ack = msg::parse_error(&m)?;
                    // A dump is not acknowledged, only ended by NLMSG_DONE; an
                    // error still ends it.
                    if !self.dump || ack.errno != 0 {
                        return self.finish(ack);
                    }
                }
                NLMSG_DONE if self.dump => {
                    let ack = msg::parse_done(&m)?;
                    return self.finish(ack);
                }
                NLMSG_DONE => {}
                _ => on_message(&m)?,
            }
        }
        Ok(Progress::More)
    }
}

/// An rtnetlink connection (`NETLINK_ROUTE`) in the network namespace of the
/// thread that opened it.
///
/// Blocking: every method sends one request and waits (at most
/// [`RECV_TIMEOUT_SECS`](crate::sys::rtnl::RECV_TIMEOUT_SECS) seconds per
/// datagram) for the kernel's answer. Owns its socket; not `Clone`.
pub struct Netlink {
    sock: RtnlSocket,
    broken: bool,
    seq: u32,
    tx: Vec<u8>,
    rx: Vec<u8>,
    last_message: Option<String>,
}

impl fmt::Debug for Netlink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Netlink")
            .field("sock", &self.sock)
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

impl Netlink {
    /// Opens a `NETLINK_ROUTE` socket in the calling thread's network namespace.
    ///
    /// # Errors
    /// [`Error::Sys`] naming `socket`, `bind` or `setsockopt`.
    pub fn open() -> Result<Self> {
        Ok(Netlink {
            sock: RtnlSocket::open()?,
            broken: false,
            seq: 0,
            tx: Vec::with_capacity(256),
            rx: vec![0; RX_INITIAL],
            last_message: None,
        })
    }

    /// The kernel's extended-ack message about the last request (usually
    /// why it failed, such as "Device for nexthop is not up"), if it sent one.
    pub fn last_error_message(&self) -> Option<&str> {
        self.last_message.as_deref()
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        if self.seq == 0 {
            self.seq = 1; // 0 is what the kernel uses for notifications
        }
        self.seq
    }

    /// Receives one whole datagram into `self.rx`, growing it if needed; returns its length.
    fn recv_datagram(&mut self) -> Result<usize> {
        let recv_err = |e: io::Error| {
            let e = if e.kind() == io::ErrorKind::WouldBlock {
                io::Error::from_raw_os_error(libc::ETIMEDOUT)
            } else {
                e
            };
            Error::sys("recv", e)
        };
        let want = self.sock.recv(&mut self.rx, true).map_err(recv_err)?;
        if want > RX_MAX {
            return Err(Error::Malformed {
                what: "netlink datagram size",
                offset: 0,
                len: want,
            });
        }
        if want > self.rx.len() {
            self.rx.resize(want, 0);
        }
        let got = self.sock.recv(&mut self.rx, false).map_err(recv_err)?;
        if got > self.rx.len() {
            return Err(Error::Malformed {
                what: "netlink datagram (truncated)",
                offset: self.rx.len(),
                len: got,
            });
        }
        Ok(got)
    }

    /// Sends the request in `self.tx` (built with `seq`) and feeds the answer to
    /// `on_message` until it ends. Returns whether a dump was interrupted.
    fn run(
        &mut self,
        op: &'static str,
        seq: u32,
        dump: bool,
        on_message: impl FnMut(&Message<'_>) -> Result<()>,
    ) -> Result<bool> {
        if self.broken {
            self.sock = RtnlSocket::open()?;
            self.broken = false;
        }
        self.last_message = None;
        let mut ex = Exchange::new(op, seq, dump);
        let res = self.exchange(&mut ex, on_message);
        self.last_message = ex.take_message();
        if let Err(e) = &res {
            if !matches!(e, Error::Netlink { .. }) {
                self.broken = true;
            }
        }
        res.map(|()| ex.interrupted())
    }

    fn exchange(
        &mut self,
        ex: &mut Exchange,
        mut on_message: impl FnMut(&Message<'_>) -> Result<()>,
    ) -> Result<()> {
        self.sock.send(&self.tx).map_err(|e| Error::sys("sendto", e))?;
        loop {
            let n = self.recv_datagram()?;
            let datagram = self.rx.get(..n).unwrap_or_default();
            if ex.feed(datagram, &mut on_message)? == Progress::Done {
                return Ok(());
            }
        }
    }

    /// Dumps `kind` and collects what `parse` makes of each message,
    /// repeating the dump if the kernel marks it inconsistent.
    fn dump<T>(
        &mut self,
        op: &'static str,
        kind: u16,
        mut parse: impl FnMut(&Message<'_>) -> Result<Option<T>>,
    ) -> Result<Vec<T>> {
        for _ in 0..DUMP_ATTEMPTS {
            let seq = self.next_seq();
            msg::dump_request(&mut self.tx, kind, seq)?;
            let mut out = Vec::new();
            let interrupted = self.run(op, seq, true, |m| {
                if let Some(item) = parse(m)? {
                    out.push(item);
                }
                Ok(())
            })?;
            if !interrupted {
                return Ok(out);
            }
        }
        Err(Error::Netlink {
            op,
            source: io::Error::from_raw_os_error(libc::EINTR),
        })
    }

    /// Sends the request in `self.tx` and waits for its acknowledgement.
    fn ack(&mut self, op: &'static str, seq: u32) -> Result<()> {
        self.run(op, seq, false, |_| Ok(())).map(drop)
    }

    /// Adds `cidr` to interface `index` (`RTM_NEWADDR`, `NLM_F_CREATE|NLM_F_EXCL`).
    /// IPv4 gets `IFA_LOCAL` = `IFA_ADDRESS` (point-to-point, no broadcast); IPv6
    /// gets `IFA_F_NODAD`, so it is usable at once. The kernel adds the prefix route.
    ///
    /// # Errors
    /// `EEXIST` if it is already there, `ENODEV` for an unknown index;
    /// [`Error::InvalidArgument`] for index 0 or a prefix too long for the family.
    pub fn add_address(&mut self, index: u32, cidr: &Cidr) -> Result<()> {
        let seq = self.next_seq();
        msg::address_request(&mut self.tx, msg::RTM_NEWADDR, seq, index, cidr)?;
        self.ack("RTM_NEWADDR", seq)
    }

    /// Removes `cidr` (address and prefix length) from interface `index` (`RTM_DELADDR`).
    ///
    /// # Errors
    /// `EADDRNOTAVAIL` if it is not there, `ENODEV` for an unknown index.
    pub fn remove_address(&mut self, index: u32, cidr: &Cidr) -> Result<()> {
        let seq = self.next_seq();
        msg::address_request(&mut self.tx, msg::RTM_DELADDR, seq, index, cidr)?;
        self.ack("RTM_DELADDR", seq)
    }

    /// Routes the network of `dst` (host bits cleared) through interface
    /// `index`: `RTM_NEWROUTE`, main table, protocol boot, scope link,
    /// `NLM_F_CREATE|NLM_F_EXCL`.
    ///
    /// # Errors
    /// `EEXIST` if the route exists (for IPv4 that includes the prefix route
    /// the kernel made for an address of the same network), `ENETDOWN` if the
    /// interface is down (IPv4), `ENODEV` for an unknown index.
    pub fn add_route(&mut self, index: u32, dst: &Cidr) -> Result<()> {
        let seq = self.next_seq();
        msg::route_request(&mut self.tx, msg::RTM_NEWROUTE, seq, index, dst)?;
        self.ack("RTM_NEWROUTE", seq)
    }

    /// Removes the route to the network of `dst` through interface `index`
    /// (`RTM_DELROUTE`, main table). Only routes of protocol boot (those
    /// [`Netlink::add_route`] and `ip route add` make) match: the kernel's own
    /// prefix routes stay.
    ///
    /// # Errors
    /// `ESRCH` if there is no such route.
    pub fn remove_route(&mut self, index: u32, dst: &Cidr) -> Result<()> {
        let seq = self.next_seq();
        msg::route_request(&mut self.tx, msg::RTM_DELROUTE, seq, index, dst)?;
        self.ack("RTM_DELROUTE", seq)
    }

    /// Sets the MTU of interface `index` (`RTM_NEWLINK` with `IFLA_MTU`).
    ///
    /// # Errors
    /// `EINVAL` if the device does not accept it, `ENODEV` for an unknown index.
    pub fn set_mtu(&mut self, index: u32, mtu: u32) -> Result<()> {
        let seq = self.next_seq();
        msg::link_change_request(&mut self.tx, seq, index, 0, 0, Some(mtu))?;
        self.ack("RTM_NEWLINK", seq)
    }

    /// Sets interface `index` administratively up or down (`RTM_NEWLINK`,
    /// `IFF_UP` in `ifi_flags` and `ifi_change`).
    ///
    /// # Errors
    /// `ENODEV` for an unknown index.
    pub fn set_up(&mut self, index: u32, up: bool) -> Result<()> {
        let seq = self.next_seq();
        let flags = if up { msg::IFF_UP } else { 0 };
        msg::link_change_request(&mut self.tx, seq, index, flags, msg::IFF_UP, None)?;
        self.ack("RTM_NEWLINK", seq)
    }

    /// Deletes interface `index` (`RTM_DELLINK`), for example a persistent tun device.
    ///
    /// # Errors
    /// `ENODEV` for an unknown index, `EOPNOTSUPP` for links that cannot be deleted (`lo`).
    pub fn delete_link(&mut self, index: u32) -> Result<()> {
        let seq = self.next_seq();
        msg::link_delete_request(&mut self.tx, seq, index)?;
        self.ack("RTM_DELLINK", seq)
    }

    fn get_link(&mut self, index: u32, name: Option<&str>) -> Result<LinkInfo> {
        let seq = self.next_seq();
        msg::link_get_request(&mut self.tx, seq, index, name)?;
        let mut link = None;
        self.run("RTM_GETLINK", seq, false, |m| {
            if m.kind == msg::RTM_NEWLINK {
                link = Some(msg::parse_link(m.payload)?);
            }
            Ok(())
        })?;
        let link = link.ok_or(Error::Malformed {
            what: "RTM_GETLINK answer without a link",
            offset: 0,
            len: 0,
        })?;
        if name.is_none() && link.index != index {
            return Err(Error::Malformed {
                what: "RTM_GETLINK answer for another link",
                offset: 4,
                len: 0,
            });
        }
        Ok(link)
    }

    /// Name, MTU and state of interface `index` (`RTM_GETLINK`).
    ///
    /// # Errors
    /// `ENODEV` for an unknown index.
    pub fn link(&mut self, index: u32) -> Result<LinkInfo> {
        self.get_link(index, None)
    }

    /// The index of the interface called `name`, or `None` if there is none
    /// (`RTM_GETLINK` by `IFLA_IFNAME`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a name the kernel could not have.
    pub fn index_of(&mut self, name: &str) -> Result<Option<u32>> {
        match self.get_link(0, Some(name)) {
            Ok(link) => Ok(Some(link.index)),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The IPv4 and IPv6 addresses of interface `index` (an `RTM_GETADDR`
    /// dump, filtered here), in the kernel's order. For each, `IFA_LOCAL` is
    /// preferred over `IFA_ADDRESS` (they differ only with a peer). IPv6
    /// link-local addresses are included.
    ///
    /// # Errors
    /// An unknown index is not an error: it has no addresses.
    pub fn addresses(&mut self, index: u32) -> Result<Vec<Cidr>> {
        Ok(self.address_entries(index)?.into_iter().map(|a| a.cidr).collect())
    }

    /// Like [`Netlink::addresses`], with each address's flags (`IFA_F_*`:
    /// `IFA_F_TENTATIVE` while IPv6 duplicate address detection runs, ...).
    pub fn address_entries(&mut self, index: u32) -> Result<Vec<msg::AddressEntry>> {
        msg::check_index(index)?;
        self.dump("RTM_GETADDR", msg::RTM_GETADDR, |m| {
            if m.kind != msg::RTM_NEWADDR {
                return Ok(None);
            }
            Ok(msg::parse_address(m.payload)?.filter(|a| a.index == index))
        })
    }

    /// The destinations (network/prefix) of the unicast routes through
    /// interface `index` in the main table, IPv4 and IPv6 (an `RTM_GETROUTE`
    /// dump, filtered here by `RTA_OIF`). The kernel's prefix routes for the
    /// interface's addresses are included; cached routes are not.
    ///
    /// # Errors
    /// An unknown index is not an error: it has no routes.
    pub fn routes(&mut self, index: u32) -> Result<Vec<Cidr>> {
        msg::check_index(index)?;
        self.dump("RTM_GETROUTE", msg::RTM_GETROUTE, |m| {
            if m.kind != msg::RTM_NEWROUTE {
                return Ok(None);
            }
            Ok(msg::parse_route(m.payload)?
                .filter(|r| route_through(r, index))
                .map(|r| r.dst))
        })
    }

    /// Creates a link `name` of kind `link_kind` (`dummy`, `ifb`, ...) and
    /// returns its index. For tests: no kernel here has to have the kind.
    #[cfg(test)]
    pub(crate) fn create_link(&mut self, name: &str, link_kind: &str) -> Result<u32> {
        let seq = self.next_seq();
        msg::link_create_request(&mut self.tx, seq, name, link_kind)?;
        self.ack("RTM_NEWLINK", seq)?;
        self.index_of(name)?.ok_or(Error::Malformed {
            what: "created link not found",
            offset: 0,
            len: 0,
        })
    }

    /// Creates a dummy link `name` and returns its index.
    #[cfg(test)]
    pub(crate) fn create_dummy(&mut self, name: &str) -> Result<u32> {
        self.create_link(name, "dummy")
    }
}

#[cfg(all(test, target_endian = "little"))]
mod exchange_tests;
#[cfg(all(test, target_endian = "little"))]
mod fixtures;
#[cfg(test)]
mod netlink_as_root;
