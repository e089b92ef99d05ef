/*
 * failed-source (rill_source_failed): a source that fails at once; its
 * subscriber gets ON_SUBSCRIBE then ERROR (rule 1.9).
 */
#include <stdio.h>
#include <stdlib.h>

#include "../kinds.h"

typedef struct failed_src {
    rill_err_t code;
    char text[120];
} failed_src_t;

static rill_err_t failed_start(rill__stage_t *st)
{
    failed_src_t *f = st->spec.impl;
    st->failed = 1;
    st->fail_code = f->code;
    snprintf(st->fail_text, sizeof(st->fail_text), "%.47s: %.108s", st->name, f->text);
    return RILL_OK;
}

const rill__kind_t rill__failed_kind = {.name = "failed-source",
                                        .max_in = 0,
                                        .max_out = 1,
                                        .start = failed_start,
                                        .destroy = free,
                                        .impl_size = sizeof(failed_src_t)};

rill_stage_t *rill_source_failed(rill_err_t code, const char *text)
{
    if (code == RILL_OK)
        return rill__stage_spec_bad(&rill__failed_kind, RILL_EINVAL,
                                    "a failed source needs an error code, not RILL_OK");
    failed_src_t *f = calloc(1, sizeof(*f));
    if (f) {
        f->code = code;
        snprintf(f->text, sizeof(f->text), "%s", text ? text : rill_err2str(code));
    }
    return rill__stage_spec_new(&rill__failed_kind, f);
}
