/*
 * Stage specs: blueprints of stages, made by the kinds' constructors,
 * carrying their error when made from bad arguments, copied and prepared
 * for each run of a pipeline (see stream_int.h).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../actors/seam.h"
#include "stream_int.h"

/* ------------------------------------------------------------------ */
/* Specs                                                               */
/* ------------------------------------------------------------------ */

/* The spec a constructor returns when there is no memory for one: it
 * carries RILL_ENOMEM and is never freed. */
static rill_stage_t oom_spec = {.err = RILL_ENOMEM, .err_text = "out of memory for a stage spec"};

void rill_stage_free(rill_stage_t *stage)
{
    if (!stage || stage == &oom_spec)
        return;
    if (stage->impl && stage->kind && stage->kind->destroy)
        stage->kind->destroy(stage->impl);
    free(stage);
}

rill_err_t rill_stage_error(const rill_stage_t *stage, char *errstr, size_t errstr_size)
{
    if (!stage)
        return rill__fail(RILL_EINVAL, errstr, errstr_size, "the stage spec is NULL");
    if (stage->err)
        return rill__fail(stage->err, errstr, errstr_size, "%s", stage->err_text);
    return RILL_OK;
}

rill_stage_t *rill__stage_spec_new(const rill__kind_t *kind, void *impl)
{
    if (!impl)
        return rill__stage_spec_bad(kind, RILL_ENOMEM, "out of memory");
    rill_stage_t *s = calloc(1, sizeof(*s));
    if (!s) {
        if (kind->destroy)
            kind->destroy(impl);
        return &oom_spec;
    }
    s->kind = kind;
    s->impl = impl;
    return s;
}

rill_stage_t *rill__stage_spec_bad(const rill__kind_t *kind, rill_err_t err, const char *fmt, ...)
{
    rill_stage_t *s = calloc(1, sizeof(*s));
    if (!s)
        return &oom_spec;
    s->kind = kind;
    s->err = err ? err : RILL_EINVAL;
    char text[sizeof(s->err_text)];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    snprintf(s->err_text, sizeof(s->err_text), "%.30s: %.85s", kind ? kind->name : "stage", text);
    return s;
}

rill_stage_t *rill__stage_spec_clone(const rill_stage_t *spec)
{
    if (!spec || spec->err || !spec->kind)
        return NULL;
    const rill__kind_t *k = spec->kind;
    void *impl = NULL;
    if (k->clone) {
        impl = k->clone(spec->impl);
    } else if ((impl = malloc(k->impl_size ? k->impl_size : 1))) {
        memcpy(impl, spec->impl, k->impl_size);
    }
    if (!impl)
        return NULL;
    rill_stage_t *s = calloc(1, sizeof(*s));
    if (!s) {
        if (k->destroy)
            k->destroy(impl);
        return NULL;
    }
    s->kind = k;
    s->impl = impl;
    return s;
}

rill_err_t rill__stage_prepare(rill_stage_t *spec, rill_system_t *sys, char *errstr,
                               size_t errstr_size)
{
    if (spec->err)
        return rill_stage_error(spec, errstr, errstr_size);
    if (spec->prepared || !spec->kind->prepare)
        return RILL_OK;
    rill_err_t err = spec->kind->prepare(spec->impl, sys, errstr, errstr_size);
    if (!err)
        spec->prepared = 1;
    return err;
}

void rill__stage_spec_retire(rill_stage_t *spec)
{
    if (spec && !spec->err && spec->kind && spec->kind->retire)
        spec->kind->retire(spec->impl);
}

rill_err_t rill__stage_kind_check(rill_system_t *sys, rill_aid_t aid, const rill__kind_t *kind)
{
    const void *tag;
    rill_err_t err = rill__actor_tag(sys, aid, &tag);
    if (err || tag == kind)
        return err;
    return RILL_EINVAL;
}
