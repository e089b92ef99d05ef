/*
 * How actors end, and who hears about it: exit reasons (failure with code
 * and text, normal, shutdown, killed), monitors (exactly one DOWN, NOPROC
 * for the already dead, none after demonitor) and links (abnormal exits
 * propagate both ways as LINKED, normal ones do not, trappers get EXIT).
 *
 * Watchers are kit_recorder actors that log every DOWN / EXIT they get;
 * the test waits on the log.
 */
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "support/rtest.h"

#include "support/actor_kit.h"

enum {
    MSG_WORK = KIT_MSG_APP,
    MSG_RETURN_ERROR, /* the behaviour returns RILL_EIO */
    MSG_FAIL,         /* return rill_fail(ctx, RILL_EINVAL, "bad input %d", 42) */
    MSG_FAIL_THEN_OK, /* rill_fail(ctx, RILL_ENOENT, ...), then return RILL_OK */
    MSG_STOP_SELF
};

/* An actor that ends on command; everything else goes to kit_recorder
 * (so it logs what it gets, answers pings and runs kit_run_in calls). */
typedef struct victim {
    kit_log_t *log;
    atomic_int terminate_calls;
    rill_exit_t reason; /* written before terminate_calls (release) */
} victim_t;

static rill_err_t victim_behavior(rill_ctx_t *ctx, void *state, rill_msg_t *msg)
{
    victim_t *v = state;
    switch (msg->type) {
    case MSG_RETURN_ERROR:
        return RILL_EIO;
    case MSG_FAIL:
        return rill_fail(ctx, RILL_EINVAL, "bad input %d", 42);
    case MSG_FAIL_THEN_OK:
        (void)rill_fail(ctx, RILL_ENOENT, "recorded, then %s", "returned ok");
        return RILL_OK;
    case MSG_STOP_SELF:
        rill_stop_self(ctx);
        return RILL_OK;
    default:
        return kit_recorder(ctx, v->log, msg);
    }
}

static void victim_terminate(rill_ctx_t *ctx, void *state, const rill_exit_t *reason)
{
    victim_t *v = state;
    v->reason = *reason;
    atomic_fetch_add_explicit(&v->terminate_calls, 1, memory_order_release);
}

typedef struct spawn_args {
    rill_aid_t watcher;      /* monitor_by */
    rill_monitor_t *monitor; /* out: its monitor */
    rill_aid_t link_to;
    int trap_exits;
    int executor;
} spawn_args_t;

static rill_aid_t spawn_victim(rill_system_t *sys, victim_t *v, kit_log_t *log,
                               const spawn_args_t *a)
{
    memset(v, 0, sizeof(*v));
    v->log = log;
    rill_spawn_opts_t o;
    memset(&o, 0, sizeof(o));
    o.behavior = victim_behavior;
    o.terminate = victim_terminate;
    o.state = v;
    o.executor = a ? a->executor : RILL_EXECUTOR_ANY;
    if (a) {
        o.monitor_by = a->watcher;
        o.monitor = a->monitor;
        o.link_to = a->link_to;
        o.trap_exits = a->trap_exits;
    }
    rill_aid_t aid = RILL_AID_NONE;
    rill_err_t e = rill_spawn(sys, &o, &aid);
    cr_assert_eq(e, RILL_OK, "spawn: %s", rill_err_name(e));
    return aid;
}

struct find {
    kit_log_t *log;
    uint32_t type;
    rill_aid_t about;
    kit_event_t ev;
};

static int found(void *arg)
{
    struct find *f = arg;
    return kit_log_find(f->log, f->type, f->about, &f->ev);
}

/* Waits for a DOWN or EXIT about `about` in log. */
static kit_event_t wait_event(kit_log_t *log, uint32_t type, rill_aid_t about)
{
    struct find f;
    memset(&f, 0, sizeof(f));
    f.log = log;
    f.type = type;
    f.about = about;
    cr_assert(kit_wait_until(found, &f, KIT_WAIT_MS), "no %s about actor %llu",
              type == RILL_MSG_DOWN ? "DOWN" : "EXIT", (unsigned long long)about.id);
    cr_assert(f.ev.has_down, "a DOWN / EXIT without payload");
    return f.ev;
}

/* How many events of type about `about` the log holds. */
static size_t count_about(kit_log_t *log, uint32_t type, rill_aid_t about)
{
    size_t n = 0;
    for (size_t i = 0; i < kit_log_size(log) && i < KIT_LOG_MAX; i++) {
        kit_event_t e = kit_log_at(log, i);
        n += e.type == type && e.has_down && rill_aid_eq(e.down.actor, about);
    }
    return n;
}

static int victim_done(void *arg)
{
    return atomic_load_explicit(&((victim_t *)arg)->terminate_calls, memory_order_acquire) > 0;
}

struct world {
    rill_system_t *sys;
    kit_log_t *watch_log; /* the watcher's */
    kit_log_t *log;       /* the victims' */
    rill_aid_t watcher;
};

static struct world world_new(int executors)
{
    struct world w;
    w.sys = kit_system(executors, 0, 0, 1);
    cr_assert_not_null(w.sys);
    w.watch_log = kit_log_new();
    w.log = kit_log_new();
    cr_assert(w.watch_log && w.log);
    w.watcher = kit_spawn_recorder(w.sys, w.watch_log, executors - 1);
    cr_assert(!rill_aid_is_none(w.watcher));
    return w;
}

static void world_free(struct world *w)
{
    rill_system_destroy(w->sys);
    kit_log_free(w->watch_log);
    kit_log_free(w->log);
}

static void tell(rill_system_t *sys, rill_aid_t to, uint32_t type)
{
    rill_msg_t m = kit_msg(type, 0, NULL);
    rill_err_t e = rill_tell(sys, to, &m);
    cr_assert_eq(e, RILL_OK, "tell: %s", rill_err_name(e));
}

/* Spawns a watched victim, ends it with `how`, and checks the DOWN the
 * watcher got and the reason terminate saw. Returns the reason. */
static rill_exit_t end_watched(struct world *w, void (*how)(struct world *, rill_aid_t),
                               rill_exit_kind_t kind, rill_err_t code)
{
    victim_t v;
    rill_monitor_t mon = {0};
    spawn_args_t a = {.watcher = w->watcher, .monitor = &mon};
    rill_aid_t aid = spawn_victim(w->sys, &v, w->log, &a);
    cr_assert_neq(mon.id, 0, "the monitor set by spawn");
    how(w, aid);

    kit_event_t down = wait_event(w->watch_log, RILL_MSG_DOWN, aid);
    cr_assert_eq(down.down.monitor.id, mon.id);
    cr_assert_eq(down.down.reason.kind, kind, "DOWN says %s, want %s",
                 rill_exit_kind_name(down.down.reason.kind), rill_exit_kind_name(kind));
    cr_assert_eq(down.down.reason.code, code, "DOWN code %s, want %s",
                 rill_err_name(down.down.reason.code), rill_err_name(code));
    cr_assert(kit_wait_until(victim_done, &v, KIT_WAIT_MS));
    cr_assert_eq(atomic_load(&v.terminate_calls), 1);
    cr_assert_eq(v.reason.kind, kind, "terminate saw %s", rill_exit_kind_name(v.reason.kind));
    cr_assert_eq(v.reason.code, code);
    cr_assert(kit_wait_dead(w->sys, aid, KIT_WAIT_MS));
    return down.down.reason;
}

static void by_error(struct world *w, rill_aid_t aid)
{
    tell(w->sys, aid, MSG_RETURN_ERROR);
}

static void by_fail(struct world *w, rill_aid_t aid)
{
    tell(w->sys, aid, MSG_FAIL);
}

static void by_fail_then_ok(struct world *w, rill_aid_t aid)
{
    tell(w->sys, aid, MSG_FAIL_THEN_OK);
}

static void by_stop_self(struct world *w, rill_aid_t aid)
{
    tell(w->sys, aid, MSG_STOP_SELF);
}

static void by_stop(struct world *w, rill_aid_t aid)
{
    cr_assert_eq(rill_stop(w->sys, aid), RILL_OK);
}

static void by_kill(struct world *w, rill_aid_t aid)
{
    cr_assert_eq(rill_kill(w->sys, aid, "enough of this"), RILL_OK);
}

static void by_kill_no_text(struct world *w, rill_aid_t aid)
{
    cr_assert_eq(rill_kill(w->sys, aid, NULL), RILL_OK);
}

Test(actor_failure, behaviour_error_stops_with_failure_and_its_code, .timeout = 60)
{
    struct world w = world_new(2);
    end_watched(&w, by_error, RILL_EXIT_FAILURE, RILL_EIO);
    world_free(&w);
}

Test(actor_failure, rill_fail_gives_failure_code_and_text, .timeout = 60)
{
    struct world w = world_new(2);
    rill_exit_t r = end_watched(&w, by_fail, RILL_EXIT_FAILURE, RILL_EINVAL);
    cr_assert_not_null(strstr(r.text, "bad input 42"), "text: '%s'", r.text);
    world_free(&w);
}

Test(actor_failure, rill_fail_then_returning_ok_still_fails, .timeout = 60)
{
    struct world w = world_new(2);
    rill_exit_t r = end_watched(&w, by_fail_then_ok, RILL_EXIT_FAILURE, RILL_ENOENT);
    cr_assert_not_null(strstr(r.text, "recorded, then returned ok"), "text: '%s'", r.text);
    world_free(&w);
}

Test(actor_failure, stop_self_is_normal, .timeout = 60)
{
    struct world w = world_new(2);
    end_watched(&w, by_stop_self, RILL_EXIT_NORMAL, RILL_OK);
    world_free(&w);
}

Test(actor_failure, stop_from_outside_is_shutdown, .timeout = 60)
{
    struct world w = world_new(2);
    end_watched(&w, by_stop, RILL_EXIT_SHUTDOWN, RILL_OK);
    world_free(&w);
}

Test(actor_failure, kill_is_killed_with_its_text, .timeout = 60)
{
    struct world w = world_new(2);
    rill_exit_t r = end_watched(&w, by_kill, RILL_EXIT_KILLED, RILL_OK);
    cr_assert_not_null(strstr(r.text, "enough of this"), "text: '%s'", r.text);
    end_watched(&w, by_kill_no_text, RILL_EXIT_KILLED, RILL_OK);
    world_free(&w);
}

Test(actor_failure, exit_kind_names_and_abnormality, .timeout = 10)
{
    static const struct {
        rill_exit_kind_t kind;
        int abnormal;
    } kinds[] = {{RILL_EXIT_NORMAL, 0}, {RILL_EXIT_SHUTDOWN, 0}, {RILL_EXIT_FAILURE, 1},
                 {RILL_EXIT_KILLED, 1}, {RILL_EXIT_LINKED, 1},   {RILL_EXIT_NOPROC, 0}};
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        rill_exit_t r;
        memset(&r, 0, sizeof(r));
        r.kind = kinds[i].kind;
        cr_assert_eq(!!rill_exit_abnormal(&r), kinds[i].abnormal, "kind %s",
                     rill_exit_kind_name(kinds[i].kind));
        const char *name = rill_exit_kind_name(kinds[i].kind);
        cr_assert_not_null(name);
        cr_assert_neq(name[0], '\0');
        for (size_t k = 0; k < i; k++)
            cr_assert_str_neq(name, rill_exit_kind_name(kinds[k].kind));
    }
    cr_assert_str_eq(rill_exit_kind_name(RILL_EXIT_NORMAL), "normal");
    cr_assert_str_eq(rill_exit_kind_name(RILL_EXIT_SHUTDOWN), "shutdown");
    cr_assert_str_eq(rill_exit_kind_name(RILL_EXIT_FAILURE), "failure");
}

/* ---- monitors -------------------------------------------------------- */

struct monitor_req {
    rill_aid_t target;
    rill_monitor_t ref;
    rill_err_t result;
};

static void do_monitor(rill_ctx_t *ctx, void *arg)
{
    struct monitor_req *r = arg;
    r->result = rill_monitor(ctx, r->target, &r->ref);
}

static void do_demonitor(rill_ctx_t *ctx, void *arg)
{
    struct monitor_req *r = arg;
    r->result = rill_demonitor(ctx, r->ref);
}

static struct monitor_req monitor_from(struct world *w, rill_aid_t target)
{
    struct monitor_req r = {target, {0}, RILL_ETIMEDOUT};
    cr_assert_eq(kit_run_in(w->sys, w->watcher, do_monitor, &r), RILL_OK);
    return r;
}

Test(actor_monitor, down_arrives_exactly_once_per_monitor, .timeout = 60)
{
    struct world w = world_new(2);
    victim_t v;
    rill_aid_t target = spawn_victim(w.sys, &v, w.log, NULL);
    struct monitor_req m1 = monitor_from(&w, target);
    struct monitor_req m2 = monitor_from(&w, target);
    cr_assert_eq(m1.result, RILL_OK);
    cr_assert_eq(m2.result, RILL_OK);
    cr_assert_neq(m1.ref.id, 0);
    cr_assert_neq(m2.ref.id, 0);
    cr_assert_neq(m1.ref.id, m2.ref.id, "each monitor has its own ref");

    cr_assert_eq(rill_stop(w.sys, target), RILL_OK);
    cr_assert(kit_log_wait_type(w.watch_log, RILL_MSG_DOWN, 2, KIT_WAIT_MS));
    cr_assert(kit_wait_dead(w.sys, target, KIT_WAIT_MS));
    /* Two round trips through the watcher: a duplicate DOWN, queued when
     * the target stopped, would have arrived by now. */
    cr_assert_eq(kit_fence(w.sys, w.watcher), RILL_OK);
    cr_assert_eq(kit_fence(w.sys, w.watcher), RILL_OK);
    cr_assert_eq(count_about(w.watch_log, RILL_MSG_DOWN, target), 2);
    kit_event_t a = kit_log_at(w.watch_log, 0), b = kit_log_at(w.watch_log, 1);
    cr_assert(a.down.monitor.id != b.down.monitor.id &&
              (a.down.monitor.id == m1.ref.id || a.down.monitor.id == m2.ref.id) &&
              (b.down.monitor.id == m1.ref.id || b.down.monitor.id == m2.ref.id));
    cr_assert_eq(a.down.reason.kind, RILL_EXIT_SHUTDOWN);
    cr_assert(rill_aid_eq(a.down.actor, target));
    world_free(&w);
}

Test(actor_monitor, monitoring_a_dead_actor_gives_noproc, .timeout = 60)
{
    struct world w = world_new(2);
    victim_t v;
    rill_aid_t target = spawn_victim(w.sys, &v, w.log, NULL);
    cr_assert_eq(rill_stop(w.sys, target), RILL_OK);
    cr_assert(kit_wait_dead(w.sys, target, KIT_WAIT_MS));

    struct monitor_req m = monitor_from(&w, target);
    cr_assert_eq(m.result, RILL_OK, "%s", rill_err_name(m.result));
    kit_event_t down = wait_event(w.watch_log, RILL_MSG_DOWN, target);
    cr_assert_eq(down.down.reason.kind, RILL_EXIT_NOPROC, "%s",
                 rill_exit_kind_name(down.down.reason.kind));
    cr_assert_eq(down.down.monitor.id, m.ref.id);
    cr_assert_eq(kit_fence(w.sys, w.watcher), RILL_OK);
    cr_assert_eq(count_about(w.watch_log, RILL_MSG_DOWN, target), 1);
    world_free(&w);
}

Test(actor_monitor, demonitor_means_no_down, .timeout = 60)
{
    struct world w = world_new(2);
    victim_t v;
    rill_aid_t target = spawn_victim(w.sys, &v, w.log, NULL);
    struct monitor_req cancelled = monitor_from(&w, target);
    struct monitor_req kept = monitor_from(&w, target);
    cr_assert_eq(cancelled.result, RILL_OK);
    cr_assert_eq(kept.result, RILL_OK);
    cr_assert_eq(kit_run_in(w.sys, w.watcher, do_demonitor, &cancelled), RILL_OK);
    cr_assert_eq(cancelled.result, RILL_OK, "%s", rill_err_name(cancelled.result));

    cr_assert_eq(rill_kill(w.sys, target, NULL), RILL_OK);
    kit_event_t down = wait_event(w.watch_log, RILL_MSG_DOWN, target);
    cr_assert_eq(down.down.monitor.id, kept.ref.id, "the DOWN is the kept monitor's");
    cr_assert_eq(down.down.reason.kind, RILL_EXIT_KILLED);
    cr_assert_eq(kit_fence(w.sys, w.watcher), RILL_OK);
    cr_assert_eq(kit_fence(w.sys, w.watcher), RILL_OK);
    cr_assert_eq(count_about(w.watch_log, RILL_MSG_DOWN, target), 1,
                 "no DOWN for the cancelled monitor");
    world_free(&w);
}

Test(actor_monitor, monitor_by_at_spawn_reports_the_ref, .timeout = 60)
{
    struct world w = world_new(2);
    end_watched(&w, by_stop_self, RILL_EXIT_NORMAL, RILL_OK);
    /* A watcher that is gone does not stop the spawn. */
    victim_t gone;
    rill_aid_t gone_aid = spawn_victim(w.sys, &gone, w.log, NULL);
    cr_assert_eq(rill_stop(w.sys, gone_aid), RILL_OK);
    cr_assert(kit_wait_dead(w.sys, gone_aid, KIT_WAIT_MS));
    victim_t v;
    rill_monitor_t mon = {0};
    spawn_args_t a = {.watcher = gone_aid, .monitor = &mon};
    rill_aid_t aid = spawn_victim(w.sys, &v, w.log, &a);
    cr_assert_eq(kit_fence(w.sys, aid), RILL_OK, "the new actor runs");
    world_free(&w);
}

/* ---- links ----------------------------------------------------------- */

struct link_req {
    rill_aid_t target;
    rill_err_t result;
};

static void do_link(rill_ctx_t *ctx, void *arg)
{
    struct link_req *r = arg;
    r->result = rill_link(ctx, r->target);
}

static void do_unlink(rill_ctx_t *ctx, void *arg)
{
    struct link_req *r = arg;
    r->result = rill_unlink(ctx, r->target);
}

/* Spawns a watched victim linked to `link_to` (0: none). */
static rill_aid_t spawn_watched(struct world *w, victim_t *v, rill_aid_t link_to, int trap)
{
    spawn_args_t a = {.watcher = w->watcher, .link_to = link_to, .trap_exits = trap};
    return spawn_victim(w->sys, v, w->log, &a);
}

static void expect_down(struct world *w, rill_aid_t aid, rill_exit_kind_t kind)
{
    kit_event_t e = wait_event(w->watch_log, RILL_MSG_DOWN, aid);
    cr_assert_eq(e.down.reason.kind, kind, "actor %llu: %s, want %s", (unsigned long long)aid.id,
                 rill_exit_kind_name(e.down.reason.kind), rill_exit_kind_name(kind));
}

Test(actor_link, abnormal_exit_propagates_to_the_linked_spawner_side, .timeout = 60)
{
    struct world w = world_new(2);
    victim_t va, vb;
    rill_aid_t a = spawn_watched(&w, &va, RILL_AID_NONE, 0);
    rill_aid_t b = spawn_watched(&w, &vb, a, 0);
    cr_assert_eq(kit_fence(w.sys, b), RILL_OK); /* the link is in place */
    cr_assert_eq(rill_kill(w.sys, a, "first"), RILL_OK);
    expect_down(&w, a, RILL_EXIT_KILLED);
    expect_down(&w, b, RILL_EXIT_LINKED);
    cr_assert(kit_wait_until(victim_done, &vb, KIT_WAIT_MS));
    cr_assert_eq(vb.reason.kind, RILL_EXIT_LINKED);
    world_free(&w);
}

Test(actor_link, abnormal_exit_propagates_the_other_way, .timeout = 60)
{
    struct world w = world_new(2);
    victim_t va, vb;
    rill_aid_t a = spawn_watched(&w, &va, RILL_AID_NONE, 0);
    rill_aid_t b = spawn_watched(&w, &vb, a, 0);
    cr_assert_eq(kit_fence(w.sys, b), RILL_OK);
    tell(w.sys, b, MSG_RETURN_ERROR);
    expect_down(&w, b, RILL_EXIT_FAILURE);
    expect_down(&w, a, RILL_EXIT_LINKED);
    world_free(&w);
}

Test(actor_link, rill_link_from_actor_context_links_both_ways, .timeout = 60)
{
    struct world w = world_new(2);
    victim_t va, vb, vc, vd;
    rill_aid_t a = spawn_watched(&w, &va, RILL_AID_NONE, 0);
    rill_aid_t b = spawn_watched(&w, &vb, RILL_AID_NONE, 0);
    struct link_req r = {b, RILL_ETIMEDOUT};
    cr_assert_eq(kit_run_in(w.sys, a, do_link, &r), RILL_OK);
    cr_assert_eq(r.result, RILL_OK, "%s", rill_err_name(r.result));
    tell(w.sys, b, MSG_FAIL);
    expect_down(&w, b, RILL_EXIT_FAILURE);
    expect_down(&w, a, RILL_EXIT_LINKED);

    /* The linker's failure reaches the linked one too. */
    rill_aid_t c = spawn_watched(&w, &vc, RILL_AID_NONE, 0);
    rill_aid_t d = spawn_watched(&w, &vd, RILL_AID_NONE, 0);
    r = (struct link_req){d, RILL_ETIMEDOUT};
    cr_assert_eq(kit_run_in(w.sys, c, do_link, &r), RILL_OK);
    cr_assert_eq(r.result, RILL_OK);
    tell(w.sys, c, MSG_RETURN_ERROR);
    expect_down(&w, c, RILL_EXIT_FAILURE);
    expect_down(&w, d, RILL_EXIT_LINKED);
    world_free(&w);
}

Test(actor_link, normal_and_shutdown_exits_do_not_propagate, .timeout = 60)
{
    struct world w = world_new(2);
    victim_t va, vb, vc, vd;
    rill_aid_t a = spawn_watched(&w, &va, RILL_AID_NONE, 0);
    rill_aid_t b = spawn_watched(&w, &vb, a, 0);
    rill_aid_t c = spawn_watched(&w, &vc, RILL_AID_NONE, 0);
    rill_aid_t d = spawn_watched(&w, &vd, c, 0);
    cr_assert_eq(kit_fence(w.sys, b), RILL_OK);
    cr_assert_eq(kit_fence(w.sys, d), RILL_OK);

    tell(w.sys, a, MSG_STOP_SELF);
    cr_assert_eq(rill_stop(w.sys, c), RILL_OK);
    expect_down(&w, a, RILL_EXIT_NORMAL);
    expect_down(&w, c, RILL_EXIT_SHUTDOWN);
    /* Whatever the links would have done was queued before these
     * round trips returned. */
    cr_assert_eq(kit_fence(w.sys, b), RILL_OK, "b died with its normal partner");
    cr_assert_eq(kit_fence(w.sys, d), RILL_OK, "d died with its shut-down partner");
    cr_assert_eq(kit_fence(w.sys, b), RILL_OK);
    cr_assert(rill_alive(w.sys, b));
    cr_assert(rill_alive(w.sys, d));
    world_free(&w);
}

Test(actor_link, trap_exits_receives_exit_instead_of_dying, .timeout = 60)
{
    struct world w = world_new(2);
    victim_t va, vb;
    rill_aid_t a = spawn_watched(&w, &va, RILL_AID_NONE, 0);
    rill_aid_t b = spawn_watched(&w, &vb, a, 1);
    cr_assert_eq(kit_fence(w.sys, b), RILL_OK);
    cr_assert_eq(rill_kill(w.sys, a, "trap this"), RILL_OK);
    expect_down(&w, a, RILL_EXIT_KILLED);
    kit_event_t ex = wait_event(w.log, RILL_MSG_EXIT, a);
    cr_assert(rill_aid_eq(ex.self, b), "the trapper got it");
    cr_assert_eq(ex.down.reason.kind, RILL_EXIT_KILLED);
    cr_assert_eq(ex.down.monitor.id, 0, "EXIT carries no monitor");
    cr_assert_not_null(strstr(ex.down.reason.text, "trap this"), "'%s'", ex.down.reason.text);
    cr_assert_eq(kit_fence(w.sys, b), RILL_OK);
    cr_assert(rill_alive(w.sys, b), "a trapper survives");
    cr_assert_eq(count_about(w.log, RILL_MSG_EXIT, a), 1);
    world_free(&w);
}

Test(actor_link, linked_exits_chain_through_links, .timeout = 60)
{
    struct world w = world_new(2);
    victim_t va, vb, vc;
    rill_aid_t a = spawn_watched(&w, &va, RILL_AID_NONE, 0);
    rill_aid_t b = spawn_watched(&w, &vb, a, 0);
    rill_aid_t c = spawn_watched(&w, &vc, b, 0);
    cr_assert_eq(kit_fence(w.sys, c), RILL_OK);
    tell(w.sys, a, MSG_RETURN_ERROR);
    expect_down(&w, a, RILL_EXIT_FAILURE);
    expect_down(&w, b, RILL_EXIT_LINKED);
    expect_down(&w, c, RILL_EXIT_LINKED); /* LINKED is abnormal: it propagates */
    world_free(&w);
}

Test(actor_link, link_to_a_gone_actor_is_noproc, .timeout = 60)
{
    struct world w = world_new(2);
    victim_t gone, trapper, plain;
    rill_aid_t g = spawn_victim(w.sys, &gone, w.log, NULL);
    cr_assert_eq(rill_stop(w.sys, g), RILL_OK);
    cr_assert(kit_wait_dead(w.sys, g, KIT_WAIT_MS));

    rill_aid_t t = spawn_watched(&w, &trapper, g, 1);
    kit_event_t ex = wait_event(w.log, RILL_MSG_EXIT, g);
    cr_assert(rill_aid_eq(ex.self, t));
    cr_assert_eq(ex.down.reason.kind, RILL_EXIT_NOPROC, "%s",
                 rill_exit_kind_name(ex.down.reason.kind));

    rill_aid_t p = spawn_watched(&w, &plain, g, 0);
    cr_assert_eq(kit_fence(w.sys, p), RILL_OK, "NOPROC is ignored by non-trappers");
    cr_assert(rill_alive(w.sys, p));
    cr_assert(rill_alive(w.sys, t));

    /* rill_link from actor context to the gone actor: the same. */
    struct link_req r = {g, RILL_ETIMEDOUT};
    cr_assert_eq(kit_run_in(w.sys, t, do_link, &r), RILL_OK);
    /* rill_link does not fail: the trapper hears NOPROC, as at spawn. */
    cr_assert_eq(r.result, RILL_OK, "%s", rill_err_name(r.result));
    cr_assert(kit_log_wait_type(w.log, RILL_MSG_EXIT, 2, KIT_WAIT_MS), "no second EXIT");
    kit_event_t second = kit_log_at(w.log, kit_log_size(w.log) - 1);
    cr_assert_eq(second.type, RILL_MSG_EXIT);
    cr_assert(rill_aid_eq(second.self, t));
    cr_assert_eq(second.down.reason.kind, RILL_EXIT_NOPROC, "%s",
                 rill_exit_kind_name(second.down.reason.kind));
    cr_assert_eq(kit_fence(w.sys, t), RILL_OK);
    cr_assert(rill_alive(w.sys, t), "a trapped NOPROC does not stop the trapper");
    cr_assert_eq(kit_log_count(w.log, RILL_MSG_EXIT), 2);
    world_free(&w);
}

Test(actor_link, unlink_stops_propagation, .timeout = 60)
{
    struct world w = world_new(2);
    victim_t va, vb;
    rill_aid_t a = spawn_watched(&w, &va, RILL_AID_NONE, 0);
    rill_aid_t b = spawn_watched(&w, &vb, a, 0);
    struct link_req r = {a, RILL_ETIMEDOUT};
    cr_assert_eq(kit_run_in(w.sys, b, do_unlink, &r), RILL_OK);
    cr_assert_eq(r.result, RILL_OK, "%s", rill_err_name(r.result));
    cr_assert_eq(rill_kill(w.sys, a, NULL), RILL_OK);
    expect_down(&w, a, RILL_EXIT_KILLED);
    cr_assert_eq(kit_fence(w.sys, b), RILL_OK, "b died although unlinked");
    cr_assert_eq(kit_fence(w.sys, b), RILL_OK);
    cr_assert(rill_alive(w.sys, b));
    world_free(&w);
}
