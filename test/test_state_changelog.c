/*
 * Changelogs (rill_store_set_changelog): every committed change goes to
 * a changelog topic, and a partition assigned to a consumer whose store
 * does not hold its state is restored from it before its records are
 * processed.
 *
 *   moved state     store A counts a topic; store B (another instance,
 *                   empty) takes the group over after more records came:
 *                   B restores A's state and counts only the new records,
 *                   exactly
 *   local current   an LMDB store reopened after its run holds everything
 *                   its changelog has: nothing is restored
 *   partial txn     changes without their offset record (a writer killed in
 *                   the middle of a flush) are never applied, neither at
 *                   the end of the changelog nor with a later writer's
 *                   transaction
 *
 * The state per partition: "n" (records counted) and "sum" (of their
 * offsets), as in test_state_stage.c.
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
#define PER   1500

static sk_counter_t counter; /* the calls of sk_count_record */

static void set_changelog(rill_store_t *s, kk_env_t *e, const char *topic)
{
    const char *conf[] = {"bootstrap.servers", e->boot, NULL};
    char err[256] = "";
    cr_assert_eq(rill_store_set_changelog(s, topic, conf, err, sizeof(err)), RILL_OK, "%s", err);
    cr_assert_eq(rill_store_set_changelog(s, topic, conf, err, sizeof(err)), RILL_ESTATE);
}

/* Run the counting pipeline over s in group until every partition's
 * stored offset is `until`; then stop it. */
static void run_until(kk_env_t *e, rill_store_t *s, const char *topic, const char *group,
                      int64_t until)
{
    /* Each run has a group of its own: where it starts is the store's
     * business, not the group's (and the mock rebalances a group whose last
     * member left only after session.timeout.ms - 1 s, LIBRDKAFKA-NOTES;
     * state_recovery shows a takeover within one group). */
    const char *kv[] = {"session.timeout.ms", "6000", "heartbeat.interval.ms", "500", NULL};
    rill_consumer_conf_t *c = kk_conf_new(e->boot, group, kv);
    kk_conf_subscribe1(c, topic);
    cr_assert_eq(rill_consumer_conf_use_store(c, s), RILL_OK);
    rill_stateful_opts_t so = {.commit_count = 200, .commit_ms = 50};
    rill_pipeline_t *p = rill_pipeline_new(e->sys, "counting");
    rill_pipeline_add(p, rill_kafka_source(c), NULL);
    rill_pipeline_add(p, rill_stage_stateful(s, &so, sk_count_record, &counter), NULL);
    char err[256] = "";
    cr_assert_eq(rill_pipeline_start(p, err, sizeof(err)), RILL_OK, "%s", err);
    int ok;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, sk_all_stored(s, topic, PARTS, until));
    rill_pipeline_result_t res;
    rill_pipeline_stop(p);
    cr_assert_eq(rill_pipeline_wait(p, 30000, &res), RILL_OK);
    rill_pipeline_destroy(p);
    cr_assert(ok, "the stored offsets did not reach %" PRId64 " (the run ended: %s)", until,
              res.text);
    cr_assert_neq(res.end, RILL_PIPELINE_FAILED, "%s", res.text);
    /* Its client has left the group (else the next run waits for it). */
    rill_kafka_clients_stats_t cs;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, (rill_kafka_clients_stats(&cs), cs.closing == 0));
    cr_assert(ok, "a client is still closing");
}

static void assert_exact(rill_store_t *s, const char *topic, uint64_t per)
{
    for (int i = 0; i < PARTS; i++) {
        cr_assert_eq(sk_read_u64(s, topic, i, "n"), per, "partition %d: n = %" PRIu64, i,
                     sk_read_u64(s, topic, i, "n"));
        cr_assert_eq(sk_read_u64(s, topic, i, "sum"), per * (per - 1) / 2, "partition %d", i);
    }
}

Test(state_changelog, state_moves_to_another_store_and_counts_stay_exact, .timeout = 120)
{
    kk_env_t e;
    kk_env_init(&e);
    kk_load_topic(&e, "moves", PARTS, PER, 32);
    kk_create_topic(&e, "moves-changelog", PARTS);
    rill_store_t *a = NULL, *b = NULL;
    cr_assert_eq(rill_store_open_memory("a", &a, NULL, 0), RILL_OK);
    set_changelog(a, &e, "moves-changelog");
    run_until(&e, a, "moves", "moves-g", PER);
    assert_exact(a, "moves", PER);
    rill_store_stats_t sa;
    rill_store_stats(a, &sa);
    cr_assert_geq(sa.changelog_sent, (uint64_t)PARTS * PER, "every change went out");
    cr_assert_eq(sa.restores, 0, "an empty changelog restores nothing");

    /* More records, and another instance (an empty store) takes over. */
    kk_produce_parts(e.boot, "moves", PARTS, PER, 1000000, 32);
    cr_assert_eq(rill_store_open_memory("b", &b, NULL, 0), RILL_OK);
    set_changelog(b, &e, "moves-changelog");
    atomic_store(&counter.calls, 0);
    run_until(&e, b, "moves", "moves-g2", 2 * PER);
    assert_exact(b, "moves", 2 * PER);
    cr_assert_eq(atomic_load(&counter.calls), (uint64_t)PARTS * PER,
                 "only the new records were processed");
    rill_store_stats_t sb;
    rill_store_stats(b, &sb);
    cr_assert_eq(sb.restores, PARTS, "both partitions were restored");
    cr_assert_gt(sb.restored, 0);
    cr_assert_eq(sb.restoring, 0);
    kk_env_fini(&e);
    rill_store_close(a);
    rill_store_close(b);
}

Test(state_changelog, a_current_local_store_is_not_restored, .timeout = 120)
{
    kk_env_t e;
    kk_env_init(&e);
    kk_load_topic(&e, "local", PARTS, PER, 32);
    kk_create_topic(&e, "local-changelog", PARTS);
    char dir[SK_DIR_SIZE] = "";
    rill_store_t *s = sk_open_store(SK_LMDB, "changelog", dir);
    set_changelog(s, &e, "local-changelog");
    run_until(&e, s, "local", "local-g", PER);
    rill_store_close(s);

    kk_produce_parts(e.boot, "local", PARTS, PER, 1000000, 32);
    cr_assert_eq(rill_store_open_lmdb(dir, NULL, &s, NULL, 0), RILL_OK);
    set_changelog(s, &e, "local-changelog");
    atomic_store(&counter.calls, 0);
    run_until(&e, s, "local", "local-g2", 2 * PER);
    assert_exact(s, "local", 2 * PER);
    rill_store_stats_t st;
    rill_store_stats(s, &st);
    cr_assert_eq(st.restores, 0, "the local store was current");
    cr_assert_eq(atomic_load(&counter.calls), (uint64_t)PARTS * PER);
    sk_close_store(s, SK_LMDB, dir);
    kk_env_fini(&e);
}

/* The encoded key of user key k in (ns, topic, partition) (state_int.h). */
static size_t encode(uint8_t *out, int ns, const char *topic, int32_t p, const char *k)
{
    size_t n = 0;
    out[n++] = (uint8_t)ns;
    memcpy(out + n, topic, strlen(topic) + 1);
    n += strlen(topic) + 1;
    out[n++] = (uint8_t)(p >> 24);
    out[n++] = (uint8_t)(p >> 16);
    out[n++] = (uint8_t)(p >> 8);
    out[n++] = (uint8_t)p;
    memcpy(out + n, k, strlen(k));
    return n + strlen(k);
}

Test(state_changelog, changes_after_the_last_offset_record_are_not_applied, .timeout = 120)
{
    kk_env_t e;
    kk_env_init(&e);
    kk_load_topic(&e, "partial", PARTS, PER, 32);
    kk_create_topic(&e, "partial-changelog", PARTS);
    rill_store_t *a = NULL, *b = NULL;
    cr_assert_eq(rill_store_open_memory("a", &a, NULL, 0), RILL_OK);
    set_changelog(a, &e, "partial-changelog");
    run_until(&e, a, "partial", "partial-g", PER);

    /* A flush cut short: a change of "n" with no offset record after it. */
    uint8_t key[128];
    uint64_t bogus = 999999;
    rill_testkit_record_t r = {.partition = 0,
                               .key = key,
                               .key_len = encode(key, 1, "partial", 0, "n"),
                               .value = &bogus,
                               .value_len = sizeof(bogus)};
    char err[256] = "";
    cr_assert_eq(rill_testkit_produce(e.boot, "partial-changelog", &r, 1, NULL, err, sizeof(err)),
                 RILL_OK, "%s", err);

    cr_assert_eq(rill_store_open_memory("b", &b, NULL, 0), RILL_OK);
    set_changelog(b, &e, "partial-changelog");
    kk_produce_parts(e.boot, "partial", PARTS, 10, 1000000, 32);
    run_until(&e, b, "partial", "partial-g2", PER + 10);
    assert_exact(b, "partial", PER + 10);

    /* A third store restores everything after b's transactions: the cut
     * short change is still not applied (it is not b's). */
    rill_store_t *c = NULL;
    cr_assert_eq(rill_store_open_memory("c", &c, NULL, 0), RILL_OK);
    set_changelog(c, &e, "partial-changelog");
    kk_produce_parts(e.boot, "partial", PARTS, 10, 2000000, 32);
    run_until(&e, c, "partial", "partial-g3", PER + 20);
    assert_exact(c, "partial", PER + 20);
    kk_env_fini(&e);
    rill_store_close(a);
    rill_store_close(b);
    rill_store_close(c);
}

Test(state_changelog, bad_arguments_are_refused_with_a_sentence, .timeout = 30)
{
    rill_store_t *s = NULL;
    cr_assert_eq(rill_store_open_memory("bad", &s, NULL, 0), RILL_OK);
    char err[256] = "";
    const char *good[] = {"bootstrap.servers", "127.0.0.1:1", NULL};
    const char *odd[] = {"bootstrap.servers", NULL};
    const char *unknown[] = {"no.such.property", "1", NULL};
    cr_assert_eq(rill_store_set_changelog(NULL, "t", good, err, sizeof(err)), RILL_EINVAL);
    cr_assert_eq(rill_store_set_changelog(s, NULL, good, err, sizeof(err)), RILL_EINVAL);
    cr_assert_eq(rill_store_set_changelog(s, "t", NULL, err, sizeof(err)), RILL_EINVAL);
    cr_assert_eq(rill_store_set_changelog(s, "", good, err, sizeof(err)), RILL_EINVAL);
    cr_assert_eq(rill_store_set_changelog(s, "t", odd, err, sizeof(err)), RILL_EINVAL);
    cr_assert_not_null(strstr(err, "pairs"), "%s", err);
    cr_assert_eq(rill_store_set_changelog(s, "t", unknown, err, sizeof(err)), RILL_EKAFKA);
    cr_assert_not_null(strstr(err, "no.such.property"), "%s", err);
    cr_assert_eq(rill_store_set_changelog(s, "t", good, err, sizeof(err)), RILL_OK);
    rill_store_close(s);
}
