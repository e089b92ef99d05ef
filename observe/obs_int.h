/*
 * The observer's internals (not installed): what it watches
 * (observer.c), one snapshot of it all taken per request (snap.c), and
 * the renderings of a snapshot (prom.c: Prometheus text; status.c: the
 * status JSON and the tree). A snapshot is taken through the public stats
 * calls only, so observing adds nothing to any hot path.
 */
#ifndef RILL_OBS_INT_H
#define RILL_OBS_INT_H

#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <rill/observe.h>

#define OBS_MAX       64  /* pipelines, roots, stores, tables */
#define OBS_MAX_PARTS 256 /* partitions shown per Kafka source */
#define OBS_MAX_KIDS  256 /* children shown per supervisor */
#define OBS_MAX_DEPTH 8   /* supervisor levels shown */

/* ---- a growing string -------------------------------------------------- */

typedef struct obs_buf {
    char *s;
    size_t len, cap;
    int oom; /* an allocation failed: the text is cut */
} obs_buf_t;

void obs_printf(obs_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* s as a JSON string, quotes included. */
void obs_json_str(obs_buf_t *b, const char *s);
/* s as a Prometheus label value (backslash, quote and newline escaped). */
void obs_label(obs_buf_t *b, const char *s);
/* Takes the text (NUL-terminated) out of b: RILL_ENOMEM if it was cut. */
rill_err_t obs_take(obs_buf_t *b, char **out, size_t *len);

/* ---- what is watched ---------------------------------------------------- */

/* Shared by the observer and its watcher actor (which monitors the root
 * supervisors): whichever lets go last frees it. */
typedef struct obs_watch {
    pthread_mutex_t lock;
    int refs;
    struct {
        rill_aid_t aid;
        int down;           /* it ended */
        rill_exit_t reason; /* why */
    } roots[OBS_MAX];
    int nroots;
} obs_watch_t;

struct rill_observer {
    rill_system_t *sys;
    char service[64];
    pthread_mutex_t lock; /* the lists and prev_busy */
    rill_pipeline_t *pipes[OBS_MAX];
    int npipes;
    char root_names[OBS_MAX][64];
    rill_store_t *stores[OBS_MAX];
    char store_names[OBS_MAX][48];
    int nstores;
    rill_table_t *tables[OBS_MAX];
    char table_names[OBS_MAX][48];
    int ntables;
    obs_watch_t *watch;
    rill_aid_t watcher;
    /* Executor busy time at the last status, for a ratio over the interval. */
    uint64_t *prev_busy, *prev_up;
    int nexec;
};

/* ---- one snapshot ------------------------------------------------------- */

typedef struct obs_stage {
    rill_stage_info_t info;
    int have_actor; /* astats valid: the stage runs now */
    rill_actor_stats_t astats;
    int is_consumer, have_cs;
    rill_consumer_stats_t cs;
    rill_partition_stats_t *parts;
    size_t nparts;
    int is_producer, have_ps;
    rill_producer_stats_t ps;
} obs_stage_t;

typedef struct obs_pipe {
    rill_pipeline_info_t info;
    int ended; /* res valid */
    rill_pipeline_result_t res;
    obs_stage_t *stages;
    int nstages;
} obs_pipe_t;

typedef struct obs_node {
    char id[64];
    rill_aid_t aid;
    int supervisor, running, restarting;
    uint32_t restarts;
    uint32_t next_delay_ms;
    rill_exit_t last_exit;
    struct obs_node *kids;
    size_t nkids;
} obs_node_t;

typedef struct obs_root {
    char name[64];
    rill_aid_t aid;
    int down;
    rill_exit_t reason;
    obs_node_t *kids;
    size_t nkids;
} obs_root_t;

typedef struct obs_store {
    char name[48];
    rill_store_stats_t st;
    int ok;
} obs_store_t;

typedef struct obs_table {
    char name[48];
    rill_table_stats_t st;
    int ok;
} obs_table_t;

typedef struct obs_snap {
    int64_t time_ms; /* wall clock */
    rill_system_stats_t sys;
    int nexec;
    rill_executor_stats_t *exec;
    double *busy_ratio; /* since the previous status, -1 unknown */
    obs_pipe_t pipes[OBS_MAX];
    int npipes;
    obs_root_t roots[OBS_MAX + OBS_MAX]; /* watched roots, then supervised pipelines' */
    int nroots;
    obs_store_t stores[OBS_MAX];
    int nstores;
    obs_table_t tables[OBS_MAX];
    int ntables;
    int live, ready;
    char live_reason[320], ready_reason[320];
} obs_snap_t;

/* What to take (a tree walk and partitions cost asks). */
enum {
    OBS_SNAP_TREE = 1,
    OBS_SNAP_STAGES = 2,
    OBS_SNAP_STORES = 4,
    OBS_SNAP_EXEC = 8, /* also moves the busy ratio's interval on */
    OBS_SNAP_HEALTH = 7,
    OBS_SNAP_ALL = 15
};

obs_snap_t *obs_snap_take(rill_observer_t *obs, int what);
void obs_snap_free(obs_snap_t *s);

/* Renderings (prom.c, status.c). */
void obs_render_prom(const obs_snap_t *s, obs_buf_t *b);
void obs_render_status(const rill_observer_t *obs, const obs_snap_t *s, obs_buf_t *b);
void obs_render_tree_json(const obs_snap_t *s, obs_buf_t *b);
void obs_render_tree_dot(const obs_snap_t *s, obs_buf_t *b);

#endif /* RILL_OBS_INT_H */
