/*
 * Stage connections a new user gets wrong (stream.h, rill_stage_connect):
 * each is refused at the call with RILL_EINVAL and a sentence, and the
 * stages already running go on unharmed: a stage connected to itself, a
 * sink as the upstream, a source as the downstream, a second subscriber
 * to a stage with one output, a second input to a stage with one input.
 * What is allowed still works: broadcast's outputs, merge's inputs.
 *
 * The running stages are an endless range source into a counting sink;
 * "unharmed" means both are alive after the refusals and the sink keeps
 * receiving (waited on with deadlines, never slept on).
 */
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "support/rtest.h"

#include "support/actor_kit.h"

#include <rill/stream.h>

#define WAIT_MS 20000

static rill_err_t count_elem(void *opaque, rill_elem_t *e)
{
    (void)e;
    atomic_fetch_add((atomic_long *)opaque, 1);
    return RILL_OK;
}

static rill_aid_t spawn_ok(rill_system_t *sys, rill_stage_t *spec)
{
    rill_aid_t aid = RILL_AID_NONE;
    char err[256] = "";
    rill_err_t e = rill_stage_spawn(sys, spec, NULL, &aid, err, sizeof(err));
    cr_assert_eq(e, RILL_OK, "spawn: %s (%s)", rill_err_name(e), err);
    return aid;
}

/* Stop the stages and wait until they are gone. */
static void stop_all(rill_system_t *sys, const rill_aid_t *aids, int n)
{
    for (int i = 0; i < n; i++)
        rill_stop(sys, aids[i]);
    for (int i = 0; i < n; i++)
        cr_assert(kit_wait_dead(sys, aids[i], WAIT_MS), "stage %d did not stop", i);
}

/* The sink's count grows by at least `more` within the deadline. */
static void assert_flowing(atomic_long *n, long more, const char *when)
{
    long from = atomic_load(n);
    cr_assert(kit_wait_at_least(n, from + more, WAIT_MS),
              "%s: the running stages stopped (%ld elements, then no more)", when, from);
}

/* A connection that must be refused, with a sentence containing `want`. */
static void assert_refused(rill_system_t *sys, rill_aid_t up, rill_aid_t down, const char *want,
                           const char *what)
{
    char err[256] = "";
    rill_err_t e = rill_stage_connect(sys, up, down, err, sizeof(err));
    cr_assert_eq(e, RILL_EINVAL, "%s: %s (%s)", what, rill_err_name(e), err);
    cr_assert_not_null(strstr(err, want), "%s: errstr \"%s\" does not say \"%s\"", what, err, want);
    /* The plain call refuses it too. */
    cr_assert_eq(rill_stage_connect(sys, up, down, NULL, 0), RILL_EINVAL, "%s (rill_stage_connect)",
                 what);
}

Test(stream_misuse, wrong_connections_are_refused_and_harm_no_stage, .timeout = 60)
{
    rill_system_t *sys = kit_system(2, 0, 0, 1);
    cr_assert_not_null(sys);
    atomic_long n = 0;
    rill_aid_t src = spawn_ok(sys, rill_source_range(0, UINT64_MAX));
    rill_aid_t sink = spawn_ok(sys, rill_sink_foreach(count_elem, &n));
    cr_assert_eq(rill_stage_connect(sys, src, sink, NULL, 0), RILL_OK);
    assert_flowing(&n, 100, "before");

    /* Idle stages to misconnect. */
    atomic_long n2 = 0;
    rill_aid_t other_src = spawn_ok(sys, rill_source_range(0, 10));
    rill_aid_t other_sink = spawn_ok(sys, rill_sink_foreach(count_elem, &n2));

    assert_refused(sys, src, src, "itself", "a source connected to itself");
    assert_refused(sys, sink, sink, "itself", "a sink connected to itself");
    assert_refused(sys, sink, other_sink, "sink", "a sink as the upstream");
    assert_refused(sys, other_src, src, "source", "a source as the downstream");
    assert_refused(sys, src, other_sink, "subscriber", "a second subscriber to a source");
    assert_refused(sys, other_src, sink, "input", "a second input to a sink");

    /* Bad arguments. */
    char err[256] = "";
    cr_assert_eq(rill_stage_connect(NULL, src, sink, err, sizeof(err)), RILL_EINVAL);
    cr_assert_gt(strlen(err), 0);
    cr_assert_eq(rill_stage_connect(sys, RILL_AID_NONE, sink, NULL, 0), RILL_EINVAL);
    cr_assert_eq(rill_stage_connect(sys, src, RILL_AID_NONE, NULL, 0), RILL_EINVAL);

    /* Nothing was harmed: both alive, still flowing; the idle pair still
     * connects and runs to its end. */
    cr_assert(rill_alive(sys, src) && rill_alive(sys, sink), "a refused connection hurt a stage");
    assert_flowing(&n, 100, "after the refusals");
    cr_assert_eq(rill_stage_connect(sys, other_src, other_sink, NULL, 0), RILL_OK);
    cr_assert(kit_wait_at_least(&n2, 10, WAIT_MS), "the idle pair did not run: %ld",
              atomic_load(&n2));
    cr_assert(kit_wait_dead(sys, other_sink, WAIT_MS), "the idle pair did not end");

    stop_all(sys, (rill_aid_t[]){src, sink}, 2);
    rill_system_destroy(sys);
}

static rill_err_t identity(void *opaque, rill_elem_t *in, rill_elem_t *out)
{
    (void)opaque;
    *out = *in;
    *in = (rill_elem_t){0};
    return RILL_OK;
}

/* A stage in the middle: one input, one output; broadcast and merge take
 * several, up to their counts. */
Test(stream_misuse, middle_stages_take_their_inputs_and_outputs_only, .timeout = 60)
{
    rill_system_t *sys = kit_system(2, 0, 0, 1);
    cr_assert_not_null(sys);
    atomic_long n = 0, nb1 = 0, nb2 = 0;
    rill_aid_t src = spawn_ok(sys, rill_source_range(0, UINT64_MAX));
    rill_aid_t map = spawn_ok(sys, rill_stage_map(identity, NULL));
    rill_aid_t sink = spawn_ok(sys, rill_sink_foreach(count_elem, &n));
    cr_assert_eq(rill_stage_connect(sys, src, map, NULL, 0), RILL_OK);
    cr_assert_eq(rill_stage_connect(sys, map, sink, NULL, 0), RILL_OK);
    assert_flowing(&n, 100, "before");

    rill_aid_t idle_src = spawn_ok(sys, rill_source_range(0, 10));
    rill_aid_t idle_sink = spawn_ok(sys, rill_sink_ignore());
    assert_refused(sys, map, map, "itself", "a map connected to itself");
    assert_refused(sys, idle_src, map, "input", "a second input to a map");
    assert_refused(sys, map, idle_sink, "subscriber", "a second subscriber to a map");
    cr_assert(rill_alive(sys, src) && rill_alive(sys, map) && rill_alive(sys, sink),
              "a refused connection hurt a stage");
    assert_flowing(&n, 100, "after the refusals");
    stop_all(sys, (rill_aid_t[]){src, sink}, 2);
    rill_stop(sys, idle_src);
    rill_stop(sys, idle_sink);

    /* Broadcast: two outputs are fine; merge: two inputs are fine. */
    rill_aid_t s1 = spawn_ok(sys, rill_source_range(0, 50));
    rill_aid_t s2 = spawn_ok(sys, rill_source_range(0, 50));
    rill_aid_t merge = spawn_ok(sys, rill_stage_merge(2));
    rill_aid_t bc = spawn_ok(sys, rill_stage_broadcast(2, NULL, NULL));
    rill_aid_t k1 = spawn_ok(sys, rill_sink_foreach(count_elem, &nb1));
    rill_aid_t k2 = spawn_ok(sys, rill_sink_foreach(count_elem, &nb2));
    cr_assert_eq(rill_stage_connect(sys, s1, merge, NULL, 0), RILL_OK);
    cr_assert_eq(rill_stage_connect(sys, s2, merge, NULL, 0), RILL_OK);
    cr_assert_eq(rill_stage_connect(sys, merge, bc, NULL, 0), RILL_OK);
    cr_assert_eq(rill_stage_connect(sys, bc, k1, NULL, 0), RILL_OK);
    cr_assert_eq(rill_stage_connect(sys, bc, k2, NULL, 0), RILL_OK);
    assert_refused(sys, merge, merge, "itself", "a merge connected to itself");
    cr_assert(kit_wait_at_least(&nb1, 100, WAIT_MS) && kit_wait_at_least(&nb2, 100, WAIT_MS),
              "broadcast outputs got %ld and %ld of 100", atomic_load(&nb1), atomic_load(&nb2));
    cr_assert(kit_wait_dead(sys, k1, WAIT_MS) && kit_wait_dead(sys, k2, WAIT_MS),
              "the merge-broadcast graph did not end");
    rill_system_destroy(sys);
}
