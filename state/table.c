/*
 * Tables (rill_table_open): a topic materialised into a store, the latest
 * value per key, kept by a thread of the table's own with a plain
 * librdkafka consumer.
 *
 * Why a thread and not an actor: the reader's work is a poll that may
 * wait and store commits that may flush to disk (LMDB), neither of which
 * may run on an executor; a thread polls with a timeout and needs no timer.
 *
 * The client is assigned every partition (no group join: group.id is only
 * what librdkafka's assign needs), from the offset stored with the table
 * or from the beginning. rill_table_open() reads each partition's high
 * watermark first: those are the end offsets the table must reach to be
 * caught up. A partition reaches its end when a record at end - 1 or
 * later was committed, or when librdkafka reports its end (a
 * partition EOF at or past it: control records of transactions and
 * compacted records are never delivered, so the last record's offset
 * alone may never reach it).
 *
 * Keys: a table of topic T keeps key k under the state prefix of (T, 0)
 * (state_int.h: 0x01 T 0x00 00000000 k), whatever partition it came
 * from; the offsets of T's partitions are stored as a stateful stage's.
 * One write transaction per batch holds the batch's keys and offsets, so
 * a table in an LMDB store reopens exactly where its last commit was.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../actors/util.h"
#include "table_int.h"

/* Records per write transaction, at most. */
#define TABLE_BATCH   1000
/* How long the reader waits in a poll (bounds rill_table_close's wait). */
#define TABLE_POLL_MS 50

/* ------------------------------------------------------------ the reader */

/* Apply one record to the open transaction (begun if none is). 0, or -1
 * after failing the table. */
static int apply(rill_table_t *t, void **txn, const rd_kafka_message_t *m)
{
    rill_store_t *s = t->store;
    char why[160];
    if (!*txn) {
        rill_err_t err = s->ops->begin(s, 1, txn, why, sizeof why);
        if (err) {
            rill__table_fail(t, err, why);
            return -1;
        }
    }
    if (m->partition < 0 || m->partition >= t->n_parts)
        return 0; /* partitions added after the open are not followed */
    table_part_t *tp = &t->parts[m->partition];
    if (t->partitioned && !tp->followed)
        return 0; /* fetched before the partition was dropped */
    tp->txn_next = m->offset + 1;
    tp->dirty = 1;
    /* Relaxed: a count, ordering nothing. */
    atomic_fetch_add_explicit(&t->records, 1, memory_order_relaxed);
    if (!m->key || m->key_len == 0 || m->key_len > RILL__KEY_MAX) {
        atomic_fetch_add_explicit(&t->skipped, 1, memory_order_relaxed);
        return 0;
    }
    uint8_t k[RILL__ENCODED_KEY_MAX];
    memcpy(k, t->prefix, t->prefix_len);
    if (t->partitioned) /* the prefix of (topic, the record's partition) */
        rill__state_prefix(k, RILL__NS_STATE, t->topic, m->partition);
    memcpy(k + t->prefix_len, m->key, m->key_len);
    size_t kl = t->prefix_len + m->key_len;
    rill_err_t err;
    if (!m->payload) { /* a tombstone */
        err = s->ops->del(*txn, k, kl);
        if (err == RILL_OK) {
            atomic_fetch_add_explicit(&t->deletes, 1, memory_order_relaxed);
            atomic_fetch_sub_explicit(&t->keys, 1, memory_order_relaxed);
            atomic_fetch_add_explicit(&s->deletes, 1, memory_order_relaxed);
        }
        if (err == RILL_ENOENT)
            err = RILL_OK;
    } else {
        const void *v;
        size_t vl;
        int fresh = s->ops->get(*txn, k, kl, &v, &vl) == RILL_ENOENT;
        err = s->ops->put(*txn, k, kl, m->payload, m->len);
        if (err == RILL_OK) {
            if (fresh)
                atomic_fetch_add_explicit(&t->keys, 1, memory_order_relaxed);
            atomic_fetch_add_explicit(&s->puts, 1, memory_order_relaxed);
        }
    }
    if (err) {
        snprintf(why, sizeof why, "cannot write the key of partition %d offset %lld: %s",
                 (int)m->partition, (long long)m->offset,
                 err == RILL_EFULL ? "the store is full (its map_size)" : rill_err_name(err));
        rill__table_fail(t, err, why);
        return -1;
    }
    return 0;
}

/* Commit the open transaction with the offsets it moved. 0, or -1 after
 * failing the table (the transaction is gone either way). */
static int commit(rill_table_t *t, void *txn)
{
    rill_store_t *s = t->store;
    char why[160] = "";
    rill_err_t err = RILL_OK;
    for (int32_t p = 0; p < t->n_parts && !err; p++)
        if (t->parts[p].dirty)
            err = rill__state_put_offset(s, txn, t->topic, p, t->parts[p].txn_next);
    if (err) {
        s->ops->abort(txn);
        atomic_fetch_add_explicit(&s->aborts, 1, memory_order_relaxed);
        snprintf(why, sizeof why, "cannot write the offsets: %s", rill_err2str(err));
    } else if ((err = s->ops->commit(txn, why, sizeof why)) != RILL_OK) {
        atomic_fetch_add_explicit(&s->commit_errors, 1, memory_order_relaxed);
    } else {
        atomic_fetch_add_explicit(&s->commits, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&t->commits, 1, memory_order_relaxed);
    }
    if (err) {
        rill__table_fail(t, err, why);
        return -1;
    }
    for (int32_t p = 0; p < t->n_parts; p++) {
        if (t->parts[p].dirty) {
            t->parts[p].dirty = 0;
            rill__table_part_progress(t, p, t->parts[p].txn_next);
        }
    }
    return 0;
}

/* One message of a poll: a record into txn, or an event. 0, or -1 after
 * failing the table. */
static int handle(rill_table_t *t, void **txn, const rd_kafka_message_t *m, int64_t *eof,
                  int32_t *eof_part)
{
    if (!m->err)
        return apply(t, txn, m);
    if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
        /* The end of what the partition has now: m->offset is the next
         * offset. Applied after the batch commits, as a record's is. */
        if (m->partition >= 0 && m->partition < t->n_parts) {
            *eof_part = m->partition;
            *eof = m->offset;
        }
        return 0;
    }
    /* Transient errors (a broker down): librdkafka retries on its own. */
    rill_log(RILL_LOG_WARNING, "state.table", "table %s: %s", t->topic, rd_kafka_message_errstr(m));
    return 0;
}

static void *table_main(void *arg)
{
    rill_table_t *t = arg;
    /* EOFs seen in the batch, applied once it committed. */
    int64_t *eofs = calloc((size_t)t->n_parts, sizeof *eofs);
    if (!eofs) {
        rill__table_fail(t, RILL_ENOMEM, "out of memory");
        return NULL;
    }
    for (int32_t p = 0; p < t->n_parts; p++)
        eofs[p] = -1;
    int failed = 0;
    while (!failed && !atomic_load_explicit(&t->stop, memory_order_acquire)) {
        if (t->partitioned && (rill__table_follow_sync(t) != 0 || rill__table_evict_due(t) != 0))
            break;
        rd_kafka_message_t *m = rd_kafka_consumer_poll(t->rk, TABLE_POLL_MS);
        if (!m) {
            if (t->partitioned)
                rill__table_follow_publish(t);
            continue;
        }
        void *txn = NULL;
        int n = 0;
        do {
            int64_t eof = -1;
            int32_t eof_part = -1;
            failed = handle(t, &txn, m, &eof, &eof_part) != 0;
            rd_kafka_message_destroy(m);
            if (eof_part >= 0 && eof > eofs[eof_part])
                eofs[eof_part] = eof;
        } while (!failed && ++n < TABLE_BATCH && (m = rd_kafka_consumer_poll(t->rk, 0)));
        if (failed) {
            if (txn) {
                t->store->ops->abort(txn);
                atomic_fetch_add_explicit(&t->store->aborts, 1, memory_order_relaxed);
            }
            break;
        }
        if (txn && commit(t, txn) != 0)
            break;
        for (int32_t p = 0; p < t->n_parts; p++) {
            if (eofs[p] >= 0)
                rill__table_part_progress(t, p, eofs[p]);
            eofs[p] = -1;
        }
        if (t->partitioned)
            rill__table_follow_publish(t);
        else if (t->parts_left == 0 && !atomic_load_explicit(&t->caught_up, memory_order_relaxed))
            rill__table_mark_caught_up(t);
    }
    free(eofs);
    return NULL;
}

/* ------------------------------------------------------------ open, close */

/* The client (*rk): conf's properties, with what a table needs. */
static rill_err_t table_client(const rill_consumer_conf_t *c, const char *topic, rd_kafka_t **rk,
                               char *errstr, size_t errstr_size)
{
    if (!c->have_bootstrap)
        return rill__fail(RILL_EINVAL, errstr, errstr_size, "table %s: %s", topic,
                          RILL__NO_BOOTSTRAP_TEXT);
    rd_kafka_conf_t *kc = rd_kafka_conf_dup(c->kconf);
    if (!kc)
        return rill__fail(RILL_ENOMEM, errstr, errstr_size, "table %s: out of memory", topic);
    char why[256] = "";
    rill_err_t err = RILL_OK;
    /* librdkafka's assign needs a group id; the table never joins it nor
     * commits to it. */
    if (!c->have_group)
        err = rill__conf_set(kc, "group.id", "rill-table", why, sizeof why);
    const char *forced[] = {"enable.auto.commit",
                            "false",
                            "enable.auto.offset.store",
                            "false",
                            "enable.partition.eof",
                            "true",
                            NULL};
    if (!err)
        err = rill__conf_apply(kc, forced, why, sizeof why);
    /* A stored offset the topic no longer has: read what it has. */
    if (!err && !rill__consumer_key_set(c, "auto.offset.reset"))
        err = rill__conf_set(kc, "auto.offset.reset", "earliest", why, sizeof why);
    if (!err)
        err = rill__consumer_fetch_defaults(c, kc, why, sizeof why);
    if (err) {
        rd_kafka_conf_destroy(kc);
        return rill__fail(err, errstr, errstr_size, "table %s: %s", topic, why);
    }
    rill__kclient_telemetry_default(kc, rill__consumer_key_set(c, "enable.metrics.push"));
    rill__kafka_quiet_log(kc);
    *rk = rd_kafka_new(RD_KAFKA_CONSUMER, kc, why, sizeof why);
    if (!*rk) {
        rd_kafka_conf_destroy(kc);
        return rill__fail(RILL_EKAFKA, errstr, errstr_size, "table %s: %s", topic, why);
    }
    rd_kafka_poll_set_consumer(*rk);
    return RILL_OK;
}

static rill_err_t kafka_fail(rd_kafka_resp_err_t kerr, char *errstr, size_t errstr_size,
                             const char *topic, const char *what)
{
    rill_err_t err = kerr == RD_KAFKA_RESP_ERR__TIMED_OUT ? RILL_ETIMEDOUT : RILL_EKAFKA;
    return rill__fail(err, errstr, errstr_size, "table %s: cannot read %s: %s", topic, what,
                      rd_kafka_err2str(kerr));
}

/* The topic's partition count from the cluster's metadata. All topics
 * are asked for: a request naming the topic may create it (a broker with
 * auto.create.topics.enable, and the mock, do), and a table never makes
 * its topic. */
static rill_err_t read_partitions(rill_table_t *t, int timeout_ms, char *errstr, size_t errstr_size)
{
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t kerr = rd_kafka_metadata(t->rk, 1, NULL, &md, timeout_ms);
    if (kerr)
        return kafka_fail(kerr, errstr, errstr_size, t->topic, "its metadata");
    const struct rd_kafka_metadata_topic *mt = NULL;
    for (int i = 0; i < md->topic_cnt && !mt; i++)
        if (strcmp(md->topics[i].topic, t->topic) == 0)
            mt = &md->topics[i];
    rill_err_t err = RILL_OK;
    if (!mt || mt->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART ||
        (mt->err == RD_KAFKA_RESP_ERR_NO_ERROR && mt->partition_cnt == 0))
        err = rill__fail(RILL_ENOENT, errstr, errstr_size,
                         "table %s: the topic does not exist (create it first)", t->topic);
    else if (mt->err)
        err = kafka_fail(mt->err, errstr, errstr_size, t->topic, "its metadata");
    else
        t->n_parts = mt->partition_cnt;
    rd_kafka_metadata_destroy(md);
    return err;
}

/* Each partition's end offset and start, and the assignment. */
static rill_err_t assign_parts(rill_table_t *t, int timeout_ms, char *errstr, size_t errstr_size)
{
    t->parts = calloc((size_t)t->n_parts, sizeof *t->parts);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(t->n_parts);
    if (!t->parts || !l) {
        if (l)
            rd_kafka_topic_partition_list_destroy(l);
        return rill__fail(RILL_ENOMEM, errstr, errstr_size, "table %s: out of memory", t->topic);
    }
    rill_err_t err = RILL_OK;
    t->parts_left = t->n_parts;
    if (t->partitioned) { /* the followers tell the reader what to assign */
        rd_kafka_topic_partition_list_destroy(l);
        return RILL_OK;
    }
    for (int32_t p = 0; p < t->n_parts && !err; p++) {
        int64_t low = 0, high = 0, stored = 0;
        rd_kafka_resp_err_t kerr =
            rd_kafka_query_watermark_offsets(t->rk, t->topic, p, &low, &high, timeout_ms);
        if (kerr) {
            err = kafka_fail(kerr, errstr, errstr_size, t->topic, "its end offsets");
            break;
        }
        rill_err_t serr = rill_store_offset(t->store, t->topic, p, &stored);
        if (serr != RILL_OK && serr != RILL_ENOENT) {
            err = rill__fail(serr, errstr, errstr_size,
                             "table %s: cannot read the offset of partition %d in store %s: %s",
                             t->topic, (int)p, t->store->name, rill_err2str(serr));
            break;
        }
        table_part_t *tp = &t->parts[p];
        tp->end = high;
        tp->next = serr == RILL_OK ? stored : low;
        tp->txn_next = tp->next;
        rill__table_part_progress(t, p, tp->next);
        rd_kafka_topic_partition_list_add(l, t->topic, p)->offset =
            serr == RILL_OK ? stored : RD_KAFKA_OFFSET_BEGINNING;
    }
    if (!err) {
        rd_kafka_resp_err_t kerr = rd_kafka_assign(t->rk, l);
        if (kerr)
            err = kafka_fail(kerr, errstr, errstr_size, t->topic, "its partitions (assign)");
    }
    rd_kafka_topic_partition_list_destroy(l);
    return err;
}

static int count_key(void *opaque, const void *key, size_t key_len, const void *value,
                     size_t value_len)
{
    (void)key;
    (void)key_len;
    (void)value;
    (void)value_len;
    (*(uint64_t *)opaque)++;
    return 0;
}

/* The keys an earlier run left in the store (a reopened LMDB table), and
 * which partitions of a co-partitioned table it left something of (to be
 * evicted if no follower holds them). */
static void count_keys(rill_table_t *t)
{
    uint64_t n = 0;
    int32_t last = t->partitioned ? t->n_parts - 1 : 0;
    for (int32_t p = 0; p <= last; p++) {
        uint64_t before = n;
        int64_t off;
        if (rill_store_scan(t->store, t->topic, p, NULL, 0, NULL, 0, count_key, &n) != RILL_OK)
            return;
        if (t->partitioned)
            t->parts[p].kept =
                n > before || rill_store_offset(t->store, t->topic, p, &off) == RILL_OK;
    }
    atomic_store_explicit(&t->keys, n, memory_order_relaxed);
}

static void table_free(rill_table_t *t)
{
    if (t->rk) /* never joined a group, nothing to commit: no close */
        rd_kafka_destroy_flags(t->rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    if (t->holds_slot) /* release: our writes happen before the next writer's */
        atomic_store_explicit(&t->store->busy, 0, memory_order_release);
    if (t->own_store)
        rill_store_close(t->store);
    pthread_cond_destroy(&t->cv);
    pthread_mutex_destroy(&t->mu);
    pthread_mutex_destroy(&t->fmu);
    rill__table_follow_free(t);
    free(t->parts);
    free(t);
}

rill_err_t rill_table_open(rill_system_t *sys, const char *topic, rill_consumer_conf_t *conf,
                           const rill_table_opts_t *opts, rill_table_t **out, char *errstr,
                           size_t errstr_size)
{
    rill_err_t err = RILL_OK;
    if (out)
        *out = NULL;
    if (!sys || !topic || !conf || !out)
        err = rill__fail(RILL_EINVAL, errstr, errstr_size,
                         "rill_table_open: sys, topic, conf and out must not be NULL");
    if (!err)
        err = rill__topic_name_check(topic, errstr, errstr_size);
    if (!err && strlen(topic) > RILL__TOPIC_MAX)
        err = rill__fail(RILL_EINVAL, errstr, errstr_size,
                         "table %.40s...: a table's topic name is at most %d bytes", topic,
                         RILL__TOPIC_MAX);
    rill_table_t *t = err ? NULL : calloc(1, sizeof *t);
    if (!err && !t)
        err = rill__fail(RILL_ENOMEM, errstr, errstr_size, "table %s: out of memory", topic);
    if (err) {
        rill_consumer_conf_destroy(conf);
        return err;
    }
    t->opened_ms = rill__now_ms();
    t->sys = sys;
    snprintf(t->topic, sizeof t->topic, "%s", topic);
    if (opts)
        t->opts = *opts;
    t->partitioned = t->opts.partitioned != 0;
    t->evict_after_ms = t->opts.evict_ms == UINT32_MAX ? -1
                        : t->opts.evict_ms             ? (int64_t)t->opts.evict_ms
                                                       : RILL__TABLE_EVICT_DEFAULT_MS;
    int timeout_ms = t->opts.open_timeout_ms ? (int)t->opts.open_timeout_ms : 10000;
    if (t->opts.open_timeout_ms > INT32_MAX)
        timeout_ms = INT32_MAX;
    atomic_init(&t->caught_up_ms, -1);
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, NULL);
    pthread_mutex_init(&t->fmu, NULL);
    t->prefix_len = rill__state_prefix(t->prefix, RILL__NS_STATE, t->topic, 0);

    err = table_client(conf, topic, &t->rk, errstr, errstr_size);
    rill_consumer_conf_destroy(conf);
    if (err) {
        table_free(t);
        return err;
    }
    if (t->opts.store) {
        t->store = t->opts.store;
    } else {
        char name[RILL__TOPIC_MAX + 16];
        snprintf(name, sizeof name, "table %s", topic);
        err = rill_store_open_memory(name, &t->store, errstr, errstr_size);
        t->own_store = !err;
    }
    if (!err) {
        int idle = 0;
        /* acq_rel: we see the last writer's writes; ours follow the claim. */
        if (!atomic_compare_exchange_strong_explicit(&t->store->busy, &idle, 1,
                                                     memory_order_acq_rel, memory_order_acquire))
            err = rill__fail(RILL_ESTATE, errstr, errstr_size,
                             "table %s: store %s is written by a stage or another table", topic,
                             t->store->name);
        else
            t->holds_slot = 1;
    }
    if (!err)
        err = read_partitions(t, timeout_ms, errstr, errstr_size);
    if (!err)
        err = assign_parts(t, timeout_ms, errstr, errstr_size);
    if (err) {
        table_free(t);
        return err;
    }
    count_keys(t);
    if (!t->partitioned && t->parts_left == 0)
        rill__table_mark_caught_up(t);
    if (pthread_create(&t->thread, NULL, table_main, t) != 0) {
        table_free(t);
        return rill__fail(RILL_ENOMEM, errstr, errstr_size,
                          "table %s: cannot start its reading thread", topic);
    }
    t->thread_started = 1;
    *out = t;
    return RILL_OK;
}

void rill_table_close(rill_table_t *t)
{
    if (!t)
        return;
    atomic_store_explicit(&t->stop, 1, memory_order_release);
    if (t->thread_started)
        pthread_join(t->thread, NULL);
    table_free(t);
}

/* ------------------------------------------------------------ reading */

int rill_table_caught_up(const rill_table_t *t)
{
    if (!t)
        return 0;
    rill_table_t *m = (rill_table_t *)t;
    /* A table that stopped reading is not caught up (acquire: a flag of
     * its own here). */
    if (atomic_load_explicit(&m->failed, memory_order_acquire))
        return 0;
    return atomic_load_explicit(&m->caught_up, memory_order_acquire);
}

rill_err_t rill_table_wait_caught_up(rill_table_t *t, int timeout_ms)
{
    if (!t)
        return RILL_EINVAL;
    struct timespec deadline = rill__realtime_after_ms(timeout_ms);
    rill_err_t err = RILL_OK;
    pthread_mutex_lock(&t->mu);
    while (!rill_table_caught_up(t) && !t->err) {
        if (pthread_cond_timedwait(&t->cv, &t->mu, &deadline) != 0) {
            err = rill_table_caught_up(t) ? RILL_OK : RILL_ETIMEDOUT;
            break;
        }
    }
    if (!rill_table_caught_up(t) && t->err)
        err = t->err;
    pthread_mutex_unlock(&t->mu);
    return err;
}

rill_err_t rill_table_get(rill_table_t *t, const void *key, size_t key_len, void *buf,
                          size_t buf_size, size_t *value_len)
{
    if (!t)
        return RILL_EINVAL;
    if (!t->partitioned)
        return rill_store_read(t->store, t->topic, 0, key, key_len, buf, buf_size, value_len);
    if (!key || key_len == 0 || key_len > RILL__KEY_MAX || !value_len || (!buf && buf_size > 0))
        return RILL_EINVAL;
    /* The partitions the table follows now: a key is in one of them only
     * (partitions dropped are kept in the store but not served). */
    for (int32_t p = 0; p < t->n_parts; p++) {
        if (!atomic_load_explicit(&t->parts[p].wanted, memory_order_acquire))
            continue;
        rill_err_t err =
            rill_store_read(t->store, t->topic, p, key, key_len, buf, buf_size, value_len);
        if (err != RILL_ENOENT)
            return err;
    }
    return RILL_ENOENT;
}

rill_store_t *rill_table_store(const rill_table_t *t)
{
    return t ? t->store : NULL;
}

/* Look key (encoded behind prefix k, prefix_len bytes) up in txn. RILL_OK
 * with *v and *vl, RILL_ENOENT, or the store's error. */
static rill_err_t lookup_in(rill_table_t *t, void *txn, uint8_t *k, size_t prefix_len,
                            const void *key, size_t key_len, const void **v, size_t *vl)
{
    memcpy(k + prefix_len, key, key_len);
    return t->store->ops->get(txn, k, prefix_len + key_len, v, vl);
}

rill_err_t rill__table_lookup(rill_table_t *t, int32_t partition, const void *key, size_t key_len,
                              rill__table_found_fn *fn, void *opaque)
{
    uint8_t k[RILL__ENCODED_KEY_MAX];
    int32_t from = 0, to = 0; /* the partitions searched, [from, to] */
    if (t->partitioned) {
        from = partition < 0 ? 0 : partition;
        to = partition < 0 ? t->n_parts - 1 : partition;
    }
    if (!key || key_len == 0 || key_len > RILL__KEY_MAX || from >= t->n_parts) {
        fn(opaque, NULL, 0, 0); /* no table key is like it */
        return RILL_OK;
    }
    void *txn;
    rill_err_t err = t->store->ops->begin(t->store, 0, &txn, NULL, 0);
    if (err)
        return err;
    const void *v = NULL;
    size_t vl = 0;
    err = RILL_ENOENT;
    for (int32_t p = from; p <= to && err == RILL_ENOENT; p++) {
        if (!t->partitioned) {
            memcpy(k, t->prefix, t->prefix_len);
        } else if (!atomic_load_explicit(&t->parts[p].wanted, memory_order_acquire)) {
            continue; /* not followed: kept, if it was, but not served */
        } else {
            rill__state_prefix(k, RILL__NS_STATE, t->topic, p);
        }
        err = lookup_in(t, txn, k, t->prefix_len, key, key_len, &v, &vl);
    }
    if (err == RILL_OK || err == RILL_ENOENT) {
        fn(opaque, err == RILL_OK ? v : NULL, err == RILL_OK ? vl : 0, err == RILL_OK);
        err = RILL_OK;
    }
    t->store->ops->abort(txn);
    return err;
}

rill_err_t rill__table_failed(rill_table_t *t, char *text, size_t size)
{
    rill_err_t err = (rill_err_t)atomic_load_explicit(&t->failed, memory_order_acquire);
    if (err) {
        pthread_mutex_lock(&t->mu);
        snprintf(text, size, "%s", t->err_text);
        pthread_mutex_unlock(&t->mu);
    }
    return err;
}

rill_err_t rill_table_stats(rill_table_t *t, rill_table_stats_t *out)
{
    if (!t || !out)
        return RILL_EINVAL;
    memset(out, 0, sizeof *out);
    /* Relaxed: each counter is a count of its own. */
    out->records = atomic_load_explicit(&t->records, memory_order_relaxed);
    out->deletes = atomic_load_explicit(&t->deletes, memory_order_relaxed);
    out->skipped = atomic_load_explicit(&t->skipped, memory_order_relaxed);
    out->keys = atomic_load_explicit(&t->keys, memory_order_relaxed);
    out->commits = atomic_load_explicit(&t->commits, memory_order_relaxed);
    out->evicted = atomic_load_explicit(&t->evicted, memory_order_relaxed);
    out->evicted_keys = atomic_load_explicit(&t->evicted_keys, memory_order_relaxed);
    out->partitions = t->n_parts;
    out->followed = t->partitioned ? 0 : t->n_parts;
    for (int32_t p = 0; t->partitioned && p < t->n_parts; p++) /* acquire: as joins read it */
        out->followed += atomic_load_explicit(&t->parts[p].wanted, memory_order_acquire) != 0;
    out->caught_up = rill_table_caught_up(t);
    out->caught_up_ms =
        out->caught_up ? atomic_load_explicit(&t->caught_up_ms, memory_order_relaxed) : -1;
    pthread_mutex_lock(&t->mu);
    out->error = t->err;
    snprintf(out->error_text, sizeof out->error_text, "%s", t->err_text);
    pthread_mutex_unlock(&t->mu);
    return RILL_OK;
}
