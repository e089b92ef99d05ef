/**
 * @file
 * rill streams: the Reactive-Streams demand protocol between actors, and
 * the stages users expect.
 *
 * THE PROTOCOL. Stages are actors; the Reactive Streams signals are actor
 * messages (types RILL_STREAM_*). A subscription is named by the pair
 * (subscriber aid, token): the subscriber picks the token, every signal of
 * that subscription carries it in msg.corr, and msg.from is the sender.
 *
 *     signal        direction             queue     payload / arg
 *     SUBSCRIBE     subscriber->publisher control   -
 *     ON_SUBSCRIBE  publisher->subscriber control   -
 *     REQUEST       subscriber->publisher control   arg = n (int64_t)
 *     CANCEL        subscriber->publisher control   -
 *     NEXT          publisher->subscriber mailbox   the element
 *     COMPLETE      publisher->subscriber mailbox   -
 *     ERROR         publisher->subscriber mailbox   arg = rill_err_t, payload = text
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
 * never calls back into the sender, so there is no recursion (3.3). A
 * one-output stage is unicast and a broadcast to n outputs takes n
 * subscribers: one more gets ON_SUBSCRIBE, then ERROR RILL_ESTATE (1.11).
 * Every rule with its test, and the few that cannot apply to actor
 * signalling: docs/reactive-streams.md.
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
 * destructor, an inline 64-bit arg and an origin, exactly those fields of
 * rill_msg_t. An element needs a non-NULL payload; elements that are just
 * their arg (rill_elem_value()) carry the marker RILL_ELEM_VALUE as
 * payload, which is never dereferenced. Ownership of an element moves with
 * it from stage to stage.
 *
 * ORIGINS: RECORDS THAT CONFIRM THEMSELVES. An element made from a
 * consumed Kafka record carries the record's origin (actor.h), and rill's
 * stages carry it along, so that the record is confirmed, and its offset
 * may be committed, exactly when everything made from it has been handled:
 *   - map, map_async: the output carries its input's origin (the function
 *     never sees it); an input that fails its function is not confirmed.
 *   - flat_map, stateful_map: every output carries a reference of its
 *     input's origin; an input that makes no output is confirmed.
 *   - batch: the batch carries the origins of all its elements; conflate
 *     with a function: the aggregate carries those of everything it
 *     absorbed; broadcast: every copy carries a reference.
 *   - a stage that drops an element on purpose (filter, the buffer's drop
 *     strategies, conflate keeping the latest, per key or not) confirms it:
 *     dropping is handling. rill_stage_opts_t.redeliver_drops turns that
 *     off, for who wants dropped records delivered again.
 *   - the end of a pipeline confirms: sink_foreach when its function
 *     returns RILL_OK, sink_ignore and sink_collect when they take an
 *     element, the Kafka sink when the record made from it is delivered;
 *     sink_foreach_manual leaves it to its function (rill_elem_confirm,
 *     now or later, from any thread).
 *   - everything released otherwise (a function's error, a stage's
 *     failure or stop, a dead letter) is not confirmed: the record comes
 *     again. The element a function failed on is the failure's suspect:
 *     its source counts the failure (a Kafka source: rill.max.failures).
 *   - rill_elem_reject() and rill_elem_retry() settle it otherwise: to the
 *     dead letters, or back alone after a delay.
 */
#ifndef RILL_STREAM_H
#define RILL_STREAM_H

#include <stdint.h>

#include <rill/actor.h>
#include <rill/supervisor.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Stream signal message types (inside rill's reserved range). */
enum {
    /** subscriber->publisher, control queue */
    RILL_STREAM_SUBSCRIBE = RILL_MSG_STREAM_FIRST,
    RILL_STREAM_ON_SUBSCRIBE, /**< publisher->subscriber, control queue */
    RILL_STREAM_REQUEST,      /**< subscriber->publisher, control queue; arg = n (int64_t) */
    RILL_STREAM_CANCEL,       /**< subscriber->publisher, control queue */
    RILL_STREAM_NEXT,         /**< publisher->subscriber, mailbox; carries the element */
    RILL_STREAM_COMPLETE,     /**< publisher->subscriber, mailbox */
    /** publisher->subscriber, mailbox; arg = rill_err_t, payload = text */
    RILL_STREAM_ERROR,
};

/** The payload of an element that is its arg alone: not a pointer to
 * anything, never dereferenced, never freed. */
#define RILL_ELEM_VALUE ((void *)(uintptr_t)1)

/** Unbounded demand. */
#define RILL_DEMAND_UNBOUNDED INT64_MAX

/** A stream element (see ELEMENTS above). 32 bytes, four words: copies stay cheap (no
 * partial-word stores for the CPU to stitch together when a stage copies an element). */
typedef struct rill_elem {
    void *payload;         /**< RILL_ELEM_VALUE for a value element */
    rill_dtor_fn *dtor;    /**< frees payload; NULL if nothing to free */
    uint64_t arg;          /**< a small inline value (a value element's value) */
    rill_origin_t *origin; /**< what it stands for upstream, or NULL (see ORIGINS) */
} rill_elem_t;

/** A value element (no origin). @locality any thread. */
static inline rill_elem_t rill_elem_value(uint64_t v)
{
    rill_elem_t e = {RILL_ELEM_VALUE, NULL, v, NULL};
    return e;
}

/** Non-zero for a value element. @locality any thread. */
static inline int rill_elem_is_value(const rill_elem_t *e)
{
    return e && e->payload == RILL_ELEM_VALUE;
}

/** Non-zero if e is a valid element (a non-NULL payload).
 * @locality any thread. */
RILL_API int rill_elem_valid(const rill_elem_t *e);

/** Release an element: calls its dtor (if any), releases its origin
 * without confirming it (the record it stands for comes again), and
 * clears it. NULL is a no-op. @locality any thread. */
RILL_API void rill_elem_release(rill_elem_t *e);

/** Confirm an element: it was handled. Calls its dtor, confirms its origin
 * (the record is committed once everything made from it is confirmed) and
 * clears it. NULL is a no-op. @locality any thread. */
RILL_API void rill_elem_confirm(rill_elem_t *e);

/**
 * Reject an element: its record is not processable (a poison pill), so it
 * goes to its source's dead-letter topic (a Kafka source:
 * rill.dead.letter.topic, with `reason` in the rill-error header; without
 * one it is skipped, see kafka.h) and is committed past; it is not
 * processed again. Calls the dtor and clears e, as rill_elem_release().
 * Works on an element that carries its origin (sink_foreach_manual, a
 * hand-written stage), and on the input of a map, flat_map or sink_foreach
 * function while that function runs (the stage holds the origin): the
 * stage then drops whatever the function made of it and goes on; it does
 * not fail, whatever the function returns. An element standing for
 * several records (a batch, a conflated aggregate) rejects each of them.
 * @return RILL_OK; RILL_EINVAL (e NULL, or it has no origin: then it is
 * just released), RILL_ENOMEM.
 * @locality any thread (the input of a stage function: that function).
 */
RILL_API rill_err_t rill_elem_reject(rill_elem_t *e, const char *reason);

/**
 * Retry an element later: its record is delivered again, alone (not the
 * records after it), to its source's output after delay_ms. Each retry
 * counts as a failure of the record (a Kafka source: after
 * rill.max.failures it goes to the dead-letter topic instead). Calls the
 * dtor and clears e, as rill_elem_release(); where it works: as
 * rill_elem_reject().
 * @return RILL_OK; RILL_EINVAL (e NULL, or no origin: just released),
 * RILL_ENOMEM.
 * @locality any thread (the input of a stage function: that function).
 */
RILL_API rill_err_t rill_elem_retry(rill_elem_t *e, uint32_t delay_ms);

/** The element carried by a NEXT message (a view: the message still owns
 * it). @locality any thread. */
RILL_API rill_elem_t rill_elem_of(const rill_msg_t *next);

/** Take the element out of a NEXT message being handled, origin included:
 * the caller owns it now (rill will not release it after the handler).
 * @locality actor context, on the message passed to the behaviour. */
RILL_API rill_elem_t rill_elem_take(rill_msg_t *next);

/* ------------------------------------------------------------------ */
/* Signals: sending one side of the protocol from custom actors/tests  */
/* ------------------------------------------------------------------ */

/**
 * The publisher side of a subscription.
 *
 * The two sides of a subscription are ids of their own types, so that a
 * publisher and a subscriber cannot be swapped without a compile error:
 * every signal function takes its target first and the sending side
 * second, and the types say which is which.
 */
typedef struct rill_pub {
    rill_aid_t aid; /**< the publisher actor */
} rill_pub_t;
/** The subscriber side of a subscription (see rill_pub_t). */
typedef struct rill_sub {
    rill_aid_t aid; /**< the subscriber actor */
} rill_sub_t;

/** The actor `aid` as the publisher / the subscriber of a subscription.
 * @locality any thread.
 * @{ */
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
/** @} */

/**
 * Each builds the message (from = the sending side's aid, corr = token)
 * and sends it on the right queue. Returns rill_tell()/rill_signal()'s
 * result; RILL_EINVAL for a NULL system, a none aid, or (NEXT) an invalid
 * element. On any error the element stays the caller's.
 * @locality any thread.
 * @{
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
/** @} */
/** Sends ERROR(code, text) like the functions above; text is copied (may be NULL).
 * @locality any thread. */
RILL_API rill_err_t rill_stream_error(rill_system_t *sys, rill_sub_t to, rill_pub_t from,
                                      uint64_t token, rill_err_t code, const char *text);

/** The text of an ERROR message ("" if none). @locality any thread. */
RILL_API const char *rill_stream_error_text(const rill_msg_t *error);

/* ------------------------------------------------------------------ */
/* Stages                                                              */
/* ------------------------------------------------------------------ */

/**
 * A stage spec describes a stage before it runs; it is a blueprint, so a
 * pipeline restarted by its supervisor runs its specs again. A spec is
 * consumed by rill_stage_spawn() or rill_pipeline_add() (also when they
 * fail), or freed with rill_stage_free().
 *
 * Constructors never return NULL: a spec made from bad arguments (or
 * without memory) carries its error, which rill_pipeline_add() and
 * rill_stage_spawn() return, with a sentence naming the stage and the
 * argument in their errstr or rill_pipeline_start()'s. So a pipeline is
 * written without a check after each constructor.
 */
typedef struct rill_stage rill_stage_t;

/** Free a spec that was not handed on. NULL is a no-op.
 * @locality any thread. */
RILL_API void rill_stage_free(rill_stage_t *stage);

/** The error a spec carries (RILL_OK for a good one), and its sentence in
 * errstr. @locality any thread. */
RILL_API rill_err_t rill_stage_error(const rill_stage_t *stage, char *errstr, size_t errstr_size);

/* ---- sources (0 inputs, 1 output) ---- */

/** Values start, start+1, ... (count of them; UINT64_MAX = endless).
 * @locality any thread. */
RILL_API rill_stage_t *rill_source_range(uint64_t start, uint64_t count);

/**
 * A pull source: fn is called on the source's executor when there is
 * demand. It returns RILL_OK after filling *out with an element (ownership
 * passes to the stream), RILL_EOS at the end of the stream, or another
 * error to fail the stream with it.
 * @locality the source's executor.
 */
typedef rill_err_t rill_pull_fn(void *opaque, rill_elem_t *out);
/** A pull source stage calling fn (see rill_pull_fn). @locality any thread. */
RILL_API rill_stage_t *rill_source_fn(rill_pull_fn *fn, void *opaque);

/** A publisher that fails at once: ON_SUBSCRIBE, then ERROR(code, text).
 * @locality any thread. */
RILL_API rill_stage_t *rill_source_failed(rill_err_t code, const char *text);

/* ---- processors (1 input, 1 output) ---- */

/**
 * map: *out = f(*in). The function takes ownership of *in (it may move the
 * payload into *out, or release it) and fills *out with a valid element;
 * the output carries the input's origin (the function sees neither).
 * Returning an error fails the stage: ERROR downstream, CANCEL upstream;
 * the function still owns *in then and must release it (a filled *out is
 * released by the stage), and the input is not confirmed.
 * @locality the stage's executor.
 */
typedef rill_err_t rill_map_fn(void *opaque, rill_elem_t *in, rill_elem_t *out);
/** A map stage calling fn (see rill_map_fn). @locality any thread. */
RILL_API rill_stage_t *rill_stage_map(rill_map_fn *fn, void *opaque);

/** filter: keeps elements for which fn returns non-zero; the rest are
 * dropped, and dropping confirms them (see ORIGINS). fn only looks at the
 * element (it does not take it).
 * @locality the stage's executor. */
typedef int rill_filter_fn(void *opaque, const rill_elem_t *e);
/** A filter stage calling fn (see rill_filter_fn). @locality any thread. */
RILL_API rill_stage_t *rill_stage_filter(rill_filter_fn *fn, void *opaque);

/** Where a flat_map or stateful_map function hands out its outputs (rill_emit()). */
typedef struct rill_emitter rill_emitter_t;
/**
 * flat_map (Akka's mapConcat): fn takes *in and hands out zero, one or
 * many outputs with rill_emit(); each carries a reference of the input's
 * origin, and an input with no output is confirmed (it was handled).
 * Returning an error fails the stage (the function still owns *in, and
 * what it emitted is released).
 * @locality the stage's executor.
 */
typedef rill_err_t rill_flat_map_fn(void *opaque, rill_elem_t *in, rill_emitter_t *out);
/** A flat_map stage calling fn (see rill_flat_map_fn). @locality any thread. */
RILL_API rill_stage_t *rill_stage_flat_map(rill_flat_map_fn *fn, void *opaque);
/** Hand out one output (taken, also on error). RILL_EINVAL for an invalid
 * element or a NULL emitter.
 * @locality inside the flat_map or stateful_map function that got out. */
RILL_API rill_err_t rill_emit(rill_emitter_t *out, rill_elem_t *e);

/**
 * stateful_map (Akka's statefulMap): flat_map with state of its own,
 * made fresh for every run of the stage (a restarted pipeline starts from
 * create() again) and given to every call. complete (optional) runs when
 * the input completes and may emit last outputs (they carry no origin);
 * destroy frees the state whatever happened. The state is not durable:
 * records absorbed into it are confirmed when their input produced no
 * output.
 * @locality the stage's executor, all four.
 */
typedef struct rill_stateful_ops {
    void *(*create)(void *opaque); /**< required; NULL = out of memory */
    rill_err_t (*fn)(void *state, rill_elem_t *in, rill_emitter_t *out); /**< required */
    rill_err_t (*complete)(void *state, rill_emitter_t *out);            /**< optional */
    void (*destroy)(void *state);                                        /**< optional */
} rill_stateful_ops_t;
/** A stateful_map stage with these operations (see rill_stateful_ops_t). ops is copied.
 * @locality any thread. */
RILL_API rill_stage_t *rill_stage_stateful_map(const rill_stateful_ops_t *ops, void *opaque);

/** One job of a map_async stage, finished with rill_async_complete(). */
typedef struct rill_async_job rill_async_job_t;
/**
 * map_async: up to `parallelism` elements in flight through fn, which
 * starts work and returns (ownership of *in passes to it). The work, on any
 * thread, finishes with rill_async_complete(job, err, &out) exactly once.
 * ordered != 0 emits results in input order; 0 emits them as they finish.
 * Jobs running plus results not yet sent downstream never exceed
 * `parallelism`, so a slow downstream also slows the starting of jobs.
 * The result carries the input's origin; an error completion fails the
 * stage and the input is not confirmed.
 * @locality the stage's executor.
 */
typedef rill_err_t rill_async_fn(void *opaque, rill_async_job_t *job, rill_elem_t *in);
/** A map_async stage calling fn (see rill_async_fn). @locality any thread. */
RILL_API rill_stage_t *rill_stage_map_async(rill_async_fn *fn, void *opaque, uint32_t parallelism,
                                            int ordered);
/** Finish a job with err and, on RILL_OK, its result. out is taken on RILL_OK (ignored on
 * error). Returns RILL_EINVAL for a NULL job or a job already completed.
 * @locality any thread. */
RILL_API rill_err_t rill_async_complete(rill_async_job_t *job, rill_err_t err,
                                        const rill_elem_t *out);

/**
 * batch (groupedWithin): groups up to max_count elements, or what arrived
 * within max_ms of the first element of a group (0 = no time limit), into
 * one element whose payload is a rill_batch_t (dtor releases every element
 * in it and the batch). The batch carries the origins of its elements
 * (theirs are NULL inside it).
 */
#if defined(__cplusplus) && defined(__clang__) /* C++ has no flexible array members, */
#pragma clang diagnostic push                  /* but g++ and clang++ take them */
#pragma clang diagnostic ignored "-Wc99-extensions"
#elif defined(__cplusplus) && defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpedantic"
#endif
typedef struct rill_batch {
    size_t count;        /**< the number of elements in elems */
    rill_elem_t elems[]; /**< the elements, in the order they arrived */
} rill_batch_t;
#if defined(__cplusplus) && defined(__clang__)
#pragma clang diagnostic pop
#elif defined(__cplusplus) && defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
/** A batch stage (see rill_batch_t). @locality any thread. */
RILL_API rill_stage_t *rill_stage_batch(size_t max_count, uint64_t max_ms);

/** What a buffer does when an element arrives and it is full. */
typedef enum rill_overflow {
    RILL_OVERFLOW_BACKPRESSURE = 0, /**< stop asking upstream until there is room */
    RILL_OVERFLOW_DROP_HEAD,        /**< drop the oldest buffered element */
    RILL_OVERFLOW_DROP_TAIL,        /**< drop the newest buffered element */
    RILL_OVERFLOW_DROP_BUFFER,      /**< drop everything buffered */
    RILL_OVERFLOW_FAIL              /**< fail the stream with RILL_EFULL at once; what
                                         was buffered is released, not delivered */
} rill_overflow_t;

/** buffer: holds up to `size` elements between a fast upstream and a slow
 * downstream; with a drop or fail strategy it keeps pulling upstream
 * whatever the downstream does. Dropped elements are confirmed (see
 * ORIGINS). @locality any thread. */
RILL_API rill_stage_t *rill_stage_buffer(size_t size, rill_overflow_t overflow);

/**
 * conflate: while downstream has no demand, combines arriving elements into
 * one. fn NULL = keep latest (the "drop buffer" for full-state messages):
 * the older element is dropped, which confirms it. Otherwise *acc =
 * fn(*acc, *in): fn owns both and leaves the result in *acc, which then
 * carries the origins of both.
 * @locality the stage's executor.
 */
typedef rill_err_t rill_conflate_fn(void *opaque, rill_elem_t *acc, rill_elem_t *in);
/** A conflate stage calling fn, or keeping the latest for fn NULL (see rill_conflate_fn).
 * @locality any thread. */
RILL_API rill_stage_t *rill_stage_conflate(rill_conflate_fn *fn, void *opaque);

/**
 * A key of an element, for partitioning and per-key stages (for Kafka
 * records, rill_record_key_hash() in kafka.h hashes the record key).
 * @locality the stage's executor.
 */
typedef uint64_t rill_key_fn(void *opaque, const rill_elem_t *e);

/**
 * conflate_by_key: keep-latest per key, for full-state messages (the
 * latest state of each entity is all that matters). While downstream has
 * no demand, an element replaces the one waiting with the same key, which
 * is dropped (and confirmed); keys go out in the order they first arrived
 * since they were last sent. Holds up to max_keys keys (0 = 1024); when
 * that many wait, it stops asking upstream until one goes out, so size it
 * above the number of keys live at once: with fewer slots than keys it
 * backpressures instead of conflating.
 * @locality any thread.
 */
RILL_API rill_stage_t *rill_stage_conflate_by_key(rill_key_fn *key_fn, void *opaque,
                                                  size_t max_keys);

/** throttle: at most `elements` per `per_ms` milliseconds (bursts of up to
 * `elements`). @locality any thread. */
RILL_API rill_stage_t *rill_stage_throttle(uint32_t elements, uint64_t per_ms);

/* ---- fan-out and fan-in ---- */

/**
 * broadcast: every element to each of its `outputs` subscribers, at the
 * pace of the slowest. The first output gets the element itself, the
 * others a copy made by copy_fn; with copy_fn NULL, elements must be values
 * or borrowed (dtor NULL), else the stage fails. Every copy carries a
 * reference of the element's origin.
 * @locality the stage's executor.
 */
typedef rill_err_t rill_copy_fn(void *opaque, const rill_elem_t *in, rill_elem_t *copy);
/** A broadcast stage to `outputs` subscribers, copying with copy_fn (see rill_copy_fn).
 * @locality any thread. */
RILL_API rill_stage_t *rill_stage_broadcast(uint32_t outputs, rill_copy_fn *copy_fn, void *opaque);

/** merge: elements of `inputs` upstreams into one stream, as they come;
 * completes when all inputs complete, fails when one fails.
 * @locality any thread. */
RILL_API rill_stage_t *rill_stage_merge(uint32_t inputs);

/**
 * partition_by_key: routes each element by key_fn(e) % workers to one of
 * `workers` worker stages that each run map fn (worker w on executor
 * w % executors, so they run in parallel, with default stage mailboxes),
 * then merges the results. Elements with the same key keep their order.
 * The composite's own stage opts apply to its router only.
 * @locality any thread.
 */
RILL_API rill_stage_t *rill_stage_partition_by_key(uint32_t workers, rill_key_fn *key_fn,
                                                   rill_map_fn *fn, void *opaque);

/* ---- sinks (1 input, 0 outputs) ---- */

/** foreach: fn takes ownership of each element (its origin stays with
 * rill). RILL_OK confirms the element; an error leaves it unconfirmed and
 * fails the stream (CANCEL upstream) and the pipeline.
 * @locality the stage's executor. */
typedef rill_err_t rill_foreach_fn(void *opaque, rill_elem_t *e);
/** A foreach sink calling fn (see rill_foreach_fn). @locality any thread. */
RILL_API rill_stage_t *rill_sink_foreach(rill_foreach_fn *fn, void *opaque);

/** foreach_manual: like foreach, but fn gets the element with its origin
 * and confirms it itself (rill_elem_confirm), now or later and from any
 * thread, or releases it (rill_elem_release: the record comes again); the
 * scala-kafka-client way of confirming. @locality any thread. */
RILL_API rill_stage_t *rill_sink_foreach_manual(rill_foreach_fn *fn, void *opaque);

/** Confirms and releases every element. @locality any thread. */
RILL_API rill_stage_t *rill_sink_ignore(void);

/** collect: keeps every element, for tests, and confirms it. Read the
 * collector after the pipeline ended (rill_pipeline_wait); it owns the
 * elements (with no origins). */
typedef struct rill_collector rill_collector_t;
/** A new, empty collector; NULL only without memory. @locality any thread. */
RILL_API rill_collector_t *rill_collector_new(void);
/** A collect sink that keeps what it takes in c. @locality any thread. */
RILL_API rill_stage_t *rill_sink_collect(rill_collector_t *c);
/** Number of elements collected; 0 for NULL. @locality any thread. */
RILL_API size_t rill_collector_count(const rill_collector_t *c);
/** Element i (owned by c), or NULL when out of range. @locality any thread. */
RILL_API const rill_elem_t *rill_collector_at(const rill_collector_t *c, size_t i);
/** Free c, releasing every element in it. NULL is a no-op. @locality any thread. */
RILL_API void rill_collector_free(rill_collector_t *c);

/* ------------------------------------------------------------------ */
/* Running stages                                                      */
/* ------------------------------------------------------------------ */

/** How a stage runs. A zeroed struct means the defaults. */
typedef struct rill_stage_opts {
    const char *name; /**< optional actor name */
    int executor;     /**< RILL_EXECUTOR_ANY (0) or RILL_EXECUTOR(i) */
    /** 0 = 64. Rounded up to a power of two; the stage's window (the most it
     * asks upstream) is that minus one slot per input, kept for the
     * terminal signals. */
    uint32_t mailbox_capacity;
    /** Link the stage actor to this actor before it runs (none: not
     * linked): how a supervisor's spawn function puts a stage under
     * supervision. */
    rill_aid_t link_to;
    /** Elements this stage drops on purpose (filter, buffer overflow,
     * conflate) are released unconfirmed, so their records come again,
     * instead of being confirmed. */
    int redeliver_drops;
} rill_stage_opts_t;

/**
 * Run a stage as an actor (consumes the spec). opts may be NULL. Connect it
 * with rill_stage_connect(). A composite stage (partition_by_key) runs as
 * several actors; *aid is the one to connect to on both sides.
 * Returns RILL_OK, the spec's own error, rill_spawn()'s, or (Kafka stages)
 * the client's, with a sentence in errstr.
 * @locality any thread.
 */
RILL_API rill_err_t rill_stage_spawn(rill_system_t *sys, rill_stage_t *stage,
                                     const rill_stage_opts_t *opts, rill_aid_t *aid, char *errstr,
                                     size_t errstr_size);

/**
 * Make `downstream` subscribe to `upstream` (both stage actors, or any
 * actors speaking the protocol for upstream). A stage with several inputs
 * (merge) takes one connect per input; broadcast takes one per output.
 *
 * A connection that cannot work is refused at the call with RILL_EINVAL,
 * and nothing is sent, so the stages already running go on unharmed: a
 * stage connected to itself, a sink as the upstream (it has no output), a
 * source as the downstream (it takes no input), an upstream whose outputs
 * are all taken (every stage but broadcast and partition_by_key has one),
 * a downstream whose inputs are all connected (every stage but merge has
 * one). Inputs and outputs count from the stage's start and are never
 * given back. RILL_ESTOPPED if downstream is gone; a gone upstream ends
 * downstream's input. errstr (may be NULL) gets a sentence saying why
 * when the call fails.
 * @locality any thread.
 */
RILL_API rill_err_t rill_stage_connect(rill_system_t *sys, rill_aid_t upstream,
                                       rill_aid_t downstream, char *errstr, size_t errstr_size);

/* ------------------------------------------------------------------ */
/* Pipelines                                                           */
/* ------------------------------------------------------------------ */

/**
 * A linear pipeline: source, stages, sink, added in order. The pipeline
 * keeps the specs as a blueprint: it runs them once (rill_pipeline_start),
 * under a supervisor of its own that restarts it after a failure
 * (rill_pipeline_start_supervised), or as the child of a supervisor of
 * yours (RILL_CHILD_PIPELINE).
 *
 * A run is one actor that owns the stages: it spawns and connects them,
 * watches them, and ends when they all have. Stopping or failing drains
 * before anything closes: the source stops producing, what is in flight
 * goes on through the stages, and a Kafka source makes its final commit
 * only when every stage after it has ended (or its rill.drain.timeout.ms
 * passed), so that confirms still coming back from a producer are in it.
 * A run's end names the first stage that failed by itself, with its text.
 */
typedef struct rill_pipeline rill_pipeline_t;

/** How a pipeline ended. */
typedef enum rill_pipeline_end {
    RILL_PIPELINE_RUNNING = 0, /**< not ended yet */
    RILL_PIPELINE_COMPLETED,   /**< the source ended (or was drained) and all was processed */
    RILL_PIPELINE_FAILED,      /**< a stage failed (supervised: and the supervisor gave up) */
    RILL_PIPELINE_STOPPED      /**< rill_pipeline_stop() */
} rill_pipeline_end_t;

/** What rill_pipeline_wait() reports. */
typedef struct rill_pipeline_result {
    rill_pipeline_end_t end; /**< how it ended */
    rill_err_t code;         /**< FAILED: the error */
    char stage[64];          /**< FAILED: the stage that failed */
    char text[160];          /**< a sentence */
    uint64_t delivered;      /**< elements that reached the sink, over every run */
    uint32_t restarts;       /**< supervised: times it was restarted */
} rill_pipeline_result_t;

/** A new, empty pipeline. name (copied; NULL = "pipeline") names its run
 * actor and is its id under a supervisor. NULL only without memory (a NULL
 * sys is reported by the start). @locality any thread. */
RILL_API rill_pipeline_t *rill_pipeline_new(rill_system_t *sys, const char *name);
/** Add a stage at the end. Consumes stage (also on error). opts may be NULL.
 * Returns the spec's own error; RILL_ESTATE after start; RILL_EINVAL for a stage that does not fit
 * (a source after the first position, anything after a sink). The reason
 * comes in rill_pipeline_start()'s errstr.
 * @locality any thread; one thread at a time per pipeline. */
RILL_API rill_err_t rill_pipeline_add(rill_pipeline_t *p, rill_stage_t *stage,
                                      const rill_stage_opts_t *opts);
/** Run it once: spawns and connects everything, then lets the sink start
 * pulling. The first error of rill_pipeline_add, a pipeline that does not
 * start with a source and end with a sink, or a stage that cannot start
 * (a Kafka client refusing its configuration) is returned with a sentence.
 * @locality not an executor (it waits for the stages to be spawned). */
RILL_API rill_err_t rill_pipeline_start(rill_pipeline_t *p, char *errstr, size_t errstr_size);

/**
 * How a supervised pipeline is restarted. A zeroed struct (or NULL) means
 * the defaults: at most 10 restarts within 60 s, then the pipeline fails
 * for good; backoff from 200 ms doubling to 10 s, with 20 % jitter.
 */
typedef struct rill_restart_opts {
    int max_restarts;       /**< 0 = 10; RILL_SUP_NO_RESTARTS: none */
    uint32_t within_ms;     /**< 0 = 60000 */
    rill_backoff_t backoff; /**< all zero = the default above */
} rill_restart_opts_t;

/**
 * The one-call form: run the pipeline under a supervisor of its own. Any
 * stage failing restarts the whole pipeline (after the drain above), which
 * resumes from the committed offsets; a Kafka source keeps its client and
 * group membership across restarts, so a restart costs no rebalance. The
 * pipeline ends when it completes, when it is stopped, or when the restarts
 * run out (FAILED, with the last failure's stage and text).
 * @locality not an executor (it waits for the first start).
 */
RILL_API rill_err_t rill_pipeline_start_supervised(rill_pipeline_t *p,
                                                   const rill_restart_opts_t *opts, char *errstr,
                                                   size_t errstr_size);

/** Stop: the source stops producing, what is in flight is processed (for a
 * Kafka source: delivered and committed) within the drain timeout, then
 * anything left is stopped; the pipeline ends STOPPED. Returns at once.
 * @locality any thread. */
RILL_API rill_err_t rill_pipeline_stop(rill_pipeline_t *p);
/** Drain: the source completes now; elements already in flight are
 * processed, without a deadline; the pipeline ends COMPLETED.
 * @locality any thread. */
RILL_API rill_err_t rill_pipeline_drain(rill_pipeline_t *p);
/** Wait until the pipeline has ended (every actor of it gone; supervised:
 * the supervisor too), or timeout_ms (-1 = forever). Returns RILL_OK with
 * *result filled, or RILL_ETIMEDOUT (result->end RUNNING).
 * @locality not an executor. */
RILL_API rill_err_t rill_pipeline_wait(rill_pipeline_t *p, int timeout_ms,
                                       rill_pipeline_result_t *result);
/** The aid of stage i (0 = source) of the current run, for statistics;
 * RILL_AID_NONE if none (or between two runs). @locality any thread. */
RILL_API rill_aid_t rill_pipeline_stage(const rill_pipeline_t *p, int i);
/** What a pipeline is (rill_pipeline_info()). */
typedef struct rill_pipeline_info {
    char name[48];         /**< its name */
    int stages;            /**< stages added */
    int started;           /**< started (any way but as a supervisor's child) */
    uint32_t runs;         /**< runs started so far */
    rill_aid_t supervisor; /**< started supervised: its own supervisor while it runs */
} rill_pipeline_info_t;

/** A pipeline's name, stage count, runs and own supervisor (RILL_EINVAL
 * for NULL arguments). How it ended: rill_pipeline_wait() with timeout 0.
 * @locality any thread. */
RILL_API rill_err_t rill_pipeline_info(const rill_pipeline_t *p, rill_pipeline_info_t *out);

/** One stage of a pipeline (rill_pipeline_stage_info()). */
typedef struct rill_stage_info {
    char name[48];  /**< rill_stage_opts_t.name, or its kind when unnamed */
    char kind[32];  /**< the stage kind: "map", "kafka_source", ... */
    int source;     /**< the pipeline's first stage */
    int sink;       /**< the pipeline's last stage */
    rill_aid_t aid; /**< the current run's actor (RILL_AID_NONE between runs) */
} rill_stage_info_t;

/** Stage i (0 = source) of a pipeline; RILL_EINVAL for NULL arguments or
 * a bad index. @locality any thread. */
RILL_API rill_err_t rill_pipeline_stage_info(const rill_pipeline_t *p, int i,
                                             rill_stage_info_t *out);

/** Stops the pipeline if it runs, waits for it to end, frees it. NULL is a
 * no-op. A pipeline that is a supervisor's child must not be destroyed
 * before that supervisor ended. @locality not an executor. */
RILL_API void rill_pipeline_destroy(rill_pipeline_t *p);

/**
 * A pipeline as a supervisor's child: a rill_child_spawn_fn whose arg is
 * the pipeline (built, not started, and alive as long as the supervisor).
 * Each start is a run; any stage failing ends the run with its failure,
 * and the supervisor decides (restart, backoff, intensity). Use the macro,
 * which sets the fitting restart and shutdown types (transient: a
 * completed pipeline is not restarted; infinity: a pipeline bounds its own
 * stop).
 * @locality the supervisor's executor.
 */
RILL_API rill_err_t rill_pipeline_child(rill_system_t *sys, void *pipeline,
                                        const rill_child_env_t *env, rill_aid_t *child,
                                        char *errstr, size_t errstr_size);
/** A rill_child_spec_t initializer for pipeline as the child child_id (see
 * rill_pipeline_child()). */
#define RILL_CHILD_PIPELINE(child_id, pipeline)                                                    \
    {                                                                                              \
        .id = (child_id), .spawn = rill_pipeline_child, .arg = (pipeline),                         \
        .restart = RILL_RESTART_TRANSIENT, .shutdown = RILL_SHUTDOWN_INFINITY                      \
    }

#ifdef __cplusplus
}
#endif

#endif /* RILL_STREAM_H */
