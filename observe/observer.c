/*
 * The observer: what a service watches (pipelines, root supervisors,
 * stores, tables), and the public calls that render it (obs_int.h).
 *
 * Root supervisors are watched by a small actor of the observer's own
 * that monitors them: a supervisor that gave up is gone, and only its
 * DOWN says whether it ended normally (stopped) or gave up (liveness).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../actors/seam.h"
#include "../actors/util.h"
#include "obs_int.h"

enum { WATCH_MSG = RILL_MSG_USER };

/* ---- the watcher ---------------------------------------------------------- */

static void watch_unref(obs_watch_t *w)
{
    pthread_mutex_lock(&w->lock);
    int last = --w->refs == 0;
    pthread_mutex_unlock(&w->lock);
    if (last) {
        pthread_mutex_destroy(&w->lock);
        free(w);
    }
}

static rill_err_t watcher_behavior(rill_ctx_t *ctx, void *state, rill_msg_t *msg)
{
    obs_watch_t *w = state;
    if (msg->type == WATCH_MSG) {
        rill_monitor_t m;
        rill_monitor(ctx, (rill_aid_t){msg->arg}, &m); /* a gone one comes back as NOPROC */
        rill_reply(ctx, msg, &(rill_msg_t){.type = WATCH_MSG});
    } else if (msg->type == RILL_MSG_DOWN && msg->payload) {
        const rill_down_t *d = msg->payload;
        pthread_mutex_lock(&w->lock);
        for (int i = 0; i < w->nroots; i++)
            if (rill_aid_eq(w->roots[i].aid, d->actor) && !w->roots[i].down) {
                w->roots[i].down = 1;
                w->roots[i].reason = d->reason;
            }
        pthread_mutex_unlock(&w->lock);
    }
    return RILL_OK;
}

static void watcher_terminate(rill_ctx_t *ctx, void *state, const rill_exit_t *reason)
{
    (void)ctx;
    (void)reason;
    watch_unref(state);
}

/* ---- the observer --------------------------------------------------------- */

rill_observer_t *rill_observer_new(rill_system_t *sys, const char *service)
{
    if (!sys)
        return NULL;
    rill_observer_t *o = calloc(1, sizeof(*o));
    obs_watch_t *w = calloc(1, sizeof(*w));
    if (!o || !w) {
        free(o);
        free(w);
        return NULL;
    }
    o->sys = sys;
    snprintf(o->service, sizeof(o->service), "%s", service && *service ? service : "rill");
    pthread_mutex_init(&o->lock, NULL);
    pthread_mutex_init(&w->lock, NULL);
    w->refs = 1;
    o->watch = w;
    return o;
}

static int add_slot(rill_observer_t *o, int *n)
{
    pthread_mutex_lock(&o->lock);
    if (*n >= OBS_MAX) {
        pthread_mutex_unlock(&o->lock);
        return -1;
    }
    return (*n)++; /* the lock stays held: the caller fills the slot */
}

rill_err_t rill_observer_add_pipeline(rill_observer_t *obs, rill_pipeline_t *p)
{
    if (!obs || !p)
        return RILL_EINVAL;
    int i = add_slot(obs, &obs->npipes);
    if (i < 0)
        return RILL_EFULL;
    obs->pipes[i] = p;
    pthread_mutex_unlock(&obs->lock);
    return RILL_OK;
}

rill_err_t rill_observer_add_supervisor(rill_observer_t *obs, rill_aid_t sup, const char *name)
{
    if (!obs || rill_aid_is_none(sup))
        return RILL_EINVAL;
    if (rill__tls_exec)
        return RILL_ESTATE;
    pthread_mutex_lock(&obs->lock);
    if (rill_aid_is_none(obs->watcher)) {
        pthread_mutex_lock(&obs->watch->lock);
        obs->watch->refs++;
        pthread_mutex_unlock(&obs->watch->lock);
        rill_spawn_opts_t so = {.behavior = watcher_behavior,
                                .terminate = watcher_terminate,
                                .state = obs->watch,
                                .mailbox_capacity = 128};
        rill_err_t err = rill_spawn(obs->sys, &so, &obs->watcher);
        if (err) {
            obs->watcher = RILL_AID_NONE;
            watch_unref(obs->watch);
            pthread_mutex_unlock(&obs->lock);
            return err;
        }
    }
    obs_watch_t *w = obs->watch;
    pthread_mutex_lock(&w->lock);
    if (w->nroots >= OBS_MAX) {
        pthread_mutex_unlock(&w->lock);
        pthread_mutex_unlock(&obs->lock);
        return RILL_EFULL;
    }
    int i = w->nroots++;
    w->roots[i].aid = sup;
    snprintf(obs->root_names[i], sizeof(obs->root_names[i]), "%s",
             name && *name ? name : "supervisor");
    pthread_mutex_unlock(&w->lock);
    /* Monitored before this returns: a supervisor that gives up right
     * after is seen giving up (not gone with an unknown reason). */
    rill_msg_t m = {.type = WATCH_MSG, .arg = sup.id}, reply = {0};
    rill_err_t err = rill_ask_sync(obs->sys, obs->watcher, &m, 10000, &reply);
    pthread_mutex_unlock(&obs->lock);
    return err;
}

rill_err_t rill_observer_add_store(rill_observer_t *obs, rill_store_t *store, const char *name)
{
    if (!obs || !store || !name)
        return RILL_EINVAL;
    int i = add_slot(obs, &obs->nstores);
    if (i < 0)
        return RILL_EFULL;
    obs->stores[i] = store;
    snprintf(obs->store_names[i], sizeof(obs->store_names[i]), "%s", name);
    pthread_mutex_unlock(&obs->lock);
    return RILL_OK;
}

rill_err_t rill_observer_add_table(rill_observer_t *obs, rill_table_t *table, const char *name)
{
    if (!obs || !table || !name)
        return RILL_EINVAL;
    int i = add_slot(obs, &obs->ntables);
    if (i < 0)
        return RILL_EFULL;
    obs->tables[i] = table;
    snprintf(obs->table_names[i], sizeof(obs->table_names[i]), "%s", name);
    pthread_mutex_unlock(&obs->lock);
    return RILL_OK;
}

void rill_observer_free(rill_observer_t *obs)
{
    if (!obs)
        return;
    if (!rill_aid_is_none(obs->watcher))
        rill_stop(obs->sys, obs->watcher); /* its terminate lets go of watch */
    watch_unref(obs->watch);
    pthread_mutex_destroy(&obs->lock);
    free(obs->prev_busy);
    free(obs->prev_up);
    free(obs);
}

/* ---- the public renderings ------------------------------------------------ */

static rill_err_t render(rill_observer_t *obs, int what, int kind, char **out, size_t *len)
{
    if (!obs || !out)
        return RILL_EINVAL;
    *out = NULL;
    if (rill__tls_exec)
        return RILL_ESTATE;
    obs_snap_t *s = obs_snap_take(obs, what);
    if (!s)
        return RILL_ENOMEM;
    obs_buf_t b = {0};
    switch (kind) {
    case 0:
        obs_render_prom(s, &b);
        break;
    case 1:
        obs_render_status(obs, s, &b);
        break;
    case 2:
        obs_render_tree_json(s, &b);
        break;
    default:
        obs_render_tree_dot(s, &b);
        break;
    }
    obs_snap_free(s);
    return obs_take(&b, out, len);
}

rill_err_t rill_observer_metrics(rill_observer_t *obs, char **text, size_t *len)
{
    return render(obs, OBS_SNAP_ALL, 0, text, len);
}

rill_err_t rill_observer_status(rill_observer_t *obs, char **out)
{
    return render(obs, OBS_SNAP_ALL, 1, out, NULL);
}

rill_err_t rill_observer_tree(rill_observer_t *obs, int dot, char **out)
{
    return render(obs, OBS_SNAP_TREE, dot ? 3 : 2, out, NULL);
}

static int health(rill_observer_t *obs, int ready, char **json)
{
    if (json)
        *json = NULL;
    if (!obs || rill__tls_exec)
        return 0;
    obs_snap_t *s = obs_snap_take(obs, ready ? OBS_SNAP_HEALTH : OBS_SNAP_TREE);
    if (!s)
        return 0;
    int ok = ready ? s->ready : s->live;
    if (json) {
        obs_buf_t b = {0};
        obs_printf(&b, "{\"status\":");
        obs_json_str(&b, ready ? (ok ? "ready" : "not ready") : (ok ? "live" : "dead"));
        obs_printf(&b, ",\"reason\":");
        obs_json_str(&b, ready ? s->ready_reason : s->live_reason);
        obs_printf(&b, "}\n");
        if (obs_take(&b, json, NULL))
            *json = NULL;
    }
    obs_snap_free(s);
    return ok;
}

int rill_observer_live(rill_observer_t *obs, char **json)
{
    return health(obs, 0, json);
}

int rill_observer_ready(rill_observer_t *obs, char **json)
{
    return health(obs, 1, json);
}
