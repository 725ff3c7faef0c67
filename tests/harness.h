/* Minimal test harness. Each test binary:
 *   TEST(name) { CHECK(cond); CHECK_NEAR(a, b, tol); ... SKIP("why"); }
 *   int main(void) { RUN(name); ...; return REPORT(); }
 * Prints one line per test and a final "RESULT passed=P failed=F skipped=S"
 * that tests/run.sh aggregates. Exits non-zero if anything failed. */
#ifndef DN_HARNESS_H
#define DN_HARNESS_H
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int h_pass, h_fail, h_skip, h_cur_fail, h_cur_skip;
static const char *h_cur;

#define TEST(name) static void test_##name(void)
#define RUN(name)                                                            \
    do {                                                                     \
        h_cur = #name; h_cur_fail = 0; h_cur_skip = 0;                       \
        test_##name();                                                       \
        if (h_cur_skip) { h_skip++; }                                        \
        else if (h_cur_fail) { h_fail++; printf("FAIL %s\n", #name); }       \
        else { h_pass++; printf("ok   %s\n", #name); }                       \
        fflush(stdout);                                                      \
    } while (0)
#define CHECK(c)                                                             \
    do { if (!(c)) { h_cur_fail = 1;                                         \
        printf("  %s:%d: %s: CHECK(%s) failed\n", __FILE__, __LINE__, h_cur, #c); } } while (0)
#define CHECK_MSG(c, ...)                                                    \
    do { if (!(c)) { h_cur_fail = 1;                                         \
        printf("  %s:%d: %s: CHECK(%s) failed: ", __FILE__, __LINE__, h_cur, #c); \
        printf(__VA_ARGS__); printf("\n"); } } while (0)
#define CHECK_NEAR(a, b, tol)                                                \
    do { double _a = (a), _b = (b);                                          \
        if (!(fabs(_a - _b) <= (tol))) { h_cur_fail = 1;                     \
        printf("  %s:%d: %s: %s=%g vs %s=%g (tol %g)\n", __FILE__, __LINE__, \
               h_cur, #a, _a, #b, _b, (double)(tol)); } } while (0)
/* Marks the current test skipped with a visible reason, and returns from it. */
#define SKIP(...)                                                            \
    do { h_cur_skip = 1; printf("SKIP %s: ", h_cur); printf(__VA_ARGS__);    \
        printf("\n"); return; } while (0)
#define REPORT()                                                             \
    (printf("RESULT passed=%d failed=%d skipped=%d\n", h_pass, h_fail, h_skip), \
     h_fail ? 1 : 0)

/* Path of ../shared/datasets (or $DN_SHARED/datasets); NULL if absent. */
static inline const char *h_shared(void) {
    static char buf[1024];
    const char *e = getenv("DN_SHARED");
    snprintf(buf, sizeof buf, "%s", e && *e ? e : "../shared");
    char probe[1100];
    snprintf(probe, sizeof probe, "%s/datasets", buf);
    FILE *f = fopen(probe, "r");
    if (!f) return NULL;
    fclose(f);
    return buf;
}
#endif
