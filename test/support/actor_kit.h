/*
 * Helpers for the actor runtime tests (test_actor_*.c).
 *
 * Tests synchronise on conditions with deadlines, never on sleeps: a
 * payload tally counts destructor calls, kit_wait_* poll a condition until
 * a deadline, an event log lets actors report to the test thread (which
 * waits on it with a condvar), and a gate holds a handler until the test
 * opens it. Nothing here asserts: helpers return what happened and the test
 * asserts on its own thread (Criterion's cr_assert must not run on executor
 * threads).
 */
#ifndef RILL_TEST_ACTOR_KIT_H
#define RILL_TEST_ACTOR_KIT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <rill/actor.h>

/* Deadline for conditions that should hold within milliseconds: generous,
 * because sanitizers and parallel suites share two cores. */
#define KIT_WAIT_MS 20000

/* Message counts for stress tests: ThreadSanitizer is 5-15x slower. */
#ifdef RILL_RTEST_STANDALONE
#define KIT_SCALE(n) ((n) / 4)
#else
#define KIT_SCALE(n) (n)
#endif

/* Message types the helpers understand. */
enum {
    KIT_MSG_PING = RILL_MSG_USER + 1000, /* the recorder replies; not logged */
    KIT_MSG_RUN,                         /* the recorder runs a kit_run_t, then replies */
    KIT_MSG_APP                          /* first type left to the tests */
};

int64_t kit_now_ms(void);

/* The process's resident set, in bytes (-1 if unknown). */
long kit_rss_bytes(void);
/* Bytes the application holds on the heap now: the sanitizer allocator's
 * count under ASan or TSan (whose allocators glibc's mallinfo does not
 * see), mallinfo2 otherwise. */
long kit_heap_bytes(void);

/* ---- payloads that count their release ---------------------------- */

typedef struct kit_tally {
    atomic_long made;      /* kit_payload_new calls */
    atomic_long released;  /* kit_payload_free calls: rill's destructor */
    atomic_long reclaimed; /* kit_payload_reclaim calls: the sender took it back */
} kit_tally_t;

/* A malloc'd payload carrying value; NULL on out of memory. */
void *kit_payload_new(kit_tally_t *tally, uint64_t value);
uint64_t kit_payload_value(const void *payload);
/* The destructor to give rill (a rill_dtor_fn): counts `released`. */
void kit_payload_free(void *payload);
/* Free a payload the caller still owns (a refused send): counts `reclaimed`. */
void kit_payload_reclaim(void *payload);
/* A message of type with arg and, if tally is not NULL, a counted payload. */
rill_msg_t kit_msg(uint32_t type, uint64_t arg, kit_tally_t *tally);

/* ---- waiting on conditions ------------------------------------------ */

/* Polls until *v >= target; 1 if reached before timeout_ms, else 0. */
int kit_wait_at_least(atomic_long *v, long target, int timeout_ms);
/* Polls until cond(arg) is non-zero; 1 if it was before timeout_ms. */
int kit_wait_until(int (*cond)(void *arg), void *arg, int timeout_ms);
/* Polls until rill_alive(sys, aid) is 0; 1 if it was before timeout_ms. */
int kit_wait_dead(rill_system_t *sys, rill_aid_t aid, int timeout_ms);
/* Polls until the system's dead_letters counter reaches target. */
int kit_wait_dead_letters(rill_system_t *sys, uint64_t target, int timeout_ms);
/* rill_tell, retried (with sched_yield) while the mailbox is full, until
 * timeout_ms; returns the last result. */
rill_err_t kit_tell_retry(rill_system_t *sys, rill_aid_t to, const rill_msg_t *msg, int timeout_ms);

/* ---- an event log actors write and tests wait on ------------------- */

typedef struct kit_event {
    rill_aid_t self; /* the actor that logged it */
    uint32_t type;
    uint64_t arg;
    uint64_t corr;
    rill_aid_t from;
    int has_down; /* DOWN and EXIT: a copy of the payload */
    rill_down_t down;
    const void *payload; /* the pointer (may be dangling after the handler) */
    uint64_t value;      /* kit payloads: their value */
    int64_t at_ms;       /* kit_now_ms() when logged */
} kit_event_t;

#define KIT_LOG_MAX 4096

typedef struct kit_log kit_log_t;

kit_log_t *kit_log_new(void);
void kit_log_free(kit_log_t *log);
/* Append what msg says (from an actor callback; ctx may be NULL). Events
 * beyond KIT_LOG_MAX are counted but not kept. */
void kit_log_add(kit_log_t *log, const rill_ctx_t *ctx, const rill_msg_t *msg);
/* Waits until the log holds at least n events; 1 if it did in time. */
int kit_log_wait(kit_log_t *log, size_t n, int timeout_ms);
/* Waits until at least n events of type are logged; 1 if they were. */
int kit_log_wait_type(kit_log_t *log, uint32_t type, size_t n, int timeout_ms);
size_t kit_log_size(kit_log_t *log);
size_t kit_log_count(kit_log_t *log, uint32_t type);
/* The i-th event (i < kit_log_size), copied. */
kit_event_t kit_log_at(kit_log_t *log, size_t i);
/* The first event of type logged by `about` (the DOWN/EXIT subject when
 * has_down, else the sender); 1 and *out if found. about 0 = any. */
int kit_log_find(kit_log_t *log, uint32_t type, rill_aid_t about, kit_event_t *out);

/* ---- the recorder: a generic actor for watchers and probes --------- */

/* Behaviour whose state is a kit_log_t *: logs every message, except that
 * KIT_MSG_PING is answered with an empty reply (a fence: once rill_ask_sync
 * returns, everything sent before it was handled) and KIT_MSG_RUN runs
 * payload's kit_run_t in actor context and then replies. */
rill_err_t kit_recorder(rill_ctx_t *ctx, void *state, rill_msg_t *msg);

/* Spawn a recorder logging into log; RILL_AID_NONE on failure. */
/* Test helpers take an executor as an index, or -1 for any; KIT_EXEC turns
 * that into the spawn options' convention (RILL_EXECUTOR / _ANY). */
#define KIT_EXEC(e) ((e) < 0 ? RILL_EXECUTOR_ANY : RILL_EXECUTOR(e))

rill_aid_t kit_spawn_recorder(rill_system_t *sys, kit_log_t *log, int executor);

/* Round trip through an actor whose behaviour is kit_recorder (or that
 * answers KIT_MSG_PING with rill_reply): RILL_OK once it handled
 * everything sent before. */
rill_err_t kit_fence(rill_system_t *sys, rill_aid_t aid);

typedef void kit_run_fn(rill_ctx_t *ctx, void *arg);

/* Run fn(ctx, arg) inside recorder `aid` and wait for it to finish. */
rill_err_t kit_run_in(rill_system_t *sys, rill_aid_t aid, kit_run_fn *fn, void *arg);

/* ---- a gate that holds a handler until the test opens it ------------ */

typedef struct kit_gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int open;
    atomic_long arrived;    /* handlers that reached kit_gate_pass */
    atomic_int passed_open; /* free for the test: e.g. what kit_gate_pass returned */
} kit_gate_t;

void kit_gate_init(kit_gate_t *g);
void kit_gate_destroy(kit_gate_t *g);
void kit_gate_open(kit_gate_t *g);
/* Blocks until the gate is open (1) or timeout_ms passed (0). */
int kit_gate_pass(kit_gate_t *g, int timeout_ms);

/* ---- systems -------------------------------------------------------- */

/* rill_system_new with these options (and start if `start`); NULL on
 * failure, with the reason printed. */
rill_system_t *kit_system(int executors, uint32_t mailbox_capacity, uint32_t batch, int start);

/* Monotonic-clock condvar setup shared by the helpers. */
void kit_cond_init(pthread_cond_t *cv);
/* pthread_cond_timedwait until deadline_ms (a kit_now_ms() value). */
int kit_cond_wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t deadline_ms);

#endif /* RILL_TEST_ACTOR_KIT_H */
