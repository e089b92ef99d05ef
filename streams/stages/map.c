/*
 * map: each element replaced by what a function makes of it, in order.
 */
#include <stdlib.h>

#include "../kinds.h"

typedef struct mapper {
    rill_map_fn *map;
    void *opaque;
    rill__equeue_t q;
    int upstream_done;
} mapper_t;

static void mapper_destroy(void *impl)
{
    mapper_t *m = impl;
    if (!m)
        return;
    rill__equeue_free(&m->q);
    free(m);
}

static rill_err_t mapper_start(rill__stage_t *st)
{
    mapper_t *m = st->spec.impl;
    return rill__equeue_init(&m->q, st->window) ? RILL_ENOMEM : RILL_OK;
}

static void mapper_on_next(rill__stage_t *st, int in, rill_elem_t *e)
{
    (void)in;
    mapper_t *m = st->spec.impl;
    /* The output stands for the input: it takes over the input's origin,
     * which the function never sees. */
    rill_origin_t *origin = e->origin;
    e->origin = NULL;
    rill_elem_t out = {0};
    rill__elem_scope_t sc;
    rill__elem_scope_enter(&sc, e, origin);
    rill_err_t err = m->map(m->opaque, e, &out);
    rill__elem_scope_leave(&sc);
    if (sc.verdict) {
        /* Rejected or sent back for a retry: the source has it now. */
        rill_elem_release(&out);
        rill_origin_release(origin);
        return;
    }
    if (err) {
        rill_elem_release(&out);
        /* Not handled: it comes again, and counts as the failure's suspect. */
        rill__stage_fail_blame(st, origin, err, "map function returned %s", rill_err_name(err));
        return;
    }
    if (!rill__elem_ok(&out)) {
        rill_elem_release(&out);
        rill_origin_release(origin);
        rill__stage_fail(st, RILL_EINVAL, "map function produced an invalid (NULL) element");
        return;
    }
    rill__elem_adopt(&out, origin);
    /* The common case: nothing waiting and demand downstream: straight on. */
    if (!m->q.count && rill__stage_can_emit(st, 0))
        rill__stage_emit(st, 0, &out);
    else
        rill__equeue_push(&m->q, &out); /* room was reserved by the request */
}

static void mapper_on_input_end(rill__stage_t *st, int in, rill_err_t code, const char *text)
{
    (void)in;
    mapper_t *m = st->spec.impl;
    rill__queue_stage_end(st, &m->upstream_done, code, text);
}

static void mapper_pump(rill__stage_t *st)
{
    mapper_t *m = st->spec.impl;
    rill__equeue_flush_out0(st, &m->q);
    if (m->upstream_done) {
        if (!m->q.count)
            rill__stage_complete(st);
        return;
    }
    rill__stage_want(st, 0, (int64_t)rill__equeue_room(&m->q));
}

const rill__kind_t rill__map_kind = {.name = "map",
                                     .max_in = 1,
                                     .max_out = 1,
                                     .start = mapper_start,
                                     .on_next = mapper_on_next,
                                     .on_input_end = mapper_on_input_end,
                                     .pump = mapper_pump,
                                     .destroy = mapper_destroy,
                                     .impl_size = sizeof(mapper_t)};

rill_stage_t *rill_stage_map(rill_map_fn *fn, void *opaque)
{
    if (!fn)
        return rill__stage_spec_bad(&rill__map_kind, RILL_EINVAL, "the map function is NULL");
    mapper_t *m = calloc(1, sizeof(*m));
    if (m) {
        m->map = fn;
        m->opaque = opaque;
    }
    return rill__stage_spec_new(&rill__map_kind, m);
}
