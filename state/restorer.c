/*
 * The restorer: one thread per changelog, started on its first job, that
 * runs the restores the assignment hook (hook.c) asks for, so that a
 * source's executor never blocks on a changelog's read. Each job restores
 * one partition (rill__changelog_restore) and answers the source's
 * assignment with the partition's start, or fails it; a job whose
 * partition was revoked meanwhile is dropped (at once if it had not
 * started, within 1,024 records or a poll's 100 ms if it had).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "changelog.h"

static void job_free(rill__restore_job_t *j)
{
    rill_assignment_release(j->asg);
    free(j->topic);
    free(j);
}

static void run_job(rill_store_t *s, rill__restore_job_t *j)
{
    if (!rill_assignment_waiting(j->asg, j->topic, j->partition))
        return; /* revoked before its turn */
    int64_t offset = 0;
    char why[300] = "";
    rill_err_t err =
        rill__changelog_restore(s, j->asg, j->topic, j->partition, &offset, why, sizeof(why));
    if (err == RILL_OK) {
        rill_assignment_ready(j->asg, j->topic, j->partition, offset);
    } else if (err != RILL_ESTOPPED) {
        /* The source fails (its supervisor restarts it, and the restore is
         * tried again): starting anywhere else could lose or repeat. */
        char text[1024];
        snprintf(text, sizeof(text), "store %s: cannot restore %s [%d]: %s", s->name, j->topic,
                 (int)j->partition, why);
        rill_log(RILL_LOG_ERR, "state.restore", "%s", text);
        rill_assignment_fail(j->asg, text);
    }
}

/* The store is the thread's argument: its changelog outlives the thread
 * (rill__restorer_stop joins it first). */
static void *restorer_main(void *arg)
{
    rill_store_t *s = arg;
    struct rill__changelog *cl = s->cl;
    pthread_mutex_lock(&cl->jobs_lock);
    for (;;) {
        while (!cl->jobs && !atomic_load_explicit(&cl->restorer_stop, memory_order_relaxed))
            pthread_cond_wait(&cl->jobs_cv, &cl->jobs_lock);
        if (atomic_load_explicit(&cl->restorer_stop, memory_order_relaxed))
            break;
        rill__restore_job_t *j = cl->jobs;
        cl->jobs = j->next;
        if (!cl->jobs)
            cl->jobs_tail = &cl->jobs;
        pthread_mutex_unlock(&cl->jobs_lock);
        run_job(s, j);
        job_free(j);
        pthread_mutex_lock(&cl->jobs_lock);
    }
    pthread_mutex_unlock(&cl->jobs_lock);
    return NULL;
}

rill_err_t rill__restorer_submit(rill_store_t *s, rill_assignment_t *asg, const char *topic,
                                 int32_t partition)
{
    struct rill__changelog *cl = s->cl;
    rill__restore_job_t *j = calloc(1, sizeof(*j));
    if (!j || !(j->topic = strdup(topic))) {
        free(j);
        return RILL_ENOMEM;
    }
    j->asg = rill_assignment_retain(asg);
    j->partition = partition;
    pthread_mutex_lock(&cl->jobs_lock);
    if (!cl->restorer_started) {
        if (pthread_create(&cl->restorer, NULL, restorer_main, s)) {
            pthread_mutex_unlock(&cl->jobs_lock);
            job_free(j);
            return RILL_EIO;
        }
        cl->restorer_started = 1;
    }
    *cl->jobs_tail = j;
    cl->jobs_tail = &j->next;
    pthread_cond_signal(&cl->jobs_cv);
    pthread_mutex_unlock(&cl->jobs_lock);
    return RILL_OK;
}

void rill__restorer_stop(struct rill__changelog *cl)
{
    pthread_mutex_lock(&cl->jobs_lock);
    int started = cl->restorer_started;
    atomic_store_explicit(&cl->restorer_stop, 1, memory_order_relaxed);
    pthread_cond_signal(&cl->jobs_cv);
    pthread_mutex_unlock(&cl->jobs_lock);
    if (started)
        pthread_join(cl->restorer, NULL);
    while (cl->jobs) {
        rill__restore_job_t *j = cl->jobs;
        cl->jobs = j->next;
        job_free(j);
    }
    cl->jobs_tail = &cl->jobs;
    cl->restorer_started = 0;
}
