/*
 * Consumed records as stream elements: the element's payload is the
 * rd_kafka_message_t itself (zero copy) and its destructor releases it.
 * Records may outlive the consumer that emitted them (and its run), so a
 * shared handle keeps the client alive until the last of them is released.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "fake.h"
#include "kafka_int.h"

rill__khandle_t *rill__khandle_new(void)
{
    rill__khandle_t *h = calloc(1, sizeof(*h));
    if (h)
        atomic_init(&h->refs, 1);
    return h;
}

void rill__khandle_ref_n(rill__khandle_t *h, long n)
{
    /* relaxed: new references are made from one the caller holds. */
    atomic_fetch_add_explicit(&h->refs, n, memory_order_relaxed);
}

void rill__khandle_unref(rill__khandle_t *h)
{
    rill__khandle_unref_n(h, 1);
}

void rill__khandle_unref_n(rill__khandle_t *h, long n)
{
    /* acq_rel: the last release sees every record's destroy done. */
    if (h && n > 0 && atomic_fetch_sub_explicit(&h->refs, n, memory_order_acq_rel) == n) {
        /* The session closed it (or the reaper finishes the close): on a
         * thread of its own, bounded (session.c). */
        rill__kclient_reap(h->rk, h->close_q, h->sticky_unsafe && !h->assigned_once);
        free(h);
    }
}

void rill__record_free(void *payload)
{
    rd_kafka_message_t *m = payload;
    rill__khandle_t *h = rd_kafka_topic_opaque(m->rkt);
    rd_kafka_message_destroy(m);
    rill__khandle_unref(h);
}

const rd_kafka_message_t *rill_record(const rill_elem_t *e)
{
    /* Fake records (fake.c) are records too, for stage tests. */
    return e && (e->dtor == rill__record_free || e->dtor == rill__fake_record_free) ? e->payload
                                                                                    : NULL;
}

uint64_t rill_record_key_hash(void *opaque, const rill_elem_t *e)
{
    (void)opaque;
    const rd_kafka_message_t *m = rill_record(e);
    if (!m || !m->key)
        return 0;
    /* FNV-1a, then a final mix: keys are short strings, mostly. */
    uint64_t h = 0xcbf29ce484222325ull;
    const unsigned char *k = m->key;
    for (size_t i = 0; i < m->key_len; i++) {
        h ^= k[i];
        h *= 0x100000001b3ull;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}

rill_err_t rill_record_confirm_upto(const rill_elem_t *e)
{
    rill_system_t *sys;
    rill_aid_t consumer;
    uint64_t part;
    int64_t offset;
    if (!rill_record(e) || !rill__origin_leaf(e->origin, &sys, &consumer, &part, &offset))
        return RILL_EINVAL;
    rill_msg_t m = {.type = RILL__CONSUMER_CONFIRM_UPTO, .arg = (uint64_t)offset, .corr = part};
    rill_err_t err = rill_tell(sys, consumer, &m);
    if (err == RILL_EFULL)
        err = rill_signal(sys, consumer, &m);
    return err;
}
