/*
 * The window stage's options, checked before a stage is made
 * (rill_stage_window, window.c): NULL when they hold, or a sentence
 * saying what is wrong.
 */
#include "state_int.h"

const char *rill__window_opts_check(const rill_store_t *store, const rill_window_opts_t *o,
                                    const rill_window_ops_t *ops)
{
    if (!store || !o || !ops)
        return "the store, the options and the ops must not be NULL";
    if (!ops->add)
        return "ops->add must not be NULL";
    if (ops->agg_size < 1 || ops->agg_size > RILL_WINDOW_AGG_MAX)
        return "ops->agg_size must be 1 to RILL_WINDOW_AGG_MAX (1024) bytes";
    if (o->grace_ms > (uint64_t)INT64_MAX)
        return "grace_ms is too large";
    switch (o->type) {
    case RILL_WINDOW_TUMBLING:
        return o->size_ms < 1 || o->size_ms > (uint64_t)INT64_MAX / 2 ? "size_ms must be > 0"
                                                                      : NULL;
    case RILL_WINDOW_HOPPING:
        if (o->size_ms < 1 || o->size_ms > (uint64_t)INT64_MAX / 2)
            return "size_ms must be > 0";
        if (o->advance_ms < 1 || o->advance_ms > o->size_ms)
            return "advance_ms must be 1 to size_ms";
        return (o->size_ms + o->advance_ms - 1) / o->advance_ms > RILL_WINDOW_HOPS_MAX
                   ? "a record would fall in more than RILL_WINDOW_HOPS_MAX (1024) windows: "
                     "make advance_ms larger"
                   : NULL;
    case RILL_WINDOW_SESSION:
        if (o->gap_ms < 1 || o->gap_ms > (uint64_t)INT64_MAX / 2)
            return "gap_ms must be > 0";
        return ops->merge ? NULL : "sessions need ops->merge";
    default:
        return "type must be RILL_WINDOW_TUMBLING, _HOPPING or _SESSION";
    }
}
