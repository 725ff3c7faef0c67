/* `defectnet synth`: writes the synthetic defect-image dataset (ImageFolder of
 * grayscale PNGs) that the demo trains on without any downloaded data. */
#include "core/core.h"
#include "io/synth.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void synth_usage(FILE *f) {
    fprintf(f, "usage: defectnet synth --out DIR [--per-class N] [--size S] [--seed K]\n"
               "  Writes DIR/<class>/<class>_NNNN.png, grayscale S x S metal-like textures with one\n"
               "  defect type per class: clean, crack, inclusion, patch, scratch, spot.\n"
               "  Defaults: --per-class 100, --size 128 (%d..%d), --seed 1. Same seed, same images.\n",
            DN_SYNTH_MIN_SIZE, DN_SYNTH_MAX_SIZE);
}

/* Parses a whole decimal integer in [lo, hi]; returns 0 on success. */
static int parse_int(const char *opt, const char *v, long long lo, long long hi, long long *out) {
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi) {
        fprintf(stderr, "defectnet synth: %s: '%s' is not an integer in %lld..%lld\n", opt, v, lo, hi);
        return -1;
    }
    *out = x;
    return 0;
}

int cmd_synth(int argc, char **argv) {
    dn_synth_cfg cfg;
    dn_synth_cfg_default(&cfg);
    const char *out = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { synth_usage(stdout); return 0; }
        if (i + 1 >= argc) {
            fprintf(stderr, "defectnet synth: %s: unknown option or missing value\n", a);
            synth_usage(stderr);
            return 2;
        }
        const char *v = argv[++i];
        long long x;
        if (!strcmp(a, "--out")) out = v;
        else if (!strcmp(a, "--per-class")) {
            if (parse_int(a, v, 1, 1000000, &x)) return 2;
            cfg.per_class = (int)x;
        } else if (!strcmp(a, "--size")) {
            if (parse_int(a, v, DN_SYNTH_MIN_SIZE, DN_SYNTH_MAX_SIZE, &x)) return 2;
            cfg.size = (int)x;
        } else if (!strcmp(a, "--seed")) {
            if (parse_int(a, v, 0, (long long)1 << 62, &x)) return 2;
            cfg.seed = (uint64_t)x;
        } else {
            fprintf(stderr, "defectnet synth: unknown option %s\n", a);
            synth_usage(stderr);
            return 2;
        }
    }
    if (!out) {
        fprintf(stderr, "defectnet synth: --out is required\n");
        synth_usage(stderr);
        return 2;
    }
    int n = 0;
    double t0 = dn_now();
    if (dn_synth_write(out, &cfg, &n) != DN_OK) {
        fprintf(stderr, "defectnet synth: %s\n", dn_last_error());
        return 1;
    }
    printf("wrote %d images (%d classes x %d, %dx%d, seed %llu) to %s in %.1f s\n", n, dn_synth_num_classes(),
           cfg.per_class, cfg.size, cfg.size, (unsigned long long)cfg.seed, out, dn_now() - t0);
    return 0;
}
