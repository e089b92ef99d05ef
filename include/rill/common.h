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

/** Produce to the partition chosen by the key (librdkafka's partitioner). */
#define RILL_PARTITION_ANY ((int32_t)-1)

#ifdef __cplusplus
}
#endif

#endif /* RILL_COMMON_H */
