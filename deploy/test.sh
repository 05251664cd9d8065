#!/usr/bin/env bash
# The whole test suite, on a fresh machine: checks the Debian packages the
# suite needs, installs them when run as root (or stops at once naming them),
# then runs `cargo test --workspace` with any arguments given.
set -euo pipefail
cd "$(dirname "$0")/.."

# python3: the demo and the network lab's scripts; iproute2: network namespaces
# (the lab, the IPv6 multicast tests); curl: the end-to-end tests read the hub's
# HTTP interface as an operator would; nftables: the lab drops packets at random;
# uftp: the lab's baseline; ffmpeg: the live tests' MPEG-TS input, and ffprobe
# reads the hubs' HLS; chromium: the status page is read in a real browser.
missing=()
need() { command -v "$1" >/dev/null || missing+=("$2"); }
need python3 python3
need ip iproute2
need curl curl
need nft nftables
need uftp uftp
need ffprobe ffmpeg
need chromium chromium
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing what the suite needs: ${missing[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  else
    echo "the suite needs these Debian packages: ${missing[*]}" >&2
    echo "install them (as root: apt-get install ${missing[*]}) and run this again" >&2
    exit 1
  fi
fi
exec cargo test --workspace "$@"
