/**
 * @file
 * rill supervisors: Erlang/OTP supervision trees with Akka-style backoff.
 *
 * A supervisor is an actor that starts its children from child specs, in
 * order, watches them, restarts them by its strategy when they exit, and
 * stops them in reverse order. Past its restart intensity it stops all its
 * children and fails itself, which its own supervisor sees as a child
 * failure: escalation up the tree.
 *
 * For Kafka this is what turns a crash into a redelivery: the consumer's
 * offsets are committed only for confirmed records, so a restarted child
 * starts from the last commit and nothing is lost.
 *
 * Strategies (when a child exits and is to be restarted):
 *
 *     ONE_FOR_ONE        restart that child only
 *     ONE_FOR_ALL        stop all others (reverse order), restart all (in order)
 *     REST_FOR_ONE       stop the children started after it (reverse order),
 *                        restart it and them (in order)
 *     SIMPLE_ONE_FOR_ONE one template spec; children added and removed at run
 *                        time (rill_sup_start_child), each restarted alone
 *
 * Restart types: PERMANENT (always restarted), TRANSIENT (only after an
 * abnormal exit: rill_exit_abnormal), TEMPORARY (never, not even when a
 * sibling's failure restarts the others: it is stopped then and removed).
 *
 * Intensity: at most `intensity` restarts within `period_ms` (OTP default 1
 * in 5000 ms); one more and the supervisor gives up (escalates).
 *
 * Backoff (optional, Akka RestartSettings): the n-th consecutive restart of
 * a child waits min(max_ms, min_ms * 2^n) * (1 + random * random_factor)
 * ms; n goes back to 0 once the child has run for reset_ms without exiting.
 * While a child waits, sends to its name return RILL_ERESTARTING instead of
 * vanishing.
 *
 * Counting: a child's restart count (rill_child_info_t, rill_actor_stats)
 * grows when it is restarted because it exited itself; siblings restarted
 * with it by ONE_FOR_ALL / REST_FOR_ONE get new actors but keep their
 * count. A group restart waits for the failed child's backoff delay. A
 * supervisor that gives up exits with RILL_EXIT_FAILURE (code
 * RILL_ESTATE, text naming the child and its last exit); one that is
 * stopped exits normally.
 *
 * Starting: children start in order and each is up before the next
 * starts; a child supervisor is up when all its own children are. Any
 * child that cannot start fails the whole start (the ones started go down
 * again first).
 *
 * Shutdown per child: BRUTAL (killed at once), TIMEOUT (asked to stop; a
 * child that traps exits gets the request as RILL_MSG_EXIT and may finish
 * its work; after shutdown_ms it is killed), INFINITY (asked, waited for
 * without limit: for child supervisors).
 */
#ifndef RILL_SUPERVISOR_H
#define RILL_SUPERVISOR_H

#include <stdint.h>

#include <rill/actor.h>

#ifdef __cplusplus
extern "C" {
#endif

/** What a supervisor restarts when a child exits and is to be restarted (see above). */
typedef enum rill_sup_strategy {
    RILL_SUP_ONE_FOR_ONE = 0,   /**< restart that child only */
    RILL_SUP_ONE_FOR_ALL,       /**< stop all others (reverse order), restart all (in order) */
    RILL_SUP_REST_FOR_ONE,      /**< stop the children started after it (reverse order),
                                     restart it and them (in order) */
    RILL_SUP_SIMPLE_ONE_FOR_ONE /**< one template spec; children added and removed at run
                                     time (rill_sup_start_child), each restarted alone */
} rill_sup_strategy_t;

/** When a child is restarted (see Restart types above). */
typedef enum rill_restart {
    RILL_RESTART_PERMANENT = 0, /**< always restarted */
    RILL_RESTART_TRANSIENT,     /**< only after an abnormal exit: rill_exit_abnormal */
    RILL_RESTART_TEMPORARY      /**< never, not even when a sibling's failure restarts the
                                     others: it is stopped then and removed */
} rill_restart_t;

/** How a child is stopped (see Shutdown per child above). */
typedef enum rill_shutdown {
    RILL_SHUTDOWN_TIMEOUT = 0, /**< asked to stop, killed after shutdown_ms, default 5000 */
    RILL_SHUTDOWN_BRUTAL,      /**< killed at once */
    RILL_SHUTDOWN_INFINITY     /**< asked, waited for without limit: for child supervisors */
} rill_shutdown_t;

/** A supervisor's spec (struct rill_sup_spec below). */
typedef struct rill_sup_spec rill_sup_spec_t;

/**
 * Fills the spawn options of a child, at its first start and at every
 * restart (so `state` can be fresh each time; free it in terminate). `arg`
 * is the spec's arg, or for SIMPLE_ONE_FOR_ONE the arg given to
 * rill_sup_start_child. The supervisor sets name, monitor_by and link
 * fields itself. Returning an error counts as a failed start.
 * @locality the supervisor's executor.
 */
typedef rill_err_t rill_child_start_fn(void *arg, rill_spawn_opts_t *opts);

/** What a rill_child_spawn_fn is told about the child to spawn. */
typedef struct rill_child_env {
    rill_aid_t supervisor; /**< the supervisor: link the child to it */
    const char *name;      /**< the id when register_name is set, else NULL */
} rill_child_env_t;
/**
 * The other way to start a child, for children that are not plain actors
 * (a Kafka consumer, a stream stage): spawn it yourself, linked to
 * env->supervisor and registered as env->name if that is not NULL (for a
 * stage: rill_stage_opts_t.link_to and .name), and return its aid. A child
 * that is not linked cannot be supervised.
 * On failure, write the reason into errstr: it becomes the child's last
 * exit text and the start's error.
 * @locality the supervisor's executor.
 */
typedef rill_err_t rill_child_spawn_fn(rill_system_t *sys, void *arg, const rill_child_env_t *env,
                                       rill_aid_t *child, char *errstr, size_t errstr_size);

/** A child of a supervisor: how to start it, restart it and stop it. */
typedef struct rill_child_spec {
    const char *id;                    /**< unique among the supervisor's children */
    rill_child_start_fn *start;        /**< one of start, spawn and supervisor */
    rill_child_spawn_fn *spawn;        /**< one of start, spawn and supervisor */
    void *arg;                         /**< passed to start or spawn */
    const rill_sup_spec_t *supervisor; /**< the child is a supervisor with this spec */
    rill_restart_t restart;            /**< when it is restarted */
    rill_shutdown_t shutdown;          /**< how it is stopped */
    uint32_t shutdown_ms;              /**< TIMEOUT: 0 = 5000 */
    int register_name;                 /**< register the child under its id (one per system) */
    /** With the supervisor's auto_shutdown: this child's end (when it is not
     * restarted: a transient child that ended normally, a temporary one)
     * can end the supervisor. Significant children are transient or
     * temporary. */
    int significant;
} rill_child_spec_t;

/**
 * Restart delays (Akka's RestartSettings): the n-th consecutive restart of
 * a child waits min(max_ms, min_ms * 2^n) * (1 + random * random_factor)
 * ms; n goes back to 0 once the child ran for reset_ms. All zero: restart
 * at once.
 */
typedef struct rill_backoff {
    uint32_t min_ms;   /**< the base of the delay (the formula above) */
    uint32_t max_ms;   /**< >= min_ms */
    double random;     /**< 0..1 */
    uint32_t reset_ms; /**< quiet time that resets the count; 0 = 10 x max_ms */
} rill_backoff_t;

/** A supervisor whose children may not be restarted at all (intensity). */
#define RILL_SUP_NO_RESTARTS (-1)

/** When a supervisor ends by itself (OTP 24's auto_shutdown). */
typedef enum rill_auto_shutdown {
    RILL_AUTO_SHUTDOWN_NEVER = 0, /**< only when stopped or when it gives up */
    RILL_AUTO_SHUTDOWN_ANY,       /**< when any significant child ended for good */
    RILL_AUTO_SHUTDOWN_ALL        /**< when every significant child ended for good */
} rill_auto_shutdown_t;

/** A zeroed spec is OTP's default: one_for_one, 1 restart in 5 s, no
 * backoff, any executor, no auto shutdown (add the children). */
struct rill_sup_spec {
    /** How children are restarted. */
    rill_sup_strategy_t strategy;
    int intensity;      /**< restarts allowed within period_ms: 0 = 1, as OTP;
                             RILL_SUP_NO_RESTARTS = none */
    uint32_t period_ms; /**< 0 = 5000 */
    /** Restart delays; all zero: restart at once. */
    rill_backoff_t backoff;
    /** The child specs, in start order. */
    const rill_child_spec_t *children;
    size_t n_children; /**< SIMPLE_ONE_FOR_ONE: exactly 1 (the template) */
    int executor;      /**< the supervisor's own: RILL_EXECUTOR_ANY or RILL_EXECUTOR(i) */
    /** When the supervisor ends by itself. */
    rill_auto_shutdown_t auto_shutdown;
};

/** OTP's defaults, spelled out (a zeroed spec means the same). */
#define RILL_SUP_SPEC_DEFAULT                                                                      \
    {                                                                                              \
        .strategy = RILL_SUP_ONE_FOR_ONE, .intensity = 1, .period_ms = 5000                        \
    }

/**
 * Check a spec (not the executors, which need a system): NULL or missing
 * start functions, duplicate ids, intensity
 * < 0, period 0, backoff max < min, random factor outside 0..1, a
 * SIMPLE_ONE_FOR_ONE spec without exactly one template. Returns RILL_OK or
 * RILL_EINVAL with the reason in errstr.
 * @locality any thread.
 */
RILL_API rill_err_t rill_sup_spec_check(const rill_sup_spec_t *spec, char *errstr,
                                        size_t errstr_size);

/**
 * Start a supervisor and its children (in order; if one cannot start, the
 * ones started are stopped again and the error is returned). name may be
 * NULL. The spec (and its children array and strings) must stay valid while
 * the supervisor runs. Waits until the children are started (or failed),
 * so it must not be called from an executor thread.
 * @locality any thread except an executor thread.
 */
RILL_API rill_err_t rill_sup_start(rill_system_t *sys, const rill_sup_spec_t *spec,
                                   const char *name, rill_aid_t *sup, char *errstr,
                                   size_t errstr_size);

/**
 * Stop a supervisor in order: its children in reverse start order (each by
 * its shutdown spec), then itself. Waits up to timeout_ms (-1 = forever).
 * @locality any thread except an executor thread.
 */
RILL_API rill_err_t rill_sup_stop(rill_system_t *sys, rill_aid_t sup, int timeout_ms);

/**
 * SIMPLE_ONE_FOR_ONE: start one more child from the template with `arg`;
 * its id is the template's id and "-<n>" (n counts up, never reused). A
 * dynamic child that exits and is not to be restarted is forgotten.
 * Returns its aid in *child (may be NULL). Waits for the start.
 * @locality any thread except an executor thread.
 */
RILL_API rill_err_t rill_sup_start_child(rill_system_t *sys, rill_aid_t sup, void *arg,
                                         rill_aid_t *child);

/** SIMPLE_ONE_FOR_ONE: stop that child (by its shutdown spec), wait until it
 * has exited, and forget it. RILL_ENOENT for an aid that is not one of its
 * dynamic children (also on a supervisor that is not SIMPLE_ONE_FOR_ONE).
 * @locality any thread except an executor thread (it asks the supervisor). */
RILL_API rill_err_t rill_sup_terminate_child(rill_system_t *sys, rill_aid_t sup, rill_aid_t child);

/** What a supervisor knows of one child. */
typedef struct rill_child_info {
    char id[64];            /**< its id */
    rill_aid_t aid;         /**< 0 while restarting or stopped */
    int running;            /**< non-zero while it runs */
    int restarting;         /**< waiting for its backoff delay */
    int supervisor;         /**< non-zero for a child supervisor */
    uint32_t restarts;      /**< times it was restarted because it exited itself */
    uint32_t next_delay_ms; /**< of the pending restart */
    rill_exit_t last_exit;  /**< kind NORMAL with empty text if none yet */
} rill_child_info_t;

/**
 * A snapshot of a supervisor's children, in start order, into out[0..max);
 * *n gets the number of children (may exceed max).
 * @locality any thread except an executor thread (it asks the supervisor).
 */
RILL_API rill_err_t rill_sup_children(rill_system_t *sys, rill_aid_t sup, rill_child_info_t *out,
                                      size_t max, size_t *n);

/**
 * The live tree under sup as text (indented, one line per child with its
 * state, restarts and last exit) or, with dot != 0, as a Graphviz digraph.
 * *out is malloc'ed (the caller frees it).
 * @locality any thread except an executor thread.
 */
RILL_API rill_err_t rill_sup_dump(rill_system_t *sys, rill_aid_t sup, int dot, char **out);

#ifdef __cplusplus
}
#endif

#endif /* RILL_SUPERVISOR_H */
