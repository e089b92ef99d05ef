/* Internal declarations of the kafka layer (not installed). */
#ifndef RILL_KAFKA_INT_H
#define RILL_KAFKA_INT_H

#include <stddef.h>

#include <librdkafka/rdkafka.h>

#include <rill/actor.h>
#include <rill/kafka.h>

#include "../actors/seam.h"
#include "kconf.h"
#include "offsets.h" /* the consumer's offset tracker */

_Static_assert((int)RILL__PRODUCER_LAST < (int)RILL_MSG_DELIVERY &&
                   (int)RILL__HARNESS_LAST < (int)RILL_MSG_DELIVERY &&
                   (int)RILL_MSG_DELIVERY < (int)RILL_MSG_USER,
               "RILL_MSG_DELIVERY (public) comes after the registry's producer block");

/* Kafka clients need to be told where the cluster is: there is no default
 * (the embedded broker of the testkit is chosen by passing its bootstrap
 * string, never as a silent fallback). */
#define RILL__NO_BOOTSTRAP_TEXT                                                                    \
    "bootstrap.servers is not set: give the cluster's brokers (for an embedded broker, "           \
    "rill_broker_bootstraps() from <rill/testkit.h>)"

/* ------------------------------------------------------------------ */
/* Produce requests (request.c), read by the producer (producer.c)     */
/* ------------------------------------------------------------------ */

struct rill_produce {
    char *topic;
    int32_t partition;
    void *key;
    size_t key_len;
    void *value;
    size_t value_len;
    int has_value;
    rd_kafka_headers_t *headers;
    int64_t timestamp;
    rill_origin_t *origin;
    rill_aid_t reply_to;
    uint64_t reply_arg;
    int direct; /* sent with rill_producer_send: no result downstream */
    /* When it was handed to librdkafka (rill__turn_now_ns), for the
     * delivery latency; 0: not handed over. */
    int64_t handoff_ns;
    char *bad;   /* why it cannot be produced (bad arguments), or NULL */
    char data[]; /* topic, key, value (produce_alloc) */
};

/* ------------------------------------------------------------------ */
/* The transactional sink's transactions (txn.c)                       */
/* ------------------------------------------------------------------ */

typedef struct rill__txn rill__txn_t;
struct rill__stage;
/* NULL without memory. conf is the sink's (it outlives the txn). */
rill__txn_t *rill__txn_new(const rill_producer_conf_t *conf);
/* init_transactions (blocking, retried): 0, or -1 after failing st.
 * inflight: the sink's count of records not delivered yet. */
int rill__txn_start(rill__txn_t *t, struct rill__stage *st, rd_kafka_t *rk,
                    rill_producer_stats_t *stats, const uint32_t *inflight);
/* Before a request is produced: 1 produce it (a transaction is open), 0
 * hold it (a commit or a rewind is under way), -1 it was dropped (stale:
 * from before a rewind) or the stage failed; req is freed then. */
int rill__txn_admit(rill__txn_t *t, rill_produce_t *req);
/* After librdkafka took it: its records count in the transaction. */
void rill__txn_produced(rill__txn_t *t, rill_produce_t *req);
/* A delivery failed, or a produce said the transaction needs an abort. */
void rill__txn_delivery_failed(rill__txn_t *t, rd_kafka_resp_err_t err);
/* Commit when due, drive the commit and the rewinds (final: upstream
 * ended). 1 when nothing is open or waited for. */
int rill__txn_pump(rill__txn_t *t, int final);
/* A RILL__PRODUCER_TXN message from a source. */
void rill__txn_msg(rill__txn_t *t, rill_msg_t *m);
/* Abort what is open (the stage stops) and free. NULL is a no-op. */
void rill__txn_free(rill__txn_t *t);

/* ------------------------------------------------------------------ */
/* Configuration (conf.c)                                              */
/* ------------------------------------------------------------------ */

/* rill's own settings of a client; the table (rill__kprops) says which
 * apply to consumers and which to producers. */
typedef struct rill__kopts {
    /* consumer */
    uint32_t commit_interval_ms, commit_count, drain_ms, shutdown_ms;
    uint32_t unconfirmed_timeout_ms, max_redeliveries, max_failures;
    uint32_t buffer_high, buffer_low, max_unconfirmed, pause_after_ms, restart_keep_ms;
    int commit, commit_set;
    int txn; /* rill.commit=transaction: the offsets go in a transactional sink's transactions */
    char *dlq_topic;
    char *dlq_producer; /* name of the producer actor for dead letters */
    /* producer */
    uint32_t max_inflight, flush_ms;
    uint32_t txn_records, txn_ms, txn_timeout_ms; /* rill.txn.* (the transactional sink) */
    char *topics;                                 /* rill.topics: names, comma-separated */
} rill__kopts_t;

enum { RILL__KP_CONSUMER = 1, RILL__KP_PRODUCER = 2 };
typedef enum {
    RILL__KP_U32,
    RILL__KP_BOOL,
    RILL__KP_TOPIC,
    RILL__KP_TOPICS, /* a comma-separated list of topic names */
    RILL__KP_NAME
} rill__kptype_t;

/* One rill.* property: the table in conf.c. */
typedef struct rill__kprop {
    const char *name;
    unsigned scope; /* RILL__KP_CONSUMER | RILL__KP_PRODUCER */
    rill__kptype_t type;
    uint32_t min, max; /* U32 */
    const char *def;   /* the default as text; NULL = none */
    size_t offset;     /* of the field in rill__kopts_t */
    const char *doc;
} rill__kprop_t;

/* Errors only (level 3 and more urgent) from librdkafka's log, unless the
 * application set "debug": then librdkafka's own logger prints it all. */
void rill__kafka_quiet_log(rd_kafka_conf_t *kc);
/* The name at the start of a comma-separated topic list, into name (size
 * bytes, cut to fit); where the next name starts, or NULL after the last. */
const char *rill__topics_next(const char *list, char *name, size_t size);

/* ------------------------------------------------------------------ */
/* A client's view of its cluster (health.c)                           */
/* ------------------------------------------------------------------ */

/* One partition in a consumer's last statistics (offsets -1: unknown). */
typedef struct rill__kpstat {
    char topic[128];
    int32_t partition;
    int64_t end_offset;       /* hi_offset (read_committed: ls_offset) */
    int64_t log_start_offset; /* lo_offset */
    int64_t committed_offset; /* committed_offset */
    int64_t position;         /* app_offset */
} rill__kpstat_t;

typedef struct rill__khealth {
    uint64_t errors;      /* error events librdkafka reported */
    uint32_t brokers_up;  /* brokers UP in the last statistics (0 after all down) */
    int connected_once;   /* a broker was UP at some point */
    char last_error[160]; /* the last error's sentence */
    /* Consumers (want_parts): every partition of the last statistics,
     * sorted by topic and partition, and when librdkafka took them
     * (rill__now_ms() time; 0: never). */
    int want_parts, read_committed;
    rill__kpstat_t *parts;
    size_t n_parts, cap_parts;
    int64_t parts_at_ms;
} rill__khealth_t;

/* Ask for statistics once a second (unless the application set
 * statistics.interval.ms, 0 included) and route them to stats_cb. */
void rill__khealth_conf(rd_kafka_conf_t *kc, int app_set_interval,
                        int (*stats_cb)(rd_kafka_t *, char *, size_t, void *));
/* enable.metrics.push=false unless the application set it (app_set):
 * librdkafka 2.5-2.8's destroy can wait a second for its telemetry
 * (health.c says why); a no-op before 2.5, which lacks the property. */
void rill__kclient_telemetry_default(rd_kafka_conf_t *kc, int app_set);
/* An error event; a statistics JSON (parsed once: brokers, and for a
 * consumer its partitions). */
void rill__khealth_error(rill__khealth_t *h, rd_kafka_resp_err_t err, const char *text);
void rill__khealth_stats(rill__khealth_t *h, const char *json, size_t len);
/* h serves consumer rk: keep its partitions from the statistics. */
void rill__khealth_consumer(rill__khealth_t *h, rd_kafka_t *rk);
/* A partition of the last statistics, or NULL. */
const rill__kpstat_t *rill__khealth_partition(const rill__khealth_t *h, const char *topic,
                                              int32_t partition);
/* Free what h holds (h stays usable). */
void rill__khealth_free(rill__khealth_t *h);

/* The table of rill.* properties, n entries. */
const rill__kprop_t *rill__kprops(size_t *n);
/* The defaults of scope. */
void rill__kopts_init(rill__kopts_t *o, unsigned scope);
/* Set rill.* key (RILL_EINVAL with a sentence for an unknown key, one of
 * the other scope, or a bad value). */
rill_err_t rill__kopts_set(rill__kopts_t *o, unsigned scope, const char *key, const char *value,
                           char *errstr, size_t errstr_size);
void rill__kopts_free(rill__kopts_t *o);

struct rill_consumer_conf {
    rd_kafka_conf_t *kconf;
    rill__kopts_t o;
    int have_bootstrap, have_group;
    int have_queue_kbytes;   /* the application set queued.max.messages.kbytes */
    int have_stats_interval; /* the application set statistics.interval.ms */
    char **topics;
    size_t n_topics;
    rd_kafka_topic_partition_list_t *fixed;
    rill_assigned_fn *assigned_cb;
    void *assigned_opaque;
    rill_rebalance_fn *rebalance_cb;
    void *rebalance_opaque;
    rill_partition_end_fn *end_cb;
    void *end_opaque;
    rill_commit_fn *commit_cb;
    void *commit_opaque;
    /* The librdkafka keys the application set, in the order first set:
     * what a dead-letter producer of the consumer's own inherits. */
    char **client_keys;
    size_t n_client_keys;
};

struct rill_producer_conf {
    rd_kafka_conf_t *kconf;
    rill__kopts_t o;
    int have_bootstrap;
    int have_stats_interval; /* the application set statistics.interval.ms */
    int have_metrics_push;   /* the application set enable.metrics.push */
    rill_txn_fn *txn_cb;     /* the transactional sink's observer */
    void *txn_opaque;
};

/* What a consumer needs before a client can be made: a subscription or
 * partitions, group.id where needed, bootstrap.servers, sane buffers. */
rill_err_t rill__consumer_conf_check(const rill_consumer_conf_t *c, char *errstr,
                                     size_t errstr_size);
/* Whether the librdkafka running has fetch.queue.backoff.ms (2.2.0 and
 * its pre-releases; rd_kafka_version() is 0xMMmmrrpp): before it, a queue
 * past its limits is fetched again only after a fixed second
 * (confluentinc/librdkafka#2879). rill's prefetch defaults and the source's
 * fetcher nudge both follow it. */
static inline int rill__has_fetch_queue_backoff(void)
{
    return rd_kafka_version() >= 0x02020000;
}

/* Whether the application set librdkafka property `key` on c. */
int rill__consumer_key_set(const rill_consumer_conf_t *c, const char *key);
/* rill's prefetch defaults on the client's conf kc, for what the
 * application left unset (see conf.c): queued.max.messages.kbytes, and
 * fetch.queue.backoff.ms where librdkafka has it (>= 2.2.0). */
rill_err_t rill__consumer_fetch_defaults(const rill_consumer_conf_t *c, rd_kafka_conf_t *kc,
                                         char *errstr, size_t errstr_size);
/* Deep copies, for the runs of a blueprint. NULL without memory. */
rill_consumer_conf_t *rill__consumer_conf_dup(const rill_consumer_conf_t *c);
rill_producer_conf_t *rill__producer_conf_dup(const rill_producer_conf_t *c);

/* ------------------------------------------------------------------ */
/* Records (record.c)                                                  */
/* ------------------------------------------------------------------ */

/* The client a consumer's records come from: records may outlive the run
 * that polled them, so the client goes with the last reference (the
 * session's and one per record). */
typedef struct rill__khandle {
    rd_kafka_t *rk; /* set once the client exists */
    _Atomic long refs;
    /* A close that did not finish in time (its queue), for the reaper to
     * finish; NULL once closed. Set before the session's reference goes. */
    rd_kafka_queue_t *close_q;
    /* cooperative-sticky on a librdkafka that may abort destroying a
     * member never assigned anything (rill__kafka_sticky_safe), and
     * whether it was (written by whoever serves the client's rebalances,
     * read by the last release) */
    int sticky_unsafe, assigned_once;
} rill__khandle_t;

/* One reference; NULL without memory. */
rill__khandle_t *rill__khandle_new(void);
/* n references at once (a consumer takes them in bulk, one per record it
 * polls, so that its executor does not bounce the count's cache line with
 * the ones releasing records on every record); n given back at once. */
void rill__khandle_ref_n(rill__khandle_t *h, long n);
void rill__khandle_unref_n(rill__khandle_t *h, long n);
/* The last reference destroys the client through the reaper (without a
 * consumer close: the session closed it already, or the reaper finishes
 * that close). NULL is a no-op. */
void rill__khandle_unref(rill__khandle_t *h);
/* The destructor of a record element: releases the message and its
 * reference of the handle (found through the topic's opaque). */
void rill__record_free(void *payload);

/* ------------------------------------------------------------------ */
/* A consumer's client session, and parking it (session.c)             */
/* ------------------------------------------------------------------ */

typedef struct rill__ksession rill__ksession_t;
typedef struct rill__kholder rill__kholder_t;

/* What the session's owner (the consumer actor serving it) is told; a
 * parked session's keeper handles rebalances itself. */
typedef struct rill__ksession_ops {
    void (*rebalance)(void *owner, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *parts);
    void (*commit)(void *owner, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *offsets);
    /* The revoke of rill__ksession_close: tell the application, commit
     * now (not if lost), at most until deadline_ms. */
    void (*final_revoke)(void *owner, rd_kafka_topic_partition_list_t *parts, int lost,
                         int64_t deadline_ms);
    /* An error event (counted in the session's health already). */
    void (*error)(void *owner, rd_kafka_resp_err_t err, const char *reason);
} rill__ksession_ops_t;

/* A new client for c (rill's forced settings applied, callbacks routed to
 * the owner), not yet subscribed. NULL with a sentence. */
rill__ksession_t *rill__ksession_new(const rill_consumer_conf_t *c, char *errstr,
                                     size_t errstr_size);
rd_kafka_t *rill__ksession_rk(const rill__ksession_t *s);
rd_kafka_queue_t *rill__ksession_queue(const rill__ksession_t *s);
rill__khandle_t *rill__ksession_handle(const rill__ksession_t *s);
/* What the client saw of its cluster (errors, brokers up), across runs. */
rill__khealth_t *rill__ksession_health(rill__ksession_t *s);
/* Subscribed (or assigned) by an earlier run, which parked it. */
int rill__ksession_reused(const rill__ksession_t *s);
/* Where an earlier run left each of its partitions (offset of the first
 * record not confirmed), or NULL. */
const rd_kafka_topic_partition_list_t *rill__ksession_resume(const rill__ksession_t *s);
void rill__ksession_set_owner(rill__ksession_t *s, const rill__ksession_ops_t *ops, void *owner);
/* Leave the group (final revoke to the owner) and free the session, at
 * most until deadline_ms. */
void rill__ksession_close(rill__ksession_t *s, int64_t deadline_ms);
/* (reaper.c) Destroy rk on a thread of its own: first finishing the close on
 * close_q (taken) if not NULL; a closed client's destroy is waited for a
 * bounded time, a half-closed client is abandoned, never destroyed, if it
 * does not close within a minute (librdkafka 2.0.2 would spin forever);
 * with never_assigned_sticky, abandoned at once (its destroy could abort).
 * Any thread that is not librdkafka's. */
void rill__kclient_reap(rd_kafka_t *rk, rd_kafka_queue_t *close_q, int never_assigned_sticky);
/* The librdkafka from which cooperative-sticky members can be destroyed
 * before their first assignment (librdkafka #4312, fixed in 2.3.0). */
#define RILL__STICKY_SAFE_VERSION 0x02030000
/* Non-zero if the librdkafka running is at least that one. */
int rill__kafka_sticky_safe(void);
/* Free without closing (the client goes with the last record). */
void rill__ksession_free(rill__ksession_t *s);
/* Park s in h for the blueprint's next run (paused, served by a keeper
 * actor, closed after keep_ms or when h is retired); resume (taken; NULL
 * keeps the one it has) says where each partition goes on. keep_ms 0
 * closes at once. */
rill_err_t rill__ksession_park(rill__ksession_t *s, rill__kholder_t *h, rill_system_t *sys,
                               uint32_t keep_ms, uint32_t close_ms,
                               rd_kafka_topic_partition_list_t *resume);
/* Non-zero if rk's group uses the cooperative protocol. */
int rill__kafka_cooperative(rd_kafka_t *rk);
/* Take parts into rk's assignment, or let them go, the way its protocol
 * wants: incrementally (cooperative) or as a whole (eager: assign parts,
 * or nothing). The take's error, if any (cooperative only: an eager
 * rd_kafka_assign of a list librdkafka handed out fails only on bad
 * arguments), is the caller's to destroy. */
rd_kafka_error_t *rill__kafka_take(rd_kafka_t *rk, const rd_kafka_topic_partition_list_t *parts);
void rill__kafka_let_go(rd_kafka_t *rk, const rd_kafka_topic_partition_list_t *parts);

/* A record processing failed on (a stage failed while it held it, or it
 * was sent back for a retry, or rejected), as its blueprint's runs count
 * it: by topic, partition and offset, so that the count survives the
 * restarts the failures cause. */
typedef struct rill__kfail {
    char *topic;
    int32_t partition;
    int64_t offset;
    uint32_t failures;
    int rejected; /* straight to the dead letters */
    char *why;    /* the last failure's text */
} rill__kfail_t;
/* The most records a holder counts (more are counted as failing once). */
#define RILL__KFAIL_MAX 10000

/* One more failure of a record (rejected: it was rejected), with its
 * text: the count now. */
uint32_t rill__kholder_failed(rill__kholder_t *h, const char *topic, int32_t partition,
                              int64_t offset, int rejected, const char *why);
/* The failures counted for a record (0 if none), whether it was
 * rejected, and the last text into why (size bytes). */
uint32_t rill__kholder_failures(rill__kholder_t *h, const char *topic, int32_t partition,
                                int64_t offset, int *rejected, char *why, size_t size);
/* Forget the records of topic/partition (every partition: topic NULL) at
 * offsets in [from, to). */
void rill__kholder_forget(rill__kholder_t *h, const char *topic, int32_t partition, int64_t from,
                          int64_t to);

/* What a run leaves its blueprint's next run, per partition: the records
 * it confirmed after the first one it did not (offsets ascending, taken),
 * which the next run, reading the partition again from that first one,
 * confirms without processing them again. Merged with what an earlier run
 * left that this one did not reach. */
void rill__kholder_set_ahead(rill__kholder_t *h, const char *topic, int32_t partition,
                             int64_t *offsets, size_t n);
/* 1 if a previous run confirmed this record ahead (and forgets it). The
 * partition's list goes once a record past its last one is asked for. */
int rill__kholder_take_ahead(rill__kholder_t *h, const char *topic, int32_t partition,
                             int64_t offset);

/* The holder a blueprint and its copies share. */
rill__kholder_t *rill__kholder_new(void);
rill__kholder_t *rill__kholder_ref(rill__kholder_t *h);
void rill__kholder_unref(rill__kholder_t *h);
/* The parked session, taken (NULL if none). */
rill__ksession_t *rill__kholder_take(rill__kholder_t *h);
/* Close what is parked (the blueprint is done). */
void rill__kholder_retire(rill__kholder_t *h);

/* ------------------------------------------------------------------ */
/* Dead letters (dead_letter.c)                                        */
/* ------------------------------------------------------------------ */

/* A dead letter on its way: the delivery result names it by seq. */
typedef struct rill__dlq_ref {
    uint64_t seq;
    uint64_t part_id;
    int64_t offset;
} rill__dlq_ref_t;

/* A consumer's dead-letter route: the topic, and the producer actor that
 * sends to it (one the consumer started, or one found by name). */
typedef struct rill__dlq {
    const char *topic;    /* the conf's; NULL: no dead letters */
    const char *producer; /* the conf's rill.dead.letter.producer, or NULL */
    rill_aid_t own;       /* the producer the consumer started */
    rill__dlq_ref_t *refs;
    size_t n_refs, cap_refs;
    uint64_t seq;
} rill__dlq_t;

/* Set up d for c; with a topic and no producer named, start a producer of
 * the consumer's own (every client property of c that is not
 * consumer-only, transactional.id excepted). */
rill_err_t rill__dlq_init(rill__dlq_t *d, rill_system_t *sys, const rill_consumer_conf_t *c,
                          char *errstr, size_t errstr_size);
/* Send record m (from partition part_id) to the dead-letter topic, with
 * why in its rill-error header, the delivery result to `reply_to`. 0, or -1 if
 * the producer could not take it. */
int rill__dlq_send(rill__dlq_t *d, rill_system_t *sys, rill_aid_t reply_to,
                   const rd_kafka_message_t *m, uint64_t part_id, const char *why);
/* The dead letter a RILL_MSG_DELIVERY with this seq answers: 1 with *ref
 * (forgotten here), 0 if it is not one of ours. */
int rill__dlq_answer(rill__dlq_t *d, uint64_t seq, rill__dlq_ref_t *ref);
/* Stop the producer of our own (it flushes) and free d. */
void rill__dlq_free(rill__dlq_t *d, rill_system_t *sys);

/*
 * A librdkafka queue wired into an actor's event loop: the queue writes a
 * byte to a non-blocking pipe when it goes from empty to non-empty
 * (rd_kafka_queue_io_event_enable), an ev_io watcher on the actor's
 * executor drains the pipe and sends the actor one signal of type
 * `signal_type` (at most one outstanding: the actor calls
 * rill__kq_woken() when it handles it, then drains the queue).
 */
struct ev_loop;
typedef struct rill__kq {
    rd_kafka_queue_t *q; /* not owned */
    int pipe_r, pipe_w;
    void *io; /* ev_io, allocated */
    struct ev_loop *loop;
    int pending;
    rill_system_t *sys;
    rill_aid_t actor;
    uint32_t signal_type;
} rill__kq_t;

struct rill_ctx;
/* Start watching q for the calling actor (actor context). Returns RILL_OK
 * or RILL_EIO. */
rill_err_t rill__kq_start(rill__kq_t *kq, struct rill_ctx *ctx, rd_kafka_queue_t *q,
                          uint32_t signal_type);
/* The actor handled the signal: the next wakeup may signal again. */
void rill__kq_woken(rill__kq_t *kq);
/* Stop watching and close the pipe (actor context; no-op if not started). */
void rill__kq_stop(rill__kq_t *kq);

/*
 * For tests: raise a fabricated fatal librdkafka error (with
 * rd_kafka_test_fatal_error) in the producer actor's client, from inside
 * the actor, which then fails as on a real fatal error. Returns
 * rill_signal()'s result.
 * @locality any thread.
 */
rill_err_t rill__producer_test_fatal(rill_system_t *sys, rill_aid_t producer,
                                     rd_kafka_resp_err_t err, const char *reason);

/*
 * For tests: the value of librdkafka property `key` in the producer
 * actor's client (rd_kafka_conf_get on its handle's rd_kafka_conf(), read
 * inside the actor), NUL-terminated into value (size bytes, truncated to
 * fit). RILL_OK, RILL_ENOENT (librdkafka has no such property, or it has
 * no value), or rill_ask_sync()'s error.
 * @locality any thread except an executor thread.
 */
rill_err_t rill__producer_conf_get(rill_system_t *sys, rill_aid_t producer, const char *key,
                                   char *value, size_t size);

/*
 * For tests: the dead-letter producer the consumer started itself
 * (rill.dead.letter.topic without rill.dead.letter.producer), or
 * RILL_AID_NONE, into *producer. RILL_OK or rill_ask_sync()'s error.
 * @locality any thread except an executor thread.
 */
rill_err_t rill__consumer_dlq_producer(rill_system_t *sys, rill_aid_t consumer,
                                       rill_aid_t *producer);

/*
 * For tests: raise a fatal librdkafka error (rd_kafka_test_fatal_error,
 * code err) in the consumer actor's client, from inside the actor; the
 * error reaches the consumer as librdkafka reports a real one. Returns
 * rill_tell()'s result, RILL_EINVAL for an actor that is not a consumer.
 * @locality any thread.
 */
rill_err_t rill__consumer_test_fatal(rill_system_t *sys, rill_aid_t consumer,
                                     rd_kafka_resp_err_t err);

#endif /* RILL_KAFKA_INT_H */
