#include "proc.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

int64_t proc_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void proc_nap_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

static int ms_left(long long deadline)
{
    long long l = deadline - proc_now_ms();
    return l < 0 ? 0 : (int)l;
}

int proc_spawn(proc_t *p, char *const argv[])
{
    int in[2], out[2], err[2];
    memset(p, 0, sizeof(*p));
    p->in_fd = p->out_fd = p->err_fd = -1;
    if (pipe2(in, O_CLOEXEC))
        return -1;
    if (pipe2(out, O_CLOEXEC)) {
        close(in[0]);
        close(in[1]);
        return -1;
    }
    if (pipe2(err, O_CLOEXEC)) {
        close(in[0]);
        close(in[1]);
        close(out[0]);
        close(out[1]);
        return -1;
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_adddup2(&fa, err[1], 2);
    int rc = posix_spawn(&p->pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(in[0]);
    close(out[1]);
    close(err[1]);
    if (rc) {
        close(in[1]);
        close(out[0]);
        close(err[0]);
        errno = rc;
        return -1;
    }
    p->in_fd = in[1];
    p->out_fd = out[0];
    p->err_fd = err[0];
    /* A child that exits before reading its input must not kill us. */
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

int proc_read_line(proc_t *p, char *line, size_t size, int timeout_ms)
{
    long long deadline = proc_now_ms() + timeout_ms;
    for (;;) {
        char *nl = memchr(p->buf, '\n', p->len);
        if (nl) {
            size_t n = (size_t)(nl - p->buf);
            size_t copy = n < size - 1 ? n : size - 1;
            memcpy(line, p->buf, copy);
            line[copy] = '\0';
            memmove(p->buf, nl + 1, p->len - n - 1);
            p->len -= n + 1;
            return (int)copy;
        }
        if (p->len == sizeof(p->buf))
            return -1;
        struct pollfd pfd = {.fd = p->out_fd, .events = POLLIN};
        int left = ms_left(deadline);
        if (left == 0 || poll(&pfd, 1, left) <= 0)
            return -1;
        ssize_t r = read(p->out_fd, p->buf + p->len, sizeof(p->buf) - p->len);
        if (r <= 0)
            return -1;
        p->len += (size_t)r;
    }
}

/* Append everything readable from fd to a growing buffer until EOF or the
 * deadline; returns 1 at EOF, 0 on timeout. */
static int drain_fd(int fd, char **buf, size_t *len, size_t *cap, long long deadline)
{
    for (;;) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int left = ms_left(deadline);
        if (left == 0 || poll(&pfd, 1, left) <= 0)
            return 0;
        if (*cap - *len < 4096) {
            *cap = *cap * 2 + 8192;
            *buf = realloc(*buf, *cap);
        }
        ssize_t r = read(fd, *buf + *len, *cap - *len - 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return 1;
        *len += (size_t)r;
        (*buf)[*len] = '\0';
    }
}

char *proc_read_all(proc_t *p, int timeout_ms, int *timed_out)
{
    size_t cap = p->len + 8192, len = p->len;
    char *buf = malloc(cap);
    memcpy(buf, p->buf, p->len);
    buf[len] = '\0';
    p->len = 0;
    int eof = drain_fd(p->out_fd, &buf, &len, &cap, proc_now_ms() + timeout_ms);
    if (timed_out)
        *timed_out = !eof;
    return buf;
}

char *proc_read_stderr(proc_t *p, int timeout_ms)
{
    size_t cap = 8192, len = 0;
    char *buf = malloc(cap);
    buf[0] = '\0';
    drain_fd(p->err_fd, &buf, &len, &cap, proc_now_ms() + timeout_ms);
    return buf;
}

void proc_collect(proc_t *p, char **log, size_t *len)
{
    if (p->out_fd < 0)
        return;
    char *parts[2] = {proc_read_all(p, 1, NULL), proc_read_stderr(p, 1)};
    for (int i = 0; i < 2; i++) {
        size_t n = strlen(parts[i]);
        if (n || !*log) {
            *log = realloc(*log, *len + n + 1);
            memcpy(*log + *len, parts[i], n + 1);
            *len += n;
        }
        free(parts[i]);
    }
}

int proc_write(proc_t *p, const char *s)
{
    size_t n = strlen(s);
    while (n > 0) {
        ssize_t w = write(p->in_fd, s, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        s += w;
        n -= (size_t)w;
    }
    return 0;
}

void proc_close_stdin(proc_t *p)
{
    if (p->in_fd >= 0)
        close(p->in_fd);
    p->in_fd = -1;
}

int proc_wait(proc_t *p, int timeout_ms)
{
    long long deadline = proc_now_ms() + timeout_ms;
    if (p->pid <= 0)
        return -1;
    for (;;) {
        int st;
        pid_t r = waitpid(p->pid, &st, WNOHANG);
        if (r == p->pid) {
            p->pid = 0;
            if (WIFEXITED(st))
                return WEXITSTATUS(st);
            return 128 + WTERMSIG(st);
        }
        if (ms_left(deadline) == 0)
            return -1;
        /* Polling a child's exit: no portable fd to wait on in C11/POSIX. */
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

void proc_close(proc_t *p)
{
    proc_close_stdin(p);
    if (p->out_fd >= 0)
        close(p->out_fd);
    if (p->err_fd >= 0)
        close(p->err_fd);
    p->out_fd = p->err_fd = -1;
}

void proc_kill(proc_t *p)
{
    if (p->pid > 0) {
        kill(p->pid, SIGKILL);
        waitpid(p->pid, NULL, 0);
        p->pid = 0;
    }
    proc_close(p);
}

int proc_run(char *const argv[], const char *input, int timeout_ms, char **out)
{
    proc_t p;
    long long deadline = proc_now_ms() + timeout_ms;
    *out = NULL;
    if (proc_spawn(&p, argv))
        return -1;
    size_t in_len = input ? strlen(input) : 0, in_off = 0;
    size_t cap = 8192, len = 0;
    char *buf = malloc(cap);
    buf[0] = '\0';
    int out_open = 1, err_open = 1;
    if (in_len == 0)
        proc_close_stdin(&p);
    /* Feed stdin while draining stdout and stderr, so neither side can
     * block the other on a full pipe. */
    while ((out_open || err_open || p.in_fd >= 0) && ms_left(deadline) > 0) {
        struct pollfd pfd[3];
        int n = 0, iin = -1, iout = -1, ierr = -1;
        if (p.in_fd >= 0) {
            iin = n;
            pfd[n++] = (struct pollfd){.fd = p.in_fd, .events = POLLOUT};
        }
        if (out_open) {
            iout = n;
            pfd[n++] = (struct pollfd){.fd = p.out_fd, .events = POLLIN};
        }
        if (err_open) {
            ierr = n;
            pfd[n++] = (struct pollfd){.fd = p.err_fd, .events = POLLIN};
        }
        if (poll(pfd, (nfds_t)n, ms_left(deadline)) <= 0)
            continue;
        if (iin >= 0 && pfd[iin].revents) {
            ssize_t w = write(p.in_fd, input + in_off, in_len - in_off);
            if (w > 0)
                in_off += (size_t)w;
            if (w <= 0 || in_off == in_len)
                proc_close_stdin(&p);
        }
        if (iout >= 0 && pfd[iout].revents) {
            if (cap - len < 4096) {
                cap *= 2;
                buf = realloc(buf, cap);
            }
            ssize_t r = read(p.out_fd, buf + len, cap - len - 1);
            if (r <= 0)
                out_open = 0;
            else {
                len += (size_t)r;
                buf[len] = '\0';
            }
        }
        if (ierr >= 0 && pfd[ierr].revents) {
            char sink[4096];
            if (read(p.err_fd, sink, sizeof(sink)) <= 0)
                err_open = 0;
        }
    }
    *out = buf;
    int st = proc_wait(&p, ms_left(deadline));
    if (st < 0)
        proc_kill(&p);
    proc_close(&p);
    return st;
}
