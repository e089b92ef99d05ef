/*
 * The system: creating, starting, stopping and destroying it, its
 * statistics, and the attachments other layers hang off it. Its parts live
 * beside it: executors in executor.c, the actor table and the name
 * registry in registry.c, spawning and sending in spawn.c.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../actors/util.h"
#include "actor_int.h"

#define DEFAULT_MAILBOX 256u
#define DEFAULT_BATCH   64u
#define DEFAULT_SPIN_US 50u
#define DEFAULT_MAX     (1u << 20)

/* ------------------------------------------------------------------ */
/* System                                                              */
/* ------------------------------------------------------------------ */

rill_system_t *rill_system_new(const rill_system_opts_t *opts, char *errstr, size_t errstr_size)
{
    rill_system_opts_t o = {0};
    if (opts)
        o = *opts;
    if (o.executors < 0 || o.executors > 1024) {
        rill__fail(RILL_EINVAL, errstr, errstr_size,
                   "executors must be between 0 (one per core) and 1024, got %d", o.executors);
        return NULL;
    }
    if (o.mailbox_capacity > RILL__MAX_MAILBOX) {
        rill__fail(RILL_EINVAL, errstr, errstr_size, "mailbox_capacity must be at most %u, got %u",
                   RILL__MAX_MAILBOX, o.mailbox_capacity);
        return NULL;
    }
    if (!o.executors) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        o.executors = n > 0 ? (int)n : 1;
    }
    o.mailbox_capacity =
        rill__round_pow2(o.mailbox_capacity ? o.mailbox_capacity : DEFAULT_MAILBOX);
    if (!o.batch)
        o.batch = DEFAULT_BATCH;
    if (!o.spin_us)
        o.spin_us = DEFAULT_SPIN_US;
    if (!o.max_actors)
        o.max_actors = DEFAULT_MAX;

    rill_system_t *sys = calloc(1, sizeof(*sys));
    if (!sys) {
        rill__fail(RILL_ENOMEM, errstr, errstr_size, "out of memory");
        return NULL;
    }
    sys->opts = o;
    sys->nexec = o.executors;
    pthread_mutex_init(&sys->slots_lock, NULL);
    pthread_mutex_init(&sys->names_lock, NULL);
    pthread_mutex_init(&sys->alive_lock, NULL);
    pthread_cond_init(&sys->alive_cond, NULL);
    pthread_mutex_init(&sys->attach_lock, NULL);
    atomic_init(&sys->next_ref, 1);
    sys->execs = calloc((size_t)sys->nexec, sizeof(*sys->execs));
    if (!sys->execs) {
        rill_system_destroy(sys);
        rill__fail(RILL_ENOMEM, errstr, errstr_size, "out of memory");
        return NULL;
    }
    for (int i = 0; i < sys->nexec; i++) {
        if (rill__executor_init(&sys->execs[i], sys, i)) {
            rill_system_destroy(sys);
            rill__fail(RILL_EIO, errstr, errstr_size, "libev could not create a loop: %s",
                       strerror(errno));
            return NULL;
        }
    }
    return sys;
}

int rill_system_executors(const rill_system_t *sys)
{
    return sys ? sys->nexec : 0;
}

rill_err_t rill_system_start(rill_system_t *sys)
{
    if (!sys)
        return RILL_EINVAL;
    if (rill__tls_exec)
        return RILL_ESTATE;
    int expected = SYS_NEW;
    if (!atomic_compare_exchange_strong(&sys->state, &expected, SYS_RUNNING))
        return RILL_ESTATE;
    for (int i = 0; i < sys->nexec; i++)
        if (rill__executor_start(&sys->execs[i]))
            return RILL_EIO; /* rill_system_stop() joins the ones that started */
    return RILL_OK;
}

static void stop_all_actors(rill_system_t *sys)
{
    pthread_mutex_lock(&sys->slots_lock);
    uint32_t used = sys->slots_used;
    pthread_mutex_unlock(&sys->slots_lock);
    for (uint32_t idx = 0; idx < used; idx++) {
        rill__slot_t *slot = rill__slot_of(sys, idx);
        if (!slot || atomic_load(&slot->state) != SLOT_ALIVE)
            continue;
        rill_aid_t aid = {((uint64_t)atomic_load(&slot->gen) << 32) | idx};
        rill_stop(sys, aid);
    }
}

rill_err_t rill_system_stop(rill_system_t *sys, int timeout_ms)
{
    if (!sys)
        return RILL_EINVAL;
    if (rill__tls_exec)
        return RILL_ESTATE;
    int st = atomic_load(&sys->state);
    if (st == SYS_STOPPED)
        return RILL_OK;
    if (st == SYS_NEW) {
        /* Actors spawned before start still get init and terminate. */
        rill_system_start(sys);
    }
    atomic_store(&sys->state, SYS_STOPPING);
    int64_t deadline = timeout_ms < 0 ? INT64_MAX : rill__now_ms() + timeout_ms;

    /* Actors may spawn or link others while stopping; ask again until
     * none is left. */
    pthread_mutex_lock(&sys->alive_lock);
    while (sys->alive > 0) {
        pthread_mutex_unlock(&sys->alive_lock);
        stop_all_actors(sys);
        pthread_mutex_lock(&sys->alive_lock);
        if (sys->alive == 0)
            break;
        int64_t now = rill__now_ms();
        if (now >= deadline) {
            pthread_mutex_unlock(&sys->alive_lock);
            return RILL_ETIMEDOUT;
        }
        int64_t wait_ms = deadline - now < 100 ? deadline - now : 100;
        struct timespec ts = rill__realtime_after_ms(wait_ms);
        pthread_cond_timedwait(&sys->alive_cond, &sys->alive_lock, &ts);
    }
    pthread_mutex_unlock(&sys->alive_lock);

    atomic_store_explicit(&sys->state, SYS_STOPPED, memory_order_release);
    for (int i = 0; i < sys->nexec; i++)
        rill__executor_join(&sys->execs[i]);
    return RILL_OK;
}

void rill_system_destroy(rill_system_t *sys)
{
    if (!sys)
        return;
    if (sys->execs && atomic_load(&sys->state) != SYS_STOPPED)
        rill_system_stop(sys, -1);
    if (sys->execs) {
        /* Executors are joined: nothing can look at retired actors now. */
        for (int i = 0; i < sys->nexec; i++)
            rill__executor_reap_all(&sys->execs[i]);
        for (int i = 0; i < sys->nexec; i++) {
            if (sys->execs[i].loop)
                ev_loop_destroy(sys->execs[i].loop);
            rill__settle_acc_free(sys->execs[i].settle);
            rill__blocks_free(sys->execs[i].blocks);
        }
        free(sys->execs);
    }
    for (size_t i = 0; i < sizeof(sys->attach) / sizeof(sys->attach[0]); i++)
        if (sys->attach[i].key && sys->attach[i].destroy)
            sys->attach[i].destroy(sys->attach[i].ptr);
    pthread_mutex_destroy(&sys->attach_lock);
    rill__registry_free(sys);
    pthread_mutex_destroy(&sys->slots_lock);
    pthread_mutex_destroy(&sys->names_lock);
    pthread_mutex_destroy(&sys->alive_lock);
    pthread_cond_destroy(&sys->alive_cond);
    free(sys);
}

void rill_system_stats(rill_system_t *sys, rill_system_stats_t *out)
{
    if (!out)
        return;
    memset(out, 0, sizeof(*out));
    if (!sys)
        return;
    out->dead_letters = atomic_load_explicit(&sys->dead_letters, memory_order_relaxed);
    out->spawned = atomic_load_explicit(&sys->spawned, memory_order_relaxed);
    pthread_mutex_lock(&sys->alive_lock);
    out->alive = sys->alive;
    pthread_mutex_unlock(&sys->alive_lock);
}

void *rill__system_attachment(rill_system_t *sys, const void *key,
                              void *(*create)(char *errstr, size_t errstr_size),
                              void (*destroy)(void *ptr), char *errstr, size_t errstr_size)
{
    void *ptr = NULL;
    pthread_mutex_lock(&sys->attach_lock);
    size_t n = sizeof(sys->attach) / sizeof(sys->attach[0]), i;
    for (i = 0; i < n && sys->attach[i].key; i++)
        if (sys->attach[i].key == key) {
            ptr = sys->attach[i].ptr;
            break;
        }
    if (!ptr && i < n) {
        ptr = create(errstr, errstr_size);
        if (ptr) {
            sys->attach[i].key = key;
            sys->attach[i].ptr = ptr;
            sys->attach[i].destroy = destroy;
        }
    } else if (!ptr) {
        rill__fail(RILL_ENOMEM, errstr, errstr_size, "no room for another system attachment");
    }
    pthread_mutex_unlock(&sys->attach_lock);
    return ptr;
}
