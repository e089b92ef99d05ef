/*
 * The system: executors (one thread and one libev loop each), the actor
 * table, the name registry, spawning and sending.
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
#include <errno.h>
#include <sched.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../actors/util.h"
#include "actor_int.h"

_Thread_local rill__executor_t *rill__tls_exec;

#define DEFAULT_MAILBOX 256u
#define DEFAULT_BATCH   64u
#define DEFAULT_SPIN_US 50u
#define DEFAULT_MAX     (1u << 20)
#define MAX_MAILBOX     (1u << 24)
#define SLICE_US        2000

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* ------------------------------------------------------------------ */
/* Mailbox                                                             */
/* ------------------------------------------------------------------ */

int rill__mailbox_init(rill__mailbox_t *mb, uint32_t capacity)
{
    mb->slots = aligned_alloc(64, (size_t)capacity * sizeof(rill__mslot_t));
    if (!mb->slots)
        return -1;
    for (uint32_t i = 0; i < capacity; i++)
        atomic_init(&mb->slots[i].seq, 0); /* never position + 1 before written */
    atomic_init(&mb->tail, 0);
    atomic_init(&mb->head_cache, 0);
    atomic_init(&mb->head, 0);
    mb->mask = capacity - 1;
    return 0;
}

void rill__mailbox_free(rill__mailbox_t *mb)
{
    free(mb->slots);
    mb->slots = NULL;
}

static uint32_t round_pow2(uint32_t v)
{
    uint32_t p = 1;
    while (p < v)
        p <<= 1;
    return p;
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
static void retire(rill__actor_t *a)
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

void rill__schedule(rill__actor_t *a)
{
    /* seq_cst load: pairs with the executor's seq_cst clear (see top). */
    if (atomic_load_explicit(&a->scheduled, memory_order_seq_cst))
        return;
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

/* ------------------------------------------------------------------ */
/* Actor table                                                         */
/* ------------------------------------------------------------------ */

rill__slot_t *rill__slot_of(rill_system_t *sys, uint32_t idx)
{
    uint32_t c = idx >> RILL__CHUNK_SHIFT;
    if (c >= RILL__MAX_CHUNKS)
        return NULL;
    /* acquire: pairs with the release store that published the chunk. */
    rill__slot_t *chunk = atomic_load_explicit(&sys->chunks[c], memory_order_acquire);
    return chunk ? &chunk[idx & (RILL__CHUNK_SIZE - 1)] : NULL;
}

rill__actor_t *rill__actor_acquire(rill_system_t *sys, rill_aid_t aid, rill__slot_t **slotp)
{
    rill__slot_t *slot = rill__slot_of(sys, (uint32_t)aid);
    if (!slot)
        return NULL;
    rill__executor_t *self = rill__tls_exec;
    if (self && self->sys == sys) {
        /* Quiescent-state protected: the actor's memory cannot be reaped
         * before this executor's current callback returns. */
        rill__actor_t *a = atomic_load_explicit(&slot->actor, memory_order_acquire);
        if (!a || a->aid != aid || atomic_load_explicit(&a->dead, memory_order_seq_cst))
            return NULL;
        *slotp = NULL;
        return a;
    }
    /* seq_cst: the increment is ordered before the state load below, and
     * the stopping actor's DEAD store before its load of users, so one of
     * the two always sees the other. */
    atomic_fetch_add_explicit(&slot->users, 1, memory_order_seq_cst);
    rill__actor_t *a = NULL;
    if (atomic_load_explicit(&slot->gen, memory_order_seq_cst) == (uint32_t)(aid >> 32) &&
        atomic_load_explicit(&slot->state, memory_order_seq_cst) == SLOT_ALIVE)
        a = atomic_load_explicit(&slot->actor, memory_order_acquire);
    if (!a || a->aid != aid) {
        atomic_fetch_sub_explicit(&slot->users, 1, memory_order_release);
        return NULL;
    }
    *slotp = slot;
    return a;
}

void rill__actor_release(rill__slot_t *slot)
{
    /* release: our accesses to the actor happen before it may be freed. */
    if (slot)
        atomic_fetch_sub_explicit(&slot->users, 1, memory_order_release);
}

/* Claim a free slot for a; returns its index, or UINT32_MAX. */
static uint32_t slot_claim(rill_system_t *sys, rill__actor_t *a, rill_aid_t *aid)
{
    pthread_mutex_lock(&sys->slots_lock);
    uint32_t idx = UINT32_MAX;
    if (sys->free_head) {
        idx = sys->free_head - 1;
        sys->free_head = rill__slot_of(sys, idx)->next_free;
    } else if (sys->slots_used < RILL__MAX_CHUNKS * RILL__CHUNK_SIZE) {
        idx = sys->slots_used;
        uint32_t c = idx >> RILL__CHUNK_SHIFT;
        if (!atomic_load_explicit(&sys->chunks[c], memory_order_relaxed)) {
            rill__slot_t *chunk = calloc(RILL__CHUNK_SIZE, sizeof(*chunk));
            if (!chunk) {
                pthread_mutex_unlock(&sys->slots_lock);
                return UINT32_MAX;
            }
            for (uint32_t i = 0; i < RILL__CHUNK_SIZE; i++)
                atomic_init(&chunk[i].gen, 1);
            /* release: the initialised chunk is visible to lock-free readers. */
            atomic_store_explicit(&sys->chunks[c], chunk, memory_order_release);
        }
        sys->slots_used++;
    }
    if (idx != UINT32_MAX) {
        rill__slot_t *slot = rill__slot_of(sys, idx);
        uint32_t gen = atomic_load_explicit(&slot->gen, memory_order_relaxed);
        *aid = ((rill_aid_t)gen << 32) | idx;
        atomic_store_explicit(&slot->actor, a, memory_order_release);
        /* release: the actor's fields are visible to senders that see ALIVE. */
        atomic_store_explicit(&slot->state, SLOT_ALIVE, memory_order_seq_cst);
    }
    pthread_mutex_unlock(&sys->slots_lock);
    return idx;
}

/* After the actor is gone: new generation, back on the free list. */
static void slot_free(rill_system_t *sys, uint32_t idx)
{
    rill__slot_t *slot = rill__slot_of(sys, idx);
    if (!slot)
        return; /* cannot happen: the index came from slot_claim */
    pthread_mutex_lock(&sys->slots_lock);
    atomic_store_explicit(&slot->actor, NULL, memory_order_relaxed);
    uint32_t gen = atomic_load_explicit(&slot->gen, memory_order_relaxed) + 1;
    if (gen == 0)
        gen = 1; /* never 0, so an aid is never 0 */
    /* A sender holding an old aid now fails the generation check. */
    atomic_store_explicit(&slot->gen, gen, memory_order_seq_cst);
    atomic_store_explicit(&slot->state, SLOT_FREE, memory_order_seq_cst);
    slot->next_free = sys->free_head;
    sys->free_head = idx + 1;
    pthread_mutex_unlock(&sys->slots_lock);
}

/* ------------------------------------------------------------------ */
/* Names                                                               */
/* ------------------------------------------------------------------ */

static unsigned name_hash(const char *s)
{
    unsigned h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h & 255u;
}

/* Returns RILL_OK or RILL_EEXIST. Called with names_lock held. */
static rill_err_t names_add_locked(rill_system_t *sys, char *name, rill_aid_t aid)
{
    unsigned h = name_hash(name);
    for (rill__name_entry_t *e = sys->names[h]; e; e = e->next)
        if (!strcmp(e->name, name)) {
            if (e->aid != RILL__AID_RESTARTING)
                return RILL_EEXIST;
            /* the restarted actor takes over its held name */
            e->aid = aid;
            e->name = name;
            return RILL_OK;
        }
    rill__name_entry_t *e = malloc(sizeof(*e));
    if (!e)
        return RILL_ENOMEM;
    e->name = name;
    e->aid = aid;
    e->next = sys->names[h];
    sys->names[h] = e;
    return RILL_OK;
}

void rill__names_remove(rill_system_t *sys, const char *name, rill_aid_t aid)
{
    if (!name)
        return;
    pthread_mutex_lock(&sys->names_lock);
    for (rill__name_entry_t **pp = &sys->names[name_hash(name)]; *pp; pp = &(*pp)->next) {
        rill__name_entry_t *e = *pp;
        if (e->aid == aid && !strcmp(e->name, name)) {
            *pp = e->next;
            free(e);
            break;
        }
    }
    pthread_mutex_unlock(&sys->names_lock);
}

rill_err_t rill__names_hold_restarting(rill_system_t *sys, const char *name)
{
    if (!name)
        return RILL_EINVAL;
    pthread_mutex_lock(&sys->names_lock);
    rill_err_t err = RILL_OK;
    unsigned h = name_hash(name);
    rill__name_entry_t *found = NULL;
    for (rill__name_entry_t *e = sys->names[h]; e; e = e->next)
        if (!strcmp(e->name, name))
            found = e;
    if (found) {
        err = found->aid == RILL__AID_RESTARTING ? RILL_OK : RILL_EEXIST;
    } else {
        /* The entry owns a copy of the name while it is held. */
        rill__name_entry_t *e = malloc(sizeof(*e) + strlen(name) + 1);
        if (!e) {
            err = RILL_ENOMEM;
        } else {
            e->name = (char *)(e + 1);
            strcpy(e->name, name);
            e->aid = RILL__AID_RESTARTING;
            e->next = sys->names[h];
            sys->names[h] = e;
        }
    }
    pthread_mutex_unlock(&sys->names_lock);
    return err;
}

void rill__names_release_restarting(rill_system_t *sys, const char *name)
{
    rill__names_remove(sys, name, RILL__AID_RESTARTING);
}

/* Like rill_lookup, but tells a restarting hold apart from no actor. */
static rill_aid_t lookup_or_restarting(rill_system_t *sys, const char *name)
{
    rill_aid_t aid = RILL_AID_NONE;
    pthread_mutex_lock(&sys->names_lock);
    for (rill__name_entry_t *e = sys->names[name_hash(name)]; e; e = e->next)
        if (!strcmp(e->name, name)) {
            aid = e->aid;
            break;
        }
    pthread_mutex_unlock(&sys->names_lock);
    return aid;
}

rill_aid_t rill_lookup(rill_system_t *sys, const char *name)
{
    if (!sys || !name)
        return RILL_AID_NONE;
    rill_aid_t aid = lookup_or_restarting(sys, name);
    return aid == RILL__AID_RESTARTING ? RILL_AID_NONE : aid;
}

/* ------------------------------------------------------------------ */
/* System                                                              */
/* ------------------------------------------------------------------ */

rill_system_t *rill_system_new(const rill_system_opts_t *opts, char *errstr, size_t errstr_size)
{
    rill_system_opts_t o = {0};
    if (opts)
        o = *opts;
    if (o.executors < 0 || o.executors > 1024) {
        rill__fail(RILL_EINVAL, errstr, errstr_size,
                   "executors must be between 0 (one per core) and 1024, got %d", o.executors);
        return NULL;
    }
    if (o.mailbox_capacity > MAX_MAILBOX) {
        rill__fail(RILL_EINVAL, errstr, errstr_size, "mailbox_capacity must be at most %u, got %u",
                   MAX_MAILBOX, o.mailbox_capacity);
        return NULL;
    }
    if (!o.executors) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        o.executors = n > 0 ? (int)n : 1;
    }
    o.mailbox_capacity = round_pow2(o.mailbox_capacity ? o.mailbox_capacity : DEFAULT_MAILBOX);
    if (!o.batch)
        o.batch = DEFAULT_BATCH;
    if (!o.spin_us)
        o.spin_us = DEFAULT_SPIN_US;
    if (!o.max_actors)
        o.max_actors = DEFAULT_MAX;

    rill_system_t *sys = calloc(1, sizeof(*sys));
    if (!sys) {
        rill__fail(RILL_ENOMEM, errstr, errstr_size, "out of memory");
        return NULL;
    }
    sys->opts = o;
    sys->nexec = o.executors;
    pthread_mutex_init(&sys->slots_lock, NULL);
    pthread_mutex_init(&sys->names_lock, NULL);
    pthread_mutex_init(&sys->alive_lock, NULL);
    pthread_cond_init(&sys->alive_cond, NULL);
    pthread_mutex_init(&sys->attach_lock, NULL);
    atomic_init(&sys->next_ref, 1);
    sys->execs = calloc((size_t)sys->nexec, sizeof(*sys->execs));
    if (!sys->execs) {
        rill_system_destroy(sys);
        rill__fail(RILL_ENOMEM, errstr, errstr_size, "out of memory");
        return NULL;
    }
    for (int i = 0; i < sys->nexec; i++) {
        rill__executor_t *e = &sys->execs[i];
        e->sys = sys;
        e->index = i;
        rill__mpsc_init(&e->inbox);
        /* EVFLAG_NOSIGMASK: executors never handle signals. */
        e->loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
        if (!e->loop) {
            rill_system_destroy(sys);
            rill__fail(RILL_EIO, errstr, errstr_size, "libev could not create a loop: %s",
                       strerror(errno));
            return NULL;
        }
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
    }
    return sys;
}

int rill_system_executors(const rill_system_t *sys)
{
    return sys ? sys->nexec : 0;
}

rill_err_t rill_system_start(rill_system_t *sys)
{
    if (!sys)
        return RILL_EINVAL;
    if (rill__tls_exec)
        return RILL_ESTATE;
    int expected = SYS_NEW;
    if (!atomic_compare_exchange_strong(&sys->state, &expected, SYS_RUNNING))
        return RILL_ESTATE;
    for (int i = 0; i < sys->nexec; i++) {
        rill__executor_t *e = &sys->execs[i];
        if (pthread_create(&e->thread, NULL, executor_main, e))
            return RILL_EIO; /* rill_system_stop() joins the ones that started */
        e->thread_started = 1;
    }
    return RILL_OK;
}

static void stop_all_actors(rill_system_t *sys)
{
    pthread_mutex_lock(&sys->slots_lock);
    uint32_t used = sys->slots_used;
    pthread_mutex_unlock(&sys->slots_lock);
    for (uint32_t idx = 0; idx < used; idx++) {
        rill__slot_t *slot = rill__slot_of(sys, idx);
        if (!slot || atomic_load(&slot->state) != SLOT_ALIVE)
            continue;
        rill_aid_t aid = ((rill_aid_t)atomic_load(&slot->gen) << 32) | idx;
        rill_stop(sys, aid);
    }
}

rill_err_t rill_system_stop(rill_system_t *sys, int timeout_ms)
{
    if (!sys)
        return RILL_EINVAL;
    if (rill__tls_exec)
        return RILL_ESTATE;
    int st = atomic_load(&sys->state);
    if (st == SYS_STOPPED)
        return RILL_OK;
    if (st == SYS_NEW) {
        /* Actors spawned before start still get init and terminate. */
        rill_system_start(sys);
    }
    atomic_store(&sys->state, SYS_STOPPING);
    int64_t deadline = timeout_ms < 0 ? INT64_MAX : rill__now_ms() + timeout_ms;

    /* Actors may spawn or link others while stopping; ask again until
     * none is left. */
    pthread_mutex_lock(&sys->alive_lock);
    while (sys->alive > 0) {
        pthread_mutex_unlock(&sys->alive_lock);
        stop_all_actors(sys);
        pthread_mutex_lock(&sys->alive_lock);
        if (sys->alive == 0)
            break;
        int64_t now = rill__now_ms();
        if (now >= deadline) {
            pthread_mutex_unlock(&sys->alive_lock);
            return RILL_ETIMEDOUT;
        }
        int64_t wait_ms = deadline - now < 100 ? deadline - now : 100;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += wait_ms / 1000;
        ts.tv_nsec += (wait_ms % 1000) * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&sys->alive_cond, &sys->alive_lock, &ts);
    }
    pthread_mutex_unlock(&sys->alive_lock);

    atomic_store_explicit(&sys->state, SYS_STOPPED, memory_order_release);
    for (int i = 0; i < sys->nexec; i++) {
        rill__executor_t *e = &sys->execs[i];
        if (e->thread_started) {
            ev_async_send(e->loop, &e->wake);
            pthread_join(e->thread, NULL);
            e->thread_started = 0;
        }
    }
    return RILL_OK;
}

void rill_system_destroy(rill_system_t *sys)
{
    if (!sys)
        return;
    if (sys->execs && atomic_load(&sys->state) != SYS_STOPPED)
        rill_system_stop(sys, -1);
    if (sys->execs) {
        /* Executors are joined: nothing can look at retired actors now. */
        for (int i = 0; i < sys->nexec; i++)
            reap_all(&sys->execs[i]);
        for (int i = 0; i < sys->nexec; i++)
            if (sys->execs[i].loop)
                ev_loop_destroy(sys->execs[i].loop);
        free(sys->execs);
    }
    for (size_t i = 0; i < sizeof(sys->attach) / sizeof(sys->attach[0]); i++)
        if (sys->attach[i].key && sys->attach[i].destroy)
            sys->attach[i].destroy(sys->attach[i].ptr);
    pthread_mutex_destroy(&sys->attach_lock);
    for (uint32_t c = 0; c < RILL__MAX_CHUNKS; c++)
        free(atomic_load(&sys->chunks[c]));
    for (int h = 0; h < 256; h++)
        while (sys->names[h]) {
            rill__name_entry_t *e = sys->names[h];
            sys->names[h] = e->next;
            free(e);
        }
    pthread_mutex_destroy(&sys->slots_lock);
    pthread_mutex_destroy(&sys->names_lock);
    pthread_mutex_destroy(&sys->alive_lock);
    pthread_cond_destroy(&sys->alive_cond);
    free(sys);
}

void rill_system_stats(rill_system_t *sys, rill_system_stats_t *out)
{
    if (!out)
        return;
    memset(out, 0, sizeof(*out));
    if (!sys)
        return;
    out->dead_letters = atomic_load_explicit(&sys->dead_letters, memory_order_relaxed);
    out->spawned = atomic_load_explicit(&sys->spawned, memory_order_relaxed);
    pthread_mutex_lock(&sys->alive_lock);
    out->alive = sys->alive;
    pthread_mutex_unlock(&sys->alive_lock);
}

/* ------------------------------------------------------------------ */
/* Spawn, send, stop                                                   */
/* ------------------------------------------------------------------ */

rill__ctrl_t *rill__ctrl_new(rill__ctrl_kind_t kind, rill_aid_t who, uint64_t ref,
                             const rill_exit_t *exit)
{
    rill__ctrl_t *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->kind = kind;
    c->who = who;
    c->ref = ref;
    if (exit)
        c->exit = *exit;
    return c;
}

rill_err_t rill__ctrl_send(rill_system_t *sys, rill_aid_t to, rill__ctrl_t *c)
{
    rill__slot_t *slot;
    rill__actor_t *a = rill__actor_acquire(sys, to, &slot);
    if (!a)
        return RILL_ESTOPPED;
    rill__mpsc_push(&a->ctrl, &c->node);
    rill__schedule(a);
    rill__actor_release(slot);
    return RILL_OK;
}

void rill__release_msg(rill_system_t *sys, rill_msg_t *msg, int dead_letter)
{
    if (msg->dtor)
        msg->dtor(msg->payload);
    msg->dtor = NULL;
    if (dead_letter)
        atomic_fetch_add_explicit(&sys->dead_letters, 1, memory_order_relaxed);
}

static void actor_free(rill__actor_t *a)
{
    free(a->qs_snap);
    rill__mailbox_free(&a->mbox);
    free(a->watchers.v);
    free(a->monitors.v);
    free(a->links.v);
    free(a->name);
    free(a);
}

void rill__actor_free(rill__actor_t *a)
{
    actor_free(a);
}

void rill__actor_finished(rill__actor_t *a)
{
    rill_system_t *sys = a->sys;
    slot_free(sys, a->slot_idx);
    retire(a);
    pthread_mutex_lock(&sys->alive_lock);
    sys->alive--;
    pthread_cond_broadcast(&sys->alive_cond);
    pthread_mutex_unlock(&sys->alive_lock);
}

rill_err_t rill_spawn(rill_system_t *sys, const rill_spawn_opts_t *opts, rill_aid_t *aid)
{
    if (!sys || !opts || !aid || !opts->behavior)
        return RILL_EINVAL;
    *aid = RILL_AID_NONE;
    if (opts->executor < -1 || opts->executor >= sys->nexec)
        return RILL_EINVAL;
    if (opts->mailbox_capacity > MAX_MAILBOX)
        return RILL_EINVAL;
    if (opts->name && !*opts->name)
        return RILL_EINVAL;
    int st = atomic_load(&sys->state);
    if (st == SYS_STOPPING || st == SYS_STOPPED)
        return RILL_ESTOPPED;

    size_t size = (sizeof(rill__actor_t) + 63) & ~(size_t)63;
    rill__actor_t *a = aligned_alloc(64, size);
    if (!a)
        return RILL_ENOMEM;
    memset(a, 0, sizeof(*a));
    uint32_t cap =
        round_pow2(opts->mailbox_capacity ? opts->mailbox_capacity : sys->opts.mailbox_capacity);
    if (rill__mailbox_init(&a->mbox, cap)) {
        free(a);
        return RILL_ENOMEM;
    }
    rill__mpsc_init(&a->ctrl);
    a->sys = sys;
    int ex = opts->executor;
    if (ex < 0)
        ex = (int)(atomic_fetch_add_explicit(&sys->next_exec, 1, memory_order_relaxed) %
                   (uint32_t)sys->nexec);
    a->exec = &sys->execs[ex];
    a->behavior = opts->behavior;
    a->init = opts->init;
    a->terminate = opts->terminate;
    a->state = opts->state;
    a->batch = opts->batch ? opts->batch : sys->opts.batch;
    a->trap_exits = opts->trap_exits;
    a->ctx.actor = a;
    a->ctx.sys = sys;
    a->next_timer_id = 1;
    a->next_corr = 1;
    /* Held until the first turn: senders only queue messages meanwhile, and
     * the spawner queues the actor itself once it is fully set up. */
    atomic_init(&a->scheduled, 1);
    if (opts->name && !(a->name = strdup(opts->name))) {
        actor_free(a);
        return RILL_ENOMEM;
    }

    /* Link and monitor from the start: the new actor's side is set before
     * it can run; the peer's side travels as a control signal. */
    uint64_t mref = 0;
    if (opts->monitor_by) {
        mref = atomic_fetch_add(&sys->next_ref, 1);
        rill__peer_t p = {opts->monitor_by, mref};
        a->watchers.v = malloc(sizeof(p));
        if (!a->watchers.v) {
            actor_free(a);
            return RILL_ENOMEM;
        }
        a->watchers.v[0] = p;
        a->watchers.n = a->watchers.cap = 1;
    }
    if (opts->link_to) {
        rill__peer_t p = {opts->link_to, 0};
        a->links.v = malloc(sizeof(p));
        if (!a->links.v) {
            actor_free(a);
            return RILL_ENOMEM;
        }
        a->links.v[0] = p;
        a->links.n = a->links.cap = 1;
    }
    rill__ctrl_t *c_mon = opts->monitor_by ? rill__ctrl_new(CTRL_MONITORING, 0, mref, NULL) : NULL;
    rill__ctrl_t *c_link = opts->link_to ? rill__ctrl_new(CTRL_LINK, 0, 0, NULL) : NULL;
    if ((opts->monitor_by && !c_mon) || (opts->link_to && !c_link)) {
        free(c_mon);
        free(c_link);
        actor_free(a);
        return RILL_ENOMEM;
    }

    pthread_mutex_lock(&sys->alive_lock);
    int full = sys->alive >= sys->opts.max_actors;
    if (!full)
        sys->alive++;
    pthread_mutex_unlock(&sys->alive_lock);
    if (full) {
        free(c_mon);
        free(c_link);
        actor_free(a);
        return RILL_ENOMEM;
    }

    if (a->name) {
        pthread_mutex_lock(&sys->names_lock);
        rill_err_t err = names_add_locked(sys, a->name, RILL_AID_NONE);
        pthread_mutex_unlock(&sys->names_lock);
        if (err) {
            pthread_mutex_lock(&sys->alive_lock);
            sys->alive--;
            pthread_mutex_unlock(&sys->alive_lock);
            free(c_mon);
            free(c_link);
            actor_free(a);
            return err;
        }
    }
    uint32_t idx = slot_claim(sys, a, &a->aid);
    if (idx == UINT32_MAX) {
        rill__names_remove(sys, a->name, RILL_AID_NONE);
        pthread_mutex_lock(&sys->alive_lock);
        sys->alive--;
        pthread_mutex_unlock(&sys->alive_lock);
        free(c_mon);
        free(c_link);
        actor_free(a);
        return RILL_ENOMEM;
    }
    a->slot_idx = idx;
    if (a->name) {
        /* The name was reserved with aid 0; now it points at the actor. */
        pthread_mutex_lock(&sys->names_lock);
        for (rill__name_entry_t *e = sys->names[name_hash(a->name)]; e; e = e->next)
            if (e->aid == RILL_AID_NONE && !strcmp(e->name, a->name))
                e->aid = a->aid;
        pthread_mutex_unlock(&sys->names_lock);
    }
    atomic_fetch_add_explicit(&sys->spawned, 1, memory_order_relaxed);

    if (c_mon) {
        c_mon->who = a->aid;
        if (rill__ctrl_send(sys, opts->monitor_by, c_mon))
            free(c_mon); /* the watcher is gone: nobody to tell */
        if (opts->monitor_ref)
            *opts->monitor_ref = mref;
    }
    if (c_link) {
        c_link->who = a->aid;
        if (rill__ctrl_send(sys, opts->link_to, c_link)) {
            /* The partner is gone: the new actor learns it as an exit. */
            c_link->kind = CTRL_EXIT;
            c_link->who = opts->link_to;
            rill__exit_set(&c_link->exit, RILL_EXIT_NOPROC, RILL_OK, "no such actor");
            rill__mpsc_push(&a->ctrl, &c_link->node);
        }
    }
    *aid = a->aid;
    /* Queue the first turn (init) now that everything is in place. */
    atomic_store_explicit(&a->scheduled, 0, memory_order_seq_cst);
    rill__schedule(a);
    return RILL_OK;
}

rill_err_t rill_tell(rill_system_t *sys, rill_aid_t to, const rill_msg_t *msg)
{
    if (!sys || !msg || to == RILL_AID_NONE)
        return RILL_EINVAL;
    rill__slot_t *slot;
    rill__actor_t *a = rill__actor_acquire(sys, to, &slot);
    if (!a)
        return RILL_ESTOPPED;
    if (rill__mailbox_push(&a->mbox, msg)) {
        atomic_fetch_add_explicit(&a->refused, 1, memory_order_relaxed);
        atomic_store_explicit(&a->hwm, (uint32_t)(a->mbox.mask + 1), memory_order_relaxed);
        rill__actor_release(slot);
        return RILL_EFULL;
    }
    rill__schedule(a);
    rill__actor_release(slot);
    return RILL_OK;
}

rill_err_t rill_tell_name(rill_system_t *sys, const char *name, const rill_msg_t *msg)
{
    if (!sys || !name || !msg)
        return RILL_EINVAL;
    rill_aid_t aid = lookup_or_restarting(sys, name);
    if (aid == RILL__AID_RESTARTING)
        return RILL_ERESTARTING;
    if (!aid)
        return RILL_ESTOPPED;
    return rill_tell(sys, aid, msg);
}

rill_err_t rill_signal(rill_system_t *sys, rill_aid_t to, const rill_msg_t *msg)
{
    if (!sys || !msg || to == RILL_AID_NONE)
        return RILL_EINVAL;
    rill__ctrl_t *c = rill__ctrl_new(CTRL_MSG, 0, 0, NULL);
    if (!c)
        return RILL_ENOMEM;
    c->msg = *msg;
    rill_err_t err = rill__ctrl_send(sys, to, c);
    if (err)
        free(c);
    return err;
}

static rill_err_t send_stop(rill_system_t *sys, rill_aid_t aid, rill_exit_kind_t kind,
                            const char *why)
{
    if (!sys || aid == RILL_AID_NONE)
        return RILL_EINVAL;
    rill__ctrl_t *c = rill__ctrl_new(CTRL_STOP, 0, 0, NULL);
    if (!c)
        return RILL_ENOMEM;
    rill__exit_set(&c->exit, kind, RILL_OK, "%s", why ? why : "");
    rill_err_t err = rill__ctrl_send(sys, aid, c);
    if (err)
        free(c);
    return err;
}

rill_err_t rill__request_shutdown(rill_system_t *sys, rill_aid_t to, rill_aid_t from)
{
    if (!sys || to == RILL_AID_NONE)
        return RILL_EINVAL;
    rill__ctrl_t *c = rill__ctrl_new(CTRL_SHUTDOWN_REQ, from, 0, NULL);
    if (!c)
        return RILL_ENOMEM;
    rill__exit_set(&c->exit, RILL_EXIT_SHUTDOWN, RILL_OK, "shutdown requested");
    rill_err_t err = rill__ctrl_send(sys, to, c);
    if (err)
        free(c);
    return err;
}

void *rill__system_attachment(rill_system_t *sys, const void *key,
                              void *(*create)(char *errstr, size_t errstr_size),
                              void (*destroy)(void *ptr), char *errstr, size_t errstr_size)
{
    void *ptr = NULL;
    pthread_mutex_lock(&sys->attach_lock);
    size_t n = sizeof(sys->attach) / sizeof(sys->attach[0]), i;
    for (i = 0; i < n && sys->attach[i].key; i++)
        if (sys->attach[i].key == key) {
            ptr = sys->attach[i].ptr;
            break;
        }
    if (!ptr && i < n) {
        ptr = create(errstr, errstr_size);
        if (ptr) {
            sys->attach[i].key = key;
            sys->attach[i].ptr = ptr;
            sys->attach[i].destroy = destroy;
        }
    } else if (!ptr) {
        rill__fail(RILL_ENOMEM, errstr, errstr_size, "no room for another system attachment");
    }
    pthread_mutex_unlock(&sys->attach_lock);
    return ptr;
}

void rill__actor_set_restarts(rill_system_t *sys, rill_aid_t aid, uint32_t restarts)
{
    rill__slot_t *slot;
    rill__actor_t *a = rill__actor_acquire(sys, aid, &slot);
    if (!a)
        return;
    atomic_store_explicit(&a->restarts, restarts, memory_order_relaxed);
    rill__actor_release(slot);
}

rill_err_t rill_stop(rill_system_t *sys, rill_aid_t aid)
{
    return send_stop(sys, aid, RILL_EXIT_SHUTDOWN, "stopped");
}

rill_err_t rill_kill(rill_system_t *sys, rill_aid_t aid, const char *why)
{
    return send_stop(sys, aid, RILL_EXIT_KILLED, why ? why : "killed");
}

int rill_alive(rill_system_t *sys, rill_aid_t aid)
{
    if (!sys || aid == RILL_AID_NONE)
        return 0;
    rill__slot_t *slot = rill__slot_of(sys, (uint32_t)aid);
    if (!slot)
        return 0;
    /* Alive until stopped for good: accepting messages, or refusing them
     * already while its terminate hook runs. The state is read before the
     * generation: a slot reused in between fails the generation check. */
    uint32_t state = atomic_load_explicit(&slot->state, memory_order_seq_cst);
    return atomic_load_explicit(&slot->gen, memory_order_seq_cst) == (uint32_t)(aid >> 32) &&
           (state == SLOT_ALIVE || state == SLOT_STOPPING);
}

rill_err_t rill_actor_stats(rill_system_t *sys, rill_aid_t aid, rill_actor_stats_t *out)
{
    if (!sys || !out || aid == RILL_AID_NONE)
        return RILL_EINVAL;
    rill__slot_t *slot;
    rill__actor_t *a = rill__actor_acquire(sys, aid, &slot);
    if (!a)
        return RILL_ESTOPPED;
    memset(out, 0, sizeof(*out));
    out->processed = atomic_load_explicit(&a->processed, memory_order_relaxed);
    uint64_t depth = rill__mailbox_depth(&a->mbox);
    out->mailbox_capacity = (uint32_t)(a->mbox.mask + 1);
    out->mailbox_depth = (uint32_t)(depth > out->mailbox_capacity ? out->mailbox_capacity : depth);
    out->mailbox_hwm = atomic_load_explicit(&a->hwm, memory_order_relaxed);
    if (out->mailbox_hwm < out->mailbox_depth)
        out->mailbox_hwm = out->mailbox_depth;
    out->refused = atomic_load_explicit(&a->refused, memory_order_relaxed);
    out->restarts = atomic_load_explicit(&a->restarts, memory_order_relaxed);
    out->executor = a->exec->index;
    rill__actor_release(slot);
    return RILL_OK;
}
