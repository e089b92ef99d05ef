/*
 * Pipelines: a blueprint of stages (source, processors, sink) and the
 * control of its runs (see include/rill/stream.h). A run is one actor
 * (run.c); a supervised pipeline is a supervisor of its own with the
 * pipeline as its one significant child, watched by a small actor that
 * tells the pipeline when the supervisor ended.
 *
 * The pipeline object outlives everything it started: each of its actors
 * (runs, stages and their inner actors, the watcher) counts itself in
 * when spawned and out when it has terminated, and the object is freed,
 * and its end reported, only once that count is back to zero.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pipeline_int.h"

#define DEFAULT_MAX_RESTARTS 10
#define DEFAULT_WITHIN_MS    60000u
#define DEFAULT_BACKOFF_MIN  200u
#define DEFAULT_BACKOFF_MAX  10000u
#define DEFAULT_BACKOFF_RAND 0.2

static rill_err_t add_error(rill_pipeline_t *p, rill_err_t err, const char *fmt, ...)
    RILL_PRINTF(3, 4);

rill_pipeline_t *rill_pipeline_new(rill_system_t *sys, const char *name)
{
    rill_pipeline_t *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->sys = sys;
    snprintf(p->name, sizeof(p->name), "%s", name && *name ? name : "pipeline");
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->cond, NULL);
    /* NULL means out of memory only: a bad argument is the start's to
     * report. */
    if (!sys)
        add_error(p, RILL_EINVAL, "pipeline %s: the system is NULL", p->name);
    return p;
}

/* Remember the first problem of the blueprint: the start reports it. */
static rill_err_t add_error(rill_pipeline_t *p, rill_err_t err, const char *fmt, ...)
{
    if (!p->add_err) {
        p->add_err = err;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(p->add_text, sizeof(p->add_text), fmt, ap);
        va_end(ap);
    }
    return err;
}

rill_err_t rill_pipeline_add(rill_pipeline_t *p, rill_stage_t *stage, const rill_stage_opts_t *opts)
{
    if (!p || !stage) {
        rill_stage_free(stage);
        return p ? add_error(p, RILL_EINVAL, "stage %d is NULL", p->n) : RILL_EINVAL;
    }
    if (p->mode != RILL__PIPE_IDLE) {
        rill_stage_free(stage);
        return RILL_ESTATE;
    }
    char why[160];
    rill_err_t err = rill_stage_error(stage, why, sizeof(why));
    if (err) {
        rill_stage_free(stage);
        return add_error(p, err, "stage %d: %s", p->n, why);
    }
    if (p->n == RILL__MAX_STAGES) {
        rill_stage_free(stage);
        return add_error(p, RILL_EINVAL, "a pipeline has at most %d stages", RILL__MAX_STAGES);
    }
    const rill__kind_t *k = stage->kind;
    /* A source only first; nothing after a sink. */
    if ((k->max_in == 0 && p->n > 0) ||
        (p->n > 0 && p->stages[p->n - 1].spec->kind->max_out == 0)) {
        rill_stage_free(stage);
        return add_error(p, RILL_EINVAL, "stage %d (%s) does not fit: %s", p->n, k->name,
                         k->max_in == 0 ? "a source must come first"
                                        : "nothing can come after a sink");
    }
    rill__pstage_t *s = &p->stages[p->n++];
    s->spec = stage;
    memset(&s->opts, 0, sizeof(s->opts));
    if (opts) {
        s->opts = *opts;
        if (opts->name) {
            snprintf(s->name, sizeof(s->name), "%s", opts->name);
            s->opts.name = s->name;
        }
    }
    s->opts.link_to = RILL_AID_NONE; /* the run links its stages to itself */
    return RILL_OK;
}

/* The blueprint can run: no add failed, a source first, a sink last. */
static rill_err_t check_shape(const rill_pipeline_t *p, char *errstr, size_t errstr_size)
{
    if (p->add_err)
        return rill__fail(p->add_err, errstr, errstr_size, "%s", p->add_text);
    if (p->n < 2 || p->stages[0].spec->kind->max_in != 0 ||
        (p->stages[p->n - 1].spec->kind->max_out != 0 &&
         !p->stages[p->n - 1].spec->kind->optional_out))
        return rill__fail(RILL_EINVAL, errstr, errstr_size,
                          "a pipeline needs a source first and a sink last (%d stages)", p->n);
    for (int i = 1; i < p->n - 1; i++) {
        const rill__kind_t *k = p->stages[i].spec->kind;
        if (k->max_in == 0 || k->max_out == 0)
            return rill__fail(RILL_EINVAL, errstr, errstr_size,
                              "stage %d (%s) must have an input and an output", i, k->name);
    }
    return RILL_OK;
}

/* Wait until the run published its stages (or ended). */
static void wait_published(rill_pipeline_t *p, rill_aid_t run)
{
    pthread_mutex_lock(&p->lock);
    while (!rill_aid_eq(p->published, run))
        pthread_cond_wait(&p->cond, &p->lock);
    pthread_mutex_unlock(&p->lock);
}

/* A pipeline that may start now: not NULL, not started, well formed. */
static rill_err_t can_start(const rill_pipeline_t *p, char *errstr, size_t errstr_size)
{
    if (!p)
        return rill__fail(RILL_EINVAL, errstr, errstr_size, "pipeline is NULL");
    if (p->mode != RILL__PIPE_IDLE)
        return rill__fail(RILL_ESTATE, errstr, errstr_size, "pipeline already started");
    return check_shape(p, errstr, errstr_size);
}

rill_err_t rill_pipeline_start(rill_pipeline_t *p, char *errstr, size_t errstr_size)
{
    rill_err_t err = can_start(p, errstr, errstr_size);
    if (err)
        return err;
    if (rill__tls_exec)
        return rill__fail(RILL_ESTATE, errstr, errstr_size,
                          "rill_pipeline_start waits for the stages, so not on an executor");
    rill_aid_t run;
    err = rill__pipeline_run_spawn(p, RILL_AID_NONE, p->name, &run, errstr, errstr_size);
    if (err)
        return err;
    p->mode = RILL__PIPE_RUN;
    wait_published(p, run);
    /* A stage that could not spawn: the run ends by itself (wait reports
     * it too), and the start says so. */
    pthread_mutex_lock(&p->lock);
    err = p->spawn_err;
    char text[sizeof(p->spawn_text)];
    memcpy(text, p->spawn_text, sizeof(text));
    pthread_mutex_unlock(&p->lock);
    if (err)
        return rill__fail(err, errstr, errstr_size, "%s", text);
    return RILL_OK;
}

rill_err_t rill_pipeline_child(rill_system_t *sys, void *pipeline, const rill_child_env_t *env,
                               rill_aid_t *child, char *errstr, size_t errstr_size)
{
    rill_pipeline_t *p = pipeline;
    if (!sys || !p || !env || !child || sys != p->sys)
        return rill__fail(RILL_EINVAL, errstr, errstr_size,
                          "a pipeline child needs its pipeline (of the same system) as arg");
    rill_err_t err = check_shape(p, errstr, errstr_size);
    if (err)
        return err;
    return rill__pipeline_run_spawn(p, env->supervisor, env->name, child, errstr, errstr_size);
}

/* ---- supervised ---- */

/* The watcher: monitors the pipeline's supervisor and tells the pipeline
 * when it ended. */
typedef struct watcher {
    rill_pipeline_t *p;
    rill_aid_t sup;
} watcher_t;

static rill_err_t watcher_init(rill_ctx_t *ctx, void *state)
{
    watcher_t *w = state;
    return rill_monitor(ctx, w->sup, NULL);
}

static rill_err_t watcher_behavior(rill_ctx_t *ctx, void *state, rill_msg_t *m)
{
    watcher_t *w = state;
    if (m->type != RILL_MSG_DOWN)
        return RILL_OK;
    const rill_down_t *d = m->payload;
    rill_pipeline_t *p = w->p;
    pthread_mutex_lock(&p->lock);
    p->sup_done = 1;
    p->sup_exit = d->reason;
    pthread_mutex_unlock(&p->lock);
    /* No run comes after this: let go of what runs kept for the next one
     * (a parked Kafka client leaves its group now), before waiters hear. */
    for (int i = 0; i < p->n; i++)
        rill__stage_spec_retire(p->stages[i].spec);
    pthread_mutex_lock(&p->lock);
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
    rill_stop_self(ctx);
    return RILL_OK;
}

static void watcher_terminate(rill_ctx_t *ctx, void *state, const rill_exit_t *reason)
{
    (void)ctx;
    (void)reason;
    watcher_t *w = state;
    rill_pipeline_t *p = w->p;
    free(w);
    rill__pipeline_actor_out(p);
}

rill_err_t rill_pipeline_start_supervised(rill_pipeline_t *p, const rill_restart_opts_t *opts,
                                          char *errstr, size_t errstr_size)
{
    rill_err_t err = can_start(p, errstr, errstr_size);
    if (err)
        return err;
    rill_restart_opts_t o = opts ? *opts : (rill_restart_opts_t){0};
    if (o.max_restarts < RILL_SUP_NO_RESTARTS)
        return rill__fail(RILL_EINVAL, errstr, errstr_size,
                          "max_restarts must be >= 0 or RILL_SUP_NO_RESTARTS, got %d",
                          o.max_restarts);
    rill_backoff_t none = {0};
    if (!memcmp(&o.backoff, &none, sizeof(none)))
        o.backoff = (rill_backoff_t){.min_ms = DEFAULT_BACKOFF_MIN,
                                     .max_ms = DEFAULT_BACKOFF_MAX,
                                     .random = DEFAULT_BACKOFF_RAND};
    p->child = (rill_child_spec_t)RILL_CHILD_PIPELINE(p->name, p);
    p->child.significant = 1; /* its end (completed, stopped) ends the supervisor */
    p->sup_spec = (rill_sup_spec_t){
        .strategy = RILL_SUP_ONE_FOR_ONE,
        .intensity = o.max_restarts ? o.max_restarts : DEFAULT_MAX_RESTARTS,
        .period_ms = o.within_ms ? o.within_ms : DEFAULT_WITHIN_MS,
        .backoff = o.backoff,
        .children = &p->child,
        .n_children = 1,
        .auto_shutdown = RILL_AUTO_SHUTDOWN_ANY,
    };
    char sup_name[64];
    snprintf(sup_name, sizeof(sup_name), "%s-supervisor", p->name);
    p->mode = RILL__PIPE_SUPERVISED;
    rill_aid_t sup;
    err = rill_sup_start(p->sys, &p->sup_spec, NULL, &sup, errstr, errstr_size);
    if (err) {
        p->mode = RILL__PIPE_IDLE;
        return err;
    }
    watcher_t *w = malloc(sizeof(*w));
    if (w) {
        w->p = p;
        w->sup = sup;
        rill__pipeline_actor_in(p);
        rill_spawn_opts_t wo = {.behavior = watcher_behavior,
                                .init = watcher_init,
                                .terminate = watcher_terminate,
                                .state = w};
        rill_aid_t wa;
        if ((err = rill_spawn(p->sys, &wo, &wa))) {
            rill__pipeline_actor_out(p);
            free(w);
        }
    } else {
        err = RILL_ENOMEM;
    }
    if (err) {
        rill_sup_stop(p->sys, sup, -1);
        p->mode = RILL__PIPE_IDLE;
        return rill__fail(err, errstr, errstr_size, "cannot watch the pipeline's supervisor: %s",
                          rill_err2str(err));
    }
    pthread_mutex_lock(&p->lock);
    p->sup = sup;
    pthread_mutex_unlock(&p->lock);
    return RILL_OK;
}

/* ---- control ---- */

static rill_err_t ask_run(rill_pipeline_t *p, int drain)
{
    if (!p)
        return RILL_EINVAL;
    if (p->mode == RILL__PIPE_IDLE)
        return RILL_ESTATE;
    pthread_mutex_lock(&p->lock);
    if (!drain)
        p->stop_requested = 1;
    rill_aid_t run = p->run, sup = p->sup;
    pthread_mutex_unlock(&p->lock);
    if (p->mode == RILL__PIPE_SUPERVISED && !drain) {
        /* The supervisor stops its child (the run stops as asked: drain,
         * final commit) and then itself; a run waiting for its backoff
         * just does not start again. */
        rill_msg_t m = {.type = RILL__SUP_STOP};
        rill_tell(p->sys, sup, &m); /* gone already: fine */
        return RILL_OK;
    }
    rill_msg_t m = {.type = RILL__RUN_STOP, .arg = (uint64_t)drain};
    rill_signal(p->sys, run, &m); /* gone already: fine */
    return RILL_OK;
}

rill_err_t rill_pipeline_stop(rill_pipeline_t *p)
{
    return ask_run(p, 0);
}

rill_err_t rill_pipeline_drain(rill_pipeline_t *p)
{
    return ask_run(p, 1);
}

/* Everything the pipeline started has ended (under p->lock). */
static int ended_locked(const rill_pipeline_t *p)
{
    if (p->alive > 0)
        return 0;
    return p->mode != RILL__PIPE_SUPERVISED || p->sup_done;
}

rill_err_t rill_pipeline_wait(rill_pipeline_t *p, int timeout_ms, rill_pipeline_result_t *result)
{
    if (!p || !result)
        return RILL_EINVAL;
    memset(result, 0, sizeof(*result));
    if (p->mode == RILL__PIPE_IDLE)
        return RILL_ESTATE;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (timeout_ms >= 0) {
        ts.tv_sec += timeout_ms / 1000;
        ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
    }
    pthread_mutex_lock(&p->lock);
    while (!ended_locked(p)) {
        int rc = timeout_ms < 0 ? pthread_cond_wait(&p->cond, &p->lock)
                                : pthread_cond_timedwait(&p->cond, &p->lock, &ts);
        if (rc && !ended_locked(p)) {
            pthread_mutex_unlock(&p->lock);
            result->end = RILL_PIPELINE_RUNNING;
            return RILL_ETIMEDOUT;
        }
    }
    *result = p->result;
    if (!p->have_result) {
        result->end = RILL_PIPELINE_FAILED;
        result->code = RILL_ESTOPPED;
        snprintf(result->text, sizeof(result->text), "the pipeline ended without a result");
    }
    if (p->mode == RILL__PIPE_SUPERVISED) {
        if (p->stop_requested && result->end != RILL_PIPELINE_COMPLETED) {
            result->end = RILL_PIPELINE_STOPPED;
            result->code = RILL_ESTOPPED;
            snprintf(result->stage, sizeof(result->stage), "%s", "");
            snprintf(result->text, sizeof(result->text), "stopped");
        } else if (rill_exit_abnormal(&p->sup_exit) && result->end != RILL_PIPELINE_FAILED) {
            result->end = RILL_PIPELINE_FAILED;
            result->code = p->sup_exit.code ? p->sup_exit.code : RILL_ESTATE;
            snprintf(result->text, sizeof(result->text), "%s", p->sup_exit.text);
        }
    }
    pthread_mutex_unlock(&p->lock);
    return RILL_OK;
}

rill_aid_t rill_pipeline_stage(const rill_pipeline_t *p, int i)
{
    if (!p || i < 0 || i >= p->n)
        return RILL_AID_NONE;
    rill_pipeline_t *mp = (rill_pipeline_t *)p; /* the lock, not the blueprint */
    pthread_mutex_lock(&mp->lock);
    rill_aid_t aid = mp->stage_aids[i];
    pthread_mutex_unlock(&mp->lock);
    return aid;
}

rill_err_t rill_pipeline_info(const rill_pipeline_t *p, rill_pipeline_info_t *out)
{
    if (!p || !out)
        return RILL_EINVAL;
    memset(out, 0, sizeof(*out));
    snprintf(out->name, sizeof(out->name), "%s", p->name);
    out->stages = p->n;
    rill_pipeline_t *mp = (rill_pipeline_t *)p; /* the lock, not the blueprint */
    pthread_mutex_lock(&mp->lock);
    out->runs = mp->runs;
    out->supervisor = mp->mode == RILL__PIPE_SUPERVISED && !mp->sup_done ? mp->sup : RILL_AID_NONE;
    out->started = mp->mode != RILL__PIPE_IDLE;
    pthread_mutex_unlock(&mp->lock);
    return RILL_OK;
}

rill_err_t rill_pipeline_stage_info(const rill_pipeline_t *p, int i, rill_stage_info_t *out)
{
    if (!p || !out || i < 0 || i >= p->n)
        return RILL_EINVAL;
    memset(out, 0, sizeof(*out));
    const rill__pstage_t *s = &p->stages[i];
    snprintf(out->kind, sizeof(out->kind), "%s", s->spec->kind->name);
    if (s->name[0])
        snprintf(out->name, sizeof(out->name), "%s", s->name);
    else /* unnamed: its position and kind, unique in the pipeline */
        snprintf(out->name, sizeof(out->name), "%d-%.32s", i, out->kind);
    out->source = i == 0;
    out->sink = i == p->n - 1;
    out->aid = rill_pipeline_stage(p, i);
    return RILL_OK;
}

void rill_pipeline_destroy(rill_pipeline_t *p)
{
    if (!p)
        return;
    if (p->mode != RILL__PIPE_IDLE) {
        pthread_mutex_lock(&p->lock);
        int running = !ended_locked(p);
        pthread_mutex_unlock(&p->lock);
        if (running)
            rill_pipeline_stop(p);
        rill_pipeline_result_t r;
        rill_pipeline_wait(p, -1, &r);
    } else {
        /* A supervisor's child: the supervisor has ended (documented);
         * wait for stragglers all the same. */
        pthread_mutex_lock(&p->lock);
        while (p->alive > 0)
            pthread_cond_wait(&p->cond, &p->lock);
        pthread_mutex_unlock(&p->lock);
    }
    for (int i = 0; i < p->n; i++) {
        rill__stage_spec_retire(p->stages[i].spec);
        rill_stage_free(p->stages[i].spec);
    }
    pthread_cond_destroy(&p->cond);
    pthread_mutex_destroy(&p->lock);
    free(p);
}
