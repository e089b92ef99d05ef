/*
 * Internal helpers shared by every layer of rill and by the testkit (not
 * installed). Internal names carry the rill__ prefix (two underscores).
 *
 * They are static inline so that the testkit, a library of its own, uses
 * the same code without exporting rill's internals or clashing with them
 * when both libraries are linked statically.
 */
#ifndef RILL_UTIL_H
#define RILL_UTIL_H

#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <time.h>

#include <rill/common.h>

/*
 * Write a message into a caller's errstr buffer (which may be NULL or of
 * size 0) and return err, so that failures read `return rill__fail(...)`.
 */
static inline rill_err_t rill__fail(rill_err_t err, char *errstr, size_t errstr_size,
                                    const char *fmt, ...) RILL_PRINTF(4, 5);
static inline rill_err_t rill__fail(rill_err_t err, char *errstr, size_t errstr_size,
                                    const char *fmt, ...)
{
    if (errstr && errstr_size > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(errstr, errstr_size, fmt, ap);
        va_end(ap);
    }
    return err;
}

/* Monotonic clock in nanoseconds, microseconds and milliseconds. */
static inline int64_t rill__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline int64_t rill__now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static inline int64_t rill__now_ms(void)
{
    return rill__now_us() / 1000;
}

/* The CLOCK_REALTIME time ms milliseconds from now (ms < 0 counts as 0):
 * a deadline for pthread_cond_timedwait. */
static inline struct timespec rill__realtime_after_ms(int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (ms < 0)
        ms = 0;
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

/* Milliseconds left until deadline_ms (a rill__now_ms() value), never < 0,
 * clamped to INT_MAX so it fits librdkafka's int timeouts. */
static inline int rill__ms_left(int64_t deadline_ms)
{
    int64_t left = deadline_ms - rill__now_ms();
    if (left < 0)
        return 0;
    return left > INT_MAX ? INT_MAX : (int)left;
}

/* Room for one more element in an array of *cap elements of `size` bytes
 * at v, n of them used: v itself while there is room, else v doubled (the
 * first time: `first` elements), or NULL without memory (v and *cap are
 * then unchanged). */
static inline void *rill__grow(void *v, size_t *cap, size_t n, size_t size, size_t first)
{
    if (n < *cap)
        return v;
    size_t c = *cap ? 2 * *cap : first;
    void *nv = realloc(v, c * size);
    if (nv)
        *cap = c;
    return nv;
}

/* The bucket of a latency of ns in a rill_hist_t (hist.c), for writers
 * that keep it between observations of the same value. */
size_t rill__hist_bucket(uint64_t ns);

/* The log hook's internals (log.c), for the layers' own logging: a line
 * at this level wanted?; a line passed on as it is (a Kafka client's,
 * filtered by its caller). */
int rill__log_wanted(int level);
void rill__log_line(int level, const char *facility, const char *text);

#endif /* RILL_UTIL_H */
