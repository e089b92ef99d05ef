/*
 * rill-broker as a process, and interop with an independent Kafka client:
 * kcat produces and consumes against it, the testkit reads what kcat wrote,
 * fault commands are acknowledged and take effect, bad flags are refused.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
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
