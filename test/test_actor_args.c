/*
 * Every public function of rill/actor.h given invalid arguments: NULL
 * system, options, message, name or context; actor id 0; ids that never
 * existed; executors out of range; no behaviour. Each answers with its
 * documented error (RILL_EINVAL for malformed arguments, RILL_ESTOPPED for
 * actors that are not alive), takes no ownership, and does not crash.
 */
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "support/rtest.h"

#include "support/actor_kit.h"

enum { MSG_WORK = KIT_MSG_APP };

/* An id no actor ever had. */
#define NEVER_SPAWNED ((rill_aid_t){0x7fffffffffffull})

typedef struct counting {
    atomic_int init_calls;
    atomic_int terminate_calls;
} counting_t;

static rill_err_t counting_init(rill_ctx_t *ctx, void *state)
{
    atomic_fetch_add(&((counting_t *)state)->init_calls, 1);
    return RILL_OK;
}

static void counting_terminate(rill_ctx_t *ctx, void *state, const rill_exit_t *reason)
{
    atomic_fetch_add(&((counting_t *)state)->terminate_calls, 1);
}

static rill_err_t nop_behavior(rill_ctx_t *ctx, void *state, rill_msg_t *msg)
{
    return RILL_OK;
}

Test(actor_args, system_new_rejects_bad_options, .timeout = 30)
{
    rill_system_opts_t o;
    memset(&o, 0, sizeof(o));
    o.executors = -1;
    char err[256] = "";
    cr_assert_null(rill_system_new(&o, err, sizeof(err)));
    cr_assert_neq(err[0], '\0', "errstr says why");
    cr_assert_null(rill_system_new(&o, NULL, 0), "no errstr buffer: still no crash");
    char one[1] = {'x'};
    cr_assert_null(rill_system_new(&o, one, sizeof(one)));
    cr_assert_eq(one[0], '\0', "a 1-byte errstr is terminated");
}

Test(actor_args, system_new_rejects_a_default_capacity_above_2_pow_24, .timeout = 30)
{
    rill_system_opts_t o;
    memset(&o, 0, sizeof(o));
    o.executors = 1;
    o.mailbox_capacity = (1u << 24) + 1;
    char err[256] = "";
    rill_system_t *sys = rill_system_new(&o, err, sizeof(err));
    cr_assert_null(sys, "a default no actor could be spawned with");
    cr_assert_neq(err[0], '\0');
}

Test(actor_args, system_new_with_null_opts_uses_defaults, .timeout = 30)
{
    char err[256] = "";
    rill_system_t *sys = rill_system_new(NULL, err, sizeof(err));
    cr_assert_not_null(sys, "%s", err);
    cr_assert_geq(rill_system_executors(sys), 1);
    rill_aid_t aid = RILL_AID_NONE;
    rill_spawn_opts_t so;
    memset(&so, 0, sizeof(so));
    so.behavior = nop_behavior;
    cr_assert_eq(rill_spawn(sys, &so, &aid), RILL_OK);
    rill_actor_stats_t st;
    cr_assert_eq(rill_actor_stats(sys, aid, &st), RILL_OK);
    cr_assert_eq(st.mailbox_capacity, 256);
    rill_system_destroy(sys);
}

Test(actor_args, system_functions_with_null_system, .timeout = 30)
{
    cr_assert_eq(rill_system_start(NULL), RILL_EINVAL);
    cr_assert_eq(rill_system_stop(NULL, 100), RILL_EINVAL);
    rill_system_destroy(NULL);
    cr_assert_eq(rill_system_executors(NULL), 0);
    rill_system_stats_t st;
    memset(&st, 0xab, sizeof(st));
    rill_system_stats(NULL, &st); /* no crash; nothing to report */

    rill_system_t *sys = kit_system(1, 0, 0, 0);
    cr_assert_not_null(sys);
    rill_system_stats(sys, NULL);
    rill_system_destroy(sys);
}

Test(actor_args, spawn_rejects_bad_arguments, .timeout = 30)
{
    rill_system_t *sys = kit_system(2, 0, 0, 1);
    cr_assert_not_null(sys);
    counting_t c;
    memset(&c, 0, sizeof(c));
    rill_spawn_opts_t good;
    memset(&good, 0, sizeof(good));
    good.behavior = nop_behavior;
    good.init = counting_init;
    good.terminate = counting_terminate;
    good.state = &c;
    rill_aid_t aid = RILL_AID_NONE;

    cr_assert_eq(rill_spawn(NULL, &good, &aid), RILL_EINVAL, "NULL system");
    cr_assert_eq(rill_spawn(sys, NULL, &aid), RILL_EINVAL, "NULL opts");
    cr_assert_eq(rill_spawn(sys, &good, NULL), RILL_EINVAL, "NULL aid");

    rill_spawn_opts_t o = good;
    o.behavior = NULL;
    cr_assert_eq(rill_spawn(sys, &o, &aid), RILL_EINVAL, "no behaviour");
    static const int bad_executors[] = {RILL_EXECUTOR(2), RILL_EXECUTOR(3), RILL_EXECUTOR(1000), -1,
                                        -1000};
    for (size_t i = 0; i < sizeof(bad_executors) / sizeof(bad_executors[0]); i++) {
        o = good;
        o.executor = bad_executors[i];
        rill_err_t e = rill_spawn(sys, &o, &aid);
        cr_assert_eq(e, RILL_EINVAL, "executor %d of 2: %s", bad_executors[i], rill_err_name(e));
    }
    o = good;
    o.mailbox_capacity = (1u << 24) + 1;
    cr_assert_eq(rill_spawn(sys, &o, &aid), RILL_EINVAL, "capacity above 2^24");

    rill_system_stats_t st;
    rill_system_stats(sys, &st);
    cr_assert_eq(st.spawned, 0, "refused spawns are not counted");
    cr_assert_eq(st.alive, 0);

    /* The good options do work. */
    cr_assert_eq(rill_spawn(sys, &good, &aid), RILL_OK);
    cr_assert(!rill_aid_is_none(aid));
    rill_system_destroy(sys);
    cr_assert_eq(atomic_load(&c.init_calls), 1, "only the good spawn ran");
    cr_assert_eq(atomic_load(&c.terminate_calls), 1);
}

Test(actor_args, tell_signal_and_tell_name_reject_bad_arguments, .timeout = 30)
{
    rill_system_t *sys = kit_system(1, 0, 0, 1);
    cr_assert_not_null(sys);
    kit_log_t *log = kit_log_new();
    rill_spawn_opts_t o;
    memset(&o, 0, sizeof(o));
    o.behavior = kit_recorder;
    o.state = log;
    o.name = "here";
    rill_aid_t here = RILL_AID_NONE;
    cr_assert_eq(rill_spawn(sys, &o, &here), RILL_OK);

    kit_tally_t tally;
    memset(&tally, 0, sizeof(tally));
    rill_msg_t m = kit_msg(MSG_WORK, 1, &tally);

    cr_assert_eq(rill_tell(NULL, here, &m), RILL_EINVAL);
    cr_assert_eq(rill_tell(sys, here, NULL), RILL_EINVAL);
    cr_assert_eq(rill_tell(sys, RILL_AID_NONE, &m), RILL_EINVAL);
    cr_assert_eq(rill_tell(sys, NEVER_SPAWNED, &m), RILL_ESTOPPED);

    cr_assert_eq(rill_signal(NULL, here, &m), RILL_EINVAL);
    cr_assert_eq(rill_signal(sys, here, NULL), RILL_EINVAL);
    cr_assert_eq(rill_signal(sys, RILL_AID_NONE, &m), RILL_EINVAL);
    cr_assert_eq(rill_signal(sys, NEVER_SPAWNED, &m), RILL_ESTOPPED);

    cr_assert_eq(rill_tell_name(NULL, "here", &m), RILL_EINVAL);
    cr_assert_eq(rill_tell_name(sys, "here", NULL), RILL_EINVAL);
    cr_assert_eq(rill_tell_name(sys, NULL, &m), RILL_EINVAL);
    rill_err_t e = rill_tell_name(sys, "", &m);
    cr_assert(e == RILL_ESTOPPED || e == RILL_EINVAL, "empty name: %s", rill_err_name(e));
    cr_assert_eq(rill_tell_name(sys, "not here", &m), RILL_ESTOPPED);

    cr_assert_eq(kit_fence(sys, here), RILL_OK);
    cr_assert_eq(kit_log_size(log), 0, "nothing was delivered");
    cr_assert_eq(atomic_load(&tally.released), 0, "every refusal left the payload with us");
    kit_payload_reclaim(m.payload);
    rill_system_destroy(sys);
    kit_log_free(log);
}

Test(actor_args, lookup_stop_kill_alive_and_stats_reject_bad_arguments, .timeout = 30)
{
    rill_system_t *sys = kit_system(1, 0, 0, 1);
    cr_assert_not_null(sys);
    kit_log_t *log = kit_log_new();
    rill_aid_t here = kit_spawn_recorder(sys, log, 0);
    cr_assert(!rill_aid_is_none(here));

    cr_assert(rill_aid_is_none(rill_lookup(NULL, "x")));
    cr_assert(rill_aid_is_none(rill_lookup(sys, NULL)));
    cr_assert(rill_aid_is_none(rill_lookup(sys, "")));

    cr_assert_eq(rill_stop(NULL, here), RILL_EINVAL);
    cr_assert_eq(rill_stop(sys, RILL_AID_NONE), RILL_EINVAL);
    cr_assert_eq(rill_stop(sys, NEVER_SPAWNED), RILL_ESTOPPED);
    cr_assert_eq(rill_kill(NULL, here, "x"), RILL_EINVAL);
    cr_assert_eq(rill_kill(sys, RILL_AID_NONE, "x"), RILL_EINVAL);
    cr_assert_eq(rill_kill(sys, NEVER_SPAWNED, NULL), RILL_ESTOPPED);

    cr_assert_eq(rill_alive(NULL, here), 0);
    cr_assert_eq(rill_alive(sys, RILL_AID_NONE), 0);
    cr_assert_eq(rill_alive(sys, NEVER_SPAWNED), 0);

    rill_actor_stats_t st;
    cr_assert_eq(rill_actor_stats(NULL, here, &st), RILL_EINVAL);
    cr_assert_eq(rill_actor_stats(sys, here, NULL), RILL_EINVAL);
    cr_assert_eq(rill_actor_stats(sys, RILL_AID_NONE, &st), RILL_EINVAL);
    cr_assert_eq(rill_actor_stats(sys, NEVER_SPAWNED, &st), RILL_ESTOPPED);

    cr_assert(rill_alive(sys, here), "none of that touched the live actor");
    cr_assert_eq(kit_fence(sys, here), RILL_OK);
    rill_system_destroy(sys);
    kit_log_free(log);
}

Test(actor_args, ask_sync_rejects_bad_arguments, .timeout = 30)
{
    rill_system_t *sys = kit_system(1, 0, 0, 1);
    cr_assert_not_null(sys);
    kit_log_t *log = kit_log_new();
    rill_aid_t here = kit_spawn_recorder(sys, log, 0);
    rill_msg_t req = kit_msg(KIT_MSG_PING, 0, NULL), reply;
    memset(&reply, 0, sizeof(reply));
    cr_assert_eq(rill_ask_sync(NULL, here, &req, 100, &reply), RILL_EINVAL);
    cr_assert_eq(rill_ask_sync(sys, RILL_AID_NONE, &req, 100, &reply), RILL_EINVAL);
    cr_assert_eq(rill_ask_sync(sys, here, NULL, 100, &reply), RILL_EINVAL);
    cr_assert_eq(rill_ask_sync(sys, here, &req, 100, NULL), RILL_EINVAL);
    cr_assert_eq(rill_ask_sync(sys, NEVER_SPAWNED, &req, 100, &reply), RILL_ESTOPPED);
    cr_assert_eq(rill_ask_sync(sys, here, &req, KIT_WAIT_MS, &reply), RILL_OK, "still works");
    rill_system_destroy(sys);
    kit_log_free(log);
}

/* Every actor-context function, called from inside an actor with bad
 * arguments; results are checked on the test thread. */
struct ctx_results {
    rill_aid_t live;
    rill_err_t send_to_none, send_null_msg, send_to_never;
    rill_err_t monitor_none, link_none, unlink_none;
    rill_err_t timer_null_msg, ask_to_none, ask_null_req;
    rill_err_t reply_null_req, reply_null_reply;
    void *take_null;
    rill_aid_t self;
    int executor;
    rill_system_t *sys;
};

static void bad_calls(rill_ctx_t *ctx, void *arg)
{
    struct ctx_results *r = arg;
    rill_msg_t m = kit_msg(MSG_WORK, 1, NULL);
    rill_monitor_t mon;
    rill_timer_t tmr;
    uint64_t out = 0;
    r->send_to_none = rill_send(ctx, RILL_AID_NONE, &m);
    r->send_null_msg = rill_send(ctx, r->live, NULL);
    r->send_to_never = rill_send(ctx, NEVER_SPAWNED, &m);
    r->monitor_none = rill_monitor(ctx, RILL_AID_NONE, &mon);
    r->link_none = rill_link(ctx, RILL_AID_NONE);
    r->unlink_none = rill_unlink(ctx, RILL_AID_NONE);
    r->timer_null_msg = rill_timer_start(ctx, 10, 0, NULL, &tmr);
    r->ask_to_none = rill_ask(ctx, RILL_AID_NONE, &m, 100, &out);
    r->ask_null_req = rill_ask(ctx, r->live, NULL, 100, &out);
    r->reply_null_req = rill_reply(ctx, NULL, &m);
    rill_msg_t req = m;
    req.from = r->live;
    req.corr = 1;
    r->reply_null_reply = rill_reply(ctx, &req, NULL);
    r->take_null = rill_msg_take(NULL);
    r->self = rill_self(ctx);
    r->executor = rill_ctx_executor(ctx);
    r->sys = rill_ctx_system(ctx);
}

Test(actor_args, actor_context_functions_reject_bad_arguments, .timeout = 30)
{
    rill_system_t *sys = kit_system(2, 0, 0, 1);
    cr_assert_not_null(sys);
    kit_log_t *log = kit_log_new();
    rill_aid_t runner = kit_spawn_recorder(sys, log, 1);
    rill_aid_t live = kit_spawn_recorder(sys, log, 0);
    struct ctx_results r;
    memset(&r, 0, sizeof(r));
    r.live = live;
    cr_assert_eq(kit_run_in(sys, runner, bad_calls, &r), RILL_OK);

    cr_assert_eq(r.send_to_none, RILL_EINVAL, "%s", rill_err_name(r.send_to_none));
    cr_assert_eq(r.send_null_msg, RILL_EINVAL, "%s", rill_err_name(r.send_null_msg));
    cr_assert_eq(r.send_to_never, RILL_ESTOPPED, "%s", rill_err_name(r.send_to_never));
    cr_assert_eq(r.monitor_none, RILL_EINVAL, "%s", rill_err_name(r.monitor_none));
    cr_assert_eq(r.link_none, RILL_EINVAL, "%s", rill_err_name(r.link_none));
    cr_assert_eq(r.unlink_none, RILL_EINVAL, "%s", rill_err_name(r.unlink_none));
    cr_assert_eq(r.timer_null_msg, RILL_EINVAL, "%s", rill_err_name(r.timer_null_msg));
    cr_assert_eq(r.ask_to_none, RILL_EINVAL, "%s", rill_err_name(r.ask_to_none));
    cr_assert_eq(r.ask_null_req, RILL_EINVAL, "%s", rill_err_name(r.ask_null_req));
    cr_assert_eq(r.reply_null_req, RILL_EINVAL, "%s", rill_err_name(r.reply_null_req));
    cr_assert_eq(r.reply_null_reply, RILL_EINVAL, "%s", rill_err_name(r.reply_null_reply));
    cr_assert_null(r.take_null);
    cr_assert(rill_aid_eq(r.self, runner));
    cr_assert_eq(r.executor, 1);
    cr_assert_eq(r.sys, sys);

    /* Nothing reached the live actor, and no monitor / link / timer /
     * pending ask was left behind. */
    cr_assert_eq(kit_fence(sys, live), RILL_OK);
    cr_assert_eq(kit_log_size(log), 0);
    cr_assert(rill_alive(sys, runner));
    rill_system_destroy(sys);
    kit_log_free(log);
}

Test(actor_args, actor_context_functions_with_null_ctx, .timeout = 30)
{
    rill_msg_t m = kit_msg(MSG_WORK, 1, NULL);
    uint64_t out = 0;
    rill_monitor_t mon = {1};
    rill_timer_t tmr = {1};
    const rill_aid_t one = {1};
    cr_assert(rill_aid_is_none(rill_self(NULL)));
    cr_assert_null(rill_ctx_system(NULL));
    cr_assert_lt(rill_ctx_executor(NULL), 0);
    cr_assert_eq(rill_send(NULL, one, &m), RILL_EINVAL);
    rill_stop_self(NULL);
    cr_assert_eq(rill_fail(NULL, RILL_EIO, "no ctx %d", 1), RILL_EIO, "returns code");
    cr_assert_eq(rill_monitor(NULL, one, &mon), RILL_EINVAL);
    cr_assert_eq(rill_demonitor(NULL, mon), RILL_EINVAL);
    cr_assert_eq(rill_link(NULL, one), RILL_EINVAL);
    cr_assert_eq(rill_unlink(NULL, one), RILL_EINVAL);
    cr_assert_eq(rill_timer_start(NULL, 1, 0, &m, &tmr), RILL_EINVAL);
    cr_assert_eq(rill_timer_cancel(NULL, tmr), RILL_EINVAL);
    cr_assert_eq(rill_ask(NULL, one, &m, 100, &out), RILL_EINVAL);
    rill_msg_t req = m;
    req.from = one;
    cr_assert_eq(rill_reply(NULL, &req, &m), RILL_EINVAL);
}

static void start_again(rill_ctx_t *ctx, void *arg)
{
    *(rill_err_t *)arg = rill_system_start(rill_ctx_system(ctx));
}

Test(actor_args, start_from_an_executor_thread_is_estate, .timeout = 30)
{
    rill_system_t *sys = kit_system(1, 0, 0, 1);
    cr_assert_not_null(sys);
    kit_log_t *log = kit_log_new();
    rill_aid_t runner = kit_spawn_recorder(sys, log, 0);
    rill_err_t e = RILL_OK;
    cr_assert_eq(kit_run_in(sys, runner, start_again, &e), RILL_OK);
    cr_assert_eq(e, RILL_ESTATE, "%s", rill_err_name(e));
    rill_system_destroy(sys);
    kit_log_free(log);
}

Test(actor_args, exit_helpers_tolerate_odd_input, .timeout = 30)
{
    cr_assert_eq(rill_exit_abnormal(NULL), 0);
    cr_assert_not_null(rill_exit_kind_name((rill_exit_kind_t)99));
    cr_assert_not_null(rill_exit_kind_name((rill_exit_kind_t)-1));
}

Test(actor_args, pool_functions_reject_bad_arguments, .timeout = 30)
{
    cr_assert_null(rill_pool_new(0, 0), "block_size 0");
    cr_assert_null(rill_pool_alloc(NULL));
    rill_pool_free(NULL);
    rill_pool_destroy(NULL);
}
