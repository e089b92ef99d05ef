/*
 * meter_averages: the average consumption per meter per hour, with the
 * state and its offsets stored together (scala-kafka-client's stateful
 * example, made exact after a kill -9).
 *
 *   kafka-source   "readings", every partition starting from the offset
 *                  stored with its state (rill_consumer_conf_use_store)
 *   [throttle]     --rate R: at most R readings a second (so a test can
 *                  kill it mid-way)
 *   averages       a stateful stage over an LMDB store: per meter and
 *                  hour, the sum and count of its readings; the store
 *                  commits them with the offsets they reflect, then
 *                  confirms the readings
 *
 * A reading is key "meter-<m>", value "<event time ms> <watt-hours>".
 * Kill the process at any moment and start it again on the same --store:
 * each partition resumes from the offset stored with its state, so no
 * reading is lost and none is counted twice.
 *
 * At the end (every partition's stored offset at its end offset), the
 * program reads the whole topic again with a plain librdkafka consumer,
 * computes every average independently, and compares it with the store.
 *
 * usage: meter_averages [--readings N] [--meters M] [--hours H]
 *                       [--bootstrap SERVERS --no-produce] [--store DIR]
 *                       [--rate R] [--timeout S]
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <rill/rill.h>
#include <rill/state.h>
#include <rill/testkit.h>

#define TOPIC "readings"
#define PARTS 4

typedef struct agg {
    uint64_t wh, count;
} agg_t;

/* ---- the stateful function: the whole of the processing ---- */

static rill_err_t add_reading(void *opaque, rill_state_t *st, rill_elem_t *in, rill_emitter_t *out)
{
    (void)out;
    uint64_t *processed = opaque;
    const rd_kafka_message_t *m = rill_record(in);
    char text[64] = "", key[96];
    long long ts = 0, wh = 0;
    if (m->len < sizeof(text))
        memcpy(text, m->payload, m->len);
    if (!m->key || sscanf(text, "%lld %lld", &ts, &wh) != 2) {
        rill_elem_reject(in, "not a reading"); /* a poison pill: to the dead letters */
        return RILL_OK;
    }
    int n = snprintf(key, sizeof(key), "%.*s|%06lld", (int)m->key_len, (const char *)m->key,
                     ts / 3600000);
    agg_t a = {0, 0};
    const void *v;
    size_t vlen;
    if (rill_state_get(st, key, (size_t)n, &v, &vlen) == RILL_OK && vlen == sizeof(a))
        memcpy(&a, v, sizeof(a));
    a.wh += (uint64_t)wh;
    a.count++;
    rill_elem_release(in);
    if (++*processed % 5000 == 0) {
        printf("processed %" PRIu64 "\n", *processed);
        fflush(stdout);
    }
    return rill_state_put(st, key, (size_t)n, &a, sizeof(a));
}

/* ---- the data: deterministic, so a test can compute it too ---- */

static void reading(uint64_t i, int meters, int hours, char *key, char *value)
{
    uint64_t h = i * 0x9E3779B97F4A7C15ull;
    snprintf(key, 32, "meter-%04d", (int)((h >> 33) % (uint64_t)meters));
    long long ts = 1700000000000ll + (long long)((h >> 11) % ((uint64_t)hours * 3600000u));
    snprintf(value, 32, "%lld %d", ts, (int)(i % 997) + 1);
}

/* ---- the independent check ---- */

typedef struct tally {
    char key[48];
    agg_t a;
} tally_t;

typedef struct check {
    tally_t *v;
    size_t n, cap;
    uint64_t mismatches, keys;
} check_t;

static tally_t *tally_of(check_t *c, const char *key, size_t len)
{
    for (size_t i = 0; i < c->n; i++)
        if (strlen(c->v[i].key) == len && !memcmp(c->v[i].key, key, len))
            return &c->v[i];
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 256;
        c->v = realloc(c->v, c->cap * sizeof(*c->v));
    }
    tally_t *t = &c->v[c->n++];
    memset(t, 0, sizeof(*t));
    memcpy(t->key, key, len < sizeof(t->key) - 1 ? len : sizeof(t->key) - 1);
    return t;
}

static int compare(void *opaque, const void *key, size_t klen, const void *value, size_t vlen)
{
    check_t *c = opaque;
    agg_t a;
    tally_t *t = tally_of(c, key, klen);
    memcpy(&a, value, vlen == sizeof(a) ? sizeof(a) : 0);
    c->keys++;
    c->mismatches += vlen != sizeof(a) || a.wh != t->a.wh || a.count != t->a.count;
    return 0;
}

/* Read the whole topic with a plain consumer and sum it up. */
static int independent(const char *boot, const int64_t *end, check_t *c, uint64_t *readings)
{
    char err[512];
    rd_kafka_conf_t *kc = rd_kafka_conf_new();
    rd_kafka_conf_set(kc, "bootstrap.servers", boot, err, sizeof(err));
    rd_kafka_conf_set(kc, "group.id", "meter-averages-check", err, sizeof(err));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, kc, err, sizeof(err));
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(PARTS);
    int64_t left = 0;
    for (int p = 0; p < PARTS; p++) {
        rd_kafka_topic_partition_list_add(l, TOPIC, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
        left += end[p];
    }
    rd_kafka_assign(rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    for (int idle = 0; left > 0 && idle < 300;) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (!m) {
            idle++;
            continue;
        }
        long long ts, wh;
        char text[64] = "", key[96];
        if (!m->err && m->len < sizeof(text) && m->key) {
            memcpy(text, m->payload, m->len);
            if (sscanf(text, "%lld %lld", &ts, &wh) == 2) {
                int n = snprintf(key, sizeof(key), "%.*s|%06lld", (int)m->key_len,
                                 (const char *)m->key, ts / 3600000);
                tally_t *t = tally_of(c, key, (size_t)n);
                t->a.wh += (uint64_t)wh;
                t->a.count++;
                ++*readings;
            }
        }
        left -= !m->err;
        rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return left == 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
    long readings = 100000, meters = 50, hours = 6, rate = 0, timeout_s = 120;
    const char *boot = NULL, *store_dir = NULL;
    int produce = 1;
    static const struct option opts[] = {{"readings", required_argument, NULL, 'n'},
                                         {"meters", required_argument, NULL, 'm'},
                                         {"hours", required_argument, NULL, 'H'},
                                         {"bootstrap", required_argument, NULL, 'b'},
                                         {"store", required_argument, NULL, 's'},
                                         {"rate", required_argument, NULL, 'r'},
                                         {"timeout", required_argument, NULL, 't'},
                                         {"no-produce", no_argument, NULL, 'P'},
                                         {NULL, 0, NULL, 0}};
    for (int c; (c = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        switch (c) {
        case 'n':
            readings = atol(optarg);
            break;
        case 'm':
            meters = atol(optarg);
            break;
        case 'H':
            hours = atol(optarg);
            break;
        case 'b':
            boot = optarg;
            break;
        case 's':
            store_dir = optarg;
            break;
        case 'r':
            rate = atol(optarg);
            break;
        case 't':
            timeout_s = atol(optarg);
            break;
        case 'P':
            produce = 0;
            break;
        default:
            fprintf(stderr, "usage: meter_averages [--readings N] [--meters M] [--hours H] "
                            "[--bootstrap SERVERS --no-produce] [--store DIR] [--rate R] "
                            "[--timeout S]\n");
            return 2;
        }
    }
    if (readings < 1 || meters < 1 || meters > 9999 || hours < 1 || rate < 0) {
        fprintf(stderr, "meter_averages: bad arguments\n");
        return 2;
    }
    char err[512], tmp[64] = "";
    rill_broker_t *broker = NULL;
    if (!boot) {
        if (!(broker = rill_broker_new(1, err, sizeof(err))) ||
            rill_broker_create_topic(broker, TOPIC, PARTS, 1, err, sizeof(err))) {
            rill_log(RILL_LOG_ERR, "meter_averages", "embedded broker: %s", err);
            return 1;
        }
        boot = rill_broker_bootstraps(broker);
        printf("embedded broker at %s\n", boot);
    }
    if (!store_dir) {
        strcpy(tmp, "/tmp/meter-averages-XXXXXX");
        if (!mkdtemp(tmp))
            return 1;
        store_dir = tmp;
    }
    if (produce) {
        rill_testkit_record_t *recs = calloc((size_t)readings, sizeof(*recs));
        char(*kv)[2][32] = calloc((size_t)readings, sizeof(*kv));
        for (long i = 0; i < readings; i++) {
            reading((uint64_t)i, (int)meters, (int)hours, kv[i][0], kv[i][1]);
            recs[i] = (rill_testkit_record_t){.partition = RILL_PARTITION_ANY,
                                              .key = kv[i][0],
                                              .key_len = strlen(kv[i][0]),
                                              .value = kv[i][1],
                                              .value_len = strlen(kv[i][1])};
        }
        rill_testkit_opts_t po = {.timeout_ms = 120000};
        rill_err_t e =
            rill_testkit_produce(boot, TOPIC, recs, (size_t)readings, &po, err, sizeof(err));
        free(recs);
        free(kv);
        if (e) {
            rill_log(RILL_LOG_ERR, "meter_averages", "produce: %s", err);
            return 1;
        }
        printf("produced %ld readings of %ld meters over %ld hours\n", readings, meters, hours);
    }

    /* The service: a store, a source that starts where the store says,
     * and the stateful stage. */
    rill_store_t *store = NULL;
    rill_store_opts_t so = {.no_sync = 1}; /* survives kill -9; not a power cut */
    if (rill_store_open_lmdb(store_dir, &so, &store, err, sizeof(err))) {
        rill_log(RILL_LOG_ERR, "meter_averages", "store: %s", err);
        return 1;
    }
    rill_system_t *sys = rill_system_new(NULL, err, sizeof(err));
    if (!sys || rill_system_start(sys))
        return 1;
    rill_consumer_conf_t *cc = rill_consumer_conf_new();
    const char *topics[] = {TOPIC};
    if (rill_consumer_conf_set(cc, "bootstrap.servers", boot, err, sizeof(err)) ||
        rill_consumer_conf_set(cc, "group.id", "meter-averages", err, sizeof(err)) ||
        /* A killed instance's partitions are taken over within 6 s
         * (librdkafka's default is 45 s). */
        rill_consumer_conf_set(cc, "session.timeout.ms", "6000", err, sizeof(err)) ||
        rill_consumer_conf_set(cc, "heartbeat.interval.ms", "500", err, sizeof(err)) ||
        rill_consumer_conf_subscribe(cc, topics, 1, err, sizeof(err)) ||
        rill_consumer_conf_use_store(cc, store)) {
        rill_log(RILL_LOG_ERR, "meter_averages", "consumer: %s", err);
        return 1;
    }
    uint64_t processed = 0;
    rill_pipeline_t *p = rill_pipeline_new(sys, "meter-averages");
    rill_pipeline_add(p, rill_kafka_source(cc), NULL);
    if (rate)
        rill_pipeline_add(p, rill_stage_throttle((uint32_t)rate, 1000), NULL);
    rill_pipeline_add(p, rill_stage_stateful(store, NULL, add_reading, &processed), NULL);
    if (rill_pipeline_start_supervised(p, NULL, err, sizeof(err))) {
        rill_log(RILL_LOG_ERR, "meter_averages", "start: %s", err);
        return 1;
    }
    printf("store %s; consuming %s\n", store_dir, TOPIC);
    fflush(stdout);

    /* Wait until every partition's stored offset is at its end offset. */
    rd_kafka_conf_t *kc = rd_kafka_conf_new();
    rd_kafka_conf_set(kc, "bootstrap.servers", boot, err, sizeof(err));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, kc, err, sizeof(err));
    int64_t end[PARTS], total = 0, stored = 0;
    for (int i = 0; i < PARTS; i++) {
        int64_t lo;
        if (rd_kafka_query_watermark_offsets(rk, TOPIC, i, &lo, &end[i], 10000))
            return 1;
        total += end[i];
    }
    rd_kafka_destroy(rk);
    rill_store_wait_offsets(store, TOPIC, PARTS, end, (int)(timeout_s * 1000));
    for (int i = 0; i < PARTS; i++) {
        int64_t o = 0;
        if (rill_store_offset(store, TOPIC, i, &o) == RILL_OK)
            stored += o;
    }
    rill_pipeline_result_t res;
    rill_pipeline_stop(p);
    if (rill_pipeline_wait(p, 30000, &res)) {
        printf("FAILED: the pipeline did not stop\n");
        fflush(stdout);
        _exit(1);
    }
    rill_pipeline_destroy(p);
    rill_system_stop(sys, 10000);
    rill_system_destroy(sys);

    /* The independent computation, and every average compared. */
    check_t c = {0};
    uint64_t read = 0;
    int whole = independent(boot, end, &c, &read) == 0;
    size_t expected_keys = c.n;
    for (int i = 0; i < PARTS; i++)
        rill_store_scan(store, TOPIC, i, NULL, 0, NULL, 0, compare, &c);
    rill_store_stats_t ss;
    rill_store_stats(store, &ss);
    rill_store_close(store);
    printf("\nsummary\n");
    printf("  readings in %s (%d partitions)   %" PRId64 ", stored offsets at %" PRId64 "\n", TOPIC,
           PARTS, total, stored);
    printf("  readings this run processed      %" PRIu64 " in %" PRIu64 " commits\n", processed,
           ss.commits);
    printf("  meter-hours in the store         %" PRIu64 " (independent count: %zu)\n", c.keys,
           expected_keys);
    if (c.n > 0 && c.keys) {
        printf("  e.g. %-24s       %.2f Wh average over %" PRIu64 " readings\n", c.v[0].key,
               (double)c.v[0].a.wh / (double)c.v[0].a.count, c.v[0].a.count);
    }
    int ok = whole && stored == total && c.keys == expected_keys && c.n == expected_keys &&
             c.mismatches == 0 && res.end != RILL_PIPELINE_FAILED;
    if (ok)
        printf("  OK: every average exact (%" PRIu64 " readings read independently), none lost, "
               "none counted twice\n",
               read);
    else
        printf("  FAILED: %" PRIu64 " averages differ, %zu keys missing or extra, stored %" PRId64
               " of %" PRId64 "%s\n",
               c.mismatches, c.n - expected_keys + (expected_keys - c.keys), stored, total,
               whole ? "" : ", topic not read whole");
    free(c.v);
    rill_broker_destroy(broker);
    if (tmp[0]) {
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", tmp);
        if (system(cmd) != 0)
            rill_log(RILL_LOG_WARNING, "meter_averages", "could not remove %s", tmp);
    }
    return ok ? 0 : 1;
}
