/*
 * The Kafka layer tried as a new user would (issue 12), against the
 * embedded broker: what is wrong is refused at the call, what cannot work
 * fails the consumer for its supervisor within a bounded time, and what
 * the program must know is in the stats.
 *
 *  - a fixed partition at RILL_OFFSET_COMMITTED without group.id, a bad
 *    regular expression in a subscription: refused at the call;
 *  - a fixed partition that does not exist, or of a topic that does not
 *    exist, and a fatal librdkafka error: the consumer fails; supervised,
 *    the pipeline restarts and goes on from the committed offsets once
 *    the cause is gone, or gives up per its restart intensity;
 *  - an unreachable bootstrap server (127.0.0.1:1): errors, last_error,
 *    brokers_up and connected in the consumer's and producer's stats;
 *  - a pipeline that never confirms (self-managed offsets): blocked at
 *    rill.max.unconfirmed, shown in the stats;
 *  - a consumer connected to itself, or given a second subscriber:
 *    refused, and the consumer and its sink go on.
 *
 * Sinks record under a mutex and never assert; the test thread waits on
 * conditions with deadlines.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

#include <rill/kafka.h>
#include <rill/stream.h>
#include <rill/testkit.h>

#include "support/rtest.h"

#include "support/actor_kit.h"
#include "support/kafka_kit.h"

#include "kafka/kafka_int.h"

#define MAXOFF 4096

/* ---- a sink that records the offsets it saw (partition 0) ---------- */

typedef struct rec {
    pthread_mutex_t mu;
    long received;
    uint16_t seen[MAXOFF]; /* deliveries per offset */
    int64_t first;         /* the first offset received, -1 before */
    /* manual: hold the elements, unconfirmed, until rec_confirm_held */
    int hold;
    rill_elem_t held[MAXOFF];
    size_t n_held;
} rec_t;

static void rec_init(rec_t *r, int hold)
{
    memset(r, 0, sizeof(*r));
    pthread_mutex_init(&r->mu, NULL);
    r->first = -1;
    r->hold = hold;
}

static rill_err_t rec_sink(void *opaque, rill_elem_t *e)
{
    rec_t *r = opaque;
    const rd_kafka_message_t *m = rill_record(e);
    pthread_mutex_lock(&r->mu);
    r->received++;
    if (m && m->offset >= 0 && m->offset < MAXOFF) {
        r->seen[m->offset]++;
        if (r->first < 0)
            r->first = m->offset;
    }
    int held = r->hold && r->n_held < MAXOFF;
    if (held)
        r->held[r->n_held++] = *e; /* kept, unconfirmed (foreach_manual) */
    pthread_mutex_unlock(&r->mu);
    if (!held)
        rill_elem_confirm(e); /* frees the record (foreach: its origin is the sink's) */
    return RILL_OK;
}

static long rec_received(rec_t *r)
{
    pthread_mutex_lock(&r->mu);
    long n = r->received;
    pthread_mutex_unlock(&r->mu);
    return n;
}

/* Offsets from..to-1 each seen exactly once, and nothing else. */
static int rec_exactly(rec_t *r, int64_t from, int64_t to, char *why, size_t size)
{
    pthread_mutex_lock(&r->mu);
    int ok = 1;
    for (int64_t o = 0; o < MAXOFF && ok; o++) {
        unsigned want = o >= from && o < to ? 1 : 0;
        if (r->seen[o] != want) {
            snprintf(why, size, "offset %" PRId64 " seen %u times, want %u", o, r->seen[o], want);
            ok = 0;
        }
    }
    pthread_mutex_unlock(&r->mu);
    return ok;
}

static void rec_confirm_held(rec_t *r)
{
    pthread_mutex_lock(&r->mu);
    r->hold = 0;
    for (size_t i = 0; i < r->n_held; i++)
        rill_elem_confirm(&r->held[i]);
    r->n_held = 0;
    pthread_mutex_unlock(&r->mu);
}

static void rec_fini(rec_t *r)
{
    for (size_t i = 0; i < r->n_held; i++)
        rill_elem_release(&r->held[i]);
    pthread_mutex_destroy(&r->mu);
}

/* Most tests: an embedded broker with one topic of n records, and a
 * recorder. */
static void fix_open(kk_env_t *env, rec_t *r, const char *topic, int n, int hold)
{
    kk_env_init(env);
    kk_load_topic(env, topic, 1, n, 50);
    rec_init(r, hold);
}

static void fix_close(kk_env_t *env, rec_t *r)
{
    rec_fini(r);
    kk_env_fini(env);
}

/* ---- pipelines ------------------------------------------------------- */

/* source -> rec sink, supervised (restarts at most max_restarts a minute,
 * backoff from 50 ms to 500 ms), or, with max_restarts < 0, not. */
static rill_pipeline_t *start_pipeline(rill_system_t *sys, const char *name,
                                       rill_consumer_conf_t *c, rec_t *r, int max_restarts)
{
    rill_pipeline_t *p = rill_pipeline_new(sys, name);
    cr_assert_not_null(p);
    cr_assert_eq(rill_pipeline_add(p, rill_kafka_source(c), NULL), RILL_OK);
    cr_assert_eq(rill_pipeline_add(p, rill_sink_foreach(rec_sink, r), NULL), RILL_OK);
    rill_restart_opts_t ro = {
        .max_restarts = max_restarts, .within_ms = 60000, .backoff = {.min_ms = 50, .max_ms = 500}};
    char err[256] = "";
    rill_err_t e = max_restarts < 0 ? rill_pipeline_start(p, err, sizeof(err))
                                    : rill_pipeline_start_supervised(p, &ro, err, sizeof(err));
    cr_assert_eq(e, RILL_OK, "start: %s (%s)", rill_err_name(e), err);
    return p;
}

/* p ends FAILED within KK_WAIT_MS, with a text that says `want`; `what`
 * names the case in the messages. */
static rill_pipeline_result_t wait_failed(rill_pipeline_t *p, const char *want, const char *what)
{
    rill_pipeline_result_t res;
    rill_err_t e = rill_pipeline_wait(p, KK_WAIT_MS, &res);
    cr_assert_eq(e, RILL_OK, "%s: the pipeline did not fail (%s)", what, rill_err_name(e));
    cr_assert_eq(res.end, RILL_PIPELINE_FAILED, "%s: ended %d", what, (int)res.end);
    cr_assert_not_null(strstr(res.text, want), "%s: \"%s\" does not say \"%s\"", what, res.text,
                       want);
    return res;
}

/* Stops a supervised p that restarted at least once, and destroys it. */
static void stop_restarted(rill_pipeline_t *p)
{
    rill_pipeline_stop(p);
    rill_pipeline_result_t res;
    cr_assert_eq(rill_pipeline_wait(p, KK_WAIT_MS, &res), RILL_OK);
    cr_assert_geq(res.restarts, 1);
    rill_pipeline_destroy(p);
}

/* The group's committed offset of partition 0 is want (reads sleep 100 ms
 * apart). */
static int committed_is(const char *boot, const char *group, const char *topic, int64_t want)
{
    int64_t co[1];
    kk_committed_offsets(boot, group, topic, 1, co);
    if (co[0] == want)
        return 1;
    kk_nap_us(100 * 1000);
    return 0;
}

/* A stage-0 aid of the pipeline other than `not` (a new run), or none. */
static int new_run(rill_pipeline_t *p, rill_aid_t not, rill_aid_t *out)
{
    rill_aid_t a = rill_pipeline_stage(p, 0);
    if (rill_aid_is_none(a) || rill_aid_eq(a, not ))
        return 0;
    *out = a;
    return 1;
}

/* ------------------------------------------------------------------ */
/* Refused at the call                                                 */
/* ------------------------------------------------------------------ */

Test(kafka_misuse, fixed_partition_at_committed_offset_needs_group_id, .timeout = 60)
{
    kk_env_t env;
    kk_env_init(&env);
    kk_load_topic(&env, "t", 1, 20, 50);
    char err[256] = "";

    /* Spawned alone: refused with a sentence naming group.id. */
    rill_consumer_conf_t *c = kk_conf_new(env.boot, NULL, NULL);
    cr_assert_eq(rill_consumer_conf_assign(c, "t", 0, RILL_OFFSET_COMMITTED, err, sizeof(err)),
                 RILL_OK);
    rill_aid_t aid = RILL_AID_NONE;
    rill_err_t e = rill_consumer_spawn(env.sys, c, NULL, &aid, err, sizeof(err));
    cr_assert_eq(e, RILL_EINVAL, "spawn: %s (%s)", rill_err_name(e), err);
    cr_assert_not_null(strstr(err, "group.id"), "errstr: %s", err);
    cr_assert(rill_aid_is_none(aid));

    /* In a pipeline: refused at its start. */
    c = kk_conf_new(env.boot, NULL, NULL);
    kk_conf_assign_all(c, "t", 1, RILL_OFFSET_COMMITTED);
    rill_pipeline_t *p = rill_pipeline_new(env.sys, "no-group");
    cr_assert_eq(rill_pipeline_add(p, rill_kafka_source(c), NULL), RILL_EINVAL);
    rill_pipeline_add(p, rill_sink_ignore(), NULL);
    err[0] = '\0';
    e = rill_pipeline_start(p, err, sizeof(err));
    cr_assert_eq(e, RILL_EINVAL, "pipeline start: %s (%s)", rill_err_name(e), err);
    cr_assert_not_null(strstr(err, "group.id"), "errstr: %s", err);
    rill_pipeline_destroy(p);

    /* Concrete and logical offsets need none: all 20 records. */
    rec_t r;
    rec_init(&r, 0);
    c = kk_conf_new(env.boot, NULL, NULL);
    kk_conf_assign_all(c, "t", 1, RILL_OFFSET_BEGINNING);
    rill_aid_t k = kk_consumer_spawn_ok(env.sys, c, -1);
    rill_aid_t s = kk_sink_spawn_ok(env.sys, rec_sink, &r, -1, k);
    int ok;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, rec_received(&r) >= 20);
    cr_assert(ok, "%ld of 20 records", rec_received(&r));
    char why[128] = "";
    cr_assert(rec_exactly(&r, 0, 20, why, sizeof(why)), "%s", why);
    kk_stop_wait(env.sys, k);
    kk_stop_wait(env.sys, s);
    fix_close(&env, &r);
}

Test(kafka_misuse, bad_regular_expression_in_a_subscription_is_refused, .timeout = 30)
{
    static const char *const bad[] = {"^orders-(", "^[a-", "^a{2,1}", "^(a|b", "^x\\", "^a**{"};
    static const char *const good[] = {"^orders-.*", "^(a|b)[0-9]+$", "^x{1,3}\\.y",
                                       "^[[:alnum:]]"};
    rill_consumer_conf_t *c = rill_consumer_conf_new();
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char err[256] = "";
        rill_err_t e = rill_consumer_conf_subscribe(c, &bad[i], 1, err, sizeof(err));
        cr_assert_eq(e, RILL_EINVAL, "\"%s\" was accepted (%s)", bad[i], rill_err_name(e));
        cr_assert_not_null(strstr(err, "regular expression"), "\"%s\": errstr \"%s\"", bad[i], err);
        cr_assert_not_null(strstr(err, bad[i]), "\"%s\": errstr \"%s\" does not name it", bad[i],
                           err);
    }
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        char err[256] = "";
        cr_assert_eq(rill_consumer_conf_subscribe(c, &good[i], 1, err, sizeof(err)), RILL_OK,
                     "\"%s\": %s", good[i], err);
    }
    /* One bad pattern in a list: nothing of the list is taken. */
    const char *mixed[] = {"plain", "^bad(", "other"};
    cr_assert_eq(rill_consumer_conf_subscribe(c, mixed, 3, NULL, 0), RILL_EINVAL);
    rill_consumer_conf_destroy(c);
}

Test(kafka_misuse, consumer_connected_to_itself_is_refused_and_goes_on, .timeout = 60)
{
    kk_env_t env;
    rec_t r;
    fix_open(&env, &r, "t", 20, 0);
    rill_consumer_conf_t *c = kk_conf_new(env.boot, "g", NULL);
    kk_conf_assign_all(c, "t", 1, RILL_OFFSET_BEGINNING);
    rill_aid_t k = kk_consumer_spawn_ok(env.sys, c, -1);
    rill_aid_t s = kk_sink_spawn_ok(env.sys, rec_sink, &r, -1, k);
    int ok;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, rec_received(&r) >= 20);
    cr_assert(ok, "%ld of 20 records", rec_received(&r));

    rill_aid_t other = kk_stage_spawn_ok(env.sys, rill_sink_ignore(), -1);
    char err[256] = "";
    cr_assert_eq(rill_stage_connect(env.sys, k, k, err, sizeof(err)), RILL_EINVAL);
    cr_assert_not_null(strstr(err, "itself"), "errstr: %s", err);
    cr_assert_eq(rill_stage_connect(env.sys, s, k, err, sizeof(err)), RILL_EINVAL);
    cr_assert_not_null(strstr(err, "sink"), "errstr: %s", err);
    cr_assert_eq(rill_stage_connect(env.sys, other, k, err, sizeof(err)), RILL_EINVAL);
    cr_assert_eq(rill_stage_connect(env.sys, k, s, err, sizeof(err)), RILL_EINVAL,
                 "a second input to the sink");
    cr_assert_eq(rill_stage_connect(env.sys, k, other, err, sizeof(err)), RILL_EINVAL);
    cr_assert_not_null(strstr(err, "subscriber"), "errstr: %s", err);

    /* The consumer and its sink go on: 10 more records arrive. */
    kk_produce_parts(env.boot, "t", 1, 10, 20, 50);
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, rec_received(&r) >= 30);
    cr_assert(ok, "after the refused connections: %ld of 30 records", rec_received(&r));
    cr_assert(rill_alive(env.sys, k) && rill_alive(env.sys, s));
    char why[128] = "";
    cr_assert(rec_exactly(&r, 0, 30, why, sizeof(why)), "%s", why);
    kk_stop_wait(env.sys, other);
    kk_stop_wait(env.sys, k);
    kk_stop_wait(env.sys, s);
    fix_close(&env, &r);
}

/* ------------------------------------------------------------------ */
/* Fatal: the consumer fails for its supervisor                        */
/* ------------------------------------------------------------------ */

/* A consumer of one fixed partition fails within the deadline with a
 * sentence saying what does not exist. */
static void assert_fixed_fails(const char *topic, int32_t partition, int64_t offset,
                               const char *want)
{
    kk_env_t env;
    rec_t r;
    fix_open(&env, &r, "t", 20, 0);
    rill_consumer_conf_t *c = kk_conf_new(env.boot, "g", NULL);
    cr_assert_eq(rill_consumer_conf_assign(c, topic, partition, offset, NULL, 0), RILL_OK);
    rill_pipeline_t *p = start_pipeline(env.sys, "fixed", c, &r, -1);
    char what[128];
    snprintf(what, sizeof(what), "%s [%d] from %" PRId64, topic, (int)partition, offset);
    rill_pipeline_result_t res = wait_failed(p, want, what);
    cr_assert_eq(res.code, RILL_EKAFKA, "%s: %s", what, rill_err_name(res.code));
    cr_assert_eq(rec_received(&r), 0);
    rill_pipeline_destroy(p);
    fix_close(&env, &r);
}

Test(kafka_misuse, fixed_partition_that_does_not_exist_fails_the_consumer, .timeout = 120)
{
    assert_fixed_fails("t", 5, 0, "does not exist");
    assert_fixed_fails("t", 1, RILL_OFFSET_BEGINNING, "does not exist");
    assert_fixed_fails("nope", 0, 0, "does not exist");
    assert_fixed_fails("nope", 0, RILL_OFFSET_COMMITTED, "does not exist");
}

/* Unknown topic: the supervised pipeline fails and restarts; once the
 * topic exists, it goes on from the committed offset. The pipeline reads
 * two fixed partitions: late [0] (30 records, 10 committed) and gate [0]
 * (made last: until then every run fails), so that no run can start
 * between late's records and its commit. */
Test(kafka_misuse, supervised_pipeline_resumes_once_the_unknown_topic_exists, .timeout = 120)
{
    kk_env_t env;
    kk_env_init(&env);
    kk_load_topic(&env, "late", 1, 30, 50);
    kk_commit_plain(env.boot, "late-group", "late", 1, 10);
    rec_t r;
    rec_init(&r, 0);
    const char *kv[] = {"auto.offset.reset", "earliest", NULL};
    rill_consumer_conf_t *c = kk_conf_new(env.boot, "late-group", kv);
    kk_conf_assign_all(c, "late", 1, RILL_OFFSET_COMMITTED);
    cr_assert_eq(rill_consumer_conf_assign(c, "gate", 0, 0, NULL, 0), RILL_OK);
    rill_pipeline_t *p = start_pipeline(env.sys, "late", c, &r, 1000);
    rill_aid_t first = RILL_AID_NONE, second = RILL_AID_NONE;
    int ok;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, new_run(p, RILL_AID_NONE, &first));
    cr_assert(ok, "the pipeline never ran");
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, new_run(p, first, &second));
    cr_assert(ok, "the consumer of an unknown topic did not fail (no restart)");
    cr_assert_eq(rec_received(&r), 0, "a run read records with a topic missing");

    kk_create_topic(&env, "gate", 1);
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, rec_received(&r) >= 20);
    cr_assert(ok, "after the topic was made: %ld of 20 records", rec_received(&r));
    char why[128] = "";
    cr_assert(rec_exactly(&r, 10, 30, why, sizeof(why)), "not from the committed offset: %s", why);
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, committed_is(env.boot, "late-group", "late", 30));
    cr_assert(ok, "the resumed run did not commit to the end");
    stop_restarted(p);
    fix_close(&env, &r);
}

/* The cause never goes: the supervisor gives up after its restarts, and
 * the pipeline ends FAILED with the consumer's sentence. */
Test(kafka_misuse, supervised_pipeline_gives_up_on_a_missing_partition, .timeout = 120)
{
    kk_env_t env;
    rec_t r;
    fix_open(&env, &r, "t", 20, 0);
    rill_consumer_conf_t *c = kk_conf_new(env.boot, "g", NULL);
    kk_conf_assign_all(c, "t", 3, RILL_OFFSET_BEGINNING); /* t has 1 */
    rill_pipeline_t *p = start_pipeline(env.sys, "missing", c, &r, 2);
    rill_pipeline_result_t res = wait_failed(p, "t [1] does not exist", "the supervisor gives up");
    cr_assert_eq(res.restarts, 2, "%u restarts", res.restarts);
    rill_pipeline_destroy(p);
    fix_close(&env, &r);
}

/* A fatal librdkafka error fails the consumer; the supervised pipeline
 * restarts with a new client and goes on from the committed offset:
 * nothing read twice, nothing skipped. */
Test(kafka_misuse, fatal_client_error_restarts_from_the_committed_offsets, .timeout = 120)
{
    kk_env_t env;
    rec_t r;
    fix_open(&env, &r, "f", 50, 0);
    const char *kv[] = {"rill.commit.interval.ms", "100", NULL};
    rill_consumer_conf_t *c = kk_conf_new(env.boot, "fatal-group", kv);
    kk_conf_assign_all(c, "f", 1, RILL_OFFSET_COMMITTED);
    cr_assert_eq(rill_consumer_conf_set(c, "auto.offset.reset", "earliest", NULL, 0), RILL_OK);
    rill_pipeline_t *p = start_pipeline(env.sys, "fatal", c, &r, 10);
    int ok;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, committed_is(env.boot, "fatal-group", "f", 50));
    cr_assert(ok, "the first run did not commit its 50 records");
    rill_aid_t first = rill_pipeline_stage(p, 0), second;
    cr_assert_eq(rill__consumer_test_fatal(env.sys, first, RD_KAFKA_RESP_ERR__INCONSISTENT),
                 RILL_OK);
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, new_run(p, first, &second));
    cr_assert(ok, "the consumer did not fail on a fatal error");
    cr_assert(kit_wait_dead(env.sys, first, KK_WAIT_MS));

    kk_produce_parts(env.boot, "f", 1, 20, 50, 50);
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, rec_received(&r) >= 70);
    cr_assert(ok, "after the restart: %ld of 70 records", rec_received(&r));
    char why[128] = "";
    cr_assert(rec_exactly(&r, 0, 70, why, sizeof(why)), "%s", why);
    stop_restarted(p);
    fix_close(&env, &r);
}

/* ------------------------------------------------------------------ */
/* What the program can know                                           */
/* ------------------------------------------------------------------ */

static int consumer_stats(rill_system_t *sys, rill_aid_t k, rill_consumer_stats_t *s)
{
    return rill_consumer_stats(sys, k, s) == RILL_OK;
}

static int producer_stats(rill_system_t *sys, rill_aid_t k, rill_producer_stats_t *s)
{
    return rill_producer_stats(sys, k, s) == RILL_OK;
}

Test(kafka_misuse, unreachable_bootstrap_server_shows_in_the_stats, .timeout = 120)
{
    kk_env_t env;
    kk_env_init(&env);
    kk_create_topic(&env, "t", 1);

    /* Nobody listens on 127.0.0.1:1. */
    rill_consumer_conf_t *c = kk_conf_new("127.0.0.1:1", "g", NULL);
    kk_conf_subscribe1(c, "t");
    rill_aid_t k = kk_consumer_spawn_ok(env.sys, c, -1);
    rill_aid_t ks = kk_stage_spawn_ok(env.sys, rill_sink_ignore(), -1);
    kk_connect_ok(env.sys, k, ks);
    rill_producer_conf_t *pc = rill_producer_conf_new();
    cr_assert_eq(rill_producer_conf_set(pc, "bootstrap.servers", "127.0.0.1:1", NULL, 0), RILL_OK);
    rill_aid_t pr = kk_producer_spawn_ok(env.sys, pc, -1);
    rill_consumer_stats_t cs;
    rill_producer_stats_t ps;
    int ok;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, consumer_stats(env.sys, k, &cs) && cs.errors > 0);
    cr_assert(ok, "the consumer counted no error");
    cr_assert_gt(strlen(cs.last_error), 0);
    cr_assert(strstr(cs.last_error, "127.0.0.1:1") || strstr(cs.last_error, "down"),
              "last_error: %s", cs.last_error);
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, producer_stats(env.sys, pr, &ps) && ps.errors > 0);
    cr_assert(ok, "the producer counted no error");
    cr_assert(strstr(ps.last_error, "127.0.0.1:1") || strstr(ps.last_error, "down"),
              "last_error: %s", ps.last_error);

    /* The same against the embedded broker: connected. */
    rill_consumer_conf_t *c2 = kk_conf_new(env.boot, "g2", NULL);
    kk_conf_assign_all(c2, "t", 1, RILL_OFFSET_BEGINNING);
    rill_aid_t k2 = kk_consumer_spawn_ok(env.sys, c2, -1);
    rill_aid_t k2s = kk_stage_spawn_ok(env.sys, rill_sink_ignore(), -1);
    kk_connect_ok(env.sys, k2, k2s);
    pc = rill_producer_conf_new();
    cr_assert_eq(rill_producer_conf_set(pc, "bootstrap.servers", env.boot, NULL, 0), RILL_OK);
    cr_assert_eq(rill_producer_conf_set(pc, "rill.topics", "t", NULL, 0), RILL_OK);
    rill_aid_t pr2 = kk_producer_spawn_ok(env.sys, pc, -1);
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, consumer_stats(env.sys, k2, &cs) && cs.connected);
    cr_assert(ok, "the consumer of the embedded broker is not connected");
    cr_assert_eq(cs.brokers_up, 1, "%u brokers up of 1", cs.brokers_up);
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, producer_stats(env.sys, pr2, &ps) && ps.connected);
    cr_assert(ok, "the producer of the embedded broker is not connected");
    cr_assert_eq(ps.brokers_up, 1, "%u brokers up of 1", ps.brokers_up);

    /* By then (statistics came for the others) the unreachable ones are
     * known not to be connected, and never were. */
    cr_assert(consumer_stats(env.sys, k, &cs));
    cr_assert_eq(cs.connected, 0);
    cr_assert_eq(cs.brokers_up, 0);
    cr_assert(producer_stats(env.sys, pr, &ps));
    cr_assert_eq(ps.connected, 0);
    cr_assert_eq(ps.brokers_up, 0);

    /* The broker goes down: the connected ones say so. */
    cr_assert_eq(rill_broker_set_down(env.broker, 1), RILL_OK);
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, consumer_stats(env.sys, k2, &cs) && !cs.connected);
    cr_assert(ok, "the consumer still says connected with its broker down");
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, producer_stats(env.sys, pr2, &ps) && !ps.connected);
    cr_assert(ok, "the producer still says connected with its broker down");
    cr_assert_eq(rill_broker_set_up(env.broker, 1), RILL_OK);
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, consumer_stats(env.sys, k2, &cs) && cs.connected);
    cr_assert(ok, "the consumer did not see its broker come back");

    kk_stop_wait(env.sys, k);
    kk_stop_wait(env.sys, ks);
    kk_stop_wait(env.sys, k2);
    kk_stop_wait(env.sys, k2s);
    kk_stop_wait(env.sys, pr);
    kk_stop_wait(env.sys, pr2);
    kk_env_fini(&env);
}

/* Self-managed offsets and a sink that never confirms: emitting stops at
 * exactly rill.max.unconfirmed, and the stats say so (once per episode);
 * confirming ends the episode. */
Test(kafka_misuse, blocked_on_unconfirmed_records_shows_in_the_stats, .timeout = 60)
{
    kk_env_t env;
    rec_t r;
    fix_open(&env, &r, "u", 50, 1);
    const char *kv[] = {"rill.commit", "false", "rill.max.unconfirmed", "10", NULL};
    rill_consumer_conf_t *c = kk_conf_new(env.boot, "g", kv);
    kk_conf_assign_all(c, "u", 1, RILL_OFFSET_BEGINNING);
    rill_aid_t k = kk_consumer_spawn_ok(env.sys, c, -1);
    rill_aid_t s = kk_stage_spawn_ok(env.sys, rill_sink_foreach_manual(rec_sink, &r), -1);
    kk_connect_ok(env.sys, k, s);
    rill_consumer_stats_t cs;
    int ok;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, consumer_stats(env.sys, k, &cs) && cs.blocked);
    cr_assert(ok, "the consumer never said it is blocked");
    cr_assert_eq(cs.blocked_episodes, 1);
    cr_assert_eq(cs.unconfirmed, 10);
    cr_assert_eq(cs.emitted, 10);
    /* The tenth may still be on its way to the sink. */
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, rec_received(&r) >= 10);
    cr_assert_eq(rec_received(&r), 10);

    rec_confirm_held(&r);
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, rec_received(&r) >= 50);
    cr_assert(ok, "after the confirms: %ld of 50 records", rec_received(&r));
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, consumer_stats(env.sys, k, &cs) && cs.unconfirmed == 0);
    cr_assert(ok);
    cr_assert_eq(cs.blocked, 0);
    cr_assert_eq(cs.blocked_episodes, 1);
    kk_stop_wait(env.sys, k);
    kk_stop_wait(env.sys, s);
    fix_close(&env, &r);
}

/* A fatal error the broker causes, without test hooks: a static group
 * member (group.instance.id) told it is fenced (FENCED_INSTANCE_ID on a
 * Heartbeat) is a fatal librdkafka error; the consumer fails with it. */
Test(kafka_misuse, fenced_static_member_is_a_fatal_error, .timeout = 120)
{
    kk_env_t env;
    rec_t r;
    fix_open(&env, &r, "s", 10, 0);
    const char *kv[] = {"group.instance.id",
                        "static-1",
                        "session.timeout.ms",
                        "6000",
                        "heartbeat.interval.ms",
                        "200",
                        "auto.offset.reset",
                        "earliest",
                        NULL};
    rill_consumer_conf_t *c = kk_conf_new(env.boot, "static-group", kv);
    kk_conf_subscribe1(c, "s");
    rill_pipeline_t *p = start_pipeline(env.sys, "static", c, &r, -1);
    int ok;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, rec_received(&r) >= 10);
    cr_assert(ok, "%ld of 10 records", rec_received(&r));
    cr_assert_eq(rill_broker_push_request_errors(env.broker, rill_api_key_from_name("Heartbeat"), 3,
                                                 RD_KAFKA_RESP_ERR_FENCED_INSTANCE_ID),
                 RILL_OK);
    rill_pipeline_result_t res = wait_failed(p, "fatal", "the fenced consumer");
    cr_assert_eq(res.code, RILL_EKAFKA, "%s", rill_err_name(res.code));
    rill_broker_clear_request_errors(env.broker, rill_api_key_from_name("Heartbeat"));
    rill_pipeline_destroy(p);
    fix_close(&env, &r);
}
