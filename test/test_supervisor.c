/*
 * Supervisors (include/rill/supervisor.h): strategies, restart types,
 * intensity and escalation, backoff, ordered shutdown, dynamic children,
 * spec checks, observability, and no leaks after many restarts.
 *
 * Children come from child_start(), which logs a START event and mallocs a
 * fresh state (counted) at every start; init and terminate log INIT and
 * TERM, and terminate frees the state (counted). A state holds a counter
 * that messages bump, so a child that was not restarted is recognised by
 * its unchanged aid and its counter. A watcher actor monitors what a test
 * asks it to and logs each DOWN into the same log, so one sequence orders
 * everything. Tests wait on the log (condvar with a deadline) or poll
 * rill_sup_children until a condition holds; the only sleeps let time pass
 * where elapsed time is the premise (intensity period, backoff reset).
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <rill/supervisor.h>

#include "support/rtest.h"

#include "support/actor_kit.h"

/* Criterion reports a test as passed before LeakSanitizer runs at the
 * worker's exit, and ignores what LSan finds then: check in the test. */
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#define LEAK_CHECK() __lsan_do_recoverable_leak_check()
#else
#define LEAK_CHECK() 0
#endif

enum {
    MSG_INC = KIT_MSG_APP, /* counter++ */
    MSG_GET,               /* reply with arg = counter */
    MSG_CRASH,             /* fail with RILL_EIO */
    MSG_STOP_NORMAL,       /* rill_stop_self */
    MSG_LINGER_DONE,       /* timer: a lingering child stops now */
    MSG_WATCH              /* watcher: monitor actor `arg`; reply arg = result */
};

/* ---- one event log for children and the watcher ---------------------- */

enum { EV_START = 1, EV_INIT, EV_TERM, EV_EXIT_SEEN, EV_DOWN };
#define K(kind) (1u << (kind))
#define NO_EV   ((size_t)-1)

typedef struct ev {
    int kind;
    char label[32];
    rill_aid_t aid;   /* the child (INIT, TERM, EXIT_SEEN), the watched actor (DOWN) */
    rill_aid_t from;  /* EXIT_SEEN: who sent the RILL_MSG_EXIT */
    int64_t at_ms;    /* kit_now_ms(), taken under the log's lock */
    rill_exit_t exit; /* TERM, EXIT_SEEN, DOWN */
    uint64_t counter; /* INIT, TERM: the state's counter */
} ev_t;

typedef struct watched {
    rill_aid_t aid;
    char label[32];
} watched_t;

typedef struct tw {
    rill_system_t *sys;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    ev_t *ev;
    size_t n, cap;
    watched_t watched[16];
    size_t n_watched;
    /* Child states malloc'ed by child_start and freed by child_terminate.
     * relaxed / release increments, read after a happens-before edge
     * (system stop, or the supervisor's reply after the EXIT it got after
     * terminate returned). */
    atomic_long allocs, frees;
    rill_aid_t watcher;
} tw_t;

static void ev_log(tw_t *w, int kind, const char *label, rill_aid_t aid, rill_aid_t from,
                   const rill_exit_t *exit, uint64_t counter)
{
    ev_t e;
    memset(&e, 0, sizeof(e));
    e.kind = kind;
    snprintf(e.label, sizeof(e.label), "%s", label ? label : "");
    e.aid = aid;
    e.from = from;
    if (exit)
        e.exit = *exit;
    e.counter = counter;
    pthread_mutex_lock(&w->mu);
    if (w->n == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 256;
        ev_t *v = realloc(w->ev, cap * sizeof(*v));
        if (!v)
            abort(); /* cannot report from an executor; the test would hang */
        w->ev = v;
        w->cap = cap;
    }
    e.at_ms = kit_now_ms();
    w->ev[w->n++] = e;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static int ev_match(const ev_t *e, int kind, const char *label, rill_aid_t aid)
{
    return e->kind == kind && (!label || !strcmp(e->label, label)) &&
           (rill_aid_is_none(aid) || rill_aid_eq(e->aid, aid));
}

static size_t count_locked(tw_t *w, size_t from, int kind, const char *label)
{
    size_t c = 0;
    for (size_t i = from; i < w->n; i++)
        c += ev_match(&w->ev[i], kind, label, RILL_AID_NONE);
    return c;
}

static size_t find_locked(tw_t *w, size_t from, int kind, const char *label, rill_aid_t aid)
{
    for (size_t i = from; i < w->n; i++)
        if (ev_match(&w->ev[i], kind, label, aid))
            return i;
    return NO_EV;
}

static size_t ev_size(tw_t *w)
{
    pthread_mutex_lock(&w->mu);
    size_t n = w->n;
    pthread_mutex_unlock(&w->mu);
    return n;
}

/* Events of kind (and label, NULL = any) from index `from` on. */
static size_t ev_count(tw_t *w, size_t from, int kind, const char *label)
{
    pthread_mutex_lock(&w->mu);
    size_t c = count_locked(w, from, kind, label);
    pthread_mutex_unlock(&w->mu);
    return c;
}

/* The first matching event from `from` on: its index (and *out) or NO_EV. */
static size_t ev_find(tw_t *w, size_t from, int kind, const char *label, rill_aid_t aid, ev_t *out)
{
    pthread_mutex_lock(&w->mu);
    size_t i = find_locked(w, from, kind, label, aid);
    if (out) {
        if (i != NO_EV)
            *out = w->ev[i];
        else
            memset(out, 0, sizeof(*out)); /* callers check the index */
    }
    pthread_mutex_unlock(&w->mu);
    return i;
}

/* Waits until at least n matching events were logged from `from` on. */
static void wait_count(tw_t *w, size_t from, int kind, const char *label, size_t n)
{
    int64_t deadline = kit_now_ms() + KIT_WAIT_MS;
    pthread_mutex_lock(&w->mu);
    while (count_locked(w, from, kind, label) < n &&
           kit_cond_wait_until(&w->cv, &w->mu, deadline) != ETIMEDOUT)
        ;
    size_t have = count_locked(w, from, kind, label);
    pthread_mutex_unlock(&w->mu);
    cr_assert_geq(have, n, "waited for %zu events of kind %d about %s, got %zu", n, kind,
                  label ? label : "anyone", have);
}

/* Waits for the first matching event from `from` on; returns its index. */
static size_t wait_find(tw_t *w, size_t from, int kind, const char *label, rill_aid_t aid,
                        ev_t *out)
{
    int64_t deadline = kit_now_ms() + KIT_WAIT_MS;
    pthread_mutex_lock(&w->mu);
    size_t i;
    while ((i = find_locked(w, from, kind, label, aid)) == NO_EV &&
           kit_cond_wait_until(&w->cv, &w->mu, deadline) != ETIMEDOUT)
        ;
    if (i != NO_EV && out)
        *out = w->ev[i];
    pthread_mutex_unlock(&w->mu);
    cr_assert_neq(i, NO_EV, "no event of kind %d about %s (actor %#llx)", kind,
                  label ? label : "anyone", (unsigned long long)aid.id);
    return i;
}

/* The last INIT of label. */
static ev_t last_init(tw_t *w, const char *label)
{
    ev_t e, last;
    memset(&last, 0, sizeof(last));
    size_t i = 0;
    while ((i = ev_find(w, i, EV_INIT, label, RILL_AID_NONE, &e)) != NO_EV) {
        last = e;
        i++;
    }
    return last;
}

/* Waits for whichever comes first from `from` on: the DOWN of sup, or an
 * INIT of label; returns EV_DOWN or EV_INIT. */
static int wait_either(tw_t *w, size_t from, rill_aid_t sup, const char *label, ev_t *out)
{
    int64_t deadline = kit_now_ms() + KIT_WAIT_MS;
    pthread_mutex_lock(&w->mu);
    size_t d, i;
    while ((d = find_locked(w, from, EV_DOWN, NULL, sup)) == NO_EV &&
           (i = find_locked(w, from, EV_INIT, label, RILL_AID_NONE)) == NO_EV &&
           kit_cond_wait_until(&w->cv, &w->mu, deadline) != ETIMEDOUT)
        ;
    d = find_locked(w, from, EV_DOWN, NULL, sup);
    i = find_locked(w, from, EV_INIT, label, RILL_AID_NONE);
    int kind = d != NO_EV ? EV_DOWN : i != NO_EV ? EV_INIT : -1;
    if (kind > 0)
        *out = w->ev[kind == EV_DOWN ? d : i];
    pthread_mutex_unlock(&w->mu);
    cr_assert_gt(kind, 0, "neither the supervisor ended nor %s restarted", label);
    return kind;
}

/* The events of the given kinds from `from` on, as "+a -b": + START,
 * * INIT, - TERM, ! EXIT_SEEN, v DOWN, followed by the label. */
static void trace(tw_t *w, size_t from, unsigned kinds, char *out, size_t size)
{
    static const char sym[] = "?+*-!v";
    size_t len = 0;
    out[0] = '\0';
    pthread_mutex_lock(&w->mu);
    for (size_t i = from; i < w->n; i++) {
        const ev_t *e = &w->ev[i];
        if (!(kinds & K(e->kind)))
            continue;
        int k = snprintf(out + len, size - len, "%s%c%s", len ? " " : "", sym[e->kind], e->label);
        if (k < 0 || (size_t)k >= size - len)
            break;
        len += (size_t)k;
    }
    pthread_mutex_unlock(&w->mu);
}

#define ASSERT_TRACE(w, from, kinds, want)                                                         \
    do {                                                                                           \
        char t_[1024];                                                                             \
        trace((w), (from), (kinds), t_, sizeof(t_));                                               \
        cr_assert_str_eq(t_, (want), "events \"%s\", want \"%s\"", t_, (want));                    \
    } while (0)

/* ---- children ----------------------------------------------------------- */

/* What a child that traps exits does with a shutdown request. */
enum { ON_EXIT_STOP = 0, ON_EXIT_IGNORE, ON_EXIT_LINGER };

typedef struct carg {
    tw_t *w;
    const char *label;
    uint64_t initial; /* the counter at every start */
    int trap_exits;
    int on_exit;
    uint32_t linger_ms;     /* ON_EXIT_LINGER: stop this long after the request */
    rill_err_t start_error; /* the start function fails with this */
} carg_t;

typedef struct cstate {
    const carg_t *arg;
    uint64_t counter;
} cstate_t;

static rill_err_t child_init(rill_ctx_t *ctx, void *state)
{
    cstate_t *s = state;
    ev_log(s->arg->w, EV_INIT, s->arg->label, rill_self(ctx), RILL_AID_NONE, NULL, s->counter);
    return RILL_OK;
}

static void child_terminate(rill_ctx_t *ctx, void *state, const rill_exit_t *reason)
{
    cstate_t *s = state;
    tw_t *w = s->arg->w;
    ev_log(w, EV_TERM, s->arg->label, rill_self(ctx), RILL_AID_NONE, reason, s->counter);
    free(s);
    atomic_fetch_add_explicit(&w->frees, 1, memory_order_release);
}

static rill_err_t child_behavior(rill_ctx_t *ctx, void *state, rill_msg_t *msg)
{
    cstate_t *s = state;
    const carg_t *a = s->arg;
    switch (msg->type) {
    case MSG_INC:
        s->counter++;
        return RILL_OK;
    case MSG_GET: {
        rill_msg_t r = {.type = MSG_GET, .arg = s->counter};
        return rill_reply(ctx, msg, &r);
    }
    case MSG_CRASH:
        return rill_fail(ctx, RILL_EIO, "%s crashed on purpose", a->label);
    case MSG_STOP_NORMAL:
    case MSG_LINGER_DONE:
        rill_stop_self(ctx);
        return RILL_OK;
    case RILL_MSG_EXIT: {
        const rill_down_t *d = msg->payload;
        ev_log(a->w, EV_EXIT_SEEN, a->label, rill_self(ctx), d->actor, &d->reason, s->counter);
        if (a->on_exit == ON_EXIT_STOP) {
            rill_stop_self(ctx);
        } else if (a->on_exit == ON_EXIT_LINGER) {
            rill_msg_t t = {.type = MSG_LINGER_DONE};
            return rill_timer_start(ctx, a->linger_ms, 0, &t, NULL);
        }
        return RILL_OK;
    }
    default:
        return RILL_OK;
    }
}

/* The start function of every test child (rill_child_start_fn). */
static rill_err_t child_start(void *arg, rill_spawn_opts_t *opts)
{
    carg_t *a = arg;
    ev_log(a->w, EV_START, a->label, RILL_AID_NONE, RILL_AID_NONE, NULL, 0);
    if (a->start_error)
        return a->start_error;
    cstate_t *s = malloc(sizeof(*s));
    if (!s)
        return RILL_ENOMEM;
    atomic_fetch_add_explicit(&a->w->allocs, 1, memory_order_relaxed);
    s->arg = a;
    s->counter = a->initial;
    opts->behavior = child_behavior;
    opts->init = child_init;
    opts->terminate = child_terminate;
    opts->state = s;
    opts->trap_exits = a->trap_exits;
    return RILL_OK;
}

static carg_t child_arg(tw_t *w, const char *label)
{
    carg_t a;
    memset(&a, 0, sizeof(a));
    a.w = w;
    a.label = label;
    return a;
}

/* A permanent worker registered under its id. */
static rill_child_spec_t worker(const char *id, carg_t *arg)
{
    rill_child_spec_t c;
    memset(&c, 0, sizeof(c));
    c.id = id;
    c.start = child_start;
    c.arg = arg;
    c.register_name = 1;
    return c;
}

static rill_child_spec_t subsup(const char *id, const rill_sup_spec_t *spec)
{
    rill_child_spec_t c;
    memset(&c, 0, sizeof(c));
    c.id = id;
    c.supervisor = spec;
    c.shutdown = RILL_SHUTDOWN_INFINITY;
    c.register_name = 1;
    return c;
}

static rill_sup_spec_t spec_of(rill_sup_strategy_t strategy, int intensity, uint32_t period_ms,
                               const rill_child_spec_t *children, size_t n)
{
    rill_sup_spec_t s = RILL_SUP_SPEC_DEFAULT;
    s.strategy = strategy;
    s.intensity = intensity;
    s.period_ms = period_ms;
    s.children = children;
    s.n_children = n;
    return s;
}

/* ---- the watcher ---------------------------------------------------------- */

static rill_err_t watcher_behavior(rill_ctx_t *ctx, void *state, rill_msg_t *msg)
{
    tw_t *w = state;
    if (msg->type == RILL_MSG_DOWN) {
        const rill_down_t *d = msg->payload;
        char label[32] = "?";
        pthread_mutex_lock(&w->mu);
        for (size_t i = 0; i < w->n_watched; i++)
            if (rill_aid_eq(w->watched[i].aid, d->actor))
                memcpy(label, w->watched[i].label, sizeof(label));
        pthread_mutex_unlock(&w->mu);
        ev_log(w, EV_DOWN, label, d->actor, RILL_AID_NONE, &d->reason, 0);
    } else if (msg->type == MSG_WATCH) {
        rill_msg_t r = {.type = MSG_WATCH};
        r.arg = (uint64_t)rill_monitor(ctx, (rill_aid_t){msg->arg}, NULL);
        rill_reply(ctx, msg, &r);
    }
    return RILL_OK;
}

/* The watcher monitors aid from now on; its DOWN is logged as label. */
static void watch(tw_t *w, rill_aid_t aid, const char *label)
{
    pthread_mutex_lock(&w->mu);
    cr_assert_lt(w->n_watched, sizeof(w->watched) / sizeof(w->watched[0]));
    w->watched[w->n_watched].aid = aid;
    snprintf(w->watched[w->n_watched].label, sizeof(w->watched[0].label), "%s", label);
    w->n_watched++;
    pthread_mutex_unlock(&w->mu);
    rill_msg_t q = kit_msg(MSG_WATCH, aid.id, NULL), r;
    memset(&r, 0, sizeof(r));
    rill_err_t e = rill_ask_sync(w->sys, w->watcher, &q, KIT_WAIT_MS, &r);
    cr_assert_eq(e, RILL_OK, "watch: %s", rill_err_name(e));
    cr_assert_eq(r.arg, RILL_OK, "rill_monitor: %s", rill_err_name((rill_err_t)r.arg));
}

/* ---- the test world ------------------------------------------------------- */

static tw_t *tw_new(void)
{
    tw_t *w = calloc(1, sizeof(*w));
    cr_assert_not_null(w);
    pthread_mutex_init(&w->mu, NULL);
    kit_cond_init(&w->cv);
    atomic_init(&w->allocs, 0);
    atomic_init(&w->frees, 0);
    w->sys = kit_system(2, 0, 0, 1);
    cr_assert_not_null(w->sys);
    rill_spawn_opts_t o;
    memset(&o, 0, sizeof(o));
    o.behavior = watcher_behavior;
    o.state = w;
    cr_assert_eq(rill_spawn(w->sys, &o, &w->watcher), RILL_OK);
    return w;
}

static long allocs(tw_t *w)
{
    return atomic_load_explicit(&w->allocs, memory_order_acquire);
}

static long frees(tw_t *w)
{
    return atomic_load_explicit(&w->frees, memory_order_acquire);
}

/* Stops the system (every terminate has run then) and checks that every
 * child state was freed exactly once: ASan reports a double free, the
 * counts a missing one. */
static void tw_free(tw_t *w)
{
    cr_assert_eq(rill_system_stop(w->sys, KIT_WAIT_MS), RILL_OK);
    rill_system_destroy(w->sys);
    cr_assert_eq(allocs(w), frees(w), "%ld child states allocated, %ld freed", allocs(w), frees(w));
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w->ev);
    free(w);
    cr_assert_eq(LEAK_CHECK(), 0, "LeakSanitizer found leaks (report above)");
}

static uint32_t alive_now(tw_t *w)
{
    rill_system_stats_t st;
    memset(&st, 0, sizeof(st));
    rill_system_stats(w->sys, &st);
    return st.alive;
}

static void pause_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Lets time pass: the premise of the period and reset tests, never a way
 * to wait for something to happen. */
static void sleep_until(int64_t at_ms)
{
    int64_t now;
    while ((now = kit_now_ms()) < at_ms)
        pause_ms((int)(at_ms - now));
}

/* Polls until the system has `want` live actors (ask_sync's short-lived
 * reply actors come and go). */
static void wait_alive(tw_t *w, uint32_t want)
{
    int64_t deadline = kit_now_ms() + KIT_WAIT_MS;
    while (alive_now(w) != want && kit_now_ms() < deadline)
        pause_ms(1);
    cr_assert_eq(alive_now(w), want, "%u actors alive, want %u", alive_now(w), want);
}

static size_t kids(tw_t *w, rill_aid_t sup, rill_child_info_t *out, size_t max);

/* Waits until every running child in the tree under sup has run its init,
 * so that later waits for an INIT see only restarts. */
static void settle(tw_t *w, rill_aid_t sup)
{
    rill_child_info_t v[16];
    size_t n = kids(w, sup, v, 16);
    for (size_t i = 0; i < n && i < 16; i++) {
        if (!v[i].running || rill_aid_is_none(v[i].aid))
            continue;
        if (v[i].supervisor)
            settle(w, v[i].aid);
        else
            wait_find(w, 0, EV_INIT, NULL, v[i].aid, NULL);
    }
}

static rill_aid_t start_sup(tw_t *w, const rill_sup_spec_t *spec, const char *name)
{
    char err[256] = "";
    rill_aid_t aid = RILL_AID_NONE;
    rill_err_t e = rill_sup_start(w->sys, spec, name, &aid, err, sizeof(err));
    cr_assert_eq(e, RILL_OK, "rill_sup_start: %s: %s", rill_err_name(e), err);
    cr_assert(!rill_aid_is_none(aid));
    settle(w, aid);
    return aid;
}

/* rill_sup_start_child, then wait for the child's init. */
static rill_aid_t start_dyn(tw_t *w, rill_aid_t sup, carg_t *arg)
{
    rill_aid_t aid = RILL_AID_NONE;
    rill_err_t e = rill_sup_start_child(w->sys, sup, arg, &aid);
    cr_assert_eq(e, RILL_OK, "rill_sup_start_child: %s", rill_err_name(e));
    cr_assert(!rill_aid_is_none(aid));
    wait_find(w, 0, EV_INIT, NULL, aid, NULL);
    return aid;
}

static void stop_sup(tw_t *w, rill_aid_t sup)
{
    rill_err_t e = rill_sup_stop(w->sys, sup, KIT_WAIT_MS);
    cr_assert_eq(e, RILL_OK, "rill_sup_stop: %s", rill_err_name(e));
    cr_assert_not(rill_alive(w->sys, sup));
}

static void send_to(tw_t *w, const char *name, uint32_t type)
{
    rill_msg_t m = kit_msg(type, 0, NULL);
    rill_err_t e = rill_tell_name(w->sys, name, &m);
    cr_assert_eq(e, RILL_OK, "tell %s: %s", name, rill_err_name(e));
}

static void send_aid(tw_t *w, rill_aid_t aid, uint32_t type)
{
    rill_msg_t m = kit_msg(type, 0, NULL);
    rill_err_t e = rill_tell(w->sys, aid, &m);
    cr_assert_eq(e, RILL_OK, "tell %#llx: %s", (unsigned long long)aid.id, rill_err_name(e));
}

static void bump(tw_t *w, rill_aid_t aid, int times)
{
    for (int i = 0; i < times; i++)
        send_aid(w, aid, MSG_INC);
}

static uint64_t counter_of(tw_t *w, rill_aid_t aid)
{
    rill_msg_t q = kit_msg(MSG_GET, 0, NULL), r;
    memset(&r, 0, sizeof(r));
    rill_err_t e = rill_ask_sync(w->sys, aid, &q, KIT_WAIT_MS, &r);
    cr_assert_eq(e, RILL_OK, "ask %#llx: %s", (unsigned long long)aid.id, rill_err_name(e));
    cr_assert_eq(r.type, MSG_GET);
    return r.arg;
}

/* ---- what the supervisor says ------------------------------------------- */

#define MAX_KIDS 16

static size_t kids(tw_t *w, rill_aid_t sup, rill_child_info_t *out, size_t max)
{
    size_t n = 0;
    rill_err_t e = rill_sup_children(w->sys, sup, out, max, &n);
    cr_assert_eq(e, RILL_OK, "rill_sup_children: %s", rill_err_name(e));
    return n;
}

static int find_kid(tw_t *w, rill_aid_t sup, const char *id, rill_child_info_t *out)
{
    rill_child_info_t v[MAX_KIDS];
    size_t n = kids(w, sup, v, MAX_KIDS);
    for (size_t i = 0; i < n && i < MAX_KIDS; i++)
        if (!strcmp(v[i].id, id)) {
            if (out)
                *out = v[i];
            return 1;
        }
    return 0;
}

static rill_child_info_t kid(tw_t *w, rill_aid_t sup, const char *id)
{
    rill_child_info_t ci;
    memset(&ci, 0, sizeof(ci));
    cr_assert(find_kid(w, sup, id, &ci), "no child \"%s\"", id);
    return ci;
}

static rill_aid_t kid_aid(tw_t *w, rill_aid_t sup, const char *id)
{
    rill_child_info_t ci = kid(w, sup, id);
    cr_assert(ci.running && !rill_aid_is_none(ci.aid), "child \"%s\" is not running", id);
    return ci.aid;
}

/* The children's ids in order, "a,b,c". */
static void kid_ids(tw_t *w, rill_aid_t sup, char *out, size_t size)
{
    rill_child_info_t v[MAX_KIDS];
    size_t n = kids(w, sup, v, MAX_KIDS), len = 0;
    out[0] = '\0';
    for (size_t i = 0; i < n && i < MAX_KIDS; i++) {
        int k = snprintf(out + len, size - len, "%s%s", i ? "," : "", v[i].id);
        if (k < 0 || (size_t)k >= size - len)
            break;
        len += (size_t)k;
    }
}

#define ASSERT_IDS(w, sup, want)                                                                   \
    do {                                                                                           \
        char ids_[512];                                                                            \
        kid_ids((w), (sup), ids_, sizeof(ids_));                                                   \
        cr_assert_str_eq(ids_, (want), "children \"%s\", want \"%s\"", ids_, (want));              \
    } while (0)

enum { KID_ABSENT, KID_STOPPED, KID_RESTARTING };

/* Polls rill_sup_children until child id is in state `want`. */
static rill_child_info_t wait_kid(tw_t *w, rill_aid_t sup, const char *id, int want)
{
    int64_t deadline = kit_now_ms() + KIT_WAIT_MS;
    rill_child_info_t ci;
    for (;;) {
        memset(&ci, 0, sizeof(ci));
        int found = find_kid(w, sup, id, &ci);
        if (want == KID_ABSENT ? !found
            : want == KID_STOPPED
                ? found && !ci.running && !ci.restarting && rill_aid_is_none(ci.aid)
                : found && ci.restarting)
            return ci;
        cr_assert_lt(kit_now_ms(), deadline, "child \"%s\" never reached state %d", id, want);
        pause_ms(1);
    }
}

static uint32_t stats_restarts(tw_t *w, rill_aid_t aid)
{
    rill_actor_stats_t st;
    memset(&st, 0, sizeof(st));
    rill_err_t e = rill_actor_stats(w->sys, aid, &st);
    cr_assert_eq(e, RILL_OK, "rill_actor_stats: %s", rill_err_name(e));
    return st.restarts;
}

/* ======================================================================== */
/* Strategies                                                               */
/* ======================================================================== */

/* Lines the supervisor logs (the log hook): the restart is told. */
typedef struct sup_lines {
    pthread_mutex_t mu;
    int restart_of_b; /* WARNING lines "... child b exited (failure: ...); restart 1 ..." */
} sup_lines_t;

static void sup_log(void *opaque, rill_log_level_t level, const char *facility, const char *text)
{
    sup_lines_t *l = opaque;
    pthread_mutex_lock(&l->mu);
    l->restart_of_b += level == RILL_LOG_WARNING && !strcmp(facility, "supervisor") &&
                       strstr(text, "child b exited (failure: b crashed on purpose); restart 1");
    pthread_mutex_unlock(&l->mu);
}

Test(sup_strategy, one_for_one_restarts_only_the_failed_child, .timeout = 60)
{
    static sup_lines_t lines = {.mu = PTHREAD_MUTEX_INITIALIZER};
    rill_log_set(sup_log, &lines);
    tw_t *w = tw_new();
    carg_t a = child_arg(w, "a"), b = child_arg(w, "b"), c = child_arg(w, "c");
    rill_child_spec_t ch[] = {worker("a", &a), worker("b", &b), worker("c", &c)};
    rill_sup_spec_t spec = spec_of(RILL_SUP_ONE_FOR_ONE, 5, 30000, ch, 3);
    rill_aid_t sup = start_sup(w, &spec, NULL);
    ASSERT_TRACE(w, 0, K(EV_START), "+a +b +c");

    rill_aid_t aa = kid_aid(w, sup, "a"), ab = kid_aid(w, sup, "b"), ac = kid_aid(w, sup, "c");
    cr_assert(rill_aid_eq(rill_lookup(w->sys, "b"), ab), "registered under its id");
    bump(w, aa, 1);
    bump(w, ab, 2);
    bump(w, ac, 3);
    cr_assert_eq(counter_of(w, ab), 2);

    size_t mark = ev_size(w);
    send_to(w, "b", MSG_CRASH);
    wait_count(w, mark, EV_INIT, "b", 1);
    (void)kid(w, sup, "b"); /* a round trip: the restart is complete */
    ASSERT_TRACE(w, mark, K(EV_START) | K(EV_TERM), "-b +b");
    ev_t term;
    ev_find(w, mark, EV_TERM, "b", RILL_AID_NONE, &term);
    cr_assert_eq(term.exit.kind, RILL_EXIT_FAILURE);
    cr_assert_eq(term.exit.code, RILL_EIO);

    rill_aid_t nb = kid_aid(w, sup, "b");
    cr_assert(!rill_aid_eq(nb, ab), "b is a new actor");
    cr_assert(rill_aid_eq(kid_aid(w, sup, "a"), aa), "a was not touched");
    cr_assert(rill_aid_eq(kid_aid(w, sup, "c"), ac), "c was not touched");
    cr_assert_eq(counter_of(w, aa), 1, "a kept its state");
    cr_assert_eq(counter_of(w, ac), 3, "c kept its state");
    cr_assert_eq(counter_of(w, nb), 0, "b starts afresh");
    cr_assert_eq(kid(w, sup, "b").restarts, 1);
    cr_assert_eq(kid(w, sup, "a").restarts, 0);
    cr_assert_eq(kid(w, sup, "c").restarts, 0);
    cr_assert_eq(kid(w, sup, "b").last_exit.kind, RILL_EXIT_FAILURE);
    pthread_mutex_lock(&lines.mu);
    cr_assert_eq(lines.restart_of_b, 1, "the restart was logged %d times", lines.restart_of_b);
    pthread_mutex_unlock(&lines.mu);
    rill_log_set(NULL, NULL);

    stop_sup(w, sup);
    tw_free(w);
}

Test(sup_strategy, one_for_all_restarts_every_child_in_order, .timeout = 60)
{
    tw_t *w = tw_new();
    carg_t a = child_arg(w, "a"), b = child_arg(w, "b"), c = child_arg(w, "c");
    rill_child_spec_t ch[] = {worker("a", &a), worker("b", &b), worker("c", &c)};
    rill_sup_spec_t spec = spec_of(RILL_SUP_ONE_FOR_ALL, 5, 30000, ch, 3);
    rill_aid_t sup = start_sup(w, &spec, NULL);
    rill_aid_t before[3] = {kid_aid(w, sup, "a"), kid_aid(w, sup, "b"), kid_aid(w, sup, "c")};
    for (int i = 0; i < 3; i++) {
        bump(w, before[i], i + 1);
        cr_assert_eq(counter_of(w, before[i]), (uint64_t)i + 1);
    }

    size_t mark = ev_size(w);
    send_to(w, "b", MSG_CRASH);
    wait_count(w, mark, EV_INIT, "c", 1); /* c starts last */
    (void)kid(w, sup, "c");
    /* the failed one first (it is already down), the others in reverse
     * start order, then all of them in start order */
    ASSERT_TRACE(w, mark, K(EV_START) | K(EV_TERM), "-b -c -a +a +b +c");
    ev_t e;
    ev_find(w, mark, EV_TERM, "c", RILL_AID_NONE, &e);
    cr_assert_eq(e.exit.kind, RILL_EXIT_SHUTDOWN, "c was stopped: %s",
                 rill_exit_kind_name(e.exit.kind));
    ev_find(w, mark, EV_TERM, "a", RILL_AID_NONE, &e);
    cr_assert_eq(e.exit.kind, RILL_EXIT_SHUTDOWN);

    const char *ids[3] = {"a", "b", "c"};
    for (int i = 0; i < 3; i++) {
        rill_aid_t now = kid_aid(w, sup, ids[i]);
        cr_assert(!rill_aid_eq(now, before[i]), "%s restarted", ids[i]);
        cr_assert_eq(counter_of(w, now), 0, "%s starts afresh", ids[i]);
        cr_assert_eq(stats_restarts(w, now), kid(w, sup, ids[i]).restarts);
    }
    cr_assert_eq(kid(w, sup, "b").restarts, 1);

    stop_sup(w, sup);
    tw_free(w);
}

Test(sup_strategy, rest_for_one_restarts_the_failed_child_and_later_ones, .timeout = 60)
{
    tw_t *w = tw_new();
    carg_t a = child_arg(w, "a"), b = child_arg(w, "b"), c = child_arg(w, "c"),
           d = child_arg(w, "d");
    rill_child_spec_t ch[] = {worker("a", &a), worker("b", &b), worker("c", &c), worker("d", &d)};
    rill_sup_spec_t spec = spec_of(RILL_SUP_REST_FOR_ONE, 5, 30000, ch, 4);
    rill_aid_t sup = start_sup(w, &spec, NULL);
    const char *ids[4] = {"a", "b", "c", "d"};
    rill_aid_t before[4];
    for (int i = 0; i < 4; i++) {
        before[i] = kid_aid(w, sup, ids[i]);
        bump(w, before[i], i + 1);
        cr_assert_eq(counter_of(w, before[i]), (uint64_t)i + 1);
    }

    size_t mark = ev_size(w);
    send_to(w, "b", MSG_CRASH);
    wait_count(w, mark, EV_INIT, "d", 1);
    (void)kid(w, sup, "d");
    ASSERT_TRACE(w, mark, K(EV_START) | K(EV_TERM), "-b -d -c +b +c +d");

    cr_assert(rill_aid_eq(kid_aid(w, sup, "a"), before[0]), "a, started before b, was not touched");
    cr_assert_eq(counter_of(w, before[0]), 1, "a kept its state");
    for (int i = 1; i < 4; i++) {
        rill_aid_t now = kid_aid(w, sup, ids[i]);
        cr_assert(!rill_aid_eq(now, before[i]), "%s restarted", ids[i]);
        cr_assert_eq(counter_of(w, now), 0);
    }

    /* the last child failing takes nobody along */
    rill_aid_t c_now = kid_aid(w, sup, "c");
    mark = ev_size(w);
    send_to(w, "d", MSG_CRASH);
    wait_count(w, mark, EV_INIT, "d", 1);
    (void)kid(w, sup, "d");
    ASSERT_TRACE(w, mark, K(EV_START) | K(EV_TERM), "-d +d");
    cr_assert(rill_aid_eq(kid_aid(w, sup, "c"), c_now));

    stop_sup(w, sup);
    tw_free(w);
}

Test(sup_strategy, simple_one_for_one_restarts_only_the_failed_child, .timeout = 60)
{
    tw_t *w = tw_new();
    carg_t tmpl = child_arg(w, "template");
    carg_t args[3] = {child_arg(w, "w1"), child_arg(w, "w2"), child_arg(w, "w3")};
    rill_child_spec_t ch[] = {{.id = "worker", .start = child_start, .arg = &tmpl}};
    rill_sup_spec_t spec = spec_of(RILL_SUP_SIMPLE_ONE_FOR_ONE, 5, 30000, ch, 1);
    rill_aid_t sup = start_sup(w, &spec, NULL);
    rill_aid_t aid[3];
    for (int i = 0; i < 3; i++) {
        aid[i] = start_dyn(w, sup, &args[i]);
        bump(w, aid[i], 10 * (i + 1));
        cr_assert_eq(counter_of(w, aid[i]), 10u * (uint64_t)(i + 1));
    }

    size_t mark = ev_size(w);
    send_aid(w, aid[1], MSG_CRASH);
    wait_count(w, mark, EV_INIT, "w2", 1);
    (void)kids(w, sup, NULL, 0);
    ASSERT_TRACE(w, mark, K(EV_START) | K(EV_TERM), "-w2 +w2");
    rill_child_info_t v[MAX_KIDS];
    cr_assert_eq(kids(w, sup, v, MAX_KIDS), 3);
    cr_assert(rill_aid_eq(v[0].aid, aid[0]));
    cr_assert(rill_aid_eq(v[2].aid, aid[2]));
    cr_assert(v[1].running && !rill_aid_is_none(v[1].aid) && !rill_aid_eq(v[1].aid, aid[1]));
    cr_assert_eq(v[1].restarts, 1);
    cr_assert_eq(counter_of(w, aid[0]), 10);
    cr_assert_eq(counter_of(w, aid[2]), 30);
    cr_assert_eq(counter_of(w, v[1].aid), 0);

    stop_sup(w, sup);
    tw_free(w);
}

/* ======================================================================== */
/* Restart types                                                            */
/* ======================================================================== */

Test(sup_restart_type, permanent_is_restarted_after_any_exit, .timeout = 60)
{
    tw_t *w = tw_new();
    carg_t p = child_arg(w, "p");
    rill_child_spec_t ch[] = {worker("p", &p)};
    rill_sup_spec_t spec = spec_of(RILL_SUP_ONE_FOR_ONE, 10, 30000, ch, 1);
    rill_aid_t sup = start_sup(w, &spec, NULL);

    static const rill_exit_kind_t kinds[] = {RILL_EXIT_NORMAL, RILL_EXIT_FAILURE, RILL_EXIT_KILLED,
                                             RILL_EXIT_SHUTDOWN};
    for (uint32_t i = 0; i < 4; i++) {
        rill_aid_t old = kid_aid(w, sup, "p");
        size_t mark = ev_size(w);
        if (kinds[i] == RILL_EXIT_NORMAL)
            send_to(w, "p", MSG_STOP_NORMAL);
        else if (kinds[i] == RILL_EXIT_FAILURE)
            send_to(w, "p", MSG_CRASH);
        else if (kinds[i] == RILL_EXIT_KILLED)
            cr_assert_eq(rill_kill(w->sys, old, "test"), RILL_OK);
        else
            cr_assert_eq(rill_stop(w->sys, old), RILL_OK);
        wait_count(w, mark, EV_INIT, "p", 1);
        ev_t term;
        ev_find(w, mark, EV_TERM, "p", RILL_AID_NONE, &term);
        cr_assert_eq(term.exit.kind, kinds[i]);
        rill_child_info_t ci = kid(w, sup, "p");
        cr_assert(ci.running && !rill_aid_eq(ci.aid, old), "restarted after %s",
                  rill_exit_kind_name(kinds[i]));
        cr_assert_eq(ci.restarts, i + 1);
        cr_assert_eq(ci.last_exit.kind, kinds[i]);
    }
    stop_sup(w, sup);
    tw_free(w);
}

Test(sup_auto_shutdown, any_significant_child_ending_ends_the_supervisor_normally, .timeout = 60)
{
    tw_t *w = tw_new();
    carg_t a = child_arg(w, "a"), key = child_arg(w, "key"), z = child_arg(w, "z");
    rill_child_spec_t ch[] = {worker("a", &a), worker("key", &key), worker("z", &z)};
    ch[1].restart = RILL_RESTART_TRANSIENT;
    ch[1].significant = 1;
    rill_sup_spec_t spec = spec_of(RILL_SUP_ONE_FOR_ONE, 10, 30000, ch, 3);
    spec.auto_shutdown = RILL_AUTO_SHUTDOWN_ANY;
    rill_aid_t sup = start_sup(w, &spec, NULL);
    watch(w, sup, "sup");
    size_t mark = ev_size(w);
    /* A failure of the significant child is restarted, not an end. */
    send_to(w, "key", MSG_CRASH);
    wait_count(w, mark, EV_INIT, "key", 1);
    cr_assert(rill_alive(w->sys, sup));
    /* Its normal end ends the supervisor, normally, the others with it
     * (in reverse order). */
    mark = ev_size(w);
    send_to(w, "key", MSG_STOP_NORMAL);
    ev_t down;
    wait_find(w, mark, EV_DOWN, "sup", sup, &down);
    cr_assert_eq(down.exit.kind, RILL_EXIT_NORMAL, "%s: %s", rill_exit_kind_name(down.exit.kind),
                 down.exit.text);
    cr_assert_eq(ev_count(w, mark, EV_TERM, "a"), 1);
    cr_assert_eq(ev_count(w, mark, EV_TERM, "z"), 1);
    cr_assert_eq(ev_count(w, mark, EV_START, NULL), 0);
    tw_free(w);
}

Test(sup_auto_shutdown, all_significant_waits_for_the_last_one, .timeout = 60)
{
    tw_t *w = tw_new();
    carg_t a = child_arg(w, "a"), s1 = child_arg(w, "s1"), s2 = child_arg(w, "s2");
    rill_child_spec_t ch[] = {worker("a", &a), worker("s1", &s1), worker("s2", &s2)};
    ch[1].restart = RILL_RESTART_TEMPORARY;
    ch[2].restart = RILL_RESTART_TRANSIENT;
    ch[1].significant = ch[2].significant = 1;
    rill_sup_spec_t spec = spec_of(RILL_SUP_ONE_FOR_ONE, 10, 30000, ch, 3);
    spec.auto_shutdown = RILL_AUTO_SHUTDOWN_ALL;
    rill_aid_t sup = start_sup(w, &spec, NULL);
    watch(w, sup, "sup");
    size_t mark = ev_size(w);
    /* A temporary child ends for good even when it fails. */
    send_to(w, "s1", MSG_CRASH);
    wait_count(w, mark, EV_TERM, "s1", 1);
    ASSERT_IDS(w, sup, "a,s2"); /* the supervisor handled it and is still up */
    cr_assert(rill_alive(w->sys, sup), "one significant child is still running");
    send_to(w, "s2", MSG_STOP_NORMAL);
    ev_t down;
    wait_find(w, mark, EV_DOWN, "sup", sup, &down);
    cr_assert_eq(down.exit.kind, RILL_EXIT_NORMAL);
    cr_assert_eq(ev_count(w, mark, EV_TERM, "a"), 1);
    tw_free(w);
}

Test(sup_restart_type, transient_is_restarted_only_after_abnormal_exits, .timeout = 60)
{
    tw_t *w = tw_new();
    carg_t tf = child_arg(w, "tf"), tk = child_arg(w, "tk"), tn = child_arg(w, "tn"),
           ts = child_arg(w, "ts");
    rill_child_spec_t ch[] = {worker("tf", &tf), worker("tk", &tk), worker("tn", &tn),
                              worker("ts", &ts)};
    for (int i = 0; i < 4; i++)
        ch[i].restart = RILL_RESTART_TRANSIENT;
    rill_sup_spec_t spec = spec_of(RILL_SUP_ONE_FOR_ONE, 10, 30000, ch, 4);
    rill_aid_t sup = start_sup(w, &spec, NULL);

    /* abnormal: failure and kill */
    size_t mark = ev_size(w);
    send_to(w, "tf", MSG_CRASH);
    cr_assert_eq(rill_kill(w->sys, kid_aid(w, sup, "tk"), NULL), RILL_OK);
    wait_count(w, mark, EV_INIT, "tf", 1);
    wait_count(w, mark, EV_INIT, "tk", 1);
    cr_assert_eq(kid(w, sup, "tf").restarts, 1);
    cr_assert_eq(kid(w, sup, "tk").restarts, 1);

    /* normal: stop_self and a stop from outside */
    rill_aid_t ats = kid_aid(w, sup, "ts");
    mark = ev_size(w);
    send_to(w, "tn", MSG_STOP_NORMAL);
    cr_assert_eq(rill_stop(w->sys, ats), RILL_OK);
    rill_child_info_t n = wait_kid(w, sup, "tn", KID_STOPPED);
    rill_child_info_t s = wait_kid(w, sup, "ts", KID_STOPPED);
    /* the supervisor has handled both exits: a restart would have started */
    cr_assert_eq(ev_count(w, mark, EV_START, NULL), 0, "a transient child was restarted");
    cr_assert_eq(n.last_exit.kind, RILL_EXIT_NORMAL);
    cr_assert_eq(s.last_exit.kind, RILL_EXIT_SHUTDOWN);
    cr_assert_eq(n.restarts, 0);
    cr_assert_eq(s.restarts, 0);
    cr_assert(rill_aid_is_none(rill_lookup(w->sys, "tn")));
    ASSERT_IDS(w, sup, "tf,tk,tn,ts"); /* kept, as stopped children */

    stop_sup(w, sup);
    tw_free(w);
}

Test(sup_restart_type, temporary_is_never_restarted_and_is_forgotten, .timeout = 60)
{
    tw_t *w = tw_new();
    carg_t p = child_arg(w, "p"), t = child_arg(w, "t");
    rill_child_spec_t ch[] = {worker("p", &p), worker("t", &t)};
    ch[1].restart = RILL_RESTART_TEMPORARY;
    rill_sup_spec_t spec = spec_of(RILL_SUP_ONE_FOR_ONE, 10, 30000, ch, 2);
    rill_aid_t sup = start_sup(w, &spec, NULL);
    rill_aid_t ap = kid_aid(w, sup, "p");

    size_t mark = ev_size(w);
    send_to(w, "t", MSG_CRASH);
    wait_kid(w, sup, "t", KID_ABSENT);
    cr_assert_eq(ev_count(w, mark, EV_START, NULL), 0);
    ASSERT_IDS(w, sup, "p");
    cr_assert(rill_aid_eq(kid_aid(w, sup, "p"), ap));

    stop_sup(w, sup);
    tw_free(w);
}

Test(sup_restart_type, temporary_is_stopped_and_removed_by_one_for_all, .timeout = 60)
{
    tw_t *w = tw_new();
    carg_t p1 = child_arg(w, "p1"), t = child_arg(w, "t"), p2 = child_arg(w, "p2");
    rill_child_spec_t ch[] = {worker("p1", &p1), worker("t", &t), worker("p2", &p2)};
    ch[1].restart = RILL_RESTART_TEMPORARY;
    rill_sup_spec_t spec = spec_of(RILL_SUP_ONE_FOR_ALL, 10, 30000, ch, 3);
    rill_aid_t sup = start_sup(w, &spec, NULL);

    size_t mark = ev_size(w);
    send_to(w, "p1", MSG_CRASH);
    wait_count(w, mark, EV_INIT, "p2", 1);
    ASSERT_IDS(w, sup, "p1,p2");
    ASSERT_TRACE(w, mark, K(EV_START) | K(EV_TERM), "-p1 -p2 -t +p1 +p2");
    ev_t e;
    ev_find(w, mark, EV_TERM, "t", RILL_AID_NONE, &e);
    cr_assert_eq(e.exit.kind, RILL_EXIT_SHUTDOWN);
    cr_assert(rill_aid_is_none(rill_lookup(w->sys, "t")));

    stop_sup(w, sup);
    tw_free(w);
}

Test(sup_restart_type, temporary_is_stopped_and_removed_by_rest_for_one, .timeout = 60)
{
    tw_t *w = tw_new();
    carg_t t0 = child_arg(w, "t0"), p1 = child_arg(w, "p1"), t2 = child_arg(w, "t2"),
           p3 = child_arg(w, "p3");
    rill_child_spec_t ch[] = {worker("t0", &t0), worker("p1", &p1), worker("t2", &t2),
                              worker("p3", &p3)};
    ch[0].restart = RILL_RESTART_TEMPORARY;
    ch[2].restart = RILL_RESTART_TEMPORARY;
    rill_sup_spec_t spec = spec_of(RILL_SUP_REST_FOR_ONE, 10, 30000, ch, 4);
    rill_aid_t sup = start_sup(w, &spec, NULL);
    rill_aid_t at0 = kid_aid(w, sup, "t0");

    size_t mark = ev_size(w);
    send_to(w, "p1", MSG_CRASH);
    wait_count(w, mark, EV_INIT, "p3", 1);
    ASSERT_IDS(w, sup, "t0,p1,p3");
    ASSERT_TRACE(w, mark, K(EV_START) | K(EV_TERM), "-p1 -p3 -t2 +p1 +p3");
    cr_assert(rill_aid_eq(kid_aid(w, sup, "t0"), at0),
              "a temporary child before the failed one stays");

    stop_sup(w, sup);
    tw_free(w);
}

/* ======================================================================== */
/* Intensity and escalation                                                 */
/* ======================================================================== */

/* Crash child id (registered) and wait until it runs again. */
static void crash_and_wait_restart(tw_t *w, const char *id)
{
    size_t mark = ev_size(w);
    send_to(w, id, MSG_CRASH);
    size_t term = wait_find(w, mark, EV_TERM, id, RILL_AID_NONE, NULL);
    wait_find(w, term + 1, EV_INIT, id, RILL_AID_NONE, NULL); /* the new child's */
}

Test(sup_intensity, r_restarts_pass_and_one_more_escalates, .timeout = 60)
{
    tw_t *w = tw_new();
    carg_t a = child_arg(w, "a"), b = child_arg(w, "b"), c = child_arg(w, "c");
    rill_child_spec_t ch[] = {worker("a", &a), worker("b", &b), worker("c", &c)};
    rill_sup_spec_t spec = spec_of(RILL_SUP_ONE_FOR_ONE, 3, 60000, ch, 3);
    uint32_t base = alive_now(w);
    rill_aid_t sup = start_sup(w, &spec, "sup");
    watch(w, sup, "sup");

    for (int i = 0; i < 3; i++)
        crash_and_wait_restart(w, "b");
    rill_child_info_t ci = kid(w, sup, "b");
    cr_assert(ci.running);
    cr_assert_eq(ci.restarts, 3);
    cr_assert(rill_alive(w->sys, sup), "3 restarts within the period are allowed");

    size_t mark = ev_size(w);
    send_to(w, "b", MSG_CRASH);
    ev_t down;
    size_t di = wait_find(w, mark, EV_DOWN, "sup", sup, &down);
    cr_assert_eq(down.exit.kind, RILL_EXIT_FAILURE, "supervisor ended with %s: %s",
                 rill_exit_kind_name(down.exit.kind), down.exit.text);
    cr_assert_neq(down.exit.text[0], '\0', "the reason says why");
    /* the rest of the children stopped in reverse order before it ended */
    ASSERT_TRACE(w, mark, K(EV_START) | K(EV_TERM), "-b -c -a");
    size_t ta = ev_find(w, mark, EV_TERM, "a", RILL_AID_NONE, NULL);
    cr_assert_lt(ta, di, "children stop before the supervisor ends");
    cr_assert_not(rill_alive(w->sys, sup));
    size_t n = 0;
    cr_assert_neq(rill_sup_children(w->sys, sup, NULL, 0, &n), RILL_OK);
    wait_alive(w, base);
    cr_assert_eq(allocs(w), frees(w));
    tw_free(w);
}

Test(sup_intensity, no_restarts_escalates_at_the_first_restart, .timeout = 60)
{
    tw_t *w = tw_new();
    carg_t a = child_arg(w, "a");
    rill_child_spec_t ch[] = {worker("a", &a)};
    rill_sup_spec_t spec = spec_of(RILL_SUP_ONE_FOR_ONE, RILL_SUP_NO_RESTARTS, 60000, ch, 1);
    rill_aid_t sup = start_sup(w, &spec, NULL);
    watch(w, sup, "sup");
    size_t mark = ev_size(w);
    send_to(w, "a", MSG_CRASH);
    ev_t down;
    wait_find(w, mark, EV_DOWN, "sup", sup, &down);
    cr_assert_eq(down.exit.kind, RILL_EXIT_FAILURE);
    cr_assert_eq(ev_count(w, mark, EV_START, NULL), 0);
    tw_free(w);
}

Test(sup_intensity, a_zeroed_spec_is_otps_default_one_restart_in_five_seconds, .timeout = 60)
{
    /* intensity 0 and period 0 mean OTP's defaults: the first restart is
     * allowed, a second one within 5 s escalates. */
    tw_t *w = tw_new();
    carg_t a = child_arg(w, "a");
    rill_child_spec_t ch[] = {worker("a", &a)};
    rill_sup_spec_t spec = {.children = ch, .n_children = 1};
    rill_aid_t sup = start_sup(w, &spec, NULL);
    watch(w, sup, "sup");
    size_t mark = ev_size(w);
    crash_and_wait_restart(w, "a");
    cr_assert(rill_alive(w->sys, sup), "the first restart is allowed");
    send_to(w, "a", MSG_CRASH);
    ev_t down;
    wait_find(w, mark, EV_DOWN, "sup", sup, &down);
    cr_assert_eq(down.exit.kind, RILL_EXIT_FAILURE);
    cr_assert(strstr(down.exit.text, "more than 1 in 5000 ms"), "%s", down.exit.text);
    tw_free(w);
}

Test(sup_intensity, restarts_older_than_the_period_do_not_count, .timeout = 60)
{
    tw_t *w = tw_new();
    carg_t a = child_arg(w, "a");
    rill_child_spec_t ch[] = {worker("a", &a)};
    const uint32_t period = 1000;
    rill_sup_spec_t spec = spec_of(RILL_SUP_ONE_FOR_ONE, 1, period, ch, 1);
    rill_aid_t sup = start_sup(w, &spec, NULL);
    watch(w, sup, "sup");

    size_t mark = ev_size(w);
    crash_and_wait_restart(w, "a");
    ev_t init;
    ev_find(w, mark, EV_INIT, "a", RILL_AID_NONE, &init);
    /* the first restart leaves the window */
    sleep_until(init.at_ms + period + 200);
    crash_and_wait_restart(w, "a");
    cr_assert(rill_alive(w->sys, sup), "one restart per period is allowed");
    cr_assert_eq(kid(w, sup, "a").restarts, 2);

    /* At once again: two restarts within the period escalate. "At once"
     * is up to the machine: a crash that a loaded machine delivers after
     * the previous restart left the window is rightly restarted, so each
     * restart is checked to have been allowed, and the crash repeated. */
    ev_t prev = last_init(w, "a");
    for (int attempt = 0;; attempt++) {
        cr_assert_lt(attempt, 5, "no two crashes within %u ms in 5 attempts", period);
        mark = ev_size(w);
        send_to(w, "a", MSG_CRASH);
        ev_t got;
        memset(&got, 0, sizeof(got));
        int kind = wait_either(w, mark, sup, "a", &got);
        if (kind == EV_DOWN) {
            cr_assert_eq(got.exit.kind, RILL_EXIT_FAILURE);
            break;
        }
        cr_assert_geq(got.at_ms - prev.at_ms, (int64_t)period - 50,
                      "restarted %lld ms after the previous restart, within the period",
                      (long long)(got.at_ms - prev.at_ms));
        prev = got;
    }
    tw_free(w);
}

Test(sup_intensity, escalation_goes_up_two_levels, .timeout = 60)
{
    tw_t *w = tw_new();
    carg_t leaf = child_arg(w, "leaf"), other = child_arg(w, "other");
    rill_child_spec_t mid_ch[] = {worker("leaf", &leaf)};
    rill_sup_spec_t mid = spec_of(RILL_SUP_ONE_FOR_ONE, 1, 60000, mid_ch, 1);
    rill_child_spec_t root_ch[] = {worker("other", &other), subsup("mid", &mid)};
    rill_sup_spec_t root = spec_of(RILL_SUP_ONE_FOR_ONE, 1, 60000, root_ch, 2);
    uint32_t base = alive_now(w);
    rill_aid_t sup = start_sup(w, &root, "root");
    watch(w, sup, "root");
    rill_aid_t mid1 = kid_aid(w, sup, "mid");
    cr_assert(kid(w, sup, "mid").supervisor);
    cr_assert(rill_aid_eq(rill_lookup(w->sys, "mid"), mid1));
    watch(w, mid1, "mid1");
    rill_aid_t aother = kid_aid(w, sup, "other");
    bump(w, aother, 7);

    /* leaf: one restart allowed by mid, the second makes mid fail */
    crash_and_wait_restart(w, "leaf");
    size_t mark = ev_size(w);
    send_to(w, "leaf", MSG_CRASH);
    ev_t down;
    wait_find(w, mark, EV_DOWN, "mid1", mid1, &down);
    cr_assert_eq(down.exit.kind, RILL_EXIT_FAILURE, "mid ended with %s",
                 rill_exit_kind_name(down.exit.kind));
    /* root restarts mid, which starts a new leaf */
    wait_count(w, mark, EV_INIT, "leaf", 1);
    rill_child_info_t m = kid(w, sup, "mid");
    cr_assert(m.running && !rill_aid_eq(m.aid, mid1));
    cr_assert_eq(m.restarts, 1);
    cr_assert_eq(m.last_exit.kind, RILL_EXIT_FAILURE);
    cr_assert_eq(stats_restarts(w, m.aid), 1);
    cr_assert(rill_aid_eq(kid_aid(w, sup, "other"), aother), "mid's sibling was not touched");
    cr_assert_eq(counter_of(w, aother), 7);
    cr_assert(rill_alive(w->sys, sup));

    /* the same again: root's own intensity (1) is exceeded */
    crash_and_wait_restart(w, "leaf");
    mark = ev_size(w);
    send_to(w, "leaf", MSG_CRASH);
    wait_find(w, mark, EV_DOWN, "root", sup, &down);
    cr_assert_eq(down.exit.kind, RILL_EXIT_FAILURE, "root ended with %s",
                 rill_exit_kind_name(down.exit.kind));
    ASSERT_TRACE(w, mark, K(EV_START) | K(EV_TERM), "-leaf -other");
    wait_alive(w, base);
    cr_assert_eq(allocs(w), frees(w));
    tw_free(w);
}

/* ======================================================================== */
/* Backoff                                                                  */
/* ======================================================================== */

typedef struct restart_seen {
    uint32_t next_delay_ms; /* what rill_sup_children said while it waited */
    int64_t delay_ms;       /* from the failure (TERM) to the new child's INIT */
    int told_while_waiting; /* a send by name certainly fell into the wait */
} restart_seen_t;

/* Crash registered child id of sup, watch it wait for its restart, and
 * measure the delay. */
static restart_seen_t crash_with_backoff(tw_t *w, rill_aid_t sup, const char *id)
{
    restart_seen_t r;
    memset(&r, 0, sizeof(r));
    size_t mark = ev_size(w);
    send_to(w, id, MSG_CRASH);
    ev_t term;
    size_t ti = wait_find(w, mark, EV_TERM, id, RILL_AID_NONE, &term);

    rill_child_info_t ci = wait_kid(w, sup, id, KID_RESTARTING);
    cr_assert(rill_aid_is_none(ci.aid));
    cr_assert_not(ci.running);
    cr_assert_eq(ci.last_exit.kind, RILL_EXIT_FAILURE);
    r.next_delay_ms = ci.next_delay_ms;

    rill_msg_t m = kit_msg(MSG_INC, 0, NULL);
    rill_err_t e = rill_tell_name(w->sys, id, &m);
    /* The restart cannot come before failure + delay: a send that returned
     * well before then fell into the wait. */
    if (kit_now_ms() < term.at_ms + (int64_t)r.next_delay_ms * 9 / 10) {
        cr_assert_eq(e, RILL_ERESTARTING, "send by name while waiting: %s", rill_err_name(e));
        r.told_while_waiting = 1;
    }

    ev_t init;
    wait_find(w, ti + 1, EV_INIT, id, RILL_AID_NONE, &init); /* the new child's */
    r.delay_ms = init.at_ms - term.at_ms;
    return r;
}

static void check_delay(const restart_seen_t *r, uint32_t want, const char *what)
{
    cr_assert_eq(r->next_delay_ms, want, "%s: next_delay_ms %u, want %u", what, r->next_delay_ms,
                 want);
    cr_assert_geq(r->delay_ms * 10, (int64_t)want * 9, "%s: restarted after %lld ms, want %u", what,
                  (long long)r->delay_ms, want);
    cr_assert_leq(r->delay_ms, (int64_t)want + 5000, "%s: restarted after %lld ms, want %u", what,
                  (long long)r->delay_ms, want);
}

Test(sup_backoff, delays_double_cap_at_max_and_reset_after_quiet_time, .timeout = 60)
{
    tw_t *w = tw_new();
    carg_t b = child_arg(w, "bk"), o = child_arg(w, "other");
    rill_child_spec_t ch[] = {worker("bk", &b), worker("other", &o)};
    rill_sup_spec_t spec = spec_of(RILL_SUP_ONE_FOR_ONE, 100, 60000, ch, 2);
    spec.backoff.min_ms = 150;
    spec.backoff.max_ms = 500; /* 150, 300, then 600 capped at 500 */
    spec.backoff.random = 0.0;
    spec.backoff.reset_ms = 2000;
    rill_aid_t sup = start_sup(w, &spec, NULL);
    rill_aid_t aother = kid_aid(w, sup, "other");

    static const uint32_t want[] = {150, 300, 500, 500};
    int told = 0;
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        restart_seen_t r = crash_with_backoff(w, sup, "bk");
        check_delay(&r, want[i], "consecutive restart");
        told += r.told_while_waiting;
    }
    cr_assert_gt(told, 0, "no send by name landed in a wait");
    cr_assert_eq(kid(w, sup, "bk").restarts, 4);
    cr_assert(rill_aid_eq(kid_aid(w, sup, "other"), aother));

    /* a quiet period of reset_ms: back to the minimum */
    ev_t init = {0}, found;
    size_t last = NO_EV;
    /* ev_find clears `found` when it finds nothing: keep the last hit. */
    for (size_t i = 0; (i = ev_find(w, i, EV_INIT, "bk", RILL_AID_NONE, &found)) != NO_EV; i++) {
        last = i;
        init = found;
    }
    cr_assert_neq(last, NO_EV);
    sleep_until(init.at_ms + (int64_t)spec.backoff.reset_ms + 300);
    restart_seen_t r = crash_with_backoff(w, sup, "bk");
    check_delay(&r, 150, "after the quiet period");

    stop_sup(w, sup);
    tw_free(w);
}

Test(sup_backoff, random_factor_stretches_the_delay_within_bounds, .timeout = 60)
{
    tw_t *w = tw_new();
    carg_t b = child_arg(w, "bk");
    rill_child_spec_t ch[] = {worker("bk", &b)};
    rill_sup_spec_t spec = spec_of(RILL_SUP_ONE_FOR_ONE, 100, 60000, ch, 1);
    spec.backoff.min_ms = 100;
    spec.backoff.max_ms = 200;
    spec.backoff.random = 1.0;
    spec.backoff.reset_ms = 60000;
    rill_aid_t sup = start_sup(w, &spec, NULL);

    static const uint32_t base[] = {100, 200, 200};
    int stretched = 0;
    for (size_t i = 0; i < 3; i++) {
        restart_seen_t r = crash_with_backoff(w, sup, "bk");
        cr_assert(r.next_delay_ms >= base[i] && r.next_delay_ms <= 2 * base[i],
                  "next_delay_ms %u outside %u..%u", r.next_delay_ms, base[i], 2 * base[i]);
        cr_assert_geq(r.delay_ms * 10, (int64_t)r.next_delay_ms * 9,
                      "restarted after %lld ms, announced %u", (long long)r.delay_ms,
                      r.next_delay_ms);
        stretched += r.next_delay_ms > base[i];
    }
    cr_assert_gt(stretched, 0, "random factor 1.0 never stretched a delay");
    stop_sup(w, sup);
    tw_free(w);
}

/* ======================================================================== */
/* Shutdown                                                                 */
/* ======================================================================== */

Test(sup_shutdown, stop_goes_in_reverse_start_order, .timeout = 60)
{
    tw_t *w = tw_new();
    carg_t a = child_arg(w, "a"), b = child_arg(w, "b"), c = child_arg(w, "c"),
           d = child_arg(w, "d");
    rill_child_spec_t ch[] = {worker("a", &a), worker("b", &b), worker("c", &c), worker("d", &d)};
    rill_sup_spec_t spec = spec_of(RILL_SUP_ONE_FOR_ONE, 5, 30000, ch, 4);
    uint32_t base = alive_now(w);
    rill_aid_t sup = start_sup(w, &spec, "sup");
    cr_assert(rill_aid_eq(rill_lookup(w->sys, "sup"), sup));

    size_t mark = ev_size(w);
    stop_sup(w, sup);
    ASSERT_TRACE(w, mark, K(EV_START) | K(EV_TERM), "-d -c -b -a");
    ev_t e;
    for (size_t i = mark; (i = ev_find(w, i, EV_TERM, NULL, RILL_AID_NONE, &e)) != NO_EV; i++)
        cr_assert_eq(e.exit.kind, RILL_EXIT_SHUTDOWN, "%s ended with %s", e.label,
                     rill_exit_kind_name(e.exit.kind));
    cr_assert_eq(allocs(w), frees(w), "every child terminated before rill_sup_stop returned");
    cr_assert(rill_aid_is_none(rill_lookup(w->sys, "a")));
    wait_alive(w, base);
    tw_free(w);
}

Test(sup_shutdown, a_child_ignoring_the_request_is_killed_after_shutdown_ms, .timeout = 60)
{
    tw_t *w = tw_new();
    carg_t coop = child_arg(w, "coop"), stub = child_arg(w, "stub");
    coop.trap_exits = 1;
    coop.on_exit = ON_EXIT_STOP;
    stub.trap_exits = 1;
    stub.on_exit = ON_EXIT_IGNORE;
    rill_child_spec_t ch[] = {worker("coop", &coop), worker("stub", &stub)};
    ch[1].shutdown = RILL_SHUTDOWN_TIMEOUT;
    ch[1].shutdown_ms = 300;
    rill_sup_spec_t spec = spec_of(RILL_SUP_ONE_FOR_ONE, 5, 30000, ch, 2);
    rill_aid_t sup = start_sup(w, &spec, NULL);
    watch(w, kid_aid(w, sup, "coop"), "coop");
    watch(w, kid_aid(w, sup, "stub"), "stub");

    size_t mark = ev_size(w);
    int64_t t0 = kit_now_ms();
    stop_sup(w, sup);
    int64_t elapsed = kit_now_ms() - t0;
    cr_assert_geq(elapsed, 300, "rill_sup_stop returned after %lld ms", (long long)elapsed);
    ASSERT_TRACE(w, mark, K(EV_EXIT_SEEN) | K(EV_TERM), "!stub -stub !coop -coop");

    ev_t seen, term, down;
    ev_find(w, mark, EV_EXIT_SEEN, "stub", RILL_AID_NONE, &seen);
    cr_assert(rill_aid_eq(seen.from, sup), "the request comes from the supervisor");
    cr_assert_eq(seen.exit.kind, RILL_EXIT_SHUTDOWN);
    ev_find(w, mark, EV_TERM, "stub", RILL_AID_NONE, &term);
    cr_assert_eq(term.exit.kind, RILL_EXIT_KILLED, "stub ended with %s",
                 rill_exit_kind_name(term.exit.kind));
    cr_assert_geq(term.at_ms - t0, 300, "killed after %lld ms", (long long)(term.at_ms - t0));
    wait_find(w, mark, EV_DOWN, "stub", RILL_AID_NONE, &down);
    cr_assert_eq(down.exit.kind, RILL_EXIT_KILLED);

    ev_find(w, mark, EV_TERM, "coop", RILL_AID_NONE, &term);
    cr_assert_eq(term.exit.kind, RILL_EXIT_NORMAL, "coop stopped itself");
    wait_find(w, mark, EV_DOWN, "coop", RILL_AID_NONE, &down);
    cr_assert_not(rill_exit_abnormal(&down.exit));
    tw_free(w);
}

Test(sup_shutdown, brutal_kills_at_once, .timeout = 60)
{
    tw_t *w = tw_new();
    carg_t br = child_arg(w, "brutal");
    br.trap_exits = 1;
    br.on_exit = ON_EXIT_IGNORE;
    rill_child_spec_t ch[] = {worker("brutal", &br)};
    ch[0].shutdown = RILL_SHUTDOWN_BRUTAL;
    ch[0].shutdown_ms = 60000; /* not used: waiting for it would time the stop out */
    rill_sup_spec_t spec = spec_of(RILL_SUP_ONE_FOR_ONE, 5, 30000, ch, 1);
    rill_aid_t sup = start_sup(w, &spec, NULL);
    watch(w, kid_aid(w, sup, "brutal"), "brutal");

    size_t mark = ev_size(w);
    stop_sup(w, sup);
    ev_t down;
    wait_find(w, mark, EV_DOWN, "brutal", RILL_AID_NONE, &down);
    cr_assert_eq(down.exit.kind, RILL_EXIT_KILLED);
    cr_assert_eq(ev_count(w, mark, EV_EXIT_SEEN, "brutal"), 0, "no request, just the kill");
    tw_free(w);
}

Test(sup_shutdown, infinity_waits_for_a_child_supervisor_to_stop_its_children, .timeout = 60)
{
    tw_t *w = tw_new();
    /* g2 takes longer than the default shutdown timeout (5 s) to stop */
    const uint32_t linger = 5500;
    carg_t a = child_arg(w, "a"), z = child_arg(w, "z"), g1 = child_arg(w, "g1"),
           g2 = child_arg(w, "g2");
    g2.trap_exits = 1;
    g2.on_exit = ON_EXIT_LINGER;
    g2.linger_ms = linger;
    rill_child_spec_t mid_ch[] = {worker("g1", &g1), worker("g2", &g2)};
    mid_ch[1].shutdown_ms = 30000;
    rill_sup_spec_t mid = spec_of(RILL_SUP_ONE_FOR_ONE, 5, 30000, mid_ch, 2);
    rill_child_spec_t root_ch[] = {worker("a", &a), subsup("mid", &mid), worker("z", &z)};
    rill_sup_spec_t root = spec_of(RILL_SUP_ONE_FOR_ONE, 5, 30000, root_ch, 3);
    rill_aid_t sup = start_sup(w, &root, NULL);
    rill_aid_t amid = kid_aid(w, sup, "mid");
    watch(w, amid, "mid");

    size_t mark = ev_size(w);
    stop_sup(w, sup);
    ASSERT_TRACE(w, mark, K(EV_EXIT_SEEN) | K(EV_TERM), "-z !g2 -g2 -g1 -a");
    ev_t seen, term, down;
    ev_find(w, mark, EV_EXIT_SEEN, "g2", RILL_AID_NONE, &seen);
    size_t tg1 = ev_find(w, mark, EV_TERM, "g1", RILL_AID_NONE, NULL);
    ev_find(w, mark, EV_TERM, "g2", RILL_AID_NONE, &term);
    cr_assert_eq(term.exit.kind, RILL_EXIT_NORMAL, "g2 finished its work: %s",
                 rill_exit_kind_name(term.exit.kind));
    cr_assert_geq(term.at_ms - seen.at_ms, linger);
    size_t dm = wait_find(w, mark, EV_DOWN, "mid", amid, &down);
    cr_assert_gt(dm, tg1, "mid ends after its children");
    cr_assert_not(rill_exit_abnormal(&down.exit), "mid ended with %s: %s",
                  rill_exit_kind_name(down.exit.kind), down.exit.text);
    ev_t e;
    for (size_t i = mark; (i = ev_find(w, i, EV_TERM, NULL, RILL_AID_NONE, &e)) != NO_EV; i++)
        cr_assert_neq(e.exit.kind, RILL_EXIT_KILLED, "%s was killed", e.label);
    tw_free(w);
}

/* ======================================================================== */
/* Dynamic children                                                         */
/* ======================================================================== */

static rill_sup_spec_t dynamic_spec(rill_child_spec_t *tmpl, carg_t *targ)
{
    memset(tmpl, 0, sizeof(*tmpl));
    tmpl->id = "worker";
    tmpl->start = child_start;
    tmpl->arg = targ;
    return spec_of(RILL_SUP_SIMPLE_ONE_FOR_ONE, 10, 30000, tmpl, 1);
}

/* A simple_one_for_one supervisor spec built on a "template" child; the
 * spec points into the struct, so it must outlive the supervisor. */
typedef struct {
    carg_t targ;
    rill_child_spec_t tmpl;
    rill_sup_spec_t spec;
} dyn_sup_t;

static void dyn_sup_init(tw_t *w, dyn_sup_t *d)
{
    d->targ = child_arg(w, "template");
    d->spec = dynamic_spec(&d->tmpl, &d->targ);
}

Test(sup_dynamic, start_child_adds_numbered_children_with_their_own_arg, .timeout = 60)
{
    tw_t *w = tw_new();
    dyn_sup_t d;
    dyn_sup_init(w, &d);
    rill_aid_t sup = start_sup(w, &d.spec, NULL);
    size_t n = 99;
    cr_assert_eq(rill_sup_children(w->sys, sup, NULL, 0, &n), RILL_OK);
    cr_assert_eq(n, 0, "no child before start_child");
    cr_assert_eq(ev_count(w, 0, EV_START, NULL), 0);

    carg_t args[3] = {child_arg(w, "w1"), child_arg(w, "w2"), child_arg(w, "w3")};
    rill_aid_t aid[3];
    for (int i = 0; i < 3; i++) {
        args[i].initial = 100 * (uint64_t)(i + 1);
        aid[i] = RILL_AID_NONE;
        rill_err_t e = rill_sup_start_child(w->sys, sup, &args[i], &aid[i]);
        cr_assert_eq(e, RILL_OK, "start_child: %s", rill_err_name(e));
        cr_assert(!rill_aid_is_none(aid[i]));
    }
    ASSERT_TRACE(w, 0, K(EV_START), "+w1 +w2 +w3");
    ASSERT_IDS(w, sup, "worker-1,worker-2,worker-3");
    rill_child_info_t v[MAX_KIDS];
    cr_assert_eq(kids(w, sup, v, MAX_KIDS), 3);
    for (int i = 0; i < 3; i++) {
        cr_assert(rill_aid_eq(v[i].aid, aid[i]));
        cr_assert(v[i].running);
        cr_assert_eq(counter_of(w, aid[i]), 100 * (uint64_t)(i + 1), "started with its own arg");
    }
    cr_assert_eq(rill_sup_start_child(w->sys, sup, &args[0], NULL), RILL_OK, "child may be NULL");
    cr_assert_eq(kids(w, sup, v, MAX_KIDS), 4);
    for (int i = 0; i < 3; i++)
        cr_assert_str_neq(v[3].id, v[i].id, "ids are unique");
    cr_assert_eq(strncmp(v[3].id, "worker-", 7), 0, "id %s", v[3].id);

    stop_sup(w, sup);
    tw_free(w);
}

Test(sup_dynamic, terminate_child_stops_and_forgets_only_that_one, .timeout = 60)
{
    tw_t *w = tw_new();
    dyn_sup_t d;
    dyn_sup_init(w, &d);
    rill_aid_t sup = start_sup(w, &d.spec, NULL);
    carg_t args[3] = {child_arg(w, "w1"), child_arg(w, "w2"), child_arg(w, "w3")};
    rill_aid_t aid[3];
    for (int i = 0; i < 3; i++) {
        aid[i] = start_dyn(w, sup, &args[i]);
        bump(w, aid[i], i + 1);
    }
    cr_assert_eq(counter_of(w, aid[2]), 3);

    size_t mark = ev_size(w);
    rill_err_t e = rill_sup_terminate_child(w->sys, sup, aid[0]);
    cr_assert_eq(e, RILL_OK, "terminate_child: %s", rill_err_name(e));
    /* it has terminated by the time terminate_child returns */
    ASSERT_TRACE(w, mark, K(EV_START) | K(EV_TERM), "-w1");
    ev_t term;
    ev_find(w, mark, EV_TERM, "w1", RILL_AID_NONE, &term);
    cr_assert_eq(term.exit.kind, RILL_EXIT_SHUTDOWN);
    cr_assert_eq(term.counter, 1);
    cr_assert_not(rill_alive(w->sys, aid[0]));
    ASSERT_IDS(w, sup, "worker-2,worker-3");
    cr_assert_neq(rill_sup_terminate_child(w->sys, sup, aid[0]), RILL_OK, "already gone");
    cr_assert_eq(counter_of(w, aid[1]), 2);
    cr_assert_eq(counter_of(w, aid[2]), 3);
    (void)kids(w, sup, NULL, 0);
    cr_assert_eq(ev_count(w, mark, EV_START, NULL), 0, "nothing restarted");

    stop_sup(w, sup);
    tw_free(w);
}

Test(sup_dynamic, restarting_one_child_leaves_the_others_alone, .timeout = 60)
{
    tw_t *w = tw_new();
    dyn_sup_t d;
    dyn_sup_init(w, &d);
    rill_aid_t sup = start_sup(w, &d.spec, NULL);
    carg_t args[3] = {child_arg(w, "w1"), child_arg(w, "w2"), child_arg(w, "w3")};
    rill_aid_t aid[3];
    for (int i = 0; i < 3; i++) {
        args[i].initial = 10 * (uint64_t)(i + 1);
        aid[i] = start_dyn(w, sup, &args[i]);
        bump(w, aid[i], 1);
        cr_assert_eq(counter_of(w, aid[i]), 10 * (uint64_t)(i + 1) + 1);
    }

    size_t mark = ev_size(w);
    send_aid(w, aid[1], MSG_CRASH);
    wait_count(w, mark, EV_INIT, "w2", 1);
    (void)kids(w, sup, NULL, 0);
    ASSERT_TRACE(w, mark, K(EV_START) | K(EV_TERM), "-w2 +w2");
    rill_child_info_t v[MAX_KIDS];
    cr_assert_eq(kids(w, sup, v, MAX_KIDS), 3);
    cr_assert_str_eq(v[1].id, "worker-2", "keeps its id");
    cr_assert(v[1].running && !rill_aid_eq(v[1].aid, aid[1]));
    cr_assert_eq(v[1].restarts, 1);
    cr_assert_eq(counter_of(w, v[1].aid), 20, "restarted with its own arg");
    cr_assert(rill_aid_eq(v[0].aid, aid[0]));
    cr_assert(rill_aid_eq(v[2].aid, aid[2]));
    cr_assert_eq(counter_of(w, aid[0]), 11);
    cr_assert_eq(counter_of(w, aid[2]), 31);

    stop_sup(w, sup);
    tw_free(w);
}

Test(sup_dynamic, a_child_that_is_not_restarted_is_forgotten, .timeout = 60)
{
    tw_t *w = tw_new();
    dyn_sup_t d;
    dyn_sup_init(w, &d);
    d.tmpl.restart = RILL_RESTART_TRANSIENT;
    rill_aid_t sup = start_sup(w, &d.spec, NULL);
    carg_t args[2] = {child_arg(w, "w1"), child_arg(w, "w2")};
    rill_aid_t aid[2];
    for (int i = 0; i < 2; i++)
        aid[i] = start_dyn(w, sup, &args[i]);
    size_t mark = ev_size(w);
    send_aid(w, aid[0], MSG_STOP_NORMAL);
    wait_kid(w, sup, "worker-1", KID_ABSENT);
    ASSERT_IDS(w, sup, "worker-2");
    cr_assert_eq(ev_count(w, mark, EV_START, NULL), 0);
    stop_sup(w, sup);
    tw_free(w);
}

Test(sup_dynamic, a_start_child_whose_start_fails_returns_the_error, .timeout = 60)
{
    tw_t *w = tw_new();
    dyn_sup_t d;
    dyn_sup_init(w, &d);
    uint32_t base = alive_now(w); /* no ask yet: no reply actor either */
    rill_aid_t sup = start_sup(w, &d.spec, NULL);
    carg_t good = child_arg(w, "good"), bad = child_arg(w, "bad");
    bad.start_error = RILL_ENOENT;
    cr_assert_eq(rill_sup_start_child(w->sys, sup, &good, NULL), RILL_OK);
    rill_aid_t aid = {12345};
    cr_assert_eq(rill_sup_start_child(w->sys, sup, &bad, &aid), RILL_ENOENT);
    ASSERT_IDS(w, sup, "worker-1");
    wait_alive(w, base + 2); /* the supervisor and "good" */
    cr_assert(rill_alive(w->sys, sup));
    stop_sup(w, sup);
    tw_free(w);
}

/* ======================================================================== */
/* Specs and arguments                                                      */
/* ======================================================================== */

/* The spec is refused by rill_sup_spec_check and rill_sup_start with
 * RILL_EINVAL and a reason containing word1 (and word2 if not NULL), and no
 * actor is left. check: rill_sup_spec_check sees the problem too. */
static void expect_rejected(tw_t *w, const rill_sup_spec_t *spec, int check, const char *word1,
                            const char *word2, const char *what)
{
    char err[256];
    if (check) {
        strcpy(err, "");
        cr_assert_eq(rill_sup_spec_check(spec, err, sizeof(err)), RILL_EINVAL, "check: %s", what);
        cr_assert_not_null(strstr(err, word1), "%s: errstr \"%s\" lacks \"%s\"", what, err, word1);
        if (word2)
            cr_assert_not_null(strstr(err, word2), "%s: errstr \"%s\" lacks \"%s\"", what, err,
                               word2);
    }
    uint32_t base = alive_now(w);
    rill_aid_t aid = {777};
    strcpy(err, "");
    rill_err_t e = rill_sup_start(w->sys, spec, NULL, &aid, err, sizeof(err));
    cr_assert_eq(e, RILL_EINVAL, "start: %s: %s", what, rill_err_name(e));
    cr_assert(rill_aid_is_none(aid), "%s: no supervisor", what);
    cr_assert_not_null(strstr(err, word1), "%s: errstr \"%s\" lacks \"%s\"", what, err, word1);
    if (word2)
        cr_assert_not_null(strstr(err, word2), "%s: errstr \"%s\" lacks \"%s\"", what, err, word2);
    wait_alive(w, base);
}

Test(sup_spec, invalid_specs_are_rejected_with_a_reason, .timeout = 60)
{
    tw_t *w = tw_new();
    carg_t a = child_arg(w, "a");
    char err[256] = "";
    cr_assert_eq(rill_sup_spec_check(NULL, err, sizeof(err)), RILL_EINVAL);
    cr_assert_not_null(strstr(err, "NULL"), "errstr \"%s\"", err);
    rill_aid_t aid = {777};
    cr_assert_eq(rill_sup_start(w->sys, NULL, NULL, &aid, err, sizeof(err)), RILL_EINVAL);
    cr_assert(rill_aid_is_none(aid));

    rill_child_spec_t good[] = {worker("first", &a), worker("second", &a)};
    rill_sup_spec_t ok = spec_of(RILL_SUP_ONE_FOR_ONE, 1, 5000, good, 2);
    cr_assert_eq(rill_sup_spec_check(&ok, err, sizeof(err)), RILL_OK, "%s", err);

    rill_child_spec_t nostart[] = {worker("first", &a), worker("lazy", &a)};
    nostart[1].start = NULL;
    rill_sup_spec_t s = ok;
    s.children = nostart;
    expect_rejected(w, &s, 1, "lazy", "start", "child without start function");

    rill_child_spec_t dup[] = {worker("twin", &a), worker("twin", &a)};
    s = ok;
    s.children = dup;
    expect_rejected(w, &s, 1, "duplicate", "twin", "duplicate ids");

    rill_child_spec_t noid[] = {worker("first", &a), worker(NULL, &a)};
    s = ok;
    s.children = noid;
    expect_rejected(w, &s, 1, "id", NULL, "child without id");

    s = ok;
    s.intensity = RILL_SUP_NO_RESTARTS - 1;
    expect_rejected(w, &s, 1, "intensity", NULL, "intensity below RILL_SUP_NO_RESTARTS");

    s = ok;
    s.auto_shutdown = (rill_auto_shutdown_t)7;
    expect_rejected(w, &s, 1, "auto_shutdown", NULL, "unknown auto_shutdown");

    rill_child_spec_t sig[] = {worker("first", &a), worker("key", &a)};
    sig[1].significant = 1; /* and permanent */
    s = ok;
    s.children = sig;
    expect_rejected(w, &s, 1, "key", "significant", "a significant permanent child");

    s = ok;
    s.backoff.min_ms = 500;
    s.backoff.max_ms = 100;
    expect_rejected(w, &s, 1, "backoff", NULL, "backoff max < min");

    static const double bad_random[] = {-0.1, 1.5, NAN};
    for (int i = 0; i < 3; i++) {
        s = ok;
        s.backoff.min_ms = s.backoff.max_ms = 10;
        s.backoff.random = bad_random[i];
        expect_rejected(w, &s, 1, "random", NULL, "random factor outside 0..1");
    }

    s = ok;
    s.strategy = RILL_SUP_SIMPLE_ONE_FOR_ONE; /* two templates */
    expect_rejected(w, &s, 1, "simple_one_for_one", NULL, "simple_one_for_one with 2");
    s.n_children = 0;
    expect_rejected(w, &s, 1, "simple_one_for_one", NULL, "simple_one_for_one with 0");

    rill_sup_spec_t bad_nested = ok;
    bad_nested.intensity = -7;
    rill_child_spec_t nested[] = {worker("first", &a), subsup("inner", &bad_nested)};
    s = ok;
    s.children = nested;
    expect_rejected(w, &s, 1, "inner", "intensity", "invalid child supervisor spec");

    s = ok;
    s.executor = RILL_EXECUTOR(rill_system_executors(w->sys));
    expect_rejected(w, &s, 0, "executor", NULL, "executor out of range");
    s.executor = -1;
    expect_rejected(w, &s, 0, "executor", NULL, "executor below RILL_EXECUTOR_ANY");

    cr_assert_eq(ev_count(w, 0, EV_START, NULL), 0, "no child was started");
    tw_free(w);
}

Test(sup_spec, calls_with_null_system_or_aid_zero_are_einval, .timeout = 60)
{
    tw_t *w = tw_new();
    carg_t a = child_arg(w, "a");
    rill_child_spec_t ch[] = {worker("a", &a)};
    rill_sup_spec_t spec = spec_of(RILL_SUP_ONE_FOR_ONE, 1, 5000, ch, 1);
    char err[256];
    rill_aid_t aid = {0};
    cr_assert_eq(rill_sup_start(NULL, &spec, NULL, &aid, err, sizeof(err)), RILL_EINVAL);
    cr_assert_eq(rill_sup_start(w->sys, &spec, NULL, NULL, err, sizeof(err)), RILL_EINVAL);

    rill_aid_t sup = start_sup(w, &spec, NULL);
    rill_aid_t child = kid_aid(w, sup, "a");
    rill_child_info_t info[2];
    size_t n = 0;
    char *text = NULL;
    cr_assert_eq(rill_sup_stop(NULL, sup, 1000), RILL_EINVAL);
    cr_assert_eq(rill_sup_stop(w->sys, RILL_AID_NONE, 1000), RILL_EINVAL);
    cr_assert_eq(rill_sup_children(NULL, sup, info, 2, &n), RILL_EINVAL);
    cr_assert_eq(rill_sup_children(w->sys, RILL_AID_NONE, info, 2, &n), RILL_EINVAL);
    cr_assert_eq(rill_sup_children(w->sys, sup, info, 2, NULL), RILL_EINVAL);
    cr_assert_eq(rill_sup_dump(NULL, sup, 0, &text), RILL_EINVAL);
    cr_assert_eq(rill_sup_dump(w->sys, RILL_AID_NONE, 1, &text), RILL_EINVAL);
    cr_assert_eq(rill_sup_dump(w->sys, sup, 0, NULL), RILL_EINVAL);
    cr_assert_eq(rill_sup_start_child(NULL, sup, NULL, NULL), RILL_EINVAL);
    cr_assert_eq(rill_sup_start_child(w->sys, RILL_AID_NONE, NULL, NULL), RILL_EINVAL);
    cr_assert_eq(rill_sup_terminate_child(NULL, sup, child), RILL_EINVAL);
    cr_assert_eq(rill_sup_terminate_child(w->sys, RILL_AID_NONE, child), RILL_EINVAL);
    cr_assert_eq(rill_sup_terminate_child(w->sys, sup, RILL_AID_NONE), RILL_EINVAL);
    cr_assert_null(text);

    /* dynamic-only calls on a static supervisor */
    rill_aid_t got = RILL_AID_NONE;
    cr_assert_eq(rill_sup_start_child(w->sys, sup, &a, &got), RILL_EINVAL);
    cr_assert_eq(rill_sup_terminate_child(w->sys, sup, child), RILL_EINVAL);
    cr_assert(rill_aid_eq(kid_aid(w, sup, "a"), child), "the child was not touched");
    cr_assert_eq(ev_count(w, 0, EV_START, NULL), 1);

    stop_sup(w, sup);
    tw_free(w);
}

Test(sup_spec, a_child_that_cannot_start_fails_the_supervisor_start, .timeout = 60)
{
    tw_t *w = tw_new();
    carg_t a = child_arg(w, "a"), bad = child_arg(w, "bad"), c = child_arg(w, "c");
    bad.start_error = RILL_EIO;
    rill_child_spec_t ch[] = {worker("a", &a), worker("bad", &bad), worker("c", &c)};
    rill_sup_spec_t spec = spec_of(RILL_SUP_ONE_FOR_ONE, 5, 30000, ch, 3);
    uint32_t base = alive_now(w);
    char err[256] = "";
    rill_aid_t aid = {777};
    rill_err_t e = rill_sup_start(w->sys, &spec, "sup", &aid, err, sizeof(err));
    cr_assert_eq(e, RILL_EIO, "rill_sup_start: %s", rill_err_name(e));
    cr_assert(rill_aid_is_none(aid));
    cr_assert_not_null(strstr(err, "bad"), "errstr \"%s\" names the child", err);

    wait_alive(w, base);
    ASSERT_TRACE(w, 0, K(EV_START) | K(EV_TERM), "+a +bad -a");
    ev_t term;
    ev_find(w, 0, EV_TERM, "a", RILL_AID_NONE, &term);
    cr_assert_eq(term.exit.kind, RILL_EXIT_SHUTDOWN);
    cr_assert_eq(allocs(w), frees(w));
    cr_assert(rill_aid_is_none(rill_lookup(w->sys, "sup")));
    cr_assert(rill_aid_is_none(rill_lookup(w->sys, "a")));
    tw_free(w);
}

/* OTP: start_link of a supervisor returns only once its children were
 * stopped again, so a failed start can be retried at once. Child `a` takes
 * 300 ms to stop: if rill_sup_start returned before that, its name is
 * still taken and the retry fails. (Facts first, asserts after the system
 * stopped: a failed assert must not leave the supervisor reading a spec in
 * a dead stack frame.) */
Test(sup_spec, a_failed_start_leaves_nothing_behind_when_it_returns, .timeout = 60)
{
    tw_t *w = tw_new();
    carg_t a = child_arg(w, "a"), bad = child_arg(w, "bad");
    a.trap_exits = 1;
    a.on_exit = ON_EXIT_LINGER;
    a.linger_ms = 300;
    bad.start_error = RILL_EIO;
    rill_child_spec_t ch[] = {worker("a", &a), worker("bad", &bad)};
    rill_sup_spec_t spec = spec_of(RILL_SUP_ONE_FOR_ONE, 5, 30000, ch, 2);
    uint32_t base = alive_now(w);
    char err[256] = "", err2[256] = "";
    rill_aid_t aid = {777}, aid2 = RILL_AID_NONE;
    /* unnamed: the supervisor itself may still be finishing at return */
    rill_err_t e1 = rill_sup_start(w->sys, &spec, NULL, &aid, err, sizeof(err));
    size_t a_terms = ev_count(w, 0, EV_TERM, "a");
    rill_aid_t a_named = rill_lookup(w->sys, "a");
    uint32_t alive_at_return = alive_now(w);

    bad.start_error = RILL_OK;
    rill_err_t e2 = rill_sup_start(w->sys, &spec, NULL, &aid2, err2, sizeof(err2));
    if (e2 == RILL_OK)
        stop_sup(w, aid2);
    wait_alive(w, base);
    tw_free(w);

    cr_assert_eq(e1, RILL_EIO, "rill_sup_start: %s", rill_err_name(e1));
    cr_assert(rill_aid_is_none(aid));
    cr_assert_eq(a_terms, 1, "rill_sup_start returned before \"a\" stopped");
    cr_assert(rill_aid_is_none(a_named), "\"a\" still registered when rill_sup_start returned");
    cr_assert_leq(alive_at_return, base + 1, "%u actors alive at return, baseline %u",
                  alive_at_return, base);
    cr_assert_eq(e2, RILL_OK, "retry at once: %s: %s", rill_err_name(e2), err2);
}

/* A child supervisor that cannot start its own children cannot start
 * either, so neither can the root (OTP: the nested start_link fails, and
 * with it the parent's). Facts first, asserts after the system stopped. */
Test(sup_spec, a_grandchild_that_cannot_start_fails_the_root_start, .timeout = 60)
{
    tw_t *w = tw_new();
    carg_t a = child_arg(w, "a"), bad = child_arg(w, "bad");
    bad.start_error = RILL_EIO;
    rill_child_spec_t mid_ch[] = {worker("bad", &bad)};
    rill_sup_spec_t mid = spec_of(RILL_SUP_ONE_FOR_ONE, 1, 5000, mid_ch, 1);
    rill_child_spec_t root_ch[] = {worker("a", &a), subsup("mid", &mid)};
    rill_sup_spec_t root = spec_of(RILL_SUP_ONE_FOR_ONE, 1, 5000, root_ch, 2);
    uint32_t base = alive_now(w);
    char err[256] = "";
    rill_aid_t aid = {777};
    rill_err_t e = rill_sup_start(w->sys, &root, "root", &aid, err, sizeof(err));
    if (e != RILL_OK)
        wait_alive(w, base);
    tw_free(w);

    cr_assert_neq(e, RILL_OK, "rill_sup_start succeeded although \"mid\" could not start");
    cr_assert(rill_aid_is_none(aid));
    cr_assert_not_null(strstr(err, "mid"), "errstr \"%s\" names the child", err);
}

/* ======================================================================== */
/* Observability                                                            */
/* ======================================================================== */

/* Whether text has a line naming child id (the id at the start of the line,
 * after indentation) that also holds `count` as a number. */
static int line_has_count(const char *text, const char *id, uint32_t count)
{
    size_t idlen = strlen(id);
    for (const char *line = text; line && *line;) {
        const char *end = strchr(line, '\n');
        if (!end)
            end = line + strlen(line);
        const char *p = line;
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        if ((size_t)(end - p) >= idlen && !strncmp(p, id, idlen) &&
            !isalnum((unsigned char)p[idlen]) && p[idlen] != '-') {
            for (const char *q = p + idlen; q < end; q++) {
                if (!isdigit((unsigned char)*q) || isdigit((unsigned char)q[-1]))
                    continue;
                if (strtoul(q, NULL, 10) == count)
                    return 1;
            }
        }
        line = *end ? end + 1 : NULL;
    }
    return 0;
}

Test(sup_observe, actor_stats_restarts_match_the_supervisor, .timeout = 60)
{
    tw_t *w = tw_new();
    carg_t a = child_arg(w, "alpha"), b = child_arg(w, "bravo");
    rill_child_spec_t ch[] = {worker("alpha", &a), worker("bravo", &b)};
    rill_sup_spec_t spec = spec_of(RILL_SUP_ONE_FOR_ONE, 10, 30000, ch, 2);
    rill_aid_t sup = start_sup(w, &spec, NULL);
    for (uint32_t i = 1; i <= 3; i++) {
        crash_and_wait_restart(w, "bravo");
        rill_child_info_t ci = kid(w, sup, "bravo");
        cr_assert_eq(ci.restarts, i);
        cr_assert_eq(stats_restarts(w, ci.aid), i, "rill_actor_stats after %u restarts", i);
    }
    rill_child_info_t ci = kid(w, sup, "alpha");
    cr_assert_eq(ci.restarts, 0);
    cr_assert_eq(stats_restarts(w, ci.aid), 0);
    stop_sup(w, sup);
    tw_free(w);
}

Test(sup_observe, dump_names_every_child_with_its_restarts, .timeout = 60)
{
    tw_t *w = tw_new();
    carg_t a = child_arg(w, "alpha"), b = child_arg(w, "bravo"), g = child_arg(w, "gamma");
    rill_child_spec_t mid_ch[] = {worker("gamma", &g)};
    rill_sup_spec_t mid = spec_of(RILL_SUP_ONE_FOR_ONE, 10, 30000, mid_ch, 1);
    rill_child_spec_t ch[] = {worker("alpha", &a), worker("bravo", &b), subsup("middle", &mid)};
    rill_sup_spec_t spec = spec_of(RILL_SUP_ONE_FOR_ONE, 10, 30000, ch, 3);
    rill_aid_t sup = start_sup(w, &spec, NULL);
    for (int i = 0; i < 3; i++)
        crash_and_wait_restart(w, "bravo");
    crash_and_wait_restart(w, "gamma");

    char *text = NULL;
    cr_assert_eq(rill_sup_dump(w->sys, sup, 0, &text), RILL_OK);
    cr_assert_not_null(text);
    cr_assert(line_has_count(text, "alpha", 0), "dump:\n%s", text);
    cr_assert(line_has_count(text, "bravo", 3), "dump:\n%s", text);
    cr_assert(line_has_count(text, "middle", 0), "dump:\n%s", text);
    cr_assert(line_has_count(text, "gamma", 1), "nested child in dump:\n%s", text);
    free(text);

    text = NULL;
    cr_assert_eq(rill_sup_dump(w->sys, sup, 1, &text), RILL_OK);
    cr_assert_not_null(text);
    cr_assert_eq(strncmp(text, "digraph", 7), 0, "dot:\n%s", text);
    static const char *ids[] = {"alpha", "bravo", "middle", "gamma"};
    for (int i = 0; i < 4; i++)
        cr_assert_not_null(strstr(text, ids[i]), "dot lacks %s:\n%s", ids[i], text);
    cr_assert_not_null(strchr(text, '}'));
    free(text);

    stop_sup(w, sup);
    cr_assert_eq(rill_sup_dump(w->sys, sup, 0, &text), RILL_ESTOPPED);
    tw_free(w);
}

/* ======================================================================== */
/* Leaks                                                                    */
/* ======================================================================== */

Test(sup_leaks, a_thousand_restarts_in_a_tree_leak_nothing, .timeout = 120)
{
    tw_t *w = tw_new();
    carg_t s1 = child_arg(w, "s1"), s2 = child_arg(w, "s2"), s3 = child_arg(w, "s3");
    carg_t w1 = child_arg(w, "w1"), w2 = child_arg(w, "w2");
    rill_child_spec_t sub_ch[] = {worker("s1", &s1), worker("s2", &s2), worker("s3", &s3)};
    rill_sup_spec_t sub = spec_of(RILL_SUP_ONE_FOR_ALL, 10000, 600000, sub_ch, 3);
    rill_child_spec_t root_ch[] = {worker("w1", &w1), subsup("sub", &sub), worker("w2", &w2)};
    rill_sup_spec_t root = spec_of(RILL_SUP_ONE_FOR_ONE, 10000, 600000, root_ch, 3);
    uint32_t base = alive_now(w);
    rill_aid_t sup = start_sup(w, &root, "root");
    rill_aid_t asub = kid_aid(w, sup, "sub");

    static const char *targets[] = {"w1", "s2", "w2", "s1", "s3"};
    const int failures = KIT_SCALE(1000);
    for (int i = 0; i < failures; i++) {
        const char *t = targets[i % 5];
        size_t mark = ev_size(w);
        send_to(w, t, MSG_CRASH);
        if (t[0] == 'w') {
            wait_count(w, mark, EV_INIT, t, 1);
        } else { /* one_for_all: the whole subtree comes back */
            wait_count(w, mark, EV_INIT, "s1", 1);
            wait_count(w, mark, EV_INIT, "s2", 1);
            wait_count(w, mark, EV_INIT, "s3", 1);
        }
    }

    uint32_t total = 0;
    rill_child_info_t v[MAX_KIDS];
    size_t n = kids(w, sup, v, MAX_KIDS);
    cr_assert_eq(n, 3);
    for (size_t i = 0; i < n; i++)
        total += v[i].restarts;
    cr_assert_eq(kid(w, sup, "sub").restarts, 0);
    cr_assert(rill_aid_eq(kid_aid(w, sup, "sub"), asub));
    n = kids(w, asub, v, MAX_KIDS);
    cr_assert_eq(n, 3);
    for (size_t i = 0; i < n; i++)
        total += v[i].restarts;
    cr_assert_eq(total, (uint32_t)failures, "restarts counted: %u", total);

    stop_sup(w, sup);
    cr_assert_eq(allocs(w), (long)ev_count(w, 0, EV_START, NULL));
    cr_assert_eq(allocs(w), frees(w), "%ld states allocated, %ld freed", allocs(w), frees(w));
    wait_alive(w, base);
    tw_free(w);
}
