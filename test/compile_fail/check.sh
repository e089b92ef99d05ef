#!/bin/sh
# Compile-fail check for distinct id types (see cases.c).
#   check.sh <C compiler> <include dir> <generated include dir>
set -eu
cc=$1
inc=$2
geninc=$3
src=$(dirname "$0")/cases.c
out=$(mktemp)
trap 'rm -f "$out"' EXIT

"$cc" -std=c11 -fsyntax-only -Wall -I"$inc" -I"$geninc" -DCASE=0 "$src" ||
  { echo "the control case (right types) does not compile: the check itself is broken"; exit 1; }
fail=0
for n in 1 2 3 4 5 6 7; do
  if "$cc" -std=c11 -fsyntax-only -I"$inc" -I"$geninc" -DCASE=$n "$src" >"$out" 2>&1; then
    echo "case $n compiled, but it passes an id of the wrong kind"
    fail=1
  elif ! grep -q "incompatible type" "$out"; then
    echo "case $n failed for another reason than the id's type:"
    cat "$out"
    fail=1
  else
    echo "case $n rejected: $(grep -m1 'incompatible type' "$out" | sed 's/.*error: //')"
  fi
done
exit $fail
