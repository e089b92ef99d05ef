/*
 * Internals of the actor runtime (not installed). Shared by system.c (the
 * system), executor.c (executor threads, scheduling, reclamation),
 * registry.c (actor table, names), spawn.c (spawning and sending),
 * mailbox.c and actor.c (what runs on an actor's executor: turns, control
 * signals, stop, monitors, links, timers, ask). The layers above include
 * seam.h (included here), never this header.
 */
#ifndef RILL_ACTOR_INT_H
#define RILL_ACTOR_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include <ev.h>

#include <rill/actor.h>

#include "mailbox.h"
#include "mpsc.h"
#include "seam.h"

/* Set on messages sent by rill_reply(). */
#define RILL__MSG_F_REPLY 0x80000000u
/* Correlation ids of rill_ask_sync(): replies pass straight through. */
#define RILL__CORR_SYNC   (1ull << 63)

typedef struct rill__actor rill__actor_t;
typedef struct rill__settle_acc rill__settle_acc_t;

/* blocks.c: an executor's pools of small blocks (see rill__block_alloc);
 * freed once the executor is joined, when blocks still out are left to
 * go to free(). */
typedef struct rill__blocks rill__blocks_t;
rill__blocks_t *rill__blocks_new(void);
void rill__blocks_free(rill__blocks_t *b);

/* origin.c: the per-executor collection of settle notices. */
rill__settle_acc_t *rill__settle_acc_new(void);
void rill__settle_flush(rill__settle_acc_t *acc);
void rill__settle_acc_free(rill__settle_acc_t *acc);

/* ---- control signals ------------------------------------------------ */

typedef enum rill__ctrl_kind {
    CTRL_MSG = 1,      /* rill_signal(): deliver msg to the behaviour */
    CTRL_STOP,         /* stop with `exit` (SHUTDOWN or KILLED) */
    CTRL_MONITOR,      /* `who` monitors this actor with `ref` */
    CTRL_DEMONITOR,    /* `who` dropped monitor `ref` */
    CTRL_MONITORING,   /* this actor now monitors `who` with `ref` (spawn opts) */
    CTRL_LINK,         /* `who` linked to this actor */
    CTRL_UNLINK,       /* `who` unlinked */
    CTRL_DOWN,         /* monitored `who` stopped with `exit` (monitor `ref`) */
    CTRL_EXIT,         /* linked `who` stopped with `exit` */
    CTRL_TIMER,        /* a timer fired; the node is embedded in the timer */
    CTRL_ASK_TIMEOUT,  /* an ask timed out; the node is embedded in the ask */
    CTRL_SHUTDOWN_REQ, /* `who` (a supervisor) asks us to stop: trappable */
} rill__ctrl_kind_t;

typedef struct rill__ctrl {
    rill__node_t node; /* first: the queue hands back this pointer */
    rill__ctrl_kind_t kind;
    int embedded; /* owned by a timer/ask, not freed after handling */
    rill_aid_t who;
    uint64_t ref;
    rill_exit_t exit;
    rill_msg_t msg;
} rill__ctrl_t;

/* ---- per-actor bookkeeping on its executor -------------------------- */

typedef struct rill__peer {
    rill_aid_t aid;
    uint64_t ref; /* monitor ref; 0 for links */
} rill__peer_t;

typedef struct rill__peers {
    rill__peer_t *v;
    uint32_t n, cap;
} rill__peers_t;

typedef struct rill__timer {
    ev_timer w;
    rill__ctrl_t ctrl; /* CTRL_TIMER, pushed when the timer fires */
    rill__actor_t *actor;
    uint64_t id;
    int queued;    /* ctrl is in the control queue */
    int cancelled; /* free when ctrl comes out of the queue */
    int repeating;
    struct rill__timer *next;
} rill__timer_t;

typedef struct rill__ask {
    ev_timer w;
    rill__ctrl_t ctrl; /* CTRL_ASK_TIMEOUT */
    rill__actor_t *actor;
    uint64_t corr;
    int queued, done;
    struct rill__ask *next;
} rill__ask_t;

struct rill_ctx {
    rill__actor_t *actor;
    rill_system_t *sys;
};

/* ---- actor ---------------------------------------------------------- */

struct rill__actor {
    rill__mailbox_t mbox;
    rill__mpsc_t ctrl;
    /* 1 while the actor is queued to run or running; whoever sets it from
     * 0 queues the actor on its executor. */
    _Alignas(64) _Atomic int scheduled;
    rill__node_t run_node; /* in the executor's inbox or run list */
    rill__actor_t *run_next;

    rill_system_t *sys;
    rill__executor_t *exec;
    rill_aid_t aid;
    /* Set (seq_cst) when the actor starts stopping: executor-thread senders
     * check it instead of the slot's users count (see rill__actor_acquire).
     * Next to aid, which they read with it: on the line of the counters
     * below, the turn's store to `processed` took it away from them. */
    _Atomic int dead;
    uint32_t slot_idx;
    char *name;

    rill_behavior_fn *behavior;
    rill_init_fn *init;
    rill_terminate_fn *terminate;
    void *state;
    uint32_t batch;
    int trap_exits;

    /* Executor-thread-only state. */
    rill_ctx_t ctx;
    int started;
    int stopping;
    /* A message taken from the mailbox and not yet delivered: control
     * signals that were sent before it go first (see actor_turn). */
    int has_held;
    rill_msg_t held;
    uint32_t turns;
    rill_exit_t exit;
    rill__peers_t watchers; /* who monitors me (aid, ref) */
    rill__peers_t monitors; /* whom I monitor (aid, ref) */
    rill__peers_t links;
    rill__timer_t *timers;
    uint64_t next_timer_id;
    rill__ask_t *asks;
    uint64_t next_corr;

    /* Reclamation: retired actors wait here until every executor has
     * passed a quiescent point (see rill__retire). */
    rill__actor_t *limbo_next;
    uint64_t *qs_snap;

    /* Counters readable from any thread (relaxed: statistics only). */
    _Atomic uint64_t processed;
    _Atomic uint64_t refused;
    _Atomic uint32_t hwm;
    _Atomic uint32_t restarts;
    /* What kind of actor this is, for layers above (a stage's kind), set
     * by the actor itself (rill__ctx_set_tag); read from any thread. */
    _Atomic(const void *) tag;
    /* Places claimed on the actor by layers above (a stage's inputs and
     * outputs: rill__actor_claim); read and changed from any thread. */
    _Atomic uint32_t claims[2];
};

/* ---- actor table ---------------------------------------------------- */

/* ALIVE -> STOPPING (sends fail; the terminate hook runs) -> DEAD (done,
 * watchers told) -> FREE (reaped, reusable). */
enum { SLOT_FREE = 0, SLOT_ALIVE = 1, SLOT_DEAD = 2, SLOT_STOPPING = 3 };

/*
 * One entry of the actor table. An aid is (generation << 32 | index).
 *
 * Two ways to keep a sender from touching freed memory:
 * - Executor threads (the hot path) take no lock and no count: an actor's
 *   memory is freed only after every executor of the system has passed a
 *   quiescent point (between turns, or asleep) since the actor retired
 *   (quiescent-state-based reclamation, as in RCU). A sender on an executor
 *   reads slot->actor, checks the actor's own aid and its dead flag, and
 *   sends; anything that lands after the actor's final drain is released
 *   when the memory is reaped.
 * - Other threads bracket their access with users++ / users--; the
 *   stopping actor marks the slot DEAD and waits for users to drain.
 */
typedef struct rill__slot {
    _Atomic uint32_t gen;
    _Atomic uint32_t state;
    _Atomic uint32_t users;
    uint32_t next_free;
    rill__actor_t *_Atomic actor;
} __attribute__((aligned(64)))
rill__slot_t; /* one per cache line: senders of different actors must not false-share */

#define RILL__CHUNK_SHIFT 12
#define RILL__CHUNK_SIZE  (1u << RILL__CHUNK_SHIFT)
#define RILL__MAX_CHUNKS  4096u

/* ---- executor ------------------------------------------------------- */

struct rill__executor {
    rill_system_t *sys;
    int index;
    pthread_t thread;
    int thread_started;
    struct ev_loop *loop;
    ev_async wake;
    ev_idle idle;
    rill__mpsc_t inbox; /* actors made runnable from other threads */
    /* Run list, owner thread only. */
    rill__actor_t *run_head, *run_tail;
    int idle_active;
    /* Quiescent-state counter: even while the executor runs, odd while it
     * sleeps in libev; it changes at every point where the executor holds
     * no actor pointer (between turns, around sleeping). */
    _Alignas(64) _Atomic uint64_t qs;
    ev_prepare prepare;
    ev_check check;
    ev_timer reap_timer;                    /* retries reaping while the limbo list is not empty */
    rill__actor_t *limbo_head, *limbo_tail; /* owner thread only */
    /* Settle notices of origins released on this thread, sent at the end
     * of each actor turn (origin.c); owner thread only. */
    rill__settle_acc_t *settle;
    /* Small blocks made and freed per record (blocks.c). */
    rill__blocks_t *blocks;
    /* Adaptive idle spin (executor.c), owner thread only: the average idle
     * gap, idle periods so far, and when the executor went to sleep (0
     * while it runs). */
    int64_t gap_avg_ns;
    uint64_t idle_periods;
    int64_t idle_since_ns;
    /* Time spent running actors (not sleeping, not spinning idle), and
     * when the executor's thread started: written by the owner, read by
     * rill_executor_stats(). */
    _Atomic uint64_t busy_ns;
    _Atomic int64_t started_ns;
    /* Actor turns run so far, and the clocks read in the turn numbered
     * *_turn (rill__turn_now_ns, rill__turn_wall_ms); owner thread only. */
    uint64_t turn_seq, mono_turn, wall_turn;
    int64_t mono_ns, wall_ms;
};

/* ---- name registry -------------------------------------------------- */

typedef struct rill__name_entry {
    char *name;
    rill_aid_t aid;
    struct rill__name_entry *next;
} rill__name_entry_t;

/* ---- system --------------------------------------------------------- */

enum { SYS_NEW = 0, SYS_RUNNING, SYS_STOPPING, SYS_STOPPED };

struct rill_system {
    rill_system_opts_t opts;
    int nexec;
    rill__executor_t *execs;
    _Atomic int state;
    _Atomic uint32_t next_exec;

    /* Actor table: chunks are allocated on demand and never move. */
    rill__slot_t *_Atomic chunks[RILL__MAX_CHUNKS];
    pthread_mutex_t slots_lock; /* spawn/free bookkeeping */
    uint32_t slots_used;        /* indexes handed out so far */
    uint32_t free_head;         /* index + 1 of the first free slot, 0 = none */

    pthread_mutex_t names_lock;
    rill__name_entry_t *names[256];

    /* Actors alive; stop waits for 0. */
    pthread_mutex_t alive_lock;
    pthread_cond_t alive_cond;
    uint32_t alive;

    _Atomic uint64_t dead_letters;
    _Atomic uint64_t spawned;
    _Atomic uint64_t next_ref;

    /* Things other layers hang off the system (the Kafka layer's embedded
     * broker), freed after the executors are joined. */
    pthread_mutex_t attach_lock;
    struct {
        const void *key;
        void *ptr;
        void (*destroy)(void *ptr);
    } attach[8];
};

/* Largest mailbox capacity (system default or per actor). */
#define RILL__MAX_MAILBOX (1u << 24)

/* The smallest power of two >= v (mailbox capacities). */
static inline uint32_t rill__round_pow2(uint32_t v)
{
    uint32_t p = 1;
    while (p < v)
        p <<= 1;
    return p;
}

/* executor.c */
void rill__schedule_slow(rill__actor_t *a);
/* Queue an actor to run, unless it is queued already. Inline up to the
 * first check: every send calls it. */
static inline void rill__schedule(rill__actor_t *a)
{
    /* seq_cst load: pairs with the executor's seq_cst clear (see the top
     * of executor.c). */
    if (atomic_load_explicit(&a->scheduled, memory_order_seq_cst))
        return;
    rill__schedule_slow(a);
}
/* Put a gone actor in its executor's limbo list, to be reaped once every
 * executor has passed a quiescent point. @locality the actor's executor. */
void rill__retire(rill__actor_t *a);
/* Set up executor `index` of sys; returns 0, or -1 if libev could not
 * create its loop (errno says why). */
int rill__executor_init(rill__executor_t *e, rill_system_t *sys, int index);
/* Start the executor's thread; returns 0 or -1. */
int rill__executor_start(rill__executor_t *e);
/* Wake the executor's thread and join it (no-op if it never started). */
void rill__executor_join(rill__executor_t *e);
/* Reap every retired actor of a joined executor. */
void rill__executor_reap_all(rill__executor_t *e);

/* registry.c */
rill__actor_t *rill__actor_acquire(rill_system_t *sys, rill_aid_t aid, rill__slot_t **slotp);
/* Inline: every send from a non-executor thread calls it. */
static inline void rill__actor_release(rill__slot_t *slot)
{
    /* release: our accesses to the actor happen before it may be freed. */
    if (slot)
        atomic_fetch_sub_explicit(&slot->users, 1, memory_order_release);
}
rill__slot_t *rill__slot_of(rill_system_t *sys, uint32_t idx);
/* Claim a free slot for a; returns its index, or UINT32_MAX. */
uint32_t rill__slot_claim(rill_system_t *sys, rill__actor_t *a, rill_aid_t *aid);
/* After the actor is gone: new generation, back on the free list. */
void rill__slot_free(rill_system_t *sys, uint32_t idx);
/* Reserve `name` (the actor's own copy, kept by the entry) with aid 0
 * until the actor has its aid: RILL_OK, RILL_EEXIST or RILL_ENOMEM; a
 * restarting hold is taken over. */
rill_err_t rill__names_reserve(rill_system_t *sys, char *name);
/* Point a name reserved with aid 0 at the actor. */
void rill__names_bind(rill_system_t *sys, const char *name, rill_aid_t aid);
void rill__names_remove(rill_system_t *sys, const char *name, rill_aid_t aid);
/* Like rill_lookup, but tells a restarting hold (RILL__AID_RESTARTING)
 * apart from no actor. */
rill_aid_t rill__names_lookup(rill_system_t *sys, const char *name);
/* Free the table's chunks and the names (rill_system_destroy). */
void rill__registry_free(rill_system_t *sys);

/* spawn.c */
/* Push a control node to a live actor; RILL_ESTOPPED if gone (node not
 * taken). */
rill_err_t rill__ctrl_send(rill_system_t *sys, rill_aid_t to, rill__ctrl_t *c);
rill__ctrl_t *rill__ctrl_new(rill__ctrl_kind_t kind, rill_aid_t who, uint64_t ref,
                             const rill_exit_t *exit);
/* A message is done with: its payload freed, its origin released
 * unconfirmed (counted as a dead letter if it was never delivered).
 * Inline up to the common case, a message with neither. */
void rill__release_msg_slow(rill_system_t *sys, rill_msg_t *msg, int dead_letter);
static inline void rill__release_msg(rill_system_t *sys, rill_msg_t *msg, int dead_letter)
{
    if (msg->dtor || msg->origin || dead_letter)
        rill__release_msg_slow(sys, msg, dead_letter);
}
/* The actor is gone: free its slot now and its memory once no executor
 * can still be looking at it. */
/* The end of an actor, in two steps: uncount (rill_system_stats' alive
 * drops, rill_system_stop may go on) before its watchers and links hear of
 * the end, so whoever heard it finds it neither alive nor counted; then
 * finished (slot freed, actor retired to its executor) after. */
void rill__actor_uncount(rill__actor_t *a);
void rill__actor_finished(rill__actor_t *a);
void rill__actor_free(rill__actor_t *a);
/* Release what stragglers left in a retired actor's queues, then free it
 * (actor.c). */
void rill__actor_reap(rill__actor_t *a);

/* A name held for an actor that is waiting to be restarted: lookups find
 * nothing, sends by name get RILL_ERESTARTING, and the next spawn with that
 * name takes it over (see rill__names_hold_restarting in seam.h). */
#define RILL__AID_RESTARTING ((rill_aid_t){1})

/* actor.c */
/* Run one turn; returns 1 if the actor handled something (keep it queued),
 * 0 if it found nothing (unschedule), -1 if it stopped (and was freed). */
int rill__actor_turn(rill__actor_t *a);

#endif /* RILL_ACTOR_INT_H */
