/*
 * Supervisor specs: the checks rill_sup_start runs before anything
 * starts, and the defaults of the fields left zero.
 */
#include <string.h>

#include "sup_int.h"

#define DEFAULT_SHUTDOWN_MS 5000u

rill_err_t rill_sup_spec_check(const rill_sup_spec_t *spec, char *errstr, size_t errstr_size)
{
    if (!spec)
        return rill__fail(RILL_EINVAL, errstr, errstr_size, "supervisor spec is NULL");
    if (spec->strategy < RILL_SUP_ONE_FOR_ONE || spec->strategy > RILL_SUP_SIMPLE_ONE_FOR_ONE)
        return rill__fail(RILL_EINVAL, errstr, errstr_size, "unknown strategy %d",
                          (int)spec->strategy);
    if (spec->intensity < RILL_SUP_NO_RESTARTS)
        return rill__fail(RILL_EINVAL, errstr, errstr_size,
                          "intensity must be >= 0 (0: one restart) or RILL_SUP_NO_RESTARTS, got %d",
                          spec->intensity);
    if (spec->backoff.max_ms < spec->backoff.min_ms)
        return rill__fail(RILL_EINVAL, errstr, errstr_size,
                          "backoff max (%u ms) is below backoff min (%u ms)", spec->backoff.max_ms,
                          spec->backoff.min_ms);
    if (spec->auto_shutdown < RILL_AUTO_SHUTDOWN_NEVER ||
        spec->auto_shutdown > RILL_AUTO_SHUTDOWN_ALL)
        return rill__fail(RILL_EINVAL, errstr, errstr_size, "unknown auto_shutdown %d",
                          (int)spec->auto_shutdown);
    if (!(spec->backoff.random >= 0.0 && spec->backoff.random <= 1.0))
        return rill__fail(RILL_EINVAL, errstr, errstr_size,
                          "backoff random factor must be within 0..1");
    if (spec->n_children && !spec->children)
        return rill__fail(RILL_EINVAL, errstr, errstr_size, "children is NULL");
    if (spec->strategy == RILL_SUP_SIMPLE_ONE_FOR_ONE && spec->n_children != 1)
        return rill__fail(RILL_EINVAL, errstr, errstr_size,
                          "simple_one_for_one needs exactly one template child, got %zu",
                          spec->n_children);
    for (size_t i = 0; i < spec->n_children; i++) {
        const rill_child_spec_t *c = &spec->children[i];
        if (!c->id || !*c->id || strlen(c->id) >= 64)
            return rill__fail(RILL_EINVAL, errstr, errstr_size,
                              "child %zu needs an id of 1 to 63 characters", i);
        if (!!c->start + !!c->spawn + !!c->supervisor != 1)
            return rill__fail(RILL_EINVAL, errstr, errstr_size,
                              "child \"%s\" needs exactly one of a start function, a spawn "
                              "function and a supervisor spec",
                              c->id);
        if (c->restart < RILL_RESTART_PERMANENT || c->restart > RILL_RESTART_TEMPORARY ||
            c->shutdown < RILL_SHUTDOWN_TIMEOUT || c->shutdown > RILL_SHUTDOWN_INFINITY)
            return rill__fail(RILL_EINVAL, errstr, errstr_size,
                              "child \"%s\" has an unknown restart or shutdown type", c->id);
        if (c->significant && c->restart == RILL_RESTART_PERMANENT)
            return rill__fail(RILL_EINVAL, errstr, errstr_size,
                              "child \"%s\" is significant, so it must be transient or temporary",
                              c->id);
        for (size_t j = 0; j < i; j++)
            if (!strcmp(spec->children[j].id, c->id))
                return rill__fail(RILL_EINVAL, errstr, errstr_size, "duplicate child id \"%s\"",
                                  c->id);
        if (c->supervisor) {
            char sub[200];
            if (rill_sup_spec_check(c->supervisor, sub, sizeof(sub)))
                return rill__fail(RILL_EINVAL, errstr, errstr_size, "child \"%s\": %s", c->id, sub);
        }
    }
    return RILL_OK;
}

uint32_t rill__sup_backoff_reset_ms(const rill_sup_spec_t *sp)
{
    if (sp->backoff.reset_ms)
        return sp->backoff.reset_ms;
    return sp->backoff.max_ms ? sp->backoff.max_ms * 10 : 0;
}

uint32_t rill__sup_intensity(const rill_sup_spec_t *sp)
{
    if (sp->intensity == RILL_SUP_NO_RESTARTS)
        return 0;
    return sp->intensity ? (uint32_t)sp->intensity : 1u; /* OTP's default */
}

uint32_t rill__sup_period_ms(const rill_sup_spec_t *sp)
{
    return sp->period_ms ? sp->period_ms : 5000u; /* OTP's default */
}

uint32_t rill__sup_shutdown_ms(const rill_child_spec_t *sp)
{
    return sp->shutdown_ms ? sp->shutdown_ms : DEFAULT_SHUTDOWN_MS;
}
