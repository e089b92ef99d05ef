#!/bin/sh
# Public headers compile alone and from C++.
#
#   check.sh <C compiler> <include dir> <generated include dir>
#
# 1. Each public header (include/rill/*.h and the generated version.h),
#    included alone (twice: its guard), compiles as C11 with the given
#    compiler and clang (if present), and as C++11 and C++17 with g++ and
#    clang++ (if present), all with -Wall -Wextra -Wpedantic -Werror.
# 2. use.cc, a C++20 program using the initializer macros and constants,
#    compiles with g++ and clang++ (-Wno-missing-field-initializers: g++
#    warns about every member a designated initializer leaves out, which
#    is the point of the defaults macros), and its undefined rill_ symbols
#    are C names, not C++-mangled ones: the functions are extern "C".
#    A control case (a declaration without extern "C") proves the symbol
#    check catches a missing guard.
set -eu
cc=$1
inc=$2
geninc=$3
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

command -v g++ >/dev/null 2>&1 ||
  { echo "g++ is not installed (tools/install-deps installs it)"; exit 1; }
ccs="$cc"
command -v clang >/dev/null 2>&1 && ccs="$ccs clang"
cxxs="g++"
command -v clang++ >/dev/null 2>&1 && cxxs="$cxxs clang++"

warn="-Wall -Wextra -Wpedantic -Werror"
fail=0
headers="$(ls "$inc"/rill/*.h) $geninc/rill/version.h"
for h in $headers; do
  name=$(basename "$h")
  ok=1
  # (the typedef: ISO C wants a declaration; version.h has only macros)
  printf '#include <rill/%s>\n#include <rill/%s>\ntypedef int one_t;\n' "$name" "$name" \
    >"$tmp/one.c"
  cp "$tmp/one.c" "$tmp/one.cc"
  for c in $ccs; do
    if ! $c -std=c11 $warn -Wstrict-prototypes -fsyntax-only -I"$inc" -I"$geninc" "$tmp/one.c"; then
      echo "FAIL: $name alone, as C11 ($c)"
      ok=0
    fi
  done
  for cxx in $cxxs; do
    for std in c++11 c++17; do
      if ! $cxx -std=$std $warn -fsyntax-only -I"$inc" -I"$geninc" "$tmp/one.cc"; then
        echo "FAIL: $name alone, as $std ($cxx)"
        ok=0
      fi
    done
  done
  if [ $ok = 1 ]; then
    echo "$name: compiles alone as C11 ($ccs), C++11 and C++17 ($cxxs)"
  else
    fail=1
  fi
done

# Undefined rill_ symbols of an object: none may be C++-mangled.
mangled() {
  nm -u "$1" | awk '{print $NF}' | grep '^_Z.*rill_' || true
}
for cxx in $cxxs; do
  if ! $cxx -std=c++20 $warn -Wno-missing-field-initializers -c -I"$inc" -I"$geninc" \
    "$here/use.cc" -o "$tmp/use.o"; then
    echo "FAIL: use.cc does not compile as C++20 ($cxx)"
    fail=1
    continue
  fi
  bad=$(mangled "$tmp/use.o")
  if [ -n "$bad" ]; then
    echo "FAIL: rill functions declared without extern \"C\" ($cxx): $bad"
    fail=1
  elif ! nm -u "$tmp/use.o" | grep -q ' rill_version_str$'; then
    echo "FAIL: use.o does not reference rill_version_str: the check is broken"
    fail=1
  else
    echo "use.cc: compiles as C++20 ($cxx), rill functions have C linkage"
  fi
done

# Control: a declaration without extern "C" must be caught.
printf 'int rill_control(void);\nint f(void) { return rill_control(); }\n' >"$tmp/control.cc"
g++ -c "$tmp/control.cc" -o "$tmp/control.o"
if [ -z "$(mangled "$tmp/control.o")" ]; then
  echo "FAIL: the symbol check did not catch a declaration without extern \"C\""
  fail=1
fi
exit $fail
