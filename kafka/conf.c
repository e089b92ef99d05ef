/*
 * Configuration of Kafka clients: the consumer's and the producer's
 * settings, and the one table of rill's own properties (rill.*) they
 * share, as librdkafka's rdkafka_conf.c keeps its: name, where it applies,
 * type, range, default and a line of documentation. Parsing, range checks,
 * defaults and the list in include/rill/kafka.h all follow the table
 * (test_kafka_conf checks the header against it).
 *
 * Every other key goes to librdkafka unchanged and is checked at once.
 */
#include <errno.h>
#include <regex.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "../actors/util.h"
#include "kafka_int.h"

#define DAY_MS (24u * 3600 * 1000)

#define OFF(field) offsetof(rill__kopts_t, field)

static const rill__kprop_t props[] = {
    {"rill.commit.interval.ms", RILL__KP_CONSUMER, RILL__KP_U32, 1, DAY_MS, "1000",
     OFF(commit_interval_ms), "commit what was confirmed at least this often (async)"},
    {"rill.commit.count", RILL__KP_CONSUMER, RILL__KP_U32, 1, 10000000, "1000", OFF(commit_count),
     "commit after this many confirms (async)"},
    {"rill.drain.timeout.ms", RILL__KP_CONSUMER, RILL__KP_U32, 0, DAY_MS, "5000", OFF(drain_ms),
     "on revoke and at the end of a pipeline, wait this long for the confirms of what is "
     "in flight"},
    {"rill.shutdown.timeout.ms", RILL__KP_CONSUMER, RILL__KP_U32, 0, DAY_MS, "5000",
     OFF(shutdown_ms), "the final commit and leaving the group, at most this long"},
    {"rill.unconfirmed.timeout.ms", RILL__KP_CONSUMER, RILL__KP_U32, 0, DAY_MS, "0",
     OFF(unconfirmed_timeout_ms),
     "redeliver a record not confirmed this long after it went out (0 = never)"},
    {"rill.max.redeliveries", RILL__KP_CONSUMER, RILL__KP_U32, 0, 1000000, "3",
     OFF(max_redeliveries), "then the record goes to the dead-letter topic, or the consumer fails"},
    {"rill.max.failures", RILL__KP_CONSUMER, RILL__KP_U32, 1, 1000000, "3", OFF(max_failures),
     "a record processing failed on (a stage failed holding it, or a retry) this many times, "
     "across restarts, goes to the dead-letter topic, or is skipped (logged, counted)"},
    {"rill.dead.letter.topic", RILL__KP_CONSUMER, RILL__KP_TOPIC, 0, 0, NULL, OFF(dlq_topic),
     "where records go after rill.max.redeliveries or rill.max.failures, or rejected"},
    {"rill.dead.letter.producer", RILL__KP_CONSUMER, RILL__KP_NAME, 0, 0, NULL, OFF(dlq_producer),
     "the name of the producer actor that sends them (default: one the consumer starts)"},
    {"rill.buffer.high", RILL__KP_CONSUMER, RILL__KP_U32, 1, 1u << 20, "1000", OFF(buffer_high),
     "stop polling records when this many wait for demand"},
    {"rill.buffer.low", RILL__KP_CONSUMER, RILL__KP_U32, 0, 1u << 20, "500", OFF(buffer_low),
     "resume paused partitions below this many"},
    {"rill.max.unconfirmed", RILL__KP_CONSUMER, RILL__KP_U32, 1, 1u << 22, "20000",
     OFF(max_unconfirmed), "records out and not yet confirmed, at most"},
    {"rill.pause.after.ms", RILL__KP_CONSUMER, RILL__KP_U32, 0, DAY_MS, "1000", OFF(pause_after_ms),
     "pause the partitions when the buffer stayed full this long"},
    {"rill.commit", RILL__KP_CONSUMER, RILL__KP_BOOL, 0, 1, "true", OFF(commit),
     "false: the offsets are the application's, nothing is committed; transaction: they go "
     "in the transactions of the pipeline's transactional sink (rill_kafka_txn_sink)"},
    {"rill.restart.keep.ms", RILL__KP_CONSUMER, RILL__KP_U32, 0, DAY_MS, "30000",
     OFF(restart_keep_ms),
     "a pipeline that failed keeps its client, and its group membership, this long for its "
     "restart (0 = close it)"},
    {"rill.max.inflight", RILL__KP_PRODUCER, RILL__KP_U32, 1, 1000000, "10000", OFF(max_inflight),
     "requests handed to librdkafka and not yet delivered, at most"},
    {"rill.topics", RILL__KP_PRODUCER, RILL__KP_TOPICS, 0, 0, NULL, OFF(topics),
     "the topics it will write to, made known to the client when it is created (a topic first "
     "named after the client connected waits for librdkafka's next topic scan: up to a "
     "second in 2.0.2)"},
    {"rill.txn.max.records", RILL__KP_PRODUCER, RILL__KP_U32, 1, 10000000, "1000", OFF(txn_records),
     "a transactional sink commits its transaction after this many records"},
    {"rill.txn.max.ms", RILL__KP_PRODUCER, RILL__KP_U32, 1, DAY_MS, "100", OFF(txn_ms),
     "a transactional sink commits its transaction at most this long after it began"},
    {"rill.txn.timeout.ms", RILL__KP_PRODUCER, RILL__KP_U32, 100, DAY_MS, "10000",
     OFF(txn_timeout_ms),
     "a transactional call, with its retries, and a source's answer wait at most this long; "
     "then the sink fails"},
    {"rill.flush.timeout.ms", RILL__KP_PRODUCER, RILL__KP_U32, 0, DAY_MS, "5000", OFF(flush_ms),
     "deliver what is in flight at most this long when the producer stops"},
};

const rill__kprop_t *rill__kprops(size_t *n)
{
    *n = sizeof(props) / sizeof(props[0]);
    return props;
}

static const rill__kprop_t *find_prop(const char *key)
{
    for (size_t i = 0; i < sizeof(props) / sizeof(props[0]); i++)
        if (!strcmp(props[i].name, key))
            return &props[i];
    return NULL;
}

/* librdkafka's lines go to rill's log hook (actors/log.c), facility
 * "rdkafka.consumer.FAC" or "rdkafka.producer.FAC": those at or above the
 * log level; a client made with "debug" set passes every line it makes. */
static void client_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf, int all)
{
    if (!all && !rill__log_wanted(level))
        return;
    char facility[96];
    snprintf(facility, sizeof(facility), "rdkafka.%s.%s",
             rd_kafka_type(rk) == RD_KAFKA_CONSUMER ? "consumer" : "producer", fac);
    rill__log_line(level, facility, buf);
}

static void quiet_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    client_log(rk, level, fac, buf, 0);
}

static void debug_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    client_log(rk, level, fac, buf, 1);
}

void rill__kafka_quiet_log(rd_kafka_conf_t *kc)
{
    /* Read the value itself: the size librdkafka 2.0.2 reports for an
     * unset "debug" without a buffer is 2, not 1, so a size test never
     * saw it unset. */
    char debug[8] = "";
    size_t size = sizeof(debug);
    int dbg = rd_kafka_conf_get(kc, "debug", debug, &size) == RD_KAFKA_CONF_OK && debug[0];
    rd_kafka_conf_set_log_cb(kc, dbg ? debug_log_cb : quiet_log_cb);
}

const char *rill__topics_next(const char *list, char *name, size_t size)
{
    const char *comma = strchr(list, ',');
    size_t len = comma ? (size_t)(comma - list) : strlen(list);
    snprintf(name, size, "%.*s", (int)len, list);
    return comma ? comma + 1 : NULL;
}

/* A comma-separated list of topic names, each valid. */
static rill_err_t topics_check(const rill__kprop_t *prop, const char *value, char *errstr,
                               size_t errstr_size)
{
    if (!*value)
        return rill__fail(RILL_EINVAL, errstr, errstr_size, "%s must name topics", prop->name);
    for (const char *p = value; p;) {
        char name[256];
        if (strcspn(p, ",") >= sizeof(name))
            return rill__fail(RILL_EINVAL, errstr, errstr_size, "%s: a topic name is too long",
                              prop->name);
        p = rill__topics_next(p, name, sizeof(name));
        rill_err_t err = rill__topic_name_check(name, errstr, errstr_size);
        if (err)
            return err;
    }
    return RILL_OK;
}

/* Parse value for prop into its field of o. */
static rill_err_t prop_parse(const rill__kprop_t *prop, rill__kopts_t *o, const char *value,
                             char *errstr, size_t errstr_size)
{
    char *field = (char *)o + prop->offset;
    switch (prop->type) {
    case RILL__KP_U32: {
        char *end;
        errno = 0;
        unsigned long long x = strtoull(value, &end, 10);
        if (!*value || *end || errno || value[0] == '-' || x < prop->min || x > prop->max)
            return rill__fail(RILL_EINVAL, errstr, errstr_size,
                              "%s must be a number from %u to %u, got \"%s\"", prop->name,
                              prop->min, prop->max, value);
        *(uint32_t *)(void *)field = (uint32_t)x;
        return RILL_OK;
    }
    case RILL__KP_BOOL:
        if (strcmp(value, "true") && strcmp(value, "false"))
            return rill__fail(RILL_EINVAL, errstr, errstr_size,
                              "%s must be true or false, got \"%s\"", prop->name, value);
        *(int *)(void *)field = !strcmp(value, "true");
        return RILL_OK;
    case RILL__KP_TOPIC:
    case RILL__KP_TOPICS:
    case RILL__KP_NAME: {
        rill_err_t err = RILL_OK;
        if (prop->type == RILL__KP_TOPIC)
            err = rill__topic_name_check(value, errstr, errstr_size);
        else if (prop->type == RILL__KP_TOPICS)
            err = topics_check(prop, value, errstr, errstr_size);
        else if (!*value)
            err = rill__fail(RILL_EINVAL, errstr, errstr_size, "%s must not be empty", prop->name);
        if (err)
            return err;
        char *copy = strdup(value);
        if (!copy)
            return rill__fail(RILL_ENOMEM, errstr, errstr_size, "out of memory");
        free(*(char **)(void *)field);
        *(char **)(void *)field = copy;
        return RILL_OK;
    }
    }
    return RILL_EINVAL;
}

void rill__kopts_init(rill__kopts_t *o, unsigned scope)
{
    memset(o, 0, sizeof(*o));
    for (size_t i = 0; i < sizeof(props) / sizeof(props[0]); i++)
        if ((props[i].scope & scope) && props[i].def)
            prop_parse(&props[i], o, props[i].def, NULL, 0); /* the table's own: valid */
}

rill_err_t rill__kopts_set(rill__kopts_t *o, unsigned scope, const char *key, const char *value,
                           char *errstr, size_t errstr_size)
{
    const rill__kprop_t *prop = find_prop(key);
    if (!prop)
        return rill__fail(RILL_EINVAL, errstr, errstr_size, "unknown rill property \"%s\"", key);
    if (!(prop->scope & scope))
        return rill__fail(RILL_EINVAL, errstr, errstr_size, "%s is a %s property", key,
                          prop->scope & RILL__KP_CONSUMER ? "consumer" : "producer");
    int txn = !strcmp(key, "rill.commit") && !strcmp(value, "transaction");
    rill_err_t err = prop_parse(prop, o, txn ? "false" : value, errstr, errstr_size);
    if (err && !strcmp(key, "rill.commit"))
        return rill__fail(RILL_EINVAL, errstr, errstr_size,
                          "rill.commit must be true, false or transaction, got \"%s\"", value);
    if (!err && !strcmp(key, "rill.commit")) {
        o->commit_set = 1;
        o->txn = txn;
    }
    return err;
}

void rill__kopts_free(rill__kopts_t *o)
{
    free(o->dlq_topic);
    free(o->dlq_producer);
    free(o->topics);
    o->dlq_topic = o->dlq_producer = o->topics = NULL;
}

static int kopts_copy(rill__kopts_t *dst, const rill__kopts_t *src)
{
    *dst = *src;
    dst->dlq_topic = src->dlq_topic ? strdup(src->dlq_topic) : NULL;
    dst->dlq_producer = src->dlq_producer ? strdup(src->dlq_producer) : NULL;
    dst->topics = src->topics ? strdup(src->topics) : NULL;
    if ((src->dlq_topic && !dst->dlq_topic) || (src->dlq_producer && !dst->dlq_producer) ||
        (src->topics && !dst->topics)) {
        rill__kopts_free(dst);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* The consumer's configuration                                        */
/* ------------------------------------------------------------------ */

rill_consumer_conf_t *rill_consumer_conf_new(void)
{
    rill_consumer_conf_t *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->kconf = rd_kafka_conf_new();
    if (!c->kconf) {
        free(c);
        return NULL;
    }
    rill__kopts_init(&c->o, RILL__KP_CONSUMER);
    return c;
}

void rill_consumer_conf_destroy(rill_consumer_conf_t *c)
{
    if (!c)
        return;
    if (c->kconf)
        rd_kafka_conf_destroy(c->kconf);
    for (size_t i = 0; i < c->n_topics; i++)
        free(c->topics[i]);
    free(c->topics);
    if (c->fixed)
        rd_kafka_topic_partition_list_destroy(c->fixed);
    rill__kopts_free(&c->o);
    for (size_t i = 0; i < c->n_client_keys; i++)
        free(c->client_keys[i]);
    free(c->client_keys);
    free(c);
}

int rill__consumer_key_set(const rill_consumer_conf_t *c, const char *key)
{
    for (size_t i = 0; i < c->n_client_keys; i++)
        if (!strcmp(c->client_keys[i], key))
            return 1;
    return 0;
}

/* Remember that the application set librdkafka property `key`: a
 * dead-letter producer of the consumer's own inherits it. */
static rill_err_t track_client_key(rill_consumer_conf_t *c, const char *key, char *errstr,
                                   size_t errstr_size)
{
    if (rill__consumer_key_set(c, key))
        return RILL_OK;
    char **v = realloc(c->client_keys, (c->n_client_keys + 1) * sizeof(*v));
    if (v)
        c->client_keys = v;
    char *k = v ? strdup(key) : NULL;
    if (!k)
        return rill__fail(RILL_ENOMEM, errstr, errstr_size, "out of memory");
    c->client_keys[c->n_client_keys++] = k;
    return RILL_OK;
}

rill_err_t rill_consumer_conf_set(rill_consumer_conf_t *c, const char *key, const char *value,
                                  char *errstr, size_t errstr_size)
{
    if (!c || !key || !value)
        return rill__fail(RILL_EINVAL, errstr, errstr_size, "conf, key and value must be set");
    if (!strncmp(key, "rill.", 5))
        return rill__kopts_set(&c->o, RILL__KP_CONSUMER, key, value, errstr, errstr_size);
    rill_err_t err = rill__conf_set(c->kconf, key, value, errstr, errstr_size);
    if (err)
        return err;
    if (!strcmp(key, "bootstrap.servers"))
        c->have_bootstrap = *value != '\0';
    if (!strcmp(key, "group.id"))
        c->have_group = *value != '\0';
    if (!strcmp(key, "queued.max.messages.kbytes"))
        c->have_queue_kbytes = 1;
    if (!strcmp(key, "statistics.interval.ms"))
        c->have_stats_interval = 1;
    return track_client_key(c, key, errstr, errstr_size);
}

/*
 * A subscription pattern, checked now rather than when librdkafka first
 * matches it (it would only log the error and match nothing). librdkafka
 * compiles patterns in rd_regex_comp (src/rdregex.c): with the C
 * library's regex where its build found one (HAVE_REGEX: regcomp with
 * REG_EXTENDED | REG_NOSUB, as the Debian/Ubuntu packages and glibc
 * builds do), else with its bundled engine (src/regexp.c, from minilibs).
 * This is the first: the same call, so the same dialect. Against a
 * librdkafka built with the bundled engine, what POSIX ERE rejects is
 * rejected, and a pattern only that engine refuses is found at match time.
 */
static rill_err_t regex_check(const char *pattern, char *errstr, size_t errstr_size)
{
    regex_t re;
    int rc = regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB);
    if (rc == 0) {
        regfree(&re);
        return RILL_OK;
    }
    char why[128];
    regerror(rc, &re, why, sizeof(why));
    return rill__fail(RILL_EINVAL, errstr, errstr_size,
                      "topic pattern \"%s\" is not a valid regular expression: %s", pattern, why);
}

rill_err_t rill_consumer_conf_subscribe(rill_consumer_conf_t *c, const char *const *topics,
                                        size_t n, char *errstr, size_t errstr_size)
{
    if (!c || !topics || n == 0)
        return rill__fail(RILL_EINVAL, errstr, errstr_size,
                          "conf and at least one topic must be given");
    for (size_t i = 0; i < n; i++) {
        if (!topics[i] || !*topics[i])
            return rill__fail(RILL_EINVAL, errstr, errstr_size, "topic %zu is empty", i);
        rill_err_t err = topics[i][0] == '^'
                             ? regex_check(topics[i], errstr, errstr_size)
                             : rill__topic_name_check(topics[i], errstr, errstr_size);
        if (err)
            return err;
    }
    char **v = realloc(c->topics, (c->n_topics + n) * sizeof(*v));
    if (!v)
        return rill__fail(RILL_ENOMEM, errstr, errstr_size, "out of memory");
    c->topics = v;
    for (size_t i = 0; i < n; i++)
        if (!(c->topics[c->n_topics++] = strdup(topics[i])))
            return rill__fail(RILL_ENOMEM, errstr, errstr_size, "out of memory");
    return RILL_OK;
}

rill_err_t rill_consumer_conf_assign(rill_consumer_conf_t *c, const char *topic, int32_t partition,
                                     int64_t offset, char *errstr, size_t errstr_size)
{
    if (!c)
        return rill__fail(RILL_EINVAL, errstr, errstr_size, "conf is NULL");
    rill_err_t err = rill__topic_name_check(topic, errstr, errstr_size);
    if (err)
        return err;
    if (partition < 0)
        return rill__fail(RILL_EINVAL, errstr, errstr_size, "partition %d of %s is negative",
                          (int)partition, topic);
    if (offset < 0 && offset != RILL_OFFSET_COMMITTED && offset != RILL_OFFSET_BEGINNING &&
        offset != RILL_OFFSET_END)
        return rill__fail(RILL_EINVAL, errstr, errstr_size,
                          "offset %lld is neither an offset nor one of RILL_OFFSET_*",
                          (long long)offset);
    if (!c->fixed && !(c->fixed = rd_kafka_topic_partition_list_new(8)))
        return rill__fail(RILL_ENOMEM, errstr, errstr_size, "out of memory");
    rd_kafka_topic_partition_list_add(c->fixed, topic, partition)->offset = offset;
    return RILL_OK;
}

rill_err_t rill_consumer_conf_set_assigned_cb(rill_consumer_conf_t *c, rill_assigned_fn *fn,
                                              void *opaque)
{
    if (!c)
        return RILL_EINVAL;
    c->assigned_cb = fn;
    c->assigned_opaque = opaque;
    if (!c->o.commit_set)
        c->o.commit = 0; /* the application owns the offsets */
    return RILL_OK;
}

rill_err_t rill_consumer_conf_set_rebalance_cb(rill_consumer_conf_t *c, rill_rebalance_fn *fn,
                                               void *opaque)
{
    if (!c)
        return RILL_EINVAL;
    c->rebalance_cb = fn;
    c->rebalance_opaque = opaque;
    return RILL_OK;
}

rill_err_t rill_consumer_conf_set_end_cb(rill_consumer_conf_t *c, rill_partition_end_fn *fn,
                                         void *opaque)
{
    if (!c)
        return RILL_EINVAL;
    if (fn &&
        rd_kafka_conf_set(c->kconf, "enable.partition.eof", "true", NULL, 0) != RD_KAFKA_CONF_OK)
        return RILL_EKAFKA;
    c->end_cb = fn;
    c->end_opaque = opaque;
    return RILL_OK;
}

rill_err_t rill_consumer_conf_set_commit_cb(rill_consumer_conf_t *c, rill_commit_fn *fn,
                                            void *opaque)
{
    if (!c)
        return RILL_EINVAL;
    c->commit_cb = fn;
    c->commit_opaque = opaque;
    return RILL_OK;
}

/*
 * librdkafka's prefetch queue is the memory between the consumer's buffer
 * and the broker. rill lowers its byte limit (64 MiB by default) to 8 MiB
 * (2 MiB from librdkafka 2.2.0, below) unless the application set it. It
 * leaves queued.min.messages alone: a partition whose fetch queue is over
 * either limit is not fetched again for fetch.queue.backoff.ms, and the
 * check counts the whole consumer queue. In librdkafka before 2.2.0 that
 * backoff is a fixed second (confluentinc/librdkafka#2879), so a limit
 * below what a fetch round brings (up to 1 MiB per partition) throttles
 * every partition to a fetch a second (1,000 records: 15x slower). Lowering
 * it there is the application's trade: less memory held while
 * backpressured, fewer records per second.
 *
 * From 2.2.0 the backoff is fetch.queue.backoff.ms (default still 1,000):
 * rill sets it to RILL__FETCH_QUEUE_BACKOFF_MS unless the application set
 * it, so that a queue that was full is refilled as soon as the consumer has
 * taken from it, instead of up to a second later: prefetch limits then cost
 * no throughput, and a backpressured consumer catches up at once. 1 ms
 * rather than 10: in three bench_consume A/Bs on 2.8.0 (values alternating
 * run by run) 1 ms had the higher median each time (1.16 M vs 0.57 M,
 * 0.83 M vs 0.55 M, 0.75 M vs 0.58 M records/s; librdkafka's 1,000: 0.15 M).
 * The cost is the broker thread waking every 1 ms to look at the queue
 * length while the queue is full (a backpressured consumer), nothing while
 * it is not.
 *
 * With that backoff a small prefetch costs nothing, so from 2.2.0 rill's
 * byte limit is 2 MiB instead of 8 MiB: a consumer held back by a slow sink
 * with 1,000,000 records of 100 B waiting holds ~23 MiB RSS instead of ~51
 * (bench_backlog on 2.8.0; RSS grows ~3.8 MiB per MiB of this limit), and
 * its warm rate is no lower. Before 2.2.0 a 2 MiB limit costs 15-40x the
 * throughput (the fixed second), so the 8 MiB stays there.
 */
#define RILL__FETCH_QUEUE_BACKOFF_MS "1"
#define RILL__QUEUE_KBYTES_OLD       "8192"
#define RILL__QUEUE_KBYTES           "2048"

rill_err_t rill__consumer_fetch_defaults(const rill_consumer_conf_t *c, rd_kafka_conf_t *kc,
                                         char *errstr, size_t errstr_size)
{
    rill_err_t err = RILL_OK;
    int has_backoff = rill__has_fetch_queue_backoff();
    if (!c->have_queue_kbytes)
        err = rill__conf_set(kc, "queued.max.messages.kbytes",
                             has_backoff ? RILL__QUEUE_KBYTES : RILL__QUEUE_KBYTES_OLD, errstr,
                             errstr_size);
    if (!err && has_backoff && !rill__consumer_key_set(c, "fetch.queue.backoff.ms"))
        err = rill__conf_set(kc, "fetch.queue.backoff.ms", RILL__FETCH_QUEUE_BACKOFF_MS, errstr,
                             errstr_size);
    return err;
}

rill_err_t rill__consumer_conf_check(const rill_consumer_conf_t *c, char *errstr,
                                     size_t errstr_size)
{
    if (!c->n_topics && !c->fixed)
        return rill__fail(RILL_EINVAL, errstr, errstr_size,
                          "the consumer needs a subscription or fixed partitions");
    if (c->n_topics && c->fixed)
        return rill__fail(RILL_EINVAL, errstr, errstr_size, "subscribe or assign, not both");
    if (c->n_topics && !c->have_group)
        return rill__fail(RILL_EINVAL, errstr, errstr_size, "a group subscription needs group.id");
    if (c->fixed && !c->have_group)
        for (int i = 0; i < c->fixed->cnt; i++)
            if (c->fixed->elems[i].offset == RILL_OFFSET_COMMITTED)
                return rill__fail(RILL_EINVAL, errstr, errstr_size,
                                  "%s [%d] starts at its committed offset, which needs group.id",
                                  c->fixed->elems[i].topic, (int)c->fixed->elems[i].partition);
    if (c->o.buffer_low > c->o.buffer_high)
        return rill__fail(RILL_EINVAL, errstr, errstr_size,
                          "rill.buffer.low (%u) must not exceed rill.buffer.high (%u)",
                          c->o.buffer_low, c->o.buffer_high);
    if (!c->have_bootstrap)
        return rill__fail(RILL_EINVAL, errstr, errstr_size, RILL__NO_BOOTSTRAP_TEXT);
    if (c->o.txn) {
        char iso[32] = "";
        size_t size = sizeof(iso);
        if (rd_kafka_conf_get(c->kconf, "isolation.level", iso, &size) == RD_KAFKA_CONF_OK &&
            !strcmp(iso, "read_uncommitted"))
            return rill__fail(RILL_EINVAL, errstr, errstr_size,
                              "isolation.level=read_uncommitted with rill.commit=transaction: "
                              "it would process the records of aborted transactions");
        if (c->assigned_cb)
            return rill__fail(RILL_EINVAL, errstr, errstr_size,
                              "an assigned callback with rill.commit=transaction: the offsets are "
                              "the application's or the transactions'");
        if (c->o.unconfirmed_timeout_ms)
            return rill__fail(RILL_EINVAL, errstr, errstr_size,
                              "rill.unconfirmed.timeout.ms must be 0 with rill.commit=transaction "
                              "(a rewind to the last transaction replaces redelivery)");
    }
    return RILL_OK;
}

rill_consumer_conf_t *rill__consumer_conf_dup(const rill_consumer_conf_t *c)
{
    rill_consumer_conf_t *d = calloc(1, sizeof(*d));
    if (!d)
        return NULL;
    *d = *c;
    d->kconf = NULL;
    d->topics = NULL;
    d->n_topics = 0;
    d->fixed = NULL;
    d->client_keys = NULL;
    d->n_client_keys = 0;
    memset(&d->o, 0, sizeof(d->o));
    int bad = !(d->kconf = rd_kafka_conf_dup(c->kconf)) || kopts_copy(&d->o, &c->o);
    if (!bad && c->n_topics) {
        d->topics = calloc(c->n_topics, sizeof(*d->topics));
        bad = !d->topics;
        for (size_t i = 0; !bad && i < c->n_topics; i++)
            bad = !(d->topics[d->n_topics++] = strdup(c->topics[i]));
    }
    if (!bad && c->fixed)
        bad = !(d->fixed = rd_kafka_topic_partition_list_copy(c->fixed));
    if (!bad && c->n_client_keys) {
        d->client_keys = calloc(c->n_client_keys, sizeof(*d->client_keys));
        bad = !d->client_keys;
        for (size_t i = 0; !bad && i < c->n_client_keys; i++)
            bad = !(d->client_keys[d->n_client_keys++] = strdup(c->client_keys[i]));
    }
    if (bad) {
        rill_consumer_conf_destroy(d);
        return NULL;
    }
    return d;
}

/* ------------------------------------------------------------------ */
/* The producer's configuration                                        */
/* ------------------------------------------------------------------ */

rill_producer_conf_t *rill_producer_conf_new(void)
{
    rill_producer_conf_t *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->kconf = rd_kafka_conf_new();
    rill__kopts_init(&c->o, RILL__KP_PRODUCER);
    /* murmur2_random: records with the same key land in the same partition
     * as from Java clients (librdkafka's default is consistent_random). */
    const char *defaults[] = {
        "enable.idempotence", "true",           "acks", "all", "linger.ms", "5",
        "partitioner",        "murmur2_random", NULL};
    if (!c->kconf || rill__conf_apply(c->kconf, defaults, NULL, 0)) {
        rill_producer_conf_destroy(c);
        return NULL;
    }
    return c;
}

void rill_producer_conf_destroy(rill_producer_conf_t *c)
{
    if (!c)
        return;
    if (c->kconf)
        rd_kafka_conf_destroy(c->kconf);
    rill__kopts_free(&c->o);
    free(c);
}

rill_err_t rill_producer_conf_set(rill_producer_conf_t *c, const char *key, const char *value,
                                  char *errstr, size_t errstr_size)
{
    if (!c || !key || !value)
        return rill__fail(RILL_EINVAL, errstr, errstr_size, "conf, key and value must be set");
    if (!strncmp(key, "rill.", 5))
        return rill__kopts_set(&c->o, RILL__KP_PRODUCER, key, value, errstr, errstr_size);
    rill_err_t err = rill__conf_set(c->kconf, key, value, errstr, errstr_size);
    if (!err && !strcmp(key, "bootstrap.servers"))
        c->have_bootstrap = *value != '\0';
    if (!err && !strcmp(key, "statistics.interval.ms"))
        c->have_stats_interval = 1;
    if (!err && !strcmp(key, "enable.metrics.push"))
        c->have_metrics_push = 1;
    return err;
}

rill_producer_conf_t *rill__producer_conf_dup(const rill_producer_conf_t *c)
{
    rill_producer_conf_t *d = calloc(1, sizeof(*d));
    if (!d)
        return NULL;
    d->have_bootstrap = c->have_bootstrap;
    d->have_stats_interval = c->have_stats_interval;
    d->have_metrics_push = c->have_metrics_push;
    d->txn_cb = c->txn_cb;
    d->txn_opaque = c->txn_opaque;
    if (!(d->kconf = rd_kafka_conf_dup(c->kconf)) || kopts_copy(&d->o, &c->o)) {
        rill_producer_conf_destroy(d);
        return NULL;
    }
    return d;
}

rill_err_t rill_producer_conf_set_txn_cb(rill_producer_conf_t *c, rill_txn_fn *fn, void *opaque)
{
    if (!c)
        return RILL_EINVAL;
    c->txn_cb = fn;
    c->txn_opaque = opaque;
    return RILL_OK;
}
