/*
 * rill-broker: the embedded Kafka broker (librdkafka's mock cluster) as a
 * standalone process, for multi-process demos, benchmarks and interop tests
 * with other clients (kcat, kafkajs).
 *
 * It prints the bootstrap string as the first line on stdout, optionally
 * writes it to a file, then serves fault-injection commands line by line on
 * stdin and on an optional unix control socket until SIGINT or SIGTERM.
 * Every command is answered with one line: "ok[ <detail>]" or
 * "error: <reason>". See usage() for the commands. The control plane never
 * blocks on a client (see conn_t), so SIGINT and SIGTERM always end it.
 */
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stddef.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <ev.h>

#include <rill/testkit.h>

#define LINE_MAX_LEN   1024
/* Replies a client may leave unread before it is dropped: the control plane
 * never waits for one client. */
#define OUT_MAX        (64 * 1024)
/* While accept() fails for want of file descriptors, try again this often. */
#define ACCEPT_RETRY_S 0.25
/* How long pending replies may take to go out once the broker stops. */
#define EXIT_FLUSH_MS  1000
#define MAX_TOPICS     256

typedef struct topic_spec {
    char name[250];
    int partitions;
    int rf; /* 0 = min(3, brokers) */
} topic_spec_t;

typedef struct server server_t;

/*
 * One line-oriented command stream: stdin/stdout or a control-socket
 * client. Nothing here blocks: a client's socket is non-blocking, stdout
 * (shared with the parent, so its flags are left alone) is written only as
 * far as poll() says it takes, and what does not fit waits in `out`, at most
 * OUT_MAX bytes; a client over that bound is dropped.
 */
typedef struct conn {
    ev_io io;  /* in_fd readable */
    ev_io wio; /* out_fd writable, while replies wait in out */
    server_t *srv;
    int in_fd, out_fd;
    char buf[LINE_MAX_LEN];
    size_t len;
    int discarding; /* the current line was too long: skip to its newline */
    int is_stdin;
    int dropped; /* gone or over OUT_MAX: close when the callback ends */
    int eof;     /* no more input: close once out is flushed */
    char *out;   /* replies not yet written */
    size_t out_len, out_cap;
    struct conn *next;
} conn_t;

struct server {
    struct ev_loop *loop;
    rill_broker_t *broker;
    ev_signal sigint, sigterm;
    ev_io listener;
    ev_timer accept_retry;         /* accept() failed: listener paused until this fires */
    unsigned long accept_failures; /* in the current episode; 0 = accepting */
    int listen_fd;
    const char *control_path;
    dev_t control_dev; /* the socket file this process bound, removed on exit */
    ino_t control_ino;
    int exit_on_eof;
    int stopping; /* shutdown asked: execute nothing more */
    conn_t *conns;
};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: rill-broker [options]\n"
            "\n"
            "Runs an embedded Kafka cluster (librdkafka's mock brokers) on 127.0.0.1\n"
            "until SIGINT or SIGTERM. The first line on stdout is the bootstrap string.\n"
            "\n"
            "options:\n"
            "  -b, --brokers N              number of brokers, 1..%d (default 1)\n"
            "  -t, --topic NAME:PARTS[:RF]  create a topic (repeatable); RF defaults to\n"
            "                               min(3, brokers)\n"
            "  -f, --bootstrap-file PATH    write the bootstrap string to PATH once the\n"
            "                               brokers listen (atomically; removed on exit)\n"
            "  -c, --control PATH           also accept commands on a unix socket at PATH;\n"
            "                               refused if PATH exists and is not a stale socket\n"
            "                               (a file, or the socket of a running rill-broker)\n"
            "  -n, --no-stdin               do not read commands from stdin\n"
            "  -e, --exit-on-eof            exit when stdin closes (a parent's lifeline)\n"
            "  -h, --help                   show this help\n"
            "\n"
            "commands (one per line, the last may lack its newline; each is answered\n"
            "\"ok\" or \"error: <reason>\"; blank lines are not answered; a control client\n"
            "that leaves more than %d KiB of answers unread is disconnected):\n"
            "  down B           broker B (1..N or all) refuses connections\n"
            "  up B             broker B accepts connections again\n"
            "  rtt B MS         delay broker B's responses by MS milliseconds\n"
            "  error API CODE [COUNT]\n"
            "                   fail the next COUNT (default 1) requests of API (name like\n"
            "                   OffsetCommit, or number) with CODE (name like\n"
            "                   UNKNOWN_MEMBER_ID or _TRANSPORT, or number)\n"
            "  clear API        drop queued errors for API\n"
            "  topic NAME:PARTS[:RF]   create a topic\n"
            "  leader TOPIC PARTITION B   move a partition's leader to broker B (1..N, or\n"
            "                   -1 for none); the topic must exist\n"
            "  bootstrap        answer \"ok <bootstrap servers>\"\n"
            "  help             list the commands\n"
            "  shutdown         stop the brokers and exit 0\n",
            RILL_BROKER_MAX, OUT_MAX / 1024);
}

/* Parse a whole decimal int in [lo, hi]. */
static int parse_int(const char *s, int lo, int hi, int *out)
{
    if (!s || !*s)
        return -1;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return -1;
    *out = (int)v;
    return 0;
}

/* "NAME:PARTS[:RF]" */
static int parse_topic_spec(const char *arg, topic_spec_t *t, char *err, size_t errsize)
{
    char tmp[512];
    if (strlen(arg) >= sizeof(tmp)) {
        snprintf(err, errsize, "topic spec too long");
        return -1;
    }
    strcpy(tmp, arg);
    char *name = tmp;
    char *parts = strchr(name, ':');
    if (!parts) {
        snprintf(err, errsize, "topic spec \"%.200s\" must be NAME:PARTITIONS[:RF]", arg);
        return -1;
    }
    *parts++ = '\0';
    char *rf = strchr(parts, ':');
    if (rf)
        *rf++ = '\0';
    if (!*name || strlen(name) >= sizeof(t->name)) {
        snprintf(err, errsize, "topic spec \"%.200s\": bad topic name", arg);
        return -1;
    }
    strcpy(t->name, name);
    if (parse_int(parts, 1, 100000, &t->partitions)) {
        snprintf(err, errsize, "topic spec \"%.200s\": partitions must be a number from 1", arg);
        return -1;
    }
    t->rf = 0;
    if (rf && parse_int(rf, 1, RILL_BROKER_MAX, &t->rf)) {
        snprintf(err, errsize, "topic spec \"%.200s\": replication factor must be a number from 1",
                 arg);
        return -1;
    }
    return 0;
}

static int create_topic(rill_broker_t *b, const topic_spec_t *t, char *err, size_t errsize)
{
    int rf = t->rf;
    if (!rf)
        rf = rill_broker_count(b) < 3 ? rill_broker_count(b) : 3;
    return rill_broker_create_topic(b, t->name, t->partitions, rf, err, errsize) ? -1 : 0;
}

static int parse_broker_id(server_t *s, const char *arg, int32_t *id)
{
    int v;
    if (arg && !strcasecmp(arg, "all")) {
        *id = RILL_BROKER_ALL;
        return 0;
    }
    if (parse_int(arg, 1, rill_broker_count(s->broker), &v))
        return -1;
    *id = v;
    return 0;
}

/* Write as much of data as out_fd takes now without blocking. Returns the
 * bytes written, or -1 when the reader is gone (or another hard error). */
static ssize_t out_write(conn_t *c, const char *data, size_t len)
{
    size_t done = 0;
    while (done < len) {
        size_t n = len - done;
        if (c->is_stdin) {
            /* A pipe that polls writable takes PIPE_BUF bytes at once. */
            struct pollfd pfd = {.fd = c->out_fd, .events = POLLOUT};
            int pr = poll(&pfd, 1, 0);
            if (pr < 0 && errno == EINTR)
                continue;
            if (pr < 0 || (pfd.revents & (POLLERR | POLLNVAL)))
                return -1;
            if (pr == 0)
                break;
            if (n > PIPE_BUF)
                n = PIPE_BUF;
        }
        ssize_t w = write(c->out_fd, data + done, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            return -1;
        }
        done += (size_t)w;
    }
    return (ssize_t)done;
}

static const char *conn_name(const conn_t *c)
{
    return c->is_stdin ? "stdin/stdout" : "a control client";
}

/* Queue n bytes for c: written at once when nothing waits before them, the
 * rest kept for the write watcher, up to OUT_MAX; over it, c is dropped. */
static void conn_send(conn_t *c, const char *data, size_t n)
{
    if (c->dropped)
        return;
    if (!c->out_len) {
        ssize_t w = out_write(c, data, n);
        if (w < 0) {
            c->dropped = 1;
            return;
        }
        data += w;
        n -= (size_t)w;
        if (!n)
            return;
    }
    if (c->out_len + n > OUT_MAX) {
        fprintf(stderr,
                "rill-broker: %s does not read its replies (%zu bytes unread, at most %d "
                "allowed); dropping it\n",
                conn_name(c), c->out_len + n, OUT_MAX);
        c->dropped = 1;
        return;
    }
    if (c->out_len + n > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap : 4096;
        while (cap < c->out_len + n)
            cap *= 2;
        char *p = realloc(c->out, cap);
        if (!p) {
            fprintf(stderr, "rill-broker: out of memory for %s's replies; dropping it\n",
                    conn_name(c));
            c->dropped = 1;
            return;
        }
        c->out = p;
        c->out_cap = cap;
    }
    memcpy(c->out + c->out_len, data, n);
    c->out_len += n;
    ev_io_start(c->srv->loop, &c->wio);
}

/* Write what waits in c->out as far as it goes now; -1 when the reader is
 * gone. */
static int conn_flush(conn_t *c)
{
    ssize_t w = out_write(c, c->out, c->out_len);
    if (w < 0)
        return -1;
    memmove(c->out, c->out + w, c->out_len - (size_t)w);
    c->out_len -= (size_t)w;
    if (!c->out_len)
        ev_io_stop(c->srv->loop, &c->wio);
    return 0;
}

static void reply(conn_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void reply(conn_t *c, const char *fmt, ...)
{
    char line[LINE_MAX_LEN + 64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n > sizeof(line) - 2)
        n = (int)sizeof(line) - 2;
    line[n++] = '\n';
    conn_send(c, line, (size_t)n);
}

static void stop_server(server_t *s)
{
    s->stopping = 1;
    ev_break(s->loop, EVBREAK_ALL);
}

/* Execute one command line and answer it. */
static void handle_line(conn_t *c, char *line)
{
    server_t *s = c->srv;
    char *argv[8];
    int argc = 0, too_many = 0;
    for (char *save = NULL, *tok = strtok_r(line, " \t\r", &save); tok;
         tok = strtok_r(NULL, " \t\r", &save)) {
        if (argc == 8)
            too_many = 1;
        else
            argv[argc++] = tok;
    }
    if (argc == 0)
        return; /* blank line: no answer */
    if (too_many) {
        reply(c, "error: too many words for \"%.64s\" (try help)", argv[0]);
        return;
    }
    const char *cmd = argv[0];
    int32_t id;
    char err[512];

    if (!strcasecmp(cmd, "down") || !strcasecmp(cmd, "up")) {
        if (argc != 2 || parse_broker_id(s, argv[1], &id)) {
            reply(c, "error: usage: %s B, where B is 1..%d or all", cmd,
                  rill_broker_count(s->broker));
            return;
        }
        rill_err_t e = !strcasecmp(cmd, "down") ? rill_broker_set_down(s->broker, id)
                                                : rill_broker_set_up(s->broker, id);
        if (e)
            reply(c, "error: %s %s: %s", cmd, argv[1], rill_err2str(e));
        else
            reply(c, "ok");
    } else if (!strcasecmp(cmd, "rtt")) {
        int ms;
        if (argc != 3 || parse_broker_id(s, argv[1], &id) || parse_int(argv[2], 0, 3600000, &ms)) {
            reply(c, "error: usage: rtt B MS, where B is 1..%d or all and MS is 0..3600000",
                  rill_broker_count(s->broker));
            return;
        }
        rill_err_t e = rill_broker_set_rtt(s->broker, id, ms);
        if (e)
            reply(c, "error: rtt: %s", rill_err2str(e));
        else
            reply(c, "ok");
    } else if (!strcasecmp(cmd, "error")) {
        int count = 1;
        rd_kafka_resp_err_t kerr;
        if (argc < 3 || argc > 4) {
            reply(c, "error: usage: error API CODE [COUNT]");
            return;
        }
        int16_t api = rill_api_key_from_name(argv[1]);
        if (api < 0) {
            reply(c, "error: unknown API \"%s\" (try OffsetCommit, Produce, Fetch, ...)", argv[1]);
            return;
        }
        if (rill_kafka_err_from_name(argv[2], &kerr)) {
            reply(c,
                  "error: unknown error code \"%s\" (a librdkafka name without the "
                  "RD_KAFKA_RESP_ERR_ prefix, e.g. UNKNOWN_MEMBER_ID, or a number)",
                  argv[2]);
            return;
        }
        if (kerr == RD_KAFKA_RESP_ERR_NO_ERROR) {
            reply(c, "error: CODE must be an error, not \"%s\" (NO_ERROR)", argv[2]);
            return;
        }
        if (argc == 4 && parse_int(argv[3], 1, 1000000, &count)) {
            reply(c, "error: COUNT must be a number from 1 to 1000000");
            return;
        }
        rill_err_t e = rill_broker_push_request_errors(s->broker, api, (size_t)count, kerr);
        if (e)
            reply(c, "error: %s", rill_err2str(e));
        else
            reply(c, "ok");
    } else if (!strcasecmp(cmd, "clear")) {
        int16_t api = argc == 2 ? rill_api_key_from_name(argv[1]) : -1;
        if (api < 0) {
            reply(c, "error: usage: clear API (a name like OffsetCommit, or a number)");
            return;
        }
        rill_broker_clear_request_errors(s->broker, api);
        reply(c, "ok");
    } else if (!strcasecmp(cmd, "topic")) {
        topic_spec_t t;
        if (argc != 2) {
            reply(c, "error: usage: topic NAME:PARTITIONS[:RF]");
            return;
        }
        if (parse_topic_spec(argv[1], &t, err, sizeof(err)) ||
            create_topic(s->broker, &t, err, sizeof(err)))
            reply(c, "error: %s", err);
        else
            reply(c, "ok");
    } else if (!strcasecmp(cmd, "leader")) {
        int part;
        if (argc != 4 || parse_int(argv[2], 0, 100000, &part) ||
            parse_int(argv[3], -1, rill_broker_count(s->broker), &id) || id == 0) {
            reply(c, "error: usage: leader TOPIC PARTITION B, where B is 1..%d or -1",
                  rill_broker_count(s->broker));
            return;
        }
        rill_err_t e = rill_broker_set_leader(s->broker, argv[1], part, id);
        if (e == RILL_ENOENT)
            reply(c, "error: leader: no partition %d of topic \"%s\" (unknown topic or partition)",
                  part, argv[1]);
        else if (e == RILL_EKAFKA)
            reply(c,
                  "error: leader: cannot tell whether topic \"%s\" exists (no broker answered a "
                  "metadata request; is every broker down?)",
                  argv[1]);
        else if (e)
            reply(c, "error: leader: %s", rill_err2str(e));
        else
            reply(c, "ok");
    } else if ((!strcasecmp(cmd, "bootstrap") || !strcasecmp(cmd, "help") ||
                !strcasecmp(cmd, "shutdown") || !strcasecmp(cmd, "quit")) &&
               argc != 1) {
        reply(c, "error: usage: %s takes no arguments", cmd);
    } else if (!strcasecmp(cmd, "bootstrap")) {
        reply(c, "ok %s", rill_broker_bootstraps(s->broker));
    } else if (!strcasecmp(cmd, "help")) {
        reply(c, "ok commands: down B | up B | rtt B MS | error API CODE [COUNT] | clear API | "
                 "topic NAME:PARTS[:RF] | leader TOPIC PART B | bootstrap | help | shutdown");
    } else if (!strcasecmp(cmd, "shutdown") || !strcasecmp(cmd, "quit")) {
        reply(c, "ok");
        stop_server(s);
    } else {
        reply(c, "error: unknown command \"%s\" (try help)", cmd);
    }
}

/* Close c. at_eof: stdin ended (with --exit-on-eof the broker stops), as
 * opposed to a client dropped for not reading. */
static void conn_close(conn_t *c, int at_eof)
{
    server_t *s = c->srv;
    ev_io_stop(s->loop, &c->io);
    ev_io_stop(s->loop, &c->wio);
    for (conn_t **pp = &s->conns; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    if (!c->is_stdin)
        close(c->in_fd);
    int exit_now = c->is_stdin && at_eof && s->exit_on_eof;
    free(c->out);
    free(c);
    if (exit_now)
        stop_server(s);
}

/*
 * Drop c (marked dropped: its reader is gone or does not read). A socket
 * client is closed. stdin stays watched, because its end is the parent's
 * lifeline (--exit-on-eof): what it sends is read and ignored, and nothing
 * more is written to stdout.
 */
static void conn_drop(conn_t *c)
{
    if (!c->is_stdin) {
        conn_close(c, 0);
        return;
    }
    ev_io_stop(c->srv->loop, &c->wio);
    c->out_len = 0;
    c->len = 0;
    c->discarding = 0;
    if (c->eof)
        conn_close(c, 1);
}

static void conn_write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    conn_t *c = (conn_t *)((char *)w - offsetof(conn_t, wio));
    if (conn_flush(c)) {
        c->dropped = 1;
        conn_drop(c);
        return;
    }
    if (c->eof && !c->out_len)
        conn_close(c, 1);
}

/* A whole line is in c->buf: refuse it (too long, or bytes that are not
 * text) or execute it. */
static void end_line(conn_t *c)
{
    if (c->discarding) {
        reply(c, "error: line longer than %d bytes", LINE_MAX_LEN - 1);
    } else {
        c->buf[c->len] = '\0';
        size_t bad = 0;
        while (bad < c->len &&
               (c->buf[bad] == '\t' || c->buf[bad] == '\r' || (unsigned char)c->buf[bad] >= 0x20) &&
               c->buf[bad] != 0x7f)
            bad++;
        if (bad < c->len)
            reply(c,
                  "error: byte 0x%02x at column %zu is not text; commands are words of "
                  "printable characters",
                  (unsigned)(unsigned char)c->buf[bad], bad + 1);
        else
            handle_line(c, c->buf);
    }
    c->len = 0;
    c->discarding = 0;
}

static void conn_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    conn_t *c = (conn_t *)w;
    char chunk[4096];
    ssize_t n = read(c->in_fd, chunk, sizeof(chunk));
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return;
    if (n <= 0) {
        /* The end of the input: a last line without a newline is still a
         * command; replies still waiting go out first. */
        if ((c->len || c->discarding) && !c->dropped && !c->srv->stopping)
            end_line(c);
        c->eof = 1;
        ev_io_stop(loop, &c->io);
        if (c->is_stdin && c->srv->exit_on_eof) {
            stop_server(c->srv); /* c's replies are flushed at exit */
            return;
        }
        if (c->out_len && !c->dropped)
            return;
        conn_close(c, 1);
        return;
    }
    for (ssize_t i = 0; i < n && !c->dropped && !c->srv->stopping; i++) {
        char ch = chunk[i];
        if (ch == '\n') {
            end_line(c);
        } else if (!c->discarding) {
            if (c->len == LINE_MAX_LEN - 1)
                c->discarding = 1;
            else
                c->buf[c->len++] = ch;
        }
    }
    if (c->dropped)
        conn_drop(c);
}

static conn_t *conn_new(server_t *s, int in_fd, int out_fd, int is_stdin)
{
    conn_t *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->srv = s;
    c->in_fd = in_fd;
    c->out_fd = out_fd;
    c->is_stdin = is_stdin;
    c->next = s->conns;
    s->conns = c;
    ev_io_init(&c->io, conn_read_cb, in_fd, EV_READ);
    ev_io_init(&c->wio, conn_write_cb, out_fd, EV_WRITE);
    ev_io_start(s->loop, &c->io);
    return c;
}

/* After the loop ends: give replies still waiting (the "ok" to shutdown)
 * up to EXIT_FLUSH_MS in all to go out. */
static void flush_at_exit(server_t *s)
{
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (conn_t *c = s->conns; c; c = c->next) {
        while (c->out_len && !c->dropped) {
            struct timespec t;
            clock_gettime(CLOCK_MONOTONIC, &t);
            long left = EXIT_FLUSH_MS -
                        ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000);
            if (left <= 0)
                return;
            struct pollfd pfd = {.fd = c->out_fd, .events = POLLOUT};
            if (poll(&pfd, 1, (int)left) < 0 && errno != EINTR)
                break;
            if (conn_flush(c))
                break;
        }
    }
}

/*
 * A control client connects. When accept() fails for want of file
 * descriptors (EMFILE, ENFILE) or memory, the connection stays queued and
 * the listener stays readable: retrying at once would spin. The listener
 * pauses for ACCEPT_RETRY_S instead, and each episode is logged once when it
 * starts and once when accepting works again; the queued clients are served
 * then.
 */
static void accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    server_t *s = w->data;
    for (int i = 0; i < 64; i++) {
        int fd = accept4(s->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            if (!s->accept_failures++)
                fprintf(stderr,
                        "rill-broker: cannot accept control clients: %s; retrying every %d ms "
                        "(logged once until it works again)\n",
                        strerror(errno), (int)(ACCEPT_RETRY_S * 1000));
            ev_io_stop(loop, &s->listener);
            ev_timer_set(&s->accept_retry, ACCEPT_RETRY_S, 0.);
            ev_timer_start(loop, &s->accept_retry);
            return;
        }
        if (s->accept_failures) {
            fprintf(stderr,
                    "rill-broker: accepting control clients again (after %lu failed "
                    "attempt(s))\n",
                    s->accept_failures);
            s->accept_failures = 0;
        }
        if (!conn_new(s, fd, fd, 0))
            close(fd);
    }
}

static void accept_retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    server_t *s = w->data;
    ev_io_start(loop, &s->listener);
}

static void signal_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)revents;
    (void)w;
    ev_break(loop, EVBREAK_ALL);
}

/* Is something listening on the unix socket at addr? 1 yes, 0 no (nothing
 * accepts connections there: a stale socket left by a broker that died), -1
 * cannot tell (errno set). The probe does not block: a live broker whose
 * backlog is full answers EAGAIN, which counts as live. */
static int control_socket_live(const struct sockaddr_un *addr)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -1;
    int rc = connect(fd, (const struct sockaddr *)addr, sizeof(*addr));
    int e = errno;
    close(fd);
    if (rc == 0 || e == EAGAIN || e == EINPROGRESS)
        return 1;
    if (e == ECONNREFUSED)
        return 0;
    errno = e;
    return -1;
}

/*
 * Listen on the control socket at path. Never removes anything that is not
 * a stale socket: bind first; only if the path is taken, look at what is
 * there. A file, directory or anything else that is not a socket, and a
 * socket some process still accepts connections on (a running rill-broker),
 * are refused and left alone; a socket nobody listens on any more is
 * replaced.
 */
static int listen_control(server_t *s, const char *path)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (!*path || strlen(path) >= sizeof(addr.sun_path)) {
        fprintf(stderr, "rill-broker: control socket path must be 1..%zu bytes: \"%s\"\n",
                sizeof(addr.sun_path) - 1, path);
        return -1;
    }
    strcpy(addr.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        fprintf(stderr, "rill-broker: socket: %s\n", strerror(errno));
        return -1;
    }
    int rc = bind(fd, (struct sockaddr *)&addr, sizeof(addr));
    if (rc && errno == EADDRINUSE) {
        struct stat st;
        if (lstat(path, &st)) {
            fprintf(stderr, "rill-broker: control socket %s: %s\n", path, strerror(errno));
            close(fd);
            return -1;
        }
        if (!S_ISSOCK(st.st_mode)) {
            fprintf(stderr,
                    "rill-broker: control socket %s: the path exists and is not a socket; "
                    "refusing to replace it (remove it or choose another path)\n",
                    path);
            close(fd);
            return -1;
        }
        int live = control_socket_live(&addr);
        if (live) {
            if (live > 0)
                fprintf(stderr,
                        "rill-broker: control socket %s is in use (another rill-broker "
                        "accepts connections on it); refusing to take it over\n",
                        path);
            else
                fprintf(stderr,
                        "rill-broker: control socket %s exists and cannot be probed (%s); "
                        "refusing to replace it\n",
                        path, strerror(errno));
            close(fd);
            return -1;
        }
        /* Stale: nothing accepts connections on it. */
        fprintf(stderr, "rill-broker: replacing stale control socket %s\n", path);
        if (unlink(path) && errno != ENOENT) {
            fprintf(stderr, "rill-broker: cannot remove stale control socket %s: %s\n", path,
                    strerror(errno));
            close(fd);
            return -1;
        }
        rc = bind(fd, (struct sockaddr *)&addr, sizeof(addr));
    }
    if (rc || listen(fd, 16)) {
        fprintf(stderr, "rill-broker: control socket %s: %s\n", path, strerror(errno));
        close(fd);
        return -1;
    }
    struct stat st;
    if (!stat(path, &st)) {
        s->control_dev = st.st_dev;
        s->control_ino = st.st_ino;
    }
    s->listen_fd = fd;
    s->control_path = path;
    ev_io_init(&s->listener, accept_cb, fd, EV_READ);
    s->listener.data = s;
    ev_io_start(s->loop, &s->listener);
    ev_timer_init(&s->accept_retry, accept_retry_cb, ACCEPT_RETRY_S, 0.);
    s->accept_retry.data = s;
    return 0;
}

/* Remove path only if it is still the file this process made (dev, ino):
 * whatever replaced it since is someone else's. */
static void unlink_if_ours(const char *path, dev_t dev, ino_t ino)
{
    struct stat st;
    if (!lstat(path, &st) && st.st_dev == dev && st.st_ino == ino)
        unlink(path);
}

/* Write the bootstrap string to path via a temporary file and rename, so a
 * reader never sees a partial line. *dev and *ino identify the file made. */
static int write_bootstrap_file(const char *path, const char *bootstraps, dev_t *dev, ino_t *ino)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid()) >= (int)sizeof(tmp))
        return -1;
    FILE *f = fopen(tmp, "w");
    if (!f)
        return -1;
    int ok = fprintf(f, "%s\n", bootstraps) > 0;
    ok = (fclose(f) == 0) && ok;
    struct stat st;
    if (!ok || stat(tmp, &st) || rename(tmp, path)) {
        unlink(tmp);
        return -1;
    }
    *dev = st.st_dev;
    *ino = st.st_ino;
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option long_opts[] = {
        {"brokers", required_argument, NULL, 'b'},
        {"topic", required_argument, NULL, 't'},
        {"bootstrap-file", required_argument, NULL, 'f'},
        {"control", required_argument, NULL, 'c'},
        {"no-stdin", no_argument, NULL, 'n'},
        {"exit-on-eof", no_argument, NULL, 'e'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int brokers = 1, use_stdin = 1, exit_on_eof = 0;
    const char *bootstrap_file = NULL, *control = NULL;
    topic_spec_t *topics = calloc(MAX_TOPICS, sizeof(*topics));
    int ntopics = 0;
    char err[512];
    int opt;
    if (!topics)
        return 1;

    while ((opt = getopt_long(argc, argv, "b:t:f:c:neh", long_opts, NULL)) != -1) {
        switch (opt) {
        case 'b':
            if (parse_int(optarg, 1, RILL_BROKER_MAX, &brokers)) {
                fprintf(stderr, "rill-broker: --brokers must be a number from 1 to %d\n",
                        RILL_BROKER_MAX);
                usage(stderr);
                free(topics);
                return 2;
            }
            break;
        case 't':
            if (ntopics == MAX_TOPICS) {
                fprintf(stderr, "rill-broker: at most %d --topic options\n", MAX_TOPICS);
                free(topics);
                return 2;
            }
            if (parse_topic_spec(optarg, &topics[ntopics], err, sizeof(err))) {
                fprintf(stderr, "rill-broker: %s\n", err);
                usage(stderr);
                free(topics);
                return 2;
            }
            ntopics++;
            break;
        case 'f':
            bootstrap_file = optarg;
            break;
        case 'c':
            control = optarg;
            break;
        case 'n':
            use_stdin = 0;
            break;
        case 'e':
            exit_on_eof = 1;
            break;
        case 'h':
            usage(stdout);
            free(topics);
            return 0;
        default:
            usage(stderr);
            free(topics);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "rill-broker: unexpected argument \"%s\"\n", argv[optind]);
        usage(stderr);
        free(topics);
        return 2;
    }

    /* Writes to a control client that went away must not kill the broker. */
    signal(SIGPIPE, SIG_IGN);

    server_t s = {.listen_fd = -1, .exit_on_eof = exit_on_eof};
    s.broker = rill_broker_new(brokers, err, sizeof(err));
    if (!s.broker) {
        fprintf(stderr, "rill-broker: %s\n", err);
        free(topics);
        return 1;
    }
    int rc = 0;
    for (int i = 0; i < ntopics; i++)
        if (create_topic(s.broker, &topics[i], err, sizeof(err))) {
            fprintf(stderr, "rill-broker: %s\n", err);
            rc = 1;
        }
    free(topics);
    s.loop = ev_default_loop(EVFLAG_AUTO);
    if (!rc && control && listen_control(&s, control))
        rc = 1;
    if (rc) {
        rill_broker_destroy(s.broker);
        return rc;
    }

    const char *bootstraps = rill_broker_bootstraps(s.broker);
    dev_t boot_dev = 0;
    ino_t boot_ino = 0;
    if (bootstrap_file && write_bootstrap_file(bootstrap_file, bootstraps, &boot_dev, &boot_ino)) {
        fprintf(stderr, "rill-broker: cannot write %s: %s\n", bootstrap_file, strerror(errno));
        if (s.listen_fd >= 0) {
            close(s.listen_fd);
            unlink_if_ours(s.control_path, s.control_dev, s.control_ino);
        }
        rill_broker_destroy(s.broker);
        return 1;
    }
    printf("%s\n", bootstraps);
    fflush(stdout);
    fprintf(stderr, "rill-broker: %d broker(s) listening at %s%s%s\n", brokers, bootstraps,
            control ? ", control socket " : "", control ? control : "");

    ev_signal_init(&s.sigint, signal_cb, SIGINT);
    ev_signal_start(s.loop, &s.sigint);
    ev_signal_init(&s.sigterm, signal_cb, SIGTERM);
    ev_signal_start(s.loop, &s.sigterm);
    if (use_stdin)
        conn_new(&s, STDIN_FILENO, STDOUT_FILENO, 1);

    ev_run(s.loop, 0);

    flush_at_exit(&s);
    while (s.conns)
        conn_close(s.conns, 0);
    if (s.listen_fd >= 0) {
        ev_io_stop(s.loop, &s.listener);
        ev_timer_stop(s.loop, &s.accept_retry);
        close(s.listen_fd);
        unlink_if_ours(s.control_path, s.control_dev, s.control_ino);
    }
    if (bootstrap_file)
        unlink_if_ours(bootstrap_file, boot_dev, boot_ino);
    rill_broker_destroy(s.broker);
    fprintf(stderr, "rill-broker: stopped\n");
    return 0;
}
