/*
 * Test files include this instead of <criterion/criterion.h>.
 *
 * Normally it is Criterion. With RILL_RTEST_STANDALONE defined it is a small
 * stand-in (run by rtest_main.c) that provides the subset rill's tests use,
 * because Criterion 2.4.1 cannot start under ThreadSanitizer
 * (Snaipe/Criterion#274): Test(suite, name, .timeout = s) and the cr_assert*
 * / cr_expect* macros, each with an optional printf-style message.
 *
 * Stand-in semantics: every test runs in its own forked child; a failed
 * cr_assert* ends the child at once (from any thread) after running the
 * test's .fini, a failed cr_expect* is recorded and fails the test when it
 * returns. .init runs before the test, .fini after it (also when it
 * failed), both in the child, as with Criterion. Messages must be string
 * literals (as they are in practice with Criterion).
 */
#ifndef RILL_RTEST_H
#define RILL_RTEST_H

#ifndef RILL_RTEST_STANDALONE

#include <criterion/criterion.h>

#else /* RILL_RTEST_STANDALONE */

#include <stdbool.h>
#include <string.h>

/* The designated initialisers Criterion accepts after Test(suite, name, ...).
 * timeout (seconds), disabled, init and fini are honoured; the others are
 * accepted and ignored. */
struct rtest_opts {
    int rtest_unused_; /* lets `{ .rtest_unused_ = 0, __VA_ARGS__ }` be valid when empty */
    double timeout;
    bool disabled;
    const char *description;
    void (*init)(void);
    void (*fini)(void);
    int signal;
    int exit_code;
};

struct rtest_case {
    const char *suite;
    const char *name;
    void (*fn)(void);
    struct rtest_opts opts;
    struct rtest_case *next;
};

void rtest_register_(struct rtest_case *tc);

/* Reports a failed check (fmt starts with one space, which is not printed)
 * and, if fatal, ends the test process. */
void rtest_failed_(int fatal, const char *file, int line, const char *expr, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

#define Test(suite, name, ...)                                                                     \
    static void rtest_fn_##suite##_##name(void);                                                   \
    static struct rtest_case rtest_case_##suite##_##name = {                                       \
        #suite, #name, rtest_fn_##suite##_##name, {.rtest_unused_ = 0, __VA_ARGS__}, NULL};        \
    __attribute__((constructor)) static void rtest_reg_##suite##_##name(void)                      \
    {                                                                                              \
        rtest_register_(&rtest_case_##suite##_##name);                                             \
    }                                                                                              \
    static void rtest_fn_##suite##_##name(void)

/* The leading " " keeps the format non-empty (no -Wformat-zero-length) when
 * no message is given, and still lets the compiler check messages. */
#define RTEST_CHECK_(fatal, ok, expr, ...)                                                         \
    do {                                                                                           \
        if (!(ok))                                                                                 \
            rtest_failed_((fatal), __FILE__, __LINE__, (expr), " " __VA_ARGS__);                   \
    } while (0)

#define cr_assert(c, ...)          RTEST_CHECK_(1, (c), #c, __VA_ARGS__)
#define cr_assert_not(c, ...)      RTEST_CHECK_(1, !(c), "!(" #c ")", __VA_ARGS__)
#define cr_assert_eq(a, b, ...)    RTEST_CHECK_(1, (a) == (b), #a " == " #b, __VA_ARGS__)
#define cr_assert_neq(a, b, ...)   RTEST_CHECK_(1, (a) != (b), #a " != " #b, __VA_ARGS__)
#define cr_assert_lt(a, b, ...)    RTEST_CHECK_(1, (a) < (b), #a " < " #b, __VA_ARGS__)
#define cr_assert_leq(a, b, ...)   RTEST_CHECK_(1, (a) <= (b), #a " <= " #b, __VA_ARGS__)
#define cr_assert_gt(a, b, ...)    RTEST_CHECK_(1, (a) > (b), #a " > " #b, __VA_ARGS__)
#define cr_assert_geq(a, b, ...)   RTEST_CHECK_(1, (a) >= (b), #a " >= " #b, __VA_ARGS__)
#define cr_assert_null(p, ...)     RTEST_CHECK_(1, (p) == NULL, #p " == NULL", __VA_ARGS__)
#define cr_assert_not_null(p, ...) RTEST_CHECK_(1, (p) != NULL, #p " != NULL", __VA_ARGS__)
#define cr_assert_str_eq(a, b, ...)                                                                \
    RTEST_CHECK_(1, strcmp((a), (b)) == 0, #a " equals " #b, __VA_ARGS__)
#define cr_assert_str_neq(a, b, ...)                                                               \
    RTEST_CHECK_(1, strcmp((a), (b)) != 0, #a " differs from " #b, __VA_ARGS__)
#define cr_assert_fail(...) RTEST_CHECK_(1, 0, "cr_assert_fail", __VA_ARGS__)
#define cr_assert_arr_eq(a, b, size, ...)                                                          \
    RTEST_CHECK_(1, memcmp((a), (b), (size)) == 0, #a " equals " #b, __VA_ARGS__)

#define cr_expect(c, ...)          RTEST_CHECK_(0, (c), #c, __VA_ARGS__)
#define cr_expect_not(c, ...)      RTEST_CHECK_(0, !(c), "!(" #c ")", __VA_ARGS__)
#define cr_expect_eq(a, b, ...)    RTEST_CHECK_(0, (a) == (b), #a " == " #b, __VA_ARGS__)
#define cr_expect_neq(a, b, ...)   RTEST_CHECK_(0, (a) != (b), #a " != " #b, __VA_ARGS__)
#define cr_expect_lt(a, b, ...)    RTEST_CHECK_(0, (a) < (b), #a " < " #b, __VA_ARGS__)
#define cr_expect_leq(a, b, ...)   RTEST_CHECK_(0, (a) <= (b), #a " <= " #b, __VA_ARGS__)
#define cr_expect_gt(a, b, ...)    RTEST_CHECK_(0, (a) > (b), #a " > " #b, __VA_ARGS__)
#define cr_expect_geq(a, b, ...)   RTEST_CHECK_(0, (a) >= (b), #a " >= " #b, __VA_ARGS__)
#define cr_expect_null(p, ...)     RTEST_CHECK_(0, (p) == NULL, #p " == NULL", __VA_ARGS__)
#define cr_expect_not_null(p, ...) RTEST_CHECK_(0, (p) != NULL, #p " != NULL", __VA_ARGS__)
#define cr_expect_str_eq(a, b, ...)                                                                \
    RTEST_CHECK_(0, strcmp((a), (b)) == 0, #a " equals " #b, __VA_ARGS__)
#define cr_expect_str_neq(a, b, ...)                                                               \
    RTEST_CHECK_(0, strcmp((a), (b)) != 0, #a " differs from " #b, __VA_ARGS__)
#define cr_expect_fail(...) RTEST_CHECK_(0, 0, "cr_expect_fail", __VA_ARGS__)
#define cr_expect_arr_eq(a, b, size, ...)                                                          \
    RTEST_CHECK_(0, memcmp((a), (b), (size)) == 0, #a " equals " #b, __VA_ARGS__)

#endif /* RILL_RTEST_STANDALONE */

#endif /* RILL_RTEST_H */
