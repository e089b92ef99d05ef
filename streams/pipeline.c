/*
 * Linear pipelines: source -> stages -> sink, spawned and connected as
 * actors, with stop, drain and a wait that reports how the run ended.
 *
 * The pipeline object outlives its actors: every stage actor (including
 * the inner actors of composites) counts itself in when spawned and out
 * when it terminates, and the pipeline is only freed once that count is
 * back to zero.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../actors/seam.h"
#include "stream_int.h"

#define MAX_STAGES 64

typedef struct pstage {
    rill_stage_t *spec;
    rill_stage_opts_t opts;
    char name[48];
    rill_aid_t aid;
} pstage_t;

struct rill_pipeline {
    rill_system_t *sys;
    pstage_t stages[MAX_STAGES];
    int n;
    int started;
    int stop_requested;

    pthread_mutex_t lock;
    pthread_cond_t cond;
    int alive;       /* stage actors running, under lock */
    int have_result; /* under lock */
    rill_pipeline_result_t result;
    /* The first stage that failed by itself (under lock): what a failed
     * pipeline reports, whatever the sink saw (a stage that fails before
     * the stage after it subscribed cannot tell it why). */
    int have_cause;
    rill_err_t cause_code;
    char cause_text[200];
};

/* ---- hooks, called on executor threads ---- */

static void hook_spawned(void *p)
{
    rill_pipeline_t *pl = p;
    pthread_mutex_lock(&pl->lock);
    pl->alive++;
    pthread_mutex_unlock(&pl->lock);
}

static void hook_ended(void *p, rill__stage_t *st)
{
    (void)st;
    rill_pipeline_t *pl = p;
    pthread_mutex_lock(&pl->lock);
    pl->alive--;
    pthread_cond_broadcast(&pl->cond);
    pthread_mutex_unlock(&pl->lock);
}

static void hook_failed(void *p, rill_err_t code, const char *text)
{
    rill_pipeline_t *pl = p;
    pthread_mutex_lock(&pl->lock);
    if (!pl->have_cause) {
        pl->have_cause = 1;
        pl->cause_code = code;
        snprintf(pl->cause_text, sizeof(pl->cause_text), "%s", text ? text : "");
    }
    pthread_mutex_unlock(&pl->lock);
}

/* Errors read "<failing stage>: <what happened>". */
static void result_failed(rill_pipeline_result_t *r, rill_err_t code, const char *stage,
                          const char *text)
{
    r->end = RILL_PIPELINE_FAILED;
    r->code = code;
    const char *colon = text ? strstr(text, ": ") : NULL;
    if (colon) {
        size_t n = (size_t)(colon - text);
        if (n >= sizeof(r->stage))
            n = sizeof(r->stage) - 1;
        memcpy(r->stage, text, n);
        r->stage[n] = '\0';
        snprintf(r->text, sizeof(r->text), "%s", colon + 2);
    } else {
        snprintf(r->stage, sizeof(r->stage), "%s", stage ? stage : "?");
        snprintf(r->text, sizeof(r->text), "%s", text && *text ? text : rill_err2str(code));
    }
}

static void hook_sink_done(void *p, rill_err_t code, const char *stage, const char *text,
                           uint64_t delivered)
{
    rill_pipeline_t *pl = p;
    pthread_mutex_lock(&pl->lock);
    pl->result.delivered += delivered;
    if (!pl->have_result) {
        pl->have_result = 1;
        rill_pipeline_result_t *r = &pl->result;
        r->code = code;
        if (code == RILL_OK) {
            r->end = RILL_PIPELINE_COMPLETED;
            snprintf(r->text, sizeof(r->text), "completed");
        } else if (code == RILL_ESTOPPED && pl->stop_requested) {
            r->end = RILL_PIPELINE_STOPPED;
            snprintf(r->text, sizeof(r->text), "stopped");
        } else {
            result_failed(r, code, stage, text);
        }
    }
    pthread_cond_broadcast(&pl->cond);
    pthread_mutex_unlock(&pl->lock);
}

/* ---- API ---- */

rill_pipeline_t *rill_pipeline_new(rill_system_t *sys)
{
    if (!sys)
        return NULL;
    rill_pipeline_t *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->sys = sys;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->cond, NULL);
    return p;
}

rill_err_t rill_pipeline_add(rill_pipeline_t *p, rill_stage_t *stage, const rill_stage_opts_t *opts)
{
    if (!p || !stage) {
        rill_stage_free(stage);
        return RILL_EINVAL;
    }
    if (p->started) {
        rill_stage_free(stage);
        return RILL_ESTATE;
    }
    if (p->n == MAX_STAGES) {
        rill_stage_free(stage);
        return RILL_EINVAL;
    }
    const rill__kind_t *k = stage->kind;
    /* A source only first; nothing after a sink. */
    if ((k->max_in == 0 && p->n > 0) ||
        (p->n > 0 && p->stages[p->n - 1].spec->kind->max_out == 0)) {
        rill_stage_free(stage);
        return RILL_EINVAL;
    }
    pstage_t *s = &p->stages[p->n++];
    s->spec = stage;
    if (opts) {
        s->opts = *opts;
        if (opts->name) {
            snprintf(s->name, sizeof(s->name), "%s", opts->name);
            s->opts.name = s->name;
        }
    }
    return RILL_OK;
}

rill_err_t rill_pipeline_start(rill_pipeline_t *p, char *errstr, size_t errstr_size)
{
    if (!p)
        return rill__fail(RILL_EINVAL, errstr, errstr_size, "pipeline is NULL");
    if (p->started)
        return rill__fail(RILL_ESTATE, errstr, errstr_size, "pipeline already started");
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
    p->started = 1;
    rill__pipeline_hook_t hook = {.spawned = hook_spawned,
                                  .ended = hook_ended,
                                  .sink_done = hook_sink_done,
                                  .failed = hook_failed,
                                  .p = p};
    for (int i = 0; i < p->n; i++) {
        pstage_t *s = &p->stages[i];
        const char *kname = s->spec->kind->name;
        rill_stage_t *spec = s->spec;
        s->spec = NULL;
        rill_err_t err = rill__stage_spawn_hooked(p->sys, spec, &s->opts, &hook, &s->aid);
        if (err) {
            for (int j = i + 1; j < p->n; j++) {
                rill_stage_free(p->stages[j].spec);
                p->stages[j].spec = NULL;
            }
            rill_pipeline_stop(p);
            return rill__fail(err, errstr, errstr_size, "stage %d (%s) could not start: %s", i,
                              kname, rill_err2str(err));
        }
    }
    /* Each stage subscribes to the one before; the sink's first REQUEST
     * sets everything moving. */
    for (int i = 1; i < p->n; i++)
        rill_stage_connect(p->sys, p->stages[i - 1].aid, p->stages[i].aid);
    return RILL_OK;
}

static rill_err_t signal_stages(rill_pipeline_t *p, uint32_t type, int only_source)
{
    if (!p)
        return RILL_EINVAL;
    if (!p->started)
        return RILL_ESTATE;
    for (int i = 0; i < p->n; i++) {
        if (only_source && i > 0)
            break;
        if (!rill_aid_is_none(p->stages[i].aid)) {
            rill_msg_t m = {.type = type};
            rill_signal(p->sys, p->stages[i].aid, &m); /* gone already: fine */
        }
    }
    return RILL_OK;
}

rill_err_t rill_pipeline_stop(rill_pipeline_t *p)
{
    if (!p)
        return RILL_EINVAL;
    pthread_mutex_lock(&p->lock);
    p->stop_requested = 1;
    pthread_mutex_unlock(&p->lock);
    return signal_stages(p, RILL__STREAM_STOP_NOW, 0);
}

rill_err_t rill_pipeline_drain(rill_pipeline_t *p)
{
    return signal_stages(p, RILL__STREAM_DRAIN, 1);
}

rill_err_t rill_pipeline_wait(rill_pipeline_t *p, int timeout_ms, rill_pipeline_result_t *result)
{
    if (!p || !result)
        return RILL_EINVAL;
    memset(result, 0, sizeof(*result));
    if (!p->started)
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
    while (p->alive > 0) {
        int rc = timeout_ms < 0 ? pthread_cond_wait(&p->cond, &p->lock)
                                : pthread_cond_timedwait(&p->cond, &p->lock, &ts);
        if (rc && p->alive > 0) {
            pthread_mutex_unlock(&p->lock);
            result->end = RILL_PIPELINE_RUNNING;
            return RILL_ETIMEDOUT;
        }
    }
    *result = p->result;
    if (p->have_cause && (!p->have_result || result->end == RILL_PIPELINE_FAILED)) {
        result_failed(result, p->cause_code, NULL, p->cause_text); /* the root cause */
    } else if (!p->have_result) {
        result->end = p->stop_requested ? RILL_PIPELINE_STOPPED : RILL_PIPELINE_FAILED;
        result->code = RILL_ESTOPPED;
        snprintf(result->text, sizeof(result->text), "the stages ended without a result");
    }
    pthread_mutex_unlock(&p->lock);
    return RILL_OK;
}

rill_aid_t rill_pipeline_stage(const rill_pipeline_t *p, int i)
{
    if (!p || i < 0 || i >= p->n)
        return RILL_AID_NONE;
    return p->stages[i].aid;
}

void rill_pipeline_destroy(rill_pipeline_t *p)
{
    if (!p)
        return;
    if (p->started) {
        rill_pipeline_result_t r;
        pthread_mutex_lock(&p->lock);
        int running = p->alive > 0;
        pthread_mutex_unlock(&p->lock);
        if (running)
            rill_pipeline_stop(p);
        rill_pipeline_wait(p, -1, &r);
    }
    for (int i = 0; i < p->n; i++)
        rill_stage_free(p->stages[i].spec);
    pthread_cond_destroy(&p->cond);
    pthread_mutex_destroy(&p->lock);
    free(p);
}
