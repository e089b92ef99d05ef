#!/bin/sh
# Every ELF binary of a build tree, or of its installation, that needs
# librdkafka resolves it to the library the tree was configured with (the
# same file, symlinks followed): a tree built with -DRILL_LIBRDKAFKA_PREFIX
# whose rill-broker, say, would load the system's librdkafka fails here.
#   librdkafka_linkage.sh [--installed] <build dir> <librdkafka.so configured> <name>...
# --installed: check what `cmake --install <build dir>` installs (into a
# temporary prefix) instead of the build tree. Each <name> (a file name,
# e.g. rill-broker) must be among the binaries checked.
set -eu
installed=0
if [ "${1:-}" = --installed ]; then
  installed=1
  shift
fi
build=$1
want=$(readlink -f "$2")
shift 2
[ -f "$want" ] || { echo "FAIL: configured library $want does not exist" >&2; exit 1; }
command -v ldd >/dev/null 2>&1 || { echo "FAIL: ldd is missing" >&2; exit 1; }

root=$build
tmp=$(mktemp -d /tmp/rill-linkage-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
list=$tmp/binaries
if [ "$installed" -eq 1 ]; then
  root=$tmp/prefix
  cmake --install "$build" --prefix "$root" >/dev/null
fi

checked=0
bad=0
names=""
# Executables and shared libraries, not the objects and the deps tree.
find "$root" -type f \( -perm -u+x -o -name '*.so*' \) \
  -not -path '*/CMakeFiles/*' -not -path '*/deps/*' >"$list"
while IFS= read -r f; do
  [ "$(head -c 4 "$f" | od -An -c | tr -d ' \n')" = "177ELF" ] || continue
  line=$(ldd "$f" 2>/dev/null | grep 'librdkafka\.so' || true)
  [ -n "$line" ] || continue
  got=$(printf '%s\n' "$line" | awk '{print $3}')
  if [ -z "$got" ] || [ ! -e "$got" ] || [ "$(readlink -f "$got")" != "$want" ]; then
    echo "FAIL: $f loads librdkafka from '${got:-not found}', not $want" >&2
    bad=$((bad + 1))
  fi
  checked=$((checked + 1))
  names="$names $(basename "$f")"
done <"$list"
for must in "$@"; do
  case " $names " in
    *" $must "*) ;;
    *) echo "FAIL: no $must among the binaries that need librdkafka under $root" >&2
       bad=$((bad + 1)) ;;
  esac
done
echo "$checked binaries need librdkafka, $bad wrong; configured: $want"
[ "$bad" -eq 0 ]
