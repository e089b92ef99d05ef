/*
 * The stage engine: one actor behaviour that speaks the Reactive-Streams
 * protocol on both sides and calls a stage kind's hooks (see
 * stream_int.h). Also the public signal functions and element helpers.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../actors/seam.h"
#include "stream_int.h"

#define DEFAULT_STAGE_MAILBOX 64u
#define RETRY_MS              1

/* ------------------------------------------------------------------ */
/* Elements                                                            */
/* ------------------------------------------------------------------ */

int rill_elem_valid(const rill_elem_t *e)
{
    return e && e->payload;
}

void rill_elem_release(rill_elem_t *e)
{
    if (!e)
        return;
    if (e->dtor)
        e->dtor(e->payload);
    memset(e, 0, sizeof(*e));
}

rill_elem_t rill_elem_of(const rill_msg_t *next)
{
    rill_elem_t e = {0};
    if (next) {
        e.payload = next->payload;
        e.dtor = next->dtor;
        e.arg = next->arg;
    }
    return e;
}

/* Take the element out of a NEXT message: the runtime will not free it. */
static inline rill_elem_t elem_take(rill_msg_t *m)
{
    rill_elem_t e;
    e.payload = m->payload;
    e.dtor = m->dtor;
    e.arg = m->arg;
    m->dtor = NULL;
    return e;
}

/* ------------------------------------------------------------------ */
/* Signals                                                             */
/* ------------------------------------------------------------------ */

static rill_err_t signal_to(rill_system_t *sys, rill_aid_t to, uint32_t type, rill_aid_t from,
                            uint64_t token, uint64_t arg)
{
    if (!sys || rill_aid_is_none(to) || rill_aid_is_none(from))
        return RILL_EINVAL;
    rill_msg_t m = {.type = type, .from = from, .corr = token, .arg = arg};
    return rill_signal(sys, to, &m);
}

rill_err_t rill_stream_subscribe(rill_system_t *sys, rill_pub_t to, rill_sub_t from, uint64_t token)
{
    return signal_to(sys, to.aid, RILL_STREAM_SUBSCRIBE, from.aid, token, 0);
}

rill_err_t rill_stream_request(rill_system_t *sys, rill_pub_t to, rill_sub_t from, uint64_t token,
                               int64_t n)
{
    return signal_to(sys, to.aid, RILL_STREAM_REQUEST, from.aid, token, (uint64_t)n);
}

rill_err_t rill_stream_cancel(rill_system_t *sys, rill_pub_t to, rill_sub_t from, uint64_t token)
{
    return signal_to(sys, to.aid, RILL_STREAM_CANCEL, from.aid, token, 0);
}

rill_err_t rill_stream_on_subscribe(rill_system_t *sys, rill_sub_t to, rill_pub_t from,
                                    uint64_t token)
{
    return signal_to(sys, to.aid, RILL_STREAM_ON_SUBSCRIBE, from.aid, token, 0);
}

rill_err_t rill_stream_next(rill_system_t *sys, rill_sub_t to, rill_pub_t from, uint64_t token,
                            const rill_elem_t *e)
{
    if (!sys || rill_aid_is_none(to.aid) || rill_aid_is_none(from.aid) || !rill_elem_valid(e))
        return RILL_EINVAL;
    rill_msg_t m = {.type = RILL_STREAM_NEXT,
                    .from = from.aid,
                    .corr = token,
                    .payload = e->payload,
                    .dtor = e->dtor,
                    .arg = e->arg};
    return rill_tell(sys, to.aid, &m);
}

rill_err_t rill_stream_complete(rill_system_t *sys, rill_sub_t to, rill_pub_t from, uint64_t token)
{
    if (!sys || rill_aid_is_none(to.aid) || rill_aid_is_none(from.aid))
        return RILL_EINVAL;
    rill_msg_t m = {.type = RILL_STREAM_COMPLETE, .from = from.aid, .corr = token};
    return rill_tell(sys, to.aid, &m);
}

rill_err_t rill_stream_error(rill_system_t *sys, rill_sub_t to, rill_pub_t from, uint64_t token,
                             rill_err_t code, const char *text)
{
    if (!sys || rill_aid_is_none(to.aid) || rill_aid_is_none(from.aid))
        return RILL_EINVAL;
    char *copy = text ? strdup(text) : NULL;
    rill_msg_t m = {.type = RILL_STREAM_ERROR,
                    .from = from.aid,
                    .corr = token,
                    .arg = (uint64_t)code,
                    .payload = copy,
                    .dtor = copy ? free : NULL};
    rill_err_t err = rill_tell(sys, to.aid, &m);
    if (err)
        free(copy);
    return err;
}

const char *rill_stream_error_text(const rill_msg_t *error)
{
    if (!error || error->type != RILL_STREAM_ERROR || !error->payload)
        return "";
    return error->payload;
}

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
                    .arg = e->arg};
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
    if (st->failed) {
        rill_fail(st->ctx, st->fail_code, "%s", st->fail_text);
    } else {
        rill_stop_self(st->ctx);
    }
    return 1;
}

void rill__stage_complete(rill__stage_t *st)
{
    if (st->finished)
        return;
    st->finished = 1;
    if (is_terminal(st) && st->hook.sink_done)
        st->hook.sink_done(st->hook.p, st->stop_requested ? RILL_ESTOPPED : RILL_OK, st->name, "",
                           st->delivered);
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
    if (!st->stop_requested && st->hook.failed)
        st->hook.failed(st->hook.p, code ? code : RILL_ESTATE, st->fail_text);
    fail_with_text(st, code);
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
    if (!was_finished && is_terminal(st) && st->hook.sink_done)
        st->hook.sink_done(st->hook.p, st->fail_code, st->name, st->fail_text, st->delivered);
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
    rill_stop_self(st->ctx);
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
    else if (st->n_out >= st->spec.kind->max_out || st->n_out >= RILL__MAX_LINKS)
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
    }
}

static void on_on_subscribe(rill__stage_t *st, rill_msg_t *m)
{
    int i = in_by_token(st, m->corr);
    if (i >= 0 && st->in[i].state == LINK_PENDING && !st->in[i].cancelled) {
        st->in[i].state = LINK_ACTIVE;
        st->in[i].pub = m->from; /* may differ: composites forward */
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
    rill_elem_t e = elem_take(m);
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
        rill__stage_fail(st, RILL_ESTOPPED, "pipeline stopped");
        break;
    case RILL__STREAM_DRAIN:
        if (st->finished)
            break;
        if (st->spec.kind->on_drain)
            st->spec.kind->on_drain(st);
        else
            rill__stage_complete(st);
        break;
    case RILL__STREAM_RETRY:
        on_retry(st);
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
    if (!st->finished && is_terminal(st) && st->hook.sink_done)
        st->hook.sink_done(st->hook.p, RILL_ESTOPPED, st->name, "the stage was stopped",
                           st->delivered);
    for (uint32_t i = 0; i < st->n_out; i++)
        if (st->out[i].has_stash)
            rill_elem_release(&st->out[i].stash);
    if (st->spec.kind->destroy)
        st->spec.kind->destroy(st->spec.impl);
    if (st->hook.ended)
        st->hook.ended(st->hook.p, st);
    free(st);
}

void rill_stage_free(rill_stage_t *stage)
{
    if (!stage)
        return;
    if (stage->kind && stage->kind->destroy)
        stage->kind->destroy(stage->impl);
    free(stage);
}

rill_stage_t *rill__stage_spec_new(const rill__kind_t *kind, void *impl)
{
    if (!impl)
        return NULL;
    rill_stage_t *s = calloc(1, sizeof(*s));
    if (!s) {
        if (kind->destroy)
            kind->destroy(impl);
        return NULL;
    }
    s->kind = kind;
    s->impl = impl;
    return s;
}

rill_err_t rill__stage_spawn_hooked(rill_system_t *sys, rill_stage_t *spec,
                                    const rill_stage_opts_t *opts,
                                    const rill__pipeline_hook_t *hook, rill_aid_t *aid)
{
    if (!spec)
        return RILL_EINVAL;
    if (!sys || !aid) {
        rill_stage_free(spec);
        return RILL_EINVAL;
    }
    rill__stage_t *st = calloc(1, sizeof(*st));
    if (!st) {
        rill_stage_free(spec);
        return RILL_ENOMEM;
    }
    st->spec = *spec;
    free(spec);
    st->sys = sys;
    const rill__kind_t *k = st->spec.kind;
    snprintf(st->name, sizeof(st->name), "%s", opts && opts->name ? opts->name : k->name);
    uint32_t cap = opts && opts->mailbox_capacity ? opts->mailbox_capacity : DEFAULT_STAGE_MAILBOX;
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
    if (hook)
        st->hook = *hook;
    if (st->hook.spawned)
        st->hook.spawned(st->hook.p);
    rill_spawn_opts_t o = {.behavior = stage_behavior,
                           .init = stage_init,
                           .terminate = stage_terminate,
                           .state = st,
                           .name = opts ? opts->name : NULL,
                           .executor = opts ? opts->executor : RILL_EXECUTOR_ANY,
                           .link_to = opts ? opts->link_to : RILL_AID_NONE,
                           .mailbox_capacity = real};
    rill_err_t err = rill_spawn(sys, &o, aid);
    if (err) {
        if (st->spec.kind->destroy)
            st->spec.kind->destroy(st->spec.impl);
        if (st->hook.ended)
            st->hook.ended(st->hook.p, NULL);
        free(st);
    }
    return err;
}

rill_err_t rill_stage_spawn(rill_system_t *sys, rill_stage_t *stage, const rill_stage_opts_t *opts,
                            rill_aid_t *aid)
{
    return rill__stage_spawn_hooked(sys, stage, opts, NULL, aid);
}

rill_err_t rill_stage_connect(rill_system_t *sys, rill_aid_t upstream, rill_aid_t downstream)
{
    if (!sys || rill_aid_is_none(upstream) || rill_aid_is_none(downstream))
        return RILL_EINVAL;
    rill_msg_t m = {.type = RILL__STREAM_CONNECT, .arg = upstream.id};
    return rill_signal(sys, downstream, &m);
}
