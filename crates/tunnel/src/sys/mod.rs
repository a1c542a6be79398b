//! The only module that talks to the kernel directly, and the only one with `unsafe`.
//!
//! Every `unsafe` block carries a `SAFETY:` comment. Nothing here panics on
//! what the kernel returns.
#![allow(unsafe_code)]

pub mod epoll;
pub mod rtnl;
pub mod tun;
