/*
 * bench_actor: message hand-off through the actor runtime against a bare
 * ck_ring single-producer single-consumer hand-off between two threads,
 * measured in the same run, alternating, median of the runs.
 *
 *   actor_hop       source (executor 0) -> sink (executor 1)
 *   actor_chain4    A -> B -> C -> D, A and B on executor 0, C and D on 1
 *   actor_chain4_alt  the same chain alternating executors (3 crossings)
 *   actor_pingpong  round trips between two actors on different executors
 *                   (baseline: two SPSC rings between two spinning threads)
 *   actor_fanin2    two sources (executor 0) -> one sink (executor 1)
 *
 * Flow control: the source keeps at most WINDOW messages in flight (the
 * sink publishes its count), so no mailbox on the way can fill up; this is
 * what the demand protocol does with messages, here with a shared counter
 * so that only the runtime's hand-off is measured.
 *
 * usage: bench_actor [messages per run, default 4000000] [runs, default 5]
 *                    [only: hop|chain4|pingpong, for profiling one scenario]
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <ck_ring.h>

#include <rill/actor.h>

#include "bench_util.h"

#define WINDOW    2048u
#define MAILBOX   4096u
#define RING_SIZE 4096u

enum { MSG_PING = BENCH_MSG_USER, MSG_PONG };

/* ------------------------------------------------------------------ */
/* Baselines                                                           */
/* ------------------------------------------------------------------ */

typedef struct spsc {
    ck_ring_t ring;
    ck_ring_buffer_t *buf;
    uint64_t n;
} spsc_t;

static void *spsc_consumer(void *arg)
{
    spsc_t *s = arg;
    uint64_t got = 0, sum = 0;
    void *v;
    while (got < s->n) {
        if (ck_ring_dequeue_spsc(&s->ring, s->buf, &v)) {
            sum += (uintptr_t)v;
            got++;
        }
    }
    return (void *)(uintptr_t)sum;
}

static double baseline_spsc(uint64_t n)
{
    spsc_t s = {.n = n};
    s.buf = calloc(RING_SIZE, sizeof(*s.buf));
    ck_ring_init(&s.ring, RING_SIZE);
    pthread_t t;
    double t0 = bench_now_s();
    pthread_create(&t, NULL, spsc_consumer, &s);
    for (uint64_t i = 1; i <= n; i++)
        while (!ck_ring_enqueue_spsc(&s.ring, s.buf, (void *)(uintptr_t)i))
            ;
    pthread_join(t, NULL);
    double dt = bench_now_s() - t0;
    free(s.buf);
    return (double)n / dt;
}

typedef struct pingpong_base {
    spsc_t to, back;
    uint64_t n;
} pingpong_base_t;

static void *pong_thread(void *arg)
{
    pingpong_base_t *p = arg;
    void *v;
    for (uint64_t i = 0; i < p->n; i++) {
        while (!ck_ring_dequeue_spsc(&p->to.ring, p->to.buf, &v))
            ;
        while (!ck_ring_enqueue_spsc(&p->back.ring, p->back.buf, v))
            ;
    }
    return NULL;
}

static double baseline_pingpong(uint64_t n)
{
    pingpong_base_t p = {.n = n};
    p.to.buf = calloc(RING_SIZE, sizeof(ck_ring_buffer_t));
    p.back.buf = calloc(RING_SIZE, sizeof(ck_ring_buffer_t));
    ck_ring_init(&p.to.ring, RING_SIZE);
    ck_ring_init(&p.back.ring, RING_SIZE);
    pthread_t t;
    pthread_create(&t, NULL, pong_thread, &p);
    double t0 = bench_now_s();
    void *v;
    for (uint64_t i = 1; i <= n; i++) {
        while (!ck_ring_enqueue_spsc(&p.to.ring, p.to.buf, (void *)(uintptr_t)i))
            ;
        while (!ck_ring_dequeue_spsc(&p.back.ring, p.back.buf, &v))
            ;
    }
    double dt = bench_now_s() - t0;
    pthread_join(t, NULL);
    free(p.to.buf);
    free(p.back.buf);
    return (double)n / dt;
}

/* ------------------------------------------------------------------ */
/* rill scenarios                                                      */
/* ------------------------------------------------------------------ */

/* Fan-in sources share the flow: each keeps its share of the window. */
static rill_err_t forward_behavior(rill_ctx_t *ctx, void *state, rill_msg_t *msg)
{
    rill_aid_t *next = state;
    return rill_tell(rill_ctx_system(ctx), *next, msg);
}

static rill_system_t *new_system(void)
{
    char err[256];
    rill_system_opts_t o = {.executors = 2, .mailbox_capacity = MAILBOX};
    rill_system_t *sys = rill_system_new(&o, err, sizeof(err));
    if (!sys) {
        fprintf(stderr, "bench_actor: %s\n", err);
        exit(1);
    }
    return sys;
}

/* placement[i] = executor of stage i; stage 0 is the source, the last is
 * the sink, the ones between forward. */
static double rill_chain(uint64_t n, const int *placement, int stages)
{
    rill_system_t *sys = new_system();
    bench_flow_t flow;
    bench_flow_init(&flow, n);
    rill_aid_t next =
        bench_spawn("bench_actor", sys, bench_sink_behavior, &flow, placement[stages - 1]);
    rill_aid_t fwd_next[8];
    for (int i = stages - 2; i >= 1; i--) {
        fwd_next[i] = next;
        next = bench_spawn("bench_actor", sys, forward_behavior, &fwd_next[i], placement[i]);
    }
    bench_source_t src = {.flow = &flow, .next = next, .n = n, .window = WINDOW};
    rill_aid_t s = bench_spawn("bench_actor", sys, bench_source_behavior, &src, placement[0]);
    rill_system_start(sys);
    double t0 = bench_now_s();
    rill_msg_t go = {.type = BENCH_MSG_GO};
    rill_tell(sys, s, &go);
    bench_flow_wait(&flow);
    double rate = (double)n / (flow.t_end - t0);
    rill_system_destroy(sys);
    return rate;
}

static double rill_fanin2(uint64_t n)
{
    rill_system_t *sys = new_system();
    bench_flow_t flow;
    bench_flow_init(&flow, n);
    rill_aid_t sink = bench_spawn("bench_actor", sys, bench_sink_behavior, &flow, 1);
    bench_source_t a = {.flow = &flow, .next = sink, .n = n / 2, .window = WINDOW / 2};
    bench_source_t b = {.flow = &flow, .next = sink, .n = n - n / 2, .window = WINDOW / 2};
    rill_aid_t sa = bench_spawn("bench_actor", sys, bench_source_behavior, &a, 0);
    rill_aid_t sb = bench_spawn("bench_actor", sys, bench_source_behavior, &b, 0);
    rill_system_start(sys);
    double t0 = bench_now_s();
    rill_msg_t go = {.type = BENCH_MSG_GO};
    rill_tell(sys, sa, &go);
    rill_tell(sys, sb, &go);
    bench_flow_wait(&flow);
    double rate = (double)n / (flow.t_end - t0);
    rill_system_destroy(sys);
    return rate;
}

typedef struct ping {
    rill_aid_t peer;
    uint64_t n, count;
    bench_flow_t *flow;
} ping_t;

static rill_err_t ping_behavior(rill_ctx_t *ctx, void *state, rill_msg_t *msg)
{
    ping_t *p = state;
    if (msg->type == MSG_PONG && ++p->count == p->n) {
        bench_flow_finish(p->flow);
        return RILL_OK;
    }
    rill_msg_t m = {.type = MSG_PING};
    return rill_send(ctx, p->peer, &m);
}

static rill_err_t pong_behavior(rill_ctx_t *ctx, void *state, rill_msg_t *msg)
{
    (void)state;
    rill_msg_t m = {.type = MSG_PONG};
    return rill_send(ctx, msg->from, &m);
}

static double rill_pingpong(uint64_t n)
{
    rill_system_t *sys = new_system();
    bench_flow_t flow;
    bench_flow_init(&flow, 0);
    ping_t p = {.n = n, .flow = &flow};
    p.peer = bench_spawn("bench_actor", sys, pong_behavior, NULL, 1);
    rill_aid_t pinger = bench_spawn("bench_actor", sys, ping_behavior, &p, 0);
    rill_system_start(sys);
    double t0 = bench_now_s();
    rill_msg_t go = {.type = BENCH_MSG_GO};
    rill_tell(sys, pinger, &go);
    bench_flow_wait(&flow);
    double rate = (double)n / (flow.t_end - t0);
    rill_system_destroy(sys);
    return rate;
}

int main(int argc, char **argv)
{
    uint64_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 4000000;
    int runs = argc > 2 ? atoi(argv[2]) : 5;
    if (n < 1000 || runs < 1 || runs > 50) {
        fprintf(stderr, "usage: bench_actor [messages >= 1000] [runs 1..50]\n");
        return 2;
    }
    bench_header("bench_actor", 0, argc, argv);
    uint64_t n_pp = n / 20;
    const char *only = argc > 3 ? argv[3] : NULL;
    if (only) {
        const int h[] = {0, 1}, c[] = {0, 0, 1, 1};
        double rate = !strcmp(only, "hop")        ? rill_chain(n, h, 2)
                      : !strcmp(only, "chain4")   ? rill_chain(n, c, 4)
                      : !strcmp(only, "pingpong") ? rill_pingpong(n_pp)
                                                  : -1;
        printf("%s: %.0f per s\n", only, rate);
        return rate < 0 ? 2 : 0;
    }
    const int hop[] = {0, 1}, chain[] = {0, 0, 1, 1}, alt[] = {0, 1, 0, 1};
    double b_spsc[50], b_pp[50], r_hop[50], r_chain[50], r_alt[50], r_pp[50], r_fan[50];
    printf("bench_actor: %llu messages per run (%llu round trips), %d alternating runs, "
           "2 executors\n",
           (unsigned long long)n, (unsigned long long)n_pp, runs);
    for (int r = 0; r < runs; r++) {
        b_spsc[r] = baseline_spsc(n);
        r_hop[r] = rill_chain(n, hop, 2);
        r_chain[r] = rill_chain(n, chain, 4);
        r_alt[r] = rill_chain(n, alt, 4);
        r_fan[r] = rill_fanin2(n);
        b_pp[r] = baseline_pingpong(n_pp);
        r_pp[r] = rill_pingpong(n_pp);
        printf("  run %d: spsc %.1fM hop %.1fM chain4 %.1fM chain4_alt %.1fM fanin2 %.1fM | "
               "pingpong spsc %.2fM rill %.2fM per s\n",
               r + 1, b_spsc[r] / 1e6, r_hop[r] / 1e6, r_chain[r] / 1e6, r_alt[r] / 1e6,
               r_fan[r] / 1e6, b_pp[r] / 1e6, r_pp[r] / 1e6);
    }
    double spsc = bench_median(b_spsc, runs), pp = bench_median(b_pp, runs);
    bench_line("actor_hop", 0, bench_median(r_hop, runs), spsc, "msgs/s");
    bench_line("actor_chain4", 0, bench_median(r_chain, runs), spsc, "msgs/s");
    bench_line("actor_chain4_alt", 0, bench_median(r_alt, runs), spsc, "msgs/s");
    bench_line("actor_fanin2", 0, bench_median(r_fan, runs), spsc, "msgs/s");
    bench_line("actor_pingpong", 0, bench_median(r_pp, runs), pp, "roundtrips/s");
    return 0;
}
