#!/usr/bin/env bash
# scripts/test_consumer.sh [BUILD_DIR]: build weft, install it into a
# temporary prefix and build tests/consumer against the installed tree four
# ways (find_package and pkg-config, each shared and static), then run them.
# Also checks the installed libraries' symbol tables: only weft_* is global,
# and jemalloc (malloc, free, mallctl) and liburing (io_uring_*) are local.
#
# BUILD_DIR: an existing build directory to reuse (ctest passes its own);
# without it, a fresh build is configured in the temporary directory.
# Exit status: 0 ok, 1 failure, 77 skip (weft cannot be built yet, or the
# build is a sanitizer build, whose libraries a plain program cannot link).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
jobs=${JOBS:-2}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/weft-consumer.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

say() { printf 'test_consumer: %s\n' "$*"; }
fail() { say "FAIL: $*" >&2; exit 1; }
skip() { say "SKIP: $*" >&2; exit 77; }

if [[ $# -ge 1 && -n "$1" ]]; then
  build=$(cd "$1" && pwd)
  [[ -f "$build/CMakeCache.txt" ]] || fail "$build is not a CMake build directory"
else
  build=$tmp/build
  say "configuring weft in $build"
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DWEFT_TESTS=OFF -DWEFT_BENCH=OFF -DWEFT_EXAMPLES=OFF >"$tmp/configure.log" 2>&1 \
    || { cat "$tmp/configure.log" >&2; skip "weft cannot be configured yet"; }
fi
if grep -Eq '^WEFT_(TSAN|ASAN):BOOL=ON' "$build/CMakeCache.txt"; then
  skip "$build is a sanitizer build; the consumer test needs a plain one"
fi
jemalloc=ON
grep -Eq '^WEFT_JEMALLOC:BOOL=(OFF|0|FALSE|NO)' "$build/CMakeCache.txt" && jemalloc=OFF

say "building libweft.so and libweft.a"
cmake --build "$build" --target weft weft_static -j "$jobs" >"$tmp/build.log" 2>&1 \
  || { tail -n 40 "$tmp/build.log" >&2; skip "the library cannot be built yet"; }

prefix=$tmp/prefix
cmake --install "$build" --prefix "$prefix" >"$tmp/install.log" 2>&1 \
  || { cat "$tmp/install.log" >&2; fail "cmake --install"; }
pc=$(find "$prefix" -name weft.pc -path '*/pkgconfig/*' | head -n 1)
[[ -n "$pc" ]] || fail "weft.pc was not installed"
libdir=$(dirname "$(dirname "$pc")")
for f in libweft.a libweft.so include/weft/weft.h include/weft/version.h; do
  case $f in
    include/*) [[ -e "$prefix/$f" ]] || fail "$f was not installed" ;;
    *) [[ -e "$libdir/$f" ]] || fail "$f was not installed in $libdir" ;;
  esac
done
soname=$(find "$libdir" -maxdepth 1 -name 'libweft.so.*' | wc -l)
[[ $soname -ge 2 ]] || fail "libweft.so's soname links are missing"
[[ -n "$(find "$prefix" -name weftConfig.cmake)" ]] || fail "weftConfig.cmake was not installed"

# ------------------------------------------------------------ symbol tables
# (nm's output goes to files first: `nm | grep -q` under pipefail can fail
# when grep stops reading early.)
nm_tool=${NM:-nm}
check_globals() { # file, nm flags...: every global defined symbol is public
  local file=$1; shift
  local out=$tmp/globals.txt bad
  "$nm_tool" "$@" -P -g --defined-only "$file" >"$out" || fail "$nm_tool $file"
  bad=$(awk '$1 !~ /^weft_[A-Za-z0-9]/ && $1 !~ /^WEFT_[0-9]/ && $1 !~ /:$/ && NF > 1 {print $1}' "$out" | sort -u)
  [[ -z "$bad" ]] || fail "$file exports non-weft symbols: $(echo $bad | head -c 400)"
  grep -Eq '^weft_run(@| )' "$out" || fail "$file does not export weft_run"
}
check_globals "$libdir/libweft.a"
check_globals "$libdir/libweft.so" -D
# Private symbols are there but local ('t'), not gone.
"$nm_tool" -P "$libdir/libweft.a" >"$tmp/all.txt"
local_syms="io_uring_queue_init"
[[ $jemalloc == ON ]] && local_syms="malloc free mallctl $local_syms"
for s in $local_syms; do
  grep -Eq "^$s [tdb] " "$tmp/all.txt" \
    || fail "libweft.a: $s is not a local symbol (expected 't'): $(grep -E "^$s " "$tmp/all.txt" || echo absent)"
done
say "symbols: only weft_* global in libweft.a and libweft.so; $local_syms local"

# ------------------------------------------------------------ the consumers
export PKG_CONFIG_PATH="$libdir/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
cbuild=$tmp/consumer
cmake -S "$root/tests/consumer" -B "$cbuild" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  >"$tmp/cconf.log" 2>&1 || { cat "$tmp/cconf.log" >&2; fail "configuring tests/consumer (find_package(weft))"; }
cmake --build "$cbuild" -j "$jobs" >"$tmp/cbuild.log" 2>&1 \
  || { cat "$tmp/cbuild.log" >&2; fail "building tests/consumer (find_package(weft))"; }
make -s -C "$root/tests/consumer" O="$cbuild" >"$tmp/pcbuild.log" 2>&1 \
  || { cat "$tmp/pcbuild.log" >&2; fail "building tests/consumer with pkg-config"; }

# The static programs must not carry a global malloc or any jemalloc symbol.
for exe in consumer_static consumer_pc_static; do
  "$nm_tool" -P "$cbuild/$exe" >"$tmp/exe.txt"
  bad=$(grep -E '^(malloc|free|calloc|realloc|mallctl|mallocx|io_uring_queue_init) [A-Z] ' "$tmp/exe.txt" | grep -v ' U ' || true)
  [[ -z "$bad" ]] || fail "$exe defines global allocator/liburing symbols: $(echo $bad)"
  readelf -d "$cbuild/$exe" >"$tmp/dyn.txt"
  if grep -q 'libweft\.so' "$tmp/dyn.txt"; then fail "$exe links libweft.so, not libweft.a"; fi
done

status=0
for exe in consumer consumer_static consumer_pc consumer_pc_static; do
  say "running $exe"
  set +e
  "$cbuild/$exe"
  rc=$?
  set -e
  case $rc in
    0) ;;
    77) skip "$exe: the runtime cannot start here" ;;
    *) say "FAIL: $exe exited with $rc" >&2; status=1 ;;
  esac
done
[[ $status -eq 0 ]] && say "ok: installed weft works through find_package and pkg-config, shared and static"
exit $status
