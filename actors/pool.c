/*
 * rill_pool: fixed-size payload blocks recycled through a free list. Each
 * block has a 16-byte header naming its pool, so rill_pool_free() works as
 * a message destructor.
 *
 * The free list is a plain list under a mutex. A lock-free stack (ck_stack)
 * was the first version, but its multi-consumer pop reads the `next` field
 * of a node another thread may be popping at the same time: harmless on
 * x86 with memory that is never unmapped, yet a data race in C11 terms,
 * and ThreadSanitizer (rightly) reports it. An uncontended mutex costs
 * about as much as the CAS loop did.
 *
 * The pool is reference counted: one reference for its owner and one per
 * block out, so rill_pool_destroy() may be called while blocks are still in
 * flight; whoever drops the last reference frees the pool.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include <rill/actor.h>

typedef struct block_hdr {
    struct block_hdr *next; /* while on the free list */
    rill_pool_t *pool;
} block_hdr_t;

_Static_assert(sizeof(block_hdr_t) == 16, "payloads must stay 16-byte aligned");

struct rill_pool {
    pthread_mutex_t lock;
    block_hdr_t *free_list; /* under lock */
    size_t nfree;           /* under lock */
    int destroyed;          /* under lock */
    size_t block_size;
    size_t max_free;
    _Atomic size_t refs;
};

static size_t round16(size_t n)
{
    return (n + 15) & ~(size_t)15;
}

rill_pool_t *rill_pool_new(size_t block_size, size_t max_free)
{
    if (block_size == 0 || block_size > ((size_t)1 << 40))
        return NULL;
    rill_pool_t *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    pthread_mutex_init(&p->lock, NULL);
    p->block_size = round16(block_size);
    p->max_free = max_free ? max_free : 4096;
    atomic_init(&p->refs, 1);
    return p;
}

static void drain_locked(rill_pool_t *p)
{
    while (p->free_list) {
        block_hdr_t *h = p->free_list;
        p->free_list = h->next;
        free(h);
    }
    p->nfree = 0;
}

static void unref(rill_pool_t *p)
{
    /* acq_rel: every user's last access happens before the final free. */
    if (atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) == 1) {
        drain_locked(p); /* the last reference: nobody else can lock */
        pthread_mutex_destroy(&p->lock);
        free(p);
    }
}

void *rill_pool_alloc(rill_pool_t *pool)
{
    if (!pool)
        return NULL;
    pthread_mutex_lock(&pool->lock);
    block_hdr_t *h = pool->free_list;
    if (h) {
        pool->free_list = h->next;
        pool->nfree--;
    }
    pthread_mutex_unlock(&pool->lock);
    if (!h && !(h = aligned_alloc(16, sizeof(*h) + pool->block_size)))
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
    pthread_mutex_lock(&p->lock);
    if (!p->destroyed && p->nfree < p->max_free) {
        h->next = p->free_list;
        p->free_list = h;
        p->nfree++;
        h = NULL;
    }
    pthread_mutex_unlock(&p->lock);
    free(h);
    unref(p);
}

void rill_pool_destroy(rill_pool_t *pool)
{
    if (!pool)
        return;
    pthread_mutex_lock(&pool->lock);
    pool->destroyed = 1;
    drain_locked(pool);
    pthread_mutex_unlock(&pool->lock);
    unref(pool);
}
