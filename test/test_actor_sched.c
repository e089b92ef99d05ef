/*
 * Scheduling: every callback of an actor runs on its executor's one thread,
 * whoever sends; executors are the ones asked for; and batching keeps a busy
 * actor that floods itself from starving the others on its executor.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "support/rtest.h"

#include "support/actor_kit.h"

enum { MSG_WORK = KIT_MSG_APP, MSG_SPIN };

/* Records the thread of its first callback and checks every later one. */
typedef struct where {
    int want_executor; /* -1: anything in range */
    int executors;
    pthread_t thread; /* written in init, before `seen` is released */
    atomic_int seen;
    atomic_int executor_seen;
    atomic_long handled;
    atomic_long wrong_thread;
    atomic_long wrong_executor;
    atomic_int terminate_on_thread; /* 1 yes, -1 no, 0 not yet */
} where_t;

static void check_place(where_t *w, rill_ctx_t *ctx)
{
    if (!atomic_load_explicit(&w->seen, memory_order_acquire) ||
        !pthread_equal(pthread_self(), w->thread))
        atomic_fetch_add(&w->wrong_thread, 1);
    int ex = rill_ctx_executor(ctx);
    if (ex != atomic_load(&w->executor_seen) || ex < 0 || ex >= w->executors ||
        (w->want_executor >= 0 && ex != w->want_executor))
        atomic_fetch_add(&w->wrong_executor, 1);
}

static rill_err_t where_init(rill_ctx_t *ctx, void *state)
{
    where_t *w = state;
    w->thread = pthread_self();
    atomic_store(&w->executor_seen, rill_ctx_executor(ctx));
    atomic_store_explicit(&w->seen, 1, memory_order_release);
    check_place(w, ctx);
    return RILL_OK;
}

static rill_err_t where_behavior(rill_ctx_t *ctx, void *state, rill_msg_t *msg)
{
    where_t *w = state;
    check_place(w, ctx);
    atomic_fetch_add(&w->handled, 1);
    return RILL_OK;
}

static void where_terminate(rill_ctx_t *ctx, void *state, const rill_exit_t *reason)
{
    where_t *w = state;
    atomic_store(&w->terminate_on_thread, pthread_equal(pthread_self(), w->thread) ? 1 : -1);
}

static rill_aid_t spawn_where(rill_system_t *sys, where_t *w, int executor)
{
    w->want_executor = executor;
    w->executors = rill_system_executors(sys);
    rill_spawn_opts_t o;
    memset(&o, 0, sizeof(o));
    o.behavior = where_behavior;
    o.init = where_init;
    o.terminate = where_terminate;
    o.state = w;
    o.executor = KIT_EXEC(executor);
    rill_aid_t aid = RILL_AID_NONE;
    rill_err_t e = rill_spawn(sys, &o, &aid);
    cr_assert_eq(e, RILL_OK, "spawn on executor %d: %s", executor, rill_err_name(e));
    return aid;
}

struct producer {
    pthread_t thread;
    rill_system_t *sys;
    rill_aid_t to[2];
    int count;
    int errors;
};

static void *produce(void *arg)
{
    struct producer *p = arg;
    for (int i = 0; i < p->count; i++) {
        for (int k = 0; k < 2; k++) {
            rill_msg_t m = kit_msg(MSG_WORK, (uint64_t)i, NULL);
            if (kit_tell_retry(p->sys, p->to[k], &m, KIT_WAIT_MS) != RILL_OK)
                p->errors++;
        }
    }
    return NULL;
}

Test(actor_sched, handlers_run_only_on_their_executor_thread, .timeout = 120)
{
    rill_system_t *sys = kit_system(2, 0, 0, 1);
    cr_assert_not_null(sys);
    where_t on1, on0;
    memset(&on1, 0, sizeof(on1));
    memset(&on0, 0, sizeof(on0));
    rill_aid_t a1 = spawn_where(sys, &on1, 1);
    rill_aid_t a0 = spawn_where(sys, &on0, 0);

    const int per = KIT_SCALE(5000);
    struct producer p[3];
    for (int i = 0; i < 3; i++) {
        p[i] = (struct producer){.sys = sys, .to = {a1, a0}, .count = per};
        cr_assert_eq(pthread_create(&p[i].thread, NULL, produce, &p[i]), 0);
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(p[i].thread, NULL);
        cr_assert_eq(p[i].errors, 0);
    }
    cr_assert(kit_wait_at_least(&on1.handled, 3 * per, KIT_WAIT_MS));
    cr_assert(kit_wait_at_least(&on0.handled, 3 * per, KIT_WAIT_MS));

    cr_assert_eq(atomic_load(&on1.wrong_thread), 0);
    cr_assert_eq(atomic_load(&on0.wrong_thread), 0);
    cr_assert_eq(atomic_load(&on1.wrong_executor), 0);
    cr_assert_eq(atomic_load(&on0.wrong_executor), 0);
    cr_assert_eq(atomic_load(&on1.executor_seen), 1);
    cr_assert_eq(atomic_load(&on0.executor_seen), 0);
    cr_assert_not(pthread_equal(on1.thread, on0.thread), "two executors, two threads");
    cr_assert_not(pthread_equal(on1.thread, pthread_self()), "not the caller's thread");
    for (int i = 0; i < 3; i++)
        cr_assert_not(pthread_equal(on1.thread, p[i].thread), "not a sender's thread");

    rill_actor_stats_t st;
    cr_assert_eq(rill_actor_stats(sys, a1, &st), RILL_OK);
    cr_assert_eq(st.executor, 1);
    cr_assert_eq(rill_actor_stats(sys, a0, &st), RILL_OK);
    cr_assert_eq(st.executor, 0);

    rill_system_destroy(sys);
    cr_assert_eq(atomic_load(&on1.terminate_on_thread), 1, "terminate ran on the executor");
    cr_assert_eq(atomic_load(&on0.terminate_on_thread), 1);
    cr_assert_eq(atomic_load(&on1.wrong_thread), 0);
}

Test(actor_sched, executor_minus_one_is_chosen_by_the_system, .timeout = 60)
{
    rill_system_t *sys = kit_system(2, 0, 0, 1);
    cr_assert_not_null(sys);
    enum { N = 8 };
    where_t w[N];
    rill_aid_t aid[N];
    memset(w, 0, sizeof(w));
    for (int i = 0; i < N; i++) {
        aid[i] = spawn_where(sys, &w[i], -1);
        rill_msg_t m = kit_msg(MSG_WORK, 0, NULL);
        cr_assert_eq(rill_tell(sys, aid[i], &m), RILL_OK);
    }
    for (int i = 0; i < N; i++) {
        cr_assert(kit_wait_at_least(&w[i].handled, 1, KIT_WAIT_MS));
        rill_actor_stats_t st;
        cr_assert_eq(rill_actor_stats(sys, aid[i], &st), RILL_OK);
        cr_assert(st.executor >= 0 && st.executor < 2, "executor %d", st.executor);
        cr_assert_eq(st.executor, atomic_load(&w[i].executor_seen));
        cr_assert_eq(atomic_load(&w[i].wrong_executor), 0);
    }
    rill_system_destroy(sys);
}

/* ---- fairness -------------------------------------------------------- */

/* Floods itself: every message it handles sends two more to itself (a full
 * mailbox refuses the extra), so it always has work. */
typedef struct busy {
    atomic_long handled;
} busy_t;

static rill_err_t busy_behavior(rill_ctx_t *ctx, void *state, rill_msg_t *msg)
{
    busy_t *b = state;
    atomic_fetch_add(&b->handled, 1);
    rill_msg_t again = kit_msg(MSG_SPIN, msg->arg + 1, NULL);
    for (int i = 0; i < 2; i++)
        (void)rill_send(ctx, rill_self(ctx), &again);
    return RILL_OK;
}

static void busy_does_not_starve_its_neighbour(uint32_t system_batch, uint32_t busy_batch)
{
    rill_system_t *sys = kit_system(1, 0, system_batch, 1);
    cr_assert_not_null(sys);
    busy_t b;
    memset(&b, 0, sizeof(b));
    rill_spawn_opts_t o;
    memset(&o, 0, sizeof(o));
    o.behavior = busy_behavior;
    o.state = &b;
    o.mailbox_capacity = 64;
    o.batch = busy_batch;
    rill_aid_t busy = RILL_AID_NONE;
    cr_assert_eq(rill_spawn(sys, &o, &busy), RILL_OK);
    kit_log_t *log = kit_log_new();
    cr_assert_not_null(log);
    rill_aid_t quiet = kit_spawn_recorder(sys, log, 0); /* same executor */
    cr_assert(!rill_aid_is_none(quiet));

    rill_msg_t kick = kit_msg(MSG_SPIN, 0, NULL);
    cr_assert_eq(rill_tell(sys, busy, &kick), RILL_OK);
    cr_assert(kit_wait_at_least(&b.handled, 2000, KIT_WAIT_MS), "the busy actor never got going");

    /* The neighbour answers while the busy actor still has work. */
    cr_assert_eq(kit_fence(sys, quiet), RILL_OK, "starved behind a busy actor");
    long at_reply = atomic_load(&b.handled);
    cr_assert(rill_alive(sys, busy));
    rill_actor_stats_t st;
    cr_assert_eq(rill_actor_stats(sys, busy, &st), RILL_OK);
    cr_assert_gt(st.mailbox_depth, 0, "the busy actor still has work");
    cr_assert(kit_wait_at_least(&b.handled, at_reply + 1000, KIT_WAIT_MS),
              "the busy actor kept running");

    /* And a one-way message gets through too. */
    rill_msg_t m = kit_msg(MSG_WORK, 7, NULL);
    cr_assert_eq(rill_tell(sys, quiet, &m), RILL_OK);
    cr_assert(kit_log_wait(log, 1, KIT_WAIT_MS));

    /* Control before mailbox: a stop gets through the flood. */
    cr_assert_eq(rill_stop(sys, busy), RILL_OK);
    cr_assert(kit_wait_dead(sys, busy, KIT_WAIT_MS));
    rill_system_destroy(sys);
    kit_log_free(log);
}

Test(actor_sched, busy_actor_does_not_starve_a_neighbour_batch_1, .timeout = 60)
{
    busy_does_not_starve_its_neighbour(1, 0);
}

Test(actor_sched, busy_actor_does_not_starve_a_neighbour_batch_7, .timeout = 60)
{
    busy_does_not_starve_its_neighbour(7, 0);
}

Test(actor_sched, busy_actor_does_not_starve_a_neighbour_default_batch, .timeout = 60)
{
    busy_does_not_starve_its_neighbour(0, 0);
}

Test(actor_sched, busy_actor_does_not_starve_a_neighbour_own_batch_1000, .timeout = 60)
{
    busy_does_not_starve_its_neighbour(0, 1000);
}

/* Two flooding actors on one executor log who ran, in order: no run of one
 * actor's messages is longer than the batch while the other has work. */
#define TURN_LOG 20000

typedef struct turns {
    unsigned char who[TURN_LOG]; /* executor thread only (one executor) */
    atomic_long n;
} turns_t;

typedef struct turn_actor {
    turns_t *turns;
    unsigned char id;
} turn_actor_t;

static rill_err_t turn_behavior(rill_ctx_t *ctx, void *state, rill_msg_t *msg)
{
    turn_actor_t *t = state;
    long i = atomic_load(&t->turns->n);
    if (i < TURN_LOG) {
        t->turns->who[i] = t->id;
        atomic_store(&t->turns->n, i + 1);
    }
    rill_msg_t again = kit_msg(MSG_SPIN, 0, NULL);
    for (int k = 0; k < 2; k++)
        (void)rill_send(ctx, rill_self(ctx), &again);
    return RILL_OK;
}

Test(actor_sched, batch_bounds_the_messages_of_one_turn, .timeout = 60)
{
    const uint32_t batch = 4;
    rill_system_t *sys = kit_system(1, 0, batch, 0);
    cr_assert_not_null(sys);
    static turns_t turns;
    memset(&turns, 0, sizeof(turns));
    turn_actor_t ta[2] = {{&turns, 1}, {&turns, 2}};
    rill_aid_t aid[2];
    for (int i = 0; i < 2; i++) {
        rill_spawn_opts_t o;
        memset(&o, 0, sizeof(o));
        o.behavior = turn_behavior;
        o.state = &ta[i];
        o.mailbox_capacity = 32;
        cr_assert_eq(rill_spawn(sys, &o, &aid[i]), RILL_OK);
        rill_msg_t kick = kit_msg(MSG_SPIN, 0, NULL);
        for (int k = 0; k < 16; k++)
            cr_assert_eq(rill_tell(sys, aid[i], &kick), RILL_OK);
    }
    cr_assert_eq(rill_system_start(sys), RILL_OK);
    cr_assert(kit_wait_at_least(&turns.n, TURN_LOG, KIT_WAIT_MS));
    cr_assert_eq(rill_system_stop(sys, KIT_WAIT_MS), RILL_OK); /* joins: the log is ours */

    long longest = 0, run = 0, seen[3] = {0, 0, 0};
    for (long i = 0; i < TURN_LOG; i++) {
        run = (i > 0 && turns.who[i] == turns.who[i - 1]) ? run + 1 : 1;
        if (run > longest)
            longest = run;
        seen[turns.who[i]]++;
    }
    cr_assert_leq(longest, (long)batch, "%ld messages of one actor in a row, batch %u", longest,
                  batch);
    cr_assert_gt(seen[1], TURN_LOG / 4);
    cr_assert_gt(seen[2], TURN_LOG / 4);
    rill_system_destroy(sys);
}
