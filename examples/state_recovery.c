/*
 * state_recovery: state that moves with its partitions. Two instances of
 * one service share a consumer group; each keeps a running total per key
 * in an LMDB store of its own, with a changelog topic. One is killed with
 * SIGKILL; the other takes its partitions over, restores their state from
 * the changelog (only complete transactions, with the offsets they
 * reflect) and goes on from there, so every total is still exact.
 *
 * The service (an instance: --instance NAME):
 *
 *   store         LMDB in --store DIR, changelog "totals-changelog"
 *   kafka-source  "payments", each assigned partition restored from the
 *                 changelog (unless the local store is current) and
 *                 started at the offset stored with its state
 *   throttle      --rate R payments a second (so the kill lands mid-way)
 *   totals        per key: the sum and the count of its payments
 *
 * The demo (no --instance): an embedded broker, 20,000 payments over 4
 * partitions, instance A, then B; once both process, A is killed; B ends
 * when its store holds every partition to its end offset; the demo then
 * checks every total in B's store against its own computation.
 *
 * usage: state_recovery [--payments N] [--rate R]
 *        state_recovery --instance NAME --bootstrap SERVERS --store DIR [--rate R]
 */
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <rill/rill.h>
#include <rill/state.h>
#include <rill/testkit.h>

#define TOPIC "payments"
#define PARTS 4
#define KEYS  100

typedef struct total {
    uint64_t sum, count;
} total_t;

/* ---- the service's whole processing ---- */

static rill_err_t add_payment(void *opaque, rill_state_t *st, rill_elem_t *in, rill_emitter_t *out)
{
    (void)out;
    uint64_t *processed = opaque;
    const rd_kafka_message_t *m = rill_record(in);
    char text[32] = "";
    memcpy(text, m->payload, m->len < sizeof(text) - 1 ? m->len : sizeof(text) - 1);
    total_t t = {0, 0};
    const void *v;
    size_t vl;
    if (rill_state_get(st, m->key, m->key_len, &v, &vl) == RILL_OK && vl == sizeof(t))
        memcpy(&t, v, sizeof(t));
    t.sum += (uint64_t)atol(text);
    t.count++;
    rill_err_t err = rill_state_put(st, m->key, m->key_len, &t, sizeof(t));
    rill_elem_release(in);
    if (++*processed % 1000 == 0) {
        printf("processed %" PRIu64 "\n", *processed);
        fflush(stdout);
    }
    return err;
}

static void on_rebalance(void *opaque, rill_rebalance_event_t ev,
                         const rd_kafka_topic_partition_list_t *parts)
{
    const char *name = opaque;
    printf("%s %s", name,
           ev == RILL_REBALANCE_ASSIGNED  ? "assigned"
           : ev == RILL_REBALANCE_REVOKED ? "revoked"
                                          : "lost");
    for (int i = 0; i < parts->cnt; i++)
        printf("%c%d", i ? ',' : ' ', (int)parts->elems[i].partition);
    printf("\n");
    fflush(stdout);
}

static int64_t stored_total(rill_store_t *s)
{
    int64_t sum = 0;
    for (int p = 0; p < PARTS; p++) {
        int64_t o = 0;
        if (rill_store_offset(s, TOPIC, p, &o) == RILL_OK)
            sum += o;
    }
    return sum;
}

static int instance(const char *name, const char *boot, const char *dir, long rate)
{
    char err[512];
    rill_store_t *store = NULL;
    const char *kconf[] = {"bootstrap.servers", boot, NULL};
    rill_store_opts_t so = {.no_sync = 1};
    if (rill_store_open_lmdb(dir, &so, &store, err, sizeof(err)) ||
        rill_store_set_changelog(store, "totals-changelog", kconf, err, sizeof(err))) {
        rill_log(RILL_LOG_ERR, "state_recovery", "%s: store: %s", name, err);
        return 1;
    }
    rill_system_t *sys = rill_system_new(NULL, err, sizeof(err));
    if (!sys || rill_system_start(sys))
        return 1;
    rill_consumer_conf_t *cc = rill_consumer_conf_new();
    const char *topics[] = {TOPIC};
    if (rill_consumer_conf_set(cc, "bootstrap.servers", boot, err, sizeof(err)) ||
        rill_consumer_conf_set(cc, "group.id", "state-recovery", err, sizeof(err)) ||
        rill_consumer_conf_set(cc, "session.timeout.ms", "6000", err, sizeof(err)) ||
        rill_consumer_conf_set(cc, "heartbeat.interval.ms", "500", err, sizeof(err)) ||
        /* Eager: the embedded broker's cooperative rebalances lose their
         * assignment and join again every few seconds (LIBRDKAFKA-NOTES),
         * so instance b could get no partition while a still runs. */
        rill_consumer_conf_set(cc, "partition.assignment.strategy", "range", err, sizeof(err)) ||
        rill_consumer_conf_subscribe(cc, topics, 1, err, sizeof(err)) ||
        rill_consumer_conf_set_rebalance_cb(cc, on_rebalance, (void *)name) ||
        rill_consumer_conf_use_store(cc, store)) {
        rill_log(RILL_LOG_ERR, "state_recovery", "%s: consumer: %s", name, err);
        return 1;
    }
    uint64_t processed = 0;
    rill_pipeline_t *p = rill_pipeline_new(sys, "totals");
    rill_pipeline_add(p, rill_kafka_source(cc), NULL);
    if (rate)
        rill_pipeline_add(p, rill_stage_throttle((uint32_t)rate, 1000), NULL);
    rill_pipeline_add(p, rill_stage_stateful(store, NULL, add_payment, &processed), NULL);
    if (rill_pipeline_start_supervised(p, NULL, err, sizeof(err))) {
        rill_log(RILL_LOG_ERR, "state_recovery", "%s: start: %s", name, err);
        return 1;
    }
    /* Until the store holds every partition to its end. */
    rd_kafka_conf_t *kc = rd_kafka_conf_new();
    rd_kafka_conf_set(kc, "bootstrap.servers", boot, err, sizeof(err));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, kc, err, sizeof(err));
    int64_t ends[PARTS], end = 0;
    for (int i = 0; i < PARTS; i++) {
        int64_t lo;
        if (!rk || rd_kafka_query_watermark_offsets(rk, TOPIC, i, &lo, &ends[i], 10000))
            return 1;
        end += ends[i];
    }
    rd_kafka_destroy(rk);
    rill_store_wait_offsets(store, TOPIC, PARTS, ends, 180000);
    rill_pipeline_result_t res;
    rill_pipeline_stop(p);
    rill_pipeline_wait(p, 30000, &res);
    rill_pipeline_destroy(p);
    rill_system_stop(sys, 10000);
    rill_system_destroy(sys);
    rill_store_stats_t ss;
    rill_store_stats(store, &ss);
    printf("%s done: stored %" PRId64 " of %" PRId64 ", restores %" PRIu64 " (%" PRIu64
           " changelog records), changelog records sent %" PRIu64 "\n",
           name, stored_total(store), end, ss.restores, ss.restored, ss.changelog_sent);
    fflush(stdout);
    int ok = stored_total(store) == end;
    rill_store_close(store);
    return ok ? 0 : 1;
}

/* ---- the demo ---- */

typedef struct child {
    pid_t pid;
    FILE *out;
} child_t;

static int spawn(child_t *c, const char *self, const char *name, const char *boot, const char *dir,
                 const char *rate)
{
    int fd[2];
    if (pipe(fd))
        return -1;
    c->pid = fork();
    if (c->pid == 0) {
        dup2(fd[1], 1);
        close(fd[0]);
        close(fd[1]);
        execl(self, self, "--instance", name, "--bootstrap", boot, "--store", dir, "--rate", rate,
              (char *)NULL);
        _exit(127);
    }
    close(fd[1]);
    c->out = fdopen(fd[0], "r");
    return c->pid > 0 && c->out ? 0 : -1;
}

/* Read c's lines (echoed) until one starts with `what`; 0, or -1 at its end. */
static int wait_line(child_t *c, const char *what)
{
    char line[512];
    while (fgets(line, sizeof(line), c->out)) {
        printf("  | %s", line);
        if (!strncmp(line, what, strlen(what)))
            return 0;
    }
    return -1;
}

int main(int argc, char **argv)
{
    long payments = 20000, rate = 2000;
    const char *name = NULL, *boot = NULL, *dir = NULL;
    static const struct option opts[] = {
        {"payments", required_argument, NULL, 'n'}, {"rate", required_argument, NULL, 'r'},
        {"instance", required_argument, NULL, 'i'}, {"bootstrap", required_argument, NULL, 'b'},
        {"store", required_argument, NULL, 's'},    {NULL, 0, NULL, 0}};
    for (int o; (o = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        if (o == 'n')
            payments = atol(optarg);
        else if (o == 'r')
            rate = atol(optarg);
        else if (o == 'i')
            name = optarg;
        else if (o == 'b')
            boot = optarg;
        else if (o == 's')
            dir = optarg;
        else
            return 2;
    }
    if (name)
        return boot && dir ? instance(name, boot, dir, rate) : 2;
    if (payments < 1000 || rate < 1) {
        fprintf(stderr, "state_recovery: bad arguments\n");
        return 2;
    }

    char err[512], tmp[] = "/tmp/state-recovery-XXXXXX", dir_a[64], dir_b[64], rate_s[24];
    rill_broker_t *broker = rill_broker_new(1, err, sizeof(err));
    if (!broker || rill_broker_create_topic(broker, TOPIC, PARTS, 1, err, sizeof(err)) ||
        rill_broker_create_topic(broker, "totals-changelog", PARTS, 1, err, sizeof(err)) ||
        !mkdtemp(tmp)) {
        rill_log(RILL_LOG_ERR, "state_recovery", "embedded broker: %s", err);
        return 1;
    }
    boot = rill_broker_bootstraps(broker);
    snprintf(dir_a, sizeof(dir_a), "%s/a", tmp);
    snprintf(dir_b, sizeof(dir_b), "%s/b", tmp);
    snprintf(rate_s, sizeof(rate_s), "%ld", rate);
    printf("embedded broker at %s; stores in %s\n", boot, tmp);
    rill_testkit_record_t *recs = calloc((size_t)payments, sizeof(*recs));
    char(*kv)[2][16] = calloc((size_t)payments, sizeof(*kv));
    total_t want[KEYS] = {{0, 0}};
    for (long i = 0; i < payments; i++) {
        int k = (int)(((uint64_t)i * 2654435761u) % KEYS);
        long amount = 1 + (i * 7919) % 500;
        snprintf(kv[i][0], sizeof(kv[i][0]), "acct-%03d", k);
        snprintf(kv[i][1], sizeof(kv[i][1]), "%ld", amount);
        want[k].sum += (uint64_t)amount;
        want[k].count++;
        recs[i] = (rill_testkit_record_t){.partition = RILL_PARTITION_ANY,
                                          .key = kv[i][0],
                                          .key_len = strlen(kv[i][0]),
                                          .value = kv[i][1],
                                          .value_len = strlen(kv[i][1])};
    }
    rill_testkit_opts_t po = {.timeout_ms = 60000};
    rill_err_t e = rill_testkit_produce(boot, TOPIC, recs, (size_t)payments, &po, err, sizeof(err));
    free(recs);
    free(kv);
    if (e) {
        rill_log(RILL_LOG_ERR, "state_recovery", "produce: %s", err);
        return 1;
    }
    printf("produced %ld payments over %d accounts; instance a, then b, %ld a second each\n",
           payments, KEYS, rate);
    fflush(stdout);

    char self[512];
    ssize_t sl = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (sl <= 0)
        return 1;
    self[sl] = '\0';
    child_t a = {-1, NULL}, b = {-1, NULL};
    int ok = spawn(&a, self, "a", boot, dir_a, rate_s) == 0 && wait_line(&a, "processed") == 0 &&
             spawn(&b, self, "b", boot, dir_b, rate_s) == 0 && wait_line(&b, "processed") == 0;
    if (ok) {
        kill(a.pid, SIGKILL); /* mid-way: b takes its partitions over */
        printf("killed instance a (SIGKILL)\n");
        fflush(stdout);
        ok = wait_line(&b, "b done") == 0;
    }
    int status = 1;
    if (a.pid > 0) {
        kill(a.pid, SIGKILL);
        waitpid(a.pid, NULL, 0);
    }
    if (b.pid > 0) {
        if (!ok)
            kill(b.pid, SIGKILL);
        waitpid(b.pid, &status, 0);
    }

    /* Every total in b's store against our own. */
    size_t right = 0, wrong = 0;
    uint64_t counted = 0;
    rill_store_t *s = NULL;
    if (ok && rill_store_open_lmdb(dir_b, NULL, &s, err, sizeof(err)) == RILL_OK) {
        for (int k = 0; k < KEYS; k++) {
            char key[32];
            int kl = snprintf(key, sizeof(key), "acct-%03d", k);
            total_t t = {0, 0};
            size_t vl = 0;
            for (int p = 0; p < PARTS; p++)
                if (rill_store_read(s, TOPIC, p, key, (size_t)kl, &t, sizeof(t), &vl) == RILL_OK)
                    break;
            counted += t.count;
            if (vl == sizeof(t) && t.sum == want[k].sum && t.count == want[k].count)
                right++;
            else
                wrong++;
        }
        rill_store_close(s);
    }
    if (!ok)
        printf("FAILED: instance b %s\n",
               b.pid > 0 ? "processed nothing while a ran, or did not end" : "did not start");
    printf("\nsummary\n");
    printf("  payments                     %ld over %d accounts, %d partitions\n", payments, KEYS,
           PARTS);
    printf("  totals right in b's store    %zu of %d (%zu wrong), %" PRIu64 " payments counted\n",
           right, KEYS, wrong, counted);
    ok = ok && WIFEXITED(status) && WEXITSTATUS(status) == 0 && right == KEYS;
    if (ok)
        printf("  OK: a was killed, b restored its partitions from the changelog, every total "
               "exact\n");
    else
        printf("  FAILED\n");
    char cmd[96];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmp);
    if (system(cmd) != 0)
        rill_log(RILL_LOG_WARNING, "state_recovery", "could not remove %s", tmp);
    rill_broker_destroy(broker);
    return ok ? 0 : 1;
}
