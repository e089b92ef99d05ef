/*
 * Helpers for the state layer's tests (test_state_*.c,
 * test_testkit_stage.c): counters kept in a partition's state, reads of a
 * store's committed state and offsets, and stores of either backend in a
 * temporary directory.
 *
 * The state the counting function keeps per partition: "n", the records
 * counted, and "sum", the sum of their offsets (8-byte native integers).
 *
 * sk_add_u64() and sk_count_record() run inside stage functions and do not
 * assert; the others assert (support/rtest.h), like kafka_kit's: call them
 * on the test thread only.
 */
#ifndef RILL_TEST_STATE_KIT_H
#define RILL_TEST_STATE_KIT_H

#include <stdint.h>

#include <rill/state.h>

/* ---- state a stage function keeps ----------------------------------- */

/* Add v to the 8-byte counter at key (absent: 0) in the partition's state. */
rill_err_t sk_add_u64(rill_state_t *st, const char *key, uint64_t v);

/* What sk_count_record() counts its calls in (its opaque). */
typedef struct sk_counter {
    _Atomic uint64_t calls;
    _Atomic int fail_at_call; /* fail the call with this number once (0: never) */
} sk_counter_t;

/* A stateful stage function (opaque: an sk_counter_t): adds 1 to "n" and
 * the record's offset to "sum". The call numbered fail_at_call fails
 * (RILL_EINVAL, once), which aborts the stage's transaction. */
rill_err_t sk_count_record(void *opaque, rill_state_t *st, rill_elem_t *in, rill_emitter_t *out);

/* ---- a store's committed state --------------------------------------- */

/* The 8-byte counter at key in partition p's committed state (absent: 0). */
uint64_t sk_read_u64(rill_store_t *s, const char *topic, int p, const char *key);

/* The offset stored with partition p's state (none: -1). */
int64_t sk_stored_offset(rill_store_t *s, const char *topic, int p);

/* Whether partitions 0..parts-1 all have `want` as their stored offset. */
int sk_all_stored(rill_store_t *s, const char *topic, int parts, int64_t want);

/* ---- stores ------------------------------------------------------------ */

typedef enum sk_backend { SK_MEM, SK_LMDB } sk_backend_t;

/* Room for the directory of an LMDB store made by sk_open_store() (dir may
 * be NULL for a memory store). */
#define SK_DIR_SIZE 64

/* A store named `name`: a memory store, or an LMDB store in a new
 * directory /tmp/rill-<name>-XXXXXX, written into dir. */
rill_store_t *sk_open_store(sk_backend_t b, const char *name, char *dir);

/* Close s; an LMDB store's directory is removed. */
void sk_close_store(rill_store_t *s, sk_backend_t b, const char *dir);

/* Remove dir and everything below it. */
void sk_rm_rf(const char *dir);

#endif
