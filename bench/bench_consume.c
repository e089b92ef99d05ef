/*
 * bench_consume: consume -> confirm -> commit through rill's consumer
 * actor, against a raw librdkafka consumer with the same guarantees, on the
 * same broker and data, in the same run, alternating.
 *
 *   baseline  a poll loop: rd_kafka_consumer_poll, rd_kafka_offsets_store
 *             of offset + 1 after each record, an async commit every 1,000
 *   rill      rill_consumer_spawn -> a sink stage that confirms every
 *             record (rill_consumer_confirm), commits driven by rill
 *
 * The broker is a separate `rill-broker` process, so this process's CPU
 * time (getrusage: user + sys, librdkafka's threads included) is the
 * client's alone. Data: RECORDS records of VALUE bytes over PARTITIONS
 * partitions (the mock keeps at most 5 MiB per partition: 1,000,000 x 100
 * bytes over 32 partitions stays under it). Both read every partition from
 * its first offset, without a group join.
 *
 * usage: bench_consume [records, default 1000000] [runs, default 3]
 *                      [path to rill-broker, default: next to this binary]
 */
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <rill/rill.h>

#define PARTITIONS 32
#define VALUE      100

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_us(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e6 +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

typedef struct result {
    double rate; /* records/s */
    double cost; /* CPU us per 1,000 records */
} result_t;

/* ---- the broker process ---- */

static pid_t broker_pid;

static void broker_start(const char *bin, char *boot, size_t size)
{
    char file[] = "/tmp/bench-consume-boot-XXXXXX";
    int fd = mkstemp(file);
    if (fd < 0) {
        perror("mkstemp");
        exit(1);
    }
    close(fd);
    unlink(file);
    char topic[64];
    snprintf(topic, sizeof(topic), "bench:%d:1", PARTITIONS);
    broker_pid = fork();
    if (broker_pid == 0) {
        execl(bin, bin, "--topic", topic, "--bootstrap-file", file, "--no-stdin", (char *)NULL);
        perror("exec rill-broker");
        _exit(127);
    }
    for (int i = 0; i < 1000; i++) {
        FILE *f = fopen(file, "r");
        if (f) {
            if (fgets(boot, (int)size, f))
                boot[strcspn(boot, "\n")] = '\0';
            fclose(f);
            if (*boot)
                return;
        }
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL); /* waiting for the broker process to write its address */
    }
    fprintf(stderr, "bench_consume: rill-broker did not start (%s)\n", bin);
    exit(1);
}

static void broker_stop(void)
{
    if (broker_pid > 0) {
        kill(broker_pid, SIGTERM);
        waitpid(broker_pid, NULL, 0);
    }
}

/* ---- baseline: raw librdkafka ---- */

static rd_kafka_t *raw_consumer(const char *boot, const char *group)
{
    char err[512];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    const char *kv[] = {
        "bootstrap.servers",        boot,    "group.id", group, "enable.auto.commit", "false",
        "enable.auto.offset.store", "false", NULL};
    for (int i = 0; kv[i]; i += 2)
        rd_kafka_conf_set(c, kv[i], kv[i + 1], err, sizeof(err));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, err, sizeof(err));
    if (!rk) {
        fprintf(stderr, "bench_consume: %s\n", err);
        exit(1);
    }
    rd_kafka_poll_set_consumer(rk);
    return rk;
}

static result_t run_raw(const char *boot, uint64_t n, int run)
{
    char group[64];
    snprintf(group, sizeof(group), "raw-%d", run);
    rd_kafka_t *rk = raw_consumer(boot, group);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(PARTITIONS);
    for (int p = 0; p < PARTITIONS; p++)
        rd_kafka_topic_partition_list_add(l, "bench", p)->offset = 0;
    double t0 = now_s(), c0 = cpu_us();
    rd_kafka_assign(rk, l);
    uint64_t got = 0;
    while (got < n) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (!m)
            continue;
        if (!m->err) {
            rd_kafka_topic_partition_list_t *o = rd_kafka_topic_partition_list_new(1);
            rd_kafka_topic_partition_list_add(o, "bench", m->partition)->offset = m->offset + 1;
            rd_kafka_offsets_store(rk, o);
            rd_kafka_topic_partition_list_destroy(o);
            if (++got % 1000 == 0)
                rd_kafka_commit(rk, NULL, 1);
        }
        rd_kafka_message_destroy(m);
    }
    rd_kafka_commit(rk, NULL, 0);
    double dt = now_s() - t0, cpu = cpu_us() - c0;
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return (result_t){(double)n / dt, cpu / ((double)n / 1000.0)};
}

/* ---- rill ---- */

typedef struct sink_state {
    rill_system_t *sys;
    rill_aid_t consumer;
    _Atomic uint64_t got;
    uint64_t n;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int done;
} sink_state_t;

static rill_err_t confirm_each(void *opaque, rill_elem_t *e)
{
    sink_state_t *s = opaque;
    rill_consumer_confirm(s->sys, s->consumer, e);
    rill_elem_release(e);
    if (atomic_fetch_add_explicit(&s->got, 1, memory_order_relaxed) + 1 == s->n) {
        pthread_mutex_lock(&s->lock);
        s->done = 1;
        pthread_cond_signal(&s->cond);
        pthread_mutex_unlock(&s->lock);
    }
    return RILL_OK;
}

static result_t run_rill(const char *boot, uint64_t n, int run)
{
    char err[512], group[64];
    snprintf(group, sizeof(group), "rill-%d", run);
    double t0 = now_s(), c0 = cpu_us();
    rill_system_t *sys = rill_system_new(&(rill_system_opts_t){.executors = 2}, err, sizeof(err));
    rill_system_start(sys);
    rill_consumer_conf_t *c = rill_consumer_conf_new();
    rill_consumer_conf_set(c, "bootstrap.servers", boot, err, sizeof(err));
    rill_consumer_conf_set(c, "group.id", group, err, sizeof(err));
    for (int p = 0; p < PARTITIONS; p++)
        rill_consumer_conf_assign(c, "bench", p, 0);
    sink_state_t s = {.sys = sys, .n = n};
    pthread_mutex_init(&s.lock, NULL);
    pthread_cond_init(&s.cond, NULL);
    rill_stage_opts_t co = {.executor = 0}, so = {.executor = 1, .mailbox_capacity = 1024};
    if (rill_consumer_spawn(sys, c, &co, &s.consumer, err, sizeof(err))) {
        fprintf(stderr, "bench_consume: %s\n", err);
        exit(1);
    }
    rill_aid_t sink;
    rill_stage_spawn(sys, rill_sink_foreach(confirm_each, &s), &so, &sink);
    rill_stage_connect(sys, s.consumer, sink);
    pthread_mutex_lock(&s.lock);
    while (!s.done)
        pthread_cond_wait(&s.cond, &s.lock);
    pthread_mutex_unlock(&s.lock);
    if (getenv("BENCH_STATS")) {
        rill_consumer_stats_t cs;
        if (rill_consumer_stats(sys, s.consumer, &cs) == RILL_OK)
            fprintf(stderr,
                    "  rill consumer: polled %llu pauses %llu buffered_max %u committed %llu\n",
                    (unsigned long long)cs.polled, (unsigned long long)cs.pauses, cs.buffered_max,
                    (unsigned long long)cs.committed);
    }
    rill_stop(sys, s.consumer); /* final commit on the way down */
    while (rill_alive(sys, s.consumer)) {
        struct timespec ts = {0, 1000 * 1000};
        nanosleep(&ts, NULL); /* waiting for the final commit, as the baseline does */
    }
    double dt = now_s() - t0, cpu = cpu_us() - c0;
    rill_system_stop(sys, 10000);
    rill_system_destroy(sys);
    pthread_cond_destroy(&s.cond);
    pthread_mutex_destroy(&s.lock);
    return (result_t){(double)n / dt, cpu / ((double)n / 1000.0)};
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int main(int argc, char **argv)
{
    uint64_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 1000000;
    int runs = argc > 2 ? atoi(argv[2]) : 3;
    char bin[PATH_MAX];
    if (argc > 3) {
        snprintf(bin, sizeof(bin), "%s", argv[3]);
    } else {
        ssize_t len = readlink("/proc/self/exe", bin, sizeof(bin) - 1);
        bin[len > 0 ? len : 0] = '\0';
        char *slash = strrchr(bin, '/');
        snprintf(slash ? slash + 1 : bin, sizeof(bin) - (size_t)(slash ? slash + 1 - bin : 0),
                 "../tools/rill-broker");
    }
    if (n < 1000 || runs < 1 || runs > 20) {
        fprintf(stderr, "usage: bench_consume [records >= 1000] [runs 1..20] [rill-broker]\n");
        return 2;
    }
    char boot[512] = "";
    broker_start(bin, boot, sizeof(boot));
    atexit(broker_stop);
    char err[512];
    rill_gen_t gen = RILL_GEN_DEFAULT;
    gen.value_size = VALUE;
    rill_testkit_opts_t po = {.timeout_ms = 300000};
    printf("bench_consume: producing %llu records of %d bytes over %d partitions to %s\n",
           (unsigned long long)n, VALUE, PARTITIONS, boot);
    fflush(stdout);
    if (rill_testkit_produce_generated(boot, "bench", n, &gen, &po, err, sizeof(err))) {
        fprintf(stderr, "bench_consume: produce: %s\n", err);
        return 1;
    }
    double rr[20], rc[20], br[20], bc[20];
    for (int r = 0; r < runs; r++) {
        result_t b = run_raw(boot, n, r);
        result_t x = run_rill(boot, n, r);
        br[r] = b.rate;
        bc[r] = b.cost;
        rr[r] = x.rate;
        rc[r] = x.cost;
        printf("  run %d: raw %.0f rec/s %.0f us/1k cpu | rill %.0f rec/s %.0f us/1k cpu\n", r + 1,
               b.rate, b.cost, x.rate, x.cost);
        fflush(stdout);
    }
    double mrr = median(rr, runs), mbr = median(br, runs);
    double mrc = median(rc, runs), mbc = median(bc, runs);
    printf("bench consume: rill %.0f records/s baseline %.0f records/s ratio %.2f\n", mrr, mbr,
           mrr / mbr);
    printf("bench consume_cost: rill %.1f us/1000 baseline %.1f us/1000 ratio %.2f\n", mrc, mbc,
           mrc / mbc);
    return 0;
}
