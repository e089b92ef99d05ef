/*
 * The core every stateful stage kind runs on (core.c): one store
 * transaction at a time holding the records processed since the last
 * commit, with the offset after the last of them per partition; committed
 * every commit_count records or commit_ms, then those records are
 * confirmed; aborted on a failure, and then they are released unconfirmed.
 * A kind (stage.c: rill_stage_stateful; window.c: rill_stage_window) keeps
 * a rill__sf_t in its impl and calls these from its hooks, all on the
 * stage's executor (a write transaction begins and ends on one thread).
 */
#ifndef RILL_STATE_CORE_H
#define RILL_STATE_CORE_H

#include <rill/kafka.h>

#include "../streams/kinds.h"
#include "changelog.h"
#include "state_int.h"

/* A partition the stage has seen: its state prefix and, while a
 * transaction is open, the offset the transaction will store. */
typedef struct rill__sf_part {
    char *topic;
    int32_t partition;
    int64_t next;    /* the offset after the last record applied */
    int dirty;       /* next changed in the open transaction */
    int64_t clpos;   /* changelog: the position after this transaction's offset record */
    uint64_t cl_gen; /* the changelog's pending_gen when no restore of this partition was pending */
    size_t prefix_len;
    uint8_t prefix[1 + RILL__TOPIC_MAX + 1 + 4];
} rill__sf_part_t;

typedef struct rill__sf {
    /* parameters (the blueprint): set by the kind's constructor */
    rill_store_t *store;
    uint32_t commit_count;
    uint32_t commit_ms;
    /* The kind's own writes into the open transaction just before it
     * commits (NULL: none): 0, or -1 after aborting and failing the stage. */
    int (*before_commit)(struct rill__sf *c);
    /* a run's state */
    rill__stage_t *st;
    int owner;            /* this run holds the store's writer slot */
    void *txn;            /* the open write transaction, or NULL */
    rill_origin_t **held; /* origins of the records in txn */
    size_t n_held, cap_held;
    rill__sf_part_t *parts;
    size_t n_parts, cap_parts;
    size_t last_part;
    rill_state_t view;
    rill__sf_part_t *view_part; /* the partition view is set up for (NULL: none) */
    rill__equeue_t q;           /* outputs waiting for demand */
    rill_timer_t timer;
    int timer_armed;
    uint64_t gen; /* which transaction the armed timer is for */
    int upstream_done;
    /* The changelog (store->cl): a producer of the stage's, the changes of
     * the open transaction, and the flush that sends them before the
     * commit; inputs that arrive meanwhile wait in `deferred`. */
    rill_aid_t producer;
    rill__cl_batch_t changes;
    int changes_lost; /* a change could not be kept (no memory): the commit fails */
    int flushing;
    rill_produce_t **reqs; /* the flush's requests; those from next_send on not taken yet */
    size_t n_reqs, next_send;
    uint32_t awaiting; /* deliveries still to come */
    int resend_armed;
    int end_after_flush; /* the input completed during the flush */
    int replaying;       /* after_flush hands the deferred inputs on */
    rill__equeue_t deferred;
    /* A kind's messages that must wait for the flush (rill__sf_hold_msg). */
    rill_msg_t *held_msgs;
    size_t n_held_msgs, cap_held_msgs;
} rill__sf_t;

/* Fill the parameters (opts may be NULL: the defaults). */
void rill__sf_init(rill__sf_t *c, rill_store_t *store, const rill_stateful_opts_t *opts);
/* A fresh core with b's parameters, for one more run. */
void rill__sf_clone(rill__sf_t *c, const rill__sf_t *b);
/* The stage starts: take the store's writer slot (RILL_ESTATE if another
 * stage holds it) and the output queue. */
rill_err_t rill__sf_start(rill__sf_t *c, rill__stage_t *st);
/* Abort what is open, free everything, give the writer slot back. */
void rill__sf_fini(rill__sf_t *c);

/* A record on its way into a kind's processing (rill__sf_enter). */
typedef struct rill__sf_rec {
    const rd_kafka_message_t *m;
    int64_t offset;
    rill__sf_part_t *p;    /* the record's partition */
    void *kind_part;       /* the kind's own part of p (a rill__sf_kind_part_fn's), or NULL */
    rill_state_t *view;    /* p's view of the open transaction */
    rill_origin_t *origin; /* the record's, taken from the element: the kind hands
                            * it to rill__sf_applied (or releases it) */
} rill__sf_rec_t;

/* A kind's own lookup of what it keeps per partition, made between the
 * core's partition lookup and the view (NULL: it failed the stage). */
typedef void *rill__sf_kind_part_fn(rill__sf_t *c, rill__sf_part_t *p);

/* The start of every kind's on_next: an input waits while a changelog
 * flush is under way; then the record's partition (and the kind's part
 * of it, kind_part may be NULL) and its view of the open transaction,
 * begun if none is. 1: r is filled and the element's origin is in
 * r->origin; 0: e was taken (to wait for the flush), or released after
 * failing the stage. */
int rill__sf_enter(rill__sf_t *c, rill_elem_t *e, rill__sf_kind_part_fn *kind_part,
                   rill__sf_rec_t *r);

/* The record's topic, partition and offset; fails the stage (and releases
 * e) when e is not a Kafka record with its origin: returns NULL then. */
const rd_kafka_message_t *rill__sf_record(rill__sf_t *c, rill_elem_t *e);
/* The partition's entry (NULL: failed the stage, out of memory). */
rill__sf_part_t *rill__sf_part(rill__sf_t *c, const char *topic, int32_t partition);
/* The view of partition p in the open transaction, begun if none is
 * (NULL: failed the stage). */
rill_state_t *rill__sf_view(rill__sf_t *c, rill__sf_part_t *p);
/* Record `offset` of p applied, its origin held until the commit (taken);
 * commits when commit_count records are held. 0, or -1 after failing. */
int rill__sf_applied(rill__sf_t *c, rill__sf_part_t *p, int64_t offset, rill_origin_t *o);
/* Commit the open transaction with its offsets, then confirm its records.
 * 0 (also with nothing open), 1 when the commit waits for its changelog
 * flush (it ends by itself), or -1 after failing the stage. */
int rill__sf_commit(rill__sf_t *c);
/* While a changelog flush is under way, inputs wait: 1 if e was taken to
 * wait (the kind's on_next returns; it is called again with e later). */
int rill__sf_defer(rill__sf_t *c, rill_elem_t *e);
/* A kind's message that must not be handled while a changelog flush is
 * under way (its changes would go into the transaction being flushed):
 * 1 if one is, and m (its payload taken) waits; the kind's on_msg gets it
 * again after the flush's commit. 0: handle it now. */
int rill__sf_hold_msg(rill__sf_t *c, rill_msg_t *m);
/* Abort the open transaction: its records come again. */
void rill__sf_abort(rill__sf_t *c);
/* The core's own messages (the commit timer, changelog deliveries): 1 if
 * m was one. */
int rill__sf_on_msg(rill__sf_t *c, rill_msg_t *m);
/* Input ended: commit on COMPLETE; then the queue-stage end. */
void rill__sf_input_end(rill__sf_t *c, rill_err_t code, const char *text);
/* Flush outputs (confirmed at once when nothing is downstream), complete
 * after the input ended, ask upstream for what the queue has room for. */
void rill__sf_pump(rill__sf_t *c);

#endif /* RILL_STATE_CORE_H */
