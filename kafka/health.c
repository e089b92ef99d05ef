/*
 * A client's view of its cluster, for the consumer's and the producer's
 * stats (include/rill/kafka.h: errors, brokers_up, connected,
 * last_error): what a program, and a readiness probe, can ask instead of
 * reading librdkafka's lines on stderr.
 *
 * librdkafka tells errors (an unreachable broker, all brokers down) as
 * error events, but nothing when a broker comes (back) up. Its statistics
 * do: each broker's state, every statistics.interval.ms. rill asks for
 * them once a second unless the application set the interval, and counts
 * the brokers whose state is UP. An error event saying all brokers are down sets the count to
 * 0 at once. A consumer's statistics also give each partition's offsets
 * (high watermark, log start, committed, position) and lag, which the
 * source keeps for rill_consumer_partitions().
 *
 * Threads: librdkafka queues its statistics as an op on the main queue
 * (rd_kafka_stats_emit_all: rd_kafka_q_enq(rk->rk_rep)), and the stats
 * callback runs where that queue is served. A consumer's main queue is
 * forwarded to its consumer queue (rd_kafka_poll_set_consumer), served by
 * the source actor's polls in its turn (or by the keeper of a parked
 * session, handed over under the holder's lock); a producer's by
 * rd_kafka_poll in its actor's turn. So a rill__khealth_t is written and
 * read by one actor at a time, never by a librdkafka thread.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "kafka_int.h"

void rill__khealth_conf(rd_kafka_conf_t *kc, int app_set_interval,
                        int (*stats_cb)(rd_kafka_t *, char *, size_t, void *))
{
    if (!app_set_interval)
        rd_kafka_conf_set(kc, "statistics.interval.ms", "1000", NULL, 0);
    rd_kafka_conf_set_stats_cb(kc, stats_cb);
}

/*
 * librdkafka 2.5 added KIP-714 client metrics push (enable.metrics.push,
 * default true). Through 2.8 at least, rd_kafka_destroy() hands the
 * telemetry's termination to librdkafka's main thread and then waits on a
 * condition variable, with no state to check, for up to a second
 * (rd_kafka_telemetry_await_termination): when the main thread signals
 * before the destroying thread waits, the signal is lost and the destroy
 * takes the whole second. On 2.8.0 that was a third of the consumer stops
 * in bench_consume (gdb: the reaper thread in that wait, 1.000 s each),
 * whatever the broker. So rill turns metrics push off unless the
 * application set the property; before 2.5 librdkafka does not know it,
 * and nothing changes.
 */
void rill__kclient_telemetry_default(rd_kafka_conf_t *kc, int app_set)
{
    if (!app_set)
        rd_kafka_conf_set(kc, "enable.metrics.push", "false", NULL, 0);
}

/* ---- librdkafka's statistics JSON (STATISTICS.md), parsed with jansson ----
 *
 * Field names checked against rd_kafka_stats_emit_all and
 * rd_kafka_stats_emit_toppar of librdkafka 2.0.2 and 2.8.0 (the same in
 * both): brokers.<name>.{nodeid, source, state}; topics.<topic>.partitions
 * .<p>.{partition, app_offset, committed_offset, lo_offset, hi_offset,
 * ls_offset} (the lag is the source's own: end minus its committed offset); "ts", librdkafka's
 * monotonic clock in microseconds (rd_clock: CLOCK_MONOTONIC on Linux). Offsets librdkafka does not
 * know are -1001 (RD_KAFKA_OFFSET_INVALID): kept as -1. */

static int64_t jint(const json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : -1;
}

static int64_t joffset(const json_t *o, const char *key)
{
    int64_t v = jint(o, key);
    return v < 0 ? -1 : v;
}

static const char *jstr(const json_t *o, const char *key)
{
    const char *v = json_string_value(json_object_get(o, key));
    return v ? v : "";
}

/* Brokers UP in the "brokers" object, -1 if there is none. Brokers
 * learned from the metadata have their node id; a bootstrap connection
 * (node id -1) counts only until one is learned; the internal and logical
 * (group coordinator) ones never. */
static int brokers_up(const json_t *root)
{
    json_t *brokers = json_object_get(root, "brokers");
    if (!json_is_object(brokers))
        return -1;
    int up = 0, bootstrap_up = 0;
    const char *name;
    json_t *b;
    json_object_foreach(brokers, name, b)
    {
        const char *source = jstr(b, "source");
        if (strcmp(jstr(b, "state"), "UP") || !strcmp(source, "internal") ||
            !strcmp(source, "logical"))
            continue;
        if (jint(b, "nodeid") >= 0)
            up++;
        else
            bootstrap_up = 1;
    }
    return up ? up : bootstrap_up;
}

static int kpstat_cmp(const void *a, const void *b)
{
    const rill__kpstat_t *x = a, *y = b;
    int c = strcmp(x->topic, y->topic);
    return c ? c : (x->partition > y->partition) - (x->partition < y->partition);
}

/* Every partition of every topic in the statistics (not the internal
 * -1 one), sorted by topic and partition, into h's table. */
static void take_partitions(rill__khealth_t *h, const json_t *root)
{
    json_t *topics = json_object_get(root, "topics");
    size_t n = 0;
    const char *tname, *pname;
    json_t *t, *p;
    json_object_foreach(topics, tname, t)
    {
        json_object_foreach(json_object_get(t, "partitions"), pname, p)
        {
            int64_t part = jint(p, "partition");
            if (part < 0 || part > INT32_MAX)
                continue;
            if (n == h->cap_parts) {
                size_t cap = h->cap_parts ? h->cap_parts * 2 : 16;
                rill__kpstat_t *v = realloc(h->parts, cap * sizeof(*v));
                if (!v)
                    goto done; /* what fits, without memory */
                h->parts = v;
                h->cap_parts = cap;
            }
            rill__kpstat_t *e = &h->parts[n++];
            snprintf(e->topic, sizeof(e->topic), "%s", tname);
            e->partition = (int32_t)part;
            e->end_offset = joffset(p, h->read_committed ? "ls_offset" : "hi_offset");
            e->log_start_offset = joffset(p, "lo_offset");
            e->committed_offset = joffset(p, "committed_offset");
            e->position = joffset(p, "app_offset");
        }
    }
done:
    h->n_parts = n;
    if (n > 1)
        qsort(h->parts, n, sizeof(*h->parts), kpstat_cmp);
    /* When librdkafka took them: its clock is CLOCK_MONOTONIC in us, as
     * ours; otherwise (or if it looks off) now. */
    int64_t now = rill__now_ms(), ts = jint(root, "ts") / 1000;
    h->parts_at_ms = ts > 0 && ts <= now && now - ts < 60000 ? ts : now;
}

const rill__kpstat_t *rill__khealth_partition(const rill__khealth_t *h, const char *topic,
                                              int32_t partition)
{
    if (!h->n_parts)
        return NULL;
    rill__kpstat_t key;
    snprintf(key.topic, sizeof(key.topic), "%s", topic);
    key.partition = partition;
    return bsearch(&key, h->parts, h->n_parts, sizeof(*h->parts), kpstat_cmp);
}

void rill__khealth_consumer(rill__khealth_t *h, rd_kafka_t *rk)
{
    char level[32] = "";
    size_t size = sizeof(level);
    h->want_parts = 1;
    /* librdkafka's default is read_committed: its lag counts to the last
     * stable offset then. */
    h->read_committed =
        rd_kafka_conf_get(rd_kafka_conf(rk), "isolation.level", level, &size) != RD_KAFKA_CONF_OK ||
        strcmp(level, "read_uncommitted") != 0;
}

void rill__khealth_free(rill__khealth_t *h)
{
    free(h->parts);
    h->parts = NULL;
    h->n_parts = h->cap_parts = 0;
}

void rill__khealth_error(rill__khealth_t *h, rd_kafka_resp_err_t err, const char *text)
{
    h->errors++;
    snprintf(h->last_error, sizeof(h->last_error), "%s", text ? text : rd_kafka_err2str(err));
    if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN)
        h->brokers_up = 0;
}

void rill__khealth_stats(rill__khealth_t *h, const char *json, size_t len)
{
    json_t *root = json_loadb(json, len, 0, NULL);
    if (!root)
        return;
    int up = brokers_up(root);
    if (up >= 0) {
        h->brokers_up = (uint32_t)up;
        if (up > 0)
            h->connected_once = 1;
    }
    if (h->want_parts)
        take_partitions(h, root);
    json_decref(root);
}
