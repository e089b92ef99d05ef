/*
 * source (rill_source_fn): a source that pulls each element from a
 * function until it says the end or fails.
 */
#include <stdlib.h>

#include "../kinds.h"

typedef struct pull {
    rill_pull_fn *fn;
    void *opaque;
} pull_t;

static void pull_pump(rill__stage_t *st)
{
    pull_t *p = st->spec.impl;
    int budget = RILL__PUMP_BUDGET;
    while (budget-- > 0 && rill__stage_can_emit(st, 0)) {
        rill_elem_t e = {0};
        rill_err_t r = p->fn(p->opaque, &e);
        if (r == RILL_EOS) {
            rill_elem_release(&e);
            rill__stage_complete(st);
            return;
        }
        if (r != RILL_OK) {
            rill_elem_release(&e);
            rill__stage_fail(st, r, "source failed with %s", rill_err_name(r));
            return;
        }
        if (!rill__elem_ok(&e)) {
            rill_elem_release(&e);
            rill__stage_fail(st, RILL_EINVAL, "source produced an invalid (NULL) element");
            return;
        }
        rill__stage_emit(st, 0, &e);
    }
    if (budget < 0 && rill__stage_can_emit(st, 0))
        rill__stage_repump(st);
}

const rill__kind_t rill__pull_kind = {.name = "source",
                                      .max_in = 0,
                                      .max_out = 1,
                                      .pump = pull_pump,
                                      .destroy = free,
                                      .impl_size = sizeof(pull_t)};

rill_stage_t *rill_source_fn(rill_pull_fn *fn, void *opaque)
{
    if (!fn)
        return rill__stage_spec_bad(&rill__pull_kind, RILL_EINVAL, "the pull function is NULL");
    pull_t *p = calloc(1, sizeof(*p));
    if (p) {
        p->fn = fn;
        p->opaque = opaque;
    }
    return rill__stage_spec_new(&rill__pull_kind, p);
}
