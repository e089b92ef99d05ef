/**
 * @file
 * rill testkit: an embedded Kafka broker and the helpers that make pipelines
 * testable on a laptop.
 *
 * The embedded broker is librdkafka's mock cluster (rdkafka_mock.h): N
 * brokers listening on 127.0.0.1 random ports, speaking the real Kafka
 * protocol over TCP, so any client (rill, plain librdkafka, kcat, kafkajs)
 * can use it. It supports produce (also idempotent), fetch, consumer groups
 * and offset commits; it does not implement transactions' read semantics and
 * keeps at most 5 MiB or 100,000 records per partition (older records are
 * dropped). Group joins wait a fixed 3 s initial rebalance delay.
 *
 * The produce/consume helpers take a bootstrap string, not a broker handle,
 * so they work against the embedded broker, a `rill-broker` process and a
 * real cluster alike.
 *
 * The testkit is a library of its own (librill_testkit; CMake target
 * rill::testkit, pkg-config rill-testkit), and rill.h does not include this
 * header: production code does not carry the mock cluster. Kafka clients
 * use the embedded broker only when given its bootstrap string.
 */
#ifndef RILL_TESTKIT_H
#define RILL_TESTKIT_H

#include <librdkafka/rdkafka.h>

#include <rill/common.h>
#include <rill/stream.h>

#ifdef __cplusplus
extern "C" {
#endif

/** One Kafka header of a testkit record. Headers may repeat a name; order is
 * kept. */
typedef struct rill_testkit_header {
    const char *name;  /**< NUL-terminated */
    const void *value; /**< may be NULL (a null header value) */
    size_t value_len;  /**< the value's length in bytes */
} rill_testkit_header_t;

/**
 * A Kafka record as plain data: what test helpers produce and collect.
 * Pointers are borrowed: whoever filled the struct owns the memory, and says
 * for how long it lives.
 */
typedef struct rill_testkit_record {
    const char *topic; /**< consumed records: the topic; ignored when producing */
    int32_t partition; /**< producing: a partition or RILL_PARTITION_ANY */
    int64_t offset;    /**< consumed records only; -1 otherwise */
    int64_t timestamp; /**< ms since the epoch; 0 when producing = now */
    const void *key;   /**< NULL = no key */
    size_t key_len;    /**< the key's length in bytes */
    const void *value; /**< NULL = a null value (tombstone) */
    size_t value_len;  /**< the value's length in bytes */
    /** The record's header_count headers, in order. */
    const rill_testkit_header_t *headers;
    size_t header_count; /**< the number of headers */
} rill_testkit_record_t;

/* --------------------------------------------------------------------- */
/* Embedded broker                                                        */
/* --------------------------------------------------------------------- */

/** An embedded Kafka cluster (opaque). */
typedef struct rill_broker rill_broker_t;

/** Broker id meaning "every broker" for the fault-injection calls. */
#define RILL_BROKER_ALL ((int32_t)-1)

/** Most brokers one embedded cluster may have. */
#define RILL_BROKER_MAX 64

/**
 * Start an embedded cluster of broker_count brokers (ids 1..broker_count) on
 * 127.0.0.1. The brokers listen when this returns.
 * Returns NULL on failure with the reason in errstr (broker_count outside
 * 1..RILL_BROKER_MAX, or librdkafka could not start the cluster).
 * @locality any thread. The caller owns the result: rill_broker_destroy().
 */
RILL_API rill_broker_t *rill_broker_new(int broker_count, char *errstr, size_t errstr_size);

/**
 * Stop the brokers and free everything. Clients still connected see their
 * connections close. NULL is a no-op.
 * @locality any thread, but not concurrently with other calls on b.
 */
RILL_API void rill_broker_destroy(rill_broker_t *b);

/**
 * The bootstrap.servers string, e.g. "127.0.0.1:41235,127.0.0.1:38001".
 * @locality any thread. Owned by b, valid until rill_broker_destroy().
 */
RILL_API const char *rill_broker_bootstraps(const rill_broker_t *b);

/** Number of brokers in the cluster; 0 when b is NULL. @locality any thread. */
RILL_API int rill_broker_count(const rill_broker_t *b);

/**
 * Create a topic. partitions >= 1; 1 <= replication_factor <= brokers.
 * Topic names follow Kafka's rules: 1..249 characters of [A-Za-z0-9._-],
 * not "." or "..".
 * Returns RILL_EINVAL (bad argument), RILL_EEXIST (topic exists) or
 * RILL_EKAFKA, with the reason in errstr (which may be NULL).
 * @locality any thread.
 */
RILL_API rill_err_t rill_broker_create_topic(rill_broker_t *b, const char *topic, int partitions,
                                             int replication_factor, char *errstr,
                                             size_t errstr_size);

/**
 * @name Fault injection
 * Fault injection. broker_id is 1..count or RILL_BROKER_ALL.
 * All return RILL_OK, RILL_EINVAL (NULL b, bad argument), RILL_ENOENT (no
 * such broker) or RILL_EKAFKA (another error of the mock cluster).
 * @locality any thread.
 * @{
 */

/** Close the broker's connections and refuse new ones (the port stays
 * reserved). Partition leadership does not move. @locality any thread. */
RILL_API rill_err_t rill_broker_set_down(rill_broker_t *b, int32_t broker_id);
/** Accept connections again. @locality any thread. */
RILL_API rill_err_t rill_broker_set_up(rill_broker_t *b, int32_t broker_id);
/** Delay every response from the broker by rtt_ms (>= 0; 0 removes it).
 * @locality any thread. */
RILL_API rill_err_t rill_broker_set_rtt(rill_broker_t *b, int32_t broker_id, int rtt_ms);

/** @} */

/**
 * Make the next `count` requests with the given API key (any broker) fail
 * with `err`, e.g. rill_broker_push_request_errors(b, 8, 3,
 * RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID) fails the next three OffsetCommits.
 * RD_KAFKA_RESP_ERR__TRANSPORT disconnects the client instead.
 *
 * Produce errors and idempotent producers: the mock answers an injected
 * Produce error without appending the batch, and checks an idempotent
 * producer's sequence numbers only for transactional producers. A real
 * broker refuses every later batch of the partition
 * (OUT_OF_ORDER_SEQUENCE_NUMBER) until the failed one is retried; the mock
 * accepts them, and librdkafka then takes the failed batch as written
 * ("implicitly acked by subsequent batch success", debug=eos: IMPLICITACK):
 * its records get successful delivery reports and are missing from the
 * log. That needs two Produce requests of one partition in flight, so a
 * producer that runs under injected Produce errors (other than
 * _TRANSPORT, which fails every request in flight at once) must use the
 * properties of rill_testkit_produce_faults_config(); then a record
 * reported delivered and missing is a real loss, never the mock's.
 * The testkit's own writer (rill_testkit_produce()) always does.
 *
 * Returns RILL_EINVAL for a NULL b, api_key outside 0..RILL_API_KEY_MAX or a
 * count of 0.
 * @locality any thread.
 */
RILL_API rill_err_t rill_broker_push_request_errors(rill_broker_t *b, int16_t api_key, size_t count,
                                                    rd_kafka_resp_err_t err);

/**
 * The librdkafka properties a producer needs so that the embedded broker
 * cannot lose its acknowledged records under injected Produce errors (see
 * rill_broker_push_request_errors()): a NULL-terminated array of "key",
 * "value" pairs, today max.in.flight.requests.per.connection=1 (one Produce
 * request in flight per broker connection, so no later batch can succeed
 * while a failed one waits for its retry) and, with librdkafka 2.3 or later,
 * retry.backoff.max.ms=100 (a constant retry backoff, as 2.0.2 has: with
 * the exponential one a batch failed a few times in a row retries once a
 * second, and errors pushed more often than that fail every retry).
 * Idempotence, acks and ordering stay as configured. Set them on every producer of a test that
 * injects Produce errors, e.g. with rill_producer_conf_set() for each pair.
 * @locality any thread. The array is static.
 */
RILL_API const char *const *rill_testkit_produce_faults_config(void);

/** Drop every error still queued for api_key. @locality any thread. */
RILL_API rill_err_t rill_broker_clear_request_errors(rill_broker_t *b, int16_t api_key);

/**
 * Move a partition's leadership to broker_id (1..count, or -1 for no leader).
 * Returns RILL_ENOENT for an unknown topic, partition or broker; an unknown
 * topic is never created. A topic not made by rill_broker_create_topic (one
 * a client auto-created) is looked up with a Metadata request: RILL_EKAFKA
 * when no broker answers it within about 2 s (every broker down).
 * @locality any thread.
 */
RILL_API rill_err_t rill_broker_set_leader(rill_broker_t *b, const char *topic, int32_t partition,
                                           int32_t broker_id);

/**
 * The underlying librdkafka mock cluster, for faults rill does not wrap.
 * Experimental librdkafka API: no ABI promise. Owned by b.
 * @locality any thread.
 */
RILL_API struct rd_kafka_mock_cluster_s *rill_broker_mock_cluster(rill_broker_t *b);

/** Highest Kafka API key rill knows by name (keys 0..58: Produce to
 * Envelope). */
#define RILL_API_KEY_MAX 58

/**
 * Kafka protocol API key for a name such as "OffsetCommit" or "Produce"
 * (case-insensitive), or a decimal number "0".."58". Returns -1 if unknown.
 * @locality any thread.
 */
RILL_API int16_t rill_api_key_from_name(const char *name);

/** The name of an API key, e.g. "OffsetCommit"; "?" if unknown.
 * @locality any thread. The string is static. */
RILL_API const char *rill_api_key_name(int16_t api_key);

/**
 * Parse a Kafka error code: a name as librdkafka spells it without the
 * RD_KAFKA_RESP_ERR_ prefix ("UNKNOWN_MEMBER_ID", "_TRANSPORT",
 * case-insensitive) or a decimal number ("25", "-195").
 * Returns RILL_OK and sets *err, or RILL_EINVAL for an unknown name.
 * @locality any thread.
 */
RILL_API rill_err_t rill_kafka_err_from_name(const char *name, rd_kafka_resp_err_t *err);

/* --------------------------------------------------------------------- */
/* Produce and consume helpers                                            */
/* --------------------------------------------------------------------- */

/** Progress report: `done` of `total` records so far. Called on the calling
 * thread, at most about a hundred times per call, and once at the end.
 * @locality the thread that called the helper (rill_testkit_produce(),
 * rill_testkit_produce_generated() or rill_testkit_consume()). */
typedef void rill_progress_fn(void *opaque, size_t done, size_t total);

/** Options shared by the helpers. A NULL pointer means all defaults. */
typedef struct rill_testkit_opts {
    /** Extra librdkafka properties: NULL, or a NULL-terminated array of
     * "key", "value" pairs, applied after rill's defaults. */
    const char *const *config;
    /** Deadline for the whole call in ms; 0 means 30,000. */
    int timeout_ms;
    rill_progress_fn *progress; /**< called with the progress; NULL for none */
    void *opaque;               /**< passed to progress */
} rill_testkit_opts_t;

/**
 * Produce `count` records to `topic` and wait until all are delivered
 * (acks=all, idempotent producer). record->partition picks the partition
 * (RILL_PARTITION_ANY: by key, with the murmur2 partitioner Java producers
 * use); topic and offset fields are ignored.
 * Returns RILL_OK when every record was acknowledged; RILL_ETIMEDOUT if the
 * deadline passed first; RILL_EKAFKA if a delivery failed or the
 * configuration was refused; RILL_EINVAL for NULL arguments. errstr says
 * how many records were delivered and the first failure.
 * @locality any thread. Blocks. Records are copied; the caller keeps them.
 */
RILL_API rill_err_t rill_testkit_produce(const char *bootstraps, const char *topic,
                                         const rill_testkit_record_t *records, size_t count,
                                         const rill_testkit_opts_t *opts, char *errstr,
                                         size_t errstr_size);

/**
 * A deterministic record generator, so tests can produce large volumes and
 * check every consumed record's content without keeping a copy.
 *
 * Record number `seq` (first_seq, first_seq + 1, ...) has:
 *
 *     key    "key-<seq % key_space>"  (or "key-<seq>" when key_space is 0)
 *     value  "seq=<seq> key=<key> " padded with '.' to value_size bytes
 *            (never shorter than that prefix)
 *     headers, when `headers` is non-zero: "rill-seq" = "<seq>",
 *            "rill-gen" = "testkit"
 */
typedef struct rill_gen {
    uint64_t first_seq; /**< the seq of the first record */
    size_t key_space;   /**< distinct keys; 0 = every key unique */
    size_t value_size;  /**< 0 means 100 */
    int headers;        /**< non-zero: add the two headers */
    int pinned;         /**< non-zero: every record goes to `partition`; 0: by key */
    int32_t partition;  /**< the partition of every record when pinned */
} rill_gen_t;

/** The defaults (a zeroed rill_gen_t means the same): unique keys, 100-byte
 * values, no headers, partition by key. */
#define RILL_GEN_DEFAULT                                                                           \
    {                                                                                              \
        .value_size = 100                                                                          \
    }

/**
 * Produce `count` generated records (see rill_gen_t); gen NULL = defaults.
 * Same results and locality as rill_testkit_produce().
 * @locality any thread. Blocks.
 */
RILL_API rill_err_t rill_testkit_produce_generated(const char *bootstraps, const char *topic,
                                                   size_t count, const rill_gen_t *gen,
                                                   const rill_testkit_opts_t *opts, char *errstr,
                                                   size_t errstr_size);

/** Records read back from a topic; owns their memory. */
typedef struct rill_consumed rill_consumed_t;

/** `expect` value for rill_testkit_consume: read up to the end offsets. */
#define RILL_CONSUME_TO_END ((size_t)0)

/**
 * Read records of `topic` from the earliest retained offset of every
 * partition, without joining a consumer group and without committing.
 *
 * expect == RILL_CONSUME_TO_END: read every partition up to its end offset
 * as seen when the call starts. expect > 0: read until `expect` records
 * arrived (including records produced meanwhile).
 *
 * Returns RILL_OK when done; RILL_ETIMEDOUT when the deadline passed first;
 * RILL_ENOENT if the topic does not exist; RILL_EKAFKA for other client
 * errors; RILL_EINVAL for NULL arguments. On RILL_OK and RILL_ETIMEDOUT,
 * *out holds what was read (in order per partition), and the caller must
 * free it with rill_consumed_destroy(); otherwise *out is NULL.
 * @locality any thread. Blocks.
 */
RILL_API rill_err_t rill_testkit_consume(const char *bootstraps, const char *topic, size_t expect,
                                         const rill_testkit_opts_t *opts, rill_consumed_t **out,
                                         char *errstr, size_t errstr_size);

/** Number of records held; 0 for NULL. @locality any thread. */
RILL_API size_t rill_consumed_count(const rill_consumed_t *c);

/** Record i (0 <= i < count), or NULL when out of range. Owned by c.
 * @locality any thread. */
RILL_API const rill_testkit_record_t *rill_consumed_at(const rill_consumed_t *c, size_t i);

/** Free c and every record in it. NULL is a no-op. @locality any thread. */
RILL_API void rill_consumed_destroy(rill_consumed_t *c);

/** What rill_testkit_verify found. */
typedef struct rill_verify_report {
    size_t expected;     /**< count asked for */
    size_t seen;         /**< records examined */
    size_t distinct;     /**< distinct expected records seen */
    size_t missing;      /**< expected records never seen */
    size_t duplicates;   /**< extra copies of records already seen */
    size_t unexpected;   /**< well-formed records outside the expected range */
    size_t corrupt;      /**< key, value or headers differ from the generator's */
    size_t out_of_order; /**< order breaks: a seq below the previous one in its partition */
} rill_verify_report_t;

/**
 * Check consumed records against `count` records of generator `gen` (NULL =
 * defaults). Fills *report (may be NULL). Returns RILL_OK when every expected
 * record was seen exactly once, intact, and nothing else was seen; otherwise
 * RILL_ESTATE with the first problem described in errstr. Callers testing
 * at-least-once delivery check report->missing and report->corrupt instead.
 * @locality any thread.
 */
RILL_API rill_err_t rill_testkit_verify(const rill_consumed_t *c, size_t count,
                                        const rill_gen_t *gen, rill_verify_report_t *report,
                                        char *errstr, size_t errstr_size);

/* --------------------------------------------------------------------- */
/* Stage harness                                                          */
/* --------------------------------------------------------------------- */

/*
 * Unit tests of one stage without a broker: the stage runs between a fake
 * Kafka source, fed by the test with rill_testkit_stage_push(), and a
 * collecting sink, and the harness records what became of every record it
 * pushed (confirmed, released, rejected, retried), as a Kafka source would
 * learn it. A test of a map, a filter or a rill_stage_stateful() over a
 * memory store runs in milliseconds.
 *
 * These functions need rill's internals (origins, record elements), so
 * they are part of librill itself, not of librill_testkit; they are
 * declared here because they are test support.
 */

/** A stage under test with its fake source and collecting sink (opaque). */
typedef struct rill_testkit_stage rill_testkit_stage_t;

/** What became of a pushed record (rill_testkit_stage_settled()). */
typedef enum rill_testkit_settle {
    RILL_TESTKIT_UNKNOWN = -1,  /**< no such record was pushed */
    RILL_TESTKIT_PENDING = 0,   /**< not settled yet: held by the stage or in flight */
    RILL_TESTKIT_CONFIRMED = 1, /**< handled: a source would commit past it */
    RILL_TESTKIT_RELEASED = 2,  /**< released unconfirmed: it would come again */
    RILL_TESTKIT_REJECTED = 3,  /**< rejected (rill_elem_reject): for the dead letters */
    RILL_TESTKIT_RETRIED = 4    /**< sent back for a retry (rill_elem_retry); not redelivered */
} rill_testkit_settle_t;

/**
 * Run `stage` (taken, also on error) in sys, which must be started, between
 * a fake Kafka source and a collecting sink. The sink keeps every output
 * and confirms it as rill_sink_collect() does, so an output's origin is
 * confirmed once the stage handed it on.
 * Returns RILL_OK and sets *out; RILL_EINVAL for NULL arguments; the
 * stage's own error (rill_stage_spawn()) otherwise; errstr says why.
 * @locality any thread but an executor. The caller owns *out:
 * rill_testkit_stage_destroy(), before rill_system_destroy().
 */
RILL_API rill_err_t rill_testkit_stage_start(rill_system_t *sys, rill_stage_t *stage,
                                             rill_testkit_stage_t **out, char *errstr,
                                             size_t errstr_size);

/**
 * Push one consumed record (topic, partition, offset >= 0, timestamp, key,
 * value and headers of r; copied). The stage gets it, in push order and as
 * it asks for input, as an element for which rill_record() returns an
 * rd_kafka_message_t with those fields: rd_kafka_topic_name(m->rkt),
 * rd_kafka_message_timestamp() (CreateTime; a negative timestamp: not
 * available) and rd_kafka_message_headers() work. It carries an origin
 * whose settling the harness records (rill_testkit_stage_settled()).
 * Returns RILL_OK; RILL_EINVAL (NULL h or r, no topic, a negative offset or
 * partition); RILL_ESTATE after rill_testkit_stage_finish(); RILL_ENOMEM;
 * RILL_EKAFKA when this librdkafka's messages cannot be imitated.
 * @locality any thread.
 */
RILL_API rill_err_t rill_testkit_stage_push(rill_testkit_stage_t *h,
                                            const rill_testkit_record_t *r);

/**
 * Wait until at least n outputs were collected, within timeout_ms.
 * Returns RILL_OK, RILL_ETIMEDOUT, or RILL_ESTOPPED when the stage ended
 * with fewer; RILL_EINVAL for a NULL h.
 * @locality any thread but an executor. Blocks.
 */
RILL_API rill_err_t rill_testkit_stage_wait_outputs(rill_testkit_stage_t *h, size_t n,
                                                    int timeout_ms);

/**
 * Wait until every pushed record is settled (none PENDING), within
 * timeout_ms. Returns RILL_OK, RILL_ETIMEDOUT or RILL_EINVAL (NULL h).
 * @locality any thread but an executor. Blocks.
 */
RILL_API rill_err_t rill_testkit_stage_wait_settled(rill_testkit_stage_t *h, int timeout_ms);

/** The number of outputs collected so far; 0 for NULL. @locality any thread. */
RILL_API size_t rill_testkit_stage_output_count(rill_testkit_stage_t *h);

/** Output i (0 <= i < count), in the order the stage sent them, without its
 * origin (the sink confirmed it); NULL out of range. Owned by h, valid
 * until rill_testkit_stage_destroy(). @locality any thread. */
RILL_API const rill_elem_t *rill_testkit_stage_output(rill_testkit_stage_t *h, size_t i);

/**
 * What became of the record pushed at (topic, partition, offset) (the
 * latest push of it, if pushed twice): a rill_testkit_settle_t value;
 * RILL_TESTKIT_UNKNOWN for a record never pushed or a NULL argument.
 * Settling is asynchronous: wait for it (rill_testkit_stage_wait_settled())
 * before asserting on a final state.
 * @locality any thread.
 */
RILL_API int rill_testkit_stage_settled(rill_testkit_stage_t *h, const char *topic,
                                        int32_t partition, int64_t offset);

/**
 * Complete the input (once every pushed record went to the stage, the
 * stage sees COMPLETE), then wait until the stage ended, within timeout_ms.
 * result (may be NULL) says how: COMPLETED, or FAILED with the code and
 * text of the stage's error; `delivered` counts the outputs. A stage that
 * failed earlier is reported the same way.
 * Returns RILL_OK when the stage ended (however it ended), RILL_ETIMEDOUT
 * (result->end RUNNING), RILL_EINVAL for a NULL h.
 * @locality any thread but an executor. Blocks.
 */
RILL_API rill_err_t rill_testkit_stage_finish(rill_testkit_stage_t *h, int timeout_ms,
                                              rill_pipeline_result_t *result);

/**
 * Stop the stage if it still runs, stop the harness and free everything,
 * outputs included; records still held are released. NULL is a no-op.
 * @locality any thread but an executor; before rill_system_destroy().
 */
RILL_API void rill_testkit_stage_destroy(rill_testkit_stage_t *h);

/* --------------------------------------------------------------------- */
/* Virtual clock                                                          */
/* --------------------------------------------------------------------- */

/** A clock that moves only when the test says (opaque), for stages that
 * take a now_ms(void *opaque) function. Part of librill_testkit. */
typedef struct rill_testkit_clock rill_testkit_clock_t;

/** A clock showing start_ms. NULL only without memory.
 * @locality any thread. The caller owns it: rill_testkit_clock_destroy(). */
RILL_API rill_testkit_clock_t *rill_testkit_clock_new(int64_t start_ms);

/** Free a clock (nothing may read it any more). NULL is a no-op.
 * @locality any thread. */
RILL_API void rill_testkit_clock_destroy(rill_testkit_clock_t *c);

/** The clock's time in ms; `clock` is a rill_testkit_clock_t *, so this is
 * usable as a now_ms(void *opaque) callback. 0 for NULL.
 * @locality any thread. */
RILL_API int64_t rill_testkit_clock_now(void *clock);

/** Move the clock by ms (>= 0; a negative ms is ignored: time does not go
 * back). @locality any thread. */
RILL_API void rill_testkit_clock_advance(rill_testkit_clock_t *c, int64_t ms);

/** Set the clock to ms, if that is not earlier than it shows.
 * @locality any thread. */
RILL_API void rill_testkit_clock_set(rill_testkit_clock_t *c, int64_t ms);

#ifdef __cplusplus
}
#endif

#endif /* RILL_TESTKIT_H */
