/*
 * supervisor_tree: an OTP-style tree, and failures injected into it until
 * it gives up.
 *
 *   root (one_for_one, 3 restarts in 10 s, backoff 100..800 ms)
 *   ├── ingest (rest_for_one, 2 restarts in 5 s)
 *   │   ├── reader
 *   │   ├── parser
 *   │   └── writer
 *   └── pool (simple_one_for_one): worker-1, worker-2, worker-3
 *
 * A timer injects failures (or, with --interactive, you type a child's
 * name, e.g. "parser" or "pool", and Enter). After each one the program
 * prints the live tree (restart counts, backoff delays, last exits) and
 * rewrites tree.dot (render with `dot -Tpng tree.dot > tree.png`). The
 * scripted run ends the way supervision trees end when a fault does not go
 * away: the ingest subtree exceeds its intensity and escalates to root,
 * root restarts it, the fault persists, root exceeds its own intensity and
 * fails: escalation reaches the top. The scripted run checks each step
 * (only the crashed child restarted; rest_for_one took the parser's later
 * sibling along, not the reader; root ended in failure) and ends with "OK"
 * and exit status 0 only if all held (the test suite runs it).
 *
 * usage: supervisor_tree [--interactive] [--dot PATH]
 */
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <rill/rill.h>

enum { MSG_CRASH = RILL_MSG_USER };

/* ---- the workers: they do nothing but fail when told to ---- */

static rill_err_t worker_behavior(rill_ctx_t *ctx, void *state, rill_msg_t *msg)
{
    (void)state;
    if (msg->type == MSG_CRASH)
        return rill_fail(ctx, RILL_EIO, "injected fault #%" PRIu64, msg->arg);
    return RILL_OK;
}

static rill_err_t start_worker(void *arg, rill_spawn_opts_t *o)
{
    (void)arg;
    o->behavior = worker_behavior;
    return RILL_OK;
}

/* ---- a watcher that reports how root ended ---- */

typedef struct watch {
    rill_aid_t root;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int down;
    rill_exit_t reason;
} watch_t;

static rill_err_t watch_init(rill_ctx_t *ctx, void *state)
{
    watch_t *w = state;
    return rill_monitor(ctx, w->root, NULL);
}

static rill_err_t watch_behavior(rill_ctx_t *ctx, void *state, rill_msg_t *msg)
{
    watch_t *w = state;
    if (msg->type == RILL_MSG_DOWN) {
        const rill_down_t *d = msg->payload;
        pthread_mutex_lock(&w->lock);
        w->down = 1;
        w->reason = d->reason;
        pthread_cond_signal(&w->cond);
        pthread_mutex_unlock(&w->lock);
        rill_stop_self(ctx);
    }
    return RILL_OK;
}

/* ---- output ---- */

static void show(rill_system_t *sys, rill_aid_t root, const char *dot_path, const char *what)
{
    char *text = NULL;
    printf("\n== %s\n", what);
    if (rill_sup_dump(sys, root, 0, &text) == RILL_OK) {
        fputs(text, stdout);
        free(text);
    } else {
        printf("(root is gone)\n");
    }
    if (dot_path && rill_sup_dump(sys, root, 1, &text) == RILL_OK) {
        FILE *f = fopen(dot_path, "w");
        if (f) {
            fputs(text, f);
            fclose(f);
        }
        free(text);
    }
    fflush(stdout);
}

static void msleep(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL); /* pacing the demo for a human, not synchronising */
}

/* Poll a supervisor's children until check() accepts them (5 s at most:
 * a restart happens on an executor, after the crash was sent). */
typedef int check_fn(const rill_child_info_t *c, size_t n);

static int children_become(rill_system_t *sys, rill_aid_t sup, check_fn *check)
{
    for (int waited = 0; waited <= 5000; waited += 20) {
        rill_child_info_t info[8];
        size_t n = 0;
        if (rill_sup_children(sys, sup, info, 8, &n) == RILL_OK && n <= 8 && check(info, n))
            return 1;
        msleep(20);
    }
    return 0;
}

/* Step 1a: worker-2 restarted once, its siblings untouched. */
static int pool_after_worker2(const rill_child_info_t *c, size_t n)
{
    return n == 3 && c[0].running && c[0].restarts == 0 && c[1].running && c[1].restarts == 1 &&
           c[2].running && c[2].restarts == 0;
}

/* Step 1b: rest_for_one: the parser restarted, the writer (started after
 * it) stopped and started again with it, the reader untouched. */
static int ingest_after_parser(const rill_child_info_t *c, size_t n)
{
    return n == 3 && c[0].running && c[0].restarts == 0 && c[0].last_exit.text[0] == '\0' &&
           c[1].running && c[1].restarts == 1 && c[2].running &&
           c[2].last_exit.kind == RILL_EXIT_SHUTDOWN;
}

/* Crash a child by name; the pool's workers by their index. Returns what
 * the send returned. */
static rill_err_t crash(rill_system_t *sys, rill_aid_t pool, const char *name, uint64_t n)
{
    rill_msg_t m = {.type = MSG_CRASH, .arg = n};
    rill_err_t err;
    if (!strncmp(name, "worker-", 7)) {
        rill_child_info_t info[8];
        size_t count = 0, k = (size_t)atoi(name + 7);
        if (rill_sup_children(sys, pool, info, 8, &count) || k < 1 || k > count ||
            rill_aid_is_none(info[k - 1].aid))
            err = RILL_ESTOPPED;
        else
            err = rill_tell(sys, info[k - 1].aid, &m);
    } else {
        err = rill_tell_name(sys, name, &m);
    }
    printf("\n>> crash %s: %s\n", name,
           err == RILL_OK            ? "sent"
           : err == RILL_ERESTARTING ? "refused: it is waiting for its restart (RILL_ERESTARTING)"
                                     : rill_err2str(err));
    return err;
}

int main(int argc, char **argv)
{
    int interactive = 0;
    const char *dot_path = "tree.dot";
    static const struct option opts[] = {{"interactive", no_argument, NULL, 'i'},
                                         {"dot", required_argument, NULL, 'd'},
                                         {NULL, 0, NULL, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "id:", opts, NULL)) != -1) {
        if (opt == 'i')
            interactive = 1;
        else if (opt == 'd')
            dot_path = optarg;
        else {
            fprintf(stderr, "usage: supervisor_tree [--interactive] [--dot PATH]\n");
            return 2;
        }
    }

    char err[256];
    rill_system_t *sys = rill_system_new(NULL, err, sizeof(err));
    if (!sys) {
        rill_log(RILL_LOG_ERR, "supervisor_tree", "system: %s", err);
        return 1;
    }
    if (rill_system_start(sys)) {
        rill_log(RILL_LOG_ERR, "supervisor_tree", "system: cannot start");
        return 1;
    }

    rill_child_spec_t ingest_children[] = {
        {.id = "reader", .start = start_worker, .register_name = 1},
        {.id = "parser", .start = start_worker, .register_name = 1},
        {.id = "writer", .start = start_worker, .register_name = 1},
    };
    rill_sup_spec_t ingest = RILL_SUP_SPEC_DEFAULT;
    ingest.strategy = RILL_SUP_REST_FOR_ONE;
    ingest.intensity = 2;
    ingest.period_ms = 5000;
    ingest.children = ingest_children;
    ingest.n_children = 3;

    rill_child_spec_t pool_template[] = {{.id = "worker", .start = start_worker}};
    rill_sup_spec_t pool = RILL_SUP_SPEC_DEFAULT;
    pool.strategy = RILL_SUP_SIMPLE_ONE_FOR_ONE;
    pool.intensity = 10;
    pool.children = pool_template;
    pool.n_children = 1;

    rill_child_spec_t root_children[] = {
        {.id = "ingest",
         .supervisor = &ingest,
         .shutdown = RILL_SHUTDOWN_INFINITY,
         .register_name = 1},
        {.id = "pool", .supervisor = &pool, .shutdown = RILL_SHUTDOWN_INFINITY, .register_name = 1},
    };
    rill_sup_spec_t root_spec = RILL_SUP_SPEC_DEFAULT;
    root_spec.intensity = 3;
    root_spec.period_ms = 10000;
    root_spec.backoff.min_ms = 100;
    root_spec.backoff.max_ms = 800;
    root_spec.backoff.random = 0.2;
    root_spec.children = root_children;
    root_spec.n_children = 2;

    rill_aid_t root;
    if (rill_sup_start(sys, &root_spec, "root", &root, err, sizeof(err))) {
        rill_log(RILL_LOG_ERR, "supervisor_tree", "root: %s", err);
        return 1;
    }
    rill_aid_t pool_aid = rill_lookup(sys, "pool");
    for (int i = 0; i < 3; i++)
        if (rill_sup_start_child(sys, pool_aid, NULL, NULL)) {
            rill_log(RILL_LOG_ERR, "supervisor_tree", "pool: cannot start worker %d", i + 1);
            return 1;
        }

    watch_t w = {.root = root, .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};
    rill_aid_t watcher;
    rill_spawn_opts_t wo = {.behavior = watch_behavior, .init = watch_init, .state = &w};
    if (rill_spawn(sys, &wo, &watcher)) {
        rill_log(RILL_LOG_ERR, "supervisor_tree", "cannot spawn the watcher");
        return 1;
    }

    show(sys, root, dot_path, "the tree");
    uint64_t n = 0;
    int steps_ok = 1; /* the scripted run's checks */
    if (interactive) {
        char line[64];
        printf("\ntype a child to crash (reader, parser, writer, worker-1..3, ingest, pool), "
               "empty line to quit\n> ");
        fflush(stdout);
        while (fgets(line, sizeof(line), stdin) && line[0] != '\n') {
            line[strcspn(line, "\n")] = '\0';
            crash(sys, rill_lookup(sys, "pool"), line, ++n);
            msleep(300);
            show(sys, root, dot_path, "after the crash");
            printf("> ");
            fflush(stdout);
        }
    } else {
        /* 1. single faults: one child restarted each (rest_for_one takes
         *    the parser's later siblings along) */
        const char *script1[] = {"worker-2", "parser"};
        check_fn *expect1[] = {pool_after_worker2, ingest_after_parser};
        for (size_t i = 0; i < 2; i++) {
            rill_aid_t sup = rill_lookup(sys, i == 0 ? "pool" : "ingest");
            int held = crash(sys, rill_lookup(sys, "pool"), script1[i], ++n) == RILL_OK &&
                       children_become(sys, sup, expect1[i]);
            show(sys, root, dot_path, "after the crash");
            if (!held) {
                printf("!! not what one_for_one / rest_for_one promise\n");
                steps_ok = 0;
            }
        }
        /* 2. a persistent fault in the reader: ingest exceeds 2 restarts in
         *    5 s, escalates; root restarts ingest with backoff; repeat until
         *    root exceeds 3 restarts in 10 s (12 crashes at least; a crash
         *    refused while the reader waits for its restart is tried again
         *    sooner). At most 60 rounds. */
        for (int round = 1; round <= 60; round++) {
            rill_err_t sent = crash(sys, rill_lookup(sys, "pool"), "reader", ++n);
            msleep(150);
            if (sent == RILL_OK)
                show(sys, root, dot_path, "the reader keeps failing");
            pthread_mutex_lock(&w.lock);
            int down = w.down;
            pthread_mutex_unlock(&w.lock);
            if (down)
                break;
            if (sent == RILL_OK)
                msleep(350);
        }
    }

    pthread_mutex_lock(&w.lock);
    int down = w.down;
    rill_exit_t reason = w.reason;
    pthread_mutex_unlock(&w.lock);
    if (down) {
        printf("\n== root escalated: %s: %s\n", rill_exit_kind_name(reason.kind), reason.text);
        printf("(in a service, this is where the process exits and the service manager\n"
               " restarts it; Kafka redelivers whatever was not committed)\n");
    } else {
        show(sys, root, dot_path, "final tree");
        rill_sup_stop(sys, root, 5000);
    }
    printf("tree written to %s\n", dot_path);
    if (rill_system_stop(sys, 5000) != RILL_OK) {
        /* An actor is still running: the system must not be destroyed
         * (rill_system_stop's contract); the process ends instead. */
        printf("FAILED: the system did not stop within 5 s\n");
        fflush(stdout);
        _exit(1);
    }
    rill_system_destroy(sys);
    if (interactive)
        return 0;
    int ok = steps_ok && down && reason.kind == RILL_EXIT_FAILURE;
    printf("%s\n", ok ? "OK: each fault restarted what its strategy promises, and the persistent "
                        "one escalated to the top"
                      : "FAILED: a restart was not the expected one, or root did not escalate");
    return ok ? 0 : 1;
}
