/*
 * The virtual clock (include/rill/testkit.h, "Virtual clock"): a time in
 * ms that moves only when the test moves it, for stages that read the time
 * through a now_ms(void *opaque) function.
 */
#include <stdatomic.h>
#include <stdlib.h>

#include <rill/testkit.h>

struct rill_testkit_clock {
    /* Read by stages on executor threads while the test moves it. Relaxed
     * is enough: the time is one value with no data published with it;
     * a test that needs a stage to see a new time also tells the stage
     * something (a record, a tick) after moving it, and that message
     * orders the two. */
    _Atomic int64_t now_ms;
};

rill_testkit_clock_t *rill_testkit_clock_new(int64_t start_ms)
{
    rill_testkit_clock_t *c = malloc(sizeof(*c));
    if (c)
        atomic_init(&c->now_ms, start_ms);
    return c;
}

void rill_testkit_clock_destroy(rill_testkit_clock_t *c)
{
    free(c);
}

int64_t rill_testkit_clock_now(void *clock)
{
    rill_testkit_clock_t *c = clock;
    return c ? atomic_load_explicit(&c->now_ms, memory_order_relaxed) : 0;
}

void rill_testkit_clock_advance(rill_testkit_clock_t *c, int64_t ms)
{
    if (c && ms > 0)
        atomic_fetch_add_explicit(&c->now_ms, ms, memory_order_relaxed);
}

void rill_testkit_clock_set(rill_testkit_clock_t *c, int64_t ms)
{
    if (!c)
        return;
    int64_t cur = atomic_load_explicit(&c->now_ms, memory_order_relaxed);
    /* Never back: a lost race with another set or an advance retries. */
    while (ms > cur && !atomic_compare_exchange_weak_explicit(
                           &c->now_ms, &cur, ms, memory_order_relaxed, memory_order_relaxed))
        ;
}
