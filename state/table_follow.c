/*
 * Co-partitioned tables (rill_table_opts_t.partitioned): the table follows
 * the assignment of the sources made from the confs that follow it
 * (rill_consumer_conf_follow_table) and reads partition p of its topic
 * while a source holds a partition numbered p.
 *
 * The sources' rebalance callback runs on their executors and must not
 * block: it counts, under the table's fmu, the source partitions of each
 * number (want), bumps the partition's generation on each assignment, and
 * raises fchanged. It also notes, cheaply, the names of the stream
 * topics they hold (and a partition number the table's topic does not
 * have). The reader (table.c) syncs before each poll: first it checks each
 * newly reported stream topic's partition count (metadata, once per topic)
 * and fails the table if it is not the table topic's; then a partition
 * newly wanted (or assigned again: a new generation) gets the high
 * watermark of now as its end and starts from the offset stored with it
 * (or the beginning); a partition no longer wanted is dropped from the
 * client's assignment. Its keys stay in the store, with its offset, but
 * are not served (lookups skip partitions not wanted): if it comes back
 * before table_evict.c evicts it, the table goes on from there. After
 * each batch the reader publishes each partition's readiness (followed at
 * its latest generation and caught up) and the table's caught_up (a
 * follower reported an assignment, and every wanted partition is ready).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../actors/util.h"
#include "table_int.h"

/* How long the reader waits for a newly followed partition's high
 * watermark (a failure is retried at the next sync). */
#define FOLLOW_WATERMARK_MS 5000
/* How long the reader waits before it asks again for the partition count
 * of a follower's topic the cluster did not tell. */
#define FOLLOW_RETRY_MS     500

/* Under fmu: remember topic, a stream topic a follower holds, if it is
 * new (the reader checks its partition count). A malloc, no wait. */
static void note_topic(rill_table_t *t, const char *topic)
{
    for (int i = t->n_ftopics - 1; i >= 0; i--)
        if (strcmp(t->ftopics[i], topic) == 0)
            return;
    char **more = rill__grow(t->ftopics, &t->cap_ftopics, (size_t)t->n_ftopics, sizeof(*more), 4);
    char *name = more ? strdup(topic) : NULL;
    if (more)
        t->ftopics = more;
    if (!name) {
        t->foom = 1;
        return;
    }
    t->ftopics[t->n_ftopics++] = name;
}

static void follow_cb(void *opaque, rill_rebalance_event_t ev,
                      const rd_kafka_topic_partition_list_t *parts)
{
    rill_table_t *t = opaque;
    pthread_mutex_lock(&t->fmu);
    for (int i = 0; parts && i < parts->cnt; i++) {
        int32_t p = parts->elems[i].partition;
        const char *topic = parts->elems[i].topic;
        if (ev == RILL_REBALANCE_ASSIGNED && topic)
            note_topic(t, topic);
        if (p < 0 || p >= t->n_parts) {
            /* The table's topic has no such partition: the topics are not
             * co-partitioned, and the reader fails the table. */
            if (ev == RILL_REBALANCE_ASSIGNED && !t->fbad_topic && !t->foom) {
                t->fbad_topic = strdup(topic ? topic : "?");
                t->fbad_part = p;
                t->foom = !t->fbad_topic;
            }
            continue;
        }
        table_part_t *tp = &t->parts[p];
        if (ev == RILL_REBALANCE_ASSIGNED) {
            tp->want++;
            tp->gen++;
            /* Not ready until read up to its end of now. */
            atomic_store_explicit(&tp->ready, 0, memory_order_release);
            atomic_store_explicit(&tp->wanted, 1, memory_order_release);
            atomic_store_explicit(&t->caught_up, 0, memory_order_release);
        } else if (tp->want > 0 && --tp->want == 0) {
            atomic_store_explicit(&tp->wanted, 0, memory_order_release);
            atomic_store_explicit(&tp->ready, 0, memory_order_release);
        }
    }
    if (ev == RILL_REBALANCE_ASSIGNED)
        atomic_store_explicit(&t->assigned, 1, memory_order_release);
    atomic_store_explicit(&t->fchanged, 1, memory_order_release);
    pthread_mutex_unlock(&t->fmu);
}

void rill__table_follow_free(rill_table_t *t)
{
    for (int i = 0; i < t->n_ftopics; i++)
        free(t->ftopics[i]);
    free(t->ftopics);
    free(t->fbad_topic);
}

rill_err_t rill_consumer_conf_follow_table(rill_consumer_conf_t *conf, rill_table_t *table)
{
    if (!conf || !table || !table->partitioned)
        return RILL_EINVAL;
    if (conf->rebalance_cb)
        return RILL_ESTATE;
    rill_err_t err = rill_consumer_conf_set_rebalance_cb(conf, follow_cb, table);
    if (!err) /* relaxed: a count for the stats, ordering nothing */
        atomic_fetch_add_explicit(&table->followers, 1, memory_order_relaxed);
    return err;
}

/* Start following partition p (or again, at a new generation): its end is
 * the high watermark of now. 0, or -1 when the cluster did not answer (the
 * partition stays unfollowed; the next sync retries). */
static int follow_start(rill_table_t *t, int32_t p)
{
    table_part_t *tp = &t->parts[p];
    int64_t low = 0, high = 0, stored = 0;
    rd_kafka_resp_err_t kerr =
        rd_kafka_query_watermark_offsets(t->rk, t->topic, p, &low, &high, FOLLOW_WATERMARK_MS);
    if (kerr) {
        rill_log(RILL_LOG_ERR, "state.table",
                 "table %s: cannot read the end offset of partition %d: %s", t->topic, (int)p,
                 rd_kafka_err2str(kerr));
        return -1;
    }
    if (!tp->followed) {
        rill_err_t serr = rill_store_offset(t->store, t->topic, p, &stored);
        if (serr != RILL_OK && serr != RILL_ENOENT) {
            char why[160];
            snprintf(why, sizeof why, "cannot read the offset of partition %d: %s", (int)p,
                     rill_err2str(serr));
            rill__table_fail(t, serr, why);
            return -2;
        }
        tp->next = serr == RILL_OK ? stored : low;
        tp->txn_next = tp->next;
    }
    tp->end = high;
    tp->done = 0;
    rill__table_part_progress(t, p, tp->next);
    tp->followed = 1;
    tp->kept = 1;
    tp->idle_since_ms = 0;
    tp->gen_seen = tp->s_gen;
    return 0;
}

/* Check the stream topics followers reported since the last check
 * (ftopics[ftopics_checked..n)): each must have as many partitions as the
 * table's topic. 0: all checked; 1: the cluster did not answer (the next
 * sync retries); -1 after failing the table. One metadata request (of all
 * topics: naming one could create it) for them all. */
static int check_topics(rill_table_t *t, int n)
{
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t kerr = rd_kafka_metadata(t->rk, 1, NULL, &md, FOLLOW_WATERMARK_MS);
    if (kerr) {
        rill_log(RILL_LOG_ERR, "state.table",
                 "table %s: cannot read the partition counts of its followers: %s", t->topic,
                 rd_kafka_err2str(kerr));
        return 1;
    }
    int r = 0;
    while (t->ftopics_checked < n && r == 0) {
        pthread_mutex_lock(&t->fmu); /* the array may grow meanwhile; the name stays */
        const char *name = t->ftopics[t->ftopics_checked];
        pthread_mutex_unlock(&t->fmu);
        const struct rd_kafka_metadata_topic *mt = NULL;
        for (int i = 0; i < md->topic_cnt && !mt; i++)
            if (strcmp(md->topics[i].topic, name) == 0)
                mt = &md->topics[i];
        if (!mt || mt->err) {
            rill_log(RILL_LOG_ERR, "state.table",
                     "table %s: cannot read the partition count of %s: %s", t->topic, name,
                     mt ? rd_kafka_err2str(mt->err) : "not in the metadata");
            r = 1;
        } else if (mt->partition_cnt != t->n_parts) {
            char why[512]; /* rill__table_fail cuts it to its error_text */
            snprintf(why, sizeof why, "not co-partitioned with %s: %s has %d partitions, %s has %d",
                     name, name, mt->partition_cnt, t->topic, (int)t->n_parts);
            rill__table_fail(t, RILL_EINVAL, why);
            r = -1;
        } else {
            t->ftopics_checked++;
        }
    }
    rd_kafka_metadata_destroy(md);
    return r;
}

/* What the followers reported that a sync must check first: topics of
 * another partition count, a partition the table's topic does not have.
 * 0: nothing wrong (all checked); 1: not checked yet (retry later); -1
 * after failing the table. */
static int check_followers(rill_table_t *t, int n_topics, int oom, const char *bad_topic,
                           int32_t bad_part)
{
    if (oom) {
        rill__table_fail(t, RILL_ENOMEM, "out of memory (noting what its followers hold)");
        return -1;
    }
    int r = 0;
    if (t->ftopics_checked < n_topics) {
        if (rill__now_ms() < t->check_retry_ms)
            r = 1;
        else if ((r = check_topics(t, n_topics)) == 1)
            t->check_retry_ms = rill__now_ms() + FOLLOW_RETRY_MS;
        if (r < 0)
            return -1;
    }
    if (bad_topic) {   /* the check above may not know the topic yet */
        char why[512]; /* rill__table_fail cuts it to its error_text */
        snprintf(why, sizeof why,
                 "not co-partitioned with %s: a source holds its partition %d, %s has %d",
                 bad_topic, (int)bad_part, t->topic, (int)t->n_parts);
        rill__table_fail(t, RILL_EINVAL, why);
        return -1;
    }
    return r;
}

int rill__table_follow_sync(rill_table_t *t)
{
    if (!atomic_exchange_explicit(&t->fchanged, 0, memory_order_acq_rel))
        return 0;
    char bad_topic[RILL__TOPIC_MAX * 3] = "";
    int32_t bad_part = -1;
    pthread_mutex_lock(&t->fmu);
    for (int32_t p = 0; p < t->n_parts; p++) {
        t->parts[p].s_want = t->parts[p].want > 0;
        t->parts[p].s_gen = t->parts[p].gen;
    }
    int n_topics = t->n_ftopics, oom = t->foom;
    if (t->fbad_topic) {
        snprintf(bad_topic, sizeof bad_topic, "%s", t->fbad_topic);
        bad_part = t->fbad_part;
    }
    pthread_mutex_unlock(&t->fmu);
    int checked = check_followers(t, n_topics, oom, *bad_topic ? bad_topic : NULL, bad_part);
    if (checked < 0)
        return -1;
    if (checked > 0) { /* follow nothing new before the check; release: as below */
        atomic_store_explicit(&t->fchanged, 1, memory_order_release);
        return 0;
    }
    int changed = 0, retry = 0;
    for (int32_t p = 0; p < t->n_parts; p++) {
        table_part_t *tp = &t->parts[p];
        if (tp->s_want && (!tp->followed || tp->gen_seen != tp->s_gen)) {
            int was = tp->followed;
            int r = follow_start(t, p);
            if (r == -2)
                return -1;
            retry |= r != 0;
            changed |= !was && r == 0;
        } else if (!tp->s_want && tp->followed) {
            tp->followed = 0;
            tp->done = 0;
            tp->idle_since_ms = rill__now_ms(); /* the eviction's clock */
            changed = 1;
        }
    }
    if (retry) /* release: pairs with the exchange above */
        atomic_store_explicit(&t->fchanged, 1, memory_order_release);
    if (!changed)
        return 0;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(t->n_parts);
    if (!l) {
        rill__table_fail(t, RILL_ENOMEM, "out of memory");
        return -1;
    }
    /* Every followed partition from where the table is (committed):
     * those kept go on where they were. */
    for (int32_t p = 0; p < t->n_parts; p++)
        if (t->parts[p].followed)
            rd_kafka_topic_partition_list_add(l, t->topic, p)->offset = t->parts[p].next;
    rd_kafka_resp_err_t kerr = rd_kafka_assign(t->rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    if (kerr) {
        char why[160];
        snprintf(why, sizeof why, "cannot assign its partitions: %s", rd_kafka_err2str(kerr));
        rill__table_fail(t, RILL_EKAFKA, why);
        return -1;
    }
    return 0;
}

void rill__table_follow_publish(rill_table_t *t)
{
    int all;
    pthread_mutex_lock(&t->fmu);
    all = atomic_load_explicit(&t->assigned, memory_order_relaxed);
    for (int32_t p = 0; p < t->n_parts; p++) {
        table_part_t *tp = &t->parts[p];
        int ready = tp->want > 0 && tp->followed && tp->done && tp->gen_seen == tp->gen;
        /* Release: the commits the readiness stands for came before. */
        if (ready != atomic_load_explicit(&tp->ready, memory_order_relaxed))
            atomic_store_explicit(&tp->ready, ready, memory_order_release);
        if (tp->want > 0 && !ready)
            all = 0;
    }
    int was = atomic_load_explicit(&t->caught_up, memory_order_relaxed);
    if (all && !was && !t->told_once) /* the time before the flag publishes it */
        atomic_store_explicit(&t->caught_up_ms, rill__now_ms() - t->opened_ms,
                              memory_order_relaxed);
    if (all != was)
        atomic_store_explicit(&t->caught_up, all, memory_order_release);
    pthread_mutex_unlock(&t->fmu);
    if (all && !was)
        rill__table_mark_caught_up(t);
}

int rill__table_partition_caught_up(rill_table_t *t, int32_t partition)
{
    if (!t->partitioned || partition < 0)
        return atomic_load_explicit(&t->caught_up, memory_order_acquire);
    if (partition >= t->n_parts)
        return 1; /* the table has no such partition: no match */
    table_part_t *tp = &t->parts[partition];
    /* A partition no source told the table of has no keys (no match);
     * until a follower reported an assignment, everything waits. */
    if (!atomic_load_explicit(&tp->wanted, memory_order_acquire))
        return atomic_load_explicit(&t->assigned, memory_order_acquire);
    return atomic_load_explicit(&tp->ready, memory_order_acquire);
}

int32_t rill__table_copartitions(const rill_table_t *t, const char **topic)
{
    *topic = t->topic;
    return t->partitioned ? t->n_parts : 0;
}
