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
# bad flags: a message and status 2, no pipeline run
timeout 10 "$p" --workers x "echo no" >/dev/null 2>&1
[ $? -eq 2 ] || fail "--workers x: want status 2"
timeout 10 "$p" --workers 2>/dev/null
[ $? -eq 2 ] || fail "--workers without a value: want status 2"
msg=$(timeout 10 "$p" --help 2>&1 >/dev/null)
[ $? -eq 2 ] || fail "--help: want status 2"
case "$msg" in usage:*) ;; *) fail "--help: got [$msg]" ;; esac
echo ok
