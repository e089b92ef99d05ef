/*
 * consumer_service: a scala-kafka-client style service in one page.
 *
 *   supervisor (one_for_all)
 *   ├── consumer   the Kafka consumer actor (group subscription)
 *   └── processor  a sink stage that processes each record and confirms it
 *
 * The processor fails on every Nth record it sees (--fail-every), before
 * confirming it. The failure stops the processor; the supervisor stops the
 * consumer too (one_for_all), which commits what was confirmed, and starts
 * both again: the new consumer resumes from the committed offsets, so the
 * record that failed, and everything not confirmed after it, is delivered
 * again. Nothing is lost; some records are processed twice. The summary at
 * the end checks exactly that against the topic.
 *
 * usage: consumer_service [--count N] [--fail-every N] [--partitions P]
 *                         [--bootstrap SERVERS] [--topic NAME] [--group ID]
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

static service_t svc;

/* ---- the processor: a sink stage that confirms what it processed ---- */

typedef struct processor {
    rill_system_t *sys;
    rill_aid_t consumer;
} processor_t;

/* Generated records carry their sequence number: "seq=<n> ...". */
static int64_t record_seq(const rd_kafka_message_t *m)
{
    if (!m->payload || m->len < 5 || memcmp(m->payload, "seq=", 4))
        return -1;
    return strtoll((const char *)m->payload + 4, NULL, 10);
}

static rill_err_t process(void *opaque, rill_elem_t *e)
{
    processor_t *p = opaque;
    const rd_kafka_message_t *m = rill_record(e);
    uint64_t n = atomic_fetch_add(&svc.processed, 1) + 1;
    if (svc.fail_every && n % svc.fail_every == 0) {
        /* A processing failure: not confirmed, so it will come again. */
        atomic_fetch_add(&svc.failures, 1);
        rill_elem_release(e);
        return RILL_EIO;
    }
    int64_t seq = m ? record_seq(m) : -1;
    if (seq >= 0 && (uint64_t)seq < svc.count)
        atomic_fetch_add(&svc.seen[seq], 1);
    rill_consumer_confirm(p->sys, p->consumer, e); /* before releasing it */
    rill_elem_release(e);
    return RILL_OK;
}

/* ---- children of the supervisor ---- */

static rill_err_t spawn_consumer(rill_system_t *sys, void *arg, const rill_child_env_t *env,
                                 rill_aid_t *aid, char *errstr, size_t errstr_size)
{
    (void)arg;
    char err[512];
    rill_consumer_conf_t *c = rill_consumer_conf_new();
    const char *topics[] = {svc.topic};
    if (rill_consumer_conf_set(c, "bootstrap.servers", svc.bootstraps, err, sizeof(err)) ||
        rill_consumer_conf_set(c, "group.id", svc.group, err, sizeof(err)) ||
        rill_consumer_conf_set(c, "auto.offset.reset", "earliest", err, sizeof(err)) ||
        rill_consumer_conf_set(c, "rill.commit.interval.ms", "200", err, sizeof(err)) ||
        /* A group whose last member left rebalances on the embedded broker
         * only after session.timeout.ms - 1 s: keep restarts quick. */
        rill_consumer_conf_set(c, "session.timeout.ms", "3000", err, sizeof(err)) ||
        rill_consumer_conf_set(c, "heartbeat.interval.ms", "500", err, sizeof(err)) ||
        rill_consumer_conf_subscribe(c, topics, 1)) {
        fprintf(stderr, "consumer configuration: %s\n", err);
        rill_consumer_conf_destroy(c);
        return RILL_EINVAL;
    }
    rill_stage_opts_t o = {.name = env->name, .link_to = env->supervisor};
    rill_err_t e = rill_consumer_spawn(sys, c, &o, aid, err, sizeof(err));
    if (e)
        fprintf(stderr, "consumer: %s\n", err);
    return e;
}

static rill_err_t spawn_processor(rill_system_t *sys, void *arg, const rill_child_env_t *env,
                                  rill_aid_t *aid, char *errstr, size_t errstr_size)
{
    (void)arg;
    /* one_for_all: the old processor is gone before a new one starts, so
     * one processor state serves every incarnation. */
    static processor_t p;
    p.sys = sys;
    p.consumer = rill_lookup(sys, "consumer"); /* started just before us */
    rill_stage_opts_t o = {.name = env->name, .link_to = env->supervisor};
    rill_err_t err = rill_stage_spawn(sys, rill_sink_foreach(process, &p), &o, aid);
    if (err)
        return err;
    return rill_stage_connect(sys, p.consumer, *aid);
}

/* ---- main ---- */

static uint64_t distinct_seen(void)
{
    uint64_t d = 0;
    for (uint64_t i = 0; i < svc.count; i++)
        d += atomic_load(&svc.seen[i]) > 0;
    return d;
}

static uint32_t restarts(rill_system_t *sys, rill_aid_t sup)
{
    rill_child_info_t info[4];
    size_t n = 0;
    uint32_t r = 0;
    if (rill_sup_children(sys, sup, info, 4, &n) == RILL_OK)
        for (size_t i = 0; i < n && i < 4; i++)
            r += info[i].restarts;
    return r;
}

int main(int argc, char **argv)
{
    svc.count = 20000;
    svc.fail_every = 4000;
    svc.topic = "orders";
    svc.group = "order-service";
    int partitions = 4;
    static const struct option opts[] = {{"count", required_argument, NULL, 'n'},
                                         {"fail-every", required_argument, NULL, 'f'},
                                         {"partitions", required_argument, NULL, 'p'},
                                         {"bootstrap", required_argument, NULL, 'b'},
                                         {"topic", required_argument, NULL, 't'},
                                         {"group", required_argument, NULL, 'g'},
                                         {NULL, 0, NULL, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "n:f:p:b:t:g:", opts, NULL)) != -1) {
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
        default:
            fprintf(stderr, "usage: consumer_service [--count N] [--fail-every N] "
                            "[--partitions P] [--bootstrap SERVERS] [--topic T] [--group G]\n");
            return 2;
        }
    }
    if (svc.count == 0 || partitions < 1) {
        fprintf(stderr, "consumer_service: --count and --partitions must be positive\n");
        return 2;
    }
    svc.seen = calloc(svc.count, sizeof(*svc.seen));
    char err[512];
    rill_broker_t *broker = NULL;
    if (!svc.bootstraps) {
        broker = rill_broker_new(1, err, sizeof(err));
        if (!broker ||
            rill_broker_create_topic(broker, svc.topic, partitions, 1, err, sizeof(err))) {
            fprintf(stderr, "embedded broker: %s\n", err);
            return 1;
        }
        svc.bootstraps = rill_broker_bootstraps(broker);
        printf("embedded broker at %s\n", svc.bootstraps);
    }
    printf("producing %" PRIu64 " records to %s\n", svc.count, svc.topic);
    rill_testkit_opts_t popts = {.timeout_ms = 120000};
    if (rill_testkit_produce_generated(svc.bootstraps, svc.topic, svc.count, NULL, &popts, err,
                                       sizeof(err))) {
        fprintf(stderr, "produce: %s\n", err);
        return 1;
    }

    rill_system_t *sys = rill_system_new(NULL, err, sizeof(err));
    rill_system_start(sys);
    rill_child_spec_t children[] = {
        {.id = "consumer", .spawn = spawn_consumer, .register_name = 1},
        {.id = "processor", .spawn = spawn_processor, .register_name = 1},
    };
    rill_sup_spec_t spec = RILL_SUP_SPEC_DEFAULT;
    spec.strategy = RILL_SUP_ONE_FOR_ALL;
    spec.intensity = 20;
    spec.period_ms = 60000;
    spec.backoff.min_ms = 100;
    spec.backoff.max_ms = 1000;
    spec.children = children;
    spec.n_children = 2;
    rill_aid_t sup;
    if (rill_sup_start(sys, &spec, "service", &sup, err, sizeof(err))) {
        fprintf(stderr, "supervisor: %s\n", err);
        return 1;
    }
    printf("consumer -> processor under a one_for_all supervisor; the processor fails on "
           "every %" PRIu64 "th record\n",
           svc.fail_every);
    printf("%4s %10s %10s %9s %9s\n", "s", "processed", "distinct", "failures", "restarts");
    uint64_t distinct = 0;
    for (int t = 1; t <= 120 && distinct < svc.count; t++) {
        sleep(1); /* pacing the report */
        distinct = distinct_seen();
        printf("%4d %10" PRIu64 " %10" PRIu64 " %9" PRIu64 " %9u\n", t, atomic_load(&svc.processed),
               distinct, atomic_load(&svc.failures), restarts(sys, sup));
        fflush(stdout);
    }
    uint32_t total_restarts = restarts(sys, sup);
    rill_sup_stop(sys, sup, 10000); /* the consumer commits on its way down */
    rill_system_stop(sys, 10000);
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
    distinct = distinct_seen();
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
