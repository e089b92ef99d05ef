/* Helpers for the actor runtime tests: see actor_kit.h. */
#include "actor_kit.h"

#include <malloc.h>
#include <stdio.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
/* From the sanitizer runtime (sanitizer/allocator_interface.h, which gcc 12
 * does not install): bytes the application has allocated and not freed. */
size_t __sanitizer_get_current_allocated_bytes(void);
#define KIT_SANITIZER_HEAP 1
#endif

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int64_t kit_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Between polls: give the executors the CPU (two cores, shared). */
static void poll_pause(void)
{
    struct timespec ts = {0, 200 * 1000};
    nanosleep(&ts, NULL);
}

/* ---- payloads ------------------------------------------------------- */

typedef struct kit_payload {
    kit_tally_t *tally;
    uint64_t value;
} kit_payload_t;

void *kit_payload_new(kit_tally_t *tally, uint64_t value)
{
    kit_payload_t *p = malloc(sizeof(*p));
    if (!p)
        return NULL;
    p->tally = tally;
    p->value = value;
    /* relaxed: a counter read after a happens-before edge (join, condvar,
     * or polling until it reaches a value). */
    atomic_fetch_add_explicit(&tally->made, 1, memory_order_relaxed);
    return p;
}

uint64_t kit_payload_value(const void *payload)
{
    return payload ? ((const kit_payload_t *)payload)->value : 0;
}

void kit_payload_free(void *payload)
{
    kit_payload_t *p = payload;
    if (!p)
        return;
    kit_tally_t *t = p->tally;
    free(p);
    /* release: a test that sees the count has also seen the free. */
    atomic_fetch_add_explicit(&t->released, 1, memory_order_release);
}

void kit_payload_reclaim(void *payload)
{
    kit_payload_t *p = payload;
    if (!p)
        return;
    kit_tally_t *t = p->tally;
    free(p);
    atomic_fetch_add_explicit(&t->reclaimed, 1, memory_order_release);
}

rill_msg_t kit_msg(uint32_t type, uint64_t arg, kit_tally_t *tally)
{
    rill_msg_t m;
    memset(&m, 0, sizeof(m));
    m.type = type;
    m.arg = arg;
    if (tally) {
        m.payload = kit_payload_new(tally, arg);
        m.dtor = m.payload ? kit_payload_free : NULL;
    }
    return m;
}

/* ---- waiting -------------------------------------------------------- */

int kit_wait_until(int (*cond)(void *arg), void *arg, int timeout_ms)
{
    int64_t deadline = kit_now_ms() + timeout_ms;
    for (;;) {
        if (cond(arg))
            return 1;
        if (kit_now_ms() >= deadline)
            return cond(arg) ? 1 : 0;
        poll_pause();
    }
}

int kit_wait_at_least(atomic_long *v, long target, int timeout_ms)
{
    int64_t deadline = kit_now_ms() + timeout_ms;
    for (;;) {
        /* acquire: pairs with the release increments above. */
        if (atomic_load_explicit(v, memory_order_acquire) >= target)
            return 1;
        if (kit_now_ms() >= deadline)
            return 0;
        poll_pause();
    }
}

struct aid_in {
    rill_system_t *sys;
    rill_aid_t aid;
    uint64_t target;
};

static int is_dead(void *arg)
{
    struct aid_in *a = arg;
    return !rill_alive(a->sys, a->aid);
}

int kit_wait_dead(rill_system_t *sys, rill_aid_t aid, int timeout_ms)
{
    struct aid_in a = {sys, aid, 0};
    return kit_wait_until(is_dead, &a, timeout_ms);
}

static int dead_letters_reached(void *arg)
{
    struct aid_in *a = arg;
    rill_system_stats_t st;
    memset(&st, 0, sizeof(st));
    rill_system_stats(a->sys, &st);
    return st.dead_letters >= a->target;
}

int kit_wait_dead_letters(rill_system_t *sys, uint64_t target, int timeout_ms)
{
    struct aid_in a = {sys, RILL_AID_NONE, target};
    return kit_wait_until(dead_letters_reached, &a, timeout_ms);
}

rill_err_t kit_tell_retry(rill_system_t *sys, rill_aid_t to, const rill_msg_t *msg, int timeout_ms)
{
    int64_t deadline = kit_now_ms() + timeout_ms;
    for (;;) {
        rill_err_t e = rill_tell(sys, to, msg);
        if (e != RILL_EFULL || kit_now_ms() >= deadline)
            return e;
        sched_yield();
    }
}

/* ---- condvars on the monotonic clock -------------------------------- */

void kit_cond_init(pthread_cond_t *cv)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &ca);
    pthread_condattr_destroy(&ca);
}

int kit_cond_wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t deadline_ms)
{
    struct timespec ts;
    ts.tv_sec = deadline_ms / 1000;
    ts.tv_nsec = (deadline_ms % 1000) * 1000000;
    return pthread_cond_timedwait(cv, mu, &ts);
}

/* ---- the event log -------------------------------------------------- */

struct kit_log {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t n;        /* events logged, kept or not */
    kit_event_t *ev; /* the first KIT_LOG_MAX */
};

kit_log_t *kit_log_new(void)
{
    kit_log_t *log = calloc(1, sizeof(*log));
    if (!log)
        return NULL;
    log->ev = calloc(KIT_LOG_MAX, sizeof(*log->ev));
    if (!log->ev) {
        free(log);
        return NULL;
    }
    pthread_mutex_init(&log->mu, NULL);
    kit_cond_init(&log->cv);
    return log;
}

void kit_log_free(kit_log_t *log)
{
    if (!log)
        return;
    pthread_cond_destroy(&log->cv);
    pthread_mutex_destroy(&log->mu);
    free(log->ev);
    free(log);
}

void kit_log_add(kit_log_t *log, const rill_ctx_t *ctx, const rill_msg_t *msg)
{
    kit_event_t e;
    memset(&e, 0, sizeof(e));
    e.self = ctx ? rill_self(ctx) : RILL_AID_NONE;
    e.type = msg->type;
    e.arg = msg->arg;
    e.corr = msg->corr;
    e.from = msg->from;
    e.payload = msg->payload;
    e.at_ms = kit_now_ms();
    if ((msg->type == RILL_MSG_DOWN || msg->type == RILL_MSG_EXIT) && msg->payload) {
        e.has_down = 1;
        memcpy(&e.down, msg->payload, sizeof(e.down));
    } else if (msg->dtor == kit_payload_free) {
        e.value = kit_payload_value(msg->payload);
    }
    pthread_mutex_lock(&log->mu);
    if (log->n < KIT_LOG_MAX)
        log->ev[log->n] = e;
    log->n++;
    pthread_cond_broadcast(&log->cv);
    pthread_mutex_unlock(&log->mu);
}

static size_t count_type_locked(kit_log_t *log, uint32_t type)
{
    size_t c = 0;
    size_t kept = log->n < KIT_LOG_MAX ? log->n : KIT_LOG_MAX;
    for (size_t i = 0; i < kept; i++)
        c += log->ev[i].type == type;
    return c;
}

int kit_log_wait(kit_log_t *log, size_t n, int timeout_ms)
{
    int64_t deadline = kit_now_ms() + timeout_ms;
    pthread_mutex_lock(&log->mu);
    while (log->n < n && kit_cond_wait_until(&log->cv, &log->mu, deadline) != ETIMEDOUT)
        ;
    int ok = log->n >= n;
    pthread_mutex_unlock(&log->mu);
    return ok;
}

int kit_log_wait_type(kit_log_t *log, uint32_t type, size_t n, int timeout_ms)
{
    int64_t deadline = kit_now_ms() + timeout_ms;
    pthread_mutex_lock(&log->mu);
    while (count_type_locked(log, type) < n &&
           kit_cond_wait_until(&log->cv, &log->mu, deadline) != ETIMEDOUT)
        ;
    int ok = count_type_locked(log, type) >= n;
    pthread_mutex_unlock(&log->mu);
    return ok;
}

size_t kit_log_size(kit_log_t *log)
{
    pthread_mutex_lock(&log->mu);
    size_t n = log->n;
    pthread_mutex_unlock(&log->mu);
    return n;
}

size_t kit_log_count(kit_log_t *log, uint32_t type)
{
    pthread_mutex_lock(&log->mu);
    size_t c = count_type_locked(log, type);
    pthread_mutex_unlock(&log->mu);
    return c;
}

kit_event_t kit_log_at(kit_log_t *log, size_t i)
{
    kit_event_t e;
    memset(&e, 0, sizeof(e));
    pthread_mutex_lock(&log->mu);
    if (i < log->n && i < KIT_LOG_MAX)
        e = log->ev[i];
    pthread_mutex_unlock(&log->mu);
    return e;
}

int kit_log_find(kit_log_t *log, uint32_t type, rill_aid_t about, kit_event_t *out)
{
    int found = 0;
    pthread_mutex_lock(&log->mu);
    size_t kept = log->n < KIT_LOG_MAX ? log->n : KIT_LOG_MAX;
    for (size_t i = 0; i < kept && !found; i++) {
        const kit_event_t *e = &log->ev[i];
        rill_aid_t who = e->has_down ? e->down.actor : e->from;
        if (e->type == type && (rill_aid_is_none(about) || rill_aid_eq(who, about))) {
            *out = *e;
            found = 1;
        }
    }
    pthread_mutex_unlock(&log->mu);
    return found;
}

/* ---- the recorder --------------------------------------------------- */

typedef struct kit_run {
    kit_run_fn *fn;
    void *arg;
} kit_run_t;

rill_err_t kit_recorder(rill_ctx_t *ctx, void *state, rill_msg_t *msg)
{
    kit_log_t *log = state;
    if (msg->type == KIT_MSG_RUN && msg->payload) {
        kit_run_t *run = msg->payload;
        run->fn(ctx, run->arg);
    }
    if (msg->type == KIT_MSG_PING || msg->type == KIT_MSG_RUN) {
        rill_msg_t reply;
        memset(&reply, 0, sizeof(reply));
        reply.type = msg->type;
        reply.arg = msg->arg;
        rill_reply(ctx, msg, &reply);
        return RILL_OK;
    }
    kit_log_add(log, ctx, msg);
    return RILL_OK;
}

rill_aid_t kit_spawn_recorder(rill_system_t *sys, kit_log_t *log, int executor)
{
    rill_spawn_opts_t o;
    memset(&o, 0, sizeof(o));
    o.behavior = kit_recorder;
    o.state = log;
    o.executor = KIT_EXEC(executor);
    rill_aid_t aid = RILL_AID_NONE;
    if (rill_spawn(sys, &o, &aid) != RILL_OK)
        return RILL_AID_NONE;
    return aid;
}

rill_err_t kit_fence(rill_system_t *sys, rill_aid_t aid)
{
    rill_msg_t req, reply;
    memset(&req, 0, sizeof(req));
    memset(&reply, 0, sizeof(reply));
    req.type = KIT_MSG_PING;
    rill_err_t e = rill_ask_sync(sys, aid, &req, KIT_WAIT_MS, &reply);
    if (e == RILL_OK && reply.dtor)
        reply.dtor(reply.payload);
    return e;
}

rill_err_t kit_run_in(rill_system_t *sys, rill_aid_t aid, kit_run_fn *fn, void *arg)
{
    /* The run lives on this stack: ask_sync waits until it was used. */
    kit_run_t run = {fn, arg};
    rill_msg_t req, reply;
    memset(&req, 0, sizeof(req));
    memset(&reply, 0, sizeof(reply));
    req.type = KIT_MSG_RUN;
    req.payload = &run;
    rill_err_t e = rill_ask_sync(sys, aid, &req, KIT_WAIT_MS, &reply);
    if (e == RILL_OK && reply.dtor)
        reply.dtor(reply.payload);
    return e;
}

/* ---- the gate ------------------------------------------------------- */

void kit_gate_init(kit_gate_t *g)
{
    pthread_mutex_init(&g->mu, NULL);
    kit_cond_init(&g->cv);
    g->open = 0;
    atomic_init(&g->arrived, 0);
    atomic_init(&g->passed_open, 0);
}

void kit_gate_destroy(kit_gate_t *g)
{
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->mu);
}

void kit_gate_open(kit_gate_t *g)
{
    pthread_mutex_lock(&g->mu);
    g->open = 1;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

int kit_gate_pass(kit_gate_t *g, int timeout_ms)
{
    int64_t deadline = kit_now_ms() + timeout_ms;
    atomic_fetch_add_explicit(&g->arrived, 1, memory_order_release);
    pthread_mutex_lock(&g->mu);
    while (!g->open && kit_cond_wait_until(&g->cv, &g->mu, deadline) != ETIMEDOUT)
        ;
    int open = g->open;
    pthread_mutex_unlock(&g->mu);
    return open;
}

/* ---- systems -------------------------------------------------------- */

rill_system_t *kit_system(int executors, uint32_t mailbox_capacity, uint32_t batch, int start)
{
    rill_system_opts_t o;
    memset(&o, 0, sizeof(o));
    o.executors = executors;
    o.mailbox_capacity = mailbox_capacity;
    o.batch = batch;
    char err[256] = "";
    rill_system_t *sys = rill_system_new(&o, err, sizeof(err));
    if (!sys) {
        fprintf(stderr, "rill_system_new: %s\n", err);
        return NULL;
    }
    if (start) {
        rill_err_t e = rill_system_start(sys);
        if (e != RILL_OK) {
            fprintf(stderr, "rill_system_start: %s\n", rill_err_name(e));
            rill_system_destroy(sys);
            return NULL;
        }
    }
    return sys;
}

long kit_rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long size = 0, resident = 0;
    if (!f)
        return -1;
    if (fscanf(f, "%ld %ld", &size, &resident) != 2)
        resident = -1;
    fclose(f);
    return resident < 0 ? -1 : resident * sysconf(_SC_PAGESIZE);
}

long kit_heap_bytes(void)
{
#ifdef KIT_SANITIZER_HEAP
    return (long)__sanitizer_get_current_allocated_bytes();
#else
    struct mallinfo2 mi = mallinfo2();
    return (long)mi.uordblks;
#endif
}
