/*
 * main() for test binaries built with RILL_RTEST_STANDALONE (see rtest.h):
 * runs every registered test in its own forked child, so a crash, an abort
 * or a sanitizer report fails only that test, and kills a child that runs
 * past its timeout.
 *
 *   test_x [--filter=PATTERN] [--list] [--timeout=SECONDS]
 *
 * PATTERN is matched against the start of "suite/name"; '*' matches any run
 * of characters, '?' any one character. --timeout sets the default for tests
 * that give none (60 s).
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "rtest.h"

static struct rtest_case *first_case, *last_case;

/* Set in the child when a cr_expect* failed. Written from whichever thread
 * checked, read by the child's main thread after the test returned (and
 * after every thread the test started was joined). */
static volatile sig_atomic_t expect_failed;

static volatile sig_atomic_t timed_out;

/* The test running in this child, for its .fini on a fatal failure; and
 * whether .fini has started (it runs once, even if it fails itself). */
static const struct rtest_case *current_case;
static atomic_int fini_started;

static void run_fini(void)
{
    if (current_case && current_case->opts.fini && !atomic_exchange(&fini_started, 1))
        current_case->opts.fini();
}

void rtest_register_(struct rtest_case *tc)
{
    /* Constructors run in definition order: append, so tests run in the
     * order they appear in the file. */
    if (last_case)
        last_case->next = tc;
    else
        first_case = tc;
    last_case = tc;
}

void rtest_failed_(int fatal, const char *file, int line, const char *expr, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    /* fmt always starts with the space rtest.h adds. */
    fprintf(stderr, "%s:%d: %s failed: %s%s%s\n", file, line, fatal ? "assertion" : "expectation",
            expr, msg[1] ? ": " : "", msg + 1);
    fflush(stderr);
    if (fatal) {
        run_fini(); /* Criterion runs it after a failed test too: it cleans up
                       what outlives the test (child processes, say) */
        _exit(1);   /* from any thread; skip atexit so a half-done test does not
                       add leak reports to its failure */
    }
    expect_failed = 1;
}

/* Glob-ish prefix match: the pattern must match a prefix of s. */
static int match_prefix(const char *pat, const char *s)
{
    if (*pat == '\0')
        return 1;
    if (*pat == '*') {
        for (;; s++) {
            if (match_prefix(pat + 1, s))
                return 1;
            if (*s == '\0')
                return 0;
        }
    }
    if (*s == '\0')
        return 0;
    if (*pat == '?' || *pat == *s)
        return match_prefix(pat + 1, s + 1);
    return 0;
}

static void on_alarm(int sig)
{
    (void)sig;
    timed_out = 1;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Runs one test in a child; returns 1 if it passed. */
static int run_case(const struct rtest_case *tc, const char *id, unsigned default_timeout)
{
    unsigned timeout =
        tc->opts.timeout > 0 ? (unsigned)(tc->opts.timeout + 0.999) : default_timeout;
    double t0 = now_s();

    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        perror("rtest: fork");
        return 0;
    }
    if (pid == 0) {
        expect_failed = 0;
        current_case = tc;
        if (tc->opts.init)
            tc->opts.init();
        tc->fn();
        run_fini();
        /* exit (not _exit) so sanitizers' exit-time checks (leaks, TSan's
         * report count) still decide the status. */
        exit(expect_failed ? 1 : 0);
    }

    /* The parent enforces the timeout, so a child that blocks SIGALRM or
     * hangs in a signal-unsafe state is still stopped. */
    timed_out = 0;
    alarm(timeout);
    int status = 0;
    pid_t got;
    while ((got = waitpid(pid, &status, 0)) < 0 && errno == EINTR) {
        if (timed_out) {
            kill(pid, SIGKILL);
            timed_out = 2;
        }
    }
    alarm(0);

    double secs = now_s() - t0;
    if (got < 0) {
        printf("[FAIL] %s: waitpid: %s\n", id, strerror(errno));
        return 0;
    }
    if (timed_out == 2) {
        printf("[FAIL] %s: timed out after %u s\n", id, timeout);
        return 0;
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        printf("[PASS] %s (%.2f s)\n", id, secs);
        return 1;
    }
    if (WIFEXITED(status))
        printf("[FAIL] %s: exit status %d%s (%.2f s)\n", id, WEXITSTATUS(status),
               WEXITSTATUS(status) == 66 ? " (ThreadSanitizer report)" : "", secs);
    else if (WIFSIGNALED(status))
        printf("[FAIL] %s: killed by signal %d (%s) (%.2f s)\n", id, WTERMSIG(status),
               strsignal(WTERMSIG(status)), secs);
    else
        printf("[FAIL] %s: status %#x\n", id, (unsigned)status);
    return 0;
}

int main(int argc, char **argv)
{
    const char *filter = "";
    unsigned default_timeout = 60;
    int list = 0;
    for (int i = 1; i < argc; i++) {
        if (strncmp(argv[i], "--filter=", 9) == 0)
            filter = argv[i] + 9;
        else if (strncmp(argv[i], "--timeout=", 10) == 0)
            default_timeout = (unsigned)strtoul(argv[i] + 10, NULL, 10);
        else if (strcmp(argv[i], "--list") == 0)
            list = 1;
        else if (strncmp(argv[i], "--verbose", 9) == 0)
            ; /* accepted for command-line compatibility with Criterion */
        else {
            fprintf(stderr, "usage: %s [--filter=suite/name] [--list] [--timeout=s]\n", argv[0]);
            return 2;
        }
    }
    if (default_timeout == 0)
        default_timeout = 60;

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_alarm; /* no SA_RESTART: waitpid returns EINTR */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, NULL);

    int run = 0, passed = 0, skipped = 0;
    for (const struct rtest_case *tc = first_case; tc; tc = tc->next) {
        char id[256];
        snprintf(id, sizeof(id), "%s/%s", tc->suite, tc->name);
        if (!match_prefix(filter, id))
            continue;
        if (list) {
            printf("%s\n", id);
            continue;
        }
        if (tc->opts.disabled) {
            printf("[SKIP] %s\n", id);
            skipped++;
            continue;
        }
        run++;
        passed += run_case(tc, id, default_timeout);
        fflush(stdout);
    }
    if (list)
        return 0;
    printf("rtest: %d tests, %d passed, %d failed, %d skipped\n", run, passed, run - passed,
           skipped);
    if (run == 0 && skipped == 0) {
        fprintf(stderr, "rtest: no test matches '%s'\n", filter);
        return 1;
    }
    return passed == run ? 0 : 1;
}
