#!/usr/bin/env bash
# scripts/deps.sh [bench] [go]: install what building and testing weft needs
# on Debian 12 (bookworm), given only a C compiler and CMake.
#
#   scripts/deps.sh          the build and the whole test suite (which runs the
#                            comparison harness's smoke mode, hence the peers'
#                            python3-uvloop and libuv1-dev, and wrk)
#   scripts/deps.sh bench    also the comparison's chart (gnuplot)
#   scripts/deps.sh go       also Go, for bench/compare_go.sh
#
# Checks each package with dpkg -s and installs only the missing ones, with
# apt-get when run as root; otherwise prints the exact sudo line and exits 1.
# Prints nothing when everything is there. Idempotent.
set -euo pipefail

pkgs=(cmake make pkg-config liburing-dev libjemalloc-dev libssl-dev libbenchmark-dev python3 python3-uvloop libuv1-dev wrk)
# clang: scripts/test.sh builds the ThreadSanitizer configuration with it
pkgs+=(clang)
# The context switch's aarch64 test is cross-compiled and run under qemu-user
# on x86_64 hosts; on aarch64 it runs natively and needs neither.
if [[ $(uname -m) == x86_64 ]]; then
  pkgs+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user)
fi
for arg in "$@"; do
  case $arg in
    bench) pkgs+=(gnuplot-nox) ;;
    go) pkgs+=(golang-go) ;;
    *) echo "usage: scripts/deps.sh [bench] [go]" >&2; exit 2 ;;
  esac
done

if ! command -v dpkg >/dev/null 2>&1; then
  echo "deps.sh: no dpkg: this script knows Debian only. weft needs: ${pkgs[*]}" >&2
  exit 1
fi

missing=()
for p in "${pkgs[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ $status == "install ok installed" ]] || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

if [[ $(id -u) -ne 0 ]]; then
  echo "deps.sh: missing packages: ${missing[*]}" >&2
  echo "deps.sh: install them with:" >&2
  echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi

echo "deps.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
