#!/bin/sh
# Install rill from a build tree into a temporary prefix, then build and run
# a consumer with find_package(rill) (shared and static) and with
# pkg-config, as a user's project would.
#   check.sh <rill build dir> <source dir of this test> "<extra C flags>"
set -eu
build=$1
src=$2
cflags=${3:-}
prefix=$(mktemp -d /tmp/rill-install-XXXXXX)
# Run a built consumer; under TSan with the C11-threads shim preloaded
# (RILL_CHECK_PRELOAD: the compilers must not get it).
run() {
  if [ -n "${RILL_CHECK_PRELOAD:-}" ]; then
    LD_PRELOAD="$RILL_CHECK_PRELOAD" "$@"
  else
    "$@"
  fi
}
trap 'rm -rf "$prefix"' EXIT

cmake --install "$build" --prefix "$prefix" >/dev/null
for f in include/rill/rill.h include/rill/version.h include/rill/testkit.h \
         bin/rill-broker; do
  [ -e "$prefix/$f" ] || { echo "not installed: $f" >&2; exit 1; }
done
ls "$prefix"/lib*/librill.so* "$prefix"/lib*/librill.a "$prefix"/lib*/librill_testkit.so* \
  "$prefix"/lib*/librill_testkit.a "$prefix"/lib*/pkgconfig/rill-testkit.pc >/dev/null

cmake -S "$src" -B "$prefix/consumer-build" -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_C_FLAGS="$cflags" -DCMAKE_EXE_LINKER_FLAGS="$cflags" >/dev/null
cmake --build "$prefix/consumer-build" >/dev/null
libdir=$(dirname "$(ls "$prefix"/lib*/librill.a | head -1)")
LD_LIBRARY_PATH="$libdir" run "$prefix/consumer-build/consumer_shared"
run "$prefix/consumer-build/consumer_static"

pcdir="$libdir/pkgconfig"
version=$(PKG_CONFIG_PATH="$pcdir" pkg-config --modversion rill)
echo "pkg-config: rill $version"
# shellcheck disable=SC2046
cc $cflags -o "$prefix/consumer_pc" "$src/consumer.c" \
  $(PKG_CONFIG_PATH="$pcdir" pkg-config --cflags --libs rill-testkit rill)
LD_LIBRARY_PATH="$libdir" run "$prefix/consumer_pc"
# Static linking: rill.pc's private requirements name ck, lmdb, libev and
# pthread.
# (rdkafka's own private libraries, lz4, ssl and so on, are left out: their
# static archives are not installed here, and librdkafka links shared.)
static_libs=$(PKG_CONFIG_PATH="$pcdir" pkg-config --static --libs-only-l rill | tr ' ' '\n' |
  grep -E '^-l(rdkafka|ck|lmdb|ev|pthread)$' | sort -u | tr '\n' ' ')
for l in -lck -llmdb -lev -lpthread -lrdkafka; do
  case " $static_libs " in *" $l "*) ;; *) echo "rill.pc --static lacks $l" >&2; exit 1 ;; esac
done
# shellcheck disable=SC2046,SC2086
cc $cflags -o "$prefix/consumer_pc_static" "$src/consumer.c" "$libdir/librill_testkit.a" "$libdir/librill.a" \
  $(PKG_CONFIG_PATH="$pcdir" pkg-config --cflags rill) $static_libs
run "$prefix/consumer_pc_static"
echo "install check passed"
