/*
 * Test helpers: produce records (given or generated) and wait for their
 * delivery, read a topic back without joining a group, and check what was
 * read against the generator.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

#include <rill/testkit.h>

#include "../kafka/kconf.h"

#define DEFAULT_TIMEOUT_MS 30000
#define DEFAULT_VALUE_SIZE 100

static int opts_timeout(const rill_testkit_opts_t *opts)
{
    return opts && opts->timeout_ms > 0 ? opts->timeout_ms : DEFAULT_TIMEOUT_MS;
}

/* Calls the progress callback roughly every 1% and always at the end. */
typedef struct progress {
    const rill_testkit_opts_t *opts;
    size_t total;
    size_t next; /* report when done reaches this */
} progress_t;

static void progress_init(progress_t *p, const rill_testkit_opts_t *opts, size_t total)
{
    p->opts = opts;
    p->total = total;
    p->next = total / 100 ? total / 100 : 1;
}

static void progress_tick(progress_t *p, size_t done)
{
    if (!p->opts || !p->opts->progress || done < p->next)
        return;
    p->opts->progress(p->opts->opaque, done, p->total);
    size_t step = p->total / 100 ? p->total / 100 : 1;
    p->next = done + step;
}

static void progress_end(progress_t *p, size_t done)
{
    if (p->opts && p->opts->progress)
        p->opts->progress(p->opts->opaque, done, p->total);
}

/* ------------------------------------------------------------------ */
/* Generator                                                           */
/* ------------------------------------------------------------------ */

typedef struct gen_buf {
    char key[32];
    char seq[24];
    char *value; /* value_size bytes, or the prefix when longer */
    size_t value_cap;
    rill_testkit_header_t headers[2];
} gen_buf_t;

static const rill_gen_t gen_defaults = RILL_GEN_DEFAULT;

static size_t gen_value_size(const rill_gen_t *g)
{
    return g->value_size ? g->value_size : DEFAULT_VALUE_SIZE;
}

static int gen_buf_init(gen_buf_t *gb, const rill_gen_t *g)
{
    /* The prefix "seq=<20 digits> key=key-<20 digits> " fits in 64 bytes. */
    gb->value_cap = gen_value_size(g) > 64 ? gen_value_size(g) : 64;
    gb->value = malloc(gb->value_cap + 1);
    return gb->value ? 0 : -1;
}

static void gen_buf_free(gen_buf_t *gb)
{
    free(gb->value);
}

/* Fill rec with generated record `seq`; pointers point into gb. */
static void gen_fill(const rill_gen_t *g, uint64_t seq, gen_buf_t *gb, rill_testkit_record_t *rec)
{
    uint64_t k = g->key_space ? seq % g->key_space : seq;
    int klen = snprintf(gb->key, sizeof(gb->key), "key-%" PRIu64, k);
    int plen = snprintf(gb->value, gb->value_cap + 1, "seq=%" PRIu64 " key=%s ", seq, gb->key);
    size_t vlen = gen_value_size(g);
    if (vlen < (size_t)plen)
        vlen = (size_t)plen;
    memset(gb->value + plen, '.', vlen - (size_t)plen);

    memset(rec, 0, sizeof(*rec));
    rec->partition = g->pinned ? g->partition : RILL_PARTITION_ANY;
    rec->offset = -1;
    rec->key = gb->key;
    rec->key_len = (size_t)klen;
    rec->value = gb->value;
    rec->value_len = vlen;
    if (g->headers) {
        int slen = snprintf(gb->seq, sizeof(gb->seq), "%" PRIu64, seq);
        gb->headers[0] = (rill_testkit_header_t){"rill-seq", gb->seq, (size_t)slen};
        gb->headers[1] = (rill_testkit_header_t){"rill-gen", "testkit", 7};
        rec->headers = gb->headers;
        rec->header_count = 2;
    }
}

/* ------------------------------------------------------------------ */
/* Produce                                                             */
/* ------------------------------------------------------------------ */

typedef struct produce_ctx {
    size_t delivered;
    size_t failed;
    rd_kafka_resp_err_t first_err;
} produce_ctx_t;

static void dr_msg_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    produce_ctx_t *ctx = opaque;
    if (m->err) {
        if (!ctx->failed)
            ctx->first_err = m->err;
        ctx->failed++;
    } else {
        ctx->delivered++;
    }
}

/* Supplies record i; `gb` is scratch space for generated records. */
typedef const rill_testkit_record_t *(*record_source_fn)(void *src, size_t i, gen_buf_t *gb,
                                                         rill_testkit_record_t *scratch);

static const rill_testkit_record_t *source_array(void *src, size_t i, gen_buf_t *gb,
                                                 rill_testkit_record_t *scratch)
{
    (void)gb;
    (void)scratch;
    return &((const rill_testkit_record_t *)src)[i];
}

static const rill_testkit_record_t *source_gen(void *src, size_t i, gen_buf_t *gb,
                                               rill_testkit_record_t *scratch)
{
    const rill_gen_t *g = src;
    gen_fill(g, g->first_seq + i, gb, scratch);
    return scratch;
}

/* A client of `type` from conf (taken, also on error): rill's defaults
 * (NULL-terminated key/value list), then `more` over them (same form;
 * NULL: none), then the caller's own opts->config over both. */
static rill_err_t client_new(rd_kafka_type_t type, rd_kafka_conf_t *conf,
                             const char *const *defaults, const char *const *more,
                             const rill_testkit_opts_t *opts, rd_kafka_t **out, char *errstr,
                             size_t errstr_size)
{
    rill_err_t err = rill__conf_apply(conf, defaults, errstr, errstr_size);
    if (!err)
        err = rill__conf_apply(conf, more, errstr, errstr_size);
    if (!err)
        err = rill__conf_apply(conf, opts ? opts->config : NULL, errstr, errstr_size);
    if (err) {
        rd_kafka_conf_destroy(conf);
        return err;
    }
    char kerr[512];
    rd_kafka_t *rk = rd_kafka_new(type, conf, kerr, sizeof(kerr));
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        return rill__fail(RILL_EKAFKA, errstr, errstr_size, "%s", kerr);
    }
    *out = rk;
    return RILL_OK;
}

static rill_err_t producer_new(const char *bootstraps, const rill_testkit_opts_t *opts,
                               produce_ctx_t *ctx, rd_kafka_t **out, char *errstr,
                               size_t errstr_size)
{
    char timeout[24];
    snprintf(timeout, sizeof(timeout), "%d", opts_timeout(opts));
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set_dr_msg_cb(conf, dr_msg_cb);
    rd_kafka_conf_set_opaque(conf, ctx);
    const char *defaults[] = {"bootstrap.servers", bootstraps, "client.id", "rill-testkit-producer",
                              "enable.idempotence", "true", "linger.ms", "5",
                              /* keys land where Java producers put them */
                              "partitioner", "murmur2_random", "message.timeout.ms", timeout, NULL};
    /* Immune to the mock's loss under injected Produce errors. */
    return client_new(RD_KAFKA_PRODUCER, conf, defaults, rill_testkit_produce_faults_config(), opts,
                      out, errstr, errstr_size);
}

static rd_kafka_resp_err_t produce_one(rd_kafka_t *rk, const char *topic,
                                       const rill_testkit_record_t *r)
{
    rd_kafka_headers_t *hdrs = NULL;
    if (r->header_count) {
        hdrs = rd_kafka_headers_new(r->header_count);
        for (size_t h = 0; h < r->header_count; h++)
            rd_kafka_header_add(hdrs, r->headers[h].name, -1, r->headers[h].value,
                                (ssize_t)r->headers[h].value_len);
    }
    rd_kafka_resp_err_t err = rd_kafka_producev(
        rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(r->partition),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_KEY(r->key, r->key_len),
        RD_KAFKA_V_VALUE((void *)r->value, r->value_len), RD_KAFKA_V_TIMESTAMP(r->timestamp),
        RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_END);
    /* On failure the headers stay ours. */
    if (err && hdrs)
        rd_kafka_headers_destroy(hdrs);
    return err;
}

static rill_err_t produce_from(const char *bootstraps, const char *topic, record_source_fn source,
                               void *src, size_t count, const rill_gen_t *g,
                               const rill_testkit_opts_t *opts, char *errstr, size_t errstr_size)
{
    if (!bootstraps)
        return rill__fail(RILL_EINVAL, errstr, errstr_size, "bootstrap servers are NULL");
    rill_err_t err = rill__topic_name_check(topic, errstr, errstr_size);
    if (err)
        return err;

    int64_t deadline = rill__now_ms() + opts_timeout(opts);
    produce_ctx_t ctx = {0};
    rd_kafka_t *rk = NULL;
    err = producer_new(bootstraps, opts, &ctx, &rk, errstr, errstr_size);
    if (err)
        return err;

    gen_buf_t gb = {0};
    if (g && gen_buf_init(&gb, g)) {
        rd_kafka_destroy(rk);
        return rill__fail(RILL_ENOMEM, errstr, errstr_size, "out of memory");
    }

    progress_t prog;
    progress_init(&prog, opts, count);
    rill_testkit_record_t scratch;
    size_t i;
    err = RILL_OK;
    for (i = 0; i < count && !err; i++) {
        const rill_testkit_record_t *r = source(src, i, &gb, &scratch);
        rd_kafka_resp_err_t kerr;
        while ((kerr = produce_one(rk, topic, r)) == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            if (rill__ms_left(deadline) == 0) {
                err = RILL_ETIMEDOUT;
                break;
            }
            rd_kafka_poll(rk, 10);
            progress_tick(&prog, ctx.delivered);
        }
        if (!err && kerr) {
            err = rill__fail(RILL_EKAFKA, errstr, errstr_size, "producing record %zu to %s: %s", i,
                             topic, rd_kafka_err2str(kerr));
            break;
        }
        if ((i & 1023) == 0) {
            rd_kafka_poll(rk, 0);
            progress_tick(&prog, ctx.delivered);
        }
    }
    size_t enqueued = err ? i - 1 : i;
    while (rd_kafka_outq_len(rk) > 0 && rill__ms_left(deadline) > 0) {
        int left = rill__ms_left(deadline);
        rd_kafka_flush(rk, left < 100 ? left : 100);
        progress_tick(&prog, ctx.delivered);
    }
    progress_end(&prog, ctx.delivered);

    char fatal[256];
    rd_kafka_resp_err_t fatal_err = rd_kafka_fatal_error(rk, fatal, sizeof(fatal));
    if (err == RILL_EKAFKA) {
        /* errstr already names the record that could not be enqueued */
    } else if (fatal_err) {
        err = rill__fail(RILL_EKAFKA, errstr, errstr_size,
                         "producer fatal error after %zu of %zu records delivered: %s",
                         ctx.delivered, count, fatal);
    } else if (ctx.failed) {
        err = rill__fail(RILL_EKAFKA, errstr, errstr_size,
                         "%zu of %zu records failed delivery to %s (first error: %s)", ctx.failed,
                         count, topic, rd_kafka_err2str(ctx.first_err));
    } else if (err == RILL_ETIMEDOUT || ctx.delivered < count) {
        err = rill__fail(RILL_ETIMEDOUT, errstr, errstr_size,
                         "timed out after %d ms: %zu of %zu records enqueued, %zu delivered to %s",
                         opts_timeout(opts), enqueued, count, ctx.delivered, topic);
    }
    gen_buf_free(&gb);
    /* Undelivered records are purged so destroy does not wait for them. */
    rd_kafka_purge(rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_poll(rk, 0);
    rd_kafka_destroy(rk);
    return err;
}

rill_err_t rill_testkit_produce(const char *bootstraps, const char *topic,
                                const rill_testkit_record_t *records, size_t count,
                                const rill_testkit_opts_t *opts, char *errstr, size_t errstr_size)
{
    if (!records && count > 0)
        return rill__fail(RILL_EINVAL, errstr, errstr_size, "records are NULL");
    for (size_t i = 0; i < count; i++) {
        if (records[i].header_count && !records[i].headers)
            return rill__fail(RILL_EINVAL, errstr, errstr_size,
                              "record %zu has %zu headers but a NULL header array", i,
                              records[i].header_count);
        for (size_t h = 0; h < records[i].header_count; h++)
            if (!records[i].headers[h].name)
                return rill__fail(RILL_EINVAL, errstr, errstr_size,
                                  "record %zu: header %zu has a NULL name", i, h);
    }
    return produce_from(bootstraps, topic, source_array, (void *)records, count, NULL, opts, errstr,
                        errstr_size);
}

rill_err_t rill_testkit_produce_generated(const char *bootstraps, const char *topic, size_t count,
                                          const rill_gen_t *gen, const rill_testkit_opts_t *opts,
                                          char *errstr, size_t errstr_size)
{
    const rill_gen_t *g = gen ? gen : &gen_defaults;
    return produce_from(bootstraps, topic, source_gen, (void *)g, count, g, opts, errstr,
                        errstr_size);
}

/* ------------------------------------------------------------------ */
/* Consume                                                             */
/* ------------------------------------------------------------------ */

struct rill_consumed {
    char *topic;
    rill_testkit_record_t *records;
    void **blocks; /* blocks[i] holds record i's key, value and headers */
    size_t count;
    size_t cap;
};

size_t rill_consumed_count(const rill_consumed_t *c)
{
    return c ? c->count : 0;
}

const rill_testkit_record_t *rill_consumed_at(const rill_consumed_t *c, size_t i)
{
    return c && i < c->count ? &c->records[i] : NULL;
}

void rill_consumed_destroy(rill_consumed_t *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->count; i++)
        free(c->blocks[i]);
    free(c->blocks);
    free(c->records);
    free(c->topic);
    free(c);
}

/* Copy a Kafka message into c: one allocation per record. */
static int consumed_append(rill_consumed_t *c, const rd_kafka_message_t *m)
{
    if (c->count == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 1024;
        rill_testkit_record_t *r = realloc(c->records, cap * sizeof(*r));
        if (!r)
            return -1;
        c->records = r;
        void **b = realloc(c->blocks, cap * sizeof(*b));
        if (!b)
            return -1;
        c->blocks = b;
        c->cap = cap;
    }
    rd_kafka_headers_t *hdrs = NULL;
    size_t hcnt = 0, hbytes = 0;
    if (rd_kafka_message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        hcnt = rd_kafka_header_cnt(hdrs);
        const char *name;
        const void *val;
        size_t vlen;
        for (size_t h = 0; !rd_kafka_header_get_all(hdrs, h, &name, &val, &vlen); h++)
            hbytes += strlen(name) + 1 + vlen;
    }
    /* Layout: [header array][key][value][header names and values]; at
     * least one byte so that malloc never returns NULL for success. */
    size_t size = hcnt * sizeof(rill_testkit_header_t) + m->key_len + m->len + hbytes + 1;
    char *block = malloc(size);
    if (!block)
        return -1;
    rill_testkit_header_t *hv = (rill_testkit_header_t *)block;
    char *p = block + hcnt * sizeof(rill_testkit_header_t);

    rill_testkit_record_t *r = &c->records[c->count];
    memset(r, 0, sizeof(*r));
    r->topic = c->topic;
    r->partition = m->partition;
    r->offset = m->offset;
    r->timestamp = rd_kafka_message_timestamp(m, NULL);
    r->key = m->key ? p : NULL;
    r->key_len = m->key_len;
    if (m->key_len)
        memcpy(p, m->key, m->key_len);
    p += m->key_len;
    r->value = m->payload ? p : NULL;
    r->value_len = m->len;
    if (m->len)
        memcpy(p, m->payload, m->len);
    p += m->len;
    for (size_t h = 0; h < hcnt; h++) {
        const char *name;
        const void *val;
        size_t vlen;
        rd_kafka_header_get_all(hdrs, h, &name, &val, &vlen);
        size_t nlen = strlen(name) + 1;
        memcpy(p, name, nlen);
        hv[h].name = p;
        p += nlen;
        hv[h].value = val ? p : NULL;
        hv[h].value_len = vlen;
        if (vlen)
            memcpy(p, val, vlen);
        p += vlen;
    }
    r->headers = hcnt ? hv : NULL;
    r->header_count = hcnt;
    c->blocks[c->count++] = block;
    return 0;
}

static rill_err_t consumer_new(const char *bootstraps, const rill_testkit_opts_t *opts,
                               rd_kafka_t **out, char *errstr, size_t errstr_size)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    /* A group id is required by the consumer API, but the group is never
     * joined (partitions are assigned by hand) and nothing is committed. */
    const char *defaults[] = {"bootstrap.servers", bootstraps, "client.id", "rill-testkit-consumer",
                              "group.id", "rill-testkit", "enable.auto.commit", "false",
                              "enable.auto.offset.store", "false", "enable.partition.eof", "true",
                              "auto.offset.reset", "earliest",
                              /* a short fetch wait so the tail of a partition
                               * is not held back by the broker's long poll */
                              "fetch.wait.max.ms", "50", NULL};
    return client_new(RD_KAFKA_CONSUMER, conf, defaults, NULL, opts, out, errstr, errstr_size);
}

/*
 * Number of partitions of topic. Asks for metadata of all topics: a request
 * naming the topic (or a topic handle, whose refreshes name it) may
 * auto-create it on brokers that allow that, and reading must not create.
 * A topic that stays unknown for a second does not exist.
 */
static rill_err_t topic_partitions(rd_kafka_t *rk, const char *topic, int64_t deadline, int *out,
                                   char *errstr, size_t errstr_size)
{
    rd_kafka_resp_err_t last = RD_KAFKA_RESP_ERR__TIMED_OUT;
    int64_t unknown_since = -1;
    while (rill__ms_left(deadline) > 0) {
        const rd_kafka_metadata_t *md = NULL;
        int left = rill__ms_left(deadline);
        last = rd_kafka_metadata(rk, 1, NULL, &md, left < 1000 ? left : 1000);
        if (!last) {
            int found = 0;
            for (int i = 0; i < md->topic_cnt && !found; i++) {
                if (strcmp(md->topics[i].topic, topic))
                    continue;
                found = 1;
                last = md->topics[i].err;
                if (!last && md->topics[i].partition_cnt > 0) {
                    *out = md->topics[i].partition_cnt;
                    rd_kafka_metadata_destroy(md);
                    return RILL_OK;
                }
            }
            rd_kafka_metadata_destroy(md);
            if (!found) {
                last = RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART;
                if (unknown_since < 0)
                    unknown_since = rill__now_ms();
                else if (rill__now_ms() - unknown_since >= 1000)
                    return rill__fail(RILL_ENOENT, errstr, errstr_size, "topic %s does not exist",
                                      topic);
            }
        }
        rd_kafka_poll(rk, 50);
    }
    return rill__fail(RILL_ETIMEDOUT, errstr, errstr_size,
                      "no metadata for topic %s before the deadline: %s", topic,
                      rd_kafka_err2str(last));
}

rill_err_t rill_testkit_consume(const char *bootstraps, const char *topic, size_t expect,
                                const rill_testkit_opts_t *opts, rill_consumed_t **out,
                                char *errstr, size_t errstr_size)
{
    if (!out)
        return rill__fail(RILL_EINVAL, errstr, errstr_size, "out is NULL");
    *out = NULL;
    if (!bootstraps)
        return rill__fail(RILL_EINVAL, errstr, errstr_size, "bootstrap servers are NULL");
    rill_err_t err = rill__topic_name_check(topic, errstr, errstr_size);
    if (err)
        return err;

    int64_t deadline = rill__now_ms() + opts_timeout(opts);
    rd_kafka_t *rk = NULL;
    err = consumer_new(bootstraps, opts, &rk, errstr, errstr_size);
    if (err)
        return err;

    int nparts = 0;
    int64_t *end = NULL;
    char *done = NULL;
    rd_kafka_topic_partition_list_t *parts = NULL;
    rill_consumed_t *c = calloc(1, sizeof(*c));
    err = topic_partitions(rk, topic, deadline, &nparts, errstr, errstr_size);
    if (err)
        goto out;
    if (!c || !(c->topic = strdup(topic)) || !(end = calloc((size_t)nparts, sizeof(*end))) ||
        !(done = calloc((size_t)nparts, 1))) {
        err = rill__fail(RILL_ENOMEM, errstr, errstr_size, "out of memory");
        goto out;
    }

    /*
     * Start every partition at its low watermark, as a concrete offset: a
     * logical offset (BEGINNING) for a partition whose leader the client
     * has not learnt yet waits for librdkafka 2.0.2's offset-query retry
     * timer, a fixed 500 ms stall.
     */
    int remaining = nparts;
    size_t total = expect;
    if (expect == RILL_CONSUME_TO_END)
        total = 0;
    parts = rd_kafka_topic_partition_list_new(nparts);
    for (int p = 0; p < nparts; p++) {
        int64_t lo = 0, hi = 0;
        rd_kafka_resp_err_t kerr =
            rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi, rill__ms_left(deadline));
        if (kerr) {
            err = rill__fail(kerr == RD_KAFKA_RESP_ERR__TIMED_OUT ? RILL_ETIMEDOUT : RILL_EKAFKA,
                             errstr, errstr_size, "watermarks of %s [%d]: %s", topic, p,
                             rd_kafka_err2str(kerr));
            goto out;
        }
        rd_kafka_topic_partition_list_add(parts, topic, p)->offset = lo;
        end[p] = hi;
        if (expect == RILL_CONSUME_TO_END) {
            total += (size_t)(hi - lo);
            if (hi <= lo) {
                done[p] = 1;
                remaining--;
            }
        }
    }

    rd_kafka_resp_err_t kerr = rd_kafka_assign(rk, parts);
    if (kerr) {
        err = rill__fail(RILL_EKAFKA, errstr, errstr_size, "assign %s: %s", topic,
                         rd_kafka_err2str(kerr));
        goto out;
    }

    progress_t prog;
    progress_init(&prog, opts, total);
    rd_kafka_resp_err_t last_err = RD_KAFKA_RESP_ERR_NO_ERROR;
    for (;;) {
        if (expect == RILL_CONSUME_TO_END ? remaining == 0 : c->count >= expect)
            break;
        int left = rill__ms_left(deadline);
        if (left == 0) {
            err = rill__fail(RILL_ETIMEDOUT, errstr, errstr_size,
                             "timed out after %d ms with %zu of %zu records from %s%s%s",
                             opts_timeout(opts), c->count, total, topic,
                             last_err ? "; last client error: " : "",
                             last_err ? rd_kafka_err2str(last_err) : "");
            break;
        }
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, left < 100 ? left : 100);
        if (!m)
            continue;
        int p = m->partition;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            if (expect == RILL_CONSUME_TO_END && p >= 0 && p < nparts && !done[p] &&
                m->offset >= end[p]) {
                done[p] = 1;
                remaining--;
            }
        } else if (m->err) {
            last_err = m->err;
            if (m->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART ||
                m->err == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC) {
                err = rill__fail(RILL_ENOENT, errstr, errstr_size, "topic %s: %s", topic,
                                 rd_kafka_message_errstr(m));
                rd_kafka_message_destroy(m);
                break;
            }
        } else if (expect != RILL_CONSUME_TO_END || (p < nparts && m->offset < end[p])) {
            if (consumed_append(c, m)) {
                err = rill__fail(RILL_ENOMEM, errstr, errstr_size, "out of memory");
                rd_kafka_message_destroy(m);
                break;
            }
            progress_tick(&prog, c->count);
            if (expect == RILL_CONSUME_TO_END && m->offset + 1 >= end[p] && !done[p]) {
                done[p] = 1;
                remaining--;
            }
        }
        rd_kafka_message_destroy(m);
    }
    progress_end(&prog, c->count);

out:
    if (parts)
        rd_kafka_topic_partition_list_destroy(parts);
    free(end);
    free(done);
    /* Never joined a group, so closing does not wait for a coordinator. */
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    if (err == RILL_OK || err == RILL_ETIMEDOUT)
        *out = c;
    else
        rill_consumed_destroy(c);
    return err;
}

/* ------------------------------------------------------------------ */
/* Verify                                                              */
/* ------------------------------------------------------------------ */

/* Parse "seq=<digits> " at the start of a value. */
static int parse_seq(const rill_testkit_record_t *r, uint64_t *seq)
{
    const char *v = r->value;
    size_t n = r->value_len;
    if (!v || n < 6 || memcmp(v, "seq=", 4) != 0)
        return -1;
    uint64_t s = 0;
    size_t i = 4;
    for (; i < n && i < 24 && v[i] >= '0' && v[i] <= '9'; i++)
        s = s * 10 + (uint64_t)(v[i] - '0');
    if (i == 4 || i >= n || v[i] != ' ')
        return -1;
    *seq = s;
    return 0;
}

static int bytes_eq(const void *a, size_t alen, const void *b, size_t blen)
{
    if (alen != blen || !a != !b)
        return 0;
    return alen == 0 || memcmp(a, b, alen) == 0;
}

static int record_matches(const rill_testkit_record_t *got, const rill_testkit_record_t *want)
{
    if (!bytes_eq(got->key, got->key_len, want->key, want->key_len) ||
        !bytes_eq(got->value, got->value_len, want->value, want->value_len) ||
        got->header_count != want->header_count)
        return 0;
    if (want->partition != RILL_PARTITION_ANY && got->partition != want->partition)
        return 0;
    for (size_t h = 0; h < want->header_count; h++)
        if (strcmp(got->headers[h].name, want->headers[h].name) ||
            !bytes_eq(got->headers[h].value, got->headers[h].value_len, want->headers[h].value,
                      want->headers[h].value_len))
            return 0;
    return 1;
}

rill_err_t rill_testkit_verify(const rill_consumed_t *c, size_t count, const rill_gen_t *gen,
                               rill_verify_report_t *report, char *errstr, size_t errstr_size)
{
    rill_verify_report_t rep = {0};
    rep.expected = count;
    if (report)
        *report = rep;
    if (!c)
        return rill__fail(RILL_EINVAL, errstr, errstr_size, "consumed records are NULL");
    const rill_gen_t *g = gen ? gen : &gen_defaults;

    uint32_t *seen = calloc(count ? count : 1, sizeof(*seen));
    gen_buf_t gb = {0};
    int32_t max_part = 0;
    for (size_t i = 0; i < c->count; i++)
        if (c->records[i].partition > max_part)
            max_part = c->records[i].partition;
    int64_t *last = malloc(((size_t)max_part + 1) * sizeof(*last));
    if (!seen || !last || gen_buf_init(&gb, g)) {
        free(seen);
        free(last);
        gen_buf_free(&gb);
        return rill__fail(RILL_ENOMEM, errstr, errstr_size, "out of memory");
    }
    for (int32_t p = 0; p <= max_part; p++)
        last[p] = -1;

    char first_problem[256] = "";
    for (size_t i = 0; i < c->count; i++) {
        const rill_testkit_record_t *r = &c->records[i];
        rep.seen++;
        uint64_t seq;
        if (parse_seq(r, &seq)) {
            rep.corrupt++;
            if (!*first_problem)
                snprintf(first_problem, sizeof(first_problem),
                         "record at %s [%d] offset %" PRId64 " was not made by the generator",
                         r->topic ? r->topic : "?", r->partition, r->offset);
            continue;
        }
        if (seq < g->first_seq || seq - g->first_seq >= count) {
            rep.unexpected++;
            if (!*first_problem)
                snprintf(first_problem, sizeof(first_problem),
                         "record seq %" PRIu64 " is outside the expected range", seq);
            continue;
        }
        rill_testkit_record_t want;
        gen_fill(g, seq, &gb, &want);
        if (!record_matches(r, &want)) {
            rep.corrupt++;
            if (!*first_problem)
                snprintf(first_problem, sizeof(first_problem),
                         "record seq %" PRIu64 " at [%d] offset %" PRId64
                         " differs from the generated one",
                         seq, r->partition, r->offset);
            continue;
        }
        size_t idx = (size_t)(seq - g->first_seq);
        if (seen[idx]++)
            rep.duplicates++;
        else
            rep.distinct++;
        if (r->partition >= 0) {
            if ((int64_t)seq < last[r->partition]) /* an order break */
                rep.out_of_order++;
            last[r->partition] = (int64_t)seq;
        }
    }
    rep.missing = count - rep.distinct;
    if (rep.missing && !*first_problem) {
        for (size_t i = 0; i < count; i++)
            if (!seen[i]) {
                snprintf(first_problem, sizeof(first_problem),
                         "%zu of %zu records missing, the first seq %" PRIu64, rep.missing, count,
                         g->first_seq + i);
                break;
            }
    }
    if (rep.duplicates && !*first_problem)
        snprintf(first_problem, sizeof(first_problem), "%zu duplicate records", rep.duplicates);
    free(seen);
    free(last);
    gen_buf_free(&gb);
    if (report)
        *report = rep;
    if (rep.missing || rep.duplicates || rep.unexpected || rep.corrupt)
        return rill__fail(RILL_ESTATE, errstr, errstr_size, "%s", first_problem);
    return RILL_OK;
}
