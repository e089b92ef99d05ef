/*
 * The stream stages' behaviour that users rely on: backpressure end to end
 * (bounded in-flight elements, flat memory), what each overflow strategy
 * drops, conflate, conflate_by_key (latest per key, key order, max_keys),
 * throttle's rate, partition_by_key's per-key order, map_async (ordered,
 * unordered, parallelism), batch (by count, by time), broadcast's pace,
 * merge, drain, stop, failures, and argument checks (API 2: bad specs
 * carry their error; errstr sentences). Origins through the stages are in
 * test_stream_origins.c.
 *
 * Deterministic scenarios drive one stage directly with PROBES: two
 * recorder actors (actor_kit) that stand for its publisher and its
 * subscriber. The test thread speaks for them with the public signal
 * functions (rill_stream_next(sys, rill_sub(stage), rill_pub(pub), ...) is a NEXT from the
 * publisher as far as the stage can tell), so the test decides exactly when
 * elements arrive and when demand exists; the recorders log what the stage
 * sends them. Tests wait on conditions with deadlines, never on sleeps;
 * sleeps appear only inside the system under test, to make a stage slow.
 */
#include <pthread.h>
#include <sched.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "support/rtest.h"

#include "support/actor_kit.h"

#include <rill/stream.h>

/* ------------------------------------------------------------------ */
/* Helpers                                                             */
/* ------------------------------------------------------------------ */

/* A two-executor system for one test; rill_system_destroy ends it. */
static rill_system_t *stage_system(void)
{
    rill_system_t *sys = kit_system(2, 0, 0, 1);
    cr_assert_not_null(sys);
    return sys;
}

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Makes the system under test slow; never used to synchronise the test. */
static void work_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

static uint64_t splitmix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static uint64_t dead_letters(rill_system_t *sys)
{
    rill_system_stats_t s;
    memset(&s, 0, sizeof(s));
    rill_system_stats(sys, &s);
    return s.dead_letters;
}

/* An element owning a counted payload; arg carries the same value. */
static rill_elem_t owned_elem(kit_tally_t *tally, uint64_t v)
{
    rill_elem_t e = {.payload = kit_payload_new(tally, v), .dtor = kit_payload_free, .arg = v};
    return e;
}

static long tally_made(kit_tally_t *t)
{
    return atomic_load_explicit(&t->made, memory_order_acquire);
}

static long tally_released(kit_tally_t *t)
{
    return atomic_load_explicit(&t->released, memory_order_acquire);
}

static long tally_reclaimed(kit_tally_t *t)
{
    return atomic_load_explicit(&t->reclaimed, memory_order_acquire);
}

/* Waits until the pipeline ended; fails the test if it did not in time. */
static rill_pipeline_result_t pipeline_wait_ok(rill_pipeline_t *p, int timeout_ms)
{
    rill_pipeline_result_t r;
    memset(&r, 0, sizeof(r));
    rill_err_t err = rill_pipeline_wait(p, timeout_ms, &r);
    cr_assert_eq(err, RILL_OK, "pipeline did not end in time: %s", rill_err_name(err));
    return r;
}

static rill_pipeline_t *pipeline_start_ok(rill_pipeline_t *p)
{
    char errstr[256] = "";
    rill_err_t err = rill_pipeline_start(p, errstr, sizeof(errstr));
    cr_assert_eq(err, RILL_OK, "start: %s (%s)", rill_err_name(err), errstr);
    return p;
}

static void add_ok(rill_pipeline_t *p, rill_stage_t *s, const rill_stage_opts_t *o)
{
    cr_assert_not_null(s, "constructor returned NULL");
    char why[160] = "";
    cr_assert_eq(rill_stage_error(s, why, sizeof(why)), RILL_OK, "a bad spec: %s", why);
    rill_err_t err = rill_pipeline_add(p, s, o);
    cr_assert_eq(err, RILL_OK, "add: %s", rill_err_name(err));
}

static rill_aid_t spawn_ok(rill_system_t *sys, rill_stage_t *s, const rill_stage_opts_t *o)
{
    cr_assert_not_null(s, "constructor returned NULL");
    rill_aid_t aid = RILL_AID_NONE;
    char errstr[256] = "";
    rill_err_t err = rill_stage_spawn(sys, s, o, &aid, errstr, sizeof(errstr));
    cr_assert_eq(err, RILL_OK, "spawn: %s (%s)", rill_err_name(err), errstr);
    return aid;
}

/* ---- reading probe logs ------------------------------------------- */

/* Sum of arg over the logged events of type (REQUEST: demand asked). */
static int64_t log_sum(kit_log_t *log, uint32_t type)
{
    int64_t sum = 0;
    size_t n = kit_log_size(log);
    for (size_t i = 0; i < n; i++) {
        kit_event_t e = kit_log_at(log, i);
        if (e.type == type)
            sum += (int64_t)e.arg;
    }
    return sum;
}

/* The args of the logged NEXT events, in order; returns how many. */
static size_t log_nexts(kit_log_t *log, uint64_t *out, size_t max)
{
    size_t k = 0, n = kit_log_size(log);
    for (size_t i = 0; i < n; i++) {
        kit_event_t e = kit_log_at(log, i);
        if (e.type == RILL_STREAM_NEXT) {
            if (k < max)
                out[k] = e.arg;
            k++;
        }
    }
    return k;
}

typedef struct sum_cond {
    kit_log_t *log;
    uint32_t type;
    int64_t target;
} sum_cond_t;

static int sum_reached(void *arg)
{
    sum_cond_t *c = arg;
    return log_sum(c->log, c->type) >= c->target;
}

static int log_wait_sum(kit_log_t *log, uint32_t type, int64_t target)
{
    sum_cond_t c = {log, type, target};
    return kit_wait_until(sum_reached, &c, KIT_WAIT_MS);
}

/* ---- the probe rig: publisher probe -> stage -> subscriber probe ---- */

#define SUB_TOKEN   7u
#define FENCE_TOKEN 0xfe11ceull

typedef struct rig {
    rill_system_t *sys;
    kit_log_t *pub_log, *sub_log;
    rill_aid_t pub, sub, stage;
    uint64_t up_token; /* the stage's subscription to the publisher probe */
    int64_t sent;      /* NEXTs the publisher probe sent */
    int64_t demand;    /* REQUESTed by the subscriber probe in all */
    kit_tally_t fence;
    long fences;
} rig_t;

/* Spawns the stage and both probes, subscribes the subscriber probe (no
 * demand yet) and connects the stage to the publisher probe. */
static void rig_open(rig_t *r, rill_stage_t *spec, uint32_t mailbox_capacity)
{
    memset(r, 0, sizeof(*r));
    r->sys = kit_system(2, 0, 0, 1);
    cr_assert_not_null(r->sys);
    r->pub_log = kit_log_new();
    r->sub_log = kit_log_new();
    cr_assert(r->pub_log && r->sub_log);
    r->pub = kit_spawn_recorder(r->sys, r->pub_log, 0);
    r->sub = kit_spawn_recorder(r->sys, r->sub_log, 1);
    cr_assert(!rill_aid_is_none(r->pub) && !rill_aid_is_none(r->sub));
    rill_stage_opts_t o = {.name = NULL, .mailbox_capacity = mailbox_capacity};
    r->stage = spawn_ok(r->sys, spec, &o);

    cr_assert_eq(rill_stream_subscribe(r->sys, rill_pub(r->stage), rill_sub(r->sub), SUB_TOKEN),
                 RILL_OK);
    cr_assert(kit_log_wait_type(r->sub_log, RILL_STREAM_ON_SUBSCRIBE, 1, KIT_WAIT_MS),
              "no ON_SUBSCRIBE for the subscriber probe");

    cr_assert_eq(rill_stage_connect(r->sys, r->pub, r->stage, NULL, 0), RILL_OK);
    cr_assert(kit_log_wait_type(r->pub_log, RILL_STREAM_SUBSCRIBE, 1, KIT_WAIT_MS),
              "the stage never subscribed to the publisher probe");
    kit_event_t sub;
    cr_assert(kit_log_find(r->pub_log, RILL_STREAM_SUBSCRIBE, r->stage, &sub));
    r->up_token = sub.corr;
    cr_assert_eq(
        rill_stream_on_subscribe(r->sys, rill_sub(r->stage), rill_pub(r->pub), r->up_token),
        RILL_OK);
}

/* The publisher probe sends e once the stage has asked for it (rule 1.1). */
static void rig_send(rig_t *r, rill_elem_t e)
{
    cr_assert(log_wait_sum(r->pub_log, RILL_STREAM_REQUEST, r->sent + 1),
              "the stage did not ask for element %lld", (long long)r->sent + 1);
    rill_err_t err =
        rill_stream_next(r->sys, rill_sub(r->stage), rill_pub(r->pub), r->up_token, &e);
    cr_assert_eq(err, RILL_OK, "NEXT: %s", rill_err_name(err));
    r->sent++;
}

static void rig_request(rig_t *r, int64_t n)
{
    cr_assert_eq(rill_stream_request(r->sys, rill_pub(r->stage), rill_sub(r->sub), SUB_TOKEN, n),
                 RILL_OK);
    r->demand += n;
}

/*
 * Returns once the stage has handled everything the publisher probe sent
 * and both probes have logged what the stage sent them. The fence is a
 * NEXT on no subscription of the stage's, which the stage releases when it
 * reaches it: the mailbox is FIFO, so every earlier NEXT was handled. Then a
 * round trip through each probe (control signals are served before the
 * mailbox) makes their logs current.
 */
static void rig_fence(rig_t *r)
{
    rill_elem_t f = owned_elem(&r->fence, 0);
    rill_err_t err;
    int64_t deadline = kit_now_ms() + KIT_WAIT_MS;
    while ((err = rill_stream_next(r->sys, rill_sub(r->stage), rill_pub(r->pub), FENCE_TOKEN,
                                   &f)) == RILL_EFULL &&
           kit_now_ms() < deadline)
        sched_yield();
    cr_assert_eq(err, RILL_OK, "fence: %s", rill_err_name(err));
    r->fences++;
    cr_assert(kit_wait_at_least(&r->fence.released, r->fences, KIT_WAIT_MS),
              "the stage never reached the fence");
    cr_assert_eq(kit_fence(r->sys, r->pub), RILL_OK);
    cr_assert_eq(kit_fence(r->sys, r->sub), RILL_OK);
}

static void rig_close(rig_t *r)
{
    cr_assert(kit_wait_dead(r->sys, r->stage, KIT_WAIT_MS), "the stage did not stop");
    rill_system_destroy(r->sys);
}

/* After rig_close, once the test has read the logs. */
static void rig_free(rig_t *r)
{
    kit_log_free(r->pub_log);
    kit_log_free(r->sub_log);
}

/* ------------------------------------------------------------------ */
/* Backpressure end to end                                             */
/* ------------------------------------------------------------------ */

#define BP_PAYLOAD     1024 /* bytes per element */
#define BP_MAILBOX     64u  /* every stage's mailbox_capacity */
#define BP_BUFFER      16u  /* the buffer stage's size */
#define BP_SINK_US     500  /* per element in the sink: 60,000 elements ~ 35 s */
#define BP_TOTAL       KIT_SCALE(60000)
#define BP_FIRST_PROBE KIT_SCALE(10000)

typedef struct bp_source {
    rill_pool_t *pool;
    atomic_ullong produced;
    atomic_ullong consumed; /* written by the sink */
    atomic_ullong max_in_flight;
} bp_source_t;

/*
 * Sampled at every element the source produces: produced - consumed is
 * exact here, because the sink's consumption that opened the demand for
 * this element happened before it (the demand travelled as messages).
 */
static rill_err_t bp_pull(void *opaque, rill_elem_t *out)
{
    bp_source_t *s = opaque;
    void *block = rill_pool_alloc(s->pool);
    if (!block)
        return RILL_ENOMEM;
    uint64_t n = atomic_load_explicit(&s->produced, memory_order_relaxed) + 1;
    memset(block, (int)(n & 0xff), BP_PAYLOAD);
    out->payload = block;
    out->dtor = rill_pool_free;
    out->arg = n - 1;
    atomic_store_explicit(&s->produced, n, memory_order_release);
    uint64_t c = atomic_load_explicit(&s->consumed, memory_order_acquire);
    uint64_t in_flight = n - c;
    if (in_flight > atomic_load_explicit(&s->max_in_flight, memory_order_relaxed))
        atomic_store_explicit(&s->max_in_flight, in_flight, memory_order_relaxed);
    return RILL_OK;
}

static rill_err_t identity_map(void *opaque, rill_elem_t *in, rill_elem_t *out)
{
    (void)opaque;
    *out = *in; /* the payload moves on */
    memset(in, 0, sizeof(*in));
    return RILL_OK;
}

static rill_err_t bp_sink(void *opaque, rill_elem_t *e)
{
    bp_source_t *s = opaque;
    work_us(BP_SINK_US);
    rill_elem_release(e);
    atomic_fetch_add_explicit(&s->consumed, 1, memory_order_release);
    return RILL_OK;
}

typedef struct consumed_cond {
    bp_source_t *s;
    uint64_t target;
    uint64_t *max_seen;
} consumed_cond_t;

static int consumed_reached(void *arg)
{
    consumed_cond_t *c = arg;
    /* Read produced before consumed: the difference can only be an
     * underestimate, never a false alarm. */
    uint64_t p = atomic_load_explicit(&c->s->produced, memory_order_acquire);
    uint64_t d = atomic_load_explicit(&c->s->consumed, memory_order_acquire);
    if (p > d && p - d > *c->max_seen)
        *c->max_seen = p - d;
    return d >= c->target;
}

Test(pipeline, backpressure_bounds_elements_in_flight_and_memory, .timeout = 180)
{
    rill_system_t *sys = stage_system();
    bp_source_t src;
    memset(&src, 0, sizeof(src));
    src.pool = rill_pool_new(BP_PAYLOAD, 0);
    cr_assert_not_null(src.pool);

    rill_pipeline_t *p = rill_pipeline_new(sys, NULL);
    cr_assert_not_null(p);
    rill_stage_opts_t o = {.name = NULL, .mailbox_capacity = BP_MAILBOX};
    add_ok(p, rill_source_fn(bp_pull, &src), NULL);
    add_ok(p, rill_stage_map(identity_map, NULL), &o);
    add_ok(p, rill_stage_map(identity_map, NULL), &o);
    add_ok(p, rill_stage_buffer(BP_BUFFER, RILL_OVERFLOW_BACKPRESSURE), &o);
    add_ok(p, rill_sink_foreach(bp_sink, &src), &o);

    /*
     * The bound. Per stage, its window (the most it may have requested and
     * not yet received, which is also what its mailbox may hold) is its
     * mailbox capacity rounded up to a power of two, minus 1; add what the
     * stage holds inside:
     *   map:    window + its output queue (sized to the window)
     *   buffer: window + its size
     *   sink:   window + the one element its function is working on
     * plus one element the source may hold if a mailbox refused it.
     */
    uint32_t pow2 = 1;
    while (pow2 < BP_MAILBOX)
        pow2 <<= 1;
    uint64_t window = pow2 - 1;
    uint64_t bound = 2 * (window + window) + (window + BP_BUFFER) + (window + 1) + 1;

    pipeline_start_ok(p);
    uint64_t max_seen = 0;
    consumed_cond_t c1 = {&src, BP_FIRST_PROBE, &max_seen};
    cr_assert(kit_wait_until(consumed_reached, &c1, 120000), "the sink stalled");
    long rss1 = kit_rss_bytes(), heap1 = kit_heap_bytes();
    consumed_cond_t c2 = {&src, BP_TOTAL, &max_seen};
    cr_assert(kit_wait_until(consumed_reached, &c2, 120000), "the sink stalled");
    long rss2 = kit_rss_bytes(), heap2 = kit_heap_bytes();

    cr_assert_eq(rill_pipeline_stop(p), RILL_OK);
    rill_pipeline_result_t r = pipeline_wait_ok(p, KIT_WAIT_MS);
    cr_expect_eq(r.end, RILL_PIPELINE_STOPPED, "end %d", (int)r.end);
    uint64_t produced = atomic_load(&src.produced), consumed = atomic_load(&src.consumed);
    uint64_t max_in_flight = atomic_load(&src.max_in_flight);
    fprintf(stderr,
            "backpressure: produced %llu consumed %llu, max in flight %llu (sampled by the test "
            "%llu), bound %llu; rss %+ld KiB, heap %+ld KiB over %d elements\n",
            (unsigned long long)produced, (unsigned long long)consumed,
            (unsigned long long)max_in_flight, (unsigned long long)max_seen,
            (unsigned long long)bound, (rss2 - rss1) / 1024, (heap2 - heap1) / 1024,
            BP_TOTAL - BP_FIRST_PROBE);
    cr_assert_gt(max_in_flight, window, "the source was never ahead: nothing was measured");
    cr_assert_leq(max_in_flight, bound, "%llu elements in flight, bound %llu",
                  (unsigned long long)max_in_flight, (unsigned long long)bound);
    cr_assert_leq(max_seen, bound);
    cr_assert_leq(produced - consumed, bound);

    /*
     * Memory. Buffering the 50,000 elements between the two readings
     * would cost at least 50,000 x 1 KiB = 49 MiB (payloads alone). The
     * heap the program holds must not grow by more than 1 MiB; the RSS by
     * less than 8 MiB (AddressSanitizer: 24 MiB, its quarantine keeps freed
     * control-signal nodes resident for a while).
     */
    long unbounded = (long)(BP_TOTAL - BP_FIRST_PROBE) * BP_PAYLOAD;
#ifdef __SANITIZE_ADDRESS__
    long rss_limit = 24L << 20;
#else
    long rss_limit = 8L << 20;
#endif
    if (rss_limit > unbounded / 2)
        rss_limit = unbounded / 2; /* scaled-down runs */
    cr_assert_lt(heap2 - heap1, 1L << 20, "heap grew by %ld bytes", heap2 - heap1);
    cr_assert_lt(rss2 - rss1, rss_limit, "RSS grew by %ld bytes", rss2 - rss1);

    rill_pipeline_destroy(p);
    rill_system_destroy(sys);
    rill_pool_destroy(src.pool);
}

/* ------------------------------------------------------------------ */
/* buffer: overflow strategies                                         */
/* ------------------------------------------------------------------ */

/* Mailbox of the buffer under test: it asks the publisher for 15 at once,
 * so 1..10 can arrive while the subscriber has no demand. */
#define OVF_MAILBOX 16u

/* buffer(4, overflow) receives 1..10 with no demand downstream, then the
 * subscriber asks for 10: it must get exactly `expect`, and the elements
 * it does not get must have been released, exactly once, by then. */
static void overflow_case(rill_overflow_t overflow, const uint64_t *expect, size_t n_expect)
{
    rig_t r;
    kit_tally_t tally;
    memset(&tally, 0, sizeof(tally));
    rig_open(&r, rill_stage_buffer(4, overflow), OVF_MAILBOX);
    for (uint64_t v = 1; v <= 10; v++)
        rig_send(&r, owned_elem(&tally, v));
    rig_fence(&r);
    uint64_t got[16];
    cr_assert_eq(log_nexts(r.sub_log, got, 16), 0, "NEXT without demand (rule 1.1)");
    cr_assert_eq(tally_released(&tally), 10 - (long)n_expect, "dropped: %ld released",
                 tally_released(&tally));

    rig_request(&r, 10);
    cr_assert(kit_log_wait_type(r.sub_log, RILL_STREAM_NEXT, n_expect, KIT_WAIT_MS));
    cr_assert_eq(rill_stream_complete(r.sys, rill_sub(r.stage), rill_pub(r.pub), r.up_token),
                 RILL_OK);
    cr_assert(kit_log_wait_type(r.sub_log, RILL_STREAM_COMPLETE, 1, KIT_WAIT_MS),
              "no COMPLETE after the buffer emptied");
    size_t n = log_nexts(r.sub_log, got, 16);
    cr_assert_eq(n, n_expect, "%zu elements delivered", n);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(got[i], expect[i], "element %zu: %llu, expected %llu", i,
                     (unsigned long long)got[i], (unsigned long long)expect[i]);
    kit_event_t last = kit_log_at(r.sub_log, kit_log_size(r.sub_log) - 1);
    cr_assert_eq(last.type, RILL_STREAM_COMPLETE, "COMPLETE is the last signal");
    rig_close(&r);
    cr_assert_eq(tally_made(&tally), 10);
    cr_assert_eq(tally_released(&tally), 10, "every element released exactly once");
    cr_assert_eq(tally_reclaimed(&tally), 0);
    rig_free(&r);
}

Test(stage_buffer, drop_head_keeps_the_newest, .timeout = 60)
{
    const uint64_t expect[] = {7, 8, 9, 10};
    overflow_case(RILL_OVERFLOW_DROP_HEAD, expect, 4);
}

Test(stage_buffer, drop_tail_keeps_the_oldest_and_the_last, .timeout = 60)
{
    /* 5..9 each replace the newest buffered one, then 10 replaces 9. */
    const uint64_t expect[] = {1, 2, 3, 10};
    overflow_case(RILL_OVERFLOW_DROP_TAIL, expect, 4);
}

Test(stage_buffer, drop_buffer_empties_the_buffer_when_full, .timeout = 60)
{
    /* 1..4 fill it; 5 drops them all; 5..8 fill it; 9 drops them; 9, 10. */
    const uint64_t expect[] = {9, 10};
    overflow_case(RILL_OVERFLOW_DROP_BUFFER, expect, 2);
}

Test(stage_buffer, fail_ends_the_stream_with_efull, .timeout = 60)
{
    rig_t r;
    kit_tally_t tally;
    memset(&tally, 0, sizeof(tally));
    rig_open(&r, rill_stage_buffer(4, RILL_OVERFLOW_FAIL), OVF_MAILBOX);
    for (uint64_t v = 1; v <= 5; v++)
        rig_send(&r, owned_elem(&tally, v));
    cr_assert(kit_log_wait_type(r.sub_log, RILL_STREAM_ERROR, 1, KIT_WAIT_MS), "no ERROR");
    kit_event_t err;
    cr_assert(kit_log_find(r.sub_log, RILL_STREAM_ERROR, r.stage, &err));
    cr_assert_eq(err.arg, (uint64_t)RILL_EFULL, "error %s", rill_err_name((rill_err_t)err.arg));
    cr_assert_eq(err.corr, SUB_TOKEN);
    cr_assert(kit_log_wait_type(r.pub_log, RILL_STREAM_CANCEL, 1, KIT_WAIT_MS),
              "the failed buffer did not cancel upstream");
    cr_assert(kit_wait_at_least(&tally.released, 5, KIT_WAIT_MS));
    rig_close(&r);
    uint64_t got[8];
    cr_assert_eq(log_nexts(r.sub_log, got, 8), 0, "no demand, so no NEXT");
    cr_assert_eq(kit_log_count(r.sub_log, RILL_STREAM_ERROR), 1);
    cr_assert_eq(kit_log_count(r.sub_log, RILL_STREAM_COMPLETE), 0);
    cr_assert_eq(tally_released(&tally), 5, "every element released exactly once");
    rig_free(&r);
}

Test(stage_buffer, backpressure_never_drops_nor_asks_beyond_its_size, .timeout = 60)
{
    rig_t r;
    kit_tally_t tally;
    memset(&tally, 0, sizeof(tally));
    const int64_t size = 4;
    /* A big mailbox: the window (63) must not be what limits the demand. */
    rig_open(&r, rill_stage_buffer((size_t)size, RILL_OVERFLOW_BACKPRESSURE), 64);

    /* What was emitted is at most what the subscriber asked for, so
     * "requested upstream - emitted <= size" implies this at all times. */
#define ASSERT_DEMAND_BOUNDED()                                                                    \
    cr_assert_leq(log_sum(r.pub_log, RILL_STREAM_REQUEST), r.demand + size,                        \
                  "asked upstream for more than it can hold")

    /* No demand: it asks for its size, gets it, and asks for nothing more. */
    cr_assert(log_wait_sum(r.pub_log, RILL_STREAM_REQUEST, size));
    ASSERT_DEMAND_BOUNDED();
    for (uint64_t v = 1; v <= 4; v++)
        rig_send(&r, owned_elem(&tally, v));
    rig_fence(&r);
    cr_assert_eq(log_sum(r.pub_log, RILL_STREAM_REQUEST), size);
    cr_assert_eq(tally_released(&tally), 0, "nothing dropped");

    /* Demand 2: two leave, it asks for two more. */
    rig_request(&r, 2);
    cr_assert(kit_log_wait_type(r.sub_log, RILL_STREAM_NEXT, 2, KIT_WAIT_MS));
    cr_assert(log_wait_sum(r.pub_log, RILL_STREAM_REQUEST, 6));
    for (uint64_t v = 5; v <= 6; v++)
        rig_send(&r, owned_elem(&tally, v));
    rig_fence(&r);
    ASSERT_DEMAND_BOUNDED();
    cr_assert_eq(log_sum(r.pub_log, RILL_STREAM_REQUEST), 6);

    /* Plenty of demand: the rest flows through. */
    rig_request(&r, 100);
    for (uint64_t v = 7; v <= 10; v++) {
        rig_send(&r, owned_elem(&tally, v));
        ASSERT_DEMAND_BOUNDED();
    }
    cr_assert_eq(rill_stream_complete(r.sys, rill_sub(r.stage), rill_pub(r.pub), r.up_token),
                 RILL_OK);
    cr_assert(kit_log_wait_type(r.sub_log, RILL_STREAM_COMPLETE, 1, KIT_WAIT_MS));
    rig_close(&r);
    uint64_t got[16];
    cr_assert_eq(log_nexts(r.sub_log, got, 16), 10);
    for (uint64_t i = 0; i < 10; i++)
        cr_assert_eq(got[i], i + 1, "element %llu", (unsigned long long)i);
    cr_assert_eq(tally_released(&tally), 10);
#undef ASSERT_DEMAND_BOUNDED
    rig_free(&r);
}

/* ------------------------------------------------------------------ */
/* conflate                                                            */
/* ------------------------------------------------------------------ */

Test(stage_conflate, keep_latest_delivers_the_newest, .timeout = 60)
{
    rig_t r;
    kit_tally_t tally;
    memset(&tally, 0, sizeof(tally));
    rig_open(&r, rill_stage_conflate(NULL, NULL), 0);
    for (uint64_t v = 1; v <= 100; v++)
        rig_send(&r, owned_elem(&tally, v));
    rig_fence(&r);
    cr_assert_eq(tally_released(&tally), 99, "the 99 older elements released");
    rig_request(&r, 1);
    cr_assert(kit_log_wait_type(r.sub_log, RILL_STREAM_NEXT, 1, KIT_WAIT_MS));
    uint64_t got[4];
    cr_assert_eq(log_nexts(r.sub_log, got, 4), 1);
    cr_assert_eq(got[0], 100, "got %llu", (unsigned long long)got[0]);

    /* It keeps conflating after a delivery. */
    for (uint64_t v = 101; v <= 110; v++)
        rig_send(&r, owned_elem(&tally, v));
    rig_fence(&r);
    rig_request(&r, 5);
    cr_assert(kit_log_wait_type(r.sub_log, RILL_STREAM_NEXT, 2, KIT_WAIT_MS));
    cr_assert_eq(rill_stream_complete(r.sys, rill_sub(r.stage), rill_pub(r.pub), r.up_token),
                 RILL_OK);
    cr_assert(kit_log_wait_type(r.sub_log, RILL_STREAM_COMPLETE, 1, KIT_WAIT_MS));
    rig_close(&r);
    cr_assert_eq(log_nexts(r.sub_log, got, 4), 2);
    cr_assert_eq(got[1], 110, "got %llu", (unsigned long long)got[1]);
    cr_assert_eq(tally_made(&tally), 110);
    cr_assert_eq(tally_released(&tally), 110, "every element released exactly once");
    rig_free(&r);
}

static rill_err_t sum_values(void *opaque, rill_elem_t *acc, rill_elem_t *in)
{
    atomic_long *calls = opaque;
    atomic_fetch_add(calls, 1);
    acc->arg += in->arg;
    rill_elem_release(in);
    return RILL_OK;
}

Test(stage_conflate, combining_function_sums_what_waited, .timeout = 60)
{
    rig_t r;
    atomic_long calls = 0;
    rig_open(&r, rill_stage_conflate(sum_values, &calls), 0);
    for (uint64_t v = 1; v <= 100; v++)
        rig_send(&r, rill_elem_value(v));
    rig_fence(&r);
    rig_request(&r, 1);
    cr_assert(kit_log_wait_type(r.sub_log, RILL_STREAM_NEXT, 1, KIT_WAIT_MS));
    for (uint64_t v = 101; v <= 103; v++)
        rig_send(&r, rill_elem_value(v));
    rig_fence(&r);
    rig_request(&r, 1);
    cr_assert(kit_log_wait_type(r.sub_log, RILL_STREAM_NEXT, 2, KIT_WAIT_MS));
    cr_assert_eq(rill_stream_complete(r.sys, rill_sub(r.stage), rill_pub(r.pub), r.up_token),
                 RILL_OK);
    cr_assert(kit_log_wait_type(r.sub_log, RILL_STREAM_COMPLETE, 1, KIT_WAIT_MS));
    rig_close(&r);
    uint64_t got[4];
    cr_assert_eq(log_nexts(r.sub_log, got, 4), 2);
    cr_assert_eq(got[0], 5050, "sum of 1..100: %llu", (unsigned long long)got[0]);
    cr_assert_eq(got[1], 306, "sum of 101..103: %llu", (unsigned long long)got[1]);
    cr_assert_eq(atomic_load(&calls), 99 + 2);
    rig_free(&r);
}

/* ------------------------------------------------------------------ */
/* conflate_by_key                                                     */
/* ------------------------------------------------------------------ */

/* Elements are key * 1000 + sequence. */
static uint64_t key_thousands(void *opaque, const rill_elem_t *e)
{
    (void)opaque;
    return e->arg / 1000;
}

static void expect_nexts(rig_t *r, const uint64_t *expect, size_t n)
{
    uint64_t got[32];
    size_t k = log_nexts(r->sub_log, got, 32);
    cr_assert_eq(k, n, "%zu elements delivered, expected %zu", k, n);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(got[i], expect[i], "element %zu: %llu, expected %llu", i,
                     (unsigned long long)got[i], (unsigned long long)expect[i]);
}

Test(stage_conflate_by_key, latest_per_key_in_the_order_keys_first_arrived, .timeout = 60)
{
    rig_t r;
    kit_tally_t tally;
    memset(&tally, 0, sizeof(tally));
    rig_open(&r, rill_stage_conflate_by_key(key_thousands, NULL, 0), 0);
    /* No demand: keys 3, 1, 2 wait (in that order), each with its latest. */
    const uint64_t first[] = {3000, 1001, 3002, 2003, 1004, 3005};
    for (size_t i = 0; i < 6; i++)
        rig_send(&r, owned_elem(&tally, first[i]));
    rig_fence(&r);
    cr_assert_eq(kit_log_count(r.sub_log, RILL_STREAM_NEXT), 0, "NEXT without demand (rule 1.1)");
    cr_assert_eq(tally_released(&tally), 3, "the replaced states are dropped at once");

    rig_request(&r, 1);
    cr_assert(kit_log_wait_type(r.sub_log, RILL_STREAM_NEXT, 1, KIT_WAIT_MS));
    /* Key 3 went out: it comes back at the end. Key 1 keeps its place. */
    rig_send(&r, owned_elem(&tally, 3008));
    rig_send(&r, owned_elem(&tally, 1009));
    rig_fence(&r);
    /* The subscriber probe releases what it gets: 3005, and 1004 replaced. */
    cr_assert_eq(tally_released(&tally), 5);
    rig_request(&r, 10);
    cr_assert(kit_log_wait_type(r.sub_log, RILL_STREAM_NEXT, 4, KIT_WAIT_MS));
    /* With demand left, an element goes straight through. */
    rig_send(&r, owned_elem(&tally, 4010));
    cr_assert(kit_log_wait_type(r.sub_log, RILL_STREAM_NEXT, 5, KIT_WAIT_MS));
    cr_assert_eq(rill_stream_complete(r.sys, rill_sub(r.stage), rill_pub(r.pub), r.up_token),
                 RILL_OK);
    cr_assert(kit_log_wait_type(r.sub_log, RILL_STREAM_COMPLETE, 1, KIT_WAIT_MS));
    rig_close(&r);
    const uint64_t expect[] = {3005, 1009, 2003, 3008, 4010};
    expect_nexts(&r, expect, 5);
    cr_assert_eq(tally_made(&tally), 9);
    cr_assert_eq(tally_released(&tally), 9, "every element released exactly once");
    rig_free(&r);
}

Test(stage_conflate_by_key, a_full_table_stops_asking_upstream, .timeout = 60)
{
    rig_t r;
    kit_tally_t tally;
    memset(&tally, 0, sizeof(tally));
    /* max_keys 4, and a window (63) that does not limit it. */
    rig_open(&r, rill_stage_conflate_by_key(key_thousands, NULL, 4), 64);
    cr_assert(log_wait_sum(r.pub_log, RILL_STREAM_REQUEST, 4));
    for (uint64_t k = 0; k < 4; k++)
        rig_send(&r, owned_elem(&tally, k * 1000));
    rig_fence(&r);
    cr_assert_eq(log_sum(r.pub_log, RILL_STREAM_REQUEST), 4,
                 "asked for more than the free slots with 4 keys waiting");

    /* One key out: one slot, one more element asked for. */
    rig_request(&r, 1);
    cr_assert(log_wait_sum(r.pub_log, RILL_STREAM_REQUEST, 5));
    /* A replacement takes no slot: the stage asks again. */
    rig_send(&r, owned_elem(&tally, 1001));
    cr_assert(log_wait_sum(r.pub_log, RILL_STREAM_REQUEST, 6));
    /* A new key takes the slot: nothing more is asked. */
    rig_send(&r, owned_elem(&tally, 4000));
    rig_fence(&r);
    cr_assert_eq(log_sum(r.pub_log, RILL_STREAM_REQUEST), 6);
    cr_assert_eq(tally_released(&tally), 2, "the one delivered and the replaced state");

    rig_request(&r, 10);
    cr_assert(kit_log_wait_type(r.sub_log, RILL_STREAM_NEXT, 5, KIT_WAIT_MS));
    cr_assert(log_wait_sum(r.pub_log, RILL_STREAM_REQUEST, 10), "free slots not asked for");
    cr_assert_eq(rill_stream_complete(r.sys, rill_sub(r.stage), rill_pub(r.pub), r.up_token),
                 RILL_OK);
    cr_assert(kit_log_wait_type(r.sub_log, RILL_STREAM_COMPLETE, 1, KIT_WAIT_MS));
    rig_close(&r);
    const uint64_t expect[] = {0, 1001, 2000, 3000, 4000};
    expect_nexts(&r, expect, 5);
    cr_assert_leq(log_sum(r.pub_log, RILL_STREAM_REQUEST), 10);
    cr_assert_eq(tally_released(&tally), 6, "every element released exactly once");
    rig_free(&r);
}

/* ------------------------------------------------------------------ */
/* throttle                                                            */
/* ------------------------------------------------------------------ */

#define THR_SKIP  500  /* the first burst and the start-up */
#define THR_UNTIL 3500 /* then ~3 s at 1,000/s */

typedef struct stamps {
    int64_t at_us[THR_UNTIL + 1];
    atomic_long count;
} stamps_t;

static rill_err_t stamp_sink(void *opaque, rill_elem_t *e)
{
    stamps_t *s = opaque;
    long n = atomic_load_explicit(&s->count, memory_order_relaxed);
    if (n <= THR_UNTIL)
        s->at_us[n] = now_us();
    atomic_store_explicit(&s->count, n + 1, memory_order_release);
    rill_elem_release(e);
    return RILL_OK;
}

/* Slack for a window's count: the bucket's burst (100), plus what can pile
 * up in the sink's mailbox while a loaded machine holds the sink back and
 * then goes through at once (stamped in a bunch). */
#define THR_SLACK 300

/* The fewest microseconds k + 1 elements may span at 1,000/s. */
static int64_t thr_min_span_us(long k)
{
    return k + 1 > THR_SLACK ? (int64_t)(k + 1 - THR_SLACK) * 1000 : 0;
}

/* A throttle's promise is an upper bound on the rate: a loaded machine can
 * only make it slower. Every window of the run is checked against it; how
 * close to the rate it gets is a measure (printed here), not a test. */
Test(stage_throttle, never_exceeds_its_rate, .timeout = 60)
{
    rill_system_t *sys = stage_system();
    stamps_t *s = calloc(1, sizeof(*s));
    cr_assert_not_null(s);
    rill_pipeline_t *p = rill_pipeline_new(sys, NULL);
    add_ok(p, rill_source_range(0, UINT64_MAX), NULL);
    add_ok(p, rill_stage_throttle(100, 100), NULL);
    add_ok(p, rill_sink_foreach(stamp_sink, s), NULL);
    pipeline_start_ok(p);
    cr_assert(kit_wait_at_least(&s->count, THR_UNTIL + 1, 30000), "only %ld elements",
              atomic_load(&s->count));
    cr_assert_eq(rill_pipeline_stop(p), RILL_OK);
    pipeline_wait_ok(p, KIT_WAIT_MS);
    double secs = (double)(s->at_us[THR_UNTIL] - s->at_us[THR_SKIP]) / 1e6;
    double rate = (double)(THR_UNTIL - THR_SKIP) / secs;
    fprintf(stderr, "throttle: %.1f elements/s over %.2f s\n", rate, secs);
    const long ks[] = {500, 1000, THR_UNTIL - THR_SKIP};
    for (size_t w = 0; w < sizeof(ks) / sizeof(ks[0]); w++) {
        long k = ks[w];
        for (long i = THR_SKIP; i + k <= THR_UNTIL; i++) {
            int64_t span = s->at_us[i + k] - s->at_us[i];
            cr_assert_geq(span, thr_min_span_us(k),
                          "elements %ld..%ld came in %" PRId64 " us: faster than 1,000/s", i, i + k,
                          span);
        }
    }
    rill_pipeline_destroy(p);
    rill_system_destroy(sys);
    free(s);
}

/* ------------------------------------------------------------------ */
/* partition_by_key                                                    */
/* ------------------------------------------------------------------ */

#define PK_N    KIT_SCALE(20000)
#define PK_KEYS 50

typedef struct pk_rig {
    pthread_mutex_t mu;
    pthread_t threads[16];
    int n_threads;
    atomic_long calls;
} pk_rig_t;

static uint64_t key_mod50(void *opaque, const rill_elem_t *e)
{
    (void)opaque;
    return e->arg % PK_KEYS;
}

static rill_err_t pk_work(void *opaque, rill_elem_t *in, rill_elem_t *out)
{
    pk_rig_t *r = opaque;
    pthread_t me = pthread_self();
    pthread_mutex_lock(&r->mu);
    int known = 0;
    for (int i = 0; i < r->n_threads; i++)
        known |= pthread_equal(r->threads[i], me);
    if (!known && r->n_threads < 16)
        r->threads[r->n_threads++] = me;
    pthread_mutex_unlock(&r->mu);
    atomic_fetch_add(&r->calls, 1);
    work_us((long)(splitmix64(in->arg) % 201)); /* 0..200 µs */
    *out = *in;
    return RILL_OK;
}

Test(stage_partition_by_key, keeps_per_key_order_across_parallel_workers, .timeout = 120)
{
    rill_system_t *sys = stage_system();
    pk_rig_t rig;
    memset(&rig, 0, sizeof(rig));
    pthread_mutex_init(&rig.mu, NULL);
    rill_collector_t *c = rill_collector_new();
    cr_assert_not_null(c);
    rill_pipeline_t *p = rill_pipeline_new(sys, NULL);
    add_ok(p, rill_source_range(0, PK_N), NULL);
    add_ok(p, rill_stage_partition_by_key(8, key_mod50, pk_work, &rig), NULL);
    add_ok(p, rill_sink_collect(c), NULL);
    pipeline_start_ok(p);
    rill_pipeline_result_t r = pipeline_wait_ok(p, 100000);
    cr_assert_eq(r.end, RILL_PIPELINE_COMPLETED, "end %d: %s", (int)r.end, r.text);
    cr_assert_eq(r.delivered, (uint64_t)PK_N);

    size_t n = rill_collector_count(c);
    cr_assert_eq(n, (size_t)PK_N, "%zu elements collected", n);
    unsigned char *seen = calloc(PK_N, 1);
    int64_t last[PK_KEYS];
    for (int k = 0; k < PK_KEYS; k++)
        last[k] = -1;
    for (size_t i = 0; i < n; i++) {
        uint64_t v = rill_collector_at(c, i)->arg;
        cr_assert_lt(v, (uint64_t)PK_N);
        cr_assert_eq(seen[v], 0, "element %llu twice", (unsigned long long)v);
        seen[v] = 1;
        int k = (int)(v % PK_KEYS);
        cr_assert_gt((int64_t)v, last[k], "key %d: %llu after %lld", k, (unsigned long long)v,
                     (long long)last[k]);
        last[k] = (int64_t)v;
    }
    cr_assert_eq(atomic_load(&rig.calls), PK_N);
    cr_assert_geq(rig.n_threads, 2, "the worker function ran on %d thread(s)", rig.n_threads);
    free(seen);
    rill_collector_free(c);
    rill_pipeline_destroy(p);
    rill_system_destroy(sys);
    pthread_mutex_destroy(&rig.mu);
}

/* ------------------------------------------------------------------ */
/* map_async                                                           */
/* ------------------------------------------------------------------ */

#define ASYNC_N      KIT_SCALE(2000)
#define ASYNC_MAXPAR 16

/* Jobs are parked by the async function (on the stage's executor) and
 * completed by a separate thread, a group at a time, in reverse order of
 * their start. */
typedef struct async_rig {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    rill_async_job_t *jobs[ASYNC_MAXPAR * 2];
    uint64_t vals[ASYNC_MAXPAR * 2];
    int pending;
    long started;
    uint32_t parallelism;
    int too_many; /* more jobs parked than the parallelism */
    atomic_long running, max_running;
    uint64_t order[ASYNC_N]; /* completion order, by value */
    long completed;
    int stalled;
} async_rig_t;

static rill_err_t park_job(void *opaque, rill_async_job_t *job, rill_elem_t *in)
{
    async_rig_t *a = opaque;
    long run = atomic_fetch_add(&a->running, 1) + 1;
    if (run > atomic_load(&a->max_running))
        atomic_store(&a->max_running, run);
    pthread_mutex_lock(&a->mu);
    if (a->pending < ASYNC_MAXPAR * 2) {
        a->jobs[a->pending] = job;
        a->vals[a->pending] = in->arg;
        a->pending++;
    }
    if ((uint32_t)a->pending > a->parallelism)
        a->too_many = 1;
    a->started++;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
    rill_elem_release(in);
    return RILL_OK;
}

static void *completer(void *arg)
{
    async_rig_t *a = arg;
    int64_t deadline = kit_now_ms() + 60000;
    while (a->completed < ASYNC_N) {
        rill_async_job_t *jobs[ASYNC_MAXPAR * 2];
        uint64_t vals[ASYNC_MAXPAR * 2];
        pthread_mutex_lock(&a->mu);
        while ((uint32_t)a->pending < a->parallelism &&
               !(a->started == ASYNC_N && a->pending > 0)) {
            if (kit_cond_wait_until(&a->cv, &a->mu, deadline) != 0 && kit_now_ms() >= deadline)
                break;
        }
        int n = a->pending;
        memcpy(jobs, a->jobs, sizeof(jobs[0]) * (size_t)n);
        memcpy(vals, a->vals, sizeof(vals[0]) * (size_t)n);
        a->pending = 0;
        pthread_mutex_unlock(&a->mu);
        if (n == 0) {
            a->stalled = 1;
            break;
        }
        for (int i = n - 1; i >= 0; i--) {
            /* Not running any more before the stage can start another. */
            atomic_fetch_sub(&a->running, 1);
            a->order[a->completed++] = vals[i];
            rill_elem_t out = rill_elem_value(vals[i] * 3);
            rill_async_complete(jobs[i], RILL_OK, &out);
        }
    }
    return NULL;
}

static void async_run(int ordered, uint32_t parallelism, async_rig_t *a, rill_collector_t *c)
{
    memset(a, 0, sizeof(*a));
    pthread_mutex_init(&a->mu, NULL);
    kit_cond_init(&a->cv);
    a->parallelism = parallelism;
    rill_system_t *sys = stage_system();
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, completer, a), 0);
    rill_pipeline_t *p = rill_pipeline_new(sys, NULL);
    add_ok(p, rill_source_range(0, ASYNC_N), NULL);
    add_ok(p, rill_stage_map_async(park_job, a, parallelism, ordered), NULL);
    add_ok(p, rill_sink_collect(c), NULL);
    pipeline_start_ok(p);
    rill_pipeline_result_t r = pipeline_wait_ok(p, 60000);
    pthread_join(t, NULL);
    cr_assert_eq(a->stalled, 0, "jobs stopped coming: %ld of %d completed", a->completed, ASYNC_N);
    cr_assert_eq(r.end, RILL_PIPELINE_COMPLETED, "end %d: %s", (int)r.end, r.text);
    cr_assert_eq(rill_collector_count(c), (size_t)ASYNC_N);
    cr_assert_eq(a->too_many, 0, "more jobs at once than the parallelism");
    cr_assert_leq(atomic_load(&a->max_running), (long)parallelism, "%ld jobs ran at once",
                  atomic_load(&a->max_running));
    cr_assert_eq(atomic_load(&a->max_running), (long)parallelism,
                 "the parallelism was never used: at most %ld at once",
                 atomic_load(&a->max_running));
    rill_pipeline_destroy(p);
    rill_system_destroy(sys);
    pthread_cond_destroy(&a->cv);
    pthread_mutex_destroy(&a->mu);
}

Test(stage_map_async, ordered_emits_in_input_order, .timeout = 90)
{
    async_rig_t *a = malloc(sizeof(*a));
    rill_collector_t *c = rill_collector_new();
    cr_assert(a && c);
    async_run(1, 8, a, c);
    long out_of_order = 0;
    for (long i = 1; i < ASYNC_N; i++)
        out_of_order += a->order[i] < a->order[i - 1];
    cr_assert_gt(out_of_order, 0, "the jobs finished in order: nothing was tested");
    for (size_t i = 0; i < (size_t)ASYNC_N; i++)
        cr_assert_eq(rill_collector_at(c, i)->arg, i * 3, "element %zu: %llu", i,
                     (unsigned long long)rill_collector_at(c, i)->arg);
    rill_collector_free(c);
    free(a);
}

Test(stage_map_async, unordered_emits_as_jobs_finish, .timeout = 90)
{
    async_rig_t *a = malloc(sizeof(*a));
    rill_collector_t *c = rill_collector_new();
    cr_assert(a && c);
    async_run(0, 4, a, c);
    int differs_from_input = 0;
    for (size_t i = 0; i < (size_t)ASYNC_N; i++) {
        uint64_t v = rill_collector_at(c, i)->arg;
        cr_assert_eq(v, a->order[i] * 3, "element %zu: %llu, finished %zu-th: %llu", i,
                     (unsigned long long)v, i, (unsigned long long)a->order[i] * 3);
        differs_from_input |= v != i * 3;
    }
    cr_assert(differs_from_input, "came out in input order: nothing was tested");
    rill_collector_free(c);
    free(a);
}

/* ------------------------------------------------------------------ */
/* batch                                                               */
/* ------------------------------------------------------------------ */

Test(stage_batch, groups_by_count, .timeout = 60)
{
    rill_system_t *sys = stage_system();
    rill_collector_t *c = rill_collector_new();
    rill_pipeline_t *p = rill_pipeline_new(sys, NULL);
    add_ok(p, rill_source_range(0, 95), NULL);
    add_ok(p, rill_stage_batch(10, 0), NULL);
    add_ok(p, rill_sink_collect(c), NULL);
    pipeline_start_ok(p);
    rill_pipeline_result_t r = pipeline_wait_ok(p, KIT_WAIT_MS);
    cr_assert_eq(r.end, RILL_PIPELINE_COMPLETED, "%s", r.text);
    cr_assert_eq(rill_collector_count(c), 10, "%zu batches", rill_collector_count(c));
    uint64_t next = 0;
    for (size_t i = 0; i < 10; i++) {
        const rill_elem_t *e = rill_collector_at(c, i);
        const rill_batch_t *b = e->payload;
        cr_assert_not_null(b);
        cr_assert_eq(b->count, i < 9 ? 10u : 5u, "batch %zu holds %zu", i, b->count);
        cr_assert_eq(e->arg, b->count, "arg is the count");
        for (size_t j = 0; j < b->count; j++)
            cr_assert_eq(b->elems[j].arg, next++);
    }
    rill_collector_free(c); /* releases the batches and their elements */
    rill_pipeline_destroy(p);
    rill_system_destroy(sys);
}

#define SLOW_N     12
#define SLOW_EVERY 20000 /* µs between elements */

typedef struct slow_src {
    uint64_t next, end;
} slow_src_t;

static rill_err_t slow_pull(void *opaque, rill_elem_t *out)
{
    slow_src_t *s = opaque;
    if (s->next == s->end)
        return RILL_EOS;
    work_us(SLOW_EVERY);
    *out = rill_elem_value(s->next++);
    return RILL_OK;
}

Test(stage_batch, groups_by_time_when_the_source_is_slow, .timeout = 60)
{
    rill_system_t *sys = stage_system();
    rill_collector_t *c = rill_collector_new();
    slow_src_t src = {0, SLOW_N};
    rill_pipeline_t *p = rill_pipeline_new(sys, NULL);
    /* The source sleeps on executor 0; the batch's timer runs on 1. */
    rill_stage_opts_t on0 = {.name = NULL, .executor = RILL_EXECUTOR(0), .mailbox_capacity = 0};
    rill_stage_opts_t on1 = {.name = NULL, .executor = RILL_EXECUTOR(1), .mailbox_capacity = 0};
    add_ok(p, rill_source_fn(slow_pull, &src), &on0);
    add_ok(p, rill_stage_batch(100, 50), &on1);
    add_ok(p, rill_sink_collect(c), &on1);
    pipeline_start_ok(p);
    rill_pipeline_result_t r = pipeline_wait_ok(p, KIT_WAIT_MS);
    cr_assert_eq(r.end, RILL_PIPELINE_COMPLETED, "%s", r.text);
    size_t n = rill_collector_count(c);
    /* 12 elements 20 ms apart over ~240 ms, sealed every 50 ms: a batch
     * only by count or at completion would be one batch of 12. */
    cr_assert_geq(n, 3, "%zu batch(es)", n);
    uint64_t next = 0;
    for (size_t i = 0; i < n; i++) {
        const rill_batch_t *b = rill_collector_at(c, i)->payload;
        cr_assert_gt(b->count, 0, "an empty batch");
        cr_assert_lt(b->count, SLOW_N, "batch %zu holds %zu", i, b->count);
        for (size_t j = 0; j < b->count; j++)
            cr_assert_eq(b->elems[j].arg, next++);
    }
    cr_assert_eq(next, SLOW_N, "%llu elements in all", (unsigned long long)next);
    rill_collector_free(c);
    rill_pipeline_destroy(p);
    rill_system_destroy(sys);
}

/* ------------------------------------------------------------------ */
/* broadcast                                                           */
/* ------------------------------------------------------------------ */

#define BC_N            KIT_SCALE(2000)
#define BC_MAILBOX      16u /* broadcast: window and queue 15 */
#define BC_SLOW_MAILBOX 8u  /* slow sink: window 7 */
#define BC_SLOW_US      200
#define BC_FAST_MAILBOX 64u

typedef struct bc_src {
    kit_tally_t *tally;
    uint64_t next;
} bc_src_t;

static rill_err_t bc_pull(void *opaque, rill_elem_t *out)
{
    bc_src_t *s = opaque;
    if (s->next == BC_N)
        return RILL_EOS;
    *out = owned_elem(s->tally, s->next++);
    return RILL_OK;
}

static rill_err_t copy_payload(void *opaque, const rill_elem_t *in, rill_elem_t *copy)
{
    *copy = owned_elem(opaque, kit_payload_value(in->payload));
    return copy->payload ? RILL_OK : RILL_ENOMEM;
}

typedef struct branch {
    uint64_t values[BC_N];
    atomic_long count;
    atomic_long *other; /* fast branch: the slow one's count */
    long max_lead;
    int slow;
    int bad_payload;
} branch_t;

static rill_err_t branch_sink(void *opaque, rill_elem_t *e)
{
    branch_t *b = opaque;
    long n = atomic_load_explicit(&b->count, memory_order_relaxed);
    if (n < BC_N)
        b->values[n] = e->arg;
    if (kit_payload_value(e->payload) != e->arg)
        b->bad_payload = 1;
    if (b->other) {
        long lead = n + 1 - atomic_load_explicit(b->other, memory_order_acquire);
        if (lead > b->max_lead)
            b->max_lead = lead;
    }
    atomic_store_explicit(&b->count, n + 1, memory_order_release);
    if (b->slow)
        work_us(BC_SLOW_US);
    rill_elem_release(e);
    return RILL_OK;
}

Test(stage_broadcast, moves_at_the_pace_of_the_slowest_branch, .timeout = 60)
{
    rill_system_t *sys = stage_system();
    kit_tally_t tally;
    memset(&tally, 0, sizeof(tally));
    bc_src_t src = {&tally, 0};
    branch_t *fast = calloc(1, sizeof(*fast)), *slow = calloc(1, sizeof(*slow));
    cr_assert(fast && slow);
    slow->slow = 1;
    fast->other = &slow->count;

    rill_stage_opts_t ob = {
        .name = "bcast", .executor = RILL_EXECUTOR(0), .mailbox_capacity = BC_MAILBOX};
    rill_stage_opts_t of = {
        .name = "fast", .executor = RILL_EXECUTOR(0), .mailbox_capacity = BC_FAST_MAILBOX};
    rill_stage_opts_t os = {
        .name = "slow", .executor = RILL_EXECUTOR(1), .mailbox_capacity = BC_SLOW_MAILBOX};
    rill_aid_t s = spawn_ok(sys, rill_source_fn(bc_pull, &src), NULL);
    rill_aid_t b = spawn_ok(sys, rill_stage_broadcast(2, copy_payload, &tally), &ob);
    rill_aid_t f = spawn_ok(sys, rill_sink_foreach(branch_sink, fast), &of);
    rill_aid_t w = spawn_ok(sys, rill_sink_foreach(branch_sink, slow), &os);
    cr_assert_eq(rill_stage_connect(sys, s, b, NULL, 0), RILL_OK);
    cr_assert_eq(rill_stage_connect(sys, b, f, NULL, 0), RILL_OK);
    cr_assert_eq(rill_stage_connect(sys, b, w, NULL, 0), RILL_OK);

    cr_assert(kit_wait_at_least(&slow->count, BC_N, 60000), "slow branch got %ld",
              atomic_load(&slow->count));
    cr_assert(kit_wait_at_least(&fast->count, BC_N, KIT_WAIT_MS));
    cr_assert(kit_wait_dead(sys, f, KIT_WAIT_MS) && kit_wait_dead(sys, w, KIT_WAIT_MS),
              "the sinks did not complete");
    cr_assert(kit_wait_dead(sys, b, KIT_WAIT_MS) && kit_wait_dead(sys, s, KIT_WAIT_MS));
    cr_assert_eq(atomic_load(&fast->count), BC_N);
    cr_assert_eq(atomic_load(&slow->count), BC_N);
    for (uint64_t i = 0; i < (uint64_t)BC_N; i++) {
        cr_assert_eq(fast->values[i], i, "fast branch, element %llu", (unsigned long long)i);
        cr_assert_eq(slow->values[i], i, "slow branch, element %llu", (unsigned long long)i);
    }
    cr_assert_eq(fast->bad_payload + slow->bad_payload, 0, "a copy carried the wrong payload");
    /* The fast branch gets an element when the slow one does: it can be
     * ahead by what the slow branch was sent and has not taken (its window)
     * and, at most, what the broadcast holds. */
    long bound = (long)(BC_SLOW_MAILBOX - 1) + (long)(BC_MAILBOX - 1);
    fprintf(stderr, "broadcast: fast branch at most %ld ahead (bound %ld)\n", fast->max_lead,
            bound);
    cr_assert_leq(fast->max_lead, bound, "the fast branch ran %ld ahead", fast->max_lead);
    cr_assert(kit_wait_at_least(&tally.released, 2L * BC_N, KIT_WAIT_MS));
    rill_system_destroy(sys);
    cr_assert_eq(tally_made(&tally), 2L * BC_N, "one original and one copy per element");
    cr_assert_eq(tally_released(&tally), 2L * BC_N);
    free(fast);
    free(slow);
}

/* ------------------------------------------------------------------ */
/* merge                                                               */
/* ------------------------------------------------------------------ */

static void monitor_target(rill_ctx_t *ctx, void *arg)
{
    rill_monitor(ctx, *(rill_aid_t *)arg, NULL);
}

Test(stage_merge, delivers_everything_and_completes_after_the_last_input, .timeout = 60)
{
    rill_system_t *sys = stage_system();
    kit_log_t *log = kit_log_new();
    rill_aid_t watcher = kit_spawn_recorder(sys, log, 0);
    rill_collector_t *c = rill_collector_new();
    /* The third input is slow: it ends long after the other two. */
    slow_src_t slow = {20000, 20000 + 30};
    rill_aid_t in[3];
    in[0] = spawn_ok(sys, rill_source_range(0, 1000), NULL);
    in[1] = spawn_ok(sys, rill_source_range(10000, 1000), NULL);
    rill_stage_opts_t on0 = {.name = NULL, .executor = RILL_EXECUTOR(0), .mailbox_capacity = 0};
    in[2] = spawn_ok(sys, rill_source_fn(slow_pull, &slow), &on0);
    rill_aid_t m = spawn_ok(sys, rill_stage_merge(3), NULL);
    rill_aid_t sink = spawn_ok(sys, rill_sink_collect(c), NULL);
    cr_assert_eq(kit_run_in(sys, watcher, monitor_target, &sink), RILL_OK);
    cr_assert_eq(kit_run_in(sys, watcher, monitor_target, &m), RILL_OK);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(rill_stage_connect(sys, in[i], m, NULL, 0), RILL_OK);
    cr_assert_eq(rill_stage_connect(sys, m, sink, NULL, 0), RILL_OK);

    cr_assert(kit_log_wait_type(log, RILL_MSG_DOWN, 2, 30000), "merge or sink did not end");
    kit_event_t down;
    cr_assert(kit_log_find(log, RILL_MSG_DOWN, sink, &down));
    cr_assert_eq(down.down.reason.kind, RILL_EXIT_NORMAL, "sink ended %s: %s",
                 rill_exit_kind_name(down.down.reason.kind), down.down.reason.text);
    cr_assert(kit_log_find(log, RILL_MSG_DOWN, m, &down));
    cr_assert_eq(down.down.reason.kind, RILL_EXIT_NORMAL, "merge ended %s: %s",
                 rill_exit_kind_name(down.down.reason.kind), down.down.reason.text);

    size_t n = rill_collector_count(c);
    cr_assert_eq(n, 2030, "%zu elements", n);
    uint64_t next[3] = {0, 10000, 20000};
    for (size_t i = 0; i < n; i++) {
        uint64_t v = rill_collector_at(c, i)->arg;
        int src = v >= 20000 ? 2 : v >= 10000 ? 1 : 0;
        cr_assert_eq(v, next[src], "input %d: %llu, expected %llu", src, (unsigned long long)v,
                     (unsigned long long)next[src]);
        next[src]++;
    }
    cr_assert_eq(next[0], 1000);
    cr_assert_eq(next[1], 11000);
    cr_assert_eq(next[2], 20030);
    rill_system_destroy(sys);
    rill_collector_free(c);
    kit_log_free(log);
}

/* ------------------------------------------------------------------ */
/* Pipelines: drain, stop, failure                                     */
/* ------------------------------------------------------------------ */

typedef struct endless {
    kit_tally_t tally;
    atomic_ullong produced;
} endless_t;

static rill_err_t endless_pull(void *opaque, rill_elem_t *out)
{
    endless_t *s = opaque;
    uint64_t n = atomic_load_explicit(&s->produced, memory_order_relaxed);
    *out = owned_elem(&s->tally, n);
    if (!out->payload)
        return RILL_ENOMEM;
    atomic_store_explicit(&s->produced, n + 1, memory_order_release);
    return RILL_OK;
}

#define REC_MAX 200000

typedef struct recorder_sink {
    uint64_t values[REC_MAX];
    atomic_long count;
    atomic_long released_here; /* elements the sink released */
    long work_us;
    int overflow;
} recorder_sink_t;

static rill_err_t record_sink(void *opaque, rill_elem_t *e)
{
    recorder_sink_t *r = opaque;
    long n = atomic_load_explicit(&r->count, memory_order_relaxed);
    if (n < REC_MAX)
        r->values[n] = kit_payload_value(e->payload);
    else
        r->overflow = 1;
    if (r->work_us)
        work_us(r->work_us);
    rill_elem_release(e);
    atomic_fetch_add(&r->released_here, 1);
    atomic_store_explicit(&r->count, n + 1, memory_order_release);
    return RILL_OK;
}

Test(pipeline, drain_completes_with_nothing_lost, .timeout = 60)
{
    rill_system_t *sys = stage_system();
    endless_t *src = calloc(1, sizeof(*src));
    recorder_sink_t *sink = calloc(1, sizeof(*sink));
    cr_assert(src && sink);
    sink->work_us = 100;
    rill_pipeline_t *p = rill_pipeline_new(sys, NULL);
    add_ok(p, rill_source_fn(endless_pull, src), NULL);
    add_ok(p, rill_stage_map(identity_map, NULL), NULL);
    add_ok(p, rill_sink_foreach(record_sink, sink), NULL);
    pipeline_start_ok(p);
    cr_assert(kit_wait_at_least(&sink->count, 300, KIT_WAIT_MS));
    uint64_t dl_before = dead_letters(sys);
    cr_assert_eq(rill_pipeline_drain(p), RILL_OK);
    rill_pipeline_result_t r = pipeline_wait_ok(p, KIT_WAIT_MS);
    cr_assert_eq(r.end, RILL_PIPELINE_COMPLETED, "end %d: %s", (int)r.end, r.text);
    long n = atomic_load(&sink->count);
    uint64_t produced = atomic_load(&src->produced);
    cr_assert_eq(sink->overflow, 0);
    cr_assert_eq((uint64_t)n, produced, "produced %llu, delivered %ld",
                 (unsigned long long)produced, n);
    cr_assert_eq(r.delivered, produced);
    for (long i = 0; i < n; i++)
        cr_assert_eq(sink->values[i], (uint64_t)i, "position %ld: %llu", i,
                     (unsigned long long)sink->values[i]);
    /* Dead letters also count demand signals that reached a stage after it
     * ended (a REQUEST queued at the source when it completed), so the
     * elements are counted directly: every one was released by the sink,
     * none by rill as a dead letter or a drop. */
    fprintf(stderr, "drain: %ld delivered, dead letters %+lld\n", n,
            (long long)(dead_letters(sys) - dl_before));
    cr_assert_eq(tally_released(&src->tally), (long)produced);
    cr_assert_eq(atomic_load(&sink->released_here), n, "elements released outside the sink");
    rill_pipeline_destroy(p);
    rill_system_destroy(sys);
    cr_assert_eq(tally_made(&src->tally), (long)produced);
    cr_assert_eq(tally_released(&src->tally), (long)produced, "released exactly once");
    free(src);
    free(sink);
}

/* API 2: a stop drains (the source stops, what is in flight is processed),
 * within the stop budget. API 1's stop cancelled and released what was in
 * flight. */
Test(pipeline, stop_drains_within_a_deadline_and_releases_everything, .timeout = 60)
{
    rill_system_t *sys = stage_system();
    endless_t *src = calloc(1, sizeof(*src));
    recorder_sink_t *sink = calloc(1, sizeof(*sink));
    cr_assert(src && sink);
    sink->work_us = 200;
    rill_pipeline_t *p = rill_pipeline_new(sys, NULL);
    add_ok(p, rill_source_fn(endless_pull, src), NULL);
    add_ok(p, rill_stage_map(identity_map, NULL), NULL);
    add_ok(p, rill_stage_buffer(32, RILL_OVERFLOW_BACKPRESSURE), NULL);
    add_ok(p, rill_sink_foreach(record_sink, sink), NULL);
    pipeline_start_ok(p);
    cr_assert(kit_wait_at_least(&sink->count, 200, KIT_WAIT_MS));
    rill_aid_t aids[4];
    for (int i = 0; i < 4; i++) {
        aids[i] = rill_pipeline_stage(p, i);
        cr_assert(!rill_aid_is_none(aids[i]));
    }
    cr_assert(rill_aid_is_none(rill_pipeline_stage(p, 4)));

    int64_t t0 = kit_now_ms();
    cr_assert_eq(rill_pipeline_stop(p), RILL_OK);
    rill_pipeline_result_t r;
    /* The deadline is the run's stop budget (5 s): a drain that overran it
     * would have been made hard, and the elements in flight released
     * instead of delivered (checked below). How long the stop took is a
     * measure, not a test: the wait is only a backstop. */
    rill_err_t err = rill_pipeline_wait(p, KIT_WAIT_MS, &r);
    int64_t took = kit_now_ms() - t0;
    cr_assert_eq(err, RILL_OK, "not stopped: %s", rill_err_name(err));
    cr_assert_eq(r.end, RILL_PIPELINE_STOPPED, "end %d: %s", (int)r.end, r.text);
    fprintf(stderr, "stop: ended in %lld ms\n", (long long)took);
    /* A stage reports its end from its terminate hook; rill_alive() turns 0
     * once that hook has returned, just after. */
    for (int i = 0; i < 4; i++)
        cr_assert(kit_wait_dead(sys, aids[i], KIT_WAIT_MS), "stage %d still alive", i);
    /* The elements in flight went through to the sink, which released
     * them: nothing was left to release elsewhere. */
    long made = tally_made(&src->tally);
    cr_assert(kit_wait_at_least(&src->tally.released, made, KIT_WAIT_MS), "made %ld, released %ld",
              made, tally_released(&src->tally));
    cr_assert_eq(tally_made(&src->tally), made, "the source went on after the stop");
    cr_assert_eq(atomic_load(&sink->count), made, "the stop did not drain: %ld of %ld delivered",
                 atomic_load(&sink->count), made);
    cr_assert_eq(atomic_load(&sink->released_here), made);
    cr_assert_eq(r.delivered, (uint64_t)made);
    for (long i = 0; i < made; i++)
        cr_assert_eq(sink->values[i], (uint64_t)i, "position %ld", i);
    rill_pipeline_destroy(p);
    rill_system_destroy(sys);
    cr_assert_eq(tally_released(&src->tally), made, "released exactly once");
    cr_assert_eq(tally_reclaimed(&src->tally), 0);
    free(src);
    free(sink);
}

/* The map's inputs, in order: the test checks it stopped at the failure. */
typedef struct fail_log {
    atomic_long calls;
    uint64_t seen[16];
} fail_log_t;

static rill_err_t fail_at_five(void *opaque, rill_elem_t *in, rill_elem_t *out)
{
    fail_log_t *l = opaque;
    long i = atomic_fetch_add(&l->calls, 1);
    if (i < 16)
        l->seen[i] = in->arg;
    if (in->arg == 5) {
        rill_elem_release(in); /* a failing map function still owns its input */
        return RILL_EIO;
    }
    *out = *in;
    return RILL_OK;
}

Test(pipeline, failing_map_fails_the_pipeline_with_the_stage_name, .timeout = 60)
{
    rill_system_t *sys = stage_system();
    endless_t *src = calloc(1, sizeof(*src));
    fail_log_t *log = calloc(1, sizeof(*log));
    cr_assert(src && log);
    rill_collector_t *c = rill_collector_new();
    rill_pipeline_t *p = rill_pipeline_new(sys, NULL);
    rill_stage_opts_t named = {.name = "boom", .mailbox_capacity = 0};
    add_ok(p, rill_source_fn(endless_pull, src), NULL);
    add_ok(p, rill_stage_map(fail_at_five, log), &named);
    add_ok(p, rill_sink_collect(c), NULL);
    pipeline_start_ok(p);
    rill_pipeline_result_t r = pipeline_wait_ok(p, KIT_WAIT_MS);
    cr_assert_eq(r.end, RILL_PIPELINE_FAILED, "end %d", (int)r.end);
    cr_assert_eq(r.code, RILL_EIO, "code %s", rill_err_name(r.code));
    cr_assert_str_eq(r.stage, "boom", "stage \"%s\"", r.stage);
    cr_assert_neq(r.text[0], '\0', "a sentence says what happened");
    /* The map saw 0..5 in order and nothing after the failure. */
    cr_assert_eq(atomic_load(&log->calls), 6, "the map was called %ld times",
                 atomic_load(&log->calls));
    for (uint64_t i = 0; i < 6; i++)
        cr_assert_eq(log->seen[i], i);
    /* The map queues what it made ahead of the sink's demand, so any
     * prefix of 0..4 may have reached the sink when 5 failed; the rest was
     * released by the failure. Each of them is in exactly one of the two
     * places, and nothing the source made is lost or released twice. */
    size_t n = rill_collector_count(c);
    cr_assert_leq(n, 5, "%zu elements got past the failure", n);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(rill_collector_at(c, i)->arg, i);
    cr_assert_eq(r.delivered, n);
    rill_pipeline_destroy(p);
    rill_system_destroy(sys);
    long made = tally_made(&src->tally);
    cr_assert_geq(made, 6);
    cr_assert_eq(tally_released(&src->tally), made - (long)n,
                 "made %ld, %zu at the sink, %ld released", made, n, tally_released(&src->tally));
    rill_collector_free(c);
    cr_assert_eq(tally_released(&src->tally), made, "released exactly once");
    cr_assert_eq(tally_reclaimed(&src->tally), 0);
    free(src);
    free(log);
}

/* A map whose function holds its first element at a gate, then fails. */
static rill_err_t gated_failure(void *opaque, rill_elem_t *in, rill_elem_t *out)
{
    (void)out;
    kit_gate_pass(opaque, KIT_WAIT_MS);
    rill_elem_release(in);
    return RILL_EIO;
}

typedef struct processed_cond {
    rill_system_t *sys;
    rill_aid_t aid;
    uint64_t n;
} processed_cond_t;

static int processed_reached(void *arg)
{
    processed_cond_t *c = arg;
    rill_actor_stats_t st;
    return rill_actor_stats(c->sys, c->aid, &st) == RILL_OK && st.processed >= c->n;
}

/*
 * A stage subscribes to a publisher that is failing at that very moment:
 * its SUBSCRIBE reaches the publisher's queue while the publisher handles
 * the element it fails on, and the publisher stops without answering.
 * The subscriber must still end (upstream is gone) rather than wait for
 * an ON_SUBSCRIBE that never comes (in a pipeline: until the stop
 * backstop, 5 s later).
 */
Test(pipeline, a_subscription_to_a_publisher_that_dies_meanwhile_ends_the_subscriber, .timeout = 60)
{
    rill_system_t *sys = stage_system();
    kit_gate_t gate;
    kit_gate_init(&gate);
    rill_stage_opts_t on0 = {.executor = RILL_EXECUTOR(0)};
    rill_stage_opts_t on1 = {.executor = RILL_EXECUTOR(1)};
    rill_aid_t src = spawn_ok(sys, rill_source_range(0, 10), &on0);
    rill_aid_t map = spawn_ok(sys, rill_stage_map(gated_failure, &gate), &on0);
    rill_aid_t sink = spawn_ok(sys, rill_sink_ignore(), &on1);
    cr_assert_eq(rill_stage_connect(sys, src, map, NULL, 0), RILL_OK);
    cr_assert(kit_wait_at_least(&gate.arrived, 1, KIT_WAIT_MS), "the map got no element");
    /* The map is inside its function: the sink's SUBSCRIBE waits in its
     * queue once the sink handled the CONNECT. */
    cr_assert_eq(rill_stage_connect(sys, map, sink, NULL, 0), RILL_OK);
    processed_cond_t c = {sys, sink, 1};
    cr_assert(kit_wait_until(processed_reached, &c, KIT_WAIT_MS), "the sink did not connect");
    kit_gate_open(&gate);
    cr_assert(kit_wait_dead(sys, map, KIT_WAIT_MS), "the failed map lives on");
    cr_assert(kit_wait_dead(sys, sink, KIT_WAIT_MS),
              "the sink waits forever for an answer from a publisher that is gone");
    cr_assert(kit_wait_dead(sys, src, KIT_WAIT_MS));
    rill_system_destroy(sys);
    kit_gate_destroy(&gate);
}

/* ------------------------------------------------------------------ */
/* Invalid arguments                                                   */
/* ------------------------------------------------------------------ */

static rill_err_t never_pull(void *opaque, rill_elem_t *out)
{
    (void)opaque;
    (void)out;
    return RILL_EOS;
}

static int keep_all(void *opaque, const rill_elem_t *e)
{
    (void)opaque;
    (void)e;
    return 1;
}

static rill_err_t drop_all(void *opaque, rill_elem_t *e)
{
    (void)opaque;
    rill_elem_release(e);
    return RILL_OK;
}

static rill_err_t no_async(void *opaque, rill_async_job_t *job, rill_elem_t *in)
{
    (void)opaque;
    (void)job;
    (void)in;
    return RILL_EIO;
}

/* A spec made from bad arguments: never NULL, carries RILL_EINVAL and a
 * sentence that names its stage kind; freeing it unused leaks nothing. */
static void expect_bad_spec(rill_stage_t *s, const char *kind, int line)
{
    cr_assert_not_null(s, "line %d: a constructor returned NULL", line);
    char why[160] = "";
    rill_err_t err = rill_stage_error(s, why, sizeof(why));
    cr_assert_eq(err, RILL_EINVAL, "line %d: %s", line, rill_err_name(err));
    cr_assert_not_null(strstr(why, kind), "line %d: \"%s\" does not name %s", line, why, kind);
    rill_stage_free(s);
}
#define EXPECT_BAD(spec, kind) expect_bad_spec((spec), (kind), __LINE__)

static rill_err_t no_flat(void *opaque, rill_elem_t *in, rill_emitter_t *out)
{
    (void)opaque;
    (void)out;
    rill_elem_release(in);
    return RILL_OK;
}

static void *no_state(void *opaque)
{
    return opaque;
}

static rill_err_t no_step(void *state, rill_elem_t *in, rill_emitter_t *out)
{
    (void)state;
    (void)out;
    rill_elem_release(in);
    return RILL_OK;
}

Test(stage_args, constructors_reject_invalid_arguments, .timeout = 60)
{
    /* API 2: constructors never return NULL; a bad spec carries its error,
     * with a sentence naming the stage. */
    EXPECT_BAD(rill_source_fn(NULL, NULL), "source");
    EXPECT_BAD(rill_source_failed(RILL_OK, "not an error"), "failed-source");
    EXPECT_BAD(rill_stage_map(NULL, NULL), "map");
    EXPECT_BAD(rill_stage_filter(NULL, NULL), "filter");
    EXPECT_BAD(rill_stage_flat_map(NULL, NULL), "flat_map");
    EXPECT_BAD(rill_stage_stateful_map(NULL, NULL), "stateful_map");
    rill_stateful_ops_t no_create = {.create = NULL, .fn = no_step};
    EXPECT_BAD(rill_stage_stateful_map(&no_create, NULL), "stateful_map");
    rill_stateful_ops_t no_fn = {.create = no_state, .fn = NULL};
    EXPECT_BAD(rill_stage_stateful_map(&no_fn, NULL), "stateful_map");
    EXPECT_BAD(rill_stage_map_async(NULL, NULL, 4, 1), "map_async");
    EXPECT_BAD(rill_stage_map_async(no_async, NULL, 0, 1), "map_async");
    EXPECT_BAD(rill_stage_batch(0, 10), "batch");
    EXPECT_BAD(rill_stage_buffer(0, RILL_OVERFLOW_BACKPRESSURE), "buffer");
    EXPECT_BAD(rill_stage_buffer(4, (rill_overflow_t)99), "buffer");
    EXPECT_BAD(rill_stage_buffer(4, (rill_overflow_t)-1), "buffer");
    EXPECT_BAD(rill_stage_conflate_by_key(NULL, NULL, 0), "conflate_by_key");
    EXPECT_BAD(rill_stage_conflate_by_key(key_mod50, NULL, (1u << 24) + 1), "conflate_by_key");
    EXPECT_BAD(rill_stage_throttle(0, 100), "throttle");
    EXPECT_BAD(rill_stage_throttle(100, 0), "throttle");
    EXPECT_BAD(rill_stage_broadcast(0, NULL, NULL), "broadcast");
    EXPECT_BAD(rill_stage_merge(0), "merge");
    EXPECT_BAD(rill_stage_partition_by_key(0, key_mod50, identity_map, NULL), "partition");
    EXPECT_BAD(rill_stage_partition_by_key(4, NULL, identity_map, NULL), "partition");
    EXPECT_BAD(rill_stage_partition_by_key(4, key_mod50, NULL, NULL), "partition");
    EXPECT_BAD(rill_sink_foreach(NULL, NULL), "sink");
    EXPECT_BAD(rill_sink_foreach_manual(NULL, NULL), "sink");
    EXPECT_BAD(rill_sink_collect(NULL), "sink");
    char why[64] = "x";
    cr_assert_eq(rill_stage_error(NULL, why, sizeof(why)), RILL_EINVAL);
    cr_assert_neq(why[0], 'x', "a sentence for a NULL spec");
    rill_stage_free(NULL);

    /* Valid ones, freed unused (ASan: nothing leaks). */
    rill_stateful_ops_t ops_ok = {.create = no_state, .fn = no_step};
    rill_stage_t *ok[] = {rill_source_range(0, 10),
                          rill_source_fn(never_pull, NULL),
                          rill_source_failed(RILL_EIO, NULL),
                          rill_stage_map(identity_map, NULL),
                          rill_stage_filter(keep_all, NULL),
                          rill_stage_map_async(no_async, NULL, 4, 0),
                          rill_stage_batch(10, 0),
                          rill_stage_buffer(4, RILL_OVERFLOW_FAIL),
                          rill_stage_conflate(NULL, NULL),
                          rill_stage_throttle(1, 1),
                          rill_stage_broadcast(3, NULL, NULL),
                          rill_stage_merge(2),
                          rill_stage_partition_by_key(2, key_mod50, identity_map, NULL),
                          rill_sink_foreach(drop_all, NULL),
                          rill_sink_ignore(),
                          rill_stage_flat_map(no_flat, NULL),
                          rill_stage_stateful_map(&ops_ok, NULL),
                          rill_stage_conflate_by_key(key_mod50, NULL, 0),
                          rill_sink_foreach_manual(drop_all, NULL)};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        cr_assert_not_null(ok[i], "valid constructor %zu returned NULL", i);
        cr_assert_eq(rill_stage_error(ok[i], NULL, 0), RILL_OK, "valid constructor %zu", i);
        rill_stage_free(ok[i]);
    }

    rill_collector_t *c = rill_collector_new();
    cr_assert_not_null(c);
    cr_assert_eq(rill_collector_count(c), 0);
    cr_assert_null(rill_collector_at(c, 0));
    cr_assert_eq(rill_collector_count(NULL), 0);
    cr_assert_null(rill_collector_at(NULL, 0));
    rill_stage_free(rill_sink_collect(c));
    rill_collector_free(c);
    rill_collector_free(NULL);

    cr_assert_eq(rill_async_complete(NULL, RILL_OK, NULL), RILL_EINVAL);
    cr_assert_eq(rill_elem_valid(NULL), 0);
    rill_elem_t none = {.payload = NULL, .arg = 0};
    cr_assert_eq(rill_elem_valid(&none), 0);
    rill_elem_t v = rill_elem_value(0);
    cr_assert_neq(rill_elem_valid(&v), 0, "a value element of 0 is valid");
    rill_elem_release(NULL);
}

Test(stage_args, spawn_connect_and_signals_reject_invalid_arguments, .timeout = 60)
{
    rill_system_t *sys = stage_system();
    rill_aid_t aid = RILL_AID_NONE;
    char errstr[160];
    /* The spec is consumed on every error (ASan would report the leak), and
     * errstr says why in a sentence. */
#define SPAWN_FAILS(expr, code)                                                                    \
    do {                                                                                           \
        errstr[0] = '\0';                                                                          \
        cr_assert_eq((expr), (code), #expr);                                                       \
        cr_assert_neq(errstr[0], '\0', "no sentence: " #expr);                                     \
    } while (0)
    SPAWN_FAILS(rill_stage_spawn(NULL, rill_sink_ignore(), NULL, &aid, errstr, sizeof(errstr)),
                RILL_EINVAL);
    SPAWN_FAILS(rill_stage_spawn(sys, rill_sink_ignore(), NULL, NULL, errstr, sizeof(errstr)),
                RILL_EINVAL);
    SPAWN_FAILS(rill_stage_spawn(sys, NULL, NULL, &aid, errstr, sizeof(errstr)), RILL_EINVAL);
    rill_stage_opts_t bad_exec = {
        .name = NULL, .executor = RILL_EXECUTOR(99), .mailbox_capacity = 0};
    SPAWN_FAILS(rill_stage_spawn(sys, rill_stage_map(identity_map, NULL), &bad_exec, &aid, errstr,
                                 sizeof(errstr)),
                RILL_EINVAL);
    cr_assert_not_null(strstr(errstr, "map"), "\"%s\" names the stage", errstr);
    /* A bad spec: spawning it returns its own error and sentence. */
    SPAWN_FAILS(rill_stage_spawn(sys, rill_stage_batch(0, 0), NULL, &aid, errstr, sizeof(errstr)),
                RILL_EINVAL);
    cr_assert_not_null(strstr(errstr, "batch"), "\"%s\" names the stage", errstr);
    cr_assert(rill_aid_is_none(aid), "no aid on error");
    /* errstr may be NULL. */
    cr_assert_eq(rill_stage_spawn(sys, rill_stage_batch(0, 0), NULL, &aid, NULL, 0), RILL_EINVAL);
#undef SPAWN_FAILS
    cr_assert_eq(rill_stage_connect(NULL, (rill_aid_t){1}, (rill_aid_t){2}, NULL, 0), RILL_EINVAL);
    cr_assert_eq(rill_stage_connect(sys, RILL_AID_NONE, (rill_aid_t){2}, NULL, 0), RILL_EINVAL);
    cr_assert_eq(rill_stage_connect(sys, (rill_aid_t){1}, RILL_AID_NONE, NULL, 0), RILL_EINVAL);

    rill_aid_t a = spawn_ok(sys, rill_sink_ignore(), NULL);
    cr_assert_eq(rill_stream_subscribe(NULL, rill_pub(a), rill_sub(a), 1), RILL_EINVAL);
    cr_assert_eq(rill_stream_subscribe(sys, rill_pub(RILL_AID_NONE), rill_sub(a), 1), RILL_EINVAL);
    cr_assert_eq(rill_stream_subscribe(sys, rill_pub(a), rill_sub(RILL_AID_NONE), 1), RILL_EINVAL);
    cr_assert_eq(rill_stream_request(sys, rill_pub(RILL_AID_NONE), rill_sub(a), 1, 1), RILL_EINVAL);
    cr_assert_eq(rill_stream_cancel(NULL, rill_pub(a), rill_sub(a), 1), RILL_EINVAL);
    cr_assert_eq(rill_stream_on_subscribe(sys, rill_sub(RILL_AID_NONE), rill_pub(a), 1),
                 RILL_EINVAL);
    cr_assert_eq(rill_stream_complete(sys, rill_sub(a), rill_pub(RILL_AID_NONE), 1), RILL_EINVAL);
    cr_assert_eq(rill_stream_error(sys, rill_sub(RILL_AID_NONE), rill_pub(a), 1, RILL_EIO, "x"),
                 RILL_EINVAL);

    kit_tally_t tally;
    memset(&tally, 0, sizeof(tally));
    rill_elem_t e = owned_elem(&tally, 1);
    cr_assert_eq(rill_stream_next(NULL, rill_sub(a), rill_pub(a), 1, &e), RILL_EINVAL);
    cr_assert_eq(rill_stream_next(sys, rill_sub(RILL_AID_NONE), rill_pub(a), 1, &e), RILL_EINVAL);
    cr_assert_eq(rill_stream_next(sys, rill_sub(a), rill_pub(a), 1, NULL), RILL_EINVAL);
    rill_elem_t invalid = {.payload = NULL, .arg = 5};
    cr_assert_eq(rill_stream_next(sys, rill_sub(a), rill_pub(a), 1, &invalid), RILL_EINVAL);
    cr_assert_eq(tally_released(&tally), 0, "the element stays the caller's on error");
    kit_payload_reclaim(e.payload);
    cr_assert_eq(rill_stream_error_text(NULL)[0], '\0');

    rill_system_destroy(sys);
    cr_assert_eq(tally_released(&tally), 0);
    cr_assert_eq(tally_reclaimed(&tally), 1);
}

/* A pipeline whose start must fail with `code` and a sentence containing
 * `says` (specs are freed by destroy: ASan checks). */
static void start_fails(rill_pipeline_t *p, rill_err_t code, const char *says, int line)
{
    char errstr[200] = "";
    rill_err_t err = rill_pipeline_start(p, errstr, sizeof(errstr));
    cr_assert_eq(err, code, "line %d: start returned %s (%s)", line, rill_err_name(err), errstr);
    cr_assert_not_null(strstr(errstr, says), "line %d: \"%s\" does not say \"%s\"", line, errstr,
                       says);
    rill_pipeline_destroy(p);
}
#define START_FAILS(p, code, says) start_fails((p), (code), (says), __LINE__)

Test(pipeline, invalid_arguments_and_states, .timeout = 60)
{
    rill_system_t *sys = stage_system();
    rill_pipeline_result_t r;
    char errstr[160];
    /* NULL only without memory: a NULL system is the start's to report. */
    rill_pipeline_t *p = rill_pipeline_new(NULL, "orphan");
    cr_assert_not_null(p);
    add_ok(p, rill_source_range(0, 1), NULL);
    add_ok(p, rill_sink_ignore(), NULL);
    START_FAILS(p, RILL_EINVAL, "system");
    /* add consumes the stage even on error (ASan: no leak). */
    cr_assert_eq(rill_pipeline_add(NULL, rill_source_range(0, 1), NULL), RILL_EINVAL);
    errstr[0] = '\0';
    cr_assert_eq(rill_pipeline_start(NULL, errstr, sizeof(errstr)), RILL_EINVAL);
    cr_assert_neq(errstr[0], '\0', "errstr says why");
    errstr[0] = '\0';
    cr_assert_eq(rill_pipeline_start_supervised(NULL, NULL, errstr, sizeof(errstr)), RILL_EINVAL);
    cr_assert_neq(errstr[0], '\0', "errstr says why");
    cr_assert_eq(rill_pipeline_start(NULL, NULL, 0), RILL_EINVAL, "errstr may be NULL");
    cr_assert_eq(rill_pipeline_stop(NULL), RILL_EINVAL);
    cr_assert_eq(rill_pipeline_drain(NULL), RILL_EINVAL);
    cr_assert_eq(rill_pipeline_wait(NULL, 0, &r), RILL_EINVAL);
    cr_assert(rill_aid_is_none(rill_pipeline_stage(NULL, 0)));
    cr_assert_eq(rill_pipeline_child(NULL, NULL, NULL, NULL, errstr, sizeof(errstr)), RILL_EINVAL);
    rill_pipeline_destroy(NULL);

    p = rill_pipeline_new(sys, "checked");
    cr_assert_not_null(p);
    errstr[0] = '\0';
    cr_assert_eq(rill_pipeline_start(p, errstr, sizeof(errstr)), RILL_EINVAL, "empty pipeline");
    cr_assert_neq(errstr[0], '\0', "errstr says why");
    cr_assert_eq(rill_pipeline_stop(p), RILL_ESTATE, "not started");
    cr_assert_eq(rill_pipeline_drain(p), RILL_ESTATE, "not started");
    cr_assert_eq(rill_pipeline_wait(p, 0, &r), RILL_ESTATE, "not started");
    add_ok(p, rill_source_range(0, 10), NULL);
    cr_assert_eq(rill_pipeline_start(p, errstr, sizeof(errstr)), RILL_EINVAL, "no sink");
    add_ok(p, rill_stage_map(identity_map, NULL), NULL);
    add_ok(p, rill_sink_ignore(), NULL);
    cr_assert_eq(rill_pipeline_wait(p, 0, NULL), RILL_EINVAL);
    pipeline_start_ok(p);
    cr_assert_eq(rill_pipeline_start(p, errstr, sizeof(errstr)), RILL_ESTATE, "started twice");
    cr_assert_eq(rill_pipeline_start_supervised(p, NULL, errstr, sizeof(errstr)), RILL_ESTATE,
                 "started twice");
    cr_assert_eq(rill_pipeline_add(p, rill_sink_ignore(), NULL), RILL_ESTATE, "after start");
    cr_assert(rill_aid_is_none(rill_pipeline_stage(p, -1)));
    cr_assert(rill_aid_is_none(rill_pipeline_stage(p, 3)));
    r = pipeline_wait_ok(p, KIT_WAIT_MS);
    cr_assert_eq(r.end, RILL_PIPELINE_COMPLETED, "%s", r.text);
    cr_assert_eq(r.delivered, 10);
    rill_pipeline_destroy(p);

    /*
     * API 2: the first error of rill_pipeline_add stays with the pipeline
     * (so a pipeline is written without a check after each add) and its
     * start returns it with a sentence, even once the rest is right.
     */
    p = rill_pipeline_new(sys, NULL);
    cr_assert_eq(rill_pipeline_add(p, NULL, NULL), RILL_EINVAL);
    add_ok(p, rill_source_range(0, 10), NULL);
    add_ok(p, rill_sink_ignore(), NULL);
    START_FAILS(p, RILL_EINVAL, "NULL");

    p = rill_pipeline_new(sys, NULL);
    add_ok(p, rill_source_range(0, 10), NULL);
    cr_assert_eq(rill_pipeline_add(p, rill_source_range(0, 1), NULL), RILL_EINVAL,
                 "a source after the first position");
    add_ok(p, rill_sink_ignore(), NULL);
    START_FAILS(p, RILL_EINVAL, "source");

    p = rill_pipeline_new(sys, NULL);
    add_ok(p, rill_source_range(0, 10), NULL);
    add_ok(p, rill_sink_ignore(), NULL);
    cr_assert_eq(rill_pipeline_add(p, rill_stage_map(identity_map, NULL), NULL), RILL_EINVAL,
                 "nothing after the sink");
    cr_assert_eq(rill_pipeline_add(p, rill_sink_ignore(), NULL), RILL_EINVAL, "two sinks");
    START_FAILS(p, RILL_EINVAL, "sink");

    /* A bad spec: add returns its error, start its sentence, naming it. */
    p = rill_pipeline_new(sys, NULL);
    add_ok(p, rill_source_range(0, 10), NULL);
    cr_assert_eq(rill_pipeline_add(p, rill_stage_buffer(0, RILL_OVERFLOW_BACKPRESSURE), NULL),
                 RILL_EINVAL);
    add_ok(p, rill_sink_ignore(), NULL);
    START_FAILS(p, RILL_EINVAL, "buffer");

    /* The same through the supervised start. */
    p = rill_pipeline_new(sys, NULL);
    add_ok(p, rill_source_range(0, 10), NULL);
    cr_assert_eq(rill_pipeline_add(p, rill_stage_throttle(0, 0), NULL), RILL_EINVAL);
    add_ok(p, rill_sink_ignore(), NULL);
    errstr[0] = '\0';
    cr_assert_eq(rill_pipeline_start_supervised(p, NULL, errstr, sizeof(errstr)), RILL_EINVAL);
    cr_assert_not_null(strstr(errstr, "throttle"), "\"%s\"", errstr);
    rill_pipeline_destroy(p);
    rill_restart_opts_t bad_restarts = {.max_restarts = -5};
    p = rill_pipeline_new(sys, NULL);
    add_ok(p, rill_source_range(0, 10), NULL);
    add_ok(p, rill_sink_ignore(), NULL);
    errstr[0] = '\0';
    cr_assert_eq(rill_pipeline_start_supervised(p, &bad_restarts, errstr, sizeof(errstr)),
                 RILL_EINVAL);
    cr_assert_neq(errstr[0], '\0');
    rill_pipeline_destroy(p);

    /* Not a source first, or only a source: refused at start. */
    p = rill_pipeline_new(sys, NULL);
    add_ok(p, rill_stage_map(identity_map, NULL), NULL);
    add_ok(p, rill_sink_ignore(), NULL);
    START_FAILS(p, RILL_EINVAL, "source");
    p = rill_pipeline_new(sys, NULL);
    add_ok(p, rill_source_range(0, 10), NULL);
    START_FAILS(p, RILL_EINVAL, "sink");

    /* A stage that cannot spawn: start fails with a sentence naming it,
     * and nothing leaks. */
    p = rill_pipeline_new(sys, NULL);
    rill_stage_opts_t bad_exec = {
        .name = "misplaced", .executor = RILL_EXECUTOR(99), .mailbox_capacity = 0};
    add_ok(p, rill_source_range(0, 10), NULL);
    add_ok(p, rill_stage_map(identity_map, NULL), &bad_exec);
    add_ok(p, rill_sink_ignore(), NULL);
    START_FAILS(p, RILL_EINVAL, "misplaced");
    rill_system_destroy(sys);
}
