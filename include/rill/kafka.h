/**
 * @file
 * rill Kafka: a source of consumed records and a sink that produces
 * records, as stage specs that go into a pipeline like any other stage
 * (stream.h), in the style of Alpakka Kafka's committable sources and
 * scala-kafka-client's KafkaConsumerActor. At-least-once by default:
 * offsets are committed only for records that were handled.
 *
 * A SERVICE IN A FEW LINES.
 * @code
 *   rill_pipeline_t *p = rill_pipeline_new(sys, "enricher");
 *   rill_pipeline_add(p, rill_kafka_source(cconf), NULL);
 *   rill_pipeline_add(p, rill_stage_map(enrich, NULL), NULL); // in -> rill_produce_elem(...)
 *   rill_pipeline_add(p, rill_kafka_sink(pconf), NULL);
 *   err = rill_pipeline_start_supervised(p, NULL, errstr, sizeof(errstr));
 * @endcode
 * Each consumed record carries its origin (actor.h); the stages carry it
 * to what is made from it, and the sink confirms it when the record made
 * from it is delivered, so the consumer commits it. A stage failing
 * restarts the pipeline, which goes on from the committed offsets.
 *
 * RECORDS. Each element the source emits is one record, zero-copy: payload
 * is the rd_kafka_message_t * (read key, value, headers, topic, partition
 * and offset with the librdkafka API, or rill_record()), dtor releases it,
 * and origin stands for it. Processing never names the consumer.
 *
 * CONFIRMS AND COMMITS. A record is confirmed when everything made from it
 * was handled (see ORIGINS in stream.h): by the sink's delivery, a sink's
 * return, a stage dropping it on purpose, or rill_elem_confirm(). Per
 * partition the source commits only the contiguous confirmed prefix,
 * never past a record that was not confirmed: asynchronously every
 * rill.commit.count confirms or rill.commit.interval.ms, synchronously
 * with a deadline when partitions are revoked and when a run ends.
 * librdkafka's own auto commit and auto offset store are off. A record
 * released unconfirmed (a failed stage, a stop, an error) is not
 * committed past; it comes again in the next run, or at once with
 * rill.unconfirmed.timeout.ms set.
 *
 * ENDING A RUN. When a pipeline stops, drains or has a stage fail, the
 * source stops emitting, drops what it buffered, and waits until every
 * stage after it has ended (so that confirms still coming back from the
 * sink are in) or rill.drain.timeout.ms passed; then it makes its final
 * commit. A supervised pipeline that failed keeps its client, paused and
 * still a member of its group, for its next run (rill.restart.keep.ms):
 * a restart costs no rebalance, and goes on from the first record not
 * confirmed; the records after it that the failed run confirmed are
 * confirmed again without being processed again (stats.not_replayed).
 * Otherwise the client leaves its group and closes.
 *
 * BACKPRESSURE. Records are emitted only against downstream demand. When
 * the local buffer reaches rill.buffer.high the source stops polling (the
 * buffer never holds more; librdkafka's fetcher stops at its own
 * queued.max.messages.kbytes, 8 MiB unless set (2 MiB from librdkafka
 * 2.2.0: ~23 MiB RSS held back, bench_backlog), or queued.min.messages,
 * 100,000 records: lower it to hold less while backpressured). Past either
 * limit librdkafka waits fetch.queue.backoff.ms before it looks again:
 * from librdkafka 2.2.0 rill sets it to 1 unless set (librdkafka's
 * default, 1000, halved bench_pipeline's throughput on 2.8.0), so the
 * limits cost no throughput; before 2.2.0 the wait is a fixed second, and
 * a lower limit costs throughput. If the buffer has not gone below
 * rill.buffer.low for rill.pause.after.ms and downstream took fewer than
 * 2 x rill.buffer.high records in that time, the assigned partitions are
 * paused, and they resume below rill.buffer.low (a downstream that takes
 * two buffers per rill.pause.after.ms is not paused: the resume delay below
 * would starve it, and the prefetch limit bounds memory anyway). librdkafka (2.0.2 and
 * 2.8.0 alike) takes up to a second to fetch again after a resume: size
 * rill.buffer.low to about a second of processing to hide it. The pause is re-applied
 * after every assignment, and the source keeps serving librdkafka while
 * paused, so max.poll.interval.ms is never exceeded because of a slow
 * pipeline. At most rill.max.unconfirmed records are out unconfirmed at
 * once: past that the source stops emitting until confirms come back
 * (stats: blocked and blocked_episodes; logged once per episode that
 * lasts a second). Records
 * must be confirmed whoever owns the offsets: with rill.commit=false a
 * pipeline that never confirms stops after rill.max.unconfirmed records.
 *
 * REBALANCES. The default partition.assignment.strategy depends on the
 * librdkafka running (rd_kafka_version(), checked when the client is
 * made): cooperative-sticky (incremental) from 2.3.0, range (eager) below,
 * because before 2.3.0 closing a cooperative-sticky member that joined its
 * group but has no assignment yet aborts the process (librdkafka #4312).
 * A strategy set by the application is kept; cooperative-sticky on an
 * older librdkafka gets a warning on stderr, and its clients that were
 * never assigned anything are left undestroyed at their close
 * (rill_kafka_clients_stats) rather than risk the abort. On revoke the
 * source stops emitting those partitions' records, drops what it
 * buffered of them, waits up to rill.drain.timeout.ms for the confirms of
 * what is in flight, tells the rebalance callback (REVOKED: the
 * application's "save on revoke" point, while the partitions are still
 * its own), commits, and only then releases the partitions; the same
 * order at the end of a run (a stop, a restart that keeps the client, the
 * close). Confirms for a partition from an earlier assignment are fenced
 * (dropped and counted). Lost partitions commit nothing (LOST).
 *
 * REDELIVERY. With rill.unconfirmed.timeout.ms > 0, a record not confirmed
 * in time, or released unconfirmed, is delivered again, alone: the source
 * seeks back to it and fetches the partition again from there, but of
 * what comes again it emits only the records due; the later ones that
 * were confirmed or are still out are dropped unprocessed. Up to
 * rill.max.redeliveries times; then the record goes to
 * rill.dead.letter.topic with the headers rill-origin-topic,
 * rill-origin-partition, rill-origin-offset and rill-error, and is
 * confirmed once the dead-letter topic has it (if the producer cannot take
 * or deliver it, it is delivered again a second later and sent again);
 * without a dead-letter topic the source fails, for its supervisor to
 * decide.
 *
 * POISON RECORDS. When a stage fails while it processes a record (a map,
 * flat_map, map_async or sink_foreach function returns an error), that
 * record is the failure's suspect (a batch: each record in it): the
 * source counts a failure for it by topic, partition and offset, in the
 * blueprint (rill_kafka_source()'s spec), so the count survives the
 * restarts of a supervised pipeline; the other records the failure
 * released are not counted. A Kafka sink that cannot produce a record
 * because of the record itself (too large for message.max.bytes, an
 * invalid record, a bad request) blames the record it was made from the
 * same way; broker faults (timeouts, outages) blame no record. The next
 * run reads
 * the record again (from the committed offset); once it has failed
 * rill.max.failures times it is not processed again: it goes to
 * rill.dead.letter.topic with the headers above (rill-error: the failing
 * stage's text) and the partition moves on. Without a dead-letter topic it
 * is skipped: committed past unprocessed, with a line on stderr and the
 * `skipped` count (as Spring Kafka's DefaultErrorHandler without a
 * recoverer; failing for good instead would stop every other record of
 * the partition behind one bad one). Processing can also settle a record
 * itself: rill_elem_reject() sends it straight to the dead-letter topic
 * (rill-error: "rejected: " and the reason; skipped without one), and
 * rill_elem_retry() delivers it again alone after a delay, counted as a
 * failure. Counts are kept in this process only (a partition that moves
 * to another member starts from zero there), for at most 10,000 records
 * at once, and are forgotten once a record is committed past.
 *
 * ERRORS. Retriable errors (transport, commit errors such as
 * UNKNOWN_MEMBER_ID, REBALANCE_IN_PROGRESS, ILLEGAL_GENERATION) are counted
 * and consumption goes on. Fatal ones (librdkafka fatal errors, an unknown
 * topic or partition in a fixed assignment, authentication) fail the
 * source, and with it the pipeline: supervised, it restarts with a new
 * client, from the committed offsets. Fixed partitions are looked up in
 * the cluster's metadata when a run starts (up to 5 s on the source's
 * executor); a cluster that does not answer is not judged. A cluster that
 * cannot be reached is not an error: librdkafka retries for ever. The
 * stats say it (errors, last_error, brokers_up, connected), for the
 * program and a readiness probe; both clients ask librdkafka for its
 * statistics once a second for it, unless statistics.interval.ms is set.
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
/** @name Consumer configuration
 * @{ */

/** A consumer's configuration: librdkafka's properties and rill's. */
typedef struct rill_consumer_conf rill_consumer_conf_t;

/** Where a fixed partition starts: Kafka's committed offset, else
 * auto.offset.reset. */
#define RILL_OFFSET_COMMITTED ((int64_t)-1001)
/** Where a fixed partition starts: its first record. */
#define RILL_OFFSET_BEGINNING ((int64_t)-2)
/** Where a fixed partition starts: after its last record. */
#define RILL_OFFSET_END       ((int64_t)-1)

/** A new configuration with the defaults; NULL only without memory. The
 * caller owns it until rill_kafka_source() or rill_consumer_spawn() takes
 * it.
 * @locality any thread. */
RILL_API rill_consumer_conf_t *rill_consumer_conf_new(void);
/** Free a configuration nobody took. NULL is a no-op.
 * @locality any thread. */
RILL_API void rill_consumer_conf_destroy(rill_consumer_conf_t *conf);

/**
 * Set a property. Keys starting with "rill." are rill's (defaults in
 * brackets):
 *  - rill.commit.interval.ms: commit what was confirmed at least this
 *    often, asynchronously [1000]; once everything out is confirmed and
 *    no commit is unanswered (a consumer that caught up), sooner: at most
 *    every hundredth of it
 *  - rill.commit.count: commit after this many confirms [1000]; commits
 *    are asynchronous with at most one unanswered: one that comes due
 *    while another is out goes when it is answered, with everything
 *    confirmed by then (under load, one commit per round trip)
 *  - rill.drain.timeout.ms: on a revoke and at the end of a run, wait this
 *    long for the confirms of what is in flight [5000]
 *  - rill.shutdown.timeout.ms: the final commit and leaving the group, at
 *    most this long [5000]
 *  - rill.unconfirmed.timeout.ms: redeliver a record not confirmed this
 *    long after it went out, or released unconfirmed; 0 = only in the
 *    next run [0]
 *  - rill.max.redeliveries: then the record goes to the dead-letter topic,
 *    or the source fails [3]
 *  - rill.max.failures: a record processing failed on this many times (a
 *    stage failed while it held it, or rill_elem_retry()), counted across
 *    the pipeline's restarts, goes to the dead-letter topic, or without
 *    one is skipped (logged, counted) [3]
 *  - rill.dead.letter.topic: where records go after rill.max.redeliveries
 *    or rill.max.failures, or rejected (rill_elem_reject()) [none]
 *  - rill.dead.letter.producer: the name of the producer actor that sends
 *    them; by default the source starts its own, linked to it, with every
 *    librdkafka property set here that is not consumer-only, except
 *    transactional.id [none]
 *  - rill.buffer.high: stop polling records when this many wait for
 *    demand [1000]
 *  - rill.buffer.low: resume paused partitions below this many [500]
 *  - rill.max.unconfirmed: records out and not yet confirmed, at most
 *    (above the sinks' rill.max.inflight); at the bound the source stops
 *    emitting until confirms come back, shows it in the stats (blocked,
 *    blocked_episodes) and logs it once if it lasts a second [20000]
 *  - rill.pause.after.ms: pause the partitions when the buffer stayed full
 *    this long while downstream took less than 2 x rill.buffer.high records [1000]
 *  - rill.commit: "false": the offsets are the application's, nothing is
 *    committed; records must still be confirmed (a sink, a drop, or
 *    rill_elem_confirm()), else consumption stops for good after
 *    rill.max.unconfirmed records; "transaction": the offsets go in the
 *    transactions of the pipeline's transactional sink
 *    (rill_kafka_txn_sink()), which asks for them, and a rebalance or an
 *    aborted transaction rewinds the source to the last committed offsets
 *    [true]
 *  - rill.restart.keep.ms: a supervised pipeline that failed keeps its
 *    client, and its group membership, this long for its next run;
 *    0 = close it [30000]
 *
 * Every other key goes to librdkafka unchanged and is checked at once.
 * @return RILL_OK, or RILL_EINVAL (NULL argument, unknown rill key, bad
 * value) or RILL_EKAFKA (refused by librdkafka), with a sentence in
 * errstr.
 * @locality any thread.
 */
RILL_API rill_err_t rill_consumer_conf_set(rill_consumer_conf_t *conf, const char *key,
                                           const char *value, char *errstr, size_t errstr_size);

/** Subscribe to topics as a member of group.id (needed): names, or regular
 * expressions starting with ^ (POSIX extended syntax, as librdkafka
 * compiles them: regcomp with REG_EXTENDED). RILL_EINVAL with a sentence
 * for an empty list, a bad name or a pattern that does not compile.
 * @locality any thread. */
RILL_API rill_err_t rill_consumer_conf_subscribe(rill_consumer_conf_t *conf,
                                                 const char *const *topics, size_t n, char *errstr,
                                                 size_t errstr_size);

/** Consume a fixed partition (no group membership), starting at offset: a
 * concrete offset or RILL_OFFSET_*. RILL_OFFSET_COMMITTED needs group.id.
 * RILL_EINVAL with a sentence for a bad topic, partition or offset.
 * @locality any thread. */
RILL_API rill_err_t rill_consumer_conf_assign(rill_consumer_conf_t *conf, const char *topic,
                                              int32_t partition, int64_t offset, char *errstr,
                                              size_t errstr_size);

/**
 * Self-managed offsets (state stored with its offsets): called with the
 * newly assigned partitions (and, when a restarted pipeline takes over
 * its kept client, with all of them); set each partition's ->offset to
 * where consumption must start, or leave what is there (where the last
 * run left it, or RD_KAFKA_OFFSET_INVALID for Kafka's committed offset).
 *
 * A start that takes long to find (a state restored from a changelog
 * first) must not block the source's executor: set ->offset to
 * RILL_OFFSET_LATER and answer later, from any thread, with
 * rill_assignment_ready() on asg (rill_assignment_retain() it to keep it
 * beyond the callback). The partition is assigned and held paused until
 * then; the others go on. A partition revoked before its answer is
 * dropped from asg (rill_assignment_waiting() turns 0) and the answer is
 * refused with RILL_ENOENT; so is one that comes after the run ended.
 *
 * Return non-zero to fail the source.
 * @locality the source's executor.
 */
typedef struct rill_assignment rill_assignment_t;
typedef int rill_assigned_fn(void *opaque, rill_assignment_t *asg,
                             rd_kafka_topic_partition_list_t *partitions);
/** ->offset of an assigned partition whose start the assigned callback
 * tells later (rill_assignment_ready()). */
#define RILL_OFFSET_LATER ((int64_t)-1002)
/** Set the assigned callback. Implies rill.commit=false unless that was
 * set. RILL_EINVAL for a NULL conf.
 * @locality any thread. */
RILL_API rill_err_t rill_consumer_conf_set_assigned_cb(rill_consumer_conf_t *conf,
                                                       rill_assigned_fn *fn, void *opaque);
/** Keep asg beyond the assigned callback: a reference, for
 * rill_assignment_release(). Returns asg (NULL for NULL).
 * @locality any thread. */
RILL_API rill_assignment_t *rill_assignment_retain(rill_assignment_t *asg);
/** Give a reference back (NULL: nothing).
 * @locality any thread. */
RILL_API void rill_assignment_release(rill_assignment_t *asg);
/**
 * The start of a partition the assigned callback left RILL_OFFSET_LATER:
 * an offset or RILL_OFFSET_BEGINNING / RILL_OFFSET_END. The source seeks
 * it there and lets it fetch (unless the source is paused). RILL_OK;
 * RILL_ENOENT if it is not waiting under asg (never was, answered,
 * revoked, or the run ended); RILL_EINVAL for NULL arguments or a bad
 * offset; RILL_ENOMEM.
 * @locality any thread.
 */
RILL_API rill_err_t rill_assignment_ready(rill_assignment_t *asg, const char *topic,
                                          int32_t partition, int64_t offset);
/** No start can be found: fail the source with why (its supervisor, if
 * any, restarts it). RILL_OK; RILL_ENOENT after the run ended; RILL_EINVAL.
 * @locality any thread. */
RILL_API rill_err_t rill_assignment_fail(rill_assignment_t *asg, const char *why);
/** 1 while the partition waits under asg for its start, else 0: a long
 * search for it may stop once this is 0.
 * @locality any thread. */
RILL_API int rill_assignment_waiting(rill_assignment_t *asg, const char *topic, int32_t partition);

/** What a rebalance callback is told. */
typedef enum rill_rebalance_event {
    RILL_REBALANCE_ASSIGNED = 1, /**< partitions were assigned (or a run took them over) */
    RILL_REBALANCE_REVOKED,      /**< partitions are being released (or a run ends): the
                                      confirms of their records are in, the final commit
                                      and the release come right after the callback */
    RILL_REBALANCE_LOST          /**< partitions were lost: nothing was committed */
} rill_rebalance_event_t;
/** Observe rebalances: ASSIGNED after the partitions were taken, REVOKED
 * before their final commit and release (also at the end of a run), LOST
 * after they went.
 * @locality the source's executor. */
typedef void rill_rebalance_fn(void *opaque, rill_rebalance_event_t event,
                               const rd_kafka_topic_partition_list_t *partitions);
/** Set the rebalance callback. RILL_EINVAL for a NULL conf.
 * @locality any thread. */
RILL_API rill_err_t rill_consumer_conf_set_rebalance_cb(rill_consumer_conf_t *conf,
                                                        rill_rebalance_fn *fn, void *opaque);

/** A partition's end was reached: every record of it before `offset` (its
 * end offset when the fetch got there) went out of the source (emitted
 * downstream, or given up on). Told again each time the end is reached
 * after new records; not for a partition held for its start or being
 * revoked.
 * @locality the source's executor. */
typedef void rill_partition_end_fn(void *opaque, const char *topic, int32_t partition,
                                   int64_t offset);
/** Set the end callback (NULL: none); a callback turns librdkafka's
 * enable.partition.eof on. RILL_EINVAL for a NULL conf.
 * @locality any thread. */
RILL_API rill_err_t rill_consumer_conf_set_end_cb(rill_consumer_conf_t *conf,
                                                  rill_partition_end_fn *fn, void *opaque);

/** Observe every commit the source makes: the offsets sent and the result
 * (per partition in ->err).
 * @locality the source's executor. */
typedef void rill_commit_fn(void *opaque, rd_kafka_resp_err_t err,
                            const rd_kafka_topic_partition_list_t *offsets);
/** Set the commit callback. RILL_EINVAL for a NULL conf.
 * @locality any thread. */
RILL_API rill_err_t rill_consumer_conf_set_commit_cb(rill_consumer_conf_t *conf, rill_commit_fn *fn,
                                                     void *opaque);

/** @} */

/* ------------------------------------------------------------------ */
/** @name The Kafka source
 * @{ */

/**
 * A source stage of consumed records (takes conf, also on error). A
 * configuration that cannot work (no subscription or partitions, no
 * bootstrap.servers, no group.id where one is needed) makes a spec that
 * carries the error; the client is made when the stage starts, so a
 * configuration librdkafka refuses fails rill_pipeline_start() or
 * rill_stage_spawn() with its sentence.
 * @locality any thread.
 */
RILL_API rill_stage_t *rill_kafka_source(rill_consumer_conf_t *conf);

/** Run a Kafka source alone, as a consumer actor (connect it with
 * rill_stage_connect()): rill_stage_spawn() of rill_kafka_source(conf).
 * Takes conf, also on error.
 * @locality any thread. */
RILL_API rill_err_t rill_consumer_spawn(rill_system_t *sys, rill_consumer_conf_t *conf,
                                        const rill_stage_opts_t *opts, rill_aid_t *aid,
                                        char *errstr, size_t errstr_size);

/** The record in an element the source emitted; NULL if it is not one.
 * @locality any thread. */
RILL_API const rd_kafka_message_t *rill_record(const rill_elem_t *e);

/** The hash of a record's key (0 for no key or not a record), as a
 * rill_key_fn: for partition_by_key and conflate_by_key.
 * @locality any thread. */
RILL_API uint64_t rill_record_key_hash(void *opaque, const rill_elem_t *e);

/** Confirm every record of e's partition up to and including e, whatever
 * became of their elements (scala-kafka-client's "confirm up to"). e must
 * still carry its origin. RILL_EINVAL if e is not a record with its
 * origin, RILL_ESTOPPED if its source is gone.
 * @locality any thread. */
RILL_API rill_err_t rill_record_confirm_upto(const rill_elem_t *e);

/** A Kafka source's counters. */
typedef struct rill_consumer_stats {
    uint64_t polled;             /**< records received from librdkafka */
    uint64_t emitted;            /**< records sent downstream (redeliveries included) */
    uint64_t confirmed;          /**< confirms accepted */
    uint64_t fenced;             /**< notices dropped: the partition was revoked since */
    uint64_t committed;          /**< commits that succeeded */
    uint64_t commit_errors;      /**< commits that failed (retriable) */
    uint64_t redelivered;        /**< records delivered again, alone (timeout, release,
                                      retry, or a reject on its way to the dead letters) */
    uint64_t dead_lettered;      /**< records delivered to the dead-letter topic */
    uint64_t dead_letter_errors; /**< dead letters not taken or not delivered (retried) */
    uint64_t rebalances;         /**< assign, revoke and lost events */
    uint32_t buffered;           /**< records held now */
    uint32_t buffered_max;       /**< the most ever held */
    uint32_t unconfirmed;        /**< records out, not yet confirmed */
    uint32_t assigned;           /**< partitions assigned now */
    uint32_t revoking;           /**< of those, being revoked: waiting for confirms */
    uint32_t waiting;            /**< of those, held paused for a start the assigned callback
                                      tells later (RILL_OFFSET_LATER) */
    int paused;                  /**< the partitions are paused now */
    uint64_t pauses;             /**< times paused */
    uint64_t ends;               /**< partition ends told (rill_consumer_conf_set_end_cb) */
    uint64_t fetch_nudges;       /**< idle fetchers woken (a seek to the position: librdkafka < 2.2
                                      sleeps up to 1 s after its queue was full) */
    /** Emitting is stopped now: rill.max.unconfirmed records are out and
     * not confirmed (a pipeline that never confirms stays here). */
    int blocked;
    /** Times emitting stopped on rill.max.unconfirmed; a time that lasts
     * a second is also logged once on stderr. */
    uint64_t blocked_episodes;
    /** Errors librdkafka reported, retriable ones included (a broker that
     * cannot be reached, all brokers down); the last in last_error. */
    uint64_t errors;
    /** Brokers the client is connected to (a bootstrap connection counts
     * as one until brokers are learned), as of librdkafka's last
     * statistics (once a second unless statistics.interval.ms is set; 0
     * never updates it); 0 at once when librdkafka reports all brokers
     * down. */
    uint32_t brokers_up;
    /** brokers_up > 0: the cluster can be reached, what a readiness probe
     * asks. 0 until the first statistics after the first connection. */
    int connected;
    /** librdkafka's sentence for the last error ("" if none). */
    char last_error[160];
    uint64_t failures;     /**< records processing failed on (a stage failed holding
                                one, or a retry), counted toward rill.max.failures */
    uint64_t retried;      /**< of those, retries asked for (rill_elem_retry()) */
    uint64_t rejected;     /**< records rejected (rill_elem_reject()) */
    uint64_t skipped;      /**< records given up without a dead-letter topic: logged,
                                committed past, not processed */
    uint64_t not_replayed; /**< records the previous run confirmed that came again
                                (after the record it stopped at) and were not
                                processed again */
    /** Commits (async and the final or revoke's sync ones), from the
     * request to librdkafka's result, successful and failed ones alike. */
    rill_hist_t commit_latency;
    /** Records confirmed: from the record's timestamp (its Kafka
     * timestamp, rd_kafka_message_timestamp) to its confirm reaching the
     * source. Records without a timestamp, or with one in the future, are
     * not counted. The clock is read once per actor turn. */
    rill_hist_t e2e_latency;
    /** The consumer's group.id (rill's "rill-fixed-partitions" for fixed
     * partitions without one). */
    char group[128];
    /** The sum of the assigned partitions' known lags (as
     * rill_partition_stats_t.lag), -1 if none is known. */
    int64_t lag;
} rill_consumer_stats_t;

/** A snapshot of a Kafka source's counters (its aid: rill_pipeline_stage()
 * or rill_consumer_spawn()). RILL_EINVAL at once for an actor that is not
 * a Kafka source, RILL_ESTOPPED if it is gone.
 * @locality any thread except an executor thread (it asks the actor). */
RILL_API rill_err_t rill_consumer_stats(rill_system_t *sys, rill_aid_t consumer,
                                        rill_consumer_stats_t *out);

/** One assigned partition of a Kafka source, as of librdkafka's last statistics
 * (statistics.interval.ms, 1 s by default) and the source's own offsets. */
typedef struct rill_partition_stats {
    char topic[128];    /**< the topic (cut to fit) */
    int32_t partition;  /**< the partition */
    int64_t end_offset; /**< high watermark (read_committed: last stable offset); -1 unknown */
    int64_t log_start_offset; /**< -1 unknown */
    int64_t committed_offset; /**< last committed (the source's own view, falling back to
                                 librdkafka's); -1 none */
    int64_t position;         /**< next offset to fetch; -1 unknown */
    int64_t lag; /**< end_offset − committed_offset when both known (0 floor), else end_offset −
                    log_start_offset if nothing committed yet and end known, else -1 */
    int paused;  /**< paused now (backpressure or held) */
    int64_t stats_age_ms; /**< ms since these statistics were taken; -1 never */
} rill_partition_stats_t;

/** The source's assigned partitions into out[0..max), *n = how many it has (may exceed max).
 * RILL_EINVAL for a non-source, RILL_ESTOPPED if gone. @locality any thread except an executor
 * thread (it asks the actor). */
RILL_API rill_err_t rill_consumer_partitions(rill_system_t *sys, rill_aid_t consumer,
                                             rill_partition_stats_t *out, size_t max, size_t *n);

/**
 * What became of the consumer clients rill closed, counted over the whole
 * process (an abandoned client outlives the system that made it). A
 * client is destroyed on a thread of its own once its last record is
 * released: librdkafka 2.0.2's destroy of a consumer whose close did not
 * finish (brokers down at the stop) never returns and spins a core
 * (librdkafka #2898, #4527). A stop therefore never waits for it: the
 * close gets rill.shutdown.timeout.ms (at least 500 ms); if the client has
 * not left its group by then, its thread goes on serving the close for up
 * to a minute (the brokers may come back), then destroys it, or abandons
 * it with a line on stderr: never destroyed, its memory and threads kept
 * until the process exits.
 */
typedef struct rill_kafka_clients_stats {
    uint64_t closing;      /**< clients whose close or destroy is still under way */
    uint64_t destroyed;    /**< clients destroyed */
    uint64_t abandoned;    /**< clients left undestroyed: their close never finished */
    uint64_t destroy_late; /**< destroys not done within 2 s (left to their thread) */
} rill_kafka_clients_stats_t;

/** A snapshot of the process's rill_kafka_clients_stats_t into *out (NULL
 * is a no-op).
 * @locality any thread. */
RILL_API void rill_kafka_clients_stats(rill_kafka_clients_stats_t *out);

/** @} */

/* ------------------------------------------------------------------ */
/** @name Produce requests
 * @{ */

/**
 * A record to produce: the element type the Kafka sink takes
 * (rill_produce_elem()). Key, value and headers are copied. A request
 * made from an input element in a map stage stands for that input by
 * itself (the stage carries the origin): nothing to attach.
 */
typedef struct rill_produce rill_produce_t;

/** A request for topic; partition is a partition or RILL_PARTITION_ANY (by
 * the key's hash, as a Java producer picks). NULL only without memory: a
 * bad topic name or a NULL pointer with a length is reported by the sink
 * that takes the request (it fails with a sentence).
 * @locality any thread. */
RILL_API rill_produce_t *rill_produce_new(const char *topic, int32_t partition, const void *key,
                                          size_t key_len, const void *value, size_t value_len);
/** Add a header (copied). RILL_EINVAL, RILL_ENOMEM or RILL_EKAFKA.
 * @locality any thread. */
RILL_API rill_err_t rill_produce_add_header(rill_produce_t *p, const char *name, const void *value,
                                            size_t value_len);
/** The timestamp in ms since the epoch (default: now). RILL_EINVAL for a
 * NULL request. @locality any thread. */
RILL_API rill_err_t rill_produce_set_timestamp(rill_produce_t *p, int64_t ms);
/** Attach an origin reference (taken): the request stands for it too, and
 * its delivery confirms it. For requests sent with rill_producer_send();
 * stream elements carry theirs already. RILL_EINVAL for a NULL request
 * (the reference is released).
 * @locality any thread. */
RILL_API rill_err_t rill_produce_set_origin(rill_produce_t *p, rill_origin_t *o);
/** Also send the delivery result to `to` as a RILL_MSG_DELIVERY message
 * (payload rill_delivery_t, freed by rill) with this arg; when the mailbox
 * of `to` is full, the result comes through its control queue instead, so
 * none is lost. RILL_EINVAL for a NULL request. @locality any thread. */
RILL_API rill_err_t rill_produce_set_reply(rill_produce_t *p, rill_aid_t to, uint64_t arg);
/** Free a request that was not handed on: its origin is released
 * unconfirmed (the record comes again). The element destructor too. NULL
 * is a no-op. @locality any thread. */
RILL_API void rill_produce_free(void *p);
/** The element carrying p (ownership moves with the element; no origin of
 * its own). @locality any thread. */
RILL_API rill_elem_t rill_produce_elem(rill_produce_t *p);

/** Message type of the delivery results sent with rill_produce_set_reply(). */
#define RILL_MSG_DELIVERY (RILL_MSG_STREAM_LAST + 96)

/** A delivery result: what the sink emits downstream (if anything
 * subscribed to it) and sends to a request's reply address. */
typedef struct rill_delivery {
    char topic[250];         /**< the topic */
    int32_t partition;       /**< the partition */
    int64_t offset;          /**< where it landed; -1 on failure */
    rd_kafka_resp_err_t err; /**< RD_KAFKA_RESP_ERR_NO_ERROR when delivered */
    uint64_t arg;            /**< the request's reply arg */
} rill_delivery_t;

/** @} */

/* ------------------------------------------------------------------ */
/** @name Producer configuration
 * @{ */

/** A producer's configuration: librdkafka's properties and rill's. */
typedef struct rill_producer_conf rill_producer_conf_t;

/** A new configuration: enable.idempotence=true, acks=all, linger.ms=5,
 * partitioner=murmur2_random (a key lands in the partition a Java producer
 * picks). NULL only without memory.
 * @locality any thread. */
RILL_API rill_producer_conf_t *rill_producer_conf_new(void);
/** Free a configuration nobody took. NULL is a no-op.
 * @locality any thread. */
RILL_API void rill_producer_conf_destroy(rill_producer_conf_t *conf);

/**
 * Set a property. rill's own (defaults in brackets):
 *  - rill.max.inflight: requests handed to librdkafka and not yet
 *    delivered, at most: the demand the sink signals upstream [10000]
 *  - rill.topics: the topics it will write to, comma-separated, made known
 *    to the client when it is created; a topic first named after the
 *    client connected waits for librdkafka's next topic scan, up to a
 *    second in 2.0.2, before its first records go out [none]
 *  - rill.flush.timeout.ms: deliver what is in flight at most this long
 *    when the sink stops [5000]
 *  - rill.txn.max.records: a transactional sink commits after this many
 *    records [1000]
 *  - rill.txn.max.ms: ... or this long after its transaction began [100]
 *  - rill.txn.timeout.ms: a transactional call with its retries, and the
 *    wait for a source's offsets, at most this long; then the sink fails
 *    [10000]
 *
 * Every other key goes to librdkafka unchanged and is checked at once.
 * @return RILL_OK, or RILL_EINVAL / RILL_EKAFKA with a sentence in errstr.
 * @locality any thread.
 */
RILL_API rill_err_t rill_producer_conf_set(rill_producer_conf_t *conf, const char *key,
                                           const char *value, char *errstr, size_t errstr_size);

/** @} */

/* ------------------------------------------------------------------ */
/** @name The Kafka sink
 * @{ */

/**
 * A sink stage that produces the request elements it takes (takes conf,
 * also on error), with an optional output: rill_delivery_t elements, one
 * per request, if something subscribes. Each element's origin is
 * confirmed when its record is delivered. A delivery that fails after
 * librdkafka's own retries, or a fatal producer error, fails the stage
 * (its origins are released unconfirmed). When it stops it flushes for at
 * most rill.flush.timeout.ms; what is not delivered then is released
 * unconfirmed. bootstrap.servers is required; the client is made when the
 * stage starts.
 * @locality any thread.
 */
RILL_API rill_stage_t *rill_kafka_sink(rill_producer_conf_t *conf);

/**
 * EXACTLY-ONCE. A transactional sink: produces the request elements it
 * takes inside Kafka transactions, and with each transaction the input
 * offsets of the records they were made from (rd_kafka_send_offsets_to_transaction
 * with the Kafka source's consumer group metadata: EOS v2, KIP-447), so a
 * record's outputs and its consumption are committed together or not at
 * all. Takes conf, also on error; transactional.id and bootstrap.servers
 * are required (transactional.id: unique per running instance, the same
 * after a restart of that instance). Its Kafka source must be set
 * rill.commit=transaction (it then commits nothing itself) and read with
 * isolation.level=read_committed (librdkafka's default; read_uncommitted is
 * refused), as must every consumer of its output.
 *
 * A transaction begins with the first record after the last one ended and
 * is committed after rill.txn.max.records records or rill.txn.max.ms after
 * it began, whichever comes first, when the source's partitions are
 * revoked (before they are released), and when the pipeline stops or
 * drains. To commit, the sink stops producing, waits for its records'
 * deliveries, asks each Kafka source for the offsets to commit (per
 * partition the first record not confirmed: every record before it was
 * delivered in this transaction or an earlier one, or dropped on purpose),
 * sends them and commits (EndTxn). The offsets never pass a record whose
 * output is still on its way, and never stay behind one whose output is in
 * the transaction (the source waits for those confirms).
 *
 * FAILURES, as librdkafka classifies them (rd_kafka_error_t): a retriable
 * error is retried until rill.txn.timeout.ms runs out; an abortable one
 * (txn_requires_abort), a failed delivery, or a source that cannot give
 * its offsets aborts the transaction and rewinds its Kafka sources to
 * their last committed offsets: what was in flight is dropped (counted in
 * txn_stale_dropped), consumed and processed again; the stage goes on. A
 * fatal one (ProducerFenced, InvalidProducerEpoch, a fatal idempotence
 * error) fails the stage: a supervised pipeline restarts with a new
 * producer, whose init_transactions fences the old one and aborts what it
 * left open, and the source goes on from the last committed offsets. A
 * failed or stopped stage aborts its open transaction.
 *
 * Transactional calls block the sink's executor (init_transactions at the
 * start; each commit: one round trip per call, with the flush): give the
 * sink an executor of its own where other actors share it. Stages between
 * the source and the sink may filter, map, batch and fan in; a stage that
 * reorders a partition's records makes commits wait for the earlier ones.
 * @locality any thread.
 */
RILL_API rill_stage_t *rill_kafka_txn_sink(rill_producer_conf_t *conf);

/** What became of one transaction of a transactional sink. */
typedef enum rill_txn_event {
    RILL_TXN_COMMITTED = 1, /**< committed: its records and offsets are in */
    RILL_TXN_ABORTED        /**< aborted: its sources were rewound */
} rill_txn_event_t;

/** A transaction that ended, as told to rill_producer_conf_set_txn_cb()'s callback. */
typedef struct rill_txn_info {
    rill_txn_event_t event; /**< committed or aborted */
    uint64_t seq;           /**< the transaction's number in this sink, from 1 */
    uint64_t records;       /**< records produced in it */
    /** The input offsets sent with it (the next offset to consume, per partition), NULL if
     * none; only during the call. */
    const rd_kafka_topic_partition_list_t *offsets;
    rd_kafka_resp_err_t err; /**< why it was aborted; RD_KAFKA_RESP_ERR_NO_ERROR if committed */
    const char *reason;      /**< a sentence for err ("" if committed) */
} rill_txn_info_t;

/** Called after each transaction ended.
 * @locality the transactional sink's executor. */
typedef void rill_txn_fn(void *opaque, const rill_txn_info_t *info);

/** Observe a transactional sink's transactions. RILL_EINVAL for a NULL conf.
 * @locality any thread. */
RILL_API rill_err_t rill_producer_conf_set_txn_cb(rill_producer_conf_t *conf, rill_txn_fn *fn,
                                                  void *opaque);

/** Run a Kafka sink alone, as a producer actor: rill_stage_spawn() of
 * rill_kafka_sink(conf). Takes conf, also on error.
 * @locality any thread. */
RILL_API rill_err_t rill_producer_spawn(rill_system_t *sys, rill_producer_conf_t *conf,
                                        const rill_stage_opts_t *opts, rill_aid_t *aid,
                                        char *errstr, size_t errstr_size);

/**
 * Send one request to a producer actor directly, outside any stream: for
 * actors that produce as a side effect (replies, audit records, dead
 * letters). It bypasses the stream's demand, so the producer's mailbox is
 * the bound: RILL_EFULL when it is full (and RILL_ESTOPPED, RILL_EINVAL),
 * in which case req stays the caller's. On RILL_OK the producer owns req;
 * its delivery result goes to the request's reply address and origin,
 * never to the producer's stream output. A request librdkafka cannot take
 * is answered with a failed delivery (err set) and its origin released.
 * While librdkafka's queue (queue.buffering.max.messages) is full, up to
 * rill.max.inflight direct sends wait in the producer; past that a send is
 * answered at once with err RD_KAFKA_RESP_ERR__QUEUE_FULL (not produced:
 * send it again later), so direct sends can never crowd out a stream's
 * requests, which always wait instead.
 * @locality any thread.
 */
RILL_API rill_err_t rill_producer_send(rill_system_t *sys, rill_aid_t producer,
                                       rill_produce_t *req);

/** A Kafka sink's counters. */
typedef struct rill_producer_stats {
    uint64_t requested;           /**< requests received */
    uint64_t delivered;           /**< records delivered */
    uint64_t failed;              /**< deliveries that failed */
    uint64_t retried;             /**< requests librdkafka's queue refused for a while */
    uint32_t inflight;            /**< handed to librdkafka, not delivered yet */
    uint32_t inflight_max;        /**< the most ever in flight */
    uint64_t undelivered_at_stop; /**< what the stop's flush could not deliver */
    /** Errors librdkafka reported, retriable ones included (a broker that
     * cannot be reached, all brokers down); the last in last_error. */
    uint64_t errors;
    /** Brokers the client is connected to (a bootstrap connection counts
     * as one until brokers are learned), as of librdkafka's last
     * statistics (once a second unless statistics.interval.ms is set; 0
     * never updates it); 0 at once when librdkafka reports all brokers
     * down. */
    uint32_t brokers_up;
    /** brokers_up > 0: the cluster can be reached, what a readiness probe
     * asks. 0 until the first statistics after the first connection. */
    int connected;
    /** librdkafka's sentence for the last error ("" if none). */
    char last_error[160];
    /** Records delivered: from their hand-off to librdkafka
     * (rd_kafka_producev) to their delivery report (one count per
     * delivered record; failed deliveries are not in it). The hand-off
     * time is read once per actor turn and the report time once per poll
     * of reports, so a reading may be early by up to a turn. */
    rill_hist_t delivery_latency;
    /** 1 for a transactional sink (rill_kafka_txn_sink); the txn_ counters below are its. */
    int transactional;
    uint64_t txn_committed;         /**< transactions committed */
    uint64_t txn_aborted;           /**< transactions aborted (each followed by a rewind) */
    uint64_t txn_retries;           /**< transactional calls retried (retriable errors) */
    uint64_t txn_records_committed; /**< records produced in committed transactions */
    uint64_t txn_records_aborted;   /**< records produced in aborted transactions */
    /** Records dropped unproduced: their input was from before a rewind (an abort, a
     * rebalance), so it is consumed and processed again. */
    uint64_t txn_stale_dropped;
    /** Commits: from the decision to commit (rill.txn.max.records, rill.txn.max.ms, a
     * rebalance, the end) to EndTxn's answer: the deliveries' flush, the source's offsets,
     * AddOffsetsToTxn, TxnOffsetCommit and EndTxn. Committed transactions only. */
    rill_hist_t txn_latency;
} rill_producer_stats_t;

/** A snapshot of a Kafka sink's counters. For one whose stop has finished
 * (rill_alive() returns 0), its final counters, with undelivered_at_stop:
 * the system keeps those of its last 256 stopped sinks (RILL_ESTOPPED for
 * older ones). RILL_EINVAL at once for an actor that is not a Kafka sink.
 * @locality any thread except an executor thread (it asks the actor). */
RILL_API rill_err_t rill_producer_stats(rill_system_t *sys, rill_aid_t producer,
                                        rill_producer_stats_t *out);

/** @} */

#ifdef __cplusplus
}
#endif

#endif /* RILL_KAFKA_H */
