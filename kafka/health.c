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
 * 0 at once.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* The string value of "key" in the object text [p, end), into out. */
static int json_str(const char *p, const char *end, const char *key, char *out, size_t size)
{
    const char *k = strstr(p, key);
    if (!k || k >= end)
        return 0;
    k += strlen(key);
    const char *q = memchr(k, '"', (size_t)(end - k));
    if (!q)
        return 0;
    snprintf(out, size, "%.*s", (int)(q - k), k);
    return 1;
}

int rill__khealth_brokers_up(const char *json, size_t len)
{
    const char *end = json + len;
    const char *b = strstr(json, "\"brokers\":{");
    if (!b)
        return -1;
    /* The brokers' section ends where the topics' begins. */
    const char *t = strstr(b, "\"topics\":{");
    if (t)
        end = t;
    int up = 0, bootstrap_up = 0;
    /* Each broker object has "nodeid", "source" and "state" in that order;
     * its sub-objects (latencies, requests, partitions) have none of them.
     * Brokers learned from the metadata have their node id; a bootstrap
     * connection (node id -1) counts only until one is learned; the
     * internal and logical (group coordinator) ones never. */
    for (const char *p = strstr(b, "\"nodeid\":"); p && p < end; p = strstr(p + 1, "\"nodeid\":")) {
        const char *next = strstr(p + 1, "\"nodeid\":");
        const char *stop = next && next < end ? next : end;
        long nodeid = strtol(p + strlen("\"nodeid\":"), NULL, 10);
        char source[32] = "", state[32] = "";
        json_str(p, stop, "\"source\":\"", source, sizeof(source));
        json_str(p, stop, "\"state\":\"", state, sizeof(state));
        if (strcmp(state, "UP") || !strcmp(source, "internal") || !strcmp(source, "logical"))
            continue;
        if (nodeid >= 0)
            up++;
        else
            bootstrap_up = 1;
    }
    return up ? up : bootstrap_up;
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
    int up = rill__khealth_brokers_up(json, len);
    if (up < 0)
        return;
    h->brokers_up = (uint32_t)up;
    if (up > 0)
        h->connected_once = 1;
}
