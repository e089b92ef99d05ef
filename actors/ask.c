/*
 * rill_ask_sync: a blocking ask from a thread that is not an executor,
 * through a short-lived reply actor that also watches the asked actor.
 */
#include <stdlib.h>
#include <time.h>

#include "../actors/util.h"
#include "actor_int.h"
#include "msgtypes.h"

/*
 * The caller sends the request itself (so a full mailbox answers at once),
 * from a small reply actor, and waits on a condition variable with its own
 * deadline (so busy executors cannot stretch it). The state is shared by
 * the caller and the reply actor and freed by whichever lets go last.
 */
typedef struct sync_ask {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int refs;      /* under lock: caller + reply actor */
    int answered;  /* under lock */
    int abandoned; /* under lock: the caller gave up */
    uint64_t corr;
    rill_aid_t to; /* the asked actor, monitored by the reply actor */
    rill_msg_t reply;
} sync_ask_t;

static void sync_ask_unref_locked(sync_ask_t *s)
{
    int last = --s->refs == 0;
    pthread_mutex_unlock(&s->lock);
    if (last) {
        pthread_cond_destroy(&s->cond);
        pthread_mutex_destroy(&s->lock);
        free(s);
    }
}

/* The asked actor is watched: if it ends without replying, the caller
 * hears RILL_ESTOPPED at once instead of waiting out its deadline. */
static rill_err_t sync_ask_init(rill_ctx_t *ctx, void *state)
{
    sync_ask_t *s = state;
    rill_monitor_t m;
    rill_monitor(ctx, s->to, &m);
    return RILL_OK;
}

static rill_err_t sync_ask_behavior(rill_ctx_t *ctx, void *state, rill_msg_t *msg)
{
    sync_ask_t *s = state;
    if (msg->type == RILL_MSG_DOWN && !msg->corr) {
        /* The DOWN comes through the control queue, ahead of a reply the
         * actor sent before it ended: go round the mailbox once (FIFO,
         * behind that reply) before giving up. */
        rill_msg_t again = {.type = RILL__SYNC_ASK_GONE};
        if (rill_send(ctx, rill_self(ctx), &again) != RILL_OK)
            rill_stop_self(ctx);
        return RILL_OK;
    }
    if (msg->type == RILL__SYNC_ASK_GONE) {
        rill_stop_self(ctx); /* no reply came: the caller hears RILL_ESTOPPED */
        return RILL_OK;
    }
    if (msg->corr != s->corr)
        return RILL_OK; /* not ours: released as usual */
    pthread_mutex_lock(&s->lock);
    if (!s->abandoned && !s->answered) {
        s->reply = *msg;
        s->reply.flags &= ~RILL__MSG_F_REPLY;
        rill_msg_take(msg);
        s->answered = 1;
        pthread_cond_signal(&s->cond);
    } else {
        atomic_fetch_add_explicit(&ctx->sys->dead_letters, 1, memory_order_relaxed);
    }
    pthread_mutex_unlock(&s->lock);
    rill_stop_self(ctx);
    return RILL_OK;
}

static void sync_ask_terminate(rill_ctx_t *ctx, void *state, const rill_exit_t *reason)
{
    (void)ctx;
    (void)reason;
    sync_ask_t *s = state;
    pthread_mutex_lock(&s->lock);
    pthread_cond_signal(&s->cond); /* wakes a caller waiting on a dying helper */
    sync_ask_unref_locked(s);
}

rill_err_t rill_ask_sync(rill_system_t *sys, rill_aid_t to, const rill_msg_t *request,
                         int timeout_ms, rill_msg_t *reply)
{
    if (!sys || !request || !reply || rill_aid_is_none(to) || timeout_ms < 0)
        return RILL_EINVAL;
    if (rill__tls_exec)
        return RILL_ESTATE;
    if (atomic_load(&sys->state) != SYS_RUNNING)
        return RILL_ESTATE;
    sync_ask_t *s = calloc(1, sizeof(*s));
    if (!s)
        return RILL_ENOMEM;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    s->refs = 2;
    s->corr = RILL__CORR_SYNC | atomic_fetch_add(&sys->next_ref, 1);
    s->to = to;
    rill_spawn_opts_t o = {.behavior = sync_ask_behavior,
                           .init = sync_ask_init,
                           .terminate = sync_ask_terminate,
                           .state = s,
                           .mailbox_capacity = 8};
    rill_aid_t helper;
    rill_err_t err = rill_spawn(sys, &o, &helper);
    if (err) {
        pthread_cond_destroy(&s->cond);
        pthread_mutex_destroy(&s->lock);
        free(s);
        return err;
    }
    rill_msg_t m = *request;
    m.from = helper;
    m.corr = s->corr;
    m.flags &= ~RILL__MSG_F_REPLY;
    err = rill_tell(sys, to, &m);
    if (err == RILL_OK) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += timeout_ms / 1000;
        ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_mutex_lock(&s->lock);
        while (!s->answered && s->refs == 2 && pthread_cond_timedwait(&s->cond, &s->lock, &ts) == 0)
            ;
        if (s->answered) {
            *reply = s->reply;
        } else {
            err = s->refs == 2 ? RILL_ETIMEDOUT : RILL_ESTOPPED;
            s->abandoned = 1;
        }
    } else {
        pthread_mutex_lock(&s->lock);
        s->abandoned = 1;
    }
    sync_ask_unref_locked(s);
    /* After a reply the helper stops itself; otherwise stop it now, and a
     * late reply becomes a dead letter. */
    if (err != RILL_OK)
        rill_stop(sys, helper);
    return err;
}
