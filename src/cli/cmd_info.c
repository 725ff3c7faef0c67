/* defectnet info: describe a model file.
 *
 *   defectnet info MODEL [--json]
 *
 * Prints file format, sha256 of the file and of the source weights, architecture
 * (layers and widths per stage), parameter count, classes in output order, the
 * preprocessing contract, calibration (temperature, threshold) and every other
 * metadata key (e.g. the quantization accuracy guard) verbatim. --json prints one
 * JSON object instead. Exit: 0, 1 unloadable model (one-line message), 2 usage. */
#include "core/core.h"
#include "core/json.h"
#include "eval/policy.h"
#include "io/modelfile.h"
#include "nn/model.h"
#include "ood/ood.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static dn_weight_format sniff(const char *path) {
    uint8_t head[16];
    FILE *f = fopen(path, "rb");
    if (!f) return DN_WFMT_UNKNOWN;
    size_t n = fread(head, 1, sizeof head, f);
    fclose(f);
    return dn_weights_detect(head, n);
}

static const char *good_source(const dn_good_class *g) {
    if (g->index < 0) return "none";
    if (g->stored) return g->auto_detected ? "stored, auto-detected from the class names" : "stored, given";
    return "auto-detected from the class names, not stored";
}

/* Which class means "good part" and how decisions are made (eval/policy.h). */
static void print_good_class(const dn_model *m) {
    dn_good_class g;
    dn_policy pol;
    if (dn_model_good_class(m, &g) || dn_model_policy(m, &pol)) {
        printf("good class:    invalid metadata: %s\n", dn_last_error());
        return;
    }
    if (g.index < 0) {
        printf("good class:    none (no class name means a good part; set one with --good-class NAME)\n");
        return;
    }
    printf("good class:    %s (%s)\n", m->class_names[g.index], good_source(&g));
    if (pol.good_threshold > 0)
        printf("decision:      reject unless confidently good: accepted only if p(%s) >= %.4g\n",
               m->class_names[g.index], (double)pol.good_threshold);
    else
        printf("decision:      predicted class, uncertain below the confidence threshold\n");
}

static void print_json(const char *path, const dn_model *m, dn_weight_format fmt) {
    dn_sb b = {0};
    dn_sb_puts(&b, "{\"file\":");
    dn_sb_json_str(&b, path);
    dn_sb_printf(&b, ",\"format\":\"%s\",\"sha256\":\"%s\",\"source_sha256\":\"%s\",\"arch\":\"%s\"",
                 dn_weight_format_name(fmt), m->sha256, m->source_sha256, m->arch);
    dn_sb_printf(&b, ",\"layers\":[%d,%d,%d,%d],\"widths\":[%d,%d,%d,%d],\"stem\":%d,\"feat_dim\":%d,\"params\":%lld",
                 m->layers[0], m->layers[1], m->layers[2], m->layers[3], m->widths[0], m->widths[1], m->widths[2], m->widths[3],
                 m->conv1.cout, m->feat_dim, (long long)dn_model_param_count(m));
    dn_sb_printf(&b, ",\"num_classes\":%d,\"classes\":[", m->num_classes);
    for (int i = 0; i < m->num_classes; i++) {
        if (i) dn_sb_puts(&b, ",");
        dn_sb_json_str(&b, dn_model_class_name(m, i));
    }
    const dn_preproc *pp = &m->pp;
    dn_sb_printf(&b, "],\"preprocess\":{\"resize\":%d,\"crop\":%d,\"mean\":[%.9g,%.9g,%.9g],\"std\":[%.9g,%.9g,%.9g],"
                     "\"channel_order\":\"%s\",\"interpolation\":\"bilinear_antialias\"}",
                 pp->resize, pp->crop, (double)pp->mean[0], (double)pp->mean[1], (double)pp->mean[2], (double)pp->std[0],
                 (double)pp->std[1], (double)pp->std[2], pp->bgr ? "BGR" : "RGB");
    dn_sb_printf(&b, ",\"temperature\":%.9g,\"threshold\":%.9g", (double)m->temperature, (double)m->threshold);
    dn_good_class g;
    dn_policy pol;
    if (m->num_classes > 0 && !dn_model_good_class(m, &g) && !dn_model_policy(m, &pol)) {
        dn_sb_puts(&b, ",\"good_class\":");
        if (g.index >= 0) dn_sb_json_str(&b, m->class_names[g.index]);
        else dn_sb_puts(&b, "null");
        dn_sb_printf(&b, ",\"good_class_source\":\"%s\",\"good_threshold\":%.9g", good_source(&g),
                     (double)pol.good_threshold);
    }
    dn_sb_puts(&b, ",\"metadata\":{");
    for (int i = 0; i < m->meta.n; i++) {
        if (i) dn_sb_puts(&b, ",");
        dn_sb_json_str(&b, m->meta.keys[i]);
        dn_sb_puts(&b, ":");
        dn_sb_json_str(&b, m->meta.vals[i]);
    }
    dn_sb_puts(&b, "}}\n");
    if (!b.oom) fputs(b.s, stdout);
    dn_sb_free(&b);
}

/* 0 if everything printed reached standard output, else 1 with one line naming
 * the problem (a full disk or closed pipe must not look like success). */
static int stdout_written(void) {
    if (fflush(stdout) == 0 && !ferror(stdout)) return 0;
    fprintf(stderr, "defectnet info: cannot write to standard output: %s\n", strerror(errno ? errno : EIO));
    return 1;
}

int cmd_info(int argc, char **argv) {
    const char *path = NULL;
    int json = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("usage: defectnet info MODEL [--json]\n");
            return 0;
        } else if (!strcmp(argv[i], "--json")) json = 1;
        else if (argv[i][0] == '-' && argv[i][1]) { fprintf(stderr, "defectnet info: unknown option '%s'\n", argv[i]); return 2; }
        else if (!path) path = argv[i];
        else { fprintf(stderr, "defectnet info: unexpected argument '%s'\n", argv[i]); return 2; }
    }
    if (!path) { fprintf(stderr, "usage: defectnet info MODEL [--json]\n"); return 2; }
    dn_model *m;
    if (dn_model_load(path, &m)) {
        fprintf(stderr, "defectnet info: %s\n", dn_last_error());
        return 1;
    }
    dn_weight_format fmt = sniff(path);
    if (json) {
        print_json(path, m, fmt);
        dn_model_free(m);
        return stdout_written();
    }
    printf("file:          %s\n", path);
    printf("format:        %s\n", dn_weight_format_name(fmt));
    printf("sha256:        %s\n", m->sha256);
    printf("source sha256: %s%s\n", m->source_sha256[0] ? m->source_sha256 : "(unknown)",
           strcmp(m->sha256, m->source_sha256) ? "" : " (this file)");
    printf("architecture:  %s: stem %d, blocks %d/%d/%d/%d, widths %d/%d/%d/%d, features %d\n", m->arch, m->conv1.cout,
           m->layers[0], m->layers[1], m->layers[2], m->layers[3], m->widths[0], m->widths[1], m->widths[2], m->widths[3],
           m->feat_dim);
    printf("parameters:    %lld (incl. BatchNorm buffers)\n", (long long)dn_model_param_count(m));
    if (m->num_classes == 0) printf("classes:       none (backbone only)\n");
    else {
        printf("classes:       %d:", m->num_classes);
        int shown = m->num_classes > 20 ? 10 : m->num_classes;
        for (int i = 0; i < shown; i++) printf(" %d=%s", i, dn_model_class_name(m, i));
        if (shown < m->num_classes) printf(" ... %d=%s", m->num_classes - 1, dn_model_class_name(m, m->num_classes - 1));
        printf("\n");
    }
    const dn_preproc *pp = &m->pp;
    printf("preprocessing: resize shorter side to %d (bilinear, antialiased), center crop %dx%d, %s, "
           "mean %.4g,%.4g,%.4g std %.4g,%.4g,%.4g\n",
           pp->resize, pp->crop, pp->crop, pp->bgr ? "BGR" : "RGB", (double)pp->mean[0], (double)pp->mean[1],
           (double)pp->mean[2], (double)pp->std[0], (double)pp->std[1], (double)pp->std[2]);
    printf("calibration:   temperature %.4g%s, threshold %.4g%s\n", (double)m->temperature,
           m->temperature == 1.0f ? " (uncalibrated)" : "", (double)m->threshold,
           m->threshold == 0.0f ? " (never uncertain)" : "");
    char ood_desc[400];
    dn_ood_describe(m->ood, ood_desc, sizeof ood_desc);
    printf("unknown inputs: %s\n", ood_desc);
    if (m->num_classes > 0) print_good_class(m);
    for (int i = 0; i < m->meta.n; i++) printf("meta %s: %s\n", m->meta.keys[i], m->meta.vals[i]);
    dn_model_free(m);
    return stdout_written();
}
