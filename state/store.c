/*
 * The generic front of the state stores: opening and closing, the read
 * functions any thread may call (each in a read transaction of its own),
 * the counters, and the partition views a stage function writes through.
 *
 * Everything here works on encoded keys (state_int.h): a namespace byte,
 * the topic, 0x00, the partition in 4 big-endian bytes, then the user's
 * key. The backends see only those bytes.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../actors/util.h"
#include "changelog.h"
#include "state_int.h"

/* The smallest key above every key that starts with prefix: the prefix
 * with its trailing 0xff bytes dropped and its last byte raised by one.
 * Returns its length, 0 when there is none (all bytes 0xff: no bound). */
static size_t prefix_end(uint8_t *out, const uint8_t *prefix, size_t len)
{
    memcpy(out, prefix, len);
    while (len > 0 && out[len - 1] == 0xff)
        len--;
    if (len > 0)
        out[len - 1]++;
    return len;
}

rill_err_t rill__state_put_offset(rill_store_t *s, void *txn, const char *topic, int32_t partition,
                                  int64_t offset)
{
    if (!s || !txn)
        return RILL_EINVAL;
    uint8_t key[RILL__ENCODED_KEY_MAX];
    size_t kl = rill__state_prefix(key, RILL__NS_OFFSET, topic, partition);
    if (kl == 0)
        return RILL_EINVAL;
    uint8_t v[8];
    rill__state_encode_i64(v, offset);
    return s->ops->put(txn, key, kl, v, sizeof v);
}

/* ------------------------------------------------------------ open, close */

rill_err_t rill_store_open_memory(const char *name, rill_store_t **out, char *errstr,
                                  size_t errstr_size)
{
    if (!out)
        return rill__fail(RILL_EINVAL, errstr, errstr_size, "rill_store_open_memory: out is NULL");
    *out = NULL;
    if (!name)
        return rill__fail(RILL_EINVAL, errstr, errstr_size, "rill_store_open_memory: name is NULL");
    rill_store_t *s = calloc(1, sizeof *s);
    if (!s)
        return rill__fail(RILL_ENOMEM, errstr, errstr_size, "memory store %s: out of memory", name);
    snprintf(s->name, sizeof s->name, "%s", name);
    rill_err_t err = rill__store_mem_init(s, errstr, errstr_size);
    if (err) {
        free(s);
        return err;
    }
    *out = s;
    return RILL_OK;
}

/* LMDB cannot work in a map smaller than a few pages. */
#define RILL__STORE_MAP_MIN (32 * 1024)

rill_err_t rill_store_open_lmdb(const char *path, const rill_store_opts_t *opts, rill_store_t **out,
                                char *errstr, size_t errstr_size)
{
    if (!out)
        return rill__fail(RILL_EINVAL, errstr, errstr_size, "rill_store_open_lmdb: out is NULL");
    *out = NULL;
    if (!path || !*path)
        return rill__fail(RILL_EINVAL, errstr, errstr_size,
                          "rill_store_open_lmdb: path is NULL or empty");
    rill_store_t *s = calloc(1, sizeof *s);
    if (!s)
        return rill__fail(RILL_ENOMEM, errstr, errstr_size, "store %s: out of memory", path);
    if (strlen(path) >= sizeof s->name) {
        free(s);
        return rill__fail(RILL_EINVAL, errstr, errstr_size,
                          "rill_store_open_lmdb: the path is %zu bytes long; at most %zu",
                          strlen(path), sizeof s->name - 1);
    }
    rill_store_opts_t o = {0};
    if (opts)
        o = *opts;
    if (o.map_size != 0 && o.map_size < RILL__STORE_MAP_MIN) {
        free(s);
        return rill__fail(RILL_EINVAL, errstr, errstr_size,
                          "store %s: map_size %llu is below the least LMDB can use, %d bytes", path,
                          (unsigned long long)o.map_size, RILL__STORE_MAP_MIN);
    }
    if (o.map_size > SIZE_MAX) {
        free(s);
        return rill__fail(RILL_EINVAL, errstr, errstr_size,
                          "store %s: map_size %llu does not fit the address space", path,
                          (unsigned long long)o.map_size);
    }
    snprintf(s->name, sizeof s->name, "%s", path);
    rill_err_t err = rill__store_lmdb_init(s, path, &o, errstr, errstr_size);
    if (err) {
        free(s);
        return err;
    }
    *out = s;
    return RILL_OK;
}

void rill_store_close(rill_store_t *store)
{
    if (!store)
        return;
    if (store->cl)
        rill__restorer_stop(store->cl);
    rill__changelog_free(store->cl);
    store->ops->close(store);
    free(store);
}

const char *rill_store_name(const rill_store_t *store)
{
    return store ? store->name : "";
}

/* ------------------------------------------------- reads, any thread */

rill_err_t rill_store_offset(rill_store_t *store, const char *topic, int32_t partition,
                             int64_t *offset)
{
    if (!store || !offset)
        return RILL_EINVAL;
    uint8_t key[RILL__ENCODED_KEY_MAX];
    size_t kl = rill__state_prefix(key, RILL__NS_OFFSET, topic, partition);
    if (kl == 0)
        return RILL_EINVAL;
    void *txn;
    rill_err_t err = store->ops->begin(store, 0, &txn, NULL, 0);
    if (err)
        return err;
    const void *v;
    size_t vl;
    err = store->ops->get(txn, key, kl, &v, &vl);
    if (!err && vl != 8)
        err = RILL_EIO; /* not an offset this front wrote */
    if (!err)
        *offset = rill__state_decode_i64(v);
    store->ops->abort(txn);
    return err;
}

/* Whether every partition's stored offset is at or past its offsets[p]:
 * 1 yes, 0 no, or -1 with *err set. */
static int offsets_reached(rill_store_t *store, const char *topic, int32_t partitions,
                           const int64_t *offsets, rill_err_t *err)
{
    for (int32_t p = 0; p < partitions; p++) {
        int64_t o = 0;
        rill_err_t e = rill_store_offset(store, topic, p, &o);
        if (e == RILL_ENOENT)
            o = 0; /* nothing stored: no record of it reflected */
        else if (e) {
            *err = e;
            return -1;
        }
        if (o < offsets[p])
            return 0;
    }
    return 1;
}

rill_err_t rill_store_wait_offsets(rill_store_t *store, const char *topic, int32_t partitions,
                                   const int64_t *offsets, int timeout_ms)
{
    if (!store || !topic || partitions < 0 || (partitions > 0 && !offsets) || timeout_ms < 0)
        return RILL_EINVAL;
    int64_t deadline = rill__now_ms() + timeout_ms;
    for (;;) {
        rill_err_t err = RILL_OK;
        int reached = offsets_reached(store, topic, partitions, offsets, &err);
        if (reached)
            return reached > 0 ? RILL_OK : err;
        int left = rill__ms_left(deadline);
        if (left == 0)
            return RILL_ETIMEDOUT;
        int nap_ms = left < 10 ? left : 10;
        struct timespec ts = {0, (long)nap_ms * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

/* The encoded key of (topic, partition, key) into buf; 0 for bad arguments. */
static size_t state_key(uint8_t *buf, const char *topic, int32_t partition, const void *key,
                        size_t key_len)
{
    if (!key || key_len == 0 || key_len > RILL__KEY_MAX)
        return 0;
    size_t pl = rill__state_prefix(buf, RILL__NS_STATE, topic, partition);
    if (pl == 0)
        return 0;
    memcpy(buf + pl, key, key_len);
    return pl + key_len;
}

rill_err_t rill_store_read(rill_store_t *store, const char *topic, int32_t partition,
                           const void *key, size_t key_len, void *buf, size_t buf_size,
                           size_t *value_len)
{
    if (!store || !value_len || (!buf && buf_size > 0))
        return RILL_EINVAL;
    uint8_t k[RILL__ENCODED_KEY_MAX];
    size_t kl = state_key(k, topic, partition, key, key_len);
    if (kl == 0)
        return RILL_EINVAL;
    void *txn;
    rill_err_t err = store->ops->begin(store, 0, &txn, NULL, 0);
    if (err)
        return err;
    const void *v;
    size_t vl;
    err = store->ops->get(txn, k, kl, &v, &vl);
    if (!err) {
        if (vl > 0 && buf_size > 0)
            memcpy(buf, v, vl < buf_size ? vl : buf_size);
        *value_len = vl;
    }
    store->ops->abort(txn);
    return err;
}

/* A scan over one partition's state: its bounds, encoded, and the user's
 * function, which gets the keys without the partition's prefix. */
struct range {
    uint8_t from[RILL__ENCODED_KEY_MAX], to[RILL__ENCODED_KEY_MAX];
    size_t from_len, to_len;
    int to_end; /* no upper bound */
    size_t prefix_len;
    rill_state_visit_fn *fn;
    void *opaque;
};

/* Bounds of [from, to) inside the partition whose prefix is the first
 * prefix_len bytes of prefix; NULL bounds are the partition's own. */
static rill_err_t range_init(struct range *r, const uint8_t *prefix, size_t prefix_len,
                             const void *from, size_t from_len, const void *to, size_t to_len,
                             rill_state_visit_fn *fn, void *opaque)
{
    if (!fn || prefix_len == 0 || (from && from_len > RILL__KEY_MAX) ||
        (to && to_len > RILL__KEY_MAX))
        return RILL_EINVAL;
    r->prefix_len = prefix_len;
    r->fn = fn;
    r->opaque = opaque;
    memcpy(r->from, prefix, prefix_len);
    r->from_len = prefix_len;
    if (from && from_len > 0) {
        memcpy(r->from + prefix_len, from, from_len);
        r->from_len += from_len;
    }
    r->to_end = 0;
    if (to) {
        memcpy(r->to, prefix, prefix_len);
        if (to_len > 0)
            memcpy(r->to + prefix_len, to, to_len);
        r->to_len = prefix_len + to_len;
    } else {
        r->to_len = prefix_end(r->to, prefix, prefix_len);
        r->to_end = r->to_len == 0;
    }
    return RILL_OK;
}

static int range_visit(void *opaque, const void *key, size_t key_len, const void *value,
                       size_t value_len)
{
    struct range *r = opaque;
    /* The bounds keep every key inside the partition, and the prefix is
     * not a state key itself (user keys have at least one byte). */
    if (key_len <= r->prefix_len)
        return 0;
    return r->fn(r->opaque, (const uint8_t *)key + r->prefix_len, key_len - r->prefix_len, value,
                 value_len);
}

static rill_err_t range_scan(rill_store_t *s, void *txn, struct range *r)
{
    return s->ops->scan(txn, r->from, r->from_len, r->to_end ? NULL : r->to,
                        r->to_end ? 0 : r->to_len, range_visit, r);
}

rill_err_t rill_store_scan(rill_store_t *store, const char *topic, int32_t partition,
                           const void *from, size_t from_len, const void *to, size_t to_len,
                           rill_state_visit_fn *fn, void *opaque)
{
    if (!store)
        return RILL_EINVAL;
    uint8_t prefix[RILL__ENCODED_KEY_MAX];
    size_t pl = rill__state_prefix(prefix, RILL__NS_STATE, topic, partition);
    struct range r;
    rill_err_t err = range_init(&r, prefix, pl, from, from_len, to, to_len, fn, opaque);
    if (err)
        return err;
    void *txn;
    err = store->ops->begin(store, 0, &txn, NULL, 0);
    if (err)
        return err;
    err = range_scan(store, txn, &r);
    store->ops->abort(txn);
    return err;
}

rill_err_t rill_store_stats(rill_store_t *store, rill_store_stats_t *out)
{
    if (!store || !out)
        return RILL_EINVAL;
    /* Relaxed: each counter is a count of its own; a snapshot need not
     * be consistent across them. */
    out->commits = atomic_load_explicit(&store->commits, memory_order_relaxed);
    out->aborts = atomic_load_explicit(&store->aborts, memory_order_relaxed);
    out->puts = atomic_load_explicit(&store->puts, memory_order_relaxed);
    out->deletes = atomic_load_explicit(&store->deletes, memory_order_relaxed);
    out->commit_errors = atomic_load_explicit(&store->commit_errors, memory_order_relaxed);
    out->late = atomic_load_explicit(&store->late, memory_order_relaxed);
    out->windows_closed = atomic_load_explicit(&store->windows_closed, memory_order_relaxed);
    out->bytes = store->ops->bytes(store);
    rill__changelog_stats(store->cl, out);
    return RILL_OK;
}

/* ---------------------------------------------- the stage function's view */

/* Append the user's key to the prefix in st->key; 0 for bad arguments or
 * a view that is not set up. */
static size_t view_key(rill_state_t *st, const void *key, size_t key_len)
{
    if (!st || !st->store || !st->txn || st->prefix_len == 0 ||
        st->prefix_len > RILL__ENCODED_KEY_MAX - RILL__KEY_MAX)
        return 0;
    if (!key || key_len == 0 || key_len > RILL__KEY_MAX)
        return 0;
    memcpy(st->key + st->prefix_len, key, key_len);
    return st->prefix_len + key_len;
}

rill_err_t rill_state_get(rill_state_t *st, const void *key, size_t key_len, const void **value,
                          size_t *value_len)
{
    size_t kl = view_key(st, key, key_len);
    if (kl == 0 || !value || !value_len)
        return RILL_EINVAL;
    return st->store->ops->get(st->txn, st->key, kl, value, value_len);
}

rill_err_t rill_state_put(rill_state_t *st, const void *key, size_t key_len, const void *value,
                          size_t value_len)
{
    size_t kl = view_key(st, key, key_len);
    if (kl == 0 || (!value && value_len > 0))
        return RILL_EINVAL;
    rill_err_t err = st->store->ops->put(st->txn, st->key, kl, value ? value : "", value_len);
    if (!err) { /* relaxed: a count, ordering nothing */
        atomic_fetch_add_explicit(&st->store->puts, 1, memory_order_relaxed);
        if (st->on_change)
            st->on_change(st->change_opaque, st->key, kl, value ? value : "", value_len);
    }
    return err;
}

rill_err_t rill_state_delete(rill_state_t *st, const void *key, size_t key_len)
{
    size_t kl = view_key(st, key, key_len);
    if (kl == 0)
        return RILL_EINVAL;
    rill_err_t err = st->store->ops->del(st->txn, st->key, kl);
    if (!err) { /* relaxed: a count, ordering nothing */
        atomic_fetch_add_explicit(&st->store->deletes, 1, memory_order_relaxed);
        if (st->on_change)
            st->on_change(st->change_opaque, st->key, kl, NULL, 0);
    }
    return err;
}

rill_err_t rill_state_range(rill_state_t *st, const void *from, size_t from_len, const void *to,
                            size_t to_len, rill_state_visit_fn *fn, void *opaque)
{
    if (!st || !st->store || !st->txn || st->prefix_len > RILL__ENCODED_KEY_MAX - RILL__KEY_MAX)
        return RILL_EINVAL;
    struct range r;
    rill_err_t err =
        range_init(&r, st->key, st->prefix_len, from, from_len, to, to_len, fn, opaque);
    if (err)
        return err;
    return range_scan(st->store, st->txn, &r);
}

const char *rill_state_topic(const rill_state_t *st)
{
    return st ? st->topic : NULL;
}

int32_t rill_state_partition(const rill_state_t *st)
{
    return st ? st->partition : -1;
}
