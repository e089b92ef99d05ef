/*
 * Pipelines (not installed): the blueprint and its control (pipeline.c)
 * and the run actor (run.c) that owns the stages of one run.
 */
#ifndef RILL_PIPELINE_INT_H
#define RILL_PIPELINE_INT_H

#include <pthread.h>

#include "stream_int.h"

#define RILL__MAX_STAGES 64

typedef struct rill__pstage {
    rill_stage_t *spec; /* the blueprint: runs spawn copies of it */
    rill_stage_opts_t opts;
    char name[48];
} rill__pstage_t;

enum { RILL__PIPE_IDLE = 0, RILL__PIPE_RUN, RILL__PIPE_SUPERVISED };

struct rill_pipeline {
    rill_system_t *sys;
    char name[48];
    rill__pstage_t stages[RILL__MAX_STAGES];
    int n;
    /* The first error of rill_pipeline_add: reported by the start. */
    rill_err_t add_err;
    char add_text[160];
    int mode; /* RILL__PIPE_*: how it was started (not for a supervisor's child) */

    pthread_mutex_t lock; /* everything below */
    pthread_cond_t cond;
    int alive;                               /* its actors running: runs, stages, watcher */
    rill_aid_t run;                          /* the current run's actor */
    rill_aid_t published;                    /* the last run whose stages are spawned */
    rill_aid_t stage_aids[RILL__MAX_STAGES]; /* the current run's stages */
    /* The last published run could not spawn a stage: rill_pipeline_start
     * returns this with its sentence. */
    rill_err_t spawn_err;
    char spawn_text[200];
    int stop_requested;
    int have_result; /* a run ended and left its result */
    rill_pipeline_result_t result;
    uint64_t delivered; /* over every run */
    uint32_t runs;      /* runs started */
    /* supervised */
    rill_sup_spec_t sup_spec;
    rill_child_spec_t child;
    rill_aid_t sup;
    int sup_done; /* the supervisor ended */
    rill_exit_t sup_exit;
};

/* Every actor of a pipeline counts itself in when spawned and out when it
 * has terminated (pv: the hook's rill_pipeline_t): the pipeline is not
 * freed, and does not report its end, while one runs. Inline: the stages
 * and the runs count without depending on pipeline.c. */
static inline void rill__pipeline_actor_in(void *pv)
{
    rill_pipeline_t *p = pv;
    pthread_mutex_lock(&p->lock);
    p->alive++;
    pthread_mutex_unlock(&p->lock);
}

static inline void rill__pipeline_actor_out(void *pv)
{
    rill_pipeline_t *p = pv;
    pthread_mutex_lock(&p->lock);
    p->alive--;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
}

/* Start one run of p's blueprint: a run actor (linked to link_to if not
 * none, registered as name if not NULL) that spawns and connects a copy of
 * every stage. Returns RILL_OK and the run's aid, or the error with a
 * sentence (nothing is left running then). @locality any thread. */
rill_err_t rill__pipeline_run_spawn(rill_pipeline_t *p, rill_aid_t link_to, const char *name,
                                    rill_aid_t *run, char *errstr, size_t errstr_size);

#endif /* RILL_PIPELINE_INT_H */
