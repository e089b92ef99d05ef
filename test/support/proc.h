/*
 * Child processes for tests: spawn with pipes, read lines and output with
 * deadlines, wait with a deadline. Every wait is bounded, so a hung child
 * fails the test instead of hanging it.
 */
#ifndef RILL_TEST_PROC_H
#define RILL_TEST_PROC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct proc {
    pid_t pid;
    int in_fd;      /* write end of the child's stdin, or -1 */
    int out_fd;     /* read end of the child's stdout, or -1 */
    int err_fd;     /* read end of the child's stderr, or -1 */
    char buf[8192]; /* stdout bytes read but not yet returned as a line */
    size_t len;
} proc_t;

/* CLOCK_MONOTONIC in milliseconds: the clock every deadline here uses. */
int64_t proc_now_ms(void);

/* Sleep for ms milliseconds (polling a condition a test waits on). */
void proc_nap_ms(int ms);

/* Start argv[0] (a path) with stdin, stdout and stderr on pipes. Returns 0
 * or -1 with errno set. */
int proc_spawn(proc_t *p, char *const argv[]);

/* Read one line (without the newline) from the child's stdout within
 * timeout_ms. Returns its length, or -1 on timeout or EOF. */
int proc_read_line(proc_t *p, char *line, size_t size, int timeout_ms);

/* Read the child's stdout until EOF or timeout_ms; returns a malloc'ed,
 * NUL-terminated string (possibly partial), *timed_out set if it ran out. */
char *proc_read_all(proc_t *p, int timeout_ms, int *timed_out);

/* Read whatever the child wrote on stderr so far (non-blocking),
 * malloc'ed and NUL-terminated. */
char *proc_read_stderr(proc_t *p, int timeout_ms);

/* Append what the child wrote so far on stdout and stderr (waiting at most
 * a millisecond for each) to *log, a malloc'ed NUL-terminated string of
 * *len bytes (NULL and 0 at first): keeps a long-running child's pipes
 * from filling up and its output for failure messages. */
void proc_collect(proc_t *p, char **log, size_t *len);

/* Write a whole string to the child's stdin. Returns 0 or -1. */
int proc_write(proc_t *p, const char *s);

/* Close the child's stdin (EOF for it). */
void proc_close_stdin(proc_t *p);

/* Wait for exit within timeout_ms. Returns the exit status (0..255), 128+sig
 * if killed by a signal, or -1 on timeout (the child keeps running). */
int proc_wait(proc_t *p, int timeout_ms);

/* SIGKILL, reap, close pipes. Safe on an already-reaped child. */
void proc_kill(proc_t *p);

/* Close the pipes of a reaped child. */
void proc_close(proc_t *p);

/* Run argv to completion with `input` on stdin, capture stdout; returns the
 * exit status as proc_wait, and *out (malloc'ed) holds stdout. */
int proc_run(char *const argv[], const char *input, int timeout_ms, char **out);

#endif /* RILL_TEST_PROC_H */
