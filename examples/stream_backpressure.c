/*
 * stream_backpressure: a fast source, a parse stage, an enrich stage that
 * does "I/O" asynchronously (map_async on a worker thread), and a slow
 * sink. Once a second the program prints what the source produced, what
 * the sink consumed, what is in flight between them, and the process's
 * memory: the source runs exactly as fast as the sink, in-flight stays
 * under the sum of the stages' windows, and memory stays flat however long
 * it runs. After --seconds it drains the pipeline and checks that every
 * element produced reached the sink.
 *
 * usage: stream_backpressure [--seconds N] [--sink-us MICROSECONDS]
 */
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <rill/rill.h>

typedef struct stats {
    _Atomic uint64_t produced, consumed, enriched;
    uint64_t next_expected; /* sink: elements arrive in order */
    _Atomic uint64_t out_of_order;
    int sink_us;
} stats_t;

/* ---- stages ---- */

static rill_err_t produce(void *opaque, rill_elem_t *out)
{
    stats_t *s = opaque;
    /* A small owned payload, as a parsed record would be. */
    uint64_t *rec = malloc(sizeof(*rec));
    if (!rec)
        return RILL_ENOMEM;
    uint64_t n = atomic_fetch_add_explicit(&s->produced, 1, memory_order_relaxed);
    *rec = n;
    *out = (rill_elem_t){.payload = rec, .dtor = free, .arg = n};
    return RILL_OK;
}

static rill_err_t parse(void *opaque, rill_elem_t *in, rill_elem_t *out)
{
    (void)opaque;
    *out = *in; /* the payload moves on unchanged */
    return RILL_OK;
}

/* "I/O": a worker thread completes enrich jobs, as a database client
 * would complete its callbacks. */
typedef struct io_worker {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    rill_async_job_t *jobs[64];
    rill_elem_t elems[64];
    int n, stop;
    stats_t *stats;
} io_worker_t;

static rill_err_t enrich(void *opaque, rill_async_job_t *job, rill_elem_t *in)
{
    io_worker_t *w = opaque;
    pthread_mutex_lock(&w->lock);
    if (w->n == 64) {
        pthread_mutex_unlock(&w->lock);
        return RILL_EFULL; /* cannot happen: parallelism is 16 */
    }
    w->jobs[w->n] = job;
    w->elems[w->n] = *in;
    w->n++;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
    return RILL_OK;
}

static void *io_main(void *arg)
{
    io_worker_t *w = arg;
    pthread_mutex_lock(&w->lock);
    while (!w->stop) {
        if (!w->n) {
            pthread_cond_wait(&w->cond, &w->lock);
            continue;
        }
        rill_async_job_t *job = w->jobs[0];
        rill_elem_t e = w->elems[0];
        memmove(w->jobs, w->jobs + 1, (size_t)(w->n - 1) * sizeof(w->jobs[0]));
        memmove(w->elems, w->elems + 1, (size_t)(w->n - 1) * sizeof(w->elems[0]));
        w->n--;
        pthread_mutex_unlock(&w->lock);
        atomic_fetch_add_explicit(&w->stats->enriched, 1, memory_order_relaxed);
        rill_async_complete(job, RILL_OK, &e);
        pthread_mutex_lock(&w->lock);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

static rill_err_t slow_sink(void *opaque, rill_elem_t *e)
{
    stats_t *s = opaque;
    if (e->arg != s->next_expected)
        atomic_fetch_add_explicit(&s->out_of_order, 1, memory_order_relaxed);
    s->next_expected = e->arg + 1;
    struct timespec ts = {0, (long)s->sink_us * 1000};
    nanosleep(&ts, NULL); /* the slow part: think of a remote write */
    rill_elem_release(e);
    atomic_fetch_add_explicit(&s->consumed, 1, memory_order_relaxed);
    return RILL_OK;
}

static long rss_kib(void)
{
    long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
            rss = 0;
        fclose(f);
    }
    return rss * (sysconf(_SC_PAGESIZE) / 1024);
}

int main(int argc, char **argv)
{
    int seconds = 5;
    stats_t stats = {.sink_us = 200};
    static const struct option opts[] = {{"seconds", required_argument, NULL, 's'},
                                         {"sink-us", required_argument, NULL, 'u'},
                                         {NULL, 0, NULL, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "s:u:", opts, NULL)) != -1) {
        if (opt == 's')
            seconds = atoi(optarg);
        else if (opt == 'u')
            stats.sink_us = atoi(optarg);
        else {
            fprintf(stderr, "usage: stream_backpressure [--seconds N] [--sink-us US]\n");
            return 2;
        }
    }
    if (seconds < 1 || stats.sink_us < 0) {
        fprintf(stderr, "stream_backpressure: --seconds >= 1, --sink-us >= 0\n");
        return 2;
    }

    char err[256];
    rill_system_t *sys = rill_system_new(&(rill_system_opts_t){.executors = 2}, err, sizeof(err));
    if (!sys || rill_system_start(sys)) {
        rill_log(RILL_LOG_ERR, "stream_backpressure", "system: %s", sys ? "cannot start" : err);
        return 1;
    }
    io_worker_t io = {.stats = &stats};
    pthread_mutex_init(&io.lock, NULL);
    pthread_cond_init(&io.cond, NULL);
    pthread_t io_thread;
    if (pthread_create(&io_thread, NULL, io_main, &io)) {
        rill_log(RILL_LOG_ERR, "stream_backpressure", "cannot start the I/O thread");
        return 1;
    }

    /* Windows: each stage asks upstream for at most its mailbox minus one. */
    rill_stage_opts_t small = {.mailbox_capacity = 64};
    rill_pipeline_t *p = rill_pipeline_new(sys, "backpressure");
    rill_pipeline_add(p, rill_source_fn(produce, &stats), &small);
    rill_pipeline_add(p, rill_stage_map(parse, NULL), &small);
    rill_pipeline_add(p, rill_stage_map_async(enrich, &io, 16, 1), &small);
    rill_pipeline_add(p, rill_sink_foreach(slow_sink, &stats), &small);
    if (rill_pipeline_start(p, err, sizeof(err))) {
        rill_log(RILL_LOG_ERR, "stream_backpressure", "pipeline: %s", err);
        return 1;
    }
    printf("source -> parse -> enrich (async, 16 in flight) -> sink (%d us/element)\n",
           stats.sink_us);
    printf("%4s %12s %12s %10s %10s %10s\n", "s", "produced", "consumed", "in flight", "rate/s",
           "RSS KiB");
    uint64_t last = 0;
    for (int t = 1; t <= seconds; t++) {
        sleep(1); /* pacing the report, not synchronising anything */
        uint64_t prod = atomic_load(&stats.produced), cons = atomic_load(&stats.consumed);
        printf("%4d %12" PRIu64 " %12" PRIu64 " %10" PRIu64 " %10" PRIu64 " %10ld\n", t, prod, cons,
               prod - cons, cons - last, rss_kib());
        fflush(stdout);
        last = cons;
    }
    rill_pipeline_drain(p);
    rill_pipeline_result_t r;
    if (rill_pipeline_wait(p, 30000, &r) != RILL_OK) {
        /* Still running: destroying it would wait for it forever. */
        printf("FAILED: the pipeline did not drain within 30 s\n");
        fflush(stdout);
        _exit(1);
    }
    uint64_t prod = atomic_load(&stats.produced), cons = atomic_load(&stats.consumed);
    printf("drained: %s; produced %" PRIu64 ", consumed %" PRIu64 ", out of order %" PRIu64 "\n",
           r.text, prod, cons, atomic_load(&stats.out_of_order));
    int ok = r.end == RILL_PIPELINE_COMPLETED && prod == cons && !atomic_load(&stats.out_of_order);
    printf("%s\n", ok ? "OK: every element produced reached the sink, in order"
                      : "FAILED: elements were lost or reordered");
    rill_pipeline_destroy(p);
    pthread_mutex_lock(&io.lock);
    io.stop = 1;
    pthread_cond_signal(&io.cond);
    pthread_mutex_unlock(&io.lock);
    pthread_join(io_thread, NULL);
    if (rill_system_stop(sys, 5000) != RILL_OK) {
        /* An actor is still running: the system must not be destroyed. */
        printf("FAILED: the system did not stop within 5 s\n");
        fflush(stdout);
        _exit(1);
    }
    rill_system_destroy(sys);
    return ok ? 0 : 1;
}
