//! rtnetlink messages as bytes: request builders and reply parsers.
//!
//! Pure functions over byte buffers, no I/O. Everything is native-endian, as
//! netlink is. Nothing here panics on what it parses: every length is checked
//! against the buffer, every walk is `NLMSG_ALIGN`/`RTA_ALIGN`ed and clamped,
//! and anything truncated or inconsistent is an [`Error::Malformed`].
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::{Cidr, Error, Result};

/// `sizeof(struct nlmsghdr)`.
pub const NLMSG_HDRLEN: usize = 16;
/// `sizeof(struct rtattr)` / `sizeof(struct nlattr)`.
pub const RTA_HDRLEN: usize = 4;
/// `sizeof(struct ifinfomsg)`.
pub const IFINFOMSG_LEN: usize = 16;
/// `sizeof(struct ifaddrmsg)`.
pub const IFADDRMSG_LEN: usize = 8;
/// `sizeof(struct rtmsg)`.
pub const RTMSG_LEN: usize = 12;

/// `NLMSG_NOOP`: nothing; skipped.
pub const NLMSG_NOOP: u16 = 1;
/// `NLMSG_ERROR`: an error or (error 0) an acknowledgement.
pub const NLMSG_ERROR: u16 = 2;
/// `NLMSG_DONE`: the end of a dump.
pub const NLMSG_DONE: u16 = 3;
/// `NLMSG_OVERRUN`: never sent by rtnetlink; skipped.
pub const NLMSG_OVERRUN: u16 = 4;

/// `NLM_F_REQUEST`: a request (on every message we send).
pub const NLM_F_REQUEST: u16 = 0x1;
/// `NLM_F_MULTI`: part of a multi-part answer.
pub const NLM_F_MULTI: u16 = 0x2;
/// `NLM_F_ACK`: ask for an acknowledgement (on every message we send).
pub const NLM_F_ACK: u16 = 0x4;
/// `NLM_F_DUMP_INTR`: the dump changed while it was being read; repeat it.
pub const NLM_F_DUMP_INTR: u16 = 0x10;
/// `NLM_F_DUMP` (`NLM_F_ROOT|NLM_F_MATCH`): a dump request.
pub const NLM_F_DUMP: u16 = 0x300;
/// `NLM_F_EXCL`: fail with `EEXIST` if the object exists.
pub const NLM_F_EXCL: u16 = 0x200;
/// `NLM_F_CREATE`: create the object.
pub const NLM_F_CREATE: u16 = 0x400;
/// `NLM_F_CAPPED` (on `NLMSG_ERROR`): only the request's header is echoed.
pub const NLM_F_CAPPED: u16 = 0x100;
/// `NLM_F_ACK_TLVS` (on `NLMSG_ERROR`/`NLMSG_DONE`): extended-ack attributes follow.
pub const NLM_F_ACK_TLVS: u16 = 0x200;
/// `NLMSGERR_ATTR_MSG`: the kernel's error message, a NUL-terminated string.
pub const NLMSGERR_ATTR_MSG: u16 = 1;

/// `RTM_NEWLINK`.
pub const RTM_NEWLINK: u16 = 16;
/// `RTM_DELLINK`.
pub const RTM_DELLINK: u16 = 17;
/// `RTM_GETLINK`.
pub const RTM_GETLINK: u16 = 18;
/// `RTM_NEWADDR`.
pub const RTM_NEWADDR: u16 = 20;
/// `RTM_DELADDR`.
pub const RTM_DELADDR: u16 = 21;
/// `RTM_GETADDR`.
pub const RTM_GETADDR: u16 = 22;
/// `RTM_NEWROUTE`.
pub const RTM_NEWROUTE: u16 = 24;
/// `RTM_DELROUTE`.
pub const RTM_DELROUTE: u16 = 25;
/// `RTM_GETROUTE`.
pub const RTM_GETROUTE: u16 = 26;

/// `IFLA_IFNAME`: the interface name, NUL-terminated.
pub const IFLA_IFNAME: u16 = 3;
/// `IFLA_MTU`: u32.
pub const IFLA_MTU: u16 = 4;
/// `IFLA_LINKINFO`: nested link-kind information.
pub const IFLA_LINKINFO: u16 = 18;
/// `IFLA_INFO_KIND` (inside `IFLA_LINKINFO`): the link kind, such as `dummy`.
pub const IFLA_INFO_KIND: u16 = 1;
/// `IFA_ADDRESS`: the (peer) address.
pub const IFA_ADDRESS: u16 = 1;
/// `IFA_LOCAL`: the local address (IPv4, and IPv6 with a peer).
pub const IFA_LOCAL: u16 = 2;
/// `IFA_FLAGS`: u32 address flags, superseding `ifa_flags`.
pub const IFA_FLAGS: u16 = 8;
/// `IFA_F_NODAD`: no duplicate address detection (IPv6).
pub const IFA_F_NODAD: u8 = 0x02;
/// `RTA_DST`: the route's destination network.
pub const RTA_DST: u16 = 1;
/// `RTA_OIF`: u32 output interface index.
pub const RTA_OIF: u16 = 4;
/// `RTA_TABLE`: u32 routing table, superseding `rtm_table`.
pub const RTA_TABLE: u16 = 15;
/// `RT_TABLE_MAIN`.
pub const RT_TABLE_MAIN: u8 = 254;
/// `RTPROT_BOOT`: what `ip route add` uses.
pub const RTPROT_BOOT: u8 = 3;
/// `RT_SCOPE_UNIVERSE`.
pub const RT_SCOPE_UNIVERSE: u8 = 0;
/// `RT_SCOPE_LINK`: directly attached, no gateway.
pub const RT_SCOPE_LINK: u8 = 253;
/// `RT_SCOPE_NOWHERE`: in an IPv4 delete, "any scope".
pub const RT_SCOPE_NOWHERE: u8 = 255;
/// `RTN_UNICAST`.
pub const RTN_UNICAST: u8 = 1;
/// `RTM_F_CLONED`: a cached route, not a configured one.
pub const RTM_F_CLONED: u32 = 0x200;
/// `IFF_UP`: administratively up.
pub const IFF_UP: u32 = 0x1;
/// `IFF_RUNNING`: operationally up (carrier).
pub const IFF_RUNNING: u32 = 0x40;

/// The attribute type bits (without `NLA_F_NESTED` and `NLA_F_NET_BYTEORDER`).
const NLA_TYPE_MASK: u16 = 0x3fff;
/// `NLA_F_NESTED`.
const NLA_F_NESTED: u16 = 0x8000;
/// The longest interface name, without its NUL (`IFNAMSIZ - 1`).
const IFNAME_MAX: usize = 15;

const AF_UNSPEC: u8 = libc::AF_UNSPEC as u8;
const AF_INET: u8 = libc::AF_INET as u8;
const AF_INET6: u8 = libc::AF_INET6 as u8;

/// `NLMSG_ALIGN`/`RTA_ALIGN`: rounds up to 4. Saturates instead of overflowing.
const fn align4(n: usize) -> usize {
    match n.checked_add(3) {
        Some(m) => m & !3,
        None => usize::MAX & !3,
    }
}

fn malformed(what: &'static str, offset: usize, len: usize) -> Error {
    Error::Malformed { what, offset, len }
}

fn read_u16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_ne_bytes(s.try_into().ok()?))
}

fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_ne_bytes(s.try_into().ok()?))
}

fn read_i32(b: &[u8], at: usize) -> Option<i32> {
    read_u32(b, at).map(|v| v as i32)
}

// ---------------------------------------------------------------- building

/// Writes one request into a reusable buffer: `nlmsghdr`, fixed part, attributes.
///
/// `NLM_F_REQUEST|NLM_F_ACK` are always set. Call [`Builder::finish`] to set the length.
#[derive(Debug)]
pub struct Builder<'a> {
    buf: &'a mut Vec<u8>,
}

impl<'a> Builder<'a> {
    /// Clears `buf` and starts a message of type `kind` with `flags` and sequence number `seq`.
    pub fn new(buf: &'a mut Vec<u8>, kind: u16, flags: u16, seq: u32) -> Self {
        buf.clear();
        buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_len, set by finish()
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid: 0, the kernel fills it in
        Builder { buf }
    }

    /// Appends raw bytes (a fixed header such as `ifaddrmsg`), zero-padded to 4.
    pub fn fixed(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(bytes);
        self.buf.resize(align4(self.buf.len()), 0);
        self
    }

    /// Appends an attribute, zero-padded to 4.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if it is longer than an attribute can be (64 KiB).
    pub fn attr(&mut self, kind: u16, data: &[u8]) -> Result<&mut Self> {
        let len = u16::try_from(RTA_HDRLEN + data.len())
            .map_err(|_| Error::InvalidArgument(format!("netlink attribute {kind} is too long")))?;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        Ok(self.fixed(data))
    }

    /// Opens a nested attribute; returns the mark to pass to [`Builder::end_nested`].
    pub fn begin_nested(&mut self, kind: u16) -> usize {
        let mark = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        mark
    }

    /// Closes the nested attribute opened at `mark`, setting its length.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if the mark is not one or the nest is too long.
    pub fn end_nested(&mut self, mark: usize) -> Result<&mut Self> {
        let too_long = || Error::InvalidArgument("netlink nested attribute is too long".into());
        let len = self.buf.len().checked_sub(mark).ok_or_else(too_long)?;
        let len = u16::try_from(len).map_err(|_| too_long())?;
        let slot = self
            .buf
            .get_mut(mark..mark.saturating_add(2))
            .ok_or_else(|| Error::InvalidArgument("bad nested attribute mark".into()))?;
        slot.copy_from_slice(&len.to_ne_bytes());
        Ok(self)
    }

    /// Sets `nlmsg_len`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if the message is longer than 4 GiB.
    pub fn finish(self) -> Result<()> {
        let len = u32::try_from(self.buf.len())
            .map_err(|_| Error::InvalidArgument("netlink message is too long".into()))?;
        if let Some(slot) = self.buf.get_mut(0..4) {
            slot.copy_from_slice(&len.to_ne_bytes());
        }
        Ok(())
    }
}

fn family(addr: &IpAddr) -> u8 {
    if addr.is_ipv4() {
        AF_INET
    } else {
        AF_INET6
    }
}

fn octets(addr: &IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// Checks an interface index: 1..=`i32::MAX` (`ifi_index` is an `int`; 0 is "none").
pub fn check_index(index: u32) -> Result<i32> {
    match i32::try_from(index) {
        Ok(i) if i > 0 => Ok(i),
        _ => Err(Error::InvalidArgument(format!(
            "interface index {index} is out of range (1..={})",
            i32::MAX
        ))),
    }
}

/// Checks a CIDR's prefix length against its family (its fields are public).
pub fn check_cidr(cidr: &Cidr) -> Result<()> {
    Cidr::new(cidr.addr, cidr.prefix).map(drop)
}

/// Checks an interface name as the kernel does (`dev_valid_name`): 1 to 15
/// bytes, not `.` or `..`, no `/`, `:`, whitespace or NUL.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= IFNAME_MAX
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == 0 || b == b'/' || b == b':' || b.is_ascii_whitespace());
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "interface name {name:?} must be 1 to {IFNAME_MAX} bytes without '/', ':', whitespace or NUL"
        )))
    }
}

fn name_bytes(name: &str) -> Vec<u8> {
    let mut v = name.as_bytes().to_vec();
    v.push(0);
    v
}

/// `RTM_NEWADDR` (`kind`, with `NLM_F_CREATE|NLM_F_EXCL`) or `RTM_DELADDR` for
/// `cidr` on interface `index`. IPv4 carries `IFA_LOCAL` and `IFA_ADDRESS`
/// (no peer, no broadcast: point-to-point); IPv6 carries `IFA_ADDRESS` and,
/// when added, `IFA_F_NODAD` so that the address is usable at once.
pub fn address_request(buf: &mut Vec<u8>, kind: u16, seq: u32, index: u32, cidr: &Cidr) -> Result<()> {
    let index = check_index(index)?;
    check_cidr(cidr)?;
    let adding = kind == RTM_NEWADDR;
    let mut m = Builder::new(buf, kind, if adding { NLM_F_CREATE | NLM_F_EXCL } else { 0 }, seq);
    // struct ifaddrmsg { u8 family, prefixlen, flags, scope; u32 index }
    let flags = if adding && !cidr.is_ipv4() { IFA_F_NODAD } else { 0 };
    let mut ifa = [
        family(&cidr.addr),
        cidr.prefix,
        flags,
        RT_SCOPE_UNIVERSE,
        0,
        0,
        0,
        0,
    ];
    ifa[4..8].copy_from_slice(&index.to_ne_bytes());
    m.fixed(&ifa);
    let a = octets(&cidr.addr);
    if cidr.is_ipv4() {
        m.attr(IFA_LOCAL, &a)?;
    }
    m.attr(IFA_ADDRESS, &a)?;
    m.finish()
}

/// `RTM_NEWROUTE` (`kind`, with `NLM_F_CREATE|NLM_F_EXCL`) or `RTM_DELROUTE`
/// for the network of `dst` through interface `index`: main table, protocol
/// boot (as `ip route add`), unicast, scope link for IPv4 (universe for IPv6,
/// where the kernel ignores it), `RTA_DST` = `dst.network()`, `RTA_OIF` = `index`.
///
/// A delete matches routes of protocol boot only, so it never removes the
/// prefix route the kernel made for an address; for IPv4 it matches any scope.
pub fn route_request(buf: &mut Vec<u8>, kind: u16, seq: u32, index: u32, dst: &Cidr) -> Result<()> {
    let index = check_index(index)?;
    check_cidr(dst)?;
    let adding = kind == RTM_NEWROUTE;
    let mut m = Builder::new(buf, kind, if adding { NLM_F_CREATE | NLM_F_EXCL } else { 0 }, seq);
    let scope = match (dst.is_ipv4(), adding) {
        (false, _) => RT_SCOPE_UNIVERSE,
        (true, true) => RT_SCOPE_LINK,
        (true, false) => RT_SCOPE_NOWHERE,
    };
    // struct rtmsg { u8 family, dst_len, src_len, tos, table, protocol, scope, type; u32 flags }
    let rtm = [
        family(&dst.addr),
        dst.prefix,
        0,
        0,
        RT_TABLE_MAIN,
        RTPROT_BOOT,
        scope,
        RTN_UNICAST,
        0,
        0,
        0,
        0,
    ];
    m.fixed(&rtm);
    m.attr(RTA_DST, &octets(&dst.network()))?;
    m.attr(RTA_OIF, &index.to_ne_bytes())?;
    m.attr(RTA_TABLE, &u32::from(RT_TABLE_MAIN).to_ne_bytes())?;
    m.finish()
}

fn ifinfomsg(index: i32, flags: u32, change: u32) -> [u8; IFINFOMSG_LEN] {
    // struct ifinfomsg { u8 family, pad; u16 type; i32 index; u32 flags, change }
    let mut ifi = [0u8; IFINFOMSG_LEN];
    ifi[0] = AF_UNSPEC;
    ifi[4..8].copy_from_slice(&index.to_ne_bytes());
    ifi[8..12].copy_from_slice(&flags.to_ne_bytes());
    ifi[12..16].copy_from_slice(&change.to_ne_bytes());
    ifi
}

/// `RTM_NEWLINK` changing interface `index`: the bits of `change` in `flags`
/// (`IFF_UP` for up/down), and the MTU if given.
pub fn link_change_request(
    buf: &mut Vec<u8>,
    seq: u32,
    index: u32,
    flags: u32,
    change: u32,
    mtu: Option<u32>,
) -> Result<()> {
    let index = check_index(index)?;
    let mut m = Builder::new(buf, RTM_NEWLINK, 0, seq);
    m.fixed(&ifinfomsg(index, flags & change, change));
    if let Some(mtu) = mtu {
        m.attr(IFLA_MTU, &mtu.to_ne_bytes())?;
    }
    m.finish()
}

/// `RTM_GETLINK` for one interface, by index or (with `index` 0) by name.
pub fn link_get_request(buf: &mut Vec<u8>, seq: u32, index: u32, name: Option<&str>) -> Result<()> {
    let index = match name {
        Some(name) => {
            check_name(name)?;
            0
        }
        None => check_index(index)?,
    };
    let mut m = Builder::new(buf, RTM_GETLINK, 0, seq);
    m.fixed(&ifinfomsg(index, 0, 0));
    if let Some(name) = name {
        m.attr(IFLA_IFNAME, &name_bytes(name))?;
    }
    m.finish()
}

/// `RTM_DELLINK` for interface `index`.
pub fn link_delete_request(buf: &mut Vec<u8>, seq: u32, index: u32) -> Result<()> {
    let index = check_index(index)?;
    let mut m = Builder::new(buf, RTM_DELLINK, 0, seq);
    m.fixed(&ifinfomsg(index, 0, 0));
    m.finish()
}

/// `RTM_NEWLINK` with `NLM_F_CREATE|NLM_F_EXCL` creating a link `name` of
/// `link_kind` (`IFLA_LINKINFO { IFLA_INFO_KIND }`), such as `dummy`.
pub fn link_create_request(buf: &mut Vec<u8>, seq: u32, name: &str, link_kind: &str) -> Result<()> {
    check_name(name)?;
    let mut m = Builder::new(buf, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, seq);
    m.fixed(&ifinfomsg(0, 0, 0));
    m.attr(IFLA_IFNAME, &name_bytes(name))?;
    let nest = m.begin_nested(IFLA_LINKINFO);
    m.attr(IFLA_INFO_KIND, link_kind.as_bytes())?;
    m.end_nested(nest)?;
    m.finish()
}

/// A dump of all families: `RTM_GETLINK`, `RTM_GETADDR` or `RTM_GETROUTE`
/// with `NLM_F_DUMP`, and a zeroed fixed header of the right size.
///
/// # Errors
/// [`Error::InvalidArgument`] for another `kind`.
pub fn dump_request(buf: &mut Vec<u8>, kind: u16, seq: u32) -> Result<()> {
    let fixed = match kind {
        RTM_GETLINK => IFINFOMSG_LEN,
        RTM_GETADDR => IFADDRMSG_LEN,
        RTM_GETROUTE => RTMSG_LEN,
        _ => {
            return Err(Error::InvalidArgument(format!(
                "no dump for netlink message type {kind}"
            )))
        }
    };
    let mut m = Builder::new(buf, kind, NLM_F_DUMP, seq);
    m.fixed(&[0u8; IFINFOMSG_LEN][..fixed]);
    m.finish()
}

// ----------------------------------------------------------------- parsing

/// One netlink message of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    /// `nlmsg_type`.
    pub kind: u16,
    /// `nlmsg_flags`.
    pub flags: u16,
    /// `nlmsg_seq`.
    pub seq: u32,
    /// `nlmsg_pid`.
    pub port: u32,
    /// The bytes after the header, up to `nlmsg_len`.
    pub payload: &'a [u8],
}

/// The messages of a datagram, in order; see [`messages`].
#[derive(Debug, Clone)]
pub struct Messages<'a> {
    buf: &'a [u8],
    pos: usize,
    failed: bool,
}

/// Splits a datagram into messages. Yields an [`Error::Malformed`] (and then
/// stops) for a truncated header, an `nlmsg_len` below the header size or past
/// the end of the datagram, or trailing bytes too short for a header.
pub fn messages(buf: &[u8]) -> Messages<'_> {
    Messages {
        buf,
        pos: 0,
        failed: false,
    }
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<Message<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let rest = self.buf.get(self.pos..).filter(|r| !r.is_empty())?;
        let total = self.buf.len();
        let header = (|| {
            let len = usize::try_from(read_u32(rest, 0)?).ok()?;
            Some((
                len,
                read_u16(rest, 4)?,
                read_u16(rest, 6)?,
                read_u32(rest, 8)?,
                read_u32(rest, 12)?,
            ))
        })();
        let Some((len, kind, flags, seq, port)) = header else {
            self.failed = true;
            return Some(Err(malformed("netlink message header", self.pos, total)));
        };
        let Some(payload) = rest.get(NLMSG_HDRLEN..len).filter(|_| len >= NLMSG_HDRLEN) else {
            self.failed = true;
            return Some(Err(malformed("netlink message length", self.pos, total)));
        };
        self.pos = self.pos.saturating_add(align4(len).min(rest.len()));
        Some(Ok(Message {
            kind,
            flags,
            seq,
            port,
            payload,
        }))
    }
}

/// One attribute (`rtattr`/`nlattr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr<'a> {
    /// The type, without the `NLA_F_NESTED`/`NLA_F_NET_BYTEORDER` bits.
    pub kind: u16,
    /// The value (without padding).
    pub data: &'a [u8],
    /// Where the attribute starts in the buffer being walked.
    pub offset: usize,
}

/// The attributes of a buffer from an offset on; see [`attrs`].
#[derive(Debug, Clone)]
pub struct Attrs<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
    failed: bool,
}

/// Walks the attributes of `buf` from `start` to its end. Yields an
/// [`Error::Malformed`] naming `what` (and then stops) for a truncated
/// attribute header or an `rta_len` below 4 or past the end. Offsets are
/// relative to `buf`.
pub fn attrs<'a>(buf: &'a [u8], start: usize, what: &'static str) -> Attrs<'a> {
    Attrs {
        buf,
        pos: start,
        what,
        failed: false,
    }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = Result<Attr<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let rest = self.buf.get(self.pos..).filter(|r| !r.is_empty())?;
        let parsed = (|| {
            let len = usize::from(read_u16(rest, 0)?);
            let kind = read_u16(rest, 2)? & NLA_TYPE_MASK;
            let data = rest.get(RTA_HDRLEN..len)?;
            Some((len, kind, data))
        })();
        let Some((len, kind, data)) = parsed else {
            self.failed = true;
            return Some(Err(malformed(self.what, self.pos, self.buf.len())));
        };
        let offset = self.pos;
        self.pos = self.pos.saturating_add(align4(len).min(rest.len()));
        Some(Ok(Attr { kind, data, offset }))
    }
}

/// An `NLMSG_ERROR` or `NLMSG_DONE`, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack<'a> {
    /// The errno, positive; 0 for success.
    pub errno: i32,
    /// The kernel's extended-ack message, if it sent one.
    pub message: Option<&'a str>,
}

fn errno_of(error: i32, offset: usize, len: usize) -> Result<i32> {
    match error {
        0 => Ok(0),
        e if e < 0 => e
            .checked_neg()
            .ok_or_else(|| malformed("netlink error code", offset, len)),
        _ => Err(malformed("netlink error code", offset, len)),
    }
}

fn ext_ack_message(payload: &[u8], start: usize) -> Result<Option<&str>> {
    let mut message = None;
    for a in attrs(payload, start, "extended ack attribute") {
        let a = a?;
        if a.kind == NLMSGERR_ATTR_MSG {
            let end = a.data.iter().position(|b| *b == 0).unwrap_or(a.data.len());
            message = a.data.get(..end).and_then(|s| std::str::from_utf8(s).ok());
        }
    }
    Ok(message)
}

/// Decodes an `NLMSG_ERROR` message: `struct nlmsgerr` (the error code and the
/// request's header, or the whole request when not capped), then the
/// extended-ack attributes when `NLM_F_ACK_TLVS` is set.
pub fn parse_error<'a>(m: &Message<'a>) -> Result<Ack<'a>> {
    let p = m.payload;
    let len = p.len();
    if len < 4 + NLMSG_HDRLEN {
        return Err(malformed("nlmsgerr", 0, len));
    }
    let error = read_i32(p, 0).ok_or_else(|| malformed("nlmsgerr", 0, len))?;
    let errno = errno_of(error, 0, len)?;
    let mut message = None;
    if m.flags & NLM_F_ACK_TLVS != 0 {
        let echoed = if m.flags & NLM_F_CAPPED != 0 {
            NLMSG_HDRLEN
        } else {
            read_u32(p, 4)
                .and_then(|l| usize::try_from(l).ok())
                .filter(|l| *l >= NLMSG_HDRLEN && l.saturating_add(4) <= len)
                .ok_or_else(|| malformed("nlmsgerr echoed request", 4, len))?
        };
        message = ext_ack_message(p, 4 + align4(echoed))?;
    }
    Ok(Ack { errno, message })
}

/// Decodes an `NLMSG_DONE` message: the dump's error code, then the
/// extended-ack attributes when `NLM_F_ACK_TLVS` is set.
pub fn parse_done<'a>(m: &Message<'a>) -> Result<Ack<'a>> {
    let p = m.payload;
    let error = read_i32(p, 0).ok_or_else(|| malformed("NLMSG_DONE", 0, p.len()))?;
    let errno = errno_of(error, 0, p.len())?;
    let message = if m.flags & NLM_F_ACK_TLVS != 0 {
        ext_ack_message(p, 4)?
    } else {
        None
    };
    Ok(Ack { errno, message })
}

fn exact_u32(a: &Attr<'_>, what: &'static str, len: usize) -> Result<u32> {
    if a.data.len() != 4 {
        return Err(malformed(what, a.offset, len));
    }
    read_u32(a.data, 0).ok_or_else(|| malformed(what, a.offset, len))
}

fn ip_of(family: u8, a: &Attr<'_>, what: &'static str, len: usize) -> Result<IpAddr> {
    match (family, a.data.len()) {
        (AF_INET, 4) => {
            let o: [u8; 4] = a.data.try_into().map_err(|_| malformed(what, a.offset, len))?;
            Ok(IpAddr::V4(Ipv4Addr::from(o)))
        }
        (AF_INET6, 16) => {
            let o: [u8; 16] = a.data.try_into().map_err(|_| malformed(what, a.offset, len))?;
            Ok(IpAddr::V6(Ipv6Addr::from(o)))
        }
        _ => Err(malformed(what, a.offset, len)),
    }
}

fn max_prefix(family: u8) -> u8 {
    if family == AF_INET {
        32
    } else {
        128
    }
}

/// An interface, as [`crate::rtnl::Netlink::link`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    /// Interface index.
    pub index: u32,
    /// Interface name (lossily decoded if it is not UTF-8).
    pub name: String,
    /// MTU.
    pub mtu: u32,
    /// `IFF_UP`: administratively up.
    pub up: bool,
    /// `IFF_RUNNING`: operationally up (for a tun device: up and a queue attached).
    pub running: bool,
}

/// Parses an `RTM_NEWLINK` payload: `ifinfomsg`, then attributes, of which
/// `IFLA_IFNAME` and `IFLA_MTU` must be present.
pub fn parse_link(payload: &[u8]) -> Result<LinkInfo> {
    let len = payload.len();
    let (Some(index), Some(flags)) = (read_u32(payload, 4), read_u32(payload, 8)) else {
        return Err(malformed("ifinfomsg", 0, len));
    };
    if len < IFINFOMSG_LEN {
        // ifi_change, the last field, is cut off.
        return Err(malformed("ifinfomsg", 0, len));
    }
    let (mut name, mut mtu) = (None, None);
    for a in attrs(payload, IFINFOMSG_LEN, "link attribute") {
        let a = a?;
        match a.kind {
            IFLA_IFNAME => {
                let end = a.data.iter().position(|b| *b == 0).unwrap_or(a.data.len());
                let bytes = a.data.get(..end).unwrap_or_default();
                name = Some(String::from_utf8_lossy(bytes).into_owned());
            }
            IFLA_MTU => mtu = Some(exact_u32(&a, "IFLA_MTU", len)?),
            _ => {}
        }
    }
    Ok(LinkInfo {
        index,
        name: name.ok_or_else(|| malformed("link without IFLA_IFNAME", 0, len))?,
        mtu: mtu.ok_or_else(|| malformed("link without IFLA_MTU", 0, len))?,
        up: flags & IFF_UP != 0,
        running: flags & IFF_RUNNING != 0,
    })
}

/// An address of an interface, from an `RTM_NEWADDR` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressEntry {
    /// Interface index.
    pub index: u32,
    /// The address (`IFA_LOCAL` if present, else `IFA_ADDRESS`) and prefix length.
    pub cidr: Cidr,
    /// `IFA_FLAGS` if present, else `ifa_flags`.
    pub flags: u32,
}

/// Parses an `RTM_NEWADDR` payload: `ifaddrmsg`, then attributes. `Ok(None)`
/// for families other than IPv4 and IPv6.
pub fn parse_address(payload: &[u8]) -> Result<Option<AddressEntry>> {
    let len = payload.len();
    let (Some(head), Some(index)) = (payload.get(..4), read_u32(payload, 4)) else {
        return Err(malformed("ifaddrmsg", 0, len));
    };
    let (fam, prefix, ifa_flags) = match head {
        [f, p, fl, _] => (*f, *p, *fl),
        _ => return Err(malformed("ifaddrmsg", 0, len)),
    };
    if fam != AF_INET && fam != AF_INET6 {
        return Ok(None);
    }
    if prefix > max_prefix(fam) {
        return Err(malformed("ifaddrmsg prefix length", 1, len));
    }
    let (mut local, mut address, mut flags) = (None, None, u32::from(ifa_flags));
    for a in attrs(payload, IFADDRMSG_LEN, "address attribute") {
        let a = a?;
        match a.kind {
            IFA_LOCAL => local = Some(ip_of(fam, &a, "IFA_LOCAL", len)?),
            IFA_ADDRESS => address = Some(ip_of(fam, &a, "IFA_ADDRESS", len)?),
            IFA_FLAGS => flags = exact_u32(&a, "IFA_FLAGS", len)?,
            _ => {}
        }
    }
    let addr = local
        .or(address)
        .ok_or_else(|| malformed("address without IFA_LOCAL or IFA_ADDRESS", 0, len))?;
    Ok(Some(AddressEntry {
        index,
        cidr: Cidr { addr, prefix },
        flags,
    }))
}

/// A route, from an `RTM_NEWROUTE` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteEntry {
    /// The destination network (`RTA_DST`, or the unspecified address for a default route).
    pub dst: Cidr,
    /// `RTA_TABLE` if present, else `rtm_table`.
    pub table: u32,
    /// `rtm_protocol` (`RTPROT_BOOT`, `RTPROT_KERNEL`, ...).
    pub protocol: u8,
    /// `rtm_scope`.
    pub scope: u8,
    /// `rtm_type` (`RTN_UNICAST`, ...).
    pub kind: u8,
    /// `rtm_flags`.
    pub flags: u32,
    /// `RTA_OIF`, if present (multipath routes have none).
    pub oif: Option<u32>,
}

/// Parses an `RTM_NEWROUTE` payload: `rtmsg`, then attributes. `Ok(None)` for
/// families other than IPv4 and IPv6.
pub fn parse_route(payload: &[u8]) -> Result<Option<RouteEntry>> {
    let len = payload.len();
    let (Some(head), Some(rtm_flags)) = (payload.get(..8), read_u32(payload, 8)) else {
        return Err(malformed("rtmsg", 0, len));
    };
    let (fam, dst_len, rtm_table, protocol, scope, kind) = match head {
        [f, d, _src, _tos, t, p, s, k] => (*f, *d, *t, *p, *s, *k),
        _ => return Err(malformed("rtmsg", 0, len)),
    };
    if fam != AF_INET && fam != AF_INET6 {
        return Ok(None);
    }
    if dst_len > max_prefix(fam) {
        return Err(malformed("rtmsg destination length", 1, len));
    }
    let mut dst = if fam == AF_INET {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    };
    let (mut table, mut oif) = (u32::from(rtm_table), None);
    for a in attrs(payload, RTMSG_LEN, "route attribute") {
        let a = a?;
        match a.kind {
            RTA_DST => dst = ip_of(fam, &a, "RTA_DST", len)?,
            RTA_OIF => oif = Some(exact_u32(&a, "RTA_OIF", len)?),
            RTA_TABLE => table = exact_u32(&a, "RTA_TABLE", len)?,
            _ => {}
        }
    }
    Ok(Some(RouteEntry {
        dst: Cidr {
            addr: dst,
            prefix: dst_len,
        },
        table,
        protocol,
        scope,
        kind,
        flags: rtm_flags,
        oif,
    }))
}

#[cfg(all(test, target_endian = "little"))]
mod tests;
