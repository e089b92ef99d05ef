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
 *   actor_hop_batch actor_hop with the source sending up to BATCH messages
 *                   per rill_tell_batch (one CAS per batch, not per message)
 *   actor_paced_cpu a thread outside the runtime sends PACED_RATE msgs/s
 *                   (sleeping between sends) to an actor on executor 0 that
 *                   forwards each to one on executor 1: CPU time of the
 *                   whole process per message (getrusage), against the
 *                   same hop between two threads that block on an eventfd
 *                   (an SPSC ring each, one eventfd write per message: at
 *                   this rate every message finds its receiver asleep).
 *                   Also prints both sides' median latency (send to last
 *                   receive). The idle spin is what this measures.
 *
 * Flow control: the source keeps at most WINDOW messages in flight (the
 * sink publishes its count), so no mailbox on the way can fill up; this is
 * what the demand protocol does with messages, here with a shared counter
 * so that only the runtime's hand-off is measured.
 *
 * usage: bench_actor [messages per run, default 4000000] [runs, default 5]
 *                    [only: hop|hop_batch|chain4|pingpong|paced|paced_eventfd, to profile one]
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sys/eventfd.h>

#include <ck_ring.h>

#include <rill/actor.h>

#include "bench_util.h"

#define WINDOW    2048u
#define MAILBOX   4096u
#define RING_SIZE 4096u
#define BATCH     64u

/* The paced scenario: messages per second, and seconds per run. */
#define PACED_RATE 20000u
#define PACED_SECS 1u

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

/* ---- paced: a fixed rate, CPU per message ---- */

typedef struct paced_result {
    double cpu_us_per_msg;
    double p50_us;
} paced_result_t;

/* Sleeps until t0 + i / PACED_RATE. */
static void pace(int64_t t0, uint64_t i)
{
    int64_t at = t0 + (int64_t)(i * 1000000000ull / PACED_RATE);
    struct timespec ts = {.tv_sec = at / 1000000000, .tv_nsec = at % 1000000000};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL))
        ;
}

static double median_latency_us(int64_t *lat_ns, uint64_t n)
{
    double *v = malloc(n * sizeof(*v));
    for (uint64_t i = 0; i < n; i++)
        v[i] = (double)lat_ns[i] / 1e3;
    double m = bench_median(v, (int)n);
    free(v);
    return m;
}

typedef struct ev_stage {
    spsc_t in;
    int efd;
    struct ev_stage *next; /* NULL: the last one records latencies */
    int64_t *lat_ns;
} ev_stage_t;

static void *ev_stage_thread(void *arg)
{
    ev_stage_t *s = arg;
    uint64_t got = 0;
    while (got < s->in.n) {
        uint64_t cnt;
        if (read(s->efd, &cnt, sizeof(cnt)) != sizeof(cnt))
            continue;
        void *v;
        while (ck_ring_dequeue_spsc(&s->in.ring, s->in.buf, &v)) {
            if (s->next) {
                while (!ck_ring_enqueue_spsc(&s->next->in.ring, s->next->in.buf, v))
                    ;
                uint64_t one = 1;
                if (write(s->next->efd, &one, sizeof(one)) != sizeof(one))
                    abort();
            } else {
                s->lat_ns[got] = bench_now_ns() - (int64_t)(uintptr_t)v;
            }
            got++;
        }
    }
    return NULL;
}

static paced_result_t baseline_paced(uint64_t n)
{
    ev_stage_t st[2];
    int64_t *lat = calloc(n, sizeof(*lat));
    for (int i = 0; i < 2; i++) {
        st[i] = (ev_stage_t){.in = {.n = n}, .efd = eventfd(0, 0), .lat_ns = lat};
        st[i].in.buf = calloc(RING_SIZE, sizeof(ck_ring_buffer_t));
        ck_ring_init(&st[i].in.ring, RING_SIZE);
    }
    st[0].next = &st[1];
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, ev_stage_thread, &st[i]);
    double cpu0 = bench_cpu_us();
    int64_t t0 = bench_now_ns();
    for (uint64_t i = 0; i < n; i++) {
        pace(t0, i);
        while (
            !ck_ring_enqueue_spsc(&st[0].in.ring, st[0].in.buf, (void *)(uintptr_t)bench_now_ns()))
            ;
        uint64_t one = 1;
        if (write(st[0].efd, &one, sizeof(one)) != sizeof(one))
            abort();
    }
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    paced_result_t r = {.cpu_us_per_msg = (bench_cpu_us() - cpu0) / (double)n,
                        .p50_us = median_latency_us(lat, n)};
    for (int i = 0; i < 2; i++) {
        close(st[i].efd);
        free(st[i].in.buf);
    }
    free(lat);
    return r;
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

/* placement[i] = executor of stage i; stage 0 is the source (`source`:
 * bench_source_behavior, or batch_source_behavior), the last is the sink,
 * the ones between forward. */
static double rill_chain(uint64_t n, const int *placement, int stages, rill_behavior_fn *source)
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
    rill_aid_t s = bench_spawn("bench_actor", sys, source, &src, placement[0]);
    rill_system_start(sys);
    double t0 = bench_now_s();
    rill_msg_t go = {.type = BENCH_MSG_GO};
    rill_tell(sys, s, &go);
    bench_flow_wait(&flow);
    double rate = (double)n / (flow.t_end - t0);
    rill_system_destroy(sys);
    return rate;
}

/* bench_source_behavior, sending in batches. */
static rill_err_t batch_source_behavior(rill_ctx_t *ctx, void *state, rill_msg_t *msg)
{
    (void)msg;
    bench_source_t *s = state;
    rill_system_t *sys = rill_ctx_system(ctx);
    /* acquire: pairs with the sink's release of its count. */
    uint64_t done = atomic_load_explicit(&s->flow->done, memory_order_acquire);
    rill_msg_t m[BATCH];
    for (;;) {
        uint64_t room = s->window - (s->sent - (done < s->sent ? done : s->sent));
        uint64_t k = s->n - s->sent;
        if (k > room)
            k = room;
        if (k > BATCH)
            k = BATCH;
        if (!k)
            break;
        for (uint64_t i = 0; i < k; i++)
            m[i] = (rill_msg_t){.type = BENCH_MSG_DATA, .arg = s->sent + i};
        size_t sent = 0;
        rill_tell_batch(sys, s->next, m, (size_t)k, &sent);
        s->sent += sent;
        if (sent < k)
            break;
    }
    if (s->sent < s->n) {
        rill_msg_t go = {.type = BENCH_MSG_GO};
        rill_tell(sys, rill_self(ctx), &go);
    }
    return RILL_OK;
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

typedef struct paced_sink {
    bench_flow_t *flow;
    int64_t *lat_ns;
    uint64_t n, got;
} paced_sink_t;

static rill_err_t paced_sink_behavior(rill_ctx_t *ctx, void *state, rill_msg_t *msg)
{
    (void)ctx;
    paced_sink_t *s = state;
    s->lat_ns[s->got] = bench_now_ns() - (int64_t)msg->arg;
    if (++s->got == s->n)
        bench_flow_finish(s->flow);
    return RILL_OK;
}

static paced_result_t rill_paced(uint64_t n)
{
    rill_system_t *sys = new_system();
    bench_flow_t flow;
    bench_flow_init(&flow, 0);
    paced_sink_t sink = {.flow = &flow, .lat_ns = calloc(n, sizeof(int64_t)), .n = n};
    rill_aid_t next = bench_spawn("bench_actor", sys, paced_sink_behavior, &sink, 1);
    rill_aid_t fwd = bench_spawn("bench_actor", sys, forward_behavior, &next, 0);
    rill_system_start(sys);
    double cpu0 = bench_cpu_us();
    int64_t t0 = bench_now_ns();
    for (uint64_t i = 0; i < n; i++) {
        pace(t0, i);
        rill_msg_t m = {.type = BENCH_MSG_DATA, .arg = (uint64_t)bench_now_ns()};
        rill_err_t err;
        /* A full mailbox (the executors starved by other processes) is
         * waited out, as a producer under backpressure would. */
        while ((err = rill_tell(sys, fwd, &m)) == RILL_EFULL)
            sched_yield();
        if (err != RILL_OK) {
            fprintf(stderr, "bench_actor: paced send failed: %s\n", rill_err_name(err));
            exit(1);
        }
    }
    bench_flow_wait(&flow);
    paced_result_t r = {.cpu_us_per_msg = (bench_cpu_us() - cpu0) / (double)n,
                        .p50_us = median_latency_us(sink.lat_ns, n)};
    rill_system_destroy(sys);
    free(sink.lat_ns);
    return r;
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
    uint64_t n_paced = (uint64_t)PACED_RATE * PACED_SECS;
    if (only && !strncmp(only, "paced", 5)) {
        paced_result_t p =
            !strcmp(only, "paced_eventfd") ? baseline_paced(n_paced) : rill_paced(n_paced);
        printf("paced: %.2f us CPU per message, p50 %.1f us\n", p.cpu_us_per_msg, p.p50_us);
        return 0;
    }
    if (only) {
        const int h[] = {0, 1}, c[] = {0, 0, 1, 1};
        double rate = !strcmp(only, "hop")         ? rill_chain(n, h, 2, bench_source_behavior)
                      : !strcmp(only, "hop_batch") ? rill_chain(n, h, 2, batch_source_behavior)
                      : !strcmp(only, "chain4")    ? rill_chain(n, c, 4, bench_source_behavior)
                      : !strcmp(only, "pingpong")  ? rill_pingpong(n_pp)
                                                   : -1;
        printf("%s: %.0f per s\n", only, rate);
        return rate < 0 ? 2 : 0;
    }
    const int hop[] = {0, 1}, chain[] = {0, 0, 1, 1}, alt[] = {0, 1, 0, 1};
    double b_spsc[50], b_pp[50], r_hop[50], r_chain[50], r_alt[50], r_pp[50], r_fan[50];
    double b_pc[50], r_pc[50], b_pl[50], r_pl[50], r_hb[50];
    printf("bench_actor: %llu messages per run (%llu round trips), %d alternating runs, "
           "2 executors\n",
           (unsigned long long)n, (unsigned long long)n_pp, runs);
    for (int r = 0; r < runs; r++) {
        b_spsc[r] = baseline_spsc(n);
        r_hop[r] = rill_chain(n, hop, 2, bench_source_behavior);
        r_hb[r] = rill_chain(n, hop, 2, batch_source_behavior);
        r_chain[r] = rill_chain(n, chain, 4, bench_source_behavior);
        r_alt[r] = rill_chain(n, alt, 4, bench_source_behavior);
        r_fan[r] = rill_fanin2(n);
        b_pp[r] = baseline_pingpong(n_pp);
        r_pp[r] = rill_pingpong(n_pp);
        paced_result_t bp = baseline_paced(n_paced), rp = rill_paced(n_paced);
        b_pc[r] = bp.cpu_us_per_msg;
        r_pc[r] = rp.cpu_us_per_msg;
        b_pl[r] = bp.p50_us;
        r_pl[r] = rp.p50_us;
        printf("  run %d: spsc %.1fM hop %.1fM hop_batch %.1fM chain4 %.1fM chain4_alt %.1fM "
               "fanin2 %.1fM | "
               "pingpong spsc %.2fM rill %.2fM per s | paced %u/s: CPU/msg eventfd %.2f us "
               "rill %.2f us, p50 eventfd %.1f us rill %.1f us\n",
               r + 1, b_spsc[r] / 1e6, r_hop[r] / 1e6, r_hb[r] / 1e6, r_chain[r] / 1e6,
               r_alt[r] / 1e6, r_fan[r] / 1e6, b_pp[r] / 1e6, r_pp[r] / 1e6, PACED_RATE, b_pc[r],
               r_pc[r], b_pl[r], r_pl[r]);
    }
    double spsc = bench_median(b_spsc, runs), pp = bench_median(b_pp, runs);
    bench_line("actor_hop", 0, bench_median(r_hop, runs), spsc, "msgs/s");
    bench_line("actor_hop_batch", 0, bench_median(r_hb, runs), spsc, "msgs/s");
    bench_line("actor_chain4", 0, bench_median(r_chain, runs), spsc, "msgs/s");
    bench_line("actor_chain4_alt", 0, bench_median(r_alt, runs), spsc, "msgs/s");
    bench_line("actor_fanin2", 0, bench_median(r_fan, runs), spsc, "msgs/s");
    bench_line("actor_pingpong", 0, bench_median(r_pp, runs), pp, "roundtrips/s");
    bench_line("actor_paced_cpu", 2, bench_median(r_pc, runs), bench_median(b_pc, runs),
               "us_cpu/msg");
    bench_line("actor_paced_p50", 1, bench_median(r_pl, runs), bench_median(b_pl, runs), "us");
    return 0;
}
