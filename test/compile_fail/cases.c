/*
 * Ids of different kinds are distinct types: each CASE below passes one
 * kind where another is expected and must not compile. check.sh compiles
 * this file once per case (-DCASE=n) and expects a type error, and once
 * with CASE 0, the same calls with the right types, which must compile
 * (so a broken include path cannot pass for a type error).
 */
#include <rill/rill.h>

#ifndef CASE
#define CASE 0
#endif

void uses(rill_system_t *sys, rill_ctx_t *ctx, rill_aid_t pub_aid, rill_aid_t sub_aid,
          rill_timer_t timer, rill_monitor_t monitor, rill_msg_t *m);

void uses(rill_system_t *sys, rill_ctx_t *ctx, rill_aid_t pub_aid, rill_aid_t sub_aid,
          rill_timer_t timer, rill_monitor_t monitor, rill_msg_t *m)
{
    rill_pub_t pub = rill_pub(pub_aid);
    rill_sub_t sub = rill_sub(sub_aid);
#if CASE == 0
    rill_stream_request(sys, pub, sub, 1, 1);
    rill_stream_next(sys, sub, pub, 1, NULL);
    rill_timer_cancel(ctx, timer);
    rill_demonitor(ctx, monitor);
    rill_tell(sys, pub_aid, m);
    rill_link(ctx, sub_aid);
#elif CASE == 1 /* publisher and subscriber swapped */
    rill_stream_request(sys, sub, pub, 1, 1);
#elif CASE == 2 /* publisher and subscriber swapped, the other direction */
    rill_stream_next(sys, pub, sub, 1, NULL);
#elif CASE == 3 /* a monitor where a timer is expected */
    rill_timer_cancel(ctx, monitor);
#elif CASE == 4 /* a timer where a monitor is expected */
    rill_demonitor(ctx, timer);
#elif CASE == 5 /* a number where an actor id is expected */
    rill_tell(sys, 42, m);
#elif CASE == 6 /* a monitor where an actor id is expected */
    rill_link(ctx, monitor);
#elif CASE == 7 /* a subscriber where an actor id is expected */
    rill_tell(sys, sub, m);
#endif
}
