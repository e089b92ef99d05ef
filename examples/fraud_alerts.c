/*
 * fraud_alerts: more than 3 authorisations of one card within a 5-minute
 * tumbling window is possible fraud (the KSQL query of the Confluent
 * talk), each alert enriched with the card's holder from a table.
 *
 *   kafka-source  "authorisations" (key: the card), event time = the
 *                 record's timestamp
 *   window        tumbling 5-minute windows per card, a count each, in a
 *                 memory store with the records' offsets; one final
 *                 result per window when it closes: when its partition's
 *                 stream time (the latest event time seen) passes its end
 *                 + 10 s of grace. The data here is an hour old, so the
 *                 wall-clock close is off; a "tick" record per partition
 *                 at the end carries stream time past the last window.
 *   filter        count > 3
 *   join          left join with the table of "cards" (card -> holder;
 *                 a tombstone deletes a card), made an alert record
 *   kafka-sink    "possible_fraud"
 *
 * The program produces the cards and the authorisations itself (against
 * an embedded broker unless --bootstrap), runs the pipeline until the
 * alerts stop coming, then reads "possible_fraud" back and compares each
 * alert with an independent computation from the same data.
 *
 * usage: fraud_alerts [--cards N] [--auths N] [--bootstrap SERVERS] [--timeout S]
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <rill/rill.h>
#include <rill/state.h>
#include <rill/testkit.h>

#define WINDOW_MS (5 * 60 * 1000)

/* ---- the processing: a count, a filter, a join ---- */

static rill_err_t count_auth(void *opaque, void *agg, const rill_elem_t *in)
{
    (void)opaque;
    (void)in;
    ++*(uint32_t *)agg;
    return RILL_OK;
}

static int more_than_3(void *opaque, const rill_elem_t *e)
{
    (void)opaque;
    uint32_t n;
    memcpy(&n, rill_window_result(e)->agg, sizeof(n));
    return n > 3;
}

static rill_err_t card_of(void *opaque, const rill_elem_t *in, const void **key, size_t *len)
{
    (void)opaque;
    const rill_window_result_t *w = rill_window_result(in);
    *key = w->key;
    *len = w->key_len;
    return w->key_len ? RILL_OK : RILL_ENOENT;
}

static rill_err_t make_alert(void *opaque, rill_elem_t *in, const void *holder, size_t holder_len,
                             rill_elem_t *out)
{
    (void)opaque;
    const rill_window_result_t *w = rill_window_result(in);
    uint32_t n;
    memcpy(&n, w->agg, sizeof(n));
    char value[256];
    int len = snprintf(value, sizeof(value), "card=%.*s holder=%.*s count=%u window=%" PRId64,
                       (int)w->key_len, (const char *)w->key, holder ? (int)holder_len : 9,
                       holder ? (const char *)holder : "(unknown)", n, w->start_ms);
    rill_produce_t *p = rill_produce_new("possible_fraud", RILL_PARTITION_ANY, w->key, w->key_len,
                                         value, (size_t)len);
    rill_elem_release(in);
    if (!p)
        return RILL_ENOMEM;
    *out = rill_produce_elem(p);
    return RILL_OK;
}

/* ---- the data: deterministic, and the expected alerts ---- */

static int64_t base_ms; /* an hour ago, on a window boundary */

/* Authorisation i: its card and time. Some cards burst: 4 to 7 in a few
 * seconds at a time; the others come at most 3 a window. */
static void auth(long i, int cards, char *card, int64_t *ts)
{
    uint64_t h = (uint64_t)i * 0x9E3779B97F4A7C15ull;
    int c = (int)((h >> 33) % (uint64_t)cards);
    int64_t t = base_ms + (int64_t)((h >> 7) % (12ull * WINDOW_MS));
    if (i % 10 < 5) { /* bursts: groups of 5 of card i/50, one window each */
        c = (int)((i / 10) % cards);
        t = base_ms + (i / 10 % 12) * WINDOW_MS + (i % 10) * 1000;
    }
    snprintf(card, 32, "card-%04d", c);
    *ts = t;
}

static int by_time(const void *a, const void *b)
{
    const rill_testkit_record_t *x = a, *y = b;
    return (x->timestamp > y->timestamp) - (x->timestamp < y->timestamp);
}

typedef struct expect {
    char card[32];
    int64_t window;
    uint32_t count;
    int seen;
} expect_t;

int main(int argc, char **argv)
{
    long cards = 2000, auths = 20000, timeout_s = 120;
    const char *boot = NULL;
    static const struct option opts[] = {{"cards", required_argument, NULL, 'c'},
                                         {"auths", required_argument, NULL, 'a'},
                                         {"bootstrap", required_argument, NULL, 'b'},
                                         {"timeout", required_argument, NULL, 't'},
                                         {NULL, 0, NULL, 0}};
    for (int o; (o = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        if (o == 'c')
            cards = atol(optarg);
        else if (o == 'a')
            auths = atol(optarg);
        else if (o == 'b')
            boot = optarg;
        else if (o == 't')
            timeout_s = atol(optarg);
        else {
            fprintf(stderr, "usage: fraud_alerts [--cards N] [--auths N] [--bootstrap SERVERS] "
                            "[--timeout S]\n");
            return 2;
        }
    }
    if (cards < 1 || cards > 9999 || auths < 10) {
        fprintf(stderr, "fraud_alerts: bad arguments\n");
        return 2;
    }
    char err[512];
    base_ms = ((int64_t)time(NULL) * 1000 - 3600 * 1000) / WINDOW_MS * WINDOW_MS;
    rill_broker_t *broker = NULL;
    if (!boot) {
        if (!(broker = rill_broker_new(1, err, sizeof(err))) ||
            rill_broker_create_topic(broker, "authorisations", 4, 1, err, sizeof(err)) ||
            rill_broker_create_topic(broker, "cards", 2, 1, err, sizeof(err)) ||
            rill_broker_create_topic(broker, "possible_fraud", 2, 1, err, sizeof(err))) {
            rill_log(RILL_LOG_ERR, "fraud_alerts", "embedded broker: %s", err);
            return 1;
        }
        boot = rill_broker_bootstraps(broker);
        printf("embedded broker at %s\n", boot);
    }

    /* The cards: a holder each, every tenth renamed later, every 25th
     * deleted (a tombstone). */
    size_t nc = (size_t)cards + (size_t)cards / 10 + (size_t)cards / 25 + 3;
    rill_testkit_record_t *cr = calloc(nc, sizeof(*cr));
    char(*ck)[2][32] = calloc(nc, sizeof(*ck));
    char(*holder)[32] = calloc((size_t)cards, sizeof(*holder));
    size_t n = 0;
    for (int pass = 0; pass < 3; pass++)
        for (long c = 0; c < cards; c++) {
            if ((pass == 1 && c % 10) || (pass == 2 && c % 25))
                continue;
            snprintf(ck[n][0], sizeof(ck[n][0]), "card-%04d", (int)c);
            if (pass < 2)
                snprintf(ck[n][1], sizeof(ck[n][1]), "%s Holder-%d", pass ? "Renamed" : "First",
                         (int)c);
            strcpy(holder[c], pass < 2 ? ck[n][1] : "");
            cr[n] = (rill_testkit_record_t){.partition = RILL_PARTITION_ANY,
                                            .key = ck[n][0],
                                            .key_len = strlen(ck[n][0]),
                                            .value = pass < 2 ? ck[n][1] : NULL,
                                            .value_len = pass < 2 ? strlen(ck[n][1]) : 0};
            n++;
        }
    rill_testkit_opts_t po = {.timeout_ms = 60000};
    if (rill_testkit_produce(boot, "cards", cr, n, &po, err, sizeof(err))) {
        rill_log(RILL_LOG_ERR, "fraud_alerts", "produce cards: %s", err);
        return 1;
    }
    free(cr);
    free(ck);

    /* The authorisations, and the alerts an independent count expects. */
    rill_testkit_record_t *ar = calloc((size_t)auths, sizeof(*ar));
    char(*ak)[32] = calloc((size_t)auths, sizeof(*ak));
    expect_t *ex = calloc((size_t)auths, sizeof(*ex));
    size_t nex = 0;
    for (long i = 0; i < auths; i++) {
        int64_t ts;
        auth(i, (int)cards, ak[i], &ts);
        ar[i] = (rill_testkit_record_t){.partition = RILL_PARTITION_ANY,
                                        .timestamp = ts,
                                        .key = ak[i],
                                        .key_len = strlen(ak[i]),
                                        .value = "auth",
                                        .value_len = 4};
        int64_t w = ts / WINDOW_MS * WINDOW_MS;
        size_t j = 0;
        while (j < nex && (ex[j].window != w || strcmp(ex[j].card, ak[i])))
            j++;
        if (j == nex) {
            strcpy(ex[nex].card, ak[i]);
            ex[nex++].window = w;
        }
        ex[j].count++;
    }
    /* In time order, as authorisations happen (within the grace, order
     * would not matter; an hour apart, it does). */
    qsort(ar, (size_t)auths, sizeof(*ar), by_time);
    if (rill_testkit_produce(boot, "authorisations", ar, (size_t)auths, &po, err, sizeof(err))) {
        rill_log(RILL_LOG_ERR, "fraud_alerts", "produce authorisations: %s", err);
        return 1;
    }
    /* Stream time past the last window, in every partition. */
    for (int part = 0; part < 4; part++) {
        rill_testkit_record_t tick = {.partition = part,
                                      .timestamp = base_ms + 13 * WINDOW_MS,
                                      .key = "tick",
                                      .key_len = 4,
                                      .value = "tick",
                                      .value_len = 4};
        if (rill_testkit_produce(boot, "authorisations", &tick, 1, &po, err, sizeof(err))) {
            rill_log(RILL_LOG_ERR, "fraud_alerts", "produce ticks: %s", err);
            return 1;
        }
    }
    free(ar);
    size_t expected = 0;
    for (size_t j = 0; j < nex; j++)
        expected += ex[j].count > 3;
    printf("produced %zu card records and %ld authorisations; %zu card-windows over 3 expected\n",
           n, auths, expected);

    /* The service. */
    rill_system_t *sys = rill_system_new(NULL, err, sizeof(err));
    if (!sys || rill_system_start(sys))
        return 1;
    rill_consumer_conf_t *tc = rill_consumer_conf_new();
    rill_consumer_conf_set(tc, "bootstrap.servers", boot, err, sizeof(err));
    rill_table_t *table = NULL;
    rill_store_t *store = NULL;
    if (rill_table_open(sys, "cards", tc, NULL, &table, err, sizeof(err)) ||
        rill_store_open_memory("fraud-windows", &store, err, sizeof(err))) {
        rill_log(RILL_LOG_ERR, "fraud_alerts", "table or store: %s", err);
        return 1;
    }
    rill_consumer_conf_t *cc = rill_consumer_conf_new();
    const char *topics[] = {"authorisations"};
    rill_producer_conf_t *pc = rill_producer_conf_new();
    if (rill_consumer_conf_set(cc, "bootstrap.servers", boot, err, sizeof(err)) ||
        rill_consumer_conf_set(cc, "group.id", "fraud-alerts", err, sizeof(err)) ||
        rill_consumer_conf_subscribe(cc, topics, 1, err, sizeof(err)) ||
        rill_consumer_conf_use_store(cc, store) ||
        rill_producer_conf_set(pc, "bootstrap.servers", boot, err, sizeof(err)) ||
        rill_producer_conf_set(pc, "rill.topics", "possible_fraud", err, sizeof(err))) {
        rill_log(RILL_LOG_ERR, "fraud_alerts", "configuration: %s", err);
        return 1;
    }
    rill_window_opts_t wo = {.type = RILL_WINDOW_TUMBLING,
                             .size_ms = WINDOW_MS,
                             .grace_ms = 10000,
                             .wall_close_ms = UINT64_MAX};
    rill_window_ops_t ops = {.agg_size = sizeof(uint32_t), .add = count_auth};
    rill_join_opts_t jo = {.key_fn = card_of};
    rill_pipeline_t *p = rill_pipeline_new(sys, "fraud-alerts");
    rill_pipeline_add(p, rill_kafka_source(cc), NULL);
    rill_pipeline_add(p, rill_stage_window(store, &wo, &ops, NULL), NULL);
    rill_pipeline_add(p, rill_stage_filter(more_than_3, NULL), NULL);
    rill_pipeline_add(p, rill_stage_join(table, RILL_JOIN_LEFT, &jo, make_alert, NULL), NULL);
    rill_pipeline_add(p, rill_kafka_sink(pc), NULL);
    if (rill_pipeline_start_supervised(p, NULL, err, sizeof(err))) {
        rill_log(RILL_LOG_ERR, "fraud_alerts", "start: %s", err);
        return 1;
    }

    /* Until every window closed (the store holds none) and the alerts
     * are in the topic. */
    rill_consumed_t *got = NULL;
    size_t alerts = 0;
    for (long tick = 0; tick < timeout_s * 2 && alerts < expected; tick++) {
        struct timespec ts = {0, 500 * 1000 * 1000};
        nanosleep(&ts, NULL); /* pacing the checks */
        rill_store_stats_t ss;
        rill_store_stats(store, &ss);
        if (ss.windows_closed < nex)
            continue;
        rill_consumed_destroy(got);
        got = NULL;
        rill_testkit_opts_t co = {.timeout_ms = 10000};
        rill_testkit_consume(boot, "possible_fraud", RILL_CONSUME_TO_END, &co, &got, err,
                             sizeof(err));
        alerts = rill_consumed_count(got);
    }
    rill_pipeline_result_t res;
    rill_pipeline_stop(p);
    rill_pipeline_wait(p, 30000, &res);
    rill_pipeline_destroy(p);
    rill_table_close(table);
    rill_system_stop(sys, 10000);
    rill_system_destroy(sys);
    rill_store_close(store);

    /* Every alert against the independent count and the cards' last holder. */
    size_t wrong = 0, dups = 0, matched = 0;
    for (size_t i = 0; i < alerts; i++) {
        const rill_testkit_record_t *r = rill_consumed_at(got, i);
        char v[256] = "", card[32] = "", who[64] = "";
        unsigned count = 0;
        long long window = 0;
        memcpy(v, r->value, r->value_len < 255 ? r->value_len : 255);
        char *h = strstr(v, " holder="), *c = strstr(v, " count=");
        if (sscanf(v, "card=%31s", card) != 1 || !h || !c ||
            sscanf(c, " count=%u window=%lld", &count, &window) != 2) {
            wrong++;
            continue;
        }
        snprintf(who, sizeof(who), "%.*s", (int)(c - h - 8), h + 8);
        long id = atol(card + 5);
        const char *want = id >= 0 && id < cards && holder[id][0] ? holder[id] : "(unknown)";
        size_t j = 0;
        while (j < nex && (ex[j].window != window || strcmp(ex[j].card, card)))
            j++;
        if (j == nex || ex[j].count != count || count <= 3 || strcmp(who, want))
            wrong++;
        else if (ex[j].seen++)
            dups++;
        else
            matched++;
    }
    printf("\nsummary\n");
    printf("  authorisations                 %ld over %ld cards\n", auths, cards);
    printf("  card-windows over 3 expected   %zu\n", expected);
    printf("  alerts in possible_fraud       %zu (%zu duplicates, %zu wrong)\n", alerts, dups,
           wrong);
    if (alerts)
        printf("  e.g. %.*s\n", (int)rill_consumed_at(got, 0)->value_len,
               (const char *)rill_consumed_at(got, 0)->value);
    int ok = matched == expected && wrong == 0 && res.end != RILL_PIPELINE_FAILED;
    if (ok)
        printf("  OK: every alert is right (count and holder), none missing\n");
    else
        printf("  FAILED: %zu of %zu alerts right, %zu wrong (%s)\n", matched, expected, wrong,
               res.text);
    rill_consumed_destroy(got);
    free(ex);
    free(ak);
    free(holder);
    rill_broker_destroy(broker);
    return ok ? 0 : 1;
}
