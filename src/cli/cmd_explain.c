/* defectnet explain: Grad-CAM heatmap overlays (docs/ood.md).
 *
 *   defectnet explain -m|--model M -o|--out DIR [--class NAME] [--layer layer1..layer4] IMG...
 *
 * For each image: the model's preprocessing, the eval-mode forward and the
 * backward of the predicted class's logit (or --class) to the stage output
 * (default layer4), Grad-CAM, and DIR/<image name>.cam.png: the model's input
 * view with the map blended over it. The colour scale is the model's absolute
 * reference (stored by `defectnet calibrate`); a model without one falls back
 * to each map's own maximum, with a warning.
 * One line per image on stdout: path, class explained, predicted class, overlay.
 *
 * Exit status (args.h): 0 all written; 1 some images failed (the others were
 * written); 2 usage, model or data error; 3 internal. */
#include "cli/args.h"
#include "commands.h"
#include "core/core.h"
#include "core/progress.h"
#include "eval/report.h"
#include "nn/engine.h"
#include "nn/model.h"
#include "ood/gradcam.h"
#include "ood/ood.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PFX "defectnet explain: "

static void usage(FILE *f) {
    fprintf(f, "usage: defectnet explain -m|--model M -o|--out DIR [--class NAME] [--layer layer4] IMG...\n"
               "  -m, --model M    defectnet model (with a Grad-CAM reference scale after `defectnet calibrate`)\n"
               "  -o, --out DIR    overlays are written to DIR/<image name>.cam.png (DIR is created)\n"
               "  --class NAME     explain this class instead of the predicted one\n"
               "  --layer L        layer1 | layer2 | layer3 | layer4 (default): the stage whose output is weighted\n"
               "  one line per image on stdout: path, class explained, predicted class, overlay file\n" DN_EXIT_HELP);
}

static dn_status explain_one(const dn_model *m, dn_session *s, const char *path, const char *dir, int layer, int cls,
                             char *outp, size_t outn, int *used, int *pred) {
    dn_image img;
    memset(&img, 0, sizeof img); /* dn_image_load leaves stride/format unset */
    dn_status st = dn_image_load(path, &img);
    if (st) return st;
    st = dn_preprocess(&img, &m->pp, dn_session_input(s));
    dn_image_free(&img);
    if (st) return st;
    uint8_t *png = NULL;
    size_t len = 0;
    st = dn_gradcam_png(m, s, dn_session_input(s), layer, cls, &png, &len, used, pred);
    if (st) return st;
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    snprintf(outp, outn, "%s/%s.cam.png", dir, base);
    st = dn_write_file(outp, png, len);
    free(png);
    return st;
}

int cmd_explain(int argc, char **argv) {
    const char *model = NULL, *out = NULL, *cname = NULL;
    int layer = 4, rc = DN_EXIT_USAGE, failed = 0, done_n = 0;
    dn_model *m = NULL;
    dn_session *s = NULL;
    enum { O_CLASS = 256, O_LAYER };
    static const dn_opt opts[] = {{"model", 'm', DN_ARG_REQ, NULL}, {"out", 'o', DN_ARG_REQ, NULL},
                                  {"class", O_CLASS, DN_ARG_REQ, NULL}, {"layer", O_LAYER, DN_ARG_REQ, NULL}, {0}};
    dn_args a;
    dn_args_init(&a, "explain", argc, argv, opts);
    for (int c; (c = dn_args_next(&a)) != -1;) {
        switch (c) {
        case 'h': usage(stdout); return DN_EXIT_OK;
        case 'm': model = a.val; break;
        case 'o': out = a.val; break;
        case O_CLASS: cname = a.val; break;
        case O_LAYER:
            if ((layer = dn_gradcam_layer_parse(a.val)) < 0)
                return dn_usage_error("explain", "--layer '%s': expected layer1, layer2, layer3 or layer4", a.val);
            break;
        default: return DN_EXIT_USAGE;
        }
    }
    char **imgs = a.argv + a.ind;
    int nimg = dn_args_npos(&a);
    if (!model || !out) return dn_usage_error("explain", "--model and --out are required (see defectnet explain --help)");
    if (!nimg) return dn_usage_error("explain", "no images given");
    if (dn_model_load(model, &m)) { fprintf(stderr, PFX "%s\n", dn_last_error()); goto done; }
    if (m->num_classes < 1) { fprintf(stderr, PFX "%s: the model has no classification head\n", model); goto done; }
    int cls = -1;
    if (cname) {
        for (int k = 0; k < m->num_classes; k++)
            if (!strcmp(cname, m->class_names[k])) cls = k;
        if (cls < 0) { fprintf(stderr, PFX "--class: '%s' is not one of the model's classes\n", cname); goto done; }
    }
    struct stat sb;
    if (mkdir(out, 0777) != 0 && (errno != EEXIST || stat(out, &sb) != 0 || !S_ISDIR(sb.st_mode))) {
        fprintf(stderr, PFX "%s: cannot create the output folder: %s\n", out, strerror(errno == EEXIST ? ENOTDIR : errno));
        goto done;
    }
    float ref = m->ood ? m->ood->cam_ref[layer - 1] : 0;
    if (!(ref > 0))
        fprintf(stderr, PFX "warning: %s has no Grad-CAM reference scale (run `defectnet calibrate`): colours are relative to "
                        "each image's own maximum\n", model);
    if (dn_session_new(m, 1, 0, &s)) { fprintf(stderr, PFX "%s\n", dn_last_error()); goto done; }
    dn_progress pg;
    dn_progress_start(&pg, "explain", nimg);
    if (isatty(STDOUT_FILENO)) pg.on = 0; /* the result lines themselves show progress on a terminal */
    for (int i = 0; i < nimg; i++) {
        char op[4200];
        int used = -1, pred = -1;
        dn_progress_update(&pg, i);
        if (explain_one(m, s, imgs[i], out, layer, cls, op, sizeof op, &used, &pred)) {
            dn_progress_clear(&pg);
            const char *e = dn_last_error();
            if (strstr(e, imgs[i])) fprintf(stderr, PFX "%s\n", e);
            else fprintf(stderr, PFX "%s: %s\n", imgs[i], e);
            failed++;
            continue;
        }
        printf("%s\t%s\t(predicted %s)\t%s\n", imgs[i], m->class_names[used], m->class_names[pred], op);
        fflush(stdout);
        done_n++;
    }
    dn_progress_end(&pg);
    rc = failed ? (done_n ? 1 : 2) : 0;
done:
    dn_session_free(s);
    dn_model_free(m);
    return rc;
}
