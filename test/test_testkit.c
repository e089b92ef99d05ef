/*
 * The embedded broker and the testkit helpers: round trips with exact
 * content, fault injection that visibly takes effect, and every invalid
 * argument answered with an error code and a message (ASan checks that
 * nothing leaks on those paths).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "support/rtest.h"

#include <rill/testkit.h>

#include "actors/util.h"
#include "support/kafka_kit.h"

static rill_broker_t *start_broker(int n)
{
    char err[512] = "";
    rill_broker_t *b = rill_broker_new(n, err, sizeof(err));
    cr_assert_not_null(b, "rill_broker_new(%d): %s", n, err);
    return b;
}

static void create_topic(rill_broker_t *b, const char *topic, int parts, int rf)
{
    char err[512] = "";
    rill_err_t e = rill_broker_create_topic(b, topic, parts, rf, err, sizeof(err));
    cr_assert_eq(e, RILL_OK, "create %s: %s", topic, err);
}

Test(testkit, roundtrip_10k_keyed_records_exact_content, .timeout = 120)
{
    rill_broker_t *b = start_broker(3);
    cr_assert_eq(rill_broker_count(b), 3);
    create_topic(b, "keyed", 8, 3);
    create_topic(b, "other", 2, 1);
    const char *boot = rill_broker_bootstraps(b);
    cr_assert(boot && strstr(boot, "127.0.0.1:"), "bootstraps: %s", boot ? boot : "(null)");

    char err[512] = "";
    rill_gen_t gen = RILL_GEN_DEFAULT;
    gen.key_space = 100;
    gen.headers = 1;
    rill_err_t e =
        rill_testkit_produce_generated(boot, "keyed", 10000, &gen, NULL, err, sizeof(err));
    cr_assert_eq(e, RILL_OK, "produce: %s", err);

    rill_consumed_t *got = NULL;
    e = rill_testkit_consume(boot, "keyed", RILL_CONSUME_TO_END, NULL, &got, err, sizeof(err));
    cr_assert_eq(e, RILL_OK, "consume: %s", err);
    cr_assert_eq(rill_consumed_count(got), 10000);

    rill_verify_report_t rep;
    e = rill_testkit_verify(got, 10000, &gen, &rep, err, sizeof(err));
    cr_assert_eq(e, RILL_OK, "verify: %s", err);
    cr_assert_eq(rep.distinct, 10000);
    cr_assert_eq(rep.missing + rep.duplicates + rep.corrupt + rep.unexpected, 0);
    cr_assert_eq(rep.out_of_order, 0, "idempotent producer keeps per-partition order");

    /* Keyed: every key lives in exactly one partition, and records spread
     * over several partitions. */
    int32_t part_of_key[100];
    int used[8] = {0};
    for (int k = 0; k < 100; k++)
        part_of_key[k] = -1;
    for (size_t i = 0; i < rill_consumed_count(got); i++) {
        const rill_testkit_record_t *r = rill_consumed_at(got, i);
        cr_assert_str_eq(r->topic, "keyed");
        cr_assert(r->partition >= 0 && r->partition < 8);
        cr_assert_geq(r->offset, 0);
        int k = atoi((const char *)r->key + 4); /* "key-<k>" */
        cr_assert(k >= 0 && k < 100);
        if (part_of_key[k] < 0)
            part_of_key[k] = r->partition;
        cr_assert_eq(part_of_key[k], r->partition, "key %d in two partitions", k);
        used[r->partition] = 1;
    }
    int nused = 0;
    for (int p = 0; p < 8; p++)
        nused += used[p];
    cr_assert_geq(nused, 4, "100 keys should spread over most of 8 partitions, used %d", nused);
    cr_assert_null(rill_consumed_at(got, 10000));
    rill_consumed_destroy(got);

    /* The other topic is untouched. */
    e = rill_testkit_consume(boot, "other", RILL_CONSUME_TO_END, NULL, &got, err, sizeof(err));
    cr_assert_eq(e, RILL_OK, "consume other: %s", err);
    cr_assert_eq(rill_consumed_count(got), 0);
    rill_consumed_destroy(got);
    rill_broker_destroy(b);
}

Test(testkit, java_murmur2_matches_kafkas_own_test_vectors)
{
    /* org.apache.kafka.common.utils.UtilsTest#testMurmur2 */
    static const struct {
        const char *key;
        int32_t hash;
    } v[] = {{"21", -973932308},
             {"foobar", -790332482},
             {"a-little-bit-long-string", -985981536},
             {"a-little-bit-longer-string", -1486304829},
             {"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971},
             {"abc", 479470107}};
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
        cr_assert_eq(kk_java_murmur2(v[i].key, strlen(v[i].key)), v[i].hash, "murmur2(\"%s\")",
                     v[i].key);
}

Test(testkit, keyed_records_land_where_java_clients_put_them, .timeout = 60)
{
    /* Records with a key go to the partition a Java producer would pick
     * (murmur2), so rill and Java services agree on where a key lives. */
    rill_broker_t *b = start_broker(1);
    create_topic(b, "placed", 7, 1);
    const char *boot = rill_broker_bootstraps(b);
    rill_gen_t gen = RILL_GEN_DEFAULT;
    gen.key_space = 50;
    char err[512] = "";
    cr_assert_eq(rill_testkit_produce_generated(boot, "placed", 500, &gen, NULL, err, sizeof(err)),
                 RILL_OK, "%s", err);
    rill_consumed_t *got = NULL;
    cr_assert_eq(
        rill_testkit_consume(boot, "placed", RILL_CONSUME_TO_END, NULL, &got, err, sizeof(err)),
        RILL_OK, "%s", err);
    cr_assert_eq(rill_consumed_count(got), 500);
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
    rill_broker_destroy(b);
}

Test(testkit, given_records_keep_every_field, .timeout = 60)
{
    rill_broker_t *b = start_broker(1);
    create_topic(b, "given", 3, 1);
    const char *boot = rill_broker_bootstraps(b);
    rill_testkit_header_t h2[] = {{"trace", "abc", 3}, {"empty", NULL, 0}, {"trace", "def", 3}};
    rill_testkit_record_t recs[] = {
        {.partition = 2, .key = "k1", .key_len = 2, .value = "v1", .value_len = 2},
        {.partition = 2, .key = NULL, .value = "no key", .value_len = 6},
        {.partition = 2, .key = "tomb", .key_len = 4, .value = NULL, .value_len = 0},
        {.partition = 2,
         .key = "hdr",
         .key_len = 3,
         .value = "with headers",
         .value_len = 12,
         .headers = h2,
         .header_count = 3,
         .timestamp = 1700000000123},
        {.partition = 0, .key = "bin\0key", .key_len = 7, .value = "\0\1\2", .value_len = 3},
    };
    char err[512] = "";
    cr_assert_eq(rill_testkit_produce(boot, "given", recs, 5, NULL, err, sizeof(err)), RILL_OK,
                 "%s", err);
    rill_consumed_t *got = NULL;
    cr_assert_eq(
        rill_testkit_consume(boot, "given", RILL_CONSUME_TO_END, NULL, &got, err, sizeof(err)),
        RILL_OK, "%s", err);
    cr_assert_eq(rill_consumed_count(got), 5);

    /* Partition 0 holds the binary record; partition 2 the other four, in
     * produce order. Records come grouped by partition, in offset order. */
    const rill_testkit_record_t *p2[4];
    int n2 = 0;
    const rill_testkit_record_t *p0 = NULL;
    for (size_t i = 0; i < 5; i++) {
        const rill_testkit_record_t *r = rill_consumed_at(got, i);
        if (r->partition == 2)
            p2[n2++] = r;
        else if (r->partition == 0)
            p0 = r;
    }
    cr_assert_eq(n2, 4);
    cr_assert_not_null(p0);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(p2[i]->offset, i);

    cr_assert_eq(p2[0]->key_len, 2);
    cr_assert_arr_eq(p2[0]->key, "k1", 2);
    cr_assert_arr_eq(p2[0]->value, "v1", 2);
    cr_assert_null(p2[1]->key, "a record without key comes back without key");
    cr_assert_arr_eq(p2[1]->value, "no key", 6);
    cr_assert_null(p2[2]->value, "a tombstone comes back with a NULL value");
    cr_assert_eq(p2[2]->value_len, 0);
    cr_assert_eq(p2[3]->header_count, 3);
    cr_assert_str_eq(p2[3]->headers[0].name, "trace");
    cr_assert_arr_eq(p2[3]->headers[0].value, "abc", 3);
    cr_assert_str_eq(p2[3]->headers[1].name, "empty");
    cr_assert_null(p2[3]->headers[1].value);
    cr_assert_str_eq(p2[3]->headers[2].name, "trace");
    cr_assert_arr_eq(p2[3]->headers[2].value, "def", 3);
    cr_assert_eq(p2[3]->timestamp, 1700000000123);
    cr_assert_eq(p2[0]->header_count, 0);
    cr_assert_eq(p0->key_len, 7);
    cr_assert_arr_eq(p0->key, "bin\0key", 7);
    cr_assert_arr_eq(p0->value, "\0\1\2", 3);
    rill_consumed_destroy(got);
    rill_broker_destroy(b);
}

Test(testkit, consume_until_count_and_timeout_keeps_partial, .timeout = 60)
{
    rill_broker_t *b = start_broker(1);
    create_topic(b, "count", 2, 1);
    const char *boot = rill_broker_bootstraps(b);
    char err[512] = "";
    cr_assert_eq(rill_testkit_produce_generated(boot, "count", 500, NULL, NULL, err, sizeof(err)),
                 RILL_OK, "%s", err);
    rill_consumed_t *got = NULL;
    cr_assert_eq(rill_testkit_consume(boot, "count", 500, NULL, &got, err, sizeof(err)), RILL_OK,
                 "%s", err);
    cr_assert_eq(rill_consumed_count(got), 500);
    rill_consumed_destroy(got);

    rill_testkit_opts_t opts = {.timeout_ms = 1500};
    rill_err_t e = rill_testkit_consume(boot, "count", 600, &opts, &got, err, sizeof(err));
    cr_assert_eq(e, RILL_ETIMEDOUT);
    cr_assert(strstr(err, "500 of 600"), "errstr says how far it got: %s", err);
    cr_assert_not_null(got, "a timed-out consume still returns what it read");
    cr_assert_eq(rill_consumed_count(got), 500);
    rill_consumed_destroy(got);
    rill_broker_destroy(b);
}

static size_t progress_calls, progress_last, progress_total;

static void count_progress(void *opaque, size_t done, size_t total)
{
    (void)opaque;
    cr_assert_geq(done, progress_last, "progress never goes backwards");
    progress_calls++;
    progress_last = done;
    progress_total = total;
}

Test(testkit, progress_is_reported, .timeout = 60)
{
    rill_broker_t *b = start_broker(1);
    create_topic(b, "prog", 1, 1);
    char err[512] = "";
    rill_testkit_opts_t opts = {.progress = count_progress};
    cr_assert_eq(rill_testkit_produce_generated(rill_broker_bootstraps(b), "prog", 5000, NULL,
                                                &opts, err, sizeof(err)),
                 RILL_OK, "%s", err);
    cr_assert_geq(progress_calls, 2);
    cr_assert_leq(progress_calls, 110, "about a hundred reports at most, got %zu", progress_calls);
    cr_assert_eq(progress_last, 5000);
    cr_assert_eq(progress_total, 5000);
    rill_broker_destroy(b);
}

/* Try a TCP connection to the first address of a bootstrap string. */
static int tcp_connect_ok(const char *bootstraps)
{
    const char *colon = strchr(bootstraps, ':'); /* the first broker */
    cr_assert_not_null(colon);
    int port = atoi(colon + 1);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    close(fd);
    return ok;
}

Test(testkit, broker_down_refuses_then_up_serves, .timeout = 60)
{
    rill_broker_t *b = start_broker(1);
    create_topic(b, "updown", 1, 1);
    const char *boot = rill_broker_bootstraps(b);
    char err[512] = "";
    cr_assert(tcp_connect_ok(boot));

    cr_assert_eq(rill_broker_set_down(b, 1), RILL_OK);
    cr_assert_not(tcp_connect_ok(boot), "a down broker refuses connections");
    rill_testkit_opts_t quick = {.timeout_ms = 1500};
    rill_err_t e =
        rill_testkit_produce_generated(boot, "updown", 10, NULL, &quick, err, sizeof(err));
    cr_assert_neq(e, RILL_OK, "producing to a down broker cannot succeed");
    cr_assert(strlen(err) > 0);

    cr_assert_eq(rill_broker_set_up(b, 1), RILL_OK);
    cr_assert(tcp_connect_ok(boot));
    e = rill_testkit_produce_generated(boot, "updown", 10, NULL, NULL, err, sizeof(err));
    cr_assert_eq(e, RILL_OK, "after up: %s", err);
    /* RILL_BROKER_ALL works too. */
    cr_assert_eq(rill_broker_set_down(b, RILL_BROKER_ALL), RILL_OK);
    cr_assert_not(tcp_connect_ok(boot));
    cr_assert_eq(rill_broker_set_up(b, RILL_BROKER_ALL), RILL_OK);
    cr_assert(tcp_connect_ok(boot));
    rill_broker_destroy(b);
}

Test(testkit, rtt_delays_responses, .timeout = 60)
{
    rill_broker_t *b = start_broker(1);
    create_topic(b, "slow", 1, 1);
    const char *boot = rill_broker_bootstraps(b);
    char err[512] = "";
    /* Warm up nothing: each produce call builds its own client, so every
     * call pays connection setup plus at least one delayed round trip. */
    cr_assert_eq(rill_broker_set_rtt(b, 1, 400), RILL_OK);
    int64_t t0 = rill__now_ms();
    cr_assert_eq(rill_testkit_produce_generated(boot, "slow", 1, NULL, NULL, err, sizeof(err)),
                 RILL_OK, "%s", err);
    int64_t slow_ms = rill__now_ms() - t0;
    /* A lower bound only: the delay cannot make the call faster. */
    cr_assert_geq(slow_ms, 400, "produce took %lld ms with a 400 ms rtt", (long long)slow_ms);
    cr_assert_eq(rill_broker_set_rtt(b, 1, 0), RILL_OK);
    rill_broker_destroy(b);
}

Test(testkit, pushed_request_errors_take_effect, .timeout = 60)
{
    rill_broker_t *b = start_broker(1);
    create_topic(b, "errs", 1, 1);
    const char *boot = rill_broker_bootstraps(b);
    char err[512] = "";

    /* Retriable errors: the idempotent producer retries, nothing is lost or
     * duplicated. */
    cr_assert_eq(
        rill_broker_push_request_errors(b, 0, 3, RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION),
        RILL_OK);
    cr_assert_eq(rill_testkit_produce_generated(boot, "errs", 100, NULL, NULL, err, sizeof(err)),
                 RILL_OK, "%s", err);
    rill_consumed_t *got = NULL;
    cr_assert_eq(
        rill_testkit_consume(boot, "errs", RILL_CONSUME_TO_END, NULL, &got, err, sizeof(err)),
        RILL_OK, "%s", err);
    cr_assert_eq(rill_testkit_verify(got, 100, NULL, NULL, err, sizeof(err)), RILL_OK, "%s", err);
    rill_consumed_destroy(got);

    /* A permanent error fails the delivery, and the message says why. */
    cr_assert_eq(rill_broker_push_request_errors(b, rill_api_key_from_name("Produce"), 1,
                                                 RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED),
                 RILL_OK);
    rill_err_t e = rill_testkit_produce_generated(boot, "errs", 1, NULL, NULL, err, sizeof(err));
    cr_assert_eq(e, RILL_EKAFKA);
    cr_assert(strstr(err, "uthoriz"), "errstr names the failure: %s", err);

    /* Cleared errors do not fire. */
    cr_assert_eq(
        rill_broker_push_request_errors(b, 0, 5, RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED),
        RILL_OK);
    cr_assert_eq(rill_broker_clear_request_errors(b, 0), RILL_OK);
    cr_assert_eq(rill_testkit_produce_generated(boot, "errs", 1, NULL, NULL, err, sizeof(err)),
                 RILL_OK, "%s", err);
    rill_broker_destroy(b);
}

Test(testkit, verify_finds_missing_duplicate_corrupt_unexpected, .timeout = 60)
{
    rill_broker_t *b = start_broker(1);
    create_topic(b, "ver", 1, 1);
    const char *boot = rill_broker_bootstraps(b);
    char err[512] = "";
    rill_gen_t gen = RILL_GEN_DEFAULT;
    cr_assert_eq(rill_testkit_produce_generated(boot, "ver", 100, &gen, NULL, err, sizeof(err)),
                 RILL_OK, "%s", err);
    rill_gen_t again = gen;
    again.first_seq = 10; /* seq 10..19 a second time */
    cr_assert_eq(rill_testkit_produce_generated(boot, "ver", 10, &again, NULL, err, sizeof(err)),
                 RILL_OK, "%s", err);
    rill_gen_t beyond = gen;
    beyond.first_seq = 1000;
    cr_assert_eq(rill_testkit_produce_generated(boot, "ver", 1, &beyond, NULL, err, sizeof(err)),
                 RILL_OK, "%s", err);
    rill_testkit_record_t bad[] = {
        {.partition = 0,
         .key = "key-5",
         .key_len = 5,
         .value = "seq=5 key=wrong ",
         .value_len = 16},
        {.partition = 0, .key = "x", .key_len = 1, .value = "not generated", .value_len = 13},
    };
    cr_assert_eq(rill_testkit_produce(boot, "ver", bad, 2, NULL, err, sizeof(err)), RILL_OK, "%s",
                 err);

    rill_consumed_t *got = NULL;
    cr_assert_eq(
        rill_testkit_consume(boot, "ver", RILL_CONSUME_TO_END, NULL, &got, err, sizeof(err)),
        RILL_OK, "%s", err);
    cr_assert_eq(rill_consumed_count(got), 113);

    rill_verify_report_t rep;
    cr_assert_eq(rill_testkit_verify(got, 100, &gen, &rep, err, sizeof(err)), RILL_ESTATE);
    cr_assert_eq(rep.expected, 100);
    cr_assert_eq(rep.seen, 113);
    cr_assert_eq(rep.distinct, 100);
    cr_assert_eq(rep.missing, 0);
    cr_assert_eq(rep.duplicates, 10);
    cr_assert_eq(rep.unexpected, 1);
    cr_assert_eq(rep.corrupt, 2);
    cr_assert_eq(rep.out_of_order, 1, "one order break: the re-sent 10 came after 99");

    cr_assert_eq(rill_testkit_verify(got, 101, &gen, &rep, err, sizeof(err)), RILL_ESTATE);
    cr_assert_eq(rep.missing, 1);
    cr_assert(strstr(err, "seq 100"), "names the first missing record: %s", err);
    rill_consumed_destroy(got);
    rill_broker_destroy(b);
}

Test(testkit, two_clusters_in_one_process_are_independent, .timeout = 60)
{
    rill_broker_t *a = start_broker(1), *b = start_broker(2);
    create_topic(a, "same", 1, 1);
    create_topic(b, "same", 1, 2);
    cr_assert_str_neq(rill_broker_bootstraps(a), rill_broker_bootstraps(b));
    char err[512] = "";
    cr_assert_eq(rill_testkit_produce_generated(rill_broker_bootstraps(a), "same", 7, NULL, NULL,
                                                err, sizeof(err)),
                 RILL_OK, "%s", err);
    rill_consumed_t *got = NULL;
    cr_assert_eq(rill_testkit_consume(rill_broker_bootstraps(b), "same", RILL_CONSUME_TO_END, NULL,
                                      &got, err, sizeof(err)),
                 RILL_OK, "%s", err);
    cr_assert_eq(rill_consumed_count(got), 0);
    rill_consumed_destroy(got);
    rill_broker_destroy(a);
    rill_broker_destroy(b);
}

Test(testkit, invalid_arguments_give_codes_and_messages, .timeout = 60)
{
    char err[512];
#define EXPECT_ERR(call, code)                                                                     \
    do {                                                                                           \
        err[0] = '\0';                                                                             \
        rill_err_t e_ = (call);                                                                    \
        cr_assert_eq(e_, (code), "%s returned %s, expected %s (%s)", #call, rill_err_name(e_),     \
                     rill_err_name(code), err);                                                    \
    } while (0)

    /* Broker construction. */
    int bad_counts[] = {0, -1, RILL_BROKER_MAX + 1};
    for (size_t i = 0; i < 3; i++) {
        err[0] = '\0';
        cr_assert_null(rill_broker_new(bad_counts[i], err, sizeof(err)));
        cr_assert(strstr(err, "broker count"), "message for %d: %s", bad_counts[i], err);
    }
    cr_assert_null(rill_broker_new(0, NULL, 0), "a NULL errstr is allowed");
    rill_broker_destroy(NULL);
    cr_assert_null(rill_broker_bootstraps(NULL));
    cr_assert_eq(rill_broker_count(NULL), 0);
    cr_assert_null(rill_broker_mock_cluster(NULL));

    rill_broker_t *b = start_broker(2);
    cr_assert_not_null(rill_broker_mock_cluster(b));
    EXPECT_ERR(rill_broker_create_topic(NULL, "t", 1, 1, err, sizeof(err)), RILL_EINVAL);
    EXPECT_ERR(rill_broker_create_topic(b, NULL, 1, 1, err, sizeof(err)), RILL_EINVAL);
    cr_assert(strstr(err, "NULL"), "%s", err);
    EXPECT_ERR(rill_broker_create_topic(b, "", 1, 1, err, sizeof(err)), RILL_EINVAL);
    EXPECT_ERR(rill_broker_create_topic(b, "..", 1, 1, err, sizeof(err)), RILL_EINVAL);
    EXPECT_ERR(rill_broker_create_topic(b, "bad name!", 1, 1, err, sizeof(err)), RILL_EINVAL);
    cr_assert(strstr(err, "invalid character"), "%s", err);
    char longname[300];
    memset(longname, 'a', sizeof(longname) - 1);
    longname[299] = '\0';
    EXPECT_ERR(rill_broker_create_topic(b, longname, 1, 1, err, sizeof(err)), RILL_EINVAL);
    EXPECT_ERR(rill_broker_create_topic(b, "t", 0, 1, err, sizeof(err)), RILL_EINVAL);
    cr_assert(strstr(err, "partitions"), "%s", err);
    EXPECT_ERR(rill_broker_create_topic(b, "t", -3, 1, err, sizeof(err)), RILL_EINVAL);
    EXPECT_ERR(rill_broker_create_topic(b, "t", 1, 0, err, sizeof(err)), RILL_EINVAL);
    EXPECT_ERR(rill_broker_create_topic(b, "t", 1, 3, err, sizeof(err)), RILL_EINVAL);
    cr_assert(strstr(err, "replication"), "%s", err);
    EXPECT_ERR(rill_broker_create_topic(b, "t", 1, 2, err, sizeof(err)), RILL_OK);
    EXPECT_ERR(rill_broker_create_topic(b, "t", 1, 2, err, sizeof(err)), RILL_EEXIST);
    cr_assert(strstr(err, "already exists"), "%s", err);
    EXPECT_ERR(rill_broker_create_topic(b, "t2", 1, 1, NULL, 0), RILL_OK);

    /* Fault injection. */
    EXPECT_ERR(rill_broker_set_down(NULL, 1), RILL_EINVAL);
    EXPECT_ERR(rill_broker_set_down(b, 0), RILL_ENOENT);
    EXPECT_ERR(rill_broker_set_down(b, 3), RILL_ENOENT);
    EXPECT_ERR(rill_broker_set_up(b, 7), RILL_ENOENT);
    EXPECT_ERR(rill_broker_set_up(NULL, 1), RILL_EINVAL);
    EXPECT_ERR(rill_broker_set_rtt(b, 1, -1), RILL_EINVAL);
    EXPECT_ERR(rill_broker_set_rtt(b, 9, 10), RILL_ENOENT);
    EXPECT_ERR(rill_broker_set_rtt(NULL, 1, 10), RILL_EINVAL);
    EXPECT_ERR(rill_broker_push_request_errors(NULL, 8, 1, 25), RILL_EINVAL);
    EXPECT_ERR(rill_broker_push_request_errors(b, -1, 1, 25), RILL_EINVAL);
    EXPECT_ERR(rill_broker_push_request_errors(b, RILL_API_KEY_MAX + 1, 1, 25), RILL_EINVAL);
    EXPECT_ERR(rill_broker_push_request_errors(b, 8, 0, 25), RILL_EINVAL);
    EXPECT_ERR(rill_broker_clear_request_errors(NULL, 8), RILL_EINVAL);
    EXPECT_ERR(rill_broker_clear_request_errors(b, 99), RILL_EINVAL);
    EXPECT_ERR(rill_broker_set_leader(NULL, "t", 0, 1), RILL_EINVAL);
    EXPECT_ERR(rill_broker_set_leader(b, NULL, 0, 1), RILL_EINVAL);
    EXPECT_ERR(rill_broker_set_leader(b, "t", -1, 1), RILL_EINVAL);
    EXPECT_ERR(rill_broker_set_leader(b, "t", 0, 5), RILL_ENOENT);
    EXPECT_ERR(rill_broker_set_leader(b, "t", 7, 1), RILL_ENOENT);
    EXPECT_ERR(rill_broker_set_leader(b, "t", 0, 2), RILL_OK);
    /* An unknown topic is refused, not created (the mock would create it). */
    EXPECT_ERR(rill_broker_set_leader(b, "nosuch", 0, 1), RILL_ENOENT);
    EXPECT_ERR(rill_broker_create_topic(b, "nosuch", 1, 1, err, sizeof(err)), RILL_OK);

    /* Helpers. */
    const char *boot = rill_broker_bootstraps(b);
    rill_testkit_record_t one = {.partition = RILL_PARTITION_ANY, .value = "v", .value_len = 1};
    EXPECT_ERR(rill_testkit_produce(NULL, "t", &one, 1, NULL, err, sizeof(err)), RILL_EINVAL);
    EXPECT_ERR(rill_testkit_produce(boot, NULL, &one, 1, NULL, err, sizeof(err)), RILL_EINVAL);
    EXPECT_ERR(rill_testkit_produce(boot, "t", NULL, 1, NULL, err, sizeof(err)), RILL_EINVAL);
    EXPECT_ERR(rill_testkit_produce(boot, "t", NULL, 0, NULL, err, sizeof(err)), RILL_OK);
    rill_testkit_record_t nohdr = {.value = "v", .value_len = 1, .header_count = 2};
    EXPECT_ERR(rill_testkit_produce(boot, "t", &nohdr, 1, NULL, err, sizeof(err)), RILL_EINVAL);
    rill_testkit_header_t noname = {NULL, "x", 1};
    rill_testkit_record_t badhdr = {
        .value = "v", .value_len = 1, .headers = &noname, .header_count = 1};
    EXPECT_ERR(rill_testkit_produce(boot, "t", &badhdr, 1, NULL, err, sizeof(err)), RILL_EINVAL);
    EXPECT_ERR(rill_testkit_produce_generated(boot, "bad topic", 1, NULL, NULL, err, sizeof(err)),
               RILL_EINVAL);

    const char *bad_conf[] = {"no.such.property", "1", NULL};
    rill_testkit_opts_t opts = {.config = bad_conf};
    EXPECT_ERR(rill_testkit_produce_generated(boot, "t", 1, NULL, &opts, err, sizeof(err)),
               RILL_EKAFKA);
    cr_assert(strstr(err, "no.such.property"), "names the property: %s", err);
    const char *bad_val[] = {"socket.timeout.ms", "1", NULL};
    opts.config = bad_val;
    EXPECT_ERR(rill_testkit_produce_generated(boot, "t", 1, NULL, &opts, err, sizeof(err)),
               RILL_EKAFKA);
    cr_assert(strstr(err, "socket.timeout.ms"), "names the property: %s", err);
    const char *null_val[] = {"linger.ms", NULL, NULL};
    opts.config = null_val;
    EXPECT_ERR(rill_testkit_produce_generated(boot, "t", 1, NULL, &opts, err, sizeof(err)),
               RILL_EINVAL);
    cr_assert(strstr(err, "linger.ms") && strstr(err, "NULL"), "%s", err);

    rill_consumed_t *got = (rill_consumed_t *)&got; /* must be reset to NULL */
    EXPECT_ERR(rill_testkit_consume(boot, "t", 0, NULL, NULL, err, sizeof(err)), RILL_EINVAL);
    EXPECT_ERR(rill_testkit_consume(NULL, "t", 0, NULL, &got, err, sizeof(err)), RILL_EINVAL);
    cr_assert_null(got);
    EXPECT_ERR(rill_testkit_consume(boot, NULL, 0, NULL, &got, err, sizeof(err)), RILL_EINVAL);
    opts.config = bad_conf;
    EXPECT_ERR(rill_testkit_consume(boot, "t", 0, &opts, &got, err, sizeof(err)), RILL_EKAFKA);
    cr_assert_null(got);
    rill_testkit_opts_t quick = {.timeout_ms = 5000};
    EXPECT_ERR(rill_testkit_consume(boot, "does-not-exist", 0, &quick, &got, err, sizeof(err)),
               RILL_ENOENT);
    cr_assert(strstr(err, "does-not-exist"), "%s", err);
    cr_assert_null(got);

    rill_verify_report_t rep;
    EXPECT_ERR(rill_testkit_verify(NULL, 1, NULL, &rep, err, sizeof(err)), RILL_EINVAL);
    cr_assert_eq(rep.expected, 1);
    cr_assert_eq(rill_consumed_count(NULL), 0);
    cr_assert_null(rill_consumed_at(NULL, 0));
    rill_consumed_destroy(NULL);
    rill_broker_destroy(b);
#undef EXPECT_ERR
}

Test(names, api_keys_and_kafka_errors)
{
    cr_assert_eq(rill_api_key_from_name("OffsetCommit"), 8);
    cr_assert_eq(rill_api_key_from_name("offsetcommit"), 8);
    cr_assert_eq(rill_api_key_from_name("Produce"), 0);
    cr_assert_eq(rill_api_key_from_name("ApiVersion"), 18);
    cr_assert_eq(rill_api_key_from_name("Envelope"), 58);
    cr_assert_eq(rill_api_key_from_name("12"), 12);
    cr_assert_eq(rill_api_key_from_name("59"), -1);
    cr_assert_eq(rill_api_key_from_name("-1"), -1);
    cr_assert_eq(rill_api_key_from_name("8x"), -1);
    cr_assert_eq(rill_api_key_from_name("NoSuchApi"), -1);
    cr_assert_eq(rill_api_key_from_name(""), -1);
    cr_assert_eq(rill_api_key_from_name(NULL), -1);
    cr_assert_str_eq(rill_api_key_name(9), "OffsetFetch");
    cr_assert_str_eq(rill_api_key_name(-1), "?");
    cr_assert_str_eq(rill_api_key_name(200), "?");
    for (int16_t k = 0; k <= RILL_API_KEY_MAX; k++)
        cr_assert_eq(rill_api_key_from_name(rill_api_key_name(k)), k);

    rd_kafka_resp_err_t e;
    cr_assert_eq(rill_kafka_err_from_name("UNKNOWN_MEMBER_ID", &e), RILL_OK);
    cr_assert_eq(e, RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID);
    cr_assert_eq(rill_kafka_err_from_name("rebalance_in_progress", &e), RILL_OK);
    cr_assert_eq(e, RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS);
    cr_assert_eq(rill_kafka_err_from_name("RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION", &e), RILL_OK);
    cr_assert_eq(e, RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION);
    cr_assert_eq(rill_kafka_err_from_name("_TRANSPORT", &e), RILL_OK);
    cr_assert_eq(e, RD_KAFKA_RESP_ERR__TRANSPORT);
    cr_assert_eq(rill_kafka_err_from_name("25", &e), RILL_OK);
    cr_assert_eq(e, 25);
    cr_assert_eq(rill_kafka_err_from_name("-195", &e), RILL_OK);
    cr_assert_eq(e, RD_KAFKA_RESP_ERR__TRANSPORT);
    cr_assert_eq(rill_kafka_err_from_name("99999", &e), RILL_EINVAL);
    cr_assert_eq(rill_kafka_err_from_name("987", &e), RILL_EINVAL);
    cr_assert_eq(rill_kafka_err_from_name("NOT_AN_ERROR", &e), RILL_EINVAL);
    cr_assert_eq(rill_kafka_err_from_name(NULL, &e), RILL_EINVAL);
    cr_assert_eq(rill_kafka_err_from_name("25", NULL), RILL_EINVAL);
}

Test(names, error_codes_have_names_and_sentences)
{
    for (int e = 0; e < RILL_ERR__COUNT; e++) {
        cr_assert_not_null(rill_err2str((rill_err_t)e));
        cr_assert_str_neq(rill_err2str((rill_err_t)e), "unknown error", "code %d", e);
        cr_assert(!strncmp(rill_err_name((rill_err_t)e), "RILL_", 5));
        for (int f = 0; f < e; f++)
            cr_assert_str_neq(rill_err_name((rill_err_t)e), rill_err_name((rill_err_t)f));
    }
    cr_assert_str_eq(rill_err2str(RILL_EFULL), "mailbox full");
    cr_assert_str_eq(rill_err2str((rill_err_t)999), "unknown error");
    cr_assert_str_eq(rill_err2str((rill_err_t)-1), "unknown error");
    cr_assert_str_eq(rill_err_name(RILL_ETIMEDOUT), "RILL_ETIMEDOUT");
    cr_assert_str_eq(rill_version_str(), RILL_VERSION_STR);
    cr_assert_gt(RILL_VERSION, 0);
}
