/*
 * The HTTP endpoint (include/rill/observe.h): libmicrohttpd with one
 * polling thread of its own (epoll or poll, whichever it picks), which
 * renders each answer by asking the observer, as any thread outside the
 * executors may. A scrape therefore never runs on an executor, and a slow
 * or hostile client costs a connection slot, not an executor.
 *
 * Every request is decided on its headers alone, at the access handler's
 * first call: the endpoint is read-only, so a request that announces a
 * body (Content-Length > 0, or a chunked upload) is refused with 413
 * without its body being read (libmicrohttpd then closes the connection).
 * The order of the checks: body (413), method (405), token (401), path
 * (404). Requests libmicrohttpd itself finds malformed or too large
 * (request line, headers beyond the connection's memory limit) are
 * answered by it with a 4xx and never reach the handler, so they are not
 * in rill_http_requests().
 *
 * The page's script and style sheet (/app.js, /app.css) are served
 * without the token: they are the same in every service and carry none of
 * its data, and a browser that opened /?token=... cannot add the token to
 * the requests for them. Because they are files of their own, the page's
 * Content-Security-Policy needs no 'unsafe-inline'.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <microhttpd.h>

#include <rill/observe.h>

#include "../actors/seam.h"
#include "page.h"

#define LOG_FACILITY            "observe.http"
/* Defaults of rill_http_opts_t. */
#define DEFAULT_MAX_CONNECTIONS 16
/* Per connection: request line and headers must fit in this (beyond it,
 * libmicrohttpd answers 431 or 414 itself). */
#define CONNECTION_MEMORY_LIMIT (32 * 1024)
/* An idle or stalled connection is closed after this many seconds. */
#define CONNECTION_TIMEOUT_S    10

struct rill_http {
    rill_observer_t *obs;
    struct MHD_Daemon *daemon;
    char *token;      /* NULL: no token needed */
    size_t token_len; /* strlen(token) */
    uint16_t port;
    /* Counters only: relaxed is enough, nothing is published through them. */
    atomic_uint_fast64_t requests;
    atomic_uint_fast64_t rejected;
};

/* ---- the listen address ---- */

/* Parse "HOST:PORT" | "HOST" | ":PORT" (HOST: IPv4 dotted quad or
 * "localhost") into *sa. */
static rill_err_t parse_listen(const char *listen, struct sockaddr_in *sa, char *errstr,
                               size_t errstr_size)
{
    memset(sa, 0, sizeof(*sa));
    sa->sin_family = AF_INET;
    sa->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (!listen)
        return RILL_OK;
    if (!*listen)
        return rill__fail(RILL_EINVAL, errstr, errstr_size,
                          "the listen address is empty: give \"HOST:PORT\", \"HOST\" or \":PORT\"");
    const char *colon = strchr(listen, ':');
    size_t host_len = colon ? (size_t)(colon - listen) : strlen(listen);
    char host[INET_ADDRSTRLEN + 16];
    if (host_len >= sizeof(host))
        return rill__fail(RILL_EINVAL, errstr, errstr_size,
                          "listen address \"%.64s\": the host is not an IPv4 address or "
                          "\"localhost\"",
                          listen);
    memcpy(host, listen, host_len);
    host[host_len] = '\0';
    if (host_len > 0 && strcmp(host, "localhost") != 0 &&
        inet_pton(AF_INET, host, &sa->sin_addr) != 1)
        return rill__fail(RILL_EINVAL, errstr, errstr_size,
                          "listen address \"%.64s\": \"%s\" is not an IPv4 address "
                          "(a.b.c.d) or \"localhost\"",
                          listen, host);
    if (!colon)
        return RILL_OK;
    const char *port = colon + 1;
    unsigned long value = 0;
    size_t digits = 0;
    for (; isdigit((unsigned char)port[digits]) && digits < 6; digits++)
        value = value * 10 + (unsigned long)(port[digits] - '0');
    if (digits == 0 || port[digits] != '\0' || value > 65535)
        return rill__fail(RILL_EINVAL, errstr, errstr_size,
                          "listen address \"%.64s\": the port must be a number from 0 to 65535",
                          listen);
    sa->sin_port = htons((uint16_t)value);
    return RILL_OK;
}

/* ---- the token ---- */

/* Whether given (length n) is the token, in a time that depends on the
 * token's length only, never on where the first difference is. */
static int token_matches(const rill_http_t *h, const char *given, size_t n)
{
    unsigned diff = n != h->token_len;
    for (size_t i = 0; i < h->token_len; i++) {
        unsigned char g = i < n ? (unsigned char)given[i] : 0;
        diff |= (unsigned)(g ^ (unsigned char)h->token[i]);
    }
    return diff == 0;
}

static int authorized(const rill_http_t *h, struct MHD_Connection *c)
{
    if (!h->token)
        return 1;
    const char *auth =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (auth && !strncasecmp(auth, "Bearer ", 7)) {
        const char *t = auth + 7;
        while (*t == ' ')
            t++;
        size_t n = strlen(t);
        while (n > 0 && t[n - 1] == ' ')
            n--;
        if (token_matches(h, t, n))
            return 1;
    }
    const char *query = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "token");
    return query && token_matches(h, query, strlen(query));
}

/* ---- answers ---- */

/* What every answer carries. */
static void add_common_headers(struct MHD_Response *r, const char *content_type)
{
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
}

/* Queue status with body (len bytes). own: body was malloc'ed and is
 * libmicrohttpd's to free; else it is static. */
static enum MHD_Result answer(rill_http_t *h, struct MHD_Connection *c, unsigned status,
                              const char *content_type, const void *body, size_t len, int own,
                              const char *extra_name, const char *extra_value)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(
        len, (void *)body, own ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (!r) {
        if (own)
            free((void *)body);
        return MHD_NO; /* libmicrohttpd closes the connection */
    }
    add_common_headers(r, content_type);
    if (extra_name)
        MHD_add_response_header(r, extra_name, extra_value);
    enum MHD_Result ok = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    atomic_fetch_add_explicit(&h->requests, 1, memory_order_relaxed);
    if (status >= 400 && status < 500)
        atomic_fetch_add_explicit(&h->rejected, 1, memory_order_relaxed);
    return ok;
}

static enum MHD_Result answer_text(rill_http_t *h, struct MHD_Connection *c, unsigned status,
                                   const char *text, const char *extra_name,
                                   const char *extra_value)
{
    return answer(h, c, status, "text/plain; charset=utf-8", text, strlen(text), 0, extra_name,
                  extra_value);
}

/* A rendered document (malloc'ed, or NULL when rendering failed). */
static enum MHD_Result answer_rendered(rill_http_t *h, struct MHD_Connection *c, unsigned status,
                                       const char *content_type, char *doc, rill_err_t err)
{
    if (err || !doc) {
        free(doc);
        rill_log(RILL_LOG_ERR, LOG_FACILITY, "rendering an answer failed: %s",
                 rill_err2str(err ? err : RILL_ENOMEM));
        return answer_text(h, c, MHD_HTTP_INTERNAL_SERVER_ERROR, "rendering failed\n", NULL, NULL);
    }
    return answer(h, c, status, content_type, doc, strlen(doc), 1, NULL, NULL);
}

#define JSON_TYPE "application/json"

static enum MHD_Result serve_health(rill_http_t *h, struct MHD_Connection *c, int ready)
{
    char *json = NULL;
    int ok = ready ? rill_observer_ready(h->obs, &json) : rill_observer_live(h->obs, &json);
    return answer_rendered(h, c, ok ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, JSON_TYPE, json,
                           RILL_OK);
}

/* The page: no inline script or style, nothing from elsewhere. */
#define PAGE_CSP                                                                                   \
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "              \
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

static enum MHD_Result serve_file(rill_http_t *h, struct MHD_Connection *c, const char *type,
                                  const unsigned char *data, size_t len)
{
    return answer(h, c, MHD_HTTP_OK, type, data, len, 0, "Content-Security-Policy", PAGE_CSP);
}

/* The routes that need the token (every one but the page's two files). */
static enum MHD_Result serve_route(rill_http_t *h, struct MHD_Connection *c, const char *url)
{
    char *doc = NULL;
    rill_err_t err;
    if (!strcmp(url, "/metrics")) {
        err = rill_observer_metrics(h->obs, &doc, NULL);
        return answer_rendered(h, c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", doc,
                               err);
    }
    if (!strcmp(url, "/health/live"))
        return serve_health(h, c, 0);
    if (!strcmp(url, "/health/ready"))
        return serve_health(h, c, 1);
    if (!strcmp(url, "/tree") || !strcmp(url, "/tree.dot")) {
        int dot = url[5] == '.';
        err = rill_observer_tree(h->obs, dot, &doc);
        return answer_rendered(h, c, MHD_HTTP_OK,
                               dot ? "text/vnd.graphviz; charset=utf-8" : JSON_TYPE, doc, err);
    }
    if (!strcmp(url, "/api/status")) {
        err = rill_observer_status(h->obs, &doc);
        return answer_rendered(h, c, MHD_HTTP_OK, JSON_TYPE, doc, err);
    }
    if (!strcmp(url, "/") || !strcmp(url, "/index.html"))
        return serve_file(h, c, "text/html; charset=utf-8", rill__page_index_html,
                          rill__page_index_html_len);
    return answer_text(h, c, MHD_HTTP_NOT_FOUND, "not found\n", NULL, NULL);
}

/* Whether the request announces a body. */
static int has_body(struct MHD_Connection *c)
{
    const char *te =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING);
    if (te)
        return 1; /* chunked, or anything else: a body follows */
    const char *cl =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (!cl)
        return 0;
    for (const char *p = cl; *p; p++)
        if (*p != '0' && *p != ' ')
            return 1; /* not a plain zero: a body, or a malformed length */
    return 0;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    rill_http_t *h = cls;
    (void)version;
    (void)upload_data;
    if (*con_cls) {
        /* A later call of a request already answered (its body, which
         * libmicrohttpd discards): nothing more to say. */
        *upload_data_size = 0;
        return MHD_YES;
    }
    *con_cls = h; /* marks the request as answered */
    if (has_body(c))
        return answer_text(h, c, MHD_HTTP_CONTENT_TOO_LARGE,
                           "this endpoint takes no request body\n", NULL, NULL);
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return answer_text(h, c, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET and HEAD\n",
                           MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    if (!strcmp(url, "/app.js"))
        return serve_file(h, c, "text/javascript; charset=utf-8", rill__page_app_js,
                          rill__page_app_js_len);
    if (!strcmp(url, "/app.css"))
        return serve_file(h, c, "text/css; charset=utf-8", rill__page_app_css,
                          rill__page_app_css_len);
    if (!authorized(h, c))
        return answer_text(h, c, MHD_HTTP_UNAUTHORIZED, "a bearer token is needed\n",
                           MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"rill\"");
    return serve_route(h, c, url);
}

/* libmicrohttpd's own error lines (most are about one client: a reset
 * connection, a request too large) go to the log hook at INFO; failures
 * to start are reported through errstr by rill_http_start. */
static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char line[512];
    vsnprintf(line, sizeof(line), fmt, ap);
    size_t n = strlen(line);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    rill_log(RILL_LOG_INFO, LOG_FACILITY, "libmicrohttpd: %s", line);
}

/* ---- the endpoint ---- */

rill_err_t rill_http_start(rill_observer_t *obs, const rill_http_opts_t *opts, rill_http_t **out,
                           char *errstr, size_t errstr_size)
{
    if (!obs || !out)
        return rill__fail(RILL_EINVAL, errstr, errstr_size, "observer or out is NULL");
    *out = NULL;
    if (rill__tls_exec)
        return rill__fail(RILL_ESTATE, errstr, errstr_size,
                          "rill_http_start cannot run on an executor (its stop waits for "
                          "requests that ask actors)");
    rill_http_opts_t o = opts ? *opts : (rill_http_opts_t){0};
    struct sockaddr_in sa;
    rill_err_t err = parse_listen(o.listen, &sa, errstr, errstr_size);
    if (err)
        return err;
    if (o.token && !*o.token)
        return rill__fail(RILL_EINVAL, errstr, errstr_size,
                          "the token is empty: give none, or a non-empty one");
    rill_http_t *h = calloc(1, sizeof(*h));
    if (!h || (o.token && !(h->token = strdup(o.token)))) {
        free(h);
        return rill__fail(RILL_ENOMEM, errstr, errstr_size, "out of memory");
    }
    h->obs = obs;
    h->token_len = h->token ? strlen(h->token) : 0;
    atomic_init(&h->requests, 0);
    atomic_init(&h->rejected, 0);
    unsigned max_conn = o.max_connections ? o.max_connections : DEFAULT_MAX_CONNECTIONS;
    h->daemon = MHD_start_daemon(
        MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL, on_request, h,
        MHD_OPTION_SOCK_ADDR, (const struct sockaddr *)&sa, MHD_OPTION_CONNECTION_LIMIT, max_conn,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CONNECTION_MEMORY_LIMIT,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)CONNECTION_TIMEOUT_S,
        /* Strict: HTTP/1.1 without Host, spaces in the URL: 400. Every
         * client this endpoint is for (Prometheus, probes, browsers) is
         * well-behaved; the others are better refused. */
        MHD_OPTION_STRICT_FOR_CLIENT, 1, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, NULL,
        MHD_OPTION_END);
    char addr[INET_ADDRSTRLEN] = "?";
    inet_ntop(AF_INET, &sa.sin_addr, addr, sizeof(addr));
    if (!h->daemon) {
        free(h->token);
        free(h);
        return rill__fail(RILL_EIO, errstr, errstr_size,
                          "cannot listen on %s:%u (address in use or not local?)", addr,
                          (unsigned)ntohs(sa.sin_port));
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT);
    h->port = info ? info->port : ntohs(sa.sin_port);
    rill_log(RILL_LOG_NOTICE, LOG_FACILITY, "serving http://%s:%u/ (status page; /metrics%s)", addr,
             (unsigned)h->port, h->token ? "; a bearer token is needed" : "");
    *out = h;
    return RILL_OK;
}

uint16_t rill_http_port(const rill_http_t *http)
{
    return http ? http->port : 0;
}

uint64_t rill_http_requests(const rill_http_t *http, uint64_t *rejected)
{
    if (rejected)
        *rejected = http ? atomic_load_explicit(&http->rejected, memory_order_relaxed) : 0;
    return http ? atomic_load_explicit(&http->requests, memory_order_relaxed) : 0;
}

void rill_http_stop(rill_http_t *http)
{
    if (!http)
        return;
    if (rill__tls_exec) {
        /* Stopping joins the endpoint's thread, which may be waiting for
         * an actor of this very executor. */
        rill_log(RILL_LOG_ERR, LOG_FACILITY,
                 "rill_http_stop cannot run on an executor; the endpoint keeps serving");
        return;
    }
    MHD_stop_daemon(http->daemon);
    free(http->token);
    free(http);
}
