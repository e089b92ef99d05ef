/*
 * broadcast: every element to each of `outputs` subscribers, at the pace
 * of the slowest; owned payloads are copied by a copy function.
 */
#include <stdlib.h>
#include <string.h>

#include "../kinds.h"

typedef struct bcast {
    uint32_t outputs;
    rill_copy_fn *copy;
    void *opaque;
    rill__equeue_t q;
    int upstream_done;
} bcast_t;

static void bcast_destroy(void *impl)
{
    bcast_t *b = impl;
    if (!b)
        return;
    rill__equeue_free(&b->q);
    free(b);
}

static rill_err_t bcast_start(rill__stage_t *st)
{
    bcast_t *b = st->spec.impl;
    st->n_out_expected = b->outputs;
    return rill__equeue_init(&b->q, st->window) ? RILL_ENOMEM : RILL_OK;
}

static void bcast_on_next(rill__stage_t *st, int in, rill_elem_t *e)
{
    (void)in;
    bcast_t *b = st->spec.impl;
    if (!rill__equeue_push(&b->q, e))
        rill_elem_release(e);
}

static void bcast_on_input_end(rill__stage_t *st, int in, rill_err_t code, const char *text)
{
    (void)in;
    bcast_t *b = st->spec.impl;
    rill__queue_stage_end(st, &b->upstream_done, code, text);
}

static void bcast_pump(rill__stage_t *st)
{
    bcast_t *b = st->spec.impl;
    /* Nothing leaves before every output has subscribed: the slowest
     * branch sets the pace, including one that has not arrived yet. */
    if (!rill__stage_outputs_ready(st))
        return;
    while (b->q.count && rill__stage_min_demand(st) > 0) {
        rill_elem_t e;
        rill__equeue_pop(&b->q, &e);
        int first = -1;
        for (uint32_t i = 0; i < st->n_out; i++) {
            if (st->out[i].state != LINK_ACTIVE)
                continue;
            if (first < 0) {
                first = (int)i;
                continue;
            }
            rill_elem_t copy;
            if (b->copy) {
                memset(&copy, 0, sizeof(copy));
                rill_err_t err = b->copy(b->opaque, &e, &copy);
                if (err || !rill__elem_ok(&copy)) {
                    copy.origin = NULL; /* the function's, if any: not a reference */
                    rill_elem_release(&copy);
                    rill_elem_release(&e);
                    rill__stage_fail(st, err ? err : RILL_EINVAL, "copy function failed");
                    return;
                }
                /* Every copy stands for the element too: a reference of
                 * its origin (whatever the function copied there). */
                copy.origin = rill_origin_ref(e.origin);
            } else if (!e.dtor) {
                copy = e; /* a value or a borrowed pointer: share it */
                copy.origin = rill_origin_ref(e.origin);
            } else {
                rill_elem_release(&e);
                rill__stage_fail(st, RILL_EINVAL,
                                 "broadcast of an owned payload needs a copy function");
                return;
            }
            rill__stage_emit(st, (int)i, &copy);
        }
        if (first >= 0)
            rill__stage_emit(st, first, &e);
        else
            rill_elem_release(&e);
    }
    if (b->upstream_done) {
        if (!b->q.count)
            rill__stage_complete(st);
        return;
    }
    rill__stage_want(st, 0, (int64_t)rill__equeue_room(&b->q));
}

const rill__kind_t rill__broadcast_kind = {.name = "broadcast",
                                           .max_in = 1,
                                           .max_out = RILL__MAX_LINKS,
                                           .start = bcast_start,
                                           .on_next = bcast_on_next,
                                           .on_input_end = bcast_on_input_end,
                                           .pump = bcast_pump,
                                           .destroy = bcast_destroy,
                                           .impl_size = sizeof(bcast_t)};

rill_stage_t *rill_stage_broadcast(uint32_t outputs, rill_copy_fn *copy_fn, void *opaque)
{
    if (outputs == 0 || outputs > RILL__MAX_LINKS)
        return rill__stage_spec_bad(&rill__broadcast_kind, RILL_EINVAL,
                                    "outputs must be 1 to %d, got %u", RILL__MAX_LINKS, outputs);
    bcast_t *b = calloc(1, sizeof(*b));
    if (b) {
        b->outputs = outputs;
        b->copy = copy_fn;
        b->opaque = opaque;
    }
    return rill__stage_spec_new(&rill__broadcast_kind, b);
}
