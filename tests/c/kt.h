/* kt.h — the tiny test framework of kiln_tests. Each TEST registers itself at start-up; the runner
 * (tests/c/main.c) runs all of them, or those whose name contains argv[1], and closes with the line
 * "N passed, N failed". A test fails at its first failed CHECK. */
#ifndef KT_H
#define KT_H

#include <math.h>
#include <stdbool.h>
#include <stdio.h>

typedef void (*kt_fn)(void);
void kt_register(const char *name, kt_fn fn);
void kt_fail(const char *file, int line, const char *fmt, ...);
/* Path of a file under ../shared (or $KILN_SHARED); the result is a static buffer per call slot. */
const char *kt_shared(const char *rel);
/* A fresh empty temporary directory for this test (removed at exit). */
const char *kt_tmpdir(void);
bool kt_failed(void);

#define TEST(name)                                                            \
    static void name(void);                                                   \
    __attribute__((constructor)) static void kt_reg_##name(void) {            \
        kt_register(#name, name);                                             \
    }                                                                         \
    static void name(void)

#define CHECK(cond)                                                           \
    do {                                                                      \
        if (!(cond)) {                                                        \
            kt_fail(__FILE__, __LINE__, "CHECK(%s)", #cond);                  \
            return;                                                           \
        }                                                                     \
    } while (0)

#define CHECKF(cond, ...)                                                     \
    do {                                                                      \
        if (!(cond)) {                                                        \
            kt_fail(__FILE__, __LINE__, __VA_ARGS__);                         \
            return;                                                           \
        }                                                                     \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                    \
    do {                                                                      \
        long long kt_a = (long long)(a), kt_b = (long long)(b);               \
        if (kt_a != kt_b) {                                                   \
            kt_fail(__FILE__, __LINE__, "%s == %s (%lld vs %lld)", #a, #b,    \
                    kt_a, kt_b);                                              \
            return;                                                           \
        }                                                                     \
    } while (0)

#endif
