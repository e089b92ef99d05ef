/* Helpers for the Kafka layer's tests: see kafka_kit.h. */
#include "kafka_kit.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rtest.h"

void kk_nap_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

/* ---- the environment --------------------------------------------------- */

void kk_env_init(kk_env_t *e)
{
    char err[512] = "";
    e->broker = rill_broker_new(1, err, sizeof(err));
    cr_assert_not_null(e->broker, "rill_broker_new: %s", err);
    e->boot = rill_broker_bootstraps(e->broker);
    e->sys = kit_system(2, 0, 0, 1);
    cr_assert_not_null(e->sys);
}

void kk_env_fini(kk_env_t *e)
{
    cr_assert_eq(rill_system_stop(e->sys, 30000), RILL_OK, "the system did not stop");
    rill_system_destroy(e->sys);
    rill_broker_destroy(e->broker);
}

/* ---- topics ------------------------------------------------------------ */

void kk_create_topic(kk_env_t *e, const char *topic, int parts)
{
    char err[512] = "";
    rill_err_t r = rill_broker_create_topic(e->broker, topic, parts, 1, err, sizeof(err));
    cr_assert_eq(r, RILL_OK, "creating %s: %s", topic, err);
}

void kk_produce_parts(const char *boot, const char *topic, int parts, size_t per, uint64_t base,
                      size_t value_size)
{
    char err[512] = "";
    rill_testkit_opts_t o = {.timeout_ms = 120000};
    for (int p = 0; p < parts; p++) {
        rill_gen_t g = RILL_GEN_DEFAULT;
        g.first_seq = base + (uint64_t)p * per;
        g.pinned = 1;
        g.partition = p;
        g.value_size = value_size;
        rill_err_t e = rill_testkit_produce_generated(boot, topic, per, &g, &o, err, sizeof(err));
        cr_assert_eq(e, RILL_OK, "producing to %s [%d]: %s", topic, p, err);
    }
}

void kk_load_topic(kk_env_t *e, const char *topic, int parts, size_t per, size_t value_size)
{
    kk_create_topic(e, topic, parts);
    kk_produce_parts(e->boot, topic, parts, per, 0, value_size);
}

rill_consumed_t *kk_consume_all(const char *boot, const char *topic, int timeout_ms)
{
    char err[512] = "";
    rill_testkit_opts_t o = {.timeout_ms = timeout_ms};
    rill_consumed_t *c = NULL;
    rill_err_t r = rill_testkit_consume(boot, topic, RILL_CONSUME_TO_END, &o, &c, err, sizeof(err));
    cr_assert_eq(r, RILL_OK, "reading %s: %s: %s", topic, rill_err_name(r), err);
    return c;
}

const char *kk_header(const rill_testkit_record_t *rec, const char *name, char *buf, size_t size)
{
    for (size_t i = 0; i < rec->header_count; i++)
        if (!strcmp(rec->headers[i].name, name)) {
            size_t n = rec->headers[i].value_len < size - 1 ? rec->headers[i].value_len : size - 1;
            memcpy(buf, rec->headers[i].value, n);
            buf[n] = '\0';
            return buf;
        }
    return NULL;
}

/* ---- committed offsets --------------------------------------------------- */

rd_kafka_t *kk_plain_consumer(const char *boot, const char *group)
{
    char err[512] = "";
    rd_kafka_conf_t *kc = rd_kafka_conf_new();
    cr_assert_eq(rd_kafka_conf_set(kc, "bootstrap.servers", boot, err, sizeof(err)),
                 RD_KAFKA_CONF_OK, "%s", err);
    cr_assert_eq(rd_kafka_conf_set(kc, "group.id", group, err, sizeof(err)), RD_KAFKA_CONF_OK, "%s",
                 err);
    cr_assert_eq(rd_kafka_conf_set(kc, "enable.auto.commit", "false", err, sizeof(err)),
                 RD_KAFKA_CONF_OK, "%s", err);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, kc, err, sizeof(err));
    cr_assert_not_null(rk, "rd_kafka_new: %s", err);
    return rk;
}

void kk_committed_offsets(const char *boot, const char *group, const char *topic, int n,
                          int64_t *out)
{
    rd_kafka_t *rk = kk_plain_consumer(boot, group);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(n);
    for (int p = 0; p < n; p++)
        rd_kafka_topic_partition_list_add(l, topic, p);
    rd_kafka_resp_err_t err = rd_kafka_committed(rk, l, 15000);
    cr_assert_eq(err, RD_KAFKA_RESP_ERR_NO_ERROR, "rd_kafka_committed: %s", rd_kafka_err2str(err));
    for (int p = 0; p < n; p++) {
        cr_assert_eq(l->elems[p].err, RD_KAFKA_RESP_ERR_NO_ERROR, "committed [%d]: %s", p,
                     rd_kafka_err2str(l->elems[p].err));
        out[p] = l->elems[p].offset;
    }
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_destroy(rk);
}

void kk_assert_committed(const char *boot, const char *group, const char *topic, int n,
                         int64_t want)
{
    int64_t committed[64];
    cr_assert_leq(n, 64);
    kk_committed_offsets(boot, group, topic, n, committed);
    for (int p = 0; p < n; p++)
        cr_assert_eq(committed[p], want, "%s [%d] committed %" PRId64 ", want %" PRId64, topic, p,
                     committed[p], want);
}

void kk_commit_plain(const char *boot, const char *group, const char *topic, int n, int64_t offset)
{
    rd_kafka_t *rk = kk_plain_consumer(boot, group);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(n);
    for (int p = 0; p < n; p++)
        rd_kafka_topic_partition_list_add(l, topic, p)->offset = offset;
    rd_kafka_resp_err_t err = rd_kafka_commit(rk, l, 0);
    cr_assert_eq(err, RD_KAFKA_RESP_ERR_NO_ERROR, "rd_kafka_commit: %s", rd_kafka_err2str(err));
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_destroy(rk);
}

/* ---- consumer configurations ---------------------------------------------- */

void kk_conf_set_kv(rill_consumer_conf_t *c, const char *const *kv)
{
    char err[512] = "";
    for (size_t i = 0; kv && kv[i]; i += 2)
        cr_assert_eq(rill_consumer_conf_set(c, kv[i], kv[i + 1], err, sizeof(err)), RILL_OK,
                     "%s = %s: %s", kv[i], kv[i + 1], err);
}

rill_consumer_conf_t *kk_conf_new(const char *boot, const char *group, const char *const *kv)
{
    char err[512] = "";
    rill_consumer_conf_t *c = rill_consumer_conf_new();
    cr_assert_not_null(c);
    if (boot)
        cr_assert_eq(rill_consumer_conf_set(c, "bootstrap.servers", boot, err, sizeof(err)),
                     RILL_OK, "%s", err);
    if (group)
        cr_assert_eq(rill_consumer_conf_set(c, "group.id", group, err, sizeof(err)), RILL_OK, "%s",
                     err);
    kk_conf_set_kv(c, kv);
    return c;
}

void kk_conf_subscribe1(rill_consumer_conf_t *c, const char *topic)
{
    const char *topics[] = {topic};
    char err[256] = "";
    cr_assert_eq(rill_consumer_conf_subscribe(c, topics, 1, err, sizeof(err)), RILL_OK, "%s", err);
}

void kk_conf_assign_all(rill_consumer_conf_t *c, const char *topic, int parts, int64_t offset)
{
    char err[256] = "";
    for (int p = 0; p < parts; p++)
        cr_assert_eq(rill_consumer_conf_assign(c, topic, p, offset, err, sizeof(err)), RILL_OK,
                     "%s", err);
}

/* ---- actors -------------------------------------------------------------- */

/* What the spawn functions of the consumer and producer actors returned. */
static rill_aid_t spawned_ok(const char *fn, rill_err_t e, rill_aid_t aid, const char *err)
{
    cr_assert_eq(e, RILL_OK, "%s: %s: %s", fn, rill_err_name(e), err);
    cr_assert(!rill_aid_is_none(aid));
    return aid;
}

rill_aid_t kk_consumer_spawn_ok(rill_system_t *sys, rill_consumer_conf_t *c, int executor)
{
    char err[512] = "";
    rill_stage_opts_t o = {.executor = KIT_EXEC(executor)};
    rill_aid_t aid = RILL_AID_NONE;
    rill_err_t e = rill_consumer_spawn(sys, c, &o, &aid, err, sizeof(err));
    return spawned_ok("rill_consumer_spawn", e, aid, err);
}

rill_aid_t kk_producer_spawn_ok(rill_system_t *sys, rill_producer_conf_t *c, int executor)
{
    char err[512] = "";
    rill_stage_opts_t o = {.executor = KIT_EXEC(executor)};
    rill_aid_t aid = RILL_AID_NONE;
    rill_err_t e = rill_producer_spawn(sys, c, &o, &aid, err, sizeof(err));
    return spawned_ok("rill_producer_spawn", e, aid, err);
}

rill_aid_t kk_stage_spawn_ok(rill_system_t *sys, rill_stage_t *spec, int executor)
{
    cr_assert_not_null(spec);
    rill_stage_opts_t o = {.executor = KIT_EXEC(executor)};
    rill_aid_t aid = RILL_AID_NONE;
    char err[256] = "";
    cr_assert_eq(rill_stage_spawn(sys, spec, &o, &aid, err, sizeof(err)), RILL_OK, "%s", err);
    return aid;
}

void kk_connect_ok(rill_system_t *sys, rill_aid_t up, rill_aid_t down)
{
    cr_assert_eq(rill_stage_connect(sys, up, down, NULL, 0), RILL_OK);
}

rill_aid_t kk_sink_spawn_ok(rill_system_t *sys, rill_foreach_fn *fn, void *opaque, int executor,
                            rill_aid_t upstream)
{
    rill_aid_t aid = kk_stage_spawn_ok(sys, rill_sink_foreach_manual(fn, opaque), executor);
    kk_connect_ok(sys, upstream, aid);
    return aid;
}

rill_aid_t kk_sup_start_ok(rill_system_t *sys, rill_sup_spec_t *spec, rill_child_spec_t *children,
                           size_t n, int intensity, const char *name)
{
    *spec = (rill_sup_spec_t)RILL_SUP_SPEC_DEFAULT;
    spec->strategy = RILL_SUP_ONE_FOR_ALL;
    spec->intensity = intensity;
    spec->period_ms = 60000;
    spec->children = children;
    spec->n_children = n;
    char err[512] = "";
    rill_aid_t sup = RILL_AID_NONE;
    cr_assert_eq(rill_sup_start(sys, spec, name, &sup, err, sizeof(err)), RILL_OK, "%s", err);
    return sup;
}

void kk_stop_wait(rill_system_t *sys, rill_aid_t aid)
{
    rill_stop(sys, aid); /* RILL_ESTOPPED if it is gone already: fine */
    cr_assert(kit_wait_dead(sys, aid, KK_WAIT_MS), "actor %#llx did not stop",
              (unsigned long long)aid.id);
}

rill_consumer_stats_t kk_consumer_stats_ok(rill_system_t *sys, rill_aid_t consumer)
{
    rill_consumer_stats_t s;
    memset(&s, 0, sizeof(s));
    rill_err_t e = rill_consumer_stats(sys, consumer, &s);
    cr_assert_eq(e, RILL_OK, "rill_consumer_stats: %s", rill_err_name(e));
    return s;
}

rill_producer_stats_t kk_producer_stats_ok(rill_system_t *sys, rill_aid_t producer)
{
    rill_producer_stats_t s;
    memset(&s, 0, sizeof(s));
    rill_err_t e = rill_producer_stats(sys, producer, &s);
    cr_assert_eq(e, RILL_OK, "rill_producer_stats: %s", rill_err_name(e));
    return s;
}

/* ---- key placement as Java clients do it -------------------------------- */

int32_t kk_java_murmur2(const void *key, size_t len)
{
    const uint8_t *data = key;
    const uint32_t m = 0x5bd1e995u;
    const int r = 24;
    uint32_t h = 0x9747b28cu ^ (uint32_t)len;
    size_t len4 = len / 4;
    for (size_t i = 0; i < len4; i++) {
        size_t i4 = i * 4;
        uint32_t k = (uint32_t)data[i4] | (uint32_t)data[i4 + 1] << 8 |
                     (uint32_t)data[i4 + 2] << 16 | (uint32_t)data[i4 + 3] << 24;
        k *= m;
        k ^= k >> r;
        k *= m;
        h *= m;
        h ^= k;
    }
    size_t tail = len & ~(size_t)3;
    switch (len % 4) {
    case 3:
        h ^= (uint32_t)data[tail + 2] << 16;
        /* fall through */
    case 2:
        h ^= (uint32_t)data[tail + 1] << 8;
        /* fall through */
    case 1:
        h ^= data[tail];
        h *= m;
    }
    h ^= h >> 13;
    h *= m;
    h ^= h >> 15;
    return (int32_t)h;
}

int32_t kk_java_partition(const void *key, size_t len, int32_t partitions)
{
    return (int32_t)(((uint32_t)kk_java_murmur2(key, len) & 0x7fffffffu) % (uint32_t)partitions);
}

/* ---- a sink that confirms some records and holds the others ---------- */

kk_holder_t *kk_holder_new(int64_t below, size_t cap)
{
    kk_holder_t *h = calloc(1, sizeof(*h));
    cr_assert_not_null(h);
    h->held = calloc(cap ? cap : 1, sizeof(*h->held));
    cr_assert_not_null(h->held);
    pthread_mutex_init(&h->mu, NULL);
    h->cap = cap;
    h->below = below;
    return h;
}

rill_err_t kk_holder_sink(void *opaque, rill_elem_t *e)
{
    kk_holder_t *h = opaque;
    const rd_kafka_message_t *m = rill_record(e);
    if (!m) {
        rill_elem_release(e);
        return RILL_EINVAL;
    }
    if (m->offset < h->below) {
        rill_elem_confirm(e);
        atomic_fetch_add(&h->confirmed, 1);
        return RILL_OK;
    }
    pthread_mutex_lock(&h->mu);
    if (h->n < h->cap)
        h->held[h->n++] = *e;
    else
        rill_elem_release(e);
    pthread_mutex_unlock(&h->mu);
    return RILL_OK;
}

void kk_holder_confirm_all(kk_holder_t *h)
{
    pthread_mutex_lock(&h->mu);
    for (size_t i = 0; i < h->n; i++)
        rill_elem_confirm(&h->held[i]);
    h->n = 0;
    pthread_mutex_unlock(&h->mu);
}

void kk_holder_free(kk_holder_t *h)
{
    if (!h)
        return;
    for (size_t i = 0; i < h->n; i++)
        rill_elem_release(&h->held[i]);
    pthread_mutex_destroy(&h->mu);
    free(h->held);
    free(h);
}
