/*
 * bench_backlog: a consumer held back by a slow sink, with a backlog of
 * 1,000,000 records of 100 bytes waiting in Kafka, against a raw
 * librdkafka consumer held back the same way: how much memory each holds
 * while held back, and how soon each is back at full speed once the sink
 * speeds up.
 *
 * Each run of a side is a fresh child process (this binary with --child),
 * so its RSS is its own (the first side's freed heap would otherwise stay
 * in the second's), under a fresh group, reading every partition from
 * offset 0 without a group join. The topic holds WARM + backlog records.
 * A run:
 *
 *   1. warm: the sink takes the first WARM (200,000) records as fast as
 *      they come; the rate between the 100,000th and the 200,000th is the
 *      side's full rate (backlog_warm);
 *   2. held back: the sink takes `slow` records/s (default 2,000, paced on
 *      an absolute schedule) for `seconds` (default 5) while the backlog
 *      waits in Kafka; the process's RSS (/proc/self/statm) is sampled
 *      every 10 ms: its peak is the backlog_rss line (goal: <= 32 MiB);
 *   3. released: the sink takes records as fast as they come until all
 *      are consumed. backlog_resume: the time from the release to the
 *      RESUME_RECORDS-th (100,000th) record after it (at 1 M records/s,
 *      100 ms: a consumer that stalls after the release shows the stall);
 *      backlog_drain: the rate over everything left at the release.
 *
 *   baseline  what a librdkafka expert writes with the same bound: a
 *             consumer thread taking batches of up to BATCH (rill's
 *             rill.buffer.high) records with rd_kafka_consume_batch_queue,
 *             processing them in the loop (the slow sink), storing each
 *             offset with rd_kafka_offset_store (no allocation; it
 *             stores offset + 1), async commits every 1,000 records with
 *             at most one unanswered (bench_committer_t; until 2026-12-06
 *             one per 1,000 and the offset + 2 stored); librdkafka's prefetch is
 *             bounded by the same client properties rill's consumer gets
 *             (bench_raw_consumer_defaults: queued.max.messages.kbytes
 *             8192, or 2048 with fetch.queue.backoff.ms=1 from librdkafka
 *             2.2, and whatever BENCH_CONSUMER_CONF adds), so that its fetcher
 *             stops where rill's does. It never pauses: the prefetch bound
 *             is what holds its memory.
 *   rill      a pipeline: rill_kafka_source (executor 0) ->
 *             rill_sink_foreach (executor 1, mailbox 1,024 as in
 *             bench_consume) calling the same sink, whose RILL_OK confirms
 *             every record; rill defaults otherwise.
 *
 * The broker is a separate `rill-broker` process, so the child's RSS is
 * the client's alone. Both sides check that they saw every record of every
 * partition once and in order (no gap, no duplicate); the parent checks
 * that the broker kept every record (the mock drops a partition's oldest
 * past 5 MiB or 100,000 records).
 *
 * Experiments (the reported runs set none of these): BENCH_CONSUMER_CONF
 * ="key=value,..." adds librdkafka properties to both consumers (e.g.
 * queued.max.messages.kbytes, fetch.queue.backoff.ms on librdkafka >=
 * 2.2); BENCH_RILL_CONF="rill.key=value,..." adds rill properties to
 * rill's (e.g. rill.pause.after.ms); BENCH_ONLY=rill|raw runs one side;
 * BENCH_TRIM=1 calls malloc_trim(0) after every RSS sample of the held-back
 * phase (what the allocator holds free); BENCH_TRACE=1 prints each child's
 * RSS and records per 50 ms after the release on stderr. MALLOC_ARENA_MAX
 * and other glibc tunables reach the children unchanged.
 *
 * usage: bench_backlog [backlog records, default 1000000] [runs, default 5]
 *                      [slow records/s, default 2000] [slow seconds, default 5]
 *                      [path to rill-broker, default: next to this binary]
 */
#include <inttypes.h>
#include <limits.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <rill/rill.h>
#include <rill/testkit.h>

#include "bench_util.h"
#include "kafka/kafka_int.h"

#define PARTITIONS     32
#define VALUE          100
#define TOPIC          "bench"
#define MAX_RUNS       20
#define BATCH          1000   /* rill.buffer.high's default */
#define WARM           200000 /* records taken fast first: the full rate */
#define WINDOW_MS      50
#define RESUME_RECORDS 100000 /* taken after the release: resumed */
#define MAX_WIN        12000  /* 10 minutes of windows */

static void die(const char *what, const char *why)
{
    fprintf(stderr, "bench_backlog: %s: %s\n", what, why);
    exit(1);
}

/* ------------------------------------------------------------------ */
/* The child: one side, one run                                        */
/* ------------------------------------------------------------------ */

/* The sink both sides call for each record (one thread per side). It
 * runs fast for the first `warm` records, then at slow_rate until
 * released. */
typedef struct sink {
    _Atomic int released;                 /* the held-back phase is over: no pacing */
    _Atomic uint64_t consumed;            /* records taken */
    uint64_t warm;                        /* records taken fast before the held-back phase */
    _Atomic int64_t t_half_ns, t_warm_ns; /* when warm / 2 and warm were taken */
    double slow_rate;                     /* records/s while held back */
    uint64_t slow_k;                      /* records paced so far */
    int64_t next[PARTITIONS];             /* the next offset expected per partition */
    uint64_t out_of_order;                /* gaps, duplicates, strangers */
} sink_t;

static void sink_take(sink_t *s, int32_t partition, int64_t offset)
{
    uint64_t k = atomic_load_explicit(&s->consumed, memory_order_relaxed);
    if (k >= s->warm && !atomic_load_explicit(&s->released, memory_order_relaxed)) {
        int64_t t0 = atomic_load_explicit(&s->t_warm_ns, memory_order_relaxed);
        int64_t due = t0 + (int64_t)((double)s->slow_k++ * 1e9 / s->slow_rate);
        struct timespec ts = {(time_t)(due / 1000000000), (long)(due % 1000000000)};
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL))
            ; /* EINTR: sleep on to the same instant */
    }
    if (partition < 0 || partition >= PARTITIONS || offset != s->next[partition])
        s->out_of_order++;
    else
        s->next[partition] = offset + 1;
    if (k + 1 == s->warm / 2)
        atomic_store_explicit(&s->t_half_ns, bench_now_ns(), memory_order_relaxed);
    if (k + 1 == s->warm)
        atomic_store_explicit(&s->t_warm_ns, bench_now_ns(), memory_order_relaxed);
    /* Release: the sampler reads the count, then the times, from another
     * thread. */
    atomic_store_explicit(&s->consumed, k + 1, memory_order_release);
}

typedef struct child {
    const char *boot;
    char group[64];
    uint64_t n;
    sink_t sink;
    _Atomic int stop; /* raw: the loop ends */
} child_t;

static int conf_set_rill(void *conf, const char *key, const char *value, char *err, size_t size)
{
    return rill_consumer_conf_set(conf, key, value, err, size) != RILL_OK;
}

/* ---- baseline: raw librdkafka ---- */

static void *raw_main(void *arg)
{
    child_t *c = arg;
    /* rill's bound and fetch pacing, then BENCH_CONSUMER_CONF */
    rd_kafka_t *rk =
        bench_raw_consumer("bench_backlog", c->boot, c->group, NULL, "BENCH_CONSUMER_CONF");
    rd_kafka_queue_t *q = rd_kafka_queue_get_consumer(rk);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(PARTITIONS);
    for (int p = 0; p < PARTITIONS; p++)
        rd_kafka_topic_partition_list_add(l, TOPIC, p)->offset = 0;
    rd_kafka_assign(rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    static rd_kafka_message_t *batch[BATCH];
    bench_committer_t com;
    bench_committer_init(&com, rk, 1000);
    uint64_t done = 0;
    while (!atomic_load(&c->stop) && atomic_load(&c->sink.consumed) < c->n) {
        ssize_t got = rd_kafka_consume_batch_queue(q, 100, batch, BATCH);
        for (ssize_t i = 0; i < got; i++) {
            rd_kafka_message_t *m = batch[i];
            if (!m->err) {
                sink_take(&c->sink, m->partition, m->offset);
                /* Stores m->offset + 1: the next record to read. */
                rd_kafka_offset_store(m->rkt, m->partition, m->offset);
                done++;
            }
            rd_kafka_message_destroy(m);
        }
        bench_committer_step(&com, done);
    }
    bench_committer_drain(&com);
    rd_kafka_commit(rk, NULL, 0);
    bench_committer_destroy(&com);
    rd_kafka_queue_destroy(q);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return NULL;
}

/* ---- rill ---- */

static rill_err_t rill_take(void *opaque, rill_elem_t *e)
{
    const rd_kafka_message_t *m = rill_record(e);
    sink_take(opaque, m->partition, m->offset);
    rill_elem_release(e);
    return RILL_OK;
}

typedef struct rill_side {
    rill_system_t *sys;
    rill_pipeline_t *p;
} rill_side_t;

static rill_side_t rill_start(child_t *c)
{
    char err[512];
    rill_side_t r;
    r.sys = rill_system_new(&(rill_system_opts_t){.executors = 2}, err, sizeof(err));
    if (!r.sys || rill_system_start(r.sys))
        die("rill system", r.sys ? "cannot start" : err);
    rill_consumer_conf_t *cc = rill_consumer_conf_new();
    if (rill_consumer_conf_set(cc, "bootstrap.servers", c->boot, err, sizeof(err)) ||
        rill_consumer_conf_set(cc, "group.id", c->group, err, sizeof(err)))
        die("rill consumer config", err);
    for (int p = 0; p < PARTITIONS; p++)
        if (rill_consumer_conf_assign(cc, TOPIC, p, 0, err, sizeof(err)))
            die("rill consumer config", err);
    bench_conf_from_env("bench_backlog", cc, "BENCH_CONSUMER_CONF", conf_set_rill);
    bench_conf_from_env("bench_backlog", cc, "BENCH_RILL_CONF", conf_set_rill);
    rill_stage_opts_t so = {.executor = RILL_EXECUTOR(0)},
                      ko = {.executor = RILL_EXECUTOR(1), .mailbox_capacity = 1024};
    r.p = rill_pipeline_new(r.sys, "backlog");
    rill_pipeline_add(r.p, rill_kafka_source(cc), &so);
    rill_pipeline_add(r.p, rill_sink_foreach(rill_take, &c->sink), &ko);
    if (rill_pipeline_start(r.p, err, sizeof(err)))
        die("rill pipeline", err);
    return r;
}

static void rill_end(rill_side_t *r, int trace)
{
    rill_consumer_stats_t cs;
    if (trace && rill_consumer_stats(r->sys, rill_pipeline_stage(r->p, 0), &cs) == RILL_OK)
        fprintf(stderr, "  rill consumer: polled %" PRIu64 " pauses %" PRIu64 " buffered_max %u\n",
                cs.polled, cs.pauses, cs.buffered_max);
    rill_pipeline_result_t res;
    rill_pipeline_stop(r->p);
    rill_pipeline_wait(r->p, -1, &res);
    if (res.end != RILL_PIPELINE_STOPPED)
        die("rill pipeline ended", res.text);
    rill_pipeline_destroy(r->p);
    rill_system_stop(r->sys, 10000);
    rill_system_destroy(r->sys);
}

/* ---- measuring ---- */

static double rss_mib(void)
{
    long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
            rss = 0;
        fclose(f);
    }
    return (double)rss * (double)sysconf(_SC_PAGESIZE) / (1024.0 * 1024.0);
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL); /* the sampler's period */
}

/* Runs one side; prints one line "result <fields>" on stdout. */
static int child_main(const char *side, const char *boot, uint64_t n, uint64_t warm,
                      double slow_rate, double slow_s, int run)
{
    /* A parent that dies (Ctrl-C, a failed check) takes its child along:
     * its broker is gone anyway. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    int is_rill = !strcmp(side, "rill");
    int trace = bench_env_int("BENCH_TRACE", 0), trim = bench_env_int("BENCH_TRIM", 0);
    static child_t c;
    c.boot = boot;
    c.n = n;
    c.sink.warm = warm;
    c.sink.slow_rate = slow_rate;
    snprintf(c.group, sizeof(c.group), "backlog-%s-%d", side, run);
    double rss_idle = rss_mib(), rss_warm = 0, rss_held = 0, rss_release = 0, rss_drain = 0;
    rill_side_t r = {0};
    pthread_t raw_thread;
    int64_t t0 = bench_now_ns(), deadline = t0 + 600 * 1000000000LL;
    if (is_rill)
        r = rill_start(&c);
    else if (pthread_create(&raw_thread, NULL, raw_main, &c))
        die("raw consumer", "cannot start its thread");

    /* Warm: fast up to `warm` records (the sink then holds back). */
    while (atomic_load_explicit(&c.sink.consumed, memory_order_acquire) < warm) {
        double m = rss_mib();
        if (m > rss_warm)
            rss_warm = m;
        if (bench_now_ns() > deadline)
            die(side, "did not take the first records within 10 minutes");
        sleep_ms(10);
    }
    int64_t t_half = atomic_load(&c.sink.t_half_ns), t_warm = atomic_load(&c.sink.t_warm_ns);
    double ref_rate = (double)(warm - warm / 2) * 1e9 / (double)(t_warm - t_half);

    /* Held back for slow_s from the warm phase's last record. */
    int64_t release = t_warm + (int64_t)(slow_s * 1e9);
    while (bench_now_ns() < release) {
        double m = rss_mib();
        if (m > rss_held)
            rss_held = m;
        if (trim)
            malloc_trim(0);
        sleep_ms(10);
    }
    rss_release = rss_mib();
    uint64_t held_count = atomic_load_explicit(&c.sink.consumed, memory_order_acquire) - warm;

    /* Released: records per WINDOW_MS until everything is consumed. */
    atomic_store(&c.sink.released, 1);
    int64_t t_rel = bench_now_ns();
    int nw = 0;
    uint64_t done = atomic_load_explicit(&c.sink.consumed, memory_order_acquire), last = done;
    int64_t next_win = t_rel + WINDOW_MS * 1000000LL, t_resume = 0;
    uint64_t resumed_at = done + RESUME_RECORDS < n ? done + RESUME_RECORDS : n;
    while (done < n && nw < MAX_WIN) {
        double m = rss_mib();
        if (m > rss_drain)
            rss_drain = m;
        sleep_ms(2);
        done = atomic_load_explicit(&c.sink.consumed, memory_order_acquire);
        if (!t_resume && done >= resumed_at)
            t_resume = bench_now_ns();
        if (bench_now_ns() >= next_win) {
            nw++;
            if (trace)
                fprintf(stderr, "  %s %6.2f s: %6" PRIu64 " records, RSS %.1f MiB\n", side,
                        (double)(next_win - t_rel) / 1e9, done - last, m);
            last = done;
            next_win += WINDOW_MS * 1000000LL;
        }
    }
    int64_t t_end = bench_now_ns();
    if (!t_resume)
        t_resume = t_end;
    if (done < n)
        die(side, "did not consume every record within 10 minutes");
    /* The drain's rate over what was left at the release. */
    double drain_rate = (double)(n - warm - held_count) * 1e9 / (double)(t_end - t_rel);
    /* Resume: from the release to the RESUME_RECORDS-th record after it. */
    double resume_ms = (double)(t_resume - t_rel) / 1e6;
    if (is_rill)
        rill_end(&r, trace);
    else {
        atomic_store(&c.stop, 1);
        pthread_join(raw_thread, NULL);
    }
    int ok = !c.sink.out_of_order;
    for (int p = 0; p < PARTITIONS; p++)
        ok = ok && c.sink.next[p] > 0;
    printf("result %.2f %.2f %.2f %.2f %.2f %.0f %.0f %.0f %" PRIu64 " %d %" PRIu64 "\n", rss_idle,
           rss_warm, rss_held, rss_release, rss_drain, resume_ms, ref_rate, drain_rate, held_count,
           ok, c.sink.out_of_order);
    fflush(stdout);
    return 0;
}

/* ------------------------------------------------------------------ */
/* The parent: broker, data, alternating children                      */
/* ------------------------------------------------------------------ */

typedef struct result {
    double rss_idle, rss_warm, rss_held, rss_release, rss_drain; /* MiB */
    double resume_ms, ref_rate, drain_rate;
    uint64_t held_count, out_of_order;
    int ok;
} result_t;

static result_t run_child(const char *self, const char *side, const char *boot, uint64_t n,
                          uint64_t warm, double slow_rate, double slow_s, int run)
{
    char cmd[PATH_MAX + 1024];
    snprintf(cmd, sizeof(cmd), "'%s' --child %s '%s' %" PRIu64 " %" PRIu64 " %g %g %d", self, side,
             boot, n, warm, slow_rate, slow_s, run);
    FILE *f = popen(cmd, "r");
    if (!f)
        die(side, "cannot run the child");
    char line[512];
    result_t r = {0};
    int got = 0;
    while (fgets(line, sizeof(line), f))
        if (!strncmp(line, "result ", 7))
            got = sscanf(line + 7, "%lf %lf %lf %lf %lf %lf %lf %lf %" SCNu64 " %d %" SCNu64,
                         &r.rss_idle, &r.rss_warm, &r.rss_held, &r.rss_release, &r.rss_drain,
                         &r.resume_ms, &r.ref_rate, &r.drain_rate, &r.held_count, &r.ok,
                         &r.out_of_order);
    int status = pclose(f);
    if (got != 11 || status != 0)
        die(side, "the child failed (its messages are above)");
    return r;
}

/* The mock keeps at most 5 MiB or 100,000 records per partition and drops
 * the oldest silently: every partition must still start at offset 0. */
static void check_retained(const char *boot)
{
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", boot, err, sizeof(err)))
        die("watermarks", err);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    if (!rk)
        die("watermarks", err);
    for (int p = 0; p < PARTITIONS; p++) {
        int64_t lo = -1, hi = -1;
        rd_kafka_resp_err_t e = rd_kafka_query_watermark_offsets(rk, TOPIC, p, &lo, &hi, 10000);
        if (e)
            die("watermarks", rd_kafka_err2str(e));
        if (lo != 0)
            die("retention", "the broker dropped the head of a partition: fewer records");
    }
    rd_kafka_destroy(rk);
}

static void spread(const char *what, const double *v, int runs, int decimals)
{
    printf(" %s %.*f..%.*f", what, decimals, v[0], decimals, v[runs - 1]);
}

int main(int argc, char **argv)
{
    if (argc == 9 && !strcmp(argv[1], "--child"))
        return child_main(argv[2], argv[3], strtoull(argv[4], NULL, 10),
                          strtoull(argv[5], NULL, 10), atof(argv[6]), atof(argv[7]), atoi(argv[8]));
    uint64_t backlog = argc > 1 ? strtoull(argv[1], NULL, 10) : 1000000;
    int runs = argc > 2 ? atoi(argv[2]) : 5;
    double slow_rate = argc > 3 ? atof(argv[3]) : 2000;
    double slow_s = argc > 4 ? atof(argv[4]) : 5;
    char bin[PATH_MAX], self[PATH_MAX];
    bench_broker_path(argc > 5 ? argv[5] : NULL, bin, sizeof(bin));
    uint64_t warm = WARM, n = backlog + warm;
    if (backlog < 100000 || runs < 1 || runs > MAX_RUNS || slow_rate < 1 || slow_s < 1 ||
        slow_rate * slow_s > (double)backlog / 2) {
        fprintf(stderr,
                "usage: bench_backlog [backlog records >= 100000] [runs 1..%d] [slow records/s "
                ">= 1] [slow seconds >= 1] [rill-broker]\n"
                "(the held-back phase takes at most half of the backlog)\n",
                MAX_RUNS);
        return 2;
    }
    ssize_t sl = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (sl <= 0)
        die("/proc/self/exe", "cannot read it");
    self[sl] = '\0';
    bench_header("bench_backlog", 1, argc, argv);
    struct utsname u;
    uname(&u);
    char boot[512] = "";
    bench_broker_topic(TOPIC ":%d:1", PARTITIONS);
    bench_broker_start("bench_backlog", bin, boot, sizeof(boot));
    printf("bench_backlog: librdkafka %s, host %s, %s %s, %ld cpus; %" PRIu64
           " records of %d bytes over %d partitions on rill-broker %s: %" PRIu64
           " taken fast, then a backlog of %" PRIu64 " held back at %g records/s for %g s, then "
           "released; %d alternating runs, each side in a fresh process\n",
           rd_kafka_version_str(), u.nodename, u.sysname, u.release, sysconf(_SC_NPROCESSORS_ONLN),
           n, VALUE, PARTITIONS, boot, warm, backlog, slow_rate, slow_s, runs);
    const char *cc = getenv("BENCH_CONSUMER_CONF"), *rc = getenv("BENCH_RILL_CONF"),
               *arena = getenv("MALLOC_ARENA_MAX");
    /* What rill's consumer gets by default here (it depends on the
     * librdkafka running), which the raw side gets too. */
    char kb[32] = "?", fqb[32] = "unset";
    size_t kbs = sizeof(kb), fqbs = sizeof(fqb);
    rd_kafka_conf_t *dc = rd_kafka_conf_new();
    bench_raw_consumer_defaults(dc);
    rd_kafka_conf_get(dc, "queued.max.messages.kbytes", kb, &kbs);
    if (rill__has_fetch_queue_backoff())
        rd_kafka_conf_get(dc, "fetch.queue.backoff.ms", fqb, &fqbs);
    rd_kafka_conf_destroy(dc);
    printf("  both consumers: rill's defaults (queued.max.messages.kbytes=%s, "
           "fetch.queue.backoff.ms %s)%s%s; rill: defaults%s%s%s%s\n",
           kb, fqb, cc ? ", then " : "", cc ? cc : "", rc ? ", then " : "", rc ? rc : "",
           arena ? "; MALLOC_ARENA_MAX=" : "", arena ? arena : "");
    fflush(stdout);
    char err[512];
    rill_gen_t gen = RILL_GEN_DEFAULT;
    gen.value_size = VALUE;
    rill_testkit_opts_t po = {.timeout_ms = 300000};
    if (rill_testkit_produce_generated(boot, TOPIC, n, &gen, &po, err, sizeof(err)))
        die("produce", err);
    check_retained(boot);
    double rh[MAX_RUNS], bh[MAX_RUNS], rr[MAX_RUNS], br[MAX_RUNS], rd[MAX_RUNS], bd[MAX_RUNS];
    double rf[MAX_RUNS], bf[MAX_RUNS];
    int all_ok = 1;
    for (int r = 0; r < runs; r++) {
        result_t x = {.ok = 1}, b = {.ok = 1};
        int side[2], sides = bench_sides(r, side); /* alternating which goes first */
        for (int k = 0; k < sides; k++)
            if (side[k] == BENCH_SIDE_RILL)
                x = run_child(self, "rill", boot, n, warm, slow_rate, slow_s, r);
            else
                b = run_child(self, "raw", boot, n, warm, slow_rate, slow_s, r);
        rh[r] = x.rss_held, bh[r] = b.rss_held;
        rr[r] = x.resume_ms, br[r] = b.resume_ms;
        rd[r] = x.drain_rate, bd[r] = b.drain_rate;
        rf[r] = x.ref_rate, bf[r] = b.ref_rate;
        all_ok = all_ok && x.ok && b.ok;
        printf("  run %d: raw RSS MiB idle %.1f warm %.1f held %.1f (at release %.1f) drain %.1f, "
               "resume %.0f ms, rec/s warm %.0f drain %.0f, held %" PRIu64 "%s\n",
               r + 1, b.rss_idle, b.rss_warm, b.rss_held, b.rss_release, b.rss_drain, b.resume_ms,
               b.ref_rate, b.drain_rate, b.held_count, b.ok ? "" : " CHECK FAILED");
        printf("         rill RSS MiB idle %.1f warm %.1f held %.1f (at release %.1f) drain %.1f, "
               "resume %.0f ms, rec/s warm %.0f drain %.0f, held %" PRIu64 "%s\n",
               x.rss_idle, x.rss_warm, x.rss_held, x.rss_release, x.rss_drain, x.resume_ms,
               x.ref_rate, x.drain_rate, x.held_count, x.ok ? "" : " CHECK FAILED");
        fflush(stdout);
    }
    printf("  checks: %s\n", all_ok ? "every run saw every record of every partition once, in order"
                                    : "FAILED (see the runs marked CHECK FAILED)");
    double mrh = bench_median(rh, runs), mbh = bench_median(bh, runs);
    double mrr = bench_median(rr, runs), mbr = bench_median(br, runs);
    double mrd = bench_median(rd, runs), mbd = bench_median(bd, runs);
    double mrf = bench_median(rf, runs), mbf = bench_median(bf, runs);
    printf("  spread (min..max):");
    spread("RSS held rill", rh, runs, 1);
    spread("baseline", bh, runs, 1);
    spread("MiB; resume rill", rr, runs, 0);
    spread("baseline", br, runs, 0);
    spread("ms; drain rill", rd, runs, 0);
    spread("baseline", bd, runs, 0);
    spread("rec/s; warm rill", rf, runs, 0);
    spread("baseline", bf, runs, 0);
    printf(" rec/s\n");
    bench_line_ratio("backlog_rss", 1, mrh, mbh, "MiB", mbh > 0 ? mrh / mbh : 0);
    bench_line_ratio("backlog_resume", 0, mrr, mbr, "ms", mbr > 0 ? mrr / mbr : 0);
    bench_line_ratio("backlog_drain", 0, mrd, mbd, "records/s", mbd > 0 ? mrd / mbd : 0);
    bench_line_ratio("backlog_warm", 0, mrf, mbf, "records/s", mbf > 0 ? mrf / mbf : 0);
    return all_ok ? 0 : 1;
}
