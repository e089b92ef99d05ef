/*
 * consume -> transform -> produce against the embedded broker: the Kafka
 * source, produce requests and the Kafka sink (include/rill/kafka.h) in
 * pipelines (include/rill/stream.h), as a service would wire them.
 *
 *   clean run            100,000 records, exactly once in the output, and
 *                        no commit ever passes an undelivered output
 *   produce faults       injected Produce errors and a broker outage: no
 *                        loss, per-partition order kept
 *   fatal producer error the sink fails, the pipeline (a supervisor's
 *                        child) restarts, unconfirmed records come again
 *   one-to-many          outputs match the expected multiset, commits reach
 *                        the end; a drop held with redeliver_drops holds
 *                        its partition's commit below it
 *   dropping stages      filter, conflate, conflate_by_key and the buffer's
 *                        drop strategies confirm what they drop
 *   stop in flight       a stop drains what is in flight and commits it
 *   supervised           a middle stage failing every Nth record: all is
 *                        processed, all is committed
 *   shutdown             a producer stopped with requests in flight (broker
 *                        down) flushes with its deadline and reports what
 *                        it left
 *   configuration        bad producer configuration and arguments refused
 *
 * Input records come from the testkit's generator, partition by partition:
 * partition p of a topic loaded with `per` records per partition holds
 * seq p * per + o at offset o ("seq=<n> ..." in the value), so a seq names
 * its input record. The transform writes output k of input seq as value
 * "seq=<n> out=<k>" (key: the input's key) to the input's partition number
 * of the output topic, and asks for its delivery result with reply arg
 * seq * 4 + k.
 *
 * THE LEDGER. An actor that receives every delivery result and every
 * commit the consumer makes (the commit callback forwards each one to it),
 * in one mailbox. Its mailbox is FIFO for sends ordered by happens-before,
 * and the sink sends a delivery result before it confirms the request's
 * origin (which may then be committed): so when the ledger handles a
 * commit, the results of every output that was delivered before it are
 * already handled. At each commit it checks that every committed offset o
 * of partition p has all inputs below o complete (every expected output
 * delivered). Nothing asserts on executor threads: the ledger records, the
 * test thread asserts.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

#include <rill/kafka.h>
#include <rill/stream.h>
#include <rill/supervisor.h>
#include <rill/testkit.h>

#include "kafka/kafka_int.h"
#include "support/rtest.h"

#include "support/actor_kit.h"
#include "support/kafka_kit.h"

/* Most partitions a test topic has. */
#define MAXP 8

/* Create topics `in` and `out` with `parts` partitions, and load `per`
 * generated records of 40 bytes into each partition of `in`. */
static void load_in_out(kk_env_t *e, const char *in, const char *out, int parts, size_t per)
{
    kk_load_topic(e, in, parts, per, 40);
    kk_create_topic(e, out, parts);
}

/* The generator's (or the transform's) "seq=<n>" at the start of a value,
 * and the "out=<k>" after it (-1 if absent). Returns the seq or -1. */
static int64_t value_seq(const void *value, size_t len, int *k)
{
    char buf[64];
    size_t n = len < sizeof(buf) - 1 ? len : sizeof(buf) - 1;
    if (!value || n < 5)
        return -1;
    memcpy(buf, value, n);
    buf[n] = '\0';
    long long seq = -1;
    int out = -1;
    if (sscanf(buf, "seq=%lld out=%d", &seq, &out) < 1)
        return -1;
    if (k)
        *k = out;
    return seq;
}

/* ------------------------------------------------------------------ */
/* The ledger                                                          */
/* ------------------------------------------------------------------ */

enum { LEDGER_COMMIT = RILL_MSG_USER + 1 };

/* How many outputs input `seq` has. */
typedef int expect_fn(uint64_t seq);

static int expect_one(uint64_t seq)
{
    (void)seq;
    return 1;
}

/* One-to-many and filter: multiples of 5 none, other even seqs 3, odd 1. */
static int expect_fanout(uint64_t seq)
{
    return seq % 5 == 0 ? 0 : seq % 2 == 0 ? 3 : 1;
}

typedef struct commit_ev {
    rd_kafka_resp_err_t err;
    int n;
    struct {
        int32_t partition;
        int64_t offset;
        rd_kafka_resp_err_t err;
    } v[];
} commit_ev_t;

typedef struct ledger {
    pthread_mutex_t mu;
    rill_system_t *sys;
    rill_aid_t aid;
    int parts;
    size_t per, n;
    expect_fn *expect;
    uint8_t *mask;        /* outputs delivered per input (bit k) */
    int64_t low[MAXP];    /* first offset of each partition whose input is incomplete */
    long complete;        /* inputs with every output delivered */
    long ok;              /* successful delivery results */
    long failed;          /* delivery results with an error */
    long dups;            /* successful results for an output already delivered */
    long foreign;         /* results that name no expected output */
    uint8_t *failed_once; /* inputs with a failed delivery result */
    long commits, checks, violations;
    char violation[256];
    int64_t committed[MAXP]; /* last successful commit, -1 none */
    atomic_long lost_events; /* commit events the ledger's mailbox refused */
} ledger_t;

static int ledger_complete_locked(ledger_t *l, uint64_t seq)
{
    int want = l->expect(seq);
    return __builtin_popcount(l->mask[seq]) >= want;
}

static void ledger_advance_locked(ledger_t *l, int p)
{
    while (l->low[p] < (int64_t)l->per &&
           ledger_complete_locked(l, (uint64_t)p * l->per + (uint64_t)l->low[p]))
        l->low[p]++;
}

static rill_err_t ledger_behavior(rill_ctx_t *ctx, void *state, rill_msg_t *msg)
{
    ledger_t *l = state;
    if (msg->type == KIT_MSG_PING) { /* kit_fence */
        rill_msg_t r = {.type = KIT_MSG_PING};
        rill_reply(ctx, msg, &r);
        return RILL_OK;
    }
    pthread_mutex_lock(&l->mu);
    if (msg->type == RILL_MSG_DELIVERY && msg->payload) {
        const rill_delivery_t *d = msg->payload;
        uint64_t seq = d->arg / 4;
        int k = (int)(d->arg % 4);
        if (seq >= l->n || k >= l->expect(seq)) {
            l->foreign++;
        } else if (d->err) {
            l->failed++;
            l->failed_once[seq] = 1;
        } else {
            l->ok++;
            if (l->mask[seq] & (1u << k)) {
                l->dups++;
            } else {
                l->mask[seq] |= (uint8_t)(1u << k);
                if (ledger_complete_locked(l, seq)) {
                    l->complete++;
                    ledger_advance_locked(l, (int)(seq / l->per));
                }
            }
        }
    } else if (msg->type == LEDGER_COMMIT && msg->payload) {
        const commit_ev_t *c = msg->payload;
        l->commits++;
        for (int i = 0; i < c->n; i++) {
            int p = c->v[i].partition;
            int64_t o = c->v[i].offset;
            l->checks++;
            int bad = p < 0 || p >= l->parts || o < 0 || o > l->low[p];
            if (bad && !l->violations++)
                snprintf(l->violation, sizeof(l->violation),
                         "offset %" PRId64 " of [%d] committed while the input at offset %" PRId64
                         " had outputs not delivered (commit %s)",
                         o, p, p >= 0 && p < l->parts ? l->low[p] : -1,
                         rd_kafka_err2name(c->err ? c->err : c->v[i].err));
            if (p >= 0 && p < l->parts && !c->err && !c->v[i].err)
                l->committed[p] = o;
        }
    }
    pthread_mutex_unlock(&l->mu);
    return RILL_OK;
}

static ledger_t *ledger_new(rill_system_t *sys, int parts, size_t per, expect_fn *expect,
                            int executor)
{
    cr_assert_leq(parts, MAXP);
    ledger_t *l = calloc(1, sizeof(*l));
    cr_assert_not_null(l);
    pthread_mutex_init(&l->mu, NULL);
    l->sys = sys;
    l->parts = parts;
    l->per = per;
    l->n = (size_t)parts * per;
    l->expect = expect;
    l->mask = calloc(l->n, 1);
    l->failed_once = calloc(l->n, 1);
    cr_assert(l->mask && l->failed_once);
    for (int p = 0; p < MAXP; p++)
        l->committed[p] = -1;
    for (uint64_t s = 0; s < l->n; s++)
        if (expect(s) == 0)
            l->complete++;
    for (int p = 0; p < parts; p++)
        ledger_advance_locked(l, p);
    /* Room for every delivery result in flight and then some: a refused
     * result would be lost (and show as an incomplete input). */
    rill_spawn_opts_t o = {.behavior = ledger_behavior,
                           .state = l,
                           .mailbox_capacity = 1u << 16,
                           .executor = KIT_EXEC(executor)};
    cr_assert_eq(rill_spawn(sys, &o, &l->aid), RILL_OK);
    return l;
}

/* Stop the ledger actor and free it. */
static void ledger_free(ledger_t *l)
{
    rill_stop(l->sys, l->aid);
    cr_assert(kit_wait_dead(l->sys, l->aid, KK_WAIT_MS));
    free(l->mask);
    free(l->failed_once);
    pthread_mutex_destroy(&l->mu);
    free(l);
}

static long ledger_get(ledger_t *l, const long *field)
{
    pthread_mutex_lock(&l->mu);
    long v = *field;
    pthread_mutex_unlock(&l->mu);
    return v;
}

/* Every partition's last successful commit is its `end`. */
static int ledger_committed_all(ledger_t *l, const int64_t *end)
{
    int ok = 1;
    pthread_mutex_lock(&l->mu);
    for (int p = 0; p < l->parts; p++)
        ok &= l->committed[p] == end[p];
    pthread_mutex_unlock(&l->mu);
    return ok;
}

/* The consumer's commit callback (its executor): forward to the ledger. */
static void ledger_commit_cb(void *opaque, rd_kafka_resp_err_t err,
                             const rd_kafka_topic_partition_list_t *offsets)
{
    ledger_t *l = opaque;
    commit_ev_t *c = malloc(sizeof(*c) + (size_t)offsets->cnt * sizeof(c->v[0]));
    if (!c) {
        atomic_fetch_add(&l->lost_events, 1);
        return;
    }
    c->err = err;
    c->n = offsets->cnt;
    for (int i = 0; i < offsets->cnt; i++) {
        c->v[i].partition = offsets->elems[i].partition;
        c->v[i].offset = offsets->elems[i].offset;
        c->v[i].err = offsets->elems[i].err;
    }
    rill_msg_t m = {.type = LEDGER_COMMIT, .payload = c, .dtor = free};
    if (rill_tell(l->sys, l->aid, &m) != RILL_OK) {
        free(c);
        atomic_fetch_add(&l->lost_events, 1);
    }
}

/* ------------------------------------------------------------------ */
/* Clients                                                             */
/* ------------------------------------------------------------------ */

/* Reconnect quickly after an outage. */
static const char *const quick_kv[] = {"reconnect.backoff.ms", "50", "reconnect.backoff.max.ms",
                                       "500", NULL};

/* A consumer conf for fixed partitions 0..parts-1 of topic from `start`
 * (parts < 0: a group subscription to topic), reporting commits to l (if
 * not NULL); NULL if something was refused (no asserts). */
static rill_consumer_conf_t *consumer_conf_try(const char *boot, const char *group,
                                               const char *topic, int parts, int64_t start,
                                               ledger_t *l)
{
    rill_consumer_conf_t *c = rill_consumer_conf_new();
    if (!c)
        return NULL;
    const char *kv[] = {"bootstrap.servers",
                        boot,
                        "group.id",
                        group,
                        "auto.offset.reset",
                        "earliest",
                        "rill.commit.interval.ms",
                        "100",
                        "rill.shutdown.timeout.ms",
                        "10000",
                        NULL};
    int bad = 0;
    for (size_t i = 0; kv[i]; i += 2)
        bad |= rill_consumer_conf_set(c, kv[i], kv[i + 1], NULL, 0) != RILL_OK;
    for (size_t i = 0; quick_kv[i]; i += 2)
        bad |= rill_consumer_conf_set(c, quick_kv[i], quick_kv[i + 1], NULL, 0) != RILL_OK;
    for (int p = 0; p < parts; p++)
        bad |= rill_consumer_conf_assign(c, topic, p, start, NULL, 0) != RILL_OK;
    if (parts < 0)
        bad |= rill_consumer_conf_subscribe(c, &topic, 1, NULL, 0) != RILL_OK;
    if (bad) {
        rill_consumer_conf_destroy(c);
        return NULL;
    }
    if (l)
        rill_consumer_conf_set_commit_cb(c, ledger_commit_cb, l);
    return c;
}

static rill_consumer_conf_t *consumer_conf(const char *boot, const char *group, const char *topic,
                                           int parts, int64_t start, ledger_t *l)
{
    rill_consumer_conf_t *c = consumer_conf_try(boot, group, topic, parts, start, l);
    cr_assert_not_null(c, "the consumer configuration was refused");
    return c;
}

/* A producer conf: bootstrap.servers, quick reconnects, and kv; NULL if
 * something was refused (no asserts). */
static rill_producer_conf_t *producer_conf_try(const char *boot, const char *const *kv)
{
    rill_producer_conf_t *c = rill_producer_conf_new();
    if (!c)
        return NULL;
    int bad = rill_producer_conf_set(c, "bootstrap.servers", boot, NULL, 0) != RILL_OK;
    for (size_t i = 0; quick_kv[i]; i += 2)
        bad |= rill_producer_conf_set(c, quick_kv[i], quick_kv[i + 1], NULL, 0) != RILL_OK;
    for (size_t i = 0; kv && kv[i]; i += 2)
        bad |= rill_producer_conf_set(c, kv[i], kv[i + 1], NULL, 0) != RILL_OK;
    if (bad) {
        rill_producer_conf_destroy(c);
        return NULL;
    }
    return c;
}

static rill_producer_conf_t *producer_conf(const char *boot, const char *const *kv)
{
    rill_producer_conf_t *c = producer_conf_try(boot, kv);
    cr_assert_not_null(c, "the producer configuration was refused");
    return c;
}

/* ------------------------------------------------------------------ */
/* Reading the output back                                             */
/* ------------------------------------------------------------------ */

typedef struct outcheck {
    size_t n_in;
    uint16_t *count; /* copies of (seq, k): index seq * 4 + k */
    long records, foreign, misplaced, order_breaks, dups, wrong_key;
    char first_problem[200];
} outcheck_t;

/* Read the whole output topic and count every (seq, k) it holds. Checks
 * that each output sits in its input's partition with its input's key, and
 * that within each partition the first copies' seqs never go down (order
 * kept; a later copy is counted in dups). */
static void read_output(kk_env_t *e, const char *topic, int parts, size_t per, outcheck_t *oc)
{
    memset(oc, 0, sizeof(*oc));
    oc->n_in = (size_t)parts * per;
    oc->count = calloc(oc->n_in * 4, sizeof(*oc->count));
    cr_assert_not_null(oc->count);
    char err[512] = "";
    rill_testkit_opts_t o = {.timeout_ms = 60000};
    rill_consumed_t *c = NULL;
    rill_err_t r =
        rill_testkit_consume(e->boot, topic, RILL_CONSUME_TO_END, &o, &c, err, sizeof(err));
    cr_assert_eq(r, RILL_OK, "reading %s: %s: %s", topic, rill_err_name(r), err);
    int64_t last[MAXP];
    for (int p = 0; p < MAXP; p++)
        last[p] = -1;
    for (size_t i = 0; i < rill_consumed_count(c); i++) {
        const rill_testkit_record_t *rec = rill_consumed_at(c, i);
        int k = -1;
        int64_t seq = value_seq(rec->value, rec->value_len, &k);
        oc->records++;
        if (seq < 0 || (size_t)seq >= oc->n_in || k < 0 || k > 3) {
            oc->foreign++;
            continue;
        }
        int p = rec->partition;
        if (p != (int)((size_t)seq / per)) {
            if (!oc->misplaced++ && !oc->first_problem[0])
                snprintf(oc->first_problem, sizeof(oc->first_problem),
                         "seq %" PRId64 " in partition %d", seq, p);
            continue;
        }
        char key[32];
        int kl = snprintf(key, sizeof(key), "key-%" PRId64, seq);
        if (!rec->key || rec->key_len != (size_t)kl || memcmp(rec->key, key, (size_t)kl))
            oc->wrong_key++;
        if (oc->count[seq * 4 + k]++) {
            oc->dups++;
            continue;
        }
        if (seq < last[p] && !oc->order_breaks++ && !oc->first_problem[0])
            snprintf(oc->first_problem, sizeof(oc->first_problem),
                     "[%d] offset %" PRId64 ": seq %" PRId64 " after seq %" PRId64, p, rec->offset,
                     seq, last[p]);
        if (seq > last[p])
            last[p] = seq;
    }
    rill_consumed_destroy(c);
}

static void outcheck_free(outcheck_t *oc)
{
    free(oc->count);
}

/* Outputs of the expected set that are missing (count 0), and outputs
 * present more than once (beyond the first copy) are in oc->dups. */
static long outputs_missing(const outcheck_t *oc, expect_fn *expect, int64_t *first)
{
    long missing = 0;
    *first = -1;
    for (size_t s = 0; s < oc->n_in; s++)
        for (int k = 0; k < expect(s); k++)
            if (!oc->count[s * 4 + k] && !missing++)
                *first = (int64_t)s;
    return missing;
}

/* Outputs present that expect() does not have. */
static long outputs_unexpected(const outcheck_t *oc, expect_fn *expect)
{
    long n = 0;
    for (size_t s = 0; s < oc->n_in; s++)
        for (int k = expect(s); k < 4; k++)
            n += oc->count[s * 4 + k];
    return n;
}

/* ------------------------------------------------------------------ */
/* The transform: record -> produce request                            */
/* ------------------------------------------------------------------ */

typedef struct xform {
    rill_aid_t ledger;
    const char *out_topic;
    kit_gate_t *gate; /* if set: wait for it before transforming input number gate_at */
    long gate_at;
    long fail_every;         /* the stage fails at every fail_every-th call (0: never) */
    int nap_us;              /* work per record */
    atomic_long transformed; /* calls, redeliveries included */
    atomic_long errors;      /* records that could not be transformed */
    atomic_long failures;    /* failures made on purpose */
    /* The longest time from a failure to the next call: a restart. */
    _Atomic int64_t failed_at_ms, restart_gap_max_ms;
} xform_t;

/* A produce request for output k of input seq: the input's key, its
 * partition number in the output topic, the delivery result to the
 * ledger. */
static rill_produce_t *make_request(const char *topic, rill_aid_t ledger,
                                    const rd_kafka_message_t *m, uint64_t seq, int k)
{
    char value[64];
    int vl = snprintf(value, sizeof(value), "seq=%" PRIu64 " out=%d", seq, k);
    rill_produce_t *p =
        rill_produce_new(topic, m->partition, m->key, m->key_len, value, (size_t)vl);
    if (p)
        rill_produce_set_reply(p, ledger, seq * 4 + (uint64_t)k);
    return p;
}

/* map: one record -> one produce request. No origin code: the output
 * stands for its input by itself. */
static rill_err_t xform_one(void *opaque, rill_elem_t *in, rill_elem_t *out)
{
    xform_t *x = opaque;
    const rd_kafka_message_t *m = rill_record(in);
    long n = atomic_fetch_add(&x->transformed, 1) + 1;
    int64_t failed_at = atomic_exchange(&x->failed_at_ms, 0);
    if (failed_at) {
        int64_t gap = kit_now_ms() - failed_at;
        if (gap > atomic_load(&x->restart_gap_max_ms))
            atomic_store(&x->restart_gap_max_ms, gap);
    }
    if (x->gate && n - 1 == x->gate_at)
        kit_gate_pass(x->gate, KK_WAIT_MS);
    if (x->nap_us)
        kk_nap_us(x->nap_us);
    int64_t seq = m ? value_seq(m->payload, m->len, NULL) : -1;
    if (seq < 0) {
        atomic_fetch_add(&x->errors, 1);
        rill_elem_release(in);
        return RILL_EINVAL;
    }
    if (x->fail_every && n % x->fail_every == 0) {
        atomic_fetch_add(&x->failures, 1);
        atomic_store(&x->failed_at_ms, kit_now_ms());
        rill_elem_release(in);
        return RILL_EIO; /* the record is not confirmed: it comes again */
    }
    rill_produce_t *p = make_request(x->out_topic, x->ledger, m, (uint64_t)seq, 0);
    rill_elem_release(in);
    if (!p)
        return RILL_ENOMEM;
    *out = rill_produce_elem(p);
    return RILL_OK;
}

/* ------------------------------------------------------------------ */
/* Pipelines                                                           */
/* ------------------------------------------------------------------ */

/* source -> mid -> sink, on the executors given (-1: any). */
static rill_pipeline_t *kpipe_new(rill_system_t *sys, const char *name, rill_consumer_conf_t *cc,
                                  rill_stage_t *mid, rill_producer_conf_t *pc, int src_exec,
                                  int mid_exec, int sink_exec)
{
    rill_pipeline_t *p = rill_pipeline_new(sys, name);
    cr_assert_not_null(p);
    rill_stage_opts_t so = {.executor = KIT_EXEC(src_exec)};
    rill_stage_opts_t mo = {.executor = KIT_EXEC(mid_exec)};
    rill_stage_opts_t ko = {.executor = KIT_EXEC(sink_exec)};
    cr_assert_eq(rill_pipeline_add(p, rill_kafka_source(cc), &so), RILL_OK);
    cr_assert_eq(rill_pipeline_add(p, mid, &mo), RILL_OK);
    cr_assert_eq(rill_pipeline_add(p, rill_kafka_sink(pc), &ko), RILL_OK);
    return p;
}

static void kpipe_start(rill_pipeline_t *p)
{
    char err[256] = "";
    rill_err_t e = rill_pipeline_start(p, err, sizeof(err));
    cr_assert_eq(e, RILL_OK, "rill_pipeline_start: %s: %s", rill_err_name(e), err);
}

static rill_pipeline_result_t kpipe_wait(rill_pipeline_t *p)
{
    rill_pipeline_result_t r;
    rill_err_t e = rill_pipeline_wait(p, 60000, &r);
    cr_assert_eq(e, RILL_OK, "the pipeline did not end: %s", rill_err_name(e));
    return r;
}

static rill_pipeline_result_t kpipe_stop_wait(rill_pipeline_t *p)
{
    cr_assert_eq(rill_pipeline_stop(p), RILL_OK);
    return kpipe_wait(p);
}

/* The stats of the pipeline's source (stage 0). */
static rill_consumer_stats_t kpipe_cstats(rill_system_t *sys, rill_pipeline_t *p)
{
    rill_consumer_stats_t s;
    rill_err_t e = rill_consumer_stats(sys, rill_pipeline_stage(p, 0), &s);
    cr_assert_eq(e, RILL_OK, "source stats: %s", rill_err_name(e));
    return s;
}

/* ------------------------------------------------------------------ */
/* 1. A clean run: 100,000 records, exactly once                       */
/* ------------------------------------------------------------------ */

#define CL_PARTS 4
#define CL_PER   25000
#define CL_TOTAL (CL_PARTS * CL_PER)

Test(kafka_pipeline, clean_run_exactly_once_and_commits_follow_deliveries, .timeout = 240)
{
    kk_env_t env;
    kk_env_init(&env);
    int64_t t_load = kit_now_ms();
    load_in_out(&env, "in", "out", CL_PARTS, CL_PER);
    int64_t t0 = kit_now_ms();

    ledger_t *l = ledger_new(env.sys, CL_PARTS, CL_PER, expect_one, -1);
    xform_t x = {.ledger = l->aid, .out_topic = "out"};
    rill_pipeline_t *p =
        kpipe_new(env.sys, "clean",
                  consumer_conf(env.boot, "clean", "in", CL_PARTS, RILL_OFFSET_BEGINNING, l),
                  rill_stage_map(xform_one, &x), producer_conf(env.boot, NULL), -1, -1, -1);
    kpipe_start(p);

    int ok;
    KK_WAIT_UNTIL(ok, 150000, ledger_get(l, &l->complete) == CL_TOTAL);
    cr_assert(ok, "%ld of %d inputs have their output delivered (%ld transformed)",
              ledger_get(l, &l->complete), CL_TOTAL, atomic_load(&x.transformed));
    int64_t t1 = kit_now_ms();
    int64_t end[CL_PARTS];
    for (int i = 0; i < CL_PARTS; i++)
        end[i] = CL_PER;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, ledger_committed_all(l, end));
    cr_assert(ok, "the commits did not reach the end offsets");
    rill_producer_stats_t ps = kk_producer_stats_ok(env.sys, rill_pipeline_stage(p, 2));
    rill_consumer_stats_t cs = kpipe_cstats(env.sys, p);

    rill_pipeline_result_t r = kpipe_stop_wait(p);
    cr_assert_eq(r.end, RILL_PIPELINE_STOPPED, "ended %d: %s: %s", r.end, r.stage, r.text);
    cr_assert_eq(r.delivered, (uint64_t)CL_TOTAL, "%llu reached the sink",
                 (unsigned long long)r.delivered);
    cr_assert_eq(r.restarts, 0);
    rill_pipeline_destroy(p);
    /* The final commit's event is in the ledger's mailbox: let it land. */
    cr_assert_eq(kit_fence(env.sys, l->aid), RILL_OK);

    fprintf(stderr,
            "clean: %d records through consume -> map -> produce in %lld ms (load %lld ms), "
            "%ld commits, %ld offsets checked\n",
            CL_TOTAL, (long long)(t1 - t0), (long long)(t0 - t_load), l->commits, l->checks);
    cr_assert_eq(l->violations, 0, "%ld violations, the first: %s", l->violations, l->violation);
    cr_assert_gt(l->checks, CL_PARTS, "too few commits to check anything");
    cr_assert_eq(atomic_load(&l->lost_events), 0);
    cr_assert_eq(l->ok, CL_TOTAL, "%ld delivery results", l->ok);
    cr_assert_eq(l->failed, 0);
    cr_assert_eq(l->dups, 0);
    cr_assert_eq(l->foreign, 0);
    cr_assert_eq(atomic_load(&x.errors), 0);
    cr_assert_eq(atomic_load(&x.transformed), CL_TOTAL,
                 "%ld transformed: redeliveries in a clean run", atomic_load(&x.transformed));
    cr_assert_eq(ps.requested, (uint64_t)CL_TOTAL);
    cr_assert_eq(ps.delivered, (uint64_t)CL_TOTAL);
    cr_assert_eq(ps.failed, 0);
    cr_assert_eq(ps.inflight, 0);
    cr_assert_leq(ps.inflight_max, 10000, "over rill.max.inflight's default");
    cr_assert_eq(cs.confirmed, (uint64_t)CL_TOTAL);
    cr_assert_eq(cs.fenced, 0);

    kk_assert_committed(env.boot, "clean", "in", CL_PARTS, CL_PER);

    outcheck_t oc;
    read_output(&env, "out", CL_PARTS, CL_PER, &oc);
    int64_t first_missing;
    long missing = outputs_missing(&oc, expect_one, &first_missing);
    cr_assert_eq(oc.foreign, 0, "%ld records in the output that no input made", oc.foreign);
    cr_assert_eq(oc.misplaced, 0, "%s", oc.first_problem);
    cr_assert_eq(oc.wrong_key, 0);
    cr_assert_eq(missing, 0, "%ld inputs missing from the output, the first seq %" PRId64, missing,
                 first_missing);
    cr_assert_eq(oc.dups, 0, "%ld duplicates in the output", oc.dups);
    cr_assert_eq(outputs_unexpected(&oc, expect_one), 0);
    cr_assert_eq(oc.records, CL_TOTAL);
    cr_assert_eq(oc.order_breaks, 0, "%s", oc.first_problem);
    outcheck_free(&oc);

    ledger_free(l);
    kk_env_fini(&env);
}

/* ------------------------------------------------------------------ */
/* 2. Produce errors and a broker outage: no loss, order kept          */
/* ------------------------------------------------------------------ */

#define FT_PARTS 4
#define FT_PER   5000
#define FT_TOTAL (FT_PARTS * FT_PER)

Test(kafka_pipeline, produce_errors_and_outage_lose_nothing_and_keep_order, .timeout = 180)
{
    kk_env_t env;
    kk_env_init(&env);
    load_in_out(&env, "in", "out", FT_PARTS, FT_PER);
    int16_t produce_api = rill_api_key_from_name("Produce");
    cr_assert_eq(produce_api, 0);
    /* The loading producer is done: these hit the pipeline's sink. */
    cr_assert_eq(rill_broker_push_request_errors(env.broker, produce_api, 3,
                                                 RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION),
                 RILL_OK);
    cr_assert_eq(
        rill_broker_push_request_errors(env.broker, produce_api, 2, RD_KAFKA_RESP_ERR__TRANSPORT),
        RILL_OK);

    /* The map waits at a gate after a quarter of the inputs (executor 0;
     * the rest runs on executor 1). The broker goes down while nothing is
     * in flight, so no Produce request can be appended with its response
     * lost: every failure the sink sees was certainly not appended, and a
     * duplicate or a reordering in the output is rill's or the idempotent
     * producer's doing, not an artefact of the outage. */
    ledger_t *l = ledger_new(env.sys, FT_PARTS, FT_PER, expect_one, 1);
    kit_gate_t gate;
    kit_gate_init(&gate);
    xform_t x = {.ledger = l->aid, .out_topic = "out", .gate = &gate, .gate_at = FT_TOTAL / 4};
    /* The sink runs under injected Produce errors: with the testkit's
     * configuration for that (one request in flight), the mock cannot
     * lose a batch librdkafka implicitly acks, so a missing output is
     * rill's (see rill_testkit_produce_faults_config). */
    rill_pipeline_t *p =
        kpipe_new(env.sys, "faults",
                  consumer_conf(env.boot, "faults", "in", FT_PARTS, RILL_OFFSET_BEGINNING, l),
                  rill_stage_map(xform_one, &x),
                  producer_conf(env.boot, rill_testkit_produce_faults_config()), 1, 0, 1);
    kpipe_start(p);
    rill_aid_t producer = rill_pipeline_stage(p, 2);

    int ok;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS,
                  ledger_get(l, &l->complete) == FT_TOTAL / 4 && atomic_load(&gate.arrived) == 1);
    cr_assert(ok, "%ld outputs delivered, the map %s at the gate", ledger_get(l, &l->complete),
              atomic_load(&gate.arrived) ? "is" : "is not");
    /* Every request made so far is delivered: nothing is in flight. More
     * produce errors (for after the outage), and the broker goes away for
     * a while; the map goes on meanwhile. */
    cr_assert_eq(rill_broker_push_request_errors(env.broker, produce_api, 3,
                                                 RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION),
                 RILL_OK);
    cr_assert_eq(
        rill_broker_push_request_errors(env.broker, produce_api, 1, RD_KAFKA_RESP_ERR__TRANSPORT),
        RILL_OK);
    long before = ledger_get(l, &l->complete);
    cr_assert_eq(rill_broker_set_down(env.broker, RILL_BROKER_ALL), RILL_OK);
    kit_gate_open(&gate);
    kk_nap_us(1500 * 1000); /* the outage itself: its length is the premise, not a sync */
    long during = ledger_get(l, &l->complete);
    uint32_t inflight_down = kk_producer_stats_ok(env.sys, producer).inflight;
    cr_assert_eq(rill_broker_set_up(env.broker, RILL_BROKER_ALL), RILL_OK);

    KK_WAIT_UNTIL(ok, 90000, ledger_get(l, &l->complete) == FT_TOTAL);
    cr_assert(ok, "%ld of %d inputs have their output delivered", ledger_get(l, &l->complete),
              FT_TOTAL);
    int64_t end[FT_PARTS];
    for (int i = 0; i < FT_PARTS; i++)
        end[i] = FT_PER;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, ledger_committed_all(l, end));
    cr_assert(ok,
              "the commits did not reach the end offsets (last: %" PRId64 " %" PRId64 " %" PRId64
              " %" PRId64 ")",
              l->committed[0], l->committed[1], l->committed[2], l->committed[3]);
    rill_producer_stats_t ps = kk_producer_stats_ok(env.sys, producer);
    rill_pipeline_result_t r = kpipe_stop_wait(p);
    cr_assert_eq(r.end, RILL_PIPELINE_STOPPED, "ended %d: %s: %s", r.end, r.stage, r.text);
    rill_pipeline_destroy(p);
    kit_gate_destroy(&gate);
    cr_assert_eq(kit_fence(env.sys, l->aid), RILL_OK);

    outcheck_t oc;
    read_output(&env, "out", FT_PARTS, FT_PER, &oc);
    int64_t first_missing;
    long missing = outputs_missing(&oc, expect_one, &first_missing);
    fprintf(stderr,
            "faults: %ld inputs done before the outage, %ld at its end, %u requests in flight "
            "during it; %ld output records, %ld duplicates, %ld order breaks; producer: %llu "
            "delivered, %llu failed\n",
            before, during, inflight_down, oc.records, oc.dups, oc.order_breaks,
            (unsigned long long)ps.delivered, (unsigned long long)ps.failed);
    cr_assert_eq(l->violations, 0, "%ld violations, the first: %s", l->violations, l->violation);
    cr_assert_eq(atomic_load(&l->lost_events), 0);
    cr_assert_eq(l->failed, 0, "%ld deliveries failed: retriable errors must be retried",
                 l->failed);
    cr_assert_eq(ps.failed, 0);
    cr_assert_eq(missing, 0, "%ld inputs missing from the output, the first seq %" PRId64, missing,
                 first_missing);
    cr_assert_eq(oc.foreign, 0);
    cr_assert_eq(oc.misplaced, 0, "%s", oc.first_problem);
    cr_assert_eq(oc.wrong_key, 0);
    /* Per partition (one input partition feeds one output partition, in
     * offset order) the first copies' seqs never go down: no retry
     * reordered anything. The output may still hold copies: the 2.0.2
     * mock does not de-duplicate an idempotent producer's retried batch
     * (after the injected _TRANSPORT error it appends the batch again),
     * which a real broker would drop by its sequence number. */
    cr_assert_eq(oc.order_breaks, 0, "output reordered: %s", oc.first_problem);
    cr_assert_eq(ps.requested, (uint64_t)FT_TOTAL);
    cr_assert_eq(ps.delivered, (uint64_t)FT_TOTAL);
    cr_assert_eq(atomic_load(&x.transformed), FT_TOTAL);
    cr_assert_eq(during, before, "outputs delivered while the broker was down");
    cr_assert_gt(inflight_down, 0, "nothing waited for the broker to come back");
    outcheck_free(&oc);
    ledger_free(l);
    kk_env_fini(&env);
}

/* ------------------------------------------------------------------ */
/* 3. A fatal producer error: the pipeline, a supervisor's child,      */
/*    restarts and loses nothing                                       */
/* ------------------------------------------------------------------ */

#define FA_PARTS 4
#define FA_PER   5000
#define FA_TOTAL (FA_PARTS * FA_PER)

Test(kafka_pipeline, fatal_producer_error_restarts_the_pipeline_and_loses_nothing, .timeout = 180)
{
    kk_env_t env;
    kk_env_init(&env);
    load_in_out(&env, "in", "out", FA_PARTS, FA_PER);
    ledger_t *l = ledger_new(env.sys, FA_PARTS, FA_PER, expect_one, -1);
    xform_t x = {.ledger = l->aid, .out_topic = "out"};
    /* At most 100 in flight, lingering 20 ms: the pace is a few thousand
     * records a second, so the failure falls mid-stream. */
    const char *kv[] = {"rill.max.inflight",     "100",  "linger.ms", "20",
                        "rill.flush.timeout.ms", "1000", NULL};
    rill_pipeline_t *p =
        kpipe_new(env.sys, "fatal",
                  consumer_conf(env.boot, "fatal", "in", FA_PARTS, RILL_OFFSET_COMMITTED, l),
                  rill_stage_map(xform_one, &x), producer_conf(env.boot, kv), -1, -1, -1);
    /* The pipeline as the child of a supervisor of the application's. */
    rill_child_spec_t children[] = {RILL_CHILD_PIPELINE("pipeline", p)};
    rill_sup_spec_t spec; /* the supervisor reads it while it runs */
    rill_aid_t sup = kk_sup_start_ok(env.sys, &spec, children, 1, 3, "app-supervisor");

    int ok;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, ledger_get(l, &l->complete) >= FA_TOTAL / 5);
    cr_assert(ok, "the pipeline did not get going (%ld outputs delivered)", ledger_get(l, &l->ok));
    rill_aid_t producer = rill_pipeline_stage(p, 2);
    cr_assert(!rill_aid_is_none(producer));
    long before = ledger_get(l, &l->complete);
    long transformed_before = atomic_load(&x.transformed);
    cr_assert_lt(before, FA_TOTAL, "everything was done before the failure");
    cr_assert_eq(rill__producer_test_fatal(env.sys, producer,
                                           RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
                                           "injected by test_kafka_pipeline"),
                 RILL_OK);
    rill_child_info_t info;
    size_t n = 0;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS,
                  rill_sup_children(env.sys, sup, &info, 1, &n) == RILL_OK && n == 1 &&
                      info.restarts >= 1);
    cr_assert(ok, "the pipeline was not restarted");
    cr_assert(kit_wait_dead(env.sys, producer, KK_WAIT_MS), "the producer survived a fatal error");

    KK_WAIT_UNTIL(ok, 90000, ledger_get(l, &l->complete) == FA_TOTAL);
    cr_assert(ok, "%ld of %d inputs have their output delivered", ledger_get(l, &l->complete),
              FA_TOTAL);
    int64_t end[FA_PARTS];
    for (int i = 0; i < FA_PARTS; i++)
        end[i] = FA_PER;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, ledger_committed_all(l, end));
    cr_assert(ok, "the commits did not reach the end offsets");
    cr_assert_eq(rill_sup_children(env.sys, sup, &info, 1, &n), RILL_OK);
    rill_producer_stats_t dead =
        kk_producer_stats_ok(env.sys, producer); /* the failed one's final counters */
    cr_assert_eq(rill_sup_stop(env.sys, sup, 30000), RILL_OK);
    rill_pipeline_destroy(p); /* its supervisor has ended */
    cr_assert_eq(kit_fence(env.sys, l->aid), RILL_OK);

    long transformed = atomic_load(&x.transformed);
    fprintf(stderr,
            "fatal: failed after %ld inputs done (%ld transformed); %u restart(s); %ld failed "
            "delivery results; %ld transforms in all (%ld again); the failed producer: %llu "
            "delivered, %llu failed, %llu undelivered at stop; last exit: %s\n",
            before, transformed_before, info.restarts, l->failed, transformed,
            transformed - FA_TOTAL, (unsigned long long)dead.delivered,
            (unsigned long long)dead.failed, (unsigned long long)dead.undelivered_at_stop,
            info.last_exit.text);
    /* One failure, one restart (intensity 3 would allow more). */
    cr_assert_eq(info.restarts, 1, "%u restarts", info.restarts);
    cr_assert_eq(info.last_exit.kind, RILL_EXIT_FAILURE, "pipeline exit: %s",
                 rill_exit_kind_name(info.last_exit.kind));
    cr_assert_not_null(strstr(info.last_exit.text, "atal"), "the root cause is the producer's: %s",
                       info.last_exit.text);
    cr_assert_not_null(strstr(info.last_exit.text, "kafka-sink"), "names the stage: %s",
                       info.last_exit.text);
    cr_assert_eq(l->violations, 0, "%ld violations, the first: %s", l->violations, l->violation);
    cr_assert_eq(atomic_load(&l->lost_events), 0);
    /* What the failed run held unconfirmed was consumed again: more
     * transforms than inputs. What the failing producer still delivered
     * during its stop's flush was confirmed, and is not redelivered. */
    cr_assert_gt(transformed, FA_TOTAL, "nothing was redelivered after the restart");
    cr_assert_eq(dead.inflight, 0);
    long failed_then_done = 0, failed_inputs = 0;
    for (size_t s = 0; s < l->n; s++)
        if (l->failed_once[s]) {
            failed_inputs++;
            failed_then_done += l->mask[s] != 0;
        }
    cr_assert_eq(failed_then_done, failed_inputs,
                 "%ld inputs whose delivery failed never made it later",
                 failed_inputs - failed_then_done);

    kk_assert_committed(env.boot, "fatal", "in", FA_PARTS, FA_PER);

    outcheck_t oc;
    read_output(&env, "out", FA_PARTS, FA_PER, &oc);
    int64_t first_missing;
    long missing = outputs_missing(&oc, expect_one, &first_missing);
    fprintf(stderr, "fatal: %ld output records, %ld duplicates (at-least-once)\n", oc.records,
            oc.dups);
    cr_assert_eq(missing, 0, "%ld inputs missing from the output, the first seq %" PRId64, missing,
                 first_missing);
    cr_assert_eq(oc.foreign, 0);
    cr_assert_eq(oc.misplaced, 0, "%s", oc.first_problem);
    outcheck_free(&oc);
    ledger_free(l);
    kk_env_fini(&env);
}

/* ------------------------------------------------------------------ */
/* 4. One-to-many and filtered out; a dropped record held back         */
/* ------------------------------------------------------------------ */

#define FO_PARTS 2
#define FO_PER   3000
#define FO_TOTAL (FO_PARTS * FO_PER)

typedef struct fanout {
    rill_aid_t ledger;
    const char *out_topic;
    atomic_long none; /* inputs with no output */
} fanout_t;

/* flat_map (mapConcat): multiples of 5 make no output, other even seqs 3,
 * odd ones 1. */
static rill_err_t fan_out(void *opaque, rill_elem_t *in, rill_emitter_t *out)
{
    fanout_t *fo = opaque;
    const rd_kafka_message_t *m = rill_record(in);
    int64_t seq = m ? value_seq(m->payload, m->len, NULL) : -1;
    if (seq < 0) {
        rill_elem_release(in);
        return RILL_EINVAL;
    }
    int outs = expect_fanout((uint64_t)seq);
    if (!outs)
        atomic_fetch_add(&fo->none, 1);
    rill_err_t err = RILL_OK;
    for (int k = 0; k < outs && !err; k++) {
        rill_produce_t *p = make_request(fo->out_topic, fo->ledger, m, (uint64_t)seq, k);
        rill_elem_t e = rill_produce_elem(p);
        err = p ? rill_emit(out, &e) : RILL_ENOMEM;
    }
    rill_elem_release(in);
    return err;
}

/* The one seq a filter drops in the held-back run. */
#define FP_PER         200
#define FP_DROP_OFFSET 77

static int keep_but_one(void *opaque, const rill_elem_t *e)
{
    (void)opaque;
    const rd_kafka_message_t *m = rill_record(e);
    return !(m && m->partition == 0 && m->offset == FP_DROP_OFFSET);
}

static int expect_but_one(uint64_t seq)
{
    return seq != FP_DROP_OFFSET;
}

Test(kafka_pipeline, one_to_many_and_filtered_out_commit_all_and_a_held_drop_holds, .timeout = 180)
{
    kk_env_t env;
    kk_env_init(&env);
    load_in_out(&env, "in", "out", FO_PARTS, FO_PER);

    ledger_t *l = ledger_new(env.sys, FO_PARTS, FO_PER, expect_fanout, -1);
    fanout_t fo = {.ledger = l->aid, .out_topic = "out"};
    rill_pipeline_t *p =
        kpipe_new(env.sys, "fanout",
                  consumer_conf(env.boot, "fanout", "in", FO_PARTS, RILL_OFFSET_BEGINNING, l),
                  rill_stage_flat_map(fan_out, &fo), producer_conf(env.boot, NULL), -1, -1, -1);
    kpipe_start(p);

    long n_out = 0;
    for (uint64_t s = 0; s < FO_TOTAL; s++)
        n_out += expect_fanout(s);
    int ok;
    KK_WAIT_UNTIL(ok, 90000,
                  ledger_get(l, &l->ok) >= n_out && ledger_get(l, &l->complete) == FO_TOTAL);
    cr_assert(ok, "%ld of %ld outputs delivered, %ld of %d inputs complete", ledger_get(l, &l->ok),
              n_out, ledger_get(l, &l->complete), FO_TOTAL);
    int64_t end[FO_PARTS];
    for (int i = 0; i < FO_PARTS; i++)
        end[i] = FO_PER;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, ledger_committed_all(l, end));
    cr_assert(ok, "the commits did not reach the end offsets: every input, those without "
                  "output included, must be confirmed");
    rill_consumer_stats_t cs = kpipe_cstats(env.sys, p);
    rill_producer_stats_t ps = kk_producer_stats_ok(env.sys, rill_pipeline_stage(p, 2));
    rill_pipeline_result_t r = kpipe_stop_wait(p);
    cr_assert_eq(r.end, RILL_PIPELINE_STOPPED);
    rill_pipeline_destroy(p);
    cr_assert_eq(kit_fence(env.sys, l->aid), RILL_OK);

    cr_assert_eq(l->violations, 0, "%ld violations, the first: %s", l->violations, l->violation);
    cr_assert_eq(atomic_load(&l->lost_events), 0);
    cr_assert_eq(l->failed, 0);
    cr_assert_eq(l->foreign, 0, "delivery results for outputs that should not exist");
    cr_assert_eq(l->dups, 0);
    cr_assert_eq(atomic_load(&fo.none), FO_TOTAL / 5);
    cr_assert_eq(cs.confirmed, (uint64_t)FO_TOTAL, "%llu confirmed",
                 (unsigned long long)cs.confirmed);
    cr_assert_eq(ps.delivered, (uint64_t)n_out);
    cr_assert_eq(ps.requested, (uint64_t)n_out);
    kk_assert_committed(env.boot, "fanout", "in", FO_PARTS, FO_PER);

    outcheck_t oc;
    read_output(&env, "out", FO_PARTS, FO_PER, &oc);
    int64_t first_missing;
    long missing = outputs_missing(&oc, expect_fanout, &first_missing);
    long unexpected = outputs_unexpected(&oc, expect_fanout);
    fprintf(stderr, "fanout: %d inputs -> %ld outputs expected, %ld in the topic\n", FO_TOTAL,
            n_out, oc.records);
    cr_assert_eq(missing, 0, "%ld expected outputs missing, the first of seq %" PRId64, missing,
                 first_missing);
    cr_assert_eq(unexpected, 0, "%ld outputs that should not exist", unexpected);
    cr_assert_eq(oc.dups, 0);
    cr_assert_eq(oc.foreign, 0);
    cr_assert_eq(oc.misplaced, 0, "%s", oc.first_problem);
    cr_assert_eq(oc.wrong_key, 0);
    cr_assert_eq(oc.records, n_out);
    outcheck_free(&oc);
    ledger_free(l);

    /* A filter that drops one record with redeliver_drops: the record is
     * released, not confirmed, so its partition's commit stops right
     * below it, though every later record of the partition was
     * delivered. */
    load_in_out(&env, "in-f", "out-f", 2, FP_PER);
    l = ledger_new(env.sys, 2, FP_PER, expect_but_one, -1);
    xform_t x = {.ledger = l->aid, .out_topic = "out-f"};
    p = rill_pipeline_new(env.sys, "held");
    cr_assert_not_null(p);
    cr_assert_eq(rill_pipeline_add(p,
                                   rill_kafka_source(consumer_conf(env.boot, "failo", "in-f", 2,
                                                                   RILL_OFFSET_BEGINNING, l)),
                                   NULL),
                 RILL_OK);
    rill_stage_opts_t held = {.redeliver_drops = 1};
    cr_assert_eq(rill_pipeline_add(p, rill_stage_filter(keep_but_one, NULL), &held), RILL_OK);
    cr_assert_eq(rill_pipeline_add(p, rill_stage_map(xform_one, &x), NULL), RILL_OK);
    cr_assert_eq(rill_pipeline_add(p, rill_kafka_sink(producer_conf(env.boot, NULL)), NULL),
                 RILL_OK);
    kpipe_start(p);
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, ledger_get(l, &l->complete) == 2 * FP_PER);
    cr_assert(ok, "%ld of %d inputs complete", ledger_get(l, &l->complete), 2 * FP_PER);
    int64_t want[2] = {FP_DROP_OFFSET, FP_PER};
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, ledger_committed_all(l, want));
    cr_assert(ok, "commits: [0] %" PRId64 " (want %d), [1] %" PRId64 " (want %d)", l->committed[0],
              FP_DROP_OFFSET, l->committed[1], FP_PER);
    cs = kpipe_cstats(env.sys, p);
    cr_assert_eq(cs.confirmed, 2 * FP_PER - 1, "%llu confirmed: the held drop confirmed?",
                 (unsigned long long)cs.confirmed);
    r = kpipe_stop_wait(p); /* the final commit */
    cr_assert_eq(r.end, RILL_PIPELINE_STOPPED);
    rill_pipeline_destroy(p);
    cr_assert_eq(kit_fence(env.sys, l->aid), RILL_OK);
    int64_t committed[2];
    kk_committed_offsets(env.boot, "failo", "in-f", 2, committed);
    cr_assert_eq(committed[0], FP_DROP_OFFSET, "[0] committed %" PRId64 " past the held drop",
                 committed[0]);
    cr_assert_eq(committed[1], FP_PER);
    cr_assert_eq(l->violations, 0, "%s", l->violation);
    ledger_free(l);
    kk_env_fini(&env);
}

/* ------------------------------------------------------------------ */
/* 5. Stages that drop: the commit reaches the end                     */
/* ------------------------------------------------------------------ */

#define DR_PARTS 2
#define DR_PER   10000
#define DR_TOTAL (DR_PARTS * DR_PER)

/* The last successful commit of each partition, from the commit
 * callback. */
typedef struct cobs {
    pthread_mutex_t mu;
    int64_t committed[MAXP];
} cobs_t;

static void cobs_cb(void *opaque, rd_kafka_resp_err_t err,
                    const rd_kafka_topic_partition_list_t *offsets)
{
    cobs_t *o = opaque;
    pthread_mutex_lock(&o->mu);
    for (int i = 0; i < offsets->cnt; i++)
        if (!err && !offsets->elems[i].err && offsets->elems[i].partition < MAXP)
            o->committed[offsets->elems[i].partition] = offsets->elems[i].offset;
    pthread_mutex_unlock(&o->mu);
}

static int cobs_all(cobs_t *o, int parts, int64_t end)
{
    int ok = 1;
    pthread_mutex_lock(&o->mu);
    for (int i = 0; i < parts; i++)
        ok &= o->committed[i] == end;
    pthread_mutex_unlock(&o->mu);
    return ok;
}

/* A slow sink, counted per partition. Its first record waits a second (the
 * premise: meanwhile the source's buffer fills and every dropping stage
 * overflows), then 20 us a record: an optimised build's source can keep
 * pace with that, so without the wait a stage could drop nothing. */
typedef struct drop_sink {
    atomic_long sunk;
    atomic_long per[DR_PARTS];
    atomic_int started;
} drop_sink_t;

static rill_err_t slow_sink(void *opaque, rill_elem_t *e)
{
    drop_sink_t *d = opaque;
    if (!atomic_exchange(&d->started, 1))
        kk_nap_us(1000 * 1000);
    kk_nap_us(20);
    const rd_kafka_message_t *m = rill_record(e);
    if (m && m->partition >= 0 && m->partition < DR_PARTS)
        atomic_fetch_add(&d->per[m->partition], 1);
    atomic_fetch_add(&d->sunk, 1);
    rill_elem_release(e); /* its origin is rill's: confirmed on RILL_OK */
    return RILL_OK;
}

static int keep_even_offsets(void *opaque, const rill_elem_t *e)
{
    (void)opaque;
    const rd_kafka_message_t *m = rill_record(e);
    return m && m->offset % 2 == 0;
}

/* Eight keys: the state of eight entities, updated in turn. */
static uint64_t offset_mod8(void *opaque, const rill_elem_t *e)
{
    (void)opaque;
    const rd_kafka_message_t *m = rill_record(e);
    return m ? (uint64_t)(m->offset % 8) : 0;
}

enum { DROP_FILTER, DROP_CONFLATE, DROP_BY_KEY, DROP_HEAD, DROP_TAIL, DROP_BUFFER, DROP_KINDS };
static const char *const drop_names[DROP_KINDS] = {"filter",           "conflate",
                                                   "conflate_by_key",  "buffer drop_head",
                                                   "buffer drop_tail", "buffer drop_buffer"};

static rill_stage_t *drop_stage(int kind)
{
    switch (kind) {
    case DROP_FILTER:
        return rill_stage_filter(keep_even_offsets, NULL);
    case DROP_CONFLATE:
        return rill_stage_conflate(NULL, NULL);
    case DROP_BY_KEY:
        return rill_stage_conflate_by_key(offset_mod8, NULL, 64);
    case DROP_HEAD:
        return rill_stage_buffer(16, RILL_OVERFLOW_DROP_HEAD);
    case DROP_TAIL:
        return rill_stage_buffer(16, RILL_OVERFLOW_DROP_TAIL);
    default:
        return rill_stage_buffer(16, RILL_OVERFLOW_DROP_BUFFER);
    }
}

/* consumer -> kind -> slow sink over DR_TOTAL records; returns the final
 * committed offsets (from the group) and what reached the sink. */
static long drop_run(kk_env_t *env, int kind, int redeliver, int64_t *committed, long *per)
{
    char group[64];
    snprintf(group, sizeof(group), "drop-%d-%d", kind, redeliver);
    cobs_t obs = {.mu = PTHREAD_MUTEX_INITIALIZER};
    for (int i = 0; i < MAXP; i++)
        obs.committed[i] = -1;
    rill_consumer_conf_t *cc =
        consumer_conf(env->boot, group, "drops", DR_PARTS, RILL_OFFSET_BEGINNING, NULL);
    cr_assert_eq(rill_consumer_conf_set_commit_cb(cc, cobs_cb, &obs), RILL_OK);
    drop_sink_t sunk;
    memset(&sunk, 0, sizeof(sunk));
    rill_pipeline_t *p = rill_pipeline_new(env->sys, group);
    rill_stage_opts_t o = {.redeliver_drops = redeliver};
    cr_assert_eq(rill_pipeline_add(p, rill_kafka_source(cc), NULL), RILL_OK);
    cr_assert_eq(rill_pipeline_add(p, drop_stage(kind), &o), RILL_OK);
    cr_assert_eq(rill_pipeline_add(p, rill_sink_foreach(slow_sink, &sunk), NULL), RILL_OK);
    kpipe_start(p);
    int ok;
    if (!redeliver) {
        /* Every record dropped or sunk is confirmed: the commits get to
         * the end while the pipeline runs. */
        KK_WAIT_UNTIL(ok, KK_WAIT_MS, cobs_all(&obs, DR_PARTS, DR_PER));
        if (!ok) {
            rill_consumer_stats_t s = kpipe_cstats(env->sys, p);
            cr_assert(ok,
                      "%s: the commits stopped at %" PRId64 " and %" PRId64 " of %d; the sink "
                      "took %ld and %ld; the source polled %llu, emitted %llu, confirmed %llu, "
                      "%u unconfirmed, %u buffered, paused %d, blocked %d, %u assigned, %llu "
                      "commits, %llu commit errors, %llu redelivered",
                      drop_names[kind], obs.committed[0], obs.committed[1], DR_PER,
                      atomic_load(&sunk.per[0]), atomic_load(&sunk.per[1]),
                      (unsigned long long)s.polled, (unsigned long long)s.emitted,
                      (unsigned long long)s.confirmed, s.unconfirmed, s.buffered, s.paused,
                      s.blocked, s.assigned, (unsigned long long)s.committed,
                      (unsigned long long)s.commit_errors, (unsigned long long)s.redelivered);
        }
    } else {
        /* Everything was emitted; then the pipeline drains and makes its
         * final commit. */
        KK_WAIT_UNTIL(ok, KK_WAIT_MS, kpipe_cstats(env->sys, p).emitted == DR_TOTAL);
        cr_assert(ok, "%s: not everything was emitted", drop_names[kind]);
    }
    rill_consumer_stats_t cs = kpipe_cstats(env->sys, p);
    rill_pipeline_result_t r = kpipe_stop_wait(p);
    cr_assert_eq(r.end, RILL_PIPELINE_STOPPED, "%s: ended %d: %s", drop_names[kind], r.end, r.text);
    rill_pipeline_destroy(p);
    kk_committed_offsets(env->boot, group, "drops", DR_PARTS, committed);
    long n = atomic_load(&sunk.sunk);
    for (int i = 0; i < DR_PARTS; i++)
        per[i] = atomic_load(&sunk.per[i]);
    fprintf(stderr,
            "drops: %-18s %s: %ld of %d reached the sink, %llu confirmed, committed %" PRId64
            " and %" PRId64 "\n",
            drop_names[kind], redeliver ? "redeliver" : "confirm  ", n, DR_TOTAL,
            (unsigned long long)cs.confirmed, committed[0], committed[1]);
    pthread_mutex_destroy(&obs.mu);
    return n;
}

Test(kafka_pipeline, dropping_stages_confirm_so_commits_reach_the_end, .timeout = 300)
{
    kk_env_t env;
    kk_env_init(&env);
    kk_load_topic(&env, "drops", DR_PARTS, DR_PER, 40);
    for (int kind = 0; kind < DROP_KINDS; kind++) {
        int64_t committed[DR_PARTS];
        long per[DR_PARTS];
        long sunk = drop_run(&env, kind, 0, committed, per);
        for (int i = 0; i < DR_PARTS; i++)
            cr_assert_eq(committed[i], DR_PER, "%s: [%d] committed %" PRId64 " of %d",
                         drop_names[kind], i, committed[i], DR_PER);
        cr_assert_lt(sunk, DR_TOTAL, "%s dropped nothing: the test proves nothing",
                     drop_names[kind]);
        /* With redeliver_drops, dropped records are not confirmed: the
         * commit stops at the first of them. */
        sunk = drop_run(&env, kind, 1, committed, per);
        cr_assert_lt(sunk, DR_TOTAL, "%s dropped nothing: the test proves nothing",
                     drop_names[kind]);
        /* A partition with a drop commits short of its end; one whose
         * records all reached the sink commits to the end. */
        for (int i = 0; i < DR_PARTS; i++)
            if (per[i] < DR_PER)
                cr_assert_lt(
                    committed[i], DR_PER,
                    "%s with redeliver_drops: [%d] committed to the end with %ld of %d sunk",
                    drop_names[kind], i, per[i], DR_PER);
            else
                cr_assert_eq(committed[i], DR_PER,
                             "%s with redeliver_drops: [%d] nothing dropped, committed %" PRId64,
                             drop_names[kind], i, committed[i]);
    }
    kk_env_fini(&env);
}

/* ------------------------------------------------------------------ */
/* 6. Stopping with records in flight: drained, then committed         */
/* ------------------------------------------------------------------ */

#define SF_PARTS 4
#define SF_PER   5000
#define SF_TOTAL (SF_PARTS * SF_PER)

Test(kafka_pipeline, stop_with_records_in_flight_drains_then_commits, .timeout = 120)
{
    kk_env_t env;
    kk_env_init(&env);
    load_in_out(&env, "in", "out", SF_PARTS, SF_PER);
    ledger_t *l = ledger_new(env.sys, SF_PARTS, SF_PER, expect_one, -1);
    /* 100 us of work a record, and the sink lingers 50 ms: at any time
     * a few hundred records are between the source and the broker. */
    xform_t x = {.ledger = l->aid, .out_topic = "out", .nap_us = 100};
    const char *kv[] = {"linger.ms", "50", NULL};
    rill_pipeline_t *p =
        kpipe_new(env.sys, "inflight",
                  consumer_conf(env.boot, "inflight", "in", SF_PARTS, RILL_OFFSET_BEGINNING, l),
                  rill_stage_map(xform_one, &x), producer_conf(env.boot, kv), -1, -1, -1);
    kpipe_start(p);
    int ok;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, ledger_get(l, &l->complete) >= SF_TOTAL / 4);
    cr_assert(ok, "the pipeline did not get going");
    rill_producer_stats_t ps = kk_producer_stats_ok(env.sys, rill_pipeline_stage(p, 2));
    rill_consumer_stats_t cs = kpipe_cstats(env.sys, p);
    long at_stop = ledger_get(l, &l->complete);
    rill_pipeline_result_t r = kpipe_stop_wait(p);
    rill_pipeline_destroy(p);
    cr_assert_eq(kit_fence(env.sys, l->aid), RILL_OK);
    long done = ledger_get(l, &l->complete);
    int64_t committed[SF_PARTS], sum = 0;
    kk_committed_offsets(env.boot, "inflight", "in", SF_PARTS, committed);
    fprintf(stderr,
            "in flight: %ld inputs done at the stop (%u in the sink, %u unconfirmed), %ld after "
            "the drain; committed %" PRId64 " %" PRId64 " %" PRId64 " %" PRId64 "\n",
            at_stop, ps.inflight, cs.unconfirmed, done, committed[0], committed[1], committed[2],
            committed[3]);
    cr_assert_eq(r.end, RILL_PIPELINE_STOPPED, "ended %d: %s: %s", r.end, r.stage, r.text);
    cr_assert_gt(cs.unconfirmed, 0, "nothing was in flight: the test proves nothing");
    cr_assert_eq(l->failed, 0, "the drain failed deliveries");
    cr_assert_eq(l->violations, 0, "%s", l->violation);
    cr_assert_gt(done, at_stop, "what was in flight was not delivered");
    /* Every record whose output was delivered is committed, up to the
     * first one that was not: nothing is produced twice by the next run. */
    for (int i = 0; i < SF_PARTS; i++) {
        if (committed[i] < 0 && l->low[i] == 0)
            committed[i] = 0; /* nothing consumed there: nothing committed */
        cr_assert_eq(committed[i], l->low[i],
                     "[%d] committed %" PRId64 ", but outputs were delivered up to %" PRId64, i,
                     committed[i], l->low[i]);
        sum += committed[i];
    }
    cr_assert_eq(sum, done, "committed %" PRId64 " of %ld done", sum, done);
    ledger_free(l);
    kk_env_fini(&env);
}

/* ------------------------------------------------------------------ */
/* 7. A supervised pipeline whose middle stage fails every Nth record  */
/* ------------------------------------------------------------------ */

#define SV_PARTS 4
#define SV_PER   5000
#define SV_TOTAL (SV_PARTS * SV_PER)
#define SV_EVERY 1500

Test(kafka_pipeline, supervised_pipeline_with_a_failing_stage_processes_everything, .timeout = 240)
{
    kk_env_t env;
    kk_env_init(&env);
    load_in_out(&env, "in", "out", SV_PARTS, SV_PER);
    ledger_t *l = ledger_new(env.sys, SV_PARTS, SV_PER, expect_one, -1);
    xform_t x = {.ledger = l->aid, .out_topic = "out", .fail_every = SV_EVERY};
    /* A group subscription with librdkafka's default session settings:
     * a restart must not wait for the group. */
    rill_consumer_conf_t *cc = consumer_conf(env.boot, "supervised", "in", -1, 0, l);
    rill_pipeline_t *p = kpipe_new(env.sys, "supervised", cc, rill_stage_map(xform_one, &x),
                                   producer_conf(env.boot, NULL), -1, -1, -1);
    rill_restart_opts_t ro = {.max_restarts = 100, .backoff = {.min_ms = 10, .max_ms = 100}};
    char err[256] = "";
    int64_t t0 = kit_now_ms();
    cr_assert_eq(rill_pipeline_start_supervised(p, &ro, err, sizeof(err)), RILL_OK, "%s", err);
    int ok;
    KK_WAIT_UNTIL(ok, 180000, ledger_get(l, &l->complete) == SV_TOTAL);
    cr_assert(ok, "%ld of %d inputs have their output delivered (%ld failures)",
              ledger_get(l, &l->complete), SV_TOTAL, atomic_load(&x.failures));
    int64_t t1 = kit_now_ms();
    int64_t end[SV_PARTS];
    for (int i = 0; i < SV_PARTS; i++)
        end[i] = SV_PER;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, ledger_committed_all(l, end));
    cr_assert(ok, "the commits did not reach the end offsets");
    rill_pipeline_result_t r = kpipe_stop_wait(p);
    rill_pipeline_destroy(p);
    cr_assert_eq(kit_fence(env.sys, l->aid), RILL_OK);
    long failures = atomic_load(&x.failures);
    fprintf(stderr,
            "supervised: %d records in %lld ms through %ld failures and %u restarts; %ld "
            "transforms (%ld again), the longest restart %lld ms\n",
            SV_TOTAL, (long long)(t1 - t0), failures, r.restarts, atomic_load(&x.transformed),
            atomic_load(&x.transformed) - SV_TOTAL, (long long)atomic_load(&x.restart_gap_max_ms));
    cr_assert_eq(r.end, RILL_PIPELINE_STOPPED, "ended %d: %s: %s", r.end, r.stage, r.text);
    cr_assert_geq(failures, SV_TOTAL / SV_EVERY, "too few failures to prove anything");
    /* One restart per failure (a failure in the last run's drain may have
     * come after the stop). */
    cr_assert(r.restarts + 1 >= (uint32_t)failures && r.restarts <= (uint32_t)failures,
              "%u restarts for %ld failures", r.restarts, failures);
    cr_assert_eq(l->violations, 0, "%s", l->violation);
    cr_assert_eq(l->failed, 0);
    kk_assert_committed(env.boot, "supervised", "in", SV_PARTS, SV_PER);
    ledger_free(l);
    kk_env_fini(&env);
}
/* ------------------------------------------------------------------ */
/* 5. Stopping with requests in flight: flush deadline, what was left  */
/* ------------------------------------------------------------------ */

#define SD_PARTS    2
#define SD_PER      2000
#define SD_FIRST    300 /* delivered before the broker goes down */
#define SD_INFLIGHT 200 /* rill.max.inflight */

Test(kafka_pipeline, stop_with_broker_down_flushes_then_reports_undelivered, .timeout = 120)
{
    kk_env_t env;
    kk_env_init(&env);
    load_in_out(&env, "in", "out", SD_PARTS, SD_PER);

    /* The map waits at a gate on executor 0; the rest runs on executor 1,
     * so deliveries go on while the map waits. */
    ledger_t *l = ledger_new(env.sys, SD_PARTS, SD_PER, expect_one, 1);
    kit_gate_t gate;
    kit_gate_init(&gate);
    xform_t x = {.ledger = l->aid, .out_topic = "out", .gate = &gate, .gate_at = SD_FIRST};
    /* Actors spawned one by one and connected, as a service that is not a
     * pipeline would. */
    rill_aid_t consumer = kk_consumer_spawn_ok(
        env.sys, consumer_conf(env.boot, "stop", "in", SD_PARTS, RILL_OFFSET_BEGINNING, l), 1);
    rill_aid_t map = kk_stage_spawn_ok(env.sys, rill_stage_map(xform_one, &x), 0);
    const char *kv[] = {"rill.max.inflight", "200", "rill.flush.timeout.ms", "1000", NULL};
    rill_aid_t producer = kk_producer_spawn_ok(env.sys, producer_conf(env.boot, kv), 1);
    kk_connect_ok(env.sys, map, producer);
    kk_connect_ok(env.sys, consumer, map);

    int ok;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS,
                  ledger_get(l, &l->complete) == SD_FIRST && atomic_load(&gate.arrived) == 1);
    cr_assert(ok, "%ld outputs delivered, the map %s at the gate", ledger_get(l, &l->complete),
              atomic_load(&gate.arrived) ? "is" : "is not");
    cr_assert_eq(rill_broker_set_down(env.broker, RILL_BROKER_ALL), RILL_OK);
    kit_gate_open(&gate);
    rill_producer_stats_t ps;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS,
                  (ps = kk_producer_stats_ok(env.sys, producer)).inflight == SD_INFLIGHT);
    cr_assert(ok, "%u requests in flight, want %d", ps.inflight, SD_INFLIGHT);
    cr_assert_eq(ps.delivered, SD_FIRST);

    int64_t t_stop = kit_now_ms();
    cr_assert_eq(rill_stop(env.sys, producer), RILL_OK);
    cr_assert(kit_wait_dead(env.sys, producer, KK_WAIT_MS));
    /* The stop's flush runs after the actor stopped taking messages: its
     * final counters appear once it is done. */
    rill_err_t se = RILL_ESTOPPED;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, (se = rill_producer_stats(env.sys, producer, &ps)) == RILL_OK);
    cr_assert(ok, "no final counters for the stopped producer: %s", rill_err_name(se));
    int64_t stop_ms = kit_now_ms() - t_stop;
    fprintf(stderr,
            "stop: %lld ms with a 1000 ms flush deadline; %llu requested, %llu delivered, "
            "%llu failed, %llu undelivered at stop\n",
            (long long)stop_ms, (unsigned long long)ps.requested, (unsigned long long)ps.delivered,
            (unsigned long long)ps.failed, (unsigned long long)ps.undelivered_at_stop);
    cr_assert_eq(ps.undelivered_at_stop, SD_INFLIGHT);
    cr_assert_eq(ps.delivered, SD_FIRST);
    cr_assert_eq(ps.requested, ps.delivered + ps.undelivered_at_stop);
    cr_assert_eq(ps.inflight, 0);

    /* Their origins were released unconfirmed: not one of them was
     * confirmed. */
    rill_consumer_stats_t cs;
    cr_assert_eq(rill_consumer_stats(env.sys, consumer, &cs), RILL_OK);
    cr_assert_eq(cs.confirmed, SD_FIRST, "%llu confirmed", (unsigned long long)cs.confirmed);
    cr_assert_eq(kit_fence(env.sys, l->aid), RILL_OK);
    cr_assert_eq(ledger_get(l, &l->complete), SD_FIRST);
    cr_assert_eq(ledger_get(l, &l->failed), SD_INFLIGHT,
                 "%ld failed delivery results for the undelivered requests", l->failed);

    /* The broker is back: the consumer's final commit stops where the
     * undelivered records start. */
    cr_assert_eq(rill_broker_set_up(env.broker, RILL_BROKER_ALL), RILL_OK);
    kk_stop_wait(env.sys, map);
    kk_stop_wait(env.sys, consumer);
    cr_assert_eq(kit_fence(env.sys, l->aid), RILL_OK);
    int64_t committed[SD_PARTS], sum = 0;
    kk_committed_offsets(env.boot, "stop", "in", SD_PARTS, committed);
    for (int p = 0; p < SD_PARTS; p++) {
        int64_t c = committed[p] < 0 ? 0 : committed[p];
        cr_assert_eq(c, l->low[p], "[%d] committed %" PRId64 ", first undelivered %" PRId64, p,
                     committed[p], l->low[p]);
        sum += c;
    }
    cr_assert_eq(sum, SD_FIRST);
    cr_assert_eq(l->violations, 0, "%s", l->violation);
    kit_gate_destroy(&gate);
    ledger_free(l);
    kk_env_fini(&env);
}

/* ------------------------------------------------------------------ */
/* 6. Bad configuration and arguments                                  */
/* ------------------------------------------------------------------ */

enum { PR_CASES = 7 };

static const struct {
    const char *what;
    const char *k1, *v1, *k2, *v2; /* accepted by conf_set, refused at spawn */
    rill_err_t err;
    const char *in_errstr;
} pr_want[PR_CASES] = {
    {"ssl without a CA file", "security.protocol", "ssl", "ssl.ca.location",
     "/nonexistent/rill-ca.pem", RILL_EKAFKA, "ssl"},
    {"idempotence with acks=1", "acks", "1", NULL, NULL, RILL_EKAFKA, "acks"},
    {"idempotence with 10 requests in flight", "max.in.flight.requests.per.connection", "10", NULL,
     NULL, RILL_EKAFKA, "max.in.flight"},
    {"NULL system", NULL, NULL, NULL, NULL, RILL_EINVAL, NULL},
    {"NULL aid", NULL, NULL, NULL, NULL, RILL_EINVAL, NULL},
    {"NULL conf", NULL, NULL, NULL, NULL, RILL_EINVAL, NULL},
    {"a good one, for contrast", NULL, NULL, NULL, NULL, RILL_OK, NULL},
};

typedef struct prefusals {
    rill_system_t *sys;
    const char *boot;
    int n, set_errors;
    rill_err_t e[PR_CASES];
    rill_aid_t aid[PR_CASES];
    char errstr[PR_CASES][512];
} prefusals_t;

/* Spawns on a thread of its own: no stale pointer on the test thread's
 * stack can hide a leaked conf from LeakSanitizer. */
static void *spawn_prefusals(void *arg)
{
    prefusals_t *r = arg;
    for (int i = 0; i < PR_CASES; i++) {
        rill_producer_conf_t *c = i == 5 ? NULL : rill_producer_conf_new();
        if (c) {
            r->set_errors += rill_producer_conf_set(c, "bootstrap.servers", r->boot, NULL, 0) != 0;
            if (pr_want[i].k1)
                r->set_errors +=
                    rill_producer_conf_set(c, pr_want[i].k1, pr_want[i].v1, NULL, 0) != 0;
            if (pr_want[i].k2)
                r->set_errors +=
                    rill_producer_conf_set(c, pr_want[i].k2, pr_want[i].v2, NULL, 0) != 0;
        }
        r->aid[i] = (rill_aid_t){12345}; /* must be cleared */
        if (i == 3)
            r->e[i] = rill_producer_spawn(NULL, c, NULL, &r->aid[i], r->errstr[i], 512);
        else if (i == 4)
            r->e[i] = rill_producer_spawn(r->sys, c, NULL, NULL, r->errstr[i], 512);
        else
            r->e[i] = rill_producer_spawn(r->sys, c, NULL, &r->aid[i], r->errstr[i], 512);
        r->n++;
    }
    return NULL;
}

/* A pull source of n keyed produce requests for topic "placed". */
typedef struct keyed_src {
    int next, n;
} keyed_src_t;

static rill_err_t keyed_pull(void *opaque, rill_elem_t *out)
{
    keyed_src_t *k = opaque;
    if (k->next == k->n)
        return RILL_EOS;
    char key[32], value[32];
    int kl = snprintf(key, sizeof(key), "customer-%d", k->next % 97);
    int vl = snprintf(value, sizeof(value), "n=%d", k->next);
    k->next++;
    rill_produce_t *p =
        rill_produce_new("placed", RILL_PARTITION_ANY, key, (size_t)kl, value, (size_t)vl);
    if (!p)
        return RILL_ENOMEM;
    *out = rill_produce_elem(p);
    return RILL_OK;
}

/* A pull source of one request for a topic that cannot exist. */
static rill_err_t bad_topic_pull(void *opaque, rill_elem_t *out)
{
    keyed_src_t *k = opaque;
    if (k->next++ == k->n)
        return RILL_EOS;
    rill_produce_t *p = rill_produce_new("bad topic!", RILL_PARTITION_ANY, "k", 1, "v", 1);
    if (!p)
        return RILL_ENOMEM;
    *out = rill_produce_elem(p);
    return RILL_OK;
}

Test(kafka_pipeline, producer_places_keys_where_java_clients_do, .timeout = 120)
{
    /* rill's producer defaults to murmur2_random: a key lands in the
     * partition a Java producer picks, so services in both languages agree
     * on where a key lives. */
    kk_env_t env;
    kk_env_init(&env);
    kk_create_topic(&env, "placed", 7);
    keyed_src_t src = {.n = 600};
    /* A pipeline from a source of the application's into Kafka: it
     * completes once the 600 are delivered. */
    rill_pipeline_t *p = rill_pipeline_new(env.sys, "placer");
    cr_assert_eq(rill_pipeline_add(p, rill_source_fn(keyed_pull, &src), NULL), RILL_OK);
    cr_assert_eq(rill_pipeline_add(p, rill_kafka_sink(producer_conf(env.boot, NULL)), NULL),
                 RILL_OK);
    kpipe_start(p);
    rill_aid_t prod = rill_pipeline_stage(p, 1);
    rill_pipeline_result_t r = kpipe_wait(p);
    cr_assert_eq(r.end, RILL_PIPELINE_COMPLETED, "ended %d: %s: %s", r.end, r.stage, r.text);
    cr_assert_eq(r.delivered, 600);
    rill_pipeline_destroy(p);
    cr_assert_eq(kk_producer_stats_ok(env.sys, prod).delivered, 600);
    rill_consumed_t *got = kk_consume_all(env.boot, "placed", KK_WAIT_MS);
    cr_assert_eq(rill_consumed_count(got), 600);
    int used[7] = {0};
    for (size_t i = 0; i < rill_consumed_count(got); i++) {
        const rill_testkit_record_t *rec = rill_consumed_at(got, i);
        int32_t want = kk_java_partition(rec->key, rec->key_len, 7);
        cr_assert_eq(rec->partition, want, "key %.*s in partition %d, Java puts it in %d",
                     (int)rec->key_len, (const char *)rec->key, (int)rec->partition, (int)want);
        used[rec->partition] = 1;
    }
    for (int part = 0; part < 7; part++)
        cr_assert(used[part], "no key went to partition %d", part);
    rill_consumed_destroy(got);
    kk_env_fini(&env);
}

Test(kafka_pipeline, invalid_producer_configuration_and_arguments, .timeout = 60)
{
    kk_env_t env;
    kk_env_init(&env);
    rill_system_t *sys = env.sys;
    char err[512] = "";

    rill_producer_conf_t *c = rill_producer_conf_new();
    cr_assert_not_null(c);
    /* Unknown keys and bad values, librdkafka's and rill's. */
    cr_assert_eq(rill_producer_conf_set(c, "no.such.key", "1", err, sizeof(err)), RILL_EKAFKA);
    cr_assert_not_null(strstr(err, "no.such.key"), "errstr: %s", err);
    err[0] = '\0';
    cr_assert_eq(rill_producer_conf_set(c, "linger.ms", "soon", err, sizeof(err)), RILL_EKAFKA);
    cr_assert_gt(strlen(err), 0);
    err[0] = '\0';
    cr_assert_eq(rill_producer_conf_set(c, "acks", "several", err, sizeof(err)), RILL_EKAFKA);
    cr_assert_gt(strlen(err), 0);
    err[0] = '\0';
    cr_assert_eq(rill_producer_conf_set(c, "rill.nope", "1", err, sizeof(err)), RILL_EINVAL);
    cr_assert_not_null(strstr(err, "rill.nope"), "errstr: %s", err);
    static const char *const bad[][2] = {
        {"rill.max.inflight", "0"},
        {"rill.max.inflight", "-1"},
        {"rill.max.inflight", "abc"},
        {"rill.max.inflight", ""},
        {"rill.max.inflight", "12x"},
        {"rill.max.inflight", "1000001"},
        {"rill.max.inflight", "99999999999999999999"},
        {"rill.flush.timeout.ms", "x"},
        {"rill.flush.timeout.ms", "-5"},
        {"rill.flush.timeout.ms", ""},
        {"rill.flush.timeout.ms", "99999999999"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        cr_assert_eq(rill_producer_conf_set(c, bad[i][0], bad[i][1], err, sizeof(err)), RILL_EINVAL,
                     "%s = \"%s\" was accepted", bad[i][0], bad[i][1]);
        cr_assert_not_null(strstr(err, bad[i][0]), "no useful message for %s = \"%s\": %s",
                           bad[i][0], bad[i][1], err);
    }
    cr_assert_eq(rill_producer_conf_set(c, "rill.max.inflight", "1", err, sizeof(err)), RILL_OK);
    cr_assert_eq(rill_producer_conf_set(c, "rill.flush.timeout.ms", "0", err, sizeof(err)),
                 RILL_OK);
    cr_assert_eq(rill_producer_conf_set(NULL, "acks", "all", err, sizeof(err)), RILL_EINVAL);
    cr_assert_eq(rill_producer_conf_set(c, NULL, "all", err, sizeof(err)), RILL_EINVAL);
    cr_assert_eq(rill_producer_conf_set(c, "acks", NULL, err, sizeof(err)), RILL_EINVAL);
    cr_assert_eq(rill_producer_conf_set(c, "rill.nope", "1", NULL, 0), RILL_EINVAL);
    cr_assert_eq(rill_producer_conf_set(c, "no.such.key", "1", NULL, 0), RILL_EKAFKA);
    rill_producer_conf_destroy(c);
    rill_producer_conf_destroy(NULL);

    /* Produce requests: NULL only without memory; bad arguments are the
     * sink's to report, with a sentence (below). */
    rill_produce_t *bad_req[] = {
        rill_produce_new(NULL, RILL_PARTITION_ANY, "k", 1, "v", 1),
        rill_produce_new("bad topic!", RILL_PARTITION_ANY, "k", 1, "v", 1),
        rill_produce_new("", RILL_PARTITION_ANY, "k", 1, "v", 1),
        rill_produce_new("t", -2, "k", 1, "v", 1),
        rill_produce_new("t", 0, NULL, 3, "v", 1),
        rill_produce_new("t", 0, "k", 1, NULL, 3),
    };
    for (size_t i = 0; i < sizeof(bad_req) / sizeof(bad_req[0]); i++)
        cr_assert_not_null(bad_req[i], "request %zu", i);
    rill_produce_t *p = rill_produce_new("t", 0, NULL, 0, NULL, 0); /* no key, a tombstone */
    cr_assert_not_null(p);
    cr_assert_eq(rill_produce_add_header(NULL, "h", "v", 1), RILL_EINVAL);
    cr_assert_eq(rill_produce_add_header(p, NULL, "v", 1), RILL_EINVAL);
    cr_assert_eq(rill_produce_add_header(p, "h", NULL, 2), RILL_EINVAL);
    cr_assert_eq(rill_produce_add_header(p, "h", NULL, 0), RILL_OK);
    cr_assert_eq(rill_produce_set_timestamp(NULL, 1), RILL_EINVAL);
    cr_assert_eq(rill_produce_set_origin(NULL, NULL), RILL_EINVAL);
    cr_assert_eq(rill_produce_set_reply(NULL, (rill_aid_t){1}, 1), RILL_EINVAL);
    cr_assert_eq(rill_produce_set_timestamp(p, 1), RILL_OK);
    rill_produce_free(p);
    rill_produce_free(NULL);
    rill_elem_t none = rill_produce_elem(NULL);
    cr_assert_not(rill_elem_valid(&none));
    cr_assert_null(rill_origin_ref(NULL));
    rill_origin_confirm(NULL);
    rill_origin_release(NULL);

    /* Specs without a configuration carry their error. */
    char why[256] = "";
    rill_stage_t *nsink = rill_kafka_sink(NULL);
    cr_assert_eq(rill_stage_error(nsink, why, sizeof(why)), RILL_EINVAL);
    cr_assert_not_null(strstr(why, "kafka-sink"), "errstr: %s", why);
    rill_stage_free(nsink);
    rill_stage_t *nsrc = rill_kafka_source(NULL);
    cr_assert_eq(rill_stage_error(nsrc, why, sizeof(why)), RILL_EINVAL);
    cr_assert_not_null(strstr(why, "kafka-source"), "errstr: %s", why);
    rill_stage_free(nsrc);
    /* A pipeline whose sink's client librdkafka refuses does not start,
     * and says which stage. */
    rill_producer_conf_t *refused = producer_conf(env.boot, NULL);
    cr_assert_eq(rill_producer_conf_set(refused, "acks", "1", NULL, 0), RILL_OK);
    rill_pipeline_t *pl = rill_pipeline_new(sys, "refused");
    cr_assert_eq(rill_pipeline_add(pl, rill_source_range(0, 1), NULL), RILL_OK);
    cr_assert_eq(rill_pipeline_add(pl, rill_kafka_sink(refused), NULL), RILL_OK);
    why[0] = '\0';
    cr_assert_eq(rill_pipeline_start(pl, why, sizeof(why)), RILL_EKAFKA);
    cr_assert_not_null(strstr(why, "acks"), "errstr: %s", why);
    cr_assert_not_null(strstr(why, "kafka-sink"), "errstr: %s", why);
    rill_pipeline_destroy(pl);

    /* Spawns: each consumes its conf, failed ones leave no aid. */
    prefusals_t rf;
    memset(&rf, 0, sizeof(rf));
    rf.sys = sys;
    rf.boot = env.boot;
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, spawn_prefusals, &rf), 0);
    pthread_join(th, NULL);
    cr_assert_eq(rf.n, PR_CASES);
    cr_assert_eq(rf.set_errors, 0, "conf_set refused what only rd_kafka_new can judge");
    for (int i = 0; i < PR_CASES; i++) {
        cr_assert_eq(rf.e[i], pr_want[i].err, "%s: %s (%s)", pr_want[i].what,
                     rill_err_name(rf.e[i]), rf.errstr[i]);
        if (pr_want[i].err == RILL_OK) {
            cr_assert(!rill_aid_is_none(rf.aid[i]));
            continue;
        }
        cr_assert_gt(strlen(rf.errstr[i]), 0, "%s: no message", pr_want[i].what);
        if (i != 4)
            cr_assert(rill_aid_is_none(rf.aid[i]), "%s: a failed spawn left an aid",
                      pr_want[i].what);
        if (pr_want[i].in_errstr)
            cr_assert_not_null(strstr(rf.errstr[i], pr_want[i].in_errstr), "%s: errstr \"%s\"",
                               pr_want[i].what, rf.errstr[i]);
    }

    /* Stats and sends. */
    rill_aid_t good = rf.aid[PR_CASES - 1];
    rill_producer_stats_t s;
    cr_assert_eq(rill_producer_stats(sys, good, &s), RILL_OK);
    cr_assert_eq(s.requested, 0);
    cr_assert_eq(rill_producer_stats(NULL, good, &s), RILL_EINVAL);
    cr_assert_eq(rill_producer_stats(sys, RILL_AID_NONE, &s), RILL_EINVAL);
    cr_assert_eq(rill_producer_stats(sys, good, NULL), RILL_EINVAL);
    cr_assert_eq(rill_producer_send(sys, good, NULL), RILL_EINVAL);
    cr_assert_eq(rill__producer_test_fatal(NULL, good, RD_KAFKA_RESP_ERR__FATAL, NULL),
                 RILL_EINVAL);
    /* A bad request sent directly is answered with a failed delivery;
     * the producer goes on. */
    for (size_t i = 0; i < sizeof(bad_req) / sizeof(bad_req[0]); i++)
        cr_assert_eq(rill_producer_send(sys, good, bad_req[i]), RILL_OK);
    int ok;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS,
                  rill_producer_stats(sys, good, &s) == RILL_OK &&
                      s.failed == sizeof(bad_req) / sizeof(bad_req[0]));
    cr_assert(ok, "%llu of the bad requests failed", (unsigned long long)s.failed);
    cr_assert(rill_alive(sys, good));
    /* In a stream, a bad request fails the sink, with its sentence. */
    rill_producer_conf_t *sc = producer_conf(env.boot, NULL);
    rill_pipeline_t *bp = rill_pipeline_new(sys, "bad-request");
    keyed_src_t one = {.n = 1};
    cr_assert_eq(rill_pipeline_add(bp, rill_source_fn(bad_topic_pull, &one), NULL), RILL_OK);
    cr_assert_eq(rill_pipeline_add(bp, rill_kafka_sink(sc), NULL), RILL_OK);
    kpipe_start(bp);
    rill_pipeline_result_t r = kpipe_wait(bp);
    cr_assert_eq(r.end, RILL_PIPELINE_FAILED);
    cr_assert_eq(r.code, RILL_EINVAL);
    cr_assert_str_eq(r.stage, "kafka-sink");
    cr_assert_not_null(strstr(r.text, "bad topic!"), "text: %s", r.text);
    rill_pipeline_destroy(bp);
    kk_stop_wait(sys, good);
    /* A producer that never existed has no counters. */
    cr_assert_eq(rill_producer_stats(sys, (rill_aid_t){0x7fffffffull}, &s), RILL_ESTOPPED);

    kk_env_fini(&env);
    cr_assert_eq(KK_LEAK_CHECK(), 0, "LeakSanitizer found leaks");
}
