#!/usr/bin/env bash
# bench/device_bundle.sh: pack what bench/scaling.sh needs into .devbundle/,
# for a machine with no compiler, package registry or network (the
# many-core machine some sessions are lent: its `run` tool copies the working
# tree and the ignored paths named in `carry`, 64 MiB in all).
#
#   bench/device_bundle.sh            # weft (build/release), the load clients, Go and Tokio peers
#   PERF=1 bench/device_bundle.sh     # and perf + strace with every library they load (~35 MB)
#
# Then, on that machine (from the repository root, `carry: [".devbundle"]`):
#   .devbundle/run.sh                                  # bench/scaling.sh, task workloads
#   SERVERS=1 CASES=none .devbundle/run.sh             # servers only
#   WORKERS="1 4 16" REPS=3 CASES="fib;spawn_many" .devbundle/run.sh
#   .devbundle/perf.sh record -e cpu-clock -g -- .devbundle/bin/weft_bench fib workers=16
# run.sh writes bench/scaling.sh's table under $OUT (the tool's output
# folder) when it is set.
#
# Binaries: weft's from build/release (`bench/run build` first; the library
# goes in lib/ so that weft_bench finds it through LD_LIBRARY_PATH), the Go
# peer from /tmp/weft-peer-go (bench/compare_go.sh builds it) or $GO_PEER,
# the Tokio peer from $TOKIO_PEER, ../shared/peers/tokio/peer-tokio or
# /tmp/peer-tokio/peer-tokio, wrk from PATH; the shared libraries they load
# that a bare Debian image may lack (OpenSSL, LuaJIT for wrk) go in lib/.
# Missing peers are left out with a note (scaling.sh then skips them).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$root/.devbundle"
rel="$root/build/release"
note() { echo "device_bundle: $*" >&2; }

[[ -x "$rel/bench/weft_bench" ]] || { note "build/release is missing: run bench/run build first"; exit 1; }
(cd "$rel" && cmake --build . -j2 --target weft_bench echo_server http_hello https_hello echo_client >/dev/null)
rm -rf "$out"
mkdir -p "$out/bin" "$out/lib"

for f in bench/weft_bench bench/echo_client examples/echo_server examples/http_hello examples/https_hello; do
  cp "$rel/$f" "$out/bin/"
done
cp -L "$rel"/libweft.so.0 "$out/lib/"

go_peer="${GO_PEER:-/tmp/weft-peer-go/peer-go}"
if [[ -x "$go_peer" ]]; then cp "$go_peer" "$out/bin/peer-go"; else note "no Go peer ($go_peer): run bench/compare_go.sh once to build it"; fi
tokio_peer="${TOKIO_PEER:-}"
for t in "$tokio_peer" "$root/../shared/peers/tokio/peer-tokio" /tmp/peer-tokio/peer-tokio; do
  if [[ -n "$t" && -x "$t" ]]; then cp "$t" "$out/bin/peer-tokio"; break; fi
done
[[ -x "$out/bin/peer-tokio" ]] || note "no Tokio peer: build ../shared/peers/tokio (its build.sh) or set TOKIO_PEER"
if command -v wrk >/dev/null; then cp "$(command -v wrk)" "$out/bin/"; else note "no wrk: the http rows will be skipped"; fi

# The libraries a bare image may lack: whatever these binaries load from
# OpenSSL and LuaJIT (libc and friends are on every Debian image).
for b in "$out"/bin/*; do
  ldd "$b" 2>/dev/null | awk '/=> \// {print $3}' | grep -E 'libssl|libcrypto|libluajit' || true
done | sort -u | while read -r l; do cp -L "$l" "$out/lib/"; done

if [[ "${PERF:-0}" == 1 ]]; then
  # perf and strace with every library they load and the loader itself:
  # run them as `ld-linux --library-path perf/lib perf ...` (perf.sh).
  mkdir -p "$out/perf/lib"
  for tool in perf strace; do
    p="$(command -v "$tool" || true)"
    [[ -n "$p" ]] || { note "no $tool here"; continue; }
    # Debian's /usr/bin/perf is a wrapper script: the real binary sits in /usr/lib/linux-tools-*
    if head -c 2 "$p" | grep -q '#!'; then
      real="$(ls /usr/lib/linux-tools-*/perf /usr/lib/linux-tools/*/perf 2>/dev/null | head -1 || true)"
      [[ -n "$real" ]] && p="$real"
    fi
    cp -L "$p" "$out/perf/$tool"
    ldd "$p" | awk '/=> \// {print $3} /ld-linux/ {print $1}' | while read -r l; do cp -L "$l" "$out/perf/lib/"; done
  done
  cat >"$out/perf.sh" <<'EOF'
#!/usr/bin/env bash
# perf from the bundle: perf.sh record ... | perf.sh report ...; STRACE=1 perf.sh -c -f cmd... runs strace instead
b="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tool=perf; [[ "${STRACE:-0}" == 1 ]] && tool=strace
exec "$b/perf/lib/ld-linux-x86-64.so.2" --library-path "$b/perf/lib" "$b/perf/$tool" "$@"
EOF
  chmod +x "$out/perf.sh"
fi

cat >"$out/run.sh" <<'EOF'
#!/usr/bin/env bash
# bench/scaling.sh with the bundle's binaries (made by bench/device_bundle.sh).
b="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$b")"
export PATH="$b/bin:$PATH" LD_LIBRARY_PATH="$b/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
exec env WEFT_BENCH="$b/bin/weft_bench" WEFT_EXAMPLES="$b/bin" ECHO_CLIENT="$b/bin/echo_client" \
  GO_PEER="${GO_PEER-$b/bin/peer-go}" TOKIO_PEER="${TOKIO_PEER-$b/bin/peer-tokio}" \
  OUT_DIR="${OUT_DIR:-${OUT:+$OUT/scaling}}" "$root/bench/scaling.sh" "$@"
EOF
chmod +x "$out/run.sh"
du -sh "$out" >&2
