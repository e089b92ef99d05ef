/*
 * A table's progress and failure (table.c's reader, table_follow.c's
 * follow): a partition reaching its end, the table caught up (waiters
 * woken, the callbacks of opts the first time), the table failed. Its own
 * file so that the reader and the follow both use it, not each other.
 */
#include <stdio.h>

#include "../actors/util.h"
#include "table_int.h"

static void table_signal(rill_table_t *t)
{
    pthread_mutex_lock(&t->mu);
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

/* The table has caught up: wake the waiters; the first time, the callbacks. */
void rill__table_mark_caught_up(rill_table_t *t)
{
    int first = !t->told_once;
    /* The time first: the flag's release store below publishes it to a
     * reader that sees the flag (rill_table_stats right after a wait). */
    if (first)
        atomic_store_explicit(&t->caught_up_ms, rill__now_ms() - t->opened_ms,
                              memory_order_relaxed);
    if (!t->partitioned)
        atomic_store_explicit(&t->caught_up, 1, memory_order_release);
    table_signal(t);
    if (!first)
        return;
    t->told_once = 1;
    if (t->opts.on_caught_up)
        t->opts.on_caught_up(t->opts.opaque, t);
    if (t->opts.notify.id != 0) {
        rill_msg_t m = {.type = t->opts.notify_type};
        rill_err_t err = rill_signal(t->sys, t->opts.notify, &m);
        if (err)
            rill_log(RILL_LOG_WARNING, "state.table",
                     "table %s: cannot tell actor %llu it caught up: %s", t->topic,
                     (unsigned long long)t->opts.notify.id, rill_err2str(err));
    }
}

/* Partition p has moved to `next`: done when it reached its end. */
void rill__table_part_progress(rill_table_t *t, int32_t p, int64_t next)
{
    table_part_t *tp = &t->parts[p];
    if (next > tp->next)
        tp->next = next;
    if (!tp->done && tp->next >= tp->end) {
        tp->done = 1;
        t->parts_left--;
    }
}

void rill__table_fail(rill_table_t *t, rill_err_t err, const char *text)
{
    pthread_mutex_lock(&t->mu);
    if (!t->err) {
        t->err = err;
        snprintf(t->err_text, sizeof t->err_text, "table %s: %s", t->topic, text);
        atomic_store_explicit(&t->failed, (int)err, memory_order_release);
    }
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
    rill_log(RILL_LOG_ERR, "state.table", "table %s: %s; it stopped reading", t->topic, text);
}
