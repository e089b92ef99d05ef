/**
 * @file observe.h
 * Observability: what a running service shows to Prometheus, to probes
 * and to a person.
 *
 * An observer (rill_observer_t) is told what to watch: pipelines (their
 * stages, Kafka sources and sinks), supervisors (the tree, restarts,
 * liveness), stores and tables. It reads them only through their public
 * stats calls, when asked: nothing is added to any hot path by observing.
 * It renders:
 *
 *  - Prometheus text exposition (rill_observer_metrics());
 *  - liveness and readiness with a short JSON reason
 *    (rill_observer_live(), rill_observer_ready());
 *  - the supervision tree as JSON or DOT (rill_observer_tree());
 *  - one JSON document with everything, for the status page
 *    (rill_observer_status()).
 *
 * rill_http_start() serves all of these over HTTP (libmicrohttpd): opt-in,
 * on 127.0.0.1 unless another address is given, read-only (GET and HEAD
 * only), with an optional bearer token. Its threads are its own: a scrape
 * asks actors for their stats the way any outside thread does and never
 * runs on, or blocks, an executor.
 *
 * Metric names, labels and their cardinality are documented in
 * docs/observability.md.
 */
#ifndef RILL_OBSERVE_H
#define RILL_OBSERVE_H

#include <stddef.h>
#include <stdint.h>

#include <rill/actor.h>
#include <rill/kafka.h>
#include <rill/state.h>
#include <rill/stream.h>
#include <rill/supervisor.h>

#ifdef __cplusplus
extern "C" {
#endif

/** What a service shows (see the file comment). */
typedef struct rill_observer rill_observer_t;

/** A new observer of sys's actors. service (copied; NULL = "rill") names
 * the service in the status page and in the JSON documents. NULL for a
 * NULL sys or without memory. @locality any thread. */
RILL_API rill_observer_t *rill_observer_new(rill_system_t *sys, const char *service);

/** Watch a pipeline (built, started or not; it must outlive the
 * observer, or be removed first): its stages' mailboxes and counters, its
 * Kafka sources (lag, paused partitions, latencies) and sinks (in flight,
 * delivery latency); started supervised, its supervisor as a root of the
 * tree. RILL_EINVAL for NULL arguments, RILL_EFULL beyond 64 pipelines.
 * @locality any thread. */
RILL_API rill_err_t rill_observer_add_pipeline(rill_observer_t *obs, rill_pipeline_t *p);

/** Watch a supervisor as a root of the tree (its children, and theirs,
 * are found by asking it). Liveness follows the roots: once a root has
 * given up (ended abnormally), the service is not live. name (copied; NULL
 * = "supervisor") labels it; it is monitored when this returns.
 * RILL_EINVAL for NULL arguments or RILL_AID_NONE, RILL_EFULL beyond 64
 * roots, RILL_ESTATE on an executor.
 * @locality any thread except an executor thread (it asks the observer's
 * watcher actor). */
RILL_API rill_err_t rill_observer_add_supervisor(rill_observer_t *obs, rill_aid_t sup,
                                                 const char *name);

/** Watch a store (it must outlive the observer): its size, transactions,
 * restores and late records. name (copied) labels it. RILL_EINVAL for NULL
 * arguments, RILL_EFULL beyond 64 stores. @locality any thread. */
RILL_API rill_err_t rill_observer_add_store(rill_observer_t *obs, rill_store_t *store,
                                            const char *name);

/** Watch a table (it must outlive the observer): its keys, whether it has
 * caught up (readiness waits for that). name (copied) labels it.
 * RILL_EINVAL for NULL arguments, RILL_EFULL beyond 64 tables.
 * @locality any thread. */
RILL_API rill_err_t rill_observer_add_table(rill_observer_t *obs, rill_table_t *table,
                                            const char *name);

/** The Prometheus text exposition (version 0.0.4) of everything watched,
 * malloc'ed into *text (the caller frees it), its length in *len (may be
 * NULL). RILL_EINVAL for NULL arguments, RILL_ENOMEM.
 * @locality any thread except an executor thread (it asks actors). */
RILL_API rill_err_t rill_observer_metrics(rill_observer_t *obs, char **text, size_t *len);

/** Liveness: 1 while no watched root supervisor (or supervised pipeline)
 * has given up, else 0. *json (may be NULL; malloc'ed) gets a short
 * document: {"status":"live"|"dead","reason":"..."}.
 * @locality any thread except an executor thread. */
RILL_API int rill_observer_live(rill_observer_t *obs, char **json);

/** Readiness: 1 when the service is live, every watched Kafka source has
 * joined its group and holds an assignment (or its fixed partitions),
 * reaches its brokers, no watched child waits in restart backoff, every
 * watched table has caught up and no store is restoring; else 0. *json
 * (may be NULL; malloc'ed) gets {"status":"ready"|"not ready","reason":"..."},
 * the reason naming the first thing that is not ready.
 * @locality any thread except an executor thread. */
RILL_API int rill_observer_ready(rill_observer_t *obs, char **json);

/** The supervision tree under every root, as JSON (dot 0) or as one
 * Graphviz digraph (dot 1), malloc'ed into *out. @locality any thread
 * except an executor thread. */
RILL_API rill_err_t rill_observer_tree(rill_observer_t *obs, int dot, char **out);

/** Everything the status page shows, as one JSON document malloc'ed into
 * *out (totals, per-partition lag, paused partitions, mailboxes per stage,
 * latency percentiles, executors, the tree, stores, health). Its layout
 * is described in docs/observability.md. @locality any thread except an
 * executor thread. */
RILL_API rill_err_t rill_observer_status(rill_observer_t *obs, char **out);

/** Free the observer. Stop its HTTP endpoint first. NULL is a no-op.
 * @locality any thread. */
RILL_API void rill_observer_free(rill_observer_t *obs);

/** How the HTTP endpoint listens. A zeroed struct means the defaults. */
typedef struct rill_http_opts {
    /** "HOST:PORT" or "HOST" or ":PORT" (IPv4 dotted quad, or "localhost");
     * NULL = "127.0.0.1:0". Port 0 picks a free one (rill_http_port()). */
    const char *listen;
    /** When set (copied), every request must carry "Authorization: Bearer
     * <token>" (or, for the page in a browser, "?token=<token>"); 401
     * otherwise. The page's script and style sheet (/app.js, /app.css:
     * the same in every service, no data) are served without it. */
    const char *token;
    /** Connections served at once; 0 = 16. */
    uint32_t max_connections;
} rill_http_opts_t;

/** A running HTTP endpoint. */
typedef struct rill_http rill_http_t;

/**
 * Serve obs over HTTP (libmicrohttpd, one thread of its own):
 *
 *  - GET /metrics: Prometheus text;
 *  - GET /health/live, GET /health/ready: 200 or 503 with JSON;
 *  - GET /tree (JSON), GET /tree.dot (Graphviz);
 *  - GET /api/status: the status JSON (rill_observer_status());
 *  - GET /: the status page (HTML, CSS and JS served from the library,
 *    as /, /app.js and /app.css; it asks /api/status once a second).
 *
 * Anything else is answered with a 4xx and changes nothing: unknown paths
 * 404, other methods 405, a request with a body 413, a missing or wrong
 * token 401, malformed requests 400, headers beyond 32 KiB 431 or 414
 * (an HTTP version other than 1.0 and 1.1: 505). A connection idle for
 * 10 s is closed; beyond max_connections, new ones wait to be accepted.
 * opts may be NULL. Returns RILL_OK with *out, RILL_EINVAL (bad
 * arguments, a listen address that does not parse, an empty token),
 * RILL_ESTATE (on an executor) or RILL_EIO (cannot listen) with a
 * sentence in errstr.
 * @locality any thread except an executor thread.
 */
RILL_API rill_err_t rill_http_start(rill_observer_t *obs, const rill_http_opts_t *opts,
                                    rill_http_t **out, char *errstr, size_t errstr_size);

/** The port it listens on (0 for NULL). @locality any thread. */
RILL_API uint16_t rill_http_port(const rill_http_t *http);

/** Requests answered so far, and of those with a 4xx (NULL: 0).
 * @locality any thread. */
RILL_API uint64_t rill_http_requests(const rill_http_t *http, uint64_t *rejected);

/** Stop serving (waits for requests under way) and free it. NULL is a
 * no-op. @locality any thread except an executor thread. */
RILL_API void rill_http_stop(rill_http_t *http);

#ifdef __cplusplus
}
#endif

#endif /* RILL_OBSERVE_H */
