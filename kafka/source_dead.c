/*
 * What the Kafka source does with records it gives up on or need not
 * process again (see consumer.c): dead letters and their delivery
 * results, records done for after too many failures or redeliveries, and
 * records an earlier run confirmed past its stop.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "source.h"

/* A dead letter's delivery result: confirm the record, or (the producer
 * failed it) deliver it again a second later, alone, and send it again. */
void rill__ksrc_dlq_result(ksrc_t *k, const rill_delivery_t *d, uint64_t seq)
{
    rill__dlq_ref_t ref;
    if (!rill__dlq_answer(&k->dlq, seq, &ref))
        return; /* not ours */
    rill__tpart_t *p = rill__ksrc_part_by_id(k, ref.part_id);
    if (d && !d->err) {
        k->stats.dead_lettered++;
        if (p)
            rill__kholder_forget(k->holder, p->topic, p->partition, ref.offset, ref.offset + 1);
        rill__ksrc_settle_one(k, ref.part_id, ref.offset, 1, 0);
        return;
    }
    k->stats.dead_letter_errors++;
    if (p) {
        rill__tracker_dead_letter(p, ref.offset, 0, now_ms());
        rill__tracker_want(&k->tr, p->id, ref.offset, now_ms() + 1000);
    }
}

/* Record m to the dead-letter topic with `why` (a dead-letter topic is
 * set). */
static void dead_letter(ksrc_t *k, rill__tpart_t *p, const rd_kafka_message_t *m, const char *why)
{
    rill__track_res_t res = rill__tracker_emit(&k->tr, p->id, m->offset, now_ms());
    if (res == RILL__TRACK_ACCEPTED) {
        /* Tracked as emitted, so that its confirm (on delivery to the
         * dead-letter topic) moves the committable offset. If the producer
         * cannot take it now, it is delivered again a second later. */
        if (rill__dlq_send(&k->dlq, k->sys, k->st->self, m, p->id.v, why) == 0) {
            rill__tracker_dead_letter(p, m->offset, 1, now_ms());
        } else {
            k->stats.dead_letter_errors++;
            rill__tracker_want(&k->tr, p->id, m->offset, now_ms() + 1000);
        }
    } else if (res == RILL__TRACK_NOMEM) {
        rill__stage_fail(k->st, RILL_ENOMEM, "out of memory tracking offsets");
    } /* else a stale copy: the record is out already */
}

/* A record delivered max_redeliveries times more and still not
 * confirmed: to the dead-letter topic, or the stage fails. */
static void redeliveries_exhausted(ksrc_t *k, rill__tpart_t *p, const rd_kafka_message_t *m,
                                   uint32_t att)
{
    if (!k->dlq.topic) {
        rill__stage_fail(k->st, RILL_ETIMEDOUT,
                         "record %s [%d] offset %" PRId64
                         " not confirmed after %u deliveries and no dead-letter topic",
                         p->topic, (int)p->partition, m->offset, att);
        return;
    }
    char why[64];
    snprintf(why, sizeof(why), "not confirmed after %u deliveries", att);
    dead_letter(k, p, m, why);
}

/*
 * Processing failed on record m rill.max.failures times (across runs), or
 * rejected it: it goes to the dead-letter topic, or without one it is
 * skipped: confirmed unprocessed (committed past), with a line on stderr
 * and the `skipped` count, as Spring Kafka's DefaultErrorHandler does
 * without a recoverer. The pipeline goes on either way.
 */
static void give_up(ksrc_t *k, rill__tpart_t *p, const rd_kafka_message_t *m, const char *why)
{
    if (k->dlq.topic) {
        dead_letter(k, p, m, why);
        return;
    }
    rill__track_res_t res = rill__tracker_emit(&k->tr, p->id, m->offset, now_ms());
    if (res != RILL__TRACK_ACCEPTED) {
        if (res == RILL__TRACK_NOMEM)
            rill__stage_fail(k->st, RILL_ENOMEM, "out of memory tracking offsets");
        return; /* else a stale copy: the record is out already */
    }
    rill__tracker_confirm(&k->tr, p->id, m->offset);
    k->since_commit++;
    k->stats.skipped++;
    rill_log(RILL_LOG_WARNING, "kafka.consumer",
             "record %s [%d] offset %" PRId64 " skipped (no rill.dead.letter.topic): %s", p->topic,
             (int)p->partition, m->offset, why);
    rill__kholder_forget(k->holder, p->topic, p->partition, m->offset, m->offset + 1);
}

/* A record about to be emitted that is done for: processing failed on it
 * rill.max.failures times or rejected it, or it was delivered
 * rill.max.redeliveries times more. Decided in emit order (records
 * before it in the buffer are emitted first, so tracking it as emitted
 * never passes them): 1 if it was given up (dead letter, skip, or the
 * stage fails), 0 to emit it. */
int rill__ksrc_done_for(ksrc_t *k, rill__tpart_t *p, const rd_kafka_message_t *m)
{
    int rejected;
    char why[200];
    uint32_t fails = rill__kholder_failures(k->holder, p->topic, p->partition, m->offset, &rejected,
                                            why, sizeof(why));
    if (rejected || fails >= k->conf->o.max_failures) {
        char text[256];
        if (rejected)
            snprintf(text, sizeof(text), "rejected: %s", why);
        else
            snprintf(text, sizeof(text), "processing failed %u times: %s", fails, why);
        give_up(k, p, m, text);
        return 1;
    }
    uint32_t att = rill__tracker_attempts(p, m->offset);
    if (att > k->conf->o.max_redeliveries) {
        redeliveries_exhausted(k, p, m, att);
        return 1;
    }
    return 0;
}

/* A record the previous run confirmed after the record it stopped at
 * (rill__kholder_set_ahead): confirmed again without being processed
 * again, in emit order. 1 if it was one. */
int rill__ksrc_confirmed_before(ksrc_t *k, rill__tpart_t *p, const rd_kafka_message_t *m)
{
    if (!rill__kholder_take_ahead(k->holder, p->topic, p->partition, m->offset))
        return 0;
    rill__track_res_t res = rill__tracker_emit(&k->tr, p->id, m->offset, now_ms());
    if (res == RILL__TRACK_ACCEPTED) {
        rill__tracker_confirm(&k->tr, p->id, m->offset);
        k->since_commit++;
        k->stats.not_replayed++;
    } else if (res == RILL__TRACK_NOMEM) {
        rill__stage_fail(k->st, RILL_ENOMEM, "out of memory tracking offsets");
    }
    return 1;
}

/* A run that a next run follows (a supervised pipeline restarting) leaves
 * it the records it confirmed past the first one it did not: the next run
 * reads the partition again from that one, and need not process them
 * again. Not with offsets of the application's own (rill.commit=false):
 * its state may go back further. */
void rill__ksrc_leave_confirmed_ahead(ksrc_t *k)
{
    for (rill__tpart_t *p = rill__tracker_next(&k->tr, NULL); p;
         p = rill__tracker_next(&k->tr, p)) {
        int64_t *offs = NULL;
        size_t n = rill__tracker_confirmed_ahead(p, &offs);
        rill__kholder_set_ahead(k->holder, p->topic, p->partition, offs, n);
    }
}
