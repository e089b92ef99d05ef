/*
 * The Kafka consumer actor (include/rill/kafka.h) against the embedded
 * broker: at-least-once under random confirm order, crash and restart
 * under a supervisor, a restarted group member, cooperative and eager
 * rebalances with fencing, injected commit errors and a broker outage,
 * the final commit of a stop, backpressure with flat memory, redelivery
 * and dead letters, self-managed offsets, fixed partitions at the
 * committed offset, regex subscriptions, records and prefix confirms, the
 * system's embedded broker, configuration errors.
 *
 * Every test starts its own embedded broker and topics, so tests run in
 * parallel. Topics are loaded partition by partition with the testkit's
 * generator: partition p of a topic loaded with `per` records per
 * partition holds seq p * per + o at offset o, so a record's value
 * ("seq=<n> ...") tells where it must have come from.
 *
 * Sinks run on executor threads and never assert: they record what they
 * saw under a mutex, and the test thread waits on those records with
 * deadlines and asserts. Commits and rebalances are observed through the
 * consumer's commit and rebalance callbacks (on the consumer's executor),
 * also recorded, never asserted there. Fixed partitions (no group join)
 * are used where group semantics are not the point: a join costs the
 * mock's 3 s initial rebalance delay. Group members use a 3 s session
 * timeout so that a group whose last member left rebalances quickly.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include <rill/kafka.h>
#include <rill/stream.h>
#include <rill/supervisor.h>
#include <rill/testkit.h>

#include "support/rtest.h"

#include "support/actor_kit.h"
#include "support/kafka_kit.h"

#include "kafka/kafka_int.h"

#if defined(__SANITIZE_ADDRESS__)
/* AddressSanitizer's quarantine keeps freed memory resident: the RSS check
 * is left out there (kit_heap_bytes() is the measure). */
#define HAVE_SANITIZER_HEAP 1
#endif

/* Most partitions a test topic has (bit masks are uint32_t). */
#define MAXP 16

/* ------------------------------------------------------------------ */
/* Offsets, consumers and sinks                                        */
/* ------------------------------------------------------------------ */

/* Non-zero when the group's committed offset of every partition 0..n-1 is
 * `want` (polled: sleeps 100 ms between reads). */
static int committed_all(const char *boot, const char *group, const char *topic, int n,
                         int64_t want)
{
    int64_t c[MAXP];
    kk_committed_offsets(boot, group, topic, n, c);
    for (int p = 0; p < n; p++)
        if (c[p] != want) {
            kk_nap_us(100 * 1000);
            return 0;
        }
    return 1;
}

/* Group members: restarts and joins stay quick on the mock. */
static const char *const group_member_kv[] = {"session.timeout.ms",
                                              "3000",
                                              "heartbeat.interval.ms",
                                              "500",
                                              "auto.offset.reset",
                                              "earliest",
                                              "rill.commit.interval.ms",
                                              "100",
                                              NULL};

/* The generator's sequence number ("seq=<n> ..."), or -1. */
static int64_t msg_seq(const rd_kafka_message_t *m)
{
    const char *v = m->payload;
    if (!v || m->len < 6 || memcmp(v, "seq=", 4))
        return -1;
    int64_t s = 0;
    size_t i = 4;
    for (; i < m->len && v[i] >= '0' && v[i] <= '9'; i++)
        s = s * 10 + (v[i] - '0');
    return i > 4 && i < m->len && v[i] == ' ' ? s : -1;
}

/* *v, read under mu. */
static long locked_long(pthread_mutex_t *mu, const long *v)
{
    pthread_mutex_lock(mu);
    long x = *v;
    pthread_mutex_unlock(mu);
    return x;
}

/* ---- a probe: a sink that records what it sees and confirms or holds -- */

typedef struct probe {
    rill_system_t *sys;
    rill_aid_t consumer; /* set before the sink is connected */
    pthread_mutex_t mu;
    int hold;          /* hold records at offsets >= hold_from, unconfirmed */
    int64_t hold_from; /* (per partition offsets) */
    long work_us;      /* pretend to work this long per record */
    rill_elem_t *held;
    size_t n_held, cap_held;
    long received;
    long confirm_errors; /* confirms refused, other than by a stopped consumer */
    int64_t first[MAXP], last[MAXP];
    long per_part[MAXP];
    size_t n_seq;
    uint32_t *seen; /* deliveries per seq */
    long distinct, dups, foreign;
} probe_t;

static void probe_init(probe_t *pr, rill_system_t *sys, size_t n_seq)
{
    memset(pr, 0, sizeof(*pr));
    pr->sys = sys;
    pthread_mutex_init(&pr->mu, NULL);
    for (int p = 0; p < MAXP; p++)
        pr->first[p] = pr->last[p] = -1;
    pr->n_seq = n_seq;
    pr->seen = calloc(n_seq ? n_seq : 1, sizeof(*pr->seen));
    cr_assert_not_null(pr->seen);
}

/* Release whatever is still held (not confirmed) and free. Call after the
 * sink stopped. */
static void probe_fini(probe_t *pr)
{
    for (size_t i = 0; i < pr->n_held; i++)
        rill_elem_release(&pr->held[i]);
    free(pr->held);
    free(pr->seen);
    pthread_mutex_destroy(&pr->mu);
}

static rill_err_t probe_sink(void *opaque, rill_elem_t *e)
{
    probe_t *pr = opaque;
    const rd_kafka_message_t *m = rill_record(e);
    if (!m) {
        rill_elem_release(e);
        return RILL_EINVAL;
    }
    if (pr->work_us)
        kk_nap_us(pr->work_us);
    int64_t seq = msg_seq(m);
    int p = m->partition;
    int keep = 0;
    pthread_mutex_lock(&pr->mu);
    pr->received++;
    if (p >= 0 && p < MAXP) {
        if (pr->first[p] < 0)
            pr->first[p] = m->offset;
        pr->last[p] = m->offset;
        pr->per_part[p]++;
    }
    if (seq >= 0 && (size_t)seq < pr->n_seq) {
        if (pr->seen[seq]++)
            pr->dups++;
        else
            pr->distinct++;
    } else {
        pr->foreign++;
    }
    if (pr->hold && m->offset >= pr->hold_from) {
        if (pr->n_held == pr->cap_held) {
            size_t cap = pr->cap_held ? pr->cap_held * 2 : 256;
            rill_elem_t *v = realloc(pr->held, cap * sizeof(*v));
            if (v) {
                pr->held = v;
                pr->cap_held = cap;
            }
        }
        if (pr->n_held < pr->cap_held) {
            pr->held[pr->n_held++] = *e; /* the record is ours until flushed */
            keep = 1;
        }
    }
    pthread_mutex_unlock(&pr->mu);
    if (!keep)
        rill_elem_confirm(e);
    return RILL_OK;
}

/* Confirm (if `confirm`) and release the held records of the partitions
 * in `mask`; returns how many. */
static size_t probe_flush(probe_t *pr, int confirm, uint32_t mask)
{
    pthread_mutex_lock(&pr->mu);
    size_t n = 0;
    rill_elem_t *out = malloc((pr->n_held ? pr->n_held : 1) * sizeof(*out));
    size_t kept = 0;
    for (size_t i = 0; out && i < pr->n_held; i++) {
        int p = rill_record(&pr->held[i])->partition;
        if (p < 32 && (mask & (1u << p)))
            out[n++] = pr->held[i];
        else
            pr->held[kept++] = pr->held[i];
    }
    if (out)
        pr->n_held = kept;
    pthread_mutex_unlock(&pr->mu);
    for (size_t i = 0; i < n; i++) {
        if (confirm)
            rill_elem_confirm(&out[i]);
        else
            rill_elem_release(&out[i]);
    }
    free(out);
    return n;
}

static long probe_distinct(probe_t *pr)
{
    return locked_long(&pr->mu, &pr->distinct);
}

static long probe_received(probe_t *pr)
{
    return locked_long(&pr->mu, &pr->received);
}

static int64_t probe_first(probe_t *pr, int p)
{
    pthread_mutex_lock(&pr->mu);
    int64_t f = pr->first[p];
    pthread_mutex_unlock(&pr->mu);
    return f;
}

static long probe_per_part(probe_t *pr, int p)
{
    return locked_long(&pr->mu, &pr->per_part[p]);
}

/* Records of seqs 0..n-1 that neither probe saw. */
static long union_missing(probe_t *a, probe_t *b, size_t n)
{
    long missing = 0;
    pthread_mutex_lock(&a->mu);
    if (b)
        pthread_mutex_lock(&b->mu);
    for (size_t i = 0; i < n; i++)
        missing += !(i < a->n_seq && a->seen[i]) && !(b && i < b->n_seq && b->seen[i]);
    if (b)
        pthread_mutex_unlock(&b->mu);
    pthread_mutex_unlock(&a->mu);
    return missing;
}

/* ---- an observer: what the rebalance and commit callbacks reported --- */

#define OBS_NAMES 32

typedef struct kobs {
    pthread_mutex_t mu;
    uint32_t assigned; /* partitions held now (bit p) */
    uint32_t revoked;  /* revoked or lost since, not assigned again */
    /* REVOKED comes before the revoke's own commit: until one of theirs
     * succeeds, commits of these are not late (bit p) */
    uint32_t revoke_commit;
    long n_assigned, n_revoked, n_lost;
    char names[OBS_NAMES][64]; /* "topic:partition" of every partition ever assigned */
    int n_names;
    long commits;     /* commit events */
    long commit_fail; /* events with an error (top-level or per partition) */
    rd_kafka_resp_err_t errs[16];
    int n_errs;
    int64_t committed[MAXP]; /* last offset committed successfully, -1 none */
    long late_commits;       /* offsets of released partitions committed */
    char late[200];
} kobs_t;

static void kobs_init(kobs_t *o)
{
    memset(o, 0, sizeof(*o));
    pthread_mutex_init(&o->mu, NULL);
    for (int p = 0; p < MAXP; p++)
        o->committed[p] = -1;
}

static void kobs_fini(kobs_t *o)
{
    pthread_mutex_destroy(&o->mu);
}

static void kobs_err_locked(kobs_t *o, rd_kafka_resp_err_t err)
{
    for (int i = 0; i < o->n_errs; i++)
        if (o->errs[i] == err)
            return;
    if (o->n_errs < 16)
        o->errs[o->n_errs++] = err;
}

static void kobs_rebalance(void *opaque, rill_rebalance_event_t ev,
                           const rd_kafka_topic_partition_list_t *parts)
{
    kobs_t *o = opaque;
    pthread_mutex_lock(&o->mu);
    for (int i = 0; i < parts->cnt; i++) {
        int p = parts->elems[i].partition;
        uint32_t bit = p >= 0 && p < 32 ? 1u << p : 0;
        if (ev == RILL_REBALANCE_ASSIGNED) {
            o->assigned |= bit;
            o->revoked &= ~bit;
            if (o->n_names < OBS_NAMES)
                snprintf(o->names[o->n_names++], sizeof(o->names[0]), "%s:%d",
                         parts->elems[i].topic, p);
        } else {
            o->assigned &= ~bit;
            o->revoked |= bit;
            if (ev == RILL_REBALANCE_REVOKED)
                o->revoke_commit |= bit;
        }
    }
    if (ev == RILL_REBALANCE_ASSIGNED)
        o->n_assigned++;
    else if (ev == RILL_REBALANCE_REVOKED)
        o->n_revoked++;
    else
        o->n_lost++;
    pthread_mutex_unlock(&o->mu);
}

static void kobs_commit(void *opaque, rd_kafka_resp_err_t err,
                        const rd_kafka_topic_partition_list_t *offsets)
{
    kobs_t *o = opaque;
    pthread_mutex_lock(&o->mu);
    o->commits++;
    int failed = err != RD_KAFKA_RESP_ERR_NO_ERROR;
    if (err)
        kobs_err_locked(o, err);
    for (int i = 0; i < offsets->cnt; i++) {
        const rd_kafka_topic_partition_t *tp = &offsets->elems[i];
        int p = tp->partition;
        if (tp->err) {
            failed = 1;
            kobs_err_locked(o, tp->err);
        }
        if (p >= 0 && p < 32 && (o->revoke_commit & (1u << p))) {
            /* the revoke's commit (and its retries), before the release */
            if (!err && !tp->err)
                o->revoke_commit &= ~(1u << p);
        } else if (p >= 0 && p < 32 && (o->revoked & (1u << p))) {
            if (!o->late_commits)
                snprintf(o->late, sizeof(o->late),
                         "offset %" PRId64 " of %s [%d] committed after the partition was "
                         "released",
                         tp->offset, tp->topic, p);
            o->late_commits++;
        }
        if (!err && !tp->err && p >= 0 && p < MAXP)
            o->committed[p] = tp->offset;
    }
    o->commit_fail += failed;
    pthread_mutex_unlock(&o->mu);
}

static void kobs_attach(rill_consumer_conf_t *c, kobs_t *o)
{
    rill_consumer_conf_set_rebalance_cb(c, kobs_rebalance, o);
    rill_consumer_conf_set_commit_cb(c, kobs_commit, o);
}

static uint32_t kobs_assigned(kobs_t *o)
{
    pthread_mutex_lock(&o->mu);
    uint32_t a = o->assigned;
    pthread_mutex_unlock(&o->mu);
    return a;
}

static uint32_t kobs_revoked(kobs_t *o)
{
    pthread_mutex_lock(&o->mu);
    uint32_t r = o->revoked;
    pthread_mutex_unlock(&o->mu);
    return r;
}

/* Non-zero when the last successful commit of every partition 0..n-1 is
 * `want`. */
static int kobs_committed_all(kobs_t *o, int n, int64_t want)
{
    int ok = 1;
    pthread_mutex_lock(&o->mu);
    for (int p = 0; p < n; p++)
        ok &= o->committed[p] == want;
    pthread_mutex_unlock(&o->mu);
    return ok;
}

static int kobs_saw_err(kobs_t *o, rd_kafka_resp_err_t err)
{
    int saw = 0;
    pthread_mutex_lock(&o->mu);
    for (int i = 0; i < o->n_errs; i++)
        saw |= o->errs[i] == err;
    pthread_mutex_unlock(&o->mu);
    return saw;
}

/* Attach obs (if not NULL) to c, spawn the consumer (on any executor) as
 * pr->consumer and a probe sink subscribed to it; returns the sink. */
static rill_aid_t probe_start(probe_t *pr, rill_consumer_conf_t *c, kobs_t *obs)
{
    if (obs)
        kobs_attach(c, obs);
    pr->consumer = kk_consumer_spawn_ok(pr->sys, c, -1);
    return kk_sink_spawn_ok(pr->sys, probe_sink, pr, -1, pr->consumer);
}

/* ---- two group members: observers, probes ------------------------- */

static void members_init(kobs_t *o1, kobs_t *o2, probe_t *p1, probe_t *p2, rill_system_t *sys,
                         size_t n_seq)
{
    kobs_init(o1);
    kobs_init(o2);
    probe_init(p1, sys, n_seq);
    probe_init(p2, sys, n_seq);
}

/* Stop member 2's consumer, then member 1's, then both sinks. */
static void members_stop(probe_t *p1, probe_t *p2, rill_aid_t sink1, rill_aid_t sink2)
{
    kk_stop_wait(p2->sys, p2->consumer);
    kk_stop_wait(p1->sys, p1->consumer);
    kk_stop_wait(p1->sys, sink1);
    kk_stop_wait(p2->sys, sink2);
}

static void members_fini(kobs_t *o1, kobs_t *o2, probe_t *p1, probe_t *p2)
{
    probe_fini(p1);
    probe_fini(p2);
    kobs_fini(o1);
    kobs_fini(o2);
}

/* Every partition 0..parts-1's last successful commit, by whichever of the
 * two members owns it now, is `want`. */
static int owners_committed(kobs_t *a, kobs_t *b, int parts, int64_t want)
{
    int ok = 1;
    pthread_mutex_lock(&a->mu);
    pthread_mutex_lock(&b->mu);
    for (int p = 0; p < parts; p++) {
        kobs_t *owner = (a->assigned & (1u << p)) ? a : b;
        ok &= owner->committed[p] == want;
    }
    pthread_mutex_unlock(&b->mu);
    pthread_mutex_unlock(&a->mu);
    return ok;
}

/* ---- a watcher: an actor that monitors and logs DOWN -------------- */

static void monitor_fn(rill_ctx_t *ctx, void *arg)
{
    rill_monitor(ctx, *(rill_aid_t *)arg, NULL);
}

/* ------------------------------------------------------------------ */
/* At-least-once: random confirm order, commits never pass a gap       */
/* ------------------------------------------------------------------ */

#define ALO_PARTS    8
#define ALO_PER_PART 12500
#define ALO_TOTAL    (ALO_PARTS * ALO_PER_PART)
#define ALO_MAX_OUT  256 /* rill.max.unconfirmed */
#define ALO_POOL     (ALO_MAX_OUT + 64)

typedef struct alo {
    rill_system_t *sys;
    rill_aid_t consumer;
    kobs_t obs;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* records received and not confirmed yet: the confirmer picks them at
     * random */
    rill_elem_t pool[ALO_POOL];
    size_t n, n_max;
    long overflow; /* more out unconfirmed than rill.max.unconfirmed */
    int stop;
    int64_t last_arrival_ms;
    unsigned rng;
    /* confirmed[p][o]: the test confirmed offset o of partition p (marked
     * before the confirm is sent); low[p] = first offset not confirmed */
    uint8_t confirmed[ALO_PARTS][ALO_PER_PART];
    int64_t low[ALO_PARTS];
    long confirmed_total, confirm_errors;
    long checks, violations;
    char violation[256];
    uint32_t seen[ALO_TOTAL];
    long distinct, dups, foreign;
} alo_t;

static rill_err_t alo_sink(void *opaque, rill_elem_t *e)
{
    alo_t *a = opaque;
    const rd_kafka_message_t *m = rill_record(e);
    if (!m) {
        rill_elem_release(e);
        return RILL_EINVAL;
    }
    int64_t seq = msg_seq(m);
    int release_now = 0;
    pthread_mutex_lock(&a->mu);
    if (seq >= 0 && seq < ALO_TOTAL && m->partition == seq / ALO_PER_PART &&
        m->offset == seq % ALO_PER_PART) {
        if (a->seen[seq]++)
            a->dups++;
        else
            a->distinct++;
    } else {
        a->foreign++;
    }
    if (a->n < ALO_POOL) {
        a->pool[a->n++] = *e;
        if (a->n > a->n_max)
            a->n_max = a->n;
    } else {
        a->overflow++; /* cannot happen with max.unconfirmed respected */
        release_now = 1;
    }
    a->last_arrival_ms = kit_now_ms();
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
    if (release_now)
        rill_elem_release(e);
    return RILL_OK;
}

/* Confirms pooled records in random order, with random small pauses; waits
 * for a few records to choose from unless the stream went quiet. */
static void *alo_confirmer(void *arg)
{
    alo_t *a = arg;
    pthread_mutex_lock(&a->mu);
    for (;;) {
        while (!a->stop && (a->n == 0 || (a->n < 16 && kit_now_ms() - a->last_arrival_ms < 3)))
            kit_cond_wait_until(&a->cv, &a->mu, kit_now_ms() + 2);
        if (a->stop)
            break;
        size_t i = (size_t)rand_r(&a->rng) % a->n;
        rill_elem_t e = a->pool[i];
        a->pool[i] = a->pool[--a->n];
        const rd_kafka_message_t *m = rill_record(&e);
        int p = m->partition;
        int64_t o = m->offset;
        if (p >= 0 && p < ALO_PARTS && o >= 0 && o < ALO_PER_PART && !a->confirmed[p][o]) {
            a->confirmed[p][o] = 1;
            a->confirmed_total++;
            while (a->low[p] < ALO_PER_PART && a->confirmed[p][a->low[p]])
                a->low[p]++;
        }
        long pause_us = rand_r(&a->rng) % 16 == 0 ? rand_r(&a->rng) % 200 : 0;
        pthread_mutex_unlock(&a->mu);
        rill_elem_confirm(&e);
        if (pause_us)
            kk_nap_us(pause_us);
        pthread_mutex_lock(&a->mu);
    }
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

/* Every commit: each committed offset o has all offsets below o confirmed. */
static void alo_commit(void *opaque, rd_kafka_resp_err_t err,
                       const rd_kafka_topic_partition_list_t *offsets)
{
    alo_t *a = opaque;
    kobs_commit(&a->obs, err, offsets);
    pthread_mutex_lock(&a->mu);
    for (int i = 0; i < offsets->cnt; i++) {
        const rd_kafka_topic_partition_t *tp = &offsets->elems[i];
        a->checks++;
        int bad = tp->partition < 0 || tp->partition >= ALO_PARTS || tp->offset < 0 ||
                  tp->offset > a->low[tp->partition];
        if (bad && !a->violations++)
            snprintf(a->violation, sizeof(a->violation),
                     "committed %" PRId64 " on [%d] while offset %" PRId64
                     " was not confirmed (commit error %s)",
                     tp->offset, tp->partition,
                     tp->partition >= 0 && tp->partition < ALO_PARTS ? a->low[tp->partition] : -1,
                     rd_kafka_err2str(err ? err : tp->err));
    }
    pthread_mutex_unlock(&a->mu);
}

static long alo_get(alo_t *a, const long *field)
{
    return locked_long(&a->mu, field);
}

Test(kafka_consumer, at_least_once_random_confirm_order, .timeout = 120)
{
    kk_env_t env;
    kk_env_init(&env);
    kk_load_topic(&env, "alo", ALO_PARTS, ALO_PER_PART, 100);

    alo_t *a = calloc(1, sizeof(*a));
    cr_assert_not_null(a);
    a->sys = env.sys;
    a->rng = 12345;
    kobs_init(&a->obs);
    pthread_mutex_init(&a->mu, NULL);
    kit_cond_init(&a->cv);

    const char *kv[] = {"rill.max.unconfirmed", "256", "rill.commit.interval.ms", "200", NULL};
    rill_consumer_conf_t *c = kk_conf_new(env.boot, "alo-group", kv);
    kk_conf_assign_all(c, "alo", ALO_PARTS, RILL_OFFSET_BEGINNING);
    rill_consumer_conf_set_commit_cb(c, alo_commit, a);
    a->consumer = kk_consumer_spawn_ok(env.sys, c, -1);
    pthread_t confirmer;
    cr_assert_eq(pthread_create(&confirmer, NULL, alo_confirmer, a), 0);
    int64_t t0 = kit_now_ms();
    rill_aid_t sink = kk_sink_spawn_ok(env.sys, alo_sink, a, -1, a->consumer);

    int ok;
    KK_WAIT_UNTIL(ok, 90000, alo_get(a, &a->confirmed_total) == ALO_TOTAL);
    cr_assert(ok, "%ld of %d records confirmed (%ld distinct delivered)",
              alo_get(a, &a->confirmed_total), ALO_TOTAL, alo_get(a, &a->distinct));
    int64_t t1 = kit_now_ms();
    /* The asynchronous commits catch up with the last confirms. */
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, kobs_committed_all(&a->obs, ALO_PARTS, ALO_PER_PART));
    cr_assert(ok, "the commits did not reach the end offsets");
    rill_consumer_stats_t s = kk_consumer_stats_ok(env.sys, a->consumer);

    kk_stop_wait(env.sys, a->consumer);
    kk_stop_wait(env.sys, sink);
    pthread_mutex_lock(&a->mu);
    a->stop = 1;
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
    pthread_join(confirmer, NULL);

    fprintf(stderr,
            "at-least-once: %d records in %lld ms, %ld commit checks, %ld commits, max %zu "
            "out unconfirmed\n",
            ALO_TOTAL, (long long)(t1 - t0), a->checks, a->obs.commits, a->n_max);
    cr_assert_eq(a->violations, 0, "%ld violations, the first: %s", a->violations, a->violation);
    cr_assert_gt(a->checks, ALO_PARTS, "too few commits to check anything");
    cr_assert_eq(a->distinct, ALO_TOTAL);
    cr_assert_eq(a->foreign, 0, "%ld records that are not the topic's", a->foreign);
    cr_expect_eq(a->dups, 0, "%ld duplicates without any failure", a->dups);
    cr_assert_eq(a->overflow, 0);
    cr_assert_leq(a->n_max, ALO_MAX_OUT, "%zu records out unconfirmed, max %d", a->n_max,
                  ALO_MAX_OUT);
    cr_assert_eq(a->confirm_errors, 0);
    cr_assert_eq(s.confirmed, (uint64_t)ALO_TOTAL);
    cr_assert_eq(s.emitted, (uint64_t)ALO_TOTAL);
    cr_assert_eq(s.fenced, 0);
    cr_assert_eq(s.commit_errors, 0);
    cr_assert_gt(s.committed, 0);
    cr_assert_eq(s.unconfirmed, 0);

    kk_assert_committed(env.boot, "alo-group", "alo", ALO_PARTS, ALO_PER_PART);

    for (size_t i = 0; i < a->n; i++)
        rill_elem_release(&a->pool[i]);
    kk_env_fini(&env);
    pthread_cond_destroy(&a->cv);
    pthread_mutex_destroy(&a->mu);
    kobs_fini(&a->obs);
    free(a);
}

/* ------------------------------------------------------------------ */
/* Crash: the processor fails, the supervisor restarts both            */
/* ------------------------------------------------------------------ */

#define CR_PARTS    4
#define CR_PER_PART 5000
#define CR_TOTAL    (CR_PARTS * CR_PER_PART)
#define CR_FAIL_AT  6000 /* the first processor fails on its 6000th record */
#define CR_GENS     8

typedef struct crash crash_t;

typedef struct cr_proc {
    crash_t *t;
    int gen;
    rill_system_t *sys;
    rill_aid_t consumer;
    long processed;
} cr_proc_t;

struct crash {
    const char *boot;
    pthread_mutex_t mu;
    int gens; /* processors started */
    cr_proc_t procs[CR_GENS];
    int64_t first[CR_GENS][CR_PARTS];          /* first offset each processor saw */
    int64_t last_confirmed[CR_GENS][CR_PARTS]; /* last offset each one confirmed */
    int failed;
    int64_t failed_seq, failed_offset;
    int failed_part;
    int64_t committed_at_fail[CR_PARTS]; /* what was committed when it failed */
    long spawn_errors;
    kobs_t obs;              /* commits of every consumer incarnation */
    uint32_t seen[CR_TOTAL]; /* processed (and confirmed) per seq */
    long distinct;
};

static rill_err_t cr_process(void *opaque, rill_elem_t *e)
{
    cr_proc_t *pr = opaque;
    crash_t *t = pr->t;
    const rd_kafka_message_t *m = rill_record(e);
    if (!m || m->partition < 0 || m->partition >= CR_PARTS) {
        rill_elem_release(e);
        return RILL_EINVAL;
    }
    int p = m->partition;
    int64_t seq = msg_seq(m);
    pthread_mutex_lock(&t->mu);
    if (t->first[pr->gen][p] < 0)
        t->first[pr->gen][p] = m->offset;
    if (++pr->processed == CR_FAIL_AT && pr->gen == 1) {
        /* A processing failure: this record is not confirmed. */
        t->failed = 1;
        t->failed_seq = seq;
        t->failed_part = p;
        t->failed_offset = m->offset;
        pthread_mutex_lock(&t->obs.mu);
        for (int q = 0; q < CR_PARTS; q++)
            t->committed_at_fail[q] = t->obs.committed[q];
        pthread_mutex_unlock(&t->obs.mu);
        pthread_mutex_unlock(&t->mu);
        rill_elem_release(e);
        return RILL_EIO;
    }
    if (seq >= 0 && seq < CR_TOTAL && !t->seen[seq]++)
        t->distinct++;
    t->last_confirmed[pr->gen][p] = m->offset;
    pthread_mutex_unlock(&t->mu);
    rill_elem_confirm(e);
    return RILL_OK;
}

static rill_err_t cr_spawn_consumer(rill_system_t *sys, void *arg, const rill_child_env_t *env,
                                    rill_aid_t *aid, char *errstr, size_t errstr_size)
{
    crash_t *t = arg;
    char err[512] = "";
    rill_consumer_conf_t *c = rill_consumer_conf_new();
    const char *topics[] = {"crash"};
    if (rill_consumer_conf_set(c, "bootstrap.servers", t->boot, err, sizeof(err)) ||
        rill_consumer_conf_set(c, "group.id", "crash-group", err, sizeof(err)) ||
        rill_consumer_conf_set(c, "session.timeout.ms", "3000", err, sizeof(err)) ||
        rill_consumer_conf_set(c, "heartbeat.interval.ms", "500", err, sizeof(err)) ||
        rill_consumer_conf_set(c, "auto.offset.reset", "earliest", err, sizeof(err)) ||
        rill_consumer_conf_set(c, "rill.commit.interval.ms", "100", err, sizeof(err)) ||
        rill_consumer_conf_subscribe(c, topics, 1, err, sizeof(err))) {
        rill_consumer_conf_destroy(c);
        return RILL_EINVAL;
    }
    kobs_attach(c, &t->obs);
    rill_stage_opts_t o = {.name = env->name, .link_to = env->supervisor};
    rill_err_t e = rill_consumer_spawn(sys, c, &o, aid, err, sizeof(err));
    if (e) {
        pthread_mutex_lock(&t->mu);
        t->spawn_errors++;
        pthread_mutex_unlock(&t->mu);
    }
    return e;
}

static rill_err_t cr_spawn_processor(rill_system_t *sys, void *arg, const rill_child_env_t *env,
                                     rill_aid_t *aid, char *errstr, size_t errstr_size)
{
    crash_t *t = arg;
    pthread_mutex_lock(&t->mu);
    int gen = t->gens + 1;
    if (gen >= CR_GENS) {
        pthread_mutex_unlock(&t->mu);
        return RILL_ENOMEM;
    }
    t->gens = gen;
    cr_proc_t *pr = &t->procs[gen];
    pr->t = t;
    pr->gen = gen;
    pr->sys = sys;
    pr->consumer = rill_lookup(sys, "consumer"); /* started just before */
    pthread_mutex_unlock(&t->mu);
    rill_stage_opts_t o = {.name = env->name, .link_to = env->supervisor};
    rill_err_t err =
        rill_stage_spawn(sys, rill_sink_foreach(cr_process, pr), &o, aid, errstr, errstr_size);
    if (err)
        return err;
    return rill_stage_connect(sys, pr->consumer, *aid, NULL, 0);
}

static long cr_distinct(crash_t *t)
{
    return locked_long(&t->mu, &t->distinct);
}

Test(kafka_consumer, crash_redelivers_after_last_confirm, .timeout = 120)
{
    kk_env_t env;
    kk_env_init(&env);
    kk_load_topic(&env, "crash", CR_PARTS, CR_PER_PART, 100);

    crash_t *t = calloc(1, sizeof(*t));
    cr_assert_not_null(t);
    t->boot = env.boot;
    pthread_mutex_init(&t->mu, NULL);
    kobs_init(&t->obs);
    for (int g = 0; g < CR_GENS; g++)
        for (int p = 0; p < CR_PARTS; p++)
            t->first[g][p] = t->last_confirmed[g][p] = -1;

    rill_child_spec_t children[] = {
        {.id = "consumer", .spawn = cr_spawn_consumer, .arg = t, .register_name = 1},
        {.id = "processor", .spawn = cr_spawn_processor, .arg = t, .register_name = 1},
    };
    rill_sup_spec_t spec; /* the supervisor reads it while it runs */
    rill_aid_t sup = kk_sup_start_ok(env.sys, &spec, children, 2, 5, "crash-sup");

    int ok;
    KK_WAIT_UNTIL(ok, 90000, cr_distinct(t) == CR_TOTAL);
    cr_assert(ok, "%ld of %d records processed", cr_distinct(t), CR_TOTAL);

    /* The new consumer's commits catch up with the processor's confirms
     * (the stop's own commit is tested on its own below). Kafka's
     * committed offsets are the reference: an asynchronous commit sent
     * just before the old consumer stopped is never reported to its
     * commit callback. */
    KK_WAIT_UNTIL(ok, KK_WAIT_MS,
                  committed_all(env.boot, "crash-group", "crash", CR_PARTS, CR_PER_PART));
    cr_assert(ok, "the commits did not reach the end");
    rill_child_info_t info[2];
    size_t n = 0;
    cr_assert_eq(rill_sup_children(env.sys, sup, info, 2, &n), RILL_OK);
    uint32_t restarts = info[0].restarts + info[1].restarts;
    cr_assert_eq(rill_sup_stop(env.sys, sup, 30000), RILL_OK);

    pthread_mutex_lock(&t->mu);
    fprintf(stderr,
            "crash: failed at seq %" PRId64 " ([%d] offset %" PRId64 "), %d processors, "
            "%u restarts; first offsets after the restart %" PRId64 " %" PRId64 " %" PRId64
            " %" PRId64 ", last confirmed before %" PRId64 " %" PRId64 " %" PRId64 " %" PRId64 "\n",
            t->failed_seq, t->failed_part, t->failed_offset, t->gens, restarts, t->first[2][0],
            t->first[2][1], t->first[2][2], t->first[2][3], t->last_confirmed[1][0],
            t->last_confirmed[1][1], t->last_confirmed[1][2], t->last_confirmed[1][3]);
    long again = 0;
    for (int i = 0; i < CR_TOTAL; i++)
        again += t->seen[i] > 1;
    fprintf(stderr, "crash: %ld records confirmed before the crash were processed again\n", again);
    cr_assert(t->failed, "the processor never failed");
    cr_assert_geq(t->gens, 2, "the processor was not restarted");
    cr_assert_geq(restarts, 1);
    cr_assert_eq(t->spawn_errors, 0);
    /* The record that failed came again, from the new processor. */
    cr_assert_geq(t->failed_seq, 0);
    cr_assert_geq(t->seen[t->failed_seq], 1);
    /* Each partition resumed at or before the record after the last one
     * confirmed before the crash: nothing in between was skipped. */
    for (int p = 0; p < CR_PARTS; p++) {
        if (t->last_confirmed[1][p] == CR_PER_PART - 1)
            continue; /* done before the crash */
        int64_t first = -1;
        for (int g = 2; g <= t->gens && first < 0; g++)
            first = t->first[g][p];
        cr_assert_geq(first, 0, "[%d] never delivered after the restart", p);
        cr_assert_leq(first, t->last_confirmed[1][p] + 1,
                      "[%d] resumed at %" PRId64 ", but %" PRId64 " was the last confirmed", p,
                      first, t->last_confirmed[1][p]);
        /* ... and exactly there: the old consumer's final commit (it
         * stops after the processor, one_for_all, and drains the confirms
         * the stop overtook) covers every confirm, so re-reading from
         * further back (from the start, or from an older commit) fails. */
        cr_assert_eq(first, t->last_confirmed[1][p] + 1,
                     "[%d] resumed at %" PRId64 ", not after %" PRId64 ", the last confirmed "
                     "(committed when it failed: %" PRId64 ")",
                     p, first, t->last_confirmed[1][p], t->committed_at_fail[p]);
    }
    cr_assert_eq(again, 0, "%ld confirmed records processed again", again);
    cr_assert_leq(t->first[2][t->failed_part], t->failed_offset);
    /* None lost. */
    for (int i = 0; i < CR_TOTAL; i++)
        cr_assert_geq(t->seen[i], 1, "seq %d never processed", i);
    pthread_mutex_unlock(&t->mu);

    kk_assert_committed(env.boot, "crash-group", "crash", CR_PARTS, CR_PER_PART);

    kk_env_fini(&env);
    kobs_fini(&t->obs);
    pthread_mutex_destroy(&t->mu);
    free(t);
}

/* ------------------------------------------------------------------ */
/* Restart: a new member resumes at the last committed offset          */
/* ------------------------------------------------------------------ */

#define RS_PARTS    2
#define RS_PER_PART 4000
#define RS_CONFIRM  1500 /* the first member confirms offsets below this */

Test(kafka_consumer, restarted_member_resumes_at_committed_offset, .timeout = 120)
{
    kk_env_t env;
    kk_env_init(&env);
    kk_load_topic(&env, "restart", RS_PARTS, RS_PER_PART, 100);

    /* Member A: confirms the head of each partition, holds the tail. */
    kobs_t obs_a;
    kobs_init(&obs_a);
    probe_t pa;
    probe_init(&pa, env.sys, RS_PARTS * RS_PER_PART);
    pa.hold = 1;
    pa.hold_from = RS_CONFIRM;
    rill_consumer_conf_t *c = kk_conf_new(env.boot, "restart-group", group_member_kv);
    kk_conf_subscribe1(c, "restart");
    rill_aid_t sink_a = probe_start(&pa, c, &obs_a);

    int ok;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, kobs_committed_all(&obs_a, RS_PARTS, RS_CONFIRM));
    cr_assert(ok, "member A did not commit %d on every partition", RS_CONFIRM);
    /* Mid-stream: A has records past the commit that it never confirmed. */
    KK_WAIT_UNTIL(ok, KK_WAIT_MS,
                  probe_per_part(&pa, 0) > RS_CONFIRM + 100 &&
                      probe_per_part(&pa, 1) > RS_CONFIRM + 100);
    cr_assert(ok, "member A did not get past the confirmed head");
    kk_stop_wait(env.sys, pa.consumer);
    kk_stop_wait(env.sys, sink_a);
    cr_assert_eq(pa.confirm_errors, 0);
    probe_flush(&pa, 0, ~0u); /* the tail goes unconfirmed */

    int64_t committed[RS_PARTS];
    kk_committed_offsets(env.boot, "restart-group", "restart", RS_PARTS, committed);
    for (int p = 0; p < RS_PARTS; p++)
        cr_assert_eq(committed[p], RS_CONFIRM, "[%d] committed %" PRId64 ", confirmed below %d", p,
                     committed[p], RS_CONFIRM);

    /* Member B, same group: starts where A's commits say. */
    int64_t t0 = kit_now_ms();
    kobs_t obs_b;
    kobs_init(&obs_b);
    probe_t pb;
    probe_init(&pb, env.sys, RS_PARTS * RS_PER_PART);
    c = kk_conf_new(env.boot, "restart-group", group_member_kv);
    kk_conf_subscribe1(c, "restart");
    rill_aid_t sink_b = probe_start(&pb, c, &obs_b);
    long tail = RS_PARTS * (RS_PER_PART - RS_CONFIRM);
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, probe_distinct(&pb) == tail);
    cr_assert(ok, "member B saw %ld of the %ld records after the commit", probe_distinct(&pb),
              tail);
    fprintf(stderr, "restart: the new member had the tail after %lld ms\n",
            (long long)(kit_now_ms() - t0));
    for (int p = 0; p < RS_PARTS; p++)
        cr_assert_eq(probe_first(&pb, p), committed[p],
                     "[%d] B's first record is at %" PRId64 ", committed %" PRId64, p,
                     probe_first(&pb, p), committed[p]);
    cr_assert_eq(pb.foreign, 0);
    cr_assert_eq(pb.dups, 0);
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, kobs_committed_all(&obs_b, RS_PARTS, RS_PER_PART));
    cr_assert(ok, "member B did not commit the end");
    kk_stop_wait(env.sys, pb.consumer);
    kk_stop_wait(env.sys, sink_b);
    cr_assert_eq(pb.confirm_errors, 0);

    probe_fini(&pa);
    probe_fini(&pb);
    kk_env_fini(&env);
    kobs_fini(&obs_a);
    kobs_fini(&obs_b);
}

/* ------------------------------------------------------------------ */
/* Stop: the final commit covers every confirm sent before the stop    */
/* ------------------------------------------------------------------ */

#define SC_PARTS    2
#define SC_PER_PART 2000

/* An actor that holds its executor until the gate opens: the consumer on
 * the same executor is busy while confirms and the stop arrive. */
static rill_err_t blocker_behavior(rill_ctx_t *ctx, void *state, rill_msg_t *msg)
{
    (void)ctx;
    (void)msg;
    kit_gate_pass(state, KIT_WAIT_MS);
    return RILL_OK;
}

/* Holds executor `exec` with a blocker actor until `gate` (initialised
 * here) opens; returns once the blocker is in its turn. */
static rill_aid_t hold_executor(rill_system_t *sys, int exec, kit_gate_t *gate)
{
    kit_gate_init(gate);
    rill_spawn_opts_t bo = {
        .behavior = blocker_behavior, .state = gate, .executor = RILL_EXECUTOR(exec)};
    rill_aid_t blocker;
    cr_assert_eq(rill_spawn(sys, &bo, &blocker), RILL_OK);
    rill_msg_t m = {.type = KIT_MSG_APP};
    cr_assert_eq(rill_tell(sys, blocker, &m), RILL_OK);
    cr_assert(kit_wait_at_least(&gate->arrived, 1, KIT_WAIT_MS));
    return blocker;
}

/* A consumer that has caught up (everything it emitted confirmed) commits
 * within a hundredth of rill.commit.interval.ms, not at the interval: here
 * 100 s, so only the idle commit (1 s after the last commit) passes within
 * 5 s (until 2026-12-06 it waited a tenth: 10 s). A second burst, after an
 * idle pause, is committed the same way. */
Test(kafka_consumer, a_caught_up_consumer_commits_without_waiting_for_its_interval, .timeout = 60)
{
    kk_env_t env;
    kk_env_init(&env);
    kk_load_topic(&env, "idlec", SC_PARTS, SC_PER_PART, 100);
    kobs_t obs;
    kobs_init(&obs);
    probe_t pr;
    probe_init(&pr, env.sys, 2 * SC_PARTS * SC_PER_PART);
    const char *kv[] = {"rill.commit.interval.ms", "100000", "rill.commit.count", "10000000", NULL};
    rill_consumer_conf_t *c = kk_conf_new(env.boot, "idlec-group", kv);
    kk_conf_assign_all(c, "idlec", SC_PARTS, RILL_OFFSET_BEGINNING);
    rill_aid_t sink = probe_start(&pr, c, &obs);
    int64_t t0 = kit_now_ms();
    int ok;
    KK_WAIT_UNTIL(ok, 5000, kobs_committed_all(&obs, SC_PARTS, SC_PER_PART));
    cr_assert(ok, "not committed within 5 s (%ld records received, %ld commit events)",
              probe_received(&pr), locked_long(&obs.mu, &obs.commits));
    int64_t first = kit_now_ms() - t0;
    /* A second burst, with the consumer idle in between. */
    kk_produce_parts(env.boot, "idlec", SC_PARTS, SC_PER_PART, SC_PARTS * SC_PER_PART, 100);
    t0 = kit_now_ms();
    KK_WAIT_UNTIL(ok, 5000, kobs_committed_all(&obs, SC_PARTS, 2 * SC_PER_PART));
    cr_assert(ok, "the second burst not committed within 5 s (%ld records received)",
              probe_received(&pr));
    fprintf(stderr,
            "idle commit: first burst committed after %" PRId64 " ms, second after %" PRId64
            " ms\n",
            first, kit_now_ms() - t0);
    rill_consumer_stats_t s = kk_consumer_stats_ok(env.sys, pr.consumer);
    cr_assert_eq(s.unconfirmed, 0);
    kk_stop_wait(env.sys, pr.consumer);
    kk_stop_wait(env.sys, sink);
    probe_fini(&pr);
    kk_env_fini(&env);
    kobs_fini(&obs);
}

Test(kafka_consumer, stop_commits_every_confirm_sent_before_it, .timeout = 60)
{
    kk_env_t env;
    kk_env_init(&env);
    kk_load_topic(&env, "stopc", SC_PARTS, SC_PER_PART, 100);

    kobs_t obs;
    kobs_init(&obs);
    probe_t pr;
    probe_init(&pr, env.sys, SC_PARTS * SC_PER_PART);
    pr.hold = 1;
    /* No periodic or count commits: only the stop commits. */
    const char *kv[] = {"rill.commit.interval.ms", "600000", "rill.commit.count", "10000000", NULL};
    rill_consumer_conf_t *c = kk_conf_new(env.boot, "stopc-group", kv);
    kk_conf_assign_all(c, "stopc", SC_PARTS, RILL_OFFSET_BEGINNING);
    kobs_attach(c, &obs);
    pr.consumer = kk_consumer_spawn_ok(env.sys, c, 0);
    rill_aid_t sink = kk_sink_spawn_ok(env.sys, probe_sink, &pr, 1, pr.consumer);
    int ok;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, probe_received(&pr) == SC_PARTS * SC_PER_PART);
    cr_assert(ok, "%ld records", probe_received(&pr));
    rill_consumer_stats_t s = kk_consumer_stats_ok(env.sys, pr.consumer);
    cr_assert_eq(s.unconfirmed, SC_PARTS * SC_PER_PART);

    /* The consumer's executor is busy for a moment (another actor's long
     * turn): every record is confirmed, each confirm accepted, then the
     * consumer is stopped. */
    kit_gate_t gate;
    rill_aid_t blocker = hold_executor(env.sys, 0, &gate);
    size_t n = probe_flush(&pr, 1, ~0u);
    cr_assert_eq(n, SC_PARTS * SC_PER_PART);
    cr_assert_eq(pr.confirm_errors, 0);
    cr_assert_eq(rill_stop(env.sys, pr.consumer), RILL_OK);
    kit_gate_open(&gate);
    cr_assert(kit_wait_dead(env.sys, pr.consumer, KK_WAIT_MS));
    kk_stop_wait(env.sys, sink);
    kk_stop_wait(env.sys, blocker);
    kit_gate_destroy(&gate);

    int64_t committed[SC_PARTS];
    kk_committed_offsets(env.boot, "stopc-group", "stopc", SC_PARTS, committed);
    fprintf(stderr, "stop: committed %" PRId64 " and %" PRId64 " of %d, %ld commit events\n",
            committed[0], committed[1], SC_PER_PART, obs.commits);
    for (int p = 0; p < SC_PARTS; p++)
        cr_expect_eq(committed[p], SC_PER_PART,
                     "[%d] the stop committed %" PRId64 ", every record up to %d was confirmed "
                     "before it",
                     p, committed[p], SC_PER_PART);

    probe_fini(&pr);
    kk_env_fini(&env);
    kobs_fini(&obs);
}

/* ------------------------------------------------------------------ */
/* Rebalance: drain, commit, release; fenced confirms                  */
/* ------------------------------------------------------------------ */

#define RB_PARTS    4
#define RB_PER_PART 1000
#define RB_HEAD     100 /* member 1 confirms offsets below this at once */

Test(kafka_consumer, rebalance_releases_after_drain_and_fences_late_confirms, .timeout = 120)
{
    kk_env_t env;
    kk_env_init(&env);
    kk_load_topic(&env, "rb", RB_PARTS, RB_PER_PART, 100);
    const size_t total = RB_PARTS * RB_PER_PART;
    /* Incremental (rill's default from librdkafka 2.3.0, range below):
     * member 1 keeps what it is not asked to give up. */
    const char *kv[] = {"session.timeout.ms",
                        "3000",
                        "heartbeat.interval.ms",
                        "500",
                        "auto.offset.reset",
                        "earliest",
                        "rill.commit.interval.ms",
                        "100",
                        "rill.drain.timeout.ms",
                        "200",
                        "partition.assignment.strategy",
                        "cooperative-sticky",
                        NULL};

    /* Member 1: slow work, everything past the head stays in flight. */
    kobs_t o1, o2;
    probe_t p1, p2;
    members_init(&o1, &o2, &p1, &p2, env.sys, total);
    p1.hold = 1;
    p1.hold_from = RB_HEAD;
    rill_consumer_conf_t *c = kk_conf_new(env.boot, "rb-group", kv);
    kk_conf_subscribe1(c, "rb");
    rill_aid_t sink1 = probe_start(&p1, c, &o1);
    int ok;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS,
                  kobs_assigned(&o1) == 0xFu && kobs_committed_all(&o1, RB_PARTS, RB_HEAD));
    cr_assert(ok, "member 1 did not get every partition and commit its head (assigned %#x)",
              kobs_assigned(&o1));

    /* Member 2 joins. */
    int64_t t0 = kit_now_ms();
    c = kk_conf_new(env.boot, "rb-group", kv);
    kk_conf_subscribe1(c, "rb");
    rill_aid_t sink2 = probe_start(&p2, c, &o2);
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, kobs_revoked(&o1) != 0);
    cr_assert(ok, "member 1 gave up no partition");
    uint32_t revoked = kobs_revoked(&o1);
    fprintf(stderr, "rebalance: member 1 released %#x after %lld ms\n", revoked,
            (long long)(kit_now_ms() - t0));
    KK_WAIT_UNTIL(ok, KK_WAIT_MS,
                  kobs_assigned(&o2) != 0 && (kobs_assigned(&o1) | kobs_assigned(&o2)) == 0xFu);
    cr_assert(ok, "the partitions were not shared: member 1 %#x, member 2 %#x", kobs_assigned(&o1),
              kobs_assigned(&o2));
    cr_assert_eq(kobs_assigned(&o1) & kobs_assigned(&o2), 0);
    fprintf(stderr, "rebalance: member 1 %#x, member 2 %#x after %lld ms\n", kobs_assigned(&o1),
            kobs_assigned(&o2), (long long)(kit_now_ms() - t0));

    /* Member 1's work on the released partitions finishes now, past the
     * drain deadline: those confirms are fenced. */
    size_t late = probe_flush(&p1, 1, revoked);
    cr_assert_gt(late, 0, "member 1 held nothing of the released partitions");
    rill_consumer_stats_t s1;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, (s1 = kk_consumer_stats_ok(env.sys, p1.consumer)).fenced >= late);
    cr_assert(ok, "%llu of %zu late confirms fenced", (unsigned long long)s1.fenced, late);
    cr_assert_eq(s1.fenced, late, "%llu fenced, %zu late confirms", (unsigned long long)s1.fenced,
                 late);

    /* Member 1 catches up with the partitions it kept. */
    pthread_mutex_lock(&p1.mu);
    p1.hold = 0;
    pthread_mutex_unlock(&p1.mu);
    probe_flush(&p1, 1, ~0u);

    KK_WAIT_UNTIL(ok, KK_WAIT_MS, union_missing(&p1, &p2, total) == 0);
    cr_assert(ok, "%ld records seen by neither member", union_missing(&p1, &p2, total));
    /* Member 2 starts the released partitions at member 1's commit. */
    for (int p = 0; p < RB_PARTS; p++) {
        if (!(revoked & (1u << p)))
            continue;
        KK_WAIT_UNTIL(ok, KK_WAIT_MS, probe_per_part(&p2, p) >= RB_PER_PART - RB_HEAD);
        cr_assert(ok, "[%d] member 2 got %ld records", p, probe_per_part(&p2, p));
        cr_assert_eq(probe_first(&p2, p), RB_HEAD, "[%d] member 2 started at %" PRId64, p,
                     probe_first(&p2, p));
    }
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, kk_consumer_stats_ok(env.sys, p1.consumer).unconfirmed == 0);
    cr_assert(ok);

    pthread_mutex_lock(&o1.mu);
    cr_assert_eq(o1.late_commits, 0, "%ld late commits: %s", o1.late_commits, o1.late);
    pthread_mutex_unlock(&o1.mu);
    cr_assert_eq(p1.confirm_errors, 0);
    cr_assert_eq(p2.confirm_errors, 0);

    /* Everything confirmed is committed by its owner. */
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, owners_committed(&o1, &o2, RB_PARTS, RB_PER_PART));
    cr_assert(ok, "the owners' commits did not reach the end");
    members_stop(&p1, &p2, sink1, sink2);
    pthread_mutex_lock(&o1.mu);
    cr_assert_eq(o1.late_commits, 0, "%ld late commits: %s", o1.late_commits, o1.late);
    pthread_mutex_unlock(&o1.mu);
    int64_t committed[RB_PARTS];
    kk_committed_offsets(env.boot, "rb-group", "rb", RB_PARTS, committed);
    for (int p = 0; p < RB_PARTS; p++)
        cr_expect_eq(committed[p], RB_PER_PART, "[%d] committed %" PRId64, p, committed[p]);

    kk_env_fini(&env);
    members_fini(&o1, &o2, &p1, &p2);
}

/* ------------------------------------------------------------------ */
/* Injected faults: commit errors and a broker outage                  */
/* ------------------------------------------------------------------ */

#define FT_PARTS    4
#define FT_PER_PART 5000
#define FT_TOTAL    (FT_PARTS * FT_PER_PART)

Test(kafka_consumer, commit_errors_and_broker_outage_lose_nothing, .timeout = 120)
{
    kk_env_t env;
    kk_env_init(&env);
    kk_load_topic(&env, "faults", FT_PARTS, FT_PER_PART, 100);

    int16_t oc = rill_api_key_from_name("OffsetCommit");
    cr_assert_geq(oc, 0);
    cr_assert_eq(
        rill_broker_push_request_errors(env.broker, oc, 2, RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID),
        RILL_OK);
    cr_assert_eq(
        rill_broker_push_request_errors(env.broker, oc, 2, RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS),
        RILL_OK);
    cr_assert_eq(
        rill_broker_push_request_errors(env.broker, oc, 2, RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION),
        RILL_OK);

    kobs_t obs;
    kobs_init(&obs);
    probe_t pr;
    probe_init(&pr, env.sys, FT_TOTAL);
    pr.work_us = 100; /* slow enough for the outage to fall mid-stream */
    const char *kv[] = {"rill.commit.interval.ms",
                        "100",
                        "rill.commit.count",
                        "500",
                        "reconnect.backoff.ms",
                        "50",
                        "reconnect.backoff.max.ms",
                        "500",
                        NULL};
    rill_consumer_conf_t *c = kk_conf_new(env.boot, "faults-group", kv);
    kk_conf_assign_all(c, "faults", FT_PARTS, RILL_OFFSET_BEGINNING);
    rill_aid_t sink = probe_start(&pr, c, &obs);

    int ok;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, probe_received(&pr) >= FT_TOTAL / 4);
    cr_assert(ok, "consumption did not start");
    /* The six injected commit errors have been answered by now (a commit
     * every 500 confirms or 100 ms). */
    KK_WAIT_UNTIL(ok, KK_WAIT_MS,
                  kobs_saw_err(&obs, RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID) &&
                      kobs_saw_err(&obs, RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS) &&
                      kobs_saw_err(&obs, RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION));
    cr_assert(ok, "the injected commit errors were not all reported to the commit callback");

    /* The broker goes away for a while, mid-stream. */
    long before = probe_received(&pr);
    cr_assert_lt(before, FT_TOTAL, "everything was consumed before the outage");
    cr_assert_eq(rill_broker_set_down(env.broker, RILL_BROKER_ALL), RILL_OK);
    kk_nap_us(1500 * 1000); /* the outage itself: elapsed time is the premise */
    long during = probe_received(&pr);
    cr_assert_eq(rill_broker_set_up(env.broker, RILL_BROKER_ALL), RILL_OK);
    int64_t t_up = kit_now_ms();
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, probe_received(&pr) > during + 100);
    cr_assert(ok, "consumption did not resume after the broker came back");
    fprintf(stderr,
            "faults: %ld records before the outage, %ld at its end, resumed %lld ms after "
            "it\n",
            before, during, (long long)(kit_now_ms() - t_up));

    KK_WAIT_UNTIL(ok, 60000, probe_distinct(&pr) == FT_TOTAL);
    cr_assert(ok, "%ld of %d records delivered", probe_distinct(&pr), FT_TOTAL);
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, kobs_committed_all(&obs, FT_PARTS, FT_PER_PART));
    cr_assert(ok, "the final commit is incomplete");
    rill_consumer_stats_t s = kk_consumer_stats_ok(env.sys, pr.consumer);
    fprintf(stderr, "faults: %llu commits, %llu commit errors, %ld duplicates\n",
            (unsigned long long)s.committed, (unsigned long long)s.commit_errors, pr.dups);
    /* Six injected, each the answer to one OffsetCommit request. */
    cr_assert_geq(s.commit_errors, 6, "%llu commit errors counted",
                  (unsigned long long)s.commit_errors);
    cr_assert_eq(s.fenced, 0);
    cr_assert_eq(pr.foreign, 0);
    cr_assert_eq(pr.confirm_errors, 0);
    kk_stop_wait(env.sys, pr.consumer);
    kk_stop_wait(env.sys, sink);

    kk_assert_committed(env.boot, "faults-group", "faults", FT_PARTS, FT_PER_PART);

    probe_fini(&pr);
    kk_env_fini(&env);
    kobs_fini(&obs);
}

/* ------------------------------------------------------------------ */
/* Backpressure: pause at the high watermark, flat memory              */
/* ------------------------------------------------------------------ */

#define BP_PARTS    4
/* 400,000 records waiting: ~94 MiB if buffered, against a fixed 10-16 MiB
 * that the consumer holds whatever the backlog (librdkafka's fetch buffers
 * and per-record overhead, rill's buffer, the mailbox). With half of that
 * the fixed part came close to the bound below in builds without ASan. */
#define BP_PER_PART 100000
#define BP_TOTAL    (BP_PARTS * BP_PER_PART)
#define BP_VALUE    40
#define BP_HIGH     1000

typedef struct bp {
    rill_system_t *sys;
    rill_aid_t consumer;
    long nap_us; /* what the sink takes per record */
    atomic_long processed;
} bp_t;

/* One record per nap_us. */
static rill_err_t bp_sink(void *opaque, rill_elem_t *e)
{
    bp_t *b = opaque;
    kk_nap_us(b->nap_us);
    rill_elem_confirm(e);
    atomic_fetch_add_explicit(&b->processed, 1, memory_order_relaxed);
    return RILL_OK;
}

/* A consumer of `parts` partitions of `topic` from their start, on
 * executor 0, for bp_sink to take one record per nap_us. */
static void bp_consumer_start(bp_t *b, kk_env_t *env, const char *topic, int parts,
                              const char *group, const char *const *kv, long nap_us)
{
    memset(b, 0, sizeof(*b));
    b->sys = env->sys;
    b->nap_us = nap_us;
    atomic_init(&b->processed, 0);
    rill_consumer_conf_t *c = kk_conf_new(env->boot, group, kv);
    kk_conf_assign_all(c, topic, parts, RILL_OFFSET_BEGINNING);
    b->consumer = kk_consumer_spawn_ok(env->sys, c, 0);
}

/* bp_sink on executor 1 (the consumer's is 0), fed by b's consumer. */
static rill_aid_t bp_sink_start(bp_t *b)
{
    return kk_sink_spawn_ok(b->sys, bp_sink, b, 1, b->consumer);
}

/* What the consumer's stats showed while a test watched them. */
typedef struct bp_watch {
    int saw_paused, saw_resumed_after_pause;
    uint32_t max_buffered, min_buffered;
    uint64_t pauses;
    long heap_max, rss_max;
} bp_watch_t;

/* Sample the stats every 10 ms for `ms`; fails if the buffer is ever
 * above the high watermark. */
static rill_consumer_stats_t bp_watch(rill_system_t *sys, rill_aid_t consumer, int ms,
                                      bp_watch_t *w)
{
    rill_consumer_stats_t s;
    memset(&s, 0, sizeof(s));
    int64_t end = kit_now_ms() + ms;
    while (kit_now_ms() < end) {
        s = kk_consumer_stats_ok(sys, consumer);
        if (w->saw_paused && !s.paused)
            w->saw_resumed_after_pause = 1;
        w->saw_paused |= s.paused == 1;
        if (s.buffered > w->max_buffered)
            w->max_buffered = s.buffered;
        if (s.buffered < w->min_buffered)
            w->min_buffered = s.buffered;
        w->pauses = s.pauses;
        cr_assert_leq(s.buffered, BP_HIGH, "%u records buffered", s.buffered);
        long h = kit_heap_bytes(), r = kit_rss_bytes();
        w->heap_max = h > w->heap_max ? h : w->heap_max;
        w->rss_max = r > w->rss_max ? r : w->rss_max;
        kk_nap_us(10 * 1000);
    }
    return s;
}

/*
 * The issue's scenario: 400,000 records waiting, a sink that takes one per
 * millisecond. Downstream is steadily slower than Kafka: the buffer sits
 * at rill.buffer.high, so the partitions must be paused (kafka.h: when the
 * buffer has not gone below rill.buffer.low for rill.pause.after.ms), and
 * what the process holds must stay far below the backlog's cost.
 */
Test(kafka_consumer, backpressure_slow_sink_pauses_and_memory_stays_flat, .timeout = 120)
{
    kk_env_t env;
    kk_env_init(&env);
    kk_load_topic(&env, "bp", BP_PARTS, BP_PER_PART, BP_VALUE);

    /* Memory-tight prefetch (the documented trade: librdkafka holds at
     * most ~2,000 records besides rill's buffer, at the cost of fetching
     * a partition at most once a second when it is over that). */
    const char *kv[] = {
        "rill.buffer.high", "1000", "rill.buffer.low", "500", "queued.min.messages", "2000", NULL};
    /* The consumer and the slow sink (one record per millisecond) on
     * different executors. */
    bp_t b;
    bp_consumer_start(&b, &env, "bp", BP_PARTS, "bp-group", kv, 1000);
    long heap0 = kit_heap_bytes(), rss0 = kit_rss_bytes();
    rill_aid_t sink = bp_sink_start(&b);

    int ok;
    rill_consumer_stats_t s;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS,
                  (s = kk_consumer_stats_ok(env.sys, b.consumer)).buffered >= BP_HIGH);
    cr_assert(ok, "the buffer never filled (buffered %u)", s.buffered);
    /* A second to settle (fetches in flight land), then the measurement. */
    bp_watch_t w1, w2;
    memset(&w1, 0, sizeof(w1));
    memset(&w2, 0, sizeof(w2));
    w1.min_buffered = w2.min_buffered = UINT32_MAX;
    bp_watch(env.sys, b.consumer, 1000, &w1);
    long heap1 = kit_heap_bytes(), rss1 = kit_rss_bytes();
    long processed1 = atomic_load(&b.processed);
    s = bp_watch(env.sys, b.consumer, 3000, &w2);
    long processed = atomic_load(&b.processed);
    kk_stop_wait(env.sys, b.consumer);
    kk_stop_wait(env.sys, sink);

    /*
     * Buffering the backlog would cost at least its values and keys plus
     * librdkafka's message (~200 bytes): ~250 bytes per record not yet
     * processed. What the process holds while the sink works (the heap
     * above its level before the consumer ran, in the last 3 s) must be
     * far less, and must not grow.
     */
    long unbounded = (long)(BP_TOTAL - processed) * (BP_VALUE + 10 + 200);
    long held = w2.heap_max - heap0;
    long grew_run = w2.heap_max - heap1;
    long rss_run = w2.rss_max - rss1;
    fprintf(stderr,
            "backpressure (slow sink): %ld records processed (%ld in the last 3 s), %llu "
            "pauses, paused seen %d, buffered %u..%u (stats max %u); heap held %+ld KiB, "
            "%+ld KiB over the last 3 s; rss %+ld KiB since the start, %+ld KiB over the last "
            "3 s; buffering the backlog ~%ld KiB\n",
            processed, processed - processed1, (unsigned long long)s.pauses,
            w1.saw_paused || w2.saw_paused, w2.min_buffered, w2.max_buffered, s.buffered_max,
            held / 1024, grew_run / 1024, (w2.rss_max - rss0) / 1024, rss_run / 1024,
            unbounded / 1024);
    cr_assert_leq(s.buffered_max, BP_HIGH, "buffered_max %u above rill.buffer.high %d",
                  s.buffered_max, BP_HIGH);
    /* The premise: the sink, not Kafka, set the pace. It took one record
     * a millisecond (about 3,000 in the window) while the buffer stayed
     * bounded, so the consumer must have fetched again during the window:
     * more than the buffer held when the window began. */
    cr_assert_gt(processed - processed1, BP_HIGH,
                 "the sink got %ld records in 3 s: the consumer stopped feeding it",
                 processed - processed1);
    cr_assert_lt(grew_run, unbounded / 4, "the heap grew by %ld KiB while the sink worked",
                 grew_run / 1024);
#ifndef HAVE_SANITIZER_HEAP
    /* (AddressSanitizer's quarantine keeps freed fetch data resident, so
     * there the RSS follows the churn, not what is held: the heap numbers
     * above are the measure.) */
    cr_assert_lt(rss_run, unbounded / 4, "the RSS grew by %ld KiB while the sink worked",
                 rss_run / 1024);
#endif
    cr_assert_gt(s.pauses, 0, "never paused, with the buffer at rill.buffer.high");
    cr_expect(w1.saw_paused || w2.saw_paused, "stats.paused was never 1");
    cr_expect_lt(held, unbounded / 4,
                 "%ld KiB held while the sink worked; the whole backlog costs ~%ld KiB",
                 held / 1024, unbounded / 1024);

    kk_env_fini(&env);
}

/*
 * A downstream slower than Kafka but fast (catching up on a backlog)
 * keeps the buffer between its watermarks for good; pausing it would
 * starve it for the second librdkafka takes to fetch after a resume, once
 * per rill.pause.after.ms. It takes far more than two buffers in that
 * time, so it is never paused (kafka.h, BACKPRESSURE); before this rule it
 * was paused within the first 200 ms.
 */
Test(kafka_consumer, backpressure_a_fast_sink_catching_up_is_not_paused, .timeout = 120)
{
    enum { PARTS = 4, PER = 5000 };
    kk_env_t env;
    kk_env_init(&env);
    kk_load_topic(&env, "quick", PARTS, PER, BP_VALUE);
    const char *kv[] = {
        "rill.buffer.high", "100", "rill.buffer.low", "50", "rill.pause.after.ms", "200", NULL};
    /* A sink of 100 us a record, ~8,000 records a second: slower than
     * Kafka, far faster than a buffer of 100 per 200 ms. */
    bp_t b;
    bp_consumer_start(&b, &env, "quick", PARTS, "quick-group", kv, 100);
    rill_aid_t sink = bp_sink_start(&b);
    int ok;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, atomic_load(&b.processed) == PARTS * PER);
    rill_consumer_stats_t s = kk_consumer_stats_ok(env.sys, b.consumer);
    kk_stop_wait(env.sys, b.consumer);
    kk_stop_wait(env.sys, sink);
    fprintf(stderr, "fast sink: %ld records, %llu pauses, max buffered %u\n",
            atomic_load(&b.processed), (unsigned long long)s.pauses, s.buffered_max);
    cr_assert(ok, "%ld of %d records", atomic_load(&b.processed), PARTS * PER);
    cr_assert_eq(s.pauses, 0, "a fast sink was paused %llu times", (unsigned long long)s.pauses);
    cr_assert_leq(s.buffered_max, 100);
    kk_assert_committed(env.boot, "quick-group", "quick", PARTS, PER);
    kk_env_fini(&env);
}

/*
 * The pause mechanics: a sink that stops confirming (its records held,
 * rill.max.unconfirmed reached, so the consumer stops emitting) leaves the
 * buffer full; after rill.pause.after.ms the partitions are paused, the
 * buffer never holds more than rill.buffer.high, and they resume once the
 * sink confirms again and the buffer is below rill.buffer.low.
 */
#define ST_COUNT 20000
#define ST_OUT   100 /* rill.max.unconfirmed */

Test(kafka_consumer, backpressure_stalled_sink_pauses_then_resumes, .timeout = 60)
{
    kk_env_t env;
    kk_env_init(&env);
    kk_load_topic(&env, "stall", 1, ST_COUNT, BP_VALUE);

    probe_t pr;
    probe_init(&pr, env.sys, ST_COUNT);
    pr.hold = 1; /* stalled from the start */
    const char *kv[] = {"rill.buffer.high",
                        "1000",
                        "rill.buffer.low",
                        "500",
                        "rill.pause.after.ms",
                        "200",
                        "rill.max.unconfirmed",
                        "100",
                        NULL};
    rill_consumer_conf_t *c = kk_conf_new(env.boot, "stall-group", kv);
    kk_conf_assign_all(c, "stall", 1, RILL_OFFSET_BEGINNING);
    rill_aid_t sink = probe_start(&pr, c, NULL);

    int ok;
    rill_consumer_stats_t s;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, (s = kk_consumer_stats_ok(env.sys, pr.consumer)).paused == 1);
    cr_assert(ok, "a stalled sink did not pause the consumer (buffered %u, pauses %llu)",
              s.buffered, (unsigned long long)s.pauses);
    cr_assert_eq(s.unconfirmed, ST_OUT, "%u out unconfirmed", s.unconfirmed);
    cr_assert_eq(probe_received(&pr), ST_OUT);
    bp_watch_t w;
    memset(&w, 0, sizeof(w));
    w.min_buffered = UINT32_MAX;
    s = bp_watch(env.sys, pr.consumer, 500, &w); /* stays paused, the buffer bounded */
    cr_assert_eq(s.paused, 1);
    cr_assert_eq(s.pauses, 1);
    cr_assert_eq(s.buffered, BP_HIGH, "paused with %u buffered", s.buffered);
    cr_assert_eq(probe_received(&pr), ST_OUT);

    /* The sink works again. */
    pthread_mutex_lock(&pr.mu);
    pr.hold = 0;
    pthread_mutex_unlock(&pr.mu);
    probe_flush(&pr, 1, ~0u);
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, (s = kk_consumer_stats_ok(env.sys, pr.consumer)).paused == 0);
    cr_assert(ok, "never resumed");
    /* Records fetched after the resume arrive, up to the end. */
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, probe_distinct(&pr) == ST_COUNT);
    cr_assert(ok, "%ld of %d records after the resume", probe_distinct(&pr), ST_COUNT);
    s = kk_consumer_stats_ok(env.sys, pr.consumer);
    fprintf(stderr, "backpressure (stalled sink): %llu pauses, max buffered %u\n",
            (unsigned long long)s.pauses, s.buffered_max);
    cr_assert_geq(s.pauses, 1);
    cr_assert_leq(s.buffered_max, BP_HIGH, "buffered_max %u above rill.buffer.high %d",
                  s.buffered_max, BP_HIGH);
    cr_assert_eq(pr.dups, 0);
    kk_stop_wait(env.sys, pr.consumer);
    kk_stop_wait(env.sys, sink);
    probe_fini(&pr);
    kk_env_fini(&env);
}

/* ------------------------------------------------------------------ */
/* Redelivery and dead letters                                         */
/* ------------------------------------------------------------------ */

#define RD_COUNT   50
#define RD_POISON  7 /* never confirmed */
#define RD_TIMEOUT 300
#define RD_MAX     2

typedef struct rd {
    rill_system_t *sys;
    rill_aid_t consumer;
    pthread_mutex_t mu;
    int deliveries[RD_COUNT];
    int64_t at_ms[RD_COUNT][8]; /* when each delivery of an offset arrived */
    long foreign;
    /* The poison's origins: held, neither confirmed nor released, as by
     * processing that hangs, until the test ends. */
    rill_origin_t *stuck[64];
    int n_stuck;
} rd_t;

static rill_err_t rd_sink(void *opaque, rill_elem_t *e)
{
    rd_t *r = opaque;
    const rd_kafka_message_t *m = rill_record(e);
    int poison = 0;
    pthread_mutex_lock(&r->mu);
    if (m && m->offset >= 0 && m->offset < RD_COUNT && msg_seq(m) == m->offset) {
        int n = r->deliveries[m->offset]++;
        if (n < 8)
            r->at_ms[m->offset][n] = kit_now_ms();
        poison = m->offset == RD_POISON;
    } else {
        r->foreign++;
    }
    if (poison && r->n_stuck < 64) {
        r->stuck[r->n_stuck++] = e->origin;
        e->origin = NULL;
    }
    pthread_mutex_unlock(&r->mu);
    if (m && !poison)
        rill_elem_confirm(e);
    else
        rill_elem_release(e);
    return RILL_OK;
}

static rd_t *rd_new(rill_system_t *sys)
{
    rd_t *r = calloc(1, sizeof(*r));
    cr_assert_not_null(r);
    r->sys = sys;
    pthread_mutex_init(&r->mu, NULL);
    return r;
}

/* Let go of the poison's origins (before the system goes). */
static void rd_unstick(rd_t *r)
{
    pthread_mutex_lock(&r->mu);
    for (int i = 0; i < r->n_stuck; i++)
        rill_origin_release(r->stuck[i]);
    r->n_stuck = 0;
    pthread_mutex_unlock(&r->mu);
}

static void rd_free(rd_t *r)
{
    pthread_mutex_destroy(&r->mu);
    free(r);
}

static int rd_get(rd_t *r, int offset)
{
    pthread_mutex_lock(&r->mu);
    int n = r->deliveries[offset];
    pthread_mutex_unlock(&r->mu);
    return n;
}

Test(kafka_consumer, unconfirmed_record_is_redelivered_then_dead_lettered, .timeout = 120)
{
    kk_env_t env;
    kk_env_init(&env);
    kk_load_topic(&env, "redeliv", 1, RD_COUNT, 100);
    kk_create_topic(&env, "redeliv-dlq", 1);

    rd_t *r = rd_new(env.sys);
    kobs_t obs;
    kobs_init(&obs);
    const char *kv[] = {"rill.unconfirmed.timeout.ms",
                        "300",
                        "rill.max.redeliveries",
                        "2",
                        "rill.dead.letter.topic",
                        "redeliv-dlq",
                        "rill.commit.interval.ms",
                        "100",
                        NULL};
    rill_consumer_conf_t *c = kk_conf_new(env.boot, "redeliv-group", kv);
    kk_conf_assign_all(c, "redeliv", 1, RILL_OFFSET_BEGINNING);
    kobs_attach(c, &obs);
    r->consumer = kk_consumer_spawn_ok(env.sys, c, -1);
    rill_aid_t sink = kk_sink_spawn_ok(env.sys, rd_sink, r, -1, r->consumer);

    int ok;
    rill_consumer_stats_t s;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS,
                  (s = kk_consumer_stats_ok(env.sys, r->consumer)).dead_lettered == 1);
    cr_assert(ok, "nothing dead-lettered (%llu redelivered)", (unsigned long long)s.redelivered);
    /* The partition moves on: the commit passes the dead letter. */
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, kobs_committed_all(&obs, 1, RD_COUNT));
    cr_assert(ok, "the commit did not pass offset %d", RD_POISON);
    s = kk_consumer_stats_ok(env.sys, r->consumer);
    kk_stop_wait(env.sys, r->consumer);
    kk_stop_wait(env.sys, sink);

    pthread_mutex_lock(&r->mu);
    fprintf(stderr, "redelivery: offset %d delivered %d times, at +0 +%lld +%lld ms\n", RD_POISON,
            r->deliveries[RD_POISON], (long long)(r->at_ms[RD_POISON][1] - r->at_ms[RD_POISON][0]),
            (long long)(r->at_ms[RD_POISON][2] - r->at_ms[RD_POISON][0]));
    cr_assert_eq(r->deliveries[RD_POISON], 1 + RD_MAX, "offset %d delivered %d times", RD_POISON,
                 r->deliveries[RD_POISON]);
    for (int i = 1; i <= RD_MAX; i++)
        cr_assert_geq(r->at_ms[RD_POISON][i] - r->at_ms[RD_POISON][i - 1], RD_TIMEOUT * 8 / 10,
                      "delivery %d came %lld ms after the one before", i + 1,
                      (long long)(r->at_ms[RD_POISON][i] - r->at_ms[RD_POISON][i - 1]));
    for (int o = 0; o < RD_COUNT; o++)
        cr_assert_geq(r->deliveries[o], 1, "offset %d never delivered", o);
    cr_assert_eq(r->foreign, 0);
    pthread_mutex_unlock(&r->mu);
    fprintf(stderr, "redelivery: stats redelivered %llu, dead_lettered %llu\n",
            (unsigned long long)s.redelivered, (unsigned long long)s.dead_lettered);
    cr_assert_geq(s.redelivered, RD_MAX);
    cr_expect_eq(s.dead_lettered, 1, "one record dead-lettered %llu times",
                 (unsigned long long)s.dead_lettered);

    /* The dead letter: the record, with where it came from and why. */
    rill_consumed_t *dl = kk_consume_all(env.boot, "redeliv-dlq", 20000);
    cr_expect_eq(rill_consumed_count(dl), 1, "%zu dead letters", rill_consumed_count(dl));
    cr_assert_geq(rill_consumed_count(dl), 1);
    for (size_t i = 0; i < rill_consumed_count(dl); i++) {
        char b1[128] = "", b2[128] = "";
        const rill_testkit_record_t *x = rill_consumed_at(dl, i);
        fprintf(stderr, "redelivery: dead letter %zu: origin offset %s, rill-error \"%s\"\n", i,
                kk_header(x, "rill-origin-offset", b1, sizeof(b1)) ? b1 : "?",
                kk_header(x, "rill-error", b2, sizeof(b2)) ? b2 : "?");
    }
    const rill_testkit_record_t *rec = rill_consumed_at(dl, 0);
    char want[64], buf[128];
    int n = snprintf(want, sizeof(want), "seq=%d key=key-%d ", RD_POISON, RD_POISON);
    cr_assert_geq(rec->value_len, (size_t)n);
    cr_assert_eq(memcmp(rec->value, want, (size_t)n), 0, "the dead letter is not the record");
    cr_assert_eq(rec->key_len, strlen("key-7"));
    cr_assert_eq(memcmp(rec->key, "key-7", rec->key_len), 0);
    cr_assert_not_null(kk_header(rec, "rill-origin-topic", buf, sizeof(buf)));
    cr_assert_str_eq(buf, "redeliv");
    cr_assert_not_null(kk_header(rec, "rill-origin-partition", buf, sizeof(buf)));
    cr_assert_str_eq(buf, "0");
    cr_assert_not_null(kk_header(rec, "rill-origin-offset", buf, sizeof(buf)));
    cr_assert_str_eq(buf, "7");
    cr_assert_not_null(kk_header(rec, "rill-error", buf, sizeof(buf)));
    cr_assert_gt(strlen(buf), 0, "rill-error is empty");
    rill_consumed_destroy(dl);

    kk_assert_committed(env.boot, "redeliv-group", "redeliv", 1, RD_COUNT);

    rd_unstick(r);
    kk_env_fini(&env);
    kobs_fini(&obs);
    rd_free(r);
}

/* rill.dead.letter.producer: dead letters go through a producer actor the
 * application runs, found by name each time. While no such actor exists
 * the dead letter is not lost: it is counted as an error, redelivered and
 * sent again once the producer is there. */
Test(kafka_consumer, dead_letters_go_through_the_named_producer_actor, .timeout = 120)
{
    kk_env_t env;
    kk_env_init(&env);
    kk_load_topic(&env, "dlqnamed", 1, RD_COUNT, 100);
    char err[512] = "";
    kk_create_topic(&env, "dlqnamed-dlq", 1);

    rd_t *r = rd_new(env.sys);
    const char *kv[] = {"rill.unconfirmed.timeout.ms",
                        "300",
                        "rill.max.redeliveries",
                        "2",
                        "rill.dead.letter.topic",
                        "dlqnamed-dlq",
                        "rill.dead.letter.producer",
                        "dlq-producer",
                        "rill.commit.interval.ms",
                        "100",
                        NULL};
    rill_consumer_conf_t *c = kk_conf_new(env.boot, "dlqnamed-group", kv);
    kk_conf_assign_all(c, "dlqnamed", 1, RILL_OFFSET_BEGINNING);
    r->consumer = kk_consumer_spawn_ok(env.sys, c, -1);
    rill_aid_t sink = kk_sink_spawn_ok(env.sys, rd_sink, r, -1, r->consumer);

    /* No producer named dlq-producer yet: the dead letter cannot go. */
    int ok;
    rill_consumer_stats_t s;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS,
                  (s = kk_consumer_stats_ok(env.sys, r->consumer)).dead_letter_errors >= 1);
    cr_assert(ok, "no dead letter was attempted (%llu redelivered)",
              (unsigned long long)s.redelivered);
    cr_assert_eq(s.dead_lettered, 0);

    rill_producer_conf_t *pc = rill_producer_conf_new();
    cr_assert_eq(rill_producer_conf_set(pc, "bootstrap.servers", env.boot, err, sizeof(err)),
                 RILL_OK, "%s", err);
    rill_stage_opts_t po = {.name = "dlq-producer"};
    rill_aid_t producer;
    cr_assert_eq(rill_producer_spawn(env.sys, pc, &po, &producer, err, sizeof(err)), RILL_OK, "%s",
                 err);
    KK_WAIT_UNTIL(ok, KK_WAIT_MS,
                  (s = kk_consumer_stats_ok(env.sys, r->consumer)).dead_lettered == 1);
    cr_assert(ok, "nothing dead-lettered through the producer (%llu errors)",
              (unsigned long long)s.dead_letter_errors);
    rill_producer_stats_t ps;
    cr_assert_eq(rill_producer_stats(env.sys, producer, &ps), RILL_OK);
    cr_assert_eq(ps.delivered, 1, "the producer delivered %llu", (unsigned long long)ps.delivered);
    int64_t committed[1] = {-1};
    KK_WAIT_UNTIL(ok, KK_WAIT_MS,
                  (kk_committed_offsets(env.boot, "dlqnamed-group", "dlqnamed", 1, committed),
                   committed[0] == RD_COUNT));
    cr_assert(ok, "committed %lld, want %d", (long long)committed[0], RD_COUNT);
    kk_stop_wait(env.sys, r->consumer);
    kk_stop_wait(env.sys, sink);
    kk_stop_wait(env.sys, producer);

    rill_consumed_t *dl = kk_consume_all(env.boot, "dlqnamed-dlq", 20000);
    cr_assert_eq(rill_consumed_count(dl), 1, "%zu dead letters", rill_consumed_count(dl));
    char buf[64];
    cr_assert_not_null(kk_header(rill_consumed_at(dl, 0), "rill-origin-offset", buf, sizeof(buf)));
    cr_assert_eq(atoi(buf), RD_POISON);
    rill_consumed_destroy(dl);
    rd_unstick(r);
    kk_env_fini(&env);
    rd_free(r);
}

/* The dead-letter producer a consumer starts itself is a client like the
 * consumer: every property the application set that is not consumer-only
 * (connection, security, tuning, even a producer property set on the
 * consumer) is the producer's too, with the value set last; the
 * consumer-only ones are not. Then it delivers a dead letter. */
Test(kafka_consumer, own_dead_letter_producer_inherits_the_client_properties, .timeout = 120)
{
    kk_env_t env;
    kk_env_init(&env);
    kk_load_topic(&env, "dlqconf", 1, RD_COUNT, 100);
    kk_create_topic(&env, "dlqconf-dlq", 1);

    /* Neither connection settings nor defaults: what the old fixed list
     * of seven connection properties left behind. */
    static const char *const inherited[] = {"client.id",
                                            "rill-dlq-conf",
                                            "socket.keepalive.enable",
                                            "true",
                                            "sasl.kerberos.service.name",
                                            "rill-kerberos",
                                            "ssl.cipher.suites",
                                            "ECDHE-RSA-AES128-GCM-SHA256",
                                            "reconnect.backoff.max.ms",
                                            "777",
                                            "linger.ms",
                                            "7",
                                            NULL};
    /* group.id comes from kk_conf_new. */
    static const char *const consumer_only[] = {"auto.offset.reset",
                                                "earliest",
                                                "session.timeout.ms",
                                                "7000",
                                                "max.poll.interval.ms",
                                                "123456",
                                                NULL};

    rd_t *r = rd_new(env.sys);
    const char *kv[] = {"client.id",
                        "overwritten-below",
                        "rill.unconfirmed.timeout.ms",
                        "300",
                        "rill.max.redeliveries",
                        "1",
                        "rill.dead.letter.topic",
                        "dlqconf-dlq",
                        NULL};
    rill_consumer_conf_t *c = kk_conf_new(env.boot, "dlqconf-group", kv);
    kk_conf_set_kv(c, inherited);
    kk_conf_set_kv(c, consumer_only);
    kk_conf_assign_all(c, "dlqconf", 1, RILL_OFFSET_BEGINNING);
    r->consumer = kk_consumer_spawn_ok(env.sys, c, -1);

    rill_aid_t dlq = RILL_AID_NONE;
    cr_assert_eq(rill__consumer_dlq_producer(env.sys, r->consumer, &dlq), RILL_OK);
    cr_assert(!rill_aid_is_none(dlq), "the consumer started no dead-letter producer");
    char v[512];
    for (size_t i = 0; inherited[i]; i += 2) {
        cr_assert_eq(rill__producer_conf_get(env.sys, dlq, inherited[i], v, sizeof(v)), RILL_OK,
                     "%s", inherited[i]);
        fprintf(stderr, "dead-letter producer: %s = %s\n", inherited[i], v);
        cr_assert_str_eq(v, inherited[i + 1], "%s is \"%s\", not \"%s\"", inherited[i], v,
                         inherited[i + 1]);
    }
    cr_assert_eq(rill__producer_conf_get(env.sys, dlq, "bootstrap.servers", v, sizeof(v)), RILL_OK);
    cr_assert_str_eq(v, env.boot);
    /* rill's producer defaults hold where the application set nothing. */
    cr_assert_eq(rill__producer_conf_get(env.sys, dlq, "enable.idempotence", v, sizeof(v)),
                 RILL_OK);
    cr_assert_str_eq(v, "true");
    /* Consumer-only properties stay the consumer's: the producer has
     * librdkafka's defaults (or, for a topic property, perhaps nothing). */
    rill_err_t e = rill__producer_conf_get(env.sys, dlq, "group.id", v, sizeof(v));
    cr_assert(e == RILL_ENOENT || (e == RILL_OK && !*v), "the producer has group.id \"%s\"", v);
    for (size_t i = 0; consumer_only[i]; i += 2) {
        e = rill__producer_conf_get(env.sys, dlq, consumer_only[i], v, sizeof(v));
        cr_assert(e == RILL_OK || e == RILL_ENOENT, "%s: %s", consumer_only[i], rill_err_name(e));
        fprintf(stderr, "dead-letter producer: %s = %s\n", consumer_only[i],
                e == RILL_OK ? v : "(none)");
        cr_assert(e == RILL_ENOENT || strcmp(v, consumer_only[i + 1]),
                  "the producer has the consumer's %s", consumer_only[i]);
    }
    cr_assert(e == RILL_ENOENT || strcmp(v, "smallest"), "auto.offset.reset was inherited");
    cr_assert_eq(rill__producer_conf_get(env.sys, dlq, "no.such.property", v, sizeof(v)),
                 RILL_ENOENT);

    /* And it is a working client: the poison record is dead-lettered. */
    rill_aid_t sink = kk_sink_spawn_ok(env.sys, rd_sink, r, -1, r->consumer);
    int ok;
    rill_consumer_stats_t s;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS,
                  (s = kk_consumer_stats_ok(env.sys, r->consumer)).dead_lettered == 1);
    cr_assert(ok, "nothing dead-lettered (%llu errors)", (unsigned long long)s.dead_letter_errors);
    kk_stop_wait(env.sys, r->consumer);
    kk_stop_wait(env.sys, sink);
    cr_assert(kit_wait_dead(env.sys, dlq, KK_WAIT_MS), "the dead-letter producer outlived us");
    rill_consumed_t *dl = kk_consume_all(env.boot, "dlqconf-dlq", 20000);
    cr_assert_eq(rill_consumed_count(dl), 1, "%zu dead letters", rill_consumed_count(dl));
    rill_consumed_destroy(dl);
    rd_unstick(r);
    kk_env_fini(&env);
    rd_free(r);
}

Test(kafka_consumer, unconfirmed_record_without_dead_letter_topic_fails_the_consumer, .timeout = 60)
{
    kk_env_t env;
    kk_env_init(&env);
    kk_load_topic(&env, "poison", 1, RD_COUNT, 100);

    rd_t *r = rd_new(env.sys);
    const char *kv[] = {"rill.unconfirmed.timeout.ms", "300", "rill.max.redeliveries", "2", NULL};
    rill_consumer_conf_t *c = kk_conf_new(env.boot, "poison-group", kv);
    kk_conf_assign_all(c, "poison", 1, RILL_OFFSET_BEGINNING);
    r->consumer = kk_consumer_spawn_ok(env.sys, c, -1);

    kit_log_t *log = kit_log_new();
    cr_assert_not_null(log);
    rill_aid_t watcher = kit_spawn_recorder(env.sys, log, -1);
    cr_assert(!rill_aid_is_none(watcher));
    cr_assert_eq(kit_run_in(env.sys, watcher, monitor_fn, &r->consumer), RILL_OK);
    rill_aid_t sink = kk_sink_spawn_ok(env.sys, rd_sink, r, -1, r->consumer);

    cr_assert(kit_log_wait_type(log, RILL_MSG_DOWN, 1, KK_WAIT_MS), "the consumer did not stop");
    kit_event_t ev;
    cr_assert(kit_log_find(log, RILL_MSG_DOWN, r->consumer, &ev));
    fprintf(stderr, "no dead-letter topic: the consumer exited: %s, %s: %s\n",
            rill_exit_kind_name(ev.down.reason.kind), rill_err_name(ev.down.reason.code),
            ev.down.reason.text);
    cr_assert_eq(ev.down.reason.kind, RILL_EXIT_FAILURE, "exit %s",
                 rill_exit_kind_name(ev.down.reason.kind));
    cr_assert_neq(ev.down.reason.code, RILL_OK);
    cr_assert_eq(rd_get(r, RD_POISON), 1 + RD_MAX, "offset %d delivered %d times", RD_POISON,
                 rd_get(r, RD_POISON));
    cr_assert(kit_wait_dead(env.sys, sink, KK_WAIT_MS), "the sink outlived its failed source");

    rd_unstick(r);
    kk_env_fini(&env);
    kit_log_free(log);
    rd_free(r);
}

/* ------------------------------------------------------------------ */
/* Self-managed offsets                                                */
/* ------------------------------------------------------------------ */

#define SM_PARTS    2
#define SM_PER_PART 8000
#define SM_KAFKA    1000 /* committed in Kafka beforehand */
#define SM_START    5000 /* where the application's state says to start */

typedef struct sm {
    pthread_mutex_t mu;
    long calls;
    int parts_seen;
    int bad_initial; /* partitions handed over with an offset already set */
} sm_t;

static int sm_assigned(void *opaque, rill_assignment_t *asg, rd_kafka_topic_partition_list_t *parts)
{
    (void)asg;
    sm_t *m = opaque;
    pthread_mutex_lock(&m->mu);
    m->calls++;
    for (int i = 0; i < parts->cnt; i++) {
        m->parts_seen++;
        m->bad_initial += parts->elems[i].offset != RD_KAFKA_OFFSET_INVALID;
        parts->elems[i].offset = SM_START;
    }
    pthread_mutex_unlock(&m->mu);
    return 0;
}

Test(kafka_consumer, self_managed_offsets_start_where_the_callback_says, .timeout = 120)
{
    kk_env_t env;
    kk_env_init(&env);
    kk_load_topic(&env, "self", SM_PARTS, SM_PER_PART, 100);
    kk_commit_plain(env.boot, "self-group", "self", SM_PARTS, SM_KAFKA);
    kk_assert_committed(env.boot, "self-group", "self", SM_PARTS, SM_KAFKA);

    sm_t m;
    memset(&m, 0, sizeof(m));
    pthread_mutex_init(&m.mu, NULL);
    kobs_t obs;
    kobs_init(&obs);
    probe_t pr;
    probe_init(&pr, env.sys, SM_PARTS * SM_PER_PART);
    rill_consumer_conf_t *c = kk_conf_new(env.boot, "self-group", group_member_kv);
    kk_conf_subscribe1(c, "self");
    rill_consumer_conf_set_assigned_cb(c, sm_assigned, &m);
    rill_aid_t sink = probe_start(&pr, c, &obs);

    long want = SM_PARTS * (SM_PER_PART - SM_START);
    int ok;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, probe_distinct(&pr) == want);
    cr_assert(ok, "%ld of %ld records", probe_distinct(&pr), want);
    rill_consumer_stats_t s;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS,
                  (s = kk_consumer_stats_ok(env.sys, pr.consumer)).confirmed == (uint64_t)want);
    cr_assert(ok, "%llu of %ld confirmed", (unsigned long long)s.confirmed, want);
    /* Time for a periodic commit (100 ms) to have happened, were there one. */
    kk_nap_us(500 * 1000);
    s = kk_consumer_stats_ok(env.sys, pr.consumer);
    kk_stop_wait(env.sys, pr.consumer); /* nor at the stop */
    kk_stop_wait(env.sys, sink);

    for (int p = 0; p < SM_PARTS; p++)
        cr_assert_eq(pr.first[p], SM_START, "[%d] started at %" PRId64, p, pr.first[p]);
    cr_assert_eq(pr.received, want, "%ld records, expected %ld", pr.received, want);
    cr_assert_eq(m.parts_seen, SM_PARTS);
    cr_assert_eq(m.bad_initial, 0, "the callback got offsets already set");
    cr_assert_eq(s.committed, 0);
    cr_assert_eq(obs.commits, 0, "%ld commits reported", obs.commits);
    kk_assert_committed(env.boot, "self-group", "self", SM_PARTS, SM_KAFKA);

    probe_fini(&pr);
    kk_env_fini(&env);
    kobs_fini(&obs);
    pthread_mutex_destroy(&m.mu);
}

/* ---- starts told later (RILL_OFFSET_LATER) ---- */

#define LT_LATE 6000 /* where partition 1 starts, told later */

typedef struct lt {
    pthread_mutex_t mu;
    rill_assignment_t *asg; /* retained by the callback */
    int early;              /* answer partition 1 inside the callback */
    int ready_in_call;      /* what that answer returned */
} lt_t;

/* Partition 0 starts at SM_START at once; partition 1 is left LATER. */
static int lt_assigned(void *opaque, rill_assignment_t *asg, rd_kafka_topic_partition_list_t *parts)
{
    lt_t *m = opaque;
    for (int i = 0; i < parts->cnt; i++)
        parts->elems[i].offset = parts->elems[i].partition == 0 ? SM_START : RILL_OFFSET_LATER;
    pthread_mutex_lock(&m->mu);
    if (m->early)
        m->ready_in_call = rill_assignment_ready(asg, parts->elems[0].topic, 1, LT_LATE);
    else if (!m->asg)
        m->asg = rill_assignment_retain(asg);
    pthread_mutex_unlock(&m->mu);
    return 0;
}

static rill_assignment_t *lt_asg(lt_t *m)
{
    pthread_mutex_lock(&m->mu);
    rill_assignment_t *a = m->asg;
    pthread_mutex_unlock(&m->mu);
    return a;
}

static void lt_run(int early)
{
    kk_env_t env;
    kk_env_init(&env);
    kk_load_topic(&env, "later", SM_PARTS, SM_PER_PART, 100);
    kk_commit_plain(env.boot, "later-group", "later", SM_PARTS, SM_KAFKA);
    lt_t m = {.early = early};
    pthread_mutex_init(&m.mu, NULL);
    probe_t pr;
    probe_init(&pr, env.sys, SM_PARTS * SM_PER_PART);
    rill_consumer_conf_t *c = kk_conf_new(env.boot, "later-group", group_member_kv);
    kk_conf_subscribe1(c, "later");
    rill_consumer_conf_set_assigned_cb(c, lt_assigned, &m);
    rill_aid_t sink = probe_start(&pr, c, NULL);
    long want = (SM_PER_PART - SM_START) + (SM_PER_PART - LT_LATE);
    int ok;
    rill_consumer_stats_t s;
    if (!early) {
        /* Partition 0 runs to its end while partition 1 waits, paused. */
        KK_WAIT_UNTIL(ok, KK_WAIT_MS, lt_asg(&m) != NULL);
        cr_assert(ok, "the assigned callback was not called");
        rill_assignment_t *a = lt_asg(&m);
        KK_WAIT_UNTIL(ok, KK_WAIT_MS, probe_per_part(&pr, 0) == SM_PER_PART - SM_START);
        cr_assert(ok, "partition 0: %ld records", probe_per_part(&pr, 0));
        s = kk_consumer_stats_ok(env.sys, pr.consumer);
        cr_assert_eq(s.assigned, SM_PARTS);
        cr_assert_eq(s.waiting, 1, "%u partitions waiting", s.waiting);
        cr_assert_eq(probe_per_part(&pr, 1), 0, "partition 1 fetched before its start was told");
        cr_assert(rill_assignment_waiting(a, "later", 1));
        cr_assert(!rill_assignment_waiting(a, "later", 0), "partition 0 was not left LATER");
        cr_assert_eq(rill_assignment_ready(a, "later", 0, 10), RILL_ENOENT);
        cr_assert_eq(rill_assignment_ready(a, "later", 1, -5), RILL_EINVAL);
        cr_assert_eq(rill_assignment_ready(a, NULL, 1, 5), RILL_EINVAL);
        cr_assert_eq(rill_assignment_ready(NULL, "later", 1, 5), RILL_EINVAL);
        /* From this thread, not the source's executor. */
        cr_assert_eq(rill_assignment_ready(a, "later", 1, LT_LATE), RILL_OK);
        cr_assert_eq(rill_assignment_ready(a, "later", 1, LT_LATE), RILL_ENOENT, "answered twice");
        cr_assert(!rill_assignment_waiting(a, "later", 1));
    }
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, probe_distinct(&pr) == want);
    cr_assert(ok, "%ld of %ld records", probe_distinct(&pr), want);
    s = kk_consumer_stats_ok(env.sys, pr.consumer);
    cr_assert_eq(s.waiting, 0);
    kk_stop_wait(env.sys, pr.consumer);
    kk_stop_wait(env.sys, sink);
    cr_assert_eq(pr.first[0], SM_START, "[0] started at %" PRId64, pr.first[0]);
    cr_assert_eq(pr.first[1], LT_LATE, "[1] started at %" PRId64, pr.first[1]);
    cr_assert_eq(pr.received, want, "%ld records, expected %ld", pr.received, want);
    if (early)
        cr_assert_eq(m.ready_in_call, RILL_OK);
    else /* the run ended: answers are refused */
        cr_assert_eq(rill_assignment_fail(m.asg, "too late"), RILL_ENOENT);
    rill_assignment_release(m.asg);
    probe_fini(&pr);
    kk_env_fini(&env);
    pthread_mutex_destroy(&m.mu);
}

Test(kafka_consumer, later_start_holds_the_partition_until_told_from_another_thread, .timeout = 120)
{
    lt_run(0);
}

Test(kafka_consumer, later_start_answered_inside_the_callback_starts_at_once, .timeout = 120)
{
    lt_run(1);
}

Test(kafka_consumer, later_start_failed_fails_the_source, .timeout = 120)
{
    kk_env_t env;
    kk_env_init(&env);
    kk_load_topic(&env, "later", SM_PARTS, 100, 100);
    lt_t m = {.early = 0};
    pthread_mutex_init(&m.mu, NULL);
    probe_t pr;
    probe_init(&pr, env.sys, SM_PARTS * 100);
    rill_consumer_conf_t *c = kk_conf_new(env.boot, "later-fail", group_member_kv);
    kk_conf_subscribe1(c, "later");
    rill_consumer_conf_set_assigned_cb(c, lt_assigned, &m);
    rill_aid_t sink = probe_start(&pr, c, NULL);
    int ok;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, lt_asg(&m) != NULL);
    cr_assert(ok, "the assigned callback was not called");
    cr_assert_eq(rill_assignment_fail(NULL, "x"), RILL_EINVAL);
    cr_assert_eq(rill_assignment_fail(m.asg, "no state for partition 1"), RILL_OK);
    cr_assert(kit_wait_dead(env.sys, pr.consumer, KK_WAIT_MS), "the source outlived the failure");
    cr_assert(kit_wait_dead(env.sys, sink, KK_WAIT_MS), "the sink outlived its failed source");
    cr_assert_eq(probe_per_part(&pr, 1), 0, "partition 1 was consumed");
    cr_assert_eq(rill_assignment_ready(m.asg, "later", 1, 0), RILL_ENOENT);
    rill_assignment_release(m.asg);
    probe_fini(&pr);
    kk_env_fini(&env);
    pthread_mutex_destroy(&m.mu);
}

/* ---- partition ends ---- */

#define END_PER_PART 3000

typedef struct ends {
    pthread_mutex_t mu;
    long told[MAXP];
    int64_t last[MAXP];
    int bad_topic;
} ends_t;

static void ends_cb(void *opaque, const char *topic, int32_t partition, int64_t offset)
{
    ends_t *e = opaque;
    pthread_mutex_lock(&e->mu);
    if (strcmp(topic, "ends") || partition < 0 || partition >= MAXP)
        e->bad_topic++;
    else {
        e->told[partition]++;
        e->last[partition] = offset;
    }
    pthread_mutex_unlock(&e->mu);
}

static int64_t ends_last(ends_t *e, int p)
{
    pthread_mutex_lock(&e->mu);
    int64_t v = e->told[p] ? e->last[p] : -1;
    pthread_mutex_unlock(&e->mu);
    return v;
}

Test(kafka_consumer, partition_ends_are_told_after_their_records, .timeout = 120)
{
    kk_env_t env;
    kk_env_init(&env);
    /* Partition 2 stays empty: its end (0) is told at once. */
    kk_create_topic(&env, "ends", 3);
    kk_produce_parts(env.boot, "ends", 2, END_PER_PART, 0, 100);
    ends_t e;
    memset(&e, 0, sizeof(e));
    pthread_mutex_init(&e.mu, NULL);
    probe_t pr;
    probe_init(&pr, env.sys, 3 * END_PER_PART);
    rill_consumer_conf_t *c = kk_conf_new(env.boot, "ends-group", group_member_kv);
    kk_conf_subscribe1(c, "ends");
    cr_assert_eq(rill_consumer_conf_set_end_cb(NULL, ends_cb, &e), RILL_EINVAL);
    cr_assert_eq(rill_consumer_conf_set_end_cb(c, ends_cb, &e), RILL_OK);
    rill_aid_t sink = probe_start(&pr, c, NULL);
    int ok;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS,
                  ends_last(&e, 0) == END_PER_PART && ends_last(&e, 1) == END_PER_PART &&
                      ends_last(&e, 2) == 0);
    cr_assert(ok, "ends told: %lld %lld %lld", (long long)ends_last(&e, 0),
              (long long)ends_last(&e, 1), (long long)ends_last(&e, 2));
    /* Told after the records went out: they all reach the sink. */
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, probe_distinct(&pr) == 2 * END_PER_PART);
    cr_assert(ok, "%ld records", probe_distinct(&pr));
    rill_consumer_stats_t s = kk_consumer_stats_ok(env.sys, pr.consumer);
    cr_assert_geq(s.ends, 3, "%llu ends counted", (unsigned long long)s.ends);
    /* More records: the end is told again, further on. */
    rill_gen_t g = RILL_GEN_DEFAULT;
    g.first_seq = 2 * END_PER_PART;
    g.pinned = 1;
    g.partition = 2;
    g.value_size = 100;
    rill_testkit_opts_t to = {.timeout_ms = 60000};
    char err[256] = "";
    cr_assert_eq(rill_testkit_produce_generated(env.boot, "ends", 10, &g, &to, err, sizeof(err)),
                 RILL_OK, "%s", err);
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, ends_last(&e, 2) == 10);
    cr_assert(ok, "partition 2's new end: %lld", (long long)ends_last(&e, 2));
    kk_stop_wait(env.sys, pr.consumer);
    kk_stop_wait(env.sys, sink);
    cr_assert_eq(e.bad_topic, 0);
    cr_assert_eq(pr.received, 2 * END_PER_PART + 10);
    probe_fini(&pr);
    kk_env_fini(&env);
    pthread_mutex_destroy(&e.mu);
}

/* ------------------------------------------------------------------ */
/* Fixed partitions at the committed offset                            */
/* ------------------------------------------------------------------ */

Test(kafka_consumer, fixed_partitions_start_at_committed_or_reset, .timeout = 60)
{
    kk_env_t env;
    kk_env_init(&env);
    kk_load_topic(&env, "fixed", 2, 100, 100);
    kk_commit_plain(env.boot, "fixed-group", "fixed", 1, 30); /* partition 0 only */

    probe_t pr;
    probe_init(&pr, env.sys, 200);
    const char *kv[] = {"auto.offset.reset", "earliest", NULL};
    rill_consumer_conf_t *c = kk_conf_new(env.boot, "fixed-group", kv);
    kk_conf_assign_all(c, "fixed", 2, RILL_OFFSET_COMMITTED);
    rill_aid_t sink = probe_start(&pr, c, NULL);
    int ok;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, probe_distinct(&pr) == 170);
    cr_assert(ok, "%ld of 170 records", probe_distinct(&pr));
    cr_assert_eq(probe_first(&pr, 0), 30, "[0] started at %" PRId64, probe_first(&pr, 0));
    cr_assert_eq(probe_first(&pr, 1), 0, "[1] started at %" PRId64, probe_first(&pr, 1));
    kk_stop_wait(env.sys, pr.consumer);
    kk_stop_wait(env.sys, sink);
    kk_assert_committed(env.boot, "fixed-group", "fixed", 2, 100);
    probe_fini(&pr);
    kk_env_fini(&env);
}

/*
 * librdkafka before 2.2 stops fetching while its queue is over
 * queued.max.messages.kbytes and looks again only a second later, however
 * fast the queue drains (confluentinc/librdkafka#2879): the source wakes
 * it (fetch_nudges) once the queue ran dry after being at the limit. From
 * 2.2 the wait is fetch.queue.backoff.ms and nothing is nudged. Either
 * way every record arrives once and the commit reaches the end.
 */
Test(kafka_consumer, a_fetcher_stopped_at_its_queue_limit_is_woken, .timeout = 90)
{
    enum { PARTS = 4, PER = 5000 };
    kk_env_t env;
    kk_env_init(&env);
    kk_load_topic(&env, "nudged", PARTS, PER, 100);

    probe_t pr;
    probe_init(&pr, env.sys, PARTS * PER);
    /* 64 KiB: ~650 records of 100 bytes, a small part of the topic */
    int nudging = !rill__has_fetch_queue_backoff();
    const char *kv[] = {"queued.max.messages.kbytes", "64",
                        nudging ? NULL : "fetch.queue.backoff.ms", "10", NULL};
    rill_consumer_conf_t *c = kk_conf_new(env.boot, "nudged-group", kv);
    kk_conf_assign_all(c, "nudged", PARTS, RILL_OFFSET_BEGINNING);
    /* The premise, made sure of: the sink's executor is held until the
     * source's buffer and librdkafka's queue have had a second to fill to
     * their limits, so the fetcher stops there whatever the speed
     * of the build (a fast consumer may otherwise never let it fill). */
    kit_gate_t gate;
    rill_aid_t blocker = hold_executor(env.sys, 1, &gate);
    pr.consumer = kk_consumer_spawn_ok(env.sys, c, 0);
    rill_aid_t sink = kk_sink_spawn_ok(env.sys, probe_sink, &pr, 1, pr.consumer);
    /* No stats asks meanwhile: their reply actors may need executor 1. */
    kk_nap_us(1000 * 1000); /* the buffer and librdkafka's queue fill (premise) */
    int ok;
    kit_gate_open(&gate);
    /* ~30 fills of the 64 KiB queue: a fetcher left asleep a second at
     * each would need ~30 s; 10 s is a generous bound for a woken one
     * (1-2 s under ASan). Whether a nudge was needed depends on the race
     * between the fetcher and the polls (librdkafka 2.0.2 with one poll
     * per record often fetches again by itself), so only the outcome is
     * asserted there. */
    KK_WAIT_UNTIL(ok, 10000, probe_distinct(&pr) == PARTS * PER);
    cr_assert(ok, "%ld of %d records in 10 s: the fetcher slept", probe_distinct(&pr), PARTS * PER);
    rill_consumer_stats_t st;
    cr_assert_eq(rill_consumer_stats(env.sys, pr.consumer, &st), RILL_OK);
    fprintf(stderr, "fetcher at its queue limit: %" PRIu64 " nudges (librdkafka %s)\n",
            st.fetch_nudges, rd_kafka_version_str());
    if (!nudging)
        cr_assert_eq(st.fetch_nudges, 0, "librdkafka %s: %" PRIu64 " nudges",
                     rd_kafka_version_str(), st.fetch_nudges);
    cr_assert_eq(locked_long(&pr.mu, &pr.dups), 0, "records came twice");
    kk_stop_wait(env.sys, pr.consumer);
    kk_stop_wait(env.sys, sink);
    kk_stop_wait(env.sys, blocker);
    kit_gate_destroy(&gate);
    kk_assert_committed(env.boot, "nudged-group", "nudged", PARTS, PER);
    probe_fini(&pr);
    kk_env_fini(&env);
}

/* ------------------------------------------------------------------ */
/* Configuration errors and NULL arguments                             */
/* ------------------------------------------------------------------ */

/* Spawns that must fail, run by spawn_refusals() on a thread of its own. */
enum { RF_CASES = 10 };

static const struct {
    const char *what;
    rill_err_t err;
    const char *in_errstr; /* NULL: any non-empty message */
} rf_want[RF_CASES] = {
    {"no subscription", RILL_EINVAL, NULL},
    {"subscribe and assign", RILL_EINVAL, NULL},
    {"subscribe without group.id", RILL_EINVAL, "group.id"},
    {"rill.buffer.low above rill.buffer.high", RILL_EINVAL, "rill.buffer.low"},
    {"rill.buffer.low 11 above rill.buffer.high 10", RILL_EINVAL, "rill.buffer.low"},
    {"buffer.low above high, with a dead-letter topic", RILL_EINVAL, "rill.buffer.low"},
    {"librdkafka refuses the client (ssl.ca.location)", RILL_EKAFKA, "ssl"},
    {"the same, with a dead-letter producer made first", RILL_EKAFKA, "ssl"},
    {"NULL system", RILL_EINVAL, NULL},
    {"NULL aid", RILL_EINVAL, NULL},
};

typedef struct refusals {
    rill_system_t *sys;
    const char *boot;
    int n;
    rill_err_t e[RF_CASES];
    rill_aid_t aid[RF_CASES];
    char errstr[RF_CASES][256];
} refusals_t;

/* A conf for case i (no asserts: this runs off the test thread). */
static rill_consumer_conf_t *rf_conf(const refusals_t *r, int i)
{
    rill_consumer_conf_t *c = rill_consumer_conf_new();
    const char *topics[] = {"t"};
    rill_consumer_conf_set(c, "bootstrap.servers", r->boot, NULL, 0);
    if (i != 2)
        rill_consumer_conf_set(c, "group.id", "g", NULL, 0);
    if (i != 0)
        rill_consumer_conf_subscribe(c, topics, 1, NULL, 0);
    if (i == 1)
        rill_consumer_conf_assign(c, "t", 0, RILL_OFFSET_BEGINNING, NULL, 0);
    if (i == 3 || i == 5)
        rill_consumer_conf_set(c, "rill.buffer.low", "2000", NULL, 0);
    if (i == 4) {
        rill_consumer_conf_set(c, "rill.buffer.high", "10", NULL, 0);
        rill_consumer_conf_set(c, "rill.buffer.low", "11", NULL, 0);
    }
    if (i == 5 || i == 7)
        rill_consumer_conf_set(c, "rill.dead.letter.topic", "dlq", NULL, 0);
    if (i == 6 || i == 7) {
        rill_consumer_conf_set(c, "security.protocol", "ssl", NULL, 0);
        rill_consumer_conf_set(c, "ssl.ca.location", "/nonexistent/rill-ca.pem", NULL, 0);
    }
    return c;
}

static void *spawn_refusals(void *arg)
{
    refusals_t *r = arg;
    for (int i = 0; i < RF_CASES; i++) {
        rill_consumer_conf_t *c = rf_conf(r, i);
        r->aid[i] = RILL_AID_NONE;
        if (i == 8)
            r->e[i] = rill_consumer_spawn(NULL, c, NULL, &r->aid[i], r->errstr[i], 256);
        else if (i == 9)
            r->e[i] = rill_consumer_spawn(r->sys, c, NULL, NULL, r->errstr[i], 256);
        else {
            r->aid[i] = (rill_aid_t){12345}; /* must be cleared */
            r->e[i] = rill_consumer_spawn(r->sys, c, NULL, &r->aid[i], r->errstr[i], 256);
        }
        r->n++;
    }
    return NULL;
}

Test(kafka_consumer, invalid_configuration_and_arguments, .timeout = 60)
{
    kk_env_t env;
    kk_env_init(&env);
    rill_system_t *sys = env.sys;
    char err[512] = "";
    rill_consumer_conf_t *c;

    /* Unknown keys. */
    c = rill_consumer_conf_new();
    cr_assert_eq(rill_consumer_conf_set(c, "no.such.key", "1", err, sizeof(err)), RILL_EKAFKA);
    cr_assert_not_null(strstr(err, "no.such.key"), "errstr: %s", err);
    cr_assert_eq(rill_consumer_conf_set(c, "session.timeout.ms", "abc", err, sizeof(err)),
                 RILL_EKAFKA);
    err[0] = '\0';
    cr_assert_eq(rill_consumer_conf_set(c, "rill.nope", "1", err, sizeof(err)), RILL_EINVAL);
    cr_assert_not_null(strstr(err, "rill.nope"), "errstr: %s", err);

    /* Bad rill values. */
    static const char *const bad[][2] = {
        {"rill.commit.interval.ms", "abc"}, {"rill.commit.interval.ms", "-5"},
        {"rill.commit.interval.ms", ""},    {"rill.commit.interval.ms", "12x"},
        {"rill.commit.interval.ms", "0"},   {"rill.commit.count", "0"},
        {"rill.buffer.high", "0"},          {"rill.max.unconfirmed", "0"},
        {"rill.max.redeliveries", "1e3"},   {"rill.drain.timeout.ms", "99999999999999999999"},
        {"rill.commit", "maybe"},           {"rill.dead.letter.topic", "bad topic!"},
        {"rill.pause.after.ms", "soon"},    {"rill.dead.letter.topic", ""},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        cr_assert_eq(rill_consumer_conf_set(c, bad[i][0], bad[i][1], err, sizeof(err)), RILL_EINVAL,
                     "%s = \"%s\" was accepted", bad[i][0], bad[i][1]);
        cr_assert_gt(strlen(err), 0, "no message for %s = \"%s\"", bad[i][0], bad[i][1]);
    }
    cr_assert_eq(rill_consumer_conf_set(c, "rill.commit", "false", err, sizeof(err)), RILL_OK);
    cr_assert_eq(rill_consumer_conf_set(c, "rill.dead.letter.topic", "dlq.ok-1", err, sizeof(err)),
                 RILL_OK);
    cr_assert_eq(rill_consumer_conf_set(NULL, "group.id", "g", err, sizeof(err)), RILL_EINVAL);
    cr_assert_eq(rill_consumer_conf_set(c, NULL, "g", err, sizeof(err)), RILL_EINVAL);
    cr_assert_eq(rill_consumer_conf_set(c, "group.id", NULL, err, sizeof(err)), RILL_EINVAL);
    cr_assert_eq(rill_consumer_conf_set(c, "rill.commit", "true", NULL, 0), RILL_OK);
    cr_assert_eq(rill_consumer_conf_set(c, "rill.nope", "1", NULL, 0), RILL_EINVAL);

    /* Subscriptions and assignments. */
    const char *good[] = {"orders", "^orders-.*"};
    const char *badt[] = {"bad topic!"};
    const char *nullt[] = {NULL};
    err[0] = '\0';
    cr_assert_eq(rill_consumer_conf_subscribe(NULL, good, 1, err, sizeof(err)), RILL_EINVAL);
    cr_assert_gt(strlen(err), 0);
    err[0] = '\0';
    cr_assert_eq(rill_consumer_conf_subscribe(c, NULL, 1, err, sizeof(err)), RILL_EINVAL);
    cr_assert_gt(strlen(err), 0);
    err[0] = '\0';
    cr_assert_eq(rill_consumer_conf_subscribe(c, good, 0, err, sizeof(err)), RILL_EINVAL);
    cr_assert_gt(strlen(err), 0);
    err[0] = '\0';
    cr_assert_eq(rill_consumer_conf_subscribe(c, badt, 1, err, sizeof(err)), RILL_EINVAL);
    cr_assert_not_null(strstr(err, "bad topic!"), "errstr: %s", err);
    err[0] = '\0';
    cr_assert_eq(rill_consumer_conf_subscribe(c, nullt, 1, err, sizeof(err)), RILL_EINVAL);
    cr_assert_gt(strlen(err), 0);
    static const struct {
        const char *topic;
        int32_t partition;
        int64_t offset;
    } asg[] = {{NULL, 0, 0}, {"bad topic!", 0, 0}, {"t", -1, 0}, {"t", 0, -7}};
    cr_assert_eq(rill_consumer_conf_assign(NULL, "t", 0, 0, err, sizeof(err)), RILL_EINVAL);
    for (size_t i = 0; i < sizeof(asg) / sizeof(asg[0]); i++) {
        err[0] = '\0';
        cr_assert_eq(rill_consumer_conf_assign(c, asg[i].topic, asg[i].partition, asg[i].offset,
                                               err, sizeof(err)),
                     RILL_EINVAL, "assignment case %zu", i);
        cr_assert_gt(strlen(err), 0, "assignment case %zu: no sentence", i);
    }
    cr_assert_eq(rill_consumer_conf_subscribe(c, good, 2, NULL, 0), RILL_OK);
    rill_consumer_conf_destroy(c);
    rill_consumer_conf_destroy(NULL);
    cr_assert_eq(rill_consumer_conf_set_assigned_cb(NULL, NULL, NULL), RILL_EINVAL);
    cr_assert_eq(rill_consumer_conf_set_rebalance_cb(NULL, NULL, NULL), RILL_EINVAL);
    cr_assert_eq(rill_consumer_conf_set_commit_cb(NULL, NULL, NULL), RILL_EINVAL);

    /* Spawn refusals; every one consumes its conf. They run on a thread of
     * their own, so that no stale pointer on the test thread's stack can
     * hide a leaked conf from LeakSanitizer (checked at the end). */
    refusals_t rf;
    memset(&rf, 0, sizeof(rf));
    rf.sys = sys;
    rf.boot = env.boot;
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, spawn_refusals, &rf), 0);
    pthread_join(th, NULL);
    cr_assert_eq(rf.n, RF_CASES);
    for (int i = 0; i < RF_CASES; i++) {
        cr_assert_eq(rf.e[i], rf_want[i].err, "%s: %s (%s)", rf_want[i].what,
                     rill_err_name(rf.e[i]), rf.errstr[i]);
        cr_assert(rill_aid_is_none(rf.aid[i]), "%s: a failed spawn left an aid", rf_want[i].what);
        if (rf_want[i].in_errstr)
            cr_assert_not_null(strstr(rf.errstr[i], rf_want[i].in_errstr), "%s: errstr \"%s\"",
                               rf_want[i].what, rf.errstr[i]);
    }
    rill_aid_t aid = {1};
    cr_assert_eq(rill_consumer_spawn(sys, NULL, NULL, &aid, err, sizeof(err)), RILL_EINVAL);

    /* A live consumer: confirms of things that are not records; stats of
     * an actor of another kind fail at once. */
    const char *quick[] = {"rill.shutdown.timeout.ms", "2000", NULL};
    c = kk_conf_new(env.boot, "g", quick);
    kk_conf_subscribe1(c, "t");
    rill_aid_t k = kk_consumer_spawn_ok(sys, c, -1);
    rill_elem_t v = rill_elem_value(42);
    cr_assert_null(rill_record(&v));
    cr_assert_null(rill_record(NULL));
    cr_assert_eq(rill_record_confirm_upto(&v), RILL_EINVAL);
    cr_assert_eq(rill_record_confirm_upto(NULL), RILL_EINVAL);
    rill_aid_t other = kk_stage_spawn_ok(sys, rill_sink_ignore(), -1);
    int64_t t0 = kit_now_ms();
    rill_consumer_stats_t s;
    cr_assert_eq(rill_consumer_stats(sys, other, &s), RILL_EINVAL);
    rill_producer_stats_t ps;
    cr_assert_eq(rill_producer_stats(sys, other, &ps), RILL_EINVAL);
    cr_assert_eq(rill_producer_stats(sys, k, &ps), RILL_EINVAL);
    cr_assert_lt(kit_now_ms() - t0, 2000, "stats of the wrong kind of actor waited");
    kk_stop_wait(sys, other);
    cr_assert_eq(rill_consumer_stats(sys, k, &s), RILL_OK);
    cr_assert_eq(s.confirmed, 0);
    cr_assert_eq(rill_consumer_stats(sys, k, NULL), RILL_EINVAL);
    cr_assert_eq(rill_consumer_stats(NULL, k, &s), RILL_EINVAL);
    cr_assert_eq(rill_consumer_stats(sys, RILL_AID_NONE, &s), RILL_EINVAL);
    kk_stop_wait(sys, k);
    rill_err_t e = rill_consumer_stats(sys, k, &s);
    cr_assert_neq(e, RILL_OK, "stats of a dead consumer");
    cr_assert_eq(e, RILL_ESTOPPED, "stats of a dead consumer: %s", rill_err_name(e));

    kk_env_fini(&env);
    cr_assert_eq(KK_LEAK_CHECK(), 0, "LeakSanitizer found leaks");
}

/* ------------------------------------------------------------------ */
/* Eager rebalancing                                                   */
/* ------------------------------------------------------------------ */

#define EG_PARTS 3
#define EG_PER   500
#define EG_MORE  100

Test(kafka_consumer, eager_protocol_assigns_commits_and_rebalances, .timeout = 120)
{
    kk_env_t env;
    kk_env_init(&env);
    kk_load_topic(&env, "eager", EG_PARTS, EG_PER, 100);
    const size_t total = EG_PARTS * (EG_PER + EG_MORE);
    const char *kv[] = {"session.timeout.ms",
                        "3000",
                        "heartbeat.interval.ms",
                        "500",
                        "auto.offset.reset",
                        "earliest",
                        "rill.commit.interval.ms",
                        "100",
                        "partition.assignment.strategy",
                        "range",
                        NULL};

    kobs_t o1, o2;
    probe_t p1, p2;
    members_init(&o1, &o2, &p1, &p2, env.sys, total);
    rill_consumer_conf_t *c = kk_conf_new(env.boot, "eager-group", kv);
    kk_conf_subscribe1(c, "eager");
    rill_aid_t sink1 = probe_start(&p1, c, &o1);
    int ok;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, kobs_committed_all(&o1, EG_PARTS, EG_PER));
    cr_assert(ok, "the only member did not commit everything (assigned %#x, %ld records)",
              kobs_assigned(&o1), probe_distinct(&p1));
    cr_assert_eq(kobs_assigned(&o1), 0x7u);
    cr_assert_eq(probe_distinct(&p1), EG_PARTS * EG_PER);

    /* A second member: eager revokes everything, then both get a share. */
    c = kk_conf_new(env.boot, "eager-group", kv);
    kk_conf_subscribe1(c, "eager");
    rill_aid_t sink2 = probe_start(&p2, c, &o2);
    KK_WAIT_UNTIL(ok, KK_WAIT_MS,
                  kobs_assigned(&o2) != 0 && (kobs_assigned(&o1) | kobs_assigned(&o2)) == 0x7u);
    cr_assert(ok, "member 1 %#x, member 2 %#x", kobs_assigned(&o1), kobs_assigned(&o2));
    cr_assert_eq(kobs_assigned(&o1) & kobs_assigned(&o2), 0);
    pthread_mutex_lock(&o1.mu);
    long revokes = o1.n_revoked;
    pthread_mutex_unlock(&o1.mu);
    cr_assert_geq(revokes, 1, "member 1 saw no revoke");

    kk_produce_parts(env.boot, "eager", EG_PARTS, EG_MORE, EG_PARTS * EG_PER, 100);
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, union_missing(&p1, &p2, total) == 0);
    cr_assert(ok, "%ld records seen by neither member", union_missing(&p1, &p2, total));
    /* Member 2 started its partitions at member 1's commits. */
    for (int p = 0; p < EG_PARTS; p++)
        if (kobs_assigned(&o2) & (1u << p))
            cr_assert_eq(probe_first(&p2, p), EG_PER, "[%d] member 2 started at %" PRId64, p,
                         probe_first(&p2, p));
    /* Each member commits what it confirmed. */
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, owners_committed(&o1, &o2, EG_PARTS, EG_PER + EG_MORE));
    cr_assert(ok, "the members' commits did not reach the end");
    members_stop(&p1, &p2, sink1, sink2);
    kk_assert_committed(env.boot, "eager-group", "eager", EG_PARTS, EG_PER + EG_MORE);

    kk_env_fini(&env);
    members_fini(&o1, &o2, &p1, &p2);
}

/* ------------------------------------------------------------------ */
/* Regex subscription                                                  */
/* ------------------------------------------------------------------ */

typedef struct rx {
    rill_system_t *sys;
    rill_aid_t consumer;
    pthread_mutex_t mu;
    /* distinct records seen per topic, by seq, and every delivery */
    uint8_t seen_eu[200], seen_us[100], seen_late[50];
    long orders_eu, orders_us, orders_late, payments, other, deliveries;
} rx_t;

static void rx_mark(uint8_t *seen, size_t n, int64_t seq, long *distinct, long *other)
{
    if (seq < 0 || (size_t)seq >= n) {
        (*other)++;
        return;
    }
    if (!seen[seq]++)
        (*distinct)++;
}

static rill_err_t rx_sink(void *opaque, rill_elem_t *e)
{
    rx_t *r = opaque;
    const rd_kafka_message_t *m = rill_record(e);
    const char *t = m ? rd_kafka_topic_name(m->rkt) : "";
    int64_t seq = m ? msg_seq(m) : -1;
    pthread_mutex_lock(&r->mu);
    r->deliveries++;
    if (!strcmp(t, "orders-eu"))
        rx_mark(r->seen_eu, 200, seq, &r->orders_eu, &r->other);
    else if (!strcmp(t, "orders-us"))
        rx_mark(r->seen_us, 100, seq, &r->orders_us, &r->other);
    else if (!strcmp(t, "orders-late"))
        rx_mark(r->seen_late, 50, seq, &r->orders_late, &r->other);
    else if (!strcmp(t, "payments"))
        r->payments++;
    else
        r->other++;
    pthread_mutex_unlock(&r->mu);
    if (m)
        rill_elem_confirm(e);
    else
        rill_elem_release(e);
    return RILL_OK;
}

static long rx_get(rx_t *r, const long *field)
{
    return locked_long(&r->mu, field);
}

Test(kafka_consumer, regex_subscription_picks_up_matching_topics, .timeout = 120)
{
    kk_env_t env;
    kk_env_init(&env);
    kk_load_topic(&env, "orders-eu", 2, 100, 100);
    kk_load_topic(&env, "orders-us", 1, 100, 100);
    kk_load_topic(&env, "payments", 1, 100, 100);

    rx_t r;
    memset(&r, 0, sizeof(r));
    r.sys = env.sys;
    pthread_mutex_init(&r.mu, NULL);
    kobs_t obs;
    kobs_init(&obs);
    const char *kv[] = {"session.timeout.ms",
                        "3000",
                        "heartbeat.interval.ms",
                        "500",
                        "auto.offset.reset",
                        "earliest",
                        "topic.metadata.refresh.interval.ms",
                        "1000",
                        NULL};
    rill_consumer_conf_t *c = kk_conf_new(env.boot, "rx-group", kv);
    kk_conf_subscribe1(c, "^orders-.*");
    kobs_attach(c, &obs);
    r.consumer = kk_consumer_spawn_ok(env.sys, c, -1);
    rill_aid_t sink = kk_sink_spawn_ok(env.sys, rx_sink, &r, -1, r.consumer);
    int ok;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS,
                  rx_get(&r, &r.orders_eu) == 200 && rx_get(&r, &r.orders_us) == 100);
    cr_assert(ok, "orders-eu %ld of 200, orders-us %ld of 100", rx_get(&r, &r.orders_eu),
              rx_get(&r, &r.orders_us));

    /* A matching topic created later is picked up too. */
    kk_load_topic(&env, "orders-late", 1, 50, 100);
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, rx_get(&r, &r.orders_late) == 50);
    cr_assert(ok, "orders-late %ld of 50", rx_get(&r, &r.orders_late));
    kk_stop_wait(env.sys, r.consumer);
    kk_stop_wait(env.sys, sink);

    fprintf(stderr,
            "regex: %ld deliveries (orders-eu %ld, orders-us %ld, orders-late %ld distinct); "
            "%ld assigns, %ld revokes, %ld losses\n",
            r.deliveries, r.orders_eu, r.orders_us, r.orders_late, obs.n_assigned, obs.n_revoked,
            obs.n_lost);
    cr_assert_eq(r.payments, 0, "%ld records of payments", r.payments);
    cr_assert_eq(r.other, 0);
    cr_assert_eq(r.orders_eu, 200);
    cr_assert_eq(r.orders_us, 100);
    pthread_mutex_lock(&obs.mu);
    cr_assert_geq(obs.n_names, 4);
    for (int i = 0; i < obs.n_names; i++)
        cr_assert_eq(strncmp(obs.names[i], "orders-", 7), 0, "%s was assigned", obs.names[i]);
    pthread_mutex_unlock(&obs.mu);

    kk_env_fini(&env);
    kobs_fini(&obs);
    pthread_mutex_destroy(&r.mu);
}

/* ------------------------------------------------------------------ */
/* Records, confirm_upto and confirm_batch                             */
/* ------------------------------------------------------------------ */

#define UP_COUNT 200

Test(kafka_consumer, record_access_and_prefix_confirms, .timeout = 60)
{
    kk_env_t env;
    kk_env_init(&env);
    kk_load_topic(&env, "upto", 1, UP_COUNT, 100);

    kobs_t obs;
    kobs_init(&obs);
    probe_t pr;
    probe_init(&pr, env.sys, UP_COUNT);
    pr.hold = 1; /* hold everything */
    rill_consumer_conf_t *c = kk_conf_new(env.boot, "upto-group", NULL);
    kk_conf_assign_all(c, "upto", 1, RILL_OFFSET_BEGINNING);
    const char *kv[] = {"rill.commit.interval.ms", "100", NULL};
    kk_conf_set_kv(c, kv);
    rill_aid_t sink = probe_start(&pr, c, &obs);
    int ok;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, probe_received(&pr) == UP_COUNT);
    cr_assert(ok, "%ld of %d records", probe_received(&pr), UP_COUNT);

    /* Each element is its record, zero-copy. */
    pthread_mutex_lock(&pr.mu);
    cr_assert_eq(pr.n_held, UP_COUNT);
    for (size_t i = 0; i < pr.n_held; i++) {
        const rd_kafka_message_t *m = rill_record(&pr.held[i]);
        cr_assert_not_null(m);
        cr_assert_eq((const void *)m, pr.held[i].payload);
        cr_assert_eq(m->err, RD_KAFKA_RESP_ERR_NO_ERROR);
        cr_assert_str_eq(rd_kafka_topic_name(m->rkt), "upto");
        cr_assert_eq(m->partition, 0);
        cr_assert_eq(m->offset, (int64_t)i);
        cr_assert_eq(msg_seq(m), (int64_t)i);
        char key[32];
        int n = snprintf(key, sizeof(key), "key-%zu", i);
        cr_assert_eq(m->key_len, (size_t)n);
        cr_assert_eq(memcmp(m->key, key, (size_t)n), 0);
        cr_assert_eq(m->len, 100);
    }
    pthread_mutex_unlock(&pr.mu);

    rill_consumer_stats_t s = kk_consumer_stats_ok(env.sys, pr.consumer);
    cr_assert_eq(s.unconfirmed, UP_COUNT);
    cr_assert_eq(s.confirmed, 0);

    /* Everything up to offset 99, through one element of the partition. */
    cr_assert_eq(rill_record_confirm_upto(&pr.held[99]), RILL_OK);
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, kobs_committed_all(&obs, 1, 100));
    cr_assert(ok, "confirm_upto(99) was not committed as 100");
    s = kk_consumer_stats_ok(env.sys, pr.consumer);
    cr_assert_eq(s.confirmed, 100);
    cr_assert_eq(s.unconfirmed, UP_COUNT - 100);
    /* Again, through an older element, and its own confirm: nothing
     * changes. */
    cr_assert_eq(rill_record_confirm_upto(&pr.held[50]), RILL_OK);
    rill_elem_confirm(&pr.held[10]);
    /* The rest one by one, but for offset 150: the commit stops there. */
    for (int i = 100; i < UP_COUNT; i++)
        if (i != 150)
            rill_elem_confirm(&pr.held[i]);
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, kobs_committed_all(&obs, 1, 150));
    cr_assert(ok, "the confirms were not committed up to the gap");
    s = kk_consumer_stats_ok(env.sys, pr.consumer);
    cr_assert_eq(s.confirmed, UP_COUNT - 1);
    cr_assert_eq(s.unconfirmed, 1);
    /* Releasing an element whose record was confirmed changes nothing. */
    rill_elem_release(&pr.held[20]);
    rill_elem_confirm(&pr.held[150]);
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, kobs_committed_all(&obs, 1, UP_COUNT));
    cr_assert(ok, "the gap's confirm did not move the commit to the end");
    s = kk_consumer_stats_ok(env.sys, pr.consumer);
    cr_assert_eq(s.confirmed, UP_COUNT);
    cr_assert_eq(s.unconfirmed, 0);
    cr_assert_eq(s.fenced, 0);

    kk_stop_wait(env.sys, pr.consumer);
    /* Records outlive their consumer until released. */
    pthread_mutex_lock(&pr.mu);
    cr_assert_str_eq(rd_kafka_topic_name(rill_record(&pr.held[0])->rkt), "upto");
    cr_assert_eq(msg_seq(rill_record(&pr.held[99])), 99);
    pthread_mutex_unlock(&pr.mu);
    cr_assert_eq(rill_record_confirm_upto(&pr.held[0]), RILL_ESTOPPED);
    /* The rest of the held elements (settled already) go with the probe. */
    kk_stop_wait(env.sys, sink);
    kk_assert_committed(env.boot, "upto-group", "upto", 1, UP_COUNT);

    probe_fini(&pr);
    kk_env_fini(&env);
    kobs_fini(&obs);
}

/* ------------------------------------------------------------------ */
/* The system's embedded broker                                        */
/* ------------------------------------------------------------------ */

Test(kafka_consumer, bootstrap_servers_are_required, .timeout = 60)
{
    /* There is no default cluster: a client without bootstrap.servers is
     * refused with a sentence naming the property, and nothing starts. */
    rill_system_t *sys = kit_system(2, 0, 0, 1);
    cr_assert_not_null(sys);
    rill_system_stats_t before, after;
    rill_system_stats(sys, &before);
    char err[512] = "";
    rill_consumer_conf_t *c = rill_consumer_conf_new();
    cr_assert_eq(rill_consumer_conf_set(c, "group.id", "no-bootstrap", err, sizeof(err)), RILL_OK);
    kk_conf_assign_all(c, "anything", 1, RILL_OFFSET_BEGINNING);
    rill_aid_t aid = {42};
    cr_assert_eq(rill_consumer_spawn(sys, c, NULL, &aid, err, sizeof(err)), RILL_EINVAL);
    cr_assert(strstr(err, "bootstrap.servers"), "%s", err);
    cr_assert(rill_aid_is_none(aid));

    err[0] = '\0';
    rill_producer_conf_t *pc = rill_producer_conf_new();
    cr_assert_eq(rill_producer_spawn(sys, pc, NULL, &aid, err, sizeof(err)), RILL_EINVAL);
    cr_assert(strstr(err, "bootstrap.servers"), "%s", err);
    cr_assert(rill_aid_is_none(aid));
    rill_system_stats(sys, &after);
    cr_assert_eq(after.spawned, before.spawned, "an actor was started");

    cr_assert_eq(rill_system_stop(sys, 30000), RILL_OK);
    rill_system_destroy(sys);
}
