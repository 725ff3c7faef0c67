/* `defectnet compare`: a candidate model against the live one (docs/review.md).
 *
 *   defectnet compare LIVE CANDIDATE (--data DIR | --manifest CSV) [--split S] [--good-class NAME]
 *                     [-f table|json|html] [-o FILE] [--batch B] [--threads T]
 *     both models classify the same labelled images (trust/compare.h, "Offline comparison"):
 *     figures per model, agreement, exact McNemar test, per-class differences, disagreements,
 *     a verdict line.
 *   defectnet compare --db DB [--from T] [--to T] [-f table|json]
 *     live vs shadow predictions stored by `serve --shadow` (no labels).
 *
 * Exit status: 0 ok; 1 some images unreadable (skipped, named); 2 usage or data error
 * (unreadable model, no images, no class in common, no shadow predictions). */
#include "cli/args.h"
#include "core/core.h"
#include "io/dataset.h"
#include "nn/model.h"
#include "nn/policy.h"
#include "serve/mreport.h"
#include "trust/compare.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PFX "defectnet compare: "

static void compare_usage(FILE *f) {
    fprintf(f,
            "usage: defectnet compare LIVE CANDIDATE (-d|--data DIR | --manifest CSV) [options]\n"
            "       defectnet compare --db sqlite:FILE|postgres://... [--from T] [--to T] [-f|--format table|json]\n"
            "  Before promotion: both models (.safetensors) classify the same labelled images, each with its own\n"
            "  preprocessing, decision policy and unknown-input detector. Classes are matched by name; an image whose\n"
            "  class a model lacks counts as its error. Per model: accuracy (95%% Wilson interval), macro-F1 (95%%\n"
            "  bootstrap), per-class recall and precision, escape and false-reject rates for the good class, the\n"
            "  accepted / uncertain / unknown decisions. Then agreement (same class, same decision), the 2x2 table of\n"
            "  correct answers with the exact McNemar test, the recall delta per class, the images where the classes\n"
            "  differ (first 50 in json/html) and a verdict line: \"candidate better|candidate worse|no significant\n"
            "  difference (McNemar p=...)\" (significant: p < 0.05).\n"
            "  --data DIR          ImageFolder (one sub-folder per class; train/ + test/ = official split)\n"
            "  --manifest CSV      path,label[,split] manifest, e.g. the split manifest `defectnet train` wrote\n"
            "  --split S           test | val | train | all (default: test when the data has a test split, else all)\n"
            "  --good-class NAME   the class meaning \"good part\" for the escape / false-reject rates (default: the\n"
            "                      live model's good class, else the candidate's); each model's policy is aimed at it\n"
            "  -f, --format F      table (default) | json | html (a self-contained page with thumbnails of the\n"
            "                      disagreements); default from the extension of --out\n"
            "  -o, --out FILE      write the report to FILE (default: standard output)\n"
            "  --batch B           images per forward (default 16), --threads T per model (default: all cores)\n"
            "  Shadow form (serve --shadow M2, no labels): --db DB gives live vs shadow on every image both classified:\n"
            "  how often they give the same class and the same decision, and per class how many each predicted and\n"
            "  how many of the live model's predictions the candidate kept. Exit 2 when there are no shadow\n"
            "  predictions in the range.\n"
            "  --from T, --to T    T: unix seconds, YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS]Z (UTC); from <= t < to\n"
            DN_EXIT_HELP);
}

/* ------------------------------------------------------------------ --db: live vs shadow */

static int compare_db(const char *db, double from, double to, int fmt) {
    dn_store *s = NULL;
    dn_compare c;
    memset(&c, 0, sizeof c);
    dn_status st = dn_store_open_readonly(db, &s); /* a missing database is refused, never created */
    if (!st && dn_store_schema_version(s) >= 4) st = dn_compare_store(s, from, to, &c); /* v4: shadow table */
    dn_store_close(s);
    if (st) return dn_cli_fail("compare", st);
    if (fmt == DN_FMT_JSON) {
        dn_sb b = {0};
        dn_compare_json(&c, &b);
        if (b.oom) { dn_sb_free(&b); return dn_cli_fail("compare", DN_ERR_NOMEM); }
        printf("%s\n", b.s);
        dn_sb_free(&b);
    } else {
        dn_compare_print(&c, stdout);
    }
    if (!c.n) {
        fprintf(stderr, PFX "%s: no shadow predictions%s (run serve with --shadow CANDIDATE)\n", db,
                from > 0 || to > 0 ? " in the time range" : "");
        return DN_EXIT_DATA;
    }
    return 0;
}

/* ------------------------------------------------------------------ two models on labelled images */

typedef struct cmp_opts {
    const char *models[2], *data, *manifest, *split_s, *good, *out;
    int fmt, batch, threads;
} cmp_opts;

/* A model that can be compared (has a head), or NULL with the one-line error printed. */
static dn_model *load_model(const char *path) {
    dn_model *m = NULL;
    if (dn_model_load(path, &m)) { fprintf(stderr, PFX "%s\n", dn_last_error()); return NULL; }
    if (m->num_classes < 2) {
        fprintf(stderr, PFX "%s: model has %s; it cannot be compared\n", path,
                m->num_classes ? "a single class" : "no classification head (backbone only)");
        dn_model_free(m);
        return NULL;
    }
    return m;
}

/* Data classes a model lacks: a note naming them; -1 (error printed) when it has none of them. */
static int check_classes(const dn_dataset *ds, const char *src, const dn_model *m, const char *path) {
    dn_sb lack = {0};
    int nlack = 0;
    for (int i = 0; i < ds->nclasses; i++)
        if (dn_model_class_index(m, ds->classes[i]) < 0) {
            dn_sb_puts(&lack, nlack++ ? ", " : "");
            dn_sb_puts(&lack, ds->classes[i]);
        }
    int rc = 0;
    if (nlack == ds->nclasses) {
        dn_sb mc = {0};
        for (int c = 0; c < m->num_classes && c < 12; c++) {
            dn_sb_puts(&mc, c ? ", " : "");
            dn_sb_puts(&mc, m->class_names[c]);
        }
        if (m->num_classes > 12) dn_sb_puts(&mc, ", ...");
        fprintf(stderr, PFX "%s: none of the classes of %s is a class of the model (model classes: %s): nothing to "
                        "compare\n", path, src, mc.s ? mc.s : "");
        dn_sb_free(&mc);
        rc = -1;
    } else if (nlack) {
        fprintf(stderr, PFX "note: %s lacks class(es) %s of %s: their images count as its errors\n", path,
                lack.s ? lack.s : "", src);
    }
    dn_sb_free(&lack);
    return rc;
}

/* The good class: given (must be a data class), else the live model's, else the candidate's, when the
 * data has it. NULL: none. *bad = 1 when the given one is not a data class (error printed). */
static const char *good_class(const cmp_opts *o, const dn_dataset *ds, const char *src, dn_model *const m[2],
                              int *bad) {
    *bad = 0;
    if (o->good) {
        if (dn_dataset_class_index(ds, o->good) >= 0) return o->good;
        fprintf(stderr, PFX "--good-class '%s': not a class of %s\n", o->good, src);
        *bad = 1;
        return NULL;
    }
    for (int s = 0; s < 2; s++) {
        dn_good_class g;
        if (dn_model_good_class(m[s], &g) || g.index < 0) continue;
        if (dn_dataset_class_index(ds, m[s]->class_names[g.index]) >= 0) return m[s]->class_names[g.index];
    }
    return NULL;
}

/* f: stdout or the --out file (closed here). */
static int write_report(const cmp_opts *o, const dn_cmp_models *c, FILE *f) {
    if (o->fmt == DN_FMT_TABLE) {
        dn_cmp_print(c, f);
    } else {
        dn_sb b = {0};
        if (o->fmt == DN_FMT_JSON) dn_cmp_json(c, &b);
        else dn_cmp_html(c, 1, &b);
        if (!b.oom) fprintf(f, "%s\n", b.s);
        int oom = b.oom;
        dn_sb_free(&b);
        if (oom) {
            if (f != stdout) fclose(f);
            fprintf(stderr, PFX "out of memory writing the report\n");
            return -1;
        }
    }
    int bad = fflush(f) != 0 || ferror(f);
    if (f != stdout && fclose(f)) bad = 1;
    if (bad) {
        fprintf(stderr, PFX "%s: write failed: %s\n", o->out ? o->out : "standard output", strerror(errno ? errno : EIO));
        return -1;
    }
    return 0;
}

static int compare_models(const cmp_opts *o) {
    dn_dataset *ds = NULL;
    dn_model *m[2] = {NULL, NULL};
    const char **paths = NULL;
    int *labels = NULL, n = 0, rc = DN_EXIT_DATA;
    dn_cmp_models c;
    memset(&c, 0, sizeof c);
    FILE *out = stdout;
    const char *src = o->data ? o->data : o->manifest;
    int split = DN_SPLIT_NONE;
    if (o->split_s && strcmp(o->split_s, "all") && (split = dn_split_parse(o->split_s)) < 0) {
        fprintf(stderr, PFX "--split: unknown split '%s' (test|val|train|all)\n", o->split_s);
        return DN_EXIT_USAGE;
    }
    if (o->data ? dn_dataset_scan(o->data, &ds) : dn_dataset_load_manifest(o->manifest, &ds)) {
        fprintf(stderr, PFX "%s\n", dn_last_error());
        return DN_EXIT_DATA;
    }
    if (!o->split_s && ds->has_split && dn_dataset_count(ds, DN_SPLIT_TEST, NULL) > 0) split = DN_SPLIT_TEST;
    const char *split_name = split == DN_SPLIT_NONE ? "all" : dn_split_name(split);
    for (int s = 0; s < 2; s++)
        if (!(m[s] = load_model(o->models[s])) || check_classes(ds, src, m[s], o->models[s])) goto done;
    int bad;
    const char *good = good_class(o, ds, src, m, &bad);
    if (bad) goto done;
    if (dn_dataset_select(ds, split, &paths, &labels, &n)) { fprintf(stderr, PFX "%s\n", dn_last_error()); goto done; }
    if (n == 0) { fprintf(stderr, PFX "%s: no images in split %s\n", src, split_name); goto done; }
    /* --out is opened before the images are classified: an unwritable path costs no run */
    if (o->out && !(out = fopen(o->out, "w"))) {
        fprintf(stderr, PFX "%s: cannot write: %s\n", o->out, strerror(errno));
        goto done;
    }
    const dn_model *const mm[2] = {m[0], m[1]};
    dn_status st = dn_cmp_run(mm, o->models, good, (const char *const *)ds->classes, ds->nclasses, paths, labels, n,
                              o->batch, o->threads, stderr, PFX, &c);
    if (st) { rc = dn_cli_fail("compare", st); goto done; }
    c.data_source = src;
    c.split = split_name;
    FILE *f = out;
    out = NULL;
    if (write_report(o, &c, f)) goto done;
    if (o->out || o->fmt != DN_FMT_TABLE) /* the verdict line also on a terminal when the report went elsewhere */
        fprintf(stderr, "verdict: %s (McNemar p=%.4g)%s%s\n", dn_cmp_verdict_word(&c), c.p, o->out ? "; report: " : "",
                o->out ? o->out : "");
    if (c.skipped) fprintf(stderr, PFX "%d of %d images unreadable, skipped\n", c.skipped, n);
    rc = c.skipped ? DN_EXIT_PARTIAL : DN_EXIT_OK;
done:
    if (out && out != stdout) fclose(out);
    dn_cmp_models_free(&c);
    free(paths);
    free(labels);
    dn_model_free(m[0]);
    dn_model_free(m[1]);
    dn_dataset_free(ds);
    return rc;
}

int cmd_compare(int argc, char **argv) {
    const char *db = NULL, *format = NULL;
    double from = 0, to = 0;
    cmp_opts o = {.batch = 16};
    enum { O_DB = 256, O_FROM, O_TO, O_MANIFEST, O_SPLIT, O_GOOD, O_BATCH, O_THREADS };
    static const dn_opt opts[] = {{"db", O_DB, DN_ARG_REQ, NULL},         {"from", O_FROM, DN_ARG_REQ, NULL},
                                  {"to", O_TO, DN_ARG_REQ, NULL},         {"format", 'f', DN_ARG_REQ, NULL},
                                  {"data", 'd', DN_ARG_REQ, NULL},        {"manifest", O_MANIFEST, DN_ARG_REQ, NULL},
                                  {"split", O_SPLIT, DN_ARG_REQ, NULL},   {"good-class", O_GOOD, DN_ARG_REQ, NULL},
                                  {"out", 'o', DN_ARG_REQ, NULL},         {"batch", O_BATCH, DN_ARG_REQ, NULL},
                                  {"threads", O_THREADS, DN_ARG_REQ, NULL}, {0}};
    dn_args a;
    dn_args_init(&a, "compare", argc, argv, opts);
    for (int c; (c = dn_args_next(&a)) != -1;) {
        switch (c) {
        case 'h': compare_usage(stdout); return 0;
        case O_DB: db = a.val; break;
        case 'f': format = a.val; break;
        case O_FROM:
        case O_TO:
            if (dn_parse_time(a.val, a.name, c == O_FROM ? &from : &to)) return dn_usage_error("compare", "%s", dn_last_error());
            break;
        case 'd': o.data = a.val; break;
        case O_MANIFEST: o.manifest = a.val; break;
        case O_SPLIT: o.split_s = a.val; break;
        case O_GOOD: o.good = a.val; break;
        case 'o': o.out = a.val; break;
        case O_BATCH: if (dn_arg_int(&a, 1, 1024, &o.batch)) return DN_EXIT_USAGE; break;
        case O_THREADS: if (dn_arg_int(&a, 0, 1024, &o.threads)) return DN_EXIT_USAGE; break;
        default: return DN_EXIT_USAGE;
        }
    }
    int npos = dn_args_npos(&a);
    if (db) {
        if (npos) return dn_usage_error("compare", "unexpected argument '%s' (--db compares the stored shadow "
                                                   "predictions; models and data are the other form)", dn_args_pos(&a, 0));
        if (o.data || o.manifest || o.split_s || o.good || o.out)
            return dn_usage_error("compare", "--db takes only --from, --to and --format (see defectnet compare --help)");
        int fmt = DN_FMT_TABLE;
        if (format && dn_format_parse("compare", format, DN_FMT_TABLE | DN_FMT_JSON, &fmt)) return DN_EXIT_USAGE;
        return compare_db(db, from, to, fmt);
    }
    if (npos != 2)
        return dn_usage_error("compare", npos > 2 ? "unexpected argument '%s' (give LIVE CANDIDATE)" :
                                                    "give two models LIVE CANDIDATE and --data/--manifest, or --db "
                                                    "(see defectnet compare --help)%s",
                              npos > 2 ? dn_args_pos(&a, 2) : "");
    o.models[0] = dn_args_pos(&a, 0);
    o.models[1] = dn_args_pos(&a, 1);
    if (from > 0 || to > 0) return dn_usage_error("compare", "--from/--to apply to --db only");
    if (!o.data == !o.manifest) return dn_usage_error("compare", "give exactly one of --data DIR and --manifest CSV");
    o.fmt = DN_FMT_TABLE;
    int ext = o.out ? dn_format_from_path(o.out) : 0;
    if (format && dn_format_parse("compare", format, DN_FMT_TABLE | DN_FMT_JSON | DN_FMT_HTML, &o.fmt))
        return DN_EXIT_USAGE;
    if (!format && (ext == DN_FMT_JSON || ext == DN_FMT_HTML)) o.fmt = ext;
    return compare_models(&o);
}
