/* Datasets: file collection, ImageFolder scan, CSV manifests, stratified
 * dataset_open. Splits, duplicates, manifest writing, queries: dataset_split.c.
 * See dataset.h for the contracts. */
#include "io/dataset.h"
#include "io/dataset_priv.h"
#include "core/core.h"
#include "core/sha256.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define DN_WALK_MAX_DEPTH 32
#define DN_MANIFEST_MAX_BYTES ((size_t)256 << 20)

/* ------------------------------------------------------------ names, order */

const char *dn_split_name(int split) {
    switch (split) {
    case DN_SPLIT_TRAIN: return "train";
    case DN_SPLIT_VAL: return "val";
    case DN_SPLIT_TEST: return "test";
    default: return "";
    }
}

int dn_split_parse(const char *s) {
    if (!strcasecmp(s, "train")) return DN_SPLIT_TRAIN;
    if (!strcasecmp(s, "val") || !strcasecmp(s, "valid") || !strcasecmp(s, "validation")) return DN_SPLIT_VAL;
    if (!strcasecmp(s, "test")) return DN_SPLIT_TEST;
    return -1;
}

int dn_natural_cmp(const char *a, const char *b) {
    const unsigned char *p = (const unsigned char *)a, *q = (const unsigned char *)b;
    while (*p && *q) {
        if (isdigit(*p) && isdigit(*q)) {
            const unsigned char *p0 = p, *q0 = q;
            while (*p0 == '0') p0++;
            while (*q0 == '0') q0++;
            const unsigned char *p1 = p0, *q1 = q0;
            while (isdigit(*p1)) p1++;
            while (isdigit(*q1)) q1++;
            if (p1 - p0 != q1 - q0) return (p1 - p0) < (q1 - q0) ? -1 : 1;
            int c = memcmp(p0, q0, (size_t)(p1 - p0));
            if (c) return c;
            p = p1;
            q = q1;
            continue;
        }
        if (*p != *q) return *p < *q ? -1 : 1;
        p++;
        q++;
    }
    if (*p || *q) return *p ? 1 : -1;
    return strcmp(a, b); /* equal by value ("01" vs "1"): still a total order */
}

static int natural_cmp_p(const void *a, const void *b) {
    return dn_natural_cmp(*(char *const *)a, *(char *const *)b);
}

int dn_is_image_name(const char *path) {
    static const char *ext[] = {".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".ppm", ".pnm"};
    const char *dot = strrchr(path, '.');
    if (!dot || strchr(dot, '/')) return 0;
    for (size_t i = 0; i < sizeof ext / sizeof ext[0]; i++)
        if (!strcasecmp(dot, ext[i])) return 1;
    return 0;
}

/* ------------------------------------------------------------ string lists */

typedef struct { char **v; int n, cap; } strlist;

static dn_status sl_push(strlist *l, char *s) { /* takes ownership of s */
    if (!s) return DN_ERR_NOMEM;
    if (l->n == l->cap) {
        int nc = l->cap ? l->cap * 2 : 64;
        char **nv = dn_realloc(l->v, sizeof(char *) * (size_t)nc);
        if (!nv) { free(s); return dn_fail(DN_ERR_NOMEM, "out of memory listing files"); }
        l->v = nv;
        l->cap = nc;
    }
    l->v[l->n++] = s;
    return DN_OK;
}

static void sl_free(strlist *l) {
    for (int i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
    memset(l, 0, sizeof *l);
}

void dn_paths_free(char **paths, int n) {
    if (!paths) return;
    for (int i = 0; i < n; i++) free(paths[i]);
    free(paths);
}

static char *path_join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    int slash = a > 0 && dir[a - 1] != '/';
    char *p = dn_malloc(a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a);
    if (slash) p[a++] = '/';
    memcpy(p + a, name, b + 1);
    return p;
}

static int is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}
int dn_ds_is_file(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* Appends image files under dir (recursive, hidden entries skipped, natural
 * order within each directory listing). */
static dn_status walk(const char *dir, strlist *out, int depth) {
    if (depth > DN_WALK_MAX_DEPTH) return dn_fail(DN_ERR_ARG, "%s: folders nested too deeply (symlink loop?)", dir);
    DIR *d = opendir(dir);
    if (!d) return dn_fail(DN_ERR_IO, "%s: cannot open folder: %s", dir, strerror(errno));
    strlist names = {0};
    dn_status st = DN_OK;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        if ((st = sl_push(&names, dn_strdup(e->d_name)))) break;
    }
    closedir(d);
    if (st) { sl_free(&names); return st; }
    if (names.n > 1) qsort(names.v, (size_t)names.n, sizeof(char *), natural_cmp_p);
    for (int i = 0; i < names.n && !st; i++) {
        char *p = path_join(dir, names.v[i]);
        if (!p) { st = DN_ERR_NOMEM; break; }
        struct stat sb;
        if (stat(p, &sb) != 0) { free(p); continue; } /* dangling symlink */
        if (S_ISDIR(sb.st_mode)) {
            st = walk(p, out, depth + 1);
            free(p);
        } else if (S_ISREG(sb.st_mode) && dn_is_image_name(p)) {
            st = sl_push(out, p);
        } else {
            free(p);
        }
    }
    sl_free(&names);
    return st;
}

dn_status dn_collect_images(const char *const *inputs, int ninputs, char ***out, int *n) {
    *out = NULL;
    *n = 0;
    strlist l = {0};
    dn_status st = DN_OK;
    for (int i = 0; i < ninputs && !st; i++) {
        struct stat sb;
        if (stat(inputs[i], &sb) != 0) {
            st = dn_fail(DN_ERR_IO, "%s: cannot access: %s", inputs[i], strerror(errno));
        } else if (S_ISDIR(sb.st_mode)) {
            st = walk(inputs[i], &l, 0);
        } else {
            st = sl_push(&l, dn_strdup(inputs[i]));
        }
    }
    if (st) { sl_free(&l); return st; }
    *out = l.v;
    *n = l.n;
    return DN_OK;
}

/* --------------------------------------------------------------- builder
 * Items are gathered with their class *names*; finish() sorts the names
 * naturally and turns them into label indices. */

typedef struct {
    dn_item *items;
    char **cls; /* per item, owned */
    int n, cap;
} builder;

static dn_status b_add(builder *b, const char *path, const char *cls, int split) {
    if (b->n == b->cap) {
        int nc = b->cap ? b->cap * 2 : 256;
        dn_item *ni = dn_realloc(b->items, sizeof(dn_item) * (size_t)nc);
        if (!ni) return dn_fail(DN_ERR_NOMEM, "out of memory building dataset");
        b->items = ni;
        char **ncl = dn_realloc(b->cls, sizeof(char *) * (size_t)nc);
        if (!ncl) return dn_fail(DN_ERR_NOMEM, "out of memory building dataset");
        b->cls = ncl;
        b->cap = nc;
    }
    char *p = dn_strdup(path), *c = dn_strdup(cls);
    if (!p || !c) { free(p); free(c); return DN_ERR_NOMEM; }
    b->items[b->n] = (dn_item){p, -1, split};
    b->cls[b->n] = c;
    b->n++;
    return DN_OK;
}

static void b_free(builder *b) {
    for (int i = 0; i < b->n; i++) {
        free(b->items[i].path);
        free(b->cls[i]);
    }
    free(b->items);
    free(b->cls);
    memset(b, 0, sizeof *b);
}

void dn_dataset_free(dn_dataset *ds) {
    if (!ds) return;
    for (int i = 0; i < ds->n; i++) free(ds->items[i].path);
    free(ds->items);
    for (int i = 0; i < ds->nclasses; i++) free(ds->classes[i]);
    free(ds->classes);
    free(ds->source);
    free(ds);
}

/* Turns the builder into a dataset (the builder is consumed). */
static dn_status b_finish(builder *b, const char *source, int has_split, int min_classes, dn_dataset **out) {
    *out = NULL;
    if (b->n == 0) { b_free(b); return dn_fail(DN_ERR_ARG, "%s: no images found", source); }
    dn_dataset *ds = dn_calloc(1, sizeof *ds);
    char **names = dn_malloc(sizeof(char *) * (size_t)b->n);
    if (!ds || !names) { free(ds); free(names); b_free(b); return DN_ERR_NOMEM; }
    memcpy(names, b->cls, sizeof(char *) * (size_t)b->n);
    qsort(names, (size_t)b->n, sizeof(char *), natural_cmp_p);
    int k = 0;
    for (int i = 0; i < b->n; i++)
        if (k == 0 || strcmp(names[k - 1], names[i])) names[k++] = names[i];
    if (k < min_classes) {
        dn_status st = dn_fail(DN_ERR_ARG, "%s: only one class ('%s'); classification needs at least two", source,
                               names[0]);
        free(names);
        free(ds);
        b_free(b);
        return st;
    }
    ds->classes = dn_malloc(sizeof(char *) * (size_t)k);
    ds->source = dn_strdup(source);
    if (!ds->classes || !ds->source) {
        free(ds->classes); free(ds->source); free(ds); free(names); b_free(b);
        return DN_ERR_NOMEM;
    }
    for (int i = 0; i < k; i++) {
        ds->classes[i] = dn_strdup(names[i]);
        if (!ds->classes[i]) {
            ds->nclasses = i;
            free(names);
            b_free(b);
            dn_dataset_free(ds);
            return DN_ERR_NOMEM;
        }
    }
    ds->nclasses = k;
    for (int i = 0; i < b->n; i++) {
        char **hit = bsearch(&b->cls[i], names, (size_t)k, sizeof(char *), natural_cmp_p);
        b->items[i].label = (int)(hit - names);
    }
    for (int i = 0; i < b->n; i++) free(b->cls[i]); /* names[] points into these */
    free(names);
    free(b->cls);
    ds->items = b->items;
    ds->n = ds->cap = b->n;
    ds->has_split = has_split;
    *out = ds;
    return DN_OK;
}

/* ------------------------------------------------------------ ImageFolder */

static dn_status scan_classes(const char *dir, int split, builder *b) {
    DIR *d = opendir(dir);
    if (!d) return dn_fail(DN_ERR_IO, "%s: cannot open folder: %s", dir, strerror(errno));
    strlist sub = {0};
    dn_status st = DN_OK;
    struct dirent *e;
    while ((e = readdir(d)) && !st) {
        if (e->d_name[0] == '.') continue;
        char *p = path_join(dir, e->d_name);
        if (!p) { st = DN_ERR_NOMEM; break; }
        int isd = is_dir(p);
        free(p);
        if (isd) st = sl_push(&sub, dn_strdup(e->d_name));
    }
    closedir(d);
    if (st) { sl_free(&sub); return st; }
    if (sub.n == 0) {
        sl_free(&sub);
        return dn_fail(DN_ERR_ARG, "%s: no class sub-folders (expected one folder per class)", dir);
    }
    qsort(sub.v, (size_t)sub.n, sizeof(char *), natural_cmp_p);
    for (int i = 0; i < sub.n && !st; i++) {
        char *p = path_join(dir, sub.v[i]);
        strlist files = {0};
        if (!p) { st = DN_ERR_NOMEM; break; }
        st = walk(p, &files, 1);
        if (!st && files.n == 0) st = dn_fail(DN_ERR_ARG, "%s: class folder has no images", p);
        for (int j = 0; j < files.n && !st; j++) st = b_add(b, files.v[j], sub.v[i], split);
        sl_free(&files);
        free(p);
    }
    sl_free(&sub);
    return st;
}

static dn_status scan_dir(const char *dir, int min_classes, dn_dataset **out) {
    *out = NULL;
    struct stat sb;
    if (stat(dir, &sb) != 0) return dn_fail(DN_ERR_IO, "%s: cannot access: %s", dir, strerror(errno));
    if (!S_ISDIR(sb.st_mode)) return dn_fail(DN_ERR_ARG, "%s: not a folder", dir);
    builder b = {0};
    dn_status st = DN_OK;
    /* Official split: train/ and test/ (and optionally val/) sub-folders. */
    char *tr = path_join(dir, "train"), *te = path_join(dir, "test");
    if (!tr || !te) { free(tr); free(te); return DN_ERR_NOMEM; }
    int official = is_dir(tr) && is_dir(te);
    if (official) {
        st = scan_classes(tr, DN_SPLIT_TRAIN, &b);
        if (!st) st = scan_classes(te, DN_SPLIT_TEST, &b);
        const char *vn[] = {"val", "valid", "validation"};
        for (int i = 0; i < 3 && !st; i++) {
            char *v = path_join(dir, vn[i]);
            if (!v) { st = DN_ERR_NOMEM; break; }
            if (is_dir(v)) st = scan_classes(v, DN_SPLIT_VAL, &b);
            free(v);
        }
    } else {
        st = scan_classes(dir, DN_SPLIT_NONE, &b);
    }
    free(tr);
    free(te);
    if (st) { b_free(&b); return st; }
    return b_finish(&b, dir, official, min_classes, out);
}

dn_status dn_dataset_scan(const char *dir, dn_dataset **out) { return scan_dir(dir, 2, out); }

/* --------------------------------------------------------------- manifest */

/* Splits one CSV record starting at *pos into fields (quotes supported);
 * fields are written NUL-terminated into buf. Returns number of fields, -1 at
 * end of input, -2 on an unterminated quote. */
static int csv_record(const char *s, size_t len, size_t *pos, char *buf, char **fields, int maxf) {
    size_t i = *pos;
    if (i >= len) return -1;
    int nf = 0;
    char *w = buf;
    fields[nf++] = w;
    for (;;) {
        if (i < len && s[i] == '"') {
            i++;
            for (;;) {
                if (i >= len) return -2;
                if (s[i] == '"') {
                    if (i + 1 < len && s[i + 1] == '"') { *w++ = '"'; i += 2; continue; }
                    i++;
                    break;
                }
                *w++ = s[i++];
            }
        }
        while (i < len && s[i] != ',' && s[i] != '\n' && s[i] != '\r') *w++ = s[i++];
        if (i < len && s[i] == ',') {
            *w++ = 0;
            i++;
            if (nf < maxf) fields[nf++] = w; /* fields beyond maxf are parsed and ignored */
            continue;
        }
        *w++ = 0;
        if (i < len && s[i] == '\r') i++;
        if (i < len && s[i] == '\n') i++;
        break;
    }
    *pos = i;
    return nf;
}

static void trim(char *s) {
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1])) s[--n] = 0;
    size_t k = 0;
    while (isspace((unsigned char)s[k])) k++;
    if (k) memmove(s, s + k, n - k + 1);
}

char *dn_ds_dir_of(const char *path) {
    const char *sl = strrchr(path, '/');
    if (!sl) return dn_strdup(".");
    if (sl == path) return dn_strdup("/");
    char *d = dn_malloc((size_t)(sl - path) + 1);
    if (d) { memcpy(d, path, (size_t)(sl - path)); d[sl - path] = 0; }
    return d;
}

#define CSV_MAXF 16

static dn_status load_manifest(const char *csv, int min_classes, dn_dataset **out) {
    *out = NULL;
    uint8_t *data;
    size_t len;
    dn_status st = dn_read_file(csv, DN_MANIFEST_MAX_BYTES, &data, &len);
    if (st) return st;
    char *buf = dn_malloc(len + CSV_MAXF + 1), *dir = dn_ds_dir_of(csv);
    builder b = {0};
    char *fields[CSV_MAXF];
    int cpath = -1, clabel = -1, csplit = -1, line = 0, nmissing = 0, has_split = 0;
    char first_missing[512] = "";
    int first_missing_line = 0;
    size_t pos = len >= 3 && !memcmp(data, "\xEF\xBB\xBF", 3) ? 3 : 0; /* UTF-8 BOM (spreadsheet exports) */
    if (!buf || !dir) { st = DN_ERR_NOMEM; goto done; }
    /* header */
    int nf;
    do {
        nf = csv_record((const char *)data, len, &pos, buf, fields, CSV_MAXF);
        line++;
    } while (nf == 1 && fields[0][0] == 0);
    if (nf < 0) { st = dn_fail(DN_ERR_FORMAT, "%s: empty manifest (expected header path,label[,split])", csv); goto done; }
    for (int i = 0; i < nf && i < CSV_MAXF; i++) {
        trim(fields[i]);
        if (!strcasecmp(fields[i], "path")) cpath = i;
        else if (!strcasecmp(fields[i], "label")) clabel = i;
        else if (!strcasecmp(fields[i], "split")) csplit = i;
    }
    if (cpath < 0 || clabel < 0) {
        st = dn_fail(DN_ERR_FORMAT, "%s: line 1: header must name columns 'path' and 'label' (optional 'split')", csv);
        goto done;
    }
    while ((nf = csv_record((const char *)data, len, &pos, buf, fields, CSV_MAXF)) != -1) {
        line++;
        if (nf == -2) { st = dn_fail(DN_ERR_FORMAT, "%s: line %d: unterminated quote", csv, line); goto done; }
        if (nf == 1 && fields[0][0] == 0) continue; /* blank line */
        int need = cpath > clabel ? cpath : clabel;
        if (csplit > need) need = csplit;
        if (nf <= need) {
            st = dn_fail(DN_ERR_FORMAT, "%s: line %d: expected %d columns, found %d", csv, line, need + 1, nf);
            goto done;
        }
        char *p = fields[cpath], *l = fields[clabel];
        trim(p);
        trim(l);
        if (!*p || !*l) { st = dn_fail(DN_ERR_FORMAT, "%s: line %d: empty path or label", csv, line); goto done; }
        int split = DN_SPLIT_NONE;
        if (csplit >= 0) {
            char *s = fields[csplit];
            trim(s);
            if (*s) {
                split = dn_split_parse(s);
                if (split < 0) {
                    st = dn_fail(DN_ERR_FORMAT, "%s: line %d: unknown split '%s' (train, val or test)", csv, line, s);
                    goto done;
                }
                has_split = 1;
            }
        }
        char *full = p[0] == '/' ? dn_strdup(p) : path_join(dir, p);
        if (!full) { st = DN_ERR_NOMEM; goto done; }
        if (!dn_ds_is_file(full)) {
            if (!nmissing++) {
                snprintf(first_missing, sizeof first_missing, "%s", full);
                first_missing_line = line;
            }
        } else {
            st = b_add(&b, full, l, split);
        }
        free(full);
        if (st) goto done;
    }
    if (nmissing) {
        st = dn_fail(DN_ERR_IO, "%s: %d listed file%s missing (first: line %d: %s)", csv, nmissing,
                     nmissing > 1 ? "s are" : " is", first_missing_line, first_missing);
        goto done;
    }
    if (has_split)
        for (int i = 0; i < b.n; i++)
            if (b.items[i].split == DN_SPLIT_NONE) {
                st = dn_fail(DN_ERR_FORMAT, "%s: some rows have a split and others not (%s)", csv, b.items[i].path);
                goto done;
            }
    free(buf);
    free(dir);
    free(data);
    return b_finish(&b, csv, has_split, min_classes, out);
done:
    b_free(&b);
    free(buf);
    free(dir);
    free(data);
    return st;
}

dn_status dn_dataset_load_manifest(const char *csv, dn_dataset **out) { return load_manifest(csv, 2, out); }

static dn_status open_any(const char *path, int min_classes, dn_dataset **out) {
    *out = NULL;
    struct stat sb;
    if (stat(path, &sb) != 0) return dn_fail(DN_ERR_IO, "%s: cannot access: %s", path, strerror(errno));
    if (S_ISDIR(sb.st_mode)) return scan_dir(path, min_classes, out);
    return load_manifest(path, min_classes, out);
}

dn_status dn_dataset_open(const char *path, dn_dataset **out) { return open_any(path, 2, out); }

dn_status dn_dataset_add(dn_dataset *ds, const char *path, int split, int *added) {
    *added = 0;
    dn_dataset *x = NULL;
    dn_status st = open_any(path, 1, &x);
    if (st) return st;
    int *map = dn_malloc(sizeof(int) * (size_t)x->nclasses);
    if (!map) { dn_dataset_free(x); return DN_ERR_NOMEM; }
    for (int c = 0; c < x->nclasses; c++)
        if ((map[c] = dn_dataset_class_index(ds, x->classes[c])) < 0) {
            st = dn_fail(DN_ERR_ARG, "%s: class '%s' is not a class of %s (added images must use its classes)", path,
                         x->classes[c], ds->source ? ds->source : "the training data");
            goto done;
        }
    if (ds->n + x->n > ds->cap) {
        int nc = ds->n + x->n;
        dn_item *ni = dn_realloc(ds->items, sizeof(dn_item) * (size_t)nc);
        if (!ni) { st = DN_ERR_NOMEM; goto done; }
        ds->items = ni;
        ds->cap = nc;
    }
    for (int i = 0; i < x->n; i++) { /* the paths move over */
        ds->items[ds->n++] = (dn_item){x->items[i].path, map[x->items[i].label], split};
        x->items[i].path = NULL;
    }
    *added = x->n;
done:
    free(map);
    dn_dataset_free(x);
    return st;
}
