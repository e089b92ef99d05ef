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
    c->before_commit = b->before_commit;
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

/* Requests of a flush not taken by the producer: freed (their changes
 * are the aborted transaction's). */
static void drop_flush(rill__sf_t *c)
{
    for (size_t i = c->next_send; i < c->n_reqs; i++)
        rill_produce_free(c->reqs[i]);
    free(c->reqs);
    c->reqs = NULL;
    c->n_reqs = c->next_send = 0;
    c->awaiting = 0;
    c->flushing = 0;
}

void rill__sf_abort(rill__sf_t *c)
{
    drop_flush(c);
    rill__cl_batch_clear(&c->changes);
    c->changes_lost = 0;
    if (c->txn) {
        c->store->ops->abort(c->txn);
        c->txn = NULL;
        atomic_fetch_add_explicit(&c->store->aborts, 1, memory_order_relaxed);
    }
    for (size_t i = 0; i < c->n_parts; i++)
        c->parts[i].dirty = 0;
    release_held(c);
}

/* Drop the held messages (their payloads freed). */
static void drop_held_msgs(rill__sf_t *c)
{
    for (size_t i = 0; i < c->n_held_msgs; i++)
        if (c->held_msgs[i].dtor && c->held_msgs[i].payload)
            c->held_msgs[i].dtor(c->held_msgs[i].payload);
    c->n_held_msgs = 0;
}

void rill__sf_fini(rill__sf_t *c)
{
    rill__sf_abort(c);
    drop_held_msgs(c);
    free(c->held_msgs);
    c->held_msgs = NULL;
    c->cap_held_msgs = 0;
    rill__equeue_free(&c->q);
    rill__equeue_free(&c->deferred);
    rill__cl_batch_free(&c->changes);
    if (c->producer.id && c->st && c->st->sys)
        rill_stop(c->st->sys, c->producer); /* it delivers what it holds, then ends */
    c->producer = RILL_AID_NONE;
    for (size_t i = 0; i < c->n_parts; i++)
        free(c->parts[i].topic);
    free(c->parts);
    free(c->held);
    c->parts = NULL;
    c->view_part = NULL;
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
    if (rill__equeue_init(&c->q, st->window) || rill__equeue_init(&c->deferred, st->window))
        return RILL_ENOMEM;
    if (!c->store->cl)
        return RILL_OK;
    /* The changelog's producer, linked to the stage: a producer that
     * fails fails the stage. */
    char why[256] = "";
    rill_producer_conf_t *pc = rill__changelog_producer_conf(c->store->cl, why, sizeof(why));
    if (!pc) {
        rill_log(RILL_LOG_WARNING, "state.store", "store %s: changelog producer: %s",
                 c->store->name, why);
        return RILL_EKAFKA;
    }
    /* Restores are applied with a partition's first record, and by this
     * tick for partitions that have none left to come. */
    rill_msg_t tick = {.type = RILL__STREAM_TICK, .arg = 1ull << 61};
    rill_timer_start(st->ctx, 50, 50, &tick, NULL);
    rill_stage_opts_t o = {.link_to = st->self, .mailbox_capacity = 4096};
    rill_err_t err = rill_producer_spawn(st->sys, pc, &o, &c->producer, why, sizeof(why));
    if (err)
        rill_log(RILL_LOG_WARNING, "state.store", "store %s: changelog producer: %s",
                 c->store->name, why);
    return err;
}

static void record_change(void *opaque, const uint8_t *key, size_t key_len, const void *value,
                          size_t value_len)
{
    rill__sf_t *c = opaque;
    if (rill__cl_batch_add(&c->changes, key, key_len, value, value_len, value == NULL))
        c->changes_lost = 1;
}

/* The partition number in an encoded key (after the topic and its 0x00). */
static int32_t key_partition(const uint8_t *key, size_t kl)
{
    const uint8_t *z = memchr(key + 1, 0, kl - 1);
    if (!z || (size_t)(z - key) + 5 > kl)
        return 0;
    return (int32_t)((uint32_t)z[1] << 24 | (uint32_t)z[2] << 16 | (uint32_t)z[3] << 8 | z[4]);
}

/* Write the offsets (and changelog positions), commit, confirm. 0, or -1
 * after failing the stage. */
static int finish_commit(rill__sf_t *c)
{
    char why[300] = "";
    rill_err_t err = RILL_OK;
    for (size_t i = 0; !err && i < c->n_parts; i++) {
        rill__sf_part_t *p = &c->parts[i];
        if (!p->dirty)
            continue;
        err = rill__state_put_offset(c->store, c->txn, p->topic, p->partition, p->next);
        if (!err && c->store->cl && p->clpos > 0) {
            uint8_t k[RILL__ENCODED_KEY_MAX], v[8];
            size_t kl = rill__state_prefix(k, RILL__NS_CLPOS, p->topic, p->partition);
            rill__state_encode_i64(v, p->clpos);
            err = c->store->ops->put(c->txn, k, kl, v, sizeof(v));
        }
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
    drop_flush(c);
    rill__cl_batch_clear(&c->changes);
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

/* Hand the flush's requests to the producer while it takes them; when its
 * mailbox is full, again in a millisecond. 0, or -1 after failing. */
static int send_more(rill__sf_t *c)
{
    while (c->next_send < c->n_reqs) {
        rill_err_t err = rill_producer_send(c->st->sys, c->producer, c->reqs[c->next_send]);
        if (err == RILL_EFULL) {
            rill_msg_t tick = {.type = RILL__STREAM_TICK, .arg = 1ull << 62};
            if (!c->resend_armed &&
                rill_timer_start(c->st->ctx, 1, 0, &tick, &(rill_timer_t){0}) == RILL_OK)
                c->resend_armed = 1;
            return 0;
        }
        if (err) {
            rill__sf_abort(c);
            rill__stage_fail(c->st, err, "the changelog producer of store %s took no request: %s",
                             c->store->name, rill_err2str(err));
            return -1;
        }
        c->next_send++;
    }
    return 0;
}

/* Send the transaction's changes and each partition's offset record to
 * the changelog; the commit waits for their deliveries. 1, or -1 after
 * failing. */
static int start_flush(rill__sf_t *c)
{
    if (c->changes_lost) {
        rill__sf_abort(c);
        rill__stage_fail(c->st, RILL_ENOMEM, "out of memory for the changes of a transaction");
        return -1;
    }
    size_t n = c->changes.n;
    for (size_t i = 0; i < c->n_parts; i++)
        n += c->parts[i].dirty;
    if (n == 0)
        return finish_commit(c);
    if (!(c->reqs = calloc(n, sizeof(*c->reqs)))) {
        rill__sf_abort(c);
        rill__stage_fail(c->st, RILL_ENOMEM, "out of memory for a changelog flush");
        return -1;
    }
    const char *topic = c->store->cl->topic;
    uint64_t tag = (c->gen & 0xffffffffffffull) << 16;
    for (size_t i = 0; i < c->changes.n; i++) {
        rill__cl_change_t *ch = &c->changes.v[i];
        rill_produce_t *r = rill_produce_new(topic, key_partition(ch->key, ch->kl), ch->key, ch->kl,
                                             ch->val, ch->vl);
        if (r)
            rill_produce_set_reply(r, c->st->self, tag);
        c->reqs[c->n_reqs++] = r;
    }
    for (size_t i = 0; i < c->n_parts; i++) {
        rill__sf_part_t *p = &c->parts[i];
        if (!p->dirty)
            continue;
        uint8_t k[RILL__ENCODED_KEY_MAX], v[8];
        size_t kl = rill__state_prefix(k, RILL__NS_OFFSET, p->topic, p->partition);
        rill__state_encode_i64(v, p->next);
        rill_produce_t *r = rill_produce_new(topic, p->partition, k, kl, v, sizeof(v));
        if (r)
            rill_produce_set_reply(r, c->st->self, tag | (i + 1));
        c->reqs[c->n_reqs++] = r;
    }
    for (size_t i = 0; i < c->n_reqs; i++)
        if (!c->reqs[i]) {
            rill__sf_abort(c);
            rill__stage_fail(c->st, RILL_ENOMEM, "out of memory for a changelog flush");
            return -1;
        }
    c->flushing = 1;
    c->awaiting = (uint32_t)c->n_reqs;
    return send_more(c) ? -1 : 1;
}

int rill__sf_commit(rill__sf_t *c)
{
    if (c->flushing)
        return 1;
    disarm(c);
    if (!c->txn)
        return 0;
    if (c->before_commit && c->before_commit(c))
        return -1;
    return c->producer.id ? start_flush(c) : finish_commit(c);
}

int rill__sf_defer(rill__sf_t *c, rill_elem_t *e)
{
    if (!c->flushing && (!c->deferred.count || c->replaying))
        return 0; /* (while replaying, the queue's head is the one that came first) */
    if (!rill__equeue_push(&c->deferred, e) &&
        (rill__equeue_grow(&c->deferred) || !rill__equeue_push(&c->deferred, e))) {
        rill_elem_release(e);
        rill__stage_fail(c->st, RILL_ENOMEM, "out of memory for inputs waiting for a commit");
        return 1;
    }
    memset(e, 0, sizeof(*e));
    return 1;
}

int rill__sf_hold_msg(rill__sf_t *c, rill_msg_t *m)
{
    if (!c->flushing)
        return 0;
    rill_msg_t *v = rill__grow(c->held_msgs, &c->cap_held_msgs, c->n_held_msgs, sizeof(*v), 4);
    if (!v) {
        rill__stage_fail(c->st, RILL_ENOMEM, "out of memory for a message waiting for a commit");
        return 1; /* m's payload is freed with m */
    }
    c->held_msgs = v;
    v[c->n_held_msgs] = *m;
    v[c->n_held_msgs].payload = rill_msg_take(m);
    c->n_held_msgs++;
    return 1;
}

/* A flush ended with its commit: the inputs that waited go on, then the
 * held messages, then the input's end if it came meanwhile. */
static void after_flush(rill__sf_t *c)
{
    rill__stage_t *st = c->st;
    rill_elem_t e;
    c->replaying = 1;
    while (!c->flushing && !st->finished && rill__equeue_pop(&c->deferred, &e))
        st->spec.kind->on_next(st, 0, &e);
    c->replaying = 0;
    /* The held messages, in order, while no new flush starts. */
    size_t done = 0;
    while (!c->flushing && !st->finished && done < c->n_held_msgs) {
        rill_msg_t m = c->held_msgs[done++];
        st->spec.kind->on_msg(st, &m);
        if (m.dtor && m.payload)
            m.dtor(m.payload);
    }
    if (done) {
        memmove(c->held_msgs, c->held_msgs + done, (c->n_held_msgs - done) * sizeof(rill_msg_t));
        c->n_held_msgs -= done;
    }
    if (st->finished) {
        drop_held_msgs(c);
        while (rill__equeue_pop(&c->deferred, &e))
            rill_elem_release(&e);
    }
    if (c->end_after_flush && !c->flushing && !st->finished) {
        int r = rill__sf_commit(c);
        if (r == 0) {
            c->end_after_flush = 0;
            rill__queue_stage_end(st, &c->upstream_done, RILL_OK, NULL);
        }
    }
    if (!st->finished)
        st->spec.kind->pump(st);
}

static void on_delivery(rill__sf_t *c, const rill_delivery_t *d)
{
    uint64_t tag = (c->gen & 0xffffffffffffull) << 16;
    if (!c->flushing || (d->arg & ~0xffffull) != tag)
        return; /* of a flush aborted since */
    if (d->err) {
        rill__sf_abort(c);
        rill__stage_fail(c->st, RILL_EKAFKA, "changelog %s [%d] of store %s: %s",
                         c->store->cl->topic, (int)d->partition, c->store->name,
                         rd_kafka_err2str(d->err));
        return;
    }
    atomic_fetch_add_explicit(&c->store->cl->sent, 1, memory_order_relaxed);
    size_t part = (size_t)(d->arg & 0xffff);
    if (part && part <= c->n_parts)
        c->parts[part - 1].clpos = d->offset + 1;
    if (--c->awaiting == 0 && c->next_send == c->n_reqs && finish_commit(c) == 0)
        after_flush(c);
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
        c->view_part = NULL; /* the parts moved */
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

/* A restore's changes into the open transaction, then the keys of a flush
 * cut short re-asserted with their value now (or a tombstone) in this
 * transaction's changes, for the changelog. 0, or -1. */
static int apply_restored(rill__sf_t *c, const rill__restored_t *r)
{
    for (size_t i = 0; i < r->changes.n; i++) {
        const rill__cl_change_t *ch = &r->changes.v[i];
        rill_err_t err = ch->tomb ? c->store->ops->del(c->txn, ch->key, ch->kl)
                                  : c->store->ops->put(c->txn, ch->key, ch->kl, ch->val, ch->vl);
        if (err && err != RILL_ENOENT)
            return -1;
    }
    for (size_t i = 0; i < r->reassert.n; i++) {
        const rill__cl_change_t *ch = &r->reassert.v[i];
        const void *v = NULL;
        size_t vl = 0;
        rill_err_t err = c->store->ops->get(c->txn, ch->key, ch->kl, &v, &vl);
        if (err && err != RILL_ENOENT)
            return -1;
        record_change(c, ch->key, ch->kl, err ? NULL : v, err ? 0 : vl);
    }
    return 0;
}

/* Begin the transaction if none is open (and its commit timer). 0, or -1
 * after failing the stage. */
static int txn_open(rill__sf_t *c)
{
    if (c->txn)
        return 0;
    char why[200] = "";
    rill_err_t err = c->store->ops->begin(c->store, 1, &c->txn, why, sizeof(why));
    if (err) {
        c->txn = NULL;
        rill__stage_fail(c->st, err, "cannot begin a transaction of store %s: %s", c->store->name,
                         why[0] ? why : rill_err2str(err));
        return -1;
    }
    rill_msg_t tick = {.type = RILL__STREAM_TICK, .arg = c->gen};
    if (rill_timer_start(c->st->ctx, c->commit_ms, 0, &tick, &c->timer) == RILL_OK)
        c->timer_armed = 1;
    return 0;
}

/* Apply r (taken) for its partition in the open transaction. 0, or -1
 * after failing the stage. */
static int restore_into(rill__sf_t *c, rill__restored_t *r)
{
    int bad = apply_restored(c, r);
    if (!bad && r->reassert.n) {
        /* The re-assertions go out with an offset record of their own, so
         * they are a complete transaction (when the partition has an
         * offset: without, it has no state, and they are tombstones). */
        uint8_t k[RILL__ENCODED_KEY_MAX];
        size_t kl = rill__state_prefix(k, RILL__NS_OFFSET, r->topic, r->partition);
        const void *v;
        size_t vl;
        rill__sf_part_t *p;
        if (c->store->ops->get(c->txn, k, kl, &v, &vl) == RILL_OK && vl == 8 &&
            (p = rill__sf_part(c, r->topic, r->partition))) {
            p->next = rill__state_decode_i64(v);
            p->dirty = 1;
        }
    }
    if (bad) {
        rill__sf_abort(c);
        rill__stage_fail(c->st, RILL_EIO, "restoring %s [%d] into store %s failed", r->topic,
                         (int)r->partition, c->store->name);
    }
    rill__restored_free(r);
    return bad ? -1 : 0;
}

/* Every restore waiting goes into the store, also for partitions whose
 * records are all consumed already (no record would bring it in). */
static void restore_pending(rill__sf_t *c)
{
    rill__restored_t *r;
    while (!c->flushing && !c->st->finished && (r = rill__changelog_take(c->store, NULL, 0)))
        if (txn_open(c) || restore_into(c, r))
            return;
}

rill_state_t *rill__sf_view(rill__sf_t *c, rill__sf_part_t *p)
{
    if (txn_open(c))
        return NULL;
    c->view.txn = c->txn;
    if (c->view_part != p) {
        /* The view's key buffer keeps the prefix: a key is written
         * after it. */
        c->view.store = c->store;
        c->view.topic = p->topic;
        c->view.partition = p->partition;
        c->view.prefix_len = p->prefix_len;
        memcpy(c->view.key, p->prefix, p->prefix_len);
        c->view_part = p;
    }
    if (c->store->cl) {
        c->view.on_change = record_change;
        c->view.change_opaque = c;
        /* What a restore read for this partition goes in first. Only
         * when a restore was made pending since this partition last
         * found none (acquire: pairs with the restore's release). */
        uint64_t gen = atomic_load_explicit(&c->store->cl->pending_gen, memory_order_acquire);
        if (gen != p->cl_gen) {
            rill__restored_t *r = rill__changelog_take(c->store, p->topic, p->partition);
            if (!r)
                p->cl_gen = gen;
            else if (restore_into(c, r))
                return NULL;
        }
    }
    return &c->view;
}

int rill__sf_enter(rill__sf_t *c, rill_elem_t *e, rill__sf_kind_part_fn *kind_part,
                   rill__sf_rec_t *r)
{
    if (rill__sf_defer(c, e))
        return 0; /* a changelog flush is under way: it comes again after it */
    const rd_kafka_message_t *m = rill__sf_record(c, e);
    if (!m)
        return 0;
    r->m = m;
    r->offset = m->offset;
    r->p = rill__sf_part(c, rd_kafka_topic_name(m->rkt), m->partition);
    r->kind_part = NULL;
    if (r->p && kind_part && !(r->kind_part = kind_part(c, r->p)))
        r->p = NULL;
    r->view = r->p ? rill__sf_view(c, r->p) : NULL;
    if (!r->view) {
        rill_elem_release(e);
        return 0;
    }
    r->origin = e->origin;
    e->origin = NULL; /* the kind's function never sees it */
    return 1;
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
    if (m->type == RILL_MSG_DELIVERY && m->payload) {
        on_delivery(c, m->payload);
        return 1;
    }
    if (m->type == RILL__STREAM_TICK && m->arg == 1ull << 61) {
        restore_pending(c);
        return 1;
    }
    if (m->type == RILL__STREAM_TICK && m->arg == 1ull << 62) {
        c->resend_armed = 0;
        if (c->flushing)
            send_more(c);
        return 1;
    }
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
    if (code == RILL_OK) {
        int r = c->deferred.count ? 1 : rill__sf_commit(c);
        if (r == 1)
            c->end_after_flush = 1; /* after the flush (after_flush ends it) */
        if (r)
            return;
    }
    rill__queue_stage_end(c->st, &c->upstream_done, code, text);
}

void rill__sf_pump(rill__sf_t *c)
{
    rill__stage_t *st = c->st;
    if (st->n_out == 0 && st->hook.terminal) {
        /* Nothing downstream (the stage ends its pipeline): outputs are
         * handled once made. Elsewhere they wait for the subscriber, which
         * a pipeline connects after it spawned every stage. */
        rill_elem_t e;
        while (rill__equeue_pop(&c->q, &e))
            rill_elem_confirm(&e);
    }
    rill__equeue_flush_out0(st, &c->q);
    if (c->flushing || c->deferred.count)
        return; /* inputs wait for the commit */
    if (c->upstream_done) {
        if (!c->q.count)
            rill__stage_complete(st);
        return;
    }
    size_t room = c->q.count < st->window ? st->window - c->q.count : 0;
    rill__stage_want(st, 0, (int64_t)room);
}
