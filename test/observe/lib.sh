# shellcheck shell=bash
# Shared by the observability tests (prometheus.sh, page.sh): a temporary
# directory, the demo (examples/pipeline) started with --http and its URL
# read from its output, deadlines, and a cleanup that stops every process
# the test started (SIGTERM, then SIGKILL after 10 s) and removes the
# temporary directory on every exit path. Sourced, not run.
#
# Set by the sourcing script: on_fail (a function printing what the test
# last saw; optional).
# RILL_KEEP_TMP=1 keeps the temporary directory (its path is printed).

set -u

OBS_NAME=$(basename "$0" .sh)
OBS_PIDS=""
OBS_TMP=""

say() { printf '%s: %s\n' "$OBS_NAME" "$*"; }

# skip REASON: the test cannot run here (ctest SKIP_RETURN_CODE 77).
skip() {
  say "SKIP: $*"
  exit 77
}

# fail REASON: prints the reason, what the test last saw and the demo's
# output, then exits 1 (the EXIT trap cleans up).
fail() {
  say "FAIL: $*"
  if declare -F on_fail >/dev/null; then on_fail; fi
  if [ -n "$OBS_TMP" ] && [ -f "$OBS_TMP/demo.out" ]; then
    say "--- the demo's stdout (last 25 lines)"
    tail -n 25 "$OBS_TMP/demo.out"
    say "--- the demo's stderr (last 25 lines)"
    tail -n 25 "$OBS_TMP/demo.err"
  fi
  exit 1
}

# need LABEL PATH [HINT]: PATH must be an executable, else the test is
# skipped, saying where to get it.
need() {
  if [ -z "$2" ] || [ ! -x "$2" ]; then
    skip "$1 is not available (${2:-not found}); ${3:-tools/install-deps installs it}"
  fi
}

cleanup() {
  local rc=$? pid t
  trap - EXIT
  for pid in $OBS_PIDS; do kill -TERM "$pid" 2>/dev/null; done
  for pid in $OBS_PIDS; do
    t=0
    while kill -0 "$pid" 2>/dev/null && [ "$t" -lt 100 ]; do
      sleep 0.1
      t=$((t + 1))
    done
    if kill -0 "$pid" 2>/dev/null; then
      say "process $pid ignored SIGTERM for 10 s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
  done
  if [ -n "$OBS_TMP" ]; then
    if [ "${RILL_KEEP_TMP:-0}" = 1 ]; then
      say "kept $OBS_TMP"
    else
      rm -rf "$OBS_TMP"
    fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

OBS_TMP=$(mktemp -d "${TMPDIR:-/tmp}/rill-$OBS_NAME.XXXXXX") || {
  say "FAIL: mktemp"
  exit 1
}

# track PID: stopped by the cleanup.
track() { OBS_PIDS="$OBS_PIDS $1"; }

# until_deadline END: true while the time (bash's SECONDS) is before END.
until_deadline() { [ "$SECONDS" -lt "$1" ]; }

# start_demo BINARY ARGS...: starts the demo (stdout in $OBS_TMP/demo.out,
# stderr in demo.err) and waits until it prints its URL; sets DEMO_PID and
# DEMO_URL (http://127.0.0.1:PORT, no trailing slash).
start_demo() {
  local end url
  : >"$OBS_TMP/demo.out"
  : >"$OBS_TMP/demo.err"
  "$@" >"$OBS_TMP/demo.out" 2>"$OBS_TMP/demo.err" &
  DEMO_PID=$!
  track "$DEMO_PID"
  end=$((SECONDS + 30))
  url=""
  while until_deadline "$end"; do
    url=$(sed -n 's|^http: serving \(http://[^/ ]*\)/.*|\1|p' "$OBS_TMP/demo.out")
    [ -n "$url" ] && break
    kill -0 "$DEMO_PID" 2>/dev/null || fail "the demo ended before it served HTTP"
    sleep 0.1
  done
  [ -n "$url" ] || fail "the demo printed no 'http: serving' line within 30 s"
  DEMO_URL=$url
  say "demo (pid $DEMO_PID) serves $DEMO_URL"
}

# demo_alive: fails the test if the demo has ended.
demo_alive() {
  kill -0 "$DEMO_PID" 2>/dev/null || fail "the demo ended while the test still needed it"
}

# sanitizer_check: a sanitizer report in the demo's output fails the test.
sanitizer_check() {
  if grep -Eq 'ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:|WARNING: ThreadSanitizer' \
    "$OBS_TMP/demo.err"; then
    fail "the demo's output holds a sanitizer report"
  fi
}
