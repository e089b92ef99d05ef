/*
 * The stateful stage (include/rill/state.h) in pipelines against the
 * embedded broker, over both backends:
 *
 *   exact restart     a function that fails once aborts its transaction;
 *                     the supervised restart starts every partition from
 *                     the offset stored with its state: every record is
 *                     counted exactly once
 *   durable first     records are confirmed (and Kafka commits them) only
 *                     once the transaction holding them is committed
 *   misuse            elements that are not records fail the stage with a
 *                     sentence; NULL arguments are refused
 *
 * Partition p of a topic loaded with `per` records per partition holds
 * seq p * per + o at offset o. The state per partition: "n", the records
 * counted, and "sum", the sum of their offsets; exact means n == per and
 * sum == per * (per - 1) / 2 in every partition.
 */
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <rill/state.h>

#include "support/kafka_kit.h"
#include "support/rtest.h"

#define PARTS 2
#define PER   3000

typedef struct counter {
    _Atomic uint64_t calls;
    _Atomic int fail_at_call; /* fail the call with this number once (0: never) */
} counter_t;

static rill_err_t add_u64(rill_state_t *st, const char *key, uint64_t v)
{
    uint64_t cur = 0;
    const void *p;
    size_t len;
    if (rill_state_get(st, key, strlen(key), &p, &len) == RILL_OK && len == sizeof(cur))
        memcpy(&cur, p, sizeof(cur));
    cur += v;
    return rill_state_put(st, key, strlen(key), &cur, sizeof(cur));
}

static rill_err_t count_record(void *opaque, rill_state_t *st, rill_elem_t *in, rill_emitter_t *out)
{
    (void)out;
    counter_t *c = opaque;
    uint64_t call = atomic_fetch_add(&c->calls, 1) + 1;
    int at = atomic_load(&c->fail_at_call);
    if (at && call == (uint64_t)at) {
        atomic_store(&c->fail_at_call, 0);
        rill_elem_release(in);
        return RILL_EINVAL; /* fails the stage: the transaction is aborted */
    }
    const rd_kafka_message_t *m = rill_record(in);
    rill_err_t err = add_u64(st, "n", 1);
    if (!err)
        err = add_u64(st, "sum", (uint64_t)m->offset);
    rill_elem_release(in);
    return err;
}

static uint64_t read_u64(rill_store_t *s, const char *topic, int p, const char *key)
{
    uint64_t v = 0;
    size_t len = 0;
    rill_err_t e = rill_store_read(s, topic, p, key, strlen(key), &v, sizeof(v), &len);
    cr_assert(e == RILL_OK || e == RILL_ENOENT, "read %s: %s", key, rill_err2str(e));
    return e == RILL_OK ? v : 0;
}

static int64_t stored_offset(rill_store_t *s, const char *topic, int p)
{
    int64_t o = -1;
    rill_err_t e = rill_store_offset(s, topic, p, &o);
    cr_assert(e == RILL_OK || e == RILL_ENOENT, "offset: %s", rill_err2str(e));
    return e == RILL_OK ? o : -1;
}

static int all_stored(rill_store_t *s, const char *topic, int64_t want)
{
    for (int p = 0; p < PARTS; p++)
        if (stored_offset(s, topic, p) != want)
            return 0;
    return 1;
}

typedef enum { MEM, LMDB } backend_t;

static rill_store_t *open_store(backend_t b, char *dir)
{
    rill_store_t *s = NULL;
    char err[512] = "";
    if (b == MEM) {
        cr_assert_eq(rill_store_open_memory("test", &s, err, sizeof(err)), RILL_OK, "%s", err);
    } else {
        strcpy(dir, "/tmp/rill-state-stage-XXXXXX");
        cr_assert_not_null(mkdtemp(dir));
        cr_assert_eq(rill_store_open_lmdb(dir, NULL, &s, err, sizeof(err)), RILL_OK, "%s", err);
    }
    return s;
}

static void close_store(rill_store_t *s, backend_t b, const char *dir)
{
    rill_store_close(s);
    if (b == LMDB) {
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
        cr_assert_eq(system(cmd), 0);
    }
}

static rill_consumer_conf_t *store_conf(kk_env_t *e, const char *topic, const char *group,
                                        rill_store_t *s)
{
    rill_consumer_conf_t *c = kk_conf_new(e->boot, group, NULL);
    kk_conf_subscribe1(c, topic);
    cr_assert_eq(rill_consumer_conf_use_store(c, s), RILL_OK);
    cr_assert_eq(rill_consumer_conf_use_store(c, s), RILL_ESTATE, "a second hook is refused");
    return c;
}

static void exact_restart(backend_t b)
{
    kk_env_t e;
    kk_env_init(&e);
    const char *topic = b == MEM ? "exact-mem" : "exact-lmdb";
    kk_load_topic(&e, topic, PARTS, PER, 32);
    char dir[64] = "";
    rill_store_t *s = open_store(b, dir);
    counter_t c = {0};
    atomic_store(&c.fail_at_call, PER); /* mid-way through */
    rill_stateful_opts_t so = {.commit_count = 250, .commit_ms = 50};
    rill_pipeline_t *p = rill_pipeline_new(e.sys, "exact");
    rill_pipeline_add(p, rill_kafka_source(store_conf(&e, topic, "exact-g", s)), NULL);
    rill_pipeline_add(p, rill_stage_stateful(s, &so, count_record, &c), NULL);
    rill_restart_opts_t ro = {.backoff = {.min_ms = 10, .max_ms = 50}};
    char err[256] = "";
    cr_assert_eq(rill_pipeline_start_supervised(p, &ro, err, sizeof(err)), RILL_OK, "%s", err);
    int ok;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, all_stored(s, topic, PER));
    cr_assert(ok, "stored offsets %" PRId64 ", %" PRId64 " (want %d)", stored_offset(s, topic, 0),
              stored_offset(s, topic, 1), PER);
    rill_pipeline_result_t res;
    rill_pipeline_stop(p);
    cr_assert_eq(rill_pipeline_wait(p, 30000, &res), RILL_OK);
    rill_pipeline_destroy(p);
    cr_assert_eq(res.restarts, 1, "the failure restarted the pipeline once");
    uint64_t calls = atomic_load(&c.calls);
    cr_assert_gt(calls, (uint64_t)PARTS * PER, "records came again (%" PRIu64 " calls)", calls);
    for (int i = 0; i < PARTS; i++) {
        cr_assert_eq(read_u64(s, topic, i, "n"), PER, "partition %d counted %" PRIu64, i,
                     read_u64(s, topic, i, "n"));
        cr_assert_eq(read_u64(s, topic, i, "sum"), (uint64_t)PER * (PER - 1) / 2);
    }
    rill_store_stats_t st;
    cr_assert_eq(rill_store_stats(s, &st), RILL_OK);
    cr_assert_geq(st.aborts, 1, "the failed function's transaction was aborted");
    cr_assert_gt(st.commits, 0);
    kk_env_fini(&e);
    close_store(s, b, dir);
}

Test(state_stage, failed_function_aborts_and_restart_counts_exactly_once_memory, .timeout = 120)
{
    exact_restart(MEM);
}

Test(state_stage, failed_function_aborts_and_restart_counts_exactly_once_lmdb, .timeout = 120)
{
    exact_restart(LMDB);
}

/* Records are confirmed when their transaction commits, never before:
 * with a transaction that never fills and a timer of a minute, everything
 * is processed while nothing is stored or committed to Kafka; the drain's
 * end of input commits it all. */
Test(state_stage, records_are_confirmed_only_when_their_state_is_committed, .timeout = 120)
{
    kk_env_t e;
    kk_env_init(&e);
    const char *topic = "durable-first";
    kk_load_topic(&e, topic, PARTS, PER, 32);
    char dir[64] = "";
    rill_store_t *s = open_store(LMDB, dir);
    counter_t c = {0};
    rill_stateful_opts_t so = {.commit_count = 1000000, .commit_ms = 60000};
    rill_pipeline_t *p = rill_pipeline_new(e.sys, "durable");
    rill_pipeline_add(p, rill_kafka_source(store_conf(&e, topic, "durable-g", s)), NULL);
    rill_pipeline_add(p, rill_stage_stateful(s, &so, count_record, &c), NULL);
    char err[256] = "";
    cr_assert_eq(rill_pipeline_start(p, err, sizeof(err)), RILL_OK, "%s", err);
    int ok;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, atomic_load(&c.calls) == (uint64_t)PARTS * PER);
    cr_assert(ok, "processed %" PRIu64, atomic_load(&c.calls));
    int64_t committed[PARTS];
    kk_committed_offsets(e.boot, "durable-g", topic, PARTS, committed);
    for (int i = 0; i < PARTS; i++) {
        cr_assert_eq(stored_offset(s, topic, i), -1, "nothing stored before the commit");
        cr_assert_eq(committed[i], RD_KAFKA_OFFSET_INVALID, "nothing committed to Kafka");
        cr_assert_eq(read_u64(s, topic, i, "n"), 0);
    }
    rill_pipeline_result_t res;
    cr_assert_eq(rill_pipeline_drain(p), RILL_OK);
    cr_assert_eq(rill_pipeline_wait(p, 30000, &res), RILL_OK);
    rill_pipeline_destroy(p);
    cr_assert_eq(res.end, RILL_PIPELINE_COMPLETED, "%s", res.text);
    cr_assert(all_stored(s, topic, PER));
    kk_assert_committed(e.boot, "durable-g", topic, PARTS, PER);
    for (int i = 0; i < PARTS; i++)
        cr_assert_eq(read_u64(s, topic, i, "n"), PER);
    kk_env_fini(&e);
    close_store(s, LMDB, dir);
}

Test(state_stage, elements_that_are_not_records_fail_the_stage_with_a_sentence, .timeout = 60)
{
    rill_system_t *sys = rill_system_new(NULL, NULL, 0);
    cr_assert_not_null(sys);
    cr_assert_eq(rill_system_start(sys), RILL_OK);
    rill_store_t *s = NULL;
    cr_assert_eq(rill_store_open_memory("misuse", &s, NULL, 0), RILL_OK);
    counter_t c = {0};
    rill_pipeline_t *p = rill_pipeline_new(sys, "not-records");
    rill_pipeline_add(p, rill_source_range(0, 10), NULL);
    rill_pipeline_add(p, rill_stage_stateful(s, NULL, count_record, &c), NULL);
    char err[256] = "";
    cr_assert_eq(rill_pipeline_start(p, err, sizeof(err)), RILL_OK, "%s", err);
    rill_pipeline_result_t res;
    cr_assert_eq(rill_pipeline_wait(p, 30000, &res), RILL_OK);
    rill_pipeline_destroy(p);
    cr_assert_eq(res.end, RILL_PIPELINE_FAILED);
    cr_assert_not_null(strstr(res.text, "Kafka records"), "%s", res.text);
    cr_assert_eq(atomic_load(&c.calls), 0);

    /* NULL arguments: a spec carrying the error, and refusals. */
    rill_stage_t *bad = rill_stage_stateful(NULL, NULL, count_record, NULL);
    cr_assert_eq(rill_stage_error(bad, err, sizeof(err)), RILL_EINVAL);
    cr_assert_not_null(strstr(err, "NULL"), "%s", err);
    rill_stage_free(bad);
    bad = rill_stage_stateful(s, NULL, NULL, NULL);
    cr_assert_eq(rill_stage_error(bad, NULL, 0), RILL_EINVAL);
    rill_stage_free(bad);
    cr_assert_eq(rill_consumer_conf_use_store(NULL, s), RILL_EINVAL);
    rill_consumer_conf_t *cc = rill_consumer_conf_new();
    cr_assert_eq(rill_consumer_conf_use_store(cc, NULL), RILL_EINVAL);
    rill_consumer_conf_destroy(cc);
    cr_assert_eq(rill_system_stop(sys, 10000), RILL_OK);
    rill_system_destroy(sys);
    rill_store_close(s);
}
