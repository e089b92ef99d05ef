/*
 * Internals of tables (table.c, table_follow.c, table_evict.c; not
 * installed): the table's structure, shared by the reader (table.c), the
 * part that follows a source's assignment (table_follow.c) and the
 * eviction of partitions no follower holds (table_evict.c), the last two
 * for co-partitioned tables.
 */
#ifndef RILL_TABLE_INT_H
#define RILL_TABLE_INT_H

#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "../kafka/kafka_int.h"
#include "state_int.h"

/* rill_table_opts_t.evict_ms 0: Kafka Streams' state.cleanup.delay.ms. */
#define RILL__TABLE_EVICT_DEFAULT_MS 600000

typedef struct table_part {
    /* The reader's (and open's, before the thread). */
    int64_t end;       /* the high watermark at open (or at the follow): caught up at or past it */
    int64_t next;      /* the offset after the last record applied (committed) */
    int64_t txn_next;  /* next, in the open transaction */
    int dirty;         /* txn_next changed in the open transaction */
    int done;          /* reached end */
    int followed;      /* co-partitioned: assigned to the table's client now */
    uint32_t gen_seen; /* co-partitioned: the gen the partition was followed at */
    uint32_t s_gen;    /* co-partitioned: gen, as the last sync copied it */
    int s_want;        /* co-partitioned: want > 0, as the last sync copied it */
    int kept;          /* co-partitioned: the store may hold keys or an offset of it */
    int64_t idle_since_ms; /* co-partitioned: unfollowed since (rill__now_ms); 0: not idle */
    /* Co-partitioned, under the table's fmu: source partitions numbered
     * p that followers hold now, and the count of their assignments. */
    int want;
    uint32_t gen;
    /* want > 0 (written under fmu, release; read by joins, acquire). */
    _Atomic int wanted;
    /* Followed at gen and done (written under fmu, release: the store
     * committed what it stands for before; read by joins, acquire). */
    _Atomic int ready;
} table_part_t;

struct rill_table {
    rill_system_t *sys;
    char topic[RILL__TOPIC_MAX + 1];
    rill_store_t *store;
    int own_store;
    int holds_slot; /* the table holds store->busy */
    rd_kafka_t *rk;
    int32_t n_parts;
    table_part_t *parts;
    int32_t parts_left; /* partitions not done (global tables) */
    uint8_t prefix[1 + RILL__TOPIC_MAX + 1 + 4];
    size_t prefix_len;
    rill_table_opts_t opts;
    int64_t opened_ms;
    int partitioned; /* opts.partitioned */
    int told_once;   /* the reader said it caught up once (callbacks ran) */

    pthread_t thread;
    int thread_started;
    /* Set by close, read by the reader (relaxed would do for the flag
     * alone; release/acquire keeps the rule simple: it orders nothing
     * else). */
    _Atomic int stop;
    /* Release when set, acquire when read: a reader that sees it sees the
     * committed store the flag stands for (the commit happened before).
     * A global table's stays 1 once set; a co-partitioned table's follows
     * its followed partitions (set under fmu). */
    _Atomic int caught_up;
    /* Counters: relaxed, each is a count of its own. */
    _Atomic uint64_t records, deletes, skipped, keys, commits;
    _Atomic uint64_t evicted, evicted_keys;
    _Atomic int64_t caught_up_ms;

    /* Waiters for caught_up, and the failure: under mu. */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    rill_err_t err;
    char err_text[160];
    /* err, for readers that must not take mu per element (join.c):
     * release when set, after err_text; acquire when read. */
    _Atomic int failed;

    /* Co-partitioned tables: the followers' assignment (parts[].want,
     * .gen, .wanted, .ready and caught_up are written under fmu). */
    pthread_mutex_t fmu;
    /* A follower reported an assignment (set under fmu, release; read
     * by joins, acquire). */
    _Atomic int assigned;
    /* A follower changed the assignment since the reader's last sync
     * (release when set, after fmu's writes; exchanged by the reader). */
    _Atomic int fchanged;
    _Atomic int followers; /* confs that follow the table */
    /* The stream topics followers reported holding (each once, strdup'd,
     * never freed before the table: the reader reads a name outside fmu),
     * under fmu; the reader checked the first ftopics_checked. */
    char **ftopics;
    int n_ftopics;
    size_t cap_ftopics;
    int ftopics_checked;    /* the reader's */
    int64_t check_retry_ms; /* the reader's: no metadata check before */
    /* Under fmu: the first partition a follower reported that the table's
     * topic does not have, and its topic (NULL: none); out of memory. */
    char *fbad_topic;
    int32_t fbad_part;
    int foom;
    /* The reader's: unfollowed partitions are evicted after this many
     * ms (opts.evict_ms resolved); -1: never. */
    int64_t evict_after_ms;
};

/* Fail t (it stops reading) with err and text. */
void rill__table_fail(rill_table_t *t, rill_err_t err, const char *text);
/* Partition p moved to `next`: done when it reached its end. */
void rill__table_part_progress(rill_table_t *t, int32_t p, int64_t next);
/* The table is caught up now: wake waiters; the first time, the
 * callbacks of opts. */
void rill__table_mark_caught_up(rill_table_t *t);
/* Co-partitioned: take the followers' latest assignment (assign the
 * table's client what they hold). 0, or -1 after failing the table. */
int rill__table_follow_sync(rill_table_t *t);
/* Co-partitioned: evict the partitions no follower has held for
 * evict_after_ms (their keys and offset, one store transaction each). 0,
 * or -1 after failing the table. */
int rill__table_evict_due(rill_table_t *t);
/* Free what the follow kept (the reported topic names). */
void rill__table_follow_free(rill_table_t *t);
/* Co-partitioned: publish each partition's readiness and the table's
 * caught_up after the reader's progress. */
void rill__table_follow_publish(rill_table_t *t);

#endif /* RILL_TABLE_INT_H */
