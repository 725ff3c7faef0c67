/* `defectnet synth`: writes the synthetic defect-image dataset (ImageFolder of
 * grayscale PNGs) that the demo trains on without any downloaded data. */
#include "cli/args.h"
#include "core/core.h"
#include "io/synth.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void synth_usage(FILE *f) {
    fprintf(f, "usage: defectnet synth -o|--out DIR [--per-class N] [--size S] [--seed K]\n"
               "  Writes DIR/<class>/<class>_NNNN.png, grayscale S x S metal-like textures with one\n"
               "  defect type per class: clean, crack, inclusion, patch, scratch, spot.\n"
               "  Defaults: --per-class 100, --size 128 (%d..%d), --seed 1. Same seed, same images.\n" DN_EXIT_HELP,
            DN_SYNTH_MIN_SIZE, DN_SYNTH_MAX_SIZE);
}

int cmd_synth(int argc, char **argv) {
    dn_synth_cfg cfg;
    dn_synth_cfg_default(&cfg);
    const char *out = NULL;
    enum { O_PER_CLASS = 256, O_SIZE, O_SEED };
    static const dn_opt opts[] = {{"out", 'o', DN_ARG_REQ, NULL}, {"per-class", O_PER_CLASS, DN_ARG_REQ, NULL},
                                  {"size", O_SIZE, DN_ARG_REQ, NULL}, {"seed", O_SEED, DN_ARG_REQ, NULL}, {0}};
    dn_args a;
    dn_args_init(&a, "synth", argc, argv, opts);
    long long x;
    for (int c; (c = dn_args_next(&a)) != -1;) {
        switch (c) {
        case 'h': synth_usage(stdout); return 0;
        case 'o': out = a.val; break;
        case O_PER_CLASS: if (dn_arg_int(&a, 1, 1000000, &cfg.per_class)) return DN_EXIT_USAGE; break;
        case O_SIZE: if (dn_arg_int(&a, DN_SYNTH_MIN_SIZE, DN_SYNTH_MAX_SIZE, &cfg.size)) return DN_EXIT_USAGE; break;
        case O_SEED:
            if (dn_arg_long(&a, 0, (long long)1 << 62, &x)) return DN_EXIT_USAGE;
            cfg.seed = (uint64_t)x;
            break;
        default: return DN_EXIT_USAGE; /* already reported in one line */
        }
    }
    if (dn_args_npos(&a)) return dn_usage_error("synth", "unexpected argument '%s'", dn_args_pos(&a, 0));
    if (!out) return dn_usage_error("synth", "--out is required (see defectnet synth --help)");
    int n = 0;
    double t0 = dn_now();
    dn_status st = dn_synth_write(out, &cfg, &n);
    if (st) return dn_cli_fail("synth", st);
    printf("wrote %d images (%d classes x %d, %dx%d, seed %llu) to %s in %.1f s\n", n, dn_synth_num_classes(),
           cfg.per_class, cfg.size, cfg.size, (unsigned long long)cfg.seed, out, dn_now() - t0);
    return 0;
}
