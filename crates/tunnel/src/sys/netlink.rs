//! Netlink socket syscalls (being written).
