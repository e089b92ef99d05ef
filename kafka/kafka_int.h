/* Internal declarations of the kafka layer (not installed). */
#ifndef RILL_KAFKA_INT_H
#define RILL_KAFKA_INT_H

#include <stddef.h>

#include <librdkafka/rdkafka.h>

#include <rill/actor.h>
#include <rill/kafka.h>

#include "kconf.h"
#include "offsets.h" /* the consumer's offset tracker */

/* Kafka clients need to be told where the cluster is: there is no default
 * (the embedded broker of the testkit is chosen by passing its bootstrap
 * string, never as a silent fallback). */
#define RILL__NO_BOOTSTRAP_TEXT                                                                    \
    "bootstrap.servers is not set: give the cluster's brokers (for an embedded broker, "           \
    "rill_broker_bootstraps() from <rill/testkit.h>)"

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
 * Confirms collected from origins released together (a batch of delivery
 * reports), sent as one message per consumer by rill__confirms_flush.
 * Zero-initialise; single-threaded (the collecting actor's).
 */
typedef struct rill__confirms {
    struct rill__confirm_to *to; /* per consumer */
    size_t n, cap;
} rill__confirms_t;

/* rill_origin_release, with the confirm (if it is the last reference and
 * the origin did not fail) collected into acc instead of sent. */
void rill__origin_release_into(rill_origin_t *o, rill__confirms_t *acc);
/* Send what acc collected (one K_CONFIRM_BATCH per consumer; the control
 * queue if a mailbox is full) and empty it. */
void rill__confirms_flush(rill__confirms_t *acc);
/* Flush, then free acc's memory. */
void rill__confirms_free(rill__confirms_t *acc);

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

#endif /* RILL_KAFKA_INT_H */
