/*
 * The chaos soak: a consume -> transform -> produce pipeline in three
 * worker processes (test/chaos_worker.c, one consumer group) against a
 * rill-broker process, under a bounded random fault schedule:
 *
 *   down     the broker refuses connections for 1-3 s, then comes back
 *   rtt      its responses are delayed 200-1500 ms for 2-5 s
 *   commit   the next 1-3 OffsetCommit requests fail (UNKNOWN_MEMBER_ID,
 *            REBALANCE_IN_PROGRESS, ILLEGAL_GENERATION, ...)
 *   produce  the next 1-3 Produce requests fail (REQUEST_TIMED_OUT,
 *            NOT_LEADER_FOR_PARTITION, NOT_ENOUGH_REPLICAS, and now and
 *            then MSG_SIZE_TOO_LARGE, which fails the delivery for good and
 *            restarts the pipeline); the input pauses for 1.8 s around
 *            them so that they reach the workers' producers
 *   kill     SIGKILL of worker 1 or 2 (one at a time; worker 0 runs the
 *            whole soak, for the memory check), restarted 0.5-3 s later
 *
 * while this process writes input records at a steady rate with a plain
 * librdkafka producer. Every fault kind happens at least once; the
 * schedule is drawn from a seed printed first (RILL_CHAOS_SEED=N replays
 * it: the same faults in the same order at the same times, though the
 * processes' timing differs).
 *
 * Then the faults stop, the input stops, and the test waits until the
 * group has committed the end of every input partition. The workers stop
 * on SIGTERM (exit 0: stopped cleanly, and under ASan no leak). kcat, an
 * independent client, reads both topics back, and the test checks:
 *  - every input record (partition:offset) is in the output at least once,
 *    with the content made from it (each output names its source);
 *  - the committed offsets are the end offsets of the input;
 *  - duplicates are within the in-flight bound (see dup_bound());
 *  - the memory (VmRSS) of the workers that ran the whole soak did not
 *    grow after the warm-up (see rss_check()).
 * and prints a summary (seed, faults, records, duplicates, latency, time
 * without partitions, RSS); docs/chaos-soak.md says what it measured.
 *
 * Environment: RILL_CHAOS_SEED (the seed; default: from the clock),
 * RILL_CHAOS_SECONDS (the fault window, default 75; 10..3600),
 * RILL_TEST_VERBOSE (print the workers' output at the end). Replay:
 *   RILL_CHAOS_SEED=1234 ctest -R chaos_soak --output-on-failure
 *
 * On librdkafka 2.0.2's mock broker (see chaos_worker.c for the producer's
 * max.in.flight=1 and the eager assignor): the input producer is not
 * idempotent and its failures do not matter, because what counts as input
 * is what kcat finds in the input topic.
 */
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include <librdkafka/rdkafka.h>

#include "support/proc.h"

#define IN_TOPIC     "chaos-in"
#define OUT_TOPIC    "chaos-out"
#define GROUP        "chaos-group"
#define PARTS        6
#define N_WORKERS    3
#define UNCONFIRMED  200 /* the workers' rill.max.unconfirmed */
#define COMMIT_COUNT 50  /* their rill.commit.count */
#define RATE         250 /* input records per second */
#define MAX_KILLS    3
#define MAX_EVENTS   64
#define MAX_SAMPLES  4096

static const char *env_or_fail(const char *name)
{
    const char *v = getenv(name);
    cr_assert(v && *v, "%s is not set (ctest sets it)", name);
    return v;
}

static int64_t t0;

static double secs(void)
{
    return (double)(proc_now_ms() - t0) / 1000.0;
}

/* ------------------------------------------------------------------ */
/* The fault schedule                                                  */
/* ------------------------------------------------------------------ */

static uint64_t rng;

/* splitmix64: the same sequence from the same seed everywhere. */
static uint64_t rnd(void)
{
    uint64_t z = (rng += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

static int rnd_in(int lo, int hi)
{
    return lo + (int)(rnd() % (uint64_t)(hi - lo + 1));
}

typedef enum fault { F_DOWN, F_RTT, F_COMMIT, F_PRODUCE, F_KILL, N_FAULTS } fault_t;

static const char *fault_names[N_FAULTS] = {"down", "rtt", "commit", "produce", "kill"};

static const char *commit_codes[] = {"UNKNOWN_MEMBER_ID", "REBALANCE_IN_PROGRESS",
                                     "ILLEGAL_GENERATION", "COORDINATOR_NOT_AVAILABLE",
                                     "REQUEST_TIMED_OUT"};
static const char *produce_codes[] = {"REQUEST_TIMED_OUT", "NOT_LEADER_FOR_PARTITION",
                                      "NOT_ENOUGH_REPLICAS", "REQUEST_TIMED_OUT",
                                      "MSG_SIZE_TOO_LARGE"};

typedef struct event {
    fault_t kind;
    int hold_ms;      /* down, rtt: how long; kill: until the restart */
    int gap_ms;       /* quiet time after it */
    int rtt_ms;       /* rtt */
    int count;        /* commit, produce: requests that fail */
    const char *code; /* commit, produce */
    int worker;       /* kill */
} event_t;

static event_t events[MAX_EVENTS];
static int n_events;

/* Draw the schedule: every kind once in a random order, then random kinds
 * until the window is full; at most MAX_KILLS kills. */
static void draw_schedule(int window_ms)
{
    fault_t order[N_FAULTS];
    for (int i = 0; i < N_FAULTS; i++)
        order[i] = (fault_t)i;
    for (int i = N_FAULTS - 1; i > 0; i--) {
        int j = rnd_in(0, i);
        fault_t t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    int used = 0, kills = 0;
    for (n_events = 0; n_events < MAX_EVENTS; n_events++) {
        event_t *e = &events[n_events];
        fault_t k = n_events < N_FAULTS ? order[n_events] : (fault_t)rnd_in(0, N_FAULTS - 1);
        if (k == F_KILL && kills == MAX_KILLS)
            k = F_COMMIT;
        *e = (event_t){.kind = k, .gap_ms = rnd_in(1500, 4000)};
        switch (k) {
        case F_DOWN:
            e->hold_ms = rnd_in(1000, 3000);
            break;
        case F_RTT:
            e->hold_ms = rnd_in(2000, 5000);
            e->rtt_ms = rnd_in(200, 1500);
            break;
        case F_COMMIT:
            e->count = rnd_in(1, 3);
            e->code = commit_codes[rnd_in(0, 4)];
            break;
        case F_PRODUCE:
            e->count = rnd_in(1, 3);
            e->code = produce_codes[rnd_in(0, 4)];
            break;
        default:
            e->worker = rnd_in(1, N_WORKERS - 1); /* worker 0 runs it all: its RSS */
            e->hold_ms = rnd_in(500, 3000);
            kills++;
            break;
        }
        used += e->hold_ms + e->gap_ms;
        if (used > window_ms && n_events >= N_FAULTS)
            break;
    }
}

/* ------------------------------------------------------------------ */
/* Processes                                                           */
/* ------------------------------------------------------------------ */

typedef struct worker {
    proc_t p;
    char *log; /* this instance's output */
    size_t log_len;
    int whole_run; /* never killed: its RSS is checked */
    int kills;
    /* counted over its earlier (killed) instances */
    unsigned restarts, revokes, losts, commit_errors;
    /* times without partitions: from a revoke or loss to the next
     * assignment (the cost of a rebalance to this worker) */
    long gap_sum_ms, gap_max_ms, gaps;
    /* VmRSS samples (kB) after the warm-up, this instance */
    long rss[MAX_SAMPLES];
    int n_rss;
} worker_t;

static proc_t broker;
static char *broker_log;
static size_t broker_log_len;
static worker_t workers[N_WORKERS];
static char boot[512];
static const char *worker_bin;
static int sampling; /* after the warm-up: sample RSS */

/* Lines of a worker's output that start with prefix. */
static unsigned count_lines(const char *log, const char *prefix)
{
    unsigned n = 0;
    size_t pl = strlen(prefix);
    for (const char *q = log; q && *q; q = strchr(q, '\n'), q = q ? q + 1 : NULL)
        n += !strncmp(q, prefix, pl);
    return n;
}

/* Add a worker's times without partitions (its "rebalance ... at=MS"
 * lines) to its totals. */
static void count_gaps(worker_t *w)
{
    long long off = -1;
    for (const char *q = w->log; q && *q; q = strchr(q, '\n'), q = q ? q + 1 : NULL) {
        if (strncmp(q, "rebalance ", 10))
            continue;
        const char *at = strstr(q, " at=");
        const char *nl = strchr(q, '\n');
        if (!at || (nl && at > nl))
            continue;
        long long t = strtoll(at + 4, NULL, 10);
        if (!strncmp(q + 10, "assigned ", 9) && strncmp(q + 19, "- ", 2)) {
            if (off >= 0) {
                long gap = (long)(t - off);
                w->gap_sum_ms += gap;
                w->gaps++;
                if (gap > w->gap_max_ms)
                    w->gap_max_ms = gap;
            }
            off = -1;
        } else if (strncmp(q + 10, "assigned ", 9) && off < 0) {
            off = t; /* revoked or lost */
        }
    }
}

/* The last `max` bytes of a log. */
static const char *tail(const char *log, size_t len, size_t max)
{
    if (!log)
        return "";
    return len > max ? log + len - max : log;
}

static void worker_spawn(int i)
{
    worker_t *w = &workers[i];
    char unconfirmed[16], commit_count[16];
    snprintf(unconfirmed, sizeof(unconfirmed), "%d", UNCONFIRMED);
    snprintf(commit_count, sizeof(commit_count), "%d", COMMIT_COUNT);
    char *argv[] = {(char *)worker_bin,
                    "--bootstrap",
                    boot,
                    "--in",
                    IN_TOPIC,
                    "--out",
                    OUT_TOPIC,
                    "--group",
                    GROUP,
                    "--max-unconfirmed",
                    unconfirmed,
                    "--commit-count",
                    commit_count,
                    "--assignor",
                    "range",
                    "--session-timeout-ms",
                    "6000",
                    NULL};
    free(w->log);
    w->log = NULL;
    w->log_len = 0;
    w->n_rss = 0;
    cr_assert_eq(proc_spawn(&w->p, argv), 0, "spawn worker %d", i);
}

/* What the workers printed last, for a failure. */
static void dump_workers(size_t max)
{
    for (int i = 0; i < N_WORKERS; i++)
        fprintf(stderr, "--- worker %d (pid %d) ---\n%s\n", i, (int)workers[i].p.pid,
                tail(workers[i].log, workers[i].log_len, max));
}

/* VmRSS of a process in kB, or -1. */
static long vm_rss_kb(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kb = -1;
    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f))
        if (!strncmp(line, "VmRSS:", 6)) {
            kb = strtol(line + 6, NULL, 10);
            break;
        }
    fclose(f);
    return kb;
}

/* ------------------------------------------------------------------ */
/* The input: a plain librdkafka producer at RATE records/s             */
/* ------------------------------------------------------------------ */

typedef struct feeder {
    pthread_t thread;
    rd_kafka_t *rk;
    atomic_int stop;
    atomic_int hold; /* produce nothing for now (Produce faults are the workers') */
    atomic_long sent, acked, failed;
} feeder_t;

static feeder_t feeder;

static void feeder_dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    (void)opaque;
    if (m->err)
        atomic_fetch_add(&feeder.failed, 1);
    else
        atomic_fetch_add(&feeder.acked, 1);
}

static void *feeder_main(void *arg)
{
    feeder_t *f = arg;
    int64_t start = proc_now_ms();
    long seq = 0;
    while (!atomic_load(&f->stop)) {
        if (atomic_load(&f->hold)) {
            rd_kafka_poll(f->rk, 10);
            start = proc_now_ms() - (int64_t)seq * 1000 / RATE; /* no burst after */
            continue;
        }
        long target = (long)((proc_now_ms() - start) * RATE / 1000);
        while (seq < target && !atomic_load(&f->stop)) {
            char key[32], value[32];
            int kl = snprintf(key, sizeof(key), "k%ld", seq);
            int vl = snprintf(value, sizeof(value), "seq=%ld", seq);
            if (rd_kafka_producev(f->rk, RD_KAFKA_V_TOPIC(IN_TOPIC), RD_KAFKA_V_KEY(key, kl),
                                  RD_KAFKA_V_VALUE(value, vl),
                                  RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END))
                break; /* queue full: next round */
            seq++;
            atomic_store(&f->sent, seq);
        }
        rd_kafka_poll(f->rk, 10); /* delivery reports; paces the loop */
    }
    rd_kafka_flush(f->rk, 60000);
    return NULL;
}

static void feeder_start(void)
{
    char err[512];
    rd_kafka_conf_t *kc = rd_kafka_conf_new();
    /* Not idempotent: an injected permanent Produce error would make an
     * idempotent producer's later batches fail too. Lost or repeated input
     * does not matter: the input is what kcat finds in the topic. */
    const char *kv[] = {"bootstrap.servers",
                        boot,
                        "enable.idempotence",
                        "false",
                        "linger.ms",
                        "5",
                        "log_level",
                        "2",
                        NULL};
    for (int i = 0; kv[i]; i += 2)
        cr_assert_eq(rd_kafka_conf_set(kc, kv[i], kv[i + 1], err, sizeof(err)), RD_KAFKA_CONF_OK,
                     "%s", err);
    rd_kafka_conf_set_dr_msg_cb(kc, feeder_dr);
    feeder.rk = rd_kafka_new(RD_KAFKA_PRODUCER, kc, err, sizeof(err));
    cr_assert_not_null(feeder.rk, "%s", err);
    cr_assert_eq(pthread_create(&feeder.thread, NULL, feeder_main, &feeder), 0);
}

/* ------------------------------------------------------------------ */
/* Ticking: keep pipes drained, sample RSS, notice deaths              */
/* ------------------------------------------------------------------ */

static int64_t last_sample;

/* What the broker printed on stderr since, waiting up to timeout_ms. */
static void broker_drain(int timeout_ms)
{
    char *e = proc_read_stderr(&broker, timeout_ms);
    size_t n = strlen(e);
    broker_log = realloc(broker_log, broker_log_len + n + 1);
    memcpy(broker_log + broker_log_len, e, n + 1);
    broker_log_len += n;
    free(e);
}

static void tick(void)
{
    broker_drain(1);
    int sample = sampling && proc_now_ms() - last_sample >= 1000;
    if (sample)
        last_sample = proc_now_ms();
    for (int i = 0; i < N_WORKERS; i++) {
        worker_t *w = &workers[i];
        if (w->p.pid <= 0)
            continue;
        proc_collect(&w->p, &w->log, &w->log_len);
        int st = proc_wait(&w->p, 0);
        cr_assert_lt(st, 0, "worker %d ended by itself (status %d) at %.1f s:\n%s", i, st, secs(),
                     tail(w->log, w->log_len, 4000));
        if (sample && w->n_rss < MAX_SAMPLES) {
            long kb = vm_rss_kb(w->p.pid);
            if (kb > 0)
                w->rss[w->n_rss++] = kb;
        }
    }
}

/* Tick for ms milliseconds. */
static void run_for(int ms)
{
    int64_t until = proc_now_ms() + ms;
    while (proc_now_ms() < until) {
        tick();
        proc_nap_ms(50);
    }
}

/* One command to the broker on its stdin; its answer must be "ok". */
static void broker_cmd(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void broker_cmd(const char *fmt, ...)
{
    char cmd[256], reply[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd) - 1, fmt, ap);
    va_end(ap);
    strcat(cmd, "\n");
    if (proc_write(&broker, cmd) != 0) {
        /* What it said last and how it ended, and what the workers said
         * (with RILL_CHAOS_DEBUG=cgrp their member ids: that is how the
         * mock's reuse of member ids was found, see docs/chaos-soak.md). */
        broker_drain(1000);
        int st = proc_wait(&broker, 1000);
        for (int i = 0; i < N_WORKERS; i++)
            if (workers[i].p.pid > 0)
                proc_collect(&workers[i].p, &workers[i].log, &workers[i].log_len);
        dump_workers(8000);
        cr_assert_fail("rill-broker is gone at %.1f s (status %d, -1: not reaped); it said:\n%s",
                       secs(), st, tail(broker_log, broker_log_len, 4000));
    }
    int n = proc_read_line(&broker, reply, sizeof(reply), 10000);
    cr_assert(n >= 2 && !strncmp(reply, "ok", 2), "rill-broker: %.*s -> %s", (int)strlen(cmd) - 1,
              cmd, n < 0 ? "(no answer)" : reply);
}

/* ------------------------------------------------------------------ */
/* Offsets                                                             */
/* ------------------------------------------------------------------ */

static rd_kafka_t *checker;

static void end_offsets(int64_t *end)
{
    for (int p = 0; p < PARTS; p++) {
        int64_t lo;
        rd_kafka_resp_err_t e =
            rd_kafka_query_watermark_offsets(checker, IN_TOPIC, p, &lo, &end[p], 10000);
        cr_assert_eq(e, RD_KAFKA_RESP_ERR_NO_ERROR, "watermarks: %s", rd_kafka_err2str(e));
    }
}

/* The group's committed offsets (-1: none yet). Returns 0, or -1 if the
 * broker did not answer. */
static int committed_offsets(int64_t *committed)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(PARTS);
    for (int p = 0; p < PARTS; p++)
        rd_kafka_topic_partition_list_add(l, IN_TOPIC, p);
    int rc = rd_kafka_committed(checker, l, 5000) ? -1 : 0;
    for (int p = 0; p < PARTS; p++)
        committed[p] = l->elems[p].offset;
    rd_kafka_topic_partition_list_destroy(l);
    return rc;
}

static int64_t out_records(void)
{
    int64_t sum = 0;
    for (int p = 0; p < PARTS; p++) {
        int64_t lo, hi;
        if (rd_kafka_query_watermark_offsets(checker, OUT_TOPIC, p, &lo, &hi, 2000))
            return -1;
        sum += hi;
    }
    return sum;
}

/* ------------------------------------------------------------------ */
/* Reading the topics back with kcat                                   */
/* ------------------------------------------------------------------ */

/* "<partition> <offset> <value>" lines of a whole topic. */
static char *kcat_read(const char *topic)
{
    const char *kcat = env_or_fail("KCAT_BIN");
    char *argv[] = {(char *)kcat, "-C",        "-b", boot, "-t", (char *)topic,
                    "-o",         "beginning", "-e", "-q", "-f", "%p %o %T %s\\n",
                    NULL};
    char *out = NULL;
    int st = proc_run(argv, NULL, 120000, &out);
    cr_assert_eq(st, 0, "kcat -C -t %s exited %d", topic, st);
    return out;
}

static int cmp_long(const void *a, const void *b)
{
    long x = *(const long *)a, y = *(const long *)b;
    return (x > y) - (x < y);
}

/* What the topics hold. */
typedef struct readback {
    long out_lines, missing, corrupt, dups;
    unsigned max_copies;
    char first_missing[64], first_corrupt[160];
    long *latency; /* ms from each input to its first output, sorted */
    long n_latency;
} readback_t;

/* One input record: its content, its time, its outputs. */
typedef struct in_rec {
    int64_t seq, ts, first_out_ts;
    unsigned copies;
} in_rec_t;

static void read_back(const int64_t *end, int64_t total_in, readback_t *rb)
{
    memset(rb, 0, sizeof(*rb));
    in_rec_t *in[PARTS];
    for (int p = 0; p < PARTS; p++) {
        in[p] = calloc((size_t)end[p] + 1, sizeof(in_rec_t));
        for (int64_t o = 0; o < end[p]; o++)
            in[p][o].seq = -1;
    }
    char *text = kcat_read(IN_TOPIC);
    long n_in = 0;
    for (char *l = text; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : NULL) {
        int p;
        int64_t o, ts, seq;
        if (sscanf(l, "%d %" SCNd64 " %" SCNd64 " seq=%" SCNd64, &p, &o, &ts, &seq) == 4 &&
            p >= 0 && p < PARTS && o >= 0 && o < end[p]) {
            in[p][o].seq = seq;
            in[p][o].ts = ts;
            n_in++;
        }
    }
    free(text);
    cr_assert_eq(n_in, total_in, "kcat read %ld input records, the topic has %" PRId64, n_in,
                 total_in);

    /* Each output names its source: the same partition, an input offset
     * whose record has the same seq. */
    text = kcat_read(OUT_TOPIC);
    for (char *l = text; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : NULL) {
        int p, sp;
        int64_t o, ts, seq, so;
        rb->out_lines++;
        if (sscanf(l, "%d %" SCNd64 " %" SCNd64 " seq=%" SCNd64 " src=%d:%" SCNd64, &p, &o, &ts,
                   &seq, &sp, &so) != 6 ||
            sp != p || sp < 0 || sp >= PARTS || so < 0 || so >= end[sp] || in[sp][so].seq != seq) {
            if (!rb->corrupt++)
                snprintf(rb->first_corrupt, sizeof(rb->first_corrupt), "%.*s",
                         (int)strcspn(l, "\n"), l);
            continue;
        }
        in_rec_t *r = &in[sp][so];
        if (!r->copies++ || ts < r->first_out_ts)
            r->first_out_ts = ts;
    }
    free(text);

    rb->latency = calloc((size_t)total_in + 1, sizeof(long));
    for (int p = 0; p < PARTS; p++) {
        for (int64_t o = 0; o < end[p]; o++) {
            in_rec_t *r = &in[p][o];
            if (!r->copies && !rb->missing++)
                snprintf(rb->first_missing, sizeof(rb->first_missing), "%d:%" PRId64, p, o);
            if (r->copies > 1)
                rb->dups += r->copies - 1;
            if (r->copies > rb->max_copies)
                rb->max_copies = r->copies;
            if (r->copies)
                rb->latency[rb->n_latency++] = (long)(r->first_out_ts - r->ts);
        }
        free(in[p]);
    }
    qsort(rb->latency, (size_t)rb->n_latency, sizeof(long), cmp_long);
}

/* ------------------------------------------------------------------ */
/* Checks                                                              */
/* ------------------------------------------------------------------ */

/*
 * Duplicates allowed. A record comes out twice only when it is read again
 * after its output was delivered: it was confirmed but not yet committed,
 * or its output was delivered and its confirm not yet in. Each consumer
 * has at most UNCONFIRMED records out unconfirmed, commits every
 * COMMIT_COUNT confirms (or 200 ms), and while one commit is on its way (a
 * produce round trip as long as a commit's) at most UNCONFIRMED more are
 * confirmed; so one re-read repeats at most 2 x UNCONFIRMED + COMMIT_COUNT
 * records. Re-reads come from a kill, a pipeline restart, a revoke or lost
 * assignment (revokes commit first, but the commit can fail), each failed
 * commit (the window grows by one more round; injected or not: the mock
 * answers REBALANCE_IN_PROGRESS during any rebalance; the workers print
 * each), and a broker going down
 * (a produce request it took but did not answer is retried, and the mock
 * does not de-duplicate: one batch, at most UNCONFIRMED, per worker).
 */
static long dup_bound(unsigned rereads, unsigned failed_commits, int downs)
{
    long per = 2L * UNCONFIRMED + COMMIT_COUNT;
    return (long)rereads * per + (long)failed_commits * per + (long)downs * N_WORKERS * UNCONFIRMED;
}

/*
 * Memory not growing after the warm-up: of the samples (one a second) of a
 * worker that ran the whole soak, the median of the last third is at most
 * the largest of the first third plus 25 % and 16 MiB. Faults make
 * librdkafka queue more for a while (and the allocator does not give every
 * page back), hence the peak of the first third as the reference and the
 * median of the last; a leak of a few hundred bytes per record or per
 * fault grows past it over the soak. Leaks proper are LeakSanitizer's at
 * the workers' exit (they exit 0 only without one).
 */
static int rss_check(const worker_t *w, long *first_max, long *last_median)
{
    int third = w->n_rss / 3;
    if (third < 3)
        return -1; /* too few samples to tell */
    long m = 0, sorted[MAX_SAMPLES];
    for (int i = 0; i < third; i++)
        m = w->rss[i] > m ? w->rss[i] : m;
    int nl = w->n_rss - 2 * third;
    memcpy(sorted, w->rss + 2 * third, (size_t)nl * sizeof(long));
    qsort(sorted, (size_t)nl, sizeof(long), cmp_long);
    *first_max = m;
    *last_median = sorted[nl / 2];
    return *last_median <= m + m / 4 + 16 * 1024;
}

/* ------------------------------------------------------------------ */
/* The test                                                            */
/* ------------------------------------------------------------------ */

static void cleanup(void)
{
    if (feeder.rk) {
        atomic_store(&feeder.stop, 1);
        pthread_join(feeder.thread, NULL);
        rd_kafka_destroy(feeder.rk);
        feeder.rk = NULL;
    }
    if (checker)
        rd_kafka_destroy(checker);
    checker = NULL;
    for (int i = 0; i < N_WORKERS; i++) {
        proc_kill(&workers[i].p);
        free(workers[i].log);
        workers[i].log = NULL;
    }
    if (broker.pid > 0) {
        kill(broker.pid, SIGTERM);
        if (proc_wait(&broker, 10000) < 0)
            proc_kill(&broker);
    }
    proc_close(&broker);
    free(broker_log);
    broker_log = NULL;
}

Test(chaos, soak, .timeout = 330, .fini = cleanup)
{
    /* The seed first: a failure can be replayed from it. */
    uint64_t seed;
    const char *s = getenv("RILL_CHAOS_SEED");
    if (s && *s)
        seed = strtoull(s, NULL, 0);
    else
        seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 16);
    int window_s = 75;
    const char *w_env = getenv("RILL_CHAOS_SECONDS");
    if (w_env && *w_env)
        window_s = atoi(w_env);
    cr_assert(window_s >= 10 && window_s <= 3600, "RILL_CHAOS_SECONDS must be 10..3600");
    fprintf(stderr,
            "chaos: seed %" PRIu64 " (replay: RILL_CHAOS_SEED=%" PRIu64 "), %d s of faults\n", seed,
            seed, window_s);
    rng = seed;
    draw_schedule(window_s * 1000);
    t0 = proc_now_ms();
    /* The workers stamp their rebalance lines with the same clock. */
    fprintf(stderr, "chaos: +0.0 s is CLOCK_MONOTONIC %" PRId64 " ms\n", t0);

    worker_bin = env_or_fail("RILL_CHAOS_WORKER_BIN");
    const char *broker_bin = env_or_fail("RILL_BROKER_BIN");
    char in_spec[64], out_spec[64];
    snprintf(in_spec, sizeof(in_spec), "%s:%d:1", IN_TOPIC, PARTS);
    snprintf(out_spec, sizeof(out_spec), "%s:%d:1", OUT_TOPIC, PARTS);
    char *bargv[] = {(char *)broker_bin, "--topic",       in_spec, "--topic",
                     out_spec,           "--exit-on-eof", NULL};
    cr_assert_eq(proc_spawn(&broker, bargv), 0, "spawn rill-broker");
    cr_assert_gt(proc_read_line(&broker, boot, sizeof(boot), 15000), 0,
                 "rill-broker printed no bootstrap line");

    /* The workers' ASan keeps freed memory in a quarantine (256 MB by
     * default) that fills at the rate memory is freed, which reads as
     * growth; a 4 MB one is full within the warm-up and keeps RSS
     * meaningful (use-after-free is still caught within it). */
    const char *asan = getenv("ASAN_OPTIONS");
    if (asan) {
        char opts[1024];
        snprintf(opts, sizeof(opts), "%s%squarantine_size_mb=4", asan, *asan ? ":" : "");
        setenv("ASAN_OPTIONS", opts, 1);
    }

    char err[512];
    rd_kafka_conf_t *kc = rd_kafka_conf_new();
    cr_assert_eq(rd_kafka_conf_set(kc, "bootstrap.servers", boot, err, sizeof(err)),
                 RD_KAFKA_CONF_OK, "%s", err);
    cr_assert_eq(rd_kafka_conf_set(kc, "group.id", GROUP, err, sizeof(err)), RD_KAFKA_CONF_OK, "%s",
                 err);
    /* Its connection errors while the broker is down are the faults. */
    cr_assert_eq(rd_kafka_conf_set(kc, "log_level", "2", err, sizeof(err)), RD_KAFKA_CONF_OK, "%s",
                 err);
    checker = rd_kafka_new(RD_KAFKA_CONSUMER, kc, err, sizeof(err));
    cr_assert_not_null(checker, "%s", err);

    feeder_start();
    for (int i = 0; i < N_WORKERS; i++) {
        worker_spawn(i);
        workers[i].whole_run = 1;
    }

    /* Warm-up: every worker has partitions, output flows; at least 8 s. */
    int64_t warm_deadline = proc_now_ms() + 60000, warm_min = proc_now_ms() + 8000;
    int warm = 0;
    while (!warm && proc_now_ms() < warm_deadline) {
        run_for(200);
        warm = proc_now_ms() >= warm_min && out_records() > 0;
        for (int i = 0; warm && i < N_WORKERS; i++)
            warm = count_lines(workers[i].log, "rebalance assigned ") >
                   count_lines(workers[i].log, "rebalance assigned -");
    }
    cr_assert(warm, "no warm-up in 60 s; worker 0 says:\n%s",
              tail(workers[0].log, workers[0].log_len, 3000));
    fprintf(stderr, "chaos: +%.1f s warm: %" PRId64 " records out\n", secs(), out_records());
    sampling = 1;

    /* The faults. */
    int applied[N_FAULTS] = {0}, commit_errors = 0, produce_errors = 0, downs = 0;
    for (int k = 0; k < n_events; k++) {
        event_t *e = &events[k];
        switch (e->kind) {
        case F_DOWN:
            fprintf(stderr, "chaos: +%.1f s down for %d ms\n", secs(), e->hold_ms);
            broker_cmd("down all");
            run_for(e->hold_ms);
            broker_cmd("up all");
            downs++;
            break;
        case F_RTT:
            fprintf(stderr, "chaos: +%.1f s rtt %d ms for %d ms\n", secs(), e->rtt_ms, e->hold_ms);
            broker_cmd("rtt all %d", e->rtt_ms);
            run_for(e->hold_ms);
            broker_cmd("rtt all 0");
            break;
        case F_COMMIT:
            fprintf(stderr, "chaos: +%.1f s OffsetCommit %s x%d\n", secs(), e->code, e->count);
            broker_cmd("error OffsetCommit %s %d", e->code, e->count);
            commit_errors += e->count;
            break;
        case F_PRODUCE:
            /* The errors go to the next Produce requests of any client:
             * the input pauses so that the workers' producers get them. */
            fprintf(stderr, "chaos: +%.1f s Produce %s x%d\n", secs(), e->code, e->count);
            atomic_store(&feeder.hold, 1);
            /* until the feeder's last request is answered */
            for (int64_t until = proc_now_ms() + 5000;
                 rd_kafka_outq_len(feeder.rk) > 0 && proc_now_ms() < until;)
                run_for(50);
            broker_cmd("error Produce %s %d", e->code, e->count);
            produce_errors += e->count;
            run_for(1500);
            atomic_store(&feeder.hold, 0);
            break;
        default: {
            worker_t *w = &workers[e->worker];
            fprintf(stderr, "chaos: +%.1f s SIGKILL worker %d (pid %d), restart after %d ms\n",
                    secs(), e->worker, (int)w->p.pid, e->hold_ms);
            tick();
            cr_assert_eq(kill(w->p.pid, SIGKILL), 0);
            int st = proc_wait(&w->p, 10000);
            cr_assert_eq(st, 128 + SIGKILL, "worker %d ended with %d", e->worker, st);
            proc_collect(&w->p, &w->log, &w->log_len);
            proc_close(&w->p);
            w->restarts += count_lines(w->log, "restart ");
            w->revokes += count_lines(w->log, "rebalance revoked");
            w->losts += count_lines(w->log, "rebalance lost");
            w->commit_errors += count_lines(w->log, "commit error");
            count_gaps(w);
            w->whole_run = 0;
            w->kills++;
            run_for(e->hold_ms);
            worker_spawn(e->worker);
            break;
        }
        }
        applied[e->kind]++;
        run_for(e->gap_ms);
    }

    /* The end of the faults: nothing left queued, the input stops. */
    broker_cmd("clear OffsetCommit");
    broker_cmd("clear Produce");
    broker_cmd("rtt all 0");
    broker_cmd("up all");
    fprintf(stderr, "chaos: +%.1f s faults over; input for 3 s more\n", secs());
    run_for(3000);
    atomic_store(&feeder.stop, 1);
    pthread_join(feeder.thread, NULL);
    long sent = atomic_load(&feeder.sent), acked = atomic_load(&feeder.acked),
         failed = atomic_load(&feeder.failed);
    rd_kafka_destroy(feeder.rk);
    feeder.rk = NULL;

    /* The group commits the end of every input partition. */
    int64_t end[PARTS], committed[PARTS], total_in = 0;
    end_offsets(end);
    for (int p = 0; p < PARTS; p++)
        total_in += end[p];
    int64_t t_quiet = proc_now_ms(), deadline = t_quiet + 120000;
    int done = 0;
    while (!done && proc_now_ms() < deadline) {
        run_for(250);
        done = committed_offsets(committed) == 0;
        for (int p = 0; done && p < PARTS; p++)
            done = committed[p] == end[p];
    }
    char offs[256] = "";
    for (int p = 0, n = 0; p < PARTS; p++)
        n += snprintf(offs + n, sizeof(offs) - (size_t)n, " %d:%" PRId64 "/%" PRId64, p,
                      committed[p], end[p]);
    if (!done)
        dump_workers(6000);
    cr_assert(done, "the group did not commit the input's end in 120 s (committed/end:%s)", offs);
    fprintf(stderr, "chaos: +%.1f s committed = end (%" PRId64 " input records) after %.1f s\n",
            secs(), total_in, (double)(proc_now_ms() - t_quiet) / 1000.0);
    sampling = 0;

    /* The workers stop cleanly. */
    for (int i = 0; i < N_WORKERS; i++)
        cr_assert_eq(kill(workers[i].p.pid, SIGTERM), 0);
    for (int i = 0; i < N_WORKERS; i++) {
        worker_t *w = &workers[i];
        int st = -1;
        int64_t wd = proc_now_ms() + 45000;
        while ((st = proc_wait(&w->p, 100)) < 0 && proc_now_ms() < wd)
            proc_collect(&w->p, &w->log, &w->log_len);
        proc_collect(&w->p, &w->log, &w->log_len);
        cr_assert_eq(st, 0, "worker %d exited with %d:\n%s", i, st, tail(w->log, w->log_len, 4000));
        w->restarts += count_lines(w->log, "restart ");
        w->revokes += count_lines(w->log, "rebalance revoked");
        w->losts += count_lines(w->log, "rebalance lost");
        w->commit_errors += count_lines(w->log, "commit error");
        count_gaps(w);
    }

    /* kcat reads both topics. */
    readback_t rb;
    read_back(end, total_in, &rb);

    /* The summary. */
    unsigned rereads = 0, restarts = 0, revokes = 0, losts = 0, failed_commits = 0;
    long gap_sum = 0, gap_max = 0, gaps = 0;
    int kills = 0;
    for (int i = 0; i < N_WORKERS; i++) {
        restarts += workers[i].restarts;
        revokes += workers[i].revokes;
        losts += workers[i].losts;
        failed_commits += workers[i].commit_errors;
        gap_sum += workers[i].gap_sum_ms;
        gaps += workers[i].gaps;
        if (workers[i].gap_max_ms > gap_max)
            gap_max = workers[i].gap_max_ms;
        kills += workers[i].kills;
    }
    rereads = (unsigned)kills + restarts + revokes + losts;
    long bound = dup_bound(rereads, failed_commits, downs);
    const long *lat = rb.latency; /* sorted */
    fprintf(stderr, "\nchaos summary (seed %" PRIu64 ")\n", seed);
    fprintf(stderr,
            "  faults          %d: down %d, rtt %d, commit %d (%d requests), "
            "produce %d (%d requests), kill %d\n",
            n_events, applied[F_DOWN], applied[F_RTT], applied[F_COMMIT], commit_errors,
            applied[F_PRODUCE], produce_errors, applied[F_KILL]);
    fprintf(stderr,
            "  input           %" PRId64 " records in the topic (%ld sent, %ld acked, "
            "%ld failed)\n",
            total_in, sent, acked, failed);
    fprintf(stderr,
            "  output          %ld records, %ld missing, %ld corrupt, %ld duplicates "
            "(max %u copies), bound %ld\n",
            rb.out_lines, rb.missing, rb.corrupt, rb.dups, rb.max_copies, bound);
    if (rb.n_latency)
        fprintf(stderr,
                "  latency         input to first output: median %ld ms, p99 %ld ms, max %ld ms\n",
                lat[rb.n_latency / 2], lat[rb.n_latency * 99 / 100], lat[rb.n_latency - 1]);
    free(rb.latency);
    fprintf(stderr,
            "  workers         %d kills, %u pipeline restarts, %u revokes, %u lost, "
            "%u failed commits\n",
            kills, restarts, revokes, losts, failed_commits);
    if (gaps)
        fprintf(stderr,
                "  rebalances      %ld times a worker was without partitions (revoke or loss to "
                "next assignment): mean %ld ms, max %ld ms\n",
                gaps, gap_sum / gaps, gap_max);
    int rss_ok = 1;
    for (int i = 0; i < N_WORKERS; i++) {
        long first = 0, last = 0;
        if (!workers[i].whole_run) {
            fprintf(stderr, "  RSS worker %d    killed during the soak: not checked\n", i);
            continue;
        }
        int r = rss_check(&workers[i], &first, &last);
        fprintf(stderr,
                "  RSS worker %d    %d samples: first third max %.1f MiB, last third "
                "median %.1f MiB%s\n",
                i, workers[i].n_rss, first / 1024.0, last / 1024.0,
                r < 0 ? " (too few samples)"
                : r   ? ""
                      : "  GROWING");
        rss_ok = rss_ok && r != 0;
    }
    if (getenv("RILL_TEST_VERBOSE"))
        for (int i = 0; i < N_WORKERS; i++) {
            fprintf(stderr, "--- worker %d ---\n%s\nRSS (kB, a sample a second):", i,
                    workers[i].log ? workers[i].log : "");
            for (int k = 0; k < workers[i].n_rss; k++)
                fprintf(stderr, " %ld", workers[i].rss[k]);
            fprintf(stderr, "\n");
        }

    cr_assert_gt(total_in, (int64_t)RATE * 5, "too little input to tell anything");
    cr_assert_eq(rb.missing, 0,
                 "seed %" PRIu64 ": %ld input records missing from the output "
                 "(first: %s)",
                 seed, rb.missing, rb.first_missing);
    cr_assert_eq(rb.corrupt, 0,
                 "seed %" PRIu64 ": %ld output records do not match their source "
                 "(first: %s)",
                 seed, rb.corrupt, rb.first_corrupt);
    cr_assert_leq(rb.dups, bound, "seed %" PRIu64 ": %ld duplicates, more than the bound %ld", seed,
                  rb.dups, bound);
    cr_assert(rss_ok, "seed %" PRIu64 ": a worker's memory grew after the warm-up", seed);
    for (int k = 0; k < N_FAULTS; k++)
        cr_assert_gt(applied[k], 0, "fault %s never applied", fault_names[k]);
}
