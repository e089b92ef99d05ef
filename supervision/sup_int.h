/*
 * Internals of the supervision layer (not installed), shared by spec.c
 * (spec checks and defaults), restart.c (intensity and backoff), sup.c
 * (the supervisor actor) and api.c (the functions other threads call,
 * which talk to a supervisor by ask).
 */
#ifndef RILL_SUP_INT_H
#define RILL_SUP_INT_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include <rill/supervisor.h>

#include "../actors/seam.h"

typedef enum { C_STOPPED = 0, C_RUNNING, C_STOPPING, C_WAITING } rill__sup_cstate_t;

typedef struct rill__sup_child {
    const rill_child_spec_t *spec;
    void *arg; /* simple_one_for_one: per-child arg */
    char id[64];
    rill_aid_t aid;
    rill__sup_cstate_t state;
    uint32_t restarts;
    uint32_t consecutive; /* for backoff */
    int64_t started_ms;
    uint32_t next_delay_ms;
    uint64_t gen;       /* bumps at every start/stop: stale timers are ignored */
    rill_timer_t timer; /* backoff or kill timer */
    int timer_armed;
    rill_exit_t last_exit;
    int in_group;       /* part of the group being stopped for a restart */
    int remove_on_stop; /* temporary child or terminate_child */
    /* a terminate_child request waiting for this child's exit */
    rill_aid_t reply_to;
    uint64_t reply_corr;
} rill__sup_child_t;

typedef enum { P_RUNNING = 0, P_GROUP, P_SHUTDOWN } rill__sup_phase_t;

typedef struct rill__sup_boot {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int done;
    rill_err_t err;
    char text[256];
} rill__sup_boot_t;

typedef struct rill__sup {
    const rill_sup_spec_t *spec;
    rill_system_t *sys;
    rill_aid_t self;
    char name[64];
    rill__sup_child_t *c;
    size_t n, cap;
    rill__sup_phase_t phase;
    int64_t *restarts_at; /* ring of the last intensity+1 restart times */
    uint32_t restarts_seen;
    uint64_t rng;
    /* group restart: who failed (index), restart after the group stopped */
    size_t group_from;
    uint32_t group_delay_ms;
    /* shutdown: what to do when all children are down */
    int escalate;
    rill_exit_t escalate_reason;
    rill_aid_t stop_reply_to;
    uint64_t stop_corr;
    rill__sup_boot_t *boot; /* rill_sup_start waits on it; NULL for nested */
    rill_aid_t parent;      /* nested: told when our start ended (RILL__SUP_BOOTED) */
    int booting;            /* still starting the children of the spec */
    size_t boot_next;       /* the next spec child to start */
    uint32_t dyn_seq;       /* simple_one_for_one: numbers the children's ids */
} rill__sup_t;

/* Status replies (RILL__SUP_REPLY_STATUS) carry the error code in flags
 * (bits 0..23) and a value (an aid) in arg. */
#define RILL__SUP_STATUS_OF(m) ((rill_err_t)((m)->flags & 0xffffffu))

/* spec.c */
/* The quiet time after which a child's backoff starts over. */
uint32_t rill__sup_backoff_reset_ms(const rill_sup_spec_t *sp);
/* The restarts allowed and their period, defaults applied. */
uint32_t rill__sup_intensity(const rill_sup_spec_t *sp);
uint32_t rill__sup_period_ms(const rill_sup_spec_t *sp);
/* How long a RILL_SHUTDOWN_TIMEOUT child gets before it is killed. */
uint32_t rill__sup_shutdown_ms(const rill_child_spec_t *sp);

/* restart.c */
/* Record a restart; returns 0 when the intensity is exceeded. */
int rill__sup_intensity_ok(rill__sup_t *s);
/* The delay before c's next restart (0: at once). */
uint32_t rill__sup_backoff_delay(rill__sup_t *s, rill__sup_child_t *c);

/* sup.c */
/* Spawn a supervisor actor for spec. boot (rill_sup_start) is told when
 * the start ended; a nested supervisor tells link_to instead. */
rill_err_t rill__sup_spawn(rill_system_t *sys, const rill_sup_spec_t *spec, const char *name,
                           rill_aid_t link_to, rill__sup_boot_t *boot, rill_aid_t *aid);

#endif /* RILL_SUP_INT_H */
