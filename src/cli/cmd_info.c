/* defectnet info: describe a model file.
 *
 *   defectnet info [-m|--model] MODEL [-f|--format table|json] [-o|--out FILE]
 *
 * Prints file format, sha256 of the file and of the source weights, architecture
 * (layers and widths per stage), parameter count, classes in output order, the
 * preprocessing contract, calibration (temperature, threshold) and every other
 * metadata key (e.g. the quantization accuracy guard) verbatim. --format json
 * (or --json) prints one JSON object instead. Exit codes: args.h. */
#include "cli/args.h"
#include "core/core.h"
#include "core/json.h"
#include "eval/policy.h"
#include "io/modelfile.h"
#include "nn/model.h"
#include "ood/ood.h"
#include "trust/drift.h"
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
static void print_good_class(FILE *o, const dn_model *m) {
    dn_good_class g;
    dn_policy pol;
    if (dn_model_good_class(m, &g) || dn_model_policy(m, &pol)) {
        fprintf(o, "good class:    invalid metadata: %s\n", dn_last_error());
        return;
    }
    if (g.index < 0) {
        fprintf(o, "good class:    none (no class name means a good part; set one with --good-class NAME)\n");
        return;
    }
    fprintf(o, "good class:    %s (%s)\n", m->class_names[g.index], good_source(&g));
    if (pol.good_threshold > 0)
        fprintf(o, "decision:      reject unless confidently good: accepted only if p(%s) >= %.4g\n",
               m->class_names[g.index], (double)pol.good_threshold);
    else
        fprintf(o, "decision:      predicted class, uncertain below the confidence threshold\n");
}

static void print_json(FILE *o, const char *path, const dn_model *m, dn_weight_format fmt) {
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
    if (!b.oom) fputs(b.s, o);
    dn_sb_free(&b);
}

/* 0 if everything printed reached standard output, else 2 with one line naming
 * the problem (a full disk or closed pipe must not look like success). */
static int stdout_written(void) {
    if (fflush(stdout) == 0 && !ferror(stdout)) return 0;
    fprintf(stderr, "defectnet info: cannot write to standard output: %s\n", strerror(errno ? errno : EIO));
    return DN_EXIT_DATA;
}


static void print_table(FILE *o, const char *path, const dn_model *m, dn_weight_format fmt) {
    fprintf(o, "file:          %s\n", path);
    fprintf(o, "format:        %s\n", dn_weight_format_name(fmt));
    fprintf(o, "sha256:        %s\n", m->sha256);
    fprintf(o, "source sha256: %s%s\n", m->source_sha256[0] ? m->source_sha256 : "(unknown)",
            strcmp(m->sha256, m->source_sha256) ? "" : " (this file)");
    fprintf(o, "architecture:  %s: stem %d, blocks %d/%d/%d/%d, widths %d/%d/%d/%d, features %d\n", m->arch,
            m->conv1.cout, m->layers[0], m->layers[1], m->layers[2], m->layers[3], m->widths[0], m->widths[1],
            m->widths[2], m->widths[3], m->feat_dim);
    fprintf(o, "parameters:    %lld (incl. BatchNorm buffers)\n", (long long)dn_model_param_count(m));
    if (m->num_classes == 0) fprintf(o, "classes:       none (backbone only)\n");
    else {
        fprintf(o, "classes:       %d:", m->num_classes);
        int shown = m->num_classes > 20 ? 10 : m->num_classes;
        for (int i = 0; i < shown; i++) fprintf(o, " %d=%s", i, dn_model_class_name(m, i));
        if (shown < m->num_classes)
            fprintf(o, " ... %d=%s", m->num_classes - 1, dn_model_class_name(m, m->num_classes - 1));
        fprintf(o, "\n");
    }
    const dn_preproc *pp = &m->pp;
    fprintf(o, "preprocessing: resize shorter side to %d (bilinear, antialiased), center crop %dx%d, %s, "
               "mean %.4g,%.4g,%.4g std %.4g,%.4g,%.4g\n",
            pp->resize, pp->crop, pp->crop, pp->bgr ? "BGR" : "RGB", (double)pp->mean[0], (double)pp->mean[1],
            (double)pp->mean[2], (double)pp->std[0], (double)pp->std[1], (double)pp->std[2]);
    fprintf(o, "calibration:   temperature %.4g%s, threshold %.4g%s\n", (double)m->temperature,
            m->temperature == 1.0f ? " (uncalibrated)" : "", (double)m->threshold,
            m->threshold == 0.0f ? " (never uncertain)" : "");
    char ood_desc[400];
    dn_ood_describe(m->ood, ood_desc, sizeof ood_desc);
    fprintf(o, "unknown inputs: %s\n", ood_desc);
    char drift_desc[600]; /* the "drift" record itself is large: summarised here, whole in --format json */
    dn_drift_ref_describe(m, drift_desc, sizeof drift_desc);
    fprintf(o, "drift reference: %s\n", drift_desc);
    if (m->num_classes > 0) print_good_class(o, m);
    for (int i = 0; i < m->meta.n; i++)
        if (strcmp(m->meta.keys[i], "drift")) fprintf(o, "meta %s: %s\n", m->meta.keys[i], m->meta.vals[i]);
}

static void usage(FILE *f) {
    fprintf(f, "usage: defectnet info [-m|--model] MODEL [-f|--format table|json] [-o|--out FILE]\n"
               "  describes a model file: format, sha256 (file and source weights), architecture, parameters,\n"
               "  classes, preprocessing, calibration, unknown-input detection, good class, metadata.\n"
               "  -f, --format F   table (default) | json (one JSON object); --json is short for -f json\n"
               "  -o, --out FILE   write the description to FILE instead of standard output\n" DN_EXIT_HELP);
}

int cmd_info(int argc, char **argv) {
    const char *path = NULL, *out = NULL;
    int fmt = 0;
    enum { O_JSON = 256 };
    static const dn_opt opts[] = {{"model", 'm', DN_ARG_REQ, NULL}, {"format", 'f', DN_ARG_REQ, NULL},
                                  {"out", 'o', DN_ARG_REQ, NULL}, {"json", O_JSON, DN_ARG_NONE, NULL}, {0}};
    dn_args a;
    dn_args_init(&a, "info", argc, argv, opts);
    for (int c; (c = dn_args_next(&a)) != -1;) {
        switch (c) {
        case 'h': usage(stdout); return DN_EXIT_OK;
        case 'm': path = a.val; break;
        case 'o': out = a.val; break;
        case 'f': if (dn_format_parse("info", a.val, DN_FMT_TABLE | DN_FMT_JSON, &fmt)) return DN_EXIT_USAGE; break;
        case O_JSON: fmt = DN_FMT_JSON; break;
        default: return DN_EXIT_USAGE;
        }
    }
    for (int i = 0; i < dn_args_npos(&a); i++) {
        if (path) return dn_usage_error("info", "unexpected argument '%s'", dn_args_pos(&a, i));
        path = dn_args_pos(&a, i);
    }
    if (!path) return dn_usage_error("info", "no model given (usage: defectnet info MODEL; see --help)");
    if (!fmt) fmt = dn_format_from_path(out) == DN_FMT_JSON ? DN_FMT_JSON : DN_FMT_TABLE;
    dn_model *m;
    dn_status st = dn_model_load(path, &m);
    if (st) return dn_cli_fail("info", st);
    FILE *o = stdout;
    if (out && !(o = fopen(out, "w"))) {
        fprintf(stderr, "defectnet info: %s: cannot write: %s\n", out, strerror(errno));
        dn_model_free(m);
        return DN_EXIT_DATA;
    }
    dn_weight_format wf = sniff(path);
    if (fmt == DN_FMT_JSON) print_json(o, path, m, wf);
    else print_table(o, path, m, wf);
    dn_model_free(m);
    if (o == stdout) return stdout_written();
    if (ferror(o) | fclose(o)) {
        fprintf(stderr, "defectnet info: %s: write failed: %s\n", out, strerror(errno ? errno : EIO));
        return DN_EXIT_DATA;
    }
    return DN_EXIT_OK;
}
