#!/bin/sh
# The documentation checks work on a fully documented header
# (test/docs/sample.h) and fail, saying where, once a comment is missing.
#
#   test/docs/selftest.sh api TOOLS_DIR WORKDIR        tools/check-api-docs
#   test/docs/selftest.sh locality TOOLS_DIR WORKDIR   tools/check-locality
set -eu
mode=$1
tools=$2
work=$3
sample=$(cd "$(dirname "$0")" && pwd)/sample.h
rm -rf "$work"
mkdir -p "$work/in"

# sample.h without the comment block right above the line that names $1.
without_comment_of() {
  awk -v name="$1(" '
    held != "" && in_block { held = held "\n" $0; if (index($0, "*/")) in_block = 0; next }
    /^\/\*\*/ { if (held != "") print held; held = $0; in_block = !index($0, "*/"); next }
    { if (held != "" && !index($0, name)) print held; held = ""; print }
  ' "$sample"
}

fail() { echo "selftest: $*"; echo "--- the check printed:"; cat "$work/out"; exit 1; }

# expect_fail <header> <text the output must contain>
expect_fail() {
  if $check "$1" >"$work/out" 2>&1; then fail "passed $2 missing"; fi
  grep -qF "$2" "$work/out" || fail "failed without naming $2"
  echo "selftest: fails naming $2:"
  sed 's/^/    /' "$work/out"
}

case "$mode" in
  api) check="$tools/check-api-docs -o $work/docs" ;;
  locality) check="$tools/check-locality" ;;
  *) echo "usage: test/docs/selftest.sh api|locality TOOLS_DIR WORKDIR" >&2; exit 2 ;;
esac

# (i) the sample as it is passes.
cp "$sample" "$work/in/sample.h"
$check "$work/in/sample.h" >"$work/out" 2>&1 || fail "the fully documented sample did not pass"
echo "selftest: sample.h passes:"
sed 's/^/    /' "$work/out"

# (ii) one function without its comment fails.
without_comment_of sample_send >"$work/in/sample.h"
cmp -s "$sample" "$work/in/sample.h" && fail "could not remove sample_send's comment"
expect_fail "$work/in/sample.h" "sample_send"

if [ "$mode" = api ]; then
  # The two gaps Doxygen 1.9 is silent about.
  sed 's|^ \* @file$| *|' "$sample" >"$work/in/sample.h"
  expect_fail "$work/in/sample.h" "no /** @file */ comment"
  sed 's|SAMPLE_EFULL,\( *\)/\*\*<|SAMPLE_EFULL,\1/*|' "$sample" >"$work/in/sample.h"
  expect_fail "$work/in/sample.h" "enumerator SAMPLE_EFULL"
else
  # A comment without @locality counts as none.
  sed 's|^ \* @locality any thread except an executor thread\.$| * Blocks.|' "$sample" >"$work/in/sample.h"
  expect_fail "$work/in/sample.h" "sample_wait (function) has no @locality"
fi
