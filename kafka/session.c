/*
 * A consumer's client session: the librdkafka consumer, its queue and the
 * handle its records share, with rill's settings applied; and parking, so
 * that a pipeline restarted by its supervisor keeps its client.
 *
 * Why park: a client that leaves its group on every restart costs a
 * rebalance each time (with librdkafka's mock cluster, the embedded
 * broker, a group whose last member left waits session.timeout.ms before
 * anyone may join again: 44 s with the defaults). A parked session keeps
 * its membership and assignment: its partitions are paused, a keeper
 * actor serves its queue (rebalances, max.poll.interval.ms), and the next
 * run of the same blueprint takes it over and seeks each partition back to
 * the first record not confirmed. If no run takes it within
 * rill.restart.keep.ms, or the blueprint is retired, it is closed (the
 * group then rebalances as for any departure).
 *
 * librdkafka serves callbacks (rebalance, commit results) inside the polls
 * of whoever polls the session: the consumer actor while it runs, the
 * keeper while the session is parked; the callbacks go to that owner.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kafka_int.h"

#define KEEPER_TICK_MS 100
/* A close gets at least this long to leave its group. */
#define CLOSE_MIN_MS   500

struct rill__ksession {
    rd_kafka_t *rk;
    rd_kafka_queue_t *q; /* the consumer queue; the main queue forwards to it */
    rill__khandle_t *h;
    const rill__ksession_ops_t *ops;
    void *owner;
    int reused; /* subscribed or assigned by an earlier run */
    /* parked (read by the keeper under its holder's lock) */
    uint64_t park_gen; /* which parking: a keeper serves its own only */
    int64_t park_deadline_ms;
    uint32_t close_ms;
    rd_kafka_topic_partition_list_t *resume;
    rill__khealth_t health; /* served by whoever polls, like the callbacks */
};

/* Where a blueprint's runs leave their session for the next one. The
 * parked session is reached only through the holder, under its lock: a
 * keeper never touches a session that was taken from it. */
struct rill__kholder {
    _Atomic int refs;
    pthread_mutex_t mu;
    rill__ksession_t *parked;
    uint64_t gen; /* parkings so far */
    /* Records processing failed on, across the blueprint's runs (under
     * mu); n_fails is also read without the lock, for a fast "none". */
    rill__kfail_t *fails;
    size_t cap_fails;
    _Atomic size_t n_fails;
    /* Records confirmed ahead by the last run, per partition (under mu);
     * n_ahead is also read without the lock. */
    struct kahead {
        char *topic;
        int32_t partition;
        int64_t *offs;
        size_t n, next; /* next: where the next look starts (polls go up) */
    } * ahead;
    size_t cap_ahead;
    _Atomic size_t n_ahead;
};

/* ---- callbacks, to whoever owns the session now ---- */

static void keeper_rebalance(rill__ksession_t *s, rd_kafka_resp_err_t err,
                             rd_kafka_topic_partition_list_t *parts);

static void rebalance_tramp(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                            rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    (void)rk;
    rill__ksession_t *s = opaque;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS)
        s->h->assigned_once = 1;
    if (s->ops && s->ops->rebalance)
        s->ops->rebalance(s->owner, err, parts);
    else
        keeper_rebalance(s, err, parts);
}

static void commit_tramp(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *offsets, void *opaque)
{
    (void)rk;
    rill__ksession_t *s = opaque;
    if (s->ops && s->ops->commit)
        s->ops->commit(s->owner, err, offsets);
}

/* Errors (librdkafka hands them to an error callback, not to
 * rd_kafka_consumer_poll, unless they are about a partition being fetched)
 * and statistics: counted here, errors also told to the owner. */
static void error_tramp(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)rk;
    rill__ksession_t *s = opaque;
    rill__khealth_error(&s->health, (rd_kafka_resp_err_t)err, reason);
    if (s->ops && s->ops->error)
        s->ops->error(s->owner, (rd_kafka_resp_err_t)err, reason);
}

static int stats_tramp(rd_kafka_t *rk, char *json, size_t len, void *opaque)
{
    (void)rk;
    rill__khealth_stats(&((rill__ksession_t *)opaque)->health, json, len);
    return 0; /* librdkafka frees json */
}

rill__khealth_t *rill__ksession_health(rill__ksession_t *s)
{
    return &s->health;
}

/* ---- making one ---- */

rd_kafka_error_t *rill__kafka_take(rd_kafka_t *rk, const rd_kafka_topic_partition_list_t *parts)
{
    if (rill__kafka_cooperative(rk))
        return rd_kafka_incremental_assign(rk, parts);
    rd_kafka_assign(rk, parts);
    return NULL;
}

void rill__kafka_let_go(rd_kafka_t *rk, const rd_kafka_topic_partition_list_t *parts)
{
    if (rill__kafka_cooperative(rk)) {
        rd_kafka_error_t *e = rd_kafka_incremental_unassign(rk, parts);
        if (e)
            rd_kafka_error_destroy(e);
    } else {
        rd_kafka_assign(rk, NULL);
    }
}

int rill__kafka_cooperative(rd_kafka_t *rk)
{
    const char *proto = rd_kafka_rebalance_protocol(rk);
    return proto && !strcmp(proto, "COOPERATIVE");
}

int rill__kafka_sticky_safe(void)
{
    return rd_kafka_version() >= RILL__STICKY_SAFE_VERSION;
}

/*
 * The assignment strategy. librdkafka before 2.3.0 aborts the process
 * (rd_kafka_sticky_assignor_state_destroy: Assertion 'assignor_state',
 * librdkafka #4312, fixed by #4381 in 2.3.0) when a cooperative-sticky
 * member that has joined its group but not yet received an assignment is
 * destroyed: a stop, a restart during a rebalance. So rill's default,
 * where librdkafka left it at its own (range,roundrobin), is
 * cooperative-sticky from 2.3.0 and range below (eager: every rebalance
 * revokes everything, which rill handles the same way). An application
 * that sets cooperative-sticky itself on an older librdkafka keeps it,
 * with a warning on stderr; its clients that were never assigned anything
 * are then abandoned rather than destroyed (*sticky_unsafe).
 */
static rill_err_t pick_strategy(rd_kafka_conf_t *kc, int *sticky_unsafe, char *errstr,
                                size_t errstr_size)
{
    char strat[256] = "";
    size_t sz = sizeof(strat);
    if (rd_kafka_conf_get(kc, "partition.assignment.strategy", strat, &sz) != RD_KAFKA_CONF_OK)
        return RILL_OK;
    if (!strcmp(strat, "range,roundrobin"))
        return rill__conf_set(kc, "partition.assignment.strategy",
                              rill__kafka_sticky_safe() ? "cooperative-sticky" : "range", errstr,
                              errstr_size);
    if (strstr(strat, "cooperative-sticky") && !rill__kafka_sticky_safe()) {
        *sticky_unsafe = 1;
        rill_log(RILL_LOG_WARNING, "kafka.consumer",
                 "partition.assignment.strategy=%s on librdkafka %s: before "
                 "2.3.0 closing a member that joined but has no assignment yet aborts the "
                 "process (librdkafka #4312); such clients are left undestroyed",
                 strat, rd_kafka_version_str());
    }
    return RILL_OK;
}

rill__ksession_t *rill__ksession_new(const rill_consumer_conf_t *c, char *errstr,
                                     size_t errstr_size)
{
    rill__ksession_t *s = calloc(1, sizeof(*s));
    rill__khandle_t *h = rill__khandle_new();
    rd_kafka_conf_t *kc = rd_kafka_conf_dup(c->kconf);
    rill_err_t err =
        s && h && kc ? RILL_OK : rill__fail(RILL_ENOMEM, errstr, errstr_size, "out of memory");
    /* A consumer of fixed partitions still has a group id: its committed
     * offsets are stored under it. */
    if (!err && !c->have_group)
        err = rill__conf_set(kc, "group.id", "rill-fixed-partitions", errstr, errstr_size);
    /* Prefetch limits and, from librdkafka 2.2.0, fetch.queue.backoff.ms
     * (conf.c says which and why). */
    if (!err)
        err = rill__consumer_fetch_defaults(c, kc, errstr, errstr_size);
    /* rill drives offsets: librdkafka must not commit or store on its own. */
    const char *forced[] = {"enable.auto.commit", "false", "enable.auto.offset.store", "false",
                            NULL};
    if (!err)
        err = rill__conf_apply(kc, forced, errstr, errstr_size);
    int sticky_unsafe = 0;
    if (!err)
        err = pick_strategy(kc, &sticky_unsafe, errstr, errstr_size);
    if (err) {
        free(s);
        free(h);
        if (kc)
            rd_kafka_conf_destroy(kc);
        return NULL;
    }
    rd_kafka_conf_set_opaque(kc, s);
    rd_kafka_conf_set_rebalance_cb(kc, rebalance_tramp);
    rd_kafka_conf_set_offset_commit_cb(kc, commit_tramp);
    rd_kafka_conf_set_error_cb(kc, error_tramp);
    rill__khealth_conf(kc, c->have_stats_interval, stats_tramp);
    rill__kclient_telemetry_default(kc, rill__consumer_key_set(c, "enable.metrics.push"));
    rill__kafka_quiet_log(kc);
    rd_kafka_topic_conf_t *tc = rd_kafka_conf_get_default_topic_conf(kc);
    if (!tc) {
        tc = rd_kafka_topic_conf_new();
        rd_kafka_conf_set_default_topic_conf(kc, tc);
        tc = rd_kafka_conf_get_default_topic_conf(kc);
    }
    rd_kafka_topic_conf_set_opaque(tc, h); /* rill__record_free finds the client */
    char kerr[512];
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, kc, kerr, sizeof(kerr));
    if (!rk) {
        rd_kafka_conf_destroy(kc);
        free(s);
        free(h);
        rill__fail(RILL_EKAFKA, errstr, errstr_size, "%s", kerr);
        return NULL;
    }
    h->rk = rk;
    rill__khealth_consumer(&s->health, rk);
    h->sticky_unsafe = sticky_unsafe;
    s->h = h;
    s->rk = rk;
    rd_kafka_poll_set_consumer(rk); /* events and callbacks on the consumer queue */
    s->q = rd_kafka_queue_get_consumer(rk);
    return s;
}

rd_kafka_t *rill__ksession_rk(const rill__ksession_t *s)
{
    return s->rk;
}

rd_kafka_queue_t *rill__ksession_queue(const rill__ksession_t *s)
{
    return s->q;
}

rill__khandle_t *rill__ksession_handle(const rill__ksession_t *s)
{
    return s->h;
}

int rill__ksession_reused(const rill__ksession_t *s)
{
    return s->reused;
}

const rd_kafka_topic_partition_list_t *rill__ksession_resume(const rill__ksession_t *s)
{
    return s->resume;
}

void rill__ksession_set_owner(rill__ksession_t *s, const rill__ksession_ops_t *ops, void *owner)
{
    s->ops = ops;
    s->owner = owner;
}

/* ---- closing ---- */

/* A rebalance event of a close: the owner is told (it commits what was
 * confirmed, unless the partitions were lost), then they are let go. */
static void close_rebalance(rill__ksession_t *s, rd_kafka_event_t *ev, int64_t deadline_ms)
{
    rd_kafka_topic_partition_list_t *parts = rd_kafka_event_topic_partition_list(ev);
    rd_kafka_resp_err_t err = rd_kafka_event_error(ev);
    if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS && s->ops && s->ops->final_revoke)
        s->ops->final_revoke(s->owner, parts, rd_kafka_assignment_lost(s->rk), deadline_ms);
    if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS)
        rill__kafka_let_go(s->rk, parts);
    else
        rd_kafka_assign(s->rk, NULL);
}

void rill__ksession_close(rill__ksession_t *s, int64_t deadline_ms)
{
    if (!s)
        return;
    /* Leave through a queue we poll ourselves: rd_kafka_consumer_close can
     * block without limit when the brokers are unreachable. The final
     * revoke goes to the owner (it commits what was confirmed). The close
     * gets CLOSE_MIN_MS even when the final commit used up the deadline:
     * a close whose revoke is never served never ends (see reaping). */
    int64_t min_end = rill__now_ms() + CLOSE_MIN_MS;
    if (deadline_ms < min_end)
        deadline_ms = min_end;
    rd_kafka_queue_t *cq = rd_kafka_queue_new(s->rk);
    rd_kafka_error_t *e = rd_kafka_consumer_close_queue(s->rk, cq);
    if (e) {
        /* Not a group member (fixed partitions), or closed already. */
        rd_kafka_error_destroy(e);
    } else {
        while (!rd_kafka_consumer_closed(s->rk)) {
            int left = rill__ms_left(deadline_ms);
            if (left == 0)
                break;
            rd_kafka_event_t *ev = rd_kafka_queue_poll(cq, left < 100 ? left : 100);
            if (!ev)
                continue;
            if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_REBALANCE)
                close_rebalance(s, ev, deadline_ms);
            rd_kafka_event_destroy(ev);
        }
        if (!rd_kafka_consumer_closed(s->rk)) {
            /* The reaper goes on serving the close (nobody owns it now). */
            rill__ksession_set_owner(s, NULL, NULL);
            s->h->close_q = cq;
            cq = NULL;
        }
    }
    if (cq)
        rd_kafka_queue_destroy(cq);
    rill__ksession_free(s);
}

void rill__ksession_free(rill__ksession_t *s)
{
    if (!s)
        return;
    if (s->resume)
        rd_kafka_topic_partition_list_destroy(s->resume);
    if (s->q)
        rd_kafka_queue_destroy(s->q);
    rill__khealth_free(&s->health);
    rill__khandle_unref(s->h); /* the client goes with the last record */
    free(s);
}

/* ---- parking ---- */

rill__kholder_t *rill__kholder_new(void)
{
    rill__kholder_t *h = calloc(1, sizeof(*h));
    if (!h)
        return NULL;
    atomic_init(&h->refs, 1);
    pthread_mutex_init(&h->mu, NULL);
    return h;
}

rill__kholder_t *rill__kholder_ref(rill__kholder_t *h)
{
    /* relaxed: a new reference is made from one the caller holds. */
    if (h)
        atomic_fetch_add_explicit(&h->refs, 1, memory_order_relaxed);
    return h;
}

rill__ksession_t *rill__kholder_take(rill__kholder_t *h)
{
    if (!h)
        return NULL;
    pthread_mutex_lock(&h->mu);
    rill__ksession_t *s = h->parked;
    h->parked = NULL;
    pthread_mutex_unlock(&h->mu);
    return s;
}

static void close_now(rill__ksession_t *s)
{
    if (s)
        rill__ksession_close(s, rill__now_ms() + (int64_t)s->close_ms);
}

void rill__kholder_retire(rill__kholder_t *h)
{
    close_now(rill__kholder_take(h));
}

void rill__kholder_unref(rill__kholder_t *h)
{
    /* acq_rel: the last holder sees the others' parking done. */
    if (!h || atomic_fetch_sub_explicit(&h->refs, 1, memory_order_acq_rel) != 1)
        return;
    rill__kholder_retire(h);
    rill__kholder_forget(h, NULL, 0, 0, INT64_MAX);
    free(h->fails);
    for (size_t i = 0; i < atomic_load_explicit(&h->n_ahead, memory_order_relaxed); i++) {
        free(h->ahead[i].topic);
        free(h->ahead[i].offs);
    }
    free(h->ahead);
    pthread_mutex_destroy(&h->mu);
    free(h);
}

/* ---- failures of records, across runs ---- */

static rill__kfail_t *fail_find(rill__kholder_t *h, const char *topic, int32_t partition,
                                int64_t offset)
{
    size_t n = atomic_load_explicit(&h->n_fails, memory_order_relaxed);
    for (size_t i = 0; i < n; i++) {
        rill__kfail_t *f = &h->fails[i];
        if (f->offset == offset && f->partition == partition && !strcmp(f->topic, topic))
            return f;
    }
    return NULL;
}

uint32_t rill__kholder_failed(rill__kholder_t *h, const char *topic, int32_t partition,
                              int64_t offset, int rejected, const char *why)
{
    if (!h)
        return 0;
    pthread_mutex_lock(&h->mu);
    rill__kfail_t *f = fail_find(h, topic, partition, offset);
    size_t n = atomic_load_explicit(&h->n_fails, memory_order_relaxed);
    if (!f && n < RILL__KFAIL_MAX) {
        rill__kfail_t *v = rill__grow(h->fails, &h->cap_fails, n, sizeof(*v), 16);
        char *t = v ? strdup(topic) : NULL;
        if (v)
            h->fails = v;
        if (t) {
            f = &h->fails[n];
            *f = (rill__kfail_t){.topic = t, .partition = partition, .offset = offset};
            atomic_store_explicit(&h->n_fails, n + 1, memory_order_relaxed);
        }
    }
    uint32_t count = 1;
    if (f) {
        count = ++f->failures;
        f->rejected |= rejected != 0;
        if (why && *why) {
            char *w = strdup(why);
            if (w) {
                free(f->why);
                f->why = w;
            }
        }
    }
    pthread_mutex_unlock(&h->mu);
    return count;
}

uint32_t rill__kholder_failures(rill__kholder_t *h, const char *topic, int32_t partition,
                                int64_t offset, int *rejected, char *why, size_t size)
{
    *rejected = 0;
    if (size)
        why[0] = '\0';
    if (!h || !atomic_load_explicit(&h->n_fails, memory_order_relaxed))
        return 0;
    pthread_mutex_lock(&h->mu);
    const rill__kfail_t *f = fail_find(h, topic, partition, offset);
    uint32_t count = f ? f->failures : 0;
    if (f) {
        *rejected = f->rejected;
        if (size)
            snprintf(why, size, "%s", f->why ? f->why : "");
    }
    pthread_mutex_unlock(&h->mu);
    return count;
}

void rill__kholder_forget(rill__kholder_t *h, const char *topic, int32_t partition, int64_t from,
                          int64_t to)
{
    if (!h || !atomic_load_explicit(&h->n_fails, memory_order_relaxed))
        return;
    pthread_mutex_lock(&h->mu);
    size_t n = atomic_load_explicit(&h->n_fails, memory_order_relaxed), kept = 0;
    for (size_t i = 0; i < n; i++) {
        rill__kfail_t *f = &h->fails[i];
        if ((!topic || (f->partition == partition && !strcmp(f->topic, topic))) &&
            f->offset >= from && f->offset < to) {
            free(f->topic);
            free(f->why);
            continue;
        }
        h->fails[kept++] = *f;
    }
    atomic_store_explicit(&h->n_fails, kept, memory_order_relaxed);
    pthread_mutex_unlock(&h->mu);
}

/* While parked, rebalances are simple: nothing is in flight. A revoke
 * releases at once (everything confirmed was committed at park); an
 * assignment is taken paused, and the next run starts it where the group's
 * committed offsets say. */
static void keeper_rebalance(rill__ksession_t *s, rd_kafka_resp_err_t err,
                             rd_kafka_topic_partition_list_t *parts)
{
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        rd_kafka_error_t *e = rill__kafka_take(s->rk, parts);
        if (e)
            rd_kafka_error_destroy(e);
        rd_kafka_pause_partitions(s->rk, parts);
        return;
    }
    /* The resume offsets of partitions that went are of no use any more. */
    for (int i = 0; s->resume && i < parts->cnt; i++)
        rd_kafka_topic_partition_list_del(s->resume, parts->elems[i].topic,
                                          parts->elems[i].partition);
    if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS)
        rill__kafka_let_go(s->rk, parts);
    else
        rd_kafka_assign(s->rk, NULL);
}

typedef struct keeper {
    rill__kholder_t *holder;
    uint64_t gen; /* the parking it keeps */
} keeper_t;

/* Serve the queue of the parked session; 0 once it is not this keeper's
 * any more (taken, or parked again by a later run with its own keeper),
 * or its time ran out (then it is closed here). */
static int keeper_serve(keeper_t *kp)
{
    rill__kholder_t *h = kp->holder;
    pthread_mutex_lock(&h->mu);
    rill__ksession_t *s = h->parked;
    if (!s || s->park_gen != kp->gen) {
        pthread_mutex_unlock(&h->mu);
        return 0;
    }
    rd_kafka_message_t *m;
    while ((m = rd_kafka_consumer_poll(s->rk, 0)))
        rd_kafka_message_destroy(m); /* paused: errors and stragglers only */
    int expired = rill__now_ms() >= s->park_deadline_ms;
    if (expired)
        h->parked = NULL;
    pthread_mutex_unlock(&h->mu);
    if (expired)
        close_now(s);
    return !expired;
}

static rill_err_t keeper_init(rill_ctx_t *ctx, void *state)
{
    (void)state;
    rill_msg_t tick = {.type = RILL__CONSUMER_TICK};
    return rill_timer_start(ctx, KEEPER_TICK_MS, KEEPER_TICK_MS, &tick, NULL);
}

static rill_err_t keeper_behavior(rill_ctx_t *ctx, void *state, rill_msg_t *m)
{
    if (m->type == RILL__CONSUMER_TICK && !keeper_serve(state))
        rill_stop_self(ctx);
    return RILL_OK;
}

/* The keeper ends (its parking is over, or the system stops): a session
 * still parked under its parking is closed. */
static void keeper_terminate(rill_ctx_t *ctx, void *state, const rill_exit_t *reason)
{
    (void)ctx;
    (void)reason;
    keeper_t *kp = state;
    rill__kholder_t *h = kp->holder;
    pthread_mutex_lock(&h->mu);
    rill__ksession_t *s = h->parked;
    if (s && s->park_gen == kp->gen)
        h->parked = NULL;
    else
        s = NULL;
    pthread_mutex_unlock(&h->mu);
    close_now(s);
    rill__kholder_unref(h);
    free(kp);
}

rill_err_t rill__ksession_park(rill__ksession_t *s, rill__kholder_t *h, rill_system_t *sys,
                               uint32_t keep_ms, uint32_t close_ms,
                               rd_kafka_topic_partition_list_t *resume)
{
    keeper_t *kp = malloc(sizeof(*kp));
    if (resume) {
        if (s->resume)
            rd_kafka_topic_partition_list_destroy(s->resume);
        s->resume = resume;
    }
    s->close_ms = close_ms;
    if (!kp || keep_ms == 0) {
        free(kp);
        close_now(s);
        return kp ? RILL_OK : RILL_ENOMEM;
    }
    /* Nothing fetched until the next run: pause what is assigned. */
    rd_kafka_topic_partition_list_t *a = NULL;
    if (rd_kafka_assignment(s->rk, &a) == RD_KAFKA_RESP_ERR_NO_ERROR && a) {
        rd_kafka_pause_partitions(s->rk, a);
        rd_kafka_topic_partition_list_destroy(a);
    }
    rd_kafka_queue_io_event_enable(s->q, -1, NULL, 0);
    rill__ksession_set_owner(s, NULL, NULL);
    s->reused = 1;
    s->park_deadline_ms = rill__now_ms() + (int64_t)keep_ms;
    kp->holder = rill__kholder_ref(h);
    pthread_mutex_lock(&h->mu);
    rill__ksession_t *old = h->parked;
    s->park_gen = kp->gen = ++h->gen;
    h->parked = s;
    pthread_mutex_unlock(&h->mu);
    close_now(old); /* cannot happen: one run of a blueprint at a time */
    rill_spawn_opts_t o = {.behavior = keeper_behavior,
                           .init = keeper_init,
                           .terminate = keeper_terminate,
                           .state = kp,
                           .mailbox_capacity = 4};
    rill_aid_t aid;
    if (rill_spawn(sys, &o, &aid) != RILL_OK) {
        /* No keeper (the system stops): close it now. */
        pthread_mutex_lock(&h->mu);
        rill__ksession_t *t = h->parked == s ? s : NULL;
        if (t)
            h->parked = NULL;
        pthread_mutex_unlock(&h->mu);
        rill__kholder_unref(kp->holder);
        free(kp);
        close_now(t);
        return RILL_ESTOPPED;
    }
    return RILL_OK;
}

/* ---- records confirmed ahead, for the next run ---- */

static struct kahead *ahead_find(rill__kholder_t *h, const char *topic, int32_t partition)
{
    size_t n = atomic_load_explicit(&h->n_ahead, memory_order_relaxed);
    for (size_t i = 0; i < n; i++)
        if (h->ahead[i].partition == partition && !strcmp(h->ahead[i].topic, topic))
            return &h->ahead[i];
    return NULL;
}

/* Remove entry a (under mu). */
static void ahead_drop(rill__kholder_t *h, struct kahead *a)
{
    size_t n = atomic_load_explicit(&h->n_ahead, memory_order_relaxed);
    free(a->topic);
    free(a->offs);
    *a = h->ahead[n - 1];
    atomic_store_explicit(&h->n_ahead, n - 1, memory_order_relaxed);
}

void rill__kholder_set_ahead(rill__kholder_t *h, const char *topic, int32_t partition,
                             int64_t *offsets, size_t n)
{
    if (!h) {
        free(offsets);
        return;
    }
    pthread_mutex_lock(&h->mu);
    struct kahead *a = ahead_find(h, topic, partition);
    if (a) {
        /* What the earlier run left and this one did not reach yet is
         * still confirmed: keep it, merged in order. */
        size_t left = a->n - a->next, m = 0;
        int64_t *v = left ? malloc((left + n) * sizeof(*v)) : NULL;
        if (v) {
            size_t i = a->next, j = 0;
            while (i < a->n || j < n) {
                int64_t o =
                    j >= n || (i < a->n && a->offs[i] < offsets[j]) ? a->offs[i++] : offsets[j++];
                if (!m || v[m - 1] != o)
                    v[m++] = o;
            }
            free(offsets);
            offsets = v;
            n = m;
        }
        ahead_drop(h, a);
    }
    size_t count = atomic_load_explicit(&h->n_ahead, memory_order_relaxed);
    struct kahead *v = n ? rill__grow(h->ahead, &h->cap_ahead, count, sizeof(*v), 4) : NULL;
    char *t = v ? strdup(topic) : NULL;
    if (v)
        h->ahead = v;
    if (t) {
        h->ahead[count] =
            (struct kahead){.topic = t, .partition = partition, .offs = offsets, .n = n};
        atomic_store_explicit(&h->n_ahead, count + 1, memory_order_relaxed);
    } else {
        free(offsets); /* none, or out of memory: they are processed again */
    }
    pthread_mutex_unlock(&h->mu);
}

int rill__kholder_take_ahead(rill__kholder_t *h, const char *topic, int32_t partition,
                             int64_t offset)
{
    if (!h || !atomic_load_explicit(&h->n_ahead, memory_order_relaxed))
        return 0;
    int hit = 0;
    pthread_mutex_lock(&h->mu);
    struct kahead *a = ahead_find(h, topic, partition);
    if (a) {
        while (a->next < a->n && a->offs[a->next] < offset)
            a->next++;
        hit = a->next < a->n && a->offs[a->next] == offset;
        if (hit)
            a->next++;
        if (a->next >= a->n)
            ahead_drop(h, a);
    }
    pthread_mutex_unlock(&h->mu);
    return hit;
}
