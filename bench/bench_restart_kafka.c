/*
 * bench_restart_kafka: restart to first record. How long from a stage's
 * failure until the restarted Kafka consumer side has processed its first
 * record again, against a `rill-broker` process, with librdkafka's default
 * group settings (session.timeout.ms 45 s: nothing tuned for restarts).
 *
 *   rill      a supervised pipeline (rill_pipeline_start_supervised):
 *             rill_kafka_source (group subscription) -> a processing
 *             stage -> rill_sink_ignore. The processing stage fails on
 *             purpose after RECORDS_PER_RUN records of each run; the
 *             pipeline restarts, its source keeping its client in the
 *             group (no rebalance), and resumes at the committed offsets.
 *             Restart backoff 1 ms, so that the supervisor's backoff
 *             policy is not what is measured.
 *   baseline  the old way: a standalone consumer (rill_consumer_spawn)
 *             with a sink that fails the same way; on the failure the
 *             consumer is stopped (it commits and leaves the group) and a
 *             new one is spawned in the same group, which has to join it
 *             again (on the mock broker the rebalance waits about
 *             session.timeout.ms for the member that left).
 *
 * The failing stage reads the clock just before it fails; the first
 * record the next run processes reads it again. Median, p90 (nearest
 * rank) and max over every restart of each side. The baseline's restarts
 * take ~45 s each, so it measures few of them (3 by default).
 *
 * usage: bench_restart_kafka [rill restarts, default 20]
 *                            [baseline restarts, default 3]
 *                            [path to rill-broker, default: next to this binary]
 */
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <rill/rill.h>
#include <rill/testkit.h>

#include "bench_util.h"

#define TOPIC           "restart"
#define PARTITIONS      4
#define RECORDS         40000
#define RECORDS_PER_RUN 200
#define MAX_RESTARTS    100
#define WAIT_MS         180000 /* for one restart, at most */

static void die(const char *what, const char *why)
{
    fprintf(stderr, "bench_restart_kafka: %s: %s\n", what, why);
    exit(1);
}

/* What one side measures: the failing stage and the next run's first
 * record write it, the main thread waits on it. */
typedef struct probe {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int planned;    /* failures to make */
    int failures;   /* made so far */
    int failed;     /* the last failure has not been followed by a record yet */
    int64_t t_fail; /* ns, of that failure */
    double ms[MAX_RESTARTS];
    int measured;
} probe_t;

static void probe_init(probe_t *p, int planned)
{
    memset(p, 0, sizeof(*p));
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->cond, NULL);
    p->planned = planned;
}

static void probe_destroy(probe_t *p)
{
    pthread_cond_destroy(&p->cond);
    pthread_mutex_destroy(&p->lock);
}

/* A record processed: the first of a run after a failure is measured.
 * Returns non-zero when this record is where the run must fail. */
static int probe_record(probe_t *p, uint64_t nth_of_run)
{
    int64_t now = bench_now_ns();
    int fail = 0;
    pthread_mutex_lock(&p->lock);
    if (nth_of_run == 1 && p->failed) {
        p->ms[p->measured++] = (double)(now - p->t_fail) / 1e6;
        p->failed = 0;
        pthread_cond_broadcast(&p->cond);
    }
    if (nth_of_run == RECORDS_PER_RUN && p->failures < p->planned) {
        p->failures++;
        p->failed = 1;
        p->t_fail = bench_now_ns();
        fail = 1;
        pthread_cond_broadcast(&p->cond);
    }
    pthread_mutex_unlock(&p->lock);
    return fail;
}

/* Wait until `measured` restarts were measured (failure == 0), or until
 * the failure number `failure` happened; 0 on time. */
static int probe_wait(probe_t *p, int measured, int failure)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += WAIT_MS / 1000;
    int rc = 0;
    pthread_mutex_lock(&p->lock);
    while (!rc && (failure ? p->failures < failure : p->measured < measured))
        rc = pthread_cond_timedwait(&p->cond, &p->lock, &dl);
    pthread_mutex_unlock(&p->lock);
    return rc;
}

typedef struct summary {
    double median, p90, max;
} summary_t;

static summary_t summarize(double *v, int n)
{
    summary_t s = {0};
    if (n < 1)
        return s;
    bench_sort(v, (size_t)n);
    s.median = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
    s.p90 = v[(9 * n + 9) / 10 - 1]; /* rank ceil(0.9 n) */
    s.max = v[n - 1];
    return s;
}

static rill_consumer_conf_t *consumer_conf(const char *boot, const char *group)
{
    char err[512];
    const char *topics[] = {TOPIC};
    rill_consumer_conf_t *c = rill_consumer_conf_new();
    if (rill_consumer_conf_set(c, "bootstrap.servers", boot, err, sizeof(err)) ||
        rill_consumer_conf_set(c, "group.id", group, err, sizeof(err)) ||
        rill_consumer_conf_set(c, "auto.offset.reset", "earliest", err, sizeof(err)) ||
        rill_consumer_conf_subscribe(c, topics, 1, err, sizeof(err)))
        die("consumer config", err);
    return c;
}

/* ---- rill: a supervised pipeline whose middle stage fails ---- */

typedef struct run_state {
    probe_t *probe;
    uint64_t n; /* records of this run */
} run_state_t;

static void *run_begin(void *opaque)
{
    run_state_t *r = malloc(sizeof(*r));
    if (r)
        *r = (run_state_t){.probe = opaque};
    return r;
}

static rill_err_t process(void *state, rill_elem_t *in, rill_emitter_t *out)
{
    run_state_t *r = state;
    if (probe_record(r->probe, ++r->n)) {
        rill_elem_release(in);
        return RILL_EIO; /* on purpose: the pipeline restarts */
    }
    return rill_emit(out, in);
}

static int run_rill(const char *boot, int restarts, double *ms)
{
    char err[512];
    rill_system_t *sys = rill_system_new(NULL, err, sizeof(err));
    if (!sys || rill_system_start(sys))
        die("rill system", sys ? "cannot start" : err);
    probe_t probe;
    probe_init(&probe, restarts);
    rill_stateful_ops_t ops = {.create = run_begin, .fn = process, .destroy = free};
    rill_pipeline_t *p = rill_pipeline_new(sys, "restarting");
    rill_pipeline_add(p, rill_kafka_source(consumer_conf(boot, "restart-rill")), NULL);
    rill_pipeline_add(p, rill_stage_stateful_map(&ops, &probe), NULL);
    rill_pipeline_add(p, rill_sink_ignore(), NULL);
    rill_restart_opts_t ro = {.max_restarts = restarts + 1,
                              .within_ms = 3600 * 1000,
                              .backoff = {.min_ms = 1, .max_ms = 1}};
    if (rill_pipeline_start_supervised(p, &ro, err, sizeof(err)))
        die("rill pipeline", err);
    int late = probe_wait(&probe, restarts, 0);
    rill_pipeline_result_t res;
    rill_pipeline_stop(p);
    rill_pipeline_wait(p, -1, &res);
    rill_pipeline_destroy(p);
    rill_system_stop(sys, 10000);
    rill_system_destroy(sys);
    int n = probe.measured;
    memcpy(ms, probe.ms, (size_t)n * sizeof(*ms));
    probe_destroy(&probe);
    if (late || res.restarts != (uint32_t)restarts || res.end != RILL_PIPELINE_STOPPED)
        printf("  rill: %d of %d restarts measured, the pipeline restarted %u times and ended "
               "%d (%s)  FAILED\n",
               n, restarts, res.restarts, (int)res.end, res.text);
    return late ? -1 : n;
}

/* ---- baseline: stop the consumer, spawn a new one in the group ---- */

typedef struct old_sink {
    probe_t *probe;
    uint64_t n; /* records of the current consumer; reset between them */
} old_sink_t;

static rill_err_t old_process(void *opaque, rill_elem_t *e)
{
    old_sink_t *s = opaque;
    rill_elem_release(e);
    return probe_record(s->probe, ++s->n) ? RILL_EIO : RILL_OK;
}

static void spawn_old(rill_system_t *sys, const char *boot, old_sink_t *s, rill_aid_t *consumer,
                      rill_aid_t *sink)
{
    char err[512];
    if (rill_consumer_spawn(sys, consumer_conf(boot, "restart-old"), NULL, consumer, err,
                            sizeof(err)) ||
        rill_stage_spawn(sys, rill_sink_foreach(old_process, s), NULL, sink, err, sizeof(err)))
        die("baseline spawn", err);
    if (rill_stage_connect(sys, *consumer, *sink, NULL, 0))
        die("baseline", "cannot connect the sink");
}

static void wait_gone(rill_system_t *sys, rill_aid_t a)
{
    while (rill_alive(sys, a)) {
        struct timespec ts = {0, 1000 * 1000};
        nanosleep(&ts, NULL); /* until the actor has ended */
    }
}

static int run_old(const char *boot, int restarts, double *ms)
{
    char err[512];
    rill_system_t *sys = rill_system_new(NULL, err, sizeof(err));
    if (!sys || rill_system_start(sys))
        die("rill system", sys ? "cannot start" : err);
    probe_t probe;
    probe_init(&probe, restarts);
    old_sink_t s = {.probe = &probe};
    rill_aid_t consumer, sink;
    spawn_old(sys, boot, &s, &consumer, &sink);
    int late = 0;
    for (int i = 1; i <= restarts && !late; i++) {
        if ((late = probe_wait(&probe, 0, i)))
            break;
        /* The sink failed: stop the consumer (its final commit, leaving
         * the group), then a new one in the same group. */
        rill_stop(sys, consumer);
        wait_gone(sys, consumer);
        wait_gone(sys, sink);
        s.n = 0;
        spawn_old(sys, boot, &s, &consumer, &sink);
        late = probe_wait(&probe, i, 0);
        printf("  baseline restart %d: %.0f ms\n", i, late ? -1.0 : probe.ms[i - 1]);
        fflush(stdout);
    }
    rill_stop(sys, consumer);
    wait_gone(sys, consumer);
    rill_system_stop(sys, 10000);
    rill_system_destroy(sys);
    int n = probe.measured;
    memcpy(ms, probe.ms, (size_t)n * sizeof(*ms));
    probe_destroy(&probe);
    if (late)
        printf("  baseline: %d of %d restarts measured  FAILED\n", n, restarts);
    return late ? -1 : n;
}

int main(int argc, char **argv)
{
    int restarts = argc > 1 ? atoi(argv[1]) : 20;
    int old_restarts = argc > 2 ? atoi(argv[2]) : 3;
    char bin[PATH_MAX];
    bench_broker_path(argc > 3 ? argv[3] : NULL, bin, sizeof(bin));
    if (restarts < 1 || restarts > MAX_RESTARTS || old_restarts < 1 ||
        old_restarts > MAX_RESTARTS ||
        (uint64_t)(restarts + old_restarts + 2) * RECORDS_PER_RUN * 2 > RECORDS) {
        fprintf(stderr,
                "usage: bench_restart_kafka [rill restarts 1..%d] [baseline restarts 1..%d] "
                "[rill-broker]\n",
                MAX_RESTARTS, MAX_RESTARTS);
        return 2;
    }
    bench_header("bench_restart_kafka", 1, argc, argv);
    char boot[512] = "";
    bench_broker_topic("%s:%d:1", TOPIC, PARTITIONS);
    bench_broker_start("bench_restart_kafka", bin, boot, sizeof(boot));
    char err[512];
    rill_testkit_opts_t po = {.timeout_ms = 120000};
    if (rill_testkit_produce_generated(boot, TOPIC, RECORDS, NULL, &po, err, sizeof(err)))
        die("produce", err);
    printf("bench_restart_kafka: topic %s (%d partitions, %d records) on rill-broker %s; "
           "consumers with librdkafka's defaults (session.timeout.ms 45000), group "
           "subscription; a stage fails after %d records of each run\n",
           TOPIC, PARTITIONS, RECORDS, boot, RECORDS_PER_RUN);
    printf("  rill: supervised pipeline, restart backoff 1 ms, %d restarts\n", restarts);
    fflush(stdout);
    double r[MAX_RESTARTS], b[MAX_RESTARTS];
    int nr = run_rill(boot, restarts, r);
    summary_t sr = summarize(r, nr);
    printf("  rill pipeline restart: %d restarts, median %.1f ms, p90 %.1f ms, max %.1f ms\n", nr,
           sr.median, sr.p90, sr.max);
    printf("  baseline: consumer stopped, a new one spawned in the group, %d restarts\n",
           old_restarts);
    fflush(stdout);
    int nb = run_old(boot, old_restarts, b);
    summary_t sb = summarize(b, nb);
    printf("  baseline respawn: %d restarts, median %.1f ms, p90 %.1f ms, max %.1f ms\n", nb,
           sb.median, sb.p90, sb.max);
    /* The result lines, with a ratio of 4 decimals: the sides are 3-4
     * orders of magnitude apart. */
    const char *names[] = {"restart_kafka_median", "restart_kafka_p90", "restart_kafka_max"};
    double rv[] = {sr.median, sr.p90, sr.max}, bv[] = {sb.median, sb.p90, sb.max};
    for (int i = 0; i < 3; i++)
        printf("bench %s: rill %.1f ms baseline %.1f ms ratio %.4f\n", names[i], rv[i], bv[i],
               bv[i] > 0 ? rv[i] / bv[i] : 0);
    return nr == restarts && nb == old_restarts ? 0 : 1;
}
