/*
 * rill Kafka: the consumer actor, a stream publisher of Kafka records with
 * manual confirmation and safe commits (at-least-once by default), in the
 * style of scala-kafka-client's KafkaConsumerActor and Alpakka's committable
 * sources.
 *
 * RECORDS. The consumer is a source stage (see stream.h): connect it with
 * rill_stage_connect() or put it first in a pipeline. Each element is one
 * record, zero-copy: payload is the rd_kafka_message_t * (read key, value,
 * headers, topic, partition and offset with the librdkafka API), dtor
 * releases it, arg identifies the partition's current assignment (for
 * fencing; pass the element to rill_consumer_confirm untouched).
 *
 * CONFIRMS AND COMMITS. Processing confirms records, in any order, one at
 * a time, in batches, or "everything up to an offset". Per partition the
 * consumer commits only the contiguous confirmed prefix (the first
 * unconfirmed offset), never past a record that was not confirmed. Commits
 * are asynchronous, every rill.commit.count confirmed records or
 * rill.commit.interval.ms, and synchronous with a deadline when partitions
 * are revoked and when the consumer stops. librdkafka's own auto commit and
 * auto offset store are off.
 *
 * BACKPRESSURE. Records are emitted only against downstream demand. When
 * the local buffer reaches rill.buffer.high the consumer stops polling
 * records (the buffer never holds more; librdkafka's fetcher stops at its
 * own queued.max.messages.kbytes, 8 MiB unless set, or queued.min.messages,
 * 100,000 records: lower it to hold less while backpressured, at the price
 * of fetching at most once a second past it); if the buffer has not
 * gone below rill.buffer.low for rill.pause.after.ms, the assigned
 * partitions are paused, and they resume below rill.buffer.low. librdkafka
 * 2.0.2 takes up to a second to fetch again after a resume: size
 * rill.buffer.low to about a second of processing to hide it. The pause is re-applied after every
 * assignment, and the consumer keeps serving librdkafka while paused, so max.poll.interval.ms is
 * never exceeded because of a slow pipeline. At most rill.max.unconfirmed records are out
 * unconfirmed at once: past that the consumer stops emitting until confirms come back.
 *
 * REBALANCES. cooperative-sticky by default (incremental), eager works
 * too. On revoke the consumer stops emitting those partitions' records,
 * drops what it buffered of them, waits up to rill.drain.timeout.ms for
 * the confirms of what is in flight, commits, and only then releases the
 * partitions. Confirms for a partition from an earlier assignment are
 * fenced (dropped and counted). Lost partitions commit nothing.
 *
 * REDELIVERY. With rill.unconfirmed.timeout.ms > 0, a record not confirmed
 * in time is delivered again (the consumer seeks back to it, so later
 * records of that partition come again too: at-least-once), up to
 * rill.max.redeliveries times; then the record goes to
 * rill.dead.letter.topic with the headers rill-origin-topic,
 * rill-origin-partition, rill-origin-offset and rill-error, and is
 * confirmed once the dead-letter topic has it (if the producer cannot take
 * or deliver it, it is redelivered and tried again); without a dead-letter topic
 * the consumer fails, for its supervisor to decide.
 *
 * ERRORS. Retriable errors (transport, commit errors such as
 * UNKNOWN_MEMBER_ID, REBALANCE_IN_PROGRESS, ILLEGAL_GENERATION) are counted
 * and consumption goes on. Fatal ones (librdkafka fatal errors, an
 * unknown topic in a fixed assignment, authentication) fail the consumer
 * actor: under a supervisor it is restarted and resumes from the last
 * committed offsets.
 *
 * CLUSTER. bootstrap.servers is required: there is no default cluster.
 * For tests and demos, the testkit's embedded broker (<rill/testkit.h>,
 * its own library) gives one: pass rill_broker_bootstraps() explicitly.
 */
#ifndef RILL_KAFKA_H
#define RILL_KAFKA_H

#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include <rill/actor.h>
#include <rill/stream.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ */
/* Consumer configuration                                              */
/* ------------------------------------------------------------------ */

typedef struct rill_consumer_conf rill_consumer_conf_t;

/* Where a fixed partition starts. */
#define RILL_OFFSET_COMMITTED                                                                      \
    ((int64_t)-1001) /* Kafka's committed offset, else auto.offset.reset */
#define RILL_OFFSET_BEGINNING ((int64_t)-2)
#define RILL_OFFSET_END       ((int64_t)-1)

/* @locality any thread. The caller owns the result until
 * rill_consumer_spawn() consumes it. */
RILL_API rill_consumer_conf_t *rill_consumer_conf_new(void);
RILL_API void rill_consumer_conf_destroy(rill_consumer_conf_t *conf);

/*
 * Set a property. Keys starting with "rill." are rill's:
 *   rill.commit.interval.ms     async commit period (default 1000)
 *   rill.commit.count           async commit after this many confirms (1000)
 *   rill.drain.timeout.ms       wait for in-flight confirms on revoke (5000)
 *   rill.shutdown.timeout.ms    final commit and close on stop (5000)
 *   rill.unconfirmed.timeout.ms redeliver after this long (0 = never)
 *   rill.max.redeliveries       then dead-letter or fail (3)
 *   rill.dead.letter.topic      where records go after max redeliveries
 *   rill.dead.letter.producer   name of the producer actor that sends them
 *                               (default: the consumer starts its own,
 *                               linked to it, with every librdkafka
 *                               property set here that is not
 *                               consumer-only, except transactional.id)
 *   rill.buffer.high            pause when this many records are buffered (1000)
 *   rill.buffer.low             resume below this many (500)
 *   rill.max.unconfirmed        records out unconfirmed at most (20000; above
 *                               the producers' rill.max.inflight)
 *   rill.pause.after.ms         pause when the buffer stays full this long (1000)
 *   rill.commit                 "true" (default) or "false" (offsets are
 *                               the application's: nothing is committed)
 * Every other key goes to librdkafka unchanged and is checked at once.
 * Returns RILL_OK, or RILL_EINVAL (unknown rill key, bad value, NULL) /
 * RILL_EKAFKA (refused by librdkafka) with the message in errstr.
 */
RILL_API rill_err_t rill_consumer_conf_set(rill_consumer_conf_t *conf, const char *key,
                                           const char *value, char *errstr, size_t errstr_size);

/* Group subscription: topic names, or regular expressions starting with ^.
 * Needs group.id. */
RILL_API rill_err_t rill_consumer_conf_subscribe(rill_consumer_conf_t *conf,
                                                 const char *const *topics, size_t n);

/* Fixed partitions (no group membership): add one, starting at offset (a
 * concrete offset or RILL_OFFSET_*). RILL_OFFSET_COMMITTED needs group.id. */
RILL_API rill_err_t rill_consumer_conf_assign(rill_consumer_conf_t *conf, const char *topic,
                                              int32_t partition, int64_t offset);

/*
 * Self-managed offsets (group subscription, state stored with its
 * offsets): called with the newly assigned partitions; set each
 * partition's ->offset to where consumption must start (or leave it at
 * RD_KAFKA_OFFSET_INVALID for Kafka's committed offset). Implies
 * rill.commit=false unless set otherwise. Return non-zero to fail.
 * @locality the consumer's executor.
 */
typedef int rill_assigned_fn(void *opaque, rd_kafka_topic_partition_list_t *partitions);
RILL_API void rill_consumer_conf_set_assigned_cb(rill_consumer_conf_t *conf, rill_assigned_fn *fn,
                                                 void *opaque);

/* Observe rebalances (after the consumer handled them). */
typedef enum rill_rebalance_event {
    RILL_REBALANCE_ASSIGNED = 1,
    RILL_REBALANCE_REVOKED,
    RILL_REBALANCE_LOST
} rill_rebalance_event_t;
typedef void rill_rebalance_fn(void *opaque, rill_rebalance_event_t event,
                               const rd_kafka_topic_partition_list_t *partitions);
RILL_API void rill_consumer_conf_set_rebalance_cb(rill_consumer_conf_t *conf, rill_rebalance_fn *fn,
                                                  void *opaque);

/* Observe every commit the consumer makes: the offsets sent and the
 * result (per partition in ->err). */
typedef void rill_commit_fn(void *opaque, rd_kafka_resp_err_t err,
                            const rd_kafka_topic_partition_list_t *offsets);
RILL_API void rill_consumer_conf_set_commit_cb(rill_consumer_conf_t *conf, rill_commit_fn *fn,
                                               void *opaque);

/* ------------------------------------------------------------------ */
/* The consumer actor                                                  */
/* ------------------------------------------------------------------ */

/*
 * Start a consumer actor (consumes conf, also on failure). The librdkafka
 * client is created here, so a bad configuration fails now, with the
 * message. opts as for rill_stage_spawn (may be NULL).
 * @locality any thread.
 */
RILL_API rill_err_t rill_consumer_spawn(rill_system_t *sys, rill_consumer_conf_t *conf,
                                        const rill_stage_opts_t *opts, rill_aid_t *aid,
                                        char *errstr, size_t errstr_size);

/* The record in an element the consumer emitted (NULL if not one). */
RILL_API const rd_kafka_message_t *rill_record(const rill_elem_t *e);

/*
 * Confirm a record (pass the element as received, before releasing it),
 * several records, or every record of the element's partition up to and
 * including `offset`. A confirm for a partition that was revoked since is
 * fenced: accepted here, dropped and counted by the consumer.
 * Returns RILL_OK, RILL_ESTOPPED (consumer gone), RILL_EINVAL.
 * @locality any thread.
 */
RILL_API rill_err_t rill_consumer_confirm(rill_system_t *sys, rill_aid_t consumer,
                                          const rill_elem_t *record);
RILL_API rill_err_t rill_consumer_confirm_batch(rill_system_t *sys, rill_aid_t consumer,
                                                const rill_elem_t *records, size_t n);
RILL_API rill_err_t rill_consumer_confirm_upto(rill_system_t *sys, rill_aid_t consumer,
                                               const rill_elem_t *record, int64_t offset);

typedef struct rill_consumer_stats {
    uint64_t polled;             /* records received from librdkafka */
    uint64_t emitted;            /* records sent downstream (redeliveries included) */
    uint64_t confirmed;          /* confirms accepted */
    uint64_t fenced;             /* confirms dropped: partition revoked since */
    uint64_t committed;          /* commits that succeeded */
    uint64_t commit_errors;      /* commits that failed (retriable) */
    uint64_t redelivered;        /* records delivered again after a timeout */
    uint64_t dead_lettered;      /* records delivered to the dead-letter topic */
    uint64_t dead_letter_errors; /* dead letters not taken or not delivered (retried) */
    uint64_t rebalances;         /* assign/revoke/lost events */
    uint32_t buffered;           /* records held now */
    uint32_t buffered_max;       /* the most ever held */
    uint32_t unconfirmed;        /* records out, not yet confirmed */
    uint32_t assigned;           /* partitions assigned now */
    int paused;                  /* partitions are paused now */
    uint64_t pauses;             /* times paused */
} rill_consumer_stats_t;

/* A snapshot of a consumer's counters. @locality any thread except an
 * executor thread (it asks the consumer). */
RILL_API rill_err_t rill_consumer_stats(rill_system_t *sys, rill_aid_t consumer,
                                        rill_consumer_stats_t *out);

/* ------------------------------------------------------------------ */
/* Origins: confirming a consumed record after what it produced       */
/* ------------------------------------------------------------------ */

/*
 * An origin ticket stands for one consumed record in a consume ->
 * transform -> produce pipeline. It is reference counted: attach a
 * reference to every produce request made from the record; when the last
 * reference is released the record is confirmed to its consumer, unless
 * the ticket was failed (a delivery failed, or a request was dropped
 * undelivered), in which case it is never confirmed and the record will be
 * delivered again. One record, many outputs: one ticket, many references.
 * A record filtered out: create the ticket and release it (or confirm the
 * record directly).
 * @locality any thread.
 */
typedef struct rill_origin rill_origin_t;

/* A ticket for `record` (an element the consumer emitted), one reference.
 * The record itself may be released right after. NULL if it is not one. */
RILL_API rill_origin_t *rill_origin_new(rill_system_t *sys, rill_aid_t consumer,
                                        const rill_elem_t *record);
/* One more reference; returns o. */
RILL_API rill_origin_t *rill_origin_ref(rill_origin_t *o);
/* Drop a reference; the last one confirms the record (unless failed). */
RILL_API void rill_origin_release(rill_origin_t *o);
/* Never confirm this record (the references still need releasing). */
RILL_API void rill_origin_fail(rill_origin_t *o);

/* ------------------------------------------------------------------ */
/* Produce requests                                                    */
/* ------------------------------------------------------------------ */

/*
 * A record to produce: the element type the producer actor consumes
 * (rill_produce_elem). Key and value are copied at creation.
 */
typedef struct rill_produce rill_produce_t;

/* partition: a partition or RILL_PARTITION_ANY (by key). NULL on a bad
 * topic name or out of memory. */
RILL_API rill_produce_t *rill_produce_new(const char *topic, int32_t partition, const void *key,
                                          size_t key_len, const void *value, size_t value_len);
/* Add a header (copied). */
RILL_API rill_err_t rill_produce_add_header(rill_produce_t *p, const char *name, const void *value,
                                            size_t value_len);
/* Timestamp in ms since the epoch (default: now). */
RILL_API void rill_produce_set_timestamp(rill_produce_t *p, int64_t ms);
/* Attach an origin reference (the request takes it over). */
RILL_API void rill_produce_set_origin(rill_produce_t *p, rill_origin_t *o);
/* Also send the delivery result to `to` as a RILL_MSG_DELIVERY message
 * (payload rill_delivery_t, freed by rill) with this arg. */
RILL_API void rill_produce_set_reply(rill_produce_t *p, rill_aid_t to, uint64_t arg);
/* Free a request that was not handed on; its origin is failed (it was not
 * delivered). This is also the element destructor. */
RILL_API void rill_produce_free(void *p);
/* The element carrying p (ownership moves with the element). */
RILL_API rill_elem_t rill_produce_elem(rill_produce_t *p);

/* Message type of delivery results sent with rill_produce_set_reply. */
#define RILL_MSG_DELIVERY (RILL_MSG_STREAM_LAST + 96)

/* A delivery result: what the producer emits downstream (if anything
 * subscribed to it) and sends to a request's reply address. */
typedef struct rill_delivery {
    char topic[250];
    int32_t partition;
    int64_t offset;          /* where it landed; -1 on failure */
    rd_kafka_resp_err_t err; /* RD_KAFKA_RESP_ERR_NO_ERROR when delivered */
    uint64_t arg;            /* the request's reply arg */
} rill_delivery_t;

/* ------------------------------------------------------------------ */
/* The producer actor                                                  */
/* ------------------------------------------------------------------ */

typedef struct rill_producer_conf rill_producer_conf_t;

RILL_API rill_producer_conf_t *rill_producer_conf_new(void);
RILL_API void rill_producer_conf_destroy(rill_producer_conf_t *conf);

/*
 * Set a property. rill's own:
 *   rill.max.inflight       requests handed to librdkafka and not yet
 *                           delivered, at most (default 10000): the demand
 *                           the producer signals upstream
 *   rill.flush.timeout.ms   flush deadline when the producer stops (5000)
 * Every other key goes to librdkafka unchanged and is checked at once.
 * enable.idempotence defaults to true, acks to all, partitioner to
 * murmur2_random (a key lands in the partition a Java producer would pick).
 */
RILL_API rill_err_t rill_producer_conf_set(rill_producer_conf_t *conf, const char *key,
                                           const char *value, char *errstr, size_t errstr_size);

/*
 * Start a producer actor: a stage with one input (produce request
 * elements) and an optional output (rill_delivery_t elements, one per
 * request, if something subscribes). Delivery reports come back through
 * the actor's event loop. A delivery that fails after librdkafka's own
 * retries, or a fatal producer error, fails the actor (its supervisor
 * decides; origins are never confirmed). When it stops it flushes with
 * rill.flush.timeout.ms and fails the origins of what was not delivered.
 * Consumes conf, also on failure. bootstrap.servers is required.
 * @locality any thread.
 */
RILL_API rill_err_t rill_producer_spawn(rill_system_t *sys, rill_producer_conf_t *conf,
                                        const rill_stage_opts_t *opts, rill_aid_t *aid,
                                        char *errstr, size_t errstr_size);

/*
 * Send one request to a producer directly, outside any stream: for actors
 * that produce as a side effect (replies, audit records, dead letters).
 * It bypasses the stream's demand, so the producer's mailbox is the bound:
 * RILL_EFULL when it is full (and RILL_ESTOPPED, RILL_EINVAL), in which
 * case req stays the caller's. On RILL_OK the producer owns req; its
 * delivery result goes to the request's reply address and origin, never
 * to the producer's stream output. A request librdkafka cannot take is
 * answered with a failed delivery (err set) and its origin fails.
 * @locality any thread.
 */
RILL_API rill_err_t rill_producer_send(rill_system_t *sys, rill_aid_t producer,
                                       rill_produce_t *req);

typedef struct rill_producer_stats {
    uint64_t requested; /* requests received */
    uint64_t delivered;
    uint64_t failed;  /* deliveries that failed */
    uint64_t retried; /* requests librdkafka's queue refused for a while */
    uint32_t inflight;
    uint32_t inflight_max;
    uint64_t undelivered_at_stop;
} rill_producer_stats_t;

/* A snapshot of a producer's counters. For a stopped producer whose stop
 * has finished (rill_alive() returns 0), its final counters, with
 * undelivered_at_stop: the system keeps those of its last 256 stopped
 * producers (RILL_ESTOPPED for older ones).
 * @locality any thread except an executor thread (it asks the producer). */
RILL_API rill_err_t rill_producer_stats(rill_system_t *sys, rill_aid_t producer,
                                        rill_producer_stats_t *out);

#ifdef __cplusplus
}
#endif

#endif /* RILL_KAFKA_H */
