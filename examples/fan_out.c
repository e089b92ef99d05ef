/*
 * fan_out: one topic, two consumer groups reading it independently.
 *
 *   topic "payments" --> pipeline "audit":   kafka source (group audit)   -> audit sink
 *                    \-> pipeline "billing": kafka source (group billing) -> billing sink
 *
 * Kafka keeps one committed position per group, so each group sees every
 * record whatever the other does: the billing sink is deliberately slower
 * (--billing-us), and the audit group still gets everything at its own
 * pace. Each group is a pipeline of its own, supervised; a record is
 * confirmed when its group's sink returns RILL_OK, so each group commits
 * its own offsets. The summary checks that both groups processed every
 * record and that both committed up to the end of every partition.
 *
 * usage: fan_out [--count N] [--partitions P] [--billing-us US]
 *                [--bootstrap SERVERS] [--topic NAME]
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <rill/rill.h>
#include <rill/testkit.h>

typedef struct group {
    const char *name;
    const char *bootstraps, *topic;
    uint64_t count; /* records in the topic */
    long work_us;   /* pretend work per record */
    rill_pipeline_t *pipeline;
    _Atomic uint64_t processed;
    _Atomic uint8_t *seen; /* by seq */
    _Atomic uint64_t distinct;
    int64_t committed, end;
} group_t;

static int64_t record_seq(const rd_kafka_message_t *m)
{
    if (!m->payload || m->len < 5 || memcmp(m->payload, "seq=", 4))
        return -1;
    return strtoll((const char *)m->payload + 4, NULL, 10);
}

/* Both groups' sink: process; RILL_OK confirms the record to its group. */
static rill_err_t process(void *opaque, rill_elem_t *e)
{
    group_t *g = opaque;
    const rd_kafka_message_t *m = rill_record(e);
    if (g->work_us) {
        struct timespec ts = {0, g->work_us * 1000};
        nanosleep(&ts, NULL); /* the work */
    }
    int64_t seq = m ? record_seq(m) : -1;
    if (seq >= 0 && (uint64_t)seq < g->count && atomic_fetch_add(&g->seen[seq], 1) == 0)
        atomic_fetch_add(&g->distinct, 1);
    atomic_fetch_add(&g->processed, 1);
    rill_elem_release(e); /* the payload; the record's confirm is rill's */
    return RILL_OK;
}

/* A group: its Kafka source -> its sink, supervised. */
static rill_err_t group_start(rill_system_t *sys, group_t *g, char *err, size_t err_size)
{
    rill_consumer_conf_t *c = rill_consumer_conf_new();
    const char *topics[] = {g->topic};
    if (rill_consumer_conf_set(c, "bootstrap.servers", g->bootstraps, err, err_size) ||
        rill_consumer_conf_set(c, "group.id", g->name, err, err_size) ||
        rill_consumer_conf_set(c, "auto.offset.reset", "earliest", err, err_size) ||
        rill_consumer_conf_set(c, "rill.commit.interval.ms", "200", err, err_size) ||
        rill_consumer_conf_subscribe(c, topics, 1, err, err_size)) {
        rill_consumer_conf_destroy(c);
        return RILL_EINVAL;
    }
    g->pipeline = rill_pipeline_new(sys, g->name);
    rill_pipeline_add(g->pipeline, rill_kafka_source(c), NULL);
    rill_pipeline_add(g->pipeline, rill_sink_foreach(process, g), NULL);
    rill_err_t e = rill_pipeline_start_supervised(g->pipeline, NULL, err, err_size);
    if (e) {
        rill_pipeline_destroy(g->pipeline);
        g->pipeline = NULL;
    }
    return e;
}

/* The group's committed offsets and the topic's end offsets, summed. */
static void group_offsets(group_t *g)
{
    char err[512];
    const char *topic = g->topic;
    rd_kafka_conf_t *kc = rd_kafka_conf_new();
    rd_kafka_conf_set(kc, "bootstrap.servers", g->bootstraps, NULL, 0);
    rd_kafka_conf_set(kc, "group.id", g->name, NULL, 0);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, kc, err, sizeof(err));
    g->committed = g->end = -1;
    if (!rk)
        return;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    if (!rd_kafka_metadata(rk, 0, rkt, &md, 10000) && md->topic_cnt == 1 && !md->topics[0].err) {
        int n = md->topics[0].partition_cnt;
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(n);
        for (int p = 0; p < n; p++)
            rd_kafka_topic_partition_list_add(l, topic, p);
        if (!rd_kafka_committed(rk, l, 10000)) {
            g->committed = g->end = 0;
            for (int p = 0; p < n; p++) {
                int64_t lo, hi;
                if (l->elems[p].offset > 0)
                    g->committed += l->elems[p].offset;
                if (!rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi, 10000))
                    g->end += hi;
            }
        }
        rd_kafka_topic_partition_list_destroy(l);
    }
    if (md)
        rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    rd_kafka_destroy(rk);
}

int main(int argc, char **argv)
{
    const char *bootstraps = NULL, *topic = "payments";
    uint64_t count = 20000;
    int partitions = 4;
    long billing_us = 50;
    char topic_buf[128];
    static const struct option opts[] = {
        {"count", required_argument, NULL, 'n'},      {"partitions", required_argument, NULL, 'p'},
        {"billing-us", required_argument, NULL, 'u'}, {"bootstrap", required_argument, NULL, 'b'},
        {"topic", required_argument, NULL, 't'},      {NULL, 0, NULL, 0}};
    int opt, topic_given = 0;
    while ((opt = getopt_long(argc, argv, "n:p:u:b:t:", opts, NULL)) != -1) {
        switch (opt) {
        case 'n':
            count = strtoull(optarg, NULL, 10);
            break;
        case 'p':
            partitions = atoi(optarg);
            break;
        case 'u':
            billing_us = atol(optarg);
            break;
        case 'b':
            bootstraps = optarg;
            break;
        case 't':
            topic = optarg;
            topic_given = 1;
            break;
        default:
            fprintf(stderr, "usage: fan_out [--count N] [--partitions P] [--billing-us US] "
                            "[--bootstrap SERVERS] [--topic NAME]\n");
            return 2;
        }
    }
    if (!count || partitions < 1 || billing_us < 0 || billing_us > 999999) {
        fprintf(stderr, "fan_out: --count and --partitions must be positive\n");
        return 2;
    }
    char err[512];
    rill_broker_t *broker = NULL;
    if (!bootstraps) {
        broker = rill_broker_new(1, err, sizeof(err));
        if (!broker || rill_broker_create_topic(broker, topic, partitions, 1, err, sizeof(err))) {
            rill_log(RILL_LOG_ERR, "fan_out", "embedded broker: %s", err);
            return 1;
        }
        bootstraps = rill_broker_bootstraps(broker);
        printf("embedded broker at %s\n", bootstraps);
    } else if (!topic_given) {
        /* A fresh topic per run: the groups' commits start from nothing. */
        snprintf(topic_buf, sizeof(topic_buf), "payments-%d", (int)getpid());
        topic = topic_buf;
    }
    printf("producing %" PRIu64 " records to %s\n", count, topic);
    rill_testkit_opts_t popts = {.timeout_ms = 120000};
    if (rill_testkit_produce_generated(bootstraps, topic, count, NULL, &popts, err, sizeof(err))) {
        rill_log(RILL_LOG_ERR, "fan_out", "produce: %s", err);
        return 1;
    }

    rill_system_t *sys = rill_system_new(NULL, err, sizeof(err));
    if (!sys || rill_system_start(sys)) {
        rill_log(RILL_LOG_ERR, "fan_out", "system: %s", err);
        return 1;
    }
    group_t groups[2] = {{.name = "audit"}, {.name = "billing", .work_us = billing_us}};
    for (int i = 0; i < 2; i++) {
        group_t *g = &groups[i];
        g->bootstraps = bootstraps;
        g->topic = topic;
        g->count = count;
        g->seen = calloc(count, sizeof(*g->seen));
        if (!g->seen || group_start(sys, g, err, sizeof(err))) {
            rill_log(RILL_LOG_ERR, "fan_out", "group %s: %s", g->name,
                     g->seen ? err : "out of memory");
            return 1;
        }
    }
    printf("groups audit and billing subscribed; billing spends %ld us per record\n", billing_us);
    printf("%5s %18s %18s\n", "s", "audit processed", "billing processed");
    int done = 0;
    for (int tenth = 1; tenth <= 1200 && !done; tenth++) {
        struct timespec tick = {0, 100 * 1000 * 1000};
        nanosleep(&tick, NULL); /* pacing the report */
        done =
            atomic_load(&groups[0].distinct) == count && atomic_load(&groups[1].distinct) == count;
        if (tenth % 10 == 0 || done)
            printf("%5.1f %18" PRIu64 " %18" PRIu64 "\n", tenth / 10.0,
                   atomic_load(&groups[0].processed), atomic_load(&groups[1].processed));
        fflush(stdout);
    }
    /* Stopping a pipeline commits what was confirmed and leaves the group. */
    rill_pipeline_result_t res[2];
    for (int i = 0; i < 2; i++)
        rill_pipeline_stop(groups[i].pipeline);
    for (int i = 0; i < 2; i++) {
        if (rill_pipeline_wait(groups[i].pipeline, 30000, &res[i]) != RILL_OK) {
            /* Still running: destroying it would wait for it forever. */
            printf("FAILED: group %s did not stop within 30 s\n", groups[i].name);
            fflush(stdout);
            _exit(1);
        }
        rill_pipeline_destroy(groups[i].pipeline);
    }
    if (rill_system_stop(sys, 10000) != RILL_OK) {
        /* An actor is still running: the system must not be destroyed
         * (rill_system_stop's contract); the process ends instead. */
        printf("FAILED: the system did not stop within 10 s\n");
        fflush(stdout);
        _exit(1);
    }
    rill_system_destroy(sys);

    int ok = 1;
    printf("\nsummary: %" PRIu64 " records in %s\n", count, topic);
    for (int i = 0; i < 2; i++) {
        group_t *g = &groups[i];
        group_offsets(g);
        int good = atomic_load(&g->distinct) == count && g->committed == g->end && g->end > 0 &&
                   res[i].end == RILL_PIPELINE_STOPPED;
        printf("  group %-8s processed %" PRIu64 " (%" PRIu64 " distinct), committed %" PRId64
               " of %" PRId64 "  %s\n",
               g->name, atomic_load(&g->processed), atomic_load(&g->distinct), g->committed, g->end,
               good ? "ok" : "MISSING");
        if (res[i].end != RILL_PIPELINE_STOPPED)
            printf("    its pipeline ended: %s %s\n", res[i].stage, res[i].text);
        ok = ok && good;
        free((void *)g->seen);
    }
    printf("  %s\n", ok ? "OK: each group processed and committed every record, independently"
                        : "FAILED: a group missed records or did not commit them");
    rill_broker_destroy(broker);
    return ok ? 0 : 1;
}
