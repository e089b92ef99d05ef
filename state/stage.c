/*
 * The stateful stage (rill_stage_stateful): a function per Kafka record
 * with a view of its partition's state, the records gathered into one
 * store transaction with their offsets, committed every commit_count
 * records or commit_ms, and when the input ends. The records' origins
 * wait in the stage until their transaction is committed, then are
 * confirmed: a record is confirmed when the state that holds it is
 * durable. A failed function or commit aborts the transaction and
 * releases them unconfirmed (they come again, from the stored offsets).
 *
 * Outputs go out at once (as flat_map's, through the stage's queue), each
 * with a reference of its input's origin; the stage keeps the input's own
 * reference until the commit.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <rill/kafka.h>

#include "../streams/kinds.h"
#include "state_int.h"

/* A partition the stage has seen: its state prefix and, while a
 * transaction is open, the offset the transaction will store. */
typedef struct spart {
    char *topic;
    int32_t partition;
    int64_t next; /* the offset after the last record applied */
    int dirty;    /* next changed in the open transaction */
    size_t prefix_len;
    uint8_t prefix[1 + RILL__TOPIC_MAX + 1 + 4];
} spart_t;

typedef struct stateful {
    /* parameters (the blueprint) */
    rill_store_t *store;
    rill_stateful_fn *fn;
    void *opaque;
    uint32_t commit_count;
    uint32_t commit_ms;
    /* a run's state */
    int owner;            /* this run holds the store's writer slot */
    void *txn;            /* the open write transaction, or NULL */
    rill_origin_t **held; /* origins of the records in txn */
    size_t n_held, cap_held;
    spart_t *parts;
    size_t n_parts, cap_parts;
    size_t last_part;
    rill_state_t view;
    rill__equeue_t q;
    rill_timer_t timer;
    int timer_armed;
    uint64_t gen; /* which transaction the armed timer is for */
    int upstream_done;
} stateful_t;

static void release_held(stateful_t *s)
{
    for (size_t i = 0; i < s->n_held; i++)
        rill_origin_release(s->held[i]);
    s->n_held = 0;
}

static void disarm(rill__stage_t *st, stateful_t *s)
{
    if (s->timer_armed && st->ctx)
        rill_timer_cancel(st->ctx, s->timer);
    s->timer_armed = 0;
    s->gen++;
}

/* Abort the open transaction: its records come again. */
static void txn_abort(stateful_t *s)
{
    if (s->txn) {
        s->store->ops->abort(s->txn);
        s->txn = NULL;
        atomic_fetch_add_explicit(&s->store->aborts, 1, memory_order_relaxed);
    }
    for (size_t i = 0; i < s->n_parts; i++)
        s->parts[i].dirty = 0;
    release_held(s);
}

static void stateful_destroy(void *impl)
{
    stateful_t *s = impl;
    if (!s)
        return;
    txn_abort(s);
    rill__equeue_free(&s->q);
    for (size_t i = 0; i < s->n_parts; i++)
        free(s->parts[i].topic);
    free(s->parts);
    free(s->held);
    if (s->owner)
        atomic_store_explicit(&s->store->busy, 0, memory_order_release);
    free(s);
}

static void *stateful_clone(const void *impl)
{
    const stateful_t *b = impl;
    stateful_t *s = calloc(1, sizeof(*s));
    if (s) {
        s->store = b->store;
        s->fn = b->fn;
        s->opaque = b->opaque;
        s->commit_count = b->commit_count;
        s->commit_ms = b->commit_ms;
    }
    return s;
}

static rill_err_t stateful_start(rill__stage_t *st)
{
    stateful_t *s = st->spec.impl;
    int idle = 0;
    /* One writer per store: a second stage over it would interleave its
     * transactions with ours. acq_rel: the previous owner's last
     * transaction happened before ours begin. */
    if (!atomic_compare_exchange_strong_explicit(&s->store->busy, &idle, 1, memory_order_acq_rel,
                                                 memory_order_acquire))
        return RILL_ESTATE;
    s->owner = 1;
    return rill__equeue_init(&s->q, st->window) ? RILL_ENOMEM : RILL_OK;
}

/* Commit the open transaction with its offsets, then confirm its records.
 * 0, or -1 after failing the stage. */
static int txn_commit(rill__stage_t *st, stateful_t *s)
{
    disarm(st, s);
    if (!s->txn)
        return 0;
    char why[300] = "";
    rill_err_t err = RILL_OK;
    for (size_t i = 0; !err && i < s->n_parts; i++) {
        spart_t *p = &s->parts[i];
        if (p->dirty)
            err = rill__state_put_offset(s->store, s->txn, p->topic, p->partition, p->next);
    }
    if (err) {
        snprintf(why, sizeof(why), "cannot store the offsets: %s", rill_err2str(err));
        txn_abort(s);
    } else {
        err = s->store->ops->commit(s->txn, why, sizeof(why));
        s->txn = NULL;
        for (size_t i = 0; i < s->n_parts; i++)
            s->parts[i].dirty = 0;
    }
    if (err) {
        atomic_fetch_add_explicit(&s->store->commit_errors, 1, memory_order_relaxed);
        release_held(s);
        rill__stage_fail(st, err, "commit of store %s failed: %s", s->store->name,
                         why[0] ? why : rill_err2str(err));
        return -1;
    }
    atomic_fetch_add_explicit(&s->store->commits, 1, memory_order_relaxed);
    for (size_t i = 0; i < s->n_held; i++)
        rill_origin_confirm(s->held[i]);
    s->n_held = 0;
    return 0;
}

static spart_t *part_of(stateful_t *s, const char *topic, int32_t partition)
{
    if (s->last_part < s->n_parts) {
        spart_t *p = &s->parts[s->last_part];
        if (p->partition == partition && !strcmp(p->topic, topic))
            return p;
    }
    for (size_t i = 0; i < s->n_parts; i++)
        if (s->parts[i].partition == partition && !strcmp(s->parts[i].topic, topic)) {
            s->last_part = i;
            return &s->parts[i];
        }
    if (s->n_parts == s->cap_parts) {
        size_t cap = s->cap_parts ? s->cap_parts * 2 : 8;
        spart_t *v = realloc(s->parts, cap * sizeof(*v));
        if (!v)
            return NULL;
        s->parts = v;
        s->cap_parts = cap;
    }
    spart_t *p = &s->parts[s->n_parts];
    memset(p, 0, sizeof(*p));
    uint8_t buf[RILL__ENCODED_KEY_MAX];
    p->prefix_len = rill__state_prefix(buf, RILL__NS_STATE, topic, partition);
    if (!p->prefix_len || !(p->topic = strdup(topic)))
        return NULL;
    memcpy(p->prefix, buf, p->prefix_len);
    p->partition = partition;
    s->last_part = s->n_parts;
    return &s->parts[s->n_parts++];
}

static int hold(stateful_t *s, rill_origin_t *o)
{
    if (s->n_held == s->cap_held) {
        size_t cap = s->cap_held ? s->cap_held * 2 : 256;
        rill_origin_t **v = realloc(s->held, cap * sizeof(*v));
        if (!v)
            return -1;
        s->held = v;
        s->cap_held = cap;
    }
    s->held[s->n_held++] = o;
    return 0;
}

static int txn_begin(rill__stage_t *st, stateful_t *s)
{
    char why[200] = "";
    rill_err_t err = s->store->ops->begin(s->store, 1, &s->txn, why, sizeof(why));
    if (err) {
        s->txn = NULL;
        rill__stage_fail(st, err, "cannot begin a transaction of store %s: %s", s->store->name,
                         why[0] ? why : rill_err2str(err));
        return -1;
    }
    rill_msg_t tick = {.type = RILL__STREAM_TICK, .arg = s->gen};
    if (rill_timer_start(st->ctx, s->commit_ms, 0, &tick, &s->timer) == RILL_OK)
        s->timer_armed = 1;
    return 0;
}

static void stateful_on_next(rill__stage_t *st, int in, rill_elem_t *e)
{
    (void)in;
    stateful_t *s = st->spec.impl;
    const rd_kafka_message_t *m = rill_record(e);
    if (!m || !e->origin) {
        rill_elem_release(e);
        rill__stage_fail(st, RILL_EINVAL,
                         "its input must be Kafka records with their origins (a Kafka source, "
                         "or stages that pass records on)");
        return;
    }
    const char *topic = rd_kafka_topic_name(m->rkt);
    int32_t partition = m->partition;
    int64_t offset = m->offset;
    spart_t *p = part_of(s, topic, partition);
    if (!p || (!s->txn && txn_begin(st, s))) {
        rill_elem_release(e);
        if (!p)
            rill__stage_fail(st, RILL_ENOMEM, "out of memory (or topic name too long) for %s [%d]",
                             topic, (int)partition);
        return;
    }
    rill_emitter_t out = {.st = st, .q = &s->q, .origin = e->origin};
    e->origin = NULL; /* the function never sees it */
    s->view.store = s->store;
    s->view.txn = s->txn;
    s->view.topic = p->topic;
    s->view.partition = partition;
    s->view.prefix_len = p->prefix_len;
    memcpy(s->view.key, p->prefix, p->prefix_len);
    size_t mark = s->q.count;
    rill__elem_scope_t sc;
    rill__elem_scope_enter(&sc, e, out.origin);
    rill_err_t err = s->fn(s->opaque, &s->view, e, &out);
    rill__elem_scope_leave(&sc);
    if (sc.verdict) {
        /* Rejected or retried: the source has it; what the function wrote
         * for it stays in the transaction. */
        rill__equeue_drop_since(&s->q, mark);
        rill_origin_release(out.origin);
        return;
    }
    if (!err)
        err = out.err;
    if (err) {
        rill__equeue_drop_since(&s->q, mark);
        txn_abort(s);
        rill__stage_fail_blame(st, out.origin, err, "stateful function returned %s",
                               rill_err_name(err));
        return;
    }
    if (hold(s, out.origin)) {
        rill_origin_release(out.origin);
        txn_abort(s);
        rill__stage_fail(st, RILL_ENOMEM, "out of memory for the records of a transaction");
        return;
    }
    p->next = offset + 1;
    p->dirty = 1;
    if (s->n_held >= s->commit_count)
        txn_commit(st, s);
}

static void stateful_on_msg(rill__stage_t *st, rill_msg_t *m)
{
    stateful_t *s = st->spec.impl;
    if (m->type != RILL__STREAM_TICK || m->arg != s->gen)
        return; /* a timer of a transaction committed since */
    s->timer_armed = 0;
    if (!st->finished && txn_commit(st, s) == 0)
        st->spec.kind->pump(st);
}

static void stateful_on_input_end(rill__stage_t *st, int in, rill_err_t code, const char *text)
{
    (void)in;
    stateful_t *s = st->spec.impl;
    if (code == RILL_OK && txn_commit(st, s))
        return;
    rill__queue_stage_end(st, &s->upstream_done, code, text);
}

static void stateful_pump(rill__stage_t *st)
{
    stateful_t *s = st->spec.impl;
    if (st->n_out == 0) {
        /* Nothing downstream (the stage ends the pipeline): outputs are
         * handled once made. */
        rill_elem_t e;
        while (rill__equeue_pop(&s->q, &e))
            rill_elem_confirm(&e);
    }
    rill__equeue_flush_out0(st, &s->q);
    if (s->upstream_done) {
        if (!s->q.count)
            rill__stage_complete(st);
        return;
    }
    size_t room = s->q.count < st->window ? st->window - s->q.count : 0;
    rill__stage_want(st, 0, (int64_t)room);
}

const rill__kind_t rill__stateful_kind = {.name = "stateful",
                                          .max_in = 1,
                                          .max_out = 1,
                                          .optional_out = 1,
                                          .start = stateful_start,
                                          .on_next = stateful_on_next,
                                          .on_input_end = stateful_on_input_end,
                                          .pump = stateful_pump,
                                          .on_msg = stateful_on_msg,
                                          .destroy = stateful_destroy,
                                          .clone = stateful_clone};

rill_stage_t *rill_stage_stateful(rill_store_t *store, const rill_stateful_opts_t *opts,
                                  rill_stateful_fn *fn, void *opaque)
{
    if (!store || !fn)
        return rill__stage_spec_bad(&rill__stateful_kind, RILL_EINVAL,
                                    "the store and the function must not be NULL");
    stateful_t *s = calloc(1, sizeof(*s));
    if (s) {
        s->store = store;
        s->fn = fn;
        s->opaque = opaque;
        s->commit_count = opts && opts->commit_count ? opts->commit_count : 1000;
        s->commit_ms = opts && opts->commit_ms ? opts->commit_ms : 100;
    }
    return rill__stage_spec_new(&rill__stateful_kind, s);
}
