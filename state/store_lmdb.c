/*
 * The LMDB store backend: one environment in a directory, its unnamed
 * database, keys in LMDB's default order (memcmp, then the shorter
 * first), which is the order state_int.h promises.
 *
 * MDB_NOTLS: read transactions are not tied to the thread that began
 * them, so any thread may read. A write transaction holds LMDB's writer
 * mutex, so it begins and ends on one thread (state_int.h).
 *
 * One process owns a store: an exclusive flock on rill.lock in the
 * directory, taken before the environment opens and kept until it
 * closes. flock belongs to the open file description, so a second open
 * in the same process is refused as well; LMDB itself would allow it and
 * then misbehave (two environments on one file in a process break its
 * locking).
 */
#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../actors/util.h"
#include "state_int.h"

#define LMDB_DEFAULT_MAP_SIZE (1ULL << 30)
#define LMDB_LOCK_FILE        "rill.lock"

typedef struct lmdb_store {
    rill_store_t *store;
    MDB_env *env;
    MDB_dbi dbi;
    int lock_fd;
} lmdb_store_t;

typedef struct lmdb_txn {
    lmdb_store_t *l;
    MDB_txn *txn;
    int write;
    int full; /* a put or delete found the map full: commit refuses */
    /* A write transaction reads through a cursor of its own (LMDB closes
     * it with the transaction), left on the key it found: a put of that
     * key right after (a counter, an aggregate) replaces it there
     * (MDB_CURRENT) without searching the tree again. memo_kl 0: the
     * cursor is on no key a put may use. */
    MDB_cursor *cur;
    size_t memo_kl;
    uint8_t memo_key[RILL__ENCODED_KEY_MAX];
} lmdb_txn_t;

/* LMDB's errors that mean the file is not a sound LMDB file. */
static int is_corrupt(int rc)
{
    return rc == MDB_INVALID || rc == MDB_CORRUPTED || rc == MDB_VERSION_MISMATCH ||
           rc == MDB_PAGE_NOTFOUND;
}

static rill_err_t lmdb_err(int rc)
{
    if (rc == MDB_NOTFOUND)
        return RILL_ENOENT;
    if (rc == MDB_MAP_FULL || rc == MDB_TXN_FULL)
        return RILL_EFULL;
    if (rc == ENOMEM)
        return RILL_ENOMEM;
    if (rc == MDB_BAD_VALSIZE || rc == EINVAL)
        return RILL_EINVAL;
    return RILL_EIO;
}

static uint64_t map_size(lmdb_store_t *l)
{
    MDB_envinfo info;
    if (mdb_env_info(l->env, &info))
        return 0;
    return (uint64_t)info.me_mapsize;
}

static rill_err_t full_error(lmdb_store_t *l, char *errstr, size_t errstr_size)
{
    return rill__fail(RILL_EFULL, errstr, errstr_size,
                      "store %s is full: its map of %llu bytes has no room for the transaction; "
                      "raise rill_store_opts_t.map_size",
                      l->store->name, (unsigned long long)map_size(l));
}

/* A sentence for an LMDB failure: full, corrupt, or what the system said;
 * `what` is the step, as in "while <what>". */
static rill_err_t fail_rc(lmdb_store_t *l, int rc, const char *what, char *errstr,
                          size_t errstr_size)
{
    if (rc == MDB_MAP_FULL || rc == MDB_TXN_FULL)
        return full_error(l, errstr, errstr_size);
    if (is_corrupt(rc))
        return rill__fail(RILL_EIO, errstr, errstr_size,
                          "store %s is corrupt or not an LMDB store (seen while %s): %s",
                          l->store->name, what, mdb_strerror(rc));
    return rill__fail(lmdb_err(rc) == RILL_ENOMEM ? RILL_ENOMEM : RILL_EIO, errstr, errstr_size,
                      "store %s: failed while %s: %s", l->store->name, what, mdb_strerror(rc));
}

/* ------------------------------------------------------------ transactions */

static rill_err_t lmdb_begin(rill_store_t *s, int write, void **txn, char *errstr,
                             size_t errstr_size)
{
    lmdb_store_t *l = s->impl;
    lmdb_txn_t *t = calloc(1, sizeof *t);
    if (!t)
        return rill__fail(RILL_ENOMEM, errstr, errstr_size, "store %s: out of memory", s->name);
    int rc = mdb_txn_begin(l->env, NULL, write ? 0 : MDB_RDONLY, &t->txn);
    if (rc) {
        free(t);
        return fail_rc(l, rc,
                       write ? "beginning a write transaction" : "beginning a read transaction",
                       errstr, errstr_size);
    }
    t->l = l;
    t->write = write;
    *txn = t;
    return RILL_OK;
}

static rill_err_t lmdb_get(void *txn, const void *k, size_t kl, const void **v, size_t *vl)
{
    lmdb_txn_t *t = txn;
    MDB_val key = {.mv_size = kl, .mv_data = (void *)k}, val;
    int rc;
    t->memo_kl = 0;
    if (t->write && kl <= sizeof t->memo_key &&
        (t->cur || !mdb_cursor_open(t->txn, t->l->dbi, &t->cur))) {
        rc = mdb_cursor_get(t->cur, &key, &val, MDB_SET_KEY);
        if (!rc) {
            memcpy(t->memo_key, k, kl);
            t->memo_kl = kl;
        }
    } else {
        rc = mdb_get(t->txn, t->l->dbi, &key, &val);
    }
    if (rc)
        return lmdb_err(rc);
    *v = val.mv_data;
    *vl = val.mv_size;
    return RILL_OK;
}

static rill_err_t lmdb_put(void *txn, const void *k, size_t kl, const void *v, size_t vl)
{
    lmdb_txn_t *t = txn;
    if (!t->write)
        return RILL_EINVAL;
    MDB_val key = {.mv_size = kl, .mv_data = (void *)k};
    MDB_val val = {.mv_size = vl, .mv_data = (void *)v};
    int at = t->memo_kl == kl && memcmp(t->memo_key, k, kl) == 0;
    t->memo_kl = 0; /* a write moves what the cursor is on */
    int rc = at ? mdb_cursor_put(t->cur, &key, &val, MDB_CURRENT)
                : mdb_put(t->txn, t->l->dbi, &key, &val, 0);
    if (rc == MDB_MAP_FULL || rc == MDB_TXN_FULL)
        t->full = 1;
    return rc ? lmdb_err(rc) : RILL_OK;
}

static rill_err_t lmdb_del(void *txn, const void *k, size_t kl)
{
    lmdb_txn_t *t = txn;
    if (!t->write)
        return RILL_EINVAL;
    MDB_val key = {.mv_size = kl, .mv_data = (void *)k};
    t->memo_kl = 0;
    int rc = mdb_del(t->txn, t->l->dbi, &key, NULL);
    if (rc == MDB_MAP_FULL || rc == MDB_TXN_FULL)
        t->full = 1;
    return rc ? lmdb_err(rc) : RILL_OK;
}

static int key_cmp(const void *a, size_t al, const void *b, size_t bl)
{
    int c = memcmp(a, b, al < bl ? al : bl);
    if (c)
        return c;
    return al < bl ? -1 : al > bl;
}

static rill_err_t lmdb_scan(void *txn, const void *from, size_t fl, const void *to, size_t tl,
                            rill__scan_fn *fn, void *opaque)
{
    lmdb_txn_t *t = txn;
    MDB_cursor *c;
    int rc = mdb_cursor_open(t->txn, t->l->dbi, &c);
    if (rc)
        return lmdb_err(rc);
    MDB_val key = {.mv_size = fl, .mv_data = (void *)from}, val;
    rc = mdb_cursor_get(c, &key, &val, from ? MDB_SET_RANGE : MDB_FIRST);
    while (rc == 0) {
        if (to && key_cmp(key.mv_data, key.mv_size, to, tl) >= 0)
            break;
        if (fn(opaque, key.mv_data, key.mv_size, val.mv_data, val.mv_size))
            break;
        rc = mdb_cursor_get(c, &key, &val, MDB_NEXT);
    }
    mdb_cursor_close(c);
    return rc == 0 || rc == MDB_NOTFOUND ? RILL_OK : lmdb_err(rc);
}

static rill_err_t lmdb_commit(void *txn, char *errstr, size_t errstr_size)
{
    lmdb_txn_t *t = txn;
    lmdb_store_t *l = t->l;
    rill_err_t err = RILL_OK;
    if (t->full) {
        /* LMDB marked the transaction failed: it can only be aborted. */
        mdb_txn_abort(t->txn);
        err = full_error(l, errstr, errstr_size);
    } else {
        int rc = mdb_txn_commit(t->txn); /* frees the transaction, also on error */
        if (rc)
            err = fail_rc(l, rc, "committing", errstr, errstr_size);
    }
    free(t);
    return err;
}

static void lmdb_abort(void *txn)
{
    lmdb_txn_t *t = txn;
    mdb_txn_abort(t->txn);
    free(t);
}

static uint64_t lmdb_bytes(rill_store_t *s)
{
    lmdb_store_t *l = s->impl;
    MDB_envinfo info;
    MDB_stat st;
    if (mdb_env_info(l->env, &info) || mdb_env_stat(l->env, &st))
        return 0;
    return ((uint64_t)info.me_last_pgno + 1) * st.ms_psize;
}

static void lmdb_close(rill_store_t *s)
{
    lmdb_store_t *l = s->impl;
    mdb_env_close(l->env);
    close(l->lock_fd); /* releases the flock */
    free(l);
    s->impl = NULL;
}

static const rill__store_ops_t lmdb_ops = {
    .name = "lmdb",
    .begin = lmdb_begin,
    .get = lmdb_get,
    .put = lmdb_put,
    .del = lmdb_del,
    .scan = lmdb_scan,
    .commit = lmdb_commit,
    .abort = lmdb_abort,
    .bytes = lmdb_bytes,
    .close = lmdb_close,
};

/* ------------------------------------------------------------ opening */

/* mkdir -p path; then path must be a directory. */
static rill_err_t make_dir(const char *path, char *errstr, size_t errstr_size)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0755) && errno != EEXIST)
            return rill__fail(RILL_EIO, errstr, errstr_size, "store %s: cannot make %s: %s", path,
                              buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0755) && errno != EEXIST)
        return rill__fail(RILL_EIO, errstr, errstr_size, "store %s: cannot make the directory: %s",
                          path, strerror(errno));
    struct stat st;
    if (stat(path, &st))
        return rill__fail(RILL_EIO, errstr, errstr_size, "store %s: cannot read it: %s", path,
                          strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return rill__fail(RILL_EIO, errstr, errstr_size, "store %s: not a directory", path);
    return RILL_OK;
}

/* Take the store's lock file, or say which process holds it. On success
 * *fd holds the lock and the file holds this process's pid. */
static rill_err_t take_lock(const char *path, int *fd, char *errstr, size_t errstr_size)
{
    char file[256 + sizeof LMDB_LOCK_FILE + 1];
    snprintf(file, sizeof file, "%s/%s", path, LMDB_LOCK_FILE);
    int f = open(file, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (f < 0)
        return rill__fail(RILL_EIO, errstr, errstr_size, "store %s: cannot open %s: %s", path, file,
                          strerror(errno));
    if (flock(f, LOCK_EX | LOCK_NB)) {
        int e = errno;
        char pid[32] = "";
        ssize_t n = e == EWOULDBLOCK ? pread(f, pid, sizeof pid - 1, 0) : -1;
        close(f);
        if (e != EWOULDBLOCK)
            return rill__fail(RILL_EIO, errstr, errstr_size, "store %s: cannot lock %s: %s", path,
                              file, strerror(e));
        pid[n > 0 ? n : 0] = '\0';
        pid[strcspn(pid, "\n")] = '\0';
        /* The owner writes its pid right after it takes the lock: an
         * empty file is an owner between the two. */
        return rill__fail(RILL_EEXIST, errstr, errstr_size, "store %s is locked by process %s",
                          path, *pid ? pid : "(starting, pid not written yet)");
    }
    char pid[32];
    int len = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(f, 0) || pwrite(f, pid, (size_t)len, 0) != len) {
        int e = errno;
        close(f);
        return rill__fail(RILL_EIO, errstr, errstr_size, "store %s: cannot write %s: %s", path,
                          file, strerror(e));
    }
    *fd = f;
    return RILL_OK;
}

/* The environment and its database; on failure nothing is left open. */
static rill_err_t open_env(lmdb_store_t *l, const char *path, const rill_store_opts_t *opts,
                           char *errstr, size_t errstr_size)
{
    int rc = mdb_env_create(&l->env);
    if (rc)
        return fail_rc(l, rc, "creating the environment", errstr, errstr_size);
    uint64_t size = opts->map_size ? opts->map_size : LMDB_DEFAULT_MAP_SIZE;
    rc = mdb_env_set_mapsize(l->env, (size_t)size);
    if (!rc)
        rc = mdb_env_open(l->env, path, MDB_NOTLS | (opts->no_sync ? MDB_NOSYNC : 0), 0644);
    if (rc) {
        rill_err_t err = fail_rc(l, rc, "opening it", errstr, errstr_size);
        mdb_env_close(l->env);
        return err;
    }
    MDB_txn *txn;
    rc = mdb_txn_begin(l->env, NULL, 0, &txn);
    if (!rc) {
        rc = mdb_dbi_open(txn, NULL, 0, &l->dbi);
        if (rc)
            mdb_txn_abort(txn);
        else
            rc = mdb_txn_commit(txn);
    }
    if (rc) {
        rill_err_t err = fail_rc(l, rc, "opening its database", errstr, errstr_size);
        mdb_env_close(l->env);
        return err;
    }
    return RILL_OK;
}

rill_err_t rill__store_lmdb_init(rill_store_t *s, const char *path, const rill_store_opts_t *opts,
                                 char *errstr, size_t errstr_size)
{
    lmdb_store_t *l = calloc(1, sizeof *l);
    if (!l)
        return rill__fail(RILL_ENOMEM, errstr, errstr_size, "store %s: out of memory", path);
    l->store = s;
    l->lock_fd = -1;
    rill_err_t err = make_dir(path, errstr, errstr_size);
    if (!err)
        err = take_lock(path, &l->lock_fd, errstr, errstr_size);
    if (!err)
        err = open_env(l, path, opts, errstr, errstr_size);
    if (err) {
        if (l->lock_fd >= 0)
            close(l->lock_fd);
        free(l);
        return err;
    }
    s->ops = &lmdb_ops;
    s->impl = l;
    return RILL_OK;
}
