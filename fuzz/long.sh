#!/usr/bin/env bash
# The long fuzz run: every target (or those named) until RUNS executions
# (default 10 million) or MAX_SECS seconds (default 21600: receiver_mutated_stream
# needs about 2.5 hours on one core of this machine), whichever is first.
# Prints one line per target: executions, seconds, executions per second,
# coverage and corpus at the end; the corpus grows in fuzz/corpus/TARGET.
# Usage: fuzz/long.sh [target ...]   (RUNS=..., MAX_SECS=..., MAX_LEN=... to change;
# MAX_LEN, default 4096, bounds the inputs: receiver_mutated_stream's cost grows
# with its input, one datagram per 4 bytes)
# The figures of the last run are in docs/BENCHMARKS.md ("Fuzzing").
set -euo pipefail
cd "$(dirname "$0")"
runs=${RUNS:-10000000}
max_secs=${MAX_SECS:-21600}
max_len=${MAX_LEN:-4096}
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
cargo fuzz build -O
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo fuzz list)
# The wire header's tokens for the targets that read datagrams.
dict() { case "$1" in wire_decode | receiver_datagrams) echo "-dict=wire.dict" ;; esac; }
printf '%-26s %12s %8s %9s %6s %8s\n' target executions seconds exec/s cov corpus
for t in "${targets[@]}"; do
  log=$(mktemp)
  start=$(date +%s)
  # libFuzzer exits non-zero on a crash: the run stops here and says so.
  if ! cargo fuzz run -O "$t" -- -runs="$runs" -max_total_time="$max_secs" -max_len="$max_len" \
      -print_final_stats=1 $(dict "$t") >"$log" 2>&1; then
    grep -E "ERROR|SUMMARY|panicked|Test unit written" "$log" | head -5
    echo "fuzz/long.sh: $t found a crash (above; the input is in fuzz/artifacts/$t)" >&2
    exit 1
  fi
  secs=$(( $(date +%s) - start ))
  execs=$(grep -oE "stat::number_of_executed_units: *[0-9]+" "$log" | grep -oE "[0-9]+$" || echo 0)
  last=$(grep -E "DONE|pulse|NEW|REDUCE" "$log" | tail -1)
  cov=$(grep -oE "cov: [0-9]+" <<<"$last" | grep -oE "[0-9]+" || echo ?)
  corp=$(grep -oE "corp: [0-9]+/[0-9]+[a-zA-Z]*" <<<"$last" | cut -d' ' -f2 || echo ?)
  printf '%-26s %12s %8s %9s %6s %8s\n' "$t" "$execs" "$secs" "$(( execs / (secs > 0 ? secs : 1) ))" "$cov" "$corp"
  rm -f "$log"
done
