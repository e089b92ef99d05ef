/*
 * A snapshot in the Prometheus text exposition format (0.0.4). Each
 * family is written once (HELP, TYPE, then its samples), names follow
 * Prometheus' conventions (base units, counters end in _total), and the
 * labels are bounded by what is watched: pipeline and stage names,
 * consumer groups, topics and partitions assigned to this process,
 * supervisor and child ids, executor indexes, store and table names
 * (docs/observability.md lists every family).
 */
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "obs_int.h"

/* A counter or gauge read from a stats struct: its offset and width. */
typedef struct field {
    const char *name, *type, *help;
    size_t off;
    char width; /* '8' uint64_t, '4' uint32_t, 'i' int, 'I' int32_t, 'l' int64_t */
} field_t;

#define F(n, t, h, S, m, w)                                                                        \
    {                                                                                              \
        n, t, h, offsetof(S, m), w                                                                 \
    }

static double field_value(const void *st, const field_t *f)
{
    const char *p = (const char *)st + f->off;
    switch (f->width) {
    case '8': {
        uint64_t v;
        memcpy(&v, p, sizeof(v));
        return (double)v;
    }
    case '4': {
        uint32_t v;
        memcpy(&v, p, sizeof(v));
        return (double)v;
    }
    case 'I': {
        int32_t v;
        memcpy(&v, p, sizeof(v));
        return (double)v;
    }
    case 'l': {
        int64_t v;
        memcpy(&v, p, sizeof(v));
        return (double)v;
    }
    default: {
        int v;
        memcpy(&v, p, sizeof(v));
        return (double)v;
    }
    }
}

static void family(obs_buf_t *b, const char *name, const char *type, const char *help)
{
    obs_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void value(obs_buf_t *b, double v)
{
    if (v == (double)(int64_t)v)
        obs_printf(b, " %" PRId64 "\n", (int64_t)v);
    else
        obs_printf(b, " %.9g\n", v);
}

/* name<suffix>{k1="v1",k2="v2",k3="v3",le="le"}: up to three labels (NULL
 * keys end them), then le when not NULL (a histogram's bucket). */
static void sample_le(obs_buf_t *b, const char *name, const char *suffix, const char *k1,
                      const char *v1, const char *k2, const char *v2, const char *k3,
                      const char *v3, const char *le)
{
    obs_printf(b, "%s%s", name, suffix ? suffix : "");
    const char *keys[] = {k1, k2, k3}, *vals[] = {v1, v2, v3};
    int n = 0;
    for (int i = 0; i < 3 && keys[i]; i++, n++) {
        obs_printf(b, "%c%s=", n ? ',' : '{', keys[i]);
        obs_label(b, vals[i]);
    }
    if (le) {
        obs_printf(b, "%cle=", n ? ',' : '{');
        obs_label(b, le);
        n++;
    }
    if (n)
        obs_printf(b, "}");
}

static void sample(obs_buf_t *b, const char *name, const char *suffix, const char *k1,
                   const char *v1, const char *k2, const char *v2, const char *k3, const char *v3)
{
    sample_le(b, name, suffix, k1, v1, k2, v2, k3, v3, NULL);
}

static void histogram(obs_buf_t *b, const char *name, const rill_hist_t *h, const char *k1,
                      const char *v1, const char *k2, const char *v2, const char *k3,
                      const char *v3)
{
    const double *bounds = rill_hist_bounds();
    uint64_t cum = 0;
    for (int i = 0; i < RILL_HIST_BUCKETS; i++) {
        cum += h->buckets[i];
        char le[32];
        if (i == RILL_HIST_BUCKETS - 1)
            snprintf(le, sizeof(le), "+Inf");
        else
            snprintf(le, sizeof(le), "%g", bounds[i]);
        sample_le(b, name, "_bucket", k1, v1, k2, v2, k3, v3, le);
        value(b, (double)cum);
    }
    sample(b, name, "_sum", k1, v1, k2, v2, k3, v3);
    value(b, (double)h->sum_ns / 1e9);
    sample(b, name, "_count", k1, v1, k2, v2, k3, v3);
    value(b, (double)h->count);
}

static const field_t actor_fields[] = {
    F("rill_mailbox_depth", "gauge", "Messages queued in the stage's mailbox now.",
      rill_actor_stats_t, mailbox_depth, '4'),
    F("rill_mailbox_high_water", "gauge", "The most messages the stage's mailbox ever held.",
      rill_actor_stats_t, mailbox_hwm, '4'),
    F("rill_mailbox_capacity", "gauge", "The stage's mailbox capacity.", rill_actor_stats_t,
      mailbox_capacity, '4'),
    F("rill_mailbox_refused_total", "counter", "Sends the stage's full mailbox refused.",
      rill_actor_stats_t, refused, '8'),
    F("rill_stage_messages_total", "counter", "Messages and signals the stage handled.",
      rill_actor_stats_t, processed, '8'),
};

static const field_t consumer_fields[] = {
    F("rill_consumer_records_in_total", "counter", "Records received from librdkafka.",
      rill_consumer_stats_t, polled, '8'),
    F("rill_consumer_records_out_total", "counter",
      "Records sent downstream (redeliveries included).", rill_consumer_stats_t, emitted, '8'),
    F("rill_consumer_records_confirmed_total", "counter", "Record confirms accepted.",
      rill_consumer_stats_t, confirmed, '8'),
    F("rill_consumer_commits_total", "counter", "Offset commits that succeeded.",
      rill_consumer_stats_t, committed, '8'),
    F("rill_consumer_commit_errors_total", "counter", "Offset commits that failed.",
      rill_consumer_stats_t, commit_errors, '8'),
    F("rill_consumer_records_fenced_total", "counter",
      "Confirms dropped because their partition was revoked since.", rill_consumer_stats_t, fenced,
      '8'),
    F("rill_consumer_records_redelivered_total", "counter", "Records delivered again.",
      rill_consumer_stats_t, redelivered, '8'),
    F("rill_consumer_records_dead_lettered_total", "counter",
      "Records delivered to the dead-letter topic.", rill_consumer_stats_t, dead_lettered, '8'),
    F("rill_consumer_records_failed_total", "counter", "Records processing failed on.",
      rill_consumer_stats_t, failures, '8'),
    F("rill_consumer_rebalances_total", "counter", "Assign, revoke and lost events.",
      rill_consumer_stats_t, rebalances, '8'),
    F("rill_consumer_errors_total", "counter", "Errors librdkafka reported (retriable too).",
      rill_consumer_stats_t, errors, '8'),
    F("rill_consumer_paused", "gauge", "1 while the source's partitions are paused.",
      rill_consumer_stats_t, paused, 'i'),
    F("rill_consumer_assigned_partitions", "gauge", "Partitions assigned now.",
      rill_consumer_stats_t, assigned, '4'),
    F("rill_consumer_buffered_records", "gauge", "Records held by the source now.",
      rill_consumer_stats_t, buffered, '4'),
    F("rill_consumer_unconfirmed_records", "gauge", "Records out and not confirmed yet.",
      rill_consumer_stats_t, unconfirmed, '4'),
    F("rill_consumer_connected", "gauge", "1 while the source reaches its brokers.",
      rill_consumer_stats_t, connected, 'i'),
};

static const field_t part_fields[] = {
    F("rill_consumer_lag", "gauge",
      "Records between the partition's end and the group's committed offset.",
      rill_partition_stats_t, lag, 'l'),
    F("rill_consumer_end_offset", "gauge", "The partition's end (high watermark).",
      rill_partition_stats_t, end_offset, 'l'),
    F("rill_consumer_committed_offset", "gauge", "The group's committed offset.",
      rill_partition_stats_t, committed_offset, 'l'),
    F("rill_consumer_partition_paused", "gauge", "1 while the partition is paused.",
      rill_partition_stats_t, paused, 'i'),
};

static const field_t producer_fields[] = {
    F("rill_producer_requests_total", "counter", "Produce requests received.",
      rill_producer_stats_t, requested, '8'),
    F("rill_producer_records_delivered_total", "counter", "Records delivered.",
      rill_producer_stats_t, delivered, '8'),
    F("rill_producer_records_failed_total", "counter", "Deliveries that failed.",
      rill_producer_stats_t, failed, '8'),
    F("rill_producer_errors_total", "counter", "Errors librdkafka reported (retriable too).",
      rill_producer_stats_t, errors, '8'),
    F("rill_producer_inflight_records", "gauge", "Records handed to librdkafka, not delivered.",
      rill_producer_stats_t, inflight, '4'),
    F("rill_producer_connected", "gauge", "1 while the sink reaches its brokers.",
      rill_producer_stats_t, connected, 'i'),
    F("rill_txn_committed_total", "counter", "Transactions committed (transactional sinks).",
      rill_producer_stats_t, txn_committed, '8'),
    F("rill_txn_aborted_total", "counter", "Transactions aborted, each followed by a rewind.",
      rill_producer_stats_t, txn_aborted, '8'),
    F("rill_txn_records_committed_total", "counter", "Records produced in committed transactions.",
      rill_producer_stats_t, txn_records_committed, '8'),
    F("rill_txn_records_aborted_total", "counter", "Records produced in aborted transactions.",
      rill_producer_stats_t, txn_records_aborted, '8'),
    F("rill_txn_stale_dropped_total", "counter",
      "Records dropped unproduced: their input was from before a rewind.", rill_producer_stats_t,
      txn_stale_dropped, '8'),
    F("rill_txn_retries_total", "counter", "Transactional calls retried (retriable errors).",
      rill_producer_stats_t, txn_retries, '8'),
};

static const field_t store_fields[] = {
    F("rill_store_bytes", "gauge", "Bytes the store holds (LMDB: of the map in use).",
      rill_store_stats_t, bytes, '8'),
    F("rill_store_commits_total", "counter", "Store transactions committed.", rill_store_stats_t,
      commits, '8'),
    F("rill_store_aborts_total", "counter", "Store transactions aborted.", rill_store_stats_t,
      aborts, '8'),
    F("rill_store_late_records_total", "counter", "Records that came after their windows closed.",
      rill_store_stats_t, late, '8'),
    F("rill_store_windows_closed_total", "counter", "Windows closed (final results made).",
      rill_store_stats_t, windows_closed, '8'),
    F("rill_store_restoring_partitions", "gauge", "Partitions being restored now.",
      rill_store_stats_t, restoring, '4'),
    F("rill_store_restored_records_total", "counter", "Changelog records applied by restores.",
      rill_store_stats_t, restored, '8'),
    F("rill_store_restores_total", "counter", "Partitions restored from the changelog.",
      rill_store_stats_t, restores, '8'),
};

static const field_t table_fields[] = {
    F("rill_table_keys", "gauge", "Keys in the table now.", rill_table_stats_t, keys, '8'),
    F("rill_table_records_total", "counter", "Records applied to the table.", rill_table_stats_t,
      records, '8'),
    F("rill_table_caught_up", "gauge", "1 once the table has caught up with its topic.",
      rill_table_stats_t, caught_up, 'i'),
    F("rill_table_followed_partitions", "gauge", "Partitions the table follows now.",
      rill_table_stats_t, followed, 'I'),
};

#define N(a) (sizeof(a) / sizeof((a)[0]))

static const char *group_of(const obs_stage_t *st)
{
    return st->cs.group;
}

/* Which stats struct of a stage a family reads: its actor's, its Kafka
 * source's or its Kafka sink's; NULL when the stage has none now. */
enum { OF_ACTOR, OF_CONSUMER, OF_PRODUCER };

static const void *stats_of(const obs_stage_t *st, int of)
{
    switch (of) {
    case OF_ACTOR:
        return st->have_actor ? (const void *)&st->astats : NULL;
    case OF_CONSUMER:
        return st->have_cs ? (const void *)&st->cs : NULL;
    default:
        return st->have_ps ? (const void *)&st->ps : NULL;
    }
}

/* The labels of a stage's samples: pipeline, stage and, for a Kafka
 * source, group. */
#define STAGE_LABELS(p, st, of)                                                                    \
    "pipeline", (p)->info.name, "stage", (st)->info.name, (of) == OF_CONSUMER ? "group" : NULL,    \
        (of) == OF_CONSUMER ? group_of(st) : NULL

/* The families fs of the stages' struct of. */
static void stage_fields(obs_buf_t *b, const obs_snap_t *s, const field_t *fs, size_t nf, int of)
{
    for (size_t f = 0; f < nf; f++) {
        family(b, fs[f].name, fs[f].type, fs[f].help);
        for (int i = 0; i < s->npipes; i++)
            for (int j = 0; j < s->pipes[i].nstages; j++) {
                const obs_stage_t *st = &s->pipes[i].stages[j];
                const void *v = stats_of(st, of);
                if (!v)
                    continue;
                sample(b, fs[f].name, NULL, STAGE_LABELS(&s->pipes[i], st, of));
                value(b, field_value(v, &fs[f]));
            }
    }
}

/* A histogram family: the rill_hist_t at hist_off in the stages' struct of. */
static void stage_hist(obs_buf_t *b, const obs_snap_t *s, const char *name, const char *help,
                       int of, size_t hist_off)
{
    family(b, name, "histogram", help);
    for (int i = 0; i < s->npipes; i++)
        for (int j = 0; j < s->pipes[i].nstages; j++) {
            const obs_stage_t *st = &s->pipes[i].stages[j];
            const char *v = stats_of(st, of);
            if (v)
                histogram(b, name, (const rill_hist_t *)(const void *)(v + hist_off),
                          STAGE_LABELS(&s->pipes[i], st, of));
        }
}

static void stage_families(obs_buf_t *b, const obs_snap_t *s)
{
    stage_fields(b, s, actor_fields, N(actor_fields), OF_ACTOR);
    stage_fields(b, s, consumer_fields, N(consumer_fields), OF_CONSUMER);
    for (size_t f = 0; f < N(part_fields); f++) {
        family(b, part_fields[f].name, part_fields[f].type, part_fields[f].help);
        for (int i = 0; i < s->npipes; i++)
            for (int j = 0; j < s->pipes[i].nstages; j++) {
                const obs_stage_t *st = &s->pipes[i].stages[j];
                for (size_t k = 0; k < st->nparts; k++) {
                    const rill_partition_stats_t *ps = &st->parts[k];
                    double v = field_value(ps, &part_fields[f]);
                    if (part_fields[f].width == 'l' && v < 0)
                        continue; /* unknown: no sample */
                    char pn[16];
                    snprintf(pn, sizeof(pn), "%d", (int)ps->partition);
                    sample(b, part_fields[f].name, NULL, "group", group_of(st), "topic", ps->topic,
                           "partition", pn);
                    value(b, v);
                }
            }
    }
    stage_hist(b, s, "rill_commit_latency_seconds",
               "Time from an offset commit's request to its result.", OF_CONSUMER,
               offsetof(rill_consumer_stats_t, commit_latency));
    stage_hist(b, s, "rill_e2e_latency_seconds",
               "Time from a record's Kafka timestamp to its confirm reaching the source.",
               OF_CONSUMER, offsetof(rill_consumer_stats_t, e2e_latency));
    stage_fields(b, s, producer_fields, N(producer_fields), OF_PRODUCER);
    stage_hist(b, s, "rill_delivery_latency_seconds",
               "Time from a record's hand-off to librdkafka to its delivery report.", OF_PRODUCER,
               offsetof(rill_producer_stats_t, delivery_latency));
    stage_hist(b, s, "rill_txn_commit_seconds",
               "Time from a transaction's commit decision to EndTxn's answer.", OF_PRODUCER,
               offsetof(rill_producer_stats_t, txn_latency));
    family(b, "rill_pipeline_runs_total", "counter",
           "Runs of the pipeline started (restarts + 1).");
    for (int i = 0; i < s->npipes; i++) {
        sample(b, "rill_pipeline_runs_total", NULL, "pipeline", s->pipes[i].info.name, NULL, NULL,
               NULL, NULL);
        value(b, s->pipes[i].info.runs);
    }
}

static void tree_samples(obs_buf_t *b, const char *sup, const obs_node_t *kids, size_t n, int what)
{
    for (size_t i = 0; i < n; i++) {
        sample(b,
               what == 0   ? "rill_supervisor_restarts_total"
               : what == 1 ? "rill_supervisor_child_restarting"
                           : "rill_supervisor_child_running",
               NULL, "supervisor", sup, "child", kids[i].id, NULL, NULL);
        value(b, what == 0   ? (double)kids[i].restarts
                 : what == 1 ? (double)kids[i].restarting
                             : (double)kids[i].running);
        tree_samples(b, kids[i].id, kids[i].kids, kids[i].nkids, what);
    }
}

static void fields_of(obs_buf_t *b, const field_t *fs, size_t nf, const char *label,
                      const void *base, size_t stride, size_t name_off, size_t st_off,
                      size_t ok_off, int n)
{
    for (size_t f = 0; f < nf; f++) {
        family(b, fs[f].name, fs[f].type, fs[f].help);
        for (int i = 0; i < n; i++) {
            const char *e = (const char *)base + stride * (size_t)i;
            int ok;
            memcpy(&ok, e + ok_off, sizeof(ok));
            if (!ok)
                continue;
            sample(b, fs[f].name, NULL, label, e + name_off, NULL, NULL, NULL, NULL);
            value(b, field_value(e + st_off, &fs[f]));
        }
    }
}

void obs_render_prom(const obs_snap_t *s, obs_buf_t *b)
{
    family(b, "rill_live", "gauge", "1 while no watched supervisor or pipeline has given up.");
    obs_printf(b, "rill_live %d\n", s->live);
    family(b, "rill_ready", "gauge", "1 while the service is ready (see /health/ready).");
    obs_printf(b, "rill_ready %d\n", s->ready);
    family(b, "rill_actors_alive", "gauge", "Actors alive now.");
    obs_printf(b, "rill_actors_alive %u\n", s->sys.alive);
    family(b, "rill_actors_spawned_total", "counter", "Actors ever started.");
    obs_printf(b, "rill_actors_spawned_total %" PRIu64 "\n", s->sys.spawned);
    family(b, "rill_dead_letters_total", "counter", "Messages released undelivered.");
    obs_printf(b, "rill_dead_letters_total %" PRIu64 "\n", s->sys.dead_letters);
    family(b, "rill_executor_busy_seconds_total", "counter",
           "Time the executor spent running actors.");
    for (int i = 0; i < s->nexec; i++)
        obs_printf(b, "rill_executor_busy_seconds_total{executor=\"%d\"} %.9g\n", i,
                   (double)s->exec[i].busy_ns / 1e9);
    stage_families(b, s);
    static const char *const tree_names[] = {"rill_supervisor_restarts_total",
                                             "rill_supervisor_child_restarting",
                                             "rill_supervisor_child_running"};
    static const char *const tree_types[] = {"counter", "gauge", "gauge"};
    static const char *const tree_help[] = {
        "Times the supervisor restarted the child after it exited.",
        "1 while the child waits in restart backoff.", "1 while the child runs."};
    for (int w = 0; w < 3; w++) {
        family(b, tree_names[w], tree_types[w], tree_help[w]);
        for (int i = 0; i < s->nroots; i++)
            tree_samples(b, s->roots[i].name, s->roots[i].kids, s->roots[i].nkids, w);
    }
    fields_of(b, store_fields, N(store_fields), "store", s->stores, sizeof(s->stores[0]),
              offsetof(obs_store_t, name), offsetof(obs_store_t, st), offsetof(obs_store_t, ok),
              s->nstores);
    fields_of(b, table_fields, N(table_fields), "table", s->tables, sizeof(s->tables[0]),
              offsetof(obs_table_t, name), offsetof(obs_table_t, st), offsetof(obs_table_t, ok),
              s->ntables);
}
