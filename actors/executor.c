/*
 * Executors: one thread and one libev loop each. This file holds what runs
 * on them between actor turns: scheduling, the loop's watchers, and the
 * reclamation of retired actors' memory.
 *
 * Scheduling. An actor is runnable when its mailbox or control queue has
 * something. Its `scheduled` flag says it is already queued (or running);
 * whoever flips it from 0 to 1 queues it: on the executor's own thread
 * straight onto the run list, from other threads onto the executor's inbox
 * (an MPSC queue) followed by ev_async_send, which libev coalesces (several
 * sends before the loop wakes cost one wakeup; a loop that is not sleeping
 * costs no system call at all). When a turn leaves the actor with nothing
 * to do, the executor clears the flag and re-checks both queues (a seq_cst
 * store then seq_cst loads, pairing with the senders' seq_cst push then
 * load of the flag), so a message that raced with the clear is never
 * stranded.
 *
 * An executor runs actors from an ev_idle watcher, so libev still serves
 * its timers and I/O between slices of at most 2 ms; each actor handles at
 * most `batch` messages per turn, then goes to the back of the run list.
 * With nothing to run, the executor polls its inbox for spin_us before it
 * lets libev sleep, which saves the wakeup system call under steady load.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include "../actors/util.h"
#include "actor_int.h"

_Thread_local rill__executor_t *rill__tls_exec;

#define SLICE_US 2000

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* ------------------------------------------------------------------ */
/* Reclamation                                                         */
/* ------------------------------------------------------------------ */

/* A quiescent point: this executor holds no actor pointer right now.
 * release: everything it did with actors happens before a reaper on
 * another executor sees the new value. */
static inline void qs_pass(rill__executor_t *e)
{
    atomic_store_explicit(&e->qs, atomic_load_explicit(&e->qs, memory_order_relaxed) + 2,
                          memory_order_release);
}

static int grace_passed(rill_system_t *sys, const uint64_t *snap)
{
    if (!snap)
        return 0;
    for (int i = 0; i < sys->nexec; i++) {
        uint64_t cur = atomic_load_explicit(&sys->execs[i].qs, memory_order_acquire);
        /* Unchanged and running (even) at the snapshot: it may still be
         * inside the callback that read the pointer. */
        if (cur == snap[i] && !(snap[i] & 1))
            return 0;
    }
    return 1;
}

static void reap_ready(rill__executor_t *e)
{
    while (e->limbo_head && grace_passed(e->sys, e->limbo_head->qs_snap)) {
        rill__actor_t *a = e->limbo_head;
        e->limbo_head = a->limbo_next;
        if (!e->limbo_head)
            e->limbo_tail = NULL;
        rill__actor_reap(a);
    }
}

static void reap_all(rill__executor_t *e)
{
    while (e->limbo_head) {
        rill__actor_t *a = e->limbo_head;
        e->limbo_head = a->limbo_next;
        rill__actor_reap(a);
    }
    e->limbo_tail = NULL;
}

/* Called on the actor's executor once it is gone. Snapshots are taken in
 * order, so the limbo list is reaped front to back. */
void rill__retire(rill__actor_t *a)
{
    rill_system_t *sys = a->sys;
    rill__executor_t *e = a->exec;
    a->qs_snap = malloc((size_t)sys->nexec * sizeof(uint64_t));
    if (!a->qs_snap) {
        /* Cannot wait for a grace period without memory for the snapshot:
         * keep the actor until the system is destroyed. */
    } else {
        for (int i = 0; i < sys->nexec; i++)
            a->qs_snap[i] = atomic_load_explicit(&sys->execs[i].qs, memory_order_acquire);
    }
    a->limbo_next = NULL;
    if (e->limbo_tail)
        e->limbo_tail->limbo_next = a;
    else
        e->limbo_head = a;
    e->limbo_tail = a;
}

/* ------------------------------------------------------------------ */
/* Executors                                                           */
/* ------------------------------------------------------------------ */

static void runlist_append(rill__executor_t *e, rill__actor_t *a)
{
    a->run_next = NULL;
    if (e->run_tail)
        e->run_tail->run_next = a;
    else
        e->run_head = a;
    e->run_tail = a;
}

static rill__actor_t *runlist_pop(rill__executor_t *e)
{
    rill__actor_t *a = e->run_head;
    if (a) {
        e->run_head = a->run_next;
        if (!e->run_head)
            e->run_tail = NULL;
    }
    return a;
}

static void idle_on(rill__executor_t *e)
{
    if (!e->idle_active) {
        e->idle_active = 1;
        ev_idle_start(e->loop, &e->idle);
    }
}

/* The part of rill__schedule (actor_int.h) past its first check. */
void rill__schedule_slow(rill__actor_t *a)
{
    if (atomic_exchange_explicit(&a->scheduled, 1, memory_order_seq_cst))
        return;
    rill__executor_t *e = a->exec;
    if (rill__tls_exec == e) {
        runlist_append(e, a);
        idle_on(e);
    } else {
        rill__mpsc_push(&e->inbox, &a->run_node);
        ev_async_send(e->loop, &e->wake);
    }
}

static int drain_inbox(rill__executor_t *e)
{
    int n = 0;
    rill__node_t *node;
    while ((node = rill__mpsc_pop(&e->inbox))) {
        rill__actor_t *a = (rill__actor_t *)((char *)node - offsetof(rill__actor_t, run_node));
        runlist_append(e, a);
        n++;
    }
    return n;
}

static int actor_has_work(rill__actor_t *a)
{
    return rill__mailbox_depth(&a->mbox) > 0 || rill__mpsc_maybe_nonempty(&a->ctrl);
}

/* One pass over the actors runnable now. */
static void run_round(rill__executor_t *e)
{
    rill__actor_t *last = e->run_tail;
    for (;;) {
        rill__actor_t *a = runlist_pop(e);
        if (!a)
            return;
        int was_last = a == last;
        int r = rill__actor_turn(a);
        if (r > 0) {
            runlist_append(e, a);
        } else if (r == 0) {
            atomic_store_explicit(&a->scheduled, 0, memory_order_seq_cst);
            if (actor_has_work(a) &&
                !atomic_exchange_explicit(&a->scheduled, 1, memory_order_seq_cst))
                runlist_append(e, a);
        }
        if (was_last)
            return;
    }
}

static void idle_cb(struct ev_loop *loop, ev_idle *w, int revents)
{
    (void)revents;
    rill__executor_t *e = w->data;
    int64_t slice_end = rill__now_us() + SLICE_US;
    uint32_t spin_us = e->sys->opts.spin_us;
    int64_t spin_end = 0;
    uint32_t spins = 0;
    for (;;) {
        drain_inbox(e);
        if (e->run_head) {
            run_round(e);
            qs_pass(e);
            if (e->limbo_head)
                reap_ready(e);
            spin_end = 0;
            if (rill__now_us() >= slice_end)
                return; /* let libev serve I/O and timers, then come back */
            continue;
        }
        if (spin_us == UINT32_MAX)
            break;
        /* One pause per look at the inbox (a pause can take ~100 cycles);
         * the clock is read every 16 looks. */
        if ((spins++ & 15) == 0) {
            int64_t now = rill__now_us();
            if (!spin_end)
                spin_end = now + spin_us;
            if (now >= spin_end || now >= slice_end)
                break;
        }
        cpu_relax();
    }
    if (!e->run_head) {
        ev_idle_stop(loop, w);
        e->idle_active = 0;
    }
}

static void wake_cb(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)revents;
    rill__executor_t *e = w->data;
    if (atomic_load_explicit(&e->sys->state, memory_order_acquire) == SYS_STOPPED) {
        ev_break(loop, EVBREAK_ALL);
        return;
    }
    qs_pass(e);
    if (drain_inbox(e) || e->run_head)
        idle_on(e);
}

static void reap_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    rill__executor_t *e = w->data;
    reap_ready(e);
    if (!e->limbo_head)
        ev_timer_stop(e->loop, w);
}

/* Around libev's poll: asleep counts as quiescent (odd), and a retired
 * actor gets another chance to be reaped before the executor sleeps; if
 * the grace period has not passed yet, a 1 ms timer keeps trying, so that
 * what stragglers left is released soon even on an idle system. */
static void prepare_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)loop;
    (void)revents;
    rill__executor_t *e = w->data;
    if (e->limbo_head) {
        reap_ready(e);
        if (e->limbo_head && !ev_is_active(&e->reap_timer))
            ev_timer_start(e->loop, &e->reap_timer);
    }
    atomic_store_explicit(&e->qs, atomic_load_explicit(&e->qs, memory_order_relaxed) | 1,
                          memory_order_release);
}

static void check_cb(struct ev_loop *loop, ev_check *w, int revents)
{
    (void)loop;
    (void)revents;
    rill__executor_t *e = w->data;
    atomic_store_explicit(&e->qs, (atomic_load_explicit(&e->qs, memory_order_relaxed) | 1) + 1,
                          memory_order_release);
}

static void *executor_main(void *arg)
{
    rill__executor_t *e = arg;
    rill__tls_exec = e;
    char name[16];
    snprintf(name, sizeof(name), "rill-exec-%d", e->index);
    pthread_setname_np(pthread_self(), name);
    ev_run(e->loop, 0);
    rill__tls_exec = NULL;
    return NULL;
}

int rill__executor_init(rill__executor_t *e, rill_system_t *sys, int index)
{
    e->sys = sys;
    e->index = index;
    rill__mpsc_init(&e->inbox);
    /* EVFLAG_NOSIGMASK: executors never handle signals. */
    e->loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
    e->settle = rill__settle_acc_new();
    if (!e->loop || !e->settle)
        return -1;
    ev_async_init(&e->wake, wake_cb);
    e->wake.data = e;
    ev_async_start(e->loop, &e->wake);
    ev_idle_init(&e->idle, idle_cb);
    e->idle.data = e;
    ev_prepare_init(&e->prepare, prepare_cb);
    e->prepare.data = e;
    ev_prepare_start(e->loop, &e->prepare);
    ev_check_init(&e->check, check_cb);
    e->check.data = e;
    ev_check_start(e->loop, &e->check);
    ev_timer_init(&e->reap_timer, reap_timer_cb, 0.001, 0.001);
    e->reap_timer.data = e;
    return 0;
}

int rill__executor_start(rill__executor_t *e)
{
    if (pthread_create(&e->thread, NULL, executor_main, e))
        return -1;
    e->thread_started = 1;
    return 0;
}

void rill__executor_join(rill__executor_t *e)
{
    if (e->thread_started) {
        ev_async_send(e->loop, &e->wake);
        pthread_join(e->thread, NULL);
        e->thread_started = 0;
    }
}

/* Only once the executors are joined: nothing can look at retired actors
 * then. */
void rill__executor_reap_all(rill__executor_t *e)
{
    reap_all(e);
}
