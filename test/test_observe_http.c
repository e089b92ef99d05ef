/*
 * The HTTP endpoint (rill_http_*): a real system and observer, the
 * endpoint on 127.0.0.1 and a port of its choosing, and raw HTTP over
 * sockets, so that what a client sends is exactly what the test says:
 * every route with its status and content type, HEAD, the refusals (404,
 * 405, 413, 401), malformed and oversized requests (after each of which a
 * good request is still answered), the connection limit, the listen
 * address parser and the counters.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "support/rtest.h"

#include <rill/observe.h>
#include <rill/rill.h>

#include "support/actor_kit.h"

#define IO_MS 10000

typedef struct fixture {
    rill_system_t *sys;
    rill_observer_t *obs;
    rill_http_t *http;
} fixture_t;

static void setup(fixture_t *f, const rill_http_opts_t *opts)
{
    char err[256] = "";
    f->sys = rill_system_new(&(rill_system_opts_t){.executors = 1}, err, sizeof(err));
    cr_assert_not_null(f->sys, "%s", err);
    cr_assert_eq(rill_system_start(f->sys), RILL_OK);
    f->obs = rill_observer_new(f->sys, "http-test");
    cr_assert_not_null(f->obs);
    rill_http_opts_t o = opts ? *opts : (rill_http_opts_t){0};
    if (!o.listen)
        o.listen = "127.0.0.1:0";
    cr_assert_eq(rill_http_start(f->obs, &o, &f->http, err, sizeof(err)), RILL_OK, "%s", err);
    cr_assert_neq(rill_http_port(f->http), 0);
}

static void teardown(fixture_t *f)
{
    rill_http_stop(f->http);
    rill_observer_free(f->obs);
    cr_assert_eq(rill_system_stop(f->sys, 10000), RILL_OK);
    rill_system_destroy(f->sys);
}

/* ---- raw HTTP ---- */

static int connect_to(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Send all of buf; 0, or -1 once the server stopped reading (which a
 * server refusing a request may do). */
static int send_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        struct pollfd pfd = {.fd = fd, .events = POLLOUT};
        if (poll(&pfd, 1, IO_MS) <= 0)
            return -1;
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Read until the server closes (or the deadline), into buf (NUL-ended);
 * the number of bytes read. */
static size_t recv_all(int fd, char *buf, size_t cap, int timeout_ms)
{
    size_t got = 0;
    int64_t deadline = kit_now_ms() + timeout_ms;
    while (got + 1 < cap) {
        int left = (int)(deadline - kit_now_ms());
        if (left <= 0)
            break;
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, left) <= 0)
            break;
        ssize_t n = recv(fd, buf + got, cap - 1 - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break; /* closed, or reset after a refusal */
        got += (size_t)n;
    }
    buf[got] = '\0';
    return got;
}

typedef struct reply {
    int status; /* 0: no status line (closed without an answer) */
    char head[4096];
    const char *body; /* into raw */
    size_t body_len;
    char raw[256 * 1024];
} reply_t;

/* Send request (len bytes) on a new connection and read the answer (the
 * requests ask for Connection: close, or are refused: either way the
 * server closes). */
static void exchange_within(uint16_t port, const void *request, size_t len, reply_t *r,
                            int timeout_ms)
{
    memset(r, 0, offsetof(reply_t, raw));
    r->raw[0] = '\0';
    int fd = connect_to(port);
    cr_assert_geq(fd, 0, "connect: %s", strerror(errno));
    send_all(fd, request, len); /* a refused request may be cut short */
    size_t n = recv_all(fd, r->raw, sizeof(r->raw), timeout_ms);
    close(fd);
    if (n >= 12 && !strncmp(r->raw, "HTTP/1.", 7))
        r->status = atoi(r->raw + 9);
    const char *end = strstr(r->raw, "\r\n\r\n");
    size_t head_len = end ? (size_t)(end - r->raw) : n;
    if (head_len >= sizeof(r->head))
        head_len = sizeof(r->head) - 1;
    memcpy(r->head, r->raw, head_len);
    r->head[head_len] = '\0';
    r->body = end ? end + 4 : r->raw + n;
    r->body_len = (size_t)(r->raw + n - r->body);
}

static void exchange(uint16_t port, const void *request, size_t len, reply_t *r)
{
    exchange_within(port, request, len, r, IO_MS);
}

static void request(uint16_t port, const char *method, const char *path, const char *extra,
                    reply_t *r)
{
    char req[2048];
    int n = snprintf(req, sizeof(req),
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%sConnection: close\r\n\r\n", method,
                     path, extra ? extra : "");
    exchange(port, req, (size_t)n, r);
}

/* The value of header name in r (static buffer; "" if absent). */
static const char *header(const reply_t *r, const char *name)
{
    static char value[512];
    value[0] = '\0';
    size_t nl = strlen(name);
    for (const char *line = strstr(r->head, "\r\n"); line; line = strstr(line + 2, "\r\n")) {
        const char *p = line + 2;
        if (!strncasecmp(p, name, nl) && p[nl] == ':') {
            p += nl + 1;
            while (*p == ' ')
                p++;
            size_t k = strcspn(p, "\r\n");
            if (k >= sizeof(value))
                k = sizeof(value) - 1;
            memcpy(value, p, k);
            value[k] = '\0';
            return value;
        }
    }
    return value;
}

/* A good request still gets its answer. */
static void assert_still_serving(uint16_t port)
{
    reply_t *r = malloc(sizeof(*r));
    request(port, "GET", "/health/live", NULL, r);
    cr_assert_eq(r->status, 200, "after a bad request: %.200s", r->raw);
    free(r);
}

/* ---- routes ---- */

static void assert_route(uint16_t port, const char *path, int status, const char *type)
{
    reply_t *r = malloc(sizeof(*r));
    request(port, "GET", path, NULL, r);
    cr_assert_eq(r->status, status, "GET %s: %.300s", path, r->raw);
    cr_assert_str_eq(header(r, "Content-Type"), type, "GET %s", path);
    cr_assert_str_eq(header(r, "Cache-Control"), "no-store", "GET %s", path);
    cr_assert_str_eq(header(r, "X-Content-Type-Options"), "nosniff", "GET %s", path);
    cr_assert_gt(r->body_len, 0, "GET %s has a body", path);
    cr_assert_eq((size_t)atol(header(r, "Content-Length")), r->body_len, "GET %s", path);
    free(r);
}

Test(observe_http, every_route_answers_with_its_status_and_type, .timeout = 120)
{
    fixture_t f;
    setup(&f, NULL);
    uint16_t port = rill_http_port(f.http);
    const char *json = "application/json";
    assert_route(port, "/metrics", 200, "text/plain; version=0.0.4; charset=utf-8");
    int live = rill_observer_live(f.obs, NULL), ready = rill_observer_ready(f.obs, NULL);
    assert_route(port, "/health/live", live ? 200 : 503, json);
    assert_route(port, "/health/ready", ready ? 200 : 503, json);
    assert_route(port, "/tree", 200, json);
    assert_route(port, "/tree.dot", 200, "text/vnd.graphviz; charset=utf-8");
    assert_route(port, "/api/status", 200, json);
    assert_route(port, "/", 200, "text/html; charset=utf-8");
    assert_route(port, "/app.js", 200, "text/javascript; charset=utf-8");
    assert_route(port, "/app.css", 200, "text/css; charset=utf-8");

    reply_t *r = malloc(sizeof(*r));
    request(port, "GET", "/api/status", NULL, r);
    cr_assert_eq(r->body[0], '{', "%.100s", r->body);
    /* The page: the embedded file, strict policy, its script and style
     * from the library. */
    request(port, "GET", "/", NULL, r);
    cr_assert_not_null(strstr(r->body, "<!doctype html>"));
    cr_assert_not_null(strstr(r->body, "src=\"app.js\""));
    cr_assert_not_null(strstr(r->body, "href=\"app.css\""));
    const char *csp = header(r, "Content-Security-Policy");
    cr_assert_not_null(strstr(csp, "default-src 'none'"), "%s", csp);
    cr_assert_null(strstr(csp, "unsafe-inline"), "%s", csp);
    request(port, "GET", "/app.js", NULL, r);
    cr_assert_not_null(strstr(r->body, "api/status"));
    free(r);
    teardown(&f);
}

Test(observe_http, head_answers_the_headers_without_a_body, .timeout = 120)
{
    fixture_t f;
    setup(&f, NULL);
    reply_t *r = malloc(sizeof(*r));
    request(rill_http_port(f.http), "HEAD", "/metrics", NULL, r);
    cr_assert_eq(r->status, 200, "%.300s", r->raw);
    cr_assert_str_eq(header(r, "Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
    cr_assert_gt(atol(header(r, "Content-Length")), 0, "the length of the GET answer");
    cr_assert_eq(r->body_len, 0, "no body: %.100s", r->body);
    request(rill_http_port(f.http), "HEAD", "/", NULL, r);
    cr_assert_eq(r->status, 200);
    cr_assert_eq(r->body_len, 0);
    free(r);
    teardown(&f);
}

Test(observe_http, unknown_paths_and_other_methods_are_refused, .timeout = 120)
{
    fixture_t f;
    setup(&f, NULL);
    uint16_t port = rill_http_port(f.http);
    reply_t *r = malloc(sizeof(*r));
    const char *unknown[] = {"/nope",         "/metrics/",      "/health",
                             "/api/status/x", "/../etc/passwd", "/tree.json"};
    for (size_t i = 0; i < sizeof(unknown) / sizeof(*unknown); i++) {
        request(port, "GET", unknown[i], NULL, r);
        cr_assert_eq(r->status, 404, "GET %s: %.200s", unknown[i], r->raw);
    }
    const char *methods[] = {"POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"};
    for (size_t i = 0; i < sizeof(methods) / sizeof(*methods); i++) {
        request(port, methods[i], "/metrics", NULL, r);
        cr_assert_eq(r->status, 405, "%s: %.200s", methods[i], r->raw);
        cr_assert_str_eq(header(r, "Allow"), "GET, HEAD", "%s", methods[i]);
    }
    assert_still_serving(port);
    free(r);
    teardown(&f);
}

Test(observe_http, a_request_with_a_body_is_refused_unread, .timeout = 120)
{
    fixture_t f;
    setup(&f, NULL);
    uint16_t port = rill_http_port(f.http);
    reply_t *r = malloc(sizeof(*r));
    /* Announces 10 MB and sends a little: refused without waiting for it. */
    const char *big = "GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\nabc";
    int64_t t0 = kit_now_ms();
    exchange(port, big, strlen(big), r);
    cr_assert_eq(r->status, 413, "%.200s", r->raw);
    cr_assert_lt(kit_now_ms() - t0, 5000, "answered before the body (or a timeout)");
    const char *post = "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
    exchange(port, post, strlen(post), r);
    cr_assert_eq(r->status, 413, "%.200s", r->raw);
    const char *chunked = "GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                          "5\r\nhello\r\n";
    exchange(port, chunked, strlen(chunked), r);
    cr_assert(r->status == 413 || r->status == 400, "%.200s", r->raw);
    /* An empty body is no body. */
    request(port, "GET", "/health/live", "Content-Length: 0\r\n", r);
    cr_assert_eq(r->status, 200, "%.200s", r->raw);
    assert_still_serving(port);
    free(r);
    teardown(&f);
}

Test(observe_http, the_token_is_required_when_set, .timeout = 120)
{
    fixture_t f;
    setup(&f, &(rill_http_opts_t){.token = "s3cret-t0ken"});
    uint16_t port = rill_http_port(f.http);
    reply_t *r = malloc(sizeof(*r));
    const char *routes[] = {"/metrics", "/health/live", "/api/status", "/", "/nope"};
    for (size_t i = 0; i < sizeof(routes) / sizeof(*routes); i++) {
        request(port, "GET", routes[i], NULL, r);
        cr_assert_eq(r->status, 401, "GET %s without a token: %.200s", routes[i], r->raw);
        cr_assert_not_null(strstr(header(r, "WWW-Authenticate"), "Bearer"));
    }
    const char *wrong[] = {"Authorization: Bearer s3cret-t0keN\r\n",
                           "Authorization: Bearer s3cret-t0ken-longer\r\n",
                           "Authorization: Bearer s3cret\r\n", "Authorization: Bearer \r\n",
                           "Authorization: Basic czNjcmV0LXQwa2Vu\r\n"};
    for (size_t i = 0; i < sizeof(wrong) / sizeof(*wrong); i++) {
        request(port, "GET", "/metrics", wrong[i], r);
        cr_assert_eq(r->status, 401, "%s", wrong[i]);
    }
    request(port, "GET", "/metrics", "Authorization: Bearer s3cret-t0ken\r\n", r);
    cr_assert_eq(r->status, 200, "%.200s", r->raw);
    request(port, "GET", "/metrics", "authorization: bearer s3cret-t0ken\r\n", r);
    cr_assert_eq(r->status, 200, "header and scheme names are case-insensitive");
    request(port, "GET", "/?token=s3cret-t0ken", NULL, r);
    cr_assert_eq(r->status, 200, "%.200s", r->raw);
    request(port, "GET", "/api/status?token=s3cret-t0ken", NULL, r);
    cr_assert_eq(r->status, 200);
    request(port, "GET", "/api/status?token=wrong", NULL, r);
    cr_assert_eq(r->status, 401);
    /* The page's own files carry no data: a browser loads them without. */
    request(port, "GET", "/app.js", NULL, r);
    cr_assert_eq(r->status, 200);
    request(port, "GET", "/app.css", NULL, r);
    cr_assert_eq(r->status, 200);
    free(r);
    teardown(&f);
}

/* ---- hostile clients ---- */

/* Refused with a 4xx (or, only where it says so, also_ok), or closed. */
static void assert_refused(uint16_t port, const void *req, size_t len, const char *what,
                           int also_ok)
{
    reply_t *r = malloc(sizeof(*r));
    exchange(port, req, len, r);
    int status = r->status;
    free(r);
    cr_assert(status == 0 || (status >= 400 && status < 500) || status == also_ok, "%s: status %d",
              what, status);
    assert_still_serving(port);
}

static void assert_refused_or_closed(uint16_t port, const void *req, size_t len, const char *what)
{
    assert_refused(port, req, len, what, 0);
}

Test(observe_http, malformed_requests_get_a_4xx_or_are_closed, .timeout = 180)
{
    fixture_t f;
    setup(&f, NULL);
    uint16_t port = rill_http_port(f.http);
    const char *garbage = "GARBAGE\r\n\r\n";
    assert_refused_or_closed(port, garbage, strlen(garbage), "GARBAGE");
    const char *no_version = "GET /metrics\r\n\r\n";
    assert_refused_or_closed(port, no_version, strlen(no_version), "no version");
    /* A well-formed request of an unknown version: libmicrohttpd answers
     * 505 (HTTP Version Not Supported) itself, as RFC 9110 says. */
    const char *bad_version = "GET /metrics HTTP/9.1\r\nHost: x\r\n\r\n";
    assert_refused(port, bad_version, strlen(bad_version), "HTTP/9.1", 505);
    const char *no_host = "GET /metrics HTTP/1.1\r\n\r\n";
    assert_refused_or_closed(port, no_host, strlen(no_host), "HTTP/1.1 without Host");
    const char *bad_header = "GET /metrics HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n";
    assert_refused_or_closed(port, bad_header, strlen(bad_header), "a header without a colon");

    unsigned char junk[4096];
    uint32_t x = 2463534242u;
    for (size_t i = 0; i < sizeof(junk); i++) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5; /* xorshift: the same junk every run */
        junk[i] = (unsigned char)x;
    }
    assert_refused_or_closed(port, junk, sizeof(junk), "binary junk");

    /* A 100 KiB header: beyond the connection's memory. */
    size_t big = 100 * 1024;
    char *huge = malloc(big + 128);
    int n = snprintf(huge, 128, "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: ");
    memset(huge + n, 'a', big);
    memcpy(huge + n + big, "\r\n\r\n", 5);
    assert_refused_or_closed(port, huge, strlen(huge), "a 100 KiB header");
    /* A 100 KiB path. */
    n = snprintf(huge, 128, "GET /");
    memset(huge + n, 'p', big);
    memcpy(huge + n + big, " HTTP/1.1\r\n\r\n", 14);
    assert_refused_or_closed(port, huge, strlen(huge), "a 100 KiB request line");
    free(huge);

    /* A request never finished: the client gives up and closes. */
    int fd = connect_to(port);
    cr_assert_geq(fd, 0);
    const char *half = "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Half: ";
    cr_assert_eq(send_all(fd, half, strlen(half)), 0);
    assert_still_serving(port); /* served meanwhile */
    close(fd);
    assert_still_serving(port);
    teardown(&f);
}

Test(observe_http, connections_beyond_the_limit_do_not_stop_it, .timeout = 180)
{
    fixture_t f;
    setup(&f, &(rill_http_opts_t){.max_connections = 4});
    uint16_t port = rill_http_port(f.http);
    enum { N = 40 };
    int fds[N];
    int opened = 0;
    for (int i = 0; i < N; i++) {
        fds[i] = connect_to(port);
        opened += fds[i] >= 0;
    }
    cr_assert_gt(opened, 0);
    /* Every slot is held by a silent client: libmicrohttpd stops
     * accepting, so a connection over the limit waits in the kernel's
     * backlog (or is closed): no answer within a second, or a 4xx. */
    reply_t *r = malloc(sizeof(*r));
    const char *live = "GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    exchange_within(port, live, strlen(live), r, 1000);
    cr_assert(r->status == 0 || r->status == 200 || (r->status >= 400 && r->status < 500), "%.200s",
              r->raw);
    for (int i = 0; i < N; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    /* Once they are gone, it serves again (the server notices the closes
     * on its own time: retry until a deadline). */
    int64_t deadline = kit_now_ms() + KIT_WAIT_MS;
    do
        request(port, "GET", "/health/live", NULL, r);
    while (r->status != 200 && kit_now_ms() < deadline);
    cr_assert_eq(r->status, 200, "%.200s", r->raw);
    free(r);
    teardown(&f);
}

/* ---- the API ---- */

Test(observe_http, the_listen_address_is_parsed_and_bad_ones_refused, .timeout = 120)
{
    char err[256];
    rill_system_t *sys = rill_system_new(&(rill_system_opts_t){.executors = 1}, NULL, 0);
    cr_assert_not_null(sys);
    rill_observer_t *obs = rill_observer_new(sys, NULL);
    cr_assert_not_null(obs);
    rill_http_t *h = NULL;
    const char *bad[] = {"",
                         "1.2.3",
                         "300.1.1.1",
                         "foo",
                         "127.0.0.1:",
                         ":",
                         "127.0.0.1:x",
                         ":65536",
                         ":-1",
                         "::1",
                         "[::1]:80",
                         "127.0.0.1:80:",
                         "localhost:1234567",
                         "127.0.0.1 :80",
                         "0x7f.0.0.1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
        err[0] = '\0';
        h = (rill_http_t *)(uintptr_t)1;
        cr_assert_eq(
            rill_http_start(obs, &(rill_http_opts_t){.listen = bad[i]}, &h, err, sizeof(err)),
            RILL_EINVAL, "\"%s\"", bad[i]);
        cr_assert_null(h, "\"%s\"", bad[i]);
        cr_assert_gt(strlen(err), 10, "a sentence for \"%s\": %s", bad[i], err);
    }
    const char *good[] = {"127.0.0.1:0", "localhost", ":0", "127.0.0.1", "localhost:0"};
    for (size_t i = 0; i < sizeof(good) / sizeof(*good); i++) {
        cr_assert_eq(
            rill_http_start(obs, &(rill_http_opts_t){.listen = good[i]}, &h, err, sizeof(err)),
            RILL_OK, "\"%s\": %s", good[i], err);
        cr_assert_neq(rill_http_port(h), 0);
        rill_http_stop(h);
    }
    /* NULL opts: the defaults. A port in use: RILL_EIO. */
    cr_assert_eq(rill_http_start(obs, NULL, &h, err, sizeof(err)), RILL_OK, "%s", err);
    char taken[32];
    snprintf(taken, sizeof(taken), "127.0.0.1:%u", (unsigned)rill_http_port(h));
    rill_http_t *h2 = NULL;
    cr_assert_eq(rill_http_start(obs, &(rill_http_opts_t){.listen = taken}, &h2, err, sizeof(err)),
                 RILL_EIO);
    cr_assert_null(h2);
    cr_assert_gt(strlen(err), 10, "%s", err);
    rill_http_stop(h);
    /* Bad arguments. */
    cr_assert_eq(rill_http_start(NULL, NULL, &h, err, sizeof(err)), RILL_EINVAL);
    cr_assert_eq(rill_http_start(obs, NULL, NULL, err, sizeof(err)), RILL_EINVAL);
    cr_assert_eq(rill_http_start(obs, &(rill_http_opts_t){.token = ""}, &h, err, sizeof(err)),
                 RILL_EINVAL);
    cr_assert_eq(rill_http_port(NULL), 0);
    uint64_t rej = 7;
    cr_assert_eq(rill_http_requests(NULL, &rej), 0);
    cr_assert_eq(rej, 0);
    rill_http_stop(NULL);
    rill_observer_free(obs);
    rill_system_destroy(sys);
}

Test(observe_http, the_counters_count_answers_and_refusals, .timeout = 120)
{
    fixture_t f;
    setup(&f, NULL);
    uint16_t port = rill_http_port(f.http);
    uint64_t rejected = 1;
    cr_assert_eq(rill_http_requests(f.http, &rejected), 0);
    cr_assert_eq(rejected, 0);
    reply_t *r = malloc(sizeof(*r));
    request(port, "GET", "/metrics", NULL, r);
    request(port, "GET", "/nope", NULL, r);
    request(port, "POST", "/metrics", NULL, r);
    request(port, "GET", "/tree", NULL, r);
    /* Each answer was counted before it was sent. */
    cr_assert_eq(rill_http_requests(f.http, &rejected), 4);
    cr_assert_eq(rejected, 2);
    free(r);
    teardown(&f);
}

/* On an executor, starting is refused (its stop would wait for a thread
 * that may be waiting for that executor). */
typedef struct on_exec {
    rill_observer_t *obs;
    rill_err_t err;
    int got_http;
} on_exec_t;

static void start_on_executor(rill_ctx_t *ctx, void *arg)
{
    (void)ctx;
    on_exec_t *o = arg;
    rill_http_t *h = NULL;
    o->err = rill_http_start(o->obs, NULL, &h, NULL, 0);
    o->got_http = h != NULL;
}

Test(observe_http, not_on_an_executor, .timeout = 120)
{
    rill_system_t *sys = rill_system_new(&(rill_system_opts_t){.executors = 1}, NULL, 0);
    cr_assert_not_null(sys);
    cr_assert_eq(rill_system_start(sys), RILL_OK);
    rill_observer_t *obs = rill_observer_new(sys, NULL);
    kit_log_t *log = kit_log_new();
    rill_aid_t rec = kit_spawn_recorder(sys, log, 0);
    on_exec_t o = {.obs = obs, .err = RILL_OK};
    cr_assert_eq(kit_run_in(sys, rec, start_on_executor, &o), RILL_OK);
    cr_assert_eq(o.err, RILL_ESTATE);
    cr_assert_eq(o.got_http, 0);
    rill_observer_free(obs);
    cr_assert_eq(rill_system_stop(sys, 10000), RILL_OK);
    rill_system_destroy(sys);
    kit_log_free(log);
}
