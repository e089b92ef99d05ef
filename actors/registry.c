/*
 * The actor table and the name registry: how an aid or a name leads to an
 * actor. See actor_int.h (rill__slot_t) for how senders are kept from
 * touching freed memory.
 */
#include <stdlib.h>
#include <string.h>

#include "../actors/util.h"
#include "actor_int.h"

/* ------------------------------------------------------------------ */
/* Actor table                                                         */
/* ------------------------------------------------------------------ */

rill__slot_t *rill__slot_of(rill_system_t *sys, uint32_t idx)
{
    uint32_t c = idx >> RILL__CHUNK_SHIFT;
    if (c >= RILL__MAX_CHUNKS)
        return NULL;
    /* acquire: pairs with the release store that published the chunk. */
    rill__slot_t *chunk = atomic_load_explicit(&sys->chunks[c], memory_order_acquire);
    return chunk ? &chunk[idx & (RILL__CHUNK_SIZE - 1)] : NULL;
}

rill__actor_t *rill__actor_acquire(rill_system_t *sys, rill_aid_t aid, rill__slot_t **slotp)
{
    rill__slot_t *slot = rill__slot_of(sys, (uint32_t)aid.id);
    if (!slot)
        return NULL;
    rill__executor_t *self = rill__tls_exec;
    if (self && self->sys == sys) {
        /* Quiescent-state protected: the actor's memory cannot be reaped
         * before this executor's current callback returns. */
        rill__actor_t *a = atomic_load_explicit(&slot->actor, memory_order_acquire);
        if (!a || !rill_aid_eq(a->aid, aid) || atomic_load_explicit(&a->dead, memory_order_seq_cst))
            return NULL;
        *slotp = NULL;
        return a;
    }
    /* seq_cst: the increment is ordered before the state load below, and
     * the stopping actor's DEAD store before its load of users, so one of
     * the two always sees the other. */
    atomic_fetch_add_explicit(&slot->users, 1, memory_order_seq_cst);
    rill__actor_t *a = NULL;
    if (atomic_load_explicit(&slot->gen, memory_order_seq_cst) == (uint32_t)(aid.id >> 32) &&
        atomic_load_explicit(&slot->state, memory_order_seq_cst) == SLOT_ALIVE)
        a = atomic_load_explicit(&slot->actor, memory_order_acquire);
    if (!a || !rill_aid_eq(a->aid, aid)) {
        atomic_fetch_sub_explicit(&slot->users, 1, memory_order_release);
        return NULL;
    }
    *slotp = slot;
    return a;
}

/* Claim a free slot for a; returns its index, or UINT32_MAX. */
uint32_t rill__slot_claim(rill_system_t *sys, rill__actor_t *a, rill_aid_t *aid)
{
    pthread_mutex_lock(&sys->slots_lock);
    uint32_t idx = UINT32_MAX;
    if (sys->free_head) {
        idx = sys->free_head - 1;
        sys->free_head = rill__slot_of(sys, idx)->next_free;
    } else if (sys->slots_used < RILL__MAX_CHUNKS * RILL__CHUNK_SIZE) {
        idx = sys->slots_used;
        uint32_t c = idx >> RILL__CHUNK_SHIFT;
        if (!atomic_load_explicit(&sys->chunks[c], memory_order_relaxed)) {
            rill__slot_t *chunk = calloc(RILL__CHUNK_SIZE, sizeof(*chunk));
            if (!chunk) {
                pthread_mutex_unlock(&sys->slots_lock);
                return UINT32_MAX;
            }
            for (uint32_t i = 0; i < RILL__CHUNK_SIZE; i++)
                atomic_init(&chunk[i].gen, 1);
            /* release: the initialised chunk is visible to lock-free readers. */
            atomic_store_explicit(&sys->chunks[c], chunk, memory_order_release);
        }
        sys->slots_used++;
    }
    if (idx != UINT32_MAX) {
        rill__slot_t *slot = rill__slot_of(sys, idx);
        uint32_t gen = atomic_load_explicit(&slot->gen, memory_order_relaxed);
        aid->id = ((uint64_t)gen << 32) | idx;
        atomic_store_explicit(&slot->actor, a, memory_order_release);
        /* release: the actor's fields are visible to senders that see ALIVE. */
        atomic_store_explicit(&slot->state, SLOT_ALIVE, memory_order_seq_cst);
    }
    pthread_mutex_unlock(&sys->slots_lock);
    return idx;
}

/* After the actor is gone: new generation, back on the free list. */
void rill__slot_free(rill_system_t *sys, uint32_t idx)
{
    rill__slot_t *slot = rill__slot_of(sys, idx);
    if (!slot)
        return; /* cannot happen: the index came from rill__slot_claim */
    pthread_mutex_lock(&sys->slots_lock);
    atomic_store_explicit(&slot->actor, NULL, memory_order_relaxed);
    uint32_t gen = atomic_load_explicit(&slot->gen, memory_order_relaxed) + 1;
    if (gen == 0)
        gen = 1; /* never 0, so an aid is never 0 */
    /* A sender holding an old aid now fails the generation check. */
    atomic_store_explicit(&slot->gen, gen, memory_order_seq_cst);
    atomic_store_explicit(&slot->state, SLOT_FREE, memory_order_seq_cst);
    slot->next_free = sys->free_head;
    sys->free_head = idx + 1;
    pthread_mutex_unlock(&sys->slots_lock);
}

int rill_alive(rill_system_t *sys, rill_aid_t aid)
{
    if (!sys || rill_aid_is_none(aid))
        return 0;
    rill__slot_t *slot = rill__slot_of(sys, (uint32_t)aid.id);
    if (!slot)
        return 0;
    /* Alive until stopped for good: accepting messages, or refusing them
     * already while its terminate hook runs. The state is read before the
     * generation: a slot reused in between fails the generation check. */
    uint32_t state = atomic_load_explicit(&slot->state, memory_order_seq_cst);
    return atomic_load_explicit(&slot->gen, memory_order_seq_cst) == (uint32_t)(aid.id >> 32) &&
           (state == SLOT_ALIVE || state == SLOT_STOPPING);
}

/* ------------------------------------------------------------------ */
/* Names                                                               */
/* ------------------------------------------------------------------ */

static unsigned name_hash(const char *s)
{
    unsigned h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h & 255u;
}

/* Returns RILL_OK or RILL_EEXIST. Called with names_lock held. */
static rill_err_t names_add_locked(rill_system_t *sys, char *name, rill_aid_t aid)
{
    unsigned h = name_hash(name);
    for (rill__name_entry_t *e = sys->names[h]; e; e = e->next)
        if (!strcmp(e->name, name)) {
            if (!rill_aid_eq(e->aid, RILL__AID_RESTARTING))
                return RILL_EEXIST;
            /* the restarted actor takes over its held name */
            e->aid = aid;
            e->name = name;
            return RILL_OK;
        }
    rill__name_entry_t *e = malloc(sizeof(*e));
    if (!e)
        return RILL_ENOMEM;
    e->name = name;
    e->aid = aid;
    e->next = sys->names[h];
    sys->names[h] = e;
    return RILL_OK;
}

void rill__names_remove(rill_system_t *sys, const char *name, rill_aid_t aid)
{
    if (!name)
        return;
    pthread_mutex_lock(&sys->names_lock);
    for (rill__name_entry_t **pp = &sys->names[name_hash(name)]; *pp; pp = &(*pp)->next) {
        rill__name_entry_t *e = *pp;
        if (rill_aid_eq(e->aid, aid) && !strcmp(e->name, name)) {
            *pp = e->next;
            free(e);
            break;
        }
    }
    pthread_mutex_unlock(&sys->names_lock);
}

rill_err_t rill__names_hold_restarting(rill_system_t *sys, const char *name)
{
    if (!name)
        return RILL_EINVAL;
    pthread_mutex_lock(&sys->names_lock);
    rill_err_t err = RILL_OK;
    unsigned h = name_hash(name);
    rill__name_entry_t *found = NULL;
    for (rill__name_entry_t *e = sys->names[h]; e; e = e->next)
        if (!strcmp(e->name, name))
            found = e;
    if (found) {
        err = rill_aid_eq(found->aid, RILL__AID_RESTARTING) ? RILL_OK : RILL_EEXIST;
    } else {
        /* The entry owns a copy of the name while it is held. */
        rill__name_entry_t *e = malloc(sizeof(*e) + strlen(name) + 1);
        if (!e) {
            err = RILL_ENOMEM;
        } else {
            e->name = (char *)(e + 1);
            strcpy(e->name, name);
            e->aid = RILL__AID_RESTARTING;
            e->next = sys->names[h];
            sys->names[h] = e;
        }
    }
    pthread_mutex_unlock(&sys->names_lock);
    return err;
}

void rill__names_release_restarting(rill_system_t *sys, const char *name)
{
    rill__names_remove(sys, name, RILL__AID_RESTARTING);
}

/* Like rill_lookup, but tells a restarting hold apart from no actor. */
rill_aid_t rill__names_lookup(rill_system_t *sys, const char *name)
{
    rill_aid_t aid = RILL_AID_NONE;
    pthread_mutex_lock(&sys->names_lock);
    for (rill__name_entry_t *e = sys->names[name_hash(name)]; e; e = e->next)
        if (!strcmp(e->name, name)) {
            aid = e->aid;
            break;
        }
    pthread_mutex_unlock(&sys->names_lock);
    return aid;
}

rill_aid_t rill_lookup(rill_system_t *sys, const char *name)
{
    if (!sys || !name)
        return RILL_AID_NONE;
    rill_aid_t aid = rill__names_lookup(sys, name);
    return rill_aid_eq(aid, RILL__AID_RESTARTING) ? RILL_AID_NONE : aid;
}

rill_err_t rill__names_reserve(rill_system_t *sys, char *name)
{
    pthread_mutex_lock(&sys->names_lock);
    rill_err_t err = names_add_locked(sys, name, RILL_AID_NONE);
    pthread_mutex_unlock(&sys->names_lock);
    return err;
}

void rill__names_bind(rill_system_t *sys, const char *name, rill_aid_t aid)
{
    /* The name was reserved with aid 0; now it points at the actor. */
    pthread_mutex_lock(&sys->names_lock);
    for (rill__name_entry_t *e = sys->names[name_hash(name)]; e; e = e->next)
        if (rill_aid_is_none(e->aid) && !strcmp(e->name, name))
            e->aid = aid;
    pthread_mutex_unlock(&sys->names_lock);
}

void rill__registry_free(rill_system_t *sys)
{
    for (uint32_t c = 0; c < RILL__MAX_CHUNKS; c++)
        free(atomic_load(&sys->chunks[c]));
    for (int h = 0; h < 256; h++)
        while (sys->names[h]) {
            rill__name_entry_t *e = sys->names[h];
            sys->names[h] = e->next;
            free(e);
        }
}

/* ------------------------------------------------------------------ */
/* Claims: places on an actor counted for the layers above             */
/* ------------------------------------------------------------------ */

rill_err_t rill__actor_claim(rill_system_t *sys, rill_aid_t aid, int which, uint32_t max)
{
    if (!sys || rill_aid_is_none(aid) || which < 0 || which > 1)
        return RILL_EINVAL;
    rill__slot_t *slot;
    rill__actor_t *a = rill__actor_acquire(sys, aid, &slot);
    if (!a)
        return RILL_ESTOPPED;
    rill_err_t err = RILL_OK;
    uint32_t n = atomic_load_explicit(&a->claims[which], memory_order_relaxed);
    do {
        if (n >= max) {
            err = RILL_EFULL;
            break;
        }
    } while (!atomic_compare_exchange_weak_explicit(&a->claims[which], &n, n + 1,
                                                    memory_order_relaxed, memory_order_relaxed));
    rill__actor_release(slot);
    return err;
}

void rill__actor_unclaim(rill_system_t *sys, rill_aid_t aid, int which)
{
    if (!sys || rill_aid_is_none(aid) || which < 0 || which > 1)
        return;
    rill__slot_t *slot;
    rill__actor_t *a = rill__actor_acquire(sys, aid, &slot);
    if (!a)
        return;
    atomic_fetch_sub_explicit(&a->claims[which], 1, memory_order_relaxed);
    rill__actor_release(slot);
}
