/* Error strings, version, clocks: the bottom of the library. */
#include "util.h"

#include <limits.h>
#include <stdio.h>
#include <time.h>

static const struct {
    const char *name;
    const char *text;
} err_table[RILL_ERR__COUNT] = {
    [RILL_OK] = {"RILL_OK", "success"},
    [RILL_EINVAL] = {"RILL_EINVAL", "invalid argument"},
    [RILL_ENOMEM] = {"RILL_ENOMEM", "out of memory"},
    [RILL_EFULL] = {"RILL_EFULL", "mailbox full"},
    [RILL_ESTOPPED] = {"RILL_ESTOPPED", "stopped"},
    [RILL_ETIMEDOUT] = {"RILL_ETIMEDOUT", "timed out"},
    [RILL_ENOENT] = {"RILL_ENOENT", "no such entity"},
    [RILL_EEXIST] = {"RILL_EEXIST", "already exists"},
    [RILL_ESTATE] = {"RILL_ESTATE", "invalid state for this operation"},
    [RILL_EKAFKA] = {"RILL_EKAFKA", "Kafka client error"},
    [RILL_EIO] = {"RILL_EIO", "operating system error"},
    [RILL_ERESTARTING] = {"RILL_ERESTARTING", "restarting"},
};

const char *rill_err2str(rill_err_t err)
{
    if ((unsigned)err >= RILL_ERR__COUNT)
        return "unknown error";
    return err_table[err].text;
}

const char *rill_err_name(rill_err_t err)
{
    if ((unsigned)err >= RILL_ERR__COUNT)
        return "RILL_E?";
    return err_table[err].name;
}

const char *rill_version_str(void)
{
    return RILL_VERSION_STR;
}

rill_err_t rill__fail(rill_err_t err, char *errstr, size_t errstr_size, const char *fmt, ...)
{
    if (errstr && errstr_size > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(errstr, errstr_size, fmt, ap);
        va_end(ap);
    }
    return err;
}

int64_t rill__now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t rill__now_ms(void)
{
    return rill__now_us() / 1000;
}

int rill__ms_left(int64_t deadline_ms)
{
    int64_t left = deadline_ms - rill__now_ms();
    if (left < 0)
        return 0;
    return left > INT_MAX ? INT_MAX : (int)left;
}
