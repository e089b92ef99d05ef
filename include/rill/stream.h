/*
 * rill streams: the Reactive-Streams demand protocol between actors, and
 * the stages users expect.
 *
 * THE PROTOCOL. Stages are actors; the Reactive Streams signals are actor
 * messages (types RILL_STREAM_*). A subscription is named by the pair
 * (subscriber aid, token): the subscriber picks the token, every signal of
 * that subscription carries it in msg.corr, and msg.from is the sender.
 *
 *   signal        direction             queue     payload / arg
 *   SUBSCRIBE     subscriber->publisher control   -
 *   ON_SUBSCRIBE  publisher->subscriber control   -
 *   REQUEST       subscriber->publisher control   arg = n (int64_t)
 *   CANCEL        subscriber->publisher control   -
 *   NEXT          publisher->subscriber mailbox   the element
 *   COMPLETE      publisher->subscriber mailbox   -
 *   ERROR         publisher->subscriber mailbox   arg = rill_err_t, payload = text
 *
 * Demand and cancellation travel on the control queue, which is never
 * full, so backpressure signals are never lost. Elements and the terminal
 * signals share the mailbox, so COMPLETE and ERROR never overtake the NEXT
 * signals before them, and ON_SUBSCRIBE (control, served first) always
 * precedes them. A subscriber never has more outstanding demand than its
 * mailbox capacity minus one, which keeps one slot for the terminal
 * signal: demand-driven paths never meet a full mailbox.
 *
 * Rules (Reactive Streams 1.0.4 numbering) that rill's stages keep: never
 * more NEXT than requested (1.1); ON_SUBSCRIBE first, also from a publisher
 * that fails at once, which then sends ERROR (1.9); nothing after COMPLETE
 * or ERROR (1.7); signals to one subscriber are serial, since they are
 * actor messages (1.3); a second ON_SUBSCRIBE while subscribed is cancelled
 * (2.5); NEXT after the subscriber's own CANCEL is accepted and released
 * (2.8); REQUEST(n <= 0) is answered with ERROR RILL_EINVAL (3.9); REQUEST
 * or CANCEL after CANCEL is ignored (3.6, 3.7); demand adds up and
 * saturates at INT64_MAX, which means unbounded (3.17). Handling a signal
 * never calls back into the sender, so there is no recursion (3.3).
 *
 * Details a hand-written participant should know: COMPLETE and ERROR may
 * arrive without any REQUEST (an empty or failed publisher, 1.9, 2.9); an
 * ERROR whose code is RILL_OK counts as RILL_ESTATE; a repeated SUBSCRIBE
 * with the same (subscriber, token) is ignored; a NEXT for a subscription
 * the stage does not hold is released (its dtor runs), not an error. A
 * subscriber that asks for
 * more than its mailbox holds (e.g. "unbounded") still works: when its
 * mailbox refuses a NEXT or a terminal signal, the stage keeps it and
 * retries every millisecond, in order, so nothing is lost or reordered; it
 * only costs latency.
 *
 * ELEMENTS. An element is what a NEXT carries: a payload pointer with its
 * destructor and an inline 64-bit arg, exactly those fields of rill_msg_t.
 * An element needs a non-NULL payload; elements that are just their arg
 * (rill_elem_value()) carry the marker RILL_ELEM_VALUE as payload, which
 * is never dereferenced. Ownership of an element moves with it from stage
 * to stage; a stage that drops an element (filter, overflow, cancellation,
 * shutdown) releases it with its dtor.
 */
#ifndef RILL_STREAM_H
#define RILL_STREAM_H

#include <stdint.h>

#include <rill/actor.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Stream signal message types (inside rill's reserved range). */
enum {
    RILL_STREAM_SUBSCRIBE = RILL_MSG_STREAM_FIRST,
    RILL_STREAM_ON_SUBSCRIBE,
    RILL_STREAM_REQUEST,
    RILL_STREAM_CANCEL,
    RILL_STREAM_NEXT,
    RILL_STREAM_COMPLETE,
    RILL_STREAM_ERROR,
};

/* The payload of an element that is its arg alone: not a pointer to
 * anything, never dereferenced, never freed. */
#define RILL_ELEM_VALUE ((void *)(uintptr_t)1)

/* Unbounded demand. */
#define RILL_DEMAND_UNBOUNDED INT64_MAX

/* 24 bytes, three words: copies stay cheap (no partial-word stores for
 * the CPU to stitch together when a stage copies an element). */
typedef struct rill_elem {
    void *payload; /* RILL_ELEM_VALUE for a value element */
    rill_dtor_fn *dtor;
    uint64_t arg;
} rill_elem_t;

/* A value element. */
static inline rill_elem_t rill_elem_value(uint64_t v)
{
    rill_elem_t e = {RILL_ELEM_VALUE, NULL, v};
    return e;
}

/* Non-zero for a value element. */
static inline int rill_elem_is_value(const rill_elem_t *e)
{
    return e && e->payload == RILL_ELEM_VALUE;
}

/* Non-zero if e is a valid element (a non-NULL payload). */
RILL_API int rill_elem_valid(const rill_elem_t *e);

/* Release an element: calls its dtor (if any) and clears it. NULL ok. */
RILL_API void rill_elem_release(rill_elem_t *e);

/* The element carried by a NEXT message (a view: the message still owns
 * it). */
RILL_API rill_elem_t rill_elem_of(const rill_msg_t *next);

/* ------------------------------------------------------------------ */
/* Signals: sending one side of the protocol from custom actors/tests  */
/* ------------------------------------------------------------------ */

/*
 * The two sides of a subscription are ids of their own types, so that a
 * publisher and a subscriber cannot be swapped without a compile error:
 * every signal function takes its target first and the sending side
 * second, and the types say which is which.
 */
typedef struct rill_pub {
    rill_aid_t aid;
} rill_pub_t;
typedef struct rill_sub {
    rill_aid_t aid;
} rill_sub_t;

/* The actor `aid` as the publisher / the subscriber of a subscription.
 * @locality any thread. */
static inline rill_pub_t rill_pub(rill_aid_t aid)
{
    rill_pub_t p = {aid};
    return p;
}
static inline rill_sub_t rill_sub(rill_aid_t aid)
{
    rill_sub_t s = {aid};
    return s;
}

/*
 * Each builds the message (from = the sending side's aid, corr = token)
 * and sends it on the right queue. Returns rill_tell()/rill_signal()'s
 * result; RILL_EINVAL for a NULL system, a none aid, or (NEXT) an invalid
 * element. On any error the element stays the caller's.
 * @locality any thread.
 */
RILL_API rill_err_t rill_stream_subscribe(rill_system_t *sys, rill_pub_t to, rill_sub_t from,
                                          uint64_t token);
RILL_API rill_err_t rill_stream_request(rill_system_t *sys, rill_pub_t to, rill_sub_t from,
                                        uint64_t token, int64_t n);
RILL_API rill_err_t rill_stream_cancel(rill_system_t *sys, rill_pub_t to, rill_sub_t from,
                                       uint64_t token);
RILL_API rill_err_t rill_stream_on_subscribe(rill_system_t *sys, rill_sub_t to, rill_pub_t from,
                                             uint64_t token);
RILL_API rill_err_t rill_stream_next(rill_system_t *sys, rill_sub_t to, rill_pub_t from,
                                     uint64_t token, const rill_elem_t *e);
RILL_API rill_err_t rill_stream_complete(rill_system_t *sys, rill_sub_t to, rill_pub_t from,
                                         uint64_t token);
/* text is copied (may be NULL). */
RILL_API rill_err_t rill_stream_error(rill_system_t *sys, rill_sub_t to, rill_pub_t from,
                                      uint64_t token, rill_err_t code, const char *text);

/* The text of an ERROR message ("" if none). */
RILL_API const char *rill_stream_error_text(const rill_msg_t *error);

/* ------------------------------------------------------------------ */
/* Stages                                                              */
/* ------------------------------------------------------------------ */

/*
 * A stage spec describes a stage before it runs. Constructors return NULL
 * on invalid arguments or out of memory. A spec is consumed by
 * rill_stage_spawn() or rill_pipeline_add() (also when they fail), or freed
 * with rill_stage_free().
 */
typedef struct rill_stage rill_stage_t;

RILL_API void rill_stage_free(rill_stage_t *stage);

/* ---- sources (0 inputs, 1 output) ---- */

/* Values start, start+1, ... (count of them; UINT64_MAX = endless). */
RILL_API rill_stage_t *rill_source_range(uint64_t start, uint64_t count);

/*
 * A pull source: fn is called on the source's executor when there is
 * demand. It returns 1 after filling *out with an element (ownership passes
 * to the stream), 0 at the end of the stream, or a negative rill_err_t
 * (e.g. -RILL_EIO) to fail the stream.
 */
typedef int rill_pull_fn(void *opaque, rill_elem_t *out);
RILL_API rill_stage_t *rill_source_fn(rill_pull_fn *fn, void *opaque);

/* A publisher that fails at once: ON_SUBSCRIBE, then ERROR(code, text). */
RILL_API rill_stage_t *rill_source_failed(rill_err_t code, const char *text);

/* ---- processors (1 input, 1 output) ---- */

/*
 * map: *out = f(*in). The function takes ownership of *in (it may move the
 * payload into *out, or release it) and fills *out with a valid element.
 * Returning an error fails the stage: ERROR downstream, CANCEL upstream; the
 * function still owns *in then and must release it (a filled *out is
 * released by the stage).
 */
typedef rill_err_t rill_map_fn(void *opaque, rill_elem_t *in, rill_elem_t *out);
RILL_API rill_stage_t *rill_stage_map(rill_map_fn *fn, void *opaque);

/* filter: keeps elements for which fn returns non-zero; releases the rest.
 * fn only looks at the element (it does not take it). */
typedef int rill_filter_fn(void *opaque, const rill_elem_t *e);
RILL_API rill_stage_t *rill_stage_filter(rill_filter_fn *fn, void *opaque);

/*
 * map_async: up to `parallelism` elements in flight through fn, which
 * starts work and returns (ownership of *in passes to it). The work, on any
 * thread, finishes with rill_async_complete(job, err, &out) exactly once.
 * ordered != 0 emits results in input order; 0 emits them as they finish.
 * Jobs running plus results not yet sent downstream never exceed
 * `parallelism`, so a slow downstream also slows the starting of jobs.
 * An error completion fails the stage.
 */
typedef struct rill_async_job rill_async_job_t;
typedef rill_err_t rill_async_fn(void *opaque, rill_async_job_t *job, rill_elem_t *in);
RILL_API rill_stage_t *rill_stage_map_async(rill_async_fn *fn, void *opaque, uint32_t parallelism,
                                            int ordered);
/* @locality any thread. out is taken on RILL_OK (ignored on error). Returns
 * RILL_EINVAL for a NULL job or a job already completed. */
RILL_API rill_err_t rill_async_complete(rill_async_job_t *job, rill_err_t err,
                                        const rill_elem_t *out);

/*
 * batch (groupedWithin): groups up to max_count elements, or what arrived
 * within max_ms of the first element of a group (0 = no time limit), into
 * one element whose payload is a rill_batch_t (dtor releases every element
 * in it and the batch).
 */
typedef struct rill_batch {
    size_t count;
    rill_elem_t elems[];
} rill_batch_t;
RILL_API rill_stage_t *rill_stage_batch(size_t max_count, uint64_t max_ms);

/* What a buffer does when an element arrives and it is full. */
typedef enum rill_overflow {
    RILL_OVERFLOW_BACKPRESSURE = 0, /* stop asking upstream until there is room */
    RILL_OVERFLOW_DROP_HEAD,        /* drop the oldest buffered element */
    RILL_OVERFLOW_DROP_TAIL,        /* drop the newest buffered element */
    RILL_OVERFLOW_DROP_BUFFER,      /* drop everything buffered */
    RILL_OVERFLOW_FAIL              /* fail the stream with RILL_EFULL at once; what
                                       was buffered is released, not delivered */
} rill_overflow_t;

/* buffer: holds up to `size` elements between a fast upstream and a slow
 * downstream; with a drop or fail strategy it keeps pulling upstream
 * whatever the downstream does. */
RILL_API rill_stage_t *rill_stage_buffer(size_t size, rill_overflow_t overflow);

/*
 * conflate: while downstream has no demand, combines arriving elements into
 * one. fn NULL = keep latest (the "drop buffer" for full-state messages):
 * the older element is released. Otherwise *acc = fn(*acc, *in): fn owns
 * both and leaves the result in *acc.
 */
typedef rill_err_t rill_conflate_fn(void *opaque, rill_elem_t *acc, rill_elem_t *in);
RILL_API rill_stage_t *rill_stage_conflate(rill_conflate_fn *fn, void *opaque);

/* throttle: at most `elements` per `per_ms` milliseconds (bursts of up to
 * `elements`). */
RILL_API rill_stage_t *rill_stage_throttle(uint32_t elements, uint64_t per_ms);

/* ---- fan-out and fan-in ---- */

/*
 * broadcast: every element to each of its `outputs` subscribers, at the
 * pace of the slowest. The first output gets the element itself, the
 * others a copy made by copy_fn; with copy_fn NULL, elements must be values
 * or borrowed (dtor NULL), else the stage fails.
 */
typedef rill_err_t rill_copy_fn(void *opaque, const rill_elem_t *in, rill_elem_t *copy);
RILL_API rill_stage_t *rill_stage_broadcast(uint32_t outputs, rill_copy_fn *copy_fn, void *opaque);

/* merge: elements of `inputs` upstreams into one stream, as they come;
 * completes when all inputs complete, fails when one fails. */
RILL_API rill_stage_t *rill_stage_merge(uint32_t inputs);

/*
 * partition_by_key: routes each element by key_fn(e) % workers to one of
 * `workers` worker stages that each run map fn (worker w on executor
 * w % executors, so they run in parallel, with default stage mailboxes),
 * then merges the results. Elements with the same key keep their order.
 * The composite's own stage opts apply to its router only.
 */
typedef uint64_t rill_key_fn(void *opaque, const rill_elem_t *e);
RILL_API rill_stage_t *rill_stage_partition_by_key(uint32_t workers, rill_key_fn *key_fn,
                                                   rill_map_fn *fn, void *opaque);

/* ---- sinks (1 input, 0 outputs) ---- */

/* foreach: fn takes ownership of each element. An error fails the stream
 * (CANCEL upstream) and the pipeline. */
typedef rill_err_t rill_foreach_fn(void *opaque, rill_elem_t *e);
RILL_API rill_stage_t *rill_sink_foreach(rill_foreach_fn *fn, void *opaque);

/* Releases every element. */
RILL_API rill_stage_t *rill_sink_ignore(void);

/* collect: keeps every element, for tests. Read the collector after the
 * pipeline ended (rill_pipeline_wait); it owns the elements. */
typedef struct rill_collector rill_collector_t;
RILL_API rill_collector_t *rill_collector_new(void);
RILL_API rill_stage_t *rill_sink_collect(rill_collector_t *c);
RILL_API size_t rill_collector_count(const rill_collector_t *c);
RILL_API const rill_elem_t *rill_collector_at(const rill_collector_t *c, size_t i);
RILL_API void rill_collector_free(rill_collector_t *c);

/* ------------------------------------------------------------------ */
/* Running stages                                                      */
/* ------------------------------------------------------------------ */

typedef struct rill_stage_opts {
    const char *name; /* optional actor name */
    int executor;     /* RILL_EXECUTOR_ANY (0) or RILL_EXECUTOR(i) */
    /* 0 = 64. Rounded up to a power of two; the stage's window (the most it
     * asks upstream) is that minus one slot per input, kept for the
     * terminal signals. */
    uint32_t mailbox_capacity;
    /* Link the stage actor to this actor before it runs (0 = none): how a
     * supervisor's spawn function puts a stage under supervision. */
    rill_aid_t link_to;
} rill_stage_opts_t;

/*
 * Run a stage as an actor (consumes the spec). opts may be NULL. Connect it
 * with rill_stage_connect(). A composite stage (partition_by_key) runs as
 * several actors; *aid is the one to connect to on both sides.
 * Returns RILL_OK, RILL_EINVAL, or rill_spawn()'s error.
 * @locality any thread.
 */
RILL_API rill_err_t rill_stage_spawn(rill_system_t *sys, rill_stage_t *stage,
                                     const rill_stage_opts_t *opts, rill_aid_t *aid);

/*
 * Make `downstream` subscribe to `upstream` (both stage actors, or any
 * actors speaking the protocol for upstream). A stage with several inputs
 * (merge) takes one connect per input; broadcast takes one per output.
 * @locality any thread.
 */
RILL_API rill_err_t rill_stage_connect(rill_system_t *sys, rill_aid_t upstream,
                                       rill_aid_t downstream);

/* ------------------------------------------------------------------ */
/* Pipelines                                                           */
/* ------------------------------------------------------------------ */

typedef struct rill_pipeline rill_pipeline_t;

typedef enum rill_pipeline_end {
    RILL_PIPELINE_RUNNING = 0, /* not ended yet */
    RILL_PIPELINE_COMPLETED,   /* the source ended (or was drained) and all was processed */
    RILL_PIPELINE_FAILED,      /* a stage failed */
    RILL_PIPELINE_STOPPED      /* rill_pipeline_stop() */
} rill_pipeline_end_t;

typedef struct rill_pipeline_result {
    rill_pipeline_end_t end;
    rill_err_t code;    /* FAILED: the error */
    char stage[64];     /* FAILED: the stage that failed */
    char text[160];     /* a sentence */
    uint64_t delivered; /* elements that reached the sink(s) */
} rill_pipeline_result_t;

/*
 * A linear pipeline: source, stages, sink. Add them in order, then start.
 * @locality any thread; one thread at a time per pipeline.
 */
RILL_API rill_pipeline_t *rill_pipeline_new(rill_system_t *sys);
/* Consumes stage (also on error). opts may be NULL. RILL_ESTATE after start;
 * RILL_EINVAL for a stage that does not fit (a source after the first
 * position, a sink not last). */
RILL_API rill_err_t rill_pipeline_add(rill_pipeline_t *p, rill_stage_t *stage,
                                      const rill_stage_opts_t *opts);
/* Spawns and connects everything, then lets the sink start pulling.
 * RILL_EINVAL if the first stage is not a source or the last not a sink. */
RILL_API rill_err_t rill_pipeline_start(rill_pipeline_t *p, char *errstr, size_t errstr_size);
/* Stop now: the source is cancelled, every stage stops, in-flight elements
 * are released; the pipeline ends STOPPED. */
RILL_API rill_err_t rill_pipeline_stop(rill_pipeline_t *p);
/* Drain: the source completes now; elements already in flight are
 * processed; the pipeline ends COMPLETED. */
RILL_API rill_err_t rill_pipeline_drain(rill_pipeline_t *p);
/* Wait until every stage of the pipeline has ended, or timeout_ms (-1 =
 * forever). Returns RILL_OK with *result filled, or RILL_ETIMEDOUT
 * (result->end RUNNING). @locality any thread except an executor. */
RILL_API rill_err_t rill_pipeline_wait(rill_pipeline_t *p, int timeout_ms,
                                       rill_pipeline_result_t *result);
/* The aid of stage i (0 = source), for statistics; RILL_AID_NONE if none. */
RILL_API rill_aid_t rill_pipeline_stage(const rill_pipeline_t *p, int i);
/* Stops the pipeline if it runs, waits for it to end, frees it. */
RILL_API void rill_pipeline_destroy(rill_pipeline_t *p);

#ifdef __cplusplus
}
#endif

#endif /* RILL_STREAM_H */
