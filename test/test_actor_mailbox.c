/*
 * Actor mailboxes: bounded, refusing with RILL_EFULL when full (counted, the
 * caller keeps the payload), FIFO per sender through many wrap-arounds and
 * under many concurrent producers, capacities rounded up to a power of two,
 * and the control queue that is never full and served first.
 *
 * A system that is created but not started runs no handler, which lets a
 * test fill a mailbox deterministically.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "support/rtest.h"

#include "support/actor_kit.h"

enum { MSG_SEQ = KIT_MSG_APP, MSG_SIGNAL, MSG_FORWARD };

#define PRODUCERS 4

/* A consumer that checks per-producer FIFO order: arg = producer << 32 | seq. */
typedef struct seq_state {
    atomic_long handled;
    atomic_long out_of_order;
    atomic_long bad_payload;
    uint64_t next[PRODUCERS]; /* executor thread only */
} seq_state_t;

static uint64_t seq_arg(unsigned producer, uint32_t seq)
{
    return (uint64_t)producer << 32 | seq;
}

static rill_err_t seq_behavior(rill_ctx_t *ctx, void *state, rill_msg_t *msg)
{
    seq_state_t *st = state;
    unsigned producer = (unsigned)(msg->arg >> 32);
    uint64_t seq = msg->arg & 0xffffffffu;
    if (producer >= PRODUCERS || seq != st->next[producer])
        atomic_fetch_add(&st->out_of_order, 1);
    else
        st->next[producer] = seq + 1;
    if (msg->payload && kit_payload_value(msg->payload) != msg->arg)
        atomic_fetch_add(&st->bad_payload, 1);
    atomic_fetch_add(&st->handled, 1);
    return RILL_OK;
}

static rill_aid_t spawn_seq(rill_system_t *sys, seq_state_t *st, uint32_t capacity)
{
    rill_spawn_opts_t o;
    memset(&o, 0, sizeof(o));
    o.behavior = seq_behavior;
    o.state = st;
    o.mailbox_capacity = capacity;
    o.executor = RILL_EXECUTOR(0);
    rill_aid_t aid = RILL_AID_NONE;
    rill_err_t e = rill_spawn(sys, &o, &aid);
    cr_assert_eq(e, RILL_OK, "spawn: %s", rill_err_name(e));
    cr_assert(!rill_aid_is_none(aid));
    return aid;
}

static rill_actor_stats_t stats_of(rill_system_t *sys, rill_aid_t aid)
{
    rill_actor_stats_t s;
    memset(&s, 0, sizeof(s));
    rill_err_t e = rill_actor_stats(sys, aid, &s);
    cr_assert_eq(e, RILL_OK, "rill_actor_stats: %s", rill_err_name(e));
    return s;
}

Test(actor_mailbox, full_mailbox_refuses_counts_and_leaves_payload_with_caller, .timeout = 60)
{
    rill_system_t *sys = kit_system(1, 0, 0, 0); /* not started: nothing drains */
    cr_assert_not_null(sys);
    seq_state_t st;
    memset(&st, 0, sizeof(st));
    rill_aid_t aid = spawn_seq(sys, &st, 4);
    cr_assert_eq(stats_of(sys, aid).mailbox_capacity, 4);

    kit_tally_t tally;
    memset(&tally, 0, sizeof(tally));
    for (uint32_t i = 0; i < 4; i++) {
        rill_msg_t m = kit_msg(MSG_SEQ, seq_arg(0, i), &tally);
        rill_err_t e = rill_tell(sys, aid, &m);
        cr_assert_eq(e, RILL_OK, "message %u of a 4-slot mailbox: %s", i, rill_err_name(e));
    }
    for (int i = 0; i < 3; i++) {
        rill_msg_t m = kit_msg(MSG_SEQ, seq_arg(1, 0), &tally);
        rill_err_t e = rill_tell(sys, aid, &m);
        cr_assert_eq(e, RILL_EFULL, "send %d to a full mailbox: %s", i, rill_err_name(e));
        cr_assert_eq(atomic_load(&tally.released), 0, "rill freed a refused payload");
        kit_payload_reclaim(m.payload); /* still ours: ASan reports a double free otherwise */
    }
    rill_actor_stats_t s = stats_of(sys, aid);
    cr_assert_eq(s.refused, 3);
    cr_assert_eq(s.mailbox_depth, 4);
    cr_assert_eq(s.mailbox_hwm, 4);

    cr_assert_eq(rill_system_start(sys), RILL_OK);
    cr_assert(kit_wait_at_least(&st.handled, 4, KIT_WAIT_MS), "handled %ld of 4",
              atomic_load(&st.handled));
    cr_assert(kit_wait_at_least(&tally.released, 4, KIT_WAIT_MS));
    cr_assert_eq(atomic_load(&st.out_of_order), 0);
    cr_assert_eq(atomic_load(&st.bad_payload), 0);

    /* Drained: it accepts again. */
    rill_msg_t m = kit_msg(MSG_SEQ, seq_arg(0, 4), &tally);
    cr_assert_eq(kit_tell_retry(sys, aid, &m, KIT_WAIT_MS), RILL_OK);
    cr_assert(kit_wait_at_least(&st.handled, 5, KIT_WAIT_MS));
    s = stats_of(sys, aid);
    cr_assert_geq(s.processed, 5);
    cr_assert_eq(s.refused, 3);

    cr_assert_eq(rill_system_stop(sys, KIT_WAIT_MS), RILL_OK);
    rill_system_destroy(sys);
    /* Every accepted payload was released exactly once, none of the refused. */
    cr_assert_eq(atomic_load(&tally.released), 5);
    cr_assert_eq(atomic_load(&tally.reclaimed), 3);
    cr_assert_eq(atomic_load(&tally.made), 8);
}

Test(actor_mailbox, wrap_around_keeps_fifo_order, .timeout = 120)
{
    rill_system_t *sys = kit_system(1, 0, 0, 1);
    cr_assert_not_null(sys);
    seq_state_t st;
    memset(&st, 0, sizeof(st));
    rill_aid_t aid = spawn_seq(sys, &st, 8);
    kit_tally_t tally;
    memset(&tally, 0, sizeof(tally));

    const uint32_t n = KIT_SCALE(20000);
    for (uint32_t i = 0; i < n; i++) {
        rill_msg_t m = kit_msg(MSG_SEQ, seq_arg(0, i), &tally);
        rill_err_t e = kit_tell_retry(sys, aid, &m, KIT_WAIT_MS);
        cr_assert_eq(e, RILL_OK, "message %u: %s", i, rill_err_name(e));
    }
    cr_assert(kit_wait_at_least(&st.handled, n, KIT_WAIT_MS * 3), "handled %ld of %u",
              atomic_load(&st.handled), n);
    cr_assert_eq(atomic_load(&st.out_of_order), 0);
    cr_assert_eq(atomic_load(&st.bad_payload), 0);
    rill_actor_stats_t s = stats_of(sys, aid);
    cr_assert_eq(s.mailbox_capacity, 8);
    cr_assert_leq(s.mailbox_hwm, 8);
    cr_assert_geq(s.mailbox_hwm, 1);

    rill_system_destroy(sys);
    cr_assert_eq(atomic_load(&tally.released), n);
}

Test(actor_mailbox, capacity_is_rounded_up_to_a_power_of_two, .timeout = 60)
{
    rill_system_t *sys = kit_system(1, 0, 0, 0);
    cr_assert_not_null(sys);
    static const uint32_t asked[] = {3, 5, 100, 1000, 1024, 4097};
    static const uint32_t want[] = {4, 8, 128, 1024, 1024, 8192};
    seq_state_t st;
    memset(&st, 0, sizeof(st));
    for (size_t i = 0; i < sizeof(asked) / sizeof(asked[0]); i++) {
        rill_aid_t aid = spawn_seq(sys, &st, asked[i]);
        uint32_t cap = stats_of(sys, aid).mailbox_capacity;
        cr_assert_eq(cap, want[i], "capacity %u became %u, want %u", asked[i], cap, want[i]);
    }
    for (uint32_t small = 1; small <= 2; small++) {
        rill_aid_t aid = spawn_seq(sys, &st, small);
        uint32_t cap = stats_of(sys, aid).mailbox_capacity;
        cr_assert(cap >= small && (cap & (cap - 1)) == 0, "capacity %u became %u", small, cap);
    }
    /* The rounded capacity is real: 5 asked, 8 accepted, the 9th refused. */
    rill_aid_t aid = spawn_seq(sys, &st, 5);
    rill_msg_t m;
    memset(&m, 0, sizeof(m));
    m.type = MSG_SEQ;
    for (uint32_t i = 0; i < 8; i++) {
        m.arg = seq_arg(0, i);
        cr_assert_eq(rill_tell(sys, aid, &m), RILL_OK, "message %u of 8", i);
    }
    cr_assert_eq(rill_tell(sys, aid, &m), RILL_EFULL);
    rill_system_destroy(sys);
}

Test(actor_mailbox, default_capacity_comes_from_the_system, .timeout = 60)
{
    rill_system_t *sys = kit_system(1, 0, 0, 0);
    cr_assert_not_null(sys);
    seq_state_t st;
    memset(&st, 0, sizeof(st));
    rill_aid_t aid = spawn_seq(sys, &st, 0);
    cr_assert_eq(stats_of(sys, aid).mailbox_capacity, 256, "documented default");
    rill_system_destroy(sys);

    sys = kit_system(1, 100, 0, 0);
    cr_assert_not_null(sys);
    aid = spawn_seq(sys, &st, 0);
    cr_assert_eq(stats_of(sys, aid).mailbox_capacity, 128, "system default 100, rounded up");
    aid = spawn_seq(sys, &st, 16);
    cr_assert_eq(stats_of(sys, aid).mailbox_capacity, 16, "an actor's own capacity wins");
    rill_system_destroy(sys);
}

Test(actor_mailbox, capacity_above_2_pow_24_is_einval, .timeout = 60)
{
    rill_system_t *sys = kit_system(1, 0, 0, 0);
    cr_assert_not_null(sys);
    seq_state_t st;
    memset(&st, 0, sizeof(st));
    static const uint32_t too_big[] = {(1u << 24) + 1, 1u << 25, UINT32_MAX};
    for (size_t i = 0; i < sizeof(too_big) / sizeof(too_big[0]); i++) {
        rill_spawn_opts_t o;
        memset(&o, 0, sizeof(o));
        o.behavior = seq_behavior;
        o.state = &st;
        o.mailbox_capacity = too_big[i];
        rill_aid_t aid = RILL_AID_NONE;
        rill_err_t e = rill_spawn(sys, &o, &aid);
        cr_assert_eq(e, RILL_EINVAL, "capacity %u: %s", too_big[i], rill_err_name(e));
    }
    rill_system_stats_t ss;
    memset(&ss, 0, sizeof(ss));
    rill_system_stats(sys, &ss);
    cr_assert_eq(ss.alive, 0);
    cr_assert_eq(ss.spawned, 0);
    rill_system_destroy(sys);
}

struct producer {
    pthread_t thread;
    rill_system_t *sys;
    rill_aid_t to;
    unsigned id;
    uint32_t count;
    kit_tally_t *tally;
    long efull;  /* EFULL answers seen */
    long errors; /* any other error */
};

static void *produce(void *arg)
{
    struct producer *p = arg;
    for (uint32_t i = 0; i < p->count; i++) {
        rill_msg_t m = kit_msg(MSG_SEQ, seq_arg(p->id, i), p->tally);
        rill_err_t e;
        /* Retry on the condition "mailbox full": a full mailbox drains as
         * long as the consumer runs. */
        while ((e = rill_tell(p->sys, p->to, &m)) == RILL_EFULL) {
            p->efull++;
            sched_yield();
        }
        if (e != RILL_OK) {
            p->errors++;
            kit_payload_reclaim(m.payload);
        }
    }
    return NULL;
}

/* PRODUCERS threads send `per` numbered messages each through `produce_fn`
 * (retrying refusals) to one actor of mailbox `capacity`: every message
 * is handled once, in each producer's order, every refusal counted, every
 * payload released once. */
static void many_producers(void *(*produce_fn)(void *), uint32_t capacity)
{
    rill_system_t *sys = kit_system(2, 0, 0, 1);
    cr_assert_not_null(sys);
    seq_state_t st;
    memset(&st, 0, sizeof(st));
    rill_aid_t aid = spawn_seq(sys, &st, capacity);
    kit_tally_t tally;
    memset(&tally, 0, sizeof(tally));

    const uint32_t per = KIT_SCALE(100000);
    struct producer p[PRODUCERS];
    for (unsigned i = 0; i < PRODUCERS; i++) {
        p[i] = (struct producer){.sys = sys, .to = aid, .id = i, .count = per, .tally = &tally};
        cr_assert_eq(pthread_create(&p[i].thread, NULL, produce_fn, &p[i]), 0);
    }
    long efull = 0;
    for (unsigned i = 0; i < PRODUCERS; i++) {
        pthread_join(p[i].thread, NULL);
        cr_assert_eq(p[i].errors, 0, "producer %u saw errors other than RILL_EFULL", i);
        efull += p[i].efull;
    }
    const long total = (long)per * PRODUCERS;
    cr_assert(kit_wait_at_least(&st.handled, total, KIT_WAIT_MS * 6), "handled %ld of %ld",
              atomic_load(&st.handled), total);
    cr_assert(kit_wait_at_least(&tally.released, total, KIT_WAIT_MS));

    rill_actor_stats_t s = stats_of(sys, aid);
    cr_assert_eq(s.refused, (uint64_t)efull, "refused counter %llu, messages refused %ld",
                 (unsigned long long)s.refused, efull);
    cr_assert_geq(s.processed, (uint64_t)total);

    cr_assert_eq(rill_system_stop(sys, KIT_WAIT_MS), RILL_OK);
    /* After the executors were joined: exact counts, nothing extra. */
    cr_assert_eq(atomic_load(&st.handled), total);
    cr_assert_eq(atomic_load(&st.out_of_order), 0);
    cr_assert_eq(atomic_load(&st.bad_payload), 0);
    for (unsigned i = 0; i < PRODUCERS; i++)
        cr_assert_eq(st.next[i], per, "producer %u: next expected %llu", i,
                     (unsigned long long)st.next[i]);
    rill_system_destroy(sys);
    cr_assert_eq(atomic_load(&tally.released), total);
}

Test(actor_mailbox, many_producers_deliver_exactly_once_fifo_per_producer, .timeout = 240)
{
    many_producers(produce, 1024);
}

/* Logs every message it handles, in order. */
Test(actor_mailbox, control_signals_bypass_a_full_mailbox_and_come_first, .timeout = 60)
{
    rill_system_t *sys = kit_system(1, 0, 0, 0);
    cr_assert_not_null(sys);
    kit_log_t *log = kit_log_new();
    cr_assert_not_null(log);
    rill_spawn_opts_t o;
    memset(&o, 0, sizeof(o));
    o.behavior = kit_recorder;
    o.state = log;
    o.mailbox_capacity = 2;
    rill_aid_t aid = RILL_AID_NONE;
    cr_assert_eq(rill_spawn(sys, &o, &aid), RILL_OK);

    kit_tally_t tally;
    memset(&tally, 0, sizeof(tally));
    for (int i = 0; i < 2; i++) {
        rill_msg_t m = kit_msg(MSG_SEQ, (uint64_t)i, &tally);
        cr_assert_eq(rill_tell(sys, aid, &m), RILL_OK);
    }
    rill_msg_t refused = kit_msg(MSG_SEQ, 99, &tally);
    cr_assert_eq(rill_tell(sys, aid, &refused), RILL_EFULL);
    kit_payload_reclaim(refused.payload);
    for (int i = 0; i < 3; i++) {
        rill_msg_t m = kit_msg(MSG_SIGNAL, (uint64_t)i, &tally);
        rill_err_t e = rill_signal(sys, aid, &m);
        cr_assert_eq(e, RILL_OK, "signal %d to an actor with a full mailbox: %s", i,
                     rill_err_name(e));
    }

    cr_assert_eq(rill_system_start(sys), RILL_OK);
    cr_assert(kit_log_wait(log, 5, KIT_WAIT_MS), "logged %zu of 5", kit_log_size(log));
    for (size_t i = 0; i < 5; i++) {
        kit_event_t e = kit_log_at(log, i);
        uint32_t want_type = i < 3 ? MSG_SIGNAL : MSG_SEQ;
        uint64_t want_arg = i < 3 ? i : i - 3;
        cr_assert_eq(e.type, want_type, "event %zu: type %u (signals first)", i, e.type);
        cr_assert_eq(e.arg, want_arg, "event %zu: arg %llu", i, (unsigned long long)e.arg);
        cr_assert_eq(e.value, want_arg, "event %zu: payload value", i);
    }
    cr_assert(kit_wait_at_least(&tally.released, 5, KIT_WAIT_MS));
    rill_system_destroy(sys);
    cr_assert_eq(atomic_load(&tally.released), 5);
    kit_log_free(log);
}

/* Takes the payload out of each message and forwards it to `next`. */
typedef struct forwarder {
    rill_aid_t next;
    atomic_long forwarded;
    atomic_long failed;
} forwarder_t;

static rill_err_t forward_behavior(rill_ctx_t *ctx, void *state, rill_msg_t *msg)
{
    forwarder_t *f = state;
    rill_msg_t out = *msg;
    out.payload = rill_msg_take(msg);
    if (msg->dtor != NULL)
        atomic_fetch_add(&f->failed, 1); /* take must clear dtor */
    out.type = MSG_FORWARD;
    if (rill_send(ctx, f->next, &out) != RILL_OK) {
        atomic_fetch_add(&f->failed, 1);
        out.dtor(out.payload);
    } else {
        atomic_fetch_add(&f->forwarded, 1);
    }
    return RILL_OK;
}

Test(actor_mailbox, msg_take_moves_ownership_to_the_next_receiver, .timeout = 60)
{
    rill_system_t *sys = kit_system(2, 0, 0, 1);
    cr_assert_not_null(sys);
    kit_log_t *log = kit_log_new();
    cr_assert_not_null(log);
    rill_aid_t sink = kit_spawn_recorder(sys, log, 1);
    cr_assert(!rill_aid_is_none(sink));
    forwarder_t f;
    memset(&f, 0, sizeof(f));
    f.next = sink;
    rill_spawn_opts_t o;
    memset(&o, 0, sizeof(o));
    o.behavior = forward_behavior;
    o.state = &f;
    rill_aid_t fwd = RILL_AID_NONE;
    cr_assert_eq(rill_spawn(sys, &o, &fwd), RILL_OK);

    kit_tally_t tally;
    memset(&tally, 0, sizeof(tally));
    for (int i = 0; i < 10; i++) {
        rill_msg_t m = kit_msg(MSG_SEQ, 100 + (uint64_t)i, &tally);
        cr_assert_eq(kit_tell_retry(sys, fwd, &m, KIT_WAIT_MS), RILL_OK);
    }
    cr_assert(kit_log_wait_type(log, MSG_FORWARD, 10, KIT_WAIT_MS));
    cr_assert_eq(atomic_load(&f.failed), 0);
    for (size_t i = 0; i < 10; i++) {
        kit_event_t e = kit_log_at(log, i);
        cr_assert_eq(e.value, 100 + i, "payload %zu arrived intact", i);
        cr_assert(rill_aid_eq(e.from, fwd), "rill_send sets from");
    }
    cr_assert(kit_wait_at_least(&tally.released, 10, KIT_WAIT_MS));
    rill_system_destroy(sys);
    cr_assert_eq(atomic_load(&tally.released), 10, "each payload freed once, by the sink");
    kit_log_free(log);
}

Test(actor_mailbox, tell_keeps_from_as_given, .timeout = 60)
{
    rill_system_t *sys = kit_system(1, 0, 0, 1);
    cr_assert_not_null(sys);
    kit_log_t *log = kit_log_new();
    rill_aid_t rec = kit_spawn_recorder(sys, log, 0);
    rill_msg_t m = kit_msg(MSG_SEQ, 1, NULL);
    cr_assert_eq(rill_tell(sys, rec, &m), RILL_OK);
    m.from = (rill_aid_t){777};
    m.corr = 5;
    cr_assert_eq(rill_tell(sys, rec, &m), RILL_OK);
    cr_assert(kit_log_wait(log, 2, KIT_WAIT_MS));
    cr_assert(rill_aid_is_none(kit_log_at(log, 0).from), "0 from outside actors");
    cr_assert(rill_aid_eq(kit_log_at(log, 1).from, (rill_aid_t){777}), "kept as given");
    cr_assert_eq(kit_log_at(log, 1).corr, 5);
    rill_system_destroy(sys);
    kit_log_free(log);
}

/* ---- rill_tell_batch ---- */

Test(actor_mailbox, tell_batch_sends_the_prefix_that_fits_and_leaves_the_rest_with_caller,
     .timeout = 60)
{
    rill_system_t *sys = kit_system(1, 0, 0, 0); /* not started: nothing drains */
    cr_assert_not_null(sys);
    seq_state_t st;
    memset(&st, 0, sizeof(st));
    rill_aid_t aid = spawn_seq(sys, &st, 8);
    kit_tally_t tally;
    memset(&tally, 0, sizeof(tally));
    uint32_t seq = 0;
    for (; seq < 3; seq++) {
        rill_msg_t m = kit_msg(MSG_SEQ, seq_arg(0, seq), &tally);
        cr_assert_eq(rill_tell(sys, aid, &m), RILL_OK);
    }
    rill_msg_t batch[10];
    for (uint32_t i = 0; i < 10; i++)
        batch[i] = kit_msg(MSG_SEQ, seq_arg(0, seq + i), &tally);
    size_t sent = 99;
    rill_err_t e = rill_tell_batch(sys, aid, batch, 10, &sent);
    cr_assert_eq(e, RILL_EFULL, "a batch of 10 into 5 free slots: %s", rill_err_name(e));
    cr_assert_eq(sent, 5, "sent %zu of 10 into 5 free slots", sent);
    cr_assert_eq(atomic_load(&tally.released), 0, "rill freed a payload it did not take");
    rill_actor_stats_t s = stats_of(sys, aid);
    cr_assert_eq(s.refused, 5, "refused counts the messages left out");
    cr_assert_eq(s.mailbox_depth, 8);
    cr_assert_eq(s.mailbox_hwm, 8);
    /* Full: nothing goes, everything stays ours. */
    e = rill_tell_batch(sys, aid, batch + 5, 5, &sent);
    cr_assert_eq(e, RILL_EFULL);
    cr_assert_eq(sent, 0);
    for (uint32_t i = 5; i < 10; i++)
        kit_payload_reclaim(batch[i].payload);

    cr_assert_eq(rill_system_start(sys), RILL_OK);
    cr_assert(kit_wait_at_least(&st.handled, 8, KIT_WAIT_MS), "handled %ld of 8",
              atomic_load(&st.handled));
    /* The rest goes once there is room, in order after the first ones. */
    seq += 5;
    rill_msg_t more[4];
    for (uint32_t i = 0; i < 4; i++)
        more[i] = kit_msg(MSG_SEQ, seq_arg(0, seq + i), &tally);
    size_t off = 0;
    for (int tries = 0; off < 4 && tries < 100000; tries++) {
        e = rill_tell_batch(sys, aid, more + off, 4 - off, &sent);
        cr_assert(e == RILL_OK || e == RILL_EFULL, "%s", rill_err_name(e));
        off += sent;
        if (off < 4)
            sched_yield();
    }
    cr_assert_eq(off, 4);
    cr_assert(kit_wait_at_least(&st.handled, 12, KIT_WAIT_MS));
    cr_assert_eq(rill_system_stop(sys, KIT_WAIT_MS), RILL_OK);
    rill_system_destroy(sys);
    cr_assert_eq(atomic_load(&st.out_of_order), 0);
    cr_assert_eq(atomic_load(&st.bad_payload), 0);
    cr_assert_eq(st.next[0], 12);
    cr_assert_eq(atomic_load(&tally.released), 12);
    cr_assert_eq(atomic_load(&tally.reclaimed), 5);
    cr_assert_eq(atomic_load(&tally.made), 17);
}

Test(actor_mailbox, tell_batch_rejects_bad_arguments_and_gone_actors, .timeout = 60)
{
    rill_system_t *sys = kit_system(1, 0, 0, 1);
    cr_assert_not_null(sys);
    seq_state_t st;
    memset(&st, 0, sizeof(st));
    rill_aid_t aid = spawn_seq(sys, &st, 8);
    rill_msg_t m = {.type = MSG_SEQ};
    size_t sent = 7;
    cr_assert_eq(rill_tell_batch(NULL, aid, &m, 1, &sent), RILL_EINVAL);
    cr_assert_eq(sent, 0);
    cr_assert_eq(rill_tell_batch(sys, aid, &m, 1, NULL), RILL_EINVAL);
    sent = 7;
    cr_assert_eq(rill_tell_batch(sys, aid, NULL, 1, &sent), RILL_EINVAL);
    cr_assert_eq(sent, 0);
    sent = 7;
    cr_assert_eq(rill_tell_batch(sys, RILL_AID_NONE, &m, 1, &sent), RILL_EINVAL);
    cr_assert_eq(sent, 0);
    sent = 7;
    cr_assert_eq(rill_tell_batch(sys, aid, NULL, 0, &sent), RILL_OK, "an empty batch");
    cr_assert_eq(sent, 0);
    cr_assert_eq(rill_stop(sys, aid), RILL_OK);
    cr_assert(kit_wait_dead(sys, aid, KIT_WAIT_MS));
    sent = 7;
    cr_assert_eq(rill_tell_batch(sys, aid, &m, 1, &sent), RILL_ESTOPPED);
    cr_assert_eq(sent, 0);
    cr_assert_eq(atomic_load(&st.handled), 0);
    rill_system_destroy(sys);
}

/* Stops itself on the message whose sequence number is `stop_at`. */
typedef struct stopper {
    uint64_t stop_at;
    atomic_long handled;
} stopper_t;

static rill_err_t stopper_behavior(rill_ctx_t *ctx, void *state, rill_msg_t *msg)
{
    stopper_t *s = state;
    atomic_fetch_add(&s->handled, 1);
    if (msg->arg == s->stop_at)
        rill_stop_self(ctx);
    return RILL_OK;
}

Test(actor_mailbox, an_actor_stopping_mid_batch_releases_the_rest_once, .timeout = 60)
{
    rill_system_t *sys = kit_system(1, 0, 0, 0);
    cr_assert_not_null(sys);
    stopper_t s = {.stop_at = 3};
    rill_spawn_opts_t o;
    memset(&o, 0, sizeof(o));
    o.behavior = stopper_behavior;
    o.state = &s;
    o.mailbox_capacity = 16;
    rill_aid_t aid = RILL_AID_NONE;
    cr_assert_eq(rill_spawn(sys, &o, &aid), RILL_OK);
    kit_tally_t tally;
    memset(&tally, 0, sizeof(tally));
    rill_msg_t batch[10];
    for (uint32_t i = 0; i < 10; i++)
        batch[i] = kit_msg(MSG_SEQ, i, &tally);
    size_t sent = 0;
    cr_assert_eq(rill_tell_batch(sys, aid, batch, 10, &sent), RILL_OK);
    cr_assert_eq(sent, 10);
    cr_assert_eq(rill_system_start(sys), RILL_OK);
    cr_assert(kit_wait_dead(sys, aid, KIT_WAIT_MS));
    cr_assert(kit_wait_at_least(&tally.released, 10, KIT_WAIT_MS), "released %ld of 10",
              atomic_load(&tally.released));
    cr_assert_eq(atomic_load(&s.handled), 4, "handled up to the stop, none after");
    cr_assert_eq(rill_system_stop(sys, KIT_WAIT_MS), RILL_OK);
    rill_system_destroy(sys);
    cr_assert_eq(atomic_load(&tally.released), 10, "every payload exactly once");
}

static void *produce_batches(void *arg)
{
    struct producer *p = arg;
    rill_msg_t batch[64];
    uint32_t i = 0, round = 0;
    while (i < p->count) {
        uint32_t n = 1 + (round++ * 7 + p->id * 13) % 64;
        if (n > p->count - i)
            n = p->count - i;
        for (uint32_t k = 0; k < n; k++)
            batch[k] = kit_msg(MSG_SEQ, seq_arg(p->id, i + k), p->tally);
        uint32_t off = 0;
        while (off < n) {
            size_t sent = 0;
            rill_err_t e = rill_tell_batch(p->sys, p->to, batch + off, n - off, &sent);
            off += (uint32_t)sent;
            if (e == RILL_EFULL) {
                p->efull += (long)(n - off);
                sched_yield();
            } else if (e != RILL_OK) {
                p->errors++;
                for (uint32_t k = off; k < n; k++)
                    kit_payload_reclaim(batch[k].payload);
                return NULL;
            }
        }
        i += n;
    }
    return NULL;
}

Test(actor_mailbox, batches_from_many_producers_arrive_exactly_once_fifo_per_producer,
     .timeout = 240)
{
    many_producers(produce_batches, 256);
}
