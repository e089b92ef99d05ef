/*
 * The Kafka consumer actor: a source stage of the stream engine whose
 * elements are librdkafka records, with an offset tracker that commits only
 * what downstream confirmed. See include/rill/kafka.h for the semantics.
 *
 * Event loop: the consumer queue (with the main queue forwarded to it)
 * writes a byte to a non-blocking pipe when it goes from empty to
 * non-empty (rd_kafka_queue_io_event_enable); an ev_io watcher on the
 * actor's executor turns that into a signal to the actor, and the actor's
 * turn drains the queue. A 100 ms tick keeps polling even when nothing
 * arrives (max.poll.interval.ms is reset only by the application's polls)
 * and drives the time-based commit and redelivery checks. No thread sleeps
 * in poll.
 *
 * Offset tracker: per assigned partition, the emitted offsets not yet
 * committable, in offset order, each with a confirmed flag. Confirms mark
 * entries; confirmed entries at the front are dropped, and the partition's
 * committable offset is the first unconfirmed one (or one past the last
 * emitted). Gaps in offsets (compaction, transaction markers) need no
 * special case.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rill/kafka.h>

#include "../actors/seam.h"
#include "../streams/stream_int.h"
#include "kafka_int.h"

/* Message types: the consumer's block of the registry (actors/msgtypes.h). */
#define K_WAKE          RILL__CONSUMER_WAKE
#define K_CONFIRM       RILL__CONSUMER_CONFIRM
#define K_CONFIRM_BATCH RILL__CONSUMER_CONFIRM_BATCH
#define K_CONFIRM_UPTO  RILL__CONSUMER_CONFIRM_UPTO
#define K_TICK          RILL__CONSUMER_TICK
#define K_STATS         RILL__CONSUMER_STATS

#define TICK_MS       100
#define MAX_PARTS     4096u
#define PART_ID_SHIFT 16 /* part id = generation << 16 | slot */

/* ------------------------------------------------------------------ */
/* Configuration                                                       */
/* ------------------------------------------------------------------ */

struct rill_consumer_conf {
    rd_kafka_conf_t *kconf;
    int have_bootstrap, have_group;
    int have_queue_kbytes; /* the application set queued.max.messages.kbytes */
    uint32_t commit_interval_ms, commit_count;
    uint32_t drain_ms, shutdown_ms;
    uint32_t unconfirmed_timeout_ms, max_redeliveries;
    uint32_t buffer_high, buffer_low, max_unconfirmed, pause_after_ms;
    int commit, commit_set;
    char *dlq_topic;
    char *dlq_producer; /* name of the producer actor for dead letters */
    char **topics;
    size_t n_topics;
    rd_kafka_topic_partition_list_t *fixed;
    rill_assigned_fn *assigned_cb;
    void *assigned_opaque;
    rill_rebalance_fn *rebalance_cb;
    void *rebalance_opaque;
    rill_commit_fn *commit_cb;
    void *commit_opaque;
    int reset_earliest; /* auto.offset.reset, read at spawn */
    /* The librdkafka keys the application set, in the order first set:
     * what a dead-letter producer of our own inherits (see
     * dlq_producer_conf). */
    char **client_keys;
    size_t n_client_keys;
};

rill_consumer_conf_t *rill_consumer_conf_new(void)
{
    rill_consumer_conf_t *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->kconf = rd_kafka_conf_new();
    c->commit_interval_ms = 1000;
    c->commit_count = 1000;
    c->drain_ms = 5000;
    c->shutdown_ms = 5000;
    c->max_redeliveries = 3;
    c->buffer_high = 1000;
    c->buffer_low = 500;
    c->max_unconfirmed = 20000;
    c->pause_after_ms = 1000;
    c->commit = 1;
    return c;
}

void rill_consumer_conf_destroy(rill_consumer_conf_t *c)
{
    if (!c)
        return;
    if (c->kconf)
        rd_kafka_conf_destroy(c->kconf);
    for (size_t i = 0; i < c->n_topics; i++)
        free(c->topics[i]);
    free(c->topics);
    if (c->fixed)
        rd_kafka_topic_partition_list_destroy(c->fixed);
    free(c->dlq_topic);
    free(c->dlq_producer);
    for (size_t i = 0; i < c->n_client_keys; i++)
        free(c->client_keys[i]);
    free(c->client_keys);
    free(c);
}

/* Remember that the application set librdkafka property `key`. */
static rill_err_t track_client_key(rill_consumer_conf_t *c, const char *key, char *errstr,
                                   size_t errstr_size)
{
    for (size_t i = 0; i < c->n_client_keys; i++)
        if (!strcmp(c->client_keys[i], key))
            return RILL_OK;
    char **v = realloc(c->client_keys, (c->n_client_keys + 1) * sizeof(*v));
    if (v)
        c->client_keys = v;
    char *k = v ? strdup(key) : NULL;
    if (!k)
        return rill__fail(RILL_ENOMEM, errstr, errstr_size, "out of memory");
    c->client_keys[c->n_client_keys++] = k;
    return RILL_OK;
}

static rill_err_t parse_u32(const char *key, const char *v, uint32_t lo, uint32_t hi, uint32_t *out,
                            char *errstr, size_t errstr_size)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (!*v || *end || errno || x < lo || x > hi || v[0] == '-')
        return rill__fail(RILL_EINVAL, errstr, errstr_size,
                          "%s must be a number from %u to %u, got \"%s\"", key, lo, hi, v);
    *out = (uint32_t)x;
    return RILL_OK;
}

rill_err_t rill_consumer_conf_set(rill_consumer_conf_t *c, const char *key, const char *value,
                                  char *errstr, size_t errstr_size)
{
    if (!c || !key || !value)
        return rill__fail(RILL_EINVAL, errstr, errstr_size, "conf, key and value must be set");
    if (strncmp(key, "rill.", 5) != 0) {
        rill_err_t err = rill__conf_set(c->kconf, key, value, errstr, errstr_size);
        if (!err && !strcmp(key, "bootstrap.servers"))
            c->have_bootstrap = 1;
        if (!err && !strcmp(key, "group.id"))
            c->have_group = 1;
        if (!err && !strcmp(key, "queued.max.messages.kbytes"))
            c->have_queue_kbytes = 1;
        if (!err)
            err = track_client_key(c, key, errstr, errstr_size);
        return err;
    }
    const char *k = key + 5;
    const uint32_t big = 24u * 3600 * 1000;
    if (!strcmp(k, "commit.interval.ms"))
        return parse_u32(key, value, 1, big, &c->commit_interval_ms, errstr, errstr_size);
    if (!strcmp(k, "commit.count"))
        return parse_u32(key, value, 1, 10000000, &c->commit_count, errstr, errstr_size);
    if (!strcmp(k, "drain.timeout.ms"))
        return parse_u32(key, value, 0, big, &c->drain_ms, errstr, errstr_size);
    if (!strcmp(k, "shutdown.timeout.ms"))
        return parse_u32(key, value, 0, big, &c->shutdown_ms, errstr, errstr_size);
    if (!strcmp(k, "unconfirmed.timeout.ms"))
        return parse_u32(key, value, 0, big, &c->unconfirmed_timeout_ms, errstr, errstr_size);
    if (!strcmp(k, "max.redeliveries"))
        return parse_u32(key, value, 0, 1000000, &c->max_redeliveries, errstr, errstr_size);
    if (!strcmp(k, "buffer.high"))
        return parse_u32(key, value, 1, 1u << 20, &c->buffer_high, errstr, errstr_size);
    if (!strcmp(k, "buffer.low"))
        return parse_u32(key, value, 0, 1u << 20, &c->buffer_low, errstr, errstr_size);
    if (!strcmp(k, "pause.after.ms"))
        return parse_u32(key, value, 0, big, &c->pause_after_ms, errstr, errstr_size);
    if (!strcmp(k, "max.unconfirmed"))
        return parse_u32(key, value, 1, 1u << 22, &c->max_unconfirmed, errstr, errstr_size);
    if (!strcmp(k, "dead.letter.topic")) {
        rill_err_t err = rill__topic_name_check(value, errstr, errstr_size);
        if (err)
            return err;
        char *t = strdup(value);
        if (!t)
            return rill__fail(RILL_ENOMEM, errstr, errstr_size, "out of memory");
        free(c->dlq_topic);
        c->dlq_topic = t;
        return RILL_OK;
    }
    if (!strcmp(k, "dead.letter.producer")) {
        if (!*value)
            return rill__fail(RILL_EINVAL, errstr, errstr_size,
                              "rill.dead.letter.producer must name a producer actor");
        char *n = strdup(value);
        if (!n)
            return rill__fail(RILL_ENOMEM, errstr, errstr_size, "out of memory");
        free(c->dlq_producer);
        c->dlq_producer = n;
        return RILL_OK;
    }
    if (!strcmp(k, "commit")) {
        if (strcmp(value, "true") && strcmp(value, "false"))
            return rill__fail(RILL_EINVAL, errstr, errstr_size,
                              "rill.commit must be true or false, got \"%s\"", value);
        c->commit = !strcmp(value, "true");
        c->commit_set = 1;
        return RILL_OK;
    }
    return rill__fail(RILL_EINVAL, errstr, errstr_size, "unknown rill property \"%s\"", key);
}

rill_err_t rill_consumer_conf_subscribe(rill_consumer_conf_t *c, const char *const *topics,
                                        size_t n)
{
    if (!c || !topics || n == 0)
        return RILL_EINVAL;
    for (size_t i = 0; i < n; i++) {
        if (!topics[i] || !*topics[i])
            return RILL_EINVAL;
        if (topics[i][0] != '^' && rill__topic_name_check(topics[i], NULL, 0))
            return RILL_EINVAL;
    }
    char **v = realloc(c->topics, (c->n_topics + n) * sizeof(*v));
    if (!v)
        return RILL_ENOMEM;
    c->topics = v;
    for (size_t i = 0; i < n; i++)
        if (!(c->topics[c->n_topics++] = strdup(topics[i])))
            return RILL_ENOMEM;
    return RILL_OK;
}

rill_err_t rill_consumer_conf_assign(rill_consumer_conf_t *c, const char *topic, int32_t partition,
                                     int64_t offset)
{
    if (!c || rill__topic_name_check(topic, NULL, 0) || partition < 0 ||
        (offset < 0 && offset != RILL_OFFSET_COMMITTED && offset != RILL_OFFSET_BEGINNING &&
         offset != RILL_OFFSET_END))
        return RILL_EINVAL;
    if (!c->fixed && !(c->fixed = rd_kafka_topic_partition_list_new(8)))
        return RILL_ENOMEM;
    rd_kafka_topic_partition_list_add(c->fixed, topic, partition)->offset = offset;
    return RILL_OK;
}

void rill_consumer_conf_set_assigned_cb(rill_consumer_conf_t *c, rill_assigned_fn *fn, void *opaque)
{
    if (!c)
        return;
    c->assigned_cb = fn;
    c->assigned_opaque = opaque;
    if (!c->commit_set)
        c->commit = 0; /* the application owns the offsets */
}

void rill_consumer_conf_set_rebalance_cb(rill_consumer_conf_t *c, rill_rebalance_fn *fn,
                                         void *opaque)
{
    if (c) {
        c->rebalance_cb = fn;
        c->rebalance_opaque = opaque;
    }
}

void rill_consumer_conf_set_commit_cb(rill_consumer_conf_t *c, rill_commit_fn *fn, void *opaque)
{
    if (c) {
        c->commit_cb = fn;
        c->commit_opaque = opaque;
    }
}

/* ------------------------------------------------------------------ */
/* Records: a shared handle keeps the client alive while records live  */
/* ------------------------------------------------------------------ */

typedef struct khandle {
    rd_kafka_t *rk;
    _Atomic long refs; /* the consumer + every record not yet released */
} khandle_t;

static void handle_unref(khandle_t *h)
{
    /* acq_rel: the last release sees every record's destroy done. */
    if (atomic_fetch_sub_explicit(&h->refs, 1, memory_order_acq_rel) == 1) {
        /* the consumer already closed: do not close again (it could block) */
        rd_kafka_destroy_flags(h->rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
        free(h);
    }
}

/* The element destructor: records may outlive the consumer actor; the
 * client goes when the last of them is released. */
static void record_free(void *payload)
{
    rd_kafka_message_t *m = payload;
    khandle_t *h = rd_kafka_topic_opaque(m->rkt);
    rd_kafka_message_destroy(m);
    handle_unref(h);
}

const rd_kafka_message_t *rill_record(const rill_elem_t *e)
{
    return e && e->dtor == record_free ? e->payload : NULL;
}

/* ------------------------------------------------------------------ */
/* The consumer                                                        */
/* ------------------------------------------------------------------ */

typedef struct confirm_batch {
    size_t n;
    struct {
        uint64_t id;
        int64_t offset;
    } v[];
} confirm_batch_t;

typedef struct consumer {
    rill_consumer_conf_t *conf; /* owned */
    khandle_t *h;
    rd_kafka_t *rk;
    rd_kafka_queue_t *q;
    rill__kq_t kq;
    rill__stage_t *st;
    rill_system_t *sys;

    /* The assigned partitions, what went out of each and what may be
     * committed (offsets.h). */
    rill__tracker_t tr;
    rill__tpart_t *last_hit; /* the partition of the last record polled */

    rill__equeue_t buf; /* polled records waiting for demand */
    int paused;
    /* The buffer has not been below the low watermark since (0 = it is
     * below now): how long downstream has been slower than Kafka. */
    int64_t full_since_ms;
    uint32_t since_commit;
    int64_t last_commit_ms;
    int64_t last_redeliver_check_ms;

    /* a revoke waiting for its in-flight confirms */
    rd_kafka_topic_partition_list_t *revoking;
    int64_t revoke_deadline_ms;
    int revoke_eager;
    int closing;

    /* dead letters: sent to a producer actor, answered by delivery
     * results carrying the sequence number of a dlq_ref_t */
    rill_aid_t dlq_own; /* the producer this consumer started, if any */
    struct dlq_ref *dlq_refs;
    size_t n_dlq_refs, cap_dlq_refs;
    uint64_t dlq_seq;

    rill_consumer_stats_t stats;
} consumer_t;

static int64_t now_ms(void)
{
    return rill__now_ms();
}

/* ---- partitions ---- */

static rill__tpart_t *part_by_id(consumer_t *k, uint64_t id)
{
    return rill__tracker_part(&k->tr, (rill__part_id_t){id});
}

static rill__tpart_t *part_of_msg(consumer_t *k, const rd_kafka_message_t *m)
{
    /* Records come in runs of one partition, and a topic object compares
     * faster than a topic name: remember the last partition and the
     * topic object of each. */
    rill__tpart_t *p = k->last_hit;
    if (p && p->handle == m->rkt && p->partition == m->partition)
        return p;
    for (p = rill__tracker_next(&k->tr, NULL); p; p = rill__tracker_next(&k->tr, p)) {
        if (p->partition != m->partition)
            continue;
        if (p->handle == m->rkt || (!p->handle && !strcmp(p->topic, rd_kafka_topic_name(m->rkt)))) {
            p->handle = m->rkt;
            k->last_hit = p;
            return p;
        }
    }
    return NULL;
}

static void part_remove(consumer_t *k, rill__tpart_t *p)
{
    if (k->last_hit == p)
        k->last_hit = NULL;
    rill__tracker_remove(&k->tr, p);
}

/* Stop tracking the partitions being revoked. */
static void remove_revoking(consumer_t *k)
{
    for (rill__tpart_t *p = rill__tracker_next(&k->tr, NULL); p; p = rill__tracker_next(&k->tr, p))
        if (p->revoking)
            part_remove(k, p);
}

/* ---- commits ---- */

static void report_commit(consumer_t *k, rd_kafka_resp_err_t err,
                          const rd_kafka_topic_partition_list_t *offsets)
{
    int failed = err != RD_KAFKA_RESP_ERR_NO_ERROR;
    for (int i = 0; offsets && i < offsets->cnt && !failed; i++)
        failed = offsets->elems[i].err != 0;
    if (failed) {
        k->stats.commit_errors++;
        /* Commit these again next time. */
        for (int i = 0; offsets && i < offsets->cnt; i++) {
            rill__tpart_t *p =
                rill__tracker_find(&k->tr, offsets->elems[i].topic, offsets->elems[i].partition);
            if (p)
                rill__tracker_commit_failed(p, offsets->elems[i].offset);
        }
    } else if (offsets && offsets->cnt) {
        k->stats.committed++;
    }
    if (k->conf->commit_cb && offsets && offsets->cnt)
        k->conf->commit_cb(k->conf->commit_opaque, err, offsets);
}

static void offset_commit_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                             rd_kafka_topic_partition_list_t *offsets, void *opaque)
{
    (void)rk;
    consumer_t *k = opaque;
    if (err == RD_KAFKA_RESP_ERR__NO_OFFSET)
        return; /* nothing to commit */
    report_commit(k, err, offsets);
}

/* The offsets to commit: partitions whose committable offset moved. With
 * only_revoking, just the revoking ones. */
static rd_kafka_topic_partition_list_t *commit_list(consumer_t *k, int only_revoking)
{
    rd_kafka_topic_partition_list_t *l = NULL;
    for (rill__tpart_t *p = rill__tracker_next(&k->tr, NULL); p;
         p = rill__tracker_next(&k->tr, p)) {
        if (only_revoking && !p->revoking)
            continue;
        int64_t offset = rill__tracker_to_commit(p);
        if (offset < 0)
            continue;
        if (!l)
            l = rd_kafka_topic_partition_list_new(8);
        rd_kafka_topic_partition_list_add(l, p->topic, p->partition)->offset = offset;
        rill__tracker_mark_committed(p, offset);
    }
    return l;
}

static void commit_async(consumer_t *k)
{
    k->since_commit = 0;
    k->last_commit_ms = now_ms();
    if (!k->conf->commit)
        return;
    rd_kafka_topic_partition_list_t *l = commit_list(k, 0);
    if (!l)
        return;
    /* The result comes back through offset_commit_cb when we poll. */
    rd_kafka_resp_err_t err = rd_kafka_commit(k->rk, l, 1);
    if (err)
        report_commit(k, err, l);
    rd_kafka_topic_partition_list_destroy(l);
}

/* Commit and wait for the result, at most until deadline. */
static void commit_sync(consumer_t *k, int only_revoking, int64_t deadline)
{
    if (!k->conf->commit)
        return;
    rd_kafka_topic_partition_list_t *l = commit_list(k, only_revoking);
    if (!l)
        return;
    rd_kafka_queue_t *tq = rd_kafka_queue_new(k->rk);
    rd_kafka_resp_err_t err = rd_kafka_commit_queue(k->rk, l, tq, NULL, NULL);
    if (!err) {
        err = RD_KAFKA_RESP_ERR__TIMED_OUT;
        for (;;) {
            int left = rill__ms_left(deadline);
            rd_kafka_event_t *ev = rd_kafka_queue_poll(tq, left);
            if (!ev)
                break;
            if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_OFFSET_COMMIT) {
                err = rd_kafka_event_error(ev);
                const rd_kafka_topic_partition_list_t *res =
                    rd_kafka_event_topic_partition_list(ev);
                report_commit(k, err, res ? res : l);
                rd_kafka_event_destroy(ev);
                err = RD_KAFKA_RESP_ERR_NO_ERROR;
                break;
            }
            rd_kafka_event_destroy(ev);
            if (left == 0)
                break;
        }
        if (err)
            report_commit(k, err, l);
    } else {
        report_commit(k, err, l);
    }
    rd_kafka_queue_destroy(tq);
    rd_kafka_topic_partition_list_destroy(l);
}

/* ---- pause / resume ---- */

static void set_paused(consumer_t *k, int pause)
{
    if (k->paused == pause)
        return;
    rd_kafka_topic_partition_list_t *a = NULL;
    if (rd_kafka_assignment(k->rk, &a) == RD_KAFKA_RESP_ERR_NO_ERROR && a) {
        if (pause)
            rd_kafka_pause_partitions(k->rk, a);
        else
            rd_kafka_resume_partitions(k->rk, a);
        rd_kafka_topic_partition_list_destroy(a);
    }
    k->paused = pause;
    k->stats.paused = pause;
    if (pause)
        k->stats.pauses++;
}

/* ---- rebalances ---- */

static int is_cooperative(consumer_t *k)
{
    const char *proto = rd_kafka_rebalance_protocol(k->rk);
    return proto && !strcmp(proto, "COOPERATIVE");
}

/* Drop buffered records of partitions for which keep() is false. */
static void buffer_filter(consumer_t *k, int (*keep)(consumer_t *, const rill_elem_t *))
{
    size_t n = k->buf.count;
    for (size_t i = 0; i < n; i++) {
        rill_elem_t e;
        rill__equeue_pop(&k->buf, &e);
        if (keep(k, &e))
            rill__equeue_push(&k->buf, &e);
        else
            rill_elem_release(&e);
    }
}

static int keep_live(consumer_t *k, const rill_elem_t *e)
{
    rill__tpart_t *p = part_by_id(k, e->arg);
    if (!p || p->revoking)
        return 0;
    return !rill__tracker_buffered_stale(p, ((rd_kafka_message_t *)e->payload)->offset);
}

static void observe(consumer_t *k, rill_rebalance_event_t ev,
                    const rd_kafka_topic_partition_list_t *parts)
{
    k->stats.rebalances++;
    if (k->conf->rebalance_cb)
        k->conf->rebalance_cb(k->conf->rebalance_opaque, ev, parts);
}

/* Release revoked partitions: commit what was confirmed, then tell
 * librdkafka; confirms for them are fenced from now on. */
static void finish_revoke(consumer_t *k, int64_t deadline)
{
    rd_kafka_topic_partition_list_t *l = k->revoking;
    if (!l)
        return;
    k->revoking = NULL;
    commit_sync(k, 1, deadline);
    if (k->revoke_eager) {
        rd_kafka_assign(k->rk, NULL);
    } else {
        rd_kafka_error_t *e = rd_kafka_incremental_unassign(k->rk, l);
        if (e)
            rd_kafka_error_destroy(e);
    }
    remove_revoking(k);
    observe(k, RILL_REBALANCE_REVOKED, l);
    rd_kafka_topic_partition_list_destroy(l);
}

static void maybe_finish_revoke(consumer_t *k)
{
    if (!k->revoking)
        return;
    /* Wait for what is still unsettled; a failed record will not be
     * confirmed by waiting longer. */
    for (rill__tpart_t *p = rill__tracker_next(&k->tr, NULL); p; p = rill__tracker_next(&k->tr, p))
        if (p->revoking && rill__tracker_part_unsettled(p))
            return; /* still waiting */
    finish_revoke(k, now_ms() + (int64_t)k->conf->shutdown_ms);
}

static void on_assign(consumer_t *k, rd_kafka_topic_partition_list_t *parts, int cooperative)
{
    rill_consumer_conf_t *c = k->conf;
    if (c->assigned_cb) {
        for (int i = 0; i < parts->cnt; i++)
            parts->elems[i].offset = RD_KAFKA_OFFSET_INVALID;
        if (c->assigned_cb(c->assigned_opaque, parts)) {
            rill__stage_fail(k->st, RILL_ESTATE, "the assigned callback refused the assignment");
            return;
        }
    }
    for (int i = 0; i < parts->cnt; i++)
        if (!rill__tracker_find(&k->tr, parts->elems[i].topic, parts->elems[i].partition) &&
            !rill__tracker_assign(&k->tr, parts->elems[i].topic, parts->elems[i].partition)) {
            rill__stage_fail(k->st, RILL_ENOMEM, "cannot track more partitions");
            return;
        }
    if (cooperative) {
        rd_kafka_error_t *e = rd_kafka_incremental_assign(k->rk, parts);
        if (e) {
            rill__stage_fail(k->st, RILL_EKAFKA, "incremental assign: %s",
                             rd_kafka_error_string(e));
            rd_kafka_error_destroy(e);
            return;
        }
    } else {
        rd_kafka_assign(k->rk, parts);
    }
    /* librdkafka keeps a partition's pause state, but a newly assigned
     * partition is not paused: apply ours. */
    if (k->paused)
        rd_kafka_pause_partitions(k->rk, parts);
    observe(k, RILL_REBALANCE_ASSIGNED, parts);
}

static void on_revoke(consumer_t *k, rd_kafka_topic_partition_list_t *parts, int cooperative)
{
    if (rd_kafka_assignment_lost(k->rk)) {
        /* Someone else may own them already: commit nothing. */
        for (int i = 0; i < parts->cnt; i++) {
            rill__tpart_t *p =
                rill__tracker_find(&k->tr, parts->elems[i].topic, parts->elems[i].partition);
            if (p)
                p->revoking = 1;
        }
        buffer_filter(k, keep_live);
        remove_revoking(k);
        if (cooperative) {
            rd_kafka_error_t *e = rd_kafka_incremental_unassign(k->rk, parts);
            if (e)
                rd_kafka_error_destroy(e);
        } else {
            rd_kafka_assign(k->rk, NULL);
        }
        observe(k, RILL_REBALANCE_LOST, parts);
        return;
    }
    if (k->revoking) /* cannot happen: librdkafka waits for our unassign */
        finish_revoke(k, now_ms());
    for (int i = 0; i < parts->cnt; i++) {
        rill__tpart_t *p =
            rill__tracker_find(&k->tr, parts->elems[i].topic, parts->elems[i].partition);
        if (p)
            p->revoking = 1;
    }
    /* Stop emitting them now; what is buffered will be consumed again by
     * the next owner from the committed offset. */
    buffer_filter(k, keep_live);
    k->revoking = rd_kafka_topic_partition_list_copy(parts);
    k->revoke_eager = !cooperative;
    k->revoke_deadline_ms = now_ms() + (int64_t)k->conf->drain_ms;
    if (k->closing || k->conf->drain_ms == 0)
        finish_revoke(k, now_ms() + (int64_t)k->conf->shutdown_ms);
    else
        maybe_finish_revoke(k);
}

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    (void)rk;
    consumer_t *k = opaque;
    int coop = is_cooperative(k);
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS)
        on_assign(k, parts, coop);
    else if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS)
        on_revoke(k, parts, coop);
    else
        rd_kafka_assign(k->rk, NULL);
}

/* ---- confirms ---- */

static void confirm_one(consumer_t *k, uint64_t id, int64_t offset, int upto)
{
    /* The tracker counts the fenced ones (a partition released since). */
    rill__part_id_t pid = {id};
    size_t n = 1;
    rill__track_res_t res = upto ? rill__tracker_confirm_upto(&k->tr, pid, offset, &n)
                                 : rill__tracker_confirm(&k->tr, pid, offset);
    if (res != RILL__TRACK_ACCEPTED)
        return; /* fenced, already confirmed, committed past or truncated */
    k->since_commit += (uint32_t)n;
    rill__tpart_t *p = part_by_id(k, id);
    if (p->revoking)
        maybe_finish_revoke(k);
}

/* ---- dead letters ---- */

typedef struct dlq_ref {
    uint64_t seq;
    uint64_t id; /* partition slot id */
    int64_t offset;
} dlq_ref_t;

/* The producer that takes our dead letters: ours, or the one named. */
static rill_aid_t dlq_producer(consumer_t *k)
{
    if (!rill_aid_is_none(k->dlq_own))
        return k->dlq_own;
    return k->conf->dlq_producer ? rill_lookup(k->sys, k->conf->dlq_producer) : RILL_AID_NONE;
}

/* Send a record that exhausted its redeliveries to the dead-letter topic
 * through the producer actor (ownership of m stays with the caller). Its
 * delivery result comes back as RILL_MSG_DELIVERY (dlq_result). Returns 0,
 * or -1 if the producer could not take it now. */
static int dlq_send(consumer_t *k, rill__tpart_t *p, const rd_kafka_message_t *m, uint32_t attempts)
{
    rill_aid_t to = dlq_producer(k);
    if (rill_aid_is_none(to))
        return -1;
    if (k->n_dlq_refs == k->cap_dlq_refs) {
        size_t cap = k->cap_dlq_refs ? 2 * k->cap_dlq_refs : 16;
        dlq_ref_t *v = realloc(k->dlq_refs, cap * sizeof(*v));
        if (!v)
            return -1;
        k->dlq_refs = v;
        k->cap_dlq_refs = cap;
    }
    rill_produce_t *req = rill_produce_new(k->conf->dlq_topic, RILL_PARTITION_ANY, m->key,
                                           m->key_len, m->payload, m->len);
    if (!req)
        return -1;
    rd_kafka_headers_t *src = NULL;
    if (rd_kafka_message_headers(m, &src) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        const char *name;
        const void *val;
        size_t len;
        for (size_t i = 0; !rd_kafka_header_get_all(src, i, &name, &val, &len); i++)
            rill_produce_add_header(req, name, val, len);
    }
    char part[16], off[24], why[96];
    snprintf(part, sizeof(part), "%d", (int)m->partition);
    snprintf(off, sizeof(off), "%" PRId64, m->offset);
    snprintf(why, sizeof(why), "not confirmed after %u deliveries", attempts);
    const char *topic = rd_kafka_topic_name(m->rkt);
    rill_produce_add_header(req, "rill-origin-topic", topic, strlen(topic));
    rill_produce_add_header(req, "rill-origin-partition", part, strlen(part));
    rill_produce_add_header(req, "rill-origin-offset", off, strlen(off));
    rill_produce_add_header(req, "rill-error", why, strlen(why));
    uint64_t seq = ++k->dlq_seq;
    rill_produce_set_reply(req, k->st->self, seq);
    if (rill_producer_send(k->sys, to, req) != RILL_OK) {
        rill_produce_free(req);
        return -1;
    }
    k->dlq_refs[k->n_dlq_refs++] = (dlq_ref_t){.seq = seq, .id = p->id.v, .offset = m->offset};
    return 0;
}

static void confirm_one(consumer_t *k, uint64_t id, int64_t offset, int upto);

/* A dead letter's delivery result: confirm the record, or (the producer
 * failed it) let redelivery try again after the timeout. */
static void dlq_result(consumer_t *k, const rill_delivery_t *d, uint64_t seq)
{
    size_t i = 0;
    while (i < k->n_dlq_refs && k->dlq_refs[i].seq != seq)
        i++;
    if (i == k->n_dlq_refs)
        return; /* not ours */
    dlq_ref_t ref = k->dlq_refs[i];
    k->dlq_refs[i] = k->dlq_refs[--k->n_dlq_refs];
    if (d && !d->err) {
        k->stats.dead_lettered++;
        confirm_one(k, ref.id, ref.offset, 0);
        return;
    }
    k->stats.dead_letter_errors++;
    rill__tpart_t *p = part_by_id(k, ref.id);
    if (p) /* redelivered after the timeout, then sent again */
        rill__tracker_dead_letter(p, ref.offset, 0, now_ms());
}

/* ---- polling ---- */

static int fatal_error(rd_kafka_resp_err_t err)
{
    switch (err) {
    case RD_KAFKA_RESP_ERR__FATAL:
    case RD_KAFKA_RESP_ERR__AUTHENTICATION:
    case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_SASL_AUTHENTICATION_FAILED:
    case RD_KAFKA_RESP_ERR__INVALID_ARG:
        return 1;
    default:
        return 0;
    }
}

static void handle_error_msg(consumer_t *k, rd_kafka_message_t *m)
{
    rd_kafka_resp_err_t err = m->err;
    if (err == RD_KAFKA_RESP_ERR__PARTITION_EOF)
        return;
    char fatal[256];
    if (err == RD_KAFKA_RESP_ERR__FATAL && rd_kafka_fatal_error(k->rk, fatal, sizeof(fatal))) {
        rill__stage_fail(k->st, RILL_EKAFKA, "fatal consumer error: %s", fatal);
        return;
    }
    if (fatal_error(err) || ((err == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC ||
                              err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) &&
                             k->conf->fixed)) {
        rill__stage_fail(k->st, RILL_EKAFKA, "consumer error: %s", rd_kafka_message_errstr(m));
        return;
    }
    /* Retriable: librdkafka retries on its own. */
}

/* Take one polled record: buffer it, or send it to the dead letters. */
static void take_record(consumer_t *k, rd_kafka_message_t *m)
{
    rill__tpart_t *p = part_of_msg(k, m);
    if (!p || p->revoking || !rill__tracker_polled(p, m->offset)) {
        rd_kafka_message_destroy(m); /* not ours (any more), or from before a seek back */
        return;
    }
    uint32_t att = rill__tracker_attempts(p, m->offset);
    if (att > k->conf->max_redeliveries) {
        /* Delivered max_redeliveries times more and still not confirmed. */
        if (!k->conf->dlq_topic) {
            rill__stage_fail(k->st, RILL_ETIMEDOUT,
                             "record %s [%d] offset %" PRId64
                             " not confirmed after %u deliveries and no dead-letter topic",
                             p->topic, (int)p->partition, m->offset, att);
        } else if (rill__tracker_emit(&k->tr, p->id, m->offset, now_ms()) == RILL__TRACK_ACCEPTED) {
            /* Tracked as emitted, so that its confirm (on delivery to the
             * dead-letter topic) moves the committable offset. If the
             * producer cannot take it now, redelivery tries again after
             * the timeout. */
            if (dlq_send(k, p, m, att) == 0)
                rill__tracker_dead_letter(p, m->offset, 1, now_ms());
            else
                k->stats.dead_letter_errors++;
        } else {
            rill__stage_fail(k->st, RILL_ENOMEM, "out of memory tracking offsets");
        }
        rd_kafka_message_destroy(m);
        return;
    }
    atomic_fetch_add_explicit(&k->h->refs, 1, memory_order_relaxed);
    rill_elem_t e = {.payload = m, .dtor = record_free, .arg = p->id.v};
    if (!rill__equeue_push(&k->buf, &e)) {
        /* Cannot happen (room for twice the high watermark); never drop a
         * record silently: it would be skipped. */
        rill_elem_release(&e);
        rill__stage_fail(k->st, RILL_ESTATE, "consumer buffer overflow");
        return;
    }
    k->stats.polled++;
    if (k->buf.count > k->stats.buffered_max)
        k->stats.buffered_max = (uint32_t)k->buf.count;
}

static void poll_queue(consumer_t *k)
{
    /*
     * Fill the buffer up to the high watermark. At the mark, stop polling:
     * librdkafka's own queue holds what it fetched, and its fetcher stops
     * at queued.max.messages.kbytes (rill sets a modest default). When the
     * buffer has not dropped below the low watermark for
     * rill.pause.after.ms (downstream is slower than Kafka, not just
     * hiccuping), pause the partitions: librdkafka drops their fetched
     * data and fetches nothing more, so later polls return no records,
     * only events (keep polling for those: max.poll.interval.ms must not
     * run out). Pausing at once on every brief stall would cost a lot: in
     * librdkafka 2.0.2 a resumed partition's fetcher only notices the
     * resume at its next wakeup, up to a second later.
     */
    for (int budget = 4096; budget > 0 && !k->st->finished; budget--) {
        if (k->buf.count < k->conf->buffer_low)
            k->full_since_ms = 0;
        else if (!k->full_since_ms)
            k->full_since_ms = now_ms();
        if (k->buf.count >= k->conf->buffer_high) {
            if (!k->paused && now_ms() - k->full_since_ms < (int64_t)k->conf->pause_after_ms)
                break;
            set_paused(k, 1);
        }
        rd_kafka_message_t *m = rd_kafka_consumer_poll(k->rk, 0);
        if (!m)
            break;
        if (m->err) {
            handle_error_msg(k, m);
            rd_kafka_message_destroy(m);
            continue;
        }
        take_record(k, m);
    }
}

/* ---- redelivery ---- */

static void check_redelivery(consumer_t *k)
{
    uint32_t timeout = k->conf->unconfirmed_timeout_ms;
    if (!timeout)
        return;
    int64_t now = now_ms();
    for (rill__tpart_t *p = rill__tracker_next(&k->tr, NULL); p;
         p = rill__tracker_next(&k->tr, p)) {
        int64_t from;
        if (p->revoking || !rill__tracker_due(p, now, timeout, &from))
            continue;
        /* Deliver again from the oldest record due: seek back, forget
         * what was emitted from there, drop what we buffered. */
        rill__tracker_count_attempt(p, from);
        rill__tracker_truncate_from(&k->tr, p, from);
        buffer_filter(k, keep_live);
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(l, p->topic, p->partition)->offset = from;
        rd_kafka_error_t *e = rd_kafka_seek_partitions(k->rk, l, 0);
        if (e)
            rd_kafka_error_destroy(e);
        rd_kafka_topic_partition_list_destroy(l);
        k->stats.redelivered++;
    }
}

/* ---- the stage kind ---- */

static void consumer_pump(rill__stage_t *st)
{
    consumer_t *k = st->spec.impl;
    rill_elem_t e;
    while (k->buf.count && rill__stage_can_emit(st, 0) &&
           k->tr.unconfirmed < k->conf->max_unconfirmed) {
        rill__equeue_pop(&k->buf, &e);
        rill__tpart_t *p = part_by_id(k, e.arg);
        const rd_kafka_message_t *m = e.payload;
        if (!p || p->revoking ||
            rill__tracker_emit(&k->tr, p->id, m->offset, now_ms()) != RILL__TRACK_ACCEPTED) {
            rill_elem_release(&e);
            continue;
        }
        k->stats.emitted++;
        rill__stage_emit(st, 0, &e);
    }
    if (k->paused && k->buf.count < k->conf->buffer_low)
        set_paused(k, 0);
    if (!st->finished && k->buf.count < k->conf->buffer_high)
        poll_queue(k);
    if (!st->finished && k->buf.count && rill__stage_can_emit(st, 0) &&
        k->tr.unconfirmed < k->conf->max_unconfirmed)
        rill__stage_repump(st);
    k->stats.buffered = (uint32_t)k->buf.count;
}

/* K_STATS with this arg asks for the aid of the dead-letter producer the
 * consumer started, in the reply's arg (rill__consumer_dlq_producer): a
 * test hook, so a variant of a request that exists rather than a message
 * type of its own. */
#define STATS_ASK_DLQ_PRODUCER 1

/* The counters, with those the buffer and the tracker keep. */
static void consumer_stats(const consumer_t *k, rill_consumer_stats_t *s)
{
    *s = k->stats;
    s->buffered = (uint32_t)k->buf.count;
    s->unconfirmed = k->tr.unconfirmed;
    s->confirmed = k->tr.confirmed;
    s->fenced = k->tr.fenced;
    s->assigned = k->tr.assigned;
}

static void consumer_on_msg(rill__stage_t *st, rill_msg_t *msg)
{
    consumer_t *k = st->spec.impl;
    switch (msg->type) {
    case K_WAKE:
        rill__kq_woken(&k->kq);
        break;
    case K_CONFIRM:
        confirm_one(k, msg->corr, (int64_t)msg->arg, 0);
        break;
    case K_CONFIRM_UPTO:
        confirm_one(k, msg->corr, (int64_t)msg->arg, 1);
        break;
    case K_CONFIRM_BATCH: {
        const confirm_batch_t *b = msg->payload;
        for (size_t i = 0; i < b->n; i++)
            confirm_one(k, b->v[i].id, b->v[i].offset, 0);
        break;
    }
    case K_TICK: {
        int64_t now = now_ms();
        if (k->revoking && now >= k->revoke_deadline_ms)
            finish_revoke(k, now + (int64_t)k->conf->shutdown_ms);
        if (k->tr.unconfirmed == 0 || now - k->last_redeliver_check_ms >= 50) {
            k->last_redeliver_check_ms = now;
            check_redelivery(k);
        }
        if (now - k->last_commit_ms >= (int64_t)k->conf->commit_interval_ms)
            commit_async(k);
        if (k->buf.count >= k->conf->buffer_high)
            poll_queue(k); /* pauses once the buffer stayed full long enough */
        break;
    }
    case RILL_MSG_DELIVERY:
        dlq_result(k, msg->payload, msg->arg);
        break;
    case K_STATS: {
        if (msg->arg == STATS_ASK_DLQ_PRODUCER) {
            rill_msg_t r = {.type = K_STATS, .arg = k->dlq_own.id};
            rill_reply(st->ctx, msg, &r);
            return;
        }
        rill_consumer_stats_t *s = malloc(sizeof(*s));
        if (s) {
            consumer_stats(k, s);
            rill_msg_t r = {.type = K_STATS, .payload = s, .dtor = free};
            if (rill_reply(st->ctx, msg, &r) != RILL_OK)
                free(s);
        }
        return;
    }
    default:
        return;
    }
    if (k->since_commit >= k->conf->commit_count)
        commit_async(k);
    if (!st->finished)
        consumer_pump(st);
}

static rill_err_t consumer_start(rill__stage_t *st)
{
    consumer_t *k = st->spec.impl;
    k->st = st;
    k->sys = st->sys;
    if (rill__kq_start(&k->kq, st->ctx, k->q, K_WAKE))
        return RILL_EIO;
    rill_msg_t tick = {.type = K_TICK};
    rill_timer_start(st->ctx, TICK_MS, TICK_MS, &tick, NULL);
    k->last_commit_ms = now_ms();
    /* Our dead-letter producer lives and fails with us. */
    if (!rill_aid_is_none(k->dlq_own) && rill_link(st->ctx, k->dlq_own) != RILL_OK) {
        rill__stage_fail(st, RILL_ESTOPPED, "the dead-letter producer stopped");
        return RILL_OK;
    }

    rill_consumer_conf_t *c = k->conf;
    if (c->n_topics) {
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)c->n_topics);
        for (size_t i = 0; i < c->n_topics; i++)
            rd_kafka_topic_partition_list_add(l, c->topics[i], RD_KAFKA_PARTITION_UA);
        rd_kafka_resp_err_t err = rd_kafka_subscribe(k->rk, l);
        rd_kafka_topic_partition_list_destroy(l);
        if (err) {
            rill__stage_fail(st, RILL_EKAFKA, "subscribe: %s", rd_kafka_err2str(err));
            return RILL_OK;
        }
    } else {
        /* Fixed partitions: resolve committed/logical offsets to concrete
         * ones first (a logical start offset costs librdkafka 2.0.2 a
         * 500 ms offset-query timer), then assign. */
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_copy(c->fixed);
        int need_committed = 0;
        for (int i = 0; i < l->cnt; i++)
            need_committed |= l->elems[i].offset == RILL_OFFSET_COMMITTED;
        if (need_committed)
            rd_kafka_committed(k->rk, l, 10000);
        for (int i = 0; i < l->cnt; i++) {
            rd_kafka_topic_partition_t *tp = &l->elems[i];
            if (tp->offset >= 0)
                continue;
            int64_t lo = 0, hi = 0;
            if (rd_kafka_query_watermark_offsets(k->rk, tp->topic, tp->partition, &lo, &hi,
                                                 10000) == RD_KAFKA_RESP_ERR_NO_ERROR) {
                if (tp->offset == RILL_OFFSET_END)
                    tp->offset = hi;
                else if (tp->offset == RILL_OFFSET_BEGINNING)
                    tp->offset = lo;
                else
                    tp->offset = c->reset_earliest ? lo : hi;
            }
            tp->err = 0;
        }
        for (int i = 0; i < l->cnt; i++)
            if (!rill__tracker_assign(&k->tr, l->elems[i].topic, l->elems[i].partition)) {
                rd_kafka_topic_partition_list_destroy(l);
                return RILL_ENOMEM;
            }
        rd_kafka_resp_err_t err = rd_kafka_assign(k->rk, l);
        if (!err)
            observe(k, RILL_REBALANCE_ASSIGNED, l);
        rd_kafka_topic_partition_list_destroy(l);
        if (err) {
            rill__stage_fail(st, RILL_EKAFKA, "assign: %s", rd_kafka_err2str(err));
            return RILL_OK;
        }
    }
    return RILL_OK;
}

/* Close with a deadline: a commit of what was confirmed, then leave the
 * group through a queue we poll ourselves (rd_kafka_consumer_close can
 * block without limit when brokers are unreachable). */
static void drained_msg(void *opaque, rill_msg_t *m)
{
    consumer_t *k = opaque;
    if (m->type == K_CONFIRM)
        confirm_one(k, m->corr, (int64_t)m->arg, 0);
    else if (m->type == K_CONFIRM_UPTO)
        confirm_one(k, m->corr, (int64_t)m->arg, 1);
    else if (m->type == K_CONFIRM_BATCH) {
        const confirm_batch_t *b = m->payload;
        for (size_t i = 0; i < b->n; i++)
            confirm_one(k, b->v[i].id, b->v[i].offset, 0);
    }
}

static void consumer_close(consumer_t *k)
{
    int64_t deadline = now_ms() + (int64_t)k->conf->shutdown_ms;
    k->closing = 1;
    /* Confirms accepted before the stop are still in our mailbox (a stop
     * or a cancel overtakes them): they belong in the final commit. */
    rill__ctx_drain_mailbox(k->st->ctx, drained_msg, k);
    if (k->revoking)
        finish_revoke(k, deadline);
    /* Send every partition's offset again: an async commit still in
     * flight may fail, and nobody would retry it. */
    for (rill__tpart_t *p = rill__tracker_next(&k->tr, NULL); p; p = rill__tracker_next(&k->tr, p))
        rill__tracker_commit_again(p);
    commit_sync(k, 0, deadline);
    rd_kafka_queue_t *cq = rd_kafka_queue_new(k->rk);
    rd_kafka_error_t *e = rd_kafka_consumer_close_queue(k->rk, cq);
    if (e) {
        rd_kafka_error_destroy(e);
    } else {
        while (!rd_kafka_consumer_closed(k->rk)) {
            int left = rill__ms_left(deadline);
            if (left == 0)
                break;
            rd_kafka_event_t *ev = rd_kafka_queue_poll(cq, left < 100 ? left : 100);
            if (!ev)
                continue;
            if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_REBALANCE) {
                /* The final revoke: everything confirmed is committed;
                 * release at once. */
                rd_kafka_topic_partition_list_t *parts = rd_kafka_event_topic_partition_list(ev);
                if (rd_kafka_event_error(ev) == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
                    if (!rd_kafka_assignment_lost(k->rk))
                        commit_sync(k, 0, deadline);
                    if (is_cooperative(k)) {
                        rd_kafka_error_t *ue = rd_kafka_incremental_unassign(k->rk, parts);
                        if (ue)
                            rd_kafka_error_destroy(ue);
                    } else {
                        rd_kafka_assign(k->rk, NULL);
                    }
                } else {
                    rd_kafka_assign(k->rk, NULL);
                }
            }
            rd_kafka_event_destroy(ev);
        }
    }
    rd_kafka_queue_destroy(cq);
}

static void consumer_destroy(void *impl)
{
    consumer_t *k = impl;
    if (!k)
        return;
    rill__kq_stop(&k->kq);
    if (k->rk && k->st)
        consumer_close(k);
    if (!rill_aid_is_none(k->dlq_own))
        rill_stop(k->sys, k->dlq_own); /* it flushes what it holds */
    free(k->dlq_refs);
    rill_elem_t e;
    if (k->buf.v)
        while (rill__equeue_pop(&k->buf, &e))
            rill_elem_release(&e);
    free(k->buf.v);
    rill__tracker_free(&k->tr);
    if (k->revoking)
        rd_kafka_topic_partition_list_destroy(k->revoking);
    if (k->q)
        rd_kafka_queue_destroy(k->q);
    if (k->h)
        handle_unref(k->h); /* the client goes with the last record */
    rill_consumer_conf_destroy(k->conf);
    free(k);
}

static void consumer_drain(rill__stage_t *st)
{
    /* Complete the stream now; what is buffered is not emitted (it will be
     * consumed again from the committed offset next time). */
    consumer_t *k = st->spec.impl;
    rill_elem_t e;
    while (rill__equeue_pop(&k->buf, &e))
        rill_elem_release(&e);
    rill__stage_complete(st);
}

static const rill__kind_t consumer_kind = {.name = "kafka-consumer",
                                           .max_in = 0,
                                           .max_out = 1,
                                           .start = consumer_start,
                                           .pump = consumer_pump,
                                           .on_msg = consumer_on_msg,
                                           .on_drain = consumer_drain,
                                           .destroy = consumer_destroy};

/* ------------------------------------------------------------------ */
/* Spawning                                                            */
/* ------------------------------------------------------------------ */

static void quiet_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    if (level <= 3)
        fprintf(stderr, "rill consumer: %s: %s\n", fac, buf);
}

/*
 * The properties librdkafka marks consumer-only: "C" in the C/P column of
 * the table rd_kafka_conf_properties_show() prints, read from there so
 * that the list is that of the librdkafka in use, not one written down
 * here for some version. Parsed once per system (an attachment).
 */
typedef struct consumer_only {
    char **names;
    size_t n;
} consumer_only_t;

static const char consumer_only_key = 0;

static void consumer_only_destroy(void *ptr)
{
    consumer_only_t *co = ptr;
    for (size_t i = 0; i < co->n; i++)
        free(co->names[i]);
    free(co->names);
    free(co);
}

/* The text between from and to without the spaces around it, in place. */
static char *trim_field(char *from, char *to)
{
    while (from < to && *from == ' ')
        from++;
    while (to > from && to[-1] == ' ')
        to--;
    *to = '\0';
    return from;
}

static void *consumer_only_create(char *errstr, size_t errstr_size)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    consumer_only_t *co = calloc(1, sizeof(*co));
    if (!f || !co) {
        if (f)
            fclose(f);
        free(text);
        free(co);
        rill__fail(RILL_ENOMEM, errstr, errstr_size, "out of memory");
        return NULL;
    }
    rd_kafka_conf_properties_show(f);
    fclose(f);
    /* Rows are "name | C/P | range | default | importance | description";
     * the header row ("C/P") and the rule row ("-----") are not "C". */
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *bar1 = strchr(line, '|');
        char *bar2 = bar1 ? strchr(bar1 + 1, '|') : NULL;
        if (!bar2)
            continue;
        const char *cp = trim_field(bar1 + 1, bar2);
        const char *name = trim_field(line, bar1);
        if (strcmp(cp, "C") || !*name)
            continue;
        char **v = realloc(co->names, (co->n + 1) * sizeof(*v));
        char *n = v ? strdup(name) : NULL;
        if (v)
            co->names = v;
        if (!n) {
            free(text);
            consumer_only_destroy(co);
            rill__fail(RILL_ENOMEM, errstr, errstr_size, "out of memory");
            return NULL;
        }
        co->names[co->n++] = n;
    }
    free(text);
    return co;
}

/* 1 if librdkafka marks `key` consumer-only. Without the table (out of
 * memory) nothing is: a consumer property on a producer only costs a
 * warning from librdkafka, a missing connection property costs the
 * connection. */
static int consumer_only(rill_system_t *sys, const char *key)
{
    const consumer_only_t *co = rill__system_attachment(
        sys, &consumer_only_key, consumer_only_create, consumer_only_destroy, NULL, 0);
    for (size_t i = 0; co && i < co->n; i++)
        if (!strcmp(co->names[i], key))
            return 1;
    return 0;
}

/*
 * The configuration of the dead-letter producer the consumer starts: every
 * client property the application set on the consumer (in the order set,
 * with the value it has now) that is not consumer-only, so that it
 * connects as the consumer does, whatever the security setup (TLS, SASL,
 * OAuth, Kerberos) and tuning. Not transactional.id: the producer is not
 * transactional, and sharing the id of the application's own producer
 * would fence one of them.
 */
static rill_err_t dlq_producer_conf(rill_system_t *sys, const rill_consumer_conf_t *c,
                                    rill_producer_conf_t *pc, char *errstr, size_t errstr_size)
{
    for (size_t i = 0; i < c->n_client_keys; i++) {
        const char *key = c->client_keys[i];
        if (!strcmp(key, "transactional.id") || consumer_only(sys, key))
            continue;
        size_t size = 0;
        if (rd_kafka_conf_get(c->kconf, key, NULL, &size) != RD_KAFKA_CONF_OK || !size)
            continue; /* librdkafka keeps no text value for it: nothing to copy */
        char *v = malloc(size);
        if (!v)
            return rill__fail(RILL_ENOMEM, errstr, errstr_size, "out of memory");
        rill_err_t err = RILL_OK;
        if (rd_kafka_conf_get(c->kconf, key, v, &size) == RD_KAFKA_CONF_OK)
            err = rill_producer_conf_set(pc, key, v, errstr, errstr_size);
        free(v);
        if (err)
            return err;
    }
    return RILL_OK;
}

rill_err_t rill_consumer_spawn(rill_system_t *sys, rill_consumer_conf_t *c,
                               const rill_stage_opts_t *opts, rill_aid_t *aid, char *errstr,
                               size_t errstr_size)
{
    rill_err_t err = RILL_OK;
    consumer_t *k = NULL;
    if (!sys || !c || !aid) {
        rill_consumer_conf_destroy(c);
        return rill__fail(RILL_EINVAL, errstr, errstr_size, "system, conf and aid must be set");
    }
    *aid = RILL_AID_NONE;
    if (!c->n_topics && !c->fixed) {
        err = rill__fail(RILL_EINVAL, errstr, errstr_size,
                         "the consumer needs a subscription or fixed partitions");
        goto fail;
    }
    if (c->n_topics && c->fixed) {
        err = rill__fail(RILL_EINVAL, errstr, errstr_size, "subscribe or assign, not both");
        goto fail;
    }
    if (c->n_topics && !c->have_group) {
        err = rill__fail(RILL_EINVAL, errstr, errstr_size, "a group subscription needs group.id");
        goto fail;
    }
    if (c->buffer_low > c->buffer_high) {
        err = rill__fail(RILL_EINVAL, errstr, errstr_size,
                         "rill.buffer.low (%u) must not exceed rill.buffer.high (%u)",
                         c->buffer_low, c->buffer_high);
        goto fail;
    }
    if (!c->have_bootstrap) {
        err = rill__fail(RILL_EINVAL, errstr, errstr_size, RILL__NO_BOOTSTRAP_TEXT);
        goto fail;
    }
    if (!c->have_group &&
        (err = rill__conf_set(c->kconf, "group.id", "rill-fixed-partitions", errstr, errstr_size)))
        goto fail;
    {
        /* Read now: rd_kafka_new takes the conf. */
        char reset[32] = "";
        size_t rs = sizeof(reset);
        rd_kafka_topic_conf_t *dtc = rd_kafka_conf_get_default_topic_conf(c->kconf);
        if (dtc &&
            rd_kafka_topic_conf_get(dtc, "auto.offset.reset", reset, &rs) == RD_KAFKA_CONF_OK)
            c->reset_earliest = strstr(reset, "earliest") || strstr(reset, "smallest") ||
                                strstr(reset, "beginning");
    }
    /*
     * librdkafka's prefetch queue is the memory between our buffer and the
     * broker. rill lowers its byte limit (64 MiB by default) unless the
     * application set it. It leaves queued.min.messages alone: in 2.0.2 a
     * partition whose fetch queue is over either limit is not fetched again
     * for a fixed second, and the check counts the whole consumer queue, so
     * a limit below what a fetch round brings (up to 1 MiB per partition)
     * throttles every partition to a fetch a second (1,000 records: 15x
     * slower). Lowering it is the application's trade: less memory held
     * while backpressured, fewer records per second.
     */
    if (!c->have_queue_kbytes &&
        (err = rill__conf_set(c->kconf, "queued.max.messages.kbytes", "8192", errstr, errstr_size)))
        goto fail;
    /* rill drives offsets: librdkafka must not commit or store on its own. */
    const char *forced[] = {"enable.auto.commit", "false", "enable.auto.offset.store", "false",
                            NULL};
    if ((err = rill__conf_apply(c->kconf, forced, errstr, errstr_size)))
        goto fail;
    char strat[64] = "";
    size_t sz = sizeof(strat);
    if (rd_kafka_conf_get(c->kconf, "partition.assignment.strategy", strat, &sz) ==
            RD_KAFKA_CONF_OK &&
        !strcmp(strat, "range,roundrobin") &&
        (err = rill__conf_set(c->kconf, "partition.assignment.strategy", "cooperative-sticky",
                              errstr, errstr_size)))
        goto fail;

    k = calloc(1, sizeof(*k));
    khandle_t *h = calloc(1, sizeof(*h));
    /* Room to spare: a record polled while full is kept, never dropped. */
    if (!k || !h || rill__equeue_init(&k->buf, (size_t)c->buffer_high * 2 + 1) ||
        rill__tracker_init(&k->tr, MAX_PARTS)) {
        free(h);
        err = rill__fail(RILL_ENOMEM, errstr, errstr_size, "out of memory");
        goto fail;
    }
    atomic_init(&h->refs, 1);
    rd_kafka_conf_set_opaque(c->kconf, k);
    rd_kafka_conf_set_rebalance_cb(c->kconf, rebalance_cb);
    rd_kafka_conf_set_offset_commit_cb(c->kconf, offset_commit_cb);
    char dbg[256] = "";
    size_t dsz = sizeof(dbg);
    /* With "debug" set, librdkafka's own logger prints everything asked. */
    if (rd_kafka_conf_get(c->kconf, "debug", dbg, &dsz) != RD_KAFKA_CONF_OK || !*dbg)
        rd_kafka_conf_set_log_cb(c->kconf, quiet_log_cb);
    rd_kafka_topic_conf_t *tc = rd_kafka_conf_get_default_topic_conf(c->kconf);
    if (!tc) {
        tc = rd_kafka_topic_conf_new();
        rd_kafka_conf_set_default_topic_conf(c->kconf, tc);
        tc = rd_kafka_conf_get_default_topic_conf(c->kconf);
    }
    rd_kafka_topic_conf_set_opaque(tc, h); /* record_free finds the client */

    /* Dead letters go through a producer actor: the one named, or one of
     * our own, linked to us, with the consumer's client settings. */
    if (c->dlq_topic && !c->dlq_producer) {
        rill_producer_conf_t *pc = rill_producer_conf_new();
        err = pc ? dlq_producer_conf(sys, c, pc, errstr, errstr_size)
                 : rill__fail(RILL_ENOMEM, errstr, errstr_size, "out of memory");
        if (!err)
            err = rill_producer_spawn(sys, pc, NULL, &k->dlq_own, errstr, errstr_size);
        else
            rill_producer_conf_destroy(pc);
        if (err) {
            free(h);
            goto fail;
        }
    }

    char kerr[512];
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, c->kconf, kerr, sizeof(kerr));
    if (!rk) {
        free(h);
        err = rill__fail(RILL_EKAFKA, errstr, errstr_size, "%s", kerr);
        goto fail;
    }
    c->kconf = NULL; /* rd_kafka_new took it */
    h->rk = rk;
    k->h = h;
    k->rk = rk;
    k->conf = c;
    rd_kafka_poll_set_consumer(rk); /* events and callbacks on the consumer queue */
    k->q = rd_kafka_queue_get_consumer(rk);

    rill_stage_t *spec = calloc(1, sizeof(*spec));
    if (!spec) {
        c = NULL; /* now k's */
        consumer_destroy(k);
        return rill__fail(RILL_ENOMEM, errstr, errstr_size, "out of memory");
    }
    spec->kind = &consumer_kind;
    spec->impl = k;
    rill_stage_opts_t o = {0};
    if (opts)
        o = *opts;
    /* Confirms arrive in the mailbox: room for one per record out. */
    uint32_t need = c->max_unconfirmed + 64;
    if (o.mailbox_capacity < need)
        o.mailbox_capacity = need;
    err = rill_stage_spawn(sys, spec, &o, aid);
    if (err)
        return rill__fail(err, errstr, errstr_size, "cannot spawn the consumer actor: %s",
                          rill_err2str(err));
    return RILL_OK;

fail:
    if (k) {
        if (!rill_aid_is_none(k->dlq_own))
            rill_stop(sys, k->dlq_own);
        free(k->buf.v);
        rill__tracker_free(&k->tr);
        free(k);
    }
    rill_consumer_conf_destroy(c);
    return err;
}

/* ------------------------------------------------------------------ */
/* Confirms and stats                                                  */
/* ------------------------------------------------------------------ */

rill_err_t rill_consumer_confirm(rill_system_t *sys, rill_aid_t consumer, const rill_elem_t *record)
{
    const rd_kafka_message_t *m = rill_record(record);
    if (!sys || !m || rill_aid_is_none(consumer))
        return RILL_EINVAL;
    rill_msg_t msg = {.type = K_CONFIRM, .arg = (uint64_t)m->offset, .corr = record->arg};
    return rill_tell(sys, consumer, &msg);
}

rill_err_t rill_consumer_confirm_upto(rill_system_t *sys, rill_aid_t consumer,
                                      const rill_elem_t *record, int64_t offset)
{
    if (!sys || !rill_record(record) || rill_aid_is_none(consumer) || offset < 0)
        return RILL_EINVAL;
    rill_msg_t msg = {.type = K_CONFIRM_UPTO, .arg = (uint64_t)offset, .corr = record->arg};
    return rill_tell(sys, consumer, &msg);
}

rill_err_t rill_consumer_confirm_batch(rill_system_t *sys, rill_aid_t consumer,
                                       const rill_elem_t *records, size_t n)
{
    if (!sys || rill_aid_is_none(consumer) || (!records && n))
        return RILL_EINVAL;
    if (!n)
        return RILL_OK;
    confirm_batch_t *b = malloc(sizeof(*b) + n * sizeof(b->v[0]));
    if (!b)
        return RILL_ENOMEM;
    b->n = n;
    for (size_t i = 0; i < n; i++) {
        const rd_kafka_message_t *m = rill_record(&records[i]);
        if (!m) {
            free(b);
            return RILL_EINVAL;
        }
        b->v[i].id = records[i].arg;
        b->v[i].offset = m->offset;
    }
    rill_msg_t msg = {.type = K_CONFIRM_BATCH, .payload = b, .dtor = free};
    rill_err_t err = rill_tell(sys, consumer, &msg);
    if (err)
        free(b);
    return err;
}

rill_err_t rill_consumer_stats(rill_system_t *sys, rill_aid_t consumer, rill_consumer_stats_t *out)
{
    if (!sys || rill_aid_is_none(consumer) || !out)
        return RILL_EINVAL;
    rill_msg_t q = {.type = K_STATS}, r;
    rill_err_t err = rill_ask_sync(sys, consumer, &q, 10000, &r);
    if (err)
        return err;
    if (r.type != K_STATS || !r.payload) {
        if (r.dtor)
            r.dtor(r.payload);
        return RILL_ESTATE;
    }
    *out = *(rill_consumer_stats_t *)r.payload;
    r.dtor(r.payload);
    return RILL_OK;
}

rill_err_t rill__consumer_dlq_producer(rill_system_t *sys, rill_aid_t consumer,
                                       rill_aid_t *producer)
{
    if (!sys || rill_aid_is_none(consumer) || !producer)
        return RILL_EINVAL;
    rill_msg_t q = {.type = K_STATS, .arg = STATS_ASK_DLQ_PRODUCER}, r;
    rill_err_t err = rill_ask_sync(sys, consumer, &q, 10000, &r);
    if (err)
        return err;
    if (r.dtor)
        r.dtor(r.payload);
    if (r.type != K_STATS || r.payload)
        return RILL_ESTATE;
    producer->id = r.arg;
    return RILL_OK;
}

/* ------------------------------------------------------------------ */
/* Origins                                                             */
/* ------------------------------------------------------------------ */

struct rill_origin {
    rill_system_t *sys;
    rill_aid_t consumer;
    uint64_t part_id;
    int64_t offset;
    _Atomic long refs;
    _Atomic int failed;
};

rill_origin_t *rill_origin_new(rill_system_t *sys, rill_aid_t consumer, const rill_elem_t *record)
{
    const rd_kafka_message_t *m = rill_record(record);
    if (!sys || !m || rill_aid_is_none(consumer))
        return NULL;
    rill_origin_t *o = malloc(sizeof(*o));
    if (!o)
        return NULL;
    o->sys = sys;
    o->consumer = consumer;
    o->part_id = record->arg;
    o->offset = m->offset;
    atomic_init(&o->refs, 1);
    atomic_init(&o->failed, 0);
    return o;
}

rill_origin_t *rill_origin_ref(rill_origin_t *o)
{
    if (o)
        atomic_fetch_add_explicit(&o->refs, 1, memory_order_relaxed);
    return o;
}

void rill_origin_fail(rill_origin_t *o)
{
    if (o)
        atomic_store_explicit(&o->failed, 1, memory_order_release);
}

/* ---- confirms collected over a batch of releases ---- */

struct rill__confirm_to {
    rill_system_t *sys;
    rill_aid_t consumer;
    confirm_batch_t *b;
    size_t cap;
};

/* Send one confirm the way every path does: the mailbox, or the control
 * queue when it is full; a consumer that is gone has nothing to confirm. */
static void send_confirm_msg(rill_system_t *sys, rill_aid_t consumer, rill_msg_t *msg)
{
    rill_err_t err = rill_tell(sys, consumer, msg);
    if (err == RILL_EFULL)
        err = rill_signal(sys, consumer, msg);
    if (err && msg->dtor)
        msg->dtor(msg->payload);
}

void rill__confirms_flush(rill__confirms_t *acc)
{
    for (size_t i = 0; i < acc->n; i++) {
        struct rill__confirm_to *t = &acc->to[i];
        if (!t->b || !t->b->n)
            continue;
        rill_msg_t msg = {.type = K_CONFIRM_BATCH, .payload = t->b, .dtor = free};
        t->b = NULL;
        t->cap = 0;
        send_confirm_msg(t->sys, t->consumer, &msg);
    }
}

void rill__confirms_free(rill__confirms_t *acc)
{
    rill__confirms_flush(acc);
    for (size_t i = 0; i < acc->n; i++)
        free(acc->to[i].b);
    free(acc->to);
    memset(acc, 0, sizeof(*acc));
}

/* Collect one confirm; 0, or -1 when out of memory (send it alone). */
static int confirms_add(rill__confirms_t *acc, rill_system_t *sys, rill_aid_t consumer, uint64_t id,
                        int64_t offset)
{
    struct rill__confirm_to *t = NULL;
    for (size_t i = 0; i < acc->n && !t; i++)
        if (rill_aid_eq(acc->to[i].consumer, consumer) && acc->to[i].sys == sys)
            t = &acc->to[i];
    if (!t) {
        if (acc->n == acc->cap) {
            size_t cap = acc->cap ? 2 * acc->cap : 2;
            struct rill__confirm_to *v = realloc(acc->to, cap * sizeof(*v));
            if (!v)
                return -1;
            acc->to = v;
            acc->cap = cap;
        }
        t = &acc->to[acc->n++];
        *t = (struct rill__confirm_to){.sys = sys, .consumer = consumer};
    }
    if (!t->b || t->b->n == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 64;
        confirm_batch_t *b = realloc(t->b, sizeof(*b) + cap * sizeof(b->v[0]));
        if (!b)
            return -1;
        if (!t->b)
            b->n = 0;
        t->b = b;
        t->cap = cap;
    }
    t->b->v[t->b->n].id = id;
    t->b->v[t->b->n].offset = offset;
    t->b->n++;
    return 0;
}

/* The last reference gone: confirm (unless failed), into acc or alone. */
static void origin_last(rill_origin_t *o, rill__confirms_t *acc)
{
    if (!atomic_load_explicit(&o->failed, memory_order_acquire) &&
        (!acc || confirms_add(acc, o->sys, o->consumer, o->part_id, o->offset))) {
        /* The consumer's mailbox has room for a confirm per record out, so
         * it is not full in practice; if it is, the control queue takes
         * it (confirms may come in any order). */
        rill_msg_t msg = {.type = K_CONFIRM, .arg = (uint64_t)o->offset, .corr = o->part_id};
        send_confirm_msg(o->sys, o->consumer, &msg);
    }
    free(o);
}

void rill__origin_release_into(rill_origin_t *o, rill__confirms_t *acc)
{
    if (o && atomic_fetch_sub_explicit(&o->refs, 1, memory_order_acq_rel) == 1)
        origin_last(o, acc);
}

void rill_origin_release(rill_origin_t *o)
{
    /* acq_rel: every holder's work (and fail) happens before the confirm. */
    if (o && atomic_fetch_sub_explicit(&o->refs, 1, memory_order_acq_rel) == 1)
        origin_last(o, NULL);
}
