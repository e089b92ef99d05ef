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
 * only when its output is delivered (the stages carry each record's origin
 * to what is made from it), so the consumer commits nothing that did not
 * reach the output topic. Both are rill_pipelines; the enricher runs under
 * a supervisor of its own.
 *
 * Once a second it prints records in and out per second, the consumer's lag
 * and whether its partitions are paused, the stages' mailbox depths, and
 * the process's memory: the slow stage sets the pace, the consumer pauses,
 * the client's memory stays flat. At the end it stops the pipeline (what is
 * in flight is delivered and committed), reads the output topic back and
 * checks that every input record arrived at least once.
 *
 * The embedded broker runs in this process and keeps every record written
 * to it, so the RSS column also grows with the output topic: about 70-80
 * bytes per record produced to "enriched" (0.3 MiB/s at the demo's pace;
 * measured with mallinfo2: the heap in use grows with what was delivered,
 * see docs/benchmarks.md, bench_backlog). To see the client's memory alone,
 * run the broker as a process of its own, fresh for each run:
 *
 *   rill-broker --topic clicks:8:1 --topic enriched:8:1   (prints its address)
 *   pipeline --bootstrap 127.0.0.1:PORT
 *
 * With --http 127.0.0.1:PORT it also serves what rill shows of itself
 * (include/rill/observe.h): open http://127.0.0.1:PORT/ for the status
 * page (backpressure is visible there: the slow stage's mailbox full, the
 * consumer's partitions paused, the lag), /metrics for Prometheus,
 * /health/ready, /tree. --fail-at SEQ makes the slow stage fail once on
 * that record, so the supervisor restarts the pipeline (the page's tree
 * shows the restart; the record comes again and is processed); --linger S
 * keeps serving S seconds after the records are through. rill's log
 * lines (and librdkafka's) go through a logging hook that stamps them
 * with the time since the start.
 *
 * usage: pipeline [--records N] [--slow-us MICROSECONDS] [--partitions P]
 *                 [--bootstrap SERVERS (a broker with both topics, P partitions)]
 *                 [--http HOST:PORT [--token TOKEN]] [--fail-at SEQ] [--linger SECONDS]
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

/* The worker thread that stands in for a database (enrich). */
typedef struct io {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    rill_async_job_t *jobs[64];
    rill_elem_t elems[64];
    int n, stop;
} io_t;

typedef struct demo {
    uint64_t n_records;
    int slow_us;
    int64_t fail_at;    /* the slow stage fails once on this record (-1: never) */
    _Atomic int failed; /* it did */
    _Atomic uint64_t generated, consumed, enriched;
    io_t io;
} demo_t;

/* ---- generator ---- */

static rill_err_t generate(void *opaque, rill_elem_t *out)
{
    demo_t *d = opaque;
    uint64_t seq = atomic_load(&d->generated);
    if (seq >= d->n_records)
        return RILL_EOS;
    char key[32], value[96];
    int kl = snprintf(key, sizeof(key), "user-%" PRIu64, seq % 997);
    int vl = snprintf(value, sizeof(value), "seq=%" PRIu64 " page=/item/%" PRIu64 " ms=%d", seq,
                      (seq * 7919) % 10000, (int)(seq % 500));
    rill_produce_t *p =
        rill_produce_new("clicks", RILL_PARTITION_ANY, key, (size_t)kl, value, (size_t)vl);
    if (!p)
        return RILL_ENOMEM;
    atomic_fetch_add(&d->generated, 1);
    *out = rill_produce_elem(p);
    return RILL_OK;
}

/* ---- the pipeline's stages ---- */

typedef struct click {
    uint64_t seq;
    char key[32];
    char page[32];
    char region[16]; /* filled by enrich */
} click_t;

/* parse: a Kafka record into a click. The click stands for the record by
 * itself: the record is confirmed when the click's output is delivered. */
static rill_err_t parse(void *opaque, rill_elem_t *in, rill_elem_t *out)
{
    demo_t *d = opaque;
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
    rill_elem_release(in);
    atomic_fetch_add(&d->consumed, 1);
    *out = (rill_elem_t){.payload = c, .dtor = free};
    return RILL_OK;
}

/* enrich: asynchronous "I/O" on a worker thread. */
static rill_err_t enrich(void *opaque, rill_async_job_t *job, rill_elem_t *in)
{
    io_t *io = &((demo_t *)opaque)->io;
    pthread_mutex_lock(&io->lock);
    io->jobs[io->n] = job;
    io->elems[io->n++] = *in;
    pthread_cond_signal(&io->cond);
    pthread_mutex_unlock(&io->lock);
    return RILL_OK;
}

static void *io_main(void *arg)
{
    io_t *io = arg;
    static const char *regions[] = {"eu-west", "us-east", "ap-south", "sa-east"};
    pthread_mutex_lock(&io->lock);
    while (!io->stop || io->n) {
        if (!io->n) {
            pthread_cond_wait(&io->cond, &io->lock);
            continue;
        }
        rill_async_job_t *job = io->jobs[0];
        rill_elem_t e = io->elems[0];
        memmove(io->jobs, io->jobs + 1, (size_t)(io->n - 1) * sizeof(io->jobs[0]));
        memmove(io->elems, io->elems + 1, (size_t)(io->n - 1) * sizeof(io->elems[0]));
        io->n--;
        pthread_mutex_unlock(&io->lock);
        click_t *c = e.payload;
        snprintf(c->region, sizeof(c->region), "%s", regions[c->seq % 4]);
        rill_async_complete(job, RILL_OK, &e);
        pthread_mutex_lock(&io->lock);
    }
    pthread_mutex_unlock(&io->lock);
    return NULL;
}

/* slow: the deliberately slow stage, then the produce request. */
static rill_err_t slow_to_request(void *opaque, rill_elem_t *in, rill_elem_t *out)
{
    demo_t *d = opaque;
    struct timespec ts = {0, (long)d->slow_us * 1000};
    nanosleep(&ts, NULL); /* the slow part of the system under demonstration */
    click_t *c = in->payload;
    if (d->fail_at >= 0 && c->seq == (uint64_t)d->fail_at && !atomic_exchange(&d->failed, 1)) {
        /* --fail-at: the stage fails holding the record; its supervisor
         * restarts the pipeline, and the record comes again. */
        rill_elem_release(in);
        return RILL_EINVAL;
    }
    char value[128];
    int vl = snprintf(value, sizeof(value), "seq=%" PRIu64 " page=%s region=%s", c->seq, c->page,
                      c->region);
    rill_produce_t *p =
        rill_produce_new("enriched", RILL_PARTITION_ANY, c->key, strlen(c->key), value, (size_t)vl);
    rill_elem_release(in);
    if (!p)
        return RILL_ENOMEM;
    atomic_fetch_add(&d->enriched, 1);
    *out = rill_produce_elem(p);
    return RILL_OK;
}

/* ---- wiring ---- */

/* The generator: a source of produce requests into Kafka. */
static rill_pipeline_t *start_generator(rill_system_t *sys, demo_t *d, const char *boot, char *err,
                                        size_t err_size)
{
    rill_producer_conf_t *pc = rill_producer_conf_new();
    if (rill_producer_conf_set(pc, "bootstrap.servers", boot, err, err_size)) {
        rill_producer_conf_destroy(pc);
        return NULL;
    }
    /* Stage names are actor names: unique in the system (the enricher's
     * sink is "produce"; a second one would fail its start with EEXIST). */
    rill_pipeline_t *g = rill_pipeline_new(sys, "generator");
    rill_pipeline_add(g, rill_source_fn(generate, d), &(rill_stage_opts_t){.name = "generate"});
    rill_pipeline_add(g, rill_kafka_sink(pc), &(rill_stage_opts_t){.name = "produce-clicks"});
    if (rill_pipeline_start(g, err, err_size)) {
        rill_pipeline_destroy(g);
        return NULL;
    }
    return g;
}

/* consumer -> parse -> enrich -> slow -> producer, supervised. */
static rill_pipeline_t *start_enricher(rill_system_t *sys, demo_t *d, const char *boot,
                                       int partitions, char *err, size_t err_size)
{
    rill_consumer_conf_t *cc = rill_consumer_conf_new();
    rill_producer_conf_t *pc = rill_producer_conf_new();
    /* About a second of work below the low watermark hides librdkafka's
     * resume latency (see kafka.h, BACKPRESSURE). */
    const char *ckv[] = {
        "bootstrap.servers", boot,   "group.id", "click-enricher", "rill.buffer.high", "10000",
        "rill.buffer.low",   "5000", NULL};
    rill_err_t e = rill_producer_conf_set(pc, "bootstrap.servers", boot, err, err_size);
    for (int i = 0; !e && ckv[i]; i += 2)
        e = rill_consumer_conf_set(cc, ckv[i], ckv[i + 1], err, err_size);
    for (int i = 0; !e && i < partitions; i++)
        e = rill_consumer_conf_assign(cc, "clicks", i, RILL_OFFSET_BEGINNING, err, err_size);
    if (e) {
        rill_consumer_conf_destroy(cc);
        rill_producer_conf_destroy(pc);
        return NULL;
    }
    rill_pipeline_t *p = rill_pipeline_new(sys, "click-enricher");
    /* Named stages: the names label their metrics and boxes on the page. */
    rill_pipeline_add(p, rill_kafka_source(cc), &(rill_stage_opts_t){.name = "consume"});
    rill_pipeline_add(p, rill_stage_map(parse, d), &(rill_stage_opts_t){.name = "parse"});
    rill_pipeline_add(p, rill_stage_map_async(enrich, d, 16, 1),
                      &(rill_stage_opts_t){.name = "enrich"});
    rill_pipeline_add(p, rill_stage_map(slow_to_request, d), &(rill_stage_opts_t){.name = "slow"});
    rill_pipeline_add(p, rill_kafka_sink(pc), &(rill_stage_opts_t){.name = "produce"});
    if (rill_pipeline_start_supervised(p, NULL, err, err_size)) {
        rill_pipeline_destroy(p);
        return NULL;
    }
    return p;
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

/* The logging hook: rill's lines and librdkafka's, stamped with the time
 * since the start, on stderr. */
static struct timespec log_t0;

static void log_line(void *opaque, rill_log_level_t level, const char *facility, const char *text)
{
    (void)opaque;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    double t = (double)(now.tv_sec - log_t0.tv_sec) + (now.tv_nsec - log_t0.tv_nsec) / 1e9;
    fprintf(stderr, "[%8.3f] %-7s %s: %s\n", t, rill_log_level_name(level), facility, text);
}

static uint32_t depth(rill_system_t *sys, rill_pipeline_t *p, int stage)
{
    rill_actor_stats_t s;
    return rill_actor_stats(sys, rill_pipeline_stage(p, stage), &s) == RILL_OK ? s.mailbox_depth
                                                                               : 0;
}

int main(int argc, char **argv)
{
    static demo_t demo = {
        .n_records = 150000,
        .slow_us = 80,
        .fail_at = -1,
        .io = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER}};
    demo_t *d = &demo;
    int partitions = 8;
    const char *boot = NULL; /* NULL: the embedded broker */
    const char *http_listen = NULL, *token = NULL;
    int linger_s = 0;
    static const struct option opts[] = {{"records", required_argument, NULL, 'n'},
                                         {"slow-us", required_argument, NULL, 's'},
                                         {"partitions", required_argument, NULL, 'p'},
                                         {"bootstrap", required_argument, NULL, 'b'},
                                         {"http", required_argument, NULL, 'H'},
                                         {"token", required_argument, NULL, 'T'},
                                         {"fail-at", required_argument, NULL, 'F'},
                                         {"linger", required_argument, NULL, 'L'},
                                         {NULL, 0, NULL, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "n:s:p:b:", opts, NULL)) != -1) {
        if (opt == 'n')
            d->n_records = strtoull(optarg, NULL, 10);
        else if (opt == 's')
            d->slow_us = atoi(optarg);
        else if (opt == 'p')
            partitions = atoi(optarg);
        else if (opt == 'b')
            boot = optarg;
        else if (opt == 'H')
            http_listen = optarg;
        else if (opt == 'T')
            token = optarg;
        else if (opt == 'F')
            d->fail_at = strtoll(optarg, NULL, 10);
        else if (opt == 'L')
            linger_s = atoi(optarg);
        else {
            fprintf(stderr, "usage: pipeline [--records N] [--slow-us US] [--partitions P] "
                            "[--bootstrap SERVERS] [--http HOST:PORT [--token TOKEN]] "
                            "[--fail-at SEQ] [--linger SECONDS]\n");
            return 2;
        }
    }
    if (!d->n_records || d->slow_us < 0 || partitions < 1) {
        fprintf(stderr, "pipeline: --records and --partitions must be positive\n");
        return 2;
    }
    if (boot && !*boot) {
        fprintf(stderr, "pipeline: --bootstrap needs a broker address\n");
        return 2;
    }
    clock_gettime(CLOCK_MONOTONIC, &log_t0);
    rill_log_set(log_line, NULL);
    char err[512];
    rill_broker_t *broker = NULL;
    if (!boot) {
        broker = rill_broker_new(1, err, sizeof(err));
        if (!broker ||
            rill_broker_create_topic(broker, "clicks", partitions, 1, err, sizeof(err)) ||
            rill_broker_create_topic(broker, "enriched", partitions, 1, err, sizeof(err))) {
            rill_log(RILL_LOG_ERR, "pipeline", "embedded broker: %s", err);
            return 1;
        }
        boot = rill_broker_bootstraps(broker);
    }
    rill_system_t *sys = rill_system_new(&(rill_system_opts_t){.executors = 2}, err, sizeof(err));
    if (!sys || rill_system_start(sys)) {
        rill_log(RILL_LOG_ERR, "pipeline", "system: %s", err);
        return 1;
    }
    pthread_t io_thread;
    if (pthread_create(&io_thread, NULL, io_main, &d->io)) {
        rill_log(RILL_LOG_ERR, "pipeline", "cannot start the I/O thread");
        return 1;
    }
    printf("rill %s: %s broker at %s; %" PRIu64 " records; slow stage %d us/record\n",
           rill_version_str(), broker ? "embedded" : "external", boot, d->n_records, d->slow_us);
    rill_pipeline_t *gen = start_generator(sys, d, boot, err, sizeof(err));
    if (!gen) {
        rill_log(RILL_LOG_ERR, "pipeline", "generator: %s", err);
        return 1;
    }
    rill_pipeline_t *p = start_enricher(sys, d, boot, partitions, err, sizeof(err));
    if (!p) {
        rill_log(RILL_LOG_ERR, "pipeline", "pipeline: %s", err);
        return 1;
    }
    rill_observer_t *obs = NULL;
    rill_http_t *http = NULL;
    if (http_listen) {
        obs = rill_observer_new(sys, "click-demo");
        rill_http_opts_t ho = {.listen = http_listen, .token = token};
        if (!obs || rill_observer_add_pipeline(obs, gen) || rill_observer_add_pipeline(obs, p) ||
            rill_http_start(obs, &ho, &http, err, sizeof(err))) {
            rill_log(RILL_LOG_ERR, "pipeline", "http: %s", obs ? err : "out of memory");
            rill_observer_free(obs);
            return 1;
        }
        /* The host as given (none, or 0.0.0.0: this machine's loopback). */
        int hl = (int)strcspn(http_listen, ":");
        if (!hl || !strncmp(http_listen, "0.0.0.0", 7))
            http_listen = "127.0.0.1", hl = 9;
        printf("http: serving http://%.*s:%u/%s%s (status page), /metrics, /health/ready, /tree\n",
               hl, http_listen, rill_http_port(http), token ? "?token=" : "", token ? token : "");
        fflush(stdout);
    }

    printf("\n%4s %9s %9s %9s %8s %7s %22s %8s\n", "s", "gen", "in/s", "out/s", "lag", "paused",
           "mailboxes p/e/s/prod", "RSS MiB");
    uint64_t last_in = 0, last_out = 0, delivered = 0;
    int quiet = 0;
    long rss_start = 0, rss_max = 0;
    rill_consumer_stats_t cs = {0};
    for (int t = 1; t < 600; t++) {
        sleep(1); /* pacing the report */
        rill_producer_stats_t ps = {0};
        if (rill_consumer_stats(sys, rill_pipeline_stage(p, 0), &cs) ||
            rill_producer_stats(sys, rill_pipeline_stage(p, 4), &ps))
            continue; /* between two runs */
        delivered = ps.delivered;
        uint64_t in = atomic_load(&d->consumed);
        long rss = rss_mib10();
        if (t == 3)
            rss_start = rss;
        if (t >= 3 && rss > rss_max)
            rss_max = rss;
        /* Counters are per run: after a restart (--fail-at) they start
         * again, so a delta below zero is the new run's count. The lag is
         * Kafka's: the partitions' ends minus the group's committed
         * offsets, from librdkafka's statistics (once a second). */
        uint64_t out_s = delivered >= last_out ? delivered - last_out : delivered;
        char lag[24] = "-";
        if (cs.lag >= 0)
            snprintf(lag, sizeof(lag), "%" PRId64, cs.lag);
        printf("%4d %9" PRIu64 " %9" PRIu64 " %9" PRIu64 " %8s %7s %7u/%3u/%3u/%4u %5ld.%ld\n", t,
               atomic_load(&d->generated), in - last_in, out_s, lag, cs.paused ? "yes" : "no",
               depth(sys, p, 1), depth(sys, p, 2), depth(sys, p, 3), depth(sys, p, 4), rss / 10,
               rss % 10);
        fflush(stdout);
        last_in = in;
        last_out = delivered;
        /* Done: the generator's records are all in Kafka, and twice in a
         * row (so with statistics taken after that) the lag is 0:
         * everything is committed. */
        rill_pipeline_result_t gen_res;
        if (rill_pipeline_wait(gen, 0, &gen_res) == RILL_OK && cs.lag == 0) {
            if (++quiet == 2)
                break;
        } else {
            quiet = 0;
        }
    }
    for (int t = 0; t < linger_s && http; t++)
        sleep(1); /* --linger: the page stays up */
    /* Stop: the source stops, what is in flight is delivered and
     * committed, then the clients close. */
    rill_pipeline_result_t res, gres;
    int ended = !rill_pipeline_stop(p) && !rill_pipeline_wait(p, 60000, &res) &&
                !rill_pipeline_wait(gen, 60000, &gres);
    if (!ended) {
        /* Still running: destroying it would wait for it forever. */
        printf("FAILED: the pipelines did not end within 60 s\n");
        fflush(stdout);
        _exit(1);
    }
    rill_http_stop(http);
    rill_observer_free(obs);
    rill_pipeline_destroy(p);
    rill_pipeline_destroy(gen);
    if (rill_system_stop(sys, 20000) != RILL_OK) {
        /* An actor is still running: the system must not be destroyed
         * (rill_system_stop's contract); the process ends instead. */
        printf("FAILED: the system did not stop within 20 s\n");
        fflush(stdout);
        _exit(1);
    }
    rill_system_destroy(sys);
    pthread_mutex_lock(&d->io.lock);
    d->io.stop = 1;
    pthread_cond_signal(&d->io.cond);
    pthread_mutex_unlock(&d->io.lock);
    pthread_join(io_thread, NULL);

    /* Verify: every input record reached the output topic. */
    rill_consumed_t *out = NULL;
    rill_testkit_opts_t copts = {.timeout_ms = 60000};
    rill_err_t e =
        rill_testkit_consume(boot, "enriched", RILL_CONSUME_TO_END, &copts, &out, err, sizeof(err));
    uint64_t n_records = d->n_records;
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
    printf("  generated                      %" PRIu64 " (generator: %s)\n",
           atomic_load(&d->generated), gres.text);
    printf("  pipeline                       %s after %u restart(s), %" PRIu64
           " records produced\n",
           res.text, res.restarts, res.delivered);
    printf("  in the output topic            %zu records, %" PRIu64 " distinct inputs, %" PRIu64
           " duplicates\n",
           rill_consumed_count(out), distinct, dups);
    printf("  consumer                       %" PRIu64 " pauses, buffer high-water %u records, "
           "%" PRIu64 " commits\n",
           cs.pauses, cs.buffered_max, cs.committed);
    printf("  memory (RSS) from second 3     %ld.%ld -> max %ld.%ld MiB%s\n", rss_start / 10,
           rss_start % 10, rss_max / 10, rss_max % 10,
           broker ? " (with the embedded broker, which keeps every record of both topics)" : "");
    int ok = !e && distinct == n_records && res.end == RILL_PIPELINE_STOPPED &&
             gres.end == RILL_PIPELINE_COMPLETED;
    printf("  %s\n", ok ? "OK: every input record reached the output topic at least once"
                        : "FAILED: input records are missing from the output topic");
    free(seen);
    rill_consumed_destroy(out);
    rill_broker_destroy(broker);
    return ok ? 0 : 1;
}
