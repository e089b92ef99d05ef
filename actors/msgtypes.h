/*
 * The registry of rill's internal message types: every layer's private
 * types in one enum, so that no number is picked in two places (as
 * librdkafka keeps its ops in rdkafka_op.h). They all live in the range
 * rill reserves below RILL_MSG_USER. The public types in that range are
 * fixed by the public headers; this header includes them only to check,
 * at compile time, that the two never collide.
 *
 * The reserved range, in order:
 *     1..3    actors, public: RILL_MSG_DOWN, RILL_MSG_EXIT, RILL_MSG_ASK_TIMEOUT
 *     4..5    actors, internal: RILL__MSG_SETTLED, RILL__SYNC_ASK_GONE
 *    16..22   streams, public: RILL_STREAM_SUBSCRIBE .. RILL_STREAM_ERROR
 *    23..36   streams, internal: RILL__STREAM_*, RILL__RUN_* (pipeline runs)
 *   128..136  supervision: RILL__SUP_*
 *   191..197  kafka consumer: RILL__CONSUMER_*
 *   207..213  kafka producer: RILL__PRODUCER_*
 *   215..218  kafka stage harness (testkit support): RILL__HARNESS_*
 *   223       kafka, public: RILL_MSG_DELIVERY
 * A new type goes at the end of its layer's block; a new layer gets a
 * block of its own, with its asserts below. (RILL_MSG_DELIVERY is checked
 * where it is defined, in kafka/kafka_int.h: the runtime does not include
 * the Kafka headers.)
 */
#ifndef RILL_MSGTYPES_H
#define RILL_MSGTYPES_H

#include <rill/actor.h>
#include <rill/stream.h>

enum rill__msgtype {
    /* actors: after the public types, before the stream range */
    RILL__MSG_SETTLED = RILL_MSG_ASK_TIMEOUT + 1, /* origins settled: payload rill__settled_t */
    RILL__SYNC_ASK_GONE, /* rill_ask_sync's reply actor: the asked actor ended (ask.c) */
    RILL__ACTORS_LAST = RILL__SYNC_ASK_GONE,

    /* streams (stream_int.h): after the public signals, inside the
     * stream range */
    RILL__STREAM_CONNECT = RILL_STREAM_ERROR + 1, /* subscribe to arg (an aid) */
    RILL__STREAM_STOP_NOW,                        /* cancel, fail downstream, stop */
    RILL__STREAM_DRAIN,                           /* sources: complete now */
    RILL__STREAM_PUMP,                            /* a stage continuing its own work */
    RILL__STREAM_ASYNC_DONE,                      /* a map_async job finished */
    RILL__STREAM_RETRY,                           /* timer: retry a refused NEXT */
    RILL__STREAM_TICK,                            /* timer: kind-specific (arg) */
    RILL__STREAM_FINISH, /* a lingering source: nothing downstream can confirm any more */
    RILL__RUN_GO,        /* a pipeline run: every stage is spawned and connected */
    RILL__RUN_ABORT,     /* a pipeline run: a stage could not be spawned */
    RILL__RUN_FAILED,    /* a pipeline run: a stage failed by itself (payload: text) */
    RILL__RUN_SINK_DONE, /* a pipeline run: the sink ended (payload: its result) */
    RILL__RUN_STOP,      /* a pipeline run: stop (arg 1: drain instead) */
    RILL__RUN_BACKSTOP,  /* a pipeline run: timer: the stop took too long */
    RILL__STREAM_INTERNAL_LAST = RILL__RUN_BACKSTOP,

    /* supervision (supervision/) */
    RILL__SUP_QUERY = RILL_MSG_STREAM_LAST + 1, /* 128 */
    RILL__SUP_START_CHILD,
    RILL__SUP_TERMINATE_CHILD,
    RILL__SUP_STOP,
    RILL__SUP_BACKOFF,    /* timer: arg = child generation */
    RILL__SUP_KILL_TIMER, /* timer: arg = child generation */
    RILL__SUP_REPLY_QUERY,
    RILL__SUP_REPLY_STATUS,
    RILL__SUP_BOOTED, /* a child supervisor's start ended: flags = rill_err_t */
    RILL__SUP_LAST = RILL__SUP_BOOTED,

    /* Kafka consumer (kafka/consumer.c) */
    RILL__CONSUMER_WAKE = RILL_MSG_STREAM_LAST + 64, /* 191: the consumer queue has something */
    RILL__CONSUMER_CONFIRM_UPTO,                     /* arg = offset, corr = partition id */
    RILL__CONSUMER_TICK,                             /* repeating timer */
    RILL__CONSUMER_STATS,                            /* ask: reply with a rill_consumer_stats_t */
    RILL__CONSUMER_IDLE_COMMIT,                      /* one-shot timer: see idle_commit() */
    RILL__CONSUMER_START,                            /* a later start (source_later.c) */
    RILL__CONSUMER_TXN, /* from a transactional sink: arg = RILL__TXN_* (kafka/txn.h) */
    RILL__CONSUMER_LAST = RILL__CONSUMER_TXN,

    /* Kafka producer (kafka/producer.c) */
    RILL__PRODUCER_WAKE = RILL_MSG_STREAM_LAST + 80, /* 207: the main queue has delivery reports */
    RILL__PRODUCER_TICK,
    RILL__PRODUCER_STATS,
    RILL__PRODUCER_SEND,       /* a request sent directly (rill_producer_send) */
    RILL__PRODUCER_TEST_FATAL, /* rill__producer_test_fatal: arg = error code, payload = reason */
    RILL__PRODUCER_CONF_GET,   /* rill__producer_conf_get: payload = key; reply: arg, payload */
    RILL__PRODUCER_TXN,        /* from a Kafka source: arg = RILL__TXN_* (kafka/txn.h) */
    RILL__PRODUCER_LAST = RILL__PRODUCER_TXN,

    /* The stage harness (kafka/harness.c), test support in librill */
    RILL__HARNESS_PUSH = RILL_MSG_STREAM_LAST + 88, /* 215: payload a fake record, with origin */
    RILL__HARNESS_START,                            /* arg = the stage under test's aid */
    RILL__HARNESS_COMPLETE,                         /* the test completes the input */
    RILL__HARNESS_FLUSHED, /* to itself: the notices before the stage's end are in */
    RILL__HARNESS_LAST = RILL__HARNESS_FLUSHED,
};

/* The blocks are in order and apart, and none meets a public type (the
 * enums differ: compared as ints). */
#define RILL__MSGTYPE_BEFORE(a, b) ((int)(a) < (int)(b))
_Static_assert(RILL__MSGTYPE_BEFORE(RILL_MSG_NONE, RILL_MSG_DOWN) &&
                   RILL__MSGTYPE_BEFORE(RILL_MSG_DOWN, RILL_MSG_EXIT) &&
                   RILL__MSGTYPE_BEFORE(RILL_MSG_EXIT, RILL_MSG_ASK_TIMEOUT) &&
                   RILL__MSGTYPE_BEFORE(RILL_MSG_ASK_TIMEOUT, RILL_MSG_STREAM_FIRST),
               "the actors' public types come before the stream range");
_Static_assert(RILL__MSGTYPE_BEFORE(RILL__ACTORS_LAST, RILL_MSG_STREAM_FIRST),
               "the actors' internal types come before the stream range");
_Static_assert((int)RILL_STREAM_SUBSCRIBE == (int)RILL_MSG_STREAM_FIRST &&
                   RILL__MSGTYPE_BEFORE(RILL_STREAM_ERROR, RILL__STREAM_CONNECT),
               "internal stream signals follow the public ones");
_Static_assert(!RILL__MSGTYPE_BEFORE(RILL_MSG_STREAM_LAST, RILL__STREAM_INTERNAL_LAST),
               "internal stream signals stay in the stream range");
_Static_assert(RILL__MSGTYPE_BEFORE(RILL_MSG_STREAM_LAST, RILL__SUP_QUERY),
               "supervision's types come after the stream range");
_Static_assert(RILL__MSGTYPE_BEFORE(RILL__SUP_LAST, RILL__CONSUMER_WAKE),
               "the consumer's types come after supervision's");
_Static_assert(RILL__MSGTYPE_BEFORE(RILL__CONSUMER_LAST, RILL__PRODUCER_WAKE),
               "the producer's types come after the consumer's");
_Static_assert(RILL__MSGTYPE_BEFORE(RILL__PRODUCER_LAST, RILL__HARNESS_PUSH),
               "the stage harness's types come after the producer's");
_Static_assert(RILL__MSGTYPE_BEFORE(RILL__HARNESS_LAST, RILL_MSG_USER),
               "every rill type stays below RILL_MSG_USER");

#endif /* RILL_MSGTYPES_H */
