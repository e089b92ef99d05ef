/*
 * flat_map (Akka's mapConcat) and stateful_map (Akka's statefulMap): each
 * input becomes zero, one or many outputs, handed out with rill_emit().
 * Every output carries a reference of its input's origin; an input that
 * makes no output is confirmed (it was handled). stateful_map keeps state
 * made fresh for each run of the stage, and may emit last outputs when
 * its input completes.
 *
 * Outputs of one input wait in the stage's queue until the function has
 * returned: if it fails, what it emitted is released (unconfirmed), never
 * half sent. The queue grows when an input makes more outputs than it has
 * room for; the stage asks upstream only for what the queue has room for,
 * so it stays bounded by the window plus the outputs of one input.
 */
#include <stdlib.h>
#include <string.h>

#include "../kinds.h"

typedef struct flat_map {
    rill_flat_map_fn *fn; /* flat_map; NULL for stateful_map */
    rill_stateful_ops_t ops;
    void *opaque;
    void *state; /* stateful_map: made by ops.create when the stage starts */
    rill__equeue_t q;
    int upstream_done;
    int completed; /* stateful_map: ops.complete has run */
} flat_map_t;

rill_err_t rill_emit(rill_emitter_t *out, rill_elem_t *e)
{
    if (!out || !rill_elem_valid(e)) {
        rill_elem_release(e);
        return RILL_EINVAL;
    }
    /* The output stands for the input: one more reference of its origin
     * (an origin the function set itself is joined to it). */
    rill__elem_adopt(e, rill_origin_ref(out->origin));
    if (!rill__equeue_push(out->q, e) &&
        (rill__equeue_grow(out->q) || !rill__equeue_push(out->q, e))) {
        rill_elem_release(e);
        if (!out->err)
            out->err = RILL_ENOMEM;
        return RILL_ENOMEM;
    }
    memset(e, 0, sizeof(*e));
    out->emitted++;
    return RILL_OK;
}

static void flat_map_destroy(void *impl)
{
    flat_map_t *f = impl;
    if (!f)
        return;
    rill__equeue_free(&f->q);
    if (f->state && f->ops.destroy)
        f->ops.destroy(f->state);
    free(f);
}

static rill_err_t flat_map_start(rill__stage_t *st)
{
    flat_map_t *f = st->spec.impl;
    if (rill__equeue_init(&f->q, st->window))
        return RILL_ENOMEM;
    if (!f->fn && !(f->state = f->ops.create(f->opaque)))
        return RILL_ENOMEM;
    return RILL_OK;
}

void rill__equeue_drop_since(rill__equeue_t *q, size_t mark)
{
    rill_elem_t e;
    while (q->count > mark && rill__equeue_pop_tail(q, &e))
        rill_elem_release(&e);
}

static void flat_map_on_next(rill__stage_t *st, int in, rill_elem_t *e)
{
    (void)in;
    flat_map_t *f = st->spec.impl;
    rill_emitter_t out = {.st = st, .q = &f->q, .origin = e->origin};
    e->origin = NULL; /* the function never sees it */
    size_t mark = f->q.count;
    rill__elem_scope_t sc;
    rill__elem_scope_enter(&sc, e, out.origin);
    rill_err_t err = f->fn ? f->fn(f->opaque, e, &out) : f->ops.fn(f->state, e, &out);
    rill__elem_scope_leave(&sc);
    if (sc.verdict) {
        rill__equeue_drop_since(&f->q, mark); /* rejected or retried: the source has it */
        rill_origin_release(out.origin);
        return;
    }
    if (!err)
        err = out.err;
    if (err) {
        rill__equeue_drop_since(&f->q, mark);
        /* Not handled: it comes again, and counts as the failure's suspect. */
        rill__stage_fail_blame(st, out.origin, err, "%s function returned %s", st->spec.kind->name,
                               rill_err_name(err));
        return;
    }
    /* Handled: the input's own reference is confirmed. With no output, that
     * confirms the record; otherwise the outputs' references decide. */
    rill_origin_confirm(out.origin);
}

static void flat_map_on_input_end(rill__stage_t *st, int in, rill_err_t code, const char *text)
{
    (void)in;
    flat_map_t *f = st->spec.impl;
    rill__queue_stage_end(st, &f->upstream_done, code, text);
}

static void flat_map_pump(rill__stage_t *st)
{
    flat_map_t *f = st->spec.impl;
    if (f->upstream_done && !f->fn && !f->completed) {
        f->completed = 1;
        if (f->ops.complete) {
            rill_emitter_t out = {.st = st, .q = &f->q};
            size_t mark = f->q.count;
            rill_err_t err = f->ops.complete(f->state, &out);
            if (!err)
                err = out.err;
            if (err) {
                rill__equeue_drop_since(&f->q, mark);
                rill__stage_fail(st, err, "complete function returned %s", rill_err_name(err));
                return;
            }
        }
    }
    rill__equeue_flush_out0(st, &f->q);
    if (f->upstream_done) {
        if (!f->q.count)
            rill__stage_complete(st);
        return;
    }
    size_t room = f->q.count < st->window ? st->window - f->q.count : 0;
    rill__stage_want(st, 0, (int64_t)room);
}

const rill__kind_t rill__flat_map_kind = {.name = "flat_map",
                                          .max_in = 1,
                                          .max_out = 1,
                                          .start = flat_map_start,
                                          .on_next = flat_map_on_next,
                                          .on_input_end = flat_map_on_input_end,
                                          .pump = flat_map_pump,
                                          .destroy = flat_map_destroy,
                                          .impl_size = sizeof(flat_map_t)};

const rill__kind_t rill__stateful_map_kind = {.name = "stateful_map",
                                              .max_in = 1,
                                              .max_out = 1,
                                              .start = flat_map_start,
                                              .on_next = flat_map_on_next,
                                              .on_input_end = flat_map_on_input_end,
                                              .pump = flat_map_pump,
                                              .destroy = flat_map_destroy,
                                              .impl_size = sizeof(flat_map_t)};

rill_stage_t *rill_stage_flat_map(rill_flat_map_fn *fn, void *opaque)
{
    if (!fn)
        return rill__stage_spec_bad(&rill__flat_map_kind, RILL_EINVAL,
                                    "the flat_map function is NULL");
    flat_map_t *f = calloc(1, sizeof(*f));
    if (f) {
        f->fn = fn;
        f->opaque = opaque;
    }
    return rill__stage_spec_new(&rill__flat_map_kind, f);
}

rill_stage_t *rill_stage_stateful_map(const rill_stateful_ops_t *ops, void *opaque)
{
    if (!ops || !ops->create || !ops->fn)
        return rill__stage_spec_bad(&rill__stateful_map_kind, RILL_EINVAL,
                                    "the ops and their create and fn functions must be set");
    flat_map_t *f = calloc(1, sizeof(*f));
    if (f) {
        f->ops = *ops;
        f->opaque = opaque;
    }
    return rill__stage_spec_new(&rill__stateful_map_kind, f);
}
