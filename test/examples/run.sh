#!/bin/sh
# Runs an example as a test: it passes only if the example exits with
# status 0 AND printed its verdict (a line matching EXPECT, grep -E), so an
# example that ends early with status 0, or prints FAILED and still exits 0,
# fails the test. The example's output is shown in full (ctest also scans it
# for sanitizer reports).
#
#   run.sh EXPECT PROGRAM [ARGS...]
set -u
[ $# -ge 2 ] || { echo "usage: run.sh EXPECT PROGRAM [ARGS...]" >&2; exit 2; }
expect=$1
shift
out=$(mktemp) || exit 2
trap 'rm -f "$out"' EXIT
"$@" >"$out" 2>&1
rc=$?
cat "$out"
if [ "$rc" -ne 0 ]; then
  echo "run.sh: $1 exited with status $rc" >&2
  exit 1
fi
if ! grep -Eq -- "$expect" "$out"; then
  echo "run.sh: $1 exited 0 but did not print its verdict /$expect/" >&2
  exit 1
fi
exit 0
