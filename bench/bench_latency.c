/*
 * bench_latency: end-to-end latency at a fixed rate, from the moment a
 * record is handed to the producer to the moment the consuming side's
 * last step has it, through rill against a raw librdkafka poll loop, on the
 * same broker, in the same run, alternating.
 *
 *   producer  one librdkafka producer in this process (shared by both
 *             sides), paced with CLOCK_MONOTONIC at RATE records/s; each
 *             value carries its sequence number and the monotonic time of
 *             its rd_kafka_producev call
 *   baseline  rd_kafka_consumer_poll loop: latency read on return,
 *             rd_kafka_offset_store of the record (no allocation), async
 *             commits every 1,000 with at most one unanswered
 *             (bench_committer_t; the same guarantee as rill's consumer;
 *             a batched poll would wait for a batch to fill, which is
 *             what a latency-minded expert does not do)
 *   rill      a pipeline: rill_kafka_source -> map (pass-through) ->
 *             filter (keeps everything) -> map (pass-through) -> foreach
 *             sink that reads the latency (its RILL_OK confirms the
 *             record); commits driven by rill
 *
 * Low-latency settings, the same on both consumers: fetch.wait.max.ms=1
 * (the mock broker holds an empty fetch for the full wait and does not cut
 * it short when data arrives), fetch.min.bytes=1; the producer has
 * linger.ms=1, acks=1 (linger.ms=0 makes one message set per record, and
 * the mock broker, which looks offsets up by walking a partition's message
 * sets, then saturates a core by itself and adds seconds to both sides).
 * The broker is a `rill-broker` process. Each side and run gets a fresh
 * topic (PARTITIONS partitions), read from its start without a group join.
 * The first WARM_S seconds of records of each run are not counted
 * (connections, first fetches). Every produced record must arrive; a run
 * that loses one says so.
 *
 * Experiments (the reported runs set none of these): BENCH_TRACE=1 also
 * prints the time from rill's first stage to the sink;
 * BENCH_RILL_CONSUMER_CONF="key=value,..." adds rill consumer properties;
 * BENCH_LINGER_MS sets the producer's linger.ms; BENCH_EX_CONSUMER,
 * BENCH_EX_MAP1, BENCH_EX_FILTER, BENCH_EX_MAP2, BENCH_EX_SINK place the
 * stages on executors.
 *
 * usage: bench_latency [seconds per run, default 8] [runs, default 5]
 *                      [path to rill-broker, default: next to this binary]
 */
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <rill/rill.h>
#include <rill/testkit.h>

#include "bench_util.h"

#define PARTITIONS 4
#define VALUE      100
#define RATE       20000 /* records/s */
#define WARM_S     1
#define MAX_RUNS   20
#define LINGER_MS  "1"

static const char *const consumer_kv[] = {"fetch.wait.max.ms", "1", "fetch.min.bytes", "1", NULL};

static void die(const char *what, const char *why)
{
    fprintf(stderr, "bench_latency: %s: %s\n", what, why);
    exit(1);
}

/* ---- latency samples, shared by both sides ---- */

typedef struct samples {
    uint64_t total; /* records produced in the run */
    uint64_t warm;  /* the first `warm` sequence numbers are not counted */
    uint8_t *seen;  /* by sequence number */
    uint32_t *us;   /* latencies of counted records */
    uint64_t n_us;
    _Atomic uint64_t received; /* distinct records */
    uint64_t duplicates, malformed;
} samples_t;

static void samples_init(samples_t *s, uint64_t total, uint64_t warm)
{
    memset(s, 0, sizeof(*s));
    s->total = total;
    s->warm = warm;
    s->seen = calloc(total, 1);
    s->us = calloc(total, sizeof(*s->us));
    if (!s->seen || !s->us)
        die("samples", "out of memory");
}

/* One record arrived at the measuring point. Single writer per run. */
static void samples_add(samples_t *s, const void *value, size_t len, int64_t now)
{
    char v[64] = "";
    memcpy(v, value, len < sizeof(v) - 1 ? len : sizeof(v) - 1);
    uint64_t seq;
    int64_t ts;
    if (sscanf(v, "seq=%" SCNu64 " ts=%" SCNd64, &seq, &ts) != 2 || seq >= s->total) {
        s->malformed++;
        return;
    }
    if (s->seen[seq]++) {
        s->duplicates++;
        return;
    }
    if (seq >= s->warm) {
        int64_t us = (now - ts) / 1000;
        s->us[s->n_us++] = us < 0 ? 0 : (us > UINT32_MAX ? UINT32_MAX : (uint32_t)us);
    }
    atomic_fetch_add_explicit(&s->received, 1, memory_order_release);
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

typedef struct result {
    double p50, p99, p999, max; /* us */
    int ok;
} result_t;

static result_t samples_result(samples_t *s, const char *side)
{
    result_t r = {0};
    uint64_t got = atomic_load(&s->received);
    r.ok = got == s->total && s->n_us;
    if (s->n_us) {
        qsort(s->us, s->n_us, sizeof(*s->us), cmp_u32);
        r.p50 = s->us[s->n_us / 2];
        r.p99 = s->us[s->n_us * 99 / 100];
        r.p999 = s->us[s->n_us * 999 / 1000];
        r.max = s->us[s->n_us - 1];
    }
    if (!r.ok || s->duplicates || s->malformed)
        printf("    %s: received %" PRIu64 " of %" PRIu64 " records, %" PRIu64
               " duplicates, %" PRIu64 " malformed%s\n",
               side, got, s->total, s->duplicates, s->malformed, r.ok ? "" : "  FAILED");
    free(s->seen);
    free(s->us);
    return r;
}

/* ---- the paced producer ---- */

typedef struct pacer {
    rd_kafka_t *rk;
    const char *topic;
    uint64_t total;
    double achieved; /* records/s */
    uint64_t failed;
    pthread_t thread;
} pacer_t;

static void pacer_dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    (void)opaque;
    if (m->err)
        fprintf(stderr, "bench_latency: delivery failed: %s\n", rd_kafka_err2str(m->err));
}

static rd_kafka_t *pacer_client(const char *boot)
{
    char err[512];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    const char *linger = getenv("BENCH_LINGER_MS") ? getenv("BENCH_LINGER_MS") : LINGER_MS;
    const char *kv[] = {"bootstrap.servers", boot, "linger.ms", linger, "acks", "1", NULL};
    for (int i = 0; kv[i]; i += 2)
        if (rd_kafka_conf_set(c, kv[i], kv[i + 1], err, sizeof(err)) != RD_KAFKA_CONF_OK)
            die("producer config", err);
    rd_kafka_conf_set_dr_msg_cb(c, pacer_dr);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, err, sizeof(err));
    if (!rk)
        die("producer", err);
    return rk;
}

static void *pacer_main(void *arg)
{
    pacer_t *p = arg;
    char value[VALUE + 1];
    memset(value, '.', VALUE);
    int64_t start = bench_now_ns(), period = 1000000000 / RATE;
    for (uint64_t seq = 0; seq < p->total;) {
        int64_t now = bench_now_ns();
        /* Everything due by now, each stamped when it is handed over. */
        while (seq < p->total && start + (int64_t)seq * period <= now) {
            int64_t ts = bench_now_ns();
            int len = snprintf(value, sizeof(value), "seq=%" PRIu64 " ts=%" PRId64 " ", seq, ts);
            value[len] = '.';
            rd_kafka_resp_err_t err =
                rd_kafka_producev(p->rk, RD_KAFKA_V_TOPIC(p->topic),
                                  RD_KAFKA_V_PARTITION((int32_t)(seq % PARTITIONS)),
                                  RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                  RD_KAFKA_V_VALUE(value, VALUE), RD_KAFKA_V_END);
            if (err) {
                p->failed++;
                fprintf(stderr, "bench_latency: produce: %s\n", rd_kafka_err2str(err));
            }
            seq++;
            now = bench_now_ns();
        }
        rd_kafka_poll(p->rk, 0);
        int64_t due = start + (int64_t)seq * period;
        struct timespec ts = {(time_t)(due / 1000000000), (long)(due % 1000000000)};
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL); /* pacing */
    }
    p->achieved = (double)p->total / ((double)(bench_now_ns() - start) / 1e9);
    rd_kafka_flush(p->rk, 10000);
    return NULL;
}

static void pacer_start(pacer_t *p, rd_kafka_t *rk, const char *topic, uint64_t total)
{
    memset(p, 0, sizeof(*p));
    p->rk = rk;
    p->topic = topic;
    p->total = total;
    if (pthread_create(&p->thread, NULL, pacer_main, p))
        die("pacer", "cannot start a thread");
}

/* ---- baseline: raw librdkafka ---- */

static result_t run_raw(const char *boot, rd_kafka_t *prod, uint64_t total, int run)
{
    char topic[64], group[64];
    snprintf(topic, sizeof(topic), "lat-raw-%d", run);
    snprintf(group, sizeof(group), "lat-raw-%d", run);
    rd_kafka_t *rk = bench_raw_consumer("bench_latency", boot, group, consumer_kv, NULL);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(PARTITIONS);
    for (int p = 0; p < PARTITIONS; p++)
        rd_kafka_topic_partition_list_add(l, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_assign(rk, l);
    rd_kafka_topic_partition_list_destroy(l);

    samples_t s;
    samples_init(&s, total, (uint64_t)RATE * WARM_S);
    pacer_t pacer;
    pacer_start(&pacer, prod, topic, total);
    int64_t deadline = bench_now_ns() + ((int64_t)total / RATE + 30) * 1000000000;
    uint64_t n = 0;
    bench_committer_t com;
    bench_committer_init(&com, rk, 1000);
    while (atomic_load(&s.received) < total && bench_now_ns() < deadline) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        bench_committer_step(&com, n);
        if (!m)
            continue;
        if (!m->err) {
            samples_add(&s, m->payload, m->len, bench_now_ns());
            rd_kafka_offset_store(m->rkt, m->partition, m->offset); /* stores offset + 1 */
            n++;
        }
        rd_kafka_message_destroy(m);
    }
    pthread_join(pacer.thread, NULL);
    bench_committer_drain(&com);
    rd_kafka_commit(rk, NULL, 0);
    bench_committer_destroy(&com);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    if (pacer.achieved < RATE * 0.98)
        printf("    raw: the producer reached only %.0f records/s\n", pacer.achieved);
    return samples_result(&s, "raw");
}

/* ---- rill ---- */

typedef struct rill_side {
    samples_t *s;
    /* Trace mode (BENCH_TRACE): when the first map saw each record, to
     * split the latency into "until rill's first stage" and "through the
     * stages"; NULL otherwise. */
    int64_t *trace_t1;
    pthread_mutex_t lock; /* the main thread waits for the last record */
    pthread_cond_t cond;
} rill_side_t;

static uint64_t seq_of(const rd_kafka_message_t *m)
{
    char v[32] = "";
    memcpy(v, m->payload, m->len < sizeof(v) - 1 ? m->len : sizeof(v) - 1);
    return strtoull(v + 4, NULL, 10);
}

static rill_err_t pass_first(void *opaque, rill_elem_t *in, rill_elem_t *out)
{
    rill_side_t *side = opaque;
    uint64_t seq = seq_of(rill_record(in));
    if (seq < side->s->total)
        side->trace_t1[seq] = bench_now_ns();
    *out = *in; /* the record moves on */
    memset(in, 0, sizeof(*in));
    return RILL_OK;
}

static rill_err_t pass(void *opaque, rill_elem_t *in, rill_elem_t *out)
{
    (void)opaque;
    *out = *in; /* the record moves on */
    memset(in, 0, sizeof(*in));
    return RILL_OK;
}

static int keep_all(void *opaque, const rill_elem_t *e)
{
    (void)opaque;
    return rill_record(e) != NULL;
}

/* The sink: the latency; RILL_OK confirms the record. */
static rill_err_t measure(void *opaque, rill_elem_t *e)
{
    rill_side_t *side = opaque;
    const rd_kafka_message_t *m = rill_record(e);
    int64_t now = bench_now_ns();
    if (side->trace_t1) {
        uint64_t seq = seq_of(m);
        if (seq < side->s->total && side->trace_t1[seq])
            side->trace_t1[seq] = now - side->trace_t1[seq]; /* now the time through the stages */
    }
    samples_add(side->s, m->payload, m->len, now);
    rill_elem_release(e);
    if (atomic_load_explicit(&side->s->received, memory_order_relaxed) == side->s->total) {
        pthread_mutex_lock(&side->lock);
        pthread_cond_signal(&side->cond);
        pthread_mutex_unlock(&side->lock);
    }
    return RILL_OK;
}

/* The setter bench_conf_from_env() uses for the extra rill properties. */
static int consumer_set(void *c, const char *k, const char *v, char *e, size_t es)
{
    return rill_consumer_conf_set(c, k, v, e, es);
}

static result_t run_rill(const char *boot, rd_kafka_t *prod, uint64_t total, int run)
{
    char topic[64], group[64], err[512];
    snprintf(topic, sizeof(topic), "lat-rill-%d", run);
    snprintf(group, sizeof(group), "lat-rill-%d", run);
    rill_system_t *sys = rill_system_new(
        &(rill_system_opts_t){.executors = 2,
                              .spin_us = getenv("BENCH_SPIN_US")
                                             ? (uint32_t)strtoul(getenv("BENCH_SPIN_US"), NULL, 10)
                                             : 0},
        err, sizeof(err));
    if (!sys)
        die("rill system", err);
    if (rill_system_start(sys))
        die("rill system", "cannot start");
    rill_consumer_conf_t *c = rill_consumer_conf_new();
    if (rill_consumer_conf_set(c, "bootstrap.servers", boot, err, sizeof(err)) ||
        rill_consumer_conf_set(c, "group.id", group, err, sizeof(err)))
        die("rill consumer config", err);
    for (int i = 0; consumer_kv[i]; i += 2)
        if (rill_consumer_conf_set(c, consumer_kv[i], consumer_kv[i + 1], err, sizeof(err)))
            die("rill consumer config", err);
    for (int p = 0; p < PARTITIONS; p++)
        if (rill_consumer_conf_assign(c, topic, p, RILL_OFFSET_BEGINNING, err, sizeof(err)))
            die("rill consumer config", err);
    bench_conf_from_env("bench_latency", c, "BENCH_RILL_CONSUMER_CONF", consumer_set);

    samples_t s;
    samples_init(&s, total, (uint64_t)RATE * WARM_S);
    rill_side_t side = {.s = &s};
    pthread_mutex_init(&side.lock, NULL);
    pthread_cond_init(&side.cond, NULL);
    if (getenv("BENCH_TRACE") && !(side.trace_t1 = calloc(total, sizeof(*side.trace_t1))))
        die("trace", "out of memory");
    /* Consumer and first map on executor 0, the rest on executor 1: one
     * crossing, as a two-core service would place them. */
    rill_stage_opts_t o[5] = {{.executor = RILL_EXECUTOR(bench_env_int("BENCH_EX_CONSUMER", 0))},
                              {.executor = RILL_EXECUTOR(bench_env_int("BENCH_EX_MAP1", 0))},
                              {.executor = RILL_EXECUTOR(bench_env_int("BENCH_EX_FILTER", 1))},
                              {.executor = RILL_EXECUTOR(bench_env_int("BENCH_EX_MAP2", 1))},
                              {.executor = RILL_EXECUTOR(bench_env_int("BENCH_EX_SINK", 1))}};
    rill_pipeline_t *pl = rill_pipeline_new(sys, "latency");
    rill_pipeline_add(pl, rill_kafka_source(c), &o[0]);
    rill_pipeline_add(
        pl, side.trace_t1 ? rill_stage_map(pass_first, &side) : rill_stage_map(pass, NULL), &o[1]);
    rill_pipeline_add(pl, rill_stage_filter(keep_all, NULL), &o[2]);
    rill_pipeline_add(pl, rill_stage_map(pass, NULL), &o[3]);
    rill_pipeline_add(pl, rill_sink_foreach(measure, &side), &o[4]);
    if (rill_pipeline_start(pl, err, sizeof(err)))
        die("rill pipeline", err);

    pacer_t pacer;
    pacer_start(&pacer, prod, topic, total);
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += (time_t)(total / RATE + 30);
    pthread_mutex_lock(&side.lock);
    while (atomic_load(&s.received) < total)
        if (pthread_cond_timedwait(&side.cond, &side.lock, &deadline))
            break;
    pthread_mutex_unlock(&side.lock);
    pthread_join(pacer.thread, NULL);
    rill_pipeline_result_t res;
    rill_pipeline_stop(pl); /* the final commit */
    if (rill_pipeline_wait(pl, -1, &res) == RILL_OK && res.end != RILL_PIPELINE_STOPPED)
        printf("    rill: the pipeline ended: %s %s\n", res.stage, res.text);
    rill_pipeline_destroy(pl);
    rill_system_stop(sys, 10000);
    rill_system_destroy(sys);
    pthread_cond_destroy(&side.cond);
    pthread_mutex_destroy(&side.lock);
    if (side.trace_t1) {
        /* The time through the stages, of counted records. */
        uint32_t *d = calloc(total, sizeof(*d));
        uint64_t nd = 0;
        for (uint64_t i = s.warm; d && i < total; i++)
            if (side.trace_t1[i] > 0)
                d[nd++] = (uint32_t)(side.trace_t1[i] / 1000);
        if (nd) {
            qsort(d, nd, sizeof(*d), cmp_u32);
            fprintf(stderr, "    rill: map1 -> sink p50 %u p99 %u p999 %u max %u us\n", d[nd / 2],
                    d[nd * 99 / 100], d[nd * 999 / 1000], d[nd - 1]);
        }
        free(d);
        free(side.trace_t1);
    }
    if (pacer.achieved < RATE * 0.98)
        printf("    rill: the producer reached only %.0f records/s\n", pacer.achieved);
    return samples_result(&s, "rill");
}

/* ---- main ---- */

int main(int argc, char **argv)
{
    int seconds = argc > 1 ? atoi(argv[1]) : 8;
    int runs = argc > 2 ? atoi(argv[2]) : 5;
    char bin[PATH_MAX];
    bench_broker_path(argc > 3 ? argv[3] : NULL, bin, sizeof(bin));
    /* The mock keeps at most 100,000 records per partition. */
    if (seconds < 1 || (WARM_S + seconds) * RATE / PARTITIONS > 90000 || runs < 1 ||
        runs > MAX_RUNS) {
        fprintf(stderr, "usage: bench_latency [seconds 1..%d] [runs 1..%d] [rill-broker]\n",
                90000 * PARTITIONS / RATE - WARM_S, MAX_RUNS);
        return 2;
    }
    bench_header("bench_latency", 1, argc, argv);
    char boot[512] = "";
    for (int r = 0; r < runs; r++) {
        bench_broker_topic("lat-raw-%d:%d:1", r, PARTITIONS);
        bench_broker_topic("lat-rill-%d:%d:1", r, PARTITIONS);
    }
    bench_broker_start("bench_latency", bin, boot, sizeof(boot));
    rd_kafka_t *prod = pacer_client(boot);
    uint64_t total = (uint64_t)RATE * (uint64_t)(WARM_S + seconds);
    printf("bench_latency: %d records/s of %d bytes for %d+%d s per run over %d partitions, "
           "%d alternating runs, broker %s\n",
           RATE, VALUE, WARM_S, seconds, PARTITIONS, runs, boot);
    printf("  consumers: fetch.wait.max.ms=1 fetch.min.bytes=1; producer: linger.ms=%s acks=1\n",
           getenv("BENCH_LINGER_MS") ? getenv("BENCH_LINGER_MS") : LINGER_MS);
    fflush(stdout);
    double r50[MAX_RUNS], r99[MAX_RUNS], r999[MAX_RUNS], b50[MAX_RUNS], b99[MAX_RUNS],
        b999[MAX_RUNS];
    int ok = 1;
    for (int r = 0; r < runs; r++) {
        result_t b, x;
        if (r % 2 == 0) {
            b = run_raw(boot, prod, total, r);
            x = run_rill(boot, prod, total, r);
        } else {
            x = run_rill(boot, prod, total, r);
            b = run_raw(boot, prod, total, r);
        }
        ok = ok && b.ok && x.ok;
        b50[r] = b.p50;
        b99[r] = b.p99;
        b999[r] = b.p999;
        r50[r] = x.p50;
        r99[r] = x.p99;
        r999[r] = x.p999;
        printf("  run %d: raw p50 %.0f p99 %.0f p999 %.0f max %.0f us | rill p50 %.0f p99 %.0f "
               "p999 %.0f max %.0f us\n",
               r + 1, b.p50, b.p99, b.p999, b.max, x.p50, x.p99, x.p999, x.max);
        fflush(stdout);
    }
    rd_kafka_flush(prod, 10000);
    rd_kafka_destroy(prod);
    printf("  checks: %s\n", ok ? "every produced record arrived on both sides"
                                : "FAILED: records were lost (see above)");
    /* Goals (librdkafka >= 2.2): p50 overhead <= 200 us, p99 overhead <=
     * 1000 us; the _overhead lines give rill - raw of the medians. */
    bench_summary("latency_p50", 0, r50, b50, runs, "us");
    bench_summary("latency_p99", 0, r99, b99, runs, "us");
    bench_summary("latency_p999", 0, r999, b999, runs, "us");
    bench_overhead("latency_p50_overhead", 0, r50, b50, runs, "us");
    bench_overhead("latency_p99_overhead", 0, r99, b99, runs, "us");
    return ok ? 0 : 1;
}
