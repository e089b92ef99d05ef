/*
 * The window stage (rill_stage_window, include/rill/state.h) in pipelines
 * against the embedded broker:
 *
 *   boundaries      a tumbling window takes a record at end - 1, the next
 *                   one a record at end
 *   hopping         a record lands in size / advance windows; with
 *                   emit_updates an update per window it changed
 *   session merge   a late-arriving record between two sessions of its
 *                   key merges them into one
 *   grace, late     a record within the grace period counts; one after it
 *                   is late: counted, and rejected to the dead-letter topic
 *   wall clock      a quiet key's window closes by the (virtual) clock
 *   restart         a supervised failure mid-way: every window's count is
 *                   exact, and every closed window's result came out
 *   misuse          bad options are refused with a sentence
 *
 * Records carry their value as a decimal number; the aggregate is (count,
 * sum). Event times are record timestamps from BASE.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rill/state.h>

#include "support/kafka_kit.h"
#include "support/state_kit.h"
#include "support/rtest.h"

#define BASE INT64_C(1700000000000) /* a multiple of every window size here */

typedef struct agg {
    uint64_t count, sum;
} agg_t;

/* ---- the aggregate ------------------------------------------------------ */

typedef struct ops_ctx {
    _Atomic uint64_t calls;
    _Atomic uint64_t fail_at_call; /* fail this add call once (0: never) */
} ops_ctx_t;

static rill_err_t agg_add(void *opaque, void *agg, const rill_elem_t *in)
{
    ops_ctx_t *o = opaque;
    uint64_t call = atomic_fetch_add(&o->calls, 1) + 1;
    uint64_t at = atomic_load(&o->fail_at_call);
    if (at && call == at) {
        atomic_store(&o->fail_at_call, 0);
        return RILL_EINVAL;
    }
    const rd_kafka_message_t *m = rill_record(in);
    char buf[32] = "";
    size_t n = m->len < sizeof(buf) - 1 ? m->len : sizeof(buf) - 1;
    memcpy(buf, m->payload, n);
    agg_t a;
    memcpy(&a, agg, sizeof(a));
    a.count++;
    a.sum += strtoull(buf, NULL, 10);
    memcpy(agg, &a, sizeof(a));
    return RILL_OK;
}

static rill_err_t agg_merge(void *opaque, void *into, const void *from)
{
    (void)opaque;
    agg_t a, b;
    memcpy(&a, into, sizeof(a));
    memcpy(&b, from, sizeof(b));
    a.count += b.count;
    a.sum += b.sum;
    memcpy(into, &a, sizeof(a));
    return RILL_OK;
}

/* ---- what the sink saw -------------------------------------------------- */

typedef struct res {
    char key[16];
    int64_t start, end;
    agg_t agg;
    int final;
    int32_t partition;
} res_t;

typedef struct seen {
    pthread_mutex_t mu;
    res_t v[8192];
    _Atomic size_t n, finals;
} seen_t;

static rill_err_t collect(void *opaque, rill_elem_t *e)
{
    seen_t *s = opaque;
    const rill_window_result_t *r = rill_window_result(e);
    if (!r) {
        rill_elem_release(e);
        return RILL_EINVAL;
    }
    pthread_mutex_lock(&s->mu);
    size_t i = atomic_load(&s->n);
    if (i < sizeof(s->v) / sizeof(s->v[0])) {
        res_t *x = &s->v[i];
        memset(x, 0, sizeof(*x));
        memcpy(x->key, r->key, r->key_len < sizeof(x->key) - 1 ? r->key_len : sizeof(x->key) - 1);
        x->start = r->start_ms;
        x->end = r->end_ms;
        memcpy(&x->agg, r->agg, sizeof(x->agg));
        x->final = r->final;
        x->partition = r->partition;
        atomic_store(&s->n, i + 1);
        if (r->final)
            atomic_fetch_add(&s->finals, 1);
    }
    pthread_mutex_unlock(&s->mu);
    rill_elem_release(e);
    return RILL_OK;
}

static seen_t *seen_new(void)
{
    seen_t *s = calloc(1, sizeof(*s));
    cr_assert_not_null(s);
    pthread_mutex_init(&s->mu, NULL);
    return s;
}

static void seen_dump(seen_t *s)
{
    for (size_t i = 0; i < atomic_load(&s->n) && i < 40; i++)
        fprintf(stderr,
                "  result %s [%" PRId64 ", %" PRId64 ") count %" PRIu64 " sum %" PRIu64
                " final %d p%d\n",
                s->v[i].key, s->v[i].start - BASE, s->v[i].end - BASE, s->v[i].agg.count,
                s->v[i].agg.sum, s->v[i].final, (int)s->v[i].partition);
}

static void seen_free(seen_t *s)
{
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* The final results of (key, start): how many, and the last one in *out. */
static int finals_of(seen_t *s, const char *key, int64_t start, res_t *out)
{
    int n = 0;
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < atomic_load(&s->n); i++)
        if (s->v[i].final && s->v[i].start == start && !strcmp(s->v[i].key, key)) {
            n++;
            if (out)
                *out = s->v[i];
        }
    pthread_mutex_unlock(&s->mu);
    return n;
}

/* ---- the virtual clock -------------------------------------------------- */

static _Atomic int64_t virtual_now = BASE;

static int64_t vclock(void *opaque)
{
    (void)opaque;
    return atomic_load(&virtual_now);
}

/* ---- records ------------------------------------------------------------ */

typedef struct in_rec {
    const char *key;
    int64_t at; /* ms after BASE */
    uint64_t value;
} in_rec_t;

static void produce(kk_env_t *e, const char *topic, int32_t partition, const in_rec_t *v, size_t n)
{
    rill_testkit_record_t *r = calloc(n, sizeof(*r));
    char(*vals)[24] = calloc(n, sizeof(*vals));
    cr_assert(r && vals);
    for (size_t i = 0; i < n; i++) {
        snprintf(vals[i], sizeof(vals[i]), "%" PRIu64, v[i].value);
        r[i] = (rill_testkit_record_t){.partition = partition,
                                       .offset = -1,
                                       .timestamp = BASE + v[i].at,
                                       .key = v[i].key,
                                       .key_len = strlen(v[i].key),
                                       .value = vals[i],
                                       .value_len = strlen(vals[i])};
    }
    char err[512] = "";
    rill_testkit_opts_t o = {.timeout_ms = 60000};
    cr_assert_eq(rill_testkit_produce(e->boot, topic, r, n, &o, err, sizeof(err)), RILL_OK, "%s",
                 err);
    free(r);
    free(vals);
}

static int count_visit(void *opaque, const void *k, size_t kl, const void *v, size_t vl)
{
    (void)k, (void)kl, (void)v, (void)vl;
    (*(int *)opaque)++;
    return 0;
}

/* Keys in a partition's committed state (the stream time and windows). */
static int state_keys(rill_store_t *s, const char *topic, int p)
{
    int n = 0;
    cr_assert_eq(rill_store_scan(s, topic, p, NULL, 0, NULL, 0, count_visit, &n), RILL_OK);
    return n;
}

static rill_store_stats_t stats(rill_store_t *s)
{
    rill_store_stats_t st;
    cr_assert_eq(rill_store_stats(s, &st), RILL_OK);
    return st;
}

/* A pipeline: a source over partitions 0..parts-1 of topic using store s,
 * the window stage, a collecting sink. kv: extra consumer properties. */
static rill_pipeline_t *window_pipeline(kk_env_t *e, const char *topic, int parts, rill_store_t *s,
                                        const rill_window_opts_t *wo, ops_ctx_t *oc, seen_t *seen,
                                        const char *const *kv, int supervised)
{
    rill_consumer_conf_t *c = kk_conf_new(e->boot, NULL, kv);
    kk_conf_assign_all(c, topic, parts, RD_KAFKA_OFFSET_BEGINNING);
    cr_assert_eq(rill_consumer_conf_use_store(c, s), RILL_OK);
    rill_window_ops_t ops = {.agg_size = sizeof(agg_t), .add = agg_add, .merge = agg_merge};
    rill_pipeline_t *p = rill_pipeline_new(e->sys, topic);
    rill_pipeline_add(p, rill_kafka_source(c), NULL);
    rill_pipeline_add(p, rill_stage_window(s, wo, &ops, oc), NULL);
    rill_pipeline_add(p, rill_sink_foreach(collect, seen), NULL);
    char err[256] = "";
    if (supervised) {
        rill_restart_opts_t ro = {.backoff = {.min_ms = 10, .max_ms = 50}};
        cr_assert_eq(rill_pipeline_start_supervised(p, &ro, err, sizeof(err)), RILL_OK, "%s", err);
    } else {
        cr_assert_eq(rill_pipeline_start(p, err, sizeof(err)), RILL_OK, "%s", err);
    }
    return p;
}

static rill_pipeline_result_t stop_pipeline(rill_pipeline_t *p)
{
    rill_pipeline_result_t res;
    rill_pipeline_stop(p);
    cr_assert_eq(rill_pipeline_wait(p, 30000, &res), RILL_OK);
    rill_pipeline_destroy(p);
    return res;
}

static void assert_final(seen_t *s, const char *key, int64_t start, int64_t end, uint64_t count,
                         uint64_t sum)
{
    res_t r = {0};
    cr_assert_geq(finals_of(s, key, BASE + start, &r), 1, "a final result of %s@%" PRId64, key,
                  start);
    cr_assert_eq(r.end, BASE + end, "%s@%" PRId64 ": end %" PRId64, key, start, r.end - BASE);
    cr_assert_eq(r.agg.count, count, "%s@%" PRId64 ": count %" PRIu64, key, start, r.agg.count);
    cr_assert_eq(r.agg.sum, sum, "%s@%" PRId64 ": sum %" PRIu64, key, start, r.agg.sum);
}

/* ---- the tests ---------------------------------------------------------- */

static void tumbling_boundaries(sk_backend_t b)
{
    kk_env_t e;
    kk_env_init(&e);
    const char *topic = b == SK_MEM ? "tumble-mem" : "tumble-lmdb";
    kk_create_topic(&e, topic, 1);
    /* Windows of 1 s: end - 1 is in [0, 1000), end in [1000, 2000); the
     * record at 2500 moves stream time past both ends. */
    in_rec_t in[] = {{"a", 0, 1}, {"a", 999, 2}, {"a", 1000, 4}, {"b", 999, 16}, {"a", 2500, 8}};
    produce(&e, topic, 0, in, 5);
    char dir[SK_DIR_SIZE] = "";
    rill_store_t *s = sk_open_store(b, "state-window", dir);
    seen_t *seen = seen_new();
    ops_ctx_t oc = {0};
    rill_window_opts_t wo = {.type = RILL_WINDOW_TUMBLING,
                             .size_ms = 1000,
                             .wall_close_ms = UINT64_MAX,
                             .commit = {.commit_ms = 20}};
    rill_pipeline_t *p = window_pipeline(&e, topic, 1, s, &wo, &oc, seen, NULL, 0);
    int ok;
    /* Three windows closed; their deletes committed: left are the stream
     * time and the open window [2000, 3000) of a. */
    KK_WAIT_UNTIL(ok, KK_WAIT_MS,
                  atomic_load(&seen->finals) == 3 && sk_stored_offset(s, topic, 0) == 5 &&
                      state_keys(s, topic, 0) == 2);
    cr_assert(ok, "finals %zu, offset %" PRId64 ", keys %d", atomic_load(&seen->finals),
              sk_stored_offset(s, topic, 0), state_keys(s, topic, 0));
    stop_pipeline(p);
    assert_final(seen, "a", 0, 1000, 2, 3);
    assert_final(seen, "a", 1000, 2000, 1, 4);
    assert_final(seen, "b", 0, 1000, 1, 16);
    cr_assert_eq(atomic_load(&seen->n), 3, "final results only (no updates)");
    cr_assert_eq(finals_of(seen, "a", BASE + 2000, NULL), 0, "the open window did not close");
    rill_store_stats_t st = stats(s);
    cr_assert_eq(st.windows_closed, 3);
    cr_assert_eq(st.late, 0);
    seen_free(seen);
    kk_env_fini(&e);
    sk_close_store(s, b, dir);
}

Test(state_window, tumbling_boundaries_memory, .timeout = 60)
{
    tumbling_boundaries(SK_MEM);
}

Test(state_window, tumbling_boundaries_lmdb, .timeout = 60)
{
    tumbling_boundaries(SK_LMDB);
}

/* Windows of 1 s every 250 ms: a record at 600 is in the windows starting
 * at -250, 0, 250 and 500; with emit_updates each of them sends an update,
 * and each closes with one final result. */
Test(state_window, hopping_record_lands_in_size_over_advance_windows_with_updates, .timeout = 60)
{
    kk_env_t e;
    kk_env_init(&e);
    const char *topic = "hopping";
    kk_create_topic(&e, topic, 1);
    in_rec_t in[] = {{"h", 600, 5}, {"h", 5000, 7}};
    produce(&e, topic, 0, in, 2);
    rill_store_t *s = sk_open_store(SK_MEM, "state-window", NULL);
    seen_t *seen = seen_new();
    ops_ctx_t oc = {0};
    rill_window_opts_t wo = {.type = RILL_WINDOW_HOPPING,
                             .size_ms = 1000,
                             .advance_ms = 250,
                             .emit_updates = 1,
                             .wall_close_ms = UINT64_MAX,
                             .commit = {.commit_ms = 20}};
    rill_pipeline_t *p = window_pipeline(&e, topic, 1, s, &wo, &oc, seen, NULL, 0);
    int ok;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, atomic_load(&seen->finals) == 4 && atomic_load(&seen->n) == 12);
    cr_assert(ok, "results %zu, finals %zu", atomic_load(&seen->n), atomic_load(&seen->finals));
    stop_pipeline(p);
    for (int64_t start = -250; start <= 500; start += 250)
        assert_final(seen, "h", start, start + 1000, 1, 5);
    /* 4 updates for 600, 4 for 5000 (windows 4250 .. 5000), 4 finals. */
    size_t updates = atomic_load(&seen->n) - atomic_load(&seen->finals);
    cr_assert_eq(updates, 8);
    cr_assert_eq(stats(s).windows_closed, 4);
    seen_free(seen);
    kk_env_fini(&e);
    rill_store_close(s);
}

/* Sessions with a gap of 1 s: records at 0 and 1500 make two sessions; a
 * record at 800 arriving after them is less than the gap from both and
 * merges them into [0, 2500). The record at 10000 closes it. */
Test(state_window, session_bridged_by_a_late_arriving_record_merges, .timeout = 60)
{
    kk_env_t e;
    kk_env_init(&e);
    const char *topic = "sessions";
    kk_create_topic(&e, topic, 1);
    in_rec_t in[] = {{"s", 0, 1}, {"s", 1500, 2}, {"t", 1400, 32}, {"s", 800, 4}, {"s", 10000, 8}};
    produce(&e, topic, 0, in, 5);
    char dir[SK_DIR_SIZE] = "";
    rill_store_t *s = sk_open_store(SK_LMDB, "state-window", dir);
    seen_t *seen = seen_new();
    ops_ctx_t oc = {0};
    rill_window_opts_t wo = {.type = RILL_WINDOW_SESSION,
                             .gap_ms = 1000,
                             .grace_ms = 1000,
                             .wall_close_ms = UINT64_MAX,
                             .commit = {.commit_ms = 20}};
    rill_pipeline_t *p = window_pipeline(&e, topic, 1, s, &wo, &oc, seen, NULL, 0);
    int ok;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS,
                  atomic_load(&seen->finals) == 2 && sk_stored_offset(s, topic, 0) == 5);
    if (!ok)
        seen_dump(seen);
    cr_assert(ok, "finals %zu", atomic_load(&seen->finals));
    stop_pipeline(p);
    assert_final(seen, "s", 0, 2500, 3, 7);
    assert_final(seen, "t", 1400, 2400, 1, 32);
    cr_assert_eq(finals_of(seen, "s", BASE + 1500, NULL), 0, "the bridged session is gone");
    cr_assert_eq(finals_of(seen, "s", BASE + 10000, NULL), 0, "the last session is open");
    seen_free(seen);
    kk_env_fini(&e);
    sk_close_store(s, SK_LMDB, dir);
}

/* Windows of 1 s with 500 ms of grace: a record at 200 after stream time
 * 1400 still counts; after stream time 1600 the window has closed and a
 * record at 300 is late: counted, and rejected to the dead-letter topic. */
Test(state_window, grace_then_late_records_are_counted_and_rejected, .timeout = 60)
{
    kk_env_t e;
    kk_env_init(&e);
    const char *topic = "grace";
    kk_create_topic(&e, topic, 1);
    kk_create_topic(&e, "grace-dlq", 1);
    in_rec_t in[] = {{"g", 100, 1}, {"g", 1400, 2}, {"g", 200, 4}, {"g", 1600, 8}, {"g", 300, 16}};
    produce(&e, topic, 0, in, 5);
    rill_store_t *s = sk_open_store(SK_MEM, "state-window", NULL);
    seen_t *seen = seen_new();
    ops_ctx_t oc = {0};
    rill_window_opts_t wo = {.type = RILL_WINDOW_TUMBLING,
                             .size_ms = 1000,
                             .grace_ms = 500,
                             .reject_late = 1,
                             .wall_close_ms = UINT64_MAX,
                             .commit = {.commit_ms = 20}};
    const char *kv[] = {"rill.dead.letter.topic", "grace-dlq", NULL};
    rill_pipeline_t *p = window_pipeline(&e, topic, 1, s, &wo, &oc, seen, kv, 0);
    int ok;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, atomic_load(&seen->finals) == 1 && stats(s).late == 1);
    cr_assert(ok, "finals %zu, late %" PRIu64, atomic_load(&seen->finals), stats(s).late);
    rill_consumed_t *dlq = NULL;
    size_t n_dlq = 0;
    for (int64_t deadline = kit_now_ms() + KK_WAIT_MS; kit_now_ms() < deadline;) {
        rill_consumed_destroy(dlq);
        dlq = kk_consume_all(e.boot, "grace-dlq", 2000);
        n_dlq = rill_consumed_count(dlq);
        if (n_dlq)
            break;
    }
    cr_assert_eq(n_dlq, 1, "the late record is in the dead-letter topic");
    cr_assert_eq(rill_consumed_at(dlq, 0)->value_len, 2);
    cr_assert_eq(memcmp(rill_consumed_at(dlq, 0)->value, "16", 2), 0);
    char h[128];
    cr_assert_not_null(kk_header(rill_consumed_at(dlq, 0), "rill-error", h, sizeof(h)));
    cr_assert_not_null(strstr(h, "late"), "%s", h);
    rill_consumed_destroy(dlq);
    stop_pipeline(p);
    assert_final(seen, "g", 0, 1000, 2, 5);
    cr_assert_eq(stats(s).late, 1);
    seen_free(seen);
    kk_env_fini(&e);
    rill_store_close(s);
}

/* A key that goes quiet: no record moves stream time past its window, so
 * only the wall clock closes it, at end + grace + wall_close_ms. */
Test(state_window, quiet_key_closes_by_the_virtual_wall_clock, .timeout = 60)
{
    kk_env_t e;
    kk_env_init(&e);
    const char *topic = "quiet";
    kk_create_topic(&e, topic, 1);
    in_rec_t in[] = {{"q", 100, 3}};
    produce(&e, topic, 0, in, 1);
    rill_store_t *s = sk_open_store(SK_MEM, "state-window", NULL);
    seen_t *seen = seen_new();
    ops_ctx_t oc = {0};
    atomic_store(&virtual_now, BASE + 1400);
    rill_window_opts_t wo = {.type = RILL_WINDOW_TUMBLING,
                             .size_ms = 1000,
                             .grace_ms = 100,
                             .wall_close_ms = 500,
                             .now_ms = vclock,
                             .tick_ms = 5,
                             .commit = {.commit_ms = 20}};
    rill_pipeline_t *p = window_pipeline(&e, topic, 1, s, &wo, &oc, seen, NULL, 0);
    int ok;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, sk_stored_offset(s, topic, 0) == 1);
    cr_assert(ok, "the record was committed");
    /* 1600 is end + grace + wall_close_ms exactly: not past it. */
    atomic_store(&virtual_now, BASE + 1600);
    KK_WAIT_UNTIL(ok, 200, atomic_load(&seen->finals) > 0);
    cr_assert_not(ok, "closed before the wall clock passed its close");
    atomic_store(&virtual_now, BASE + 1601);
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, atomic_load(&seen->finals) == 1 && state_keys(s, topic, 0) == 1);
    cr_assert(ok, "finals %zu, keys %d", atomic_load(&seen->finals), state_keys(s, topic, 0));
    stop_pipeline(p);
    assert_final(seen, "q", 0, 1000, 1, 3);
    seen_free(seen);
    kk_env_fini(&e);
    rill_store_close(s);
}

/* ---- restart ------------------------------------------------------------ */

#define R_PARTS 2
#define R_PER   1500
#define R_KEYS  5
#define R_STEP  10  /* ms between records of a partition */
#define R_SIZE  100 /* window size: 10 records of a partition, 2 per key */

/* A window left open in the store holds its two records exactly (its
 * value: end(8) closed(1) aggregate, see state/window.c). */
static int open_window_exact(void *opaque, const void *k, size_t kl, const void *v, size_t vl)
{
    if (kl == 1)
        return 0; /* the stream time */
    agg_t a;
    cr_assert_eq(vl, 9 + sizeof(a));
    memcpy(&a, (const uint8_t *)v + 9, sizeof(a));
    cr_assert_eq(a.count, 2, "an open window counted %" PRIu64, a.count);
    cr_assert_eq(((const uint8_t *)v)[8], 0, "not closed");
    (*(int *)opaque)++;
    return 0;
}

/* Partition p, record i: key k(i % R_KEYS), at i * R_STEP, value p * R_PER
 * + i + 1. */
static void restart_exact(sk_backend_t b)
{
    kk_env_t e;
    kk_env_init(&e);
    const char *topic = b == SK_MEM ? "restart-mem" : "restart-lmdb";
    kk_create_topic(&e, topic, R_PARTS);
    static const char *keys[R_KEYS] = {"k0", "k1", "k2", "k3", "k4"};
    in_rec_t *in = calloc(R_PER, sizeof(*in));
    cr_assert_not_null(in);
    for (int p = 0; p < R_PARTS; p++) {
        for (int i = 0; i < R_PER; i++)
            in[i] =
                (in_rec_t){keys[i % R_KEYS], (int64_t)i * R_STEP, (uint64_t)(p * R_PER + i + 1)};
        produce(&e, topic, p, in, R_PER);
    }
    free(in);
    char dir[SK_DIR_SIZE] = "";
    rill_store_t *s = sk_open_store(b, "state-window", dir);
    seen_t *seen = seen_new();
    ops_ctx_t oc = {0};
    atomic_store(&oc.fail_at_call, R_PER); /* mid-way through */
    rill_window_opts_t wo = {.type = RILL_WINDOW_TUMBLING,
                             .size_ms = R_SIZE,
                             .wall_close_ms = UINT64_MAX,
                             .commit = {.commit_count = 97, .commit_ms = 20}};
    rill_pipeline_t *pl = window_pipeline(&e, topic, R_PARTS, s, &wo, &oc, seen, NULL, 1);
    /* Every window but the last of each key closes (stream time passes
     * it); the last ones stay open in the store with the stream time. */
    size_t windows = R_PER * R_STEP / R_SIZE * R_KEYS;
    int ok;
    KK_WAIT_UNTIL(
        ok, KK_WAIT_MS,
        sk_stored_offset(s, topic, 0) == R_PER && sk_stored_offset(s, topic, 1) == R_PER &&
            state_keys(s, topic, 0) == 1 + R_KEYS && state_keys(s, topic, 1) == 1 + R_KEYS);
    cr_assert(ok, "offsets %" PRId64 ", %" PRId64 "; keys %d, %d", sk_stored_offset(s, topic, 0),
              sk_stored_offset(s, topic, 1), state_keys(s, topic, 0), state_keys(s, topic, 1));
    rill_pipeline_result_t res = stop_pipeline(pl);
    cr_assert_eq(atomic_load(&oc.fail_at_call), 0, "the failure happened");
    cr_assert_eq(res.restarts, 1,
                 "the failure restarted the pipeline once (%u; %s; calls %" PRIu64
                 ", aborts %" PRIu64 ")",
                 (unsigned)res.restarts, res.text, atomic_load(&oc.calls), stats(s).aborts);
    cr_assert_lt(atomic_load(&seen->n), sizeof(seen->v) / sizeof(seen->v[0]));
    for (int p = 0; p < R_PARTS; p++) {
        for (size_t w = 0; w < windows / R_KEYS; w++) {
            for (int k = 0; k < R_KEYS; k++) {
                /* Records i = w * 10 + k and w * 10 + k + 5. */
                uint64_t i0 = w * (R_SIZE / R_STEP) + (uint64_t)k;
                uint64_t sum = 2 * ((uint64_t)p * R_PER + i0 + 1) + R_KEYS;
                int64_t start = (int64_t)w * R_SIZE;
                if (w + 1 == windows / R_KEYS) {
                    /* The open one: in the store (open_windows_exact). */
                    cr_assert_eq(finals_of(seen, keys[k], BASE + start, NULL), 0);
                    continue;
                }
                res_t r = {0};
                int n = 0;
                pthread_mutex_lock(&seen->mu);
                for (size_t j = 0; j < atomic_load(&seen->n); j++) {
                    res_t *x = &seen->v[j];
                    if (x->partition == p && x->start == BASE + start && !strcmp(x->key, keys[k])) {
                        n++;
                        r = *x;
                        cr_assert_eq(x->agg.count, 2, "p%d %s@%" PRId64 ": count %" PRIu64, p,
                                     keys[k], start, x->agg.count);
                        cr_assert_eq(x->agg.sum, sum, "p%d %s@%" PRId64 ": sum", p, keys[k], start);
                    }
                }
                pthread_mutex_unlock(&seen->mu);
                if (n < 1) {
                    rill_store_stats_t x = stats(s);
                    size_t np[2] = {0, 0};
                    for (size_t j = 0; j < atomic_load(&seen->n); j++)
                        np[seen->v[j].partition & 1]++;
                    fprintf(stderr,
                            "results p0 %zu p1 %zu; late %" PRIu64 " closed %" PRIu64
                            " aborts %" PRIu64 " calls %" PRIu64 "\n",
                            np[0], np[1], x.late, x.windows_closed, x.aborts,
                            atomic_load(&oc.calls));
                }
                cr_assert_geq(n, 1, "p%d %s@%" PRId64 ": no final result", p, keys[k], start);
                cr_assert(r.final);
            }
        }
    }
    for (int p = 0; p < R_PARTS; p++) {
        int n = 0;
        cr_assert_eq(rill_store_scan(s, topic, p, NULL, 0, NULL, 0, open_window_exact, &n),
                     RILL_OK);
        cr_assert_eq(n, R_KEYS, "p%d: %d open windows", p, n);
    }
    rill_store_stats_t st = stats(s);
    cr_assert_geq(st.aborts, 1, "the failed add's transaction was aborted");
    cr_assert_geq(st.windows_closed, (uint64_t)R_PARTS * (windows - R_KEYS));
    cr_assert_eq(st.late, 0);
    seen_free(seen);
    kk_env_fini(&e);
    sk_close_store(s, b, dir);
}

Test(state_window, restart_mid_way_keeps_every_window_exact_and_every_result_out_memory,
     .timeout = 120)
{
    restart_exact(SK_MEM);
}

Test(state_window, restart_mid_way_keeps_every_window_exact_and_every_result_out_lmdb,
     .timeout = 120)
{
    restart_exact(SK_LMDB);
}

/* ---- misuse ------------------------------------------------------------- */

static void refused(rill_store_t *s, const rill_window_opts_t *wo, const rill_window_ops_t *ops,
                    const char *words)
{
    char err[256] = "";
    rill_stage_t *bad = rill_stage_window(s, wo, ops, NULL);
    cr_assert_eq(rill_stage_error(bad, err, sizeof(err)), RILL_EINVAL, "%s", words);
    cr_assert_not_null(strstr(err, words), "'%s' does not say '%s'", err, words);
    rill_stage_free(bad);
}

Test(state_window, bad_options_are_refused_with_a_sentence, .timeout = 30)
{
    rill_store_t *s = sk_open_store(SK_MEM, "state-window", NULL);
    rill_window_ops_t ops = {.agg_size = 16, .add = agg_add, .merge = agg_merge};
    rill_window_opts_t wo = {.type = RILL_WINDOW_TUMBLING, .size_ms = 1000};
    refused(NULL, &wo, &ops, "NULL");
    refused(s, NULL, &ops, "NULL");
    refused(s, &wo, NULL, "NULL");
    rill_window_ops_t o2 = ops;
    o2.add = NULL;
    refused(s, &wo, &o2, "add");
    o2 = ops;
    o2.agg_size = 0;
    refused(s, &wo, &o2, "agg_size");
    o2.agg_size = RILL_WINDOW_AGG_MAX + 1;
    refused(s, &wo, &o2, "agg_size");
    rill_window_opts_t w2 = wo;
    w2.size_ms = 0;
    refused(s, &w2, &ops, "size_ms");
    w2 = wo;
    w2.type = 0;
    refused(s, &w2, &ops, "type");
    w2 = (rill_window_opts_t){.type = RILL_WINDOW_HOPPING, .size_ms = 1000, .advance_ms = 2000};
    refused(s, &w2, &ops, "advance_ms");
    w2.advance_ms = 0;
    refused(s, &w2, &ops, "advance_ms");
    w2.size_ms = 1000000;
    w2.advance_ms = 1;
    refused(s, &w2, &ops, "RILL_WINDOW_HOPS_MAX");
    w2 = (rill_window_opts_t){.type = RILL_WINDOW_SESSION, .gap_ms = 0};
    refused(s, &w2, &ops, "gap_ms");
    w2.gap_ms = 10;
    o2 = ops;
    o2.merge = NULL;
    refused(s, &w2, &o2, "merge");
    rill_stage_free(rill_stage_window(s, &w2, &ops, NULL)); /* a good one */
    cr_assert_null(rill_window_result(NULL));
    rill_elem_t v = rill_elem_value(3);
    cr_assert_null(rill_window_result(&v), "other elements are not results");
    rill_store_close(s);
}
