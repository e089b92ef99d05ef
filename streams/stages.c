/*
 * The built-in stage kinds. Each is a set of hooks the engine (stage.c)
 * calls on the stage's executor; ownership of every element is stated
 * where it changes hands.
 *
 * The shape shared by the 1-in 1-out processors: elements that are ready
 * to go wait in an output queue; pump() flushes the queue while there is
 * demand, then asks upstream for as many elements as the queue has room
 * for. Memory per stage is therefore bounded by its queue plus its
 * mailbox, whatever the backlog upstream.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../actors/seam.h"
#include "stream_int.h"

#define PUMP_BUDGET 256 /* elements a source emits per turn before yielding */

/* ------------------------------------------------------------------ */
/* Element queue                                                       */
/* ------------------------------------------------------------------ */

/* The ring's storage is a power of two (index by mask, not %); `cap` is
 * the logical capacity, which may be less. */
int rill__equeue_init(rill__equeue_t *q, size_t cap)
{
    size_t size = 1;
    while (size < cap)
        size <<= 1;
    q->v = calloc(size, sizeof(*q->v));
    q->cap = cap ? cap : 1;
    q->mask = size - 1;
    q->head = q->count = 0;
    return q->v ? 0 : -1;
}

void rill__equeue_free(rill__equeue_t *q)
{
    rill_elem_t e;
    while (rill__equeue_pop(q, &e))
        rill_elem_release(&e);
    free(q->v);
    q->v = NULL;
}

int rill__equeue_push(rill__equeue_t *q, const rill_elem_t *e)
{
    if (q->count == q->cap)
        return 0;
    q->v[(q->head + q->count) & q->mask] = *e;
    q->count++;
    return 1;
}

int rill__equeue_pop(rill__equeue_t *q, rill_elem_t *e)
{
    if (!q->count)
        return 0;
    *e = q->v[q->head];
    q->head = (q->head + 1) & q->mask;
    q->count--;
    return 1;
}

int rill__equeue_pop_tail(rill__equeue_t *q, rill_elem_t *e)
{
    if (!q->count)
        return 0;
    q->count--;
    *e = q->v[(q->head + q->count) & q->mask];
    return 1;
}

rill_elem_t *rill__equeue_peek(rill__equeue_t *q)
{
    return q->count ? &q->v[q->head] : NULL;
}

static size_t equeue_room(const rill__equeue_t *q)
{
    return q->cap - q->count;
}

/* Flush q to output 0 while it has demand. */
static void flush_out0(rill__stage_t *st, rill__equeue_t *q)
{
    rill_elem_t e;
    while (q->count && rill__stage_can_emit(st, 0) && rill__equeue_pop(q, &e))
        rill__stage_emit(st, 0, &e);
}

static rill_stage_t *new_spec(const rill__kind_t *kind, void *impl)
{
    if (!impl)
        return NULL;
    rill_stage_t *s = calloc(1, sizeof(*s));
    if (!s) {
        if (kind->destroy)
            kind->destroy(impl);
        return NULL;
    }
    s->kind = kind;
    s->impl = impl;
    return s;
}

/* ------------------------------------------------------------------ */
/* Sources                                                             */
/* ------------------------------------------------------------------ */

typedef struct range {
    uint64_t next, end; /* end == UINT64_MAX: endless */
} range_t;

static void range_pump(rill__stage_t *st)
{
    range_t *r = st->spec.impl;
    int budget = PUMP_BUDGET;
    while (r->next < r->end && budget-- > 0 && rill__stage_can_emit(st, 0)) {
        rill_elem_t e = rill_elem_value(r->next++);
        rill__stage_emit(st, 0, &e);
    }
    if (r->next >= r->end && r->end != UINT64_MAX)
        rill__stage_complete(st);
    else if (budget < 0 && rill__stage_can_emit(st, 0))
        rill__stage_repump(st); /* yield the executor, then go on */
}

static const rill__kind_t range_kind = {
    .name = "range", .max_in = 0, .max_out = 1, .pump = range_pump, .destroy = free};

rill_stage_t *rill_source_range(uint64_t start, uint64_t count)
{
    range_t *r = calloc(1, sizeof(*r));
    if (r) {
        r->next = start;
        r->end = count == UINT64_MAX || start > UINT64_MAX - count ? UINT64_MAX : start + count;
    }
    return new_spec(&range_kind, r);
}

typedef struct pull {
    rill_pull_fn *fn;
    void *opaque;
} pull_t;

static void pull_pump(rill__stage_t *st)
{
    pull_t *p = st->spec.impl;
    int budget = PUMP_BUDGET;
    while (budget-- > 0 && rill__stage_can_emit(st, 0)) {
        rill_elem_t e = {0};
        int r = p->fn(p->opaque, &e);
        if (r == 0) {
            rill__stage_complete(st);
            return;
        }
        if (r < 0) {
            rill__stage_fail(st, (rill_err_t)-r, "source failed with %s",
                             rill_err_name((rill_err_t)-r));
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

static const rill__kind_t pull_kind = {
    .name = "source", .max_in = 0, .max_out = 1, .pump = pull_pump, .destroy = free};

rill_stage_t *rill_source_fn(rill_pull_fn *fn, void *opaque)
{
    if (!fn)
        return NULL;
    pull_t *p = calloc(1, sizeof(*p));
    if (p) {
        p->fn = fn;
        p->opaque = opaque;
    }
    return new_spec(&pull_kind, p);
}

typedef struct failed_src {
    rill_err_t code;
    char text[120];
} failed_src_t;

static rill_err_t failed_start(rill__stage_t *st)
{
    failed_src_t *f = st->spec.impl;
    st->failed = 1;
    st->fail_code = f->code;
    snprintf(st->fail_text, sizeof(st->fail_text), "%.47s: %.108s", st->name, f->text);
    return RILL_OK;
}

static const rill__kind_t failed_kind = {
    .name = "failed-source", .max_in = 0, .max_out = 1, .start = failed_start, .destroy = free};

rill_stage_t *rill_source_failed(rill_err_t code, const char *text)
{
    if (code == RILL_OK)
        return NULL;
    failed_src_t *f = calloc(1, sizeof(*f));
    if (f) {
        f->code = code;
        snprintf(f->text, sizeof(f->text), "%s", text ? text : rill_err2str(code));
    }
    return new_spec(&failed_kind, f);
}

/* ------------------------------------------------------------------ */
/* map and filter                                                      */
/* ------------------------------------------------------------------ */

typedef struct mapper {
    rill_map_fn *map;
    rill_filter_fn *filter;
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
    if (m->filter) {
        if (!m->filter(m->opaque, e)) {
            rill_elem_release(e);
            return;
        }
        if (!m->q.count && rill__stage_can_emit(st, 0))
            rill__stage_emit(st, 0, e);
        else
            rill__equeue_push(&m->q, e);
        return;
    }
    rill_elem_t out = {0};
    rill_err_t err = m->map(m->opaque, e, &out);
    if (err) {
        rill_elem_release(&out);
        rill__stage_fail(st, err, "map function returned %s", rill_err_name(err));
        return;
    }
    if (!rill__elem_ok(&out)) {
        rill_elem_release(&out);
        rill__stage_fail(st, RILL_EINVAL, "map function produced an invalid (NULL) element");
        return;
    }
    /* The common case: nothing waiting and demand downstream: straight on. */
    if (!m->q.count && rill__stage_can_emit(st, 0))
        rill__stage_emit(st, 0, &out);
    else
        rill__equeue_push(&m->q, &out); /* room was reserved by the request */
}

/* Shared end of a queue-backed processor. */
static void queue_stage_end(rill__stage_t *st, int *upstream_done, rill_err_t code,
                            const char *text)
{
    if (code) {
        rill__stage_fail_from_upstream(st, code, text);
        return;
    }
    *upstream_done = 1;
}

static void mapper_on_input_end(rill__stage_t *st, int in, rill_err_t code, const char *text)
{
    (void)in;
    mapper_t *m = st->spec.impl;
    queue_stage_end(st, &m->upstream_done, code, text);
}

static void mapper_pump(rill__stage_t *st)
{
    mapper_t *m = st->spec.impl;
    flush_out0(st, &m->q);
    if (m->upstream_done) {
        if (!m->q.count)
            rill__stage_complete(st);
        return;
    }
    rill__stage_want(st, 0, (int64_t)equeue_room(&m->q));
}

static const rill__kind_t map_kind = {.name = "map",
                                      .max_in = 1,
                                      .max_out = 1,
                                      .start = mapper_start,
                                      .on_next = mapper_on_next,
                                      .on_input_end = mapper_on_input_end,
                                      .pump = mapper_pump,
                                      .destroy = mapper_destroy};

static const rill__kind_t filter_kind = {.name = "filter",
                                         .max_in = 1,
                                         .max_out = 1,
                                         .start = mapper_start,
                                         .on_next = mapper_on_next,
                                         .on_input_end = mapper_on_input_end,
                                         .pump = mapper_pump,
                                         .destroy = mapper_destroy};

rill_stage_t *rill_stage_map(rill_map_fn *fn, void *opaque)
{
    if (!fn)
        return NULL;
    mapper_t *m = calloc(1, sizeof(*m));
    if (m) {
        m->map = fn;
        m->opaque = opaque;
    }
    return new_spec(&map_kind, m);
}

rill_stage_t *rill_stage_filter(rill_filter_fn *fn, void *opaque)
{
    if (!fn)
        return NULL;
    mapper_t *m = calloc(1, sizeof(*m));
    if (m) {
        m->filter = fn;
        m->opaque = opaque;
    }
    return new_spec(&filter_kind, m);
}

/* ------------------------------------------------------------------ */
/* map_async                                                           */
/* ------------------------------------------------------------------ */

/* A job outlives its stage if need be: it holds no pointer into it. */
struct rill_async_job {
    rill_system_t *sys;
    rill_aid_t stage;
    uint64_t seq;
    _Atomic int completed;
    rill_err_t err;
    rill_elem_t out;
};

static void job_free(void *p)
{
    rill_async_job_t *job = p;
    if (!job)
        return;
    rill_elem_release(&job->out);
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
    a->in_flight++;
    rill_err_t err = a->fn(a->opaque, job, e);
    if (err) {
        /* The function refused the element; it did not complete the job. */
        a->in_flight--;
        free(job);
        rill__stage_fail(st, err, "async function returned %s", rill_err_name(err));
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
        rill__stage_fail(st, job->err, "async job failed with %s", rill_err_name(job->err));
        job_free(job);
        return;
    }
    rill_elem_t out = job->out;
    memset(&job->out, 0, sizeof(job->out));
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
    queue_stage_end(st, &a->upstream_done, code, text);
}

static void async_pump(rill__stage_t *st)
{
    async_stage_t *a = st->spec.impl;
    flush_out0(st, &a->q);
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

static const rill__kind_t async_kind = {.name = "map_async",
                                        .max_in = 1,
                                        .max_out = 1,
                                        .start = async_start,
                                        .on_next = async_on_next,
                                        .on_input_end = async_on_input_end,
                                        .pump = async_pump,
                                        .on_msg = async_on_msg,
                                        .destroy = async_destroy};

rill_stage_t *rill_stage_map_async(rill_async_fn *fn, void *opaque, uint32_t parallelism,
                                   int ordered)
{
    if (!fn || parallelism == 0 || parallelism > 65536)
        return NULL;
    async_stage_t *a = calloc(1, sizeof(*a));
    if (a) {
        a->fn = fn;
        a->opaque = opaque;
        a->parallelism = parallelism;
        a->ordered = ordered;
    }
    return new_spec(&async_kind, a);
}

/* ------------------------------------------------------------------ */
/* batch (groupedWithin)                                               */
/* ------------------------------------------------------------------ */

typedef struct batcher {
    size_t max_count;
    uint64_t max_ms;
    rill_batch_t *cur;
    uint64_t gen; /* which group the armed timer is for */
    uint64_t timer;
    int timer_armed;
    int due;              /* the group's time is up; seal when there is room */
    rill__equeue_t ready; /* sealed batches */
    int upstream_done;
} batcher_t;

static void batch_free(void *p)
{
    rill_batch_t *b = p;
    if (!b)
        return;
    for (size_t i = 0; i < b->count; i++)
        rill_elem_release(&b->elems[i]);
    free(b);
}

static void batcher_destroy(void *impl)
{
    batcher_t *b = impl;
    if (!b)
        return;
    batch_free(b->cur);
    rill__equeue_free(&b->ready);
    free(b);
}

static rill_err_t batcher_start(rill__stage_t *st)
{
    batcher_t *b = st->spec.impl;
    return rill__equeue_init(&b->ready, 2) ? RILL_ENOMEM : RILL_OK;
}

static void batcher_seal(rill__stage_t *st, batcher_t *b)
{
    if (!b->cur || !b->cur->count)
        return;
    if (b->timer_armed) {
        rill_timer_cancel(st->ctx, b->timer);
        b->timer_armed = 0;
    }
    rill_elem_t e = {.payload = b->cur, .dtor = batch_free, .arg = b->cur->count};
    rill__equeue_push(&b->ready, &e); /* room: callers check, and we stop
                                         pulling while it is full */
    b->cur = NULL;
    b->due = 0;
    b->gen++;
}

static void batcher_on_next(rill__stage_t *st, int in, rill_elem_t *e)
{
    (void)in;
    batcher_t *b = st->spec.impl;
    if (!b->cur) {
        b->cur = malloc(sizeof(rill_batch_t) + b->max_count * sizeof(rill_elem_t));
        if (!b->cur) {
            rill_elem_release(e);
            rill__stage_fail(st, RILL_ENOMEM, "out of memory for a batch");
            return;
        }
        b->cur->count = 0;
        if (b->max_ms) {
            rill_msg_t tick = {.type = RILL__STREAM_TICK, .arg = b->gen};
            if (rill_timer_start(st->ctx, b->max_ms, 0, &tick, &b->timer) == RILL_OK)
                b->timer_armed = 1;
        }
    }
    b->cur->elems[b->cur->count++] = *e;
    if (b->cur->count == b->max_count && b->ready.count < b->ready.cap)
        batcher_seal(st, b);
}

static void batcher_on_msg(rill__stage_t *st, rill_msg_t *m)
{
    batcher_t *b = st->spec.impl;
    if (m->type != RILL__STREAM_TICK || m->arg != b->gen)
        return; /* a stale timer of an earlier group */
    b->timer_armed = 0;
    b->due = 1;
    if (!st->finished)
        st->spec.kind->pump(st);
}

static void batcher_on_input_end(rill__stage_t *st, int in, rill_err_t code, const char *text)
{
    (void)in;
    batcher_t *b = st->spec.impl;
    queue_stage_end(st, &b->upstream_done, code, text);
}

static void batcher_pump(rill__stage_t *st)
{
    batcher_t *b = st->spec.impl;
    flush_out0(st, &b->ready);
    if (b->cur && (b->due || b->cur->count == b->max_count) && b->ready.count < b->ready.cap) {
        batcher_seal(st, b);
        flush_out0(st, &b->ready);
    }
    if (b->upstream_done) {
        if (b->cur && b->ready.count < b->ready.cap)
            batcher_seal(st, b);
        flush_out0(st, &b->ready);
        if (!b->cur && !b->ready.count)
            rill__stage_complete(st);
        return;
    }
    /* Pull for the group being filled, but not while a sealed group has
     * nowhere to go. */
    if (b->ready.count >= b->ready.cap)
        return;
    size_t room = b->max_count - (b->cur ? b->cur->count : 0);
    rill__stage_want(st, 0, (int64_t)room);
}

static const rill__kind_t batch_kind = {.name = "batch",
                                        .max_in = 1,
                                        .max_out = 1,
                                        .start = batcher_start,
                                        .on_next = batcher_on_next,
                                        .on_input_end = batcher_on_input_end,
                                        .pump = batcher_pump,
                                        .on_msg = batcher_on_msg,
                                        .destroy = batcher_destroy};

rill_stage_t *rill_stage_batch(size_t max_count, uint64_t max_ms)
{
    if (max_count == 0 || max_count > (1u << 24))
        return NULL;
    batcher_t *b = calloc(1, sizeof(*b));
    if (b) {
        b->max_count = max_count;
        b->max_ms = max_ms;
    }
    return new_spec(&batch_kind, b);
}

/* ------------------------------------------------------------------ */
/* buffer and conflate                                                 */
/* ------------------------------------------------------------------ */

typedef struct buffer {
    size_t size;
    rill_overflow_t overflow;
    rill__equeue_t q;
    int upstream_done;
    /* conflate */
    int conflate;
    rill_conflate_fn *combine;
    void *opaque;
} buffer_t;

static void buffer_destroy(void *impl)
{
    buffer_t *b = impl;
    if (!b)
        return;
    rill__equeue_free(&b->q);
    free(b);
}

static rill_err_t buffer_start(rill__stage_t *st)
{
    buffer_t *b = st->spec.impl;
    return rill__equeue_init(&b->q, b->size) ? RILL_ENOMEM : RILL_OK;
}

static void buffer_on_next(rill__stage_t *st, int in, rill_elem_t *e)
{
    (void)in;
    buffer_t *b = st->spec.impl;
    rill_elem_t old;
    if (b->conflate && b->q.count) {
        if (!b->combine) {
            /* keep latest: the older element goes */
            rill__equeue_pop(&b->q, &old);
            rill_elem_release(&old);
        } else {
            rill_elem_t *acc = rill__equeue_peek(&b->q);
            rill_err_t err = b->combine(b->opaque, acc, e);
            if (err)
                rill__stage_fail(st, err, "conflate function returned %s", rill_err_name(err));
            return; /* the function owns both; the result is in acc */
        }
    } else if (b->q.count == b->q.cap) {
        switch (b->overflow) {
        case RILL_OVERFLOW_BACKPRESSURE:
            break; /* cannot happen: we never asked for more than room */
        case RILL_OVERFLOW_DROP_HEAD:
            rill__equeue_pop(&b->q, &old);
            rill_elem_release(&old);
            break;
        case RILL_OVERFLOW_DROP_TAIL:
            rill__equeue_pop_tail(&b->q, &old);
            rill_elem_release(&old);
            break;
        case RILL_OVERFLOW_DROP_BUFFER:
            while (rill__equeue_pop(&b->q, &old))
                rill_elem_release(&old);
            break;
        case RILL_OVERFLOW_FAIL:
            rill_elem_release(e);
            rill__stage_fail(st, RILL_EFULL, "buffer of %zu elements overflowed", b->size);
            return;
        }
    }
    if (!rill__equeue_push(&b->q, e))
        rill_elem_release(e); /* defensive: a misbehaving upstream overran us */
}

static void buffer_on_input_end(rill__stage_t *st, int in, rill_err_t code, const char *text)
{
    (void)in;
    buffer_t *b = st->spec.impl;
    queue_stage_end(st, &b->upstream_done, code, text);
}

static void buffer_pump(rill__stage_t *st)
{
    buffer_t *b = st->spec.impl;
    flush_out0(st, &b->q);
    if (b->upstream_done) {
        if (!b->q.count)
            rill__stage_complete(st);
        return;
    }
    if (b->conflate || b->overflow != RILL_OVERFLOW_BACKPRESSURE)
        rill__stage_want(st, 0, st->window); /* never backpressures */
    else
        rill__stage_want(st, 0, (int64_t)equeue_room(&b->q));
}

static const rill__kind_t buffer_kind = {.name = "buffer",
                                         .max_in = 1,
                                         .max_out = 1,
                                         .start = buffer_start,
                                         .on_next = buffer_on_next,
                                         .on_input_end = buffer_on_input_end,
                                         .pump = buffer_pump,
                                         .destroy = buffer_destroy};

static const rill__kind_t conflate_kind = {.name = "conflate",
                                           .max_in = 1,
                                           .max_out = 1,
                                           .start = buffer_start,
                                           .on_next = buffer_on_next,
                                           .on_input_end = buffer_on_input_end,
                                           .pump = buffer_pump,
                                           .destroy = buffer_destroy};

rill_stage_t *rill_stage_buffer(size_t size, rill_overflow_t overflow)
{
    if (size == 0 || size > (1u << 24) || overflow < RILL_OVERFLOW_BACKPRESSURE ||
        overflow > RILL_OVERFLOW_FAIL)
        return NULL;
    buffer_t *b = calloc(1, sizeof(*b));
    if (b) {
        b->size = size;
        b->overflow = overflow;
    }
    return new_spec(&buffer_kind, b);
}

rill_stage_t *rill_stage_conflate(rill_conflate_fn *fn, void *opaque)
{
    buffer_t *b = calloc(1, sizeof(*b));
    if (b) {
        b->size = 1;
        b->conflate = 1;
        b->combine = fn;
        b->opaque = opaque;
    }
    return new_spec(&conflate_kind, b);
}

/* ------------------------------------------------------------------ */
/* throttle                                                            */
/* ------------------------------------------------------------------ */

typedef struct throttle {
    uint32_t elements;
    uint64_t per_ms;
    double tokens;
    int64_t last_us;
    rill__equeue_t q;
    int timer_armed;
    int upstream_done;
} throttle_t;

static void throttle_destroy(void *impl)
{
    throttle_t *t = impl;
    if (!t)
        return;
    rill__equeue_free(&t->q);
    free(t);
}

static rill_err_t throttle_start(rill__stage_t *st)
{
    throttle_t *t = st->spec.impl;
    t->tokens = t->elements; /* a full bucket: the first burst may go at once */
    t->last_us = rill__now_us();
    size_t cap = t->elements < st->window ? t->elements : st->window;
    return rill__equeue_init(&t->q, cap) ? RILL_ENOMEM : RILL_OK;
}

static void throttle_on_next(rill__stage_t *st, int in, rill_elem_t *e)
{
    (void)in;
    throttle_t *t = st->spec.impl;
    if (!rill__equeue_push(&t->q, e))
        rill_elem_release(e);
}

static void throttle_on_input_end(rill__stage_t *st, int in, rill_err_t code, const char *text)
{
    (void)in;
    throttle_t *t = st->spec.impl;
    queue_stage_end(st, &t->upstream_done, code, text);
}

static void throttle_pump(rill__stage_t *st)
{
    throttle_t *t = st->spec.impl;
    int64_t now = rill__now_us();
    double rate = (double)t->elements / ((double)t->per_ms * 1000.0); /* per µs */
    t->tokens += (double)(now - t->last_us) * rate;
    if (t->tokens > t->elements)
        t->tokens = t->elements;
    t->last_us = now;
    rill_elem_t e;
    while (t->tokens >= 1.0 && t->q.count && rill__stage_can_emit(st, 0) &&
           rill__equeue_pop(&t->q, &e)) {
        rill__stage_emit(st, 0, &e);
        t->tokens -= 1.0;
    }
    if (t->q.count && t->tokens < 1.0 && !t->timer_armed) {
        /* Wake when the next token is due. */
        uint64_t wait_ms = (uint64_t)((1.0 - t->tokens) / rate / 1000.0) + 1;
        rill_msg_t tick = {.type = RILL__STREAM_TICK};
        if (rill_timer_start(st->ctx, wait_ms, 0, &tick, NULL) == RILL_OK)
            t->timer_armed = 1;
    }
    if (t->upstream_done) {
        if (!t->q.count)
            rill__stage_complete(st);
        return;
    }
    rill__stage_want(st, 0, (int64_t)equeue_room(&t->q));
}

static void throttle_on_msg(rill__stage_t *st, rill_msg_t *m)
{
    throttle_t *t = st->spec.impl;
    if (m->type == RILL__STREAM_TICK) {
        t->timer_armed = 0;
        if (!st->finished)
            throttle_pump(st);
    }
}

static const rill__kind_t throttle_kind = {.name = "throttle",
                                           .max_in = 1,
                                           .max_out = 1,
                                           .start = throttle_start,
                                           .on_next = throttle_on_next,
                                           .on_input_end = throttle_on_input_end,
                                           .pump = throttle_pump,
                                           .on_msg = throttle_on_msg,
                                           .destroy = throttle_destroy};

rill_stage_t *rill_stage_throttle(uint32_t elements, uint64_t per_ms)
{
    if (elements == 0 || per_ms == 0)
        return NULL;
    throttle_t *t = calloc(1, sizeof(*t));
    if (t) {
        t->elements = elements;
        t->per_ms = per_ms;
    }
    return new_spec(&throttle_kind, t);
}

/* ------------------------------------------------------------------ */
/* broadcast                                                           */
/* ------------------------------------------------------------------ */

typedef struct bcast {
    uint32_t outputs;
    rill_copy_fn *copy;
    void *opaque;
    rill__equeue_t q;
    int upstream_done;
} bcast_t;

static void bcast_destroy(void *impl)
{
    bcast_t *b = impl;
    if (!b)
        return;
    rill__equeue_free(&b->q);
    free(b);
}

static rill_err_t bcast_start(rill__stage_t *st)
{
    bcast_t *b = st->spec.impl;
    st->n_out_expected = b->outputs;
    return rill__equeue_init(&b->q, st->window) ? RILL_ENOMEM : RILL_OK;
}

static void bcast_on_next(rill__stage_t *st, int in, rill_elem_t *e)
{
    (void)in;
    bcast_t *b = st->spec.impl;
    if (!rill__equeue_push(&b->q, e))
        rill_elem_release(e);
}

static void bcast_on_input_end(rill__stage_t *st, int in, rill_err_t code, const char *text)
{
    (void)in;
    bcast_t *b = st->spec.impl;
    queue_stage_end(st, &b->upstream_done, code, text);
}

static void bcast_pump(rill__stage_t *st)
{
    bcast_t *b = st->spec.impl;
    /* Nothing leaves before every output has subscribed: the slowest
     * branch sets the pace, including one that has not arrived yet. */
    if (!rill__stage_outputs_ready(st))
        return;
    while (b->q.count && rill__stage_min_demand(st) > 0) {
        rill_elem_t e;
        rill__equeue_pop(&b->q, &e);
        int first = -1;
        for (uint32_t i = 0; i < st->n_out; i++) {
            if (st->out[i].state != LINK_ACTIVE)
                continue;
            if (first < 0) {
                first = (int)i;
                continue;
            }
            rill_elem_t copy;
            if (b->copy) {
                memset(&copy, 0, sizeof(copy));
                rill_err_t err = b->copy(b->opaque, &e, &copy);
                if (err || !rill__elem_ok(&copy)) {
                    rill_elem_release(&copy);
                    rill_elem_release(&e);
                    rill__stage_fail(st, err ? err : RILL_EINVAL, "copy function failed");
                    return;
                }
            } else if (!e.dtor) {
                copy = e; /* a value or a borrowed pointer: share it */
            } else {
                rill_elem_release(&e);
                rill__stage_fail(st, RILL_EINVAL,
                                 "broadcast of an owned payload needs a copy function");
                return;
            }
            rill__stage_emit(st, (int)i, &copy);
        }
        if (first >= 0)
            rill__stage_emit(st, first, &e);
        else
            rill_elem_release(&e);
    }
    if (b->upstream_done) {
        if (!b->q.count)
            rill__stage_complete(st);
        return;
    }
    rill__stage_want(st, 0, (int64_t)equeue_room(&b->q));
}

static const rill__kind_t bcast_kind = {.name = "broadcast",
                                        .max_in = 1,
                                        .max_out = RILL__MAX_LINKS,
                                        .start = bcast_start,
                                        .on_next = bcast_on_next,
                                        .on_input_end = bcast_on_input_end,
                                        .pump = bcast_pump,
                                        .destroy = bcast_destroy};

rill_stage_t *rill_stage_broadcast(uint32_t outputs, rill_copy_fn *copy_fn, void *opaque)
{
    if (outputs == 0 || outputs > RILL__MAX_LINKS)
        return NULL;
    bcast_t *b = calloc(1, sizeof(*b));
    if (b) {
        b->outputs = outputs;
        b->copy = copy_fn;
        b->opaque = opaque;
    }
    return new_spec(&bcast_kind, b);
}

/* ------------------------------------------------------------------ */
/* merge                                                               */
/* ------------------------------------------------------------------ */

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
    flush_out0(st, &m->q);
    if (merge_all_done(st, m)) {
        if (!m->q.count)
            rill__stage_complete(st);
        return;
    }
    /* Share the queue's free room among the inputs still running. */
    int64_t outstanding = 0;
    uint32_t running = 0;
    for (uint32_t i = 0; i < st->n_in; i++)
        if (st->in[i].state == LINK_ACTIVE && !st->in[i].cancelled) {
            outstanding += st->in[i].outstanding;
            running++;
        }
    if (!running)
        return;
    int64_t room = (int64_t)equeue_room(&m->q) - outstanding;
    int64_t share = room > 0 ? room / running : 0;
    if (share == 0 && room > 0)
        share = 1;
    for (uint32_t i = 0; i < st->n_in && room > 0; i++)
        if (st->in[i].state == LINK_ACTIVE && !st->in[i].cancelled) {
            int64_t want = st->in[i].outstanding + (share < room ? share : room);
            int64_t before = st->in[i].outstanding;
            rill__stage_want(st, (int)i, want);
            room -= st->in[i].outstanding - before;
        }
}

static const rill__kind_t merge_kind = {.name = "merge",
                                        .max_in = RILL__MAX_LINKS,
                                        .max_out = 1,
                                        .start = merge_start,
                                        .on_next = merge_on_next,
                                        .on_input_end = merge_on_input_end,
                                        .pump = merge_pump,
                                        .destroy = merge_destroy};

static rill_stage_t *merge_spec(uint32_t inputs)
{
    if (inputs == 0 || inputs > RILL__MAX_LINKS - 1)
        return NULL;
    merge_t *m = calloc(1, sizeof(*m));
    if (m)
        m->inputs = inputs;
    rill_stage_t *s = new_spec(&merge_kind, m);
    return s;
}

rill_stage_t *rill_stage_merge(uint32_t inputs)
{
    return merge_spec(inputs);
}

/* ------------------------------------------------------------------ */
/* partition_by_key                                                    */
/* ------------------------------------------------------------------ */

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
        if (r->worker_aid[w] == sub)
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
    rill_stage_opts_t mo = {.executor = -1};
    rill_err_t err =
        rill__stage_spawn_hooked(st->sys, merge_spec(r->workers), &mo, &st->hook, &merge);
    if (err)
        return err;
    int nexec = rill_system_executors(st->sys);
    for (uint32_t w = 0; w < r->workers; w++) {
        rill_stage_opts_t wo = {.executor = (int)(w % (uint32_t)nexec)};
        err = rill__stage_spawn_hooked(st->sys, rill_stage_map(r->fn, r->opaque), &wo, &st->hook,
                                       &r->worker_aid[w]);
        if (err)
            return err;
        rill_stage_connect(st->sys, st->self, r->worker_aid[w]);
        rill_stage_connect(st->sys, r->worker_aid[w], merge);
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
    queue_stage_end(st, &r->upstream_done, code, text);
}

static void router_pump(rill__stage_t *st)
{
    router_t *r = st->spec.impl;
    size_t min_room = SIZE_MAX, queued = 0;
    for (uint32_t i = 0; i < st->n_out; i++) {
        uint32_t w = 0;
        while (w < r->workers && r->worker_aid[w] != st->out[i].sub)
            w++;
        if (w == r->workers)
            continue;
        rill_elem_t e;
        while (r->q[w].count && rill__stage_can_emit(st, (int)i) && rill__equeue_pop(&r->q[w], &e))
            rill__stage_emit(st, (int)i, &e);
    }
    for (uint32_t w = 0; w < r->workers; w++) {
        queued += r->q[w].count;
        if (equeue_room(&r->q[w]) < min_room)
            min_room = equeue_room(&r->q[w]);
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

static const rill__kind_t router_kind = {.name = "partition",
                                         .max_in = 1,
                                         .max_out = RILL__MAX_LINKS,
                                         .start = router_start,
                                         .on_next = router_on_next,
                                         .on_input_end = router_on_input_end,
                                         .pump = router_pump,
                                         .own_subscriber = router_own,
                                         .destroy = router_destroy};

rill_stage_t *rill_stage_partition_by_key(uint32_t workers, rill_key_fn *key_fn, rill_map_fn *fn,
                                          void *opaque)
{
    if (workers == 0 || workers > RILL__MAX_LINKS - 1 || !key_fn || !fn)
        return NULL;
    router_t *r = calloc(1, sizeof(*r));
    if (r) {
        r->workers = workers;
        r->key_fn = key_fn;
        r->fn = fn;
        r->opaque = opaque;
    }
    return new_spec(&router_kind, r);
}

/* ------------------------------------------------------------------ */
/* Sinks                                                               */
/* ------------------------------------------------------------------ */

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
} sink_t;

static void sink_on_next(rill__stage_t *st, int in, rill_elem_t *e)
{
    (void)in;
    sink_t *s = st->spec.impl;
    if (s->collect) {
        rill_collector_t *c = s->collect;
        if (c->count == c->cap) {
            size_t cap = c->cap ? c->cap * 2 : 1024;
            rill_elem_t *v = realloc(c->v, cap * sizeof(*v));
            if (!v) {
                rill_elem_release(e);
                rill__stage_fail(st, RILL_ENOMEM, "out of memory collecting");
                return;
            }
            c->v = v;
            c->cap = cap;
        }
        c->v[c->count++] = *e;
        st->delivered++;
        return;
    }
    if (!s->fn) {
        rill_elem_release(e);
        st->delivered++;
        return;
    }
    rill_err_t err = s->fn(s->opaque, e);
    if (err) {
        rill__stage_fail(st, err, "sink function returned %s", rill_err_name(err));
        return;
    }
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

static const rill__kind_t sink_kind = {.name = "sink",
                                       .max_in = 1,
                                       .max_out = 0,
                                       .on_next = sink_on_next,
                                       .on_input_end = sink_on_input_end,
                                       .pump = sink_pump,
                                       .destroy = free};

static rill_stage_t *sink_spec(rill_foreach_fn *fn, void *opaque, rill_collector_t *c)
{
    sink_t *s = calloc(1, sizeof(*s));
    if (s) {
        s->fn = fn;
        s->opaque = opaque;
        s->collect = c;
    }
    return new_spec(&sink_kind, s);
}

rill_stage_t *rill_sink_foreach(rill_foreach_fn *fn, void *opaque)
{
    return fn ? sink_spec(fn, opaque, NULL) : NULL;
}

rill_stage_t *rill_sink_ignore(void)
{
    return sink_spec(NULL, NULL, NULL);
}

rill_stage_t *rill_sink_collect(rill_collector_t *c)
{
    return c ? sink_spec(NULL, NULL, c) : NULL;
}
