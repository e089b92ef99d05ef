/*
 * range: a source of the value elements start, start + 1, ... (count of
 * them, or endless).
 */
#include <stdint.h>
#include <stdlib.h>

#include "../kinds.h"

typedef struct range {
    uint64_t next, end; /* end == UINT64_MAX: endless */
} range_t;

static void range_pump(rill__stage_t *st)
{
    range_t *r = st->spec.impl;
    int budget = RILL__PUMP_BUDGET;
    while (r->next < r->end && budget-- > 0 && rill__stage_can_emit(st, 0)) {
        rill_elem_t e = rill_elem_value(r->next++);
        rill__stage_emit(st, 0, &e);
    }
    if (r->next >= r->end && r->end != UINT64_MAX)
        rill__stage_complete(st);
    else if (budget < 0 && rill__stage_can_emit(st, 0))
        rill__stage_repump(st); /* yield the executor, then go on */
}

const rill__kind_t rill__range_kind = {.name = "range",
                                       .max_in = 0,
                                       .max_out = 1,
                                       .pump = range_pump,
                                       .destroy = free,
                                       .impl_size = sizeof(range_t)};

rill_stage_t *rill_source_range(uint64_t start, uint64_t count)
{
    range_t *r = calloc(1, sizeof(*r));
    if (r) {
        r->next = start;
        r->end = count == UINT64_MAX || start > UINT64_MAX - count ? UINT64_MAX : start + count;
    }
    return rill__stage_spec_new(&rill__range_kind, r);
}
