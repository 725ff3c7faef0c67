/* The start model of a training run: torchvision weights with a new head, a
 * defectnet model (head kept when its classes are the data's), or torchvision's
 * random init; and parameter copies between models / tensor lists. */
#include "train/train_run.h"
#include "io/modelfile.h"
#include "nn/arch.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* torchvision ResNet init: conv kaiming_normal_(fan_out, relu), BN weight 1,
 * bias 0, running stats (0, 1). */
static dn_status random_resnet18(uint64_t seed, dn_model **out) {
    static const int widths[4] = {64, 128, 256, 512};
    dn_rng r;
    dn_rng_seed(&r, seed);
    dn_tensors ts = {0};
    dn_status st = DN_OK;
#define ADD(name, nd, shp, data) do { if ((st = dn_tensors_add(&ts, name, nd, shp, data))) goto fail; } while (0)
    char nm[96];
    int cin = 3;
    for (int s = -1; s < 4; s++) {
        int nb = s < 0 ? 1 : 2;
        for (int b = 0; b < nb; b++) {
            int nconv = s < 0 ? 1 : (b == 0 && s > 0 ? 3 : 2);
            int w = s < 0 ? 64 : widths[s];
            for (int c = 0; c < nconv; c++) {
                int k = s < 0 ? 7 : c == 2 ? 1 : 3;
                int ci = s < 0 ? 3 : (c == 1 ? w : (b == 0 ? cin : w));
                char cn[64], bn[64];
                dn_arch_names(s, b, s < 0 ? DN_ARCH_STEM : c == 0 ? DN_ARCH_CONV1 : c == 1 ? DN_ARCH_CONV2 : DN_ARCH_DOWN,
                               cn, bn, sizeof cn);
                int64_t shp[4] = {w, ci, k, k};
                size_t nel = (size_t)w * ci * k * k;
                float *wd = dn_malloc(nel * sizeof(float));
                if (!wd) { st = DN_ERR_NOMEM; goto fail; }
                float sd = sqrtf(2.0f / (float)(w * k * k));
                for (size_t i = 0; i < nel; i++) wd[i] = sd * dn_rng_normal(&r);
                snprintf(nm, sizeof nm, "%s.weight", cn);
                ADD(nm, 4, shp, wd);
                const char *suf[4] = {"weight", "bias", "running_mean", "running_var"};
                for (int q = 0; q < 4; q++) {
                    float *v = dn_malloc((size_t)w * sizeof(float));
                    if (!v) { st = DN_ERR_NOMEM; goto fail; }
                    for (int i = 0; i < w; i++) v[i] = (q == 0 || q == 3) ? 1.0f : 0.0f;
                    int64_t s1[1] = {w};
                    snprintf(nm, sizeof nm, "%s.%s", bn, suf[q]);
                    ADD(nm, 1, s1, v);
                }
            }
        }
        cin = s < 0 ? 64 : widths[s]; /* the stem feeds layer1 with 64 channels */
    }
#undef ADD
    st = dn_model_from_tensors(&ts, 1, out);
fail:
    dn_tensors_free(&ts);
    return st;
}

int tr_classes_match(const dn_model *m, const dn_dataset *ds) {
    if (m->num_classes != ds->nclasses) return 0;
    for (int i = 0; i < ds->nclasses; i++)
        if (strcmp(m->class_names[i], ds->classes[i])) return 0;
    return 1;
}

static void class_list(const char *const *names, int n, char *buf, size_t cap) {
    size_t len = 0;
    buf[0] = 0;
    for (int i = 0; i < n && len + 8 < cap; i++) {
        int w = snprintf(buf + len, cap - len, "%s%s", i ? "," : "", names[i]);
        if (w < 0 || (size_t)w >= cap - len) { snprintf(buf + cap - 4, 4, "..."); break; }
        len += (size_t)w;
    }
}

dn_status tr_open_weights(run *r) {
    const dn_train_cfg *c = r->cfg;
    dn_status st;
    if (!c->weights || !strcmp(c->weights, "none")) return random_resnet18(c->seed, &r->m);
    uint8_t head[16] = {0};
    FILE *f = fopen(c->weights, "rb");
    if (!f) return dn_fail(DN_ERR_IO, "%s: cannot open weights", c->weights);
    size_t got = fread(head, 1, sizeof head, f);
    fclose(f);
    r->src_is_model = dn_weights_detect(head, got) == DN_WFMT_SAFETENSORS;
    if ((st = dn_model_load_ex(c->weights, !r->src_is_model, &r->m))) return st;
    snprintf(r->src_sha, sizeof r->src_sha, "%s", r->m->sha256);
    return DN_OK;
}

dn_status tr_attach_head(run *r) {
    const dn_train_cfg *c = r->cfg;
    dn_model *m = r->m;
    dn_status st;
    if (r->src_is_model && m->num_classes > 0 && !tr_classes_match(m, r->ds)) {
        if (!c->new_head) {
            char a[512], b[512];
            class_list((const char *const *)m->class_names, m->num_classes, a, sizeof a);
            class_list((const char *const *)r->ds->classes, r->ds->nclasses, b, sizeof b);
            return dn_fail(DN_ERR_ARG,
                           "%s: model classes [%s] do not match the data's classes [%s] (use --new-head to replace the head)",
                           c->weights, a, b);
        }
    }
    /* a defectnet model trained on these classes keeps its head (fine-tuning continues) */
    if (!(r->src_is_model && m->num_classes > 0 && tr_classes_match(m, r->ds)) &&
        (st = dn_model_new_head(m, r->ds->nclasses, (const char *const *)r->ds->classes, c->seed ^ 0x5eed)))
        return st;
    /* training preprocessing: shorter side resized to image_size, centre crop image_size */
    dn_preproc_default(&m->pp);
    m->pp.resize = c->image_size;
    m->pp.crop = c->image_size;
    m->temperature = 1.0f;
    m->threshold = 0.0f;
    return DN_OK;
}

typedef struct copy_ctx { const dn_tensors *ts; const char *prefix; int missing; char name[160]; } copy_ctx;
static void copy_in(void *vctx, const char *name, float *data, int64_t numel, int is_buffer) {
    (void)is_buffer;
    copy_ctx *c = vctx;
    char full[160];
    snprintf(full, sizeof full, "%s%s", c->prefix, name);
    dn_tensor *t = dn_tensors_find(c->ts, full);
    if (!t || dn_tensor_numel(t) != numel) {
        if (!c->missing) snprintf(c->name, sizeof c->name, "%s", full);
        c->missing++;
        return;
    }
    memcpy(data, t->data, (size_t)numel * sizeof(float));
}
typedef struct copy_out_ctx { dn_tensors *ts; dn_status st; } copy_out_ctx;
static void copy_out(void *vctx, const char *name, float *data, int64_t numel, int is_buffer) {
    (void)is_buffer;
    copy_out_ctx *c = vctx;
    if (c->st) return;
    float *d = dn_malloc((size_t)(numel ? numel : 1) * sizeof(float));
    if (!d) { c->st = DN_ERR_NOMEM; return; }
    memcpy(d, data, (size_t)numel * sizeof(float));
    char full[160];
    snprintf(full, sizeof full, "model.%s", name);
    int64_t sh[1] = {numel};
    c->st = dn_tensors_add(c->ts, full, 1, sh, d);
}

dn_status tr_model_to_tensors(const dn_model *m, dn_tensors *ts) {
    copy_out_ctx oc = {ts, DN_OK};
    dn_model_foreach((dn_model *)m, copy_out, &oc);
    return oc.st;
}

int tr_model_from_tensors(dn_model *m, const dn_tensors *ts, char *first, size_t cap) {
    copy_ctx ic = {ts, "model.", 0, ""};
    dn_model_foreach(m, copy_in, &ic);
    if (first && cap) snprintf(first, cap, "%s", ic.name);
    return ic.missing;
}

/* Copies all parameters/buffers of src into dst (same architecture). */
void tr_model_copy_params(dn_model *dst, const dn_model *src) {
    dn_tensors ts = {0};
    if (!tr_model_to_tensors(src, &ts)) tr_model_from_tensors(dst, &ts, NULL, 0);
    dn_tensors_free(&ts);
}
