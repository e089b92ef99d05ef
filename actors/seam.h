/*
 * The seam between the actor runtime and the layers above it (streams/,
 * supervision/, kafka/): the one internal header of actors/ they include.
 * It declares exactly what they use of the runtime beyond the public API,
 * so the runtime's structs (actor_int.h) stay private to actors/. It also
 * brings the helpers every layer shares (util.h) and the registry of
 * internal message types (msgtypes.h).
 */
#ifndef RILL_SEAM_H
#define RILL_SEAM_H

#include <stddef.h>
#include <stdint.h>

#include <rill/actor.h>

#include "msgtypes.h"
#include "util.h"

struct ev_loop;
typedef struct rill__executor rill__executor_t;

/* The executor the calling thread runs, or NULL (calls that wait refuse
 * to run on an executor). */
extern _Thread_local rill__executor_t *rill__tls_exec;

/* Clocks read at most once per actor turn, for what is measured per
 * record (latencies): the first call in a turn reads the clock, the
 * others in the same turn get that reading. Off an executor, or outside
 * any turn, every call reads. Monotonic, in ns; wall clock (the epoch, as
 * Kafka's record timestamps), in ms. */
int64_t rill__turn_now_ns(void);
int64_t rill__turn_wall_ms(void);

/* Fill an exit reason; the text is formatted into e->text (truncated). */
void rill__exit_set(rill_exit_t *e, rill_exit_kind_t kind, rill_err_t code, const char *fmt, ...)
    RILL_PRINTF(4, 5);

/* Hold `name` as restarting (RILL_EEXIST if a live actor has it): lookups
 * find nothing, sends by name get RILL_ERESTARTING, and the next spawn
 * with that name takes it over. */
rill_err_t rill__names_hold_restarting(rill_system_t *sys, const char *name);
/* Drop a restarting hold (no-op if the name belongs to an actor). */
void rill__names_release_restarting(rill_system_t *sys, const char *name);
/* Ask an actor to stop on behalf of `from`: an actor that traps exits gets
 * RILL_MSG_EXIT (reason SHUTDOWN) and decides; others stop (SHUTDOWN). */
rill_err_t rill__request_shutdown(rill_system_t *sys, rill_aid_t to, rill_aid_t from);
/* Record the restart count shown by rill_actor_stats. */
void rill__actor_set_restarts(rill_system_t *sys, rill_aid_t aid, uint32_t restarts);

/* In a terminate hook: hand every message still in the mailbox to fn
 * (which may take its payload), then release it (not a dead letter). */
void rill__ctx_drain_mailbox(rill_ctx_t *ctx, void (*fn)(void *opaque, rill_msg_t *m),
                             void *opaque);
/* The libev loop of the calling actor's executor (actor context only). */
struct ev_loop *rill__ctx_loop(rill_ctx_t *ctx);

/* rill_spawn, with the new actor tagged with what kind of actor it is (an
 * address the upper layer chooses), for rill__actor_tag. */
rill_err_t rill__spawn_tagged(rill_system_t *sys, const rill_spawn_opts_t *opts, const void *tag,
                              rill_aid_t *aid);
/* The tag of a live actor (NULL if it set none yet) into *tag: RILL_OK,
 * or RILL_ESTOPPED if there is no such actor. @locality any thread. */
rill_err_t rill__actor_tag(rill_system_t *sys, rill_aid_t aid, const void **tag);
/* Claim one of at most `max` places of class `which` (0 or 1) on a live
 * actor, for layers above (a stage's inputs and outputs, claimed when they
 * are connected): RILL_OK, RILL_EFULL (all `max` are taken) or
 * RILL_ESTOPPED (no such actor). Unclaim gives one back (no-op for an
 * actor that is gone). @locality any thread. */
rill_err_t rill__actor_claim(rill_system_t *sys, rill_aid_t aid, int which, uint32_t max);
void rill__actor_unclaim(rill_system_t *sys, rill_aid_t aid, int which);

/* ---- small blocks (actors/blocks.c) ---- */

/* A block of size bytes (16-byte aligned), recycled through the calling
 * executor's pool when there is one and size is at most 1008 bytes; else
 * malloc'ed. For what a pipeline makes and frees per record. NULL without
 * memory. rill__block_free() takes it back on any thread, at any time
 * (also after the system is destroyed); NULL is ignored. */
void *rill__block_alloc(size_t size);
void rill__block_free(void *p);

/* ---- origins (actors/origin.c) ---- */

/* A leaf origin of `source`, one reference: when it is settled, source
 * gets (key, value, ok) in a RILL__MSG_SETTLED message (payload
 * rill__settled_t). NULL without memory or for bad arguments. */
rill_origin_t *rill__origin_new(rill_system_t *sys, rill_aid_t source, uint64_t key, int64_t value);
/* One origin standing for both acc and o (each one reference, taken over):
 * settling it settles both the same way. Either may be NULL. Returns NULL
 * without memory, and then acc and o are untouched (the caller still holds
 * both). */
rill_origin_t *rill__origin_join(rill_origin_t *acc, rill_origin_t *o);

/* The source and (key, value) of a leaf origin: 1, or 0 for NULL or a
 * group. The origin stays the caller's. */
int rill__origin_leaf(const rill_origin_t *o, rill_system_t **sys, rill_aid_t *source,
                      uint64_t *key, int64_t *value);

/* Call fn for every leaf under o (o itself if it is one); the caller's
 * reference keeps them (read them with rill__origin_leaf). 0, or -1 for
 * NULL or without memory (some leaves may have been missed then). */
int rill__origin_walk(rill_origin_t *o, void (*fn)(void *ctx, rill_origin_t *leaf), void *ctx);

/* Why a leaf was released unconfirmed, when something said so: a stage
 * failed while it held the record (BLAME: the suspect of the failure),
 * processing rejected it (REJECT: for the dead letters) or asked for it
 * again after a delay (RETRY). */
enum { RILL__VERDICT_NONE = 0, RILL__VERDICT_BLAME, RILL__VERDICT_REJECT, RILL__VERDICT_RETRY };
/* Mark every leaf under o with a verdict, a delay and a text (copied), for
 * the notice its source gets if it is settled unconfirmed; a leaf keeps
 * the first verdict it was given. The caller's reference stays its own
 * (release it afterwards). 0, or -1 for NULL or without memory. */
int rill__origin_mark(rill_origin_t *o, uint32_t verdict, uint32_t delay_ms, const char *text);
/* The destructor of a RILL__MSG_SETTLED payload (frees the texts). */
void rill__settled_free(void *payload);

/* What a RILL__MSG_SETTLED message carries. */
typedef struct rill__settle_note {
    uint64_t key;
    int64_t value;
    int ok; /* 1: confirmed; 0: released unconfirmed */
    /* Released unconfirmed (ok 0): why, if someone said (RILL__VERDICT_*),
     * a delay (RETRY) and a text (owned by the batch; NULL if none). */
    uint32_t verdict;
    uint32_t delay_ms;
    char *text;
} rill__settle_note_t;
typedef struct rill__settled {
    uint32_t n;
    rill__settle_note_t v[];
} rill__settled_t;

/* Get the system's attachment under `key` (any unique address), creating
 * it with create() on first use. Returns NULL if create fails (its errstr
 * is passed through). @locality any thread. */
void *rill__system_attachment(rill_system_t *sys, const void *key,
                              void *(*create)(char *errstr, size_t errstr_size),
                              void (*destroy)(void *ptr), char *errstr, size_t errstr_size);

#endif /* RILL_SEAM_H */
