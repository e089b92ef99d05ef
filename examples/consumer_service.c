/*
 * consumer_service: a scala-kafka-client style service in one page.
 *
 *   a pipeline under a supervisor of its own (rill_pipeline_start_supervised)
 *   ├── kafka-source  the Kafka consumer (group subscription)
 *   └── sink          processes each record; RILL_OK confirms it
 *
 * The processing fails on every Nth record it sees (--fail-every). The
 * failure ends the pipeline's run: the source stops, waits for what is in
 * flight, commits what was confirmed, and keeps its client (still in the
 * group) for the next run, which the supervisor starts after a backoff;
 * it resumes at the first record not confirmed, so the record that failed,
 * and everything not confirmed after it, is delivered again. Nothing is
 * lost; some records are processed twice. The summary at the end checks
 * exactly that against the topic.
 *
 * Logging: the service's own lines, rill's and librdkafka's all reach one
 * hook (rill_log_set), which writes each as one JSON object per line on
 * stderr, {"ts":...,"level":...,"facility":...,"msg":...}, because log
 * shippers (Fluent Bit, Vector, Promtail, ...) parse JSON lines without a
 * pattern per format. --log-level (or RILL_LOG_LEVEL) sets the least
 * severe level written (default warning; notice shows the start line).
 *
 * usage: consumer_service [--count N] [--fail-every N] [--partitions P]
 *                         [--bootstrap SERVERS] [--topic NAME] [--group ID]
 *                         [--log-level LEVEL]
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

typedef struct service {
    const char *bootstraps, *topic, *group;
    uint64_t count, fail_every;
    _Atomic uint64_t processed; /* every processing, redeliveries included */
    _Atomic uint32_t *seen;     /* times each record was processed */
    _Atomic uint64_t failures;
} service_t;

/* Generated records carry their sequence number: "seq=<n> ...". */
static int64_t record_seq(const rd_kafka_message_t *m)
{
    if (!m->payload || m->len < 5 || memcmp(m->payload, "seq=", 4))
        return -1;
    return strtoll((const char *)m->payload + 4, NULL, 10);
}

/* ---- logging: one JSON object per line, on stderr ---- */

static void json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

/* The hook: called on whichever thread logs, so the line is written under
 * stderr's lock, whole. */
static void log_json(void *opaque, rill_log_level_t level, const char *facility, const char *msg)
{
    (void)opaque;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct tm tm;
    gmtime_r(&now.tv_sec, &tm);
    char ts[32];
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    flockfile(stderr);
    fprintf(stderr, "{\"ts\":\"%s.%03ldZ\",\"level\":\"%s\",\"facility\":", ts,
            now.tv_nsec / 1000000, rill_log_level_name(level));
    json_string(stderr, facility);
    fputs(",\"msg\":", stderr);
    json_string(stderr, msg);
    fputs("}\n", stderr);
    funlockfile(stderr);
}

/* ---- the processing: RILL_OK confirms the record ---- */

static rill_err_t process(void *opaque, rill_elem_t *e)
{
    service_t *svc = opaque;
    const rd_kafka_message_t *m = rill_record(e);
    uint64_t n = atomic_fetch_add(&svc->processed, 1) + 1;
    int64_t seq = m ? record_seq(m) : -1;
    rill_elem_release(e); /* the payload; the record's confirm is rill's */
    if (svc->fail_every && n % svc->fail_every == 0) {
        /* A processing failure: not confirmed, so it will come again. */
        atomic_fetch_add(&svc->failures, 1);
        rill_log(RILL_LOG_WARNING, "consumer_service", "record seq=%" PRId64 " failed", seq);
        return RILL_EIO;
    }
    if (seq >= 0 && (uint64_t)seq < svc->count)
        atomic_fetch_add(&svc->seen[seq], 1);
    return RILL_OK;
}

/* ---- the service: consumer -> processing, supervised ---- */

static rill_pipeline_t *start_service(rill_system_t *sys, service_t *svc, char *err,
                                      size_t err_size)
{
    rill_consumer_conf_t *c = rill_consumer_conf_new();
    const char *topics[] = {svc->topic};
    if (rill_consumer_conf_set(c, "bootstrap.servers", svc->bootstraps, err, err_size) ||
        rill_consumer_conf_set(c, "group.id", svc->group, err, err_size) ||
        rill_consumer_conf_set(c, "auto.offset.reset", "earliest", err, err_size) ||
        rill_consumer_conf_subscribe(c, topics, 1, err, err_size)) {
        rill_consumer_conf_destroy(c);
        return NULL;
    }
    rill_pipeline_t *p = rill_pipeline_new(sys, "order-service");
    rill_pipeline_add(p, rill_kafka_source(c), NULL);
    rill_pipeline_add(p, rill_sink_foreach(process, svc), NULL);
    rill_restart_opts_t restarts = {.max_restarts = 20, .backoff = {.min_ms = 100, .max_ms = 1000}};
    if (rill_pipeline_start_supervised(p, &restarts, err, err_size)) {
        rill_pipeline_destroy(p);
        return NULL;
    }
    return p;
}

/* ---- main ---- */

static uint64_t distinct_seen(service_t *svc)
{
    uint64_t d = 0;
    for (uint64_t i = 0; i < svc->count; i++)
        d += atomic_load(&svc->seen[i]) > 0;
    return d;
}

int main(int argc, char **argv)
{
    rill_log_set(log_json, NULL); /* first: every line from here on is JSON */
    const char *log_level = getenv("RILL_LOG_LEVEL");
    service_t svc = {
        .count = 20000, .fail_every = 4000, .topic = "orders", .group = "order-service"};
    int partitions = 4;
    static const struct option opts[] = {
        {"count", required_argument, NULL, 'n'},      {"fail-every", required_argument, NULL, 'f'},
        {"partitions", required_argument, NULL, 'p'}, {"bootstrap", required_argument, NULL, 'b'},
        {"topic", required_argument, NULL, 't'},      {"group", required_argument, NULL, 'g'},
        {"log-level", required_argument, NULL, 'l'},  {NULL, 0, NULL, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "n:f:p:b:t:g:l:", opts, NULL)) != -1) {
        switch (opt) {
        case 'n':
            svc.count = strtoull(optarg, NULL, 10);
            break;
        case 'f':
            svc.fail_every = strtoull(optarg, NULL, 10);
            break;
        case 'p':
            partitions = atoi(optarg);
            break;
        case 'b':
            svc.bootstraps = optarg;
            break;
        case 't':
            svc.topic = optarg;
            break;
        case 'g':
            svc.group = optarg;
            break;
        case 'l':
            log_level = optarg;
            break;
        default:
            fprintf(stderr, "usage: consumer_service [--count N] [--fail-every N] "
                            "[--partitions P] [--bootstrap SERVERS] [--topic T] [--group G] "
                            "[--log-level LEVEL]\n");
            return 2;
        }
    }
    if (svc.count == 0 || partitions < 1) {
        fprintf(stderr, "consumer_service: --count and --partitions must be positive\n");
        return 2;
    }
    if (log_level) {
        int l = RILL_LOG_EMERG;
        while (l <= RILL_LOG_DEBUG && strcmp(log_level, rill_log_level_name((rill_log_level_t)l)))
            l++;
        if (l > RILL_LOG_DEBUG) {
            fprintf(stderr, "consumer_service: log level: emerg, alert, crit, error, warning, "
                            "notice, info or debug\n");
            return 2;
        }
        rill_log_set_level((rill_log_level_t)l);
    }
    svc.seen = calloc(svc.count, sizeof(*svc.seen));
    char err[512];
    rill_broker_t *broker = NULL;
    if (!svc.bootstraps) {
        broker = rill_broker_new(1, err, sizeof(err));
        if (!broker ||
            rill_broker_create_topic(broker, svc.topic, partitions, 1, err, sizeof(err))) {
            rill_log(RILL_LOG_ERR, "consumer_service", "embedded broker: %s", err);
            return 1;
        }
        svc.bootstraps = rill_broker_bootstraps(broker);
        printf("embedded broker at %s\n", svc.bootstraps);
    }
    printf("producing %" PRIu64 " records to %s\n", svc.count, svc.topic);
    rill_testkit_opts_t popts = {.timeout_ms = 120000};
    if (rill_testkit_produce_generated(svc.bootstraps, svc.topic, svc.count, NULL, &popts, err,
                                       sizeof(err))) {
        rill_log(RILL_LOG_ERR, "consumer_service", "produce: %s", err);
        return 1;
    }

    rill_system_t *sys = rill_system_new(NULL, err, sizeof(err));
    if (!sys || rill_system_start(sys)) {
        rill_log(RILL_LOG_ERR, "consumer_service", "system: %s", err);
        return 1;
    }
    rill_pipeline_t *service = start_service(sys, &svc, err, sizeof(err));
    if (!service) {
        rill_log(RILL_LOG_ERR, "consumer_service", "service: %s", err);
        return 1;
    }
    rill_log(RILL_LOG_NOTICE, "consumer_service", "consuming %s as group %s from %s", svc.topic,
             svc.group, svc.bootstraps);
    printf("consumer -> processing, supervised; the processing fails on every %" PRIu64
           "th record\n",
           svc.fail_every);
    printf("%4s %10s %10s %9s\n", "s", "processed", "distinct", "failures");
    uint64_t distinct = 0;
    for (int t = 1; t <= 120 && distinct < svc.count; t++) {
        sleep(1); /* pacing the report */
        distinct = distinct_seen(&svc);
        printf("%4d %10" PRIu64 " %10" PRIu64 " %9" PRIu64 "\n", t, atomic_load(&svc.processed),
               distinct, atomic_load(&svc.failures));
        fflush(stdout);
    }
    /* Stop: what is in flight is processed and committed first. */
    rill_pipeline_result_t res;
    rill_pipeline_stop(service);
    if (rill_pipeline_wait(service, 30000, &res) != RILL_OK) {
        /* Still running: destroying it would wait for it forever. */
        printf("FAILED: the service did not stop within 30 s\n");
        fflush(stdout);
        _exit(1);
    }
    rill_pipeline_destroy(service);
    uint32_t total_restarts = res.restarts;
    if (rill_system_stop(sys, 10000) != RILL_OK) {
        /* An actor is still running: the system must not be destroyed
         * (rill_system_stop's contract); the process ends instead. */
        printf("FAILED: the system did not stop within 10 s\n");
        fflush(stdout);
        _exit(1);
    }
    rill_system_destroy(sys);

    /* What the group committed, against the end of the topic. */
    rd_kafka_conf_t *kc = rd_kafka_conf_new();
    rd_kafka_conf_set(kc, "bootstrap.servers", svc.bootstraps, NULL, 0);
    rd_kafka_conf_set(kc, "group.id", svc.group, NULL, 0);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, kc, err, sizeof(err));
    int64_t committed = 0, end = 0;
    if (rk) {
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(partitions);
        for (int i = 0; i < partitions; i++)
            rd_kafka_topic_partition_list_add(l, svc.topic, i);
        rd_kafka_committed(rk, l, 10000);
        for (int i = 0; i < partitions; i++) {
            int64_t lo, hi;
            if (l->elems[i].offset > 0)
                committed += l->elems[i].offset;
            if (!rd_kafka_query_watermark_offsets(rk, svc.topic, i, &lo, &hi, 10000))
                end += hi;
        }
        rd_kafka_topic_partition_list_destroy(l);
        rd_kafka_destroy(rk);
    }
    uint64_t processed = atomic_load(&svc.processed), dups = 0;
    for (uint64_t i = 0; i < svc.count; i++)
        if (atomic_load(&svc.seen[i]) > 1)
            dups += atomic_load(&svc.seen[i]) - 1;
    distinct = distinct_seen(&svc);
    printf("\nsummary\n");
    printf("  records in the topic           %" PRIu64 "\n", svc.count);
    printf("  processed at least once        %" PRIu64 "\n", distinct);
    printf("  processed again (redelivered)  %" PRIu64 "\n", dups);
    printf("  processing failures            %" PRIu64 ", supervisor restarts %u\n",
           atomic_load(&svc.failures), total_restarts);
    printf("  processings in all             %" PRIu64 "\n", processed);
    printf("  committed offsets              %" PRId64 " of %" PRId64 "\n", committed, end);
    int ok = distinct == svc.count && committed == end;
    printf("  %s\n", ok ? "OK: every record was processed at least once and committed"
                        : "FAILED: records were not all processed or committed");
    free(svc.seen);
    rill_broker_destroy(broker);
    return ok ? 0 : 1;
}
