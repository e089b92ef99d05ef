/*
 * The consumer's offset tracker (kafka/offsets.h) alone, without a broker:
 * random confirm, fail and redelivery orders checked step by step against
 * a plain model (the committable offset is always the model's first
 * unconfirmed offset), ring wrap-around and growth, gaps in offsets,
 * fencing of earlier assignments, confirm_upto, failed records, the
 * redelivery bookkeeping and the commit bookkeeping.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support/rtest.h"

#include "kafka/offsets.h"

/* A small deterministic generator (splitmix64), one per test. */
static uint64_t rnd_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static size_t rnd_below(uint64_t *s, size_t n)
{
    return (size_t)(rnd_next(s) % n);
}

static rill__tpart_t *assign_ok(rill__tracker_t *tr, const char *topic, int32_t partition)
{
    rill__tpart_t *p = rill__tracker_assign(tr, topic, partition);
    cr_assert_not_null(p, "cannot assign %s [%d]", topic, (int)partition);
    return p;
}

static void emit_ok(rill__tracker_t *tr, rill__tpart_t *p, int64_t offset, int64_t now)
{
    rill__track_res_t r = rill__tracker_emit(tr, p->id, offset, now);
    cr_assert_eq(r, RILL__TRACK_ACCEPTED, "emit %lld: %s", (long long)offset,
                 rill__track_res_name(r));
}

static void emit_range(rill__tracker_t *tr, rill__tpart_t *p, int64_t from, int64_t to, int64_t now)
{
    for (int64_t o = from; o < to; o++)
        emit_ok(tr, p, o, now);
}

static void confirm_ok(rill__tracker_t *tr, rill__tpart_t *p, int64_t offset)
{
    rill__track_res_t r = rill__tracker_confirm(tr, p->id, offset);
    cr_assert_eq(r, RILL__TRACK_ACCEPTED, "confirm %lld: %s", (long long)offset,
                 rill__track_res_name(r));
}

/* ------------------------------------------------------------------ */
/* Random orders against a model                                       */
/* ------------------------------------------------------------------ */

enum { M_NOT_EMITTED = 0, M_OUT, M_CONFIRMED, M_FAILED };

#define MODEL_N 400

/* What the tracker should say, from the records' states alone. */
typedef struct model {
    int64_t offs[MODEL_N]; /* increasing, with gaps */
    int state[MODEL_N];
    size_t next;      /* index of the next record to emit */
    int64_t next_min; /* one past the last emitted, or where a truncation left it; -1 */
} model_t;

/* The first emitted record not confirmed, else next_min (-1 before any). */
static int64_t model_committable(const model_t *m)
{
    for (size_t i = 0; i < m->next; i++)
        if (m->state[i] != M_CONFIRMED)
            return m->offs[i];
    return m->next_min;
}

static uint32_t model_count(const model_t *m, int state)
{
    uint32_t n = 0;
    for (size_t i = 0; i < m->next; i++)
        n += m->state[i] == state;
    return n;
}

/* The tracker and the model agree; the committable offset never passes a
 * record that is out and not confirmed. */
static void check_model(const rill__tracker_t *tr, const rill__tpart_t *p, const model_t *m,
                        unsigned seed, size_t step)
{
    int64_t want = model_committable(m);
    cr_assert_eq(p->committable, want, "seed %u step %zu: committable %lld, model %lld", seed, step,
                 (long long)p->committable, (long long)want);
    for (size_t i = 0; i < m->next; i++)
        if (m->state[i] != M_CONFIRMED)
            cr_assert_leq(p->committable, m->offs[i],
                          "seed %u step %zu: committable passed unconfirmed offset %lld", seed,
                          step, (long long)m->offs[i]);
    uint32_t out = model_count(m, M_OUT), failed = model_count(m, M_FAILED);
    cr_assert_eq(tr->unconfirmed, out + failed, "seed %u step %zu: unconfirmed %u, model %u", seed,
                 step, tr->unconfirmed, out + failed);
    cr_assert_eq(tr->unsettled, out, "seed %u step %zu: unsettled %u, model %u", seed, step,
                 tr->unsettled, out);
    cr_assert_eq(rill__tracker_part_unconfirmed(p), out + failed);
    cr_assert_eq(rill__tracker_part_unsettled(p), out);
}

/* An index of a record that was emitted, chosen at random; -1 if none. */
static long model_pick(const model_t *m, uint64_t *rs)
{
    return m->next ? (long)rnd_below(rs, m->next) : -1;
}

static void run_model(unsigned seed)
{
    uint64_t rs = seed;
    model_t m;
    memset(&m, 0, sizeof(m));
    m.next_min = -1;
    int64_t o = (int64_t)rnd_below(&rs, 1000);
    for (size_t i = 0; i < MODEL_N; i++) {
        m.offs[i] = o;
        /* Mostly consecutive, sometimes a gap (compaction, markers). */
        o += rnd_below(&rs, 8) == 0 ? 1 + (int64_t)rnd_below(&rs, 50) : 1;
    }

    rill__tracker_t tr;
    cr_assert_eq(rill__tracker_init(&tr, 8), 0);
    rill__tpart_t *p = assign_ok(&tr, "model", (int32_t)(seed % 7));
    cr_assert_eq(p->committable, -1);
    int64_t last_committable = -1;
    uint64_t confirmed = 0;

    for (size_t step = 0; step < 4 * MODEL_N; step++) {
        size_t op = rnd_below(&rs, 100);
        long i = model_pick(&m, &rs);
        if ((op < 40 || i < 0) && m.next < MODEL_N) {
            /* Emit the next record. */
            emit_ok(&tr, p, m.offs[m.next], (int64_t)step);
            m.state[m.next] = M_OUT;
            m.next_min = m.offs[m.next] + 1;
            m.next++;
        } else if (i < 0) {
            break; /* everything emitted and nothing to pick: cannot happen */
        } else if (op < 80) {
            rill__track_res_t r = rill__tracker_confirm(&tr, p->id, m.offs[i]);
            if (m.state[i] == M_OUT) {
                cr_assert_eq(r, RILL__TRACK_ACCEPTED, "seed %u: confirm: %s", seed,
                             rill__track_res_name(r));
                m.state[i] = M_CONFIRMED;
                confirmed++;
            } else {
                /* Confirmed (perhaps dropped from the ring already) or
                 * failed: nothing changes. */
                cr_assert(r == RILL__TRACK_DUPLICATE || r == RILL__TRACK_UNKNOWN,
                          "seed %u: confirm of a settled record: %s", seed,
                          rill__track_res_name(r));
            }
        } else if (op < 88) {
            size_t n = 0, want = 0;
            for (long j = 0; j <= i; j++)
                if (m.state[j] == M_OUT) {
                    m.state[j] = M_CONFIRMED;
                    want++;
                }
            rill__track_res_t r = rill__tracker_confirm_upto(&tr, p->id, m.offs[i], &n);
            cr_assert_eq(n, want, "seed %u: confirm_upto confirmed %zu, model %zu", seed, n, want);
            cr_assert_eq(r == RILL__TRACK_ACCEPTED, want > 0, "seed %u: confirm_upto: %s", seed,
                         rill__track_res_name(r));
            confirmed += want;
        } else if (op < 95) {
            rill__track_res_t r = rill__tracker_fail(&tr, p->id, m.offs[i]);
            if (m.state[i] == M_OUT) {
                cr_assert_eq(r, RILL__TRACK_ACCEPTED, "seed %u: fail: %s", seed,
                             rill__track_res_name(r));
                m.state[i] = M_FAILED;
            } else {
                cr_assert(r == RILL__TRACK_DUPLICATE || r == RILL__TRACK_UNKNOWN,
                          "seed %u: fail of a settled record: %s", seed, rill__track_res_name(r));
            }
        } else {
            /* Redelivery, as the consumer does it: from the record due
             * (failed ones are due at once: no timeout here). */
            int64_t from;
            if (!rill__tracker_due(p, (int64_t)step, 0, &from))
                continue;
            size_t first = 0;
            while (m.offs[first] != from)
                first++;
            cr_assert(m.state[first] == M_FAILED, "seed %u: offset %lld due, not failed", seed,
                      (long long)from);
            for (size_t j = 0; j < first; j++)
                cr_assert(m.state[j] != M_FAILED, "seed %u: a later failed record came first",
                          seed);
            rill__tracker_truncate_from(&tr, p, from);
            for (size_t j = first; j < m.next; j++)
                m.state[j] = M_NOT_EMITTED;
            m.next = first;
            m.next_min = from;
        }
        check_model(&tr, p, &m, seed, step);
        cr_assert_geq(p->committable, last_committable, "seed %u: the committable offset went back",
                      seed);
        last_committable = p->committable;
    }
    cr_assert_eq(tr.confirmed, confirmed);

    /* Settle what is left: every failed record comes again and is
     * confirmed; then the committable offset is one past the last. */
    while (m.next < MODEL_N) {
        emit_ok(&tr, p, m.offs[m.next], 0);
        m.state[m.next++] = M_OUT;
    }
    int64_t from;
    while (rill__tracker_due(p, 0, 0, &from)) {
        rill__tracker_truncate_from(&tr, p, from);
        size_t first = 0;
        while (m.offs[first] != from)
            first++;
        for (size_t j = first; j < MODEL_N; j++)
            emit_ok(&tr, p, m.offs[j], 0);
        for (size_t j = first; j < MODEL_N; j++)
            m.state[j] = M_OUT;
    }
    size_t n = 0;
    rill__tracker_confirm_upto(&tr, p->id, m.offs[MODEL_N - 1], &n);
    cr_assert_eq(p->committable, m.offs[MODEL_N - 1] + 1, "seed %u: committable %lld at the end",
                 seed, (long long)p->committable);
    cr_assert_eq(tr.unconfirmed, 0);
    cr_assert_eq(tr.unsettled, 0);
    cr_assert_eq(p->count, 0);
    rill__tracker_free(&tr);
}

Test(kafka_offsets, random_orders_match_the_model)
{
    for (unsigned seed = 1; seed <= 300; seed++)
        run_model(seed);
}

/* ------------------------------------------------------------------ */
/* The ring                                                            */
/* ------------------------------------------------------------------ */

Test(kafka_offsets, ring_wraps_around_and_grows)
{
    rill__tracker_t tr;
    cr_assert_eq(rill__tracker_init(&tr, 4), 0);
    rill__tpart_t *p = assign_ok(&tr, "ring", 0);

    /* Fill the first ring, move its head, and wrap the tail past the
     * end. */
    emit_range(&tr, p, 0, 64, 0);
    size_t cap0 = p->cap;
    cr_assert_geq(cap0, 64);
    for (int64_t o = 0; o < 40; o++)
        confirm_ok(&tr, p, o);
    cr_assert_eq(p->head, 40);
    emit_range(&tr, p, 64, 64 + 40, 0);
    cr_assert_eq(p->cap, cap0, "grew before it was full");
    cr_assert_gt(p->head + p->count, p->cap, "the ring did not wrap");
    cr_assert_eq(p->committable, 40);

    /* Grow while wrapped: the order must survive the move. */
    emit_range(&tr, p, 104, 104 + 3 * (int64_t)cap0, 0);
    cr_assert_gt(p->cap, cap0);
    int64_t last = 104 + 3 * (int64_t)cap0;
    for (size_t i = 1; i < p->count; i++)
        cr_assert_lt(p->ring[(p->head + i - 1) % p->cap].offset,
                     p->ring[(p->head + i) % p->cap].offset);

    /* Far beyond the first capacity, in a sliding window of confirms in
     * random order: every confirm is found, once. */
    uint64_t rs = 42;
    int64_t lo = 40; /* confirmed below this, besides scattered ones */
    for (int64_t o = last; o < 200000; o++) {
        emit_ok(&tr, p, o, 0);
        if (o - lo > 1000) {
            /* Confirm the window's front in a shuffled order. */
            int64_t batch[64];
            for (int j = 0; j < 64; j++)
                batch[j] = lo + j;
            for (int j = 63; j > 0; j--) {
                size_t k = rnd_below(&rs, (size_t)j + 1);
                int64_t t = batch[j];
                batch[j] = batch[k];
                batch[k] = t;
            }
            for (int j = 0; j < 64; j++) {
                rill__track_res_t r = rill__tracker_confirm(&tr, p->id, batch[j]);
                cr_assert_eq(r, RILL__TRACK_ACCEPTED, "offset %lld: %s", (long long)batch[j],
                             rill__track_res_name(r));
                cr_assert_leq(p->committable, lo + 64);
            }
            cr_assert_eq(rill__tracker_confirm(&tr, p->id, batch[0]), RILL__TRACK_UNKNOWN,
                         "a confirmed front entry is still in the ring");
            lo += 64;
            cr_assert_eq(p->committable, lo);
        }
    }
    cr_assert_leq(p->cap, 4096, "the ring holds ~1000 records but grew to %zu", p->cap);
    cr_assert_eq(tr.unconfirmed, (uint32_t)(200000 - lo));
    size_t n = 0;
    cr_assert_eq(rill__tracker_confirm_upto(&tr, p->id, 199999, &n), RILL__TRACK_ACCEPTED);
    cr_assert_eq(n, (size_t)(200000 - lo));
    cr_assert_eq(p->committable, 200000);
    cr_assert_eq(p->count, 0);
    cr_assert_eq(tr.confirmed, 200000);
    rill__tracker_free(&tr);
}

Test(kafka_offsets, gaps_in_offsets_need_no_special_case)
{
    rill__tracker_t tr;
    cr_assert_eq(rill__tracker_init(&tr, 4), 0);
    rill__tpart_t *p = assign_ok(&tr, "compacted", 3);
    const int64_t offs[] = {10, 15, 16, 100, 101, 1000};
    for (size_t i = 0; i < 6; i++)
        emit_ok(&tr, p, offs[i], 0);
    cr_assert_eq(p->committable, 10);
    /* Offsets in the gaps were never records. */
    cr_assert_eq(rill__tracker_confirm(&tr, p->id, 12), RILL__TRACK_UNKNOWN);
    cr_assert_eq(rill__tracker_confirm(&tr, p->id, 500), RILL__TRACK_UNKNOWN);
    confirm_ok(&tr, p, 15);
    cr_assert_eq(p->committable, 10);
    confirm_ok(&tr, p, 10);
    cr_assert_eq(p->committable, 16, "the committable offset skips the confirmed 15");
    confirm_ok(&tr, p, 100);
    confirm_ok(&tr, p, 16);
    cr_assert_eq(p->committable, 101);
    confirm_ok(&tr, p, 1000);
    cr_assert_eq(p->committable, 101);
    confirm_ok(&tr, p, 101);
    cr_assert_eq(p->committable, 1001, "one past the last record emitted");
    /* After a gap, the first record out is the first unconfirmed one. */
    emit_ok(&tr, p, 5000, 0);
    cr_assert_eq(p->committable, 5000);
    /* Offsets go up only: the ring has, or had, those records. */
    cr_assert_eq(rill__tracker_emit(&tr, p->id, 5000, 0), RILL__TRACK_ORDER);
    cr_assert_eq(rill__tracker_emit(&tr, p->id, 1500, 0), RILL__TRACK_ORDER);
    cr_assert_eq(tr.unconfirmed, 1);
    rill__tracker_free(&tr);
}

/* ------------------------------------------------------------------ */
/* Partitions and fencing                                              */
/* ------------------------------------------------------------------ */

Test(kafka_offsets, an_earlier_assignment_is_fenced)
{
    rill__tracker_t tr;
    cr_assert_eq(rill__tracker_init(&tr, 16), 0);
    rill__tpart_t *other = assign_ok(&tr, "t", 1);
    rill__tpart_t *p = assign_ok(&tr, "t", 0);
    rill__part_id_t old = p->id;
    emit_range(&tr, p, 0, 10, 0);
    emit_range(&tr, other, 0, 3, 0);
    cr_assert_eq(tr.unconfirmed, 13);
    cr_assert_eq(tr.assigned, 2);

    /* Revoked: what it had out leaves the counts. */
    rill__tracker_remove(&tr, p);
    cr_assert_eq(tr.unconfirmed, 3);
    cr_assert_eq(tr.unsettled, 3);
    cr_assert_eq(tr.assigned, 1);
    cr_assert_null(rill__tracker_part(&tr, old));
    cr_assert_null(rill__tracker_find(&tr, "t", 0));

    /* Assigned again, into the same slot: a new id. */
    rill__tpart_t *q = assign_ok(&tr, "t", 0);
    cr_assert_eq(q, p, "the free slot was not reused");
    cr_assert_neq(q->id.v, old.v);
    cr_assert_eq(rill__tracker_find(&tr, "t", 0), q);
    cr_assert_eq(rill__tracker_part(&tr, q->id), q);
    cr_assert_null(rill__tracker_part(&tr, old));
    emit_range(&tr, q, 5, 10, 0);

    /* Late confirms of the first assignment: rejected and counted, and
     * the new assignment is untouched. */
    cr_assert_eq(rill__tracker_confirm(&tr, old, 5), RILL__TRACK_FENCED);
    size_t n = 99;
    cr_assert_eq(rill__tracker_confirm_upto(&tr, old, 100, &n), RILL__TRACK_FENCED);
    cr_assert_eq(n, 0);
    cr_assert_eq(rill__tracker_fail(&tr, old, 6), RILL__TRACK_FENCED);
    cr_assert_eq(tr.fenced, 3);
    cr_assert_eq(rill__tracker_part_unconfirmed(q), 5);
    cr_assert_eq(rill__tracker_part_unsettled(q), 5);
    cr_assert_eq(q->committable, 5);
    cr_assert_eq(tr.confirmed, 0);
    /* Emitting with an old id is refused but is not a fenced confirm. */
    cr_assert_eq(rill__tracker_emit(&tr, old, 10, 0), RILL__TRACK_FENCED);
    cr_assert_eq(tr.fenced, 3);
    /* Id 0 and an id of a slot never used are nobody's. */
    cr_assert_eq(rill__tracker_confirm(&tr, (rill__part_id_t){0}, 5), RILL__TRACK_FENCED);
    cr_assert_eq(rill__tracker_confirm(&tr, (rill__part_id_t){(uint64_t)1 << 16 | 9}, 5),
                 RILL__TRACK_FENCED);
    cr_assert_eq(tr.fenced, 5);
    /* The other partition did not notice. */
    cr_assert_eq(rill__tracker_part_unconfirmed(other), 3);
    confirm_ok(&tr, q, 5);
    cr_assert_eq(q->committable, 6);

    /* Ids never repeat over many assignments of the same partition. */
    uint64_t seen[200];
    for (int i = 0; i < 200; i++) {
        rill__tpart_t *r = rill__tracker_find(&tr, "t", 0);
        rill__tracker_remove(&tr, r);
        r = assign_ok(&tr, "t", 0);
        seen[i] = r->id.v;
        for (int j = 0; j < i; j++)
            cr_assert_neq(seen[j], seen[i]);
    }
    rill__tracker_free(&tr);
}

/* Renewed (a transactional source's rewind): a new id in the same slot,
 * the old one fenced, what it had out gone from the counts, its commit
 * figures kept; the new id is of the floor's generation or later. */
Test(kafka_offsets, a_renewed_partition_is_fenced_and_keeps_its_commits)
{
    rill__tracker_t tr;
    cr_assert_eq(rill__tracker_init(&tr, 16), 0);
    rill__tpart_t *other = assign_ok(&tr, "t", 1);
    rill__tpart_t *p = assign_ok(&tr, "t", 0);
    emit_range(&tr, p, 0, 10, 0);
    emit_range(&tr, other, 0, 3, 0);
    rill__tracker_mark_committed(p, 4);
    rill__tracker_commit_acked(p, 4);
    rill__part_id_t old = p->id;
    uint64_t floor = rill__tracker_gen_floor(&tr);
    cr_assert_gt(floor, RILL__PART_ID_GEN(old.v));
    cr_assert_gt(floor, RILL__PART_ID_GEN(other->id.v));

    rill__tracker_renew(&tr, p);
    cr_assert_null(rill__tracker_part(&tr, old), "the old id still matches");
    cr_assert_eq(rill__tracker_part(&tr, p->id), p, "renewed in another slot");
    cr_assert_geq(RILL__PART_ID_GEN(p->id.v), floor);
    cr_assert_str_eq(p->topic, "t");
    cr_assert_eq(p->partition, 0);
    cr_assert_eq(p->committed, 4);
    cr_assert_eq(p->acked, 4);
    cr_assert_eq(p->committable, -1, "nothing emitted since");
    cr_assert_eq(tr.assigned, 2);
    cr_assert_eq(tr.unconfirmed, 3, "what it had out left the counts");
    cr_assert_eq(rill__tracker_confirm(&tr, old, 5), RILL__TRACK_FENCED);
    emit_ok(&tr, p, 4, 0); /* from its committed offset again */
    rill__tracker_free(&tr);
}

Test(kafka_offsets, table_iteration_and_limits)
{
    rill__tracker_t tr;
    cr_assert_eq(rill__tracker_init(&tr, 0), -1);
    cr_assert_eq(rill__tracker_init(&tr, RILL__TRACKER_MAX_SLOTS + 1), -1);
    cr_assert_eq(rill__tracker_init(&tr, 4), 0);
    rill__tpart_t *v[4];
    for (int i = 0; i < 4; i++)
        v[i] = assign_ok(&tr, i % 2 ? "b" : "a", i);
    cr_assert_null(rill__tracker_assign(&tr, "c", 0), "a full table took a partition");
    cr_assert_eq(tr.assigned, 4);

    /* Removing the current one while iterating skips nothing. */
    int visited = 0;
    for (rill__tpart_t *p = rill__tracker_next(&tr, NULL); p; p = rill__tracker_next(&tr, p)) {
        visited++;
        if (p->partition == 1 || p->partition == 2)
            rill__tracker_remove(&tr, p);
    }
    cr_assert_eq(visited, 4);
    cr_assert_eq(tr.assigned, 2);
    visited = 0;
    for (rill__tpart_t *p = rill__tracker_next(&tr, NULL); p; p = rill__tracker_next(&tr, p)) {
        cr_assert(p == v[0] || p == v[3]);
        visited++;
    }
    cr_assert_eq(visited, 2);
    cr_assert_eq(rill__tracker_find(&tr, "b", 3), v[3]);
    cr_assert_null(rill__tracker_find(&tr, "a", 3));
    cr_assert_str_eq(v[3]->topic, "b");
    /* Freed slots are taken again. */
    cr_assert_not_null(rill__tracker_assign(&tr, "c", 0));
    cr_assert_not_null(rill__tracker_assign(&tr, "c", 1));
    cr_assert_null(rill__tracker_assign(&tr, "c", 2));
    rill__tracker_free(&tr);
    rill__tracker_free(&tr); /* freeing a freed (zeroed) tracker is harmless */
}

/* ------------------------------------------------------------------ */
/* Confirms and failed records                                         */
/* ------------------------------------------------------------------ */

Test(kafka_offsets, confirm_upto_confirms_the_prefix)
{
    rill__tracker_t tr;
    cr_assert_eq(rill__tracker_init(&tr, 4), 0);
    rill__tpart_t *p = assign_ok(&tr, "upto", 0);
    size_t n = 99;
    cr_assert_eq(rill__tracker_confirm_upto(&tr, p->id, 5, &n), RILL__TRACK_UNKNOWN);
    cr_assert_eq(n, 0);
    emit_range(&tr, p, 0, 10, 0);
    confirm_ok(&tr, p, 3);
    cr_assert_eq(rill__tracker_confirm_upto(&tr, p->id, 5, &n), RILL__TRACK_ACCEPTED);
    cr_assert_eq(n, 5, "0, 1, 2, 4, 5: %zu", n);
    cr_assert_eq(p->committable, 6);
    cr_assert_eq(tr.unconfirmed, 4);
    cr_assert_eq(tr.confirmed, 6);
    /* Everything up to 5 is committable and gone from the ring. */
    cr_assert_eq(rill__tracker_confirm_upto(&tr, p->id, 5, &n), RILL__TRACK_UNKNOWN);
    cr_assert_eq(rill__tracker_confirm(&tr, p->id, 4), RILL__TRACK_UNKNOWN);
    /* An offset in between counts too, and n may be NULL. */
    cr_assert_eq(rill__tracker_confirm_upto(&tr, p->id, 6, NULL), RILL__TRACK_ACCEPTED);
    cr_assert_eq(p->committable, 7);
    /* Failed records stay failed: the prefix stops there. */
    cr_assert_eq(rill__tracker_fail(&tr, p->id, 8), RILL__TRACK_ACCEPTED);
    cr_assert_eq(rill__tracker_confirm_upto(&tr, p->id, 1000, &n), RILL__TRACK_ACCEPTED);
    cr_assert_eq(n, 2, "7 and 9: %zu", n);
    cr_assert_eq(p->committable, 8);
    cr_assert_eq(rill__tracker_confirm_upto(&tr, p->id, 9, &n), RILL__TRACK_DUPLICATE);
    cr_assert_eq(n, 0);
    cr_assert_eq(tr.unconfirmed, 1);
    cr_assert_eq(tr.unsettled, 0);
    rill__tracker_free(&tr);
}

Test(kafka_offsets, failed_records_are_settled_but_never_committed)
{
    rill__tracker_t tr;
    cr_assert_eq(rill__tracker_init(&tr, 4), 0);
    rill__tpart_t *p = assign_ok(&tr, "nack", 0);
    emit_range(&tr, p, 0, 5, 1000);
    cr_assert_eq(rill__tracker_fail(&tr, p->id, 2), RILL__TRACK_ACCEPTED);
    cr_assert_eq(tr.unconfirmed, 5);
    cr_assert_eq(tr.unsettled, 4);
    cr_assert_eq(rill__tracker_fail(&tr, p->id, 2), RILL__TRACK_DUPLICATE);
    cr_assert_eq(rill__tracker_fail(&tr, p->id, 7), RILL__TRACK_UNKNOWN);
    for (int64_t o = 0; o < 5; o++)
        if (o != 2)
            confirm_ok(&tr, p, o);
    cr_assert_eq(p->committable, 2, "committable %lld passed the failed record",
                 (long long)p->committable);
    cr_assert_eq(tr.unconfirmed, 1);
    cr_assert_eq(tr.unsettled, 0);
    /* A late confirm of the failed record is ignored; so is a late fail
     * of a confirmed one. */
    cr_assert_eq(rill__tracker_confirm(&tr, p->id, 2), RILL__TRACK_DUPLICATE);
    cr_assert_eq(rill__tracker_fail(&tr, p->id, 3), RILL__TRACK_DUPLICATE);
    cr_assert_eq(p->committable, 2);
    cr_assert_eq(rill__tracker_to_commit(p), 2);
    cr_assert_eq(tr.confirmed, 4);

    /* Due at once, whatever the timeout. */
    int64_t from = -1;
    cr_assert(rill__tracker_due(p, 1000, 60000, &from));
    cr_assert_eq(from, 2);
    cr_assert(rill__tracker_due(p, 1000, 0, &from));

    /* Delivered again and confirmed this time: the partition moves on. */
    cr_assert_eq(rill__tracker_count_attempt(p, 2), 1);
    rill__tracker_truncate_from(&tr, p, 2);
    cr_assert_eq(tr.unconfirmed, 0);
    cr_assert_eq(tr.unsettled, 0);
    cr_assert_eq(p->committable, 2);
    emit_range(&tr, p, 2, 5, 2000);
    cr_assert_eq(tr.unsettled, 3);
    cr_assert(!rill__tracker_due(p, 2000, 60000, &from));
    size_t n = 0;
    cr_assert_eq(rill__tracker_confirm_upto(&tr, p->id, 4, &n), RILL__TRACK_ACCEPTED);
    cr_assert_eq(n, 3);
    cr_assert_eq(p->committable, 5);
    cr_assert_eq(rill__tracker_attempts(p, 2), 0, "attempts below the committable offset stay");
    rill__tracker_free(&tr);
}

/* ------------------------------------------------------------------ */
/* Redelivery bookkeeping                                              */
/* ------------------------------------------------------------------ */

Test(kafka_offsets, redelivery_due_attempts_and_truncation)
{
    rill__tracker_t tr;
    cr_assert_eq(rill__tracker_init(&tr, 4), 0);
    rill__tpart_t *p = assign_ok(&tr, "redeliv", 0);
    int64_t from = -1;
    cr_assert(!rill__tracker_due(p, 0, 500, &from), "nothing emitted, something due");
    emit_range(&tr, p, 0, 10, 1000);
    cr_assert(!rill__tracker_due(p, 1499, 500, &from));
    cr_assert(!rill__tracker_due(p, 100000, 0, &from), "timeout 0 must mean no timeout");
    cr_assert(rill__tracker_due(p, 1500, 500, &from));
    cr_assert_eq(from, 0);
    confirm_ok(&tr, p, 0);
    confirm_ok(&tr, p, 1);
    confirm_ok(&tr, p, 2);
    confirm_ok(&tr, p, 5);
    cr_assert(rill__tracker_due(p, 1500, 500, &from));
    cr_assert_eq(from, 3, "the oldest record not confirmed is due");

    /* Attempts per offset. */
    cr_assert_eq(rill__tracker_attempts(p, 3), 0);
    cr_assert_eq(rill__tracker_count_attempt(p, 3), 1);
    cr_assert_eq(rill__tracker_count_attempt(p, 3), 2);
    cr_assert_eq(rill__tracker_attempts(p, 3), 2);
    cr_assert_eq(rill__tracker_attempts(p, 4), 0);

    /* Seek back to 3: what went out from there is forgotten (5 was
     * confirmed: it comes again and must be confirmed again). */
    rill__tracker_truncate_from(&tr, p, 3);
    cr_assert_eq(tr.unconfirmed, 0);
    cr_assert_eq(tr.unsettled, 0);
    cr_assert_eq(p->count, 0);
    cr_assert_eq(p->committable, 3);
    cr_assert_eq(rill__tracker_confirm(&tr, p->id, 4), RILL__TRACK_UNKNOWN,
                 "a confirm of a truncated record counted");
    cr_assert(!rill__tracker_due(p, 100000, 500, &from));
    /* Records fetched before the seek are stale; the first one from the
     * seek on ends the purge. */
    cr_assert(rill__tracker_buffered_stale(p, 3));
    cr_assert(rill__tracker_buffered_stale(p, 7));
    cr_assert(!rill__tracker_buffered_stale(p, 2));
    cr_assert_eq(rill__tracker_polled(p, 2), 0);
    cr_assert_eq(rill__tracker_polled(p, 3), 1);
    cr_assert_eq(p->purge_from, -1);
    cr_assert(!rill__tracker_buffered_stale(p, 7));
    cr_assert_eq(rill__tracker_polled(p, 2), 1, "no purge, no stale records");

    /* Emitted again, later: not due before its time. */
    cr_assert_eq(rill__tracker_emit(&tr, p->id, 2, 2000), RILL__TRACK_ORDER);
    emit_range(&tr, p, 3, 10, 2000);
    cr_assert(!rill__tracker_due(p, 2499, 500, &from));
    cr_assert(rill__tracker_due(p, 2500, 500, &from));
    cr_assert_eq(from, 3);
    confirm_ok(&tr, p, 3);
    cr_assert_eq(rill__tracker_attempts(p, 3), 0, "attempts forgotten once committed past");

    /* Forgetting explicitly. */
    rill__tracker_count_attempt(p, 7);
    rill__tracker_count_attempt(p, 8);
    rill__tracker_count_attempt(p, 9);
    rill__tracker_forget_attempts_below(p, 8);
    cr_assert_eq(rill__tracker_attempts(p, 7), 0);
    cr_assert_eq(rill__tracker_attempts(p, 8), 1);
    cr_assert_eq(rill__tracker_attempts(p, 9), 1);

    /* A later failed record is due before the head times out. */
    cr_assert_eq(rill__tracker_fail(&tr, p->id, 6), RILL__TRACK_ACCEPTED);
    cr_assert(rill__tracker_due(p, 2000, 500, &from));
    cr_assert_eq(from, 6);
    /* Truncating from 6 keeps 4 and 5; a lower offset truncates from the
     * committable one (what lies before it was confirmed). */
    rill__tracker_truncate_from(&tr, p, 6);
    cr_assert_eq(p->count, 2);
    cr_assert_eq(tr.unconfirmed, 2);
    cr_assert_eq(tr.unsettled, 2);
    cr_assert_eq(p->committable, 4);
    rill__tracker_truncate_from(&tr, p, 1);
    cr_assert_eq(p->count, 0);
    cr_assert_eq(tr.unconfirmed, 0);
    cr_assert_eq(p->committable, 4);
    cr_assert_eq(rill__tracker_emit(&tr, p->id, 3, 3000), RILL__TRACK_ORDER,
                 "a confirmed record was taken again");
    emit_ok(&tr, p, 4, 3000);
    cr_assert_eq(p->committable, 4);
    rill__tracker_free(&tr);
}

Test(kafka_offsets, dead_letters_are_not_due)
{
    rill__tracker_t tr;
    cr_assert_eq(rill__tracker_init(&tr, 4), 0);
    rill__tpart_t *p = assign_ok(&tr, "dlq", 0);
    emit_ok(&tr, p, 0, 1000);
    cr_assert_eq(rill__tracker_dead_letter(p, 0, 1, 1000), 0);
    emit_range(&tr, p, 1, 5, 4900);
    cr_assert_eq(rill__tracker_dead_letter(p, 42, 1, 1000), -1);
    int64_t from = -1;
    /* The dead letter is on its way: neither it nor what follows is due,
     * not even a failed record. */
    cr_assert(!rill__tracker_due(p, 100000, 500, &from));
    cr_assert_eq(rill__tracker_fail(&tr, p->id, 3), RILL__TRACK_ACCEPTED);
    cr_assert(!rill__tracker_due(p, 100000, 500, &from));
    cr_assert_eq(tr.unsettled, 4, "a dead letter on its way is unsettled");
    /* Its delivery failed: it is timed again from now. */
    cr_assert_eq(rill__tracker_dead_letter(p, 0, 0, 5000), 0);
    cr_assert(rill__tracker_due(p, 5000, 500, &from));
    cr_assert_eq(from, 3, "the failed record is due at once");
    cr_assert(rill__tracker_due(p, 5500, 500, &from));
    cr_assert_eq(from, 0, "the dead letter is due again after the timeout");
    /* Delivered: confirmed like any record. */
    cr_assert_eq(rill__tracker_dead_letter(p, 0, 1, 6000), 0);
    confirm_ok(&tr, p, 0);
    cr_assert_eq(p->committable, 1);
    cr_assert(rill__tracker_due(p, 6000, 500, &from));
    cr_assert_eq(from, 1, "emitted at 4900, due at 5400");
    rill__tracker_free(&tr);
}

/* ------------------------------------------------------------------ */
/* Commits                                                             */
/* ------------------------------------------------------------------ */

Test(kafka_offsets, commit_bookkeeping)
{
    rill__tracker_t tr;
    cr_assert_eq(rill__tracker_init(&tr, 4), 0);
    rill__tpart_t *p = assign_ok(&tr, "commits", 0);
    rill__tpart_t *q = assign_ok(&tr, "commits", 1);
    cr_assert_eq(rill__tracker_to_commit(p), -1, "nothing emitted, something to commit");
    emit_range(&tr, p, 100, 105, 0);
    cr_assert_eq(rill__tracker_to_commit(p), 100);
    cr_assert_eq(rill__tracker_to_commit(q), -1);
    rill__tracker_mark_committed(p, 100);
    cr_assert_eq(rill__tracker_to_commit(p), -1);
    confirm_ok(&tr, p, 101);
    cr_assert_eq(rill__tracker_to_commit(p), -1, "101 is confirmed but 100 is not");
    confirm_ok(&tr, p, 100);
    cr_assert_eq(rill__tracker_to_commit(p), 102);
    rill__tracker_mark_committed(p, 102);
    /* A failed commit of an older offset changes nothing; of the last
     * one, it is committed again. */
    rill__tracker_commit_failed(p, 100);
    cr_assert_eq(rill__tracker_to_commit(p), -1);
    rill__tracker_commit_failed(p, 102);
    cr_assert_eq(rill__tracker_to_commit(p), 102);
    rill__tracker_mark_committed(p, 102);
    confirm_ok(&tr, p, 102);
    cr_assert_eq(rill__tracker_to_commit(p), 103);
    rill__tracker_mark_committed(p, 103);
    /* A commit that may not have arrived is sent again on request. */
    rill__tracker_commit_again(p);
    cr_assert_eq(rill__tracker_to_commit(p), 103);
    rill__tracker_mark_committed(p, 103);
    /* Successes in order change nothing; a success of a lower offset after
     * a higher one (an older request retried after an outage, processed
     * by the broker last) sends the latest again. */
    rill__tracker_commit_acked(p, 102);
    rill__tracker_commit_acked(p, 103);
    cr_assert_eq(rill__tracker_to_commit(p), -1);
    rill__tracker_commit_acked(p, 102);
    cr_assert_eq(rill__tracker_to_commit(p), 103, "a regressed commit is not repaired");
    /* A partition with nothing committable never has anything to commit,
     * even when asked again. */
    rill__tracker_commit_again(q);
    cr_assert_eq(rill__tracker_to_commit(q), -1);
    rill__tracker_free(&tr);
}

Test(kafka_offsets, result_names)
{
    cr_assert_str_eq(rill__track_res_name(RILL__TRACK_ACCEPTED), "accepted");
    cr_assert_str_eq(rill__track_res_name(RILL__TRACK_FENCED), "fenced");
    cr_assert_str_eq(rill__track_res_name((rill__track_res_t)99), "?");
}
