/*
 * bench_txn: what exactly-once costs. The consume -> uppercase -> produce
 * pipeline of bench_pipeline, once at least once and once exactly once, on
 * the same broker and input, in the same run, alternating:
 *
 *   alo       (the baseline) rill_kafka_source (rill.commit default: async
 *             commits every 1,000 confirms) -> rill_stage_map
 *             (bench_pipe_map: uppercase into a produce request for the
 *             same partition of the output topic) -> rill_kafka_sink
 *             (idempotent, acks=all, linger.ms=5); the delivery confirms
 *             the input record. Done when the source's commit callback
 *             has seen every input offset committed.
 *   eos<N>    rill_kafka_source with rill.commit=transaction -> the same
 *             map -> rill_kafka_txn_sink (transactional.id of its own per
 *             run, acks=all, linger.ms=5), rill.txn.max.records=N for N =
 *             100, 1,000 and 10,000, rill.txn.max.ms=60000 (the record count
 *             decides; the input is a multiple of 10,000 records, so the last
 *             transaction is full too). Done when the sink's transaction
 *             callback has reported every input offset committed (the
 *             offsets sent with the committed transactions).
 *
 * Input: one topic of PARTITIONS partitions, `records` generated records
 * of VALUE bytes, the same number in each partition (pinned, so the
 * per-partition volume is known: the mock broker keeps at most 5 MiB or
 * 100,000 records a partition, see main()), written once into a
 * `rill-broker` process. Every run gets a fresh consumer group, a fresh
 * output topic and (eos) a fresh transactional.id, and reads every input
 * partition from offset 0 without a group join. The modes run alo, eos100,
 * eos1000, eos10000 in even runs and in the reverse order in odd ones (a
 * palindrome: a drift over two runs favours none). Both clocks (time and
 * process CPU, librdkafka's threads included) start before the pipeline
 * starts (it makes its clients then: the transactional side's clock
 * includes init_transactions) and stop when every input offset is
 * committed. After each run, untimed: the output topic is read back
 * (read_committed, librdkafka's default) and every input record must be
 * there once at least, uppercased, and the committed offsets must cover
 * every input record (alo: the group's, read back; eos: those the committed
 * transactions carried, as librdkafka's mock broker acknowledges
 * TxnOffsetCommit without storing its offsets); duplicates are counted. An
 * eos run must also commit every transaction (none aborted) and find no
 * duplicate.
 *
 * Lines: txn<N> (rill: eos<N>, baseline: alo of the same runs) in records
 * per second, txn<N>_cost in CPU us per 1,000 records; then per mode the
 * sink's commit latency (txn_latency: from the decision to commit to
 * EndTxn's answer; its histogram's p50 and p99, interpolated inside
 * rill's fixed buckets, over the commits of every run, and the exact mean)
 * and the time each transaction adds, (eos time - alo time) / transactions
 * from the medians.
 *
 * Experiments (the reported runs set none): BENCH_ONLY=alo|eos100|eos1000|
 * eos10000 runs that mode alone (the ratios then compare with 1 rec/s);
 * BENCH_STATS=1 prints each run's source and sink counters;
 * BENCH_RILL_CONSUMER_CONF and BENCH_RILL_PRODUCER_CONF="key=value,..."
 * add properties to both modes' clients; BENCH_STALL_MS (default 60000):
 * a run that commits nothing new this long is reported (counters, the
 * last error) and fails.
 *
 * usage: bench_txn [records, a multiple of 10000, default 160000] [runs, default 5]
 *                  [path to rill-broker, default: next to this binary]
 */
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rill/rill.h>
#include <rill/testkit.h>

#include "bench_util.h"

#define PARTITIONS 4
#define VALUE      100
#define MAX_RUNS   20
#define IN_TOPIC   "tin"
#define LINGER_MS  "5"
#define TXN_MS     "60000"

/* The modes, in the order of an even run (odd runs: reversed). */
enum { ALO, EOS100, EOS1000, EOS10000, MODES };
static const char *const mode_name[MODES] = {"alo", "eos100", "eos1000", "eos10000"};
static const char *const txn_records[MODES] = {NULL, "100", "1000", "10000"};

static void die(const char *what, const char *why)
{
    fprintf(stderr, "bench_txn: %s: %s\n", what, why);
    exit(1);
}

typedef struct result {
    double rate;   /* input records/s, start to every offset committed */
    double cost;   /* CPU us per 1,000 records */
    double secs;   /* the run's time */
    int ok;        /* the checks passed */
    uint64_t dups; /* output records beyond one per input record */
    rill_producer_stats_t ps;
} result_t;

/* The transactional sink's callback: a committed transaction's offsets are
 * the input's committed offsets. */
static void on_txn(void *opaque, const rill_txn_info_t *info)
{
    if (info->event == RILL_TXN_COMMITTED)
        bench_pipe_committed(opaque, info->offsets);
    else
        fprintf(stderr, "bench_txn: transaction %" PRIu64 " aborted (%" PRIu64 " records): %s\n",
                info->seq, info->records, info->reason);
}

static int consumer_set(void *c, const char *k, const char *v, char *e, size_t es)
{
    return rill_consumer_conf_set(c, k, v, e, es);
}

static int producer_set(void *c, const char *k, const char *v, char *e, size_t es)
{
    return rill_producer_conf_set(c, k, v, e, es);
}

/* What the stages are at: when a run stalls, and with BENCH_STATS. */
static void print_stats(const char *why, const rill_consumer_stats_t *c,
                        const rill_producer_stats_t *k)
{
    fprintf(stderr,
            "  %s: source polled %" PRIu64 " emitted %" PRIu64 " confirmed %" PRIu64
            " committed %" PRIu64 " commit_errors %" PRIu64 " buffered %u unconfirmed %u paused %d"
            " blocked %d errors %" PRIu64 " \"%s\" | sink requested %" PRIu64 " delivered %" PRIu64
            " failed %" PRIu64 " inflight %u txn committed %" PRIu64 " aborted %" PRIu64
            " retries %" PRIu64 " stale %" PRIu64 " errors %" PRIu64 " \"%s\"\n",
            why, c->polled, c->emitted, c->confirmed, c->committed, c->commit_errors, c->buffered,
            c->unconfirmed, c->paused, c->blocked, c->errors, c->last_error, k->requested,
            k->delivered, k->failed, k->inflight, k->txn_committed, k->txn_aborted, k->txn_retries,
            k->txn_stale_dropped, k->errors, k->last_error);
}

static result_t run_mode(const char *boot, uint64_t n, int run, int mode)
{
    char err[512], group[64], out[64], tid[64];
    snprintf(group, sizeof(group), "txn-%s-%d", mode_name[mode], run);
    snprintf(out, sizeof(out), "tout-%s-%d", mode_name[mode], run);
    snprintf(tid, sizeof(tid), "bench-txn-%s-%d", mode_name[mode], run);
    int eos = mode != ALO;
    bench_pipe_t ms;
    bench_pipe_init(&ms, IN_TOPIC, out);
    rill_system_t *sys = rill_system_new(&(rill_system_opts_t){.executors = 2}, err, sizeof(err));
    if (!sys || rill_system_start(sys))
        die("rill system", sys ? "cannot start" : err);
    rill_consumer_conf_t *c = rill_consumer_conf_new();
    const char *ckv[] = {"bootstrap.servers",
                         boot,
                         "group.id",
                         group,
                         "auto.offset.reset",
                         "earliest",
                         "rill.commit",
                         eos ? "transaction" : "true",
                         NULL};
    for (int i = 0; ckv[i]; i += 2)
        if (rill_consumer_conf_set(c, ckv[i], ckv[i + 1], err, sizeof(err)))
            die("rill consumer config", err);
    if (!eos && rill_consumer_conf_set_commit_cb(c, bench_pipe_on_commit, &ms))
        die("rill consumer config", "commit callback");
    for (int p = 0; p < PARTITIONS; p++)
        if (rill_consumer_conf_assign(c, IN_TOPIC, p, 0, err, sizeof(err)))
            die("rill consumer config", err);
    bench_conf_from_env("bench_txn", c, "BENCH_RILL_CONSUMER_CONF", consumer_set);
    rill_producer_conf_t *pc = rill_producer_conf_new();
    /* rill.topics: the output topic is in the client's first metadata
     * request. alo: the list ends before transactional.id. */
    const char *pkv[] = {"bootstrap.servers",
                         boot,
                         "enable.idempotence",
                         "true",
                         "acks",
                         "all",
                         "linger.ms",
                         LINGER_MS,
                         "rill.topics",
                         out,
                         eos ? "transactional.id" : NULL,
                         tid,
                         "rill.txn.max.records",
                         txn_records[mode],
                         "rill.txn.max.ms",
                         TXN_MS,
                         NULL};
    for (int i = 0; pkv[i]; i += 2)
        if (rill_producer_conf_set(pc, pkv[i], pkv[i + 1], err, sizeof(err)))
            die("rill producer config", err);
    if (eos && rill_producer_conf_set_txn_cb(pc, on_txn, &ms))
        die("rill producer config", "transaction callback");
    bench_conf_from_env("bench_txn", pc, "BENCH_RILL_PRODUCER_CONF", producer_set);
    /* bench_pipeline's placement: the source alone on executor 0, the map
     * and the sink on 1 (the transactional sink blocks its executor while
     * it commits: the map has nowhere to send meanwhile anyway). */
    rill_stage_opts_t co = {.executor = RILL_EXECUTOR(0)};
    rill_stage_opts_t mo = {.executor = RILL_EXECUTOR(1), .mailbox_capacity = 1024};
    rill_stage_opts_t po = {.executor = RILL_EXECUTOR(1)};
    rill_pipeline_t *pl = rill_pipeline_new(sys, mode_name[mode]);
    rill_pipeline_add(pl, rill_kafka_source(c), &co);
    rill_pipeline_add(pl, rill_stage_map(bench_pipe_map, &ms), &mo);
    rill_pipeline_add(pl, eos ? rill_kafka_txn_sink(pc) : rill_kafka_sink(pc), &po);
    double t0 = bench_now_s(), c0 = bench_cpu_us();
    if (rill_pipeline_start(pl, err, sizeof(err)))
        die("rill pipeline", err);
    rill_aid_t consumer = rill_pipeline_stage(pl, 0), prod = rill_pipeline_stage(pl, 2);
    /* The end: every input offset committed. A run that commits nothing
     * new for BENCH_STALL_MS is reported and given up. */
    long stall_ms = bench_env_int("BENCH_STALL_MS", 60000);
    int stalled = 0;
    pthread_mutex_lock(&ms.lock);
    int64_t seen = 0;
    double moved = bench_now_s();
    while (ms.committed_sum < (int64_t)n) {
        struct timespec ts = bench_realtime_in_ms(100);
        pthread_cond_timedwait(&ms.cond, &ms.lock, &ts);
        if (ms.committed_sum != seen) {
            seen = ms.committed_sum;
            moved = bench_now_s();
        } else if ((bench_now_s() - moved) * 1000.0 > (double)stall_ms) {
            stalled = 1;
            break;
        }
    }
    int64_t committed = ms.committed_sum;
    pthread_mutex_unlock(&ms.lock);
    double dt = bench_now_s() - t0, cpu = bench_cpu_us() - c0;
    rill_consumer_stats_t cs = {0};
    result_t res = {.rate = (double)n / dt, .cost = cpu / ((double)n / 1000.0), .secs = dt};
    rill_consumer_stats(sys, consumer, &cs);
    rill_producer_stats(sys, prod, &res.ps);
    if (stalled) {
        fprintf(stderr,
                "bench_txn: %s run %d: no commit for %ld ms, %" PRId64 " of %" PRIu64
                " input offsets committed after %.1f s\n",
                mode_name[mode], run + 1, stall_ms, committed, n, dt);
        print_stats("stalled", &cs, &res.ps);
    } else if (getenv("BENCH_STATS") || getenv("BENCH_TRACE")) {
        char why[64];
        snprintf(why, sizeof(why), "%s run %d", mode_name[mode], run + 1);
        print_stats(why, &cs, &res.ps);
        if (getenv("BENCH_TRACE"))
            bench_thread_cpu(why);
    }
    rill_pipeline_result_t pr;
    rill_pipeline_stop(pl);
    int ended = rill_pipeline_wait(pl, -1, &pr) == RILL_OK && pr.end == RILL_PIPELINE_STOPPED;
    if (!ended)
        fprintf(stderr, "bench_txn: %s: the pipeline ended: %s %s\n", mode_name[mode], pr.stage,
                pr.text);
    rill_pipeline_destroy(pl);
    rill_system_stop(sys, 10000);
    rill_system_destroy(sys);
    bench_pipe_destroy(&ms);
    res.ok = !stalled && ended && !res.ps.failed;
    if (eos)
        res.ok = res.ok && !res.ps.txn_aborted && res.ps.transactional;
    /* eos: the offsets the committed transactions carried (the mock
     * broker does not store a TxnOffsetCommit's offsets in the group). */
    res.ok = bench_check_output("bench_txn", boot, out, IN_TOPIC, PARTITIONS, group,
                                eos ? committed : -1, n, VALUE, mode_name[mode], &res.dups) &&
             res.ok;
    if (eos && res.dups)
        res.ok = 0;
    return res;
}

/* Writes `per` generated records into each input partition (pinned: the
 * same number in each), then checks that the broker kept them all. */
static void load_input(const char *boot, uint64_t per)
{
    char err[512];
    rill_testkit_opts_t po = {.timeout_ms = 300000};
    for (int p = 0; p < PARTITIONS; p++) {
        rill_gen_t gen = RILL_GEN_DEFAULT;
        gen.value_size = VALUE;
        gen.pinned = 1;
        gen.partition = p;
        gen.first_seq = (uint64_t)p * per;
        if (rill_testkit_produce_generated(boot, IN_TOPIC, per, &gen, &po, err, sizeof(err)))
            die("produce", err);
    }
    /* The mock drops a partition's oldest records past 5 MiB: then the
     * runs would start past offset 0 and commit less than they read. */
    rd_kafka_t *rk = bench_plain_consumer("bench_txn", boot, "bench-txn-load");
    for (int p = 0; p < PARTITIONS; p++) {
        int64_t lo = -1, hi = -1;
        rd_kafka_resp_err_t e = rd_kafka_query_watermark_offsets(rk, IN_TOPIC, p, &lo, &hi, 10000);
        if (e || lo != 0 || hi != (int64_t)per) {
            fprintf(stderr,
                    "bench_txn: input partition %d holds offsets %" PRId64 "..%" PRId64
                    " (%s), not 0..%" PRIu64 ": fewer records per partition\n",
                    p, lo, hi, rd_kafka_err2str(e), per);
            exit(1);
        }
    }
    rd_kafka_destroy(rk);
}

int main(int argc, char **argv)
{
    uint64_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 160000;
    int runs = argc > 2 ? atoi(argv[2]) : 5;
    char bin[PATH_MAX];
    bench_broker_path(argc > 3 ? argv[3] : NULL, bin, sizeof(bin));
    /* A multiple of 10,000 records (every transaction full, the last one
     * too) and of PARTITIONS; at most 40,000 records (about 4.9 MB as
     * batches) a partition: the mock keeps 5 MiB. */
    if (n < 10000 || n % 10000 || n % PARTITIONS || n > (uint64_t)PARTITIONS * 40000 || runs < 1 ||
        runs > MAX_RUNS) {
        fprintf(stderr,
                "usage: bench_txn [records: a multiple of 10000 up to %d] [runs 1..%d] "
                "[rill-broker]\n",
                PARTITIONS * 40000, MAX_RUNS);
        return 2;
    }
    int on[MODES] = {1, 1, 1, 1};
    const char *only = getenv("BENCH_ONLY");
    for (int k = 0; only && k < MODES; k++)
        on[k] = !strcmp(only, mode_name[k]);
    if (only && !on[ALO] && !on[EOS100] && !on[EOS1000] && !on[EOS10000]) {
        fprintf(stderr, "bench_txn: BENCH_ONLY=%s: no such mode\n", only);
        return 2;
    }
    bench_header("bench_txn", 1, argc, argv);
    char boot[512] = "";
    bench_broker_topic("%s:%d:1", IN_TOPIC, PARTITIONS);
    for (int r = 0; r < runs; r++)
        for (int k = 0; k < MODES; k++)
            if (on[k])
                bench_broker_topic("tout-%s-%d:%d:1", mode_name[k], r, PARTITIONS);
    bench_broker_start("bench_txn", bin, boot, sizeof(boot));
    printf("bench_txn: %" PRIu64 " records of %d bytes over %d partitions (%" PRIu64
           " each), %d alternating runs of alo (rill_kafka_sink, commits every 1000 "
           "confirms) and eos100/eos1000/eos10000 (rill_kafka_txn_sink, rill.txn.max.records "
           "100/1000/10000, rill.txn.max.ms %s), broker %s\n",
           n, VALUE, PARTITIONS, n / PARTITIONS, runs, TXN_MS, boot);
    fflush(stdout);
    load_input(boot, n / PARTITIONS);
    double rate[MODES][MAX_RUNS], cost[MODES][MAX_RUNS], secs[MODES][MAX_RUNS];
    rill_hist_t lat[MODES];
    uint64_t txns[MODES] = {0};
    memset(lat, 0, sizeof(lat));
    int ok = 1;
    for (int r = 0; r < runs; r++) {
        result_t res[MODES];
        for (int i = 0; i < MODES; i++) {
            int k = r % 2 ? MODES - 1 - i : i;
            res[k] = (result_t){.rate = 1, .cost = 1, .secs = 1, .ok = 1};
            if (on[k])
                res[k] = run_mode(boot, n, r, k);
        }
        printf("  run %d:", r + 1);
        for (int k = 0; k < MODES; k++) {
            ok = ok && res[k].ok;
            rate[k][r] = res[k].rate;
            cost[k][r] = res[k].cost;
            secs[k][r] = res[k].secs;
            if (!on[k])
                continue;
            printf("%s %s %.0f rec/s %.0f us/1k cpu %" PRIu64 " dup", k ? " |" : "", mode_name[k],
                   res[k].rate, res[k].cost, res[k].dups);
            if (k != ALO) {
                const rill_hist_t *h = &res[k].ps.txn_latency;
                printf(", %" PRIu64 " txns, commit p50 %.2f ms p99 %.2f ms",
                       res[k].ps.txn_committed, rill_hist_quantile(h, 0.5) * 1e3,
                       rill_hist_quantile(h, 0.99) * 1e3);
                rill_hist_add(&lat[k], h);
                txns[k] += res[k].ps.txn_committed;
            }
            if (!res[k].ok)
                printf(" (CHECK FAILED)");
        }
        printf("\n");
        fflush(stdout);
    }
    printf("  checks: %s\n",
           ok ? "every run committed all input offsets and every input record reached the "
                "output topic, uppercased; every eos run committed every transaction (none "
                "aborted) with no duplicate"
              : "FAILED (see above)");
    for (int k = EOS100; k < MODES; k++) {
        if (!on[k])
            continue;
        const rill_hist_t *h = &lat[k];
        double per_txn = 0;
        if (on[ALO] && txns[k]) {
            double t_eos = bench_stats(secs[k], runs).median,
                   t_alo = bench_stats(secs[ALO], runs).median;
            per_txn = (t_eos - t_alo) / ((double)txns[k] / runs) * 1e3;
        }
        printf("  %s: txn commit latency p50 %.2f ms p99 %.2f ms mean %.2f ms over %" PRIu64
               " commits (%d runs merged); time added per transaction (median eos - median alo "
               "time, over %.0f transactions a run) %.2f ms\n",
               mode_name[k], rill_hist_quantile(h, 0.5) * 1e3, rill_hist_quantile(h, 0.99) * 1e3,
               h->count ? (double)h->sum_ns / (double)h->count / 1e6 : 0.0, h->count, runs,
               (double)txns[k] / runs, per_txn);
    }
    fflush(stdout);
    for (int k = EOS100; k < MODES; k++) {
        if (!on[k])
            continue;
        char name[32], cname[40];
        snprintf(name, sizeof(name), "txn%s", txn_records[k]);
        snprintf(cname, sizeof(cname), "%s_cost", name);
        bench_summary(name, 0, rate[k], rate[ALO], runs, "rec/s");
        bench_summary(cname, 1, cost[k], cost[ALO], runs, "us/1000rec");
    }
    return ok ? 0 : 1;
}
