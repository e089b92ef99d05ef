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
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <rill/supervisor.h>

#include "../actors/seam.h"

#define DEFAULT_SHUTDOWN_MS 5000u

typedef enum { C_STOPPED = 0, C_RUNNING, C_STOPPING, C_WAITING } cstate_t;

typedef struct child {
    const rill_child_spec_t *spec;
    void *arg; /* simple_one_for_one: per-child arg */
    char id[64];
    rill_aid_t aid;
    cstate_t state;
    uint32_t restarts;
    uint32_t consecutive; /* for backoff */
    int64_t started_ms;
    uint32_t next_delay_ms;
    uint64_t gen;   /* bumps at every start/stop: stale timers are ignored */
    uint64_t timer; /* backoff or kill timer */
    int timer_armed;
    rill_exit_t last_exit;
    int in_group;       /* part of the group being stopped for a restart */
    int remove_on_stop; /* temporary child or terminate_child */
    /* a terminate_child request waiting for this child's exit */
    rill_aid_t reply_to;
    uint64_t reply_corr;
} child_t;

typedef enum { P_RUNNING = 0, P_GROUP, P_SHUTDOWN } phase_t;

typedef struct boot {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int done;
    rill_err_t err;
    char text[256];
} boot_t;

typedef struct sup {
    const rill_sup_spec_t *spec;
    rill_system_t *sys;
    rill_aid_t self;
    char name[64];
    child_t *c;
    size_t n, cap;
    phase_t phase;
    int64_t *restarts_at; /* ring of the last intensity+1 restart times */
    uint32_t restarts_seen;
    uint64_t rng;
    /* group restart: who failed (index), restart after the group stopped */
    size_t group_from;
    uint32_t group_delay_ms;
    /* shutdown: what to do when all children are down */
    int escalate;
    rill_exit_t escalate_reason;
    rill_aid_t stop_reply_to;
    uint64_t stop_corr;
    boot_t *boot;      /* rill_sup_start waits on it; NULL for nested */
    rill_aid_t parent; /* nested: told when our start ended (RILL__SUP_BOOTED) */
    int booting;       /* still starting the children of the spec */
    size_t boot_next;  /* the next spec child to start */
    uint32_t dyn_seq;  /* simple_one_for_one: numbers the children's ids */
} sup_t;

/* ------------------------------------------------------------------ */
/* Spec checks                                                         */
/* ------------------------------------------------------------------ */

rill_err_t rill_sup_spec_check(const rill_sup_spec_t *spec, char *errstr, size_t errstr_size)
{
    if (!spec)
        return rill__fail(RILL_EINVAL, errstr, errstr_size, "supervisor spec is NULL");
    if (spec->strategy < RILL_SUP_ONE_FOR_ONE || spec->strategy > RILL_SUP_SIMPLE_ONE_FOR_ONE)
        return rill__fail(RILL_EINVAL, errstr, errstr_size, "unknown strategy %d",
                          (int)spec->strategy);
    if (spec->intensity < 0)
        return rill__fail(RILL_EINVAL, errstr, errstr_size, "intensity must be >= 0, got %d",
                          spec->intensity);
    if (spec->period_ms == 0)
        return rill__fail(RILL_EINVAL, errstr, errstr_size, "period_ms must be > 0");
    if (spec->backoff_max_ms < spec->backoff_min_ms)
        return rill__fail(RILL_EINVAL, errstr, errstr_size,
                          "backoff max (%u ms) is below backoff min (%u ms)", spec->backoff_max_ms,
                          spec->backoff_min_ms);
    if (!(spec->backoff_random >= 0.0 && spec->backoff_random <= 1.0))
        return rill__fail(RILL_EINVAL, errstr, errstr_size,
                          "backoff random factor must be within 0..1");
    if (spec->n_children && !spec->children)
        return rill__fail(RILL_EINVAL, errstr, errstr_size, "children is NULL");
    if (spec->strategy == RILL_SUP_SIMPLE_ONE_FOR_ONE && spec->n_children != 1)
        return rill__fail(RILL_EINVAL, errstr, errstr_size,
                          "simple_one_for_one needs exactly one template child, got %zu",
                          spec->n_children);
    for (size_t i = 0; i < spec->n_children; i++) {
        const rill_child_spec_t *c = &spec->children[i];
        if (!c->id || !*c->id || strlen(c->id) >= 64)
            return rill__fail(RILL_EINVAL, errstr, errstr_size,
                              "child %zu needs an id of 1 to 63 characters", i);
        if (!!c->start + !!c->spawn + !!c->supervisor != 1)
            return rill__fail(RILL_EINVAL, errstr, errstr_size,
                              "child \"%s\" needs exactly one of a start function, a spawn "
                              "function and a supervisor spec",
                              c->id);
        if (c->restart < RILL_RESTART_PERMANENT || c->restart > RILL_RESTART_TEMPORARY ||
            c->shutdown < RILL_SHUTDOWN_TIMEOUT || c->shutdown > RILL_SHUTDOWN_INFINITY)
            return rill__fail(RILL_EINVAL, errstr, errstr_size,
                              "child \"%s\" has an unknown restart or shutdown type", c->id);
        for (size_t j = 0; j < i; j++)
            if (!strcmp(spec->children[j].id, c->id))
                return rill__fail(RILL_EINVAL, errstr, errstr_size, "duplicate child id \"%s\"",
                                  c->id);
        if (c->supervisor) {
            char sub[200];
            if (rill_sup_spec_check(c->supervisor, sub, sizeof(sub)))
                return rill__fail(RILL_EINVAL, errstr, errstr_size, "child \"%s\": %s", c->id, sub);
        }
    }
    return RILL_OK;
}

/* ------------------------------------------------------------------ */
/* Helpers                                                             */
/* ------------------------------------------------------------------ */

static double rand01(sup_t *s)
{
    /* xorshift64*: jitter only, no need for more */
    s->rng ^= s->rng >> 12;
    s->rng ^= s->rng << 25;
    s->rng ^= s->rng >> 27;
    return (double)((s->rng * 2685821657736338717ull) >> 11) / 9007199254740992.0;
}

static uint32_t backoff_delay(sup_t *s, child_t *c)
{
    const rill_sup_spec_t *sp = s->spec;
    if (!sp->backoff_min_ms && !sp->backoff_max_ms)
        return 0;
    double d = sp->backoff_min_ms;
    for (uint32_t i = 0; i < c->consecutive && d < sp->backoff_max_ms; i++)
        d *= 2;
    if (d > sp->backoff_max_ms)
        d = sp->backoff_max_ms;
    d *= 1.0 + rand01(s) * sp->backoff_random;
    return (uint32_t)d;
}

static uint32_t backoff_reset_ms(const rill_sup_spec_t *sp)
{
    if (sp->backoff_reset_ms)
        return sp->backoff_reset_ms;
    return sp->backoff_max_ms ? sp->backoff_max_ms * 10 : 0;
}

static child_t *child_by_aid(sup_t *s, rill_aid_t aid, size_t *idx)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->c[i].aid == aid && aid) {
            if (idx)
                *idx = i;
            return &s->c[i];
        }
    return NULL;
}

static void cancel_timer(sup_t *s, rill_ctx_t *ctx, child_t *c)
{
    (void)s;
    if (c->timer_armed) {
        rill_timer_cancel(ctx, c->timer);
        c->timer_armed = 0;
    }
}

/* Status replies carry the error code in flags (bits 0..23) and a value
 * (an aid) in arg. */
#define STATUS_OF(m) ((rill_err_t)((m)->flags & 0xffffffu))

static void reply_status(rill_ctx_t *ctx, const rill_msg_t *req, rill_err_t err, uint64_t value)
{
    rill_msg_t r = {.type = RILL__SUP_REPLY_STATUS, .flags = (uint32_t)err, .arg = value};
    rill_reply(ctx, req, &r);
}

static rill_err_t spawn_supervisor(rill_system_t *sys, const rill_sup_spec_t *spec,
                                   const char *name, rill_aid_t link_to, boot_t *boot,
                                   rill_aid_t *aid);
static void begin_shutdown(sup_t *s, rill_ctx_t *ctx, int escalate, const rill_exit_t *why);
static void boot_failed(sup_t *s, rill_ctx_t *ctx, rill_err_t err, const char *id,
                        const char *why_text);

/* Start one child. Returns RILL_OK or the error (the child stays
 * stopped). */
static rill_err_t child_start(sup_t *s, rill_ctx_t *ctx, child_t *c)
{
    const rill_child_spec_t *sp = c->spec;
    rill_err_t err;
    /* A restarting hold on the name stays until the spawn takes it over,
     * so senders see RILL_ERESTARTING up to the last moment. */
    if (sp->supervisor) {
        err = spawn_supervisor(s->sys, sp->supervisor, sp->register_name ? c->id : NULL, s->self,
                               NULL, &c->aid);
    } else if (sp->spawn) {
        rill_child_env_t env = {.supervisor = s->self, .name = sp->register_name ? c->id : NULL};
        err = sp->spawn(s->sys, c->arg, &env, &c->aid);
    } else {
        rill_spawn_opts_t o = {.executor = -1};
        err = sp->start(c->arg, &o);
        if (!err) {
            o.name = sp->register_name ? c->id : NULL;
            o.link_to = s->self;
            o.monitor_by = RILL_AID_NONE;
            o.monitor_ref = NULL;
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
                       rill_err2str(err));
        return err;
    }
    c->state = C_RUNNING;
    c->started_ms = rill__now_ms();
    if (c->restarts)
        rill__actor_set_restarts(s->sys, c->aid, c->restarts);
    return RILL_OK;
}

/* Ask a running child to stop by its shutdown spec. */
static void child_stop(sup_t *s, rill_ctx_t *ctx, child_t *c)
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
        uint32_t ms = sp->shutdown_ms ? sp->shutdown_ms : DEFAULT_SHUTDOWN_MS;
        rill_msg_t t = {.type = RILL__SUP_KILL_TIMER, .arg = c->gen};
        if (rill_timer_start(ctx, ms, 0, &t, &c->timer) == RILL_OK)
            c->timer_armed = 1;
    }
}

/* Stop the next running/stopping child from the end; returns 1 if one is
 * still on its way down (wait for its EXIT), 0 if none is left. */
static int stop_next_from_end(sup_t *s, rill_ctx_t *ctx, int only_group)
{
    for (size_t k = s->n; k-- > 0;) {
        child_t *c = &s->c[k];
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

static void remove_child(sup_t *s, size_t i)
{
    memmove(&s->c[i], &s->c[i + 1], (s->n - i - 1) * sizeof(*s->c));
    s->n--;
}

/* Children marked for removal and stopped: drop them. */
static void sweep_removed(sup_t *s)
{
    for (size_t i = s->n; i-- > 0;)
        if (s->c[i].remove_on_stop && s->c[i].state == C_STOPPED)
            remove_child(s, i);
}

static void boot_done(sup_t *s, rill_err_t err, const char *text)
{
    s->booting = 0;
    if (s->parent) {
        /* A nested supervisor's start is part of its parent's: tell it. */
        rill_msg_t m = {.type = RILL__SUP_BOOTED, .from = s->self, .flags = (uint32_t)err};
        rill_tell(s->sys, s->parent, &m);
        s->parent = RILL_AID_NONE;
    }
    boot_t *b = s->boot;
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

/* Record a restart; returns 0 when the intensity is exceeded. */
static int intensity_ok(sup_t *s)
{
    const rill_sup_spec_t *sp = s->spec;
    int64_t now = rill__now_ms();
    uint32_t slots = (uint32_t)sp->intensity + 1;
    s->restarts_at[s->restarts_seen % slots] = now;
    s->restarts_seen++;
    if (s->restarts_seen <= (uint32_t)sp->intensity)
        return 1;
    /* The oldest of the last intensity+1 restarts: within the period? */
    int64_t oldest = s->restarts_at[s->restarts_seen % slots];
    return now - oldest > (int64_t)sp->period_ms;
}

static void begin_shutdown(sup_t *s, rill_ctx_t *ctx, int escalate, const rill_exit_t *why);

static void start_or_wait(sup_t *s, rill_ctx_t *ctx, child_t *c, uint32_t delay_ms)
{
    c->next_delay_ms = delay_ms;
    if (delay_ms == 0) {
        if (child_start(s, ctx, c) != RILL_OK) {
            /* A failed restart counts as one more restart. */
            if (!intensity_ok(s)) {
                begin_shutdown(s, ctx, 1, &c->last_exit);
                return;
            }
            c->consecutive++;
            c->restarts++;
            uint32_t d = backoff_delay(s, c);
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
static void group_restart(sup_t *s, rill_ctx_t *ctx)
{
    s->phase = P_RUNNING;
    sweep_removed(s);
    for (size_t i = 0; i < s->n; i++) {
        child_t *c = &s->c[i];
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

static void child_exited(sup_t *s, rill_ctx_t *ctx, size_t i, const rill_exit_t *why)
{
    child_t *c = &s->c[i];
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
    if (c->reply_to) {
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
        if (sp->restart == RILL_RESTART_TEMPORARY ||
            s->spec->strategy == RILL_SUP_SIMPLE_ONE_FOR_ONE)
            remove_child(s, i);
        return;
    }
    if (!intensity_ok(s)) {
        rill_exit_t esc;
        rill__exit_set(&esc, RILL_EXIT_FAILURE, RILL_ESTATE,
                       "too many restarts (more than %d in %u ms); last: %.40s %s: %.40s",
                       s->spec->intensity, s->spec->period_ms, c->id,
                       rill_exit_kind_name(why->kind), why->text);
        begin_shutdown(s, ctx, 1, &esc);
        return;
    }
    int64_t ran = rill__now_ms() - c->started_ms;
    uint32_t reset = backoff_reset_ms(s->spec);
    if (reset && ran >= (int64_t)reset)
        c->consecutive = 0;
    uint32_t delay = backoff_delay(s, c);
    c->consecutive++;
    c->restarts++;

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
static void begin_shutdown(sup_t *s, rill_ctx_t *ctx, int escalate, const rill_exit_t *why)
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
    if (s->stop_reply_to) {
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

static int add_child(sup_t *s, const rill_child_spec_t *spec, void *arg, const char *id)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 8;
        child_t *c = realloc(s->c, cap * sizeof(*c));
        if (!c)
            return -1;
        s->c = c;
        s->cap = cap;
    }
    child_t *c = &s->c[s->n++];
    memset(c, 0, sizeof(*c));
    c->spec = spec;
    c->arg = arg;
    snprintf(c->id, sizeof(c->id), "%s", id);
    return 0;
}

/* The start failed: the children already started go down in reverse
 * order, then the supervisor fails (and its starter hears why). */
static void boot_failed(sup_t *s, rill_ctx_t *ctx, rill_err_t err, const char *id,
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
static void boot_continue(sup_t *s, rill_ctx_t *ctx)
{
    const rill_sup_spec_t *sp = s->spec;
    while (s->booting && s->boot_next < sp->n_children) {
        const rill_child_spec_t *cs = &sp->children[s->boot_next];
        if (add_child(s, cs, cs->arg, cs->id)) {
            boot_failed(s, ctx, RILL_ENOMEM, cs->id, "out of memory");
            return;
        }
        s->boot_next++;
        child_t *c = &s->c[s->n - 1];
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
    sup_t *s = state;
    s->self = rill_self(ctx);
    s->rng = s->self ^ (uint64_t)rill__now_us() ^ 0x9e3779b97f4a7c15ull;
    if (!s->rng)
        s->rng = 1;
    const rill_sup_spec_t *sp = s->spec;
    s->restarts_at = calloc((size_t)sp->intensity + 1, sizeof(int64_t));
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

static void reply_snapshot(sup_t *s, rill_ctx_t *ctx, const rill_msg_t *req)
{
    rill_child_info_t *v = calloc(s->n ? s->n : 1, sizeof(*v));
    if (!v) {
        reply_status(ctx, req, RILL_ENOMEM, 0);
        return;
    }
    for (size_t i = 0; i < s->n; i++) {
        child_t *c = &s->c[i];
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
    sup_t *s = state;
    size_t i;
    switch (m->type) {
    case RILL_MSG_EXIT: {
        const rill_down_t *d = m->payload;
        child_t *c = child_by_aid(s, d->actor, &i);
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
            child_t *c = &s->c[i];
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
            child_t *c = &s->c[i];
            if (c->state == C_STOPPING && c->gen == m->arg) {
                c->timer_armed = 0;
                rill_kill(s->sys, c->aid, "did not stop within its shutdown timeout");
                break;
            }
        }
        break;
    case RILL__SUP_BOOTED:
        if (s->booting && s->n && s->c[s->n - 1].aid == m->from) {
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
        reply_status(ctx, m, err, started);
        break;
    }
    case RILL__SUP_TERMINATE_CHILD: {
        child_t *c = child_by_aid(s, (rill_aid_t)m->arg, &i);
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
    sup_t *s = state;
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

static rill_err_t spawn_supervisor(rill_system_t *sys, const rill_sup_spec_t *spec,
                                   const char *name, rill_aid_t link_to, boot_t *boot,
                                   rill_aid_t *aid)
{
    sup_t *s = calloc(1, sizeof(*s));
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

/* ------------------------------------------------------------------ */
/* API                                                                 */
/* ------------------------------------------------------------------ */

rill_err_t rill_sup_start(rill_system_t *sys, const rill_sup_spec_t *spec, const char *name,
                          rill_aid_t *sup, char *errstr, size_t errstr_size)
{
    if (!sys || !sup)
        return rill__fail(RILL_EINVAL, errstr, errstr_size, "system or sup is NULL");
    *sup = RILL_AID_NONE;
    rill_err_t err = rill_sup_spec_check(spec, errstr, errstr_size);
    if (err)
        return err;
    if (spec->executor < -1 || spec->executor >= rill_system_executors(sys))
        return rill__fail(RILL_EINVAL, errstr, errstr_size, "executor %d out of range",
                          spec->executor);
    if (rill__tls_exec)
        return rill__fail(RILL_ESTATE, errstr, errstr_size,
                          "rill_sup_start waits, so it cannot run on an executor");
    boot_t boot = {.err = RILL_OK};
    pthread_mutex_init(&boot.lock, NULL);
    pthread_cond_init(&boot.cond, NULL);
    rill_aid_t aid;
    err = spawn_supervisor(sys, spec, name, RILL_AID_NONE, &boot, &aid);
    if (!err) {
        pthread_mutex_lock(&boot.lock);
        while (!boot.done)
            pthread_cond_wait(&boot.cond, &boot.lock);
        pthread_mutex_unlock(&boot.lock);
        err = boot.err;
        if (err)
            rill__fail(err, errstr, errstr_size, "%s", boot.text);
        else
            *sup = aid;
    } else {
        rill__fail(err, errstr, errstr_size, "could not spawn the supervisor: %s",
                   rill_err2str(err));
    }
    pthread_cond_destroy(&boot.cond);
    pthread_mutex_destroy(&boot.lock);
    return err;
}

/* Ask a supervisor and wait. */
static rill_err_t sup_ask(rill_system_t *sys, rill_aid_t sup, uint32_t type, uint64_t arg,
                          void *payload, int timeout_ms, rill_msg_t *reply)
{
    rill_msg_t q = {.type = type, .arg = arg, .payload = payload};
    return rill_ask_sync(sys, sup, &q, timeout_ms, reply);
}

rill_err_t rill_sup_stop(rill_system_t *sys, rill_aid_t sup, int timeout_ms)
{
    if (!sys || sup == RILL_AID_NONE)
        return RILL_EINVAL;
    int64_t deadline = timeout_ms < 0 ? INT64_MAX : rill__now_ms() + timeout_ms;
    rill_msg_t r;
    rill_err_t err = sup_ask(sys, sup, RILL__SUP_STOP, 0, NULL,
                             timeout_ms < 0 ? 24 * 3600 * 1000 : timeout_ms, &r);
    if (err && err != RILL_ESTOPPED)
        return err;
    /* The supervisor stops right after its answer. */
    while (rill_alive(sys, sup)) {
        if (rill__now_ms() >= deadline)
            return RILL_ETIMEDOUT;
        struct timespec ts = {0, 200 * 1000};
        nanosleep(&ts, NULL);
    }
    return RILL_OK;
}

rill_err_t rill_sup_start_child(rill_system_t *sys, rill_aid_t sup, void *arg, rill_aid_t *child)
{
    if (!sys || sup == RILL_AID_NONE)
        return RILL_EINVAL;
    rill_msg_t r;
    rill_err_t err = sup_ask(sys, sup, RILL__SUP_START_CHILD, 0, arg, 30000, &r);
    if (err)
        return err;
    err = STATUS_OF(&r);
    if (!err && child)
        *child = (rill_aid_t)r.arg;
    return err;
}

rill_err_t rill_sup_terminate_child(rill_system_t *sys, rill_aid_t sup, rill_aid_t child)
{
    if (!sys || sup == RILL_AID_NONE || child == RILL_AID_NONE)
        return RILL_EINVAL;
    rill_msg_t r;
    rill_err_t err = sup_ask(sys, sup, RILL__SUP_TERMINATE_CHILD, child, NULL, 60000, &r);
    if (err)
        return err;
    return STATUS_OF(&r);
}

rill_err_t rill_sup_children(rill_system_t *sys, rill_aid_t sup, rill_child_info_t *out, size_t max,
                             size_t *n)
{
    if (!sys || sup == RILL_AID_NONE || !n || (max && !out))
        return RILL_EINVAL;
    rill_msg_t r;
    rill_err_t err = sup_ask(sys, sup, RILL__SUP_QUERY, 0, NULL, 10000, &r);
    if (err)
        return err;
    if (r.type != RILL__SUP_REPLY_QUERY) {
        err = STATUS_OF(&r);
        return err ? err : RILL_ESTATE;
    }
    *n = (size_t)r.arg;
    const rill_child_info_t *v = r.payload;
    for (size_t i = 0; i < *n && i < max; i++)
        out[i] = v[i];
    if (r.dtor)
        r.dtor(r.payload);
    return RILL_OK;
}

/* ---- dump ---- */

typedef struct strbuf {
    char *s;
    size_t len, cap;
    int oom;
} strbuf_t;

static void sb_printf(strbuf_t *b, const char *fmt, ...) RILL_PRINTF(2, 3);

static void sb_printf(strbuf_t *b, const char *fmt, ...)
{
    if (b->oom)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->s ? b->s + b->len : NULL, b->s ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = 1;
            return;
        }
        if (b->s && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = (b->cap ? b->cap * 2 : 1024) + (size_t)n;
        char *s = realloc(b->s, cap);
        if (!s) {
            b->oom = 1;
            return;
        }
        b->s = s;
        b->cap = cap;
    }
}

static void dump_node(rill_system_t *sys, rill_aid_t sup, const char *label, int depth, int dot,
                      strbuf_t *b)
{
    rill_child_info_t info[256];
    size_t n = 0;
    rill_err_t err = rill_sup_children(sys, sup, info, 256, &n);
    if (err) {
        if (!dot)
            sb_printf(b, "%*s(%s: %s)\n", depth * 2, "", label, rill_err2str(err));
        return;
    }
    if (n > 256)
        n = 256;
    for (size_t i = 0; i < n; i++) {
        const rill_child_info_t *c = &info[i];
        const char *state = c->running ? "running" : c->restarting ? "restarting" : "stopped";
        if (dot) {
            sb_printf(b,
                      "  \"%#" PRIx64 "\" -> \"%s/%s\";\n  \"%s/%s\" [label=\"%s\\n%s, "
                      "%u restarts%s%s\" shape=%s color=%s];\n",
                      sup, label, c->id, label, c->id, c->id, state, c->restarts,
                      c->last_exit.text[0] ? "\\nlast: " : "",
                      c->last_exit.text[0] ? rill_exit_kind_name(c->last_exit.kind) : "",
                      c->supervisor ? "box" : "ellipse",
                      c->running      ? "darkgreen"
                      : c->restarting ? "orange"
                                      : "gray");
        } else {
            sb_printf(b, "%*s%s%s  [%s] restarts=%u", depth * 2, "", c->id,
                      c->supervisor ? " (supervisor)" : "", state, c->restarts);
            if (c->restarting)
                sb_printf(b, " next in %u ms", c->next_delay_ms);
            if (c->last_exit.text[0] || c->last_exit.kind != RILL_EXIT_NORMAL)
                sb_printf(b, " last exit: %s (%s)", rill_exit_kind_name(c->last_exit.kind),
                          c->last_exit.text);
            sb_printf(b, "\n");
        }
        if (c->supervisor && c->aid) {
            if (dot) {
                /* the child supervisor's node is named by its aid */
                sb_printf(b, "  \"%s/%s\" -> \"%#" PRIx64 "\" [style=dotted];\n", label, c->id,
                          c->aid);
                sb_printf(b, "  \"%#" PRIx64 "\" [label=\"%s\" shape=box];\n", c->aid, c->id);
            }
            dump_node(sys, c->aid, c->id, depth + 1, dot, b);
        }
    }
}

rill_err_t rill_sup_dump(rill_system_t *sys, rill_aid_t sup, int dot, char **out)
{
    if (!sys || sup == RILL_AID_NONE || !out)
        return RILL_EINVAL;
    *out = NULL;
    if (!rill_alive(sys, sup))
        return RILL_ESTOPPED;
    strbuf_t b = {0};
    if (dot) {
        sb_printf(&b,
                  "digraph rill {\n  rankdir=TB;\n  \"%#" PRIx64 "\" [label=\"root\" "
                  "shape=box style=bold];\n",
                  sup);
        dump_node(sys, sup, "root", 0, 1, &b);
        sb_printf(&b, "}\n");
    } else {
        sb_printf(&b, "supervisor %#" PRIx64 "\n", sup);
        dump_node(sys, sup, "root", 1, 0, &b);
    }
    if (b.oom) {
        free(b.s);
        return RILL_ENOMEM;
    }
    *out = b.s;
    return RILL_OK;
}
