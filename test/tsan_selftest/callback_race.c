/*
 * The ThreadSanitizer configuration still catches a race in application
 * code that librdkafka calls on its own threads (rill's callbacks run
 * there). A log callback and the main thread both write `shared` without
 * synchronisation: TSan must report it. Run only in a TSan tree; the test
 * passes when the report is printed.
 *
 * (The old suppression, race:librdkafka.so.1, hid exactly this: every
 * frame of an rdk thread's creation stack is in librdkafka.)
 */
#include <librdkafka/rdkafka.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>

static int shared;       /* the race */
static atomic_int calls; /* relaxed: no happens-before for TSan */

static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    (void)level;
    (void)fac;
    (void)buf;
    shared++;
    atomic_fetch_add_explicit(&calls, 1, memory_order_relaxed);
}

int main(void)
{
    char err[256];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    if (rd_kafka_conf_set(c, "bootstrap.servers", "127.0.0.1:1", err, sizeof(err)) ||
        rd_kafka_conf_set(c, "debug", "broker", err, sizeof(err))) {
        fprintf(stderr, "conf: %s\n", err);
        return 2;
    }
    rd_kafka_conf_set_log_cb(c, log_cb);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, err, sizeof(err));
    if (!rk) {
        fprintf(stderr, "rd_kafka_new: %s\n", err);
        return 2;
    }
    /* Until the callback has run a few times (or 20 s), writing meanwhile. */
    struct timespec nap = {0, 5 * 1000 * 1000};
    for (int i = 0; i < 4000 && atomic_load_explicit(&calls, memory_order_relaxed) < 5; i++) {
        shared++;
        nanosleep(&nap, NULL);
    }
    shared++;
    rd_kafka_destroy(rk);
    printf("callback ran %d times\n", atomic_load_explicit(&calls, memory_order_relaxed));
    return 0;
}
