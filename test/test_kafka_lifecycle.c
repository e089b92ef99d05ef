/*
 * The Kafka consumer's lifecycle against the embedded broker: stopping
 * with every broker down (a consumer alone and in a pipeline), during a
 * rebalance and during a drain, always within a bound and leaving a
 * system that can be destroyed; stopping a member that joined its group
 * but has no assignment yet (librdkafka #4312 on 2.0.2 with
 * cooperative-sticky); the order in which the application hears of a
 * revoke (before the commit and the release, also at the end of a run);
 * partitions lost rather than revoked; a rebalance while a commit is in
 * flight.
 *
 * Sinks never assert: they record under a mutex, and the test thread
 * waits on what they recorded with deadlines. Rebalance and commit
 * callbacks append to one event log (also under the mutex), so that the
 * order of REVOKED and of commits can be checked afterwards.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <rill/kafka.h>
#include <rill/stream.h>
#include <rill/testkit.h>

#include "support/rtest.h"

#include "support/actor_kit.h"
#include "support/kafka_kit.h"

#define MAXP 8

/* A stop with every broker down must end within this (the stop budget is
 * drain + shutdown + 2 s; generous for sanitizers on two cores). */
#define STOP_BOUND_MS 20000

/* ------------------------------------------------------------------ */
/* An event log: rebalances and commits, in the order they happened    */
/* ------------------------------------------------------------------ */

typedef enum { EV_ASSIGNED = 1, EV_REVOKED, EV_LOST, EV_COMMIT } ev_kind_t;

typedef struct ev {
    ev_kind_t kind;
    uint32_t parts; /* bit per partition */
    int failed;     /* EV_COMMIT: its result */
    int64_t offset[MAXP];
} ev_t;

#define MAX_EVENTS 4096

typedef struct evlog {
    pthread_mutex_t mu;
    ev_t ev[MAX_EVENTS];
    int n;
    uint32_t assigned; /* now */
} evlog_t;

static void evlog_init(evlog_t *l)
{
    memset(l, 0, sizeof(*l));
    pthread_mutex_init(&l->mu, NULL);
}

static void on_rebalance(void *opaque, rill_rebalance_event_t ev,
                         const rd_kafka_topic_partition_list_t *parts)
{
    evlog_t *l = opaque;
    pthread_mutex_lock(&l->mu);
    uint32_t bits = 0;
    for (int i = 0; i < parts->cnt; i++)
        if (parts->elems[i].partition >= 0 && parts->elems[i].partition < MAXP)
            bits |= 1u << parts->elems[i].partition;
    if (ev == RILL_REBALANCE_ASSIGNED)
        l->assigned |= bits;
    else
        l->assigned &= ~bits;
    if (l->n < MAX_EVENTS) {
        ev_t *e = &l->ev[l->n++];
        memset(e, 0, sizeof(*e));
        e->kind = ev == RILL_REBALANCE_ASSIGNED  ? EV_ASSIGNED
                  : ev == RILL_REBALANCE_REVOKED ? EV_REVOKED
                                                 : EV_LOST;
        e->parts = bits;
    }
    pthread_mutex_unlock(&l->mu);
}

static void on_commit(void *opaque, rd_kafka_resp_err_t err,
                      const rd_kafka_topic_partition_list_t *offsets)
{
    evlog_t *l = opaque;
    pthread_mutex_lock(&l->mu);
    if (l->n < MAX_EVENTS) {
        ev_t *e = &l->ev[l->n++];
        memset(e, 0, sizeof(*e));
        e->kind = EV_COMMIT;
        e->failed = err != 0;
        for (int i = 0; i < offsets->cnt; i++) {
            int p = offsets->elems[i].partition;
            if (p < 0 || p >= MAXP)
                continue;
            e->parts |= 1u << p;
            e->offset[p] = offsets->elems[i].offset;
            e->failed |= offsets->elems[i].err != 0;
        }
    }
    pthread_mutex_unlock(&l->mu);
}

static void evlog_attach(rill_consumer_conf_t *c, evlog_t *l)
{
    cr_assert_eq(rill_consumer_conf_set_rebalance_cb(c, on_rebalance, l), RILL_OK);
    cr_assert_eq(rill_consumer_conf_set_commit_cb(c, on_commit, l), RILL_OK);
}

/* How many events of kind touched any of parts. */
static int evlog_count(evlog_t *l, ev_kind_t kind, uint32_t parts)
{
    int n = 0;
    pthread_mutex_lock(&l->mu);
    for (int i = 0; i < l->n; i++)
        n += l->ev[i].kind == kind && (l->ev[i].parts & parts);
    pthread_mutex_unlock(&l->mu);
    return n;
}

static uint32_t evlog_assigned(evlog_t *l)
{
    pthread_mutex_lock(&l->mu);
    uint32_t a = l->assigned;
    pthread_mutex_unlock(&l->mu);
    return a;
}

/* The index of the last event of kind touching parts, or -1. */
static int evlog_last(evlog_t *l, ev_kind_t kind, uint32_t parts)
{
    int at = -1;
    pthread_mutex_lock(&l->mu);
    for (int i = 0; i < l->n; i++)
        if (l->ev[i].kind == kind && (l->ev[i].parts & parts))
            at = i;
    pthread_mutex_unlock(&l->mu);
    return at;
}

/* The last successful commit of partition p (-1: none). */
static int64_t evlog_committed(evlog_t *l, int p)
{
    int64_t off = -1;
    pthread_mutex_lock(&l->mu);
    for (int i = 0; i < l->n; i++)
        if (l->ev[i].kind == EV_COMMIT && !l->ev[i].failed && (l->ev[i].parts & (1u << p)))
            off = l->ev[i].offset[p];
    pthread_mutex_unlock(&l->mu);
    return off;
}

/* The offset of partition p in the last commit, whatever its result
 * (-1: none). */
static int64_t evlog_sent(evlog_t *l, int p)
{
    int64_t off = -1;
    pthread_mutex_lock(&l->mu);
    for (int i = 0; i < l->n; i++)
        if (l->ev[i].kind == EV_COMMIT && (l->ev[i].parts & (1u << p)))
            off = l->ev[i].offset[p];
    pthread_mutex_unlock(&l->mu);
    return off;
}

static void evlog_print(evlog_t *l, const char *who)
{
    static const char *names[] = {"", "ASSIGNED", "REVOKED", "LOST", "COMMIT"};
    pthread_mutex_lock(&l->mu);
    for (int i = 0; i < l->n; i++)
        fprintf(stderr, "%s: %d %s %#x%s\n", who, i, names[l->ev[i].kind], l->ev[i].parts,
                l->ev[i].failed ? " failed" : "");
    pthread_mutex_unlock(&l->mu);
}

/* ------------------------------------------------------------------ */
/* A sink that confirms, or holds records from an offset on            */
/* ------------------------------------------------------------------ */

typedef struct hsink {
    pthread_mutex_t mu;
    int64_t hold_from; /* hold records at offsets >= this (-1: hold nothing) */
    rill_elem_t *held;
    size_t n_held, cap;
    long received, confirmed;
    long per_part[MAXP];
} hsink_t;

static void hsink_init(hsink_t *h, int64_t hold_from)
{
    memset(h, 0, sizeof(*h));
    pthread_mutex_init(&h->mu, NULL);
    h->hold_from = hold_from;
}

static rill_err_t hsink_fn(void *opaque, rill_elem_t *e)
{
    hsink_t *h = opaque;
    const rd_kafka_message_t *m = rill_record(e);
    pthread_mutex_lock(&h->mu);
    h->received++;
    if (m && m->partition >= 0 && m->partition < MAXP)
        h->per_part[m->partition]++;
    int hold = m && h->hold_from >= 0 && m->offset >= h->hold_from;
    if (hold && h->n_held == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 256;
        rill_elem_t *v = realloc(h->held, cap * sizeof(*v));
        if (v) {
            h->held = v;
            h->cap = cap;
        } else {
            hold = 0;
        }
    }
    if (hold) {
        h->held[h->n_held++] = *e;
    } else {
        h->confirmed++;
    }
    pthread_mutex_unlock(&h->mu);
    if (!hold)
        rill_elem_confirm(e);
    return RILL_OK;
}

static long hsink_received(hsink_t *h)
{
    pthread_mutex_lock(&h->mu);
    long n = h->received;
    pthread_mutex_unlock(&h->mu);
    return n;
}

static size_t hsink_n_held(hsink_t *h)
{
    pthread_mutex_lock(&h->mu);
    size_t n = h->n_held;
    pthread_mutex_unlock(&h->mu);
    return n;
}

/* Stop holding; confirm (or release) what is held; how many. */
static size_t hsink_flush(hsink_t *h, int confirm)
{
    pthread_mutex_lock(&h->mu);
    h->hold_from = -1;
    rill_elem_t *v = h->held;
    size_t n = h->n_held;
    h->held = NULL;
    h->n_held = h->cap = 0;
    pthread_mutex_unlock(&h->mu);
    for (size_t i = 0; i < n; i++) {
        if (confirm)
            rill_elem_confirm(&v[i]);
        else
            rill_elem_release(&v[i]);
    }
    free(v);
    return n;
}

/* Confirm the held records at offsets below `below`; how many. */
static size_t hsink_confirm_below(hsink_t *h, int64_t below)
{
    rill_elem_t *v = NULL;
    size_t n = 0;
    pthread_mutex_lock(&h->mu);
    v = malloc((h->n_held ? h->n_held : 1) * sizeof(*v));
    size_t keep = 0;
    for (size_t i = 0; v && i < h->n_held; i++) {
        if (rill_record(&h->held[i])->offset < below)
            v[n++] = h->held[i];
        else
            h->held[keep++] = h->held[i];
    }
    if (v)
        h->n_held = keep;
    pthread_mutex_unlock(&h->mu);
    for (size_t i = 0; i < n; i++)
        rill_elem_confirm(&v[i]);
    free(v);
    return n;
}

static void hsink_fini(hsink_t *h)
{
    hsink_flush(h, 0);
    pthread_mutex_destroy(&h->mu);
}

/* ------------------------------------------------------------------ */
/* Helpers                                                             */
/* ------------------------------------------------------------------ */

static const char *const member_kv[] = {"session.timeout.ms",
                                        "3000",
                                        "heartbeat.interval.ms",
                                        "500",
                                        "auto.offset.reset",
                                        "earliest",
                                        "rill.commit.interval.ms",
                                        "100",
                                        "rill.drain.timeout.ms",
                                        "500",
                                        "rill.shutdown.timeout.ms",
                                        "1000",
                                        "reconnect.backoff.ms",
                                        "50",
                                        "reconnect.backoff.max.ms",
                                        "500",
                                        NULL};

/* A group member of `group` on `topic`, its callbacks into l (if set). */
static rill_consumer_conf_t *member_conf(kk_env_t *env, const char *group, const char *topic,
                                         evlog_t *l, const char *const *extra)
{
    rill_consumer_conf_t *c = kk_conf_new(env->boot, group, member_kv);
    if (extra)
        kk_conf_set_kv(c, extra);
    kk_conf_subscribe1(c, topic);
    if (l)
        evlog_attach(c, l);
    return c;
}

/* Stop an actor and assert it is gone within STOP_BOUND_MS. */
static void stop_bounded(rill_system_t *sys, rill_aid_t aid, const char *what)
{
    int64_t t0 = kit_now_ms();
    fprintf(stderr, "%s: stopping\n", what);
    rill_stop(sys, aid);
    int dead = kit_wait_dead(sys, aid, STOP_BOUND_MS);
    fprintf(stderr, "%s: stopped in %lld ms\n", what, (long long)(kit_now_ms() - t0));
    cr_assert(dead, "%s did not stop within %d ms", what, STOP_BOUND_MS);
}

/* Stop the system within STOP_BOUND_MS, destroy it and the broker. */
static void env_fini_bounded(kk_env_t *env)
{
    int64_t t0 = kit_now_ms();
    rill_err_t e = rill_system_stop(env->sys, STOP_BOUND_MS);
    fprintf(stderr, "system stopped in %lld ms\n", (long long)(kit_now_ms() - t0));
    cr_assert_eq(e, RILL_OK, "rill_system_stop: %s", rill_err_name(e));
    rill_system_destroy(env->sys);
    rill_broker_destroy(env->broker);
}

static void print_clients(const char *what)
{
    rill_kafka_clients_stats_t cs;
    rill_kafka_clients_stats(&cs);
    fprintf(stderr,
            "%s: clients closing %llu, destroyed %llu, abandoned %llu, destroyed late %llu\n", what,
            (unsigned long long)cs.closing, (unsigned long long)cs.destroyed,
            (unsigned long long)cs.abandoned, (unsigned long long)cs.destroy_late);
}

#define PARTS 4
#define PER   500
#define HEAD  300

/* The broker, the system and `topic` with PARTS partitions of `per`
 * records. */
static void env_up(kk_env_t *env, const char *topic, size_t per)
{
    kk_env_init(env);
    kk_load_topic(env, topic, PARTS, per, 100);
}

/* A group member: a consumer (its events in l) and a sink h subscribed
 * to it. */
typedef struct member {
    evlog_t l;
    hsink_t h;
    rill_aid_t consumer, sink;
} member_t;

/* Starts m with conf c (its callbacks already into m->l, or none). */
static void member_spawn(kk_env_t *env, member_t *m, int64_t hold_from, rill_consumer_conf_t *c)
{
    hsink_init(&m->h, hold_from);
    m->consumer = kk_consumer_spawn_ok(env->sys, c, -1);
    m->sink = kk_sink_spawn_ok(env->sys, hsink_fn, &m->h, -1, m->consumer);
}

/* Starts m as a member of `group` on `topic`, holding from hold_from. */
static void member_start(kk_env_t *env, member_t *m, const char *group, const char *topic,
                         int64_t hold_from, const char *const *extra)
{
    evlog_init(&m->l);
    member_spawn(env, m, hold_from, member_conf(env, group, topic, &m->l, extra));
}

/* Stops m's consumer and sink, then the system and the broker. */
static void member_end(kk_env_t *env, member_t *m, const char *what)
{
    stop_bounded(env->sys, m->consumer, what);
    stop_bounded(env->sys, m->sink, "sink");
    env_fini_bounded(env);
    hsink_fini(&m->h);
}

/* Waits until h received n records. */
static void wait_received(hsink_t *h, long n)
{
    int ok;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, hsink_received(h) == n);
    cr_assert(ok, "%ld of %ld records received", hsink_received(h), n);
}

/* Waits until the first and the last partition committed HEAD. */
static void wait_head_committed(evlog_t *l, const char *who)
{
    int ok;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS,
                  evlog_committed(l, 0) == HEAD && evlog_committed(l, PARTS - 1) == HEAD);
    cr_assert(ok, "%s did not commit its head", who);
}

/* The application was told of the final revoke of every partition before
 * the last commit; the index of that REVOKED. */
static int revoked_before_last_commit(evlog_t *l)
{
    int rev = evlog_last(l, EV_REVOKED, 0xFu);
    int com = evlog_last(l, EV_COMMIT, 0xFu);
    cr_assert_geq(rev, 0, "the application was not told of the final revoke");
    cr_assert_lt(rev, com, "REVOKED (event %d) after the last commit (event %d)", rev, com);
    return rev;
}

/* A pipeline `name`: a member of `name`-group on `name` (its events in
 * m->l), `mid` (if set) and the sink m->h holding from hold_from; started
 * supervised or not. */
static rill_pipeline_t *pipeline_up(kk_env_t *env, const char *name, member_t *m, int64_t hold_from,
                                    const char *const *extra, rill_stage_t *mid, int supervised)
{
    evlog_init(&m->l);
    hsink_init(&m->h, hold_from);
    char group[64], topic[64];
    snprintf(group, sizeof(group), "%s-group", name);
    snprintf(topic, sizeof(topic), "%s", name);
    rill_pipeline_t *p = rill_pipeline_new(env->sys, name);
    cr_assert_not_null(p);
    cr_assert_eq(
        rill_pipeline_add(p, rill_kafka_source(member_conf(env, group, topic, &m->l, extra)), NULL),
        RILL_OK);
    if (mid)
        cr_assert_eq(rill_pipeline_add(p, mid, NULL), RILL_OK);
    cr_assert_eq(rill_pipeline_add(p, rill_sink_foreach_manual(hsink_fn, &m->h), NULL), RILL_OK);
    char err[256] = "";
    rill_err_t e = supervised ? rill_pipeline_start_supervised(p, NULL, err, sizeof(err))
                              : rill_pipeline_start(p, err, sizeof(err));
    cr_assert_eq(e, RILL_OK, "%s", err);
    return p;
}

/* Stops p and asserts it ended within STOP_BOUND_MS. */
static rill_pipeline_result_t pipeline_stop_bounded(rill_pipeline_t *p, const char *what)
{
    int64_t t0 = kit_now_ms();
    cr_assert_eq(rill_pipeline_stop(p), RILL_OK);
    rill_pipeline_result_t r;
    rill_err_t e = rill_pipeline_wait(p, STOP_BOUND_MS, &r);
    fprintf(stderr, "%s: ended in %lld ms\n", what, (long long)(kit_now_ms() - t0));
    cr_assert_eq(e, RILL_OK, "%s: the pipeline did not end within %d ms", what, STOP_BOUND_MS);
    return r;
}

/* ------------------------------------------------------------------ */
/* Stopping with every broker down                                     */
/* ------------------------------------------------------------------ */

Test(kafka_lifecycle, stop_with_brokers_down_is_bounded, .timeout = 120)
{
    kk_env_t env;
    env_up(&env, "down", PER);
    member_t m; /* records past the head stay in flight */
    member_start(&env, &m, "down-group", "down", HEAD, NULL);
    wait_received(&m.h, PARTS * PER);
    wait_head_committed(&m.l, "the consumer");

    cr_assert_eq(hsink_n_held(&m.h), PARTS * (PER - HEAD));
    rill_kafka_clients_stats_t before, now;
    rill_kafka_clients_stats(&before);
    cr_assert_eq(rill_broker_set_down(env.broker, RILL_BROKER_ALL), RILL_OK);
    stop_bounded(env.sys, m.consumer, "consumer with the brokers down");
    /* The held records outlive the consumer: their release destroys the
     * client, which must not hang either. */
    hsink_flush(&m.h, 1);
    stop_bounded(env.sys, m.sink, "sink");
    print_clients("brokers down");
    /* The client could not leave its group: its own thread goes on with
     * the close, and destroys it once the brokers are back. */
    rill_kafka_clients_stats(&now);
    cr_assert_eq(now.closing, before.closing + 1, "the client is not being closed");
    cr_assert_eq(rill_broker_set_up(env.broker, RILL_BROKER_ALL), RILL_OK);
    int destroyed;
    KK_WAIT_UNTIL(destroyed, KK_WAIT_MS,
                  (rill_kafka_clients_stats(&now), now.destroyed > before.destroyed));
    print_clients("brokers back");
    cr_assert(destroyed, "the client was not destroyed after the brokers came back");
    cr_assert_eq(now.closing, before.closing);
    cr_assert_eq(now.abandoned, before.abandoned);
    env_fini_bounded(&env);
    hsink_fini(&m.h);
}

Test(kafka_lifecycle, pipeline_stop_with_brokers_down_is_bounded, .timeout = 120)
{
    kk_env_t env;
    env_up(&env, "pdown", PER);
    member_t m;
    rill_pipeline_t *p = pipeline_up(&env, "pdown", &m, HEAD, NULL, NULL, 0);
    wait_received(&m.h, PARTS * PER);

    cr_assert_eq(rill_broker_set_down(env.broker, RILL_BROKER_ALL), RILL_OK);
    rill_pipeline_result_t r = pipeline_stop_bounded(p, "pipeline with the brokers down");
    cr_assert_eq(r.end, RILL_PIPELINE_STOPPED);
    hsink_flush(&m.h, 0);
    rill_pipeline_destroy(p);
    print_clients("pipeline, brokers down");
    env_fini_bounded(&env);
    hsink_fini(&m.h);
}

/* The system stop alone (no actor stopped first) with the brokers down. */
Test(kafka_lifecycle, system_stop_with_brokers_down_is_bounded, .timeout = 120)
{
    kk_env_t env;
    env_up(&env, "sdown", PER);
    member_t m;
    member_spawn(&env, &m, -1, member_conf(&env, "sdown-group", "sdown", NULL, NULL));
    wait_received(&m.h, PARTS * PER);
    cr_assert_eq(rill_broker_set_down(env.broker, RILL_BROKER_ALL), RILL_OK);
    env_fini_bounded(&env);
    hsink_fini(&m.h);
}

/* ------------------------------------------------------------------ */
/* Stopping during a rebalance, during a drain                         */
/* ------------------------------------------------------------------ */

Test(kafka_lifecycle, stop_during_a_rebalance_commits_and_tells_first, .timeout = 180)
{
    kk_env_t env;
    env_up(&env, "rbs", PER);
    /* Member 1 waits long for the confirms of a revoke: it is stopped in
     * the middle of that wait. */
    /* Eager: with cooperative-sticky the embedded broker (2.0.2, and
     * still 2.8.0) often loses the assignments (ILLEGAL_GENERATION from
     * SyncGroup) instead of revoking them. It also answers every
     * OffsetCommit during an eager rebalance with REBALANCE_IN_PROGRESS
     * (a real broker takes them while the group prepares its rebalance):
     * what matters here is what rill sends, and when. */
    const char *slow_drain[] = {"rill.drain.timeout.ms", "8000", "partition.assignment.strategy",
                                "range", NULL};
    const char *eager[] = {"partition.assignment.strategy", "range", NULL};
    member_t m1, m2;
    member_start(&env, &m1, "rbs-group", "rbs", HEAD, slow_drain);
    wait_received(&m1.h, PARTS * PER);
    wait_head_committed(&m1.l, "member 1");

    /* Member 2 joins: member 1's revoke waits for its held records. */
    member_start(&env, &m2, "rbs-group", "rbs", -1, eager);
    rill_aid_t c1 = m1.consumer;
    int ok;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, kk_consumer_stats_ok(env.sys, c1).revoking > 0);
    if (!ok) {
        evlog_print(&m1.l, "member 1");
        evlog_print(&m2.l, "member 2");
    }
    cr_assert(ok, "member 1 did not start revoking");
    cr_assert_eq(evlog_count(&m1.l, EV_REVOKED, ~0u), 0, "told of the revoke before it drained");
    /* Some of the held records come back during the revoke: the final
     * commit carries them. */
    uint64_t confirmed = kk_consumer_stats_ok(env.sys, c1).confirmed;
    size_t back = hsink_confirm_below(&m1.h, HEAD + 50);
    cr_assert_eq(back, PARTS * 50);
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, kk_consumer_stats_ok(env.sys, c1).confirmed >= confirmed + back);
    cr_assert(ok, "the confirms did not arrive");
    cr_assert_gt(kk_consumer_stats_ok(env.sys, c1).revoking, 0, "the revoke is over");

    stop_bounded(env.sys, c1, "member 1 during its revoke");
    /* Told, then committed: the REVOKED of every partition comes before
     * the last commit. */
    evlog_print(&m1.l, "member 1");
    revoked_before_last_commit(&m1.l);
    for (int p = 0; p < PARTS; p++)
        cr_assert_eq(evlog_sent(&m1.l, p), HEAD + 50, "[%d] the last commit sent %" PRId64, p,
                     evlog_sent(&m1.l, p));

    /* Member 2 takes everything and goes on from member 1's commits. */
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, evlog_assigned(&m2.l) == 0xFu);
    cr_assert(ok, "member 2 has %#x", evlog_assigned(&m2.l));
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, hsink_received(&m2.h) >= PARTS * (PER - HEAD - 50));
    cr_assert(ok, "member 2 got %ld records", hsink_received(&m2.h));
    /* Member 1's late confirms are fenced (the consumer is gone). */
    hsink_flush(&m1.h, 1);
    stop_bounded(env.sys, m2.consumer, "member 2");
    stop_bounded(env.sys, m1.sink, "sink 1");
    stop_bounded(env.sys, m2.sink, "sink 2");
    env_fini_bounded(&env);
    hsink_fini(&m1.h);
    hsink_fini(&m2.h);
}

Test(kafka_lifecycle, stop_during_a_drain_is_bounded, .timeout = 120)
{
    kk_env_t env;
    env_up(&env, "drs", PER);
    member_t m;
    const char *kv[] = {"rill.drain.timeout.ms", "2000", NULL};
    rill_pipeline_t *p = pipeline_up(&env, "drs", &m, HEAD, kv, NULL, 0);
    wait_received(&m.h, PARTS * PER);
    wait_head_committed(&m.l, "the pipeline");

    /* A drain waits for the held records without a deadline; a stop
     * during it ends within the drain timeout. */
    cr_assert_eq(rill_pipeline_drain(p), RILL_OK);
    rill_pipeline_result_t r;
    cr_assert_eq(rill_pipeline_wait(p, 300, &r), RILL_ETIMEDOUT, "the drain did not wait");
    pipeline_stop_bounded(p, "stop during a drain");
    revoked_before_last_commit(&m.l);
    for (int q = 0; q < PARTS; q++)
        cr_assert_eq(evlog_committed(&m.l, q), HEAD);
    hsink_flush(&m.h, 1);
    rill_pipeline_destroy(p);
    env_fini_bounded(&env);
    hsink_fini(&m.h);
}

/* ------------------------------------------------------------------ */
/* A member that joined but has no assignment yet                      */
/* ------------------------------------------------------------------ */

/* SyncGroup answers REBALANCE_IN_PROGRESS: the member joins (JoinGroup
 * succeeds) and never gets an assignment. */
static void no_assignment_ever(kk_env_t *env)
{
    int16_t sync = rill_api_key_from_name("SyncGroup");
    cr_assert_geq(sync, 0);
    cr_assert_eq(rill_broker_push_request_errors(env->broker, sync, 200,
                                                 RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS),
                 RILL_OK);
}

Test(kafka_lifecycle, stopping_a_member_without_assignment_does_not_abort, .timeout = 120)
{
    kk_env_t env;
    env_up(&env, "noas", 10);
    no_assignment_ever(&env);
    member_t m;
    member_start(&env, &m, "noas-group", "noas", -1, NULL);
    /* The premise is elapsed time: the join (the mock's 3 s initial
     * rebalance delay) and some SyncGroup rounds. */
    kk_nap_us(5000 * 1000);
    cr_assert_eq(evlog_assigned(&m.l), 0, "the member was assigned partitions");
    /* On librdkafka < 2.3.0 with cooperative-sticky this aborted the
     * process (librdkafka #4312). */
    member_end(&env, &m, "member without assignment");
}

Test(kafka_lifecycle, explicit_cooperative_sticky_without_assignment_does_not_abort, .timeout = 120)
{
    kk_env_t env;
    env_up(&env, "noas2", 10);
    no_assignment_ever(&env);
    rill_kafka_clients_stats_t before, after;
    rill_kafka_clients_stats(&before);
    const char *kv[] = {"partition.assignment.strategy", "cooperative-sticky", NULL};
    rill_aid_t consumer =
        kk_consumer_spawn_ok(env.sys, member_conf(&env, "noas2-group", "noas2", NULL, kv), -1);
    kk_nap_us(5000 * 1000); /* as above */
    stop_bounded(env.sys, consumer, "cooperative-sticky member without assignment");
    rill_kafka_clients_stats(&after);
    if (rd_kafka_version() < 0x02030000) /* left undestroyed, not aborted */
        cr_assert_gt(after.abandoned, before.abandoned);
    env_fini_bounded(&env);
}

/* ------------------------------------------------------------------ */
/* The application hears of a revoke before the partitions go          */
/* ------------------------------------------------------------------ */

/* A plain stop (no rebalance pending): REVOKED of every partition, then
 * the final commit. Group members and fixed partitions. */
static void final_revoke_order(int fixed)
{
    kk_env_t env;
    const char *topic = fixed ? "ordf" : "ordg";
    env_up(&env, topic, PER);
    member_t m;
    if (fixed) {
        evlog_init(&m.l);
        rill_consumer_conf_t *c = kk_conf_new(env.boot, "ordf-group", member_kv);
        kk_conf_assign_all(c, topic, PARTS, RILL_OFFSET_BEGINNING);
        evlog_attach(c, &m.l);
        member_spawn(&env, &m, -1, c);
    } else {
        member_start(&env, &m, "ordg-group", topic, -1, NULL);
    }
    wait_received(&m.h, PARTS * PER);
    /* One more record per partition, confirmed just before the stop: the
     * final commit carries it. */
    kk_produce_parts(env.boot, topic, PARTS, 1, 100000, 100);
    wait_received(&m.h, PARTS * (PER + 1));
    stop_bounded(env.sys, m.consumer, fixed ? "fixed consumer" : "group member");
    evlog_print(&m.l, topic);
    revoked_before_last_commit(&m.l);
    cr_assert_eq(evlog_count(&m.l, EV_REVOKED, 0xFu), 1, "told more than once");
    for (int p = 0; p < PARTS; p++)
        cr_assert_eq(evlog_committed(&m.l, p), PER + 1);
    stop_bounded(env.sys, m.sink, "sink");
    env_fini_bounded(&env);
    hsink_fini(&m.h);
}

Test(kafka_lifecycle, final_revoke_is_told_before_the_final_commit_group, .timeout = 120)
{
    final_revoke_order(0);
}

Test(kafka_lifecycle, final_revoke_is_told_before_the_final_commit_fixed, .timeout = 120)
{
    final_revoke_order(1);
}

/* ------------------------------------------------------------------ */
/* Partitions lost, not revoked                                        */
/* ------------------------------------------------------------------ */

/* Successful commits of parts logged after event `from` and before the
 * next ASSIGNED of them. */
static int commits_between(evlog_t *l, int from, uint32_t parts)
{
    int n = 0;
    pthread_mutex_lock(&l->mu);
    for (int i = from + 1; i < l->n; i++) {
        if (l->ev[i].kind == EV_ASSIGNED && (l->ev[i].parts & parts))
            break;
        n += l->ev[i].kind == EV_COMMIT && !l->ev[i].failed && (l->ev[i].parts & parts);
    }
    pthread_mutex_unlock(&l->mu);
    return n;
}

/* The coordinator forgets the member: its next heartbeat is answered
 * UNKNOWN_MEMBER_ID, and its partitions are lost. The index of the LOST
 * event. */
static int lose_partitions(kk_env_t *env, evlog_t *l, const char *what)
{
    int16_t hb = rill_api_key_from_name("Heartbeat");
    cr_assert_geq(hb, 0);
    cr_assert_eq(
        rill_broker_push_request_errors(env->broker, hb, 1, RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID),
        RILL_OK);
    int ok;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, evlog_count(l, EV_LOST, 0xFu) > 0);
    if (!ok)
        evlog_print(l, what);
    cr_assert(ok, "the partitions were not reported lost");
    return evlog_last(l, EV_LOST, 0xFu);
}

/* Every partition committed at `offset`. */
static int all_committed(evlog_t *l, int64_t offset)
{
    for (int p = 0; p < PARTS; p++)
        if (evlog_committed(l, p) != offset)
            return 0;
    return 1;
}

Test(kafka_lifecycle, lost_partitions_commit_nothing_and_fence_their_confirms, .timeout = 180)
{
    kk_env_t env;
    env_up(&env, "lost", PER);
    member_t m;
    member_start(&env, &m, "lost-group", "lost", HEAD, NULL);
    wait_received(&m.h, PARTS * PER);
    wait_head_committed(&m.l, "the consumer");
    size_t held = hsink_n_held(&m.h);
    cr_assert_eq(held, PARTS * (PER - HEAD));

    int lost_at = lose_partitions(&env, &m.l, "lost");
    cr_assert_eq(evlog_count(&m.l, EV_REVOKED, 0xFu), 0, "lost partitions reported revoked");

    /* The held records come back now: fenced, not committed. */
    rill_aid_t consumer = m.consumer;
    uint64_t fenced = kk_consumer_stats_ok(env.sys, consumer).fenced;
    hsink_flush(&m.h, 1);
    int ok;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, kk_consumer_stats_ok(env.sys, consumer).fenced >= fenced + held);
    cr_assert(ok, "%llu of %zu confirms fenced",
              (unsigned long long)(kk_consumer_stats_ok(env.sys, consumer).fenced - fenced), held);

    /* The member joins again and goes on from the committed head. */
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, evlog_assigned(&m.l) == 0xFu);
    cr_assert(ok, "not assigned again (%#x)", evlog_assigned(&m.l));
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, all_committed(&m.l, PER));
    evlog_print(&m.l, "lost");
    cr_assert(ok, "consumption did not go on to the end");
    cr_assert_eq(commits_between(&m.l, lost_at, 0xFu), 0,
                 "a commit of lost partitions before they were assigned again");
    /* Everything past the head came again after the loss. */
    cr_assert_geq(hsink_received(&m.h), PARTS * PER + PARTS * (PER - HEAD));
    member_end(&env, &m, "consumer");
}

/*
 * Partitions lost while the source had them paused (its buffer full) come
 * back fetched. librdkafka keeps a partition's pause across unassign and
 * assign; the source's resume, once its buffer emptied, covered only the
 * assignment of that moment (empty after the loss), so on assignment again
 * the partitions stayed paused and were never fetched (found by the
 * cooperative-sticky multi-process test: 5 of 18 runs stalled for good).
 */
Test(kafka_lifecycle, partitions_lost_while_paused_are_fetched_again, .timeout = 180)
{
    kk_env_t env;
    env_up(&env, "lostp", PER);
    static const char *const small[] = {"rill.max.unconfirmed",
                                        "40",
                                        "rill.buffer.high",
                                        "100",
                                        "rill.buffer.low",
                                        "50",
                                        "rill.pause.after.ms",
                                        "100",
                                        NULL};
    member_t m; /* holds everything: the source stops, fills up, pauses */
    member_start(&env, &m, "lostp-group", "lostp", 0, small);
    int ok;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, kk_consumer_stats_ok(env.sys, m.consumer).paused);
    cr_assert(ok, "the source did not pause (%ld records received)", hsink_received(&m.h));

    /* Lost while paused; the emptied buffer resumes the (empty)
     * assignment; the member joins again and gets them back. */
    int lost_at = lose_partitions(&env, &m.l, "lostp");
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, evlog_last(&m.l, EV_ASSIGNED, 0xFu) > lost_at);
    cr_assert(ok, "not assigned again after the loss");

    /* Every partition is consumed to its end and committed. */
    hsink_flush(&m.h, 1); /* those of the lost term are fenced, the others count */
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, all_committed(&m.l, PER));
    if (!ok)
        evlog_print(&m.l, "lostp");
    cr_assert(
        ok, "partitions lost while paused were not consumed again (committed %lld %lld %lld %lld)",
        (long long)evlog_committed(&m.l, 0), (long long)evlog_committed(&m.l, 1),
        (long long)evlog_committed(&m.l, 2), (long long)evlog_committed(&m.l, 3));
    member_end(&env, &m, "consumer");
}

/* ------------------------------------------------------------------ */
/* A rebalance while a commit is in flight                             */
/* ------------------------------------------------------------------ */

Test(kafka_lifecycle, rebalance_while_a_commit_is_in_flight_loses_nothing, .timeout = 180)
{
    kk_env_t env;
    env_up(&env, "cif", PER);
    member_t m1, m2;
    member_start(&env, &m1, "cif-group", "cif", -1, NULL);
    wait_received(&m1.h, PARTS * PER);

    /* The next commits are answered 1.5 s late: one is in flight when
     * the group rebalances. */
    rd_kafka_mock_cluster_t *mc = rill_broker_mock_cluster(env.broker);
    int16_t oc = rill_api_key_from_name("OffsetCommit");
    cr_assert_eq(
        rd_kafka_mock_broker_push_request_error_rtts(mc, 1, oc, 3, 0, 1500, 0, 1500, 0, 1500),
        RD_KAFKA_RESP_ERR_NO_ERROR);
    kk_produce_parts(env.boot, "cif", PARTS, PER, 100000, 100);
    int ok;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, hsink_received(&m1.h) > PARTS * PER);
    cr_assert(ok);
    member_start(&env, &m2, "cif-group", "cif", -1, NULL);
    KK_WAIT_UNTIL(ok, KK_WAIT_MS,
                  evlog_assigned(&m2.l) != 0 &&
                      (evlog_assigned(&m1.l) | evlog_assigned(&m2.l)) == 0xFu);
    cr_assert(ok, "the partitions were not shared: %#x, %#x", evlog_assigned(&m1.l),
              evlog_assigned(&m2.l));
    /* Every record is committed in the end, by whoever owns it. */
    int64_t committed[PARTS];
    for (int i = 0; i < 400; i++) {
        kk_committed_offsets(env.boot, "cif-group", "cif", PARTS, committed);
        ok = 1;
        for (int p = 0; p < PARTS; p++)
            ok &= committed[p] == 2 * PER;
        if (ok)
            break;
        kk_nap_us(100 * 1000);
    }
    evlog_print(&m1.l, "member 1");
    evlog_print(&m2.l, "member 2");
    for (int p = 0; p < PARTS; p++)
        cr_assert_eq(committed[p], 2 * PER, "[%d] committed %" PRId64, p, committed[p]);
    /* Nothing was skipped: every record reached a member at least once. */
    cr_assert_geq(hsink_received(&m1.h) + hsink_received(&m2.h), 2 * PARTS * PER);
    stop_bounded(env.sys, m2.consumer, "member 2");
    stop_bounded(env.sys, m1.consumer, "member 1");
    stop_bounded(env.sys, m1.sink, "sink 1");
    stop_bounded(env.sys, m2.sink, "sink 2");
    for (int p = 0; p < PARTS; p++) {
        kk_committed_offsets(env.boot, "cif-group", "cif", PARTS, committed);
        cr_assert_eq(committed[p], 2 * PER, "[%d] committed %" PRId64 " after the stop", p,
                     committed[p]);
    }
    env_fini_bounded(&env);
    hsink_fini(&m1.h);
    hsink_fini(&m2.h);
}

/* ------------------------------------------------------------------ */
/* A run that keeps its session for the next one                       */
/* ------------------------------------------------------------------ */

typedef struct failer {
    atomic_int failed; /* failed once already */
} failer_t;

/* Passes records on; fails once, at partition 0's offset 100. */
static rill_err_t fail_once(void *opaque, rill_elem_t *in, rill_elem_t *out)
{
    failer_t *f = opaque;
    const rd_kafka_message_t *m = rill_record(in);
    if (m && m->partition == 0 && m->offset == 100 && !atomic_exchange(&f->failed, 1)) {
        rill_elem_release(in);
        return RILL_EIO;
    }
    *out = *in;
    return RILL_OK;
}

/* The index of the n-th (from 1) event of kind touching parts, or -1. */
static int evlog_nth(evlog_t *l, ev_kind_t kind, uint32_t parts, int n)
{
    int at = -1;
    pthread_mutex_lock(&l->mu);
    for (int i = 0; i < l->n && at < 0; i++)
        if (l->ev[i].kind == kind && (l->ev[i].parts & parts) && --n == 0)
            at = i;
    pthread_mutex_unlock(&l->mu);
    return at;
}

Test(kafka_lifecycle, a_kept_session_tells_revoked_at_each_run_end, .timeout = 180)
{
    kk_env_t env;
    env_up(&env, "park", PER);
    member_t m;
    failer_t f;
    atomic_init(&f.failed, 0);
    rill_pipeline_t *p = pipeline_up(&env, "park", &m, -1, NULL, rill_stage_map(fail_once, &f), 1);
    int ok;
    /* The second run takes the kept session over (ASSIGNED again, no
     * rebalance) and consumes to the end. */
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, all_committed(&m.l, PER));
    evlog_print(&m.l, "park");
    cr_assert(ok, "the restarted pipeline did not commit everything");
    cr_assert_eq(atomic_load(&f.failed), 1);
    int a2 = evlog_nth(&m.l, EV_ASSIGNED, 0xFu, 2);
    int r1 = evlog_nth(&m.l, EV_REVOKED, 0xFu, 1);
    cr_assert_geq(a2, 0, "the second run was not told ASSIGNED");
    cr_assert(r1 >= 0 && r1 < a2, "the first run's end was not told REVOKED (%d, %d)", r1, a2);
    cr_assert_eq(evlog_count(&m.l, EV_LOST, 0xFu), 0);

    pipeline_stop_bounded(p, "park");
    int rev = revoked_before_last_commit(&m.l);
    cr_assert_gt(rev, a2, "the last run's end was not told REVOKED");
    rill_pipeline_destroy(p);
    env_fini_bounded(&env);
    hsink_fini(&m.h);
}
