/*
 * The window stage (rill_stage_window): windowed aggregation by event
 * time on the stateful core (core.h). Every record is folded into the
 * aggregates of its key's windows in its partition's state, in the core's
 * transaction, so the aggregates commit with the offsets of the records
 * they hold.
 *
 * Keys inside a partition's state (the store belongs to this stage, so
 * the whole namespace is ours):
 *
 *   0x00                              -> stream time (int64, big endian)
 *   0x01 keylen(2) key start(8)       -> end(8) closed(1) aggregate
 *
 * where start and end are event times with the sign bit flipped, big
 * endian (so windows sort by start), end is exclusive, and closed is 1
 * once the final result went downstream. A closed window is deleted, in a
 * later transaction, when the origin of its final result (one of this
 * stage's own, rill__origin_new) is settled: so a result is never lost,
 * and one whose delete did not commit is emitted again by the next run.
 *
 * Open windows are found for closing through a min-heap per partition by
 * close time (end + grace), rebuilt from the store when the stage starts.
 * Its entries are hints: an entry whose window is gone, closed or has
 * another end by now (sessions grow and merge) is skipped.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../actors/seam.h"
#include "core.h"

#define K_STREAM_TIME 0x00
#define K_WINDOW      0x01
/* The wall-clock tick's argument (a kind's own ticks set the top bit). */
#define TICK_ARG      (1ull << 63 | 0x77)
#define WKEY_MAX      (1 + 2 + RILL_WINDOW_KEY_MAX + 8)
#define WVAL_HEAD     9

typedef struct wentry {
    int64_t close_at; /* end + grace */
    uint8_t *k;       /* the window key */
    size_t kl;
} wentry_t;

/* The stage's part of a partition (parallel to the core's parts). */
typedef struct wpart {
    int64_t stream_time;   /* INT64_MIN: no record yet */
    int stream_time_dirty; /* changed in the open transaction: stored at its commit */
    wentry_t *heap;
    size_t n, cap;
} wpart_t;

/* A final result out, waiting for its settle notice. */
typedef struct pending {
    uint64_t id;
    int done; /* settled: removed at the next compaction */
    size_t part;
    uint8_t *k; /* the window key (malloc'ed; freed when settled) */
    size_t kl;
} pending_t;

typedef struct window {
    rill__sf_t core;
    rill_window_opts_t o;
    rill_window_ops_t ops;
    void *opaque;
    /* a run's state */
    wpart_t *wp;
    size_t n_wp;
    pending_t *pend; /* by id (made in order), settled ones until compacted */
    size_t n_pend, cap_pend, n_done;
    uint64_t next_id;
    rill_timer_t tick;
} window_t;

/* ------------------------------------------------------------ encoding */

static void put_be64(uint8_t *b, int64_t v)
{
    uint64_t u = (uint64_t)v ^ (1ull << 63);
    for (int i = 7; i >= 0; i--, u >>= 8)
        b[i] = (uint8_t)u;
}

static int64_t get_be64(const uint8_t *b)
{
    uint64_t u = 0;
    for (int i = 0; i < 8; i++)
        u = u << 8 | b[i];
    return (int64_t)(u ^ (1ull << 63));
}

static size_t wkey_make(uint8_t *b, const void *key, size_t kl, int64_t start)
{
    b[0] = K_WINDOW;
    b[1] = (uint8_t)(kl >> 8);
    b[2] = (uint8_t)kl;
    if (kl)
        memcpy(b + 3, key, kl);
    put_be64(b + 3 + kl, start);
    return 3 + kl + 8;
}

/* The key and start of a window key; 0 if it is not one. */
static int wkey_parse(const uint8_t *k, size_t len, const uint8_t **key, size_t *kl, int64_t *start)
{
    if (len < 11 || k[0] != K_WINDOW)
        return 0;
    *kl = (size_t)k[1] << 8 | k[2];
    if (len != 3 + *kl + 8)
        return 0;
    *key = k + 3;
    *start = get_be64(k + 3 + *kl);
    return 1;
}

static int64_t add_sat(int64_t a, uint64_t b)
{
    if (b >= (uint64_t)INT64_MAX || a > INT64_MAX - (int64_t)b)
        return INT64_MAX;
    return a + (int64_t)b;
}

static int64_t floor_div_mul(int64_t t, int64_t d)
{
    int64_t q = t / d;
    if (t % d < 0)
        q--;
    return q * d;
}

static int64_t now_ms(window_t *w)
{
    if (w->o.now_ms)
        return w->o.now_ms(w->o.now_opaque);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Closed: stream time passed end + grace, or the wall clock end + grace +
 * wall_close_ms. now is fetched when needed (*now INT64_MIN: not yet). */
static int is_closed(window_t *w, const wpart_t *wp, int64_t close_at, int64_t *now)
{
    if (wp->stream_time > close_at)
        return 1;
    if (w->o.wall_close_ms == UINT64_MAX)
        return 0;
    if (*now == INT64_MIN)
        *now = now_ms(w);
    return *now > add_sat(close_at, w->o.wall_close_ms);
}

/* --------------------------------------------------------------- index */

static int heap_push(wpart_t *wp, int64_t close_at, const uint8_t *k, size_t kl)
{
    if (wp->n == wp->cap) {
        size_t cap = wp->cap ? wp->cap * 2 : 16;
        wentry_t *v = realloc(wp->heap, cap * sizeof(*v));
        if (!v)
            return -1;
        wp->heap = v;
        wp->cap = cap;
    }
    uint8_t *copy = malloc(kl);
    if (!copy)
        return -1;
    memcpy(copy, k, kl);
    size_t i = wp->n++;
    while (i > 0 && wp->heap[(i - 1) / 2].close_at > close_at) {
        wp->heap[i] = wp->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    wp->heap[i] = (wentry_t){close_at, copy, kl};
    return 0;
}

/* Take the top entry out (the caller frees its key). */
static wentry_t heap_pop(wpart_t *wp)
{
    wentry_t top = wp->heap[0];
    wentry_t last = wp->heap[--wp->n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        int64_t at = last.close_at;
        if (l < wp->n && wp->heap[l].close_at < at)
            m = l, at = wp->heap[l].close_at;
        if (l + 1 < wp->n && wp->heap[l + 1].close_at < at)
            m = l + 1;
        if (m == i)
            break;
        wp->heap[i] = wp->heap[m];
        i = m;
    }
    if (wp->n)
        wp->heap[i] = last;
    return top;
}

/* The stage's part of core partition p (grown as the core's parts). */
static wpart_t *wpart(window_t *w, rill__sf_part_t *p)
{
    size_t i = (size_t)(p - w->core.parts);
    if (i >= w->n_wp) {
        size_t n = w->core.cap_parts;
        wpart_t *v = realloc(w->wp, n * sizeof(*v));
        if (!v) {
            rill__stage_fail(w->core.st, RILL_ENOMEM, "out of memory for the windows' index");
            return NULL;
        }
        for (size_t j = w->n_wp; j < n; j++)
            v[j] = (wpart_t){.stream_time = INT64_MIN};
        w->wp = v;
        w->n_wp = n;
    }
    return &w->wp[i];
}

/* The window's part of p, for rill__sf_enter (the core is the window's
 * first member). */
static void *wpart_of(rill__sf_t *c, rill__sf_part_t *p)
{
    return wpart((window_t *)c, p);
}

/* ------------------------------------------------------------- results */

static void result_free(void *payload)
{
    free(payload);
}

const rill_window_result_t *rill_window_result(const rill_elem_t *e)
{
    return e && e->dtor == result_free ? e->payload : NULL;
}

/* Queue a result of window (key, start) with value v (end, closed,
 * aggregate) of partition p; origin taken. -1 after failing the stage. */
static int emit_result(window_t *w, rill__sf_part_t *p, const uint8_t *key, size_t kl,
                       int64_t start, const uint8_t *v, int final, rill_origin_t *origin)
{
    size_t agg = w->ops.agg_size, tl = strlen(p->topic) + 1;
    rill_window_result_t *r = malloc(sizeof(*r) + kl + agg + tl);
    if (!r) {
        rill_origin_release(origin);
        rill__stage_fail(w->core.st, RILL_ENOMEM, "out of memory for a window's result");
        return -1;
    }
    uint8_t *b = (uint8_t *)(r + 1);
    memcpy(b, v + WVAL_HEAD, agg);
    if (kl)
        memcpy(b + agg, key, kl);
    memcpy(b + agg + kl, p->topic, tl);
    *r = (rill_window_result_t){.key = b + agg,
                                .key_len = kl,
                                .start_ms = start,
                                .end_ms = get_be64(v),
                                .agg = b,
                                .agg_len = agg,
                                .final = final,
                                .topic = (const char *)(b + agg + kl),
                                .partition = p->partition};
    rill_elem_t e = {.payload = r, .dtor = result_free, .origin = origin};
    rill__equeue_t *q = &w->core.q;
    if (!rill__equeue_push(q, &e) && (rill__equeue_grow(q) || !rill__equeue_push(q, &e))) {
        rill_elem_release(&e);
        rill__stage_fail(w->core.st, RILL_ENOMEM, "out of memory for a window's result");
        return -1;
    }
    return 0;
}

/* Emit the final result of window k (value v) of p, with an origin of
 * the stage's own: its settle notice deletes the window. k (malloc'ed)
 * is taken. -1 after failing the stage. */
static int emit_final(window_t *w, rill__sf_part_t *p, uint8_t *k, size_t kl, const uint8_t *v)
{
    const uint8_t *key;
    size_t keyl;
    int64_t start;
    if (!wkey_parse(k, kl, &key, &keyl, &start)) {
        free(k);
        return 0;
    }
    if (w->n_pend == w->cap_pend) {
        size_t cap = w->cap_pend ? w->cap_pend * 2 : 16;
        pending_t *pv = realloc(w->pend, cap * sizeof(*pv));
        if (!pv) {
            free(k);
            rill__stage_fail(w->core.st, RILL_ENOMEM, "out of memory for a window's result");
            return -1;
        }
        w->pend = pv;
        w->cap_pend = cap;
    }
    rill__stage_t *st = w->core.st;
    uint64_t id = ++w->next_id;
    rill_origin_t *o = rill__origin_new(st->sys, st->self, id, 0);
    if (!o) {
        free(k);
        rill__stage_fail(st, RILL_ENOMEM, "out of memory for a window's result");
        return -1;
    }
    pending_t *pe = &w->pend[w->n_pend++];
    pe->id = id;
    pe->done = 0;
    pe->part = (size_t)(p - w->core.parts);
    pe->k = k;
    pe->kl = kl;
    atomic_fetch_add_explicit(&w->core.store->windows_closed, 1, memory_order_relaxed);
    return emit_result(w, p, key, keyl, start, v, 1, o);
}

/* Close the windows of p that are due, by stream time or the wall clock
 * (view: p's view of the open transaction). -1 after failing the stage. */
static int close_due(window_t *w, rill__sf_part_t *p, wpart_t *wp, rill_state_t *view, int64_t *now)
{
    uint8_t v[WVAL_HEAD + RILL_WINDOW_AGG_MAX];
    size_t vlen = WVAL_HEAD + w->ops.agg_size;
    while (wp->n && is_closed(w, wp, wp->heap[0].close_at, now)) {
        wentry_t e = heap_pop(wp);
        const void *cur;
        size_t cl;
        int rc = 0;
        int64_t real = INT64_MIN;
        if (rill_state_get(view, e.k, e.kl, &cur, &cl) == RILL_OK && cl == vlen &&
            !((const uint8_t *)cur)[8])
            real = add_sat(get_be64(cur), w->o.grace_ms);
        if (real > e.close_at) {
            /* A session that grew since: its entry moves to its new close
             * (one entry per window, not one per record). */
            if (heap_push(wp, real, e.k, e.kl)) {
                rill__stage_fail(w->core.st, RILL_ENOMEM, "out of memory for the windows' index");
                rc = -1;
            }
        } else if (real == e.close_at) {
            memcpy(v, cur, vlen);
            v[8] = 1;
            rill_err_t err = rill_state_put(view, e.k, e.kl, v, vlen);
            if (err) {
                rill__sf_abort(&w->core);
                rill__stage_fail(w->core.st, err, "cannot mark a window closed in store %s: %s",
                                 w->core.store->name, rill_err2str(err));
                rc = -1;
            } else {
                rc = emit_final(w, p, e.k, e.kl, v); /* the key goes with the result */
                e.k = NULL;
            }
        }
        free(e.k);
        if (rc)
            return -1;
    }
    return 0;
}

/* ------------------------------------------------------------- records */

typedef struct rec {
    window_t *w;
    rill__sf_part_t *p;
    wpart_t *wp;
    rill_state_t *view;
    const rill_elem_t *e;
    rill_origin_t *origin; /* the input's, for updates */
    int64_t t, now;
    const void *key;
    size_t kl;
    int late; /* set: every window of the record closed */
} rec_t;

/* Write window (key, start) with end and aggregate agg, index it if new,
 * and emit an update if asked; made: its window key (made_len bytes)
 * when the caller made it already, or NULL. 0, or an error. */
static rill_err_t window_put(rec_t *r, int64_t start, int64_t end, const uint8_t *agg, int is_new,
                             const uint8_t *made, size_t made_len)
{
    window_t *w = r->w;
    uint8_t k[WKEY_MAX], v[WVAL_HEAD + RILL_WINDOW_AGG_MAX];
    const uint8_t *key = made ? made : k;
    size_t kl = made ? made_len : wkey_make(k, r->key, r->kl, start);
    put_be64(v, end);
    v[8] = 0;
    memcpy(v + WVAL_HEAD, agg, w->ops.agg_size);
    rill_err_t err = rill_state_put(r->view, key, kl, v, WVAL_HEAD + w->ops.agg_size);
    if (!err && is_new && heap_push(r->wp, add_sat(end, w->o.grace_ms), key, kl))
        err = RILL_ENOMEM;
    if (!err && w->o.emit_updates &&
        emit_result(w, r->p, r->key, r->kl, start, v, 0, rill_origin_ref(r->origin)))
        err = RILL_ENOMEM;
    return err;
}

/* Tumbling and hopping: 0 (r->late set if every window closed), or an
 * error. */
static rill_err_t fixed_windows(rec_t *r)
{
    window_t *w = r->w;
    int64_t size = (int64_t)w->o.size_ms;
    int64_t adv = w->o.type == RILL_WINDOW_HOPPING ? (int64_t)w->o.advance_ms : size;
    int64_t first = floor_div_mul(r->t, adv);
    int took = 0;
    for (int64_t start = first; start > r->t - size; start -= adv) {
        int64_t end = add_sat(start, (uint64_t)size);
        uint8_t k[WKEY_MAX], agg[RILL_WINDOW_AGG_MAX];
        size_t kl = wkey_make(k, r->key, r->kl, start);
        const void *cur;
        size_t cl;
        int is_new = rill_state_get(r->view, k, kl, &cur, &cl) != RILL_OK ||
                     cl != WVAL_HEAD + w->ops.agg_size;
        if (is_new ? is_closed(w, r->wp, add_sat(end, w->o.grace_ms), &r->now)
                   : ((const uint8_t *)cur)[8] != 0)
            continue; /* this window closed */
        if (is_new)
            memset(agg, 0, w->ops.agg_size);
        else
            memcpy(agg, (const uint8_t *)cur + WVAL_HEAD, w->ops.agg_size);
        rill_err_t err = w->ops.add(w->opaque, agg, r->e);
        if (!err)
            err = window_put(r, start, end, agg, is_new, k, kl);
        if (err)
            return err;
        took = 1;
        if (start < INT64_MIN + adv)
            break;
    }
    r->late = !took;
    return RILL_OK;
}

typedef struct sess {
    int64_t start, end;
    int closed;
    uint8_t k[WKEY_MAX];
    size_t kl;
    uint8_t agg[RILL_WINDOW_AGG_MAX];
} sess_t;

typedef struct sess_scan {
    rec_t *r;
    sess_t *v;
    size_t n, cap;
    int oom;
} sess_scan_t;

static int sess_visit(void *opaque, const void *key, size_t kl, const void *value, size_t vl)
{
    sess_scan_t *s = opaque;
    window_t *w = s->r->w;
    const uint8_t *uk;
    size_t ukl;
    int64_t start;
    if (!wkey_parse(key, kl, &uk, &ukl, &start) || vl != WVAL_HEAD + w->ops.agg_size)
        return 0;
    int64_t end = get_be64(value);
    int64_t gap = (int64_t)w->o.gap_ms;
    /* Joins: less than gap from the session's events. */
    if (!(s->r->t > start - gap && s->r->t < end))
        return 0;
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 4;
        sess_t *v = realloc(s->v, cap * sizeof(*v));
        if (!v) {
            s->oom = 1;
            return 1;
        }
        s->v = v;
        s->cap = cap;
    }
    sess_t *x = &s->v[s->n++];
    x->start = start;
    x->end = end;
    x->closed = ((const uint8_t *)value)[8] != 0;
    memcpy(x->k, key, kl);
    x->kl = kl;
    memcpy(x->agg, (const uint8_t *)value + WVAL_HEAD, w->ops.agg_size);
    return 0;
}

/* Sessions: the record joins the sessions of its key it is less than gap
 * from (merging them), or starts one. 0 (r->late set if its session
 * closed), or an error. */
static rill_err_t session_window(rec_t *r)
{
    window_t *w = r->w;
    uint8_t from[WKEY_MAX], to[WKEY_MAX], agg[RILL_WINDOW_AGG_MAX];
    size_t fl = wkey_make(from, r->key, r->kl, INT64_MIN);
    size_t tl = wkey_make(to, r->key, r->kl, INT64_MAX);
    sess_scan_t s = {.r = r};
    rill_err_t err = rill_state_range(r->view, from, fl, to, tl, sess_visit, &s);
    if (!err && s.oom)
        err = RILL_ENOMEM;
    int64_t start = r->t, end = add_sat(r->t, w->o.gap_ms);
    for (size_t i = 0; !err && i < s.n; i++) {
        if (s.v[i].closed) {
            free(s.v);
            r->late = 1; /* its session closed */
            return RILL_OK;
        }
        start = s.v[i].start < start ? s.v[i].start : start;
        end = s.v[i].end > end ? s.v[i].end : end;
    }
    if (!err && is_closed(w, r->wp, add_sat(end, w->o.grace_ms), &r->now)) {
        free(s.v);
        r->late = 1;
        return RILL_OK;
    }
    if (s.n)
        memcpy(agg, s.v[0].agg, w->ops.agg_size);
    else
        memset(agg, 0, w->ops.agg_size);
    for (size_t i = 1; !err && i < s.n; i++)
        err = w->ops.merge(w->opaque, agg, s.v[i].agg);
    for (size_t i = 0; !err && i < s.n; i++)
        err = rill_state_delete(r->view, s.v[i].k, s.v[i].kl);
    if (!err)
        err = w->ops.add(w->opaque, agg, r->e);
    /* A session that kept the start of one of those keeps its key, and
     * its index entry (moved to the new end when it comes up). */
    int is_new = 1;
    for (size_t i = 0; i < s.n; i++)
        is_new &= s.v[i].start != start;
    if (!err)
        err = window_put(r, start, end, agg, is_new, NULL, 0);
    free(s.v);
    return err;
}

/* A record no window takes: counted as late, then rejected (reject set,
 * or reject_late) or dropped (confirmed with its transaction). */
static void note_late(window_t *w, rill__sf_part_t *p, int64_t offset, rill_elem_t *e,
                      rill_origin_t *origin, int64_t t, int reject, const char *why)
{
    atomic_fetch_add_explicit(&w->core.store->late, 1, memory_order_relaxed);
    if (reject || w->o.reject_late) {
        char text[160];
        snprintf(text, sizeof(text), "%s (event time %lld, stream time %lld)", why, (long long)t,
                 (long long)w->wp[p - w->core.parts].stream_time);
        e->origin = origin;
        rill_elem_reject(e, text);
        /* Past it in the store too: a later run does not see it again. */
        p->next = offset + 1;
        p->dirty = 1;
        return;
    }
    rill_elem_release(e);
    rill__sf_applied(&w->core, p, offset, origin);
}

static void window_on_next(rill__stage_t *st, int in, rill_elem_t *e)
{
    (void)in;
    window_t *w = st->spec.impl;
    rill__sf_t *c = &w->core;
    rill__sf_rec_t sr;
    if (!rill__sf_enter(c, e, wpart_of, &sr))
        return;
    const rd_kafka_message_t *m = sr.m;
    int64_t offset = sr.offset;
    rill__sf_part_t *p = sr.p;
    wpart_t *wp = sr.kind_part;
    rill_state_t *view = sr.view;
    rec_t r = {.w = w, .p = p, .wp = wp, .view = view, .e = e, .now = INT64_MIN};
    r.t = w->ops.event_time ? w->ops.event_time(w->opaque, e) : rd_kafka_message_timestamp(m, NULL);
    r.key = m->key;
    r.kl = m->key ? m->key_len : 0;
    r.origin = sr.origin;
    if (r.t < 0 || r.kl > RILL_WINDOW_KEY_MAX) {
        /* Counted with the late ones, and rejected whatever reject_late
         * says: it belongs to no window. */
        note_late(w, p, offset, e, r.origin, r.t, 1,
                  r.t < 0 ? "no event time" : "key longer than RILL_WINDOW_KEY_MAX");
        return;
    }
    if (r.t > wp->stream_time) {
        wp->stream_time = r.t;
        wp->stream_time_dirty = 1; /* stored once, before the commit */
    }
    size_t mark = c->q.count;
    rill_err_t err = w->o.type == RILL_WINDOW_SESSION ? session_window(&r) : fixed_windows(&r);
    if (!err && r.late) {
        note_late(w, p, offset, e, r.origin, r.t, 0, "late: its windows closed");
    } else if (err) {
        rill__equeue_drop_since(&c->q, mark);
        rill_elem_release(e);
        rill__sf_abort(c);
        rill__stage_fail_blame(st, r.origin, err, "window stage: aggregating a record failed: %s",
                               rill_err_name(err));
        return;
    } else {
        rill_elem_release(e);
        if (rill__sf_applied(c, p, offset, r.origin))
            return;
    }
    /* Windows the record's stream time closed (the commit of applied may
     * have ended the transaction: a fresh view, only when needed). */
    if (wp->n && is_closed(w, wp, wp->heap[0].close_at, &r.now) && (view = rill__sf_view(c, p)))
        close_due(w, p, wp, view, &r.now);
}

/* Before a commit (core.h): the stream time of each partition that moved
 * it, written once per transaction rather than once per record. */
static int store_stream_times(rill__sf_t *c)
{
    window_t *w = (window_t *)c;
    for (size_t i = 0; i < c->n_parts && i < w->n_wp; i++) {
        uint8_t k = K_STREAM_TIME, v[8];
        rill_state_t *view;
        if (!w->wp[i].stream_time_dirty)
            continue;
        if (!(view = rill__sf_view(c, &c->parts[i])))
            return -1;
        put_be64(v, w->wp[i].stream_time);
        rill_err_t err = rill_state_put(view, &k, 1, v, sizeof(v));
        if (err) {
            rill__sf_abort(c);
            rill__stage_fail(c->st, err, "cannot store a stream time in store %s: %s",
                             c->store->name, rill_err2str(err));
            return -1;
        }
        w->wp[i].stream_time_dirty = 0;
    }
    return 0;
}

/* ---------------------------------------------------- ticks and notices */

static void on_tick(window_t *w)
{
    rill__sf_t *c = &w->core;
    if (c->flushing)
        return; /* the transaction is on its way to the changelog: next tick */
    int64_t now = INT64_MIN;
    for (size_t i = 0; w->o.wall_close_ms != UINT64_MAX && i < c->n_parts && i < w->n_wp; i++) {
        wpart_t *wp = &w->wp[i];
        if (!wp->n || !is_closed(w, wp, wp->heap[0].close_at, &now))
            continue;
        rill_state_t *view = rill__sf_view(c, &c->parts[i]);
        if (!view || close_due(w, &c->parts[i], wp, view, &now))
            return;
    }
    c->st->spec.kind->pump(c->st);
}

/* The pending result with this id (binary search: ids grow in order). */
static pending_t *find_pending(window_t *w, uint64_t id)
{
    size_t lo = 0, hi = w->n_pend;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (w->pend[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < w->n_pend && w->pend[lo].id == id && !w->pend[lo].done ? &w->pend[lo] : NULL;
}

/* Drop the settled entries once they are half of them. */
static void compact_pending(window_t *w)
{
    if (w->n_done * 2 < w->n_pend)
        return;
    size_t n = 0;
    for (size_t i = 0; i < w->n_pend; i++)
        if (!w->pend[i].done)
            w->pend[n++] = w->pend[i];
    w->n_pend = n;
    w->n_done = 0;
}

/* Final results settled: a confirmed (or rejected) one's window goes. */
static void on_settled(window_t *w, const rill__settled_t *b)
{
    rill__sf_t *c = &w->core;
    compact_pending(w);
    for (uint32_t i = 0; i < b->n; i++) {
        pending_t *pp = find_pending(w, b->v[i].key);
        if (!pp)
            continue;
        pending_t pe = *pp;
        pp->done = 1;
        pp->k = NULL; /* pe's, freed here */
        w->n_done++;
        /* Released unconfirmed (the pipeline is failing): the window stays
         * closed in the store, and the next run emits it again. Once the
         * stage finished, the last commit is done: the same. */
        if ((!b->v[i].ok && b->v[i].verdict != RILL__VERDICT_REJECT) || c->st->finished) {
            free(pe.k);
            continue;
        }
        rill_state_t *view = rill__sf_view(c, &c->parts[pe.part]);
        rill_err_t err = view ? rill_state_delete(view, pe.k, pe.kl) : RILL_OK;
        free(pe.k);
        if (!view)
            return;
        if (err && err != RILL_ENOENT) {
            rill__sf_abort(c);
            rill__stage_fail(c->st, err, "cannot delete a closed window in store %s: %s",
                             c->store->name, rill_err2str(err));
            return;
        }
    }
}

static void window_on_msg(rill__stage_t *st, rill_msg_t *m)
{
    window_t *w = st->spec.impl;
    if (rill__sf_on_msg(&w->core, m))
        return;
    if (m->type == RILL__STREAM_TICK && m->arg == TICK_ARG && !st->finished)
        on_tick(w);
    else if (m->type == RILL__MSG_SETTLED && m->payload && !rill__sf_hold_msg(&w->core, m))
        on_settled(w, m->payload); /* (its deletes wait for a flush under way) */
}

/* ------------------------------------------------------------ the start */

typedef struct load {
    window_t *w;
    int failed;
} load_t;

/* One key of the store's state namespace: a partition's stream time, or a
 * window (open: indexed; closed: its final result again). */
static int load_visit(void *opaque, const void *key, size_t kl, const void *value, size_t vl)
{
    load_t *l = opaque;
    window_t *w = l->w;
    const uint8_t *k = key;
    size_t tl = 0;
    while (1 + tl < kl && k[1 + tl])
        tl++;
    if (tl == 0 || tl > RILL__TOPIC_MAX || 1 + tl + 1 + 4 >= kl)
        return 0;
    char topic[RILL__TOPIC_MAX + 1];
    memcpy(topic, k + 1, tl);
    topic[tl] = 0;
    const uint8_t *pb = k + 2 + tl;
    int32_t part = (int32_t)((uint32_t)pb[0] << 24 | (uint32_t)pb[1] << 16 | pb[2] << 8 | pb[3]);
    const uint8_t *rest = pb + 4;
    size_t rl = kl - (size_t)(rest - k);
    rill__sf_part_t *p = rill__sf_part(&w->core, topic, part);
    wpart_t *wp = p ? wpart(w, p) : NULL;
    if (!wp) {
        l->failed = 1;
        return 1;
    }
    const uint8_t *v = value;
    if (rl == 1 && rest[0] == K_STREAM_TIME && vl == 8) {
        wp->stream_time = get_be64(v);
        return 0;
    }
    const uint8_t *uk;
    size_t ukl;
    int64_t start;
    if (!wkey_parse(rest, rl, &uk, &ukl, &start) || vl != WVAL_HEAD + w->ops.agg_size)
        return 0;
    uint8_t *copy = v[8] ? malloc(rl) : NULL; /* taken by emit_final */
    int rc = !v[8]  ? heap_push(wp, add_sat(get_be64(v), w->o.grace_ms), rest, rl)
             : copy ? emit_final(w, p, memcpy(copy, rest, rl), rl, v)
                    : -1;
    if (rc == -1 && (!v[8] || !copy))
        rill__stage_fail(w->core.st, RILL_ENOMEM, "out of memory for the windows' index");
    if (rc) {
        l->failed = 1;
        return 1;
    }
    return 0;
}

static rill_err_t window_start(rill__stage_t *st)
{
    window_t *w = st->spec.impl;
    rill_err_t err = rill__sf_start(&w->core, st);
    if (err)
        return err;
    rill_store_t *s = w->core.store;
    void *txn;
    char why[200] = "";
    err = s->ops->begin(s, 0, &txn, why, sizeof(why));
    if (err)
        return err;
    uint8_t from = RILL__NS_STATE, to = RILL__NS_STATE + 1;
    load_t l = {.w = w};
    err = s->ops->scan(txn, &from, 1, &to, 1, load_visit, &l);
    s->ops->abort(txn);
    if (err || l.failed)
        return err ? err : RILL_ENOMEM;
    /* The tick closes windows by the wall clock. */
    rill_msg_t tick = {.type = RILL__STREAM_TICK, .arg = TICK_ARG};
    return rill_timer_start(st->ctx, w->o.tick_ms, w->o.tick_ms, &tick, &w->tick);
}

/* ---------------------------------------------------------- the kind */

static void window_on_input_end(rill__stage_t *st, int in, rill_err_t code, const char *text)
{
    (void)in;
    window_t *w = st->spec.impl;
    rill__sf_input_end(&w->core, code, text);
}

static void window_pump(rill__stage_t *st)
{
    window_t *w = st->spec.impl;
    rill__sf_pump(&w->core);
}

static void window_destroy(void *impl)
{
    window_t *w = impl;
    if (!w)
        return;
    rill__sf_fini(&w->core);
    for (size_t i = 0; i < w->n_wp; i++) {
        for (size_t j = 0; j < w->wp[i].n; j++)
            free(w->wp[i].heap[j].k);
        free(w->wp[i].heap);
    }
    free(w->wp);
    for (size_t i = 0; i < w->n_pend; i++)
        free(w->pend[i].k); /* NULL once settled */
    free(w->pend);
    free(w);
}

static void *window_clone(const void *impl)
{
    const window_t *b = impl;
    window_t *w = calloc(1, sizeof(*w));
    if (w) {
        rill__sf_clone(&w->core, &b->core);
        w->o = b->o;
        w->ops = b->ops;
        w->opaque = b->opaque;
    }
    return w;
}

const rill__kind_t rill__window_kind = {.name = "window",
                                        .max_in = 1,
                                        .max_out = 1,
                                        .optional_out = 1,
                                        .start = window_start,
                                        .on_next = window_on_next,
                                        .on_input_end = window_on_input_end,
                                        .pump = window_pump,
                                        .on_msg = window_on_msg,
                                        .destroy = window_destroy,
                                        .clone = window_clone};

rill_stage_t *rill_stage_window(rill_store_t *store, const rill_window_opts_t *opts,
                                const rill_window_ops_t *ops, void *opaque)
{
    const char *bad = rill__window_opts_check(store, opts, ops);
    if (bad)
        return rill__stage_spec_bad(&rill__window_kind, RILL_EINVAL, "%s", bad);
    window_t *w = calloc(1, sizeof(*w));
    if (w) {
        rill__sf_init(&w->core, store, &opts->commit);
        w->core.before_commit = store_stream_times;
        w->o = *opts;
        if (!w->o.wall_close_ms)
            w->o.wall_close_ms = 1000;
        if (!w->o.tick_ms)
            w->o.tick_ms = 100;
        w->ops = *ops;
        w->opaque = opaque;
    }
    return rill__stage_spec_new(&rill__window_kind, w);
}
