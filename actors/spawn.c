/*
 * Spawning actors and reaching them by aid from any thread: spawn, tell,
 * signal, the control signals the runtime sends (stop, kill, shutdown
 * requests), the end of an actor's life, and its statistics.
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "../actors/util.h"
#include "actor_int.h"

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

void rill__release_msg_slow(rill_system_t *sys, rill_msg_t *msg, int dead_letter)
{
    if (msg->dtor)
        msg->dtor(msg->payload);
    msg->dtor = NULL;
    /* An origin nobody took was not handled: what it stands for is not
     * confirmed and comes again. */
    rill_origin_release(msg->origin);
    msg->origin = NULL;
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

void rill__actor_uncount(rill__actor_t *a)
{
    rill_system_t *sys = a->sys;
    pthread_mutex_lock(&sys->alive_lock);
    sys->alive--;
    pthread_cond_broadcast(&sys->alive_cond);
    pthread_mutex_unlock(&sys->alive_lock);
}

void rill__actor_finished(rill__actor_t *a)
{
    rill__slot_free(a->sys, a->slot_idx);
    rill__retire(a);
}

/* The first entry of an empty peer list: 0, or -1 without memory. */
static int peers_first(rill__peers_t *l, rill__peer_t p)
{
    if (!(l->v = malloc(sizeof(p))))
        return -1;
    l->v[0] = p;
    l->n = l->cap = 1;
    return 0;
}

rill_err_t rill_spawn(rill_system_t *sys, const rill_spawn_opts_t *opts, rill_aid_t *aid)
{
    return rill__spawn_tagged(sys, opts, NULL, aid);
}

rill_err_t rill__spawn_tagged(rill_system_t *sys, const rill_spawn_opts_t *opts, const void *tag,
                              rill_aid_t *aid)
{
    if (!sys || !opts || !aid || !opts->behavior)
        return RILL_EINVAL;
    *aid = RILL_AID_NONE;
    if (opts->executor < RILL_EXECUTOR_ANY || opts->executor > sys->nexec)
        return RILL_EINVAL;
    if (opts->mailbox_capacity > RILL__MAX_MAILBOX)
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
    uint32_t cap = rill__round_pow2(opts->mailbox_capacity ? opts->mailbox_capacity
                                                           : sys->opts.mailbox_capacity);
    if (rill__mailbox_init(&a->mbox, cap)) {
        free(a);
        return RILL_ENOMEM;
    }
    rill__mpsc_init(&a->ctrl);
    a->sys = sys;
    int ex = opts->executor - 1; /* RILL_EXECUTOR(i) is i + 1 */
    if (ex < 0)
        ex = (int)(atomic_fetch_add_explicit(&sys->next_exec, 1, memory_order_relaxed) %
                   (uint32_t)sys->nexec);
    a->exec = &sys->execs[ex];
    a->behavior = opts->behavior;
    atomic_init(&a->tag, tag);
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
    if (!rill_aid_is_none(opts->monitor_by))
        mref = atomic_fetch_add(&sys->next_ref, 1);
    if ((!rill_aid_is_none(opts->monitor_by) &&
         peers_first(&a->watchers, (rill__peer_t){opts->monitor_by, mref})) ||
        (!rill_aid_is_none(opts->link_to) &&
         peers_first(&a->links, (rill__peer_t){opts->link_to, 0}))) {
        actor_free(a);
        return RILL_ENOMEM;
    }
    int monitored = !rill_aid_is_none(opts->monitor_by), linked = !rill_aid_is_none(opts->link_to);
    rill__ctrl_t *c_mon =
        monitored ? rill__ctrl_new(CTRL_MONITORING, RILL_AID_NONE, mref, NULL) : NULL;
    rill__ctrl_t *c_link = linked ? rill__ctrl_new(CTRL_LINK, RILL_AID_NONE, 0, NULL) : NULL;
    if ((monitored && !c_mon) || (linked && !c_link)) {
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
        rill_err_t err = rill__names_reserve(sys, a->name);
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
    uint32_t idx = rill__slot_claim(sys, a, &a->aid);
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
    if (a->name)
        rill__names_bind(sys, a->name, a->aid);
    atomic_fetch_add_explicit(&sys->spawned, 1, memory_order_relaxed);

    if (c_mon) {
        c_mon->who = a->aid;
        if (rill__ctrl_send(sys, opts->monitor_by, c_mon))
            free(c_mon); /* the watcher is gone: nobody to tell */
        if (opts->monitor)
            opts->monitor->id = mref;
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
    if (!sys || !msg || rill_aid_is_none(to))
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

rill_err_t rill_tell_batch(rill_system_t *sys, rill_aid_t to, const rill_msg_t *msgs, size_t n,
                           size_t *sent)
{
    if (sent)
        *sent = 0;
    if (!sys || !sent || (!msgs && n) || rill_aid_is_none(to))
        return RILL_EINVAL;
    rill__slot_t *slot;
    rill__actor_t *a = rill__actor_acquire(sys, to, &slot);
    if (!a)
        return RILL_ESTOPPED;
    size_t done = 0;
    while (done < n) {
        size_t left = n - done;
        uint32_t want = left > UINT32_MAX ? UINT32_MAX : (uint32_t)left;
        uint32_t k = rill__mailbox_push_n(&a->mbox, msgs + done, want);
        done += k;
        if (k < want)
            break;
    }
    *sent = done;
    if (done)
        rill__schedule(a);
    if (done < n) {
        atomic_fetch_add_explicit(&a->refused, n - done, memory_order_relaxed);
        atomic_store_explicit(&a->hwm, (uint32_t)(a->mbox.mask + 1), memory_order_relaxed);
    }
    rill__actor_release(slot);
    return done == n ? RILL_OK : RILL_EFULL;
}

rill_err_t rill_tell_name(rill_system_t *sys, const char *name, const rill_msg_t *msg)
{
    if (!sys || !name || !msg)
        return RILL_EINVAL;
    rill_aid_t aid = rill__names_lookup(sys, name);
    if (rill_aid_eq(aid, RILL__AID_RESTARTING))
        return RILL_ERESTARTING;
    if (rill_aid_is_none(aid))
        return RILL_ESTOPPED;
    return rill_tell(sys, aid, msg);
}

rill_err_t rill_signal(rill_system_t *sys, rill_aid_t to, const rill_msg_t *msg)
{
    if (!sys || !msg || rill_aid_is_none(to))
        return RILL_EINVAL;
    rill__ctrl_t *c = rill__ctrl_new(CTRL_MSG, RILL_AID_NONE, 0, NULL);
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
    if (!sys || rill_aid_is_none(aid))
        return RILL_EINVAL;
    rill__ctrl_t *c = rill__ctrl_new(CTRL_STOP, RILL_AID_NONE, 0, NULL);
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
    if (!sys || rill_aid_is_none(to))
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

rill_err_t rill_actor_stats(rill_system_t *sys, rill_aid_t aid, rill_actor_stats_t *out)
{
    if (!sys || !out || rill_aid_is_none(aid))
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
