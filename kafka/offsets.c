/*
 * The consumer's offset tracker: see offsets.h for what it promises.
 *
 * Invariants, per partition: the ring's offsets increase from head to
 * tail; the entry at the head is never confirmed (confirmed entries at the
 * front are dropped at once), so the committable offset is the head's
 * offset, or next_min when the ring is empty; and unconfirmed/unsettled
 * are the ring's entries that are not confirmed / neither confirmed nor
 * failed, summed over the partitions in the tracker's counts.
 */
#include <stdlib.h>
#include <string.h>

#include "../actors/util.h"
#include "offsets.h"

#define RING_MIN_CAP 64

const char *rill__track_res_name(rill__track_res_t r)
{
    switch (r) {
    case RILL__TRACK_ACCEPTED:
        return "accepted";
    case RILL__TRACK_DUPLICATE:
        return "duplicate";
    case RILL__TRACK_UNKNOWN:
        return "unknown";
    case RILL__TRACK_FENCED:
        return "fenced";
    case RILL__TRACK_ORDER:
        return "out of order";
    case RILL__TRACK_NOMEM:
        return "out of memory";
    }
    return "?";
}

/* ---- the tracker and its partitions ---- */

int rill__tracker_init(rill__tracker_t *tr, uint32_t max_slots)
{
    memset(tr, 0, sizeof(*tr));
    if (max_slots == 0 || max_slots > RILL__TRACKER_MAX_SLOTS)
        return -1;
    tr->parts = calloc(max_slots, sizeof(*tr->parts));
    if (!tr->parts)
        return -1;
    tr->max_slots = max_slots;
    return 0;
}

void rill__tracker_free(rill__tracker_t *tr)
{
    for (uint32_t i = 0; i < tr->n_slots; i++)
        if (tr->parts[i].id.v)
            rill__tracker_remove(tr, &tr->parts[i]);
    free(tr->parts);
    memset(tr, 0, sizeof(*tr));
}

/* Slot `slot` holds a new assignment of topic (taken) [partition]: a
 * fresh id, nothing emitted, nothing committed. */
static rill__tpart_t *part_init(rill__tracker_t *tr, uint32_t slot, char *topic, int32_t partition)
{
    rill__tpart_t *p = &tr->parts[slot];
    memset(p, 0, sizeof(*p));
    p->topic = topic;
    /* A new generation for every assignment: an id of an earlier one (of
     * this slot, whichever partition it held) never matches again. */
    p->id.v = (++tr->next_gen << RILL__PART_ID_SHIFT) | slot;
    p->partition = partition;
    p->committable = -1;
    p->committed = -1;
    p->acked = -1;
    p->purge_from = -1;
    p->next_min = -1;
    tr->assigned++;
    return p;
}

rill__tpart_t *rill__tracker_assign(rill__tracker_t *tr, const char *topic, int32_t partition)
{
    uint32_t slot = 0;
    while (slot < tr->n_slots && tr->parts[slot].id.v)
        slot++;
    if (slot == tr->max_slots)
        return NULL;
    char *t = strdup(topic);
    if (!t)
        return NULL;
    if (slot == tr->n_slots)
        tr->n_slots++;
    return part_init(tr, slot, t, partition);
}

void rill__tracker_renew(rill__tracker_t *tr, rill__tpart_t *p)
{
    uint32_t slot = (uint32_t)(p - tr->parts);
    char *topic = p->topic;
    int32_t partition = p->partition;
    int64_t committed = p->committed, acked = p->acked;
    p->topic = NULL; /* kept */
    rill__tracker_remove(tr, p);
    p = part_init(tr, slot, topic, partition);
    p->committed = committed;
    p->acked = acked;
}

uint64_t rill__tracker_gen_floor(const rill__tracker_t *tr)
{
    return tr->next_gen + 1;
}

rill__tpart_t *rill__tracker_part(rill__tracker_t *tr, rill__part_id_t id)
{
    uint32_t slot = (uint32_t)(id.v & (RILL__TRACKER_MAX_SLOTS - 1));
    if (!id.v || slot >= tr->n_slots || tr->parts[slot].id.v != id.v)
        return NULL;
    return &tr->parts[slot];
}

rill__tpart_t *rill__tracker_find(rill__tracker_t *tr, const char *topic, int32_t partition)
{
    for (uint32_t i = 0; i < tr->n_slots; i++) {
        rill__tpart_t *p = &tr->parts[i];
        if (p->id.v && p->partition == partition && !strcmp(p->topic, topic))
            return p;
    }
    return NULL;
}

void rill__tracker_remove(rill__tracker_t *tr, rill__tpart_t *p)
{
    tr->unconfirmed -= p->unconfirmed;
    tr->unsettled -= p->unsettled;
    free(p->ring);
    free(p->topic);
    free(p->redeliv);
    memset(p, 0, sizeof(*p));
    tr->assigned--;
}

rill__tpart_t *rill__tracker_next(rill__tracker_t *tr, const rill__tpart_t *prev)
{
    uint32_t i = prev ? (uint32_t)(prev - tr->parts) + 1 : 0;
    for (; i < tr->n_slots; i++)
        if (tr->parts[i].id.v)
            return &tr->parts[i];
    return NULL;
}

/* ---- the ring ---- */

static rill__offent_t *ring_at(const rill__tpart_t *p, size_t i)
{
    return &p->ring[(p->head + i) % p->cap];
}

static int ring_push(rill__tpart_t *p, int64_t offset, int64_t now_ms, int64_t ts_ms)
{
    if (p->count == p->cap) {
        /* Unwrapped into a ring twice the size: entries stay in order from
         * index 0, and the binary search keeps working. */
        size_t cap = p->cap ? p->cap * 2 : RING_MIN_CAP;
        rill__offent_t *r = malloc(cap * sizeof(*r));
        if (!r)
            return -1;
        for (size_t i = 0; i < p->count; i++)
            r[i] = *ring_at(p, i);
        free(p->ring);
        p->ring = r;
        p->cap = cap;
        p->head = 0;
    }
    *ring_at(p, p->count) =
        (rill__offent_t){.offset = offset, .emitted_ms = now_ms, .ts_ms = ts_ms};
    p->count++;
    return 0;
}

/* Index (0..count-1) of the entry with this offset, or -1. */
static long ring_find(const rill__tpart_t *p, int64_t offset)
{
    /* Offsets without gaps (the common case): the entry is where its
     * distance from the first says; a confirm per record no longer pays a
     * binary search. Otherwise, search: offsets go up. */
    if (p->count) {
        int64_t first = ring_at(p, 0)->offset;
        if (offset >= first && (uint64_t)(offset - first) < p->count &&
            ring_at(p, (size_t)(offset - first))->offset == offset)
            return (long)(offset - first);
    }
    size_t lo = 0, hi = p->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int64_t o = ring_at(p, mid)->offset;
        if (o == offset)
            return (long)mid;
        if (o < offset)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

/* Drop confirmed entries at the front; the committable offset follows,
 * and attempts of what it passed are forgotten. */
static void ring_advance(rill__tpart_t *p)
{
    while (p->count && p->ring[p->head].confirmed) {
        p->head = (p->head + 1) % p->cap;
        p->count--;
    }
    p->committable = p->count ? p->ring[p->head].offset : p->next_min;
    if (p->n_redeliv)
        rill__tracker_forget_attempts_below(p, p->committable);
}

static void entry_confirm(rill__tracker_t *tr, rill__tpart_t *p, rill__offent_t *e)
{
    e->confirmed = 1;
    p->unconfirmed--;
    p->unsettled--;
    tr->unconfirmed--;
    tr->unsettled--;
    tr->confirmed++;
    int64_t lat_ms = tr->wall_now_ms - e->ts_ms;
    if (e->ts_ms >= 0 && tr->wall_now_ms && lat_ms >= 0) {
        if (lat_ms != tr->e2e_last_ms) {
            tr->e2e_last_ms = lat_ms;
            tr->e2e_last_bucket = rill__hist_bucket((uint64_t)lat_ms * 1000000u);
        }
        tr->e2e.count++;
        tr->e2e.sum_ns += (uint64_t)lat_ms * 1000000u;
        tr->e2e.buckets[tr->e2e_last_bucket]++;
    }
}

/* ---- records ---- */

rill__track_res_t rill__tracker_emit(rill__tracker_t *tr, rill__part_id_t id, int64_t offset,
                                     int64_t now_ms)
{
    return rill__tracker_emit_ts(tr, id, offset, now_ms, -1);
}

rill__track_res_t rill__tracker_emit_ts(rill__tracker_t *tr, rill__part_id_t id, int64_t offset,
                                        int64_t now_ms, int64_t ts_ms)
{
    rill__tpart_t *p = rill__tracker_part(tr, id);
    if (!p)
        return RILL__TRACK_FENCED;
    if (p->next_min >= 0 && offset < p->next_min) {
        long i = ring_find(p, offset);
        rill__offent_t *e = i < 0 ? NULL : ring_at(p, (size_t)i);
        if (!e || !e->awaiting)
            return RILL__TRACK_ORDER;
        /* Redelivered: out again. It was failed (settled), so not
         * unsettled; it still counted as unconfirmed. */
        e->awaiting = e->wanted = e->failed = e->dead_letter = 0;
        e->emitted_ms = now_ms;
        e->ts_ms = ts_ms;
        p->pending--;
        p->unsettled++;
        tr->unsettled++;
        return RILL__TRACK_ACCEPTED;
    }
    if (ring_push(p, offset, now_ms, ts_ms))
        return RILL__TRACK_NOMEM;
    /* The first record out after all were confirmed is the first
     * unconfirmed one; what lies between (a gap) has nothing to wait for. */
    if (p->count == 1)
        p->committable = offset;
    p->next_min = offset + 1;
    p->unconfirmed++;
    p->unsettled++;
    tr->unconfirmed++;
    tr->unsettled++;
    return RILL__TRACK_ACCEPTED;
}

/* The entry of a record not settled yet, for a confirm or a fail; NULL
 * with *res saying why not (the fenced ones are counted). */
static rill__offent_t *unsettled_entry(rill__tracker_t *tr, rill__part_id_t id, int64_t offset,
                                       rill__tpart_t **pp, rill__track_res_t *res)
{
    rill__tpart_t *p = rill__tracker_part(tr, id);
    if (!p) {
        tr->fenced++;
        *res = RILL__TRACK_FENCED;
        return NULL;
    }
    long i = ring_find(p, offset);
    if (i < 0) {
        *res = RILL__TRACK_UNKNOWN; /* committed past already, or truncated */
        return NULL;
    }
    rill__offent_t *e = ring_at(p, (size_t)i);
    if (e->confirmed || e->failed) {
        *res = RILL__TRACK_DUPLICATE;
        return NULL;
    }
    *pp = p;
    return e;
}

rill__track_res_t rill__tracker_confirm(rill__tracker_t *tr, rill__part_id_t id, int64_t offset)
{
    rill__tpart_t *p;
    rill__track_res_t res;
    rill__offent_t *e = unsettled_entry(tr, id, offset, &p, &res);
    if (!e)
        return res;
    entry_confirm(tr, p, e);
    ring_advance(p);
    return RILL__TRACK_ACCEPTED;
}

rill__track_res_t rill__tracker_confirm_upto(rill__tracker_t *tr, rill__part_id_t id,
                                             int64_t offset, size_t *n)
{
    size_t done = 0, seen = 0;
    if (n)
        *n = 0;
    rill__tpart_t *p = rill__tracker_part(tr, id);
    if (!p) {
        tr->fenced++;
        return RILL__TRACK_FENCED;
    }
    for (size_t i = 0; i < p->count; i++) {
        rill__offent_t *e = ring_at(p, i);
        if (e->offset > offset)
            break;
        seen++;
        if (!e->confirmed && !e->failed) {
            entry_confirm(tr, p, e);
            done++;
        }
    }
    if (n)
        *n = done;
    if (!done)
        return seen ? RILL__TRACK_DUPLICATE : RILL__TRACK_UNKNOWN;
    ring_advance(p);
    return RILL__TRACK_ACCEPTED;
}

rill__track_res_t rill__tracker_fail(rill__tracker_t *tr, rill__part_id_t id, int64_t offset)
{
    rill__tpart_t *p;
    rill__track_res_t res;
    rill__offent_t *e = unsettled_entry(tr, id, offset, &p, &res);
    if (!e)
        return res;
    /* Still unconfirmed, so it stays in the ring and holds the committable
     * offset; but nothing will settle it any more: not unsettled. */
    e->failed = 1;
    p->unsettled--;
    tr->unsettled--;
    return RILL__TRACK_ACCEPTED;
}

uint32_t rill__tracker_part_unconfirmed(const rill__tpart_t *p)
{
    return p->unconfirmed;
}

uint32_t rill__tracker_part_unsettled(const rill__tpart_t *p)
{
    return p->unsettled;
}

/* ---- commits ---- */

int64_t rill__tracker_to_commit(const rill__tpart_t *p)
{
    if (p->committable < 0 || p->committable == p->committed)
        return -1;
    return p->committable;
}

void rill__tracker_mark_committed(rill__tpart_t *p, int64_t offset)
{
    p->committed = offset;
}

void rill__tracker_commit_failed(rill__tpart_t *p, int64_t offset)
{
    if (p->committed == offset)
        p->committed = -1;
}

void rill__tracker_commit_acked(rill__tpart_t *p, int64_t offset)
{
    if (offset < p->acked)
        p->committed = -1; /* send the latest again */
    else
        p->acked = offset;
}

void rill__tracker_commit_again(rill__tpart_t *p)
{
    p->committed = -1;
}

/* ---- redelivery ---- */

int rill__tracker_due(const rill__tpart_t *p, int64_t now_ms, uint32_t timeout_ms, int64_t *offset)
{
    /* Emit times do not decrease along the ring (a dead letter's restart
     * stops the scan first), so past the first unsettled record only a
     * failed one can be due: the scan stops there unless some failed. */
    int any_failed = p->unconfirmed > p->unsettled;
    for (size_t i = 0; i < p->count; i++) {
        const rill__offent_t *e = ring_at(p, i);
        if (e->confirmed)
            continue;
        if (e->dead_letter)
            return 0; /* its dead letter is on the way; the rest waits */
        if (e->failed || (timeout_ms && now_ms - e->emitted_ms >= (int64_t)timeout_ms)) {
            *offset = e->offset;
            return 1;
        }
        if (!any_failed)
            return 0;
    }
    return 0;
}

uint32_t rill__tracker_attempts(const rill__tpart_t *p, int64_t offset)
{
    for (size_t i = 0; i < p->n_redeliv; i++)
        if (p->redeliv[i].offset == offset)
            return p->redeliv[i].attempts;
    return 0;
}

uint32_t rill__tracker_count_attempt(rill__tpart_t *p, int64_t offset)
{
    for (size_t i = 0; i < p->n_redeliv; i++)
        if (p->redeliv[i].offset == offset)
            return ++p->redeliv[i].attempts;
    if (p->n_redeliv == p->cap_redeliv) {
        size_t cap = p->cap_redeliv ? p->cap_redeliv * 2 : 4;
        rill__redeliv_t *v = realloc(p->redeliv, cap * sizeof(*v));
        if (!v)
            return 0;
        p->redeliv = v;
        p->cap_redeliv = cap;
    }
    p->redeliv[p->n_redeliv++] = (rill__redeliv_t){.offset = offset, .attempts = 1};
    return 1;
}

void rill__tracker_forget_attempts_below(rill__tpart_t *p, int64_t offset)
{
    size_t kept = 0;
    for (size_t i = 0; i < p->n_redeliv; i++)
        if (p->redeliv[i].offset >= offset)
            p->redeliv[kept++] = p->redeliv[i];
    p->n_redeliv = kept;
}

void rill__tracker_truncate_from(rill__tracker_t *tr, rill__tpart_t *p, int64_t offset)
{
    int64_t from = p->committable >= 0 && offset < p->committable ? p->committable : offset;
    size_t keep = 0;
    while (keep < p->count && ring_at(p, keep)->offset < from)
        keep++;
    for (size_t i = keep; i < p->count; i++) {
        const rill__offent_t *e = ring_at(p, i);
        if (e->awaiting || e->wanted)
            p->pending--;
        if (e->confirmed)
            continue;
        p->unconfirmed--;
        tr->unconfirmed--;
        if (!e->failed) {
            p->unsettled--;
            tr->unsettled--;
        }
    }
    if (keep < p->count) {
        p->count = keep;
        p->next_min = from;
    }
    /* The head is unchanged or gone: with the ring empty the next record
     * out (from `from`) is the first unconfirmed one. */
    if (!p->count && p->committable >= 0)
        p->committable = p->next_min;
    p->purge_from = offset;
}

int rill__tracker_polled(rill__tpart_t *p, int64_t offset)
{
    if (p->purge_from < 0)
        return 1;
    if (offset < p->purge_from)
        return 0;
    p->purge_from = -1;
    return 1;
}

int rill__tracker_buffered_stale(const rill__tpart_t *p, int64_t offset)
{
    return p->purge_from >= 0 && offset >= p->purge_from;
}

int rill__tracker_dead_letter(rill__tpart_t *p, int64_t offset, int on, int64_t now_ms)
{
    long i = ring_find(p, offset);
    if (i < 0)
        return -1;
    rill__offent_t *e = ring_at(p, (size_t)i);
    e->dead_letter = on != 0;
    e->emitted_ms = now_ms;
    return 0;
}

/* ---- redelivery of single records ---- */

static int entry_due(const rill__offent_t *e, int64_t now_ms, uint32_t timeout_ms)
{
    if (e->confirmed || e->dead_letter)
        return 0;
    if (e->awaiting)
        return now_ms - e->emitted_ms >= RILL__RESEEK_MS;
    if (e->wanted)
        return now_ms >= e->due_ms;
    if (!timeout_ms)
        return 0;
    return e->failed || now_ms - e->emitted_ms >= (int64_t)timeout_ms;
}

uint32_t rill__tracker_redeliver(rill__tracker_t *tr, rill__tpart_t *p, int64_t now_ms,
                                 uint32_t timeout_ms, int64_t *from)
{
    /* Nothing can be due without a timeout unless something is pending. */
    if (!p->count || (!timeout_ms && !p->pending))
        return 0;
    uint32_t n = 0;
    for (size_t i = 0; i < p->count; i++) {
        rill__offent_t *e = ring_at(p, i);
        if (!entry_due(e, now_ms, timeout_ms))
            continue;
        if (!e->failed) {
            e->failed = 1;
            p->unsettled--;
            tr->unsettled--;
        }
        if (!e->awaiting && !e->wanted)
            rill__tracker_count_attempt(p, e->offset);
        if (!e->awaiting && !e->wanted)
            p->pending++;
        e->awaiting = 1;
        e->emitted_ms = now_ms;
        if (!n)
            *from = e->offset;
        n++;
    }
    if (n)
        p->purge_from = *from;
    return n;
}

int rill__tracker_fresh(const rill__tpart_t *p, int64_t offset)
{
    if (p->next_min < 0 || offset >= p->next_min)
        return 1;
    long i = ring_find(p, offset);
    return i >= 0 && ring_at(p, (size_t)i)->awaiting;
}

rill__track_res_t rill__tracker_want(rill__tracker_t *tr, rill__part_id_t id, int64_t offset,
                                     int64_t due_ms)
{
    rill__tpart_t *p = rill__tracker_part(tr, id);
    if (!p) {
        tr->fenced++;
        return RILL__TRACK_FENCED;
    }
    long i = ring_find(p, offset);
    rill__offent_t *e = i < 0 ? NULL : ring_at(p, (size_t)i);
    if (!e || e->confirmed)
        return RILL__TRACK_UNKNOWN;
    if (!e->failed) {
        e->failed = 1;
        p->unsettled--;
        tr->unsettled--;
    }
    if (!e->awaiting && !e->wanted)
        p->pending++;
    e->awaiting = 0;
    e->wanted = 1;
    e->dead_letter = 0;
    e->due_ms = due_ms;
    return RILL__TRACK_ACCEPTED;
}

size_t rill__tracker_confirmed_ahead(const rill__tpart_t *p, int64_t **out)
{
    *out = NULL;
    size_t n = 0;
    for (size_t i = 0; i < p->count; i++)
        n += ring_at(p, i)->confirmed;
    if (!n || !(*out = malloc(n * sizeof(**out))))
        return 0;
    n = 0;
    for (size_t i = 0; i < p->count; i++)
        if (ring_at(p, i)->confirmed)
            (*out)[n++] = ring_at(p, i)->offset;
    return n;
}
