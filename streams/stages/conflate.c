/*
 * conflate: while downstream is not ready, elements are folded into the
 * one waiting by a combine function, or the latest replaces it (keep
 * latest); it never backpressures.
 */
#include <stdlib.h>

#include "../kinds.h"

typedef struct conflate {
    rill_conflate_fn *combine;
    void *opaque;
    rill__equeue_t q; /* holds at most one element */
    int upstream_done;
} conflate_t;

static void conflate_destroy(void *impl)
{
    conflate_t *c = impl;
    if (!c)
        return;
    rill__equeue_free(&c->q);
    free(c);
}

static rill_err_t conflate_start(rill__stage_t *st)
{
    conflate_t *c = st->spec.impl;
    return rill__equeue_init(&c->q, 1) ? RILL_ENOMEM : RILL_OK;
}

static void conflate_on_next(rill__stage_t *st, int in, rill_elem_t *e)
{
    (void)in;
    conflate_t *c = st->spec.impl;
    rill_elem_t old;
    if (c->q.count) {
        if (!c->combine) {
            /* keep latest: the older element is dropped, on purpose */
            rill__equeue_pop(&c->q, &old);
            rill__stage_drop(st, &old);
        } else {
            /* The aggregate stands for both: it carries both origins,
             * which the function never sees. */
            rill_elem_t *acc = rill__equeue_peek(&c->q);
            rill_origin_t *both = acc->origin;
            rill__origin_absorb(&both, e->origin);
            acc->origin = e->origin = NULL;
            rill_err_t err = c->combine(c->opaque, acc, e);
            acc->origin = both; /* released with acc if the stage fails */
            if (err)
                rill__stage_fail(st, err, "conflate function returned %s", rill_err_name(err));
            return; /* the function owns both; the result is in acc */
        }
    }
    if (!rill__equeue_push(&c->q, e))
        rill_elem_release(e); /* defensive: a misbehaving upstream overran us */
}

static void conflate_on_input_end(rill__stage_t *st, int in, rill_err_t code, const char *text)
{
    (void)in;
    conflate_t *c = st->spec.impl;
    rill__queue_stage_end(st, &c->upstream_done, code, text);
}

static void conflate_pump(rill__stage_t *st)
{
    conflate_t *c = st->spec.impl;
    rill__equeue_flush_out0(st, &c->q);
    if (c->upstream_done) {
        if (!c->q.count)
            rill__stage_complete(st);
        return;
    }
    rill__stage_want(st, 0, st->window); /* never backpressures */
}

const rill__kind_t rill__conflate_kind = {.name = "conflate",
                                          .max_in = 1,
                                          .max_out = 1,
                                          .start = conflate_start,
                                          .on_next = conflate_on_next,
                                          .on_input_end = conflate_on_input_end,
                                          .pump = conflate_pump,
                                          .destroy = conflate_destroy,
                                          .impl_size = sizeof(conflate_t)};

rill_stage_t *rill_stage_conflate(rill_conflate_fn *fn, void *opaque)
{
    conflate_t *c = calloc(1, sizeof(*c));
    if (c) {
        c->combine = fn;
        c->opaque = opaque;
    }
    return rill__stage_spec_new(&rill__conflate_kind, c);
}
