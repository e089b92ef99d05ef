/**
 * @file
 * rill: error codes and the export macro shared by every layer.
 *
 * Error handling follows librdkafka: functions that construct something take
 * `char *errstr, size_t errstr_size` and write a sentence saying what went
 * wrong; everything else returns a rill_err_t that rill_err2str() turns into
 * words.
 */
#ifndef RILL_COMMON_H
#define RILL_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include <rill/version.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The export and printf attribute macros: docs/Doxyfile expands them to
 * nothing and leaves them out of the reference. */
#if defined(RILL_BUILDING) && defined(__GNUC__)
#define RILL_API __attribute__((visibility("default")))
#else
#define RILL_API
#endif

#if defined(__GNUC__)
#define RILL_PRINTF(fmt_idx, arg_idx) __attribute__((format(printf, fmt_idx, arg_idx)))
#else
#define RILL_PRINTF(fmt_idx, arg_idx)
#endif

/**
 * Every error rill returns. RILL_OK is zero, so `if (err)` tests for failure.
 * The numeric values are stable within a major version.
 */
typedef enum rill_err {
    RILL_OK = 0,      /**< success */
    RILL_EINVAL,      /**< an argument is NULL, out of range or malformed */
    RILL_ENOMEM,      /**< out of memory */
    RILL_EFULL,       /**< a bounded queue (mailbox) is full; nothing was taken */
    RILL_ESTOPPED,    /**< the target is stopped or stopping */
    RILL_ETIMEDOUT,   /**< a deadline passed before the operation finished */
    RILL_ENOENT,      /**< no such thing: topic, broker, actor name */
    RILL_EEXIST,      /**< it already exists: topic, actor name */
    RILL_ESTATE,      /**< the call is not valid in the current state */
    RILL_EKAFKA,      /**< librdkafka reported an error; errstr says which */
    RILL_EIO,         /**< an operating-system call failed; errstr says which */
    RILL_ERESTARTING, /**< the named actor is waiting to be restarted by its supervisor */
    RILL_EOS,         /**< the end of a stream: not a failure (a pull source returns it) */
    RILL_ERR__COUNT   /**< number of codes, not an error */
} rill_err_t;

/**
 * A sentence describing err, e.g. "mailbox full". Never NULL; unknown codes
 * give "unknown error".
 * @locality any thread. The string is static.
 */
RILL_API const char *rill_err2str(rill_err_t err);

/**
 * The symbolic name of err, e.g. "RILL_EFULL". Never NULL.
 * @locality any thread. The string is static.
 */
RILL_API const char *rill_err_name(rill_err_t err);

/**
 * The library's version string, e.g. "0.1.0": the version of the library
 * actually loaded, which may differ from RILL_VERSION_STR in the headers the
 * caller was compiled against.
 * @locality any thread.
 */
RILL_API const char *rill_version_str(void);

/** @name Logging
 * rill's own log lines and its Kafka clients' (librdkafka's) go through
 * one process-wide hook.
 * @{ */

/** Severities, as syslog's (and librdkafka's log levels). */
typedef enum rill_log_level {
    RILL_LOG_EMERG = 0, /**< unusable */
    RILL_LOG_ALERT,     /**< act at once */
    RILL_LOG_CRIT,      /**< critical */
    RILL_LOG_ERR,       /**< an error: something failed */
    RILL_LOG_WARNING,   /**< something went wrong and was dealt with (the default level) */
    RILL_LOG_NOTICE,    /**< normal but worth noting */
    RILL_LOG_INFO,      /**< information */
    RILL_LOG_DEBUG      /**< debugging (a client with "debug" set) */
} rill_log_level_t;

/**
 * A log hook: level, facility ("kafka.consumer", "state.table",
 * "rdkafka.FAIL" for librdkafka's facility FAIL, ...) and one line of
 * text without a newline. Called on whichever thread logs (an executor,
 * a librdkafka thread, a store's thread): it must be quick and must not
 * call back into rill.
 * @locality any thread.
 */
typedef void rill_log_fn(void *opaque, rill_log_level_t level, const char *facility,
                         const char *text);

/**
 * Send the lines at or above the log level (rill_log_set_level) to fn
 * with opaque, instead of the default writer (stderr: `rill LEVEL
 * [FACILITY]: TEXT`); NULL fn: back to the default writer. Lines of
 * Kafka clients made with "debug" set reach fn whatever the level.
 * @locality any thread (lines logged at the same time go to the old hook
 * or the new one).
 */
RILL_API void rill_log_set(rill_log_fn *fn, void *opaque);

/** The least severe level passed on (default RILL_LOG_WARNING); out of
 * range: unchanged. Returns the level before.
 * @locality any thread. */
RILL_API rill_log_level_t rill_log_set_level(rill_log_level_t level);

/** "error", "warning", ...; "unknown" out of range. Never NULL.
 * @locality any thread. The string is static. */
RILL_API const char *rill_log_level_name(rill_log_level_t level);

/** Log a line through the hook (rill's own lines come this way; an
 * application may use it too). NULL facility: "app".
 * @locality any thread. */
RILL_API void rill_log(rill_log_level_t level, const char *facility, const char *fmt, ...)
    RILL_PRINTF(3, 4);

/** @} */

/** @name Latency histograms
 * What the Kafka layer's stats measure latencies with (commit, end to
 * end, delivery), in Prometheus's shape.
 * @{ */

/** Latency histogram buckets: upper bounds in seconds, see rill_hist_bounds(). */
#define RILL_HIST_BUCKETS 20

/** A latency histogram (Prometheus style, non-cumulative buckets; the last is +Inf).
 * Written by one thread; read from snapshots (stats calls copy it). */
typedef struct rill_hist {
    uint64_t count;                      /**< observations */
    uint64_t sum_ns;                     /**< their sum, in nanoseconds */
    uint64_t buckets[RILL_HIST_BUCKETS]; /**< observations per bucket (not cumulative) */
} rill_hist_t;

/** The buckets' upper bounds in seconds: RILL_HIST_BUCKETS - 1 finite values, ascending (the last
 * bucket is +Inf). @locality any thread. */
RILL_API const double *rill_hist_bounds(void);

/** Record one observation of ns nanoseconds (NULL: no-op). @locality the histogram's one writer. */
RILL_API void rill_hist_record(rill_hist_t *h, uint64_t ns);

/** The q-quantile (0 <= q <= 1) in seconds, interpolated linearly inside its bucket (the +Inf
 * bucket answers the last finite bound); 0 for an empty histogram or NULL. @locality any thread. */
RILL_API double rill_hist_quantile(const rill_hist_t *h, double q);

/** Add b's observations to a (merging snapshots). @locality any thread. */
RILL_API void rill_hist_add(rill_hist_t *a, const rill_hist_t *b);

/** @} */

/** Produce to the partition chosen by the key (librdkafka's partitioner). */
#define RILL_PARTITION_ANY ((int32_t)-1)

#ifdef __cplusplus
}
#endif

#endif /* RILL_COMMON_H */
