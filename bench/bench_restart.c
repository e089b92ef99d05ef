/*
 * bench_restart: how long from a child's failure until its replacement has
 * processed its first message, over many restarts without backoff.
 *
 *   rill      a one_for_one supervisor (rill_sup_start) restarts the child
 *   baseline  a bare watcher actor that monitors the child and, on DOWN,
 *             spawns a new one: the runtime's own cost of noticing a death
 *             and starting an actor, without any supervisor logic
 *
 * The child stamps the clock just before it fails; its replacement's init
 * sends it a first message and stamps the clock when it handles it. Runs
 * alternate between rill and the baseline; each run measures RESTARTS
 * restarts; medians and p99 over all restarts of each side.
 *
 * usage: bench_restart [restarts per run, default 1000] [runs, default 5]
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <rill/rill.h>

#include "bench_util.h"

enum { MSG_CRASH = RILL_MSG_USER, MSG_FIRST };

/* Shared by the children of one run and the main thread. */
typedef struct probe {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int64_t t_fail;
    int ready;          /* a replacement has handled its first message */
    rill_aid_t current; /* that replacement */
    double *lat_us;
    size_t n, cap;
    int armed; /* a failure is being measured */
} probe_t;

static rill_err_t child_init(rill_ctx_t *ctx, void *state)
{
    (void)state;
    rill_msg_t first = {.type = MSG_FIRST};
    return rill_send(ctx, rill_self(ctx), &first);
}

static rill_err_t child_behavior(rill_ctx_t *ctx, void *state, rill_msg_t *msg)
{
    probe_t *p = state;
    if (msg->type == MSG_CRASH) {
        pthread_mutex_lock(&p->lock);
        p->t_fail = bench_now_ns();
        p->armed = 1;
        pthread_mutex_unlock(&p->lock);
        return RILL_EIO;
    }
    if (msg->type == MSG_FIRST) {
        int64_t t = bench_now_ns();
        pthread_mutex_lock(&p->lock);
        if (p->armed && p->n < p->cap)
            p->lat_us[p->n++] = (double)(t - p->t_fail) / 1000.0;
        p->armed = 0;
        p->current = rill_self(ctx);
        p->ready = 1;
        pthread_cond_signal(&p->cond);
        pthread_mutex_unlock(&p->lock);
    }
    return RILL_OK;
}

static rill_err_t start_child(void *arg, rill_spawn_opts_t *o)
{
    o->behavior = child_behavior;
    o->init = child_init;
    o->state = arg;
    o->executor = RILL_EXECUTOR(1); /* the supervisor runs on executor 0 */
    return RILL_OK;
}

/* Baseline: a watcher that respawns the child on DOWN. */
typedef struct respawner {
    probe_t *probe;
} respawner_t;

static rill_err_t respawn(rill_ctx_t *ctx, respawner_t *r)
{
    rill_spawn_opts_t o = {0};
    start_child(r->probe, &o);
    o.monitor_by = rill_self(ctx);
    rill_aid_t child;
    return rill_spawn(rill_ctx_system(ctx), &o, &child);
}

static rill_err_t respawner_init(rill_ctx_t *ctx, void *state)
{
    return respawn(ctx, state);
}

static rill_err_t respawner_behavior(rill_ctx_t *ctx, void *state, rill_msg_t *msg)
{
    if (msg->type == RILL_MSG_DOWN)
        return respawn(ctx, state);
    return RILL_OK;
}

static rill_aid_t wait_ready(probe_t *p)
{
    pthread_mutex_lock(&p->lock);
    while (!p->ready)
        pthread_cond_wait(&p->cond, &p->lock);
    p->ready = 0;
    rill_aid_t a = p->current;
    pthread_mutex_unlock(&p->lock);
    return a;
}

static void run(int supervised, int restarts, probe_t *p)
{
    char err[256];
    rill_system_t *sys = rill_system_new(&(rill_system_opts_t){.executors = 2}, err, sizeof(err));
    if (!sys) {
        fprintf(stderr, "bench_restart: %s\n", err);
        exit(1);
    }
    rill_system_start(sys);
    rill_child_spec_t child = {.id = "child", .start = start_child, .arg = p};
    rill_sup_spec_t spec = RILL_SUP_SPEC_DEFAULT;
    spec.intensity = restarts * 2;
    spec.period_ms = 1000;
    spec.children = &child;
    spec.n_children = 1;
    spec.executor = RILL_EXECUTOR(0);
    rill_aid_t sup = RILL_AID_NONE, watcher = RILL_AID_NONE;
    respawner_t rs = {p};
    if (supervised) {
        if (rill_sup_start(sys, &spec, NULL, &sup, err, sizeof(err))) {
            fprintf(stderr, "bench_restart: %s\n", err);
            exit(1);
        }
    } else {
        rill_spawn_opts_t o = {.behavior = respawner_behavior,
                               .init = respawner_init,
                               .state = &rs,
                               .executor = RILL_EXECUTOR(0)};
        rill_spawn(sys, &o, &watcher);
    }
    rill_aid_t cur = wait_ready(p);
    for (int i = 0; i < restarts; i++) {
        rill_msg_t crash = {.type = MSG_CRASH};
        rill_tell(sys, cur, &crash);
        cur = wait_ready(p);
    }
    if (supervised)
        rill_sup_stop(sys, sup, 5000);
    rill_system_stop(sys, 5000);
    rill_system_destroy(sys);
}

static double pct(double *v, size_t n, double q)
{
    size_t i = (size_t)(q * (double)(n - 1) + 0.5);
    return v[i];
}

int main(int argc, char **argv)
{
    int restarts = argc > 1 ? atoi(argv[1]) : 1000;
    int runs = argc > 2 ? atoi(argv[2]) : 5;
    if (restarts < 10 || runs < 1 || runs > 50) {
        fprintf(stderr, "usage: bench_restart [restarts >= 10] [runs 1..50]\n");
        return 2;
    }
    bench_header("bench_restart", 0, argc, argv);
    size_t cap = (size_t)restarts * (size_t)runs;
    probe_t sup = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};
    probe_t base = sup;
    sup.lat_us = calloc(cap, sizeof(double));
    base.lat_us = calloc(cap, sizeof(double));
    sup.cap = base.cap = cap;
    printf("bench_restart: %d restarts per run, %d alternating runs, no backoff\n", restarts, runs);
    for (int r = 0; r < runs; r++) {
        run(0, restarts, &base);
        run(1, restarts, &sup);
    }
    bench_sort(sup.lat_us, sup.n);
    bench_sort(base.lat_us, base.n);
    double s50 = pct(sup.lat_us, sup.n, 0.5), s99 = pct(sup.lat_us, sup.n, 0.99);
    double b50 = pct(base.lat_us, base.n, 0.5), b99 = pct(base.lat_us, base.n, 0.99);
    printf("  supervisor: %zu restarts, median %.1f us, p99 %.1f us, max %.1f us\n", sup.n, s50,
           s99, sup.lat_us[sup.n - 1]);
    printf("  bare respawn: %zu restarts, median %.1f us, p99 %.1f us, max %.1f us\n", base.n, b50,
           b99, base.lat_us[base.n - 1]);
    printf("  goal: supervisor median under 50 us: %s\n", s50 < 50.0 ? "met" : "missed");
    bench_line("restart_median", 1, s50, b50, "us");
    /* An _overhead line gives rill - baseline (here of the p99s). */
    bench_line_diff("restart_overhead", 1, s99, b99, "us");
    free(sup.lat_us);
    free(base.lat_us);
    return 0;
}
