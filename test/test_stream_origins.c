/*
 * Origins through the stream stages (stream.h, ORIGINS): every element a
 * source emits with an origin is settled exactly once, confirmed when it
 * was handled (a sink took it, a stage dropped it on purpose, an input
 * made no output) and released unconfirmed otherwise (a function's error,
 * a failure, redeliver_drops), and only once everything made from it is.
 * Also supervised pipelines (restarts, giving up, a pipeline as a child of
 * a user supervisor), a stop with elements in flight, and the error
 * convention of the stream API.
 *
 * The origins are made by hand: a LEDGER actor stands for the Kafka
 * consumer. rill__origin_new(sys, ledger, key, value) (actors/seam.h)
 * makes a leaf origin of it, and when that origin is settled the ledger
 * receives (key, value, ok) in a RILL__MSG_SETTLED message; it counts
 * confirmations and releases per key. A pull source gives element v the
 * origin (key v, value v).
 *
 * Tests wait on conditions with deadlines; sleeps only make a stage slow.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "support/rtest.h"

#include "support/actor_kit.h"

#include "actors/seam.h"
#include <rill/stream.h>

/* Keys a ledger accounts for (0 .. LEDGER_KEYS - 1). */
#define LEDGER_KEYS 8192

/* ------------------------------------------------------------------ */
/* The ledger: the source of the origins                               */
/* ------------------------------------------------------------------ */

typedef struct ledger {
    rill_system_t *sys;
    rill_aid_t aid;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* Guarded by mu. */
    uint32_t ok[LEDGER_KEYS];  /* settled confirmed */
    uint32_t bad[LEDGER_KEYS]; /* settled released (not confirmed) */
    long n_ok, n_bad;
    long strange;        /* a key out of range, or a value that is not its key */
    uint64_t marks_sent; /* the test thread's only */
    uint64_t mark_seen;  /* the last LEDGER_MARK handled */
} ledger_t;

/* A message the ledger notes (arg: a sequence number), for fences. */
enum { LEDGER_MARK = KIT_MSG_APP };

static rill_err_t ledger_behavior(rill_ctx_t *ctx, void *state, rill_msg_t *msg)
{
    (void)ctx;
    ledger_t *l = state;
    if (msg->type == LEDGER_MARK) {
        pthread_mutex_lock(&l->mu);
        l->mark_seen = msg->arg;
        pthread_cond_broadcast(&l->cv);
        pthread_mutex_unlock(&l->mu);
        return RILL_OK;
    }
    if (msg->type != RILL__MSG_SETTLED || !msg->payload)
        return RILL_OK;
    const rill__settled_t *s = msg->payload;
    pthread_mutex_lock(&l->mu);
    for (uint32_t i = 0; i < s->n; i++) {
        const rill__settle_note_t *n = &s->v[i];
        if (n->key >= LEDGER_KEYS || n->value != (int64_t)n->key) {
            l->strange++;
            continue;
        }
        if (n->ok) {
            l->ok[n->key]++;
            l->n_ok++;
        } else {
            l->bad[n->key]++;
            l->n_bad++;
        }
    }
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
    return RILL_OK;
}

/* A ledger on executor `executor` (-1: any). Freed by ledger_free after
 * the system is destroyed. */
static ledger_t *ledger_new(rill_system_t *sys, int executor)
{
    ledger_t *l = calloc(1, sizeof(*l));
    cr_assert_not_null(l);
    l->sys = sys;
    pthread_mutex_init(&l->mu, NULL);
    kit_cond_init(&l->cv);
    rill_spawn_opts_t o;
    memset(&o, 0, sizeof(o));
    o.behavior = ledger_behavior;
    o.state = l;
    o.executor = KIT_EXEC(executor);
    o.mailbox_capacity = 1024;
    rill_err_t err = rill_spawn(sys, &o, &l->aid);
    cr_assert_eq(err, RILL_OK, "spawn the ledger: %s", rill_err_name(err));
    return l;
}

static void ledger_free(ledger_t *l)
{
    pthread_cond_destroy(&l->cv);
    pthread_mutex_destroy(&l->mu);
    free(l);
}

static long ledger_total(ledger_t *l)
{
    pthread_mutex_lock(&l->mu);
    long n = l->n_ok + l->n_bad;
    pthread_mutex_unlock(&l->mu);
    return n;
}

/* Waits until at least n origins were settled; 1 if they were in time. */
static int ledger_wait(ledger_t *l, long n, int timeout_ms)
{
    int64_t deadline = kit_now_ms() + timeout_ms;
    pthread_mutex_lock(&l->mu);
    while (l->n_ok + l->n_bad < n && kit_cond_wait_until(&l->cv, &l->mu, deadline) == 0)
        ;
    int ok = l->n_ok + l->n_bad >= n;
    pthread_mutex_unlock(&l->mu);
    return ok;
}

/* Once this returns, the ledger has counted every notice sent to it
 * before (its mailbox is FIFO; notices on its control queue go first).
 * Not kit_fence: its reply actor could land on an executor a test holds. */
static void ledger_fence(ledger_t *l)
{
    uint64_t mark = ++l->marks_sent;
    rill_msg_t m = {.type = LEDGER_MARK, .arg = mark};
    cr_assert_eq(kit_tell_retry(l->sys, l->aid, &m, KIT_WAIT_MS), RILL_OK, "no mark sent");
    int64_t deadline = kit_now_ms() + KIT_WAIT_MS;
    pthread_mutex_lock(&l->mu);
    while (l->mark_seen < mark && kit_cond_wait_until(&l->cv, &l->mu, deadline) == 0)
        ;
    int seen = l->mark_seen >= mark;
    pthread_mutex_unlock(&l->mu);
    cr_assert(seen, "the ledger does not get to its mark");
}

/* The lowest key not confirmed yet: what a consumer would commit up to. */
static uint64_t ledger_prefix(ledger_t *l, uint64_t limit)
{
    pthread_mutex_lock(&l->mu);
    uint64_t k = 0;
    while (k < limit && l->ok[k])
        k++;
    pthread_mutex_unlock(&l->mu);
    return k;
}

typedef struct settled {
    uint32_t ok, bad;
} settled_t;

static settled_t ledger_key(ledger_t *l, uint64_t key)
{
    pthread_mutex_lock(&l->mu);
    settled_t s = {l->ok[key], l->bad[key]};
    pthread_mutex_unlock(&l->mu);
    return s;
}

/* Every key below n was settled exactly once, confirmed iff expect[key]
 * (NULL: all confirmed), and nothing else was settled. */
static void ledger_expect_once(ledger_t *l, uint64_t n, const unsigned char *expect)
{
    cr_assert(ledger_wait(l, (long)n, KIT_WAIT_MS), "%ld of %llu origins settled", ledger_total(l),
              (unsigned long long)n);
    ledger_fence(l);
    for (uint64_t k = 0; k < n; k++) {
        settled_t s = ledger_key(l, k);
        cr_assert_eq(s.ok + s.bad, 1, "key %llu settled %u times (%u confirmed)",
                     (unsigned long long)k, s.ok + s.bad, s.ok);
        int want = expect ? expect[k] : 1;
        cr_assert_eq((int)s.ok, want, "key %llu: %s, expected %s", (unsigned long long)k,
                     s.ok ? "confirmed" : "released", want ? "confirmed" : "released");
    }
    cr_assert_eq(ledger_total(l), (long)n, "%ld settled for %llu origins", ledger_total(l),
                 (unsigned long long)n);
    pthread_mutex_lock(&l->mu);
    long strange = l->strange;
    pthread_mutex_unlock(&l->mu);
    cr_assert_eq(strange, 0, "notices with a foreign key or value");
}

/* ------------------------------------------------------------------ */
/* Sources and sinks                                                   */
/* ------------------------------------------------------------------ */

/* Value elements 0 .. count-1, element v with the origin (v, v). */
typedef struct osrc {
    ledger_t *led;
    uint64_t count;
    atomic_ullong next;     /* the source's executor writes it */
    atomic_ullong produced; /* elements handed to the stream */
    /* A restartable source: when set (by a new run), the next pull goes
     * back to the lowest key not confirmed yet. */
    atomic_int rewind;
} osrc_t;

static void osrc_init(osrc_t *s, ledger_t *led, uint64_t count)
{
    memset(s, 0, sizeof(*s));
    cr_assert_leq(count, LEDGER_KEYS);
    s->led = led;
    s->count = count;
}

static rill_elem_t origin_elem(ledger_t *led, uint64_t v)
{
    rill_elem_t e = rill_elem_value(v);
    e.origin = rill__origin_new(led->sys, led->aid, v, (int64_t)v);
    return e;
}

static rill_err_t osrc_pull(void *opaque, rill_elem_t *out)
{
    osrc_t *s = opaque;
    if (atomic_exchange_explicit(&s->rewind, 0, memory_order_acq_rel))
        atomic_store_explicit(&s->next, ledger_prefix(s->led, s->count), memory_order_relaxed);
    uint64_t v = atomic_load_explicit(&s->next, memory_order_relaxed);
    if (v >= s->count)
        return RILL_EOS;
    *out = origin_elem(s->led, v);
    if (!out->origin)
        return RILL_ENOMEM;
    atomic_store_explicit(&s->next, v + 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->produced, 1, memory_order_release);
    return RILL_OK;
}

static uint64_t produced(osrc_t *s)
{
    return atomic_load_explicit(&s->produced, memory_order_acquire);
}

typedef struct osrc_cond {
    osrc_t *s;
    uint64_t n;
} osrc_cond_t;

static int osrc_reached(void *arg)
{
    osrc_cond_t *c = arg;
    return produced(c->s) >= c->n;
}

/* A sink function that records what it handled (got[key] = 1 when it
 * returns RILL_OK), optionally slow, held at its first element by a gate,
 * or failing at one key. */
typedef struct rsink {
    unsigned char got[LEDGER_KEYS];
    atomic_int delivered[LEDGER_KEYS]; /* times each key arrived (restarts) */
    uint64_t order[LEDGER_KEYS];       /* keys handled, in order (one run) */
    atomic_long calls;
    atomic_long handled;
    long work_us;
    int64_t fail_at; /* -1: never */
    int gated;
    kit_gate_t gate;
} rsink_t;

static rsink_t *rsink_new(void)
{
    rsink_t *r = calloc(1, sizeof(*r));
    cr_assert_not_null(r);
    r->fail_at = -1;
    kit_gate_init(&r->gate);
    return r;
}

static void rsink_free(rsink_t *r)
{
    kit_gate_destroy(&r->gate);
    free(r);
}

static void work_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

static rill_err_t rsink_fn(void *opaque, rill_elem_t *e)
{
    rsink_t *r = opaque;
    long n = atomic_fetch_add_explicit(&r->calls, 1, memory_order_relaxed);
    if (n == 0 && r->gated)
        kit_gate_pass(&r->gate, 2 * KIT_WAIT_MS);
    if (r->work_us)
        work_us(r->work_us);
    uint64_t k = e->arg;
    rill_elem_release(e); /* the function owns the element, rill its origin */
    if (r->fail_at >= 0 && k == (uint64_t)r->fail_at)
        return RILL_EIO;
    long h = atomic_load_explicit(&r->handled, memory_order_relaxed);
    if (k < LEDGER_KEYS) {
        r->got[k] = 1;
        atomic_fetch_add_explicit(&r->delivered[k], 1, memory_order_relaxed);
    }
    if (h < LEDGER_KEYS)
        r->order[h] = k;
    atomic_store_explicit(&r->handled, h + 1, memory_order_release);
    return RILL_OK;
}

/* A manual sink keeps every element (with its origin) for the test
 * thread to confirm or release later. */
typedef struct stash {
    pthread_mutex_t mu;
    rill_elem_t *v;
    size_t n, cap;
    kit_gate_t *gate; /* if set, the first call waits for it */
    atomic_long calls;
} stash_t;

static void stash_init(stash_t *s)
{
    memset(s, 0, sizeof(*s));
    pthread_mutex_init(&s->mu, NULL);
}

static void stash_fini(stash_t *s)
{
    for (size_t i = 0; i < s->n; i++)
        rill_elem_release(&s->v[i]);
    free(s->v);
    pthread_mutex_destroy(&s->mu);
}

static rill_err_t stash_fn(void *opaque, rill_elem_t *e)
{
    stash_t *s = opaque;
    if (atomic_fetch_add(&s->calls, 1) == 0 && s->gate)
        kit_gate_pass(s->gate, 2 * KIT_WAIT_MS);
    pthread_mutex_lock(&s->mu);
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 256;
        rill_elem_t *v = realloc(s->v, cap * sizeof(*v));
        if (!v) {
            pthread_mutex_unlock(&s->mu);
            rill_elem_release(e);
            return RILL_ENOMEM;
        }
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = *e;
    pthread_mutex_unlock(&s->mu);
    memset(e, 0, sizeof(*e));
    return RILL_OK;
}

static size_t stash_count(stash_t *s)
{
    pthread_mutex_lock(&s->mu);
    size_t n = s->n;
    pthread_mutex_unlock(&s->mu);
    return n;
}

typedef struct stash_cond {
    stash_t *s;
    size_t n;
} stash_cond_t;

static int stash_reached(void *arg)
{
    stash_cond_t *c = arg;
    return stash_count(c->s) >= c->n;
}

/* ------------------------------------------------------------------ */
/* Pipelines                                                           */
/* ------------------------------------------------------------------ */

static rill_system_t *origin_system(void)
{
    rill_system_t *sys = kit_system(2, 0, 0, 1);
    cr_assert_not_null(sys);
    return sys;
}

static void add_ok(rill_pipeline_t *p, rill_stage_t *s, const rill_stage_opts_t *o)
{
    char why[160] = "";
    cr_assert_eq(rill_stage_error(s, why, sizeof(why)), RILL_OK, "bad spec: %s", why);
    rill_err_t err = rill_pipeline_add(p, s, o);
    cr_assert_eq(err, RILL_OK, "add: %s", rill_err_name(err));
}

static void start_ok(rill_pipeline_t *p)
{
    char errstr[256] = "";
    rill_err_t err = rill_pipeline_start(p, errstr, sizeof(errstr));
    cr_assert_eq(err, RILL_OK, "start: %s (%s)", rill_err_name(err), errstr);
}

static rill_pipeline_result_t wait_ok(rill_pipeline_t *p, int timeout_ms)
{
    rill_pipeline_result_t r;
    memset(&r, 0, sizeof(r));
    rill_err_t err = rill_pipeline_wait(p, timeout_ms, &r);
    cr_assert_eq(err, RILL_OK, "the pipeline did not end in time: %s", rill_err_name(err));
    return r;
}

static rill_aid_t spawn_ok(rill_system_t *sys, rill_stage_t *s, const rill_stage_opts_t *o)
{
    rill_aid_t aid = RILL_AID_NONE;
    char errstr[256] = "";
    rill_err_t err = rill_stage_spawn(sys, s, o, &aid, errstr, sizeof(errstr));
    cr_assert_eq(err, RILL_OK, "spawn: %s (%s)", rill_err_name(err), errstr);
    return aid;
}

static rill_err_t identity_map(void *opaque, rill_elem_t *in, rill_elem_t *out)
{
    (void)opaque;
    *out = *in;
    memset(in, 0, sizeof(*in));
    return RILL_OK;
}

/* ------------------------------------------------------------------ */
/* Stages that drop on purpose confirm, or release with redeliver_drops */
/* ------------------------------------------------------------------ */

#define DROP_N     1000u
/* The gated sink holds at most its window (mailbox 64 - 1) elements,
 * one of them in its function. */
#define SINK_HOLDS 63u

static int keep_even(void *opaque, const rill_elem_t *e)
{
    (void)opaque;
    return e->arg % 2 == 0;
}

Test(origins_drop, filter_confirms_what_it_drops, .timeout = 60)
{
    for (int redeliver = 0; redeliver <= 1; redeliver++) {
        rill_system_t *sys = origin_system();
        ledger_t *led = ledger_new(sys, -1);
        osrc_t src;
        osrc_init(&src, led, DROP_N);
        rsink_t *sink = rsink_new();
        rill_pipeline_t *p = rill_pipeline_new(sys, "filtered");
        rill_stage_opts_t fo = {.redeliver_drops = redeliver};
        add_ok(p, rill_source_fn(osrc_pull, &src), NULL);
        add_ok(p, rill_stage_filter(keep_even, NULL), &fo);
        add_ok(p, rill_sink_foreach(rsink_fn, sink), NULL);
        start_ok(p);
        rill_pipeline_result_t r = wait_ok(p, KIT_WAIT_MS);
        cr_assert_eq(r.end, RILL_PIPELINE_COMPLETED, "%s", r.text);
        cr_assert_eq(r.delivered, DROP_N / 2);
        unsigned char expect[DROP_N];
        for (uint64_t k = 0; k < DROP_N; k++) {
            cr_assert_eq(sink->got[k], k % 2 == 0, "key %llu", (unsigned long long)k);
            expect[k] = redeliver ? k % 2 == 0 : 1;
        }
        ledger_expect_once(led, DROP_N, expect);
        rill_pipeline_destroy(p);
        rill_system_destroy(sys);
        ledger_free(led);
        rsink_free(sink);
    }
}

static uint64_t key_mod8(void *opaque, const rill_elem_t *e)
{
    (void)opaque;
    return e->arg % 8;
}

/*
 * source -> stage -> sink, where the sink is held at its first element
 * until the source has produced everything and the stage has dropped all
 * it will drop while the sink is held (everything but what the sink and
 * the stage can hold). Then the sink goes on. Every origin is settled
 * once: what reached the sink confirmed by it; what was dropped confirmed
 * by the stage, or released with redeliver_drops.
 */
static void drop_case(rill_stage_t *stage, size_t holds, int redeliver)
{
    rill_system_t *sys = origin_system();
    ledger_t *led = ledger_new(sys, 0);
    osrc_t src;
    osrc_init(&src, led, DROP_N);
    rsink_t *sink = rsink_new();
    sink->gated = 1;
    rill_pipeline_t *p = rill_pipeline_new(sys, "dropping");
    /* The source and the stage on executor 0, the held sink alone on 1. */
    rill_stage_opts_t on0 = {.executor = RILL_EXECUTOR(0), .redeliver_drops = redeliver};
    rill_stage_opts_t on1 = {.executor = RILL_EXECUTOR(1), .mailbox_capacity = SINK_HOLDS + 1};
    add_ok(p, rill_source_fn(osrc_pull, &src), &on0);
    add_ok(p, stage, &on0);
    add_ok(p, rill_sink_foreach(rsink_fn, sink), &on1);
    start_ok(p);

    cr_assert(kit_wait_at_least(&sink->gate.arrived, 1, KIT_WAIT_MS), "the sink got nothing");
    /* Held: only the stage settles anything now, and only what it drops
     * (redeliver or not, each drop is one notice). */
    osrc_cond_t done = {&src, DROP_N};
    cr_assert(kit_wait_until(osrc_reached, &done, KIT_WAIT_MS),
              "the source was not drained while the sink was held");
    long must_drop = (long)(DROP_N - SINK_HOLDS - holds);
    cr_assert(ledger_wait(led, must_drop, KIT_WAIT_MS), "only %ld dropped while the sink was held",
              ledger_total(led));
    ledger_fence(led);
    long dropped = ledger_total(led);
    pthread_mutex_lock(&led->mu);
    long bad = led->n_bad;
    pthread_mutex_unlock(&led->mu);
    cr_assert_eq(bad, redeliver ? dropped : 0, "%ld of %ld drops released", bad, dropped);
    kit_gate_open(&sink->gate);

    rill_pipeline_result_t r = wait_ok(p, KIT_WAIT_MS);
    cr_assert_eq(r.end, RILL_PIPELINE_COMPLETED, "%s", r.text);
    long got = atomic_load(&sink->handled);
    cr_assert_eq((uint64_t)r.delivered, (uint64_t)got);
    cr_assert_lt(got, (long)DROP_N, "nothing was dropped: nothing was tested");
    unsigned char expect[DROP_N];
    for (uint64_t k = 0; k < DROP_N; k++)
        expect[k] = redeliver ? sink->got[k] : 1;
    ledger_expect_once(led, DROP_N, expect);
    /* Every element either reached the sink or was dropped. */
    long n_got = 0;
    for (uint64_t k = 0; k < DROP_N; k++)
        n_got += sink->got[k];
    cr_assert_eq(n_got, got);
    fprintf(stderr, "drop case (redeliver %d): %ld delivered, %ld dropped while held\n", redeliver,
            got, dropped);
    rill_pipeline_destroy(p);
    rill_system_destroy(sys);
    ledger_free(led);
    rsink_free(sink);
}

Test(origins_drop, buffer_drop_head, .timeout = 60)
{
    drop_case(rill_stage_buffer(4, RILL_OVERFLOW_DROP_HEAD), 4, 0);
    drop_case(rill_stage_buffer(4, RILL_OVERFLOW_DROP_HEAD), 4, 1);
}

Test(origins_drop, buffer_drop_tail, .timeout = 60)
{
    drop_case(rill_stage_buffer(4, RILL_OVERFLOW_DROP_TAIL), 4, 0);
    drop_case(rill_stage_buffer(4, RILL_OVERFLOW_DROP_TAIL), 4, 1);
}

Test(origins_drop, buffer_drop_buffer, .timeout = 60)
{
    drop_case(rill_stage_buffer(4, RILL_OVERFLOW_DROP_BUFFER), 4, 0);
    drop_case(rill_stage_buffer(4, RILL_OVERFLOW_DROP_BUFFER), 4, 1);
}

Test(origins_drop, conflate_keep_latest, .timeout = 60)
{
    drop_case(rill_stage_conflate(NULL, NULL), 1, 0);
    drop_case(rill_stage_conflate(NULL, NULL), 1, 1);
}

Test(origins_drop, conflate_by_key, .timeout = 60)
{
    /* More room than keys: a full table stops pulling (it cannot know
     * whether the next element replaces one), then nothing is dropped. */
    drop_case(rill_stage_conflate_by_key(key_mod8, NULL, 16), 8, 0);
    drop_case(rill_stage_conflate_by_key(key_mod8, NULL, 16), 8, 1);
}

/* ------------------------------------------------------------------ */
/* Outputs carry their inputs' origins                                 */
/* ------------------------------------------------------------------ */

#define FLOW_N 1000u

static rill_err_t plus_one(void *opaque, rill_elem_t *in, rill_elem_t *out)
{
    int64_t fail_at = *(const int64_t *)opaque;
    if ((int64_t)in->arg == fail_at) {
        rill_elem_release(in); /* still the function's on error */
        return RILL_EIO;
    }
    /* A new element: the origin is not the function's to carry. */
    *out = rill_elem_value(in->arg);
    rill_elem_release(in);
    return RILL_OK;
}

/* Runs source -> middle -> recording sink to its end; returns the result.
 * Every origin emitted is settled once, confirmed iff the sink handled
 * its element. */
static rill_pipeline_result_t flow_case(rill_stage_t *middle, rsink_t *sink, uint64_t n)
{
    rill_system_t *sys = origin_system();
    ledger_t *led = ledger_new(sys, -1);
    osrc_t src;
    osrc_init(&src, led, n);
    rill_pipeline_t *p = rill_pipeline_new(sys, "flow");
    rill_stage_opts_t mo = {.name = "middle"};
    add_ok(p, rill_source_fn(osrc_pull, &src), NULL);
    add_ok(p, middle, &mo);
    add_ok(p, rill_sink_foreach(rsink_fn, sink), NULL);
    start_ok(p);
    rill_pipeline_result_t r = wait_ok(p, KIT_WAIT_MS);
    uint64_t made = produced(&src);
    unsigned char *expect = calloc(made ? made : 1, 1);
    cr_assert_not_null(expect);
    for (uint64_t k = 0; k < made; k++)
        expect[k] = sink->got[k];
    ledger_expect_once(led, made, expect);
    free(expect);
    rill_pipeline_destroy(p);
    rill_system_destroy(sys);
    ledger_free(led);
    return r;
}

Test(origins_flow, map_output_carries_the_origin, .timeout = 60)
{
    int64_t never = -1;
    rsink_t *sink = rsink_new();
    rill_pipeline_result_t r = flow_case(rill_stage_map(plus_one, &never), sink, FLOW_N);
    cr_assert_eq(r.end, RILL_PIPELINE_COMPLETED, "%s", r.text);
    cr_assert_eq(r.delivered, FLOW_N);
    for (uint64_t k = 0; k < FLOW_N; k++)
        cr_assert(sink->got[k]);
    rsink_free(sink);
}

Test(origins_flow, map_error_leaves_its_input_unconfirmed, .timeout = 60)
{
    int64_t fail_at = 300;
    rsink_t *sink = rsink_new();
    rill_pipeline_result_t r = flow_case(rill_stage_map(plus_one, &fail_at), sink, FLOW_N);
    cr_assert_eq(r.end, RILL_PIPELINE_FAILED, "%s", r.text);
    cr_assert_str_eq(r.stage, "middle");
    cr_assert_eq(r.code, RILL_EIO);
    /* Outputs still queued in the map when it failed are released with
     * it (unconfirmed, like everything the sink did not handle). */
    cr_assert_eq(sink->got[300], 0);
    rsink_free(sink);
}

Test(origins_flow, sink_error_leaves_its_element_unconfirmed, .timeout = 60)
{
    int64_t never = -1;
    rsink_t *sink = rsink_new();
    sink->fail_at = 7;
    rill_pipeline_result_t r = flow_case(rill_stage_map(plus_one, &never), sink, FLOW_N);
    cr_assert_eq(r.end, RILL_PIPELINE_FAILED, "%s", r.text);
    cr_assert_eq(r.code, RILL_EIO);
    cr_assert_eq(sink->got[7], 0);
    for (uint64_t k = 0; k < 7; k++)
        cr_assert(sink->got[k], "key %llu", (unsigned long long)k);
    rsink_free(sink);
}

static rill_err_t async_now(void *opaque, rill_async_job_t *job, rill_elem_t *in)
{
    int64_t fail_at = *(const int64_t *)opaque;
    uint64_t v = in->arg;
    rill_elem_release(in);
    if ((int64_t)v == fail_at)
        return rill_async_complete(job, RILL_EIO, NULL);
    rill_elem_t out = rill_elem_value(v);
    return rill_async_complete(job, RILL_OK, &out);
}

Test(origins_flow, map_async_result_carries_the_origin, .timeout = 60)
{
    int64_t never = -1, fail_at = 123;
    rsink_t *sink = rsink_new();
    rill_pipeline_result_t r =
        flow_case(rill_stage_map_async(async_now, &never, 4, 1), sink, FLOW_N);
    cr_assert_eq(r.end, RILL_PIPELINE_COMPLETED, "%s", r.text);
    cr_assert_eq(r.delivered, FLOW_N);
    rsink_free(sink);

    sink = rsink_new();
    r = flow_case(rill_stage_map_async(async_now, &fail_at, 4, 0), sink, FLOW_N);
    cr_assert_eq(r.end, RILL_PIPELINE_FAILED, "%s", r.text);
    cr_assert_eq(sink->got[123], 0);
    rsink_free(sink);
}

Test(origins_flow, pass_through_stages_keep_origins, .timeout = 60)
{
    rsink_t *sink = rsink_new();
    rill_pipeline_result_t r =
        flow_case(rill_stage_buffer(16, RILL_OVERFLOW_BACKPRESSURE), sink, FLOW_N);
    cr_assert_eq(r.end, RILL_PIPELINE_COMPLETED, "%s", r.text);
    rsink_free(sink);
    sink = rsink_new();
    r = flow_case(rill_stage_throttle(100000, 1), sink, FLOW_N);
    cr_assert_eq(r.end, RILL_PIPELINE_COMPLETED, "%s", r.text);
    rsink_free(sink);
    sink = rsink_new();
    r = flow_case(rill_stage_partition_by_key(3, key_mod8, identity_map, NULL), sink, FLOW_N);
    cr_assert_eq(r.end, RILL_PIPELINE_COMPLETED, "%s", r.text);
    cr_assert_eq(r.delivered, FLOW_N);
    rsink_free(sink);
}

/* ---- batch: the batch carries the origins of its elements ---- */

static rill_err_t batch_sink(void *opaque, rill_elem_t *e)
{
    rsink_t *r = opaque;
    long n = atomic_fetch_add_explicit(&r->calls, 1, memory_order_relaxed);
    const rill_batch_t *b = e->payload;
    int fail = r->fail_at >= 0 && n == r->fail_at;
    for (size_t i = 0; !fail && i < b->count; i++) {
        cr_assert_null(b->elems[i].origin, "an element inside a batch kept its origin");
        if (b->elems[i].arg < LEDGER_KEYS)
            r->got[b->elems[i].arg] = 1;
    }
    rill_elem_release(e);
    return fail ? RILL_EIO : RILL_OK;
}

Test(origins_flow, batch_joins_origins, .timeout = 60)
{
    for (int failing = 0; failing <= 1; failing++) {
        rill_system_t *sys = origin_system();
        ledger_t *led = ledger_new(sys, -1);
        osrc_t src;
        osrc_init(&src, led, 95);
        rsink_t *sink = rsink_new();
        sink->fail_at = failing ? 2 : -1; /* the third batch: keys 20..29 */
        rill_pipeline_t *p = rill_pipeline_new(sys, "batched");
        add_ok(p, rill_source_fn(osrc_pull, &src), NULL);
        add_ok(p, rill_stage_batch(10, 0), NULL);
        add_ok(p, rill_sink_foreach(batch_sink, sink), NULL);
        start_ok(p);
        rill_pipeline_result_t r = wait_ok(p, KIT_WAIT_MS);
        cr_assert_eq(r.end, failing ? RILL_PIPELINE_FAILED : RILL_PIPELINE_COMPLETED, "%s", r.text);
        uint64_t made = produced(&src);
        unsigned char expect[95];
        for (uint64_t k = 0; k < made; k++)
            expect[k] = sink->got[k];
        ledger_expect_once(led, made, expect);
        if (failing) {
            for (uint64_t k = 0; k < 30; k++)
                cr_assert_eq(ledger_key(led, k).ok, k < 20, "key %llu", (unsigned long long)k);
        } else {
            cr_assert_eq(made, 95);
            for (uint64_t k = 0; k < 95; k++)
                cr_assert(sink->got[k]);
        }
        rill_pipeline_destroy(p);
        rill_system_destroy(sys);
        ledger_free(led);
        rsink_free(sink);
    }
}

static rill_err_t sum_args(void *opaque, rill_elem_t *acc, rill_elem_t *in)
{
    (void)opaque;
    acc->arg += in->arg;
    rill_elem_release(in);
    return RILL_OK;
}

Test(origins_flow, conflate_with_a_function_carries_everything_absorbed, .timeout = 60)
{
    rill_system_t *sys = origin_system();
    ledger_t *led = ledger_new(sys, 0);
    osrc_t src;
    osrc_init(&src, led, DROP_N);
    /* The sink keeps the aggregates (held at the first until the source
     * is done, so that the rest is conflated): nothing is settled until
     * the test confirms them; then everything absorbed is. */
    stash_t st;
    stash_init(&st);
    kit_gate_t gate;
    kit_gate_init(&gate);
    st.gate = &gate;
    rill_pipeline_t *p = rill_pipeline_new(sys, "summed");
    rill_stage_opts_t on0 = {.executor = RILL_EXECUTOR(0)};
    rill_stage_opts_t on1 = {.executor = RILL_EXECUTOR(1), .mailbox_capacity = SINK_HOLDS + 1};
    add_ok(p, rill_source_fn(osrc_pull, &src), &on0);
    add_ok(p, rill_stage_conflate(sum_args, NULL), &on0);
    add_ok(p, rill_sink_foreach_manual(stash_fn, &st), &on1);
    start_ok(p);
    cr_assert(kit_wait_at_least(&gate.arrived, 1, KIT_WAIT_MS), "the sink got nothing");
    osrc_cond_t done = {&src, DROP_N};
    cr_assert(kit_wait_until(osrc_reached, &done, KIT_WAIT_MS), "the source was not drained");
    kit_gate_open(&gate);
    rill_pipeline_result_t r = wait_ok(p, KIT_WAIT_MS);
    cr_assert_eq(r.end, RILL_PIPELINE_COMPLETED, "%s", r.text);
    cr_assert_eq(produced(&src), DROP_N);
    ledger_fence(led);
    cr_assert_eq(ledger_total(led), 0, "settled before the sink confirmed anything");
    size_t n = stash_count(&st);
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i++) {
        sum += st.v[i].arg;
        rill_elem_confirm(&st.v[i]);
    }
    cr_assert_eq(sum, (uint64_t)DROP_N * (DROP_N - 1) / 2, "the aggregates lost elements");
    ledger_expect_once(led, DROP_N, NULL);
    fprintf(stderr, "conflate: %zu aggregates for %u elements\n", n, DROP_N);
    /* At most: what the held sink took, the elements still in the
     * conflate's mailbox (its window) when the gate opened, and the
     * aggregate. */
    cr_assert_leq(n, 2 * SINK_HOLDS + 1, "%zu aggregates: little was conflated", n);
    rill_pipeline_destroy(p);
    rill_system_destroy(sys);
    stash_fini(&st);
    kit_gate_destroy(&gate);
    ledger_free(led);
}

/* ---- flat_map: every output a reference; no output confirms ---- */

#define FM_N 300u

/* v % 3 outputs: none, one, or two. */
static rill_err_t fan_out(void *opaque, rill_elem_t *in, rill_emitter_t *out)
{
    (void)opaque;
    uint64_t v = in->arg;
    rill_elem_release(in);
    for (uint64_t j = 0; j < v % 3; j++) {
        rill_elem_t e = rill_elem_value(v * 10 + j);
        rill_err_t err = rill_emit(out, &e);
        if (err)
            return err;
    }
    return RILL_OK;
}

Test(origins_flow, flat_map_settles_an_input_once_all_its_outputs_are, .timeout = 60)
{
    rill_system_t *sys = origin_system();
    ledger_t *led = ledger_new(sys, -1);
    osrc_t src;
    osrc_init(&src, led, FM_N);
    stash_t st;
    stash_init(&st);
    rill_pipeline_t *p = rill_pipeline_new(sys, "fanned");
    add_ok(p, rill_source_fn(osrc_pull, &src), NULL);
    add_ok(p, rill_stage_flat_map(fan_out, NULL), NULL);
    add_ok(p, rill_sink_foreach_manual(stash_fn, &st), NULL);
    start_ok(p);
    rill_pipeline_result_t r = wait_ok(p, KIT_WAIT_MS);
    cr_assert_eq(r.end, RILL_PIPELINE_COMPLETED, "%s", r.text);
    size_t outputs = FM_N; /* 0 + 1 + 2 per three inputs */
    cr_assert_eq(stash_count(&st), outputs);

    /* Inputs with no output were confirmed by the stage, and only they. */
    long none = FM_N / 3;
    cr_assert(ledger_wait(led, none, KIT_WAIT_MS));
    ledger_fence(led);
    cr_assert_eq(ledger_total(led), none);
    for (uint64_t k = 0; k < FM_N; k++)
        cr_assert_eq(ledger_key(led, k).ok, k % 3 == 0, "key %llu", (unsigned long long)k);

    /* From this thread, later: confirm every first output. Inputs with one
     * output are settled; those with two still wait for the second. */
    for (size_t i = 0; i < outputs; i++)
        if (st.v[i].arg % 10 == 0)
            rill_elem_confirm(&st.v[i]);
    ledger_fence(led);
    cr_assert_eq(ledger_total(led), 2 * none, "%ld settled", ledger_total(led));
    for (uint64_t k = 0; k < FM_N; k++)
        cr_assert_eq(ledger_key(led, k).ok + ledger_key(led, k).bad, k % 3 != 2,
                     "key %llu settled too early or not at all", (unsigned long long)k);

    /* The second outputs: one released makes its input unconfirmed. */
    for (size_t i = 0; i < outputs; i++) {
        if (st.v[i].arg % 10 != 1)
            continue;
        if ((st.v[i].arg / 10) % 5 == 0)
            rill_elem_release(&st.v[i]);
        else
            rill_elem_confirm(&st.v[i]);
    }
    unsigned char expect[FM_N];
    for (uint64_t k = 0; k < FM_N; k++)
        expect[k] = !(k % 3 == 2 && k % 5 == 0);
    ledger_expect_once(led, FM_N, expect);
    rill_pipeline_destroy(p);
    rill_system_destroy(sys);
    stash_fini(&st);
    ledger_free(led);
}

static rill_err_t fan_fail(void *opaque, rill_elem_t *in, rill_emitter_t *out)
{
    (void)opaque;
    uint64_t v = in->arg;
    if (v == 42) {
        rill_elem_t e = rill_elem_value(1);
        rill_emit(out, &e); /* emitted, then the call fails: released */
        rill_elem_release(in);
        return RILL_EIO;
    }
    return fan_out(opaque, in, out);
}

Test(origins_flow, flat_map_error_leaves_its_input_unconfirmed, .timeout = 60)
{
    rsink_t *sink = rsink_new();
    rill_system_t *sys = origin_system();
    ledger_t *led = ledger_new(sys, -1);
    osrc_t src;
    osrc_init(&src, led, FM_N);
    rill_pipeline_t *p = rill_pipeline_new(sys, "fanned");
    rill_stage_opts_t fo = {.name = "fan"};
    add_ok(p, rill_source_fn(osrc_pull, &src), NULL);
    add_ok(p, rill_stage_flat_map(fan_fail, NULL), &fo);
    add_ok(p, rill_sink_foreach(rsink_fn, sink), NULL);
    start_ok(p);
    rill_pipeline_result_t r = wait_ok(p, KIT_WAIT_MS);
    cr_assert_eq(r.end, RILL_PIPELINE_FAILED, "%s", r.text);
    cr_assert_str_eq(r.stage, "fan");
    cr_assert_eq(r.code, RILL_EIO);
    uint64_t made = produced(&src);
    cr_assert(ledger_wait(led, (long)made, KIT_WAIT_MS), "%ld of %llu settled", ledger_total(led),
              (unsigned long long)made);
    ledger_fence(led);
    for (uint64_t k = 0; k < made; k++) {
        settled_t s = ledger_key(led, k);
        cr_assert_eq(s.ok + s.bad, 1, "key %llu settled %u times", (unsigned long long)k,
                     s.ok + s.bad);
    }
    cr_assert_eq(ledger_key(led, 42).bad, 1, "the failed input was confirmed");
    cr_assert_eq(ledger_total(led), (long)made);
    rill_pipeline_destroy(p);
    rill_system_destroy(sys);
    ledger_free(led);
    rsink_free(sink);
}

/* ---- stateful_map ---- */

typedef struct counter_state {
    uint64_t seen, sum;
} counter_state_t;

typedef struct counter_env {
    atomic_long creates, destroys, completes;
} counter_env_t;

static void *counter_create(void *opaque)
{
    counter_env_t *env = opaque;
    atomic_fetch_add(&env->creates, 1);
    return calloc(1, sizeof(counter_state_t));
}

/* Every tenth input emits the running sum (with the tenth's origin); the
 * nine before it are absorbed into the state and confirmed. */
static rill_err_t counter_fn(void *state, rill_elem_t *in, rill_emitter_t *out)
{
    counter_state_t *s = state;
    s->seen++;
    s->sum += in->arg;
    rill_elem_release(in);
    if (s->seen % 10)
        return RILL_OK;
    rill_elem_t e = rill_elem_value(s->sum);
    return rill_emit(out, &e);
}

static rill_err_t counter_complete(void *state, rill_emitter_t *out)
{
    counter_state_t *s = state;
    rill_elem_t e = rill_elem_value(1000000 + s->seen);
    return rill_emit(out, &e);
}

static void counter_destroy(void *state)
{
    free(state);
}

Test(origins_flow, stateful_map_confirms_absorbed_inputs_and_complete_emits, .timeout = 60)
{
    rill_system_t *sys = origin_system();
    ledger_t *led = ledger_new(sys, -1);
    osrc_t src;
    osrc_init(&src, led, 95);
    stash_t st;
    stash_init(&st);
    counter_env_t env;
    memset(&env, 0, sizeof(env));
    rill_stateful_ops_t ops = {.create = counter_create,
                               .fn = counter_fn,
                               .complete = counter_complete,
                               .destroy = counter_destroy};
    rill_pipeline_t *p = rill_pipeline_new(sys, "counted");
    add_ok(p, rill_source_fn(osrc_pull, &src), NULL);
    add_ok(p, rill_stage_stateful_map(&ops, &env), NULL);
    add_ok(p, rill_sink_foreach_manual(stash_fn, &st), NULL);
    start_ok(p);
    rill_pipeline_result_t r = wait_ok(p, KIT_WAIT_MS);
    cr_assert_eq(r.end, RILL_PIPELINE_COMPLETED, "%s", r.text);
    cr_assert_eq(atomic_load(&env.creates), 1);
    /* Nine sums and complete's count, which carries no origin. */
    cr_assert_eq(stash_count(&st), 10);
    for (size_t i = 0; i < 9; i++)
        cr_assert_not_null(st.v[i].origin, "sum %zu without its input's origin", i);
    cr_assert_eq(st.v[0].arg, 45, "sum of 0..9: %llu", (unsigned long long)st.v[0].arg);
    cr_assert_eq(st.v[8].arg, 89 * 90 / 2, "sum of 0..89");
    cr_assert_eq(st.v[9].arg, 1000000 + 95, "complete saw %llu",
                 (unsigned long long)st.v[9].arg - 1000000);
    cr_assert_null(st.v[9].origin, "complete's output carries an origin");
    /* Absorbed inputs are settled; the tenth of each group waits for the
     * sink's confirmation. */
    cr_assert(ledger_wait(led, 95 - 9, KIT_WAIT_MS));
    ledger_fence(led);
    cr_assert_eq(ledger_total(led), 95 - 9);
    for (size_t i = 0; i < 10; i++)
        rill_elem_confirm(&st.v[i]);
    ledger_expect_once(led, 95, NULL);
    rill_pipeline_destroy(p);
    rill_system_destroy(sys);
    stash_fini(&st);
    ledger_free(led);
}

/* ---- broadcast: confirmed once every copy is ---- */

Test(origins_flow, broadcast_confirms_once_every_copy_is, .timeout = 60)
{
    rill_system_t *sys = origin_system();
    ledger_t *led = ledger_new(sys, -1);
    osrc_t src;
    osrc_init(&src, led, 500);
    stash_t a, b;
    stash_init(&a);
    stash_init(&b);
    rill_aid_t s = spawn_ok(sys, rill_source_fn(osrc_pull, &src), NULL);
    rill_aid_t bc = spawn_ok(sys, rill_stage_broadcast(2, NULL, NULL), NULL);
    rill_aid_t sa = spawn_ok(sys, rill_sink_foreach_manual(stash_fn, &a), NULL);
    rill_aid_t sb = spawn_ok(sys, rill_sink_foreach_manual(stash_fn, &b), NULL);
    cr_assert_eq(rill_stage_connect(sys, s, bc, NULL, 0), RILL_OK);
    cr_assert_eq(rill_stage_connect(sys, bc, sa, NULL, 0), RILL_OK);
    cr_assert_eq(rill_stage_connect(sys, bc, sb, NULL, 0), RILL_OK);
    stash_cond_t ca = {&a, 500}, cb = {&b, 500};
    cr_assert(kit_wait_until(stash_reached, &ca, KIT_WAIT_MS), "branch a got %zu", stash_count(&a));
    cr_assert(kit_wait_until(stash_reached, &cb, KIT_WAIT_MS), "branch b got %zu", stash_count(&b));
    cr_assert(kit_wait_dead(sys, sa, KIT_WAIT_MS) && kit_wait_dead(sys, sb, KIT_WAIT_MS));
    cr_assert(kit_wait_dead(sys, bc, KIT_WAIT_MS) && kit_wait_dead(sys, s, KIT_WAIT_MS));

    ledger_fence(led);
    cr_assert_eq(ledger_total(led), 0);
    for (size_t i = 0; i < 500; i++)
        rill_elem_confirm(&a.v[i]);
    ledger_fence(led);
    cr_assert_eq(ledger_total(led), 0, "settled while branch b still holds every copy");
    unsigned char expect[500];
    for (size_t i = 0; i < 500; i++) {
        uint64_t k = b.v[i].arg;
        cr_assert_eq(k, i);
        expect[k] = k % 7 != 0;
        if (k % 7 == 0)
            rill_elem_release(&b.v[i]);
        else
            rill_elem_confirm(&b.v[i]);
    }
    ledger_expect_once(led, 500, expect);
    rill_system_destroy(sys);
    stash_fini(&a);
    stash_fini(&b);
    ledger_free(led);
}

/* ---- a hand-written subscriber takes elements itself ---- */

typedef struct taker {
    rill_aid_t pub;
    atomic_long nexts;
} taker_t;

static rill_err_t taker_behavior(rill_ctx_t *ctx, void *state, rill_msg_t *msg)
{
    taker_t *t = state;
    rill_system_t *sys = rill_ctx_system(ctx);
    if (msg->type == RILL_STREAM_ON_SUBSCRIBE) {
        rill_stream_request(sys, rill_pub(msg->from), rill_sub(rill_self(ctx)), msg->corr, 100);
    } else if (msg->type == RILL_STREAM_NEXT) {
        /* Even: taken and confirmed. Odd: left in the message, which
         * releases its origin unconfirmed after the handler. */
        if (rill_elem_of(msg).arg % 2 == 0) {
            rill_elem_t e = rill_elem_take(msg);
            rill_elem_confirm(&e);
        }
        atomic_fetch_add(&t->nexts, 1);
    }
    return RILL_OK;
}

Test(origins_flow, an_origin_left_in_a_message_is_released, .timeout = 60)
{
    rill_system_t *sys = origin_system();
    ledger_t *led = ledger_new(sys, -1);
    osrc_t src;
    osrc_init(&src, led, 100);
    taker_t t;
    memset(&t, 0, sizeof(t));
    rill_spawn_opts_t o;
    memset(&o, 0, sizeof(o));
    o.behavior = taker_behavior;
    o.state = &t;
    o.mailbox_capacity = 256;
    rill_aid_t sub;
    cr_assert_eq(rill_spawn(sys, &o, &sub), RILL_OK);
    rill_aid_t s = spawn_ok(sys, rill_source_fn(osrc_pull, &src), NULL);
    cr_assert_eq(rill_stream_subscribe(sys, rill_pub(s), rill_sub(sub), 1), RILL_OK);
    cr_assert(kit_wait_at_least(&t.nexts, 100, KIT_WAIT_MS));
    unsigned char expect[100];
    for (int k = 0; k < 100; k++)
        expect[k] = k % 2 == 0;
    ledger_expect_once(led, 100, expect);
    rill_system_destroy(sys);
    ledger_free(led);
}

/* ------------------------------------------------------------------ */
/* conflate_by_key through a pipeline                                  */
/* ------------------------------------------------------------------ */

/* The latest state of every key arrives, each key's states in order,
 * whatever was dropped while the sink was held. */
Test(origins_flow, conflate_by_key_delivers_the_latest_of_every_key, .timeout = 60)
{
    rill_system_t *sys = origin_system();
    ledger_t *led = ledger_new(sys, 0);
    osrc_t src;
    osrc_init(&src, led, DROP_N);
    rsink_t *sink = rsink_new();
    sink->gated = 1;
    rill_pipeline_t *p = rill_pipeline_new(sys, "latest");
    rill_stage_opts_t on0 = {.executor = RILL_EXECUTOR(0)};
    rill_stage_opts_t on1 = {.executor = RILL_EXECUTOR(1), .mailbox_capacity = SINK_HOLDS + 1};
    add_ok(p, rill_source_fn(osrc_pull, &src), &on0);
    add_ok(p, rill_stage_conflate_by_key(key_mod8, NULL, 16), &on0);
    add_ok(p, rill_sink_foreach(rsink_fn, sink), &on1);
    start_ok(p);
    cr_assert(kit_wait_at_least(&sink->gate.arrived, 1, KIT_WAIT_MS), "the sink got nothing");
    cr_assert(ledger_wait(led, (long)(DROP_N - SINK_HOLDS - 8), KIT_WAIT_MS));
    kit_gate_open(&sink->gate);
    rill_pipeline_result_t r = wait_ok(p, KIT_WAIT_MS);
    cr_assert_eq(r.end, RILL_PIPELINE_COMPLETED, "%s", r.text);
    long n = atomic_load(&sink->handled);
    cr_assert_lt(n, (long)DROP_N / 2, "%ld delivered: little was conflated", n);
    int64_t last[8];
    for (int k = 0; k < 8; k++)
        last[k] = -1;
    for (long i = 0; i < n; i++) {
        uint64_t v = sink->order[i];
        cr_assert_gt((int64_t)v, last[v % 8], "key %llu: %llu after %lld",
                     (unsigned long long)(v % 8), (unsigned long long)v, (long long)last[v % 8]);
        last[v % 8] = (int64_t)v;
    }
    for (int k = 0; k < 8; k++)
        cr_assert_eq(last[k], (int64_t)(DROP_N - 8 + (unsigned)k), "key %d ended at %lld", k,
                     (long long)last[k]);
    ledger_expect_once(led, DROP_N, NULL);
    rill_pipeline_destroy(p);
    rill_system_destroy(sys);
    ledger_free(led);
    rsink_free(sink);
}

/* ------------------------------------------------------------------ */
/* Supervised pipelines                                                */
/* ------------------------------------------------------------------ */

#define SUP_N     600u
#define SUP_EVERY 101

/* A middle stage that fails every SUP_EVERY-th call over all runs, and
 * whose create() marks the start of a run: the source then rewinds to the
 * lowest key not confirmed (as a consumer restarts from its commit). */
typedef struct flaky {
    osrc_t *src;
    atomic_long creates, destroys, calls, failures;
} flaky_t;

typedef struct flaky_state {
    flaky_t *f;
} flaky_state_t;

static void *flaky_create(void *opaque)
{
    flaky_t *f = opaque;
    atomic_fetch_add(&f->creates, 1);
    atomic_store_explicit(&f->src->rewind, 1, memory_order_release);
    flaky_state_t *s = malloc(sizeof(*s));
    if (s)
        s->f = f;
    return s;
}

static rill_err_t flaky_fn(void *state, rill_elem_t *in, rill_emitter_t *out)
{
    flaky_state_t *s = state;
    long n = atomic_fetch_add(&s->f->calls, 1) + 1;
    if (n % SUP_EVERY == 0) {
        atomic_fetch_add(&s->f->failures, 1);
        rill_elem_release(in);
        return RILL_EIO;
    }
    return rill_emit(out, in);
}

static void flaky_destroy(void *state)
{
    flaky_state_t *s = state;
    atomic_fetch_add(&s->f->destroys, 1);
    free(s);
}

Test(origins_supervised, restarts_resume_from_the_confirmed_prefix_and_complete, .timeout = 120)
{
    rill_system_t *sys = origin_system();
    ledger_t *led = ledger_new(sys, -1);
    osrc_t src;
    osrc_init(&src, led, SUP_N);
    flaky_t f;
    memset(&f, 0, sizeof(f));
    f.src = &src;
    rsink_t *sink = rsink_new();
    rill_stateful_ops_t ops = {.create = flaky_create, .fn = flaky_fn, .destroy = flaky_destroy};
    rill_pipeline_t *p = rill_pipeline_new(sys, "resumed");
    rill_stage_opts_t mo = {.name = "flaky"};
    add_ok(p, rill_source_fn(osrc_pull, &src), NULL);
    add_ok(p, rill_stage_stateful_map(&ops, &f), &mo);
    add_ok(p, rill_sink_foreach(rsink_fn, sink), NULL);
    rill_restart_opts_t ro = {
        .max_restarts = 50, .within_ms = 60000, .backoff = {.min_ms = 1, .max_ms = 2}};
    char errstr[200] = "";
    cr_assert_eq(rill_pipeline_start_supervised(p, &ro, errstr, sizeof(errstr)), RILL_OK, "%s",
                 errstr);
    rill_pipeline_result_t r = wait_ok(p, 60000);
    cr_assert_eq(r.end, RILL_PIPELINE_COMPLETED, "end %d: %s: %s", (int)r.end, r.stage, r.text);
    long failures = atomic_load(&f.failures);
    fprintf(stderr, "supervised: %ld failures, %u restarts, %ld calls for %u elements\n", failures,
            r.restarts, atomic_load(&f.calls), SUP_N);
    cr_assert_geq(failures, 2, "the stage failed %ld times: nothing was tested", failures);
    cr_assert_eq((long)r.restarts, failures, "one restart per failure");
    cr_assert_eq(atomic_load(&f.creates), failures + 1, "state made fresh for every run");
    cr_assert_eq(atomic_load(&f.destroys), atomic_load(&f.creates));
    /* At least once: every key reached the sink and was confirmed. */
    cr_assert(ledger_wait(led, (long)produced(&src), KIT_WAIT_MS));
    ledger_fence(led);
    for (uint64_t k = 0; k < SUP_N; k++) {
        cr_assert_geq(atomic_load(&sink->delivered[k]), 1, "key %llu never delivered",
                      (unsigned long long)k);
        cr_assert_geq(ledger_key(led, k).ok, 1, "key %llu never confirmed", (unsigned long long)k);
    }
    cr_assert_eq(ledger_prefix(led, SUP_N), SUP_N);
    cr_assert_geq(r.delivered, SUP_N);
    rill_pipeline_destroy(p);
    rill_system_destroy(sys);
    ledger_free(led);
    rsink_free(sink);
}

static rill_err_t fail_at_ten(void *opaque, rill_elem_t *in, rill_elem_t *out)
{
    atomic_long *calls = opaque;
    atomic_fetch_add(calls, 1);
    if (in->arg == 10)
        return RILL_EIO;
    *out = *in;
    return RILL_OK;
}

Test(origins_supervised, gives_up_when_restarts_run_out_and_names_the_stage, .timeout = 60)
{
    rill_system_t *sys = origin_system();
    atomic_long calls = 0;
    rill_pipeline_t *p = rill_pipeline_new(sys, "doomed");
    rill_stage_opts_t mo = {.name = "always-ten"};
    add_ok(p, rill_source_range(0, 100), NULL);
    add_ok(p, rill_stage_map(fail_at_ten, &calls), &mo);
    add_ok(p, rill_sink_ignore(), NULL);
    rill_restart_opts_t ro = {.max_restarts = 2, .backoff = {.min_ms = 1, .max_ms = 2}};
    char errstr[200] = "";
    cr_assert_eq(rill_pipeline_start_supervised(p, &ro, errstr, sizeof(errstr)), RILL_OK, "%s",
                 errstr);
    rill_pipeline_result_t r = wait_ok(p, KIT_WAIT_MS);
    cr_assert_eq(r.end, RILL_PIPELINE_FAILED, "end %d: %s", (int)r.end, r.text);
    cr_assert_eq(r.code, RILL_EIO, "code %s", rill_err_name(r.code));
    cr_assert_str_eq(r.stage, "always-ten", "stage \"%s\"", r.stage);
    cr_assert_not_null(strstr(r.text, "RILL_EIO"), "text \"%s\"", r.text);
    cr_assert_eq(r.restarts, 2, "%u restarts", r.restarts);
    /* Each run starts the range again: the map saw 0..10 three times. */
    cr_assert_eq(atomic_load(&calls), 3 * 11);
    rill_pipeline_destroy(p);
    rill_system_destroy(sys);
}

static rill_err_t fail_once_at(void *opaque, rill_elem_t *in, rill_elem_t *out)
{
    atomic_int *failed = opaque;
    if (in->arg == 50 && !atomic_exchange(failed, 1))
        return RILL_EIO;
    *out = *in;
    return RILL_OK;
}

typedef struct child_cond {
    rill_system_t *sys;
    rill_aid_t sup;
    rill_child_info_t info;
} child_cond_t;

static int child_ended(void *arg)
{
    child_cond_t *c = arg;
    size_t n = 0;
    if (rill_sup_children(c->sys, c->sup, &c->info, 1, &n) != RILL_OK || n != 1)
        return 0;
    return !c->info.running && !c->info.restarting && c->info.restarts > 0;
}

Test(origins_supervised, pipeline_as_a_child_of_a_user_supervisor, .timeout = 60)
{
    rill_system_t *sys = origin_system();
    atomic_int failed = 0;
    rsink_t *sink = rsink_new();
    rill_pipeline_t *p = rill_pipeline_new(sys, "child-pipe");
    add_ok(p, rill_source_range(0, 200), NULL);
    add_ok(p, rill_stage_map(fail_once_at, &failed), NULL);
    add_ok(p, rill_sink_foreach(rsink_fn, sink), NULL);
    rill_child_spec_t child = RILL_CHILD_PIPELINE("pipe", p);
    rill_sup_spec_t spec = {.strategy = RILL_SUP_ONE_FOR_ONE,
                            .intensity = 3,
                            .period_ms = 5000,
                            .children = &child,
                            .n_children = 1};
    rill_aid_t sup;
    char errstr[200] = "";
    cr_assert_eq(rill_sup_start(sys, &spec, NULL, &sup, errstr, sizeof(errstr)), RILL_OK, "%s",
                 errstr);
    /* It fails once, is restarted, completes, and (transient) stays ended. */
    child_cond_t c;
    memset(&c, 0, sizeof(c));
    c.sys = sys;
    c.sup = sup;
    cr_assert(kit_wait_until(child_ended, &c, KIT_WAIT_MS), "running %d, restarts %u",
              c.info.running, c.info.restarts);
    cr_assert_eq(c.info.restarts, 1);
    cr_assert_eq(c.info.last_exit.kind, RILL_EXIT_NORMAL, "last exit %s: %s",
                 rill_exit_kind_name(c.info.last_exit.kind), c.info.last_exit.text);
    for (uint64_t k = 0; k < 200; k++)
        cr_assert_geq(atomic_load(&sink->delivered[k]), 1, "key %llu", (unsigned long long)k);
    cr_assert(rill_alive(sys, sup), "the supervisor ended with its transient child");
    cr_assert_eq(rill_sup_stop(sys, sup, KIT_WAIT_MS), RILL_OK);
    /* A child's pipeline is not waited for with rill_pipeline_wait. */
    rill_pipeline_result_t r;
    cr_assert_eq(rill_pipeline_wait(p, 0, &r), RILL_ESTATE);
    rill_pipeline_destroy(p);
    rill_system_destroy(sys);
    rsink_free(sink);
}

static int between_runs(void *arg)
{
    return rill_aid_is_none(rill_pipeline_stage(arg, 0));
}

Test(origins_supervised, stop_during_the_backoff_ends_at_once, .timeout = 60)
{
    rill_system_t *sys = origin_system();
    atomic_long calls = 0;
    rill_pipeline_t *p = rill_pipeline_new(sys, "backing-off");
    add_ok(p, rill_source_range(10, 100), NULL);
    add_ok(p, rill_stage_map(fail_at_ten, &calls), NULL);
    add_ok(p, rill_sink_ignore(), NULL);
    /* A long backoff: the stop must not wait for it. */
    rill_restart_opts_t ro = {.max_restarts = 5, .backoff = {.min_ms = 30000, .max_ms = 30000}};
    char errstr[200] = "";
    cr_assert_eq(rill_pipeline_start_supervised(p, &ro, errstr, sizeof(errstr)), RILL_OK, "%s",
                 errstr);
    cr_assert(kit_wait_at_least(&calls, 1, KIT_WAIT_MS));
    cr_assert(kit_wait_until(between_runs, p, KIT_WAIT_MS), "the failed run did not end");
    int64_t t0 = kit_now_ms();
    cr_assert_eq(rill_pipeline_stop(p), RILL_OK);
    rill_pipeline_result_t r = wait_ok(p, 10000);
    int64_t took = kit_now_ms() - t0;
    cr_assert_eq(r.end, RILL_PIPELINE_STOPPED, "end %d: %s", (int)r.end, r.text);
    cr_assert_eq(r.restarts, 0, "%u restarts", r.restarts);
    cr_assert_eq(atomic_load(&calls), 1, "a run started after the stop");
    fprintf(stderr, "stop in backoff: ended in %lld ms\n", (long long)took);
    rill_pipeline_destroy(p);
    rill_system_destroy(sys);
}

static rill_err_t hundred_each(void *opaque, rill_elem_t *in, rill_emitter_t *out)
{
    (void)opaque;
    uint64_t v = in->arg;
    rill_elem_release(in);
    for (uint64_t j = 0; j < 100; j++) {
        rill_elem_t e = rill_elem_value(v * 1000 + j);
        rill_err_t err = rill_emit(out, &e);
        if (err)
            return err;
    }
    return RILL_OK;
}

static rill_err_t record_order(void *opaque, rill_elem_t *e)
{
    stash_t *s = opaque;
    rill_elem_t v = rill_elem_value(e->arg); /* keep the value only */
    rill_elem_release(e);
    return stash_fn(s, &v);
}

/* Many outputs per input: more than the stage's queue holds at once. */
Test(origins_flow, flat_map_with_more_outputs_than_its_window, .timeout = 60)
{
    rill_system_t *sys = origin_system();
    ledger_t *led = ledger_new(sys, -1);
    osrc_t src;
    osrc_init(&src, led, 50);
    stash_t st;
    stash_init(&st);
    rill_pipeline_t *p = rill_pipeline_new(sys, "hundredfold");
    rill_stage_opts_t small = {.mailbox_capacity = 8};
    add_ok(p, rill_source_fn(osrc_pull, &src), NULL);
    add_ok(p, rill_stage_flat_map(hundred_each, NULL), &small);
    add_ok(p, rill_sink_foreach(record_order, &st), &small);
    start_ok(p);
    rill_pipeline_result_t r = wait_ok(p, KIT_WAIT_MS);
    cr_assert_eq(r.end, RILL_PIPELINE_COMPLETED, "%s", r.text);
    cr_assert_eq(stash_count(&st), 5000);
    for (size_t i = 0; i < 5000; i++)
        cr_assert_eq(st.v[i].arg, (i / 100) * 1000 + i % 100, "output %zu: %llu", i,
                     (unsigned long long)st.v[i].arg);
    ledger_expect_once(led, 50, NULL);
    rill_pipeline_destroy(p);
    rill_system_destroy(sys);
    stash_fini(&st);
    ledger_free(led);
}

/* ------------------------------------------------------------------ */
/* Stop with elements in flight                                        */
/* ------------------------------------------------------------------ */

static void stop_in_flight(int supervised)
{
    rill_system_t *sys = origin_system();
    ledger_t *led = ledger_new(sys, -1);
    osrc_t src;
    osrc_init(&src, led, LEDGER_KEYS);
    rsink_t *sink = rsink_new();
    sink->work_us = 200;
    rill_pipeline_t *p = rill_pipeline_new(sys, supervised ? "stopped-sup" : "stopped");
    add_ok(p, rill_source_fn(osrc_pull, &src), NULL);
    add_ok(p, rill_stage_map(identity_map, NULL), NULL);
    add_ok(p, rill_stage_buffer(32, RILL_OVERFLOW_BACKPRESSURE), NULL);
    add_ok(p, rill_sink_foreach(rsink_fn, sink), NULL);
    char errstr[200] = "";
    if (supervised)
        cr_assert_eq(rill_pipeline_start_supervised(p, NULL, errstr, sizeof(errstr)), RILL_OK, "%s",
                     errstr);
    else
        start_ok(p);
    cr_assert(kit_wait_at_least(&sink->handled, 200, KIT_WAIT_MS));
    cr_assert_eq(rill_pipeline_stop(p), RILL_OK);
    rill_pipeline_result_t r = wait_ok(p, KIT_WAIT_MS);
    cr_assert_eq(r.end, RILL_PIPELINE_STOPPED, "end %d: %s", (int)r.end, r.text);
    /* Everything emitted went through: the sink handled it, and its
     * notices were sent before the wait returned. */
    uint64_t made = produced(&src);
    long handled = atomic_load(&sink->handled);
    fprintf(stderr, "stop%s: %llu emitted, %ld handled by the sink\n",
            supervised ? " (supervised)" : "", (unsigned long long)made, handled);
    cr_assert_lt(made, LEDGER_KEYS, "the source was not stopped");
    cr_assert_eq((uint64_t)handled, made, "a stop drains what is in flight");
    ledger_fence(led);
    cr_assert_eq(ledger_total(led), (long)made, "%ld of %llu settled when wait returned",
                 ledger_total(led), (unsigned long long)made);
    ledger_expect_once(led, made, NULL);
    rill_pipeline_destroy(p);
    rill_system_destroy(sys);
    ledger_free(led);
    rsink_free(sink);
}

Test(origins_stop, stop_settles_everything_in_flight_before_wait_returns, .timeout = 60)
{
    stop_in_flight(0);
}

Test(origins_stop, supervised_stop_settles_everything_in_flight, .timeout = 60)
{
    stop_in_flight(1);
}

/* ------------------------------------------------------------------ */
/* The error convention                                                */
/* ------------------------------------------------------------------ */

Test(origins_api, null_arguments_and_element_helpers, .timeout = 60)
{
    rill_system_t *sys = origin_system();
    ledger_t *led = ledger_new(sys, -1);

    /* NULL is a no-op or RILL_EINVAL, never a crash. */
    cr_assert_null(rill_origin_ref(NULL));
    rill_origin_confirm(NULL);
    rill_origin_release(NULL);
    cr_assert_null(rill_msg_take_origin(NULL));
    rill_elem_confirm(NULL);
    rill_elem_release(NULL);
    cr_assert_null(rill_elem_of(NULL).payload);
    cr_assert_null(rill_elem_take(NULL).payload);
    cr_assert_null(rill__origin_new(NULL, led->aid, 1, 1));
    cr_assert_null(rill__origin_new(sys, RILL_AID_NONE, 1, 1));
    rill_elem_t v = rill_elem_value(3);
    cr_assert_null(v.origin);
    cr_assert(rill_elem_is_value(&v));

    /* rill_emit takes the element also on error: its origin is released. */
    rill_elem_t e = origin_elem(led, 0);
    cr_assert_eq(rill_emit(NULL, &e), RILL_EINVAL);
    cr_assert_null(e.origin, "the element was not taken");
    cr_assert_eq(rill_emit(NULL, NULL), RILL_EINVAL);

    /* A message that is not a NEXT gives no element. */
    rill_msg_t m = {.type = RILL_MSG_USER, .payload = RILL_ELEM_VALUE, .arg = 9};
    cr_assert_null(rill_elem_take(&m).payload);

    /* confirm and release settle, and clear the element. */
    e = origin_elem(led, 1);
    rill_elem_confirm(&e);
    cr_assert_null(e.origin);
    cr_assert_null(e.payload);
    e = origin_elem(led, 2);
    rill_elem_release(&e);
    cr_assert_null(e.origin);

    /* References: settled once, after the last; one release decides. */
    rill_origin_t *o = rill__origin_new(sys, led->aid, 3, 3);
    rill_origin_ref(o);
    rill_origin_confirm(o);
    ledger_fence(led);
    cr_assert_eq(ledger_key(led, 3).ok + ledger_key(led, 3).bad, 0, "settled with a ref left");
    rill_origin_confirm(o);
    o = rill__origin_new(sys, led->aid, 4, 4);
    rill_origin_ref(o);
    rill_origin_ref(o);
    rill_origin_confirm(o);
    rill_origin_release(o);
    rill_origin_confirm(o);

    /* A refused NEXT leaves the element, origin included, with the
     * caller. */
    rill_aid_t gone = spawn_ok(sys, rill_sink_ignore(), NULL);
    cr_assert_eq(rill_stop(sys, gone), RILL_OK);
    cr_assert(kit_wait_dead(sys, gone, KIT_WAIT_MS));
    e = origin_elem(led, 5);
    cr_assert_eq(rill_stream_next(sys, rill_sub(gone), rill_pub(led->aid), 1, &e), RILL_ESTOPPED);
    ledger_fence(led);
    cr_assert_eq(ledger_key(led, 5).ok + ledger_key(led, 5).bad, 0, "a refused NEXT settled");
    rill_elem_confirm(&e);

    unsigned char expect[6] = {0, 1, 0, 1, 0, 1};
    ledger_expect_once(led, 6, expect);

    /* A pipeline child needs its pipeline, of the same system. */
    char errstr[160] = "";
    rill_child_env_t env = {.supervisor = led->aid, .name = NULL};
    rill_aid_t child;
    cr_assert_eq(rill_pipeline_child(sys, NULL, &env, &child, errstr, sizeof(errstr)), RILL_EINVAL);
    cr_assert_neq(errstr[0], '\0');
    rill_system_t *other = origin_system();
    rill_pipeline_t *p = rill_pipeline_new(other, NULL);
    add_ok(p, rill_source_range(0, 1), NULL);
    add_ok(p, rill_sink_ignore(), NULL);
    errstr[0] = '\0';
    cr_assert_eq(rill_pipeline_child(sys, p, &env, &child, errstr, sizeof(errstr)), RILL_EINVAL);
    cr_assert_neq(errstr[0], '\0');
    errstr[0] = '\0';
    cr_assert_eq(rill_pipeline_child(other, p, NULL, &child, errstr, sizeof(errstr)), RILL_EINVAL);
    cr_assert_neq(errstr[0], '\0');
    rill_pipeline_destroy(p);
    rill_system_destroy(other);
    rill_system_destroy(sys);
    ledger_free(led);
}
