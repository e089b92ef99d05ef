/*
 * Latency histograms (include/rill/common.h): fixed buckets, Prometheus's
 * shape, so that the observe layer renders them as they are and snapshots
 * of several writers add up.
 *
 * rill_hist_record is on hot paths (a commit, a confirm, a delivery): the
 * bucket is found by a branch-free binary search over the bounds in
 * nanoseconds, padded to 32 entries so that no step needs a range check
 * (the comparisons become conditional moves).
 */
#include <stddef.h>
#include <stdint.h>

#include <rill/common.h>

/* The finite bounds in ns, then UINT64_MAX padding up to 32 entries: the
 * search's steps of 16, 8, 4, 2, 1 never read past it. */
static const uint64_t bounds_ns[32] = {
    100000ull,       250000ull,     500000ull,     1000000ull,     2500000ull,     5000000ull,
    10000000ull,     25000000ull,   50000000ull,   100000000ull,   250000000ull,   500000000ull,
    1000000000ull,   2500000000ull, 5000000000ull, 10000000000ull, 30000000000ull, 60000000000ull,
    300000000000ull, UINT64_MAX,    UINT64_MAX,    UINT64_MAX,     UINT64_MAX,     UINT64_MAX,
    UINT64_MAX,      UINT64_MAX,    UINT64_MAX,    UINT64_MAX,     UINT64_MAX,     UINT64_MAX,
    UINT64_MAX,      UINT64_MAX};

static const double bounds_s[RILL_HIST_BUCKETS - 1] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25,   0.5,     1,      2.5,   5,      10,    30,   60,    300};

_Static_assert(RILL_HIST_BUCKETS - 1 <= 31, "the search covers at most 31 finite bounds");

const double *rill_hist_bounds(void)
{
    return bounds_s;
}

/* The bucket of ns: how many finite bounds are below it (bucket i holds
 * what is at most bound i; RILL_HIST_BUCKETS - 1 is +Inf). */
size_t rill__hist_bucket(uint64_t ns);

static inline size_t bucket_of(uint64_t ns)
{
    size_t i = 0;
    i += ns > bounds_ns[i + 15] ? 16 : 0;
    i += ns > bounds_ns[i + 7] ? 8 : 0;
    i += ns > bounds_ns[i + 3] ? 4 : 0;
    i += ns > bounds_ns[i + 1] ? 2 : 0;
    i += ns > bounds_ns[i] ? 1 : 0;
    return i;
}

void rill_hist_record(rill_hist_t *h, uint64_t ns)
{
    if (!h)
        return;
    h->count++;
    h->sum_ns += ns;
    h->buckets[bucket_of(ns)]++;
}

double rill_hist_quantile(const rill_hist_t *h, double q)
{
    if (!h || !h->count)
        return 0;
    if (q < 0)
        q = 0;
    if (q > 1)
        q = 1;
    /* Prometheus's histogram_quantile: the bucket where the cumulative
     * count reaches the rank (empty buckets skipped), then linearly inside
     * it. */
    double rank = q * (double)h->count;
    uint64_t below = 0;
    for (size_t i = 0; i < RILL_HIST_BUCKETS; i++) {
        uint64_t n = h->buckets[i];
        if (!n || (double)(below + n) < rank) {
            below += n;
            continue;
        }
        if (i == RILL_HIST_BUCKETS - 1)
            return bounds_s[RILL_HIST_BUCKETS - 2];
        double lo = i ? bounds_s[i - 1] : 0, hi = bounds_s[i];
        return lo + (hi - lo) * ((rank - (double)below) / (double)n);
    }
    return bounds_s[RILL_HIST_BUCKETS - 2]; /* buckets short of count: a torn snapshot */
}

void rill_hist_add(rill_hist_t *a, const rill_hist_t *b)
{
    if (!a || !b)
        return;
    a->count += b->count;
    a->sum_ns += b->sum_ns;
    for (size_t i = 0; i < RILL_HIST_BUCKETS; i++)
        a->buckets[i] += b->buckets[i];
}

size_t rill__hist_bucket(uint64_t ns)
{
    return bucket_of(ns);
}
