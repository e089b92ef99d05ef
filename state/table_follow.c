/*
 * Co-partitioned tables (rill_table_opts_t.partitioned): the table follows
 * the assignment of the sources made from the confs that follow it
 * (rill_consumer_conf_follow_table) and reads partition p of its topic
 * while a source holds a partition numbered p.
 *
 * The sources' rebalance callback runs on their executors and must not
 * block: it counts, under the table's fmu, the source partitions of each
 * number (want), bumps the partition's generation on each assignment, and
 * raises fchanged. The reader (table.c) syncs before each poll: a
 * partition newly wanted (or assigned again: a new generation) gets the
 * high watermark of now as its end and starts from the offset stored with
 * it (or the beginning); a partition no longer wanted is dropped from the
 * client's assignment. Its keys stay in the store, with its offset, but
 * are not served (lookups skip partitions not wanted): if it comes back,
 * the table goes on from there. After each batch the reader publishes each
 * partition's readiness (followed at its latest generation and caught up)
 * and the table's caught_up (a follower reported an assignment, and every
 * wanted partition is ready).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "table_int.h"

/* How long the reader waits for a newly followed partition's high
 * watermark (a failure is retried at the next sync). */
#define FOLLOW_WATERMARK_MS 5000

static void follow_cb(void *opaque, rill_rebalance_event_t ev,
                      const rd_kafka_topic_partition_list_t *parts)
{
    rill_table_t *t = opaque;
    pthread_mutex_lock(&t->fmu);
    for (int i = 0; parts && i < parts->cnt; i++) {
        int32_t p = parts->elems[i].partition;
        if (p < 0 || p >= t->n_parts)
            continue; /* the table's topic has no such partition */
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
        fprintf(stderr, "rill: table %s: cannot read the end offset of partition %d: %s\n",
                t->topic, (int)p, rd_kafka_err2str(kerr));
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
    tp->gen_seen = tp->s_gen;
    return 0;
}

int rill__table_follow_sync(rill_table_t *t)
{
    if (!atomic_exchange_explicit(&t->fchanged, 0, memory_order_acq_rel))
        return 0;
    pthread_mutex_lock(&t->fmu);
    for (int32_t p = 0; p < t->n_parts; p++) {
        t->parts[p].s_want = t->parts[p].want > 0;
        t->parts[p].s_gen = t->parts[p].gen;
    }
    pthread_mutex_unlock(&t->fmu);
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
