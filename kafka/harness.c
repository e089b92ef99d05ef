/*
 * The stage harness (include/rill/testkit.h, "Stage harness"): one stage
 * under test between a fake Kafka source and a collecting sink, both one
 * actor, the harness.
 *
 * As the source, the harness is the stage's publisher: it queues the
 * records the test pushes (fake.c), each with a leaf origin of its own
 * (key: the record's index in the table of pushes), and sends them as the
 * stage asks. Every origin's settle notice comes back to it, as to a Kafka
 * source, and sets the record's fate in the table. As the sink, it
 * subscribes to the stage's output, keeps each output and confirms its
 * origin. It monitors the stage; when the stage has ended, a message it
 * sends itself through its mailbox marks the point after which every
 * notice made before that end has been handled, and only then is the end
 * reported.
 *
 * The test's thread reads the table and the outputs under the harness's
 * mutex, and waits on its condition variable.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <rill/stream.h>
#include <rill/testkit.h>

#include "fake.h"
#include "kafka_int.h"

/* The token of the harness's subscription to the stage's output. */
#define OUT_TOKEN       1
/* The harness's mailbox, and the most output it asks for at once (half of
 * it: settle notices and the stage's terminal signal need room too). */
#define HARNESS_MAILBOX 1024
#define OUT_WINDOW      (HARNESS_MAILBOX / 2)

typedef struct pushed {
    char *topic;
    int32_t partition;
    int64_t offset;
    int state; /* rill_testkit_settle_t */
} pushed_t;

struct rill_testkit_stage {
    rill_system_t *sys;
    rill_aid_t self, stage;

    /* Shared with the test's thread, under mu. */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pushed_t *recs;
    size_t n_recs, cap_recs;
    size_t unsettled;
    rill_elem_t **outs; /* one allocation each, so that pointers handed out stay valid */
    size_t n_outs, cap_outs;
    int finishing; /* the input was completed: pushes are refused */
    int ended;     /* the stage ended, and the notices made before were handled */
    int gone;      /* the harness actor's terminate hook ran */
    rill_pipeline_result_t result;

    /* The actor's own. */
    rill_elem_t *q; /* records waiting for demand, a ring */
    size_t q_head, q_n, q_cap;
    int64_t demand;
    rill_aid_t sub; /* the stage, subscribed to the harness */
    uint64_t sub_token;
    int subscribed, cancelled, input_done, complete_sent;
    int64_t out_asked; /* output asked for and not arrived */
    int got_complete, got_error, stage_down;
    rill_err_t error_code;
    char error_text[160];
    rill_exit_t exit;
};

static void lock(rill_testkit_stage_t *h)
{
    pthread_mutex_lock(&h->mu);
}

static void unlock_notify(rill_testkit_stage_t *h)
{
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
}

/* Settle record i (under mu): only its first fate counts. */
static void settle_locked(rill_testkit_stage_t *h, uint64_t i, int state)
{
    if (i < h->n_recs && h->recs[i].state == RILL_TESTKIT_PENDING) {
        h->recs[i].state = state;
        h->unsettled--;
    }
}

/* ------------------------------------------------------------------ */
/* The actor                                                           */
/* ------------------------------------------------------------------ */

static void release_queued(rill_testkit_stage_t *h)
{
    while (h->q_n) {
        rill_elem_release(&h->q[h->q_head]);
        h->q_head = (h->q_head + 1) % h->q_cap;
        h->q_n--;
    }
}

static int enqueue(rill_testkit_stage_t *h, rill_elem_t *e)
{
    if (h->q_n == h->q_cap) {
        size_t cap = h->q_cap ? 2 * h->q_cap : 64;
        rill_elem_t *q = malloc(cap * sizeof(*q));
        if (!q)
            return -1;
        for (size_t i = 0; i < h->q_n; i++)
            q[i] = h->q[(h->q_head + i) % h->q_cap];
        free(h->q);
        h->q = q;
        h->q_head = 0;
        h->q_cap = cap;
    }
    h->q[(h->q_head + h->q_n) % h->q_cap] = *e;
    h->q_n++;
    return 0;
}

/* Send what the stage asked for; complete once the input is done. */
static void pump(rill_testkit_stage_t *h)
{
    if (!h->subscribed || h->cancelled)
        return;
    while (h->demand > 0 && h->q_n) {
        rill_elem_t e = h->q[h->q_head];
        h->q_head = (h->q_head + 1) % h->q_cap;
        h->q_n--;
        /* The stage never asks for more than its mailbox holds, so a
         * refusal means it is gone: the record is released. */
        if (rill_stream_next(h->sys, rill_sub(h->sub), rill_pub(h->self), h->sub_token, &e))
            rill_elem_release(&e);
        if (h->demand != RILL_DEMAND_UNBOUNDED)
            h->demand--;
    }
    if (h->input_done && !h->q_n && !h->complete_sent) {
        h->complete_sent = 1;
        rill_stream_complete(h->sys, rill_sub(h->sub), rill_pub(h->self), h->sub_token);
    }
}

static void ask_output(rill_testkit_stage_t *h)
{
    if (h->stage_down || h->got_complete || h->got_error || h->out_asked > OUT_WINDOW / 2)
        return;
    int64_t n = OUT_WINDOW - h->out_asked;
    if (rill_stream_request(h->sys, rill_pub(h->stage), rill_sub(h->self), OUT_TOKEN, n) == RILL_OK)
        h->out_asked += n;
}

static void on_output(rill_testkit_stage_t *h, rill_msg_t *msg)
{
    rill_elem_t e = rill_elem_take(msg);
    h->out_asked--;
    rill_elem_t *keep = malloc(sizeof(*keep));
    /* Taken by the sink: confirmed, as rill_sink_collect() does. */
    rill_origin_confirm(e.origin);
    e.origin = NULL;
    if (!keep) {
        rill_elem_release(&e);
    } else {
        *keep = e;
        lock(h);
        rill_elem_t **v = rill__grow(h->outs, &h->cap_outs, h->n_outs, sizeof(*v), 16);
        if (v) {
            h->outs = v;
            h->outs[h->n_outs++] = keep;
            keep = NULL;
        }
        unlock_notify(h);
        if (keep) {
            rill_elem_release(keep);
            free(keep);
        }
    }
    ask_output(h);
}

static void on_settled(rill_testkit_stage_t *h, const rill__settled_t *b)
{
    lock(h);
    for (uint32_t i = 0; b && i < b->n; i++) {
        const rill__settle_note_t *x = &b->v[i];
        int state = RILL_TESTKIT_CONFIRMED;
        if (!x->ok)
            state = x->verdict == RILL__VERDICT_REJECT  ? RILL_TESTKIT_REJECTED
                    : x->verdict == RILL__VERDICT_RETRY ? RILL_TESTKIT_RETRIED
                                                        : RILL_TESTKIT_RELEASED;
        settle_locked(h, x->key, state);
    }
    unlock_notify(h);
}

/* rill_record_confirm_upto() of record i: every record of its partition
 * up to offset is confirmed. */
static void on_confirm_upto(rill_testkit_stage_t *h, uint64_t i, int64_t offset)
{
    lock(h);
    if (i < h->n_recs) {
        const pushed_t *p = &h->recs[i];
        for (size_t j = 0; j < h->n_recs; j++) {
            const pushed_t *r = &h->recs[j];
            if (r->partition == p->partition && r->offset <= offset &&
                strcmp(r->topic, p->topic) == 0)
                settle_locked(h, j, RILL_TESTKIT_CONFIRMED);
        }
    }
    unlock_notify(h);
}

/* The stage and every notice made before its end are in: report it. */
static void on_flushed(rill_testkit_stage_t *h)
{
    release_queued(h); /* nobody will take them now */
    rill_pipeline_result_t r = {.end = RILL_PIPELINE_COMPLETED};
    snprintf(r.stage, sizeof(r.stage), "stage");
    if (h->got_error || rill_exit_abnormal(&h->exit)) {
        r.end = RILL_PIPELINE_FAILED;
        r.code = h->got_error ? h->error_code : h->exit.code;
        if (r.code == RILL_OK)
            r.code = RILL_ESTATE;
        snprintf(r.text, sizeof(r.text), "%s", h->got_error ? h->error_text : h->exit.text);
    } else if (!h->got_complete) {
        r.end = RILL_PIPELINE_STOPPED;
        snprintf(r.text, sizeof(r.text), "the stage was stopped (%s)",
                 rill_exit_kind_name(h->exit.kind));
    } else {
        snprintf(r.text, sizeof(r.text), "the stage completed");
    }
    lock(h);
    r.delivered = h->n_outs;
    h->result = r;
    h->ended = 1;
    unlock_notify(h);
}

static void on_subscribe(rill_testkit_stage_t *h, const rill_msg_t *msg)
{
    if (h->subscribed) {
        /* A repeated SUBSCRIBE is ignored; another subscriber is refused. */
        if (!rill_aid_eq(msg->from, h->sub) || msg->corr != h->sub_token) {
            rill_stream_on_subscribe(h->sys, rill_sub(msg->from), rill_pub(h->self), msg->corr);
            rill_stream_error(h->sys, rill_sub(msg->from), rill_pub(h->self), msg->corr,
                              RILL_ESTATE, "the stage harness's source has one subscriber");
        }
        return;
    }
    if (rill_stream_on_subscribe(h->sys, rill_sub(msg->from), rill_pub(h->self), msg->corr) ==
        RILL_OK) {
        h->subscribed = 1;
        h->sub = msg->from;
        h->sub_token = msg->corr;
        pump(h);
    }
}

static void on_request(rill_testkit_stage_t *h, const rill_msg_t *msg)
{
    if (!h->subscribed || h->cancelled || !rill_aid_eq(msg->from, h->sub) ||
        msg->corr != h->sub_token)
        return;
    int64_t n = (int64_t)msg->arg;
    if (n <= 0) { /* rule 3.9 */
        h->cancelled = 1;
        rill_stream_error(h->sys, rill_sub(h->sub), rill_pub(h->self), h->sub_token, RILL_EINVAL,
                          "request(n) needs n > 0");
        release_queued(h);
        return;
    }
    h->demand = h->demand > RILL_DEMAND_UNBOUNDED - n ? RILL_DEMAND_UNBOUNDED : h->demand + n;
    pump(h);
}

static rill_err_t harness_behavior(rill_ctx_t *ctx, void *state, rill_msg_t *msg)
{
    rill_testkit_stage_t *h = state;
    int from_stage = rill_aid_eq(msg->from, h->stage);
    switch (msg->type) {
    case RILL__HARNESS_PUSH: {
        rill_elem_t e = {.dtor = rill__fake_record_free, .arg = msg->arg};
        e.origin = rill_msg_take_origin(msg);
        e.payload = rill_msg_take(msg);
        if (h->cancelled || h->stage_down || enqueue(h, &e) != 0)
            rill_elem_release(&e);
        pump(h);
        break;
    }
    case RILL__HARNESS_START: /* h->stage was set before this was sent */
        rill_monitor(ctx, h->stage, NULL);
        rill_stream_subscribe(h->sys, rill_pub(h->stage), rill_sub(h->self), OUT_TOKEN);
        break;
    case RILL__HARNESS_COMPLETE:
        h->input_done = 1;
        pump(h);
        break;
    case RILL__HARNESS_FLUSHED:
        on_flushed(h);
        break;
    case RILL_STREAM_SUBSCRIBE:
        on_subscribe(h, msg);
        break;
    case RILL_STREAM_REQUEST:
        on_request(h, msg);
        break;
    case RILL_STREAM_CANCEL:
        if (h->subscribed && rill_aid_eq(msg->from, h->sub) && msg->corr == h->sub_token) {
            h->cancelled = 1;
            release_queued(h);
        }
        break;
    case RILL_STREAM_ON_SUBSCRIBE:
        if (from_stage && msg->corr == OUT_TOKEN)
            ask_output(h);
        break;
    case RILL_STREAM_NEXT:
        if (from_stage && msg->corr == OUT_TOKEN)
            on_output(h, msg);
        break; /* anything else is released by rill after the handler */
    case RILL_STREAM_COMPLETE:
        if (from_stage && msg->corr == OUT_TOKEN)
            h->got_complete = 1;
        break;
    case RILL_STREAM_ERROR:
        if (from_stage && msg->corr == OUT_TOKEN && !h->got_error) {
            h->got_error = 1;
            h->error_code = (rill_err_t)msg->arg;
            snprintf(h->error_text, sizeof(h->error_text), "%s", rill_stream_error_text(msg));
        }
        break;
    case RILL_MSG_DOWN: {
        const rill_down_t *d = msg->payload;
        if (d && rill_aid_eq(d->actor, h->stage) && !h->stage_down) {
            h->stage_down = 1;
            h->exit = d->reason;
            /* Behind every notice already in the mailbox. */
            rill_msg_t m = {.type = RILL__HARNESS_FLUSHED};
            if (rill_tell(h->sys, h->self, &m) != RILL_OK)
                rill_signal(h->sys, h->self, &m);
        }
        break;
    }
    case RILL__MSG_SETTLED:
        on_settled(h, msg->payload);
        break;
    case RILL__CONSUMER_CONFIRM_UPTO:
        on_confirm_upto(h, msg->corr, (int64_t)msg->arg);
        break;
    default:
        break;
    }
    return RILL_OK;
}

static void harness_terminate(rill_ctx_t *ctx, void *state, const rill_exit_t *reason)
{
    (void)ctx, (void)reason;
    rill_testkit_stage_t *h = state;
    release_queued(h);
    free(h->q);
    h->q = NULL;
    lock(h);
    h->gone = 1;
    unlock_notify(h);
}

/* ------------------------------------------------------------------ */
/* The test's side                                                     */
/* ------------------------------------------------------------------ */

/* Wait on cv (mu held) once, until deadline_ms (rill__now_ms() time) at
 * the latest: 0, or ETIMEDOUT. */
static int wait_until(rill_testkit_stage_t *h, int64_t deadline_ms)
{
    int64_t now = rill__now_ms();
    if (now >= deadline_ms)
        return ETIMEDOUT;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t ns = ts.tv_nsec + (deadline_ms - now) % 1000 * 1000000;
    ts.tv_sec += (time_t)((deadline_ms - now) / 1000 + ns / 1000000000);
    ts.tv_nsec = (long)(ns % 1000000000);
    return pthread_cond_timedwait(&h->cv, &h->mu, &ts);
}

static int64_t deadline_of(int timeout_ms)
{
    return rill__now_ms() + (timeout_ms < 0 ? INT64_C(1) << 40 : timeout_ms);
}

static void harness_free(rill_testkit_stage_t *h)
{
    for (size_t i = 0; i < h->n_outs; i++) {
        rill_elem_release(h->outs[i]);
        free(h->outs[i]);
    }
    free(h->outs);
    for (size_t i = 0; i < h->n_recs; i++)
        free(h->recs[i].topic);
    free(h->recs);
    pthread_cond_destroy(&h->cv);
    pthread_mutex_destroy(&h->mu);
    free(h);
}

/* Stop the harness actor and wait for its terminate hook. */
static void harness_stop(rill_testkit_stage_t *h)
{
    if (rill_stop(h->sys, h->self) != RILL_OK)
        return; /* gone already (the system stopped it): its hook ran */
    lock(h);
    while (!h->gone)
        pthread_cond_wait(&h->cv, &h->mu);
    pthread_mutex_unlock(&h->mu);
}

rill_err_t rill_testkit_stage_start(rill_system_t *sys, rill_stage_t *stage,
                                    rill_testkit_stage_t **out, char *errstr, size_t errstr_size)
{
    if (out)
        *out = NULL;
    if (!sys || !stage || !out) {
        rill_stage_free(stage);
        return rill__fail(RILL_EINVAL, errstr, errstr_size,
                          "rill_testkit_stage_start needs a system, a stage and out");
    }
    if (rill__tls_exec) {
        rill_stage_free(stage);
        return rill__fail(RILL_ESTATE, errstr, errstr_size,
                          "rill_testkit_stage_start waits: not on an executor thread");
    }
    rill_testkit_stage_t *h = calloc(1, sizeof(*h));
    if (!h) {
        rill_stage_free(stage);
        return rill__fail(RILL_ENOMEM, errstr, errstr_size, "out of memory");
    }
    h->sys = sys;
    pthread_mutex_init(&h->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&h->cv, &ca);
    pthread_condattr_destroy(&ca);
    rill_spawn_opts_t so = {.behavior = harness_behavior,
                            .terminate = harness_terminate,
                            .state = h,
                            .mailbox_capacity = HARNESS_MAILBOX};
    rill_err_t err = rill_spawn(sys, &so, &h->self);
    if (err) {
        rill_stage_free(stage);
        harness_free(h);
        return rill__fail(err, errstr, errstr_size, "cannot spawn the stage harness: %s",
                          rill_err2str(err));
    }
    err = rill_stage_spawn(sys, stage, NULL, &h->stage, errstr, errstr_size);
    if (err) {
        harness_stop(h);
        harness_free(h);
        return err;
    }
    rill_msg_t m = {.type = RILL__HARNESS_START};
    err = rill_signal(sys, h->self, &m);
    if (!err)
        err = rill_stage_connect(sys, h->self, h->stage, errstr, errstr_size);
    if (err) {
        rill_testkit_stage_destroy(h); /* stops the stage */
        return err;
    }
    *out = h;
    return RILL_OK;
}

rill_err_t rill_testkit_stage_push(rill_testkit_stage_t *h, const rill_testkit_record_t *r)
{
    if (!h || !r)
        return RILL_EINVAL;
    rd_kafka_message_t *m;
    rill_err_t err = rill__fake_record_new(r, &m, NULL, 0);
    if (err)
        return err;
    char *topic = strdup(r->topic);
    lock(h);
    pushed_t *v = rill__grow(h->recs, &h->cap_recs, h->n_recs, sizeof(*v), 64);
    if (h->finishing || !v || !topic) {
        pthread_mutex_unlock(&h->mu);
        free(topic);
        rill__fake_record_free(m);
        return h->finishing ? RILL_ESTATE : RILL_ENOMEM;
    }
    h->recs = v;
    uint64_t i = h->n_recs++;
    h->recs[i] = (pushed_t){.topic = topic, .partition = r->partition, .offset = r->offset};
    h->unsettled++;
    pthread_mutex_unlock(&h->mu);

    rill_origin_t *o = rill__origin_new(h->sys, h->self, i, r->offset);
    rill_msg_t msg = {.type = RILL__HARNESS_PUSH,
                      .arg = (uint64_t)r->partition,
                      .payload = m,
                      .dtor = rill__fake_record_free,
                      .origin = o};
    err = o ? rill_signal(h->sys, h->self, &msg) : RILL_ENOMEM;
    if (err) {
        rill__fake_record_free(m);
        rill_origin_release(o);
        lock(h);
        settle_locked(h, i, RILL_TESTKIT_RELEASED);
        unlock_notify(h);
    }
    return err;
}

rill_err_t rill_testkit_stage_wait_outputs(rill_testkit_stage_t *h, size_t n, int timeout_ms)
{
    if (!h)
        return RILL_EINVAL;
    int64_t deadline = deadline_of(timeout_ms);
    rill_err_t err = RILL_OK;
    lock(h);
    while (h->n_outs < n) {
        if (h->ended) {
            err = RILL_ESTOPPED;
            break;
        }
        if (wait_until(h, deadline) == ETIMEDOUT && h->n_outs < n) {
            err = h->ended ? RILL_ESTOPPED : RILL_ETIMEDOUT;
            break;
        }
    }
    pthread_mutex_unlock(&h->mu);
    return err;
}

rill_err_t rill_testkit_stage_wait_settled(rill_testkit_stage_t *h, int timeout_ms)
{
    if (!h)
        return RILL_EINVAL;
    int64_t deadline = deadline_of(timeout_ms);
    rill_err_t err = RILL_OK;
    lock(h);
    while (h->unsettled > 0) {
        if (wait_until(h, deadline) == ETIMEDOUT && h->unsettled > 0) {
            err = RILL_ETIMEDOUT;
            break;
        }
    }
    pthread_mutex_unlock(&h->mu);
    return err;
}

size_t rill_testkit_stage_output_count(rill_testkit_stage_t *h)
{
    if (!h)
        return 0;
    lock(h);
    size_t n = h->n_outs;
    pthread_mutex_unlock(&h->mu);
    return n;
}

const rill_elem_t *rill_testkit_stage_output(rill_testkit_stage_t *h, size_t i)
{
    if (!h)
        return NULL;
    lock(h);
    const rill_elem_t *e = i < h->n_outs ? h->outs[i] : NULL;
    pthread_mutex_unlock(&h->mu);
    return e;
}

int rill_testkit_stage_settled(rill_testkit_stage_t *h, const char *topic, int32_t partition,
                               int64_t offset)
{
    if (!h || !topic)
        return RILL_TESTKIT_UNKNOWN;
    int state = RILL_TESTKIT_UNKNOWN;
    lock(h);
    for (size_t i = h->n_recs; i-- > 0 && state == RILL_TESTKIT_UNKNOWN;) {
        const pushed_t *r = &h->recs[i];
        if (r->partition == partition && r->offset == offset && strcmp(r->topic, topic) == 0)
            state = r->state;
    }
    pthread_mutex_unlock(&h->mu);
    return state;
}

rill_err_t rill_testkit_stage_finish(rill_testkit_stage_t *h, int timeout_ms,
                                     rill_pipeline_result_t *result)
{
    if (result)
        *result = (rill_pipeline_result_t){.end = RILL_PIPELINE_RUNNING};
    if (!h)
        return RILL_EINVAL;
    if (rill__tls_exec)
        return RILL_ESTATE;
    lock(h);
    int first = !h->finishing;
    h->finishing = 1;
    pthread_mutex_unlock(&h->mu);
    if (first) {
        rill_msg_t m = {.type = RILL__HARNESS_COMPLETE};
        rill_signal(h->sys, h->self, &m);
    }
    int64_t deadline = deadline_of(timeout_ms);
    rill_err_t err = RILL_OK;
    lock(h);
    while (!h->ended) {
        if (wait_until(h, deadline) == ETIMEDOUT && !h->ended) {
            err = RILL_ETIMEDOUT;
            break;
        }
    }
    if (!err && result)
        *result = h->result;
    pthread_mutex_unlock(&h->mu);
    return err;
}

void rill_testkit_stage_destroy(rill_testkit_stage_t *h)
{
    if (!h)
        return;
    lock(h);
    h->finishing = 1;
    pthread_mutex_unlock(&h->mu);
    if (!rill_aid_is_none(h->stage) && rill_stop(h->sys, h->stage) == RILL_OK) {
        /* Bounded: a stage stops within its own drain limits; a harness
         * that is gone (the system stopping) reports nothing more. */
        int64_t deadline = rill__now_ms() + 30000;
        lock(h);
        while (!h->ended && !h->gone && wait_until(h, deadline) != ETIMEDOUT)
            ;
        pthread_mutex_unlock(&h->mu);
    }
    harness_stop(h);
    harness_free(h);
}
