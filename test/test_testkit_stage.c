/*
 * The stage harness (include/rill/testkit.h, "Stage harness"): one stage
 * between fake Kafka records pushed by the test and a collecting sink, no
 * broker. What each test shows:
 *
 *   map            the stage sees records with their fields (topic name,
 *                  timestamp, key, value, headers); outputs come out in
 *                  order and their records are confirmed after the sink
 *   filter         records dropped on purpose are confirmed too; kept ones
 *                  are still records
 *   failing map    the record the function failed on is released, not
 *                  confirmed, and the stage ends FAILED with the error
 *   stateful       rill_stage_stateful over a memory store confirms only
 *                  at its commit (commit_count 3: two records stay
 *                  pending, the third confirms all three), and the state
 *                  and offset are in the store
 *   reject         rill_elem_reject in a map function: REJECTED, the
 *                  stage goes on
 *   misuse, clock  bad arguments are refused; the virtual clock moves only
 *                  forward, and only when told
 */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include <rill/state.h>
#include <rill/testkit.h>

#include "support/kafka_kit.h"
#include "support/rtest.h"
#include "support/state_kit.h"

#define T "orders"

static rill_system_t *sys_new(void)
{
    char err[256];
    rill_system_opts_t o = {.executors = 2};
    rill_system_t *sys = rill_system_new(&o, err, sizeof(err));
    cr_assert(sys, "system: %s", err);
    cr_assert_eq(rill_system_start(sys), RILL_OK);
    return sys;
}

static rill_testkit_stage_t *harness(rill_system_t *sys, rill_stage_t *stage)
{
    char err[256] = "";
    rill_testkit_stage_t *h = NULL;
    rill_err_t e = rill_testkit_stage_start(sys, stage, &h, err, sizeof(err));
    cr_assert_eq(e, RILL_OK, "start: %s", err);
    return h;
}

/* Record `offset` of partition 0 of T: key "k<offset>", value "v<offset>",
 * timestamp 1000 + offset, one header "h" = "x". */
static void push(rill_testkit_stage_t *h, int64_t offset)
{
    char key[32], value[32];
    snprintf(key, sizeof(key), "k%lld", (long long)offset);
    snprintf(value, sizeof(value), "v%lld", (long long)offset);
    rill_testkit_header_t hdr = {.name = "h", .value = "x", .value_len = 1};
    rill_testkit_record_t r = {.topic = T,
                               .partition = 0,
                               .offset = offset,
                               .timestamp = 1000 + offset,
                               .key = key,
                               .key_len = strlen(key),
                               .value = value,
                               .value_len = strlen(value),
                               .headers = &hdr,
                               .header_count = 1};
    cr_assert_eq(rill_testkit_stage_push(h, &r), RILL_OK);
}

static int settled(rill_testkit_stage_t *h, int64_t offset)
{
    return rill_testkit_stage_settled(h, T, 0, offset);
}

/* The record's fields, checked; the output: offset * 1000 + timestamp. */
static rill_err_t check_fields(void *opaque, rill_elem_t *in, rill_elem_t *out)
{
    (void)opaque;
    const rd_kafka_message_t *m = rill_record(in);
    if (!m || strcmp(rd_kafka_topic_name(m->rkt), T) != 0) {
        rill_elem_release(in);
        return RILL_EINVAL;
    }
    char want[32];
    snprintf(want, sizeof(want), "v%lld", (long long)m->offset);
    rd_kafka_timestamp_type_t tt;
    int64_t ts = rd_kafka_message_timestamp(m, &tt);
    rd_kafka_headers_t *hdrs = NULL;
    const void *hv = NULL;
    size_t hlen = 0;
    int ok = m->len == strlen(want) && memcmp(m->payload, want, m->len) == 0 && m->key_len >= 2 &&
             ((const char *)m->key)[0] == 'k' && tt == RD_KAFKA_TIMESTAMP_CREATE_TIME &&
             rd_kafka_message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR &&
             rd_kafka_header_get_last(hdrs, "h", &hv, &hlen) == RD_KAFKA_RESP_ERR_NO_ERROR &&
             hlen == 1 && memcmp(hv, "x", 1) == 0;
    uint64_t v = ok ? (uint64_t)m->offset * 1000 + (uint64_t)ts : 0;
    rill_elem_release(in);
    *out = rill_elem_value(v);
    return RILL_OK;
}

Test(testkit_stage, map_sees_records_and_confirms_after_the_sink, .timeout = 30)
{
    rill_system_t *sys = sys_new();
    rill_testkit_stage_t *h = harness(sys, rill_stage_map(check_fields, NULL));
    for (int64_t o = 0; o < 3; o++)
        push(h, o);
    cr_assert_eq(rill_testkit_stage_wait_outputs(h, 3, 5000), RILL_OK);
    for (size_t i = 0; i < 3; i++) {
        const rill_elem_t *e = rill_testkit_stage_output(h, i);
        cr_assert(e && rill_elem_is_value(e));
        cr_expect_eq(e->arg, i * 1000 + 1000 + i, "output %zu: %llu", i,
                     (unsigned long long)e->arg);
        cr_expect_null(e->origin, "the sink took the origin");
    }
    cr_assert_null(rill_testkit_stage_output(h, 3));
    cr_assert_eq(rill_testkit_stage_wait_settled(h, 5000), RILL_OK);
    for (int64_t o = 0; o < 3; o++)
        cr_expect_eq(settled(h, o), RILL_TESTKIT_CONFIRMED, "offset %lld", (long long)o);
    rill_pipeline_result_t r;
    cr_assert_eq(rill_testkit_stage_finish(h, 5000, &r), RILL_OK);
    cr_expect_eq(r.end, RILL_PIPELINE_COMPLETED, "end %d: %s", r.end, r.text);
    cr_expect_eq(r.delivered, 3);
    rill_testkit_stage_destroy(h);
    rill_system_destroy(sys);
}

static int even_offset(void *opaque, const rill_elem_t *e)
{
    (void)opaque;
    const rd_kafka_message_t *m = rill_record(e);
    return m && m->offset % 2 == 0;
}

Test(testkit_stage, filter_confirms_what_it_drops, .timeout = 30)
{
    rill_system_t *sys = sys_new();
    rill_testkit_stage_t *h = harness(sys, rill_stage_filter(even_offset, NULL));
    for (int64_t o = 0; o < 6; o++)
        push(h, o);
    cr_assert_eq(rill_testkit_stage_wait_outputs(h, 3, 5000), RILL_OK);
    cr_assert_eq(rill_testkit_stage_wait_settled(h, 5000), RILL_OK);
    cr_expect_eq(rill_testkit_stage_output_count(h), 3);
    for (size_t i = 0; i < 3; i++) {
        const rd_kafka_message_t *m = rill_record(rill_testkit_stage_output(h, i));
        cr_assert(m, "output %zu is still a record", i);
        cr_expect_eq(m->offset, (int64_t)(2 * i));
    }
    for (int64_t o = 0; o < 6; o++)
        cr_expect_eq(settled(h, o), RILL_TESTKIT_CONFIRMED, "offset %lld", (long long)o);
    rill_testkit_stage_destroy(h);
    rill_system_destroy(sys);
}

static rill_err_t fail_on_1(void *opaque, rill_elem_t *in, rill_elem_t *out)
{
    (void)opaque;
    int64_t offset = rill_record(in)->offset;
    rill_elem_release(in);
    if (offset == 1)
        return RILL_EINVAL;
    *out = rill_elem_value((uint64_t)offset);
    return RILL_OK;
}

Test(testkit_stage, failing_map_releases_its_record_and_fails, .timeout = 30)
{
    rill_system_t *sys = sys_new();
    rill_testkit_stage_t *h = harness(sys, rill_stage_map(fail_on_1, NULL));
    push(h, 0);
    cr_assert_eq(rill_testkit_stage_wait_outputs(h, 1, 5000), RILL_OK);
    push(h, 1);
    rill_pipeline_result_t r;
    cr_assert_eq(rill_testkit_stage_finish(h, 5000, &r), RILL_OK);
    cr_expect_eq(r.end, RILL_PIPELINE_FAILED, "end %d: %s", r.end, r.text);
    cr_expect_eq(r.code, RILL_EINVAL, "code %s", rill_err_name(r.code));
    cr_expect(r.text[0], "the failure has a sentence");
    cr_assert_eq(rill_testkit_stage_wait_settled(h, 5000), RILL_OK);
    cr_expect_eq(settled(h, 0), RILL_TESTKIT_CONFIRMED);
    cr_expect_eq(settled(h, 1), RILL_TESTKIT_RELEASED);
    cr_expect_eq(rill_testkit_stage_wait_outputs(h, 2, 100), RILL_ESTOPPED);
    cr_expect_eq(rill_testkit_stage_push(h, &(rill_testkit_record_t){.topic = T, .offset = 9}),
                 RILL_ESTATE, "no push after finish");
    rill_testkit_stage_destroy(h);
    rill_system_destroy(sys);
}

static _Atomic int stateful_calls;

static rill_err_t count(void *opaque, rill_state_t *st, rill_elem_t *in, rill_emitter_t *out)
{
    (void)opaque, (void)out;
    rill_elem_release(in);
    rill_err_t err = sk_add_u64(st, "n", 1);
    atomic_fetch_add(&stateful_calls, 1);
    return err;
}

Test(testkit_stage, stateful_confirms_at_its_commit, .timeout = 30)
{
    rill_system_t *sys = sys_new();
    char err[256];
    rill_store_t *store = NULL;
    cr_assert_eq(rill_store_open_memory("harness", &store, err, sizeof(err)), RILL_OK, "%s", err);
    rill_stateful_opts_t so = {.commit_count = 3, .commit_ms = 60000};
    rill_testkit_stage_t *h = harness(sys, rill_stage_stateful(store, &so, count, NULL));
    push(h, 0);
    push(h, 1);
    int ok;
    KK_WAIT_UNTIL(ok, 5000, atomic_load(&stateful_calls) == 2);
    cr_assert(ok, "the stage processed both records");
    cr_expect_eq(settled(h, 0), RILL_TESTKIT_PENDING, "not confirmed before the commit");
    cr_expect_eq(settled(h, 1), RILL_TESTKIT_PENDING);
    int64_t offset = -1;
    cr_expect_eq(rill_store_offset(store, T, 0, &offset), RILL_ENOENT, "nothing committed yet");
    push(h, 2);
    cr_assert_eq(rill_testkit_stage_wait_settled(h, 5000), RILL_OK);
    for (int64_t o = 0; o < 3; o++)
        cr_expect_eq(settled(h, o), RILL_TESTKIT_CONFIRMED, "offset %lld", (long long)o);
    uint64_t n = 0;
    size_t len = 0;
    cr_assert_eq(rill_store_read(store, T, 0, "n", 1, &n, sizeof(n), &len), RILL_OK);
    cr_expect_eq(n, 3);
    cr_assert_eq(rill_store_offset(store, T, 0, &offset), RILL_OK);
    cr_expect_eq(offset, 3, "the offset after the last record committed");
    rill_pipeline_result_t r;
    cr_assert_eq(rill_testkit_stage_finish(h, 5000, &r), RILL_OK);
    cr_expect_eq(r.end, RILL_PIPELINE_COMPLETED, "end %d: %s", r.end, r.text);
    rill_testkit_stage_destroy(h);
    rill_store_close(store);
    rill_system_destroy(sys);
}

static rill_err_t reject_1(void *opaque, rill_elem_t *in, rill_elem_t *out)
{
    (void)opaque;
    int64_t offset = rill_record(in)->offset;
    if (offset == 1) {
        rill_elem_reject(in, "poison");
        *out = rill_elem_value(99); /* dropped by the stage */
        return RILL_OK;
    }
    rill_elem_release(in);
    *out = rill_elem_value((uint64_t)offset);
    return RILL_OK;
}

Test(testkit_stage, reject_is_recorded, .timeout = 30)
{
    rill_system_t *sys = sys_new();
    rill_testkit_stage_t *h = harness(sys, rill_stage_map(reject_1, NULL));
    for (int64_t o = 0; o < 3; o++)
        push(h, o);
    cr_assert_eq(rill_testkit_stage_wait_settled(h, 5000), RILL_OK);
    cr_expect_eq(settled(h, 0), RILL_TESTKIT_CONFIRMED);
    cr_expect_eq(settled(h, 1), RILL_TESTKIT_REJECTED);
    cr_expect_eq(settled(h, 2), RILL_TESTKIT_CONFIRMED);
    rill_pipeline_result_t r;
    cr_assert_eq(rill_testkit_stage_finish(h, 5000, &r), RILL_OK);
    cr_expect_eq(r.end, RILL_PIPELINE_COMPLETED, "end %d: %s", r.end, r.text);
    cr_expect_eq(r.delivered, 2);
    cr_expect_eq(rill_testkit_stage_output(h, 1)->arg, 2);
    rill_testkit_stage_destroy(h);
    rill_system_destroy(sys);
}

Test(testkit_stage, misuse_is_refused, .timeout = 30)
{
    rill_system_t *sys = sys_new();
    char err[256] = "";
    rill_testkit_stage_t *h = NULL;
    cr_expect_eq(rill_testkit_stage_start(NULL, rill_sink_ignore(), &h, err, sizeof(err)),
                 RILL_EINVAL);
    cr_expect(err[0], "a sentence");
    cr_expect_eq(rill_testkit_stage_start(sys, NULL, &h, NULL, 0), RILL_EINVAL);
    cr_expect_eq(rill_testkit_stage_start(sys, rill_stage_map(NULL, NULL), &h, err, sizeof(err)),
                 RILL_EINVAL, "a stage made from bad arguments: %s", err);
    cr_expect_null(h);
    h = harness(sys, rill_stage_filter(even_offset, NULL));
    cr_expect_eq(rill_testkit_stage_push(h, NULL), RILL_EINVAL);
    cr_expect_eq(rill_testkit_stage_push(h, &(rill_testkit_record_t){.offset = 1}), RILL_EINVAL,
                 "no topic");
    cr_expect_eq(rill_testkit_stage_push(h, &(rill_testkit_record_t){.topic = T, .offset = -1}),
                 RILL_EINVAL, "no offset");
    cr_expect_eq(settled(h, 5), RILL_TESTKIT_UNKNOWN);
    cr_expect_eq(rill_testkit_stage_settled(NULL, T, 0, 0), RILL_TESTKIT_UNKNOWN);
    cr_expect_eq(rill_testkit_stage_wait_settled(NULL, 1), RILL_EINVAL);
    cr_expect_eq(rill_testkit_stage_output_count(NULL), 0);
    /* Nothing pushed: settled at once; no output: a timeout. */
    cr_expect_eq(rill_testkit_stage_wait_settled(h, 1000), RILL_OK);
    cr_expect_eq(rill_testkit_stage_wait_outputs(h, 1, 20), RILL_ETIMEDOUT);
    rill_testkit_stage_destroy(h);
    rill_testkit_stage_destroy(NULL);
    rill_system_destroy(sys);
}

Test(testkit_stage, virtual_clock, .timeout = 10)
{
    rill_testkit_clock_t *c = rill_testkit_clock_new(5000);
    cr_assert(c);
    cr_expect_eq(rill_testkit_clock_now(c), 5000);
    rill_testkit_clock_advance(c, 250);
    cr_expect_eq(rill_testkit_clock_now(c), 5250);
    rill_testkit_clock_advance(c, -100);
    rill_testkit_clock_set(c, 4000);
    cr_expect_eq(rill_testkit_clock_now(c), 5250, "time does not go back");
    rill_testkit_clock_set(c, 9000);
    cr_expect_eq(rill_testkit_clock_now(c), 9000);
    cr_expect_eq(rill_testkit_clock_now(NULL), 0);
    rill_testkit_clock_destroy(c);
}

/* ---- a window stage under virtual time, no broker ---- */

static void push_at(rill_testkit_stage_t *h, int64_t offset, const char *key, int64_t ts)
{
    rill_testkit_record_t r = {.topic = T,
                               .partition = 0,
                               .offset = offset,
                               .timestamp = ts,
                               .key = key,
                               .key_len = strlen(key),
                               .value = "x",
                               .value_len = 1};
    cr_assert_eq(rill_testkit_stage_push(h, &r), RILL_OK);
}

static rill_err_t count_one(void *opaque, void *agg, const rill_elem_t *in)
{
    (void)opaque;
    (void)in;
    ++*(uint32_t *)agg;
    return RILL_OK;
}

/* A quiet key's window closes when the (virtual) wall clock passes its end
 * + grace + wall_close_ms, not before; a record for it after that is late:
 * counted, dropped and confirmed. Milliseconds, no broker. */
Test(testkit_stage, window_closes_by_the_virtual_clock_and_late_records_are_dropped, .timeout = 30)
{
    rill_system_t *sys = sys_new();
    rill_store_t *store = NULL;
    cr_assert_eq(rill_store_open_memory("window", &store, NULL, 0), RILL_OK);
    rill_testkit_clock_t *clock = rill_testkit_clock_new(0);
    rill_window_opts_t wo = {.type = RILL_WINDOW_TUMBLING,
                             .size_ms = 60000,
                             .grace_ms = 5000,
                             .wall_close_ms = 1000,
                             .now_ms = rill_testkit_clock_now,
                             .now_opaque = clock,
                             .tick_ms = 1,
                             .commit = {.commit_ms = 1}};
    rill_window_ops_t ops = {.agg_size = sizeof(uint32_t), .add = count_one};
    rill_testkit_stage_t *h = harness(sys, rill_stage_window(store, &wo, &ops, NULL));
    push_at(h, 0, "card-1", 1000);
    push_at(h, 1, "card-1", 2000);
    push_at(h, 2, "card-2", 59999);
    cr_assert_eq(rill_testkit_stage_wait_settled(h, 5000), RILL_OK, "committed, so confirmed");
    /* 65,999 ms: end + grace + wall_close_ms is 66,000: still open. */
    rill_testkit_clock_set(clock, 66000);
    cr_assert_eq(rill_testkit_stage_wait_outputs(h, 1, 50), RILL_ETIMEDOUT, "closed too early");
    rill_testkit_clock_advance(clock, 1);
    cr_assert_eq(rill_testkit_stage_wait_outputs(h, 2, 5000), RILL_OK, "no result by the clock");
    uint32_t counts[2] = {0, 0};
    for (size_t i = 0; i < 2; i++) {
        const rill_window_result_t *w = rill_window_result(rill_testkit_stage_output(h, i));
        cr_assert_not_null(w);
        cr_assert(w->final && w->start_ms == 0 && w->end_ms == 60000);
        memcpy(&counts[w->key_len == 6 && !memcmp(w->key, "card-2", 6)], w->agg, 4);
    }
    cr_expect_eq(counts[0], 2, "card-1 counted %u", counts[0]);
    cr_expect_eq(counts[1], 1, "card-2 counted %u", counts[1]);
    push_at(h, 3, "card-1", 3000); /* its window closed: late */
    cr_assert_eq(rill_testkit_stage_wait_settled(h, 5000), RILL_OK);
    cr_expect_eq(settled(h, 3), RILL_TESTKIT_CONFIRMED, "a late record is dropped and confirmed");
    rill_store_stats_t ss;
    rill_store_stats(store, &ss);
    cr_expect_eq(ss.late, 1);
    cr_expect_eq(ss.windows_closed, 2);
    cr_expect_eq(rill_testkit_stage_output_count(h), 2, "no result for the late record");
    rill_pipeline_result_t r;
    cr_assert_eq(rill_testkit_stage_finish(h, 5000, &r), RILL_OK);
    rill_testkit_stage_destroy(h);
    rill_testkit_clock_destroy(clock);
    rill_store_close(store);
    rill_system_destroy(sys);
}
