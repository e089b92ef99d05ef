/*
 * The Kafka source's figures for observability (rill_consumer_stats'
 * group, lag and end-to-end latency; rill_consumer_partitions): what the
 * source knows of each assigned partition (its tracker: the last offset a
 * commit succeeded with, paused or held) joined with librdkafka's last
 * statistics (high watermark, log start, position; its committed offset
 * where the source committed nothing yet), parsed in kafka/health.c.
 *
 * Runs in the source actor's turn, as the statistics callback does (the
 * callback is served by the source's own polls, see health.c), so both
 * sides of the join are the actor's own data.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "source.h"

/* One partition's figures. */
static void part_stats(ksrc_t *k, const rill__khealth_t *h, const rill__tpart_t *p, int64_t now,
                       rill_partition_stats_t *o)
{
    memset(o, 0, sizeof(*o));
    snprintf(o->topic, sizeof(o->topic), "%s", p->topic);
    o->partition = p->partition;
    const rill__kpstat_t *ps = h ? rill__khealth_partition(h, p->topic, p->partition) : NULL;
    o->end_offset = ps ? ps->end_offset : -1;
    o->log_start_offset = ps ? ps->log_start_offset : -1;
    o->position = ps ? ps->position : -1;
    /* The source's own view first: it is current to the last commit
     * result, librdkafka's to its last statistics (and the group's offset
     * fetched at assignment, before this run committed anything). */
    o->committed_offset = p->acked >= 0 ? p->acked : ps ? ps->committed_offset : -1;
    if (o->end_offset >= 0 && o->committed_offset >= 0)
        o->lag = o->end_offset > o->committed_offset ? o->end_offset - o->committed_offset : 0;
    else if (o->end_offset >= 0 && o->committed_offset < 0 && o->log_start_offset >= 0)
        o->lag = o->end_offset > o->log_start_offset ? o->end_offset - o->log_start_offset : 0;
    else
        o->lag = -1;
    o->paused = k->paused || p->start_wait != NULL;
    o->stats_age_ms = h && h->parts_at_ms ? now - h->parts_at_ms : -1;
    if (o->stats_age_ms < -1)
        o->stats_age_ms = 0;
}

static const rill__khealth_t *health(ksrc_t *k)
{
    return k->s ? rill__ksession_health(k->s) : NULL;
}

void rill__ksrc_stats_fill(ksrc_t *k, rill_consumer_stats_t *s)
{
    s->e2e_latency = k->tr.e2e;
    s->group[0] = '\0';
    if (k->rk) {
        size_t size = sizeof(s->group);
        if (rd_kafka_conf_get(rd_kafka_conf(k->rk), "group.id", s->group, &size) !=
            RD_KAFKA_CONF_OK)
            s->group[0] = '\0';
    }
    const rill__khealth_t *h = health(k);
    int64_t now = now_ms(), lag = -1;
    for (rill__tpart_t *p = rill__tracker_next(&k->tr, NULL); p;
         p = rill__tracker_next(&k->tr, p)) {
        rill_partition_stats_t o;
        part_stats(k, h, p, now, &o);
        if (o.lag >= 0)
            lag = (lag < 0 ? 0 : lag) + o.lag;
    }
    s->lag = lag;
}

rill__kparts_reply_t *rill__ksrc_partitions(ksrc_t *k)
{
    size_t n = k->tr.assigned, i = 0;
    rill__kparts_reply_t *r = malloc(sizeof(*r) + (n ? n : 1) * sizeof(r->v[0]));
    if (!r)
        return NULL;
    const rill__khealth_t *h = health(k);
    int64_t now = now_ms();
    for (rill__tpart_t *p = rill__tracker_next(&k->tr, NULL); p && i < n;
         p = rill__tracker_next(&k->tr, p))
        part_stats(k, h, p, now, &r->v[i++]);
    r->n = i;
    return r;
}
