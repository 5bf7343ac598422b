#!/usr/bin/env bash
# scripts/test.sh [quick]: THE test command. Installs what is missing
# (scripts/deps.sh), then builds and runs the whole suite in each
# configuration, each in its own build directory:
#
#   build/test   plain RelWithDebInfo build, run twice: WEFT_BACKEND=uring, then epoll
#   build/tsan   -DWEFT_TSAN=ON (ThreadSanitizer), WEFT_BACKEND=uring
#   build/asan   -DWEFT_ASAN=ON (AddressSanitizer + UBSan, leaks checked), WEFT_BACKEND=epoll
#
# `scripts/test.sh quick` runs only build/test (both backends), for development.
# WEFT_STRESS (the stress tests' size) defaults to ci. CC/CXX pick the compiler
# as usual (gcc and clang both work for the sanitizer builds); without CC set,
# the TSan build uses clang when it is there (scripts/deps.sh installs it):
# gcc 12's ThreadSanitizer runtime ran this suite 3.6x slower here (553 s
# against 153 s; each new task's fiber state cost it page faults), slow
# enough that tests waiting a few milliseconds for a task to start failed.
# Prints one summary line per configuration with its time; exits non-zero if
# any configuration failed to build or had a failing test.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" || exit 1

mode=full
case ${1:-} in
  "") ;;
  quick) mode=quick ;;
  *) echo "usage: scripts/test.sh [quick]" >&2; exit 2 ;;
esac

scripts/deps.sh || { echo "test.sh: dependencies missing (see above)" >&2; exit 1; }

export WEFT_STRESS=${WEFT_STRESS:-ci}
jobs=2
summary=()
failed=0

log() { printf '\n==== test.sh: %s\n' "$*"; }

# build DIR CMAKE_ARGS...: configure and build; the output goes to DIR/build.log
# and its end is shown on failure.
build() {
  local dir=$1; shift
  mkdir -p "$dir"
  log "building $dir ($*)"
  if ! { cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" &&
         cmake --build "$dir" -j "$jobs"; } >"$dir/build.log" 2>&1; then
    tail -n 60 "$dir/build.log"
    echo "test.sh: building $dir failed (full log: $dir/build.log)"
    return 1
  fi
}

# run NAME DIR [ENV=VALUE... --] [WRAPPER...]: ctest in DIR under that environment.
run_ctest() {
  local dir=$1; shift
  local envs=()
  while [[ $# -gt 0 && $1 != -- ]]; do envs+=("$1"); shift; done
  [[ ${1:-} == -- ]] && shift
  log "ctest in $dir with ${envs[*]}"
  env "${envs[@]}" "$@" ctest --test-dir "$dir" --output-on-failure -j "$jobs"
}

# record NAME STATUS SECONDS (a configuration's time includes its build)
record() {
  local verdict=PASS
  [[ $2 -eq 0 ]] || { verdict=FAIL; failed=1; }
  summary+=("$(printf '%-22s %s  %5ds' "$1" "$verdict" "$3")")
}

# ThreadSanitizer's runtime cannot map its shadow memory on kernels with more
# ASLR bits than it knows (vm.mmap_rnd_bits > 28 on recent kernels): then run
# the TSan tests with ASLR off, if this machine lets us (setarch -R).
tsan_wrapper=()
probe_tsan() {
  local d; d=$(mktemp -d)
  printf '#include <pthread.h>\nstatic void *f(void *a) { return a; }\nint main(void) { pthread_t t; pthread_create(&t, 0, f, 0); return pthread_join(t, 0); }\n' >"$d/p.c"
  if ! ${CC:-cc} -fsanitize=thread -pthread "$d/p.c" -o "$d/p" 2>/dev/null; then
    echo "test.sh: warning: ${CC:-cc} cannot build a ThreadSanitizer program; the tsan build will tell why"
  elif ! "$d/p" >/dev/null 2>&1; then
    if setarch "$(uname -m)" -R "$d/p" >/dev/null 2>&1; then
      tsan_wrapper=(setarch "$(uname -m)" -R)
      echo "test.sh: ThreadSanitizer needs ASLR off on this kernel: running its tests under setarch -R"
    else
      echo "test.sh: warning: ThreadSanitizer programs fail here even with ASLR off"
    fi
  fi
  rm -rf "$d"
}

# LeakSanitizer needs ptrace-like access to stop the process's threads, which
# some containers forbid; then leaks cannot be checked (said loudly).
asan_leaks=1
probe_lsan() {
  local d; d=$(mktemp -d)
  printf 'int main(void) { return 0; }\n' >"$d/p.c"
  if ${CC:-cc} -fsanitize=address "$d/p.c" -o "$d/p" 2>/dev/null &&
     ! ASAN_OPTIONS=detect_leaks=1 "$d/p" >/dev/null 2>&1; then
    asan_leaks=0
    echo "test.sh: WARNING: LeakSanitizer cannot run here (ptrace forbidden?): the asan build runs with detect_leaks=0"
  fi
  rm -rf "$d"
}

# ------------------------------------------------------------ build/test: both backends
t0=$SECONDS
if build build/test; then
  run_ctest build/test WEFT_BACKEND=uring
  record "test  (io_uring)" $? $((SECONDS - t0))
  t0=$SECONDS
  run_ctest build/test WEFT_BACKEND=epoll
  record "test  (epoll)" $? $((SECONDS - t0))
else
  record "test  (build failed)" 1 $((SECONDS - t0))
fi

if [[ $mode == full ]]; then
  # ---------------------------------------------------------- build/tsan
  t0=$SECONDS
  if [[ -z ${CC:-} ]] && command -v clang >/dev/null 2>&1 && command -v clang++ >/dev/null 2>&1; then
    CC=clang probe_tsan
    CC=clang CXX=clang++ build build/tsan -DWEFT_TSAN=ON
  else
    probe_tsan
    build build/tsan -DWEFT_TSAN=ON
  fi
  if [[ $? -eq 0 ]]; then
    run_ctest build/tsan WEFT_BACKEND=uring \
      "TSAN_OPTIONS=halt_on_error=1 second_deadlock_stack=1${TSAN_OPTIONS:+ $TSAN_OPTIONS}" \
      -- "${tsan_wrapper[@]}"
    record "tsan  (io_uring)" $? $((SECONDS - t0))
  else
    record "tsan  (build failed)" 1 $((SECONDS - t0))
  fi

  # ---------------------------------------------------------- build/asan
  t0=$SECONDS
  probe_lsan
  if build build/asan -DWEFT_ASAN=ON; then
    run_ctest build/asan WEFT_BACKEND=epoll \
      "ASAN_OPTIONS=detect_leaks=$asan_leaks:abort_on_error=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}" \
      "UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
    record "asan+ubsan (epoll)" $? $((SECONDS - t0))
  else
    record "asan+ubsan (build failed)" 1 $((SECONDS - t0))
  fi
fi

printf '\n==== test.sh summary (WEFT_STRESS=%s)\n' "$WEFT_STRESS"
printf '%s\n' "${summary[@]}"
if [[ $failed -ne 0 ]]; then
  echo "test.sh: FAILED"
  exit 1
fi
echo "test.sh: all passed"
