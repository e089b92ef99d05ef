/*
 * bench_pipeline: consume -> transform -> produce, committing an input
 * offset only after its output was delivered, through rill against a raw
 * librdkafka loop with the same guarantee, on the same broker and data, in
 * the same run, alternating.
 *
 *   baseline  one thread: rd_kafka_consume_batch_queue (up to BATCH
 *             records per call; BENCH_RAW_POLL=poll: one
 *             rd_kafka_consumer_poll per record), uppercase each value,
 *             rd_kafka_producev to the output topic (same partition) with
 *             the input partition and offset as the message opaque; the
 *             delivery report marks the input offset done, and the
 *             contiguous done prefix of each partition is stored
 *             (rd_kafka_offsets_store, one list for all partitions)
 *             after every producer poll (one per batch); an async
 *             commit every 1,000 deliveries unless one is unanswered
 *             (then once it is: bench_committer_t), a sync commit at the
 *             end; at
 *             most RAW_MAX_INFLIGHT records consumed and not yet delivered
 *             (rill's rill.max.inflight default: the same bound on work in
 *             flight as rill's producer; BENCH_RAW_MAX_INFLIGHT=0 lifts it,
 *             leaving only librdkafka's producer queue of 100,000)
 *   rill      a pipeline: rill_kafka_source -> map stage (uppercase into
 *             a produce request; the stage carries the input record's
 *             origin to it) -> rill_kafka_sink; the delivery confirms the
 *             input record, the source commits (async every 1,000
 *             confirms), rill defaults otherwise
 *
 *   observed  the rill pipeline again, with an observer watching it
 *             (rill_observer_add_pipeline) and its HTTP endpoint on
 *             127.0.0.1:0, scraped by a thread of the bench: a plain
 *             socket GET /metrics, the whole answer read, which must be
 *             HTTP 200 and hold rill_consumer_records_in_total (a failed
 *             scrape fails the run's check). The first scrape as the
 *             pipeline has started, then one every second (Prometheus's
 *             pace is 15 s or more: a second is the harsh case); a
 *             run shorter than a second still gets its one scrape. The
 *             observer and the endpoint are made before the clock starts
 *             (a service makes them once), the scraper's thread and the
 *             endpoint's CPU count. Its lines compare it with the plain
 *             rill side of the same run: pipeline_observed (rill:
 *             observed, baseline: plain rill; the goal is >= 0.98) and
 *             pipeline_observed_cost. After its clock, each observed side
 *             measures what one scrape costs (scrape_cost(): 100 back to
 *             back on the idle pipeline): the "scrape cost" line, and the
 *             goal judged by it (a second's scrapes against the CPU the
 *             pipeline spends in a second), which rill's own run-to-run
 *             spread (far wider than 2 %) does not blur.
 *   fast      (only with BENCH_SCRAPE_MS=<ms>) observed, scraped every
 *             <ms> ms instead, to make the cost of a scrape visible above
 *             the noise: lines pipeline_observed_<ms>ms and
 *             pipeline_observed_<ms>ms_cost against plain rill.
 *
 * The sides run raw, rill, observed, fast in even runs and in the reverse
 * order in odd ones (a palindrome: raw against rill alternates as in
 * bench_sides, and a drift over two runs favours no side).
 *
 * Both producers are idempotent with acks=all and linger.ms=5 (rill's
 * default). The broker is a separate `rill-broker` process, so this
 * process's CPU time (getrusage: user + sys, librdkafka's threads
 * included) is the client's alone. The input topic (PARTITIONS partitions,
 * `records` generated records of VALUE bytes) is written once; every run
 * uses a fresh consumer group and a fresh output topic, and reads every
 * input partition from offset 0 without a group join. Each side's clock
 * (time and CPU) starts before it makes its two clients: rill's pipeline
 * makes them when it starts, the baseline makes them in the same order,
 * and both name the output topic from the start (rill.topics; the raw
 * loop's topic handle), so both pay the idempotent producer's start (see
 * warm_up() for the measurement that left it to rill alone).
 * The clock stops when every input offset is committed (raw: its final commit
 * returned; rill: the commit callback saw all offsets); then (untimed) the
 * committed offsets are read back with a fresh client and the output topic
 * is read and checked: every input record must be there, uppercased;
 * duplicates are counted and printed.
 *
 * Experiments (the reported runs set none of these):
 * BENCH_ONLY=rill|raw|observed|fast runs one side; BENCH_OBSERVED=0 leaves
 * the observed side out; BENCH_STATS=1 prints rill's counters; BENCH_TRACE=1 a
 * timeline and per-thread CPU; BENCH_RILL_CONSUMER_CONF and
 * BENCH_RILL_PRODUCER_CONF="key=value,..." add rill properties,
 * BENCH_RAW_CONF the raw consumer's (it starts from rill's defaults);
 * BENCH_RAW_MAX_INFLIGHT sets the baseline's bound (0: none); BENCH_WARM_MS; BENCH_EX_CONSUMER,
 * BENCH_EX_MAP, BENCH_EX_PRODUCER place the stages on executors.
 *
 * usage: bench_pipeline [records, default 300000] [runs, default 5]
 *                       [path to rill-broker, default: next to this binary]
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <rill/observe.h>
#include <rill/rill.h>
#include <rill/testkit.h>

#include "bench_util.h"

#define PARTITIONS 32
#define VALUE      100
#define MAX_RUNS   20
#define IN_TOPIC   "pin"
#define LINGER_MS  "5"

/* The baseline's bound on records consumed and not yet delivered: rill's
 * default rill.max.inflight, the bound of rill's producer. */
#define RAW_MAX_INFLIGHT 10000

/* The baseline's records per rd_kafka_consume_batch_queue call at most. */
#define BATCH 1024

/* The observed side's scrape interval (the line), in ms. */
#define SCRAPE_MS 1000

/* The sides, in the order of an even run (odd runs: reversed). */
enum { RAW, RILL, OBSERVED, FAST, SIDES };
static const char *const side_name[SIDES] = {"raw", "rill", "observed", "fast"};

static void die(const char *what, const char *why)
{
    fprintf(stderr, "bench_pipeline: %s: %s\n", what, why);
    exit(1);
}

typedef struct result {
    double rate;   /* input records/s, consumed to committed */
    double cost;   /* CPU us per 1,000 records */
    int ok;        /* the checks passed */
    uint64_t dups; /* output records beyond one per input record */
    /* observed sides: scrapes answered (each checked), failed, the
     * longest one's wall time */
    uint64_t scrapes, scrape_failed;
    double scrape_max_ms;
    double scrape_cpu_ms; /* CPU per scrape, measured after the clock (scrape_cost) */
} result_t;

/* Until 2026-12-06 the baseline made its producer and waited 1.5 s for
 * it before its clock started (librdkafka's idempotent producer has to
 * get its producer id first, a one-off cost of ~10 ms from a rill-broker
 * process), while rill's clock included its producer's start: time and
 * CPU (client threads, connections, metadata, the id) counted against
 * rill alone. Now both clocks include it. BENCH_WARM_MS=<ms> gives the
 * old measurement: the raw producer made and warmed that long before the
 * clock starts. */
static long warm_ms(void)
{
    const char *v = getenv("BENCH_WARM_MS");
    return v ? atol(v) : 0;
}

static void warm_up(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000 * 1000};
    nanosleep(&ts, NULL); /* the producer gets its producer id meanwhile */
}

/* ---- baseline: raw librdkafka ---- */

/* Per input partition: which offsets past the commit point are delivered
 * (a ring of flags), so the stored offset is always the contiguous
 * delivered prefix even if delivery reports came out of order. */
typedef struct track {
    int64_t base; /* the first offset not known delivered; -1 = nothing consumed yet */
    uint8_t *done;
    size_t cap; /* power of two */
    int dirty;  /* base moved since the last store */
} track_t;

typedef struct raw {
    rd_kafka_t *cons, *prod;
    track_t parts[PARTITIONS];
    uint64_t delivered, failed;
    double t0;
} raw_t;

static void track_mark(track_t *t, int64_t off)
{
    if (off < t->base)
        return;
    if ((uint64_t)(off - t->base) >= t->cap) {
        size_t cap = t->cap ? t->cap : 1024;
        while ((uint64_t)(off - t->base) >= cap)
            cap *= 2;
        uint8_t *d = calloc(cap, 1);
        if (!d)
            die("raw", "out of memory");
        for (size_t i = 0; i < t->cap; i++)
            d[(uint64_t)(t->base + (int64_t)i) & (cap - 1)] =
                t->done[(uint64_t)(t->base + (int64_t)i) & (t->cap - 1)];
        free(t->done);
        t->done = d;
        t->cap = cap;
    }
    t->done[(uint64_t)off & (t->cap - 1)] = 1;
    while (t->done[(uint64_t)t->base & (t->cap - 1)]) {
        t->done[(uint64_t)t->base & (t->cap - 1)] = 0;
        t->base++;
        t->dirty = 1;
    }
}

static void raw_dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    raw_t *x = opaque;
    uintptr_t tag = (uintptr_t)m->_private;
    if (m->err) {
        x->failed++; /* never stored: the input would be consumed again */
        fprintf(stderr, "bench_pipeline: raw delivery failed: %s\n", rd_kafka_err2str(m->err));
        return;
    }
    if (!x->delivered++ && getenv("BENCH_TRACE"))
        fprintf(stderr, "  raw: first delivery report at %.3f s\n", bench_now_s() - x->t0);
    track_mark(&x->parts[tag >> 48], (int64_t)(tag & ((UINT64_C(1) << 48) - 1)));
}

static void raw_store(raw_t *x)
{
    rd_kafka_topic_partition_list_t *l = NULL;
    for (int p = 0; p < PARTITIONS; p++) {
        if (!x->parts[p].dirty)
            continue;
        if (!l)
            l = rd_kafka_topic_partition_list_new(PARTITIONS);
        rd_kafka_topic_partition_list_add(l, IN_TOPIC, p)->offset = x->parts[p].base;
        x->parts[p].dirty = 0;
    }
    if (l) {
        rd_kafka_offsets_store(x->cons, l);
        rd_kafka_topic_partition_list_destroy(l);
    }
}

static rd_kafka_t *raw_producer(const char *const *kv, void *opaque)
{
    char err[512];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    for (int i = 0; kv[i]; i += 2)
        if (rd_kafka_conf_set(c, kv[i], kv[i + 1], err, sizeof(err)) != RD_KAFKA_CONF_OK)
            die("raw config", err);
    rd_kafka_conf_set_dr_msg_cb(c, raw_dr);
    rd_kafka_conf_set_opaque(c, opaque);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, err, sizeof(err));
    if (!rk)
        die("raw client", err);
    return rk;
}

static result_t run_raw(const char *boot, uint64_t n, int run)
{
    char group[64], out[64];
    snprintf(group, sizeof(group), "pipe-raw-%d", run);
    snprintf(out, sizeof(out), "pout-raw-%d", run);
    raw_t x;
    memset(&x, 0, sizeof(x));
    for (int p = 0; p < PARTITIONS; p++)
        x.parts[p].base = -1;
    const char *pkv[] = {
        "bootstrap.servers", boot, "enable.idempotence", "true", "acks", "all", "linger.ms",
        LINGER_MS,           NULL};
    long warm = warm_ms();
    if (warm > 0) {
        x.prod = raw_producer(pkv, &x);
        warm_up(warm);
    }
    double t0 = bench_now_s(), c0 = bench_cpu_us();
    x.t0 = t0;
    /* BENCH_RAW_CONF: experiments, e.g. the raw loop without rill's bound */
    x.cons = bench_raw_consumer("bench_pipeline", boot, group, NULL, "BENCH_RAW_CONF");
    if (!x.prod)
        x.prod = raw_producer(pkv, &x);
    /* Known from the client's first metadata request, as rill.topics makes
     * it for rill's producer, and produced to by handle, as rill does: no
     * lookup by name per record. */
    rd_kafka_topic_t *out_rkt = rd_kafka_topic_new(x.prod, out, NULL);
    if (!out_rkt)
        die("raw topic", rd_kafka_err2str(rd_kafka_last_error()));
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(PARTITIONS);
    for (int p = 0; p < PARTITIONS; p++)
        rd_kafka_topic_partition_list_add(l, IN_TOPIC, p)->offset = 0;
    rd_kafka_assign(x.cons, l);
    rd_kafka_topic_partition_list_destroy(l);
    uint64_t consumed = 0;
    bench_committer_t com;
    bench_committer_init(&com, x.cons, 1000);
    char buf[4096];
    /* Bound the records in flight as rill's producer is bounded. */
    uint64_t limit = (uint64_t)bench_env_int("BENCH_RAW_MAX_INFLIGHT", RAW_MAX_INFLIGHT);
    if (!limit)
        limit = n;
    const char *mode = getenv("BENCH_RAW_POLL");
    int batch = !mode || strcmp(mode, "poll");
    rd_kafka_queue_t *q = rd_kafka_queue_get_consumer(x.cons);
    rd_kafka_message_t *msgs[BATCH];
    while (x.delivered + x.failed < n) {
        uint64_t busy = consumed - x.delivered - x.failed;
        int room = busy < limit;
        ssize_t got = 0;
        if (consumed < n && room) {
            if (batch) {
                /* As many as are there, up to the bound and the batch (a
                 * short wait for a batch to fill). */
                uint64_t want = limit - busy < n - consumed ? limit - busy : n - consumed;
                got = rd_kafka_consume_batch_queue(q, 1, msgs, want < BATCH ? want : BATCH);
            } else if ((msgs[0] = rd_kafka_consumer_poll(x.cons, 10)) != NULL) {
                got = 1;
            }
        }
        for (ssize_t i = 0; i < got; i++) {
            rd_kafka_message_t *m = msgs[i];
            if (m->err) {
                rd_kafka_message_destroy(m);
                continue;
            }
            track_t *t = &x.parts[m->partition];
            if (t->base < 0)
                t->base = m->offset;
            size_t len = bench_upper(buf, m->payload, m->len < sizeof(buf) ? m->len : sizeof(buf));
            void *tag = (void *)(((uintptr_t)m->partition << 48) | (uintptr_t)m->offset);
            for (;;) {
                rd_kafka_resp_err_t err = rd_kafka_producev(
                    x.prod, RD_KAFKA_V_RKT(out_rkt), RD_KAFKA_V_PARTITION(m->partition),
                    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_KEY(m->key, m->key_len),
                    RD_KAFKA_V_VALUE(buf, len), RD_KAFKA_V_OPAQUE(tag), RD_KAFKA_V_END);
                if (!err)
                    break;
                if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL)
                    die("raw produce", rd_kafka_err2str(err));
                rd_kafka_poll(x.prod, 10); /* the producer's queue is full: wait for reports */
            }
            consumed++;
            rd_kafka_message_destroy(m);
        }
        /* Serve delivery reports (wait for them once everything is
         * consumed or the bound is reached), store the delivered
         * prefixes. */
        rd_kafka_poll(x.prod, consumed < n && room ? 0 : 10);
        raw_store(&x);
        bench_committer_step(&com, x.delivered);
    }
    rd_kafka_queue_destroy(q);
    raw_store(&x);
    bench_committer_drain(&com);
    rd_kafka_resp_err_t cerr = rd_kafka_commit(x.cons, NULL, 0);
    bench_committer_destroy(&com);
    if (getenv("BENCH_TRACE"))
        bench_thread_cpu("raw at the end");
    double dt = bench_now_s() - t0, cpu = bench_cpu_us() - c0;
    if (cerr && cerr != RD_KAFKA_RESP_ERR__NO_OFFSET)
        fprintf(stderr, "bench_pipeline: raw final commit: %s\n", rd_kafka_err2str(cerr));
    rd_kafka_consumer_close(x.cons);
    rd_kafka_destroy(x.cons);
    rd_kafka_flush(x.prod, 10000);
    rd_kafka_topic_destroy(out_rkt);
    rd_kafka_destroy(x.prod);
    for (int p = 0; p < PARTITIONS; p++)
        free(x.parts[p].done);
    result_t res = {.rate = (double)n / dt, .cost = cpu / ((double)n / 1000.0), .ok = !x.failed};
    res.ok = bench_check_output("bench_pipeline", boot, out, IN_TOPIC, PARTITIONS, group, -1, n,
                                VALUE, "raw", &res.dups) &&
             res.ok;
    return res;
}

/* ---- the scraper of the observed sides ---- */

typedef struct scraper {
    uint16_t port;
    long interval_ms;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int stop;
    /* the thread's own until it is joined */
    uint64_t scrapes, failed;
    double max_ms;
    char why[200]; /* the first failure */
} scraper_t;

/* One GET /metrics over a fresh connection, the whole answer read: NULL
 * when it was HTTP 200 with rill_consumer_records_in_total in it, else
 * why not (a static string). */
static const char *scrape_once(uint16_t port, size_t *bytes)
{
    static const char req[] = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                              "Connection: close\r\n\r\n";
    *bytes = 0;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return "socket";
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const char *why = NULL;
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)))
        why = "connect";
    for (size_t off = 0; !why && off < sizeof(req) - 1;) {
        ssize_t w = send(fd, req + off, sizeof(req) - 1 - off, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            why = "send";
        else
            off += (size_t)w;
    }
    size_t cap = 64 * 1024, len = 0;
    char *buf = why ? NULL : malloc(cap);
    if (!why && !buf)
        why = "out of memory";
    while (!why) {
        if (len + 1 == cap) {
            char *b = realloc(buf, cap * 2);
            if (!b) {
                why = "out of memory";
                break;
            }
            buf = b;
            cap *= 2;
        }
        ssize_t r = recv(fd, buf + len, cap - 1 - len, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            why = "recv";
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    if (!why) {
        buf[len] = '\0';
        *bytes = len;
        if (strncmp(buf, "HTTP/1.1 200 ", 13) && strncmp(buf, "HTTP/1.0 200 ", 13))
            why = "not HTTP 200";
        else if (!strstr(buf, "\r\n\r\n") || !strstr(buf, "rill_consumer_records_in_total"))
            why = "no rill_consumer_records_in_total in the answer";
    }
    free(buf);
    return why;
}

/* The first scrape at once, then one every interval_ms until stopped. */
static void *scraper_main(void *arg)
{
    scraper_t *sc = arg;
    pthread_mutex_lock(&sc->lock);
    while (!sc->stop) {
        pthread_mutex_unlock(&sc->lock);
        struct timespec next = bench_realtime_in_ms(sc->interval_ms);
        double t = bench_now_s();
        size_t bytes;
        const char *why = scrape_once(sc->port, &bytes);
        double ms = (bench_now_s() - t) * 1000.0;
        if (ms > sc->max_ms)
            sc->max_ms = ms;
        if (why) {
            if (!sc->failed++)
                snprintf(sc->why, sizeof(sc->why), "%s", why);
        } else {
            sc->scrapes++;
        }
        if (getenv("BENCH_VERBOSE"))
            fprintf(stderr, "    scrape: %zu bytes in %.2f ms%s%s\n", bytes, ms, why ? ": " : "",
                    why ? why : "");
        pthread_mutex_lock(&sc->lock);
        while (!sc->stop && pthread_cond_timedwait(&sc->cond, &sc->lock, &next) != ETIMEDOUT)
            ;
    }
    pthread_mutex_unlock(&sc->lock);
    return NULL;
}

static void scraper_start(scraper_t *sc, uint16_t port, long interval_ms)
{
    memset(sc, 0, sizeof(*sc));
    sc->port = port;
    sc->interval_ms = interval_ms;
    pthread_mutex_init(&sc->lock, NULL);
    pthread_cond_init(&sc->cond, NULL);
    if (pthread_create(&sc->thread, NULL, scraper_main, sc))
        die("scraper", "cannot start its thread");
}

static void scraper_stop(scraper_t *sc)
{
    pthread_mutex_lock(&sc->lock);
    sc->stop = 1;
    pthread_cond_signal(&sc->cond);
    pthread_mutex_unlock(&sc->lock);
    pthread_join(sc->thread, NULL);
    pthread_cond_destroy(&sc->cond);
    pthread_mutex_destroy(&sc->lock);
}

/* The process CPU (ms) one scrape costs, from SCRAPE_BURST scrapes back
 * to back once the pipeline is idle (after the clock), less the CPU the
 * idle process spends in as long a sleep; -1 if a scrape fails. Run by
 * run, the throughput of a side scraped every second cannot resolve a
 * cost of 2 % (rill's own spread is wider): this is the cost itself. */
#define SCRAPE_BURST 100
static double scrape_cost(uint16_t port)
{
    double t = bench_now_s(), c = bench_cpu_us();
    for (int i = 0; i < SCRAPE_BURST; i++) {
        size_t bytes;
        if (scrape_once(port, &bytes))
            return -1;
    }
    double wall = bench_now_s() - t, cpu = bench_cpu_us() - c;
    long us = (long)(wall * 1e6);
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    c = bench_cpu_us();
    nanosleep(&ts, NULL); /* the idle pipeline's own CPU over as long */
    double idle = bench_cpu_us() - c;
    return (cpu - idle) / 1000.0 / SCRAPE_BURST;
}

/* ---- rill ---- */

/* The setters bench_conf_from_env() uses for the extra rill properties. */
static int consumer_set(void *c, const char *k, const char *v, char *e, size_t es)
{
    return rill_consumer_conf_set(c, k, v, e, es);
}

static int producer_set(void *c, const char *k, const char *v, char *e, size_t es)
{
    return rill_producer_conf_set(c, k, v, e, es);
}

/* The rill pipeline; side RILL plain, OBSERVED and FAST watched by an
 * observer whose endpoint is scraped every scrape_ms. */
static result_t run_rill(const char *boot, uint64_t n, int run, int side, long scrape_ms)
{
    char err[512], group[64];
    snprintf(group, sizeof(group), "pipe-%s-%d", side_name[side], run);
    char out[64];
    snprintf(out, sizeof(out), "pout-%s-%d", side_name[side], run);
    bench_pipe_t ms;
    bench_pipe_init(&ms, IN_TOPIC, out);
    rill_system_t *sys = rill_system_new(
        &(rill_system_opts_t){.executors = 2,
                              .spin_us = getenv("BENCH_SPIN_US")
                                             ? (uint32_t)strtoul(getenv("BENCH_SPIN_US"), NULL, 10)
                                             : 0},
        err, sizeof(err));
    if (!sys || rill_system_start(sys))
        die("rill system", sys ? "cannot start" : err);
    rill_consumer_conf_t *c = rill_consumer_conf_new();
    if (rill_consumer_conf_set(c, "bootstrap.servers", boot, err, sizeof(err)) ||
        rill_consumer_conf_set(c, "group.id", group, err, sizeof(err)) ||
        rill_consumer_conf_set_commit_cb(c, bench_pipe_on_commit, &ms))
        die("rill consumer config", err);
    for (int p = 0; p < PARTITIONS; p++)
        if (rill_consumer_conf_assign(c, IN_TOPIC, p, 0, err, sizeof(err)))
            die("rill consumer config", err);
    bench_conf_from_env("bench_pipeline", c, "BENCH_RILL_CONSUMER_CONF", consumer_set);
    rill_producer_conf_t *pc = rill_producer_conf_new();
    /* rill.topics: the output topic is in the client's first metadata
     * request, as the baseline's warm-up makes it known (see warm_up()). */
    const char *pkv[] = {
        "bootstrap.servers", boot,      "enable.idempotence", "true",   "acks", "all",
        "linger.ms",         LINGER_MS, "rill.topics",        ms.topic, NULL};
    for (int i = 0; pkv[i]; i += 2)
        if (rill_producer_conf_set(pc, pkv[i], pkv[i + 1], err, sizeof(err)))
            die("rill producer config", err);
    bench_conf_from_env("bench_pipeline", pc, "BENCH_RILL_PRODUCER_CONF", producer_set);
    rill_stage_opts_t co = {.executor = RILL_EXECUTOR(bench_env_int("BENCH_EX_CONSUMER", 0))};
    rill_stage_opts_t mo = {.executor = RILL_EXECUTOR(bench_env_int("BENCH_EX_MAP", 1)),
                            .mailbox_capacity = 1024};
    rill_stage_opts_t po = {.executor = RILL_EXECUTOR(bench_env_int("BENCH_EX_PRODUCER", 1))};
    rill_pipeline_t *pl = rill_pipeline_new(sys, "pipeline");
    rill_pipeline_add(pl, rill_kafka_source(c), &co);
    rill_pipeline_add(pl, rill_stage_map(bench_pipe_map, &ms), &mo);
    rill_pipeline_add(pl, rill_kafka_sink(pc), &po);
    /* The observed sides: the observer and its endpoint before the clock
     * (a service makes them once, at its start). */
    rill_observer_t *obs = NULL;
    rill_http_t *http = NULL;
    scraper_t sc;
    if (side != RILL) {
        if (!(obs = rill_observer_new(sys, "bench_pipeline")) ||
            rill_observer_add_pipeline(obs, pl))
            die("observer", "cannot watch the pipeline");
        if (rill_http_start(obs, NULL, &http, err, sizeof(err)))
            die("http endpoint", err);
    }
    /* The pipeline makes its producer when it starts: its clock includes
     * the producer's start, which the baseline's warm-up leaves out. */
    double t0 = bench_now_s(), c0 = bench_cpu_us();
    if (rill_pipeline_start(pl, err, sizeof(err)))
        die("rill pipeline", err);
    if (http)
        scraper_start(&sc, rill_http_port(http), scrape_ms);
    rill_aid_t consumer = rill_pipeline_stage(pl, 0), prod = rill_pipeline_stage(pl, 2);
    /* The end: the source's commits (async, every 1,000 confirms; n is a
     * multiple of 1,000) cover every input offset, as the baseline ends
     * with its final commit. */
    pthread_mutex_lock(&ms.lock);
    while (ms.committed_sum < (int64_t)n) {
        struct timespec ts = bench_realtime_in_ms(100);
        pthread_cond_timedwait(&ms.cond, &ms.lock, &ts);
        if (getenv("BENCH_TRACE")) {
            pthread_mutex_unlock(&ms.lock);
            rill_consumer_stats_t tc = {0};
            rill_producer_stats_t tp = {0};
            rill_consumer_stats(sys, consumer, &tc);
            rill_producer_stats(sys, prod, &tp);
            fprintf(stderr,
                    "  %.2fs polled %" PRIu64 " emitted %" PRIu64 " confirmed %" PRIu64
                    " buffered %u unconfirmed %u paused %d | requested %" PRIu64
                    " delivered %" PRIu64 " inflight %u\n",
                    bench_now_s() - t0, tc.polled, tc.emitted, tc.confirmed, tc.buffered,
                    tc.unconfirmed, tc.paused, tp.requested, tp.delivered, tp.inflight);
            pthread_mutex_lock(&ms.lock);
        }
    }
    pthread_mutex_unlock(&ms.lock);
    double dt = bench_now_s() - t0, cpu = bench_cpu_us() - c0;
    double scrape_cpu_ms = 0;
    if (http) {
        scraper_stop(&sc);
        scrape_cpu_ms = scrape_cost(rill_http_port(http));
        if (scrape_cpu_ms < 0)
            sc.failed++;
        rill_http_stop(http);
        rill_observer_free(obs);
        if (sc.failed)
            fprintf(stderr, "bench_pipeline: %s: %" PRIu64 " scrapes failed, the first: %s\n",
                    side_name[side], sc.failed, sc.why);
    }
    rill_consumer_stats_t cs = {0};
    rill_producer_stats_t ps = {0};
    rill_consumer_stats(sys, consumer, &cs);
    rill_producer_stats(sys, prod, &ps);
    if (getenv("BENCH_TRACE"))
        bench_thread_cpu("at the end");
    if (getenv("BENCH_STATS"))
        fprintf(stderr,
                "  rill consumer: polled %" PRIu64 " pauses %" PRIu64 " buffered_max %u committed "
                "%" PRIu64 "; producer: delivered %" PRIu64 " retried %" PRIu64
                " inflight_max %u\n",
                cs.polled, cs.pauses, cs.buffered_max, cs.committed, ps.delivered, ps.retried,
                ps.inflight_max);
    rill_pipeline_result_t pr;
    rill_pipeline_stop(pl); /* the final commit: nothing left to commit */
    int ended = rill_pipeline_wait(pl, -1, &pr) == RILL_OK && pr.end == RILL_PIPELINE_STOPPED;
    if (!ended)
        fprintf(stderr, "bench_pipeline: the rill pipeline ended: %s %s\n", pr.stage, pr.text);
    rill_pipeline_destroy(pl);
    rill_system_stop(sys, 10000);
    rill_system_destroy(sys);
    bench_pipe_destroy(&ms);
    result_t res = {
        .rate = (double)n / dt, .cost = cpu / ((double)n / 1000.0), .ok = !ps.failed && ended};
    if (http) {
        res.scrapes = sc.scrapes;
        res.scrape_failed = sc.failed;
        res.scrape_max_ms = sc.max_ms;
        res.scrape_cpu_ms = scrape_cpu_ms;
        res.ok = res.ok && !sc.failed && sc.scrapes;
    }
    res.ok = bench_check_output("bench_pipeline", boot, ms.topic, IN_TOPIC, PARTITIONS, group, -1,
                                n, VALUE, side_name[side], &res.dups) &&
             res.ok;
    return res;
}

/* ---- main ---- */

int main(int argc, char **argv)
{
    uint64_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 300000;
    int runs = argc > 2 ? atoi(argv[2]) : 5;
    char bin[PATH_MAX];
    bench_broker_path(argc > 3 ? argv[3] : NULL, bin, sizeof(bin));
    /* The mock keeps at most 100,000 records or 5 MiB per partition. */
    if (n < 1000 || n % 1000 || n > (uint64_t)PARTITIONS * 40000 || runs < 1 || runs > MAX_RUNS) {
        fprintf(stderr,
                "usage: bench_pipeline [records: a multiple of 1000 up to %d] [runs 1..%d] "
                "[rill-broker]\n",
                PARTITIONS * 40000, MAX_RUNS);
        return 2;
    }
    /* Which sides run, and how often the observed ones are scraped. */
    long scrape_ms[SIDES] = {0, 0, SCRAPE_MS, bench_env_int("BENCH_SCRAPE_MS", 0)};
    int on[SIDES] = {1, 1, bench_env_int("BENCH_OBSERVED", 1) != 0, scrape_ms[FAST] > 0};
    const char *only = getenv("BENCH_ONLY");
    for (int k = 0; only && k < SIDES; k++)
        on[k] = on[k] && !strcmp(only, side_name[k]);
    if (only && !on[RAW] && !on[RILL] && !on[OBSERVED] && !on[FAST]) {
        fprintf(stderr, "bench_pipeline: BENCH_ONLY=%s: no such side (or it is off)\n", only);
        return 2;
    }
    bench_header("bench_pipeline", 1, argc, argv);
    char boot[512] = "";
    /* The input topic and a fresh output topic per run and side. */
    bench_broker_topic("%s:%d:1", IN_TOPIC, PARTITIONS);
    for (int r = 0; r < runs; r++)
        for (int k = 0; k < SIDES; k++)
            if (on[k])
                bench_broker_topic("pout-%s-%d:%d:1", side_name[k], r, PARTITIONS);
    bench_broker_start("bench_pipeline", bin, boot, sizeof(boot));
    char err[512];
    rill_gen_t gen = RILL_GEN_DEFAULT;
    gen.value_size = VALUE;
    rill_testkit_opts_t po = {.timeout_ms = 300000};
    char bound[64] = "unbounded";
    int limit = bench_env_int("BENCH_RAW_MAX_INFLIGHT", RAW_MAX_INFLIGHT);
    if (limit)
        snprintf(bound, sizeof(bound), "at most %d", limit);
    const char *mode = getenv("BENCH_RAW_POLL");
    char scraped[96] = "";
    for (int k = OBSERVED, at = 0; k < SIDES; k++)
        if (on[k])
            at += snprintf(scraped + at, sizeof(scraped) - (size_t)at, "%s%ld ms",
                           at ? " and every " : ", observed rill scraped every ", scrape_ms[k]);
    printf("bench_pipeline: %" PRIu64 " records of %d bytes over %d partitions, %d alternating "
           "runs, raw loop: %s, raw in flight: %s%s, broker %s\n",
           n, VALUE, PARTITIONS, runs,
           mode && !strcmp(mode, "poll") ? "consumer_poll per record" : "consume_batch_queue",
           bound, scraped, boot);
    fflush(stdout);
    if (rill_testkit_produce_generated(boot, IN_TOPIC, n, &gen, &po, err, sizeof(err)))
        die("produce", err);
    double rate[SIDES][MAX_RUNS], cost[SIDES][MAX_RUNS];
    double scrape_cpu[2 * MAX_RUNS];
    int n_scrape_cpu = 0;
    int ok = 1;
    for (int r = 0; r < runs; r++) {
        result_t res[SIDES];
        /* raw, rill, observed, fast; reversed in odd runs */
        for (int i = 0; i < SIDES; i++) {
            int k = r % 2 ? SIDES - 1 - i : i;
            res[k] = (result_t){.rate = 1, .cost = 1, .ok = 1};
            if (!on[k])
                continue;
            res[k] = k == RAW ? run_raw(boot, n, r) : run_rill(boot, n, r, k, scrape_ms[k]);
        }
        for (int k = 0; k < SIDES; k++) {
            ok = ok && res[k].ok;
            rate[k][r] = res[k].rate;
            cost[k][r] = res[k].cost;
        }
        result_t b = res[RAW], x = res[RILL];
        printf("  run %d: raw %.0f rec/s %.0f us/1k cpu %" PRIu64 " dup%s | rill %.0f rec/s %.0f "
               "us/1k cpu %" PRIu64 " dup%s",
               r + 1, b.rate, b.cost, b.dups, b.ok ? "" : " (CHECK FAILED)", x.rate, x.cost, x.dups,
               x.ok ? "" : " (CHECK FAILED)");
        for (int k = OBSERVED; k < SIDES; k++)
            if (on[k])
                printf(" | observed %ld ms %.0f rec/s %.0f us/1k cpu %" PRIu64 " dup, %" PRIu64
                       " scrapes (longest %.1f ms), %.2f ms cpu a scrape%s",
                       scrape_ms[k], res[k].rate, res[k].cost, res[k].dups, res[k].scrapes,
                       res[k].scrape_max_ms, res[k].scrape_cpu_ms,
                       res[k].ok ? "" : " (CHECK FAILED)");
        for (int k = OBSERVED; k < SIDES; k++)
            if (on[k])
                scrape_cpu[n_scrape_cpu++] = res[k].scrape_cpu_ms;
        printf("\n");
        fflush(stdout);
    }
    printf("  checks: %s\n",
           !ok ? "FAILED (see above)"
           : on[OBSERVED] || on[FAST]
               ? "every run committed all input offsets and every input record "
                 "reached the output topic, uppercased; every scrape was HTTP 200 "
                 "with rill_consumer_records_in_total"
               : "every run committed all input offsets and every input record "
                 "reached the output topic, uppercased");
    bench_summary("pipeline", 0, rate[RILL], rate[RAW], runs, "rec/s");
    bench_summary("pipeline_cost", 1, cost[RILL], cost[RAW], runs, "us/1000rec");
    /* The observed sides against plain rill (rill: observed, baseline:
     * plain rill). The goal: >= 0.98 at one scrape a second. */
    for (int k = OBSERVED; k < SIDES; k++) {
        if (!on[k])
            continue;
        char name[48], cname[64];
        if (k == OBSERVED)
            snprintf(name, sizeof(name), "pipeline_observed");
        else
            snprintf(name, sizeof(name), "pipeline_observed_%ldms", scrape_ms[k]);
        snprintf(cname, sizeof(cname), "%s_cost", name);
        bench_summary(name, 0, rate[k], rate[RILL], runs, "rec/s");
        bench_summary(cname, 1, cost[k], cost[RILL], runs, "us/1000rec");
    }
    bench_stats_t sc = {0};
    if (n_scrape_cpu) {
        sc = bench_stats(scrape_cpu, n_scrape_cpu);
        printf("  scrape cost: %.2f ms cpu per scrape, median of %d observed runs (%.2f..%.2f; "
               "%d scrapes back to back on the idle pipeline after the clock, less its idle "
               "cpu): at one a second %.3f %% of one core\n",
               sc.median, sc.n, sc.min, sc.max, SCRAPE_BURST, sc.median / 10.0);
    }
    if (on[OBSERVED] && on[RILL]) {
        bench_stats_t o = bench_stats(rate[OBSERVED], runs), p = bench_stats(rate[RILL], runs);
        double ratio = p.median != 0 ? o.median / p.median : 0;
        printf("  goal pipeline_observed (scraped every %d ms): ratio >= 0.98: %s (%.3f; per "
               "run rill's own throughput moves by far more, see the spread lines)\n",
               SCRAPE_MS, ratio >= 0.98 ? "met" : "missed", ratio);
        /* The same goal judged by the scrape's cost (no noise of the
         * pipeline's throughput in it): the CPU the scrapes of a second
         * take, against the CPU the observed pipeline spends in a second. */
        double pipe_ms = o.median * bench_stats(cost[OBSERVED], runs).median / 1e6;
        double scrape_ms_s = sc.median * 1000.0 / SCRAPE_MS;
        double share = pipe_ms > 0 ? scrape_ms_s / pipe_ms : 1;
        printf("  goal pipeline_observed by the scrape's cost: %.3f ms cpu a second of %.0f ms "
               "the pipeline spends, %.3f %% <= 2 %%: %s\n",
               scrape_ms_s, pipe_ms, share * 100.0, share <= 0.02 ? "met" : "missed");
        fflush(stdout);
    }
    return ok ? 0 : 1;
}
