/*
 * bench_util: the pieces every benchmark shares: clocks, medians, the
 * result line, and the `rill-broker` subprocess the Kafka benchmarks run
 * against. Linked into every bench_* by rill_bench() (bench/CMakeLists.txt).
 */
#ifndef RILL_BENCH_UTIL_H
#define RILL_BENCH_UTIL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <librdkafka/rdkafka.h>
#include <rill/actor.h>
#include <rill/kafka.h>

/* Seconds on CLOCK_MONOTONIC. */
double bench_now_s(void);

/* Nanoseconds on CLOCK_MONOTONIC. */
int64_t bench_now_ns(void);

/* This process's CPU time so far in microseconds (getrusage: user + sys,
 * every thread included, librdkafka's too). */
double bench_cpu_us(void);

/* CLOCK_REALTIME `ms` milliseconds from now: a pthread_cond_timedwait
 * deadline. */
struct timespec bench_realtime_in_ms(long ms);

/* Sorts v[0..n) in ascending order. */
void bench_sort(double *v, size_t n);

/* The median of v[0..n), n >= 1 (the mean of the two middle values when n
 * is even). Sorts v in place. */
double bench_median(double *v, int n);

/* ---- what every bench prints first ----
 * bench_header() prints, before anything else, one "bench-info" line per
 * fact that a result depends on, for people and for tools/bench-report:
 *   bench-info bench: <name>
 *   bench-info commit: <git describe at build time, "unknown" outside git>
 *   bench-info librdkafka: <rd_kafka_version_str() at run time>
 *   bench-info machine: <nproc> cpus, <model name>, <kernel>, host <hostname>
 *   bench-info date: <UTC, ISO 8601>
 *   bench-info load: <1, 5 and 15 minute load averages at the start>
 *   bench-info args: <the command line after the program name>
 * The librdkafka line only for a Kafka bench (`kafka` nonzero). */
void bench_header(const char *name, int kafka, int argc, char **argv);

/* Median, extremes and quartiles of n >= 1 values. */
typedef struct bench_stats {
    double median, min, max;
    double q1, q3; /* the interquartile range: q1..q3 (linear interpolation) */
    int n;
} bench_stats_t;

/* The statistics of v[0..n) (v is left as it is). */
bench_stats_t bench_stats(const double *v, int n);

/* The summary of `runs` alternating runs of a comparison: the result line
 * (bench_line, with the medians of each side and the ratio of the medians),
 * then its spread:
 *   spread <name>: rill <min>..<max> (iqr <q1>..<q3>) baseline <min>..<max>
 *     (iqr <q1>..<q3>) <unit>, ratio per run <min>..<max> median <m>, <n> runs
 * A zero baseline median gives ratio 0. */
void bench_summary(const char *name, int decimals, const double *rill, const double *base, int runs,
                   const char *unit);

/* The summary of an overhead: as bench_summary(), but the result line ends
 * in the difference of the medians (rill - baseline) instead of a ratio,
 *   bench <name>: rill <r> <unit> baseline <b> <unit> diff <r - b> <unit>
 * and the spread line gives the per-run differences. Names end in
 * "_overhead". */
void bench_overhead(const char *name, int decimals, const double *rill, const double *base,
                    int runs, const char *unit);

/* The result line of an overhead from single values (no runs to spread):
 *   bench <name>: rill <rill> <unit> baseline <base> <unit> diff <rill - base> <unit> */
void bench_line_diff(const char *name, int decimals, double rill, double base, const char *unit);

/* Prints the result line of one comparison and flushes stdout:
 *   bench <name>: rill <rill> <unit> baseline <base> <unit> ratio <rill/base>
 * with `decimals` digits after the point for both values, 2 for the ratio. */
void bench_line(const char *name, int decimals, double rill, double base, const char *unit);

/* bench_line with the ratio given (e.g. guarded against a zero baseline). */
void bench_line_ratio(const char *name, int decimals, double rill, double base, const char *unit,
                      double ratio);

/* ---- actor flows (bench_actor, bench_stream) ----
 * A source actor sends BENCH_MSG_DATA messages (arg: a sequence number)
 * down a chain of actors to a sink actor, keeping at most a window of
 * messages in flight through the count the sink publishes, so that no
 * mailbox on the way fills up; the main thread sleeps until the sink has
 * them all. Message types of a bench's own start at BENCH_MSG_USER. */

enum { BENCH_MSG_GO = RILL_MSG_USER, BENCH_MSG_DATA, BENCH_MSG_USER };

typedef struct bench_flow {
    _Atomic uint64_t done; /* messages the sink has handled */
    uint64_t total;        /* the sink's target */
    pthread_mutex_t lock;  /* the main thread sleeps until finished: on 2 */
    pthread_cond_t cond;   /* cores a spinning main would steal a core */
    int finished;
    double t_end; /* bench_now_s() when finished */
} bench_flow_t;

/* Prepares a flow whose sink finishes after `total` messages. */
void bench_flow_init(bench_flow_t *f, uint64_t total);

/* Marks the flow finished now and wakes bench_flow_wait(). */
void bench_flow_finish(bench_flow_t *f);

/* Sleeps until the flow is finished, then releases its lock and condition. */
void bench_flow_wait(bench_flow_t *f);

/* The state of bench_source_behavior. */
typedef struct bench_source {
    bench_flow_t *flow;
    rill_aid_t next; /* where the messages go */
    uint64_t n, sent;
    uint64_t window; /* at most this many in flight (over all of a flow's sources) */
} bench_source_t;

/* On BENCH_MSG_GO (state: bench_source_t): sends while fewer than `window`
 * messages of the flow are in flight overall, then yields by sending itself
 * BENCH_MSG_GO until all n are sent. Several sources may share a flow. */
rill_err_t bench_source_behavior(rill_ctx_t *ctx, void *state, rill_msg_t *msg);

/* The sink (state: bench_flow_t): counts every message, publishes the
 * count, and finishes the flow at its total. */
rill_err_t bench_sink_behavior(rill_ctx_t *ctx, void *state, rill_msg_t *msg);

/* Spawns an actor on `executor`; prints "<name>: spawn failed" and exits
 * with 1 when it cannot. */
rill_aid_t bench_spawn(const char *name, rill_system_t *sys, rill_behavior_fn *fn, void *state,
                       int executor);

/* ---- Kafka benchmarks ---- */

/* The integer in environment variable `var`, `dflt` when it is not set
 * (for experiments, e.g. with stage placement). */
int bench_env_int(const char *var, int dflt);

/* Sets one property of a client configuration (e.g. a wrapper of
 * rill_consumer_conf_set); nonzero with a message in err on failure. */
typedef int bench_conf_set_fn(void *conf, const char *key, const char *value, char *err,
                              size_t err_size);

/* The librdkafka properties rill's consumer gets by default (its prefetch
 * bound, and fetch.queue.backoff.ms where librdkafka has it), set on a raw
 * baseline consumer's conf, so that both sides run with the same bounds on
 * memory and the same fetch pacing whichever librdkafka runs. Call it
 * before the bench's own and the environment's properties. */
void bench_raw_consumer_defaults(void *rd_kafka_conf);

/* A raw baseline consumer for at least once, its consumer queue the one to
 * poll: rill's consumer defaults (above), bootstrap.servers `boot`,
 * group.id `group`, no auto commit and no automatic offset store, then the
 * bench's own properties `kv` (pairs ending with NULL; NULL for none), then
 * those of the environment variable `env_var` ("key=value,...", NULL for
 * none). On an error it says so under `name` and exits 1. */
rd_kafka_t *bench_raw_consumer(const char *name, const char *boot, const char *group,
                               const char *const *kv, const char *env_var);

/* A raw baseline's async commits: one when `done` (records processed, and
 * their offsets stored) passes the next multiple of `every`, with at most
 * one unanswered, as rill's source commits (since 89430cf): a commit
 * that comes due while one is out waits for its answer and then takes
 * every offset stored by then. Under load that is one commit per round trip
 * instead of one per `every` records: measured on bench_consume 2.8.0,
 * 1.3x the raw loop's records per second at 0.85x its CPU, so it is the
 * stronger baseline. BENCH_RAW_COMMIT=every commits at every multiple
 * regardless (the loop before, an experiment). Answers come on a queue of
 * the committer's own, served by bench_committer_step. */
typedef struct bench_committer {
    rd_kafka_t *rk;
    rd_kafka_queue_t *q;
    int every_time; /* BENCH_RAW_COMMIT=every */
    int out;        /* commits unanswered */
    uint64_t every, next;
} bench_committer_t;
void bench_committer_init(bench_committer_t *c, rd_kafka_t *rk, uint64_t every);
/* Serve answers; commit if `done` passed the next multiple and none is out. */
void bench_committer_step(bench_committer_t *c, uint64_t done);
/* Wait (at most 10 s) for the answers of the commits out, before the final
 * sync commit: an async commit answered after it (a retried request) would
 * commit its older offsets over the final ones. */
void bench_committer_drain(bench_committer_t *c);
void bench_committer_destroy(bench_committer_t *c);

/* ---- checks of a group's reads, untimed (bench_consume, bench_window) ----
 * Each says what failed under `name` (the benchmark's) and exits with 1
 * when a client cannot be made or an end offset cannot be read. */

/* A plain librdkafka consumer with group.id `group` that never joins the
 * group: for end offsets and the group's committed offsets. */
rd_kafka_t *bench_plain_consumer(const char *name, const char *boot, const char *group);

/* The end offsets (high watermarks) of partitions 0..parts-1 of topic,
 * into ends[0..parts-1]. */
void bench_end_offsets(const char *name, const char *boot, const char *topic, int parts,
                       int64_t *ends);

/* How many of partitions 0..parts-1 of topic have a committed offset of
 * `group` other than ends[p] (every one when they cannot be read). */
int bench_uncommitted(const char *name, const char *boot, const char *group, const char *topic,
                      int parts, const int64_t *ends);

/* The sides of alternating run `run` in the order they run: raw first in
 * even runs, rill first in odd ones; BENCH_ONLY=rill|raw runs that side
 * alone (for profiling). Fills `side` and returns how many run (1 or 2). */
enum { BENCH_SIDE_RAW, BENCH_SIDE_RILL };
int bench_sides(int run, int side[2]);

/* Extra client properties "key=value,key=value" from environment variable
 * `var`, for experiments (the reported runs use none): each is set on
 * `conf` through `set`. When `var` is not set, nothing. A malformed list or
 * a refused property prints "<name>: <var>: <why>" and exits with 1. */
void bench_conf_from_env(const char *name, void *conf, const char *var, bench_conf_set_fn *set);

/* Trace mode: prints on stderr each thread's CPU time (ms) so far,
 * "  threads <when>: name/tid=ms ...". */
void bench_thread_cpu(const char *when);

/* The rill-broker binary to run: `path` when not NULL, else
 * ../tools/rill-broker relative to the directory of this executable. */
void bench_broker_path(const char *path, char *bin, size_t size);

/* Adds a topic to create in the broker that bench_broker_start() starts,
 * printf-style, as rill-broker's --topic takes it: "name:partitions:1". */
void bench_broker_topic(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Runs `bin` (rill-broker) as a subprocess with the topics added so far,
 * waits for it to write its bootstrap address into `boot` (NUL-terminated,
 * at most `size` bytes) and registers bench_broker_stop() with atexit().
 * `name` (the benchmark's) names the temporary bootstrap file
 * (/tmp/<name with '_' as '-'>-boot-XXXXXX) and prefixes the message when
 * the broker does not start, in which case the process exits with 1. */
void bench_broker_start(const char *name, const char *bin, char *boot, size_t size);

/* Stops the broker subprocess (SIGTERM) and waits for it; nothing when
 * none was started. */
void bench_broker_stop(void);

/* ---- consume -> uppercase -> produce (bench_pipeline, bench_txn) ----
 * Every input record's value uppercased and produced to the same
 * partition of an output topic, the input's offsets committed; the input
 * is generated records (rill_testkit_produce_generated) read from offset 0
 * of every partition. */

#define BENCH_PIPE_MAX_PARTS 64

/* dst[0..len) = src[0..len) uppercased; returns len. */
size_t bench_upper(char *dst, const void *src, size_t len);

/* A rill pipeline's map stage state and its end: the output topic, and the
 * input offsets committed so far (per partition, from 0; their sum is the
 * number of input records committed when every partition starts at 0). */
typedef struct bench_pipe {
    char topic[64];    /* the output topic */
    char in_topic[64]; /* the input topic: offsets of others are not counted */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int64_t committed[BENCH_PIPE_MAX_PARTS];
    int64_t committed_sum;
} bench_pipe_t;

void bench_pipe_init(bench_pipe_t *s, const char *in_topic, const char *out_topic);
void bench_pipe_destroy(bench_pipe_t *s);

/* Counts `offsets` (the next offset to consume, per partition; entries of
 * other topics and with an error are left out) as committed and wakes a
 * waiter. */
void bench_pipe_committed(bench_pipe_t *s, const rd_kafka_topic_partition_list_t *offsets);

/* A rill_commit_fn (rill_consumer_conf_set_commit_cb; opaque: bench_pipe_t):
 * bench_pipe_committed for a commit without error. */
void bench_pipe_on_commit(void *opaque, rd_kafka_resp_err_t err,
                          const rd_kafka_topic_partition_list_t *offsets);

/* The map stage (rill_stage_map; opaque: bench_pipe_t): the record's value
 * uppercased into a produce request for the same partition of the output
 * topic. The map stage carries the input record's origin to the request,
 * so the record is confirmed when the output is delivered. */
rill_err_t bench_pipe_map(void *opaque, rill_elem_t *in, rill_elem_t *out);

/* The sum over partitions 0..parts-1 of topic of group's committed offsets
 * (none: 0); -1 when they cannot be read. */
int64_t bench_committed_sum(const char *name, const char *boot, const char *group,
                            const char *topic, int parts);

/* Untimed check of one run: reads `out_topic` back, every one of the `n`
 * input records (seq 0..n-1, `value_len` bytes) must be there, uppercased,
 * and the committed offsets of in_topic must sum to n: group's, read back
 * from the broker when `committed` is -1, else `committed` (what the run
 * saw committed: librdkafka's mock broker answers TxnOffsetCommit without
 * storing its offsets, so a transactional run's cannot be read back).
 * Duplicates go to *dups. Prints "    <side> check: ..." when it fails,
 * finds duplicates or BENCH_VERBOSE is set; returns 1 when it passed. */
int bench_check_output(const char *name, const char *boot, const char *out_topic,
                       const char *in_topic, int parts, const char *group, int64_t committed,
                       uint64_t n, size_t value_len, const char *side, uint64_t *dups);

#endif
