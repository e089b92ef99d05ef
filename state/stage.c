/*
 * The stateful stage (rill_stage_stateful): a function per Kafka record
 * with a view of its partition's state, on the stateful core (core.h):
 * the records' state changes and offsets commit in one transaction, and
 * the records are confirmed only then.
 *
 * Outputs go out at once (as flat_map's, through the core's queue), each
 * with a reference of its input's origin; the core keeps the input's own
 * reference until the commit.
 */
#include <stdlib.h>
#include <string.h>

#include "core.h"

typedef struct stateful {
    rill__sf_t core;
    rill_stateful_fn *fn;
    void *opaque;
} stateful_t;

static void stateful_destroy(void *impl)
{
    stateful_t *s = impl;
    if (!s)
        return;
    rill__sf_fini(&s->core);
    free(s);
}

static void *stateful_clone(const void *impl)
{
    const stateful_t *b = impl;
    stateful_t *s = calloc(1, sizeof(*s));
    if (s) {
        rill__sf_clone(&s->core, &b->core);
        s->fn = b->fn;
        s->opaque = b->opaque;
    }
    return s;
}

static rill_err_t stateful_start(rill__stage_t *st)
{
    stateful_t *s = st->spec.impl;
    return rill__sf_start(&s->core, st);
}

static void stateful_on_next(rill__stage_t *st, int in, rill_elem_t *e)
{
    (void)in;
    stateful_t *s = st->spec.impl;
    rill__sf_t *c = &s->core;
    rill__sf_rec_t r;
    if (!rill__sf_enter(c, e, NULL, &r))
        return;
    rill_emitter_t out = {.st = st, .q = &c->q, .origin = r.origin};
    size_t mark = c->q.count;
    rill__elem_scope_t sc;
    rill__elem_scope_enter(&sc, e, out.origin);
    rill_err_t err = s->fn(s->opaque, r.view, e, &out);
    rill__elem_scope_leave(&sc);
    if (sc.verdict) {
        /* Rejected or retried: the source has it; what the function wrote
         * for it stays in the transaction. */
        rill__equeue_drop_since(&c->q, mark);
        rill_origin_release(out.origin);
        return;
    }
    if (!err)
        err = out.err;
    if (err) {
        rill__equeue_drop_since(&c->q, mark);
        rill__sf_abort(c);
        rill__stage_fail_blame(st, out.origin, err, "stateful function returned %s",
                               rill_err_name(err));
        return;
    }
    rill__sf_applied(c, r.p, r.offset, out.origin);
}

static void stateful_on_msg(rill__stage_t *st, rill_msg_t *m)
{
    stateful_t *s = st->spec.impl;
    rill__sf_on_msg(&s->core, m);
}

static void stateful_on_input_end(rill__stage_t *st, int in, rill_err_t code, const char *text)
{
    (void)in;
    stateful_t *s = st->spec.impl;
    rill__sf_input_end(&s->core, code, text);
}

static void stateful_pump(rill__stage_t *st)
{
    stateful_t *s = st->spec.impl;
    rill__sf_pump(&s->core);
}

const rill__kind_t rill__stateful_kind = {.name = "stateful",
                                          .max_in = 1,
                                          .max_out = 1,
                                          .optional_out = 1,
                                          .start = stateful_start,
                                          .on_next = stateful_on_next,
                                          .on_input_end = stateful_on_input_end,
                                          .pump = stateful_pump,
                                          .on_msg = stateful_on_msg,
                                          .destroy = stateful_destroy,
                                          .clone = stateful_clone};

rill_stage_t *rill_stage_stateful(rill_store_t *store, const rill_stateful_opts_t *opts,
                                  rill_stateful_fn *fn, void *opaque)
{
    if (!store || !fn)
        return rill__stage_spec_bad(&rill__stateful_kind, RILL_EINVAL,
                                    "the store and the function must not be NULL");
    stateful_t *s = calloc(1, sizeof(*s));
    if (s) {
        rill__sf_init(&s->core, store, opts);
        s->fn = fn;
        s->opaque = opaque;
    }
    return rill__stage_spec_new(&rill__stateful_kind, s);
}
