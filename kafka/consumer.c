/*
 * The Kafka source: a source stage of the stream engine whose elements are
 * librdkafka records, each carrying an origin, with an offset tracker
 * (offsets.h) that commits only what was settled downstream. See
 * include/rill/kafka.h for the semantics.
 *
 * Blueprint and runs. rill_kafka_source() makes a spec holding the
 * configuration and a holder (session.c) that every copy of the spec
 * shares. Each run prepares its copy (on the spawning thread: the client
 * is made there, or the session the previous run parked is taken over),
 * then the stage actor serves it.
 *
 * Event loop: the consumer queue (with the main queue forwarded to it)
 * wakes the actor through its event loop (kqueue.c); the actor's turn
 * drains it. A 100 ms tick keeps polling even when nothing arrives
 * (max.poll.interval.ms is reset only by the application's polls) and
 * drives the time-based commit and redelivery checks. No thread sleeps in
 * poll.
 *
 * Confirms come back as settle notices of the records' origins
 * (RILL__MSG_SETTLED, batched per sending actor turn): confirmed, or
 * released unconfirmed (the record is failed in the tracker: never
 * committed past).
 *
 * Ending. When its output is done (the pipeline drains or stops, or a
 * later stage failed) the source lingers: it drops what it buffered, stops
 * fetching, and waits for the notices of what it has out, until none is
 * missing, the run says nothing is left downstream (FINISH), or
 * rill.drain.timeout.ms passed. Then it commits what was confirmed and
 * either parks its session for the next run (a supervised pipeline that
 * failed: no rebalance) or closes it.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rill/kafka.h>

#include "../actors/seam.h"
#include "source.h"

static const rill__kind_t ksrc_kind;

/* ------------------------------------------------------------------ */
/* Polling                                                             */
/* ------------------------------------------------------------------ */

static void handle_error_msg(ksrc_t *k, rd_kafka_message_t *m)
{
    rd_kafka_resp_err_t err = m->err;
    if (err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
        rill__ksrc_end_seen(k, m);
        return;
    }
    if (k->s)
        rill__khealth_error(rill__ksession_health(k->s), err, rd_kafka_message_errstr(m));
    char fatal[256];
    if (err == RD_KAFKA_RESP_ERR__FATAL && rd_kafka_fatal_error(k->rk, fatal, sizeof(fatal))) {
        k->broken = 1;
        rill__stage_fail(k->st, RILL_EKAFKA, "fatal consumer error: %s", fatal);
        return;
    }
    if (rill__ksrc_fatal_err(err) || ((err == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC ||
                                       err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) &&
                                      k->conf->fixed)) {
        k->broken = 1;
        rill__stage_fail(k->st, RILL_EKAFKA, "consumer error: %s", rd_kafka_message_errstr(m));
    }
    /* Retriable: librdkafka retries on its own. */
}

/* References of the client taken at once for records to come (given
 * back at the end of the run). */
#define HANDLE_BANK              256
/* Records taken from librdkafka per call, at most. */
#define POLL_BATCH               256
/* librdkafka 2.1.0 with its pre-releases (rd_kafka_version(): 0xMMmmrrpp). */
#define RILL__BATCH_POLL_VERSION 0x02010000

/* Take one polled record: buffer it. */
static void take_record(ksrc_t *k, rd_kafka_message_t *m)
{
    rill__tpart_t *p = rill__ksrc_part_of_msg(k, m);
    if (!p || p->revoking || p->start_wait || !rill__tracker_polled(p, m->offset) ||
        !rill__tracker_fresh(p, m->offset)) {
        /* Not ours (any more), from before a seek back, or, after a seek
         * back for a redelivery, a record that is confirmed or out. */
        rd_kafka_message_destroy(m);
        return;
    }
    if (k->st->finished) {
        rill__ksrc_note_dropped(k, m); /* the run is ending */
        rd_kafka_message_destroy(m);
        return;
    }
    if (!k->h_banked) {
        rill__khandle_ref_n(k->h, HANDLE_BANK);
        k->h_banked = HANDLE_BANK;
    }
    k->h_banked--; /* the record's reference of the client */
    rill_elem_t e = {.payload = m, .dtor = rill__record_free, .arg = p->id.v};
    if (!rill__equeue_push(&k->buf, &e)) {
        /* Cannot happen (room for twice the high watermark); never drop a
         * record silently: it would be skipped. */
        rill_elem_release(&e);
        rill__stage_fail(k->st, RILL_ESTATE, "consumer buffer overflow");
        return;
    }
    k->stats.polled++;
    k->bytes_polled += m->len;
    if (k->buf.count > k->stats.buffered_max)
        k->stats.buffered_max = (uint32_t)k->buf.count;
}

static void poll_queue(ksrc_t *k)
{
    /*
     * Fill the buffer up to the high watermark. At the mark, stop polling:
     * librdkafka's own queue holds what it fetched, and its fetcher stops
     * at queued.max.messages.kbytes (rill sets a modest default). When the
     * buffer has not dropped below the low watermark for
     * rill.pause.after.ms (downstream is slower than Kafka, not just
     * hiccuping) and downstream took less than a buffer in that time
     * (rill__ksrc_pause_due), pause the partitions: librdkafka drops their fetched
     * data and fetches nothing more, so later polls return no records,
     * only events (keep polling for those: max.poll.interval.ms must not
     * run out). Pausing at once on every brief stall would cost a lot: in
     * librdkafka 2.0.2 a resumed partition's fetcher only notices the
     * resume at its next wakeup, up to a second later. An ending run
     * (finished) polls only to serve events.
     */
    const rill__kopts_t *o = &k->conf->o;
    rill__ksrc_nudge_sample(k);
    /* Records come in batches (rd_kafka_consume_batch_queue: one clock
     * read and one position update per batch, where rd_kafka_consumer_poll
     * pays them per record), never more than the buffer has room for.
     * Only from librdkafka 2.1.0: 2.0.2's CHANGELOG lists lost or wrong
     * records with seek, pause, resume or rebalances from another thread
     * during a batch call; batching there was tried (2026-12-06) and taken
     * back after a group test failed once, cause not found. */
    int batch_api = rd_kafka_version() >= RILL__BATCH_POLL_VERSION;
    rd_kafka_message_t *batch[POLL_BATCH];
    size_t cap = (size_t)o->buffer_high * 2 + 1; /* the buffer's room */
    for (int budget = 4096; budget > 0;) {
        size_t want = POLL_BATCH;
        if (!k->st->finished) {
            if (k->buf.count < o->buffer_low) {
                k->full_since_ms = 0;
            } else if (!k->full_since_ms) {
                k->full_since_ms = now_ms();
                k->full_emitted = k->stats.emitted;
            }
            if (k->buf.count >= o->buffer_high) {
                if (!k->paused && !rill__ksrc_pause_due(k))
                    break;
                rill__ksrc_set_paused(k, 1);
            }
            size_t room =
                k->buf.count < o->buffer_high ? o->buffer_high - k->buf.count : cap - k->buf.count;
            if (room < want)
                want = room;
            if (!want)
                break;
        }
        ssize_t n;
        if (batch_api) {
            n = rd_kafka_consume_batch_queue(k->q, 0, batch, want);
        } else {
            batch[0] = rd_kafka_consumer_poll(k->rk, 0);
            n = batch[0] != NULL;
        }
        if (n <= 0) {
            if (k->fetcher_full)
                rill__ksrc_nudge(k); /* dry after a limit: the fetcher sleeps */
            break;
        }
        for (ssize_t i = 0; i < n; i++) {
            rd_kafka_message_t *m = batch[i];
            if (m->err) {
                handle_error_msg(k, m);
                rd_kafka_message_destroy(m);
                continue;
            }
            take_record(k, m);
        }
        budget -= (int)n;
    }
}

/* ------------------------------------------------------------------ */
/* Redelivery                                                          */
/* ------------------------------------------------------------------ */

/*
 * Records due for redelivery are delivered again, alone: records asked
 * for again (a retry after its delay, a reject on its way to the dead
 * letters), and with rill.unconfirmed.timeout.ms set, records not settled
 * in time and records released unconfirmed. The source seeks back to the
 * oldest one due and drops what it buffered from there; of what comes
 * again, only the records due are emitted: the ones after them that were
 * confirmed or are still out are dropped as they come (fetched again, not
 * processed again). Without a timeout a released record is not
 * redelivered within a run: it holds the commit back and comes again in
 * the next run.
 */
static void check_redelivery(ksrc_t *k)
{
    if (k->st->finished)
        return;
    uint32_t timeout = k->conf->o.unconfirmed_timeout_ms;
    int64_t now = now_ms();
    for (rill__tpart_t *p = rill__tracker_next(&k->tr, NULL); p;
         p = rill__tracker_next(&k->tr, p)) {
        int64_t from = 0;
        uint32_t n;
        if (p->revoking || !(n = rill__tracker_redeliver(&k->tr, p, now, timeout, &from)))
            continue;
        rill__ksrc_buffer_filter(k, rill__ksrc_keep_live);
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(l, p->topic, p->partition)->offset = from;
        rd_kafka_error_t *e = rd_kafka_seek_partitions(k->rk, l, 0);
        if (e)
            rd_kafka_error_destroy(e);
        rd_kafka_topic_partition_list_destroy(l);
        k->stats.redelivered += n;
    }
}

/* Forget the failures counted for records that were committed past. */
static void forget_committed_failures(ksrc_t *k)
{
    for (rill__tpart_t *p = rill__tracker_next(&k->tr, NULL); p; p = rill__tracker_next(&k->tr, p))
        if (p->committed > 0)
            rill__kholder_forget(k->holder, p->topic, p->partition, 0, p->committed);
}

/* ------------------------------------------------------------------ */
/* The stage kind                                                      */
/* ------------------------------------------------------------------ */

/* Downstream wants records and some are here, but rill.max.unconfirmed
 * are out unconfirmed: nothing more goes until confirms come back. A
 * pipeline that never confirms (self-managed offsets, rill.commit=false,
 * forgetting that records must still be confirmed) stops here for good.
 * Count each episode and show it in the stats; an episode that lasts
 * BLOCKED_LOG_MS (not a passing moment of flow control) is logged once. */
#define BLOCKED_LOG_MS 1000

static void note_blocked(ksrc_t *k)
{
    const rill__kopts_t *o = &k->conf->o;
    int blocked = !k->st->finished && k->buf.count && rill__stage_can_emit(k->st, 0) &&
                  k->tr.unconfirmed >= o->max_unconfirmed;
    int64_t now = now_ms();
    if (blocked && !k->stats.blocked) {
        k->stats.blocked_episodes++;
        k->blocked_since_ms = now;
        k->blocked_logged = 0;
    }
    k->stats.blocked = blocked;
    if (blocked && !k->blocked_logged && now - k->blocked_since_ms >= BLOCKED_LOG_MS) {
        k->blocked_logged = 1;
        rill_log(RILL_LOG_WARNING, "kafka.consumer",
                 "%u records are out unconfirmed (rill.max.unconfirmed) since "
                 "%" PRId64 " ms: no more are emitted until confirms come back (records must be "
                 "confirmed, also with rill.commit=false)",
                 k->tr.unconfirmed, now - k->blocked_since_ms);
    }
}

static void ksrc_pump(rill__stage_t *st)
{
    ksrc_t *k = st->spec.impl;
    const rill__kopts_t *o = &k->conf->o;
    rill_elem_t e;
    int64_t now = now_ms();
    size_t before = k->buf.count;
    while (k->buf.count && rill__stage_can_emit(st, 0) && k->tr.unconfirmed < o->max_unconfirmed) {
        rill__equeue_pop(&k->buf, &e);
        rill__tpart_t *p = rill__ksrc_part_by_id(k, e.arg);
        const rd_kafka_message_t *m = e.payload;
        if (!p || p->revoking || rill__ksrc_confirmed_before(k, p, m) ||
            rill__ksrc_done_for(k, p, m) ||
            rill__tracker_emit_ts(&k->tr, p->id, m->offset, now,
                                  rd_kafka_message_timestamp(m, NULL)) != RILL__TRACK_ACCEPTED) {
            rill_elem_release(&e);
            continue;
        }
        if (!p->txn_has_base) { /* where a rewind goes back to (source_txn.c) */
            p->txn_has_base = 1;
            p->txn_base = m->offset;
        }
        e.origin = rill__origin_new(k->sys, st->self, p->id.v, m->offset);
        if (!e.origin) {
            /* Without an origin nobody could confirm it: fail it now, so
             * the commit never passes it. */
            rill__tracker_fail(&k->tr, p->id, m->offset);
            rill_elem_release(&e);
            continue;
        }
        k->stats.emitted++;
        rill__stage_emit(st, 0, &e);
    }
    rill__ksrc_ends_pass(k, before - k->buf.count);
    if (k->paused && k->buf.count < o->buffer_low)
        rill__ksrc_set_paused(k, 0);
    if (!st->finished && k->buf.count < o->buffer_high)
        poll_queue(k);
    if (!st->finished && k->buf.count && rill__stage_can_emit(st, 0) &&
        k->tr.unconfirmed < o->max_unconfirmed)
        rill__stage_repump(st);
    k->stats.buffered = (uint32_t)k->buf.count;
    note_blocked(k);
}

/* K_STATS with this arg asks for the aid of the dead-letter producer the
 * consumer started (rill__consumer_dlq_producer), a test hook. */
#define STATS_ASK_DLQ_PRODUCER 1
/* K_STATS with this arg raises a fatal error (corr: the code) in the
 * client (rill__consumer_test_fatal), a test hook. */
#define STATS_TEST_FATAL       2
/* K_STATS with this arg asks for the assigned partitions
 * (rill_consumer_partitions). */
#define STATS_PARTITIONS       3

static void reply_stats(ksrc_t *k, rill_msg_t *msg)
{
    if (msg->arg == STATS_ASK_DLQ_PRODUCER) {
        rill_msg_t r = {.type = K_STATS, .arg = k->dlq.own.id};
        rill_reply(k->st->ctx, msg, &r);
        return;
    }
    if (msg->arg == STATS_PARTITIONS) {
        rill__kparts_reply_t *parts = rill__ksrc_partitions(k);
        rill_msg_t r = {.type = K_STATS, .payload = parts, .dtor = free};
        if (parts && rill_reply(k->st->ctx, msg, &r) != RILL_OK)
            free(parts);
        return;
    }
    rill_consumer_stats_t *s = malloc(sizeof(*s));
    if (!s)
        return;
    *s = k->stats;
    s->buffered = (uint32_t)k->buf.count;
    s->unconfirmed = k->tr.unconfirmed;
    s->confirmed = k->tr.confirmed;
    s->fenced = k->tr.fenced;
    s->assigned = k->tr.assigned;
    /* What the client saw of its cluster (the session's: over every run
     * that used it). */
    const rill__khealth_t *h = k->s ? rill__ksession_health(k->s) : NULL;
    if (h) {
        s->errors = h->errors;
        s->brokers_up = h->brokers_up;
        s->connected = h->brokers_up > 0;
        snprintf(s->last_error, sizeof(s->last_error), "%s", h->last_error);
    }
    rill__ksrc_stats_fill(k, s);
    s->revoking = 0;
    for (rill__tpart_t *p = rill__tracker_next(&k->tr, NULL); p;
         p = rill__tracker_next(&k->tr, p)) {
        s->revoking += p->revoking ? 1u : 0u;
        s->waiting += p->start_wait ? 1u : 0u;
    }
    rill_msg_t r = {.type = K_STATS, .payload = s, .dtor = free};
    if (rill_reply(k->st->ctx, msg, &r) != RILL_OK)
        free(s);
}

/* Nothing more will come back for this run: nothing is out unsettled;
 * with a transactional sink, the sink ended (until then its last commit
 * may still ask for offsets). */
static int all_back(const ksrc_t *k)
{
    if (k->conf->o.txn && !rill_aid_is_none(k->txn_sink))
        return k->txn_sink_left;
    return k->tr.unsettled == 0;
}

/* A lingering source ends once all is back or its time is up. */
static void linger_check(ksrc_t *k)
{
    if (k->st->lingering && (all_back(k) || now_ms() >= k->linger_deadline_ms))
        rill__stage_end(k->st);
}

static void on_tick(ksrc_t *k)
{
    if (k->fetcher_full && k->stats.polled == k->polled_at_tick)
        rill__ksrc_nudge(k); /* a whole tick without a record */
    k->polled_at_tick = k->stats.polled;
    const rill__kopts_t *o = &k->conf->o;
    int64_t now = now_ms();
    if (k->revoking && now >= k->revoke_deadline_ms)
        rill__ksrc_finish_revoke(k, now + (int64_t)o->shutdown_ms);
    if (k->tr.unconfirmed == 0 || now - k->last_redeliver_check_ms >= 50) {
        k->last_redeliver_check_ms = now;
        check_redelivery(k);
    }
    if (k->commits_out && now - k->commit_sent_ns / 1000000 >= COMMIT_RESEND_MS) {
        /* Unanswered (an outage): send every offset again. */
        k->commits_out = 0;
        rill__ksrc_commit_again_all(k);
        rill__ksrc_commit_async(k);
    } else if (now - k->last_commit_ms >= (int64_t)o->commit_interval_ms) {
        rill__ksrc_commit_async(k);
    }
    if (k->buf.count >= o->buffer_high || k->st->finished)
        poll_queue(k); /* pauses once the buffer stayed full long enough */
    if (now - k->last_forget_ms >= 1000) {
        k->last_forget_ms = now;
        forget_committed_failures(k);
    }
}

static void ksrc_on_msg(rill__stage_t *st, rill_msg_t *msg)
{
    ksrc_t *k = st->spec.impl;
    switch (msg->type) {
    case RILL__MSG_SETTLED:
        k->tr.wall_now_ms = rill__turn_wall_ms(); /* e2e latencies: one reading per turn */
        rill__ksrc_settle_batch(k, msg->payload);
        break;
    case K_CONFIRM_UPTO:
        k->tr.wall_now_ms = rill__turn_wall_ms();
        rill__ksrc_settle_one(k, msg->corr, (int64_t)msg->arg, 1, 1);
        break;
    case K_WAKE:
        rill__kq_woken(&k->kq);
        if (st->finished)
            poll_queue(k);
        break;
    case K_TICK:
        on_tick(k);
        break;
    case K_IDLE_COMMIT:
        k->idle_commit_timer = 0; /* rill__ksrc_idle_commit() below */
        break;
    case K_START:
        rill__ksrc_later_msg(k, msg);
        break;
    case K_TXN:
        rill__ksrc_txn_msg(k, msg);
        break;
    case RILL_MSG_DELIVERY:
        rill__ksrc_dlq_result(k, msg->payload, msg->arg);
        break;
    case K_STATS:
        if (msg->arg == STATS_TEST_FATAL) {
            if (k->rk)
                rd_kafka_test_fatal_error(k->rk, (rd_kafka_resp_err_t)msg->corr,
                                          "injected by rill__consumer_test_fatal");
            break;
        }
        reply_stats(k, msg);
        return;
    default:
        return;
    }
    if (k->since_commit >= k->conf->o.commit_count)
        rill__ksrc_commit_async(k);
    rill__ksrc_txn_check(k); /* an OFFSETS request whose confirms came */
    if (st->finished) {
        linger_check(k);
        return;
    }
    ksrc_pump(st);
    /* After the pump's poll, which serves the answers of commits. */
    rill__ksrc_idle_commit(k);
}

static rill_err_t ksrc_start(rill__stage_t *st)
{
    ksrc_t *k = st->spec.impl;
    k->st = st;
    k->sys = st->sys;
    k->started = 1;
    rill__ksession_set_owner(k->s, &rill__ksrc_session_ops, k);
    if (rill__kq_start(&k->kq, st->ctx, k->q, K_WAKE))
        return RILL_EIO;
    rill__ksrc_nudge_init(k);
    rill_msg_t tick = {.type = K_TICK};
    rill_timer_start(st->ctx, TICK_MS, TICK_MS, &tick, NULL);
    k->last_commit_ms = now_ms();
    /* Our dead-letter producer lives and fails with us. */
    if (!rill_aid_is_none(k->dlq.own) && rill_link(st->ctx, k->dlq.own) != RILL_OK) {
        rill__stage_fail(st, RILL_ESTOPPED, "the dead-letter producer stopped");
        return RILL_OK;
    }
    if (rill__ksession_reused(k->s))
        rill__ksrc_resume_start(k);
    else
        rill__ksrc_first_start(k);
    return RILL_OK;
}

static void ksrc_drain(rill__stage_t *st)
{
    /* Complete the stream now; what is buffered is not emitted (it is
     * consumed again from the committed offset next time). */
    rill__ksrc_drop_buffer(st->spec.impl);
    rill__stage_complete(st);
}

static int ksrc_linger(rill__stage_t *st, int final)
{
    (void) final;
    ksrc_t *k = st->spec.impl;
    rill__ksrc_drop_buffer(k);
    rill__ksrc_set_paused(k, 1); /* nothing more to fetch for this run */
    if (all_back(k) || k->conf->o.drain_ms == 0)
        return 0;
    k->linger_deadline_ms = now_ms() + (int64_t)k->conf->o.drain_ms;
    return 1;
}

/* Notices still in the mailbox at the end belong in the final commit. */
static void drained_msg(void *opaque, rill_msg_t *m)
{
    ksrc_t *k = opaque;
    if (m->type == RILL__MSG_SETTLED) {
        k->tr.wall_now_ms = rill__turn_wall_ms();
        rill__ksrc_settle_batch(k, m->payload);
    } else if (m->type == K_CONFIRM_UPTO) {
        k->tr.wall_now_ms = rill__turn_wall_ms();
        rill__ksrc_settle_one(k, m->corr, (int64_t)m->arg, 1, 1);
    } else if (m->type == RILL_MSG_DELIVERY)
        rill__ksrc_dlq_result(k, m->payload, m->arg);
}

/* The run is over: commit, then keep the session for the next run of a
 * supervised pipeline that failed, or close it. */
static void ksrc_end_run(ksrc_t *k)
{
    rill__stage_t *st = k->st;
    const rill__kopts_t *o = &k->conf->o;
    int64_t deadline = now_ms() + (int64_t)o->shutdown_ms;
    k->closing = 1;
    rill__kq_stop(&k->kq);
    rill__ksrc_later_end(k); /* no start is taken any more */
    /* Notices a stop overtook are still in the mailbox. */
    rill__ctx_drain_mailbox(st->ctx, drained_msg, k);
    if (k->revoking)
        rill__ksrc_finish_revoke(k, deadline);
    rill__ksrc_drop_buffer(k);
    /* The run's partitions end with it: the application is told before
     * the final commit (its "save on revoke" point), also when the
     * session is kept for the next run or its close revokes them later
     * (on_final_revoke does not tell it again). Lost ones are told by
     * the close. */
    if (!rd_kafka_assignment_lost(k->rk)) {
        rd_kafka_topic_partition_list_t *a = NULL;
        if (rd_kafka_assignment(k->rk, &a) == RD_KAFKA_RESP_ERR_NO_ERROR && a) {
            if (a->cnt)
                rill__ksrc_observe(k, RILL_REBALANCE_REVOKED, a);
            rd_kafka_topic_partition_list_destroy(a);
        }
        k->final_reported = 1;
    }
    rill__ksrc_await_commit(k, deadline);
    /* Send every partition's offset again: an async commit still in
     * flight may fail, and nobody would retry it. */
    rill__ksrc_commit_again_all(k);
    rill__ksrc_commit_sync(k, 0, deadline);
    if (k->holder && !rill_aid_is_none(st->hook.run) && !st->hook.once && !st->final && o->commit)
        rill__ksrc_leave_confirmed_ahead(k);
    int park = k->holder && !rill_aid_is_none(st->hook.run) && !st->hook.once && !st->final &&
               !k->broken && o->restart_keep_ms > 0;
    /* The references taken for records that never came; the session's
     * own keeps the client. */
    rill__khandle_unref_n(k->h, k->h_banked);
    k->h_banked = 0;
    rill__ksession_t *s = k->s;
    k->s = NULL;
    if (park)
        rill__ksession_park(s, k->holder, k->sys, o->restart_keep_ms, o->shutdown_ms,
                            rill__ksrc_resume_list(k));
    else
        rill__ksession_close(s, deadline);
}

static void ksrc_destroy(void *impl)
{
    ksrc_t *k = impl;
    if (!k)
        return;
    if (k->started && k->s) {
        ksrc_end_run(k);
    } else if (k->s) {
        /* Prepared, never run: back to the holder (or closed). */
        rill__ksession_t *s = k->s;
        k->s = NULL;
        if (k->holder && k->sys)
            rill__ksession_park(s, k->holder, k->sys, k->conf->o.restart_keep_ms,
                                k->conf->o.shutdown_ms, NULL);
        else
            rill__ksession_close(s, now_ms() + (int64_t)k->conf->o.shutdown_ms);
    }
    if (k->sys)
        rill__dlq_free(&k->dlq, k->sys);
    rill_elem_t e;
    if (k->buf.v)
        while (rill__equeue_pop(&k->buf, &e))
            rill_elem_release(&e);
    free(k->buf.v);
    rill__tracker_free(&k->tr);
    if (k->revoking)
        rd_kafka_topic_partition_list_destroy(k->revoking);
    rill__ksrc_txn_free(k);
    rill_consumer_conf_destroy(k->conf);
    rill__kholder_unref(k->holder);
    free(k);
}

static void *ksrc_clone(const void *impl)
{
    const ksrc_t *from = impl;
    ksrc_t *k = calloc(1, sizeof(*k));
    if (!k)
        return NULL;
    if (!(k->conf = rill__consumer_conf_dup(from->conf))) {
        free(k);
        return NULL;
    }
    k->holder = rill__kholder_ref(from->holder);
    return k;
}

static int reset_earliest(const rill_consumer_conf_t *c)
{
    char reset[32] = "";
    size_t rs = sizeof(reset);
    rd_kafka_topic_conf_t *dtc = rd_kafka_conf_get_default_topic_conf(c->kconf);
    return dtc &&
           rd_kafka_topic_conf_get(dtc, "auto.offset.reset", reset, &rs) == RD_KAFKA_CONF_OK &&
           (strstr(reset, "earliest") || strstr(reset, "smallest") || strstr(reset, "beginning"));
}

static rill_err_t ksrc_prepare(void *impl, rill_system_t *sys, char *errstr, size_t errstr_size)
{
    ksrc_t *k = impl;
    rill_consumer_conf_t *c = k->conf;
    k->sys = sys;
    /* Room to spare: a record polled while full is kept, never dropped. */
    if (rill__equeue_init(&k->buf, (size_t)c->o.buffer_high * 2 + 1) ||
        rill__tracker_init(&k->tr, MAX_PARTS))
        return rill__fail(RILL_ENOMEM, errstr, errstr_size, "out of memory");
    k->tr.e2e_last_ms = -1;
    k->reset_earliest = reset_earliest(c);
    rill_err_t err = rill__dlq_init(&k->dlq, sys, c, errstr, errstr_size);
    if (err)
        return err;
    if (c->o.txn) {
        k->txn_hold = rill__ksrc_txn_barrier;
        k->txn_released = rill__ksrc_txn_released;
    }
    k->s = rill__kholder_take(k->holder);
    if (!k->s && !(k->s = rill__ksession_new(c, errstr, errstr_size)))
        return RILL_EKAFKA;
    k->rk = rill__ksession_rk(k->s);
    k->q = rill__ksession_queue(k->s);
    k->h = rill__ksession_handle(k->s);
    k->prepared = 1;
    return RILL_OK;
}

static void ksrc_retire(void *impl)
{
    rill__kholder_retire(((ksrc_t *)impl)->holder);
}

static uint32_t ksrc_stop_budget(const void *impl)
{
    const ksrc_t *k = impl;
    /* linger, final commit and close, then up to 0.5 s more for the
     * close and 2 s for the client's destroy (session.c, reaper.c) */
    return k->conf->o.drain_ms + k->conf->o.shutdown_ms + 3000;
}

static uint32_t ksrc_mailbox_min(const void *impl)
{
    /* Notices arrive in the mailbox: room for one per record out. */
    return ((const ksrc_t *)impl)->conf->o.max_unconfirmed + 64;
}

static const rill__kind_t ksrc_kind = {.name = "kafka-source",
                                       .max_in = 0,
                                       .max_out = 1,
                                       .start = ksrc_start,
                                       .pump = ksrc_pump,
                                       .on_msg = ksrc_on_msg,
                                       .on_drain = ksrc_drain,
                                       .destroy = ksrc_destroy,
                                       .clone = ksrc_clone,
                                       .prepare = ksrc_prepare,
                                       .retire = ksrc_retire,
                                       .stop_budget_ms = ksrc_stop_budget,
                                       .mailbox_min = ksrc_mailbox_min,
                                       .linger = ksrc_linger};

/* ------------------------------------------------------------------ */
/* The API                                                             */
/* ------------------------------------------------------------------ */

rill_stage_t *rill_kafka_source(rill_consumer_conf_t *c)
{
    if (!c)
        return rill__stage_spec_bad(&ksrc_kind, RILL_EINVAL, "the consumer configuration is NULL");
    char why[160];
    if (rill__consumer_conf_check(c, why, sizeof(why))) {
        rill_consumer_conf_destroy(c);
        return rill__stage_spec_bad(&ksrc_kind, RILL_EINVAL, "%s", why);
    }
    ksrc_t *k = calloc(1, sizeof(*k));
    rill__kholder_t *h = rill__kholder_new();
    if (!k || !h) {
        free(k);
        rill__kholder_unref(h);
        rill_consumer_conf_destroy(c);
        return rill__stage_spec_new(&ksrc_kind, NULL);
    }
    k->conf = c;
    k->holder = h;
    return rill__stage_spec_new(&ksrc_kind, k);
}

rill_err_t rill_consumer_spawn(rill_system_t *sys, rill_consumer_conf_t *c,
                               const rill_stage_opts_t *opts, rill_aid_t *aid, char *errstr,
                               size_t errstr_size)
{
    if (!sys || !aid) {
        rill_consumer_conf_destroy(c);
        return rill__fail(RILL_EINVAL, errstr, errstr_size, "system and aid must be set");
    }
    return rill_stage_spawn(sys, rill_kafka_source(c), opts, aid, errstr, errstr_size);
}

rill_err_t rill_consumer_stats(rill_system_t *sys, rill_aid_t consumer, rill_consumer_stats_t *out)
{
    if (!sys || rill_aid_is_none(consumer) || !out)
        return RILL_EINVAL;
    rill_err_t err = rill__stage_kind_check(sys, consumer, &ksrc_kind);
    if (err)
        return err;
    rill_msg_t q = {.type = K_STATS}, r;
    if ((err = rill_ask_sync(sys, consumer, &q, 10000, &r)))
        return err;
    if (r.type != K_STATS || !r.payload) {
        if (r.dtor)
            r.dtor(r.payload);
        return RILL_ESTATE;
    }
    *out = *(rill_consumer_stats_t *)r.payload;
    r.dtor(r.payload);
    return RILL_OK;
}

rill_err_t rill_consumer_partitions(rill_system_t *sys, rill_aid_t consumer,
                                    rill_partition_stats_t *out, size_t max, size_t *n)
{
    if (!sys || rill_aid_is_none(consumer) || (!out && max) || !n)
        return RILL_EINVAL;
    rill_err_t err = rill__stage_kind_check(sys, consumer, &ksrc_kind);
    if (err)
        return err;
    rill_msg_t q = {.type = K_STATS, .arg = STATS_PARTITIONS}, r;
    if ((err = rill_ask_sync(sys, consumer, &q, 10000, &r)))
        return err;
    if (r.type != K_STATS || !r.payload) {
        if (r.dtor)
            r.dtor(r.payload);
        return r.type == K_STATS ? RILL_ENOMEM : RILL_ESTATE;
    }
    const rill__kparts_reply_t *parts = r.payload;
    *n = parts->n;
    if (max)
        memcpy(out, parts->v, (parts->n < max ? parts->n : max) * sizeof(*out));
    r.dtor(r.payload);
    return RILL_OK;
}

rill_err_t rill__consumer_dlq_producer(rill_system_t *sys, rill_aid_t consumer,
                                       rill_aid_t *producer)
{
    if (!sys || rill_aid_is_none(consumer) || !producer)
        return RILL_EINVAL;
    rill_err_t err = rill__stage_kind_check(sys, consumer, &ksrc_kind);
    if (err)
        return err;
    rill_msg_t q = {.type = K_STATS, .arg = STATS_ASK_DLQ_PRODUCER}, r;
    if ((err = rill_ask_sync(sys, consumer, &q, 10000, &r)))
        return err;
    if (r.dtor)
        r.dtor(r.payload);
    if (r.type != K_STATS || r.payload)
        return RILL_ESTATE;
    producer->id = r.arg;
    return RILL_OK;
}

rill_err_t rill__consumer_test_fatal(rill_system_t *sys, rill_aid_t consumer,
                                     rd_kafka_resp_err_t err)
{
    if (!sys || rill_aid_is_none(consumer))
        return RILL_EINVAL;
    rill_err_t e = rill__stage_kind_check(sys, consumer, &ksrc_kind);
    if (e)
        return e;
    rill_msg_t m = {.type = K_STATS, .arg = STATS_TEST_FATAL, .corr = (uint64_t)err};
    return rill_tell(sys, consumer, &m);
}
