/*
 * One snapshot of everything an observer watches, taken through the
 * public stats calls (each Kafka stage and supervisor is asked, from the
 * calling thread, never an executor), and the health read off it:
 *
 *  - live: no root supervisor gave up (ended abnormally), no pipeline
 *    failed for good;
 *  - ready: live, and every Kafka source has joined its group and got its
 *    assignment (or its fixed partitions) and reaches its brokers, no
 *    Kafka sink has lost its brokers, no child waits in restart backoff,
 *    every table has caught up and no store is restoring.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "obs_int.h"

static void node_free(obs_node_t *kids, size_t n)
{
    for (size_t i = 0; i < n; i++)
        node_free(kids[i].kids, kids[i].nkids);
    free(kids);
}

/* The children of supervisor sup, and theirs, down to depth. */
static obs_node_t *walk(rill_system_t *sys, rill_aid_t sup, int depth, size_t *n)
{
    *n = 0;
    rill_child_info_t *info = malloc(OBS_MAX_KIDS * sizeof(*info));
    size_t count = 0;
    if (!info || rill_sup_children(sys, sup, info, OBS_MAX_KIDS, &count)) {
        free(info);
        return NULL;
    }
    if (count > OBS_MAX_KIDS)
        count = OBS_MAX_KIDS;
    obs_node_t *kids = count ? calloc(count, sizeof(*kids)) : NULL;
    if (!kids) {
        free(info);
        return NULL;
    }
    for (size_t i = 0; i < count; i++) {
        obs_node_t *k = &kids[i];
        snprintf(k->id, sizeof(k->id), "%s", info[i].id);
        k->aid = info[i].aid;
        k->supervisor = info[i].supervisor;
        k->running = info[i].running;
        k->restarting = info[i].restarting;
        k->restarts = info[i].restarts;
        k->next_delay_ms = info[i].next_delay_ms;
        k->last_exit = info[i].last_exit;
        if (k->supervisor && !rill_aid_is_none(k->aid) && depth > 1)
            k->kids = walk(sys, k->aid, depth - 1, &k->nkids);
    }
    free(info);
    *n = count;
    return kids;
}

static void take_stage(rill_system_t *sys, const rill_pipeline_t *p, int i, obs_stage_t *st)
{
    if (rill_pipeline_stage_info(p, i, &st->info))
        return;
    st->is_consumer = !strcmp(st->info.kind, "kafka-source");
    st->is_producer = !strcmp(st->info.kind, "kafka-sink");
    rill_aid_t aid = st->info.aid;
    if (rill_aid_is_none(aid))
        return;
    st->have_actor = rill_actor_stats(sys, aid, &st->astats) == RILL_OK;
    if (st->is_consumer) {
        st->have_cs = rill_consumer_stats(sys, aid, &st->cs) == RILL_OK;
        rill_partition_stats_t *parts = malloc(OBS_MAX_PARTS * sizeof(*parts));
        size_t n = 0;
        if (parts && rill_consumer_partitions(sys, aid, parts, OBS_MAX_PARTS, &n) == RILL_OK) {
            st->parts = parts;
            st->nparts = n < OBS_MAX_PARTS ? n : OBS_MAX_PARTS;
        } else {
            free(parts);
        }
    }
    if (st->is_producer)
        st->have_ps = rill_producer_stats(sys, aid, &st->ps) == RILL_OK;
}

static void take_pipe(rill_system_t *sys, rill_pipeline_t *p, int stages, obs_pipe_t *op)
{
    rill_pipeline_info(p, &op->info);
    if (op->info.started)
        op->ended = rill_pipeline_wait(p, 0, &op->res) == RILL_OK;
    if (!stages || op->info.stages <= 0)
        return;
    op->stages = calloc((size_t)op->info.stages, sizeof(*op->stages));
    if (!op->stages)
        return;
    op->nstages = op->info.stages;
    for (int i = 0; i < op->nstages; i++)
        take_stage(sys, p, i, &op->stages[i]);
}

/* The first node restarting under kids, or NULL. */
static const obs_node_t *restarting(const obs_node_t *kids, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (kids[i].restarting)
            return &kids[i];
        const obs_node_t *k = restarting(kids[i].kids, kids[i].nkids);
        if (k)
            return k;
    }
    return NULL;
}

static void judge_live(obs_snap_t *s)
{
    s->live = 1;
    snprintf(s->live_reason, sizeof(s->live_reason), "no supervisor has given up");
    for (int i = 0; i < s->nroots && s->live; i++)
        if (s->roots[i].down && rill_exit_abnormal(&s->roots[i].reason)) {
            s->live = 0;
            snprintf(s->live_reason, sizeof(s->live_reason), "supervisor %s gave up: %.100s",
                     s->roots[i].name, s->roots[i].reason.text);
        }
    for (int i = 0; i < s->npipes && s->live; i++)
        if (s->pipes[i].ended && s->pipes[i].res.end == RILL_PIPELINE_FAILED) {
            s->live = 0;
            snprintf(s->live_reason, sizeof(s->live_reason), "pipeline %s failed (stage %s): %.80s",
                     s->pipes[i].info.name, s->pipes[i].res.stage, s->pipes[i].res.text);
        }
}

#define NOT_READY(...)                                                                             \
    do {                                                                                           \
        s->ready = 0;                                                                              \
        snprintf(s->ready_reason, sizeof(s->ready_reason), __VA_ARGS__);                           \
        return;                                                                                    \
    } while (0)

static void judge_ready(obs_snap_t *s)
{
    s->ready = 1;
    snprintf(s->ready_reason, sizeof(s->ready_reason), "every source is assigned and connected");
    if (!s->live)
        NOT_READY("not live: %.180s", s->live_reason);
    for (int i = 0; i < s->npipes; i++) {
        const obs_pipe_t *p = &s->pipes[i];
        if (!p->info.started && rill_aid_is_none(p->info.supervisor) && !p->nstages)
            continue;
        if (p->ended) {
            if (p->res.end == RILL_PIPELINE_COMPLETED)
                continue; /* a finite job that is done */
            NOT_READY("pipeline %s has ended (%.100s)", p->info.name, p->res.text);
        }
        for (int j = 0; j < p->nstages; j++) {
            const obs_stage_t *st = &p->stages[j];
            if (!st->is_consumer && !st->is_producer)
                continue;
            if (rill_aid_is_none(st->info.aid))
                NOT_READY("pipeline %s: stage %s is not running (between runs)", p->info.name,
                          st->info.name);
            if (st->is_consumer && st->have_cs) {
                if (!st->cs.connected)
                    NOT_READY("pipeline %s: source %s cannot reach its brokers%s%.100s",
                              p->info.name, st->info.name, st->cs.last_error[0] ? ": " : "",
                              st->cs.last_error);
                if (!st->cs.assigned && !st->cs.rebalances)
                    NOT_READY("pipeline %s: source %s has no assignment yet", p->info.name,
                              st->info.name);
                if (st->cs.waiting)
                    NOT_READY("pipeline %s: source %s holds %u partitions for their start",
                              p->info.name, st->info.name, st->cs.waiting);
            }
            if (st->is_producer && st->have_ps && !st->ps.connected)
                NOT_READY("pipeline %s: sink %s cannot reach its brokers%s%.100s", p->info.name,
                          st->info.name, st->ps.last_error[0] ? ": " : "", st->ps.last_error);
        }
    }
    for (int i = 0; i < s->nroots; i++) {
        const obs_node_t *k = restarting(s->roots[i].kids, s->roots[i].nkids);
        if (k)
            NOT_READY("%s: child %s waits %u ms to restart", s->roots[i].name, k->id,
                      k->next_delay_ms);
    }
    for (int i = 0; i < s->ntables; i++)
        if (s->tables[i].ok && !s->tables[i].st.caught_up)
            NOT_READY("table %s has not caught up", s->tables[i].name);
    for (int i = 0; i < s->nstores; i++)
        if (s->stores[i].ok && s->stores[i].st.restoring)
            NOT_READY("store %s is restoring %u partitions", s->stores[i].name,
                      s->stores[i].st.restoring);
}

static void take_exec(rill_observer_t *obs, obs_snap_t *s)
{
    int n = rill_system_executors(obs->sys);
    s->exec = calloc((size_t)(n > 0 ? n : 1), sizeof(*s->exec));
    s->busy_ratio = calloc((size_t)(n > 0 ? n : 1), sizeof(*s->busy_ratio));
    if (!s->exec || !s->busy_ratio)
        return;
    s->nexec = n;
    pthread_mutex_lock(&obs->lock);
    if (obs->nexec != n) {
        free(obs->prev_busy);
        free(obs->prev_up);
        obs->prev_busy = calloc((size_t)n, sizeof(uint64_t));
        obs->prev_up = calloc((size_t)n, sizeof(uint64_t));
        obs->nexec = obs->prev_busy && obs->prev_up ? n : 0;
    }
    for (int i = 0; i < n; i++) {
        rill_executor_stats(obs->sys, i, &s->exec[i]);
        s->busy_ratio[i] = -1;
        if (obs->nexec == n) {
            uint64_t dup = s->exec[i].uptime_ns - obs->prev_up[i];
            uint64_t dbusy = s->exec[i].busy_ns - obs->prev_busy[i];
            if (obs->prev_up[i] && dup > 0)
                s->busy_ratio[i] = dbusy > dup ? 1.0 : (double)dbusy / (double)dup;
            else if (s->exec[i].uptime_ns)
                s->busy_ratio[i] = (double)s->exec[i].busy_ns / (double)s->exec[i].uptime_ns;
            obs->prev_up[i] = s->exec[i].uptime_ns;
            obs->prev_busy[i] = s->exec[i].busy_ns;
        }
    }
    pthread_mutex_unlock(&obs->lock);
}

obs_snap_t *obs_snap_take(rill_observer_t *obs, int what)
{
    obs_snap_t *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    s->time_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    rill_system_stats(obs->sys, &s->sys);
    if (what & OBS_SNAP_EXEC)
        take_exec(obs, s);

    /* The lists, copied under the lock; asked outside it. */
    rill_pipeline_t *pipes[OBS_MAX];
    pthread_mutex_lock(&obs->lock);
    int npipes = obs->npipes;
    memcpy(pipes, obs->pipes, sizeof(pipes));
    pthread_mutex_lock(&obs->watch->lock);
    for (int i = 0; i < obs->watch->nroots; i++) {
        obs_root_t *r = &s->roots[s->nroots++];
        snprintf(r->name, sizeof(r->name), "%s", obs->root_names[i]);
        r->aid = obs->watch->roots[i].aid;
        r->down = obs->watch->roots[i].down;
        r->reason = obs->watch->roots[i].reason;
    }
    pthread_mutex_unlock(&obs->watch->lock);
    s->nstores = obs->nstores;
    for (int i = 0; i < obs->nstores; i++) {
        snprintf(s->stores[i].name, sizeof(s->stores[i].name), "%s", obs->store_names[i]);
        s->stores[i].ok = (what & OBS_SNAP_STORES) &&
                          rill_store_stats(obs->stores[i], &s->stores[i].st) == RILL_OK;
    }
    s->ntables = obs->ntables;
    for (int i = 0; i < obs->ntables; i++) {
        snprintf(s->tables[i].name, sizeof(s->tables[i].name), "%s", obs->table_names[i]);
        s->tables[i].ok = (what & OBS_SNAP_STORES) &&
                          rill_table_stats(obs->tables[i], &s->tables[i].st) == RILL_OK;
    }
    pthread_mutex_unlock(&obs->lock);

    s->npipes = npipes;
    for (int i = 0; i < npipes; i++) {
        take_pipe(obs->sys, pipes[i], what & OBS_SNAP_STAGES, &s->pipes[i]);
        /* A supervised pipeline's own supervisor is a root of the tree. */
        rill_aid_t sup = s->pipes[i].info.supervisor;
        if (!rill_aid_is_none(sup) && s->nroots < (int)(sizeof(s->roots) / sizeof(s->roots[0]))) {
            obs_root_t *r = &s->roots[s->nroots++];
            char pname[sizeof(s->pipes[i].info.name)];
            memcpy(pname, s->pipes[i].info.name, sizeof(pname));
            snprintf(r->name, sizeof(r->name), "%.47s-supervisor", pname);
            r->aid = sup;
        }
    }
    if (what & OBS_SNAP_TREE)
        for (int i = 0; i < s->nroots; i++) {
            obs_root_t *r = &s->roots[i];
            if (!r->down)
                r->kids = walk(obs->sys, r->aid, OBS_MAX_DEPTH, &r->nkids);
        }
    judge_live(s);
    judge_ready(s);
    return s;
}

void obs_snap_free(obs_snap_t *s)
{
    if (!s)
        return;
    for (int i = 0; i < s->npipes; i++) {
        for (int j = 0; j < s->pipes[i].nstages; j++)
            free(s->pipes[i].stages[j].parts);
        free(s->pipes[i].stages);
    }
    for (int i = 0; i < s->nroots; i++)
        node_free(s->roots[i].kids, s->roots[i].nkids);
    free(s->exec);
    free(s->busy_ratio);
    free(s);
}
