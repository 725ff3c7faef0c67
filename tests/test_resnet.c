/* ResNet binding (dn_model_from_tensors & co) and the inference engine.
 *
 * - binding: architecture inference, missing / unexpected / mismatched keys named
 *   in the error, skip_fc, optional num_batches_tracked, torchvision order;
 * - engine vs an unfolded naive forward (conv, then BN, ReLU, maxpool, residual,
 *   avgpool, fc computed separately) on random narrow models, every available conv
 *   implementation, 1 and 2 threads, odd input sizes;
 * - sessions sharing one immutable conv plan (dn_session_new_shared): bit-identical
 *   to a private session for every conv implementation, concurrent forwards on two
 *   threads equal sequential ones, the plan outlives whichever session goes first;
 * - parity with PyTorch on the committed fixtures (tests/fixtures/resnet, written by
 *   tools/make_fixtures.py) and, where /usr/bin/python3 has torch, on a full-width
 *   random ResNet-18 and on the real ImageNet weights in ../shared. */
#include "core/core.h"
#include "harness.h"
#include "kernels/kernels.h"
#include "kernels/kern_int.h"
#include "nn/engine.h"
#include "nn/model.h"
#include "core/tensor.h"
#include "core/json.h"
#include "io/pth.h"
#include "io/safetensors.h"
#include <dirent.h>
#include <pthread.h>
#include <unistd.h>

/* ------------------------------------------------------------ helpers */

static dn_rng g_rng;

static float *rand_array(int64_t n, double scale, double offset, int uniform) {
    float *d = malloc((size_t)(n ? n : 1) * sizeof(float));
    for (int64_t i = 0; i < n; i++)
        d[i] = (float)(offset + scale * (uniform ? dn_rng_uniform(&g_rng) : dn_rng_normal(&g_rng)));
    return d;
}

static void add_conv(dn_tensors *ts, const char *name, int cout, int cin, int k) {
    int64_t sh[4] = {cout, cin, k, k};
    char key[128];
    snprintf(key, sizeof key, "%s.weight", name);
    dn_tensors_add(ts, key, 4, sh, rand_array((int64_t)cout * cin * k * k, sqrt(2.0 / (cin * k * k)), 0, 0));
}

static void add_bn(dn_tensors *ts, const char *name, int c, int with_nbt) {
    int64_t sh[1] = {c};
    char key[128];
    snprintf(key, sizeof key, "%s.weight", name);
    dn_tensors_add(ts, key, 1, sh, rand_array(c, 1.0, 0.5, 1));
    snprintf(key, sizeof key, "%s.bias", name);
    dn_tensors_add(ts, key, 1, sh, rand_array(c, 0.2, 0, 0));
    snprintf(key, sizeof key, "%s.running_mean", name);
    dn_tensors_add(ts, key, 1, sh, rand_array(c, 0.2, 0, 0));
    snprintf(key, sizeof key, "%s.running_var", name);
    dn_tensors_add(ts, key, 1, sh, rand_array(c, 1.5, 0.5, 1));
    if (with_nbt) {
        snprintf(key, sizeof key, "%s.num_batches_tracked", name);
        float *v = malloc(sizeof(float));
        *v = 7;
        dn_tensors_add(ts, key, 0, sh, v);
    }
}

/* A torchvision-layout state_dict with random values (stage widths w, stem w[0]). */
static void make_tensors(dn_tensors *ts, const int layers[4], const int w[4], int classes, int with_nbt) {
    memset(ts, 0, sizeof *ts);
    add_conv(ts, "conv1", w[0], 3, 7);
    add_bn(ts, "bn1", w[0], with_nbt);
    int cin = w[0];
    for (int s = 0; s < 4; s++)
        for (int i = 0; i < layers[s]; i++) {
            char p[64];
            int stride = (s > 0 && i == 0) ? 2 : 1;
            snprintf(p, sizeof p, "layer%d.%d.conv1", s + 1, i); add_conv(ts, p, w[s], cin, 3);
            snprintf(p, sizeof p, "layer%d.%d.bn1", s + 1, i); add_bn(ts, p, w[s], with_nbt);
            snprintf(p, sizeof p, "layer%d.%d.conv2", s + 1, i); add_conv(ts, p, w[s], w[s], 3);
            snprintf(p, sizeof p, "layer%d.%d.bn2", s + 1, i); add_bn(ts, p, w[s], with_nbt);
            if (stride != 1 || cin != w[s]) {
                snprintf(p, sizeof p, "layer%d.%d.downsample.0", s + 1, i); add_conv(ts, p, w[s], cin, 1);
                snprintf(p, sizeof p, "layer%d.%d.downsample.1", s + 1, i); add_bn(ts, p, w[s], with_nbt);
            }
            cin = w[s];
        }
    if (classes > 0) {
        int64_t sw[2] = {classes, w[3]}, sb[1] = {classes};
        dn_tensors_add(ts, "fc.weight", 2, sw, rand_array((int64_t)classes * w[3], 1.0 / sqrt(w[3]), 0, 0));
        dn_tensors_add(ts, "fc.bias", 1, sb, rand_array(classes, 0.1, 0, 0));
    }
}

static const int L18[4] = {2, 2, 2, 2}, L34[4] = {3, 4, 6, 3};
static const int WN[4] = {4, 8, 12, 16};

/* Removes tensor `name` from ts (freeing it). */
static void drop_tensor(dn_tensors *ts, const char *name) {
    for (int i = 0; i < ts->n; i++)
        if (!strcmp(ts->t[i].name, name)) {
            free(ts->t[i].name);
            free(ts->t[i].data);
            memmove(&ts->t[i], &ts->t[i + 1], (size_t)(ts->n - i - 1) * sizeof ts->t[0]);
            ts->n--;
            return;
        }
}

static double max_abs(const float *v, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs(v[i]));
    return m;
}
static double max_diff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - b[i]));
    return m;
}
static int argmax(const float *v, int n) {
    int b = 0;
    for (int i = 1; i < n; i++) if (v[i] > v[b]) b = i;
    return b;
}

/* ------------------------------------------------------------ binding tests */

TEST(bind_narrow_resnet18) {
    dn_tensors ts;
    make_tensors(&ts, L18, WN, 5, 1);
    dn_model *m = NULL;
    CHECK(dn_model_from_tensors(&ts, 0, &m) == DN_OK);
    if (!m) { dn_tensors_free(&ts); return; }
    CHECK(!strcmp(m->arch, "resnet-custom"));
    CHECK(!memcmp(m->layers, L18, sizeof L18) && !memcmp(m->widths, WN, sizeof WN));
    CHECK(m->nblocks == 8 && m->feat_dim == 16 && m->num_classes == 5);
    CHECK(!m->blocks[0].has_down && m->blocks[2].has_down && m->blocks[2].conv1.stride == 2);
    CHECK(!strcmp(dn_model_class_name(m, 4), "class_4") && dn_model_class_name(m, 5) == NULL);
    CHECK(m->temperature == 1.0f && m->threshold == 0.0f && m->pp.crop > 0);
    CHECK(m->bn1.num_batches_tracked == 7.0f && m->bn1.eps == 1e-5f);
    /* values copied by name */
    dn_tensor *t = dn_tensors_find(&ts, "layer3.0.downsample.1.running_var");
    CHECK(t && !memcmp(t->data, m->blocks[4].down_bn.var, 12 * sizeof(float)));
    dn_model_free(m);
    dn_tensors_free(&ts);
}

TEST(bind_full_resnet18_and_34_arch) {
    static const int WF[4] = {64, 128, 256, 512};
    dn_tensors ts;
    make_tensors(&ts, L18, WF, 1000, 1);
    CHECK(ts.n == 122);
    dn_model *m = NULL;
    CHECK(dn_model_from_tensors(&ts, 0, &m) == DN_OK);
    if (m) {
        CHECK(!strcmp(m->arch, "resnet18"));
        CHECK(dn_model_param_count(m) == 11689512); /* torchvision resnet18 */
        dn_model_free(m);
    }
    dn_tensors_free(&ts);
    make_tensors(&ts, L34, WN, 3, 1);
    CHECK(dn_model_from_tensors(&ts, 0, &m) == DN_OK);
    if (m) {
        CHECK(m->nblocks == 16 && !strcmp(m->arch, "resnet-custom"));
        dn_model_free(m);
    }
    dn_tensors_free(&ts);
}

static void expect_bind_error(dn_tensors *ts, int skip_fc, const char *needle, dn_status code) {
    dn_model *m = (dn_model *)1;
    dn_status st = dn_model_from_tensors(ts, skip_fc, &m);
    CHECK_MSG(st == code, "status %d want %d (%s)", st, code, dn_last_error());
    CHECK(m == NULL);
    CHECK_MSG(strstr(dn_last_error(), needle) != NULL, "error '%s' lacks '%s'", dn_last_error(), needle);
    CHECK(strchr(dn_last_error(), '\n') == NULL);
}

TEST(bind_missing_key_named) {
    const char *keys[] = {"layer2.1.bn1.running_var", "layer3.0.downsample.0.weight", "fc.bias",
                          "bn1.weight", "conv1.weight", "layer4.0.conv2.weight"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        dn_tensors ts;
        make_tensors(&ts, L18, WN, 5, 1);
        drop_tensor(&ts, keys[i]);
        expect_bind_error(&ts, 0, keys[i], DN_ERR_SHAPE);
        CHECK(strstr(dn_last_error(), "missing key") != NULL);
        dn_tensors_free(&ts);
    }
}

TEST(bind_unexpected_key_named) {
    dn_tensors ts;
    make_tensors(&ts, L18, WN, 5, 1);
    int64_t sh[1] = {4};
    dn_tensors_add(&ts, "layer1.0.bn3.weight", 1, sh, rand_array(4, 1, 0, 0));
    expect_bind_error(&ts, 0, "unexpected key 'layer1.0.bn3.weight'", DN_ERR_SHAPE);
    dn_tensors_free(&ts);
    /* a fifth stage is not a ResNet */
    make_tensors(&ts, L18, WN, 5, 1);
    int64_t sc[4] = {4, 4, 3, 3};
    dn_tensors_add(&ts, "layer5.0.conv1.weight", 4, sc, rand_array(144, 1, 0, 0));
    expect_bind_error(&ts, 0, "layer5.0.conv1.weight", DN_ERR_SHAPE);
    dn_tensors_free(&ts);
}

TEST(bind_mismatched_shape_named) {
    dn_tensors ts;
    make_tensors(&ts, L18, WN, 5, 1);
    dn_tensor *t = dn_tensors_find(&ts, "layer2.1.conv2.weight");
    t->shape[1] = 4; /* numel changes too, but binding checks shapes before reading */
    t->shape[0] = 16;
    expect_bind_error(&ts, 0, "layer2.1.conv2.weight: shape [16,4,3,3] does not match expected [8,8,3,3]",
                      DN_ERR_SHAPE);
    dn_tensors_free(&ts);

    make_tensors(&ts, L18, WN, 5, 1);
    t = dn_tensors_find(&ts, "fc.weight");
    t->shape[1] = 8;
    t->shape[0] = 10;
    expect_bind_error(&ts, 0, "fc.weight: shape [10,8] does not match expected [10,16]", DN_ERR_SHAPE);
    dn_tensors_free(&ts);

    make_tensors(&ts, L18, WN, 5, 1);
    t = dn_tensors_find(&ts, "layer1.1.bn2.bias");
    t->ndim = 2; t->shape[0] = 2; t->shape[1] = 2;
    expect_bind_error(&ts, 0, "layer1.1.bn2.bias: shape [2,2] does not match expected [4]", DN_ERR_SHAPE);
    dn_tensors_free(&ts);

    make_tensors(&ts, L18, WN, 5, 1);
    t = dn_tensors_find(&ts, "layer3.1.conv1.weight");
    t->ndim = 2; t->shape[0] = 12; t->shape[1] = 108;
    expect_bind_error(&ts, 0, "layer3.1.conv1.weight: shape [12,108] is not a 4-d conv weight", DN_ERR_SHAPE);
    dn_tensors_free(&ts);
}

TEST(bind_bad_values_named) {
    dn_tensors ts;
    make_tensors(&ts, L18, WN, 5, 1);
    dn_tensors_find(&ts, "layer1.0.bn1.running_var")->data[2] = -1;
    expect_bind_error(&ts, 0, "layer1.0.bn1.running_var: negative variance", DN_ERR_NUMERIC);
    dn_tensors_free(&ts);
    make_tensors(&ts, L18, WN, 5, 1);
    dn_tensors_find(&ts, "layer4.1.conv1.weight")->data[5] = NAN;
    expect_bind_error(&ts, 0, "layer4.1.conv1.weight: non-finite", DN_ERR_NUMERIC);
    dn_tensors_free(&ts);
}

TEST(bind_skip_fc_and_backbone) {
    dn_tensors ts;
    make_tensors(&ts, L18, WN, 1000, 1);
    dn_model *m = NULL;
    CHECK(dn_model_from_tensors(&ts, 1, &m) == DN_OK);
    if (m) {
        CHECK(m->num_classes == 0 && m->fc_w == NULL && dn_model_num_classes(m) == 0);
        CHECK(dn_model_new_head(m, 6, NULL, 42) == DN_OK);
        CHECK(m->num_classes == 6 && !strcmp(dn_model_class_name(m, 5), "class_5"));
        dn_model_free(m);
    }
    /* a mis-shaped fc is ignored when skipping it */
    dn_tensors_find(&ts, "fc.weight")->shape[1] = 3;
    CHECK(dn_model_from_tensors(&ts, 1, &m) == DN_OK);
    dn_model_free(m);
    /* without skip_fc, fc.weight alone is a missing fc.bias */
    drop_tensor(&ts, "fc.bias");
    expect_bind_error(&ts, 0, "missing key 'fc.bias'", DN_ERR_SHAPE);
    /* no fc.* at all: a backbone */
    drop_tensor(&ts, "fc.weight");
    CHECK(dn_model_from_tensors(&ts, 0, &m) == DN_OK);
    if (m) CHECK(m->num_classes == 0);
    dn_model_free(m);
    dn_tensors_free(&ts);
}

TEST(bind_without_num_batches_tracked) {
    dn_tensors ts;
    make_tensors(&ts, L18, WN, 5, 0);
    dn_model *m = NULL;
    CHECK(dn_model_from_tensors(&ts, 0, &m) == DN_OK);
    if (m) CHECK(m->bn1.num_batches_tracked == 0);
    dn_model_free(m);
    dn_tensors_free(&ts);
}

typedef struct { int n, buffers; char first[3][64]; char last[64]; int64_t total; } walk;
static void walk_fn(void *ctx, const char *name, float *data, int64_t numel, int is_buffer) {
    walk *w = ctx;
    if (w->n < 3) snprintf(w->first[w->n], 64, "%s", name);
    snprintf(w->last, 64, "%s", name);
    w->n++;
    w->buffers += is_buffer;
    if (!is_buffer) w->total += numel;
    (void)data;
}

TEST(roundtrip_foreach_order_clone) {
    dn_tensors ts, out = {0};
    make_tensors(&ts, L34, WN, 5, 1);
    dn_model *m = NULL, *c = NULL, *m2 = NULL;
    CHECK(dn_model_from_tensors(&ts, 0, &m) == DN_OK);
    if (!m) { dn_tensors_free(&ts); return; }
    CHECK(dn_model_to_tensors(m, &out) == DN_OK);
    CHECK(out.n == ts.n);
    int same = out.n == ts.n;
    for (int i = 0; same && i < ts.n; i++) { /* same names, order, shapes and values */
        same = !strcmp(out.t[i].name, ts.t[i].name) && out.t[i].ndim == ts.t[i].ndim &&
               dn_tensor_numel(&out.t[i]) == dn_tensor_numel(&ts.t[i]) &&
               !memcmp(out.t[i].data, ts.t[i].data, (size_t)dn_tensor_numel(&ts.t[i]) * sizeof(float));
        if (!same) printf("  differs at %d: %s vs %s\n", i, out.t[i].name, ts.t[i].name);
    }
    CHECK(same);
    walk w = {0};
    dn_model_foreach(m, walk_fn, &w);
    CHECK(w.n == ts.n && w.buffers == 3 * (1 + 16 * 2 + 3));
    CHECK(!strcmp(w.first[0], "conv1.weight") && !strcmp(w.first[1], "bn1.weight") &&
          !strcmp(w.first[2], "bn1.bias") && !strcmp(w.last, "fc.bias"));
    CHECK(w.total == dn_model_param_count(m));
    CHECK(dn_model_from_tensors(&out, 0, &m2) == DN_OK);
    CHECK(dn_model_clone(m, &c) == DN_OK);
    if (c) { /* every tensor (buffers and num_batches_tracked too), eps, in order */
        dn_tensors ct = {0};
        CHECK(dn_model_to_tensors(c, &ct) == DN_OK && ct.n == out.n);
        int eq = ct.n == out.n;
        for (int i = 0; eq && i < ct.n; i++)
            eq = !strcmp(ct.t[i].name, out.t[i].name) && dn_tensor_numel(&ct.t[i]) == dn_tensor_numel(&out.t[i]) &&
                 !memcmp(ct.t[i].data, out.t[i].data, (size_t)dn_tensor_numel(&ct.t[i]) * sizeof(float));
        CHECK(eq);
        dn_tensors_free(&ct);
        CHECK(c->blocks[7].down_bn.eps == m->blocks[7].down_bn.eps && c->bn1.eps == m->bn1.eps);
        CHECK(c->blocks[15].conv2.w != m->blocks[15].conv2.w);
        CHECK(!memcmp(c->blocks[15].conv2.w, m->blocks[15].conv2.w, 16 * 16 * 9 * sizeof(float)));
        CHECK(!strcmp(c->class_names[2], "class_2") && c->class_names[2] != m->class_names[2]);
        c->blocks[0].bn1.mean[0] += 1;
        CHECK(c->blocks[0].bn1.mean[0] != m->blocks[0].bn1.mean[0]);
    }
    dn_model_free(c);
    dn_model_free(m2);
    dn_model_free(m);
    dn_tensors_free(&out);
    dn_tensors_free(&ts);
}

TEST(new_head_pytorch_init) {
    dn_tensors ts;
    make_tensors(&ts, L18, WN, 0, 1);
    dn_model *m = NULL;
    CHECK(dn_model_from_tensors(&ts, 0, &m) == DN_OK);
    dn_tensors_free(&ts);
    if (!m) return;
    const char *names[3] = {"scratch", "spot", "ok"};
    CHECK(dn_model_new_head(m, 3, names, 7) == DN_OK);
    double bound = 1.0 / sqrt(16.0), mx = 0, sum = 0;
    for (int i = 0; i < 48; i++) { mx = fmax(mx, fabs(m->fc_w[i])); sum += m->fc_w[i]; }
    for (int i = 0; i < 3; i++) mx = fmax(mx, fabs(m->fc_b[i]));
    CHECK(mx <= bound && mx > 0.5 * bound);
    CHECK(fabs(sum / 48) < 0.1);
    CHECK(!strcmp(dn_model_class_name(m, 1), "spot"));
    float w0 = m->fc_w[0];
    CHECK(dn_model_new_head(m, 3, names, 7) == DN_OK && m->fc_w[0] == w0); /* seeded */
    CHECK(dn_model_new_head(m, 0, NULL, 7) == DN_ERR_ARG && m->num_classes == 3);
    dn_model_free(m);
}

/* ------------------------------------------------------------ naive forward */

static void bn_apply(const dn_bn_p *bn, float *x, int n, int hw, int relu) {
    for (int i = 0; i < n; i++)
        for (int c = 0; c < bn->c; c++) {
            double sc = bn->weight[c] / sqrt((double)bn->var[c] + bn->eps);
            float *p = x + ((size_t)i * bn->c + c) * hw;
            for (int k = 0; k < hw; k++) {
                double v = (p[k] - bn->mean[c]) * sc + bn->bias[c];
                p[k] = (float)(relu && v < 0 ? 0 : v);
            }
        }
}

/* conv (reference, no bias) followed by explicit BN (+ReLU); returns new buffer. */
static float *conv_bn(const dn_conv_p *cp, const dn_bn_p *bn, const float *x, int n, int *h, int *w, int relu) {
    dn_conv_desc d = {cp->cin, cp->cout, cp->k, cp->k, cp->stride, cp->pad};
    int oh = dn_conv_out(*h, cp->k, cp->stride, cp->pad), ow = dn_conv_out(*w, cp->k, cp->stride, cp->pad);
    float *y = malloc((size_t)n * cp->cout * oh * ow * sizeof(float));
    dn_conv2d_ref(&d, x, n, *h, *w, cp->w, NULL, NULL, 0, y);
    bn_apply(bn, y, n, oh * ow, relu);
    *h = oh; *w = ow;
    return y;
}

/* Unfolded eval forward; fills logits (n x classes) and feat (n x feat_dim). */
static void naive_forward(const dn_model *m, const float *x, int n, int h, int w, float *feat, float *logits) {
    float *a = conv_bn(&m->conv1, &m->bn1, x, n, &h, &w, 1);
    int c = m->conv1.cout, ph = (h + 2 - 3) / 2 + 1, pw = (w + 2 - 3) / 2 + 1;
    float *p = malloc((size_t)n * c * ph * pw * sizeof(float));
    for (int i = 0; i < n * c; i++)
        for (int oy = 0; oy < ph; oy++)
            for (int ox = 0; ox < pw; ox++) {
                float mx = -INFINITY;
                for (int ky = 0; ky < 3; ky++)
                    for (int kx = 0; kx < 3; kx++) {
                        int yy = oy * 2 - 1 + ky, xx = ox * 2 - 1 + kx;
                        if (yy >= 0 && yy < h && xx >= 0 && xx < w) mx = fmaxf(mx, a[((size_t)i * h + yy) * w + xx]);
                    }
                p[((size_t)i * ph + oy) * pw + ox] = mx;
            }
    free(a);
    h = ph; w = pw;
    for (int b = 0; b < m->nblocks; b++) {
        const dn_block_p *bp = &m->blocks[b];
        int h1 = h, w1 = w, h2, w2;
        float *t = conv_bn(&bp->conv1, &bp->bn1, p, n, &h1, &w1, 1);
        h2 = h1; w2 = w1;
        float *y = conv_bn(&bp->conv2, &bp->bn2, t, n, &h2, &w2, 0);
        float *r = p;
        if (bp->has_down) { int hd = h, wd = w; r = conv_bn(&bp->down, &bp->down_bn, p, n, &hd, &wd, 0); }
        size_t cnt = (size_t)n * bp->conv2.cout * h2 * w2;
        for (size_t k = 0; k < cnt; k++) { float v = y[k] + r[k]; y[k] = v > 0 ? v : 0; }
        if (r != p) free(r);
        free(t); free(p);
        p = y; h = h2; w = w2;
    }
    for (int i = 0; i < n * m->feat_dim; i++) {
        double s = 0;
        for (int k = 0; k < h * w; k++) s += p[(size_t)i * h * w + k];
        feat[i] = (float)(s / (h * w));
    }
    free(p);
    for (int i = 0; i < n; i++)
        for (int o = 0; o < m->num_classes; o++) {
            double s = m->fc_b[o];
            for (int k = 0; k < m->feat_dim; k++) s += (double)feat[i * m->feat_dim + k] * m->fc_w[o * m->feat_dim + k];
            logits[i * m->num_classes + o] = (float)s;
        }
}

static const dn_conv_impl IMPLS[] = {DN_CONV_REF, DN_CONV_AUTO, DN_CONV_DIRECT, DN_CONV_WINOGRAD};
static const char *IMPL_NAMES[] = {"ref", "auto", "direct", "winograd"};

/* Probes whether the kernels provide impl (some are CPU-dependent). */
static int impl_available(dn_conv_impl impl) {
    dn_conv_desc d = {1, 1, 3, 3, 1, 1};
    float w[9] = {0};
    dn_conv_op *op = dn_conv_op_new(&d, w, NULL, impl);
    dn_conv_op_free(op);
    return op != NULL;
}

TEST(engine_matches_naive_forward) {
    const int *archs[2] = {L18, L34};
    const int sizes[2][2] = {{37, 45}, {32, 32}};
    for (int a = 0; a < 2; a++) {
        dn_tensors ts;
        make_tensors(&ts, archs[a], WN, 6, 1);
        dn_model *m = NULL;
        CHECK(dn_model_from_tensors(&ts, 0, &m) == DN_OK);
        dn_tensors_free(&ts);
        if (!m) return;
        int n = 3, h = sizes[a][0], w = sizes[a][1];
        float *x = rand_array((int64_t)n * 3 * h * w, 1, 0, 0);
        float ref[3 * 6], feat_ref[3 * 16], got[3 * 6], feat[3 * 16];
        naive_forward(m, x, n, h, w, feat_ref, ref);
        double scale = max_abs(ref, 18);
        for (size_t ii = 0; ii < sizeof IMPLS / sizeof IMPLS[0]; ii++) {
            if (!impl_available(IMPLS[ii])) { printf("  (conv impl %s not available)\n", IMPL_NAMES[ii]); continue; }
            for (int threads = 1; threads <= 2; threads++) {
                dn_session_opts o = {4, threads, h, w, (int)IMPLS[ii]};
                dn_session *s = NULL;
                CHECK(dn_session_new_ex(m, &o, &s) == DN_OK);
                if (!s) continue;
                CHECK(dn_session_forward(s, x, n, got) == DN_OK);
                double d = max_diff(got, ref, 18);
                CHECK_MSG(d <= 1e-4 * scale, "%s x%d: max|dlogit| %g, max|logit| %g", IMPL_NAMES[ii], threads, d, scale);
                for (int i = 0; i < n; i++) CHECK(argmax(got + i * 6, 6) == argmax(ref + i * 6, 6));
                CHECK(dn_session_features(s, x, n, feat) == DN_OK);
                CHECK(max_diff(feat, feat_ref, 48) <= 1e-4 * max_abs(feat_ref, 48));
                /* batch of 1 gives the same logits as row 0 of the batch */
                float one[6];
                CHECK(dn_session_forward(s, x + 3 * h * w, 1, one) == DN_OK);
                CHECK(max_diff(one, got + 6, 6) <= 1e-5 * scale);
                dn_session_free(s);
            }
        }
        free(x);
        dn_model_free(m);
    }
}

TEST(engine_stages_and_classify) {
    dn_tensors ts;
    make_tensors(&ts, L18, WN, 4, 1);
    dn_model *m = NULL;
    CHECK(dn_model_from_tensors(&ts, 0, &m) == DN_OK);
    dn_tensors_free(&ts);
    if (!m) return;
    dn_session_opts o = {2, 2, 40, 40, DN_CONV_REF};
    dn_session *s = NULL;
    CHECK(dn_session_new_ex(m, &o, &s) == DN_OK);
    if (!s) { dn_model_free(m); return; }
    int c, h, w;
    const int expect[6][3] = {{4, 10, 10}, {4, 10, 10}, {8, 5, 5}, {12, 3, 3}, {16, 2, 2}, {16, 1, 1}};
    for (int st = 0; st <= 5; st++) {
        dn_session_stage_shape(s, st, &c, &h, &w);
        CHECK_MSG(c == expect[st][0] && h == expect[st][1] && w == expect[st][2], "stage %d: %dx%dx%d", st, c, h, w);
    }
    float *x = rand_array(2 * 3 * 40 * 40, 1, 0, 0);
    float a4[2 * 16 * 4], feat[32], feat2[32], logits[8], probs[8];
    CHECK(dn_session_forward_to(s, x, 2, 4, a4) == DN_OK);
    CHECK(dn_session_features(s, x, 2, feat) == DN_OK);
    for (int i = 0; i < 32; i++) CHECK_NEAR(feat[i], (a4[i * 4] + a4[i * 4 + 1] + a4[i * 4 + 2] + a4[i * 4 + 3]) / 4, 1e-5);
    CHECK(dn_session_forward_to(s, x, 2, 5, feat2) == DN_OK && !memcmp(feat, feat2, sizeof feat));
    CHECK(dn_session_forward(s, x, 2, logits) == DN_OK);
    dn_prediction pr[2];
    m->temperature = 2.0f;
    m->threshold = 1.1f; /* every prediction uncertain */
    CHECK(dn_session_classify_batch(s, x, 2, pr, probs) == DN_OK);
    for (int i = 0; i < 2; i++) {
        CHECK(pr[i].cls == argmax(logits + 4 * i, 4) && pr[i].uncertain == 1);
        double z = 0, e[4], mx = logits[4 * i + pr[i].cls] / 2.0;
        for (int k = 0; k < 4; k++) z += (e[k] = exp(logits[4 * i + k] / 2.0 - mx));
        for (int k = 0; k < 4; k++) CHECK_NEAR(probs[4 * i + k], e[k] / z, 1e-6);
        CHECK_NEAR(pr[i].confidence, 1.0 / z, 1e-6);
    }
    /* argument errors */
    CHECK(dn_session_forward(s, x, 3, logits) == DN_ERR_ARG && strstr(dn_last_error(), "batch of 3"));
    CHECK(dn_session_forward(s, x, 0, logits) == DN_ERR_ARG);
    CHECK(dn_session_forward_to(s, x, 1, 6, a4) == DN_ERR_ARG);
    x[5] = NAN;
    CHECK(dn_session_forward(s, x, 1, logits) == DN_ERR_NUMERIC);
    free(x);
    dn_session_free(s);
    dn_session_opts huge = {1, 1, 9000, 9000, DN_CONV_REF};
    CHECK(dn_session_new_ex(m, &huge, &s) == DN_ERR_ARG && s == NULL && strstr(dn_last_error(), "9000x9000"));
    dn_session_opts bad = {0, 1, 0, 0, -1};
    CHECK(dn_session_new_ex(m, &bad, &s) == DN_ERR_ARG);
    dn_model_free(m);
}

/* Blocked activations (NCHW16c from the stem to the pool, AVX-512 fp32
 * direct): logits, features and every stage output equal the NCHW path's
 * (DN_BLOCKED=0) and the naive forward's, on an odd input size, 1 and 2
 * threads; NaN input is still reported. */
TEST(engine_blocked_matches_nchw) {
    static const int WB[4] = {16, 32, 48, 64};
    dn_tensors ts;
    make_tensors(&ts, L18, WB, 7, 1);
    dn_model *m = NULL;
    CHECK(dn_model_from_tensors(&ts, 0, &m) == DN_OK);
    dn_tensors_free(&ts);
    if (!m) return;
    const int n = 3, h = 45, w = 37;
    float *x = rand_array((int64_t)n * 3 * h * w, 1, 0, 0);
    float ref[3 * 7], feat_ref[3 * 64];
    naive_forward(m, x, n, h, w, feat_ref, ref);
    int blocked_seen = 0;
    for (int threads = 1; threads <= 2; threads++) {
        dn_session_opts o = {n, threads, h, w, DN_CONV_AUTO};
        dn_session *sb = NULL, *sn = NULL;
        CHECK(dn_session_new_ex(m, &o, &sb) == DN_OK);
        setenv("DN_BLOCKED", "0", 1);
        CHECK(dn_session_new_ex(m, &o, &sn) == DN_OK);
        unsetenv("DN_BLOCKED");
        if (!sb || !sn) { dn_session_free(sb); dn_session_free(sn); break; }
        CHECK(!strstr(dn_session_conv_impl(sn), "+blocked"));
        blocked_seen += strstr(dn_session_conv_impl(sb), "+blocked") != NULL;
        float lb[3 * 7], ln[3 * 7];
        CHECK(dn_session_forward(sb, x, n, lb) == DN_OK && dn_session_forward(sn, x, n, ln) == DN_OK);
        double scale = max_abs(ref, n * 7);
        CHECK_MSG(max_diff(lb, ref, n * 7) <= 1e-5 * scale, "blocked vs naive: %g", max_diff(lb, ref, n * 7));
        CHECK(max_diff(lb, ln, n * 7) <= 1e-5 * scale);
        for (int st = 0; st <= 5; st++) {
            int c, sh, sw;
            dn_session_stage_shape(sb, st, &c, &sh, &sw);
            size_t cnt = (size_t)n * c * sh * sw;
            float *ab = malloc(cnt * 4), *an = malloc(cnt * 4);
            CHECK(dn_session_forward_to(sb, x, n, st, ab) == DN_OK && dn_session_forward_to(sn, x, n, st, an) == DN_OK);
            double d = max_diff(ab, an, (int)cnt), sc = max_abs(an, (int)cnt);
            CHECK_MSG(d <= 1e-5 * (sc > 1 ? sc : 1), "stage %d: max diff %g (max %g)", st, d, sc);
            free(ab); free(an);
        }
        float keep = x[7];
        x[7] = NAN;
        CHECK(dn_session_forward(sb, x, 1, lb) == DN_ERR_NUMERIC);
        x[7] = keep;
        dn_session_free(sb);
        dn_session_free(sn);
    }
    if (dn_kernels_isa() >= DN_ISA_AVX512) CHECK(blocked_seen == 2);
    else printf("  (no AVX-512: blocked activations not used, NCHW path compared with itself)\n");
    free(x);
    dn_model_free(m);
}

/* ------------------------------------------------------------ shared plans */

typedef struct {
    dn_session *s;
    const float *x;
    int n, reps, nc;
    float *out;           /* reps x n x nc */
    dn_status st;
} fwd_arg;

static void *forward_thread(void *a) {
    fwd_arg *f = a;
    for (int r = 0; r < f->reps && !f->st; r++)
        f->st = dn_session_forward(f->s, f->x, f->n, f->out + (size_t)r * f->n * f->nc);
    return NULL;
}

/* Channel widths in whole blocks of 16 so that on AVX-512 the NCHW16c direct
 * kernels run (the stem and the 1x1 downsamples take the im2col GEMM path). */
static const int W16[4] = {16, 16, 32, 32};

TEST(shared_plan_sessions) {
    dn_tensors ts;
    make_tensors(&ts, L18, W16, 5, 1);
    dn_model *m = NULL;
    CHECK(dn_model_from_tensors(&ts, 0, &m) == DN_OK);
    dn_tensors_free(&ts);
    if (!m) return;
    const int n = 3, h = 36, w = 36, nc = 5, reps = 3;
    float *x1 = rand_array((int64_t)n * 3 * h * w, 1, 0, 0), *x2 = rand_array((int64_t)n * 3 * h * w, 1, 0, 0);
    static const dn_conv_impl impls[] = {DN_CONV_REF, DN_CONV_DIRECT, DN_CONV_WINOGRAD, DN_CONV_BF16,
                                         DN_CONV_WINOGRAD_BF16};
    static const char *names[] = {"ref", "direct", "winograd", "bf16", "winograd+bf16"};
    int prev_tiles = dn_wino_min_tiles;
    dn_wino_min_tiles = 1; /* Winograd transforms even on these small maps */
    for (size_t ii = 0; ii < sizeof impls / sizeof impls[0]; ii++) {
        if (!impl_available(impls[ii])) { printf("  (conv impl %s not available)\n", names[ii]); continue; }
        dn_session *priv = NULL, *base = NULL, *sh = NULL, *sh2 = NULL;
        float want1[3 * 5], want2[3 * 5], got[3 * 5];
        /* the reference: a private session, sequential runs */
        dn_session_opts o = {n, 1, h, w, (int)impls[ii]};
        CHECK(dn_session_new_ex(m, &o, &priv) == DN_OK);
        if (!priv) continue;
        CHECK(dn_session_forward(priv, x1, n, want1) == DN_OK);
        CHECK(dn_session_forward(priv, x2, n, want2) == DN_OK);
        CHECK(dn_session_plan_refs(priv) == 1);
        /* base with another max batch; shared sessions of their own max batch */
        dn_session_opts ob = {1, 1, h, w, (int)impls[ii]};
        CHECK(dn_session_new_ex(m, &ob, &base) == DN_OK);
        CHECK(base && dn_session_new_shared(base, n, 1, &sh) == DN_OK);
        CHECK(base && dn_session_new_shared(base, 2 * n, 1, &sh2) == DN_OK);
        if (!base || !sh || !sh2) { dn_session_free(priv); dn_session_free(base); dn_session_free(sh); dn_session_free(sh2); continue; }
        CHECK(dn_session_plan(sh) == dn_session_plan(base) && dn_session_plan(sh2) == dn_session_plan(base));
        CHECK(dn_session_plan(priv) != dn_session_plan(base));
        CHECK(dn_session_plan_refs(base) == 3);
        CHECK(!strcmp(dn_session_conv_impl(sh), dn_session_conv_impl(priv)));
        CHECK(dn_session_max_batch(sh) == n && dn_session_max_batch(sh2) == 2 * n && dn_session_max_batch(base) == 1);
        int sh_h = 0, sh_w = 0;
        dn_session_input_size(sh, &sh_h, &sh_w);
        CHECK(sh_h == h && sh_w == w);
        CHECK(dn_session_forward(sh, x1, n, got) == DN_OK);
        CHECK_MSG(!memcmp(got, want1, sizeof got), "%s: shared session logits differ from a private one", names[ii]);
        /* the base cannot take the batch (its own max batch is 1) but runs single images */
        CHECK(dn_session_forward(base, x1, n, got) == DN_ERR_ARG && strstr(dn_last_error(), "batch of 3"));
        /* two threads at once on sessions sharing the plan == the sequential runs */
        float *o1 = malloc(sizeof(float) * reps * n * nc), *o2 = malloc(sizeof(float) * reps * n * nc);
        fwd_arg fa[2] = {{sh, x1, n, reps, nc, o1, DN_OK}, {sh2, x2, n, reps, nc, o2, DN_OK}};
        pthread_t th[2];
        for (int t = 0; t < 2; t++) pthread_create(&th[t], NULL, forward_thread, &fa[t]);
        for (int t = 0; t < 2; t++) pthread_join(th[t], NULL);
        CHECK(fa[0].st == DN_OK && fa[1].st == DN_OK);
        int same = 1;
        for (int r = 0; r < reps; r++) {
            same &= !memcmp(o1 + (size_t)r * n * nc, want1, sizeof want1);
            same &= !memcmp(o2 + (size_t)r * n * nc, want2, sizeof want2);
        }
        CHECK_MSG(same, "%s: concurrent forwards on a shared plan differ from sequential ones", names[ii]);
        free(o1);
        free(o2);
        /* the base goes first: the plan stays for the others (ASan checks the reads) */
        dn_session_free(base);
        CHECK(dn_session_plan_refs(sh) == 2);
        CHECK(dn_session_forward(sh2, x2, n, got) == DN_OK && !memcmp(got, want2, sizeof got));
        /* a session shared from a shared one joins the same plan */
        dn_session *sh3 = NULL;
        CHECK(dn_session_new_shared(sh2, 1, 2, &sh3) == DN_OK);
        CHECK(dn_session_plan_refs(sh) == 3);
        dn_session_free(sh2);
        dn_session_free(sh);
        CHECK(dn_session_plan_refs(sh3) == 1);
        CHECK(sh3 && dn_session_forward(sh3, x1, 1, got) == DN_OK);
        CHECK(dn_session_forward(priv, x1, 1, want1) == DN_OK);
        CHECK(!memcmp(got, want1, sizeof(float) * nc));
        dn_session_free(sh3);
        dn_session_free(priv);
    }
    dn_wino_min_tiles = prev_tiles;
    /* bad arguments: one-line errors, nothing returned */
    dn_session *base = NULL, *s = (dn_session *)&base;
    CHECK(dn_session_new_shared(NULL, 1, 1, &s) == DN_ERR_ARG && s == NULL && strstr(dn_last_error(), "NULL base"));
    CHECK(!strchr(dn_last_error(), '\n'));
    CHECK(dn_session_new_on_plan(NULL, 1, 1, &s) == DN_ERR_ARG && s == NULL && strstr(dn_last_error(), "NULL plan"));
    dn_session_opts o = {1, 1, 32, 32, DN_CONV_REF};
    CHECK(dn_session_new_ex(m, &o, &base) == DN_OK);
    if (base) {
        s = base;
        CHECK(dn_session_new_shared(base, 0, 1, &s) == DN_ERR_ARG && s == NULL &&
              strstr(dn_last_error(), "max batch 0 out of range"));
        CHECK(dn_session_new_shared(base, 70000, 1, &s) == DN_ERR_ARG && s == NULL);
        CHECK(dn_session_new_shared(base, 1, 1, NULL) == DN_ERR_ARG && strstr(dn_last_error(), "NULL output"));
        CHECK(dn_session_plan_refs(base) == 1); /* failures took no reference */
        dn_session_free(base);
    }
    free(x1);
    free(x2);
    dn_model_free(m);
}

TEST(conv_impl_env_var) {
    dn_conv_impl im;
    CHECK(dn_conv_impl_parse("winograd", &im) == DN_OK && im == DN_CONV_WINOGRAD);
    CHECK(dn_conv_impl_parse("fast", &im) == DN_ERR_ARG && strstr(dn_last_error(), "'fast'"));
    dn_tensors ts;
    make_tensors(&ts, L18, WN, 2, 1);
    dn_model *m = NULL;
    CHECK(dn_model_from_tensors(&ts, 0, &m) == DN_OK);
    dn_tensors_free(&ts);
    if (!m) return;
    dn_session *s = NULL;
    dn_session_opts o = {1, 1, 32, 32, -1};
    setenv("DN_CONV_IMPL", "bogus", 1);
    CHECK(dn_session_new_ex(m, &o, &s) == DN_ERR_ARG && strstr(dn_last_error(), "DN_CONV_IMPL"));
    setenv("DN_CONV_IMPL", "ref", 1);
    CHECK(dn_session_new_ex(m, &o, &s) == DN_OK);
    if (s) CHECK(!strcmp(dn_session_conv_impl(s), "ref"));
    dn_session_free(s);
    unsetenv("DN_CONV_IMPL");
    dn_model_free(m);
}

/* ------------------------------------------------------------ PyTorch parity */

/* Reads a raw little-endian float32 file of exactly count floats (NULL otherwise). */
static float *read_f32(const char *path, size_t count) {
    uint8_t *d = NULL;
    size_t len = 0;
    if (dn_read_file(path, 1u << 30, &d, &len) != DN_OK) { printf("  %s\n", dn_last_error()); return NULL; }
    if (len != count * sizeof(float)) { printf("  %s: %zu bytes, expected %zu\n", path, len, count * 4); free(d); return NULL; }
    return (float *)d;
}

static dn_model *load_pth(const char *path) {
    dn_tensors ts = {0};
    dn_model *m = NULL;
    if (dn_pth_load(path, &ts) != DN_OK || dn_model_from_tensors(&ts, 0, &m) != DN_OK)
        printf("  %s: %s\n", path, dn_last_error());
    dn_tensors_free(&ts);
    return m;
}

typedef struct parity { double maxd, maxl; int top1_ok, rows; } parity;

/* Runs x (n x 3 x h x w) through m and compares with the expected logits. */
static int check_parity(dn_model *m, const float *x, int n, int h, int w, const float *want, dn_conv_impl impl,
                        int threads, parity *pr) {
    int c = m->num_classes;
    dn_session_opts o = {n, threads, h, w, (int)impl};
    dn_session *s = NULL;
    float *got = malloc((size_t)n * c * sizeof(float));
    int ok = dn_session_new_ex(m, &o, &s) == DN_OK && dn_session_forward(s, x, n, got) == DN_OK;
    if (!ok) printf("  forward: %s\n", dn_last_error());
    memset(pr, 0, sizeof *pr);
    if (ok) {
        pr->maxd = max_diff(got, want, (size_t)n * c);
        pr->maxl = max_abs(want, (size_t)n * c);
        pr->rows = n;
        for (int i = 0; i < n; i++) pr->top1_ok += argmax(got + (size_t)i * c, c) == argmax(want + (size_t)i * c, c);
    }
    dn_session_free(s);
    free(got);
    return ok;
}

TEST(fixture_parity_with_pytorch) {
    const char *dir = "tests/fixtures/resnet";
    char path[512];
    snprintf(path, sizeof path, "%s/fixtures.json", dir);
    uint8_t *txt = NULL;
    size_t len = 0;
    CHECK(dn_read_file(path, 1 << 20, &txt, &len) == DN_OK);
    if (!txt) return;
    char err[128];
    dn_json *j = dn_json_parse((const char *)txt, len, err, sizeof err);
    free(txt);
    CHECK_MSG(j != NULL, "%s: %s", path, err);
    if (!j) return;
    CHECK(dn_json_len(j) == 2);
    for (size_t f = 0; f < dn_json_len(j); f++) {
        const dn_json *e = dn_json_at(j, f);
        const char *name = dn_json_str(dn_json_get(e, "name"), "?");
        const dn_json *in = dn_json_get(e, "input"), *lg = dn_json_get(e, "logits");
        int n = (int)dn_json_num(dn_json_at(in, 0), 0), h = (int)dn_json_num(dn_json_at(in, 2), 0);
        int w = (int)dn_json_num(dn_json_at(in, 3), 0), c = (int)dn_json_num(dn_json_at(lg, 1), 0);
        snprintf(path, sizeof path, "%s/%s.pth", dir, name);
        dn_model *m = load_pth(path);
        CHECK_MSG(m != NULL, "%s", name);
        if (!m) continue;
        CHECK(m->num_classes == c);
        for (int k = 0; k < 4; k++) CHECK(m->layers[k] == (int)dn_json_num(dn_json_at(dn_json_get(e, "layers"), (size_t)k), 0));
        snprintf(path, sizeof path, "%s/%s_input.f32", dir, name);
        float *x = read_f32(path, (size_t)n * 3 * h * w);
        snprintf(path, sizeof path, "%s/%s_logits.f32", dir, name);
        float *want = read_f32(path, (size_t)n * c);
        CHECK(x && want);
        for (size_t ii = 0; x && want && ii < sizeof IMPLS / sizeof IMPLS[0]; ii++) {
            if (!impl_available(IMPLS[ii])) continue;
            for (int threads = 1; threads <= 2; threads++) {
                parity pr;
                CHECK(check_parity(m, x, n, h, w, want, IMPLS[ii], threads, &pr));
                printf("  %s %s x%d: max|dlogit| %.3g, max|logit| %.3g, rel %.3g, top-1 %d/%d\n", name,
                       IMPL_NAMES[ii], threads, pr.maxd, pr.maxl, pr.maxd / pr.maxl, pr.top1_ok, pr.rows);
                CHECK(pr.maxd <= 1e-4 * pr.maxl && pr.top1_ok == n);
            }
        }
        free(x); free(want);
        dn_model_free(m);
    }
    dn_json_free(j);
}

static int have_torch(void) {
    static int cached = -1;
    if (cached < 0) cached = system("/usr/bin/python3 -c 'import torch, torchvision' >/dev/null 2>&1") == 0;
    return cached;
}

static int read_shape(const char *dir, int *n, int *h, int *w, int *c) {
    char p[512];
    snprintf(p, sizeof p, "%s/shape.txt", dir);
    FILE *f = fopen(p, "r");
    int ch, ok = f && fscanf(f, "%d %d %d %d %d", n, &ch, h, w, c) == 5 && ch == 3;
    if (f) fclose(f);
    return ok;
}

TEST(full_width_resnet18_parity) {
    if (!have_torch()) SKIP("/usr/bin/python3 has no torch/torchvision: full-width ResNet-18 parity not checked");
    char dir[] = "/tmp/dn_test_full_XXXXXX", cmd[1024], p[600];
    if (!mkdtemp(dir)) SKIP("cannot create a temp dir");
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 tools/check_full_resnet.py random %s 2", dir);
    CHECK(system(cmd) == 0);
    int n, h, w, c;
    CHECK(read_shape(dir, &n, &h, &w, &c));
    snprintf(p, sizeof p, "%s/model.pth", dir);
    dn_model *m = load_pth(p);
    CHECK(m && !strcmp(m->arch, "resnet18") && m->num_classes == c);
    snprintf(p, sizeof p, "%s/input.f32", dir);
    float *x = read_f32(p, (size_t)n * 3 * h * w);
    snprintf(p, sizeof p, "%s/logits.f32", dir);
    float *want = read_f32(p, (size_t)n * c);
    if (m && x && want) {
        parity pr;
        CHECK(check_parity(m, x, n, h, w, want, DN_CONV_AUTO, 2, &pr));
        printf("  full resnet18 (random, BN stats) auto x2: max|dlogit| %.3g, max|logit| %.3g, rel %.3g, top-1 %d/%d\n",
               pr.maxd, pr.maxl, pr.maxd / pr.maxl, pr.top1_ok, pr.rows);
        CHECK(pr.maxd <= 1e-4 * pr.maxl && pr.top1_ok == n);
    }
    free(x); free(want);
    dn_model_free(m);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
}

/* First `count` image files (sorted names) of a folder, appended to paths. */
static int first_images(const char *dir, int count, char paths[][1400], int have) {
    DIR *d = opendir(dir);
    if (!d) return have;
    char names[64][256];
    int k = 0;
    struct dirent *e;
    while ((e = readdir(d)) && k < 64)
        if (e->d_name[0] != '.' && strrchr(e->d_name, '.') && strcmp(strrchr(e->d_name, '.'), ".txt") &&
            strcmp(strrchr(e->d_name, '.'), ".csv"))
            snprintf(names[k++], sizeof names[0], "%s", e->d_name);
    closedir(d);
    qsort(names, (size_t)k, sizeof names[0], (int (*)(const void *, const void *))strcmp);
    for (int i = 0; i < k && i < count; i++) snprintf(paths[have++], 1400, "%.1100s/%.255s", dir, names[i]);
    return have;
}

TEST(imagenet_weights_real_images_end_to_end) {
    const char *sh = h_shared();
    if (!sh) SKIP("../shared (or $DN_SHARED) absent: real-weights parity not checked");
    if (!have_torch()) SKIP("/usr/bin/python3 has no torch/torchvision: real-weights parity not checked");
    char wpath[1100];
    snprintf(wpath, sizeof wpath, "%.1000s/weights/resnet18-imagenet.pth", sh);
    if (access(wpath, R_OK) != 0) SKIP("%s absent", wpath);
    char imgs[8][1400], sub[1100];
    int k = 0;
    snprintf(sub, sizeof sub, "%.1000s/datasets/NEU-CLS/Cr", sh);
    k = first_images(sub, 2, imgs, k);
    snprintf(sub, sizeof sub, "%.1000s/datasets/NEU-CLS-64/cr", sh);
    k = first_images(sub, 2, imgs, k);
    snprintf(sub, sizeof sub, "%.1000s/datasets/DeepPCB-crops/test/open", sh);
    k = first_images(sub, 2, imgs, k);
    if (k == 0) SKIP("no images found under %s/datasets", sh);
    char dir[] = "/tmp/dn_test_real_XXXXXX", cmd[16384];
    if (!mkdtemp(dir)) SKIP("cannot create a temp dir");
    int o = snprintf(cmd, sizeof cmd, "/usr/bin/python3 tools/check_full_resnet.py images %s '%s'", dir, wpath);
    for (int i = 0; i < k; i++) o += snprintf(cmd + o, sizeof cmd - (size_t)o, " '%s'", imgs[i]);
    CHECK(system(cmd) == 0);
    int n, h, w, c;
    CHECK(read_shape(dir, &n, &h, &w, &c) && n == k);
    dn_model *m = load_pth(wpath);
    char p[600];
    snprintf(p, sizeof p, "%s/input.f32", dir);
    float *x = read_f32(p, (size_t)k * 3 * 224 * 224);
    snprintf(p, sizeof p, "%s/logits.f32", dir);
    float *want = read_f32(p, (size_t)k * 1000);
    if (m && x && want) {
        /* (a) torchvision-preprocessed tensors: the network alone */
        parity pr;
        CHECK(check_parity(m, x, k, 224, 224, want, DN_CONV_AUTO, 2, &pr));
        printf("  imagenet resnet18, torchvision input: max|dlogit| %.3g, max|logit| %.3g, rel %.3g, top-1 %d/%d\n",
               pr.maxd, pr.maxl, pr.maxd / pr.maxl, pr.top1_ok, pr.rows);
        CHECK(pr.maxd <= 1e-4 * pr.maxl && pr.top1_ok == k);
        /* (b) end to end: our decode + preprocess + forward */
        float *mine = malloc((size_t)k * 3 * 224 * 224 * sizeof(float));
        int ok = 1;
        double pix = 0;
        for (int i = 0; i < k && ok; i++) {
            dn_image img = {0};
            ok = dn_image_load(imgs[i], &img) == DN_OK &&
                 dn_preprocess(&img, &m->pp, mine + (size_t)i * 3 * 224 * 224) == DN_OK;
            dn_image_free(&img);
        }
        CHECK_MSG(ok, "%s", dn_last_error());
        if (ok) {
            pix = max_diff(mine, x, (size_t)k * 3 * 224 * 224);
            CHECK(check_parity(m, mine, k, 224, 224, want, DN_CONV_AUTO, 2, &pr));
            printf("  imagenet resnet18, end to end (%d images): max|dinput| %.3g, max|dlogit| %.3g, rel %.3g, top-1 %d/%d\n",
                   k, pix, pr.maxd, pr.maxd / pr.maxl, pr.top1_ok, pr.rows);
            CHECK(pr.top1_ok == k);
            CHECK(pr.maxd <= 2e-2 * pr.maxl);
        }
        free(mine);
    }
    free(x); free(want);
    dn_model_free(m);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
}

/* ------------------------------------------------------------ public API */

static void synth_image(dn_image *img, int w, int h, int seed) {
    memset(img, 0, sizeof *img); /* packed RGB8, owned (stride/format/borrowed 0) */
    img->w = w; img->h = h;
    img->data = malloc((size_t)w * h * 3);
    for (int i = 0; i < w * h * 3; i++) img->data[i] = (uint8_t)((i * 37 + seed * 101 + (i / (w * 3)) * 13) & 255);
}

typedef struct { const dn_model *m; const dn_image *img; dn_prediction pred; float probs[5]; dn_status st; } cls_arg;
static void *classify_thread(void *a) {
    cls_arg *c = a;
    dn_session *s = NULL;
    c->st = dn_session_new(c->m, 1, 1, &s);
    for (int rep = 0; !c->st && rep < 3; rep++) c->st = dn_session_classify(s, c->img, &c->pred, c->probs);
    dn_session_free(s);
    return NULL;
}

TEST(public_load_and_classify) {
    dn_model *m = NULL;
    CHECK(dn_model_load("tests/fixtures/resnet/r18n.pth", &m) == DN_OK);
    if (!m) { printf("  %s\n", dn_last_error()); return; }
    CHECK(dn_model_num_classes(m) == 5 && dn_model_preproc(m)->crop == 224 && dn_model_preproc(m)->resize == 256);
    dn_image img;
    synth_image(&img, 71, 50, 1);
    dn_session *s = NULL;
    CHECK(dn_session_new(m, 2, 2, &s) == DN_OK);
    if (s) {
        dn_prediction pr;
        float probs[5], logits[5], *x = malloc(3 * 224 * 224 * sizeof(float));
        CHECK(dn_session_classify(s, &img, &pr, probs) == DN_OK);
        CHECK(dn_session_classify(s, &img, &pr, NULL) == DN_OK);
        CHECK(dn_preprocess(&img, dn_model_preproc(m), x) == DN_OK);
        CHECK(dn_session_forward(s, x, 1, logits) == DN_OK);
        dn_softmax_t(logits, 1, 5, 1.0f, logits);
        CHECK(pr.cls == argmax(logits, 5) && pr.uncertain == 0);
        for (int k = 0; k < 5; k++) CHECK_NEAR(probs[k], logits[k], 1e-6);
        CHECK_NEAR(pr.confidence, logits[pr.cls], 1e-6);
        free(x);
        CHECK(dn_session_classify(s, NULL, &pr, NULL) == DN_ERR_ARG);
        dn_session_free(s);
        /* concurrent sessions over the same (immutable) model agree */
        pthread_t th[2];
        cls_arg ca[2] = {{m, &img, {0}, {0}, 0}, {m, &img, {0}, {0}, 0}};
        for (int i = 0; i < 2; i++) pthread_create(&th[i], NULL, classify_thread, &ca[i]);
        for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
        CHECK(ca[0].st == DN_OK && ca[1].st == DN_OK);
        CHECK(ca[0].pred.cls == pr.cls && !memcmp(ca[0].probs, ca[1].probs, sizeof probs));
        CHECK_NEAR(ca[0].probs[pr.cls], pr.confidence, 1e-6);
    }
    /* a session planned for another input size cannot classify images */
    dn_session_opts o = {1, 1, 64, 64, -1};
    CHECK(dn_session_new_ex(m, &o, &s) == DN_OK);
    if (s) {
        dn_prediction pr;
        CHECK(dn_session_classify(s, &img, &pr, NULL) == DN_ERR_ARG && strstr(dn_last_error(), "64x64"));
        dn_session_free(s);
    }
    /* a backbone-only model cannot produce logits */
    dn_tensors ts;
    make_tensors(&ts, L18, WN, 0, 1);
    dn_model *bb = NULL;
    CHECK(dn_model_from_tensors(&ts, 0, &bb) == DN_OK);
    dn_tensors_free(&ts);
    if (bb && dn_session_new(bb, 1, 1, &s) == DN_OK) {
        dn_prediction pr;
        float feat[16];
        CHECK(dn_session_classify(s, &img, &pr, NULL) == DN_ERR_ARG && strstr(dn_last_error(), "no classification head"));
        float *x = calloc(3 * 224 * 224, sizeof(float));
        CHECK(dn_session_features(s, x, 1, feat) == DN_OK);
        free(x);
        dn_session_free(s);
    }
    dn_model_free(bb);
    dn_image_free(&img);
    dn_model_free(m);
}

/* Binding errors surface through dn_model_load naming both the file and the key. */
TEST(load_file_binding_errors_named) {
    char dir[] = "/tmp/dn_test_bind_XXXXXX", path[256];
    if (!mkdtemp(dir)) SKIP("cannot create a temp dir");
    static const struct { int what; const char *key, *needle; } cases[] = {
        {0, "layer3.1.bn2.running_mean", "missing key 'layer3.1.bn2.running_mean'"},
        {1, "layer2.0.extra.weight", "unexpected key 'layer2.0.extra.weight'"},
        {2, "layer4.0.downsample.0.weight", "layer4.0.downsample.0.weight: shape [16,8,1,1] does not match expected [16,12,1,1]"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        dn_tensors ts;
        make_tensors(&ts, L18, WN, 5, 1);
        if (cases[i].what == 0) drop_tensor(&ts, cases[i].key);
        if (cases[i].what == 1) { int64_t sh[1] = {3}; dn_tensors_add(&ts, cases[i].key, 1, sh, rand_array(3, 1, 0, 0)); }
        if (cases[i].what == 2) { /* the [16,12,1,1] shortcut replaced by a [16,8,1,1] tensor */
            drop_tensor(&ts, cases[i].key);
            int64_t sh[4] = {16, 8, 1, 1};
            dn_tensors_add(&ts, cases[i].key, 4, sh, rand_array(16 * 8, 1, 0, 0));
        }
        snprintf(path, sizeof path, "%s/bad%zu.safetensors", dir, i);
        CHECK(dn_safetensors_save(path, &ts, NULL) == DN_OK);
        dn_tensors_free(&ts);
        dn_model *m = NULL;
        dn_clear_error();
        CHECK_MSG(dn_model_load(path, &m) == DN_ERR_SHAPE, "case %zu", i);
        CHECK_MSG(strstr(dn_last_error(), path) && strstr(dn_last_error(), cases[i].needle), "error: %s", dn_last_error());
        CHECK(m == NULL);
        dn_model_free(m);
        unlink(path);
    }
    rmdir(dir);
}

int main(void) {
    dn_rng_seed(&g_rng, 12345);
    RUN(bind_narrow_resnet18);
    RUN(bind_full_resnet18_and_34_arch);
    RUN(bind_missing_key_named);
    RUN(bind_unexpected_key_named);
    RUN(bind_mismatched_shape_named);
    RUN(bind_bad_values_named);
    RUN(bind_skip_fc_and_backbone);
    RUN(bind_without_num_batches_tracked);
    RUN(roundtrip_foreach_order_clone);
    RUN(new_head_pytorch_init);
    RUN(engine_matches_naive_forward);
    RUN(engine_stages_and_classify);
    RUN(engine_blocked_matches_nchw);
    RUN(shared_plan_sessions);
    RUN(conv_impl_env_var);
    RUN(public_load_and_classify);
    RUN(load_file_binding_errors_named);
    RUN(fixture_parity_with_pytorch);
    RUN(full_width_resnet18_parity);
    RUN(imagenet_weights_real_images_end_to_end);
    return REPORT();
}
