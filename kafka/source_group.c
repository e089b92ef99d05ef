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

static void report_commit(ksrc_t *k, rd_kafka_resp_err_t err,
                          const rd_kafka_topic_partition_list_t *offsets)
{
    int failed = err != RD_KAFKA_RESP_ERR_NO_ERROR;
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
    }
    if (k->conf->commit_cb && offsets && offsets->cnt)
        k->conf->commit_cb(k->conf->commit_opaque, err, offsets);
}

/* An async commit's result, served by our polls. */
static void on_commit_result(void *owner, rd_kafka_resp_err_t err,
                             rd_kafka_topic_partition_list_t *offsets)
{
    ksrc_t *k = owner;
    if (k->commits_out && --k->commits_out)
        k->commit_sent_ms = now_ms(); /* the next one is younger: roughly */
    if (err == RD_KAFKA_RESP_ERR__NO_OFFSET)
        return; /* nothing to commit */
    report_commit(k, err, offsets);
}

/* The offsets to commit: partitions whose committable offset moved. With
 * only_revoking, just the revoking ones. */
static rd_kafka_topic_partition_list_t *commit_list(ksrc_t *k, int only_revoking)
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
    k->since_commit = 0;
    k->last_commit_ms = now_ms();
    if (!k->conf->o.commit)
        return;
    rd_kafka_topic_partition_list_t *l = commit_list(k, 0);
    if (!l)
        return;
    /* The result comes back through on_commit_result when we poll. */
    rd_kafka_resp_err_t err = rd_kafka_commit(k->rk, l, 1);
    if (err) {
        report_commit(k, err, l);
    } else if (k->commits_out++ == 0) {
        k->commit_sent_ms = now_ms();
    }
    rd_kafka_topic_partition_list_destroy(l);
}

/* Commit and wait for the result, at most until deadline. */
void rill__ksrc_commit_sync(ksrc_t *k, int only_revoking, int64_t deadline)
{
    if (!k->conf->o.commit)
        return;
    rd_kafka_topic_partition_list_t *l = commit_list(k, only_revoking);
    if (!l)
        return;
    rd_kafka_queue_t *tq = rd_kafka_queue_new(k->rk);
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
                report_commit(k, rd_kafka_event_error(ev), res ? res : l);
                rd_kafka_event_destroy(ev);
                err = RD_KAFKA_RESP_ERR_NO_ERROR;
                break;
            }
            rd_kafka_event_destroy(ev);
            if (left == 0)
                break;
        }
        if (err)
            report_commit(k, err, l);
    } else {
        report_commit(k, err, l);
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
            rd_kafka_resume_partitions(k->rk, a);
        rd_kafka_topic_partition_list_destroy(a);
    }
    k->paused = pause;
    k->stats.paused = pause;
    if (pause)
        k->stats.pauses++;
}

/* Release revoked partitions: commit what was confirmed, then tell
 * librdkafka; notices for them are fenced from now on. */
void rill__ksrc_finish_revoke(ksrc_t *k, int64_t deadline)
{
    rd_kafka_topic_partition_list_t *l = k->revoking;
    if (!l)
        return;
    k->revoking = NULL;
    rill__ksrc_commit_sync(k, 1, deadline);
    rill__kafka_let_go(k->rk, l);
    remove_revoking(k);
    rill__ksrc_observe(k, RILL_REBALANCE_REVOKED, l);
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

/* The application's assigned callback: where each partition starts.
 * 0, or -1 after failing the stage. */
static int ask_assigned_cb(ksrc_t *k, rd_kafka_topic_partition_list_t *parts)
{
    rill_consumer_conf_t *c = k->conf;
    if (c->assigned_cb && c->assigned_cb(c->assigned_opaque, parts)) {
        rill__stage_fail(k->st, RILL_ESTATE, "the assigned callback refused the assignment");
        return -1;
    }
    return 0;
}

static void on_assign(ksrc_t *k, rd_kafka_topic_partition_list_t *parts)
{
    for (int i = 0; k->conf->assigned_cb && i < parts->cnt; i++)
        parts->elems[i].offset = RD_KAFKA_OFFSET_INVALID;
    if (ask_assigned_cb(k, parts) || track_assigned(k, parts))
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
    if (k->paused)
        rd_kafka_pause_partitions(k->rk, parts);
    else
        rd_kafka_resume_partitions(k->rk, parts);
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

/* The revoke of the final close: everything confirmed is committed now. */
static void on_final_revoke(void *owner, rd_kafka_topic_partition_list_t *parts)
{
    ksrc_t *k = owner;
    rill__ksrc_commit_sync(k, 0, now_ms() + (int64_t)k->conf->o.shutdown_ms);
    if (parts && parts->cnt)
        rill__ksrc_observe(k, RILL_REBALANCE_REVOKED, parts);
}

const rill__ksession_ops_t rill__ksrc_session_ops = {
    .rebalance = on_rebalance, .commit = on_commit_result, .final_revoke = on_final_revoke};

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

void rill__ksrc_settle_batch(ksrc_t *k, const rill__settled_t *b)
{
    for (uint32_t i = 0; b && i < b->n; i++)
        rill__ksrc_settle_one(k, b->v[i].key, b->v[i].value, b->v[i].ok, 0);
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
    int need_committed = 0;
    for (int i = 0; i < l->cnt; i++)
        need_committed |= l->elems[i].offset == RILL_OFFSET_COMMITTED;
    if (need_committed)
        rd_kafka_committed(k->rk, l, 10000);
    for (int i = 0; i < l->cnt; i++) {
        rd_kafka_topic_partition_t *tp = &l->elems[i];
        if (tp->offset >= 0)
            continue;
        int64_t lo = 0, hi = 0;
        if (rd_kafka_query_watermark_offsets(k->rk, tp->topic, tp->partition, &lo, &hi, 10000) ==
            RD_KAFKA_RESP_ERR_NO_ERROR) {
            if (tp->offset == RILL_OFFSET_END)
                tp->offset = hi;
            else if (tp->offset == RILL_OFFSET_BEGINNING)
                tp->offset = lo;
            else
                tp->offset = k->reset_earliest ? lo : hi;
        }
        tp->err = 0;
    }
    rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
    if (track_assigned(k, l) == 0) {
        err = rd_kafka_assign(k->rk, l);
        if (!err)
            rill__ksrc_observe(k, RILL_REBALANCE_ASSIGNED, l);
        else
            rill__stage_fail(k->st, RILL_EKAFKA, "assign: %s", rd_kafka_err2str(err));
    }
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
    if (a->cnt && (ask_assigned_cb(k, a) || track_assigned(k, a))) {
        rd_kafka_topic_partition_list_destroy(a);
        return;
    }
    rd_kafka_resume_partitions(k->rk, a);
    /* After the resume: a resumed partition fetches from where the last
     * run's polls got to; the seek moves it back (and what was fetched
     * before it is discarded). */
    rd_kafka_topic_partition_list_t *seek = rd_kafka_topic_partition_list_new(a->cnt ? a->cnt : 1);
    for (int i = 0; i < a->cnt; i++)
        if (a->elems[i].offset >= 0)
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
        int64_t at = p->committable;
        if (p->dropped && (at < 0 || p->dropped_from < at))
            at = p->dropped_from;
        if (at >= 0)
            rd_kafka_topic_partition_list_add(l, p->topic, p->partition)->offset = at;
    }
    return l;
}
