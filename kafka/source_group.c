/*
 * The Kafka source and its group: its partitions and their buffer,
 * commits, pauses, rebalances and settle notices, and how a run starts,
 * fresh or from a session an earlier run kept (see consumer.c and
 * include/rill/kafka.h).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "source.h"

/* The start offsets of fixed partitions are looked up within this. */
#define LOOKUP_MS 10000

/* ------------------------------------------------------------------ */
/* Partitions                                                          */
/* ------------------------------------------------------------------ */

rill__tpart_t *rill__ksrc_part_by_id(ksrc_t *k, uint64_t id)
{
    return rill__tracker_part(&k->tr, (rill__part_id_t){id});
}

rill__tpart_t *rill__ksrc_part_of_msg(ksrc_t *k, const rd_kafka_message_t *m)
{
    /* Records come in runs of one partition, and a topic object compares
     * faster than a topic name: remember the last partition and the
     * topic object of each. */
    rill__tpart_t *p = k->last_hit;
    if (p && p->handle == m->rkt && p->partition == m->partition)
        return p;
    for (p = rill__tracker_next(&k->tr, NULL); p; p = rill__tracker_next(&k->tr, p)) {
        if (p->partition != m->partition)
            continue;
        if (p->handle == m->rkt || (!p->handle && !strcmp(p->topic, rd_kafka_topic_name(m->rkt)))) {
            p->handle = m->rkt;
            k->last_hit = p;
            return p;
        }
    }
    return NULL;
}

static void part_remove(ksrc_t *k, rill__tpart_t *p)
{
    if (k->last_hit == p)
        k->last_hit = NULL;
    rill__ksrc_later_forget(k, p);
    rill__tracker_remove(&k->tr, p);
}

static void remove_revoking(ksrc_t *k)
{
    for (rill__tpart_t *p = rill__tracker_next(&k->tr, NULL); p; p = rill__tracker_next(&k->tr, p))
        if (p->revoking)
            part_remove(k, p);
}

void rill__ksrc_observe(ksrc_t *k, rill_rebalance_event_t ev,
                        const rd_kafka_topic_partition_list_t *parts)
{
    k->stats.rebalances++;
    if (k->conf->rebalance_cb)
        k->conf->rebalance_cb(k->conf->rebalance_opaque, ev, parts);
}

/* ------------------------------------------------------------------ */
/* The buffer                                                          */
/* ------------------------------------------------------------------ */

/* A polled record goes without being emitted, at the end of a run: the
 * next run must start its partition at or before it. */
void rill__ksrc_note_dropped(ksrc_t *k, const rd_kafka_message_t *m)
{
    rill__tpart_t *p = rill__ksrc_part_of_msg(k, m);
    if (p && (!p->dropped || m->offset < p->dropped_from)) {
        p->dropped = 1;
        p->dropped_from = m->offset;
    }
}

/* Drop everything buffered (the run is ending). */
void rill__ksrc_drop_buffer(ksrc_t *k)
{
    rill_elem_t e;
    while (rill__equeue_pop(&k->buf, &e)) {
        rill__ksrc_note_dropped(k, e.payload);
        rill_elem_release(&e);
    }
    k->stats.buffered = 0;
}

/* Drop buffered records of partitions for which keep() is false. */
void rill__ksrc_buffer_filter(ksrc_t *k, int (*keep)(ksrc_t *, const rill_elem_t *))
{
    size_t n = k->buf.count;
    for (size_t i = 0; i < n; i++) {
        rill_elem_t e;
        rill__equeue_pop(&k->buf, &e);
        if (keep(k, &e))
            rill__equeue_push(&k->buf, &e);
        else
            rill_elem_release(&e);
    }
}

int rill__ksrc_keep_live(ksrc_t *k, const rill_elem_t *e)
{
    rill__tpart_t *p = rill__ksrc_part_by_id(k, e->arg);
    if (!p || p->revoking)
        return 0;
    return !rill__tracker_buffered_stale(p, ((rd_kafka_message_t *)e->payload)->offset);
}

/* ------------------------------------------------------------------ */
/* Commits                                                             */
/* ------------------------------------------------------------------ */

void rill__ksrc_report_commit(ksrc_t *k, rd_kafka_resp_err_t err,
                              const rd_kafka_topic_partition_list_t *offsets, int64_t sent_ns)
{
    int failed = err != RD_KAFKA_RESP_ERR_NO_ERROR;
    int64_t took = sent_ns ? rill__now_ns() - sent_ns : -1;
    if (took >= 0 && offsets && offsets->cnt)
        rill_hist_record(&k->stats.commit_latency, (uint64_t)took);
    for (int i = 0; offsets && i < offsets->cnt && !failed; i++)
        failed = offsets->elems[i].err != 0;
    if (failed) {
        k->stats.commit_errors++;
        /* Commit these again next time. */
        for (int i = 0; offsets && i < offsets->cnt; i++) {
            rill__tpart_t *p =
                rill__tracker_find(&k->tr, offsets->elems[i].topic, offsets->elems[i].partition);
            if (p)
                rill__tracker_commit_failed(p, offsets->elems[i].offset);
        }
    } else if (offsets && offsets->cnt) {
        k->stats.committed++;
        for (int i = 0; i < offsets->cnt; i++) {
            rill__tpart_t *p =
                rill__tracker_find(&k->tr, offsets->elems[i].topic, offsets->elems[i].partition);
            if (p)
                rill__tracker_commit_acked(p, offsets->elems[i].offset);
        }
    }
    if (k->conf->commit_cb && offsets && offsets->cnt)
        k->conf->commit_cb(k->conf->commit_opaque, err, offsets);
}

/* An async commit's result, served by our polls. */
static void on_commit_result(void *owner, rd_kafka_resp_err_t err,
                             rd_kafka_topic_partition_list_t *offsets)
{
    ksrc_t *k = owner;
    int64_t sent_ns = k->commits_out ? k->commit_sent_ns : 0;
    if (k->commits_out && --k->commits_out)
        k->commit_sent_ns = rill__now_ns(); /* the next one is younger: roughly */
    if (err == RD_KAFKA_RESP_ERR__NO_OFFSET)
        return; /* nothing to commit */
    rill__ksrc_report_commit(k, err, offsets, sent_ns);
}

rd_kafka_topic_partition_list_t *rill__ksrc_commit_list(ksrc_t *k, int only_revoking, int mark)
{
    rd_kafka_topic_partition_list_t *l = NULL;
    for (rill__tpart_t *p = rill__tracker_next(&k->tr, NULL); p;
         p = rill__tracker_next(&k->tr, p)) {
        if (only_revoking && !p->revoking)
            continue;
        int64_t offset = rill__tracker_to_commit(p);
        if (offset < 0)
            continue;
        if (!l)
            l = rd_kafka_topic_partition_list_new(8);
        rd_kafka_topic_partition_list_add(l, p->topic, p->partition)->offset = offset;
        if (mark)
            rill__tracker_mark_committed(p, offset);
    }
    return l;
}

void rill__ksrc_commit_again_all(ksrc_t *k)
{
    for (rill__tpart_t *p = rill__tracker_next(&k->tr, NULL); p; p = rill__tracker_next(&k->tr, p))
        rill__tracker_commit_again(p);
}

void rill__ksrc_commit_async(ksrc_t *k)
{
    if (k->commits_out) {
        /* At most one unanswered: this one goes after its answer
         * (rill__ksrc_idle_commit), with everything confirmed by then.
         * Under load that is one commit per round trip instead of one per
         * rill.commit.count confirms (bench_consume: 1.4 x the records per
         * second with 20 x fewer commits). */
        k->commit_due = 1;
        return;
    }
    k->commit_due = 0;
    k->since_commit = 0;
    k->last_commit_ms = now_ms();
    if (!k->conf->o.commit)
        return;
    rd_kafka_topic_partition_list_t *l = rill__ksrc_commit_list(k, 0, 1);
    if (!l)
        return;
    /* The result comes back through on_commit_result when we poll. */
    int64_t sent_ns = rill__now_ns();
    rd_kafka_resp_err_t err = rd_kafka_commit(k->rk, l, 1);
    if (err) {
        rill__ksrc_report_commit(k, err, l, 0);
    } else if (k->commits_out++ == 0) {
        k->commit_sent_ns = sent_ns;
    }
    rd_kafka_topic_partition_list_destroy(l);
}

/*
 * A commit that came due while one was out goes once it is answered.
 * Everything out confirmed, not all of it committed, no commit unanswered:
 * commit now, at most every hundredth of rill.commit.interval.ms (a
 * one-shot timer waits out the rest). A pipeline that caught up has its
 * work committed within ~10 ms; a busy one commits by count and interval;
 * a trickle, at most once per round trip and per gap. (A tenth until
 * 2026-12-06: bench_pipeline's runs waited 50-150 ms for their last one.)
 */
void rill__ksrc_idle_commit(ksrc_t *k)
{
    if (k->commit_due && !k->commits_out) {
        rill__ksrc_commit_async(k);
        return;
    }
    if (!k->since_commit || k->tr.unconfirmed || k->commits_out || !k->conf->o.commit)
        return;
    int64_t gap = (int64_t)(k->conf->o.commit_interval_ms / 100), now = now_ms();
    int64_t wait = k->last_commit_ms + gap - now;
    if (wait <= 0) {
        rill__ksrc_commit_async(k);
    } else if (!k->idle_commit_timer && !k->st->finished) {
        rill_msg_t m = {.type = K_IDLE_COMMIT};
        k->idle_commit_timer = rill_timer_start(k->st->ctx, (uint64_t)wait, 0, &m, NULL) == RILL_OK;
    }
}

/* Answered after the final commit, a retried older async commit would put
 * its offsets back over the final ones (seen with coalesced commits: a
 * partition committed 54 records short after a stop). */
void rill__ksrc_await_commit(ksrc_t *k, int64_t deadline)
{
    if (!k->commits_out)
        return;
    int64_t until = now_ms() + 1000;
    if (until > deadline)
        until = deadline;
    rill__ksrc_set_paused(k, 1); /* nothing more to fetch for this run */
    while (k->commits_out && now_ms() < until) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(k->rk, 10);
        if (!m)
            continue;
        /* Never emitted: a kept session's next run reads it again (as
         * what a run's end drops from its buffer). */
        if (!m->err)
            rill__ksrc_note_dropped(k, m);
        rd_kafka_message_destroy(m);
    }
}

/* Commit and wait for the result, at most until deadline. */
void rill__ksrc_commit_sync(ksrc_t *k, int only_revoking, int64_t deadline)
{
    if (!k->conf->o.commit)
        return;
    rd_kafka_topic_partition_list_t *l = rill__ksrc_commit_list(k, only_revoking, 1);
    if (!l)
        return;
    rd_kafka_queue_t *tq = rd_kafka_queue_new(k->rk);
    int64_t sent_ns = rill__now_ns();
    rd_kafka_resp_err_t err = rd_kafka_commit_queue(k->rk, l, tq, NULL, NULL);
    if (!err) {
        err = RD_KAFKA_RESP_ERR__TIMED_OUT;
        for (;;) {
            int left = rill__ms_left(deadline);
            rd_kafka_event_t *ev = rd_kafka_queue_poll(tq, left);
            if (!ev)
                break;
            if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_OFFSET_COMMIT) {
                const rd_kafka_topic_partition_list_t *res =
                    rd_kafka_event_topic_partition_list(ev);
                rill__ksrc_report_commit(k, rd_kafka_event_error(ev), res ? res : l, sent_ns);
                rd_kafka_event_destroy(ev);
                err = RD_KAFKA_RESP_ERR_NO_ERROR;
                break;
            }
            rd_kafka_event_destroy(ev);
            if (left == 0)
                break;
        }
        if (err)
            rill__ksrc_report_commit(k, err, l, 0); /* no answer in time */
    } else {
        rill__ksrc_report_commit(k, err, l, 0);
    }
    rd_kafka_queue_destroy(tq);
    rd_kafka_topic_partition_list_destroy(l);
}

/* ------------------------------------------------------------------ */
/* Pause, rebalances                                                   */
/* ------------------------------------------------------------------ */

void rill__ksrc_set_paused(ksrc_t *k, int pause)
{
    if (k->paused == pause)
        return;
    rd_kafka_topic_partition_list_t *a = NULL;
    if (rd_kafka_assignment(k->rk, &a) == RD_KAFKA_RESP_ERR_NO_ERROR && a) {
        if (pause)
            rd_kafka_pause_partitions(k->rk, a);
        else
            rill__ksrc_resume_ready(k, a); /* not those waiting for their start */
        rd_kafka_topic_partition_list_destroy(a);
    }
    k->paused = pause;
    k->stats.paused = pause;
    if (pause)
        k->stats.pauses++;
}

/* Release revoked partitions: tell the application, commit what was
 * confirmed, then tell librdkafka; notices for them are fenced from now
 * on. */
void rill__ksrc_finish_revoke(ksrc_t *k, int64_t deadline)
{
    rd_kafka_topic_partition_list_t *l = k->revoking;
    if (!l || (k->txn_hold && k->txn_hold(k)))
        return; /* (the transaction with their records ends first) */
    k->revoking = NULL;
    /* The application first (its "save on revoke" point: everything that
     * came back is in), then the commit, then the partitions go. */
    rill__ksrc_observe(k, RILL_REBALANCE_REVOKED, l);
    rill__ksrc_commit_sync(k, 1, deadline);
    rill__kafka_let_go(k->rk, l);
    remove_revoking(k);
    if (k->txn_released)
        k->txn_released(k);
    rd_kafka_topic_partition_list_destroy(l);
}

static void maybe_finish_revoke(ksrc_t *k)
{
    if (!k->revoking)
        return;
    /* Wait for what is still unsettled; a failed record will not be
     * confirmed by waiting longer. */
    for (rill__tpart_t *p = rill__tracker_next(&k->tr, NULL); p; p = rill__tracker_next(&k->tr, p))
        if (p->revoking && rill__tracker_part_unsettled(p))
            return;
    rill__ksrc_finish_revoke(k, now_ms() + (int64_t)k->conf->o.shutdown_ms);
}

/* Track newly assigned partitions; 0, or -1 after failing the stage. */
static int track_assigned(ksrc_t *k, const rd_kafka_topic_partition_list_t *parts)
{
    for (int i = 0; i < parts->cnt; i++)
        if (!rill__tracker_find(&k->tr, parts->elems[i].topic, parts->elems[i].partition) &&
            !rill__tracker_assign(&k->tr, parts->elems[i].topic, parts->elems[i].partition)) {
            rill__stage_fail(k->st, RILL_ENOMEM, "cannot track more partitions");
            return -1;
        }
    return 0;
}

static void on_assign(ksrc_t *k, rd_kafka_topic_partition_list_t *parts)
{
    for (int i = 0; k->conf->assigned_cb && i < parts->cnt; i++)
        parts->elems[i].offset = RD_KAFKA_OFFSET_INVALID;
    if (rill__ksrc_ask_assigned(k, parts) || track_assigned(k, parts))
        return;
    rd_kafka_error_t *e = rill__kafka_take(k->rk, parts);
    if (e) {
        rill__stage_fail(k->st, RILL_EKAFKA, "incremental assign: %s", rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
        return;
    }
    /* Apply our pause state to the new partitions, both ways: librdkafka
     * (2.0.2) keeps a partition's pause across an unassign and a later
     * assign, and ours may have ended in between (a partition let go while
     * paused, resumed with an assignment that no longer held it), so one
     * assigned again would stay paused, held and never fetched. */
    rill__ksrc_later_hold(k); /* those waiting for their start: paused */
    if (k->paused)
        rd_kafka_pause_partitions(k->rk, parts);
    else
        rill__ksrc_resume_ready(k, parts);
    rill__ksrc_observe(k, RILL_REBALANCE_ASSIGNED, parts);
}

static void mark_revoking(ksrc_t *k, const rd_kafka_topic_partition_list_t *parts)
{
    for (int i = 0; i < parts->cnt; i++) {
        rill__tpart_t *p =
            rill__tracker_find(&k->tr, parts->elems[i].topic, parts->elems[i].partition);
        if (p)
            p->revoking = 1;
    }
    /* Stop emitting them now; what is buffered will be consumed again by
     * the next owner from the committed offset. */
    rill__ksrc_buffer_filter(k, rill__ksrc_keep_live);
}

static void on_revoke(ksrc_t *k, rd_kafka_topic_partition_list_t *parts)
{
    if (rd_kafka_assignment_lost(k->rk)) {
        /* Someone else may own them already: commit nothing. */
        mark_revoking(k, parts);
        remove_revoking(k);
        rill__kafka_let_go(k->rk, parts);
        if (k->txn_released)
            k->txn_released(k);
        rill__ksrc_observe(k, RILL_REBALANCE_LOST, parts);
        return;
    }
    if (k->revoking) /* cannot happen: librdkafka waits for our unassign */
        rill__ksrc_finish_revoke(k, now_ms());
    mark_revoking(k, parts);
    k->revoking = rd_kafka_topic_partition_list_copy(parts);
    k->revoke_deadline_ms = now_ms() + (int64_t)k->conf->o.drain_ms;
    if (k->closing || k->conf->o.drain_ms == 0)
        rill__ksrc_finish_revoke(k, now_ms() + (int64_t)k->conf->o.shutdown_ms);
    else
        maybe_finish_revoke(k);
}

static void on_rebalance(void *owner, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts)
{
    ksrc_t *k = owner;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS)
        on_assign(k, parts);
    else if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS)
        on_revoke(k, parts);
    else
        rd_kafka_assign(k->rk, NULL);
}

/* The revoke of the final close: the application is told (unless the end
 * of the run told it already), then everything confirmed is committed;
 * lost partitions commit nothing. */
static void on_final_revoke(void *owner, rd_kafka_topic_partition_list_t *parts, int lost,
                            int64_t deadline_ms)
{
    ksrc_t *k = owner;
    if (lost) {
        mark_revoking(k, parts);
        remove_revoking(k);
        if (parts && parts->cnt)
            rill__ksrc_observe(k, RILL_REBALANCE_LOST, parts);
        return;
    }
    if (parts && parts->cnt && !k->final_reported)
        rill__ksrc_observe(k, RILL_REBALANCE_REVOKED, parts);
    k->final_reported = 1;
    rill__ksrc_commit_sync(k, 0, deadline_ms);
}

int rill__ksrc_fatal_err(rd_kafka_resp_err_t err)
{
    switch (err) {
    case RD_KAFKA_RESP_ERR__FATAL:
    case RD_KAFKA_RESP_ERR__AUTHENTICATION:
    case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_SASL_AUTHENTICATION_FAILED:
    case RD_KAFKA_RESP_ERR__INVALID_ARG:
        return 1;
    default:
        return 0;
    }
}

/* An error event of the client (librdkafka's error callback, served in our
 * polls): a fatal error, or a fixed partition librdkafka cannot have
 * ("desired partition is not available"), fails the source; librdkafka
 * retries the rest on its own (counted in the stats). */
static void on_client_error(void *owner, rd_kafka_resp_err_t err, const char *reason)
{
    ksrc_t *k = owner;
    if (!k->st || k->broken || k->st->finished)
        return;
    char fatal[256];
    if (err == RD_KAFKA_RESP_ERR__FATAL && rd_kafka_fatal_error(k->rk, fatal, sizeof(fatal))) {
        k->broken = 1;
        rill__stage_fail(k->st, RILL_EKAFKA, "fatal consumer error: %s", fatal);
    } else if (rill__ksrc_fatal_err(err) ||
               (k->conf->fixed && (err == RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION ||
                                   err == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC ||
                                   err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART))) {
        k->broken = 1;
        rill__stage_fail(k->st, RILL_EKAFKA, "consumer error: %s", reason);
    }
}

const rill__ksession_ops_t rill__ksrc_session_ops = {.rebalance = on_rebalance,
                                                     .commit = on_commit_result,
                                                     .final_revoke = on_final_revoke,
                                                     .error = on_client_error};

/* ------------------------------------------------------------------ */
/* Settle notices                                                      */
/* ------------------------------------------------------------------ */

void rill__ksrc_settle_one(ksrc_t *k, uint64_t id, int64_t offset, int ok, int upto)
{
    /* The tracker counts the fenced ones (a partition released since). */
    rill__part_id_t pid = {id};
    size_t n = 1;
    rill__track_res_t res;
    if (!ok)
        res = rill__tracker_fail(&k->tr, pid, offset);
    else if (upto)
        res = rill__tracker_confirm_upto(&k->tr, pid, offset, &n);
    else
        res = rill__tracker_confirm(&k->tr, pid, offset);
    if (res != RILL__TRACK_ACCEPTED)
        return; /* fenced, settled already, committed past or truncated */
    if (ok)
        k->since_commit += (uint32_t)n;
    rill__tpart_t *p = rill__ksrc_part_by_id(k, id);
    if (p && p->revoking)
        maybe_finish_revoke(k);
}

/*
 * A record released with a verdict: a stage failed holding it (the
 * failure's suspect), it was rejected, or sent back for a retry. It is
 * failed in the tracker (never committed past) and counted in the holder,
 * which keeps the count across the restarts the failures cause; the
 * record is checked against it when it is polled again (consumer.c's
 * take_record). A reject and a retry want the record again within the
 * run, alone (a retry after its delay); a failed stage ends the run, and
 * the next one reads the record again from the committed offset.
 */
static void settle_verdict(ksrc_t *k, const rill__settle_note_t *n)
{
    rill__part_id_t pid = {n->key};
    if (rill__tracker_fail(&k->tr, pid, n->value) != RILL__TRACK_ACCEPTED)
        return; /* fenced, settled already, committed past */
    rill__tpart_t *p = rill__ksrc_part_by_id(k, n->key);
    if (!p)
        return;
    int reject = n->verdict == RILL__VERDICT_REJECT;
    uint32_t fails =
        rill__kholder_failed(k->holder, p->topic, p->partition, n->value, reject, n->text);
    if (reject)
        k->stats.rejected++;
    else
        k->stats.failures++;
    if (n->verdict == RILL__VERDICT_RETRY)
        k->stats.retried++;
    if (n->verdict != RILL__VERDICT_BLAME) {
        /* Back alone: after its delay, or at once when it is done for. */
        int64_t delay = reject || fails >= k->conf->o.max_failures ? 0 : n->delay_ms;
        rill__tracker_want(&k->tr, pid, n->value, now_ms() + delay);
    }
    if (p->revoking)
        maybe_finish_revoke(k);
}

void rill__ksrc_settle_batch(ksrc_t *k, const rill__settled_t *b)
{
    for (uint32_t i = 0; b && i < b->n; i++) {
        const rill__settle_note_t *n = &b->v[i];
        if (!n->ok && n->verdict)
            settle_verdict(k, n);
        else
            rill__ksrc_settle_one(k, n->key, n->value, n->ok, 0);
    }
}

/*
 * Fixed partitions must exist: librdkafka waits in silence for a topic
 * that does not exist (and reports a missing partition of one that does
 * only as an error event). Ask the cluster for its metadata once
 * (FIXED_CHECK_MS at most, on the executor, as the offset queries below);
 * an unknown topic or partition fails the source with a sentence for its
 * supervisor. All topics are asked for, none by name: a request naming a
 * topic, sent before librdkafka knows the broker's API versions, is a
 * version 0 request, which creates the topic where auto-creation is on
 * (the embedded broker's case). Without an answer (the brokers cannot be
 * reached) nothing is judged: the stats say the brokers are not up.
 * 0, or -1 after failing the stage.
 */
#define FIXED_CHECK_MS 5000

static const rd_kafka_metadata_topic_t *md_topic(const struct rd_kafka_metadata *md,
                                                 const char *topic)
{
    for (int i = 0; i < md->topic_cnt; i++)
        if (!strcmp(md->topics[i].topic, topic))
            return &md->topics[i];
    return NULL;
}

static int check_fixed_exist(ksrc_t *k, const rd_kafka_topic_partition_list_t *l)
{
    const struct rd_kafka_metadata *md = NULL;
    if (rd_kafka_metadata(k->rk, 1, NULL, &md, FIXED_CHECK_MS) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        !md) {
        if (md)
            rd_kafka_metadata_destroy(md);
        return 0; /* no answer: not judged */
    }
    int bad = 0;
    for (int i = 0; i < l->cnt && !bad; i++) {
        const rd_kafka_topic_partition_t *tp = &l->elems[i];
        const rd_kafka_metadata_topic_t *mt = md_topic(md, tp->topic);
        if (!mt || mt->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) {
            rill__stage_fail(k->st, RILL_EKAFKA, "fixed partition %s [%d]: topic %s does not exist",
                             tp->topic, (int)tp->partition, tp->topic);
            bad = 1;
            break;
        }
        if (mt->err)
            continue; /* being made, leaderless: not judged */
        int found = 0;
        for (int q = 0; q < mt->partition_cnt && !found; q++)
            found = mt->partitions[q].id == tp->partition;
        if (!found) {
            rill__stage_fail(k->st, RILL_EKAFKA,
                             "fixed partition %s [%d] does not exist: %s has %d partition(s)",
                             tp->topic, (int)tp->partition, tp->topic, mt->partition_cnt);
            bad = 1;
        }
    }
    rd_kafka_metadata_destroy(md);
    if (bad)
        k->broken = 1;
    return bad ? -1 : 0;
}

/* Subscribe, or assign the fixed partitions: a fresh session. */
void rill__ksrc_first_start(ksrc_t *k)
{
    rill_consumer_conf_t *c = k->conf;
    if (c->n_topics) {
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)c->n_topics);
        for (size_t i = 0; i < c->n_topics; i++)
            rd_kafka_topic_partition_list_add(l, c->topics[i], RD_KAFKA_PARTITION_UA);
        rd_kafka_resp_err_t err = rd_kafka_subscribe(k->rk, l);
        rd_kafka_topic_partition_list_destroy(l);
        if (err)
            rill__stage_fail(k->st, RILL_EKAFKA, "subscribe: %s", rd_kafka_err2str(err));
        return;
    }
    /* Fixed partitions: resolve committed/logical offsets to concrete
     * ones first (a logical start offset costs librdkafka 2.0.2 a 500 ms
     * offset-query timer), then assign. */
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_copy(c->fixed);
    if (check_fixed_exist(k, l) || rill__ksrc_ask_assigned(k, l)) {
        rd_kafka_topic_partition_list_destroy(l);
        return;
    }
    int need_committed = 0;
    for (int i = 0; i < l->cnt; i++)
        need_committed |= l->elems[i].offset == RILL_OFFSET_COMMITTED;
    /* These block the executor (a stop waits for them): all of them
     * together get LOOKUP_MS; what is not resolved by then is left to
     * librdkafka. */
    int64_t deadline = now_ms() + LOOKUP_MS;
    if (need_committed)
        rd_kafka_committed(k->rk, l, rill__ms_left(deadline));
    for (int i = 0; i < l->cnt; i++) {
        rd_kafka_topic_partition_t *tp = &l->elems[i];
        if (tp->offset >= 0)
            continue;
        int64_t lo = 0, hi = 0;
        int left = rill__ms_left(deadline);
        if (left > 0 && rd_kafka_query_watermark_offsets(k->rk, tp->topic, tp->partition, &lo, &hi,
                                                         left) == RD_KAFKA_RESP_ERR_NO_ERROR) {
            if (tp->offset == RILL_OFFSET_END)
                tp->offset = hi;
            else if (tp->offset == RILL_OFFSET_BEGINNING)
                tp->offset = lo;
            else
                tp->offset = k->reset_earliest ? lo : hi;
        }
        tp->err = 0;
    }
    /*
     * Name each topic to the client before the assign: a topic the assign
     * makes itself may wait for librdkafka's next one-second topic scan
     * before it knows the leaders (2.8: the first fetch came ~1 s late in
     * about one start in four, the metadata of check_fixed_exist cached
     * but not applied to the new topic). A topic made here takes the
     * cached metadata, or asks for it at once. The topics exist (checked
     * above), so asking for one by name creates nothing.
     */
    rd_kafka_topic_t *named[8];
    int n_named = 0;
    for (int i = 0; i < l->cnt && n_named < 8; i++) {
        int seen = 0;
        for (int j = 0; j < i && !seen; j++)
            seen = !strcmp(l->elems[j].topic, l->elems[i].topic);
        if (!seen && (named[n_named] = rd_kafka_topic_new(k->rk, l->elems[i].topic, NULL)))
            n_named++;
    }
    rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
    if (track_assigned(k, l) == 0) {
        err = rd_kafka_assign(k->rk, l);
        if (!err)
            rill__ksrc_later_hold(k);
        if (!err)
            rill__ksrc_observe(k, RILL_REBALANCE_ASSIGNED, l);
        else
            rill__stage_fail(k->st, RILL_EKAFKA, "assign: %s", rd_kafka_err2str(err));
    }
    for (int i = 0; i < n_named; i++)
        rd_kafka_topic_destroy(named[i]); /* the assignment keeps the topic */
    rd_kafka_topic_partition_list_destroy(l);
}

/* A session an earlier run parked: its assignment is ours now, paused.
 * Each partition goes on where that run left it (or where the assigned
 * callback says), the others from the committed offsets. */
void rill__ksrc_resume_start(ksrc_t *k)
{
    rd_kafka_topic_partition_list_t *a = NULL;
    if (rd_kafka_assignment(k->rk, &a) != RD_KAFKA_RESP_ERR_NO_ERROR || !a) {
        rill__stage_fail(k->st, RILL_EKAFKA, "cannot read the kept assignment");
        return;
    }
    const rd_kafka_topic_partition_list_t *resume = rill__ksession_resume(k->s);
    for (int i = 0; i < a->cnt; i++) {
        rd_kafka_topic_partition_t *tp = &a->elems[i];
        rd_kafka_topic_partition_t *r =
            resume ? rd_kafka_topic_partition_list_find(resume, tp->topic, tp->partition) : NULL;
        tp->offset = r ? r->offset : RD_KAFKA_OFFSET_INVALID;
    }
    if (a->cnt && (rill__ksrc_ask_assigned(k, a) || track_assigned(k, a))) {
        rd_kafka_topic_partition_list_destroy(a);
        return;
    }
    rill__ksrc_later_hold(k); /* those waiting for their start stay paused */
    rill__ksrc_resume_ready(k, a);
    /* After the resume: a resumed partition fetches from where the last
     * run's polls got to; the seek moves it back (and what was fetched
     * before it is discarded). */
    rd_kafka_topic_partition_list_t *seek = rd_kafka_topic_partition_list_new(a->cnt ? a->cnt : 1);
    for (int i = 0; i < a->cnt; i++)
        if (a->elems[i].offset >= 0 || a->elems[i].offset == RD_KAFKA_OFFSET_BEGINNING ||
            a->elems[i].offset == RD_KAFKA_OFFSET_END) /* the assigned callback's */
            rd_kafka_topic_partition_list_add(seek, a->elems[i].topic, a->elems[i].partition)
                ->offset = a->elems[i].offset;
    if (seek->cnt) {
        rd_kafka_error_t *e = rd_kafka_seek_partitions(k->rk, seek, 0);
        if (e)
            rd_kafka_error_destroy(e);
    }
    rd_kafka_topic_partition_list_destroy(seek);
    if (a->cnt)
        rill__ksrc_observe(k, RILL_REBALANCE_ASSIGNED, a);
    rd_kafka_topic_partition_list_destroy(a);
}

/* Where each partition goes on in the next run: the first record not
 * confirmed, or the first polled and dropped, whichever is lower. */
rd_kafka_topic_partition_list_t *rill__ksrc_resume_list(ksrc_t *k)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(8);
    for (rill__tpart_t *p = rill__tracker_next(&k->tr, NULL); l && p;
         p = rill__tracker_next(&k->tr, p)) {
        /* (rill.commit=transaction: what the last transaction committed) */
        int64_t at = !k->conf->o.txn ? p->committable : p->txn_has_base ? p->txn_base : -1;
        if (p->dropped && (at < 0 || p->dropped_from < at))
            at = p->dropped_from;
        if (at >= 0)
            rd_kafka_topic_partition_list_add(l, p->topic, p->partition)->offset = at;
    }
    return l;
}

/*
 * Pausing. The buffer sat at or above rill.buffer.low for
 * rill.pause.after.ms: downstream is slower than Kafka. Pausing then frees
 * librdkafka's prefetch and keeps the source serving events whatever the
 * pipeline does, but a resumed partition is fetched again only up to a
 * second later (librdkafka 2.0.2 and 2.8.0 alike). A downstream that still
 * took two buffers (2 x rill.buffer.high records) in that time is fast: it
 * empties the low watermark's worth in well under the resume delay, so a
 * pause would starve it for that second after every resume (a consumer
 * catching up on a backlog paused once a second, with a one-second gap
 * each time, branch mem's bench_backlog traces), and the prefetch limit
 * bounds memory anyway. So such a window starts over instead; a slow or
 * stalled downstream is paused.
 */
int rill__ksrc_pause_due(ksrc_t *k)
{
    const rill__kopts_t *o = &k->conf->o;
    int64_t now = now_ms();
    if (now - k->full_since_ms < (int64_t)o->pause_after_ms)
        return 0;
    if (k->stats.emitted - k->full_emitted >= 2 * (uint64_t)o->buffer_high) {
        k->full_since_ms = now;
        k->full_emitted = k->stats.emitted;
        return 0;
    }
    return 1;
}

/*
 * Waking a fetcher that sleeps with records waiting (librdkafka before
 * 2.2). librdkafka stops fetching while the consumer queue is over
 * queued.min.messages or queued.max.messages.kbytes (the check counts the
 * whole consumer queue), and nothing wakes its broker thread when the
 * application drains the queue: it looks again after its fixed 1 s wait
 * (confluentinc/librdkafka#2879; 2.2 made the wait fetch.queue.backoff.ms,
 * which rill sets there). A consumer that drains the queue faster than a
 * second then sits idle for the rest of it: bench_consume on 2.0.2 spent
 * 1.9 of its 2.1 s so (500,000 records, 8 MiB queue limit).
 *
 * So when the queue was seen at a limit (fetcher_full) and then runs dry,
 * or a whole tick brings no record, each partition whose last known high
 * watermark is past its position is sought to that position: nothing is
 * skipped or fetched twice (the queue is empty, the position is the next
 * record not polled), and the seek wakes the broker thread, which fetches
 * at once. Only after a limit was seen: a fetch under way when the seek
 * comes is thrown away and sent again, so nudging a fetcher that was not
 * asleep would only cost.
 */
void rill__ksrc_nudge_init(ksrc_t *k)
{
    k->fetch_nudge = !rill__has_fetch_queue_backoff();
    char v[32];
    size_t size = sizeof(v);
    const rd_kafka_conf_t *kc = rd_kafka_conf(k->rk);
    k->q_min_msgs = rd_kafka_conf_get(kc, "queued.min.messages", v, &size) == RD_KAFKA_CONF_OK
                        ? strtoull(v, NULL, 10)
                        : 100000;
    size = sizeof(v);
    k->q_max_bytes =
        1024 * (rd_kafka_conf_get(kc, "queued.max.messages.kbytes", v, &size) == RD_KAFKA_CONF_OK
                    ? strtoull(v, NULL, 10)
                    : 65536);
}

void rill__ksrc_nudge_sample(ksrc_t *k)
{
    if (!k->fetch_nudge || k->fetcher_full)
        return;
    uint64_t n = (uint64_t)rd_kafka_queue_length(k->q);
    uint64_t avg = k->stats.polled ? k->bytes_polled / k->stats.polled : 0;
    if (n * 10 >= k->q_min_msgs * 9 || n * avg * 10 >= k->q_max_bytes * 9)
        k->fetcher_full = 1;
}

void rill__ksrc_nudge(ksrc_t *k)
{
    if (k->st->finished || k->paused || k->revoking || k->buf.count >= k->conf->o.buffer_low)
        return;
    k->fetcher_full = 0;
    rd_kafka_topic_partition_list_t *a = NULL, *lag = NULL;
    if (rd_kafka_assignment(k->rk, &a) != RD_KAFKA_RESP_ERR_NO_ERROR || !a)
        return;
    if (rd_kafka_position(k->rk, a) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        for (int i = 0; i < a->cnt; i++) {
            rd_kafka_topic_partition_t *t = &a->elems[i];
            /* Not one with a seek of its own under way (a redelivery, a
             * truncation): its position may not say where it goes on. */
            rill__tpart_t *p = rill__tracker_find(&k->tr, t->topic, t->partition);
            if (!p || p->revoking || p->pending || p->purge_from >= 0)
                continue;
            int64_t lo, hi;
            if (t->offset < 0 ||
                rd_kafka_get_watermark_offsets(k->rk, t->topic, t->partition, &lo, &hi) !=
                    RD_KAFKA_RESP_ERR_NO_ERROR ||
                hi <= t->offset)
                continue;
            if (!lag && !(lag = rd_kafka_topic_partition_list_new(a->cnt)))
                break;
            rd_kafka_topic_partition_list_add(lag, t->topic, t->partition)->offset = t->offset;
        }
    }
    rd_kafka_topic_partition_list_destroy(a);
    if (!lag)
        return;
    rd_kafka_error_t *e = rd_kafka_seek_partitions(k->rk, lag, 0);
    if (e)
        rd_kafka_error_destroy(e);
    k->stats.fetch_nudges++;
    rd_kafka_topic_partition_list_destroy(lag);
}
