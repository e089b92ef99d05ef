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
#include "support/state_kit.h"
#include "support/rtest.h"

#define PARTS 2
#define PER   3000

static rill_consumer_conf_t *store_conf(kk_env_t *e, const char *topic, const char *group,
                                        rill_store_t *s)
{
    rill_consumer_conf_t *c = kk_conf_new(e->boot, group, NULL);
    kk_conf_subscribe1(c, topic);
    cr_assert_eq(rill_consumer_conf_use_store(c, s), RILL_OK);
    cr_assert_eq(rill_consumer_conf_use_store(c, s), RILL_ESTATE, "a second hook is refused");
    return c;
}

static void exact_restart(sk_backend_t b)
{
    kk_env_t e;
    kk_env_init(&e);
    const char *topic = b == SK_MEM ? "exact-mem" : "exact-lmdb";
    kk_load_topic(&e, topic, PARTS, PER, 32);
    char dir[SK_DIR_SIZE] = "";
    rill_store_t *s = sk_open_store(b, "state-stage", dir);
    sk_counter_t c = {0};
    atomic_store(&c.fail_at_call, PER); /* mid-way through */
    rill_stateful_opts_t so = {.commit_count = 250, .commit_ms = 50};
    rill_pipeline_t *p = rill_pipeline_new(e.sys, "exact");
    rill_pipeline_add(p, rill_kafka_source(store_conf(&e, topic, "exact-g", s)), NULL);
    rill_pipeline_add(p, rill_stage_stateful(s, &so, sk_count_record, &c), NULL);
    rill_restart_opts_t ro = {.backoff = {.min_ms = 10, .max_ms = 50}};
    char err[256] = "";
    cr_assert_eq(rill_pipeline_start_supervised(p, &ro, err, sizeof(err)), RILL_OK, "%s", err);
    int ok;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, sk_all_stored(s, topic, PARTS, PER));
    cr_assert(ok, "stored offsets %" PRId64 ", %" PRId64 " (want %d)",
              sk_stored_offset(s, topic, 0), sk_stored_offset(s, topic, 1), PER);
    rill_pipeline_result_t res;
    rill_pipeline_stop(p);
    cr_assert_eq(rill_pipeline_wait(p, 30000, &res), RILL_OK);
    rill_pipeline_destroy(p);
    cr_assert_eq(res.restarts, 1, "the failure restarted the pipeline once");
    uint64_t calls = atomic_load(&c.calls);
    cr_assert_gt(calls, (uint64_t)PARTS * PER, "records came again (%" PRIu64 " calls)", calls);
    for (int i = 0; i < PARTS; i++) {
        cr_assert_eq(sk_read_u64(s, topic, i, "n"), PER, "partition %d counted %" PRIu64, i,
                     sk_read_u64(s, topic, i, "n"));
        cr_assert_eq(sk_read_u64(s, topic, i, "sum"), (uint64_t)PER * (PER - 1) / 2);
    }
    rill_store_stats_t st;
    cr_assert_eq(rill_store_stats(s, &st), RILL_OK);
    cr_assert_geq(st.aborts, 1, "the failed function's transaction was aborted");
    cr_assert_gt(st.commits, 0);
    kk_env_fini(&e);
    sk_close_store(s, b, dir);
}

Test(state_stage, failed_function_aborts_and_restart_counts_exactly_once_memory, .timeout = 120)
{
    exact_restart(SK_MEM);
}

Test(state_stage, failed_function_aborts_and_restart_counts_exactly_once_lmdb, .timeout = 120)
{
    exact_restart(SK_LMDB);
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
    char dir[SK_DIR_SIZE] = "";
    rill_store_t *s = sk_open_store(SK_LMDB, "state-stage", dir);
    sk_counter_t c = {0};
    rill_stateful_opts_t so = {.commit_count = 1000000, .commit_ms = 60000};
    rill_pipeline_t *p = rill_pipeline_new(e.sys, "durable");
    rill_pipeline_add(p, rill_kafka_source(store_conf(&e, topic, "durable-g", s)), NULL);
    rill_pipeline_add(p, rill_stage_stateful(s, &so, sk_count_record, &c), NULL);
    char err[256] = "";
    cr_assert_eq(rill_pipeline_start(p, err, sizeof(err)), RILL_OK, "%s", err);
    int ok;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, atomic_load(&c.calls) == (uint64_t)PARTS * PER);
    cr_assert(ok, "processed %" PRIu64, atomic_load(&c.calls));
    int64_t committed[PARTS];
    kk_committed_offsets(e.boot, "durable-g", topic, PARTS, committed);
    for (int i = 0; i < PARTS; i++) {
        cr_assert_eq(sk_stored_offset(s, topic, i), -1, "nothing stored before the commit");
        cr_assert_eq(committed[i], RD_KAFKA_OFFSET_INVALID, "nothing committed to Kafka");
        cr_assert_eq(sk_read_u64(s, topic, i, "n"), 0);
    }
    rill_pipeline_result_t res;
    cr_assert_eq(rill_pipeline_drain(p), RILL_OK);
    cr_assert_eq(rill_pipeline_wait(p, 30000, &res), RILL_OK);
    rill_pipeline_destroy(p);
    cr_assert_eq(res.end, RILL_PIPELINE_COMPLETED, "%s", res.text);
    cr_assert(sk_all_stored(s, topic, PARTS, PER));
    kk_assert_committed(e.boot, "durable-g", topic, PARTS, PER);
    for (int i = 0; i < PARTS; i++)
        cr_assert_eq(sk_read_u64(s, topic, i, "n"), PER);
    kk_env_fini(&e);
    sk_close_store(s, SK_LMDB, dir);
}

Test(state_stage, elements_that_are_not_records_fail_the_stage_with_a_sentence, .timeout = 60)
{
    rill_system_t *sys = rill_system_new(NULL, NULL, 0);
    cr_assert_not_null(sys);
    cr_assert_eq(rill_system_start(sys), RILL_OK);
    rill_store_t *s = NULL;
    cr_assert_eq(rill_store_open_memory("misuse", &s, NULL, 0), RILL_OK);
    sk_counter_t c = {0};
    rill_pipeline_t *p = rill_pipeline_new(sys, "not-records");
    rill_pipeline_add(p, rill_source_range(0, 10), NULL);
    rill_pipeline_add(p, rill_stage_stateful(s, NULL, sk_count_record, &c), NULL);
    char err[256] = "";
    cr_assert_eq(rill_pipeline_start(p, err, sizeof(err)), RILL_OK, "%s", err);
    rill_pipeline_result_t res;
    cr_assert_eq(rill_pipeline_wait(p, 30000, &res), RILL_OK);
    rill_pipeline_destroy(p);
    cr_assert_eq(res.end, RILL_PIPELINE_FAILED);
    cr_assert_not_null(strstr(res.text, "Kafka records"), "%s", res.text);
    cr_assert_eq(atomic_load(&c.calls), 0);

    /* NULL arguments: a spec carrying the error, and refusals. */
    rill_stage_t *bad = rill_stage_stateful(NULL, NULL, sk_count_record, NULL);
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
