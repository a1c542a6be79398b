#!/usr/bin/env bash
# The Rust kernel tests (rtnetlink against the real kernel): each moves its
# thread into a fresh network namespace. They are #[ignore]d in a plain
# `cargo test` because they need root; here they run when we are root.
set -euo pipefail
if [ "$(id -u)" != 0 ]; then
  echo "SKIPPED: Rust kernel tests (crates/tunnel rtnl::netlink_as_root) need root (CAP_NET_ADMIN); run npm test as root" >&2
  exit 0
fi
exec cargo test -p tunnel --lib -- --ignored
