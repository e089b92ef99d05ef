/*
 * Helpers for the Kafka layer's tests (test_kafka_consumer.c,
 * test_kafka_pipeline.c) against the embedded broker.
 *
 * A test owns an environment (kk_env_t: an embedded broker and an actor
 * system with two executors), creates and loads its own topics, so tests
 * run in parallel. Topics are loaded partition by partition with the
 * testkit's generator: partition p of a topic loaded with `per` records per
 * partition holds seq p * per + o at offset o ("seq=<n> ..." in the value).
 * Committed offsets are read (and written) with a plain librdkafka consumer
 * that never joins its group.
 *
 * Unlike actor_kit, these helpers assert (with the cr_assert macros of
 * support/rtest.h: Criterion, or its stand-in under ThreadSanitizer): call
 * them on the test thread only, never from a sink, a callback or a
 * supervisor's spawn function.
 */
#ifndef RILL_TEST_KAFKA_KIT_H
#define RILL_TEST_KAFKA_KIT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include <rill/kafka.h>
#include <rill/stream.h>
#include <rill/supervisor.h>
#include <rill/testkit.h>

#include "actor_kit.h"

/* Deadline for conditions that involve the broker: a group join alone
 * costs 3 s, and sanitizers and a parallel neighbour share two cores. */
#define KK_WAIT_MS 40000

/* Poll `expr` (every 2 ms) until it holds or `ms` passed; `ok` gets the
 * outcome. */
#define KK_WAIT_UNTIL(ok, ms, expr)                                                                \
    do {                                                                                           \
        int64_t kk_deadline_ = kit_now_ms() + (ms);                                                \
        while (!((ok) = !!(expr)) && kit_now_ms() < kk_deadline_)                                  \
            kk_nap_us(2000);                                                                       \
    } while (0)

/* LeakSanitizer's count of leaks so far (0 without AddressSanitizer). */
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#define KK_LEAK_CHECK() __lsan_do_recoverable_leak_check()
#else
#define KK_LEAK_CHECK() 0
#endif

void kk_nap_us(long us);

/* ---- the environment: a broker and a system ------------------------ */

typedef struct kk_env {
    rill_broker_t *broker; /* one embedded broker */
    const char *boot;      /* its bootstrap servers */
    rill_system_t *sys;    /* two executors, started */
} kk_env_t;

void kk_env_init(kk_env_t *e);
/* Stops the system (asserts it stopped within 30 s), then the broker. */
void kk_env_fini(kk_env_t *e);

/* ---- topics ---------------------------------------------------------- */

void kk_create_topic(kk_env_t *e, const char *topic, int parts);

/* Produce `per` generated records of value_size bytes to each of
 * partitions 0..parts-1: partition p gets seqs base + p * per .. base +
 * (p + 1) * per - 1. */
void kk_produce_parts(const char *boot, const char *topic, int parts, size_t per, uint64_t base,
                      size_t value_size);

/* Create `topic` and load `per` generated records (seqs from 0) into each
 * partition. */
void kk_load_topic(kk_env_t *e, const char *topic, int parts, size_t per, size_t value_size);

/* Everything in topic (every partition, to its end) within timeout_ms;
 * the caller destroys it with rill_consumed_destroy. */
rill_consumed_t *kk_consume_all(const char *boot, const char *topic, int timeout_ms);

/* The value of rec's header `name` as a string in buf (cut to size - 1),
 * or NULL when rec has no such header. */
const char *kk_header(const rill_testkit_record_t *rec, const char *name, char *buf, size_t size);

/* ---- a sink that confirms some records and holds the others ---------- */

/* kk_holder_sink (a rill_foreach_fn for foreach_manual sinks, opaque: a
 * kk_holder_t) confirms the records below offset `below` and holds the
 * others unconfirmed (up to cap, beyond which they are released), so the
 * committed offset stops at `below`. */
typedef struct kk_holder {
    pthread_mutex_t mu;
    rill_elem_t *held;
    size_t n, cap;
    int64_t below;
    atomic_long confirmed;
} kk_holder_t;

/* A holder for `cap` records (asserts the allocation). */
kk_holder_t *kk_holder_new(int64_t below, size_t cap);
rill_err_t kk_holder_sink(void *opaque, rill_elem_t *e);
/* Confirm everything held now. */
void kk_holder_confirm_all(kk_holder_t *h);
/* Release what is still held (the records come again) and free h. */
void kk_holder_free(kk_holder_t *h);

/* ---- committed offsets, through a plain librdkafka consumer --------- */

/* A plain librdkafka consumer in `group` (never joins: offsets only). */
rd_kafka_t *kk_plain_consumer(const char *boot, const char *group);

/* The group's committed offsets of partitions 0..n-1 of topic into out
 * (RD_KAFKA_OFFSET_INVALID where nothing is committed). */
void kk_committed_offsets(const char *boot, const char *group, const char *topic, int n,
                          int64_t *out);

/* Asserts that the group's committed offset of every partition 0..n-1
 * (n at most 64) is `want`. */
void kk_assert_committed(const char *boot, const char *group, const char *topic, int n,
                         int64_t want);

/* Commit `offset` for partitions 0..n-1 as `group`, synchronously. */
void kk_commit_plain(const char *boot, const char *group, const char *topic, int n, int64_t offset);

/* ---- consumer configurations ----------------------------------------- */

/* A conf with bootstrap.servers (if boot), group.id (if group) and the
 * NULL-terminated "key", "value" pairs of kv (may be NULL). */
rill_consumer_conf_t *kk_conf_new(const char *boot, const char *group, const char *const *kv);
/* Set the NULL-terminated "key", "value" pairs of kv. */
void kk_conf_set_kv(rill_consumer_conf_t *c, const char *const *kv);
/* Subscribe to one topic (or one regex). */
void kk_conf_subscribe1(rill_consumer_conf_t *c, const char *topic);
/* Assign partitions 0..parts-1 of topic, each from `offset`. */
void kk_conf_assign_all(rill_consumer_conf_t *c, const char *topic, int parts, int64_t offset);

/* ---- actors ---------------------------------------------------------- */

/* Spawn a consumer (taking c) or a producer (taking c) on `executor`
 * (-1: any); asserts it started. */
rill_aid_t kk_consumer_spawn_ok(rill_system_t *sys, rill_consumer_conf_t *c, int executor);
rill_aid_t kk_producer_spawn_ok(rill_system_t *sys, rill_producer_conf_t *c, int executor);
/* Spawn a stage (asserts spec is not NULL). */
rill_aid_t kk_stage_spawn_ok(rill_system_t *sys, rill_stage_t *spec, int executor);
void kk_connect_ok(rill_system_t *sys, rill_aid_t up, rill_aid_t down);
/* A foreach sink on `executor`, subscribed to `upstream`. */
rill_aid_t kk_sink_spawn_ok(rill_system_t *sys, rill_foreach_fn *fn, void *opaque, int executor,
                            rill_aid_t upstream);

/* Start a one_for_all supervisor of the n children (restarts: at most
 * `intensity` a minute), registered as `name`, from *spec, which this
 * fills: spec and children must stay valid while the supervisor runs (a
 * variable of the test, not a temporary). Asserts it started. */
rill_aid_t kk_sup_start_ok(rill_system_t *sys, rill_sup_spec_t *spec, rill_child_spec_t *children,
                           size_t n, int intensity, const char *name);

/* Stop an actor (gone already is fine) and wait until it is dead. */
void kk_stop_wait(rill_system_t *sys, rill_aid_t aid);

rill_consumer_stats_t kk_consumer_stats_ok(rill_system_t *sys, rill_aid_t consumer);
rill_producer_stats_t kk_producer_stats_ok(rill_system_t *sys, rill_aid_t producer);

/* ---- key placement as Java clients do it --------------------------- */

/* Kafka's Java murmur2 (org.apache.kafka.common.utils.Utils.murmur2), and
 * the partition the Java producer's default partitioner gives a key:
 * (murmur2(key) & 0x7fffffff) % partitions. Written here from the Java
 * source, independent of librdkafka, to check where rill puts keys. */
int32_t kk_java_murmur2(const void *key, size_t len);
int32_t kk_java_partition(const void *key, size_t len, int32_t partitions);

#endif /* RILL_TEST_KAFKA_KIT_H */
