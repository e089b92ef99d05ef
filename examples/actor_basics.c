/*
 * actor_basics: the actor runtime in one page.
 *
 * - a counter actor that adds what it is told and answers questions (ask)
 * - a ticker that messages itself every 100 ms with a repeating timer and
 *   stops after 5 ticks
 * - a worker that fails on bad input, and a watcher that monitors it and
 *   prints the DOWN notice with the failure reason
 *
 * It ends with a verdict: the counter's total, the ticks, the work done
 * and both DOWN notices are checked; "OK" and exit status 0 only if all
 * hold (the test suite runs it).
 *
 * usage: actor_basics
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include <rill/actor.h>

enum { MSG_ADD = RILL_MSG_USER, MSG_GET, MSG_VALUE, MSG_TICK, MSG_WORK };

/* ---- counter: state is a plain struct, touched only on its executor ---- */

typedef struct counter {
    uint64_t total;
} counter_t;

static rill_err_t counter_behavior(rill_ctx_t *ctx, void *state, rill_msg_t *msg)
{
    counter_t *c = state;
    switch (msg->type) {
    case MSG_ADD:
        c->total += msg->arg;
        return RILL_OK;
    case MSG_GET: {
        rill_msg_t reply = {.type = MSG_VALUE, .arg = c->total};
        return rill_reply(ctx, msg, &reply);
    }
    default:
        return RILL_OK;
    }
}

/* ---- ticker: a repeating timer, then a normal stop ---------------------- */

typedef struct ticker {
    rill_timer_t timer;
    int ticks;
} ticker_t;

static rill_err_t ticker_init(rill_ctx_t *ctx, void *state)
{
    ticker_t *t = state;
    rill_msg_t tick = {.type = MSG_TICK};
    return rill_timer_start(ctx, 100, 100, &tick, &t->timer);
}

static rill_err_t ticker_behavior(rill_ctx_t *ctx, void *state, rill_msg_t *msg)
{
    ticker_t *t = state;
    if (msg->type == MSG_TICK) {
        printf("  ticker: tick %d on executor %d\n", ++t->ticks, rill_ctx_executor(ctx));
        if (t->ticks == 5)
            rill_stop_self(ctx); /* the timer stops with the actor */
    }
    return RILL_OK;
}

/* ---- worker and watcher: failure is a value, DOWN says why --------------- */

typedef struct worker {
    int done; /* items done; read by main after the worker's DOWN */
} worker_t;

static rill_err_t worker_behavior(rill_ctx_t *ctx, void *state, rill_msg_t *msg)
{
    worker_t *w = state;
    if (msg->type == MSG_WORK && msg->arg == 0)
        return rill_fail(ctx, RILL_EINVAL, "cannot work on item %" PRIu64, msg->arg);
    printf("  worker: item %" PRIu64 " done\n", msg->arg);
    w->done++;
    return RILL_OK;
}

typedef struct watcher {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int downs;    /* DOWN notices seen: the main thread waits for two */
    int normal;   /* of which normal exits (the ticker) */
    int abnormal; /* and abnormal ones (the worker) */
} watcher_t;

static rill_err_t watcher_behavior(rill_ctx_t *ctx, void *state, rill_msg_t *msg)
{
    (void)ctx;
    watcher_t *w = state;
    if (msg->type == RILL_MSG_DOWN) {
        const rill_down_t *d = msg->payload;
        printf("  watcher: DOWN %#" PRIx64 ": %s (%s)%s\n", d->actor.id,
               rill_exit_kind_name(d->reason.kind), d->reason.text,
               rill_exit_abnormal(&d->reason) ? " -- a supervisor would restart it" : "");
        pthread_mutex_lock(&w->lock);
        w->downs++;
        if (rill_exit_abnormal(&d->reason))
            w->abnormal++;
        else
            w->normal++;
        pthread_cond_signal(&w->cond);
        pthread_mutex_unlock(&w->lock);
    }
    return RILL_OK;
}

int main(void)
{
    char err[256];
    rill_system_t *sys = rill_system_new(NULL, err, sizeof(err));
    if (!sys) {
        rill_log(RILL_LOG_ERR, "actor_basics", "system: %s", err);
        return 1;
    }
    if (rill_system_start(sys)) {
        rill_log(RILL_LOG_ERR, "actor_basics", "system: cannot start");
        return 1;
    }
    printf("rill %s: %d executors\n", rill_version_str(), rill_system_executors(sys));

    counter_t counter = {0};
    ticker_t ticker = {0};
    worker_t worker = {0};
    watcher_t watcher = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0};
    rill_aid_t c, t, w, k;
    rill_spawn_opts_t oc = {.behavior = counter_behavior, .state = &counter, .name = "counter"};
    rill_spawn_opts_t ow = {.behavior = watcher_behavior, .state = &watcher};
    if (rill_spawn(sys, &oc, &c) || rill_spawn(sys, &ow, &w)) {
        rill_log(RILL_LOG_ERR, "actor_basics", "spawn failed");
        return 1;
    }
    /* Both monitored from the start: no race with an early exit. */
    rill_spawn_opts_t ot = {
        .behavior = ticker_behavior, .init = ticker_init, .state = &ticker, .monitor_by = w};
    rill_spawn_opts_t ok = {.behavior = worker_behavior, .state = &worker, .monitor_by = w};
    if (rill_spawn(sys, &ot, &t) || rill_spawn(sys, &ok, &k)) {
        rill_log(RILL_LOG_ERR, "actor_basics", "spawn failed");
        return 1;
    }

    printf("tell: add 1..1000 to the counter (by name)\n");
    for (uint64_t i = 1; i <= 1000; i++) {
        rill_msg_t add = {.type = MSG_ADD, .arg = i};
        while (rill_tell_name(sys, "counter", &add) == RILL_EFULL)
            ; /* the mailbox is bounded: a refused send is retried, not lost */
    }
    rill_msg_t get = {.type = MSG_GET}, value = {0};
    rill_err_t asked = rill_ask_sync(sys, c, &get, 5000, &value);
    if (asked == RILL_OK)
        printf("ask: the counter says %" PRIu64 " (expected 500500)\n", value.arg);
    else
        printf("ask: %s\n", rill_err2str(asked));

    printf("work: items 3, 2, 1, then 0 (bad input)\n");
    int told = 0;
    for (uint64_t i = 3; i != UINT64_MAX; i--) {
        rill_msg_t work = {.type = MSG_WORK, .arg = i};
        told += rill_tell(sys, k, &work) == RILL_OK;
    }

    /* Both DOWN notices, within 10 s: a program waits with a deadline. */
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 10;
    pthread_mutex_lock(&watcher.lock);
    int waited = 0;
    while (watcher.downs < 2 && waited != ETIMEDOUT)
        waited = pthread_cond_timedwait(&watcher.cond, &watcher.lock, &deadline);
    int normal = watcher.normal, abnormal = watcher.abnormal;
    pthread_mutex_unlock(&watcher.lock);

    rill_system_stats_t st;
    rill_system_stats(sys, &st);
    printf("stats: %" PRIu64 " actors spawned, %u alive, %" PRIu64 " dead letters\n", st.spawned,
           st.alive, st.dead_letters);
    if (rill_system_stop(sys, 5000) != RILL_OK) {
        /* An actor is still running: the system must not be destroyed
         * (rill_system_stop's contract); the process ends instead. */
        printf("FAILED: the system did not stop within 5 s\n");
        fflush(stdout);
        _exit(1);
    }
    rill_system_destroy(sys);

    /* Every actor has ended: their states can be read here. */
    int passed = asked == RILL_OK && value.arg == 500500 && ticker.ticks == 5 && told == 4 &&
                 worker.done == 3 && normal == 1 && abnormal == 1;
    printf("%s\n", passed
                       ? "OK: the counter added everything, the ticker ticked 5 times, the worker "
                         "did 3 items and failed on the bad one"
                       : "FAILED: a count or a DOWN notice is not what was expected");
    return passed ? 0 : 1;
}
