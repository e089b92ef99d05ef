/*
 * bench_consume: consume -> confirm -> commit through a rill pipeline,
 * against a raw librdkafka consumer with the same guarantees, on the same
 * broker and data, in the same run, alternating.
 *
 *   baseline  a poll loop: rd_kafka_consumer_poll, rd_kafka_offsets_store
 *             of offset + 1 after each record, an async commit every 1,000
 *   rill      a pipeline: rill_kafka_source -> rill_sink_foreach, whose
 *             RILL_OK confirms every record; commits driven by rill
 *             (defaults); the clock stops when the pipeline has stopped,
 *             after its final commit
 *
 * The broker is a separate `rill-broker` process, so this process's CPU
 * time (getrusage: user + sys, librdkafka's threads included) is the
 * client's alone. Data: RECORDS records of VALUE bytes over PARTITIONS
 * partitions (the mock keeps at most 5 MiB per partition: 1,000,000 x 100
 * bytes over 32 partitions stays under it). Both read every partition from
 * its first offset, without a group join.
 *
 * usage: bench_consume [records, default 1000000] [runs, default 3]
 *                      [path to rill-broker, default: next to this binary]
 */
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <rill/rill.h>
#include <rill/testkit.h>

#include "bench_util.h"

#define PARTITIONS 32
#define VALUE      100

typedef struct result {
    double rate; /* records/s */
    double cost; /* CPU us per 1,000 records */
} result_t;

/* ---- baseline: raw librdkafka ---- */

static rd_kafka_t *raw_consumer(const char *boot, const char *group)
{
    char err[512];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    const char *kv[] = {
        "bootstrap.servers",        boot,    "group.id", group, "enable.auto.commit", "false",
        "enable.auto.offset.store", "false", NULL};
    for (int i = 0; kv[i]; i += 2)
        rd_kafka_conf_set(c, kv[i], kv[i + 1], err, sizeof(err));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, err, sizeof(err));
    if (!rk) {
        fprintf(stderr, "bench_consume: %s\n", err);
        exit(1);
    }
    rd_kafka_poll_set_consumer(rk);
    return rk;
}

static result_t run_raw(const char *boot, uint64_t n, int run)
{
    char group[64];
    snprintf(group, sizeof(group), "raw-%d", run);
    rd_kafka_t *rk = raw_consumer(boot, group);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(PARTITIONS);
    for (int p = 0; p < PARTITIONS; p++)
        rd_kafka_topic_partition_list_add(l, "bench", p)->offset = 0;
    double t0 = bench_now_s(), c0 = bench_cpu_us();
    rd_kafka_assign(rk, l);
    uint64_t got = 0;
    while (got < n) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (!m)
            continue;
        if (!m->err) {
            rd_kafka_topic_partition_list_t *o = rd_kafka_topic_partition_list_new(1);
            rd_kafka_topic_partition_list_add(o, "bench", m->partition)->offset = m->offset + 1;
            rd_kafka_offsets_store(rk, o);
            rd_kafka_topic_partition_list_destroy(o);
            if (++got % 1000 == 0)
                rd_kafka_commit(rk, NULL, 1);
        }
        rd_kafka_message_destroy(m);
    }
    rd_kafka_commit(rk, NULL, 0);
    double dt = bench_now_s() - t0, cpu = bench_cpu_us() - c0;
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return (result_t){(double)n / dt, cpu / ((double)n / 1000.0)};
}

/* ---- rill ---- */

typedef struct sink_state {
    _Atomic uint64_t got;
    uint64_t n;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int done;
} sink_state_t;

/* RILL_OK confirms the record. */
static rill_err_t count_each(void *opaque, rill_elem_t *e)
{
    sink_state_t *s = opaque;
    rill_elem_release(e);
    if (atomic_fetch_add_explicit(&s->got, 1, memory_order_relaxed) + 1 == s->n) {
        pthread_mutex_lock(&s->lock);
        s->done = 1;
        pthread_cond_signal(&s->cond);
        pthread_mutex_unlock(&s->lock);
    }
    return RILL_OK;
}

static void die(const char *what, const char *why)
{
    fprintf(stderr, "bench_consume: %s: %s\n", what, why);
    exit(1);
}

static result_t run_rill(const char *boot, uint64_t n, int run)
{
    char err[512], group[64];
    snprintf(group, sizeof(group), "rill-%d", run);
    double t0 = bench_now_s(), c0 = bench_cpu_us();
    rill_system_t *sys = rill_system_new(&(rill_system_opts_t){.executors = 2}, err, sizeof(err));
    if (!sys || rill_system_start(sys))
        die("rill system", sys ? "cannot start" : err);
    rill_consumer_conf_t *c = rill_consumer_conf_new();
    if (rill_consumer_conf_set(c, "bootstrap.servers", boot, err, sizeof(err)) ||
        rill_consumer_conf_set(c, "group.id", group, err, sizeof(err)))
        die("rill consumer config", err);
    for (int p = 0; p < PARTITIONS; p++)
        if (rill_consumer_conf_assign(c, "bench", p, 0, err, sizeof(err)))
            die("rill consumer config", err);
    sink_state_t s = {.n = n};
    pthread_mutex_init(&s.lock, NULL);
    pthread_cond_init(&s.cond, NULL);
    rill_stage_opts_t co = {.executor = RILL_EXECUTOR(0)},
                      so = {.executor = RILL_EXECUTOR(1), .mailbox_capacity = 1024};
    rill_pipeline_t *p = rill_pipeline_new(sys, "consume");
    rill_pipeline_add(p, rill_kafka_source(c), &co);
    rill_pipeline_add(p, rill_sink_foreach(count_each, &s), &so);
    if (rill_pipeline_start(p, err, sizeof(err)))
        die("rill pipeline", err);
    pthread_mutex_lock(&s.lock);
    while (!s.done)
        pthread_cond_wait(&s.cond, &s.lock);
    pthread_mutex_unlock(&s.lock);
    if (getenv("BENCH_STATS")) {
        rill_consumer_stats_t cs;
        if (rill_consumer_stats(sys, rill_pipeline_stage(p, 0), &cs) == RILL_OK)
            fprintf(stderr,
                    "  rill consumer: polled %llu pauses %llu buffered_max %u committed %llu\n",
                    (unsigned long long)cs.polled, (unsigned long long)cs.pauses, cs.buffered_max,
                    (unsigned long long)cs.committed);
    }
    /* The stop makes the final commit, as the baseline does. */
    rill_pipeline_result_t res;
    rill_pipeline_stop(p);
    rill_pipeline_wait(p, -1, &res);
    double dt = bench_now_s() - t0, cpu = bench_cpu_us() - c0;
    if (res.end != RILL_PIPELINE_STOPPED)
        die("rill pipeline ended", res.text);
    rill_pipeline_destroy(p);
    rill_system_stop(sys, 10000);
    rill_system_destroy(sys);
    pthread_cond_destroy(&s.cond);
    pthread_mutex_destroy(&s.lock);
    return (result_t){(double)n / dt, cpu / ((double)n / 1000.0)};
}

int main(int argc, char **argv)
{
    uint64_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 1000000;
    int runs = argc > 2 ? atoi(argv[2]) : 3;
    char bin[PATH_MAX];
    bench_broker_path(argc > 3 ? argv[3] : NULL, bin, sizeof(bin));
    if (n < 1000 || runs < 1 || runs > 20) {
        fprintf(stderr, "usage: bench_consume [records >= 1000] [runs 1..20] [rill-broker]\n");
        return 2;
    }
    char boot[512] = "";
    bench_broker_topic("bench:%d:1", PARTITIONS);
    bench_broker_start("bench_consume", bin, boot, sizeof(boot));
    char err[512];
    rill_gen_t gen = RILL_GEN_DEFAULT;
    gen.value_size = VALUE;
    rill_testkit_opts_t po = {.timeout_ms = 300000};
    printf("bench_consume: producing %llu records of %d bytes over %d partitions to %s\n",
           (unsigned long long)n, VALUE, PARTITIONS, boot);
    fflush(stdout);
    if (rill_testkit_produce_generated(boot, "bench", n, &gen, &po, err, sizeof(err))) {
        fprintf(stderr, "bench_consume: produce: %s\n", err);
        return 1;
    }
    double rr[20], rc[20], br[20], bc[20];
    for (int r = 0; r < runs; r++) {
        result_t b = run_raw(boot, n, r);
        result_t x = run_rill(boot, n, r);
        br[r] = b.rate;
        bc[r] = b.cost;
        rr[r] = x.rate;
        rc[r] = x.cost;
        printf("  run %d: raw %.0f rec/s %.0f us/1k cpu | rill %.0f rec/s %.0f us/1k cpu\n", r + 1,
               b.rate, b.cost, x.rate, x.cost);
        fflush(stdout);
    }
    double mrr = bench_median(rr, runs), mbr = bench_median(br, runs);
    double mrc = bench_median(rc, runs), mbc = bench_median(bc, runs);
    bench_line("consume", 0, mrr, mbr, "records/s");
    bench_line("consume_cost", 1, mrc, mbc, "us/1000");
    return 0;
}
