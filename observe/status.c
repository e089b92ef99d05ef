/*
 * A snapshot as the status page's JSON document (/api/status), and the
 * supervision tree as JSON (/tree) and DOT (/tree.dot). The layout is
 * documented in docs/observability.md; the page (observe/page/app.js)
 * reads it, and computes rates from two documents' totals.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "obs_int.h"

static void lat(obs_buf_t *b, const char *name, const rill_hist_t *h)
{
    obs_printf(b, ",\"%s\":{\"count\":%" PRIu64 ",\"p50\":%.6f,\"p90\":%.6f,\"p99\":%.6f}", name,
               h->count, rill_hist_quantile(h, 0.5), rill_hist_quantile(h, 0.9),
               rill_hist_quantile(h, 0.99));
}

static const char *end_name(const obs_pipe_t *p)
{
    if (!p->info.started && rill_aid_is_none(p->info.supervisor))
        return "idle";
    if (!p->ended)
        return "running";
    switch (p->res.end) {
    case RILL_PIPELINE_COMPLETED:
        return "completed";
    case RILL_PIPELINE_FAILED:
        return "failed";
    case RILL_PIPELINE_STOPPED:
        return "stopped";
    default:
        return "running";
    }
}

static void consumer_json(obs_buf_t *b, const obs_stage_t *st)
{
    const rill_consumer_stats_t *c = &st->cs;
    obs_printf(b, "{\"stage\":");
    obs_json_str(b, st->info.name);
    obs_printf(b, ",\"group\":");
    obs_json_str(b, c->group);
    obs_printf(
        b,
        ",\"polled\":%" PRIu64 ",\"emitted\":%" PRIu64 ",\"confirmed\":%" PRIu64
        ",\"committed\":%" PRIu64 ",\"redelivered\":%" PRIu64 ",\"dead_lettered\":%" PRIu64
        ",\"rebalances\":%" PRIu64 ",\"paused\":%s,\"pauses\":%" PRIu64
        ",\"assigned\":%u,\"buffered\":%u,\"unconfirmed\":%u,\"connected\":%s,\"lag\":%" PRId64,
        c->polled, c->emitted, c->confirmed, c->committed, c->redelivered, c->dead_lettered,
        c->rebalances, c->paused ? "true" : "false", c->pauses, c->assigned, c->buffered,
        c->unconfirmed, c->connected ? "true" : "false", c->lag);
    obs_printf(b, ",\"last_error\":");
    obs_json_str(b, c->last_error);
    obs_printf(b, ",\"partitions\":[");
    for (size_t k = 0; k < st->nparts; k++) {
        const rill_partition_stats_t *p = &st->parts[k];
        obs_printf(b, "%s{\"topic\":", k ? "," : "");
        obs_json_str(b, p->topic);
        obs_printf(b,
                   ",\"partition\":%d,\"lag\":%" PRId64 ",\"end_offset\":%" PRId64
                   ",\"committed_offset\":%" PRId64 ",\"position\":%" PRId64 ",\"paused\":%s}",
                   (int)p->partition, p->lag, p->end_offset, p->committed_offset, p->position,
                   p->paused ? "true" : "false");
    }
    obs_printf(b, "]");
    lat(b, "commit_latency", &c->commit_latency);
    lat(b, "e2e_latency", &c->e2e_latency);
    obs_printf(b, "}");
}

static void producer_json(obs_buf_t *b, const obs_stage_t *st)
{
    const rill_producer_stats_t *p = &st->ps;
    obs_printf(b, "{\"stage\":");
    obs_json_str(b, st->info.name);
    obs_printf(b,
               ",\"requested\":%" PRIu64 ",\"delivered\":%" PRIu64 ",\"failed\":%" PRIu64
               ",\"inflight\":%u,\"connected\":%s",
               p->requested, p->delivered, p->failed, p->inflight, p->connected ? "true" : "false");
    obs_printf(b, ",\"last_error\":");
    obs_json_str(b, p->last_error);
    lat(b, "delivery_latency", &p->delivery_latency);
    obs_printf(b, "}");
}

static void pipe_json(obs_buf_t *b, const obs_pipe_t *p)
{
    obs_printf(b, "{\"name\":");
    obs_json_str(b, p->info.name);
    obs_printf(b, ",\"runs\":%u,\"restarts\":%u,\"end\":\"%s\"", p->info.runs,
               p->info.runs ? p->info.runs - 1 : 0, end_name(p));
    if (p->ended) {
        obs_printf(b, ",\"end_text\":");
        obs_json_str(b, p->res.text);
    }
    obs_printf(b, ",\"stages\":[");
    for (int j = 0; j < p->nstages; j++) {
        const obs_stage_t *st = &p->stages[j];
        obs_printf(b, "%s{\"index\":%d,\"name\":", j ? "," : "", j);
        obs_json_str(b, st->info.name);
        obs_printf(b, ",\"kind\":");
        obs_json_str(b, st->info.kind);
        obs_printf(b, ",\"running\":%s", st->have_actor ? "true" : "false");
        if (st->have_actor)
            obs_printf(b,
                       ",\"mailbox_depth\":%u,\"mailbox_capacity\":%u,\"mailbox_hwm\":%u,"
                       "\"processed\":%" PRIu64 ",\"refused\":%" PRIu64 ",\"executor\":%d",
                       st->astats.mailbox_depth, st->astats.mailbox_capacity,
                       st->astats.mailbox_hwm, st->astats.processed, st->astats.refused,
                       st->astats.executor);
        obs_printf(b, "}");
    }
    obs_printf(b, "],\"consumers\":[");
    int first = 1;
    for (int j = 0; j < p->nstages; j++)
        if (p->stages[j].have_cs) {
            obs_printf(b, "%s", first ? "" : ",");
            consumer_json(b, &p->stages[j]);
            first = 0;
        }
    obs_printf(b, "],\"producers\":[");
    first = 1;
    for (int j = 0; j < p->nstages; j++)
        if (p->stages[j].have_ps) {
            obs_printf(b, "%s", first ? "" : ",");
            producer_json(b, &p->stages[j]);
            first = 0;
        }
    obs_printf(b, "]}");
}

static void nodes_json(obs_buf_t *b, const obs_node_t *kids, size_t n)
{
    obs_printf(b, "[");
    for (size_t i = 0; i < n; i++) {
        const obs_node_t *k = &kids[i];
        obs_printf(b, "%s{\"id\":", i ? "," : "");
        obs_json_str(b, k->id);
        obs_printf(b,
                   ",\"kind\":\"%s\",\"aid\":%" PRIu64
                   ",\"running\":%s,\"restarting\":%s,\"restarts\":%u,\"next_delay_ms\":%u",
                   k->supervisor ? "supervisor" : "worker", k->aid.id,
                   k->running ? "true" : "false", k->restarting ? "true" : "false", k->restarts,
                   k->next_delay_ms);
        obs_printf(
            b, ",\"last_exit\":{\"kind\":\"%s\",\"text\":", rill_exit_kind_name(k->last_exit.kind));
        obs_json_str(b, k->last_exit.text);
        obs_printf(b, "},\"children\":");
        nodes_json(b, k->kids, k->nkids);
        obs_printf(b, "}");
    }
    obs_printf(b, "]");
}

static void roots_json(obs_buf_t *b, const obs_snap_t *s)
{
    obs_printf(b, "[");
    for (int i = 0; i < s->nroots; i++) {
        const obs_root_t *r = &s->roots[i];
        obs_printf(b, "%s{\"id\":", i ? "," : "");
        obs_json_str(b, r->name);
        obs_printf(b, ",\"kind\":\"supervisor\",\"aid\":%" PRIu64 ",\"running\":%s", r->aid.id,
                   r->down ? "false" : "true");
        if (r->down) {
            obs_printf(b,
                       ",\"exit\":{\"kind\":\"%s\",\"text\":", rill_exit_kind_name(r->reason.kind));
            obs_json_str(b, r->reason.text);
            obs_printf(b, "}");
        }
        obs_printf(b, ",\"children\":");
        nodes_json(b, r->kids, r->nkids);
        obs_printf(b, "}");
    }
    obs_printf(b, "]");
}

void obs_render_tree_json(const obs_snap_t *s, obs_buf_t *b)
{
    obs_printf(b, "{\"roots\":");
    roots_json(b, s);
    obs_printf(b, "}\n");
}

/* A DOT id: the label escaped, quoted. */
static void dot_str(obs_buf_t *b, const char *s)
{
    obs_label(b, s);
}

static void nodes_dot(obs_buf_t *b, const char *parent, const obs_node_t *kids, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const obs_node_t *k = &kids[i];
        char id[96];
        snprintf(id, sizeof(id), "%s/%s", parent, k->id);
        char label[200];
        snprintf(label, sizeof(label), "%s\\n%s, %u restart%s", k->id,
                 k->restarting ? "restarting"
                 : k->running  ? "running"
                               : "stopped",
                 k->restarts, k->restarts == 1 ? "" : "s");
        obs_printf(b, "  ");
        dot_str(b, id);
        obs_printf(b, " [label=\"%s\", shape=%s%s];\n  ", label, k->supervisor ? "box" : "ellipse",
                   k->restarting ? ", color=red" : "");
        dot_str(b, parent);
        obs_printf(b, " -> ");
        dot_str(b, id);
        obs_printf(b, ";\n");
        nodes_dot(b, id, k->kids, k->nkids);
    }
}

void obs_render_tree_dot(const obs_snap_t *s, obs_buf_t *b)
{
    obs_printf(b, "digraph rill {\n  node [fontname=\"sans-serif\"];\n");
    for (int i = 0; i < s->nroots; i++) {
        const obs_root_t *r = &s->roots[i];
        obs_printf(b, "  ");
        dot_str(b, r->name);
        obs_printf(b, " [shape=box, style=bold%s];\n", r->down ? ", color=red" : "");
        nodes_dot(b, r->name, r->kids, r->nkids);
    }
    obs_printf(b, "}\n");
}

void obs_render_status(const rill_observer_t *obs, const obs_snap_t *s, obs_buf_t *b)
{
    obs_printf(b, "{\"service\":");
    obs_json_str(b, obs->service);
    obs_printf(b, ",\"time_ms\":%" PRId64 ",\"live\":{\"ok\":%s,\"reason\":", s->time_ms,
               s->live ? "true" : "false");
    obs_json_str(b, s->live_reason);
    obs_printf(b, "},\"ready\":{\"ok\":%s,\"reason\":", s->ready ? "true" : "false");
    obs_json_str(b, s->ready_reason);
    obs_printf(b,
               "},\"actors\":{\"alive\":%u,\"spawned\":%" PRIu64 ",\"dead_letters\":%" PRIu64 "}",
               s->sys.alive, s->sys.spawned, s->sys.dead_letters);
    obs_printf(b, ",\"executors\":[");
    for (int i = 0; i < s->nexec; i++)
        obs_printf(b, "%s{\"index\":%d,\"busy_ratio\":%.4f,\"busy_seconds\":%.3f}", i ? "," : "", i,
                   s->busy_ratio[i] < 0 ? 0.0 : s->busy_ratio[i], (double)s->exec[i].busy_ns / 1e9);
    obs_printf(b, "],\"pipelines\":[");
    for (int i = 0; i < s->npipes; i++) {
        obs_printf(b, "%s", i ? "," : "");
        pipe_json(b, &s->pipes[i]);
    }
    obs_printf(b, "],\"stores\":[");
    for (int i = 0; i < s->nstores; i++) {
        const obs_store_t *st = &s->stores[i];
        obs_printf(b, "%s{\"name\":", i ? "," : "");
        obs_json_str(b, st->name);
        obs_printf(b,
                   ",\"bytes\":%" PRIu64 ",\"commits\":%" PRIu64
                   ",\"restoring\":%u,\"restored\":%" PRIu64 ",\"late\":%" PRIu64
                   ",\"windows_closed\":%" PRIu64 "}",
                   st->st.bytes, st->st.commits, st->st.restoring, st->st.restored, st->st.late,
                   st->st.windows_closed);
    }
    obs_printf(b, "],\"tables\":[");
    for (int i = 0; i < s->ntables; i++) {
        const obs_table_t *t = &s->tables[i];
        obs_printf(b, "%s{\"name\":", i ? "," : "");
        obs_json_str(b, t->name);
        obs_printf(b, ",\"keys\":%" PRIu64 ",\"records\":%" PRIu64 ",\"caught_up\":%s}", t->st.keys,
                   t->st.records, t->st.caught_up ? "true" : "false");
    }
    obs_printf(b, "],\"tree\":");
    roots_json(b, s);
    obs_printf(b, "}\n");
}
