/*
 * One consumer group spread over three processes (examples/parallel_workers)
 * against a rill-broker process: a 12-partition topic preloaded with 30,000
 * records, three workers sharing it, one killed with SIGKILL mid-stream,
 * with eager (range) and with cooperative-sticky assignment. The survivors
 * take over its partitions from the group's last commit, every record is
 * processed at least once, the group commits everything, duplicates stay
 * within the handover bound, and the survivors stop on SIGTERM with exit
 * status 0. And a worker given SIGTERM while every broker is down still
 * ends in bounded time.
 *
 * Each worker writes "<seq> <partition> <offset>" per processed record to
 * its own file, flushed before it confirms the record, so the files hold
 * everything the group committed. The test only reads files and waits on
 * conditions with deadlines.
 */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "support/rtest.h"

#include <librdkafka/rdkafka.h>

#include <rill/testkit.h>

#include "support/proc.h"

#define TOPIC     "mp"
#define GROUP     "mp-group"
#define PARTS     12
#define TOTAL     30000
#define N_WORKERS 3
#define WAIT_MS   60000

static const char *env_or_fail(const char *name)
{
    const char *v = getenv(name);
    cr_assert(v && *v, "%s is not set (ctest sets it)", name);
    return v;
}

/* ------------------------------------------------------------------ */
/* Processes                                                           */
/* ------------------------------------------------------------------ */

typedef struct rec {
    int64_t seq;
    int32_t part;
    int64_t off;
    long pos; /* byte position of the line in its file */
} rec_t;

typedef struct recs {
    rec_t *r;
    size_t n;
} recs_t;

typedef struct child {
    proc_t p;
    char out[256]; /* the worker's --out file */
    char *log;     /* what it printed (stdout and stderr), for messages */
    size_t log_len;
} child_t;

static child_t broker, workers[N_WORKERS];
static recs_t *killed_recs; /* freed by cleanup() */
static char dir[64];

/* Keep the children's pipes drained (so they never block on a full pipe)
 * and their output for failure messages, waiting at most wait_ms. */
static void child_drain_ms(child_t *c, int wait_ms)
{
    if (c->p.out_fd < 0)
        return;
    char *o = proc_read_all(&c->p, wait_ms, NULL);
    char *e = proc_read_stderr(&c->p, wait_ms);
    size_t add = strlen(o) + strlen(e);
    if (add) {
        c->log = realloc(c->log, c->log_len + add + 1);
        memcpy(c->log + c->log_len, o, strlen(o));
        memcpy(c->log + c->log_len + strlen(o), e, strlen(e));
        c->log_len += add;
        c->log[c->log_len] = '\0';
    }
    free(o);
    free(e);
}

/* What is there now (1 ms: on a loaded machine that may be nothing). */
static void child_drain(child_t *c)
{
    child_drain_ms(c, 1);
}

/* After the child ended: everything it printed, up to the pipes' EOF. A
 * 1 ms drain could miss its last lines (its summary) under load. */
static void child_drain_final(child_t *c)
{
    child_drain_ms(c, 10000);
}

/* The last `max` bytes of what a child printed. */
static const char *child_tail(const child_t *c, size_t max)
{
    if (!c->log)
        return "";
    return c->log_len > max ? c->log + c->log_len - max : c->log;
}

/* The partitions of a rebalance line's list "1,4,7" (or "-"). */
static uint32_t parse_parts(const char *n)
{
    uint32_t parts = 0;
    while (*n >= '0' && *n <= '9') {
        char *e;
        long p = strtol(n, &e, 10);
        if (p >= 0 && p < PARTS)
            parts |= 1u << p;
        n = *e == ',' ? e + 1 : e;
    }
    return parts;
}

/* A worker's rebalance lines "w1 assigned 1,4,7", "w1 revoked 4",
 * "w1 lost 1,7" in order: the partitions it held last, and in terms[p]
 * (if given) how many times it was assigned partition p. */
static uint32_t assignments(const child_t *c, int *terms)
{
    uint32_t mask = 0;
    for (const char *q = c->log; q && (q = strstr(q, " w1 ")); q++) {
        const char *ev = q + 4;
        int add = !strncmp(ev, "assigned ", 9);
        if (!add && strncmp(ev, "revoked ", 8) && strncmp(ev, "lost ", 5))
            continue; /* a status line */
        uint32_t parts = parse_parts(strchr(ev, ' ') + 1);
        for (int p = 0; add && terms && p < PARTS; p++)
            terms[p] += (parts >> p) & 1;
        mask = add ? mask | parts : mask & ~parts;
    }
    return mask;
}

static uint32_t last_assignment(const child_t *c)
{
    return assignments(c, NULL);
}

static void cleanup(void)
{
    if (killed_recs) {
        free(killed_recs->r);
        killed_recs->r = NULL;
    }
    for (int i = 0; i < N_WORKERS; i++) {
        proc_kill(&workers[i].p);
        free(workers[i].log);
        workers[i].log = NULL;
        unlink(workers[i].out);
    }
    if (broker.p.pid > 0) {
        kill(broker.p.pid, SIGTERM);
        if (proc_wait(&broker.p, 10000) < 0)
            proc_kill(&broker.p);
    }
    proc_close(&broker.p);
    free(broker.log);
    broker.log = NULL;
    if (dir[0])
        rmdir(dir);
}

/* ------------------------------------------------------------------ */
/* The workers' files                                                  */
/* ------------------------------------------------------------------ */

/* Every complete line of a worker's file. */
static recs_t read_out(const char *path)
{
    recs_t rs = {NULL, 0};
    FILE *f = fopen(path, "r");
    if (!f)
        return rs;
    size_t cap = 0;
    char line[128];
    long pos = ftell(f);
    while (fgets(line, sizeof(line), f)) {
        long next = ftell(f);
        if (!strchr(line, '\n'))
            break; /* being written */
        rec_t r = {.pos = pos};
        if (sscanf(line, "%" SCNd64 " %" SCNd32 " %" SCNd64, &r.seq, &r.part, &r.off) == 3) {
            if (rs.n == cap) {
                cap = cap * 2 + 1024;
                rs.r = realloc(rs.r, cap * sizeof(*rs.r));
            }
            rs.r[rs.n++] = r;
        }
        pos = next;
    }
    fclose(f);
    return rs;
}

/* Every worker's file as it is now: how many records each holds (got),
 * and the highest offset of each partition any of them processed (max,
 * -1 if none). */
static void scan_out(size_t *got, int64_t *max)
{
    for (int p = 0; p < PARTS; p++)
        max[p] = -1;
    for (int i = 0; i < N_WORKERS; i++) {
        recs_t rs = read_out(workers[i].out);
        got[i] = rs.n;
        for (size_t j = 0; j < rs.n; j++)
            if (rs.r[j].part >= 0 && rs.r[j].part < PARTS && rs.r[j].off > max[rs.r[j].part])
                max[rs.r[j].part] = rs.r[j].off;
        free(rs.r);
    }
}

/* Of the partitions in `held`, those nobody processed (max, from
 * scan_out) to within 100 records of their end. */
static uint32_t unfinished(uint32_t held, const int64_t *max, const int64_t *end)
{
    uint32_t open = 0;
    for (int p = 0; p < PARTS; p++)
        if ((held & (1u << p)) && max[p] < end[p] - 100)
            open |= 1u << p;
    return open;
}

static long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) ? 0 : (long)st.st_size;
}

/* Records in 0..TOTAL-1 that no file holds. */
static long missing_in_union(void)
{
    static unsigned char seen[TOTAL];
    memset(seen, 0, sizeof(seen));
    for (int i = 0; i < N_WORKERS; i++) {
        recs_t rs = read_out(workers[i].out);
        for (size_t j = 0; j < rs.n; j++)
            if (rs.r[j].seq >= 0 && rs.r[j].seq < TOTAL)
                seen[rs.r[j].seq] = 1;
        free(rs.r);
    }
    long missing = 0;
    for (int i = 0; i < TOTAL; i++)
        missing += !seen[i];
    return missing;
}

/*
 * Duplicates are bounded by the handovers. No redelivery is configured, so
 * within one term of ownership (from an "assigned" to the next revoke,
 * loss or kill) a worker processes a record at most once; a record comes
 * again only after its partition moved (to another member, or back to the
 * same one), re-read from the group's last commit. So the copies of a
 * record of partition p are at most the terms of p summed over all
 * workers (the killed one too). Records past that bound would be rill
 * replaying within a term. Returns the first record over its bound, or -1;
 * *dups is the number of copies beyond the first, over all records.
 */
static int64_t over_handover_bound(long *dups, int64_t *worst_copies, int *worst_terms)
{
    static unsigned short copies[TOTAL];
    static int32_t part_of[TOTAL];
    int terms[PARTS] = {0};
    memset(copies, 0, sizeof(copies));
    for (int i = 0; i < N_WORKERS; i++) {
        assignments(&workers[i], terms);
        recs_t rs = read_out(workers[i].out);
        for (size_t j = 0; j < rs.n; j++)
            if (rs.r[j].seq >= 0 && rs.r[j].seq < TOTAL && rs.r[j].part >= 0 &&
                rs.r[j].part < PARTS) {
                copies[rs.r[j].seq]++;
                part_of[rs.r[j].seq] = rs.r[j].part;
            }
        free(rs.r);
    }
    int64_t over = -1;
    *dups = 0;
    *worst_copies = 0;
    *worst_terms = 0;
    for (int64_t q = 0; q < TOTAL; q++) {
        if (copies[q] > 1)
            *dups += copies[q] - 1;
        if (copies[q] > *worst_copies) {
            *worst_copies = copies[q];
            *worst_terms = terms[part_of[q]];
        }
        if (copies[q] > terms[part_of[q]] && over < 0)
            over = q;
    }
    return over;
}

/* ------------------------------------------------------------------ */
/* Offsets                                                             */
/* ------------------------------------------------------------------ */

static rd_kafka_t *plain_client(const char *boot)
{
    char err[512] = "";
    rd_kafka_conf_t *kc = rd_kafka_conf_new();
    cr_assert_eq(rd_kafka_conf_set(kc, "bootstrap.servers", boot, err, sizeof(err)),
                 RD_KAFKA_CONF_OK, "%s", err);
    cr_assert_eq(rd_kafka_conf_set(kc, "group.id", GROUP, err, sizeof(err)), RD_KAFKA_CONF_OK, "%s",
                 err);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, kc, err, sizeof(err));
    cr_assert_not_null(rk, "%s", err);
    return rk;
}

/* Non-zero when the group's committed offset of every partition is its end. */
static int group_committed_all(rd_kafka_t *rk, const int64_t *end)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(PARTS);
    for (int p = 0; p < PARTS; p++)
        rd_kafka_topic_partition_list_add(l, TOPIC, p);
    int ok = rd_kafka_committed(rk, l, 5000) == RD_KAFKA_RESP_ERR_NO_ERROR;
    for (int p = 0; ok && p < PARTS; p++)
        ok = l->elems[p].offset == end[p];
    rd_kafka_topic_partition_list_destroy(l);
    return ok;
}

/* A work directory, the broker process with the topic (its bootstrap
 * servers in boot) and n records in the topic, spread over the partitions
 * by key. */
static void broker_up(const char *broker_bin, char *boot, size_t size, size_t n)
{
    strcpy(dir, "/tmp/rill-mp-test-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    char *bargv[] = {(char *)broker_bin, "--topic", TOPIC ":12:1", "--exit-on-eof", NULL};
    cr_assert_eq(proc_spawn(&broker.p, bargv), 0, "spawn rill-broker");
    cr_assert_gt(proc_read_line(&broker.p, boot, size, 15000), 0,
                 "rill-broker printed no bootstrap line");
    char err[512] = "";
    rill_testkit_opts_t o = {.timeout_ms = 60000};
    cr_assert_eq(rill_testkit_produce_generated(boot, TOPIC, n, NULL, &o, err, sizeof(err)),
                 RILL_OK, "preload: %s", err);
}

/* Worker i (its output in dir/worker-i.out): parallel_workers in the
 * group on the topic, `work_us` of work a record, the options in extra,
 * a lifeline of 120 s (if this test dies) and the librdkafka setting
 * `x`. */
static void worker_spawn(int i, const char *worker_bin, char *boot, const char *work_us,
                         const char *const *extra, const char *x)
{
    child_t *w = &workers[i];
    snprintf(w->out, sizeof(w->out), "%s/worker-%d.out", dir, i);
    char *argv[32];
    int n = 0;
    const char *head[] = {worker_bin, "--bootstrap", boot,   "--topic",   TOPIC,  "--group",
                          GROUP,      "--out",       w->out, "--work-us", work_us};
    for (size_t k = 0; k < sizeof(head) / sizeof(head[0]); k++)
        argv[n++] = (char *)head[k];
    for (size_t k = 0; extra && extra[k]; k++)
        argv[n++] = (char *)extra[k];
    const char *tail[] = {"--timeout-s", "120", "-X", x};
    for (size_t k = 0; k < sizeof(tail) / sizeof(tail[0]); k++)
        argv[n++] = (char *)tail[k];
    argv[n] = NULL;
    cr_assert_eq(proc_spawn(&w->p, argv), 0, "spawn worker %d", i);
}

/* ------------------------------------------------------------------ */
/* The test                                                            */
/* ------------------------------------------------------------------ */

/*
 * Three workers with the given assignment strategy, worker 0 killed
 * mid-stream: the survivors take its partitions over (after its session
 * timeout), every record is processed, the group commits every partition
 * to its end, duplicates stay within the handover bound, and the
 * survivors stop cleanly.
 */
static void kill_one_of_three(const char *assignment)
{
    const char *broker_bin = env_or_fail("RILL_BROKER_BIN");
    const char *worker_bin = env_or_fail("RILL_WORKER_BIN");
    int64_t t0 = proc_now_ms();

    /* The broker process, with the topic: 30,000 records, spread over the
     * partitions by key. */
    char boot[512];
    broker_up(broker_bin, boot, sizeof(boot), TOTAL);
    rd_kafka_t *rk = plain_client(boot);
    int64_t end[PARTS], sum = 0;
    for (int p = 0; p < PARTS; p++) {
        int64_t lo;
        cr_assert_eq(rd_kafka_query_watermark_offsets(rk, TOPIC, p, &lo, &end[p], 10000),
                     RD_KAFKA_RESP_ERR_NO_ERROR);
        sum += end[p];
    }
    cr_assert_eq(sum, TOTAL);
    fprintf(stderr, "multiprocess: broker %s, %d records preloaded after %lld ms\n", boot, TOTAL,
            (long long)(proc_now_ms() - t0));

    /* Three workers in one group: short session timeout, some work per
     * record so that the kill lands mid-stream. Worker 0, the one killed,
     * works slowest (1 ms a record): it must still hold records nobody
     * processed when the others are under way, which took 11 s once on
     * 2.8.0 with cooperative-sticky under ctest -j3 (worker 0, at 300 us,
     * had finished all four of its partitions by then). */
    char strategy[128];
    snprintf(strategy, sizeof(strategy), "partition.assignment.strategy=%s", assignment);
    for (int i = 0; i < N_WORKERS; i++) {
        const char *tune[] = {"--session-timeout-ms", "3000", "--heartbeat-ms", "500", NULL};
        worker_spawn(i, worker_bin, boot, i == 0 ? "1000" : "300", tune, strategy);
    }

    /* Each worker processes some records, and worker 0 holds a partition
     * nobody has processed to its end: the kill must not land between the
     * revoke and the next assignment of a rebalance (a member joining late
     * revokes everything under the eager protocol; seen under TSan with
     * ctest -j2, 1 run in 10: worker 0 held nothing when killed), nor
     * after worker 0 ran out of work. */
    int ok = 0;
    int64_t deadline = proc_now_ms() + WAIT_MS;
    size_t got[N_WORKERS] = {0};
    int64_t max[PARTS];
    uint32_t open0 = 0;
    while (!ok && proc_now_ms() < deadline) {
        for (int i = 0; i < N_WORKERS; i++)
            child_drain(&workers[i]);
        scan_out(got, max);
        ok = 1;
        for (int i = 0; i < N_WORKERS; i++)
            ok = ok && got[i] >= 200;
        open0 = ok ? unfinished(last_assignment(&workers[0]), max, end) : 0;
        ok = ok && open0;
        if (!ok)
            proc_nap_ms(20);
    }
    cr_assert(ok,
              "no moment in %d ms when every worker had records and worker 0 held an "
              "unfinished partition: %zu %zu %zu records, worker 0 holds %#x; it says:\n%s",
              WAIT_MS, got[0], got[1], got[2], last_assignment(&workers[0]),
              child_tail(&workers[0], 2000));
    fprintf(stderr,
            "multiprocess: under way after %lld ms: %zu %zu %zu records; worker 0 holds %#x, "
            "%#x unfinished\n",
            (long long)(proc_now_ms() - t0), got[0], got[1], got[2], last_assignment(&workers[0]),
            open0);

    /* Kill worker 0 mid-stream. What the others wrote before the kill ends
     * at these file sizes. */
    cr_assert_eq(kill(workers[0].p.pid, SIGKILL), 0);
    long before[N_WORKERS];
    for (int i = 1; i < N_WORKERS; i++)
        before[i] = file_size(workers[i].out);
    int st = proc_wait(&workers[0].p, 10000);
    cr_assert_eq(st, 128 + SIGKILL, "worker 0 ended with %d", st);
    child_drain_final(&workers[0]);
    int64_t t_kill = proc_now_ms();
    static recs_t killed;
    killed = read_out(workers[0].out);
    killed_recs = &killed;
    fprintf(stderr, "multiprocess: killed worker 0 after %zu records, at %lld ms\n", killed.n,
            (long long)(t_kill - t0));

    /* Partitions worker 0 processed that were not finished at the kill
     * (nobody had processed their last record before it). */
    int64_t killed_max[PARTS], pre_max[PARTS];
    for (int p = 0; p < PARTS; p++)
        killed_max[p] = pre_max[p] = -1;
    for (size_t j = 0; j < killed.n; j++) {
        rec_t *r = &killed.r[j];
        cr_assert(r->part >= 0 && r->part < PARTS);
        if (r->off > killed_max[r->part])
            killed_max[r->part] = r->off;
        if (r->off > pre_max[r->part])
            pre_max[r->part] = r->off;
    }
    for (int i = 1; i < N_WORKERS; i++) {
        recs_t rs = read_out(workers[i].out);
        for (size_t j = 0; j < rs.n; j++)
            if (rs.r[j].pos < before[i] && rs.r[j].off > pre_max[rs.r[j].part])
                pre_max[rs.r[j].part] = rs.r[j].off;
        free(rs.r);
    }
    /* ... and the partitions it held when it was killed. */
    uint32_t held = last_assignment(&workers[0]);
    cr_assert_neq(held, 0, "worker 0 reported no assignment:\n%s", child_tail(&workers[0], 2000));
    uint32_t orphaned = 0;
    for (int p = 0; p < PARTS; p++)
        if ((killed_max[p] >= 0 || (held & (1u << p))) && pre_max[p] < end[p] - 1)
            orphaned |= 1u << p;
    free(killed.r);
    killed.r = NULL;
    cr_assert_neq(orphaned, 0, "worker 0 held no unfinished partition when it was killed");

    /* The survivors cover every record. */
    long missing = TOTAL;
    while ((missing = missing_in_union()) > 0 && proc_now_ms() < deadline + WAIT_MS) {
        for (int i = 1; i < N_WORKERS; i++)
            child_drain(&workers[i]);
        proc_nap_ms(50);
    }
    cr_assert_eq(missing, 0, "%ld records processed by nobody; worker 1 says:\n%s", missing,
                 child_tail(&workers[1], 3000));
    fprintf(stderr, "multiprocess: every record processed %lld ms after the kill\n",
            (long long)(proc_now_ms() - t_kill));

    /* They took the orphaned partitions over: records of those partitions
     * past worker 0's last one, processed after the kill. */
    uint32_t taken = 0;
    size_t after_kill = 0;
    for (int i = 1; i < N_WORKERS; i++) {
        recs_t rs = read_out(workers[i].out);
        for (size_t j = 0; j < rs.n; j++) {
            rec_t *r = &rs.r[j];
            if (r->pos >= before[i] && (orphaned & (1u << r->part)) &&
                r->off > killed_max[r->part]) {
                taken |= 1u << r->part;
                after_kill++;
            }
        }
        free(rs.r);
    }
    cr_assert_eq(taken, orphaned, "orphaned partitions %#x, taken over %#x", orphaned, taken);
    fprintf(stderr,
            "multiprocess: worker 0 held partitions %#x; survivors took over %#x (%zu records)\n",
            held, orphaned, after_kill);

    /* The group's commits reach the end of every partition. */
    ok = 0;
    while (!(ok = group_committed_all(rk, end)) && proc_now_ms() < deadline + 2 * WAIT_MS) {
        for (int i = 1; i < N_WORKERS; i++)
            child_drain(&workers[i]);
        proc_nap_ms(100);
    }
    cr_assert(ok, "the group did not commit every partition to its end");
    rd_kafka_destroy(rk);

    /* SIGTERM: the survivors stop cleanly, exit 0. */
    for (int i = 1; i < N_WORKERS; i++)
        cr_assert_eq(kill(workers[i].p.pid, SIGTERM), 0);
    for (int i = 1; i < N_WORKERS; i++) {
        int status = -1;
        int64_t wdeadline = proc_now_ms() + 30000;
        while ((status = proc_wait(&workers[i].p, 100)) < 0 && proc_now_ms() < wdeadline)
            child_drain(&workers[i]);
        if (status >= 0)
            child_drain_final(&workers[i]);
        cr_assert_eq(status, 0, "worker %d exited with %d:\n%s", i, status,
                     child_tail(&workers[i], 3000));
        cr_assert(strstr(workers[i].log, "OK: stopped cleanly"), "worker %d:\n%s", i,
                  child_tail(&workers[i], 3000));
    }

    /* Duplicates: within the handover bound (see over_handover_bound). */
    long dups = 0;
    int64_t worst = 0;
    int worst_terms = 0;
    int64_t over = over_handover_bound(&dups, &worst, &worst_terms);
    cr_assert_eq(over, -1,
                 "record %" PRId64 " was processed more often than its partition changed hands",
                 over);
    fprintf(stderr,
            "multiprocess: %s: %ld duplicates (%.1f %%), at most %" PRId64
            " copies of a record (its partition had %d terms)\n",
            assignment, dups, 100.0 * (double)dups / TOTAL, worst, worst_terms);
    fprintf(stderr, "multiprocess: done in %lld ms\n", (long long)(proc_now_ms() - t0));
    if (getenv("RILL_TEST_VERBOSE"))
        for (int i = 0; i < N_WORKERS; i++)
            fprintf(stderr, "--- worker %d ---\n%s\n", i, child_tail(&workers[i], 100000));
}

/* Eager: every rebalance revokes everything. */
Test(kafka_multiprocess, three_workers_one_killed_survivors_take_over, .timeout = 150,
     .fini = cleanup)
{
    kill_one_of_three("range");
}

/*
 * Cooperative-sticky, set explicitly (rill's default only from librdkafka
 * 2.3.0; below it is kept with a warning, librdkafka #4312). After the
 * kill the embedded broker (2.0.2, and 2.8 too) answers SyncGroup with
 * ILLEGAL_GENERATION: the survivors lose their assignments and join again,
 * 0-3 times each, and every loss re-reads from the last commit. Measured on
 * 2.0.2, 2 cores, 19 runs (normal, ASan, TSan): every record processed
 * 9-25 s after the kill, 30-100 % duplicates, at most 5 copies of a record.
 * The loop ends, so the outcome is asserted as with range. (It found a
 * stall: partitions lost while paused were never fetched again, 5 of 18
 * runs; see test_kafka_lifecycle's partitions_lost_while_paused.)
 */
Test(kafka_multiprocess, cooperative_sticky_one_killed_survivors_take_over, .timeout = 150,
     .fini = cleanup)
{
    kill_one_of_three("cooperative-sticky");
}

/* SIGTERM to a worker while every broker is down (rill-broker `down all`).
 * librdkafka 2.0.2's consumer close cannot finish then (issue 12: the
 * terminate hook's destroy of the half-closed client never returns), so
 * the worker's rill_system_stop can time out. The worker must still end in
 * bounded time: either it stops cleanly (exit 0, "OK: stopped cleanly"),
 * or it says its stop timed out and exits 1 without destroying a system
 * that did not stop (actor.h: it must not be destroyed; destroying it
 * waited forever). It never hangs and never dies of a signal. */
Test(kafka_multiprocess, sigterm_with_the_brokers_down_ends_the_worker, .timeout = 150,
     .fini = cleanup)
{
    for (int i = 0; i < N_WORKERS; i++)
        workers[i].p = (proc_t){.pid = 0, .in_fd = -1, .out_fd = -1, .err_fd = -1};
    const char *broker_bin = env_or_fail("RILL_BROKER_BIN");
    const char *worker_bin = env_or_fail("RILL_WORKER_BIN");

    char boot[512];
    broker_up(broker_bin, boot, sizeof(boot), 3000);

    /* One worker, slow enough to be mid-stream when the brokers go, with
     * librdkafka's default session timeout (45 s): with a short one (3 s)
     * the stop ends cleanly in about 4 s, with the default one the close
     * cannot finish (librdkafka 2.0.2: 3 runs of 3 by hand) and its main
     * thread spins a core meanwhile, so the worker's stop deadlines are
     * cut from 15 s to 3 s (--stop-timeout-s). */
    /* the timed-out path costs 6 s, not 30 */
    const char *quick_stop[] = {"--stop-timeout-s", "3", NULL};
    worker_spawn(0, worker_bin, boot, "1000", quick_stop, "partition.assignment.strategy=range");
    child_t *w = &workers[0];
    size_t got = 0;
    int64_t deadline = proc_now_ms() + WAIT_MS;
    while (got < 100 && proc_now_ms() < deadline) {
        child_drain(w);
        recs_t rs = read_out(w->out);
        got = rs.n;
        free(rs.r);
        if (got < 100)
            proc_nap_ms(20);
    }
    cr_assert_geq(got, 100, "the worker processed %zu records:\n%s", got, child_tail(w, 2000));

    /* Every broker down, then SIGTERM. */
    char reply[256] = "";
    cr_assert_eq(proc_write(&broker.p, "down all\n"), 0);
    cr_assert_gt(proc_read_line(&broker.p, reply, sizeof(reply), 10000), 0, "no answer to down");
    cr_assert(!strncmp(reply, "ok", 2), "down all: %s", reply);
    /* ... once the worker's clients noticed (their connection attempts are
     * refused): a SIGTERM before that stops cleanly, having nothing to wait for. */
    deadline = proc_now_ms() + 15000;
    while (!(w->log && strstr(w->log, "Connection refused")) && proc_now_ms() < deadline) {
        proc_nap_ms(20);
        child_drain(w);
    }
    cr_assert(w->log && strstr(w->log, "Connection refused"),
              "the worker did not notice the brokers going down:\n%s", child_tail(w, 2000));
    int64_t t_term = proc_now_ms();
    cr_assert_eq(kill(w->p.pid, SIGTERM), 0);
    int status = -1;
    while ((status = proc_wait(&w->p, 100)) < 0 && proc_now_ms() < t_term + 90000)
        child_drain(w);
    if (status >= 0)
        child_drain_final(w);
    cr_assert_geq(status, 0, "the worker did not end within 90 s of SIGTERM:\n%s",
                  child_tail(w, 3000));
    fprintf(stderr, "multiprocess: brokers down, the worker ended with %d %lld ms after SIGTERM\n",
            status, (long long)(proc_now_ms() - t_term));
    if (status == 0)
        cr_assert(strstr(w->log, "OK: stopped cleanly"), "exit 0 without its verdict:\n%s",
                  child_tail(w, 3000));
    else
        cr_assert(status == 1 && strstr(w->log, "did not stop"),
                  "ended with %d, not a reported timed-out stop:\n%s", status, child_tail(w, 3000));
}
