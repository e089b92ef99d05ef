#include "state_kit.h"

#include <ftw.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rtest.h"

rill_err_t sk_add_u64(rill_state_t *st, const char *key, uint64_t v)
{
    uint64_t cur = 0;
    const void *p;
    size_t len;
    if (rill_state_get(st, key, strlen(key), &p, &len) == RILL_OK && len == sizeof(cur))
        memcpy(&cur, p, sizeof(cur));
    cur += v;
    return rill_state_put(st, key, strlen(key), &cur, sizeof(cur));
}

rill_err_t sk_count_record(void *opaque, rill_state_t *st, rill_elem_t *in, rill_emitter_t *out)
{
    (void)out;
    sk_counter_t *c = opaque;
    uint64_t call = atomic_fetch_add(&c->calls, 1) + 1;
    int at = atomic_load(&c->fail_at_call);
    if (at && call == (uint64_t)at) {
        atomic_store(&c->fail_at_call, 0);
        rill_elem_release(in);
        return RILL_EINVAL; /* fails the stage: the transaction is aborted */
    }
    const rd_kafka_message_t *m = rill_record(in);
    rill_err_t err = sk_add_u64(st, "n", 1);
    if (!err)
        err = sk_add_u64(st, "sum", (uint64_t)m->offset);
    rill_elem_release(in);
    return err;
}

uint64_t sk_read_u64(rill_store_t *s, const char *topic, int p, const char *key)
{
    uint64_t v = 0;
    size_t len = 0;
    rill_err_t e = rill_store_read(s, topic, p, key, strlen(key), &v, sizeof(v), &len);
    cr_assert(e == RILL_OK || e == RILL_ENOENT, "read %s: %s", key, rill_err2str(e));
    return e == RILL_OK ? v : 0;
}

int64_t sk_stored_offset(rill_store_t *s, const char *topic, int p)
{
    int64_t o = -1;
    rill_err_t e = rill_store_offset(s, topic, p, &o);
    cr_assert(e == RILL_OK || e == RILL_ENOENT, "offset: %s", rill_err2str(e));
    return e == RILL_OK ? o : -1;
}

int sk_all_stored(rill_store_t *s, const char *topic, int parts, int64_t want)
{
    for (int p = 0; p < parts; p++)
        if (sk_stored_offset(s, topic, p) != want)
            return 0;
    return 1;
}

rill_store_t *sk_open_store(sk_backend_t b, const char *name, char *dir)
{
    rill_store_t *s = NULL;
    char err[512] = "";
    if (b == SK_MEM) {
        cr_assert_eq(rill_store_open_memory(name, &s, err, sizeof(err)), RILL_OK, "%s", err);
    } else {
        int n = snprintf(dir, SK_DIR_SIZE, "/tmp/rill-%s-XXXXXX", name);
        cr_assert(n > 0 && n < SK_DIR_SIZE, "store name too long: %s", name);
        cr_assert_not_null(mkdtemp(dir));
        cr_assert_eq(rill_store_open_lmdb(dir, NULL, &s, err, sizeof(err)), RILL_OK, "%s", err);
    }
    return s;
}

void sk_close_store(rill_store_t *s, sk_backend_t b, const char *dir)
{
    rill_store_close(s);
    if (b == SK_LMDB)
        sk_rm_rf(dir);
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void sk_rm_rf(const char *dir)
{
    cr_assert_eq(nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS), 0, "remove %s", dir);
}
