/* Core services: errors, thread pool, RNG. */
#include "core/core.h"
#include "harness.h"

TEST(error_one_line) {
    dn_status s = dn_fail(DN_ERR_FORMAT, "%s: bad\nthing", "x.pth");
    CHECK(s == DN_ERR_FORMAT);
    CHECK(strcmp(dn_last_error(), "x.pth: bad thing") == 0);
    dn_fail_prefix(DN_ERR_IO, "loading");
    CHECK(strcmp(dn_last_error(), "loading: x.pth: bad thing") == 0);
}

typedef struct { long sum[8]; } sum_arg;
static void sum_job(void *a, int ith, int nth) {
    sum_arg *s = a;
    long b, e;
    dn_split(1000, ith, nth, &b, &e);
    long t = 0;
    for (long i = b; i < e; i++) t += i;
    s->sum[ith] = t;
}

TEST(pool_covers_range) {
    for (int n = 1; n <= 5; n++) {
        dn_pool *p = dn_pool_new(n);
        CHECK(p != NULL);
        for (int rep = 0; rep < 50; rep++) {
            sum_arg a = {{0}};
            dn_pool_run(p, sum_job, &a);
            long t = 0;
            for (int i = 0; i < n; i++) t += a.sum[i];
            CHECK(t == 999L * 1000 / 2);
        }
        dn_pool_free(p);
    }
}

TEST(rng_deterministic) {
    dn_rng a, b;
    dn_rng_seed(&a, 42);
    dn_rng_seed(&b, 42);
    for (int i = 0; i < 100; i++) CHECK(dn_rng_next(&a) == dn_rng_next(&b));
    double m = 0;
    for (int i = 0; i < 10000; i++) m += dn_rng_uniform(&a);
    CHECK_NEAR(m / 10000, 0.5, 0.02);
}

TEST(read_file_errors) {
    uint8_t *d; size_t n;
    CHECK(dn_read_file("/nonexistent/file", 100, &d, &n) == DN_ERR_IO);
    CHECK(strstr(dn_last_error(), "/nonexistent/file") != NULL);
    CHECK(dn_read_file("/", 100, &d, &n) == DN_ERR_IO);
}

int main(void) {
    RUN(error_one_line);
    RUN(pool_covers_range);
    RUN(rng_deterministic);
    RUN(read_file_errors);
    return REPORT();
}
