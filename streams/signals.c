/*
 * Elements and signals: the element helpers, and the two sides of the
 * protocol as actor messages, for stages and hand-written participants
 * (see include/rill/stream.h).
 */
#include <stdlib.h>
#include <string.h>

#include "../actors/seam.h"
#include "stream_int.h"

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
    rill_origin_release(e->origin);
    memset(e, 0, sizeof(*e));
}

void rill_elem_confirm(rill_elem_t *e)
{
    if (!e)
        return;
    if (e->dtor)
        e->dtor(e->payload);
    rill_origin_confirm(e->origin);
    memset(e, 0, sizeof(*e));
}

static _Thread_local rill__elem_scope_t *elem_scope;

void rill__elem_scope_enter(rill__elem_scope_t *sc, const rill_elem_t *in, rill_origin_t *origin)
{
    *sc = (rill__elem_scope_t){.in = in, .origin = origin, .prev = elem_scope};
    elem_scope = sc;
}

void rill__elem_scope_leave(rill__elem_scope_t *sc)
{
    elem_scope = sc->prev;
}

/* Mark the origin of e (or, for the input of the stage function running
 * now, the origin its stage holds) and release e. */
static rill_err_t settle_as(rill_elem_t *e, uint32_t verdict, uint32_t delay_ms, const char *text)
{
    if (!e)
        return RILL_EINVAL;
    rill_origin_t *o = e->origin;
    rill__elem_scope_t *sc = elem_scope;
    int scoped = !o && sc && sc->in == e && sc->origin;
    if (scoped)
        o = sc->origin;
    if (!o) {
        rill_elem_release(e);
        return RILL_EINVAL;
    }
    if (rill__origin_mark(o, verdict, delay_ms, text)) {
        rill_elem_release(e);
        return RILL_ENOMEM;
    }
    if (scoped)
        sc->verdict = verdict;
    rill_elem_release(e);
    return RILL_OK;
}

rill_err_t rill_elem_reject(rill_elem_t *e, const char *reason)
{
    return settle_as(e, RILL__VERDICT_REJECT, 0, reason && *reason ? reason : "rejected");
}

rill_err_t rill_elem_retry(rill_elem_t *e, uint32_t delay_ms)
{
    return settle_as(e, RILL__VERDICT_RETRY, delay_ms, "retry asked for");
}

rill_elem_t rill_elem_of(const rill_msg_t *next)
{
    rill_elem_t e = {0};
    if (next) {
        e.payload = next->payload;
        e.dtor = next->dtor;
        e.arg = next->arg;
        e.origin = next->origin;
    }
    return e;
}

rill_elem_t rill_elem_take(rill_msg_t *next)
{
    rill_elem_t e = {0};
    if (next && next->type == RILL_STREAM_NEXT)
        e = rill__elem_take(next);
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
                    .arg = e->arg,
                    .origin = e->origin};
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

/* The kind of stage aid runs (NULL: not a stage, or gone: not judged). */
static const rill__kind_t *stage_kind(rill_system_t *sys, rill_aid_t aid)
{
    const void *tag = NULL;
    if (rill__actor_tag(sys, aid, &tag) != RILL_OK)
        return NULL;
    return tag; /* only stages are tagged, with their kind */
}

enum { CLAIM_IN = 0, CLAIM_OUT = 1 };

/*
 * A connection is judged at the call, before anything is sent, so that a
 * wrong one harms no stage (the downstream stage would fail on a CONNECT
 * it cannot take, and with it what it was connected to already): a stage
 * to itself, a sink as the upstream, a source as the downstream, and a
 * stage whose inputs or outputs are all taken. Inputs and outputs are
 * claimed here (rill__actor_claim), so that two calls racing for the last
 * one cannot both have it. Actors that are not stages, and stages that
 * are gone, are not judged: the protocol handles them as before.
 */
rill_err_t rill_stage_connect(rill_system_t *sys, rill_aid_t upstream, rill_aid_t downstream,
                              char *errstr, size_t errstr_size)
{
    if (!sys || rill_aid_is_none(upstream) || rill_aid_is_none(downstream))
        return rill__fail(RILL_EINVAL, errstr, errstr_size,
                          "system, upstream and downstream must be set");
    if (rill_aid_eq(upstream, downstream))
        return rill__fail(RILL_EINVAL, errstr, errstr_size,
                          "a stage cannot be connected to itself (actor %#llx)",
                          (unsigned long long)upstream.id);
    const rill__kind_t *up = stage_kind(sys, upstream), *down = stage_kind(sys, downstream);
    if (up && up->max_out == 0)
        return rill__fail(RILL_EINVAL, errstr, errstr_size,
                          "the upstream (a %s stage) is a sink: it has no output to connect",
                          up->name);
    if (down && down->max_in == 0)
        return rill__fail(RILL_EINVAL, errstr, errstr_size,
                          "the downstream (a %s stage) is a source: it takes no input", down->name);
    int up_claimed = 0, down_claimed = 0;
    if (up) {
        uint32_t max = up->max_out < RILL__MAX_LINKS ? up->max_out : RILL__MAX_LINKS;
        rill_err_t err = rill__actor_claim(sys, upstream, CLAIM_OUT, max);
        if (err == RILL_EFULL)
            return rill__fail(RILL_EINVAL, errstr, errstr_size,
                              "the upstream %s stage has all its %u subscriber(s) already",
                              up->name, max);
        up_claimed = err == RILL_OK;
    }
    if (down) {
        uint32_t max = down->max_in < RILL__MAX_LINKS ? down->max_in : RILL__MAX_LINKS;
        rill_err_t err = rill__actor_claim(sys, downstream, CLAIM_IN, max);
        if (err == RILL_EFULL) {
            if (up_claimed)
                rill__actor_unclaim(sys, upstream, CLAIM_OUT);
            return rill__fail(RILL_EINVAL, errstr, errstr_size,
                              "the downstream %s stage has all its %u input(s) connected already",
                              down->name, max);
        }
        down_claimed = err == RILL_OK;
    }
    rill_msg_t m = {.type = RILL__STREAM_CONNECT, .arg = upstream.id};
    rill_err_t err = rill_signal(sys, downstream, &m);
    if (err) {
        if (up_claimed)
            rill__actor_unclaim(sys, upstream, CLAIM_OUT);
        if (down_claimed)
            rill__actor_unclaim(sys, downstream, CLAIM_IN);
        return rill__fail(err, errstr, errstr_size, "cannot connect: the downstream %s",
                          err == RILL_ESTOPPED ? "is gone" : rill_err2str(err));
    }
    return RILL_OK;
}
