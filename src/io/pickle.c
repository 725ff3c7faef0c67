/* Restricted unpickler (see pickle.h). Opcode semantics follow CPython's
 * Lib/pickletools.py documentation; nothing is ever called or imported. */
#include "io/pickle.h"
#include "core/core.h"
#include "core/half.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

struct dn_pickle {
    dn_pk **objs;        /* every allocated value, for freeing */
    size_t nobjs, capobjs;
    dn_pk *root;
    dn_keyidx *storages; /* storage objects by key (dn_pickle_storage_dtype) */
    size_t nstorages;
};

/* Index of the storage objects by key, so a legacy file's storage list is typed in
 * O(n log n) rather than one scan of every object per storage. */
static dn_status index_storages(dn_pickle *pk) {
    size_t n = 0;
    for (size_t i = 0; i < pk->nobjs; i++) n += pk->objs[i]->type == DN_PK_STORAGE;
    pk->storages = dn_malloc((n ? n : 1) * sizeof *pk->storages);
    if (!pk->storages) return DN_ERR_NOMEM;
    for (size_t i = 0; i < pk->nobjs; i++)
        if (pk->objs[i]->type == DN_PK_STORAGE) pk->storages[pk->nstorages++] = (dn_keyidx){pk->objs[i]->s, i};
    return dn_keyidx_sort(pk->storages, pk->nstorages, NULL);
}

typedef struct {
    dn_pickle *pk;
    const uint8_t *b;
    size_t len, pos, op_pos;
    const char *label;
    dn_pk **stack;
    size_t sp, scap;
    size_t *marks;
    size_t nmarks, mcap;
    dn_pk **memo;
    size_t memo_cap, memo_count;
    dn_status st;        /* code of the first recorded error */
} up;

size_t dn_dtype_size(dn_dtype t) {
    switch (t) {
    case DN_DT_F64: case DN_DT_I64: return 8;
    case DN_DT_F32: case DN_DT_I32: return 4;
    case DN_DT_F16: case DN_DT_BF16: case DN_DT_I16: return 2;
    default: return 1;
    }
}
const char *dn_dtype_name(dn_dtype t) {
    static const char *n[] = {"float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool"};
    return (unsigned)t < sizeof n / sizeof n[0] ? n[t] : "?";
}

void dn_dtype_to_f32(dn_dtype t, const uint8_t *s, size_t n, float *d) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (t == DN_DT_F32) { /* the common case: the bytes already are the floats */
        if (n) memcpy(d, s, n * 4);
        return;
    }
#endif
    for (size_t i = 0; i < n; i++) {
        switch (t) {
        case DN_DT_F32: { uint32_t u = (uint32_t)s[4*i] | (uint32_t)s[4*i+1] << 8 | (uint32_t)s[4*i+2] << 16 | (uint32_t)s[4*i+3] << 24;
                          memcpy(&d[i], &u, 4); break; }
        case DN_DT_F64: { uint64_t u = 0; for (int k = 7; k >= 0; k--) u = u << 8 | s[8*i+k];
                          double v; memcpy(&v, &u, 8); d[i] = (float)v; break; }
        case DN_DT_F16: d[i] = dn_f16_to_f32((uint16_t)(s[2*i] | s[2*i+1] << 8)); break;
        case DN_DT_BF16: { uint32_t u = (uint32_t)(s[2*i] | s[2*i+1] << 8) << 16; memcpy(&d[i], &u, 4); break; }
        case DN_DT_I64: { uint64_t u = 0; for (int k = 7; k >= 0; k--) u = u << 8 | s[8*i+k];
                          d[i] = (float)(int64_t)u; break; }
        case DN_DT_I32: d[i] = (float)(int32_t)((uint32_t)s[4*i] | (uint32_t)s[4*i+1] << 8 | (uint32_t)s[4*i+2] << 16 | (uint32_t)s[4*i+3] << 24); break;
        case DN_DT_I16: d[i] = (float)(int16_t)(uint16_t)(s[2*i] | s[2*i+1] << 8); break;
        case DN_DT_I8: d[i] = (float)(int8_t)s[i]; break;
        case DN_DT_U8: d[i] = (float)s[i]; break;
        case DN_DT_BOOL: d[i] = s[i] ? 1.0f : 0.0f; break;
        }
    }
}

/* ------------------------------------------------------------ values */

static dn_status perr(up *u, dn_status code, const char *fmt, const char *arg) {
    char msg[512];
    snprintf(msg, sizeof msg, fmt, arg ? arg : "");
    if (!u->st) u->st = code;
    return dn_fail(code, "%s: pickle offset %zu: %s", u->label, u->op_pos, msg);
}

static dn_pk *new_obj(up *u, dn_pk_type t) {
    dn_pickle *p = u->pk;
    if (p->nobjs >= DN_PK_MAX_OBJECTS) { perr(u, DN_ERR_NOMEM, "too many objects", NULL); return NULL; }
    if (p->nobjs == p->capobjs) {
        size_t nc = p->capobjs ? p->capobjs * 2 : 256;
        dn_pk **no = dn_realloc(p->objs, nc * sizeof *no);
        if (!no) { perr(u, DN_ERR_NOMEM, "out of memory", NULL); return NULL; }
        p->objs = no;
        p->capobjs = nc;
    }
    dn_pk *v = dn_calloc(1, sizeof *v);
    if (!v) { perr(u, DN_ERR_NOMEM, "out of memory", NULL); return NULL; }
    v->type = t;
    p->objs[p->nobjs++] = v;
    return v;
}

static int add_item(up *u, dn_pk *c, dn_pk *v) {
    if (c->n == c->cap) {
        size_t nc = c->cap ? c->cap * 2 : 4;
        dn_pk **ni = dn_realloc(c->items, nc * sizeof *ni);
        if (!ni) { perr(u, DN_ERR_NOMEM, "out of memory", NULL); return -1; }
        c->items = ni;
        c->cap = nc;
    }
    c->items[c->n++] = v;
    return 0;
}

/* Appends (key, value). Duplicate keys are kept in order (lookups take the last);
 * replacing in place would cost O(n^2) on hostile input. Consumers that need
 * unique keys (pth.c) check for duplicates themselves. */
static int dict_set(up *u, dn_pk *d, dn_pk *k, dn_pk *v) {
    return add_item(u, d, k) || add_item(u, d, v) ? -1 : 0;
}

const dn_pk *dn_pk_dict_get(const dn_pk *d, const char *key) {
    if (!d || d->type != DN_PK_DICT) return NULL;
    for (size_t i = d->n; i >= 2; i -= 2)
        if (d->items[i - 2]->type == DN_PK_STR && !strcmp(d->items[i - 2]->s, key)) return d->items[i - 1];
    return NULL;
}

/* ------------------------------------------------------------ stack */

static int push(up *u, dn_pk *v) {
    if (!v) return -1;
    if (u->sp >= DN_PK_MAX_STACK) { perr(u, DN_ERR_FORMAT, "stack depth limit exceeded", NULL); return -1; }
    if (u->sp == u->scap) {
        size_t nc = u->scap ? u->scap * 2 : 64;
        dn_pk **ns = dn_realloc(u->stack, nc * sizeof *ns);
        if (!ns) { perr(u, DN_ERR_NOMEM, "out of memory", NULL); return -1; }
        u->stack = ns;
        u->scap = nc;
    }
    u->stack[u->sp++] = v;
    return 0;
}

static dn_pk *pop(up *u) {
    size_t floor = u->nmarks ? u->marks[u->nmarks - 1] : 0;
    if (u->sp <= floor) { perr(u, DN_ERR_FORMAT, "stack underflow", NULL); return NULL; }
    return u->stack[--u->sp];
}

static dn_pk *top(up *u) {
    size_t floor = u->nmarks ? u->marks[u->nmarks - 1] : 0;
    if (u->sp <= floor) { perr(u, DN_ERR_FORMAT, "stack underflow", NULL); return NULL; }
    return u->stack[u->sp - 1];
}

/* Pops back to the last MARK; items are u->stack[*first .. u->sp) before the pop. */
static int pop_mark(up *u, size_t *first) {
    if (!u->nmarks) { perr(u, DN_ERR_FORMAT, "MARK expected on stack", NULL); return -1; }
    *first = u->marks[--u->nmarks];
    return 0;
}

/* The object just below a popped MARK at stack index first (the container of
 * APPENDS/SETITEMS); must lie above the enclosing MARK. */
static dn_pk *below_mark(up *u, size_t first) {
    size_t floor = u->nmarks ? u->marks[u->nmarks - 1] : 0;
    if (first <= floor) { perr(u, DN_ERR_FORMAT, "stack underflow", NULL); return NULL; }
    return u->stack[first - 1];
}

static int need(up *u, size_t n) {
    if (n > u->len - u->pos) { perr(u, DN_ERR_FORMAT, "truncated pickle data", NULL); return -1; }
    return 0;
}
static uint64_t rdle(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static int memo_put(up *u, uint64_t idx, dn_pk *v) {
    if (!v) return -1;
    if (idx >= DN_PK_MAX_MEMO) { perr(u, DN_ERR_FORMAT, "memo index too large", NULL); return -1; }
    if (idx >= u->memo_cap) {
        size_t nc = u->memo_cap ? u->memo_cap : 64;
        while (nc <= idx) nc *= 2;
        dn_pk **nm = dn_realloc(u->memo, nc * sizeof *nm);
        if (!nm) { perr(u, DN_ERR_NOMEM, "out of memory", NULL); return -1; }
        memset(nm + u->memo_cap, 0, (nc - u->memo_cap) * sizeof *nm);
        u->memo = nm;
        u->memo_cap = nc;
    }
    if (!u->memo[idx]) u->memo_count++;
    u->memo[idx] = v;
    return 0;
}
static dn_pk *memo_get(up *u, uint64_t idx) {
    if (idx >= u->memo_cap || !u->memo[idx]) { perr(u, DN_ERR_FORMAT, "memo key missing (GET before PUT)", NULL); return NULL; }
    return u->memo[idx];
}

static dn_pk *make_str(up *u, dn_pk_type t, size_t n) {
    if (need(u, n)) return NULL;
    dn_pk *v = new_obj(u, t);
    if (!v) return NULL;
    v->s = dn_malloc(n + 1);
    if (!v->s) { perr(u, DN_ERR_NOMEM, "out of memory", NULL); return NULL; }
    memcpy(v->s, u->b + u->pos, n);
    v->s[n] = 0;
    v->slen = n;
    u->pos += n;
    return v;
}

/* ------------------------------------------------------------ globals */

static const struct { const char *name; dn_dtype dt; } storages[] = {
    {"torch.FloatStorage", DN_DT_F32}, {"torch.DoubleStorage", DN_DT_F64}, {"torch.HalfStorage", DN_DT_F16},
    {"torch.BFloat16Storage", DN_DT_BF16}, {"torch.LongStorage", DN_DT_I64}, {"torch.IntStorage", DN_DT_I32},
    {"torch.ShortStorage", DN_DT_I16}, {"torch.CharStorage", DN_DT_I8}, {"torch.ByteStorage", DN_DT_U8},
    {"torch.BoolStorage", DN_DT_BOOL},
};
static const char *callables[] = {"collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor",
                                  "torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state"};

static int storage_dtype(const char *name, dn_dtype *dt) {
    for (size_t i = 0; i < sizeof storages / sizeof storages[0]; i++)
        if (!strcmp(name, storages[i].name)) { *dt = storages[i].dt; return 1; }
    return 0;
}

static dn_pk *make_global(up *u, const char *mod, size_t ml, const char *name, size_t nl) {
    char full[256];
    if (ml + nl + 2 > sizeof full) { perr(u, DN_ERR_FORMAT, "global name too long", NULL); return NULL; }
    memcpy(full, mod, ml);
    full[ml] = '.';
    memcpy(full + ml + 1, name, nl);
    full[ml + 1 + nl] = 0;
    if (strlen(full) != ml + 1 + nl) { perr(u, DN_ERR_FORMAT, "NUL byte in global name", NULL); return NULL; }
    int ok = 0;
    dn_dtype dt;
    for (size_t i = 0; i < sizeof callables / sizeof callables[0]; i++)
        if (!strcmp(full, callables[i])) ok = 1;
    if (!ok && storage_dtype(full, &dt)) ok = 1;
    if (!ok) {
        if (!strncmp(full, "torch.", 6) && strstr(full, "Storage"))
            perr(u, DN_ERR_UNSUPPORTED, "unsupported tensor storage type (dtype) '%s'", full);
        else
            perr(u, DN_ERR_FORMAT, "global '%s' is not allowed (restricted unpickler loads only state_dicts)", full);
        return NULL;
    }
    dn_pk *v = new_obj(u, DN_PK_GLOBAL);
    if (!v || !(v->s = dn_strdup(full))) return NULL;
    v->slen = strlen(full);
    return v;
}

static int as_int(const dn_pk *v, int64_t *out) {
    if (!v || (v->type != DN_PK_INT && v->type != DN_PK_BOOL)) return 0;
    *out = v->i;
    return 1;
}

static dn_pk *persistent_load(up *u, dn_pk *pid) {
    if (!pid || pid->type != DN_PK_TUPLE || (pid->n != 5 && pid->n != 6) || pid->items[0]->type != DN_PK_STR ||
        strcmp(pid->items[0]->s, "storage")) {
        perr(u, DN_ERR_FORMAT, "persistent id is not a ('storage', type, key, location, numel) tuple", NULL);
        return NULL;
    }
    dn_pk *ty = pid->items[1], *key = pid->items[2], *loc = pid->items[3];
    int64_t numel;
    dn_dtype dt;
    if (ty->type != DN_PK_GLOBAL || !storage_dtype(ty->s, &dt)) {
        perr(u, DN_ERR_FORMAT, "persistent id storage type is not a torch storage class", NULL);
        return NULL;
    }
    if (key->type != DN_PK_STR || loc->type != DN_PK_STR || !as_int(pid->items[4], &numel) || numel < 0) {
        perr(u, DN_ERR_FORMAT, "persistent id has bad key/location/numel", NULL);
        return NULL;
    }
    if (pid->n == 6 && pid->items[5]->type != DN_PK_NONE) {
        perr(u, DN_ERR_UNSUPPORTED, "legacy storage views (view_metadata) are not supported", NULL);
        return NULL;
    }
    dn_pk *s = new_obj(u, DN_PK_STORAGE);
    if (!s) return NULL;
    s->dtype = dt;
    s->numel = numel;
    s->s = key->s;          /* shared with the key string object (same lifetime) */
    s->slen = key->slen;
    s->location = loc->s;
    return s;
}

static dn_pk *rebuild_tensor(up *u, dn_pk *args) {
    /* v2: (storage, offset, size, stride, requires_grad, hooks[, metadata]); v1 (torch < 1.0): the first four */
    if (args->n != 4 && (args->n < 6 || args->n > 7)) {
        perr(u, DN_ERR_FORMAT, "_rebuild_tensor: expected 4, 6 or 7 arguments", NULL);
        return NULL;
    }
    dn_pk *st = args->items[0], *size = args->items[2], *stride = args->items[3];
    int64_t off;
    if (st->type != DN_PK_STORAGE) { perr(u, DN_ERR_FORMAT, "_rebuild_tensor_v2: first argument is not a storage", NULL); return NULL; }
    if (!as_int(args->items[1], &off) || off < 0) { perr(u, DN_ERR_FORMAT, "_rebuild_tensor_v2: bad storage offset", NULL); return NULL; }
    if (size->type != DN_PK_TUPLE || stride->type != DN_PK_TUPLE || size->n != stride->n) {
        perr(u, DN_ERR_FORMAT, "_rebuild_tensor_v2: size/stride must be tuples of equal length", NULL);
        return NULL;
    }
    if (size->n > DN_MAX_DIMS) { perr(u, DN_ERR_UNSUPPORTED, "_rebuild_tensor_v2: too many dimensions", NULL); return NULL; }
    dn_pk *t = new_obj(u, DN_PK_TENSOR);
    if (!t) return NULL;
    t->storage = st;
    t->offset = off;
    t->ndim = (int)size->n;
    for (size_t i = 0; i < size->n; i++) {
        if (!as_int(size->items[i], &t->shape[i]) || !as_int(stride->items[i], &t->stride[i]) || t->shape[i] < 0 ||
            t->stride[i] < 0) {
            perr(u, DN_ERR_FORMAT, "_rebuild_tensor_v2: bad size or stride entry", NULL);
            return NULL;
        }
    }
    return t;
}

static dn_pk *do_reduce(up *u, dn_pk *fn, dn_pk *args) {
    if (!fn || !args) return NULL;
    if (fn->type != DN_PK_GLOBAL) { perr(u, DN_ERR_FORMAT, "REDUCE of a non-callable", NULL); return NULL; }
    if (args->type != DN_PK_TUPLE) { perr(u, DN_ERR_FORMAT, "REDUCE arguments are not a tuple (%s)", fn->s); return NULL; }
    if (!strcmp(fn->s, "collections.OrderedDict")) {
        dn_pk *d = new_obj(u, DN_PK_DICT);
        if (!d) return NULL;
        if (args->n == 0) return d;
        if (args->n == 1 && args->items[0]->type == DN_PK_LIST) {
            dn_pk *l = args->items[0];
            for (size_t i = 0; i < l->n; i++) {
                if (l->items[i]->type != DN_PK_TUPLE || l->items[i]->n != 2) {
                    perr(u, DN_ERR_FORMAT, "OrderedDict: items must be pairs", NULL);
                    return NULL;
                }
                if (dict_set(u, d, l->items[i]->items[0], l->items[i]->items[1])) return NULL;
            }
            return d;
        }
        perr(u, DN_ERR_FORMAT, "OrderedDict: unsupported arguments", NULL);
        return NULL;
    }
    if (!strcmp(fn->s, "torch._utils._rebuild_tensor_v2") || !strcmp(fn->s, "torch._utils._rebuild_tensor"))
        return rebuild_tensor(u, args);
    if (!strcmp(fn->s, "torch._utils._rebuild_parameter") || !strcmp(fn->s, "torch._utils._rebuild_parameter_with_state")) {
        if (args->n < 1 || args->items[0]->type != DN_PK_TENSOR) {
            perr(u, DN_ERR_FORMAT, "%s: first argument is not a tensor", fn->s);
            return NULL;
        }
        return args->items[0];
    }
    perr(u, DN_ERR_FORMAT, "REDUCE of '%s' is not allowed", fn->s);
    return NULL;
}

/* ------------------------------------------------------------ main loop */

static const char *opname(uint8_t op) {
    switch (op) {
    case 'I': return "INT"; case 'L': return "LONG"; case 'S': return "STRING"; case 'V': return "UNICODE";
    case 'F': return "FLOAT"; case 'p': return "PUT"; case 'g': return "GET"; case 'P': return "PERSID";
    case 'i': return "INST"; case 'o': return "OBJ"; case 'l': return "LIST"; case 'd': return "DICT";
    case 0x81: return "NEWOBJ"; case 0x92: return "NEWOBJ_EX"; case 0x82: return "EXT1"; case 0x83: return "EXT2";
    case 0x84: return "EXT4"; case 0x8f: return "EMPTY_SET"; case 0x90: return "ADDITEMS"; case 0x91: return "FROZENSET";
    case 0x96: return "BYTEARRAY8"; case 0x97: return "NEXT_BUFFER"; case 0x98: return "READONLY_BUFFER";
    default: return NULL;
    }
}

static dn_status run(up *u) {
    while (1) {
        if (u->pos >= u->len) return perr(u, DN_ERR_FORMAT, "truncated pickle (no STOP opcode)", NULL);
        u->op_pos = u->pos;
        uint8_t op = u->b[u->pos++];
        dn_pk *v = NULL;
        switch (op) {
        case 0x80: /* PROTO */
            if (need(u, 1)) return DN_ERR_FORMAT;
            if (u->b[u->pos] < 2 || u->b[u->pos] > 5) return perr(u, DN_ERR_UNSUPPORTED, "unsupported pickle protocol", NULL);
            u->pos++;
            break;
        case 0x95: /* FRAME: framing is transparent for an in-memory reader */
            if (need(u, 8)) return DN_ERR_FORMAT;
            u->pos += 8;
            break;
        case '.': /* STOP */
            if (!(v = pop(u))) return DN_ERR_FORMAT;
            u->pk->root = v;
            return DN_OK;
        case '(': /* MARK */
            if (u->nmarks == u->mcap) {
                size_t nc = u->mcap ? u->mcap * 2 : 16;
                if (nc > DN_PK_MAX_STACK) return perr(u, DN_ERR_FORMAT, "too many nested MARKs", NULL);
                size_t *nm = dn_realloc(u->marks, nc * sizeof *nm);
                if (!nm) return perr(u, DN_ERR_NOMEM, "out of memory", NULL);
                u->marks = nm;
                u->mcap = nc;
            }
            u->marks[u->nmarks++] = u->sp;
            break;
        case 'N': if (push(u, new_obj(u, DN_PK_NONE))) return DN_ERR_FORMAT; break;
        case 0x88: case 0x89: /* NEWTRUE / NEWFALSE */
            if (!(v = new_obj(u, DN_PK_BOOL))) return DN_ERR_NOMEM;
            v->i = op == 0x88;
            if (push(u, v)) return DN_ERR_FORMAT;
            break;
        case 'J': case 'K': case 'M': { /* BININT, BININT1, BININT2 */
            int n = op == 'J' ? 4 : op == 'K' ? 1 : 2;
            if (need(u, (size_t)n) || !(v = new_obj(u, DN_PK_INT))) return DN_ERR_FORMAT;
            uint64_t x = rdle(u->b + u->pos, n);
            v->i = op == 'J' ? (int64_t)(int32_t)(uint32_t)x : (int64_t)x;
            u->pos += (size_t)n;
            if (push(u, v)) return DN_ERR_FORMAT;
            break;
        }
        case 0x8a: case 0x8b: { /* LONG1, LONG4: little-endian two's complement */
            size_t n;
            if (op == 0x8a) { if (need(u, 1)) return DN_ERR_FORMAT; n = u->b[u->pos++]; }
            else {
                if (need(u, 4)) return DN_ERR_FORMAT;
                int32_t sn = (int32_t)(uint32_t)rdle(u->b + u->pos, 4);
                if (sn < 0) return perr(u, DN_ERR_FORMAT, "LONG4 with negative length", NULL);
                n = (size_t)sn;
                u->pos += 4;
            }
            if (need(u, n)) return DN_ERR_FORMAT;
            if (n <= 8) {
                if (!(v = new_obj(u, DN_PK_INT))) return DN_ERR_NOMEM;
                uint64_t x = n ? rdle(u->b + u->pos, (int)n) : 0;
                if (n && n < 8 && (u->b[u->pos + n - 1] & 0x80)) x |= ~(uint64_t)0 << (8 * n); /* sign-extend */
                v->i = (int64_t)x;
                u->pos += n;
            } else if (!(v = make_str(u, DN_PK_BIGINT, n))) return DN_ERR_FORMAT;
            if (push(u, v)) return DN_ERR_FORMAT;
            break;
        }
        case 'G': { /* BINFLOAT, big-endian */
            if (need(u, 8) || !(v = new_obj(u, DN_PK_FLOAT))) return DN_ERR_FORMAT;
            uint64_t x = 0;
            for (int k = 0; k < 8; k++) x = x << 8 | u->b[u->pos + k];
            memcpy(&v->f, &x, 8);
            u->pos += 8;
            if (push(u, v)) return DN_ERR_FORMAT;
            break;
        }
        case 'X': case 0x8c: case 0x8d: case 'T': case 'U': case 'B': case 'C': case 0x8e: {
            /* BINUNICODE, SHORT_BINUNICODE, BINUNICODE8, BINSTRING, SHORT_BINSTRING, BINBYTES, SHORT_BINBYTES, BINBYTES8 */
            int lb = (op == 0x8c || op == 'U' || op == 'C') ? 1 : (op == 0x8d || op == 0x8e) ? 8 : 4;
            if (need(u, (size_t)lb)) return DN_ERR_FORMAT;
            uint64_t n = rdle(u->b + u->pos, lb);
            if (op == 'T' && (n & 0x80000000u)) return perr(u, DN_ERR_FORMAT, "BINSTRING with negative length", NULL);
            u->pos += (size_t)lb;
            if (n > u->len - u->pos) return perr(u, DN_ERR_FORMAT, "string length runs past end of pickle", NULL);
            int is_bytes = op == 'B' || op == 'C' || op == 0x8e;
            if (!(v = make_str(u, is_bytes ? DN_PK_BYTES : DN_PK_STR, (size_t)n)) || push(u, v)) return DN_ERR_FORMAT;
            break;
        }
        case ')': if (push(u, new_obj(u, DN_PK_TUPLE))) return DN_ERR_FORMAT; break;
        case ']': if (push(u, new_obj(u, DN_PK_LIST))) return DN_ERR_FORMAT; break;
        case '}': if (push(u, new_obj(u, DN_PK_DICT))) return DN_ERR_FORMAT; break;
        case 't': { /* TUPLE */
            size_t first;
            if (pop_mark(u, &first) || !(v = new_obj(u, DN_PK_TUPLE))) return DN_ERR_FORMAT;
            for (size_t k = first; k < u->sp; k++)
                if (add_item(u, v, u->stack[k])) return DN_ERR_NOMEM;
            u->sp = first;
            if (push(u, v)) return DN_ERR_FORMAT;
            break;
        }
        case 0x85: case 0x86: case 0x87: { /* TUPLE1..3 */
            int n = op - 0x84;
            dn_pk *it[3];
            for (int k = n - 1; k >= 0; k--)
                if (!(it[k] = pop(u))) return DN_ERR_FORMAT;
            if (!(v = new_obj(u, DN_PK_TUPLE))) return DN_ERR_NOMEM;
            for (int k = 0; k < n; k++)
                if (add_item(u, v, it[k])) return DN_ERR_NOMEM;
            if (push(u, v)) return DN_ERR_FORMAT;
            break;
        }
        case 'a': { /* APPEND */
            dn_pk *x = pop(u), *l = x ? top(u) : NULL;
            if (!l) return DN_ERR_FORMAT;
            if (l->type != DN_PK_LIST) return perr(u, DN_ERR_FORMAT, "APPEND to a non-list", NULL);
            if (add_item(u, l, x)) return DN_ERR_NOMEM;
            break;
        }
        case 'e': { /* APPENDS */
            size_t first;
            if (pop_mark(u, &first)) return DN_ERR_FORMAT;
            dn_pk *l = below_mark(u, first);
            if (!l) return DN_ERR_FORMAT;
            if (l->type != DN_PK_LIST) return perr(u, DN_ERR_FORMAT, "APPENDS to a non-list", NULL);
            for (size_t k = first; k < u->sp; k++)
                if (add_item(u, l, u->stack[k])) return DN_ERR_NOMEM;
            u->sp = first;
            break;
        }
        case 's': { /* SETITEM */
            dn_pk *val = pop(u), *key = val ? pop(u) : NULL, *d = key ? top(u) : NULL;
            if (!d) return DN_ERR_FORMAT;
            if (d->type != DN_PK_DICT) return perr(u, DN_ERR_FORMAT, "SETITEM on a non-dict", NULL);
            if (dict_set(u, d, key, val)) return DN_ERR_NOMEM;
            break;
        }
        case 'u': { /* SETITEMS */
            size_t first;
            if (pop_mark(u, &first)) return DN_ERR_FORMAT;
            dn_pk *d = below_mark(u, first);
            if (!d) return DN_ERR_FORMAT;
            if (d->type != DN_PK_DICT) return perr(u, DN_ERR_FORMAT, "SETITEMS on a non-dict", NULL);
            if ((u->sp - first) % 2) return perr(u, DN_ERR_FORMAT, "SETITEMS with an odd number of items", NULL);
            for (size_t k = first; k < u->sp; k += 2)
                if (dict_set(u, d, u->stack[k], u->stack[k + 1])) return DN_ERR_NOMEM;
            u->sp = first;
            break;
        }
        case 'c': { /* GLOBAL "module\nname\n" */
            const char *s = (const char *)u->b + u->pos;
            size_t left = u->len - u->pos;
            const char *nl1 = memchr(s, '\n', left);
            const char *nl2 = nl1 ? memchr(nl1 + 1, '\n', left - (size_t)(nl1 + 1 - s)) : NULL;
            if (!nl2) return perr(u, DN_ERR_FORMAT, "truncated GLOBAL", NULL);
            v = make_global(u, s, (size_t)(nl1 - s), nl1 + 1, (size_t)(nl2 - nl1 - 1));
            if (!v) return DN_ERR_FORMAT;
            u->pos = (size_t)(nl2 + 1 - (const char *)u->b);
            if (push(u, v)) return DN_ERR_FORMAT;
            break;
        }
        case 0x93: { /* STACK_GLOBAL */
            dn_pk *name = pop(u), *mod = name ? pop(u) : NULL;
            if (!mod) return DN_ERR_FORMAT;
            if (mod->type != DN_PK_STR || name->type != DN_PK_STR) return perr(u, DN_ERR_FORMAT, "STACK_GLOBAL needs two strings", NULL);
            if (!(v = make_global(u, mod->s, mod->slen, name->s, name->slen)) || push(u, v)) return DN_ERR_FORMAT;
            break;
        }
        case 'R': { /* REDUCE */
            dn_pk *args = pop(u), *fn = args ? pop(u) : NULL;
            if (!fn || !(v = do_reduce(u, fn, args)) || push(u, v)) return DN_ERR_FORMAT;
            break;
        }
        case 'b': { /* BUILD: only the state of an OrderedDict (its _metadata) or a tensor, ignored */
            dn_pk *state = pop(u), *obj = state ? top(u) : NULL;
            if (!obj) return DN_ERR_FORMAT;
            if (obj->type != DN_PK_DICT && obj->type != DN_PK_TENSOR)
                return perr(u, DN_ERR_FORMAT, "BUILD on an object that is not a dict or tensor", NULL);
            break;
        }
        case 'Q': { /* BINPERSID */
            dn_pk *pid = pop(u);
            if (!pid || !(v = persistent_load(u, pid)) || push(u, v)) return DN_ERR_FORMAT;
            break;
        }
        case 'q': case 'r': { /* BINPUT, LONG_BINPUT */
            int n = op == 'q' ? 1 : 4;
            if (need(u, (size_t)n)) return DN_ERR_FORMAT;
            uint64_t idx = rdle(u->b + u->pos, n);
            u->pos += (size_t)n;
            dn_pk *t = top(u);
            if (!t || memo_put(u, idx, t)) return DN_ERR_FORMAT;
            break;
        }
        case 0x94: { /* MEMOIZE */
            dn_pk *t = top(u);
            if (!t || memo_put(u, u->memo_count, t)) return DN_ERR_FORMAT;
            break;
        }
        case 'h': case 'j': { /* BINGET, LONG_BINGET */
            int n = op == 'h' ? 1 : 4;
            if (need(u, (size_t)n)) return DN_ERR_FORMAT;
            uint64_t idx = rdle(u->b + u->pos, n);
            u->pos += (size_t)n;
            if (!(v = memo_get(u, idx)) || push(u, v)) return DN_ERR_FORMAT;
            break;
        }
        case '0': if (!pop(u)) return DN_ERR_FORMAT; break;            /* POP */
        case '1': { size_t first; if (pop_mark(u, &first)) return DN_ERR_FORMAT; u->sp = first; break; } /* POP_MARK */
        case '2': if (!(v = top(u)) || push(u, v)) return DN_ERR_FORMAT; break; /* DUP */
        default: {
            const char *nm = opname(op);
            char buf[64];
            if (nm) snprintf(buf, sizeof buf, "opcode %s (0x%02x) is not allowed", nm, op);
            else snprintf(buf, sizeof buf, "unknown opcode 0x%02x", op);
            return perr(u, DN_ERR_FORMAT, "%s", buf);
        }
        }
    }
}

dn_status dn_pickle_load(const uint8_t *buf, size_t len, const char *label, dn_pickle **out, size_t *consumed) {
    *out = NULL;
    dn_pickle *pk = dn_calloc(1, sizeof *pk);
    if (!pk) return DN_ERR_NOMEM;
    up u;
    memset(&u, 0, sizeof u);
    u.pk = pk;
    u.b = buf;
    u.len = len;
    u.label = label ? label : "pickle";
    dn_status st = run(&u);
    free(u.stack);
    free(u.marks);
    free(u.memo);
    if (st == DN_OK && (st = index_storages(pk))) st = dn_fail_prefix(st, "%s", u.label);
    else if (st != DN_OK && u.st) st = u.st;
    if (st != DN_OK) {
        dn_pickle_free(pk);
        return st;
    }
    if (consumed) *consumed = u.pos;
    *out = pk;
    return DN_OK;
}

const dn_pk *dn_pickle_root(const dn_pickle *p) { return p ? p->root : NULL; }

void dn_pickle_free(dn_pickle *p) {
    if (!p) return;
    for (size_t i = 0; i < p->nobjs; i++) {
        dn_pk *v = p->objs[i];
        if (v->type != DN_PK_STORAGE) free(v->s); /* storage key/location alias string objects */
        free(v->items);
        free(v);
    }
    free(p->objs);
    free(p->storages);
    free(p);
}

int dn_pickle_storage_dtype(const dn_pickle *p, const char *key, dn_dtype *dt) {
    ptrdiff_t k = p ? dn_keyidx_find(p->storages, p->nstorages, key) : -1;
    if (k < 0) return 0;
    *dt = p->objs[p->storages[k].idx]->dtype; /* the first storage of that key */
    return 1;
}
