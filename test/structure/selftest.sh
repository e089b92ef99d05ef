#!/bin/sh
# tools/check-structure must pass a tree that keeps every rule and report
# each kind of violation in one that does not. Builds both trees from the
# snippets below in a temporary folder.
#
#   test/structure/selftest.sh CHECK_STRUCTURE CC
set -eu
check=$1
cc=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
t=$tmp/src
mkdir -p "$t/actors" "$t/supervision" "$t/streams/stages" "$t/kafka" "$t/testkit" "$t/include/rill"

# A clean tree: every layer uses only lower ones, through the seam.
cat >"$t/include/rill/pub.h" <<'C'
void rill_pub(void);
C
cat >"$t/actors/seam.h" <<'C'
void rill__seam(void);
C
cat >"$t/actors/actor_int.h" <<'C'
void rill__private(void);
C
cat >"$t/actors/core.c" <<'C'
#include "actor_int.h"
#include "seam.h"
void rill_pub(void) {}
void rill__seam(void) { rill__private(); }
void rill__private(void) {}
C
cat >"$t/supervision/sup.c" <<'C'
#include "../actors/seam.h"
void sup_run(void);
void sup_run(void) { rill__seam(); }
C
cat >"$t/streams/stages/map.c" <<'C'
#include "../../actors/seam.h"
void map_run(void);
void sup_run(void);
void rill_pub(void);
void map_run(void) { sup_run(); rill_pub(); }
C
cat >"$t/kafka/a.c" <<'C'
void kafka_a(void);
void map_run(void);
void kafka_a(void) { map_run(); }
C
cat >"$t/kafka/b.c" <<'C'
void kafka_a(void);
void kafka_b(void);
void kafka_b(void) { kafka_a(); }
C
cat >"$t/testkit/kit.c" <<'C'
#include "../kafka/k.h"
void kafka_b(void);
void kit(void);
void kit(void) { kafka_b(); }
C
: >"$t/kafka/k.h"

build() {
  objs=""
  for c in $(cd "$t" && find . -name '*.c' | sed 's|^\./||'); do
    mkdir -p "$tmp/obj/lib.dir/$(dirname "$c")"
    "$cc" -c -o "$tmp/obj/lib.dir/$c.o" "$t/$c"
    objs="$objs $tmp/obj/lib.dir/$c.o"
  done
}

fail() { echo "selftest: $*"; echo "--- check-structure printed:"; cat "$tmp/out"; exit 1; }

build
# shellcheck disable=SC2086
"$check" -s "$t" $objs >"$tmp/out" 2>&1 || fail "a clean tree did not pass"
echo "selftest: a clean tree passes"

# Now one violation of each kind.
cat >>"$t/actors/core.c" <<'C'
void map_run(void);
void up(void);
void up(void) { map_run(); }
C
cat >>"$t/supervision/sup.c" <<'C'
#include "../streams/x.h"
#include "../actors/actor_int.h"
C
: >"$t/streams/x.h"
cat >>"$t/streams/stages/map.c" <<'C'
void rill__private(void);
void sneak(void);
void sneak(void) { rill__private(); }
C
cat >>"$t/kafka/a.c" <<'C'
void kafka_b(void);
void kafka_c(void);
void kafka_c(void) { kafka_b(); }
C
awk 'BEGIN { for (i = 0; i < 901; i++) print "/* line */" }' >>"$t/testkit/kit.c"

build
# shellcheck disable=SC2086
if "$check" -s "$t" $objs >"$tmp/out" 2>&1; then
  fail "a tree with violations passed"
fi
for want in \
  "Layer order: actors/core.c uses map_run, defined in streams/stages/map.c" \
  "Layer order: supervision/sup.c:4 includes streams/x.h" \
  "Seam: supervision/sup.c:5 includes actors/actor_int.h" \
  "Seam: streams/stages/map.c uses rill__private, defined in actors/core.c" \
  "    kafka/a.c -> kafka/b.c -> kafka/a.c" \
  "Size: testkit/kit.c has 905 lines"; do
  grep -qF "$want" "$tmp/out" || fail "missing: $want"
done
echo "selftest: each kind of violation is reported:"
sed 's/^/    /' "$tmp/out"
