/*
 * Tables and the stream-table join (include/rill/state.h, "Tables and
 * joins") against the embedded broker:
 *
 *   table contents   the latest value of each key wins, tombstones delete,
 *                    records without a key are skipped, and records
 *                    produced after the open keep arriving
 *   caught up        true only once every record that was in the topic at
 *                    the open is in the table (checked from the caught-up
 *                    callback, on the table's thread, against its counts);
 *                    an empty topic is caught up at once
 *   join             holds the stream while the table is behind (nothing
 *                    emitted before it caught up), then joins every record;
 *                    inner drops (and confirms) records without a match,
 *                    left joins them with no value
 *   misuse           NULL arguments, a topic that does not exist, a store
 *                    already written, elements that are not records: each
 *                    a clear error, never a crash
 *   co-partitioned   a table that follows a source's fixed assignment holds
 *                    and serves only those partitions and joins their
 *                    records; two group members with a table each split
 *                    the partitions and join every record with its key's
 *                    value; a table nobody follows never catches up;
 *                    a member that joins and then leaves while records
 *                    flow loses none and joins each with its key's value
 *   co-partitioning  a follower holding a topic of another partition count
 *                    fails the table and its join, naming both topics and
 *                    counts; a record of a partition the table's topic
 *                    does not have fails the join
 *   eviction         a partition no follower holds is deleted from the
 *                    store after evict_ms (counted), and read again from
 *                    its beginning when it comes back
 *
 * Table topics are loaded with the testkit's generator (kafka_kit.h):
 * record seq has key "key-<seq>" and a value starting "seq=<seq> ".
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rill/state.h>

#include "support/kafka_kit.h"
#include "support/state_kit.h"
#include "support/rtest.h"

/* ---- helpers ------------------------------------------------------- */

static rill_consumer_conf_t *table_conf(kk_env_t *e, const char *const *kv)
{
    return kk_conf_new(e->boot, NULL, kv);
}

static rill_table_t *open_ok(kk_env_t *e, const char *topic, const char *const *kv,
                             const rill_table_opts_t *o)
{
    rill_table_t *t = NULL;
    char err[512] = "";
    rill_err_t r = rill_table_open(e->sys, topic, table_conf(e, kv), o, &t, err, sizeof err);
    cr_assert_eq(r, RILL_OK, "rill_table_open(%s): %s", topic, err);
    cr_assert_not_null(t);
    return t;
}

static void produce(kk_env_t *e, const char *topic, const rill_testkit_record_t *r, size_t n)
{
    char err[512] = "";
    rill_testkit_opts_t o = {.timeout_ms = 60000};
    cr_assert_eq(rill_testkit_produce(e->boot, topic, r, n, &o, err, sizeof err), RILL_OK, "%s",
                 err);
}

/* A record of key k (NULL: none) and value v (NULL: a tombstone). */
static rill_testkit_record_t rec(const char *k, const char *v)
{
    rill_testkit_record_t r = {.partition = RILL_PARTITION_ANY, .offset = -1};
    r.key = k;
    r.key_len = k ? strlen(k) : 0;
    r.value = v;
    r.value_len = v ? strlen(v) : 0;
    return r;
}

/* The table's value of key as a string ("" when absent: *found 0). */
static const char *get_str(rill_table_t *t, const char *key, char *buf, size_t size, int *found)
{
    size_t len = 0;
    rill_err_t r = rill_table_get(t, key, strlen(key), buf, size - 1, &len);
    cr_assert(r == RILL_OK || r == RILL_ENOENT, "get %s: %s", key, rill_err2str(r));
    *found = r == RILL_OK;
    buf[r == RILL_OK ? (len < size - 1 ? len : size - 1) : 0] = '\0';
    return buf;
}

static int has_value(rill_table_t *t, const char *key, const char *want)
{
    char buf[256];
    int found;
    get_str(t, key, buf, sizeof buf, &found);
    return want ? found && strcmp(buf, want) == 0 : !found;
}

static rill_table_stats_t stats_ok(rill_table_t *t)
{
    rill_table_stats_t s;
    cr_assert_eq(rill_table_stats(t, &s), RILL_OK);
    return s;
}

/* ---- table contents ---------------------------------------------------- */

Test(state_table, latest_value_wins_tombstones_delete_and_later_records_arrive, .timeout = 120)
{
    kk_env_t e;
    kk_env_init(&e);
    const char *topic = "tbl-basic";
    kk_create_topic(&e, topic, 2);
    rill_testkit_record_t before[] = {rec("k1", "v1"),    rec("k2", "a"),  rec("k1", "v2"),
                                      rec("k3", "x"),     rec("k3", NULL), rec("k4", NULL),
                                      rec(NULL, "no key")};
    produce(&e, topic, before, 7);
    rill_table_t *t = open_ok(&e, topic, NULL, NULL);
    cr_assert_eq(rill_table_wait_caught_up(t, KK_WAIT_MS), RILL_OK);
    cr_assert(rill_table_caught_up(t));
    cr_assert(has_value(t, "k1", "v2"), "the latest value wins");
    cr_assert(has_value(t, "k2", "a"));
    cr_assert(has_value(t, "k3", NULL), "a tombstone deletes its key");
    cr_assert(has_value(t, "k4", NULL), "a tombstone of a key never seen is no key");
    rill_table_stats_t s = stats_ok(t);
    cr_assert_eq(s.records, 7, "%llu records", (unsigned long long)s.records);
    cr_assert_eq(s.deletes, 1);
    cr_assert_eq(s.skipped, 1, "the record without a key");
    cr_assert_eq(s.keys, 2);
    cr_assert_eq(s.partitions, 2);
    cr_assert(s.caught_up && s.caught_up_ms >= 0);
    cr_assert_eq(s.error, RILL_OK);
    /* The keys are the state of (topic, 0) in the table's store. */
    char buf[16] = "";
    size_t len = 0;
    cr_assert_eq(rill_store_read(rill_table_store(t), topic, 0, "k2", 2, buf, sizeof buf, &len),
                 RILL_OK);
    cr_assert_eq(len, 1);
    cr_assert_eq(buf[0], 'a');

    /* Records produced after the open keep arriving. */
    rill_testkit_record_t after[] = {rec("k2", "b"), rec("k5", "new"), rec("k1", NULL)};
    produce(&e, topic, after, 3);
    int ok;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, has_value(t, "k5", "new") && has_value(t, "k1", NULL));
    cr_assert(ok, "the records produced after the open arrived");
    cr_assert(has_value(t, "k2", "b"));
    s = stats_ok(t);
    cr_assert_eq(s.records, 10);
    cr_assert_eq(s.deletes, 2);
    cr_assert_eq(s.keys, 2, "k2 and k5");
    rill_table_close(t);
    kk_env_fini(&e);
}

/* ---- caught up ------------------------------------------------------- */

#define CU_PARTS 4
#define CU_PER   2500
#define CU_N     (CU_PARTS * CU_PER)
#define CU_LATER 40

typedef struct caught_up_seen {
    _Atomic int calls;
    _Atomic uint64_t records, keys;
    _Atomic int all_keys; /* every key of the first CU_N was in the table */
} caught_up_seen_t;

static void on_caught_up(void *opaque, rill_table_t *t)
{
    caught_up_seen_t *c = opaque;
    rill_table_stats_t s;
    if (rill_table_stats(t, &s) != RILL_OK)
        return;
    atomic_store(&c->records, s.records);
    atomic_store(&c->keys, s.keys);
    int all = rill_table_caught_up(t);
    char key[32], buf[8];
    size_t len;
    for (int seq = 0; seq < CU_N && all; seq++) {
        snprintf(key, sizeof key, "key-%d", seq);
        all = rill_table_get(t, key, strlen(key), buf, sizeof buf, &len) == RILL_OK;
    }
    atomic_store(&c->all_keys, all);
    atomic_fetch_add(&c->calls, 1);
}

/* With the broker answering every request 100 ms late, the table cannot
 * catch up before a few round trips (the beginning's offset, then fetches
 * of at most 4 KiB a partition: librdkafka still takes a whole record
 * batch), so the test sees it behind and can produce while it is. */
static const char *const slow_fetch[] = {"max.partition.fetch.bytes",
                                         "4096",
                                         "fetch.max.bytes",
                                         "16384",
                                         "message.max.bytes",
                                         "4096",
                                         NULL};

Test(state_table, caught_up_only_once_the_end_offsets_seen_at_open_are_read, .timeout = 180)
{
    kk_env_t e;
    kk_env_init(&e);
    const char *topic = "tbl-caught-up";
    kk_load_topic(&e, topic, CU_PARTS, CU_PER, 64);
    cr_assert_eq(rill_broker_set_rtt(e.broker, RILL_BROKER_ALL, 100), RILL_OK);
    caught_up_seen_t seen = {0};
    rill_table_opts_t o = {.on_caught_up = on_caught_up, .opaque = &seen};
    rill_table_t *t = open_ok(&e, topic, slow_fetch, &o);
    cr_assert_not(rill_table_caught_up(t), "not caught up before a single fetch");
    cr_assert_eq(stats_ok(t).caught_up_ms, -1);
    cr_assert_eq(rill_table_wait_caught_up(t, 1), RILL_ETIMEDOUT);
    /* Records produced while the table is behind (after the open: not
     * part of what it must read to be caught up, but read all the same). */
    kk_produce_parts(e.boot, topic, CU_PARTS, CU_LATER / CU_PARTS, CU_N, 64);
    cr_assert_eq(rill_table_wait_caught_up(t, 120000), RILL_OK);
    cr_assert_eq(rill_broker_set_rtt(e.broker, RILL_BROKER_ALL, 0), RILL_OK);
    int ok;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, atomic_load(&seen.calls) == 1);
    cr_assert(ok, "the callback was called once");
    cr_assert_geq(atomic_load(&seen.records), CU_N, "caught up after %" PRIu64 " records of %d",
                  atomic_load(&seen.records), CU_N);
    cr_assert_geq(atomic_load(&seen.keys), CU_N);
    cr_assert(atomic_load(&seen.all_keys), "every record of the open's end offsets was in");
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, stats_ok(t).keys == CU_N + CU_LATER);
    cr_assert(ok, "the later records arrived: %" PRIu64 " keys", stats_ok(t).keys);
    rill_table_stats_t s = stats_ok(t);
    cr_assert_eq(s.records, CU_N + CU_LATER);
    cr_assert_gt(s.caught_up_ms, 0);
    cr_assert_gt(s.commits, 1, "read in several transactions");
    rill_table_close(t);
    kk_env_fini(&e);
}

typedef struct notified {
    _Atomic int calls;
} notified_t;

static void count_call(void *opaque, rill_table_t *t)
{
    (void)t;
    atomic_fetch_add(&((notified_t *)opaque)->calls, 1);
}

static rill_err_t count_msg(rill_ctx_t *ctx, void *state, rill_msg_t *m)
{
    (void)ctx;
    if (m->type == RILL_MSG_USER + 7)
        atomic_fetch_add(&((notified_t *)state)->calls, 1);
    return RILL_OK;
}

Test(state_table, an_empty_topic_is_caught_up_at_once_and_an_actor_is_told, .timeout = 120)
{
    kk_env_t e;
    kk_env_init(&e);
    const char *topic = "tbl-empty";
    kk_create_topic(&e, topic, 3);
    notified_t by_call = {0}, by_msg = {0};
    rill_aid_t listener;
    rill_spawn_opts_t ao = {.behavior = count_msg, .state = &by_msg};
    cr_assert_eq(rill_spawn(e.sys, &ao, &listener), RILL_OK);
    rill_table_opts_t o = {.on_caught_up = count_call,
                           .opaque = &by_call,
                           .notify = listener,
                           .notify_type = RILL_MSG_USER + 7};
    rill_table_t *t = open_ok(&e, topic, NULL, &o);
    cr_assert(rill_table_caught_up(t), "caught up when the open returned");
    cr_assert_eq(atomic_load(&by_call.calls), 1);
    cr_assert_eq(rill_table_wait_caught_up(t, 0), RILL_OK);
    rill_table_stats_t s = stats_ok(t);
    cr_assert(s.caught_up && s.caught_up_ms >= 0);
    cr_assert_eq(s.records, 0);
    cr_assert_eq(s.partitions, 3);
    int ok;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, atomic_load(&by_msg.calls) == 1);
    cr_assert(ok, "the actor was told");
    rill_testkit_record_t r = rec("only", "one");
    produce(&e, topic, &r, 1);
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, has_value(t, "only", "one"));
    cr_assert(ok);
    cr_assert_eq(atomic_load(&by_call.calls), 1, "told once");
    rill_table_close(t);
    kk_stop_wait(e.sys, listener);
    kk_env_fini(&e);
}

/* ---- joins --------------------------------------------------------------- */

typedef struct joined {
    pthread_mutex_t mu;
    char **v;
    size_t n, cap;
    rill_table_t *table;
    _Atomic int early; /* outputs seen while the table was behind */
    _Atomic int key_fn_calls;
} joined_t;

static void joined_free(joined_t *j)
{
    for (size_t i = 0; i < j->n; i++)
        free(j->v[i]);
    free(j->v);
    pthread_mutex_destroy(&j->mu);
}

static size_t joined_count(joined_t *j)
{
    pthread_mutex_lock(&j->mu);
    size_t n = j->n;
    pthread_mutex_unlock(&j->mu);
    return n;
}

/* "<record key>|<table value up to its first space, or NULL>" */
static rill_err_t join_fn(void *opaque, rill_elem_t *in, const void *value, size_t value_len,
                          rill_elem_t *out)
{
    (void)opaque;
    const rd_kafka_message_t *m = rill_record(in);
    char v[64] = "NULL";
    if (value) {
        size_t n = value_len < sizeof v - 1 ? value_len : sizeof v - 1;
        memcpy(v, value, n);
        v[n] = '\0';
        char *sp = strchr(v, ' ');
        if (sp)
            *sp = '\0';
    }
    char *s = malloc(128);
    if (!s) {
        rill_elem_release(in);
        return RILL_ENOMEM;
    }
    snprintf(s, 128, "%.*s|%s", m ? (int)m->key_len : 0, m ? (const char *)m->key : "", v);
    rill_elem_release(in);
    *out = (rill_elem_t){.payload = s, .dtor = free};
    return RILL_OK;
}

static rill_err_t collect(void *opaque, rill_elem_t *e)
{
    joined_t *j = opaque;
    if (!rill_table_caught_up(j->table))
        atomic_fetch_add(&j->early, 1);
    pthread_mutex_lock(&j->mu);
    if (j->n == j->cap) {
        j->cap = j->cap ? 2 * j->cap : 64;
        j->v = realloc(j->v, j->cap * sizeof *j->v);
    }
    j->v[j->n++] = strdup(e->payload);
    pthread_mutex_unlock(&j->mu);
    rill_elem_release(e); /* a foreach function owns its element */
    return RILL_OK;
}

static int joined_has(joined_t *j, const char *s)
{
    int found = 0;
    pthread_mutex_lock(&j->mu);
    for (size_t i = 0; i < j->n && !found; i++)
        found = strcmp(j->v[i], s) == 0;
    pthread_mutex_unlock(&j->mu);
    return found;
}

/* A pipeline: the stream topic's one partition from its beginning, the
 * join, the collecting sink. */
static rill_pipeline_t *join_pipeline(kk_env_t *e, const char *stream, const char *group,
                                      rill_table_t *t, rill_join_type_t type,
                                      const rill_join_opts_t *jo, joined_t *out)
{
    rill_consumer_conf_t *c = kk_conf_new(e->boot, group, NULL);
    kk_conf_assign_all(c, stream, 1, RD_KAFKA_OFFSET_BEGINNING);
    rill_pipeline_t *p = rill_pipeline_new(e->sys, group);
    rill_pipeline_add(p, rill_kafka_source(c), NULL);
    rill_pipeline_add(p, rill_stage_join(t, type, jo, join_fn, out), NULL);
    rill_pipeline_add(p, rill_sink_foreach(collect, out), NULL);
    char err[256] = "";
    cr_assert_eq(rill_pipeline_start(p, err, sizeof err), RILL_OK, "%s", err);
    return p;
}

static void drain_ok(rill_pipeline_t *p)
{
    rill_pipeline_result_t res;
    cr_assert_eq(rill_pipeline_drain(p), RILL_OK);
    cr_assert_eq(rill_pipeline_wait(p, 30000, &res), RILL_OK);
    cr_assert_eq(res.end, RILL_PIPELINE_COMPLETED, "%s", res.text);
    rill_pipeline_destroy(p);
}

#define JT_PARTS 2
#define JT_PER   2000
#define JS_N     50

Test(state_table, join_holds_the_stream_until_the_table_caught_up_then_joins_all, .timeout = 180)
{
    kk_env_t e;
    kk_env_init(&e);
    const char *table_topic = "join-table", *stream = "join-stream";
    kk_load_topic(&e, table_topic, JT_PARTS, JT_PER, 64);
    kk_create_topic(&e, stream, 1);
    /* Stream records whose keys are the table's last ones: only a caught
     * up table has them. */
    rill_testkit_record_t r[JS_N];
    char keys[JS_N][32];
    for (int i = 0; i < JS_N; i++) {
        snprintf(keys[i], sizeof keys[i], "key-%d", JT_PARTS * JT_PER - 1 - i);
        r[i] = rec(keys[i], "order");
        r[i].partition = 0;
    }
    produce(&e, stream, r, JS_N);
    cr_assert_eq(rill_broker_set_rtt(e.broker, RILL_BROKER_ALL, 100), RILL_OK);
    rill_table_t *t = open_ok(&e, table_topic, slow_fetch, NULL);
    joined_t out = {.table = t};
    pthread_mutex_init(&out.mu, NULL);
    rill_pipeline_t *p = join_pipeline(&e, stream, "join-hold-g", t, RILL_JOIN_INNER, NULL, &out);
    cr_assert_not(rill_table_caught_up(t), "the table is behind while the stream starts");
    cr_assert_eq(rill_table_wait_caught_up(t, 120000), RILL_OK);
    cr_assert_eq(rill_broker_set_rtt(e.broker, RILL_BROKER_ALL, 0), RILL_OK);
    int ok;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, joined_count(&out) == JS_N);
    cr_assert(ok, "joined %zu of %d", joined_count(&out), JS_N);
    cr_assert_eq(atomic_load(&out.early), 0, "nothing was emitted while the table was behind");
    for (int i = 0; i < JS_N; i++) {
        char want[96];
        snprintf(want, sizeof want, "%.31s|seq=%d", keys[i], JT_PARTS * JT_PER - 1 - i);
        cr_assert(joined_has(&out, want), "missing %s", want);
    }
    drain_ok(p);
    kk_assert_committed(e.boot, "join-hold-g", stream, 1, JS_N);
    rill_table_close(t);
    joined_free(&out);
    kk_env_fini(&e);
}

static void inner_or_left(rill_join_type_t type)
{
    kk_env_t e;
    kk_env_init(&e);
    const char *table_topic = type == RILL_JOIN_INNER ? "il-table-inner" : "il-table-left";
    const char *stream = type == RILL_JOIN_INNER ? "il-stream-inner" : "il-stream-left";
    const char *group = type == RILL_JOIN_INNER ? "il-inner-g" : "il-left-g";
    kk_load_topic(&e, table_topic, 2, 10, 32); /* key-0 .. key-19 */
    kk_create_topic(&e, stream, 1);
    const char *keys[] = {"key-1", "missing-a", "key-7", "key-19", "missing-b", "key-0"};
    rill_testkit_record_t r[6];
    for (int i = 0; i < 6; i++) {
        r[i] = rec(keys[i], "x");
        r[i].partition = 0;
    }
    rill_testkit_record_t nokey = rec(NULL, "no key");
    nokey.partition = 0;
    produce(&e, stream, r, 6);
    produce(&e, stream, &nokey, 1);
    rill_table_t *t = open_ok(&e, table_topic, NULL, NULL);
    joined_t out = {.table = t};
    pthread_mutex_init(&out.mu, NULL);
    rill_pipeline_t *p = join_pipeline(&e, stream, group, t, type, NULL, &out);
    size_t want = type == RILL_JOIN_INNER ? 4 : 7;
    int ok;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, joined_count(&out) == want);
    cr_assert(ok, "joined %zu, want %zu", joined_count(&out), want);
    cr_assert(joined_has(&out, "key-1|seq=1"));
    cr_assert(joined_has(&out, "key-7|seq=7"));
    cr_assert(joined_has(&out, "key-19|seq=19"));
    cr_assert(joined_has(&out, "key-0|seq=0"));
    if (type == RILL_JOIN_LEFT) {
        cr_assert(joined_has(&out, "missing-a|NULL"));
        cr_assert(joined_has(&out, "missing-b|NULL"));
        cr_assert(joined_has(&out, "|NULL"), "a record without a key has no match");
    }
    drain_ok(p);
    /* Every record was confirmed: the inner join's drops too. */
    kk_assert_committed(e.boot, group, stream, 1, 7);
    cr_assert_eq(joined_count(&out), want, "nothing more after the drain");
    rill_table_close(t);
    joined_free(&out);
    kk_env_fini(&e);
}

Test(state_table, inner_join_drops_and_confirms_records_without_a_match, .timeout = 120)
{
    inner_or_left(RILL_JOIN_INNER);
}

Test(state_table, left_join_joins_records_without_a_match_with_no_value, .timeout = 120)
{
    inner_or_left(RILL_JOIN_LEFT);
}

/* A key function: the record's value ("key-<n>") is the key. */
static rill_err_t value_as_key(void *opaque, const rill_elem_t *in, const void **key,
                               size_t *key_len)
{
    joined_t *j = opaque;
    atomic_fetch_add(&j->key_fn_calls, 1);
    const rd_kafka_message_t *m = rill_record(in);
    if (!m || !m->payload)
        return RILL_ENOENT;
    *key = m->payload;
    *key_len = m->len;
    return RILL_OK;
}

Test(state_table, a_key_function_chooses_what_is_joined_on, .timeout = 120)
{
    kk_env_t e;
    kk_env_init(&e);
    kk_load_topic(&e, "kf-table", 1, 5, 32);
    kk_create_topic(&e, "kf-stream", 1);
    rill_testkit_record_t r[2] = {rec("a", "key-3"), rec("b", "key-9")};
    r[0].partition = r[1].partition = 0;
    produce(&e, "kf-stream", r, 2);
    rill_table_t *t = open_ok(&e, "kf-table", NULL, NULL);
    joined_t out = {.table = t};
    pthread_mutex_init(&out.mu, NULL);
    rill_join_opts_t jo = {.key_fn = value_as_key};
    rill_pipeline_t *p = join_pipeline(&e, "kf-stream", "kf-g", t, RILL_JOIN_LEFT, &jo, &out);
    int ok;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, joined_count(&out) == 2);
    cr_assert(ok);
    cr_assert(joined_has(&out, "a|seq=3"));
    cr_assert(joined_has(&out, "b|NULL"));
    cr_assert_eq(atomic_load(&out.key_fn_calls), 2);
    drain_ok(p);
    rill_table_close(t);
    joined_free(&out);
    kk_env_fini(&e);
}

/* ---- misuse ----------------------------------------------------------- */

Test(state_table, bad_arguments_get_clear_errors, .timeout = 120)
{
    kk_env_t e;
    kk_env_init(&e);
    kk_create_topic(&e, "misuse-t", 1);
    rill_table_t *t = NULL;
    char err[512] = "";
    cr_assert_eq(rill_table_open(NULL, "misuse-t", table_conf(&e, NULL), NULL, &t, err, sizeof err),
                 RILL_EINVAL);
    cr_assert_not_null(strstr(err, "NULL"), "%s", err);
    cr_assert_eq(rill_table_open(e.sys, NULL, table_conf(&e, NULL), NULL, &t, err, sizeof err),
                 RILL_EINVAL);
    cr_assert_eq(rill_table_open(e.sys, "misuse-t", NULL, NULL, &t, err, sizeof err), RILL_EINVAL);
    cr_assert_eq(
        rill_table_open(e.sys, "misuse-t", table_conf(&e, NULL), NULL, NULL, err, sizeof err),
        RILL_EINVAL);
    cr_assert_eq(
        rill_table_open(e.sys, "bad/name", table_conf(&e, NULL), NULL, &t, err, sizeof err),
        RILL_EINVAL);
    cr_assert_null(t);

    /* A topic that does not exist. */
    err[0] = '\0';
    rill_err_t r =
        rill_table_open(e.sys, "no-such-topic", table_conf(&e, NULL), NULL, &t, err, sizeof err);
    cr_assert_eq(r, RILL_ENOENT, "%s: %s", rill_err_name(r), err);
    cr_assert_not_null(strstr(err, "no-such-topic"), "%s", err);
    cr_assert_not_null(strstr(err, "does not exist"), "%s", err);
    cr_assert_null(t);

    /* No bootstrap.servers. */
    cr_assert_eq(rill_table_open(e.sys, "misuse-t", kk_conf_new(NULL, NULL, NULL), NULL, &t, err,
                                 sizeof err),
                 RILL_EINVAL);
    cr_assert_not_null(strstr(err, "bootstrap.servers"), "%s", err);

    /* A store has one writer: a second table over it is refused, and so
     * is a stateful stage. */
    rill_store_t *s = NULL;
    cr_assert_eq(rill_store_open_memory("shared", &s, NULL, 0), RILL_OK);
    rill_table_opts_t so = {.store = s};
    t = open_ok(&e, "misuse-t", NULL, &so);
    rill_table_t *t2 = NULL;
    cr_assert_eq(
        rill_table_open(e.sys, "misuse-t", table_conf(&e, NULL), &so, &t2, err, sizeof err),
        RILL_ESTATE);
    cr_assert_not_null(strstr(err, "shared"), "%s", err);
    cr_assert_null(t2);

    /* Reads and stats. */
    size_t len;
    char buf[8];
    cr_assert_eq(rill_table_get(NULL, "k", 1, buf, sizeof buf, &len), RILL_EINVAL);
    cr_assert_eq(rill_table_get(t, "k", 0, buf, sizeof buf, &len), RILL_EINVAL);
    cr_assert_eq(rill_table_get(t, NULL, 1, buf, sizeof buf, &len), RILL_EINVAL);
    cr_assert_eq(rill_table_get(t, "k", 1, buf, sizeof buf, NULL), RILL_EINVAL);
    cr_assert_eq(rill_table_get(t, "k", 1, buf, sizeof buf, &len), RILL_ENOENT);
    cr_assert_eq(rill_table_wait_caught_up(NULL, 0), RILL_EINVAL);
    cr_assert_eq(rill_table_stats(NULL, NULL), RILL_EINVAL);
    cr_assert_eq(rill_table_stats(t, NULL), RILL_EINVAL);
    cr_assert_eq(rill_table_caught_up(NULL), 0);
    cr_assert_null(rill_table_store(NULL));
    rill_table_close(NULL);

    /* Join specs. */
    rill_stage_t *bad = rill_stage_join(NULL, RILL_JOIN_INNER, NULL, join_fn, NULL);
    cr_assert_eq(rill_stage_error(bad, err, sizeof err), RILL_EINVAL);
    cr_assert_not_null(strstr(err, "NULL"), "%s", err);
    rill_stage_free(bad);
    bad = rill_stage_join(t, RILL_JOIN_INNER, NULL, NULL, NULL);
    cr_assert_eq(rill_stage_error(bad, NULL, 0), RILL_EINVAL);
    rill_stage_free(bad);
    bad = rill_stage_join(t, (rill_join_type_t)42, NULL, join_fn, NULL);
    cr_assert_eq(rill_stage_error(bad, err, sizeof err), RILL_EINVAL);
    cr_assert_not_null(strstr(err, "join type"), "%s", err);
    rill_stage_free(bad);

    /* Elements that are not records, without a key function. */
    joined_t out = {.table = t};
    pthread_mutex_init(&out.mu, NULL);
    rill_pipeline_t *p = rill_pipeline_new(e.sys, "not-records");
    rill_pipeline_add(p, rill_source_range(0, 10), NULL);
    rill_pipeline_add(p, rill_stage_join(t, RILL_JOIN_LEFT, NULL, join_fn, &out), NULL);
    rill_pipeline_add(p, rill_sink_foreach(collect, &out), NULL);
    cr_assert_eq(rill_pipeline_start(p, err, sizeof err), RILL_OK, "%s", err);
    rill_pipeline_result_t res;
    cr_assert_eq(rill_pipeline_wait(p, 30000, &res), RILL_OK);
    rill_pipeline_destroy(p);
    cr_assert_eq(res.end, RILL_PIPELINE_FAILED);
    cr_assert_not_null(strstr(res.text, "not a Kafka record"), "%s", res.text);
    cr_assert_eq(joined_count(&out), 0);
    joined_free(&out);

    rill_table_close(t);
    /* The store is free again once the table closed. */
    t = open_ok(&e, "misuse-t", NULL, &so);
    rill_table_close(t);
    rill_store_close(s);
    kk_env_fini(&e);
}

/* ---- stores ------------------------------------------------------------ */

/* A table in an LMDB store stores its offsets with its keys: reopened, it
 * goes on from where it was instead of reading the topic again. */
Test(state_table, an_lmdb_table_reopens_where_its_last_commit_was, .timeout = 120)
{
    kk_env_t e;
    kk_env_init(&e);
    kk_load_topic(&e, "lmdb-table", 2, 300, 32);
    char dir[] = "/tmp/rill-table-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    rill_store_t *s = NULL;
    char err[512] = "";
    cr_assert_eq(rill_store_open_lmdb(dir, NULL, &s, err, sizeof err), RILL_OK, "%s", err);
    rill_table_opts_t o = {.store = s};
    rill_table_t *t = open_ok(&e, "lmdb-table", NULL, &o);
    cr_assert_eq(rill_table_wait_caught_up(t, KK_WAIT_MS), RILL_OK);
    cr_assert_eq(stats_ok(t).keys, 600);
    rill_table_close(t);
    int64_t off = -1;
    cr_assert_eq(rill_store_offset(s, "lmdb-table", 1, &off), RILL_OK);
    cr_assert_eq(off, 300);
    rill_store_close(s);

    kk_produce_parts(e.boot, "lmdb-table", 2, 5, 600, 32); /* key-600 .. key-609 */
    cr_assert_eq(rill_store_open_lmdb(dir, NULL, &s, err, sizeof err), RILL_OK, "%s", err);
    o.store = s;
    t = open_ok(&e, "lmdb-table", NULL, &o);
    cr_assert_eq(rill_table_wait_caught_up(t, KK_WAIT_MS), RILL_OK);
    rill_table_stats_t st = stats_ok(t);
    cr_assert_eq(st.records, 10, "only the new records were read (%" PRIu64 ")", st.records);
    cr_assert_eq(st.keys, 610);
    cr_assert(has_value(t, "key-3", NULL) == 0, "the old keys are there");
    rill_table_close(t);
    rill_store_close(s);
    sk_rm_rf(dir);
    kk_env_fini(&e);
}

/* A store too small: the table stops reading with a sentence, waiting for
 * it to catch up fails, and a join over it fails instead of holding (or
 * joining with stale values) for ever. */
Test(state_table, a_table_whose_store_is_full_fails_and_so_do_its_joins, .timeout = 120)
{
    kk_env_t e;
    kk_env_init(&e);
    kk_load_topic(&e, "full-table", 1, 2000, 200);
    kk_create_topic(&e, "full-stream", 1);
    rill_testkit_record_t r = rec("key-1", "x");
    r.partition = 0;
    produce(&e, "full-stream", &r, 1);
    char dir[] = "/tmp/rill-table-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    rill_store_t *s = NULL;
    char err[512] = "";
    rill_store_opts_t so = {.map_size = 64 * 1024, .no_sync = 1};
    cr_assert_eq(rill_store_open_lmdb(dir, &so, &s, err, sizeof err), RILL_OK, "%s", err);
    rill_table_opts_t o = {.store = s};
    rill_table_t *t = open_ok(&e, "full-table", NULL, &o);
    rill_err_t w = rill_table_wait_caught_up(t, KK_WAIT_MS);
    cr_assert_eq(w, RILL_EFULL, "%s", rill_err_name(w));
    rill_table_stats_t st = stats_ok(t);
    cr_assert_eq(st.error, RILL_EFULL);
    cr_assert_not_null(strstr(st.error_text, "full-table"), "%s", st.error_text);
    cr_assert_not(st.caught_up);

    joined_t out = {.table = t};
    pthread_mutex_init(&out.mu, NULL);
    rill_consumer_conf_t *c = kk_conf_new(e.boot, "full-g", NULL);
    kk_conf_assign_all(c, "full-stream", 1, RD_KAFKA_OFFSET_BEGINNING);
    rill_pipeline_t *p = rill_pipeline_new(e.sys, "full");
    rill_pipeline_add(p, rill_kafka_source(c), NULL);
    rill_pipeline_add(p, rill_stage_join(t, RILL_JOIN_LEFT, NULL, join_fn, &out), NULL);
    rill_pipeline_add(p, rill_sink_foreach(collect, &out), NULL);
    cr_assert_eq(rill_pipeline_start(p, err, sizeof err), RILL_OK, "%s", err);
    rill_pipeline_result_t res;
    cr_assert_eq(rill_pipeline_wait(p, 30000, &res), RILL_OK);
    rill_pipeline_destroy(p);
    cr_assert_eq(res.end, RILL_PIPELINE_FAILED);
    cr_assert_not_null(strstr(res.text, "full-table"), "%s", res.text);
    cr_assert_eq(joined_count(&out), 0);
    joined_free(&out);
    rill_table_close(t);
    rill_store_close(s);
    sk_rm_rf(dir);
    kk_env_fini(&e);
}

/* ---- co-partitioned tables ----------------------------------------------- */

#define CP_PARTS 4
#define CP_KEYS  40

/* Two co-partitioned topics: table records "ck-<i>" -> "tv-<i>", stream
 * records of the same keys, both produced with RILL_PARTITION_ANY (the
 * same partitioner puts a key in the same partition number of both).
 * part[i] gets key i's partition, read back from both topics. */
static void cp_setup(kk_env_t *e, const char *table_topic, const char *stream,
                     int32_t part[CP_KEYS], char keys[CP_KEYS][16], char vals[CP_KEYS][16])
{
    kk_create_topic(e, table_topic, CP_PARTS);
    kk_create_topic(e, stream, CP_PARTS);
    rill_testkit_record_t tr[CP_KEYS], sr[CP_KEYS];
    for (int i = 0; i < CP_KEYS; i++) {
        snprintf(keys[i], 16, "ck-%d", i);
        snprintf(vals[i], 16, "tv-%d", i);
        tr[i] = rec(keys[i], vals[i]);
        sr[i] = rec(keys[i], "order");
        part[i] = -1;
    }
    produce(e, table_topic, tr, CP_KEYS);
    produce(e, stream, sr, CP_KEYS);
    const char *topics[] = {table_topic, stream};
    for (int k = 0; k < 2; k++) {
        rill_consumed_t *c = NULL;
        char err[256] = "";
        rill_testkit_opts_t o = {.timeout_ms = 30000};
        cr_assert_eq(
            rill_testkit_consume(e->boot, topics[k], RILL_CONSUME_TO_END, &o, &c, err, sizeof err),
            RILL_OK, "%s", err);
        cr_assert_eq(rill_consumed_count(c), CP_KEYS);
        for (size_t j = 0; j < rill_consumed_count(c); j++) {
            const rill_testkit_record_t *r = rill_consumed_at(c, j);
            char key[32] = "";
            memcpy(key, r->key, r->key_len < sizeof(key) - 1 ? r->key_len : sizeof(key) - 1);
            int i = atoi(key + 3); /* the record's key is not a string */
            cr_assert(k == 0 || part[i] == r->partition, "key %d: partition %d and %d", i,
                      (int)part[i], (int)r->partition);
            part[i] = r->partition;
        }
        rill_consumed_destroy(c);
    }
}

static rill_table_t *open_partitioned(kk_env_t *e, const char *topic)
{
    rill_table_opts_t o = {.partitioned = 1};
    return open_ok(e, topic, NULL, &o);
}

Test(state_table, a_co_partitioned_table_holds_and_joins_only_its_sources_partitions,
     .timeout = 180)
{
    kk_env_t e;
    kk_env_init(&e);
    const char *table_topic = "cp-fixed-table", *stream = "cp-fixed-stream";
    int32_t part[CP_KEYS];
    char keys[CP_KEYS][16], vals[CP_KEYS][16];
    cp_setup(&e, table_topic, stream, part, keys, vals);
    size_t mine = 0;
    for (int i = 0; i < CP_KEYS; i++)
        mine += part[i] == 0 || part[i] == 2;
    cr_assert(mine > 0 && mine < CP_KEYS, "the keys spread over the partitions");

    rill_table_t *t = open_partitioned(&e, table_topic);
    cr_assert_not(rill_table_caught_up(t), "nothing to follow yet");
    rill_consumer_conf_t *c = kk_conf_new(e.boot, "cp-fixed-g", NULL);
    char err[256] = "";
    cr_assert_eq(
        rill_consumer_conf_assign(c, stream, 0, RD_KAFKA_OFFSET_BEGINNING, err, sizeof err),
        RILL_OK, "%s", err);
    cr_assert_eq(
        rill_consumer_conf_assign(c, stream, 2, RD_KAFKA_OFFSET_BEGINNING, err, sizeof err),
        RILL_OK, "%s", err);
    cr_assert_eq(rill_consumer_conf_follow_table(c, t), RILL_OK);
    cr_assert_eq(rill_consumer_conf_follow_table(c, t), RILL_ESTATE, "one table per conf");
    joined_t out = {.table = t};
    pthread_mutex_init(&out.mu, NULL);
    rill_pipeline_t *p = rill_pipeline_new(e.sys, "cp-fixed");
    rill_pipeline_add(p, rill_kafka_source(c), NULL);
    rill_pipeline_add(p, rill_stage_join(t, RILL_JOIN_INNER, NULL, join_fn, &out), NULL);
    rill_pipeline_add(p, rill_sink_foreach(collect, &out), NULL);
    cr_assert_eq(rill_pipeline_start(p, err, sizeof err), RILL_OK, "%s", err);
    cr_assert_eq(rill_table_wait_caught_up(t, KK_WAIT_MS), RILL_OK);

    int ok;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, joined_count(&out) == mine);
    cr_assert(ok, "joined %zu of %zu", joined_count(&out), mine);
    cr_assert_eq(atomic_load(&out.early), 0, "nothing was joined before the table caught up");
    rill_table_stats_t s = stats_ok(t);
    cr_assert_eq(s.followed, 2);
    cr_assert_eq(s.keys, mine, "only the keys of partitions 0 and 2");
    for (int i = 0; i < CP_KEYS; i++) {
        int held = part[i] == 0 || part[i] == 2;
        cr_assert(has_value(t, keys[i], held ? vals[i] : NULL), "%s (partition %d)", keys[i],
                  (int)part[i]);
        char want[48], buf[16];
        snprintf(want, sizeof want, "%.15s|%.15s", keys[i], vals[i]);
        cr_assert_eq(joined_has(&out, want), held, "%s joined: %d", want, held);
        size_t len = 0;
        rill_err_t r = rill_store_read(rill_table_store(t), table_topic, part[i], keys[i],
                                       strlen(keys[i]), buf, sizeof buf, &len);
        cr_assert_eq(r, held ? RILL_OK : RILL_ENOENT, "%s is the state of (topic, %d)", keys[i],
                     (int)part[i]);
    }
    drain_ok(p);
    /* The run's end revoked the partitions: kept in the store (evict_ms's
     * default is 10 minutes), not served. */
    cr_assert_eq(stats_ok(t).followed, 0);
    cr_assert_eq(stats_ok(t).evicted, 0);
    cr_assert_eq(stats_ok(t).keys, mine);
    for (int i = 0; i < CP_KEYS; i++) {
        cr_assert(has_value(t, keys[i], NULL));
        char buf[16];
        size_t len = 0;
        rill_err_t r = rill_store_read(rill_table_store(t), table_topic, part[i], keys[i],
                                       strlen(keys[i]), buf, sizeof buf, &len);
        cr_assert_eq(r, part[i] == 0 || part[i] == 2 ? RILL_OK : RILL_ENOENT, "%s kept", keys[i]);
    }
    rill_table_close(t);
    joined_free(&out);
    kk_env_fini(&e);
}

/* Whether every key's record was joined with its value, by either member. */
static int cp_all_joined(joined_t out[2], char keys[CP_KEYS][16], char vals[CP_KEYS][16])
{
    for (int i = 0; i < CP_KEYS; i++) {
        char want[48];
        snprintf(want, sizeof want, "%.15s|%.15s", keys[i], vals[i]);
        if (!joined_has(&out[0], want) && !joined_has(&out[1], want))
            return 0;
    }
    return 1;
}

Test(state_table, two_group_members_split_the_partitions_and_join_every_record, .timeout = 240)
{
    kk_env_t e;
    kk_env_init(&e);
    const char *table_topic = "cp-group-table", *stream = "cp-group-stream";
    int32_t part[CP_KEYS];
    char keys[CP_KEYS][16], vals[CP_KEYS][16];
    cp_setup(&e, table_topic, stream, part, keys, vals);
    /* The mock rebalances a group whose member left only after
     * session.timeout.ms - 1 s (LIBRDKAFKA-NOTES): short. The group has
     * no committed offsets: from the beginning. */
    const char *kv[] = {
        "session.timeout.ms", "6000", "heartbeat.interval.ms", "500", "auto.offset.reset",
        "earliest",           NULL};
    rill_table_t *t[2];
    joined_t out[2];
    rill_pipeline_t *p[2];
    for (int m = 0; m < 2; m++) {
        t[m] = open_partitioned(&e, table_topic);
        out[m] = (joined_t){.table = t[m]};
        pthread_mutex_init(&out[m].mu, NULL);
        rill_consumer_conf_t *c = kk_conf_new(e.boot, "cp-group-g", kv);
        kk_conf_subscribe1(c, stream);
        cr_assert_eq(rill_consumer_conf_follow_table(c, t[m]), RILL_OK);
        p[m] = rill_pipeline_new(e.sys, m ? "cp-group-b" : "cp-group-a");
        rill_pipeline_add(p[m], rill_kafka_source(c), NULL);
        rill_pipeline_add(p[m], rill_stage_join(t[m], RILL_JOIN_INNER, NULL, join_fn, &out[m]),
                          NULL);
        rill_pipeline_add(p[m], rill_sink_foreach(collect, &out[m]), NULL);
        char err[256] = "";
        cr_assert_eq(rill_pipeline_start(p[m], err, sizeof err), RILL_OK, "%s", err);
    }
    /* Every stream record is joined (inner: only with a match), whichever
     * member had its partition when. */
    int ok;
    size_t total = 0;
    /* Each key, not a count: a record joined by one member, then again
     * by the other after a rebalance (at-least-once), counts twice. */
    KK_WAIT_UNTIL(ok, 90000,
                  (total = joined_count(&out[0]) + joined_count(&out[1]),
                   cp_all_joined(out, keys, vals) && stats_ok(t[0]).followed > 0 &&
                       stats_ok(t[1]).followed > 0 && rill_table_caught_up(t[0]) &&
                       rill_table_caught_up(t[1])));
    cr_assert(ok, "joined %zu of %d; followed %d and %d", total, CP_KEYS,
              (int)stats_ok(t[0]).followed, (int)stats_ok(t[1]).followed);
    cr_assert_eq(stats_ok(t[0]).followed + stats_ok(t[1]).followed, CP_PARTS,
                 "the members split the partitions");
    for (int i = 0; i < CP_KEYS; i++) {
        char want[48];
        snprintf(want, sizeof want, "%.15s|%.15s", keys[i], vals[i]);
        cr_assert(joined_has(&out[0], want) || joined_has(&out[1], want), "missing %s", want);
        /* Each key is served by the one table that follows its partition. */
        int in0 = has_value(t[0], keys[i], vals[i]), in1 = has_value(t[1], keys[i], vals[i]);
        cr_assert(in0 != in1, "%s (partition %d): table a %d, table b %d", keys[i], (int)part[i],
                  in0, in1);
    }
    for (int m = 0; m < 2; m++) {
        pthread_mutex_lock(&out[m].mu);
        for (size_t k = 0; k < out[m].n; k++) {
            int i = atoi(out[m].v[k] + 3);
            char want[48];
            snprintf(want, sizeof want, "%.15s|%.15s", keys[i], vals[i]);
            cr_assert_str_eq(out[m].v[k], want, "joined with its key's value");
        }
        pthread_mutex_unlock(&out[m].mu);
    }
    for (int m = 0; m < 2; m++)
        drain_ok(p[m]);
    for (int m = 0; m < 2; m++) {
        rill_table_close(t[m]);
        joined_free(&out[m]);
    }
    kk_env_fini(&e);
}

Test(state_table, a_co_partitioned_table_nobody_follows_never_catches_up, .timeout = 120)
{
    kk_env_t e;
    kk_env_init(&e);
    const char *topic = "cp-alone";
    kk_create_topic(&e, topic, CP_PARTS);
    rill_testkit_record_t r[] = {rec("a", "1"), rec("b", "2")};
    produce(&e, topic, r, 2);
    rill_table_t *t = open_partitioned(&e, topic);
    cr_assert_eq(rill_table_wait_caught_up(t, 1500), RILL_ETIMEDOUT);
    cr_assert_not(rill_table_caught_up(t));
    rill_table_stats_t s = stats_ok(t);
    cr_assert_eq(s.followed, 0);
    cr_assert_eq(s.records, 0, "it reads nothing");
    cr_assert_eq(s.caught_up_ms, -1);
    cr_assert(has_value(t, "a", NULL), "no partition is served");
    rill_table_close(t);
    kk_env_fini(&e);
}

static void other_rebalance(void *opaque, rill_rebalance_event_t ev,
                            const rd_kafka_topic_partition_list_t *parts)
{
    (void)opaque;
    (void)ev;
    (void)parts;
}

Test(state_table, following_a_table_refuses_bad_arguments, .timeout = 120)
{
    kk_env_t e;
    kk_env_init(&e);
    kk_create_topic(&e, "cp-misuse", 2);
    rill_table_t *cp = open_partitioned(&e, "cp-misuse");
    rill_table_t *global = open_ok(&e, "cp-misuse", NULL, NULL);
    rill_consumer_conf_t *c = kk_conf_new(e.boot, "cp-misuse-g", NULL);
    cr_assert_eq(rill_consumer_conf_follow_table(NULL, cp), RILL_EINVAL);
    cr_assert_eq(rill_consumer_conf_follow_table(c, NULL), RILL_EINVAL);
    cr_assert_eq(rill_consumer_conf_follow_table(c, global), RILL_EINVAL, "a global table");
    cr_assert_eq(rill_consumer_conf_set_rebalance_cb(c, other_rebalance, NULL), RILL_OK);
    cr_assert_eq(rill_consumer_conf_follow_table(c, cp), RILL_ESTATE, "a rebalance callback");
    rill_consumer_conf_destroy(c);
    cr_assert_eq(stats_ok(cp).followed, 0);
    cr_assert_eq(stats_ok(global).followed, 2);
    rill_table_close(global);
    rill_table_close(cp);
    kk_env_fini(&e);
}

/* ---- co-partitioning checked ---------------------------------------------- */

/* A pipeline over a co-partitioned table t: a source of stream's
 * partitions parts[0..n-1] (fixed, from their beginning; following t if
 * follow), a left join with join_fn, the collecting sink. */
static rill_pipeline_t *cp_pipeline(kk_env_t *e, const char *name, const char *stream,
                                    const int32_t *parts, int n, rill_table_t *t, int follow,
                                    joined_t *out)
{
    rill_consumer_conf_t *c = kk_conf_new(e->boot, name, NULL);
    char err[256] = "";
    for (int i = 0; i < n; i++)
        cr_assert_eq(rill_consumer_conf_assign(c, stream, parts[i], RD_KAFKA_OFFSET_BEGINNING, err,
                                               sizeof err),
                     RILL_OK, "%s", err);
    if (follow)
        cr_assert_eq(rill_consumer_conf_follow_table(c, t), RILL_OK);
    rill_pipeline_t *p = rill_pipeline_new(e->sys, name);
    rill_pipeline_add(p, rill_kafka_source(c), NULL);
    rill_pipeline_add(p, rill_stage_join(t, RILL_JOIN_LEFT, NULL, join_fn, out), NULL);
    rill_pipeline_add(p, rill_sink_foreach(collect, out), NULL);
    cr_assert_eq(rill_pipeline_start(p, err, sizeof err), RILL_OK, "%s", err);
    return p;
}

/* Wait for p's end (it must end by itself) and destroy it. */
static rill_pipeline_result_t ended(rill_pipeline_t *p)
{
    rill_pipeline_result_t res;
    cr_assert_eq(rill_pipeline_wait(p, 30000, &res), RILL_OK);
    rill_pipeline_destroy(p);
    return res;
}

Test(state_table, a_follower_of_another_partition_count_fails_the_table_and_its_join,
     .timeout = 120)
{
    kk_env_t e;
    kk_env_init(&e);
    const char *table_topic = "cpx-table";
    kk_create_topic(&e, table_topic, CP_PARTS);
    rill_testkit_record_t tr = rec("a", "tv-a");
    tr.partition = 0;
    produce(&e, table_topic, &tr, 1);
    /* A topic of more partitions, and one of fewer: each has a record of
     * key "a" in partition 0, the table's too, which a check of the keys
     * alone would let through. */
    const struct {
        const char *stream;
        int parts;
    } cases[] = {{"cpx-more", 6}, {"cpx-fewer", 2}};
    const int32_t all[6] = {0, 1, 2, 3, 4, 5};
    for (int k = 0; k < 2; k++) {
        kk_create_topic(&e, cases[k].stream, cases[k].parts);
        rill_testkit_record_t sr = rec("a", "order");
        sr.partition = 0;
        produce(&e, cases[k].stream, &sr, 1);
        rill_table_t *t = open_partitioned(&e, table_topic);
        joined_t out = {.table = t};
        pthread_mutex_init(&out.mu, NULL);
        rill_pipeline_t *p =
            cp_pipeline(&e, cases[k].stream, cases[k].stream, all, cases[k].parts, t, 1, &out);
        rill_err_t w = rill_table_wait_caught_up(t, KK_WAIT_MS);
        cr_assert_eq(w, RILL_EINVAL, "%s: %s", cases[k].stream, rill_err_name(w));
        char want[256];
        snprintf(want, sizeof want,
                 "table %s: not co-partitioned with %s: %s has %d partitions, %s has %d",
                 table_topic, cases[k].stream, cases[k].stream, cases[k].parts, table_topic,
                 CP_PARTS);
        rill_table_stats_t s = stats_ok(t);
        cr_assert_eq(s.error, RILL_EINVAL);
        cr_assert_str_eq(s.error_text, want);
        cr_assert_not(s.caught_up);
        cr_assert_not(rill_table_caught_up(t), "a failed table is not caught up");
        cr_assert_eq(s.records, 0, "it read nothing of a stream it cannot serve");
        /* The join fails with the table's sentence instead of holding its
         * stream for ever; nothing was joined. */
        rill_pipeline_result_t res = ended(p);
        cr_assert_eq(res.end, RILL_PIPELINE_FAILED);
        cr_assert_not_null(strstr(res.text, want), "%s", res.text);
        cr_assert_eq(joined_count(&out), 0);
        joined_free(&out);
        rill_table_close(t);
    }

    /* A record of a partition the table's topic does not have, from a
     * source that does not follow the table (the table cannot tell): the
     * join fails with a sentence rather than find it no match. */
    rill_testkit_record_t sr = rec("a", "order");
    sr.partition = 5;
    produce(&e, "cpx-more", &sr, 1);
    rill_table_t *t = open_partitioned(&e, table_topic);
    joined_t out = {.table = t};
    pthread_mutex_init(&out.mu, NULL);
    rill_pipeline_t *p = cp_pipeline(&e, "cpx-p5", "cpx-more", &all[5], 1, t, 0, &out);
    rill_pipeline_result_t res = ended(p);
    cr_assert_eq(res.end, RILL_PIPELINE_FAILED);
    cr_assert_not_null(strstr(res.text, "table cpx-table: not co-partitioned with cpx-more: a "
                                        "record of its partition 5, cpx-table has 4"),
                       "%s", res.text);
    cr_assert_eq(joined_count(&out), 0);
    cr_assert_eq(stats_ok(t).error, RILL_OK, "the table itself is fine");
    joined_free(&out);
    rill_table_close(t);
    kk_env_fini(&e);
}

/* ---- eviction ----------------------------------------------------------- */

static int count_visit(void *opaque, const void *key, size_t key_len, const void *value,
                       size_t value_len)
{
    (void)key;
    (void)key_len;
    (void)value;
    (void)value_len;
    (*(size_t *)opaque)++;
    return 0;
}

/* The keys of (topic, p) in store. */
static size_t store_keys(rill_store_t *s, const char *topic, int32_t p)
{
    size_t n = 0;
    cr_assert_eq(rill_store_scan(s, topic, p, NULL, 0, NULL, 0, count_visit, &n), RILL_OK);
    return n;
}

#define EV_MS 300

Test(state_table, a_partition_no_follower_holds_is_evicted_and_read_again_when_it_comes_back,
     .timeout = 180)
{
    kk_env_t e;
    kk_env_init(&e);
    const char *table_topic = "ev-table", *stream = "ev-stream";
    int32_t part[CP_KEYS];
    char keys[CP_KEYS][16], vals[CP_KEYS][16];
    cp_setup(&e, table_topic, stream, part, keys, vals);
    size_t n0 = 0, n2 = 0;
    for (int i = 0; i < CP_KEYS; i++) {
        n0 += part[i] == 0;
        n2 += part[i] == 2;
    }
    cr_assert(n0 > 0 && n2 > 0, "keys in partitions 0 and 2");
    rill_table_opts_t o = {.partitioned = 1, .evict_ms = EV_MS};
    rill_table_t *t = open_ok(&e, table_topic, NULL, &o);
    rill_store_t *s = rill_table_store(t);

    /* A source holds partitions 0 and 2, then its run ends. */
    const int32_t held[] = {0, 2};
    joined_t out = {.table = t};
    pthread_mutex_init(&out.mu, NULL);
    rill_pipeline_t *p = cp_pipeline(&e, "ev-1", stream, held, 2, t, 1, &out);
    cr_assert_eq(rill_table_wait_caught_up(t, KK_WAIT_MS), RILL_OK);
    int ok;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, joined_count(&out) == n0 + n2);
    cr_assert(ok, "joined %zu of %zu", joined_count(&out), n0 + n2);
    cr_assert_eq(store_keys(s, table_topic, 0), n0);
    cr_assert_eq(store_keys(s, table_topic, 2), n2);
    int64_t off = -1;
    cr_assert_eq(rill_store_offset(s, table_topic, 0, &off), RILL_OK);
    int64_t before_drain = kit_now_ms();
    drain_ok(p);
    joined_free(&out);

    /* Evicted once evict_ms passed: keys and offsets gone from the store,
     * counted; never before evict_ms after the partitions went. */
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, stats_ok(t).evicted == 2);
    int64_t evicted_after = kit_now_ms() - before_drain;
    cr_assert(ok, "evicted %" PRIu64, stats_ok(t).evicted);
    cr_assert_geq(evicted_after, EV_MS, "evicted %" PRId64 " ms after the drain began",
                  evicted_after);
    rill_table_stats_t st = stats_ok(t);
    cr_assert_eq(st.evicted_keys, n0 + n2);
    cr_assert_eq(st.keys, 0);
    cr_assert_eq(st.followed, 0);
    cr_assert_eq(st.error, RILL_OK);
    for (int32_t q = 0; q < CP_PARTS; q++) {
        cr_assert_eq(store_keys(s, table_topic, q), 0, "partition %d's keys are gone", (int)q);
        cr_assert_eq(rill_store_offset(s, table_topic, q, &off), RILL_ENOENT,
                     "partition %d's offset is gone", (int)q);
    }

    /* Partition 0 comes back: read again from its beginning, served and
     * joined as before. */
    out = (joined_t){.table = t};
    pthread_mutex_init(&out.mu, NULL);
    p = cp_pipeline(&e, "ev-2", stream, held, 1, t, 1, &out);
    cr_assert_eq(rill_table_wait_caught_up(t, KK_WAIT_MS), RILL_OK);
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, joined_count(&out) == n0);
    cr_assert(ok, "joined %zu of %zu", joined_count(&out), n0);
    st = stats_ok(t);
    cr_assert_eq(st.records, n0 + n2 + n0, "partition 0 read again: %" PRIu64 " records",
                 st.records);
    cr_assert_eq(st.keys, n0);
    cr_assert_eq(st.evicted, 2);
    cr_assert_eq(store_keys(s, table_topic, 0), n0);
    for (int i = 0; i < CP_KEYS; i++) {
        if (part[i] != 0)
            continue;
        cr_assert(has_value(t, keys[i], vals[i]), "%s", keys[i]);
        char want[48];
        snprintf(want, sizeof want, "%.15s|%.15s", keys[i], vals[i]);
        cr_assert(joined_has(&out, want), "missing %s", want);
    }
    drain_ok(p);
    joined_free(&out);
    rill_table_close(t);
    kk_env_fini(&e);
}

/* ---- a rebalance while records flow ------------------------------------- */

#define RB_KEYS  40
#define RB_BATCH 20

/* "<stream value>|<record key>|<table value, or NULL>" */
static rill_err_t rb_join_fn(void *opaque, rill_elem_t *in, const void *value, size_t value_len,
                             rill_elem_t *out)
{
    (void)opaque;
    const rd_kafka_message_t *m = rill_record(in);
    char *s = malloc(160);
    if (!s) {
        rill_elem_release(in);
        return RILL_ENOMEM;
    }
    snprintf(s, 160, "%.*s|%.*s|%.*s", (int)(m->len < 40 ? m->len : 40), (const char *)m->payload,
             (int)(m->key_len < 40 ? m->key_len : 40), (const char *)m->key,
             value ? (int)(value_len < 40 ? value_len : 40) : 4,
             value ? (const char *)value : "NULL");
    rill_elem_release(in);
    *out = (rill_elem_t){.payload = s, .dtor = free};
    return RILL_OK;
}

/* Produce RB_BATCH stream records from *seq on: record seq has key
 * "ck-<seq % RB_KEYS>" and value "s<seq>". Returns 1 (for use in a
 * condition). */
static int rb_produce(kk_env_t *e, const char *stream, int *seq)
{
    rill_testkit_record_t r[RB_BATCH];
    char keys[RB_BATCH][16], vals[RB_BATCH][16];
    for (int i = 0; i < RB_BATCH; i++) {
        snprintf(keys[i], sizeof keys[i], "ck-%d", (*seq + i) % RB_KEYS);
        snprintf(vals[i], sizeof vals[i], "s%d", *seq + i);
        r[i] = rec(keys[i], vals[i]);
    }
    produce(e, stream, r, RB_BATCH);
    *seq += RB_BATCH;
    return 1;
}

typedef struct rb_check {
    size_t covered; /* distinct seqs below n joined */
    size_t dups;    /* outputs of a seq joined before */
    size_t wrong;   /* outputs whose key or table value is not seq's */
    char first_wrong[160];
} rb_check_t;

/* Check every output of both members against what it must be, computed
 * from its seq alone: key ck-<seq % RB_KEYS>, table value tv-<same>. */
static rb_check_t rb_check(joined_t out[2], int n)
{
    rb_check_t c = {0};
    unsigned char *seen = calloc((size_t)n + 1, 1);
    cr_assert_not_null(seen);
    for (int m = 0; m < 2; m++) {
        pthread_mutex_lock(&out[m].mu);
        for (size_t k = 0; k < out[m].n; k++) {
            const char *v = out[m].v[k];
            int seq = -1, key = -1, tv = -1;
            char want[64];
            if (sscanf(v, "s%d|ck-%d|tv-%d", &seq, &key, &tv) == 3 && seq >= 0)
                snprintf(want, sizeof want, "s%d|ck-%d|tv-%d", seq, seq % RB_KEYS, seq % RB_KEYS);
            if (seq < 0 || strcmp(v, want) != 0) {
                if (!c.wrong++)
                    snprintf(c.first_wrong, sizeof c.first_wrong, "%s", v);
                continue;
            }
            if (seq >= n)
                continue;
            if (seen[seq])
                c.dups++;
            else
                c.covered++;
            seen[seq] = 1;
        }
        pthread_mutex_unlock(&out[m].mu);
    }
    free(seen);
    return c;
}

/* Two instances, each with its own co-partitioned table, in one group
 * (range assignor: the mock's cooperative rebalances are unreliable).
 * Stream records are produced the whole time: while the first member is
 * alone, while the second joins (its table must read the partitions it
 * gets before its join may use them) and while it leaves again (the
 * first gets them back: its table still has them, and goes on from its
 * stored offsets). Every record must be joined, with its own key's value:
 * the table rows all exist before the first stream record. */
Test(state_table, a_member_joining_and_leaving_mid_stream_loses_no_record_and_joins_it_right,
     .timeout = 300)
{
    kk_env_t e;
    kk_env_init(&e);
    const char *table_topic = "rb-table", *stream = "rb-stream";
    kk_create_topic(&e, table_topic, CP_PARTS);
    kk_create_topic(&e, stream, CP_PARTS);
    rill_testkit_record_t tr[RB_KEYS];
    char keys[RB_KEYS][16], vals[RB_KEYS][16];
    for (int i = 0; i < RB_KEYS; i++) {
        snprintf(keys[i], sizeof keys[i], "ck-%d", i);
        snprintf(vals[i], sizeof vals[i], "tv-%d", i);
        tr[i] = rec(keys[i], vals[i]);
    }
    produce(&e, table_topic, tr, RB_KEYS);
    const char *kv[] = {"session.timeout.ms",
                        "6000",
                        "heartbeat.interval.ms",
                        "500",
                        "auto.offset.reset",
                        "earliest",
                        "partition.assignment.strategy",
                        "range",
                        NULL};
    rill_table_t *t[2];
    joined_t out[2];
    rill_pipeline_t *p[2];
    for (int m = 0; m < 2; m++) {
        t[m] = open_partitioned(&e, table_topic);
        out[m] = (joined_t){.table = t[m]};
        pthread_mutex_init(&out[m].mu, NULL);
    }
    int seq = 0, ok;
    for (int m = 0; m < 2; m++) {
        rill_consumer_conf_t *c = kk_conf_new(e.boot, "rb-g", kv);
        kk_conf_subscribe1(c, stream);
        cr_assert_eq(rill_consumer_conf_follow_table(c, t[m]), RILL_OK);
        p[m] = rill_pipeline_new(e.sys, m ? "rb-b" : "rb-a");
        rill_pipeline_add(p[m], rill_kafka_source(c), NULL);
        rill_pipeline_add(p[m], rill_stage_join(t[m], RILL_JOIN_LEFT, NULL, rb_join_fn, NULL),
                          NULL);
        rill_pipeline_add(p[m], rill_sink_foreach(collect, &out[m]), NULL);
        char err[256] = "";
        cr_assert_eq(rill_pipeline_start(p[m], err, sizeof err), RILL_OK, "%s", err);
        /* Records flow until this member joins records of its own: the
         * first holds every partition, then the two split them. */
        KK_WAIT_UNTIL(ok, 90000,
                      rb_produce(&e, stream, &seq) && joined_count(&out[m]) >= 100 &&
                          stats_ok(t[m]).followed > 0 &&
                          stats_ok(t[0]).followed + (m ? stats_ok(t[1]).followed : 0) == CP_PARTS);
        cr_assert(ok, "member %d: joined %zu; followed %d and %d", m, joined_count(&out[m]),
                  (int)stats_ok(t[0]).followed, (int)stats_ok(t[1]).followed);
    }
    /* The second leaves while records keep coming: the first takes its
     * partitions back and joins records of them again. */
    size_t a_before = joined_count(&out[0]);
    cr_assert_eq(rill_pipeline_drain(p[1]), RILL_OK);
    rill_pipeline_result_t res = {0};
    int b_ended = 0;
    KK_WAIT_UNTIL(ok, 90000,
                  rb_produce(&e, stream, &seq) &&
                      (b_ended = b_ended || rill_pipeline_wait(p[1], 0, &res) == RILL_OK) &&
                      stats_ok(t[0]).followed == CP_PARTS && rill_table_caught_up(t[0]) &&
                      joined_count(&out[0]) >= a_before + 200);
    cr_assert(ok, "ended %d; followed %d; joined %zu since", b_ended, (int)stats_ok(t[0]).followed,
              joined_count(&out[0]) - a_before);
    cr_assert_eq(res.end, RILL_PIPELINE_COMPLETED, "%s", res.text);
    rill_pipeline_destroy(p[1]);
    cr_assert_eq(stats_ok(t[1]).followed, 0, "the member that left follows nothing");

    /* No more records: every one of the seq produced is joined, each with
     * its own key's value (never none: every row was there before). */
    KK_WAIT_UNTIL(ok, KK_WAIT_MS,
                  joined_count(&out[0]) + joined_count(&out[1]) >= (size_t)seq &&
                      rb_check(out, seq).covered == (size_t)seq);
    rb_check_t c = rb_check(out, seq);
    fprintf(stderr,
            "state_table rebalance: %d records, joined %zu + %zu, %zu again after a "
            "rebalance\n",
            seq, joined_count(&out[0]), joined_count(&out[1]), c.dups);
    cr_assert_eq(c.wrong, 0, "%zu outputs wrong, the first: %s", c.wrong, c.first_wrong);
    cr_assert_eq(c.covered, (size_t)seq, "joined %zu of %d records", c.covered, seq);
    cr_assert_gt(joined_count(&out[1]), 0, "the second member joined records too");
    drain_ok(p[0]);
    for (int m = 0; m < 2; m++) {
        rill_table_close(t[m]);
        joined_free(&out[m]);
    }
    kk_env_fini(&e);
}
