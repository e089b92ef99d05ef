/*
 * consume -> transform -> produce against the embedded broker: the
 * consumer actor, origin tickets, produce requests and the producer actor
 * (include/rill/kafka.h) wired as a service would wire them.
 *
 *   clean run            100,000 records, exactly once in the output, and
 *                        no commit ever passes an undelivered output
 *   produce faults       injected Produce errors and a broker outage: no
 *                        loss, per-partition order kept
 *   fatal producer error the producer fails, a one_for_all supervisor
 *                        restarts the group, unconfirmed records come again
 *   one-to-many, filter  outputs match the expected multiset, commits reach
 *                        the end; a failed origin holds its partition's
 *                        commit below it
 *   shutdown             a stop with requests in flight (broker down)
 *                        flushes with its deadline and reports what it left
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
 * and the producer sends a delivery result before it releases the origin
 * reference (which confirms the record, which may then be committed): so
 * when the ledger handles a commit, the results of every output that was
 * delivered before it are already handled. At each commit it checks that
 * every committed offset o of partition p has all inputs below o complete
 * (every expected output delivered). Nothing asserts on executor threads:
 * the ledger records, the test thread asserts.
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
/* The transform: record -> produce request(s)                         */
/* ------------------------------------------------------------------ */

typedef struct xform {
    rill_system_t *sys;
    _Atomic rill_aid_t consumer; /* for origins */
    rill_aid_t ledger;
    const char *out_topic;
    int64_t fail_seq; /* this input's origin is failed (still produced); -1 none */
    kit_gate_t *gate; /* if set: wait for it before transforming input number gate_at */
    long gate_at;
    atomic_long transformed; /* inputs seen, redeliveries included */
    atomic_long errors;      /* records that could not be transformed */
} xform_t;

/* A produce request for output k of input seq, holding origin reference o. */
static rill_produce_t *make_request(xform_t *x, const rd_kafka_message_t *m, uint64_t seq, int k,
                                    rill_origin_t *o)
{
    char value[64];
    int vl = snprintf(value, sizeof(value), "seq=%" PRIu64 " out=%d", seq, k);
    rill_produce_t *p =
        rill_produce_new(x->out_topic, m->partition, m->key, m->key_len, value, (size_t)vl);
    if (!p) {
        rill_origin_fail(o);
        rill_origin_release(o);
        return NULL;
    }
    rill_produce_set_origin(p, o);
    rill_produce_set_reply(p, x->ledger, seq * 4 + (uint64_t)k);
    return p;
}

/* map: one record -> one produce request carrying its origin. */
static rill_err_t xform_one(void *opaque, rill_elem_t *in, rill_elem_t *out)
{
    xform_t *x = opaque;
    const rd_kafka_message_t *m = rill_record(in);
    long n = atomic_fetch_add(&x->transformed, 1);
    if (x->gate && n == x->gate_at)
        kit_gate_pass(x->gate, KK_WAIT_MS);
    int64_t seq = m ? value_seq(m->payload, m->len, NULL) : -1;
    rill_origin_t *o = rill_origin_new(x->sys, atomic_load(&x->consumer), in);
    if (seq < 0 || !o) {
        atomic_fetch_add(&x->errors, 1);
        rill_origin_release(o);
        rill_elem_release(in);
        return RILL_EINVAL;
    }
    if (seq == x->fail_seq)
        rill_origin_fail(o);
    rill_produce_t *p = make_request(x, m, (uint64_t)seq, 0, o);
    rill_elem_release(in); /* the origin and the request hold what they need */
    if (!p)
        return RILL_ENOMEM;
    *out = rill_produce_elem(p);
    return RILL_OK;
}

/* ------------------------------------------------------------------ */
/* Clients                                                             */
/* ------------------------------------------------------------------ */

/* Reconnect quickly after an outage. */
static const char *const quick_kv[] = {"reconnect.backoff.ms", "50", "reconnect.backoff.max.ms",
                                       "500", NULL};

/* A consumer conf for fixed partitions 0..parts-1 of topic from `start`,
 * reporting commits to l (if not NULL); NULL if something was refused (no
 * asserts: supervisors call this on their executor). */
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
        bad |= rill_consumer_conf_assign(c, topic, p, start) != RILL_OK;
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
    xform_t x = {.sys = env.sys, .ledger = l->aid, .out_topic = "out", .fail_seq = -1};
    rill_aid_t consumer = kk_consumer_spawn_ok(
        env.sys, consumer_conf(env.boot, "clean", "in", CL_PARTS, RILL_OFFSET_BEGINNING, l), -1);
    atomic_store(&x.consumer, consumer);
    rill_aid_t map = kk_stage_spawn_ok(env.sys, rill_stage_map(xform_one, &x), -1);
    rill_aid_t producer = kk_producer_spawn_ok(env.sys, producer_conf(env.boot, NULL), -1);
    kk_connect_ok(env.sys, map, producer);
    kk_connect_ok(env.sys, consumer, map);

    int ok;
    KK_WAIT_UNTIL(ok, 150000, ledger_get(l, &l->complete) == CL_TOTAL);
    cr_assert(ok, "%ld of %d inputs have their output delivered (%ld transformed)",
              ledger_get(l, &l->complete), CL_TOTAL, atomic_load(&x.transformed));
    int64_t t1 = kit_now_ms();
    int64_t end[CL_PARTS];
    for (int p = 0; p < CL_PARTS; p++)
        end[p] = CL_PER;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, ledger_committed_all(l, end));
    cr_assert(ok, "the commits did not reach the end offsets");
    rill_producer_stats_t ps = kk_producer_stats_ok(env.sys, producer);
    rill_consumer_stats_t cs;
    cr_assert_eq(rill_consumer_stats(env.sys, consumer, &cs), RILL_OK);

    kk_stop_wait(env.sys, consumer);
    kk_stop_wait(env.sys, map);
    kk_stop_wait(env.sys, producer);
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
    /* The loading producer is done: these hit the pipeline's producer. */
    cr_assert_eq(rill_broker_push_request_errors(env.broker, produce_api, 3,
                                                 RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION),
                 RILL_OK);
    cr_assert_eq(
        rill_broker_push_request_errors(env.broker, produce_api, 2, RD_KAFKA_RESP_ERR__TRANSPORT),
        RILL_OK);

    /* The map waits at a gate after a quarter of the inputs (executor 0;
     * the rest runs on executor 1). The broker goes down while nothing is
     * in flight, so no Produce request can be appended with its response
     * lost: every failure the producer sees was certainly not appended,
     * and a duplicate or a reordering in the output is rill's or the
     * idempotent producer's doing, not an artefact of the outage. */
    ledger_t *l = ledger_new(env.sys, FT_PARTS, FT_PER, expect_one, 1);
    kit_gate_t gate;
    kit_gate_init(&gate);
    xform_t x = {.sys = env.sys,
                 .ledger = l->aid,
                 .out_topic = "out",
                 .fail_seq = -1,
                 .gate = &gate,
                 .gate_at = FT_TOTAL / 4};
    rill_aid_t consumer = kk_consumer_spawn_ok(
        env.sys, consumer_conf(env.boot, "faults", "in", FT_PARTS, RILL_OFFSET_BEGINNING, l), 1);
    atomic_store(&x.consumer, consumer);
    rill_aid_t map = kk_stage_spawn_ok(env.sys, rill_stage_map(xform_one, &x), 0);
    rill_aid_t producer = kk_producer_spawn_ok(env.sys, producer_conf(env.boot, NULL), 1);
    kk_connect_ok(env.sys, map, producer);
    kk_connect_ok(env.sys, consumer, map);

    int ok;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS,
                  ledger_get(l, &l->complete) == FT_TOTAL / 4 && atomic_load(&gate.arrived) == 1);
    cr_assert(ok, "%ld outputs delivered, the map %s at the gate", ledger_get(l, &l->complete),
              atomic_load(&gate.arrived) ? "is" : "is not");
    /* Every request made so far is delivered: nothing is in flight. (No
     * rill_producer_stats here: its reply actor may be on the held
     * executor.) */
    /* More produce errors (for after the outage), and the broker goes
     * away for a while; the map goes on meanwhile. */
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
    for (int p = 0; p < FT_PARTS; p++)
        end[p] = FT_PER;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, ledger_committed_all(l, end));
    cr_assert(ok, "the commits did not reach the end offsets");
    rill_producer_stats_t ps = kk_producer_stats_ok(env.sys, producer);
    kk_stop_wait(env.sys, consumer);
    kk_stop_wait(env.sys, map);
    kk_stop_wait(env.sys, producer);
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
     * reordered anything. */
    cr_assert_eq(oc.order_breaks, 0, "output reordered: %s", oc.first_problem);
    /* Nothing failed and no actor restarted: rill handed each request to
     * librdkafka once and saw it delivered once. The output may still
     * hold copies: the 2.0.2 mock does not de-duplicate an idempotent
     * producer's retried batch (after the injected _TRANSPORT error it
     * appends the batch again), which a real broker would drop by its
     * sequence number. */
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
/* 3. A fatal producer error: the supervisor restarts the group        */
/* ------------------------------------------------------------------ */

#define FA_PARTS 4
#define FA_PER   5000
#define FA_TOTAL (FA_PARTS * FA_PER)

typedef struct fatal_env {
    const char *boot;
    ledger_t *ledger;
    xform_t x;
    atomic_long spawn_errors;
    atomic_long producers;
} fatal_env_t;

static rill_err_t fa_spawn_consumer(rill_system_t *sys, void *arg, const rill_child_env_t *env,
                                    rill_aid_t *aid, char *errstr, size_t errstr_size)
{
    fatal_env_t *f = arg;
    rill_consumer_conf_t *c =
        consumer_conf_try(f->boot, "fatal", "in", FA_PARTS, RILL_OFFSET_COMMITTED, f->ledger);
    if (!c) {
        atomic_fetch_add(&f->spawn_errors, 1);
        return RILL_EINVAL;
    }
    rill_stage_opts_t o = {.name = env->name, .link_to = env->supervisor};
    rill_err_t e = rill_consumer_spawn(sys, c, &o, aid, NULL, 0);
    if (e)
        atomic_fetch_add(&f->spawn_errors, 1);
    return e;
}

static rill_err_t fa_spawn_map(rill_system_t *sys, void *arg, const rill_child_env_t *env,
                               rill_aid_t *aid, char *errstr, size_t errstr_size)
{
    fatal_env_t *f = arg;
    /* one_for_all: the previous map is gone, so one xform serves all. */
    rill_aid_t consumer = rill_lookup(sys, "consumer"); /* started just before */
    atomic_store(&f->x.consumer, consumer);
    rill_stage_opts_t o = {.name = env->name, .link_to = env->supervisor};
    rill_err_t e = rill_stage_spawn(sys, rill_stage_map(xform_one, &f->x), &o, aid);
    if (!e)
        e = rill_stage_connect(sys, consumer, *aid);
    if (e)
        atomic_fetch_add(&f->spawn_errors, 1);
    return e;
}

static rill_err_t fa_spawn_producer(rill_system_t *sys, void *arg, const rill_child_env_t *env,
                                    rill_aid_t *aid, char *errstr, size_t errstr_size)
{
    fatal_env_t *f = arg;
    /* At most 100 in flight, lingering 20 ms: the pace is a few thousand
     * records a second, so the failure falls mid-stream. */
    const char *kv[] = {"rill.max.inflight",     "100",  "linger.ms", "20",
                        "rill.flush.timeout.ms", "1000", NULL};
    rill_producer_conf_t *c = producer_conf_try(f->boot, kv);
    if (!c) {
        atomic_fetch_add(&f->spawn_errors, 1);
        return RILL_EINVAL;
    }
    rill_stage_opts_t o = {.name = env->name, .link_to = env->supervisor};
    rill_err_t e = rill_producer_spawn(sys, c, &o, aid, NULL, 0);
    if (!e)
        e = rill_stage_connect(sys, rill_lookup(sys, "map"), *aid);
    if (e)
        atomic_fetch_add(&f->spawn_errors, 1);
    else
        atomic_fetch_add(&f->producers, 1);
    return e;
}

/* Restarts of all three children; info (if not NULL) gets the producer's. */
static uint32_t group_restarts_info(rill_system_t *sys, rill_aid_t sup, rill_child_info_t *info)
{
    rill_child_info_t v[3];
    size_t n = 0;
    if (rill_sup_children(sys, sup, v, 3, &n) != RILL_OK || n != 3)
        return 0;
    if (info)
        *info = v[2];
    return v[0].restarts + v[1].restarts + v[2].restarts;
}

static uint32_t group_restarts(rill_system_t *sys, rill_aid_t sup)
{
    return group_restarts_info(sys, sup, NULL);
}

Test(kafka_pipeline, fatal_producer_error_restarts_the_group_and_loses_nothing, .timeout = 180)
{
    kk_env_t env;
    kk_env_init(&env);
    load_in_out(&env, "in", "out", FA_PARTS, FA_PER);

    fatal_env_t *f = calloc(1, sizeof(*f));
    cr_assert_not_null(f);
    f->boot = env.boot;
    f->ledger = ledger_new(env.sys, FA_PARTS, FA_PER, expect_one, -1);
    ledger_t *l = f->ledger;
    f->x = (xform_t){.sys = env.sys, .ledger = l->aid, .out_topic = "out", .fail_seq = -1};

    rill_child_spec_t children[] = {
        {.id = "consumer", .spawn = fa_spawn_consumer, .arg = f, .register_name = 1},
        {.id = "map", .spawn = fa_spawn_map, .arg = f, .register_name = 1},
        {.id = "producer", .spawn = fa_spawn_producer, .arg = f, .register_name = 1},
    };
    rill_sup_spec_t spec; /* the supervisor reads it while it runs */
    rill_aid_t sup = kk_sup_start_ok(env.sys, &spec, children, 3, 3, "pipeline");

    int ok;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, ledger_get(l, &l->complete) >= FA_TOTAL / 5);
    cr_assert(ok, "the pipeline did not get going (%ld outputs delivered)", ledger_get(l, &l->ok));
    rill_aid_t producer = rill_lookup(env.sys, "producer");
    cr_assert(!rill_aid_is_none(producer));
    long before = ledger_get(l, &l->complete);
    long transformed_before = atomic_load(&f->x.transformed);
    cr_assert_lt(before, FA_TOTAL, "everything was done before the failure");
    cr_assert_eq(rill__producer_test_fatal(env.sys, producer,
                                           RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
                                           "injected by test_kafka_pipeline"),
                 RILL_OK);
    /* The group restarts: the producer fails, and the map it cancelled
     * ends too; whichever exit the supervisor sees first counts. */
    KK_WAIT_UNTIL(ok, KK_WAIT_MS,
                  group_restarts(env.sys, sup) >= 1 && atomic_load(&f->producers) == 2);
    cr_assert(ok, "the producer was not restarted");
    cr_assert_not(rill_alive(env.sys, producer), "the producer survived a fatal error");

    KK_WAIT_UNTIL(ok, 90000, ledger_get(l, &l->complete) == FA_TOTAL);
    cr_assert(ok, "%ld of %d inputs have their output delivered", ledger_get(l, &l->complete),
              FA_TOTAL);
    int64_t end[FA_PARTS];
    for (int p = 0; p < FA_PARTS; p++)
        end[p] = FA_PER;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, ledger_committed_all(l, end));
    cr_assert(ok, "the commits did not reach the end offsets");
    rill_child_info_t pinfo;
    uint32_t restarts = group_restarts_info(env.sys, sup, &pinfo);
    rill_producer_stats_t dead =
        kk_producer_stats_ok(env.sys, producer); /* the failed one's final counters */
    cr_assert_eq(rill_sup_stop(env.sys, sup, 30000), RILL_OK);
    cr_assert_eq(kit_fence(env.sys, l->aid), RILL_OK);

    long transformed = atomic_load(&f->x.transformed);
    fprintf(stderr,
            "fatal: failed after %ld inputs done (%ld transformed); %u restart(s), %ld "
            "producers; %ld failed delivery results; %ld transforms in all (%ld again); the "
            "failed producer: %llu delivered, %llu failed, %llu undelivered at stop; last exit: "
            "%s\n",
            before, transformed_before, restarts, atomic_load(&f->producers), l->failed,
            transformed, transformed - FA_TOTAL, (unsigned long long)dead.delivered,
            (unsigned long long)dead.failed, (unsigned long long)dead.undelivered_at_stop,
            pinfo.last_exit.text);
    cr_assert_eq(atomic_load(&f->spawn_errors), 0);
    /* One failure, one group restart (intensity 3 would allow more). */
    cr_assert_eq(restarts, 1, "%u restarts", restarts);
    cr_assert_eq(atomic_load(&f->producers), 2);
    cr_assert_eq(pinfo.last_exit.kind, RILL_EXIT_FAILURE, "producer exit: %s",
                 rill_exit_kind_name(pinfo.last_exit.kind));
    cr_assert_not_null(strstr(pinfo.last_exit.text, "atal"), "producer exit: %s",
                       pinfo.last_exit.text);
    cr_assert_eq(l->violations, 0, "%ld violations, the first: %s", l->violations, l->violation);
    cr_assert_eq(atomic_load(&l->lost_events), 0);
    /* What the failed group held unconfirmed (requests dropped with the
     * map's queue, deliveries that failed) was consumed again: more
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
    free(f);
}

/* ------------------------------------------------------------------ */
/* 4. One-to-many and filter; a failed origin holds the commit         */
/* ------------------------------------------------------------------ */

#define FO_PARTS 2
#define FO_PER   3000
#define FO_TOTAL (FO_PARTS * FO_PER)

/* What travels between the stages: an input's seq, key and origin. */
typedef struct item {
    uint64_t seq;
    int32_t partition;
    char key[32];
    size_t key_len;
    rill_origin_t *origin;
    int filtered; /* dropped on purpose: the origin reference goes as done */
} item_t;

static void item_free(void *p)
{
    item_t *it = p;
    if (it->origin) {
        if (!it->filtered)
            rill_origin_fail(it->origin); /* dropped before its outputs were delivered */
        rill_origin_release(it->origin);
    }
    free(it);
}

typedef struct fanout {
    xform_t x;
    atomic_long filtered;
} fanout_t;

static rill_err_t to_item(void *opaque, rill_elem_t *in, rill_elem_t *out)
{
    fanout_t *fo = opaque;
    const rd_kafka_message_t *m = rill_record(in);
    int64_t seq = m ? value_seq(m->payload, m->len, NULL) : -1;
    item_t *it = calloc(1, sizeof(*it));
    if (seq < 0 || !it || !m->key || m->key_len > sizeof(it->key)) {
        free(it);
        rill_elem_release(in);
        return RILL_EINVAL;
    }
    atomic_fetch_add(&fo->x.transformed, 1);
    it->seq = (uint64_t)seq;
    it->partition = m->partition;
    it->key_len = m->key_len;
    memcpy(it->key, m->key, m->key_len);
    it->origin = rill_origin_new(fo->x.sys, atomic_load(&fo->x.consumer), in);
    rill_elem_release(in);
    if (!it->origin) {
        free(it);
        return RILL_EINVAL;
    }
    *out = (rill_elem_t){.payload = it, .dtor = item_free};
    return RILL_OK;
}

/* Multiples of 5 have no output at all. */
static int keep_not_div5(void *opaque, const rill_elem_t *e)
{
    fanout_t *fo = opaque;
    item_t *it = e->payload;
    if (it->seq % 5)
        return 1;
    it->filtered = 1;
    atomic_fetch_add(&fo->filtered, 1);
    return 0;
}

/* Outputs 1 and 2 exist for even seqs only. */
static int keep_even(void *opaque, const rill_elem_t *e)
{
    (void)opaque;
    item_t *it = e->payload;
    if (it->seq % 2 == 0)
        return 1;
    it->filtered = 1;
    return 0;
}

/* broadcast's copy: one more origin reference. */
static rill_err_t copy_item(void *opaque, const rill_elem_t *in, rill_elem_t *copy)
{
    (void)opaque;
    item_t *it = malloc(sizeof(*it));
    if (!it)
        return RILL_ENOMEM;
    *it = *(const item_t *)in->payload;
    it->origin = rill_origin_ref(it->origin);
    *copy = (rill_elem_t){.payload = it, .dtor = item_free};
    return RILL_OK;
}

typedef struct branch {
    fanout_t *fo;
    int k;
} branch_t;

/* Output k of an item: a produce request that takes the item's origin
 * reference. */
static rill_err_t item_to_request(void *opaque, rill_elem_t *in, rill_elem_t *out)
{
    branch_t *b = opaque;
    item_t *it = in->payload;
    char value[64];
    int vl = snprintf(value, sizeof(value), "seq=%" PRIu64 " out=%d", it->seq, b->k);
    rill_produce_t *p = rill_produce_new(b->fo->x.out_topic, it->partition, it->key, it->key_len,
                                         value, (size_t)vl);
    if (!p) {
        rill_elem_release(in);
        return RILL_ENOMEM;
    }
    rill_produce_set_origin(p, it->origin);
    it->origin = NULL;
    rill_produce_set_reply(p, b->fo->x.ledger, it->seq * 4 + (uint64_t)b->k);
    rill_elem_release(in);
    *out = rill_produce_elem(p);
    return RILL_OK;
}

Test(kafka_pipeline, one_to_many_and_filter_commit_all_and_failed_origin_holds, .timeout = 180)
{
    kk_env_t env;
    kk_env_init(&env);
    load_in_out(&env, "in", "out", FO_PARTS, FO_PER);

    /* consumer -> item -> filter(not %5) -> broadcast(3) -> branch k ->
     * merge(3) -> producer, where branch 0 maps every item to output 0
     * and branches 1 and 2 keep even seqs and map them to outputs 1, 2. */
    ledger_t *l = ledger_new(env.sys, FO_PARTS, FO_PER, expect_fanout, -1);
    fanout_t *fo = calloc(1, sizeof(*fo));
    cr_assert_not_null(fo);
    fo->x = (xform_t){.sys = env.sys, .ledger = l->aid, .out_topic = "out", .fail_seq = -1};
    branch_t br[3] = {{fo, 0}, {fo, 1}, {fo, 2}};
    rill_aid_t consumer = kk_consumer_spawn_ok(
        env.sys, consumer_conf(env.boot, "fanout", "in", FO_PARTS, RILL_OFFSET_BEGINNING, l), -1);
    atomic_store(&fo->x.consumer, consumer);
    rill_aid_t a_item = kk_stage_spawn_ok(env.sys, rill_stage_map(to_item, fo), -1);
    rill_aid_t a_div5 = kk_stage_spawn_ok(env.sys, rill_stage_filter(keep_not_div5, fo), -1);
    rill_aid_t a_bcast = kk_stage_spawn_ok(env.sys, rill_stage_broadcast(3, copy_item, NULL), -1);
    rill_aid_t a_merge = kk_stage_spawn_ok(env.sys, rill_stage_merge(3), -1);
    rill_aid_t a_map[3], a_even[3] = {0};
    for (int k = 0; k < 3; k++)
        a_map[k] = kk_stage_spawn_ok(env.sys, rill_stage_map(item_to_request, &br[k]), -1);
    for (int k = 1; k < 3; k++)
        a_even[k] = kk_stage_spawn_ok(env.sys, rill_stage_filter(keep_even, NULL), -1);
    rill_aid_t producer = kk_producer_spawn_ok(env.sys, producer_conf(env.boot, NULL), -1);
    kk_connect_ok(env.sys, a_merge, producer);
    for (int k = 0; k < 3; k++) {
        kk_connect_ok(env.sys, a_map[k], a_merge);
        if (k == 0) {
            kk_connect_ok(env.sys, a_bcast, a_map[k]);
        } else {
            kk_connect_ok(env.sys, a_even[k], a_map[k]);
            kk_connect_ok(env.sys, a_bcast, a_even[k]);
        }
    }
    kk_connect_ok(env.sys, a_div5, a_bcast);
    kk_connect_ok(env.sys, a_item, a_div5);
    kk_connect_ok(env.sys, consumer, a_item);

    long n_out = 0;
    for (uint64_t s = 0; s < FO_TOTAL; s++)
        n_out += expect_fanout(s);
    int ok;
    KK_WAIT_UNTIL(ok, 90000,
                  ledger_get(l, &l->ok) >= n_out && ledger_get(l, &l->complete) == FO_TOTAL);
    cr_assert(ok, "%ld of %ld outputs delivered, %ld of %d inputs complete", ledger_get(l, &l->ok),
              n_out, ledger_get(l, &l->complete), FO_TOTAL);
    int64_t end[FO_PARTS];
    for (int p = 0; p < FO_PARTS; p++)
        end[p] = FO_PER;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, ledger_committed_all(l, end));
    cr_assert(ok, "the commits did not reach the end offsets: every input, filtered ones "
                  "included, must be confirmed");
    rill_consumer_stats_t cs;
    cr_assert_eq(rill_consumer_stats(env.sys, consumer, &cs), RILL_OK);
    rill_producer_stats_t ps = kk_producer_stats_ok(env.sys, producer);
    kk_stop_wait(env.sys, consumer);
    rill_aid_t stages[] = {a_item,   a_div5,   a_bcast,  a_even[1], a_even[2],
                           a_map[0], a_map[1], a_map[2], a_merge,   producer};
    for (size_t i = 0; i < sizeof(stages) / sizeof(stages[0]); i++)
        kk_stop_wait(env.sys, stages[i]);
    cr_assert_eq(kit_fence(env.sys, l->aid), RILL_OK);

    cr_assert_eq(l->violations, 0, "%ld violations, the first: %s", l->violations, l->violation);
    cr_assert_eq(atomic_load(&l->lost_events), 0);
    cr_assert_eq(l->failed, 0);
    cr_assert_eq(l->foreign, 0, "delivery results for outputs that should not exist");
    cr_assert_eq(l->dups, 0);
    cr_assert_eq(atomic_load(&fo->filtered), FO_TOTAL / 5);
    cr_assert_eq(cs.confirmed, (uint64_t)FO_TOTAL, "%llu confirmed",
                 (unsigned long long)cs.confirmed);
    cr_assert_eq(ps.delivered, (uint64_t)n_out);
    cr_assert_eq(ps.requested, (uint64_t)n_out);
    int64_t committed[FO_PARTS];
    kk_committed_offsets(env.boot, "fanout", "in", FO_PARTS, committed);
    for (int p = 0; p < FO_PARTS; p++)
        cr_assert_eq(committed[p], FO_PER, "[%d] committed %" PRId64 ", end %d", p, committed[p],
                     FO_PER);

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

    /* A failed origin: its record is never confirmed, so its partition's
     * commit stops right below it, even though its output was delivered
     * and every later record of the partition was confirmed. */
    enum { FP_PER = 200, FP_FAIL_OFFSET = 77 };
    load_in_out(&env, "in-f", "out-f", 2, FP_PER);
    l = ledger_new(env.sys, 2, FP_PER, expect_one, -1);
    xform_t x = {
        .sys = env.sys, .ledger = l->aid, .out_topic = "out-f", .fail_seq = FP_FAIL_OFFSET};
    consumer = kk_consumer_spawn_ok(
        env.sys, consumer_conf(env.boot, "failo", "in-f", 2, RILL_OFFSET_BEGINNING, l), -1);
    atomic_store(&x.consumer, consumer);
    rill_aid_t map = kk_stage_spawn_ok(env.sys, rill_stage_map(xform_one, &x), -1);
    producer = kk_producer_spawn_ok(env.sys, producer_conf(env.boot, NULL), -1);
    kk_connect_ok(env.sys, map, producer);
    kk_connect_ok(env.sys, consumer, map);
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, ledger_get(l, &l->complete) == 2 * FP_PER);
    cr_assert(ok, "%ld of %d outputs delivered", ledger_get(l, &l->complete), 2 * FP_PER);
    /* Every delivery (and so every origin release) happened before the
     * producer answers; confirms are in the consumer's mailbox before it
     * answers in turn. */
    ps = kk_producer_stats_ok(env.sys, producer);
    cr_assert_eq(ps.delivered, 2 * FP_PER);
    cr_assert_eq(rill_consumer_stats(env.sys, consumer, &cs), RILL_OK);
    cr_assert_eq(cs.confirmed, 2 * FP_PER - 1, "%llu confirmed: the failed origin confirmed?",
                 (unsigned long long)cs.confirmed);
    int64_t want[2] = {FP_FAIL_OFFSET, FP_PER};
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, ledger_committed_all(l, want));
    cr_assert(ok, "commits: [0] %" PRId64 " (want %d), [1] %" PRId64 " (want %d)", l->committed[0],
              FP_FAIL_OFFSET, l->committed[1], FP_PER);
    kk_stop_wait(env.sys, consumer); /* the final commit */
    kk_stop_wait(env.sys, map);
    kk_stop_wait(env.sys, producer);
    cr_assert_eq(kit_fence(env.sys, l->aid), RILL_OK);
    kk_committed_offsets(env.boot, "failo", "in-f", 2, committed);
    cr_assert_eq(committed[0], FP_FAIL_OFFSET, "[0] committed %" PRId64 " past the failed origin",
                 committed[0]);
    cr_assert_eq(committed[1], FP_PER);
    cr_assert_eq(l->committed[0], FP_FAIL_OFFSET);
    cr_assert_eq(l->violations, 0, "%s", l->violation);
    ledger_free(l);
    free(fo);
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
    xform_t x = {.sys = env.sys,
                 .ledger = l->aid,
                 .out_topic = "out",
                 .fail_seq = -1,
                 .gate = &gate,
                 .gate_at = SD_FIRST};
    rill_aid_t consumer = kk_consumer_spawn_ok(
        env.sys, consumer_conf(env.boot, "stop", "in", SD_PARTS, RILL_OFFSET_BEGINNING, l), 1);
    atomic_store(&x.consumer, consumer);
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

    /* Their origins were failed: not one of them was confirmed. */
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

static int keyed_pull(void *opaque, rill_elem_t *out)
{
    keyed_src_t *k = opaque;
    if (k->next == k->n)
        return 0;
    char key[32], value[32];
    int kl = snprintf(key, sizeof(key), "customer-%d", k->next % 97);
    int vl = snprintf(value, sizeof(value), "n=%d", k->next);
    k->next++;
    rill_produce_t *p =
        rill_produce_new("placed", RILL_PARTITION_ANY, key, (size_t)kl, value, (size_t)vl);
    if (!p)
        return -RILL_ENOMEM;
    *out = rill_produce_elem(p);
    return 1;
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
    rill_aid_t prod = kk_producer_spawn_ok(env.sys, producer_conf(env.boot, NULL), -1);
    rill_aid_t s = kk_stage_spawn_ok(env.sys, rill_source_fn(keyed_pull, &src), -1);
    kk_connect_ok(env.sys, s, prod);
    /* The source ends after 600; the producer completes once they are
     * delivered, and keeps its final counters. */
    int ok;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, !rill_alive(env.sys, prod));
    cr_assert(ok, "the producer did not complete");
    cr_assert_eq(kk_producer_stats_ok(env.sys, prod).delivered, 600);
    rill_consumed_t *got = kk_consume_all(env.boot, "placed", KK_WAIT_MS);
    cr_assert_eq(rill_consumed_count(got), 600);
    int used[7] = {0};
    for (size_t i = 0; i < rill_consumed_count(got); i++) {
        const rill_testkit_record_t *r = rill_consumed_at(got, i);
        int32_t want = kk_java_partition(r->key, r->key_len, 7);
        cr_assert_eq(r->partition, want, "key %.*s in partition %d, Java puts it in %d",
                     (int)r->key_len, (const char *)r->key, (int)r->partition, (int)want);
        used[r->partition] = 1;
    }
    for (int p = 0; p < 7; p++)
        cr_assert(used[p], "no key went to partition %d", p);
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

    /* Produce requests. */
    cr_assert_null(rill_produce_new(NULL, RILL_PARTITION_ANY, "k", 1, "v", 1));
    cr_assert_null(rill_produce_new("bad topic!", RILL_PARTITION_ANY, "k", 1, "v", 1));
    cr_assert_null(rill_produce_new("", RILL_PARTITION_ANY, "k", 1, "v", 1));
    cr_assert_null(rill_produce_new("t", -2, "k", 1, "v", 1));
    cr_assert_null(rill_produce_new("t", 0, NULL, 3, "v", 1));
    cr_assert_null(rill_produce_new("t", 0, "k", 1, NULL, 3));
    rill_produce_t *p = rill_produce_new("t", 0, NULL, 0, NULL, 0); /* no key, a tombstone */
    cr_assert_not_null(p);
    cr_assert_eq(rill_produce_add_header(NULL, "h", "v", 1), RILL_EINVAL);
    cr_assert_eq(rill_produce_add_header(p, NULL, "v", 1), RILL_EINVAL);
    cr_assert_eq(rill_produce_add_header(p, "h", NULL, 2), RILL_EINVAL);
    cr_assert_eq(rill_produce_add_header(p, "h", NULL, 0), RILL_OK);
    rill_produce_set_timestamp(NULL, 1);
    rill_produce_set_origin(NULL, NULL);
    rill_produce_set_reply(NULL, (rill_aid_t){1}, 1);
    rill_produce_free(p);
    rill_produce_free(NULL);
    rill_elem_t none = rill_produce_elem(NULL);
    cr_assert_not(rill_elem_valid(&none));

    /* Origins need a record from a consumer. */
    rill_elem_t v = rill_elem_value(7);
    cr_assert_null(rill_origin_new(sys, (rill_aid_t){1}, &v));
    cr_assert_null(rill_origin_new(sys, (rill_aid_t){1}, NULL));
    cr_assert_null(rill_origin_ref(NULL));
    rill_origin_fail(NULL);
    rill_origin_release(NULL);

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
    kk_stop_wait(sys, good);
    /* A producer that never existed has no counters. */
    cr_assert_eq(rill_producer_stats(sys, (rill_aid_t){0x7fffffffull}, &s), RILL_ESTOPPED);

    kk_env_fini(&env);
    cr_assert_eq(KK_LEAK_CHECK(), 0, "LeakSanitizer found leaks");
}
