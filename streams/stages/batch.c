/*
 * batch (groupedWithin): elements grouped into batches of up to
 * max_count, sealed early when max_ms have passed since a group's first
 * element.
 */
#include <stdlib.h>

#include "../kinds.h"

typedef struct batcher {
    size_t max_count;
    uint64_t max_ms;
    rill_batch_t *cur;
    rill_origin_t *cur_origin; /* the origins of cur's elements */
    uint64_t gen;              /* which group the armed timer is for */
    rill_timer_t timer;
    int timer_armed;
    int due;              /* the group's time is up; seal when there is room */
    rill__equeue_t ready; /* sealed batches */
    int upstream_done;
} batcher_t;

static void batch_free(void *p)
{
    rill_batch_t *b = p;
    if (!b)
        return;
    for (size_t i = 0; i < b->count; i++)
        rill_elem_release(&b->elems[i]);
    free(b);
}

static void batcher_destroy(void *impl)
{
    batcher_t *b = impl;
    if (!b)
        return;
    batch_free(b->cur);
    rill_origin_release(b->cur_origin);
    rill__equeue_free(&b->ready);
    free(b);
}

static rill_err_t batcher_start(rill__stage_t *st)
{
    batcher_t *b = st->spec.impl;
    return rill__equeue_init(&b->ready, 2) ? RILL_ENOMEM : RILL_OK;
}

static void batcher_seal(rill__stage_t *st, batcher_t *b)
{
    if (!b->cur || !b->cur->count)
        return;
    if (b->timer_armed) {
        rill_timer_cancel(st->ctx, b->timer);
        b->timer_armed = 0;
    }
    rill_elem_t e = {
        .payload = b->cur, .dtor = batch_free, .arg = b->cur->count, .origin = b->cur_origin};
    b->cur_origin = NULL;
    rill__equeue_push(&b->ready, &e); /* room: callers check, and we stop
                                         pulling while it is full */
    b->cur = NULL;
    b->due = 0;
    b->gen++;
}

static void batcher_on_next(rill__stage_t *st, int in, rill_elem_t *e)
{
    (void)in;
    batcher_t *b = st->spec.impl;
    if (!b->cur) {
        b->cur = malloc(sizeof(rill_batch_t) + b->max_count * sizeof(rill_elem_t));
        if (!b->cur) {
            rill_elem_release(e);
            rill__stage_fail(st, RILL_ENOMEM, "out of memory for a batch");
            return;
        }
        b->cur->count = 0;
        if (b->max_ms) {
            rill_msg_t tick = {.type = RILL__STREAM_TICK, .arg = b->gen};
            if (rill_timer_start(st->ctx, b->max_ms, 0, &tick, &b->timer) == RILL_OK)
                b->timer_armed = 1;
        }
    }
    /* The batch stands for its elements: it carries their origins. */
    rill__origin_absorb(&b->cur_origin, e->origin);
    e->origin = NULL;
    b->cur->elems[b->cur->count++] = *e;
    if (b->cur->count == b->max_count && b->ready.count < b->ready.cap)
        batcher_seal(st, b);
}

static void batcher_on_msg(rill__stage_t *st, rill_msg_t *m)
{
    batcher_t *b = st->spec.impl;
    if (m->type != RILL__STREAM_TICK || m->arg != b->gen)
        return; /* a stale timer of an earlier group */
    b->timer_armed = 0;
    b->due = 1;
    if (!st->finished)
        st->spec.kind->pump(st);
}

static void batcher_on_input_end(rill__stage_t *st, int in, rill_err_t code, const char *text)
{
    (void)in;
    batcher_t *b = st->spec.impl;
    rill__queue_stage_end(st, &b->upstream_done, code, text);
}

static void batcher_pump(rill__stage_t *st)
{
    batcher_t *b = st->spec.impl;
    rill__equeue_flush_out0(st, &b->ready);
    if (b->cur && (b->due || b->cur->count == b->max_count) && b->ready.count < b->ready.cap) {
        batcher_seal(st, b);
        rill__equeue_flush_out0(st, &b->ready);
    }
    if (b->upstream_done) {
        if (b->cur && b->ready.count < b->ready.cap)
            batcher_seal(st, b);
        rill__equeue_flush_out0(st, &b->ready);
        if (!b->cur && !b->ready.count)
            rill__stage_complete(st);
        return;
    }
    /* Pull for the group being filled, but not while a sealed group has
     * nowhere to go. */
    if (b->ready.count >= b->ready.cap)
        return;
    size_t room = b->max_count - (b->cur ? b->cur->count : 0);
    rill__stage_want(st, 0, (int64_t)room);
}

const rill__kind_t rill__batch_kind = {.name = "batch",
                                       .max_in = 1,
                                       .max_out = 1,
                                       .start = batcher_start,
                                       .on_next = batcher_on_next,
                                       .on_input_end = batcher_on_input_end,
                                       .pump = batcher_pump,
                                       .on_msg = batcher_on_msg,
                                       .destroy = batcher_destroy,
                                       .impl_size = sizeof(batcher_t)};

rill_stage_t *rill_stage_batch(size_t max_count, uint64_t max_ms)
{
    if (max_count == 0 || max_count > (1u << 24))
        return rill__stage_spec_bad(&rill__batch_kind, RILL_EINVAL,
                                    "max_count must be 1 to 2^24, got %zu", max_count);
    batcher_t *b = calloc(1, sizeof(*b));
    if (b) {
        b->max_count = max_count;
        b->max_ms = max_ms;
    }
    return rill__stage_spec_new(&rill__batch_kind, b);
}
