/**
 * @file
 * rill actor runtime: systems, executors, actors with bounded mailboxes,
 * timers, monitors and links, ask.
 *
 * A system owns N executors; an executor is one thread running one libev
 * loop. Every actor is bound to one executor for life and its callbacks only
 * ever run on that thread, so actor state needs no locks.
 *
 * Messages. A message is a small envelope (rill_msg_t) copied by value into
 * the target's mailbox slot, so sending allocates nothing; its payload is a
 * pointer whose destructor the sender supplies. Ownership of the payload
 * passes to rill when a send returns RILL_OK and stays with the caller on any
 * error. rill calls msg->dtor(msg->payload) exactly once: after the handler
 * returns (unless the handler took the payload, see rill_msg_take), or when
 * the message cannot be delivered any more (target stopped: a dead letter).
 * Kafka records travel without copying: payload = the rd_kafka_message_t *,
 * dtor = rd_kafka_message_destroy.
 *
 * Two queues per actor. User messages go to a bounded lock-free mailbox:
 * rill_tell() never blocks and never drops silently; it returns RILL_EFULL
 * when the mailbox is full (and counts it). Control signals (lifecycle,
 * monitors, links, timers, stream demand) go to a separate unbounded control
 * queue that is never refused while the actor lives, and are handled before
 * user messages.
 *
 * Ids. Actors are named by rill_aid_t values, not pointers: an id stays
 * safe to use after its actor stopped (sends return RILL_ESTOPPED) and is
 * never reused for another actor. Ids of different kinds (actors, timers,
 * monitors; publishers and subscribers in stream.h) are distinct one-field
 * struct types, as in nng, so passing one where another is expected does
 * not compile.
 *
 * Origins. A message or a stream element may carry an origin
 * (rill_origin_t): a reference-counted receipt for what it stands for
 * upstream, in practice a consumed Kafka record. The record is confirmed
 * to its consumer once every reference made from it was confirmed; a
 * reference released without confirming (an error, a stop, a dead letter,
 * a message nobody took it from) means the record was not processed, and
 * it will be delivered again. rill's stages look after origins themselves
 * (stream.h); a hand-written actor takes one with rill_msg_take_origin()
 * and confirms or releases it. An origin names its system: confirm or
 * release every origin (and every element carrying one) before
 * rill_system_destroy().
 *
 * Locality, as in librdkafka: "any thread" functions may be called from any
 * thread, including executor threads; "actor context" functions only from
 * inside a callback of the actor whose ctx is passed (behaviour, init,
 * terminate), on its executor thread.
 */
#ifndef RILL_ACTOR_H
#define RILL_ACTOR_H

#include <stdint.h>

#include <rill/common.h>

#ifdef __cplusplus
extern "C" {
#endif

/** A system of actors and the executors that run them (opaque). */
typedef struct rill_system rill_system_t;
/** An actor's context, passed to its callbacks (opaque). */
typedef struct rill_ctx rill_ctx_t;

/** An actor id. The zero id, RILL_AID_NONE, is never a valid actor. */
typedef struct rill_aid {
    uint64_t id; /**< the id's value; 0 for RILL_AID_NONE */
} rill_aid_t;
#ifdef __cplusplus
#define RILL_AID_NONE (rill_aid_t{0}) /* C++ has no compound literals */
#else
/** The zero actor id: no actor. */
#define RILL_AID_NONE ((rill_aid_t){0})
#endif

/** Non-zero if a and b name the same actor. @locality any thread. */
static inline int rill_aid_eq(rill_aid_t a, rill_aid_t b)
{
    return a.id == b.id;
}

/** Non-zero for RILL_AID_NONE. @locality any thread. */
static inline int rill_aid_is_none(rill_aid_t a)
{
    return a.id == 0;
}

/** A timer of an actor (rill_timer_start). The zero timer is none. */
typedef struct rill_timer {
    uint64_t id; /**< the timer's value; 0 for none */
} rill_timer_t;

/** A monitor an actor holds on another (rill_monitor). The zero monitor is
 * none. */
typedef struct rill_monitor {
    uint64_t id; /**< the monitor's value; 0 for none */
} rill_monitor_t;

/** What a message or an element stands for upstream (see Origins above). */
typedef struct rill_origin rill_origin_t;

/** Where an actor runs: RILL_EXECUTOR_ANY (0, the default of a zeroed
 * options struct) lets the system choose; RILL_EXECUTOR(i) pins it to
 * executor i (0 .. executors - 1).
 * @{ */
#define RILL_EXECUTOR_ANY 0
#define RILL_EXECUTOR(i)  ((int)(i) + 1)
/** @} */

/* ------------------------------------------------------------------ */
/* Messages                                                            */
/* ------------------------------------------------------------------ */

/** Message types below RILL_MSG_USER are rill's own. */
enum {
    RILL_MSG_NONE = 0,          /**< zero: no message type */
    RILL_MSG_DOWN = 1,          /**< a monitored actor stopped; payload rill_down_t */
    RILL_MSG_EXIT = 2,          /**< a linked actor failed (trap_exits only); payload rill_down_t */
    RILL_MSG_ASK_TIMEOUT = 3,   /**< no reply to rill_ask() in time; corr = the ask's id */
    RILL_MSG_STREAM_FIRST = 16, /**< 16..127: reserved for rill streams */
    RILL_MSG_STREAM_LAST = 127, /**< the last type of the range reserved for rill streams */
    RILL_MSG_USER = 256         /**< first type for applications */
};

/**
 * Frees the payload of a message or an element.
 * @locality any thread: the one that releases the payload, usually the executor of the
 * actor that handled or dropped the message, or a thread calling rill_elem_release(),
 * rill_elem_confirm() or rill_system_destroy().
 */
typedef void rill_dtor_fn(void *payload);

/**
 * The message envelope. 56 bytes, copied by value on send (a mailbox slot
 * is one 64-byte cache line).
 */
typedef struct rill_msg {
    uint32_t type;         /**< RILL_MSG_USER and up for applications */
    uint32_t flags;        /**< bits 0..23 free for applications; 24..31 rill's */
    uint64_t arg;          /**< a small inline value (count, id, ...) */
    void *payload;         /**< may be NULL */
    rill_dtor_fn *dtor;    /**< frees payload; NULL if nothing to free */
    rill_aid_t from;       /**< the sender; set by rill_send() / rill_reply() */
    uint64_t corr;         /**< correlation id for ask/reply; 0 otherwise */
    rill_origin_t *origin; /**< what the message stands for upstream, or NULL:
                                one reference, owned like the payload */
} rill_msg_t;

/**
 * Take the payload out of a message being handled: returns msg->payload and
 * clears msg->dtor, so rill will not free it after the handler returns.
 * The caller now owns the payload (keep it, or send it on and let the
 * receiver's dtor free it).
 * @locality actor context, on the message passed to the behaviour.
 */
RILL_API void *rill_msg_take(rill_msg_t *msg);

/**
 * Take the origin out of a message being handled (NULL if it has none):
 * the caller now owns that reference and must confirm or release it. An
 * origin left in the message is released unconfirmed after the handler
 * returns, so confirming is always explicit.
 * @locality actor context, on the message passed to the behaviour.
 */
RILL_API rill_origin_t *rill_msg_take_origin(rill_msg_t *msg);

/* ------------------------------------------------------------------ */
/* Origins                                                             */
/* ------------------------------------------------------------------ */

/** One more reference to o, for one more thing made from what o stands
 * for; returns o. NULL is passed through. @locality any thread. */
RILL_API rill_origin_t *rill_origin_ref(rill_origin_t *o);

/** Drop a reference as handled: once every reference of o is confirmed,
 * its source (the Kafka consumer) learns that the record may be
 * committed. NULL is a no-op. @locality any thread. */
RILL_API void rill_origin_confirm(rill_origin_t *o);

/** Drop a reference without confirming: the record o stands for will not
 * be committed by this delivery and comes again (after a restart, or after
 * the consumer's rill.unconfirmed.timeout.ms). NULL is a no-op.
 * @locality any thread. */
RILL_API void rill_origin_release(rill_origin_t *o);

/** How an actor ended. */
typedef enum rill_exit_kind {
    RILL_EXIT_NORMAL = 0, /**< rill_stop_self(), or init asked for it */
    RILL_EXIT_SHUTDOWN,   /**< stopped from outside: rill_stop(), system stop */
    RILL_EXIT_FAILURE,    /**< behaviour or init returned an error, or rill_fail() */
    RILL_EXIT_KILLED,     /**< rill_kill() */
    RILL_EXIT_LINKED,     /**< a linked actor failed and this one does not trap exits */
    RILL_EXIT_NOPROC      /**< monitored or linked an actor that was already gone */
} rill_exit_kind_t;

/** Why an actor ended: its exit kind, code and text. */
typedef struct rill_exit {
    rill_exit_kind_t kind; /**< how it ended */
    rill_err_t code;       /**< the error returned, for FAILURE; RILL_OK otherwise */
    char text[120];        /**< a sentence, possibly empty */
} rill_exit_t;

/** Non-zero for exits that links propagate and transient children restart
 * on: FAILURE, KILLED, LINKED. NORMAL, SHUTDOWN and NOPROC are normal.
 * @locality any thread. */
RILL_API int rill_exit_abnormal(const rill_exit_t *reason);

/** Short name of an exit kind: "normal", "shutdown", "failure", ...
 * @locality any thread. The string is static. */
RILL_API const char *rill_exit_kind_name(rill_exit_kind_t kind);

/** Payload of RILL_MSG_DOWN and RILL_MSG_EXIT (freed by rill). */
typedef struct rill_down {
    rill_aid_t actor;       /**< who stopped */
    rill_monitor_t monitor; /**< the monitor (DOWN); zero for EXIT */
    rill_exit_t reason;     /**< why it stopped */
} rill_down_t;

/* ------------------------------------------------------------------ */
/* System                                                              */
/* ------------------------------------------------------------------ */

/** Options of rill_system_new(); a zeroed struct means the defaults. */
typedef struct rill_system_opts {
    int executors;             /**< 0 = number of online cores */
    uint32_t mailbox_capacity; /**< default for actors; 0 = 256 */
    uint32_t batch;            /**< messages per actor per turn; 0 = 64 */
    uint32_t spin_us;          /**< an idle executor polls at most this long
                                    before sleeping, and only while its recent
                                    idle gaps were short (under spin_us / 2);
                                    0 = 50, UINT32_MAX = never spin */
    uint32_t max_actors;       /**< live actors at once; 0 = 1,048,576 */
} rill_system_opts_t;

/**
 * Create a system (executors not started yet; actors may be spawned and
 * messaged before rill_system_start()). opts may be NULL for defaults.
 * Returns NULL with the reason in errstr on invalid options or resources.
 * @locality any thread. The caller owns the result: rill_system_destroy().
 */
RILL_API rill_system_t *rill_system_new(const rill_system_opts_t *opts, char *errstr,
                                        size_t errstr_size);

/**
 * Start the executor threads. RILL_ESTATE if already started or stopped.
 * @locality any thread except an executor thread.
 */
RILL_API rill_err_t rill_system_start(rill_system_t *sys);

/**
 * Stop every actor (each gets its terminate hook with reason SHUTDOWN; its
 * undelivered messages are released through their destructors and counted
 * as dead letters), then stop and join the executor threads.
 * Returns RILL_OK, or RILL_ETIMEDOUT if actors were still running when
 * timeout_ms passed (a handler that never returns cannot be interrupted; the
 * system is then left running and must not be destroyed). Idempotent.
 * @locality any thread except an executor thread.
 */
RILL_API rill_err_t rill_system_stop(rill_system_t *sys, int timeout_ms);

/**
 * Stop (without a deadline) if still running, then free everything. NULL is
 * a no-op.
 * @locality any thread except an executor thread.
 */
RILL_API void rill_system_destroy(rill_system_t *sys);

/** Number of executors; 0 for NULL. @locality any thread. */
RILL_API int rill_system_executors(const rill_system_t *sys);

/* ------------------------------------------------------------------ */
/* Actors                                                              */
/* ------------------------------------------------------------------ */

/**
 * The behaviour: handles one message. Return RILL_OK to continue; any other
 * value stops the actor with RILL_EXIT_FAILURE and that code. msg->payload is
 * freed with msg->dtor after return unless taken with rill_msg_take().
 * @locality the actor's executor thread (actor context).
 */
typedef rill_err_t rill_behavior_fn(rill_ctx_t *ctx, void *state, rill_msg_t *msg);

/** Runs once on the executor before any message. An error stops the actor
 * with RILL_EXIT_FAILURE (terminate is still called).
 * @locality the actor's executor thread (actor context). */
typedef rill_err_t rill_init_fn(rill_ctx_t *ctx, void *state);

/** Runs once when the actor stops, whatever the reason, after which rill
 * touches neither the state nor the actor again: free state here.
 * @locality the actor's executor thread (actor context). For a supervised child
 * (rill_child_start_fn) that could not be spawned, the supervisor's executor, with
 * the supervisor's ctx. */
typedef void rill_terminate_fn(rill_ctx_t *ctx, void *state, const rill_exit_t *reason);

/** Options of rill_spawn(): the actor's callbacks, state, name and placement. */
typedef struct rill_spawn_opts {
    rill_behavior_fn *behavior;   /**< required */
    rill_init_fn *init;           /**< optional */
    rill_terminate_fn *terminate; /**< optional */
    void *state;                  /**< passed to the callbacks; owned by the caller */
    const char *name;             /**< optional, unique among live actors; copied */
    uint32_t mailbox_capacity;    /**< 0 = system default; rounded up to a power of two */
    int executor;                 /**< RILL_EXECUTOR_ANY (0) or RILL_EXECUTOR(i) */
    uint32_t batch;               /**< 0 = system default */
    int trap_exits;               /**< receive RILL_MSG_EXIT instead of dying with links */
    rill_aid_t link_to;           /**< link to this actor before running, or none */
    rill_aid_t monitor_by;        /**< this actor monitors the new one from the start
                                       (no race with an early death); ignored if gone */
    rill_monitor_t *monitor;      /**< out: monitor_by's monitor, may be NULL */
} rill_spawn_opts_t;

/**
 * Start an actor. Its init hook, then its messages, run on its executor.
 * Returns RILL_OK and sets *aid; RILL_EINVAL (NULL arguments, no behaviour,
 * executor out of range, capacity above 2^24, an empty name); RILL_EEXIST (name taken);
 * RILL_ESTOPPED (system stopping); RILL_ENOMEM (out of memory or max_actors
 * reached). If link_to names an actor that is gone, the new actor still
 * starts and gets an EXIT with NOPROC (see rill_link).
 * @locality any thread. state stays owned by the caller (free it in
 * terminate).
 */
RILL_API rill_err_t rill_spawn(rill_system_t *sys, const rill_spawn_opts_t *opts, rill_aid_t *aid);

/**
 * Send a message to an actor's mailbox. The envelope is copied.
 * Returns RILL_OK (payload ownership passed), RILL_EFULL (mailbox full),
 * RILL_ESTOPPED (no such live actor), or RILL_EINVAL (NULL sys or msg,
 * aid 0); on every error the caller keeps the payload. Never blocks.
 * msg->from is kept as given (0 from outside actors).
 * @locality any thread.
 */
RILL_API rill_err_t rill_tell(rill_system_t *sys, rill_aid_t to, const rill_msg_t *msg);

/**
 * Send msgs[0..n) to an actor's mailbox, in order, with one atomic claim
 * for as many as fit (rill_tell() pays one per message): the cheap way to
 * hand a batch (a poll's records, a stage's output) to one actor. Other
 * senders' messages never land between them. The longest prefix that fits
 * goes: *sent says how many (always set, 0 on any error).
 * Returns RILL_OK (all n sent; n == 0 sends nothing), RILL_EFULL (the
 * mailbox took only *sent < n; refused counts the n - *sent left out),
 * RILL_ESTOPPED (no such live actor, nothing sent), or RILL_EINVAL (NULL
 * sys or sent, NULL msgs with n > 0, aid 0). Payload ownership of
 * msgs[0..*sent) passes to rill; msgs[*sent..n) stay the caller's. The
 * envelopes are copied; msg->from is kept as given. Never blocks.
 * @locality any thread.
 */
RILL_API rill_err_t rill_tell_batch(rill_system_t *sys, rill_aid_t to, const rill_msg_t *msgs,
                                    size_t n, size_t *sent);

/** rill_tell() to the actor registered under name: RILL_ESTOPPED if none,
 * RILL_ERESTARTING while the name is held for a child waiting to be
 * restarted by its supervisor.
 * @locality any thread. */
RILL_API rill_err_t rill_tell_name(rill_system_t *sys, const char *name, const rill_msg_t *msg);

/**
 * Send a control signal: delivered to the behaviour like a message, but
 * through the control queue, which is never full and is served before the
 * mailbox. For small, rare signals (stop requests, demand); there is no
 * backpressure. Returns RILL_OK, RILL_ESTOPPED, RILL_EINVAL or RILL_ENOMEM.
 * @locality any thread.
 */
RILL_API rill_err_t rill_signal(rill_system_t *sys, rill_aid_t to, const rill_msg_t *msg);

/** The id of the live actor registered under name, or RILL_AID_NONE.
 * @locality any thread. */
RILL_API rill_aid_t rill_lookup(rill_system_t *sys, const char *name);

/**
 * Ask an actor to stop (reason SHUTDOWN) after the message it is handling;
 * its queued messages become dead letters. RILL_ESTOPPED if already gone.
 * @locality any thread.
 */
RILL_API rill_err_t rill_stop(rill_system_t *sys, rill_aid_t aid);

/** Stop an actor abnormally (reason KILLED, with text `why`, may be NULL):
 * links propagate it. @locality any thread. */
RILL_API rill_err_t rill_kill(rill_system_t *sys, rill_aid_t aid, const char *why);

/** Non-zero until the actor has stopped for good: after a stop it already
 * refuses messages, but rill_alive stays non-zero until its terminate hook
 * (for stages and Kafka actors: their final flush and commit) has returned.
 * It is 0 before any watcher or link hears of the end: after a DOWN or
 * EXIT for an actor, rill_alive of it is 0. @locality any thread. */
RILL_API int rill_alive(rill_system_t *sys, rill_aid_t aid);

/* ------------------------------------------------------------------ */
/* Actor context                                                       */
/* ------------------------------------------------------------------ */

/** The calling actor's id (RILL_AID_NONE for a NULL ctx). @locality actor context. */
RILL_API rill_aid_t rill_self(const rill_ctx_t *ctx);
/** The system the calling actor belongs to (NULL for a NULL ctx). @locality actor context. */
RILL_API rill_system_t *rill_ctx_system(const rill_ctx_t *ctx);
/** The executor index this actor runs on. @locality actor context. */
RILL_API int rill_ctx_executor(const rill_ctx_t *ctx);

/** rill_tell() with msg->from set to the calling actor. @locality actor context. */
RILL_API rill_err_t rill_send(rill_ctx_t *ctx, rill_aid_t to, const rill_msg_t *msg);

/**
 * Stop the calling actor normally once the current callback returns.
 * @locality actor context.
 */
RILL_API void rill_stop_self(rill_ctx_t *ctx);

/**
 * Record a failure: the actor stops with RILL_EXIT_FAILURE, `code` and the
 * formatted text once the current callback returns. Returns code, so a
 * behaviour can `return rill_fail(ctx, RILL_EINVAL, "bad input %d", n);`.
 * @locality actor context.
 */
RILL_API rill_err_t rill_fail(rill_ctx_t *ctx, rill_err_t code, const char *fmt, ...)
    RILL_PRINTF(3, 4);

/**
 * Monitor another actor: exactly one RILL_MSG_DOWN (payload rill_down_t,
 * monitor = *monitor) arrives when it stops, or at once with NOPROC if it
 * is already gone. *monitor (may be NULL) names it for rill_demonitor().
 * @locality actor context.
 */
RILL_API rill_err_t rill_monitor(rill_ctx_t *ctx, rill_aid_t target, rill_monitor_t *monitor);

/** Cancel a monitor: no DOWN for it arrives after this returns.
 * @locality actor context. */
RILL_API rill_err_t rill_demonitor(rill_ctx_t *ctx, rill_monitor_t monitor);

/**
 * Link with another actor, both ways: when either stops abnormally
 * (rill_exit_abnormal), the other stops with RILL_EXIT_LINKED. Normal stops
 * do not propagate. An actor that traps exits (spawn opts trap_exits)
 * instead receives RILL_MSG_EXIT for every exit of a linked actor, normal
 * ones included, as in OTP. Linking to a gone actor delivers EXIT with
 * NOPROC to a trapper and is ignored otherwise.
 * @locality actor context.
 * @{
 */
RILL_API rill_err_t rill_link(rill_ctx_t *ctx, rill_aid_t target);
RILL_API rill_err_t rill_unlink(rill_ctx_t *ctx, rill_aid_t target);
/** @} */

/**
 * Deliver msg to the calling actor after `after_ms`, then every `repeat_ms`
 * if that is > 0. Timer messages come through the control queue (never
 * refused); a repeating timer whose previous message is still queued skips
 * that tick. Payload ownership: a one-shot timer hands the payload to the
 * handler; a repeating timer lends it on every tick (the handler sees
 * dtor == NULL and must not keep the pointer past the timer's life) and
 * frees it with dtor when cancelled or when the actor stops. Timers stop
 * with the actor.
 * @locality actor context.
 */
RILL_API rill_err_t rill_timer_start(rill_ctx_t *ctx, uint64_t after_ms, uint64_t repeat_ms,
                                     const rill_msg_t *msg, rill_timer_t *timer);

/** Cancel a timer: no message of it is delivered after this returns (a
 * tick already queued is dropped). RILL_ENOENT if the timer is unknown or
 * the one-shot timer's message was already delivered.
 * @locality actor context. */
RILL_API rill_err_t rill_timer_cancel(rill_ctx_t *ctx, rill_timer_t timer);

/**
 * Ask: send `request` (from = self, corr = a new id written to *corr) and
 * expect a reply within timeout_ms. The reply arrives as a message with the
 * same corr; if none arrives in time, a RILL_MSG_ASK_TIMEOUT message with
 * that corr arrives instead, and a late reply is dropped as a dead letter.
 * Returns the send's result (on error nothing is pending).
 * @locality actor context.
 */
RILL_API rill_err_t rill_ask(rill_ctx_t *ctx, rill_aid_t to, const rill_msg_t *request,
                             int timeout_ms, uint64_t *corr);

/**
 * Reply to a request received by the calling actor: sends `reply` to
 * request->from with request->corr. A reply to a rill_ask() is matched to
 * the ask (or dropped if it timed out); a reply to a plain rill_send()
 * (corr 0) is delivered like any message. Returns rill_tell()'s result, or
 * RILL_EINVAL if the request has no sender.
 * @locality actor context.
 */
RILL_API rill_err_t rill_reply(rill_ctx_t *ctx, const rill_msg_t *request, const rill_msg_t *reply);

/**
 * Blocking ask for threads that are not executors (main, tests): send
 * request (from = a short-lived reply actor, which counts in the system's
 * statistics) and wait up to timeout_ms for the reply, copied into *reply
 * (the caller then owns reply->payload). The send happens on the calling
 * thread, so a full mailbox answers RILL_EFULL at once, and the deadline
 * holds even when every executor is busy. A reply arriving after the
 * deadline is released as a dead letter. Returns RILL_OK, RILL_ETIMEDOUT,
 * the send's error, or RILL_ESTATE (executor thread, or system not
 * running).
 * @locality any thread except an executor thread.
 */
RILL_API rill_err_t rill_ask_sync(rill_system_t *sys, rill_aid_t to, const rill_msg_t *request,
                                  int timeout_ms, rill_msg_t *reply);

/* ------------------------------------------------------------------ */
/* Introspection                                                       */
/* ------------------------------------------------------------------ */

/** An actor's counters (rill_actor_stats()). */
typedef struct rill_actor_stats {
    uint64_t processed;        /**< messages and signals handled */
    uint32_t mailbox_depth;    /**< messages queued now (approximate) */
    uint32_t mailbox_hwm;      /**< highest depth seen */
    uint32_t mailbox_capacity; /**< the mailbox's capacity (a power of two) */
    uint64_t refused;          /**< sends refused with RILL_EFULL */
    uint32_t restarts;         /**< filled in by supervisors */
    int executor;              /**< the index of the executor it runs on */
} rill_actor_stats_t;

/** Counters of a live actor. RILL_ESTOPPED if gone. @locality any thread. */
RILL_API rill_err_t rill_actor_stats(rill_system_t *sys, rill_aid_t aid, rill_actor_stats_t *out);

/** A system's counters (rill_system_stats()). */
typedef struct rill_system_stats {
    uint64_t dead_letters; /**< messages released undelivered: also control signals
                                (e.g. stream demand) that arrived after their actor
                                stopped, so a clean drain can count a few */
    uint64_t spawned;      /**< actors ever started */
    uint32_t alive;        /**< actors alive now (one whose DOWN or EXIT went out is not) */
} rill_system_stats_t;

/** System-wide counters. @locality any thread. */
RILL_API void rill_system_stats(rill_system_t *sys, rill_system_stats_t *out);

/** An executor's time (rill_executor_stats()). busy_ns / uptime_ns over an
 * interval is how busy it was. */
typedef struct rill_executor_stats {
    uint64_t busy_ns;   /**< time spent running actors (not sleeping, not spinning idle) */
    uint64_t uptime_ns; /**< time since its thread started (0 before) */
} rill_executor_stats_t;

/** Counters of executor index (0 .. rill_system_executors() - 1);
 * RILL_EINVAL for a bad index or NULL arguments. @locality any thread. */
RILL_API rill_err_t rill_executor_stats(rill_system_t *sys, int index, rill_executor_stats_t *out);

/* ------------------------------------------------------------------ */
/* Payload pool                                                        */
/* ------------------------------------------------------------------ */

/**
 * A thread-safe pool of fixed-size payload blocks, for messages sent at
 * high rates (the envelope itself never allocates). rill_pool_free is a
 * valid rill_dtor_fn: `msg.payload = rill_pool_alloc(p); msg.dtor =
 * rill_pool_free;`
 */
typedef struct rill_pool rill_pool_t;

/** A new pool of blocks of block_size bytes; NULL for a bad size or without memory.
 * block_size > 0; blocks are 16-byte aligned. max_free blocks are kept for
 * reuse (0 = 4096), beyond that they go back to malloc.
 * @locality any thread. */
RILL_API rill_pool_t *rill_pool_new(size_t block_size, size_t max_free);
/** A block of the pool (not zeroed). NULL on out of memory. @locality any thread. */
RILL_API void *rill_pool_alloc(rill_pool_t *pool);
/** Return a block (NULL is a no-op). @locality any thread. */
RILL_API void rill_pool_free(void *block);
/** Free the pool's cached blocks. Blocks still out stay valid; the pool's
 * memory goes when the last of them is freed. NULL is a no-op.
 * @locality any thread. */
RILL_API void rill_pool_destroy(rill_pool_t *pool);

#ifdef __cplusplus
}
#endif

#endif /* RILL_ACTOR_H */
