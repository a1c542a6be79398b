//! Linux TUN devices that move packets in batches.
//!
//! The crate is usable from Rust alone; the Node.js binding in `crates/napi`
//! only converts. Module map:
//!
//! - [`sys`]: the only module with `unsafe`: open, ioctls, sockets, epoll registration.
//! - [`vnet`]: the virtio-net header; [`checksum`]: the internet checksum;
//!   [`packet`]: bounds-checked IPv4/IPv6/TCP/UDP header views. No I/O.
//! - [`gso`]: split a super-packet into packets; [`gro`]: coalesce packets
//!   into super-packets. Pure functions over byte slices.
//! - [`rtnl`]: a small hand-rolled rtnetlink client (addresses, routes, MTU, up/down).
//! - [`cidr`]: CIDR parsing shared by the options and netlink.
//! - [`device`]: the synchronous, non-blocking device.
//! - [`batch`]: batched reads into a caller's slab and batched writes.
//! - [`poller`]: one-shot readiness from one epoll thread per process.
#![deny(unsafe_code)]

pub mod batch;
pub mod checksum;
pub mod cidr;
pub mod device;
pub mod error;
pub mod gro;
pub mod gso;
pub mod packet;
pub mod poller;
pub mod rtnl;
pub mod sys;
#[cfg(any(test, feature = "testutil"))]
pub mod testutil;
pub mod vnet;

pub use cidr::Cidr;
pub use device::{Device, OpenOptions};
pub use error::{Error, Result};
