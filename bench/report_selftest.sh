#!/bin/sh
# tools/bench-report turns a bench's output into its block, replaces only
# that block of a document, and refuses what it cannot read, saying why.
#
#   bench/report_selftest.sh TOOLS_DIR WORKDIR
set -eu
report=$1/bench-report
work=$2
rm -rf "$work"
mkdir -p "$work"

fail() {
  echo "report_selftest: $*"
  for f in "$work"/out "$work"/doc.md; do
    [ -f "$f" ] && { echo "--- $f:"; cat "$f"; }
  done
  exit 1
}

# has FILE TEXT: FILE has a line that is exactly TEXT
has() { grep -qxF -- "$2" "$1" || fail "$1 lacks the line: $2"; }

cat >"$work/bench_x.txt" <<'EOF'
bench-info bench: bench_x
bench-info commit: abc123
bench-info librdkafka: 2.8.0
bench-info machine: 2 cpus, Some CPU, Linux 6.1, host h
bench-info date: 2026-12-06T08:00:00Z
bench-info load: 1.00 2.00 3.00
bench-info args: (defaults)
bench_x: 1000 records, 2 alternating runs
  run 1: raw 10 rec/s | rill 9 rec/s
  run 2: raw 12 rec/s | rill 10 rec/s
  checks: all good
bench x: rill 9.5 rec/s baseline 11.0 rec/s ratio 0.86
spread x: rill 9.0..10.0 (iqr 9.2..9.8) baseline 10.0..12.0 (iqr 10.5..11.5) rec/s, ratio per run 0.83..0.90 median 0.86, 2 runs
bench x_overhead: rill 9.5 us baseline 11.0 us diff -1.5 us
EOF

# The block alone.
"$report" "$work/bench_x.txt" >"$work/out" || fail "refused a good output"
has "$work/out" "<!-- bench:begin bench_x@2.8.0 -->"
has "$work/out" "<!-- bench:end bench_x@2.8.0 -->"
has "$work/out" "Measured 2026-12-06T08:00:00Z, commit \`abc123\`, librdkafka 2.8.0,"
has "$work/out" "| x | 9.5 rec/s | 11.0 rec/s | 0.86 | rill 9.0..10.0 (iqr 9.2..9.8) baseline 10.0..12.0 (iqr 10.5..11.5) rec/s, ratio per run 0.83..0.90 median 0.86, 2 runs |"
has "$work/out" "| x_overhead | 9.5 us | 11.0 us | diff -1.5 us |  |"
has "$work/out" "    run 2: raw 12 rec/s | rill 10 rec/s"
has "$work/out" "      checks: all good"

# In a document: the named block is replaced, the rest kept byte for byte,
# a block the document lacks is appended with a warning.
cat >"$work/doc.md" <<'EOF'
# Doc
prose before `<!-- bench:begin bench_x@2.8.0 -->` (inline: not a marker)
<!-- bench:begin bench_x@2.8.0 -->
old results
<!-- bench:end bench_x@2.8.0 -->
prose after
<!-- bench:begin other -->
other results
<!-- bench:end other -->
EOF
"$report" -u "$work/doc.md" "$work/bench_x.txt" new=$work/bench_x.txt 2>"$work/out" ||
  fail "refused to update"
grep -q "had no block new: appended" "$work/out" || fail "no warning for the appended block"
grep -q "old results" "$work/doc.md" && fail "the old block is still there"
has "$work/doc.md" "prose before \`<!-- bench:begin bench_x@2.8.0 -->\` (inline: not a marker)"
has "$work/doc.md" "prose after"
has "$work/doc.md" "other results"
has "$work/doc.md" "<!-- bench:begin new -->"
[ "$(grep -c '^<!-- bench:begin bench_x@2.8.0 -->$' "$work/doc.md")" = 1 ] || fail "block not once"
# Running it again changes nothing.
cp "$work/doc.md" "$work/doc1.md"
"$report" -u "$work/doc.md" "$work/bench_x.txt" new=$work/bench_x.txt 2>/dev/null
cmp -s "$work/doc.md" "$work/doc1.md" || fail "a second update changed the document"

# Refusals, each naming the problem, the document untouched.
printf 'nothing to see\n' >"$work/empty.txt"
if "$report" "$work/empty.txt" >"$work/out" 2>&1; then fail "took an output without results"; fi
grep -q "no result lines" "$work/out" || fail "no reason given for an output without results"
printf '<!-- bench:begin bench_x@2.8.0 -->\nunended\n' >"$work/doc.md"
if "$report" -u "$work/doc.md" "$work/bench_x.txt" >"$work/out" 2>&1; then
  fail "took a document with an unended block"
fi
grep -q "no end marker for bench_x@2.8.0" "$work/out" || fail "no reason given for an unended block"
has "$work/doc.md" "unended"
if "$report" "$work/missing.txt" >"$work/out" 2>&1; then fail "took a missing file"; fi
grep -q "no such file" "$work/out" || fail "no reason given for a missing file"
echo "report_selftest: ok"
