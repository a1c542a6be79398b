//! A small rtnetlink client: addresses, routes, MTU, up/down, link deletion.
//!
//! Messages are built and parsed by pure functions over byte buffers
//! ([`Msg`], [`parse_ack`], [`parse_link`]); only [`crate::sys::rtnl`] touches
//! the socket. Every request asks for an acknowledgement, and the kernel's
//! errno comes back as [`Error::Netlink`] naming the request.
use std::io;
use std::net::IpAddr;

use crate::sys::rtnl::RtnlSocket;
use crate::{Cidr, Error, Result};

/// `struct nlmsghdr` length.
const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;

const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_FLAGS: u16 = 8;
const IFA_F_NODAD: u32 = 0x02;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_TABLE: u16 = 15;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_BOOT: u8 = 3;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RT_SCOPE_LINK: u8 = 253;
const RTN_UNICAST: u8 = 1;
const IFF_UP: u32 = 0x1;

const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// A request being built: header, fixed part, attributes.
#[derive(Debug)]
pub struct Msg {
    buf: Vec<u8>,
}

impl Msg {
    /// Starts a message of `kind` with `flags` (REQUEST and ACK are added) and sequence `seq`.
    pub fn new(kind: u16, flags: u16, seq: u32) -> Self {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set by finish()
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it
        Msg { buf }
    }

    /// Appends raw bytes (a fixed header such as `ifaddrmsg`), padded to 4.
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        self.buf.resize(align4(self.buf.len()), 0);
        self
    }

    /// Appends an attribute.
    pub fn attr(&mut self, kind: u16, data: &[u8]) -> &mut Self {
        let len = 4 + data.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.bytes(data)
    }

    /// Sets the length and returns the bytes.
    pub fn finish(mut self) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

fn family(addr: &IpAddr) -> u8 {
    if addr.is_ipv4() {
        libc::AF_INET as u8
    } else {
        libc::AF_INET6 as u8
    }
}

fn addr_bytes(addr: &IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// `RTM_NEWADDR`/`RTM_DELADDR` for `cidr` on interface `index`.
pub fn address_msg(kind: u16, seq: u32, index: u32, cidr: &Cidr) -> Vec<u8> {
    let flags = if kind == RTM_NEWADDR {
        NLM_F_CREATE | NLM_F_EXCL
    } else {
        0
    };
    let mut m = Msg::new(kind, flags, seq);
    // struct ifaddrmsg: family, prefixlen, flags, scope, index.
    let mut ifa = [0u8; 8];
    ifa[0] = family(&cidr.addr);
    ifa[1] = cidr.prefix;
    ifa[3] = RT_SCOPE_UNIVERSE;
    ifa[4..8].copy_from_slice(&index.to_ne_bytes());
    m.bytes(&ifa);
    let a = addr_bytes(&cidr.addr);
    if cidr.is_ipv4() {
        m.attr(IFA_LOCAL, &a);
    }
    m.attr(IFA_ADDRESS, &a);
    if !cidr.is_ipv4() && kind == RTM_NEWADDR {
        // Usable at once: no duplicate address detection on a point-to-point tun.
        m.attr(IFA_FLAGS, &IFA_F_NODAD.to_ne_bytes());
    }
    m.finish()
}

/// `RTM_NEWROUTE`/`RTM_DELROUTE` for the network of `dst` through interface `index`.
pub fn route_msg(kind: u16, seq: u32, index: u32, dst: &Cidr) -> Vec<u8> {
    let flags = if kind == RTM_NEWROUTE {
        NLM_F_CREATE | NLM_F_EXCL
    } else {
        0
    };
    let mut m = Msg::new(kind, flags, seq);
    // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags(u32).
    let mut rt = [0u8; 12];
    rt[0] = family(&dst.addr);
    rt[1] = dst.prefix;
    rt[4] = RT_TABLE_MAIN;
    rt[5] = RTPROT_BOOT;
    rt[6] = if dst.is_ipv4() {
        RT_SCOPE_LINK
    } else {
        RT_SCOPE_UNIVERSE
    };
    rt[7] = RTN_UNICAST;
    m.bytes(&rt);
    m.attr(RTA_DST, &addr_bytes(&dst.network()));
    m.attr(RTA_OIF, &index.to_ne_bytes());
    m.attr(RTA_TABLE, &(RT_TABLE_MAIN as u32).to_ne_bytes());
    m.finish()
}

/// `RTM_NEWLINK` changing interface `index`: `flags`/`change` for up/down, an optional MTU.
pub fn link_msg(kind: u16, seq: u32, index: u32, flags: u32, change: u32, mtu: Option<u32>) -> Vec<u8> {
    let mut m = Msg::new(kind, 0, seq);
    // struct ifinfomsg: family, pad, type(u16), index(i32), flags(u32), change(u32).
    let mut ifi = [0u8; 16];
    ifi[0] = libc::AF_UNSPEC as u8;
    ifi[4..8].copy_from_slice(&(index as i32).to_ne_bytes());
    ifi[8..12].copy_from_slice(&flags.to_ne_bytes());
    ifi[12..16].copy_from_slice(&change.to_ne_bytes());
    m.bytes(&ifi);
    if let Some(mtu) = mtu {
        m.attr(IFLA_MTU, &mtu.to_ne_bytes());
    }
    m.finish()
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn malformed(what: &'static str, offset: usize, len: usize) -> Error {
    Error::Malformed { what, offset, len }
}

/// One message of a datagram: its type, sequence number and payload.
#[derive(Debug, Clone, Copy)]
pub struct Reply<'a> {
    /// `nlmsg_type`.
    pub kind: u16,
    /// `nlmsg_seq`.
    pub seq: u32,
    /// The bytes after the header.
    pub payload: &'a [u8],
}

/// Splits a datagram into messages; a truncated or inconsistent one is an error.
pub fn messages(buf: &[u8]) -> Result<Vec<Reply<'_>>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + NLMSG_HDRLEN <= buf.len() {
        let len = u32_at(buf, pos).ok_or_else(|| malformed("netlink header", pos, buf.len()))? as usize;
        if len < NLMSG_HDRLEN || pos + len > buf.len() {
            return Err(malformed("netlink message length", pos, buf.len()));
        }
        let kind = u16_at(buf, pos + 4).ok_or_else(|| malformed("netlink header", pos, buf.len()))?;
        let seq = u32_at(buf, pos + 8).ok_or_else(|| malformed("netlink header", pos, buf.len()))?;
        out.push(Reply {
            kind,
            seq,
            payload: &buf[pos + NLMSG_HDRLEN..pos + len],
        });
        pos += align4(len);
    }
    if pos < buf.len() && buf.len() - pos >= 4 {
        return Err(malformed("netlink trailing bytes", pos, buf.len()));
    }
    Ok(out)
}

/// The errno of an `NLMSG_ERROR` payload: `Ok(())` for an acknowledgement (error 0).
pub fn parse_ack(payload: &[u8], op: &'static str) -> Result<()> {
    let err = u32_at(payload, 0).ok_or_else(|| malformed("netlink error", 0, payload.len()))? as i32;
    if err == 0 {
        return Ok(());
    }
    let errno = err.checked_neg().filter(|e| *e > 0).unwrap_or(libc::EIO);
    Err(Error::Netlink {
        op,
        source: io::Error::from_raw_os_error(errno),
    })
}

/// What [`Netlink::link`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// MTU.
    pub mtu: u32,
    /// `IFF_UP` is set.
    pub up: bool,
}

/// Parses an `RTM_NEWLINK` payload (`ifinfomsg` and attributes).
pub fn parse_link(payload: &[u8]) -> Result<LinkInfo> {
    let len = payload.len();
    let index = u32_at(payload, 4).ok_or_else(|| malformed("ifinfomsg", 0, len))?;
    let flags = u32_at(payload, 8).ok_or_else(|| malformed("ifinfomsg", 0, len))?;
    let mut info = LinkInfo {
        index,
        name: String::new(),
        mtu: 0,
        up: flags & IFF_UP != 0,
    };
    let mut pos = 16;
    while pos + 4 <= len {
        let alen = u16_at(payload, pos).ok_or_else(|| malformed("rtattr", pos, len))? as usize;
        let kind = u16_at(payload, pos + 2).ok_or_else(|| malformed("rtattr", pos, len))? & 0x3fff;
        if alen < 4 || pos + alen > len {
            return Err(malformed("rtattr length", pos, len));
        }
        let data = &payload[pos + 4..pos + alen];
        match kind {
            IFLA_MTU => info.mtu = u32_at(data, 0).ok_or_else(|| malformed("IFLA_MTU", pos, len))?,
            IFLA_IFNAME => {
                let end = data.iter().position(|b| *b == 0).unwrap_or(data.len());
                info.name = String::from_utf8_lossy(&data[..end]).into_owned();
            }
            _ => {}
        }
        pos += align4(alen);
    }
    Ok(info)
}

/// An rtnetlink connection in the calling thread's network namespace.
#[derive(Debug)]
pub struct Netlink {
    sock: RtnlSocket,
    seq: u32,
    buf: Vec<u8>,
}

impl Netlink {
    /// Opens a `NETLINK_ROUTE` socket.
    pub fn open() -> Result<Self> {
        let sock = RtnlSocket::open().map_err(|e| Error::sys("socket", e))?;
        Ok(Netlink {
            sock,
            seq: 1,
            buf: vec![0; 32 * 1024],
        })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sends `msg` and waits for the answer with sequence `seq`: `NLMSG_ERROR`
    /// (ack or errno), collecting `RTM_NEWLINK` payloads on the way for `link`.
    fn request(&mut self, op: &'static str, seq: u32, msg: &[u8]) -> Result<Option<LinkInfo>> {
        self.sock.send(msg).map_err(|e| Error::sys("sendto", e))?;
        let mut link = None;
        loop {
            let n = self.sock.recv(&mut self.buf).map_err(|e| Error::sys("recv", e))?;
            for m in messages(&self.buf[..n])? {
                if m.seq != seq {
                    continue; // a late answer to something else
                }
                match m.kind {
                    NLMSG_ERROR => {
                        parse_ack(m.payload, op)?;
                        return Ok(link);
                    }
                    NLMSG_DONE => return Ok(link),
                    RTM_NEWLINK => link = Some(parse_link(m.payload)?),
                    _ => {}
                }
            }
        }
    }

    /// Adds `cidr` to interface `index`.
    pub fn add_address(&mut self, index: u32, cidr: &Cidr) -> Result<()> {
        let seq = self.next_seq();
        self.request("RTM_NEWADDR", seq, &address_msg(RTM_NEWADDR, seq, index, cidr))
            .map(drop)
    }

    /// Removes `cidr` from interface `index`.
    pub fn remove_address(&mut self, index: u32, cidr: &Cidr) -> Result<()> {
        let seq = self.next_seq();
        self.request("RTM_DELADDR", seq, &address_msg(RTM_DELADDR, seq, index, cidr))
            .map(drop)
    }

    /// Routes the network of `dst` through interface `index` (main table).
    pub fn add_route(&mut self, index: u32, dst: &Cidr) -> Result<()> {
        let seq = self.next_seq();
        self.request("RTM_NEWROUTE", seq, &route_msg(RTM_NEWROUTE, seq, index, dst))
            .map(drop)
    }

    /// Removes the route to the network of `dst` through interface `index`.
    pub fn remove_route(&mut self, index: u32, dst: &Cidr) -> Result<()> {
        let seq = self.next_seq();
        self.request("RTM_DELROUTE", seq, &route_msg(RTM_DELROUTE, seq, index, dst))
            .map(drop)
    }

    /// Sets the MTU of interface `index`.
    pub fn set_mtu(&mut self, index: u32, mtu: u32) -> Result<()> {
        let seq = self.next_seq();
        self.request(
            "RTM_NEWLINK",
            seq,
            &link_msg(RTM_NEWLINK, seq, index, 0, 0, Some(mtu)),
        )
        .map(drop)
    }

    /// Sets interface `index` up or down.
    pub fn set_up(&mut self, index: u32, up: bool) -> Result<()> {
        let seq = self.next_seq();
        let flags = if up { IFF_UP } else { 0 };
        self.request(
            "RTM_NEWLINK",
            seq,
            &link_msg(RTM_NEWLINK, seq, index, flags, IFF_UP, None),
        )
        .map(drop)
    }

    /// Deletes interface `index`.
    pub fn delete_link(&mut self, index: u32) -> Result<()> {
        let seq = self.next_seq();
        self.request("RTM_DELLINK", seq, &link_msg(RTM_DELLINK, seq, index, 0, 0, None))
            .map(drop)
    }

    /// Name, MTU and up state of interface `index`.
    pub fn link(&mut self, index: u32) -> Result<LinkInfo> {
        let seq = self.next_seq();
        let msg = link_msg(RTM_GETLINK, seq, index, 0, 0, None);
        self.request("RTM_GETLINK", seq, &msg)?.ok_or(Error::Malformed {
            what: "RTM_GETLINK answer without a link",
            offset: 0,
            len: 0,
        })
    }
}

#[cfg(all(test, target_endian = "little"))]
mod tests {
    use super::*;

    #[test]
    fn newaddr_bytes() {
        let c: Cidr = "198.18.5.1/24".parse().unwrap();
        let m = address_msg(RTM_NEWADDR, 9, 7, &c);
        #[rustfmt::skip]
        let want: Vec<u8> = vec![
            40, 0, 0, 0,   20, 0,   0x05, 0x06,   9, 0, 0, 0,   0, 0, 0, 0, // nlmsghdr: len 40, RTM_NEWADDR, REQUEST|ACK|EXCL|CREATE
            2, 24, 0, 0,   7, 0, 0, 0,                                     // ifaddrmsg: AF_INET /24 index 7
            8, 0, 2, 0,    198, 18, 5, 1,                                  // IFA_LOCAL
            8, 0, 1, 0,    198, 18, 5, 1,                                  // IFA_ADDRESS
        ];
        assert_eq!(m, want);
    }

    #[test]
    fn newaddr_v6_is_nodad() {
        let c: Cidr = "2001:db8::1/64".parse().unwrap();
        let m = address_msg(RTM_NEWADDR, 1, 3, &c);
        assert_eq!(m.len(), 16 + 8 + 20 + 8);
        assert_eq!(&m[44..52], &[8, 0, 8, 0, 2, 0, 0, 0]);
    }

    #[test]
    fn route_uses_network_address() {
        let c: Cidr = "198.18.11.77/24".parse().unwrap();
        let m = route_msg(RTM_NEWROUTE, 1, 5, &c);
        assert_eq!(&m[16..28], &[2, 24, 0, 0, 254, 3, 253, 1, 0, 0, 0, 0]);
        assert_eq!(&m[28..36], &[8, 0, 1, 0, 198, 18, 11, 0]);
        assert_eq!(&m[36..44], &[8, 0, 4, 0, 5, 0, 0, 0]);
    }

    #[test]
    fn ack_and_errno() {
        // NLMSG_ERROR with error 0 and with -EEXIST.
        assert!(parse_ack(&0i32.to_ne_bytes(), "RTM_NEWADDR").is_ok());
        let e = parse_ack(&(-17i32).to_ne_bytes(), "RTM_NEWADDR").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(17));
        assert_eq!(e.syscall(), Some("RTM_NEWADDR"));
        assert!(parse_ack(&[1, 2], "x").is_err());
    }

    #[test]
    fn link_reply() {
        let mut p = vec![0u8; 16];
        p[4..8].copy_from_slice(&7u32.to_ne_bytes());
        p[8..12].copy_from_slice(&1u32.to_ne_bytes());
        p.extend_from_slice(&[9, 0, 3, 0, b't', b'u', b'n', b'0', 0, 0, 0, 0]);
        p.extend_from_slice(&[8, 0, 4, 0]);
        p.extend_from_slice(&1400u32.to_ne_bytes());
        let l = parse_link(&p).unwrap();
        assert_eq!(
            l,
            LinkInfo {
                index: 7,
                name: "tun0".into(),
                mtu: 1400,
                up: true
            }
        );
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 1u32;
        let mut base = address_msg(RTM_NEWADDR, 1, 2, &"198.18.0.1/24".parse().unwrap());
        for i in 0..5000 {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let at = (seed >> 8) as usize % base.len();
            base[at] = (seed >> 16) as u8;
            let cut = (seed >> 4) as usize % (base.len() + 1);
            let _ = messages(&base[..cut]);
            let _ = parse_link(&base[i % base.len()..]);
            let _ = parse_ack(&base[..cut.min(6)], "x");
        }
    }
}
