/*
 * parallel_workers: one consumer group, several workers sharing the
 * partitions of a topic, each record confirmed after it was processed.
 *
 *   worker 1: kafka source (group G) -> sink: process, RILL_OK confirms
 *   worker 2: kafka source (group G) -> sink: process, RILL_OK confirms
 *   ...
 *
 * Each worker is a pipeline (a Kafka source in the group -> a sink),
 * supervised. They can all live in this process (--workers N), or be
 * spread over several processes started against the same cluster (a
 * rill-broker process, say) with the same --group: Kafka shares the
 * partitions out among all members either way, and moves them to the
 * others when a member leaves or dies.
 *
 * Each record is processed (--work-us of pretend work), written to --out
 * if given (one line "<seq> <partition> <offset>", flushed at once), and
 * only then confirmed (the sink returns RILL_OK): whatever the group
 * commits has been written, so the
 * files of all processes together cover the topic even when a process is
 * killed (its unconfirmed records go to the members that take its
 * partitions over).
 *
 * Without --bootstrap: an embedded broker, --count records, the workers in
 * this process; it ends when every record was processed and committed.
 * With --bootstrap: records are expected in the topic (or --produce N puts
 * them there first; with --workers 0 that is all it does); the process
 * runs until SIGTERM/SIGINT, or with --expect-total K until the group has
 * committed K records.
 *
 * usage: parallel_workers [--workers N] [--count N] [--partitions P]
 *          [--bootstrap SERVERS] [--topic T] [--group G] [--produce N]
 *          [--expect-total K] [--out PATH] [--work-us US]
 *          [--session-timeout-ms MS] [--heartbeat-ms MS] [--timeout-s S]
 *          [--stop-timeout-s S]
 *          [-X KEY=VALUE ...]
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <rill/rill.h>
#include <rill/testkit.h>

#define MAX_WORKERS 64
#define MAX_PROPS   32

/* What every worker of the process shares. */
typedef struct app {
    const char *bootstraps, *topic, *group;
    const char *session_ms, *heartbeat_ms;
    uint64_t expect; /* records in the topic, 0 = unknown */
    long work_us;
    FILE *out;
    pthread_mutex_t out_lock;
    _Atomic uint32_t *seen;       /* by seq, when expect is known */
    const char *props[MAX_PROPS]; /* -X key=value: librdkafka properties */
    int n_props;
} app_t;

typedef struct worker {
    int id;
    app_t *app;
    rill_pipeline_t *pipeline;
    _Atomic uint64_t processed;
    _Atomic uint64_t assigned; /* partitions held now (bit p, p < 64) */
    _Atomic uint64_t touched;  /* partitions it ever processed records of */
} worker_t;

/* Set by the signal handler: a signal handler has nowhere else to write. */
static volatile sig_atomic_t stop_signal;

static void on_signal(int sig)
{
    stop_signal = sig;
}

/* Generated records carry their sequence number: "seq=<n> ...". */
static int64_t record_seq(const rd_kafka_message_t *m)
{
    if (!m->payload || m->len < 5 || memcmp(m->payload, "seq=", 4))
        return -1;
    return strtoll((const char *)m->payload + 4, NULL, 10);
}

/* The sink of a worker: process, write down; RILL_OK then confirms. */
static rill_err_t process(void *opaque, rill_elem_t *e)
{
    worker_t *w = opaque;
    app_t *app = w->app;
    const rd_kafka_message_t *m = rill_record(e);
    if (!m) {
        rill_elem_release(e);
        return RILL_EINVAL; /* not a record: cannot happen behind a Kafka source */
    }
    if (app->work_us > 0) {
        struct timespec ts = {app->work_us / 1000000, (app->work_us % 1000000) * 1000};
        nanosleep(&ts, NULL); /* the work */
    }
    int64_t seq = record_seq(m);
    if (app->out) {
        pthread_mutex_lock(&app->out_lock);
        fprintf(app->out, "%" PRId64 " %" PRId32 " %" PRId64 "\n", seq, m->partition, m->offset);
        fflush(app->out);
        pthread_mutex_unlock(&app->out_lock);
    }
    if (app->seen && seq >= 0 && (uint64_t)seq < app->expect)
        atomic_fetch_add(&app->seen[seq], 1);
    if (m->partition < 64)
        atomic_fetch_or(&w->touched, UINT64_C(1) << m->partition);
    atomic_fetch_add(&w->processed, 1);
    rill_elem_release(e); /* the payload; the record's confirm is rill's */
    return RILL_OK;
}

static void format_parts(uint64_t mask, char *buf, size_t size)
{
    size_t n = 0;
    buf[0] = '\0';
    for (int p = 0; p < 64 && n + 4 < size; p++)
        if (mask & (UINT64_C(1) << p))
            n += (size_t)snprintf(buf + n, size - n, "%s%d", n ? "," : "", p);
    if (!n)
        snprintf(buf, size, "-");
}

static void on_rebalance(void *opaque, rill_rebalance_event_t ev,
                         const rd_kafka_topic_partition_list_t *parts)
{
    worker_t *w = opaque;
    uint64_t mask = 0;
    for (int i = 0; i < parts->cnt; i++)
        if (parts->elems[i].partition < 64)
            mask |= UINT64_C(1) << parts->elems[i].partition;
    if (ev == RILL_REBALANCE_ASSIGNED)
        atomic_fetch_or(&w->assigned, mask);
    else
        atomic_fetch_and(&w->assigned, ~mask);
    char list[200];
    format_parts(mask, list, sizeof(list));
    printf("        w%d %s %s\n", w->id,
           ev == RILL_REBALANCE_ASSIGNED  ? "assigned"
           : ev == RILL_REBALANCE_REVOKED ? "revoked"
                                          : "lost",
           list);
    fflush(stdout);
}

/* Apply the -X key=value properties. */
static rill_err_t set_props(const app_t *app, rill_consumer_conf_t *c, char *err, size_t size)
{
    for (int i = 0; i < app->n_props; i++) {
        char key[256];
        const char *eq = strchr(app->props[i], '=');
        if (!eq || eq == app->props[i] || (size_t)(eq - app->props[i]) >= sizeof(key)) {
            snprintf(err, size, "-X %s: expected key=value", app->props[i]);
            return RILL_EINVAL;
        }
        snprintf(key, sizeof(key), "%.*s", (int)(eq - app->props[i]), app->props[i]);
        rill_err_t e = rill_consumer_conf_set(c, key, eq + 1, err, size);
        if (e)
            return e;
    }
    return RILL_OK;
}

/* A worker: its Kafka source in the group -> its sink, supervised. */
static rill_err_t worker_start(rill_system_t *sys, worker_t *w, char *err, size_t err_size)
{
    const app_t *app = w->app;
    const char *topics[] = {app->topic};
    char name[32];
    rill_consumer_conf_t *c = rill_consumer_conf_new();
    if (rill_consumer_conf_set(c, "bootstrap.servers", app->bootstraps, err, err_size) ||
        rill_consumer_conf_set(c, "group.id", app->group, err, err_size) ||
        rill_consumer_conf_set(c, "auto.offset.reset", "earliest", err, err_size) ||
        rill_consumer_conf_set(c, "rill.commit.interval.ms", "200", err, err_size) ||
        (app->session_ms &&
         rill_consumer_conf_set(c, "session.timeout.ms", app->session_ms, err, err_size)) ||
        (app->heartbeat_ms &&
         rill_consumer_conf_set(c, "heartbeat.interval.ms", app->heartbeat_ms, err, err_size)) ||
        set_props(app, c, err, err_size) ||
        rill_consumer_conf_subscribe(c, topics, 1, err, err_size) ||
        rill_consumer_conf_set_rebalance_cb(c, on_rebalance, w)) {
        rill_consumer_conf_destroy(c);
        return RILL_EINVAL;
    }
    snprintf(name, sizeof(name), "worker-%d", w->id);
    w->pipeline = rill_pipeline_new(sys, name);
    rill_pipeline_add(w->pipeline, rill_kafka_source(c), NULL);
    rill_pipeline_add(w->pipeline, rill_sink_foreach(process, w), NULL);
    rill_err_t e = rill_pipeline_start_supervised(w->pipeline, NULL, err, err_size);
    if (e) {
        rill_pipeline_destroy(w->pipeline);
        w->pipeline = NULL;
    }
    return e;
}

/* The group's committed offsets and the topic's end offsets, summed over
 * its partitions. Returns 0, or -1 if the cluster did not answer. */
static int group_progress(rd_kafka_t *rk, const char *topic, int64_t *committed, int64_t *end)
{
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    int rc = -1;
    *committed = *end = 0;
    if (rkt && !rd_kafka_metadata(rk, 0, rkt, &md, 5000) && md->topic_cnt == 1 &&
        !md->topics[0].err) {
        int n = md->topics[0].partition_cnt;
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(n);
        for (int p = 0; p < n; p++)
            rd_kafka_topic_partition_list_add(l, topic, p);
        if (!rd_kafka_committed(rk, l, 5000)) {
            rc = 0;
            for (int p = 0; p < n; p++) {
                int64_t lo, hi;
                if (l->elems[p].offset > 0)
                    *committed += l->elems[p].offset;
                if (rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi, 5000))
                    rc = -1;
                else
                    *end += hi;
            }
        }
        rd_kafka_topic_partition_list_destroy(l);
    }
    if (md)
        rd_kafka_metadata_destroy(md);
    if (rkt)
        rd_kafka_topic_destroy(rkt);
    return rc;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: parallel_workers [--workers N] [--count N] [--partitions P]\n"
               "         [--bootstrap SERVERS] [--topic T] [--group G] [--produce N]\n"
               "         [--expect-total K] [--out PATH] [--work-us US]\n"
               "         [--session-timeout-ms MS] [--heartbeat-ms MS] [--timeout-s S]\n"
               "         [--stop-timeout-s S]   (each stop step's deadline, default 15)\n"
               "         [-X KEY=VALUE ...]   (consumer properties, rill.* or librdkafka)\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"workers", required_argument, NULL, 'w'},
                                         {"count", required_argument, NULL, 'n'},
                                         {"partitions", required_argument, NULL, 'p'},
                                         {"bootstrap", required_argument, NULL, 'b'},
                                         {"topic", required_argument, NULL, 't'},
                                         {"group", required_argument, NULL, 'g'},
                                         {"produce", required_argument, NULL, 'P'},
                                         {"expect-total", required_argument, NULL, 'k'},
                                         {"out", required_argument, NULL, 'o'},
                                         {"work-us", required_argument, NULL, 'u'},
                                         {"session-timeout-ms", required_argument, NULL, 's'},
                                         {"heartbeat-ms", required_argument, NULL, 'H'},
                                         {"timeout-s", required_argument, NULL, 'T'},
                                         {"stop-timeout-s", required_argument, NULL, 'S'},
                                         {"property", required_argument, NULL, 'X'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    app_t app = {.topic = "work", .group = "workers", .out_lock = PTHREAD_MUTEX_INITIALIZER};
    int n_workers = -1, partitions = 6, timeout_s = 0, stop_s = 15;
    uint64_t count = 30000, produce = 0;
    const char *out_path = NULL;
    int opt;
    while ((opt = getopt_long(argc, argv, "w:n:p:b:t:g:P:k:o:u:s:H:T:S:X:h", opts, NULL)) != -1) {
        switch (opt) {
        case 'w':
            n_workers = atoi(optarg);
            break;
        case 'n':
            count = strtoull(optarg, NULL, 10);
            break;
        case 'p':
            partitions = atoi(optarg);
            break;
        case 'b':
            app.bootstraps = optarg;
            break;
        case 't':
            app.topic = optarg;
            break;
        case 'g':
            app.group = optarg;
            break;
        case 'P':
            produce = strtoull(optarg, NULL, 10);
            break;
        case 'k':
            app.expect = strtoull(optarg, NULL, 10);
            break;
        case 'o':
            out_path = optarg;
            break;
        case 'u':
            app.work_us = atol(optarg);
            break;
        case 's':
            app.session_ms = optarg;
            break;
        case 'H':
            app.heartbeat_ms = optarg;
            break;
        case 'T':
            timeout_s = atoi(optarg);
            break;
        case 'S':
            stop_s = atoi(optarg);
            break;
        case 'X':
            if (app.n_props == MAX_PROPS) {
                fprintf(stderr, "parallel_workers: at most %d -X properties\n", MAX_PROPS);
                return 2;
            }
            app.props[app.n_props++] = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    int embedded = app.bootstraps == NULL;
    if (n_workers < 0)
        n_workers = embedded ? 3 : 1;
    if ((n_workers == 0 && (embedded || !produce)) || n_workers > MAX_WORKERS || partitions < 1 ||
        partitions > 64 || (embedded && count == 0) || app.work_us < 0 || stop_s < 1 ||
        optind < argc) {
        usage(stderr);
        return 2;
    }
    if (!timeout_s)
        timeout_s = embedded || app.expect ? 300 : 0; /* 0: run until a signal */

    char err[512];
    rill_broker_t *broker = NULL;
    if (embedded) {
        /* A short session timeout: a member that leaves or dies is noticed
         * quickly (real clusters refuse less than 6 s by default). */
        if (!app.session_ms)
            app.session_ms = "3000";
        if (!app.heartbeat_ms)
            app.heartbeat_ms = "500";
        broker = rill_broker_new(1, err, sizeof(err));
        if (!broker ||
            rill_broker_create_topic(broker, app.topic, partitions, 1, err, sizeof(err))) {
            rill_log(RILL_LOG_ERR, "parallel_workers", "embedded broker: %s", err);
            return 1;
        }
        app.bootstraps = rill_broker_bootstraps(broker);
        printf("embedded broker at %s, topic %s with %d partitions\n", app.bootstraps, app.topic,
               partitions);
        produce = count;
        app.expect = count;
    }
    if (produce) {
        printf("producing %" PRIu64 " records to %s\n", produce, app.topic);
        rill_testkit_opts_t popts = {.timeout_ms = 120000};
        if (rill_testkit_produce_generated(app.bootstraps, app.topic, produce, NULL, &popts, err,
                                           sizeof(err))) {
            rill_log(RILL_LOG_ERR, "parallel_workers", "produce: %s", err);
            rill_broker_destroy(broker);
            return 1;
        }
    }
    if (n_workers == 0)
        return 0; /* --workers 0 --produce N: load the topic, nothing else */
    if (out_path && !(app.out = fopen(out_path, "w"))) {
        rill_log(RILL_LOG_ERR, "parallel_workers", "%s: %s", out_path, strerror(errno));
        rill_broker_destroy(broker);
        return 1;
    }
    if (app.expect)
        app.seen = calloc(app.expect, sizeof(*app.seen));

    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    /* A plain client that never joins: reads the group's commits. */
    rd_kafka_conf_t *kc = rd_kafka_conf_new();
    rd_kafka_conf_set(kc, "bootstrap.servers", app.bootstraps, NULL, 0);
    rd_kafka_conf_set(kc, "group.id", app.group, NULL, 0);
    rd_kafka_t *checker = rd_kafka_new(RD_KAFKA_CONSUMER, kc, err, sizeof(err));

    rill_system_t *sys = rill_system_new(NULL, err, sizeof(err));
    if (!sys || !checker || rill_system_start(sys)) {
        rill_log(RILL_LOG_ERR, "parallel_workers", "start: %s", err);
        return 1;
    }
    worker_t workers[MAX_WORKERS] = {0};
    for (int i = 0; i < n_workers; i++) {
        workers[i].id = i + 1;
        workers[i].app = &app;
        if (worker_start(sys, &workers[i], err, sizeof(err))) {
            rill_log(RILL_LOG_ERR, "parallel_workers", "worker %d: %s", i + 1, err);
            return 1;
        }
    }
    printf("pid %d: %d worker(s) in group %s on topic %s\n", (int)getpid(), n_workers, app.group,
           app.topic);
    fflush(stdout);

    /* Wait for the end: a signal, or the group committed everything. */
    double start = now_s(), last_report = start;
    int64_t committed = 0, end = 0;
    int done = 0, timed_out = 0;
    while (!stop_signal && !done) {
        struct timespec tick = {0, 100 * 1000 * 1000};
        nanosleep(&tick, NULL); /* pacing the checks */
        double t = now_s();
        if (app.expect && t - last_report >= 0.5)
            done = group_progress(checker, app.topic, &committed, &end) == 0 &&
                   committed == (int64_t)app.expect && end == committed;
        if (t - last_report >= 1.0 || done) {
            last_report = t;
            printf("%5.1fs", t - start);
            for (int i = 0; i < n_workers; i++) {
                char parts[200];
                format_parts(atomic_load(&workers[i].assigned), parts, sizeof(parts));
                printf("  w%d %" PRIu64 " [%s]", workers[i].id, atomic_load(&workers[i].processed),
                       parts);
            }
            if (app.expect)
                printf("  committed %" PRId64 "/%" PRIu64, committed, app.expect);
            printf("\n");
            fflush(stdout);
        }
        if (timeout_s && t - start > timeout_s) {
            timed_out = 1;
            break;
        }
    }
    if (stop_signal)
        printf("signal %d: stopping\n", (int)stop_signal);

    /* Stop: each worker processes what is in flight, commits what was
     * confirmed and leaves the group. */
    int clean = 1;
    for (int i = 0; i < n_workers; i++)
        rill_pipeline_stop(workers[i].pipeline);
    for (int i = 0; i < n_workers; i++) {
        rill_pipeline_result_t res;
        rill_pipeline_wait(workers[i].pipeline, stop_s * 1000, &res);
        if (res.end != RILL_PIPELINE_STOPPED) {
            rill_log(RILL_LOG_ERR, "parallel_workers", "worker %d: %s", workers[i].id,
                     res.end ? res.text : "did not stop in time");
            clean = 0;
        }
        if (res.end) /* else left running: the system's stop ends it */
            rill_pipeline_destroy(workers[i].pipeline);
    }
    if (rill_system_stop(sys, stop_s * 1000) != RILL_OK) {
        /* An actor is still running (a client that does not close, say):
         * the system must not be destroyed (rill_system_stop's contract),
         * nor the pipelines left running; the process ends instead. */
        printf("  FAILED: the system did not stop within %d s\n", stop_s);
        fflush(stdout);
        _exit(1);
    }
    rill_system_destroy(sys);

    uint64_t total = 0, distinct = 0, again = 0;
    int idle = 0;
    printf("\nsummary (pid %d)\n", (int)getpid());
    for (int i = 0; i < n_workers; i++) {
        char parts[200];
        uint64_t n = atomic_load(&workers[i].processed);
        format_parts(atomic_load(&workers[i].touched), parts, sizeof(parts));
        printf("  worker %-2d processed %7" PRIu64 " records of partitions %s\n", workers[i].id, n,
               parts);
        total += n;
        idle += n == 0;
    }
    for (uint64_t i = 0; app.seen && i < app.expect; i++) {
        uint32_t s = atomic_load(&app.seen[i]);
        distinct += s > 0;
        again += s > 1 ? s - 1 : 0;
    }
    printf("  processed in all         %" PRIu64 "\n", total);
    if (app.seen)
        printf("  distinct records here   %" PRIu64 " of %" PRIu64 " (%" PRIu64
               " processed again after a rebalance)\n",
               distinct, app.expect, again);
    if (app.expect) {
        group_progress(checker, app.topic, &committed, &end);
        printf("  committed by the group   %" PRId64 " of %" PRId64 "\n", committed, end);
    }
    rd_kafka_destroy(checker);
    int ok;
    if (embedded) {
        ok = !timed_out && clean && distinct == app.expect && committed == end &&
             (idle == 0 || n_workers > partitions);
        printf("  %s\n", ok ? "OK: every record processed and committed, every worker had a share"
                            : "FAILED: records missing or not committed, or a worker was idle");
    } else if (app.expect && !stop_signal) {
        ok = !timed_out && clean && committed == (int64_t)app.expect;
        printf("  %s\n", ok ? "OK: the group processed and committed every record"
                            : "FAILED: the group did not commit every record in time");
    } else {
        ok = clean && !timed_out;
        printf("  %s\n", ok ? "OK: stopped cleanly, confirmed records committed"
                            : "FAILED: did not stop cleanly");
    }
    if (app.out)
        fclose(app.out);
    free(app.seen);
    rill_broker_destroy(broker);
    return ok ? 0 : 1;
}
