/*
 * rill-broker as a process, and interop with an independent Kafka client:
 * kcat produces and consumes against it, the testkit reads what kcat wrote,
 * fault commands are acknowledged and take effect, bad flags are refused.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "support/rtest.h"

#include <rill/testkit.h>

#include "support/proc.h"

#define N_RECORDS 1000

static const char *env_or_skip(const char *name)
{
    const char *v = getenv(name);
    cr_assert(v && *v, "%s is not set (ctest sets it)", name);
    return v;
}

typedef struct broker_proc {
    proc_t p;
    char dir[64];
    char boot_file[128];
    char ctl_path[128];
    char bootstraps[512];
} broker_proc_t;

/* Start rill-broker with a bootstrap file and a control socket and wait
 * for its bootstrap line. */
static void broker_start(broker_proc_t *b, const char *topic_spec, const char *brokers)
{
    strcpy(b->dir, "/tmp/rill-broker-test-XXXXXX");
    cr_assert_not_null(mkdtemp(b->dir));
    snprintf(b->boot_file, sizeof(b->boot_file), "%s/bootstrap", b->dir);
    snprintf(b->ctl_path, sizeof(b->ctl_path), "%s/ctl", b->dir);
    char *argv[] = {(char *)env_or_skip("RILL_BROKER_BIN"),
                    "--brokers",
                    (char *)brokers,
                    "--topic",
                    (char *)topic_spec,
                    "--bootstrap-file",
                    b->boot_file,
                    "--control",
                    b->ctl_path,
                    "--exit-on-eof",
                    NULL};
    cr_assert_eq(proc_spawn(&b->p, argv), 0, "spawn rill-broker");
    int n = proc_read_line(&b->p, b->bootstraps, sizeof(b->bootstraps), 15000);
    cr_assert_gt(n, 0, "rill-broker printed no bootstrap line");
    cr_assert(strstr(b->bootstraps, "127.0.0.1:"), "bootstrap line: %s", b->bootstraps);

    /* The file holds the same string, complete. */
    FILE *f = fopen(b->boot_file, "r");
    cr_assert_not_null(f, "bootstrap file %s exists once the line is printed", b->boot_file);
    char line[512] = "";
    cr_assert_not_null(fgets(line, sizeof(line), f));
    fclose(f);
    line[strcspn(line, "\n")] = '\0';
    cr_assert_str_eq(line, b->bootstraps);
}

static void broker_stop(broker_proc_t *b)
{
    if (b->p.pid > 0) {
        kill(b->p.pid, SIGTERM);
        int st = proc_wait(&b->p, 10000);
        if (st < 0)
            proc_kill(&b->p);
        cr_expect_eq(st, 0, "rill-broker exits 0 on SIGTERM");
    }
    proc_close(&b->p);
    cr_expect_neq(access(b->boot_file, F_OK), 0, "bootstrap file removed on exit");
    cr_expect_neq(access(b->ctl_path, F_OK), 0, "control socket removed on exit");
    rmdir(b->dir);
}

/* Send a command on the broker's stdin and return its one-line answer. */
static void command(broker_proc_t *b, const char *cmd, char *reply, size_t size)
{
    cr_assert_eq(proc_write(&b->p, cmd), 0);
    cr_assert_eq(proc_write(&b->p, "\n"), 0);
    cr_assert_gt(proc_read_line(&b->p, reply, size, 10000), 0, "no answer to \"%s\"", cmd);
}

/* Send a command on the control socket and return its answer. */
static void control(broker_proc_t *b, const char *cmd, char *reply, size_t size)
{
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    strcpy(a.sun_path, b->ctl_path);
    cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0, "connect control socket");
    char line[256];
    int n = snprintf(line, sizeof(line), "%s\n", cmd);
    cr_assert_eq(write(fd, line, (size_t)n), n);
    proc_t sock = {.pid = 0, .in_fd = -1, .out_fd = fd, .err_fd = -1};
    cr_assert_gt(proc_read_line(&sock, reply, size, 10000), 0, "no answer to \"%s\"", cmd);
    close(fd);
}

static int tcp_connect_ok(const char *bootstraps)
{
    int port = atoi(strchr(bootstraps, ':') + 1); /* the first broker */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    close(fd);
    return ok;
}

Test(rill_broker, kcat_and_testkit_interop_1000_keyed_records, .timeout = 120)
{
    broker_proc_t b;
    broker_start(&b, "interop:4", "1");
    const char *kcat = env_or_skip("KCAT_BIN");

    /* kcat produces 1,000 keyed records. */
    size_t cap = N_RECORDS * 32;
    char *input = malloc(cap), *p = input;
    for (int i = 0; i < N_RECORDS; i++)
        p += sprintf(p, "key-%d:value-%d\n", i, i);
    char *out = NULL;
    char *produce[] = {(char *)kcat, "-P", "-b", b.bootstraps, "-t", "interop", "-K", ":", NULL};
    int st = proc_run(produce, input, 60000, &out);
    cr_assert_eq(st, 0, "kcat -P exited %d", st);
    free(out);
    free(input);

    /* kcat reads them all back, keys intact. */
    char *consume[] = {(char *)kcat, "-C", "-b", b.bootstraps, "-t",      "interop", "-o",
                       "beginning",  "-e", "-q", "-f",         "%k=%s\n", NULL};
    st = proc_run(consume, NULL, 60000, &out);
    cr_assert_eq(st, 0, "kcat -C exited %d", st);
    char *seen = calloc(N_RECORDS, 1);
    int lines = 0;
    for (char *save = NULL, *l = strtok_r(out, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        int k, v;
        cr_assert_eq(sscanf(l, "key-%d=value-%d", &k, &v), 2, "kcat line: %s", l);
        cr_assert_eq(k, v);
        cr_assert(k >= 0 && k < N_RECORDS);
        cr_assert_not(seen[k], "key-%d twice", k);
        seen[k] = 1;
        lines++;
    }
    cr_assert_eq(lines, N_RECORDS, "kcat read %d of %d", lines, N_RECORDS);
    free(out);

    /* The testkit reads the same records. */
    memset(seen, 0, N_RECORDS);
    char err[512] = "";
    rill_consumed_t *got = NULL;
    cr_assert_eq(rill_testkit_consume(b.bootstraps, "interop", RILL_CONSUME_TO_END, NULL, &got, err,
                                      sizeof(err)),
                 RILL_OK, "%s", err);
    cr_assert_eq(rill_consumed_count(got), N_RECORDS);
    for (size_t i = 0; i < rill_consumed_count(got); i++) {
        const rill_testkit_record_t *r = rill_consumed_at(got, i);
        char key[32] = "", val[32] = "";
        cr_assert(r->key && r->key_len < sizeof(key));
        memcpy(key, r->key, r->key_len);
        memcpy(val, r->value, r->value_len < 31 ? r->value_len : 31);
        int k;
        cr_assert_eq(sscanf(key, "key-%d", &k), 1, "key %s", key);
        char want[32];
        snprintf(want, sizeof(want), "value-%d", k);
        cr_assert_str_eq(val, want);
        cr_assert_not(seen[k]);
        seen[k] = 1;
    }
    rill_consumed_destroy(got);

    /* And kcat reads what the testkit wrote, headers included. */
    rill_gen_t gen = RILL_GEN_DEFAULT;
    gen.headers = 1;
    cr_assert_eq(
        rill_testkit_produce_generated(b.bootstraps, "interop", 10, &gen, NULL, err, sizeof(err)),
        RILL_OK, "%s", err);
    char *consume_h[] = {(char *)kcat, "-C", "-b", b.bootstraps, "-t",      "interop", "-o",
                         "beginning",  "-e", "-q", "-f",         "%k|%h\n", NULL};
    st = proc_run(consume_h, NULL, 60000, &out);
    cr_assert_eq(st, 0);
    int with_headers = 0;
    for (char *save = NULL, *l = strtok_r(out, "\n", &save); l; l = strtok_r(NULL, "\n", &save))
        if (strstr(l, "rill-seq=") && strstr(l, "rill-gen=testkit"))
            with_headers++;
    cr_assert_eq(with_headers, 10, "kcat output:\n%s", out);
    free(out);
    free(seen);
    broker_stop(&b);
}

Test(rill_broker, fault_commands_are_acknowledged_and_take_effect, .timeout = 120)
{
    broker_proc_t b;
    broker_start(&b, "faults:2:2", "2");
    char reply[512];

    /* down 1 on stdin: acknowledged, then broker 1 refuses connections. */
    command(&b, "down 1", reply, sizeof(reply));
    cr_assert_str_eq(reply, "ok");
    cr_assert_not(tcp_connect_ok(b.bootstraps), "broker 1 is down");
    command(&b, "up 1", reply, sizeof(reply));
    cr_assert_str_eq(reply, "ok");
    cr_assert(tcp_connect_ok(b.bootstraps), "broker 1 is up again");

    /* The same through the control socket. */
    control(&b, "down all", reply, sizeof(reply));
    cr_assert_str_eq(reply, "ok");
    cr_assert_not(tcp_connect_ok(b.bootstraps));
    control(&b, "up all", reply, sizeof(reply));
    cr_assert_str_eq(reply, "ok");
    cr_assert(tcp_connect_ok(b.bootstraps));
    control(&b, "bootstrap", reply, sizeof(reply));
    cr_assert(!strncmp(reply, "ok ", 3) && !strcmp(reply + 3, b.bootstraps), "%s", reply);

    /* An injected permanent Produce error makes the next produce fail. */
    command(&b, "error Produce TOPIC_AUTHORIZATION_FAILED 1", reply, sizeof(reply));
    cr_assert_str_eq(reply, "ok");
    char err[512] = "";
    rill_err_t e =
        rill_testkit_produce_generated(b.bootstraps, "faults", 1, NULL, NULL, err, sizeof(err));
    cr_assert_eq(e, RILL_EKAFKA, "the injected error reached the client: %s", err);
    e = rill_testkit_produce_generated(b.bootstraps, "faults", 1, NULL, NULL, err, sizeof(err));
    cr_assert_eq(e, RILL_OK, "only one error was injected: %s", err);

    command(&b, "rtt 2 5", reply, sizeof(reply));
    cr_assert_str_eq(reply, "ok");
    command(&b, "error OffsetCommit 25 3", reply, sizeof(reply));
    cr_assert_str_eq(reply, "ok");
    command(&b, "clear offsetcommit", reply, sizeof(reply));
    cr_assert_str_eq(reply, "ok");
    command(&b, "topic later:3", reply, sizeof(reply));
    cr_assert_str_eq(reply, "ok");
    command(&b, "topic later:3", reply, sizeof(reply));
    cr_assert(strstr(reply, "error:") == reply && strstr(reply, "already exists"), "%s", reply);
    command(&b, "leader later 0 2", reply, sizeof(reply));
    cr_assert_str_eq(reply, "ok");

    /* Bad commands get an error line and change nothing. */
    const char *bad[] = {"down 3",
                         "down",
                         "up x",
                         "rtt 1 -5",
                         "error Nope 25",
                         "error Produce NOPE",
                         "error Produce 25 0",
                         "frobnicate",
                         "leader later 9 1",
                         "topic bad name:1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        command(&b, bad[i], reply, sizeof(reply));
        cr_assert(!strncmp(reply, "error: ", 7), "\"%s\" answered: %s", bad[i], reply);
    }
    /* An over-long line is refused, and the stream stays usable. */
    char longline[3000];
    memset(longline, 'x', sizeof(longline) - 1);
    longline[sizeof(longline) - 1] = '\0';
    command(&b, longline, reply, sizeof(reply));
    cr_assert(strstr(reply, "too long") || strstr(reply, "longer"), "%s", reply);
    command(&b, "help", reply, sizeof(reply));
    cr_assert(!strncmp(reply, "ok", 2));
    cr_assert(tcp_connect_ok(b.bootstraps));
    broker_stop(&b);
}

Test(rill_broker, shutdown_command_and_stdin_eof, .timeout = 60)
{
    broker_proc_t b;
    broker_start(&b, "x:1", "1");
    char reply[64];
    command(&b, "shutdown", reply, sizeof(reply));
    cr_assert_str_eq(reply, "ok");
    cr_assert_eq(proc_wait(&b.p, 10000), 0);
    proc_close(&b.p);
    cr_assert_neq(access(b.boot_file, F_OK), 0);
    rmdir(b.dir);

    /* --exit-on-eof: closing stdin (the parent died) stops the broker. */
    broker_start(&b, "x:1", "1");
    proc_close_stdin(&b.p);
    cr_assert_eq(proc_wait(&b.p, 10000), 0);
    proc_close(&b.p);
    rmdir(b.dir);
}

static void expect_usage_error(char *const argv[], const char *why)
{
    proc_t p;
    cr_assert_eq(proc_spawn(&p, argv), 0);
    proc_close_stdin(&p);
    int st = proc_wait(&p, 10000);
    char *err = proc_read_stderr(&p, 1000);
    cr_assert_eq(st, 2, "%s: exit %d, stderr: %s", why, st, err);
    cr_assert(strstr(err, "usage:"), "%s: usage on stderr, got: %s", why, err);
    free(err);
    proc_close(&p);
}

Test(rill_broker, bad_flags_print_usage_and_exit_2, .timeout = 60)
{
    char *bin = (char *)env_or_skip("RILL_BROKER_BIN");
    char *a1[] = {bin, "--brokers", "0", NULL};
    expect_usage_error(a1, "--brokers 0");
    char *a2[] = {bin, "--brokers", "many", NULL};
    expect_usage_error(a2, "--brokers many");
    char *a3[] = {bin, "--topic", "nopartitions", NULL};
    expect_usage_error(a3, "--topic without partitions");
    char *a4[] = {bin, "--topic", "t:0", NULL};
    expect_usage_error(a4, "--topic t:0");
    char *a5[] = {bin, "--frobnicate", NULL};
    expect_usage_error(a5, "unknown flag");
    char *a6[] = {bin, "stray", NULL};
    expect_usage_error(a6, "stray argument");

    /* A valid flag with an impossible value at run time: exit 1 with a
     * reason (replication factor above the broker count). */
    proc_t p;
    char *a7[] = {bin, "--brokers", "1", "--topic", "t:1:3", NULL};
    cr_assert_eq(proc_spawn(&p, a7), 0);
    proc_close_stdin(&p);
    int st = proc_wait(&p, 10000);
    char *err = proc_read_stderr(&p, 1000);
    cr_assert_eq(st, 1, "exit %d: %s", st, err);
    cr_assert(strstr(err, "replication"), "%s", err);
    free(err);
    proc_close(&p);

    char *help[] = {bin, "--help", NULL};
    char *out = NULL;
    cr_assert_eq(proc_run(help, NULL, 10000, &out), 0);
    cr_assert(strstr(out, "--bootstrap-file"), "%s", out);
    free(out);
}

/* Start rill-broker with --control path and return its exit status and
 * stderr (malloc'ed): for starts that must be refused. */
static int run_with_control(const char *path, char **err_out)
{
    char *argv[] = {(char *)env_or_skip("RILL_BROKER_BIN"), "--control", (char *)path, NULL};
    proc_t p;
    cr_assert_eq(proc_spawn(&p, argv), 0);
    proc_close_stdin(&p);
    int st = proc_wait(&p, 15000);
    if (st < 0)
        proc_kill(&p);
    *err_out = proc_read_stderr(&p, 1000);
    proc_close(&p);
    return st;
}

Test(rill_broker, control_path_that_is_not_a_socket_is_refused_and_kept, .timeout = 60)
{
    char dir[] = "/tmp/rill-broker-test-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char path[128];
    snprintf(path, sizeof(path), "%s/precious", dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs("do not delete\n", f);
    fclose(f);

    char *err = NULL;
    int st = run_with_control(path, &err);
    cr_assert_eq(st, 1, "exit %d, stderr: %s", st, err);
    cr_assert(strstr(err, "not a socket"), "%s", err);
    free(err);
    f = fopen(path, "r");
    cr_assert_not_null(f, "the regular file at the control path was removed");
    char line[64] = "";
    cr_assert_not_null(fgets(line, sizeof(line), f));
    fclose(f);
    cr_assert_str_eq(line, "do not delete\n");

    /* A directory is not a socket either. */
    char sub[160];
    snprintf(sub, sizeof(sub), "%s/subdir", dir);
    cr_assert_eq(mkdir(sub, 0700), 0);
    st = run_with_control(sub, &err);
    cr_assert_eq(st, 1, "exit %d, stderr: %s", st, err);
    cr_assert(strstr(err, "not a socket"), "%s", err);
    free(err);
    struct stat sb;
    cr_assert(stat(sub, &sb) == 0 && S_ISDIR(sb.st_mode));

    unlink(path);
    rmdir(sub);
    rmdir(dir);
}

Test(rill_broker, live_control_socket_is_refused_stale_one_replaced, .timeout = 90)
{
    broker_proc_t b;
    broker_start(&b, "x:1", "1");
    struct stat before;
    cr_assert_eq(stat(b.ctl_path, &before), 0);

    /* A second broker on the same control path: refused, the first keeps
     * its socket and answers on it. */
    char *err = NULL;
    int st = run_with_control(b.ctl_path, &err);
    cr_assert_eq(st, 1, "exit %d, stderr: %s", st, err);
    cr_assert(strstr(err, "in use"), "%s", err);
    free(err);
    struct stat after;
    cr_assert_eq(stat(b.ctl_path, &after), 0, "the running broker's socket was removed");
    cr_assert_eq(after.st_ino, before.st_ino, "the running broker's socket was replaced");
    char reply[512];
    control(&b, "bootstrap", reply, sizeof(reply));
    cr_assert(!strncmp(reply, "ok ", 3) && !strcmp(reply + 3, b.bootstraps), "%s", reply);
    broker_stop(&b);

    /* A stale socket (bound, nobody listens: its broker died) is replaced. */
    char dir[] = "/tmp/rill-broker-test-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    broker_proc_t c = {0};
    snprintf(c.ctl_path, sizeof(c.ctl_path), "%s/ctl", dir);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    strcpy(a.sun_path, c.ctl_path);
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    close(fd);
    char *argv[] = {(char *)env_or_skip("RILL_BROKER_BIN"), "--control", c.ctl_path,
                    "--exit-on-eof", NULL};
    cr_assert_eq(proc_spawn(&c.p, argv), 0);
    cr_assert_gt(proc_read_line(&c.p, c.bootstraps, sizeof(c.bootstraps), 15000), 0,
                 "rill-broker did not start over a stale control socket");
    control(&c, "help", reply, sizeof(reply));
    cr_assert(!strncmp(reply, "ok", 2), "%s", reply);
    kill(c.p.pid, SIGTERM);
    cr_assert_eq(proc_wait(&c.p, 10000), 0);
    proc_close(&c.p);
    cr_assert_neq(access(c.ctl_path, F_OK), 0, "control socket removed on exit");
    rmdir(dir);
}

static int control_connect(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    cr_assert_geq(fd, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    strcpy(a.sun_path, path);
    cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0, "connect control socket");
    return fd;
}

Test(rill_broker, client_that_does_not_read_is_dropped_not_waited_for, .timeout = 90)
{
    broker_proc_t b;
    broker_start(&b, "x:1", "1");

    /* A client sends commands in batches and reads none of the replies
     * (each ~190 bytes: far more than socket buffers hold). It sends until
     * the broker drops it (EPIPE/ECONNRESET) or 200,000 commands went out. */
    int bad = control_connect(b.ctl_path);
    cr_assert_eq(fcntl(bad, F_SETFL, O_NONBLOCK), 0);
    static char batch[5000];
    for (size_t i = 0; i < sizeof(batch); i += 5)
        memcpy(batch + i, "help\n", 5);
    size_t sent = 0, sent_bytes = 0; /* whole commands, bytes */
    int gone = 0;
    int64_t deadline = proc_now_ms() + 20000;
    while (!gone && sent < 200000 && proc_now_ms() < deadline) {
        ssize_t w = send(bad, batch, sizeof(batch), MSG_NOSIGNAL);
        if (w > 0) {
            sent_bytes += (size_t)w;
            sent = sent_bytes / 5;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            struct pollfd pfd = {.fd = bad, .events = POLLOUT};
            poll(&pfd, 1, 100);
        } else {
            gone = 1;
        }
    }
    /* One batch (1,000 commands) already asks for ~190 KB of replies, far
     * over the 64 KiB bound: a broker quick enough to drop the client
     * before the second batch went out is right. */
    cr_assert_geq(sent, 1000, "sent %zu commands", sent);

    /* The control plane still answers others: stdin and a new client. */
    char reply[512];
    command(&b, "bootstrap", reply, sizeof(reply));
    cr_assert(!strncmp(reply, "ok ", 3), "%s", reply);
    control(&b, "help", reply, sizeof(reply));
    cr_assert(!strncmp(reply, "ok", 2), "%s", reply);

    /* The client that does not read was dropped: reading now finds the
     * replies that fit before the bound, then the end. */
    cr_assert_eq(fcntl(bad, F_SETFL, 0), 0);
    struct timeval tv = {.tv_sec = 10};
    setsockopt(bad, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    size_t got = 0;
    char chunk[65536];
    ssize_t n;
    while ((n = read(bad, chunk, sizeof(chunk))) > 0)
        got += (size_t)n;
    cr_assert(n == 0 || errno == ECONNRESET, "the client was not dropped: read: %s",
              n < 0 ? strerror(errno) : "");
    size_t reply_len = strlen(reply) + 1; /* the "help" answer read above */
    cr_assert_lt(got, sent * reply_len, "all %zu replies were sent (%zu bytes)", sent, got);
    close(bad);

    /* A client that does not read, still connected with replies pending,
     * does not hold up SIGTERM. */
    bad = control_connect(b.ctl_path);
    cr_assert_eq(fcntl(bad, F_SETFL, O_NONBLOCK), 0);
    for (int i = 0; i < 40; i++)
        if (send(bad, batch, sizeof(batch), MSG_NOSIGNAL) < 0)
            break;
    broker_stop(&b); /* asserts exit 0 within 10 s */
    close(bad);
}

static size_t count_substr(const char *hay, const char *needle)
{
    size_t n = 0;
    for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

/* Append what the broker wrote on stderr within ms to *acc. */
static void stderr_collect(broker_proc_t *b, char **acc, int ms)
{
    char *more = proc_read_stderr(&b->p, ms);
    size_t old = *acc ? strlen(*acc) : 0;
    *acc = realloc(*acc, old + strlen(more) + 1);
    strcpy(*acc + old, more);
    free(more);
}

static int open_fds(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    cr_assert_not_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

#define FD_CLIENTS       8
#define FD_KAFKA_CLIENTS 3 /* the mock's listen backlog is small */

Test(rill_broker, out_of_file_descriptors_backs_off_logs_once_and_recovers, .timeout = 120)
{
    broker_proc_t b;
    broker_start(&b, "fds:1", "1");
    char *err = NULL;
    stderr_collect(&b, &err, 100);

    /* Leave the broker one free file descriptor, then connect more control
     * clients and Kafka clients than that. */
    struct rlimit old;
    cr_assert_eq(prlimit(b.p.pid, RLIMIT_NOFILE, NULL, &old), 0, "prlimit: %s", strerror(errno));
    struct rlimit low = old;
    low.rlim_cur = (rlim_t)open_fds(b.p.pid) + 1;
    cr_assert_eq(prlimit(b.p.pid, RLIMIT_NOFILE, &low, NULL), 0, "prlimit: %s", strerror(errno));
    int ctl[FD_CLIENTS], tcp[FD_KAFKA_CLIENTS];
    int port = atoi(strchr(b.bootstraps, ':') + 1);
    for (int i = 0; i < FD_CLIENTS; i++) {
        ctl[i] = control_connect(b.ctl_path);
        cr_assert_eq(write(ctl[i], "help\n", 5), 5);
    }
    for (int i = 0; i < FD_KAFKA_CLIENTS; i++) {
        tcp[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        int rc = connect(tcp[i], (struct sockaddr *)&a, sizeof(a));
        cr_assert(rc == 0 || errno == EINPROGRESS, "connect: %s", strerror(errno));
    }

    /* Both listeners run out: the control socket's and the mock's. */
    int64_t deadline = proc_now_ms() + 20000;
    while (proc_now_ms() < deadline &&
           (!strstr(err, "cannot accept control clients") || !strstr(err, "Failed to accept")))
        stderr_collect(&b, &err, 100);
    cr_assert(strstr(err, "cannot accept control clients: Too many open files"), "stderr: %.2000s",
              err);
    cr_assert(strstr(err, "Failed to accept"), "stderr: %.2000s", err);

    /* Stay out of file descriptors for a while: the broker still answers on
     * stdin, and logs each episode once instead of once per retry (a spin
     * writes thousands of lines in this time). */
    char reply[512];
    command(&b, "bootstrap", reply, sizeof(reply));
    cr_assert(!strncmp(reply, "ok ", 3), "%s", reply);
    stderr_collect(&b, &err, 1500);
    command(&b, "help", reply, sizeof(reply));
    cr_assert(!strncmp(reply, "ok", 2), "%s", reply);
    cr_assert_eq(count_substr(err, "cannot accept control clients"), 1, "stderr: %.2000s", err);
    cr_assert_eq(count_substr(err, "Failed to accept"), 1, "stderr: %.2000s", err);

    /* File descriptors free up: every waiting control client is served, the
     * episode's end is logged, and Kafka clients are served again. */
    cr_assert_eq(prlimit(b.p.pid, RLIMIT_NOFILE, &old, NULL), 0);
    for (int i = 0; i < FD_CLIENTS; i++) {
        proc_t sock = {.pid = 0, .in_fd = -1, .out_fd = ctl[i], .err_fd = -1};
        cr_assert_gt(proc_read_line(&sock, reply, sizeof(reply), 10000), 0,
                     "control client %d never answered", i);
        cr_assert(!strncmp(reply, "ok", 2), "%s", reply);
        close(ctl[i]);
    }
    for (int i = 0; i < FD_KAFKA_CLIENTS; i++)
        close(tcp[i]);
    char kerr[512] = "";
    cr_assert_eq(
        rill_testkit_produce_generated(b.bootstraps, "fds", 10, NULL, NULL, kerr, sizeof(kerr)),
        RILL_OK, "%s", kerr);
    rill_consumed_t *got = NULL;
    cr_assert_eq(rill_testkit_consume(b.bootstraps, "fds", 10, NULL, &got, kerr, sizeof(kerr)),
                 RILL_OK, "%s", kerr);
    cr_assert_eq(rill_consumed_count(got), 10);
    rill_consumed_destroy(got);
    stderr_collect(&b, &err, 100);
    cr_assert(strstr(err, "accepting control clients again"), "stderr: %.2000s", err);
    free(err);
    broker_stop(&b);
}

/* Topic names in the cluster's metadata, as kcat -L lists them. */
static char *kcat_list(const char *bootstraps)
{
    char *argv[] = {(char *)env_or_skip("KCAT_BIN"), "-L", "-b", (char *)bootstraps, NULL};
    char *out = NULL;
    int st = proc_run(argv, NULL, 30000, &out);
    cr_assert_eq(st, 0, "kcat -L exited %d", st);
    return out;
}

Test(rill_broker, leader_on_unknown_topic_is_refused_and_creates_nothing, .timeout = 90)
{
    broker_proc_t b;
    broker_start(&b, "known:2", "2");
    char reply[512];

    command(&b, "leader nosuch 0 1", reply, sizeof(reply));
    cr_assert(!strncmp(reply, "error: ", 7) && strstr(reply, "unknown topic"), "%s", reply);
    control(&b, "leader nosuch2 0 -1", reply, sizeof(reply));
    cr_assert(!strncmp(reply, "error: ", 7) && strstr(reply, "unknown topic"), "%s", reply);
    char *topics = kcat_list(b.bootstraps);
    cr_assert(strstr(topics, "\"known\""), "%s", topics);
    cr_assert_null(strstr(topics, "nosuch"), "leader created the topic:\n%s", topics);
    free(topics);

    /* Known topics: made on the command line, by the topic command, and
     * auto-created by a client (not made through rill-broker at all). */
    command(&b, "leader known 1 1", reply, sizeof(reply));
    cr_assert_str_eq(reply, "ok");
    command(&b, "topic later:1", reply, sizeof(reply));
    cr_assert_str_eq(reply, "ok");
    command(&b, "leader later 0 2", reply, sizeof(reply));
    cr_assert_str_eq(reply, "ok");
    char err[512] = "";
    cr_assert_eq(
        rill_testkit_produce_generated(b.bootstraps, "auto", 1, NULL, NULL, err, sizeof(err)),
        RILL_OK, "%s", err);
    command(&b, "leader auto 0 2", reply, sizeof(reply));
    cr_assert_str_eq(reply, "ok");
    command(&b, "leader known 2 1", reply, sizeof(reply));
    cr_assert(!strncmp(reply, "error: ", 7), "no partition 2: %s", reply);
    broker_stop(&b);
}

/* Send raw bytes on a new control connection, half-close it, and read the
 * one-line answer. */
static void control_raw(broker_proc_t *b, const char *bytes, size_t n, char *reply, size_t size)
{
    int fd = control_connect(b->ctl_path);
    cr_assert_eq(write(fd, bytes, n), (ssize_t)n);
    cr_assert_eq(shutdown(fd, SHUT_WR), 0);
    proc_t sock = {.pid = 0, .in_fd = -1, .out_fd = fd, .err_fd = -1};
    cr_assert_gt(proc_read_line(&sock, reply, size, 10000), 0, "no answer");
    close(fd);
}

Test(rill_broker, malformed_commands_get_clear_errors, .timeout = 90)
{
    broker_proc_t b;
    broker_start(&b, "m:2", "2");
    char reply[1024];

    struct {
        const char *line, *want;
    } bad[] = {
        {"shutdown now", "takes no arguments"},
        {"quit please", "takes no arguments"},
        {"help me", "takes no arguments"},
        {"bootstrap 1", "takes no arguments"},
        {"down 1 2 3 4 5 6 7 8 9 10", "too many words"},
        {"leader m 0 0", "usage: leader"},
        {"leader m 0 3", "usage: leader"},
        {"leader m x 1", "usage: leader"},
        {"error Produce NO_ERROR", "must be an error"},
        {"error Produce 0", "must be an error"},
        {"error Produce 25 1 extra", "usage: error"},
        {"clear", "usage: clear"},
        {"topic", "usage: topic"},
        {"topic a:1 b:1", "usage: topic"},
        {"topic a:1:2:3", "replication"},
        {"rtt 1 99999999999999999999", "usage: rtt"},
        {"down\x01 1", "not text"},
        {"ùnknown", "unknown command"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        command(&b, bad[i].line, reply, sizeof(reply));
        cr_assert(!strncmp(reply, "error: ", 7) && strstr(reply, bad[i].want),
                  "\"%s\" answered: %s", bad[i].line, reply);
    }
    /* "shutdown now" did not shut it down; nothing was created. */
    command(&b, "help", reply, sizeof(reply));
    cr_assert(!strncmp(reply, "ok", 2), "%s", reply);
    char *topics = kcat_list(b.bootstraps);
    cr_assert_null(strstr(topics, "\"a\""), "%s", topics);
    free(topics);

    /* A NUL byte does not cut a line short into a different command. */
    static const char nul[] = "down 1\0garbage\n";
    control_raw(&b, nul, sizeof(nul) - 1, reply, sizeof(reply));
    cr_assert(!strncmp(reply, "error: ", 7) && strstr(reply, "not text"), "%s", reply);
    cr_assert(tcp_connect_ok(b.bootstraps), "broker 1 was taken down by a line with a NUL");

    /* The last line of a client needs no newline: it is answered. */
    control_raw(&b, "bootstrap", 9, reply, sizeof(reply));
    cr_assert(!strncmp(reply, "ok ", 3) && !strcmp(reply + 3, b.bootstraps), "%s", reply);
    control_raw(&b, "frobnicate", 10, reply, sizeof(reply));
    cr_assert(!strncmp(reply, "error: unknown command", 22), "%s", reply);

    /* Over-long lines on the control socket, too. */
    char longline[3000];
    memset(longline, 'y', sizeof(longline));
    control_raw(&b, longline, sizeof(longline), reply, sizeof(reply));
    cr_assert(strstr(reply, "longer than"), "%s", reply);
    broker_stop(&b);
}

Test(rill_broker, parent_that_does_not_read_stdout_is_not_waited_for, .timeout = 90)
{
    broker_proc_t b;
    broker_start(&b, "x:1", "1");

    /* The parent sends commands on stdin and never reads stdout. */
    cr_assert_eq(fcntl(b.p.in_fd, F_SETFL, O_NONBLOCK), 0);
    static char batch[5000];
    for (size_t i = 0; i < sizeof(batch); i += 5)
        memcpy(batch + i, "help\n", 5);
    size_t sent = 0;
    char *err = NULL;
    int64_t deadline = proc_now_ms() + 30000;
    while (proc_now_ms() < deadline && !(err && strstr(err, "does not read"))) {
        ssize_t w = write(b.p.in_fd, batch, sizeof(batch));
        if (w > 0) {
            sent += (size_t)w / 5;
        } else {
            cr_assert(errno == EAGAIN, "write: %s", strerror(errno));
            stderr_collect(&b, &err, 20);
        }
    }
    cr_assert(err && strstr(err, "stdin/stdout does not read its replies"), "sent %zu, stderr: %s",
              sent, err ? err : "");

    /* The control socket is still served. */
    char reply[512];
    control(&b, "bootstrap", reply, sizeof(reply));
    cr_assert(!strncmp(reply, "ok ", 3), "%s", reply);

    /* stdin is still the lifeline: closing it stops the broker. */
    proc_close_stdin(&b.p);
    cr_assert_eq(proc_wait(&b.p, 10000), 0, "--exit-on-eof after stdout was dropped");
    proc_close(&b.p);
    cr_assert_neq(access(b.ctl_path, F_OK), 0);
    rmdir(b.dir);
    free(err);
}
