/* The network's layer list (src/nn/arch.h): torchvision names, order, and the conv/BN
 * parameters behind each name, checked against the tensors of the committed narrow
 * ResNet-18 fixture (the names torchvision itself wrote). */
#include "core/core.h"
#include "nn/arch.h"
#include "nn/model.h"
#include "harness.h"

static const char *FIX = "tests/fixtures/resnet/r18n.pth";

TEST(names) {
    char c[DN_ARCH_NAME_MAX], b[DN_ARCH_NAME_MAX];
    dn_arch_names(-1, -1, DN_ARCH_STEM, c, b, sizeof c);
    CHECK(!strcmp(c, "conv1") && !strcmp(b, "bn1"));
    dn_arch_names(0, 1, DN_ARCH_CONV1, c, b, sizeof c);
    CHECK(!strcmp(c, "layer1.1.conv1") && !strcmp(b, "layer1.1.bn1"));
    dn_arch_names(3, 1, DN_ARCH_CONV2, c, b, sizeof c);
    CHECK(!strcmp(c, "layer4.1.conv2") && !strcmp(b, "layer4.1.bn2"));
    dn_arch_names(1, 0, DN_ARCH_DOWN, c, b, sizeof c);
    CHECK(!strcmp(c, "layer2.0.downsample.0") && !strcmp(b, "layer2.0.downsample.1"));
    dn_arch_names(2, 5, DN_ARCH_BLOCK, c, b, sizeof c);
    CHECK(!strcmp(c, "layer3.5") && !strcmp(b, ""));
    dn_arch_names(1, 0, DN_ARCH_CONV1, c, NULL, sizeof c); /* bn not wanted */
    CHECK(!strcmp(c, "layer2.0.conv1"));
    char tiny[8];
    dn_arch_names(1, 0, DN_ARCH_DOWN, tiny, NULL, sizeof tiny); /* truncated, terminated */
    CHECK(strlen(tiny) == 7);
}

typedef struct { char names[64][DN_ARCH_NAME_MAX + 16]; int n; } conv_names;
static void collect_conv_weights(void *ctx, const char *name, float *data, int64_t numel, int is_buffer) {
    conv_names *cn = ctx;
    size_t l = strlen(name);
    if (is_buffer || l < 7 || strcmp(name + l - 7, ".weight")) return;
    if (!strstr(name, "conv") && !strstr(name, "downsample.0")) return;
    if (cn->n < 64) snprintf(cn->names[cn->n++], sizeof cn->names[0], "%.*s", (int)(l - 7), name);
}

TEST(list_matches_the_weight_file) {
    dn_model *m = NULL;
    CHECK_MSG(!dn_model_load(FIX, &m), "%s", dn_last_error());
    if (!m) return;
    int n = dn_arch_count(m);
    CHECK(n == 20); /* stem + 16 block convs + 3 downsample shortcuts */
    dn_tensors ts = {0};
    CHECK(!dn_model_to_tensors(m, &ts));
    conv_names order = {0};
    dn_model_foreach(m, collect_conv_weights, &order);
    CHECK(order.n == n); /* the list is the state_dict's order of conv weights */
    dn_arch_conv l;
    int i = 0;
    for (; !dn_arch_at(m, i, &l); i++) {
        CHECK(l.index == i);
        if (i < order.n) CHECK_MSG(!strcmp(order.names[i], l.conv), "%d: %s vs %s", i, order.names[i], l.conv);
        char key[96];
        snprintf(key, sizeof key, "%s.weight", l.conv);
        dn_tensor *w = dn_tensors_find(&ts, key);
        CHECK_MSG(w != NULL, "%s missing", key);
        if (w) {
            CHECK(w->ndim == 4 && w->shape[0] == l.conv_p->cout && w->shape[1] == l.conv_p->cin &&
                  w->shape[2] == l.conv_p->k && w->shape[3] == l.conv_p->k);
            CHECK(!memcmp(w->data, l.conv_p->w, (size_t)dn_tensor_numel(w) * sizeof(float)));
        }
        snprintf(key, sizeof key, "%s.running_var", l.bn);
        dn_tensor *v = dn_tensors_find(&ts, key);
        CHECK_MSG(v != NULL, "%s missing", key);
        if (v) CHECK(v->shape[0] == l.bn_p->c && l.bn_p->c == l.conv_p->cout &&
                     !memcmp(v->data, l.bn_p->var, (size_t)l.bn_p->c * sizeof(float)));
        if (i == 0) CHECK(l.kind == DN_ARCH_STEM && l.stage == -1 && l.gblock == -1 && l.conv_p == &m->conv1);
        else CHECK(l.gblock >= 0 && l.gblock < m->nblocks && l.stage >= 0 && l.stage < 4);
    }
    CHECK(i == n);
    CHECK(dn_arch_at(m, -1, &l) == -1 && dn_arch_at(m, n, &l) == -1);
    /* lookup by name */
    CHECK(!dn_arch_find(m, "layer2.0.downsample.0", &l));
    CHECK(l.index == 7 && l.kind == DN_ARCH_DOWN && l.stage == 1 && l.block == 0 && l.gblock == 2 &&
          l.conv_p == &m->blocks[2].down && l.bn_p == &m->blocks[2].down_bn);
    CHECK(!dn_arch_find(m, "layer4.1.conv2", &l) && l.index == 19 && l.bn_p == &m->blocks[7].bn2);
    CHECK(dn_arch_find(m, "layer2.0.conv", &l) == -1);    /* whole names only */
    CHECK(dn_arch_find(m, "layer1.0.downsample.0", &l) == -1); /* layer1.0 has no shortcut conv */
    dn_tensors_free(&ts);
    dn_model_free(m);
}

int main(void) {
    RUN(names);
    RUN(list_matches_the_weight_file);
    return REPORT();
}
