/*
 * Exactly-once consume -> transform -> produce (rill_kafka_txn_sink,
 * rill.commit=transaction) against the embedded broker.
 *
 * What the mock can show, and these tests assert: the transactional
 * request flow and its order (request tracking where the librdkafka in use
 * has it: 2.8; elsewhere by what each transaction reports and by injected
 * errors consumed), the offsets each transaction sends (the sink's
 * transaction callback), abortable errors on AddPartitionsToTxn,
 * TxnOffsetCommit and EndTxn leading to an abort and a rewind, a fatal
 * error restarting the pipeline under its supervisor, and a rebalance in
 * the middle of a transaction. What it cannot show (it keeps no
 * transaction markers: aborted records stay visible, read_committed sees
 * everything, TxnOffsetCommit offsets are not stored): that a
 * read_committed consumer never sees an aborted record. So the output is
 * checked deduplicated by the marker each output record carries (the
 * input's seq): every input is there, and the records of committed
 * transactions hold every input exactly once (docs/exactly-once.md; the
 * real-cluster check is tools/eos-check).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <rill/kafka.h>
#include <rill/stream.h>
#include <rill/supervisor.h>
#include <rill/testkit.h>

#include "support/kafka_kit.h"
#include "support/rtest.h"

#define TX_WAIT_MS 60000

/* Kafka API keys (the protocol's numbers: librdkafka keeps its names private). */
enum {
    API_PRODUCE = 0,
    API_INIT_PRODUCER_ID = 22,
    API_ADD_PARTITIONS_TO_TXN = 24,
    API_ADD_OFFSETS_TO_TXN = 25,
    API_END_TXN = 26,
    API_TXN_OFFSET_COMMIT = 28
};

/* ------------------------------------------------------------------ */
/* What the sink's transaction callback saw                            */
/* ------------------------------------------------------------------ */

#define TX_MAX_PARTS 8

typedef struct tx_log {
    pthread_mutex_t mu;
    /* the partitions its source holds (rebalance callback), and order */
    unsigned owned;
    int follow_owned;    /* check each commit against owned */
    int foreign_commits; /* offsets committed for a partition not held */
    _Atomic int *clock;  /* a clock shared by the logs of one test */
    int first_commit_at; /* its tick at the first commit (0: none) */
    uint64_t first_commit_records;
    int first_revoke_at; /* its tick at the first REVOKED (0: none) */
    int committed, aborted;
    uint64_t records_committed, records_aborted;
    int64_t last[TX_MAX_PARTS]; /* the last committed input offset per partition */
    int offsets_backwards;      /* a committed offset below an earlier one */
    rd_kafka_resp_err_t last_abort_err;
    int committed_before_abort; /* commits before the first abort */
    char input[64];
    /* the delivered output offsets are not known here; the records of
     * committed transactions are counted by their seq markers instead */
} tx_log_t;

static void tx_log_init(tx_log_t *l, const char *input)
{
    memset(l, 0, sizeof(*l));
    pthread_mutex_init(&l->mu, NULL);
    snprintf(l->input, sizeof(l->input), "%s", input);
    for (int i = 0; i < TX_MAX_PARTS; i++)
        l->last[i] = -1;
}

static void tx_cb(void *opaque, const rill_txn_info_t *info)
{
    tx_log_t *l = opaque;
    pthread_mutex_lock(&l->mu);
    if (info->event == RILL_TXN_COMMITTED) {
        if (!l->first_commit_at && l->clock) {
            l->first_commit_at = atomic_fetch_add(l->clock, 1) + 1;
            l->first_commit_records = info->records;
        }
        for (int i = 0; l->follow_owned && info->offsets && i < info->offsets->cnt; i++)
            if (!(l->owned & (1u << info->offsets->elems[i].partition)))
                l->foreign_commits++;
        l->committed++;
        l->records_committed += info->records;
        for (int i = 0; info->offsets && i < info->offsets->cnt; i++) {
            const rd_kafka_topic_partition_t *tp = &info->offsets->elems[i];
            if (strcmp(tp->topic, l->input) || tp->partition < 0 || tp->partition >= TX_MAX_PARTS)
                continue;
            if (tp->offset < l->last[tp->partition])
                l->offsets_backwards = 1;
            l->last[tp->partition] = tp->offset;
        }
    } else {
        if (!l->aborted)
            l->committed_before_abort = l->committed;
        l->aborted++;
        l->records_aborted += info->records;
        l->last_abort_err = info->err;
    }
    pthread_mutex_unlock(&l->mu);
}

static int tx_committed_upto(tx_log_t *l, int parts, int64_t per)
{
    pthread_mutex_lock(&l->mu);
    int ok = 1;
    for (int i = 0; i < parts; i++)
        ok &= l->last[i] == per;
    pthread_mutex_unlock(&l->mu);
    return ok;
}

static int tx_aborted(tx_log_t *l)
{
    pthread_mutex_lock(&l->mu);
    int n = l->aborted;
    pthread_mutex_unlock(&l->mu);
    return n;
}

/* ------------------------------------------------------------------ */
/* The transform: "seq=<n> ..." -> a record keyed by the input, with   */
/* the marker header "in-seq"                                          */
/* ------------------------------------------------------------------ */

typedef struct tx_map {
    char out[64];
    long nap_us; /* per record: a slow transform */
    _Atomic uint64_t seen;
    _Atomic int64_t fail_at; /* fail the stage (once) at this seq; -1 never */
} tx_map_t;

static int64_t value_seq(const void *v, size_t len)
{
    char buf[32];
    if (!v || len < 5 || memcmp(v, "seq=", 4))
        return -1;
    size_t n = len - 4 < sizeof(buf) - 1 ? len - 4 : sizeof(buf) - 1;
    memcpy(buf, (const char *)v + 4, n);
    buf[n] = '\0';
    return strtoll(buf, NULL, 10);
}

static rill_err_t tx_map_fn(void *opaque, rill_elem_t *in, rill_elem_t *out)
{
    tx_map_t *x = opaque;
    const rd_kafka_message_t *m = rill_record(in);
    int64_t seq = m ? value_seq(m->payload, m->len) : -1;
    atomic_fetch_add(&x->seen, 1);
    if (x->nap_us)
        kk_nap_us(x->nap_us);
    if (seq < 0) {
        rill_elem_release(in);
        return RILL_EINVAL;
    }
    int64_t fail = atomic_load(&x->fail_at);
    if (fail >= 0 && seq == fail && atomic_compare_exchange_strong(&x->fail_at, &fail, -1)) {
        rill_elem_release(in);
        return RILL_EIO;
    }
    char key[32], val[64];
    int kl = snprintf(key, sizeof(key), "%" PRId64, seq);
    int vl = snprintf(val, sizeof(val), "out-of=%" PRId64, seq);
    rill_produce_t *p =
        rill_produce_new(x->out, RILL_PARTITION_ANY, key, (size_t)kl, val, (size_t)vl);
    rill_elem_release(in);
    if (!p)
        return RILL_ENOMEM;
    rill_produce_add_header(p, "in-seq", key, (size_t)kl);
    *out = rill_produce_elem(p);
    return RILL_OK;
}

/* ------------------------------------------------------------------ */
/* The output, deduplicated by marker                                  */
/* ------------------------------------------------------------------ */

typedef struct tx_out {
    size_t records, distinct, dups, missing, foreign;
} tx_out_t;

static tx_out_t tx_check_output(const char *boot, const char *topic, uint64_t total)
{
    tx_out_t r = {0};
    rill_consumed_t *c = kk_consume_all(boot, topic, 30000);
    uint8_t *seen = calloc(total ? total : 1, 1);
    cr_assert_not_null(seen);
    r.records = rill_consumed_count(c);
    for (size_t i = 0; i < r.records; i++) {
        char buf[32];
        const char *h = kk_header(rill_consumed_at(c, i), "in-seq", buf, sizeof(buf));
        long long seq = h ? strtoll(h, NULL, 10) : -1;
        if (seq < 0 || (uint64_t)seq >= total) {
            r.foreign++;
            continue;
        }
        if (seen[seq]++)
            r.dups++;
        else
            r.distinct++;
    }
    r.missing = total - r.distinct;
    free(seen);
    rill_consumed_destroy(c);
    return r;
}

/* ------------------------------------------------------------------ */
/* The pipeline                                                        */
/* ------------------------------------------------------------------ */

typedef struct tx_setup {
    const char *name;
    const char *in, *out;
    int parts;
    int64_t per;
    const char *txn_records;
    const char *txn_ms;
    int group;            /* subscribe with a group (else fixed partitions) */
    const char *group_id; /* NULL: name */
    rill_rebalance_fn *rebalance_cb;
    void *rebalance_opaque;
    const char *strategy; /* partition.assignment.strategy; NULL: range */
} tx_setup_t;

static rill_pipeline_t *tx_pipeline(kk_env_t *env, const tx_setup_t *s, tx_map_t *map,
                                    tx_log_t *log)
{
    const char *kv[] = {"rill.commit",
                        "transaction",
                        "rill.drain.timeout.ms",
                        "5000",
                        "auto.offset.reset",
                        "earliest",
                        "session.timeout.ms",
                        "6000",
                        "partition.assignment.strategy",
                        s->strategy ? s->strategy : "range",
                        NULL};
    rill_consumer_conf_t *cc = kk_conf_new(env->boot, s->group_id ? s->group_id : s->name, kv);
    if (s->rebalance_cb)
        cr_assert_eq(rill_consumer_conf_set_rebalance_cb(cc, s->rebalance_cb, s->rebalance_opaque),
                     RILL_OK);
    if (s->group)
        kk_conf_subscribe1(cc, s->in);
    else
        kk_conf_assign_all(cc, s->in, s->parts, RILL_OFFSET_COMMITTED);
    rill_producer_conf_t *pc = rill_producer_conf_new();
    char err[256];
    char tid[96];
    snprintf(tid, sizeof(tid), "%s-txn", s->name);
    cr_assert_eq(rill_producer_conf_set(pc, "bootstrap.servers", env->boot, err, sizeof(err)),
                 RILL_OK, "%s", err);
    cr_assert_eq(rill_producer_conf_set(pc, "transactional.id", tid, err, sizeof(err)), RILL_OK,
                 "%s", err);
    cr_assert_eq(rill_producer_conf_set(pc, "rill.topics", s->out, err, sizeof(err)), RILL_OK);
    cr_assert_eq(
        rill_producer_conf_set(pc, "rill.txn.max.records", s->txn_records, err, sizeof(err)),
        RILL_OK, "%s", err);
    cr_assert_eq(rill_producer_conf_set(pc, "rill.txn.max.ms", s->txn_ms, err, sizeof(err)),
                 RILL_OK, "%s", err);
    cr_assert_eq(rill_producer_conf_set_txn_cb(pc, tx_cb, log), RILL_OK);
    snprintf(map->out, sizeof(map->out), "%s", s->out);
    rill_pipeline_t *p = rill_pipeline_new(env->sys, s->name);
    cr_assert_not_null(p);
    cr_assert_eq(rill_pipeline_add(p, rill_kafka_source(cc), NULL), RILL_OK);
    cr_assert_eq(rill_pipeline_add(p, rill_stage_map(tx_map_fn, map), NULL), RILL_OK);
    cr_assert_eq(rill_pipeline_add(p, rill_kafka_txn_sink(pc), NULL), RILL_OK);
    return p;
}

static void tx_start(rill_pipeline_t *p, int supervised)
{
    char err[256] = "";
    rill_err_t e = supervised ? rill_pipeline_start_supervised(p, NULL, err, sizeof(err))
                              : rill_pipeline_start(p, err, sizeof(err));
    cr_assert_eq(e, RILL_OK, "start: %s: %s", rill_err_name(e), err);
}

static rill_producer_stats_t tx_sink_stats(kk_env_t *env, rill_pipeline_t *p)
{
    rill_producer_stats_t s;
    memset(&s, 0, sizeof(s));
    rill_producer_stats(env->sys, rill_pipeline_stage(p, 2), &s);
    return s;
}

/* What the stages were at when a wait ran out. */
static void tx_diag(kk_env_t *env, rill_pipeline_t *p)
{
    rill_pipeline_result_t r;
    if (rill_pipeline_wait(p, 0, &r) == RILL_OK)
        fprintf(stderr, "the pipeline ended: %d %s: %s: %s\n", (int)r.end, rill_err_name(r.code),
                r.stage, r.text);
    rill_consumer_stats_t c;
    rill_producer_stats_t k;
    if (rill_consumer_stats(env->sys, rill_pipeline_stage(p, 0), &c) == RILL_OK)
        fprintf(stderr,
                "source: polled %" PRIu64 " emitted %" PRIu64 " confirmed %" PRIu64
                " fenced %" PRIu64 " committed %" PRIu64 " buffered %u unconfirmed %u assigned %u"
                " paused %d blocked %d\n",
                c.polled, c.emitted, c.confirmed, c.fenced, c.committed, c.buffered, c.unconfirmed,
                c.assigned, c.paused, c.blocked);
    if (rill_producer_stats(env->sys, rill_pipeline_stage(p, 2), &k) == RILL_OK)
        fprintf(stderr,
                "sink: requested %" PRIu64 " delivered %" PRIu64 " failed %" PRIu64
                " inflight %u txn committed %" PRIu64 " aborted %" PRIu64 " stale %" PRIu64
                " last error \"%s\"\n",
                k.requested, k.delivered, k.failed, k.inflight, k.txn_committed, k.txn_aborted,
                k.txn_stale_dropped, k.last_error);
}

/* After the stop: every input in a committed transaction once, and in
 * the output, with no more extra copies than the aborted transactions
 * produced (+ extra; visible only because the mock keeps aborted
 * records). */
static tx_out_t tx_verify(kk_env_t *env, const tx_setup_t *s, tx_log_t *log, uint64_t extra)
{
    cr_assert_eq(log->offsets_backwards, 0, "a committed input offset went backwards");
    uint64_t total = (uint64_t)(s->parts * s->per);
    cr_assert_eq(log->records_committed, total,
                 "%" PRIu64 " records in committed transactions for %" PRIu64 " inputs",
                 log->records_committed, total);
    tx_out_t o = tx_check_output(env->boot, s->out, total);
    cr_assert_eq(o.missing, 0, "%zu inputs missing from the output", o.missing);
    cr_assert_eq(o.foreign, 0);
    cr_assert_leq(o.dups, log->records_aborted + extra,
                  "%zu extra copies, more than the %" PRIu64
                  " records of aborted transactions (+ %" PRIu64 ")",
                  o.dups, log->records_aborted, extra);
    return o;
}

/* Wait until every input offset was committed, stop, and verify. */
static tx_out_t tx_finish(kk_env_t *env, rill_pipeline_t *p, const tx_setup_t *s, tx_log_t *log,
                          uint64_t extra, rill_pipeline_result_t *r)
{
    int ok;
    rill_pipeline_result_t early;
    KK_WAIT_UNTIL(ok, TX_WAIT_MS,
                  tx_committed_upto(log, s->parts, s->per) ||
                      rill_pipeline_wait(p, 0, &early) == RILL_OK);
    ok = tx_committed_upto(log, s->parts, s->per);
    if (!ok)
        tx_diag(env, p);
    cr_assert(ok,
              "the transactions did not commit every input offset (last: %" PRId64 ", %" PRId64
              "; %d committed, %d aborted)",
              log->last[0], log->last[1], log->committed, log->aborted);
    cr_assert_eq(rill_pipeline_stop(p), RILL_OK);
    cr_assert_eq(rill_pipeline_wait(p, 60000, r), RILL_OK);
    return tx_verify(env, s, log, extra);
}

/* One test's broker, topics, transform, log and pipeline. */
typedef struct tx_case {
    kk_env_t env;
    char in[64], out[64];
    tx_setup_t s;
    tx_map_t map;
    tx_log_t log;
    rill_pipeline_t *p;
} tx_case_t;

/* A broker with <name>-in (parts x per records) and <name>-out (2
 * partitions); the setup commits every txn_records records (the clock out
 * of reach). Adjust c->s, c->map, inject errors, then tx_case_pipeline. */
static void tx_case_init(tx_case_t *c, const char *name, int parts, int64_t per,
                         const char *txn_records)
{
    memset(c, 0, sizeof(*c));
    kk_env_init(&c->env);
    snprintf(c->in, sizeof(c->in), "%s-in", name);
    snprintf(c->out, sizeof(c->out), "%s-out", name);
    c->s = (tx_setup_t){.name = name,
                        .in = c->in,
                        .out = c->out,
                        .parts = parts,
                        .per = per,
                        .txn_records = txn_records,
                        .txn_ms = "60000"};
    kk_load_topic(&c->env, c->in, parts, (size_t)per, 40);
    kk_create_topic(&c->env, c->out, 2);
    atomic_store(&c->map.fail_at, -1);
    tx_log_init(&c->log, c->in);
}

static rill_pipeline_t *tx_case_pipeline(tx_case_t *c)
{
    return c->p = tx_pipeline(&c->env, &c->s, &c->map, &c->log);
}

static void tx_case_fini(tx_case_t *c)
{
    rill_pipeline_destroy(c->p);
    kk_env_fini(&c->env);
}

/* `ok_before` requests of api_key succeed, the next fails with err. */
static void tx_inject(tx_case_t *c, int16_t api_key, int ok_before, rd_kafka_resp_err_t err)
{
    rd_kafka_mock_cluster_t *mc = rill_broker_mock_cluster(c->env.broker);
    cr_assert_not_null(mc);
    rd_kafka_resp_err_t errs[16] = {0};
    cr_assert_lt(ok_before, 15);
    errs[ok_before] = err;
    rd_kafka_mock_push_request_errors_array(mc, api_key, (size_t)ok_before + 1, errs);
}

/* ------------------------------------------------------------------ */
/* 1. A clean run                                                      */
/* ------------------------------------------------------------------ */

Test(kafka_txn, clean_run_commits_every_input_once_with_its_offsets, .timeout = 180)
{
    tx_case_t c;
    tx_case_init(&c, "tx-clean", 2, 1500, "100");
    const uint64_t total = 3000;
    rill_pipeline_t *p = tx_case_pipeline(&c);
    tx_start(p, 0);
    int ok;
    KK_WAIT_UNTIL(ok, TX_WAIT_MS, tx_committed_upto(&c.log, c.s.parts, c.s.per));
    cr_assert(ok);
    rill_producer_stats_t ps = tx_sink_stats(&c.env, p);
    cr_assert_eq(ps.transactional, 1);
    cr_assert_eq(ps.txn_aborted, 0, "no transaction aborts in a clean run");
    cr_assert_eq(ps.txn_records_committed, total);
    /* rill.txn.max.records=100 over 3,000 records, rill.txn.max.ms out of reach */
    cr_assert_eq(ps.txn_committed, 30, "%" PRIu64 " transactions", ps.txn_committed);
    cr_assert_eq(ps.txn_latency.count, 30);
    rill_consumer_stats_t cs;
    cr_assert_eq(rill_consumer_stats(c.env.sys, rill_pipeline_stage(p, 0), &cs), RILL_OK);
    cr_assert_eq(cs.commit_errors, 0);
    cr_assert_eq(cs.committed, 30, "the source took each transaction's offsets as committed");
    cr_assert_eq(cs.emitted, total, "nothing was rewound");
    rill_pipeline_result_t r;
    tx_out_t o = tx_finish(&c.env, p, &c.s, &c.log, 0, &r);
    cr_assert_eq(o.dups, 0, "a clean run duplicates nothing (%zu)", o.dups);
    cr_assert_eq(o.records, total);
    cr_assert_eq(r.end, RILL_PIPELINE_STOPPED);
    tx_case_fini(&c);
}

/* ------------------------------------------------------------------ */
/* 2. Abortable errors: abort, rewind, go on                           */
/* ------------------------------------------------------------------ */

/* `ok_before` requests of api_key succeed, the next fails with err (an
 * error librdkafka classifies abortable). The transaction that meets it is
 * aborted and its sources rewound; the pipeline goes on. With exact, the
 * request is one per transaction (AddOffsetsToTxn, TxnOffsetCommit,
 * EndTxn): the abort is of transaction ok_before + 1, which counts the
 * requests the sink sent, by API. */
static void tx_abort_case(const char *name, int16_t api_key, rd_kafka_resp_err_t err, int ok_before,
                          int exact)
{
    tx_case_t c;
    tx_case_init(&c, name, 2, 1000, "100");
    tx_inject(&c, api_key, ok_before, err);
    tx_start(tx_case_pipeline(&c), 0);
    int ok;
    KK_WAIT_UNTIL(ok, TX_WAIT_MS, tx_aborted(&c.log) > 0);
    cr_assert(ok, "no transaction was aborted");
    pthread_mutex_lock(&c.log.mu);
    int committed_before = c.log.committed;
    rd_kafka_resp_err_t why = c.log.last_abort_err;
    pthread_mutex_unlock(&c.log.mu);
    /* AddPartitionsToTxn fails the transaction inside librdkafka, which
     * purges what is queued: the sink sees the purge, or a refused produce. */
    cr_assert(why == err || (!exact && (why == RD_KAFKA_RESP_ERR__PURGE_QUEUE ||
                                        why == RD_KAFKA_RESP_ERR__PURGE_INFLIGHT ||
                                        why == RD_KAFKA_RESP_ERR__STATE)),
              "aborted for %s, not for the injected %s", rd_kafka_err2name(why),
              rd_kafka_err2name(err));
    if (exact)
        cr_assert_eq(committed_before, ok_before,
                     "the abort came after %d commits, not after the %d requests that succeeded",
                     committed_before, ok_before);
    else
        cr_assert_leq(committed_before, ok_before);
    rill_pipeline_result_t r;
    tx_finish(&c.env, c.p, &c.s, &c.log, 0, &r);
    cr_assert_eq(r.end, RILL_PIPELINE_STOPPED, "the abort did not fail the pipeline");
    cr_assert_eq(c.log.aborted, 1);
    tx_case_fini(&c);
}

Test(kafka_txn, abortable_add_partitions_to_txn_aborts_rewinds_and_goes_on, .timeout = 180)
{
    tx_abort_case("tx-apt", API_ADD_PARTITIONS_TO_TXN, RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
                  3, 0);
}

Test(kafka_txn, abortable_txn_offset_commit_aborts_rewinds_and_goes_on, .timeout = 180)
{
    tx_abort_case("tx-toc", API_TXN_OFFSET_COMMIT, RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION, 3, 1);
}

Test(kafka_txn, abortable_end_txn_aborts_rewinds_and_goes_on, .timeout = 180)
{
    tx_abort_case("tx-end", API_END_TXN, RD_KAFKA_RESP_ERR_TRANSACTION_COORDINATOR_FENCED, 3, 1);
}

/* ------------------------------------------------------------------ */
/* 3. A rebalance in the middle of a transaction                       */
/* ------------------------------------------------------------------ */

static void tx_rebalance_cb(void *opaque, rill_rebalance_event_t ev,
                            const rd_kafka_topic_partition_list_t *parts)
{
    tx_log_t *l = opaque;
    pthread_mutex_lock(&l->mu);
    for (int i = 0; parts && i < parts->cnt; i++) {
        unsigned bit = 1u << parts->elems[i].partition;
        if (ev == RILL_REBALANCE_ASSIGNED)
            l->owned |= bit;
        else
            l->owned &= ~bit;
    }
    if (ev == RILL_REBALANCE_REVOKED && !l->first_revoke_at && l->clock)
        l->first_revoke_at = atomic_fetch_add(l->clock, 1) + 1;
    pthread_mutex_unlock(&l->mu);
}

static int tx_owns_any(tx_log_t *l)
{
    pthread_mutex_lock(&l->mu);
    int any = l->owned != 0;
    pthread_mutex_unlock(&l->mu);
    return any;
}

/* The source read every assigned partition to its end (or committed it
 * there: a partition kept through a cooperative rebalance is rewound to
 * its last commit, and librdkafka knows no position after a seek until a
 * record comes), and everything it emitted came back. */
static int tx_caught_up(kk_env_t *env, rill_pipeline_t *p)
{
    rill_partition_stats_t v[TX_MAX_PARTS];
    size_t n = 0;
    rill_consumer_stats_t c;
    rill_aid_t src = rill_pipeline_stage(p, 0);
    if (rill_consumer_partitions(env->sys, src, v, TX_MAX_PARTS, &n) != RILL_OK || !n ||
        rill_consumer_stats(env->sys, src, &c) != RILL_OK)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (v[i].end_offset < 0 ||
            (v[i].position < v[i].end_offset && v[i].committed_offset < v[i].end_offset))
            return 0;
    return c.unconfirmed == 0 && c.buffered == 0;
}

static int tx_both_upto(tx_log_t *a, tx_log_t *b, int parts, int64_t per)
{
    int ok = 1;
    pthread_mutex_lock(&a->mu);
    pthread_mutex_lock(&b->mu);
    for (int i = 0; i < parts; i++)
        ok &= a->last[i] == per || b->last[i] == per;
    pthread_mutex_unlock(&b->mu);
    pthread_mutex_unlock(&a->mu);
    return ok;
}

/* Member A holds a transaction open (neither rill.txn.max.records nor
 * rill.txn.max.ms can end it) when member B joins: A's partitions are
 * revoked (all of them under the eager protocol, the one that moves under
 * cooperative-sticky), and the transaction is committed before they are
 * released; nothing of them is committed by A afterwards. */
static void rebalance_mid_txn(const char *strategy, const char *prefix, int64_t per)
{
    kk_env_t env;
    kk_env_init(&env);
    const int parts = 2;
    char in[64], out[64], na[64], nb[64];
    snprintf(in, sizeof(in), "%s-in", prefix);
    snprintf(out, sizeof(out), "%s-out", prefix);
    snprintf(na, sizeof(na), "%s-a", prefix);
    snprintf(nb, sizeof(nb), "%s-b", prefix);
    kk_load_topic(&env, in, parts, (size_t)per, 40);
    kk_create_topic(&env, out, 2);
    _Atomic int clock = 0;
    tx_log_t la, lb;
    tx_log_init(&la, in);
    tx_log_init(&lb, in);
    la.clock = lb.clock = &clock;
    la.follow_owned = lb.follow_owned = 1;
    tx_setup_t sa = {.name = na,
                     .in = in,
                     .out = out,
                     .parts = parts,
                     .per = per,
                     .txn_records = "1000000",
                     .txn_ms = "60000",
                     .group = 1,
                     .group_id = prefix, /* the group */
                     .rebalance_cb = tx_rebalance_cb,
                     .rebalance_opaque = &la,
                     .strategy = strategy};
    tx_setup_t sb = sa;
    sb.name = nb;
    sb.rebalance_opaque = &lb;
    tx_map_t ma = {.fail_at = -1, .nap_us = 1000}, mb = {.fail_at = -1, .nap_us = 1000};
    rill_pipeline_t *pa = tx_pipeline(&env, &sa, &ma, &la);
    tx_start(pa, 0);
    int ok;
    KK_WAIT_UNTIL(ok, TX_WAIT_MS, atomic_load(&ma.seen) >= 300);
    cr_assert(ok, "member A processed nothing");
    cr_assert_eq(la.committed, 0, "A committed before the rebalance");
    rill_pipeline_t *pb = tx_pipeline(&env, &sb, &mb, &lb);
    tx_start(pb, 0);
    /* Both hold a partition after the rebalance and have read it to its
     * end; their stops commit what their open transactions hold. */
    KK_WAIT_UNTIL(ok, TX_WAIT_MS,
                  tx_owns_any(&la) && tx_owns_any(&lb) && tx_caught_up(&env, pa) &&
                      tx_caught_up(&env, pb));
    if (!ok) {
        fprintf(stderr, "A owns %#x, caught up %d; B owns %#x, caught up %d\n", la.owned,
                tx_caught_up(&env, pa), lb.owned, tx_caught_up(&env, pb));
        tx_diag(&env, pa);
        tx_diag(&env, pb);
    }
    cr_assert(ok, "the members did not share the partitions and read them to their ends");
    rill_pipeline_result_t r;
    cr_assert_eq(rill_pipeline_stop(pa), RILL_OK);
    cr_assert_eq(rill_pipeline_stop(pb), RILL_OK);
    cr_assert_eq(rill_pipeline_wait(pa, 60000, &r), RILL_OK);
    cr_assert_eq(rill_pipeline_wait(pb, 60000, &r), RILL_OK);
    cr_assert(tx_both_upto(&la, &lb, parts, per),
              "the stops did not commit every input offset (A %" PRId64 " %" PRId64 ", B %" PRId64
              " %" PRId64 ")",
              la.last[0], la.last[1], lb.last[0], lb.last[1]);
    pthread_mutex_lock(&la.mu);
    cr_assert_gt(la.first_revoke_at, 0, "A's partitions were never revoked");
    cr_assert_gt(la.first_commit_at, 0, "A never committed");
    cr_assert_lt(la.first_commit_at, la.first_revoke_at,
                 "A's open transaction was not committed before its partitions were released");
    cr_assert_gt(la.first_commit_records, 0, "the transaction A committed at the revoke was empty");
    cr_assert_eq(la.foreign_commits, 0, "A committed offsets of a partition it no longer held");
    cr_assert_eq(lb.foreign_commits, 0, "B committed offsets of a partition it did not hold");
    pthread_mutex_unlock(&la.mu);
    /* Nothing lost. (Duplicates are expected here: the mock does not store
     * transactional offsets, so each new owner starts from the earliest
     * offset; a real cluster hands it the committed ones.) */
    tx_out_t o = tx_check_output(env.boot, out, (uint64_t)(parts * per));
    cr_assert_eq(o.missing, 0, "%zu inputs missing", o.missing);
    fprintf(stderr,
            "rebalance (%s): A committed %d transaction(s), the first one (%" PRIu64
            " records) before its first revoke; %zu outputs, %zu duplicates\n",
            strategy, la.committed, la.first_commit_records, o.records, o.dups);
    rill_pipeline_destroy(pa);
    rill_pipeline_destroy(pb);
    kk_env_fini(&env);
}

Test(kafka_txn, rebalance_mid_transaction_commits_before_the_release, .timeout = 240)
{
    rebalance_mid_txn("range", "tx-reb", 1500);
}

/* Incremental: A keeps one partition, and its transaction is committed
 * before the other one goes to B; A's later transactions (the one its stop
 * commits) hold only the partition it kept. Its two rounds take longer:
 * more records, so that A is still at work when B joins. */
Test(kafka_txn, cooperative_rebalance_mid_transaction_commits_before_the_release, .timeout = 240)
{
    rebalance_mid_txn("cooperative-sticky", "tx-coop", 4000);
}

#if RD_KAFKA_VERSION >= 0x02080000
/* ------------------------------------------------------------------ */
/* The request flow, as the mock saw it (librdkafka 2.8)               */
/* ------------------------------------------------------------------ */

Test(kafka_txn, request_flow_of_a_clean_run_in_order, .timeout = 120)
{
    tx_case_t c;
    tx_case_init(&c, "tx-flow", 1, 500, "100");
    rd_kafka_mock_cluster_t *mc = rill_broker_mock_cluster(c.env.broker);
    rd_kafka_mock_start_request_tracking(mc);
    tx_start(tx_case_pipeline(&c), 0);
    rill_pipeline_result_t r;
    tx_finish(&c.env, c.p, &c.s, &c.log, 0, &r);
    size_t n = 0;
    rd_kafka_mock_request_t **req = rd_kafka_mock_get_requests(mc, &n);
    rd_kafka_mock_stop_request_tracking(mc);
    /* The transactional requests in order: InitProducerId first; then per
     * transaction AddPartitionsToTxn before its Produce requests, and
     * AddOffsetsToTxn, TxnOffsetCommit, EndTxn after every Produce of it
     * (the sink waits for its deliveries before it sends the offsets). */
    char seq[512];
    size_t k = 0;
    for (size_t i = 0; i < n && k + 1 < sizeof(seq); i++) {
        int16_t key = rd_kafka_mock_request_api_key(req[i]);
        char ch = key == API_INIT_PRODUCER_ID        ? 'I'
                  : key == API_ADD_PARTITIONS_TO_TXN ? 'A'
                  : key == API_PRODUCE               ? 'P'
                  : key == API_ADD_OFFSETS_TO_TXN    ? 'O'
                  : key == API_TXN_OFFSET_COMMIT     ? 'T'
                  : key == API_END_TXN               ? 'E'
                                                     : 0;
        if (ch && !(ch == 'P' && k && seq[k - 1] == 'P')) /* Produce requests: one letter a run */
            seq[k++] = ch;
    }
    seq[k] = '\0';
    rd_kafka_mock_request_destroy_array(req, n);
    fprintf(stderr, "request flow: %s\n", seq);
    cr_assert_eq(seq[0], 'I', "InitProducerId first: %s", seq);
    int ends = 0;
    for (const char *t = seq + 1; *t;) {
        /* one transaction: A P (A and P may interleave), then O T E */
        const char *end = strchr(t, 'E');
        cr_assert_not_null(end, "a transaction without EndTxn: %s", t);
        size_t len = (size_t)(end - t) + 1;
        cr_assert_geq(len, 5, "a short transaction: %.*s", (int)len, t);
        cr_assert(t[0] == 'A', "AddPartitionsToTxn opens a transaction: %.*s", (int)len, t);
        cr_assert(!memcmp(end - 2, "OT", 2), "AddOffsetsToTxn, TxnOffsetCommit before EndTxn: %.*s",
                  (int)len, t);
        for (const char *x = t; x < end - 2; x++)
            cr_assert(*x == 'A' || *x == 'P',
                      "only AddPartitionsToTxn and Produce before the "
                      "offsets: %.*s",
                      (int)len, t);
        ends++;
        t = end + 1;
    }
    cr_assert_eq(ends, c.log.committed, "%d EndTxn for %d transactions", ends, c.log.committed);
    cr_assert_eq(ends, 5);
    tx_case_fini(&c);
}
#endif

/* ------------------------------------------------------------------ */
/* 4. A fatal error: the supervisor restarts with a new producer       */
/* ------------------------------------------------------------------ */

Test(kafka_txn, fatal_producer_fenced_restarts_under_the_supervisor, .timeout = 180)
{
    tx_case_t c;
    tx_case_init(&c, "tx-fatal", 2, 1000, "100");
    tx_inject(&c, API_END_TXN, 3, RD_KAFKA_RESP_ERR_PRODUCER_FENCED);
    rill_pipeline_t *p = tx_case_pipeline(&c);
    tx_start(p, 1);
    rill_pipeline_result_t r;
    /* The fenced transaction cannot be aborted by its producer: it is told
     * aborted (abandoned), and its records stay on the mock; a real broker
     * aborts them when the new producer's init_transactions fences the old
     * one. What it held came again from the last committed offsets. */
    tx_finish(&c.env, p, &c.s, &c.log, 0, &r);
    cr_assert_geq(r.restarts, 1, "the fenced producer did not restart the pipeline");
    cr_assert_eq(c.log.aborted, 1);
    cr_assert_eq(c.log.last_abort_err, RD_KAFKA_RESP_ERR__FENCED, "%s",
                 rd_kafka_err2name(c.log.last_abort_err));
    cr_assert_eq(c.log.committed_before_abort, 3);
    tx_case_fini(&c);
}

/* A stage failing (a processing error) aborts the open transaction; the
 * supervised restart goes on from the last committed offsets. Neither the
 * count nor the clock (60 s) ends a transaction, so the failure, at the
 * input with seq 300, always meets the first one open (with a 1 s clock it
 * met none once under ctest -j3, the first transaction committed just
 * before); the restarted run reads every input again and its stop commits
 * them. */
Test(kafka_txn, stage_failure_aborts_the_open_transaction_and_restarts, .timeout = 180)
{
    tx_case_t c;
    tx_case_init(&c, "tx-stage", 2, 1000, "1000000");
    atomic_store(&c.map.fail_at, 300);
    tx_start(tx_case_pipeline(&c), 1);
    int ok;
    KK_WAIT_UNTIL(ok, TX_WAIT_MS, tx_aborted(&c.log) >= 1 && tx_caught_up(&c.env, c.p));
    if (!ok)
        tx_diag(&c.env, c.p);
    cr_assert(ok, "no abort and a restarted run that read every input (%d aborted)",
              tx_aborted(&c.log));
    rill_pipeline_result_t r;
    cr_assert_eq(rill_pipeline_stop(c.p), RILL_OK);
    cr_assert_eq(rill_pipeline_wait(c.p, 60000, &r), RILL_OK);
    cr_assert_eq(r.restarts, 1);
    cr_assert_eq(c.log.aborted, 1,
                 "%d transactions aborted (%" PRIu64 " records), %d committed before the first",
                 c.log.aborted, c.log.records_aborted, c.log.committed_before_abort);
    cr_assert_eq(c.log.committed_before_abort, 0);
    cr_assert_gt(c.log.records_aborted, 0);
    cr_assert(tx_committed_upto(&c.log, c.s.parts, c.s.per),
              "the stop did not commit every input offset (last: %" PRId64 ", %" PRId64 ")",
              c.log.last[0], c.log.last[1]);
    tx_verify(&c.env, &c.s, &c.log, 0);
    tx_case_fini(&c);
}

/* ------------------------------------------------------------------ */
/* 6. The clock: rill.txn.max.ms ends a transaction that stays small   */
/* ------------------------------------------------------------------ */

Test(kafka_txn, a_transaction_ends_after_rill_txn_max_ms, .timeout = 120)
{
    tx_case_t c;
    tx_case_init(&c, "tx-clock", 1, 400, "1000000");
    c.s.txn_ms = "200";
    c.map.nap_us = 3000; /* 400 records: 1.2 s at least */
    int64_t t0 = kit_now_ms();
    tx_start(tx_case_pipeline(&c), 0);
    int ok;
    KK_WAIT_UNTIL(ok, TX_WAIT_MS, tx_committed_upto(&c.log, 1, 400));
    cr_assert(ok);
    int64_t took = kit_now_ms() - t0;
    /* One commit per 200 ms of processing, give or take the first and the
     * last (the count cannot decide: 1,000,000 records). */
    cr_assert_geq(c.log.committed, 4, "%d transactions in %" PRId64 " ms", c.log.committed, took);
    cr_assert_leq(c.log.committed, took / 200 + 2, "%d transactions in %" PRId64 " ms",
                  c.log.committed, took);
    rill_pipeline_result_t r;
    tx_finish(&c.env, c.p, &c.s, &c.log, 0, &r);
    tx_case_fini(&c);
}

/* ------------------------------------------------------------------ */
/* 7. Misuse: refused with a sentence                                  */
/* ------------------------------------------------------------------ */

static rill_producer_conf_t *tx_pconf(const char *boot, const char *tid)
{
    rill_producer_conf_t *pc = rill_producer_conf_new();
    char err[256];
    cr_assert_eq(rill_producer_conf_set(pc, "bootstrap.servers", boot, err, sizeof(err)), RILL_OK);
    if (tid)
        cr_assert_eq(rill_producer_conf_set(pc, "transactional.id", tid, err, sizeof(err)),
                     RILL_OK);
    return pc;
}

/* The pipeline's start (or its first run) fails with a sentence holding `needle`. */
static void tx_refused(kk_env_t *env, rill_stage_t *src, rill_stage_t *sink, const char *needle)
{
    rill_pipeline_t *p = rill_pipeline_new(env->sys, "tx-misuse");
    rill_pipeline_add(p, src, NULL);
    rill_pipeline_add(p, sink, NULL);
    char err[256] = "";
    rill_err_t e = rill_pipeline_start(p, err, sizeof(err));
    if (e == RILL_OK) {
        rill_pipeline_result_t r;
        cr_assert_eq(rill_pipeline_wait(p, TX_WAIT_MS, &r), RILL_OK, "it did not fail");
        cr_assert_eq(r.end, RILL_PIPELINE_FAILED);
        snprintf(err, sizeof(err), "%s", r.text);
    }
    cr_assert(strstr(err, needle), "\"%s\" does not say \"%s\"", err, needle);
    rill_pipeline_destroy(p);
}

Test(kafka_txn, misuse_is_refused_with_a_sentence, .timeout = 120)
{
    kk_env_t env;
    kk_env_init(&env);
    kk_load_topic(&env, "tx-mis-in", 1, 10, 40);
    char err[256] = "";
    /* rill.commit takes true, false or transaction */
    rill_consumer_conf_t *cc = rill_consumer_conf_new();
    cr_assert_eq(rill_consumer_conf_set(cc, "rill.commit", "txn", err, sizeof(err)), RILL_EINVAL);
    cr_assert(strstr(err, "true, false or transaction"), "%s", err);
    rill_consumer_conf_destroy(cc);
    /* read_uncommitted, an assigned callback, a redelivery timeout */
    const char *ru[] = {"rill.commit", "transaction", "isolation.level", "read_uncommitted", NULL};
    cc = kk_conf_new(env.boot, "tx-mis", ru);
    kk_conf_subscribe1(cc, "tx-mis-in");
    tx_refused(&env, rill_kafka_source(cc), rill_kafka_txn_sink(tx_pconf(env.boot, "t1")),
               "isolation.level=read_uncommitted");
    const char *rt[] = {"rill.commit", "transaction", "rill.unconfirmed.timeout.ms", "1000", NULL};
    cc = kk_conf_new(env.boot, "tx-mis", rt);
    kk_conf_subscribe1(cc, "tx-mis-in");
    tx_refused(&env, rill_kafka_source(cc), rill_kafka_txn_sink(tx_pconf(env.boot, "t1")),
               "rill.unconfirmed.timeout.ms");
    /* a transactional sink without transactional.id; a plain sink with one */
    const char *tx[] = {"rill.commit", "transaction", "auto.offset.reset", "earliest", NULL};
    cc = kk_conf_new(env.boot, "tx-mis", tx);
    kk_conf_subscribe1(cc, "tx-mis-in");
    tx_refused(&env, rill_kafka_source(cc), rill_kafka_txn_sink(tx_pconf(env.boot, NULL)),
               "needs transactional.id");
    cc = kk_conf_new(env.boot, "tx-mis", tx);
    kk_conf_subscribe1(cc, "tx-mis-in");
    tx_refused(&env, rill_kafka_source(cc), rill_kafka_sink(tx_pconf(env.boot, "t1")),
               "rill_kafka_txn_sink");
    /* a transactional sink fed by a source that commits its own offsets:
     * its first record fails the sink */
    const char *plain[] = {"auto.offset.reset", "earliest", NULL};
    cc = kk_conf_new(env.boot, "tx-mis-plain", plain);
    kk_conf_assign_all(cc, "tx-mis-in", 1, RILL_OFFSET_BEGINNING);
    tx_map_t map;
    memset(&map, 0, sizeof(map));
    atomic_store(&map.fail_at, -1);
    snprintf(map.out, sizeof(map.out), "tx-mis-out");
    rill_pipeline_t *p = rill_pipeline_new(env.sys, "tx-mis-plain");
    rill_pipeline_add(p, rill_kafka_source(cc), NULL);
    rill_pipeline_add(p, rill_stage_map(tx_map_fn, &map), NULL);
    rill_pipeline_add(p, rill_kafka_txn_sink(tx_pconf(env.boot, "t2")), NULL);
    tx_start(p, 0);
    rill_pipeline_result_t r;
    cr_assert_eq(rill_pipeline_wait(p, TX_WAIT_MS, &r), RILL_OK, "it did not fail");
    cr_assert_eq(r.end, RILL_PIPELINE_FAILED);
    cr_assert(strstr(r.text, "rill.commit=transaction"), "%s", r.text);
    rill_pipeline_destroy(p);
    kk_env_fini(&env);
}
