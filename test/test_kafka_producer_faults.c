/*
 * The Kafka sink under faults reached without internal test hooks, against
 * the embedded broker:
 *
 *  - injected Produce REQUEST_TIMED_OUT errors while records stream: every
 *    record reported delivered is in the log (the test configuration of
 *    rill_testkit_produce_faults_config(), under which the mock cannot
 *    lose a batch that librdkafka implicitly acks);
 *  - a permanent delivery failure (an injected non-retriable Produce
 *    error; a record too large for the producer's message.max.bytes): the
 *    origins are released unconfirmed, the records come again after the
 *    restart, and the pipeline's supervisor decides;
 *  - librdkafka's queue full (queue.buffering.max.messages small):
 *    backpressure, not loss, not a failure;
 *  - rill_producer_send() into a full mailbox: RILL_EFULL, the request
 *    stays the caller's, nothing lost or leaked.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support/rtest.h"

#include "support/kafka_kit.h"

#include "kafka/kafka_int.h"

/* librdkafka's properties for quick reconnects (the broker is local). */
static const char *const quick_kv[] = {"reconnect.backoff.ms", "50", "reconnect.backoff.max.ms",
                                       "500", NULL};

static rill_producer_conf_t *producer_conf(const char *boot, const char *const *kv)
{
    rill_producer_conf_t *c = rill_producer_conf_new();
    cr_assert_not_null(c);
    char err[256] = "";
    cr_assert_eq(rill_producer_conf_set(c, "bootstrap.servers", boot, err, sizeof(err)), RILL_OK,
                 "%s", err);
    for (const char *const *p = quick_kv; *p; p += 2)
        cr_assert_eq(rill_producer_conf_set(c, p[0], p[1], err, sizeof(err)), RILL_OK, "%s", err);
    for (const char *const *p = kv; p && *p; p += 2)
        cr_assert_eq(rill_producer_conf_set(c, p[0], p[1], err, sizeof(err)), RILL_OK, "%s=%s: %s",
                     p[0], p[1], err);
    return c;
}

/* A consumer of partitions 0..parts-1 of topic from the group's commits,
 * committing every 100 ms. */
static rill_consumer_conf_t *consumer_conf(const char *boot, const char *group, const char *topic,
                                           int parts)
{
    const char *kv[] = {"auto.offset.reset",
                        "earliest",
                        "rill.commit.interval.ms",
                        "100",
                        "rill.shutdown.timeout.ms",
                        "10000",
                        NULL};
    rill_consumer_conf_t *c = kk_conf_new(boot, group, kv);
    kk_conf_set_kv(c, quick_kv);
    kk_conf_assign_all(c, topic, parts, RILL_OFFSET_COMMITTED);
    return c;
}

/* The generator's record `seq` (rill_gen_t with value_size 100, key per
 * seq): what the testkit writes and rill_testkit_verify() expects. */
static rill_produce_t *gen_request(const char *topic, int32_t partition, uint64_t seq)
{
    char key[32], value[128];
    int kl = snprintf(key, sizeof(key), "key-%" PRIu64, seq);
    int pl = snprintf(value, sizeof(value), "seq=%" PRIu64 " key=%s ", seq, key);
    memset(value + pl, '.', 100 - (size_t)pl);
    rill_produce_t *p = rill_produce_new(topic, partition, key, (size_t)kl, value, 100);
    cr_assert_not_null(p);
    return p;
}

/* Read topic back and check it against `count` generated records: every
 * one present, intact; duplicates are allowed (at least once). */
static rill_verify_report_t verify_topic(kk_env_t *env, const char *topic, size_t count)
{
    rill_consumed_t *c = kk_consume_all(env->boot, topic, 60000);
    rill_gen_t gen = RILL_GEN_DEFAULT;
    rill_verify_report_t rep;
    char err[256] = "";
    cr_assert_eq(rill_testkit_verify(c, count, &gen, &rep, err, sizeof(err)), RILL_OK, "%s", err);
    rill_consumed_destroy(c);
    return rep;
}

/* ------------------------------------------------------------------ */
/* Copying records from "in" to "out" (same partition, key and value)  */
/* ------------------------------------------------------------------ */

typedef struct copier {
    const char *out_topic;
    int64_t watch_offset;    /* the record at this offset of partition 0 ... */
    atomic_long watch_calls; /* ... was processed this many times */
    atomic_long calls;
} copier_t;

static rill_err_t copy_one(void *opaque, rill_elem_t *in, rill_elem_t *out)
{
    copier_t *c = opaque;
    const rd_kafka_message_t *m = rill_record(in);
    atomic_fetch_add(&c->calls, 1);
    if (!m) {
        rill_elem_release(in);
        return RILL_EINVAL;
    }
    if (m->partition == 0 && m->offset == c->watch_offset)
        atomic_fetch_add(&c->watch_calls, 1);
    rill_produce_t *p =
        rill_produce_new(c->out_topic, m->partition, m->key, m->key_len, m->payload, m->len);
    /* The request stands for the record by itself (its element's origin
     * joins the request's in the sink). */
    rill_elem_release(in);
    if (!p)
        return RILL_ENOMEM;
    *out = rill_produce_elem(p);
    return RILL_OK;
}

static rill_pipeline_t *copy_pipeline(kk_env_t *env, const char *name, const char *group, int parts,
                                      copier_t *c, rill_producer_conf_t *pc)
{
    rill_pipeline_t *p = rill_pipeline_new(env->sys, name);
    cr_assert_not_null(p);
    cr_assert_eq(
        rill_pipeline_add(p, rill_kafka_source(consumer_conf(env->boot, group, "in", parts)), NULL),
        RILL_OK);
    cr_assert_eq(rill_pipeline_add(p, rill_stage_map(copy_one, c), NULL), RILL_OK);
    cr_assert_eq(rill_pipeline_add(p, rill_kafka_sink(pc), NULL), RILL_OK);
    return p;
}

static int committed_all(kk_env_t *env, const char *group, int parts, int64_t end)
{
    int64_t off[8];
    kk_committed_offsets(env->boot, group, "in", parts, off);
    for (int i = 0; i < parts; i++)
        if (off[i] != end)
            return 0;
    return 1;
}

/* The producer's counters into *s; returns delivered + failed. */
static uint64_t answered(rill_system_t *sys, rill_aid_t producer, rill_producer_stats_t *s)
{
    *s = kk_producer_stats_ok(sys, producer);
    return s->delivered + s->failed;
}

/* ------------------------------------------------------------------ */
/* 1. Produce timeouts: every record reported delivered is in the log  */
/* ------------------------------------------------------------------ */

#define TO_PARTS 2
#define TO_TOTAL 3000

/* A producer fed a record a millisecond makes batches of one or two
 * records per partition, and librdkafka's idempotent producer then has
 * several requests of a partition in flight (it caps them by records in
 * flight: fewer than 5). An error answered to one of them while a later
 * one succeeds is the mock's loss window. Without the test configuration
 * this scenario lost 6-23 of 3,000 records in every run (rill's producer
 * and a plain librdkafka loop alike); with it, none. */
typedef struct feeder {
    rill_system_t *sys;
    rill_aid_t producer;
    int parts;
    size_t total;
    atomic_int sent_all;
} feeder_t;

static void *feed(void *arg)
{
    feeder_t *f = arg;
    for (uint64_t seq = 0; seq < f->total; seq++) {
        rill_produce_t *r = gen_request("out", (int32_t)(seq % (uint64_t)f->parts), seq);
        while (rill_producer_send(f->sys, f->producer, r) == RILL_EFULL)
            kk_nap_us(200);
        kk_nap_us(1000); /* the pace of the input, not a sync */
    }
    atomic_store(&f->sent_all, 1);
    return NULL;
}

Test(kafka_producer_faults, acknowledged_records_are_in_the_log_under_produce_timeouts,
     .timeout = 180)
{
    kk_env_t env;
    kk_env_init(&env);
    kk_create_topic(&env, "out", TO_PARTS);
    /* The test configuration every producer under injected Produce errors
     * runs with, over rill's defaults (idempotent, acks=all). */
    rill_producer_conf_t *pc = producer_conf(env.boot, rill_testkit_produce_faults_config());
    const char *kv[] = {"linger.ms", "1", "rill.topics", "out", NULL};
    for (const char *const *p = kv; *p; p += 2)
        cr_assert_eq(rill_producer_conf_set(pc, p[0], p[1], NULL, 0), RILL_OK);
    rill_aid_t producer = kk_producer_spawn_ok(env.sys, pc, 1);
    char v[16] = "";
    cr_assert_eq(rill__producer_conf_get(env.sys, producer, "max.in.flight.requests.per.connection",
                                         v, sizeof(v)),
                 RILL_OK);
    cr_assert_str_eq(v, "1", "the test configuration did not reach the client");
    cr_assert_eq(rill__producer_conf_get(env.sys, producer, "enable.idempotence", v, sizeof(v)),
                 RILL_OK);
    cr_assert_str_eq(v, "true");
    /* Responses slower than the linger. */
    cr_assert_eq(rill_broker_set_rtt(env.broker, RILL_BROKER_ALL, 5), RILL_OK);

    feeder_t f = {.sys = env.sys, .producer = producer, .parts = TO_PARTS, .total = TO_TOTAL};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, feed, &f), 0);
    /* REQUEST_TIMED_OUT (not appended; "possibly persisted" for the
     * client) every 300 ms until everything is answered. Nothing else
     * produces: every error lands on this producer. */
    int16_t produce_api = rill_api_key_from_name("Produce");
    int done = 0, injected = 0;
    rill_producer_stats_t s = {0};
    for (int64_t end = kit_now_ms() + 90000; !done && kit_now_ms() < end;) {
        cr_assert_eq(rill_broker_push_request_errors(env.broker, produce_api, 1,
                                                     RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT),
                     RILL_OK);
        injected++;
        KK_WAIT_UNTIL(done, 300,
                      atomic_load(&f.sent_all) && answered(env.sys, producer, &s) == TO_TOTAL);
    }
    pthread_join(th, NULL);
    answered(env.sys, producer, &s);
    cr_assert(done, "%llu delivered, %llu failed of %d", (unsigned long long)s.delivered,
              (unsigned long long)s.failed, TO_TOTAL);
    cr_assert_eq(s.failed, 0, "retriable errors must be retried");
    cr_assert_eq(s.delivered, (uint64_t)TO_TOTAL);
    cr_assert_eq(rill_broker_clear_request_errors(env.broker, produce_api), RILL_OK);
    cr_assert_eq(rill_broker_set_rtt(env.broker, RILL_BROKER_ALL, 0), RILL_OK);
    kk_stop_wait(env.sys, producer);

    rill_verify_report_t rep = verify_topic(&env, "out", TO_TOTAL);
    fprintf(stderr,
            "produce timeouts: %d injected, %llu delivered; the log holds %zu records, %zu "
            "missing, %zu duplicates, %zu order breaks\n",
            injected, (unsigned long long)s.delivered, rep.seen, rep.missing, rep.duplicates,
            rep.out_of_order);
    cr_assert_eq(rep.missing, 0, "%zu records reported delivered are not in the log", rep.missing);
    cr_assert_eq(rep.corrupt, 0);
    cr_assert_eq(rep.unexpected, 0);
    kk_env_fini(&env);
}

/* The testkit's writer is immune too: it loads a topic while its Produce
 * requests time out, and every record it reports written is there. */
Test(kafka_producer_faults, testkit_writer_loses_nothing_under_produce_timeouts, .timeout = 120)
{
    kk_env_t env;
    kk_env_init(&env);
    kk_create_topic(&env, "loaded", 2);
    const char *const *kv = rill_testkit_produce_faults_config();
    cr_assert_not_null(kv);
    cr_assert_str_eq(kv[0], "max.in.flight.requests.per.connection");
    cr_assert_str_eq(kv[1], "1");
    if (rd_kafka_version() >= 0x02030000) {
        cr_assert_str_eq(kv[2], "retry.backoff.max.ms");
        cr_assert_str_eq(kv[3], "100");
        cr_assert_null(kv[4]);
    } else {
        cr_assert_null(kv[2]);
    }
    cr_assert_eq(rill_broker_push_request_errors(env.broker, rill_api_key_from_name("Produce"), 5,
                                                 RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT),
                 RILL_OK);
    rill_gen_t gen = RILL_GEN_DEFAULT;
    char err[256] = "";
    rill_testkit_opts_t o = {.timeout_ms = 60000};
    cr_assert_eq(
        rill_testkit_produce_generated(env.boot, "loaded", 4000, &gen, &o, err, sizeof(err)),
        RILL_OK, "%s", err);
    rill_verify_report_t rep = verify_topic(&env, "loaded", 4000);
    cr_assert_eq(rep.missing, 0, "%zu records the writer reported are missing", rep.missing);
    cr_assert_eq(rep.corrupt, 0);
    kk_env_fini(&env);
}

/* ------------------------------------------------------------------ */
/* 2. A permanent delivery failure from the broker: the supervisor     */
/*    restarts the pipeline, the failed records come again             */
/* ------------------------------------------------------------------ */

#define PE_PARTS 2
#define PE_PER   3000
#define PE_TOTAL (PE_PARTS * PE_PER)

Test(kafka_producer_faults, non_retriable_produce_error_restarts_the_pipeline_and_loses_nothing,
     .timeout = 180)
{
    kk_env_t env;
    kk_env_init(&env);
    kk_load_topic(&env, "in", PE_PARTS, PE_PER, 100);
    kk_create_topic(&env, "out", PE_PARTS);
    copier_t c = {.out_topic = "out", .watch_offset = -1};
    /* At most 100 in flight, lingering 20 ms: a few thousand records a
     * second, so the failure falls mid-stream. */
    const char *kv[] = {"rill.max.inflight", "100", "linger.ms", "20", "rill.topics", "out", NULL};
    rill_pipeline_t *p =
        copy_pipeline(&env, "copy", "pe", PE_PARTS, &c, producer_conf(env.boot, kv));
    rill_child_spec_t children[] = {RILL_CHILD_PIPELINE("copy", p)};
    rill_sup_spec_t spec;
    rill_aid_t sup = kk_sup_start_ok(env.sys, &spec, children, 1, 3, "pe-supervisor");

    int ok;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, atomic_load(&c.calls) >= PE_TOTAL / 5);
    cr_assert(ok, "the pipeline did not get going");
    rill_aid_t producer = rill_pipeline_stage(p, 2);
    cr_assert(!rill_aid_is_none(producer));
    /* MSG_SIZE_TOO_LARGE from the broker: not retriable, so librdkafka
     * fails the batch's records with it (no internal hook involved). */
    cr_assert_eq(rill_broker_push_request_errors(env.broker, rill_api_key_from_name("Produce"), 1,
                                                 RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE),
                 RILL_OK);
    rill_child_info_t info;
    size_t n = 0;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS,
                  rill_sup_children(env.sys, sup, &info, 1, &n) == RILL_OK && n == 1 &&
                      info.restarts >= 1);
    cr_assert(ok, "the supervisor did not restart the pipeline");
    cr_assert_eq(info.last_exit.kind, RILL_EXIT_FAILURE, "the pipeline did not fail");
    cr_assert(strstr(info.last_exit.text, "too large") || strstr(info.last_exit.text, "size"),
              "the failure does not say why: %s", info.last_exit.text);
    KK_WAIT_UNTIL(ok, 90000, committed_all(&env, "pe", PE_PARTS, PE_PER));
    cr_assert(ok, "the commits did not reach the end offsets after the restart");
    rill_producer_stats_t dead = kk_producer_stats_ok(env.sys, producer);
    cr_assert_eq(rill_sup_stop(env.sys, sup, 30000), RILL_OK);
    rill_pipeline_destroy(p);

    fprintf(stderr,
            "non-retriable produce error: %u restart(s); the failed producer: %llu delivered, "
            "%llu failed; %ld transforms for %d records; exit: %s\n",
            info.restarts, (unsigned long long)dead.delivered, (unsigned long long)dead.failed,
            atomic_load(&c.calls), PE_TOTAL, info.last_exit.text);
    cr_assert_geq(dead.failed, 1, "the first producer saw no failed delivery");
    cr_assert_gt(atomic_load(&c.calls), PE_TOTAL, "nothing was processed again after the restart");
    rill_verify_report_t rep = verify_topic(&env, "out", PE_TOTAL);
    cr_assert_eq(rep.missing, 0, "%zu records lost", rep.missing);
    cr_assert_eq(rep.corrupt, 0);
    cr_assert_eq(rep.unexpected, 0);
    kk_env_fini(&env);
}

/* ------------------------------------------------------------------ */
/* 3. A record too large for the producer: its partition stops at it,  */
/*    restarts bring it again, the supervisor gives up and escalates   */
/* ------------------------------------------------------------------ */

#define TL_BEFORE 200 /* small records before the large one (partition 0) */
#define TL_AFTER  100 /* and after it */

/* An embedded broker with "in": TL_BEFORE small records, one of 4,000
 * bytes at offset TL_BEFORE, TL_AFTER small ones; and an empty "out". */
static void tl_env_init(kk_env_t *env)
{
    kk_env_init(env);
    kk_create_topic(env, "in", 1);
    kk_create_topic(env, "out", 1);
    char err[256] = "";
    rill_testkit_opts_t o = {.timeout_ms = 30000};
    rill_gen_t small = {.value_size = 100, .pinned = 1, .partition = 0};
    rill_gen_t large = {.value_size = 4000, .pinned = 1, .partition = 0, .first_seq = TL_BEFORE};
    cr_assert_eq(
        rill_testkit_produce_generated(env->boot, "in", TL_BEFORE, &small, &o, err, sizeof(err)),
        RILL_OK, "%s", err);
    cr_assert_eq(rill_testkit_produce_generated(env->boot, "in", 1, &large, &o, err, sizeof(err)),
                 RILL_OK, "%s", err);
    small.first_seq = TL_BEFORE + 1;
    cr_assert_eq(
        rill_testkit_produce_generated(env->boot, "in", TL_AFTER, &small, &o, err, sizeof(err)),
        RILL_OK, "%s", err);
}

Test(kafka_producer_faults, record_too_large_is_never_confirmed_and_the_supervisor_decides,
     .timeout = 180)
{
    kk_env_t env;
    tl_env_init(&env);

    copier_t c = {.out_topic = "out", .watch_offset = TL_BEFORE};
    /* The topic's limit as the producer knows it: librdkafka refuses a
     * record over message.max.bytes when it is produced. */
    const char *kv[] = {"message.max.bytes", "2000", "rill.topics", "out", NULL};
    rill_pipeline_t *p = copy_pipeline(&env, "copy", "tl", 1, &c, producer_conf(env.boot, kv));
    rill_child_spec_t children[] = {RILL_CHILD_PIPELINE("copy", p)};
    rill_sup_spec_t spec;
    /* Two restarts a minute at most: the third failure ends the supervisor. */
    rill_aid_t sup = kk_sup_start_ok(env.sys, &spec, children, 1, 2, "tl-supervisor");
    cr_assert(kit_wait_dead(env.sys, sup, 60000),
              "the supervisor kept restarting a pipeline that cannot get past a record");
    rill_pipeline_destroy(p);

    long tries = atomic_load(&c.watch_calls);
    int64_t committed[1];
    kk_committed_offsets(env.boot, "tl", "in", 1, committed);
    fprintf(stderr, "record too large: processed %ld times, committed offset %" PRId64 "\n", tries,
            committed[0]);
    cr_assert_geq(tries, 3, "the large record was not brought again by each restart");
    cr_assert_eq(committed[0], TL_BEFORE,
                 "the commit must stop right at the record that was never delivered");
    rill_consumed_t *out = kk_consume_all(env.boot, "out", 30000);
    size_t n = rill_consumed_count(out);
    cr_assert_geq(n, TL_BEFORE, "records before the large one are missing");
    for (size_t i = 0; i < n; i++) {
        const rill_testkit_record_t *r = rill_consumed_at(out, i);
        cr_assert_lt(r->value_len, 2000, "the large record reached the output");
    }
    rill_consumed_destroy(out);
    kk_env_fini(&env);
}

/* The same record with a dead-letter topic and rill.max.failures 2: the
 * producer's refusal blames the record that made the request, the source
 * counts the failures across restarts, and after two the record goes to
 * the dead-letter topic with the producer's error, and the partition moves
 * on: the rest is copied, the commit reaches the end, the supervisor lives. */
Test(kafka_producer_faults, record_too_large_goes_to_the_dead_letter_topic_after_max_failures,
     .timeout = 180)
{
    kk_env_t env;
    tl_env_init(&env);
    kk_create_topic(&env, "dlq", 1);

    copier_t c = {.out_topic = "out", .watch_offset = TL_BEFORE};
    rill_consumer_conf_t *cc = consumer_conf(env.boot, "tl-dlq", "in", 1);
    const char *dkv[] = {"rill.max.failures", "2", "rill.dead.letter.topic", "dlq", NULL};
    kk_conf_set_kv(cc, dkv);
    const char *kv[] = {"message.max.bytes", "2000", "rill.topics", "out", NULL};
    rill_pipeline_t *p = rill_pipeline_new(env.sys, "copy-dlq");
    cr_assert_not_null(p);
    cr_assert_eq(rill_pipeline_add(p, rill_kafka_source(cc), NULL), RILL_OK);
    cr_assert_eq(rill_pipeline_add(p, rill_stage_map(copy_one, &c), NULL), RILL_OK);
    cr_assert_eq(rill_pipeline_add(p, rill_kafka_sink(producer_conf(env.boot, kv)), NULL), RILL_OK);
    rill_child_spec_t children[] = {RILL_CHILD_PIPELINE("copy", p)};
    rill_sup_spec_t spec;
    rill_aid_t sup = kk_sup_start_ok(env.sys, &spec, children, 1, 5, "tl-dlq-supervisor");
    int ok;
    KK_WAIT_UNTIL(ok, 90000, committed_all(&env, "tl-dlq", 1, TL_BEFORE + 1 + TL_AFTER));
    cr_assert(ok, "the commit did not get past the large record");
    cr_assert(rill_alive(env.sys, sup), "the supervisor gave up");
    cr_assert_eq(rill_sup_stop(env.sys, sup, 30000), RILL_OK);
    rill_pipeline_destroy(p);

    long tries = atomic_load(&c.watch_calls);
    fprintf(stderr, "record too large, dead-lettered: processed %ld times\n", tries);
    cr_assert_eq(tries, 2, "processed %ld times, rill.max.failures is 2", tries);
    rill_consumed_t *dl = kk_consume_all(env.boot, "dlq", 30000);
    cr_assert_eq(rill_consumed_count(dl), 1, "%zu dead letters", rill_consumed_count(dl));
    const rill_testkit_record_t *r = rill_consumed_at(dl, 0);
    cr_assert_eq(r->value_len, 4000, "the dead letter is the record as consumed");
    int said = 0;
    for (size_t h = 0; h < r->header_count; h++)
        if (!strcmp(r->headers[h].name, "rill-error") && r->headers[h].value &&
            (memmem(r->headers[h].value, r->headers[h].value_len, "too large", 9) ||
             memmem(r->headers[h].value, r->headers[h].value_len, "size", 4)))
            said = 1;
    cr_assert(said, "the dead letter's rill-error header does not give the producer's error");
    rill_consumed_destroy(dl);
    rill_consumed_t *out = kk_consume_all(env.boot, "out", 30000);
    cr_assert_eq(rill_consumed_count(out), TL_BEFORE + TL_AFTER, "%zu copied",
                 rill_consumed_count(out));
    rill_consumed_destroy(out);
    kk_env_fini(&env);
}

/* ------------------------------------------------------------------ */
/* 4. librdkafka's queue full: backpressure, not loss, not a failure   */
/* ------------------------------------------------------------------ */

#define QF_PARTS 2
#define QF_PER   4000
#define QF_TOTAL (QF_PARTS * QF_PER)
#define QF_QUEUE 50

Test(kafka_producer_faults, full_librdkafka_queue_backpressures_without_loss_or_failure,
     .timeout = 180)
{
    kk_env_t env;
    kk_env_init(&env);
    kk_load_topic(&env, "in", QF_PARTS, QF_PER, 100);
    kk_create_topic(&env, "out", QF_PARTS);
    copier_t c = {.out_topic = "out", .watch_offset = -1};
    /* librdkafka holds at most QF_QUEUE records; rill's window (10,000)
     * is far larger, so the sink meets a full queue all the time. Slow
     * responses keep the queue full for a while. */
    char qsize[16];
    snprintf(qsize, sizeof(qsize), "%d", QF_QUEUE);
    const char *kv[] = {"queue.buffering.max.messages", qsize, "rill.topics", "out", NULL};
    cr_assert_eq(rill_broker_set_rtt(env.broker, RILL_BROKER_ALL, 5), RILL_OK);
    rill_pipeline_t *p =
        copy_pipeline(&env, "copy", "qf", QF_PARTS, &c, producer_conf(env.boot, kv));
    char err[256] = "";
    cr_assert_eq(rill_pipeline_start(p, err, sizeof(err)), RILL_OK, "%s", err);
    rill_aid_t producer = rill_pipeline_stage(p, 2);

    int ok;
    KK_WAIT_UNTIL(ok, 120000, committed_all(&env, "qf", QF_PARTS, QF_PER));
    rill_producer_stats_t s = kk_producer_stats_ok(env.sys, producer);
    cr_assert(ok, "the commits did not reach the end (%llu delivered)",
              (unsigned long long)s.delivered);
    cr_assert_eq(rill_pipeline_stop(p), RILL_OK);
    rill_pipeline_result_t r;
    cr_assert_eq(rill_pipeline_wait(p, 60000, &r), RILL_OK);
    rill_pipeline_destroy(p);
    fprintf(stderr,
            "queue full: %llu requests, %llu delivered, %llu times the queue refused, at most %u "
            "in flight\n",
            (unsigned long long)s.requested, (unsigned long long)s.delivered,
            (unsigned long long)s.retried, s.inflight_max);
    cr_assert_eq(r.end, RILL_PIPELINE_STOPPED, "the pipeline ended %d: %s: %s", r.end, r.stage,
                 r.text);
    cr_assert_gt(s.retried, 0, "librdkafka's queue was never full: the test tests nothing");
    cr_assert_eq(s.failed, 0, "a full queue is backpressure, not a failure");
    cr_assert_eq(s.delivered, (uint64_t)QF_TOTAL);
    cr_assert_leq(s.inflight_max, QF_QUEUE, "more in librdkafka than its queue holds");
    rill_verify_report_t rep = verify_topic(&env, "out", QF_TOTAL);
    cr_assert_eq(rep.missing, 0, "%zu records lost", rep.missing);
    cr_assert_eq(rep.duplicates, 0);
    cr_assert_eq(rep.out_of_order, 0);
    cr_assert_eq(rep.corrupt, 0);
    kk_env_fini(&env);
}

/* ------------------------------------------------------------------ */
/* 5. rill_producer_send into a full mailbox                           */
/* ------------------------------------------------------------------ */

typedef struct blocker {
    rill_system_t *sys;
    rill_aid_t recorder;
    kit_gate_t gate;
} blocker_t;

static void hold_executor(rill_ctx_t *ctx, void *arg)
{
    (void)ctx;
    kit_gate_pass(&((blocker_t *)arg)->gate, 60000);
}

static void *block_thread(void *arg)
{
    blocker_t *b = arg;
    kit_run_in(b->sys, b->recorder, hold_executor, b);
    return NULL;
}

typedef struct replies {
    atomic_long ok, failed, queue_full;
} replies_t;

static rill_err_t count_replies(rill_ctx_t *ctx, void *state, rill_msg_t *msg)
{
    (void)ctx;
    replies_t *r = state;
    if (msg->type == RILL_MSG_DELIVERY) {
        const rill_delivery_t *d = msg->payload;
        atomic_fetch_add(d && !d->err ? &r->ok : &r->failed, 1);
        if (d && d->err == RD_KAFKA_RESP_ERR__QUEUE_FULL)
            atomic_fetch_add(&r->queue_full, 1);
    }
    return RILL_OK;
}

#define MB_CAP 16

Test(kafka_producer_faults, send_into_a_full_mailbox_is_refused_and_nothing_is_lost, .timeout = 120)
{
    kk_env_t env;
    kk_env_init(&env);
    kk_create_topic(&env, "out", 1);
    replies_t rep = {0};
    rill_spawn_opts_t so = {.behavior = count_replies, .state = &rep, .executor = KIT_EXEC(1)};
    rill_aid_t replies = RILL_AID_NONE;
    cr_assert_eq(rill_spawn(env.sys, &so, &replies), RILL_OK);

    /* The producer's executor is held by another actor, so its mailbox
     * (MB_CAP slots; rill.max.inflight small enough to allow it) fills. */
    kit_log_t *log = kit_log_new();
    blocker_t b = {.sys = env.sys, .recorder = kit_spawn_recorder(env.sys, log, 0)};
    kit_gate_init(&b.gate);
    const char *kv[] = {"rill.max.inflight", "4", "rill.topics", "out", NULL};
    char err[256] = "";
    rill_stage_opts_t po = {.executor = KIT_EXEC(0), .mailbox_capacity = MB_CAP};
    rill_aid_t producer = RILL_AID_NONE;
    cr_assert_eq(
        rill_producer_spawn(env.sys, producer_conf(env.boot, kv), &po, &producer, err, sizeof(err)),
        RILL_OK, "%s", err);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, block_thread, &b), 0);
    int ok;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, atomic_load(&b.gate.arrived) == 1);
    cr_assert(ok, "the executor was not held");

    uint64_t accepted = 0;
    long refused = 0;
    rill_err_t e = RILL_OK;
    for (uint64_t seq = 0; seq < 10 * MB_CAP && e != RILL_EFULL; seq++) {
        rill_produce_t *r = gen_request("out", 0, seq);
        rill_produce_set_reply(r, replies, seq);
        e = rill_producer_send(env.sys, producer, r);
        if (e == RILL_OK) {
            accepted++;
        } else {
            /* Refused: the request is still ours. */
            cr_assert_eq(e, RILL_EFULL, "send: %s", rill_err_name(e));
            refused++;
            rill_produce_free(r);
        }
    }
    cr_assert_eq(e, RILL_EFULL, "a held producer's mailbox never filled");
    cr_assert_geq(accepted, 1);
    cr_assert_leq(accepted, MB_CAP, "more accepted than the mailbox holds");
    kit_gate_open(&b.gate);
    pthread_join(th, NULL);

    KK_WAIT_UNTIL(ok, KK_WAIT_MS,
                  atomic_load(&rep.ok) + atomic_load(&rep.failed) == (long)accepted);
    cr_assert(ok, "%ld of %llu accepted requests answered", atomic_load(&rep.ok),
              (unsigned long long)accepted);
    cr_assert_eq(atomic_load(&rep.failed), 0);
    rill_producer_stats_t s = kk_producer_stats_ok(env.sys, producer);
    cr_assert_eq(s.requested, accepted, "a refused send reached the producer");
    cr_assert_eq(s.delivered, accepted);
    /* The producer takes sends again once it runs. */
    rill_produce_t *again = gen_request("out", 0, accepted);
    rill_produce_set_reply(again, replies, accepted);
    cr_assert_eq(rill_producer_send(env.sys, producer, again), RILL_OK);
    accepted++;
    KK_WAIT_UNTIL(ok, KK_WAIT_MS, atomic_load(&rep.ok) == (long)accepted);
    cr_assert(ok, "the send after the refusal was not delivered");
    kk_stop_wait(env.sys, producer);
    fprintf(stderr, "full mailbox: %llu accepted, %ld refused with RILL_EFULL\n",
            (unsigned long long)accepted, refused);

    rill_consumed_t *out = kk_consume_all(env.boot, "out", 30000);
    cr_assert_eq(rill_consumed_count(out), accepted, "the log holds %zu records, %llu accepted",
                 rill_consumed_count(out), (unsigned long long)accepted);
    rill_consumed_destroy(out);
    kk_stop_wait(env.sys, replies);
    kit_gate_destroy(&b.gate);
    kk_env_fini(&env);
    kit_log_free(log);
}

/* ------------------------------------------------------------------ */
/* 6. Direct sends and a stream share a sink whose librdkafka queue is */
/*    full: the stream's records are never refused                     */
/* ------------------------------------------------------------------ */

#define MX_PARTS  2
#define MX_PER    500
#define MX_TOTAL  (MX_PARTS * MX_PER)
#define MX_DIRECT 3000

typedef struct direct_sender {
    rill_system_t *sys;
    rill_aid_t producer, replies;
    atomic_long accepted;
} direct_sender_t;

static void *send_directly(void *arg)
{
    direct_sender_t *d = arg;
    for (uint64_t seq = MX_TOTAL; seq < MX_TOTAL + MX_DIRECT; seq++) {
        rill_produce_t *r = gen_request("direct", 0, seq);
        rill_produce_set_reply(r, d->replies, seq);
        rill_err_t e;
        while ((e = rill_producer_send(d->sys, d->producer, r)) == RILL_EFULL)
            kk_nap_us(200);
        if (e != RILL_OK) {
            rill_produce_free(r);
            break;
        }
        atomic_fetch_add(&d->accepted, 1);
    }
    return NULL;
}

Test(kafka_producer_faults, direct_sends_never_crowd_out_the_stream, .timeout = 180)
{
    kk_env_t env;
    kk_env_init(&env);
    kk_load_topic(&env, "in", MX_PARTS, MX_PER, 100);
    kk_create_topic(&env, "out", MX_PARTS);
    kk_create_topic(&env, "direct", 1);
    replies_t rep = {0};
    rill_spawn_opts_t so = {.behavior = count_replies, .state = &rep, .executor = KIT_EXEC(1)};
    rill_aid_t replies = RILL_AID_NONE;
    cr_assert_eq(rill_spawn(env.sys, &so, &replies), RILL_OK);

    /* A small window, a tiny librdkafka queue and slow responses: the
     * sink keeps requests waiting for room most of the time, and direct
     * sends pour in meanwhile. */
    copier_t c = {.out_topic = "out", .watch_offset = -1};
    const char *kv[] = {
        "rill.max.inflight", "10", "queue.buffering.max.messages", "4", "rill.topics",
        "out,direct",        NULL};
    cr_assert_eq(rill_broker_set_rtt(env.broker, RILL_BROKER_ALL, 10), RILL_OK);
    rill_pipeline_t *p =
        copy_pipeline(&env, "copy", "mx", MX_PARTS, &c, producer_conf(env.boot, kv));
    char err[256] = "";
    cr_assert_eq(rill_pipeline_start(p, err, sizeof(err)), RILL_OK, "%s", err);
    direct_sender_t d = {.sys = env.sys, .producer = rill_pipeline_stage(p, 2), .replies = replies};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, send_directly, &d), 0);

    int ok;
    KK_WAIT_UNTIL(ok, 120000, committed_all(&env, "mx", MX_PARTS, MX_PER));
    pthread_join(th, NULL);
    long accepted = atomic_load(&d.accepted);
    int all_answered;
    KK_WAIT_UNTIL(all_answered, KK_WAIT_MS,
                  atomic_load(&rep.ok) + atomic_load(&rep.failed) == accepted);
    rill_producer_stats_t s = kk_producer_stats_ok(env.sys, rill_pipeline_stage(p, 2));
    fprintf(stderr,
            "direct sends and a stream: %ld direct sends accepted, %ld delivered, %ld refused; "
            "the sink: %llu requests, %llu failed, %llu waits for librdkafka's queue\n",
            accepted, atomic_load(&rep.ok), atomic_load(&rep.failed),
            (unsigned long long)s.requested, (unsigned long long)s.failed,
            (unsigned long long)s.retried);
    cr_assert(ok, "the stream's commits stalled: a stream record was refused, not backpressured");
    cr_assert(all_answered, "%ld of %ld direct sends answered",
              atomic_load(&rep.ok) + atomic_load(&rep.failed), accepted);
    /* What was not delivered was refused for the full queue, in words
     * the sender can act on (send again later). */
    cr_assert_eq(atomic_load(&rep.failed), atomic_load(&rep.queue_full),
                 "direct sends failed for another reason than a full queue");
    cr_assert_gt(atomic_load(&rep.ok), 0, "no direct send got through");
    cr_assert_eq(s.failed, (uint64_t)atomic_load(&rep.failed),
                 "the sink failed stream requests (%llu failures, %ld direct refusals)",
                 (unsigned long long)s.failed, atomic_load(&rep.failed));
    cr_assert_eq(rill_broker_set_rtt(env.broker, RILL_BROKER_ALL, 0), RILL_OK);
    cr_assert_eq(rill_pipeline_stop(p), RILL_OK);
    rill_pipeline_result_t r;
    cr_assert_eq(rill_pipeline_wait(p, 60000, &r), RILL_OK);
    rill_pipeline_destroy(p);
    cr_assert_eq(r.end, RILL_PIPELINE_STOPPED, "the pipeline ended %d: %s: %s", r.end, r.stage,
                 r.text);
    rill_verify_report_t vr = verify_topic(&env, "out", MX_TOTAL);
    cr_assert_eq(vr.missing, 0);
    kk_stop_wait(env.sys, replies);
    kk_env_fini(&env);
}

/* ------------------------------------------------------------------ */
/* 7. Retries after Produce errors keep up with the errors             */
/* ------------------------------------------------------------------ */

#define RT_TOTAL 1500

typedef struct trickle {
    rill_system_t *sys;
    rill_aid_t producer;
    atomic_int sent_all;
} trickle_t;

/* The producer's input at a pipeline's pace: a record a millisecond. */
static void *send_trickle(void *arg)
{
    trickle_t *t = arg;
    for (uint64_t seq = 0; seq < RT_TOTAL; seq++) {
        rill_produce_t *r = gen_request("out", 0, seq);
        while (rill_producer_send(t->sys, t->producer, r) == RILL_EFULL)
            kk_nap_us(200);
        kk_nap_us(1000);
    }
    atomic_store(&t->sent_all, 1);
    return NULL;
}

/* librdkafka 2.0.2 retries a failed batch only when its broker thread
 * wakes up, and between produce calls that takes up to a second
 * (socket.blocking.max.ms): with a Produce error every 300 ms the errors
 * came faster than the retries and the producer stalled for good (517 of
 * 3,000 records delivered in 60 s; bug found here). The sink's tick now
 * wakes the broker threads while records are in flight. */
Test(kafka_producer_faults, retries_keep_up_with_produce_errors, .timeout = 120)
{
    kk_env_t env;
    kk_env_init(&env);
    kk_create_topic(&env, "out", 1);
    rill_producer_conf_t *pc = producer_conf(env.boot, rill_testkit_produce_faults_config());
    const char *kv[] = {"rill.topics", "out", "linger.ms", "1", NULL};
    for (const char *const *p = kv; *p; p += 2)
        cr_assert_eq(rill_producer_conf_set(pc, p[0], p[1], NULL, 0), RILL_OK);
    rill_aid_t producer = kk_producer_spawn_ok(env.sys, pc, 1);
    cr_assert_eq(rill_broker_set_rtt(env.broker, RILL_BROKER_ALL, 5), RILL_OK);
    trickle_t t = {.sys = env.sys, .producer = producer};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, send_trickle, &t), 0);
    /* An error every 300 ms until everything is delivered (each wait is
     * the schedule of the next error, not a sync). */
    int16_t produce_api = rill_api_key_from_name("Produce");
    int done = 0, injected = 0;
    rill_producer_stats_t s = {0};
    for (int64_t end = kit_now_ms() + 60000; !done && kit_now_ms() < end;) {
        cr_assert_eq(rill_broker_push_request_errors(env.broker, produce_api, 1,
                                                     RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT),
                     RILL_OK);
        injected++;
        KK_WAIT_UNTIL(done, 300,
                      atomic_load(&t.sent_all) && answered(env.sys, producer, &s) == RT_TOTAL);
    }
    pthread_join(th, NULL);
    answered(env.sys, producer, &s);
    fprintf(stderr, "retries: %d errors injected, %llu of %d delivered\n", injected,
            (unsigned long long)s.delivered, RT_TOTAL);
    cr_assert(done, "%llu of %d delivered after %d errors: the retries fell behind the errors",
              (unsigned long long)s.delivered, RT_TOTAL, injected);
    cr_assert_eq(s.failed, 0);
    cr_assert_eq(rill_broker_clear_request_errors(env.broker, produce_api), RILL_OK);
    cr_assert_eq(rill_broker_set_rtt(env.broker, RILL_BROKER_ALL, 0), RILL_OK);
    kk_stop_wait(env.sys, producer);
    rill_verify_report_t rep = verify_topic(&env, "out", RT_TOTAL);
    cr_assert_eq(rep.missing, 0, "%zu records reported delivered are not in the log", rep.missing);
    kk_env_fini(&env);
}
