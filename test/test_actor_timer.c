/*
 * Timers (one-shot, repeating, cancelled, stopped with their actor) and
 * ask (reply with the same corr, timeout then a dropped late reply, and the
 * blocking rill_ask_sync).
 *
 * Timers and asks are actor-context calls: the test runs them inside a
 * kit_recorder with kit_run_in, and the recorder logs what arrives. Waiting
 * for "nothing more happens" uses a later one-shot timer as a fence: once it
 * fired, anything due before it would have fired too.
 */
#include <stdatomic.h>
#include <time.h>
#include <stdint.h>
#include <string.h>

#include "support/rtest.h"

#include "support/actor_kit.h"

enum {
    MSG_TICK = KIT_MSG_APP,
    MSG_FENCE,
    MSG_REQ, /* the responder replies MSG_RESP with arg + 1 */
    MSG_RESP,
    MSG_HOLD,      /* the responder keeps the request, replies later */
    MSG_REPLY_NOW, /* the responder replies to the held request */
    MSG_TERMINATED /* logged by terminate hooks */
};

struct timer_req {
    uint64_t after_ms, repeat_ms;
    uint32_t type;
    uint64_t arg;
    kit_tally_t *tally; /* NULL: no payload */
    rill_timer_t id;
    rill_err_t result;
    void *payload;
    int64_t started_ms;
};

static void do_timer_start(rill_ctx_t *ctx, void *arg)
{
    struct timer_req *r = arg;
    rill_msg_t m = kit_msg(r->type, r->arg, r->tally);
    r->payload = m.payload;
    r->started_ms = kit_now_ms();
    r->result = rill_timer_start(ctx, r->after_ms, r->repeat_ms, &m, &r->id);
    if (r->result != RILL_OK)
        kit_payload_reclaim(m.payload);
}

static void do_timer_cancel(rill_ctx_t *ctx, void *arg)
{
    struct timer_req *r = arg;
    r->result = rill_timer_cancel(ctx, r->id);
}

struct world {
    rill_system_t *sys;
    kit_log_t *log;
    rill_aid_t rec; /* a recorder to run things in */
    kit_tally_t tally;
};

static void world_init(struct world *w, int executors)
{
    memset(w, 0, sizeof(*w));
    w->sys = kit_system(executors, 0, 0, 1);
    cr_assert_not_null(w->sys);
    w->log = kit_log_new();
    cr_assert_not_null(w->log);
    w->rec = kit_spawn_recorder(w->sys, w->log, 0);
    cr_assert(!rill_aid_is_none(w->rec));
}

static void world_free(struct world *w)
{
    rill_system_destroy(w->sys);
    kit_log_free(w->log);
}

/* Start a timer in `in` and check it started. */
static struct timer_req start_timer(struct world *w, rill_aid_t in, uint64_t after_ms,
                                    uint64_t repeat_ms, uint32_t type, uint64_t arg, int tracked)
{
    struct timer_req r = {.after_ms = after_ms,
                          .repeat_ms = repeat_ms,
                          .type = type,
                          .arg = arg,
                          .tally = tracked ? &w->tally : NULL,
                          .result = RILL_ETIMEDOUT};
    cr_assert_eq(kit_run_in(w->sys, in, do_timer_start, &r), RILL_OK);
    cr_assert_eq(r.result, RILL_OK, "rill_timer_start: %s", rill_err_name(r.result));
    return r;
}

static size_t count_arg(kit_log_t *log, uint32_t type, uint64_t arg)
{
    size_t n = 0;
    for (size_t i = 0; i < kit_log_size(log) && i < KIT_LOG_MAX; i++) {
        kit_event_t e = kit_log_at(log, i);
        n += e.type == type && e.arg == arg;
    }
    return n;
}

Test(actor_timer, one_shot_fires_once_and_not_early, .timeout = 60)
{
    struct world w;
    world_init(&w, 1);
    struct timer_req t = start_timer(&w, w.rec, 100, 0, MSG_TICK, 1, 1);
    start_timer(&w, w.rec, 400, 0, MSG_FENCE, 2, 0);
    cr_assert(kit_log_wait_type(w.log, MSG_FENCE, 1, KIT_WAIT_MS));

    cr_assert_eq(count_arg(w.log, MSG_TICK, 1), 1, "a one-shot fires exactly once");
    kit_event_t tick = kit_log_at(w.log, 0);
    cr_assert_eq(tick.type, MSG_TICK);
    cr_assert_eq(tick.value, 1, "the payload reaches the handler");
    cr_assert_geq(tick.at_ms - t.started_ms, 95, "fired after %lld ms, asked 100",
                  (long long)(tick.at_ms - t.started_ms));
    cr_assert(kit_wait_at_least(&w.tally.released, 1, KIT_WAIT_MS), "payload freed after");

    /* Fired: it cannot be cancelled any more. */
    cr_assert_eq(kit_run_in(w.sys, w.rec, do_timer_cancel, &t), RILL_OK);
    cr_assert_eq(t.result, RILL_ENOENT, "%s", rill_err_name(t.result));
    world_free(&w);
    cr_assert_eq(atomic_load(&w.tally.released), 1);
}

struct timer_batch {
    struct timer_req r[6];
    int64_t started_us[6];
};

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* All six from one turn of the actor, each with the time it was started. */
static void do_timer_batch(rill_ctx_t *ctx, void *arg)
{
    struct timer_batch *b = arg;
    for (int i = 0; i < 6; i++) {
        b->started_us[i] = mono_us();
        do_timer_start(ctx, &b->r[i]);
    }
}

/* Timers fire in the order of their deadlines (start + after). The
 * deadlines are taken from when each was started, so a thread held up
 * between two starts cannot make the test fail: only timers whose
 * deadlines are within the clock's slack of each other may come in
 * either order. */
Test(actor_timer, one_shots_fire_in_deadline_order, .timeout = 60)
{
    struct world w;
    world_init(&w, 1);
    static const uint64_t after[] = {150, 30, 120, 60, 90, 0};
    struct timer_batch b;
    memset(&b, 0, sizeof(b));
    for (int i = 0; i < 6; i++)
        b.r[i] = (struct timer_req){
            .after_ms = after[i], .type = MSG_TICK, .arg = (uint64_t)i, .result = RILL_ETIMEDOUT};
    cr_assert_eq(kit_run_in(w.sys, w.rec, do_timer_batch, &b), RILL_OK);
    for (int i = 0; i < 6; i++) {
        cr_assert_eq(b.r[i].result, RILL_OK, "rill_timer_start: %s", rill_err_name(b.r[i].result));
        for (int k = 0; k < i; k++)
            cr_assert_neq(b.r[k].id.id, b.r[i].id.id, "timer ids are distinct");
    }
    cr_assert(kit_log_wait_type(w.log, MSG_TICK, 6, KIT_WAIT_MS));
    cr_assert_eq(kit_log_count(w.log, MSG_TICK), 6, "each fired once");
    const int64_t slack_us = 2000; /* libev's clock against ours, rounding */
    int64_t prev_deadline = INT64_MIN;
    int fired[6] = {0};
    for (size_t i = 0; i < 6; i++) {
        kit_event_t e = kit_log_at(w.log, i);
        cr_assert_lt(e.arg, 6);
        fired[e.arg]++;
        int64_t deadline = b.started_us[e.arg] + (int64_t)after[e.arg] * 1000;
        cr_assert_geq(deadline + slack_us, prev_deadline,
                      "timer %llu (after %llu ms) fired after one with a later deadline",
                      (unsigned long long)e.arg, (unsigned long long)after[e.arg]);
        if (deadline > prev_deadline)
            prev_deadline = deadline;
    }
    for (int i = 0; i < 6; i++)
        cr_assert_eq(fired[i], 1, "timer %d fired %d times", i, fired[i]);
    world_free(&w);
}

struct cancel_count {
    struct timer_req *timer;
    kit_log_t *log;
    size_t ticks_at_cancel;
};

/* Cancel, and count the ticks handled so far: the count is exact because
 * the recorder logs ticks on this same thread. */
static void do_cancel_counting(rill_ctx_t *ctx, void *arg)
{
    struct cancel_count *c = arg;
    c->timer->result = rill_timer_cancel(ctx, c->timer->id);
    c->ticks_at_cancel = kit_log_count(c->log, MSG_TICK);
}

Test(actor_timer, repeating_timer_fires_until_cancelled, .timeout = 60)
{
    struct world w;
    world_init(&w, 1);
    struct timer_req t = start_timer(&w, w.rec, 10, 10, MSG_TICK, 3, 1);
    cr_assert(kit_log_wait_type(w.log, MSG_TICK, 5, KIT_WAIT_MS));

    struct cancel_count c = {&t, w.log, 0};
    cr_assert_eq(kit_run_in(w.sys, w.rec, do_cancel_counting, &c), RILL_OK);
    cr_assert_eq(t.result, RILL_OK, "cancel: %s", rill_err_name(t.result));
    cr_assert_geq(c.ticks_at_cancel, 5);
    start_timer(&w, w.rec, 100, 0, MSG_FENCE, 0, 0);
    cr_assert(kit_log_wait_type(w.log, MSG_FENCE, 1, KIT_WAIT_MS));
    cr_assert_eq(kit_log_count(w.log, MSG_TICK), c.ticks_at_cancel, "ticks after the cancel");

    /* Lent on every tick, freed once when cancelled. */
    for (size_t i = 0; i < c.ticks_at_cancel; i++) {
        kit_event_t e = kit_log_at(w.log, i);
        cr_assert_eq(e.payload, t.payload, "tick %zu lends the same payload", i);
        cr_assert_eq(e.arg, 3);
    }
    cr_assert(kit_wait_at_least(&w.tally.released, 1, KIT_WAIT_MS), "cancel frees the payload");
    cr_assert_eq(kit_run_in(w.sys, w.rec, do_timer_cancel, &t), RILL_OK);
    cr_assert_eq(t.result, RILL_ENOENT, "cancelled twice: %s", rill_err_name(t.result));
    world_free(&w);
    cr_assert_eq(atomic_load(&w.tally.released), 1);
}

/* A recorder whose terminate hook logs MSG_TERMINATED. */
static void log_terminate(rill_ctx_t *ctx, void *state, const rill_exit_t *reason)
{
    rill_msg_t m = kit_msg(MSG_TERMINATED, reason->kind, NULL);
    kit_log_add(state, ctx, &m);
}

Test(actor_timer, timers_stop_with_their_actor, .timeout = 60)
{
    struct world w;
    world_init(&w, 1);
    kit_log_t *log = kit_log_new();
    cr_assert_not_null(log);
    rill_spawn_opts_t o;
    memset(&o, 0, sizeof(o));
    o.behavior = kit_recorder;
    o.terminate = log_terminate;
    o.state = log;
    rill_aid_t aid = RILL_AID_NONE;
    cr_assert_eq(rill_spawn(w.sys, &o, &aid), RILL_OK);

    start_timer(&w, aid, 5, 5, MSG_TICK, 1, 1);           /* repeating: lent payload */
    start_timer(&w, aid, 3600 * 1000, 0, MSG_TICK, 2, 1); /* one-shot, never due */
    cr_assert(kit_log_wait_type(log, MSG_TICK, 3, KIT_WAIT_MS));
    cr_assert_eq(rill_stop(w.sys, aid), RILL_OK);
    cr_assert(kit_wait_dead(w.sys, aid, KIT_WAIT_MS));
    cr_assert(kit_wait_at_least(&w.tally.released, 2, KIT_WAIT_MS),
              "released %ld of 2 timer payloads", atomic_load(&w.tally.released));

    /* Ticks every 5 ms would have come before a 60 ms timer on the same
     * executor. */
    start_timer(&w, w.rec, 60, 0, MSG_FENCE, 0, 0);
    cr_assert(kit_log_wait_type(w.log, MSG_FENCE, 1, KIT_WAIT_MS));
    size_t n = kit_log_size(log);
    cr_assert_geq(n, 4);
    cr_assert_eq(kit_log_at(log, n - 1).type, MSG_TERMINATED, "nothing after terminate");
    cr_assert_eq(kit_log_count(log, MSG_TERMINATED), 1);
    world_free(&w);
    cr_assert_eq(atomic_load(&w.tally.released), 2);
    kit_log_free(log);
}

Test(actor_timer, cancel_unknown_or_fired_is_enoent_and_cancel_frees, .timeout = 60)
{
    struct world w;
    world_init(&w, 1);
    struct timer_req unknown = {.id = {0x7fffffff}};
    cr_assert_eq(kit_run_in(w.sys, w.rec, do_timer_cancel, &unknown), RILL_OK);
    cr_assert_eq(unknown.result, RILL_ENOENT, "%s", rill_err_name(unknown.result));
    unknown.id = (rill_timer_t){0};
    cr_assert_eq(kit_run_in(w.sys, w.rec, do_timer_cancel, &unknown), RILL_OK);
    cr_assert_eq(unknown.result, RILL_ENOENT, "%s", rill_err_name(unknown.result));

    struct timer_req t = start_timer(&w, w.rec, 3600 * 1000, 0, MSG_TICK, 1, 1);
    cr_assert_eq(kit_run_in(w.sys, w.rec, do_timer_cancel, &t), RILL_OK);
    cr_assert_eq(t.result, RILL_OK, "%s", rill_err_name(t.result));
    cr_assert(kit_wait_at_least(&w.tally.released, 1, KIT_WAIT_MS), "a cancelled one-shot's "
                                                                    "payload is freed");
    cr_assert_eq(kit_run_in(w.sys, w.rec, do_timer_cancel, &t), RILL_OK);
    cr_assert_eq(t.result, RILL_ENOENT);

    /* Another actor's timer id is not ours to cancel. */
    kit_log_t *other_log = kit_log_new();
    rill_aid_t other = kit_spawn_recorder(w.sys, other_log, 0);
    struct timer_req theirs = start_timer(&w, other, 3600 * 1000, 0, MSG_TICK, 2, 1);
    cr_assert_eq(kit_run_in(w.sys, w.rec, do_timer_cancel, &theirs), RILL_OK);
    cr_assert_eq(theirs.result, RILL_ENOENT, "%s", rill_err_name(theirs.result));
    cr_assert_eq(kit_run_in(w.sys, other, do_timer_cancel, &theirs), RILL_OK);
    cr_assert_eq(theirs.result, RILL_OK);
    world_free(&w);
    cr_assert_eq(atomic_load(&w.tally.released), 2);
    kit_log_free(other_log);
}

/* ---- ask ------------------------------------------------------------- */

typedef struct responder {
    kit_log_t *log;
    kit_tally_t *tally;
    rill_msg_t held;         /* executor thread only */
    atomic_int reply_result; /* last rill_reply result, -1 before */
    atomic_long replies;     /* rill_reply calls */
} responder_t;

static void respond(rill_ctx_t *ctx, responder_t *r, const rill_msg_t *req, uint64_t arg)
{
    rill_msg_t reply = kit_msg(MSG_RESP, arg, r->tally);
    rill_err_t e = rill_reply(ctx, req, &reply);
    if (e != RILL_OK)
        kit_payload_reclaim(reply.payload);
    atomic_store(&r->reply_result, (int)e);
    atomic_fetch_add_explicit(&r->replies, 1, memory_order_release);
}

static rill_err_t responder_behavior(rill_ctx_t *ctx, void *state, rill_msg_t *msg)
{
    responder_t *r = state;
    switch (msg->type) {
    case MSG_REQ:
        respond(ctx, r, msg, msg->arg + 1);
        return RILL_OK;
    case MSG_HOLD:
        r->held = *msg;
        r->held.payload = NULL; /* rill frees the request's payload; keep the envelope */
        r->held.dtor = NULL;
        kit_log_add(r->log, ctx, msg);
        return RILL_OK;
    case MSG_REPLY_NOW:
        respond(ctx, r, &r->held, 99);
        return RILL_OK;
    default:
        return kit_recorder(ctx, r->log, msg);
    }
}

static rill_aid_t spawn_responder(struct world *w, responder_t *r, kit_log_t *log, int executor)
{
    memset(r, 0, sizeof(*r));
    r->log = log;
    r->tally = &w->tally;
    atomic_store(&r->reply_result, -1);
    rill_spawn_opts_t o;
    memset(&o, 0, sizeof(o));
    o.behavior = responder_behavior;
    o.state = r;
    o.executor = KIT_EXEC(executor);
    rill_aid_t aid = RILL_AID_NONE;
    cr_assert_eq(rill_spawn(w->sys, &o, &aid), RILL_OK);
    return aid;
}

struct ask_req {
    rill_aid_t to;
    uint32_t type;
    uint64_t arg;
    int timeout_ms;
    kit_tally_t *tally;
    uint64_t corr;
    rill_err_t result;
};

static void do_ask(rill_ctx_t *ctx, void *arg)
{
    struct ask_req *a = arg;
    rill_msg_t m = kit_msg(a->type, a->arg, a->tally);
    a->result = rill_ask(ctx, a->to, &m, a->timeout_ms, &a->corr);
    if (a->result != RILL_OK)
        kit_payload_reclaim(m.payload);
}

static struct ask_req ask_from(struct world *w, rill_aid_t to, uint32_t type, uint64_t arg,
                               int timeout_ms)
{
    struct ask_req a = {to, type, arg, timeout_ms, &w->tally, 0, RILL_ETIMEDOUT};
    cr_assert_eq(kit_run_in(w->sys, w->rec, do_ask, &a), RILL_OK);
    return a;
}

static uint64_t dead_letters(rill_system_t *sys)
{
    rill_system_stats_t s;
    memset(&s, 0, sizeof(s));
    rill_system_stats(sys, &s);
    return s.dead_letters;
}

Test(actor_ask, reply_arrives_with_the_same_corr, .timeout = 60)
{
    struct world w;
    world_init(&w, 2);
    kit_log_t *rlog = kit_log_new();
    responder_t r;
    rill_aid_t resp = spawn_responder(&w, &r, rlog, 1);

    /* A timeout no loaded machine reaches before the reply; the fence
     * below is after it, so either ask's timeout, had it not been
     * cancelled by the reply, would fire before the fence (timers fire in
     * deadline order). */
    enum { ASK_MS = 2000 };
    struct ask_req a = ask_from(&w, resp, MSG_REQ, 7, ASK_MS);
    cr_assert_eq(a.result, RILL_OK, "%s", rill_err_name(a.result));
    cr_assert_neq(a.corr, 0);
    struct ask_req b = ask_from(&w, resp, MSG_REQ, 70, ASK_MS);
    cr_assert_eq(b.result, RILL_OK);
    cr_assert_neq(a.corr, b.corr, "each ask has its own corr");

    cr_assert(kit_log_wait_type(w.log, MSG_RESP, 2, KIT_WAIT_MS));
    for (size_t i = 0; i < 2; i++) {
        kit_event_t e = kit_log_at(w.log, i);
        cr_assert_eq(e.type, MSG_RESP);
        cr_assert(rill_aid_eq(e.from, resp), "rill_reply sets from");
        cr_assert_eq(e.corr, e.arg == 8 ? a.corr : b.corr, "reply %zu corr", i);
        cr_assert(e.arg == 8 || e.arg == 71);
        cr_assert_eq(e.value, e.arg, "the reply payload arrives");
    }
    /* Answered asks do not also time out. */
    start_timer(&w, w.rec, ASK_MS + 10, 0, MSG_FENCE, 0, 0);
    cr_assert(kit_log_wait_type(w.log, MSG_FENCE, 1, KIT_WAIT_MS + ASK_MS));
    cr_assert_eq(kit_log_count(w.log, RILL_MSG_ASK_TIMEOUT), 0);
    world_free(&w);
    /* Two requests, two replies. */
    cr_assert_eq(atomic_load(&w.tally.released), 4);
    kit_log_free(rlog);
}

static int replied(void *arg)
{
    return atomic_load_explicit(&((responder_t *)arg)->replies, memory_order_acquire) > 0;
}

Test(actor_ask, timeout_delivers_ask_timeout_and_the_late_reply_is_dropped, .timeout = 60)
{
    struct world w;
    world_init(&w, 2);
    kit_log_t *rlog = kit_log_new();
    responder_t r;
    rill_aid_t resp = spawn_responder(&w, &r, rlog, 1);

    struct ask_req a = ask_from(&w, resp, MSG_HOLD, 1, 50);
    cr_assert_eq(a.result, RILL_OK);
    cr_assert(kit_log_wait_type(w.log, RILL_MSG_ASK_TIMEOUT, 1, KIT_WAIT_MS));
    kit_event_t to = kit_log_at(w.log, 0);
    cr_assert_eq(to.type, RILL_MSG_ASK_TIMEOUT);
    cr_assert_eq(to.corr, a.corr, "the timeout names the ask");
    cr_assert(kit_log_wait_type(rlog, MSG_HOLD, 1, KIT_WAIT_MS), "the request was delivered");

    uint64_t before = dead_letters(w.sys);
    long released_before = atomic_load(&w.tally.released);
    rill_msg_t now = kit_msg(MSG_REPLY_NOW, 0, NULL);
    cr_assert_eq(rill_tell(w.sys, resp, &now), RILL_OK);
    cr_assert(kit_wait_until(replied, &r, KIT_WAIT_MS));
    cr_assert_eq(atomic_load(&r.reply_result), RILL_OK, "the requester is alive: %s",
                 rill_err_name((rill_err_t)atomic_load(&r.reply_result)));
    cr_assert(kit_wait_dead_letters(w.sys, before + 1, KIT_WAIT_MS), "late reply not counted");
    cr_assert(kit_wait_at_least(&w.tally.released, released_before + 1, KIT_WAIT_MS),
              "the late reply's payload is freed");
    cr_assert_eq(kit_fence(w.sys, w.rec), RILL_OK);
    cr_assert_eq(kit_log_count(w.log, MSG_RESP), 0, "the late reply was delivered");
    cr_assert_eq(kit_log_count(w.log, RILL_MSG_ASK_TIMEOUT), 1);
    world_free(&w);
    cr_assert_eq(atomic_load(&w.tally.released), 2, "request and late reply");
    kit_log_free(rlog);
}

Test(actor_ask, ask_to_a_dead_actor_fails_and_leaves_nothing_pending, .timeout = 60)
{
    struct world w;
    world_init(&w, 1);
    kit_log_t *rlog = kit_log_new();
    responder_t r;
    rill_aid_t resp = spawn_responder(&w, &r, rlog, 0);
    cr_assert_eq(rill_stop(w.sys, resp), RILL_OK);
    cr_assert(kit_wait_dead(w.sys, resp, KIT_WAIT_MS));

    struct ask_req a = ask_from(&w, resp, MSG_REQ, 1, 20);
    cr_assert_eq(a.result, RILL_ESTOPPED, "%s", rill_err_name(a.result));
    start_timer(&w, w.rec, 200, 0, MSG_FENCE, 0, 0);
    cr_assert(kit_log_wait_type(w.log, MSG_FENCE, 1, KIT_WAIT_MS));
    cr_assert_eq(kit_log_count(w.log, RILL_MSG_ASK_TIMEOUT), 0, "nothing was pending");
    world_free(&w);
    cr_assert_eq(atomic_load(&w.tally.released), 0);
    cr_assert_eq(atomic_load(&w.tally.reclaimed), 1);
    kit_log_free(rlog);
}

Test(actor_ask, reply_to_a_request_without_sender_is_einval, .timeout = 60)
{
    struct world w;
    world_init(&w, 1);
    kit_log_t *rlog = kit_log_new();
    responder_t r;
    rill_aid_t resp = spawn_responder(&w, &r, rlog, 0);
    rill_msg_t m = kit_msg(MSG_REQ, 1, NULL); /* from = 0: told from outside */
    cr_assert_eq(rill_tell(w.sys, resp, &m), RILL_OK);
    cr_assert(kit_wait_until(replied, &r, KIT_WAIT_MS));
    cr_assert_eq(atomic_load(&r.reply_result), RILL_EINVAL, "%s",
                 rill_err_name((rill_err_t)atomic_load(&r.reply_result)));
    world_free(&w);
    cr_assert_eq(atomic_load(&w.tally.released), 0);
    cr_assert_eq(atomic_load(&w.tally.reclaimed), 1, "the refused reply stayed the sender's");
    kit_log_free(rlog);
}

struct plain_send {
    rill_aid_t to;
    rill_err_t result;
};

static void do_plain_send(rill_ctx_t *ctx, void *arg)
{
    struct plain_send *p = arg;
    rill_msg_t m = kit_msg(MSG_REQ, 10, NULL);
    p->result = rill_send(ctx, p->to, &m);
}

Test(actor_ask, reply_to_a_request_sent_with_rill_send_reaches_the_sender, .timeout = 60)
{
    struct world w;
    world_init(&w, 2);
    kit_log_t *rlog = kit_log_new();
    responder_t r;
    rill_aid_t resp = spawn_responder(&w, &r, rlog, 1);
    /* "sends reply to request->from": the request need not be an ask. */
    struct plain_send p = {resp, RILL_EINVAL};
    cr_assert_eq(kit_run_in(w.sys, w.rec, do_plain_send, &p), RILL_OK);
    cr_assert_eq(p.result, RILL_OK);
    cr_assert(kit_wait_until(replied, &r, KIT_WAIT_MS));
    cr_assert_eq(atomic_load(&r.reply_result), RILL_OK);
    cr_assert(kit_log_wait_type(w.log, MSG_RESP, 1, KIT_WAIT_MS),
              "the reply to a plain request never arrived (dead letters: %llu)",
              (unsigned long long)dead_letters(w.sys));
    kit_event_t e = kit_log_at(w.log, 0);
    cr_assert_eq(e.arg, 11);
    cr_assert(rill_aid_eq(e.from, resp));
    cr_assert_eq(e.corr, 0, "the request's corr");
    world_free(&w);
    kit_log_free(rlog);
}

Test(actor_ask, ask_sync_from_the_main_thread_returns_the_reply, .timeout = 60)
{
    struct world w;
    world_init(&w, 1);
    kit_log_t *rlog = kit_log_new();
    responder_t r;
    rill_aid_t resp = spawn_responder(&w, &r, rlog, 0);

    for (uint64_t i = 0; i < 20; i++) {
        rill_msg_t req = kit_msg(MSG_REQ, 41 + i, &w.tally), reply;
        memset(&reply, 0, sizeof(reply));
        rill_err_t e = rill_ask_sync(w.sys, resp, &req, KIT_WAIT_MS, &reply);
        cr_assert_eq(e, RILL_OK, "ask_sync %llu: %s", (unsigned long long)i, rill_err_name(e));
        cr_assert_eq(reply.type, MSG_RESP);
        cr_assert_eq(reply.arg, 42 + i, "the reply to this request, not an earlier one");
        cr_assert(rill_aid_eq(reply.from, resp));
        cr_assert_not_null(reply.payload);
        cr_assert_eq(kit_payload_value(reply.payload), 42 + i);
        cr_assert_eq(reply.dtor, kit_payload_free, "the reply's dtor comes with it");
        reply.dtor(reply.payload); /* ours now */
    }
    world_free(&w);
    cr_assert_eq(atomic_load(&w.tally.released), 40);
    kit_log_free(rlog);
}

Test(actor_ask, ask_sync_times_out_against_a_silent_actor, .timeout = 60)
{
    struct world w;
    world_init(&w, 1);
    kit_log_t *rlog = kit_log_new();
    responder_t r;
    rill_aid_t resp = spawn_responder(&w, &r, rlog, 0);

    rill_msg_t req = kit_msg(MSG_HOLD, 1, &w.tally), reply;
    memset(&reply, 0, sizeof(reply));
    int64_t t0 = kit_now_ms();
    rill_err_t e = rill_ask_sync(w.sys, resp, &req, 100, &reply);
    int64_t waited = kit_now_ms() - t0;
    cr_assert_eq(e, RILL_ETIMEDOUT, "%s", rill_err_name(e));
    cr_assert_geq(waited, 95, "returned after %lld ms of 100", (long long)waited);

    /* A reply after the timeout goes nowhere: refused (the replier keeps
     * and frees it) or accepted and then freed by rill. */
    rill_msg_t now = kit_msg(MSG_REPLY_NOW, 0, NULL);
    cr_assert_eq(rill_tell(w.sys, resp, &now), RILL_OK);
    cr_assert(kit_wait_until(replied, &r, KIT_WAIT_MS));
    int late = atomic_load(&r.reply_result);
    cr_assert(late == RILL_OK || late == RILL_ESTOPPED, "late reply: %s",
              rill_err_name((rill_err_t)late));
    if (late == RILL_OK)
        cr_assert(kit_wait_at_least(&w.tally.released, 2, KIT_WAIT_MS),
                  "request and late reply freed: %ld", atomic_load(&w.tally.released));
    else
        cr_assert(kit_wait_at_least(&w.tally.released, 1, KIT_WAIT_MS), "request freed");

    /* A later ask_sync is not confused by the stale reply. */
    rill_msg_t req2 = kit_msg(MSG_REQ, 5, &w.tally);
    memset(&reply, 0, sizeof(reply));
    cr_assert_eq(rill_ask_sync(w.sys, resp, &req2, KIT_WAIT_MS, &reply), RILL_OK);
    cr_assert_eq(reply.arg, 6);
    if (reply.dtor)
        reply.dtor(reply.payload);
    world_free(&w);
    cr_assert_eq(atomic_load(&w.tally.released) + atomic_load(&w.tally.reclaimed), 4,
                 "each payload freed exactly once");
    cr_assert_eq(atomic_load(&w.tally.made), 4);
    kit_log_free(rlog);
}

struct sync_from_executor {
    rill_aid_t to;
    rill_err_t result;
    kit_tally_t *tally;
};

static void do_ask_sync(rill_ctx_t *ctx, void *arg)
{
    struct sync_from_executor *s = arg;
    rill_msg_t req = kit_msg(MSG_REQ, 1, s->tally), reply;
    memset(&reply, 0, sizeof(reply));
    s->result = rill_ask_sync(rill_ctx_system(ctx), s->to, &req, 1000, &reply);
    if (s->result != RILL_OK)
        kit_payload_reclaim(req.payload);
    else if (reply.dtor)
        reply.dtor(reply.payload);
}

Test(actor_ask, ask_sync_errors, .timeout = 60)
{
    struct world w;
    world_init(&w, 2);
    kit_log_t *rlog = kit_log_new();
    responder_t r;
    rill_aid_t resp = spawn_responder(&w, &r, rlog, 1);

    /* From an executor thread: refused, not a deadlock. */
    struct sync_from_executor s = {resp, RILL_OK, &w.tally};
    cr_assert_eq(kit_run_in(w.sys, w.rec, do_ask_sync, &s), RILL_OK);
    cr_assert_eq(s.result, RILL_ESTATE, "%s", rill_err_name(s.result));

    /* To a dead actor: the send's error, at once. */
    cr_assert_eq(rill_stop(w.sys, resp), RILL_OK);
    cr_assert(kit_wait_dead(w.sys, resp, KIT_WAIT_MS));
    rill_msg_t req = kit_msg(MSG_REQ, 1, &w.tally), reply;
    cr_assert_eq(rill_ask_sync(w.sys, resp, &req, KIT_WAIT_MS, &reply), RILL_ESTOPPED);
    kit_payload_reclaim(req.payload);
    world_free(&w);
    kit_log_free(rlog);

    cr_assert_eq(atomic_load(&w.tally.released), 0);
}

/* Holds the executor in its first message until the gate opens. */
static rill_err_t gated_behavior(rill_ctx_t *ctx, void *state, rill_msg_t *msg)
{
    kit_gate_t *g = state;
    if (atomic_load(&g->arrived) == 0)
        atomic_store(&g->passed_open, kit_gate_pass(g, 5000));
    return RILL_OK;
}

/* The only executor is held by `gated`'s first handler; the gate opens
 * itself after 5 s if the test does not open it first. */
static rill_aid_t spawn_gated(rill_system_t *sys, kit_gate_t *gate, uint32_t capacity)
{
    rill_spawn_opts_t o;
    memset(&o, 0, sizeof(o));
    o.behavior = gated_behavior;
    o.state = gate;
    o.mailbox_capacity = capacity;
    rill_aid_t aid = RILL_AID_NONE;
    cr_assert_eq(rill_spawn(sys, &o, &aid), RILL_OK);
    rill_msg_t m = kit_msg(MSG_REQ, 0, NULL);
    cr_assert_eq(rill_tell(sys, aid, &m), RILL_OK);
    cr_assert(kit_wait_at_least(&gate->arrived, 1, KIT_WAIT_MS));
    return aid;
}

Test(actor_ask, ask_sync_to_a_full_mailbox_is_efull_at_once, .timeout = 60)
{
    rill_system_t *sys = kit_system(1, 0, 0, 1);
    cr_assert_not_null(sys);
    kit_gate_t gate;
    kit_gate_init(&gate);
    rill_aid_t aid = spawn_gated(sys, &gate, 1);
    rill_msg_t fill = kit_msg(MSG_REQ, 0, NULL), reply;
    rill_err_t e = RILL_OK;
    for (int i = 0; i < 1024 && e == RILL_OK; i++)
        e = rill_tell(sys, aid, &fill);
    cr_assert_eq(e, RILL_EFULL);

    e = rill_ask_sync(sys, aid, &fill, 5000, &reply);
    kit_gate_open(&gate);
    cr_assert_eq(e, RILL_EFULL, "%s", rill_err_name(e));
    rill_system_destroy(sys);
    cr_assert(atomic_load(&gate.passed_open),
              "rill_ask_sync only returned once the busy handler gave up");
    kit_gate_destroy(&gate);
}

Test(actor_ask, ask_sync_times_out_while_the_executors_are_busy, .timeout = 60)
{
    rill_system_t *sys = kit_system(1, 0, 0, 1);
    cr_assert_not_null(sys);
    kit_gate_t gate;
    kit_gate_init(&gate);
    rill_aid_t aid = spawn_gated(sys, &gate, 16);
    rill_msg_t req = kit_msg(MSG_REQ, 1, NULL), reply;
    /* "wait up to timeout_ms for the reply": the target cannot answer
     * while the executor is held, so this must time out, not wait for the
     * executor. */
    rill_err_t e = rill_ask_sync(sys, aid, &req, 100, &reply);
    kit_gate_open(&gate);
    cr_assert_eq(e, RILL_ETIMEDOUT, "%s", rill_err_name(e));
    rill_system_destroy(sys);
    cr_assert(atomic_load(&gate.passed_open),
              "rill_ask_sync only returned once the busy handler gave up");
    kit_gate_destroy(&gate);
}
