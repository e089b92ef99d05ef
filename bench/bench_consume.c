/*
 * bench_consume: consume -> confirm -> commit through a rill pipeline,
 * against a raw librdkafka consumer with the same guarantee (at least
 * once: an offset is stored only after its record was processed, commits
 * async every COMMIT_EVERY records with at most one unanswered, and sync
 * at the end), on the same broker and data, in the same run, turning
 * which side goes first.
 *
 *   baseline  what a librdkafka expert writes: batched polls
 *             (rd_kafka_consume_batch_queue on the consumer queue, up to
 *             BATCH records per call), then per partition the last
 *             processed offset of the batch stored with
 *             rd_kafka_offset_store (no allocation), an async commit
 *             every COMMIT_EVERY records unless one is unanswered (then
 *             once it is: bench_committer_t). BENCH_RAW_POLL=poll uses an
 *             rd_kafka_consumer_poll loop instead, storing every record's
 *             offset with rd_kafka_offset_store (measured slower, see
 *             docs/benchmarks.md)
 *   rill      a pipeline: rill_kafka_source -> rill_sink_foreach, whose
 *             RILL_OK confirms every record; commits driven by rill
 *             (defaults: async every 1,000 confirms or 1 s, at most one
 *             unanswered), on a system of two executors, measured twice:
 *             `consume` with the sink on the source's executor (a cheap
 *             sink where it belongs: the records stay on one core, as in
 *             the raw loop) and `consume_split` with the sink on the other
 *             executor (what a costly sink needs: its work beside the
 *             polling; each record then crosses cores)
 *
 * Both clocks run from nothing (the client not yet created) to the end of
 * the final sync commit and the consumer's close. The raw consumer gets
 * the librdkafka properties rill's consumer gets by default (its prefetch
 * bound and, from librdkafka 2.2, fetch.queue.backoff.ms:
 * bench_raw_consumer_defaults); BENCH_RAW_CONF can change them. The broker
 * is a separate `rill-broker` process, so this process's CPU time
 * (getrusage: user + sys, librdkafka's threads included) is the client's
 * alone. Data: RECORDS records of VALUE bytes over PARTITIONS partitions
 * (the mock keeps at most 5 MiB per partition: 1,000,000 x 100 bytes over
 * 32 partitions stays under it). Both read every partition from its first
 * offset, without a group join, under a fresh group per run.
 *
 * Checks after each run (untimed): the side saw every record of every
 * partition exactly once and in order (no gap, no duplicate, nothing more)
 * and the group's committed offsets, read back with a fresh client, are the
 * partitions' end offsets. A failed check prints why and makes the exit
 * status 1.
 *
 * Experiments (the reported runs set none of these):
 * BENCH_ONLY=rill|split|raw runs one side; BENCH_RAW_POLL=poll|batch;
 * BENCH_RAW_COMMIT=every commits every COMMIT_EVERY records even while
 * one is unanswered (bench_util.h: bench_committer_t); BENCH_RAW_CONF and
 * BENCH_RILL_CONSUMER_CONF="key=value,..." add client properties;
 * BENCH_STATS=1 prints rill's consumer counters; BENCH_TRACE=1 prints a
 * timeline of them every 50 ms, per-thread CPU, and the raw side's
 * consumer-queue length.
 *
 * usage: bench_consume [records, default 1000000] [runs, default 5]
 *                      [path to rill-broker, default: next to this binary]
 */
#include <inttypes.h>
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

#define PARTITIONS   32
#define VALUE        100
#define TOPIC        "bench"
#define MAX_RUNS     20
#define BATCH        1024 /* records per rd_kafka_consume_batch_queue call */
#define COMMIT_EVERY 1000 /* rill's default rill.commit.count */

typedef struct result {
    double rate; /* records/s */
    double cost; /* CPU us per 1,000 records */
    int ok;      /* the checks passed */
} result_t;

static void die(const char *what, const char *why)
{
    fprintf(stderr, "bench_consume: %s: %s\n", what, why);
    exit(1);
}

/* The partitions' end offsets (what a full read must commit), read once. */
static int64_t ends[PARTITIONS];

/* ---- checks, the same for both sides ---- */

/* What a side saw: the next offset expected per partition. Single writer. */
typedef struct seen {
    int64_t next[PARTITIONS];
    uint64_t records, out_of_order; /* out_of_order: gaps, duplicates, strangers */
} seen_t;

static void seen_add(seen_t *s, int32_t partition, int64_t offset)
{
    s->records++;
    if (partition < 0 || partition >= PARTITIONS || offset != s->next[partition]) {
        s->out_of_order++;
        return;
    }
    s->next[partition] = offset + 1;
}

/* Every record once, in order, nothing more; the group's commits at the
 * ends. Prints what failed. */
static int check(const char *boot, const char *group, const seen_t *s, uint64_t n, const char *side)
{
    int ok = s->records == n && !s->out_of_order, missing = 0;
    for (int p = 0; p < PARTITIONS; p++)
        missing += s->next[p] != ends[p];
    int uncommitted = bench_uncommitted("bench_consume", boot, group, TOPIC, PARTITIONS, ends);
    ok = ok && !missing && !uncommitted;
    if (!ok || getenv("BENCH_VERBOSE"))
        printf("    %s check: %" PRIu64 " of %" PRIu64 " records, %" PRIu64
               " out of order or duplicated, %d partitions not read to the end, %d not "
               "committed at the end%s\n",
               side, s->records, n, s->out_of_order, missing, uncommitted, ok ? "" : "  FAILED");
    return ok;
}

/* ---- baseline: raw librdkafka ---- */

static result_t run_raw(const char *boot, uint64_t n, int run)
{
    char group[64];
    snprintf(group, sizeof(group), "raw-%d", run);
    const char *mode = getenv("BENCH_RAW_POLL");
    int batch = !mode || strcmp(mode, "poll");
    int trace = getenv("BENCH_TRACE") != NULL;
    seen_t s;
    memset(&s, 0, sizeof(s));
    double t0 = bench_now_s(), c0 = bench_cpu_us(), t_trace = t0;
    rd_kafka_t *rk = bench_raw_consumer("bench_consume", boot, group, NULL, "BENCH_RAW_CONF");
    /* One topic handle for rd_kafka_offset_store, made once. */
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, TOPIC, NULL);
    rd_kafka_queue_t *q = rd_kafka_queue_get_consumer(rk);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(PARTITIONS);
    for (int p = 0; p < PARTITIONS; p++)
        rd_kafka_topic_partition_list_add(l, TOPIC, p)->offset = 0;
    rd_kafka_assign(rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_message_t *msgs[BATCH];
    uint64_t got = 0;
    bench_committer_t com;
    bench_committer_init(&com, rk, COMMIT_EVERY);
    while (got < n) {
        if (batch) {
            /* Waits until the batch is full or the timeout: never ask for
             * more than is left, or the last call waits out the timeout. */
            size_t want = n - got < BATCH ? (size_t)(n - got) : BATCH;
            ssize_t k = rd_kafka_consume_batch_queue(q, 100, msgs, want);
            int64_t last[PARTITIONS];
            uint32_t dirty = 0; /* PARTITIONS <= 32 */
            for (ssize_t i = 0; i < k; i++) {
                rd_kafka_message_t *m = msgs[i];
                if (!m->err && m->partition >= 0 && m->partition < PARTITIONS) {
                    seen_add(&s, m->partition, m->offset);
                    last[m->partition] = m->offset;
                    dirty |= UINT32_C(1) << m->partition;
                    got++;
                }
                rd_kafka_message_destroy(m);
            }
            /* The batch is processed: store each partition's last offset
             * (rd_kafka_offset_store stores offset + 1). */
            for (int p = 0; dirty; p++, dirty >>= 1)
                if (dirty & 1)
                    rd_kafka_offset_store(rkt, p, last[p]);
        } else {
            rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
            if (!m)
                continue;
            if (!m->err) {
                seen_add(&s, m->partition, m->offset);
                rd_kafka_offset_store(m->rkt, m->partition, m->offset);
                got++;
            }
            rd_kafka_message_destroy(m);
        }
        bench_committer_step(&com, got);
        if (trace && bench_now_s() - t_trace >= 0.05) {
            t_trace = bench_now_s();
            fprintf(stderr, "  raw %.2fs got %" PRIu64 " queue %zu\n", t_trace - t0, got,
                    rd_kafka_queue_length(q));
        }
    }
    bench_committer_drain(&com);
    rd_kafka_resp_err_t cerr = rd_kafka_commit(rk, NULL, 0);
    if (trace)
        bench_thread_cpu("raw at the end");
    rd_kafka_queue_destroy(q);
    bench_committer_destroy(&com);
    rd_kafka_topic_destroy(rkt);
    rd_kafka_consumer_close(rk);
    double dt = bench_now_s() - t0, cpu = bench_cpu_us() - c0;
    rd_kafka_destroy(rk);
    if (cerr && cerr != RD_KAFKA_RESP_ERR__NO_OFFSET)
        fprintf(stderr, "bench_consume: raw final commit: %s\n", rd_kafka_err2str(cerr));
    result_t r = {(double)n / dt, cpu / ((double)n / 1000.0), 0};
    r.ok = check(boot, group, &s, n, "raw");
    return r;
}

/* ---- rill ---- */

typedef struct sink_state {
    seen_t seen; /* written by the sink's actor only; read after the stop */
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
    const rd_kafka_message_t *m = rill_record(e);
    if (m)
        seen_add(&s->seen, m->partition, m->offset);
    rill_elem_release(e);
    if (atomic_fetch_add_explicit(&s->got, 1, memory_order_relaxed) + 1 == s->n) {
        pthread_mutex_lock(&s->lock);
        s->done = 1;
        pthread_cond_signal(&s->cond);
        pthread_mutex_unlock(&s->lock);
    }
    return RILL_OK;
}

static int consumer_set(void *c, const char *k, const char *v, char *e, size_t es)
{
    return rill_consumer_conf_set(c, k, v, e, es);
}

static void print_stats(const char *when, double t, const rill_consumer_stats_t *cs)
{
    fprintf(stderr,
            "  rill %s%.2fs polled %" PRIu64 " emitted %" PRIu64 " confirmed %" PRIu64
            " buffered %u (max %u) unconfirmed %u paused %d pauses %" PRIu64 " blocked %" PRIu64
            " committed %" PRIu64 "\n",
            when, t, cs->polled, cs->emitted, cs->confirmed, cs->buffered, cs->buffered_max,
            cs->unconfirmed, cs->paused, cs->pauses, cs->blocked_episodes, cs->committed);
}

static result_t run_rill(const char *boot, uint64_t n, int run, int sink_executor)
{
    char err[512], group[64];
    snprintf(group, sizeof(group), "rill-%d-%d", run, sink_executor);
    int trace = getenv("BENCH_TRACE") != NULL;
    sink_state_t s;
    memset(&s, 0, sizeof(s));
    s.n = n;
    pthread_mutex_init(&s.lock, NULL);
    pthread_cond_init(&s.cond, NULL);
    double t0 = bench_now_s(), c0 = bench_cpu_us();
    rill_system_t *sys = rill_system_new(&(rill_system_opts_t){.executors = 2}, err, sizeof(err));
    if (!sys || rill_system_start(sys))
        die("rill system", sys ? "cannot start" : err);
    rill_consumer_conf_t *c = rill_consumer_conf_new();
    if (rill_consumer_conf_set(c, "bootstrap.servers", boot, err, sizeof(err)) ||
        rill_consumer_conf_set(c, "group.id", group, err, sizeof(err)))
        die("rill consumer config", err);
    for (int p = 0; p < PARTITIONS; p++)
        if (rill_consumer_conf_assign(c, TOPIC, p, 0, err, sizeof(err)))
            die("rill consumer config", err);
    bench_conf_from_env("bench_consume", c, "BENCH_RILL_CONSUMER_CONF", consumer_set);
    rill_stage_opts_t co = {.executor = RILL_EXECUTOR(0)},
                      so = {.executor = RILL_EXECUTOR(sink_executor), .mailbox_capacity = 1024};
    rill_pipeline_t *p = rill_pipeline_new(sys, "consume");
    rill_pipeline_add(p, rill_kafka_source(c), &co);
    rill_pipeline_add(p, rill_sink_foreach(count_each, &s), &so);
    if (rill_pipeline_start(p, err, sizeof(err)))
        die("rill pipeline", err);
    pthread_mutex_lock(&s.lock);
    while (!s.done) {
        if (!trace) {
            pthread_cond_wait(&s.cond, &s.lock);
            continue;
        }
        struct timespec ts = bench_realtime_in_ms(50);
        pthread_cond_timedwait(&s.cond, &s.lock, &ts);
        pthread_mutex_unlock(&s.lock);
        rill_consumer_stats_t cs;
        if (rill_consumer_stats(sys, rill_pipeline_stage(p, 0), &cs) == RILL_OK)
            print_stats("", bench_now_s() - t0, &cs);
        pthread_mutex_lock(&s.lock);
    }
    pthread_mutex_unlock(&s.lock);
    rill_consumer_stats_t cs;
    if ((getenv("BENCH_STATS") || trace) &&
        rill_consumer_stats(sys, rill_pipeline_stage(p, 0), &cs) == RILL_OK)
        print_stats("at the end ", bench_now_s() - t0, &cs);
    if (trace)
        bench_thread_cpu("rill at the end");
    /* The stop makes the final commit and closes the consumer, as the
     * baseline does. */
    rill_pipeline_result_t res;
    rill_pipeline_stop(p);
    rill_pipeline_wait(p, -1, &res);
    double dt = bench_now_s() - t0, cpu = bench_cpu_us() - c0;
    int ok = res.end == RILL_PIPELINE_STOPPED;
    if (!ok)
        printf("    rill: the pipeline ended: %s %s\n", res.stage, res.text);
    rill_pipeline_destroy(p);
    rill_system_stop(sys, 10000);
    rill_system_destroy(sys);
    pthread_cond_destroy(&s.cond);
    pthread_mutex_destroy(&s.lock);
    result_t r = {(double)n / dt, cpu / ((double)n / 1000.0), 0};
    r.ok = check(boot, group, &s.seen, n, "rill") && ok;
    return r;
}

int main(int argc, char **argv)
{
    uint64_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 1000000;
    int runs = argc > 2 ? atoi(argv[2]) : 5;
    char bin[PATH_MAX];
    bench_broker_path(argc > 3 ? argv[3] : NULL, bin, sizeof(bin));
    /* The mock keeps at most 100,000 records or 5 MiB per partition. */
    if (n < 1000 || n > (uint64_t)PARTITIONS * 40000 || runs < 1 || runs > MAX_RUNS) {
        fprintf(stderr, "usage: bench_consume [records 1000..%d] [runs 1..%d] [rill-broker]\n",
                PARTITIONS * 40000, MAX_RUNS);
        return 2;
    }
    bench_header("bench_consume", 1, argc, argv);
    char boot[512] = "";
    bench_broker_topic(TOPIC ":%d:1", PARTITIONS);
    bench_broker_start("bench_consume", bin, boot, sizeof(boot));
    char err[512];
    rill_gen_t gen = RILL_GEN_DEFAULT;
    gen.value_size = VALUE;
    rill_testkit_opts_t po = {.timeout_ms = 300000};
    const char *mode = getenv("BENCH_RAW_POLL");
    printf("bench_consume: %" PRIu64 " records of %d bytes over %d partitions, %d alternating "
           "runs, raw loop: %s, broker %s\n",
           n, VALUE, PARTITIONS, runs,
           mode && !strcmp(mode, "poll") ? "consumer_poll + offset_store per record"
                                         : "consume_batch_queue + offset_store per batch",
           boot);
    fflush(stdout);
    if (rill_testkit_produce_generated(boot, TOPIC, n, &gen, &po, err, sizeof(err)))
        die("produce", err);
    bench_end_offsets("bench_consume", boot, TOPIC, PARTITIONS, ends);
    /* Three sides per run (raw, rill with the sink on the source's executor,
     * rill with the sink on the other), in an order that turns by one each
     * run, so that none always goes first. */
    enum { RAW, RILL, SPLIT, SIDES };
    static const char *const side_name[SIDES] = {"raw", "rill", "split"};
    double rate[SIDES][MAX_RUNS], cost[SIDES][MAX_RUNS];
    const char *only = getenv("BENCH_ONLY");
    int ok = 1;
    for (int r = 0; r < runs; r++) {
        result_t res[SIDES];
        for (int k = 0; k < SIDES; k++) {
            int side = (r + k) % SIDES;
            res[side] = (result_t){1, 1, 1};
            if (only && strcmp(only, side_name[side]))
                continue;
            res[side] = side == RAW    ? run_raw(boot, n, r)
                        : side == RILL ? run_rill(boot, n, r, 0)
                                       : run_rill(boot, n, r, 1);
        }
        for (int side = 0; side < SIDES; side++) {
            ok = ok && res[side].ok;
            rate[side][r] = res[side].rate;
            cost[side][r] = res[side].cost;
        }
        printf("  run %d: raw %.0f rec/s %.0f us/1k cpu%s | rill %.0f rec/s %.0f us/1k cpu%s | "
               "rill split %.0f rec/s %.0f us/1k cpu%s\n",
               r + 1, res[RAW].rate, res[RAW].cost, res[RAW].ok ? "" : " (CHECK FAILED)",
               res[RILL].rate, res[RILL].cost, res[RILL].ok ? "" : " (CHECK FAILED)",
               res[SPLIT].rate, res[SPLIT].cost, res[SPLIT].ok ? "" : " (CHECK FAILED)");
        fflush(stdout);
    }
    printf("  checks: %s\n", ok ? "every run read every record once, in order, and committed "
                                  "every partition's end offset"
                                : "FAILED (see above)");
    bench_summary("consume", 0, rate[RILL], rate[RAW], runs, "records/s");
    bench_summary("consume_cost", 1, cost[RILL], cost[RAW], runs, "us/1000");
    bench_summary("consume_split", 0, rate[SPLIT], rate[RAW], runs, "records/s");
    bench_summary("consume_split_cost", 1, cost[SPLIT], cost[RAW], runs, "us/1000");
    return ok ? 0 : 1;
}
