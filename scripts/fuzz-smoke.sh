#!/usr/bin/env bash
# Runs each cargo-fuzz target briefly (default 20 s) from its seeds: a smoke
# test that the targets build and their invariants hold. Needs a nightly
# toolchain (installed here by rustup); installs cargo-fuzz from crates.io if
# missing. Longer runs: FUZZ_SECONDS=600 scripts/fuzz-smoke.sh
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${FUZZ_SECONDS:-20}"
if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  echo "*** fuzz-smoke: SKIPPED: no nightly toolchain on this machine (cargo fuzz needs one) ***"
  exit 0
fi
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked --quiet
cargo +nightly fuzz build -O
for t in split coalesce parse; do
  work="$(mktemp -d)"
  cp corpus/"$t"/seed-* "$work"/
  echo "fuzz-smoke: $t for ${secs}s"
  rc=0
  cargo +nightly fuzz run -O "$t" "$work" -- -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 >"$work.log" 2>&1 || rc=$?
  grep -E 'stat::number_of_executed_units|panicked' "$work.log" || true
  if [ "$rc" -ne 0 ]; then
    tail -n 40 "$work.log"
    echo "fuzz-smoke: $t FAILED (see fuzz/artifacts/$t)"
    exit 1
  fi
  rm -rf "$work" "$work.log"
done
echo "fuzz-smoke: ok"
