/*
 * exactly_once: consume -> transform -> produce, each input's output and
 * its consumption committed together, in Kafka transactions (EOS v2).
 *
 *   a pipeline under a supervisor of its own (rill_pipeline_start_supervised)
 *   ├── kafka-source  topic <prefix>-in, rill.commit=transaction
 *   ├── transform     the value in upper case, header in-seq = the input's seq
 *   └── txn-sink      rill_kafka_txn_sink: records + input offsets per transaction
 *
 * Failures, injected on purpose unless --no-inject: the 6th EndTxn fails
 * with an abortable error (embedded broker only: its mock cluster takes
 * injected errors), and the transform fails once half way through
 * partition 0 (--fail-at SEQ; -1: never), which fails the pipeline's run;
 * its supervisor starts another. Either way the open transaction is
 * aborted and the source goes back to the offsets of the last committed
 * one: the aborted records are produced again, in a transaction that
 * commits. The sink's transaction callback logs every abort (rill_log) and
 * tracks the committed input offsets; once they are at the end of every
 * input partition, the pipeline stops and the output is read back with
 * isolation.level=read_committed.
 *
 * The embedded broker keeps no transaction markers: aborted records stay
 * visible to read_committed readers there, so the output holds extra
 * copies, at most the records of aborted transactions (a run that ended
 * unable to abort its open transaction tells it aborted too: a real
 * cluster aborts it when the next run's producer fences the old one). A
 * real cluster (--bootstrap) hides them all: there every input must be
 * read exactly once.
 *
 * usage: exactly_once [--records N] [--partitions P] [--fail-at SEQ]
 *                     [--bootstrap SERVERS [--mock]] [--prefix NAME] [--no-inject]
 *   --mock: SERVERS are a rill-broker process (no transaction markers either),
 *           started with --topic <prefix>-in:P --topic <prefix>-out:P
 *           (its mock cluster does not take CreateTopics)
 */
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <rill/rill.h>
#include <rill/testkit.h>

#define LOG         "exactly_once"
#define API_END_TXN 26 /* Kafka's API key of EndTxn */
#define MAX_PARTS   64
#define TXN_RECORDS 500 /* rill.txn.max.records: the most records one transaction holds */

typedef struct app {
    const char *boot;
    char in[200], out[200], group[200], txn_id[200];
    uint64_t records;
    int parts;
    _Atomic int64_t fail_at; /* the transform fails once at this seq; -1 never */
    pthread_mutex_t mu;      /* the fields below: the transaction callback's */
    uint64_t committed, aborted, records_committed, records_aborted;
    int64_t done[MAX_PARTS]; /* per input partition: the committed offset (next to consume) */
    int64_t end[MAX_PARTS];  /* per input partition: its end offset */
} app_t;

/* ---- the transaction callback (on the sink's executor) ---- */

static void on_txn(void *opaque, const rill_txn_info_t *t)
{
    app_t *a = opaque;
    pthread_mutex_lock(&a->mu);
    if (t->event == RILL_TXN_COMMITTED) {
        a->committed++;
        a->records_committed += t->records;
        for (int i = 0; t->offsets && i < t->offsets->cnt; i++) {
            const rd_kafka_topic_partition_t *tp = &t->offsets->elems[i];
            if (!strcmp(tp->topic, a->in) && tp->partition >= 0 && tp->partition < a->parts)
                a->done[tp->partition] = tp->offset;
        }
    } else {
        a->aborted++;
        a->records_aborted += t->records;
        rill_log(RILL_LOG_WARNING, LOG,
                 "transaction %" PRIu64 " aborted with %" PRIu64 " records: %s (%s); the input "
                 "goes back to the last commit",
                 t->seq, t->records, rd_kafka_err2name(t->err), t->reason);
    }
    pthread_mutex_unlock(&a->mu);
}

static int all_committed(app_t *a)
{
    pthread_mutex_lock(&a->mu);
    int ok = 1;
    for (int p = 0; p < a->parts; p++)
        ok &= a->done[p] == a->end[p];
    pthread_mutex_unlock(&a->mu);
    return ok;
}

/* ---- the transform: "seq=<n> key=..." -> "SEQ=<n> KEY=...", header in-seq=<n> ---- */

static rill_err_t transform(void *opaque, rill_elem_t *in, rill_elem_t *out)
{
    app_t *a = opaque;
    const rd_kafka_message_t *m = rill_record(in);
    if (!m || !m->payload || m->len < 5 || memcmp(m->payload, "seq=", 4)) {
        rill_elem_release(in);
        return RILL_EINVAL;
    }
    long long seq = strtoll((const char *)m->payload + 4, NULL, 10);
    int64_t fail = atomic_load(&a->fail_at);
    if (seq == fail && atomic_compare_exchange_strong(&a->fail_at, &fail, -1)) {
        rill_log(RILL_LOG_WARNING, LOG, "processing failed at seq=%lld (injected)", seq);
        rill_elem_release(in);
        return RILL_EIO; /* fails the pipeline's run: the supervisor starts another */
    }
    char *upper = malloc(m->len), marker[24];
    if (!upper) {
        rill_elem_release(in);
        return RILL_ENOMEM;
    }
    for (size_t i = 0; i < m->len; i++) {
        char c = ((const char *)m->payload)[i];
        upper[i] = c >= 'a' && c <= 'z' ? (char)(c - 'a' + 'A') : c;
    }
    int ml = snprintf(marker, sizeof(marker), "%lld", seq);
    rill_produce_t *p = rill_produce_new(a->out, RILL_PARTITION_ANY, m->key, m->key_len, upper,
                                         m->len); /* copies key and value */
    free(upper);
    rill_elem_release(in); /* the output stands for the input record (its origin) */
    if (!p || rill_produce_add_header(p, "in-seq", marker, (size_t)ml)) {
        rill_produce_free(p);
        return RILL_ENOMEM;
    }
    *out = rill_produce_elem(p);
    return RILL_OK;
}

/* ---- the pipeline ---- */

static rill_pipeline_t *start_pipeline(rill_system_t *sys, app_t *a, char *err, size_t n)
{
    rill_consumer_conf_t *c = rill_consumer_conf_new();
    const char *topics[] = {a->in};
    if (rill_consumer_conf_set(c, "bootstrap.servers", a->boot, err, n) ||
        rill_consumer_conf_set(c, "group.id", a->group, err, n) ||
        rill_consumer_conf_set(c, "auto.offset.reset", "earliest", err, n) ||
        rill_consumer_conf_set(c, "isolation.level", "read_committed", err, n) ||
        rill_consumer_conf_set(c, "rill.commit", "transaction", err, n) ||
        rill_consumer_conf_subscribe(c, topics, 1, err, n)) {
        rill_consumer_conf_destroy(c);
        return NULL;
    }
    rill_producer_conf_t *k = rill_producer_conf_new();
    char txn_records[16];
    snprintf(txn_records, sizeof(txn_records), "%d", TXN_RECORDS);
    if (rill_producer_conf_set(k, "bootstrap.servers", a->boot, err, n) ||
        rill_producer_conf_set(k, "transactional.id", a->txn_id, err, n) ||
        rill_producer_conf_set(k, "rill.topics", a->out, err, n) ||
        rill_producer_conf_set(k, "rill.txn.max.records", txn_records, err, n) ||
        rill_producer_conf_set_txn_cb(k, on_txn, a)) {
        rill_consumer_conf_destroy(c);
        rill_producer_conf_destroy(k);
        return NULL;
    }
    /* Commits block the sink's executor: it gets one of its own. */
    rill_stage_opts_t first = {.executor = RILL_EXECUTOR(0)}, sink = {.executor = RILL_EXECUTOR(1)};
    rill_pipeline_t *p = rill_pipeline_new(sys, "exactly-once");
    rill_pipeline_add(p, rill_kafka_source(c), &first);
    rill_pipeline_add(p, rill_stage_map(transform, a), &first);
    rill_pipeline_add(p, rill_kafka_txn_sink(k), &sink);
    rill_restart_opts_t restarts = {.max_restarts = 5, .backoff = {.min_ms = 100, .max_ms = 1000}};
    if (rill_pipeline_start_supervised(p, &restarts, err, n)) {
        rill_pipeline_destroy(p);
        return NULL;
    }
    return p;
}

/* Create the topics on a cluster; a topic that exists is refused (a fresh --prefix). */
static int create_topics(app_t *a, char *err, size_t n)
{
    rd_kafka_conf_t *kc = rd_kafka_conf_new();
    rd_kafka_conf_set(kc, "bootstrap.servers", a->boot, NULL, 0);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, kc, err, n);
    if (!rk)
        return -1;
    rd_kafka_NewTopic_t *nt[2] = {rd_kafka_NewTopic_new(a->in, a->parts, -1, NULL, 0),
                                  rd_kafka_NewTopic_new(a->out, a->parts, -1, NULL, 0)};
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_CreateTopics(rk, nt, 2, NULL, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 15000);
    int rc = -1;
    const rd_kafka_CreateTopics_result_t *res = ev ? rd_kafka_event_CreateTopics_result(ev) : NULL;
    if (!ev)
        snprintf(err, n, "CreateTopics: no answer within 15 s");
    else if (rd_kafka_event_error(ev))
        snprintf(err, n, "CreateTopics: %s", rd_kafka_event_error_string(ev));
    else if (res) {
        size_t cnt;
        const rd_kafka_topic_result_t **tr = rd_kafka_CreateTopics_result_topics(res, &cnt);
        rc = 0;
        for (size_t i = 0; i < cnt && !rc; i++)
            if (rd_kafka_topic_result_error(tr[i])) {
                snprintf(err, n, "create %s: %s", rd_kafka_topic_result_name(tr[i]),
                         rd_kafka_topic_result_error_string(tr[i]));
                rc = -1;
            }
    }
    if (ev)
        rd_kafka_event_destroy(ev);
    rd_kafka_queue_destroy(q);
    rd_kafka_NewTopic_destroy_array(nt, 2);
    rd_kafka_destroy(rk);
    return rc;
}

/* ---- main ---- */

int main(int argc, char **argv)
{
    app_t a = {.records = 20000, .parts = 4, .fail_at = -2};
    const char *prefix = NULL;
    int inject = 1, mock = 0;
    static const struct option opts[] = {
        {"records", required_argument, NULL, 'n'}, {"partitions", required_argument, NULL, 'p'},
        {"fail-at", required_argument, NULL, 'f'}, {"bootstrap", required_argument, NULL, 'b'},
        {"prefix", required_argument, NULL, 'x'},  {"no-inject", no_argument, NULL, 'N'},
        {"mock", no_argument, NULL, 'm'},          {NULL, 0, NULL, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "n:p:f:b:x:Nm", opts, NULL)) != -1) {
        switch (opt) {
        case 'n':
            a.records = strtoull(optarg, NULL, 10);
            break;
        case 'p':
            a.parts = atoi(optarg);
            break;
        case 'f':
            a.fail_at = strtoll(optarg, NULL, 10);
            break;
        case 'b':
            a.boot = optarg;
            break;
        case 'x':
            prefix = optarg;
            break;
        case 'N':
            inject = 0;
            break;
        case 'm':
            mock = 1;
            break;
        default:
            fprintf(stderr, "usage: exactly_once [--records N] [--partitions P] [--fail-at SEQ] "
                            "[--bootstrap SERVERS [--mock]] [--prefix NAME] [--no-inject]\n");
            return 2;
        }
    }
    if (a.records < (uint64_t)a.parts || a.parts < 1 || a.parts > MAX_PARTS) {
        fprintf(stderr, "exactly_once: --records must be at least --partitions (1..64)\n");
        return 2;
    }
    if (a.fail_at == -2)
        a.fail_at =
            inject ? (int64_t)(a.records / (uint64_t)a.parts / 2) : -1; /* mid partition 0 */
    char pfx[64];
    snprintf(pfx, sizeof(pfx), "eos-%d", (int)getpid()); /* fresh names on a cluster */
    if (!prefix)
        prefix = a.boot ? pfx : "eos";
    snprintf(a.in, sizeof(a.in), "%s-in", prefix);
    snprintf(a.out, sizeof(a.out), "%s-out", prefix);
    snprintf(a.group, sizeof(a.group), "%s-group", prefix);
    snprintf(a.txn_id, sizeof(a.txn_id), "%s-txn", prefix);
    pthread_mutex_init(&a.mu, NULL);

    char err[512];
    rill_broker_t *broker = NULL;
    if (!a.boot) {
        broker = rill_broker_new(1, err, sizeof(err));
        if (!broker || rill_broker_create_topic(broker, a.in, a.parts, 1, err, sizeof(err)) ||
            rill_broker_create_topic(broker, a.out, a.parts, 1, err, sizeof(err))) {
            rill_log(RILL_LOG_ERR, LOG, "embedded broker: %s", err);
            return 1;
        }
        a.boot = rill_broker_bootstraps(broker);
        mock = 1;
        printf("embedded broker at %s\n", a.boot);
    } else if (!mock && create_topics(&a, err, sizeof(err))) {
        rill_log(RILL_LOG_ERR, LOG, "%s", err);
        return 1;
    }

    /* The input: record seq goes to partition seq * P / N, so every
     * partition's end offset is known: its share. */
    printf("producing %" PRIu64 " records to %s (%d partitions)\n", a.records, a.in, a.parts);
    rill_testkit_opts_t popts = {.timeout_ms = 120000};
    for (int p = 0; p < a.parts; p++) {
        uint64_t lo = a.records * (uint64_t)p / (uint64_t)a.parts;
        uint64_t hi = a.records * (uint64_t)(p + 1) / (uint64_t)a.parts;
        rill_gen_t gen = {.first_seq = lo, .value_size = 60, .pinned = 1, .partition = p};
        a.end[p] = (int64_t)(hi - lo);
        if (rill_testkit_produce_generated(a.boot, a.in, hi - lo, &gen, &popts, err, sizeof(err))) {
            rill_log(RILL_LOG_ERR, LOG, "produce: %s", err);
            return 1;
        }
    }
    if (inject && broker) {
        /* Five EndTxn succeed, the sixth fails with an abortable error. */
        rd_kafka_resp_err_t errs[6] = {0, 0, 0,
                                       0, 0, RD_KAFKA_RESP_ERR_TRANSACTION_COORDINATOR_FENCED};
        rd_kafka_mock_push_request_errors_array(rill_broker_mock_cluster(broker), API_END_TXN, 6,
                                                errs);
        printf("injected: the 6th EndTxn fails (TRANSACTION_COORDINATOR_FENCED, abortable)\n");
    }
    if (a.fail_at >= 0)
        printf("injected: the transform fails once at seq=%" PRId64 "\n", a.fail_at);

    rill_system_opts_t sopts = {.executors = 2};
    rill_system_t *sys = rill_system_new(&sopts, err, sizeof(err));
    if (!sys || rill_system_start(sys)) {
        rill_log(RILL_LOG_ERR, LOG, "system: %s", err);
        return 1;
    }
    rill_pipeline_t *pipe = start_pipeline(sys, &a, err, sizeof(err));
    if (!pipe) {
        rill_log(RILL_LOG_ERR, LOG, "pipeline: %s", err);
        return 1;
    }
    printf("%5s %10s %8s %18s\n", "s", "committed", "aborted", "records committed");
    rill_pipeline_result_t res = {0};
    int finished = 0;
    for (int tick = 1; tick <= 1200 && !finished; tick++) {
        usleep(100 * 1000);
        finished = all_committed(&a) || rill_pipeline_wait(pipe, 0, &res) == RILL_OK;
        if (tick % 10 == 0 || finished) {
            pthread_mutex_lock(&a.mu);
            printf("%5.1f %10" PRIu64 " %8" PRIu64 " %18" PRIu64 "\n", tick / 10.0, a.committed,
                   a.aborted, a.records_committed);
            pthread_mutex_unlock(&a.mu);
            fflush(stdout);
        }
    }
    int all_in = all_committed(&a);
    rill_pipeline_stop(pipe);
    if (rill_pipeline_wait(pipe, 30000, &res) != RILL_OK) {
        printf("FAILED: the pipeline did not stop within 30 s\n");
        fflush(stdout);
        _exit(1); /* still running: destroying it would wait forever */
    }
    rill_pipeline_destroy(pipe);
    if (rill_system_stop(sys, 10000) != RILL_OK) {
        printf("FAILED: the system did not stop within 10 s\n");
        fflush(stdout);
        _exit(1);
    }
    rill_system_destroy(sys);

    /* Read the output back as any downstream consumer would. */
    const char *rc_conf[] = {"isolation.level", "read_committed", NULL};
    rill_testkit_opts_t copts = {.config = rc_conf, .timeout_ms = 60000};
    rill_consumed_t *got = NULL;
    if (rill_testkit_consume(a.boot, a.out, RILL_CONSUME_TO_END, &copts, &got, err, sizeof(err)))
        rill_log(RILL_LOG_ERR, LOG, "reading %s: %s", a.out, err);
    uint8_t *seen = calloc(a.records, 1);
    size_t read = rill_consumed_count(got), distinct = 0, extra = 0, foreign = 0;
    for (size_t i = 0; i < read; i++) {
        const rill_testkit_record_t *r = rill_consumed_at(got, i);
        long long seq = -1;
        for (size_t h = 0; h < r->header_count; h++)
            if (!strcmp(r->headers[h].name, "in-seq") && r->headers[h].value_len < 24) {
                char b[24];
                memcpy(b, r->headers[h].value, r->headers[h].value_len);
                b[r->headers[h].value_len] = '\0';
                seq = strtoll(b, NULL, 10);
            }
        if (seq < 0 || (uint64_t)seq >= a.records)
            foreign++;
        else if (seen[seq]++)
            extra++;
        else
            distinct++;
    }
    rill_consumed_destroy(got);
    free(seen);

    size_t missing = a.records - distinct;
    printf("\nsummary\n");
    printf("  inputs                          %" PRIu64 " in %s (%d partitions)\n", a.records, a.in,
           a.parts);
    printf("  transactions                    committed %" PRIu64 ", aborted %" PRIu64
           " (pipeline restarts %u)\n",
           a.committed, a.aborted, res.restarts);
    printf("  records in committed txns       %" PRIu64 "%s\n", a.records_committed,
           a.records_committed == a.records ? " (each input exactly once)" : "");
    printf("  records in aborted txns         %" PRIu64 "\n", a.records_aborted);
    printf("  output records read             %zu from %s (read_committed)\n", read, a.out);
    printf("  distinct markers                %zu, missing %zu, foreign %zu\n", distinct, missing,
           foreign);
    /* On the mock: the records of aborted transactions (abandoned ones too:
     * a run that ended unable to abort tells its open transaction aborted). */
    uint64_t allowed = mock ? a.records_aborted : 0;
    printf("  extra copies                    %zu\n", extra);
    if (mock)
        printf("  extra copies allowed            %" PRIu64 " (the aborted records): "
               "the embedded broker keeps no transaction markers, so aborted records stay "
               "visible; a real cluster's read_committed consumer sees none\n",
               allowed);
    else
        printf("  extra copies allowed            0 (a real cluster hides aborted records)\n");
    int ok = all_in && missing == 0 && foreign == 0 && a.records_committed == a.records &&
             res.end == RILL_PIPELINE_STOPPED && extra <= allowed;
    if (ok)
        printf("  OK: every input committed exactly once%s\n",
               mock ? "; extra copies only from aborted transactions" : ", and read once");
    else
        printf("  FAILED: %s\n", !all_in ? "the input offsets were not all committed"
                                 : res.end != RILL_PIPELINE_STOPPED ? "the pipeline failed"
                                 : missing || foreign ? "inputs missing from the output"
                                 : a.records_committed != a.records
                                     ? "records in committed transactions != inputs"
                                     : "more extra copies than allowed");
    if (res.end != RILL_PIPELINE_STOPPED)
        printf("  the pipeline ended: %s: %s: %s\n", rill_err_name(res.code), res.stage, res.text);
    pthread_mutex_destroy(&a.mu);
    rill_broker_destroy(broker);
    return ok ? 0 : 1;
}
