/*
 * The Kafka sink: a stage whose input is produce requests and whose
 * optional output is delivery results (see include/rill/kafka.h); spawned
 * alone it is the producer actor.
 *
 * Demand is the number of free in-flight slots: the stage asks upstream
 * for at most rill.max.inflight minus what librdkafka has not delivered
 * yet. Delivery reports arrive on librdkafka's main queue, which wakes the
 * actor through its event loop (the same io-event wiring as the consumer);
 * the actor's turn serves them with rd_kafka_poll(rk, 0). Each report goes
 * to the request's origin (confirmed when delivered, so the consumed
 * record is confirmed once everything made from it is delivered; released
 * unconfirmed when not), to its reply address, and downstream if
 * something subscribed. A request element's own origin joins the
 * request's: a one-to-one transform writes no origin code.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rill/kafka.h>

#include "../actors/seam.h"
#include "../streams/stream_int.h"
#include "kafka_int.h"

/* Message types: the producer's block of the registry (actors/msgtypes.h). */
#define P_WAKE       RILL__PRODUCER_WAKE
#define P_TICK       RILL__PRODUCER_TICK
#define P_STATS      RILL__PRODUCER_STATS
#define P_SEND       RILL__PRODUCER_SEND
#define P_TEST_FATAL RILL__PRODUCER_TEST_FATAL
#define P_CONF_GET   RILL__PRODUCER_CONF_GET
#define P_TXN        RILL__PRODUCER_TXN

#define TICK_MS 100

/* ------------------------------------------------------------------ */
/* Final counters of stopped producers                                 */
/* ------------------------------------------------------------------ */

/* The actor is gone by the time its stop has flushed (the flush runs in
 * its terminate hook), so what the stop left undelivered would be
 * unobservable: the last FINAL_MAX stopped producers of a system keep their
 * final counters here, for rill_producer_stats. */
#define FINAL_MAX 256

typedef struct final_stats {
    pthread_mutex_t mu;
    size_t next;
    struct {
        rill_aid_t aid;
        rill_producer_stats_t stats;
    } v[FINAL_MAX];
} final_stats_t;

static const char final_key = 0;

static void *final_stats_create(char *errstr, size_t errstr_size)
{
    final_stats_t *f = calloc(1, sizeof(*f));
    if (!f) {
        rill__fail(RILL_ENOMEM, errstr, errstr_size, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&f->mu, NULL);
    return f;
}

static void final_stats_destroy(void *ptr)
{
    final_stats_t *f = ptr;
    pthread_mutex_destroy(&f->mu);
    free(f);
}

static void final_stats_keep(rill_system_t *sys, rill_aid_t aid, const rill_producer_stats_t *s)
{
    final_stats_t *f =
        rill__system_attachment(sys, &final_key, final_stats_create, final_stats_destroy, NULL, 0);
    if (!f)
        return;
    pthread_mutex_lock(&f->mu);
    f->v[f->next % FINAL_MAX].aid = aid;
    f->v[f->next % FINAL_MAX].stats = *s;
    f->v[f->next % FINAL_MAX].stats.inflight = 0;
    f->next++;
    pthread_mutex_unlock(&f->mu);
}

static int final_stats_find(rill_system_t *sys, rill_aid_t aid, rill_producer_stats_t *out)
{
    final_stats_t *f =
        rill__system_attachment(sys, &final_key, final_stats_create, final_stats_destroy, NULL, 0);
    int found = 0;
    if (!f)
        return 0;
    pthread_mutex_lock(&f->mu);
    for (size_t i = 0; i < FINAL_MAX && !found; i++)
        if (rill_aid_eq(f->v[i].aid, aid)) {
            *out = f->v[i].stats;
            found = 1;
        }
    pthread_mutex_unlock(&f->mu);
    return found;
}

/* ------------------------------------------------------------------ */
/* The producer stage                                                  */
/* ------------------------------------------------------------------ */

typedef struct producer {
    rill_producer_conf_t *conf; /* the blueprint's (owned) */
    rd_kafka_t *rk;             /* made by prepare */
    rd_kafka_queue_t *mainq;
    rill__kq_t kq;
    rill__stage_t *st;
    uint32_t inflight;
    uint32_t direct_pending;   /* direct sends among pending */
    rill__equeue_t pending;    /* requests librdkafka's queue refused: retried */
    rill__equeue_t results;    /* delivery results for a downstream subscriber */
    rd_kafka_topic_t **topics; /* rill.topics, known from the start, then others */
    size_t n_topics;
    rd_kafka_topic_t *last_topic; /* the one produced to last */
    int upstream_done;
    int stopping;
    rill_producer_stats_t stats;
    rill__khealth_t health; /* errors and brokers up (error and stats callbacks) */
    int transactional;      /* rill_kafka_txn_sink */
    rill__txn_t *txn;       /* its transactions (txn.c), from the start */
    /* Inside a poll of delivery reports (reports_poll) its reports share
     * one clock reading, taken by the first (reports_ns, 0 until then);
     * outside one (the stop's flush) each report reads the clock. */
    int reports_batch;
    int64_t reports_ns;
} producer_t;

static const rill__kind_t producer_kind;

/* Errors and statistics, served by rd_kafka_poll in the actor's turn (or
 * its stop's flush). A fatal error fails the sink where the poll returns. */
static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)rk;
    rill__khealth_error(&((producer_t *)opaque)->health, (rd_kafka_resp_err_t)err, reason);
}

static int stats_cb(rd_kafka_t *rk, char *json, size_t len, void *opaque)
{
    (void)rk;
    rill__khealth_stats(&((producer_t *)opaque)->health, json, len);
    return 0; /* librdkafka frees json */
}

/* The counters with what the client saw of its cluster. */
static rill_producer_stats_t stats_now(const producer_t *pr)
{
    rill_producer_stats_t s = pr->stats;
    s.inflight = pr->inflight;
    s.errors = pr->health.errors;
    s.brokers_up = pr->health.brokers_up;
    s.connected = pr->health.brokers_up > 0;
    snprintf(s.last_error, sizeof(s.last_error), "%s", pr->health.last_error);
    return s;
}

/* Delivered: the origin is confirmed (the notice to its source goes at
 * the end of this actor turn, batched with the others). */
static void produce_done(rill_produce_t *p)
{
    rill_origin_t *o = p->origin;
    p->origin = NULL;
    rill_produce_free(p);
    rill_origin_confirm(o);
}

static void delivery_free(void *p)
{
    free(p);
}

/* A delivery report, served by rd_kafka_poll in the actor's turn. */
/* A delivery result (NULL when out of memory). */
static rill_delivery_t *delivery_new(const char *topic, int32_t partition, int64_t offset,
                                     rd_kafka_resp_err_t err, uint64_t arg)
{
    rill_delivery_t *d = malloc(sizeof(*d));
    if (d) {
        size_t tl = strnlen(topic, sizeof(d->topic) - 1);
        memcpy(d->topic, topic, tl);
        d->topic[tl] = '\0';
        d->partition = partition;
        d->offset = err ? -1 : offset;
        d->err = err;
        d->arg = arg;
    }
    return d;
}

/* Send d to the request's reply address (d is taken, sent or freed). */
static void reply_delivery(producer_t *pr, const rill_produce_t *req, rill_delivery_t *d)
{
    if (!d)
        return;
    rill_msg_t r = {.type = RILL_MSG_DELIVERY, .payload = d, .dtor = free, .arg = req->reply_arg};
    rill_err_t err = rill_tell(pr->st->sys, req->reply_to, &r);
    /* A full mailbox does not lose a result: the control queue takes it
     * (bounded by the requests its receiver sent). */
    if (err == RILL_EFULL)
        err = rill_signal(pr->st->sys, req->reply_to, &r);
    if (err != RILL_OK)
        free(d);
}

/* Errors that are the record's own fault: however often it is produced
 * again, it fails the same way. */
static int record_at_fault(rd_kafka_resp_err_t err)
{
    switch (err) {
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_INVALID_RECORD:
    case RD_KAFKA_RESP_ERR_INVALID_MSG:
    case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
    case RD_KAFKA_RESP_ERR__INVALID_ARG:
        return 1;
    default:
        return 0;
    }
}

/* A stream request that failed because of what it holds: its record is
 * the suspect of the failure, so a Kafka source counts it (with the
 * others made from the same record) toward rill.max.failures and, after
 * that many, dead-letters or skips it instead of producing it again for
 * ever. Broker faults (timeouts, outages) blame nobody. */
static void blame_request(rill_produce_t *req, rd_kafka_resp_err_t err, const char *why)
{
    if (req->direct || !req->origin || !record_at_fault(err))
        return;
    char text[200];
    snprintf(text, sizeof(text), "producing to %.60s failed: %.100s", req->topic ? req->topic : "?",
             why ? why : rd_kafka_err2str(err));
    rill__origin_mark(req->origin, RILL__VERDICT_BLAME, 0, text);
}

static void dr_msg_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    producer_t *pr = opaque;
    rill_produce_t *req = m->_private;
    if (pr->inflight)
        pr->inflight--;
    /* A result is built only for someone who takes it: the sender (reply)
     * or a downstream subscriber (successful deliveries of stream
     * requests). */
    int downstream = !m->err && !req->direct && pr->st->n_out > 0 && !pr->st->finished;
    rill_delivery_t *d = NULL;
    if (!rill_aid_is_none(req->reply_to) || downstream)
        d = delivery_new(rd_kafka_topic_name(m->rkt), m->partition, m->offset, m->err,
                         req->reply_arg);
    if (!rill_aid_is_none(req->reply_to) && d) {
        if (!downstream) {
            reply_delivery(pr, req, d);
            d = NULL;
        } else {
            rill_delivery_t *copy = malloc(sizeof(*copy));
            if (copy)
                *copy = *d;
            reply_delivery(pr, req, copy);
        }
    }
    if (m->err) {
        pr->stats.failed++;
        blame_request(req, m->err, NULL);
        rill_produce_free(req); /* its origin is released unconfirmed */
        char fatal[256];
        int fatal_now = rd_kafka_fatal_error(pr->rk, fatal, sizeof(fatal)) != 0;
        if (pr->txn && !fatal_now) {
            /* The transaction is aborted instead, and its records come again. */
            rill__txn_delivery_failed(pr->txn, m->err);
            free(d);
            return;
        }
        /* A fatal error purges what is queued: report the cause, not the
         * purge. */
        if (!pr->stopping && fatal_now)
            rill__stage_fail(pr->st, RILL_EKAFKA, "fatal producer error: %s", fatal);
        else if (!pr->stopping)
            rill__stage_fail(pr->st, RILL_EKAFKA, "delivery to %s [%d] failed: %s",
                             rd_kafka_topic_name(m->rkt), (int)m->partition,
                             rd_kafka_err2str(m->err));
        free(d);
        return;
    }
    pr->stats.delivered++;
    if (req->handoff_ns) {
        int64_t now = pr->reports_ns;
        if (!now) {
            now = rill__now_ns();
            if (pr->reports_batch)
                pr->reports_ns = now;
        }
        rill_hist_record(&pr->stats.delivery_latency,
                         now > req->handoff_ns ? (uint64_t)(now - req->handoff_ns) : 0);
    }
    if (!req->direct)
        pr->st->delivered++; /* what reached the end of the pipeline */
    produce_done(req);
    if (d && downstream) {
        rill_elem_t e = {.payload = d, .dtor = delivery_free, .arg = d->arg};
        if (!rill__equeue_push(&pr->results, &e))
            free(d); /* cannot happen: requests are bounded by the queue's room */
    } else {
        free(d);
    }
}

/* Tell a request's sender that it was not produced (err), and free it:
 * its origin is released unconfirmed. */
static void refuse_request(producer_t *pr, rill_produce_t *req, rd_kafka_resp_err_t err)
{
    pr->stats.failed++;
    if (!rill_aid_is_none(req->reply_to))
        reply_delivery(pr, req, delivery_new(req->topic, req->partition, -1, err, req->reply_arg));
    rill_produce_free(req);
}

/* At most this many topic handles are kept; beyond, requests to other
 * topics are produced by name. */
#define TOPICS_MAX 64

/* Make and keep a handle of topic `name`: the handle (NULL if librdkafka
 * refused the name), or NULL with *oom set. */
static rd_kafka_topic_t *topic_keep(producer_t *pr, const char *name, int *oom)
{
    rd_kafka_topic_t **v = realloc(pr->topics, (pr->n_topics + 1) * sizeof(*v));
    *oom = !v;
    if (!v)
        return NULL;
    pr->topics = v;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(pr->rk, name, NULL);
    if (rkt)
        pr->topics[pr->n_topics++] = rkt;
    return rkt;
}

/* The handle of a request's topic, made and kept the first time: a
 * produce by name has librdkafka find the topic under its lock for every
 * record. NULL: produce by name. */
static rd_kafka_topic_t *topic_for(producer_t *pr, const char *name)
{
    if (pr->last_topic && !strcmp(rd_kafka_topic_name(pr->last_topic), name))
        return pr->last_topic;
    for (size_t i = 0; i < pr->n_topics; i++)
        if (!strcmp(rd_kafka_topic_name(pr->topics[i]), name))
            return pr->last_topic = pr->topics[i];
    int oom;
    rd_kafka_topic_t *rkt = pr->n_topics < TOPICS_MAX ? topic_keep(pr, name, &oom) : NULL;
    if (rkt)
        pr->last_topic = rkt;
    return rkt;
}

/* Hand one request to librdkafka. Returns 1 if taken, 0 if its queue is
 * full (keep it), -1 on a permanent error (already handled). */
static int produce_one(producer_t *pr, rill_produce_t *req)
{
    if (pr->txn && !req->bad) {
        int admit = rill__txn_admit(pr->txn, req);
        if (admit <= 0)
            return admit; /* held for the next transaction, or dropped */
    }
    if (req->bad) {
        /* A stream's bad request fails the stream; a direct one is
         * answered. */
        if (!req->direct)
            rill__stage_fail(pr->st, RILL_EINVAL, "cannot produce to \"%.60s\": %s", req->topic,
                             req->bad);
        blame_request(req, RD_KAFKA_RESP_ERR__INVALID_ARG, req->bad);
        refuse_request(pr, req, RD_KAFKA_RESP_ERR__INVALID_ARG);
        return -1;
    }
    rd_kafka_headers_t *h = req->headers ? rd_kafka_headers_copy(req->headers) : NULL;
    /* A variable, not an expression: librdkafka's RD_KAFKA_V_VALUE casts
     * its argument without parentheses. */
    void *value = req->has_value ? req->value : NULL;
    rd_kafka_topic_t *rkt = topic_for(pr, req->topic);
#define REQUEST_ARGS                                                                               \
    RD_KAFKA_V_PARTITION(req->partition), RD_KAFKA_V_MSGFLAGS(0),                                  \
        RD_KAFKA_V_KEY(req->key, req->key_len), RD_KAFKA_V_VALUE(value, req->value_len),           \
        RD_KAFKA_V_TIMESTAMP(req->timestamp), RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_OPAQUE(req),       \
        RD_KAFKA_V_END
    rd_kafka_resp_err_t err =
        rkt ? rd_kafka_producev(pr->rk, RD_KAFKA_V_RKT(rkt), REQUEST_ARGS)
            : rd_kafka_producev(pr->rk, RD_KAFKA_V_TOPIC(req->topic), REQUEST_ARGS);
#undef REQUEST_ARGS
    if (!err) {
        if (pr->txn)
            rill__txn_produced(pr->txn, req);
        /* One clock reading per turn, shared by its produces. */
        req->handoff_ns = rill__turn_now_ns();
        pr->inflight++;
        if (pr->inflight > pr->stats.inflight_max)
            pr->stats.inflight_max = pr->inflight;
        return 1;
    }
    if (h)
        rd_kafka_headers_destroy(h);
    if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
        pr->stats.retried++;
        return 0;
    }
    if (pr->txn && err == RD_KAFKA_RESP_ERR__STATE && !rd_kafka_fatal_error(pr->rk, NULL, 0)) {
        /* The transaction needs an abort (an abortable error came back):
         * the request waits for the next one. */
        rill__txn_delivery_failed(pr->txn, err);
        return 0;
    }
    pr->stats.failed++;
    rill__stage_fail(pr->st, RILL_EKAFKA, "cannot produce to %s: %s", req->topic,
                     rd_kafka_err2str(err));
    blame_request(req, err, NULL);
    rill_produce_free(req);
    return -1;
}

/* Serve what librdkafka has for us (delivery reports, errors,
 * statistics) without waiting; with flush, first wake its broker threads
 * (rd_kafka_flush(rk, 0) serves the reports too). Its delivery reports
 * share one clock reading. */
static void reports_poll(producer_t *pr, int flush)
{
    pr->reports_batch = 1;
    pr->reports_ns = 0;
    if (flush)
        rd_kafka_flush(pr->rk, 0);
    rd_kafka_poll(pr->rk, 0);
    pr->reports_batch = 0;
    pr->reports_ns = 0;
}

static void serve_reports(producer_t *pr, int flush)
{
    char fatal[256];
    reports_poll(pr, flush);
    if (!pr->st->finished && rd_kafka_fatal_error(pr->rk, fatal, sizeof(fatal)))
        rill__stage_fail(pr->st, RILL_EKAFKA, "fatal producer error: %s", fatal);
}

/* Take one request: to librdkafka, or behind those waiting for room.
 * pending holds 2 * rill.max.inflight: the stream's window (its demand
 * counts what waits, so it never asks for more) and as many direct sends.
 * A direct send past its half is answered _QUEUE_FULL, so direct sends can
 * never take the room of a stream request already asked for (that one
 * would be dropped with its origin released: a commit stalled for good). */
static void take_request(producer_t *pr, rill_produce_t *req)
{
    pr->stats.requested++;
    if (!pr->pending.count && produce_one(pr, req) != 0)
        return; /* taken, or failed and handled */
    if (req->direct && pr->direct_pending >= pr->conf->o.max_inflight) {
        refuse_request(pr, req, RD_KAFKA_RESP_ERR__QUEUE_FULL);
        return;
    }
    rill_elem_t keep = rill_produce_elem(req);
    if (!rill__equeue_push(&pr->pending, &keep)) {
        /* Cannot happen (see above); never drop a stream's record
         * silently. */
        if (!req->direct)
            rill__stage_fail(pr->st, RILL_ESTATE,
                             "the producer's queue of requests waiting for librdkafka overflowed");
        refuse_request(pr, req, RD_KAFKA_RESP_ERR__QUEUE_FULL);
        return;
    }
    if (req->direct)
        pr->direct_pending++;
}

static void producer_on_next(rill__stage_t *st, int in, rill_elem_t *e)
{
    (void)in;
    producer_t *pr = st->spec.impl;
    if (e->dtor != rill_produce_free) {
        rill_elem_release(e);
        rill__stage_fail(st, RILL_EINVAL,
                         "the producer takes produce requests only "
                         "(rill_produce_elem)");
        return;
    }
    rill_produce_t *req = e->payload;
    /* The request stands for what the element stood for. */
    rill__origin_absorb(&req->origin, e->origin);
    memset(e, 0, sizeof(*e));
    take_request(pr, req);
}

static void producer_on_input_end(rill__stage_t *st, int in, rill_err_t code, const char *text)
{
    (void)in;
    producer_t *pr = st->spec.impl;
    if (code)
        rill__stage_fail_from_upstream(st, code, text);
    else
        pr->upstream_done = 1;
}

static void producer_pump(rill__stage_t *st)
{
    producer_t *pr = st->spec.impl;
    rill_elem_t e;
    /* Retry what librdkafka refused, in order. */
    while (pr->pending.count && !st->finished) {
        rill_elem_t *head = rill__equeue_peek(&pr->pending);
        int direct = ((rill_produce_t *)head->payload)->direct;
        int r = produce_one(pr, head->payload);
        if (r == 0)
            break;
        rill__equeue_pop(&pr->pending, &e);
        if (direct && pr->direct_pending)
            pr->direct_pending--;
    }
    while (pr->results.count && rill__stage_can_emit(st, 0) && rill__equeue_pop(&pr->results, &e))
        rill__stage_emit(st, 0, &e);
    if (st->finished)
        return;
    /* The transaction's clock, its commit and its rewinds; done: nothing
     * open or waited for. */
    int txn_done = !pr->txn || rill__txn_pump(pr->txn, pr->upstream_done);
    if (st->finished)
        return;
    if (pr->txn && txn_done && pr->pending.count && !pr->inflight) {
        /* Held requests may go now (a new transaction, a rewind over). */
        rill__stage_repump(st);
    }
    if (pr->upstream_done) {
        if (!pr->inflight && !pr->pending.count && !pr->results.count && txn_done)
            rill__stage_complete(st);
        return;
    }
    int64_t busy = (int64_t)pr->inflight + (int64_t)pr->pending.count + (int64_t)pr->results.count;
    int64_t room = (int64_t)pr->conf->o.max_inflight - busy;
    rill__stage_want(st, 0, room > 0 ? room : 0);
}

static void producer_on_msg(rill__stage_t *st, rill_msg_t *m)
{
    producer_t *pr = st->spec.impl;
    switch (m->type) {
    case P_WAKE:
        rill__kq_woken(&pr->kq);
        serve_reports(pr, 0);
        break;
    case P_TICK:
        /* librdkafka 2.0.2 schedules no wakeup for a batch waiting out its
         * retry backoff: once nothing new is produced, its broker thread
         * sleeps up to socket.blocking.max.ms (1 s) before retrying. A
         * flush without waiting wakes the broker threads (and serves the
         * reports), so a retry goes out within a tick of its backoff. */
        serve_reports(pr, pr->inflight > 0);
        break;
    case P_SEND: {
        rill_produce_t *req = rill_msg_take(m);
        if (!req)
            return;
        if (st->finished) {
            refuse_request(pr, req, RD_KAFKA_RESP_ERR__DESTROY);
            return;
        }
        req->direct = 1;
        take_request(pr, req);
        break;
    }
    case P_TEST_FATAL:
        rd_kafka_test_fatal_error(pr->rk, (rd_kafka_resp_err_t)m->arg,
                                  m->payload ? (const char *)m->payload : "test");
        serve_reports(pr, 0);
        break;
    case P_TXN:
        if (pr->txn)
            rill__txn_msg(pr->txn, m);
        break;
    case P_CONF_GET: {
        /* The client's configuration, as librdkafka holds it: what a
         * test wants to see of a producer rill configured itself. */
        size_t size = 0;
        rill_msg_t r = {.type = P_CONF_GET, .arg = RILL_ENOENT};
        const rd_kafka_conf_t *kc = rd_kafka_conf(pr->rk);
        if (m->payload && rd_kafka_conf_get(kc, m->payload, NULL, &size) == RD_KAFKA_CONF_OK) {
            char *v = malloc(size ? size : 1);
            if (v && rd_kafka_conf_get(kc, m->payload, v, &size) == RD_KAFKA_CONF_OK) {
                r.arg = RILL_OK;
                r.payload = v;
                r.dtor = free;
            } else {
                r.arg = v ? RILL_EKAFKA : RILL_ENOMEM;
                free(v);
            }
        }
        if (rill_reply(st->ctx, m, &r) != RILL_OK && r.dtor)
            r.dtor(r.payload);
        return;
    }
    case P_STATS: {
        rill_producer_stats_t *s = malloc(sizeof(*s));
        if (s) {
            *s = stats_now(pr);
            rill_msg_t r = {.type = P_STATS, .payload = s, .dtor = free};
            if (rill_reply(st->ctx, m, &r) != RILL_OK)
                free(s);
        }
        return;
    }
    default:
        return;
    }
    if (!st->finished)
        producer_pump(st);
}

static rill_err_t producer_start(rill__stage_t *st)
{
    producer_t *pr = st->spec.impl;
    pr->st = st;
    if (rill__kq_start(&pr->kq, st->ctx, pr->mainq, P_WAKE))
        return RILL_EIO;
    rill_msg_t tick = {.type = P_TICK};
    rill_timer_start(st->ctx, TICK_MS, TICK_MS, &tick, NULL);
    if (pr->transactional) {
        /* init_transactions: blocking, on this executor (kafka.h says so). */
        if (!(pr->txn = rill__txn_new(pr->conf)))
            return RILL_ENOMEM;
        rill__txn_start(pr->txn, st, pr->rk, &pr->stats, &pr->inflight);
    }
    return RILL_OK;
}

static void producer_destroy(void *impl)
{
    producer_t *pr = impl;
    if (!pr)
        return;
    pr->stopping = 1;
    if (pr->st)
        rill__kq_stop(&pr->kq);
    rill_elem_t e;
    if (pr->pending.v)
        while (rill__equeue_pop(&pr->pending, &e)) {
            pr->stats.undelivered_at_stop++;
            rill_elem_release(&e); /* never handed over: released unconfirmed */
        }
    rill__txn_free(pr->txn); /* aborts what is open */
    pr->txn = NULL;
    if (pr->rk) {
        /* Flush with a deadline; what is left is purged, and its delivery
         * reports (with an error) fail the origins. */
        rd_kafka_flush(pr->rk, (int)pr->conf->o.flush_ms);
        /* Our own count: rd_kafka_outq_len() also counts librdkafka's
         * events and requests, not only records. */
        uint32_t left = pr->inflight;
        pr->stats.undelivered_at_stop += left;
        if (left > 0 || rd_kafka_outq_len(pr->rk) > 0) {
            if (left > 0)
                rill_log(RILL_LOG_WARNING, "kafka.producer",
                         "%u record(s) not delivered within %u ms at stop", left,
                         pr->conf->o.flush_ms);
            rd_kafka_purge(pr->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
            rd_kafka_poll(pr->rk, 0);
        }
    }
    if (pr->st) {
        rill_producer_stats_t fs = stats_now(pr);
        final_stats_keep(pr->st->sys, pr->st->self, &fs);
    }
    if (pr->results.v)
        while (rill__equeue_pop(&pr->results, &e))
            rill_elem_release(&e);
    free(pr->pending.v);
    free(pr->results.v);
    for (size_t i = 0; i < pr->n_topics; i++)
        rd_kafka_topic_destroy(pr->topics[i]);
    free(pr->topics);
    if (pr->mainq)
        rd_kafka_queue_destroy(pr->mainq);
    if (pr->rk)
        rd_kafka_destroy(pr->rk);
    rill_producer_conf_destroy(pr->conf);
    free(pr);
}

/* The client, made on the spawning thread so that librdkafka's refusal of
 * the configuration is the spawn's error. */
static rill_err_t producer_prepare(void *impl, rill_system_t *sys, char *errstr, size_t errstr_size)
{
    (void)sys;
    producer_t *pr = impl;
    const rill_producer_conf_t *c = pr->conf;
    /* pending: room for the stream's window and as many direct sends. */
    if (rill__equeue_init(&pr->pending, 2 * (size_t)c->o.max_inflight) ||
        rill__equeue_init(&pr->results, c->o.max_inflight))
        return rill__fail(RILL_ENOMEM, errstr, errstr_size, "out of memory");
    rd_kafka_conf_t *kc = rd_kafka_conf_dup(c->kconf);
    if (!kc)
        return rill__fail(RILL_ENOMEM, errstr, errstr_size, "out of memory");
    rd_kafka_conf_set_dr_msg_cb(kc, dr_msg_cb);
    rd_kafka_conf_set_opaque(kc, pr);
    rd_kafka_conf_set_error_cb(kc, error_cb);
    rill__khealth_conf(kc, c->have_stats_interval, stats_cb);
    rill__kclient_telemetry_default(kc, c->have_metrics_push);
    rill__kafka_quiet_log(kc);
    char kerr[512];
    pr->rk = rd_kafka_new(RD_KAFKA_PRODUCER, kc, kerr, sizeof(kerr));
    if (!pr->rk) {
        rd_kafka_conf_destroy(kc);
        return rill__fail(RILL_EKAFKA, errstr, errstr_size, "%s", kerr);
    }
    pr->mainq = rd_kafka_queue_get_main(pr->rk);
    /* Topics named now are in the client's first metadata request. */
    for (const char *t = c->o.topics; t;) {
        char name[256];
        t = rill__topics_next(t, name, sizeof(name));
        int oom;
        topic_keep(pr, name, &oom);
        if (oom)
            return rill__fail(RILL_ENOMEM, errstr, errstr_size, "out of memory");
    }
    return RILL_OK;
}

static void *producer_clone(const void *impl)
{
    const producer_t *from = impl;
    producer_t *pr = calloc(1, sizeof(*pr));
    if (pr && !(pr->conf = rill__producer_conf_dup(from->conf))) {
        free(pr);
        pr = NULL;
    }
    if (pr)
        pr->transactional = from->transactional;
    return pr;
}

static uint32_t producer_mailbox_min(const void *impl)
{
    /* The window (what it asks upstream) must cover rill.max.inflight. */
    return ((const producer_t *)impl)->conf->o.max_inflight + 2;
}

static const rill__kind_t producer_kind = {.name = "kafka-sink",
                                           .max_in = 1,
                                           .max_out = 1,
                                           .optional_out = 1,
                                           .start = producer_start,
                                           .on_next = producer_on_next,
                                           .on_input_end = producer_on_input_end,
                                           .pump = producer_pump,
                                           .on_msg = producer_on_msg,
                                           .destroy = producer_destroy,
                                           .clone = producer_clone,
                                           .prepare = producer_prepare,
                                           .mailbox_min = producer_mailbox_min};

static rill_stage_t *sink_new(rill_producer_conf_t *c, int transactional)
{
    if (!c)
        return rill__stage_spec_bad(&producer_kind, RILL_EINVAL,
                                    "the producer configuration is NULL");
    if (!c->have_bootstrap) {
        rill_producer_conf_destroy(c);
        return rill__stage_spec_bad(&producer_kind, RILL_EINVAL, RILL__NO_BOOTSTRAP_TEXT);
    }
    char id[8];
    size_t size = sizeof(id);
    int has_id =
        rd_kafka_conf_get(c->kconf, "transactional.id", id, &size) == RD_KAFKA_CONF_OK && size > 1;
    if (transactional && !has_id) {
        rill_producer_conf_destroy(c);
        return rill__stage_spec_bad(&producer_kind, RILL_EINVAL,
                                    "a transactional sink needs transactional.id");
    }
    if (!transactional && has_id) {
        rill_producer_conf_destroy(c);
        return rill__stage_spec_bad(&producer_kind, RILL_EINVAL,
                                    "transactional.id is set: use rill_kafka_txn_sink()");
    }
    producer_t *pr = calloc(1, sizeof(*pr));
    if (!pr) {
        rill_producer_conf_destroy(c);
        return rill__stage_spec_new(&producer_kind, NULL);
    }
    pr->conf = c;
    pr->transactional = transactional;
    return rill__stage_spec_new(&producer_kind, pr);
}

rill_stage_t *rill_kafka_sink(rill_producer_conf_t *c)
{
    return sink_new(c, 0);
}

rill_stage_t *rill_kafka_txn_sink(rill_producer_conf_t *c)
{
    return sink_new(c, 1);
}

rill_err_t rill_producer_spawn(rill_system_t *sys, rill_producer_conf_t *c,
                               const rill_stage_opts_t *opts, rill_aid_t *aid, char *errstr,
                               size_t errstr_size)
{
    if (aid)
        *aid = RILL_AID_NONE;
    if (!sys || !aid) {
        rill_producer_conf_destroy(c);
        return rill__fail(RILL_EINVAL, errstr, errstr_size, "system and aid must be set");
    }
    return rill_stage_spawn(sys, rill_kafka_sink(c), opts, aid, errstr, errstr_size);
}

rill_err_t rill_producer_stats(rill_system_t *sys, rill_aid_t producer, rill_producer_stats_t *out)
{
    if (!sys || rill_aid_is_none(producer) || !out)
        return RILL_EINVAL;
    rill_err_t err = rill__stage_kind_check(sys, producer, &producer_kind);
    if (err == RILL_EINVAL)
        return err;
    rill_msg_t q = {.type = P_STATS}, r;
    err = rill_ask_sync(sys, producer, &q, 10000, &r);
    /* A stopped producer: its final counters, once its stop has finished. */
    if (err == RILL_ESTOPPED && final_stats_find(sys, producer, out))
        return RILL_OK;
    if (err)
        return err;
    if (r.type != P_STATS || !r.payload) {
        if (r.dtor)
            r.dtor(r.payload);
        return RILL_ESTATE;
    }
    *out = *(rill_producer_stats_t *)r.payload;
    r.dtor(r.payload);
    return RILL_OK;
}

rill_err_t rill_producer_send(rill_system_t *sys, rill_aid_t producer, rill_produce_t *req)
{
    if (!sys || rill_aid_is_none(producer) || !req)
        return RILL_EINVAL;
    rill_msg_t m = {.type = P_SEND, .payload = req, .dtor = rill_produce_free};
    return rill_tell(sys, producer, &m);
}

rill_err_t rill__producer_test_fatal(rill_system_t *sys, rill_aid_t producer,
                                     rd_kafka_resp_err_t err, const char *reason)
{
    if (!sys || rill_aid_is_none(producer))
        return RILL_EINVAL;
    char *text = reason ? strdup(reason) : NULL;
    rill_msg_t m = {.type = P_TEST_FATAL, .arg = (uint64_t)err, .payload = text, .dtor = free};
    rill_err_t e = rill_signal(sys, producer, &m);
    if (e)
        free(text);
    return e;
}

rill_err_t rill__producer_conf_get(rill_system_t *sys, rill_aid_t producer, const char *key,
                                   char *value, size_t size)
{
    if (!sys || rill_aid_is_none(producer) || !key || !value || !size)
        return RILL_EINVAL;
    rill_err_t err = rill__stage_kind_check(sys, producer, &producer_kind);
    if (err)
        return err;
    char *k = strdup(key);
    if (!k)
        return RILL_ENOMEM;
    rill_msg_t q = {.type = P_CONF_GET, .payload = k, .dtor = free}, r;
    err = rill_ask_sync(sys, producer, &q, 10000, &r);
    if (err)
        return err;
    if (r.type != P_CONF_GET)
        err = RILL_ESTATE;
    else if (r.arg != RILL_OK || !r.payload)
        err = r.arg != RILL_OK ? (rill_err_t)r.arg : RILL_ESTATE;
    else
        snprintf(value, size, "%s", (const char *)r.payload);
    if (r.dtor)
        r.dtor(r.payload);
    return err;
}
