/*
 * keep_latest: full-state messages under a consumer slower than the
 * producer (the William Hill pattern). Each message carries an entity's
 * whole state, so only the newest per key matters: a per-key keep-latest
 * stage between the source and a slow sink lets the sink skip the states
 * that were already replaced, and latency stays bounded however far the
 * producer runs ahead.
 *
 *   producer thread   K keys, full-state messages at --rate a second for
 *                     --seconds; value "<key> <version> <produce time us>"
 *   kafka-source      "entities", every partition (manual assignment,
 *                     offsets committed to group "keep-latest")
 *   conflate_by_key   keep-latest per record key: a state replaced before
 *                     the sink asked for it is dropped, and confirmed
 *   slow sink         --sink-us per message (1 ms by default)
 *
 * The verified summary: for every key the last version produced is the
 * last one the sink saw, the versions the sink saw per key strictly
 * increase, the group's committed offsets (read with a plain librdkafka
 * consumer) are the end offsets, and the sink handled far fewer messages
 * than were produced. End-to-end latency (produce time to the sink) is
 * printed as p50/p99/max against a 1 s SLA; that verdict is reported
 * honestly but is not one of the correctness checks.
 *
 * usage: keep_latest [--keys K] [--rate R] [--seconds S] [--sink-us U]
 *                    [--partitions P] [--bootstrap SERVERS] [--timeout S]
 * With --bootstrap, the topic "entities" must exist with P partitions and be
 * empty: versions start at 1 in every run.
 */
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <rill/rill.h>
#include <rill/testkit.h>

#define TOPIC  "entities"
#define GROUP  "keep-latest"
#define SLA_US 1000000

typedef struct run {
    long keys, rate, seconds, sink_us, parts;
    const char *boot;
    /* producer thread */
    int64_t *produced_version; /* per key: the last version produced */
    _Atomic uint64_t produced, delivery_errors;
    /* the sink (one executor), read by main while it runs: atomics */
    _Atomic int64_t *seen_version; /* per key: the last version the sink saw */
    _Atomic uint64_t handled, regressions;
    int64_t *lat_us; /* the sink's own until the pipeline ended */
    size_t n_lat, cap_lat;
} run_t;

static int64_t wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ---- the slow sink: the whole of the processing ---- */

static rill_err_t slow_sink(void *opaque, rill_elem_t *e)
{
    run_t *r = opaque;
    const rd_kafka_message_t *m = rill_record(e);
    char text[80] = "";
    long long key = -1, version = 0, produced_us = 0;
    if (m && m->len < sizeof(text))
        memcpy(text, m->payload, m->len);
    if (sscanf(text, "%lld %lld %lld", &key, &version, &produced_us) == 3 && key >= 0 &&
        key < r->keys) {
        /* The sink alone writes seen_version: relaxed is enough. */
        int64_t prev = atomic_load_explicit(&r->seen_version[key], memory_order_relaxed);
        if (version <= prev)
            atomic_fetch_add(&r->regressions, 1);
        atomic_store_explicit(&r->seen_version[key], version, memory_order_relaxed);
        int64_t *v = r->n_lat < r->cap_lat ? r->lat_us : NULL;
        if (!v && (v = realloc(r->lat_us, (r->cap_lat = r->cap_lat * 2 + 1024) * sizeof(*v))))
            r->lat_us = v;
        if (v)
            r->lat_us[r->n_lat++] = wall_us() - produced_us;
    }
    struct timespec ts = {r->sink_us / 1000000, (r->sink_us % 1000000) * 1000};
    nanosleep(&ts, NULL); /* the slow part of the system under demonstration */
    rill_elem_release(e);
    atomic_fetch_add(&r->handled, 1);
    return RILL_OK;
}

/* ---- the producer: full states, faster than the sink ---- */

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    run_t *r = opaque;
    (void)rk;
    if (m->err)
        atomic_fetch_add(&r->delivery_errors, 1);
}

static void *produce(void *arg)
{
    run_t *r = arg;
    char err[256], key[32], value[80];
    rd_kafka_conf_t *kc = rd_kafka_conf_new();
    rd_kafka_conf_set(kc, "bootstrap.servers", r->boot, err, sizeof(err));
    rd_kafka_conf_set(kc, "enable.idempotence", "true", err, sizeof(err)); /* keeps key order */
    rd_kafka_conf_set(kc, "linger.ms", "2", err, sizeof(err));
    rd_kafka_conf_set_opaque(kc, r);
    rd_kafka_conf_set_dr_msg_cb(kc, on_delivery);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, kc, err, sizeof(err));
    if (!rk) {
        rill_log(RILL_LOG_ERR, "keep_latest", "producer: %s", err);
        atomic_fetch_add(&r->delivery_errors, 1);
        return NULL;
    }
    int64_t start = wall_us(), end = start + (int64_t)r->seconds * 1000000;
    uint64_t sent = 0;
    for (long k = 0;;) {
        int64_t now = wall_us();
        if (now >= end)
            break;
        uint64_t due = (uint64_t)((now - start) * r->rate / 1000000) + 1;
        for (; sent < due; sent++, k = (k + 1) % r->keys) {
            int64_t version = ++r->produced_version[k];
            snprintf(key, sizeof(key), "entity-%04ld", k);
            int n =
                snprintf(value, sizeof(value), "%ld %" PRId64 " %" PRId64, k, version, wall_us());
            while (rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(TOPIC), RD_KAFKA_V_KEY(key, strlen(key)),
                                     RD_KAFKA_V_VALUE(value, (size_t)n),
                                     RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                     RD_KAFKA_V_END) == RD_KAFKA_RESP_ERR__QUEUE_FULL)
                rd_kafka_poll(rk, 10);
        }
        rd_kafka_poll(rk, 1); /* delivery reports; and ~1 ms of pacing */
    }
    if (rd_kafka_flush(rk, 30000) != RD_KAFKA_RESP_ERR_NO_ERROR)
        atomic_fetch_add(&r->delivery_errors, 1);
    atomic_store(&r->produced, sent);
    rd_kafka_destroy(rk);
    return NULL;
}

/* ---- the checks ---- */

static int all_seen(run_t *r)
{
    for (long k = 0; k < r->keys; k++)
        if (atomic_load(&r->seen_version[k]) != r->produced_version[k])
            return 0;
    return 1;
}

/* The group's committed offsets and the end offsets, per partition: the
 * number of partitions where they differ, or -1 if they cannot be read. */
static int committed_behind(run_t *r, int64_t *sum_committed, int64_t *sum_end)
{
    char err[256];
    rd_kafka_conf_t *kc = rd_kafka_conf_new();
    rd_kafka_conf_set(kc, "bootstrap.servers", r->boot, err, sizeof(err));
    rd_kafka_conf_set(kc, "group.id", GROUP, err, sizeof(err));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, kc, err, sizeof(err));
    if (!rk)
        return -1;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)r->parts);
    for (int p = 0; p < r->parts; p++)
        rd_kafka_topic_partition_list_add(l, TOPIC, p);
    int behind = rd_kafka_committed(rk, l, 10000) ? -1 : 0;
    *sum_committed = *sum_end = 0;
    for (int p = 0; behind >= 0 && p < r->parts; p++) {
        int64_t lo, hi;
        if (rd_kafka_query_watermark_offsets(rk, TOPIC, p, &lo, &hi, 10000) || l->elems[p].err) {
            behind = -1;
            break;
        }
        *sum_committed += l->elems[p].offset > 0 ? l->elems[p].offset : 0;
        *sum_end += hi;
        behind += l->elems[p].offset != hi;
    }
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_destroy(rk);
    return behind;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int64_t pct(const int64_t *v, size_t n, double q)
{
    return n ? v[(size_t)(q * (double)(n - 1))] : 0;
}

int main(int argc, char **argv)
{
    run_t r = {.keys = 100, .rate = 20000, .seconds = 3, .sink_us = 1000, .parts = 4};
    long timeout_s = 60;
    static const struct option opts[] = {
        {"keys", required_argument, NULL, 'k'},       {"rate", required_argument, NULL, 'r'},
        {"seconds", required_argument, NULL, 's'},    {"sink-us", required_argument, NULL, 'u'},
        {"partitions", required_argument, NULL, 'p'}, {"bootstrap", required_argument, NULL, 'b'},
        {"timeout", required_argument, NULL, 't'},    {NULL, 0, NULL, 0}};
    for (int c; (c = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        long v = optarg ? atol(optarg) : 0;
        switch (c) {
        case 'k':
            r.keys = v;
            break;
        case 'r':
            r.rate = v;
            break;
        case 's':
            r.seconds = v;
            break;
        case 'u':
            r.sink_us = v;
            break;
        case 'p':
            r.parts = v;
            break;
        case 'b':
            r.boot = optarg;
            break;
        case 't':
            timeout_s = v;
            break;
        default:
            fprintf(stderr, "usage: keep_latest [--keys K] [--rate R] [--seconds S] [--sink-us U] "
                            "[--partitions P] [--bootstrap SERVERS] [--timeout S]\n");
            return 2;
        }
    }
    if (r.keys < 1 || r.keys > 9999 || r.rate < 1 || r.seconds < 1 || r.sink_us < 0 ||
        r.parts < 1 || r.parts > 64 || timeout_s < 1) {
        fprintf(stderr, "keep_latest: bad arguments\n");
        return 2;
    }
    char err[512];
    rill_broker_t *broker = NULL;
    if (!r.boot) {
        if (!(broker = rill_broker_new(1, err, sizeof(err))) ||
            rill_broker_create_topic(broker, TOPIC, (int)r.parts, 1, err, sizeof(err))) {
            rill_log(RILL_LOG_ERR, "keep_latest", "embedded broker: %s", err);
            return 1;
        }
        r.boot = rill_broker_bootstraps(broker);
        printf("embedded broker at %s\n", r.boot);
    }
    r.produced_version = calloc((size_t)r.keys, sizeof(*r.produced_version));
    r.seen_version = calloc((size_t)r.keys, sizeof(*r.seen_version));
    if (!r.produced_version || !r.seen_version)
        return 1;

    /* The service: source -> keep-latest per key -> slow sink, the sink on
     * an executor of its own so that conflation goes on while it sleeps. */
    rill_system_opts_t sopts = {.executors = 2};
    rill_system_t *sys = rill_system_new(&sopts, err, sizeof(err));
    if (!sys || rill_system_start(sys))
        return 1;
    rill_consumer_conf_t *cc = rill_consumer_conf_new();
    int bad = rill_consumer_conf_set(cc, "bootstrap.servers", r.boot, err, sizeof(err)) ||
              rill_consumer_conf_set(cc, "group.id", GROUP, err, sizeof(err));
    for (int p = 0; !bad && p < r.parts; p++)
        bad = rill_consumer_conf_assign(cc, TOPIC, p, RILL_OFFSET_BEGINNING, err, sizeof(err));
    if (bad) {
        rill_log(RILL_LOG_ERR, "keep_latest", "consumer: %s", err);
        return 1;
    }
    rill_pipeline_t *p = rill_pipeline_new(sys, "keep-latest");
    rill_stage_opts_t first = {.executor = RILL_EXECUTOR(0)}, sink = {.executor = RILL_EXECUTOR(1)};
    rill_pipeline_add(p, rill_kafka_source(cc), &first);
    rill_pipeline_add(p, rill_stage_conflate_by_key(rill_record_key_hash, NULL, 2 * (size_t)r.keys),
                      &first);
    rill_pipeline_add(p, rill_sink_foreach(slow_sink, &r), &sink);
    if (rill_pipeline_start(p, err, sizeof(err))) {
        rill_log(RILL_LOG_ERR, "keep_latest", "start: %s", err);
        return 1;
    }
    printf("producing %ld keys at %ld/s for %ld s; the sink takes %ld us a message\n", r.keys,
           r.rate, r.seconds, r.sink_us);
    fflush(stdout);
    pthread_t producer;
    if (pthread_create(&producer, NULL, produce, &r))
        return 1;
    pthread_join(producer, NULL);

    /* Until the sink saw the last version of every key. */
    int64_t deadline = wall_us() + (int64_t)timeout_s * 1000000;
    while (!all_seen(&r) && wall_us() < deadline) {
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL); /* pacing the checks */
    }
    rill_pipeline_result_t res;
    rill_pipeline_stop(p); /* drains: what was confirmed is committed */
    if (rill_pipeline_wait(p, 30000, &res)) {
        printf("  FAILED: the pipeline did not stop\n");
        fflush(stdout);
        _exit(1);
    }
    rill_pipeline_destroy(p);
    if (rill_system_stop(sys, 10000)) {
        printf("  FAILED: the system did not stop\n");
        fflush(stdout);
        _exit(1);
    }
    rill_system_destroy(sys);

    /* The checks. */
    long lost = 0;
    for (long k = 0; k < r.keys; k++)
        lost += atomic_load(&r.seen_version[k]) != r.produced_version[k];
    int64_t committed = 0, end = 0;
    int behind = committed_behind(&r, &committed, &end);
    uint64_t produced = atomic_load(&r.produced), handled = atomic_load(&r.handled);
    uint64_t regressions = atomic_load(&r.regressions), failed = atomic_load(&r.delivery_errors);
    qsort(r.lat_us, r.n_lat, sizeof(*r.lat_us), cmp_i64);
    int64_t p50 = pct(r.lat_us, r.n_lat, 0.50), p99 = pct(r.lat_us, r.n_lat, 0.99);
    int64_t max = r.n_lat ? r.lat_us[r.n_lat - 1] : 0;
    printf("\nsummary\n");
    printf("  produced                      %" PRIu64 " states of %ld keys (%" PRIu64
           " delivery failures)\n",
           produced, r.keys, failed);
    printf("  handled by the sink           %" PRIu64 " (%.1f%%; the rest were replaced while "
           "waiting)\n",
           handled, produced ? 100.0 * (double)handled / (double)produced : 0.0);
    printf("  last versions missed          %ld of %ld keys\n", lost, r.keys);
    printf("  versions seen out of order    %" PRIu64 "\n", regressions);
    printf("  committed offsets             %" PRId64 " of end offsets %" PRId64
           " (%d partitions behind)\n",
           committed, end, behind);
    printf("  end-to-end latency            p50 %.1f ms, p99 %.1f ms, max %.1f ms: SLA (p99 <= "
           "1 s) %s\n",
           (double)p50 / 1000.0, (double)p99 / 1000.0, (double)max / 1000.0,
           p99 <= SLA_US ? "met" : "missed");
    int ok = produced > 0 && failed == 0 && lost == 0 && regressions == 0 && behind == 0 &&
             committed == end && handled * 2 < produced && res.end == RILL_PIPELINE_STOPPED;
    if (ok)
        printf("  OK: the sink ended on the newest state of all %ld keys, in order, %" PRIu64
               " of %" PRIu64 " states conflated away, every offset committed\n",
               r.keys, produced - handled, produced);
    else
        printf("  FAILED: %ld keys lost their last state, %" PRIu64 " out of order, %d partitions "
               "uncommitted, %" PRIu64 " handled of %" PRIu64 ", %" PRIu64
               " delivery failures, pipeline %s\n",
               lost, regressions, behind, handled, produced, failed,
               res.end == RILL_PIPELINE_STOPPED ? "stopped" : res.text);
    free(r.lat_us);
    free(r.produced_version);
    free((void *)r.seen_version);
    rill_broker_destroy(broker);
    return ok ? 0 : 1;
}
