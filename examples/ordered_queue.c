/*
 * ordered_queue: strict ordering through a single-partition topic.
 *
 *   a pipeline under a supervisor of its own (rill_pipeline_start_supervised)
 *   ├── kafka-source  partition 0 of "jobs", from the group's committed offset
 *   ├── process       checks and does each job, in offset order
 *   └── sink          takes each job done, which confirms it
 *
 * A topic partition is a queue: one consumer, stages that keep order, and
 * jobs come out in offset order. The process stage checks it for every
 * record: each offset must follow the one before it. At --fail-at it fails
 * once, deliberately, before doing that job. That ends the pipeline's run:
 * the source commits what was confirmed and keeps its client for the next
 * run, which the supervisor starts after a backoff. It resumes at the
 * first unconfirmed offset, so the failed job and the ones in flight
 * behind it come again, still in order: the order check allows a restart
 * to go back (redelivery), never forward past a job not done (a gap), and
 * after that every offset must follow its predecessor again. The process
 * stage is a stateful_map: its state (the offset it did last) is made
 * fresh for every run, so it knows where a run begins.
 *
 * usage: ordered_queue [--count N] [--fail-at OFFSET] [--bootstrap SERVERS]
 *                      [--topic NAME] [--group ID]
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <rill/rill.h>
#include <rill/testkit.h>

typedef struct queue {
    const char *bootstraps, *topic, *group;
    int64_t count, fail_at;
    /* Touched by the process stage only (one run at a time). */
    int64_t next_new;     /* the lowest offset never processed */
    int64_t violations;   /* offsets that did not follow their predecessor */
    int64_t gaps;         /* restarts that skipped an offset never processed */
    int64_t again;        /* jobs processed a second time (redelivered) */
    int64_t resumed_at;   /* the first offset after the restart */
    int failed;           /* the deliberate failure happened */
    _Atomic int64_t done; /* distinct jobs done */
    uint8_t *seen;
} queue_t;

/* ---- the process stage: state of its own for each run ---- */

typedef struct run_state {
    queue_t *q;
    int64_t prev; /* offset processed last in this run, -1 at its start */
} run_state_t;

static void *run_begin(void *opaque)
{
    run_state_t *r = malloc(sizeof(*r));
    if (r)
        *r = (run_state_t){.q = opaque, .prev = -1};
    return r;
}

static rill_err_t process(void *state, rill_elem_t *in, rill_emitter_t *out)
{
    run_state_t *r = state;
    queue_t *q = r->q;
    const rd_kafka_message_t *m = rill_record(in);
    int64_t off = m ? m->offset : -1;
    if (r->prev < 0) {
        /* The first job of a run: at most where we were. */
        if (off > q->next_new)
            q->gaps++;
        if (q->failed && q->resumed_at < 0)
            q->resumed_at = off;
    } else if (off != r->prev + 1) {
        q->violations++;
    }
    if (off == q->fail_at && !q->failed) {
        q->failed = 1;
        rill_elem_release(in);
        return RILL_EIO; /* the deliberate failure: this job is not done */
    }
    r->prev = off;
    /* The job itself would go here. */
    if (off >= 0 && off < q->count) {
        if (q->seen[off])
            q->again++;
        else
            atomic_fetch_add(&q->done, 1);
        q->seen[off] = 1;
    }
    if (off + 1 > q->next_new)
        q->next_new = off + 1;
    return rill_emit(out, in); /* the record goes on, to be confirmed */
}

/* ---- the service: source -> process -> sink, supervised ---- */

static rill_pipeline_t *start_queue(rill_system_t *sys, queue_t *q, char *err, size_t err_size)
{
    rill_consumer_conf_t *c = rill_consumer_conf_new();
    if (rill_consumer_conf_set(c, "bootstrap.servers", q->bootstraps, err, err_size) ||
        rill_consumer_conf_set(c, "group.id", q->group, err, err_size) ||
        rill_consumer_conf_set(c, "auto.offset.reset", "earliest", err, err_size) ||
        rill_consumer_conf_set(c, "rill.commit.interval.ms", "200", err, err_size) ||
        /* One partition, no group membership: the group only keeps the
         * offsets. */
        rill_consumer_conf_assign(c, q->topic, 0, RILL_OFFSET_COMMITTED, err, err_size)) {
        rill_consumer_conf_destroy(c);
        return NULL;
    }
    rill_stateful_ops_t ops = {.create = run_begin, .fn = process, .destroy = free};
    rill_pipeline_t *p = rill_pipeline_new(sys, "queue");
    rill_pipeline_add(p, rill_kafka_source(c), NULL);
    rill_pipeline_add(p, rill_stage_stateful_map(&ops, q), &(rill_stage_opts_t){.name = "process"});
    rill_pipeline_add(p, rill_sink_ignore(), NULL);
    rill_restart_opts_t restarts = {
        .max_restarts = 3, .within_ms = 10000, .backoff = {.min_ms = 100, .max_ms = 1000}};
    if (rill_pipeline_start_supervised(p, &restarts, err, err_size)) {
        rill_pipeline_destroy(p);
        return NULL;
    }
    return p;
}

/* ---- main ---- */

static int64_t committed_offset(rd_kafka_t *rk, const char *topic)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, 0);
    int64_t off = -1;
    if (!rd_kafka_committed(rk, l, 5000))
        off = l->elems[0].offset;
    rd_kafka_topic_partition_list_destroy(l);
    return off;
}

int main(int argc, char **argv)
{
    queue_t q = {
        .topic = "jobs", .group = "job-runner", .count = 5000, .fail_at = -2, .resumed_at = -1};
    static const struct option opts[] = {
        {"count", required_argument, NULL, 'n'},     {"fail-at", required_argument, NULL, 'f'},
        {"bootstrap", required_argument, NULL, 'b'}, {"topic", required_argument, NULL, 't'},
        {"group", required_argument, NULL, 'g'},     {NULL, 0, NULL, 0}};
    char topic_buf[128], group_buf[128];
    int opt, topic_given = 0;
    while ((opt = getopt_long(argc, argv, "n:f:b:t:g:", opts, NULL)) != -1) {
        switch (opt) {
        case 'n':
            q.count = strtoll(optarg, NULL, 10);
            break;
        case 'f':
            q.fail_at = strtoll(optarg, NULL, 10);
            break;
        case 'b':
            q.bootstraps = optarg;
            break;
        case 't':
            q.topic = optarg;
            topic_given = 1;
            break;
        case 'g':
            q.group = optarg;
            break;
        default:
            fprintf(stderr, "usage: ordered_queue [--count N] [--fail-at OFFSET] "
                            "[--bootstrap SERVERS] [--topic NAME] [--group ID]\n");
            return 2;
        }
    }
    if (q.count < 1) {
        fprintf(stderr, "ordered_queue: --count must be positive\n");
        return 2;
    }
    if (q.fail_at == -2)
        q.fail_at = q.count / 2; /* -1: no failure */
    q.seen = calloc((size_t)q.count, 1);
    char err[512];
    rill_broker_t *broker = NULL;
    if (!q.bootstraps) {
        broker = rill_broker_new(1, err, sizeof(err));
        if (!broker || rill_broker_create_topic(broker, q.topic, 1, 1, err, sizeof(err))) {
            rill_log(RILL_LOG_ERR, "ordered_queue", "embedded broker: %s", err);
            return 1;
        }
        q.bootstraps = rill_broker_bootstraps(broker);
        printf("embedded broker at %s\n", q.bootstraps);
    } else if (!topic_given) {
        /* A fresh topic and group per run; partition 0 is used either way. */
        snprintf(topic_buf, sizeof(topic_buf), "jobs-%d", (int)getpid());
        snprintf(group_buf, sizeof(group_buf), "job-runner-%d", (int)getpid());
        q.topic = topic_buf;
        q.group = group_buf;
    }
    rill_gen_t gen = RILL_GEN_DEFAULT;
    gen.pinned = 1;
    gen.partition = 0;
    printf("producing %" PRId64 " jobs to %s partition 0\n", q.count, q.topic);
    rill_testkit_opts_t popts = {.timeout_ms = 120000};
    if (rill_testkit_produce_generated(q.bootstraps, q.topic, (size_t)q.count, &gen, &popts, err,
                                       sizeof(err))) {
        rill_log(RILL_LOG_ERR, "ordered_queue", "produce: %s", err);
        return 1;
    }

    /* A plain client that reads the group's committed offset. */
    rd_kafka_conf_t *kc = rd_kafka_conf_new();
    rd_kafka_conf_set(kc, "bootstrap.servers", q.bootstraps, NULL, 0);
    rd_kafka_conf_set(kc, "group.id", q.group, NULL, 0);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, kc, err, sizeof(err));

    rill_system_t *sys = rill_system_new(NULL, err, sizeof(err));
    if (!sys || !rk || rill_system_start(sys)) {
        rill_log(RILL_LOG_ERR, "ordered_queue", "start: %s", err);
        return 1;
    }
    rill_pipeline_t *queue = start_queue(sys, &q, err, sizeof(err));
    if (!queue) {
        rill_log(RILL_LOG_ERR, "ordered_queue", "queue: %s", err);
        return 1;
    }
    if (q.fail_at >= 0)
        printf("source -> process -> sink, supervised; process fails once at offset %" PRId64 "\n",
               q.fail_at);
    int64_t committed = -1;
    for (int tenth = 1; tenth <= 1200; tenth++) {
        struct timespec tick = {0, 100 * 1000 * 1000};
        nanosleep(&tick, NULL); /* pacing the checks */
        int64_t done = atomic_load(&q.done);
        if (tenth % 10 == 0 || done == q.count) {
            committed = committed_offset(rk, q.topic);
            printf("%5.1fs  jobs done %6" PRId64 "  committed %6" PRId64 "\n", tenth / 10.0, done,
                   committed);
            fflush(stdout);
        }
        if (done == q.count && committed == q.count)
            break;
    }
    /* Stop: what is in flight is done and committed first. */
    rill_pipeline_result_t res;
    rill_pipeline_stop(queue);
    if (rill_pipeline_wait(queue, 30000, &res) != RILL_OK) {
        /* Still running: destroying it would wait for it forever. */
        printf("FAILED: the queue did not stop within 30 s\n");
        fflush(stdout);
        _exit(1);
    }
    rill_pipeline_destroy(queue);
    uint32_t restarts = res.restarts;
    if (rill_system_stop(sys, 10000) != RILL_OK) {
        /* An actor is still running: the system must not be destroyed
         * (rill_system_stop's contract); the process ends instead. */
        printf("FAILED: the system did not stop within 10 s\n");
        fflush(stdout);
        _exit(1);
    }
    rill_system_destroy(sys);
    committed = committed_offset(rk, q.topic);
    rd_kafka_destroy(rk);

    int64_t done = atomic_load(&q.done);
    printf("\nsummary\n");
    printf("  jobs in topic %s, 1 partition   %" PRId64 "\n", q.topic, q.count);
    printf("  done, in offset order          %" PRId64 " (%" PRId64 " order violations, %" PRId64
           " gaps)\n",
           done, q.violations, q.gaps);
    if (q.fail_at >= 0) {
        printf("  deliberate failure at offset   %" PRId64 ", supervisor restarts %u\n", q.fail_at,
               restarts);
        printf("  resumed at offset              %" PRId64 ": %" PRId64
               " jobs redelivered, done again in order\n",
               q.resumed_at, q.again);
    }
    printf("  committed offset               %" PRId64 " of %" PRId64 "\n", committed, q.count);
    int expect_failure = q.fail_at >= 0 && q.fail_at < q.count;
    int ok = done == q.count && !q.violations && !q.gaps && committed == q.count &&
             (!expect_failure ||
              (q.failed && restarts >= 1 && q.resumed_at >= 0 && q.resumed_at <= q.fail_at));
    printf("  %s\n", ok ? "OK: every job done in offset order, also after the restart"
                        : "FAILED: jobs missing, out of order, or not committed");
    free(q.seen);
    rill_broker_destroy(broker);
    return ok ? 0 : 1;
}
