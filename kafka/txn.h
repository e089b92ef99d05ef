/*
 * Exactly-once: the protocol between a transactional sink (txn.c) and
 * the Kafka sources whose records it produces (source_txn.c), not
 * installed. See rill_kafka_txn_sink() in include/rill/kafka.h.
 *
 * The sink owns the transaction; each source owns its offsets. Messages
 * (all sent with rill_signal, so a full mailbox never refuses one; each
 * side waits for at most one answer of each kind at a time):
 *
 *   sink -> source  RILL__CONSUMER_TXN
 *     JOIN     corr = the sink: "I produce your records in transactions".
 *              A source not set rill.commit=transaction, or one that has
 *              another sink, answers REFUSED.
 *     OFFSETS  payload rill__txn_ask_t: "the offsets to commit, once every
 *              partition named is confirmed at least up to its offset"
 *              (the records the transaction holds). The source answers
 *              when that holds, or with an error when it cannot (a
 *              partition was released, its time ran out).
 *     END      payload rill__txn_end_t: the transaction committed (the
 *              source takes the offsets it answered as committed) or
 *              aborted (it rewinds: see below). After an abort, and after
 *              a BARRIER, the source answers FLOOR.
 *     LEAVE    corr = the sink: it ended (its last transaction is over); a
 *              source lingering at the end of its run ends now.
 *
 *   source -> sink  RILL__PRODUCER_TXN
 *     REFUSED  payload a sentence: the sink fails with it.
 *     ANSWER   payload rill__txn_answer_t: the offsets and the consumer
 *              group metadata, or an error.
 *     BARRIER  corr = the source: its partitions are being revoked;
 *              commit (or abort) now, then wait for its FLOOR before
 *              producing anything more. It releases them after the END.
 *     FLOOR    payload rill__txn_floor_t: the source rewound every
 *              partition it kept to its last committed offset and gave
 *              each a new assignment id; records whose id is of an
 *              older generation are stale: the sink drops them.
 *
 * Rewind. Every assigned partition is tracked anew (a new id, so that the
 * confirms of what was out are fenced) and sought back to the offset the
 * last committed transaction left it at (or where this run started it),
 * and the buffer is dropped.
 */
#ifndef RILL_KAFKA_TXN_H
#define RILL_KAFKA_TXN_H

#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include <rill/actor.h>

#include "offsets.h" /* partition ids and their generations */

/* The sub-types, in msg.arg. */
enum {
    RILL__TXN_JOIN = 1,
    RILL__TXN_OFFSETS,
    RILL__TXN_END,
    RILL__TXN_LEAVE,
    RILL__TXN_REFUSED,
    RILL__TXN_ANSWER,
    RILL__TXN_BARRIER,
    RILL__TXN_FLOOR
};

typedef struct rill__txn_need {
    uint64_t key; /* the partition's assignment id */
    int64_t upto; /* confirmed at least up to here (the highest offset produced + 1) */
} rill__txn_need_t;

typedef struct rill__txn_ask {
    rill_aid_t sink;
    uint64_t seq; /* the transaction */
    uint32_t n;
    rill__txn_need_t v[];
} rill__txn_ask_t;

typedef struct rill__txn_answer {
    rill_aid_t source;
    uint64_t seq;
    int err;                                  /* 0, or the source cannot give offsets: why */
    char reason[160];                         /* for err */
    rd_kafka_topic_partition_list_t *offsets; /* NULL: nothing to commit */
    rd_kafka_consumer_group_metadata_t *cgmd; /* NULL with err */
} rill__txn_answer_t;
void rill__txn_answer_free(void *p);

typedef struct rill__txn_end {
    uint64_t seq;
    int committed; /* 1 committed, 0 aborted */
    int involved;  /* the source had records in it (an abort rewinds it) */
} rill__txn_end_t;

typedef struct rill__txn_floor {
    rill_aid_t source;
    uint64_t floor; /* records of generations below are stale */
} rill__txn_floor_t;

/* Send one of these messages (type RILL__CONSUMER_TXN or
 * RILL__PRODUCER_TXN, sub-type sub, from the actor `from`); a receiver
 * that is gone has nothing to commit or rewind: the payload is freed. */
static inline void rill__txn_send(rill_system_t *sys, rill_aid_t to, uint32_t type, int sub,
                                  rill_aid_t from, void *payload, void (*dtor)(void *))
{
    rill_msg_t m = {
        .type = type, .arg = (uint64_t)sub, .corr = from.id, .payload = payload, .dtor = dtor};
    if (rill_signal(sys, to, &m) != RILL_OK && dtor)
        dtor(payload);
}

#endif /* RILL_KAFKA_TXN_H */
