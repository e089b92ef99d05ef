/*
 * The process-wide log hook (common.h): rill's own lines and its Kafka
 * clients' go to one function, or to stderr. Logging is rare (errors,
 * warnings, restarts), so a mutex guards the hook; the level is read
 * without it.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>

#include <rill/common.h>

#include "util.h"

static pthread_mutex_t hook_mu = PTHREAD_MUTEX_INITIALIZER;
static rill_log_fn *hook_fn;
static void *hook_opaque;
static _Atomic int min_level = RILL_LOG_WARNING;

static const char *const names[] = {"emerg",   "alert",  "crit", "error",
                                    "warning", "notice", "info", "debug"};

const char *rill_log_level_name(rill_log_level_t level)
{
    return (unsigned)level < sizeof(names) / sizeof(names[0]) ? names[level] : "unknown";
}

void rill_log_set(rill_log_fn *fn, void *opaque)
{
    pthread_mutex_lock(&hook_mu);
    hook_fn = fn;
    hook_opaque = opaque;
    pthread_mutex_unlock(&hook_mu);
}

rill_log_level_t rill_log_set_level(rill_log_level_t level)
{
    /* relaxed: a threshold of its own, ordering nothing */
    int before = atomic_load_explicit(&min_level, memory_order_relaxed);
    if ((unsigned)level <= RILL_LOG_DEBUG)
        before = atomic_exchange_explicit(&min_level, (int)level, memory_order_relaxed);
    return (rill_log_level_t)before;
}

int rill__log_wanted(int level)
{
    return level <= atomic_load_explicit(&min_level, memory_order_relaxed);
}

void rill__log_line(int level, const char *facility, const char *text)
{
    if (level < 0)
        level = 0;
    if (level > RILL_LOG_DEBUG)
        level = RILL_LOG_DEBUG;
    if (!facility)
        facility = "app";
    pthread_mutex_lock(&hook_mu);
    rill_log_fn *fn = hook_fn;
    void *opaque = hook_opaque;
    pthread_mutex_unlock(&hook_mu);
    if (fn)
        fn(opaque, (rill_log_level_t)level, facility, text);
    else
        fprintf(stderr, "rill %s [%s]: %s\n", names[level], facility, text);
}

static void log_v(int level, const char *facility, const char *fmt, va_list ap)
{
    if (!rill__log_wanted(level))
        return;
    char text[1024];
    vsnprintf(text, sizeof(text), fmt ? fmt : "", ap);
    rill__log_line(level, facility, text);
}

void rill_log(rill_log_level_t level, const char *facility, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_v((int)level, facility, fmt, ap);
    va_end(ap);
}
