/*
 * The log hook (common.h): levels, the hook and the default writer, and
 * librdkafka's lines reaching the hook (a client that cannot connect
 * logs its failure; a client made with "debug" passes its debug lines).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "support/rtest.h"

#include <rill/rill.h>

#include "actors/util.h"
#include "kafka/kafka_int.h"

#define MAX_LINES 4096

typedef struct line {
    rill_log_level_t level;
    char facility[96];
    char text[160];
} line_t;

typedef struct seen {
    pthread_mutex_t mu;
    line_t v[MAX_LINES];
    int n;
} seen_t;

static seen_t seen = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void hook(void *opaque, rill_log_level_t level, const char *facility, const char *text)
{
    seen_t *s = opaque;
    pthread_mutex_lock(&s->mu);
    if (s->n < MAX_LINES) {
        line_t *l = &s->v[s->n++];
        l->level = level;
        snprintf(l->facility, sizeof(l->facility), "%s", facility);
        snprintf(l->text, sizeof(l->text), "%s", text);
    }
    pthread_mutex_unlock(&s->mu);
}

/* Lines whose facility starts with prefix, at level <= max_level and
 * >= min_level. */
static int count(const char *prefix, int min_level, int max_level)
{
    int c = 0;
    pthread_mutex_lock(&seen.mu);
    for (int i = 0; i < seen.n; i++)
        c += !strncmp(seen.v[i].facility, prefix, strlen(prefix)) &&
             (int)seen.v[i].level >= min_level && (int)seen.v[i].level <= max_level;
    pthread_mutex_unlock(&seen.mu);
    return c;
}

Test(log, the_hook_gets_the_lines_at_or_above_the_level)
{
    rill_log_set(hook, &seen);
    cr_assert_eq(rill_log_set_level(RILL_LOG_WARNING), RILL_LOG_WARNING, "the default");
    rill_log(RILL_LOG_INFO, "app.test", "not wanted %d", 1);
    rill_log(RILL_LOG_WARNING, "app.test", "wanted %d", 2);
    rill_log(RILL_LOG_ERR, NULL, "no facility");
    pthread_mutex_lock(&seen.mu);
    cr_assert_eq(seen.n, 2, "%d lines", seen.n);
    cr_assert_eq(seen.v[0].level, RILL_LOG_WARNING);
    cr_assert_str_eq(seen.v[0].facility, "app.test");
    cr_assert_str_eq(seen.v[0].text, "wanted 2");
    cr_assert_str_eq(seen.v[1].facility, "app");
    pthread_mutex_unlock(&seen.mu);
    /* Out of range: unchanged. */
    cr_assert_eq(rill_log_set_level((rill_log_level_t)99), RILL_LOG_WARNING);
    cr_assert_eq(rill_log_set_level(RILL_LOG_DEBUG), RILL_LOG_WARNING);
    rill_log(RILL_LOG_DEBUG, "app.test", "now wanted");
    cr_assert_eq(count("app.test", RILL_LOG_DEBUG, RILL_LOG_DEBUG), 1);
    cr_assert_str_eq(rill_log_level_name(RILL_LOG_ERR), "error");
    cr_assert_str_eq(rill_log_level_name(RILL_LOG_DEBUG), "debug");
    cr_assert_str_eq(rill_log_level_name((rill_log_level_t)-1), "unknown");
    /* Back to the default writer: nothing more reaches the hook. */
    rill_log_set(NULL, NULL);
    rill_log(RILL_LOG_ERR, "app.test", "to stderr (this line is expected in the test's output)");
    cr_assert_eq(count("app.test", 0, RILL_LOG_DEBUG), 2);
    rill_log_set_level(RILL_LOG_WARNING);
}

/* A librdkafka producer through rill's log setup, bootstrapped at a port
 * nothing listens on; polled until cond() holds or 15 s passed. */
static int client_logs(const char *debug, int (*cond)(void))
{
    rd_kafka_conf_t *kc = rd_kafka_conf_new();
    char err[256];
    cr_assert_eq(rd_kafka_conf_set(kc, "bootstrap.servers", "127.0.0.1:1", err, sizeof(err)),
                 RD_KAFKA_CONF_OK, "%s", err);
    if (debug)
        cr_assert_eq(rd_kafka_conf_set(kc, "debug", debug, err, sizeof(err)), RD_KAFKA_CONF_OK,
                     "%s", err);
    rill__kafka_quiet_log(kc);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, kc, err, sizeof(err));
    cr_assert(rk, "%s", err);
    int64_t deadline = rill__now_ms() + 15000;
    int ok = 0;
    while (!(ok = cond()) && rill__now_ms() < deadline)
        rd_kafka_poll(rk, 50);
    rd_kafka_destroy(rk);
    return ok;
}

static int failure_seen(void)
{
    return count("rdkafka.producer.", RILL_LOG_EMERG, RILL_LOG_WARNING) > 0;
}

static int debug_seen(void)
{
    return count("rdkafka.producer.", RILL_LOG_DEBUG, RILL_LOG_DEBUG) > 0;
}

Test(log, librdkafka_lines_reach_the_hook, .timeout = 60)
{
    rill_log_set(hook, &seen);
    rill_log_set_level(RILL_LOG_WARNING);
    cr_assert(client_logs(NULL, failure_seen), "no line of the client's connection failure");
    cr_assert_eq(count("rdkafka.producer.", RILL_LOG_NOTICE, RILL_LOG_DEBUG), 0,
                 "lines below the level were passed on");
    /* A client made with "debug" passes its debug lines whatever the level. */
    cr_assert(client_logs("broker", debug_seen), "no debug line of a client with debug set");
    rill_log_set(NULL, NULL);
}
