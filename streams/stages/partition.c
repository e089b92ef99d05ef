/*
 * partition_by_key: elements spread over worker map actors by key, with
 * per-key order (a composite: see below).
 */
#include <stdint.h>
#include <stdlib.h>

#include "../kinds.h"

/*
 * A composite: this router actor, `workers` map actors (one per executor
 * in turn, so they run in parallel) and a merge actor. Elements go to
 * worker key % workers; a worker handles its elements in order, and the
 * merge keeps each worker's order, so elements of one key keep theirs.
 * Downstream subscriptions to the router are forwarded to the merge.
 */
typedef struct router {
    uint32_t workers;
    rill_key_fn *key_fn;
    rill_map_fn *fn;
    void *opaque;
    rill_aid_t *worker_aid;
    rill__equeue_t *q; /* per worker */
    int upstream_done;
} router_t;

static void router_destroy(void *impl)
{
    router_t *r = impl;
    if (!r)
        return;
    if (r->q)
        for (uint32_t w = 0; w < r->workers; w++)
            rill__equeue_free(&r->q[w]);
    free(r->q);
    free(r->worker_aid);
    free(r);
}

static int router_own(rill__stage_t *st, rill_aid_t sub)
{
    router_t *r = st->spec.impl;
    for (uint32_t w = 0; w < r->workers; w++)
        if (rill_aid_eq(r->worker_aid[w], sub))
            return 1;
    return 0;
}

static rill_err_t router_start(rill__stage_t *st)
{
    router_t *r = st->spec.impl;
    r->worker_aid = calloc(r->workers, sizeof(*r->worker_aid));
    r->q = calloc(r->workers, sizeof(*r->q));
    if (!r->worker_aid || !r->q)
        return RILL_ENOMEM;
    size_t qcap = st->window / r->workers ? st->window / r->workers : 1;
    for (uint32_t w = 0; w < r->workers; w++)
        if (rill__equeue_init(&r->q[w], qcap))
            return RILL_ENOMEM;
    st->n_out_expected = r->workers;

    rill_aid_t merge;
    rill_stage_opts_t mo = {0};
    rill_err_t err = rill__stage_spawn_hooked(st->sys, rill_stage_merge(r->workers), &mo, &st->hook,
                                              &merge, NULL, 0);
    if (err)
        return err;
    int nexec = rill_system_executors(st->sys);
    for (uint32_t w = 0; w < r->workers; w++) {
        rill_stage_opts_t wo = {.executor = RILL_EXECUTOR(w % (uint32_t)nexec)};
        err = rill__stage_spawn_hooked(st->sys, rill_stage_map(r->fn, r->opaque), &wo, &st->hook,
                                       &r->worker_aid[w], NULL, 0);
        if (err)
            return err;
        rill_stage_connect(st->sys, st->self, r->worker_aid[w], NULL, 0);
        rill_stage_connect(st->sys, r->worker_aid[w], merge, NULL, 0);
    }
    st->forward_subscribe = merge;
    return RILL_OK;
}

static void router_on_next(rill__stage_t *st, int in, rill_elem_t *e)
{
    (void)in;
    router_t *r = st->spec.impl;
    uint32_t w = (uint32_t)(r->key_fn(r->opaque, e) % r->workers);
    if (!rill__equeue_push(&r->q[w], e))
        rill_elem_release(e);
}

static void router_on_input_end(rill__stage_t *st, int in, rill_err_t code, const char *text)
{
    (void)in;
    router_t *r = st->spec.impl;
    rill__queue_stage_end(st, &r->upstream_done, code, text);
}

static void router_pump(rill__stage_t *st)
{
    router_t *r = st->spec.impl;
    size_t min_room = SIZE_MAX, queued = 0;
    for (uint32_t i = 0; i < st->n_out; i++) {
        uint32_t w = 0;
        while (w < r->workers && !rill_aid_eq(r->worker_aid[w], st->out[i].sub))
            w++;
        if (w == r->workers)
            continue;
        rill_elem_t e;
        while (r->q[w].count && rill__stage_can_emit(st, (int)i) && rill__equeue_pop(&r->q[w], &e))
            rill__stage_emit(st, (int)i, &e);
    }
    for (uint32_t w = 0; w < r->workers; w++) {
        queued += r->q[w].count;
        if (rill__equeue_room(&r->q[w]) < min_room)
            min_room = rill__equeue_room(&r->q[w]);
    }
    if (r->upstream_done) {
        if (!queued)
            rill__stage_complete(st);
        return;
    }
    /* Any element may be for any worker: ask only for what the fullest
     * worker queue can still take. */
    rill__stage_want(st, 0, (int64_t)min_room);
}

const rill__kind_t rill__partition_kind = {.name = "partition",
                                           .max_in = 1,
                                           .max_out = RILL__MAX_LINKS,
                                           .start = router_start,
                                           .on_next = router_on_next,
                                           .on_input_end = router_on_input_end,
                                           .pump = router_pump,
                                           .own_subscriber = router_own,
                                           .destroy = router_destroy,
                                           .impl_size = sizeof(router_t)};

rill_stage_t *rill_stage_partition_by_key(uint32_t workers, rill_key_fn *key_fn, rill_map_fn *fn,
                                          void *opaque)
{
    if (workers == 0 || workers > RILL__MAX_LINKS - 1)
        return rill__stage_spec_bad(&rill__partition_kind, RILL_EINVAL,
                                    "workers must be 1 to %d, got %u", RILL__MAX_LINKS - 1,
                                    workers);
    if (!key_fn || !fn)
        return rill__stage_spec_bad(&rill__partition_kind, RILL_EINVAL,
                                    "the key function and the map function must be set");
    router_t *r = calloc(1, sizeof(*r));
    if (r) {
        r->workers = workers;
        r->key_fn = key_fn;
        r->fn = fn;
        r->opaque = opaque;
    }
    return rill__stage_spec_new(&rill__partition_kind, r);
}
