/*
 * bench_stream: elements per second through three map stages, against a
 * plain actor chain of the same shape measured in the same run,
 * alternating, median of the runs.
 *
 *   rill      range source -> map -> map -> map -> ignore sink: a pipeline
 *             of stage actors speaking the demand protocol (stream.h)
 *   baseline  source actor -> 3 forwarding actors -> sink actor, each
 *             forwarder doing the same work as the map function (arg + 1)
 *
 * Both run on a system of 2 executors with the same placement: source and
 * first map/forwarder on executor 0, the rest on executor 1. The baseline
 * has the flow control of bench_actor: the source keeps at most WINDOW
 * messages in flight through a counter the sink publishes, so no mailbox
 * fills up and only the hand-off is measured. WINDOW is the sum of the
 * windows of the four stages that receive elements (4 x (mailbox - 1)),
 * the most the pipeline can hold in flight on its way to the sink.
 *
 * usage: bench_stream [elements per run, default 4000000] [runs, default 5]
 *                     [stage mailbox capacity, default 256]
 *                     [only: rill|baseline, for profiling one side]
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <rill/actor.h>
#include <rill/stream.h>

#include "bench_util.h"

#define MAX_RUNS 50

/* Executor of each of the five actors: source, 3 maps, sink. */
static const int placement[5] = {0, 0, 1, 1, 1};

static rill_system_t *new_system(uint32_t mailbox)
{
    char err[256];
    rill_system_opts_t o = {.executors = 2, .mailbox_capacity = mailbox};
    rill_system_t *sys = rill_system_new(&o, err, sizeof(err));
    if (!sys || rill_system_start(sys) != RILL_OK) {
        fprintf(stderr, "bench_stream: %s\n", sys ? "cannot start the system" : err);
        exit(1);
    }
    return sys;
}

/* ------------------------------------------------------------------ */
/* rill: a pipeline of three maps                                      */
/* ------------------------------------------------------------------ */

static rill_err_t add_one(void *opaque, rill_elem_t *in, rill_elem_t *out)
{
    (void)opaque;
    *out = *in;
    out->arg++;
    return RILL_OK;
}

/* A stage that cannot be added makes rill_pipeline_start() fail, with why. */
static void add(rill_pipeline_t *p, rill_stage_t *s, int executor, uint32_t mailbox)
{
    rill_stage_opts_t o = {.executor = RILL_EXECUTOR(executor), .mailbox_capacity = mailbox};
    rill_pipeline_add(p, s, &o);
}

static double rill_map3(uint64_t n, uint32_t mailbox)
{
    rill_system_t *sys = new_system(0);
    rill_pipeline_t *p = rill_pipeline_new(sys, "map3");
    add(p, rill_source_range(0, n), placement[0], mailbox);
    for (int i = 1; i <= 3; i++)
        add(p, rill_stage_map(add_one, NULL), placement[i], mailbox);
    add(p, rill_sink_ignore(), placement[4], mailbox);
    char err[256];
    double t0 = bench_now_s();
    if (rill_pipeline_start(p, err, sizeof(err)) != RILL_OK) {
        fprintf(stderr, "bench_stream: %s\n", err);
        exit(1);
    }
    rill_pipeline_result_t r;
    rill_err_t werr = rill_pipeline_wait(p, -1, &r);
    double dt = bench_now_s() - t0;
    if (werr || r.end != RILL_PIPELINE_COMPLETED || r.delivered != n) {
        fprintf(stderr, "bench_stream: the pipeline ended %d after %llu elements: %s\n", (int)r.end,
                (unsigned long long)r.delivered, r.text);
        exit(1);
    }
    rill_pipeline_destroy(p);
    rill_system_destroy(sys);
    return (double)n / dt;
}

/* ------------------------------------------------------------------ */
/* baseline: a plain actor chain with a shared in-flight window         */
/* ------------------------------------------------------------------ */

/* The map function's work (arg + 1), then on to the next actor. */
static rill_err_t forward_behavior(rill_ctx_t *ctx, void *state, rill_msg_t *msg)
{
    rill_aid_t *next = state;
    msg->arg++;
    return rill_tell(rill_ctx_system(ctx), *next, msg);
}

static double baseline_chain(uint64_t n, uint64_t window)
{
    /* Mailboxes twice the window: a send is never refused. */
    rill_system_t *sys = new_system((uint32_t)(2 * window));
    bench_flow_t flow;
    bench_flow_init(&flow, n);
    rill_aid_t next = bench_spawn("bench_stream", sys, bench_sink_behavior, &flow, placement[4]);
    rill_aid_t fwd_next[4];
    for (int i = 3; i >= 1; i--) {
        fwd_next[i] = next;
        next = bench_spawn("bench_stream", sys, forward_behavior, &fwd_next[i], placement[i]);
    }
    bench_source_t src = {.flow = &flow, .next = next, .n = n, .window = window};
    rill_aid_t s = bench_spawn("bench_stream", sys, bench_source_behavior, &src, placement[0]);
    double t0 = bench_now_s();
    rill_msg_t go = {.type = BENCH_MSG_GO};
    rill_tell(sys, s, &go);
    bench_flow_wait(&flow);
    double rate = (double)n / (flow.t_end - t0);
    rill_system_destroy(sys);
    return rate;
}

int main(int argc, char **argv)
{
    uint64_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 4000000;
    int runs = argc > 2 ? atoi(argv[2]) : 5;
    long mailbox = argc > 3 ? atol(argv[3]) : 256;
    const char *only = argc > 4 ? argv[4] : NULL;
    if (n < 1000 || runs < 1 || runs > MAX_RUNS || mailbox < 2 || mailbox > (1L << 20)) {
        fprintf(stderr,
                "usage: bench_stream [elements >= 1000] [runs 1..%d] "
                "[stage mailbox 2..1048576] [rill|baseline]\n",
                MAX_RUNS);
        return 2;
    }
    bench_header("bench_stream", 0, argc, argv);
    uint32_t pow2 = 1;
    while (pow2 < (uint32_t)mailbox)
        pow2 <<= 1;
    uint64_t window = 4 * (uint64_t)(pow2 - 1);
    if (only) {
        double rate = !strcmp(only, "rill")       ? rill_map3(n, (uint32_t)mailbox)
                      : !strcmp(only, "baseline") ? baseline_chain(n, window)
                                                  : -1;
        printf("%s: %.0f elems/s\n", only, rate);
        return rate < 0 ? 2 : 0;
    }
    printf("bench_stream: %llu elements per run, %d alternating runs, 2 executors, stage "
           "mailbox %ld, baseline window %llu\n",
           (unsigned long long)n, runs, mailbox, (unsigned long long)window);
    double r_rill[MAX_RUNS], r_base[MAX_RUNS];
    for (int r = 0; r < runs; r++) {
        /* Alternate which goes first, so neither always runs on a warmer
         * (or more disturbed) machine. */
        if (r % 2) {
            r_rill[r] = rill_map3(n, (uint32_t)mailbox);
            r_base[r] = baseline_chain(n, window);
        } else {
            r_base[r] = baseline_chain(n, window);
            r_rill[r] = rill_map3(n, (uint32_t)mailbox);
        }
        printf("  run %d: rill %.2fM baseline %.2fM elems/s\n", r + 1, r_rill[r] / 1e6,
               r_base[r] / 1e6);
        fflush(stdout);
    }
    double rill = bench_median(r_rill, runs), base = bench_median(r_base, runs);
    bench_line("stream_map3", 0, rill, base, "elems/s");
    return 0;
}
