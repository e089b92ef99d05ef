/*
 * sinks: foreach (a function per element, confirming it when it returns
 * RILL_OK), foreach_manual (the function confirms), ignore, and collect
 * (into a rill_collector_t). The end of a pipeline is where records are
 * confirmed (see ORIGINS in stream.h).
 */
#include <stdlib.h>

#include "../kinds.h"

struct rill_collector {
    rill_elem_t *v;
    size_t count, cap;
};

rill_collector_t *rill_collector_new(void)
{
    return calloc(1, sizeof(rill_collector_t));
}

size_t rill_collector_count(const rill_collector_t *c)
{
    return c ? c->count : 0;
}

const rill_elem_t *rill_collector_at(const rill_collector_t *c, size_t i)
{
    return c && i < c->count ? &c->v[i] : NULL;
}

void rill_collector_free(rill_collector_t *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->count; i++)
        rill_elem_release(&c->v[i]);
    free(c->v);
    free(c);
}

typedef struct sink {
    rill_foreach_fn *fn;
    void *opaque;
    rill_collector_t *collect;
    int manual; /* fn confirms the elements itself */
} sink_t;

static void sink_on_next(rill__stage_t *st, int in, rill_elem_t *e)
{
    (void)in;
    sink_t *s = st->spec.impl;
    if (s->collect) {
        rill_collector_t *c = s->collect;
        rill_elem_t *v = rill__grow(c->v, &c->cap, c->count, sizeof(*v), 1024);
        if (!v) {
            rill_elem_release(e);
            rill__stage_fail(st, RILL_ENOMEM, "out of memory collecting");
            return;
        }
        c->v = v;
        rill_origin_confirm(e->origin); /* collected is handled */
        e->origin = NULL;
        c->v[c->count++] = *e;
        st->delivered++;
        return;
    }
    if (!s->fn) {
        rill_elem_confirm(e);
        st->delivered++;
        return;
    }
    rill_origin_t *origin = NULL;
    if (!s->manual) {
        origin = e->origin; /* ours: confirmed once fn says it handled e */
        e->origin = NULL;
    }
    rill__elem_scope_t sc;
    rill__elem_scope_enter(&sc, e, origin);
    rill_err_t err = s->fn(s->opaque, e);
    rill__elem_scope_leave(&sc);
    if (sc.verdict) {
        rill_origin_release(origin); /* rejected or retried: the source has it */
        return;
    }
    if (err) {
        rill__stage_fail_blame(st, origin, err, "sink function returned %s", rill_err_name(err));
        return;
    }
    rill_origin_confirm(origin);
    st->delivered++;
}

static void sink_on_input_end(rill__stage_t *st, int in, rill_err_t code, const char *text)
{
    (void)in;
    if (code)
        rill__stage_fail_from_upstream(st, code, text);
    else
        rill__stage_complete(st);
}

static void sink_pump(rill__stage_t *st)
{
    rill__stage_want(st, 0, st->window);
}

const rill__kind_t rill__sink_kind = {.name = "sink",
                                      .max_in = 1,
                                      .max_out = 0,
                                      .on_next = sink_on_next,
                                      .on_input_end = sink_on_input_end,
                                      .pump = sink_pump,
                                      .destroy = free,
                                      .impl_size = sizeof(sink_t)};

static rill_stage_t *sink_spec(rill_foreach_fn *fn, void *opaque, rill_collector_t *c, int manual)
{
    sink_t *s = calloc(1, sizeof(*s));
    if (s) {
        s->fn = fn;
        s->opaque = opaque;
        s->collect = c;
        s->manual = manual;
    }
    return rill__stage_spec_new(&rill__sink_kind, s);
}

rill_stage_t *rill_sink_foreach(rill_foreach_fn *fn, void *opaque)
{
    if (!fn)
        return rill__stage_spec_bad(&rill__sink_kind, RILL_EINVAL, "the foreach function is NULL");
    return sink_spec(fn, opaque, NULL, 0);
}

rill_stage_t *rill_sink_foreach_manual(rill_foreach_fn *fn, void *opaque)
{
    if (!fn)
        return rill__stage_spec_bad(&rill__sink_kind, RILL_EINVAL, "the foreach function is NULL");
    return sink_spec(fn, opaque, NULL, 1);
}

rill_stage_t *rill_sink_ignore(void)
{
    return sink_spec(NULL, NULL, NULL, 0);
}

rill_stage_t *rill_sink_collect(rill_collector_t *c)
{
    if (!c)
        return rill__stage_spec_bad(&rill__sink_kind, RILL_EINVAL, "the collector is NULL");
    return sink_spec(NULL, NULL, c, 0);
}
