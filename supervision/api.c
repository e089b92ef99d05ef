/*
 * The supervisor API for other threads: start a tree and wait until it is
 * up, stop it, add and remove dynamic children, read the children and
 * dump the tree. Everything but the start is an ask to the supervisor,
 * whose state lives on its own executor.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sup_int.h"

rill_err_t rill_sup_start(rill_system_t *sys, const rill_sup_spec_t *spec, const char *name,
                          rill_aid_t *sup, char *errstr, size_t errstr_size)
{
    if (!sys || !sup)
        return rill__fail(RILL_EINVAL, errstr, errstr_size, "system or sup is NULL");
    *sup = RILL_AID_NONE;
    rill_err_t err = rill_sup_spec_check(spec, errstr, errstr_size);
    if (err)
        return err;
    if (spec->executor < RILL_EXECUTOR_ANY || spec->executor > rill_system_executors(sys))
        return rill__fail(RILL_EINVAL, errstr, errstr_size, "executor %d out of range",
                          spec->executor);
    if (rill__tls_exec)
        return rill__fail(RILL_ESTATE, errstr, errstr_size,
                          "rill_sup_start waits, so it cannot run on an executor");
    rill__sup_boot_t boot = {.err = RILL_OK};
    pthread_mutex_init(&boot.lock, NULL);
    pthread_cond_init(&boot.cond, NULL);
    rill_aid_t aid;
    err = rill__sup_spawn(sys, spec, name, RILL_AID_NONE, &boot, &aid);
    if (!err) {
        pthread_mutex_lock(&boot.lock);
        while (!boot.done)
            pthread_cond_wait(&boot.cond, &boot.lock);
        pthread_mutex_unlock(&boot.lock);
        err = boot.err;
        if (err)
            rill__fail(err, errstr, errstr_size, "%s", boot.text);
        else
            *sup = aid;
    } else {
        rill__fail(err, errstr, errstr_size, "could not spawn the supervisor: %s",
                   rill_err2str(err));
    }
    pthread_cond_destroy(&boot.cond);
    pthread_mutex_destroy(&boot.lock);
    return err;
}

/* Ask a supervisor and wait. */
static rill_err_t sup_ask(rill_system_t *sys, rill_aid_t sup, uint32_t type, uint64_t arg,
                          void *payload, int timeout_ms, rill_msg_t *reply)
{
    rill_msg_t q = {.type = type, .arg = arg, .payload = payload};
    return rill_ask_sync(sys, sup, &q, timeout_ms, reply);
}

rill_err_t rill_sup_stop(rill_system_t *sys, rill_aid_t sup, int timeout_ms)
{
    if (!sys || rill_aid_is_none(sup))
        return RILL_EINVAL;
    int64_t deadline = timeout_ms < 0 ? INT64_MAX : rill__now_ms() + timeout_ms;
    rill_msg_t r;
    rill_err_t err = sup_ask(sys, sup, RILL__SUP_STOP, 0, NULL,
                             timeout_ms < 0 ? 24 * 3600 * 1000 : timeout_ms, &r);
    if (err && err != RILL_ESTOPPED)
        return err;
    /* The supervisor stops right after its answer. */
    while (rill_alive(sys, sup)) {
        if (rill__now_ms() >= deadline)
            return RILL_ETIMEDOUT;
        struct timespec ts = {0, 200 * 1000};
        nanosleep(&ts, NULL);
    }
    return RILL_OK;
}

rill_err_t rill_sup_start_child(rill_system_t *sys, rill_aid_t sup, void *arg, rill_aid_t *child)
{
    if (!sys || rill_aid_is_none(sup))
        return RILL_EINVAL;
    rill_msg_t r;
    rill_err_t err = sup_ask(sys, sup, RILL__SUP_START_CHILD, 0, arg, 30000, &r);
    if (err)
        return err;
    err = RILL__SUP_STATUS_OF(&r);
    if (!err && child)
        child->id = r.arg;
    return err;
}

rill_err_t rill_sup_terminate_child(rill_system_t *sys, rill_aid_t sup, rill_aid_t child)
{
    if (!sys || rill_aid_is_none(sup) || rill_aid_is_none(child))
        return RILL_EINVAL;
    rill_msg_t r;
    rill_err_t err = sup_ask(sys, sup, RILL__SUP_TERMINATE_CHILD, child.id, NULL, 60000, &r);
    if (err)
        return err;
    return RILL__SUP_STATUS_OF(&r);
}

rill_err_t rill_sup_children(rill_system_t *sys, rill_aid_t sup, rill_child_info_t *out, size_t max,
                             size_t *n)
{
    if (!sys || rill_aid_is_none(sup) || !n || (max && !out))
        return RILL_EINVAL;
    rill_msg_t r;
    rill_err_t err = sup_ask(sys, sup, RILL__SUP_QUERY, 0, NULL, 10000, &r);
    if (err)
        return err;
    if (r.type != RILL__SUP_REPLY_QUERY) {
        err = RILL__SUP_STATUS_OF(&r);
        return err ? err : RILL_ESTATE;
    }
    *n = (size_t)r.arg;
    const rill_child_info_t *v = r.payload;
    for (size_t i = 0; i < *n && i < max; i++)
        out[i] = v[i];
    if (r.dtor)
        r.dtor(r.payload);
    return RILL_OK;
}

/* ---- dump ---- */

typedef struct strbuf {
    char *s;
    size_t len, cap;
    int oom;
} strbuf_t;

static void sb_printf(strbuf_t *b, const char *fmt, ...) RILL_PRINTF(2, 3);

static void sb_printf(strbuf_t *b, const char *fmt, ...)
{
    if (b->oom)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->s ? b->s + b->len : NULL, b->s ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = 1;
            return;
        }
        if (b->s && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = (b->cap ? b->cap * 2 : 1024) + (size_t)n;
        char *s = realloc(b->s, cap);
        if (!s) {
            b->oom = 1;
            return;
        }
        b->s = s;
        b->cap = cap;
    }
}

static void dump_node(rill_system_t *sys, rill_aid_t sup, const char *label, int depth, int dot,
                      strbuf_t *b)
{
    rill_child_info_t info[256];
    size_t n = 0;
    rill_err_t err = rill_sup_children(sys, sup, info, 256, &n);
    if (err) {
        if (!dot)
            sb_printf(b, "%*s(%s: %s)\n", depth * 2, "", label, rill_err2str(err));
        return;
    }
    if (n > 256)
        n = 256;
    for (size_t i = 0; i < n; i++) {
        const rill_child_info_t *c = &info[i];
        const char *state = c->running ? "running" : c->restarting ? "restarting" : "stopped";
        if (dot) {
            sb_printf(b,
                      "  \"%#" PRIx64 "\" -> \"%s/%s\";\n  \"%s/%s\" [label=\"%s\\n%s, "
                      "%u restarts%s%s\" shape=%s color=%s];\n",
                      sup.id, label, c->id, label, c->id, c->id, state, c->restarts,
                      c->last_exit.text[0] ? "\\nlast: " : "",
                      c->last_exit.text[0] ? rill_exit_kind_name(c->last_exit.kind) : "",
                      c->supervisor ? "box" : "ellipse",
                      c->running      ? "darkgreen"
                      : c->restarting ? "orange"
                                      : "gray");
        } else {
            sb_printf(b, "%*s%s%s  [%s] restarts=%u", depth * 2, "", c->id,
                      c->supervisor ? " (supervisor)" : "", state, c->restarts);
            if (c->restarting)
                sb_printf(b, " next in %u ms", c->next_delay_ms);
            if (c->last_exit.text[0] || c->last_exit.kind != RILL_EXIT_NORMAL)
                sb_printf(b, " last exit: %s (%s)", rill_exit_kind_name(c->last_exit.kind),
                          c->last_exit.text);
            sb_printf(b, "\n");
        }
        if (c->supervisor && !rill_aid_is_none(c->aid)) {
            if (dot) {
                /* the child supervisor's node is named by its aid */
                sb_printf(b, "  \"%s/%s\" -> \"%#" PRIx64 "\" [style=dotted];\n", label, c->id,
                          c->aid.id);
                sb_printf(b, "  \"%#" PRIx64 "\" [label=\"%s\" shape=box];\n", c->aid.id, c->id);
            }
            dump_node(sys, c->aid, c->id, depth + 1, dot, b);
        }
    }
}

rill_err_t rill_sup_dump(rill_system_t *sys, rill_aid_t sup, int dot, char **out)
{
    if (!sys || rill_aid_is_none(sup) || !out)
        return RILL_EINVAL;
    *out = NULL;
    if (!rill_alive(sys, sup))
        return RILL_ESTOPPED;
    strbuf_t b = {0};
    if (dot) {
        sb_printf(&b,
                  "digraph rill {\n  rankdir=TB;\n  \"%#" PRIx64 "\" [label=\"root\" "
                  "shape=box style=bold];\n",
                  sup.id);
        dump_node(sys, sup, "root", 0, 1, &b);
        sb_printf(&b, "}\n");
    } else {
        sb_printf(&b, "supervisor %#" PRIx64 "\n", sup.id);
        dump_node(sys, sup, "root", 1, 0, &b);
    }
    if (b.oom) {
        free(b.s);
        return RILL_ENOMEM;
    }
    *out = b.s;
    return RILL_OK;
}
