/*
 * Origins: reference-counted receipts for what a message or an element
 * stands for upstream (see include/rill/actor.h, "Origins").
 *
 * A leaf origin belongs to a source actor (the Kafka consumer) and names
 * one thing it emitted by (key, value) (the consumer: partition id,
 * offset). A group origin stands for several others (a batch, a conflated
 * aggregate): settling it settles each of them the same way. When the last
 * reference of an origin goes, the origin is settled: confirmed if no
 * reference was released unconfirmed, not confirmed otherwise, and its
 * source hears of it in a RILL__MSG_SETTLED message.
 *
 * Settle notices made on an executor thread are collected per source and
 * sent as one message per source at the end of the actor turn that made
 * them (and right after a terminate hook, before the actor's watchers hear
 * of its end, so that a source told "everything downstream has ended"
 * already has every notice in its mailbox). Elsewhere they are sent at
 * once.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "actor_int.h"

enum { ORIGIN_LEAF = 1, ORIGIN_GROUP };

struct rill_origin {
    /* Reference count; acq_rel on the decrement, so the settling thread
     * sees everything every holder did before it let go. */
    _Atomic uint32_t refs;
    /* Non-zero once any reference was released unconfirmed: the origin
     * will not be confirmed. Release/acquire with the settling load. */
    _Atomic uint32_t released;
    uint32_t kind;
    /* leaf */
    rill_system_t *sys;
    rill_aid_t source;
    uint64_t key;
    int64_t value;
    /* leaf: why it was released, if someone said (rill__origin_mark); the
     * marker wins the verdict with a compare-and-swap, then writes the
     * rest before it lets its reference go. */
    _Atomic uint32_t verdict;
    uint32_t delay_ms;
    char *text;
    /* group: one reference of each */
    rill_origin_t **kids;
    uint32_t n, cap;
};

/* ------------------------------------------------------------------ */
/* Settle notices                                                      */
/* ------------------------------------------------------------------ */

typedef struct settle_to {
    rill_system_t *sys;
    rill_aid_t source;
    rill__settled_t *b;
    uint32_t cap;
} settle_to_t;

struct rill__settle_acc {
    settle_to_t *to;
    size_t n, cap;
};

static void send_settled(rill_system_t *sys, rill_aid_t source, rill__settled_t *b)
{
    rill_msg_t m = {.type = RILL__MSG_SETTLED, .payload = b, .dtor = rill__settled_free};
    /* The source sizes its mailbox for what it has out, so a refusal is
     * rare; the control queue takes it then (notices may come in any
     * order). A source that is gone has nothing left to settle. */
    rill_err_t err = rill_tell(sys, source, &m);
    if (err == RILL_EFULL)
        err = rill_signal(sys, source, &m);
    if (err)
        rill__settled_free(b);
}

void rill__settled_free(void *payload)
{
    rill__settled_t *b = payload;
    for (uint32_t i = 0; b && i < b->n; i++)
        free(b->v[i].text);
    free(b);
}

static rill__settled_t *settled_new(uint32_t cap)
{
    rill__settled_t *b = malloc(sizeof(*b) + cap * sizeof(b->v[0]));
    if (b)
        b->n = 0;
    return b;
}

/* Add a notice to acc; 0, or -1 without memory (then send it alone). */
static int acc_add(rill__settle_acc_t *acc, rill_system_t *sys, rill_aid_t source,
                   const rill__settle_note_t *note)
{
    settle_to_t *t = NULL;
    for (size_t i = 0; i < acc->n && !t; i++)
        if (rill_aid_eq(acc->to[i].source, source) && acc->to[i].sys == sys)
            t = &acc->to[i];
    if (!t) {
        settle_to_t *to = rill__grow(acc->to, &acc->cap, acc->n, sizeof(*to), 4);
        if (!to)
            return -1;
        acc->to = to;
        t = &acc->to[acc->n++];
        *t = (settle_to_t){.sys = sys, .source = source};
    }
    if (!t->b || t->b->n == t->cap) {
        uint32_t cap = t->cap ? 2 * t->cap : 64;
        rill__settled_t *b = realloc(t->b, sizeof(*b) + cap * sizeof(b->v[0]));
        if (!b)
            return -1;
        if (!t->b)
            b->n = 0;
        t->b = b;
        t->cap = cap;
    }
    t->b->v[t->b->n++] = *note;
    return 0;
}

void rill__settle_flush(rill__settle_acc_t *acc)
{
    if (!acc)
        return;
    for (size_t i = 0; i < acc->n; i++) {
        settle_to_t *t = &acc->to[i];
        if (t->b && t->b->n) {
            send_settled(t->sys, t->source, t->b);
            t->b = NULL;
            t->cap = 0;
        }
    }
    acc->n = 0;
}

void rill__settle_acc_free(rill__settle_acc_t *acc)
{
    if (!acc)
        return;
    rill__settle_flush(acc);
    free(acc->to);
    free(acc);
}

rill__settle_acc_t *rill__settle_acc_new(void)
{
    return calloc(1, sizeof(rill__settle_acc_t));
}

static void note(rill_origin_t *leaf, int ok)
{
    rill__settle_note_t n = {.key = leaf->key, .value = leaf->value, .ok = ok};
    if (!ok) { /* the notice takes the text */
        n.verdict = atomic_load_explicit(&leaf->verdict, memory_order_relaxed);
        n.delay_ms = leaf->delay_ms;
        n.text = leaf->text;
        leaf->text = NULL;
    }
    free(leaf->text);
    rill__executor_t *e = rill__tls_exec;
    if (e && e->settle && acc_add(e->settle, leaf->sys, leaf->source, &n) == 0)
        return;
    rill__settled_t *b = settled_new(1);
    if (!b) {
        free(n.text);
        return; /* out of memory: the source redelivers what it never hears of */
    }
    b->v[0] = n;
    b->n = 1;
    send_settled(leaf->sys, leaf->source, b);
}

/* ------------------------------------------------------------------ */
/* Origins                                                             */
/* ------------------------------------------------------------------ */

/* One reference, nothing released, no children. */
static void origin_init(rill_origin_t *o, uint32_t kind, rill_system_t *sys, rill_aid_t source,
                        uint64_t key, int64_t value)
{
    atomic_init(&o->refs, 1);
    atomic_init(&o->released, 0);
    o->kind = kind;
    o->sys = sys;
    o->source = source;
    o->key = key;
    o->value = value;
    o->kids = NULL;
    o->n = o->cap = 0;
    atomic_init(&o->verdict, 0);
    o->delay_ms = 0;
    o->text = NULL;
}

rill_origin_t *rill__origin_new(rill_system_t *sys, rill_aid_t source, uint64_t key, int64_t value)
{
    if (!sys || rill_aid_is_none(source))
        return NULL;
    /* Made on the source's executor, mostly settled on another's: from
     * the executor's pool of blocks (actors/blocks.c). */
    rill_origin_t *o = rill__block_alloc(sizeof(*o));
    if (o)
        origin_init(o, ORIGIN_LEAF, sys, source, key, value);
    return o;
}

rill_origin_t *rill_origin_ref(rill_origin_t *o)
{
    /* relaxed: a new reference is made from one the caller holds. */
    if (o)
        atomic_fetch_add_explicit(&o->refs, 1, memory_order_relaxed);
    return o;
}

#define STACK_LIST 16

/*
 * Drop one reference of each origin on a work list; an origin whose last
 * reference goes is settled (groups pass their outcome to their children,
 * which join the list). Iterative: aggregates can nest deeply.
 */
static void drop_all(rill_origin_t **list, size_t n, size_t cap)
{
    /* list starts as the caller's array of STACK_LIST entries; a bigger one
     * is malloc'ed when a group has many children. */
    /* Each entry carries its own outcome: the low bit of a pointer is free
     * (origins are malloc'ed or pooled blocks: 16-byte aligned). */
    while (n) {
        uintptr_t top = (uintptr_t)list[--n];
        rill_origin_t *o = (rill_origin_t *)(top & ~(uintptr_t)1);
        int ok = (int)(top & 1);
        if (!ok)
            atomic_store_explicit(&o->released, 1, memory_order_release);
        if (atomic_fetch_sub_explicit(&o->refs, 1, memory_order_acq_rel) != 1)
            continue;
        int settled_ok = !atomic_load_explicit(&o->released, memory_order_acquire);
        if (o->kind == ORIGIN_LEAF) {
            note(o, settled_ok);
            rill__block_free(o);
            continue;
        }
        for (uint32_t i = 0; i < o->n; i++) {
            if (n == cap) {
                size_t ncap = cap * 2;
                rill_origin_t **v = malloc(ncap * sizeof(*v));
                if (!v) {
                    /* Out of memory: this child is left unsettled; its
                     * source redelivers it after its timeout. */
                    continue;
                }
                memcpy(v, list, n * sizeof(*v));
                if (cap > STACK_LIST)
                    free(list);
                list = v;
                cap = ncap;
            }
            list[n++] = (rill_origin_t *)((uintptr_t)o->kids[i] | (uintptr_t)settled_ok);
        }
        free(o->kids);
        free(o);
    }
    if (cap > STACK_LIST)
        free(list);
}

static void drop(rill_origin_t *o, int confirm)
{
    if (!o)
        return;
    rill_origin_t *stack[STACK_LIST];
    stack[0] = (rill_origin_t *)((uintptr_t)o | (uintptr_t)(confirm != 0));
    drop_all(stack, 1, STACK_LIST);
}

void rill_origin_confirm(rill_origin_t *o)
{
    drop(o, 1);
}

void rill_origin_release(rill_origin_t *o)
{
    drop(o, 0);
}

rill_origin_t *rill__origin_join(rill_origin_t *acc, rill_origin_t *o)
{
    if (!o)
        return acc;
    if (!acc)
        return o;
    /* acquire: a group is grown in place only by its one holder. */
    if (acc->kind != ORIGIN_GROUP || atomic_load_explicit(&acc->refs, memory_order_acquire) != 1) {
        rill_origin_t *g = malloc(sizeof(*g));
        rill_origin_t **kids = malloc(4 * sizeof(*kids));
        if (!g || !kids) {
            free(g);
            free(kids);
            return NULL;
        }
        origin_init(g, ORIGIN_GROUP, NULL, RILL_AID_NONE, 0, 0);
        g->kids = kids;
        g->kids[0] = acc;
        g->n = 1;
        g->cap = 4;
        acc = g;
    }
    if (acc->n == acc->cap) {
        uint32_t cap = acc->cap * 2;
        rill_origin_t **v = realloc(acc->kids, cap * sizeof(*v));
        if (!v)
            return NULL;
        acc->kids = v;
        acc->cap = cap;
    }
    acc->kids[acc->n++] = o;
    return acc;
}

int rill__origin_walk(rill_origin_t *o, void (*fn)(void *ctx, rill_origin_t *leaf), void *ctx)
{
    if (!o)
        return -1;
    /* A work list: aggregates can nest deeply. Kids do not change while
     * the caller holds its reference (a group grows only in the hands of
     * its one holder). */
    rill_origin_t *stack[STACK_LIST], **list = stack;
    size_t n = 0, cap = STACK_LIST;
    int rc = 0;
    list[n++] = o;
    while (n) {
        rill_origin_t *x = list[--n];
        if (x->kind == ORIGIN_LEAF) {
            fn(ctx, x);
            continue;
        }
        for (uint32_t i = 0; i < x->n; i++) {
            if (n == cap) {
                rill_origin_t **v = malloc(cap * 2 * sizeof(*v));
                if (!v) {
                    rc = -1;
                    break;
                }
                memcpy(v, list, n * sizeof(*v));
                if (list != stack)
                    free(list);
                list = v;
                cap *= 2;
            }
            list[n++] = x->kids[i];
        }
    }
    if (list != stack)
        free(list);
    return rc;
}

typedef struct mark_ctx {
    uint32_t verdict, delay_ms;
    const char *text;
} mark_ctx_t;

static void mark_leaf(void *ctx, rill_origin_t *x)
{
    const mark_ctx_t *m = ctx;
    uint32_t none = 0;
    if (!atomic_compare_exchange_strong_explicit(&x->verdict, &none, m->verdict,
                                                 memory_order_relaxed, memory_order_relaxed))
        return; /* it has its verdict already */
    x->delay_ms = m->delay_ms;
    x->text = m->text ? strdup(m->text) : NULL;
}

int rill__origin_mark(rill_origin_t *o, uint32_t verdict, uint32_t delay_ms, const char *text)
{
    if (!o || !verdict)
        return -1;
    mark_ctx_t m = {.verdict = verdict, .delay_ms = delay_ms, .text = text};
    return rill__origin_walk(o, mark_leaf, &m);
}

int rill__origin_leaf(const rill_origin_t *o, rill_system_t **sys, rill_aid_t *source,
                      uint64_t *key, int64_t *value)
{
    if (!o || o->kind != ORIGIN_LEAF)
        return 0;
    *sys = o->sys;
    *source = o->source;
    *key = o->key;
    *value = o->value;
    return 1;
}

rill_origin_t *rill_msg_take_origin(rill_msg_t *msg)
{
    if (!msg)
        return NULL;
    rill_origin_t *o = msg->origin;
    msg->origin = NULL;
    return o;
}
