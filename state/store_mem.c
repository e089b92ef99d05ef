/*
 * The in-memory store backend: a committed map (the base) and, for the
 * one write transaction, an overlay of its pending writes.
 *
 * Both are chained hash tables on the whole encoded key. A put or delete
 * of the write transaction goes into the overlay (a value, or a tombstone
 * for a delete); its reads look in the overlay, then in the base. Commit
 * moves the overlay's entries into the base under the write lock, all or
 * nothing (the only allocation, the base's buckets, is made before any
 * entry moves); abort frees the overlay.
 *
 * Threads. Only commit changes the base, under the write side of
 * base_lock, and only the writer commits: so the write transaction reads
 * the base without the lock (its pointers into the base stay valid until
 * its own commit or abort). A read transaction, on any thread, takes the
 * read side for the length of each get or scan call: a get copies the
 * value into the transaction (valid until its next get or its end), a
 * scan calls its function with the lock held (the function must not call
 * into the store).
 *
 * Per record, a stage mostly reads a key, then writes it (a counter, an
 * aggregate): the write transaction remembers the last key it read (its
 * hash and its base entry), so the write that follows hashes nothing and
 * does not look in the base again; an overlay entry remembers the base
 * entry it shadows, so commit updates a value of the same size in place,
 * without walking the base's chain. The overlay's buckets are kept for
 * the next write transaction.
 *
 * Scans collect the keys in range from the base and the overlay and sort
 * them (memcmp, shorter first on a common prefix): O(n log n) in the
 * keys in range plus a pass over the table, which a memory store used
 * for tests and small state can afford.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "../actors/util.h"
#include "state_int.h"

typedef struct mem_entry {
    struct mem_entry *next;
    /* Overlay only: the base's entry with this key when it was written
     * (the base changes only at this transaction's commit), or NULL. */
    struct mem_entry *shadow;
    uint64_t hash;
    uint32_t kl, vl;
    int tombstone;  /* overlay only: the key is deleted */
    uint8_t data[]; /* the key, then the value */
} mem_entry_t;

typedef struct mem_table {
    mem_entry_t **buckets;
    size_t nbuckets; /* a power of two, or 0 */
    size_t n;
} mem_table_t;

typedef struct mem_store {
    rill_store_t *store;
    pthread_rwlock_t base_lock;
    mem_table_t base;
    /* Bytes of the base's keys and values: written under the write lock,
     * read by stats from any thread (relaxed: a figure, ordering nothing). */
    _Atomic uint64_t bytes;
    /* Set while the write transaction is open (one at a time). */
    _Atomic int writing;
    /* The last write transaction's overlay buckets (all NULL), for the
     * next one; only the writer (writing set) touches them. */
    mem_entry_t **spare;
    size_t n_spare;
} mem_store_t;

typedef struct mem_txn {
    mem_store_t *m;
    int write;
    mem_table_t overlay; /* the write transaction's pending writes */
    void *buf;           /* a read transaction's copy of its last value */
    size_t buf_cap;
    /* A write transaction's last read key: its hash and the base's entry
     * (valid for the whole transaction: only its commit changes the base). */
    int memo_set;
    uint64_t memo_hash;
    mem_entry_t *memo_base;
    size_t memo_kl;
    uint8_t memo_key[RILL__ENCODED_KEY_MAX];
} mem_txn_t;

/* Keys are hashed 8 bytes at a time (a multiply and a shift per word),
 * then mixed (splitmix64's finalizer) so the low bits that pick a bucket
 * depend on every byte. In memory only: any hash would do. */
static uint64_t key_hash(const void *k, size_t kl)
{
    const uint8_t *p = k;
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ kl;
    while (kl >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * 0xbf58476d1ce4e5b9ULL;
        h ^= h >> 31;
        p += 8;
        kl -= 8;
    }
    if (kl) {
        uint64_t w = 0;
        for (size_t i = 0; i < kl; i++)
            w |= (uint64_t)p[i] << (8 * i);
        h = (h ^ w) * 0xbf58476d1ce4e5b9ULL;
    }
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebULL;
    return h ^ (h >> 31);
}

/* Bytewise order: memcmp over the common length, then the shorter first
 * (LMDB's default order, so both backends scan alike). */
static int key_cmp(const void *a, size_t al, const void *b, size_t bl)
{
    int c = memcmp(a, b, al < bl ? al : bl);
    if (c)
        return c;
    return al < bl ? -1 : al > bl;
}

static mem_entry_t *entry_new(const void *k, size_t kl, uint64_t h, const void *v, size_t vl,
                              int tombstone)
{
    mem_entry_t *e = malloc(sizeof *e + kl + vl);
    if (!e)
        return NULL;
    e->next = NULL;
    e->shadow = NULL;
    e->hash = h;
    e->kl = (uint32_t)kl;
    e->vl = (uint32_t)vl;
    e->tombstone = tombstone;
    memcpy(e->data, k, kl);
    if (vl)
        memcpy(e->data + kl, v, vl);
    return e;
}

/* The link that points at key's entry (or the null link ending its chain). */
static mem_entry_t **table_slot(mem_table_t *t, const void *k, size_t kl, uint64_t h)
{
    mem_entry_t **link = &t->buckets[h & (t->nbuckets - 1)];
    for (; *link; link = &(*link)->next) {
        mem_entry_t *e = *link;
        if (e->hash == h && e->kl == kl && memcmp(e->data, k, kl) == 0)
            return link;
    }
    return link;
}

static mem_entry_t *table_find_h(mem_table_t *t, const void *k, size_t kl, uint64_t h)
{
    return t->n ? *table_slot(t, k, kl, h) : NULL;
}

static mem_entry_t *table_find(mem_table_t *t, const void *k, size_t kl)
{
    return t->n ? table_find_h(t, k, kl, key_hash(k, kl)) : NULL;
}

/* Room for n entries at a load of at most one per bucket. */
static int table_reserve(mem_table_t *t, size_t n)
{
    if (n <= t->nbuckets)
        return 0;
    size_t nb = t->nbuckets ? t->nbuckets : 64;
    while (nb < n)
        nb *= 2;
    mem_entry_t **b = calloc(nb, sizeof *b);
    if (!b)
        return -1;
    for (size_t i = 0; i < t->nbuckets; i++) {
        mem_entry_t *e = t->buckets[i];
        while (e) {
            mem_entry_t *next = e->next;
            e->next = b[e->hash & (nb - 1)];
            b[e->hash & (nb - 1)] = e;
            e = next;
        }
    }
    free(t->buckets);
    t->buckets = b;
    t->nbuckets = nb;
    return 0;
}

/* Put e in place of any entry with its key; returns the one replaced
 * (the caller frees it), or NULL. The table has room (table_reserve). */
static mem_entry_t *table_swap(mem_table_t *t, mem_entry_t *e)
{
    mem_entry_t **link = table_slot(t, e->data, e->kl, e->hash);
    mem_entry_t *old = *link;
    e->next = old ? old->next : NULL;
    *link = e;
    if (!old)
        t->n++;
    return old;
}

/* Free t's entries; its buckets stay, all NULL. */
static void table_clear(mem_table_t *t)
{
    for (size_t i = 0; i < t->nbuckets; i++) {
        mem_entry_t *e = t->buckets[i];
        while (e) {
            mem_entry_t *next = e->next;
            free(e);
            e = next;
        }
        t->buckets[i] = NULL;
    }
    t->n = 0;
}

static void table_free(mem_table_t *t)
{
    table_clear(t);
    free(t->buckets);
    *t = (mem_table_t){0};
}

/* ------------------------------------------------------------ transactions */

static rill_err_t mem_begin(rill_store_t *s, int write, void **txn, char *errstr,
                            size_t errstr_size)
{
    mem_store_t *m = s->impl;
    mem_txn_t *t = calloc(1, sizeof *t);
    if (!t)
        return rill__fail(RILL_ENOMEM, errstr, errstr_size, "store %s: out of memory", s->name);
    if (write) {
        /* Relaxed would do for the flag alone; acquire pairs with the
         * release at the previous writer's end, for the overlay-free
         * state a misused store could otherwise be seen in. */
        if (atomic_exchange_explicit(&m->writing, 1, memory_order_acquire)) {
            free(t);
            return rill__fail(RILL_ESTATE, errstr, errstr_size,
                              "store %s: a write transaction is already open", s->name);
        }
    }
    t->m = m;
    t->write = write;
    if (write && m->spare) {
        t->overlay.buckets = m->spare;
        t->overlay.nbuckets = m->n_spare;
        m->spare = NULL;
    }
    *txn = t;
    return RILL_OK;
}

/* Overlay buckets kept for the next write transaction, up to this many
 * (128 KiB): a huge transaction's are not kept for ever. */
#define SPARE_MAX 16384

static void txn_free(mem_txn_t *t)
{
    if (t->write) {
        mem_table_t *o = &t->overlay;
        if (o->nbuckets && o->nbuckets <= SPARE_MAX && !t->m->spare) {
            table_clear(o);
            t->m->spare = o->buckets;
            t->m->n_spare = o->nbuckets;
            *o = (mem_table_t){0};
        }
        table_free(o);
        atomic_store_explicit(&t->m->writing, 0, memory_order_release);
    }
    free(t->buf);
    free(t);
}

static rill_err_t mem_get(void *txn, const void *k, size_t kl, const void **v, size_t *vl)
{
    mem_txn_t *t = txn;
    mem_store_t *m = t->m;
    if (t->write) {
        uint64_t h = key_hash(k, kl); /* once for both tables */
        mem_entry_t *e = table_find_h(&t->overlay, k, kl, h);
        /* Remembered for a write of this key that follows (with the base's
         * entry when the overlay has none: only this writer's commit
         * changes the base). */
        t->memo_set = kl <= sizeof t->memo_key;
        t->memo_hash = h;
        t->memo_kl = kl;
        t->memo_base = NULL;
        if (t->memo_set)
            memcpy(t->memo_key, k, kl);
        if (!e)
            e = t->memo_base = table_find_h(&m->base, k, kl, h);
        if (!e || e->tombstone)
            return RILL_ENOENT;
        *v = e->data + e->kl;
        *vl = e->vl;
        return RILL_OK;
    }
    rill_err_t err = RILL_OK;
    pthread_rwlock_rdlock(&m->base_lock);
    mem_entry_t *e = table_find(&m->base, k, kl);
    if (!e) {
        err = RILL_ENOENT;
    } else {
        if (e->vl > t->buf_cap) {
            void *nb = realloc(t->buf, e->vl);
            if (nb) {
                t->buf = nb;
                t->buf_cap = e->vl;
            }
        }
        if (e->vl > t->buf_cap) {
            err = RILL_ENOMEM;
        } else {
            if (e->vl)
                memcpy(t->buf, e->data + e->kl, e->vl);
            *v = t->buf ? t->buf : (const void *)"";
            *vl = e->vl;
        }
    }
    pthread_rwlock_unlock(&m->base_lock);
    return err;
}

/* Key k of the write transaction: its hash, and whether the last read
 * was of it (then *base is the base's entry, when the overlay had none). */
static uint64_t write_hash(mem_txn_t *t, const void *k, size_t kl, int *memo, mem_entry_t **base)
{
    *memo = t->memo_set && t->memo_kl == kl && memcmp(t->memo_key, k, kl) == 0;
    *base = *memo ? t->memo_base : NULL;
    return *memo ? t->memo_hash : key_hash(k, kl);
}

/* Write key k (hash h) into the overlay: a value, or a tombstone (v NULL
 * and tomb set); the key's base entry is base when known (memo set). */
static rill_err_t overlay_write(mem_txn_t *t, const void *k, size_t kl, uint64_t h, int memo,
                                mem_entry_t *base, const void *v, size_t vl, int tomb)
{
    mem_table_t *o = &t->overlay;
    if (table_reserve(o, o->n + 1))
        return RILL_ENOMEM;
    mem_entry_t **link = table_slot(o, k, kl, h);
    mem_entry_t *had = *link;
    /* A key written again in this transaction with a value of the same
     * size (a counter, an aggregate) is updated where it is. */
    if (!tomb && had && had->vl == vl && !had->tombstone) {
        if (vl)
            memmove(had->data + kl, v, vl);
        return RILL_OK;
    }
    mem_entry_t *e = entry_new(k, kl, h, v, vl, tomb);
    if (!e)
        return RILL_ENOMEM;
    e->shadow = had ? had->shadow : memo ? base : table_find_h(&t->m->base, k, kl, h);
    e->next = had ? had->next : NULL;
    *link = e;
    if (had)
        free(had);
    else
        o->n++;
    return RILL_OK;
}

static rill_err_t mem_put(void *txn, const void *k, size_t kl, const void *v, size_t vl)
{
    mem_txn_t *t = txn;
    if (!t->write || kl == 0 || kl > RILL__ENCODED_KEY_MAX || vl > UINT32_MAX)
        return RILL_EINVAL;
    int memo;
    mem_entry_t *base;
    uint64_t h = write_hash(t, k, kl, &memo, &base);
    return overlay_write(t, k, kl, h, memo, base, v, vl, 0);
}

static rill_err_t mem_del(void *txn, const void *k, size_t kl)
{
    mem_txn_t *t = txn;
    if (!t->write || kl == 0 || kl > RILL__ENCODED_KEY_MAX)
        return RILL_EINVAL;
    int memo;
    mem_entry_t *base;
    uint64_t h = write_hash(t, k, kl, &memo, &base);
    mem_entry_t *e = table_find_h(&t->overlay, k, kl, h);
    if (!e && !memo)
        base = table_find_h(&t->m->base, k, kl, h);
    if (e ? e->tombstone : !base)
        return RILL_ENOENT;
    return overlay_write(t, k, kl, h, 1, base, NULL, 0, 1);
}

/* The entries of a scan, gathered before they are sorted. */
typedef struct mem_hits {
    const mem_entry_t **v;
    size_t n, cap;
} mem_hits_t;

static int in_range(const mem_entry_t *e, const void *from, size_t fl, const void *to, size_t tl)
{
    if (from && key_cmp(e->data, e->kl, from, fl) < 0)
        return 0;
    return !to || key_cmp(e->data, e->kl, to, tl) < 0;
}

static int hits_add(mem_hits_t *h, const mem_entry_t *e)
{
    const mem_entry_t **nv = rill__grow(h->v, &h->cap, h->n, sizeof *h->v, 64);
    if (!nv)
        return -1;
    h->v = nv;
    h->v[h->n++] = e;
    return 0;
}

static int hit_cmp(const void *a, const void *b)
{
    const mem_entry_t *x = *(const mem_entry_t *const *)a;
    const mem_entry_t *y = *(const mem_entry_t *const *)b;
    return key_cmp(x->data, x->kl, y->data, y->kl);
}

/* The entries of base (unless shadowed by overlay) and of overlay (unless
 * tombstones) in [from, to). */
static int collect(mem_hits_t *h, mem_table_t *base, mem_table_t *overlay, const void *from,
                   size_t fl, const void *to, size_t tl)
{
    for (size_t i = 0; i < base->nbuckets; i++)
        for (const mem_entry_t *e = base->buckets[i]; e; e = e->next)
            if (in_range(e, from, fl, to, tl) &&
                !(overlay && table_find_h(overlay, e->data, e->kl, e->hash)) && hits_add(h, e))
                return -1;
    if (overlay)
        for (size_t i = 0; i < overlay->nbuckets; i++)
            for (const mem_entry_t *e = overlay->buckets[i]; e; e = e->next)
                if (!e->tombstone && in_range(e, from, fl, to, tl) && hits_add(h, e))
                    return -1;
    return 0;
}

static rill_err_t mem_scan(void *txn, const void *from, size_t fl, const void *to, size_t tl,
                           rill__scan_fn *fn, void *opaque)
{
    mem_txn_t *t = txn;
    mem_store_t *m = t->m;
    mem_hits_t h = {0};
    rill_err_t err = RILL_OK;
    if (!t->write)
        pthread_rwlock_rdlock(&m->base_lock);
    if (collect(&h, &m->base, t->write ? &t->overlay : NULL, from, fl, to, tl)) {
        err = RILL_ENOMEM;
    } else {
        if (h.n > 1)
            qsort(h.v, h.n, sizeof *h.v, hit_cmp);
        for (size_t i = 0; i < h.n; i++) {
            const mem_entry_t *e = h.v[i];
            if (fn(opaque, e->data, e->kl, e->data + e->kl, e->vl))
                break;
        }
    }
    if (!t->write)
        pthread_rwlock_unlock(&m->base_lock);
    free(h.v);
    return err;
}

static rill_err_t mem_commit(void *txn, char *errstr, size_t errstr_size)
{
    mem_txn_t *t = txn;
    mem_store_t *m = t->m;
    if (!t->write) {
        txn_free(t);
        return RILL_OK;
    }
    pthread_rwlock_wrlock(&m->base_lock);
    if (table_reserve(&m->base, m->base.n + t->overlay.n)) {
        pthread_rwlock_unlock(&m->base_lock);
        txn_free(t);
        return rill__fail(RILL_ENOMEM, errstr, errstr_size,
                          "store %s: out of memory at commit; the transaction is lost",
                          m->store->name);
    }
    uint64_t bytes = atomic_load_explicit(&m->bytes, memory_order_relaxed);
    mem_table_t *o = &t->overlay;
    for (size_t i = 0; i < o->nbuckets; i++) {
        mem_entry_t *e = o->buckets[i];
        while (e) {
            mem_entry_t *next = e->next;
            mem_entry_t *old, *sh = e->shadow;
            if (!e->tombstone && sh && sh->vl == e->vl) {
                /* The base's entry takes the new value where it is (the
                 * write lock is held): no chain to walk, nothing freed
                 * that has gone cold. */
                if (e->vl)
                    memcpy(sh->data + sh->kl, e->data + e->kl, e->vl);
                free(e);
                e = next;
                continue;
            }
            if (e->tombstone) {
                mem_entry_t **link = table_slot(&m->base, e->data, e->kl, e->hash);
                old = *link;
                if (old) {
                    *link = old->next;
                    m->base.n--;
                }
                free(e);
            } else {
                old = table_swap(&m->base, e);
                bytes += e->kl + e->vl;
            }
            if (old) {
                bytes -= old->kl + old->vl;
                free(old);
            }
            e = next;
        }
        o->buckets[i] = NULL;
    }
    o->n = 0;
    /* Relaxed: a figure for the stats; the lock orders the base itself. */
    atomic_store_explicit(&m->bytes, bytes, memory_order_relaxed);
    pthread_rwlock_unlock(&m->base_lock);
    txn_free(t);
    return RILL_OK;
}

static void mem_abort(void *txn)
{
    txn_free(txn);
}

static uint64_t mem_bytes(rill_store_t *s)
{
    mem_store_t *m = s->impl;
    return atomic_load_explicit(&m->bytes, memory_order_relaxed);
}

static void mem_close(rill_store_t *s)
{
    mem_store_t *m = s->impl;
    table_free(&m->base);
    free(m->spare);
    pthread_rwlock_destroy(&m->base_lock);
    free(m);
    s->impl = NULL;
}

static const rill__store_ops_t mem_ops = {
    .name = "memory",
    .begin = mem_begin,
    .get = mem_get,
    .put = mem_put,
    .del = mem_del,
    .scan = mem_scan,
    .commit = mem_commit,
    .abort = mem_abort,
    .bytes = mem_bytes,
    .close = mem_close,
};

rill_err_t rill__store_mem_init(rill_store_t *s, char *errstr, size_t errstr_size)
{
    mem_store_t *m = calloc(1, sizeof *m);
    if (!m)
        return rill__fail(RILL_ENOMEM, errstr, errstr_size, "memory store %s: out of memory",
                          s->name);
    /* Writers first: a commit is not held off by a stream of readers. */
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    int rc = pthread_rwlock_init(&m->base_lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    if (rc) {
        free(m);
        return rill__fail(rc == ENOMEM ? RILL_ENOMEM : RILL_EIO, errstr, errstr_size,
                          "memory store %s: cannot make its lock: %s", s->name, strerror(rc));
    }
    m->store = s;
    s->ops = &mem_ops;
    s->impl = m;
    return RILL_OK;
}
