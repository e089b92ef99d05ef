/*
 * The stage engine: one actor behaviour that speaks the Reactive-Streams
 * protocol on both sides and calls a stage kind's hooks (see
 * stream_int.h); spawning stages. Elements and signals are in signals.c,
 * specs in spec.c.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../actors/seam.h"
#include "pipeline_int.h"

#define DEFAULT_STAGE_MAILBOX 64u
#define RETRY_MS              1
/* How long a pending subscription waits for its answer after its
 * publisher ended: a composite's inner publisher may still answer for it
 * (partition_by_key forwards to its merge, which outlives the router). */
#define PUB_GONE_GRACE_MS     1000

/* ------------------------------------------------------------------ */
/* Engine services                                                     */
/* ------------------------------------------------------------------ */

static int64_t sat_add(int64_t a, int64_t b)
{
    return a > INT64_MAX - b ? INT64_MAX : a + b;
}

static int in_by_token(const rill__stage_t *st, uint64_t token)
{
    for (uint32_t i = 0; i < st->n_in; i++)
        if (st->in[i].token == token)
            return (int)i;
    return -1;
}

static int out_by_sub(const rill__stage_t *st, rill_aid_t sub, uint64_t token)
{
    for (uint32_t i = 0; i < st->n_out; i++)
        if (rill_aid_eq(st->out[i].sub, sub) && st->out[i].token == token)
            return (int)i;
    return -1;
}

void rill__stage_want_slow(rill__stage_t *st, int in, int64_t want)
{
    rill__in_t *l = &st->in[in];
    if (l->state != LINK_ACTIVE || l->cancelled || st->finished)
        return;
    if (want > (int64_t)st->window)
        want = st->window;
    int64_t deficit = want - l->outstanding;
    if (deficit <= 0)
        return;
    /* Ask in chunks: a REQUEST per element would double the signals. */
    int64_t chunk = st->window / 4 > 0 ? st->window / 4 : 1;
    if (l->outstanding > 0 && deficit < chunk && deficit < want)
        return;
    if (rill_stream_request(st->sys, rill_pub(l->pub), rill_sub(st->self), l->token, deficit) ==
        RILL_OK)
        l->outstanding += deficit;
}

void rill__stage_cancel_in(rill__stage_t *st, int in)
{
    rill__in_t *l = &st->in[in];
    if (l->cancelled || l->state == LINK_DONE || l->state == LINK_NONE)
        return;
    l->cancelled = 1;
    if (l->state == LINK_ACTIVE || l->state == LINK_PENDING)
        rill_stream_cancel(st->sys, rill_pub(l->pub), rill_sub(st->self), l->token);
}

int rill__stage_inputs_done(const rill__stage_t *st)
{
    for (uint32_t i = 0; i < st->n_in; i++)
        if (st->in[i].state != LINK_DONE && !st->in[i].cancelled)
            return 0;
    return 1;
}

int rill__stage_can_emit(const rill__stage_t *st, int out)
{
    const rill__out_t *o = &st->out[out];
    return o->state == LINK_ACTIVE && o->demand > 0 && !o->has_stash && !st->finished;
}

int64_t rill__stage_min_demand(const rill__stage_t *st)
{
    int64_t min = INT64_MAX;
    int any = 0;
    for (uint32_t i = 0; i < st->n_out; i++) {
        const rill__out_t *o = &st->out[i];
        if (o->state != LINK_ACTIVE)
            continue;
        any = 1;
        int64_t d = o->has_stash ? 0 : o->demand;
        if (d < min)
            min = d;
    }
    return any ? min : 0;
}

int rill__stage_outputs_ready(const rill__stage_t *st)
{
    return st->n_out >= st->n_out_expected;
}

static void arm_retry(rill__stage_t *st)
{
    if (st->retry_armed)
        return;
    rill_msg_t m = {.type = RILL__STREAM_RETRY};
    if (rill_timer_start(st->ctx, RETRY_MS, 0, &m, NULL) == RILL_OK)
        st->retry_armed = 1;
}

static void out_gone(rill__stage_t *st, int out);

/* An ERROR that does not belong to a held subscription (3.9, refused
 * subscribe): if the subscriber's mailbox is full, keep it and retry with
 * the other refused signals instead of losing it. */
static void send_detached_error(rill__stage_t *st, rill_aid_t sub, uint64_t token, rill_err_t code,
                                const char *text)
{
    if (rill_stream_error(st->sys, rill_sub(sub), rill_pub(st->self), token, code, text) !=
        RILL_EFULL)
        return;
    if (st->n_lost_err == sizeof(st->lost_err) / sizeof(st->lost_err[0]))
        return; /* a subscriber that floods us with bad requests gets fewer answers */
    rill__lost_err_t *l = &st->lost_err[st->n_lost_err++];
    l->sub = sub;
    l->token = token;
    l->code = code;
    snprintf(l->text, sizeof(l->text), "%s", text);
    arm_retry(st);
}

static void retry_detached_errors(rill__stage_t *st)
{
    uint32_t kept = 0;
    for (uint32_t i = 0; i < st->n_lost_err; i++) {
        if (rill_stream_error(st->sys, rill_sub(st->lost_err[i].sub), rill_pub(st->self),
                              st->lost_err[i].token, st->lost_err[i].code,
                              st->lost_err[i].text) == RILL_EFULL)
            st->lost_err[kept++] = st->lost_err[i];
    }
    st->n_lost_err = kept;
    if (kept)
        arm_retry(st);
}

void rill__stage_emit(rill__stage_t *st, int out, rill_elem_t *e)
{
    rill__out_t *o = &st->out[out];
    /* Elements were checked when they entered the stage (or made by the
     * kind, which checks them): no second validation on the hot path. */
    rill_msg_t m = {.type = RILL_STREAM_NEXT,
                    .from = st->self,
                    .corr = o->token,
                    .payload = e->payload,
                    .dtor = e->dtor,
                    .arg = e->arg,
                    .origin = e->origin};
    rill_err_t err = rill_tell(st->sys, o->sub, &m);
    if (err == RILL_OK) {
        if (o->demand != INT64_MAX)
            o->demand--;
        o->sent++;
        st->delivered++;
    } else if (err == RILL_EFULL) {
        /* The subscriber asked for more than its mailbox holds: keep the
         * element and try again shortly. */
        o->stash = *e;
        o->has_stash = 1;
        arm_retry(st);
    } else {
        rill_elem_release(e);
        out_gone(st, out);
    }
    memset(e, 0, sizeof(*e));
}

/* Terminal signal to one output; returns 0 if its mailbox refused it. */
static int send_terminal(rill__stage_t *st, int out)
{
    rill__out_t *o = &st->out[out];
    rill_err_t err =
        st->failed ? rill_stream_error(st->sys, rill_sub(o->sub), rill_pub(st->self), o->token,
                                       st->fail_code, st->fail_text)
                   : rill_stream_complete(st->sys, rill_sub(o->sub), rill_pub(st->self), o->token);
    if (err == RILL_EFULL)
        return 0;
    o->state = LINK_DONE;
    return 1;
}

/* The end of a pipeline: a sink, or a stage whose optional output nobody
 * took. */
static int is_terminal(const rill__stage_t *st)
{
    return st->spec.kind->max_out == 0 || (st->spec.kind->optional_out && st->n_out == 0);
}

/* ---- telling the pipeline run ---- */

static void hook_failed(rill__stage_t *st, rill_err_t code, const char *text)
{
    if (rill_aid_is_none(st->hook.run))
        return;
    char *copy = strdup(text ? text : "");
    rill_msg_t m = {.type = RILL__RUN_FAILED, .arg = (uint64_t)code, .payload = copy, .dtor = free};
    if (rill_signal(st->sys, st->hook.run, &m) != RILL_OK)
        free(copy);
}

static void hook_sink_done(rill__stage_t *st, rill_err_t code, const char *text)
{
    if (rill_aid_is_none(st->hook.run))
        return;
    rill__sink_result_t *r = calloc(1, sizeof(*r));
    if (!r)
        return;
    r->code = code;
    r->delivered = st->delivered;
    snprintf(r->stage, sizeof(r->stage), "%s", st->name);
    snprintf(r->text, sizeof(r->text), "%s", text ? text : "");
    rill_msg_t m = {.type = RILL__RUN_SINK_DONE, .payload = r, .dtor = free};
    if (rill_signal(st->sys, st->hook.run, &m) != RILL_OK)
        free(r);
}

/* The stage's outputs are done: stop, unless its kind keeps it running
 * (a Kafka source waiting for the confirms of what it emitted). */
static void stop_or_linger(rill__stage_t *st)
{
    if (st->spec.kind->linger && !st->lingering && st->spec.kind->linger(st, st->final)) {
        st->lingering = 1;
        return;
    }
    rill__stage_end(st);
}

void rill__stage_end(rill__stage_t *st)
{
    st->lingering = 0;
    if (st->failed)
        rill_fail(st->ctx, st->fail_code, "%s", st->fail_text);
    else
        rill_stop_self(st->ctx);
}

/* Try to finish: every output gets its terminal signal once its stash is
 * out. Returns 1 when done (the actor then stops). */
static int try_finish(rill__stage_t *st)
{
    int pending = 0;
    for (uint32_t i = 0; i < st->n_out; i++) {
        rill__out_t *o = &st->out[i];
        if (o->state != LINK_ACTIVE)
            continue;
        if (o->has_stash && !st->failed) {
            pending = 1;
            continue;
        }
        if (o->has_stash) {
            rill_elem_release(&o->stash);
            o->has_stash = 0;
        }
        if (!send_terminal(st, (int)i))
            pending = 1;
    }
    if (pending) {
        arm_retry(st);
        return 0;
    }
    for (uint32_t i = 0; i < st->n_in; i++)
        rill__stage_cancel_in(st, (int)i);
    stop_or_linger(st);
    return 1;
}

void rill__stage_complete(rill__stage_t *st)
{
    if (st->finished)
        return;
    st->finished = 1;
    if (is_terminal(st))
        hook_sink_done(st, st->stop_requested ? RILL_ESTOPPED : RILL_OK, "");
    try_finish(st);
}

static void fail_with_text(rill__stage_t *st, rill_err_t code);

void rill__stage_fail(rill__stage_t *st, rill_err_t code, const char *fmt, ...)
{
    if (st->finished && st->failed)
        return;
    char text[sizeof(st->fail_text)];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    snprintf(st->fail_text, sizeof(st->fail_text), "%.47s: %.108s", st->name, text);
    if (!st->stop_requested)
        hook_failed(st, code ? code : RILL_ESTATE, st->fail_text);
    fail_with_text(st, code);
}

void rill__stage_fail_blame(rill__stage_t *st, rill_origin_t *suspect, rill_err_t code,
                            const char *fmt, ...)
{
    char text[sizeof(st->fail_text)];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    rill__stage_fail(st, code, "%s", text);
    rill__origin_mark(suspect, RILL__VERDICT_BLAME, 0, st->fail_text);
    rill_origin_release(suspect);
}

void rill__stage_fail_from_upstream(rill__stage_t *st, rill_err_t code, const char *text)
{
    if (st->finished && st->failed)
        return;
    snprintf(st->fail_text, sizeof(st->fail_text), "%s", text && *text ? text : "upstream failed");
    fail_with_text(st, code);
}

static void fail_with_text(rill__stage_t *st, rill_err_t code)
{
    st->failed = 1;
    st->fail_code = code ? code : RILL_ESTATE;
    int was_finished = st->finished;
    st->finished = 1;
    if (!was_finished && is_terminal(st))
        hook_sink_done(st, st->fail_code, st->fail_text);
    /* A stop request is not a failure of this stage: end normally after
     * telling downstream. */
    if (st->stop_requested) {
        for (uint32_t i = 0; i < st->n_out; i++)
            if (st->out[i].state == LINK_ACTIVE) {
                if (st->out[i].has_stash) {
                    rill_elem_release(&st->out[i].stash);
                    st->out[i].has_stash = 0;
                }
                send_terminal(st, (int)i);
            }
        for (uint32_t i = 0; i < st->n_in; i++)
            rill__stage_cancel_in(st, (int)i);
        rill_stop_self(st->ctx);
        return;
    }
    try_finish(st);
}

void rill__stage_repump(rill__stage_t *st)
{
    rill_msg_t m = {.type = RILL__STREAM_PUMP};
    rill_signal(st->sys, st->self, &m);
}

/* An output's subscriber cancelled or vanished. When no output is left, the
 * stage has no reason to run: cancel upstream and stop. */
static void out_gone(rill__stage_t *st, int out)
{
    rill__out_t *o = &st->out[out];
    if (o->has_stash) {
        rill_elem_release(&o->stash);
        o->has_stash = 0;
    }
    o->state = LINK_DONE;
    if (st->finished)
        return;
    for (uint32_t i = 0; i < st->n_out; i++)
        if (st->out[i].state == LINK_ACTIVE)
            return;
    if (st->n_out < st->n_out_expected)
        return; /* more subscribers are expected */
    st->finished = 1;
    for (uint32_t i = 0; i < st->n_in; i++)
        rill__stage_cancel_in(st, (int)i);
    stop_or_linger(st);
}

/* ------------------------------------------------------------------ */
/* The stage actor                                                     */
/* ------------------------------------------------------------------ */

static void pump(rill__stage_t *st)
{
    if (!st->finished && st->spec.kind->pump)
        st->spec.kind->pump(st);
}

static void on_subscribe_req(rill__stage_t *st, rill_msg_t *m)
{
    rill_aid_t sub = m->from;
    uint64_t token = m->corr;
    if (rill_aid_is_none(sub))
        return; /* 1.9: nobody to answer */
    if (!rill_aid_is_none(st->forward_subscribe) &&
        !(st->spec.kind->own_subscriber && st->spec.kind->own_subscriber(st, sub))) {
        rill_stream_subscribe(st->sys, rill_pub(st->forward_subscribe), rill_sub(sub), token);
        return;
    }
    if (out_by_sub(st, sub, token) >= 0)
        return; /* a duplicate SUBSCRIBE */
    const char *why = NULL;
    if (st->finished)
        why = "the stream has already ended";
    else if (st->n_out >= st->spec.kind->max_out || st->n_out >= RILL__MAX_LINKS ||
             (st->spec.kind->max_out > 1 && st->n_out_expected > 0 &&
              st->n_out >= st->n_out_expected))
        /* 1.11: a broadcast to n outputs serves n subscribers; one more,
         * never asking, would stall the others at its pace. */
        why = "the stage takes no more subscribers";
    if (why) {
        /* 1.9: ON_SUBSCRIBE first, even when failing at once. */
        rill_stream_on_subscribe(st->sys, rill_sub(sub), rill_pub(st->self), token);
        send_detached_error(st, sub, token, RILL_ESTATE, why);
        return;
    }
    rill__out_t *o = &st->out[st->n_out++];
    memset(o, 0, sizeof(*o));
    o->sub = sub;
    o->token = token;
    o->state = LINK_ACTIVE;
    rill_stream_on_subscribe(st->sys, rill_sub(sub), rill_pub(st->self), token);
    if (st->failed) {
        /* A failed publisher (rill_source_failed): ERROR right after (kept
         * and retried if the mailbox is full), then nothing more to do. */
        st->finished = 1;
        try_finish(st);
        return;
    }
    pump(st);
}

static void on_request(rill__stage_t *st, rill_msg_t *m)
{
    int i = out_by_sub(st, m->from, m->corr);
    if (i < 0 || st->out[i].state != LINK_ACTIVE)
        return; /* 3.6: after cancel, a no-op */
    int64_t n = (int64_t)m->arg;
    if (n <= 0) {
        /* 3.9: a non-positive request is an error, signalled once; the
         * subscription is over. */
        rill__out_t *o = &st->out[i];
        send_detached_error(st, o->sub, o->token, RILL_EINVAL, "rule 3.9: request(n) needs n > 0");
        out_gone(st, i);
        return;
    }
    st->out[i].demand = sat_add(st->out[i].demand, n); /* 3.17 */
    pump(st);
}

static void on_cancel(rill__stage_t *st, rill_msg_t *m)
{
    int i = out_by_sub(st, m->from, m->corr);
    if (i < 0 || st->out[i].state != LINK_ACTIVE)
        return; /* 3.7 */
    out_gone(st, i);
}

static void on_connect(rill__stage_t *st, rill_aid_t up)
{
    if (st->n_in >= st->spec.kind->max_in || st->n_in >= RILL__MAX_LINKS || st->finished) {
        rill__stage_fail(st, RILL_EINVAL, "%s accepts %u input(s)", st->spec.kind->name,
                         st->spec.kind->max_in);
        return;
    }
    rill__in_t *l = &st->in[st->n_in++];
    memset(l, 0, sizeof(*l));
    l->pub = up;
    l->token = ++st->next_token;
    l->state = LINK_PENDING;
    if (rill_stream_subscribe(st->sys, rill_pub(up), rill_sub(st->self), l->token) != RILL_OK) {
        l->state = LINK_DONE;
        if (st->spec.kind->on_input_end)
            st->spec.kind->on_input_end(st, (int)(st->n_in - 1), RILL_ESTOPPED, "upstream is gone");
        return;
    }
    /* A publisher that is ending (failing, completing) as the SUBSCRIBE
     * arrives stops without answering it: watch it until it answers, so
     * that the link does not wait forever. */
    rill_monitor(st->ctx, up, &l->mon);
}

/* The link's publisher ended without answering: the input ends. */
static void in_gone(rill__stage_t *st, int i)
{
    rill__in_t *l = &st->in[i];
    l->state = LINK_DONE;
    l->outstanding = 0;
    if (st->finished)
        return;
    const char *text = "upstream ended without answering the subscription";
    if (st->spec.kind->on_input_end)
        st->spec.kind->on_input_end(st, i, RILL_ESTOPPED, text);
    else
        rill__stage_fail_from_upstream(st, RILL_ESTOPPED, text);
}

/* The gone check is a RETRY timer told apart by its arg. */
#define RETRY_GONE_CHECK 1

static void arm_gone_check(rill__stage_t *st, int64_t after_ms)
{
    if (st->gone_check_armed)
        return;
    rill_msg_t m = {.type = RILL__STREAM_RETRY, .arg = RETRY_GONE_CHECK};
    if (rill_timer_start(st->ctx, after_ms > 0 ? (uint64_t)after_ms : 1, 0, &m, NULL) == RILL_OK)
        st->gone_check_armed = 1;
}

/* Pending links whose publisher ended and whose grace has passed. */
static void check_gone_publishers(rill__stage_t *st)
{
    int64_t now = rill__now_ms(), wait = 0;
    for (uint32_t i = 0; i < st->n_in; i++) {
        rill__in_t *l = &st->in[i];
        if (!l->pub_down_ms || l->state != LINK_PENDING || l->cancelled)
            continue;
        int64_t left = l->pub_down_ms + PUB_GONE_GRACE_MS - now;
        if (left > 0) {
            if (!wait || left < wait)
                wait = left;
            continue;
        }
        in_gone(st, (int)i);
    }
    if (wait)
        arm_gone_check(st, wait);
}

static void on_down(rill__stage_t *st, const rill_msg_t *m)
{
    const rill_down_t *d = m->payload;
    if (!d)
        return;
    for (uint32_t i = 0; i < st->n_in; i++) {
        rill__in_t *l = &st->in[i];
        if (l->mon.id != d->monitor.id || !l->mon.id)
            continue;
        l->mon.id = 0;
        if (l->state == LINK_PENDING && !l->cancelled && !l->pub_down_ms) {
            l->pub_down_ms = rill__now_ms();
            arm_gone_check(st, PUB_GONE_GRACE_MS);
        }
    }
}

static void on_on_subscribe(rill__stage_t *st, rill_msg_t *m)
{
    int i = in_by_token(st, m->corr);
    if (i >= 0 && st->in[i].state == LINK_PENDING && !st->in[i].cancelled) {
        st->in[i].state = LINK_ACTIVE;
        st->in[i].pub = m->from; /* may differ: composites forward */
        if (st->in[i].mon.id) {
            rill_demonitor(st->ctx, st->in[i].mon); /* answered: no need */
            st->in[i].mon.id = 0;
        }
        pump(st);
        return;
    }
    if (i >= 0 && st->in[i].state == LINK_ACTIVE && rill_aid_eq(st->in[i].pub, m->from))
        return; /* a duplicate of our own subscription */
    /* 2.5: not a subscription we are waiting for: cancel it. */
    rill_stream_cancel(st->sys, rill_pub(m->from), rill_sub(st->self), m->corr);
}

static void on_next(rill__stage_t *st, rill_msg_t *m)
{
    int i = in_by_token(st, m->corr);
    rill_elem_t e = rill__elem_take(m);
    if (i < 0 || !rill_aid_eq(st->in[i].pub, m->from)) {
        rill_elem_release(&e); /* not from a subscription of ours */
        return;
    }
    rill__in_t *l = &st->in[i];
    if (l->outstanding > 0)
        l->outstanding--;
    if (l->cancelled || l->state != LINK_ACTIVE || st->finished) {
        rill_elem_release(&e); /* 2.8: in flight when we cancelled */
        return;
    }
    if (!rill__elem_ok(&e)) {
        rill_elem_release(&e); /* 2.13: a NULL element changes nothing */
        return;
    }
    st->received++;
    st->spec.kind->on_next(st, i, &e);
    pump(st);
}

static void on_terminal(rill__stage_t *st, rill_msg_t *m)
{
    int i = in_by_token(st, m->corr);
    if (i < 0 || !rill_aid_eq(st->in[i].pub, m->from) || st->in[i].state == LINK_DONE)
        return;
    int was_cancelled = st->in[i].cancelled;
    st->in[i].state = LINK_DONE;
    st->in[i].outstanding = 0;
    if (was_cancelled || st->finished)
        return;
    rill_err_t code = m->type == RILL_STREAM_COMPLETE ? RILL_OK : (rill_err_t)m->arg;
    if (m->type == RILL_STREAM_ERROR && code == RILL_OK)
        code = RILL_ESTATE;
    const char *text = rill_stream_error_text(m);
    if (code == RILL_ESTOPPED)
        st->stop_requested = 1; /* a pipeline stop travelling downstream */
    if (st->spec.kind->on_input_end)
        st->spec.kind->on_input_end(st, i, code, text);
    else if (code)
        rill__stage_fail_from_upstream(st, code, text);
    else
        rill__stage_complete(st);
    pump(st);
}

static void on_retry(rill__stage_t *st)
{
    st->retry_armed = 0;
    retry_detached_errors(st);
    for (uint32_t i = 0; i < st->n_out; i++) {
        rill__out_t *o = &st->out[i];
        if (o->state != LINK_ACTIVE || !o->has_stash)
            continue;
        rill_elem_t e = o->stash;
        o->has_stash = 0;
        rill__stage_emit(st, (int)i, &e);
    }
    if (st->finished) {
        try_finish(st);
        return;
    }
    pump(st);
}

static rill_err_t stage_behavior(rill_ctx_t *ctx, void *state, rill_msg_t *m)
{
    rill__stage_t *st = state;
    st->ctx = ctx;
    switch (m->type) {
    case RILL_STREAM_SUBSCRIBE:
        on_subscribe_req(st, m);
        break;
    case RILL_STREAM_REQUEST:
        on_request(st, m);
        break;
    case RILL_STREAM_CANCEL:
        on_cancel(st, m);
        break;
    case RILL_STREAM_ON_SUBSCRIBE:
        on_on_subscribe(st, m);
        break;
    case RILL_STREAM_NEXT:
        on_next(st, m);
        break;
    case RILL_STREAM_COMPLETE:
    case RILL_STREAM_ERROR:
        on_terminal(st, m);
        break;
    case RILL__STREAM_CONNECT:
        on_connect(st, (rill_aid_t){m->arg});
        break;
    case RILL__STREAM_STOP_NOW:
        st->stop_requested = 1;
        st->final = 1;
        if (st->lingering) {
            rill__stage_end(st); /* a source waiting for confirms: no longer */
            break;
        }
        rill__stage_fail(st, RILL_ESTOPPED, "pipeline stopped");
        break;
    case RILL__STREAM_DRAIN:
        st->final = 1; /* a drain or a stop ends the pipeline for good */
        if (st->finished)
            break;
        if (st->spec.kind->on_drain)
            st->spec.kind->on_drain(st);
        else
            rill__stage_complete(st);
        break;
    case RILL__STREAM_FINISH:
        if (st->lingering)
            rill__stage_end(st);
        break;
    case RILL__STREAM_RETRY:
        if (m->arg == RETRY_GONE_CHECK) {
            st->gone_check_armed = 0;
            check_gone_publishers(st);
            pump(st);
        } else {
            on_retry(st);
        }
        break;
    case RILL_MSG_DOWN:
        on_down(st, m);
        break;
    case RILL__STREAM_PUMP:
        pump(st);
        break;
    default:
        if (st->spec.kind->on_msg)
            st->spec.kind->on_msg(st, m);
        break;
    }
    return RILL_OK;
}

static rill_err_t stage_init(rill_ctx_t *ctx, void *state)
{
    rill__stage_t *st = state;
    st->ctx = ctx;
    st->self = rill_self(ctx);
    if (st->spec.kind->start) {
        rill_err_t err = st->spec.kind->start(st);
        if (err)
            return err;
    }
    return RILL_OK;
}

static void stage_terminate(rill_ctx_t *ctx, void *state, const rill_exit_t *reason)
{
    (void)reason;
    rill__stage_t *st = state;
    st->ctx = ctx;
    if (!st->finished && is_terminal(st))
        hook_sink_done(st, RILL_ESTOPPED, "the stage was stopped");
    for (uint32_t i = 0; i < st->n_out; i++)
        if (st->out[i].has_stash)
            rill_elem_release(&st->out[i].stash);
    if (st->spec.kind->destroy)
        st->spec.kind->destroy(st->spec.impl);
    if (st->hook.p)
        rill__pipeline_actor_out(st->hook.p);
    free(st);
}

/* ------------------------------------------------------------------ */
/* Spawning                                                            */
/* ------------------------------------------------------------------ */

rill_err_t rill__stage_spawn_hooked(rill_system_t *sys, rill_stage_t *spec,
                                    const rill_stage_opts_t *opts,
                                    const rill__pipeline_hook_t *hook, rill_aid_t *aid,
                                    char *errstr, size_t errstr_size)
{
    if (aid)
        *aid = RILL_AID_NONE;
    if (!spec)
        return rill__fail(RILL_EINVAL, errstr, errstr_size, "the stage spec is NULL");
    if (spec->err) {
        rill_err_t err = rill_stage_error(spec, errstr, errstr_size);
        rill_stage_free(spec);
        return err;
    }
    if (!sys || !aid) {
        rill_stage_free(spec);
        return rill__fail(RILL_EINVAL, errstr, errstr_size, "system and aid must be set");
    }
    const rill__kind_t *k = spec->kind;
    rill_err_t perr = rill__stage_prepare(spec, sys, errstr, errstr_size);
    if (perr) {
        rill_stage_free(spec);
        return perr;
    }
    rill__stage_t *st = calloc(1, sizeof(*st));
    if (!st) {
        rill_stage_free(spec);
        return rill__fail(RILL_ENOMEM, errstr, errstr_size, "out of memory");
    }
    st->spec = *spec;
    free(spec);
    st->sys = sys;
    snprintf(st->name, sizeof(st->name), "%s", opts && opts->name ? opts->name : k->name);
    uint32_t cap = opts && opts->mailbox_capacity ? opts->mailbox_capacity : DEFAULT_STAGE_MAILBOX;
    if (k->mailbox_min && cap < k->mailbox_min(st->spec.impl))
        cap = k->mailbox_min(st->spec.impl);
    uint32_t reserve = k->max_in > 1 ? k->max_in : 1;
    if (k->max_in > 0 && cap <= reserve)
        cap = reserve + 1;
    /* The mailbox rounds up to a power of two; the window uses what it
     * really is, minus one slot per input for its terminal signal. */
    uint32_t real = 1;
    while (real < cap)
        real <<= 1;
    st->window = k->max_in > 0 ? real - reserve : 0;
    st->n_out_expected = k->max_out > 0 && k->max_out < RILL__MAX_LINKS ? k->max_out : 1;
    if (k->max_out == 0 || k->optional_out)
        st->n_out_expected = 0;
    st->redeliver_drops = opts ? opts->redeliver_drops : 0;
    if (hook)
        st->hook = *hook;
    if (st->hook.p)
        rill__pipeline_actor_in(st->hook.p);
    rill_spawn_opts_t o = {.behavior = stage_behavior,
                           .init = stage_init,
                           .terminate = stage_terminate,
                           .state = st,
                           .name = opts ? opts->name : NULL,
                           .executor = opts ? opts->executor : RILL_EXECUTOR_ANY,
                           .link_to = opts ? opts->link_to : RILL_AID_NONE,
                           .mailbox_capacity = real};
    rill_err_t err = rill__spawn_tagged(sys, &o, k, aid);
    if (err) {
        if (st->spec.kind->destroy)
            st->spec.kind->destroy(st->spec.impl);
        if (st->hook.p)
            rill__pipeline_actor_out(st->hook.p);
        free(st);
        return rill__fail(err, errstr, errstr_size, "cannot spawn the %s stage: %s", k->name,
                          rill_err2str(err));
    }
    return RILL_OK;
}

rill_err_t rill_stage_spawn(rill_system_t *sys, rill_stage_t *stage, const rill_stage_opts_t *opts,
                            rill_aid_t *aid, char *errstr, size_t errstr_size)
{
    return rill__stage_spawn_hooked(sys, stage, opts, NULL, aid, errstr, errstr_size);
}
