/*
 * The Kafka source's state, shared by its two files (not installed):
 * consumer.c (the stage kind: polling, redelivery, dead letters, the end
 * of a run, the API) uses source_group.c (what it does with its group and
 * its partitions: the buffer, commits, pauses, rebalances, settle notices,
 * starting fresh or from a kept session), never the other way round.
 */
#ifndef RILL_KAFKA_SOURCE_H
#define RILL_KAFKA_SOURCE_H

#include "../streams/stream_int.h"
#include "kafka_int.h"

#define K_WAKE         RILL__CONSUMER_WAKE
#define K_CONFIRM_UPTO RILL__CONSUMER_CONFIRM_UPTO
#define K_TICK         RILL__CONSUMER_TICK
#define K_STATS        RILL__CONSUMER_STATS
#define K_IDLE_COMMIT  RILL__CONSUMER_IDLE_COMMIT
#define K_START        RILL__CONSUMER_START
#define K_TXN          RILL__CONSUMER_TXN

#define TICK_MS          100
#define MAX_PARTS        4096u
/* An async commit not answered this long is sent again (a broker outage
 * can keep the first unanswered for socket.timeout.ms). */
#define COMMIT_RESEND_MS 5000

typedef struct ksrc {
    /* ---- the blueprint ---- */
    rill_consumer_conf_t *conf; /* owned */
    rill__kholder_t *holder;    /* shared by the copies of one spec */

    /* ---- one run (prepare, then the actor) ---- */
    rill_system_t *sys;
    rill__ksession_t *s;
    rd_kafka_t *rk;
    rd_kafka_queue_t *q;
    rill__khandle_t *h;
    long h_banked; /* references of h taken ahead, for records to come */
    rill__dlq_t dlq;
    int prepared, started;
    int reset_earliest; /* auto.offset.reset */
    rill__kq_t kq;
    rill__stage_t *st;

    rill__tracker_t tr;
    rill__tpart_t *last_hit; /* the partition of the last record polled */
    rill__equeue_t buf;      /* polled records waiting for demand */
    int paused;
    /* The buffer has not been below the low watermark since (0 = it is
     * below now): how long downstream has been slower than Kafka. */
    int64_t full_since_ms;
    uint64_t full_emitted; /* stats.emitted when full_since_ms was set */
    uint32_t since_commit;
    int64_t last_commit_ms, last_redeliver_check_ms, last_forget_ms;
    int idle_commit_timer;  /* a K_IDLE_COMMIT is on its way */
    uint32_t commits_out;   /* async commits not answered yet (at most one but after a resend) */
    int commit_due;         /* a commit came due while one was out */
    int64_t commit_sent_ns; /* when the oldest of them went (rill__now_ns) */

    /* a revoke waiting for its in-flight confirms */
    rd_kafka_topic_partition_list_t *revoking;
    int64_t revoke_deadline_ms;
    int closing;
    int final_reported;         /* the end of the run was told (REVOKED) */
    int64_t linger_deadline_ms; /* st->lingering: waiting for notices */
    int broken;                 /* a fatal client error: the session is not kept */
    int64_t blocked_since_ms;   /* stats.blocked: since when */
    int blocked_logged;         /* this blocked episode was logged */
    /* librdkafka before 2.2 (fetch_nudge): its fetcher's queue limits
     * (queued.min.messages, queued.max.messages.kbytes in bytes), the
     * payload bytes polled (for the average record), and whether the
     * queue was seen at a limit since the last nudge. */
    int fetch_nudge;
    uint64_t q_min_msgs, q_max_bytes, bytes_polled;
    int fetcher_full;
    uint64_t polled_at_tick; /* stats.polled at the last tick */

    /* The assignments (rill_assignment_t) some partition waits under
     * for its start (source_bounds.c), with a reference each. */
    rill_assignment_t **later;
    size_t n_later, cap_later;
    /* Partition ends polled and not told yet (source_bounds.c): told once
     * the `ahead` records buffered before them went out. */
    struct rill__kend {
        uint64_t id; /* the partition's assignment id */
        int64_t offset;
        size_t ahead;
    } * ends;
    size_t n_ends, cap_ends;

    /* rill.commit=transaction (source_txn.c) */
    rill_aid_t txn_sink;           /* the transactional sink that joined */
    int txn_sink_left;             /* it ended (LEAVE) */
    uint64_t txn_floor;            /* ids of older generations are stale */
    struct rill__txn_ask *txn_ask; /* an OFFSETS request waiting for its confirms */
    int64_t txn_ask_deadline_ms;
    rd_kafka_topic_partition_list_t *txn_sent; /* answered, not committed yet */
    uint64_t txn_sent_seq;
    int64_t txn_sent_ns;
    int txn_barrier; /* 0, 1: a revoke waits for the sink's END, 2: it came */
    int64_t txn_barrier_deadline_ms;
    /* rill.commit=transaction: source_txn.c's answers to a revoke, set by
     * consumer.c (source_group.c calls them, source_txn.c calls it):
     * hold: 1 if the release must wait for the sink's transaction to end
     * (asked now or before); released: partitions went (revoked or lost),
     * rewind the others and tell the sink the new floor. NULL otherwise. */
    int (*txn_hold)(struct ksrc *k);
    void (*txn_released)(struct ksrc *k);

    rill_consumer_stats_t stats;
} ksrc_t;

static inline int64_t now_ms(void)
{
    return rill__now_ms();
}

/* ---- source_group.c ---- */

/* The partition of an assignment id (NULL: fenced), of a record. */
rill__tpart_t *rill__ksrc_part_by_id(ksrc_t *k, uint64_t id);
rill__tpart_t *rill__ksrc_part_of_msg(ksrc_t *k, const rd_kafka_message_t *m);
/* Tell the application's rebalance callback (and count it). */
void rill__ksrc_observe(ksrc_t *k, rill_rebalance_event_t ev,
                        const rd_kafka_topic_partition_list_t *parts);
/* A polled record goes unemitted at the end of a run: the next run must
 * start its partition at or before it. */
void rill__ksrc_note_dropped(ksrc_t *k, const rd_kafka_message_t *m);
/* Drop everything buffered (the run is ending), noting it. */
void rill__ksrc_drop_buffer(ksrc_t *k);
/* Drop the buffered records for which keep() is 0. */
void rill__ksrc_buffer_filter(ksrc_t *k, int (*keep)(ksrc_t *, const rill_elem_t *));
/* keep() for records of live partitions, not stale after a seek back. */
int rill__ksrc_keep_live(ksrc_t *k, const rill_elem_t *e);
/* Commits: send every partition's offset again next time; async; sync
 * with a deadline (all, or the revoking partitions only). */
void rill__ksrc_commit_again_all(ksrc_t *k);
/* Send the commit that came due while one was out, once it is answered;
 * or commit if everything out is confirmed and nothing is unanswered, at
 * most every hundredth of rill.commit.interval.ms (source_group.c). */
void rill__ksrc_idle_commit(ksrc_t *k);
void rill__ksrc_commit_async(ksrc_t *k);
void rill__ksrc_commit_sync(ksrc_t *k, int only_revoking, int64_t deadline);
/* Before the final commit: wait (at most a second, and until deadline)
 * for the answer of the async commit out, paused and polling; records
 * polled meanwhile are dropped like the buffer's (rill__ksrc_note_dropped). */
void rill__ksrc_await_commit(ksrc_t *k, int64_t deadline);
/* Pause or resume every assigned partition. */
void rill__ksrc_set_paused(ksrc_t *k, int pause);
/* Commit and release the partitions being revoked. */
void rill__ksrc_finish_revoke(ksrc_t *k, int64_t deadline);
/* An error librdkafka reports that fails the source (fatal, auth). */
int rill__ksrc_fatal_err(rd_kafka_resp_err_t err);
/* What the session tells its owner (rebalances, commit results, errors). */
extern const rill__ksession_ops_t rill__ksrc_session_ops;
/* A settle notice: confirmed (ok) or released; upto: every record of the
 * partition up to offset. A batch of them. */
void rill__ksrc_settle_one(ksrc_t *k, uint64_t id, int64_t offset, int ok, int upto);
void rill__ksrc_settle_batch(ksrc_t *k, const rill__settled_t *b);
/* Start a fresh session (subscribe, or assign the fixed partitions), or
 * take over a kept one. */
void rill__ksrc_first_start(ksrc_t *k);
void rill__ksrc_resume_start(ksrc_t *k);
/* Waking librdkafka's fetcher before 2.2, when it sleeps with records
 * waiting (source_group.c says why and how): read its queue limits at the
 * start of a run; note whether the consumer queue is near one (9/10 of
 * it: sampled only when we poll); seek the lagging partitions to their
 * positions, which wakes it. */
void rill__ksrc_nudge_init(ksrc_t *k);
void rill__ksrc_nudge_sample(ksrc_t *k);
/* The buffer is at rill.buffer.high: 1 if the partitions should be paused
 * now (see source_group.c), 0 if the source should just stop polling. */
int rill__ksrc_pause_due(ksrc_t *k);
void rill__ksrc_nudge(ksrc_t *k);
/* Where each partition goes on in the next run (NULL without memory). */
rd_kafka_topic_partition_list_t *rill__ksrc_resume_list(ksrc_t *k);

/* The offsets to commit: partitions whose committable offset moved (with
 * only_revoking, just the revoking ones); with mark, taken as sent. NULL
 * if none. */
rd_kafka_topic_partition_list_t *rill__ksrc_commit_list(ksrc_t *k, int only_revoking, int mark);
/* A commit's result (counts, latency, acked offsets, the commit callback);
 * sent_ns: when it was requested (0: it never went). */
void rill__ksrc_report_commit(ksrc_t *k, rd_kafka_resp_err_t err,
                              const rd_kafka_topic_partition_list_t *offsets, int64_t sent_ns);

/* ---- source_txn.c: rill.commit=transaction (protocol in txn.h) ---- */

/* A RILL__CONSUMER_TXN message from a transactional sink. */
void rill__ksrc_txn_msg(ksrc_t *k, rill_msg_t *m);
/* Answer the OFFSETS request waiting, if its confirms are in or its time
 * is up. */
void rill__ksrc_txn_check(ksrc_t *k);
/* A revoke is about to release its partitions: 1 if it must wait for the
 * sink's transaction to end first (asked now or before), 0 to go on. */
int rill__ksrc_txn_barrier(ksrc_t *k);
/* Partitions were released (revoked or lost): rewind the others, and tell
 * the sink the new floor. */
void rill__ksrc_txn_released(ksrc_t *k);
/* The run ends: free what the protocol holds. */
void rill__ksrc_txn_free(ksrc_t *k);

/* ---- source_stats.c: figures for observability ---- */

/* The figures of stats that come from elsewhere than k->stats: group,
 * lag, e2e_latency (the tracker's). */
void rill__ksrc_stats_fill(ksrc_t *k, rill_consumer_stats_t *s);
/* What rill_consumer_partitions answers: the assigned partitions. */
typedef struct rill__kparts_reply {
    size_t n;
    rill_partition_stats_t v[];
} rill__kparts_reply_t;
/* A new reply (free() it), NULL without memory. */
rill__kparts_reply_t *rill__ksrc_partitions(ksrc_t *k);

/* ---- source_dead.c: records given up on, or not processed again ---- */

/* A dead letter's delivery result (RILL_MSG_DELIVERY, seq = msg->arg). */
void rill__ksrc_dlq_result(ksrc_t *k, const rill_delivery_t *d, uint64_t seq);
/* A record about to be emitted that processing failed on too often, or
 * that was redelivered too often: 1 if it was given up (dead letter,
 * skip, or the stage fails), 0 to emit it. In emit order. */
int rill__ksrc_done_for(ksrc_t *k, rill__tpart_t *p, const rd_kafka_message_t *m);
/* A record the previous run confirmed past its stop: confirmed again
 * without being emitted; 1 if it was one. In emit order. */
int rill__ksrc_confirmed_before(ksrc_t *k, rill__tpart_t *p, const rd_kafka_message_t *m);
/* Leave the next run the records confirmed past the first one not. */
void rill__ksrc_leave_confirmed_ahead(ksrc_t *k);

/* ---- source_bounds.c: starts told later, ends ---- */

/* Ask the assigned callback where parts start (0, or -1 after failing the
 * stage); partitions it left RILL_OFFSET_LATER get
 * RD_KAFKA_OFFSET_INVALID in parts and are noted for
 * rill__ksrc_later_hold(). */
int rill__ksrc_ask_assigned(ksrc_t *k, rd_kafka_topic_partition_list_t *parts);
/* After the partitions were tracked and taken: hold the noted ones
 * paused until their answer. */
void rill__ksrc_later_hold(ksrc_t *k);
/* A K_START message: an answer (seek and let fetch), or a failure. */
void rill__ksrc_later_msg(ksrc_t *k, rill_msg_t *msg);
/* A tracked partition goes: it waits no more. */
void rill__ksrc_later_forget(ksrc_t *k, rill__tpart_t *p);
/* Resume every assigned partition but those waiting. */
void rill__ksrc_resume_ready(ksrc_t *k, rd_kafka_topic_partition_list_t *parts);
/* The run ends: no answer is taken any more, no end told. */
void rill__ksrc_later_end(ksrc_t *k);
/* A partition's end was polled (RD_KAFKA_RESP_ERR__PARTITION_EOF): tell
 * the end callback once what was buffered before it went out. */
void rill__ksrc_end_seen(ksrc_t *k, const rd_kafka_message_t *m);
/* The pump took `popped` records from the buffer: tell the ends due. */
void rill__ksrc_ends_pass(ksrc_t *k, size_t popped);

#endif /* RILL_KAFKA_SOURCE_H */
