/*
 * Supervisors (see include/rill/supervisor.h for the semantics).
 *
 * A supervisor is an actor that traps exits and links every child at
 * spawn time (spawn opts link_to), so it hears of each child's exit as a
 * RILL_MSG_EXIT with the reason, and children that do not trap exits die
 * with it if it is killed. All its state lives on its own executor; other
 * threads talk to it by ask (start a child, stop, snapshot).
 *
 * Stopping children is asynchronous: a supervisor that must stop a group
 * (one_for_all, rest_for_one, shutdown, escalation) stops them one at a
 * time in reverse start order, each by its shutdown spec, and moves on when
 * that child's EXIT arrives.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sup_int.h"

/* ------------------------------------------------------------------ */
/* Helpers                                                             */
/* ------------------------------------------------------------------ */

static rill__sup_child_t *child_by_aid(rill__sup_t *s, rill_aid_t aid, size_t *idx)
{
    for (size_t i = 0; i < s->n; i++)
        if (rill_aid_eq(s->c[i].aid, aid) && !rill_aid_is_none(aid)) {
            if (idx)
                *idx = i;
            return &s->c[i];
        }
    return NULL;
}

static void cancel_timer(rill__sup_t *s, rill_ctx_t *ctx, rill__sup_child_t *c)
{
    (void)s;
    if (c->timer_armed) {
        rill_timer_cancel(ctx, c->timer);
        c->timer_armed = 0;
    }
}

static void reply_status(rill_ctx_t *ctx, const rill_msg_t *req, rill_err_t err, uint64_t value)
{
    rill_msg_t r = {.type = RILL__SUP_REPLY_STATUS, .flags = (uint32_t)err, .arg = value};
    rill_reply(ctx, req, &r);
}

static void begin_shutdown(rill__sup_t *s, rill_ctx_t *ctx, int escalate, const rill_exit_t *why);
static void boot_failed(rill__sup_t *s, rill_ctx_t *ctx, rill_err_t err, const char *id,
                        const char *why_text);

/* Start one child. Returns RILL_OK or the error (the child stays
 * stopped). */
static rill_err_t child_start(rill__sup_t *s, rill_ctx_t *ctx, rill__sup_child_t *c)
{
    const rill_child_spec_t *sp = c->spec;
    rill_err_t err;
    char reason[100] = "";
    /* A restarting hold on the name stays until the spawn takes it over,
     * so senders see RILL_ERESTARTING up to the last moment. */
    if (sp->supervisor) {
        err = rill__sup_spawn(s->sys, sp->supervisor, sp->register_name ? c->id : NULL, s->self,
                              NULL, &c->aid);
    } else if (sp->spawn) {
        rill_child_env_t env = {.supervisor = s->self, .name = sp->register_name ? c->id : NULL};
        err = sp->spawn(s->sys, c->arg, &env, &c->aid, reason, sizeof(reason));
    } else {
        rill_spawn_opts_t o = {0};
        err = sp->start(c->arg, &o);
        if (!err) {
            o.name = sp->register_name ? c->id : NULL;
            o.link_to = s->self;
            o.monitor_by = RILL_AID_NONE;
            o.monitor = NULL;
            err = rill_spawn(s->sys, &o, &c->aid);
            if (err && o.terminate) {
                /* The child never ran: give its state back through its own
                 * terminate hook, with the reason. */
                rill_exit_t why;
                rill__exit_set(&why, RILL_EXIT_FAILURE, err, "spawn failed: %s", rill_err2str(err));
                o.terminate(ctx, o.state, &why);
            }
        }
    }
    c->gen++;
    if (err) {
        if (sp->register_name)
            rill__names_release_restarting(s->sys, c->id);
        c->aid = RILL_AID_NONE;
        c->state = C_STOPPED;
        rill__exit_set(&c->last_exit, RILL_EXIT_FAILURE, err, "start failed: %s",
                       reason[0] ? reason : rill_err2str(err));
        return err;
    }
    c->state = C_RUNNING;
    c->started_ms = rill__now_ms();
    if (c->restarts)
        rill__actor_set_restarts(s->sys, c->aid, c->restarts);
    return RILL_OK;
}

/* Ask a running child to stop by its shutdown spec. */
static void child_stop(rill__sup_t *s, rill_ctx_t *ctx, rill__sup_child_t *c)
{
    if (c->state == C_WAITING) {
        cancel_timer(s, ctx, c);
        if (c->spec->register_name)
            rill__names_release_restarting(s->sys, c->id);
        c->state = C_STOPPED;
        return;
    }
    if (c->state != C_RUNNING)
        return;
    c->state = C_STOPPING;
    c->gen++;
    const rill_child_spec_t *sp = c->spec;
    if (sp->shutdown == RILL_SHUTDOWN_BRUTAL) {
        rill_kill(s->sys, c->aid, "brutal shutdown by its supervisor");
        return;
    }
    rill__request_shutdown(s->sys, c->aid, s->self);
    if (sp->shutdown == RILL_SHUTDOWN_TIMEOUT) {
        uint32_t ms = rill__sup_shutdown_ms(sp);
        rill_msg_t t = {.type = RILL__SUP_KILL_TIMER, .arg = c->gen};
        if (rill_timer_start(ctx, ms, 0, &t, &c->timer) == RILL_OK)
            c->timer_armed = 1;
    }
}

/* Stop the next running/stopping child from the end; returns 1 if one is
 * still on its way down (wait for its EXIT), 0 if none is left. */
static int stop_next_from_end(rill__sup_t *s, rill_ctx_t *ctx, int only_group)
{
    for (size_t k = s->n; k-- > 0;) {
        rill__sup_child_t *c = &s->c[k];
        if (only_group && !c->in_group)
            continue;
        if (c->state == C_STOPPING)
            return 1;
        if (c->state == C_RUNNING || c->state == C_WAITING) {
            child_stop(s, ctx, c);
            if (c->state == C_STOPPING)
                return 1;
        }
    }
    return 0;
}

static void remove_child(rill__sup_t *s, size_t i)
{
    memmove(&s->c[i], &s->c[i + 1], (s->n - i - 1) * sizeof(*s->c));
    s->n--;
}

/* Children marked for removal and stopped: drop them. */
static void sweep_removed(rill__sup_t *s)
{
    for (size_t i = s->n; i-- > 0;)
        if (s->c[i].remove_on_stop && s->c[i].state == C_STOPPED)
            remove_child(s, i);
}

static void boot_done(rill__sup_t *s, rill_err_t err, const char *text)
{
    s->booting = 0;
    if (!rill_aid_is_none(s->parent)) {
        /* A nested supervisor's start is part of its parent's: tell it. */
        rill_msg_t m = {.type = RILL__SUP_BOOTED, .from = s->self, .flags = (uint32_t)err};
        rill_tell(s->sys, s->parent, &m);
        s->parent = RILL_AID_NONE;
    }
    rill__sup_boot_t *b = s->boot;
    if (!b)
        return;
    s->boot = NULL;
    pthread_mutex_lock(&b->lock);
    b->err = err;
    snprintf(b->text, sizeof(b->text), "%.250s", text ? text : "");
    b->done = 1;
    pthread_cond_signal(&b->cond);
    pthread_mutex_unlock(&b->lock);
}

/* ------------------------------------------------------------------ */
/* Restarts                                                            */
/* ------------------------------------------------------------------ */

static void begin_shutdown(rill__sup_t *s, rill_ctx_t *ctx, int escalate, const rill_exit_t *why);

static void start_or_wait(rill__sup_t *s, rill_ctx_t *ctx, rill__sup_child_t *c, uint32_t delay_ms)
{
    c->next_delay_ms = delay_ms;
    if (delay_ms == 0) {
        if (child_start(s, ctx, c) != RILL_OK) {
            /* A failed restart counts as one more restart. */
            if (!rill__sup_intensity_ok(s)) {
                begin_shutdown(s, ctx, 1, &c->last_exit);
                return;
            }
            c->consecutive++;
            c->restarts++;
            uint32_t d = rill__sup_backoff_delay(s, c);
            start_or_wait(s, ctx, c, d ? d : 1);
        }
        return;
    }
    c->state = C_WAITING;
    c->gen++;
    if (c->spec->register_name)
        rill__names_hold_restarting(s->sys, c->id);
    rill_msg_t t = {.type = RILL__SUP_BACKOFF, .arg = c->gen};
    if (rill_timer_start(ctx, delay_ms, 0, &t, &c->timer) == RILL_OK)
        c->timer_armed = 1;
}

/* All of the group is down: start it again, in order. */
static void group_restart(rill__sup_t *s, rill_ctx_t *ctx)
{
    s->phase = P_RUNNING;
    sweep_removed(s);
    for (size_t i = 0; i < s->n; i++) {
        rill__sup_child_t *c = &s->c[i];
        if (!c->in_group)
            continue;
        c->in_group = 0;
        if (c->state != C_STOPPED)
            continue;
        start_or_wait(s, ctx, c, s->group_delay_ms);
        if (s->phase == P_SHUTDOWN)
            return;
    }
}

/* A significant child ended for good: does the supervisor's auto_shutdown
 * end the supervisor now? */
static int significant_ended(rill__sup_t *s, const rill__sup_child_t *ended)
{
    if (s->spec->auto_shutdown == RILL_AUTO_SHUTDOWN_ANY)
        return 1;
    if (s->spec->auto_shutdown != RILL_AUTO_SHUTDOWN_ALL)
        return 0;
    for (size_t k = 0; k < s->n; k++)
        if (&s->c[k] != ended && s->c[k].spec->significant && s->c[k].state != C_STOPPED)
            return 0;
    return 1;
}

static void child_exited(rill__sup_t *s, rill_ctx_t *ctx, size_t i, const rill_exit_t *why)
{
    rill__sup_child_t *c = &s->c[i];
    if (s->booting) {
        /* A child died while we are still starting: the start failed. */
        c->aid = RILL_AID_NONE;
        c->state = C_STOPPED;
        c->last_exit = *why;
        boot_failed(s, ctx, why->code, c->id, why->text);
        return;
    }
    int was_stopping = c->state == C_STOPPING;
    cancel_timer(s, ctx, c);
    c->aid = RILL_AID_NONE;
    c->state = C_STOPPED;
    c->last_exit = *why;
    if (!rill_aid_is_none(c->reply_to)) {
        rill_msg_t req = {.from = c->reply_to, .corr = c->reply_corr};
        reply_status(ctx, &req, RILL_OK, 0);
        c->reply_to = RILL_AID_NONE;
    }

    if (s->phase == P_SHUTDOWN) {
        if (!stop_next_from_end(s, ctx, 0))
            begin_shutdown(s, ctx, s->escalate, &s->escalate_reason); /* all down: finish */
        return;
    }
    if (s->phase == P_GROUP) {
        c->in_group = 1; /* a child outside the group that exits meanwhile
                            restarts with it */
        if (c->spec->restart == RILL_RESTART_TEMPORARY)
            c->remove_on_stop = 1;
        if (!stop_next_from_end(s, ctx, 1))
            group_restart(s, ctx);
        return;
    }
    if (was_stopping || c->remove_on_stop) {
        /* We stopped it on purpose (terminate_child): not a failure. */
        sweep_removed(s);
        return;
    }

    /* A child exited on its own: restart? */
    const rill_child_spec_t *sp = c->spec;
    int restart = sp->restart == RILL_RESTART_PERMANENT ||
                  (sp->restart == RILL_RESTART_TRANSIENT && rill_exit_abnormal(why));
    if (!restart) {
        int ends_us = sp->significant && significant_ended(s, c);
        if (sp->restart == RILL_RESTART_TEMPORARY ||
            s->spec->strategy == RILL_SUP_SIMPLE_ONE_FOR_ONE)
            remove_child(s, i);
        if (ends_us)
            begin_shutdown(s, ctx, 0, NULL); /* auto_shutdown: a normal end */
        return;
    }
    if (!rill__sup_intensity_ok(s)) {
        rill_exit_t esc;
        rill__exit_set(&esc, RILL_EXIT_FAILURE, RILL_ESTATE,
                       "too many restarts (more than %d in %u ms); last: %.40s %s: %.40s",
                       (int)rill__sup_intensity(s->spec), rill__sup_period_ms(s->spec), c->id,
                       rill_exit_kind_name(why->kind), why->text);
        rill_log(RILL_LOG_ERR, "supervisor", "%s: %s: it gives up and stops its children",
                 s->name[0] ? s->name : "(unnamed)", esc.text);
        begin_shutdown(s, ctx, 1, &esc);
        return;
    }
    int64_t ran = rill__now_ms() - c->started_ms;
    uint32_t reset = rill__sup_backoff_reset_ms(s->spec);
    if (reset && ran >= (int64_t)reset)
        c->consecutive = 0;
    uint32_t delay = rill__sup_backoff_delay(s, c);
    c->consecutive++;
    c->restarts++;
    rill_log(rill_exit_abnormal(why) ? RILL_LOG_WARNING : RILL_LOG_NOTICE, "supervisor",
             "%s: child %s exited (%s: %s); restart %u in %u ms",
             s->name[0] ? s->name : "(unnamed)", c->id, rill_exit_kind_name(why->kind), why->text,
             c->restarts, delay);

    switch (s->spec->strategy) {
    case RILL_SUP_ONE_FOR_ONE:
    case RILL_SUP_SIMPLE_ONE_FOR_ONE:
        start_or_wait(s, ctx, c, delay);
        break;
    case RILL_SUP_ONE_FOR_ALL:
    case RILL_SUP_REST_FOR_ONE: {
        size_t from = s->spec->strategy == RILL_SUP_ONE_FOR_ALL ? 0 : i;
        for (size_t k = 0; k < s->n; k++) {
            s->c[k].in_group = k >= from;
            if (k >= from && k != i && s->c[k].spec->restart != RILL_RESTART_PERMANENT &&
                s->c[k].spec->restart == RILL_RESTART_TEMPORARY)
                s->c[k].remove_on_stop = 1;
        }
        s->group_from = from;
        s->group_delay_ms = delay;
        s->phase = P_GROUP;
        if (!stop_next_from_end(s, ctx, 1))
            group_restart(s, ctx);
        break;
    }
    }
}

/* Shut everything down (reverse order), then stop: normally, or failing
 * with the escalation reason. Called again as children go down. */
static void begin_shutdown(rill__sup_t *s, rill_ctx_t *ctx, int escalate, const rill_exit_t *why)
{
    if (s->phase != P_SHUTDOWN) {
        s->phase = P_SHUTDOWN;
        s->escalate = escalate;
        if (why)
            s->escalate_reason = *why;
        for (size_t i = 0; i < s->n; i++)
            s->c[i].in_group = 0;
    }
    if (stop_next_from_end(s, ctx, 0))
        return; /* wait for that child's EXIT */
    for (size_t i = 0; i < s->n; i++)
        if (s->c[i].spec->register_name)
            rill__names_release_restarting(s->sys, s->c[i].id);
    if (!rill_aid_is_none(s->stop_reply_to)) {
        rill_msg_t req = {.from = s->stop_reply_to, .corr = s->stop_corr};
        reply_status(ctx, &req, RILL_OK, 0);
        s->stop_reply_to = RILL_AID_NONE;
    }
    if (s->escalate) {
        boot_done(s, s->escalate_reason.code ? s->escalate_reason.code : RILL_ESTATE,
                  s->escalate_reason.text);
        rill_fail(ctx, s->escalate_reason.code ? s->escalate_reason.code : RILL_ESTATE, "%s: %s",
                  s->name, s->escalate_reason.text);
    } else {
        rill_stop_self(ctx);
    }
}

/* ------------------------------------------------------------------ */
/* The supervisor actor                                                */
/* ------------------------------------------------------------------ */

static int add_child(rill__sup_t *s, const rill_child_spec_t *spec, void *arg, const char *id)
{
    rill__sup_child_t *grown = rill__grow(s->c, &s->cap, s->n, sizeof(*grown), 8);
    if (!grown)
        return -1;
    s->c = grown;
    rill__sup_child_t *c = &s->c[s->n++];
    memset(c, 0, sizeof(*c));
    c->spec = spec;
    c->arg = arg;
    snprintf(c->id, sizeof(c->id), "%s", id);
    return 0;
}

/* The start failed: the children already started go down in reverse
 * order, then the supervisor fails (and its starter hears why). */
static void boot_failed(rill__sup_t *s, rill_ctx_t *ctx, rill_err_t err, const char *id,
                        const char *why_text)
{
    rill_exit_t why;
    rill__exit_set(&why, RILL_EXIT_FAILURE, err ? err : RILL_ESTATE,
                   "child \"%.63s\" could not start: %.150s", id, why_text);
    s->booting = 0;
    begin_shutdown(s, ctx, 1, &why);
}

/* Start the spec's children in order (OTP: each must be up before the
 * next starts). A child supervisor is up when it says so (RILL__SUP_BOOTED),
 * so the loop pauses there and goes on from the behaviour. */
static void boot_continue(rill__sup_t *s, rill_ctx_t *ctx)
{
    const rill_sup_spec_t *sp = s->spec;
    while (s->booting && s->boot_next < sp->n_children) {
        const rill_child_spec_t *cs = &sp->children[s->boot_next];
        if (add_child(s, cs, cs->arg, cs->id)) {
            boot_failed(s, ctx, RILL_ENOMEM, cs->id, "out of memory");
            return;
        }
        s->boot_next++;
        rill__sup_child_t *c = &s->c[s->n - 1];
        rill_err_t err = child_start(s, ctx, c);
        if (err) {
            boot_failed(s, ctx, err, c->id, c->last_exit.text);
            return;
        }
        if (cs->supervisor)
            return; /* wait for its RILL__SUP_BOOTED */
    }
    if (s->booting)
        boot_done(s, RILL_OK, NULL);
}

static rill_err_t sup_init(rill_ctx_t *ctx, void *state)
{
    rill__sup_t *s = state;
    s->self = rill_self(ctx);
    s->rng = s->self.id ^ (uint64_t)rill__now_us() ^ 0x9e3779b97f4a7c15ull;
    if (!s->rng)
        s->rng = 1;
    const rill_sup_spec_t *sp = s->spec;
    s->restarts_at = calloc((size_t)rill__sup_intensity(sp) + 1, sizeof(int64_t));
    if (!s->restarts_at) {
        boot_done(s, RILL_ENOMEM, "out of memory");
        return RILL_ENOMEM;
    }
    if (sp->strategy == RILL_SUP_SIMPLE_ONE_FOR_ONE) {
        boot_done(s, RILL_OK, NULL);
        return RILL_OK;
    }
    s->booting = 1;
    boot_continue(s, ctx);
    return RILL_OK;
}

static void reply_snapshot(rill__sup_t *s, rill_ctx_t *ctx, const rill_msg_t *req)
{
    rill_child_info_t *v = calloc(s->n ? s->n : 1, sizeof(*v));
    if (!v) {
        reply_status(ctx, req, RILL_ENOMEM, 0);
        return;
    }
    for (size_t i = 0; i < s->n; i++) {
        rill__sup_child_t *c = &s->c[i];
        snprintf(v[i].id, sizeof(v[i].id), "%s", c->id);
        v[i].aid = c->aid;
        v[i].running = c->state == C_RUNNING;
        v[i].restarting = c->state == C_WAITING;
        v[i].supervisor = c->spec->supervisor != NULL;
        v[i].restarts = c->restarts;
        v[i].next_delay_ms = c->state == C_WAITING ? c->next_delay_ms : 0;
        v[i].last_exit = c->last_exit;
    }
    rill_msg_t r = {.type = RILL__SUP_REPLY_QUERY, .arg = s->n, .payload = v, .dtor = free};
    if (rill_reply(ctx, req, &r) != RILL_OK)
        free(v);
}

static rill_err_t sup_behavior(rill_ctx_t *ctx, void *state, rill_msg_t *m)
{
    rill__sup_t *s = state;
    size_t i;
    switch (m->type) {
    case RILL_MSG_EXIT: {
        const rill_down_t *d = m->payload;
        rill__sup_child_t *c = child_by_aid(s, d->actor, &i);
        if (c) {
            child_exited(s, ctx, i, &d->reason);
        } else if (d->reason.kind == RILL_EXIT_SHUTDOWN) {
            /* Our parent asks us to stop: children first, in order. */
            begin_shutdown(s, ctx, 0, NULL);
        } else if (rill_exit_abnormal(&d->reason)) {
            /* Our parent (a link) died: take the children down, then go
             * the same way. */
            begin_shutdown(s, ctx, 1, &d->reason);
        }
        break;
    }
    case RILL__SUP_BACKOFF:
        for (i = 0; i < s->n; i++) {
            rill__sup_child_t *c = &s->c[i];
            if (c->state == C_WAITING && c->gen == m->arg) {
                c->timer_armed = 0;
                c->state = C_STOPPED;
                start_or_wait(s, ctx, c, 0);
                break;
            }
        }
        break;
    case RILL__SUP_KILL_TIMER:
        for (i = 0; i < s->n; i++) {
            rill__sup_child_t *c = &s->c[i];
            if (c->state == C_STOPPING && c->gen == m->arg) {
                c->timer_armed = 0;
                rill_kill(s->sys, c->aid, "did not stop within its shutdown timeout");
                break;
            }
        }
        break;
    case RILL__SUP_BOOTED:
        if (s->booting && s->n && rill_aid_eq(s->c[s->n - 1].aid, m->from)) {
            rill_err_t err = (rill_err_t)(m->flags & 0xffffffu);
            if (err)
                boot_failed(s, ctx, err, s->c[s->n - 1].id, "its own children could not start");
            else
                boot_continue(s, ctx);
        }
        break;
    case RILL__SUP_QUERY:
        reply_snapshot(s, ctx, m);
        break;
    case RILL__SUP_START_CHILD: {
        char id[64];
        rill_err_t err = RILL_OK;
        rill_aid_t started = RILL_AID_NONE;
        if (s->spec->strategy != RILL_SUP_SIMPLE_ONE_FOR_ONE)
            err = RILL_EINVAL;
        else if (s->phase != P_RUNNING)
            err = RILL_ESTOPPED;
        else if (snprintf(id, sizeof(id), "%.50s-%u", s->spec->children[0].id, ++s->dyn_seq),
                 add_child(s, &s->spec->children[0], m->payload, id))
            err = RILL_ENOMEM;
        else if ((err = child_start(s, ctx, &s->c[s->n - 1])))
            remove_child(s, s->n - 1);
        else
            started = s->c[s->n - 1].aid;
        reply_status(ctx, m, err, started.id);
        break;
    }
    case RILL__SUP_TERMINATE_CHILD: {
        rill__sup_child_t *c = child_by_aid(s, (rill_aid_t){m->arg}, &i);
        if (!c || s->spec->strategy != RILL_SUP_SIMPLE_ONE_FOR_ONE) {
            reply_status(ctx, m, c ? RILL_EINVAL : RILL_ENOENT, 0);
            break;
        }
        c->remove_on_stop = 1;
        c->reply_to = m->from;
        c->reply_corr = m->corr;
        child_stop(s, ctx, c);
        if (c->state == C_STOPPED) { /* it was waiting for a restart */
            reply_status(ctx, m, RILL_OK, 0);
            c->reply_to = RILL_AID_NONE;
            sweep_removed(s);
        }
        break;
    }
    case RILL__SUP_STOP:
        s->stop_reply_to = m->from;
        s->stop_corr = m->corr;
        begin_shutdown(s, ctx, 0, NULL);
        break;
    default:
        break;
    }
    return RILL_OK;
}

static void sup_terminate(rill_ctx_t *ctx, void *state, const rill_exit_t *reason)
{
    (void)ctx;
    rill__sup_t *s = state;
    /* Stopped from outside (rill_stop, system stop): no time for an ordered
     * shutdown, but no child is left behind either. */
    for (size_t i = s->n; i-- > 0;)
        if (s->c[i].state == C_RUNNING || s->c[i].state == C_STOPPING)
            rill_stop(s->sys, s->c[i].aid);
    for (size_t i = 0; i < s->n; i++)
        if (s->c[i].spec->register_name && s->c[i].state == C_WAITING)
            rill__names_release_restarting(s->sys, s->c[i].id);
    boot_done(s, reason->code ? reason->code : RILL_ESTOPPED, reason->text);
    free(s->restarts_at);
    free(s->c);
    free(s);
}

rill_err_t rill__sup_spawn(rill_system_t *sys, const rill_sup_spec_t *spec, const char *name,
                           rill_aid_t link_to, rill__sup_boot_t *boot, rill_aid_t *aid)
{
    rill__sup_t *s = calloc(1, sizeof(*s));
    if (!s)
        return RILL_ENOMEM;
    s->spec = spec;
    s->sys = sys;
    s->boot = boot;
    s->parent = link_to;
    snprintf(s->name, sizeof(s->name), "%s", name ? name : "supervisor");
    rill_spawn_opts_t o = {.behavior = sup_behavior,
                           .init = sup_init,
                           .terminate = sup_terminate,
                           .state = s,
                           .name = name,
                           .executor = spec->executor,
                           .trap_exits = 1,
                           .link_to = link_to,
                           .mailbox_capacity = 64};
    rill_err_t err = rill_spawn(sys, &o, aid);
    if (err)
        free(s);
    return err;
}
