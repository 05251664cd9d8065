#!/usr/bin/env bash
# Build every fuzz target with the installed toolchain and run each briefly.
# Usage: fuzz/smoke.sh [seconds per target, default 15]
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-15}
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
cargo fuzz build -O
# The wire header's tokens for the targets that read datagrams.
dict() { case "$1" in wire_decode | receiver_datagrams) echo "-dict=wire.dict" ;; esac; }
for t in $(cargo fuzz list); do
  echo "== fuzz $t for ${secs}s"
  cargo fuzz run -O "$t" -- -max_total_time="$secs" -max_len=4096 $(dict "$t") 2>&1 | grep -E "DONE|ERROR|SUMMARY|panicked" | tail -3
  test "${PIPESTATUS[0]}" -eq 0
done
