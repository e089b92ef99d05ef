/*
 * The transactional sink's transactions (see rill_kafka_txn_sink() in
 * include/rill/kafka.h and the protocol in txn.h). producer.c calls in at
 * its start, before and after each produce, on failed deliveries, in its
 * pump and for RILL__PRODUCER_TXN messages; everything runs on the sink's
 * executor.
 *
 * States. IDLE: no transaction open. OPEN: begun, records produced.
 * FLUSH: the commit was decided; nothing more is produced until the
 * records in flight are delivered (their confirms then reach the sources
 * before the sink asks them for offsets). ASK: waiting for each source's
 * answer; then the commit runs, blocking (send_offsets_to_transaction per
 * source, commit_transaction). HOLD is not a state but a condition: a
 * source owes a FLOOR (after an abort or a barrier); nothing is produced
 * until it came.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../streams/stream_int.h"
#include "kafka_int.h"
#include "txn.h"

enum { T_IDLE = 0, T_OPEN, T_FLUSH, T_ASK };

/* One partition of a source with records in the open transaction. */
typedef struct tpart {
    uint64_t key;
    int64_t upto; /* the highest offset produced + 1 */
} tpart_t;

typedef struct tsrc {
    rill_aid_t aid;
    uint64_t floor; /* records of generations below are stale */
    int floor_wait; /* it owes a FLOOR */
    int barrier;    /* it asked for this commit (a revoke) */
    int asked;      /* OFFSETS sent, no ANSWER yet */
    rill__txn_answer_t *answer;
    tpart_t *parts; /* in the open transaction */
    size_t n_parts, cap_parts;
    size_t last; /* the part hit last */
} tsrc_t;

struct rill__txn {
    const rill_producer_conf_t *conf; /* the sink's */
    rill__stage_t *st;
    rd_kafka_t *rk;
    rill_producer_stats_t *stats;
    const uint32_t *inflight; /* the sink's records not delivered yet */
    int state;
    uint64_t seq;     /* the open (or last) transaction */
    uint64_t records; /* produced in the open one */
    int64_t begun_ms;
    int64_t decided_ns;       /* the commit was decided (for txn_latency) */
    int64_t wait_deadline_ms; /* FLUSH, ASK, or a FLOOR owed: until */
    int doomed;               /* abort instead of committing */
    rd_kafka_resp_err_t doom_err;
    char doom_reason[160];
    tsrc_t *srcs;
    size_t n_srcs;
    /* the walk of one request's origin */
    int walk_stale, walk_fresh, walk_oom;
};

/* A FLUSH, an ASK or a FLOOR owed waits from now for rill.txn.timeout.ms. */
static void wait_from_now(rill__txn_t *t)
{
    t->wait_deadline_ms = rill__now_ms() + (int64_t)t->conf->o.txn_timeout_ms;
}

rill__txn_t *rill__txn_new(const rill_producer_conf_t *conf)
{
    rill__txn_t *t = calloc(1, sizeof(*t));
    if (t)
        t->conf = conf;
    return t;
}

void rill__txn_answer_free(void *p)
{
    rill__txn_answer_t *a = p;
    if (!a)
        return;
    if (a->offsets)
        rd_kafka_topic_partition_list_destroy(a->offsets);
    if (a->cgmd)
        rd_kafka_consumer_group_metadata_destroy(a->cgmd);
    free(a);
}

static tsrc_t *src_find(rill__txn_t *t, rill_aid_t aid)
{
    for (size_t i = 0; i < t->n_srcs; i++)
        if (rill_aid_eq(t->srcs[i].aid, aid))
            return &t->srcs[i];
    return NULL;
}

static void send_source(rill__txn_t *t, rill_aid_t to, int sub, void *payload, void (*dtor)(void *))
{
    rill__txn_send(t->st->sys, to, RILL__CONSUMER_TXN, sub, t->st->self, payload, dtor);
}

/* A source named for the first time: it is told who produces its records. */
static tsrc_t *src_add(rill__txn_t *t, rill_aid_t aid)
{
    tsrc_t *v = realloc(t->srcs, (t->n_srcs + 1) * sizeof(*v));
    if (!v)
        return NULL;
    t->srcs = v;
    tsrc_t *s = &t->srcs[t->n_srcs++];
    /* Its FLOOR answers the JOIN: nothing is produced until it came. */
    *s = (tsrc_t){.aid = aid, .floor_wait = 1};
    wait_from_now(t);
    send_source(t, aid, RILL__TXN_JOIN, NULL, NULL);
    return s;
}

static int any_floor_wait(const rill__txn_t *t)
{
    for (size_t i = 0; i < t->n_srcs; i++)
        if (t->srcs[i].floor_wait)
            return 1;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Records                                                             */
/* ------------------------------------------------------------------ */

/* The source of a leaf of this system (named for the first time: added
 * if `add`), with the leaf's partition id and offset; NULL if none. */
static tsrc_t *leaf_src(rill__txn_t *t, rill_origin_t *leaf, int add, uint64_t *key, int64_t *value)
{
    rill_system_t *sys;
    rill_aid_t source;
    if (!rill__origin_leaf(leaf, &sys, &source, key, value) || sys != t->st->sys)
        return NULL;
    tsrc_t *s = src_find(t, source);
    if (!s && add && !(s = src_add(t, source)))
        t->walk_oom = 1;
    return s;
}

static void walk_check(void *ctx, rill_origin_t *leaf)
{
    rill__txn_t *t = ctx;
    uint64_t key;
    int64_t value;
    tsrc_t *s = leaf_src(t, leaf, 1, &key, &value);
    if (!s)
        return;
    if (RILL__PART_ID_GEN(key) < s->floor)
        t->walk_stale++;
    else
        t->walk_fresh++;
}

static void walk_note(void *ctx, rill_origin_t *leaf)
{
    rill__txn_t *t = ctx;
    uint64_t key;
    int64_t value;
    tsrc_t *s = leaf_src(t, leaf, 0, &key, &value);
    if (!s)
        return;
    /* Records come in runs of one partition: the one hit last first. */
    if (s->last >= s->n_parts || s->parts[s->last].key != key) {
        size_t i = 0;
        while (i < s->n_parts && s->parts[i].key != key)
            i++;
        if (i == s->n_parts) {
            tpart_t *v = rill__grow(s->parts, &s->cap_parts, s->n_parts, sizeof(*v), 8);
            if (!v) {
                t->walk_oom = 1;
                return;
            }
            s->parts = v;
            s->parts[s->n_parts++] = (tpart_t){.key = key, .upto = -1};
        }
        s->last = i;
    }
    if (value + 1 > s->parts[s->last].upto)
        s->parts[s->last].upto = value + 1;
}

static void doom(rill__txn_t *t, rd_kafka_resp_err_t err, const char *why)
{
    if (t->doomed)
        return;
    t->doomed = 1;
    t->doom_err = err;
    snprintf(t->doom_reason, sizeof(t->doom_reason), "%s", why);
}

static int fail_error(rill__txn_t *t, const char *what, rd_kafka_error_t *e)
{
    rill__stage_fail(t->st, RILL_EKAFKA, "%s%s: %s", rd_kafka_error_is_fatal(e) ? "fatal: " : "",
                     what, rd_kafka_error_string(e));
    rd_kafka_error_destroy(e);
    return -1;
}

static void decide(rill__txn_t *t);

int rill__txn_admit(rill__txn_t *t, rill_produce_t *req)
{
    if (t->state == T_OPEN && t->records >= t->conf->o.txn_records)
        decide(t); /* full: the next transaction takes it */
    if (t->state == T_FLUSH || t->state == T_ASK || any_floor_wait(t))
        return 0; /* held until the commit or the rewind is over */
    t->walk_stale = t->walk_fresh = t->walk_oom = 0;
    if (req->origin)
        rill__origin_walk(req->origin, walk_check, t);
    if (t->walk_oom) {
        rill__stage_fail(t->st, RILL_ENOMEM, "out of memory");
        rill_produce_free(req);
        return -1;
    }
    if (any_floor_wait(t))
        return 0; /* a source named for the first time: its floor first */
    if (t->walk_stale) {
        /* From before a rewind: it comes again. A request made from
         * records of both sides of a rewind (a batch across it) cannot be
         * produced either: its fresh records are released unconfirmed, so
         * the transaction is aborted and everything rewound once more. */
        t->stats->txn_stale_dropped++;
        if (t->walk_fresh)
            doom(t, RD_KAFKA_RESP_ERR__STATE,
                 "a record was made from inputs from both sides of a rewind");
        rill_produce_free(req);
        return -1;
    }
    if (t->state == T_IDLE) {
        rd_kafka_error_t *e = rd_kafka_begin_transaction(t->rk);
        if (e) {
            rill_produce_free(req);
            return fail_error(t, "begin_transaction", e);
        }
        t->state = T_OPEN;
        t->seq++;
        t->records = 0;
        t->begun_ms = rill__now_ms();
    }
    return 1;
}

void rill__txn_produced(rill__txn_t *t, rill_produce_t *req)
{
    t->records++;
    t->walk_oom = 0;
    if (req->origin)
        rill__origin_walk(req->origin, walk_note, t);
    if (t->walk_oom)
        doom(t, RD_KAFKA_RESP_ERR__FAIL, "out of memory");
}

void rill__txn_delivery_failed(rill__txn_t *t, rd_kafka_resp_err_t err)
{
    /* A purge too: librdkafka purges what is queued when the transaction
     * fails by itself (an abortable error of AddPartitionsToTxn, say; its
     * cause is in librdkafka's log). Purges of our own aborts come before
     * the next transaction begins (only a stop aborts with records out). */
    if (t->state != T_OPEN && t->state != T_FLUSH)
        return;
    char why[160];
    snprintf(why, sizeof(why), "%s: %s",
             err == RD_KAFKA_RESP_ERR__STATE ? "a produce was refused" : "a delivery failed",
             rd_kafka_err2str(err));
    doom(t, err, why);
}

/* ------------------------------------------------------------------ */
/* Calls                                                               */
/* ------------------------------------------------------------------ */

enum { CALL_INIT, CALL_OFFSETS, CALL_COMMIT, CALL_ABORT };
static const char *const call_name[] = {"init_transactions", "send_offsets_to_transaction",
                                        "commit_transaction", "abort_transaction"};

/* One transactional call, retried while its error is retriable and
 * rill.txn.timeout.ms lasts. NULL when done; else the error (the
 * caller's): abortable, fatal, or anything else. */
static rd_kafka_error_t *call(rill__txn_t *t, int what, const rd_kafka_topic_partition_list_t *l,
                              const rd_kafka_consumer_group_metadata_t *g)
{
    int64_t deadline = rill__now_ms() + (int64_t)t->conf->o.txn_timeout_ms;
    for (;;) {
        int left = (int)(deadline - rill__now_ms());
        if (left < 1)
            left = 1;
        rd_kafka_error_t *e;
        switch (what) {
        case CALL_INIT:
            e = rd_kafka_init_transactions(t->rk, left);
            break;
        case CALL_OFFSETS:
            e = rd_kafka_send_offsets_to_transaction(t->rk, l, g, left);
            break;
        case CALL_COMMIT:
            e = rd_kafka_commit_transaction(t->rk, left);
            break;
        default:
            e = rd_kafka_abort_transaction(t->rk, left);
            break;
        }
        if (!e || !rd_kafka_error_is_retriable(e) || rd_kafka_error_is_fatal(e) ||
            rd_kafka_error_txn_requires_abort(e) || rill__now_ms() >= deadline)
            return e;
        t->stats->txn_retries++;
        rill_log(RILL_LOG_INFO, "kafka.txn", "%s: %s (retried)", call_name[what],
                 rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
    }
}

int rill__txn_start(rill__txn_t *t, rill__stage_t *st, rd_kafka_t *rk, rill_producer_stats_t *stats,
                    const uint32_t *inflight)
{
    t->st = st;
    t->rk = rk;
    t->stats = stats;
    t->inflight = inflight;
    stats->transactional = 1;
    rd_kafka_error_t *e = call(t, CALL_INIT, NULL, NULL);
    return e ? fail_error(t, "init_transactions", e) : 0;
}

/* ------------------------------------------------------------------ */
/* Ending a transaction                                                */
/* ------------------------------------------------------------------ */

static void tell_cb(rill__txn_t *t, rill_txn_event_t ev, const rd_kafka_topic_partition_list_t *l,
                    rd_kafka_resp_err_t err, const char *reason)
{
    if (!t->conf->txn_cb)
        return;
    rill_txn_info_t info = {.event = ev,
                            .seq = t->seq,
                            .records = t->records,
                            .offsets = l && l->cnt ? l : NULL,
                            .err = err,
                            .reason = reason ? reason : ""};
    t->conf->txn_cb(t->conf->txn_opaque, &info);
}

/* The transaction is over: tell the sources in it, and those that asked
 * for it, and start afresh. */
static void finish(rill__txn_t *t, int committed)
{
    for (size_t i = 0; i < t->n_srcs; i++) {
        tsrc_t *s = &t->srcs[i];
        int involved = s->n_parts > 0 || (s->answer && s->answer->offsets);
        if (involved || s->barrier) {
            rill__txn_end_t *end = malloc(sizeof(*end));
            if (end) {
                *end =
                    (rill__txn_end_t){.seq = t->seq, .committed = committed, .involved = involved};
                send_source(t, s->aid, RILL__TXN_END, end, free);
            }
            /* After an abort it rewinds; after a barrier it releases: a
             * FLOOR comes either way. (Without memory for the END, no
             * FLOOR comes: the wait runs out and the sink fails.) */
            if ((!committed && involved) || s->barrier)
                s->floor_wait = 1;
        }
        s->barrier = 0;
        s->asked = 0;
        s->n_parts = 0;
        s->last = 0;
        rill__txn_answer_free(s->answer);
        s->answer = NULL;
    }
    t->state = T_IDLE;
    t->records = 0;
    t->doomed = 0;
    if (any_floor_wait(t))
        wait_from_now(t);
}

/* The open transaction ended aborted (or abandoned): counted and told. */
static void aborted(rill__txn_t *t, rd_kafka_resp_err_t err, const char *reason)
{
    t->stats->txn_aborted++;
    t->stats->txn_records_aborted += t->records;
    tell_cb(t, RILL_TXN_ABORTED, NULL, err, reason);
}

static void abort_txn(rill__txn_t *t, rd_kafka_resp_err_t err, const char *reason)
{
    rd_kafka_error_t *e = call(t, CALL_ABORT, NULL, NULL);
    if (e) {
        fail_error(t, "abort_transaction", e);
        return;
    }
    rill_log(RILL_LOG_WARNING, "kafka.txn",
             "transaction %" PRIu64 " (%" PRIu64 " records) aborted: %s; rewinding", t->seq,
             t->records, reason);
    aborted(t, err, reason);
    finish(t, 0);
}

/* An error of a call within the commit: abort when librdkafka says so,
 * else fail. */
static void call_failed(rill__txn_t *t, int what, rd_kafka_error_t *e)
{
    if (rd_kafka_error_txn_requires_abort(e) && !rd_kafka_error_is_fatal(e)) {
        char reason[200];
        snprintf(reason, sizeof(reason), "%s: %s", call_name[what], rd_kafka_error_string(e));
        rd_kafka_resp_err_t code = rd_kafka_error_code(e);
        rd_kafka_error_destroy(e);
        abort_txn(t, code, reason);
        return;
    }
    fail_error(t, call_name[what], e);
}

/* Every answer is in: send each source's offsets and commit. */
static void commit(rill__txn_t *t)
{
    rd_kafka_topic_partition_list_t *all = rd_kafka_topic_partition_list_new(8);
    for (size_t i = 0; i < t->n_srcs; i++) {
        rill__txn_answer_t *a = t->srcs[i].answer;
        if (!a || !a->offsets || !a->offsets->cnt)
            continue;
        rd_kafka_error_t *e = call(t, CALL_OFFSETS, a->offsets, a->cgmd);
        if (e) {
            rd_kafka_topic_partition_list_destroy(all);
            call_failed(t, CALL_OFFSETS, e);
            return;
        }
        for (int j = 0; all && j < a->offsets->cnt; j++)
            rd_kafka_topic_partition_list_add(all, a->offsets->elems[j].topic,
                                              a->offsets->elems[j].partition)
                ->offset = a->offsets->elems[j].offset;
    }
    rd_kafka_error_t *e = call(t, CALL_COMMIT, NULL, NULL);
    if (e) {
        rd_kafka_topic_partition_list_destroy(all);
        call_failed(t, CALL_COMMIT, e);
        return;
    }
    int64_t now = rill__now_ns();
    rill_hist_record(&t->stats->txn_latency,
                     now > t->decided_ns ? (uint64_t)(now - t->decided_ns) : 0);
    t->stats->txn_committed++;
    t->stats->txn_records_committed += t->records;
    tell_cb(t, RILL_TXN_COMMITTED, all, RD_KAFKA_RESP_ERR_NO_ERROR, NULL);
    if (all)
        rd_kafka_topic_partition_list_destroy(all);
    finish(t, 1);
}

/* Ask every source with records in the transaction, or that asked for
 * the commit, for its offsets. */
static void ask(rill__txn_t *t)
{
    t->state = T_ASK;
    wait_from_now(t);
    for (size_t i = 0; i < t->n_srcs; i++) {
        tsrc_t *s = &t->srcs[i];
        if (!s->n_parts && !s->barrier)
            continue;
        rill__txn_ask_t *q = malloc(sizeof(*q) + s->n_parts * sizeof(q->v[0]));
        if (!q) {
            rill__stage_fail(t->st, RILL_ENOMEM, "out of memory");
            return;
        }
        q->sink = t->st->self;
        q->seq = t->seq;
        q->n = (uint32_t)s->n_parts;
        for (size_t j = 0; j < s->n_parts; j++)
            q->v[j] = (rill__txn_need_t){.key = s->parts[j].key, .upto = s->parts[j].upto};
        s->asked = 1;
        send_source(t, s->aid, RILL__TXN_OFFSETS, q, free);
    }
}

static void decide(rill__txn_t *t)
{
    t->state = T_FLUSH;
    t->decided_ns = rill__now_ns();
    wait_from_now(t);
}

/* One step of the commit; 1 if it may take another at once. */
static int step(rill__txn_t *t, int final)
{
    uint32_t inflight = *t->inflight;
    int64_t now = rill__now_ms();
    int barrier = 0;
    for (size_t i = 0; i < t->n_srcs; i++)
        barrier |= t->srcs[i].barrier;
    if (t->state == T_OPEN &&
        (final || barrier || t->doomed || t->records >= t->conf->o.txn_records ||
         now - t->begun_ms >= (int64_t)t->conf->o.txn_ms)) {
        decide(t);
        return 1;
    }
    if (t->state == T_IDLE && barrier) {
        finish(t, 1); /* nothing open: the source may release its partitions now */
        return 0;
    }
    if (t->state == T_FLUSH && inflight) {
        /* Deliver what is in flight now, without waiting out linger.ms
         * (5 ms by default: most of a small transaction's cost on the mock,
         * bench_txn): the reports are served here, their confirms go to
         * the sources at the end of this turn. Bounded like every call. */
        rd_kafka_flush(t->rk, (int)t->conf->o.txn_timeout_ms);
        inflight = *t->inflight;
        if (inflight)
            return 0; /* not delivered in time: the wait below fails the stage */
    }
    if (t->state == T_FLUSH && !inflight) {
        if (t->doomed)
            abort_txn(t, t->doom_err, t->doom_reason);
        else
            ask(t);
        return 1;
    }
    if (t->state == T_ASK) {
        int waiting = 0;
        for (size_t i = 0; i < t->n_srcs; i++) {
            tsrc_t *s = &t->srcs[i];
            if (s->asked && !s->answer) {
                waiting = 1;
            } else if (s->answer && s->answer->err) {
                /* (finish frees the answer after the reason was told) */
                abort_txn(t, RD_KAFKA_RESP_ERR__STATE, s->answer->reason);
                return 0;
            }
        }
        if (!waiting) {
            commit(t);
            return 0;
        }
    }
    if ((t->state == T_FLUSH || t->state == T_ASK || any_floor_wait(t)) &&
        now >= t->wait_deadline_ms)
        rill__stage_fail(t->st, RILL_ETIMEDOUT,
                         "the transaction's %s did not come within rill.txn.timeout.ms (%u ms)",
                         t->state == T_FLUSH ? "deliveries"
                         : t->state == T_ASK ? "offsets from its Kafka source"
                                             : "rewind of its Kafka source",
                         t->conf->o.txn_timeout_ms);
    return 0;
}

int rill__txn_pump(rill__txn_t *t, int final)
{
    if (!t->st || t->st->failed)
        return 0;
    for (int i = 0; i < 4 && !t->st->failed && step(t, final); i++)
        ;
    return !t->st->failed && t->state == T_IDLE && !any_floor_wait(t);
}

void rill__txn_msg(rill__txn_t *t, rill_msg_t *m)
{
    tsrc_t *s;
    switch (m->arg) {
    case RILL__TXN_REFUSED:
        rill__stage_fail(t->st, RILL_EINVAL, "%s",
                         m->payload ? (const char *)m->payload : "a Kafka source refused");
        return;
    case RILL__TXN_ANSWER: {
        rill__txn_answer_t *a = m->payload;
        s = a ? src_find(t, a->source) : NULL;
        if (!s || !s->asked || s->answer || a->seq != t->seq || t->state != T_ASK)
            return; /* late: the transaction it was for is over */
        s->answer = rill_msg_take(m);
        return;
    }
    case RILL__TXN_BARRIER:
        s = src_find(t, (rill_aid_t){m->corr});
        if (!s && !(s = src_add(t, (rill_aid_t){m->corr}))) {
            rill__stage_fail(t->st, RILL_ENOMEM, "out of memory");
            return;
        }
        /* Commit now (or, in a commit already under way, be told its end). */
        s->barrier = 1;
        return;
    case RILL__TXN_FLOOR: {
        const rill__txn_floor_t *f = m->payload;
        s = f ? src_find(t, f->source) : NULL;
        if (s) {
            if (f->floor > s->floor)
                s->floor = f->floor;
            s->floor_wait = 0;
        }
        return;
    }
    default:
        return;
    }
}

void rill__txn_free(rill__txn_t *t)
{
    if (!t)
        return;
    /* A stage that stops with a transaction open aborts it: its records
     * come again from the last committed offsets. One it cannot abort (a
     * fatal error, an abort refused) is abandoned: never committed, and
     * aborted by the coordinator when the next producer with this
     * transactional.id starts (or after transaction.timeout.ms). Either
     * way it is told and counted as aborted. */
    if (t->rk && t->stats && t->state != T_IDLE) {
        char fatal[160], reason[240];
        rd_kafka_resp_err_t code = rd_kafka_fatal_error(t->rk, fatal, sizeof(fatal));
        if (code) {
            snprintf(reason, sizeof(reason), "abandoned (fatal: %s)", fatal);
        } else {
            rd_kafka_error_t *e = rd_kafka_abort_transaction(t->rk, (int)t->conf->o.txn_timeout_ms);
            code = e ? rd_kafka_error_code(e) : RD_KAFKA_RESP_ERR__DESTROY;
            snprintf(reason, sizeof(reason), "%s%s",
                     e ? "abandoned (abort at stop: " : "the sink stopped",
                     e ? rd_kafka_error_string(e) : "");
            if (e) {
                strncat(reason, ")", sizeof(reason) - strlen(reason) - 1);
                rd_kafka_error_destroy(e);
            }
        }
        if (code != RD_KAFKA_RESP_ERR__DESTROY)
            rill_log(RILL_LOG_WARNING, "kafka.txn",
                     "transaction %" PRIu64 " (%" PRIu64 " records) %s", t->seq, t->records,
                     reason);
        aborted(t, code, reason);
    }
    for (size_t i = 0; i < t->n_srcs; i++) {
        if (t->st)
            send_source(t, t->srcs[i].aid, RILL__TXN_LEAVE, NULL, NULL);
        free(t->srcs[i].parts);
        rill__txn_answer_free(t->srcs[i].answer);
    }
    free(t->srcs);
    free(t);
}
