/*
 * Produce requests (include/rill/kafka.h): what the producer stage takes.
 * Made anywhere, freed by the producer after its delivery report (or by
 * whoever drops it).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <rill/kafka.h>

#include "../streams/stream_int.h"
#include "kafka_int.h"

/*
 * A request is one block: the struct, then its topic, key and value (a
 * pipeline makes one per record; four allocations each were a fifth of
 * the producer side's CPU). Made on an executor, the block comes from its
 * pool (actors/blocks.c) and goes back there when the producer frees it,
 * on that executor or another: no malloc on the steady path. The value is
 * handed to librdkafka without a copy (no RD_KAFKA_MSG_F_COPY): the
 * request outlives its message, as it is the message's opaque and freed
 * only after its delivery report (or when librdkafka refused it).
 */
static rill_produce_t *produce_alloc(const char *topic, const void *key, size_t key_len,
                                     const void *value, size_t value_len)
{
    size_t tl = strlen(topic) + 1;
    size_t kl = key ? key_len : 0, vl = value ? value_len : 0;
    if (kl > SIZE_MAX / 2 || vl > SIZE_MAX / 2 - kl - tl - sizeof(rill_produce_t))
        return NULL;
    rill_produce_t *p = rill__block_alloc(sizeof(*p) + tl + kl + vl);
    if (!p)
        return NULL;
    memset(p, 0, sizeof(*p));
    char *at = p->data;
    p->topic = memcpy(at, topic, tl);
    at += tl;
    if (key) {
        p->key = kl ? memcpy(at, key, kl) : at;
        at += kl;
    }
    if (value)
        p->value = vl ? memcpy(at, value, vl) : at;
    return p;
}

rill_produce_t *rill_produce_new(const char *topic, int32_t partition, const void *key,
                                 size_t key_len, const void *value, size_t value_len)
{
    /* Bad arguments are the sink's to report, with a sentence: the request
     * is made all the same (NULL means out of memory only). */
    char why[160];
    const char *bad = NULL;
    if (rill__topic_name_check(topic, why, sizeof(why)))
        bad = why;
    else if (partition < RILL_PARTITION_ANY)
        bad = "the partition is negative";
    else if ((!key && key_len) || (!value && value_len))
        bad = "a NULL key or value with a length";
    if (bad) {
        rill_produce_t *p = produce_alloc(topic ? topic : "", NULL, 0, NULL, 0);
        if (p && !(p->bad = strdup(bad))) {
            rill__block_free(p);
            return NULL;
        }
        return p;
    }
    rill_produce_t *p = produce_alloc(topic, key, key_len, value, value_len);
    if (!p)
        return NULL;
    p->partition = partition;
    p->key_len = key_len;
    p->value_len = value_len;
    p->has_value = value != NULL;
    return p;
}

rill_err_t rill_produce_add_header(rill_produce_t *p, const char *name, const void *value,
                                   size_t value_len)
{
    if (!p || !name || (!value && value_len))
        return RILL_EINVAL;
    if (!p->headers && !(p->headers = rd_kafka_headers_new(4)))
        return RILL_ENOMEM;
    rd_kafka_resp_err_t err =
        rd_kafka_header_add(p->headers, name, -1, value, value ? (ssize_t)value_len : -1);
    return err ? RILL_EKAFKA : RILL_OK;
}

rill_err_t rill_produce_set_timestamp(rill_produce_t *p, int64_t ms)
{
    if (!p)
        return RILL_EINVAL;
    p->timestamp = ms;
    return RILL_OK;
}

rill_err_t rill_produce_set_origin(rill_produce_t *p, rill_origin_t *o)
{
    if (!p) {
        rill_origin_release(o);
        return RILL_EINVAL;
    }
    rill__origin_absorb(&p->origin, o);
    return RILL_OK;
}

rill_err_t rill_produce_set_reply(rill_produce_t *p, rill_aid_t to, uint64_t arg)
{
    if (!p)
        return RILL_EINVAL;
    p->reply_to = to;
    p->reply_arg = arg;
    return RILL_OK;
}

void rill_produce_free(void *ptr)
{
    rill_produce_t *p = ptr;
    if (!p)
        return;
    /* Dropped without a successful delivery: never confirmed. */
    rill_origin_release(p->origin);
    if (p->headers)
        rd_kafka_headers_destroy(p->headers);
    free(p->bad);
    rill__block_free(p);
}

rill_elem_t rill_produce_elem(rill_produce_t *p)
{
    rill_elem_t e = {.payload = p, .dtor = p ? rill_produce_free : NULL};
    return e;
}
