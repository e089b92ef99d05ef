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
 * With nothing to run, the executor may poll its inbox for a while before
 * it lets libev sleep, which saves the wakeup system call under steady
 * load; how long adapts to the observed idle gaps (see idle_cb).
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

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
        e->turn_seq++; /* the clocks read in the last turn are stale now */
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

/* ---- adaptive idle spin ----
 *
 * Spinning after the run list empties saves the wakeup (a system call on
 * both sides and a few microseconds of latency) only if the next message
 * comes soon; at a moderate rate it burns a core for nothing (20 k msgs/s
 * leaves 50 us gaps: a fixed 50 us spin after each message kept an
 * executor busy all the time, next to librdkafka's threads on 2 cores).
 * So each executor keeps an average of its recent idle gaps (from the run
 * list emptying to the next work, whether a spin caught it or a wakeup
 * brought it) and spins only while that average is short: for up to
 * SPIN_GAP_FACTOR times the average gap (at least SPIN_MIN_NS), never
 * longer than spin_us, and not at all once the average passes spin_us / 2.
 * A gap that ended in a wakeup is measured with the wakeup's latency in it,
 * so a load that turns busy again may look slower than it is: every
 * SPIN_PROBE_EVERY-th idle period spins up to spin_us / 2 anyway, and the
 * gaps it catches bring the average back down. */
#define SPIN_MIN_NS      5000
#define SPIN_GAP_FACTOR  4
#define SPIN_PROBE_EVERY 16
#define GAP_MAX_NS       (1000 * 1000000LL) /* longer gaps count as this */

/* ---- clocks read once per actor turn (seam.h) ---- */

int64_t rill__turn_now_ns(void)
{
    rill__executor_t *e = rill__tls_exec;
    if (!e || !e->turn_seq)
        return rill__now_ns();
    if (e->mono_turn != e->turn_seq) {
        e->mono_turn = e->turn_seq;
        e->mono_ns = rill__now_ns();
    }
    return e->mono_ns;
}

static int64_t wall_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t rill__turn_wall_ms(void)
{
    rill__executor_t *e = rill__tls_exec;
    if (!e || !e->turn_seq)
        return wall_now_ms();
    if (e->wall_turn != e->turn_seq) {
        e->wall_turn = e->turn_seq;
        e->wall_ms = wall_now_ms();
    }
    return e->wall_ms;
}

/* An idle gap ended after gap_ns: fold it into the average (weight 1/4,
 * so a few gaps of a new rate are enough to follow it). */
static void gap_observe(rill__executor_t *e, int64_t gap_ns)
{
    if (gap_ns < 0)
        gap_ns = 0;
    if (gap_ns > GAP_MAX_NS)
        gap_ns = GAP_MAX_NS;
    e->gap_avg_ns += (gap_ns - e->gap_avg_ns) / 4;
}

/* Busy time (rill_executor_stats): one writer, so a relaxed load and
 * store instead of an atomic add. */
static inline void busy_add(rill__executor_t *e, int64_t ns)
{
    if (ns > 0)
        atomic_store_explicit(
            &e->busy_ns, atomic_load_explicit(&e->busy_ns, memory_order_relaxed) + (uint64_t)ns,
            memory_order_relaxed);
}

/* How long to spin now that the run list is empty, in ns (0: sleep). */
static int64_t spin_window_ns(rill__executor_t *e)
{
    uint32_t spin_us = e->sys->opts.spin_us;
    if (spin_us == UINT32_MAX || spin_us == 0)
        return 0;
    int64_t max_ns = (int64_t)spin_us * 1000;
    e->idle_periods++;
    if (e->gap_avg_ns * 2 <= max_ns) {
        int64_t w = e->gap_avg_ns * SPIN_GAP_FACTOR;
        if (w < SPIN_MIN_NS)
            w = SPIN_MIN_NS;
        return w < max_ns ? w : max_ns;
    }
    if (e->idle_periods % SPIN_PROBE_EVERY == 0)
        return max_ns / 2;
    return 0;
}

/* Runs actors until none is runnable (after the spin, if any) or the
 * slice is over; keeps the idle watcher on while work is left. */
static void run_slice(rill__executor_t *e)
{
    /* `now` is the last clock reading: taken after each round and every
     * 16 looks while spinning, never just for the gap statistics, so a
     * spin that catches work within 16 looks counts as a gap of 0 (the
     * clock is what ping-pong pays for on every idle period). */
    int64_t now = rill__now_ns();
    int64_t slice_end = now + SLICE_US * 1000LL;
    if (e->idle_since_ns) {
        /* Work came while we slept: the gap ends now. */
        gap_observe(e, now - e->idle_since_ns);
        e->idle_since_ns = 0;
    }
    int64_t idle_start = 0, spin_end = 0, busy_from = now;
    uint32_t spins = 0;
    for (;;) {
        drain_inbox(e);
        if (e->run_head) {
            if (idle_start) {
                /* A spin caught it. */
                gap_observe(e, now - idle_start);
                idle_start = 0;
                busy_from = now;
            }
            run_round(e);
            qs_pass(e);
            if (e->limbo_head)
                reap_ready(e);
            now = rill__now_ns();
            if (now >= slice_end) {
                busy_add(e, now - busy_from);
                break; /* let libev serve I/O and timers, then come back */
            }
            continue;
        }
        if (!idle_start) {
            busy_add(e, now - busy_from);
            idle_start = now;
            int64_t window = spin_window_ns(e);
            if (!window)
                break;
            spin_end = idle_start + window;
            spins = 0;
        }
        /* One pause per look at the inbox (a pause can take ~100 cycles);
         * the clock is read every 16 looks. */
        if ((++spins & 15) == 0) {
            now = rill__now_ns();
            if (now >= spin_end || now >= slice_end)
                break;
        }
        cpu_relax();
    }
    if (!e->run_head) {
        e->idle_since_ns = idle_start ? idle_start : now;
        if (e->idle_active) {
            ev_idle_stop(e->loop, &e->idle);
            e->idle_active = 0;
        }
    } else {
        idle_on(e);
    }
}

static void idle_cb(struct ev_loop *loop, ev_idle *w, int revents)
{
    (void)loop;
    (void)revents;
    run_slice(w->data);
}

static void wake_cb(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)revents;
    rill__executor_t *e = w->data;
    if (atomic_load_explicit(&e->sys->state, memory_order_acquire) == SYS_STOPPED) {
        ev_break(loop, EVBREAK_ALL);
        return;
    }
    /* libev runs its wakeup pipe at the highest priority, so this can run
     * before check_cb, with qs still saying "asleep": say "running" (as
     * check_cb does) before touching any actor, or a grace period could
     * pass while a turn below holds an actor pointer. */
    atomic_store_explicit(&e->qs, (atomic_load_explicit(&e->qs, memory_order_relaxed) | 1) + 1,
                          memory_order_release);
    /* Run what the wakeup brought right here: deferring it to the idle
     * watcher costs one more poll (a system call) per wakeup. */
    if (drain_inbox(e) || e->run_head)
        run_slice(e);
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
    atomic_store_explicit(&e->started_ns, rill__now_ns(), memory_order_relaxed);
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
    e->blocks = rill__blocks_new();
    if (!e->loop || !e->settle || !e->blocks)
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

rill_err_t rill_executor_stats(rill_system_t *sys, int index, rill_executor_stats_t *out)
{
    if (!sys || !out || index < 0 || index >= sys->nexec)
        return RILL_EINVAL;
    const rill__executor_t *e = &sys->execs[index];
    int64_t started = atomic_load_explicit(&e->started_ns, memory_order_relaxed);
    out->busy_ns = atomic_load_explicit(&e->busy_ns, memory_order_relaxed);
    out->uptime_ns = started ? (uint64_t)(rill__now_ns() - started) : 0;
    return RILL_OK;
}
