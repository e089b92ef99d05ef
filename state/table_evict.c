/*
 * Eviction of a co-partitioned table's partitions that no follower holds
 * any more (rill_table_opts_t.evict_ms): without it, the keys of every
 * partition that ever moved to this instance would stay in the store.
 *
 * The reader (table.c) calls rill__table_evict_due between batches, so no
 * write transaction of its own is open. A partition's clock starts when
 * the reader drops it (table_follow.c), or, for one an earlier run left
 * in the store (a reopened LMDB table) and no follower holds, at the first
 * pass after a follower reported an assignment. Once it has run for
 * evict_after_ms, one write transaction deletes the partition's keys and
 * its stored offset: a partition that comes back afterwards is read from
 * its beginning, as one never read. A partition a follower holds again
 * before that (want > 0 at the last sync) is not touched; one wanted after
 * the sync's snapshot is evicted and then read from its beginning by the
 * next sync, which is exact too.
 *
 * The keys are collected by a scan (into a changelog batch of deletes),
 * then deleted: neither backend allows a write inside its scan's
 * callback.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../actors/util.h"
#include "changelog.h"
#include "table_int.h"

/* The keys of a scan, copied (a changelog batch of deletes). */
typedef struct collected {
    rill__cl_batch_t keys;
    int oom;
} collected_t;

static int collect_key(void *opaque, const void *key, size_t key_len, const void *value,
                       size_t value_len)
{
    (void)value;
    (void)value_len;
    collected_t *c = opaque;
    c->oom = rill__cl_batch_add(&c->keys, key, key_len, NULL, 0, 1) != 0;
    return c->oom; /* stops the scan */
}

/* Delete the collected keys and p's offset in txn; *found: something was
 * there. */
static rill_err_t delete_all(rill_table_t *t, void *txn, int32_t p, const rill__cl_batch_t *keys,
                             int *found)
{
    rill_store_t *s = t->store;
    *found = keys->n > 0;
    for (size_t i = 0; i < keys->n; i++) {
        rill_err_t err = s->ops->del(txn, keys->v[i].key, keys->v[i].kl);
        if (err && err != RILL_ENOENT)
            return err;
    }
    uint8_t k[RILL__ENCODED_KEY_MAX];
    size_t kl = rill__state_prefix(k, RILL__NS_OFFSET, t->topic, p);
    rill_err_t err = s->ops->del(txn, k, kl);
    if (err == RILL_OK)
        *found = 1;
    return err == RILL_ENOENT ? RILL_OK : err;
}

/* Evict partition p: its keys and offset, in one write transaction. 0, or
 * -1 after failing the table. */
static int evict(rill_table_t *t, int32_t p)
{
    rill_store_t *s = t->store;
    char why[160] = "";
    void *txn;
    rill_err_t err = s->ops->begin(s, 1, &txn, why, sizeof why);
    if (err) {
        rill__table_fail(t, err, why);
        return -1;
    }
    /* The state of (topic, p) is [prefix(p), prefix(p + 1)): the 4
     * partition bytes end both prefixes. */
    uint8_t from[RILL__ENCODED_KEY_MAX], to[RILL__ENCODED_KEY_MAX];
    size_t fl = rill__state_prefix(from, RILL__NS_STATE, t->topic, p);
    size_t tl = rill__state_prefix(to, RILL__NS_STATE, t->topic, p + 1);
    collected_t c = {0};
    int found = 0;
    err = s->ops->scan(txn, from, fl, to, tl, collect_key, &c);
    if (!err && c.oom)
        err = RILL_ENOMEM;
    if (!err)
        err = delete_all(t, txn, p, &c.keys, &found);
    uint64_t n = c.keys.n;
    rill__cl_batch_free(&c.keys);
    if (err || !found) {
        s->ops->abort(txn);
        if (err) {
            atomic_fetch_add_explicit(&s->aborts, 1, memory_order_relaxed);
            snprintf(why, sizeof why, "cannot evict partition %d: %s", (int)p,
                     err == RILL_EFULL ? "the store is full (its map_size)" : rill_err2str(err));
            rill__table_fail(t, err, why);
            return -1;
        }
    } else if ((err = s->ops->commit(txn, why, sizeof why)) != RILL_OK) {
        atomic_fetch_add_explicit(&s->commit_errors, 1, memory_order_relaxed);
        rill__table_fail(t, err, why);
        return -1;
    } else {
        /* Relaxed: counts, ordering nothing. */
        atomic_fetch_add_explicit(&s->commits, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&t->commits, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&s->deletes, n, memory_order_relaxed);
        atomic_fetch_sub_explicit(&t->keys, n, memory_order_relaxed);
        atomic_fetch_add_explicit(&t->evicted_keys, n, memory_order_relaxed);
        atomic_fetch_add_explicit(&t->evicted, 1, memory_order_relaxed);
    }
    t->parts[p].kept = 0;
    t->parts[p].idle_since_ms = 0;
    return 0;
}

int rill__table_evict_due(rill_table_t *t)
{
    if (!t->partitioned || t->evict_after_ms < 0)
        return 0;
    int64_t now = rill__now_ms();
    /* Acquire: as joins read it (a plain flag here, ordering nothing). */
    int assigned = atomic_load_explicit(&t->assigned, memory_order_acquire);
    for (int32_t p = 0; p < t->n_parts; p++) {
        table_part_t *tp = &t->parts[p];
        if (tp->followed || tp->s_want || !tp->kept)
            continue;
        if (tp->idle_since_ms == 0) { /* left by an earlier run */
            if (assigned)
                tp->idle_since_ms = now;
            continue;
        }
        if (now - tp->idle_since_ms >= t->evict_after_ms && evict(t, p) != 0)
            return -1;
    }
    return 0;
}
