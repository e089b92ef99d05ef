/*
 * Reactive Streams 1.0.4 conformance of rill's stages, rule by rule (test
 * names are rule numbers; docs/reactive-streams.md maps every rule to its
 * tests and says why the few that cannot apply do not), plus three
 * promises of rill's own (stream.h): a subscriber's mailbox never holds
 * more than its outstanding demand, a stage never has more demand
 * outstanding upstream than its mailbox capacity minus one, and
 * ON_SUBSCRIBE always precedes the first NEXT.
 *
 * Suites: rs, each rule in depth against one or two kinds; rs_kinds, the
 * rules of each role run over a table of every stage kind; rs_kafka, the
 * Kafka source and sink on the embedded broker.
 *
 * The system under test is always real stages. The other side of the
 * protocol is a PROBE actor that speaks it with the public signal
 * functions and records every signal it gets (type, corr, arg, sender,
 * order), per subscription (demand asked and elements received), and how
 * its handler ran (an owner flag to catch overlapping calls, a depth
 * counter, the frame address to catch recursion). A probe plays the
 * subscriber (it may request from inside its handler) or the publisher (it
 * may answer SUBSCRIBE with ON_SUBSCRIBE and REQUEST with NEXT). The test
 * thread can speak for a probe too: rill_stream_next(sys, rill_sub(stage), rill_pub(probe),
 * ...) is a NEXT from the probe as far as the stage can tell.
 *
 * Tests wait on the probe's condition variable with deadlines. There are
 * no fixed waits: that something does NOT happen is checked after a
 * positive synchronisation that orders it before a later event the test
 * waits for: the stage under test is gone (all it ever sent is queued) or
 * handled its first n messages, and then a fence went through the probe;
 * or a marker signal that must arrive after the one that must not; or
 * (2.3) the stage's full demand is outstanding with every element sent,
 * so it has handled them all and cannot ask for more.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support/rtest.h"

#include "support/actor_kit.h"

#include <rill/kafka.h>
#include <rill/stream.h>
#include <rill/testkit.h>

/* Signals a probe keeps in order, with their details (all are counted). */
#define PROBE_KEEP 512

/* Subscriptions a probe accounts for separately: slot = token % this. */
#define PROBE_SLOTS 8

enum {
    PROBE_HOLD = KIT_MSG_APP, /* wait on the kit_gate_t in payload */
    PROBE_EMIT                /* publisher: emit up to arg elements in all */
};

#define N_SIG                     (RILL_STREAM_ERROR - RILL_STREAM_SUBSCRIBE + 1)
#define SIG_IS_STREAM(t)          ((t) >= RILL_STREAM_SUBSCRIBE && (t) <= RILL_STREAM_ERROR)
#define SLOT_OF(token)            ((size_t)((token) % PROBE_SLOTS))
#define FRAME_SPREAD_LIMIT        (64 * 1024)
#define DEMAND_WINDOW_MAILBOX     8u
#define DEMAND_WINDOW_OUTSTANDING ((int64_t)DEMAND_WINDOW_MAILBOX - 1)

static int64_t sat_add(int64_t a, int64_t b)
{
    if (b <= 0)
        return a;
    return a > INT64_MAX - b ? INT64_MAX : a + b;
}

typedef struct sigrec {
    uint32_t type;
    uint64_t corr;
    uint64_t arg;
    rill_aid_t from;
} sigrec_t;

/* What a probe knows about one subscription (the slot of its token). */
typedef struct acct {
    int64_t requested; /* subscriber: demand asked (by the handler or the test) */
    int64_t received;  /* subscriber: NEXT signals */
    uint32_t first;    /* type of the first signal */
    int terminal;      /* COMPLETE or ERROR seen */
    uint64_t next_value;
    int has_value;
} acct_t;

typedef struct probe {
    /* Configuration: set before spawn, read-only afterwards. */
    int64_t request_on_subscribe; /* subscriber: REQUEST this inside ON_SUBSCRIBE */
    int64_t request_per_next;     /* subscriber: REQUEST this inside every NEXT */
    int64_t refill_below;         /* subscriber: when outstanding <= this ... */
    int64_t refill_chunk;         /* ... REQUEST this many more (0 = never) */
    int check_order;              /* subscriber: values of a subscription are consecutive */
    int check_depth;              /* subscriber: mailbox depth <= outstanding demand */
    int answer_subscribe;         /* publisher: SUBSCRIBE -> ON_SUBSCRIBE */
    int terminal_on_subscribe;    /* publisher: ... then COMPLETE (1) or ERROR EIO (2) */
    int complete_after_emit;      /* publisher: once emit_limit elements went, COMPLETE (1)
                                     or ERROR EIO (2) */
    int64_t window_limit;         /* publisher: outstanding demand allowed (check) */
    kit_tally_t *tally;           /* publisher: elements carry counted payloads */
    /* publisher: elements made by this instead (e.g. Kafka produce requests) */
    rill_elem_t (*make_elem)(void *arg, uint64_t v);
    void *make_arg;
    int confirm_next; /* subscriber: take and confirm every element (a Kafka source's) */

    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* Everything below is guarded by mu. */
    sigrec_t kept[PROBE_KEEP];
    size_t n; /* signals received, kept or not */
    size_t by_type[N_SIG];
    acct_t acct[PROBE_SLOTS];
    long after_terminal;    /* signals of a subscription after its COMPLETE/ERROR */
    long demand_violations; /* a NEXT beyond the demand asked */
    long order_violations;  /* a value out of sequence */
    long depth_violations;  /* mailbox depth above the outstanding demand */
    long depth_checks;      /* how many times the depth was checked */
    uint32_t max_mailbox;   /* deepest mailbox seen at a NEXT */
    long pings_queued;      /* fences sent by probe_fence and not handled yet */
    rill_err_t error_code;  /* of the last ERROR */
    char error_text[200];   /* of the last ERROR */
    rill_aid_t peer;        /* the other side, from SUBSCRIBE or ON_SUBSCRIBE */
    uint64_t token;         /* its token */
    int64_t pub_requested;  /* publisher: demand received (saturating) */
    int64_t pub_sent;       /* publisher: NEXT sent */
    int64_t emit_limit;     /* publisher: total to send (PROBE_EMIT) */
    long over_window;       /* publisher: outstanding demand above window_limit */
    long refused;           /* publisher: sends refused (RILL_EFULL) */
    long send_errors;       /* publisher: other send errors */
    int completed;          /* publisher: COMPLETE sent */
    int cancelled;          /* publisher: CANCEL received */
    long req_after_cancel;  /* publisher: REQUEST/CANCEL of a subscription after its CANCEL */
    uintptr_t frame_lo, frame_hi;

    /* How the handler ran. */
    atomic_int inside;
    atomic_long overlaps;
    atomic_int depth;
    atomic_int max_depth;
} probe_t;

static void probe_init(probe_t *p)
{
    memset(p, 0, sizeof(*p));
    pthread_mutex_init(&p->mu, NULL);
    kit_cond_init(&p->cv);
    p->window_limit = INT64_MAX;
    atomic_init(&p->inside, 0);
    atomic_init(&p->overlaps, 0);
    atomic_init(&p->depth, 0);
    atomic_init(&p->max_depth, 0);
}

/* After the system is destroyed. */
static void probe_fini(probe_t *p)
{
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
}

/* Publisher side: send NEXT while there is demand, up to emit_limit. */
static void probe_emit(rill_ctx_t *ctx, probe_t *p)
{
    rill_system_t *sys = rill_ctx_system(ctx);
    for (;;) {
        pthread_mutex_lock(&p->mu);
        int go = !rill_aid_is_none(p->peer) && !p->cancelled && !p->completed &&
                 p->pub_sent < p->emit_limit && p->pub_sent < p->pub_requested;
        int finish = !rill_aid_is_none(p->peer) && !p->cancelled && !p->completed &&
                     p->complete_after_emit && p->emit_limit > 0 && p->pub_sent == p->emit_limit;
        if (finish)
            p->completed = 1;
        rill_aid_t peer = p->peer;
        uint64_t token = p->token;
        uint64_t v = (uint64_t)p->pub_sent;
        pthread_mutex_unlock(&p->mu);
        if (finish) {
            if (p->complete_after_emit == 2)
                rill_stream_error(sys, rill_sub(peer), rill_pub(rill_self(ctx)), token, RILL_EIO,
                                  "upstream broke");
            else
                rill_stream_complete(sys, rill_sub(peer), rill_pub(rill_self(ctx)), token);
            return;
        }
        if (!go)
            return;
        rill_elem_t e = p->make_elem ? p->make_elem(p->make_arg, v) : rill_elem_value(v);
        if (p->tally) {
            e.payload = kit_payload_new(p->tally, v);
            e.dtor = kit_payload_free;
        }
        rill_err_t err = rill_stream_next(sys, rill_sub(peer), rill_pub(rill_self(ctx)), token, &e);
        pthread_mutex_lock(&p->mu);
        if (err == RILL_OK)
            p->pub_sent++;
        else if (err == RILL_EFULL)
            p->refused++;
        else
            p->send_errors++;
        pthread_cond_broadcast(&p->cv); /* probe_wait_outstanding waits on pub_sent */
        pthread_mutex_unlock(&p->mu);
        if (err != RILL_OK) {
            if (p->tally)
                kit_payload_reclaim(e.payload); /* still ours on any error */
            else
                rill_elem_release(&e);
            return;
        }
    }
}

/* Record a stream signal and decide what to answer; runs on the probe's
 * executor. */
static void probe_signal(rill_ctx_t *ctx, probe_t *p, const rill_msg_t *msg)
{
    rill_system_t *sys = rill_ctx_system(ctx);
    rill_aid_t self = rill_self(ctx);
    int64_t ask = 0;
    int answer = 0, terminal = 0, emit = 0;

    pthread_mutex_lock(&p->mu);
    if (p->n < PROBE_KEEP)
        p->kept[p->n] = (sigrec_t){msg->type, msg->corr, msg->arg, msg->from};
    p->n++;
    p->by_type[msg->type - RILL_STREAM_SUBSCRIBE]++;
    acct_t *a = &p->acct[SLOT_OF(msg->corr)];
    if (!a->first)
        a->first = msg->type;
    if (a->terminal)
        p->after_terminal++;
    switch (msg->type) {
    case RILL_STREAM_SUBSCRIBE:
        p->peer = msg->from;
        p->token = msg->corr;
        answer = p->answer_subscribe;
        terminal = p->terminal_on_subscribe;
        break;
    case RILL_STREAM_ON_SUBSCRIBE:
        p->peer = msg->from;
        p->token = msg->corr;
        ask = p->request_on_subscribe;
        break;
    case RILL_STREAM_REQUEST: {
        int64_t n = (int64_t)msg->arg;
        if (p->cancelled && msg->corr == p->token)
            p->req_after_cancel++; /* 2.7: the subscriber's signals are serial */
        if (n > 0)
            p->pub_requested = sat_add(p->pub_requested, n);
        if (p->pub_requested - p->pub_sent > p->window_limit)
            p->over_window++;
        emit = 1;
        break;
    }
    case RILL_STREAM_CANCEL:
        if (msg->corr != p->token)
            break; /* of an ON_SUBSCRIBE it never asked for (2.5) */
        if (p->cancelled)
            p->req_after_cancel++;
        p->cancelled = 1;
        break;
    case RILL_STREAM_NEXT: {
        a->received++;
        if (a->received > a->requested)
            p->demand_violations++;
        if (p->check_order) {
            if (a->has_value && msg->arg != a->next_value)
                p->order_violations++;
            a->next_value = msg->arg + 1;
            a->has_value = 1;
        }
        ask = p->request_per_next;
        if (p->refill_chunk > 0 && a->requested - a->received <= p->refill_below)
            ask += p->refill_chunk;
        if (p->check_depth) {
            int64_t outstanding = 0;
            for (size_t i = 0; i < PROBE_SLOTS; i++)
                outstanding += p->acct[i].requested - p->acct[i].received;
            rill_actor_stats_t st;
            if (rill_actor_stats(sys, self, &st) == RILL_OK) {
                p->depth_checks++;
                /* A fence queued behind the elements is no element. */
                int64_t queued = (int64_t)st.mailbox_depth - p->pings_queued;
                if (queued > outstanding)
                    p->depth_violations++;
                if (queued > (int64_t)p->max_mailbox)
                    p->max_mailbox = (uint32_t)queued;
            }
        }
        break;
    }
    case RILL_STREAM_COMPLETE:
        a->terminal = 1;
        break;
    case RILL_STREAM_ERROR:
        a->terminal = 1;
        p->error_code = (rill_err_t)msg->arg;
        snprintf(p->error_text, sizeof(p->error_text), "%s", rill_stream_error_text(msg));
        break;
    default:
        break;
    }
    if (ask > 0)
        a->requested = sat_add(a->requested, ask);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);

    if (answer) {
        rill_stream_on_subscribe(sys, rill_sub(msg->from), rill_pub(self), msg->corr);
        if (terminal == 1)
            rill_stream_complete(sys, rill_sub(msg->from), rill_pub(self), msg->corr);
        else if (terminal == 2)
            rill_stream_error(sys, rill_sub(msg->from), rill_pub(self), msg->corr, RILL_EIO,
                              "failed before any request");
    }
    if (ask > 0)
        rill_stream_request(sys, rill_pub(msg->from), rill_sub(self), msg->corr, ask);
    if (emit)
        probe_emit(ctx, p);
}

static void note_max(atomic_int *max, int v)
{
    int cur = atomic_load_explicit(max, memory_order_relaxed);
    while (v > cur && !atomic_compare_exchange_weak_explicit(max, &cur, v, memory_order_relaxed,
                                                             memory_order_relaxed))
        ;
}

static rill_err_t probe_behavior(rill_ctx_t *ctx, void *state, rill_msg_t *msg)
{
    probe_t *p = state;
    if (msg->type == KIT_MSG_PING) {
        pthread_mutex_lock(&p->mu);
        if (p->pings_queued > 0)
            p->pings_queued--;
        pthread_mutex_unlock(&p->mu);
        rill_msg_t reply;
        memset(&reply, 0, sizeof(reply));
        reply.type = KIT_MSG_PING;
        rill_reply(ctx, msg, &reply);
        return RILL_OK;
    }
    if (msg->type == PROBE_HOLD) {
        kit_gate_pass(msg->payload, KIT_WAIT_MS);
        return RILL_OK;
    }
    /* acq_rel: a second handler running at the same time would see the
     * flag set by the first (the one thing this flag is for). */
    if (atomic_exchange_explicit(&p->inside, 1, memory_order_acq_rel))
        atomic_fetch_add_explicit(&p->overlaps, 1, memory_order_relaxed);
    /* relaxed: depth only counts nesting on this thread. */
    int d = atomic_fetch_add_explicit(&p->depth, 1, memory_order_relaxed) + 1;
    note_max(&p->max_depth, d);
    uintptr_t frame = (uintptr_t)__builtin_frame_address(0);
    pthread_mutex_lock(&p->mu);
    if (!p->frame_lo || frame < p->frame_lo)
        p->frame_lo = frame;
    if (frame > p->frame_hi)
        p->frame_hi = frame;
    pthread_mutex_unlock(&p->mu);

    if (msg->type == PROBE_EMIT) {
        pthread_mutex_lock(&p->mu);
        p->emit_limit = (int64_t)msg->arg;
        pthread_mutex_unlock(&p->mu);
        probe_emit(ctx, p);
    } else if (SIG_IS_STREAM(msg->type)) {
        probe_signal(ctx, p, msg);
        if (msg->type == RILL_STREAM_NEXT && p->confirm_next) {
            rill_elem_t e = rill_elem_take(msg);
            rill_elem_confirm(&e);
        }
    }

    atomic_fetch_sub_explicit(&p->depth, 1, memory_order_relaxed);
    atomic_store_explicit(&p->inside, 0, memory_order_release);
    return RILL_OK;
}

static rill_aid_t probe_spawn(rill_system_t *sys, probe_t *p, uint32_t mailbox, int executor)
{
    rill_spawn_opts_t o;
    memset(&o, 0, sizeof(o));
    o.behavior = probe_behavior;
    o.state = p;
    o.mailbox_capacity = mailbox;
    o.executor = KIT_EXEC(executor);
    rill_aid_t aid = RILL_AID_NONE;
    rill_err_t e = rill_spawn(sys, &o, &aid);
    cr_assert_eq(e, RILL_OK, "spawn probe: %s", rill_err_name(e));
    return aid;
}

/* A fresh subscriber probe: 64-slot mailbox on executor 1. */
static rill_aid_t sub_probe(rill_system_t *sys, probe_t *p)
{
    probe_init(p);
    return probe_spawn(sys, p, 64, 1);
}

/* A fresh publisher probe that answers SUBSCRIBE: 256-slot mailbox on
 * executor 1. */
static rill_aid_t pub_probe(rill_system_t *sys, probe_t *p)
{
    probe_init(p);
    p->answer_subscribe = 1;
    return probe_spawn(sys, p, 256, 1);
}

/* ---- reading a probe (test thread) ---------------------------------- */

static size_t probe_count(probe_t *p, uint32_t type)
{
    pthread_mutex_lock(&p->mu);
    size_t c = p->by_type[type - RILL_STREAM_SUBSCRIBE];
    pthread_mutex_unlock(&p->mu);
    return c;
}

static size_t probe_total(probe_t *p)
{
    pthread_mutex_lock(&p->mu);
    size_t c = p->n;
    pthread_mutex_unlock(&p->mu);
    return c;
}

static sigrec_t probe_at(probe_t *p, size_t i)
{
    pthread_mutex_lock(&p->mu);
    sigrec_t s = i < p->n && i < PROBE_KEEP ? p->kept[i] : (sigrec_t){0};
    pthread_mutex_unlock(&p->mu);
    return s;
}

static acct_t probe_acct(probe_t *p, uint64_t token)
{
    pthread_mutex_lock(&p->mu);
    acct_t a = p->acct[SLOT_OF(token)];
    pthread_mutex_unlock(&p->mu);
    return a;
}

/* Waits until at least n signals of type arrived; 1 if they did in time. */
static int probe_wait_count(probe_t *p, uint32_t type, size_t n, int timeout_ms)
{
    int64_t deadline = kit_now_ms() + timeout_ms;
    size_t i = type - RILL_STREAM_SUBSCRIBE;
    pthread_mutex_lock(&p->mu);
    while (p->by_type[i] < n && kit_cond_wait_until(&p->cv, &p->mu, deadline) == 0)
        ;
    int ok = p->by_type[i] >= n;
    pthread_mutex_unlock(&p->mu);
    return ok;
}

/* Waits until subscription `token` received at least n elements. */
static int probe_wait_received(probe_t *p, uint64_t token, int64_t n, int timeout_ms)
{
    int64_t deadline = kit_now_ms() + timeout_ms;
    acct_t *a = &p->acct[SLOT_OF(token)];
    pthread_mutex_lock(&p->mu);
    while (a->received < n && kit_cond_wait_until(&p->cv, &p->mu, deadline) == 0)
        ;
    int ok = a->received >= n;
    pthread_mutex_unlock(&p->mu);
    return ok;
}

/* Waits until the publisher probe was asked for at least n in all. */
static int probe_wait_demand(probe_t *p, int64_t n, int timeout_ms)
{
    int64_t deadline = kit_now_ms() + timeout_ms;
    pthread_mutex_lock(&p->mu);
    while (p->pub_requested < n && kit_cond_wait_until(&p->cv, &p->mu, deadline) == 0)
        ;
    int ok = p->pub_requested >= n;
    pthread_mutex_unlock(&p->mu);
    return ok;
}

/* The test asks for n on behalf of subscriber probe `sub` (demand is
 * accounted before it is sent, so the probe never sees a NEXT it could
 * not know was asked for). */
static rill_err_t probe_request(rill_system_t *sys, probe_t *p, rill_aid_t sub, rill_aid_t pub,
                                uint64_t token, int64_t n)
{
    pthread_mutex_lock(&p->mu);
    acct_t *a = &p->acct[SLOT_OF(token)];
    a->requested = sat_add(a->requested, n);
    pthread_mutex_unlock(&p->mu);
    return rill_stream_request(sys, rill_pub(pub), rill_sub(sub), token, n);
}

/* A copy of a probe's counters, taken under its lock. */
typedef struct probe_view {
    long after_terminal, demand_violations, order_violations, depth_violations, depth_checks;
    long over_window, refused, send_errors, req_after_cancel;
    uint32_t max_mailbox;
    rill_err_t error_code;
    int64_t pub_requested, pub_sent;
    uint64_t token;
} probe_view_t;

static probe_view_t probe_view(probe_t *p)
{
    pthread_mutex_lock(&p->mu);
    probe_view_t v = {p->after_terminal,   p->demand_violations,
                      p->order_violations, p->depth_violations,
                      p->depth_checks,     p->over_window,
                      p->refused,          p->send_errors,
                      p->req_after_cancel, p->max_mailbox,
                      p->error_code,       p->pub_requested,
                      p->pub_sent,         p->token};
    pthread_mutex_unlock(&p->mu);
    return v;
}

/* kit_fence through a probe that checks its mailbox depth: the fence's
 * message is in the mailbox until the probe handles it, and a NEXT handled
 * meanwhile must not count it as an element. */
static rill_err_t probe_fence(rill_system_t *sys, probe_t *p, rill_aid_t aid)
{
    pthread_mutex_lock(&p->mu);
    p->pings_queued++;
    pthread_mutex_unlock(&p->mu);
    return kit_fence(sys, aid);
}

/* ---- stages and systems --------------------------------------------- */

static rill_system_t *conf_system(void)
{
    rill_system_t *sys = kit_system(2, 0, 0, 1);
    cr_assert_not_null(sys);
    return sys;
}

static void conf_end(rill_system_t *sys)
{
    rill_err_t e = rill_system_stop(sys, KIT_WAIT_MS);
    cr_assert_eq(e, RILL_OK, "system stop: %s", rill_err_name(e));
    rill_system_destroy(sys);
}

static rill_aid_t spawn_stage(rill_system_t *sys, rill_stage_t *stage, uint32_t mailbox,
                              int executor)
{
    cr_assert_not_null(stage, "stage constructor failed");
    rill_stage_opts_t o = {
        .name = NULL, .executor = KIT_EXEC(executor), .mailbox_capacity = mailbox};
    rill_aid_t aid = RILL_AID_NONE;
    char errstr[160] = "";
    rill_err_t e = rill_stage_spawn(sys, stage, &o, &aid, errstr, sizeof(errstr));
    cr_assert_eq(e, RILL_OK, "stage spawn: %s (%s)", rill_err_name(e), errstr);
    return aid;
}

static void link_stages(rill_system_t *sys, rill_aid_t up, rill_aid_t down)
{
    rill_err_t e = rill_stage_connect(sys, up, down, NULL, 0);
    cr_assert_eq(e, RILL_OK, "connect: %s", rill_err_name(e));
}

static void subscribe(rill_system_t *sys, rill_aid_t pub, rill_aid_t sub, uint64_t token)
{
    rill_err_t e = rill_stream_subscribe(sys, rill_pub(pub), rill_sub(sub), token);
    cr_assert_eq(e, RILL_OK, "subscribe: %s", rill_err_name(e));
}

static void expect_dead(rill_system_t *sys, rill_aid_t aid, const char *what)
{
    cr_assert(kit_wait_dead(sys, aid, KIT_WAIT_MS), "%s still alive", what);
}

struct processed_at_least {
    rill_system_t *sys;
    rill_aid_t aid;
    uint64_t n;
};

static int processed_reached(void *arg)
{
    struct processed_at_least *w = arg;
    rill_actor_stats_t st;
    if (rill_actor_stats(w->sys, w->aid, &st) != RILL_OK)
        return 1; /* gone: it handled all it ever will */
    return st.processed >= w->n;
}

/* Waits until actor aid handled n messages and signals (or is gone). */
static void wait_processed(rill_system_t *sys, rill_aid_t aid, uint64_t n)
{
    struct processed_at_least w = {sys, aid, n};
    cr_assert(kit_wait_until(processed_reached, &w, KIT_WAIT_MS),
              "the stage did not handle %llu messages", (unsigned long long)n);
}

/* A positive synchronisation for "X must not happen": the stage handled
 * its first n messages and signals (the turns that could have sent X are
 * over), then a fence went through the probe (which has handled all those
 * turns sent it). */
static void handled_then_fence(rill_system_t *sys, rill_aid_t stage, uint64_t n, rill_aid_t probe)
{
    wait_processed(sys, stage, n);
    cr_assert_eq(kit_fence(sys, probe), RILL_OK);
}

/* The same once the stage is gone: all it ever sent is queued at the
 * probe before the fence. */
static void dead_then_fence(rill_system_t *sys, rill_aid_t stage, rill_aid_t probe,
                            const char *what)
{
    expect_dead(sys, stage, what);
    cr_assert_eq(kit_fence(sys, probe), RILL_OK);
}

struct depth_at_least {
    rill_system_t *sys;
    rill_aid_t aid;
    uint32_t n;
};

static int depth_reached(void *arg)
{
    struct depth_at_least *w = arg;
    rill_actor_stats_t st;
    return rill_actor_stats(w->sys, w->aid, &st) == RILL_OK && st.mailbox_depth >= w->n;
}

struct tally_done {
    kit_tally_t *t;
};

static int tally_settled(void *arg)
{
    kit_tally_t *t = ((struct tally_done *)arg)->t;
    long made = atomic_load_explicit(&t->made, memory_order_acquire);
    long gone = atomic_load_explicit(&t->released, memory_order_acquire) +
                atomic_load_explicit(&t->reclaimed, memory_order_acquire);
    return made == gone;
}

/* Waits until every counted payload was released (or reclaimed). */
static void expect_all_released(kit_tally_t *t)
{
    struct tally_done d = {t};
    cr_assert(kit_wait_until(tally_settled, &d, KIT_WAIT_MS),
              "payloads: %ld made, %ld released, %ld reclaimed", atomic_load(&t->made),
              atomic_load(&t->released), atomic_load(&t->reclaimed));
}

/* ---- stage functions ------------------------------------------------ */

/* A pull source: count values from 0 (UINT64_MAX = endless), then end, or
 * fail with fail_code after fail_after elements. Measures how it is
 * called: nesting depth and frame addresses. */
typedef struct puller {
    uint64_t count;
    uint64_t fail_after; /* UINT64_MAX: never */
    rill_err_t fail_code;
    kit_tally_t *tally; /* NULL: value elements */
    atomic_ullong next; /* only the source's executor writes it */
    atomic_int depth;
    atomic_int max_depth;
    atomic_uintptr_t frame_lo, frame_hi;
} puller_t;

static void puller_init(puller_t *p, uint64_t count, uint64_t fail_after, kit_tally_t *tally)
{
    memset(p, 0, sizeof(*p));
    p->count = count;
    p->fail_after = fail_after;
    p->fail_code = RILL_EIO;
    p->tally = tally;
    atomic_init(&p->next, 0);
    atomic_init(&p->depth, 0);
    atomic_init(&p->max_depth, 0);
    atomic_init(&p->frame_lo, UINTPTR_MAX);
    atomic_init(&p->frame_hi, 0);
}

static rill_err_t pull(void *opaque, rill_elem_t *out)
{
    puller_t *p = opaque;
    /* relaxed everywhere: one thread writes; the test reads after the
     * source has ended. */
    int d = atomic_fetch_add_explicit(&p->depth, 1, memory_order_relaxed) + 1;
    note_max(&p->max_depth, d);
    uintptr_t frame = (uintptr_t)__builtin_frame_address(0);
    if (frame < atomic_load_explicit(&p->frame_lo, memory_order_relaxed))
        atomic_store_explicit(&p->frame_lo, frame, memory_order_relaxed);
    if (frame > atomic_load_explicit(&p->frame_hi, memory_order_relaxed))
        atomic_store_explicit(&p->frame_hi, frame, memory_order_relaxed);

    rill_err_t r;
    uint64_t v = atomic_load_explicit(&p->next, memory_order_relaxed);
    if (v == p->fail_after) {
        r = p->fail_code;
    } else if (p->count != UINT64_MAX && v >= p->count) {
        r = RILL_EOS;
    } else {
        *out = rill_elem_value(v);
        if (p->tally) {
            out->payload = kit_payload_new(p->tally, v);
            out->dtor = kit_payload_free;
        }
        atomic_store_explicit(&p->next, v + 1, memory_order_relaxed);
        r = RILL_OK;
    }
    atomic_fetch_sub_explicit(&p->depth, 1, memory_order_relaxed);
    return r;
}

/* map: the identity (moves the element). */
static rill_err_t map_identity(void *opaque, rill_elem_t *in, rill_elem_t *out)
{
    (void)opaque;
    *out = *in;
    memset(in, 0, sizeof(*in));
    return RILL_OK;
}

/* ===================================================================== */
/* Rules 1.x: the publisher                                              */
/* ===================================================================== */

Test(rs, rule_1_1_and_3_8_never_more_next_than_requested, .timeout = 60)
{
    rill_system_t *sys = conf_system();
    probe_t s;
    probe_init(&s);
    s.check_order = 1;
    rill_aid_t sub = probe_spawn(sys, &s, 64, 1);
    rill_aid_t src = spawn_stage(sys, rill_source_range(0, 1000), 0, 0);
    const uint64_t tok = 11;

    subscribe(sys, src, sub, tok);
    cr_assert(probe_wait_count(&s, RILL_STREAM_ON_SUBSCRIBE, 1, KIT_WAIT_MS), "no ON_SUBSCRIBE");
    /* The source handled the SUBSCRIBE (its turn is over), and then the
     * probe everything the source sent in it. */
    handled_then_fence(sys, src, 1, sub);
    cr_assert_eq(probe_count(&s, RILL_STREAM_NEXT), 0, "NEXT before any REQUEST");

    cr_assert_eq(probe_request(sys, &s, sub, src, tok, 3), RILL_OK);
    cr_assert(probe_wait_count(&s, RILL_STREAM_NEXT, 3, KIT_WAIT_MS), "3 requested, 3 due");
    handled_then_fence(sys, src, 2, sub);
    cr_assert_eq(probe_count(&s, RILL_STREAM_NEXT), 3, "more NEXT than the 3 requested");

    /* 3.8: demand adds up across REQUESTs. */
    cr_assert_eq(probe_request(sys, &s, sub, src, tok, 2), RILL_OK);
    cr_assert_eq(probe_request(sys, &s, sub, src, tok, 5), RILL_OK);
    cr_assert(probe_wait_count(&s, RILL_STREAM_NEXT, 10, KIT_WAIT_MS), "3+2+5 requested");
    handled_then_fence(sys, src, 4, sub);
    cr_assert_eq(probe_count(&s, RILL_STREAM_NEXT), 10, "more NEXT than the 10 requested");

    for (size_t i = 0; i < 10; i++) {
        sigrec_t g = probe_at(&s, 1 + i);
        cr_assert_eq(g.type, RILL_STREAM_NEXT);
        cr_assert_eq(g.arg, i, "element %zu carries %llu", i, (unsigned long long)g.arg);
        cr_assert_eq(g.corr, tok);
        cr_assert(rill_aid_eq(g.from, src));
    }
    cr_assert_eq(probe_view(&s).demand_violations, 0);
    cr_assert_eq(probe_view(&s).order_violations, 0);
    cr_assert_eq(probe_count(&s, RILL_STREAM_ERROR), 0);
    cr_assert_eq(probe_count(&s, RILL_STREAM_COMPLETE), 0);

    cr_assert_eq(rill_stream_cancel(sys, rill_pub(src), rill_sub(sub), tok), RILL_OK);
    dead_then_fence(sys, src, sub, "the cancelled source");
    cr_assert_eq(probe_count(&s, RILL_STREAM_NEXT), 10, "more NEXT than the 10 requested");
    cr_assert_eq(probe_total(&s), 11);
    conf_end(sys);
    probe_fini(&s);
}

Test(rs, rule_1_2_and_1_5_fewer_than_requested_then_complete, .timeout = 60)
{
    rill_system_t *sys = conf_system();
    probe_t s, e;
    rill_aid_t sub = sub_probe(sys, &s);
    rill_aid_t esub = sub_probe(sys, &e);
    rill_aid_t src = spawn_stage(sys, rill_source_range(100, 5), 0, 0);
    rill_aid_t empty = spawn_stage(sys, rill_source_range(7, 0), 0, 0);

    /* Five elements for a demand of ten: five NEXT, then COMPLETE. */
    subscribe(sys, src, sub, 1);
    cr_assert_eq(probe_request(sys, &s, sub, src, 1, 10), RILL_OK);
    cr_assert(probe_wait_count(&s, RILL_STREAM_COMPLETE, 1, KIT_WAIT_MS), "no COMPLETE");
    dead_then_fence(sys, src, sub, "the completed source");
    cr_assert_eq(probe_total(&s), 7, "ON_SUBSCRIBE, 5 NEXT, COMPLETE; got %zu signals",
                 probe_total(&s));
    cr_assert_eq(probe_at(&s, 0).type, RILL_STREAM_ON_SUBSCRIBE);
    for (size_t i = 0; i < 5; i++) {
        sigrec_t g = probe_at(&s, 1 + i);
        cr_assert_eq(g.type, RILL_STREAM_NEXT);
        cr_assert_eq(g.arg, 100 + i);
    }
    cr_assert_eq(probe_at(&s, 6).type, RILL_STREAM_COMPLETE);
    cr_assert_eq(probe_at(&s, 6).corr, 1);

    /* 1.5: an empty source completes. */
    subscribe(sys, empty, esub, 2);
    /* rill's empty source may complete before any demand (2.9 allows it),
     * so it may be gone by the time the REQUEST is sent. */
    rill_err_t r = probe_request(sys, &e, esub, empty, 2, 1);
    cr_assert(r == RILL_OK || r == RILL_ESTOPPED, "%s", rill_err_name(r));
    cr_assert(probe_wait_count(&e, RILL_STREAM_COMPLETE, 1, KIT_WAIT_MS), "empty: no COMPLETE");
    dead_then_fence(sys, empty, esub, "the empty source");
    cr_assert_eq(probe_total(&e), 2, "ON_SUBSCRIBE and COMPLETE only; got %zu signals",
                 probe_total(&e));
    cr_assert_eq(probe_at(&e, 0).type, RILL_STREAM_ON_SUBSCRIBE);
    cr_assert_eq(probe_at(&e, 1).type, RILL_STREAM_COMPLETE);
    conf_end(sys);
    probe_fini(&s);
    probe_fini(&e);
}

Test(rs, rule_1_3_signals_to_one_subscriber_never_overlap, .timeout = 120)
{
    const int64_t n = KIT_SCALE(100000);
    rill_system_t *sys = conf_system();
    probe_t s;
    probe_init(&s);
    s.check_order = 1;
    s.request_on_subscribe = 128;
    s.refill_below = 64;
    s.refill_chunk = 64; /* at most 128 outstanding per subscription */
    rill_aid_t sub = probe_spawn(sys, &s, 512, 1);

    /* Two publishers, one on each executor, signal the same subscriber at
     * the same time: a range directly, and a range through a map. */
    rill_aid_t src1 = spawn_stage(sys, rill_source_range(0, (uint64_t)n), 0, 0);
    rill_aid_t src2 = spawn_stage(sys, rill_source_range(0, (uint64_t)n), 0, 0);
    rill_aid_t map2 = spawn_stage(sys, rill_stage_map(map_identity, NULL), 0, 1);
    link_stages(sys, src2, map2);
    subscribe(sys, src1, sub, 1);
    subscribe(sys, map2, sub, 2);

    cr_assert(probe_wait_count(&s, RILL_STREAM_COMPLETE, 2, 60000), "not both completed");
    expect_dead(sys, src1, "the direct source");
    dead_then_fence(sys, map2, sub, "the map");
    acct_t a1 = probe_acct(&s, 1), a2 = probe_acct(&s, 2);
    cr_assert_eq(a1.received, n, "direct: %lld of %lld", (long long)a1.received, (long long)n);
    cr_assert_eq(a2.received, n, "via map: %lld of %lld", (long long)a2.received, (long long)n);
    cr_assert_eq(a1.first, RILL_STREAM_ON_SUBSCRIBE);
    cr_assert_eq(a2.first, RILL_STREAM_ON_SUBSCRIBE);
    cr_assert_eq(atomic_load(&s.overlaps), 0, "handler calls overlapped %ld times",
                 atomic_load(&s.overlaps));
    cr_assert_eq(atomic_load(&s.max_depth), 1);
    cr_assert_eq(probe_view(&s).order_violations, 0);
    cr_assert_eq(probe_view(&s).demand_violations, 0);
    cr_assert_eq(probe_view(&s).after_terminal, 0);
    cr_assert_eq(probe_count(&s, RILL_STREAM_ERROR), 0);
    conf_end(sys);
    probe_fini(&s);
}

/* 1.6: after COMPLETE the subscription counts as cancelled: demand and
 * CANCEL for it change nothing. */
Test(rs, rule_1_6_and_1_7_nothing_after_complete, .timeout = 60)
{
    rill_system_t *sys = conf_system();
    probe_t s;
    rill_aid_t sub = sub_probe(sys, &s);
    rill_aid_t src = spawn_stage(sys, rill_source_range(0, 5), 0, 0);

    subscribe(sys, src, sub, 3);
    cr_assert_eq(probe_request(sys, &s, sub, src, 3, 10), RILL_OK);
    cr_assert(probe_wait_count(&s, RILL_STREAM_COMPLETE, 1, KIT_WAIT_MS));
    size_t at_complete = probe_total(&s);

    /* Poke the ended publisher: more demand, a cancel. Whether it is still
     * alive (RILL_OK) or gone (RILL_ESTOPPED), nothing may come back. */
    rill_err_t r = probe_request(sys, &s, sub, src, 3, 10);
    cr_assert(r == RILL_OK || r == RILL_ESTOPPED, "%s", rill_err_name(r));
    r = rill_stream_cancel(sys, rill_pub(src), rill_sub(sub), 3);
    cr_assert(r == RILL_OK || r == RILL_ESTOPPED, "%s", rill_err_name(r));
    dead_then_fence(sys, src, sub, "the completed source");
    cr_assert_eq(probe_total(&s), at_complete, "a signal after COMPLETE");
    cr_assert_eq(probe_view(&s).after_terminal, 0);
    cr_assert_eq(probe_count(&s, RILL_STREAM_NEXT), 5);
    cr_assert_eq(probe_count(&s, RILL_STREAM_COMPLETE), 1);
    cr_assert_eq(probe_count(&s, RILL_STREAM_ERROR), 0);
    conf_end(sys);
    probe_fini(&s);
}

Test(rs, rule_1_7_nothing_after_error, .timeout = 60)
{
    rill_system_t *sys = conf_system();
    probe_t s, m;
    rill_aid_t sub = sub_probe(sys, &s);
    rill_aid_t msub = sub_probe(sys, &m);
    puller_t pl, pl2;
    puller_init(&pl, UINT64_MAX, 4, NULL);
    puller_init(&pl2, UINT64_MAX, 4, NULL);

    /* A source that fails after four elements, directly ... */
    rill_aid_t src = spawn_stage(sys, rill_source_fn(pull, &pl), 0, 0);
    subscribe(sys, src, sub, 4);
    cr_assert_eq(probe_request(sys, &s, sub, src, 4, 20), RILL_OK);
    /* ... and through a map, which passes the ERROR on. */
    rill_aid_t src2 = spawn_stage(sys, rill_source_fn(pull, &pl2), 0, 0);
    rill_aid_t map = spawn_stage(sys, rill_stage_map(map_identity, NULL), 0, 1);
    subscribe(sys, map, msub, 5);
    cr_assert_eq(probe_request(sys, &m, msub, map, 5, 20), RILL_OK);
    link_stages(sys, src2, map);

    probe_t *probes[2] = {&s, &m};
    rill_aid_t pubs[2] = {src, map};
    uint64_t toks[2] = {4, 5};
    for (int k = 0; k < 2; k++) {
        probe_t *p = probes[k];
        cr_assert(probe_wait_count(p, RILL_STREAM_ERROR, 1, KIT_WAIT_MS), "no ERROR (%d)", k);
        size_t at_error = probe_total(p);
        rill_err_t r = probe_request(sys, p, k ? msub : sub, pubs[k], toks[k], 10);
        cr_assert(r == RILL_OK || r == RILL_ESTOPPED, "%s", rill_err_name(r));
        dead_then_fence(sys, pubs[k], k ? msub : sub, "the failed publisher");
        cr_assert_eq(probe_total(p), at_error, "a signal after ERROR (%d)", k);
        cr_assert_eq(probe_view(p).after_terminal, 0);
        cr_assert_eq(probe_count(p, RILL_STREAM_NEXT), 4, "the 4 before the failure (%d)", k);
        cr_assert_eq(probe_count(p, RILL_STREAM_ERROR), 1);
        cr_assert_eq(probe_count(p, RILL_STREAM_COMPLETE), 0);
        cr_assert_eq(probe_view(p).error_code, RILL_EIO);
        cr_assert_eq(probe_at(p, at_error - 1).type, RILL_STREAM_ERROR, "ERROR is last");
    }
    pthread_mutex_lock(&m.mu);
    cr_assert_not_null(strstr(m.error_text, "RILL_EIO"), "text: '%s'", m.error_text);
    pthread_mutex_unlock(&m.mu);
    expect_dead(sys, src2, "the failed source");
    conf_end(sys);
    probe_fini(&s);
    probe_fini(&m);
}

Test(rs, rule_1_9_on_subscribe_first_even_from_a_failing_publisher, .timeout = 60)
{
    rill_system_t *sys = conf_system();
    probe_t s, f, m;
    rill_aid_t sub = sub_probe(sys, &s);
    rill_aid_t fsub = sub_probe(sys, &f);
    rill_aid_t msub = sub_probe(sys, &m);

    /* Demand sent right behind SUBSCRIBE: still ON_SUBSCRIBE first. */
    rill_aid_t src = spawn_stage(sys, rill_source_range(0, 3), 0, 0);
    subscribe(sys, src, sub, 1);
    cr_assert_eq(probe_request(sys, &s, sub, src, 1, 3), RILL_OK);
    cr_assert(probe_wait_count(&s, RILL_STREAM_COMPLETE, 1, KIT_WAIT_MS));
    cr_assert_eq(probe_at(&s, 0).type, RILL_STREAM_ON_SUBSCRIBE);
    cr_assert(rill_aid_eq(probe_at(&s, 0).from, src));
    cr_assert_eq(probe_at(&s, 0).corr, 1);

    /* A publisher that fails at once: ON_SUBSCRIBE, then ERROR, nothing
     * else, without any demand. */
    rill_aid_t failed = spawn_stage(sys, rill_source_failed(RILL_EIO, "disk on fire"), 0, 0);
    subscribe(sys, failed, fsub, 2);
    cr_assert(probe_wait_count(&f, RILL_STREAM_ERROR, 1, KIT_WAIT_MS), "no ERROR");
    dead_then_fence(sys, failed, fsub, "the failed source");
    cr_assert_eq(probe_total(&f), 2, "ON_SUBSCRIBE and ERROR only; got %zu", probe_total(&f));
    cr_assert_eq(probe_at(&f, 0).type, RILL_STREAM_ON_SUBSCRIBE);
    cr_assert_eq(probe_at(&f, 1).type, RILL_STREAM_ERROR);
    cr_assert_eq(probe_at(&f, 1).corr, 2);
    cr_assert_eq(probe_view(&f).error_code, RILL_EIO);
    pthread_mutex_lock(&f.mu);
    cr_assert_not_null(strstr(f.error_text, "disk on fire"), "text: '%s'", f.error_text);
    pthread_mutex_unlock(&f.mu);

    /* The same through a processor. */
    rill_aid_t failed2 = spawn_stage(sys, rill_source_failed(RILL_EIO, "disk on fire"), 0, 0);
    rill_aid_t map = spawn_stage(sys, rill_stage_map(map_identity, NULL), 0, 1);
    subscribe(sys, map, msub, 3);
    link_stages(sys, failed2, map);
    cr_assert(probe_wait_count(&m, RILL_STREAM_ERROR, 1, KIT_WAIT_MS), "map: no ERROR");
    dead_then_fence(sys, map, msub, "the failed map");
    cr_assert_eq(probe_total(&m), 2);
    cr_assert_eq(probe_at(&m, 0).type, RILL_STREAM_ON_SUBSCRIBE);
    cr_assert_eq(probe_view(&m).error_code, RILL_EIO);
    conf_end(sys);
    probe_fini(&s);
    probe_fini(&f);
    probe_fini(&m);
}

Test(rs, rule_1_9_null_subscriber_is_rejected, .timeout = 60)
{
    rill_system_t *sys = conf_system();
    probe_t s;
    probe_init(&s);
    s.check_order = 1;
    rill_aid_t sub = probe_spawn(sys, &s, 64, 1);
    rill_aid_t src = spawn_stage(sys, rill_source_range(0, 10), 0, 0);

    cr_assert_eq(rill_stream_subscribe(sys, rill_pub(src), rill_sub(RILL_AID_NONE), 5),
                 RILL_EINVAL);
    cr_assert_eq(rill_stream_subscribe(sys, rill_pub(RILL_AID_NONE), rill_sub(sub), 5),
                 RILL_EINVAL);
    cr_assert_eq(rill_stream_subscribe(NULL, rill_pub(src), rill_sub(sub), 5), RILL_EINVAL);
    /* The raw signal, past the checks of rill_stream_subscribe: ignored,
     * since there is nobody to answer. */
    rill_msg_t raw = {.type = RILL_STREAM_SUBSCRIBE, .from = RILL_AID_NONE, .corr = 5};
    cr_assert_eq(rill_signal(sys, src, &raw), RILL_OK);

    /* The publisher is unaffected: it serves a real subscriber in full. */
    subscribe(sys, src, sub, 6);
    cr_assert_eq(probe_request(sys, &s, sub, src, 6, 10), RILL_OK);
    cr_assert(probe_wait_count(&s, RILL_STREAM_COMPLETE, 1, KIT_WAIT_MS));
    dead_then_fence(sys, src, sub, "the completed source");
    cr_assert_eq(probe_total(&s), 12);
    cr_assert_eq(probe_at(&s, 0).type, RILL_STREAM_ON_SUBSCRIBE);
    cr_assert_eq(probe_count(&s, RILL_STREAM_NEXT), 10);
    cr_assert_eq(probe_count(&s, RILL_STREAM_ERROR), 0);
    cr_assert_eq(probe_view(&s).order_violations, 0);
    conf_end(sys);
    probe_fini(&s);
}

Test(rs, rule_1_4_and_4_2_failing_upstream_errors_every_subscriber_of_a_processor, .timeout = 60)
{
    rill_system_t *sys = conf_system();
    probe_t s[2];
    rill_aid_t sub[2];
    for (int i = 0; i < 2; i++) {
        probe_init(&s[i]);
        s[i].check_order = 1;
        sub[i] = probe_spawn(sys, &s[i], 64, i);
    }
    puller_t pl;
    puller_init(&pl, UINT64_MAX, 3, NULL);
    rill_aid_t bc = spawn_stage(sys, rill_stage_broadcast(2, NULL, NULL), 0, 1);
    /* Both outputs subscribe and ask before the failing upstream is
     * connected, so the failure has two subscribers to reach. */
    for (int i = 0; i < 2; i++) {
        subscribe(sys, bc, sub[i], 40 + (uint64_t)i);
        cr_assert(probe_wait_count(&s[i], RILL_STREAM_ON_SUBSCRIBE, 1, KIT_WAIT_MS));
        cr_assert_eq(probe_request(sys, &s[i], sub[i], bc, 40 + (uint64_t)i, 10), RILL_OK);
    }
    rill_aid_t src = spawn_stage(sys, rill_source_fn(pull, &pl), 0, 0);
    link_stages(sys, src, bc);

    for (int i = 0; i < 2; i++) {
        cr_assert(probe_wait_count(&s[i], RILL_STREAM_ERROR, 1, KIT_WAIT_MS),
                  "subscriber %d got no ERROR", i);
    }
    expect_dead(sys, bc, "the failed broadcast");
    expect_dead(sys, src, "the failed source");
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(kit_fence(sys, sub[i]), RILL_OK);
        cr_assert_eq(probe_count(&s[i], RILL_STREAM_ERROR), 1);
        cr_assert_eq(probe_count(&s[i], RILL_STREAM_COMPLETE), 0);
        cr_assert_eq(probe_view(&s[i]).error_code, RILL_EIO, "subscriber %d: %s", i,
                     rill_err_name(probe_view(&s[i]).error_code));
        /* ERROR does not overtake the elements before it. */
        cr_assert_eq(probe_count(&s[i], RILL_STREAM_NEXT), 3, "subscriber %d", i);
        cr_assert_eq(probe_at(&s[i], 4).type, RILL_STREAM_ERROR);
        cr_assert_eq(probe_at(&s[i], 4).corr, 40 + (uint64_t)i);
        cr_assert_eq(probe_view(&s[i]).after_terminal, 0);
        cr_assert_eq(probe_view(&s[i]).order_violations, 0);
    }
    conf_end(sys);
    for (int i = 0; i < 2; i++)
        probe_fini(&s[i]);
}

/* ===================================================================== */
/* Rules 2.x: the subscriber                                             */
/* ===================================================================== */

/* Sends from the test thread in the name of publisher probe `pub`. */
static void send_values(rill_system_t *sys, rill_aid_t stage, rill_aid_t pub, uint64_t token,
                        uint64_t first, int count)
{
    for (int i = 0; i < count; i++) {
        rill_elem_t e = rill_elem_value(first + (uint64_t)i);
        rill_err_t r = rill_stream_next(sys, rill_sub(stage), rill_pub(pub), token, &e);
        cr_assert_eq(r, RILL_OK, "NEXT %d: %s", i, rill_err_name(r));
    }
}

static size_t upstream_signals(probe_t *p)
{
    return probe_count(p, RILL_STREAM_REQUEST) + probe_count(p, RILL_STREAM_CANCEL);
}

Test(rs, rule_2_3_no_request_or_cancel_after_terminal, .timeout = 60)
{
    rill_system_t *sys = conf_system();
    probe_t pa, pb, s;
    rill_aid_t apub = pub_probe(sys, &pa);
    rill_aid_t bpub = pub_probe(sys, &pb);
    rill_aid_t sub = sub_probe(sys, &s);

    /* A: probe publisher -> map -> probe subscriber, COMPLETE. Each step
     * waits until the map handled what it was sent (its processed count)
     * and the publisher probe handled what the map sent meanwhile (a
     * fence: control signals are served before the fence's message). */
    rill_aid_t map = spawn_stage(sys, rill_stage_map(map_identity, NULL), 8, 0);
    subscribe(sys, map, sub, 21);
    cr_assert(probe_wait_count(&s, RILL_STREAM_ON_SUBSCRIBE, 1, KIT_WAIT_MS));
    link_stages(sys, apub, map);
    cr_assert(probe_wait_count(&pa, RILL_STREAM_REQUEST, 1, KIT_WAIT_MS), "map asked nothing");
    wait_processed(sys, map, 3); /* SUBSCRIBE, CONNECT, ON_SUBSCRIBE */
    cr_assert_eq(kit_fence(sys, apub), RILL_OK);
    int64_t asked = probe_view(&pa).pub_requested;
    uint64_t atok = probe_view(&pa).token;
    cr_assert_geq(asked, 3, "the map asked for %lld", (long long)asked);
    send_values(sys, map, apub, atok, 0, 3);
    wait_processed(sys, map, 6);
    cr_assert_eq(kit_fence(sys, apub), RILL_OK);
    size_t mark = upstream_signals(&pa);

    cr_assert_eq(rill_stream_complete(sys, rill_sub(map), rill_pub(apub), atok), RILL_OK);
    wait_processed(sys, map, 7);
    cr_assert_eq(kit_fence(sys, apub), RILL_OK);
    cr_assert_eq(upstream_signals(&pa), mark, "REQUEST/CANCEL while handling COMPLETE");

    /* The map drains its three to the subscriber, then ends: still nothing
     * upstream. */
    cr_assert_eq(probe_request(sys, &s, sub, map, 21, 10), RILL_OK);
    cr_assert(probe_wait_count(&s, RILL_STREAM_COMPLETE, 1, KIT_WAIT_MS), "map did not complete");
    cr_assert_eq(probe_count(&s, RILL_STREAM_NEXT), 3);
    expect_dead(sys, map, "the completed map");
    cr_assert_eq(kit_fence(sys, apub), RILL_OK);
    cr_assert_eq(upstream_signals(&pa), mark, "REQUEST/CANCEL after COMPLETE");
    cr_assert_eq(probe_count(&pa, RILL_STREAM_CANCEL), 0);

    /* B: probe publisher -> sink, ERROR. */
    rill_aid_t sink = spawn_stage(sys, rill_sink_ignore(), 0, 0);
    link_stages(sys, bpub, sink);
    cr_assert(probe_wait_count(&pb, RILL_STREAM_REQUEST, 1, KIT_WAIT_MS), "sink asked nothing");
    wait_processed(sys, sink, 2); /* CONNECT, ON_SUBSCRIBE */
    cr_assert_eq(kit_fence(sys, bpub), RILL_OK);
    uint64_t btok = probe_view(&pb).token;
    cr_assert_geq(probe_view(&pb).pub_requested, 2);
    send_values(sys, sink, bpub, btok, 0, 2);
    wait_processed(sys, sink, 4);
    cr_assert_eq(kit_fence(sys, bpub), RILL_OK);
    mark = upstream_signals(&pb);
    cr_assert_eq(
        rill_stream_error(sys, rill_sub(sink), rill_pub(bpub), btok, RILL_EIO, "upstream broke"),
        RILL_OK);
    expect_dead(sys, sink, "the failed sink");
    cr_assert_eq(kit_fence(sys, bpub), RILL_OK);
    cr_assert_eq(upstream_signals(&pb), mark, "REQUEST/CANCEL after ERROR");
    conf_end(sys);
    probe_fini(&pa);
    probe_fini(&pb);
    probe_fini(&s);
}

Test(rs, rule_2_5_second_on_subscribe_is_cancelled, .timeout = 60)
{
    rill_system_t *sys = conf_system();
    kit_tally_t tally;
    memset(&tally, 0, sizeof(tally));
    probe_t p1, p2;
    probe_init(&p2);
    rill_aid_t pub1 = pub_probe(sys, &p1);
    rill_aid_t pub2 = probe_spawn(sys, &p2, 256, 1);
    rill_aid_t sink = spawn_stage(sys, rill_sink_ignore(), 0, 0);

    link_stages(sys, pub1, sink);
    cr_assert(probe_wait_count(&p1, RILL_STREAM_REQUEST, 1, KIT_WAIT_MS), "no REQUEST");
    uint64_t t1 = probe_view(&p1).token;

    /* An ON_SUBSCRIBE the sink never asked for, with a token of its own. */
    cr_assert_eq(rill_stream_on_subscribe(sys, rill_sub(sink), rill_pub(pub2), 777), RILL_OK);
    cr_assert(probe_wait_count(&p2, RILL_STREAM_CANCEL, 1, KIT_WAIT_MS), "not cancelled");
    sigrec_t c = probe_at(&p2, 0);
    cr_assert_eq(c.type, RILL_STREAM_CANCEL);
    cr_assert_eq(c.corr, 777, "CANCEL carries %llu", (unsigned long long)c.corr);
    cr_assert(rill_aid_eq(c.from, sink));

    /* The token of the sink's real subscription, from another publisher. */
    cr_assert_eq(rill_stream_on_subscribe(sys, rill_sub(sink), rill_pub(pub2), t1), RILL_OK);
    cr_assert(probe_wait_count(&p2, RILL_STREAM_CANCEL, 2, KIT_WAIT_MS), "not cancelled");
    cr_assert_eq(probe_at(&p2, 1).corr, t1);
    cr_assert_eq(probe_total(&p2), 2, "only CANCELs for the intruder");

    /* The first subscription goes on: elements are taken and released,
     * COMPLETE ends the sink, and it never cancelled it. */
    for (uint64_t i = 0; i < 5; i++) {
        rill_elem_t e = {.payload = kit_payload_new(&tally, i), .dtor = kit_payload_free, .arg = i};
        cr_assert_eq(rill_stream_next(sys, rill_sub(sink), rill_pub(pub1), t1, &e), RILL_OK);
    }
    cr_assert_eq(rill_stream_complete(sys, rill_sub(sink), rill_pub(pub1), t1), RILL_OK);
    expect_dead(sys, sink, "the completed sink");
    cr_assert_eq(kit_fence(sys, pub1), RILL_OK);
    cr_assert_eq(probe_count(&p1, RILL_STREAM_CANCEL), 0, "the real subscription was cancelled");
    cr_assert_eq(atomic_load(&tally.released), 5);
    conf_end(sys);
    probe_fini(&p1);
    probe_fini(&p2);
}

typedef struct failing_sink {
    atomic_long calls;
    long fail_at;
    kit_gate_t hold; /* the first call waits here */
} failing_sink_t;

static rill_err_t sink_fail_at(void *opaque, rill_elem_t *e)
{
    failing_sink_t *f = opaque;
    long n = atomic_fetch_add_explicit(&f->calls, 1, memory_order_relaxed) + 1;
    if (n == 1)
        kit_gate_pass(&f->hold, KIT_WAIT_MS);
    rill_elem_release(e); /* the function owns it */
    return n == f->fail_at ? RILL_EIO : RILL_OK;
}

Test(rs, rule_2_8_next_after_own_cancel_is_accepted_and_released, .timeout = 60)
{
    rill_system_t *sys = conf_system();
    kit_tally_t tally;
    memset(&tally, 0, sizeof(tally));
    probe_t p;
    rill_aid_t pub = pub_probe(sys, &p);
    failing_sink_t fs = {.fail_at = 3};
    atomic_init(&fs.calls, 0);
    kit_gate_init(&fs.hold);
    rill_aid_t sink = spawn_stage(sys, rill_sink_foreach(sink_fail_at, &fs), 0, 0);

    link_stages(sys, pub, sink);
    cr_assert(probe_wait_demand(&p, 10, KIT_WAIT_MS), "the sink asked for less than 10");
    uint64_t tok = probe_view(&p).token;

    /* Ten, all queued while the sink is held in its first element: it
     * fails on the third and cancels with the other seven in flight. */
    for (uint64_t i = 0; i < 10; i++) {
        rill_elem_t e = {.payload = kit_payload_new(&tally, i), .dtor = kit_payload_free, .arg = i};
        cr_assert_eq(rill_stream_next(sys, rill_sub(sink), rill_pub(pub), tok, &e), RILL_OK);
    }
    cr_assert(kit_wait_at_least(&fs.hold.arrived, 1, KIT_WAIT_MS));
    kit_gate_open(&fs.hold);
    cr_assert(probe_wait_count(&p, RILL_STREAM_CANCEL, 1, KIT_WAIT_MS), "no CANCEL");
    /* More after the CANCEL arrived, as a publisher that has not seen it
     * yet would send: accepted (or refused, then still ours). */
    for (uint64_t i = 10; i < 15; i++) {
        rill_elem_t e = {.payload = kit_payload_new(&tally, i), .dtor = kit_payload_free, .arg = i};
        rill_err_t r = rill_stream_next(sys, rill_sub(sink), rill_pub(pub), tok, &e);
        cr_assert(r == RILL_OK || r == RILL_ESTOPPED, "%s", rill_err_name(r));
        if (r != RILL_OK)
            kit_payload_reclaim(e.payload);
    }
    expect_dead(sys, sink, "the failed sink");
    expect_all_released(&tally);
    cr_assert_eq(atomic_load(&tally.made), 15);
    cr_assert_eq(atomic_load(&fs.calls), 3, "the sink went on after cancelling");
    cr_assert_eq(kit_fence(sys, pub), RILL_OK);
    cr_assert_eq(probe_count(&p, RILL_STREAM_CANCEL), 1);
    cr_assert_eq(probe_total(&p), probe_count(&p, RILL_STREAM_REQUEST) + 2,
                 "only SUBSCRIBE, REQUESTs and one CANCEL upstream");
    conf_end(sys);
    kit_gate_destroy(&fs.hold);
    probe_fini(&p);
}

Test(rs, rule_2_9_and_2_10_terminal_without_request_is_handled, .timeout = 60)
{
    rill_system_t *sys = conf_system();
    for (int kind = 1; kind <= 2; kind++) {
        const char *what = kind == 1 ? "COMPLETE" : "ERROR";
        probe_t p, s, q;
        probe_init(&p);
        probe_init(&q);
        p.answer_subscribe = q.answer_subscribe = 1;
        p.terminal_on_subscribe = q.terminal_on_subscribe = kind;
        rill_aid_t pub = probe_spawn(sys, &p, 256, 1);
        rill_aid_t pub2 = probe_spawn(sys, &q, 256, 1);
        rill_aid_t sub = sub_probe(sys, &s);

        /* The terminal signal right behind ON_SUBSCRIBE, before any
         * REQUEST could arrive: a map passes it on ... */
        rill_aid_t map = spawn_stage(sys, rill_stage_map(map_identity, NULL), 0, 0);
        subscribe(sys, map, sub, 9);
        cr_assert_eq(probe_request(sys, &s, sub, map, 9, 5), RILL_OK);
        link_stages(sys, pub, map);
        uint32_t want = kind == 1 ? RILL_STREAM_COMPLETE : RILL_STREAM_ERROR;
        cr_assert(probe_wait_count(&s, want, 1, KIT_WAIT_MS), "map: no %s", what);
        dead_then_fence(sys, map, sub, "the map");
        cr_assert_eq(probe_total(&s), 2, "%s: ON_SUBSCRIBE and the terminal only", what);
        cr_assert_eq(probe_at(&s, 0).type, RILL_STREAM_ON_SUBSCRIBE);
        if (kind == 2)
            cr_assert_eq(probe_view(&s).error_code, RILL_EIO);
        cr_assert_eq(kit_fence(sys, pub), RILL_OK);
        cr_assert_eq(probe_count(&p, RILL_STREAM_CANCEL), 0, "%s: the map cancelled", what);

        /* ... and a sink ends. */
        rill_aid_t sink = spawn_stage(sys, rill_sink_ignore(), 0, 0);
        link_stages(sys, pub2, sink);
        expect_dead(sys, sink, "the sink");
        cr_assert_eq(kit_fence(sys, pub2), RILL_OK);
        cr_assert_eq(probe_count(&q, RILL_STREAM_CANCEL), 0, "%s: the sink cancelled", what);

        rill_stop(sys, pub);
        rill_stop(sys, pub2);
        rill_stop(sys, sub);
        expect_dead(sys, pub, "probe");
        expect_dead(sys, pub2, "probe");
        expect_dead(sys, sub, "probe");
        probe_fini(&p);
        probe_fini(&q);
        probe_fini(&s);
    }
    conf_end(sys);
}

Test(rs, rule_2_13_null_signals_are_rejected_and_change_nothing, .timeout = 60)
{
    rill_system_t *sys = conf_system();
    kit_tally_t tally;
    memset(&tally, 0, sizeof(tally));
    probe_t s, p;
    rill_aid_t sub = sub_probe(sys, &s);
    rill_aid_t pub = pub_probe(sys, &p);

    /* The signal functions refuse invalid elements and missing parties,
     * send nothing, and leave the element with the caller. */
    rill_elem_t null_elem = {.payload = NULL, .arg = 42};
    cr_assert_eq(rill_stream_next(sys, rill_sub(sub), rill_pub(pub), 1, &null_elem), RILL_EINVAL);
    cr_assert_eq(rill_stream_next(sys, rill_sub(sub), rill_pub(pub), 1, NULL), RILL_EINVAL);
    rill_elem_t owned = {.payload = kit_payload_new(&tally, 7), .dtor = kit_payload_free, .arg = 7};
    cr_assert_eq(rill_stream_next(sys, rill_sub(sub), rill_pub(RILL_AID_NONE), 1, &owned),
                 RILL_EINVAL);
    cr_assert_eq(rill_stream_next(sys, rill_sub(RILL_AID_NONE), rill_pub(pub), 1, &owned),
                 RILL_EINVAL);
    cr_assert_eq(rill_stream_next(NULL, rill_sub(sub), rill_pub(pub), 1, &owned), RILL_EINVAL);
    cr_assert_eq(atomic_load(&tally.released), 0, "a refused element was released");
    kit_payload_reclaim(owned.payload);
    cr_assert_eq(rill_stream_on_subscribe(sys, rill_sub(sub), rill_pub(RILL_AID_NONE), 1),
                 RILL_EINVAL);
    cr_assert_eq(rill_stream_on_subscribe(sys, rill_sub(RILL_AID_NONE), rill_pub(pub), 1),
                 RILL_EINVAL);
    cr_assert_eq(rill_stream_request(sys, rill_pub(pub), rill_sub(RILL_AID_NONE), 1, 5),
                 RILL_EINVAL);
    cr_assert_eq(rill_stream_cancel(sys, rill_pub(pub), rill_sub(RILL_AID_NONE), 1), RILL_EINVAL);
    cr_assert_eq(rill_stream_complete(sys, rill_sub(sub), rill_pub(RILL_AID_NONE), 1), RILL_EINVAL);
    cr_assert_eq(rill_stream_error(sys, rill_sub(sub), rill_pub(RILL_AID_NONE), 1, RILL_EIO, "x"),
                 RILL_EINVAL);
    cr_assert_eq(rill_stream_error(sys, rill_sub(RILL_AID_NONE), rill_pub(pub), 1, RILL_EIO, NULL),
                 RILL_EINVAL);
    cr_assert_eq(kit_fence(sys, pub), RILL_OK);
    cr_assert_eq(kit_fence(sys, sub), RILL_OK);
    cr_assert_eq(probe_total(&s), 0, "a refused signal reached the subscriber");
    cr_assert_eq(probe_total(&p), 0, "a refused signal reached the publisher");

    /* A NEXT with neither payload nor value flag reaching a stage is
     * ignored; the stream goes on. */
    probe_t ms;
    probe_init(&ms);
    ms.check_order = 1;
    rill_aid_t msub = probe_spawn(sys, &ms, 64, 1);
    rill_aid_t map = spawn_stage(sys, rill_stage_map(map_identity, NULL), 0, 0);
    subscribe(sys, map, msub, 13);
    cr_assert_eq(probe_request(sys, &ms, msub, map, 13, 10), RILL_OK);
    link_stages(sys, pub, map);
    cr_assert(probe_wait_demand(&p, 3, KIT_WAIT_MS), "the map asked for less than 3");
    uint64_t tok = probe_view(&p).token;
    rill_msg_t raw = {.type = RILL_STREAM_NEXT, .from = pub, .corr = tok, .arg = 99};
    cr_assert_eq(rill_tell(sys, map, &raw), RILL_OK);
    send_values(sys, map, pub, tok, 1, 2);
    cr_assert_eq(rill_stream_complete(sys, rill_sub(map), rill_pub(pub), tok), RILL_OK);
    cr_assert(probe_wait_count(&ms, RILL_STREAM_COMPLETE, 1, KIT_WAIT_MS), "stream stopped");
    cr_assert_eq(probe_count(&ms, RILL_STREAM_NEXT), 2, "the NULL element went through");
    cr_assert_eq(probe_at(&ms, 1).arg, 1);
    cr_assert_eq(probe_at(&ms, 2).arg, 2);
    cr_assert_eq(probe_count(&ms, RILL_STREAM_ERROR), 0);
    expect_dead(sys, map, "the completed map");

    /* An ERROR that carries no error code is still a failure, not a
     * completion. */
    probe_t es, ep;
    rill_aid_t esub = sub_probe(sys, &es);
    rill_aid_t epub = pub_probe(sys, &ep);
    rill_aid_t emap = spawn_stage(sys, rill_stage_map(map_identity, NULL), 0, 0);
    subscribe(sys, emap, esub, 14);
    link_stages(sys, epub, emap);
    cr_assert(probe_wait_count(&ep, RILL_STREAM_REQUEST, 1, KIT_WAIT_MS));
    cr_assert_eq(rill_stream_error(sys, rill_sub(emap), rill_pub(epub), probe_view(&ep).token,
                                   RILL_OK, NULL),
                 RILL_OK);
    cr_assert(probe_wait_count(&es, RILL_STREAM_ERROR, 1, KIT_WAIT_MS), "no ERROR downstream");
    cr_assert_eq(probe_count(&es, RILL_STREAM_COMPLETE), 0);
    cr_assert_neq(probe_view(&es).error_code, RILL_OK);
    expect_dead(sys, emap, "the failed map");

    conf_end(sys);
    probe_fini(&s);
    probe_fini(&p);
    probe_fini(&ms);
    probe_fini(&es);
    probe_fini(&ep);
}

/* ===================================================================== */
/* Rules 3.x: the subscription                                           */
/* ===================================================================== */

Test(rs, rule_3_2_request_from_inside_next_does_not_deadlock, .timeout = 60)
{
    const int64_t n = KIT_SCALE(20000);
    rill_system_t *sys = conf_system();
    probe_t s;
    probe_init(&s);
    s.check_order = 1;
    s.request_on_subscribe = 1; /* from inside ON_SUBSCRIBE */
    s.request_per_next = 1;     /* from inside every NEXT */
    rill_aid_t sub = probe_spawn(sys, &s, 64, 1);
    rill_aid_t src = spawn_stage(sys, rill_source_range(0, (uint64_t)n), 0, 0);
    subscribe(sys, src, sub, 1);
    cr_assert(probe_wait_count(&s, RILL_STREAM_COMPLETE, 1, 60000), "stalled at %lld of %lld",
              (long long)probe_acct(&s, 1).received, (long long)n);
    cr_assert_eq(probe_acct(&s, 1).received, n);
    cr_assert_eq(probe_view(&s).order_violations, 0);
    cr_assert_eq(probe_view(&s).demand_violations, 0);
    cr_assert_eq(probe_count(&s, RILL_STREAM_ERROR), 0);
    conf_end(sys);
    probe_fini(&s);
}

Test(rs, rule_3_3_request_and_next_never_recurse, .timeout = 60)
{
    const int64_t n = KIT_SCALE(20000);
    rill_system_t *sys = conf_system();
    probe_t s;
    probe_init(&s);
    s.check_order = 1;
    s.request_on_subscribe = 1;
    s.request_per_next = 1;
    /* Same executor for both: the case where a direct call from request
     * into the source's emit would be tempting. */
    rill_aid_t sub = probe_spawn(sys, &s, 64, 0);
    puller_t pl;
    puller_init(&pl, (uint64_t)n, UINT64_MAX, NULL);
    rill_aid_t src = spawn_stage(sys, rill_source_fn(pull, &pl), 0, 0);
    subscribe(sys, src, sub, 1);
    cr_assert(probe_wait_count(&s, RILL_STREAM_COMPLETE, 1, 60000), "stalled at %lld of %lld",
              (long long)probe_acct(&s, 1).received, (long long)n);
    expect_dead(sys, src, "the completed source");
    cr_assert_eq(probe_acct(&s, 1).received, n);
    cr_assert_eq(atomic_load(&pl.max_depth), 1, "the pull function was re-entered");
    cr_assert_eq(atomic_load(&s.max_depth), 1, "the subscriber's handler was re-entered");
    /* A recursion of one frame per element would spread the frames over
     * megabytes of stack. */
    uintptr_t spread = atomic_load(&pl.frame_hi) - atomic_load(&pl.frame_lo);
    cr_assert_lt(spread, FRAME_SPREAD_LIMIT, "pull frames spread over %zu bytes", (size_t)spread);
    pthread_mutex_lock(&s.mu);
    spread = s.frame_hi - s.frame_lo;
    pthread_mutex_unlock(&s.mu);
    cr_assert_lt(spread, FRAME_SPREAD_LIMIT, "handler frames spread over %zu bytes",
                 (size_t)spread);
    conf_end(sys);
    probe_fini(&s);
}

/* Against a publisher that ends with its only subscription; the same
 * against a live one (a broadcast serving another subscriber) is
 * rs_kinds::rule_1_11_3_6_3_7_on_a_live_broadcast. */
Test(rs, rule_3_6_and_3_7_request_and_cancel_after_cancel_are_noops, .timeout = 60)
{
    rill_system_t *sys = conf_system();
    probe_t s, m;
    rill_aid_t sub = sub_probe(sys, &s);
    rill_aid_t msub = sub_probe(sys, &m);
    rill_aid_t src = spawn_stage(sys, rill_source_range(0, UINT64_MAX), 0, 0);
    rill_aid_t src2 = spawn_stage(sys, rill_source_range(0, UINT64_MAX), 0, 0);
    rill_aid_t map = spawn_stage(sys, rill_stage_map(map_identity, NULL), 0, 1);
    link_stages(sys, src2, map);

    probe_t *probes[2] = {&s, &m};
    rill_aid_t subs[2] = {sub, msub};
    rill_aid_t pubs[2] = {src, map};
    for (int k = 0; k < 2; k++) {
        probe_t *p = probes[k];
        uint64_t tok = 50 + (uint64_t)k;
        subscribe(sys, pubs[k], subs[k], tok);
        cr_assert_eq(probe_request(sys, p, subs[k], pubs[k], tok, 5), RILL_OK);
        cr_assert(probe_wait_count(p, RILL_STREAM_NEXT, 5, KIT_WAIT_MS));
        cr_assert_eq(rill_stream_cancel(sys, rill_pub(pubs[k]), rill_sub(subs[k]), tok), RILL_OK);
        /* After CANCEL: more demand, a bad demand, another CANCEL. */
        rill_err_t r = probe_request(sys, p, subs[k], pubs[k], tok, 10);
        cr_assert(r == RILL_OK || r == RILL_ESTOPPED, "%s", rill_err_name(r));
        r = rill_stream_request(sys, rill_pub(pubs[k]), rill_sub(subs[k]), tok, 0);
        cr_assert(r == RILL_OK || r == RILL_ESTOPPED, "%s", rill_err_name(r));
        r = rill_stream_cancel(sys, rill_pub(pubs[k]), rill_sub(subs[k]), tok);
        cr_assert(r == RILL_OK || r == RILL_ESTOPPED, "%s", rill_err_name(r));
    }
    expect_dead(sys, src2, "the source behind the cancelled map");
    for (int k = 0; k < 2; k++) {
        probe_t *p = probes[k];
        dead_then_fence(sys, pubs[k], subs[k], "the cancelled publisher");
        cr_assert_eq(probe_count(p, RILL_STREAM_NEXT), 5, "NEXT after CANCEL (%d)", k);
        cr_assert_eq(probe_view(p).demand_violations, 0, "(%d)", k);
        cr_assert_eq(probe_count(p, RILL_STREAM_ERROR), 0, "ERROR after CANCEL (%d)", k);
        cr_assert_eq(probe_count(p, RILL_STREAM_COMPLETE), 0, "COMPLETE after CANCEL (%d)", k);
    }
    conf_end(sys);
    probe_fini(&s);
    probe_fini(&m);
}

struct canceller {
    rill_system_t *sys;
    rill_aid_t pub, sub;
    uint64_t token;
    pthread_barrier_t *start;
    rill_err_t result;
};

static void *cancel_thread(void *arg)
{
    struct canceller *c = arg;
    pthread_barrier_wait(c->start);
    c->result = rill_stream_cancel(c->sys, rill_pub(c->pub), rill_sub(c->sub), c->token);
    return NULL;
}

Test(rs, rule_3_5_concurrent_cancel_is_safe, .timeout = 120)
{
    const int rounds = KIT_SCALE(200);
    rill_system_t *sys = conf_system();
    probe_t s;
    probe_init(&s);
    rill_aid_t sub = probe_spawn(sys, &s, 1024, 1);
    for (int i = 0; i < rounds; i++) {
        uint64_t tok = 1000 + (uint64_t)i;
        rill_aid_t src = spawn_stage(sys, rill_source_range(0, UINT64_MAX), 0, i % 2);
        subscribe(sys, src, sub, tok);
        cr_assert_eq(probe_request(sys, &s, sub, src, tok, 50), RILL_OK);
        pthread_barrier_t start;
        pthread_barrier_init(&start, NULL, 2);
        struct canceller c[2];
        pthread_t th[2];
        for (int k = 0; k < 2; k++) {
            c[k] = (struct canceller){sys, src, sub, tok, &start, RILL_EINVAL};
            cr_assert_eq(pthread_create(&th[k], NULL, cancel_thread, &c[k]), 0);
        }
        for (int k = 0; k < 2; k++)
            pthread_join(th[k], NULL);
        pthread_barrier_destroy(&start);
        for (int k = 0; k < 2; k++)
            cr_assert(c[k].result == RILL_OK || c[k].result == RILL_ESTOPPED,
                      "round %d: cancel returned %s", i, rill_err_name(c[k].result));
        cr_assert(kit_wait_dead(sys, src, KIT_WAIT_MS), "round %d: the source goes on", i);
    }
    /* Every source is gone: all they sent is queued before the fence. */
    cr_assert_eq(kit_fence(sys, sub), RILL_OK);
    cr_assert_leq(probe_count(&s, RILL_STREAM_NEXT), (size_t)rounds * 50);
    cr_assert_eq(probe_count(&s, RILL_STREAM_ON_SUBSCRIBE), (size_t)rounds);
    cr_assert_eq(probe_count(&s, RILL_STREAM_ERROR), 0);
    cr_assert_eq(probe_count(&s, RILL_STREAM_COMPLETE), 0);
    cr_assert_eq(probe_view(&s).demand_violations, 0);
    conf_end(sys);
    probe_fini(&s);
}

/* REQUEST and CANCEL are control signals on a queue that is never full:
 * they return at once, normally, whatever the publisher is doing; here its
 * executor is held the whole time, so none of them could have waited for
 * it. CANCEL twice is fine (3.5's idempotence). */
Test(rs, rule_3_4_3_5_3_15_3_16_request_and_cancel_return_while_the_publisher_is_busy,
     .timeout = 60)
{
    rill_system_t *sys = conf_system();
    probe_t s, blk;
    probe_init(&s);
    rill_aid_t sub = probe_spawn(sys, &s, 1024, 1); /* room for all 500 and a fence */
    probe_init(&blk);
    rill_aid_t src = spawn_stage(sys, rill_source_range(0, UINT64_MAX), 0, 0);
    subscribe(sys, src, sub, 1);
    cr_assert(probe_wait_count(&s, RILL_STREAM_ON_SUBSCRIBE, 1, KIT_WAIT_MS));
    kit_gate_t gate;
    kit_gate_init(&gate);
    rill_aid_t blocker = probe_spawn(sys, &blk, 8, 0);
    rill_msg_t h = {.type = PROBE_HOLD, .payload = &gate};
    cr_assert_eq(rill_tell(sys, blocker, &h), RILL_OK);
    cr_assert(kit_wait_at_least(&gate.arrived, 1, KIT_WAIT_MS));
    for (int i = 0; i < 500; i++)
        cr_assert_eq(probe_request(sys, &s, sub, src, 1, 1), RILL_OK, "request %d", i);
    cr_assert_eq(rill_stream_cancel(sys, rill_pub(src), rill_sub(sub), 1), RILL_OK);
    cr_assert_eq(rill_stream_cancel(sys, rill_pub(src), rill_sub(sub), 1), RILL_OK);
    rill_actor_stats_t st;
    cr_assert_eq(rill_actor_stats(sys, src, &st), RILL_OK, "the source ran while held");
    cr_assert_eq(st.processed, 1, "the source handled more than SUBSCRIBE while held");
    kit_gate_open(&gate);
    dead_then_fence(sys, src, sub, "the cancelled source");
    cr_assert_eq(probe_view(&s).demand_violations, 0);
    cr_assert_leq(probe_count(&s, RILL_STREAM_NEXT), 500);
    cr_assert_eq(probe_count(&s, RILL_STREAM_ERROR), 0);
    cr_assert_eq(probe_count(&s, RILL_STREAM_COMPLETE), 0);
    conf_end(sys);
    kit_gate_destroy(&gate);
    probe_fini(&blk);
    probe_fini(&s);
}

Test(rs, rule_3_9_non_positive_request_signals_error_once, .timeout = 60)
{
    rill_system_t *sys = conf_system();
    probe_t z, neg;
    rill_aid_t zsub = sub_probe(sys, &z);
    rill_aid_t nsub = sub_probe(sys, &neg);
    rill_aid_t zsrc = spawn_stage(sys, rill_source_range(0, 1000), 0, 0);
    rill_aid_t nsrc = spawn_stage(sys, rill_source_range(0, 1000), 0, 0);

    /* REQUEST(0) after some elements, twice: one ERROR. */
    subscribe(sys, zsrc, zsub, 1);
    cr_assert_eq(probe_request(sys, &z, zsub, zsrc, 1, 2), RILL_OK);
    cr_assert(probe_wait_count(&z, RILL_STREAM_NEXT, 2, KIT_WAIT_MS));
    cr_assert_eq(rill_stream_request(sys, rill_pub(zsrc), rill_sub(zsub), 1, 0), RILL_OK);
    rill_err_t r = rill_stream_request(sys, rill_pub(zsrc), rill_sub(zsub), 1, 0);
    cr_assert(r == RILL_OK || r == RILL_ESTOPPED, "%s", rill_err_name(r));

    /* REQUEST(-5) as the first demand, then a valid one: one ERROR. */
    subscribe(sys, nsrc, nsub, 2);
    cr_assert_eq(rill_stream_request(sys, rill_pub(nsrc), rill_sub(nsub), 2, -5), RILL_OK);
    r = probe_request(sys, &neg, nsub, nsrc, 2, 10);
    cr_assert(r == RILL_OK || r == RILL_ESTOPPED, "%s", rill_err_name(r));

    probe_t *probes[2] = {&z, &neg};
    size_t nexts[2] = {2, 0};
    rill_aid_t srcs[2] = {zsrc, nsrc}, subs[2] = {zsub, nsub};
    for (int k = 0; k < 2; k++) {
        probe_t *p = probes[k];
        cr_assert(probe_wait_count(p, RILL_STREAM_ERROR, 1, KIT_WAIT_MS), "no ERROR (%d)", k);
        /* With its only subscription over, each source ends. */
        dead_then_fence(sys, srcs[k], subs[k], "the source after a bad REQUEST");
        cr_assert_eq(probe_count(p, RILL_STREAM_ERROR), 1, "ERROR more than once (%d)", k);
        cr_assert_eq(probe_view(p).error_code, RILL_EINVAL);
        cr_assert_eq(probe_count(p, RILL_STREAM_NEXT), nexts[k], "(%d)", k);
        cr_assert_eq(probe_count(p, RILL_STREAM_COMPLETE), 0);
        cr_assert_eq(probe_view(p).after_terminal, 0);
        pthread_mutex_lock(&p->mu);
        cr_assert_neq(p->error_text[0], '\0', "an ERROR without text");
        pthread_mutex_unlock(&p->mu);
    }
    conf_end(sys);
    probe_fini(&z);
    probe_fini(&neg);
}

Test(rs, rule_3_12_and_3_13_cancel_stops_signals_and_releases_the_subscriber, .timeout = 60)
{
    rill_system_t *sys = conf_system();
    kit_tally_t tally;
    memset(&tally, 0, sizeof(tally));
    probe_t s;
    probe_init(&s);
    s.check_order = 1;
    s.request_on_subscribe = 32;
    s.refill_below = 16;
    s.refill_chunk = 16;
    rill_aid_t sub = probe_spawn(sys, &s, 64, 1);
    puller_t pl;
    puller_init(&pl, UINT64_MAX, UINT64_MAX, &tally);
    rill_aid_t src = spawn_stage(sys, rill_source_fn(pull, &pl), 0, 0);
    rill_aid_t map = spawn_stage(sys, rill_stage_map(map_identity, NULL), 0, 1);
    link_stages(sys, src, map);
    subscribe(sys, map, sub, 1);
    cr_assert(probe_wait_received(&s, 1, 500, KIT_WAIT_MS), "elements do not flow");

    cr_assert_eq(rill_stream_cancel(sys, rill_pub(map), rill_sub(sub), 1), RILL_OK);
    expect_dead(sys, src, "the source behind the cancelled map");
    /* In-flight elements may still land, but all before the fence: the
     * map is gone. */
    dead_then_fence(sys, map, sub, "the cancelled map");
    size_t landed = probe_count(&s, RILL_STREAM_NEXT);
    cr_assert_eq(kit_fence(sys, sub), RILL_OK);
    cr_assert_eq(probe_count(&s, RILL_STREAM_NEXT), landed, "NEXT keeps coming after CANCEL");
    cr_assert_eq(probe_view(&s).demand_violations, 0);
    cr_assert_eq(probe_count(&s, RILL_STREAM_ERROR), 0);
    cr_assert_eq(probe_count(&s, RILL_STREAM_COMPLETE), 0);
    cr_assert_eq(probe_view(&s).order_violations, 0);
    /* Everything the source made was released: by the subscriber, or by
     * the stages that dropped what they held. */
    expect_all_released(&tally);
    cr_assert_eq(atomic_load(&tally.reclaimed), 0);
    conf_end(sys);
    probe_fini(&s);
}

Test(rs, rule_3_17_demand_up_to_int64_max_is_unbounded, .timeout = 60)
{
    rill_system_t *sys = conf_system();
    probe_t a, b, c;
    probe_init(&a);
    probe_init(&b);
    probe_init(&c);
    a.check_order = b.check_order = c.check_order = 1;
    /* Finite runs fit the probes' mailboxes whole. */
    rill_aid_t asub = probe_spawn(sys, &a, 2048, 1);
    rill_aid_t bsub = probe_spawn(sys, &b, 2048, 1);
    rill_aid_t csub = probe_spawn(sys, &c, 256, 1);
    rill_aid_t asrc = spawn_stage(sys, rill_source_range(0, 1000), 0, 0);
    rill_aid_t bsrc = spawn_stage(sys, rill_source_range(0, 1000), 0, 0);
    rill_aid_t csrc = spawn_stage(sys, rill_source_range(0, UINT64_MAX), 0, 0);

    subscribe(sys, asrc, asub, 1);
    cr_assert_eq(probe_request(sys, &a, asub, asrc, 1, INT64_MAX), RILL_OK);

    /* The three requests must all reach the source before it could
     * deliver the 1000 and end: its executor is held until they are
     * queued. */
    probe_t blk;
    probe_init(&blk);
    kit_gate_t gate;
    kit_gate_init(&gate);
    rill_aid_t blocker = probe_spawn(sys, &blk, 8, 0);
    rill_msg_t h = {.type = PROBE_HOLD, .payload = &gate};
    cr_assert_eq(rill_tell(sys, blocker, &h), RILL_OK);
    cr_assert(kit_wait_at_least(&gate.arrived, 1, KIT_WAIT_MS));
    subscribe(sys, bsrc, bsub, 2);
    cr_assert_eq(probe_request(sys, &b, bsub, bsrc, 2, INT64_MAX / 2), RILL_OK);
    cr_assert_eq(probe_request(sys, &b, bsub, bsrc, 2, INT64_MAX / 2), RILL_OK);
    cr_assert_eq(probe_request(sys, &b, bsub, bsrc, 2, 1), RILL_OK);
    kit_gate_open(&gate);

    probe_t *fin[2] = {&a, &b};
    rill_aid_t fsrc[2] = {asrc, bsrc}, fsub[2] = {asub, bsub};
    for (int k = 0; k < 2; k++) {
        cr_assert(probe_wait_count(fin[k], RILL_STREAM_COMPLETE, 1, KIT_WAIT_MS),
                  "no COMPLETE (%d)", k);
        dead_then_fence(sys, fsrc[k], fsub[k], "the completed source");
        cr_assert_eq(probe_count(fin[k], RILL_STREAM_NEXT), 1000, "(%d)", k);
        cr_assert_eq(probe_count(fin[k], RILL_STREAM_ERROR), 0, "(%d)", k);
        cr_assert_eq(probe_view(fin[k]).order_violations, 0);
    }

    /* Endless: near-INT64_MAX ten times, no error, elements keep coming. */
    subscribe(sys, csrc, csub, 3);
    for (int i = 0; i < 10; i++)
        cr_assert_eq(probe_request(sys, &c, csub, csrc, 3, INT64_MAX - 1), RILL_OK);
    cr_assert(probe_wait_received(&c, 3, 2000, KIT_WAIT_MS), "stalled");
    int64_t seen = probe_acct(&c, 3).received;
    cr_assert(probe_wait_received(&c, 3, seen + 2000, KIT_WAIT_MS), "stopped after %lld",
              (long long)seen);
    cr_assert_eq(probe_count(&c, RILL_STREAM_ERROR), 0);
    cr_assert_eq(probe_count(&c, RILL_STREAM_COMPLETE), 0);
    cr_assert_eq(rill_stream_cancel(sys, rill_pub(csrc), rill_sub(csub), 3), RILL_OK);
    dead_then_fence(sys, csrc, csub, "the cancelled endless source");
    cr_assert_eq(probe_view(&c).demand_violations, 0);
    cr_assert_eq(probe_count(&c, RILL_STREAM_ERROR), 0);
    cr_assert_eq(probe_view(&c).order_violations, 0);
    conf_end(sys);
    kit_gate_destroy(&gate);
    probe_fini(&blk);
    probe_fini(&a);
    probe_fini(&b);
    probe_fini(&c);
}

/* ===================================================================== */
/* Every stage kind, table-driven                                        */
/* ===================================================================== */

/*
 * The rules above, each against one or two kinds, in depth. Below, the
 * rules that every stage of a role must keep, run over a table of every
 * stage kind rill has (stream.h), by role: sources (publishers),
 * processors (subscriber and publisher: rule 4.1), sinks (subscribers).
 * The other side is always a probe. Waits end on a positive
 * synchronisation: the stage under test is dead (so everything it ever
 * sent is queued at the probe) and a fence went through the probe after
 * it (so the probe handled all of it); or, for a stage that stays alive,
 * a later signal that must arrive after the one that must not.
 *
 * The Kafka source and sink need the embedded broker: they have their
 * own tests (suite rs_kafka) with the same probes and checks.
 */

enum { ROLE_SOURCE = 1, ROLE_PROCESSOR, ROLE_SINK };

/* What a kind does with the elements it passes, so the table knows what
 * it may assert about them. */
enum {
    K_COUNT = 1 << 0,     /* as many outputs as inputs */
    K_ORDER = 1 << 1,     /* outputs in input order, values unchanged */
    K_EXTRA_END = 1 << 2, /* emits one more element when its input completes */
    K_COLLECT = 1 << 3,   /* sink: keeps elements in the case's collector */
    K_FINITE = 1 << 4,    /* pulls whatever downstream does and fails when full:
                             give it no more than it holds */
};

/* Per-case state a factory may need (freed after the system). */
typedef struct kcase_env {
    rill_collector_t *collector;
} kcase_env_t;

typedef struct kcase {
    const char *name;
    int role;
    unsigned flags;
    rill_stage_t *(*make)(kcase_env_t *env);
} kcase_t;

/* ---- the functions the kinds run ------------------------------------ */

static int filter_keep_all(void *opaque, const rill_elem_t *e)
{
    (void)opaque;
    (void)e;
    return 1;
}

/* flat_map: a value copy of the input, then the input itself (two
 * outputs per input: the demand-sensitive case). */
static rill_err_t flat_twice(void *opaque, rill_elem_t *in, rill_emitter_t *out)
{
    (void)opaque;
    rill_elem_t copy = rill_elem_value(in->arg);
    rill_err_t e = rill_emit(out, &copy);
    if (e)
        return e;
    return rill_emit(out, in);
}

static void *sm_create(void *opaque)
{
    (void)opaque;
    return calloc(1, sizeof(uint64_t));
}

static rill_err_t sm_fn(void *state, rill_elem_t *in, rill_emitter_t *out)
{
    ++*(uint64_t *)state;
    return rill_emit(out, in);
}

/* On COMPLETE: one last element, the number seen. */
static rill_err_t sm_complete(void *state, rill_emitter_t *out)
{
    rill_elem_t e = rill_elem_value(*(uint64_t *)state);
    return rill_emit(out, &e);
}

static void sm_destroy(void *state)
{
    free(state);
}

/* map_async finishing every job at once, from inside the function. */
static rill_err_t async_inline(void *opaque, rill_async_job_t *job, rill_elem_t *in)
{
    (void)opaque;
    return rill_async_complete(job, RILL_OK, in);
}

/* conflate: the sum of the values; the accumulator keeps its payload. */
static rill_err_t conflate_sum(void *opaque, rill_elem_t *acc, rill_elem_t *in)
{
    (void)opaque;
    acc->arg += in->arg;
    rill_elem_release(in);
    return RILL_OK;
}

static uint64_t key_mod3(void *opaque, const rill_elem_t *e)
{
    (void)opaque;
    return e->arg % 3;
}

/* broadcast: a copy is a value with the same arg. */
static rill_err_t copy_value(void *opaque, const rill_elem_t *in, rill_elem_t *copy)
{
    (void)opaque;
    *copy = rill_elem_value(in->arg);
    return RILL_OK;
}

static rill_err_t sink_release(void *opaque, rill_elem_t *e)
{
    (void)opaque;
    rill_elem_release(e);
    return RILL_OK;
}

static rill_err_t sink_confirm_release(void *opaque, rill_elem_t *e)
{
    (void)opaque;
    rill_elem_confirm(e);
    rill_elem_release(e);
    return RILL_OK;
}

/* ---- factories ------------------------------------------------------ */

#define KCASE_N 40 /* elements a publisher probe or a source sends */

static puller_t kcase_puller; /* one pull source at a time */

static rill_stage_t *mk_range(kcase_env_t *e)
{
    (void)e;
    return rill_source_range(0, KCASE_N);
}
static rill_stage_t *mk_pull(kcase_env_t *e)
{
    (void)e;
    puller_init(&kcase_puller, KCASE_N, UINT64_MAX, NULL);
    return rill_source_fn(pull, &kcase_puller);
}
static rill_stage_t *mk_map(kcase_env_t *e)
{
    (void)e;
    return rill_stage_map(map_identity, NULL);
}
static rill_stage_t *mk_filter(kcase_env_t *e)
{
    (void)e;
    return rill_stage_filter(filter_keep_all, NULL);
}
static rill_stage_t *mk_flat_map(kcase_env_t *e)
{
    (void)e;
    return rill_stage_flat_map(flat_twice, NULL);
}
static rill_stage_t *mk_stateful(kcase_env_t *e)
{
    (void)e;
    rill_stateful_ops_t ops = {sm_create, sm_fn, sm_complete, sm_destroy};
    return rill_stage_stateful_map(&ops, NULL);
}
static rill_stage_t *mk_async_ordered(kcase_env_t *e)
{
    (void)e;
    return rill_stage_map_async(async_inline, NULL, 4, 1);
}
static rill_stage_t *mk_async_unordered(kcase_env_t *e)
{
    (void)e;
    return rill_stage_map_async(async_inline, NULL, 4, 0);
}
static rill_stage_t *mk_batch(kcase_env_t *e)
{
    (void)e;
    return rill_stage_batch(3, 0);
}
static rill_stage_t *mk_batch_timed(kcase_env_t *e)
{
    (void)e;
    return rill_stage_batch(3, 2);
}
static rill_stage_t *mk_buf_bp(kcase_env_t *e)
{
    (void)e;
    return rill_stage_buffer(4, RILL_OVERFLOW_BACKPRESSURE);
}
static rill_stage_t *mk_buf_head(kcase_env_t *e)
{
    (void)e;
    return rill_stage_buffer(4, RILL_OVERFLOW_DROP_HEAD);
}
static rill_stage_t *mk_buf_tail(kcase_env_t *e)
{
    (void)e;
    return rill_stage_buffer(4, RILL_OVERFLOW_DROP_TAIL);
}
static rill_stage_t *mk_buf_all(kcase_env_t *e)
{
    (void)e;
    return rill_stage_buffer(4, RILL_OVERFLOW_DROP_BUFFER);
}
/* Larger than all a probe sends, so it never overflows here (the overflow
 * itself is test_stream_stages.c's). */
static rill_stage_t *mk_buf_fail(kcase_env_t *e)
{
    (void)e;
    return rill_stage_buffer(2 * KCASE_N, RILL_OVERFLOW_FAIL);
}
static rill_stage_t *mk_conflate_latest(kcase_env_t *e)
{
    (void)e;
    return rill_stage_conflate(NULL, NULL);
}
static rill_stage_t *mk_conflate_sum(kcase_env_t *e)
{
    (void)e;
    return rill_stage_conflate(conflate_sum, NULL);
}
static rill_stage_t *mk_conflate_key(kcase_env_t *e)
{
    (void)e;
    return rill_stage_conflate_by_key(key_mod3, NULL, 0);
}
static rill_stage_t *mk_throttle(kcase_env_t *e)
{
    (void)e;
    return rill_stage_throttle(20, 5);
}
static rill_stage_t *mk_broadcast(kcase_env_t *e)
{
    (void)e;
    return rill_stage_broadcast(1, copy_value, NULL);
}
static rill_stage_t *mk_merge(kcase_env_t *e)
{
    (void)e;
    return rill_stage_merge(1);
}
static rill_stage_t *mk_partition(kcase_env_t *e)
{
    (void)e;
    return rill_stage_partition_by_key(2, key_mod3, map_identity, NULL);
}
static rill_stage_t *mk_foreach(kcase_env_t *e)
{
    (void)e;
    return rill_sink_foreach(sink_release, NULL);
}
static rill_stage_t *mk_foreach_manual(kcase_env_t *e)
{
    (void)e;
    return rill_sink_foreach_manual(sink_confirm_release, NULL);
}
static rill_stage_t *mk_ignore(kcase_env_t *e)
{
    (void)e;
    return rill_sink_ignore();
}
static rill_stage_t *mk_collect(kcase_env_t *e)
{
    e->collector = rill_collector_new();
    cr_assert_not_null(e->collector);
    return rill_sink_collect(e->collector);
}

static const kcase_t KCASES[] = {
    {"source_range", ROLE_SOURCE, K_COUNT | K_ORDER, mk_range},
    {"source_fn", ROLE_SOURCE, K_COUNT | K_ORDER, mk_pull},
    {"map", ROLE_PROCESSOR, K_COUNT | K_ORDER, mk_map},
    {"filter", ROLE_PROCESSOR, K_COUNT | K_ORDER, mk_filter},
    {"flat_map", ROLE_PROCESSOR, 0, mk_flat_map},
    {"stateful_map", ROLE_PROCESSOR, K_EXTRA_END, mk_stateful},
    {"map_async_ordered", ROLE_PROCESSOR, K_COUNT | K_ORDER, mk_async_ordered},
    {"map_async_unordered", ROLE_PROCESSOR, K_COUNT, mk_async_unordered},
    {"batch", ROLE_PROCESSOR, 0, mk_batch},
    {"batch_timed", ROLE_PROCESSOR, 0, mk_batch_timed},
    {"buffer_backpressure", ROLE_PROCESSOR, K_COUNT | K_ORDER, mk_buf_bp},
    {"buffer_drop_head", ROLE_PROCESSOR, 0, mk_buf_head},
    {"buffer_drop_tail", ROLE_PROCESSOR, 0, mk_buf_tail},
    {"buffer_drop_buffer", ROLE_PROCESSOR, 0, mk_buf_all},
    {"buffer_fail", ROLE_PROCESSOR, K_COUNT | K_ORDER | K_FINITE, mk_buf_fail},
    {"conflate_latest", ROLE_PROCESSOR, 0, mk_conflate_latest},
    {"conflate_fn", ROLE_PROCESSOR, 0, mk_conflate_sum},
    {"conflate_by_key", ROLE_PROCESSOR, 0, mk_conflate_key},
    {"throttle", ROLE_PROCESSOR, K_COUNT | K_ORDER, mk_throttle},
    {"broadcast", ROLE_PROCESSOR, K_COUNT | K_ORDER, mk_broadcast},
    {"merge", ROLE_PROCESSOR, K_COUNT | K_ORDER, mk_merge},
    {"partition_by_key", ROLE_PROCESSOR, K_COUNT, mk_partition},
    {"sink_foreach", ROLE_SINK, 0, mk_foreach},
    {"sink_foreach_manual", ROLE_SINK, 0, mk_foreach_manual},
    {"sink_ignore", ROLE_SINK, 0, mk_ignore},
    {"sink_collect", ROLE_SINK, K_COLLECT, mk_collect},
};
#define N_KCASES (sizeof(KCASES) / sizeof(KCASES[0]))

/* Role masks for each_kind. */
#define R_SOURCE      (1u << ROLE_SOURCE)
#define R_PROCESSOR   (1u << ROLE_PROCESSOR)
#define R_SINK        (1u << ROLE_SINK)
#define R_PUBLISHERS  (R_SOURCE | R_PROCESSOR)
#define R_SUBSCRIBERS (R_PROCESSOR | R_SINK)

/* Runs check over every kind whose role is in roles, with arg. */
static void each_kind(unsigned roles, void (*check)(const struct kcase *, int), int arg)
{
    for (size_t i = 0; i < N_KCASES; i++)
        if (roles & (1u << KCASES[i].role))
            check(&KCASES[i], arg);
}

/* The stage under test: mailbox 8 (window 7) on executor 0, the probes on
 * executor 1. */
#define KCASE_MAILBOX 8u

static rill_aid_t kcase_spawn(rill_system_t *sys, const kcase_t *k, kcase_env_t *env)
{
    return spawn_stage(sys, k->make(env), KCASE_MAILBOX, 0);
}

static void kcase_env_free(kcase_env_t *env)
{
    rill_collector_free(env->collector);
    env->collector = NULL;
}

static rill_aid_t probe_peer(probe_t *p)
{
    pthread_mutex_lock(&p->mu);
    rill_aid_t a = p->peer;
    pthread_mutex_unlock(&p->mu);
    return a;
}

/* The positive synchronisation: the stage (and, for a composite, the
 * actor that served the subscriber) is gone, so all it sent is queued at
 * the probes; a fence through each probe then ends after all of it. */
static void settle(rill_system_t *sys, rill_aid_t stage, probe_t *s, rill_aid_t sub, rill_aid_t pub,
                   const char *what)
{
    expect_dead(sys, stage, what);
    if (s) {
        rill_aid_t peer = probe_peer(s);
        if (!rill_aid_is_none(peer))
            expect_dead(sys, peer, what);
    }
    if (!rill_aid_is_none(sub))
        cr_assert_eq(kit_fence(sys, sub), RILL_OK);
    if (!rill_aid_is_none(pub))
        cr_assert_eq(kit_fence(sys, pub), RILL_OK);
}

/* The last signal a probe kept. */
static sigrec_t probe_last(probe_t *p)
{
    size_t n = probe_total(p);
    return n ? probe_at(p, n - 1) : (sigrec_t){0};
}

/* A subscriber probe asking `chunk` at a time: at most `chunk` outstanding,
 * the case where a publisher most easily sends more than asked. */
static rill_aid_t chunk_sub(rill_system_t *sys, probe_t *s, int64_t chunk, int order)
{
    probe_init(s);
    s->check_order = order;
    s->request_on_subscribe = chunk;
    s->refill_below = 0;
    s->refill_chunk = chunk;
    return probe_spawn(sys, s, 64, 1);
}

/* A publisher probe for a processor or sink under test: it answers
 * SUBSCRIBE, checks the stage's demand window, and (on PROBE_EMIT) sends
 * elements then ends as `end` says (complete_after_emit). */
static rill_aid_t window_pub(rill_system_t *sys, probe_t *p, int end, kit_tally_t *tally)
{
    probe_init(p);
    p->answer_subscribe = 1;
    p->complete_after_emit = end;
    p->tally = tally;
    return probe_spawn(sys, p, 256, 1);
}

/* rill's promise is about the mailbox the stage really has (a merge
 * reserves a slot for each input it could have): the publisher probe p
 * checks the stage's outstanding demand against it. */
static void window_of(rill_system_t *sys, probe_t *p, rill_aid_t stage)
{
    rill_actor_stats_t st;
    cr_assert_eq(rill_actor_stats(sys, stage, &st), RILL_OK);
    pthread_mutex_lock(&p->mu);
    p->window_limit = (int64_t)st.mailbox_capacity - 1;
    pthread_mutex_unlock(&p->mu);
}

static void emit(rill_system_t *sys, rill_aid_t pub, int64_t n)
{
    rill_msg_t go = kit_msg(PROBE_EMIT, (uint64_t)n, NULL);
    cr_assert_eq(rill_tell(sys, pub, &go), RILL_OK);
}

/* 1.10, 2.12, 1.11 on a stage that has its subscriber `sub` (token 1):
 * the same subscription again changes nothing, and another subscriber of
 * this one-output stage gets ON_SUBSCRIBE then ERROR RILL_ESTATE (rill's
 * stages other than broadcast are unicast). */
static void second_subscribers(rill_system_t *sys, const kcase_t *k, rill_aid_t stage,
                               rill_aid_t sub, probe_t *x, rill_aid_t xa)
{
    subscribe(sys, stage, sub, 1); /* a duplicate: ignored */
    subscribe(sys, stage, xa, 2);
    cr_assert(probe_wait_count(x, RILL_STREAM_ERROR, 1, KIT_WAIT_MS),
              "%s: a second subscriber got no ERROR", k->name);
    cr_assert_eq(probe_at(x, 0).type, RILL_STREAM_ON_SUBSCRIBE, "%s: 1.9", k->name);
    cr_assert_eq(probe_view(x).error_code, RILL_ESTATE, "%s: %s", k->name,
                 rill_err_name(probe_view(x).error_code));
}

/* The checks of a subscriber probe once its subscription ended. */
static void expect_clean_end(probe_t *s, const kcase_t *k, uint32_t terminal)
{
    cr_assert_eq(probe_at(s, 0).type, RILL_STREAM_ON_SUBSCRIBE, "%s: 1.9: %u came first", k->name,
                 probe_at(s, 0).type);
    cr_assert_eq(probe_count(s, RILL_STREAM_ON_SUBSCRIBE), 1, "%s: 1.10/2.12: %zu ON_SUBSCRIBE",
                 k->name, probe_count(s, RILL_STREAM_ON_SUBSCRIBE));
    cr_assert_eq(probe_view(s).demand_violations, 0, "%s: 1.1: NEXT beyond demand", k->name);
    cr_assert_eq(probe_view(s).after_terminal, 0, "%s: 1.7: signals after the end", k->name);
    size_t c = probe_count(s, RILL_STREAM_COMPLETE), e = probe_count(s, RILL_STREAM_ERROR);
    cr_assert_eq(c + e, 1, "%s: 1.7: %zu COMPLETE and %zu ERROR", k->name, c, e);
    cr_assert_eq(probe_last(s).type, terminal, "%s: ended with %u", k->name, probe_last(s).type);
    cr_assert_eq(atomic_load(&s->overlaps), 0, "%s: 1.3: handler calls overlapped", k->name);
    cr_assert_eq(atomic_load(&s->max_depth), 1, "%s: 3.3: the handler was re-entered", k->name);
}

/* ---- publishers: sources and processors -------------------------------- */

/* A processor gets its input from a publisher probe; a source has none. */
typedef struct kfix {
    rill_system_t *sys;
    kcase_env_t env;
    kit_tally_t tally;
    probe_t p, s, x;
    rill_aid_t pub, sub, xa, stage;
} kfix_t;

static void kfix_open(kfix_t *f, const kcase_t *k, int end, int with_tally, int64_t chunk)
{
    memset(f, 0, sizeof(*f));
    f->sys = conf_system();
    f->pub = f->sub = f->xa = RILL_AID_NONE;
    if (k->role != ROLE_SOURCE)
        f->pub = window_pub(f->sys, &f->p, end, with_tally ? &f->tally : NULL);
    if (k->role != ROLE_SINK)
        f->sub = chunk_sub(f->sys, &f->s, chunk, (k->flags & K_ORDER) != 0);
    f->xa = sub_probe(f->sys, &f->x);
    f->stage = kcase_spawn(f->sys, k, &f->env);
    if (k->role != ROLE_SOURCE)
        window_of(f->sys, &f->p, f->stage);
}

static void kfix_close(kfix_t *f, const kcase_t *k)
{
    conf_end(f->sys);
    if (k->role != ROLE_SOURCE)
        probe_fini(&f->p);
    if (k->role != ROLE_SINK)
        probe_fini(&f->s);
    probe_fini(&f->x);
    kcase_env_free(&f->env);
    long made = atomic_load(&f->tally.made);
    long gone = atomic_load(&f->tally.released) + atomic_load(&f->tally.reclaimed);
    cr_assert_eq(made, gone, "%s: 3.13: %ld elements made, %ld released", k->name, made, gone);
}

/* Subscribe the subscriber probe (token 1) and, for a processor, connect
 * the publisher probe; returns once both subscriptions stand. */
static void kfix_wire(kfix_t *f, const kcase_t *k)
{
    subscribe(f->sys, f->stage, f->sub, 1);
    cr_assert(probe_wait_count(&f->s, RILL_STREAM_ON_SUBSCRIBE, 1, KIT_WAIT_MS), "%s: 1.9",
              k->name);
    if (k->role == ROLE_PROCESSOR) {
        link_stages(f->sys, f->pub, f->stage);
        cr_assert(probe_wait_count(&f->p, RILL_STREAM_SUBSCRIBE, 1, KIT_WAIT_MS), "%s", k->name);
    }
}

/* 1.1, 1.2, 1.5, 1.7, 1.9, 1.10, 1.11, 2.1, 2.5, 2.12, 2.13, 3.1, 3.8, 4.1 and
 * rill's demand window: a whole stream through every publisher kind, to a
 * subscriber that asks two at a time. */
static void publisher_flow(const kcase_t *k, int variant)
{
    (void)variant;
    kfix_t f;
    kfix_open(&f, k, 1, 0, 2);
    /* The first two are asked below, once the other subscribers were
     * tried: a source must not have ended before. */
    f.s.request_on_subscribe = 0;
    kfix_wire(&f, k);
    second_subscribers(f.sys, k, f.stage, f.sub, &f.x, f.xa);
    /* 3.1: a subscription is its subscriber's: CANCEL and a bad REQUEST
     * with its token from another actor change nothing (the stream below
     * goes on in full, and nobody gets an ERROR for them). */
    rill_aid_t peer = probe_peer(&f.s);
    cr_assert_eq(rill_stream_cancel(f.sys, rill_pub(peer), rill_sub(f.xa), 1), RILL_OK);
    cr_assert_eq(rill_stream_request(f.sys, rill_pub(peer), rill_sub(f.xa), 1, 0), RILL_OK);
    cr_assert_eq(probe_request(f.sys, &f.s, f.sub, peer, 1, 2), RILL_OK);
    if (k->role == ROLE_PROCESSOR) {
        /* 2.1: the stage asks before anything is sent. */
        cr_assert(probe_wait_demand(&f.p, 1, KIT_WAIT_MS), "%s: 2.1: no REQUEST", k->name);
        /* 2.5: an ON_SUBSCRIBE it did not ask for is cancelled. */
        cr_assert_eq(rill_stream_on_subscribe(f.sys, rill_sub(f.stage), rill_pub(f.xa), 777),
                     RILL_OK);
        cr_assert(probe_wait_count(&f.x, RILL_STREAM_CANCEL, 1, KIT_WAIT_MS), "%s: 2.5", k->name);
        /* 2.13: a NEXT without an element is ignored (counted as sent: it
         * used one unit of the stage's demand). */
        pthread_mutex_lock(&f.p.mu);
        uint64_t tok = f.p.token;
        f.p.pub_sent++;
        pthread_mutex_unlock(&f.p.mu);
        rill_msg_t raw = {.type = RILL_STREAM_NEXT, .from = f.pub, .corr = tok, .arg = 999};
        cr_assert_eq(rill_tell(f.sys, f.stage, &raw), RILL_OK);
        emit(f.sys, f.pub, KCASE_N + 1); /* the limit counts the raw one */
    }
    cr_assert(probe_wait_count(&f.s, RILL_STREAM_COMPLETE, 1, KIT_WAIT_MS), "%s: 1.5: no COMPLETE",
              k->name);
    settle(f.sys, f.stage, &f.s, f.sub, f.pub, k->name);
    cr_assert_eq(kit_fence(f.sys, f.xa), RILL_OK);

    expect_clean_end(&f.s, k, RILL_STREAM_COMPLETE);
    size_t nexts = probe_count(&f.s, RILL_STREAM_NEXT);
    cr_assert_gt(nexts, 0, "%s: nothing came through", k->name);
    if (k->flags & K_COUNT)
        cr_assert_eq(nexts, KCASE_N, "%s: %zu of %d", k->name, nexts, KCASE_N);
    if (k->flags & K_EXTRA_END)
        cr_assert_eq(nexts, KCASE_N + 1, "%s: %zu of %d", k->name, nexts, KCASE_N + 1);
    if (k->flags & K_ORDER) {
        cr_assert_eq(probe_view(&f.s).order_violations, 0, "%s: out of order", k->name);
        /* Values are the publisher's count; it counted the raw NEXT. */
        cr_assert_eq(probe_at(&f.s, 1).arg, k->role == ROLE_SOURCE ? 0 : 1, "%s: first", k->name);
    }
    /* The other subscriber: ON_SUBSCRIBE and ERROR, nothing else (and
     * the CANCEL of its stray ON_SUBSCRIBE). */
    cr_assert_eq(probe_total(&f.x), k->role == ROLE_PROCESSOR ? 3 : 2, "%s: %zu signals", k->name,
                 probe_total(&f.x));
    cr_assert_eq(probe_count(&f.x, RILL_STREAM_ON_SUBSCRIBE), 1, "%s", k->name);
    cr_assert_eq(probe_count(&f.x, RILL_STREAM_ERROR), 1, "%s", k->name);
    cr_assert_eq(probe_count(&f.x, RILL_STREAM_NEXT), 0, "%s: 1.11", k->name);
    if (k->role == ROLE_PROCESSOR) {
        probe_view_t v = probe_view(&f.p);
        cr_assert_eq(v.pub_sent, KCASE_N + 1, "%s", k->name);
        cr_assert_eq(v.over_window, 0, "%s: demand beyond mailbox capacity - 1", k->name);
        cr_assert_eq(v.refused, 0, "%s: the stage's mailbox refused a NEXT", k->name);
        cr_assert_eq(v.send_errors, 0, "%s", k->name);
        cr_assert_eq(probe_count(&f.p, RILL_STREAM_CANCEL), 0, "%s: 2.4: cancelled", k->name);
        cr_assert_eq(probe_count(&f.x, RILL_STREAM_CANCEL), 1, "%s: 2.5", k->name);
        cr_assert_eq(probe_at(&f.x, 2).corr, 777, "%s: 2.5", k->name);
    }
    kfix_close(&f, k);
}

Test(rs_kinds, rule_1_1_1_5_1_9_1_10_1_11_2_1_2_5_2_12_2_13_3_1_3_8_every_publisher, .timeout = 120)
{
    each_kind(R_PUBLISHERS, publisher_flow, 0);
}

/* 1.4, 4.2, 2.10, 1.7: ERROR from upstream (after elements) reaches the
 * subscriber of every processor, once, last; the failing source (1.4) is
 * rule_1_7_nothing_after_error's. */
static void processor_upstream_error(const kcase_t *k, int variant)
{
    (void)variant;
    kfix_t f;
    kfix_open(&f, k, 2, 0, 2);
    kfix_wire(&f, k);
    emit(f.sys, f.pub, 10);
    cr_assert(probe_wait_count(&f.s, RILL_STREAM_ERROR, 1, KIT_WAIT_MS), "%s: 4.2: no ERROR",
              k->name);
    settle(f.sys, f.stage, &f.s, f.sub, f.pub, k->name);
    expect_clean_end(&f.s, k, RILL_STREAM_ERROR);
    cr_assert_eq(probe_view(&f.s).error_code, RILL_EIO, "%s: %s", k->name,
                 rill_err_name(probe_view(&f.s).error_code));
    pthread_mutex_lock(&f.s.mu);
    cr_assert_neq(f.s.error_text[0], '\0', "%s: an ERROR without text", k->name);
    pthread_mutex_unlock(&f.s.mu);
    cr_assert_eq(probe_view(&f.p).pub_sent, 10, "%s", k->name);
    cr_assert_eq(probe_view(&f.p).over_window, 0, "%s", k->name);
    cr_assert_eq(probe_count(&f.p, RILL_STREAM_CANCEL), 0, "%s: 2.4: cancelled after ERROR",
                 k->name);
    kfix_close(&f, k);
}

Test(rs_kinds, rule_1_4_4_2_2_10_every_processor_passes_upstream_error_on, .timeout = 120)
{
    each_kind(R_PROCESSOR, processor_upstream_error, 0);
}

/* 2.9, 2.10: COMPLETE or ERROR right behind ON_SUBSCRIBE, before any
 * REQUEST could arrive: a processor passes it on, a sink ends; neither
 * cancels. */
static void terminal_without_request(const kcase_t *k, int kind)
{
    kfix_t f;
    kfix_open(&f, k, 0, 0, 4);
    f.p.terminal_on_subscribe = kind;
    if (k->role == ROLE_PROCESSOR)
        kfix_wire(&f, k);
    else
        link_stages(f.sys, f.pub, f.stage);
    uint32_t want = kind == 1 ? RILL_STREAM_COMPLETE : RILL_STREAM_ERROR;
    if (k->role == ROLE_PROCESSOR)
        cr_assert(probe_wait_count(&f.s, want, 1, KIT_WAIT_MS), "%s: no %u", k->name, want);
    settle(f.sys, f.stage, k->role == ROLE_PROCESSOR ? &f.s : NULL, f.sub, f.pub, k->name);
    if (k->role == ROLE_PROCESSOR) {
        expect_clean_end(&f.s, k, want);
        size_t extra = (k->flags & K_EXTRA_END) && kind == 1 ? 1 : 0;
        cr_assert_eq(probe_count(&f.s, RILL_STREAM_NEXT), extra, "%s: NEXT out of nothing",
                     k->name);
        if (kind == 2)
            cr_assert_eq(probe_view(&f.s).error_code, RILL_EIO, "%s", k->name);
    }
    cr_assert_eq(probe_count(&f.p, RILL_STREAM_CANCEL), 0, "%s: cancelled after %u", k->name, want);
    kfix_close(&f, k);
}

Test(rs_kinds, rule_2_9_2_10_every_subscriber_takes_a_terminal_without_request, .timeout = 120)
{
    each_kind(R_SUBSCRIBERS, terminal_without_request, 1);
    each_kind(R_SUBSCRIBERS, terminal_without_request, 2);
}

/* 3.9: REQUEST(0) is answered with one ERROR RILL_EINVAL; the stage has
 * no subscriber left, so it cancels upstream (2.6, 3.14) and ends. */
static void nonpositive_request(const kcase_t *k, int variant)
{
    (void)variant;
    kfix_t f;
    kfix_open(&f, k, 1, 0, 0);
    kfix_wire(&f, k);
    rill_aid_t peer = probe_peer(&f.s);
    cr_assert_eq(rill_stream_request(f.sys, rill_pub(peer), rill_sub(f.sub), 1, 0), RILL_OK);
    cr_assert(probe_wait_count(&f.s, RILL_STREAM_ERROR, 1, KIT_WAIT_MS), "%s: 3.9: no ERROR",
              k->name);
    if (k->role == ROLE_PROCESSOR)
        cr_assert(probe_wait_count(&f.p, RILL_STREAM_CANCEL, 1, KIT_WAIT_MS),
                  "%s: 2.6: upstream not cancelled", k->name);
    /* A second bad REQUEST, after the ERROR: nothing (3.6). */
    rill_err_t r = rill_stream_request(f.sys, rill_pub(peer), rill_sub(f.sub), 1, -1);
    cr_assert(r == RILL_OK || r == RILL_ESTOPPED, "%s", rill_err_name(r));
    settle(f.sys, f.stage, &f.s, f.sub, f.pub, k->name);
    expect_clean_end(&f.s, k, RILL_STREAM_ERROR);
    cr_assert_eq(probe_view(&f.s).error_code, RILL_EINVAL, "%s", k->name);
    cr_assert_eq(probe_count(&f.s, RILL_STREAM_NEXT), 0, "%s", k->name);
    if (k->role == ROLE_PROCESSOR)
        cr_assert_eq(probe_view(&f.p).req_after_cancel, 0, "%s: 2.7", k->name);
    kfix_close(&f, k);
}

Test(rs_kinds, rule_3_9_every_publisher_refuses_a_non_positive_request, .timeout = 120)
{
    each_kind(R_PUBLISHERS, nonpositive_request, 0);
}

/* 3.12, 3.13, 1.8, 2.6, 2.7, 2.8, 3.6, 3.7: the subscriber cancels an
 * endless stream, then sends more demand, a bad demand and a second
 * CANCEL. No signal comes for the demand after CANCEL (any NEXT for it
 * would exceed what the probe accounted: demand_violations), no ERROR for
 * the bad one; a processor cancels upstream, and signals nothing there
 * after its CANCEL; every element is released. A source here is endless
 * only for range (count UINT64_MAX). */
static void cancel_then_more(const kcase_t *k, int variant)
{
    (void)variant;
    if (k->role == ROLE_SOURCE && k->make != mk_range)
        return; /* the pull source is rule_3_12_and_3_13's */
    kfix_t f;
    if (k->role == ROLE_SOURCE) {
        memset(&f, 0, sizeof(f));
        f.sys = conf_system();
        f.pub = RILL_AID_NONE;
        f.sub = chunk_sub(f.sys, &f.s, 2, 1);
        f.xa = sub_probe(f.sys, &f.x);
        f.stage = spawn_stage(f.sys, rill_source_range(0, UINT64_MAX), KCASE_MAILBOX, 0);
    } else {
        kfix_open(&f, k, 0, 1, 2);
    }
    kfix_wire(&f, k);
    if (k->role == ROLE_PROCESSOR)
        emit(f.sys, f.pub, (k->flags & K_FINITE) ? KCASE_N : INT64_MAX);
    cr_assert(probe_wait_received(&f.s, 1, 6, KIT_WAIT_MS), "%s: elements do not flow", k->name);
    rill_aid_t peer = probe_peer(&f.s);
    cr_assert_eq(rill_stream_cancel(f.sys, rill_pub(peer), rill_sub(f.sub), 1), RILL_OK);
    /* Not accounted by the probe: a NEXT for these is a violation. */
    rill_err_t r = rill_stream_request(f.sys, rill_pub(peer), rill_sub(f.sub), 1, 10);
    cr_assert(r == RILL_OK || r == RILL_ESTOPPED, "%s", rill_err_name(r));
    r = rill_stream_request(f.sys, rill_pub(peer), rill_sub(f.sub), 1, 0);
    cr_assert(r == RILL_OK || r == RILL_ESTOPPED, "%s", rill_err_name(r));
    r = rill_stream_cancel(f.sys, rill_pub(peer), rill_sub(f.sub), 1);
    cr_assert(r == RILL_OK || r == RILL_ESTOPPED, "%s", rill_err_name(r));
    if (k->role == ROLE_PROCESSOR)
        cr_assert(probe_wait_count(&f.p, RILL_STREAM_CANCEL, 1, KIT_WAIT_MS),
                  "%s: 2.6: upstream not cancelled", k->name);
    settle(f.sys, f.stage, &f.s, f.sub, f.pub, k->name);
    cr_assert_eq(probe_view(&f.s).demand_violations, 0, "%s: 3.6: NEXT for demand after CANCEL",
                 k->name);
    cr_assert_eq(probe_count(&f.s, RILL_STREAM_ERROR), 0, "%s: 3.6: ERROR after CANCEL", k->name);
    cr_assert_eq(probe_count(&f.s, RILL_STREAM_COMPLETE), 0, "%s: COMPLETE after CANCEL", k->name);
    if (k->flags & K_ORDER)
        cr_assert_eq(probe_view(&f.s).order_violations, 0, "%s", k->name);
    if (k->role == ROLE_PROCESSOR) {
        cr_assert_eq(probe_count(&f.p, RILL_STREAM_CANCEL), 1, "%s: 3.7", k->name);
        cr_assert_eq(probe_view(&f.p).req_after_cancel, 0, "%s: 2.7: REQUEST after CANCEL",
                     k->name);
        cr_assert_eq(probe_view(&f.p).over_window, 0, "%s", k->name);
        cr_assert_eq(probe_view(&f.p).refused, 0, "%s", k->name);
    }
    kfix_close(&f, k);
}

Test(rs_kinds, rule_1_8_2_6_2_7_2_8_3_6_3_7_3_12_3_13_every_publisher_after_cancel, .timeout = 120)
{
    each_kind(R_PUBLISHERS, cancel_then_more, 0);
}

/* 3.17: demand near INT64_MAX, three times (it saturates): no error, the
 * whole stream comes. */
static void unbounded_demand(const kcase_t *k, int variant)
{
    (void)variant;
    kfix_t f;
    kfix_open(&f, k, 1, 0, 0);
    kfix_wire(&f, k);
    rill_aid_t peer = probe_peer(&f.s);
    /* A source may deliver all and end after the first (then the others
     * find it gone); rule_3_17_demand_up_to_int64_max_is_unbounded holds
     * a source back until all three are queued. */
    for (int i = 0; i < 3; i++) {
        rill_err_t r = probe_request(f.sys, &f.s, f.sub, peer, 1, INT64_MAX - 1);
        cr_assert(r == RILL_OK || (i > 0 && k->role == ROLE_SOURCE && r == RILL_ESTOPPED), "%s: %s",
                  k->name, rill_err_name(r));
    }
    if (k->role == ROLE_PROCESSOR)
        emit(f.sys, f.pub, KCASE_N);
    cr_assert(probe_wait_count(&f.s, RILL_STREAM_COMPLETE, 1, KIT_WAIT_MS), "%s: no COMPLETE",
              k->name);
    settle(f.sys, f.stage, &f.s, f.sub, f.pub, k->name);
    expect_clean_end(&f.s, k, RILL_STREAM_COMPLETE);
    if (k->flags & K_COUNT)
        cr_assert_eq(probe_count(&f.s, RILL_STREAM_NEXT), KCASE_N, "%s", k->name);
    if (k->role == ROLE_PROCESSOR)
        cr_assert_eq(probe_view(&f.p).over_window, 0, "%s", k->name);
    kfix_close(&f, k);
}

Test(rs_kinds, rule_3_17_every_publisher_takes_unbounded_demand, .timeout = 120)
{
    each_kind(R_PUBLISHERS, unbounded_demand, 0);
}

/* ---- subscribers: sinks ------------------------------------------------ */

/* 2.1, 2.4, 2.5, 2.13, 3.13 and rill's demand window for every sink: a
 * whole stream of counted payloads, with a stray ON_SUBSCRIBE and a NEXT
 * without element on the way. */
static void sink_flow(const kcase_t *k, int end)
{
    kfix_t f;
    kfix_open(&f, k, end, 1, 0);
    link_stages(f.sys, f.pub, f.stage);
    cr_assert(probe_wait_demand(&f.p, 1, KIT_WAIT_MS), "%s: 2.1: no REQUEST", k->name);
    cr_assert_eq(rill_stream_on_subscribe(f.sys, rill_sub(f.stage), rill_pub(f.xa), 777), RILL_OK);
    cr_assert(probe_wait_count(&f.x, RILL_STREAM_CANCEL, 1, KIT_WAIT_MS), "%s: 2.5", k->name);
    cr_assert_eq(probe_at(&f.x, 0).corr, 777, "%s: 2.5", k->name);
    pthread_mutex_lock(&f.p.mu);
    uint64_t tok = f.p.token;
    f.p.pub_sent++;
    pthread_mutex_unlock(&f.p.mu);
    rill_msg_t raw = {.type = RILL_STREAM_NEXT, .from = f.pub, .corr = tok, .arg = 999};
    cr_assert_eq(rill_tell(f.sys, f.stage, &raw), RILL_OK);
    emit(f.sys, f.pub, KCASE_N + 1); /* the limit counts the raw one */
    settle(f.sys, f.stage, NULL, RILL_AID_NONE, f.pub, k->name);
    probe_view_t v = probe_view(&f.p);
    cr_assert_eq(v.pub_sent, KCASE_N + 1, "%s: the sink stopped asking", k->name);
    cr_assert_eq(v.over_window, 0, "%s: demand beyond mailbox capacity - 1", k->name);
    cr_assert_eq(v.refused, 0, "%s: the sink's mailbox refused a NEXT", k->name);
    cr_assert_eq(probe_count(&f.p, RILL_STREAM_CANCEL), 0, "%s: 2.4: cancelled at the end",
                 k->name);
    if (k->flags & K_COLLECT)
        cr_assert_eq(rill_collector_count(f.env.collector), KCASE_N, "%s", k->name);
    kfix_close(&f, k);
    cr_assert_eq(atomic_load(&f.tally.released), KCASE_N, "%s", k->name);
}

Test(rs_kinds, rule_2_1_2_4_2_5_2_13_3_13_every_sink, .timeout = 120)
{
    each_kind(R_SINK, sink_flow, 1);
    each_kind(R_SINK, sink_flow, 2);
}

/* ---- 2.3: nothing upstream from onComplete/onError -------------------- */

/* The most a kind ever has outstanding upstream (all it asks for with an
 * empty state and room downstream): its window (mailbox capacity - 1,
 * which the engine never exceeds), or less where it asks only for what it
 * has room for: map_async its parallelism, batch one group, buffer its
 * size, partition_by_key a worker's queue (window / workers), merge(1) its
 * queue (the window its mailbox leaves after the slots it reserves). The
 * publisher probe checks this premise (window_limit = it): more
 * outstanding fails the test (over_window). */
static int64_t full_demand(const kcase_t *k, int64_t window)
{
    if (k->make == mk_async_ordered || k->make == mk_async_unordered)
        return 4;
    if (k->make == mk_batch || k->make == mk_batch_timed)
        return 3;
    if (k->make == mk_buf_bp)
        return 4;
    if (k->make == mk_partition)
        return 3;
    if (k->make == mk_merge)
        return 64;
    return window;
}

/* Processors that keep asking for their full demand while they hold
 * elements nobody asked for yet (they drop, conflate or have room for
 * them). */
static int holds_at_full_demand(const kcase_t *k)
{
    return k->make == mk_buf_head || k->make == mk_buf_tail || k->make == mk_buf_all ||
           k->make == mk_buf_fail || k->make == mk_conflate_latest || k->make == mk_conflate_sum ||
           k->make == mk_conflate_key;
}

/* Waits until the publisher probe p sent `sent` elements and has exactly
 * `d` outstanding (asked and not sent); stores its count of REQUEST and
 * CANCEL at that moment in *mark. */
static int probe_wait_outstanding(probe_t *p, int64_t sent, int64_t d, size_t *mark, int timeout_ms)
{
    int64_t deadline = kit_now_ms() + timeout_ms;
    size_t r = RILL_STREAM_REQUEST - RILL_STREAM_SUBSCRIBE;
    size_t c = RILL_STREAM_CANCEL - RILL_STREAM_SUBSCRIBE;
    pthread_mutex_lock(&p->mu);
#define AT_FULL_DEMAND(p) ((p)->pub_sent == sent && (p)->pub_requested - (p)->pub_sent == d)
    while (!AT_FULL_DEMAND(p) && kit_cond_wait_until(&p->cv, &p->mu, deadline) == 0)
        ;
    int ok = AT_FULL_DEMAND(p);
#undef AT_FULL_DEMAND
    *mark = p->by_type[r] + p->by_type[c];
    pthread_mutex_unlock(&p->mu);
    return ok;
}

/* 2.3 (and 2.4): a subscriber sends no REQUEST and no CANCEL upstream
 * while it handles COMPLETE or ERROR, nor afterwards (a timer of throttle
 * or of a timed batch, a completion of map_async, a drain downstream).
 *
 * The positive synchronisation: the probe sends n elements and waits
 * until it has sent all n and sees the stage's full demand outstanding
 * (full_demand). At that moment the stage has handled every NEXT and has
 * no REQUEST on the way (what it asked minus what it handled is at most
 * its full demand, at least what the probe saw asked minus what it sent:
 * both are equal), and it cannot ask for more without another NEXT (it
 * would exceed its full demand: over_window, checked). So every REQUEST or
 * CANCEL the probe counts after that moment was sent while or after the
 * stage handled the terminal signal the test sends then; none may come.
 * `end`: 1 COMPLETE, 2 ERROR; + 4: the subscriber downstream asks for
 * nothing until the terminal signal is sent, so a kind that holds
 * elements (holds_at_full_demand) still has them when it handles it, and
 * drains them afterwards: the engine forgets the input's outstanding
 * demand at the end, so an input not marked done would ask again here. */
static void no_upstream_after_terminal(const kcase_t *k, int end)
{
    int hold = end & 4;
    end &= 3;
    if (hold && !holds_at_full_demand(k))
        return;
    kfix_t f;
    kfix_open(&f, k, 0, 1, 0);
    f.s.request_on_subscribe = hold ? 0 : INT64_MAX;
    if (k->role == ROLE_PROCESSOR)
        kfix_wire(&f, k);
    else
        link_stages(f.sys, f.pub, f.stage);
    int64_t d = full_demand(k, f.p.window_limit);
    pthread_mutex_lock(&f.p.mu);
    f.p.window_limit = d;
    pthread_mutex_unlock(&f.p.mu);
    /* merge(1) asks again in chunks of 16: two of them bring it back. */
    int64_t n = k->make == mk_merge ? 32 : 6;
    emit(f.sys, f.pub, n);
    size_t mark = 0;
    cr_assert(
        probe_wait_outstanding(&f.p, n, d, &mark, KIT_WAIT_MS),
        "%s: %lld sent, %lld outstanding, not %lld", k->name, (long long)probe_view(&f.p).pub_sent,
        (long long)(probe_view(&f.p).pub_requested - probe_view(&f.p).pub_sent), (long long)d);
    uint64_t tok = probe_view(&f.p).token;
    const char *what = end == 1 ? "COMPLETE" : "ERROR";
    if (end == 1)
        cr_assert_eq(rill_stream_complete(f.sys, rill_sub(f.stage), rill_pub(f.pub), tok), RILL_OK);
    else
        cr_assert_eq(rill_stream_error(f.sys, rill_sub(f.stage), rill_pub(f.pub), tok, RILL_EIO,
                                       "upstream broke"),
                     RILL_OK);
    /* Its subscriber asks once the stage handled the terminal signal (it
     * is the last of SUBSCRIBE, CONNECT, ON_SUBSCRIBE and the elements):
     * the REQUEST, a control signal, would overtake it. */
    if (hold && k->role == ROLE_PROCESSOR) {
        wait_processed(f.sys, f.stage, (uint64_t)n + 4);
        /* After an ERROR, the stage passed it on and may be gone. */
        rill_err_t r = probe_request(f.sys, &f.s, f.sub, probe_peer(&f.s), 1, INT64_MAX);
        cr_assert(r == RILL_OK || (end == 2 && r == RILL_ESTOPPED), "%s: %s", k->name,
                  rill_err_name(r));
    }
    if (k->role == ROLE_PROCESSOR)
        cr_assert(probe_wait_count(&f.s, end == 1 ? RILL_STREAM_COMPLETE : RILL_STREAM_ERROR, 1,
                                   KIT_WAIT_MS),
                  "%s: no %s downstream", k->name, what);
    settle(f.sys, f.stage, k->role == ROLE_PROCESSOR ? &f.s : NULL, f.sub, f.pub, k->name);
    cr_assert_eq(upstream_signals(&f.p), mark, "%s: 2.3: %zu REQUEST/CANCEL in or after %s%s",
                 k->name, upstream_signals(&f.p) - mark, what, hold ? " (elements held)" : "");
    /* The premise (checked after 2.3: a REQUEST after the end breaks it
     * too). */
    cr_assert_eq(probe_view(&f.p).over_window, 0, "%s: more than %lld outstanding", k->name,
                 (long long)d);
    if (k->role == ROLE_PROCESSOR && end == 1 && hold)
        cr_assert_gt(probe_count(&f.s, RILL_STREAM_NEXT), 0, "%s: nothing held was drained",
                     k->name);
    kfix_close(&f, k);
}

Test(rs_kinds, rule_2_3_2_4_no_request_or_cancel_from_a_terminal_every_subscriber, .timeout = 120)
{
    each_kind(R_SUBSCRIBERS, no_upstream_after_terminal, 1);
    each_kind(R_SUBSCRIBERS, no_upstream_after_terminal, 2);
    each_kind(R_SUBSCRIBERS, no_upstream_after_terminal, 1 | 4);
    each_kind(R_SUBSCRIBERS, no_upstream_after_terminal, 2 | 4);
}

/* 2.3 when a timer of the stage runs after the end: a throttle (one
 * element per 500 ms) holds an element when COMPLETE or ERROR comes, and
 * sends it from its timer afterwards. The probe sees the throttle's full
 * demand (one) outstanding after the first element went through; its
 * subscriber asked for that one only, so the throttle can emit nothing
 * more and ask for nothing more until its subscriber asks again. With the
 * stage's executor held, the second element and then the terminal signal
 * are queued, so the stage handles both in one turn, before any timer of
 * the executor can run; the subscriber asks again once the stage handled
 * all seven messages sent to it (the terminal signal last). The element
 * then leaves on the throttle's timer, after the end: no REQUEST, no
 * CANCEL. */
static void throttle_timer_after_terminal(int end)
{
    rill_system_t *sys = conf_system();
    probe_t p, s, h;
    kit_gate_t gate;
    kit_gate_init(&gate);
    rill_aid_t pub = window_pub(sys, &p, 0, NULL);
    probe_init(&s);
    s.request_on_subscribe = 1;
    s.check_order = 1;
    rill_aid_t sub = probe_spawn(sys, &s, 64, 1);
    probe_init(&h);
    rill_aid_t holder = probe_spawn(sys, &h, 8, 0);
    rill_aid_t stage = spawn_stage(sys, rill_stage_throttle(1, 500), KCASE_MAILBOX, 0);
    subscribe(sys, stage, sub, 1);
    cr_assert(probe_wait_count(&s, RILL_STREAM_ON_SUBSCRIBE, 1, KIT_WAIT_MS));
    pthread_mutex_lock(&p.mu);
    p.window_limit = 1; /* its queue holds one */
    pthread_mutex_unlock(&p.mu);
    link_stages(sys, pub, stage);
    emit(sys, pub, 1);
    size_t mark = 0;
    cr_assert(probe_wait_outstanding(&p, 1, 1, &mark, KIT_WAIT_MS),
              "the throttle did not ask for one more");
    cr_assert(probe_wait_received(&s, 1, 1, KIT_WAIT_MS), "the first element did not come");

    rill_msg_t hold = {.type = PROBE_HOLD, .payload = &gate};
    cr_assert_eq(rill_tell(sys, holder, &hold), RILL_OK);
    cr_assert(kit_wait_at_least(&gate.arrived, 1, KIT_WAIT_MS), "the executor was not held");
    size_t unused;
    emit(sys, pub, 2);
    cr_assert(probe_wait_outstanding(&p, 2, 0, &unused, KIT_WAIT_MS), "no second element");
    uint64_t tok = probe_view(&p).token;
    if (end == 1)
        cr_assert_eq(rill_stream_complete(sys, rill_sub(stage), rill_pub(pub), tok), RILL_OK);
    else
        cr_assert_eq(
            rill_stream_error(sys, rill_sub(stage), rill_pub(pub), tok, RILL_EIO, "upstream broke"),
            RILL_OK);
    kit_gate_open(&gate);
    /* SUBSCRIBE, its REQUEST, CONNECT, ON_SUBSCRIBE, two NEXT, the end. */
    wait_processed(sys, stage, 7);
    rill_err_t r = probe_request(sys, &s, sub, stage, 1, 1);
    cr_assert(r == RILL_OK || (end == 2 && r == RILL_ESTOPPED), "%s", rill_err_name(r));
    uint32_t want = end == 1 ? RILL_STREAM_COMPLETE : RILL_STREAM_ERROR;
    cr_assert(probe_wait_count(&s, want, 1, KIT_WAIT_MS), "no end downstream");
    settle(sys, stage, &s, sub, pub, "throttle");
    cr_assert_eq(upstream_signals(&p), mark, "2.3: %zu REQUEST/CANCEL in or after the end",
                 upstream_signals(&p) - mark);
    cr_assert_eq(probe_view(&p).over_window, 0, "more than one outstanding");
    if (end == 1)
        cr_assert_eq(probe_count(&s, RILL_STREAM_NEXT), 2, "the held element did not come");
    cr_assert_eq(probe_view(&s).order_violations, 0);
    conf_end(sys);
    kit_gate_destroy(&gate);
    probe_fini(&p);
    probe_fini(&s);
    probe_fini(&h);
}

Test(rs_kinds, rule_2_3_a_throttle_timer_after_the_terminal, .timeout = 60)
{
    throttle_timer_after_terminal(1);
    throttle_timer_after_terminal(2);
}

/* ---- fan-out: a stage that stays alive -------------------------------- */

/* 1.11 (multicast), 3.6, 3.7 and 2.8 against a LIVE stage: a broadcast to
 * two subscribers, one cancels and then sends more demand, a bad demand
 * and a second CANCEL, while the other goes on. The other's elements are
 * the positive synchronisation: the broadcast handled the cancelled
 * subscriber's signals before the other's later REQUEST (one control
 * queue, one sender), so whatever it sent the cancelled one is queued
 * there before the fence. */
Test(rs_kinds, rule_1_11_3_6_3_7_on_a_live_broadcast, .timeout = 60)
{
    rill_system_t *sys = conf_system();
    kit_tally_t tally;
    memset(&tally, 0, sizeof(tally));
    probe_t p, a, b;
    rill_aid_t pub = window_pub(sys, &p, 0, &tally);
    rill_aid_t asub = chunk_sub(sys, &a, 0, 1);
    rill_aid_t bsub = chunk_sub(sys, &b, 0, 1);
    rill_aid_t bc = spawn_stage(sys, rill_stage_broadcast(2, copy_value, NULL), KCASE_MAILBOX, 0);
    window_of(sys, &p, bc);
    subscribe(sys, bc, asub, 1);
    subscribe(sys, bc, bsub, 2);
    cr_assert(probe_wait_count(&a, RILL_STREAM_ON_SUBSCRIBE, 1, KIT_WAIT_MS));
    cr_assert(probe_wait_count(&b, RILL_STREAM_ON_SUBSCRIBE, 1, KIT_WAIT_MS));
    link_stages(sys, pub, bc);
    emit(sys, pub, INT64_MAX);

    /* 1.11: both get the same elements. */
    cr_assert_eq(probe_request(sys, &a, asub, bc, 1, 5), RILL_OK);
    cr_assert_eq(probe_request(sys, &b, bsub, bc, 2, 5), RILL_OK);
    cr_assert(probe_wait_received(&a, 1, 5, KIT_WAIT_MS), "a: stalled");
    cr_assert(probe_wait_received(&b, 2, 5, KIT_WAIT_MS), "b: stalled");
    for (size_t i = 1; i <= 5; i++)
        cr_assert_eq(probe_at(&a, i).arg, probe_at(&b, i).arg, "element %zu", i);

    /* a cancels, then: demand the probe does not account (a NEXT for it
     * is a demand violation), a bad demand (an ERROR would break 3.6),
     * another CANCEL (3.7). */
    cr_assert_eq(rill_stream_cancel(sys, rill_pub(bc), rill_sub(asub), 1), RILL_OK);
    cr_assert_eq(rill_stream_request(sys, rill_pub(bc), rill_sub(asub), 1, 10), RILL_OK);
    cr_assert_eq(rill_stream_request(sys, rill_pub(bc), rill_sub(asub), 1, 0), RILL_OK);
    cr_assert_eq(rill_stream_cancel(sys, rill_pub(bc), rill_sub(asub), 1), RILL_OK);
    /* The broadcast lives on for b (3.14 only when no subscriber is left). */
    cr_assert_eq(probe_request(sys, &b, bsub, bc, 2, 20), RILL_OK);
    cr_assert(probe_wait_received(&b, 2, 25, KIT_WAIT_MS), "b stalled after a's CANCEL");
    cr_assert_eq(kit_fence(sys, asub), RILL_OK);
    rill_actor_stats_t st;
    cr_assert_eq(rill_actor_stats(sys, bc, &st), RILL_OK, "the broadcast ended with b live");
    cr_assert_eq(probe_count(&a, RILL_STREAM_NEXT), 5, "3.6: NEXT to a after its CANCEL");
    cr_assert_eq(probe_view(&a).demand_violations, 0, "3.6");
    cr_assert_eq(probe_count(&a, RILL_STREAM_ERROR), 0, "3.6: ERROR for REQUEST(0) after CANCEL");
    cr_assert_eq(probe_count(&a, RILL_STREAM_COMPLETE), 0);
    cr_assert_eq(probe_total(&a), 6);
    cr_assert_eq(kit_fence(sys, pub), RILL_OK);
    cr_assert_eq(probe_count(&p, RILL_STREAM_CANCEL), 0, "upstream cancelled with b live");

    /* b is served as before: in order, within its demand. */
    cr_assert_eq(probe_view(&b).order_violations, 0);
    cr_assert_eq(probe_view(&b).demand_violations, 0);
    cr_assert_eq(probe_count(&b, RILL_STREAM_ERROR), 0);

    /* b cancels too: now the broadcast cancels upstream and ends. */
    cr_assert_eq(rill_stream_cancel(sys, rill_pub(bc), rill_sub(bsub), 2), RILL_OK);
    cr_assert(probe_wait_count(&p, RILL_STREAM_CANCEL, 1, KIT_WAIT_MS), "2.6: not cancelled");
    settle(sys, bc, NULL, bsub, pub, "the broadcast");
    cr_assert_eq(kit_fence(sys, asub), RILL_OK);
    cr_assert_eq(probe_total(&a), 6, "a signal to a after both cancelled");
    cr_assert_eq(probe_view(&p).req_after_cancel, 0, "2.7");
    cr_assert_eq(probe_view(&p).over_window, 0);
    conf_end(sys);
    probe_fini(&p);
    probe_fini(&a);
    probe_fini(&b);
    expect_all_released(&tally);
}

/* 1.4 and 2.5 for a fan-in: a merge of two inputs, one failing, errors
 * its subscriber once and cancels the other input. */
Test(rs_kinds, rule_1_4_4_2_merge_fails_once_and_cancels_the_other_input, .timeout = 60)
{
    rill_system_t *sys = conf_system();
    probe_t p1, p2, s;
    rill_aid_t pub1 = window_pub(sys, &p1, 2, NULL);
    rill_aid_t pub2 = window_pub(sys, &p2, 0, NULL);
    rill_aid_t sub = chunk_sub(sys, &s, 4, 0);
    rill_aid_t mg = spawn_stage(sys, rill_stage_merge(2), KCASE_MAILBOX, 0);
    window_of(sys, &p1, mg);
    window_of(sys, &p2, mg);
    subscribe(sys, mg, sub, 1);
    link_stages(sys, pub1, mg);
    link_stages(sys, pub2, mg);
    cr_assert(probe_wait_demand(&p1, 1, KIT_WAIT_MS));
    cr_assert(probe_wait_demand(&p2, 1, KIT_WAIT_MS));
    emit(sys, pub2, INT64_MAX);
    cr_assert(probe_wait_received(&s, 1, 4, KIT_WAIT_MS));
    emit(sys, pub1, 3); /* then ERROR */
    cr_assert(probe_wait_count(&s, RILL_STREAM_ERROR, 1, KIT_WAIT_MS), "no ERROR");
    cr_assert(probe_wait_count(&p2, RILL_STREAM_CANCEL, 1, KIT_WAIT_MS), "other input live");
    settle(sys, mg, NULL, sub, pub1, "the merge");
    cr_assert_eq(kit_fence(sys, pub2), RILL_OK);
    cr_assert_eq(probe_count(&s, RILL_STREAM_ERROR), 1);
    cr_assert_eq(probe_count(&s, RILL_STREAM_COMPLETE), 0);
    cr_assert_eq(probe_view(&s).after_terminal, 0);
    cr_assert_eq(probe_view(&s).demand_violations, 0);
    cr_assert_eq(probe_view(&s).error_code, RILL_EIO);
    cr_assert_eq(probe_count(&p1, RILL_STREAM_CANCEL), 0, "the failed input was cancelled");
    cr_assert_eq(probe_view(&p2).req_after_cancel, 0);
    cr_assert_eq(probe_view(&p1).over_window + probe_view(&p2).over_window, 0);
    conf_end(sys);
    probe_fini(&p1);
    probe_fini(&p2);
    probe_fini(&s);
}

/* ---- the Kafka source and sink, on the embedded broker ------------------ */

/*
 * The Kafka stages are a publisher (the source) and a subscriber (the
 * sink) like the others, but need a broker, so they get their own tests:
 * one broker, one topic of KCASE_N records for the source, one empty topic
 * for the sink. The same probes, the same checks.
 */

typedef struct kbroker {
    rill_broker_t *b;
    const char *boot;
} kbroker_t;

static void kbroker_open(kbroker_t *k, const char *topic, size_t records)
{
    char err[256] = "";
    k->b = rill_broker_new(1, err, sizeof(err));
    cr_assert_not_null(k->b, "embedded broker: %s", err);
    k->boot = rill_broker_bootstraps(k->b);
    cr_assert_eq(rill_broker_create_topic(k->b, topic, 1, 1, err, sizeof(err)), RILL_OK, "%s", err);
    if (records) {
        rill_gen_t gen = {.value_size = 20, .pinned = 1, .partition = 0};
        cr_assert_eq(
            rill_testkit_produce_generated(k->boot, topic, records, &gen, NULL, err, sizeof(err)),
            RILL_OK, "%s", err);
    }
}

/* A Kafka source of partition 0 of topic from the beginning. */
static rill_aid_t kafka_source_spawn(rill_system_t *sys, kbroker_t *k, const char *topic)
{
    rill_consumer_conf_t *c = rill_consumer_conf_new();
    cr_assert_not_null(c);
    char err[256] = "";
    const char *kv[] = {"bootstrap.servers",       k->boot, "group.id", "rs-conformance",
                        "rill.commit.interval.ms", "100",   NULL};
    for (size_t i = 0; kv[i]; i += 2)
        cr_assert_eq(rill_consumer_conf_set(c, kv[i], kv[i + 1], err, sizeof(err)), RILL_OK, "%s",
                     err);
    cr_assert_eq(rill_consumer_conf_assign(c, topic, 0, RILL_OFFSET_BEGINNING, err, sizeof(err)),
                 RILL_OK, "%s", err);
    rill_aid_t aid = RILL_AID_NONE;
    rill_stage_opts_t o = {.executor = KIT_EXEC(0)};
    cr_assert_eq(rill_consumer_spawn(sys, c, &o, &aid, err, sizeof(err)), RILL_OK, "%s", err);
    return aid;
}

/* 1.1, 1.9, 1.10, 1.11, 2.12, 3.1, 3.6, 3.7, 3.8, 3.12, 3.13 on the Kafka
 * source: the KCASE_N records asked two at a time, a second and a
 * duplicate subscriber, signals from another actor, then CANCEL and more
 * signals after it. The source lingers until what it emitted is
 * confirmed (the probe confirms every element), then ends. */
Test(rs_kafka, rule_1_1_1_9_1_10_1_11_2_12_3_1_3_6_3_7_3_8_3_12_kafka_source, .timeout = 120)
{
    kbroker_t kb;
    kbroker_open(&kb, "rs-src", KCASE_N);
    rill_system_t *sys = conf_system();
    probe_t s, x;
    rill_aid_t sub = chunk_sub(sys, &s, 2, 0);
    s.confirm_next = 1;
    s.request_on_subscribe = 0;
    rill_aid_t xa = sub_probe(sys, &x);
    rill_aid_t src = kafka_source_spawn(sys, &kb, "rs-src");
    const kcase_t k = {"kafka_source", ROLE_SOURCE, 0, NULL};

    subscribe(sys, src, sub, 1);
    cr_assert(probe_wait_count(&s, RILL_STREAM_ON_SUBSCRIBE, 1, KIT_WAIT_MS), "1.9");
    second_subscribers(sys, &k, src, sub, &x, xa);
    cr_assert_eq(rill_stream_cancel(sys, rill_pub(src), rill_sub(xa), 1), RILL_OK);
    cr_assert_eq(rill_stream_request(sys, rill_pub(src), rill_sub(xa), 1, 0), RILL_OK);
    cr_assert_eq(probe_request(sys, &s, sub, src, 1, 2), RILL_OK);
    cr_assert(probe_wait_received(&s, 1, KCASE_N, 60000), "stalled at %lld of %d",
              (long long)probe_acct(&s, 1).received, KCASE_N);

    cr_assert_eq(rill_stream_cancel(sys, rill_pub(src), rill_sub(sub), 1), RILL_OK);
    rill_err_t r = rill_stream_request(sys, rill_pub(src), rill_sub(sub), 1, 10);
    cr_assert(r == RILL_OK || r == RILL_ESTOPPED, "%s", rill_err_name(r));
    r = rill_stream_request(sys, rill_pub(src), rill_sub(sub), 1, 0);
    cr_assert(r == RILL_OK || r == RILL_ESTOPPED, "%s", rill_err_name(r));
    r = rill_stream_cancel(sys, rill_pub(src), rill_sub(sub), 1);
    cr_assert(r == RILL_OK || r == RILL_ESTOPPED, "%s", rill_err_name(r));
    dead_then_fence(sys, src, sub, "the cancelled Kafka source");
    cr_assert_eq(kit_fence(sys, xa), RILL_OK);

    cr_assert_eq(probe_at(&s, 0).type, RILL_STREAM_ON_SUBSCRIBE);
    cr_assert_eq(probe_count(&s, RILL_STREAM_ON_SUBSCRIBE), 1, "1.10/2.12");
    cr_assert_eq(probe_count(&s, RILL_STREAM_NEXT), KCASE_N, "only %d records exist", KCASE_N);
    cr_assert_eq(probe_view(&s).demand_violations, 0, "1.1/3.6");
    cr_assert_eq(probe_count(&s, RILL_STREAM_ERROR), 0, "3.1/3.6: an ERROR");
    cr_assert_eq(probe_count(&s, RILL_STREAM_COMPLETE), 0);
    cr_assert_eq(probe_total(&x), 2, "1.11: the second subscriber got %zu signals",
                 probe_total(&x));
    conf_end(sys);
    probe_fini(&s);
    probe_fini(&x);
    rill_broker_destroy(kb.b);
}

/* 3.9 and 3.17 on the Kafka source: unbounded demand (three times, it
 * saturates) brings every record without an error; then REQUEST(0) is
 * answered with one ERROR RILL_EINVAL and the source ends. */
Test(rs_kafka, rule_3_9_3_17_kafka_source, .timeout = 120)
{
    kbroker_t kb;
    kbroker_open(&kb, "rs-src", KCASE_N);
    rill_system_t *sys = conf_system();
    probe_t s;
    rill_aid_t sub = chunk_sub(sys, &s, 0, 0);
    s.confirm_next = 1;
    rill_aid_t src = kafka_source_spawn(sys, &kb, "rs-src");
    subscribe(sys, src, sub, 1);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(probe_request(sys, &s, sub, src, 1, INT64_MAX - 1), RILL_OK);
    cr_assert(probe_wait_received(&s, 1, KCASE_N, 60000), "stalled at %lld of %d",
              (long long)probe_acct(&s, 1).received, KCASE_N);
    cr_assert_eq(rill_stream_request(sys, rill_pub(src), rill_sub(sub), 1, 0), RILL_OK);
    cr_assert(probe_wait_count(&s, RILL_STREAM_ERROR, 1, KIT_WAIT_MS), "3.9: no ERROR");
    dead_then_fence(sys, src, sub, "the Kafka source after REQUEST(0)");
    cr_assert_eq(probe_count(&s, RILL_STREAM_ERROR), 1);
    cr_assert_eq(probe_view(&s).error_code, RILL_EINVAL);
    cr_assert_eq(probe_count(&s, RILL_STREAM_NEXT), KCASE_N);
    cr_assert_eq(probe_view(&s).after_terminal, 0, "1.7");
    cr_assert_eq(probe_last(&s).type, RILL_STREAM_ERROR);
    conf_end(sys);
    probe_fini(&s);
    rill_broker_destroy(kb.b);
}

static rill_elem_t produce_request(void *arg, uint64_t v)
{
    char value[32];
    int n = snprintf(value, sizeof(value), "v%llu", (unsigned long long)v);
    rill_produce_t *p = rill_produce_new(arg, 0, NULL, 0, value, (size_t)n);
    cr_assert_not_null(p);
    return rill_produce_elem(p);
}

/* max_inflight: rill.max.inflight, or NULL for the default. */
static rill_aid_t kafka_sink_spawn(rill_system_t *sys, kbroker_t *k, const char *max_inflight)
{
    rill_producer_conf_t *c = rill_producer_conf_new();
    cr_assert_not_null(c);
    char err[256] = "";
    cr_assert_eq(rill_producer_conf_set(c, "bootstrap.servers", k->boot, err, sizeof(err)), RILL_OK,
                 "%s", err);
    if (max_inflight)
        cr_assert_eq(rill_producer_conf_set(c, "rill.max.inflight", max_inflight, err, sizeof(err)),
                     RILL_OK, "%s", err);
    rill_aid_t aid = RILL_AID_NONE;
    rill_stage_opts_t o = {.executor = KIT_EXEC(0), .mailbox_capacity = KCASE_MAILBOX};
    cr_assert_eq(rill_producer_spawn(sys, c, &o, &aid, err, sizeof(err)), RILL_OK, "%s", err);
    return aid;
}

/* 2.1, 2.4, 2.5, 2.13 and rill's demand window on the Kafka sink: a whole
 * stream of produce requests with a stray ON_SUBSCRIBE and a NEXT without
 * element on the way; every record reaches the topic and the sink ends
 * without cancelling. Then 2.9 and 2.10: COMPLETE and ERROR without any
 * REQUEST end a sink without a CANCEL. */
Test(rs_kafka, rule_2_1_2_4_2_5_2_9_2_10_2_13_kafka_sink, .timeout = 120)
{
    kbroker_t kb;
    kbroker_open(&kb, "rs-sink", 0);
    rill_system_t *sys = conf_system();
    probe_t p, x;
    rill_aid_t pub = window_pub(sys, &p, 1, NULL);
    p.make_elem = produce_request;
    p.make_arg = "rs-sink";
    rill_aid_t xa = sub_probe(sys, &x);
    rill_aid_t sink = kafka_sink_spawn(sys, &kb, NULL);
    window_of(sys, &p, sink);
    link_stages(sys, pub, sink);
    cr_assert(probe_wait_demand(&p, 1, KIT_WAIT_MS), "2.1: no REQUEST");
    cr_assert_eq(rill_stream_on_subscribe(sys, rill_sub(sink), rill_pub(xa), 777), RILL_OK);
    cr_assert(probe_wait_count(&x, RILL_STREAM_CANCEL, 1, KIT_WAIT_MS), "2.5");
    cr_assert_eq(probe_at(&x, 0).corr, 777);
    pthread_mutex_lock(&p.mu);
    uint64_t tok = p.token;
    p.pub_sent++;
    pthread_mutex_unlock(&p.mu);
    rill_msg_t raw = {.type = RILL_STREAM_NEXT, .from = pub, .corr = tok, .arg = 999};
    cr_assert_eq(rill_tell(sys, sink, &raw), RILL_OK);
    emit(sys, pub, KCASE_N + 1);
    dead_then_fence(sys, sink, pub, "the completed Kafka sink");
    probe_view_t v = probe_view(&p);
    cr_assert_eq(v.pub_sent, KCASE_N + 1, "the sink stopped asking");
    cr_assert_eq(v.over_window, 0, "demand beyond mailbox capacity - 1");
    cr_assert_eq(v.refused, 0);
    cr_assert_eq(probe_count(&p, RILL_STREAM_CANCEL), 0, "2.4: cancelled at the end");
    rill_consumed_t *got = NULL;
    char err[256] = "";
    rill_testkit_opts_t o = {.timeout_ms = 30000};
    cr_assert_eq(
        rill_testkit_consume(kb.boot, "rs-sink", RILL_CONSUME_TO_END, &o, &got, err, sizeof(err)),
        RILL_OK, "%s", err);
    cr_assert_eq(rill_consumed_count(got), KCASE_N, "%zu records on the topic",
                 rill_consumed_count(got));
    rill_consumed_destroy(got);

    for (int kind = 1; kind <= 2; kind++) {
        probe_t q;
        rill_aid_t qa = window_pub(sys, &q, 0, NULL);
        q.terminal_on_subscribe = kind;
        rill_aid_t sink2 = kafka_sink_spawn(sys, &kb, NULL);
        link_stages(sys, qa, sink2);
        dead_then_fence(sys, sink2, qa, "the Kafka sink");
        cr_assert_eq(probe_count(&q, RILL_STREAM_CANCEL), 0, "2.9/2.10 (%d): cancelled", kind);
        cr_assert_eq(rill_stop(sys, qa), RILL_OK);
        expect_dead(sys, qa, "probe");
        probe_fini(&q);
    }
    conf_end(sys);
    probe_fini(&p);
    probe_fini(&x);
    rill_broker_destroy(kb.b);
}

/* 2.3 on the Kafka sink, as rs_kinds::rule_2_3_2_4_… does it (see
 * no_upstream_after_terminal): its full demand is rill.max.inflight (4
 * here), which it has outstanding again once the broker acknowledged what
 * it produced; then
 * COMPLETE (it flushes and ends) or ERROR: no REQUEST, no CANCEL in or
 * after either. */
Test(rs_kafka, rule_2_3_kafka_sink, .timeout = 120)
{
    kbroker_t kb;
    kbroker_open(&kb, "rs-sink23", 0);
    rill_system_t *sys = conf_system();
    for (int end = 1; end <= 2; end++) {
        probe_t p;
        rill_aid_t pub = window_pub(sys, &p, 0, NULL);
        p.make_elem = produce_request;
        p.make_arg = "rs-sink23";
        rill_aid_t sink = kafka_sink_spawn(sys, &kb, "4");
        const int64_t d = 4;
        pthread_mutex_lock(&p.mu);
        p.window_limit = d;
        pthread_mutex_unlock(&p.mu);
        link_stages(sys, pub, sink);
        emit(sys, pub, 6);
        size_t mark = 0;
        cr_assert(
            probe_wait_outstanding(&p, 6, d, &mark, KIT_WAIT_MS),
            "(%d) %lld sent, %lld outstanding, not %lld", end, (long long)probe_view(&p).pub_sent,
            (long long)(probe_view(&p).pub_requested - probe_view(&p).pub_sent), (long long)d);
        uint64_t tok = probe_view(&p).token;
        if (end == 1)
            cr_assert_eq(rill_stream_complete(sys, rill_sub(sink), rill_pub(pub), tok), RILL_OK);
        else
            cr_assert_eq(rill_stream_error(sys, rill_sub(sink), rill_pub(pub), tok, RILL_EIO,
                                           "upstream broke"),
                         RILL_OK);
        dead_then_fence(sys, sink, pub, "the Kafka sink");
        cr_assert_eq(upstream_signals(&p), mark, "(%d) 2.3: %zu REQUEST/CANCEL in or after the end",
                     end, upstream_signals(&p) - mark);
        cr_assert_eq(probe_view(&p).over_window, 0, "(%d)", end);
        cr_assert_eq(rill_stop(sys, pub), RILL_OK);
        expect_dead(sys, pub, "probe");
        probe_fini(&p);
    }
    conf_end(sys);
    rill_broker_destroy(kb.b);
}

/* The Kafka sink is a processor when something subscribes to its output
 * (a delivery report per request): 1.1, 1.5, 1.7, 1.9, 4.1 on that output,
 * asked two at a time, while its input keeps rill's demand window. */
Test(rs_kafka, rule_1_1_1_5_1_7_1_9_4_1_kafka_sink_delivery_output, .timeout = 120)
{
    kbroker_t kb;
    kbroker_open(&kb, "rs-dlv", 0);
    rill_system_t *sys = conf_system();
    probe_t p, s;
    rill_aid_t pub = window_pub(sys, &p, 1, NULL);
    p.make_elem = produce_request;
    p.make_arg = "rs-dlv";
    rill_aid_t sub = chunk_sub(sys, &s, 2, 0);
    rill_aid_t sink = kafka_sink_spawn(sys, &kb, NULL);
    window_of(sys, &p, sink);
    const kcase_t k = {"kafka_sink", ROLE_PROCESSOR, K_COUNT, NULL};
    subscribe(sys, sink, sub, 1);
    cr_assert(probe_wait_count(&s, RILL_STREAM_ON_SUBSCRIBE, 1, KIT_WAIT_MS), "1.9");
    link_stages(sys, pub, sink);
    emit(sys, pub, KCASE_N);
    cr_assert(probe_wait_count(&s, RILL_STREAM_COMPLETE, 1, 60000), "no COMPLETE after %lld",
              (long long)probe_acct(&s, 1).received);
    settle(sys, sink, &s, sub, pub, "the Kafka sink");
    expect_clean_end(&s, &k, RILL_STREAM_COMPLETE);
    cr_assert_eq(probe_count(&s, RILL_STREAM_NEXT), KCASE_N, "one delivery report per request");
    probe_view_t v = probe_view(&p);
    cr_assert_eq(v.pub_sent, KCASE_N);
    cr_assert_eq(v.over_window, 0, "demand beyond mailbox capacity - 1");
    cr_assert_eq(v.refused, 0);
    cr_assert_eq(probe_count(&p, RILL_STREAM_CANCEL), 0, "2.4: cancelled at the end");
    conf_end(sys);
    probe_fini(&p);
    probe_fini(&s);
    rill_broker_destroy(kb.b);
}

/* ===================================================================== */
/* rill's own promises (stream.h)                                        */
/* ===================================================================== */

Test(rs, mailbox_invariant_queued_never_exceeds_outstanding_demand, .timeout = 60)
{
    const int64_t n = KIT_SCALE(20000);
    rill_system_t *sys = conf_system();
    probe_t s[2];
    rill_aid_t sub[2];
    for (int k = 0; k < 2; k++) {
        probe_init(&s[k]);
        s[k].check_depth = 1;
        s[k].check_order = 1;
        s[k].request_on_subscribe = 16;
        s[k].refill_below = 16;
        s[k].refill_chunk = 16; /* at most 32 outstanding, mailbox 64 */
        sub[k] = probe_spawn(sys, &s[k], 64, 1);
    }
    /* Straight from a source, and from a processor. */
    rill_aid_t src = spawn_stage(sys, rill_source_range(0, UINT64_MAX), 0, 0);
    rill_aid_t src2 = spawn_stage(sys, rill_source_range(0, UINT64_MAX), 0, 0);
    rill_aid_t map = spawn_stage(sys, rill_stage_map(map_identity, NULL), 0, 0);
    link_stages(sys, src2, map);
    subscribe(sys, src, sub[0], 1);
    subscribe(sys, map, sub[1], 2);
    rill_aid_t pubs[2] = {src, map};
    for (int k = 0; k < 2; k++) {
        cr_assert(probe_wait_received(&s[k], 1 + (uint64_t)k, n, 60000), "stalled (%d)", k);
        cr_assert_eq(rill_stream_cancel(sys, rill_pub(pubs[k]), rill_sub(sub[k]), 1 + (uint64_t)k),
                     RILL_OK);
    }
    expect_dead(sys, src, "source");
    expect_dead(sys, map, "map");
    expect_dead(sys, src2, "source");
    for (int k = 0; k < 2; k++) {
        cr_assert_eq(probe_fence(sys, &s[k], sub[k]), RILL_OK);
        cr_assert_eq(probe_view(&s[k]).demand_violations, 0, "received > requested (%d)", k);
        cr_assert_eq(probe_view(&s[k]).depth_violations, 0,
                     "mailbox deeper than the outstanding demand (%d)", k);
        cr_assert_geq(probe_view(&s[k]).depth_checks, n);
        cr_assert_leq(probe_view(&s[k]).max_mailbox, 32);
        cr_assert_eq(probe_view(&s[k]).order_violations, 0);
        cr_assert_eq(probe_count(&s[k], RILL_STREAM_ERROR), 0);
    }
    conf_end(sys);
    for (int k = 0; k < 2; k++)
        probe_fini(&s[k]);
}

Test(rs, rill_stage_demand_stays_within_mailbox_capacity_minus_one, .timeout = 60)
{
    const int64_t n = KIT_SCALE(4000);
    rill_system_t *sys = conf_system();
    kit_tally_t tally;
    memset(&tally, 0, sizeof(tally));
    probe_t p;
    probe_init(&p);
    p.answer_subscribe = 1;
    p.window_limit = DEMAND_WINDOW_OUTSTANDING;
    p.tally = &tally;
    p.complete_after_emit = 1;
    rill_aid_t pub = probe_spawn(sys, &p, 256, 1);
    rill_aid_t map = spawn_stage(sys, rill_stage_map(map_identity, NULL), DEMAND_WINDOW_MAILBOX, 0);
    rill_aid_t sink = spawn_stage(sys, rill_sink_ignore(), 0, 1);
    link_stages(sys, map, sink);
    link_stages(sys, pub, map);

    /* Phase 1: the publisher sends nothing, so all demand stays
     * outstanding: it must stop at capacity - 1. */
    cr_assert(probe_wait_count(&p, RILL_STREAM_REQUEST, 1, KIT_WAIT_MS), "no REQUEST");
    /* A marker: an ON_SUBSCRIBE the map never asked for, which it cancels
     * (2.5). Its CANCEL reaches the publisher after every REQUEST the map
     * sent before, and the map asks upstream for room, not for its
     * subscriber's demand: no more REQUEST comes without elements. */
    cr_assert_eq(rill_stream_on_subscribe(sys, rill_sub(map), rill_pub(pub), 999), RILL_OK);
    cr_assert(probe_wait_count(&p, RILL_STREAM_CANCEL, 1, KIT_WAIT_MS), "no CANCEL for 999");
    int64_t asked = probe_view(&p).pub_requested;
    cr_assert_leq(asked, DEMAND_WINDOW_OUTSTANDING, "map with mailbox %u asked for %lld",
                  DEMAND_WINDOW_MAILBOX, (long long)asked);
    cr_assert_gt(asked, 0);

    /* Phase 2: the publisher answers every REQUEST at once, n in all,
     * then completes. At every REQUEST: demand - sent <= capacity - 1, and
     * the map's mailbox never refuses a NEXT. */
    rill_msg_t go = kit_msg(PROBE_EMIT, (uint64_t)n, NULL);
    cr_assert_eq(rill_tell(sys, pub, &go), RILL_OK);
    expect_dead(sys, sink, "the sink (stream did not complete)");
    dead_then_fence(sys, map, pub, "the map");
    cr_assert_eq(probe_view(&p).pub_sent, n);
    cr_assert_eq(probe_view(&p).over_window, 0, "outstanding demand above %lld",
                 (long long)DEMAND_WINDOW_OUTSTANDING);
    cr_assert_eq(probe_view(&p).refused, 0, "the map's mailbox refused a NEXT");
    cr_assert_eq(probe_view(&p).send_errors, 0);
    cr_assert_eq(probe_count(&p, RILL_STREAM_CANCEL), 1, "only the marker's");
    expect_all_released(&tally);
    cr_assert_eq(atomic_load(&tally.released), n);
    conf_end(sys);
    probe_fini(&p);
}

/* One subscription whose subscriber is held busy until ON_SUBSCRIBE, the
 * elements and COMPLETE are all queued at it, so only the queues' order
 * decides what it sees first. */
static void on_subscribe_first_round(rill_system_t *sys, int round, int via_map, int hold)
{
    probe_t s;
    probe_init(&s);
    s.check_order = 1;
    rill_aid_t sub = probe_spawn(sys, &s, 64, round % 2);
    rill_aid_t src = spawn_stage(sys, rill_source_range(0, 10), 0, (round + 1) % 2);
    rill_aid_t pub = src;
    if (via_map) {
        /* Not on the subscriber's executor, which the hold blocks. */
        pub = spawn_stage(sys, rill_stage_map(map_identity, NULL), 0, (round + 1) % 2);
        link_stages(sys, src, pub);
    }
    kit_gate_t gate;
    kit_gate_init(&gate);
    if (hold) {
        rill_msg_t h = {.type = PROBE_HOLD, .payload = &gate};
        cr_assert_eq(rill_tell(sys, sub, &h), RILL_OK);
        cr_assert(kit_wait_at_least(&gate.arrived, 1, KIT_WAIT_MS));
    }
    subscribe(sys, pub, sub, 1);
    cr_assert_eq(probe_request(sys, &s, sub, pub, 1, 10), RILL_OK);
    if (hold) {
        struct depth_at_least d = {sys, sub, 11}; /* 10 NEXT and COMPLETE */
        cr_assert(kit_wait_until(depth_reached, &d, KIT_WAIT_MS), "round %d: not queued", round);
        kit_gate_open(&gate);
    }
    cr_assert(probe_wait_count(&s, RILL_STREAM_COMPLETE, 1, KIT_WAIT_MS), "round %d", round);
    cr_assert_eq(probe_at(&s, 0).type, RILL_STREAM_ON_SUBSCRIBE, "round %d: %u came first", round,
                 probe_at(&s, 0).type);
    cr_assert_eq(probe_count(&s, RILL_STREAM_ON_SUBSCRIBE), 1);
    cr_assert_eq(probe_count(&s, RILL_STREAM_NEXT), 10);
    cr_assert_eq(probe_at(&s, 11).type, RILL_STREAM_COMPLETE);
    cr_assert_eq(probe_view(&s).order_violations, 0);
    expect_dead(sys, pub, "the completed publisher");
    cr_assert_eq(rill_stop(sys, sub), RILL_OK);
    expect_dead(sys, sub, "the probe");
    kit_gate_destroy(&gate);
    probe_fini(&s);
}

Test(rs, rill_on_subscribe_precedes_the_first_next, .timeout = 120)
{
    rill_system_t *sys = conf_system();
    for (int round = 0; round < KIT_SCALE(40); round++)
        on_subscribe_first_round(sys, round, round % 2, 1);
    for (int round = 0; round < KIT_SCALE(200); round++)
        on_subscribe_first_round(sys, round, round % 2, 0);
    conf_end(sys);
}
