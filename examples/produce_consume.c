/*
 * produce_consume: start the embedded broker (or use a real cluster), produce
 * keyed records, read every one of them back and check each record's key,
 * value and headers. Prints progress and a summary with counts and rates.
 *
 *   produce_consume [--count N] [--partitions P] [--keys K]
 *                   [--bootstrap HOST:PORT[,...]] [--topic NAME]
 *
 * Exit status 0 only when every record came back exactly once and intact.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <rill/rill.h>
#include <rill/testkit.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

typedef struct phase {
    const char *name;
    int last_decile;
    double start;
} phase_t;

static void progress(void *opaque, size_t done, size_t total)
{
    phase_t *ph = opaque;
    int decile = total ? (int)(done * 10 / total) : 10;
    if (decile <= ph->last_decile)
        return;
    ph->last_decile = decile;
    double el = now_s() - ph->start;
    printf("  %-8s %8zu / %zu records  (%3d%%, %.0f records/s)\n", ph->name, done, total,
           decile * 10, el > 0 ? (double)done / el : 0.0);
    fflush(stdout);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: produce_consume [--count N] [--partitions P] [--keys K]\n"
               "                       [--bootstrap SERVERS] [--topic NAME]\n"
               "Without --bootstrap an embedded broker is started in-process.\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"count", required_argument, NULL, 'n'},
        {"partitions", required_argument, NULL, 'p'},
        {"keys", required_argument, NULL, 'k'},
        {"bootstrap", required_argument, NULL, 'b'},
        {"topic", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    long count = 100000, partitions = 4, keys = 1000;
    const char *bootstraps = NULL;
    char topic[128];
    snprintf(topic, sizeof(topic), "rill-demo-%d-%ld", (int)getpid(), (long)time(NULL));
    int opt;
    while ((opt = getopt_long(argc, argv, "n:p:k:b:t:h", opts, NULL)) != -1) {
        switch (opt) {
        case 'n':
            count = strtol(optarg, NULL, 10);
            break;
        case 'p':
            partitions = strtol(optarg, NULL, 10);
            break;
        case 'k':
            keys = strtol(optarg, NULL, 10);
            break;
        case 'b':
            bootstraps = optarg;
            break;
        case 't':
            snprintf(topic, sizeof(topic), "%s", optarg);
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (count < 1 || partitions < 1 || partitions > 10000 || keys < 0) {
        fprintf(stderr, "produce_consume: --count and --partitions must be >= 1, --keys >= 0\n");
        return 2;
    }

    char err[512];
    rill_broker_t *broker = NULL;
    printf("rill %s: produce %ld keyed records and consume them all back\n", rill_version_str(),
           count);
    if (!bootstraps) {
        broker = rill_broker_new(1, err, sizeof(err));
        if (!broker) {
            rill_log(RILL_LOG_ERR, "produce_consume", "embedded broker: %s", err);
            return 1;
        }
        if (rill_broker_create_topic(broker, topic, (int)partitions, 1, err, sizeof(err))) {
            rill_log(RILL_LOG_ERR, "produce_consume", "create topic: %s", err);
            rill_broker_destroy(broker);
            return 1;
        }
        bootstraps = rill_broker_bootstraps(broker);
        printf("embedded broker at %s, topic %s with %ld partitions\n", bootstraps, topic,
               partitions);
    } else {
        printf("cluster %s, topic %s (auto-created if the cluster allows)\n", bootstraps, topic);
    }

    rill_gen_t gen = RILL_GEN_DEFAULT;
    gen.key_space = (size_t)keys;
    gen.headers = 1;
    int rc = 1;

    phase_t prod = {"produced", 0, now_s()};
    rill_testkit_opts_t popts = {.timeout_ms = 120000, .progress = progress, .opaque = &prod};
    if (rill_testkit_produce_generated(bootstraps, topic, (size_t)count, &gen, &popts, err,
                                       sizeof(err))) {
        rill_log(RILL_LOG_ERR, "produce_consume", "produce: %s", err);
        goto out;
    }
    double prod_s = now_s() - prod.start;

    phase_t cons = {"consumed", 0, now_s()};
    rill_testkit_opts_t copts = {.timeout_ms = 120000, .progress = progress, .opaque = &cons};
    rill_consumed_t *got = NULL;
    rill_err_t cerr = rill_testkit_consume(bootstraps, topic, RILL_CONSUME_TO_END, &copts, &got,
                                           err, sizeof(err));
    double cons_s = now_s() - cons.start;
    if (cerr && cerr != RILL_ETIMEDOUT) {
        rill_log(RILL_LOG_ERR, "produce_consume", "consume: %s", err);
        goto out;
    }
    if (cerr) /* timed out: what was read is verified below */
        rill_log(RILL_LOG_WARNING, "produce_consume", "consume: %s", err);

    rill_verify_report_t rep;
    rill_err_t verr = rill_testkit_verify(got, (size_t)count, &gen, &rep, err, sizeof(err));
    printf("\nsummary\n");
    printf("  produced  %ld records in %.2f s  (%.0f records/s)\n", count, prod_s,
           (double)count / prod_s);
    printf("  consumed  %zu records in %.2f s  (%.0f records/s)\n", rill_consumed_count(got),
           cons_s, (double)rill_consumed_count(got) / cons_s);
    printf("  verified  %zu distinct, %zu missing, %zu duplicates, %zu corrupt, "
           "%zu out of order per partition\n",
           rep.distinct, rep.missing, rep.duplicates, rep.corrupt, rep.out_of_order);
    if (verr)
        printf("  FAILED: %s\n", err);
    else
        printf("  OK: every record came back exactly once, with its key, value and headers\n");
    rill_consumed_destroy(got);
    rc = verr || cerr ? 1 : 0;
out:
    rill_broker_destroy(broker);
    return rc;
}
