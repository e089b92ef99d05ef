/*
 * merge: the elements of several inputs into one output, as they come;
 * each input's order is kept.
 */
#include <stdlib.h>

#include "../kinds.h"

typedef struct merge {
    uint32_t inputs;
    rill__equeue_t q;
} merge_t;

static void merge_destroy(void *impl)
{
    merge_t *m = impl;
    if (!m)
        return;
    rill__equeue_free(&m->q);
    free(m);
}

static rill_err_t merge_start(rill__stage_t *st)
{
    merge_t *m = st->spec.impl;
    return rill__equeue_init(&m->q, st->window) ? RILL_ENOMEM : RILL_OK;
}

static void merge_on_next(rill__stage_t *st, int in, rill_elem_t *e)
{
    (void)in;
    merge_t *m = st->spec.impl;
    if (!rill__equeue_push(&m->q, e))
        rill_elem_release(e);
}

static int merge_all_done(const rill__stage_t *st, const merge_t *m)
{
    return st->n_in >= m->inputs && rill__stage_inputs_done(st);
}

static void merge_on_input_end(rill__stage_t *st, int in, rill_err_t code, const char *text)
{
    (void)in;
    if (code)
        rill__stage_fail_from_upstream(st, code, text); /* cancels the others */
}

static void merge_pump(rill__stage_t *st)
{
    merge_t *m = st->spec.impl;
    rill__equeue_flush_out0(st, &m->q);
    if (merge_all_done(st, m)) {
        if (!m->q.count)
            rill__stage_complete(st);
        return;
    }
    /* Share the queue's free room among the inputs. An input never holds
     * more than its share of the whole queue (at least 1): an input that
     * is answered first, or that asks and then sends nothing, must not
     * take the room the others need (it starved them for good). Inputs
     * still waiting for their ON_SUBSCRIBE or not connected yet count, so
     * the first to come cannot take it all; ended inputs do not. */
    int64_t outstanding = 0;
    uint32_t running = 0, sharers = m->inputs > st->n_in ? m->inputs - st->n_in : 0;
    for (uint32_t i = 0; i < st->n_in; i++) {
        const rill__in_t *l = &st->in[i];
        if (l->cancelled || (l->state != LINK_ACTIVE && l->state != LINK_PENDING))
            continue;
        sharers++;
        if (l->state == LINK_ACTIVE) {
            outstanding += l->outstanding;
            running++;
        }
    }
    if (!running)
        return;
    int64_t cap = (int64_t)st->window / sharers;
    if (cap < 1)
        cap = 1;
    int64_t room = (int64_t)rill__equeue_room(&m->q) - outstanding;
    for (uint32_t i = 0; i < st->n_in && room > 0; i++)
        if (st->in[i].state == LINK_ACTIVE && !st->in[i].cancelled) {
            int64_t before = st->in[i].outstanding;
            int64_t want = cap < before + room ? cap : before + room;
            rill__stage_want(st, (int)i, want);
            room -= st->in[i].outstanding - before;
        }
}

const rill__kind_t rill__merge_kind = {.name = "merge",
                                       .max_in = RILL__MAX_LINKS,
                                       .max_out = 1,
                                       .start = merge_start,
                                       .on_next = merge_on_next,
                                       .on_input_end = merge_on_input_end,
                                       .pump = merge_pump,
                                       .destroy = merge_destroy,
                                       .impl_size = sizeof(merge_t)};

rill_stage_t *rill_stage_merge(uint32_t inputs)
{
    if (inputs == 0 || inputs > RILL__MAX_LINKS - 1)
        return rill__stage_spec_bad(&rill__merge_kind, RILL_EINVAL,
                                    "inputs must be 1 to %d, got %u", RILL__MAX_LINKS - 1, inputs);
    merge_t *m = calloc(1, sizeof(*m));
    if (m)
        m->inputs = inputs;
    return rill__stage_spec_new(&rill__merge_kind, m);
}
