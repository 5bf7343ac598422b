#!/bin/sh
# scripts/test_aarch64.sh: build tests/test_fiber.c for aarch64 and run it
# under qemu-user, so the AArch64 context switch (core/arch/switch_aarch64.S)
# is tested on an x86-64 machine.
#
# Two builds: a plain one, and one with -mbranch-protection=standard run on
# qemu's "max" CPU, where return addresses are signed and authenticated
# (PAC): a fiber's C frames return through paciasp/autiasp across switches,
# which fails if a switch restored the wrong sp or lr. BTI itself is not
# enforced in that binary (Debian's static glibc objects carry no BTI note,
# so the linker leaves the executable unmarked); the note emitted by
# switch_aarch64.S is checked by reading the object.
#
# Static binaries: no aarch64 sysroot is needed at run time. The test harness
# forks per test, which qemu-user handles; its alarm() timeouts are generous
# enough for emulation (the whole run takes a few seconds).
#
# Exit status: the test binary's (0 pass, 1 fail), or 77 (skip) when the
# cross compiler or qemu is missing and cannot be installed, or qemu cannot
# run an aarch64 binary here. Arguments are passed on as test names.
#
# Environment: CC_AARCH64 (default aarch64-linux-gnu-gcc), QEMU_AARCH64
# (default qemu-aarch64, else qemu-aarch64-static).
set -u

root=$(cd "$(dirname "$0")/.." && pwd)
cc=${CC_AARCH64:-aarch64-linux-gnu-gcc}
pkgs="gcc-aarch64-linux-gnu qemu-user"

find_qemu() {
  if [ -n "${QEMU_AARCH64:-}" ]; then
    command -v "$QEMU_AARCH64" 2>/dev/null
  else
    command -v qemu-aarch64 2>/dev/null || command -v qemu-aarch64-static 2>/dev/null
  fi
}

qemu=$(find_qemu)
if ! command -v "$cc" >/dev/null 2>&1 || [ -z "$qemu" ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test_aarch64: installing $pkgs" >&2
    export DEBIAN_FRONTEND=noninteractive
    # shellcheck disable=SC2086 # $pkgs is a list
    apt-get install -y --no-install-recommends $pkgs >&2 ||
      { apt-get update >&2 && apt-get install -y --no-install-recommends $pkgs >&2; } ||
      { echo "test_aarch64: skip: could not install $pkgs" >&2; exit 77; }
    qemu=$(find_qemu)
  else
    echo "test_aarch64: skip: needs $cc and qemu-aarch64; install them with:" >&2
    echo "  sudo apt-get install -y $pkgs" >&2
    exit 77
  fi
fi
if ! command -v "$cc" >/dev/null 2>&1 || [ -z "$qemu" ]; then
  echo "test_aarch64: skip: $cc or qemu-aarch64 still missing" >&2
  exit 77
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/weft-aarch64.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT INT TERM

# Can qemu run an aarch64 binary at all here (binfmt, seccomp, containers)?
printf 'int main(void) { return 0; }\n' > "$tmp/probe.c"
if ! "$cc" -static -o "$tmp/probe" "$tmp/probe.c" 2>"$tmp/probe.err"; then
  cat "$tmp/probe.err" >&2
  echo "test_aarch64: skip: $cc cannot build a static binary (libc6-dev-arm64-cross?)" >&2
  exit 77
fi
if ! "$qemu" "$tmp/probe"; then
  echo "test_aarch64: skip: $qemu cannot run an aarch64 binary here" >&2
  exit 77
fi

srcs="$root/core/fiber.c $root/core/arch/switch_aarch64.S $root/tests/test_fiber.c"
flags="-O2 -g -static -std=gnu11 -D_GNU_SOURCE -I$root -I$root/include -Wall -Wextra -Wno-unused-parameter"

status=0
# build name, extra compiler flags, qemu cpu
for variant in "plain||" "bti-pac|-mbranch-protection=standard|max"; do
  name=${variant%%|*}
  rest=${variant#*|}
  extra=${rest%%|*}
  cpu=${rest#*|}
  echo "== aarch64 ($name) under $(basename "$qemu")${cpu:+ -cpu $cpu}"
  # shellcheck disable=SC2086 # word splitting of the flag lists is intended
  if ! "$cc" $flags $extra -o "$tmp/test_fiber_$name" $srcs -lpthread; then
    echo "test_aarch64: build ($name) failed" >&2
    exit 1
  fi
  if [ -n "$cpu" ]; then
    "$qemu" -cpu "$cpu" "$tmp/test_fiber_$name" "$@"
  else
    "$qemu" "$tmp/test_fiber_$name" "$@"
  fi
  rc=$?
  if [ "$name" = bti-pac ] && command -v readelf >/dev/null 2>&1; then
    # The switch's object must keep BTI/PAC on for a binary that has it.
    # shellcheck disable=SC2086
    if ! "$cc" $flags $extra -c -o "$tmp/switch.o" "$root/core/arch/switch_aarch64.S" ||
      ! readelf -n "$tmp/switch.o" | grep -q "AArch64 feature: BTI, PAC"; then
      echo "FAIL switch_aarch64.S: no BTI/PAC property note under -mbranch-protection" >&2
      rc=1
    fi
  fi
  if [ $rc -ne 0 ] && [ $rc -ne 77 ]; then status=1; fi
  if [ $rc -eq 77 ] && [ $status -eq 0 ]; then status=77; fi
done
exit $status
