//! Linux TUN devices that move packets in batches.
//!
//! The crate is usable from Rust alone; the Node.js binding in `crates/napi`
//! only converts. Module map:
//!
//! - [`sys`]: the only module with `unsafe`: open, ioctls, raw sockets.
//! - [`wire`]: zero-copy packet views and checksums, no I/O.
//! - [`offload`]: GSO split and GRO coalesce over plain byte slices.
//! - [`rtnl`]: a small hand-rolled rtnetlink client (addresses, routes, MTU, up/down).
//! - [`cidr`]: CIDR parsing shared by the options and netlink.
//! - [`device`]: the synchronous, non-blocking device.
//! - [`batch`]: batched reads into a caller's slab and batched writes.
//! - `reactor` (feature `tokio`): readiness on tokio's `AsyncFd`.
#![deny(unsafe_code)]

pub mod batch;
pub mod checksum;
pub mod cidr;
pub mod device;
pub mod error;
pub mod gro;
pub mod gso;
pub mod netlink;
pub mod offload;
pub mod packet;
#[cfg(feature = "tokio")]
pub mod reactor;
pub mod rtnl;
pub mod sys;
pub mod vnet;
pub mod wire;

pub use cidr::Cidr;
pub use device::{Device, OpenOptions};
pub use error::{Error, Result};
