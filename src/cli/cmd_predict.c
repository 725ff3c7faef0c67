/* defectnet predict: classify image files and folders with a model.
 *
 *   defectnet predict --model M [--top-k K] [--batch B] [--threads T]
 *                     [--good-class NAME] [--format table|jsonl|csv] PATH...
 *
 * PATHs are image files and/or directories (searched recursively for image
 * files by extension, natural order; dn_collect_images). Images are decoded and preprocessed with
 * the model's own contract, B at a time, and each batch is forwarded once.
 * One output line per image: path, class, confidence (temperature-calibrated
 * softmax), uncertain flag (confidence < model threshold), decision
 * (accepted | uncertain | unknown) and ood_score (docs/ood.md), and the top-K classes
 * with probabilities. The model's decision policy applies (nn/policy.h: with a
 * stored good_threshold a good-class prediction below it is uncertain; JSON lines
 * then carry "policy" and "good_class", the table notes it on stderr);
 * --good-class NAME overrides the good class as serve's does (a threshold stored
 * for another class no longer applies). Default format: table when stdout is a terminal, JSON lines
 * otherwise. A file that cannot be read or decoded is reported on stderr as one
 * line "defectnet predict: <file>: <problem>" and skipped; the rest are still
 * classified.
 *
 * Exit status: 0 every image classified; 1 at least one file failed (the others
 * were classified); 2 usage error, unloadable model, or nothing to classify. */
#include "cli/args.h"
#include "core/core.h"
#include "core/progress.h"
#include "core/json.h"
#include "io/dataset.h"
#include "nn/engine.h"
#include "nn/model.h"
#include "nn/policy.h"
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { FMT_TABLE, FMT_JSONL, FMT_CSV };

typedef struct { char **v; int n, cap; } strvec;

static int sv_push(strvec *s, char *p) {
    if (!p) return -1;
    if (s->n == s->cap) {
        int nc = s->cap ? s->cap * 2 : 64;
        char **nv = dn_realloc(s->v, (size_t)nc * sizeof *nv);
        if (!nv) { free(p); return -1; }
        s->v = nv; s->cap = nc;
    }
    s->v[s->n++] = p;
    return 0;
}
static void sv_free(strvec *s) {
    for (int i = 0; i < s->n; i++) free(s->v[i]);
    free(s->v);
}
/* ------------------------------------------------------------ output */

typedef struct { int idx; float p; } ranked;
static int cmp_rank(const void *a, const void *b) {
    const ranked *x = a, *y = b;
    if (x->p != y->p) return x->p < y->p ? 1 : -1;
    return x->idx - y->idx;
}

static void csv_field(FILE *f, const char *s) {
    if (!strpbrk(s, ",\"\r\n")) { fputs(s, f); return; }
    fputc('"', f);
    for (; *s; s++) { if (*s == '"') fputc('"', f); fputc(*s, f); }
    fputc('"', f);
}

static void print_header(int fmt, int k, int pathw) {
    if (fmt == FMT_CSV) {
        printf("path,class,confidence,uncertain,decision,ood_score");
        for (int i = 1; i <= k; i++) printf(",top%d_class,top%d_prob", i, i);
        printf("\n");
    } else if (fmt == FMT_TABLE) {
        printf("%-*s  %-16s %10s  %-9s %9s  %s\n", pathw, "path", "class", "confidence", "decision", "ood_score", "top-k");
    }
}

static void print_row(int fmt, const dn_model *m, const dn_policy *pol, const char *path, const dn_prediction *pr,
                      const float *probs, int k, int pathw) {
    int c = m->num_classes;
    ranked r[DN_MAX_CLASSES];
    for (int i = 0; i < c; i++) { r[i].idx = i; r[i].p = probs[i]; }
    qsort(r, (size_t)c, sizeof r[0], cmp_rank);
    const char *cls = dn_model_class_name(m, pr->cls);
    if (fmt == FMT_JSONL) {
        dn_sb b = {0};
        dn_sb_puts(&b, "{\"path\": ");
        dn_sb_json_str(&b, path);
        dn_sb_puts(&b, ", \"class\": ");
        dn_sb_json_str(&b, cls);
        dn_sb_printf(&b, ", \"class_index\": %d, \"confidence\": %.6f, \"uncertain\": %s, \"decision\": \"%s\", \"ood_score\": ",
                     pr->cls, pr->confidence, pr->uncertain ? "true" : "false", dn_decision_name(pr->decision));
        if (isnan(pr->ood_score)) dn_sb_puts(&b, "null"); /* the model has no unknown-input detector */
        else dn_sb_printf(&b, "%.6g", pr->ood_score);
        if (pol->good >= 0 && pol->good_threshold > 0) { /* omitted: the plain argmax/threshold rule */
            dn_sb_printf(&b, ", \"policy\": \"good_threshold %.6g\", \"good_class\": ", pol->good_threshold);
            dn_sb_json_str(&b, dn_model_class_name(m, pol->good));
        }
        dn_sb_puts(&b, ", \"top_k\": [");
        for (int i = 0; i < k; i++) {
            dn_sb_puts(&b, i ? ", {\"class\": " : "{\"class\": ");
            dn_sb_json_str(&b, dn_model_class_name(m, r[i].idx));
            dn_sb_printf(&b, ", \"prob\": %.6f}", r[i].p);
        }
        dn_sb_puts(&b, "]}");
        if (!b.oom) puts(b.s);
        dn_sb_free(&b);
    } else if (fmt == FMT_CSV) {
        csv_field(stdout, path);
        putchar(',');
        csv_field(stdout, cls);
        printf(",%.6f,%d,%s,", pr->confidence, pr->uncertain, dn_decision_name(pr->decision));
        if (!isnan(pr->ood_score)) printf("%.6g", pr->ood_score); /* empty without a detector */
        for (int i = 0; i < k; i++) {
            putchar(',');
            csv_field(stdout, dn_model_class_name(m, r[i].idx));
            printf(",%.6f", r[i].p);
        }
        putchar('\n');
    } else {
        printf("%-*s  %-16s %9.2f%%%s %-9s %9.4g ", pathw, path, cls, 100.0 * pr->confidence, pr->uncertain ? "?" : " ",
               dn_decision_name(pr->decision), (double)pr->ood_score);
        for (int i = 0; i < k; i++) printf(" %s%s %.3f", i ? "| " : " ", dn_model_class_name(m, r[i].idx), r[i].p);
        putchar('\n');
    }
}

/* ------------------------------------------------------------ main */

static void usage(FILE *f) {
    fprintf(f,
            "usage: defectnet predict -m|--model M [--top-k K] [--batch B] [--threads T]\n"
            "                         [--good-class NAME] [-f|--format table|jsonl|csv] [-o|--out FILE] PATH...\n"
            "  PATH      image files and/or directories (searched recursively)\n"
            "  --top-k   classes listed per image (default 3, at most the number of classes)\n"
            "  --batch   images decoded and forwarded together (default 8)\n"
            "  --threads worker threads (default: all cores)\n"
            "  --good-class NAME  the class meaning \"good part\" instead of the model's (as serve's);\n"
            "            a good_threshold the model stores for another class then no longer applies\n"
            "  -o, --out FILE  write the results to FILE (format from its extension: .csv, .jsonl, .txt = table)\n"
            "  --format  table (default on a terminal) | jsonl (default otherwise) | csv\n"
            "            ('?' after a table confidence / uncertain=true|1: below the model's threshold,\n"
            "            or a good-class prediction below the stored decision policy's good_threshold,\n"
            "            which `eval --target-escape|--cost --write-model` stores; jsonl rows then\n"
            "            carry \"policy\": \"good_threshold T\" and \"good_class\")\n"
            "  a progress line with ETA is shown on a terminal when the results go to a file or pipe\n"
            DN_EXIT_HELP);
}

/* The model with a head, and its decision policy (--good-class overrides the good
 * class). 0 ok; else the one-line error is printed. */
static int load_model(const char *path, const char *good_class, dn_model **m, dn_policy *pol) {
    if (dn_model_load(path, m)) {
        fprintf(stderr, "defectnet predict: %s\n", dn_last_error());
        return -1;
    }
    if ((*m)->num_classes < 1) {
        fprintf(stderr, "defectnet predict: %s: model has no classification head (backbone only)\n", path);
        return -1;
    }
    if (dn_model_policy(*m, pol)) {
        fprintf(stderr, "defectnet predict: %s: %s\n", path, dn_last_error());
        return -1;
    }
    if (good_class && dn_policy_override_good(*m, good_class, pol)) {
        fprintf(stderr, "defectnet predict: --good-class: %s\n", dn_last_error());
        return -1;
    }
    return 0;
}

/* The image files of every input (files and folders) into files; an input that
 * cannot be listed is named and counted in *failed. -1 only when out of memory. */
static int collect_files(const strvec *inputs, strvec *files, int *failed) {
    for (int i = 0; i < inputs->n; i++) {
        char **paths = NULL;
        int np = 0;
        if (dn_collect_images((const char *const *)&inputs->v[i], 1, &paths, &np)) {
            fprintf(stderr, "defectnet predict: %s\n", dn_last_error());
            (*failed)++;
            continue;
        }
        int oom = 0;
        for (int k = 0; k < np; k++) {
            if (!oom && sv_push(files, paths[k])) oom = 1;
            else if (oom) free(paths[k]);
            paths[k] = NULL;
        }
        dn_paths_free(paths, np);
        if (oom) { fprintf(stderr, "defectnet predict: out of memory\n"); return -1; }
    }
    return 0;
}

int cmd_predict(int argc, char **argv) {
    const char *out = NULL;
    const char *model_path = NULL, *good_class = NULL;
    dn_policy pol = {-1, 0};
    int topk = 3, batch = 8, threads = 0, fmt = -1, failed = 0, ok = 0, rc = 2;
    strvec inputs = {0}, files = {0};
    dn_model *m = NULL;
    dn_session *s = NULL;
    dn_prediction *preds = NULL;
    float *probs = NULL;
    char **names = NULL;

    enum { O_TOPK = 256, O_BATCH, O_THREADS, O_GOOD };
    static const dn_opt opts[] = {{"model", 'm', DN_ARG_REQ, NULL}, {"top-k", O_TOPK, DN_ARG_REQ, NULL},
                                  {"batch", O_BATCH, DN_ARG_REQ, NULL}, {"threads", O_THREADS, DN_ARG_REQ, NULL},
                                  {"format", 'f', DN_ARG_REQ, NULL}, {"out", 'o', DN_ARG_REQ, NULL},
                                  {"good-class", O_GOOD, DN_ARG_REQ, NULL}, {0}};
    dn_args a;
    dn_args_init(&a, "predict", argc, argv, opts);
    for (int c; (c = dn_args_next(&a)) != -1;) {
        int f = 0;
        switch (c) {
        case 'h': usage(stdout); rc = 0; goto done;
        case 'm': model_path = a.val; break;
        case 'o': out = a.val; break;
        case O_TOPK: if (dn_arg_int(&a, 1, DN_MAX_CLASSES, &topk)) goto done; break;
        case O_BATCH: if (dn_arg_int(&a, 1, 1024, &batch)) goto done; break;
        case O_THREADS: if (dn_arg_int(&a, 0, 1024, &threads)) goto done; break;
        case O_GOOD: good_class = a.val; break;
        case 'f':
            if (dn_format_parse("predict", a.val, DN_FMT_TABLE | DN_FMT_JSONL | DN_FMT_CSV, &f)) goto done;
            fmt = f == DN_FMT_TABLE ? FMT_TABLE : f == DN_FMT_JSONL ? FMT_JSONL : FMT_CSV;
            break;
        default: goto done;
        }
    }
    for (int i = 0; i < dn_args_npos(&a); i++)
        if (sv_push(&inputs, dn_strdup(dn_args_pos(&a, i)))) {
            fprintf(stderr, "defectnet predict: out of memory\n");
            rc = DN_EXIT_INTERNAL;
            goto done;
        }
    if (!model_path) { dn_usage_error("predict", "--model is required (see defectnet predict --help)"); goto done; }
    if (!inputs.n) { dn_usage_error("predict", "no image files or folders given"); goto done; }
    if (fmt < 0 && out) { /* the extension of --out: .csv, .txt (table), else JSON lines */
        int f = dn_format_from_path(out);
        fmt = f == DN_FMT_CSV ? FMT_CSV : f == DN_FMT_TABLE ? FMT_TABLE : FMT_JSONL;
    }
    if (fmt < 0) fmt = isatty(STDOUT_FILENO) ? FMT_TABLE : FMT_JSONL;

    if (load_model(model_path, good_class, &m, &pol)) goto done;
    if (topk > m->num_classes) topk = m->num_classes;
    if (collect_files(&inputs, &files, &failed)) goto done;
    if (!files.n) {
        fprintf(stderr, "defectnet predict: no image files found\n");
        goto done;
    }
    if (batch > files.n) batch = files.n;

    if (dn_session_new(m, batch, threads, &s)) {
        fprintf(stderr, "defectnet predict: %s\n", dn_last_error());
        goto done;
    }
    dn_session_set_policy(s, &pol);
    if (fmt == FMT_TABLE && pol.good >= 0 && pol.good_threshold > 0)
        fprintf(stderr, "defectnet predict: decision policy: '%s' accepted only if p(%s) >= %.4g\n",
                m->class_names[pol.good], m->class_names[pol.good], pol.good_threshold);
    int c = m->num_classes, crop = m->pp.crop;
    size_t per = (size_t)3 * crop * crop;
    preds = dn_calloc((size_t)batch, sizeof *preds);
    probs = dn_calloc((size_t)batch * c, sizeof *probs);
    names = dn_calloc((size_t)batch, sizeof *names);
    if (!preds || !probs || !names) { fprintf(stderr, "defectnet predict: out of memory\n"); goto done; }
    int pathw = 4;
    if (fmt == FMT_TABLE)
        for (int i = 0; i < files.n; i++) { int l = (int)strlen(files.v[i]); if (l > pathw) pathw = l < 60 ? l : 60; }
    /* --out: the results go to FILE (opened only now: nothing is truncated by a bad model or path) */
    if (out) { /* checked with fopen first: a failed freopen would leave stdout closed */
        FILE *t = fopen(out, "w");
        if (!t || fclose(t) != 0 || !freopen(out, "w", stdout)) {
            fprintf(stderr, "defectnet predict: %s: cannot write: %s\n", out, strerror(errno));
            rc = DN_EXIT_DATA;
            goto done;
        }
    }
    print_header(fmt, topk, pathw);

    float *in = dn_session_input(s);
    dn_progress pg;
    dn_progress_start(&pg, "predict", files.n);
    if (isatty(STDOUT_FILENO)) pg.on = 0; /* the rows themselves show progress on a terminal */
    for (int next = 0; next < files.n;) {
        dn_progress_update(&pg, next);
        int nb = 0;
        while (nb < batch && next < files.n) {
            const char *path = files.v[next++];
            dn_image img = {0};
            dn_status st = dn_image_load(path, &img);
            if (!st) st = dn_preprocess(&img, &m->pp, in + (size_t)nb * per);
            dn_image_free(&img);
            if (st) {
                dn_progress_clear(&pg);
                const char *err = dn_last_error();
                /* decoder messages normally name the file already */
                if (strstr(err, path)) fprintf(stderr, "defectnet predict: %s\n", err);
                else fprintf(stderr, "defectnet predict: %s: %s\n", path, err);
                failed++;
                continue;
            }
            names[nb++] = files.v[next - 1];
        }
        if (!nb) continue;
        if (dn_session_classify_batch(s, in, nb, preds, probs)) {
            for (int i = 0; i < nb; i++) fprintf(stderr, "defectnet predict: %s: %s\n", names[i], dn_last_error());
            failed += nb;
            continue;
        }
        for (int i = 0; i < nb; i++) print_row(fmt, m, &pol, names[i], &preds[i], probs + (size_t)i * c, topk, pathw);
        if (fflush(stdout) != 0 || ferror(stdout)) { /* full disk, closed pipe: results lost, so stop */
            fprintf(stderr, "defectnet predict: cannot write results to %s: %s\n", out ? out : "standard output",
                    strerror(errno ? errno : EIO));
            rc = 1;
            goto done;
        }
        ok += nb;
    }
    dn_progress_end(&pg);
    rc = failed ? 1 : 0;
    if (failed) fprintf(stderr, "defectnet predict: %d classified, %d failed\n", ok, failed);
done:
    free(names);
    free(probs);
    free(preds);
    dn_session_free(s);
    dn_model_free(m);
    sv_free(&files);
    sv_free(&inputs);
    return rc;
}
