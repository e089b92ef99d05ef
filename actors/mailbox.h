/*
 * The bounded user mailbox: a multi-producer single-consumer ring of
 * message envelopes. Producers claim a position with one CAS on the tail
 * (after checking it is free against the consumer's head) and publish the
 * slot with a release store of its sequence number (after Vyukov's bounded
 * queue); the consumer needs no atomic read-modify-write at all. A full ring
 * is detected exactly, without blocking, so a refused send leaves nothing
 * behind.
 *
 * Each slot fills one 64-byte cache line, so a producer writing slot i+1
 * does not invalidate the line the consumer is reading slot i from.
 */
#ifndef RILL_MAILBOX_H
#define RILL_MAILBOX_H

#include <stdatomic.h>
#include <stdint.h>

#include <rill/actor.h>

typedef struct rill__mslot {
    _Atomic uint64_t seq; /* position + 1 once the envelope is written */
    rill_msg_t msg;
} __attribute__((aligned(64))) rill__mslot_t;

typedef struct rill__mailbox {
    /* Read-only after init, on a line of their own: if they shared the
     * consumer's line, every pop would evict them from the producers. */
    _Alignas(64) uint64_t mask;
    rill__mslot_t *slots;
    /* Producers' line: the claim counter and their cached view of head. */
    _Alignas(64) _Atomic uint64_t tail;
    _Atomic uint64_t head_cache;
    /* Consumer's line. */
    _Alignas(64) _Atomic uint64_t head;
} rill__mailbox_t;

/* capacity: a power of two. Returns 0, or -1 on out of memory. */
int rill__mailbox_init(rill__mailbox_t *mb, uint32_t capacity);
void rill__mailbox_free(rill__mailbox_t *mb);

/*
 * Returns 0, or -1 when full. @locality any thread.
 *
 * A slot's sequence is written only by producers (position + 1, unique per
 * lap), so the consumer never writes to slot lines: it only advances head.
 * Producers read head (the consumer's line) only when their cached copy
 * says the ring may be full.
 */
static inline int rill__mailbox_push(rill__mailbox_t *mb, const rill_msg_t *msg)
{
    uint64_t cap = mb->mask + 1;
    uint64_t pos = atomic_load_explicit(&mb->tail, memory_order_relaxed);
    for (;;) {
        /* acquire/release on head_cache too: a producer that trusts
         * another producer's copy of head must also inherit its
         * synchronisation with the consumer's reads (free on x86). */
        uint64_t head = atomic_load_explicit(&mb->head_cache, memory_order_acquire);
        if (pos - head >= cap) {
            /* acquire: the consumer finished reading the slot before it
             * published the head that frees it. */
            head = atomic_load_explicit(&mb->head, memory_order_acquire);
            atomic_store_explicit(&mb->head_cache, head, memory_order_release);
            if (pos - head >= cap)
                return -1;
        }
        /* seq_cst: the claim is ordered before the caller's check of the
         * actor's scheduled flag (a StoreLoad pair with the consumer, which
         * clears the flag and then re-checks the tail). */
        if (atomic_compare_exchange_weak_explicit(&mb->tail, &pos, pos + 1, memory_order_seq_cst,
                                                  memory_order_relaxed))
            break;
    }
    rill__mslot_t *s = &mb->slots[pos & mb->mask];
    s->msg = *msg;
    /* release: publishes the envelope to the consumer. */
    atomic_store_explicit(&s->seq, pos + 1, memory_order_release);
    return 0;
}

/*
 * Pushes the longest prefix of msgs[0..n) that fits, with one CAS for all
 * of it; returns how many went (0 when full). The claimed positions are
 * consecutive, so the envelopes keep their order, and nothing of another
 * producer lands between them. @locality any thread.
 */
static inline uint32_t rill__mailbox_push_n(rill__mailbox_t *mb, const rill_msg_t *msgs, uint32_t n)
{
    uint64_t cap = mb->mask + 1;
    uint64_t pos = atomic_load_explicit(&mb->tail, memory_order_relaxed);
    uint64_t k;
    for (;;) {
        /* Orders as in rill__mailbox_push. */
        uint64_t head = atomic_load_explicit(&mb->head_cache, memory_order_acquire);
        if (pos - head + n > cap) {
            head = atomic_load_explicit(&mb->head, memory_order_acquire);
            atomic_store_explicit(&mb->head_cache, head, memory_order_release);
        }
        uint64_t room = pos - head >= cap ? 0 : cap - (pos - head);
        k = room < n ? room : n;
        if (k == 0)
            return 0;
        if (atomic_compare_exchange_weak_explicit(&mb->tail, &pos, pos + k, memory_order_seq_cst,
                                                  memory_order_relaxed))
            break;
    }
    for (uint64_t i = 0; i < k; i++) {
        rill__mslot_t *s = &mb->slots[(pos + i) & mb->mask];
        s->msg = msgs[i];
        /* release: publishes this envelope; the consumer stops at the
         * first slot not yet published, so the order holds. */
        atomic_store_explicit(&s->seq, pos + i + 1, memory_order_release);
    }
    return (uint32_t)k;
}

/* Returns 1 and fills *out, or 0 when empty (or the next slot is claimed
 * but not yet written). @locality the owning executor thread. */
static inline int rill__mailbox_pop(rill__mailbox_t *mb, rill_msg_t *out)
{
    uint64_t head = atomic_load_explicit(&mb->head, memory_order_relaxed);
    rill__mslot_t *s = &mb->slots[head & mb->mask];
    /* acquire: pairs with the producer's release of seq. */
    if (atomic_load_explicit(&s->seq, memory_order_acquire) != head + 1)
        return 0;
    *out = s->msg;
    /* release: our read of the slot happens before a producer reuses it. */
    atomic_store_explicit(&mb->head, head + 1, memory_order_release);
    return 1;
}

/* Messages queued or being written. The head is read first so that, from
 * another thread, head <= tail still holds; seq_cst on the tail pairs with
 * the producers' claim (see push). @locality any thread. */
static inline uint64_t rill__mailbox_depth(rill__mailbox_t *mb)
{
    uint64_t head = atomic_load_explicit(&mb->head, memory_order_acquire);
    uint64_t tail = atomic_load_explicit(&mb->tail, memory_order_seq_cst);
    return tail - head;
}

#endif /* RILL_MAILBOX_H */
