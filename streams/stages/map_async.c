/*
 * map_async: each element handed to an asynchronous function, at most
 * `parallelism` jobs at a time; results are emitted in input order
 * (ordered) or as they complete.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "../kinds.h"

/* A job outlives its stage if need be: it holds no pointer into it. */
struct rill_async_job {
    rill_system_t *sys;
    rill_aid_t stage;
    uint64_t seq;
    _Atomic int completed;
    rill_err_t err;
    rill_elem_t out;
    rill_origin_t *origin; /* the input's: the result carries it */
};

/* A job that is not emitted (the stage failed or is gone): its result and
 * its input's origin are released, unconfirmed. */
static void job_free(void *p)
{
    rill_async_job_t *job = p;
    if (!job)
        return;
    rill_elem_release(&job->out);
    rill_origin_release(job->origin);
    free(job);
}

rill_err_t rill_async_complete(rill_async_job_t *job, rill_err_t err, const rill_elem_t *out)
{
    if (!job)
        return RILL_EINVAL;
    int expected = 0;
    /* acq_rel: exactly one completion wins; its writes below are published
     * by the message send. */
    if (!atomic_compare_exchange_strong_explicit(&job->completed, &expected, 1,
                                                 memory_order_acq_rel, memory_order_acquire))
        return RILL_EINVAL;
    job->err = err;
    if (!err) {
        if (!rill_elem_valid(out)) {
            job->err = RILL_EINVAL;
        } else {
            job->out = *out;
        }
    }
    rill_msg_t m = {.type = RILL__STREAM_ASYNC_DONE, .payload = job, .dtor = job_free};
    if (rill_signal(job->sys, job->stage, &m) != RILL_OK)
        job_free(job); /* the stage is gone: release the result */
    return RILL_OK;
}

typedef struct slot {
    int present;
    rill_elem_t e;
} slot_t;

typedef struct async_stage {
    rill_async_fn *fn;
    void *opaque;
    uint32_t parallelism;
    int ordered;
    uint32_t in_flight;
    uint64_t next_seq;  /* seq of the next job started */
    uint64_t emit_seq;  /* ordered: seq of the next result to release */
    slot_t *reorder;    /* ordered: results waiting for earlier ones */
    uint32_t reordered; /* how many are waiting there */
    rill__equeue_t q;   /* results ready to emit */
    int upstream_done;
} async_stage_t;

static void async_destroy(void *impl)
{
    async_stage_t *a = impl;
    if (!a)
        return;
    if (a->reorder)
        for (uint32_t i = 0; i < a->parallelism; i++)
            if (a->reorder[i].present)
                rill_elem_release(&a->reorder[i].e);
    free(a->reorder);
    rill__equeue_free(&a->q);
    free(a);
}

static rill_err_t async_start(rill__stage_t *st)
{
    async_stage_t *a = st->spec.impl;
    a->reorder = calloc(a->parallelism, sizeof(*a->reorder));
    if (!a->reorder || rill__equeue_init(&a->q, a->parallelism))
        return RILL_ENOMEM;
    return RILL_OK;
}

static void async_on_next(rill__stage_t *st, int in, rill_elem_t *e)
{
    (void)in;
    async_stage_t *a = st->spec.impl;
    rill_async_job_t *job = calloc(1, sizeof(*job));
    if (!job) {
        rill_elem_release(e);
        rill__stage_fail(st, RILL_ENOMEM, "out of memory starting an async job");
        return;
    }
    job->sys = st->sys;
    job->stage = st->self;
    job->seq = a->next_seq++;
    job->origin = e->origin; /* the function never sees it */
    e->origin = NULL;
    a->in_flight++;
    rill_err_t err = a->fn(a->opaque, job, e);
    if (err) {
        /* The function refused the element; it did not complete the job. */
        a->in_flight--;
        rill_origin_t *suspect = job->origin;
        free(job);
        rill__stage_fail_blame(st, suspect, err, "async function returned %s", rill_err_name(err));
    }
}

static void async_on_msg(rill__stage_t *st, rill_msg_t *m)
{
    if (m->type != RILL__STREAM_ASYNC_DONE)
        return;
    async_stage_t *a = st->spec.impl;
    rill_async_job_t *job = rill_msg_take(m);
    a->in_flight--;
    if (job->err) {
        rill_origin_t *suspect = job->origin;
        job->origin = NULL;
        rill__stage_fail_blame(st, suspect, job->err, "async job failed with %s",
                               rill_err_name(job->err));
        job_free(job);
        return;
    }
    rill_elem_t out = job->out;
    memset(&job->out, 0, sizeof(job->out));
    rill__elem_adopt(&out, job->origin);
    job->origin = NULL;
    if (a->ordered) {
        slot_t *s = &a->reorder[job->seq % a->parallelism];
        s->e = out;
        s->present = 1;
        a->reordered++;
        for (;;) {
            slot_t *head = &a->reorder[a->emit_seq % a->parallelism];
            if (!head->present)
                break;
            rill__equeue_push(&a->q, &head->e);
            head->present = 0;
            a->reordered--;
            a->emit_seq++;
        }
    } else {
        rill__equeue_push(&a->q, &out);
    }
    free(job);
    if (!st->finished)
        st->spec.kind->pump(st);
}

static void async_on_input_end(rill__stage_t *st, int in, rill_err_t code, const char *text)
{
    (void)in;
    async_stage_t *a = st->spec.impl;
    rill__queue_stage_end(st, &a->upstream_done, code, text);
}

static void async_pump(rill__stage_t *st)
{
    async_stage_t *a = st->spec.impl;
    rill__equeue_flush_out0(st, &a->q);
    /* Jobs running plus results held (queued or waiting for an earlier
     * one) never exceed the parallelism: that bounds the queue, the
     * reorder slots and the work. */
    uint32_t busy = a->in_flight + (uint32_t)a->q.count + a->reordered;
    if (a->upstream_done) {
        if (!busy)
            rill__stage_complete(st);
        return;
    }
    rill__stage_want(st, 0, busy >= a->parallelism ? 0 : (int64_t)(a->parallelism - busy));
}

const rill__kind_t rill__map_async_kind = {.name = "map_async",
                                           .max_in = 1,
                                           .max_out = 1,
                                           .start = async_start,
                                           .on_next = async_on_next,
                                           .on_input_end = async_on_input_end,
                                           .pump = async_pump,
                                           .on_msg = async_on_msg,
                                           .destroy = async_destroy,
                                           .impl_size = sizeof(async_stage_t)};

rill_stage_t *rill_stage_map_async(rill_async_fn *fn, void *opaque, uint32_t parallelism,
                                   int ordered)
{
    if (!fn)
        return rill__stage_spec_bad(&rill__map_async_kind, RILL_EINVAL,
                                    "the async function is NULL");
    if (parallelism == 0 || parallelism > 65536)
        return rill__stage_spec_bad(&rill__map_async_kind, RILL_EINVAL,
                                    "parallelism must be 1 to 65536, got %u", parallelism);
    async_stage_t *a = calloc(1, sizeof(*a));
    if (a) {
        a->fn = fn;
        a->opaque = opaque;
        a->parallelism = parallelism;
        a->ordered = ordered;
    }
    return rill__stage_spec_new(&rill__map_async_kind, a);
}
