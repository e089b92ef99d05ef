/*
 * throttle: at most `elements` per `per_ms`, by a token bucket that
 * starts full (the first burst may go at once).
 */
#include <stdlib.h>

#include "../../actors/seam.h"
#include "../kinds.h"

typedef struct throttle {
    uint32_t elements;
    uint64_t per_ms;
    double tokens;
    int64_t last_us;
    rill__equeue_t q;
    int timer_armed;
    int upstream_done;
} throttle_t;

static void throttle_destroy(void *impl)
{
    throttle_t *t = impl;
    if (!t)
        return;
    rill__equeue_free(&t->q);
    free(t);
}

static rill_err_t throttle_start(rill__stage_t *st)
{
    throttle_t *t = st->spec.impl;
    t->tokens = t->elements; /* a full bucket: the first burst may go at once */
    t->last_us = rill__now_us();
    size_t cap = t->elements < st->window ? t->elements : st->window;
    return rill__equeue_init(&t->q, cap) ? RILL_ENOMEM : RILL_OK;
}

static void throttle_on_next(rill__stage_t *st, int in, rill_elem_t *e)
{
    (void)in;
    throttle_t *t = st->spec.impl;
    if (!rill__equeue_push(&t->q, e))
        rill_elem_release(e);
}

static void throttle_on_input_end(rill__stage_t *st, int in, rill_err_t code, const char *text)
{
    (void)in;
    throttle_t *t = st->spec.impl;
    rill__queue_stage_end(st, &t->upstream_done, code, text);
}

static void throttle_pump(rill__stage_t *st)
{
    throttle_t *t = st->spec.impl;
    int64_t now = rill__now_us();
    double rate = (double)t->elements / ((double)t->per_ms * 1000.0); /* per µs */
    t->tokens += (double)(now - t->last_us) * rate;
    if (t->tokens > t->elements)
        t->tokens = t->elements;
    t->last_us = now;
    rill_elem_t e;
    while (t->tokens >= 1.0 && t->q.count && rill__stage_can_emit(st, 0) &&
           rill__equeue_pop(&t->q, &e)) {
        rill__stage_emit(st, 0, &e);
        t->tokens -= 1.0;
    }
    if (t->q.count && t->tokens < 1.0 && !t->timer_armed) {
        /* Wake when the next token is due. */
        uint64_t wait_ms = (uint64_t)((1.0 - t->tokens) / rate / 1000.0) + 1;
        rill_msg_t tick = {.type = RILL__STREAM_TICK};
        if (rill_timer_start(st->ctx, wait_ms, 0, &tick, NULL) == RILL_OK)
            t->timer_armed = 1;
    }
    if (t->upstream_done) {
        if (!t->q.count)
            rill__stage_complete(st);
        return;
    }
    rill__stage_want(st, 0, (int64_t)rill__equeue_room(&t->q));
}

static void throttle_on_msg(rill__stage_t *st, rill_msg_t *m)
{
    throttle_t *t = st->spec.impl;
    if (m->type == RILL__STREAM_TICK) {
        t->timer_armed = 0;
        if (!st->finished)
            throttle_pump(st);
    }
}

const rill__kind_t rill__throttle_kind = {.name = "throttle",
                                          .max_in = 1,
                                          .max_out = 1,
                                          .start = throttle_start,
                                          .on_next = throttle_on_next,
                                          .on_input_end = throttle_on_input_end,
                                          .pump = throttle_pump,
                                          .on_msg = throttle_on_msg,
                                          .destroy = throttle_destroy,
                                          .impl_size = sizeof(throttle_t)};

rill_stage_t *rill_stage_throttle(uint32_t elements, uint64_t per_ms)
{
    if (elements == 0 || per_ms == 0)
        return rill__stage_spec_bad(&rill__throttle_kind, RILL_EINVAL,
                                    "elements and per_ms must be positive, got %u per %llu ms",
                                    elements, (unsigned long long)per_ms);
    throttle_t *t = calloc(1, sizeof(*t));
    if (t) {
        t->elements = elements;
        t->per_ms = per_ms;
    }
    return rill__stage_spec_new(&rill__throttle_kind, t);
}
