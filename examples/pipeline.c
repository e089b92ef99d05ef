/*
 * pipeline: the demo behind `./tools/dev demo`.
 *
 *   generator: source -> producer                       (topic "clicks")
 *   pipeline:  consumer -> parse -> enrich -> slow -> producer   ("enriched")
 *
 * The generator writes keyed records as fast as it can. The pipeline
 * consumes them, parses, enriches each one through map_async (a worker
 * thread stands in for a database), passes them through a deliberately
 * slow stage, and produces the result; each consumed record is confirmed
 * only when its output is delivered (origin tickets), so the consumer
 * commits nothing that did not reach the output topic.
 *
 * Once a second it prints records in and out per second, the consumer's lag
 * and whether its partitions are paused, the stages' mailbox depths, and
 * the process's memory: the slow stage sets the pace, the consumer pauses,
 * memory stays flat. At the end it drains, reads the output topic back and
 * checks that every input record arrived at least once.
 *
 * usage: pipeline [--records N] [--slow-us MICROSECONDS] [--partitions P]
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

static rill_system_t *sys;
static rill_aid_t consumer;
static uint64_t n_records = 150000;
static int slow_us = 80;
static _Atomic uint64_t generated, consumed, enriched;

/* ---- generator ---- */

static int generate(void *opaque, rill_elem_t *out)
{
    (void)opaque;
    uint64_t seq = atomic_load(&generated);
    if (seq >= n_records)
        return 0;
    char key[32], value[96];
    int kl = snprintf(key, sizeof(key), "user-%" PRIu64, seq % 997);
    int vl = snprintf(value, sizeof(value), "seq=%" PRIu64 " page=/item/%" PRIu64 " ms=%d", seq,
                      (seq * 7919) % 10000, (int)(seq % 500));
    rill_produce_t *p =
        rill_produce_new("clicks", RILL_PARTITION_ANY, key, (size_t)kl, value, (size_t)vl);
    if (!p)
        return -RILL_ENOMEM;
    atomic_fetch_add(&generated, 1);
    *out = rill_produce_elem(p);
    return 1;
}

/* ---- the pipeline's stages ---- */

typedef struct click {
    uint64_t seq;
    char key[32];
    char page[32];
    rill_origin_t *origin;
    char region[16]; /* filled by enrich */
} click_t;

static void click_free(void *p)
{
    click_t *c = p;
    if (c->origin) {
        rill_origin_fail(c->origin); /* dropped before its output was delivered */
        rill_origin_release(c->origin);
    }
    free(c);
}

/* parse: a Kafka record into a click (the record is confirmed later,
 * through the origin, when the output is delivered). */
static rill_err_t parse(void *opaque, rill_elem_t *in, rill_elem_t *out)
{
    (void)opaque;
    const rd_kafka_message_t *m = rill_record(in);
    click_t *c = calloc(1, sizeof(*c));
    if (!c) {
        rill_elem_release(in);
        return RILL_ENOMEM;
    }
    char value[128] = "";
    size_t n = m->len < sizeof(value) - 1 ? m->len : sizeof(value) - 1;
    memcpy(value, m->payload, n);
    sscanf(value, "seq=%" SCNu64 " page=%31s", &c->seq, c->page);
    snprintf(c->key, sizeof(c->key), "%.*s", (int)m->key_len, (const char *)m->key);
    c->origin = rill_origin_new(sys, consumer, in);
    rill_elem_release(in);
    atomic_fetch_add(&consumed, 1);
    *out = (rill_elem_t){.payload = c, .dtor = click_free};
    return RILL_OK;
}

/* enrich: asynchronous "I/O" on a worker thread. */
typedef struct io {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    rill_async_job_t *jobs[64];
    rill_elem_t elems[64];
    int n, stop;
} io_t;
static io_t io = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

static rill_err_t enrich(void *opaque, rill_async_job_t *job, rill_elem_t *in)
{
    (void)opaque;
    pthread_mutex_lock(&io.lock);
    io.jobs[io.n] = job;
    io.elems[io.n++] = *in;
    pthread_cond_signal(&io.cond);
    pthread_mutex_unlock(&io.lock);
    return RILL_OK;
}

static void *io_main(void *arg)
{
    (void)arg;
    static const char *regions[] = {"eu-west", "us-east", "ap-south", "sa-east"};
    pthread_mutex_lock(&io.lock);
    while (!io.stop || io.n) {
        if (!io.n) {
            pthread_cond_wait(&io.cond, &io.lock);
            continue;
        }
        rill_async_job_t *job = io.jobs[0];
        rill_elem_t e = io.elems[0];
        memmove(io.jobs, io.jobs + 1, (size_t)(io.n - 1) * sizeof(io.jobs[0]));
        memmove(io.elems, io.elems + 1, (size_t)(io.n - 1) * sizeof(io.elems[0]));
        io.n--;
        pthread_mutex_unlock(&io.lock);
        click_t *c = e.payload;
        snprintf(c->region, sizeof(c->region), "%s", regions[c->seq % 4]);
        rill_async_complete(job, RILL_OK, &e);
        pthread_mutex_lock(&io.lock);
    }
    pthread_mutex_unlock(&io.lock);
    return NULL;
}

/* slow: the deliberately slow stage, then the produce request. */
static rill_err_t slow_to_request(void *opaque, rill_elem_t *in, rill_elem_t *out)
{
    (void)opaque;
    struct timespec ts = {0, (long)slow_us * 1000};
    nanosleep(&ts, NULL); /* the slow part of the system under demonstration */
    click_t *c = in->payload;
    char value[128];
    int vl = snprintf(value, sizeof(value), "seq=%" PRIu64 " page=%s region=%s", c->seq, c->page,
                      c->region);
    rill_produce_t *p =
        rill_produce_new("enriched", RILL_PARTITION_ANY, c->key, strlen(c->key), value, (size_t)vl);
    if (!p) {
        rill_elem_release(in);
        return RILL_ENOMEM;
    }
    rill_produce_set_origin(p, c->origin); /* the request takes the reference */
    c->origin = NULL;
    rill_elem_release(in);
    atomic_fetch_add(&enriched, 1);
    *out = rill_produce_elem(p);
    return RILL_OK;
}

/* ---- output ---- */

static long rss_mib10(void)
{
    long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
            rss = 0;
        fclose(f);
    }
    return rss * sysconf(_SC_PAGESIZE) * 10 / (1024 * 1024);
}

static uint32_t depth(rill_aid_t aid)
{
    rill_actor_stats_t s;
    return rill_actor_stats(sys, aid, &s) == RILL_OK ? s.mailbox_depth : 0;
}

int main(int argc, char **argv)
{
    int partitions = 8;
    static const struct option opts[] = {{"records", required_argument, NULL, 'n'},
                                         {"slow-us", required_argument, NULL, 's'},
                                         {"partitions", required_argument, NULL, 'p'},
                                         {NULL, 0, NULL, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "n:s:p:", opts, NULL)) != -1) {
        if (opt == 'n')
            n_records = strtoull(optarg, NULL, 10);
        else if (opt == 's')
            slow_us = atoi(optarg);
        else if (opt == 'p')
            partitions = atoi(optarg);
        else {
            fprintf(stderr, "usage: pipeline [--records N] [--slow-us US] [--partitions P]\n");
            return 2;
        }
    }
    if (!n_records || slow_us < 0 || partitions < 1) {
        fprintf(stderr, "pipeline: --records and --partitions must be positive\n");
        return 2;
    }
    char err[512];
    rill_broker_t *broker = rill_broker_new(1, err, sizeof(err));
    if (!broker || rill_broker_create_topic(broker, "clicks", partitions, 1, err, sizeof(err)) ||
        rill_broker_create_topic(broker, "enriched", partitions, 1, err, sizeof(err))) {
        fprintf(stderr, "embedded broker: %s\n", err);
        return 1;
    }
    const char *boot = rill_broker_bootstraps(broker);
    sys = rill_system_new(&(rill_system_opts_t){.executors = 2}, err, sizeof(err));
    rill_system_start(sys);
    pthread_t io_thread;
    pthread_create(&io_thread, NULL, io_main, NULL);
    printf("rill %s: embedded broker at %s; %" PRIu64 " records; slow stage %d us/record\n",
           rill_version_str(), boot, n_records, slow_us);

    /* The generator: a source into a producer. */
    rill_producer_conf_t *gpc = rill_producer_conf_new();
    rill_producer_conf_set(gpc, "bootstrap.servers", boot, err, sizeof(err));
    rill_aid_t gen_src, gen_prod;
    rill_producer_spawn(sys, gpc, NULL, &gen_prod, err, sizeof(err));
    rill_stage_spawn(sys, rill_source_fn(generate, NULL), NULL, &gen_src);
    rill_stage_connect(sys, gen_src, gen_prod);

    /* The pipeline. */
    rill_consumer_conf_t *cc = rill_consumer_conf_new();
    rill_consumer_conf_set(cc, "bootstrap.servers", boot, err, sizeof(err));
    rill_consumer_conf_set(cc, "group.id", "click-enricher", err, sizeof(err));
    /* About a second of work below the low watermark hides librdkafka's
     * resume latency (see kafka.h, BACKPRESSURE). */
    rill_consumer_conf_set(cc, "rill.buffer.high", "10000", err, sizeof(err));
    rill_consumer_conf_set(cc, "rill.buffer.low", "5000", err, sizeof(err));
    for (int p = 0; p < partitions; p++)
        rill_consumer_conf_assign(cc, "clicks", p, RILL_OFFSET_BEGINNING);
    if (rill_consumer_spawn(sys, cc, NULL, &consumer, err, sizeof(err))) {
        fprintf(stderr, "consumer: %s\n", err);
        return 1;
    }
    rill_producer_conf_t *pc = rill_producer_conf_new();
    rill_producer_conf_set(pc, "bootstrap.servers", boot, err, sizeof(err));
    rill_aid_t parse_a, enrich_a, slow_a, prod_a;
    rill_stage_spawn(sys, rill_stage_map(parse, NULL), NULL, &parse_a);
    rill_stage_spawn(sys, rill_stage_map_async(enrich, NULL, 16, 1), NULL, &enrich_a);
    rill_stage_spawn(sys, rill_stage_map(slow_to_request, NULL), NULL, &slow_a);
    rill_producer_spawn(sys, pc, NULL, &prod_a, err, sizeof(err));
    rill_stage_connect(sys, consumer, parse_a);
    rill_stage_connect(sys, parse_a, enrich_a);
    rill_stage_connect(sys, enrich_a, slow_a);
    rill_stage_connect(sys, slow_a, prod_a);

    printf("\n%4s %9s %9s %9s %8s %7s %22s %8s\n", "s", "gen", "in/s", "out/s", "lag", "paused",
           "mailboxes p/e/s/prod", "RSS MiB");
    uint64_t last_in = 0, last_out = 0, delivered = 0;
    long rss_start = 0, rss_max = 0;
    for (int t = 1; t < 600; t++) {
        sleep(1); /* pacing the report */
        rill_consumer_stats_t cs = {0};
        rill_producer_stats_t ps = {0};
        rill_consumer_stats(sys, consumer, &cs);
        rill_producer_stats(sys, prod_a, &ps);
        delivered = ps.delivered;
        uint64_t in = atomic_load(&consumed);
        long rss = rss_mib10();
        if (t == 3)
            rss_start = rss;
        if (t >= 3 && rss > rss_max)
            rss_max = rss;
        printf("%4d %9" PRIu64 " %9" PRIu64 " %9" PRIu64 " %8" PRIu64
               " %7s %7u/%3u/%3u/%4u %5ld.%ld\n",
               t, atomic_load(&generated), in - last_in, delivered - last_out,
               atomic_load(&generated) - cs.confirmed, cs.paused ? "yes" : "no", depth(parse_a),
               depth(enrich_a), depth(slow_a), depth(prod_a), rss / 10, rss % 10);
        fflush(stdout);
        last_in = in;
        last_out = delivered;
        if (cs.confirmed >= n_records)
            break;
    }
    rill_consumer_stats_t cs;
    rill_consumer_stats(sys, consumer, &cs);
    rill_system_stop(sys, 20000);
    rill_system_destroy(sys);
    pthread_mutex_lock(&io.lock);
    io.stop = 1;
    pthread_cond_signal(&io.cond);
    pthread_mutex_unlock(&io.lock);
    pthread_join(io_thread, NULL);

    /* Verify: every input record reached the output topic. */
    rill_consumed_t *out = NULL;
    rill_testkit_opts_t copts = {.timeout_ms = 60000};
    rill_err_t e =
        rill_testkit_consume(boot, "enriched", RILL_CONSUME_TO_END, &copts, &out, err, sizeof(err));
    uint8_t *seen = calloc(n_records, 1);
    uint64_t distinct = 0, dups = 0;
    for (size_t i = 0; !e && i < rill_consumed_count(out); i++) {
        const rill_testkit_record_t *r = rill_consumed_at(out, i);
        uint64_t seq;
        char v[32] = "";
        if (r->value)
            memcpy(v, r->value, r->value_len < sizeof(v) - 1 ? r->value_len : sizeof(v) - 1);
        if (sscanf(v, "seq=%" SCNu64, &seq) == 1 && seq < n_records) {
            if (seen[seq]++)
                dups++;
            else
                distinct++;
        }
    }
    printf("\nsummary\n");
    printf("  generated                      %" PRIu64 "\n", atomic_load(&generated));
    printf("  in the output topic            %zu records, %" PRIu64 " distinct inputs, %" PRIu64
           " duplicates\n",
           rill_consumed_count(out), distinct, dups);
    printf("  consumer                       %" PRIu64 " pauses, buffer high-water %u records, "
           "%" PRIu64 " commits\n",
           cs.pauses, cs.buffered_max, cs.committed);
    printf("  memory (RSS) from second 3     %ld.%ld -> max %ld.%ld MiB\n", rss_start / 10,
           rss_start % 10, rss_max / 10, rss_max % 10);
    int ok = !e && distinct == n_records;
    printf("  %s\n", ok ? "OK: every input record reached the output topic at least once"
                        : "FAILED: input records are missing from the output topic");
    free(seen);
    rill_consumed_destroy(out);
    rill_broker_destroy(broker);
    return ok ? 0 : 1;
}
