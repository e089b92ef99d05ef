#!/bin/sh
# Every ELF binary of a build tree that needs librdkafka resolves it to the
# library the tree was configured with (the same file, symlinks followed):
# a tree built with -DRILL_LIBRDKAFKA_PREFIX whose rill-broker, say, would
# load the system's librdkafka fails here.
#   librdkafka_linkage.sh <build dir> <librdkafka.so configured> <binary>...
# Each <binary> named must be among those checked.
set -eu
build=$1
want=$(readlink -f "$2")
shift 2
[ -f "$want" ] || { echo "FAIL: configured library $2 does not exist" >&2; exit 1; }
command -v ldd >/dev/null 2>&1 || { echo "FAIL: ldd is missing" >&2; exit 1; }

checked=0
bad=0
checked_list=""
# Executables and shared libraries, not the objects and the deps tree.
for f in $(find "$build" -type f \( -perm -u+x -o -name '*.so*' \) \
             -not -path '*/CMakeFiles/*' -not -path '*/deps/*'); do
  [ "$(head -c 4 "$f" | od -An -c | tr -d ' \n')" = "177ELF" ] || continue
  line=$(ldd "$f" 2>/dev/null | grep 'librdkafka\.so' || true)
  [ -n "$line" ] || continue
  got=$(printf '%s\n' "$line" | awk '{print $3}')
  if [ -z "$got" ] || [ ! -e "$got" ] || [ "$(readlink -f "$got")" != "$want" ]; then
    echo "FAIL: $f loads librdkafka from '${got:-not found}', not $want" >&2
    bad=$((bad + 1))
  fi
  checked=$((checked + 1))
  checked_list="$checked_list $(readlink -f "$f")"
done
for must in "$@"; do
  case " $checked_list " in
    *" $(readlink -f "$must") "*) ;;
    *) echo "FAIL: $must was not checked (missing, or it does not need librdkafka)" >&2
       bad=$((bad + 1)) ;;
  esac
done
echo "$checked binaries need librdkafka, $bad wrong; configured: $want"
[ "$bad" -eq 0 ]
