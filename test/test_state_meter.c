/*
 * examples/meter_averages under kill -9: a rill-broker process with 4
 * partitions of readings, the example run slowly (--rate) and killed with
 * SIGKILL once it has processed some, then started again on the same LMDB
 * store to the end.
 *
 * Between the two runs the test opens the store itself and checks that
 * the state there is exactly what the records below each partition's
 * stored offset make (state and offsets committed together, and nothing
 * of the records after them). After the second run it checks every
 * average against its own computation from the records: none lost, none
 * counted twice.
 */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "support/rtest.h"

#include <rill/state.h>
#include <rill/testkit.h>

#include "support/proc.h"

#define TOPIC    "readings"
#define PARTS    4
#define READINGS 40000
#define METERS   40
#define HOURS    5

typedef struct agg {
    uint64_t wh, count;
} agg_t;

typedef struct expect {
    char key[48];
    agg_t a;
} expect_t;

typedef struct table {
    expect_t v[METERS * HOURS * 2];
    size_t n;
} table_t;

static expect_t *entry(table_t *t, const char *key, size_t len)
{
    for (size_t i = 0; i < t->n; i++)
        if (strlen(t->v[i].key) == len && !memcmp(t->v[i].key, key, len))
            return &t->v[i];
    cr_assert_lt(t->n, sizeof(t->v) / sizeof(t->v[0]), "more meter-hours than possible");
    expect_t *e = &t->v[t->n++];
    memset(e, 0, sizeof(*e));
    memcpy(e->key, key, len);
    return e;
}

/* The state the records of partition p below `below` make. */
static void expected_state(const rill_consumed_t *recs, int p, int64_t below, table_t *t)
{
    t->n = 0;
    for (size_t i = 0; i < rill_consumed_count(recs); i++) {
        const rill_testkit_record_t *r = rill_consumed_at(recs, i);
        if (r->partition != p || r->offset >= below)
            continue;
        long long ts, wh;
        char text[64] = "", key[96];
        memcpy(text, r->value, r->value_len < 63 ? r->value_len : 63);
        cr_assert_eq(sscanf(text, "%lld %lld", &ts, &wh), 2);
        int n = snprintf(key, sizeof(key), "%.*s|%06lld", (int)r->key_len, (const char *)r->key,
                         ts / 3600000);
        expect_t *e = entry(t, key, (size_t)n);
        e->a.wh += (uint64_t)wh;
        e->a.count++;
    }
}

typedef struct cmp {
    table_t *t;
    size_t seen, wrong;
    uint64_t count;
} cmp_t;

static int visit(void *opaque, const void *key, size_t klen, const void *value, size_t vlen)
{
    cmp_t *c = opaque;
    agg_t a = {0, 0};
    if (vlen == sizeof(a))
        memcpy(&a, value, sizeof(a));
    expect_t *e = entry(c->t, key, klen);
    c->seen++;
    c->count += a.count;
    c->wrong += vlen != sizeof(a) || a.wh != e->a.wh || a.count != e->a.count;
    return 0;
}

/* The store in dir against the records: every partition's state is
 * exactly what its records below its stored offset make. Returns the sum
 * of the stored offsets. */
static int64_t check_store(const char *dir, const rill_consumed_t *recs)
{
    rill_store_t *s = NULL;
    char err[512] = "";
    cr_assert_eq(rill_store_open_lmdb(dir, NULL, &s, err, sizeof(err)), RILL_OK, "open: %s", err);
    int64_t sum = 0;
    for (int p = 0; p < PARTS; p++) {
        int64_t off = 0;
        rill_err_t e = rill_store_offset(s, TOPIC, p, &off);
        cr_assert(e == RILL_OK || e == RILL_ENOENT, "offset of %d: %s", p, rill_err2str(e));
        table_t *t = calloc(1, sizeof(*t));
        expected_state(recs, p, off, t);
        size_t expected = t->n;
        cmp_t c = {.t = t};
        cr_assert_eq(rill_store_scan(s, TOPIC, p, NULL, 0, NULL, 0, visit, &c), RILL_OK);
        cr_assert_eq(c.wrong, 0,
                     "partition %d: %zu meter-hours differ from its %" PRId64
                     " records below the stored offset",
                     p, c.wrong, off);
        cr_assert_eq(c.seen, expected, "partition %d: %zu meter-hours stored, %zu expected", p,
                     c.seen, expected);
        cr_assert_eq((int64_t)c.count, off,
                     "partition %d: %" PRIu64 " readings counted, stored offset %" PRId64, p,
                     c.count, off);
        free(t);
        sum += off;
    }
    rill_store_close(s);
    return sum;
}

static const char *env_or_fail(const char *name)
{
    const char *v = getenv(name);
    cr_assert(v && *v, "%s is not set (ctest sets it)", name);
    return v;
}

Test(state_meter, killed_mid_way_and_restarted_every_average_is_exact, .timeout = 280)
{
    const char *broker_bin = env_or_fail("RILL_BROKER_BIN");
    const char *example = env_or_fail("RILL_METER_BIN");
    char dir[64] = "/tmp/rill-meter-test-XXXXXX", boot[512] = "", err[512] = "";
    cr_assert_not_null(mkdtemp(dir));
    char store[128];
    snprintf(store, sizeof(store), "%s/store", dir);

    proc_t broker;
    char *bargv[] = {(char *)broker_bin, "--topic", TOPIC ":4:1", "--exit-on-eof", NULL};
    cr_assert_eq(proc_spawn(&broker, bargv), 0, "spawn rill-broker");
    cr_assert_gt(proc_read_line(&broker, boot, sizeof(boot), 15000), 0, "no bootstrap line");

    /* The readings: the same generator as the example's. */
    rill_testkit_record_t *recs = calloc(READINGS, sizeof(*recs));
    char(*kv)[2][32] = calloc(READINGS, sizeof(*kv));
    for (uint64_t i = 0; i < READINGS; i++) {
        uint64_t h = i * 0x9E3779B97F4A7C15ull;
        snprintf(kv[i][0], sizeof(kv[i][0]), "meter-%04d", (int)((h >> 33) % METERS));
        snprintf(kv[i][1], sizeof(kv[i][1]), "%lld %d",
                 1700000000000ll + (long long)((h >> 11) % ((uint64_t)HOURS * 3600000u)),
                 (int)(i % 997) + 1);
        recs[i] = (rill_testkit_record_t){.partition = RILL_PARTITION_ANY,
                                          .key = kv[i][0],
                                          .key_len = strlen(kv[i][0]),
                                          .value = kv[i][1],
                                          .value_len = strlen(kv[i][1])};
    }
    rill_testkit_opts_t o = {.timeout_ms = 60000};
    cr_assert_eq(rill_testkit_produce(boot, TOPIC, recs, READINGS, &o, err, sizeof(err)), RILL_OK,
                 "produce: %s", err);
    free(recs);
    free(kv);
    rill_consumed_t *all = NULL;
    cr_assert_eq(rill_testkit_consume(boot, TOPIC, RILL_CONSUME_TO_END, &o, &all, err, sizeof(err)),
                 RILL_OK, "read back: %s", err);
    cr_assert_eq(rill_consumed_count(all), READINGS);

    /* Run 1, slow, killed with SIGKILL once it has processed 10,000. */
    proc_t run;
    char *a1[] = {(char *)example, "--bootstrap", boot, "--no-produce", "--store", store,
                  "--rate",        "8000",        NULL};
    cr_assert_eq(proc_spawn(&run, a1), 0);
    char line[256];
    long processed = 0;
    int64_t deadline = proc_now_ms() + 90000;
    while (processed < 10000 && proc_now_ms() < deadline) {
        if (proc_read_line(&run, line, sizeof(line), 1000) < 0)
            continue;
        sscanf(line, "processed %ld", &processed);
    }
    cr_assert_geq(processed, 10000, "run 1 did not get to 10,000 readings");
    proc_kill(&run);

    /* The store as the kill left it: exact for what it says it holds. */
    int64_t at_kill = check_store(store, all);
    fprintf(stderr, "state_meter: killed after %ld processed; the store holds %" PRId64 "\n",
            processed, at_kill);
    cr_assert_gt(at_kill, 0, "nothing was committed before the kill");
    cr_assert_lt(at_kill, READINGS, "everything was committed before the kill");

    /* Run 2, to the end: its own summary, then ours. */
    char *a2[] = {(char *)example, "--bootstrap", boot, "--no-produce", "--store", store, NULL};
    char *out = NULL;
    int st = proc_run(a2, "", 180000, &out);
    cr_assert_eq(st, 0, "run 2 exited with %d:\n%s", st, out ? out : "");
    cr_assert_not_null(strstr(out, "  OK: "), "run 2:\n%s", out);
    free(out);
    cr_assert_eq(check_store(store, all), READINGS);

    rill_consumed_destroy(all);
    kill(broker.pid, SIGTERM);
    if (proc_wait(&broker, 10000) < 0)
        proc_kill(&broker);
    proc_close(&broker);
    char cmd[160];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}
