/*
 * The observer's growing strings (obs_int.h): text built with printf,
 * JSON strings and Prometheus label values escaped.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "obs_int.h"

static int buf_room(obs_buf_t *b, size_t more)
{
    if (b->oom)
        return 0;
    if (b->len + more + 1 <= b->cap)
        return 1;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more + 1)
        cap *= 2;
    char *s = realloc(b->s, cap);
    if (!s) {
        b->oom = 1;
        return 0;
    }
    b->s = s;
    b->cap = cap;
    return 1;
}

void obs_printf(obs_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char small[256];
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0 || !buf_room(b, (size_t)n))
        return;
    if ((size_t)n < sizeof(small)) {
        memcpy(b->s + b->len, small, (size_t)n + 1);
    } else {
        va_start(ap, fmt);
        vsnprintf(b->s + b->len, (size_t)n + 1, fmt, ap);
        va_end(ap);
    }
    b->len += (size_t)n;
}

static void buf_putc(obs_buf_t *b, char c)
{
    if (buf_room(b, 1)) {
        b->s[b->len++] = c;
        b->s[b->len] = '\0';
    }
}

void obs_json_str(obs_buf_t *b, const char *s)
{
    buf_putc(b, '"');
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        if (*p == '"' || *p == '\\') {
            buf_putc(b, '\\');
            buf_putc(b, (char)*p);
        } else if (*p == '\n') {
            obs_printf(b, "\\n");
        } else if (*p < 0x20 || *p == 0x7f) {
            obs_printf(b, "\\u%04x", *p);
        } else {
            buf_putc(b, (char)*p);
        }
    }
    buf_putc(b, '"');
}

void obs_label(obs_buf_t *b, const char *s)
{
    buf_putc(b, '"');
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        if (*p == '"' || *p == '\\') {
            buf_putc(b, '\\');
            buf_putc(b, (char)*p);
        } else if (*p == '\n') {
            obs_printf(b, "\\n");
        } else if (*p >= 0x20) {
            buf_putc(b, (char)*p);
        }
    }
    buf_putc(b, '"');
}

rill_err_t obs_take(obs_buf_t *b, char **out, size_t *len)
{
    if (!buf_room(b, 0)) {
        free(b->s);
        *b = (obs_buf_t){0};
        return RILL_ENOMEM;
    }
    *out = b->s;
    if (len)
        *len = b->len;
    *b = (obs_buf_t){0};
    return RILL_OK;
}
