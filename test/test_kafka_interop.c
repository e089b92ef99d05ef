/*
 * rill and an independent Kafka client (kcat) read each other's records:
 *
 * 1. rill's producer actor writes keyed records with several headers (a
 *    repeated name, an empty value, a binary value holding all 256 byte
 *    values) and kcat reads them back (-J, whose JSON keeps every byte:
 *    kcat's -f '%h' stops a header value at its first NUL byte) with keys,
 *    values and headers intact, in order.
 * 2. kcat writes keyed records with headers (-K: -H name=value) and rill's
 *    consumer actor reads them with keys, values and headers intact.
 *
 * The broker is a rill-broker process (RILL_BROKER_BIN) or, without it,
 * the in-process embedded broker; kcat reaches either over TCP on loopback.
 * Sinks run on executor threads and never assert: they record under a
 * mutex, and the test thread waits on that with deadlines.
 */
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "support/rtest.h"

#include <rill/kafka.h>
#include <rill/stream.h>
#include <rill/testkit.h>

#include "support/proc.h"

#define N_RECORDS 300
#define WAIT_MS   30000

/* ------------------------------------------------------------------ */
/* The broker: a rill-broker process, else in-process                  */
/* ------------------------------------------------------------------ */

static struct {
    proc_t p;
    int spawned;
    rill_broker_t *embedded;
    char boot[512];
} kbroker;

static void broker_start(const char *topic_spec, const char *topic, int partitions)
{
    const char *bin = getenv("RILL_BROKER_BIN");
    if (bin && *bin) {
        char *argv[] = {(char *)bin, "--topic", (char *)topic_spec, "--exit-on-eof", NULL};
        cr_assert_eq(proc_spawn(&kbroker.p, argv), 0, "spawn %s", bin);
        kbroker.spawned = 1;
        cr_assert_gt(proc_read_line(&kbroker.p, kbroker.boot, sizeof(kbroker.boot), 15000), 0,
                     "rill-broker printed no bootstrap line");
        return;
    }
    char err[512] = "";
    kbroker.embedded = rill_broker_new(1, err, sizeof(err));
    cr_assert_not_null(kbroker.embedded, "%s", err);
    cr_assert_eq(rill_broker_create_topic(kbroker.embedded, topic, partitions, 1, err, sizeof(err)),
                 RILL_OK, "%s", err);
    snprintf(kbroker.boot, sizeof(kbroker.boot), "%s", rill_broker_bootstraps(kbroker.embedded));
}

static void broker_stop(void)
{
    if (kbroker.spawned) {
        kill(kbroker.p.pid, SIGTERM);
        int st = proc_wait(&kbroker.p, 10000);
        if (st < 0)
            proc_kill(&kbroker.p);
        proc_close(&kbroker.p);
        cr_expect_eq(st, 0, "rill-broker exits 0 on SIGTERM");
    }
    rill_broker_destroy(kbroker.embedded);
    memset(&kbroker, 0, sizeof(kbroker));
}

static const char *kcat_bin(void)
{
    const char *v = getenv("KCAT_BIN");
    cr_assert(v && *v, "KCAT_BIN is not set (ctest sets it)");
    return v;
}

static rill_system_t *system_new(void)
{
    char err[256] = "";
    rill_system_opts_t o = {.executors = 2};
    rill_system_t *sys = rill_system_new(&o, err, sizeof(err));
    cr_assert_not_null(sys, "%s", err);
    cr_assert_eq(rill_system_start(sys), RILL_OK);
    return sys;
}

/* ------------------------------------------------------------------ */
/* Headers of record i                                                 */
/* ------------------------------------------------------------------ */

#define N_HEADERS 6

typedef struct hdrs {
    rill_testkit_header_t h[N_HEADERS];
    char trace[32];
    unsigned char bin[256];
} hdrs_t;

static void headers_of(int i, hdrs_t *x)
{
    snprintf(x->trace, sizeof(x->trace), "trace-%d", i);
    for (int j = 0; j < 256; j++)
        x->bin[j] = (unsigned char)(j + i);
    x->h[0] = (rill_testkit_header_t){"trace-id", x->trace, strlen(x->trace)};
    x->h[1] = (rill_testkit_header_t){"content-type", "text/plain; charset=utf-8", 25};
    x->h[2] = (rill_testkit_header_t){"bin", x->bin, sizeof(x->bin)};
    x->h[3] = (rill_testkit_header_t){"empty", "", 0};
    x->h[4] = (rill_testkit_header_t){"tag", "a", 1};
    x->h[5] = (rill_testkit_header_t){"tag", "b=\"c\", \\d", 9};
}

static int value_of(int i, char *buf, size_t size)
{
    /* Quotes, a backslash, a tab and UTF-8: JSON escapes to undo. */
    return snprintf(buf, size, "value-%d \"quoted\" back\\slash\ttab gr\xc3\xbc\xc3\x9f", i);
}

/* ------------------------------------------------------------------ */
/* A minimal reader for kcat's -J lines                                */
/* ------------------------------------------------------------------ */

typedef struct jstr {
    char *p; /* malloc'ed, NUL-terminated; NULL for JSON null */
    size_t n;
} jstr_t;

typedef struct jrec {
    long partition, offset;
    jstr_t key, payload;
    jstr_t hname[16], hval[16];
    int nh;
} jrec_t;

static void skip_ws(const char **s)
{
    while (**s == ' ' || **s == '\t' || **s == '\r' || **s == '\n')
        (*s)++;
}

/* A JSON string (or null) at *s; bytes are kept as they come, escapes
 * undone (kcat writes \u00XX for control bytes). Returns 0 or -1. */
static int json_string(const char **s, jstr_t *out)
{
    skip_ws(s);
    out->p = NULL;
    out->n = 0;
    if (!strncmp(*s, "null", 4)) {
        *s += 4;
        return 0;
    }
    if (**s != '"')
        return -1;
    const char *q = *s + 1;
    char *buf = malloc(strlen(q) + 1);
    size_t n = 0;
    while (*q && *q != '"') {
        if (*q != '\\') {
            buf[n++] = *q++;
            continue;
        }
        q++;
        switch (*q) {
        case 'n':
            buf[n++] = '\n';
            break;
        case 't':
            buf[n++] = '\t';
            break;
        case 'r':
            buf[n++] = '\r';
            break;
        case 'b':
            buf[n++] = '\b';
            break;
        case 'f':
            buf[n++] = '\f';
            break;
        case 'u': {
            unsigned v = 0;
            if (sscanf(q + 1, "%4x", &v) != 1 || v > 0xff) {
                free(buf);
                return -1;
            }
            buf[n++] = (char)v;
            q += 4;
            break;
        }
        case '\0':
            free(buf);
            return -1;
        default: /* \" \\ \/ */
            buf[n++] = *q;
        }
        q++;
    }
    if (*q != '"') {
        free(buf);
        return -1;
    }
    buf[n] = '\0';
    out->p = buf;
    out->n = n;
    *s = q + 1;
    return 0;
}

static void jrec_free(jrec_t *r)
{
    free(r->key.p);
    free(r->payload.p);
    for (int i = 0; i < r->nh; i++) {
        free(r->hname[i].p);
        free(r->hval[i].p);
    }
    memset(r, 0, sizeof(*r));
}

/* One line of kcat -J output. Returns 0 or -1. */
static int json_record(const char *s, jrec_t *r)
{
    memset(r, 0, sizeof(*r));
    skip_ws(&s);
    if (*s++ != '{')
        return -1;
    for (;;) {
        jstr_t name;
        if (json_string(&s, &name) || !name.p)
            return -1;
        skip_ws(&s);
        if (*s++ != ':') {
            free(name.p);
            return -1;
        }
        skip_ws(&s);
        int rc = 0;
        if (!strcmp(name.p, "key"))
            rc = json_string(&s, &r->key);
        else if (!strcmp(name.p, "payload"))
            rc = json_string(&s, &r->payload);
        else if (!strcmp(name.p, "headers")) {
            if (*s++ != '[')
                rc = -1;
            skip_ws(&s);
            while (!rc && *s != ']') {
                if (r->nh == 16 || json_string(&s, &r->hname[r->nh])) {
                    rc = -1;
                    break;
                }
                skip_ws(&s);
                if (*s++ != ',' || json_string(&s, &r->hval[r->nh])) {
                    r->nh++;
                    rc = -1;
                    break;
                }
                r->nh++;
                skip_ws(&s);
                if (*s == ',')
                    s++;
            }
            if (!rc)
                s++;
        } else if (*s == '"') {
            jstr_t skip;
            rc = json_string(&s, &skip);
            free(skip.p);
        } else {
            char *end;
            long v = strtol(s, &end, 10);
            if (end == s) {
                if (strncmp(s, "null", 4))
                    rc = -1;
                end = (char *)s + 4;
            }
            if (!strcmp(name.p, "partition"))
                r->partition = v;
            else if (!strcmp(name.p, "offset"))
                r->offset = v;
            s = end;
        }
        free(name.p);
        if (rc)
            return -1;
        skip_ws(&s);
        if (*s == '}')
            return 0;
        if (*s++ != ',')
            return -1;
    }
}

/* ------------------------------------------------------------------ */
/* 1. rill produces, kcat reads                                        */
/* ------------------------------------------------------------------ */

static _Atomic int next_rec;

static rill_err_t gen_record(void *opaque, rill_elem_t *out)
{
    const char *topic = opaque;
    int i = atomic_fetch_add(&next_rec, 1);
    if (i >= N_RECORDS)
        return RILL_EOS;
    char key[32], value[128];
    int kl = snprintf(key, sizeof(key), "key-%d", i);
    int vl = value_of(i, value, sizeof(value));
    rill_produce_t *p =
        rill_produce_new(topic, RILL_PARTITION_ANY, key, (size_t)kl, value, (size_t)vl);
    if (!p)
        return RILL_ENOMEM;
    hdrs_t h;
    headers_of(i, &h);
    for (int j = 0; j < N_HEADERS; j++)
        if (rill_produce_add_header(p, h.h[j].name, h.h[j].value, h.h[j].value_len)) {
            rill_produce_free(p);
            return RILL_ENOMEM;
        }
    *out = rill_produce_elem(p);
    return RILL_OK;
}

static _Atomic int delivered, failed;

static rill_err_t count_delivery(void *opaque, rill_elem_t *e)
{
    const rill_delivery_t *d = e->payload;
    if (d && d->err == RD_KAFKA_RESP_ERR_NO_ERROR && d->offset >= 0)
        atomic_fetch_add(&delivered, 1);
    else
        atomic_fetch_add(&failed, 1);
    rill_elem_release(e);
    return RILL_OK;
}

Test(kafka_interop, rill_producer_to_kcat_keys_values_headers, .timeout = 90)
{
    const char *kcat = kcat_bin();
    broker_start("from-rill:3:1", "from-rill", 3);
    rill_system_t *sys = system_new();
    char err[512] = "";

    /* A source of produce requests into rill's producer actor. */
    rill_producer_conf_t *pc = rill_producer_conf_new();
    cr_assert_eq(rill_producer_conf_set(pc, "bootstrap.servers", kbroker.boot, err, sizeof(err)),
                 RILL_OK, "%s", err);
    rill_aid_t prod, src;
    cr_assert_eq(rill_producer_spawn(sys, pc, NULL, &prod, err, sizeof(err)), RILL_OK, "%s", err);
    atomic_store(&next_rec, 0);
    atomic_store(&delivered, 0);
    atomic_store(&failed, 0);
    cr_assert_eq(rill_stage_spawn(sys, rill_source_fn(gen_record, "from-rill"), NULL, &src, err,
                                  sizeof(err)),
                 RILL_OK, "%s", err);
    /* Delivery results come out of the producer (it completes after the
     * source did and everything was delivered). */
    rill_aid_t dsink;
    cr_assert_eq(rill_stage_spawn(sys, rill_sink_foreach(count_delivery, NULL), NULL, &dsink, err,
                                  sizeof(err)),
                 RILL_OK, "%s", err);
    cr_assert_eq(rill_stage_connect(sys, prod, dsink, NULL, 0), RILL_OK);
    cr_assert_eq(rill_stage_connect(sys, src, prod, NULL, 0), RILL_OK);
    int64_t deadline = proc_now_ms() + WAIT_MS;
    while (atomic_load(&delivered) + atomic_load(&failed) < N_RECORDS && proc_now_ms() < deadline)
        proc_nap_ms(10);
    cr_assert_eq(atomic_load(&delivered), N_RECORDS, "%d delivered, %d failed",
                 atomic_load(&delivered), atomic_load(&failed));
    cr_assert_eq(atomic_load(&failed), 0);

    /* kcat reads the topic as JSON. */
    char *consume[] = {(char *)kcat, "-C",        "-b", kbroker.boot, "-t", "from-rill",
                       "-o",         "beginning", "-e", "-q",         "-J", NULL};
    char *out = NULL;
    int st = proc_run(consume, NULL, 60000, &out);
    cr_assert_eq(st, 0, "kcat -C exited %d", st);
    char *seen = calloc(N_RECORDS, 1);
    long last_offset[3] = {-1, -1, -1};
    int last_index[3] = {-1, -1, -1};
    int lines = 0;
    for (char *save = NULL, *l = strtok_r(out, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        jrec_t r;
        cr_assert_eq(json_record(l, &r), 0, "kcat line: %s", l);
        int i = -1;
        cr_assert(r.key.p && sscanf(r.key.p, "key-%d", &i) == 1 && i >= 0 && i < N_RECORDS,
                  "key %s", r.key.p ? r.key.p : "(null)");
        char want_key[32], want_value[128];
        int kl = snprintf(want_key, sizeof(want_key), "key-%d", i);
        int vl = value_of(i, want_value, sizeof(want_value));
        cr_assert_eq(r.key.n, (size_t)kl);
        cr_assert_eq(memcmp(r.key.p, want_key, (size_t)kl), 0);
        cr_assert(r.payload.p, "record %d has no value", i);
        cr_assert_eq(r.payload.n, (size_t)vl, "record %d: value of %zu bytes: %s", i, r.payload.n,
                     r.payload.p);
        cr_assert_eq(memcmp(r.payload.p, want_value, (size_t)vl), 0, "record %d: %s", i,
                     r.payload.p);
        hdrs_t h;
        headers_of(i, &h);
        cr_assert_eq(r.nh, N_HEADERS, "record %d has %d headers", i, r.nh);
        for (int j = 0; j < N_HEADERS; j++) {
            cr_assert_str_eq(r.hname[j].p, h.h[j].name, "record %d header %d", i, j);
            cr_assert_not_null(r.hval[j].p, "record %d header %s is null", i, h.h[j].name);
            cr_assert_eq(r.hval[j].n, h.h[j].value_len, "record %d header %s: %zu bytes", i,
                         h.h[j].name, r.hval[j].n);
            cr_assert_eq(memcmp(r.hval[j].p, h.h[j].value, h.h[j].value_len), 0,
                         "record %d header %s differs", i, h.h[j].name);
        }
        /* Per partition, in the order produced (one producer, keyed). */
        cr_assert(r.partition >= 0 && r.partition < 3);
        cr_assert_gt(r.offset, last_offset[r.partition]);
        cr_assert_gt(i, last_index[r.partition], "partition %ld: record %d after %d", r.partition,
                     i, last_index[r.partition]);
        last_offset[r.partition] = r.offset;
        last_index[r.partition] = i;
        cr_assert_not(seen[i], "record %d twice", i);
        seen[i] = 1;
        lines++;
        jrec_free(&r);
    }
    cr_assert_eq(lines, N_RECORDS, "kcat read %d of %d records", lines, N_RECORDS);
    free(out);
    free(seen);

    cr_assert_eq(rill_system_stop(sys, 20000), RILL_OK);
    rill_system_destroy(sys);
    broker_stop();
}

/* ------------------------------------------------------------------ */
/* 2. kcat produces, rill's consumer actor reads                       */
/* ------------------------------------------------------------------ */

typedef struct got {
    char *key, *value;
    size_t key_len, value_len;
    int32_t partition;
    int64_t offset;
    size_t nh;
    char *hname[16];
    char *hval[16]; /* NULL for a null value */
    size_t hlen[16];
} got_t;

typedef struct collect {
    pthread_mutex_t mu;
    rill_system_t *sys;
    rill_aid_t consumer;
    got_t recs[N_RECORDS * 2];
    size_t n;
    long confirm_errors, no_record;
} collect_t;

static char *dup_bytes(const void *p, size_t n)
{
    char *d = malloc(n + 1);
    if (n)
        memcpy(d, p, n);
    d[n] = '\0';
    return d;
}

static rill_err_t collect_sink(void *opaque, rill_elem_t *e)
{
    collect_t *c = opaque;
    const rd_kafka_message_t *m = rill_record(e);
    pthread_mutex_lock(&c->mu);
    if (!m)
        c->no_record++;
    else if (c->n < N_RECORDS * 2) {
        got_t *g = &c->recs[c->n++];
        g->key = m->key ? dup_bytes(m->key, m->key_len) : NULL;
        g->key_len = m->key_len;
        g->value = m->payload ? dup_bytes(m->payload, m->len) : NULL;
        g->value_len = m->len;
        g->partition = m->partition;
        g->offset = m->offset;
        rd_kafka_headers_t *hs = NULL;
        if (rd_kafka_message_headers(m, &hs) == RD_KAFKA_RESP_ERR_NO_ERROR) {
            const char *name;
            const void *val;
            size_t len;
            for (size_t i = 0; g->nh < 16 && rd_kafka_header_get_all(hs, i, &name, &val, &len) == 0;
                 i++) {
                g->hname[g->nh] = dup_bytes(name, strlen(name));
                g->hval[g->nh] = val ? dup_bytes(val, len) : NULL;
                g->hlen[g->nh] = len;
                g->nh++;
            }
        }
    }
    if (!m)
        c->confirm_errors++;
    pthread_mutex_unlock(&c->mu);
    rill_elem_release(e); /* the sink confirms it: RILL_OK */
    return RILL_OK;
}

static size_t collected(collect_t *c)
{
    pthread_mutex_lock(&c->mu);
    size_t n = c->n;
    pthread_mutex_unlock(&c->mu);
    return n;
}

/* kcat -H name=value pairs and what rill must see for them, in order. */
static const struct {
    const char *arg, *name, *value;
} kcat_headers[] = {
    {"trace=abc-123", "trace", "abc-123"},
    {"eq=a=b,c", "eq", "a=b,c"},
    {"empty=", "empty", ""},
    {"tag=x", "tag", "x"},
    {"tag=y", "tag", "y"},
    {"utf=gr\xc3\xbc\xc3\x9f \xe2\x82\xac", "utf", "gr\xc3\xbc\xc3\x9f \xe2\x82\xac"},
};
#define N_KCAT_HEADERS (sizeof(kcat_headers) / sizeof(kcat_headers[0]))

Test(kafka_interop, kcat_to_rill_consumer_keys_values_headers, .timeout = 90)
{
    const char *kcat = kcat_bin();
    broker_start("from-kcat:3:1", "from-kcat", 3);

    /* kcat produces N keyed records, every one with the same headers. */
    size_t cap = N_RECORDS * 64;
    char *input = malloc(cap), *p = input;
    for (int i = 0; i < N_RECORDS; i++)
        p += sprintf(p, "key-%d:value %d with: colons and \"quotes\"\n", i, i);
    char *argv[8 + 2 * N_KCAT_HEADERS + 1];
    int a = 0;
    argv[a++] = (char *)kcat;
    argv[a++] = "-P";
    argv[a++] = "-b";
    argv[a++] = kbroker.boot;
    argv[a++] = "-t";
    argv[a++] = "from-kcat";
    argv[a++] = "-K:";
    for (size_t i = 0; i < N_KCAT_HEADERS; i++) {
        argv[a++] = "-H";
        argv[a++] = (char *)kcat_headers[i].arg;
    }
    argv[a] = NULL;
    char *out = NULL;
    int st = proc_run(argv, input, 60000, &out);
    cr_assert_eq(st, 0, "kcat -P exited %d: %s", st, out ? out : "");
    free(out);
    free(input);

    /* rill's consumer actor reads every partition from the beginning. */
    rill_system_t *sys = system_new();
    static collect_t c;
    memset(&c, 0, sizeof(c));
    pthread_mutex_init(&c.mu, NULL);
    c.sys = sys;
    char err[512] = "";
    rill_consumer_conf_t *cc = rill_consumer_conf_new();
    cr_assert_eq(rill_consumer_conf_set(cc, "bootstrap.servers", kbroker.boot, err, sizeof(err)),
                 RILL_OK, "%s", err);
    cr_assert_eq(rill_consumer_conf_set(cc, "group.id", "interop", err, sizeof(err)), RILL_OK, "%s",
                 err);
    for (int part = 0; part < 3; part++)
        cr_assert_eq(rill_consumer_conf_assign(cc, "from-kcat", part, RILL_OFFSET_BEGINNING, err,
                                               sizeof(err)),
                     RILL_OK, "%s", err);
    cr_assert_eq(rill_consumer_spawn(sys, cc, NULL, &c.consumer, err, sizeof(err)), RILL_OK, "%s",
                 err);
    rill_aid_t sink;
    cr_assert_eq(
        rill_stage_spawn(sys, rill_sink_foreach(collect_sink, &c), NULL, &sink, err, sizeof(err)),
        RILL_OK, "%s", err);
    cr_assert_eq(rill_stage_connect(sys, c.consumer, sink, NULL, 0), RILL_OK);
    int64_t deadline = proc_now_ms() + WAIT_MS;
    while (collected(&c) < N_RECORDS && proc_now_ms() < deadline)
        proc_nap_ms(10);
    cr_assert_eq(collected(&c), N_RECORDS, "rill consumed %zu of %d records", collected(&c),
                 N_RECORDS);
    rill_consumer_stats_t cs = {0};
    deadline = proc_now_ms() + WAIT_MS;
    while (proc_now_ms() < deadline) {
        cr_assert_eq(rill_consumer_stats(sys, c.consumer, &cs), RILL_OK);
        if (cs.confirmed >= N_RECORDS)
            break;
        proc_nap_ms(10);
    }
    cr_assert_eq(cs.confirmed, N_RECORDS);
    cr_assert_eq(rill_system_stop(sys, 20000), RILL_OK);
    rill_system_destroy(sys);

    pthread_mutex_lock(&c.mu);
    cr_assert_eq(c.n, N_RECORDS, "more records than kcat wrote: %zu", c.n);
    cr_assert_eq(c.confirm_errors, 0);
    cr_assert_eq(c.no_record, 0);
    char *seen = calloc(N_RECORDS, 1);
    int64_t last[3] = {-1, -1, -1};
    for (size_t r = 0; r < c.n; r++) {
        got_t *g = &c.recs[r];
        int i = -1;
        cr_assert(g->key && sscanf(g->key, "key-%d", &i) == 1 && i >= 0 && i < N_RECORDS, "key %s",
                  g->key ? g->key : "(null)");
        char want_key[32], want_value[96];
        int kl = snprintf(want_key, sizeof(want_key), "key-%d", i);
        int vl =
            snprintf(want_value, sizeof(want_value), "value %d with: colons and \"quotes\"", i);
        cr_assert_eq(g->key_len, (size_t)kl);
        cr_assert_str_eq(g->key, want_key);
        cr_assert_not_null(g->value);
        cr_assert_eq(g->value_len, (size_t)vl, "record %d: %s", i, g->value);
        cr_assert_str_eq(g->value, want_value);
        cr_assert_eq(g->nh, N_KCAT_HEADERS, "record %d has %zu headers", i, g->nh);
        for (size_t j = 0; j < N_KCAT_HEADERS; j++) {
            cr_assert_str_eq(g->hname[j], kcat_headers[j].name);
            cr_assert_not_null(g->hval[j], "record %d header %s is null", i, g->hname[j]);
            cr_assert_eq(g->hlen[j], strlen(kcat_headers[j].value));
            cr_assert_str_eq(g->hval[j], kcat_headers[j].value);
        }
        cr_assert(g->partition >= 0 && g->partition < 3);
        cr_assert_gt(g->offset, last[g->partition], "partition %d out of order", g->partition);
        last[g->partition] = g->offset;
        cr_assert_not(seen[i], "record %d twice", i);
        seen[i] = 1;
    }
    for (size_t r = 0; r < c.n; r++) {
        got_t *g = &c.recs[r];
        free(g->key);
        free(g->value);
        for (size_t j = 0; j < g->nh; j++) {
            free(g->hname[j]);
            free(g->hval[j]);
        }
    }
    pthread_mutex_unlock(&c.mu);
    free(seen);
    broker_stop();
}
