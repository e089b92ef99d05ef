/*
 * conflate_by_key: keep-latest per key, the drop buffer for full-state
 * messages. While downstream has no demand, an element replaces the one
 * waiting with the same key (the older is dropped, which confirms it);
 * keys go out in the order they first arrived since they were last sent.
 *
 * Entries live in a fixed table of max_keys slots; a FIFO ring of slot
 * numbers keeps the order, and an open-addressing hash (linear probing,
 * backward-shift deletion, so no tombstones) finds a key's slot. The stage
 * asks upstream for at most as many elements as it has free slots, so a
 * new key always finds one.
 */
#include <stdlib.h>
#include <string.h>

#include "../kinds.h"

#define DEFAULT_MAX_KEYS 1024u

typedef struct centry {
    uint64_t key;
    rill_elem_t e;
} centry_t;

typedef struct conflate_key {
    rill_key_fn *key_fn;
    void *opaque;
    size_t max_keys;
    /* run state, made at start */
    centry_t *slots;
    uint32_t *free_slots; /* stack of free slot numbers */
    size_t n_free;
    uint32_t *order; /* FIFO ring of slot numbers */
    size_t head, count;
    uint32_t *hash; /* slot + 1, 0 = empty */
    size_t hmask;
    int upstream_done;
} conflate_key_t;

static size_t hash_of(uint64_t key)
{
    key ^= key >> 33;
    key *= 0xff51afd7ed558ccdull;
    key ^= key >> 33;
    return (size_t)key;
}

/* The hash position holding key, or the empty one where it would go. */
static size_t hash_find(const conflate_key_t *c, uint64_t key)
{
    size_t i = hash_of(key) & c->hmask;
    while (c->hash[i] && c->slots[c->hash[i] - 1].key != key)
        i = (i + 1) & c->hmask;
    return i;
}

/* Remove position i, shifting later entries of its run back (Knuth's
 * algorithm R), so lookups never need tombstones. */
static void hash_remove(conflate_key_t *c, size_t i)
{
    c->hash[i] = 0;
    for (size_t j = (i + 1) & c->hmask; c->hash[j]; j = (j + 1) & c->hmask) {
        size_t home = hash_of(c->slots[c->hash[j] - 1].key) & c->hmask;
        /* Move j to i unless its home lies cyclically in (i, j]. */
        if ((j > i && (home <= i || home > j)) || (j < i && home <= i && home > j)) {
            c->hash[i] = c->hash[j];
            c->hash[j] = 0;
            i = j;
        }
    }
}

static void ckey_destroy(void *impl)
{
    conflate_key_t *c = impl;
    if (!c)
        return;
    for (size_t n = 0; c->order && n < c->count; n++)
        rill_elem_release(&c->slots[c->order[(c->head + n) % c->max_keys]].e);
    free(c->slots);
    free(c->free_slots);
    free(c->order);
    free(c->hash);
    free(c);
}

static rill_err_t ckey_start(rill__stage_t *st)
{
    conflate_key_t *c = st->spec.impl;
    size_t hsize = 1;
    while (hsize < 2 * c->max_keys)
        hsize <<= 1;
    c->slots = calloc(c->max_keys, sizeof(*c->slots));
    c->free_slots = malloc(c->max_keys * sizeof(*c->free_slots));
    c->order = malloc(c->max_keys * sizeof(*c->order));
    c->hash = calloc(hsize, sizeof(*c->hash));
    if (!c->slots || !c->free_slots || !c->order || !c->hash)
        return RILL_ENOMEM;
    c->hmask = hsize - 1;
    for (size_t i = 0; i < c->max_keys; i++)
        c->free_slots[i] = (uint32_t)(c->max_keys - 1 - i);
    c->n_free = c->max_keys;
    return RILL_OK;
}

static void ckey_on_next(rill__stage_t *st, int in, rill_elem_t *e)
{
    (void)in;
    conflate_key_t *c = st->spec.impl;
    uint64_t key = c->key_fn(c->opaque, e);
    size_t h = hash_find(c, key);
    if (c->hash[h]) {
        /* The same key waits: the newer state replaces it. */
        centry_t *old = &c->slots[c->hash[h] - 1];
        rill__stage_drop(st, &old->e);
        old->e = *e;
        return;
    }
    if (!c->n_free) {
        /* Cannot happen: we ask for no more than there are free slots. */
        rill_elem_release(e);
        rill__stage_fail(st, RILL_EFULL, "more than %zu keys waiting", c->max_keys);
        return;
    }
    uint32_t slot = c->free_slots[--c->n_free];
    c->slots[slot].key = key;
    c->slots[slot].e = *e;
    c->hash[h] = slot + 1;
    c->order[(c->head + c->count) % c->max_keys] = slot;
    c->count++;
}

static void ckey_on_input_end(rill__stage_t *st, int in, rill_err_t code, const char *text)
{
    (void)in;
    conflate_key_t *c = st->spec.impl;
    rill__queue_stage_end(st, &c->upstream_done, code, text);
}

static void ckey_pump(rill__stage_t *st)
{
    conflate_key_t *c = st->spec.impl;
    while (c->count && rill__stage_can_emit(st, 0)) {
        uint32_t slot = c->order[c->head];
        c->head = (c->head + 1) % c->max_keys;
        c->count--;
        centry_t *ent = &c->slots[slot];
        hash_remove(c, hash_find(c, ent->key));
        rill_elem_t e = ent->e;
        memset(&ent->e, 0, sizeof(ent->e));
        c->free_slots[c->n_free++] = slot;
        rill__stage_emit(st, 0, &e);
    }
    if (c->upstream_done) {
        if (!c->count)
            rill__stage_complete(st);
        return;
    }
    /* Keep pulling (this stage does not backpressure), but never more than
     * there are free slots for new keys. */
    rill__stage_want(st, 0, (int64_t)c->n_free);
}

const rill__kind_t rill__conflate_key_kind = {.name = "conflate_by_key",
                                              .max_in = 1,
                                              .max_out = 1,
                                              .start = ckey_start,
                                              .on_next = ckey_on_next,
                                              .on_input_end = ckey_on_input_end,
                                              .pump = ckey_pump,
                                              .destroy = ckey_destroy,
                                              .impl_size = sizeof(conflate_key_t)};

rill_stage_t *rill_stage_conflate_by_key(rill_key_fn *key_fn, void *opaque, size_t max_keys)
{
    if (!key_fn)
        return rill__stage_spec_bad(&rill__conflate_key_kind, RILL_EINVAL,
                                    "the key function is NULL");
    if (max_keys > (1u << 24))
        return rill__stage_spec_bad(&rill__conflate_key_kind, RILL_EINVAL,
                                    "max_keys must be at most 2^24, got %zu", max_keys);
    conflate_key_t *c = calloc(1, sizeof(*c));
    if (c) {
        c->key_fn = key_fn;
        c->opaque = opaque;
        c->max_keys = max_keys ? max_keys : DEFAULT_MAX_KEYS;
    }
    return rill__stage_spec_new(&rill__conflate_key_kind, c);
}
