/*
 * Changelogs (changelog.c): a store's changes sent to a compacted topic
 * by the stateful core at each commit, and read back by the consumer's
 * assignment hook to restore a partition's state that is not current in
 * the local store. See rill_store_set_changelog() in state.h.
 *
 * The changelog's records: key = the store's encoded key (state_int.h),
 * value = the value, a tombstone for a delete; in partition p for the
 * changes of input partition p, each transaction's changes of (topic, p)
 * followed by its offset record (namespace 0x00), which is what makes a
 * transaction complete: a restore applies the changes up to the last
 * offset record of its partition and starts the input there. Changes after
 * it (a writer killed in the middle of a flush) are not applied, and the
 * restoring writer's first flush re-asserts their keys (its value or a
 * tombstone), so that a compacted changelog, which keeps the latest record
 * per key, never keeps a value of a transaction that did not complete.
 */
#ifndef RILL_STATE_CHANGELOG_H
#define RILL_STATE_CHANGELOG_H

#include <pthread.h>
#include <stdatomic.h>

#include "state_int.h"

/* One change, copied: key and value (tomb: a delete). */
typedef struct rill__cl_change {
    uint8_t *key;
    size_t kl;
    uint8_t *val;
    size_t vl;
    int tomb;
} rill__cl_change_t;

typedef struct rill__cl_batch {
    rill__cl_change_t *v;
    size_t n, cap;
} rill__cl_batch_t;

/* Add a copy; 0, or -1 without memory. */
int rill__cl_batch_add(rill__cl_batch_t *b, const uint8_t *key, size_t kl, const void *val,
                       size_t vl, int tomb);
/* Free the copies, keep the array. */
void rill__cl_batch_clear(rill__cl_batch_t *b);
/* Free everything. */
void rill__cl_batch_free(rill__cl_batch_t *b);

/* What a restore read for one input partition, waiting for the core to
 * apply it in its next transaction, before that partition's first
 * record. */
typedef struct rill__restored {
    char *topic;
    int32_t partition;
    rill__cl_batch_t changes;  /* in order; the offset and position records last */
    rill__cl_batch_t reassert; /* keys of a cut-short flush: the next flush re-asserts them */
    struct rill__restored *next;
} rill__restored_t;

/* A restore the restorer thread is to run (restorer.c). */
typedef struct rill__restore_job {
    rill_assignment_t *asg; /* a reference */
    char *topic;
    int32_t partition;
    struct rill__restore_job *next;
} rill__restore_job_t;

struct rill__changelog {
    char *topic;
    char **conf;               /* "key", "value", ..., NULL */
    pthread_mutex_t lock;      /* pending */
    pthread_mutex_t read_lock; /* reader: one restore at a time */
    rill__restored_t *pending;
    _Atomic int has_pending;
    /* Raised with every restore made pending: a stage that saw a value
     * and took nothing for a partition then need not look (or lock) again
     * for it until the value changes. */
    _Atomic uint64_t pending_gen;
    rd_kafka_t *reader; /* the restore's client, made on first use */
    _Atomic uint64_t sent, restored, restores;
    _Atomic uint32_t restoring;
    /* The restorer thread (restorer.c), started on the first job. */
    pthread_mutex_t jobs_lock;
    pthread_cond_t jobs_cv;
    rill__restore_job_t *jobs, **jobs_tail;
    pthread_t restorer;
    int restorer_started;      /* under jobs_lock */
    _Atomic int restorer_stop; /* set under jobs_lock */
};

/* Free cl (its restorer stopped: rill__restorer_stop). */
void rill__changelog_free(struct rill__changelog *cl);
/* Add the changelog's counters to out (cl may be NULL). */
void rill__changelog_stats(struct rill__changelog *cl, rill_store_stats_t *out);
/* A producer configuration for the changelog (rill.topics set). */
rill_producer_conf_t *rill__changelog_producer_conf(const struct rill__changelog *cl, char *errstr,
                                                    size_t errstr_size);

/* The restorer's part: restore (topic, partition) from the changelog
 * unless the store is current; *offset: where its input starts (the
 * offset of the last complete transaction, the store's own, or
 * RD_KAFKA_OFFSET_BEGINNING). Blocks (the changelog's read); gives up
 * with RILL_ESTOPPED once asg (if not NULL) no longer waits for the
 * partition or the restorer stops. */
rill_err_t rill__changelog_restore(rill_store_t *s, rill_assignment_t *asg, const char *topic,
                                   int32_t partition, int64_t *offset, char *errstr,
                                   size_t errstr_size);

/* The assignment hook's part (restorer.c): restore (topic, partition) on
 * the changelog's restorer thread, then answer asg with its start (or
 * fail it). RILL_OK, RILL_ENOMEM, RILL_EIO (no thread). */
rill_err_t rill__restorer_submit(rill_store_t *s, rill_assignment_t *asg, const char *topic,
                                 int32_t partition);
/* Stop the restorer thread and drop the jobs not run (at the store's
 * close, before rill__changelog_free). */
void rill__restorer_stop(struct rill__changelog *cl);

/* The core's part: the restored changes of (topic, partition), taken
 * (NULL: none); topic NULL: of any partition. */
rill__restored_t *rill__changelog_take(rill_store_t *s, const char *topic, int32_t partition);
void rill__restored_free(rill__restored_t *r);

#endif /* RILL_STATE_CHANGELOG_H */
