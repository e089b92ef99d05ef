/*
 * bench_throttle: how close the throttle stage comes to its rate, against
 * the loop an expert would write for the same promise, measured in the same
 * run, alternating, median of the runs.
 *
 *   rill      range source -> throttle(100 per 100 ms) -> sink that counts
 *   baseline  one thread: a token bucket of the same shape (100 tokens per
 *             100 ms, refilled on an absolute CLOCK_MONOTONIC schedule with
 *             clock_nanosleep), handing each element to the same counting
 *             function
 *
 * Both are asked for 1,000 elements/s; each run measures the rate over
 * `secs` seconds after a one-second warm-up. The test suite only checks
 * the upper bound (never faster than the rate, test_stream_stages); how
 * close to the rate it gets on a loaded machine is measured here.
 *
 * usage: bench_throttle [seconds per run, default 5] [runs, default 3]
 */
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <rill/actor.h>
#include <rill/stream.h>

#include "bench_util.h"

#define RATE      1000.0 /* elements per second asked of both */
#define PER_MS    100
#define PER_BURST 100 /* elements per PER_MS */
#define MAX_RUNS  20

typedef struct counter {
    atomic_long in_window; /* elements counted between from_ns and to_ns */
    int64_t from_ns, to_ns;
} counter_t;

static void count_one(counter_t *c)
{
    int64_t now = bench_now_ns();
    if (now >= c->from_ns && now < c->to_ns)
        atomic_fetch_add_explicit(&c->in_window, 1, memory_order_relaxed);
}

/* Elements in the window over its length. Both sides let elements through
 * in bursts of PER_BURST, so a window holds one burst more or less than
 * its length says depending on where it falls: +-PER_BURST / (secs x RATE),
 * 2 % over the default 5 s. */
static double counter_rate(counter_t *c)
{
    return (double)atomic_load(&c->in_window) / ((double)(c->to_ns - c->from_ns) / 1e9);
}

static rill_err_t sink_fn(void *opaque, rill_elem_t *e)
{
    count_one(opaque);
    rill_elem_release(e);
    return RILL_OK;
}

static double run_rill(double secs)
{
    char err[256];
    rill_system_opts_t o = {.executors = 2};
    rill_system_t *sys = rill_system_new(&o, err, sizeof(err));
    if (!sys || rill_system_start(sys) != RILL_OK) {
        fprintf(stderr, "bench_throttle: %s\n", sys ? "cannot start the system" : err);
        exit(1);
    }
    counter_t c = {0};
    int64_t t0 = bench_now_ns();
    c.from_ns = t0 + 1000000000LL;
    c.to_ns = c.from_ns + (int64_t)(secs * 1e9);
    rill_pipeline_t *p = rill_pipeline_new(sys, "throttle");
    if (!p || rill_pipeline_add(p, rill_source_range(0, UINT64_MAX), NULL) ||
        rill_pipeline_add(p, rill_stage_throttle(PER_BURST, PER_MS), NULL) ||
        rill_pipeline_add(p, rill_sink_foreach(sink_fn, &c), NULL) ||
        rill_pipeline_start(p, err, sizeof(err))) {
        fprintf(stderr, "bench_throttle: cannot start the pipeline: %s\n", err);
        exit(1);
    }
    struct timespec until = {.tv_sec = (time_t)(c.to_ns / 1000000000LL),
                             .tv_nsec = (long)(c.to_ns % 1000000000LL)};
    until.tv_nsec += 50 * 1000000L; /* a little past the window */
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL))
        ;
    rill_pipeline_result_t r;
    if (rill_pipeline_stop(p) || rill_pipeline_wait(p, 30000, &r)) {
        fprintf(stderr, "bench_throttle: the pipeline did not stop\n");
        exit(1);
    }
    rill_pipeline_destroy(p);
    if (rill_system_stop(sys, 10000) == RILL_OK)
        rill_system_destroy(sys);
    return counter_rate(&c);
}

/* A token bucket on an absolute schedule: the strongest simple loop for
 * "at most PER_BURST per PER_MS". */
static double run_baseline(double secs)
{
    counter_t c = {0};
    int64_t t0 = bench_now_ns();
    c.from_ns = t0 + 1000000000LL;
    c.to_ns = c.from_ns + (int64_t)(secs * 1e9);
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    while (bench_now_ns() <= c.to_ns + 50 * 1000000LL) {
        for (int i = 0; i < PER_BURST; i++)
            count_one(&c);
        next.tv_nsec += PER_MS * 1000000L;
        while (next.tv_nsec >= 1000000000L) {
            next.tv_sec++;
            next.tv_nsec -= 1000000000L;
        }
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL))
            ;
    }
    return counter_rate(&c);
}

int main(int argc, char **argv)
{
    double secs = argc > 1 ? atof(argv[1]) : 5;
    int runs = argc > 2 ? atoi(argv[2]) : 3;
    if (secs <= 0 || runs < 1 || runs > MAX_RUNS) {
        fprintf(stderr, "usage: bench_throttle [seconds > 0] [runs 1..%d]\n", MAX_RUNS);
        return 2;
    }
    bench_header("bench_throttle", 0, argc, argv);
    double r[MAX_RUNS], b[MAX_RUNS];
    for (int i = 0; i < runs; i++) {
        r[i] = run_rill(secs) / RATE;
        b[i] = run_baseline(secs) / RATE;
        fprintf(stderr, "run %d: rill %.4f baseline %.4f of the rate\n", i, r[i], b[i]);
    }
    double rm = bench_median(r, runs), bm = bench_median(b, runs);
    /* The value is the achieved rate over the asked rate (1.00 = exact). */
    bench_line("throttle_rate_accuracy", 4, rm, bm, "of-rate");
    return 0;
}
