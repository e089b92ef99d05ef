/*
 * The element queue that kinds keep elements in (a ring, see stream_int.h:
 * pushing and popping are inline there), and the end of a queue-backed
 * 1-in 1-out processor.
 */
#include <stdlib.h>

#include "../kinds.h"

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

int rill__equeue_grow(rill__equeue_t *q)
{
    size_t size = (q->mask + 1) * 2;
    rill_elem_t *v = calloc(size, sizeof(*v));
    if (!v)
        return -1;
    for (size_t i = 0; i < q->count; i++)
        v[i] = q->v[(q->head + i) & q->mask];
    free(q->v);
    q->v = v;
    q->mask = size - 1;
    q->head = 0;
    q->cap = size;
    return 0;
}

/* Shared end of a queue-backed processor. */
void rill__queue_stage_end(rill__stage_t *st, int *upstream_done, rill_err_t code, const char *text)
{
    if (code) {
        rill__stage_fail_from_upstream(st, code, text);
        return;
    }
    *upstream_done = 1;
}
