/* defectnet convert: torchvision .pth (or a defectnet model) -> defectnet safetensors.
 *
 *   defectnet convert IN OUT.safetensors [--classes a,b,c | --classes-file F]
 *                     [--arch-check[=resnet18|resnet34]] [--meta KEY=VALUE]...
 *
 * The architecture is inferred from the tensor shapes and every shape is checked.
 * Class names (in output order) must match the fc width; without them the
 * input's names are kept (class_0.. for a .pth). --arch-check refuses anything
 * but a standard torchvision ResNet-18/34 layout (or exactly the named one).
 * --meta adds free-form metadata (reserved keys are refused). Provenance
 * (source_sha256) is the sha256 of IN for a .pth, or carried over from a model.
 * Exit: 0 written, 2 usage or data error (one-line message), 3 internal. */
#include "cli/args.h"
#include "core/core.h"
#include "io/modelfile.h"
#include "nn/model.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f, "usage: defectnet convert IN.pth [-o|--out] OUT.safetensors [--classes a,b,c | --classes-file FILE]\n"
               "                         [--arch-check[=resnet18|resnet34]] [--meta KEY=VALUE]...\n"
               "  Class names in output order must match the fc width; without them the input's names\n"
               "  are kept (class_0.. for a .pth).\n" DN_EXIT_HELP);
}

typedef struct { char **v; int n, cap; } names;
static int names_add(names *s, const char *p, size_t len) {
    if (s->n == s->cap) {
        int nc = s->cap ? s->cap * 2 : 16;
        char **nv = dn_realloc(s->v, (size_t)nc * sizeof *nv);
        if (!nv) return -1;
        s->v = nv;
        s->cap = nc;
    }
    char *d = dn_malloc(len + 1);
    if (!d) return -1;
    memcpy(d, p, len);
    d[len] = 0;
    s->v[s->n++] = d;
    return 0;
}
static void names_free(names *s) {
    for (int i = 0; i < s->n; i++) free(s->v[i]);
    free(s->v);
}

/* Splits on sep, trimming spaces/CR; blank items are skipped only for files (sep '\n'). */
static int split(names *out, const char *txt, char sep, const char *what) {
    const char *p = txt;
    while (1) {
        const char *e = strchr(p, sep);
        size_t len = e ? (size_t)(e - p) : strlen(p);
        const char *a = p, *b = p + len;
        while (a < b && (*a == ' ' || *a == '\t')) a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t' || b[-1] == '\r')) b--;
        if (b > a) {
            if (names_add(out, a, (size_t)(b - a))) { fprintf(stderr, "defectnet convert: out of memory\n"); return -1; }
        } else if (sep == ',' && (e || len)) {
            fprintf(stderr, "defectnet convert: %s: empty class name at position %d\n", what, out->n + 1);
            return -1;
        }
        if (!e) break;
        p = e + 1;
    }
    return 0;
}

int cmd_convert(int argc, char **argv) {
    const char *in = NULL, *out = NULL, *classes = NULL, *classes_file = NULL, *arch_check = NULL;
    names cls = {0}, metas = {0};
    dn_model *m = NULL;
    int rc = DN_EXIT_DATA;
    enum { O_CLASSES = 256, O_CLASSES_FILE, O_ARCH_CHECK, O_META };
    static const dn_opt opts[] = {{"out", 'o', DN_ARG_REQ, NULL},
                                  {"classes", O_CLASSES, DN_ARG_REQ, NULL},
                                  {"classes-file", O_CLASSES_FILE, DN_ARG_REQ, NULL},
                                  {"arch-check", O_ARCH_CHECK, DN_ARG_OPT, NULL},
                                  {"meta", O_META, DN_ARG_REQ, NULL},
                                  {0}};
    dn_args a;
    dn_args_init(&a, "convert", argc, argv, opts);
    for (int c; (c = dn_args_next(&a)) != -1;) {
        switch (c) {
        case 'h': usage(stdout); rc = 0; goto done;
        case 'o': out = a.val; break;
        case O_CLASSES: classes = a.val; break;
        case O_CLASSES_FILE: classes_file = a.val; break;
        case O_ARCH_CHECK: arch_check = a.val ? a.val : ""; break;
        case O_META: {
            const char *kv = a.val, *eq = strchr(kv, '=');
            if (!eq || eq == kv) { rc = dn_usage_error("convert", "--meta '%s': expected KEY=VALUE", kv); goto done; }
            if (names_add(&metas, kv, strlen(kv))) { rc = DN_EXIT_INTERNAL; goto done; }
            break;
        }
        default: rc = DN_EXIT_USAGE; goto done;
        }
    }
    for (int i = 0; i < dn_args_npos(&a); i++) {
        const char *p = dn_args_pos(&a, i);
        if (!in) in = p;
        else if (!out) out = p;
        else { rc = dn_usage_error("convert", "unexpected argument '%s'", p); goto done; }
    }
    if (!in || !out) {
        rc = dn_usage_error("convert", "expected IN and OUT (see defectnet convert --help)");
        goto done;
    }
    if (classes && classes_file) {
        fprintf(stderr, "defectnet convert: give --classes or --classes-file, not both\n");
        rc = 2;
        goto done;
    }
    if (arch_check && *arch_check && strcmp(arch_check, "resnet18") && strcmp(arch_check, "resnet34")) {
        fprintf(stderr, "defectnet convert: --arch-check=%s: expected resnet18 or resnet34\n", arch_check);
        rc = 2;
        goto done;
    }
    if (classes && split(&cls, classes, ',', "--classes")) goto done;
    if (classes && !cls.n) { /* "--classes ''" would otherwise silently mean the default names */
        fprintf(stderr, "defectnet convert: --classes: no class names given\n");
        rc = 2;
        goto done;
    }
    if (classes_file) {
        uint8_t *txt;
        size_t len;
        if (dn_read_file(classes_file, (size_t)16 << 20, &txt, &len)) {
            fprintf(stderr, "defectnet convert: %s\n", dn_last_error());
            goto done;
        }
        if (strlen((char *)txt) != len) {
            fprintf(stderr, "defectnet convert: %s: NUL byte in class-name file (binary file?)\n", classes_file);
            free(txt);
            goto done;
        }
        int bad = split(&cls, (char *)txt, '\n', classes_file);
        free(txt);
        if (bad) goto done;
        if (!cls.n) { fprintf(stderr, "defectnet convert: %s: no class names\n", classes_file); goto done; }
    }
    for (int i = 0; i < cls.n; i++)
        for (int j = 0; j < i; j++)
            if (!strcmp(cls.v[i], cls.v[j])) {
                fprintf(stderr, "defectnet convert: class name '%s' given twice\n", cls.v[i]);
                goto done;
            }

    if (dn_model_load(in, &m)) { fprintf(stderr, "defectnet convert: %s\n", dn_last_error()); goto done; }
    if (arch_check) {
        int ok = *arch_check ? !strcmp(m->arch, arch_check) : strcmp(m->arch, "resnet-custom") != 0;
        if (!ok) {
            fprintf(stderr, "defectnet convert: %s: architecture is %s (layers %d,%d,%d,%d widths %d,%d,%d,%d), not %s\n", in,
                    m->arch, m->layers[0], m->layers[1], m->layers[2], m->layers[3], m->widths[0], m->widths[1], m->widths[2],
                    m->widths[3], *arch_check ? arch_check : "a torchvision resnet18/resnet34");
            goto done;
        }
    }
    if (cls.n) {
        if (cls.n != m->num_classes) {
            fprintf(stderr, "defectnet convert: %d class names given but %s has %d outputs (fc.weight rows)\n", cls.n, in,
                    m->num_classes);
            goto done;
        }
        for (int i = 0; i < cls.n; i++) {
            free(m->class_names[i]);
            m->class_names[i] = cls.v[i];
            cls.v[i] = NULL;
        }
    }
    for (int i = 0; i < metas.n; i++) {
        char *eq = strchr(metas.v[i], '=');
        *eq = 0;
        if (dn_meta_key_reserved(metas.v[i])) {
            fprintf(stderr, "defectnet convert: --meta %s: reserved key (set through its own option)\n", metas.v[i]);
            goto done;
        }
        if (dn_meta_set(&m->meta, metas.v[i], eq + 1)) { fprintf(stderr, "defectnet convert: %s\n", dn_last_error()); goto done; }
    }
    if (dn_model_save(m, out)) { fprintf(stderr, "defectnet convert: %s\n", dn_last_error()); goto done; }
    printf("wrote %s: %s, %d classes, %lld parameters, source sha256 %s\n", out, m->arch, m->num_classes,
           (long long)dn_model_param_count(m), m->source_sha256);
    rc = 0;
done:
    dn_model_free(m);
    names_free(&cls);
    names_free(&metas);
    return rc;
}
