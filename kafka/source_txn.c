/*
 * A Kafka source set rill.commit=transaction: its side of the protocol
 * with the transactional sink that produces its records (txn.h). It
 * commits nothing itself: it answers the sink's requests for offsets,
 * takes the offsets of a committed transaction as committed, and rewinds
 * to them after an abort and around a rebalance.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "source.h"
#include "txn.h"

static void send_sink(ksrc_t *k, rill_aid_t to, int sub, void *payload, void (*dtor)(void *))
{
    rill__txn_send(k->sys, to, RILL__PRODUCER_TXN, sub, k->st->self, payload, dtor);
}

static void send_floor(ksrc_t *k)
{
    if (rill_aid_is_none(k->txn_sink) || k->closing)
        return;
    rill__txn_floor_t *f = malloc(sizeof(*f));
    if (!f)
        return; /* the sink's wait runs out: it fails, and the pipeline restarts */
    *f = (rill__txn_floor_t){.source = k->st->self, .floor = k->txn_floor};
    send_sink(k, k->txn_sink, RILL__TXN_FLOOR, f, free);
}

static void refuse(ksrc_t *k, rill_aid_t sink, const char *why)
{
    char *text = strdup(why);
    if (text)
        send_sink(k, sink, RILL__TXN_REFUSED, text, free);
}

/* ------------------------------------------------------------------ */
/* Rewind                                                              */
/* ------------------------------------------------------------------ */

/* Track every partition not being revoked anew (a new id: what was out is
 * fenced) and seek it back to its base: the last committed transaction's
 * offset, or where this assignment started. The buffer goes first (its
 * records carry the old ids). Then the sink hears the new floor: records
 * of older generations are stale. */
static void rewind_kept(ksrc_t *k)
{
    rill__ksrc_drop_buffer(k);
    k->last_hit = NULL;
    k->txn_floor = rill__tracker_gen_floor(&k->tr);
    rd_kafka_topic_partition_list_t *seek = rd_kafka_topic_partition_list_new(8);
    if (!seek) {
        rill__stage_fail(k->st, RILL_ENOMEM, "out of memory rewinding to the last transaction");
        return;
    }
    for (rill__tpart_t *p = rill__tracker_next(&k->tr, NULL); p;
         p = rill__tracker_next(&k->tr, p)) {
        if (p->revoking)
            continue;
        int64_t to = p->txn_has_base ? p->txn_base : p->dropped ? p->dropped_from : -1;
        rill__tracker_renew(&k->tr, p);
        if (to >= 0) {
            p->txn_has_base = 1;
            p->txn_base = to;
            rd_kafka_topic_partition_list_add(seek, p->topic, p->partition)->offset = to;
        }
    }
    if (seek->cnt) {
        rd_kafka_error_t *e = rd_kafka_seek_partitions(k->rk, seek, 0);
        if (e) {
            rill__stage_fail(k->st, RILL_EKAFKA, "rewinding to the last transaction: %s",
                             rd_kafka_error_string(e));
            rd_kafka_error_destroy(e);
        }
        for (int i = 0; i < seek->cnt; i++)
            if (seek->elems[i].err && seek->elems[i].err != RD_KAFKA_RESP_ERR__IN_PROGRESS)
                rill__stage_fail(k->st, RILL_EKAFKA, "rewinding %s [%d] to %" PRId64 ": %s",
                                 seek->elems[i].topic, (int)seek->elems[i].partition,
                                 seek->elems[i].offset, rd_kafka_err2str(seek->elems[i].err));
    }
    rd_kafka_topic_partition_list_destroy(seek);
    send_floor(k);
}

void rill__ksrc_txn_released(ksrc_t *k)
{
    if (k->closing)
        return;
    /* Records of the released partitions may still be on their way to the
     * sink: the floor fences them, and with them those of the partitions
     * kept, which are rewound (an eager rebalance keeps none). */
    rewind_kept(k);
}

/* ------------------------------------------------------------------ */
/* Offsets                                                             */
/* ------------------------------------------------------------------ */

static void answer(ksrc_t *k, int err, const char *why)
{
    rill__txn_ask_t *q = k->txn_ask;
    k->txn_ask = NULL;
    rill__txn_answer_t *a = calloc(1, sizeof(*a));
    if (!a) {
        free(q);
        return; /* the sink's wait runs out */
    }
    a->source = k->st->self;
    a->seq = q->seq;
    a->err = err;
    snprintf(a->reason, sizeof(a->reason), "%s", why ? why : "");
    if (!err) {
        a->cgmd = rd_kafka_consumer_group_metadata(k->rk);
        a->offsets = rill__ksrc_commit_list(k, 0, 0); /* taken as committed by END */
        if (k->txn_sent)
            rd_kafka_topic_partition_list_destroy(k->txn_sent);
        k->txn_sent = a->offsets ? rd_kafka_topic_partition_list_copy(a->offsets) : NULL;
        k->txn_sent_seq = q->seq;
        k->txn_sent_ns = rill__now_ns();
        if (!a->cgmd) {
            a->err = 1;
            snprintf(a->reason, sizeof(a->reason), "the consumer has no group metadata");
        }
    }
    send_sink(k, q->sink, RILL__TXN_ANSWER, a, rill__txn_answer_free);
    free(q);
}

void rill__ksrc_txn_check(ksrc_t *k)
{
    rill__txn_ask_t *q = k->txn_ask;
    if (!q)
        return;
    for (uint32_t i = 0; i < q->n; i++) {
        rill__tpart_t *p = rill__ksrc_part_by_id(k, q->v[i].key);
        if (!p) {
            answer(k, 1, "a partition with records in the transaction was released or rewound");
            return;
        }
        if (p->committable < q->v[i].upto) {
            if (rill__now_ms() < k->txn_ask_deadline_ms)
                return; /* its confirms are on their way */
            char why[200];
            snprintf(why, sizeof(why),
                     "%s [%d]: the records before offset %" PRId64
                     " were not all confirmed in time (a stage reorders records?)",
                     p->topic, (int)p->partition, q->v[i].upto);
            answer(k, 1, why);
            return;
        }
    }
    answer(k, 0, NULL);
}

/* The transaction that took the offsets answered committed: they are
 * committed, and the base a rewind goes back to. */
static void committed(ksrc_t *k)
{
    rd_kafka_topic_partition_list_t *l = k->txn_sent;
    k->txn_sent = NULL;
    if (!l)
        return;
    for (int i = 0; i < l->cnt; i++) {
        rill__tpart_t *p = rill__tracker_find(&k->tr, l->elems[i].topic, l->elems[i].partition);
        if (!p)
            continue;
        rill__tracker_mark_committed(p, l->elems[i].offset);
        p->txn_has_base = 1;
        p->txn_base = l->elems[i].offset;
    }
    rill__ksrc_report_commit(k, RD_KAFKA_RESP_ERR_NO_ERROR, l, k->txn_sent_ns);
    rd_kafka_topic_partition_list_destroy(l);
}

int rill__ksrc_txn_barrier(ksrc_t *k)
{
    if (k->txn_barrier == 2 || k->closing || rill_aid_is_none(k->txn_sink)) {
        k->txn_barrier = 0;
        return 0;
    }
    if (k->txn_barrier == 1) {
        if (rill__now_ms() < k->txn_barrier_deadline_ms)
            return 1;
        rill_log(RILL_LOG_WARNING, "kafka.txn",
                 "the transactional sink did not end its transaction in time: the partitions "
                 "are released anyway (a broker fences a later commit of their offsets)");
        k->txn_barrier = 0;
        return 0;
    }
    k->txn_barrier = 1;
    uint32_t wait = k->conf->o.drain_ms > 10000 ? k->conf->o.drain_ms : 10000;
    k->txn_barrier_deadline_ms = rill__now_ms() + (int64_t)wait;
    send_sink(k, k->txn_sink, RILL__TXN_BARRIER, NULL, NULL);
    return 1;
}

void rill__ksrc_txn_msg(ksrc_t *k, rill_msg_t *m)
{
    rill_aid_t sink = {m->corr};
    switch (m->arg) {
    case RILL__TXN_JOIN:
        if (!k->conf->o.txn) {
            refuse(k, sink,
                   "a transactional sink takes the records of Kafka sources set "
                   "rill.commit=transaction only: this one commits its own offsets");
        } else if (!rill_aid_is_none(k->txn_sink) && !rill_aid_eq(k->txn_sink, sink)) {
            refuse(k, sink, "a Kafka source feeds one transactional sink only");
        } else {
            k->txn_sink = sink;
            send_floor(k);
        }
        return;
    case RILL__TXN_LEAVE:
        if (rill_aid_eq(k->txn_sink, sink))
            k->txn_sink_left = 1;
        return;
    case RILL__TXN_OFFSETS: {
        rill__txn_ask_t *q = rill_msg_take(m);
        if (!q)
            return;
        free(k->txn_ask); /* an older one the sink gave up on */
        k->txn_ask = q;
        uint32_t wait = k->conf->o.drain_ms > 1000 ? k->conf->o.drain_ms : 1000;
        k->txn_ask_deadline_ms = rill__now_ms() + (int64_t)wait;
        rill__ksrc_txn_check(k);
        return;
    }
    case RILL__TXN_END: {
        const rill__txn_end_t *e = m->payload;
        if (!e)
            return;
        if (e->committed && k->txn_sent_seq == e->seq)
            committed(k);
        if (k->txn_sent) {
            rd_kafka_topic_partition_list_destroy(k->txn_sent);
            k->txn_sent = NULL;
        }
        if (k->txn_barrier == 1) {
            /* The revoke waiting for it goes on: it releases, rewinds what
             * it keeps and sends the floor. */
            k->txn_barrier = 2;
            if (k->revoking) {
                rill__ksrc_finish_revoke(k, rill__now_ms() + (int64_t)k->conf->o.shutdown_ms);
            } else {
                rewind_kept(k);
            }
            k->txn_barrier = 0;
        } else if (!e->committed && e->involved) {
            rewind_kept(k);
        }
        return;
    }
    default:
        return;
    }
}

void rill__ksrc_txn_free(ksrc_t *k)
{
    free(k->txn_ask);
    k->txn_ask = NULL;
    if (k->txn_sent)
        rd_kafka_topic_partition_list_destroy(k->txn_sent);
    k->txn_sent = NULL;
}
