/* ResNet (BasicBlock) parameter binding: torchvision state_dict <-> dn_model.
 *
 * The architecture is inferred from tensor shapes alone:
 *   - stem width       = conv1.weight.shape[0]            (conv1.weight is [c0,3,7,7])
 *   - blocks per stage = number of consecutive layerS.I.conv1.weight keys
 *   - stage width      = layerS.0.conv1.weight.shape[0]
 *   - classes          = fc.weight.shape[0] (absent fc.* or skip_fc -> backbone only)
 * Strides follow torchvision: the first block of layer2..4 has stride 2. A block
 * needs the 1x1 downsample shortcut when its stride is 2 or its input width
 * differs from its width; a present-but-unneeded downsample is accepted (it is
 * still a well-defined computation). Every tensor shape is then checked against
 * the inferred architecture, keys are matched by exact torchvision name, and the
 * first missing key / unexpected key / mismatched shape is reported by name.
 * num_batches_tracked buffers are optional (old torchvision files lack them).
 *
 * Ownership: every array in a dn_model is a separate malloc'ed block owned by the
 * model and released by dn_model_free. */
#include "nn/model.h"
#include "nn/arch.h"
#include "core/core.h"
#include "ood/ood.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_WIDTH 65536

/* ------------------------------------------------------------ visiting */

/* One tensor slot of the model: torchvision name, destination storage, shape. */
typedef struct slot {
    char name[96];
    float *data;
    int ndim;           /* 0 for the num_batches_tracked scalar */
    int64_t shape[4];
    int is_buffer;
    int optional;       /* may be absent from a state_dict (num_batches_tracked) */
} slot;

typedef int (*slot_fn)(void *ctx, const slot *s); /* non-zero stops the walk */

static int64_t slot_numel(const slot *s) {
    int64_t n = 1;
    for (int i = 0; i < s->ndim; i++) n *= s->shape[i];
    return n;
}

static int visit_conv(const char *name, const dn_conv_p *c, slot_fn fn, void *ctx) {
    slot s = {{0}, c->w, 4, {c->cout, c->cin, c->k, c->k}, 0, 0};
    snprintf(s.name, sizeof s.name, "%s.weight", name);
    return fn(ctx, &s);
}

static int visit_bn(const char *name, dn_bn_p *b, slot_fn fn, void *ctx) {
    static const char *suffix[4] = {"weight", "bias", "running_mean", "running_var"};
    float *arr[4] = {b->weight, b->bias, b->mean, b->var};
    for (int i = 0; i < 4; i++) {
        slot s = {{0}, arr[i], 1, {b->c}, i >= 2, 0};
        snprintf(s.name, sizeof s.name, "%s.%s", name, suffix[i]);
        if (fn(ctx, &s)) return 1;
    }
    slot s = {{0}, &b->num_batches_tracked, 0, {0}, 1, 1};
    snprintf(s.name, sizeof s.name, "%s.num_batches_tracked", name);
    return fn(ctx, &s);
}

/* Walks every tensor in torchvision state_dict order (the layer list, then the head). */
static int visit_model(dn_model *m, slot_fn fn, void *ctx) {
    dn_arch_conv l;
    for (int i = 0; !dn_arch_at(m, i, &l); i++)
        if (visit_conv(l.conv, l.conv_p, fn, ctx) || visit_bn(l.bn, l.bn_p, fn, ctx)) return 1;
    if (m->num_classes > 0) {
        slot w = {"fc.weight", m->fc_w, 2, {m->num_classes, m->feat_dim}, 0, 0};
        slot bb = {"fc.bias", m->fc_b, 1, {m->num_classes}, 0, 0};
        if (fn(ctx, &w) || fn(ctx, &bb)) return 1;
    }
    return 0;
}

/* ------------------------------------------------------------ alloc / free */

static void free_conv(dn_conv_p *c) { free(c->w); c->w = NULL; }
static void free_bn(dn_bn_p *b) {
    free(b->weight); free(b->bias); free(b->mean); free(b->var);
    b->weight = b->bias = b->mean = b->var = NULL;
}

static void free_head(dn_model *m) {
    free(m->fc_w); free(m->fc_b);
    m->fc_w = m->fc_b = NULL;
    dn_ood_free(m->ood); /* fitted to this head's classes and features */
    m->ood = NULL;
    if (m->class_names) {
        for (int i = 0; i < m->num_classes; i++) free(m->class_names[i]);
        free(m->class_names);
        m->class_names = NULL;
    }
}

void dn_model_free(dn_model *m) {
    if (!m) return;
    free_conv(&m->conv1);
    free_bn(&m->bn1);
    for (int b = 0; b < m->nblocks; b++) {
        dn_block_p *blk = &m->blocks[b];
        free_conv(&blk->conv1); free_bn(&blk->bn1);
        free_conv(&blk->conv2); free_bn(&blk->bn2);
        free_conv(&blk->down); free_bn(&blk->down_bn);
    }
    free_head(m);
    dn_meta_free(&m->meta);
    free(m);
}

static dn_status alloc_conv(dn_conv_p *c, int cin, int cout, int k, int stride, int pad) {
    c->cin = cin; c->cout = cout; c->k = k; c->stride = stride; c->pad = pad;
    c->w = dn_malloc((size_t)cout * cin * k * k * sizeof(float));
    return c->w ? DN_OK : DN_ERR_NOMEM;
}

static dn_status alloc_bn(dn_bn_p *b, int c) {
    b->c = c;
    b->eps = 1e-5f;
    b->num_batches_tracked = 0;
    b->weight = dn_malloc((size_t)c * sizeof(float));
    b->bias = dn_malloc((size_t)c * sizeof(float));
    b->mean = dn_malloc((size_t)c * sizeof(float));
    b->var = dn_malloc((size_t)c * sizeof(float));
    return b->weight && b->bias && b->mean && b->var ? DN_OK : DN_ERR_NOMEM;
}

static dn_status default_class_names(dn_model *m) {
    m->class_names = dn_calloc((size_t)m->num_classes, sizeof(char *));
    if (!m->class_names) return DN_ERR_NOMEM;
    for (int i = 0; i < m->num_classes; i++) {
        char buf[32];
        snprintf(buf, sizeof buf, "class_%d", i);
        if (!(m->class_names[i] = dn_strdup(buf))) return DN_ERR_NOMEM;
    }
    return DN_OK;
}

static void set_arch(dn_model *m) {
    static const int w18[4] = {64, 128, 256, 512};
    static const int l18[4] = {2, 2, 2, 2}, l34[4] = {3, 4, 6, 3};
    int full = m->conv1.cout == 64 && !memcmp(m->widths, w18, sizeof w18);
    if (full && !memcmp(m->layers, l18, sizeof l18)) snprintf(m->arch, sizeof m->arch, "resnet18");
    else if (full && !memcmp(m->layers, l34, sizeof l34)) snprintf(m->arch, sizeof m->arch, "resnet34");
    else snprintf(m->arch, sizeof m->arch, "resnet-custom");
}

/* Allocates all parameter arrays for an architecture (stem width c0, layers,
 * widths, has_down per block, num_classes). Contents uninitialised. */
static dn_status alloc_model(int c0, const int layers[4], const int widths[4], const int *has_down,
                             int num_classes, dn_model **out) {
    dn_model *m = dn_calloc(1, sizeof *m);
    if (!m) return DN_ERR_NOMEM;
    memcpy(m->layers, layers, sizeof m->layers);
    memcpy(m->widths, widths, sizeof m->widths);
    if (alloc_conv(&m->conv1, 3, c0, 7, 2, 3) || alloc_bn(&m->bn1, c0)) goto fail;
    int cin = c0, b = 0;
    for (int st = 0; st < 4; st++) {
        for (int i = 0; i < layers[st]; i++, b++) {
            dn_block_p *blk = &m->blocks[b];
            int w = widths[st], stride = (st > 0 && i == 0) ? 2 : 1;
            m->nblocks = b + 1;
            if (alloc_conv(&blk->conv1, cin, w, 3, stride, 1) || alloc_bn(&blk->bn1, w) ||
                alloc_conv(&blk->conv2, w, w, 3, 1, 1) || alloc_bn(&blk->bn2, w))
                goto fail;
            blk->has_down = has_down[b];
            if (blk->has_down && (alloc_conv(&blk->down, cin, w, 1, stride, 0) || alloc_bn(&blk->down_bn, w)))
                goto fail;
            cin = w;
        }
    }
    m->feat_dim = widths[3];
    m->num_classes = num_classes;
    if (num_classes > 0) {
        m->fc_w = dn_malloc((size_t)num_classes * m->feat_dim * sizeof(float));
        m->fc_b = dn_malloc((size_t)num_classes * sizeof(float));
        if (!m->fc_w || !m->fc_b || default_class_names(m)) goto fail;
    }
    set_arch(m);
    dn_preproc_default(&m->pp);
    m->temperature = 1.0f;
    m->threshold = 0.0f;
    *out = m;
    return DN_OK;
fail:
    dn_model_free(m);
    return DN_ERR_NOMEM;
}

/* ------------------------------------------------------------ from tensors */

static void fmt_shape(char *buf, size_t n, int ndim, const int64_t *shape) {
    size_t o = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && o < n; i++)
        o += (size_t)snprintf(buf + o, n - o, "%s%lld", i ? "," : "", (long long)shape[i]);
    if (o < n) snprintf(buf + o, n - o, "]");
}

/* Looks up a 4-d conv weight and returns its output channel count (0 if absent). */
static dn_status conv_width(const dn_tensors *ts, const char *name, int *width) {
    dn_tensor *t = dn_tensors_find(ts, name);
    *width = 0;
    if (!t) return DN_OK;
    if (t->ndim != 4) {
        char sh[128];
        fmt_shape(sh, sizeof sh, t->ndim, t->shape);
        return dn_fail(DN_ERR_SHAPE, "%s: shape %s is not a 4-d conv weight", name, sh);
    }
    if (t->shape[0] < 1 || t->shape[0] > MAX_WIDTH)
        return dn_fail(DN_ERR_SHAPE, "%s: %lld output channels out of range 1..%d", name,
                       (long long)t->shape[0], MAX_WIDTH);
    *width = (int)t->shape[0];
    return DN_OK;
}

typedef struct bind_ctx {
    const dn_tensors *ts;
    unsigned char *used;
    dn_status st;
} bind_ctx;

static int bind_slot(void *vctx, const slot *s) {
    bind_ctx *c = vctx;
    dn_tensor *t = dn_tensors_find(c->ts, s->name);
    if (!t) {
        if (s->optional) { s->data[0] = 0; return 0; }
        c->st = dn_fail(DN_ERR_SHAPE, "missing key '%s'", s->name);
        return 1;
    }
    c->used[t - c->ts->t] = 1;
    int ok = 1;
    if (s->ndim == 0) {
        ok = dn_tensor_numel(t) == 1 && t->ndim <= 1;
    } else {
        ok = t->ndim == s->ndim;
        for (int i = 0; ok && i < s->ndim; i++) ok = t->shape[i] == s->shape[i];
    }
    if (!ok) {
        char got[128], want[128];
        fmt_shape(got, sizeof got, t->ndim, t->shape);
        fmt_shape(want, sizeof want, s->ndim, s->shape);
        c->st = dn_fail(DN_ERR_SHAPE, "%s: shape %s does not match expected %s", s->name, got, want);
        return 1;
    }
    int64_t n = slot_numel(s);
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(t->data[i])) {
            c->st = dn_fail(DN_ERR_NUMERIC, "%s: non-finite value at element %lld", s->name, (long long)i);
            return 1;
        }
    }
    if (strstr(s->name, "running_var")) {
        for (int64_t i = 0; i < n; i++)
            if (t->data[i] < 0) {
                c->st = dn_fail(DN_ERR_NUMERIC, "%s: negative variance at element %lld", s->name, (long long)i);
                return 1;
            }
    }
    memcpy(s->data, t->data, (size_t)n * sizeof(float));
    return 0;
}

dn_status dn_model_from_tensors(const dn_tensors *ts, int skip_fc, dn_model **out) {
    dn_status st;
    dn_model *m = NULL;
    unsigned char *used = NULL;
    *out = NULL;
    int c0, layers[4] = {0}, widths[4] = {0}, has_down[DN_MAX_BLOCKS] = {0}, nb = 0;
    char key[96];

    if ((st = conv_width(ts, "conv1.weight", &c0))) return st;
    if (!c0) return dn_fail(DN_ERR_SHAPE, "missing key 'conv1.weight'");
    int cin = c0;
    for (int s = 0; s < 4; s++) {
        for (int i = 0;; i++) {
            int w;
            dn_arch_names(s, i, DN_ARCH_CONV1, key, NULL, sizeof key);
            strcat(key, ".weight");
            if ((st = conv_width(ts, key, &w))) return st;
            if (!w) break;
            if (i == 0) widths[s] = w;
            if (nb >= DN_MAX_BLOCKS)
                return dn_fail(DN_ERR_SHAPE, "%s: more than %d residual blocks", key, DN_MAX_BLOCKS);
            int stride = (s > 0 && i == 0) ? 2 : 1;
            int bin = i == 0 ? cin : widths[s];
            dn_arch_names(s, i, DN_ARCH_DOWN, key, NULL, sizeof key);
            strcat(key, ".weight");
            has_down[nb] = stride != 1 || bin != widths[s] || dn_tensors_find(ts, key) != NULL;
            nb++;
            layers[s]++;
        }
        if (!layers[s]) {
            dn_arch_names(s, 0, DN_ARCH_CONV1, key, NULL, sizeof key);
            return dn_fail(DN_ERR_SHAPE, "missing key '%s.weight'", key);
        }
        cin = widths[s];
    }

    int nc = 0;
    dn_tensor *fw = skip_fc ? NULL : dn_tensors_find(ts, "fc.weight");
    dn_tensor *fb = skip_fc ? NULL : dn_tensors_find(ts, "fc.bias");
    if (fw || fb) {
        if (!fw) return dn_fail(DN_ERR_SHAPE, "missing key 'fc.weight'");
        if (!fb) return dn_fail(DN_ERR_SHAPE, "missing key 'fc.bias'");
        if (fw->ndim != 2 || fw->shape[0] < 1 || fw->shape[0] > DN_MAX_CLASSES) {
            char sh[128];
            fmt_shape(sh, sizeof sh, fw->ndim, fw->shape);
            return dn_fail(DN_ERR_SHAPE, "fc.weight: shape %s is not [classes(1..%d),%d]", sh,
                           DN_MAX_CLASSES, widths[3]);
        }
        nc = (int)fw->shape[0];
    }

    if ((st = alloc_model(c0, layers, widths, has_down, nc, &m))) goto fail;
    if (!(used = dn_calloc((size_t)(ts->n > 0 ? ts->n : 1), 1))) { st = DN_ERR_NOMEM; goto fail; }
    bind_ctx bc = {ts, used, DN_OK};
    if (visit_model(m, bind_slot, &bc)) { st = bc.st; goto fail; }
    for (int i = 0; i < ts->n; i++) {
        if (used[i]) continue;
        if (skip_fc && !strncmp(ts->t[i].name, "fc.", 3)) continue;
        st = dn_fail(DN_ERR_SHAPE, "unexpected key '%s'", ts->t[i].name);
        goto fail;
    }
    free(used);
    *out = m;
    return DN_OK;
fail:
    free(used);
    dn_model_free(m);
    return st;
}

/* ------------------------------------------------------------ to tensors */

typedef struct { dn_tensors *out; dn_status st; } export_ctx;

static int export_slot(void *vctx, const slot *s) {
    export_ctx *c = vctx;
    int64_t n = slot_numel(s);
    float *d = dn_malloc((size_t)n * sizeof(float));
    if (!d) { c->st = DN_ERR_NOMEM; return 1; }
    memcpy(d, s->data, (size_t)n * sizeof(float));
    if ((c->st = dn_tensors_add(c->out, s->name, s->ndim, s->shape, d))) return 1;
    return 0;
}

dn_status dn_model_to_tensors(const dn_model *m, dn_tensors *out) {
    export_ctx c = {out, DN_OK};
    /* visit_model takes a mutable model only because foreach hands out writable
     * pointers; export_slot only reads. */
    visit_model((dn_model *)m, export_slot, &c);
    return c.st;
}

/* ------------------------------------------------------------ foreach / count */

typedef struct { dn_param_fn fn; void *ctx; } foreach_ctx;
static int foreach_slot(void *vctx, const slot *s) {
    foreach_ctx *c = vctx;
    c->fn(c->ctx, s->name, s->data, slot_numel(s), s->is_buffer);
    return 0;
}

void dn_model_foreach(dn_model *m, dn_param_fn fn, void *ctx) {
    foreach_ctx c = {fn, ctx};
    visit_model(m, foreach_slot, &c);
}

static int count_slot(void *vctx, const slot *s) {
    if (!s->is_buffer) *(int64_t *)vctx += slot_numel(s);
    return 0;
}

int64_t dn_model_param_count(const dn_model *m) {
    int64_t n = 0;
    visit_model((dn_model *)m, count_slot, &n);
    return n;
}

/* ------------------------------------------------------------ head / clone */

dn_status dn_model_new_head(dn_model *m, int n, const char *const *class_names, uint64_t seed) {
    if (n < 1 || n > DN_MAX_CLASSES)
        return dn_fail(DN_ERR_ARG, "new head: %d classes out of range 1..%d", n, DN_MAX_CLASSES);
    float *w = dn_malloc((size_t)n * m->feat_dim * sizeof(float));
    float *b = dn_malloc((size_t)n * sizeof(float));
    char **names = dn_calloc((size_t)n, sizeof(char *));
    if (!w || !b || !names) goto fail;
    for (int i = 0; i < n; i++) {
        char buf[32];
        const char *nm = class_names ? class_names[i] : NULL;
        if (!nm) { snprintf(buf, sizeof buf, "class_%d", i); nm = buf; }
        if (!(names[i] = dn_strdup(nm))) goto fail;
    }
    /* nn.Linear.reset_parameters: kaiming_uniform_(a=sqrt(5)) has gain
     * sqrt(2/(1+5)) and bound gain*sqrt(3/fan_in) = 1/sqrt(fan_in); the bias is
     * U(-1/sqrt(fan_in), 1/sqrt(fan_in)) too. Weight drawn first, row-major. */
    dn_rng r;
    dn_rng_seed(&r, seed);
    double bound = 1.0 / sqrt((double)m->feat_dim);
    for (size_t i = 0; i < (size_t)n * m->feat_dim; i++) w[i] = (float)((2 * dn_rng_uniform(&r) - 1) * bound);
    for (int i = 0; i < n; i++) b[i] = (float)((2 * dn_rng_uniform(&r) - 1) * bound);
    free_head(m);
    m->fc_w = w; m->fc_b = b; m->class_names = names; m->num_classes = n;
    return DN_OK;
fail:
    if (names) for (int i = 0; i < n; i++) free(names[i]);
    free(names); free(w); free(b);
    return DN_ERR_NOMEM;
}

/* Tensor copies for dn_model_clone: the same walk as dn_model_free (shapes are equal by
 * construction: the clone is allocated from the source's architecture). No slot names:
 * a clone needs only the data, and naming ~130 slots twice per clone was most of its cost. */
static void copy_conv(dn_conv_p *d, const dn_conv_p *s) {
    if (s->w) memcpy(d->w, s->w, (size_t)s->cout * s->cin * s->k * s->k * sizeof(float));
}
static void copy_bn(dn_bn_p *d, const dn_bn_p *s) {
    size_t n = (size_t)s->c * sizeof(float);
    if (s->weight) { memcpy(d->weight, s->weight, n); memcpy(d->bias, s->bias, n); }
    if (s->mean) { memcpy(d->mean, s->mean, n); memcpy(d->var, s->var, n); }
    d->num_batches_tracked = s->num_batches_tracked;
    d->eps = s->eps; /* not a tensor */
}

dn_status dn_model_clone(const dn_model *m, dn_model **out) {
    dn_status st;
    dn_model *c = NULL;
    int has_down[DN_MAX_BLOCKS];
    *out = NULL;
    for (int b = 0; b < m->nblocks; b++) has_down[b] = m->blocks[b].has_down;
    if ((st = alloc_model(m->conv1.cout, m->layers, m->widths, has_down, m->num_classes, &c))) goto fail;
    st = DN_ERR_NOMEM;
    copy_conv(&c->conv1, &m->conv1);
    copy_bn(&c->bn1, &m->bn1);
    for (int b = 0; b < m->nblocks; b++) {
        const dn_block_p *s = &m->blocks[b];
        dn_block_p *d = &c->blocks[b];
        copy_conv(&d->conv1, &s->conv1); copy_bn(&d->bn1, &s->bn1);
        copy_conv(&d->conv2, &s->conv2); copy_bn(&d->bn2, &s->bn2);
        if (s->has_down) { copy_conv(&d->down, &s->down); copy_bn(&d->down_bn, &s->down_bn); }
    }
    if (m->num_classes > 0) {
        memcpy(c->fc_w, m->fc_w, (size_t)m->num_classes * m->feat_dim * sizeof(float));
        memcpy(c->fc_b, m->fc_b, (size_t)m->num_classes * sizeof(float));
    }
    for (int i = 0; i < m->num_classes; i++) {
        free(c->class_names[i]);
        if (!(c->class_names[i] = dn_strdup(m->class_names[i]))) goto fail;
    }
    memcpy(c->arch, m->arch, sizeof c->arch);
    c->pp = m->pp;
    c->temperature = m->temperature;
    c->threshold = m->threshold;
    memcpy(c->source_sha256, m->source_sha256, sizeof c->source_sha256);
    memcpy(c->sha256, m->sha256, sizeof c->sha256);
    for (int i = 0; i < m->meta.n; i++)
        if ((st = dn_meta_set(&c->meta, m->meta.keys[i], m->meta.vals[i]))) goto fail;
    if (m->ood && (st = dn_ood_clone(m->ood, &c->ood))) goto fail;
    *out = c;
    return DN_OK;
fail:
    dn_model_free(c);
    return st ? st : DN_ERR_NOMEM;
}

/* ------------------------------------------------------------ public accessors */

int dn_model_num_classes(const dn_model *m) { return m ? m->num_classes : 0; }
const char *dn_model_class_name(const dn_model *m, int i) {
    if (!m || i < 0 || i >= m->num_classes || !m->class_names) return NULL;
    return m->class_names[i];
}
const dn_preproc *dn_model_preproc(const dn_model *m) { return m ? &m->pp : NULL; }
