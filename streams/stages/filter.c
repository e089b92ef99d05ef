/*
 * filter: the elements a predicate keeps, in order; the others are
 * released.
 */
#include <stdlib.h>

#include "../kinds.h"

typedef struct filter {
    rill_filter_fn *filter;
    void *opaque;
    rill__equeue_t q;
    int upstream_done;
} filter_t;

static void filter_destroy(void *impl)
{
    filter_t *f = impl;
    if (!f)
        return;
    rill__equeue_free(&f->q);
    free(f);
}

static rill_err_t filter_start(rill__stage_t *st)
{
    filter_t *f = st->spec.impl;
    return rill__equeue_init(&f->q, st->window) ? RILL_ENOMEM : RILL_OK;
}

static void filter_on_next(rill__stage_t *st, int in, rill_elem_t *e)
{
    (void)in;
    filter_t *f = st->spec.impl;
    if (!f->filter(f->opaque, e)) {
        rill__stage_drop(st, e); /* filtered out: handled */
        return;
    }
    if (!f->q.count && rill__stage_can_emit(st, 0))
        rill__stage_emit(st, 0, e);
    else
        rill__equeue_push(&f->q, e);
}

static void filter_on_input_end(rill__stage_t *st, int in, rill_err_t code, const char *text)
{
    (void)in;
    filter_t *f = st->spec.impl;
    rill__queue_stage_end(st, &f->upstream_done, code, text);
}

static void filter_pump(rill__stage_t *st)
{
    filter_t *f = st->spec.impl;
    rill__equeue_flush_out0(st, &f->q);
    if (f->upstream_done) {
        if (!f->q.count)
            rill__stage_complete(st);
        return;
    }
    rill__stage_want(st, 0, (int64_t)rill__equeue_room(&f->q));
}

const rill__kind_t rill__filter_kind = {.name = "filter",
                                        .max_in = 1,
                                        .max_out = 1,
                                        .start = filter_start,
                                        .on_next = filter_on_next,
                                        .on_input_end = filter_on_input_end,
                                        .pump = filter_pump,
                                        .destroy = filter_destroy,
                                        .impl_size = sizeof(filter_t)};

rill_stage_t *rill_stage_filter(rill_filter_fn *fn, void *opaque)
{
    if (!fn)
        return rill__stage_spec_bad(&rill__filter_kind, RILL_EINVAL, "the filter function is NULL");
    filter_t *f = calloc(1, sizeof(*f));
    if (f) {
        f->filter = fn;
        f->opaque = opaque;
    }
    return rill__stage_spec_new(&rill__filter_kind, f);
}
