/*
 * The payload pool: blocks from several threads at once are 16-byte
 * aligned, distinct and fully usable; rill_pool_free works as a message
 * destructor (handled and dead-letter messages alike); a pool destroyed
 * with blocks still out leaves them valid until they are freed.
 *
 * The executors' small blocks (actors/blocks.c, behind origins and
 * produce requests): freed on their home executor, on another or off any
 * executor, they come back to their home; they stay valid past the
 * system's destroy and are freed then (ASan and LSan check).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "support/rtest.h"

#include "support/actor_kit.h"

#include "actors/seam.h"

enum { MSG_BLOCK = KIT_MSG_APP };

#define THREADS    4
#define PER_THREAD 2000
#define BLOCK      40 /* not a multiple of 16: alignment is the pool's job */

struct worker {
    pthread_t thread;
    rill_pool_t *pool;
    unsigned id;
    void *blocks[PER_THREAD];
    int misaligned;
    int null_blocks;
    int corrupted;
};

static void fill(void *block, unsigned id, int i)
{
    memset(block, (int)((id * 31 + (unsigned)i) & 0xff), BLOCK);
}

static int intact(const void *block, unsigned id, int i)
{
    const unsigned char *p = block;
    for (int k = 0; k < BLOCK; k++)
        if (p[k] != ((id * 31 + (unsigned)i) & 0xff))
            return 0;
    return 1;
}

static void *alloc_all(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < PER_THREAD; i++) {
        void *b = rill_pool_alloc(w->pool);
        w->blocks[i] = b;
        if (!b) {
            w->null_blocks++;
            continue;
        }
        if ((uintptr_t)b % 16 != 0)
            w->misaligned++;
        fill(b, w->id, i);
    }
    return NULL;
}

/* Frees another worker's blocks, after checking nobody wrote over them. */
static void *free_all(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < PER_THREAD; i++) {
        if (w->blocks[i] && !intact(w->blocks[i], w->id, i))
            w->corrupted++;
        rill_pool_free(w->blocks[i]);
        w->blocks[i] = NULL;
    }
    return NULL;
}

static int cmp_ptr(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t) * (void *const *)a, y = (uintptr_t) * (void *const *)b;
    return x < y ? -1 : x > y;
}

/* All blocks out at once: sorted, each starts after the previous ends. */
static void check_distinct(struct worker *w)
{
    static void *all[THREADS * PER_THREAD];
    size_t n = 0;
    for (int t = 0; t < THREADS; t++)
        for (int i = 0; i < PER_THREAD; i++)
            all[n++] = w[t].blocks[i];
    qsort(all, n, sizeof(all[0]), cmp_ptr);
    for (size_t i = 1; i < n; i++)
        cr_assert_geq((uintptr_t)all[i], (uintptr_t)all[i - 1] + BLOCK, "blocks %p and %p overlap",
                      all[i - 1], all[i]);
}

static void run_phase(struct worker *w, void *(*fn)(void *), int shift)
{
    pthread_t th[THREADS];
    for (int t = 0; t < THREADS; t++)
        cr_assert_eq(pthread_create(&th[t], NULL, fn, &w[(t + shift) % THREADS]), 0);
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
}

Test(actor_pool, blocks_from_many_threads_are_aligned_and_distinct, .timeout = 120)
{
    rill_pool_t *pool = rill_pool_new(BLOCK, 1024); /* keeps fewer than are out */
    cr_assert_not_null(pool);
    static struct worker w[THREADS];
    memset(w, 0, sizeof(w));
    for (unsigned t = 0; t < THREADS; t++) {
        w[t].pool = pool;
        w[t].id = t;
    }
    for (int round = 0; round < 3; round++) {
        run_phase(w, alloc_all, 0);
        for (int t = 0; t < THREADS; t++) {
            cr_assert_eq(w[t].null_blocks, 0, "round %d: out of memory?", round);
            cr_assert_eq(w[t].misaligned, 0, "round %d: blocks not 16-byte aligned", round);
        }
        check_distinct(w);
        /* Thread t frees worker t+1's blocks: frees cross threads. */
        run_phase(w, free_all, 1);
        for (int t = 0; t < THREADS; t++)
            cr_assert_eq(w[t].corrupted, 0, "round %d: a block was shared", round);
    }
    rill_pool_destroy(pool);
}

Test(actor_pool, default_max_free_and_small_caches, .timeout = 60)
{
    /* max_free 2: most frees go back to malloc; LSan checks they do. */
    rill_pool_t *pool = rill_pool_new(1, 2);
    cr_assert_not_null(pool);
    void *b[64];
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 64; i++) {
            b[i] = rill_pool_alloc(pool);
            cr_assert_not_null(b[i]);
            cr_assert_eq((uintptr_t)b[i] % 16, 0);
            *(unsigned char *)b[i] = (unsigned char)i;
        }
        for (int i = 0; i < 64; i++) {
            cr_assert_eq(*(unsigned char *)b[i], (unsigned char)i);
            rill_pool_free(b[i]);
        }
    }
    rill_pool_destroy(pool);

    pool = rill_pool_new(4096, 0); /* 0 = the default cache size */
    cr_assert_not_null(pool);
    void *big = rill_pool_alloc(pool);
    cr_assert_not_null(big);
    memset(big, 0x5a, 4096);
    rill_pool_free(big);
    rill_pool_destroy(pool);
}

Test(actor_pool, pool_free_is_a_message_destructor, .timeout = 60)
{
    rill_system_t *sys = kit_system(1, 0, 0, 1);
    cr_assert_not_null(sys);
    rill_pool_t *pool = rill_pool_new(64, 0);
    cr_assert_not_null(pool);
    kit_log_t *log = kit_log_new();
    rill_aid_t sink = kit_spawn_recorder(sys, log, 0);
    cr_assert(!rill_aid_is_none(sink));

    const int n = KIT_SCALE(2000);
    for (int i = 0; i < n; i++) {
        rill_msg_t m;
        memset(&m, 0, sizeof(m));
        m.type = MSG_BLOCK;
        m.arg = (uint64_t)i;
        m.payload = rill_pool_alloc(pool);
        cr_assert_not_null(m.payload);
        m.dtor = rill_pool_free;
        memset(m.payload, i & 0xff, 64);
        rill_err_t e = kit_tell_retry(sys, sink, &m, KIT_WAIT_MS);
        cr_assert_eq(e, RILL_OK, "message %d: %s", i, rill_err_name(e));
    }
    cr_assert(kit_log_wait(log, (size_t)n, KIT_WAIT_MS), "handled %zu of %d", kit_log_size(log), n);

    /* Some left queued when the system stops: dead letters, freed by the
     * same destructor after the pool itself was destroyed. */
    rill_system_t *stopped = kit_system(1, 0, 0, 0);
    cr_assert_not_null(stopped);
    rill_aid_t never = kit_spawn_recorder(stopped, log, 0);
    for (int i = 0; i < 10; i++) {
        rill_msg_t m;
        memset(&m, 0, sizeof(m));
        m.type = MSG_BLOCK;
        m.payload = rill_pool_alloc(pool);
        m.dtor = rill_pool_free;
        cr_assert_eq(rill_tell(stopped, never, &m), RILL_OK);
    }
    rill_pool_destroy(pool);
    rill_system_destroy(stopped); /* frees 10 blocks of a destroyed pool */
    rill_system_destroy(sys);
    kit_log_free(log);
}

Test(actor_pool, destroy_with_blocks_out_keeps_them_valid, .timeout = 60)
{
    rill_pool_t *pool = rill_pool_new(32, 8);
    cr_assert_not_null(pool);
    void *out[20];
    for (int i = 0; i < 20; i++) {
        out[i] = rill_pool_alloc(pool);
        cr_assert_not_null(out[i]);
    }
    /* Some back in the cache, the rest still out. */
    for (int i = 0; i < 5; i++)
        rill_pool_free(out[i]);
    rill_pool_destroy(pool);
    for (int i = 5; i < 20; i++)
        memset(out[i], 0xee, 32); /* still valid: ASan would report a use after free */
    for (int i = 5; i < 20; i++)
        rill_pool_free(out[i]); /* the last one releases the pool (LSan checks) */
}

/* ------------------------------------------------------------------ */
/* The executors' small blocks                                         */
/* ------------------------------------------------------------------ */

#define NB 64

typedef struct blocks_job {
    size_t size;
    void *v[NB];
    int bad; /* misaligned, or made NULL */
} blocks_job_t;

static void blocks_make(rill_ctx_t *ctx, void *arg)
{
    (void)ctx;
    blocks_job_t *j = arg;
    for (int i = 0; i < NB; i++) {
        j->v[i] = rill__block_alloc(j->size);
        if (!j->v[i] || ((uintptr_t)j->v[i] & 15))
            j->bad++;
        else
            memset(j->v[i], i, j->size);
    }
}

static void blocks_free_all(rill_ctx_t *ctx, void *arg)
{
    (void)ctx;
    blocks_job_t *j = arg;
    for (int i = 0; i < NB; i++) {
        rill__block_free(j->v[i]);
        j->v[i] = NULL;
    }
}

/* Blocks made on executor 0 of `size`, freed where `free_on` says (an
 * executor's index, or -1: the test thread); then made again on 0:
 * returns how many of the second round are blocks of the first. */
static int blocks_round_trip(rill_system_t *sys, rill_aid_t on[2], size_t size, int free_on)
{
    blocks_job_t a = {.size = size}, b = {.size = size};
    cr_assert_eq(kit_run_in(sys, on[0], blocks_make, &a), RILL_OK);
    cr_assert_eq(a.bad, 0, "%d of %d blocks of %zu bytes were NULL or misaligned", a.bad, NB, size);
    for (int i = 0; i < NB; i++)
        for (size_t k = 0; k < size; k++)
            cr_assert_eq(((unsigned char *)a.v[i])[k], (unsigned char)i,
                         "block %d of %zu bytes was overwritten at %zu", i, size, k);
    void *first[NB];
    memcpy(first, a.v, sizeof(first));
    if (free_on < 0)
        blocks_free_all(NULL, &a);
    else
        cr_assert_eq(kit_run_in(sys, on[free_on], blocks_free_all, &a), RILL_OK);
    cr_assert_eq(kit_run_in(sys, on[0], blocks_make, &b), RILL_OK);
    cr_assert_eq(b.bad, 0);
    int again = 0;
    for (int i = 0; i < NB; i++)
        for (int k = 0; k < NB; k++)
            again += b.v[i] == first[k];
    cr_assert_eq(kit_run_in(sys, on[0], blocks_free_all, &b), RILL_OK);
    return again;
}

Test(actor_blocks, freed_anywhere_they_come_back_to_their_executor, .timeout = 60)
{
    rill_system_t *sys = kit_system(2, 0, 0, 1);
    cr_assert_not_null(sys);
    kit_log_t *log = kit_log_new();
    rill_aid_t on[2] = {kit_spawn_recorder(sys, log, 0), kit_spawn_recorder(sys, log, 1)};
    size_t sizes[] = {1, 48, 200, 1000};
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++)
        for (int where = -1; where <= 1; where++) {
            int again = blocks_round_trip(sys, on, sizes[s], where);
            cr_assert_eq(again, NB,
                         "%zu-byte blocks freed on %d: %d of %d made again were the same blocks",
                         sizes[s], where, again, NB);
        }
    /* Bigger than the largest class: malloc'ed alone, usable all the
     * same. */
    cr_assert_geq(blocks_round_trip(sys, on, 5000, 1), 0);
    rill_system_destroy(sys);
    kit_log_free(log);
}

Test(actor_blocks, blocks_outlive_their_system, .timeout = 60)
{
    rill_system_t *sys = kit_system(2, 0, 0, 1);
    cr_assert_not_null(sys);
    kit_log_t *log = kit_log_new();
    rill_aid_t on0 = kit_spawn_recorder(sys, log, 0);
    blocks_job_t a = {.size = 100}, b = {.size = 700};
    cr_assert_eq(kit_run_in(sys, on0, blocks_make, &a), RILL_OK);
    cr_assert_eq(kit_run_in(sys, on0, blocks_make, &b), RILL_OK);
    cr_assert_eq(a.bad + b.bad, 0);
    /* Some back in the pool (freed off the executor: its shared stack),
     * the rest still out when the system goes. */
    for (int i = 0; i < NB / 2; i++) {
        rill__block_free(a.v[i]);
        a.v[i] = NULL;
    }
    rill_system_destroy(sys);
    kit_log_free(log);
    for (int i = 0; i < NB; i++) {
        if (a.v[i])
            memset(a.v[i], 0xee, a.size); /* still valid: ASan would report a use after free */
        memset(b.v[i], 0xee, b.size);
    }
    blocks_free_all(NULL, &a); /* the last of each class frees it (LSan checks) */
    blocks_free_all(NULL, &b);
    rill__block_free(NULL);
    /* Off any executor: malloc'ed alone. */
    void *p = rill__block_alloc(10);
    cr_assert_not_null(p);
    rill__block_free(p);
}
