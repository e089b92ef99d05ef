/*
 * Internals of the state layer (not installed).
 *
 * A store is a generic front (store.c) over one backend (store_mem.c,
 * store_lmdb.c), an ordered byte-key map with transactions. The front
 * encodes every key with its namespace, so the backends know nothing of
 * partitions or offsets:
 *
 *   offset of a partition:  0x00 topic 0x00 partition(4 bytes, big endian)
 *                           -> int64 (8 bytes, big endian)
 *   state of a partition:   0x01 topic 0x00 partition(4 bytes, big endian) key
 *                           -> value
 *
 * so a partition's state is one contiguous key range, and one backend
 * transaction writes state and offsets together.
 */
#ifndef RILL_STATE_INT_H
#define RILL_STATE_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <rill/state.h>

#define RILL__NS_OFFSET       0x00
#define RILL__NS_STATE        0x01
/* The changelog position of an input partition: 0x02 topic 0x00
 * partition -> int64, the changelog offset after the last complete
 * transaction of that partition the store holds. */
#define RILL__NS_CLPOS        0x02
/* The longest user key (rill_state_put), and the longest encoded key:
 * LMDB's default limit is 511 bytes. */
#define RILL__KEY_MAX         400
#define RILL__TOPIC_MAX       100
#define RILL__ENCODED_KEY_MAX (1 + RILL__TOPIC_MAX + 1 + 4 + RILL__KEY_MAX)

/* Called for each key of a scan, in order; non-zero stops it. */
typedef int rill__scan_fn(void *opaque, const void *key, size_t key_len, const void *value,
                          size_t value_len);

/* A backend. Every function gets the store; a transaction is the
 * backend's own object. One write transaction at a time per store (the
 * stage that writes it), any number of read ones, from any thread. A
 * write transaction begins and ends (commit or abort) on one thread:
 * LMDB's writer lock is a mutex, which only its owner may unlock; between
 * those, its calls may come from any thread, one at a time. */
typedef struct rill__store_ops {
    const char *name; /* "memory", "lmdb" */
    /* Begin a transaction; write = 0 for a read-only one. */
    rill_err_t (*begin)(rill_store_t *s, int write, void **txn, char *errstr, size_t errstr_size);
    /* RILL_ENOENT when absent; *v valid until the next write of the txn
     * or its end. */
    rill_err_t (*get)(void *txn, const void *k, size_t kl, const void **v, size_t *vl);
    /* RILL_EFULL: no room (the transaction can only be aborted then). */
    rill_err_t (*put)(void *txn, const void *k, size_t kl, const void *v, size_t vl);
    /* RILL_ENOENT when absent. */
    rill_err_t (*del)(void *txn, const void *k, size_t kl);
    /* Keys in [from, to), bytewise order (memcmp, then shorter first);
     * to NULL: to the end of the map. The transaction's own writes are
     * included. */
    rill_err_t (*scan)(void *txn, const void *from, size_t fl, const void *to, size_t tl,
                       rill__scan_fn *fn, void *opaque);
    /* Commit (the txn is gone, also on error: RILL_EFULL, RILL_EIO with a
     * sentence). */
    rill_err_t (*commit)(void *txn, char *errstr, size_t errstr_size);
    /* Abort (the txn is gone). */
    void (*abort)(void *txn);
    /* Bytes in use (for the stats). */
    uint64_t (*bytes)(rill_store_t *s);
    /* Free the backend (no transaction is open). */
    void (*close)(rill_store_t *s);
} rill__store_ops_t;

struct rill_store {
    const rill__store_ops_t *ops;
    void *impl; /* the backend's */
    char name[256];
    /* Counters, updated with relaxed atomics (read by any thread; each
     * is a count of its own, ordering nothing). */
    _Atomic uint64_t commits, aborts, puts, deletes, commit_errors;
    /* Window stages (window.c). */
    _Atomic uint64_t late, windows_closed;
    /* Set while a stage runs over the store (one writer at a time). */
    _Atomic int busy;
    /* The changelog (changelog.c), or NULL. */
    struct rill__changelog *cl;
};

/* Called by the views (store.c) after each put or delete that took:
 * the encoded key and the value (NULL for a delete). */
typedef void rill__change_fn(void *opaque, const uint8_t *key, size_t key_len, const void *value,
                             size_t value_len);

/* A partition's view of a write transaction, as a stage function gets it
 * (rill_state_get() and the others, store.c). The stage fills store, txn,
 * topic, partition and the prefix (rill__state_prefix) before each call. */
struct rill_state {
    rill_store_t *store;
    void *txn;
    const char *topic;
    int32_t partition;
    size_t prefix_len;
    uint8_t key[RILL__ENCODED_KEY_MAX]; /* the prefix, then the user key */
    rill__change_fn *on_change;         /* a changelog records the changes, or NULL */
    void *change_opaque;
};

/* Int64 values as stored: 8 bytes, big endian. */
void rill__state_encode_i64(uint8_t out[8], int64_t v);
int64_t rill__state_decode_i64(const uint8_t in[8]);

/* Write partition's next offset into the write transaction txn. */
rill_err_t rill__state_put_offset(rill_store_t *s, void *txn, const char *topic, int32_t partition,
                                  int64_t offset);

/* The backends' constructors: fill s->ops and s->impl. */
rill_err_t rill__store_mem_init(rill_store_t *s, char *errstr, size_t errstr_size);
rill_err_t rill__store_lmdb_init(rill_store_t *s, const char *path, const rill_store_opts_t *opts,
                                 char *errstr, size_t errstr_size);

/* Encode the namespace prefix of (ns, topic, partition) into buf (at least
 * RILL__ENCODED_KEY_MAX bytes); returns its length, 0 for a topic too long
 * or empty or a negative partition. */
size_t rill__state_prefix(uint8_t *buf, int ns, const char *topic, int32_t partition);

/* What is wrong with a window stage's arguments, in a sentence; NULL
 * when they hold (window_opts.c). */
const char *rill__window_opts_check(const rill_store_t *store, const rill_window_opts_t *o,
                                    const rill_window_ops_t *ops);

/* A table's value of a key, during a lookup: value NULL and found 0 when
 * the key is not there. */
typedef void rill__table_found_fn(void *opaque, const void *value, size_t value_len, int found);
/* Look key up in t's committed state and call fn once with what is there,
 * inside one read transaction (the value is valid during the call only).
 * partition: the stream record's, for a co-partitioned table (a partition
 * the table does not follow has no keys); -1 searches every partition the
 * table follows; a global table ignores it. A key no table can hold
 * (empty, too long) is not found. RILL_OK, or the store's error (fn not
 * called). */
rill_err_t rill__table_lookup(rill_table_t *t, int32_t partition, const void *key, size_t key_len,
                              rill__table_found_fn *fn, void *opaque);
/* Whether a stream element of partition (-1: none known) may be joined
 * with t now: a global table's rill_table_caught_up(); for a co-partitioned
 * one, whether its partition is caught up (one it does not follow is: its
 * elements find no match), -1 whether the table is. 0 while no follower
 * reported an assignment. One or two atomic loads. */
int rill__table_partition_caught_up(rill_table_t *t, int32_t partition);
/* A co-partitioned table's partition count, and its topic into *topic;
 * 0 for a global table. */
int32_t rill__table_copartitions(const rill_table_t *t, const char **topic);
/* RILL_OK, or the error that stopped t reading, with its sentence into
 * text (size bytes). One atomic load while it has not failed. */
rill_err_t rill__table_failed(rill_table_t *t, char *text, size_t size);

#endif /* RILL_STATE_INT_H */
