/*
 * A pipeline run: one actor that owns the stages of one run of a
 * pipeline's blueprint. It spawns them (each linked to it), connects them,
 * watches them end (it traps exits), and ends when they all have, with
 * the run's result: its exit is FAILURE with the root cause when a stage
 * failed by itself, normal otherwise. Under a supervisor that exit is the
 * child's, so the supervisor restarts the pipeline.
 *
 * Ending, in order, so that nothing is committed before it is durable:
 *   - a stop (rill_pipeline_stop, or a parent supervisor's shutdown) and a
 *     drain ask the source to complete: what is in flight goes on through
 *     the stages, which complete one after the other;
 *   - a stage failing sends ERROR downstream and CANCEL upstream;
 *   - a Kafka source does not end with its stream: it lingers until the
 *     confirms of what it emitted are in. When every stage after it has
 *     ended, nothing can confirm anything any more: the run tells it so
 *     (RILL__STREAM_FINISH), and it makes its final commit and ends;
 *   - a stop that takes longer than the source's stop budget is made hard
 *     (every stage stops at once), and after that anything left is killed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline_int.h"

#define DEFAULT_STOP_BUDGET_MS 5000u
#define KILL_AFTER_MS          5000u

enum { RUN_LIVE = 0, RUN_ENDING };
enum { STOP_NONE = 0, STOP_STOP, STOP_DRAIN };

typedef struct run {
    rill_pipeline_t *p;
    rill_system_t *sys;
    rill_aid_t self;
    rill_aid_t parent; /* the supervisor, if any */
    int n;
    rill_stage_t *specs[RILL__MAX_STAGES]; /* prepared copies, taken by the spawns */
    rill_stage_opts_t opts[RILL__MAX_STAGES];
    char names[RILL__MAX_STAGES][48];
    rill_aid_t aids[RILL__MAX_STAGES];
    int gone[RILL__MAX_STAGES];
    int n_gone;
    int phase;
    int stop;        /* STOP_* asked */
    int finish_sent; /* the source was told nothing downstream is left */
    int hard;        /* STOP_NOW sent to everything left */
    uint32_t budget_ms;
    /* what happened */
    int have_cause;
    rill_err_t cause_code;
    char cause_text[200];
    int have_sink;
    rill__sink_result_t sink;
} run_t;

static int stage_index(const run_t *r, rill_aid_t aid)
{
    for (int i = 0; i < r->n; i++)
        if (rill_aid_eq(r->aids[i], aid))
            return i;
    return -1;
}

static void signal_stage(run_t *r, int i, uint32_t type)
{
    if (r->gone[i] || rill_aid_is_none(r->aids[i]))
        return;
    rill_msg_t m = {.type = type};
    rill_signal(r->sys, r->aids[i], &m); /* gone already: fine */
}

static void cause(run_t *r, rill_err_t code, const char *text)
{
    if (r->have_cause)
        return;
    r->have_cause = 1;
    r->cause_code = code ? code : RILL_ESTATE;
    snprintf(r->cause_text, sizeof(r->cause_text), "%s", text && *text ? text : "failed");
}

static void arm_backstop(run_t *r, rill_ctx_t *ctx, uint32_t ms, uint64_t step)
{
    rill_msg_t t = {.type = RILL__RUN_BACKSTOP, .arg = step};
    rill_timer_start(ctx, ms, 0, &t, NULL);
}

/* The run starts ending (once): stops and failures are bounded. */
static void begin_end(run_t *r, rill_ctx_t *ctx)
{
    if (r->phase == RUN_ENDING)
        return;
    r->phase = RUN_ENDING;
    if (r->stop != STOP_DRAIN)
        arm_backstop(r, ctx, r->budget_ms, 1);
}

static void hard_stop(run_t *r)
{
    r->hard = 1;
    for (int i = 0; i < r->n; i++)
        signal_stage(r, i, RILL__STREAM_STOP_NOW);
}

static void ask_stop(run_t *r, rill_ctx_t *ctx, int kind)
{
    if (r->stop)
        return;
    r->stop = kind;
    /* The source completes its stream; everything in flight goes on. */
    signal_stage(r, 0, RILL__STREAM_DRAIN);
    begin_end(r, ctx);
}

/* The run's end: tell the pipeline, then leave as its result says. */
static void finish(run_t *r, rill_ctx_t *ctx)
{
    rill_pipeline_result_t res;
    memset(&res, 0, sizeof(res));
    res.delivered = r->have_sink ? r->sink.delivered : 0;
    int stopped = r->stop == STOP_STOP;
    if (r->have_cause && !(stopped && r->cause_code == RILL_ESTOPPED)) {
        res.end = RILL_PIPELINE_FAILED;
        res.code = r->cause_code;
        const char *colon = strstr(r->cause_text, ": ");
        if (colon) {
            size_t k = (size_t)(colon - r->cause_text);
            if (k >= sizeof(res.stage))
                k = sizeof(res.stage) - 1;
            memcpy(res.stage, r->cause_text, k);
            res.stage[k] = '\0';
            snprintf(res.text, sizeof(res.text), "%s", colon + 2);
        } else {
            snprintf(res.text, sizeof(res.text), "%.159s", r->cause_text);
        }
    } else if (stopped) {
        res.end = RILL_PIPELINE_STOPPED;
        res.code = RILL_ESTOPPED;
        snprintf(res.text, sizeof(res.text), "stopped");
    } else if (r->have_sink && r->sink.code == RILL_OK) {
        res.end = RILL_PIPELINE_COMPLETED;
        snprintf(res.text, sizeof(res.text), "completed");
    } else {
        res.end = RILL_PIPELINE_FAILED;
        res.code = r->have_sink && r->sink.code ? r->sink.code : RILL_ESTOPPED;
        snprintf(res.stage, sizeof(res.stage), "%s", r->have_sink ? r->sink.stage : "");
        snprintf(res.text, sizeof(res.text), "%s",
                 r->have_sink && r->sink.text[0] ? r->sink.text
                                                 : "the stages ended without a result");
    }
    rill_pipeline_t *p = r->p;
    pthread_mutex_lock(&p->lock);
    p->delivered += res.delivered;
    res.delivered = p->delivered;
    res.restarts = p->runs ? p->runs - 1 : 0;
    p->result = res;
    p->have_result = 1;
    if (rill_aid_eq(p->run, r->self)) {
        p->run = RILL_AID_NONE;
        for (int i = 0; i < RILL__MAX_STAGES; i++)
            p->stage_aids[i] = RILL_AID_NONE;
    }
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
    if (res.end == RILL_PIPELINE_FAILED)
        rill_fail(ctx, res.code ? res.code : RILL_ESTATE, "%.60s: %.110s",
                  res.stage[0] ? res.stage : p->name, res.text);
    else
        rill_stop_self(ctx);
}

/* After every end of a stage: the source hears when nothing after it is
 * left; the run ends when nothing is left at all. */
static void check_progress(run_t *r, rill_ctx_t *ctx)
{
    if (r->n_gone == r->n) {
        finish(r, ctx);
        return;
    }
    if (!r->gone[0] || r->finish_sent)
        return;
    for (int i = 1; i < r->n; i++)
        if (!r->gone[i])
            return;
    r->finish_sent = 1;
    signal_stage(r, 0, RILL__STREAM_FINISH);
}

static void on_exit_msg(run_t *r, rill_ctx_t *ctx, const rill_down_t *d)
{
    int i = stage_index(r, d->actor);
    if (i < 0) {
        if (!rill_aid_eq(d->actor, r->parent))
            return;
        /* The parent supervisor: a shutdown is a stop; a failure or a kill
         * takes everything down at once. */
        if (d->reason.kind == RILL_EXIT_SHUTDOWN) {
            ask_stop(r, ctx, STOP_STOP);
        } else if (rill_exit_abnormal(&d->reason)) {
            cause(r, RILL_ESTOPPED, "the pipeline's supervisor ended");
            r->stop = STOP_STOP;
            begin_end(r, ctx);
            hard_stop(r);
        }
        return;
    }
    if (r->gone[i])
        return;
    r->gone[i] = 1;
    r->n_gone++;
    if (rill_exit_abnormal(&d->reason)) {
        /* The stage told us its root cause before it ended; this is for a
         * stage that could not (killed, or failed in its start). */
        char text[200];
        snprintf(text, sizeof(text), "%.47s: %s", r->names[i],
                 d->reason.text[0] ? d->reason.text : rill_exit_kind_name(d->reason.kind));
        cause(r, d->reason.code ? d->reason.code : RILL_ESTATE, text);
        begin_end(r, ctx);
    }
    check_progress(r, ctx);
}

static rill_err_t run_behavior(rill_ctx_t *ctx, void *state, rill_msg_t *m)
{
    run_t *r = state;
    switch (m->type) {
    case RILL_MSG_EXIT:
        on_exit_msg(r, ctx, m->payload);
        break;
    case RILL__RUN_FAILED:
        /* A stage failed by itself: the root cause, unless a requested
         * stop made it. */
        cause(r, (rill_err_t)m->arg, m->payload);
        begin_end(r, ctx);
        break;
    case RILL__RUN_SINK_DONE:
        if (!r->have_sink && m->payload) {
            r->sink = *(const rill__sink_result_t *)m->payload;
            r->have_sink = 1;
        }
        break;
    case RILL__RUN_STOP:
        ask_stop(r, ctx, m->arg ? STOP_DRAIN : STOP_STOP);
        break;
    case RILL__RUN_BACKSTOP:
        if (m->arg == 1 && !r->hard) {
            hard_stop(r);
            arm_backstop(r, ctx, KILL_AFTER_MS, 2);
        } else if (m->arg == 2) {
            for (int i = 0; i < r->n; i++)
                if (!r->gone[i])
                    rill_kill(r->sys, r->aids[i], "the pipeline's stop took too long");
        }
        break;
    default:
        break;
    }
    return RILL_OK;
}

static rill_err_t run_init(rill_ctx_t *ctx, void *state)
{
    run_t *r = state;
    r->self = rill_self(ctx);
    rill__pipeline_hook_t hook = {
        .p = r->p, .run = r->self, .sys = r->sys, .once = rill_aid_is_none(r->parent)};
    rill_err_t err = RILL_OK;
    char why[200] = "";
    for (int i = 0; i < r->n; i++) {
        rill_stage_opts_t o = r->opts[i];
        o.link_to = r->self;
        rill_stage_t *spec = r->specs[i];
        r->specs[i] = NULL;
        hook.terminal = i == r->n - 1;
        err = rill__stage_spawn_hooked(r->sys, spec, &o, &hook, &r->aids[i], why, sizeof(why));
        if (err) {
            /* Those spawned are linked to us: a hard stop ends them. */
            for (int k = i; k < r->n; k++) {
                rill_stage_free(r->specs[k]);
                r->specs[k] = NULL;
                r->gone[k] = 1;
            }
            r->n_gone += r->n - i;
            char text[200];
            snprintf(text, sizeof(text), "%.47s: %.150s", r->names[i], why);
            cause(r, err, text);
            r->stop = STOP_STOP;
            break;
        }
    }
    if (!err)
        for (int i = 1; i < r->n; i++)
            rill_stage_connect(r->sys, r->aids[i - 1], r->aids[i], NULL, 0);
    rill_pipeline_t *p = r->p;
    pthread_mutex_lock(&p->lock);
    p->run = r->self;
    p->published = r->self;
    p->spawn_err = err;
    if (err)
        snprintf(p->spawn_text, sizeof(p->spawn_text), "%s", r->cause_text);
    for (int i = 0; i < r->n; i++)
        p->stage_aids[i] = r->aids[i];
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
    if (err) {
        r->phase = RUN_ENDING;
        hard_stop(r);
        arm_backstop(r, ctx, KILL_AFTER_MS, 2);
        check_progress(r, ctx);
    }
    return RILL_OK;
}

static void run_terminate(rill_ctx_t *ctx, void *state, const rill_exit_t *reason)
{
    (void)ctx;
    (void)reason;
    run_t *r = state;
    for (int i = 0; i < r->n; i++)
        rill_stage_free(r->specs[i]);
    rill_pipeline_t *p = r->p;
    free(r);
    rill__pipeline_actor_out(p);
}

rill_err_t rill__pipeline_run_spawn(rill_pipeline_t *p, rill_aid_t link_to, const char *name,
                                    rill_aid_t *run, char *errstr, size_t errstr_size)
{
    *run = RILL_AID_NONE;
    run_t *r = calloc(1, sizeof(*r));
    if (!r)
        return rill__fail(RILL_ENOMEM, errstr, errstr_size, "out of memory");
    r->p = p;
    r->sys = p->sys;
    r->parent = link_to;
    r->n = p->n;
    r->budget_ms = DEFAULT_STOP_BUDGET_MS;
    /* Copies of the blueprint, prepared here (Kafka clients are made now,
     * so a bad configuration fails the start with its sentence). */
    rill_err_t err = RILL_OK;
    for (int i = 0; i < p->n && !err; i++) {
        r->opts[i] = p->stages[i].opts;
        snprintf(r->names[i], sizeof(r->names[i]), "%s",
                 p->stages[i].opts.name ? p->stages[i].opts.name : p->stages[i].spec->kind->name);
        r->specs[i] = rill__stage_spec_clone(p->stages[i].spec);
        char why[200] = "";
        if (!r->specs[i])
            err = rill__fail(RILL_ENOMEM, errstr, errstr_size, "out of memory copying stage %d", i);
        else if ((err = rill__stage_prepare(r->specs[i], p->sys, why, sizeof(why))))
            rill__fail(err, errstr, errstr_size, "stage %d (%s): %s", i, r->names[i], why);
    }
    if (!err && r->specs[0]->kind->stop_budget_ms)
        r->budget_ms = r->specs[0]->kind->stop_budget_ms(r->specs[0]->impl);
    if (!err) {
        rill__pipeline_actor_in(p);
        pthread_mutex_lock(&p->lock);
        p->runs++;
        pthread_mutex_unlock(&p->lock);
        rill_spawn_opts_t o = {.behavior = run_behavior,
                               .init = run_init,
                               .terminate = run_terminate,
                               .state = r,
                               .name = name,
                               .trap_exits = 1,
                               .link_to = link_to};
        err = rill_spawn(p->sys, &o, run);
        if (err) {
            pthread_mutex_lock(&p->lock);
            p->runs--;
            pthread_mutex_unlock(&p->lock);
            rill__pipeline_actor_out(p);
            rill__fail(err, errstr, errstr_size, "cannot spawn the pipeline's actor: %s",
                       rill_err2str(err));
        }
    }
    if (err) {
        for (int i = 0; i < p->n; i++)
            rill_stage_free(r->specs[i]);
        free(r);
        return err;
    }
    return RILL_OK;
}
