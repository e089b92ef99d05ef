/**
 * @file
 * rill state: keyed state stores whose state and input offsets commit in
 * one transaction, and the stage that keeps them (scala-kafka-client's
 * "state and offsets stored together", Kafka Streams' state stores).
 *
 * THE MODEL. A store holds keyed state per input partition: the state a
 * record changes lives in the namespace of the record's topic and
 * partition, next to that partition's offset, the offset of the first
 * record the state does not reflect yet. A store commit writes both in one
 * transaction. A consumer that uses the store (rill_consumer_conf_use_store)
 * starts every partition it is assigned from the offset stored with its
 * state, or from the partition's beginning when the store has none (the
 * state of a partition is built from every record of it), so after a crash,
 * a restart, or a partition that came back, the state reflects every record
 * exactly once: none lost, none counted twice. Kafka's committed offsets
 * still trail the store's (they serve lag monitoring and tools), but they
 * are not what consumption starts from.
 *
 * Two backends: memory (fast; gone with the process, so exact across a
 * pipeline's supervised restarts, not across a crash) and LMDB (a file,
 * memory-mapped and transactional, exact across kill -9: what a commit
 * wrote is there after the process died, and what it had not committed
 * is not).
 *
 * THE STAGE. rill_stage_stateful() runs a function per record with a view
 * of the record partition's state (rill_state_get/put/delete/range). The
 * stage gathers records into one store transaction and commits it every
 * commit_count records or commit_ms milliseconds, and when its input ends;
 * only then does it confirm the records the transaction holds (the
 * records are confirmed when the state that holds them is durable, never
 * before). A function that fails aborts the transaction, so the records
 * since the last commit leave no trace in the state; the pipeline fails
 * (a supervised one restarts, from the stored offsets). Outputs the
 * function emits go downstream at once, carrying a reference of the
 * input's origin: they are at-least-once (a record after the last commit
 * is processed again after a crash and emits again), the state is exact.
 */
#ifndef RILL_STATE_H
#define RILL_STATE_H

#include <stddef.h>
#include <stdint.h>

#include <rill/kafka.h>
#include <rill/stream.h>

#ifdef __cplusplus
extern "C" {
#endif

/** A keyed state store (opaque): one memory map, or one LMDB environment. */
typedef struct rill_store rill_store_t;

/** How an LMDB store is opened. A zeroed struct (or NULL) means the defaults. */
typedef struct rill_store_opts {
    /** The most the store may hold, in bytes (LMDB's map size; the file
     * grows up to it). 0 = 1 GiB. A commit that would pass it fails with
     * RILL_EFULL and a sentence naming the store and this size. */
    uint64_t map_size;
    /** Do not flush to disk at every commit: a commit survives the death
     * of the process (kill -9) but not of the machine. 0 = flush (fsync):
     * a commit survives both. */
    int no_sync;
} rill_store_opts_t;

/**
 * An in-memory store named name (copied; for errors and statistics).
 * @return RILL_OK, RILL_EINVAL (NULL argument), RILL_ENOMEM; errstr says why.
 * @locality any thread.
 */
RILL_API rill_err_t rill_store_open_memory(const char *name, rill_store_t **out, char *errstr,
                                           size_t errstr_size);

/**
 * An LMDB store in directory path (made if missing). One process owns a
 * store at a time: a second open of the same directory, from this process
 * or another, fails with RILL_EEXIST ("locked by process N").
 * @return RILL_OK; RILL_EINVAL (NULL argument, bad options); RILL_EEXIST
 * (owned by another process or store); RILL_EIO (the directory cannot be
 * made or read, or the file is not an LMDB file or is corrupt, with the
 * path and LMDB's words); RILL_ENOMEM. errstr says which.
 * @locality any thread (it may read the disk: not an executor thread).
 */
RILL_API rill_err_t rill_store_open_lmdb(const char *path, const rill_store_opts_t *opts,
                                         rill_store_t **out, char *errstr, size_t errstr_size);

/** Close a store (its stages must have ended). NULL is a no-op.
 * @locality not an executor thread. */
RILL_API void rill_store_close(rill_store_t *store);

/** The store's name (an LMDB store: its path). @locality any thread. */
RILL_API const char *rill_store_name(const rill_store_t *store);

/**
 * The offset stored with partition's state: the first record its state
 * does not reflect. RILL_ENOENT when the store has none for it.
 * @locality any thread (a read transaction of its own).
 */
RILL_API rill_err_t rill_store_offset(rill_store_t *store, const char *topic, int32_t partition,
                                      int64_t *offset);

/**
 * Wait until the offsets stored with partitions 0..partitions-1 of topic
 * are at or past offsets[0..partitions-1] (read, not kept): until the
 * store's state reflects every record before them, e.g. a topic's end
 * offsets once its records have been produced. A partition with no stored
 * offset has reached an offset of 0 or less only. The offsets are read
 * every 10 ms, each in a read transaction of its own; it returns once one
 * round finds every partition there.
 * @return RILL_OK; RILL_ETIMEDOUT when timeout_ms (0: one round) passed
 * first; RILL_EINVAL (NULL store or topic, NULL offsets for partitions >
 * 0, a negative count or timeout); an error of rill_store_offset().
 * @locality any thread but an executor's (it sleeps between rounds).
 */
RILL_API rill_err_t rill_store_wait_offsets(rill_store_t *store, const char *topic,
                                            int32_t partitions, const int64_t *offsets,
                                            int timeout_ms);

/**
 * Read one key of a partition's committed state into buf (up to buf_size
 * bytes; *value_len gets the whole length, which may be larger).
 * RILL_ENOENT if the key is not there; RILL_EINVAL for NULL arguments.
 * @locality any thread (a read transaction of its own).
 */
RILL_API rill_err_t rill_store_read(rill_store_t *store, const char *topic, int32_t partition,
                                    const void *key, size_t key_len, void *buf, size_t buf_size,
                                    size_t *value_len);

/**
 * Called for each key, in key order (bytewise), with its value; return
 * non-zero to stop. The pointers are valid during the call only.
 * @locality the thread that called rill_store_scan() or rill_state_range().
 */
typedef int rill_state_visit_fn(void *opaque, const void *key, size_t key_len, const void *value,
                                size_t value_len);

/**
 * Visit the committed keys of a partition's state in [from, to) (bytewise
 * order; from NULL = from the first, to NULL = to the last), as one
 * consistent snapshot.
 * @locality any thread (a read transaction of its own); fn must not call
 * into the store.
 */
RILL_API rill_err_t rill_store_scan(rill_store_t *store, const char *topic, int32_t partition,
                                    const void *from, size_t from_len, const void *to,
                                    size_t to_len, rill_state_visit_fn *fn, void *opaque);

/**
 * Give store a changelog: every change a stateful stage commits to it also
 * goes to `topic` (compacted, as many partitions as the input: the
 * changes of input partition p go to its partition p, keyed by the
 * store's key, a deleted key as a tombstone, each transaction ended by
 * its offset record), and a partition assigned to a consumer that uses
 * the store (rill_consumer_conf_use_store) is restored from it before
 * any of its records is processed, unless the store is current already
 * (a local LMDB file that holds everything the changelog has for it). So
 * state moves with its partition from one instance to another: a
 * rebalance, a crash, a scale-out. kafka_conf: librdkafka properties
 * ("key", "value" pairs, NULL-terminated; bootstrap.servers at least) for
 * the changelog's producer and for the restore's reader; copied.
 *
 * A transaction's records are confirmed once its changes are delivered
 * to the changelog and then committed to the store. Restore reads the
 * changelog partition up to its end offset on the source's executor
 * (stats: restoring, restored); only complete transactions are applied.
 * Call before any stage or source uses the store.
 * @return RILL_OK; RILL_EINVAL (NULL, a bad topic name, odd conf); RILL_ESTATE
 * (a changelog is set already); RILL_EKAFKA (a property librdkafka refuses),
 * with a sentence in errstr.
 * @locality any thread.
 */
RILL_API rill_err_t rill_store_set_changelog(rill_store_t *store, const char *topic,
                                             const char *const *kafka_conf, char *errstr,
                                             size_t errstr_size);

/** A store's counters. */
typedef struct rill_store_stats {
    uint64_t commits;        /**< transactions committed */
    uint64_t aborts;         /**< transactions aborted (a failed function, a stop) */
    uint64_t puts;           /**< keys written (committed or not) */
    uint64_t deletes;        /**< keys deleted (committed or not) */
    uint64_t commit_errors;  /**< commits that failed (full, disk) */
    uint64_t bytes;          /**< LMDB: bytes of the map in use; memory: of keys and values */
    uint64_t late;           /**< window stages: records that came after their windows closed */
    uint64_t windows_closed; /**< window stages: final results made (windows closed) */
    uint64_t changelog_sent; /**< changelog records delivered (changes and offset records) */
    uint64_t restored;       /**< changelog records applied by restores */
    uint64_t restores;       /**< partitions restored from the changelog */
    uint32_t restoring;      /**< partitions being restored now */
} rill_store_stats_t;

/** A snapshot of a store's counters (NULL arguments: RILL_EINVAL).
 * @locality any thread. */
RILL_API rill_err_t rill_store_stats(rill_store_t *store, rill_store_stats_t *out);

/**
 * Make a consumer start each assigned partition from the offset stored
 * with its state in store (or from its beginning when the store has none).
 * Uses the consumer's assigned callback (RILL_ESTATE if one is set) and
 * keeps Kafka commits on unless rill.commit was set. The store must outlive
 * every source made from conf.
 * @locality any thread.
 */
RILL_API rill_err_t rill_consumer_conf_use_store(rill_consumer_conf_t *conf, rill_store_t *store);

/** A partition's state inside a stage's open transaction (opaque). */
typedef struct rill_state rill_state_t;

/**
 * The value of key in the record's partition: *value points into the store
 * until the next put or delete of this transaction, or the function's
 * return. RILL_ENOENT when absent.
 * @locality the stage function that got st.
 */
RILL_API rill_err_t rill_state_get(rill_state_t *st, const void *key, size_t key_len,
                                   const void **value, size_t *value_len);
/** Set key to value (copied). Keys are 1 to 400 bytes (RILL_EINVAL
 * otherwise). RILL_EFULL: the store is full (the stage then fails with a
 * sentence). @locality the stage function that got st. */
RILL_API rill_err_t rill_state_put(rill_state_t *st, const void *key, size_t key_len,
                                   const void *value, size_t value_len);
/** Delete key; RILL_ENOENT if it was not there. @locality the stage
 * function that got st. */
RILL_API rill_err_t rill_state_delete(rill_state_t *st, const void *key, size_t key_len);
/** Visit the keys of the record's partition in [from, to), this
 * transaction's writes included (see rill_store_scan()). fn must not write.
 * @locality the stage function that got st. */
RILL_API rill_err_t rill_state_range(rill_state_t *st, const void *from, size_t from_len,
                                     const void *to, size_t to_len, rill_state_visit_fn *fn,
                                     void *opaque);
/** The topic and partition whose state st is. @locality the stage function that got st. */
RILL_API const char *rill_state_topic(const rill_state_t *st);
/** @copydoc rill_state_topic
 * @locality the stage function that got st. */
RILL_API int32_t rill_state_partition(const rill_state_t *st);

/**
 * A stateful function: processes the record in *in (it owns it, as a
 * flat_map function does) with its partition's state st, and may emit
 * outputs with rill_emit(). Return an error to fail the stage: the
 * transaction is aborted.
 * @locality the stage's executor.
 */
typedef rill_err_t rill_stateful_fn(void *opaque, rill_state_t *st, rill_elem_t *in,
                                    rill_emitter_t *out);

/** How a stateful stage commits. A zeroed struct (or NULL) means the defaults. */
typedef struct rill_stateful_opts {
    uint32_t commit_count; /**< commit after this many records; 0 = 1000 */
    uint32_t commit_ms;    /**< and at least this often while records wait; 0 = 100 */
} rill_stateful_opts_t;

/**
 * A stateful stage over store (which must outlive it): fn per record, with
 * the record partition's state, committed with the records' offsets (see
 * THE STAGE above). Its input must be Kafka records with their origins (a
 * Kafka source, or stages that keep records, such as filter): any other
 * element fails the stage with a sentence.
 * @locality any thread.
 */
RILL_API rill_stage_t *rill_stage_stateful(rill_store_t *store, const rill_stateful_opts_t *opts,
                                           rill_stateful_fn *fn, void *opaque);

/* --------------------------------------------------------------------- */
/* Windowed aggregation                                                   */
/* --------------------------------------------------------------------- */

/** The kinds of window (see rill_stage_window()). */
typedef enum rill_window_type {
    RILL_WINDOW_TUMBLING = 1, /**< [k * size, (k + 1) * size): one window per record */
    RILL_WINDOW_HOPPING,      /**< [k * advance, k * advance + size): overlapping windows */
    RILL_WINDOW_SESSION       /**< per key, records less than gap apart */
} rill_window_type_t;

/** The largest aggregate (rill_window_ops_t.agg_size), in bytes. */
#define RILL_WINDOW_AGG_MAX  1024
/** The longest record key a window stage takes, in bytes (longer keys
 * are rejected: rill_elem_reject()). */
#define RILL_WINDOW_KEY_MAX  380
/** The most windows of a hopping window stage a record may fall in
 * (size_ms / advance_ms, rounded up). */
#define RILL_WINDOW_HOPS_MAX 1024

/**
 * What a window stage emits: an element whose payload is a
 * rill_window_result_t * (one malloc'ed block holding the key, the
 * aggregate and the topic; the element's dtor frees it).
 */
typedef struct rill_window_result {
    const void *key;   /**< the record key (inside the block; a record without one: length 0) */
    size_t key_len;    /**< its length */
    int64_t start_ms;  /**< the window's start, event time (sessions: the first event) */
    int64_t end_ms;    /**< its end, exclusive (sessions: the last event + gap) */
    const void *agg;   /**< the aggregate (agg_size bytes inside the block) */
    size_t agg_len;    /**< agg_size */
    int final;         /**< 1: the window closed (its one final result); 0: an update */
    const char *topic; /**< the input partition the window belongs to (inside the block) */
    int32_t partition; /**< its partition */
} rill_window_result_t;

/** The result an element of a window stage carries (NULL for other
 * elements). @locality any thread. */
RILL_API const rill_window_result_t *rill_window_result(const rill_elem_t *e);

/**
 * The event time of a record, in ms (negative: it has none, and is
 * rejected).
 * @locality the window stage's executor.
 */
typedef int64_t rill_event_time_fn(void *opaque, const rill_elem_t *e);

/** The aggregate of a window stage. */
typedef struct rill_window_ops {
    /** Bytes of the aggregate, 1..RILL_WINDOW_AGG_MAX; a new window's
     * aggregate starts zeroed. */
    size_t agg_size;
    /** Required: fold the record in into agg (it stays the stage's: do not
     * release it). An error fails the stage (the transaction is aborted).
     * @locality the window stage's executor. */
    rill_err_t (*add)(void *opaque, void *agg, const rill_elem_t *in);
    /** Sessions: required (two sessions bridged by a record become one):
     * fold from into into. Unused by the other types.
     * @locality the window stage's executor. */
    rill_err_t (*merge)(void *opaque, void *into, const void *from);
    /** The event time of a record; NULL: the record's timestamp. */
    rill_event_time_fn *event_time;
} rill_window_ops_t;

/** The windows of a window stage. */
typedef struct rill_window_opts {
    rill_window_type_t type; /**< which windows */
    uint64_t size_ms;        /**< tumbling, hopping: the window's length (> 0) */
    /** Hopping: how far each next window starts, 1..size_ms (it need not
     * divide size_ms); at most RILL_WINDOW_HOPS_MAX windows per record. */
    uint64_t advance_ms;
    uint64_t gap_ms; /**< session: the inactivity gap (> 0) */
    /** A window accepts records until its partition's stream time passes
     * its end + grace_ms; records for it after that are late. */
    uint64_t grace_ms;
    /** 0: emit-final: one result per window, when it closes. 1: also an
     * update (final 0) for every window a record changed. */
    int emit_updates;
    /** Late records: 1: rejected (rill_elem_reject(): the dead-letter
     * topic); 0: dropped (confirmed with their transaction). Counted in
     * rill_store_stats_t.late either way. */
    int reject_late;
    /** Windows also close when the wall clock passes end + grace_ms +
     * this, so a key gone quiet gets its result: 0 = 1000; UINT64_MAX =
     * never by the wall clock. */
    uint64_t wall_close_ms;
    /** The wall clock in ms (virtual time in tests), called with
     * now_opaque on the stage's executor; NULL = CLOCK_REALTIME. */
    int64_t (*now_ms)(void *opaque);
    void *now_opaque;            /**< now_ms's argument */
    uint32_t tick_ms;            /**< how often the wall-clock close is checked; 0 = 100 */
    rill_stateful_opts_t commit; /**< how the stage commits (rill_stage_stateful()) */
} rill_window_opts_t;

/**
 * A windowed aggregation over store (which must outlive it and belongs to
 * this stage alone): each Kafka record is folded into the aggregate of
 * every window of its key it falls in, by event time, in its partition's
 * state, committed with the records' offsets as rill_stage_stateful()
 * commits (the aggregates are exact across restarts). A window closes when
 * its partition's stream time (the largest event time seen in it) passes
 * its end + grace_ms, or the wall clock its end + grace_ms + wall_close_ms:
 * its final result (rill_window_result_t) goes downstream, and the window
 * is deleted once that result was confirmed downstream; a window closed
 * and not yet deleted when a run ends is emitted again by the next run
 * (results are at-least-once). See docs/state.md, "Windows". Without a
 * downstream stage results are confirmed at once. Bad arguments make a
 * spec that carries the error (rill_stage_error()).
 * @locality any thread.
 */
RILL_API rill_stage_t *rill_stage_window(rill_store_t *store, const rill_window_opts_t *opts,
                                         const rill_window_ops_t *ops, void *opaque);

/* ------------------------------------------------------------------ */
/* Tables and joins                                                    */
/* ------------------------------------------------------------------ */

/**
 * A table (opaque): a topic materialised into a store, the latest value
 * of each key (Kafka Streams' GlobalKTable). A record with a NULL value (a
 * tombstone) deletes its key. The table reads the topic with a librdkafka
 * client of its own on a thread of its own (never an executor): no
 * consumer group, every partition from its beginning (or from the offset
 * stored with the table in its store: an LMDB table reopened goes on from
 * where it was), and it keeps following the topic until it is closed.
 * Each batch of records it reads (up to 1,000) is one write transaction
 * of its store, with the partitions' offsets.
 *
 * Where the keys are: a table of topic T keeps its keys as the state of
 * (T, partition 0) in its store, whatever partition a record came from, so
 * rill_store_read(store, T, 0, key, ...) and rill_store_scan(store, T, 0,
 * ...) read it too; each partition's offset is stored as a stateful
 * stage's is (rill_store_offset()). Records without a key, or with one of
 * more than 400 bytes, are skipped (counted in rill_table_stats_t.skipped).
 *
 * CO-PARTITIONED TABLES (opts.partitioned = 1; Kafka Streams' KTable in a
 * stream-table join): the table topic and the stream's input topic have
 * the same partition count and partition keys alike (produced with the
 * same keys and the default partitioner; rill checks the count, not the
 * keys: a stream topic a follower holds with another partition count
 * fails the table with RILL_EINVAL and a sentence naming both topics and
 * both counts, and so every join over it), and the table reads only
 * partition p of its topic while a source made from a conf that follows it
 * (rill_consumer_conf_follow_table()) holds a partition numbered p. A
 * partition the table starts to follow (or that a source is assigned
 * again) is read from the offset stored with it (or its beginning) and is
 * caught up once read up to the end offset of that moment; the table is
 * caught up (rill_table_caught_up()) while a follower has reported an
 * assignment and every partition it follows is caught up, so it goes back
 * to 0 when a source is assigned a partition, and a co-partitioned table
 * that no source follows never catches up. Its keys of partition p are
 * the state of (T, p). A partition no follower holds any more (revoked,
 * lost, or the end of a run) is dropped: its keys and offset stay in the
 * store but are not served (rill_table_get() and the joins skip it), and
 * if it comes back within opts.evict_ms the table goes on from where it
 * was; after that, they are deleted from the store (evicted) and a
 * partition that comes back is read again from its beginning.
 */
typedef struct rill_table rill_table_t;

/**
 * Called once, when the table has caught up (rill_table_caught_up()).
 * @locality the table's reading thread, or the thread in rill_table_open()
 * for a table caught up at once; it must not close the table.
 */
typedef void rill_table_caught_up_fn(void *opaque, rill_table_t *table);

/** How a table is kept. A zeroed struct (or NULL) means the defaults: a
 * global table in an in-memory store of its own. */
typedef struct rill_table_opts {
    /** 0: a global table (every partition of the topic, on every
     * instance). 1: a co-partitioned table (the partitions of its
     * followers' sources only: rill_consumer_conf_follow_table()). */
    int partitioned;
    /** Where the table lives: NULL = an in-memory store of its own. A
     * store given here must outlive the table, and nothing else may write
     * it while the table is open (the table takes its writer slot: a
     * stateful stage over it fails to start with RILL_ESTATE). */
    rill_store_t *store;
    /** The most rill_table_open() waits for the topic's metadata and each
     * partition's end offset, in ms. 0 = 10,000. */
    uint32_t open_timeout_ms;
    /** Called when the table caught up (NULL: not called), with opaque. */
    rill_table_caught_up_fn *on_caught_up;
    void *opaque; /**< for on_caught_up */
    /** Co-partitioned tables: how long, in ms, the keys and offset of a
     * partition no follower holds any more stay in the store (so that it
     * goes on from there if it comes back) before the table deletes them,
     * in one store transaction (rill_table_stats_t.evicted). A partition
     * an earlier run left in opts.store that no follower holds is
     * evicted this long after the first assignment a follower reports.
     * 0 = 600,000 (10 minutes, as Kafka Streams' state.cleanup.delay.ms);
     * UINT32_MAX = never (the store keeps every partition it ever read).
     * Global tables ignore it. */
    uint32_t evict_ms;
    /** When the table caught up, send this actor a signal (rill_signal())
     * of type notify_type (RILL_MSG_USER and up), with arg 0 and no
     * payload. RILL_AID_NONE: none. */
    rill_aid_t notify;
    uint32_t notify_type; /**< the type of the notify signal */
} rill_table_opts_t;

/**
 * Open a table of topic, read with conf's client properties
 * (bootstrap.servers, security, fetch sizes...; its subscriptions,
 * assignments and callbacks are not used; group.id is set to "rill-table"
 * if conf has none, and nothing is ever committed). Takes conf, also on
 * error. Before it returns, it reads the topic's partitions and each
 * one's end offset (the high watermark): the table has caught up once it
 * has read every partition up to those offsets (a co-partitioned table
 * reads nothing before a follower tells it its partitions).
 * @return RILL_OK and *out; RILL_EINVAL (a NULL argument, a bad topic
 * name, a configuration librdkafka refuses or without bootstrap.servers);
 * RILL_ENOENT (the topic does not exist); RILL_ESTATE
 * (opts.store is written by a stage or another table); RILL_ETIMEDOUT (the
 * cluster did not answer within open_timeout_ms); RILL_EKAFKA; RILL_ENOMEM.
 * errstr says which, naming the topic.
 * @locality any thread but an executor's (it waits for the cluster).
 */
RILL_API rill_err_t rill_table_open(rill_system_t *sys, const char *topic,
                                    rill_consumer_conf_t *conf, const rill_table_opts_t *opts,
                                    rill_table_t **out, char *errstr, size_t errstr_size);

/**
 * Stop reading and free the table (and its own store; a store of
 * opts.store stays, with what the table committed). Every join stage over
 * it must have ended. NULL is a no-op.
 * @locality any thread but an executor's (it joins the reading thread).
 */
RILL_API void rill_table_close(rill_table_t *table);

/**
 * Make the sources made from conf tell a co-partitioned table their
 * assignment: the table reads partition p of its topic while such a source
 * holds a partition numbered p (of any of its topics). Uses conf's
 * rebalance callback (RILL_ESTATE if one is set: one table per conf). The
 * table must outlive every source made from conf. Several confs may follow
 * one table (the partitions any of their sources hold are followed). Each
 * stream topic the sources hold must have as many partitions as the
 * table's topic: the table checks it when a source first reports the
 * topic (and before it serves that topic's partitions), and fails
 * otherwise (RILL_EINVAL in rill_table_stats_t.error).
 * @return RILL_OK; RILL_EINVAL (NULL, or a global table); RILL_ESTATE.
 * @locality any thread.
 */
RILL_API rill_err_t rill_consumer_conf_follow_table(rill_consumer_conf_t *conf,
                                                    rill_table_t *table);

/**
 * Non-zero once the table has read (and committed to its store) every
 * partition up to the end offset it saw when it was opened; partitions
 * that were empty then count at once. It stays so after. A co-partitioned
 * table's: while every partition it follows is caught up (see "CO-
 * PARTITIONED TABLES" above; 0 until a follower reported an assignment).
 * 0 for NULL, and 0 once the table failed (stopped reading:
 * rill_table_stats_t.error says why).
 * @locality any thread.
 */
RILL_API int rill_table_caught_up(const rill_table_t *table);

/**
 * Wait until the table has caught up, at most timeout_ms.
 * @return RILL_OK; RILL_ETIMEDOUT; RILL_EINVAL (NULL); the table's failure
 * (see rill_table_stats_t.error) if it stopped reading before.
 * @locality any thread but an executor's.
 */
RILL_API rill_err_t rill_table_wait_caught_up(rill_table_t *table, int timeout_ms);

/**
 * The table's committed value of key, copied into buf (up to buf_size
 * bytes; *value_len gets the whole length, which may be larger). A
 * co-partitioned table searches the partitions it follows now.
 * @return RILL_OK; RILL_ENOENT (no such key); RILL_EINVAL (NULL arguments,
 * a key of 0 or more than 400 bytes).
 * @locality any thread (a read transaction of its own).
 */
RILL_API rill_err_t rill_table_get(rill_table_t *table, const void *key, size_t key_len, void *buf,
                                   size_t buf_size, size_t *value_len);

/** The table's store (its own, or opts.store): for rill_store_scan() of
 * (topic, 0), or (topic, p) for a co-partitioned table. @locality any
 * thread. */
RILL_API rill_store_t *rill_table_store(const rill_table_t *table);

/** A table's counters. */
typedef struct rill_table_stats {
    uint64_t records;   /**< records applied (values and tombstones) */
    uint64_t deletes;   /**< tombstones that deleted a key */
    uint64_t skipped;   /**< records without a key, or with one too long */
    uint64_t keys;      /**< keys in the table now */
    uint64_t commits;   /**< write transactions committed (evictions too) */
    int32_t partitions; /**< partitions of the topic */
    /** Partitions the table follows now: all of them for a global table,
     * those its followers' sources hold for a co-partitioned one. */
    int32_t followed;
    int caught_up;        /**< rill_table_caught_up() */
    int64_t caught_up_ms; /**< from the open to caught up, in ms; -1 while not */
    /** RILL_OK, or why the table stopped reading (a store full, a commit
     * that failed, a co-partitioned table's follower holding a topic of
     * another partition count: RILL_EINVAL). */
    rill_err_t error;
    char error_text[160]; /**< error's sentence, naming the table ("" without one) */
    /** Co-partitioned tables: partitions evicted (see
     * rill_table_opts_t.evict_ms), and the keys they held. */
    uint64_t evicted;
    uint64_t evicted_keys; /**< keys deleted by evictions (not in keys any more) */
} rill_table_stats_t;

/** A snapshot of the table's counters (NULL arguments: RILL_EINVAL).
 * @locality any thread. */
RILL_API rill_err_t rill_table_stats(rill_table_t *table, rill_table_stats_t *out);

/** How a join matches a stream element that has no match in the table. */
typedef enum rill_join_type {
    RILL_JOIN_INNER = 1, /**< it is dropped (confirmed, as a filter's drops) */
    RILL_JOIN_LEFT       /**< the join function gets it with no value (NULL, 0) */
} rill_join_type_t;

/**
 * A join function: makes *out (a valid element) of the stream element in
 * (owned: release it, or move it into *out) and the table's value of its
 * key (value_len bytes, valid during the call only; NULL and 0 in a left
 * join without a match). The output carries in's origin (the function
 * never sees it). Returning an error fails the stage, blaming in's record.
 * @locality the join stage's executor.
 */
typedef rill_err_t rill_join_fn(void *opaque, rill_elem_t *in, const void *value, size_t value_len,
                                rill_elem_t *out);

/**
 * The key an element is joined on: *key (1 to 400 bytes, valid until the
 * join function returns: a part of in's payload, or a buffer of opaque's)
 * and *key_len. RILL_ENOENT: the element has no key (no match); another
 * error fails the stage.
 * @locality the join stage's executor.
 */
typedef rill_err_t rill_join_key_fn(void *opaque, const rill_elem_t *in, const void **key,
                                    size_t *key_len);

/** A join's options. A zeroed struct (or NULL) means the defaults. */
typedef struct rill_join_opts {
    /** The key of an element (called with the stage's opaque); NULL: the
     * Kafka record's own key (rill_record(in)->key), and an element that
     * is not a Kafka record fails the stage with a sentence. */
    rill_join_key_fn *key_fn;
} rill_join_opts_t;

/**
 * A stream-table join: each element, joined with table's current value of
 * its key, becomes fn's output. Until the table has caught up, the stage
 * holds the elements that arrive, up to its window (its mailbox), and asks
 * upstream for no more (backpressure), so that no element is joined with
 * a table that has not read what it had when the stream started; then it
 * joins them, in order. Elements are joined with the table as it is when
 * they are processed (not as of their timestamps). The table must outlive
 * every run of the stage. Over a co-partitioned table, a Kafka record of
 * partition p waits for the table's partition p only and is looked up
 * there (a key function must give keys partitioned as the record's; a
 * partition the table does not follow has no match; a partition number
 * the table's topic does not have fails the stage: the topics are not
 * co-partitioned); another element waits until the table is caught up
 * and is looked up in every partition it follows. Until a follower
 * reported an assignment, everything waits.
 * @locality any thread.
 */
RILL_API rill_stage_t *rill_stage_join(rill_table_t *table, rill_join_type_t type,
                                       const rill_join_opts_t *opts, rill_join_fn *fn,
                                       void *opaque);

#ifdef __cplusplus
}
#endif

#endif /* RILL_STATE_H */
