//! CIDR notation: `198.18.0.1/24`, `2001:db8::1/64`.
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use crate::Error;

/// An address with a prefix length. The host bits are kept (an interface
/// address `198.18.0.1/24` is not the same as the network `198.18.0.0/24`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    /// The address.
    pub addr: IpAddr,
    /// The prefix length: 0..=32 for IPv4, 0..=128 for IPv6.
    pub prefix: u8,
}

impl Cidr {
    /// Builds a CIDR, checking the prefix length against the family.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Self, Error> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(Error::InvalidArgument(format!(
                "prefix length {prefix} is out of range for {addr} (0..={max})"
            )));
        }
        Ok(Cidr { addr, prefix })
    }

    /// True for an IPv4 address.
    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// The network address: host bits cleared.
    pub fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => {
                let bits = u32::from(a);
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.prefix)
                };
                IpAddr::V4((bits & mask).into())
            }
            IpAddr::V6(a) => {
                let bits = u128::from(a);
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.prefix)
                };
                IpAddr::V6((bits & mask).into())
            }
        }
    }
}

impl FromStr for Cidr {
    type Err = Error;

    /// Parses `ADDR/PREFIX`; a bare address gets the full prefix (/32 or /128).
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || {
            Error::InvalidArgument(format!(
                "{s:?} is not a CIDR address (like 198.18.0.1/24 or 2001:db8::1/64)"
            ))
        };
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().map_err(|_| bad())?;
        let prefix = match p {
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().map_err(|_| bad())?
            }
            Some(_) => return Err(bad()),
            None => {
                if addr.is_ipv4() {
                    32
                } else {
                    128
                }
            }
        };
        Cidr::new(addr, prefix)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_v4_and_v6() {
        let c: Cidr = "198.18.5.1/24".parse().unwrap();
        assert_eq!(c.prefix, 24);
        assert_eq!(c.network().to_string(), "198.18.5.0");
        let c: Cidr = "2001:db8::1/64".parse().unwrap();
        assert_eq!(c.network().to_string(), "2001:db8::");
        let c: Cidr = "2001:db8::1".parse().unwrap();
        assert_eq!(c.prefix, 128);
        let c: Cidr = "0.0.0.0/0".parse().unwrap();
        assert_eq!(c.network().to_string(), "0.0.0.0");
    }

    #[test]
    fn rejects_garbage() {
        for s in [
            "",
            "/24",
            "198.18.0.1/33",
            "2001:db8::/129",
            "198.18.0.1/",
            "198.18.0.1/+4",
            "x/1",
            "198.18.0.1/24/1",
            "198.18.0.1/0024",
        ] {
            assert!(s.parse::<Cidr>().is_err(), "{s} should be rejected");
        }
    }
}
