/*
 * An unbounded intrusive multi-producer single-consumer queue (Dmitry
 * Vyukov's node-based design, as used by Pony's runtime). Used for actor
 * control queues and for executors' queues of runnable actors.
 *
 * push: one atomic exchange on head, then one store linking the previous
 * node; wait-free. pop: single consumer only; may report "empty" for the
 * instant between a producer's exchange and its link, which
 * rill__mpsc_maybe_nonempty() still reports as non-empty, so a consumer
 * that re-checks before sleeping never loses an item.
 */
#ifndef RILL_MPSC_H
#define RILL_MPSC_H

#include <stdatomic.h>
#include <sched.h>
#include <stddef.h>

typedef struct rill__node {
    struct rill__node *_Atomic next;
} rill__node_t;

typedef struct rill__mpsc {
    /* Producers swap themselves in here. */
    _Alignas(64) rill__node_t *_Atomic head;
    /* Consumer-owned. */
    _Alignas(64) rill__node_t *tail;
    rill__node_t stub;
} rill__mpsc_t;

static inline void rill__mpsc_init(rill__mpsc_t *q)
{
    atomic_store_explicit(&q->stub.next, NULL, memory_order_relaxed);
    atomic_store_explicit(&q->head, &q->stub, memory_order_relaxed);
    q->tail = &q->stub;
}

/* @locality any thread. */
static inline void rill__mpsc_push(rill__mpsc_t *q, rill__node_t *n)
{
    atomic_store_explicit(&n->next, NULL, memory_order_relaxed);
    /* acq_rel: release publishes n's contents to the consumer; acquire
     * orders after the previous producer's exchange so prev is valid. */
    rill__node_t *prev = atomic_exchange_explicit(&q->head, n, memory_order_acq_rel);
    /* release: the consumer's acquire load of prev->next sees n's fields. */
    atomic_store_explicit(&prev->next, n, memory_order_release);
}

/* @locality the single consumer. Returns NULL when empty (or a producer is
 * between its two steps). */
static inline rill__node_t *rill__mpsc_pop(rill__mpsc_t *q)
{
    rill__node_t *tail = q->tail;
    rill__node_t *next = atomic_load_explicit(&tail->next, memory_order_acquire);
    if (tail == &q->stub) {
        if (!next)
            return NULL;
        q->tail = next;
        tail = next;
        next = atomic_load_explicit(&tail->next, memory_order_acquire);
    }
    if (next) {
        q->tail = next;
        return tail;
    }
    /* tail is the last linked node. If a producer swapped head after it,
     * its link is on the way: report empty for now. */
    if (tail != atomic_load_explicit(&q->head, memory_order_acquire))
        return NULL;
    /* Re-insert the stub so tail can be handed out. */
    rill__mpsc_push(q, &q->stub);
    next = atomic_load_explicit(&tail->next, memory_order_acquire);
    if (next) {
        q->tail = next;
        return tail;
    }
    return NULL;
}

/* Non-zero if an item is queued or being pushed. seq_cst: pairs with the
 * producer's seq_cst check of the scheduled flag (see actor scheduling).
 * @locality the single consumer. */
static inline int rill__mpsc_maybe_nonempty(rill__mpsc_t *q)
{
    rill__node_t *tail = q->tail;
    if (atomic_load_explicit(&tail->next, memory_order_seq_cst))
        return 1;
    return atomic_load_explicit(&q->head, memory_order_seq_cst) != tail;
}

/* Pop, waiting out a producer caught between its two steps instead of
 * reporting "empty": NULL means the queue was empty at some instant, so
 * every push that completed before the caller's last acquire is seen.
 * The wait is a few instructions unless that producer is preempted.
 * @locality the single consumer. */
static inline rill__node_t *rill__mpsc_pop_settled(rill__mpsc_t *q)
{
    rill__node_t *node = rill__mpsc_pop(q);
    for (unsigned spins = 0; !node && rill__mpsc_maybe_nonempty(q); spins++) {
        if (spins >= 64)
            sched_yield();
        node = rill__mpsc_pop(q);
    }
    return node;
}

#endif /* RILL_MPSC_H */
