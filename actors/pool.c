/*
 * rill_pool: fixed-size payload blocks recycled through a lock-free stack
 * (Concurrency Kit's ck_stack, whose multi-consumer pop carries a
 * generation counter against ABA). Each block has a 16-byte header naming
 * its pool, so rill_pool_free() works as a message destructor.
 *
 * The pool is reference counted: one reference for its owner and one per
 * block out, so rill_pool_destroy() may be called while blocks are still in
 * flight; whoever drops the last reference frees the pool.
 */
#include <stdatomic.h>
#include <stdlib.h>

#include <ck_stack.h>

#include <rill/actor.h>

typedef struct block_hdr {
    ck_stack_entry_t entry;
    rill_pool_t *pool;
} block_hdr_t;

_Static_assert(sizeof(block_hdr_t) == 16, "payloads must stay 16-byte aligned");

struct rill_pool {
    ck_stack_t free_blocks;
    size_t block_size;
    size_t max_free;
    _Atomic size_t nfree;
    _Atomic size_t refs;
    _Atomic int destroyed;
};

rill_pool_t *rill_pool_new(size_t block_size, size_t max_free)
{
    if (block_size == 0)
        return NULL;
    rill_pool_t *p = aligned_alloc(16, sizeof(*p));
    if (!p)
        return NULL;
    ck_stack_init(&p->free_blocks);
    p->block_size = (block_size + 15) & ~(size_t)15;
    p->max_free = max_free ? max_free : 4096;
    atomic_init(&p->nfree, 0);
    atomic_init(&p->refs, 1);
    atomic_init(&p->destroyed, 0);
    return p;
}

static void drain(rill_pool_t *p)
{
    ck_stack_entry_t *e;
    while ((e = ck_stack_pop_mpmc(&p->free_blocks)))
        free(e);
}

static void unref(rill_pool_t *p)
{
    /* acq_rel: every user's last access happens before the final free. */
    if (atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) == 1) {
        drain(p);
        free(p);
    }
}

void *rill_pool_alloc(rill_pool_t *pool)
{
    if (!pool)
        return NULL;
    block_hdr_t *h = (block_hdr_t *)ck_stack_pop_mpmc(&pool->free_blocks);
    if (h)
        atomic_fetch_sub_explicit(&pool->nfree, 1, memory_order_relaxed);
    else if (!(h = aligned_alloc(16, sizeof(*h) + pool->block_size)))
        return NULL;
    h->pool = pool;
    atomic_fetch_add_explicit(&pool->refs, 1, memory_order_relaxed);
    return h + 1;
}

void rill_pool_free(void *block)
{
    if (!block)
        return;
    block_hdr_t *h = (block_hdr_t *)block - 1;
    rill_pool_t *p = h->pool;
    if (!atomic_load_explicit(&p->destroyed, memory_order_acquire) &&
        atomic_load_explicit(&p->nfree, memory_order_relaxed) < p->max_free) {
        atomic_fetch_add_explicit(&p->nfree, 1, memory_order_relaxed);
        ck_stack_push_mpmc(&p->free_blocks, &h->entry);
    } else {
        free(h);
    }
    unref(p);
}

void rill_pool_destroy(rill_pool_t *pool)
{
    if (!pool)
        return;
    atomic_store_explicit(&pool->destroyed, 1, memory_order_release);
    drain(pool);
    unref(pool);
}
