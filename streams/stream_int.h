/*
 * Internals of the stream layer (not installed).
 *
 * Every stage runs on one generic engine (stage.c): the engine speaks the
 * protocol on both sides (subscriptions, demand, cancellation, terminal
 * signals), owns the links, and calls a stage kind's hooks; the kinds
 * (stages/, listed in kinds.h) only decide what to do with elements.
 */
#ifndef RILL_STREAM_INT_H
#define RILL_STREAM_INT_H

#include <stdint.h>

#include <rill/stream.h>

/* The internal signals (RILL__STREAM_*) are in the registry of message
 * types, actors/msgtypes.h, which seam.h brings. */
#include "../actors/seam.h"

#define RILL__MAX_LINKS 64

typedef struct rill__stage rill__stage_t;
typedef struct rill__pipeline_hook rill__pipeline_hook_t;

typedef enum { LINK_NONE = 0, LINK_PENDING, LINK_ACTIVE, LINK_DONE } rill__link_state_t;

typedef struct rill__in {
    rill_aid_t pub;
    uint64_t token;
    rill__link_state_t state;
    int cancelled;       /* we cancelled it: NEXT still accepted and released */
    int64_t outstanding; /* requested and not yet received */
    rill_monitor_t mon;  /* on pub while PENDING (none once answered) */
    int64_t pub_down_ms; /* pub ended while PENDING: when (0: it did not) */
} rill__in_t;

typedef struct rill__out {
    rill_aid_t sub;
    uint64_t token;
    rill__link_state_t state;
    int64_t demand; /* saturating at INT64_MAX */
    int has_stash;  /* a NEXT the subscriber's mailbox refused, to retry */
    rill_elem_t stash;
    uint64_t sent;
} rill__out_t;

/* A stage kind: hooks called by the engine on the stage's executor. */
typedef struct rill__kind {
    const char *name;
    uint32_t max_in;  /* 0 = source */
    uint32_t max_out; /* 0 = sink */
    /* Its output is optional (a Kafka producer: delivery reports): with no
     * subscriber it ends a pipeline like a sink. */
    int optional_out;
    /* Called once when the stage actor starts. */
    rill_err_t (*start)(rill__stage_t *st);
    /* An element arrived on input `in`; ownership passes to the hook. */
    void (*on_next)(rill__stage_t *st, int in, rill_elem_t *e);
    /* Input `in` ended: code RILL_OK for COMPLETE, else ERROR. */
    void (*on_input_end)(rill__stage_t *st, int in, rill_err_t code, const char *text);
    /* Demand or room changed: emit what can be emitted, request what can
     * be held. */
    void (*pump)(rill__stage_t *st);
    /* Kind-specific messages (timers, async completions). */
    void (*on_msg)(rill__stage_t *st, rill_msg_t *m);
    /* A source asked to complete early (drain). NULL = complete at once. */
    void (*on_drain)(rill__stage_t *st);
    /* Composites: non-zero if sub is one of the stage's own inner actors
     * (handled here); other subscribers are forwarded. */
    int (*own_subscriber)(rill__stage_t *st, rill_aid_t sub);
    /* Release everything the kind still holds. */
    void (*destroy)(void *impl);

    /* ---- blueprints: a spec run again and again ---- */
    /* A fresh impl holding the parameters of `impl`, none of a run's state
     * (a pipeline restarted by its supervisor runs a copy of each spec).
     * NULL: impl is impl_size bytes of plain parameters, copied as they
     * are. Returns NULL without memory. */
    void *(*clone)(const void *impl);
    size_t impl_size;
    /* On the spawning thread, before the actor exists: make what can fail
     * for a reason worth a sentence (a Kafka client from its
     * configuration). NULL = nothing to prepare. */
    rill_err_t (*prepare)(void *impl, rill_system_t *sys, char *errstr, size_t errstr_size);
    /* The blueprint is done for good (its pipeline ended or is freed):
     * let go of what runs kept between them (a parked Kafka client). */
    void (*retire)(void *impl);
    /* The most a stop of this source may take (drain, final commit, close),
     * in ms; NULL = 5000. A pipeline's stop hard-stops what is left after
     * that. */
    uint32_t (*stop_budget_ms)(const void *impl);
    /* The smallest mailbox the stage needs (a Kafka source: room for the
     * settle notices of what it has out); NULL = the opts' own. */
    uint32_t (*mailbox_min)(const void *impl);

    /* ---- sources that must outlive their stream ---- */
    /* The source's output is done (it completed, or was cancelled) but it
     * keeps running, as a Kafka source does until the confirms of what it
     * emitted are in: non-zero keeps the actor alive, and the kind ends it
     * with rill__stage_end(), or the engine does on RILL__STREAM_FINISH
     * (every stage after this one ended: nothing can confirm anything any
     * more). NULL = stop with the output. */
    int (*linger)(rill__stage_t *st, int final);
} rill__kind_t;

struct rill_stage {
    const rill__kind_t *kind;
    void *impl;
    /* A spec made from bad arguments (impl NULL): the error and its
     * sentence, reported when the spec is used. */
    rill_err_t err;
    char err_text[120];
    int prepared; /* kind->prepare has run (a pipeline prepares before it spawns) */
};

/* How a stage tells its pipeline run what happened. Copied by value into
 * every stage of the run (composites pass it to their inner actors), so it
 * stays valid whatever ends first. */
struct rill__pipeline_hook {
    void *p;        /* the rill_pipeline_t: counts actors in and out */
    rill_aid_t run; /* the run's actor: told of failures and of the sink's end */
    rill_system_t *sys;
    int once;     /* the run is not supervised: there is no next run */
    int terminal; /* this stage is the run's last: nothing will subscribe to
                     its output (a kind with an optional output ends there) */
};

typedef struct rill__lost_err {
    rill_aid_t sub;
    uint64_t token;
    rill_err_t code;
    char text[96];
} rill__lost_err_t;

struct rill__stage {
    rill_stage_t spec;
    char name[48];
    rill_ctx_t *ctx; /* valid inside callbacks */
    rill_system_t *sys;
    rill_aid_t self;
    uint32_t window; /* mailbox capacity - 1: most we may have outstanding */

    rill__in_t in[RILL__MAX_LINKS];
    uint32_t n_in;
    uint64_t next_token;
    rill__out_t out[RILL__MAX_LINKS];
    uint32_t n_out;
    uint32_t n_out_expected; /* outputs to wait for before emitting (broadcast) */

    int finished; /* COMPLETE/ERROR sent downstream, or cancelled */
    int failed;
    rill_err_t fail_code;
    char fail_text[160];
    uint64_t received, delivered; /* elements in, elements out (sinks: consumed) */
    int retry_armed;
    int gone_check_armed; /* a timer checks pending links whose publisher ended */
    int stop_requested;   /* pipeline stop: end as STOPPED */
    int redeliver_drops;  /* stage opts: drops are released, not confirmed */
    int lingering;        /* outputs done, the kind keeps the actor (linger) */
    int final;            /* the pipeline ends for good (stop, drain): no restart */

    /* ERRORs for subscriptions we no longer hold (3.9, refused
     * subscriptions) whose subscriber's mailbox was full: retried. */
    rill__lost_err_t lost_err[8];
    uint32_t n_lost_err;

    rill__pipeline_hook_t hook;
    /* partition_by_key forwards subscriptions to its merge. */
    rill_aid_t forward_subscribe;
};

/* ---- engine services for kinds (stage.c) ---- */

/* Ask input `in` to have up to `want` elements outstanding (capped by the
 * window); REQUEST is sent in chunks, not one by one. The inline part
 * answers the common "enough is outstanding" case without a call. */
void rill__stage_want_slow(rill__stage_t *st, int in, int64_t want);
static inline void rill__stage_want(rill__stage_t *st, int in, int64_t want);

/* Element validity without a call (rill_elem_valid is the public twin). */
static inline int rill__elem_ok(const rill_elem_t *e)
{
    return e->payload != NULL;
}
/* Take the element out of a NEXT message: the runtime will not free it. */
static inline rill_elem_t rill__elem_take(rill_msg_t *m)
{
    rill_elem_t e;
    e.payload = m->payload;
    e.dtor = m->dtor;
    e.arg = m->arg;
    e.origin = m->origin;
    m->dtor = NULL;
    m->origin = NULL;
    return e;
}

/* Cancel input `in` (no-op if done). */
void rill__stage_cancel_in(rill__stage_t *st, int in);
/* Output i can take an element now (active, demand, nothing stashed). */
int rill__stage_can_emit(const rill__stage_t *st, int out);
/* Send e to output `out` (ownership passes; if the subscriber's mailbox
 * refuses, rill keeps it and retries). Call only when can_emit. */
void rill__stage_emit(rill__stage_t *st, int out, rill_elem_t *e);
/* Smallest demand over the active outputs (broadcast), 0 if any lacks. */
int64_t rill__stage_min_demand(const rill__stage_t *st);
/* All outputs connected and active (or cancelled). */
int rill__stage_outputs_ready(const rill__stage_t *st);
/* Complete every output and stop the stage normally. */
void rill__stage_complete(rill__stage_t *st);
/* Fail: ERROR to every output, CANCEL every input, stop abnormally. The
 * text becomes "<stage name>: <text>". */
void rill__stage_fail(rill__stage_t *st, rill_err_t code, const char *fmt, ...) RILL_PRINTF(3, 4);
/* Fail the stage because processing failed on the element whose origin
 * is `suspect` (the caller's reference, taken and released unconfirmed):
 * the suspect's source hears that this record failed the stage, with the
 * stage's text, and counts it (a Kafka source: rill.max.failures). */
void rill__stage_fail_blame(rill__stage_t *st, rill_origin_t *suspect, rill_err_t code,
                            const char *fmt, ...) RILL_PRINTF(4, 5);

/* The element a stage's function is processing, whose origin the stage
 * holds: rill_elem_reject() and rill_elem_retry() called on `in` from the
 * function mark that origin and set verdict; the stage then releases the
 * origin (the source takes the record from there) and goes on. Set by the
 * stage around the call (rill__elem_scope_enter/leave). */
typedef struct rill__elem_scope {
    const rill_elem_t *in;
    rill_origin_t *origin;
    uint32_t verdict;
    struct rill__elem_scope *prev;
} rill__elem_scope_t;
void rill__elem_scope_enter(rill__elem_scope_t *sc, const rill_elem_t *in, rill_origin_t *origin);
void rill__elem_scope_leave(rill__elem_scope_t *sc);
/* Fail with an ERROR that came from upstream: its text is kept as is. */
void rill__stage_fail_from_upstream(rill__stage_t *st, rill_err_t code, const char *text);
/* Ask for another pump soon (a continue message to self). */
void rill__stage_repump(rill__stage_t *st);
/* All inputs have ended (completed or failed or cancelled). */
int rill__stage_inputs_done(const rill__stage_t *st);
/* A lingering stage (kind->linger) ends now: normally, or with its
 * failure if it failed. */
void rill__stage_end(rill__stage_t *st);

/* The stage drops e on purpose (filter, overflow, conflate): confirmed,
 * or released unconfirmed with rill_stage_opts_t.redeliver_drops. */
static inline void rill__stage_drop(rill__stage_t *st, rill_elem_t *e)
{
    if (st->redeliver_drops)
        rill_elem_release(e);
    else
        rill_elem_confirm(e);
}

/* e takes on `origin` too (one reference, taken): an output made from an
 * input stands for it. If e already has an origin of its own, it stands
 * for both; without memory for that, origin is released unconfirmed (its
 * record comes again: never lost). */
static inline void rill__origin_absorb(rill_origin_t **acc, rill_origin_t *origin)
{
    if (!origin)
        return;
    if (!*acc) {
        *acc = origin;
        return;
    }
    rill_origin_t *both = rill__origin_join(*acc, origin);
    if (both)
        *acc = both;
    else
        rill_origin_release(origin);
}

static inline void rill__elem_adopt(rill_elem_t *e, rill_origin_t *origin)
{
    rill__origin_absorb(&e->origin, origin);
}

/* A spec of `kind` holding impl (taken). impl NULL means out of memory: a
 * spec carrying RILL_ENOMEM. Kinds' constructors return it. */
rill_stage_t *rill__stage_spec_new(const rill__kind_t *kind, void *impl);
/* A spec carrying an error: "<kind>: <formatted text>". Never NULL. */
rill_stage_t *rill__stage_spec_bad(const rill__kind_t *kind, rill_err_t err, const char *fmt, ...)
    RILL_PRINTF(3, 4);
/* A copy of a (good) spec for one more run: NULL without memory. */
rill_stage_t *rill__stage_spec_clone(const rill_stage_t *spec);
/* Run kind->prepare once (rill__stage_spawn_hooked does it if it was not
 * done). The spec stays the caller's either way. */
rill_err_t rill__stage_prepare(rill_stage_t *spec, rill_system_t *sys, char *errstr,
                               size_t errstr_size);
/* The spec's blueprint is done for good (kind->retire). */
void rill__stage_spec_retire(rill_stage_t *spec);
/* Is actor aid a stage of `kind`? RILL_OK if it is, RILL_EINVAL if it is
 * another actor, RILL_ESTOPPED if it is gone. @locality any thread. */
rill_err_t rill__stage_kind_check(rill_system_t *sys, rill_aid_t aid, const rill__kind_t *kind);

/* ---- pipeline runs (pipeline.c) ---- */

/* What a pipeline's sink reports to its run at its end. */
typedef struct rill__sink_result {
    rill_err_t code;
    char stage[48];
    char text[160];
    uint64_t delivered;
} rill__sink_result_t;

/* ---- spawning (stage.c), used by the pipeline and composites ---- */
rill_err_t rill__stage_spawn_hooked(rill_system_t *sys, rill_stage_t *spec,
                                    const rill_stage_opts_t *opts,
                                    const rill__pipeline_hook_t *hook, rill_aid_t *aid,
                                    char *errstr, size_t errstr_size);

/* Element queue used by kinds (stages/equeue.c). */
typedef struct rill__equeue {
    rill_elem_t *v;
    size_t cap, mask, head, count;
} rill__equeue_t;

int rill__equeue_init(rill__equeue_t *q, size_t cap);
void rill__equeue_free(rill__equeue_t *q); /* releases what is left */
/* Double the storage (and the capacity), keeping the order: for queues
 * that must take what one call makes. 0, or -1 without memory. */
int rill__equeue_grow(rill__equeue_t *q);
/* Push, pop and peek are inline: kinds call them per element. */
static inline int rill__equeue_push(rill__equeue_t *q, const rill_elem_t *e)
{
    if (q->count == q->cap)
        return 0;
    q->v[(q->head + q->count) & q->mask] = *e;
    q->count++;
    return 1;
}

static inline int rill__equeue_pop(rill__equeue_t *q, rill_elem_t *e)
{
    if (!q->count)
        return 0;
    *e = q->v[q->head];
    q->head = (q->head + 1) & q->mask;
    q->count--;
    return 1;
}

static inline int rill__equeue_pop_tail(rill__equeue_t *q, rill_elem_t *e)
{
    if (!q->count)
        return 0;
    q->count--;
    *e = q->v[(q->head + q->count) & q->mask];
    return 1;
}

static inline rill_elem_t *rill__equeue_peek(rill__equeue_t *q)
{
    return q->count ? &q->v[q->head] : NULL;
}

static inline size_t rill__equeue_room(const rill__equeue_t *q)
{
    return q->cap - q->count;
}

static inline void rill__stage_want(rill__stage_t *st, int in, int64_t want)
{
    int64_t chunk = st->window / 4 > 0 ? st->window / 4 : 1;
    int64_t outstanding = st->in[in].outstanding;
    /* While a chunk's worth is still on its way, nothing to ask yet. */
    if (outstanding > 0 && outstanding + chunk > want)
        return;
    rill__stage_want_slow(st, in, want);
}

#endif /* RILL_STREAM_INT_H */
