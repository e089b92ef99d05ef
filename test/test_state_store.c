/*
 * The state stores (state/store.c, store_mem.c, store_lmdb.c), driven the
 * way the stateful stage drives them: a write transaction through the
 * backend's ops, a partition view (rill_state_*) over it, offsets written
 * with rill__state_put_offset; and the public read functions beside it.
 *
 * For both backends: reads and writes in a transaction, a commit that
 * shows state and offset together, an abort that shows neither, scan
 * order and bounds, partitions and topics kept apart, bad arguments, and
 * a reader thread reading while the writer commits. For LMDB: data that
 * survives a close, a process killed (SIGKILL) between two commits, a full
 * map, a corrupt file, and the one-owner lock (another process, this one).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "support/rtest.h"
#include "support/state_kit.h"

#include "state/state_int.h"

/* ------------------------------------------------------------ helpers */

typedef struct kit {
    rill_store_t *s;
    int lmdb;
    char dir[64];   /* the temporary directory (LMDB only) */
    char path[128]; /* the store's directory inside it */
} kit_t;

static void kit_dir(kit_t *k)
{
    snprintf(k->dir, sizeof k->dir, "/tmp/rill-state-XXXXXX");
    cr_assert_not_null(mkdtemp(k->dir), "mkdtemp: %s", strerror(errno));
    snprintf(k->path, sizeof k->path, "%s/store", k->dir);
}

static rill_store_t *open_lmdb(const char *path, uint64_t map_size)
{
    char err[512] = "";
    rill_store_opts_t opts = {.map_size = map_size, .no_sync = 1};
    rill_store_t *s = NULL;
    rill_err_t rc = rill_store_open_lmdb(path, &opts, &s, err, sizeof err);
    cr_assert_eq(rc, RILL_OK, "open %s: %s", path, err);
    return s;
}

static void kit_open(kit_t *k, int lmdb)
{
    memset(k, 0, sizeof *k);
    k->lmdb = lmdb;
    if (lmdb) {
        kit_dir(k);
        k->s = open_lmdb(k->path, 0);
    } else {
        char err[512] = "";
        cr_assert_eq(rill_store_open_memory("mem", &k->s, err, sizeof err), RILL_OK, "%s", err);
    }
}

static void kit_close(kit_t *k)
{
    rill_store_close(k->s);
    k->s = NULL;
    if (k->lmdb)
        sk_rm_rf(k->dir);
}

/* Run body against a memory store, then against an LMDB store. */
static void each_backend(void (*body)(kit_t *k))
{
    for (int lmdb = 0; lmdb <= 1; lmdb++) {
        kit_t k;
        kit_open(&k, lmdb);
        body(&k);
        kit_close(&k);
    }
}

static void *begin_write(rill_store_t *s)
{
    char err[512] = "";
    void *txn = NULL;
    cr_assert_eq(s->ops->begin(s, 1, &txn, err, sizeof err), RILL_OK, "begin: %s", err);
    return txn;
}

static void commit_ok(rill_store_t *s, void *txn)
{
    char err[512] = "";
    cr_assert_eq(s->ops->commit(txn, err, sizeof err), RILL_OK, "commit: %s", err);
}

/* The view a stage function gets of (topic, partition) in txn. */
static void view(rill_state_t *st, rill_store_t *s, void *txn, const char *topic, int32_t p)
{
    memset(st, 0, sizeof *st);
    st->store = s;
    st->txn = txn;
    st->topic = topic;
    st->partition = p;
    st->prefix_len = rill__state_prefix(st->key, RILL__NS_STATE, topic, p);
    cr_assert_gt(st->prefix_len, 0);
}

static rill_err_t put_s(rill_state_t *st, const char *k, const char *v)
{
    return rill_state_put(st, k, strlen(k), v, strlen(v));
}

/* The committed value of k as a string ("" when absent). */
static const char *read_s(rill_store_t *s, const char *topic, int32_t p, const char *k, char *buf,
                          size_t size)
{
    size_t len = 0;
    rill_err_t rc = rill_store_read(s, topic, p, k, strlen(k), buf, size - 1, &len);
    if (rc != RILL_OK) {
        cr_assert_eq(rc, RILL_ENOENT, "read %s: %s", k, rill_err2str(rc));
        return "";
    }
    cr_assert_lt(len, size);
    buf[len] = '\0';
    return buf;
}

static int64_t offset_of(rill_store_t *s, const char *topic, int32_t p)
{
    int64_t off = -1;
    rill_err_t rc = rill_store_offset(s, topic, p, &off);
    if (rc == RILL_ENOENT)
        return -1;
    cr_assert_eq(rc, RILL_OK);
    return off;
}

/* A scan's keys and values, "k=v" joined with commas. */
typedef struct seen {
    char text[1024];
    int n, stop_after;
} seen_t;

static int see(void *opaque, const void *key, size_t key_len, const void *value, size_t value_len)
{
    seen_t *s = opaque;
    size_t at = strlen(s->text);
    snprintf(s->text + at, sizeof s->text - at, "%s%.*s=%.*s", s->n ? "," : "", (int)key_len,
             (const char *)key, (int)value_len, (const char *)value);
    s->n++;
    return s->stop_after && s->n >= s->stop_after;
}

static const char *scan_s(rill_store_t *s, const char *topic, int32_t p, const char *from,
                          const char *to, seen_t *out)
{
    memset(out, 0, sizeof *out);
    rill_err_t rc = rill_store_scan(s, topic, p, from, from ? strlen(from) : 0, to,
                                    to ? strlen(to) : 0, see, out);
    cr_assert_eq(rc, RILL_OK);
    return out->text;
}

static const char *range_s(rill_state_t *st, const char *from, const char *to, seen_t *out)
{
    memset(out, 0, sizeof *out);
    rill_err_t rc =
        rill_state_range(st, from, from ? strlen(from) : 0, to, to ? strlen(to) : 0, see, out);
    cr_assert_eq(rc, RILL_OK);
    return out->text;
}

/* Wait until fd is readable, at most 30 s; then read one byte. */
static int wait_byte(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, 30000) != 1)
        return -1;
    char c;
    return read(fd, &c, 1) == 1 ? c : -1;
}

/* ------------------------------------------------------ both backends */

static void body_put_get_delete(kit_t *k)
{
    rill_store_t *s = k->s;
    char buf[64];
    void *txn = begin_write(s);
    rill_state_t st;
    view(&st, s, txn, "t", 0);
    const void *v;
    size_t vl;
    cr_assert_eq(rill_state_get(&st, "a", 1, &v, &vl), RILL_ENOENT);
    cr_assert_eq(put_s(&st, "a", "1"), RILL_OK);
    cr_assert_eq(rill_state_get(&st, "a", 1, &v, &vl), RILL_OK);
    cr_assert_eq(vl, 1);
    cr_assert_eq(memcmp(v, "1", 1), 0);
    cr_assert_eq(put_s(&st, "a", "22"), RILL_OK);
    cr_assert_eq(rill_state_get(&st, "a", 1, &v, &vl), RILL_OK);
    cr_assert_eq(vl, 2);
    cr_assert_eq(memcmp(v, "22", 2), 0);
    cr_assert_eq(rill_state_delete(&st, "a", 1), RILL_OK);
    cr_assert_eq(rill_state_get(&st, "a", 1, &v, &vl), RILL_ENOENT);
    cr_assert_eq(rill_state_delete(&st, "a", 1), RILL_ENOENT);
    cr_assert_eq(put_s(&st, "b", "bee"), RILL_OK);
    cr_assert_eq(rill_state_put(&st, "e", 1, NULL, 0), RILL_OK, "an empty value");
    cr_assert_str_eq(rill_state_topic(&st), "t");
    cr_assert_eq(rill_state_partition(&st), 0);
    /* Nothing is visible outside the transaction before its commit. */
    cr_assert_str_eq(read_s(s, "t", 0, "b", buf, sizeof buf), "");
    commit_ok(s, txn);
    cr_assert_str_eq(read_s(s, "t", 0, "b", buf, sizeof buf), "bee");
    cr_assert_str_eq(read_s(s, "t", 0, "a", buf, sizeof buf), "");
    size_t len = 99;
    cr_assert_eq(rill_store_read(s, "t", 0, "e", 1, NULL, 0, &len), RILL_OK);
    cr_assert_eq(len, 0);
    /* A value longer than the buffer: the buffer's worth, the whole length. */
    char two[2] = {0};
    cr_assert_eq(rill_store_read(s, "t", 0, "b", 1, two, 2, &len), RILL_OK);
    cr_assert_eq(len, 3);
    cr_assert_eq(memcmp(two, "be", 2), 0);

    /* Delete a committed key: gone inside, still there outside until commit. */
    txn = begin_write(s);
    view(&st, s, txn, "t", 0);
    cr_assert_eq(rill_state_get(&st, "b", 1, &v, &vl), RILL_OK);
    cr_assert_eq(rill_state_delete(&st, "b", 1), RILL_OK);
    cr_assert_eq(rill_state_get(&st, "b", 1, &v, &vl), RILL_ENOENT);
    cr_assert_str_eq(read_s(s, "t", 0, "b", buf, sizeof buf), "bee");
    commit_ok(s, txn);
    cr_assert_str_eq(read_s(s, "t", 0, "b", buf, sizeof buf), "");

    rill_store_stats_t stats;
    cr_assert_eq(rill_store_stats(s, &stats), RILL_OK);
    cr_assert_eq(stats.puts, 4);
    cr_assert_eq(stats.deletes, 2);
    cr_assert_gt(stats.bytes, 0);
}

Test(state_store, put_get_delete)
{
    each_backend(body_put_get_delete);
}

static void body_commit_with_offset(kit_t *k)
{
    rill_store_t *s = k->s;
    char buf[64];
    void *txn = begin_write(s);
    rill_state_t st;
    view(&st, s, txn, "orders", 3);
    cr_assert_eq(put_s(&st, "sum", "42"), RILL_OK);
    cr_assert_eq(rill__state_put_offset(s, txn, "orders", 3, 1000), RILL_OK);
    cr_assert_eq(offset_of(s, "orders", 3), -1);
    cr_assert_str_eq(read_s(s, "orders", 3, "sum", buf, sizeof buf), "");
    commit_ok(s, txn);
    cr_assert_eq(offset_of(s, "orders", 3), 1000);
    cr_assert_str_eq(read_s(s, "orders", 3, "sum", buf, sizeof buf), "42");
    cr_assert_eq(offset_of(s, "orders", 2), -1, "another partition has no offset");
    /* Offsets are big-endian: a large one comes back whole. */
    txn = begin_write(s);
    cr_assert_eq(rill__state_put_offset(s, txn, "orders", 3, INT64_C(0x123456789abc)), RILL_OK);
    commit_ok(s, txn);
    cr_assert_eq(offset_of(s, "orders", 3), INT64_C(0x123456789abc));
}

Test(state_store, commit_shows_state_and_offset_together)
{
    each_backend(body_commit_with_offset);
}

static void body_abort(kit_t *k)
{
    rill_store_t *s = k->s;
    char buf[64];
    void *txn = begin_write(s);
    rill_state_t st;
    view(&st, s, txn, "t", 1);
    cr_assert_eq(put_s(&st, "k", "1"), RILL_OK);
    cr_assert_eq(rill__state_put_offset(s, txn, "t", 1, 10), RILL_OK);
    commit_ok(s, txn);

    txn = begin_write(s);
    view(&st, s, txn, "t", 1);
    cr_assert_eq(put_s(&st, "k", "2"), RILL_OK);
    cr_assert_eq(put_s(&st, "k2", "x"), RILL_OK);
    cr_assert_eq(rill_state_delete(&st, "k", 1), RILL_OK);
    cr_assert_eq(rill__state_put_offset(s, txn, "t", 1, 20), RILL_OK);
    s->ops->abort(txn);

    cr_assert_str_eq(read_s(s, "t", 1, "k", buf, sizeof buf), "1");
    cr_assert_str_eq(read_s(s, "t", 1, "k2", buf, sizeof buf), "");
    cr_assert_eq(offset_of(s, "t", 1), 10);
    /* The store takes a new write transaction after the abort. */
    txn = begin_write(s);
    s->ops->abort(txn);
}

Test(state_store, abort_discards_state_and_offset)
{
    each_backend(body_abort);
}

static void body_scan(kit_t *k)
{
    rill_store_t *s = k->s;
    seen_t out;
    void *txn = begin_write(s);
    rill_state_t st;
    view(&st, s, txn, "t", 0);
    const char *keys[] = {"b", "a", "abc", "c", "ab", "\x7f", "B"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
        cr_assert_eq(put_s(&st, keys[i], "v"), RILL_OK);
    /* Inside the transaction, its writes are in the range already. */
    cr_assert_str_eq(range_s(&st, NULL, NULL, &out), "B=v,a=v,ab=v,abc=v,b=v,c=v,\x7f=v");
    commit_ok(s, txn);

    cr_assert_str_eq(scan_s(s, "t", 0, NULL, NULL, &out), "B=v,a=v,ab=v,abc=v,b=v,c=v,\x7f=v");
    cr_assert_str_eq(scan_s(s, "t", 0, "ab", "b", &out), "ab=v,abc=v");
    cr_assert_str_eq(scan_s(s, "t", 0, "aa", "abc", &out), "ab=v", "to is excluded");
    cr_assert_str_eq(scan_s(s, "t", 0, "b", NULL, &out), "b=v,c=v,\x7f=v");
    cr_assert_str_eq(scan_s(s, "t", 0, NULL, "a", &out), "B=v");
    cr_assert_str_eq(scan_s(s, "t", 0, "c", "c", &out), "");
    cr_assert_str_eq(scan_s(s, "t", 0, "d", "a", &out), "", "from after to: nothing");
    memset(&out, 0, sizeof out);
    out.stop_after = 2;
    cr_assert_eq(rill_store_scan(s, "t", 0, NULL, 0, NULL, 0, see, &out), RILL_OK);
    cr_assert_str_eq(out.text, "B=v,a=v", "a non-zero return stops the scan");

    /* Overwrites and deletes of committed keys, and new keys, merge in order. */
    txn = begin_write(s);
    view(&st, s, txn, "t", 0);
    cr_assert_eq(put_s(&st, "ab", "new"), RILL_OK);
    cr_assert_eq(rill_state_delete(&st, "abc", 3), RILL_OK);
    cr_assert_eq(put_s(&st, "aa", "w"), RILL_OK);
    cr_assert_eq(rill_state_delete(&st, "\x7f", 1), RILL_OK);
    cr_assert_str_eq(range_s(&st, NULL, NULL, &out), "B=v,a=v,aa=w,ab=new,b=v,c=v");
    cr_assert_str_eq(range_s(&st, "a", "b", &out), "a=v,aa=w,ab=new");
    cr_assert_str_eq(scan_s(s, "t", 0, "a", "b", &out), "a=v,ab=v,abc=v", "the snapshot");
    commit_ok(s, txn);
    cr_assert_str_eq(scan_s(s, "t", 0, NULL, NULL, &out), "B=v,a=v,aa=w,ab=new,b=v,c=v");
}

Test(state_store, scan_order_and_bounds)
{
    each_backend(body_scan);
}

static void body_partitions(kit_t *k)
{
    rill_store_t *s = k->s;
    char buf[64];
    seen_t out;
    void *txn = begin_write(s);
    /* Partition 255 ends its prefix with 0xff: its range must stop before
     * partition 256's. Topic "t" and "t2" share a first byte. */
    struct {
        const char *topic;
        int32_t p;
        const char *v;
    } parts[] = {{"t", 0, "t0"},     {"t", 1, "t1"},     {"t2", 0, "t2_0"},
                 {"t", 255, "t255"}, {"t", 256, "t256"}, {"u", 0, "u0"}};
    size_t n = sizeof parts / sizeof *parts;
    for (size_t i = 0; i < n; i++) {
        rill_state_t st;
        view(&st, s, txn, parts[i].topic, parts[i].p);
        cr_assert_eq(put_s(&st, "k", parts[i].v), RILL_OK);
        cr_assert_eq(rill__state_put_offset(s, txn, parts[i].topic, parts[i].p, (int64_t)i),
                     RILL_OK);
        snprintf(buf, sizeof buf, "k=%s", parts[i].v);
        cr_assert_str_eq(range_s(&st, NULL, NULL, &out), buf, "its own writes only");
    }
    commit_ok(s, txn);
    for (size_t i = 0; i < n; i++) {
        char want[64];
        snprintf(want, sizeof want, "k=%s", parts[i].v);
        cr_assert_str_eq(scan_s(s, parts[i].topic, parts[i].p, NULL, NULL, &out), want);
        cr_assert_str_eq(read_s(s, parts[i].topic, parts[i].p, "k", buf, sizeof buf), parts[i].v);
        cr_assert_eq(offset_of(s, parts[i].topic, parts[i].p), (int64_t)i);
    }
    cr_assert_str_eq(scan_s(s, "t", 2, NULL, NULL, &out), "");
    cr_assert_str_eq(scan_s(s, "t2", 1, NULL, NULL, &out), "");
}

Test(state_store, partitions_and_topics_apart)
{
    each_backend(body_partitions);
}

static int never(void *o, const void *k, size_t kl, const void *v, size_t vl)
{
    (void)o, (void)k, (void)kl, (void)v, (void)vl;
    return 0;
}

static void body_bad_arguments(kit_t *k)
{
    rill_store_t *s = k->s;
    int64_t off;
    size_t len;
    char buf[8];
    char key[RILL__KEY_MAX + 1];
    memset(key, 'k', sizeof key);
    char topic[RILL__TOPIC_MAX + 2];
    memset(topic, 'x', sizeof topic);
    topic[RILL__TOPIC_MAX + 1] = '\0'; /* one too long */
    rill_store_stats_t stats;

    cr_assert_eq(rill_store_offset(NULL, "t", 0, &off), RILL_EINVAL);
    cr_assert_eq(rill_store_offset(s, NULL, 0, &off), RILL_EINVAL);
    cr_assert_eq(rill_store_offset(s, "", 0, &off), RILL_EINVAL);
    cr_assert_eq(rill_store_offset(s, topic, 0, &off), RILL_EINVAL);
    cr_assert_eq(rill_store_offset(s, "t", -1, &off), RILL_EINVAL);
    cr_assert_eq(rill_store_offset(s, "t", 0, NULL), RILL_EINVAL);
    cr_assert_eq(rill_store_read(NULL, "t", 0, "k", 1, buf, sizeof buf, &len), RILL_EINVAL);
    cr_assert_eq(rill_store_read(s, NULL, 0, "k", 1, buf, sizeof buf, &len), RILL_EINVAL);
    cr_assert_eq(rill_store_read(s, "t", 0, NULL, 1, buf, sizeof buf, &len), RILL_EINVAL);
    cr_assert_eq(rill_store_read(s, "t", 0, "k", 0, buf, sizeof buf, &len), RILL_EINVAL);
    cr_assert_eq(rill_store_read(s, "t", 0, key, sizeof key, buf, sizeof buf, &len), RILL_EINVAL);
    cr_assert_eq(rill_store_read(s, "t", 0, "k", 1, NULL, 4, &len), RILL_EINVAL);
    cr_assert_eq(rill_store_read(s, "t", 0, "k", 1, buf, sizeof buf, NULL), RILL_EINVAL);
    cr_assert_eq(rill_store_scan(NULL, "t", 0, NULL, 0, NULL, 0, never, NULL), RILL_EINVAL);
    cr_assert_eq(rill_store_scan(s, NULL, 0, NULL, 0, NULL, 0, never, NULL), RILL_EINVAL);
    cr_assert_eq(rill_store_scan(s, "t", 0, NULL, 0, NULL, 0, NULL, NULL), RILL_EINVAL);
    cr_assert_eq(rill_store_scan(s, "t", 0, key, sizeof key, NULL, 0, never, NULL), RILL_EINVAL);
    cr_assert_eq(rill_store_stats(NULL, &stats), RILL_EINVAL);
    cr_assert_eq(rill_store_stats(s, NULL), RILL_EINVAL);
    cr_assert_str_eq(rill_store_name(NULL), "");

    void *txn = begin_write(s);
    rill_state_t st;
    view(&st, s, txn, "t", 0);
    const void *v;
    size_t vl;
    cr_assert_eq(rill_state_get(NULL, "k", 1, &v, &vl), RILL_EINVAL);
    cr_assert_eq(rill_state_get(&st, NULL, 1, &v, &vl), RILL_EINVAL);
    cr_assert_eq(rill_state_get(&st, "k", 0, &v, &vl), RILL_EINVAL);
    cr_assert_eq(rill_state_get(&st, "k", 1, NULL, &vl), RILL_EINVAL);
    cr_assert_eq(rill_state_get(&st, "k", 1, &v, NULL), RILL_EINVAL);
    cr_assert_eq(rill_state_get(&st, key, sizeof key, &v, &vl), RILL_EINVAL);
    cr_assert_eq(rill_state_put(NULL, "k", 1, "v", 1), RILL_EINVAL);
    cr_assert_eq(rill_state_put(&st, NULL, 1, "v", 1), RILL_EINVAL);
    cr_assert_eq(rill_state_put(&st, "k", 0, "v", 1), RILL_EINVAL);
    cr_assert_eq(rill_state_put(&st, "k", 1, NULL, 1), RILL_EINVAL);
    cr_assert_eq(rill_state_put(&st, key, sizeof key, "v", 1), RILL_EINVAL, "a key too long");
    cr_assert_eq(rill_state_delete(NULL, "k", 1), RILL_EINVAL);
    cr_assert_eq(rill_state_delete(&st, NULL, 1), RILL_EINVAL);
    cr_assert_eq(rill_state_delete(&st, key, sizeof key), RILL_EINVAL);
    cr_assert_eq(rill_state_range(NULL, NULL, 0, NULL, 0, never, NULL), RILL_EINVAL);
    cr_assert_eq(rill_state_range(&st, NULL, 0, NULL, 0, NULL, NULL), RILL_EINVAL);
    cr_assert_eq(rill_state_range(&st, NULL, 0, key, sizeof key, never, NULL), RILL_EINVAL);
    cr_assert_null(rill_state_topic(NULL));
    cr_assert_eq(rill_state_partition(NULL), -1);
    cr_assert_eq(rill__state_put_offset(s, txn, topic, 0, 1), RILL_EINVAL);
    cr_assert_eq(rill__state_put_offset(s, txn, "t", -5, 1), RILL_EINVAL);
    cr_assert_eq(rill__state_put_offset(NULL, txn, "t", 0, 1), RILL_EINVAL);
    uint8_t prefix[RILL__ENCODED_KEY_MAX];
    cr_assert_eq(rill__state_prefix(prefix, RILL__NS_STATE, topic, 0), 0);
    cr_assert_eq(rill__state_prefix(prefix, RILL__NS_STATE, "", 0), 0);
    cr_assert_eq(rill__state_prefix(prefix, RILL__NS_STATE, NULL, 0), 0);

    /* The longest key in the longest topic fits (LMDB's 511-byte limit). */
    topic[RILL__TOPIC_MAX] = '\0';
    rill_state_t big;
    view(&big, s, txn, topic, INT32_MAX);
    cr_assert_eq(rill_state_put(&big, key, RILL__KEY_MAX, "v", 1), RILL_OK);
    cr_assert_eq(rill_state_get(&big, key, RILL__KEY_MAX, &v, &vl), RILL_OK);
    commit_ok(s, txn);
    cr_assert_eq(rill_store_read(s, topic, INT32_MAX, key, RILL__KEY_MAX, buf, sizeof buf, &len),
                 RILL_OK);
    cr_assert_eq(len, 1);
}

Test(state_store, bad_arguments_are_einval)
{
    each_backend(body_bad_arguments);
    char err[256] = "";
    rill_store_t *s = (rill_store_t *)1;
    cr_assert_eq(rill_store_open_memory(NULL, &s, err, sizeof err), RILL_EINVAL);
    cr_assert_null(s);
    cr_assert_neq(err[0], '\0', "a sentence");
    cr_assert_eq(rill_store_open_memory("m", NULL, NULL, 0), RILL_EINVAL);
    cr_assert_eq(rill_store_open_lmdb(NULL, NULL, &s, err, sizeof err), RILL_EINVAL);
    cr_assert_eq(rill_store_open_lmdb("", NULL, &s, err, sizeof err), RILL_EINVAL);
    cr_assert_eq(rill_store_open_lmdb("/tmp/x", NULL, NULL, err, sizeof err), RILL_EINVAL);
    rill_store_opts_t tiny = {.map_size = 1024};
    err[0] = '\0';
    cr_assert_eq(rill_store_open_lmdb("/tmp/rill-state-never-made", &tiny, &s, err, sizeof err),
                 RILL_EINVAL);
    cr_assert_not_null(strstr(err, "map_size"), "%s", err);
    rill_store_close(NULL);
}

Test(state_store, memory_one_write_transaction)
{
    kit_t k;
    kit_open(&k, 0);
    void *txn = begin_write(k.s);
    void *second = NULL;
    char err[256] = "";
    cr_assert_eq(k.s->ops->begin(k.s, 1, &second, err, sizeof err), RILL_ESTATE);
    cr_assert_not_null(strstr(err, "mem"), "%s", err);
    commit_ok(k.s, txn);
    /* Bytes: the encoded keys and values committed (a 7-byte prefix here). */
    txn = begin_write(k.s);
    rill_state_t st;
    view(&st, k.s, txn, "t", 0);
    cr_assert_eq(put_s(&st, "ab", "xyz"), RILL_OK);
    cr_assert_eq(rill__state_put_offset(k.s, txn, "t", 0, 5), RILL_OK);
    commit_ok(k.s, txn);
    rill_store_stats_t stats;
    cr_assert_eq(rill_store_stats(k.s, &stats), RILL_OK);
    cr_assert_eq(stats.bytes, (7 + 2 + 3) + (7 + 8));
    kit_close(&k);
}

/* --------------------------------------------- a reader beside the writer */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#define ROUNDS 300

struct reader {
    rill_store_t *s;
    atomic_int done;
    _Atomic int64_t seen; /* the latest round the reader saw */
    int torn, backwards, errors;
    int64_t last;
};

/* Each commit sets keys "m" and "n" and the offset to its round: a scan
 * sees both equal, and rounds never go back. */
static int see_round(void *opaque, const void *key, size_t key_len, const void *value,
                     size_t value_len)
{
    int64_t *r = opaque;
    (void)key;
    if (key_len != 1 || value_len != sizeof(int64_t))
        return 1;
    memcpy(&r[((const char *)key)[0] == 'n'], value, sizeof(int64_t));
    return 0;
}

static void *reader_main(void *arg)
{
    struct reader *r = arg;
    int64_t prev = -1;
    /* Until the last round is seen, or the writer is done and it is not. */
    while (prev < ROUNDS - 1) {
        int finished = atomic_load_explicit(&r->done, memory_order_acquire);
        int64_t mn[2] = {-1, -1};
        if (rill_store_scan(r->s, "t", 0, NULL, 0, NULL, 0, see_round, mn) != RILL_OK)
            r->errors++;
        if (mn[0] != mn[1])
            r->torn++;
        if (mn[0] < prev)
            r->backwards++;
        if (mn[0] > prev) {
            prev = mn[0];
            atomic_store_explicit(&r->seen, prev, memory_order_release);
        }
        int64_t off = -1;
        rill_err_t rc = rill_store_offset(r->s, "t", 0, &off);
        if (rc != RILL_OK && rc != RILL_ENOENT)
            r->errors++;
        if (rc == RILL_OK && off + 1 < prev)
            r->backwards++; /* an offset read after a round is at least that round */
        if (finished)
            break;
    }
    r->last = prev;
    return NULL;
}

static void body_reader(kit_t *k)
{
    struct reader r = {.s = k->s, .seen = -1};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, reader_main, &r), 0);
    for (int64_t i = 0; i < ROUNDS; i++) {
        void *txn = begin_write(k->s);
        rill_state_t st;
        view(&st, k->s, txn, "t", 0);
        cr_assert_eq(rill_state_put(&st, "m", 1, &i, sizeof i), RILL_OK);
        cr_assert_eq(rill_state_put(&st, "n", 1, &i, sizeof i), RILL_OK);
        cr_assert_eq(rill__state_put_offset(k->s, txn, "t", 0, i + 1), RILL_OK);
        commit_ok(k->s, txn);
        /* Every 50 rounds, until the reader has seen this one: so reads
         * and commits overlap whatever the scheduler does. */
        if (i % 50 == 0) {
            int64_t deadline = now_ms() + 30000;
            while (atomic_load_explicit(&r.seen, memory_order_acquire) < i && now_ms() < deadline)
                sched_yield();
            cr_assert_geq(atomic_load_explicit(&r.seen, memory_order_acquire), i,
                          "the reader saw round %lld within 30 s", (long long)i);
        }
    }
    atomic_store_explicit(&r.done, 1, memory_order_release);
    pthread_join(th, NULL);
    cr_assert_eq(r.errors, 0);
    cr_assert_eq(r.torn, 0, "a scan saw half a commit");
    cr_assert_eq(r.backwards, 0);
    cr_assert_eq(r.last, ROUNDS - 1, "the reader saw the last commit");
}

Test(state_store, reader_thread_while_writer_commits, .timeout = 120)
{
    each_backend(body_reader);
}

/* ------------------------------------------- waiting for stored offsets */

/* Commits offset 5 for partition 1 of "w" after a pause, on a thread of
 * its own (no assertions off the test thread: err says how it went). */
struct late_commit {
    rill_store_t *s;
    rill_err_t err;
};

static void *commit_later(void *arg)
{
    struct late_commit *c = arg;
    struct timespec pause = {0, 100 * 1000 * 1000};
    nanosleep(&pause, NULL);
    void *txn = NULL;
    c->err = c->s->ops->begin(c->s, 1, &txn, NULL, 0);
    if (!c->err && (c->err = rill__state_put_offset(c->s, txn, "w", 1, 5)) != RILL_OK)
        c->s->ops->abort(txn);
    else if (!c->err)
        c->err = c->s->ops->commit(txn, NULL, 0);
    return NULL;
}

static void body_wait_offsets(kit_t *k)
{
    rill_store_t *s = k->s;
    const int64_t none[2] = {0, -1}, want[2] = {10, 5}, below[2] = {8, 5};
    cr_assert_eq(rill_store_wait_offsets(s, "w", 2, none, 0), RILL_OK,
                 "nothing stored reaches offsets of 0 or less");
    cr_assert_eq(rill_store_wait_offsets(s, "w", 0, NULL, 0), RILL_OK, "no partitions");
    int64_t t0 = now_ms();
    cr_assert_eq(rill_store_wait_offsets(s, "w", 2, want, 50), RILL_ETIMEDOUT);
    cr_assert_geq(now_ms() - t0, 50, "it waited out its timeout");

    void *txn = begin_write(s);
    cr_assert_eq(rill__state_put_offset(s, txn, "w", 0, 10), RILL_OK);
    commit_ok(s, txn);
    cr_assert_eq(rill_store_wait_offsets(s, "w", 2, want, 0), RILL_ETIMEDOUT,
                 "partition 1 has none stored");
    cr_assert_eq(rill_store_wait_offsets(s, "w", 1, want, 0), RILL_OK, "partition 0 is there");
    cr_assert_eq(rill_store_wait_offsets(s, "other", 1, want, 0), RILL_ETIMEDOUT,
                 "another topic's offsets are its own");

    /* Partition 1's offset is committed while the caller waits. */
    struct late_commit c = {.s = s};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, commit_later, &c), 0);
    t0 = now_ms();
    rill_err_t rc = rill_store_wait_offsets(s, "w", 2, want, 30000);
    int64_t waited = now_ms() - t0;
    pthread_join(th, NULL);
    cr_assert_eq(c.err, RILL_OK, "the late commit: %s", rill_err2str(c.err));
    cr_assert_eq(rc, RILL_OK, "the wait saw the late commit: %s", rill_err2str(rc));
    cr_assert_lt(waited, 20000, "it returned soon after the commit (%lld ms)", (long long)waited);
    cr_assert_eq(rill_store_wait_offsets(s, "w", 2, below, 0), RILL_OK,
                 "past the offsets is there");

    cr_assert_eq(rill_store_wait_offsets(NULL, "w", 2, want, 0), RILL_EINVAL);
    cr_assert_eq(rill_store_wait_offsets(s, NULL, 2, want, 0), RILL_EINVAL);
    cr_assert_eq(rill_store_wait_offsets(s, "w", 2, NULL, 0), RILL_EINVAL);
    cr_assert_eq(rill_store_wait_offsets(s, "w", -1, want, 0), RILL_EINVAL);
    cr_assert_eq(rill_store_wait_offsets(s, "w", 2, want, -1), RILL_EINVAL);
}

Test(state_store, wait_offsets_until_stored_or_timeout, .timeout = 60)
{
    each_backend(body_wait_offsets);
}

/* ------------------------------------------------------------ LMDB only */

Test(state_store, lmdb_survives_close_and_reopen)
{
    kit_t k;
    kit_open(&k, 1);
    void *txn = begin_write(k.s);
    rill_state_t st;
    view(&st, k.s, txn, "t", 7);
    cr_assert_eq(put_s(&st, "kept", "yes"), RILL_OK);
    cr_assert_eq(rill__state_put_offset(k.s, txn, "t", 7, 77), RILL_OK);
    commit_ok(k.s, txn);
    cr_assert_str_eq(rill_store_name(k.s), k.path);
    rill_store_close(k.s);
    k.s = open_lmdb(k.path, 0);
    char buf[16];
    cr_assert_str_eq(read_s(k.s, "t", 7, "kept", buf, sizeof buf), "yes");
    cr_assert_eq(offset_of(k.s, "t", 7), 77);
    kit_close(&k);
}

Test(state_store, lmdb_makes_its_directory)
{
    kit_t k;
    kit_dir(&k);
    k.lmdb = 1;
    char deep[192];
    snprintf(deep, sizeof deep, "%s/a/b/c", k.dir);
    k.s = open_lmdb(deep, 0);
    struct stat sb;
    cr_assert_eq(stat(deep, &sb), 0);
    rill_store_close(k.s);
    k.s = NULL;
    /* A file where the directory should be: RILL_EIO, with the path. */
    char file[192], err[512] = "";
    snprintf(file, sizeof file, "%s/plain", k.dir);
    FILE *f = fopen(file, "w");
    cr_assert_not_null(f);
    fclose(f);
    rill_store_t *s = NULL;
    cr_assert_eq(rill_store_open_lmdb(file, NULL, &s, err, sizeof err), RILL_EIO);
    cr_assert_not_null(strstr(err, file), "%s", err);
    kit_close(&k);
}

/* A child commits transaction 1, writes transaction 2 and is killed
 * before committing it: the store holds exactly transaction 1. */
Test(state_store, lmdb_kill_between_commits, .timeout = 60)
{
    kit_t k;
    kit_dir(&k);
    k.lmdb = 1;
    int ready[2];
    cr_assert_eq(pipe(ready), 0);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        close(ready[0]);
        rill_store_opts_t opts = {0}; /* flushed commits, as in production */
        rill_store_t *s;
        void *txn;
        rill_state_t st;
        if (rill_store_open_lmdb(k.path, &opts, &s, NULL, 0) || s->ops->begin(s, 1, &txn, NULL, 0))
            _exit(2);
        memset(&st, 0, sizeof st);
        st.store = s;
        st.txn = txn;
        st.prefix_len = rill__state_prefix(st.key, RILL__NS_STATE, "t", 0);
        if (rill_state_put(&st, "k", 1, "1", 1) || rill__state_put_offset(s, txn, "t", 0, 100) ||
            s->ops->commit(txn, NULL, 0) || s->ops->begin(s, 1, &txn, NULL, 0))
            _exit(3);
        st.txn = txn;
        char big[2048];
        memset(big, 'z', sizeof big);
        for (int i = 0; i < 200; i++) {
            char key[16];
            snprintf(key, sizeof key, "big%d", i);
            if (rill_state_put(&st, key, strlen(key), big, sizeof big))
                _exit(4);
        }
        if (rill_state_put(&st, "k", 1, "2", 1) || rill__state_put_offset(s, txn, "t", 0, 200) ||
            write(ready[1], "w", 1) != 1)
            _exit(5);
        for (;;)
            pause(); /* killed here, transaction 2 open */
    }
    close(ready[1]);
    int c = wait_byte(ready[0]);
    close(ready[0]);
    kill(pid, SIGKILL);
    int status = 0;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert_eq(c, 'w', "the child got to transaction 2 (exit status %d)",
                 WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

    k.s = open_lmdb(k.path, 0);
    char buf[16];
    cr_assert_str_eq(read_s(k.s, "t", 0, "k", buf, sizeof buf), "1");
    cr_assert_str_eq(read_s(k.s, "t", 0, "big0", buf, sizeof buf), "");
    cr_assert_eq(offset_of(k.s, "t", 0), 100);
    /* And the store writes again (LMDB recovered the dead writer's lock). */
    void *txn = begin_write(k.s);
    cr_assert_eq(rill__state_put_offset(k.s, txn, "t", 0, 101), RILL_OK);
    commit_ok(k.s, txn);
    cr_assert_eq(offset_of(k.s, "t", 0), 101);
    kit_close(&k);
}

Test(state_store, lmdb_map_full_is_efull_with_a_sentence)
{
    kit_t k;
    kit_dir(&k);
    k.lmdb = 1;
    k.s = open_lmdb(k.path, 64 * 1024);
    char big[3000], err[512] = "";
    memset(big, 'v', sizeof big);
    rill_err_t rc = RILL_OK;
    int committed = 0;
    for (int i = 0; i < 1000 && rc == RILL_OK; i++) {
        void *txn = begin_write(k.s);
        rill_state_t st;
        view(&st, k.s, txn, "t", 0);
        char key[16];
        snprintf(key, sizeof key, "k%04d", i);
        rc = rill_state_put(&st, key, strlen(key), big, sizeof big);
        if (rc != RILL_OK) {
            cr_assert_eq(rc, RILL_EFULL, "put: %s", rill_err2str(rc));
            /* The caller can only end the transaction; commit says why. */
            rc = k.s->ops->commit(txn, err, sizeof err);
            cr_assert_eq(rc, RILL_EFULL);
            break;
        }
        rc = k.s->ops->commit(txn, err, sizeof err);
        if (rc == RILL_OK)
            committed++;
    }
    cr_assert_eq(rc, RILL_EFULL, "the map filled up (%d commits)", committed);
    cr_assert_gt(committed, 0);
    cr_assert_not_null(strstr(err, k.path), "%s", err);
    cr_assert_not_null(strstr(err, "map_size"), "%s", err);
    cr_assert_not_null(strstr(err, "65536"), "%s", err);
    /* What was committed before is still there, and reads go on. */
    char buf[8];
    size_t len;
    cr_assert_eq(rill_store_read(k.s, "t", 0, "k0000", 5, buf, sizeof buf, &len), RILL_OK);
    cr_assert_eq(len, sizeof big);
    kit_close(&k);
}

Test(state_store, lmdb_corrupt_file_is_eio_with_the_path)
{
    kit_t k;
    kit_open(&k, 1);
    void *txn = begin_write(k.s);
    cr_assert_eq(rill__state_put_offset(k.s, txn, "t", 0, 1), RILL_OK);
    commit_ok(k.s, txn);
    rill_store_close(k.s);
    k.s = NULL;
    char data[192];
    snprintf(data, sizeof data, "%s/data.mdb", k.path);
    int fd = open(data, O_WRONLY);
    cr_assert_geq(fd, 0);
    char junk[16384];
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (char)(i * 131 + 7);
    cr_assert_eq(pwrite(fd, junk, sizeof junk, 0), (ssize_t)sizeof junk);
    close(fd);
    char err[512] = "";
    rill_store_t *s = NULL;
    cr_assert_eq(rill_store_open_lmdb(k.path, NULL, &s, err, sizeof err), RILL_EIO, "%s", err);
    cr_assert_null(s);
    cr_assert_not_null(strstr(err, k.path), "%s", err);
    /* The lock was given back: a failed open does not keep the store. */
    cr_assert_eq(rill_store_open_lmdb(k.path, NULL, &s, err, sizeof err), RILL_EIO, "%s", err);
    kit_close(&k);
}

Test(state_store, lmdb_locked_by_another_process, .timeout = 60)
{
    kit_t k;
    kit_dir(&k);
    k.lmdb = 1;
    int ready[2], release[2];
    cr_assert_eq(pipe(ready), 0);
    cr_assert_eq(pipe(release), 0);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        close(ready[0]);
        close(release[1]);
        rill_store_t *s;
        if (rill_store_open_lmdb(k.path, NULL, &s, NULL, 0))
            _exit(2);
        if (write(ready[1], "o", 1) != 1)
            _exit(3);
        char c;
        if (read(release[0], &c, 1) != 1) /* until the parent says, or dies */
            _exit(4);
        rill_store_close(s);
        _exit(0);
    }
    close(ready[1]);
    close(release[0]);
    int c = wait_byte(ready[0]);
    close(ready[0]);
    char err[512] = "", want[64];
    rill_store_t *s = NULL;
    rill_err_t rc = c == 'o' ? rill_store_open_lmdb(k.path, NULL, &s, err, sizeof err) : RILL_OK;
    cr_expect_eq(write(release[1], "x", 1), 1);
    close(release[1]);
    int status = 0;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert_eq(c, 'o', "the child opened the store");
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    cr_assert_eq(rc, RILL_EEXIST, "%s", err);
    cr_assert_null(s);
    snprintf(want, sizeof want, "locked by process %ld", (long)pid);
    cr_assert_not_null(strstr(err, want), "%s", err);
    cr_assert_not_null(strstr(err, k.path), "%s", err);
    /* The child closed the store: it is free again. */
    k.s = open_lmdb(k.path, 0);
    kit_close(&k);
}

Test(state_store, lmdb_second_open_in_this_process)
{
    kit_t k;
    kit_open(&k, 1);
    char err[512] = "", want[64];
    rill_store_t *s = NULL;
    cr_assert_eq(rill_store_open_lmdb(k.path, NULL, &s, err, sizeof err), RILL_EEXIST);
    cr_assert_null(s);
    snprintf(want, sizeof want, "locked by process %ld", (long)getpid());
    cr_assert_not_null(strstr(err, want), "%s", err);
    rill_store_close(k.s);
    k.s = open_lmdb(k.path, 0);
    kit_close(&k);
}
