/*
 * The Kafka layer's figures for observability (issue 15) against the
 * embedded broker: per-partition lag from librdkafka's statistics joined
 * with the source's commits (rill_consumer_partitions), the consumer's
 * group, total lag and latency histograms (commit, end to end), and the
 * producer's delivery latency.
 *
 * The lag property: N records in each partition, M of each confirmed and
 * committed, the rest held unconfirmed by the sink; within a statistics
 * interval (100 ms here) and a commit interval (100 ms) the source says
 * lag N - M for every partition. Waits are conditions with deadlines
 * (generous: sanitizers and neighbours share two cores), never sleeps.
 */
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

#define PARTS 3
#define N     200 /* records per partition */
#define M     120 /* of them confirmed */

/* Confirms the records below offset M, holds the others (unconfirmed). */
typedef struct holder {
    pthread_mutex_t mu;
    rill_elem_t held[PARTS * N];
    size_t n_held;
    atomic_long confirmed;
} holder_t;

static rill_err_t hold_sink(void *opaque, rill_elem_t *e)
{
    holder_t *h = opaque;
    const rd_kafka_message_t *m = rill_record(e);
    if (!m) {
        rill_elem_release(e);
        return RILL_EINVAL;
    }
    if (m->offset < M) {
        rill_elem_confirm(e);
        atomic_fetch_add(&h->confirmed, 1);
        return RILL_OK;
    }
    pthread_mutex_lock(&h->mu);
    if (h->n_held < PARTS * N)
        h->held[h->n_held++] = *e;
    else
        rill_elem_release(e);
    pthread_mutex_unlock(&h->mu);
    return RILL_OK;
}

/* Every partition says lag N - M (and the offsets behind it). */
static int lag_settled(rill_system_t *sys, rill_aid_t consumer, rill_partition_stats_t *ps)
{
    size_t n = 0;
    if (rill_consumer_partitions(sys, consumer, ps, PARTS, &n) != RILL_OK || n != PARTS)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (ps[i].lag != N - M || ps[i].end_offset != N || ps[i].committed_offset != M)
            return 0;
    return 1;
}

Test(kafka_metrics, lag_per_partition_follows_commits, .timeout = 120)
{
    kk_env_t env;
    kk_env_init(&env);
    kk_load_topic(&env, "lagged", PARTS, N, 64);
    const char *kv[] = {"statistics.interval.ms", "100", "rill.commit.interval.ms", "100", NULL};
    rill_consumer_conf_t *c = kk_conf_new(env.boot, "metrics-group", kv);
    kk_conf_assign_all(c, "lagged", PARTS, RILL_OFFSET_BEGINNING);
    rill_aid_t consumer = kk_consumer_spawn_ok(env.sys, c, 0);

    /* Before anything: the partitions are there, lag unknown or whole. */
    size_t n = 0;
    rill_partition_stats_t ps[PARTS + 1];
    int ok;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS,
                  rill_consumer_partitions(env.sys, consumer, ps, PARTS + 1, &n) == RILL_OK &&
                      n == PARTS);
    cr_assert(ok, "the source has its %d partitions (%zu)", PARTS, n);

    holder_t *h = calloc(1, sizeof(*h));
    cr_assert_not_null(h);
    pthread_mutex_init(&h->mu, NULL);
    rill_aid_t sink = kk_sink_spawn_ok(env.sys, hold_sink, h, 1, consumer);

    /* Everything is consumed: M of each partition confirmed, the rest held. */
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, atomic_load(&h->confirmed) == PARTS * M);
    cr_assert(ok, "confirmed %ld of %d", atomic_load(&h->confirmed), PARTS * M);
    rill_consumer_stats_t s;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS,
                  (s = kk_consumer_stats_ok(env.sys, consumer)).confirmed == PARTS * M);
    cr_assert(ok);

    /* Within a statistics interval and a commit interval (plus a margin
     * for slow builds): lag N - M everywhere. */
    KK_WAIT_UNTIL(ok, 10000, lag_settled(env.sys, consumer, ps));
    for (int i = 0; i < PARTS; i++)
        fprintf(stderr,
                "%s [%d]: end %lld start %lld committed %lld position %lld lag %lld age %lld\n",
                ps[i].topic, ps[i].partition, (long long)ps[i].end_offset,
                (long long)ps[i].log_start_offset, (long long)ps[i].committed_offset,
                (long long)ps[i].position, (long long)ps[i].lag, (long long)ps[i].stats_age_ms);
    cr_assert(ok, "every partition says lag %d", N - M);
    uint32_t seen = 0;
    for (int i = 0; i < PARTS; i++) {
        cr_assert_str_eq(ps[i].topic, "lagged");
        cr_assert(ps[i].partition >= 0 && ps[i].partition < PARTS);
        seen |= 1u << ps[i].partition;
        cr_assert_eq(ps[i].log_start_offset, 0);
        cr_assert(ps[i].position >= M && ps[i].position <= N, "position %lld",
                  (long long)ps[i].position);
        cr_assert(ps[i].stats_age_ms >= 0 && ps[i].stats_age_ms < 10000, "age %lld",
                  (long long)ps[i].stats_age_ms);
    }
    cr_assert_eq(seen, (1u << PARTS) - 1);
    /* Fewer places than partitions: *n still says how many. */
    n = 0;
    cr_assert_eq(rill_consumer_partitions(env.sys, consumer, ps, 1, &n), RILL_OK);
    cr_assert_eq(n, PARTS);
    cr_assert_eq(rill_consumer_partitions(env.sys, consumer, NULL, 0, &n), RILL_OK);
    cr_assert_eq(n, PARTS);

    /* The consumer's totals: group, lag, histograms with counts. */
    s = kk_consumer_stats_ok(env.sys, consumer);
    cr_assert_str_eq(s.group, "metrics-group");
    cr_assert_eq(s.lag, (int64_t)PARTS * (N - M), "lag %lld", (long long)s.lag);
    cr_assert(s.committed > 0);
    cr_assert(s.commit_latency.count > 0 && s.commit_latency.count >= s.committed,
              "commit_latency.count %llu, committed %llu",
              (unsigned long long)s.commit_latency.count, (unsigned long long)s.committed);
    cr_assert_eq(s.e2e_latency.count, s.confirmed, "e2e_latency.count %llu, confirmed %llu",
                 (unsigned long long)s.e2e_latency.count, (unsigned long long)s.confirmed);
    uint64_t total = 0;
    for (int i = 0; i < RILL_HIST_BUCKETS; i++)
        total += s.e2e_latency.buckets[i];
    cr_assert_eq(total, s.e2e_latency.count);
    cr_assert(rill_hist_quantile(&s.e2e_latency, 0.5) > 0);

    /* Misuse: not a source, NULLs. */
    cr_assert_eq(rill_consumer_partitions(env.sys, sink, ps, PARTS, &n), RILL_EINVAL);
    cr_assert_eq(rill_consumer_partitions(env.sys, consumer, ps, PARTS, NULL), RILL_EINVAL);
    cr_assert_eq(rill_consumer_partitions(NULL, consumer, ps, PARTS, &n), RILL_EINVAL);

    kk_stop_wait(env.sys, sink);
    kk_stop_wait(env.sys, consumer);
    cr_assert_eq(rill_consumer_partitions(env.sys, consumer, ps, PARTS, &n), RILL_ESTOPPED);
    for (size_t i = 0; i < h->n_held; i++)
        rill_elem_release(&h->held[i]);
    kk_env_fini(&env);
    pthread_mutex_destroy(&h->mu);
    free(h);
}

Test(kafka_metrics, delivery_latency_counts_deliveries, .timeout = 120)
{
    kk_env_t env;
    kk_env_init(&env);
    kk_create_topic(&env, "delivered", 2);
    rill_producer_conf_t *pc = rill_producer_conf_new();
    cr_assert_not_null(pc);
    char err[256];
    cr_assert_eq(rill_producer_conf_set(pc, "bootstrap.servers", env.boot, err, sizeof(err)),
                 RILL_OK, "%s", err);
    cr_assert_eq(rill_producer_conf_set(pc, "statistics.interval.ms", "100", err, sizeof(err)),
                 RILL_OK, "%s", err);
    rill_aid_t producer = kk_producer_spawn_ok(env.sys, pc, 0);
    enum { K = 500 };
    for (int i = 0; i < K; i++) {
        char v[32];
        int vl = snprintf(v, sizeof(v), "v%d", i);
        rill_produce_t *req = rill_produce_new("delivered", i % 2, "k", 1, v, (size_t)vl);
        cr_assert_not_null(req);
        rill_err_t e;
        int ok;
        /* A full mailbox is told at once: try again shortly. */
        KK_WAIT_UNTIL(ok, KK_WAIT_MS,
                      (e = rill_producer_send(env.sys, producer, req)) != RILL_EFULL);
        cr_assert_eq(e, RILL_OK);
    }
    rill_producer_stats_t s;
    int ok;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, (s = kk_producer_stats_ok(env.sys, producer)).delivered == K);
    cr_assert(ok, "delivered %llu of %d", (unsigned long long)s.delivered, K);
    cr_assert_eq(s.delivery_latency.count, s.delivered);
    cr_assert(s.delivery_latency.sum_ns > 0);
    double p99 = rill_hist_quantile(&s.delivery_latency, 0.99);
    cr_assert(p99 > 0 && p99 <= 300, "p99 %g s", p99);
    kk_stop_wait(env.sys, producer);
    kk_env_fini(&env);
}
