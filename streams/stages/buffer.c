/*
 * buffer: a queue of `size` elements between a fast upstream and a slow
 * downstream, with an overflow strategy: backpressure, drop the oldest
 * (head), the newest (tail) or the whole buffer, or fail.
 */
#include <stdlib.h>

#include "../kinds.h"

typedef struct buffer {
    size_t size;
    rill_overflow_t overflow;
    rill__equeue_t q;
    int upstream_done;
} buffer_t;

static void buffer_destroy(void *impl)
{
    buffer_t *b = impl;
    if (!b)
        return;
    rill__equeue_free(&b->q);
    free(b);
}

static rill_err_t buffer_start(rill__stage_t *st)
{
    buffer_t *b = st->spec.impl;
    return rill__equeue_init(&b->q, b->size) ? RILL_ENOMEM : RILL_OK;
}

static void buffer_on_next(rill__stage_t *st, int in, rill_elem_t *e)
{
    (void)in;
    buffer_t *b = st->spec.impl;
    rill_elem_t old;
    if (b->q.count == b->q.cap) {
        switch (b->overflow) {
        case RILL_OVERFLOW_BACKPRESSURE:
            break; /* cannot happen: we never asked for more than room */
        case RILL_OVERFLOW_DROP_HEAD:
            rill__equeue_pop(&b->q, &old);
            rill__stage_drop(st, &old);
            break;
        case RILL_OVERFLOW_DROP_TAIL:
            rill__equeue_pop_tail(&b->q, &old);
            rill__stage_drop(st, &old);
            break;
        case RILL_OVERFLOW_DROP_BUFFER:
            while (rill__equeue_pop(&b->q, &old))
                rill__stage_drop(st, &old);
            break;
        case RILL_OVERFLOW_FAIL:
            rill_elem_release(e);
            rill__stage_fail(st, RILL_EFULL, "buffer of %zu elements overflowed", b->size);
            return;
        }
    }
    if (!rill__equeue_push(&b->q, e))
        rill_elem_release(e); /* defensive: a misbehaving upstream overran us */
}

static void buffer_on_input_end(rill__stage_t *st, int in, rill_err_t code, const char *text)
{
    (void)in;
    buffer_t *b = st->spec.impl;
    rill__queue_stage_end(st, &b->upstream_done, code, text);
}

static void buffer_pump(rill__stage_t *st)
{
    buffer_t *b = st->spec.impl;
    rill__equeue_flush_out0(st, &b->q);
    if (b->upstream_done) {
        if (!b->q.count)
            rill__stage_complete(st);
        return;
    }
    if (b->overflow != RILL_OVERFLOW_BACKPRESSURE)
        rill__stage_want(st, 0, st->window); /* never backpressures */
    else
        rill__stage_want(st, 0, (int64_t)rill__equeue_room(&b->q));
}

const rill__kind_t rill__buffer_kind = {.name = "buffer",
                                        .max_in = 1,
                                        .max_out = 1,
                                        .start = buffer_start,
                                        .on_next = buffer_on_next,
                                        .on_input_end = buffer_on_input_end,
                                        .pump = buffer_pump,
                                        .destroy = buffer_destroy,
                                        .impl_size = sizeof(buffer_t)};

rill_stage_t *rill_stage_buffer(size_t size, rill_overflow_t overflow)
{
    if (size == 0 || size > (1u << 24))
        return rill__stage_spec_bad(&rill__buffer_kind, RILL_EINVAL,
                                    "size must be 1 to 2^24, got %zu", size);
    if (overflow < RILL_OVERFLOW_BACKPRESSURE || overflow > RILL_OVERFLOW_FAIL)
        return rill__stage_spec_bad(&rill__buffer_kind, RILL_EINVAL, "unknown overflow strategy %d",
                                    (int)overflow);
    buffer_t *b = calloc(1, sizeof(*b));
    if (b) {
        b->size = size;
        b->overflow = overflow;
    }
    return rill__stage_spec_new(&rill__buffer_kind, b);
}
