/*
 * Changelogs: configuration, the batches of changes the core sends, and
 * the restore the consumer's assignment hook runs (changelog.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../actors/util.h"
#include "../kafka/kafka_int.h"
#include "changelog.h"

/* ---------------------------------------------------------------- batches */

int rill__cl_batch_add(rill__cl_batch_t *b, const uint8_t *key, size_t kl, const void *val,
                       size_t vl, int tomb)
{
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64;
        rill__cl_change_t *v = realloc(b->v, cap * sizeof(*v));
        if (!v)
            return -1;
        b->v = v;
        b->cap = cap;
    }
    rill__cl_change_t *c = &b->v[b->n];
    c->key = malloc(kl);
    c->val = tomb ? NULL : malloc(vl ? vl : 1);
    if (!c->key || (!tomb && !c->val)) {
        free(c->key);
        free(c->val);
        return -1;
    }
    memcpy(c->key, key, kl);
    if (!tomb && vl)
        memcpy(c->val, val, vl);
    c->kl = kl;
    c->vl = tomb ? 0 : vl;
    c->tomb = tomb;
    b->n++;
    return 0;
}

void rill__cl_batch_clear(rill__cl_batch_t *b)
{
    for (size_t i = 0; i < b->n; i++) {
        free(b->v[i].key);
        free(b->v[i].val);
    }
    b->n = 0;
}

void rill__cl_batch_free(rill__cl_batch_t *b)
{
    rill__cl_batch_clear(b);
    free(b->v);
    b->v = NULL;
    b->cap = 0;
}

void rill__restored_free(rill__restored_t *r)
{
    if (!r)
        return;
    rill__cl_batch_free(&r->changes);
    rill__cl_batch_free(&r->reassert);
    free(r->topic);
    free(r);
}

/* ----------------------------------------------------------- configuration */

void rill__changelog_free(struct rill__changelog *cl)
{
    if (!cl)
        return;
    while (cl->pending) {
        rill__restored_t *r = cl->pending;
        cl->pending = r->next;
        rill__restored_free(r);
    }
    if (cl->reader) {
        rd_kafka_consumer_close(cl->reader);
        rd_kafka_destroy(cl->reader);
    }
    for (size_t i = 0; cl->conf && cl->conf[i]; i++)
        free(cl->conf[i]);
    free(cl->conf);
    free(cl->topic);
    pthread_mutex_destroy(&cl->lock);
    pthread_mutex_destroy(&cl->read_lock);
    pthread_mutex_destroy(&cl->jobs_lock);
    pthread_cond_destroy(&cl->jobs_cv);
    free(cl);
}

void rill__changelog_stats(struct rill__changelog *cl, rill_store_stats_t *out)
{
    if (!cl)
        return;
    /* Relaxed: counts of their own. */
    out->changelog_sent = atomic_load_explicit(&cl->sent, memory_order_relaxed);
    out->restored = atomic_load_explicit(&cl->restored, memory_order_relaxed);
    out->restores = atomic_load_explicit(&cl->restores, memory_order_relaxed);
    out->restoring = atomic_load_explicit(&cl->restoring, memory_order_relaxed);
}

rill_err_t rill_store_set_changelog(rill_store_t *store, const char *topic,
                                    const char *const *kafka_conf, char *errstr, size_t errstr_size)
{
    if (!store || !topic || !kafka_conf)
        return rill__fail(RILL_EINVAL, errstr, errstr_size,
                          "the store, the topic and the configuration must not be NULL");
    if (store->cl)
        return rill__fail(RILL_ESTATE, errstr, errstr_size, "store %s has a changelog already",
                          store->name);
    size_t tl = strlen(topic);
    if (tl == 0 || tl > RILL__TOPIC_MAX)
        return rill__fail(RILL_EINVAL, errstr, errstr_size,
                          "the changelog topic must be 1 to %d bytes", RILL__TOPIC_MAX);
    size_t n = 0;
    while (kafka_conf[n])
        n++;
    if (n % 2)
        return rill__fail(RILL_EINVAL, errstr, errstr_size,
                          "the configuration must be \"key\", \"value\" pairs ending with NULL");
    /* Every property must be one librdkafka takes. */
    rd_kafka_conf_t *probe = rd_kafka_conf_new();
    char why[256];
    for (size_t i = 0; i < n; i += 2)
        if (rd_kafka_conf_set(probe, kafka_conf[i], kafka_conf[i + 1], why, sizeof(why)) !=
            RD_KAFKA_CONF_OK) {
            rd_kafka_conf_destroy(probe);
            return rill__fail(RILL_EKAFKA, errstr, errstr_size, "changelog configuration: %s", why);
        }
    rd_kafka_conf_destroy(probe);
    struct rill__changelog *cl = calloc(1, sizeof(*cl));
    if (!cl || !(cl->topic = strdup(topic)) || !(cl->conf = calloc(n + 1, sizeof(char *)))) {
        if (cl)
            free(cl->topic);
        free(cl);
        return rill__fail(RILL_ENOMEM, errstr, errstr_size, "out of memory");
    }
    pthread_mutex_init(&cl->lock, NULL);
    pthread_mutex_init(&cl->read_lock, NULL);
    pthread_mutex_init(&cl->jobs_lock, NULL);
    pthread_cond_init(&cl->jobs_cv, NULL);
    cl->jobs_tail = &cl->jobs;
    for (size_t i = 0; i < n; i++)
        if (!(cl->conf[i] = strdup(kafka_conf[i]))) {
            rill__changelog_free(cl);
            return rill__fail(RILL_ENOMEM, errstr, errstr_size, "out of memory");
        }
    store->cl = cl;
    return RILL_OK;
}

rill_producer_conf_t *rill__changelog_producer_conf(const struct rill__changelog *cl, char *errstr,
                                                    size_t errstr_size)
{
    rill_producer_conf_t *pc = rill_producer_conf_new();
    if (!pc)
        return NULL;
    for (size_t i = 0; cl->conf[i]; i += 2)
        if (rill_producer_conf_set(pc, cl->conf[i], cl->conf[i + 1], errstr, errstr_size))
            goto fail;
    if (rill_producer_conf_set(pc, "rill.topics", cl->topic, errstr, errstr_size))
        goto fail;
    return pc;
fail:
    rill_producer_conf_destroy(pc);
    return NULL;
}

/* ----------------------------------------------------------------- restore */

/* An int64 of the store under (ns, topic, partition): RILL_OK, RILL_ENOENT. */
static rill_err_t read_i64(rill_store_t *s, int ns, const char *topic, int32_t partition,
                           int64_t *out)
{
    uint8_t key[RILL__ENCODED_KEY_MAX];
    size_t kl = rill__state_prefix(key, ns, topic, partition);
    if (!kl)
        return RILL_EINVAL;
    void *txn;
    rill_err_t err = s->ops->begin(s, 0, &txn, NULL, 0);
    if (err)
        return err;
    const void *v;
    size_t vl;
    err = s->ops->get(txn, key, kl, &v, &vl);
    if (!err && vl == 8)
        *out = rill__state_decode_i64(v);
    else if (!err)
        err = RILL_EIO;
    s->ops->abort(txn);
    return err;
}

static rd_kafka_t *reader_of(struct rill__changelog *cl, char *errstr, size_t errstr_size)
{
    if (cl->reader)
        return cl->reader;
    rd_kafka_conf_t *kc = rd_kafka_conf_new();
    for (size_t i = 0; cl->conf[i]; i += 2)
        rd_kafka_conf_set(kc, cl->conf[i], cl->conf[i + 1], NULL, 0); /* checked at set */
    rd_kafka_conf_set(kc, "enable.auto.commit", "false", NULL, 0);
    rd_kafka_conf_set(kc, "enable.auto.offset.store", "false", NULL, 0);
    rd_kafka_conf_set(kc, "enable.partition.eof", "true", NULL, 0);
    /* librdkafka's consumer wants a group even for assign (it never joins). */
    char gid[64];
    size_t gl = sizeof(gid);
    if (rd_kafka_conf_get(kc, "group.id", gid, &gl) != RD_KAFKA_CONF_OK || !gid[0])
        rd_kafka_conf_set(kc, "group.id", "rill-changelog-restore", NULL, 0);
    rill__kafka_quiet_log(kc);
    char why[256] = "";
    cl->reader = rd_kafka_new(RD_KAFKA_CONSUMER, kc, why, sizeof(why));
    if (!cl->reader) {
        rd_kafka_conf_destroy(kc);
        rill__fail(RILL_EKAFKA, errstr, errstr_size, "changelog reader: %s", why);
    }
    return cl->reader;
}

/* Read changelog partition `partition` from `from` to `end`, keeping the
 * complete transactions of (topic, partition) in r->changes; *last_offset
 * and *position: the input offset and the changelog position after the
 * last complete one (unchanged if there is none). */
static rill_err_t read_changelog(struct rill__changelog *cl, rill_assignment_t *asg, rd_kafka_t *rk,
                                 const char *topic, int32_t partition, int64_t from, int64_t end,
                                 rill__restored_t *r, int64_t *last_offset, int64_t *position,
                                 char *errstr, size_t errstr_size)
{
    uint8_t sp[RILL__ENCODED_KEY_MAX], op[RILL__ENCODED_KEY_MAX];
    size_t spl = rill__state_prefix(sp, RILL__NS_STATE, topic, partition);
    size_t opl = rill__state_prefix(op, RILL__NS_OFFSET, topic, partition);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, cl->topic, partition)->offset = from;
    rd_kafka_resp_err_t kerr = rd_kafka_assign(rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    if (kerr)
        return rill__fail(RILL_EKAFKA, errstr, errstr_size, "changelog %s [%d]: assign: %s",
                          cl->topic, (int)partition, rd_kafka_err2str(kerr));
    rill__cl_batch_t open = {0}; /* changes of the transaction being read */
    rill_err_t err = RILL_OK;
    int64_t pos = from, deadline = rill__now_ms() + 60000;
    for (unsigned n = 0; pos < end && !err; n++) {
        /* Still wanted? (every 1,024 records, and on each empty poll) */
        if (n % 1024 == 0 && ((asg && !rill_assignment_waiting(asg, topic, partition)) ||
                              atomic_load_explicit(&cl->restorer_stop, memory_order_relaxed))) {
            err = rill__fail(RILL_ESTOPPED, errstr, errstr_size, "%s [%d]: no longer assigned",
                             topic, (int)partition);
            break;
        }
        if (rill__now_ms() > deadline) {
            err = rill__fail(RILL_ETIMEDOUT, errstr, errstr_size,
                             "changelog %s [%d]: not read to %lld within 60 s (at %lld)", cl->topic,
                             (int)partition, (long long)end, (long long)pos);
            break;
        }
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (!m) {
            n = 1023; /* check at the next turn */
            continue;
        }
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            pos = m->offset > pos ? m->offset : pos;
        } else if (m->err) {
            if (m->err != RD_KAFKA_RESP_ERR__TRANSPORT &&
                m->err != RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN)
                err = rill__fail(RILL_EKAFKA, errstr, errstr_size, "changelog %s [%d]: %s",
                                 cl->topic, (int)partition, rd_kafka_message_errstr(m));
        } else if (m->partition == partition) {
            pos = m->offset + 1;
            const uint8_t *k = m->key;
            if (k && m->key_len > spl && !memcmp(k, sp, spl)) {
                if (rill__cl_batch_add(&open, k, m->key_len, m->payload, m->len, !m->payload))
                    err = RILL_ENOMEM;
            } else if (k && m->key_len == opl && !memcmp(k, op, opl) && m->len == 8) {
                /* A transaction is complete: the changes before its offset
                 * record (a dead writer's changes among them are followed
                 * by the next writer's re-assertions of their keys, see
                 * the tail below), and the offset. */
                for (size_t i = 0; i < open.n && !err; i++)
                    if (rill__cl_batch_add(&r->changes, open.v[i].key, open.v[i].kl, open.v[i].val,
                                           open.v[i].vl, open.v[i].tomb))
                        err = RILL_ENOMEM;
                if (!err && rill__cl_batch_add(&r->changes, k, m->key_len, m->payload, 8, 0))
                    err = RILL_ENOMEM;
                rill__cl_batch_clear(&open);
                *last_offset = rill__state_decode_i64(m->payload);
                *position = m->offset + 1;
            }
        }
        rd_kafka_message_destroy(m);
    }
    /* The tail: changes with no offset record after them, a writer's
     * flush cut short. Not applied; their keys are re-asserted (their
     * value here, or a tombstone) by the next flush, so that the changelog,
     * once compacted, holds no value of a transaction never completed. */
    for (size_t i = 0; i < open.n && !err; i++)
        if (rill__cl_batch_add(&r->reassert, open.v[i].key, open.v[i].kl, NULL, 0, 1))
            err = RILL_ENOMEM;
    rill__cl_batch_free(&open);
    rd_kafka_assign(rk, NULL);
    if (err == RILL_ENOMEM)
        rill__fail(err, errstr, errstr_size, "out of memory restoring %s [%d]", topic,
                   (int)partition);
    return err;
}

rill_err_t rill__changelog_restore(rill_store_t *s, rill_assignment_t *asg, const char *topic,
                                   int32_t partition, int64_t *offset, char *errstr,
                                   size_t errstr_size)
{
    struct rill__changelog *cl = s->cl;
    int64_t local = RD_KAFKA_OFFSET_BEGINNING, position = -1;
    rill_err_t err = read_i64(s, RILL__NS_OFFSET, topic, partition, &local);
    if (err == RILL_ENOENT)
        local = RD_KAFKA_OFFSET_BEGINNING;
    else if (err)
        return rill__fail(err, errstr, errstr_size, "store %s: cannot read the offset of %s [%d]",
                          s->name, topic, (int)partition);
    err = read_i64(s, RILL__NS_CLPOS, topic, partition, &position);
    if (err && err != RILL_ENOENT)
        return rill__fail(err, errstr, errstr_size,
                          "store %s: cannot read the changelog position of %s [%d]", s->name, topic,
                          (int)partition);
    pthread_mutex_lock(&cl->read_lock);
    rd_kafka_t *rk = reader_of(cl, errstr, errstr_size);
    int64_t lo = 0, hi = 0;
    rd_kafka_resp_err_t kerr =
        rk ? rd_kafka_query_watermark_offsets(rk, cl->topic, partition, &lo, &hi, 10000)
           : RD_KAFKA_RESP_ERR__FAIL;
    if (!rk || kerr) {
        pthread_mutex_unlock(&cl->read_lock);
        if (rk)
            rill__fail(RILL_EKAFKA, errstr, errstr_size, "changelog %s [%d]: end offsets: %s",
                       cl->topic, (int)partition, rd_kafka_err2str(kerr));
        return RILL_EKAFKA;
    }
    int64_t from = position > lo ? position : lo;
    *offset = local;
    if (from >= hi) { /* the store holds everything the changelog has */
        pthread_mutex_unlock(&cl->read_lock);
        return RILL_OK;
    }
    rill__restored_t *r = calloc(1, sizeof(*r));
    if (!r || !(r->topic = strdup(topic))) {
        free(r);
        pthread_mutex_unlock(&cl->read_lock);
        return rill__fail(RILL_ENOMEM, errstr, errstr_size, "out of memory");
    }
    r->partition = partition;
    atomic_fetch_add_explicit(&cl->restoring, 1, memory_order_relaxed);
    int64_t last = -1, newpos = -1;
    err = read_changelog(cl, asg, rk, topic, partition, from, hi, r, &last, &newpos, errstr,
                         errstr_size);
    atomic_fetch_sub_explicit(&cl->restoring, 1, memory_order_relaxed);
    pthread_mutex_unlock(&cl->read_lock);
    if (!err && last >= 0) {
        /* The position record last: the store holds the changelog up to it. */
        uint8_t pk[RILL__ENCODED_KEY_MAX], pv[8];
        size_t pkl = rill__state_prefix(pk, RILL__NS_CLPOS, topic, partition);
        rill__state_encode_i64(pv, newpos);
        if (rill__cl_batch_add(&r->changes, pk, pkl, pv, 8, 0))
            err = rill__fail(RILL_ENOMEM, errstr, errstr_size, "out of memory");
    }
    if (err || (last < 0 && !r->reassert.n)) {
        rill__restored_free(r); /* nothing after the store's position */
        return err;
    }
    pthread_mutex_lock(&cl->lock);
    /* Replace what an earlier restore of it left untaken: this one read
     * from the store's position too, so it holds all of that. */
    for (rill__restored_t **pp = &cl->pending; *pp; pp = &(*pp)->next)
        if ((*pp)->partition == partition && !strcmp((*pp)->topic, topic)) {
            rill__restored_t *old = *pp;
            *pp = old->next;
            rill__restored_free(old);
            break;
        }
    r->next = cl->pending;
    cl->pending = r;
    atomic_store_explicit(&cl->has_pending, 1, memory_order_release);
    /* release: a stage that reads the new value sees r in the list (the
     * lock orders the list itself). */
    atomic_fetch_add_explicit(&cl->pending_gen, 1, memory_order_release);
    atomic_fetch_add_explicit(&cl->restored, r->changes.n, memory_order_relaxed);
    if (last >= 0)
        atomic_fetch_add_explicit(&cl->restores, 1, memory_order_relaxed);
    pthread_mutex_unlock(&cl->lock);
    if (last >= 0)
        *offset = last;
    return RILL_OK;
}

rill__restored_t *rill__changelog_take(rill_store_t *s, const char *topic, int32_t partition)
{
    struct rill__changelog *cl = s->cl;
    /* acquire: pairs with the restore's release, so a pending list it made
     * is seen whole (the lock orders the rest). */
    if (!cl || !atomic_load_explicit(&cl->has_pending, memory_order_acquire))
        return NULL;
    rill__restored_t *found = NULL;
    pthread_mutex_lock(&cl->lock);
    for (rill__restored_t **pp = &cl->pending; *pp; pp = &(*pp)->next)
        if (!topic || ((*pp)->partition == partition && !strcmp((*pp)->topic, topic))) {
            found = *pp;
            *pp = found->next;
            found->next = NULL;
            break;
        }
    if (!cl->pending)
        atomic_store_explicit(&cl->has_pending, 0, memory_order_relaxed);
    pthread_mutex_unlock(&cl->lock);
    return found;
}
