/* JSON DOM parser and string builder. See json.h for the contract. */
#include "core/json.h"
#include "core/core.h"
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct dn_json {
    dn_json_type type;
    int b;
    double num;
    char *str;       /* DN_JSON_STR value */
    dn_json *items;  /* ARR/OBJ children (inline array) */
    char **keys;     /* OBJ keys, parallel to items */
    size_t n, cap;
};

typedef struct {
    const char *s;
    size_t len, pos;
    char *err;
    size_t errlen;
    int failed;
} parser;

static void perr(parser *p, const char *msg) {
    if (p->failed) return;
    p->failed = 1;
    size_t line = 1, col = 1;
    for (size_t i = 0; i < p->pos && i < p->len; i++) {
        if (p->s[i] == '\n') { line++; col = 1; }
        else col++;
    }
    char buf[256];
    snprintf(buf, sizeof buf, "line %zu col %zu: %s", line, col, msg);
    if (p->err && p->errlen) snprintf(p->err, p->errlen, "%s", buf);
    dn_fail(DN_ERR_FORMAT, "json: %s", buf);
}

static void skip_ws(parser *p) {
    while (p->pos < p->len) {
        char c = p->s[p->pos];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r') p->pos++;
        else break;
    }
}

static void node_clear(dn_json *v) {
    if (!v) return;
    free(v->str);
    for (size_t i = 0; i < v->n; i++) {
        node_clear(&v->items[i]);
        if (v->keys) free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
    memset(v, 0, sizeof *v);
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int read_u4(parser *p, unsigned *out) {
    if (p->pos + 4 > p->len) { perr(p, "truncated \\u escape"); return -1; }
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(p->s[p->pos + i]);
        if (h < 0) { perr(p, "bad hex digit in \\u escape"); return -1; }
        v = v * 16 + (unsigned)h;
    }
    p->pos += 4;
    *out = v;
    return 0;
}

/* Parses a string starting at the opening quote; returns malloc'ed UTF-8. */
static char *parse_string(parser *p) {
    p->pos++; /* opening quote */
    dn_sb b = {0};
    dn_sb_putn(&b, "", 0);
    while (1) {
        if (p->pos >= p->len) { perr(p, "unterminated string"); goto fail; }
        unsigned char c = (unsigned char)p->s[p->pos];
        if (c == '"') { p->pos++; break; }
        if (c < 0x20) { perr(p, "control character in string"); goto fail; }
        if (c != '\\') {
            size_t st = p->pos;
            while (p->pos < p->len && p->s[p->pos] != '"' && p->s[p->pos] != '\\' &&
                   (unsigned char)p->s[p->pos] >= 0x20)
                p->pos++;
            dn_sb_putn(&b, p->s + st, p->pos - st);
            continue;
        }
        p->pos++;
        if (p->pos >= p->len) { perr(p, "unterminated escape"); goto fail; }
        char e = p->s[p->pos++];
        char one = 0;
        switch (e) {
        case '"': one = '"'; break;
        case '\\': one = '\\'; break;
        case '/': one = '/'; break;
        case 'b': one = '\b'; break;
        case 'f': one = '\f'; break;
        case 'n': one = '\n'; break;
        case 'r': one = '\r'; break;
        case 't': one = '\t'; break;
        case 'u': {
            unsigned cp;
            if (read_u4(p, &cp)) goto fail;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                unsigned lo;
                if (p->pos + 2 > p->len || p->s[p->pos] != '\\' || p->s[p->pos + 1] != 'u') {
                    perr(p, "lone high surrogate in \\u escape");
                    goto fail;
                }
                p->pos += 2;
                if (read_u4(p, &lo)) goto fail;
                if (lo < 0xDC00 || lo > 0xDFFF) { perr(p, "bad low surrogate in \\u escape"); goto fail; }
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                perr(p, "lone low surrogate in \\u escape");
                goto fail;
            }
            if (cp == 0) { perr(p, "\\u0000 not supported in strings"); goto fail; }
            char u[4];
            size_t un;
            if (cp < 0x80) { u[0] = (char)cp; un = 1; }
            else if (cp < 0x800) { u[0] = (char)(0xC0 | (cp >> 6)); u[1] = (char)(0x80 | (cp & 0x3F)); un = 2; }
            else if (cp < 0x10000) {
                u[0] = (char)(0xE0 | (cp >> 12)); u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
                u[2] = (char)(0x80 | (cp & 0x3F)); un = 3;
            } else {
                u[0] = (char)(0xF0 | (cp >> 18)); u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
                u[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); u[3] = (char)(0x80 | (cp & 0x3F)); un = 4;
            }
            dn_sb_putn(&b, u, un);
            break;
        }
        default: p->pos--; perr(p, "invalid escape in string"); goto fail;
        }
        if (one) dn_sb_putn(&b, &one, 1);
    }
    if (b.oom) { perr(p, "out of memory"); goto fail; }
    return b.s;
fail:
    dn_sb_free(&b);
    return NULL;
}

static int parse_number(parser *p, dn_json *v) {
    size_t st = p->pos;
    if (p->pos < p->len && p->s[p->pos] == '-') p->pos++;
    if (p->pos >= p->len) { perr(p, "truncated number"); return -1; }
    if (p->s[p->pos] == '0') {
        p->pos++;
    } else if (p->s[p->pos] >= '1' && p->s[p->pos] <= '9') {
        while (p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9') p->pos++;
    } else { perr(p, "invalid number"); return -1; }
    if (p->pos < p->len && p->s[p->pos] == '.') {
        p->pos++;
        size_t d = p->pos;
        while (p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9') p->pos++;
        if (p->pos == d) { perr(p, "digit expected after decimal point"); return -1; }
    }
    if (p->pos < p->len && (p->s[p->pos] == 'e' || p->s[p->pos] == 'E')) {
        p->pos++;
        if (p->pos < p->len && (p->s[p->pos] == '+' || p->s[p->pos] == '-')) p->pos++;
        size_t d = p->pos;
        while (p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9') p->pos++;
        if (p->pos == d) { perr(p, "digit expected in exponent"); return -1; }
    }
    char buf[64];
    size_t n = p->pos - st;
    char *tmp = n < sizeof buf ? buf : dn_malloc(n + 1);
    if (!tmp) { perr(p, "out of memory"); return -1; }
    memcpy(tmp, p->s + st, n);
    tmp[n] = 0;
    v->type = DN_JSON_NUM;
    v->num = strtod(tmp, NULL); /* grammar already validated; overflow gives +-inf */
    if (tmp != buf) free(tmp);
    return 0;
}

static int push_child(parser *p, dn_json *v, char *key) {
    if (v->n == v->cap) {
        size_t nc = v->cap ? v->cap * 2 : 4;
        dn_json *ni = dn_realloc(v->items, nc * sizeof *ni);
        if (!ni) { perr(p, "out of memory"); return -1; }
        v->items = ni;
        if (v->type == DN_JSON_OBJ) {
            char **nk = dn_realloc(v->keys, nc * sizeof *nk);
            if (!nk) { perr(p, "out of memory"); return -1; }
            v->keys = nk;
        }
        v->cap = nc;
    }
    memset(&v->items[v->n], 0, sizeof v->items[v->n]);
    if (v->type == DN_JSON_OBJ) v->keys[v->n] = key;
    v->n++;
    return 0;
}

static int parse_value(parser *p, dn_json *v, int depth);

/* Duplicate keys are refused: in a config or a weights header the second value
 * silently winning hides mistakes (and attacks). Checked once per object by sorting
 * (a header with 80k tensor names was quadratic when each key scanned the others). */
static int unique_keys(parser *p, const dn_json *v) {
    if (v->n < 2) return 0;
    dn_keyidx *k = dn_malloc(v->n * sizeof *k);
    if (!k) { perr(p, "out of memory"); return -1; }
    for (size_t i = 0; i < v->n; i++) k[i] = (dn_keyidx){v->keys[i], i};
    const char *dup = NULL;
    int rc = 0;
    if (dn_keyidx_sort(k, v->n, &dup)) { perr(p, "out of memory"); rc = -1; }
    else if (dup) {
        char msg[160];
        snprintf(msg, sizeof msg, "duplicate object key \"%.100s\"", dup);
        perr(p, msg);
        rc = -1;
    }
    free(k);
    return rc;
}

static int parse_container(parser *p, dn_json *v, int depth, int is_obj) {
    v->type = is_obj ? DN_JSON_OBJ : DN_JSON_ARR;
    char close = is_obj ? '}' : ']';
    p->pos++;
    skip_ws(p);
    if (p->pos < p->len && p->s[p->pos] == close) { p->pos++; return 0; }
    while (1) {
        skip_ws(p);
        char *key = NULL;
        if (is_obj) {
            if (p->pos >= p->len || p->s[p->pos] != '"') { perr(p, "object key (string) expected"); return -1; }
            key = parse_string(p);
            if (!key) return -1;
            skip_ws(p);
            if (p->pos >= p->len || p->s[p->pos] != ':') { free(key); perr(p, "':' expected after object key"); return -1; }
            p->pos++;
        }
        if (push_child(p, v, key)) { free(key); return -1; }
        if (parse_value(p, &v->items[v->n - 1], depth + 1)) return -1;
        skip_ws(p);
        if (p->pos >= p->len) { perr(p, is_obj ? "unterminated object" : "unterminated array"); return -1; }
        char c = p->s[p->pos];
        if (c == ',') { p->pos++; continue; }
        if (c == close) { p->pos++; return is_obj ? unique_keys(p, v) : 0; }
        perr(p, is_obj ? "',' or '}' expected in object" : "',' or ']' expected in array");
        return -1;
    }
}

static int match_lit(parser *p, const char *lit) {
    size_t n = strlen(lit);
    if (p->len - p->pos >= n && memcmp(p->s + p->pos, lit, n) == 0) { p->pos += n; return 1; }
    return 0;
}

static int parse_value(parser *p, dn_json *v, int depth) {
    if (depth > DN_JSON_MAX_DEPTH) { perr(p, "nesting too deep"); return -1; }
    skip_ws(p);
    if (p->pos >= p->len) { perr(p, "value expected, got end of input"); return -1; }
    char c = p->s[p->pos];
    switch (c) {
    case '{': return parse_container(p, v, depth, 1);
    case '[': return parse_container(p, v, depth, 0);
    case '"':
        v->type = DN_JSON_STR;
        v->str = parse_string(p);
        return v->str ? 0 : -1;
    case 't': if (match_lit(p, "true")) { v->type = DN_JSON_BOOL; v->b = 1; return 0; } break;
    case 'f': if (match_lit(p, "false")) { v->type = DN_JSON_BOOL; v->b = 0; return 0; } break;
    case 'n': if (match_lit(p, "null")) { v->type = DN_JSON_NULL; return 0; } break;
    default:
        if (c == '-' || (c >= '0' && c <= '9')) return parse_number(p, v);
    }
    perr(p, "invalid value");
    return -1;
}

dn_json *dn_json_parse(const char *text, size_t len, char *err, size_t errlen) {
    if (err && errlen) err[0] = 0;
    parser p = {text, len, 0, err, errlen, 0};
    if (!text) {
        p.len = 0;
        perr(&p, "no input");
        return NULL;
    }
    dn_json *root = dn_calloc(1, sizeof *root);
    if (!root) { perr(&p, "out of memory"); return NULL; }
    if (parse_value(&p, root, 0)) goto fail;
    skip_ws(&p);
    if (p.pos != p.len) { perr(&p, "trailing characters after JSON value"); goto fail; }
    return root;
fail:
    node_clear(root);
    free(root);
    return NULL;
}

void dn_json_free(dn_json *root) {
    if (!root) return;
    node_clear(root);
    free(root);
}

dn_json_type dn_json_type_of(const dn_json *v) { return v ? v->type : DN_JSON_NULL; }

const dn_json *dn_json_get(const dn_json *obj, const char *key) {
    if (!obj || obj->type != DN_JSON_OBJ || !key) return NULL;
    for (size_t i = obj->n; i-- > 0;)
        if (!strcmp(obj->keys[i], key)) return &obj->items[i];
    return NULL;
}
size_t dn_json_len(const dn_json *v) {
    return v && (v->type == DN_JSON_ARR || v->type == DN_JSON_OBJ) ? v->n : 0;
}
const dn_json *dn_json_at(const dn_json *v, size_t i) {
    return v && (v->type == DN_JSON_ARR || v->type == DN_JSON_OBJ) && i < v->n ? &v->items[i] : NULL;
}
const char *dn_json_key_at(const dn_json *v, size_t i) {
    return v && v->type == DN_JSON_OBJ && i < v->n ? v->keys[i] : NULL;
}
double dn_json_num(const dn_json *v, double dflt) { return v && v->type == DN_JSON_NUM ? v->num : dflt; }
const char *dn_json_str(const dn_json *v, const char *dflt) { return v && v->type == DN_JSON_STR ? v->str : dflt; }
int dn_json_bool(const dn_json *v, int dflt) { return v && v->type == DN_JSON_BOOL ? v->b : dflt; }

/* ------------------------------------------------------------ string builder */

static int sb_reserve(dn_sb *b, size_t extra) {
    if (b->oom) return -1;
    size_t need;
    if (__builtin_add_overflow(b->len, extra, &need) || __builtin_add_overflow(need, 1, &need)) {
        b->oom = 1;
        return -1;
    }
    if (need <= b->cap) return 0;
    size_t nc = b->cap ? b->cap : 64;
    while (nc < need) {
        if (nc > SIZE_MAX / 2) { nc = need; break; }
        nc *= 2;
    }
    char *ns = dn_realloc(b->s, nc);
    if (!ns) { b->oom = 1; return -1; }
    b->s = ns;
    b->cap = nc;
    return 0;
}

void dn_sb_putn(dn_sb *b, const char *s, size_t n) {
    if (sb_reserve(b, n)) return;
    if (n) memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = 0;
}
void dn_sb_puts(dn_sb *b, const char *s) { dn_sb_putn(b, s, strlen(s)); }

void dn_sb_printf(dn_sb *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) { b->oom = 1; return; }
    if (sb_reserve(b, (size_t)n)) return;
    va_start(ap, fmt);
    vsnprintf(b->s + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* The one JSON string escaper: quotes, backslashes and control characters
 * (RFC 8259 section 7); UTF-8 passes through. put() receives the pieces. */
static void json_escape(const char *s, void (*put)(void *, const char *, size_t), void *ctx) {
    put(ctx, "\"", 1);
    const char *run = s; /* bytes not needing escapes are written in runs */
    for (const unsigned char *p = (const unsigned char *)s; s && *p; p++) {
        unsigned char c = *p;
        const char *e = c == '"' ? "\\\"" : c == '\\' ? "\\\\" : c == '\n' ? "\\n" : c == '\r' ? "\\r"
                      : c == '\t' ? "\\t" : c == '\b' ? "\\b" : c == '\f' ? "\\f" : NULL;
        if (!e && c >= 0x20) continue;
        if ((const char *)p > run) put(ctx, run, (size_t)((const char *)p - run));
        char u[8];
        if (!e) {
            snprintf(u, sizeof u, "\\u%04x", c);
            e = u;
        }
        put(ctx, e, strlen(e));
        run = (const char *)p + 1;
    }
    if (s && *run) put(ctx, run, strlen(run));
    put(ctx, "\"", 1);
}

static void put_sb(void *ctx, const char *s, size_t n) { dn_sb_putn(ctx, s, n); }
static void put_file(void *ctx, const char *s, size_t n) { fwrite(s, 1, n, ctx); }

void dn_sb_json_str(dn_sb *b, const char *s) { json_escape(s, put_sb, b); }
void dn_json_fput_str(FILE *f, const char *s) { json_escape(s, put_file, f); }

void dn_sb_free(dn_sb *b) {
    free(b->s);
    b->s = NULL;
    b->len = b->cap = 0;
    b->oom = 0;
}
