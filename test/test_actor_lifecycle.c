/*
 * Actor and system lifecycles: init before the first message, terminate
 * exactly once with the right reason, payloads released exactly once
 * whatever happens (handled, dead letter, stop while others are sending),
 * systems that stop, restart nothing and leak nothing, names and ids.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "support/rtest.h"

#include "support/actor_kit.h"

enum { MSG_WORK = KIT_MSG_APP, MSG_STOP_SELF, MSG_GO };

/* An actor that records its lifecycle. Fields read by the test thread are
 * atomics; `reason` is written before terminate_calls is incremented
 * (release) and read after seeing it (acquire). */
typedef struct life {
    atomic_int init_calls;
    atomic_int terminate_calls;
    atomic_long handled;
    atomic_long handled_before_init;
    atomic_int inited;
    rill_err_t init_result; /* what init returns */
    int init_stops_self;    /* init calls rill_stop_self */
    kit_gate_t *gate;       /* if set, the first message waits on it */
    rill_exit_t reason;
} life_t;

static rill_err_t life_init(rill_ctx_t *ctx, void *state)
{
    life_t *l = state;
    atomic_fetch_add(&l->init_calls, 1);
    atomic_store(&l->inited, 1);
    if (l->init_stops_self)
        rill_stop_self(ctx);
    return l->init_result;
}

static rill_err_t life_behavior(rill_ctx_t *ctx, void *state, rill_msg_t *msg)
{
    life_t *l = state;
    if (!atomic_load(&l->inited))
        atomic_fetch_add(&l->handled_before_init, 1);
    if (l->gate && atomic_load(&l->handled) == 0)
        kit_gate_pass(l->gate, KIT_WAIT_MS);
    if (msg->type == MSG_STOP_SELF)
        rill_stop_self(ctx);
    atomic_fetch_add_explicit(&l->handled, 1, memory_order_release);
    return RILL_OK;
}

static void life_terminate(rill_ctx_t *ctx, void *state, const rill_exit_t *reason)
{
    life_t *l = state;
    l->reason = *reason;
    atomic_fetch_add_explicit(&l->terminate_calls, 1, memory_order_release);
}

static rill_aid_t spawn_life(rill_system_t *sys, life_t *l, const char *name, int executor)
{
    rill_spawn_opts_t o;
    memset(&o, 0, sizeof(o));
    o.behavior = life_behavior;
    o.init = life_init;
    o.terminate = life_terminate;
    o.state = l;
    o.name = name;
    o.executor = KIT_EXEC(executor);
    rill_aid_t aid = RILL_AID_NONE;
    rill_err_t e = rill_spawn(sys, &o, &aid);
    cr_assert_eq(e, RILL_OK, "spawn: %s", rill_err_name(e));
    cr_assert(!rill_aid_is_none(aid));
    return aid;
}

static int terminated(life_t *l)
{
    return atomic_load_explicit(&l->terminate_calls, memory_order_acquire) > 0;
}

static int terminated_cond(void *arg)
{
    return terminated(arg);
}

static void wait_terminated(life_t *l)
{
    cr_assert(kit_wait_until(terminated_cond, l, KIT_WAIT_MS), "terminate never ran");
}

static uint64_t dead_letters(rill_system_t *sys)
{
    rill_system_stats_t s;
    memset(&s, 0, sizeof(s));
    rill_system_stats(sys, &s);
    return s.dead_letters;
}

Test(actor_lifecycle, init_runs_before_the_first_message, .timeout = 60)
{
    rill_system_t *sys = kit_system(1, 0, 0, 0);
    cr_assert_not_null(sys);
    life_t l;
    memset(&l, 0, sizeof(l));
    rill_aid_t aid = spawn_life(sys, &l, NULL, 0);
    /* Queued before any executor runs: init must still come first. */
    for (int i = 0; i < 3; i++) {
        rill_msg_t m = kit_msg(MSG_WORK, (uint64_t)i, NULL);
        cr_assert_eq(rill_tell(sys, aid, &m), RILL_OK);
    }
    cr_assert(rill_alive(sys, aid), "alive once spawned, even before start");
    cr_assert_eq(rill_system_start(sys), RILL_OK);
    cr_assert(kit_wait_at_least(&l.handled, 3, KIT_WAIT_MS));
    cr_assert_eq(atomic_load(&l.init_calls), 1);
    cr_assert_eq(atomic_load(&l.handled_before_init), 0);
    cr_assert_eq(atomic_load(&l.terminate_calls), 0);
    rill_system_destroy(sys);
    cr_assert_eq(atomic_load(&l.init_calls), 1);
    cr_assert_eq(atomic_load(&l.terminate_calls), 1);
    cr_assert_eq(l.reason.kind, RILL_EXIT_SHUTDOWN, "system stop: %s",
                 rill_exit_kind_name(l.reason.kind));
}

Test(actor_lifecycle, terminate_runs_once_with_normal_after_stop_self, .timeout = 60)
{
    rill_system_t *sys = kit_system(1, 0, 0, 1);
    cr_assert_not_null(sys);
    life_t l;
    memset(&l, 0, sizeof(l));
    rill_aid_t aid = spawn_life(sys, &l, NULL, 0);
    rill_msg_t m = kit_msg(MSG_STOP_SELF, 0, NULL);
    cr_assert_eq(rill_tell(sys, aid, &m), RILL_OK);
    wait_terminated(&l);
    cr_assert_eq(l.reason.kind, RILL_EXIT_NORMAL, "%s", rill_exit_kind_name(l.reason.kind));
    cr_assert_eq(l.reason.code, RILL_OK);
    cr_assert(kit_wait_dead(sys, aid, KIT_WAIT_MS));

    kit_tally_t tally;
    memset(&tally, 0, sizeof(tally));
    rill_msg_t late = kit_msg(MSG_WORK, 1, &tally);
    cr_assert_eq(rill_tell(sys, aid, &late), RILL_ESTOPPED);
    cr_assert_eq(rill_signal(sys, aid, &late), RILL_ESTOPPED);
    cr_assert_eq(rill_stop(sys, aid), RILL_ESTOPPED);
    cr_assert_eq(rill_kill(sys, aid, "late"), RILL_ESTOPPED);
    rill_actor_stats_t st;
    cr_assert_eq(rill_actor_stats(sys, aid, &st), RILL_ESTOPPED);
    kit_payload_reclaim(late.payload);

    rill_system_destroy(sys);
    cr_assert_eq(atomic_load(&l.terminate_calls), 1, "not again at system stop");
    cr_assert_eq(atomic_load(&tally.released), 0);
}

Test(actor_lifecycle, init_error_fails_the_actor_and_still_terminates, .timeout = 60)
{
    rill_system_t *sys = kit_system(1, 0, 0, 0);
    cr_assert_not_null(sys);
    life_t l;
    memset(&l, 0, sizeof(l));
    l.init_result = RILL_EIO;
    rill_aid_t aid = spawn_life(sys, &l, NULL, 0);
    kit_tally_t tally;
    memset(&tally, 0, sizeof(tally));
    for (int i = 0; i < 2; i++) {
        rill_msg_t m = kit_msg(MSG_WORK, (uint64_t)i, &tally);
        cr_assert_eq(rill_tell(sys, aid, &m), RILL_OK);
    }
    cr_assert_eq(rill_system_start(sys), RILL_OK);
    wait_terminated(&l);
    cr_assert_eq(l.reason.kind, RILL_EXIT_FAILURE, "%s", rill_exit_kind_name(l.reason.kind));
    cr_assert_eq(l.reason.code, RILL_EIO, "%s", rill_err_name(l.reason.code));
    cr_assert(kit_wait_dead(sys, aid, KIT_WAIT_MS));
    cr_assert(kit_wait_at_least(&tally.released, 2, KIT_WAIT_MS));
    cr_assert(kit_wait_dead_letters(sys, 2, KIT_WAIT_MS));
    cr_assert_eq(atomic_load(&l.handled), 0, "no message after a failed init");
    rill_system_destroy(sys);
    cr_assert_eq(atomic_load(&l.terminate_calls), 1);
    cr_assert_eq(atomic_load(&tally.released), 2);
}

Test(actor_lifecycle, init_calling_stop_self_ends_normally, .timeout = 60)
{
    rill_system_t *sys = kit_system(1, 0, 0, 0);
    cr_assert_not_null(sys);
    life_t l;
    memset(&l, 0, sizeof(l));
    l.init_stops_self = 1;
    rill_aid_t aid = spawn_life(sys, &l, NULL, 0);
    kit_tally_t tally;
    memset(&tally, 0, sizeof(tally));
    rill_msg_t m = kit_msg(MSG_WORK, 0, &tally);
    cr_assert_eq(rill_tell(sys, aid, &m), RILL_OK);
    cr_assert_eq(rill_system_start(sys), RILL_OK);
    wait_terminated(&l);
    cr_assert_eq(l.reason.kind, RILL_EXIT_NORMAL, "%s", rill_exit_kind_name(l.reason.kind));
    cr_assert(kit_wait_at_least(&tally.released, 1, KIT_WAIT_MS));
    cr_assert_eq(atomic_load(&l.handled), 0);
    rill_system_destroy(sys);
    cr_assert_eq(atomic_load(&tally.released), 1);
}

Test(actor_lifecycle, stop_with_pending_messages_releases_every_payload, .timeout = 60)
{
    rill_system_t *sys = kit_system(1, 0, 0, 1);
    cr_assert_not_null(sys);
    kit_gate_t gate;
    kit_gate_init(&gate);
    life_t l;
    memset(&l, 0, sizeof(l));
    l.gate = &gate;
    rill_aid_t aid = spawn_life(sys, &l, NULL, 0);
    kit_tally_t tally;
    memset(&tally, 0, sizeof(tally));

    rill_msg_t first = kit_msg(MSG_WORK, 0, &tally);
    cr_assert_eq(rill_tell(sys, aid, &first), RILL_OK);
    cr_assert(kit_wait_at_least(&gate.arrived, 1, KIT_WAIT_MS), "first message never handled");
    /* The handler is now blocked on the gate: these stay queued. */
    const int pending = 50;
    for (int i = 1; i <= pending; i++) {
        rill_msg_t m = kit_msg(MSG_WORK, (uint64_t)i, &tally);
        cr_assert_eq(rill_tell(sys, aid, &m), RILL_OK, "message %d", i);
    }
    uint64_t dead_before = dead_letters(sys);
    cr_assert_eq(rill_stop(sys, aid), RILL_OK);
    kit_gate_open(&gate);

    wait_terminated(&l);
    cr_assert(kit_wait_dead(sys, aid, KIT_WAIT_MS));
    cr_assert(kit_wait_at_least(&tally.released, pending + 1, KIT_WAIT_MS), "released %ld of %d",
              atomic_load(&tally.released), pending + 1);
    cr_assert_eq(atomic_load(&l.handled), 1,
                 "only the message being handled completes; %ld were handled",
                 atomic_load(&l.handled));
    cr_assert(kit_wait_dead_letters(sys, dead_before + pending, KIT_WAIT_MS),
              "dead letters %llu, want %llu", (unsigned long long)dead_letters(sys),
              (unsigned long long)(dead_before + pending));
    cr_assert_eq(dead_letters(sys), dead_before + pending);
    cr_assert_eq(l.reason.kind, RILL_EXIT_SHUTDOWN, "%s", rill_exit_kind_name(l.reason.kind));

    rill_system_destroy(sys);
    kit_gate_destroy(&gate);
    cr_assert_eq(atomic_load(&tally.released), pending + 1);
    cr_assert_eq(atomic_load(&l.terminate_calls), 1);
}

/* ---- stop while others send ----------------------------------------- */

struct sender {
    pthread_t thread;
    rill_system_t *sys;
    rill_aid_t to;
    kit_tally_t *tally;
    long accepted;
    long accepted_after_stopped; /* RILL_OK after an RILL_ESTOPPED: a bug */
    long other_errors;
    int saw_stopped;
};

static void *send_until_stopped(void *arg)
{
    struct sender *s = arg;
    int64_t deadline = kit_now_ms() + 2 * KIT_WAIT_MS;
    uint64_t i = 0;
    while (!s->saw_stopped && kit_now_ms() < deadline) {
        rill_msg_t m = kit_msg(MSG_WORK, i++, s->tally);
        rill_err_t e = rill_tell(s->sys, s->to, &m);
        if (e == RILL_OK) {
            s->accepted++;
            continue;
        }
        kit_payload_reclaim(m.payload);
        if (e == RILL_ESTOPPED)
            s->saw_stopped = 1;
        else if (e == RILL_EFULL)
            sched_yield();
        else
            s->other_errors++;
    }
    /* Once refused as stopped, the actor never accepts again. */
    for (int k = 0; k < 100 && s->saw_stopped; k++) {
        rill_msg_t m = kit_msg(MSG_WORK, i++, s->tally);
        if (rill_tell(s->sys, s->to, &m) == RILL_OK)
            s->accepted_after_stopped++;
        else
            kit_payload_reclaim(m.payload);
    }
    return NULL;
}

/* An actor on another executor flooding the target with rill_send. */
typedef struct flood {
    rill_aid_t target;
    kit_tally_t *tally;
    atomic_long accepted;
    atomic_int saw_stopped;
} flood_t;

static rill_err_t flood_behavior(rill_ctx_t *ctx, void *state, rill_msg_t *msg)
{
    flood_t *f = state;
    for (int i = 0; i < 16 && !atomic_load(&f->saw_stopped); i++) {
        rill_msg_t m = kit_msg(MSG_WORK, (uint64_t)i, f->tally);
        rill_err_t e = rill_send(ctx, f->target, &m);
        if (e == RILL_OK) {
            atomic_fetch_add(&f->accepted, 1);
            continue;
        }
        kit_payload_reclaim(m.payload);
        if (e == RILL_ESTOPPED)
            atomic_store(&f->saw_stopped, 1);
    }
    if (atomic_load(&f->saw_stopped)) {
        rill_stop_self(ctx);
        return RILL_OK;
    }
    rill_msg_t go = kit_msg(MSG_GO, 0, NULL);
    return rill_send(ctx, rill_self(ctx), &go);
}

Test(actor_lifecycle, stop_while_threads_and_an_executor_send, .timeout = 120)
{
    rill_system_t *sys = kit_system(2, 0, 0, 1);
    cr_assert_not_null(sys);
    life_t l;
    memset(&l, 0, sizeof(l));
    rill_aid_t target = spawn_life(sys, &l, NULL, 0);
    kit_tally_t tally;
    memset(&tally, 0, sizeof(tally));

    flood_t f;
    memset(&f, 0, sizeof(f));
    f.target = target;
    f.tally = &tally;
    rill_spawn_opts_t o;
    memset(&o, 0, sizeof(o));
    o.behavior = flood_behavior;
    o.state = &f;
    o.executor = RILL_EXECUTOR(1);
    rill_aid_t flooder = RILL_AID_NONE;
    cr_assert_eq(rill_spawn(sys, &o, &flooder), RILL_OK);

    struct sender s[2];
    for (int i = 0; i < 2; i++) {
        s[i] = (struct sender){.sys = sys, .to = target, .tally = &tally};
        cr_assert_eq(pthread_create(&s[i].thread, NULL, send_until_stopped, &s[i]), 0);
    }
    rill_msg_t go = kit_msg(MSG_GO, 0, NULL);
    cr_assert_eq(rill_tell(sys, flooder, &go), RILL_OK);

    cr_assert(kit_wait_at_least(&l.handled, 1000, KIT_WAIT_MS), "target handled only %ld",
              atomic_load(&l.handled));
    cr_assert_eq(rill_stop(sys, target), RILL_OK);

    long accepted = 0;
    for (int i = 0; i < 2; i++) {
        pthread_join(s[i].thread, NULL);
        cr_assert(s[i].saw_stopped, "sender %d never saw RILL_ESTOPPED", i);
        cr_assert_eq(s[i].accepted_after_stopped, 0, "sender %d", i);
        cr_assert_eq(s[i].other_errors, 0, "sender %d", i);
        accepted += s[i].accepted;
    }
    cr_assert(kit_wait_dead(sys, target, KIT_WAIT_MS));
    cr_assert(kit_wait_dead(sys, flooder, KIT_WAIT_MS), "the flooding actor saw no RILL_ESTOPPED");
    accepted += atomic_load(&f.accepted);

    cr_assert(kit_wait_at_least(&tally.released, accepted, KIT_WAIT_MS), "released %ld of %ld",
              atomic_load(&tally.released), accepted);
    long handled = atomic_load(&l.handled);
    cr_assert(kit_wait_dead_letters(sys, (uint64_t)(accepted - handled), KIT_WAIT_MS));
    cr_assert_eq(dead_letters(sys), (uint64_t)(accepted - handled),
                 "every accepted message is either handled or a dead letter");

    rill_msg_t late = kit_msg(MSG_WORK, 0, &tally);
    cr_assert_eq(rill_tell(sys, target, &late), RILL_ESTOPPED);
    kit_payload_reclaim(late.payload);

    rill_system_destroy(sys);
    cr_assert_eq(atomic_load(&tally.released), accepted, "each accepted payload freed once");
    cr_assert_eq(atomic_load(&tally.made),
                 atomic_load(&tally.released) + atomic_load(&tally.reclaimed));
    cr_assert_eq(atomic_load(&l.terminate_calls), 1);
    cr_assert_eq(l.reason.kind, RILL_EXIT_SHUTDOWN);
}

Test(actor_lifecycle, two_systems_in_one_process_are_independent, .timeout = 60)
{
    rill_system_t *a = kit_system(1, 0, 0, 1);
    rill_system_t *b = kit_system(1, 0, 0, 1);
    cr_assert_not_null(a);
    cr_assert_not_null(b);
    kit_log_t *log_a = kit_log_new();
    kit_log_t *log_b = kit_log_new();
    cr_assert(log_a && log_b);

    /* The same name in both: names are per system. */
    rill_spawn_opts_t o;
    memset(&o, 0, sizeof(o));
    o.behavior = kit_recorder;
    o.name = "echo";
    o.state = log_a;
    rill_aid_t in_a = RILL_AID_NONE, in_b = RILL_AID_NONE;
    cr_assert_eq(rill_spawn(a, &o, &in_a), RILL_OK);
    o.state = log_b;
    cr_assert_eq(rill_spawn(b, &o, &in_b), RILL_OK);
    cr_assert(rill_aid_eq(rill_lookup(a, "echo"), in_a));
    cr_assert(rill_aid_eq(rill_lookup(b, "echo"), in_b));

    rill_msg_t m = kit_msg(MSG_WORK, 1, NULL);
    cr_assert_eq(rill_tell_name(a, "echo", &m), RILL_OK);
    m.arg = 2;
    cr_assert_eq(rill_tell_name(b, "echo", &m), RILL_OK);
    cr_assert_eq(kit_fence(a, in_a), RILL_OK);
    cr_assert_eq(kit_fence(b, in_b), RILL_OK);
    cr_assert_eq(kit_log_size(log_a), 1);
    cr_assert_eq(kit_log_size(log_b), 1);
    cr_assert_eq(kit_log_at(log_a, 0).arg, 1);
    cr_assert_eq(kit_log_at(log_b, 0).arg, 2);

    cr_assert_eq(rill_system_stop(a, KIT_WAIT_MS), RILL_OK);
    rill_system_destroy(a);
    kit_log_free(log_a);

    /* b is untouched. */
    cr_assert(rill_alive(b, in_b));
    cr_assert(rill_aid_eq(rill_lookup(b, "echo"), in_b));
    m.arg = 3;
    cr_assert_eq(rill_tell(b, in_b, &m), RILL_OK);
    cr_assert_eq(kit_fence(b, in_b), RILL_OK);
    cr_assert_eq(kit_log_size(log_b), 2);
    cr_assert_eq(kit_log_at(log_b, 1).arg, 3);
    rill_system_destroy(b);
    kit_log_free(log_b);
}

/* ---- whole-system stop ---------------------------------------------- */

typedef struct owned {
    atomic_int *terminated;
    atomic_int *shutdown_reasons;
    char *buffer; /* freed in terminate: LSan reports it if terminate is skipped */
} owned_t;

static rill_err_t owned_behavior(rill_ctx_t *ctx, void *state, rill_msg_t *msg)
{
    return RILL_OK;
}

static void owned_terminate(rill_ctx_t *ctx, void *state, const rill_exit_t *reason)
{
    owned_t *o = state;
    if (reason->kind == RILL_EXIT_SHUTDOWN)
        atomic_fetch_add(o->shutdown_reasons, 1);
    atomic_fetch_add(o->terminated, 1);
    free(o->buffer);
    free(o);
}

static rill_aid_t spawn_owned(rill_system_t *sys, atomic_int *terminated, atomic_int *shutdowns)
{
    owned_t *st = calloc(1, sizeof(*st));
    cr_assert_not_null(st);
    st->terminated = terminated;
    st->shutdown_reasons = shutdowns;
    st->buffer = malloc(64);
    rill_spawn_opts_t o;
    memset(&o, 0, sizeof(o));
    o.behavior = owned_behavior;
    o.terminate = owned_terminate;
    o.state = st;
    rill_aid_t aid = RILL_AID_NONE;
    rill_err_t e = rill_spawn(sys, &o, &aid);
    cr_assert_eq(e, RILL_OK, "spawn: %s", rill_err_name(e));
    return aid;
}

Test(actor_lifecycle, system_stop_then_destroy_releases_everything, .timeout = 60)
{
    rill_system_t *sys = kit_system(2, 0, 0, 0);
    cr_assert_not_null(sys);
    atomic_int terminated = 0, shutdowns = 0;
    kit_tally_t tally;
    memset(&tally, 0, sizeof(tally));
    const int actors = 50;
    rill_aid_t aids[50];
    for (int i = 0; i < actors; i++) {
        aids[i] = spawn_owned(sys, &terminated, &shutdowns);
        for (int k = 0; k < 3; k++) {
            rill_msg_t m = kit_msg(MSG_WORK, (uint64_t)k, &tally);
            cr_assert_eq(rill_tell(sys, aids[i], &m), RILL_OK);
        }
    }
    rill_system_stats_t ss;
    rill_system_stats(sys, &ss);
    cr_assert_eq(ss.spawned, (uint64_t)actors);
    cr_assert_eq(ss.alive, (uint32_t)actors);

    cr_assert_eq(rill_system_start(sys), RILL_OK);
    cr_assert_eq(rill_system_start(sys), RILL_ESTATE, "started twice");
    cr_assert_eq(rill_system_stop(sys, KIT_WAIT_MS), RILL_OK);
    cr_assert_eq(atomic_load(&terminated), actors);
    cr_assert_eq(atomic_load(&shutdowns), actors);
    cr_assert_eq(atomic_load(&tally.released), 3 * actors, "handled or dead letter, all freed");
    rill_system_stats(sys, &ss);
    cr_assert_eq(ss.alive, 0);
    cr_assert_leq(ss.dead_letters, (uint64_t)(3 * actors));

    /* Stopped: idempotent stop, everything else refused. */
    cr_assert_eq(rill_system_stop(sys, KIT_WAIT_MS), RILL_OK);
    cr_assert_eq(rill_system_start(sys), RILL_ESTATE);
    for (int i = 0; i < actors; i++)
        cr_assert_not(rill_alive(sys, aids[i]));
    rill_msg_t m = kit_msg(MSG_WORK, 0, &tally);
    cr_assert_eq(rill_tell(sys, aids[0], &m), RILL_ESTOPPED);
    kit_payload_reclaim(m.payload);
    owned_t dummy;
    rill_spawn_opts_t o;
    memset(&o, 0, sizeof(o));
    o.behavior = owned_behavior;
    o.state = &dummy;
    rill_aid_t late = RILL_AID_NONE;
    cr_assert_eq(rill_spawn(sys, &o, &late), RILL_ESTOPPED);

    rill_system_destroy(sys);
    cr_assert_eq(atomic_load(&terminated), actors);
    cr_assert_eq(atomic_load(&tally.released), 3 * actors);
}

Test(actor_lifecycle, destroy_alone_stops_a_running_system, .timeout = 60)
{
    rill_system_t *sys = kit_system(2, 0, 0, 1);
    cr_assert_not_null(sys);
    atomic_int terminated = 0, shutdowns = 0;
    kit_tally_t tally;
    memset(&tally, 0, sizeof(tally));
    for (int i = 0; i < 20; i++) {
        rill_aid_t aid = spawn_owned(sys, &terminated, &shutdowns);
        rill_msg_t m = kit_msg(MSG_WORK, 0, &tally);
        cr_assert_eq(kit_tell_retry(sys, aid, &m, KIT_WAIT_MS), RILL_OK);
    }
    rill_system_destroy(sys);
    cr_assert_eq(atomic_load(&terminated), 20);
    cr_assert_eq(atomic_load(&shutdowns), 20);
    cr_assert_eq(atomic_load(&tally.released), 20);
}

Test(actor_lifecycle, destroying_a_never_started_system_frees_queued_payloads, .timeout = 60)
{
    rill_system_t *sys = kit_system(1, 0, 0, 0);
    cr_assert_not_null(sys);
    life_t l;
    memset(&l, 0, sizeof(l));
    rill_aid_t aid = spawn_life(sys, &l, "never-started", 0);
    kit_tally_t tally;
    memset(&tally, 0, sizeof(tally));
    for (int i = 0; i < 5; i++) {
        rill_msg_t m = kit_msg(MSG_WORK, (uint64_t)i, &tally);
        cr_assert_eq(rill_tell(sys, aid, &m), RILL_OK);
    }
    for (int i = 0; i < 2; i++) {
        rill_msg_t m = kit_msg(MSG_WORK, (uint64_t)i, &tally);
        cr_assert_eq(rill_signal(sys, aid, &m), RILL_OK);
    }
    rill_system_destroy(sys);
    cr_assert_eq(atomic_load(&tally.released), 7, "queued messages and signals are released");
    /* Whether a never-started actor gets its hooks (or even its messages)
     * at destroy is not specified; if it does, in the right order, once. */
    cr_assert_eq(atomic_load(&l.handled_before_init), 0);
    cr_assert_leq(atomic_load(&l.init_calls), 1);
    cr_assert_leq(atomic_load(&l.terminate_calls), 1);
}

Test(actor_lifecycle, executors_count_and_start_stop_states, .timeout = 60)
{
    rill_system_t *sys = kit_system(3, 0, 0, 0);
    cr_assert_not_null(sys);
    cr_assert_eq(rill_system_executors(sys), 3);
    cr_assert_eq(rill_system_stop(sys, KIT_WAIT_MS), RILL_OK, "stopping an unstarted system");
    cr_assert_eq(rill_system_start(sys), RILL_ESTATE, "start after stop");
    rill_system_destroy(sys);

    sys = kit_system(0, 0, 0, 1);
    cr_assert_not_null(sys);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    cr_assert_eq(rill_system_executors(sys), (int)cores, "0 executors = one per online core");
    rill_system_destroy(sys);
}

/* ---- names and ids -------------------------------------------------- */

Test(actor_lifecycle, spawn_by_name_lookup_and_duplicate_name, .timeout = 60)
{
    rill_system_t *sys = kit_system(1, 0, 0, 1);
    cr_assert_not_null(sys);
    kit_log_t *log = kit_log_new();
    cr_assert_not_null(log);
    rill_spawn_opts_t o;
    memset(&o, 0, sizeof(o));
    o.behavior = kit_recorder;
    o.state = log;
    char name[16] = "alpha";
    o.name = name;
    rill_aid_t alpha = RILL_AID_NONE;
    cr_assert_eq(rill_spawn(sys, &o, &alpha), RILL_OK);
    memset(name, 'x', sizeof(name) - 1); /* the name was copied */
    cr_assert(rill_aid_eq(rill_lookup(sys, "alpha"), alpha));
    cr_assert(rill_aid_is_none(rill_lookup(sys, "beta")));

    life_t dup;
    memset(&dup, 0, sizeof(dup));
    rill_spawn_opts_t d;
    memset(&d, 0, sizeof(d));
    d.behavior = life_behavior;
    d.init = life_init;
    d.terminate = life_terminate;
    d.state = &dup;
    d.name = "alpha";
    rill_aid_t dup_aid = RILL_AID_NONE;
    cr_assert_eq(rill_spawn(sys, &d, &dup_aid), RILL_EEXIST);
    cr_assert(rill_aid_eq(rill_lookup(sys, "alpha"), alpha), "the first holder keeps the name");

    kit_tally_t tally;
    memset(&tally, 0, sizeof(tally));
    rill_msg_t m = kit_msg(MSG_WORK, 42, &tally);
    cr_assert_eq(rill_tell_name(sys, "alpha", &m), RILL_OK);
    cr_assert(kit_log_wait(log, 1, KIT_WAIT_MS));
    cr_assert_eq(kit_log_at(log, 0).arg, 42);
    cr_assert_eq(kit_log_at(log, 0).value, 42);

    rill_msg_t nobody = kit_msg(MSG_WORK, 1, &tally);
    cr_assert_eq(rill_tell_name(sys, "nobody", &nobody), RILL_ESTOPPED);
    kit_payload_reclaim(nobody.payload);

    rill_system_destroy(sys);
    cr_assert_eq(atomic_load(&dup.init_calls), 0, "a refused spawn runs nothing");
    cr_assert_eq(atomic_load(&dup.terminate_calls), 0);
    cr_assert_eq(atomic_load(&tally.released), 1);
    kit_log_free(log);
}

struct name_free {
    rill_system_t *sys;
    const char *name;
};

static int name_is_free(void *arg)
{
    struct name_free *n = arg;
    return rill_aid_is_none(rill_lookup(n->sys, n->name));
}

Test(actor_lifecycle, name_is_free_again_after_the_actor_stops, .timeout = 60)
{
    rill_system_t *sys = kit_system(1, 0, 0, 1);
    cr_assert_not_null(sys);
    life_t first, second;
    memset(&first, 0, sizeof(first));
    memset(&second, 0, sizeof(second));
    rill_aid_t a1 = spawn_life(sys, &first, "reused", 0);
    cr_assert_eq(rill_stop(sys, a1), RILL_OK);

    struct name_free nf = {sys, "reused"};
    cr_assert(kit_wait_until(name_is_free, &nf, KIT_WAIT_MS), "name still registered");
    cr_assert(kit_wait_dead(sys, a1, KIT_WAIT_MS));

    /* Spawning may race the last step of the stop: retry on EEXIST until
     * the deadline. */
    rill_spawn_opts_t o;
    memset(&o, 0, sizeof(o));
    o.behavior = life_behavior;
    o.init = life_init;
    o.terminate = life_terminate;
    o.state = &second;
    o.name = "reused";
    rill_aid_t a2 = RILL_AID_NONE;
    rill_err_t e;
    int64_t deadline = kit_now_ms() + KIT_WAIT_MS;
    while ((e = rill_spawn(sys, &o, &a2)) == RILL_EEXIST && kit_now_ms() < deadline)
        sched_yield();
    cr_assert_eq(e, RILL_OK, "respawn under a freed name: %s", rill_err_name(e));
    cr_assert(!rill_aid_eq(a2, a1), "ids are never reused");
    cr_assert(rill_aid_eq(rill_lookup(sys, "reused"), a2));

    rill_msg_t m = kit_msg(MSG_WORK, 0, NULL);
    cr_assert_eq(rill_tell(sys, a1, &m), RILL_ESTOPPED, "the old id stays dead");
    cr_assert_eq(rill_tell(sys, a2, &m), RILL_OK);
    cr_assert(kit_wait_at_least(&second.handled, 1, KIT_WAIT_MS));
    cr_assert_eq(atomic_load(&first.handled), 0);
    rill_system_destroy(sys);
}

Test(actor_lifecycle, ids_are_unique_and_never_reused, .timeout = 60)
{
    rill_system_t *sys = kit_system(1, 0, 0, 1);
    cr_assert_not_null(sys);
    enum { N = 200 };
    static rill_aid_t aids[N];
    life_t l;
    memset(&l, 0, sizeof(l));
    for (int i = 0; i < N; i++) {
        rill_spawn_opts_t o;
        memset(&o, 0, sizeof(o));
        o.behavior = life_behavior;
        o.state = &l;
        o.executor = RILL_EXECUTOR(0);
        cr_assert_eq(rill_spawn(sys, &o, &aids[i]), RILL_OK);
        cr_assert(!rill_aid_is_none(aids[i]));
        for (int k = 0; k < i; k++)
            cr_assert(!rill_aid_eq(aids[k], aids[i]), "ids %d and %d", k, i);
        if (i % 2 == 0)
            cr_assert_eq(rill_stop(sys, aids[i]), RILL_OK);
    }
    for (int i = 0; i < N; i += 2)
        cr_assert(kit_wait_dead(sys, aids[i], KIT_WAIT_MS));
    rill_system_stats_t ss;
    rill_system_stats(sys, &ss);
    cr_assert_eq(ss.spawned, (uint64_t)N);
    cr_assert_eq(ss.alive, (uint32_t)N / 2);
    for (int i = 0; i < N; i++)
        cr_assert_eq(!!rill_alive(sys, aids[i]), i % 2, "actor %d", i);
    rill_system_destroy(sys);
}

Test(actor_lifecycle, max_actors_limits_live_actors, .timeout = 60)
{
    rill_system_opts_t so;
    memset(&so, 0, sizeof(so));
    so.executors = 1;
    so.max_actors = 4;
    char err[256] = "";
    rill_system_t *sys = rill_system_new(&so, err, sizeof(err));
    cr_assert_not_null(sys, "%s", err);
    cr_assert_eq(rill_system_start(sys), RILL_OK);
    life_t l[5];
    memset(l, 0, sizeof(l));
    rill_aid_t first = RILL_AID_NONE;
    for (int i = 0; i < 4; i++) {
        rill_aid_t aid = spawn_life(sys, &l[i], NULL, 0);
        if (i == 0)
            first = aid;
    }
    rill_spawn_opts_t o;
    memset(&o, 0, sizeof(o));
    o.behavior = life_behavior;
    o.init = life_init;
    o.state = &l[4];
    rill_aid_t fifth = RILL_AID_NONE;
    cr_assert_eq(rill_spawn(sys, &o, &fifth), RILL_ENOMEM, "a fifth live actor");

    cr_assert_eq(rill_stop(sys, first), RILL_OK);
    cr_assert(kit_wait_dead(sys, first, KIT_WAIT_MS));
    rill_err_t e;
    int64_t deadline = kit_now_ms() + KIT_WAIT_MS;
    while ((e = rill_spawn(sys, &o, &fifth)) == RILL_ENOMEM && kit_now_ms() < deadline)
        sched_yield();
    cr_assert_eq(e, RILL_OK, "room again once one stopped: %s", rill_err_name(e));
    rill_system_destroy(sys);
    cr_assert_eq(atomic_load(&l[4].init_calls), 1);
}

/* Strict ping-pong, so that the executors go to sleep between messages:
 * a lost wakeup shows as a missed deadline. */
static void ping_pong_without_spinning(uint32_t spin_us)
{
    rill_system_opts_t so;
    memset(&so, 0, sizeof(so));
    so.executors = 2;
    so.spin_us = spin_us;
    char err[256] = "";
    rill_system_t *sys = rill_system_new(&so, err, sizeof(err));
    cr_assert_not_null(sys, "%s", err);
    cr_assert_eq(rill_system_start(sys), RILL_OK);
    kit_log_t *log = kit_log_new();
    rill_aid_t r[2] = {kit_spawn_recorder(sys, log, 0), kit_spawn_recorder(sys, log, 1)};
    const int rounds = KIT_SCALE(400);
    for (int i = 0; i < rounds; i++) {
        rill_err_t e = kit_fence(sys, r[i & 1]);
        cr_assert_eq(e, RILL_OK, "round trip %d: %s", i, rill_err_name(e));
        rill_msg_t m = kit_msg(MSG_WORK, (uint64_t)i, NULL);
        cr_assert_eq(rill_tell(sys, r[(i + 1) & 1], &m), RILL_OK);
        cr_assert(kit_log_wait(log, (size_t)i + 1, KIT_WAIT_MS), "message %d never handled", i);
    }
    rill_system_destroy(sys);
    kit_log_free(log);
}

Test(actor_lifecycle, executors_that_never_spin_still_wake_for_every_message, .timeout = 120)
{
    ping_pong_without_spinning(UINT32_MAX);
}

Test(actor_lifecycle, executors_that_spin_briefly_still_wake_for_every_message, .timeout = 120)
{
    ping_pong_without_spinning(1);
}

Test(actor_lifecycle, system_stop_times_out_on_a_stuck_handler_and_can_be_retried, .timeout = 60)
{
    rill_system_t *sys = kit_system(1, 0, 0, 1);
    cr_assert_not_null(sys);
    kit_gate_t gate;
    kit_gate_init(&gate);
    life_t l;
    memset(&l, 0, sizeof(l));
    l.gate = &gate;
    rill_aid_t aid = spawn_life(sys, &l, NULL, 0);
    rill_msg_t m = kit_msg(MSG_WORK, 0, NULL);
    cr_assert_eq(rill_tell(sys, aid, &m), RILL_OK);
    cr_assert(kit_wait_at_least(&gate.arrived, 1, KIT_WAIT_MS));

    rill_err_t e = rill_system_stop(sys, 100);
    cr_assert_eq(e, RILL_ETIMEDOUT, "the handler is still running: %s", rill_err_name(e));
    cr_assert_eq(atomic_load(&l.terminate_calls), 0);
    kit_gate_open(&gate);
    cr_assert_eq(rill_system_stop(sys, KIT_WAIT_MS), RILL_OK);
    cr_assert_eq(atomic_load(&l.terminate_calls), 1);
    cr_assert_eq(l.reason.kind, RILL_EXIT_SHUTDOWN);
    rill_system_destroy(sys);
    kit_gate_destroy(&gate);
}

/* ---- churn: actors come and go while executors send to them ---------- */

#define CHURN_SLOTS 8

typedef struct churn {
    _Atomic rill_aid_t targets[CHURN_SLOTS];
    kit_tally_t tally;
    atomic_long accepted;
    atomic_int quit;
} churn_t;

typedef struct churner {
    churn_t *c;
    uint32_t rng;
} churner_t;

static uint32_t xorshift(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

static rill_err_t churn_sender(rill_ctx_t *ctx, void *state, rill_msg_t *msg)
{
    churner_t *s = state;
    churn_t *c = s->c;
    for (int i = 0; i < 8; i++) {
        rill_aid_t to = atomic_load(&c->targets[xorshift(&s->rng) % CHURN_SLOTS]);
        if (rill_aid_is_none(to))
            continue;
        rill_msg_t m = kit_msg(MSG_WORK, 0, &c->tally);
        if (rill_send(ctx, to, &m) == RILL_OK)
            atomic_fetch_add(&c->accepted, 1);
        else
            kit_payload_reclaim(m.payload);
    }
    if (atomic_load(&c->quit))
        return RILL_OK;
    rill_msg_t go = kit_msg(MSG_GO, 0, NULL);
    return rill_send(ctx, rill_self(ctx), &go);
}

static rill_err_t churn_target(rill_ctx_t *ctx, void *state, rill_msg_t *msg)
{
    return RILL_OK;
}

Test(actor_lifecycle, churn_actors_stop_while_executors_send_to_them, .timeout = 120)
{
    rill_system_t *sys = kit_system(2, 0, 0, 1);
    cr_assert_not_null(sys);
    static churn_t c;
    memset(&c, 0, sizeof(c));
    churner_t senders[2] = {{&c, 0x9e3779b9u}, {&c, 0x7f4a7c15u}};
    rill_aid_t sender_aid[2];
    for (int i = 0; i < 2; i++) {
        rill_spawn_opts_t o;
        memset(&o, 0, sizeof(o));
        o.behavior = churn_sender;
        o.state = &senders[i];
        o.executor = RILL_EXECUTOR(i);
        cr_assert_eq(rill_spawn(sys, &o, &sender_aid[i]), RILL_OK);
        rill_msg_t go = kit_msg(MSG_GO, 0, NULL);
        cr_assert_eq(rill_tell(sys, sender_aid[i], &go), RILL_OK);
    }
    const int n = KIT_SCALE(3000);
    for (int i = 0; i < n; i++) {
        rill_spawn_opts_t o;
        memset(&o, 0, sizeof(o));
        o.behavior = churn_target;
        o.mailbox_capacity = 16;
        rill_aid_t aid = RILL_AID_NONE;
        rill_err_t e = rill_spawn(sys, &o, &aid);
        cr_assert_eq(e, RILL_OK, "spawn %d: %s", i, rill_err_name(e));
        rill_aid_t old = atomic_exchange(&c.targets[i % CHURN_SLOTS], aid);
        if (!rill_aid_is_none(old))
            cr_assert_eq(rill_stop(sys, old), RILL_OK, "stop %d", i);
    }
    atomic_store(&c.quit, 1);
    cr_assert_eq(rill_system_stop(sys, KIT_WAIT_MS), RILL_OK);
    /* Joined: nothing sends any more. */
    long accepted = atomic_load(&c.accepted);
    cr_assert_gt(accepted, 0);
    cr_assert_eq(atomic_load(&c.tally.released), accepted, "each accepted payload freed once");
    cr_assert_eq(atomic_load(&c.tally.made),
                 atomic_load(&c.tally.released) + atomic_load(&c.tally.reclaimed));
    rill_system_destroy(sys);
    cr_assert_eq(atomic_load(&c.tally.released), accepted);
}

/* A watcher that hears DOWN finds the actor gone everywhere: rill_alive
 * says 0 and rill_system_stats no longer counts it (CI once saw a failed
 * rill_sup_start return with its stopped child still counted, because the
 * count dropped only after DOWN and EXIT went out). The watcher spins on
 * its own executor, so it reads within the dying actor's last steps. */
typedef struct down_probe {
    rill_system_t *sys;
    atomic_int downs;
    atomic_int still_alive;   /* rill_alive(victim) was 1 at DOWN */
    atomic_int still_counted; /* stats.alive counted the victim at DOWN */
} down_probe_t;

static rill_err_t down_probe_behavior(rill_ctx_t *ctx, void *state, rill_msg_t *msg)
{
    (void)ctx;
    down_probe_t *p = state;
    if (msg->type != RILL_MSG_DOWN)
        return RILL_OK;
    const rill_down_t *d = msg->payload;
    rill_system_stats_t st;
    rill_system_stats(p->sys, &st);
    if (rill_alive(p->sys, d->actor))
        atomic_fetch_add(&p->still_alive, 1);
    if (st.alive > 1) /* only the watcher itself is left */
        atomic_fetch_add(&p->still_counted, 1);
    atomic_fetch_add_explicit(&p->downs, 1, memory_order_release);
    return RILL_OK;
}

Test(actor_lifecycle, a_watcher_hearing_down_finds_the_actor_neither_alive_nor_counted,
     .timeout = 120)
{
    rill_system_opts_t so;
    memset(&so, 0, sizeof(so));
    so.executors = 2;
    so.spin_us = 100000;
    char err[256] = "";
    rill_system_t *sys = rill_system_new(&so, err, sizeof(err));
    cr_assert_not_null(sys, "%s", err);
    cr_assert_eq(rill_system_start(sys), RILL_OK);
    down_probe_t p;
    memset(&p, 0, sizeof(p));
    p.sys = sys;
    rill_spawn_opts_t wo;
    memset(&wo, 0, sizeof(wo));
    wo.behavior = down_probe_behavior;
    wo.state = &p;
    wo.executor = KIT_EXEC(0);
    rill_aid_t watcher;
    cr_assert_eq(rill_spawn(sys, &wo, &watcher), RILL_OK);

    const int rounds = KIT_SCALE(2000);
    for (int i = 0; i < rounds; i++) {
        life_t l;
        memset(&l, 0, sizeof(l));
        rill_spawn_opts_t o;
        memset(&o, 0, sizeof(o));
        o.behavior = life_behavior;
        o.state = &l;
        o.executor = KIT_EXEC(1);
        o.monitor_by = watcher;
        rill_aid_t victim;
        cr_assert_eq(rill_spawn(sys, &o, &victim), RILL_OK);
        rill_msg_t m = kit_msg(MSG_STOP_SELF, 0, NULL);
        cr_assert_eq(rill_tell(sys, victim, &m), RILL_OK);
        int64_t deadline = kit_now_ms() + KIT_WAIT_MS;
        while (atomic_load_explicit(&p.downs, memory_order_acquire) <= i && kit_now_ms() < deadline)
            sched_yield();
        cr_assert_eq(atomic_load(&p.downs), i + 1, "round %d: no DOWN", i);
        /* the next round's stats must not count this victim either */
        cr_assert(kit_wait_dead(sys, victim, KIT_WAIT_MS));
    }
    rill_system_destroy(sys);
    cr_assert_eq(atomic_load(&p.still_alive), 0, "%d of %d DOWNs found the actor alive",
                 atomic_load(&p.still_alive), rounds);
    cr_assert_eq(atomic_load(&p.still_counted), 0, "%d of %d DOWNs found the actor counted",
                 atomic_load(&p.still_counted), rounds);
}
