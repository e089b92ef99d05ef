/*
 * The stateful core (core.h): records gathered into one store transaction
 * with their offsets; committed every commit_count records or commit_ms,
 * and when the input ends; the records' origins wait in the core until
 * their transaction is committed, then are confirmed: a record is
 * confirmed when the state that holds it is durable. A failure aborts the
 * transaction and releases them unconfirmed (they come again, from the
 * stored offsets).
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"

void rill__sf_init(rill__sf_t *c, rill_store_t *store, const rill_stateful_opts_t *opts)
{
    memset(c, 0, sizeof(*c));
    c->store = store;
    c->commit_count = opts && opts->commit_count ? opts->commit_count : 1000;
    c->commit_ms = opts && opts->commit_ms ? opts->commit_ms : 100;
}

void rill__sf_clone(rill__sf_t *c, const rill__sf_t *b)
{
    memset(c, 0, sizeof(*c));
    c->store = b->store;
    c->commit_count = b->commit_count;
    c->commit_ms = b->commit_ms;
}

static void release_held(rill__sf_t *c)
{
    for (size_t i = 0; i < c->n_held; i++)
        rill_origin_release(c->held[i]);
    c->n_held = 0;
}

static void disarm(rill__sf_t *c)
{
    if (c->timer_armed && c->st && c->st->ctx)
        rill_timer_cancel(c->st->ctx, c->timer);
    c->timer_armed = 0;
    c->gen++;
}

void rill__sf_abort(rill__sf_t *c)
{
    if (c->txn) {
        c->store->ops->abort(c->txn);
        c->txn = NULL;
        atomic_fetch_add_explicit(&c->store->aborts, 1, memory_order_relaxed);
    }
    for (size_t i = 0; i < c->n_parts; i++)
        c->parts[i].dirty = 0;
    release_held(c);
}

void rill__sf_fini(rill__sf_t *c)
{
    rill__sf_abort(c);
    rill__equeue_free(&c->q);
    for (size_t i = 0; i < c->n_parts; i++)
        free(c->parts[i].topic);
    free(c->parts);
    free(c->held);
    c->parts = NULL;
    c->held = NULL;
    c->n_parts = c->n_held = 0;
    if (c->owner)
        atomic_store_explicit(&c->store->busy, 0, memory_order_release);
    c->owner = 0;
}

rill_err_t rill__sf_start(rill__sf_t *c, rill__stage_t *st)
{
    c->st = st;
    int idle = 0;
    /* One writer per store: a second stage over it would interleave its
     * transactions with ours. acq_rel: the previous owner's last
     * transaction happened before ours begin. */
    if (!atomic_compare_exchange_strong_explicit(&c->store->busy, &idle, 1, memory_order_acq_rel,
                                                 memory_order_acquire))
        return RILL_ESTATE;
    c->owner = 1;
    return rill__equeue_init(&c->q, st->window) ? RILL_ENOMEM : RILL_OK;
}

int rill__sf_commit(rill__sf_t *c)
{
    disarm(c);
    if (!c->txn)
        return 0;
    char why[300] = "";
    rill_err_t err = RILL_OK;
    for (size_t i = 0; !err && i < c->n_parts; i++) {
        rill__sf_part_t *p = &c->parts[i];
        if (p->dirty)
            err = rill__state_put_offset(c->store, c->txn, p->topic, p->partition, p->next);
    }
    if (err) {
        snprintf(why, sizeof(why), "cannot store the offsets: %s", rill_err2str(err));
        rill__sf_abort(c);
    } else {
        err = c->store->ops->commit(c->txn, why, sizeof(why));
        c->txn = NULL;
        for (size_t i = 0; i < c->n_parts; i++)
            c->parts[i].dirty = 0;
    }
    if (err) {
        atomic_fetch_add_explicit(&c->store->commit_errors, 1, memory_order_relaxed);
        release_held(c);
        rill__stage_fail(c->st, err, "commit of store %s failed: %s", c->store->name,
                         why[0] ? why : rill_err2str(err));
        return -1;
    }
    atomic_fetch_add_explicit(&c->store->commits, 1, memory_order_relaxed);
    for (size_t i = 0; i < c->n_held; i++)
        rill_origin_confirm(c->held[i]);
    c->n_held = 0;
    return 0;
}

const rd_kafka_message_t *rill__sf_record(rill__sf_t *c, rill_elem_t *e)
{
    const rd_kafka_message_t *m = rill_record(e);
    if (!m || !e->origin) {
        rill_elem_release(e);
        rill__stage_fail(c->st, RILL_EINVAL,
                         "its input must be Kafka records with their origins (a Kafka source, "
                         "or stages that pass records on)");
        return NULL;
    }
    return m;
}

rill__sf_part_t *rill__sf_part(rill__sf_t *c, const char *topic, int32_t partition)
{
    if (c->last_part < c->n_parts) {
        rill__sf_part_t *p = &c->parts[c->last_part];
        if (p->partition == partition && !strcmp(p->topic, topic))
            return p;
    }
    for (size_t i = 0; i < c->n_parts; i++)
        if (c->parts[i].partition == partition && !strcmp(c->parts[i].topic, topic)) {
            c->last_part = i;
            return &c->parts[i];
        }
    if (c->n_parts == c->cap_parts) {
        size_t cap = c->cap_parts ? c->cap_parts * 2 : 8;
        rill__sf_part_t *v = realloc(c->parts, cap * sizeof(*v));
        if (!v)
            goto fail;
        c->parts = v;
        c->cap_parts = cap;
    }
    rill__sf_part_t *p = &c->parts[c->n_parts];
    memset(p, 0, sizeof(*p));
    uint8_t buf[RILL__ENCODED_KEY_MAX];
    p->prefix_len = rill__state_prefix(buf, RILL__NS_STATE, topic, partition);
    if (!p->prefix_len || !(p->topic = strdup(topic)))
        goto fail;
    memcpy(p->prefix, buf, p->prefix_len);
    p->partition = partition;
    c->last_part = c->n_parts;
    return &c->parts[c->n_parts++];
fail:
    rill__stage_fail(c->st, RILL_ENOMEM, "out of memory (or a topic name too long) for %s [%d]",
                     topic, (int)partition);
    return NULL;
}

rill_state_t *rill__sf_view(rill__sf_t *c, rill__sf_part_t *p)
{
    if (!c->txn) {
        char why[200] = "";
        rill_err_t err = c->store->ops->begin(c->store, 1, &c->txn, why, sizeof(why));
        if (err) {
            c->txn = NULL;
            rill__stage_fail(c->st, err, "cannot begin a transaction of store %s: %s",
                             c->store->name, why[0] ? why : rill_err2str(err));
            return NULL;
        }
        rill_msg_t tick = {.type = RILL__STREAM_TICK, .arg = c->gen};
        if (rill_timer_start(c->st->ctx, c->commit_ms, 0, &tick, &c->timer) == RILL_OK)
            c->timer_armed = 1;
    }
    c->view.store = c->store;
    c->view.txn = c->txn;
    c->view.topic = p->topic;
    c->view.partition = p->partition;
    c->view.prefix_len = p->prefix_len;
    memcpy(c->view.key, p->prefix, p->prefix_len);
    return &c->view;
}

int rill__sf_applied(rill__sf_t *c, rill__sf_part_t *p, int64_t offset, rill_origin_t *o)
{
    if (c->n_held == c->cap_held) {
        size_t cap = c->cap_held ? c->cap_held * 2 : 256;
        rill_origin_t **v = realloc(c->held, cap * sizeof(*v));
        if (!v) {
            rill_origin_release(o);
            rill__sf_abort(c);
            rill__stage_fail(c->st, RILL_ENOMEM, "out of memory for the records of a transaction");
            return -1;
        }
        c->held = v;
        c->cap_held = cap;
    }
    c->held[c->n_held++] = o;
    p->next = offset + 1;
    p->dirty = 1;
    return c->n_held >= c->commit_count ? rill__sf_commit(c) : 0;
}

int rill__sf_on_msg(rill__sf_t *c, rill_msg_t *m)
{
    if (m->type != RILL__STREAM_TICK || (m->arg & 1ull << 63))
        return 0; /* not the commit timer's (a kind's own ticks set the top bit) */
    if (m->arg != c->gen)
        return 1; /* a timer of a transaction committed since */
    c->timer_armed = 0;
    if (!c->st->finished && rill__sf_commit(c) == 0)
        c->st->spec.kind->pump(c->st);
    return 1;
}

void rill__sf_input_end(rill__sf_t *c, rill_err_t code, const char *text)
{
    if (code == RILL_OK && rill__sf_commit(c))
        return;
    rill__queue_stage_end(c->st, &c->upstream_done, code, text);
}

void rill__sf_pump(rill__sf_t *c)
{
    rill__stage_t *st = c->st;
    if (st->n_out == 0) {
        /* Nothing downstream (the stage ends the pipeline): outputs are
         * handled once made. */
        rill_elem_t e;
        while (rill__equeue_pop(&c->q, &e))
            rill_elem_confirm(&e);
    }
    rill__equeue_flush_out0(st, &c->q);
    if (c->upstream_done) {
        if (!c->q.count)
            rill__stage_complete(st);
        return;
    }
    size_t room = c->q.count < st->window ? st->window - c->q.count : 0;
    rill__stage_want(st, 0, (int64_t)room);
}
