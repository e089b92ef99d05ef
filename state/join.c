/*
 * The stream-table join stage (rill_stage_join): each element, with the
 * table's committed value of its key, becomes the join function's output.
 *
 * Until the table has caught up, elements wait in `held` (room for the
 * stage's window) and upstream is asked for no more than that room: the
 * stream is held back, not buffered without bound. A timer re-checks the
 * table every few ms while it is behind (rill_table_caught_up is one
 * atomic load); once it has caught up, the held elements are joined in
 * order, as room in the output queue allows, and later ones straight
 * away (behind any still held, so the order stays). A table that stopped
 * reading (its store full) fails the stage.
 *
 * A co-partitioned table is caught up per partition: a Kafka record
 * waits for its own partition of the table (rill__table_partition_caught_up
 * with the record's partition) and is looked up there; another element
 * waits for every partition the table follows, and is looked up in them
 * all. The held queue stays in order: a record of a partition behind holds
 * those after it.
 */
#include <stdlib.h>
#include <string.h>

#include "../streams/kinds.h"
#include "state_int.h"

/* How often a stage holding elements looks at its table again. */
#define JOIN_RECHECK_MS 5
/* The tick of the re-check timer (a kind's own ticks set the top bit). */
#define JOIN_TICK       (1ull << 63)

typedef struct join {
    /* parameters */
    rill_table_t *table;
    rill_join_type_t type;
    rill_join_key_fn *key_fn;
    rill_join_fn *fn;
    void *opaque;
    /* a run's state */
    rill__equeue_t held; /* inputs waiting for the table, or for room in q */
    rill__equeue_t q;    /* outputs waiting for demand */
    int timer_armed;
    int upstream_done;
} join_t;

static void join_destroy(void *impl)
{
    join_t *j = impl;
    if (!j)
        return;
    rill__equeue_free(&j->held);
    rill__equeue_free(&j->q);
    free(j);
}

static void *join_clone(const void *impl)
{
    const join_t *b = impl;
    join_t *j = calloc(1, sizeof *j);
    if (j) {
        j->table = b->table;
        j->type = b->type;
        j->key_fn = b->key_fn;
        j->fn = b->fn;
        j->opaque = b->opaque;
    }
    return j;
}

static rill_err_t join_start(rill__stage_t *st)
{
    join_t *j = st->spec.impl;
    if (rill__equeue_init(&j->held, st->window) || rill__equeue_init(&j->q, st->window))
        return RILL_ENOMEM;
    return RILL_OK;
}

/* One lookup's outcome, handed over by the table inside its read
 * transaction: the join function runs there, with the value. */
typedef struct join_call {
    join_t *j;
    rill_elem_t *in;
    rill_elem_t out;
    rill_err_t err;
    int called;  /* fn ran (it owns in then) */
    int dropped; /* an inner join without a match */
} join_call_t;

static void join_found(void *opaque, const void *value, size_t value_len, int found)
{
    join_call_t *c = opaque;
    if (!found && c->j->type == RILL_JOIN_INNER) {
        c->dropped = 1;
        return;
    }
    c->called = 1;
    c->err = c->j->fn(c->j->opaque, c->in, found ? value : NULL, found ? value_len : 0, &c->out);
}

/* The key of e into *key (NULL: none, no match). 0, or -1 after failing
 * the stage (origin, e's, is taken then). */
static int join_key(rill__stage_t *st, join_t *j, const rill_elem_t *e, const void **key,
                    size_t *key_len, rill_origin_t *origin)
{
    *key = NULL;
    *key_len = 0;
    if (j->key_fn) {
        rill_err_t err = j->key_fn(j->opaque, e, key, key_len);
        if (err == RILL_ENOENT) {
            *key = NULL;
            return 0;
        }
        if (err) {
            rill__stage_fail_blame(st, origin, err, "key function returned %s", rill_err_name(err));
            return -1;
        }
        return 0;
    }
    const rd_kafka_message_t *m = rill_record(e);
    if (!m) {
        rill_origin_release(origin);
        rill__stage_fail(st, RILL_EINVAL,
                         "the element is not a Kafka record: a join without a key function "
                         "joins Kafka records on their keys (give rill_join_opts_t.key_fn)");
        return -1;
    }
    *key = m->key;
    *key_len = m->key ? m->key_len : 0;
    return 0;
}

/* The partition of the table e is joined with: its record's, or -1 (an
 * element that is not a record: every partition). */
static int32_t join_partition(const rill_elem_t *e)
{
    const rd_kafka_message_t *m = rill_record(e);
    return m ? m->partition : -1;
}

/* Whether e may be joined now (the table caught up where it is looked). */
static int join_ready(const join_t *j, const rill_elem_t *e)
{
    return rill__table_partition_caught_up(j->table, join_partition(e));
}

/* Join e (taken): its output into q, or dropped. 0, or -1 after failing
 * the stage. */
static int join_one(rill__stage_t *st, join_t *j, rill_elem_t *e)
{
    /* The output stands for the input: it takes over the input's origin,
     * which the functions never see. */
    rill_origin_t *origin = e->origin;
    e->origin = NULL;
    const void *key;
    size_t key_len;
    if (join_key(st, j, e, &key, &key_len, origin) != 0) {
        rill_elem_release(e);
        return -1;
    }
    const char *topic;
    int32_t n_parts = rill__table_copartitions(j->table, &topic);
    const rd_kafka_message_t *m = rill_record(e);
    if (n_parts > 0 && m && m->partition >= n_parts) {
        /* Looked up nowhere, it would be dropped or joined with no value
         * without a word. */
        rill__stage_fail_blame(st, origin, RILL_EINVAL,
                               "table %s: not co-partitioned with %s: a record of its partition "
                               "%d, %s has %d",
                               topic, m->rkt ? rd_kafka_topic_name(m->rkt) : "?", (int)m->partition,
                               topic, (int)n_parts);
        rill_elem_release(e);
        return -1;
    }
    join_call_t c = {.j = j, .in = e};
    rill__elem_scope_t sc;
    rill__elem_scope_enter(&sc, e, origin);
    rill_err_t err = rill__table_lookup(j->table, join_partition(e), key, key_len, join_found, &c);
    rill__elem_scope_leave(&sc);
    if (err) {
        rill_elem_release(e);
        rill__stage_fail_blame(st, origin, err, "cannot read the table: %s", rill_err2str(err));
        return -1;
    }
    if (c.dropped) {
        e->origin = origin; /* confirmed with it: a filter's drop */
        rill__stage_drop(st, e);
        return 0;
    }
    if (sc.verdict) {
        /* Rejected or sent back for a retry: the source has it now. */
        rill_elem_release(&c.out);
        rill_origin_release(origin);
        return 0;
    }
    if (c.err) {
        rill_elem_release(&c.out);
        rill__stage_fail_blame(st, origin, c.err, "join function returned %s",
                               rill_err_name(c.err));
        return -1;
    }
    if (!rill__elem_ok(&c.out)) {
        rill_elem_release(&c.out);
        rill_origin_release(origin);
        rill__stage_fail(st, RILL_EINVAL, "join function produced an invalid (NULL) element");
        return -1;
    }
    rill__elem_adopt(&c.out, origin);
    rill__equeue_push(&j->q, &c.out); /* room was checked by the caller */
    return 0;
}

/* Join held elements while the output queue has room. 0, or -1 after
 * failing the stage. */
static int join_held(rill__stage_t *st, join_t *j)
{
    rill_elem_t e;
    while (j->held.count && rill__equeue_room(&j->q) &&
           join_ready(j, rill__equeue_peek(&j->held))) {
        rill__equeue_pop(&j->held, &e);
        if (join_one(st, j, &e) != 0)
            return -1;
        rill__equeue_flush_out0(st, &j->q);
    }
    return 0;
}

static void join_on_next(rill__stage_t *st, int in, rill_elem_t *e)
{
    (void)in;
    join_t *j = st->spec.impl;
    if (!j->held.count && rill__equeue_room(&j->q) && join_ready(j, e)) {
        if (join_one(st, j, e) == 0)
            rill__equeue_flush_out0(st, &j->q);
        return;
    }
    if (!rill__equeue_push(&j->held, e))
        rill_elem_release(e); /* defensive: a misbehaving upstream overran us */
}

static void join_on_input_end(rill__stage_t *st, int in, rill_err_t code, const char *text)
{
    (void)in;
    join_t *j = st->spec.impl;
    rill__queue_stage_end(st, &j->upstream_done, code, text);
}

static void join_pump(rill__stage_t *st)
{
    join_t *j = st->spec.impl;
    char why[160];
    rill_err_t failed = rill__table_failed(j->table, why, sizeof why);
    if (failed) {
        /* Joining with a table that no longer follows its topic would
         * give stale values without a word. */
        rill__stage_fail(st, failed, "%s", why);
        return;
    }
    /* Open: the next element to join may be joined now (the held queue's
     * first, or, with none held, one of any partition). */
    int open = j->held.count ? join_ready(j, rill__equeue_peek(&j->held))
                             : rill__table_partition_caught_up(j->table, -1);
    if (!open && !j->timer_armed) {
        rill_msg_t tick = {.type = RILL__STREAM_TICK, .arg = JOIN_TICK};
        if (rill_timer_start(st->ctx, JOIN_RECHECK_MS, 0, &tick, NULL) == RILL_OK)
            j->timer_armed = 1;
    }
    rill__equeue_flush_out0(st, &j->q);
    if (join_held(st, j) != 0)
        return;
    rill__equeue_flush_out0(st, &j->q);
    if (j->upstream_done) {
        if (!j->q.count && !j->held.count)
            rill__stage_complete(st);
        return;
    }
    /* Ask for what can be held: while the table is behind, the held
     * queue's room; after, the output queue's room less what still waits. */
    size_t room = rill__equeue_room(&j->held);
    if (j->held.count ? join_ready(j, rill__equeue_peek(&j->held)) : open) {
        size_t out_room = rill__equeue_room(&j->q);
        room = out_room > j->held.count ? out_room - j->held.count : 0;
    }
    rill__stage_want(st, 0, (int64_t)room);
}

static void join_on_msg(rill__stage_t *st, rill_msg_t *m)
{
    join_t *j = st->spec.impl;
    if (m->type != RILL__STREAM_TICK || m->arg != JOIN_TICK)
        return;
    j->timer_armed = 0;
    if (!st->finished)
        join_pump(st);
}

const rill__kind_t rill__join_kind = {.name = "join",
                                      .max_in = 1,
                                      .max_out = 1,
                                      .start = join_start,
                                      .on_next = join_on_next,
                                      .on_input_end = join_on_input_end,
                                      .pump = join_pump,
                                      .on_msg = join_on_msg,
                                      .destroy = join_destroy,
                                      .clone = join_clone};

rill_stage_t *rill_stage_join(rill_table_t *table, rill_join_type_t type,
                              const rill_join_opts_t *opts, rill_join_fn *fn, void *opaque)
{
    if (!table || !fn)
        return rill__stage_spec_bad(&rill__join_kind, RILL_EINVAL,
                                    "the table and the join function must not be NULL");
    if (type != RILL_JOIN_INNER && type != RILL_JOIN_LEFT)
        return rill__stage_spec_bad(&rill__join_kind, RILL_EINVAL,
                                    "unknown join type %d (RILL_JOIN_INNER or RILL_JOIN_LEFT)",
                                    (int)type);
    join_t *j = calloc(1, sizeof *j);
    if (j) {
        j->table = table;
        j->type = type;
        j->key_fn = opts ? opts->key_fn : NULL;
        j->fn = fn;
        j->opaque = opaque;
    }
    return rill__stage_spec_new(&rill__join_kind, j);
}
