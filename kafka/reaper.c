/*
 * Destroying consumer clients without blocking anyone for good.
 *
 * librdkafka 2.0.2's rd_kafka_destroy() of a consumer whose close did not
 * finish (its group handler not terminated: a revoke never served, the
 * brokers down) joins a main thread that never ends and spins a core
 * (librdkafka #2898, #4527). So a client is destroyed on a thread of its
 * own: a closed client's destroy is waited for at most REAP_WAIT_MS; a
 * half-closed one's thread first goes on serving the close (the brokers
 * may come back) for REAP_CLOSE_MS, then destroys it if it closed, or
 * abandons it: never destroyed, its memory and threads leaked, counted
 * (rill_kafka_clients_stats) and logged. The counts are process-wide: an
 * abandoned client outlives the system that made it.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kafka_int.h"

/* The reaper serves a close that did not finish in time at most this
 * long (the brokers may come back), then abandons the client. */
#define REAP_CLOSE_MS 60000
/* How long the last release of a closed client waits for its destroy. */
#define REAP_WAIT_MS  2000

typedef struct reap {
    rd_kafka_t *rk;
    rd_kafka_queue_t *close_q; /* a close to finish first, or NULL */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    int refs; /* the thread's and the waiter's (under mu) */
    struct reap *next;
} reap_t;

static struct {
    pthread_mutex_t mu;
    reap_t *abandoned; /* with their clients: leaked on purpose, kept reachable */
    _Atomic uint64_t closing, destroyed, abandoned_n, late;
} reaper = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void reap_unref(reap_t *r)
{
    pthread_mutex_lock(&r->mu);
    int last = --r->refs == 0;
    pthread_mutex_unlock(&r->mu);
    if (last) {
        pthread_mutex_destroy(&r->mu);
        pthread_cond_destroy(&r->cv);
        free(r);
    }
}

/* Serve a close nobody owns any more until it finishes or time is up. */
static int reap_finish_close(rd_kafka_t *rk, rd_kafka_queue_t *cq)
{
    int64_t end = rill__now_ms() + REAP_CLOSE_MS;
    while (!rd_kafka_consumer_closed(rk) && rill__now_ms() < end) {
        rd_kafka_event_t *ev = rd_kafka_queue_poll(cq, 100);
        if (!ev)
            continue;
        if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_REBALANCE) {
            const char *proto = rd_kafka_rebalance_protocol(rk);
            if (rd_kafka_event_error(ev) == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS && proto &&
                !strcmp(proto, "COOPERATIVE")) {
                rd_kafka_error_t *e =
                    rd_kafka_incremental_unassign(rk, rd_kafka_event_topic_partition_list(ev));
                if (e)
                    rd_kafka_error_destroy(e);
            } else {
                rd_kafka_assign(rk, NULL);
            }
        }
        rd_kafka_event_destroy(ev);
    }
    return rd_kafka_consumer_closed(rk);
}

static void *reap_main(void *arg)
{
    reap_t *r = arg;
    int closed = !r->close_q || reap_finish_close(r->rk, r->close_q);
    if (closed) {
        if (r->close_q)
            rd_kafka_queue_destroy(r->close_q);
        rd_kafka_destroy_flags(r->rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
        /* relaxed: counters, read for statistics only. */
        atomic_fetch_add_explicit(&reaper.destroyed, 1, memory_order_relaxed);
    } else {
        rill_log(RILL_LOG_WARNING, "kafka.consumer",
                 "%s did not finish leaving its group within %d ms after the "
                 "stop: abandoned (not destroyed: librdkafka would never return)",
                 rd_kafka_name(r->rk), REAP_CLOSE_MS);
        atomic_fetch_add_explicit(&reaper.abandoned_n, 1, memory_order_relaxed);
    }
    atomic_fetch_sub_explicit(&reaper.closing, 1, memory_order_relaxed);
    pthread_mutex_lock(&r->mu);
    r->done = 1;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
    if (!closed) {
        pthread_mutex_lock(&reaper.mu);
        r->next = reaper.abandoned;
        reaper.abandoned = r; /* keeps the thread's reference */
        pthread_mutex_unlock(&reaper.mu);
        return NULL;
    }
    reap_unref(r);
    return NULL;
}

void rill__kclient_reap(rd_kafka_t *rk, rd_kafka_queue_t *close_q, int never_assigned_sticky)
{
    if (!rk)
        return;
    if (never_assigned_sticky) {
        /* Its destroy may abort the process (pick_strategy). */
        rill_log(RILL_LOG_WARNING, "kafka.consumer",
                 "%s (cooperative-sticky, never assigned) abandoned: librdkafka "
                 "%s may abort destroying it (librdkafka #4312)",
                 rd_kafka_name(rk), rd_kafka_version_str());
        reap_t *r = calloc(1, sizeof(*r));
        atomic_fetch_add_explicit(&reaper.abandoned_n, 1, memory_order_relaxed);
        if (!r)
            return;
        r->rk = rk;
        r->close_q = close_q;
        pthread_mutex_lock(&reaper.mu);
        r->next = reaper.abandoned;
        reaper.abandoned = r;
        pthread_mutex_unlock(&reaper.mu);
        return;
    }
    reap_t *r = calloc(1, sizeof(*r));
    pthread_attr_t at;
    pthread_t t;
    int started = 0;
    if (r) {
        r->rk = rk;
        r->close_q = close_q;
        r->refs = 2;
        pthread_mutex_init(&r->mu, NULL);
        pthread_cond_init(&r->cv, NULL);
        atomic_fetch_add_explicit(&reaper.closing, 1, memory_order_relaxed);
        if (!pthread_attr_init(&at)) {
            pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
            started = !pthread_create(&t, &at, reap_main, r);
            pthread_attr_destroy(&at);
        }
        if (!started)
            atomic_fetch_sub_explicit(&reaper.closing, 1, memory_order_relaxed);
    }
    if (!started) {
        /* No thread: destroy here if that can end, else abandon. */
        if (r) {
            pthread_mutex_destroy(&r->mu);
            pthread_cond_destroy(&r->cv);
            free(r);
        }
        if (close_q) {
            rill_log(RILL_LOG_WARNING, "kafka.consumer",
                     "%s abandoned unclosed (no thread to close it)", rd_kafka_name(rk));
            atomic_fetch_add_explicit(&reaper.abandoned_n, 1, memory_order_relaxed);
            return;
        }
        rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
        atomic_fetch_add_explicit(&reaper.destroyed, 1, memory_order_relaxed);
        return;
    }
    /* A closed client's destroy is quick: wait for it (bounded), so that a
     * stopped system leaves no client behind. A half-closed one's thread
     * goes on alone. */
    if (!close_q) {
        struct timespec ts = rill__realtime_after_ms(REAP_WAIT_MS);
        pthread_mutex_lock(&r->mu);
        while (!r->done && pthread_cond_timedwait(&r->cv, &r->mu, &ts) == 0)
            ;
        int done = r->done;
        pthread_mutex_unlock(&r->mu);
        if (!done) {
            atomic_fetch_add_explicit(&reaper.late, 1, memory_order_relaxed);
            rill_log(RILL_LOG_WARNING, "kafka.consumer",
                     "%s not destroyed within %d ms: its thread goes on "
                     "alone",
                     rd_kafka_name(rk), REAP_WAIT_MS);
        }
    }
    reap_unref(r);
}

void rill_kafka_clients_stats(rill_kafka_clients_stats_t *out)
{
    if (!out)
        return;
    out->closing = atomic_load_explicit(&reaper.closing, memory_order_relaxed);
    out->destroyed = atomic_load_explicit(&reaper.destroyed, memory_order_relaxed);
    out->abandoned = atomic_load_explicit(&reaper.abandoned_n, memory_order_relaxed);
    out->destroy_late = atomic_load_explicit(&reaper.late, memory_order_relaxed);
}
