/*
 * Small blocks recycled per executor: what a pipeline makes per record on
 * one executor and frees on another, or on the same one (leaf origins,
 * produce requests). malloc served such blocks from one thread's cache and
 * freed them into another's arena under its lock; malloc and free were
 * ~7% of the consume path's samples for origins alone.
 *
 * Each executor owns one pool per size class. A block carries a 16-byte
 * header naming its class (NULL: malloc'ed alone, as blocks made off an
 * executor or bigger than the largest class are). A block freed on its
 * home executor goes back on the class's own list, no atomics; one freed
 * anywhere else is pushed on the class's shared stack (a compare-and-swap;
 * push-only, so ABA cannot hurt), which the home takes whole when its own
 * list runs dry.
 *
 * What a pool keeps is bounded by what was out at once (the pipelines'
 * windows bound that), and its own list by OWN_MAX_BYTES per class: past
 * that, frees on the home go to free().
 *
 * A block may outlive its executor (a produce request an application
 * keeps past rill_system_destroy): the pool's destroy marks each class
 * dead (later frees go to free()) and, if blocks are still out, leaves the
 * class to the last of them, which frees it.
 */
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

#include "actor_int.h"

typedef struct block block_t;

typedef struct block_class {
    /* Freed elsewhere; CLASS_DEAD once the pool is destroyed. Release on
     * push, acquire on the take. */
    _Atomic(block_t *) shared;
    block_t *own; /* the home executor's, no atomics */
    size_t n_own;
    size_t max_own;
    size_t size; /* the block's, header included */
    /* The home's counts, read by the destroy once the home is joined:
     * blocks malloc'ed, and blocks given back to free() by the home. */
    uint64_t made, freed;
    /* After the destroy: the blocks still out, less the late frees (the
     * one that brings it to 0 frees the class). */
    _Atomic int64_t late;
} block_class_t;

struct block {
    block_class_t *home; /* NULL: malloc'ed alone */
    block_t *next;       /* while free (the payload's first bytes otherwise) */
};

_Static_assert(sizeof(block_t) == 16, "payloads must stay 16-byte aligned");

#define N_CLASSES     5 /* 64, 128, 256, 512, 1024 bytes, header included */
#define SMALLEST      64u
#define OWN_MAX_BYTES ((size_t)1 << 20)
#define CLASS_DEAD    ((block_t *)(uintptr_t)1) /* never a block's address */

struct rill__blocks {
    block_class_t *c[N_CLASSES];
};

rill__blocks_t *rill__blocks_new(void)
{
    rill__blocks_t *b = calloc(1, sizeof(*b));
    if (!b)
        return NULL;
    for (int i = 0; i < N_CLASSES; i++) {
        block_class_t *c = calloc(1, sizeof(*c));
        if (!c) {
            rill__blocks_free(b);
            return NULL;
        }
        atomic_init(&c->shared, NULL);
        atomic_init(&c->late, 0);
        c->size = (size_t)SMALLEST << i;
        c->max_own = OWN_MAX_BYTES / c->size;
        b->c[i] = c;
    }
    return b;
}

static uint64_t free_list(block_t *k)
{
    uint64_t n = 0;
    while (k) {
        block_t *next = k->next;
        free(k);
        k = next;
        n++;
    }
    return n;
}

void rill__blocks_free(rill__blocks_t *b)
{
    if (!b)
        return;
    for (int i = 0; i < N_CLASSES; i++) {
        block_class_t *c = b->c[i];
        if (!c)
            continue;
        /* acquire: the pushers' writes to what they pushed come before.
         * A later push sees CLASS_DEAD and frees instead. */
        uint64_t back =
            free_list(c->own) +
            free_list(atomic_exchange_explicit(&c->shared, CLASS_DEAD, memory_order_acquire));
        int64_t out = (int64_t)(c->made - c->freed - back);
        /* acq_rel: pairs with the late frees' decrements. */
        if (atomic_fetch_add_explicit(&c->late, out, memory_order_acq_rel) + out == 0)
            free(c);
    }
    free(b);
}

void *rill__block_alloc(size_t size)
{
    rill__executor_t *e = rill__tls_exec;
    block_class_t *c = NULL;
    if (e && e->blocks && size <= ((size_t)SMALLEST << (N_CLASSES - 1)) - sizeof(block_t)) {
        int i = 0;
        while (((size_t)SMALLEST << i) - sizeof(block_t) < size)
            i++;
        c = e->blocks->c[i];
    }
    block_t *k = NULL;
    if (c) {
        if (!c->own && atomic_load_explicit(&c->shared, memory_order_relaxed)) {
            /* acquire: pairs with the pushers' release. */
            c->own = atomic_exchange_explicit(&c->shared, NULL, memory_order_acquire);
            c->n_own = 0; /* not counted: the cap is approximate */
        }
        if ((k = c->own)) {
            c->own = k->next;
            if (c->n_own)
                c->n_own--;
        } else if ((k = malloc(c->size))) {
            c->made++;
        }
    } else if (size <= SIZE_MAX - sizeof(block_t)) {
        k = malloc(sizeof(block_t) + size);
    }
    if (!k)
        return NULL;
    k->home = c;
    return k + 1;
}

void rill__block_free(void *p)
{
    if (!p)
        return;
    block_t *k = (block_t *)p - 1;
    block_class_t *c = k->home;
    if (!c) {
        free(k);
        return;
    }
    /* Home: the calling executor's class of that size is c (a live class
     * is never another's: a dead one lives until its last block is
     * back). */
    rill__executor_t *e = rill__tls_exec;
    int i = 0;
    while (((size_t)SMALLEST << i) < c->size)
        i++;
    if (e && e->blocks && e->blocks->c[i] == c) {
        if (c->n_own >= c->max_own) {
            c->freed++;
            free(k);
        } else {
            k->next = c->own;
            c->own = k;
            c->n_own++;
        }
        return;
    }
    block_t *head = atomic_load_explicit(&c->shared, memory_order_relaxed);
    do {
        if (head == CLASS_DEAD) {
            free(k);
            /* acq_rel: the last one frees the class. */
            if (atomic_fetch_sub_explicit(&c->late, 1, memory_order_acq_rel) == 1)
                free(c);
            return;
        }
        k->next = head;
        /* release: our reads and writes of k come before its reuse. */
    } while (!atomic_compare_exchange_weak_explicit(&c->shared, &head, k, memory_order_release,
                                                    memory_order_relaxed));
}
