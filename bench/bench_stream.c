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

#define MAX_RUNS 50

enum { MSG_GO = RILL_MSG_USER, MSG_DATA };

/* Executor of each of the five actors: source, 3 maps, sink. */
static const int placement[5] = {0, 0, 1, 1, 1};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
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

static void add(rill_pipeline_t *p, rill_stage_t *s, int executor, uint32_t mailbox)
{
    rill_stage_opts_t o = {.name = NULL, .executor = executor, .mailbox_capacity = mailbox};
    if (!s || rill_pipeline_add(p, s, &o) != RILL_OK) {
        fprintf(stderr, "bench_stream: cannot add a stage\n");
        exit(1);
    }
}

static double rill_map3(uint64_t n, uint32_t mailbox)
{
    rill_system_t *sys = new_system(0);
    rill_pipeline_t *p = rill_pipeline_new(sys);
    add(p, rill_source_range(0, n), placement[0], mailbox);
    for (int i = 1; i <= 3; i++)
        add(p, rill_stage_map(add_one, NULL), placement[i], mailbox);
    add(p, rill_sink_ignore(), placement[4], mailbox);
    char err[256];
    double t0 = now_s();
    if (rill_pipeline_start(p, err, sizeof(err)) != RILL_OK) {
        fprintf(stderr, "bench_stream: %s\n", err);
        exit(1);
    }
    rill_pipeline_result_t r;
    rill_pipeline_wait(p, -1, &r);
    double dt = now_s() - t0;
    if (r.end != RILL_PIPELINE_COMPLETED || r.delivered != n) {
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

typedef struct flow {
    _Atomic uint64_t done; /* elements the sink has handled */
    uint64_t total;
    pthread_mutex_t lock; /* the main thread sleeps until finished: on 2 */
    pthread_cond_t cond;  /* cores a spinning main would steal a core */
    int finished;
    double t_end;
} flow_t;

typedef struct source {
    flow_t *flow;
    rill_aid_t next;
    uint64_t n, sent, window;
} source_t;

/* Sends while fewer than `window` elements are in flight, then yields by
 * messaging itself. */
static rill_err_t source_behavior(rill_ctx_t *ctx, void *state, rill_msg_t *msg)
{
    (void)msg;
    source_t *s = state;
    rill_system_t *sys = rill_ctx_system(ctx);
    /* acquire: pairs with the sink's release of its count. */
    uint64_t done = atomic_load_explicit(&s->flow->done, memory_order_acquire);
    rill_msg_t m = {.type = MSG_DATA};
    while (s->sent < s->n && s->sent - done < s->window) {
        m.arg = s->sent;
        if (rill_tell(sys, s->next, &m) != RILL_OK)
            break;
        s->sent++;
    }
    if (s->sent < s->n) {
        rill_msg_t go = {.type = MSG_GO};
        rill_tell(sys, rill_self(ctx), &go);
    }
    return RILL_OK;
}

/* The map function's work (arg + 1), then on to the next actor. */
static rill_err_t forward_behavior(rill_ctx_t *ctx, void *state, rill_msg_t *msg)
{
    rill_aid_t *next = state;
    msg->arg++;
    return rill_tell(rill_ctx_system(ctx), *next, msg);
}

static rill_err_t sink_behavior(rill_ctx_t *ctx, void *state, rill_msg_t *msg)
{
    (void)ctx;
    (void)msg;
    flow_t *f = state;
    uint64_t d = atomic_load_explicit(&f->done, memory_order_relaxed) + 1;
    /* release: the source reads it to open its window. */
    atomic_store_explicit(&f->done, d, memory_order_release);
    if (d == f->total) {
        f->t_end = now_s();
        pthread_mutex_lock(&f->lock);
        f->finished = 1;
        pthread_cond_signal(&f->cond);
        pthread_mutex_unlock(&f->lock);
    }
    return RILL_OK;
}

static rill_aid_t spawn(rill_system_t *sys, rill_behavior_fn *fn, void *state, int executor)
{
    rill_spawn_opts_t o = {.behavior = fn, .state = state, .executor = executor};
    rill_aid_t aid;
    if (rill_spawn(sys, &o, &aid)) {
        fprintf(stderr, "bench_stream: spawn failed\n");
        exit(1);
    }
    return aid;
}

static double baseline_chain(uint64_t n, uint64_t window)
{
    /* Mailboxes twice the window: a send is never refused. */
    rill_system_t *sys = new_system((uint32_t)(2 * window));
    flow_t flow = {.total = n};
    atomic_init(&flow.done, 0);
    pthread_mutex_init(&flow.lock, NULL);
    pthread_cond_init(&flow.cond, NULL);
    rill_aid_t next = spawn(sys, sink_behavior, &flow, placement[4]);
    rill_aid_t fwd_next[4];
    for (int i = 3; i >= 1; i--) {
        fwd_next[i] = next;
        next = spawn(sys, forward_behavior, &fwd_next[i], placement[i]);
    }
    source_t src = {.flow = &flow, .next = next, .n = n, .window = window};
    rill_aid_t s = spawn(sys, source_behavior, &src, placement[0]);
    double t0 = now_s();
    rill_msg_t go = {.type = MSG_GO};
    rill_tell(sys, s, &go);
    pthread_mutex_lock(&flow.lock);
    while (!flow.finished)
        pthread_cond_wait(&flow.cond, &flow.lock);
    pthread_mutex_unlock(&flow.lock);
    double rate = (double)n / (flow.t_end - t0);
    rill_system_destroy(sys);
    pthread_cond_destroy(&flow.cond);
    pthread_mutex_destroy(&flow.lock);
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
    double rill = median(r_rill, runs), base = median(r_base, runs);
    printf("bench stream_map3: rill %.0f elems/s baseline %.0f elems/s ratio %.2f\n", rill, base,
           rill / base);
    return 0;
}
