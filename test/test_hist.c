/*
 * Latency histograms (rill_hist_*, include/rill/common.h): the bounds, the
 * bucket of every boundary value (at most its bound, Prometheus's "le"),
 * the search against a plain linear scan, quantiles (interpolated in their
 * bucket, the +Inf bucket answering the last bound), merging, NULL.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include <rill/common.h>

#include "support/rtest.h"

static const double want_bounds[RILL_HIST_BUCKETS - 1] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25,   0.5,     1,      2.5,   5,      10,    30,   60,    300};

/* The bound in ns, rounded as the library's table is written. */
static uint64_t bound_ns(size_t i)
{
    return (uint64_t)llround(rill_hist_bounds()[i] * 1e9);
}

/* The bucket a linear scan picks: the first bound ns is at most. */
static size_t scan_bucket(uint64_t ns)
{
    for (size_t i = 0; i < RILL_HIST_BUCKETS - 1; i++)
        if (ns <= bound_ns(i))
            return i;
    return RILL_HIST_BUCKETS - 1;
}

/* The bucket rill_hist_record put one observation of ns in. */
static size_t recorded_bucket(uint64_t ns)
{
    rill_hist_t h;
    memset(&h, 0, sizeof(h));
    rill_hist_record(&h, ns);
    cr_assert_eq(h.count, 1);
    cr_assert_eq(h.sum_ns, ns);
    size_t found = RILL_HIST_BUCKETS;
    for (size_t i = 0; i < RILL_HIST_BUCKETS; i++) {
        if (h.buckets[i]) {
            cr_assert_eq(h.buckets[i], 1);
            cr_assert_eq(found, RILL_HIST_BUCKETS, "one bucket only");
            found = i;
        }
    }
    cr_assert_lt(found, RILL_HIST_BUCKETS);
    return found;
}

Test(hist, bounds)
{
    const double *b = rill_hist_bounds();
    cr_assert(b != NULL);
    for (size_t i = 0; i < RILL_HIST_BUCKETS - 1; i++) {
        cr_assert(fabs(b[i] - want_bounds[i]) < 1e-12, "bound %zu", i);
        if (i)
            cr_assert_lt(b[i - 1], b[i]);
    }
}

Test(hist, boundaries_pick_the_bucket_whose_bound_they_are_at_most)
{
    cr_assert_eq(recorded_bucket(0), 0);
    cr_assert_eq(recorded_bucket(1), 0);
    for (size_t i = 0; i < RILL_HIST_BUCKETS - 1; i++) {
        uint64_t ns = bound_ns(i);
        cr_assert_eq(recorded_bucket(ns), i, "at bound %zu", i);
        cr_assert_eq(recorded_bucket(ns + 1), i + 1, "just past bound %zu", i);
        cr_assert_eq(recorded_bucket(ns - 1), i, "just below bound %zu", i);
    }
    cr_assert_eq(recorded_bucket(UINT64_MAX / 2), RILL_HIST_BUCKETS - 1);
    cr_assert_eq(recorded_bucket(UINT64_MAX), RILL_HIST_BUCKETS - 1);
}

Test(hist, search_agrees_with_a_linear_scan)
{
    uint64_t s = 42;
    for (int i = 0; i < 200000; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        /* Spread over every bucket: a random magnitude, then a value. */
        uint64_t ns = (s >> 11) >> (s % 53);
        cr_assert_eq(recorded_bucket(ns), scan_bucket(ns), "ns %llu", (unsigned long long)ns);
    }
}

Test(hist, quantiles)
{
    rill_hist_t h;
    memset(&h, 0, sizeof(h));
    cr_assert_eq(rill_hist_quantile(&h, 0.5), 0.0, "empty");
    cr_assert_eq(rill_hist_quantile(NULL, 0.5), 0.0, "NULL");
    /* 100 observations in (1 ms, 2.5 ms]: the median halfway through the
     * bucket, p99 near its top. */
    for (int i = 0; i < 100; i++)
        rill_hist_record(&h, 2000000);
    double p50 = rill_hist_quantile(&h, 0.5), p99 = rill_hist_quantile(&h, 0.99);
    cr_assert(fabs(p50 - (0.001 + 0.0015 * 0.5)) < 1e-9, "p50 %g", p50);
    cr_assert(fabs(p99 - (0.001 + 0.0015 * 0.99)) < 1e-9, "p99 %g", p99);
    cr_assert(fabs(rill_hist_quantile(&h, 1) - 0.0025) < 1e-12);
    /* Out of range q is clamped. */
    cr_assert_eq(rill_hist_quantile(&h, 2), rill_hist_quantile(&h, 1));
    cr_assert_eq(rill_hist_quantile(&h, -1), rill_hist_quantile(&h, 0));
    /* 100 more in the first bucket: the median is the first bucket's top,
     * the lower quartile inside it. */
    for (int i = 0; i < 100; i++)
        rill_hist_record(&h, 50000);
    cr_assert(fabs(rill_hist_quantile(&h, 0.5) - 0.0001) < 1e-12, "p50 %g",
              rill_hist_quantile(&h, 0.5));
    cr_assert(fabs(rill_hist_quantile(&h, 0.25) - 0.00005) < 1e-12);
    /* Everything in +Inf: the last finite bound. */
    rill_hist_t inf;
    memset(&inf, 0, sizeof(inf));
    rill_hist_record(&inf, 1000ull * 1000000000ull);
    cr_assert_eq(rill_hist_quantile(&inf, 0.5), 300.0);
    cr_assert_eq(inf.buckets[RILL_HIST_BUCKETS - 1], 1);
}

Test(hist, quantiles_are_monotonic)
{
    rill_hist_t h;
    memset(&h, 0, sizeof(h));
    uint64_t s = 7;
    for (int i = 0; i < 10000; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        rill_hist_record(&h, (s >> 20) % 20000000000ull);
    }
    double last = 0;
    for (int i = 0; i <= 100; i++) {
        double v = rill_hist_quantile(&h, i / 100.0);
        cr_assert(v >= last, "q %d: %g < %g", i, v, last);
        last = v;
    }
}

Test(hist, add_merges_and_null_is_a_no_op)
{
    rill_hist_t a, b;
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    rill_hist_record(&a, 1000);
    rill_hist_record(&a, 3000000);
    rill_hist_record(&b, 3000000);
    rill_hist_record(&b, 400ull * 1000000000ull);
    rill_hist_add(&a, &b);
    cr_assert_eq(a.count, 4);
    cr_assert_eq(a.sum_ns, 1000 + 3000000 * 2 + 400ull * 1000000000ull);
    cr_assert_eq(a.buckets[0], 1);
    cr_assert_eq(a.buckets[5], 2); /* (2.5 ms, 5 ms] */
    cr_assert_eq(a.buckets[RILL_HIST_BUCKETS - 1], 1);
    uint64_t total = 0;
    for (size_t i = 0; i < RILL_HIST_BUCKETS; i++)
        total += a.buckets[i];
    cr_assert_eq(total, a.count);
    rill_hist_add(&a, NULL);
    rill_hist_add(NULL, &b);
    rill_hist_record(NULL, 5);
    cr_assert_eq(a.count, 4);
}
