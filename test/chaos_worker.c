/*
 * chaos_worker: one worker process of the chaos soak (test_chaos_soak.c).
 *
 *   Kafka source (group G, topic IN) -> map (record -> produce request)
 *     -> Kafka sink (topic OUT), under rill_pipeline_start_supervised
 *
 * Each input record "seq=N" becomes the output record "seq=N src=P:O" (P and
 * O: the input's partition and offset) with the same key, in the same
 * partition of OUT. The input record is confirmed when its output is
 * delivered, so the group commits only what reached OUT.
 *
 * The worker runs until SIGTERM, SIGINT or EOF on stdin (its parent's
 * lifeline), then stops the pipeline (what is in flight is delivered and
 * committed) and exits 0 if it stopped cleanly. It prints on stdout:
 *   "ready pid=N"
 *   "rebalance assigned|revoked|lost P,P,... at=MS"   (the rebalance
 *                            callback; MS: CLOCK_MONOTONIC in ms)
 *   "restart N"             (the supervisor restarted the pipeline: the
 *                            source stage's actor changed; polled, so two
 *                            quick restarts may show as one)
 *   "commit error NAME"     (a commit failed; "commit ok": the first that
 *                            succeeded after errors)
 *   "stats ..."             (every 5 s: the source's and the sink's counters)
 *   "stopped restarts=N: <text>" or "FAILED ..."  at the end
 *
 * usage: chaos_worker --bootstrap B --in T --out T --group G
 *          [--max-unconfirmed U] [--commit-count C] [--assignor NAME]
 *          [--session-timeout-ms MS]
 */
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <rill/rill.h>

typedef struct worker {
    const char *out_topic;
} worker_t;

static volatile sig_atomic_t stop_signal;

static void on_signal(int sig)
{
    stop_signal = sig;
}

/* The transform: an input record into its output request. The request
 * stands for the input (the map stage carries the origin). */
static rill_err_t transform(void *opaque, rill_elem_t *in, rill_elem_t *out)
{
    const worker_t *w = opaque;
    const rd_kafka_message_t *m = rill_record(in);
    if (!m) {
        rill_elem_release(in);
        return RILL_EINVAL; /* not a record: cannot happen behind a Kafka source */
    }
    char value[128];
    int n = snprintf(value, sizeof(value), "%.*s src=%" PRId32 ":%" PRId64,
                     (int)(m->len < 64 ? m->len : 64), m->payload ? (const char *)m->payload : "",
                     m->partition, m->offset);
    rill_produce_t *p = rill_produce_new(w->out_topic, m->partition, m->key, m->key_len, value,
                                         (size_t)(n < (int)sizeof(value) ? n : 0));
    rill_elem_release(in);
    if (!p)
        return RILL_ENOMEM;
    *out = rill_produce_elem(p);
    return RILL_OK;
}

static void on_rebalance(void *opaque, rill_rebalance_event_t ev,
                         const rd_kafka_topic_partition_list_t *parts)
{
    (void)opaque;
    char list[256] = "-";
    size_t n = 0;
    for (int i = 0; i < parts->cnt && n + 12 < sizeof(list); i++)
        n += (size_t)snprintf(list + n, sizeof(list) - n, "%s%" PRId32, i ? "," : "",
                              parts->elems[i].partition);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    printf("rebalance %s %s at=%lld\n",
           ev == RILL_REBALANCE_ASSIGNED  ? "assigned"
           : ev == RILL_REBALANCE_REVOKED ? "revoked"
                                          : "lost",
           list, (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
    fflush(stdout);
}

/* A status line every 5 s: the source's and the sink's counters. */
static void print_stats(rill_system_t *sys, const rill_pipeline_t *p)
{
    rill_consumer_stats_t c;
    rill_producer_stats_t k;
    if (rill_consumer_stats(sys, rill_pipeline_stage(p, 0), &c) ||
        rill_producer_stats(sys, rill_pipeline_stage(p, 2), &k))
        return; /* between two runs */
    printf("stats polled=%" PRIu64 " emitted=%" PRIu64 " confirmed=%" PRIu64 " fenced=%" PRIu64
           " commits=%" PRIu64 " commit_errors=%" PRIu64 " rebalances=%" PRIu64
           " buffered=%u unconfirmed=%u assigned=%u paused=%d | produced=%" PRIu64
           " delivered=%" PRIu64 " failed=%" PRIu64 " inflight=%u\n",
           c.polled, c.emitted, c.confirmed, c.fenced, c.committed, c.commit_errors, c.rebalances,
           c.buffered, c.unconfirmed, c.assigned, c.paused, k.requested, k.delivered, k.failed,
           k.inflight);
    fflush(stdout);
}

/* Commit results: "commit error NAME" for every commit that failed,
 * "commit ok" for the first that succeeded after errors. Called on the
 * source's executor, one at a time. */
static void on_commit(void *opaque, rd_kafka_resp_err_t err,
                      const rd_kafka_topic_partition_list_t *offsets)
{
    rd_kafka_resp_err_t *last = opaque;
    for (int i = 0; !err && offsets && i < offsets->cnt; i++)
        err = offsets->elems[i].err;
    if (!err && !*last)
        return;
    *last = err;
    if (err)
        printf("commit error %s\n", rd_kafka_err2name(err));
    else
        printf("commit ok\n");
    fflush(stdout);
}

static void usage(void)
{
    fprintf(stderr, "usage: chaos_worker --bootstrap B --in T --out T --group G\n"
                    "         [--max-unconfirmed U] [--commit-count C] [--assignor NAME]\n"
                    "         [--session-timeout-ms MS]\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"bootstrap", required_argument, NULL, 'b'},
                                         {"in", required_argument, NULL, 'i'},
                                         {"out", required_argument, NULL, 'o'},
                                         {"group", required_argument, NULL, 'g'},
                                         {"max-unconfirmed", required_argument, NULL, 'u'},
                                         {"commit-count", required_argument, NULL, 'c'},
                                         {"assignor", required_argument, NULL, 'a'},
                                         {"session-timeout-ms", required_argument, NULL, 's'},
                                         {NULL, 0, NULL, 0}};
    const char *boot = NULL, *in = NULL, *group = NULL, *unconfirmed = "200", *commit_count = "50",
               *assignor = "range", *session_ms = "6000";
    worker_t w = {0};
    int opt;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 'b':
            boot = optarg;
            break;
        case 'i':
            in = optarg;
            break;
        case 'o':
            w.out_topic = optarg;
            break;
        case 'g':
            group = optarg;
            break;
        case 'u':
            unconfirmed = optarg;
            break;
        case 'c':
            commit_count = optarg;
            break;
        case 'a':
            assignor = optarg;
            break;
        case 's':
            session_ms = optarg;
            break;
        default:
            usage();
            return 2;
        }
    }
    if (!boot || !in || !w.out_topic || !group || optind < argc) {
        usage();
        return 2;
    }

    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    char err[512] = "";
    rill_system_t *sys = rill_system_new(NULL, err, sizeof(err));
    if (!sys || rill_system_start(sys)) {
        fprintf(stderr, "chaos_worker: system: %s\n", err);
        return 1;
    }

    /* The consumer. An eager assignor (range or roundrobin), not rill's
     * default cooperative-sticky: on librdkafka 2.0.2 the mock answers
     * cooperative rounds with ILLEGAL_GENERATION loops, and stopping a
     * member without an assignment aborts (librdkafka #4312). A short
     * session timeout moves a killed worker's partitions on in seconds. */
    const char *topics[] = {in};
    const char *ckv[] = {"bootstrap.servers",
                         boot,
                         "group.id",
                         group,
                         "auto.offset.reset",
                         "earliest",
                         "partition.assignment.strategy",
                         assignor,
                         "session.timeout.ms",
                         session_ms,
                         "heartbeat.interval.ms",
                         "500",
                         "rill.commit.interval.ms",
                         "200",
                         "rill.commit.count",
                         commit_count,
                         "rill.max.unconfirmed",
                         unconfirmed,
                         NULL};
    rill_consumer_conf_t *cc = rill_consumer_conf_new();
    rill_err_t e = cc ? RILL_OK : RILL_ENOMEM;
    for (int i = 0; !e && ckv[i]; i += 2)
        e = rill_consumer_conf_set(cc, ckv[i], ckv[i + 1], err, sizeof(err));
    /* RILL_CHAOS_DEBUG=cgrp,...: librdkafka's debug contexts for the
     * consumer, to see a group's comings and goings. */
    const char *debug = getenv("RILL_CHAOS_DEBUG");
    if (!e && debug && *debug)
        e = rill_consumer_conf_set(cc, "debug", debug, err, sizeof(err));
    if (!e)
        e = rill_consumer_conf_subscribe(cc, topics, 1, err, sizeof(err));
    if (!e)
        e = rill_consumer_conf_set_rebalance_cb(cc, on_rebalance, &w);
    static rd_kafka_resp_err_t last_commit = RD_KAFKA_RESP_ERR_NO_ERROR;
    if (!e)
        e = rill_consumer_conf_set_commit_cb(cc, on_commit, &last_commit);

    /* The producer. max.in.flight.requests.per.connection=1: the soak
     * injects Produce errors (REQUEST_TIMED_OUT among them), and with more
     * than one request in flight librdkafka's idempotent producer may
     * assume a failed batch was persisted because a later one succeeded
     * (IMPLICITACK), which the mock broker (it checks idempotent sequences
     * only for transactional producers) does not guarantee: the mock would
     * lose acknowledged records and the soak would blame rill. */
    rill_producer_conf_t *pc = rill_producer_conf_new();
    if (!pc && !e)
        e = RILL_ENOMEM;
    const char *pkv[] = {"bootstrap.servers",
                         boot,
                         "rill.topics",
                         w.out_topic,
                         "max.in.flight.requests.per.connection",
                         "1",
                         NULL};
    for (int i = 0; !e && pkv[i]; i += 2)
        e = rill_producer_conf_set(pc, pkv[i], pkv[i + 1], err, sizeof(err));
    if (e) {
        fprintf(stderr, "chaos_worker: configuration: %s\n", err);
        rill_consumer_conf_destroy(cc);
        rill_producer_conf_destroy(pc);
        return 2;
    }

    /* Faults fail stages now and then (a delivery that fails for good, a
     * fatal client error): many restarts are allowed, with the default
     * backoff. */
    rill_pipeline_t *p = rill_pipeline_new(sys, "chaos");
    rill_pipeline_add(p, rill_kafka_source(cc), NULL);
    rill_pipeline_add(p, rill_stage_map(transform, &w), NULL);
    rill_pipeline_add(p, rill_kafka_sink(pc), NULL);
    rill_restart_opts_t ro = {.max_restarts = 100, .within_ms = 60000};
    if (rill_pipeline_start_supervised(p, &ro, err, sizeof(err))) {
        fprintf(stderr, "chaos_worker: start: %s\n", err);
        rill_pipeline_destroy(p);
        return 1;
    }
    printf("ready pid=%d\n", (int)getpid());
    fflush(stdout);

    /* Run until a signal or the parent goes (EOF on stdin); watch for
     * restarts and for the pipeline ending by itself. */
    rill_aid_t src = rill_pipeline_stage(p, 0);
    unsigned restarts = 0;
    int ended = 0, ticks = 0;
    while (!stop_signal) {
        if (++ticks % 50 == 0)
            print_stats(sys, p);
        struct pollfd pfd = {.fd = 0, .events = POLLIN};
        if (poll(&pfd, 1, 100) > 0) {
            char buf[256];
            if (read(0, buf, sizeof(buf)) <= 0)
                break; /* the parent is gone */
        }
        rill_aid_t now = rill_pipeline_stage(p, 0);
        if (!rill_aid_is_none(now) && !rill_aid_eq(now, src)) {
            if (!rill_aid_is_none(src)) { /* not the first run's start */
                printf("restart %u\n", ++restarts);
                fflush(stdout);
            }
            src = now;
        }
        rill_pipeline_result_t res;
        if (rill_pipeline_wait(p, 0, &res) == RILL_OK) {
            printf("FAILED: the pipeline ended by itself after %u restart(s): %s\n", res.restarts,
                   res.text);
            ended = 1;
            break;
        }
    }

    rill_pipeline_result_t res = {0};
    int ok = !ended;
    if (!ended) {
        rill_pipeline_stop(p);
        ok = rill_pipeline_wait(p, 20000, &res) == RILL_OK && res.end == RILL_PIPELINE_STOPPED;
        printf("%s restarts=%u: %s\n", ok ? "stopped" : "FAILED to stop", res.restarts,
               res.end ? res.text : "did not stop in 20 s");
    }
    if (res.end || ended)
        rill_pipeline_destroy(p);
    ok = rill_system_stop(sys, 20000) == RILL_OK && ok;
    rill_system_destroy(sys);
    fflush(stdout);
    return ok ? 0 : 1;
}
