#!/bin/sh
# Runs $RILL_NO_PRELOAD_BIN with the given arguments but without LD_PRELOAD.
# In a ThreadSanitizer tree every test preloads the C11-threads shim
# (support/tsan_c11threads.c), which needs the TSan runtime of an
# instrumented program: a program not built with TSan (kcat) crashes with it
# (SIGSEGV at its first thread). The TSan tree's tests run kcat through this.
unset LD_PRELOAD
exec "$RILL_NO_PRELOAD_BIN" "$@"
