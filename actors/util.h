/*
 * Internal helpers shared by every layer of rill (not installed).
 * Internal names carry the rill__ prefix (two underscores).
 */
#ifndef RILL_UTIL_H
#define RILL_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <rill/common.h>

/*
 * Write a message into a caller's errstr buffer (which may be NULL or of
 * size 0) and return err, so that failures read `return rill__fail(...)`.
 */
rill_err_t rill__fail(rill_err_t err, char *errstr, size_t errstr_size, const char *fmt, ...)
    RILL_PRINTF(4, 5);

/* Monotonic clock in milliseconds and microseconds. */
int64_t rill__now_ms(void);
int64_t rill__now_us(void);

/* Milliseconds left until deadline_ms (a rill__now_ms() value), never < 0,
 * clamped to INT32_MAX so it fits librdkafka's int timeouts. */
int rill__ms_left(int64_t deadline_ms);

#endif /* RILL_UTIL_H */
