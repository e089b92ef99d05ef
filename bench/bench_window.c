/*
 * bench_window: a windowed count per key through rill (Kafka source ->
 * window stage -> sink) against a raw librdkafka loop with a hash map, over
 * the same records in the same run, alternating; and what a store commit
 * per batch costs (rill's stateful stage over the memory store, over LMDB
 * with fsync, over LMDB without).
 *
 * The data: RECORDS records of VALUE bytes over KEYS keys ("key-<k>", key
 * k in partition k % PARTITIONS), written once to a topic of PARTITIONS
 * partitions on a `rill-broker` process. Record seq has key seq % KEYS and
 * timestamp T0 + seq * WINDOWS * 60 s / (records): the timestamps rise
 * through WINDOWS tumbling windows of 60 s. The last record of each
 * partition is a closing record (key "close", a timestamp one window
 * after the data): its stream time closes every window of the data on
 * both sides, so every (key, window) has its final result by the end.
 * Windows close by stream time only (rill: wall_close_ms UINT64_MAX,
 * grace 0): the timestamps lie in the past, and a wall-clock close would
 * close windows before their records came.
 *
 * Lines:
 *   window_count       rill: rill_kafka_source (executor 0) ->
 *                      rill_stage_window (tumbling 60 s by record
 *                      timestamp, a uint64_t count, emit-final, memory
 *                      store, commit defaults: every 1,000 records or
 *                      100 ms) on executor 1 -> rill_sink_foreach taking
 *                      the final results, same executor; the source uses
 *                      the store (rill_consumer_conf_use_store) and
 *                      commits to Kafka with its defaults (async every
 *                      1,000 confirms, at most one unanswered).
 *                      baseline: one thread, rd_kafka_consume_batch_queue
 *                      (what the queue holds, up to BATCH records; when it
 *                      is empty, a wait for the first), per partition a small set of
 *                      open windows, each an open-addressing hash map
 *                      (linear probing, load <= 1/2, 64-byte slots with the
 *                      key inline, a 64-bit multiplicative hash) keyed by
 *                      the record key: together a map keyed by (partition,
 *                      key, window start); rill's window assignment
 *                      (start = t - t mod 60 s), stream time per partition
 *                      and close rule (stream time > end + grace); a closed
 *                      window's final results go to the same check as
 *                      rill's sink gets, then the map is cleared for
 *                      reuse; each batch's last offset per partition
 *                      stored (rd_kafka_offset_store) after the batch,
 *                      async commits every 1,000 records with at most one
 *                      unanswered (bench_committer_t), a sync commit at
 *                      the end. Throughput and CPU per 1,000 records
 *                      (window_count_cost).
 *   window_count_lmdb  the same over an LMDB store with fsync (no_sync 0),
 *                      commit_count 1000; the baseline makes the same
 *                      promise: every 1,000 records one LMDB transaction
 *                      (an environment opened as rill opens its own:
 *                      MDB_NOTLS, fsync at commit, 1 GiB map) writes the
 *                      entries its hash maps changed since the last one,
 *                      deletes the windows that closed, and writes each
 *                      touched partition's next offset and stream time;
 *                      only after that commit are those records' offsets
 *                      stored for Kafka. Throughput and CPU
 *                      (window_count_lmdb_cost).
 *   store_commit_cost  rill alone: rill_stage_stateful counting per key
 *                      (get, increment, put) over LMDB with fsync, commit
 *                      count 1000, against the same over the memory store:
 *                      CPU per record, ratio LMDB / memory (the goal: <= 1.2).
 *                      store_commit_cost_nosync: LMDB with no_sync against
 *                      memory.
 *
 * Both clocks start before their client is made (stores are opened
 * before, untimed) and stop when every input offset is committed to Kafka
 * (raw: its final sync commit returned; rill: the source's commit
 * callback saw every offset, and for the window lines the sink had every
 * final result). This process's CPU time (getrusage, librdkafka's threads
 * included) is the client's alone: the broker is another process.
 * Each run of each side reads every partition from offset 0 under a fresh
 * group and a fresh store (LMDB: a new directory under /tmp, removed after).
 *
 * Checks after each run (untimed), on every side: every (key, window) of
 * the data got exactly one final result whose count is the count computed
 * from the generator (window lines), or every key's stored count is its
 * number of records (store_commit_cost); the store's offsets (rill, raw
 * LMDB) and the group's committed Kafka offsets (read back with a fresh
 * client) are the partitions' end offsets. A failed check prints why and
 * makes the exit status 1.
 *
 * Sizes from the environment: BENCH_RECORDS (default 300000, a multiple of
 * 1,000 so that the last store transaction and Kafka commit come by count,
 * not by a timer), BENCH_KEYS (10000), BENCH_PARTITIONS (8), BENCH_WINDOWS
 * (5), BENCH_RUNS (7: a side's run takes 0.2 to 2 s, and with librdkafka
 * 2.0.2 one in five or so loses ~0.9 s to the fetcher, which looks at a
 * partition again only about a second after its queue passed
 * queued.max.messages.kbytes; 7 runs keep the medians off those).
 * Experiments (the reported runs set none of these):
 * BENCH_ONLY=<side> runs that side alone (raw, rill, raw_lmdb, rill_lmdb,
 * sf_mem, sf_lmdb, sf_nosync); BENCH_NO_NOSYNC=1 leaves out sf_nosync;
 * BENCH_EX_CONSUMER, BENCH_EX_STAGE, BENCH_EX_SINK place rill's stages;
 * BENCH_RAW_CONF and BENCH_RILL_CONSUMER_CONF="key=value,..." add client
 * properties; BENCH_VERBOSE=1 prints every check; BENCH_TRACE=1 prints
 * where the raw loop's time went (reading, LMDB commits, polls that
 * waited over 10 ms, the drain of the async commits, the final commit).
 *
 * usage: bench_window [path to rill-broker, default: next to this binary]
 */
#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/vfs.h>
#include <time.h>

#include <rill/rill.h>
#include <rill/state.h>
#include <rill/testkit.h>

#include "bench_util.h"

#define TOPIC          "win"
#define VALUE          100
#define MAX_PARTITIONS 64
#define MAX_RUNS       20
#define BATCH          1024  /* records per rd_kafka_consume_batch_queue call */
#define COMMIT_EVERY   1000  /* rill's default rill.commit.count and commit_count */
#define WINDOW_MS      60000 /* tumbling windows of 60 s */
#define GRACE_MS       0     /* rill's default grace */
#define KEY_INLINE     48    /* the baseline's inline key bytes (a 64-byte slot) */
#define CLOSE_KEY      "close"
#define MAP_SIZE       (1ULL << 30) /* rill's default LMDB map size */
#define WAIT_S         300          /* the longest a rill run may take */
/* 2026-01-01T00:00:00Z, a multiple of the window size. */
#define T0             INT64_C(1767225600000)

static void die(const char *what, const char *why)
{
    fprintf(stderr, "bench_window: %s: %s\n", what, why);
    exit(1);
}

/* ---- the data and what it must give ---- */

static uint64_t n_records; /* all records, the closing ones included */
static uint64_t n_data;    /* the records of the data (n_records - partitions) */
static int n_keys, n_parts, n_windows;
static int64_t ends[MAX_PARTITIONS]; /* the partitions' end offsets */
static uint32_t *expect;             /* [key * n_windows + window]: records */
static uint64_t *expect_key;         /* [key]: records of the key (all windows) */
static uint64_t expect_finals;       /* (key, window) pairs with records */

static int64_t data_ts(uint64_t seq)
{
    return T0 + (int64_t)(seq * (uint64_t)n_windows * WINDOW_MS / n_data);
}

static int key_of(uint64_t seq)
{
    return (int)(seq % (uint64_t)n_keys);
}

static int part_of(int key)
{
    return key % n_parts;
}

static void compute_expected(void)
{
    expect = calloc((size_t)n_keys * (size_t)n_windows, sizeof(*expect));
    expect_key = calloc((size_t)n_keys, sizeof(*expect_key));
    if (!expect || !expect_key)
        die("expected counts", "out of memory");
    for (uint64_t seq = 0; seq < n_data; seq++) {
        int k = key_of(seq);
        int w = (int)((data_ts(seq) - T0) / WINDOW_MS);
        if (!expect[(size_t)k * (size_t)n_windows + (size_t)w]++)
            expect_finals++;
        expect_key[k]++;
    }
}

/* Writes the data, then one closing record per partition. */
static void produce_data(const char *boot)
{
    enum { CHUNK = 50000 };
    rill_testkit_record_t *recs = calloc(CHUNK, sizeof(*recs));
    char(*keys)[24] = calloc(CHUNK, sizeof(*keys));
    char(*vals)[VALUE] = calloc(CHUNK, sizeof(*vals));
    if (!recs || !keys || !vals)
        die("produce", "out of memory");
    char err[512];
    rill_testkit_opts_t po = {.timeout_ms = 300000};
    for (uint64_t seq = 0; seq < n_records;) {
        size_t c = 0;
        for (; c < CHUNK && seq < n_records; c++, seq++) {
            int closing = seq >= n_data;
            int k = closing ? 0 : key_of(seq);
            int32_t p = closing ? (int32_t)(seq - n_data) : part_of(k);
            int64_t ts = closing ? T0 + (int64_t)(n_windows + 1) * WINDOW_MS : data_ts(seq);
            if (closing)
                snprintf(keys[c], sizeof(keys[c]), CLOSE_KEY);
            else
                snprintf(keys[c], sizeof(keys[c]), "key-%d", k);
            int len = snprintf(vals[c], VALUE, "seq=%" PRIu64 " key=%s ", seq, keys[c]);
            memset(vals[c] + len, '.', (size_t)(VALUE - len));
            recs[c] = (rill_testkit_record_t){.partition = p,
                                              .offset = -1,
                                              .timestamp = ts,
                                              .key = keys[c],
                                              .key_len = strlen(keys[c]),
                                              .value = vals[c],
                                              .value_len = VALUE};
        }
        if (rill_testkit_produce(boot, TOPIC, recs, c, &po, err, sizeof(err)))
            die("produce", err);
    }
    free(recs);
    free(keys);
    free(vals);
}

/* The partitions' end offsets: every record written must be there. */
static void read_ends(const char *boot)
{
    bench_end_offsets("bench_window", boot, TOPIC, n_parts, ends);
    int64_t sum = 0;
    for (int p = 0; p < n_parts; p++)
        sum += ends[p];
    if (sum != (int64_t)n_records)
        die("end offsets", "the topic does not hold every record written");
}

/* The final results a side made, per (key, window). Written by one
 * thread (the raw loop, or rill's sink), read after it ended. */
typedef struct tally {
    uint32_t *count; /* the count of the last final result */
    uint8_t *finals; /* final results (saturating) */
    uint64_t strangers;
} tally_t;

static void tally_init(tally_t *t)
{
    size_t slots = (size_t)n_keys * (size_t)n_windows;
    t->count = calloc(slots, sizeof(*t->count));
    t->finals = calloc(slots, 1);
    t->strangers = 0;
    if (!t->count || !t->finals)
        die("tally", "out of memory");
}

static void tally_free(tally_t *t)
{
    free(t->count);
    free(t->finals);
}

/* The key number of "key-<k>", -1 for another key. */
static int parse_key(const void *key, size_t len)
{
    const char *s = key;
    if (len < 5 || len > 14 || memcmp(s, "key-", 4))
        return -1;
    long k = 0;
    for (size_t i = 4; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        k = k * 10 + (s[i] - '0');
    }
    return k < n_keys ? (int)k : -1;
}

static void tally_add(tally_t *t, const void *key, size_t len, int64_t start, uint64_t count)
{
    int k = parse_key(key, len);
    int64_t w = (start - T0) / WINDOW_MS;
    if (k < 0 || start < T0 || (start - T0) % WINDOW_MS || w >= n_windows) {
        t->strangers++; /* the closing records' windows never close */
        return;
    }
    size_t i = (size_t)k * (size_t)n_windows + (size_t)w;
    t->count[i] = (uint32_t)count;
    if (t->finals[i] < UINT8_MAX)
        t->finals[i]++;
}

/* Every (key, window) of the data had one final result with its count. */
static int tally_check(const tally_t *t, const char *side, char *why, size_t why_size)
{
    uint64_t missing = 0, wrong = 0, dups = 0, spurious = 0;
    for (size_t i = 0; i < (size_t)n_keys * (size_t)n_windows; i++) {
        if (!expect[i]) {
            spurious += t->finals[i] != 0;
            continue;
        }
        missing += !t->finals[i];
        dups += t->finals[i] > 1;
        wrong += t->finals[i] && t->count[i] != expect[i];
    }
    int ok = !missing && !wrong && !dups && !spurious && !t->strangers;
    snprintf(why, why_size,
             "%s: %" PRIu64 " windows expected, %" PRIu64 " without a final result, %" PRIu64
             " with a wrong count, %" PRIu64 " with several, %" PRIu64 " spurious, %" PRIu64
             " of other keys",
             side, expect_finals, missing, wrong, dups, spurious, t->strangers);
    return ok;
}

/* ---- LMDB directories under /tmp ---- */

static char lmdb_dir[64]; /* the directory in use, removed at exit too */

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

static void lmdb_dir_remove(void)
{
    if (lmdb_dir[0])
        nftw(lmdb_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    lmdb_dir[0] = 0;
}

static const char *lmdb_dir_make(void)
{
    lmdb_dir_remove();
    snprintf(lmdb_dir, sizeof(lmdb_dir), "/tmp/bench-window-XXXXXX");
    if (!mkdtemp(lmdb_dir))
        die("mkdtemp /tmp/bench-window-XXXXXX", strerror(errno));
    return lmdb_dir;
}

/* What /tmp is: fsync on tmpfs costs nothing, so say it. */
static const char *tmp_fs(void)
{
    struct statfs s;
    if (statfs("/tmp", &s))
        return "unknown";
    switch ((unsigned long)s.f_type) {
    case 0xEF53UL:
        return "ext4";
    case 0x58465342UL:
        return "xfs";
    case 0x9123683EUL:
        return "btrfs";
    case 0x01021994UL:
        return "tmpfs (fsync costs nothing)";
    case 0x794C7630UL:
        return "overlayfs";
    default:
        return "another filesystem";
    }
}

/* ---- the baseline: raw librdkafka, a hash map per open window ---- */

typedef struct slot {
    uint64_t count;
    uint32_t hash;
    uint8_t used, dirty, stored, klen; /* stored: in LMDB (durable mode) */
    char key[KEY_INLINE];
} slot_t;

typedef struct wmap {
    slot_t *slots;
    uint32_t cap, used; /* cap: a power of two */
    int64_t start;      /* the window's start */
    int open;
    uint32_t *dirty; /* durable mode: slots changed since the last LMDB commit */
    uint32_t n_dirty, dirty_cap;
} wmap_t;

typedef struct rpart {
    wmap_t *win; /* open windows first come, closed ones are kept for reuse */
    int n_win;
    int64_t stream_time; /* INT64_MIN: none yet */
    int64_t next_close;  /* the earliest end + grace of an open window */
    int64_t last;        /* the last offset processed, -1: none */
    int64_t stored;      /* the last offset whose state is committed (durable) */
} rpart_t;

typedef struct raw {
    rpart_t parts[MAX_PARTITIONS];
    tally_t *tally;
    uint64_t late;
    /* durable mode */
    MDB_env *env;
    MDB_dbi dbi;
    uint8_t *dels; /* closed windows' keys to delete, each [len (1)][key] */
    size_t n_dels, dels_cap;
} raw_t;

static uint64_t hash_key(const void *key, size_t len)
{
    const uint8_t *p = key;
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ len;
    while (len >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        h = (h ^ v) * 0xBF58476D1CE4E5B9ULL;
        h ^= h >> 31;
        p += 8;
        len -= 8;
    }
    uint64_t v = 0;
    memcpy(&v, p, len);
    h = (h ^ v) * 0x94D049BB133111EBULL;
    return h ^ (h >> 29);
}

static void wmap_dirty(wmap_t *m, uint32_t i)
{
    if (m->n_dirty == m->dirty_cap) {
        m->dirty_cap = m->dirty_cap ? m->dirty_cap * 2 : 1024;
        m->dirty = realloc(m->dirty, m->dirty_cap * sizeof(*m->dirty));
        if (!m->dirty)
            die("raw", "out of memory");
    }
    m->dirty[m->n_dirty++] = i;
}

static void wmap_grow(wmap_t *m, int durable)
{
    uint32_t cap = m->cap ? m->cap * 2 : 1024;
    slot_t *s = calloc(cap, sizeof(*s));
    if (!s)
        die("raw", "out of memory");
    for (uint32_t i = 0; i < m->cap; i++) {
        if (!m->slots[i].used)
            continue;
        uint32_t j = m->slots[i].hash & (cap - 1);
        while (s[j].used)
            j = (j + 1) & (cap - 1);
        s[j] = m->slots[i];
    }
    free(m->slots);
    m->slots = s;
    m->cap = cap;
    if (durable) { /* the dirty list named the old slots */
        m->n_dirty = 0;
        for (uint32_t i = 0; i < cap; i++)
            if (s[i].dirty)
                wmap_dirty(m, i);
    }
}

/* The key's slot, made (count 0) if it is not there. */
static slot_t *wmap_get(wmap_t *m, const void *key, size_t len, int durable, uint32_t *index)
{
    if ((m->used + 1) * 2 > m->cap)
        wmap_grow(m, durable);
    uint32_t h = (uint32_t)hash_key(key, len);
    uint32_t i = h & (m->cap - 1);
    for (;;) {
        slot_t *s = &m->slots[i];
        if (!s->used) {
            s->used = 1;
            s->hash = h;
            s->klen = (uint8_t)len;
            memcpy(s->key, key, len);
            m->used++;
            *index = i;
            return s;
        }
        if (s->hash == h && s->klen == len && !memcmp(s->key, key, len)) {
            *index = i;
            return s;
        }
        i = (i + 1) & (m->cap - 1);
    }
}

/* LMDB keys of the baseline: [partition (4, big endian)][window start (8,
 * big endian)][key] -> count; [0xFF][0xFF][partition (4)] -> next offset and
 * stream time. */
static size_t state_key(uint8_t *out, int32_t p, int64_t start, const void *key, size_t len)
{
    uint32_t up = (uint32_t)p;
    uint64_t us = (uint64_t)start;
    for (int i = 0; i < 4; i++)
        out[i] = (uint8_t)(up >> (24 - 8 * i));
    for (int i = 0; i < 8; i++)
        out[4 + i] = (uint8_t)(us >> (56 - 8 * i));
    memcpy(out + 12, key, len);
    return 12 + len;
}

static void offset_key(uint8_t out[6], int32_t p)
{
    out[0] = out[1] = 0xFF;
    for (int i = 0; i < 4; i++)
        out[2 + i] = (uint8_t)((uint32_t)p >> (24 - 8 * i));
}

static void raw_close(raw_t *x, int32_t p, wmap_t *m)
{
    for (uint32_t i = 0; i < m->cap; i++) {
        slot_t *s = &m->slots[i];
        if (!s->used)
            continue;
        tally_add(x->tally, s->key, s->klen, m->start, s->count); /* the final result */
        if (s->stored) {                                          /* durable: delete it */
            if (x->n_dels + 1 + 12 + KEY_INLINE > x->dels_cap) {
                x->dels_cap = x->dels_cap ? x->dels_cap * 2 : 65536;
                x->dels = realloc(x->dels, x->dels_cap);
                if (!x->dels)
                    die("raw", "out of memory");
            }
            size_t len = state_key(x->dels + x->n_dels + 1, p, m->start, s->key, s->klen);
            x->dels[x->n_dels] = (uint8_t)len;
            x->n_dels += 1 + len;
        }
    }
    if (m->used)
        memset(m->slots, 0, m->cap * sizeof(*m->slots));
    m->used = 0;
    m->n_dirty = 0;
    m->open = 0;
}

/* Close the windows of partition p whose end + grace the stream time passed. */
static void raw_close_due(raw_t *x, int32_t p)
{
    rpart_t *rp = &x->parts[p];
    rp->next_close = INT64_MAX;
    for (int i = 0; i < rp->n_win; i++) {
        wmap_t *m = &rp->win[i];
        if (!m->open)
            continue;
        int64_t close = m->start + WINDOW_MS + GRACE_MS;
        if (rp->stream_time > close)
            raw_close(x, p, m);
        else if (close < rp->next_close)
            rp->next_close = close;
    }
}

static wmap_t *raw_window(rpart_t *rp, int64_t start)
{
    wmap_t *free_map = NULL;
    for (int i = rp->n_win - 1; i >= 0; i--) {
        if (rp->win[i].open && rp->win[i].start == start)
            return &rp->win[i];
        if (!rp->win[i].open)
            free_map = &rp->win[i];
    }
    if (!free_map) {
        rp->win = realloc(rp->win, (size_t)(rp->n_win + 1) * sizeof(*rp->win));
        if (!rp->win)
            die("raw", "out of memory");
        free_map = &rp->win[rp->n_win++];
        memset(free_map, 0, sizeof(*free_map));
    }
    free_map->open = 1;
    free_map->start = start;
    if (start + WINDOW_MS + GRACE_MS < rp->next_close)
        rp->next_close = start + WINDOW_MS + GRACE_MS;
    return free_map;
}

/* One record into its window's count, as rill's tumbling window stage. */
static void raw_process(raw_t *x, const rd_kafka_message_t *m, int durable)
{
    rpart_t *rp = &x->parts[m->partition];
    rp->last = m->offset;
    int64_t t = rd_kafka_message_timestamp(m, NULL);
    if (t < 0 || m->key_len > KEY_INLINE) {
        if (m->key_len > KEY_INLINE)
            die("raw", "a key longer than the inline key bytes");
        x->late++;
        return;
    }
    int64_t start = t - t % WINDOW_MS;
    if (rp->stream_time > start + WINDOW_MS + GRACE_MS) {
        x->late++; /* its window closed: dropped, as rill drops it */
        return;
    }
    wmap_t *w = raw_window(rp, start);
    uint32_t i;
    slot_t *s = wmap_get(w, m->key, m->key_len, durable, &i);
    s->count++;
    if (durable && !s->dirty) {
        s->dirty = 1;
        wmap_dirty(w, i);
    }
    if (t > rp->stream_time) {
        rp->stream_time = t;
        if (t > rp->next_close)
            raw_close_due(x, m->partition);
    }
}

static void lmdb_check(int rc, const char *what)
{
    if (rc)
        die(what, mdb_strerror(rc));
}

/* One LMDB transaction: the changed counts, the closed windows' deletes,
 * each touched partition's next offset and stream time; fsync. */
static void raw_lmdb_commit(raw_t *x)
{
    MDB_txn *txn;
    lmdb_check(mdb_txn_begin(x->env, NULL, 0, &txn), "raw lmdb begin");
    uint8_t kb[12 + KEY_INLINE];
    for (int p = 0; p < n_parts; p++) {
        rpart_t *rp = &x->parts[p];
        for (int w = 0; w < rp->n_win; w++) {
            wmap_t *m = &rp->win[w];
            for (uint32_t d = 0; d < m->n_dirty; d++) {
                slot_t *s = &m->slots[m->dirty[d]];
                MDB_val k = {.mv_size = state_key(kb, p, m->start, s->key, s->klen), .mv_data = kb};
                MDB_val v = {.mv_size = sizeof(s->count), .mv_data = &s->count};
                lmdb_check(mdb_put(txn, x->dbi, &k, &v, 0), "raw lmdb put");
                s->dirty = 0;
                s->stored = 1;
            }
            m->n_dirty = 0;
        }
        if (rp->last > rp->stored) {
            uint8_t ok[6];
            int64_t val[2] = {rp->last + 1, rp->stream_time};
            offset_key(ok, p);
            MDB_val k = {.mv_size = sizeof(ok), .mv_data = ok};
            MDB_val v = {.mv_size = sizeof(val), .mv_data = val};
            lmdb_check(mdb_put(txn, x->dbi, &k, &v, 0), "raw lmdb put");
        }
    }
    for (size_t i = 0; i < x->n_dels; i += 1 + x->dels[i]) {
        MDB_val k = {.mv_size = x->dels[i], .mv_data = x->dels + i + 1};
        int rc = mdb_del(txn, x->dbi, &k, NULL);
        if (rc && rc != MDB_NOTFOUND)
            die("raw lmdb del", mdb_strerror(rc));
    }
    x->n_dels = 0;
    lmdb_check(mdb_txn_commit(txn), "raw lmdb commit");
}

/* Store the Kafka offsets of what is processed (memory) or committed to
 * LMDB (durable); the records they cover. */
static uint64_t raw_store_offsets(raw_t *x, rd_kafka_topic_t *rkt)
{
    uint64_t covered = 0;
    for (int p = 0; p < n_parts; p++) {
        rpart_t *rp = &x->parts[p];
        if (rp->last > rp->stored) {
            rd_kafka_offset_store(rkt, p, rp->last); /* stores last + 1 */
            rp->stored = rp->last;
        }
        covered += (uint64_t)(rp->stored + 1);
    }
    return covered;
}

typedef struct result {
    double rate; /* records/s */
    double cost; /* CPU us per 1,000 records */
    int ok;
} result_t;

static MDB_env *raw_env_open(const char *dir, MDB_dbi *dbi)
{
    MDB_env *env;
    lmdb_check(mdb_env_create(&env), "raw lmdb");
    lmdb_check(mdb_env_set_mapsize(env, (size_t)MAP_SIZE), "raw lmdb map size");
    lmdb_check(mdb_env_open(env, dir, MDB_NOTLS, 0644), "raw lmdb open");
    MDB_txn *txn;
    lmdb_check(mdb_txn_begin(env, NULL, 0, &txn), "raw lmdb begin");
    lmdb_check(mdb_dbi_open(txn, NULL, 0, dbi), "raw lmdb dbi");
    lmdb_check(mdb_txn_commit(txn), "raw lmdb commit");
    return env;
}

/* The offset stored with partition p's state in the raw LMDB env; -1: none. */
static int64_t raw_env_offset(raw_t *x, int32_t p, int64_t *stream_time)
{
    MDB_txn *txn;
    lmdb_check(mdb_txn_begin(x->env, NULL, MDB_RDONLY, &txn), "raw lmdb read");
    uint8_t ok[6];
    offset_key(ok, p);
    MDB_val k = {.mv_size = sizeof(ok), .mv_data = ok}, v;
    int64_t off = -1, val[2];
    if (!mdb_get(txn, x->dbi, &k, &v) && v.mv_size == sizeof(val)) {
        memcpy(val, v.mv_data, sizeof(val));
        off = val[0];
        *stream_time = val[1];
    }
    mdb_txn_abort(txn);
    return off;
}

static result_t run_raw(const char *boot, int run, int durable)
{
    char group[64], why[512];
    snprintf(group, sizeof(group), "raw-%s-%d", durable ? "lmdb" : "mem", run);
    raw_t x;
    memset(&x, 0, sizeof(x));
    tally_t tally;
    tally_init(&tally);
    x.tally = &tally;
    if (durable)
        x.env = raw_env_open(lmdb_dir_make(), &x.dbi);
    double t0 = bench_now_s(), c0 = bench_cpu_us();
    rd_kafka_t *rk = bench_raw_consumer("bench_window", boot, group, NULL, "BENCH_RAW_CONF");
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, TOPIC, NULL);
    rd_kafka_queue_t *q = rd_kafka_queue_get_consumer(rk);
    /* Every partition from the offset stored with its state (durable: a
     * fresh environment has none), as rill_consumer_conf_use_store. */
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(n_parts);
    for (int p = 0; p < n_parts; p++) {
        rpart_t *rp = &x.parts[p];
        rp->stream_time = INT64_MIN;
        rp->next_close = INT64_MAX;
        int64_t from = durable ? raw_env_offset(&x, p, &rp->stream_time) : -1;
        rp->last = rp->stored = from > 0 ? from - 1 : -1;
        rd_kafka_topic_partition_list_add(l, TOPIC, p)->offset = from > 0 ? from : 0;
    }
    rd_kafka_assign(rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_message_t *msgs[BATCH];
    uint64_t got = 0, since = 0, covered = 0;
    double t_commits = 0, t_waits = 0; /* BENCH_TRACE: in LMDB commits, in long polls */
    int n_waits = 0;
    bench_committer_t com;
    bench_committer_init(&com, rk, COMMIT_EVERY);
    while (got < n_records) {
        size_t want = n_records - got < BATCH ? (size_t)(n_records - got) : BATCH;
        /* What the queue holds, up to the batch, at once; only when it is
         * empty, wait (at most 100 ms) for the first record: a blocking
         * call for a whole batch would wait out its timeout whenever the
         * queue holds less than a batch. */
        double tq = bench_now_s();
        ssize_t k = rd_kafka_consume_batch_queue(q, 0, msgs, want);
        if (k == 0)
            k = rd_kafka_consume_batch_queue(q, 100, msgs, 1);
        tq = bench_now_s() - tq;
        if (tq > 0.01) {
            t_waits += tq;
            n_waits++;
        }
        for (ssize_t i = 0; i < k; i++) {
            rd_kafka_message_t *m = msgs[i];
            if (!m->err && m->partition >= 0 && m->partition < n_parts) {
                raw_process(&x, m, durable);
                got++;
                if (durable && ++since == COMMIT_EVERY) {
                    double tc = bench_now_s();
                    raw_lmdb_commit(&x);
                    t_commits += bench_now_s() - tc;
                    covered = raw_store_offsets(&x, rkt);
                    since = 0;
                }
            }
            rd_kafka_message_destroy(m);
        }
        if (!durable)
            covered = raw_store_offsets(&x, rkt);
        bench_committer_step(&com, covered);
    }
    double t_read = bench_now_s();
    if (durable && since) {
        raw_lmdb_commit(&x);
        raw_store_offsets(&x, rkt);
    }
    bench_committer_drain(&com);
    double t_drained = bench_now_s();
    rd_kafka_resp_err_t cerr = rd_kafka_commit(rk, NULL, 0);
    if (getenv("BENCH_TRACE"))
        fprintf(stderr,
                "  %s: read all %.3f s (%.3f s in LMDB commits, %.3f s in %d polls over 10 ms), "
                "drained %.3f s, final commit %.3f s\n",
                durable ? "raw_lmdb" : "raw", t_read - t0, t_commits, t_waits, n_waits,
                t_drained - t0, bench_now_s() - t0);
    double dt = bench_now_s() - t0, cpu = bench_cpu_us() - c0;
    if (cerr && cerr != RD_KAFKA_RESP_ERR__NO_OFFSET)
        fprintf(stderr, "bench_window: raw final commit: %s\n", rd_kafka_err2str(cerr));
    rd_kafka_queue_destroy(q);
    bench_committer_destroy(&com);
    rd_kafka_topic_destroy(rkt);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    /* Checks (untimed). */
    const char *side = durable ? "raw_lmdb" : "raw";
    int ok = tally_check(&tally, side, why, sizeof(why)) && !x.late;
    int stored_bad = 0;
    for (int p = 0; durable && p < n_parts; p++) {
        int64_t st;
        stored_bad += raw_env_offset(&x, p, &st) != ends[p];
    }
    int kafka_bad = bench_uncommitted("bench_window", boot, group, TOPIC, n_parts, ends);
    ok = ok && !stored_bad && !kafka_bad;
    if (!ok || getenv("BENCH_VERBOSE"))
        printf("    %s check: %s; %" PRIu64 " late; %d partitions' stored offsets and %d "
               "committed offsets not at the end%s\n",
               side, why, x.late, stored_bad, kafka_bad, ok ? "" : "  FAILED");
    for (int p = 0; p < n_parts; p++) {
        for (int w = 0; w < x.parts[p].n_win; w++) {
            free(x.parts[p].win[w].slots);
            free(x.parts[p].win[w].dirty);
        }
        free(x.parts[p].win);
    }
    free(x.dels);
    if (durable) {
        mdb_env_close(x.env);
        lmdb_dir_remove();
    }
    tally_free(&tally);
    return (result_t){(double)n_records / dt, cpu / ((double)n_records / 1000.0), ok};
}

/* ---- rill ---- */

typedef struct rill_run {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int64_t committed[MAX_PARTITIONS]; /* by the commit callback, under lock */
    int64_t committed_sum;
    tally_t tally;           /* the sink's (window lines) */
    _Atomic uint64_t finals; /* final results the sink took */
    uint64_t results_needed; /* finals to wait for (0: none) */
} rill_run_t;

static void on_commit(void *opaque, rd_kafka_resp_err_t err,
                      const rd_kafka_topic_partition_list_t *offsets)
{
    rill_run_t *s = opaque;
    pthread_mutex_lock(&s->lock);
    for (int i = 0; !err && i < offsets->cnt; i++) {
        const rd_kafka_topic_partition_t *tp = &offsets->elems[i];
        if (!tp->err && tp->partition >= 0 && tp->partition < n_parts &&
            tp->offset > s->committed[tp->partition]) {
            s->committed_sum += tp->offset - s->committed[tp->partition];
            s->committed[tp->partition] = tp->offset;
        }
    }
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

static rill_err_t count_add(void *opaque, void *agg, const rill_elem_t *in)
{
    (void)opaque, (void)in;
    ++*(uint64_t *)agg;
    return RILL_OK;
}

/* The sink: takes every final result into the tally (RILL_OK confirms it). */
static rill_err_t take_result(void *opaque, rill_elem_t *e)
{
    rill_run_t *s = opaque;
    const rill_window_result_t *r = rill_window_result(e);
    if (r && r->final) {
        uint64_t count;
        memcpy(&count, r->agg, sizeof(count));
        tally_add(&s->tally, r->key, r->key_len, r->start_ms, count);
        /* release: the tally's writes before the count the main thread reads */
        if (atomic_fetch_add_explicit(&s->finals, 1, memory_order_release) + 1 ==
            s->results_needed) {
            pthread_mutex_lock(&s->lock);
            pthread_cond_signal(&s->cond);
            pthread_mutex_unlock(&s->lock);
        }
    }
    rill_elem_release(e);
    return RILL_OK;
}

/* The stateful function of store_commit_cost: one count per key. */
static rill_err_t count_key(void *opaque, rill_state_t *st, rill_elem_t *in, rill_emitter_t *out)
{
    (void)opaque, (void)out;
    const rd_kafka_message_t *m = rill_record(in);
    uint64_t count = 0;
    const void *v;
    size_t vlen;
    if (rill_state_get(st, m->key, m->key_len, &v, &vlen) == RILL_OK && vlen == sizeof(count))
        memcpy(&count, v, sizeof(count));
    count++;
    rill_err_t e = rill_state_put(st, m->key, m->key_len, &count, sizeof(count));
    rill_elem_release(in);
    return e;
}

static int consumer_set(void *c, const char *k, const char *v, char *e, size_t es)
{
    return rill_consumer_conf_set(c, k, v, e, es);
}

enum store_kind { STORE_MEM, STORE_LMDB, STORE_LMDB_NOSYNC };

/* Every key's count in the store is its number of records. */
static int check_counts(rill_store_t *store, char *why, size_t why_size)
{
    uint64_t missing = 0, wrong = 0;
    char key[24];
    for (int k = 0; k < n_keys; k++) {
        if (!expect_key[k])
            continue;
        int len = snprintf(key, sizeof(key), "key-%d", k);
        uint64_t count = 0;
        size_t vlen = 0;
        if (rill_store_read(store, TOPIC, part_of(k), key, (size_t)len, &count, sizeof(count),
                            &vlen) != RILL_OK)
            missing++;
        else if (vlen != sizeof(count) || count != expect_key[k])
            wrong++;
    }
    snprintf(why, why_size, "%" PRIu64 " keys missing, %" PRIu64 " with a wrong count", missing,
             wrong);
    return !missing && !wrong;
}

/* window: the window stage and its sink; else the stateful counting stage. */
static result_t run_rill(const char *boot, int run, int window, enum store_kind kind,
                         const char *side)
{
    char err[512], group[64], why[512] = "";
    snprintf(group, sizeof(group), "%s-%d", side, run);
    rill_run_t *s = calloc(1, sizeof(*s));
    if (!s)
        die("rill", "out of memory");
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    if (window) {
        tally_init(&s->tally);
        s->results_needed = expect_finals;
    }
    rill_store_t *store = NULL;
    rill_err_t e;
    if (kind == STORE_MEM) {
        e = rill_store_open_memory(side, &store, err, sizeof(err));
    } else {
        rill_store_opts_t so = {.no_sync = kind == STORE_LMDB_NOSYNC};
        e = rill_store_open_lmdb(lmdb_dir_make(), &so, &store, err, sizeof(err));
    }
    if (e)
        die("rill store", err);
    rill_system_t *sys = rill_system_new(&(rill_system_opts_t){.executors = 2}, err, sizeof(err));
    if (!sys || rill_system_start(sys))
        die("rill system", sys ? "cannot start" : err);
    rill_consumer_conf_t *c = rill_consumer_conf_new();
    if (rill_consumer_conf_set(c, "bootstrap.servers", boot, err, sizeof(err)) ||
        rill_consumer_conf_set(c, "group.id", group, err, sizeof(err)) ||
        rill_consumer_conf_set_commit_cb(c, on_commit, s))
        die("rill consumer config", err);
    for (int p = 0; p < n_parts; p++)
        if (rill_consumer_conf_assign(c, TOPIC, p, 0, err, sizeof(err)))
            die("rill consumer config", err);
    if (rill_consumer_conf_use_store(c, store))
        die("rill consumer config", "rill_consumer_conf_use_store failed");
    bench_conf_from_env("bench_window", c, "BENCH_RILL_CONSUMER_CONF", consumer_set);
    rill_stage_opts_t co = {.executor = RILL_EXECUTOR(bench_env_int("BENCH_EX_CONSUMER", 0))};
    rill_stage_opts_t wo = {.executor = RILL_EXECUTOR(bench_env_int("BENCH_EX_STAGE", 1)),
                            .mailbox_capacity = 1024};
    rill_stage_opts_t so = {.executor = RILL_EXECUTOR(bench_env_int("BENCH_EX_SINK", 1)),
                            .mailbox_capacity = 1024};
    rill_pipeline_t *pl = rill_pipeline_new(sys, side);
    rill_pipeline_add(pl, rill_kafka_source(c), &co);
    if (window) {
        rill_window_ops_t ops = {.agg_size = sizeof(uint64_t), .add = count_add};
        rill_window_opts_t wopts = {.type = RILL_WINDOW_TUMBLING,
                                    .size_ms = WINDOW_MS,
                                    .grace_ms = GRACE_MS,
                                    .wall_close_ms = UINT64_MAX};
        if (kind != STORE_MEM)
            wopts.commit.commit_count = COMMIT_EVERY;
        rill_pipeline_add(pl, rill_stage_window(store, &wopts, &ops, NULL), &wo);
        rill_pipeline_add(pl, rill_sink_foreach(take_result, s), &so);
    } else {
        rill_stateful_opts_t sfo = {.commit_count = kind != STORE_MEM ? COMMIT_EVERY : 0};
        rill_pipeline_add(pl, rill_stage_stateful(store, &sfo, count_key, NULL), &wo);
    }
    double t0 = bench_now_s(), c0 = bench_cpu_us();
    if (rill_pipeline_start(pl, err, sizeof(err)))
        die("rill pipeline", err);
    /* The end: every offset committed to Kafka (n_records is a multiple
     * of 1,000: the last transaction and commit come by count), and every
     * final result taken. */
    int timed_out = 0, failed = 0;
    rill_pipeline_result_t pr;
    pthread_mutex_lock(&s->lock);
    for (int i = 1; s->committed_sum < (int64_t)n_records ||
                    atomic_load_explicit(&s->finals, memory_order_acquire) < s->results_needed;
         i++) {
        if (bench_now_s() - t0 > WAIT_S) {
            timed_out = 1;
            break;
        }
        /* A pipeline that failed (a store commit, a stage) never gets there. */
        if (i % 25 == 0 && rill_pipeline_wait(pl, 0, &pr) == RILL_OK) {
            failed = 1;
            break;
        }
        struct timespec ts = bench_realtime_in_ms(20);
        pthread_cond_timedwait(&s->cond, &s->lock, &ts);
    }
    pthread_mutex_unlock(&s->lock);
    double dt = bench_now_s() - t0, cpu = bench_cpu_us() - c0;
    rill_pipeline_stop(pl);
    int ended = rill_pipeline_wait(pl, 30000, &pr) == RILL_OK && pr.end == RILL_PIPELINE_STOPPED;
    if (!ended)
        fprintf(stderr, "bench_window: %s: the pipeline ended: %s %s\n", side, pr.stage, pr.text);
    rill_pipeline_destroy(pl);
    rill_system_stop(sys, 10000);
    rill_system_destroy(sys);
    /* Checks (untimed). */
    int ok = ended && !timed_out && !failed;
    if (window)
        ok = tally_check(&s->tally, side, why, sizeof(why)) && ok;
    else
        ok = check_counts(store, why, sizeof(why)) && ok;
    rill_store_stats_t st = {0};
    rill_store_stats(store, &st);
    int stored_bad = 0;
    for (int p = 0; p < n_parts; p++) {
        int64_t off = -1;
        stored_bad += rill_store_offset(store, TOPIC, p, &off) != RILL_OK || off != ends[p];
    }
    int kafka_bad = bench_uncommitted("bench_window", boot, group, TOPIC, n_parts, ends);
    ok = ok && !stored_bad && !kafka_bad && !st.late;
    if (!ok || getenv("BENCH_VERBOSE"))
        printf("    %s check: %s%s; %" PRIu64 " late, %" PRIu64 " store commits; %d partitions' "
               "stored offsets and %d committed offsets not at the end%s\n",
               side,
               timed_out ? "TIMED OUT; "
               : failed  ? "THE PIPELINE ENDED; "
                         : "",
               why, st.late, st.commits, stored_bad, kafka_bad, ok ? "" : "  FAILED");
    rill_store_close(store);
    if (kind != STORE_MEM)
        lmdb_dir_remove();
    if (window)
        tally_free(&s->tally);
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->lock);
    free(s);
    return (result_t){(double)n_records / dt, cpu / ((double)n_records / 1000.0), ok};
}

/* ---- main ---- */

enum { RAW, RILL, RAW_LMDB, RILL_LMDB, SF_MEM, SF_LMDB, SF_NOSYNC, SIDES };
static const char *const side_name[SIDES] = {"raw",    "rill",    "raw_lmdb", "rill_lmdb",
                                             "sf_mem", "sf_lmdb", "sf_nosync"};

static result_t run_side(const char *boot, int side, int run)
{
    switch (side) {
    case RAW:
        return run_raw(boot, run, 0);
    case RILL:
        return run_rill(boot, run, 1, STORE_MEM, side_name[side]);
    case RAW_LMDB:
        return run_raw(boot, run, 1);
    case RILL_LMDB:
        return run_rill(boot, run, 1, STORE_LMDB, side_name[side]);
    case SF_MEM:
        return run_rill(boot, run, 0, STORE_MEM, side_name[side]);
    case SF_LMDB:
        return run_rill(boot, run, 0, STORE_LMDB, side_name[side]);
    default:
        return run_rill(boot, run, 0, STORE_LMDB_NOSYNC, side_name[side]);
    }
}

int main(int argc, char **argv)
{
    n_records = (uint64_t)bench_env_int("BENCH_RECORDS", 300000);
    n_keys = bench_env_int("BENCH_KEYS", 10000);
    n_parts = bench_env_int("BENCH_PARTITIONS", 8);
    n_windows = bench_env_int("BENCH_WINDOWS", 5);
    int runs = bench_env_int("BENCH_RUNS", 7);
    char bin[PATH_MAX];
    bench_broker_path(argc > 1 ? argv[1] : NULL, bin, sizeof(bin));
    /* The mock keeps at most 100,000 records or 5 MiB per partition. */
    if (n_parts < 1 || n_parts > MAX_PARTITIONS || n_records < 1000 || n_records % 1000 ||
        n_records > (uint64_t)n_parts * 40000 || n_keys < 1 || n_keys > 99999999 || n_windows < 1 ||
        n_windows > 1000 || runs < 1 || runs > MAX_RUNS) {
        fprintf(stderr,
                "bench_window: BENCH_RECORDS a multiple of 1000 up to 40000 per partition, "
                "BENCH_PARTITIONS 1..%d, BENCH_KEYS 1..99999999, BENCH_WINDOWS 1..1000, "
                "BENCH_RUNS 1..%d\nusage: bench_window [rill-broker]\n",
                MAX_PARTITIONS, MAX_RUNS);
        return 2;
    }
    n_data = n_records - (uint64_t)n_parts;
    atexit(lmdb_dir_remove);
    bench_header("bench_window", 1, argc, argv);
    char boot[512] = "";
    bench_broker_topic(TOPIC ":%d:1", n_parts);
    bench_broker_start("bench_window", bin, boot, sizeof(boot));
    compute_expected();
    int nosync = !getenv("BENCH_NO_NOSYNC");
    printf("bench_window: %" PRIu64 " records of %d bytes (%d keys, %d partitions, tumbling %d s "
           "windows by record timestamp over %d windows: %" PRIu64 " (key, window) counts), "
           "%d alternating runs, LMDB under /tmp on %s, raw loop: consume_batch_queue + hash map "
           "per window, broker %s\n",
           n_records, VALUE, n_keys, n_parts, WINDOW_MS / 1000, n_windows, expect_finals, runs,
           tmp_fs(), boot);
    fflush(stdout);
    produce_data(boot);
    read_ends(boot);
    double rate[SIDES][MAX_RUNS], cost[SIDES][MAX_RUNS];
    const char *only = getenv("BENCH_ONLY");
    int ok = 1;
    for (int r = 0; r < runs; r++) {
        result_t res[SIDES];
        /* The sides in an order that turns by one each run, so that none
         * always goes first. */
        for (int k = 0; k < SIDES; k++) {
            int side = (r + k) % SIDES;
            res[side] = (result_t){1, 1, 1};
            if ((only && strcmp(only, side_name[side])) || (side == SF_NOSYNC && !nosync))
                continue;
            res[side] = run_side(boot, side, r);
        }
        printf("  run %d:", r + 1);
        for (int side = 0; side < SIDES; side++) {
            ok = ok && res[side].ok;
            rate[side][r] = res[side].rate;
            cost[side][r] = res[side].cost;
            if ((only && strcmp(only, side_name[side])) || (side == SF_NOSYNC && !nosync))
                continue;
            printf("%s %s %.0f rec/s %.0f us/1k cpu%s", side ? " |" : "", side_name[side],
                   res[side].rate, res[side].cost, res[side].ok ? "" : " (CHECK FAILED)");
        }
        printf("\n");
        fflush(stdout);
    }
    printf("  checks: %s\n",
           ok ? "every run: every (key, window) had one final result with the generator's count "
                "(window sides), every key its count (stateful sides); the stores' offsets and "
                "the committed Kafka offsets at the partitions' ends"
              : "FAILED (see above)");
    bench_summary("window_count", 0, rate[RILL], rate[RAW], runs, "rec/s");
    bench_summary("window_count_cost", 1, cost[RILL], cost[RAW], runs, "us/1000rec");
    bench_summary("window_count_lmdb", 0, rate[RILL_LMDB], rate[RAW_LMDB], runs, "rec/s");
    bench_summary("window_count_lmdb_cost", 1, cost[RILL_LMDB], cost[RAW_LMDB], runs, "us/1000rec");
    /* CPU per record: LMDB (fsync every 1,000 records) over memory. */
    double lm[MAX_RUNS], ns[MAX_RUNS], mem[MAX_RUNS];
    for (int r = 0; r < runs; r++) {
        lm[r] = cost[SF_LMDB][r] / 1000.0;
        ns[r] = cost[SF_NOSYNC][r] / 1000.0;
        mem[r] = cost[SF_MEM][r] / 1000.0;
    }
    bench_summary("store_commit_cost", 3, lm, mem, runs, "us/rec");
    if (nosync)
        bench_summary("store_commit_cost_nosync", 3, ns, mem, runs, "us/rec");
    free(expect);
    free(expect_key);
    return ok ? 0 : 1;
}
