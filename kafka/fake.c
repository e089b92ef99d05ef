/*
 * Fake consumed records, for the stage harness (harness.c): elements that
 * rill_record() takes for Kafka records, made without a broker.
 *
 * A record's accessors that librdkafka reads from its private message
 * struct (rd_kafka_message_timestamp(), rd_kafka_message_headers()) cast
 * the rd_kafka_message_t to its rd_kafka_msg_t, of which it is the first
 * field, and read fields behind it. So a fake record is a zeroed block
 * larger than that struct, with the public rd_kafka_message_t at its
 * start, and the timestamp, its type and the headers written where this
 * librdkafka reads them. Those places are not taken from its private
 * header (they move between versions): they are measured once per
 * process, by calling the accessors on blocks filled with marks that name
 * their own offsets. A librdkafka whose accessors do not read fixed
 * offsets of the block fails the measurement, and push says so.
 *
 * m->rkt comes from one process-wide producer client with no brokers
 * (made on first use and kept until the process exits: records may
 * outlive every system); each record holds a reference of its topic.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "fake.h"
#include "kafka_int.h"

/* Bigger than rd_kafka_msg_t in every librdkafka 2.x (about 250 bytes). */
#define FAKE_MSG_SIZE 512

static struct {
    rd_kafka_t *rk;
    size_t ts_off, tstype_off, hdrs_off;
    char why[320]; /* empty when usable */
} fake;
static pthread_once_t fake_once = PTHREAD_ONCE_INIT;

static void quiet_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk, (void)level, (void)fac, (void)buf;
}

/* Where rd_kafka_message_timestamp() and rd_kafka_message_headers() read:
 * every aligned slot behind the public struct holds its own offset. */
static int measure(void)
{
    const size_t first = sizeof(rd_kafka_message_t);
    _Alignas(16) unsigned char b[FAKE_MSG_SIZE];
    const int64_t tag64 = INT64_C(0x5a5a000000000000);
    memset(b, 0, sizeof(b));
    for (size_t o = first; o + 8 <= sizeof(b); o += 8) {
        int64_t v = tag64 + (int64_t)o;
        memcpy(b + o, &v, 8);
    }
    rd_kafka_timestamp_type_t tt;
    int64_t ts = rd_kafka_message_timestamp((rd_kafka_message_t *)b, &tt);
    if ((ts & ~INT64_C(0xffff)) != tag64)
        return -1;
    fake.ts_off = (size_t)(ts - tag64);
    /* Pointers: the slot's offset, shifted so it is never NULL. */
    for (size_t o = first; o + sizeof(void *) <= sizeof(b); o += sizeof(void *)) {
        uintptr_t v = 0x10000 + o;
        memcpy(b + o, &v, sizeof(v));
    }
    rd_kafka_headers_t *hdrs = NULL;
    if (rd_kafka_message_headers((rd_kafka_message_t *)b, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return -1;
    uintptr_t hv = (uintptr_t)hdrs;
    if (hv < 0x10000 + first || hv >= 0x10000 + sizeof(b))
        return -1;
    fake.hdrs_off = hv - 0x10000;
    for (size_t o = first; o + 4 <= sizeof(b); o += 4) {
        int32_t v = 0x5a000000 + (int32_t)o;
        memcpy(b + o, &v, 4);
    }
    (void)rd_kafka_message_timestamp((rd_kafka_message_t *)b, &tt);
    int32_t t = (int32_t)tt;
    if ((t & ~0xffff) != 0x5a000000)
        return -1;
    fake.tstype_off = (size_t)(t - 0x5a000000);
    /* The three must be apart, or the measurement was fooled. */
    if (fake.tstype_off + 4 > fake.ts_off && fake.tstype_off < fake.ts_off + 8)
        return -1;
    if (fake.hdrs_off + sizeof(void *) > fake.ts_off && fake.hdrs_off < fake.ts_off + 8)
        return -1;
    return 0;
}

static void fake_init(void)
{
    if (measure() != 0) {
        snprintf(fake.why, sizeof(fake.why),
                 "librdkafka %s keeps message timestamps or headers where fake records cannot "
                 "imitate them",
                 rd_kafka_version_str());
        return;
    }
    char err[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, quiet_log); /* "no bootstrap.servers" is the point */
    rd_kafka_conf_set(conf, "client.id", "rill-testkit-fake", err, sizeof(err));
    fake.rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (!fake.rk) {
        rd_kafka_conf_destroy(conf);
        snprintf(fake.why, sizeof(fake.why), "cannot make the fake records' client: %s", err);
    }
}

void rill__fake_record_free(void *payload)
{
    unsigned char *b = payload;
    rd_kafka_message_t *m = payload;
    rd_kafka_headers_t *hdrs;
    /* Read from the block: rd_kafka_message_detach_headers() or
     * _set_headers() may have changed them. */
    memcpy(&hdrs, b + fake.hdrs_off, sizeof(hdrs));
    if (hdrs)
        rd_kafka_headers_destroy(hdrs);
    if (m->rkt)
        rd_kafka_topic_destroy(m->rkt);
    free(b);
}

rill_err_t rill__fake_record_new(const rill_testkit_record_t *r, rd_kafka_message_t **out,
                                 char *errstr, size_t errstr_size)
{
    *out = NULL;
    if (!r || !r->topic || !r->topic[0] || r->offset < 0 || r->partition < 0 ||
        (r->header_count && !r->headers))
        return rill__fail(RILL_EINVAL, errstr, errstr_size,
                          "a fake record needs a topic, a partition >= 0 and an offset >= 0");
    pthread_once(&fake_once, fake_init);
    if (fake.why[0])
        return rill__fail(RILL_EKAFKA, errstr, errstr_size, "%s", fake.why);
    size_t klen = r->key ? r->key_len : 0, vlen = r->value ? r->value_len : 0;
    unsigned char *b = calloc(1, FAKE_MSG_SIZE + klen + vlen + 2);
    if (!b)
        return rill__fail(RILL_ENOMEM, errstr, errstr_size, "out of memory");
    rd_kafka_message_t *m = (rd_kafka_message_t *)b;
    m->rkt = rd_kafka_topic_new(fake.rk, r->topic, NULL);
    if (!m->rkt) {
        free(b);
        return rill__fail(RILL_EINVAL, errstr, errstr_size, "topic \"%s\": %s", r->topic,
                          rd_kafka_err2str(rd_kafka_last_error()));
    }
    m->partition = r->partition;
    m->offset = r->offset;
    if (r->key) {
        m->key = b + FAKE_MSG_SIZE;
        m->key_len = klen;
        memcpy(m->key, r->key, klen);
    }
    if (r->value) {
        m->payload = b + FAKE_MSG_SIZE + klen + 1;
        m->len = vlen;
        memcpy(m->payload, r->value, vlen);
    }
    int64_t ts = r->timestamp < 0 ? -1 : r->timestamp;
    int32_t tt =
        r->timestamp < 0 ? RD_KAFKA_TIMESTAMP_NOT_AVAILABLE : RD_KAFKA_TIMESTAMP_CREATE_TIME;
    memcpy(b + fake.ts_off, &ts, sizeof(ts));
    memcpy(b + fake.tstype_off, &tt, sizeof(tt));
    if (r->header_count) {
        rd_kafka_headers_t *hdrs = rd_kafka_headers_new(r->header_count);
        for (size_t i = 0; i < r->header_count; i++) {
            const rill_testkit_header_t *x = &r->headers[i];
            if (!x->name) {
                rd_kafka_headers_destroy(hdrs);
                rd_kafka_topic_destroy(m->rkt);
                free(b);
                return rill__fail(RILL_EINVAL, errstr, errstr_size, "header %zu has no name", i);
            }
            rd_kafka_header_add(hdrs, x->name, -1, x->value, x->value ? (ssize_t)x->value_len : -1);
        }
        memcpy(b + fake.hdrs_off, &hdrs, sizeof(hdrs));
    }
    *out = m;
    return RILL_OK;
}
