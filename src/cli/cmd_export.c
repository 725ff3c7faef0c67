/* `defectnet export --db DB --reviewed --out DIR`: the reviewed images of the review
 * queue (docs/review.md) as an ImageFolder DIR/<label>/<id>_<sha12>.<ext> plus
 * DIR/manifest.csv (path,label,split; split "train"), ready for
 * `defectnet train --data OLD --add-data DIR`. */
#include "cli/args.h"
#include "core/core.h"
#include "serve/store.h"
#include "serve/store_review.h"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void export_usage(FILE *f) {
    fprintf(f, "usage: defectnet export --db sqlite:FILE|postgres://... --reviewed -o|--out DIR\n"
               "  Writes every final item of serve's review queue (GET /review, docs/review.md) as\n"
               "  DIR/<label>/<id>_<sha12>.<ext> (a copy of the image serve stored) and DIR/manifest.csv with\n"
               "  columns path,label,split (split = train). Needs serve --store-images: items without a stored\n"
               "  image are named and skipped (exit 1), none at all is an error. Running it again rewrites the\n"
               "  same files. Add the result to a training run with `defectnet train --data OLD --add-data DIR`.\n"
               DN_EXIT_HELP);
}

typedef struct {
    const char *out;
    FILE *manifest;
    long written, no_copy, missing;
    int failed;
} export_ctx;

/* A label as one path component: '/', '\\' and control characters become '_', a leading
 * '.' too (no hidden or parent folders). */
static void safe_component(const char *in, char *out, size_t n) {
    snprintf(out, n, "%s", in && *in ? in : "_");
    for (char *p = out; *p; p++)
        if (*p == '/' || *p == '\\' || (unsigned char)*p < 0x20) *p = '_';
    if (out[0] == '.') out[0] = '_';
}

static void csv_field(FILE *f, const char *s) {
    if (!strpbrk(s, ",\"\n\r")) { fputs(s, f); return; }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"') fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

/* Copies src to dst (through dst.tmp + rename: a rerun replaces files atomically). */
static dn_status copy_file(const char *src, const char *dst) {
    uint8_t *d = NULL;
    size_t n = 0;
    dn_status st = dn_read_file(src, (size_t)1 << 30, &d, &n);
    if (st) return st;
    st = dn_write_file(dst, d, n);
    free(d);
    return st;
}

static int export_item(void *ctx, int64_t id, const char *label, const char *copy, const char *sha,
                       const char *predicted, double final_at) {
    export_ctx *x = ctx;
    if (!copy) {
        x->no_copy++;
        return 0;
    }
    char dir[1200], rel[1400], path[2700], lab[256];
    safe_component(label, lab, sizeof lab);
    snprintf(dir, sizeof dir, "%s/%s", x->out, lab);
    if (mkdir(dir, 0755) && errno != EEXIST) {
        fprintf(stderr, "defectnet export: %s: cannot create: %s\n", dir, strerror(errno));
        x->failed = 1;
        return 1;
    }
    const char *ext = strrchr(copy, '.');
    if (!ext || strchr(ext, '/')) ext = "";
    snprintf(rel, sizeof rel, "%s/%lld_%.12s%s", lab, (long long)id, sha ? sha : "", ext);
    snprintf(path, sizeof path, "%s/%s", x->out, rel);
    if (copy_file(copy, path)) {
        fprintf(stderr, "defectnet export: review item %lld: %s (skipped)\n", (long long)id, dn_last_error());
        x->missing++;
        return 0;
    }
    csv_field(x->manifest, rel);
    fputc(',', x->manifest);
    csv_field(x->manifest, label ? label : "");
    fputs(",train\n", x->manifest);
    x->written++;
    return 0;
}

int cmd_export(int argc, char **argv) {
    const char *db = NULL, *out = NULL;
    int reviewed = 0;
    enum { O_DB = 256, O_REVIEWED };
    static const dn_opt opts[] = {{"db", O_DB, DN_ARG_REQ, NULL},
                                  {"reviewed", O_REVIEWED, DN_ARG_NONE, NULL},
                                  {"out", 'o', DN_ARG_REQ, NULL},
                                  {0}};
    dn_args a;
    dn_args_init(&a, "export", argc, argv, opts);
    for (int c; (c = dn_args_next(&a)) != -1;) {
        switch (c) {
        case 'h': export_usage(stdout); return 0;
        case O_DB: db = a.val; break;
        case O_REVIEWED: reviewed = 1; break;
        case 'o': out = a.val; break;
        default: return DN_EXIT_USAGE;
        }
    }
    if (dn_args_npos(&a)) return dn_usage_error("export", "unexpected argument '%s'", dn_args_pos(&a, 0));
    if (!db) return dn_usage_error("export", "--db is required (see defectnet export --help)");
    if (!reviewed) return dn_usage_error("export", "--reviewed is required: only reviewed images are exported");
    if (!out) return dn_usage_error("export", "--out DIR is required");
    char mpath[1200], mtmp[1300];
    snprintf(mpath, sizeof mpath, "%s/manifest.csv", out);
    snprintf(mtmp, sizeof mtmp, "%s.tmp", mpath);
    dn_store *s = NULL;
    dn_status st = dn_store_open_readonly(db, &s);
    if (st) return dn_cli_fail("export", st);
    if (dn_store_schema_version(s) < 4) { /* older than the review tables */
        fprintf(stderr, "defectnet export: %s: no review queue in this database (schema version %d; serve --review "
                        "creates it)\n", db, dn_store_schema_version(s));
        dn_store_close(s);
        return DN_EXIT_DATA;
    }
    if (mkdir(out, 0755) && errno != EEXIST) {
        fprintf(stderr, "defectnet export: %s: cannot create: %s\n", out, strerror(errno));
        dn_store_close(s);
        return DN_EXIT_DATA;
    }
    struct stat sb;
    if (stat(out, &sb) || !S_ISDIR(sb.st_mode)) {
        fprintf(stderr, "defectnet export: %s: not a directory\n", out);
        dn_store_close(s);
        return DN_EXIT_DATA;
    }
    int rc = DN_EXIT_DATA;
    export_ctx x = {out, fopen(mtmp, "w"), 0, 0, 0, 0};
    if (!x.manifest) {
        fprintf(stderr, "defectnet export: %s: cannot create: %s\n", mtmp, strerror(errno));
        goto done;
    }
    fputs("path,label,split\n", x.manifest);
    if ((st = dn_store_review_scan_final(s, export_item, &x))) {
        rc = dn_cli_fail("export", st);
        goto done;
    }
    if (x.failed) goto done;
    if (!x.written && !x.no_copy && !x.missing) {
        fprintf(stderr, "defectnet export: %s: no reviewed items yet (label some through serve's /review page)\n", db);
        goto done;
    }
    if (!x.written) {
        fprintf(stderr, "defectnet export: %s: none of the %ld reviewed items has a stored image "
                        "(run serve with --store-images DIR)\n", db, x.no_copy + x.missing);
        goto done;
    }
    int bad = fclose(x.manifest);
    x.manifest = NULL;
    if (bad || rename(mtmp, mpath)) {
        fprintf(stderr, "defectnet export: %s: write failed: %s\n", mpath, strerror(errno));
        goto done;
    }
    printf("exported %ld reviewed images to %s (manifest %s)\n", x.written, out, mpath);
    rc = 0;
    if (x.no_copy || x.missing) {
        fprintf(stderr, "defectnet export: skipped %ld reviewed items without a stored image "
                        "(serve ran without --store-images) and %ld whose image file is gone\n", x.no_copy, x.missing);
        rc = DN_EXIT_PARTIAL;
    }
done:
    if (x.manifest) {
        fclose(x.manifest);
        unlink(mtmp);
    }
    dn_store_close(s);
    return rc;
}
