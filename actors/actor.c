/*
 * What runs on an actor's executor: turns (control signals first, then up
 * to `batch` mailbox messages), stopping, monitors, links, timers and ask.
 * Everything here except rill_ask_sync() runs on the actor's own executor
 * thread, so the per-actor lists need no locks.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../actors/util.h"
#include "actor_int.h"

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */
/* ------------------------------------------------------------------ */

void rill__exit_set(rill_exit_t *e, rill_exit_kind_t kind, rill_err_t code, const char *fmt, ...)
{
    e->kind = kind;
    e->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->text, sizeof(e->text), fmt, ap);
    va_end(ap);
}

int rill_exit_abnormal(const rill_exit_t *reason)
{
    if (!reason)
        return 0;
    return reason->kind == RILL_EXIT_FAILURE || reason->kind == RILL_EXIT_KILLED ||
           reason->kind == RILL_EXIT_LINKED;
}

const char *rill_exit_kind_name(rill_exit_kind_t kind)
{
    switch (kind) {
    case RILL_EXIT_NORMAL:
        return "normal";
    case RILL_EXIT_SHUTDOWN:
        return "shutdown";
    case RILL_EXIT_FAILURE:
        return "failure";
    case RILL_EXIT_KILLED:
        return "killed";
    case RILL_EXIT_LINKED:
        return "linked";
    case RILL_EXIT_NOPROC:
        return "noproc";
    }
    return "?";
}

void *rill_msg_take(rill_msg_t *msg)
{
    if (!msg)
        return NULL;
    msg->dtor = NULL;
    return msg->payload;
}

static int peers_add(rill__peers_t *p, rill_aid_t aid, uint64_t ref)
{
    if (p->n == p->cap) {
        uint32_t cap = p->cap ? p->cap * 2 : 4;
        rill__peer_t *v = realloc(p->v, cap * sizeof(*v));
        if (!v)
            return -1;
        p->v = v;
        p->cap = cap;
    }
    p->v[p->n++] = (rill__peer_t){aid, ref};
    return 0;
}

/* Index of the entry matching aid (ref 0) or ref (aid 0), or -1. */
static int peers_find(const rill__peers_t *p, rill_aid_t aid, uint64_t ref)
{
    for (uint32_t i = 0; i < p->n; i++)
        if ((ref && p->v[i].ref == ref) || (!ref && rill_aid_eq(p->v[i].aid, aid)))
            return (int)i;
    return -1;
}

static void peers_remove_at(rill__peers_t *p, int i)
{
    p->v[i] = p->v[--p->n];
}

static void stop_with(rill__actor_t *a, rill_exit_kind_t kind, rill_err_t code, const char *text)
{
    if (a->stopping)
        return;
    a->stopping = 1;
    rill__exit_set(&a->exit, kind, code, "%s", text ? text : "");
}

/* Push a control node to the actor itself (we run on its executor). */
static void ctrl_self(rill__actor_t *a, rill__ctrl_t *c)
{
    rill__mpsc_push(&a->ctrl, &c->node);
    rill__schedule(a);
}

/* ------------------------------------------------------------------ */
/* Delivery                                                            */
/* ------------------------------------------------------------------ */

/* The message actor_turn took from the mailbox and has not delivered yet
 * comes before everything still in the mailbox. */
static int take_held(rill__actor_t *a, rill_msg_t *m)
{
    if (!a->has_held)
        return 0;
    *m = a->held;
    a->has_held = 0;
    return 1;
}

static void call_behavior(rill__actor_t *a, rill_msg_t *m)
{
    rill_err_t rc = a->behavior(&a->ctx, a->state, m);
    if (rc != RILL_OK && a->exit.kind != RILL_EXIT_FAILURE) {
        a->stopping = 0; /* a failure overrides a requested normal stop */
        char text[80];
        snprintf(text, sizeof(text), "behaviour returned %s", rill_err_name(rc));
        stop_with(a, RILL_EXIT_FAILURE, rc, text);
    }
    rill__release_msg(a->sys, m, 0);
}

static rill__ask_t *ask_find(rill__actor_t *a, uint64_t corr, rill__ask_t ***prevp)
{
    for (rill__ask_t **pp = &a->asks; *pp; pp = &(*pp)->next)
        if ((*pp)->corr == corr) {
            *prevp = pp;
            return *pp;
        }
    return NULL;
}

static void deliver(rill__actor_t *a, rill_msg_t *m)
{
    if ((m->flags & RILL__MSG_F_REPLY) && m->corr && !(m->corr & RILL__CORR_SYNC)) {
        rill__ask_t **pp;
        rill__ask_t *ask = m->corr ? ask_find(a, m->corr, &pp) : NULL;
        if (!ask) {
            /* A late reply (its ask timed out) or a stray one. */
            rill__release_msg(a->sys, m, 1);
            return;
        }
        *pp = ask->next;
        ev_timer_stop(a->exec->loop, &ask->w);
        if (ask->queued)
            ask->done = 1; /* the queued timeout node frees it */
        else
            free(ask);
    }
    m->flags &= ~RILL__MSG_F_REPLY;
    call_behavior(a, m);
}

static void deliver_peer_msg(rill__actor_t *a, uint32_t type, rill_aid_t who, uint64_t ref,
                             const rill_exit_t *exit)
{
    rill_down_t *d = malloc(sizeof(*d));
    if (!d) {
        /* Out of memory: the notice cannot be delivered; failing loudly is
         * better than pretending the peer is alive. */
        stop_with(a, RILL_EXIT_FAILURE, RILL_ENOMEM, "out of memory delivering DOWN/EXIT");
        return;
    }
    d->actor = who;
    d->monitor.id = type == RILL_MSG_DOWN ? ref : 0;
    d->reason = *exit;
    rill_msg_t m = {.type = type, .payload = d, .dtor = free, .from = who, .arg = ref};
    call_behavior(a, &m);
}

/* ------------------------------------------------------------------ */
/* Timers and asks (libev callbacks on the executor thread)            */
/* ------------------------------------------------------------------ */

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    rill__timer_t *t = w->data;
    if (t->queued)
        return; /* the previous tick is still queued: skip this one */
    t->queued = 1;
    ctrl_self(t->actor, &t->ctrl);
}

static void ask_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    rill__ask_t *ask = w->data;
    ask->queued = 1;
    ctrl_self(ask->actor, &ask->ctrl);
}

static void timer_unlink(rill__actor_t *a, rill__timer_t *t)
{
    for (rill__timer_t **pp = &a->timers; *pp; pp = &(*pp)->next)
        if (*pp == t) {
            *pp = t->next;
            return;
        }
}

/* Stop a timer for good: its payload is released now; the struct goes now
 * or, if its tick is queued, when that comes out of the queue. */
static void timer_discard(rill__actor_t *a, rill__timer_t *t)
{
    ev_timer_stop(a->exec->loop, &t->w);
    rill__release_msg(a->sys, &t->ctrl.msg, 0);
    if (t->queued)
        t->cancelled = 1;
    else
        free(t);
}

/* ------------------------------------------------------------------ */
/* Control signals                                                     */
/* ------------------------------------------------------------------ */

static void handle_ctrl(rill__actor_t *a, rill__ctrl_t *c)
{
    int i;
    switch (c->kind) {
    case CTRL_MSG:
        deliver(a, &c->msg);
        break;
    case CTRL_STOP:
        stop_with(a, c->exit.kind, c->exit.code, c->exit.text);
        break;
    case CTRL_SHUTDOWN_REQ:
        if (a->trap_exits)
            deliver_peer_msg(a, RILL_MSG_EXIT, c->who, 0, &c->exit);
        else
            stop_with(a, c->exit.kind, c->exit.code, c->exit.text);
        break;
    case CTRL_MONITOR:
        if (peers_add(&a->watchers, c->who, c->ref))
            stop_with(a, RILL_EXIT_FAILURE, RILL_ENOMEM, "out of memory adding a monitor");
        break;
    case CTRL_DEMONITOR:
        if ((i = peers_find(&a->watchers, RILL_AID_NONE, c->ref)) >= 0)
            peers_remove_at(&a->watchers, i);
        break;
    case CTRL_MONITORING:
        if (peers_add(&a->monitors, c->who, c->ref))
            stop_with(a, RILL_EXIT_FAILURE, RILL_ENOMEM, "out of memory adding a monitor");
        break;
    case CTRL_LINK:
        if (peers_find(&a->links, c->who, 0) < 0 && peers_add(&a->links, c->who, 0))
            stop_with(a, RILL_EXIT_FAILURE, RILL_ENOMEM, "out of memory adding a link");
        break;
    case CTRL_UNLINK:
        if ((i = peers_find(&a->links, c->who, 0)) >= 0)
            peers_remove_at(&a->links, i);
        break;
    case CTRL_DOWN:
        /* Exactly once: only while the monitor is still ours. */
        if ((i = peers_find(&a->monitors, RILL_AID_NONE, c->ref)) >= 0) {
            peers_remove_at(&a->monitors, i);
            deliver_peer_msg(a, RILL_MSG_DOWN, c->who, c->ref, &c->exit);
        }
        break;
    case CTRL_EXIT:
        if ((i = peers_find(&a->links, c->who, 0)) >= 0) {
            peers_remove_at(&a->links, i);
            if (a->trap_exits) {
                deliver_peer_msg(a, RILL_MSG_EXIT, c->who, 0, &c->exit);
            } else if (rill_exit_abnormal(&c->exit)) {
                char text[sizeof(a->exit.text)];
                snprintf(text, sizeof(text), "linked actor %#llx exited: %s",
                         (unsigned long long)c->who.id, rill_exit_kind_name(c->exit.kind));
                stop_with(a, RILL_EXIT_LINKED, RILL_OK, text);
            }
        }
        break;
    case CTRL_TIMER: {
        rill__timer_t *t = (rill__timer_t *)((char *)c - offsetof(rill__timer_t, ctrl));
        t->queued = 0;
        if (t->cancelled) {
            free(t);
        } else if (t->repeating) {
            rill_msg_t m = t->ctrl.msg;
            m.dtor = NULL; /* lent: the timer keeps the payload */
            call_behavior(a, &m);
        } else {
            timer_unlink(a, t);
            rill_msg_t m = t->ctrl.msg;
            free(t);
            call_behavior(a, &m); /* the payload is the handler's now */
        }
        return; /* embedded node: already handled */
    }
    case CTRL_ASK_TIMEOUT: {
        rill__ask_t *ask = (rill__ask_t *)((char *)c - offsetof(rill__ask_t, ctrl));
        ask->queued = 0;
        if (ask->done) {
            free(ask);
        } else {
            rill__ask_t **pp;
            if (ask_find(a, ask->corr, &pp))
                *pp = ask->next;
            rill_msg_t m = {.type = RILL_MSG_ASK_TIMEOUT, .corr = ask->corr, .arg = ask->corr};
            free(ask);
            call_behavior(a, &m);
        }
        return;
    }
    }
    free(c);
}

/* ------------------------------------------------------------------ */
/* Stopping                                                            */
/* ------------------------------------------------------------------ */

static void notify(rill__actor_t *a, rill_aid_t to, rill__ctrl_kind_t kind, uint64_t ref)
{
    rill__ctrl_t *c = rill__ctrl_new(kind, a->aid, ref, &a->exit);
    if (c && rill__ctrl_send(a->sys, to, c))
        free(c);
}

/* Final drain of the control queue: answer what asked about us, release
 * what carried payloads. */
static void drain_ctrl_final(rill__actor_t *a)
{
    /* No producer is inside (the slot is DEAD and its users drained), so
     * the queue cannot be caught between a push's two steps. */
    rill__node_t *node;
    while ((node = rill__mpsc_pop(&a->ctrl))) {
        rill__ctrl_t *c = (rill__ctrl_t *)node;
        switch (c->kind) {
        case CTRL_MSG:
            rill__release_msg(a->sys, &c->msg, 1);
            break;
        case CTRL_MONITOR:
            notify(a, c->who, CTRL_DOWN, c->ref);
            break;
        case CTRL_LINK:
            notify(a, c->who, CTRL_EXIT, 0);
            break;
        case CTRL_TIMER: {
            rill__timer_t *t = (rill__timer_t *)((char *)c - offsetof(rill__timer_t, ctrl));
            free(t); /* its payload was released when timers were discarded */
            continue;
        }
        case CTRL_ASK_TIMEOUT:
            free((char *)c - offsetof(rill__ask_t, ctrl));
            continue;
        default:
            break;
        }
        free(c);
    }
}

static void finish_stop(rill__actor_t *a)
{
    rill_system_t *sys = a->sys;
    rill__slot_t *slot = rill__slot_of(sys, a->slot_idx);
    /* From here on sends fail; wait for non-executor senders already
     * inside. (Executor senders that got past the flag are handled when
     * the memory is reaped.) */
    atomic_store_explicit(&a->dead, 1, memory_order_seq_cst);
    atomic_store_explicit(&slot->state, SLOT_STOPPING, memory_order_seq_cst);
    while (atomic_load_explicit(&slot->users, memory_order_acquire))
        ;
    rill__names_remove(sys, a->name, a->aid);

    if (a->terminate)
        a->terminate(&a->ctx, a->state, &a->exit);

    while (a->timers) {
        rill__timer_t *t = a->timers;
        a->timers = t->next;
        timer_discard(a, t);
    }
    while (a->asks) {
        rill__ask_t *ask = a->asks;
        a->asks = ask->next;
        ev_timer_stop(a->exec->loop, &ask->w);
        if (ask->queued)
            ask->done = 1;
        else
            free(ask);
    }
    drain_ctrl_final(a);
    rill_msg_t m;
    while (take_held(a, &m) || rill__mailbox_pop(&a->mbox, &m))
        rill__release_msg(sys, &m, 1);
    /* Settle notices made by the terminate hook (a final flush, a drain)
     * and by releasing what was left in the queues go out before the
     * watchers and links hear of the end: whoever acts on that end already
     * finds them in the source's mailbox. */
    rill__settle_flush(a->exec->settle);

    /* rill_alive says 0 from here, and rill_system_stats no longer counts
     * it: the terminate hook has returned. Before the watchers and links
     * hear of the end, so whoever heard it finds the actor gone. (A system
     * stop that sees the count reach 0 joins this executor, so the
     * notifications below still finish.) */
    atomic_store_explicit(&slot->state, SLOT_DEAD, memory_order_seq_cst);
    rill__actor_uncount(a);
    for (uint32_t i = 0; i < a->watchers.n; i++)
        notify(a, a->watchers.v[i].aid, CTRL_DOWN, a->watchers.v[i].ref);
    for (uint32_t i = 0; i < a->links.n; i++)
        notify(a, a->links.v[i].aid, CTRL_EXIT, 0);
    for (uint32_t i = 0; i < a->monitors.n; i++)
        notify(a, a->monitors.v[i].aid, CTRL_DEMONITOR, a->monitors.v[i].ref);
    rill__actor_finished(a);
}

void rill__actor_reap(rill__actor_t *a)
{
    /* Stragglers: executor-thread sends that passed the dead check before
     * it was set. Answer monitor and link requests, release payloads. */
    drain_ctrl_final(a);
    rill_msg_t m;
    while (rill__mailbox_pop(&a->mbox, &m))
        rill__release_msg(a->sys, &m, 1);
    rill__actor_free(a);
}

/* ------------------------------------------------------------------ */
/* A turn                                                              */
/* ------------------------------------------------------------------ */

static int actor_turn(rill__actor_t *a);

/* A control signal is on its way (a producer is between its two push
 * steps) while the turn holds a message: wait it out, so that a signal
 * sent before the message still goes first. Rare, so out of line: inlined
 * into the turn's loop it cost stream_map3 ~10% (9.7 M vs 10.6 M elems/s,
 * SCHED_FIFO, medians of 9). */
static __attribute__((noinline, cold)) rill__node_t *ctrl_pop_settled(rill__actor_t *a)
{
    return rill__mpsc_pop_settled(&a->ctrl);
}

int rill__actor_turn(rill__actor_t *a)
{
    rill__executor_t *e = a->exec;
    int r = actor_turn(a);
    /* One message per source for the origins the turn settled. */
    rill__settle_flush(e->settle);
    return r;
}

static int actor_turn(rill__actor_t *a)
{
    if (!a->started) {
        a->started = 1;
        if (a->init) {
            rill_err_t rc = a->init(&a->ctx, a->state);
            if (rc != RILL_OK && a->exit.kind != RILL_EXIT_FAILURE) {
                a->stopping = 0;
                char text[80];
                snprintf(text, sizeof(text), "init returned %s", rill_err_name(rc));
                stop_with(a, RILL_EXIT_FAILURE, rc, text);
            }
        }
        if (a->stopping) {
            finish_stop(a);
            return -1;
        }
    }
    /* Sample the depth for the high-water mark every 64th turn only:
     * reading the tail pulls its cache line away from the senders. */
    if ((a->turns++ & 63) == 0) {
        uint64_t depth = rill__mailbox_depth(&a->mbox);
        if (depth > atomic_load_explicit(&a->hwm, memory_order_relaxed))
            atomic_store_explicit(&a->hwm, (uint32_t)depth, memory_order_relaxed);
    }

    /* Control signals go first at every message boundary, so a stop or a
     * kill takes effect after the message being handled, not after the
     * batch. The message is taken first and the control queue looked at
     * after: a signal sent before that message (by its sender, or by
     * anyone before the sender sent it) is then in the queue, and is
     * handled before the message (on_subscribe before the first next).
     * Looking the other way round leaves a window in which both arrive and
     * the message overtakes the signal. */
    uint32_t n = 0, batch = a->batch;
    rill_msg_t m;
    while (n < batch && !a->stopping) {
        /* The message stays in m (no copy) unless a signal goes first. */
        int have = take_held(a, &m) || rill__mailbox_pop(&a->mbox, &m);
        rill__node_t *node = rill__mpsc_pop(&a->ctrl);
        if (!node && have && rill__mpsc_maybe_nonempty(&a->ctrl))
            node = ctrl_pop_settled(a);
        if (node) {
            if (have) {
                a->held = m;
                a->has_held = 1;
            }
            handle_ctrl(a, (rill__ctrl_t *)node);
        } else if (have) {
            deliver(a, &m);
        } else {
            break;
        }
        n++;
    }
    atomic_store_explicit(&a->processed,
                          atomic_load_explicit(&a->processed, memory_order_relaxed) + n,
                          memory_order_relaxed);
    if (a->stopping) {
        finish_stop(a);
        return -1;
    }
    /* An actor that just had work is likely to get more: keep it queued
     * for one more (cheap) look instead of paying to unschedule and be
     * rescheduled by the next sender. Only an empty turn unschedules. */
    return n > 0;
}

/* ------------------------------------------------------------------ */
/* Actor-context API                                                   */
/* ------------------------------------------------------------------ */

void rill__ctx_drain_mailbox(rill_ctx_t *ctx, void (*fn)(void *opaque, rill_msg_t *m), void *opaque)
{
    rill__actor_t *a = ctx->actor;
    rill_msg_t m;
    while (take_held(a, &m) || rill__mailbox_pop(&a->mbox, &m)) {
        fn(opaque, &m);
        rill__release_msg(a->sys, &m, 0);
    }
}

rill_err_t rill__actor_tag(rill_system_t *sys, rill_aid_t aid, const void **tag)
{
    *tag = NULL;
    if (!sys || rill_aid_is_none(aid))
        return RILL_EINVAL;
    rill__slot_t *slot;
    rill__actor_t *a = rill__actor_acquire(sys, aid, &slot);
    if (!a)
        return RILL_ESTOPPED;
    /* Set before the actor was published: any order does. */
    *tag = atomic_load_explicit(&a->tag, memory_order_relaxed);
    rill__actor_release(slot);
    return RILL_OK;
}

struct ev_loop *rill__ctx_loop(rill_ctx_t *ctx)
{
    return ctx->actor->exec->loop;
}

rill_aid_t rill_self(const rill_ctx_t *ctx)
{
    return ctx ? ctx->actor->aid : RILL_AID_NONE;
}

rill_system_t *rill_ctx_system(const rill_ctx_t *ctx)
{
    return ctx ? ctx->sys : NULL;
}

int rill_ctx_executor(const rill_ctx_t *ctx)
{
    return ctx ? ctx->actor->exec->index : -1;
}

rill_err_t rill_send(rill_ctx_t *ctx, rill_aid_t to, const rill_msg_t *msg)
{
    if (!ctx || !msg)
        return RILL_EINVAL;
    rill_msg_t m = *msg;
    m.from = ctx->actor->aid;
    return rill_tell(ctx->sys, to, &m);
}

void rill_stop_self(rill_ctx_t *ctx)
{
    if (ctx)
        stop_with(ctx->actor, RILL_EXIT_NORMAL, RILL_OK, "stopped itself");
}

rill_err_t rill_fail(rill_ctx_t *ctx, rill_err_t code, const char *fmt, ...)
{
    if (!ctx)
        return code;
    rill__actor_t *a = ctx->actor;
    if (a->exit.kind == RILL_EXIT_FAILURE && a->stopping)
        return code; /* the first failure wins */
    a->stopping = 1;
    a->exit.kind = RILL_EXIT_FAILURE;
    a->exit.code = code;
    a->exit.text[0] = '\0';
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(a->exit.text, sizeof(a->exit.text), fmt, ap);
        va_end(ap);
    }
    return code;
}

rill_err_t rill_monitor(rill_ctx_t *ctx, rill_aid_t target, rill_monitor_t *monitor)
{
    if (!ctx || rill_aid_is_none(target))
        return RILL_EINVAL;
    rill__actor_t *a = ctx->actor;
    uint64_t r = atomic_fetch_add(&a->sys->next_ref, 1);
    rill__ctrl_t *c = rill__ctrl_new(CTRL_MONITOR, a->aid, r, NULL);
    if (!c || peers_add(&a->monitors, target, r)) {
        free(c);
        return RILL_ENOMEM;
    }
    if (rill__ctrl_send(a->sys, target, c)) {
        /* Already gone: DOWN with NOPROC, delivered like any other. */
        c->kind = CTRL_DOWN;
        c->who = target;
        rill__exit_set(&c->exit, RILL_EXIT_NOPROC, RILL_OK, "no such actor");
        ctrl_self(a, c);
    }
    if (monitor)
        monitor->id = r;
    return RILL_OK;
}

rill_err_t rill_demonitor(rill_ctx_t *ctx, rill_monitor_t monitor)
{
    uint64_t ref = monitor.id;
    if (!ctx || !ref)
        return RILL_EINVAL;
    rill__actor_t *a = ctx->actor;
    int i = peers_find(&a->monitors, RILL_AID_NONE, ref);
    if (i < 0)
        return RILL_ENOENT;
    rill_aid_t target = a->monitors.v[i].aid;
    peers_remove_at(&a->monitors, i);
    rill__ctrl_t *c = rill__ctrl_new(CTRL_DEMONITOR, a->aid, ref, NULL);
    if (c && rill__ctrl_send(a->sys, target, c))
        free(c);
    return RILL_OK;
}

rill_err_t rill_link(rill_ctx_t *ctx, rill_aid_t target)
{
    if (!ctx || rill_aid_is_none(target))
        return RILL_EINVAL;
    rill__actor_t *a = ctx->actor;
    if (rill_aid_eq(target, a->aid) || peers_find(&a->links, target, 0) >= 0)
        return RILL_OK;
    rill__ctrl_t *c = rill__ctrl_new(CTRL_LINK, a->aid, 0, NULL);
    if (!c || peers_add(&a->links, target, 0)) {
        free(c);
        return RILL_ENOMEM;
    }
    if (rill__ctrl_send(a->sys, target, c)) {
        c->kind = CTRL_EXIT;
        c->who = target;
        rill__exit_set(&c->exit, RILL_EXIT_NOPROC, RILL_OK, "no such actor");
        ctrl_self(a, c);
    }
    return RILL_OK;
}

rill_err_t rill_unlink(rill_ctx_t *ctx, rill_aid_t target)
{
    if (!ctx || rill_aid_is_none(target))
        return RILL_EINVAL;
    rill__actor_t *a = ctx->actor;
    int i = peers_find(&a->links, target, 0);
    if (i < 0)
        return RILL_ENOENT;
    peers_remove_at(&a->links, i);
    rill__ctrl_t *c = rill__ctrl_new(CTRL_UNLINK, a->aid, 0, NULL);
    if (c && rill__ctrl_send(a->sys, target, c))
        free(c);
    return RILL_OK;
}

rill_err_t rill_timer_start(rill_ctx_t *ctx, uint64_t after_ms, uint64_t repeat_ms,
                            const rill_msg_t *msg, rill_timer_t *timer)
{
    if (!ctx || !msg)
        return RILL_EINVAL;
    rill__actor_t *a = ctx->actor;
    rill__timer_t *t = calloc(1, sizeof(*t));
    if (!t)
        return RILL_ENOMEM;
    t->actor = a;
    t->id = a->next_timer_id++;
    t->repeating = repeat_ms > 0;
    t->ctrl.kind = CTRL_TIMER;
    t->ctrl.embedded = 1;
    t->ctrl.msg = *msg;
    t->ctrl.msg.from = a->aid;
    /* The loop's cached time may lag while actors run: refresh it so the
     * delay counts from now. */
    ev_now_update(a->exec->loop);
    ev_timer_init(&t->w, timer_cb, (double)after_ms / 1e3, (double)repeat_ms / 1e3);
    t->w.data = t;
    ev_timer_start(a->exec->loop, &t->w);
    t->next = a->timers;
    a->timers = t;
    if (timer)
        timer->id = t->id;
    return RILL_OK;
}

rill_err_t rill_timer_cancel(rill_ctx_t *ctx, rill_timer_t timer)
{
    if (!ctx)
        return RILL_EINVAL;
    rill__actor_t *a = ctx->actor;
    for (rill__timer_t *t = a->timers; t; t = t->next)
        if (t->id == timer.id) {
            timer_unlink(a, t);
            timer_discard(a, t);
            return RILL_OK;
        }
    return RILL_ENOENT;
}

rill_err_t rill_ask(rill_ctx_t *ctx, rill_aid_t to, const rill_msg_t *request, int timeout_ms,
                    uint64_t *corr)
{
    if (!ctx || !request || rill_aid_is_none(to) || timeout_ms < 0)
        return RILL_EINVAL;
    rill__actor_t *a = ctx->actor;
    rill__ask_t *ask = calloc(1, sizeof(*ask));
    if (!ask)
        return RILL_ENOMEM;
    rill_msg_t m = *request;
    m.from = a->aid;
    m.corr = a->next_corr++;
    m.flags &= ~RILL__MSG_F_REPLY;
    rill_err_t err = rill_tell(a->sys, to, &m);
    if (err) {
        free(ask);
        return err;
    }
    ask->actor = a;
    ask->corr = m.corr;
    ask->ctrl.kind = CTRL_ASK_TIMEOUT;
    ask->ctrl.embedded = 1;
    ev_now_update(a->exec->loop);
    ev_timer_init(&ask->w, ask_cb, (double)timeout_ms / 1e3, 0.);
    ask->w.data = ask;
    ev_timer_start(a->exec->loop, &ask->w);
    ask->next = a->asks;
    a->asks = ask;
    if (corr)
        *corr = m.corr;
    return RILL_OK;
}

rill_err_t rill_reply(rill_ctx_t *ctx, const rill_msg_t *request, const rill_msg_t *reply)
{
    if (!ctx || !request || !reply || rill_aid_is_none(request->from))
        return RILL_EINVAL;
    rill_msg_t m = *reply;
    m.from = ctx->actor->aid;
    m.corr = request->corr;
    m.flags |= RILL__MSG_F_REPLY;
    return rill_tell(ctx->sys, request->from, &m);
}
