/**
 * @file
 * A sample public header, documented the way rill's public headers must be
 * for the API reference to build without a warning (test/docs/selftest.sh
 * checks it does, and that taking one comment away fails the check).
 *
 * It has one of each construct the headers use: the export and printf
 * attribute macros, an error enum, an anonymous enum of message types, an
 * opaque type, a struct with field comments, callback types, a macro, a
 * defaults macro, functions declared over several lines, a static inline
 * function, a group of functions under one comment, and extern "C".
 */
#ifndef RILL_SAMPLE_H
#define RILL_SAMPLE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The attribute macros are defined as in rill/common.h; docs/Doxyfile
 * expands them to nothing and leaves them out of the reference, so they
 * need no doc comment. */
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

/** Every error a sample function returns. #SAMPLE_OK is zero. */
typedef enum sample_err {
    SAMPLE_OK = 0,    /**< success */
    SAMPLE_EINVAL,    /**< an argument is NULL, out of range or malformed
                           (a member comment may go on over several lines) */
    SAMPLE_EFULL,     /**< the mailbox is full; nothing was taken */
    SAMPLE_ERR__COUNT /**< number of codes, not an error */
} sample_err_t;

/** Message types below #SAMPLE_MSG_USER are the library's own. */
enum {
    /** No message: a comment above an enumerator works too. */
    SAMPLE_MSG_NONE = 0,
    SAMPLE_MSG_DOWN = 1,  /**< a monitored actor stopped */
    SAMPLE_MSG_USER = 256 /**< first type for applications */
};

/** A system of actors (opaque). */
typedef struct sample_system sample_system_t;

/**
 * Frees a message payload.
 * @locality the thread that releases the message: an executor, or the
 * caller of a send that failed.
 */
typedef void sample_dtor_fn(void *payload);

/** The message envelope, copied by value on send. */
typedef struct sample_msg {
    uint32_t type;        /**< #SAMPLE_MSG_USER and up for applications */
    void *payload;        /**< may be NULL */
    sample_dtor_fn *dtor; /**< frees @c payload; NULL if nothing to free */
    /** The sender; a comment above a field works too. */
    uint64_t from;
} sample_msg_t;

/**
 * Handles one message.
 * @param state the actor's state, as given at spawn
 * @param msg the message; its payload is freed after return
 * @return #SAMPLE_OK to continue; any other code stops the actor
 * @locality the actor's executor thread.
 */
typedef sample_err_t sample_behavior_fn(void *state, sample_msg_t *msg);

/**
 * Called with the progress of a long operation, as a function pointer type.
 * @locality the thread that called sample_wait().
 */
typedef void (*sample_progress_cb)(void *opaque, size_t done, size_t total);

/** Spawn options; a zeroed struct means the defaults. */
typedef struct sample_spawn_opts {
    sample_behavior_fn *behavior; /**< required */
    uint32_t mailbox_capacity;    /**< 0 = the system's default */
} sample_spawn_opts_t;

/** The default spawn options, as a designated initializer. */
#define SAMPLE_SPAWN_OPTS_DEFAULT                                                                  \
    {                                                                                              \
        .behavior = NULL, .mailbox_capacity = 0                                                    \
    }

/** Unbounded demand. */
#define SAMPLE_DEMAND_UNBOUNDED INT64_MAX

/** The smaller of @p a and @p b (each evaluated twice). */
#define SAMPLE_MIN(a, b) ((a) < (b) ? (a) : (b))

/**
 * A sentence describing @p err, for example "mailbox full". Never NULL.
 * @locality any thread. The string is static.
 */
RILL_API const char *sample_err2str(sample_err_t err);

/**
 * Creates a system. Returns NULL with the reason in @p errstr (at most
 * @p errstr_size bytes, NUL included) when the options are invalid.
 * @locality any thread. The caller owns the result.
 */
RILL_API sample_system_t *sample_system_new(const sample_spawn_opts_t *opts, char *errstr,
                                            size_t errstr_size);

/**
 * Sends a copy of @p msg to actor @p to. On #SAMPLE_OK the payload belongs
 * to the library; on any error it stays the caller's.
 * @locality any thread.
 */
RILL_API sample_err_t sample_send(sample_system_t *sys, uint64_t to, const sample_msg_t *msg);

/**
 * Records a failure with a formatted text and returns @p code, so a
 * behaviour can write `return sample_fail(sys, SAMPLE_EINVAL, "bad input %d", n);`.
 * @locality actor context.
 */
RILL_API sample_err_t sample_fail(sample_system_t *sys, sample_err_t code, const char *fmt, ...)
    RILL_PRINTF(3, 4);

/**
 * Waits until the system is idle, reporting progress to @p cb (may be NULL).
 * @locality any thread except an executor thread.
 */
RILL_API sample_err_t sample_wait(sample_system_t *sys, sample_progress_cb cb, void *opaque);

/**
 * Non-zero if @p msg is a user message.
 * @locality any thread.
 */
static inline int sample_msg_is_user(const sample_msg_t *msg)
{
    return msg && msg->type >= SAMPLE_MSG_USER;
}

/**
 * Links the calling actor with @p target, or removes the link: one comment
 * for a group of declarations, which Doxygen repeats for each.
 * @locality actor context.
 * @{
 */
RILL_API sample_err_t sample_link(sample_system_t *sys, uint64_t target);
RILL_API sample_err_t sample_unlink(sample_system_t *sys, uint64_t target);
/** @} */

#ifdef __cplusplus
}
#endif

#endif /* RILL_SAMPLE_H */
