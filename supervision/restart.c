/*
 * The arithmetic of restarts: the intensity ring (how many restarts in
 * how long) and the backoff delay (Akka's RestartSettings: min doubling
 * up to max, stretched by a random factor).
 */
#include "sup_int.h"

static double rand01(rill__sup_t *s)
{
    /* xorshift64*: jitter only, no need for more */
    s->rng ^= s->rng >> 12;
    s->rng ^= s->rng << 25;
    s->rng ^= s->rng >> 27;
    return (double)((s->rng * 2685821657736338717ull) >> 11) / 9007199254740992.0;
}

uint32_t rill__sup_backoff_delay(rill__sup_t *s, rill__sup_child_t *c)
{
    const rill_sup_spec_t *sp = s->spec;
    if (!sp->backoff.min_ms && !sp->backoff.max_ms)
        return 0;
    double d = sp->backoff.min_ms;
    for (uint32_t i = 0; i < c->consecutive && d < sp->backoff.max_ms; i++)
        d *= 2;
    if (d > sp->backoff.max_ms)
        d = sp->backoff.max_ms;
    d *= 1.0 + rand01(s) * sp->backoff.random;
    return (uint32_t)d;
}

/* Record a restart; returns 0 when the intensity is exceeded. */
int rill__sup_intensity_ok(rill__sup_t *s)
{
    const rill_sup_spec_t *sp = s->spec;
    int64_t now = rill__now_ms();
    uint32_t intensity = rill__sup_intensity(sp);
    uint32_t slots = intensity + 1;
    s->restarts_at[s->restarts_seen % slots] = now;
    s->restarts_seen++;
    if (s->restarts_seen <= intensity)
        return 1;
    /* The oldest of the last intensity+1 restarts: within the period? */
    int64_t oldest = s->restarts_at[s->restarts_seen % slots];
    return now - oldest > (int64_t)rill__sup_period_ms(sp);
}
