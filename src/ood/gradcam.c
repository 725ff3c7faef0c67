/* Grad-CAM from the eval-mode backward pass (see gradcam.h). */
#include "ood/gradcam.h"
#include "eval/report.h"
#include "nn/layers.h"
#include "ood/ood.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

int dn_gradcam_layer_parse(const char *s) {
    if (!s) return -1;
    if (!strncmp(s, "layer", 5)) s += 5;
    if (s[0] >= '1' && s[0] <= '4' && !s[1]) return s[0] - '0';
    return -1;
}

typedef struct {
    const dn_block_p *p;
    dn_conv_layer c1, c2, dw;
    int cin, ih, iw, cout, oh, ow;
    float *in, *h1, *out; /* block input (borrowed: previous out or the stage map), conv1+bn1+relu, block output */
} gblk;

/* y *= g / sqrt(var + eps) per channel (eval BatchNorm backward) */
static void bn_scale(const dn_bn_p *bn, float *y, int hw) {
    for (int c = 0; c < bn->c; c++) {
        float s = (float)(bn->weight[c] / sqrt((double)bn->var[c] + bn->eps));
        for (int i = 0; i < hw; i++) y[(size_t)c * hw + i] *= s;
    }
}

dn_status dn_gradcam(const dn_model *m, dn_session *s, const float *x, int layer, int cls, float *cam, int *ch, int *cw,
                     int *cls_out, int *pred) {
    if (!m || !s || !x || !cam) return dn_fail(DN_ERR_ARG, "gradcam: NULL argument");
    if (layer < 1 || layer > 4) return dn_fail(DN_ERR_ARG, "gradcam: layer %d is not 1..4", layer);
    if (m->num_classes < 1) return dn_fail(DN_ERR_ARG, "gradcam: the model has no classification head");
    if (cls >= m->num_classes) return dn_fail(DN_ERR_ARG, "gradcam: class %d is not below %d", cls, m->num_classes);
    int C, H, W;
    dn_session_stage_shape(s, layer, &C, &H, &W);
    int b0 = 0;
    for (int i = 0; i < layer; i++) b0 += m->layers[i];
    int nb = m->nblocks - b0;
    gblk *bk = dn_calloc((size_t)(nb ? nb : 1), sizeof *bk);
    float *A = dn_malloc((size_t)C * H * W * sizeof(float)), *g = NULL, *t1 = NULL, *t2 = NULL, *logits = NULL;
    void *scratch = NULL;
    dn_status st = DN_OK;
    if (!bk || !A) { st = dn_fail(DN_ERR_NOMEM, "gradcam: out of memory"); goto done; }
    if ((st = dn_session_forward_to(s, x, 1, layer, A))) goto done;
    /* eval forward through the blocks after the stage, keeping what the backward needs */
    size_t scr = 0, maxact = (size_t)C * H * W;
    int c = C, h = H, w = W;
    for (int i = 0; i < nb; i++) {
        gblk *b = &bk[i];
        b->p = &m->blocks[b0 + i];
        b->cin = c; b->ih = h; b->iw = w;
        if ((st = dn_conv_layer_init(&b->c1, &b->p->conv1, h, w, 1, DN_CONV_DIRECT))) goto done;
        if ((st = dn_conv_layer_init(&b->c2, &b->p->conv2, b->c1.oh, b->c1.ow, 1, DN_CONV_DIRECT))) goto done;
        if (b->p->has_down && (st = dn_conv_layer_init(&b->dw, &b->p->down, h, w, 1, DN_CONV_DIRECT))) goto done;
        if ((st = dn_conv_layer_prepare(&b->c1, 1, 1, 1)) || (st = dn_conv_layer_prepare(&b->c2, 1, 1, 1)) ||
            (b->p->has_down && (st = dn_conv_layer_prepare(&b->dw, 1, 1, 1))))
            goto done;
        b->cout = b->p->conv2.cout; b->oh = b->c2.oh; b->ow = b->c2.ow;
        size_t sc = dn_conv_layer_scratch(&b->c1, 1);
        if (dn_conv_layer_scratch(&b->c2, 1) > sc) sc = dn_conv_layer_scratch(&b->c2, 1);
        if (b->p->has_down && dn_conv_layer_scratch(&b->dw, 1) > sc) sc = dn_conv_layer_scratch(&b->dw, 1);
        if (sc > scr) scr = sc;
        size_t o = (size_t)b->cout * b->oh * b->ow, in = (size_t)b->cin * b->ih * b->iw;
        if (o > maxact) maxact = o;
        if (in > maxact) maxact = in;
        if (!(b->h1 = dn_malloc(o * sizeof(float))) || !(b->out = dn_malloc(o * sizeof(float)))) {
            st = dn_fail(DN_ERR_NOMEM, "gradcam: out of memory");
            goto done;
        }
        c = b->cout; h = b->oh; w = b->ow;
    }
    if (!(scratch = dn_alloc_aligned(scr ? scr : 64)) || !(g = dn_malloc(maxact * sizeof(float))) ||
        !(t1 = dn_malloc(maxact * sizeof(float))) || !(t2 = dn_malloc(maxact * sizeof(float))) ||
        !(logits = dn_malloc((size_t)m->num_classes * sizeof(float)))) {
        st = dn_fail(DN_ERR_NOMEM, "gradcam: out of memory");
        goto done;
    }
    const float *cur = A;
    for (int i = 0; i < nb; i++) {
        gblk *b = &bk[i];
        int ohw = b->oh * b->ow;
        b->in = (float *)cur;
        dn_conv_layer_fwd(&b->c1, cur, 1, b->h1, NULL, scratch);
        dn_bn_layer_fwd_eval(&b->p->bn1, b->h1, 1, ohw, b->h1, 1, NULL);
        dn_conv_layer_fwd(&b->c2, b->h1, 1, b->out, NULL, scratch);
        dn_bn_layer_fwd_eval(&b->p->bn2, b->out, 1, ohw, b->out, 0, NULL);
        const float *res = cur;
        if (b->p->has_down) {
            dn_conv_layer_fwd(&b->dw, cur, 1, t1, NULL, scratch);
            dn_bn_layer_fwd_eval(&b->p->down_bn, t1, 1, ohw, t1, 0, NULL);
            res = t1;
        }
        dn_add_fwd(b->out, res, (size_t)b->cout * ohw, b->out, 1, NULL);
        cur = b->out;
    }
    /* head: average pool + fc, the logit's gradient back to the last map */
    int hw = h * w, best = 0;
    for (int k = 0; k < m->num_classes; k++) {
        double z = m->fc_b[k];
        for (int j = 0; j < c; j++) {
            double a = 0;
            for (int p = 0; p < hw; p++) a += cur[(size_t)j * hw + p];
            z += (double)m->fc_w[(size_t)k * c + j] * (a / hw);
        }
        logits[k] = (float)z;
        if (logits[k] > logits[best]) best = k;
    }
    if (cls < 0) cls = best;
    dn_avgpool_bwd(m->fc_w + (size_t)cls * c, 1, c, hw, g);
    for (int i = nb - 1; i >= 0; i--) {
        gblk *b = &bk[i];
        int ohw = b->oh * b->ow;
        size_t on = (size_t)b->cout * ohw;
        dn_relu_bwd(b->out, g, on, g, NULL);          /* d(pre-ReLU sum) */
        memcpy(t1, g, on * sizeof(float));
        bn_scale(&b->p->bn2, t1, ohw);
        dn_conv_layer_bwd_data(&b->c2, 1, t1, t2, NULL, scratch);   /* d h1 */
        dn_relu_bwd(b->h1, t2, on, t2, NULL);
        bn_scale(&b->p->bn1, t2, ohw);
        dn_conv_layer_bwd_data(&b->c1, 1, t2, t1, NULL, scratch);   /* d in through the main path */
        size_t in = (size_t)b->cin * b->ih * b->iw;
        if (b->p->has_down) {
            bn_scale(&b->p->down_bn, g, ohw);
            dn_conv_layer_bwd_data(&b->dw, 1, g, t2, NULL, scratch);
            dn_add_inplace(t1, t2, in, NULL);
        } else {
            dn_add_inplace(t1, g, in, NULL);
        }
        memcpy(g, t1, in * sizeof(float));
    }
    /* weights = spatial mean of the gradient; cam = ReLU(sum_k weight_k A_k) */
    int shw = H * W;
    for (int p = 0; p < shw; p++) cam[p] = 0;
    for (int k = 0; k < C; k++) {
        double a = 0;
        for (int p = 0; p < shw; p++) a += g[(size_t)k * shw + p];
        float wk = (float)(a / shw);
        for (int p = 0; p < shw; p++) cam[p] += wk * A[(size_t)k * shw + p];
    }
    for (int p = 0; p < shw; p++) {
        if (!isfinite(cam[p])) { st = dn_fail(DN_ERR_NUMERIC, "gradcam: map is not finite"); goto done; }
        if (cam[p] < 0) cam[p] = 0;
    }
    if (ch) *ch = H;
    if (cw) *cw = W;
    if (cls_out) *cls_out = cls;
    if (pred) *pred = best;
done:
    for (int i = 0; bk && i < nb; i++) {
        dn_conv_layer_release(&bk[i].c1);
        dn_conv_layer_release(&bk[i].c2);
        dn_conv_layer_release(&bk[i].dw);
        free(bk[i].h1);
        free(bk[i].out);
    }
    free(bk); free(A); free(g); free(t1); free(t2); free(logits);
    dn_free_aligned(scratch);
    return st;
}

/* blue -> cyan -> green -> yellow -> red */
static void colour(float v, uint8_t *rgb) {
    static const float stops[5][3] = {{0, 0, 255}, {0, 255, 255}, {0, 255, 0}, {255, 255, 0}, {255, 0, 0}};
    float t = v * 4;
    int i = (int)t;
    if (i >= 4) i = 3;
    float f = t - i;
    for (int k = 0; k < 3; k++) rgb[k] = (uint8_t)(stops[i][k] + f * (stops[i + 1][k] - stops[i][k]) + 0.5f);
}

dn_status dn_gradcam_overlay(const float *x, int H, int W, const dn_preproc *pp, const float *cam, int ch, int cw, float ref,
                             dn_image *out) {
    memset(out, 0, sizeof *out);
    if (!x || !pp || !cam || H < 1 || W < 1 || ch < 1 || cw < 1) return dn_fail(DN_ERR_ARG, "gradcam overlay: bad arguments");
    if (!(ref > 0)) {
        ref = 0;
        for (int i = 0; i < ch * cw; i++) if (cam[i] > ref) ref = cam[i];
        if (!(ref > 0)) ref = 1;
    }
    uint8_t *d = dn_malloc((size_t)H * W * 3);
    if (!d) return dn_fail(DN_ERR_NOMEM, "gradcam overlay: out of memory");
    for (int y = 0; y < H; y++)
        for (int xx = 0; xx < W; xx++) {
            /* bilinear, align_corners = False (as F.interpolate) */
            float sy = (y + 0.5f) * ch / H - 0.5f, sx = (xx + 0.5f) * cw / W - 0.5f;
            if (sy < 0) sy = 0;
            if (sx < 0) sx = 0;
            int y0 = (int)sy, x0 = (int)sx, y1 = y0 + 1 < ch ? y0 + 1 : y0, x1 = x0 + 1 < cw ? x0 + 1 : x0;
            float fy = sy - y0, fx = sx - x0;
            float v = (1 - fy) * ((1 - fx) * cam[y0 * cw + x0] + fx * cam[y0 * cw + x1]) +
                      fy * ((1 - fx) * cam[y1 * cw + x0] + fx * cam[y1 * cw + x1]);
            v /= ref;
            v = v < 0 ? 0 : v > 1 ? 1 : v;
            uint8_t *o = d + ((size_t)y * W + xx) * 3, heat[3];
            for (int k = 0; k < 3; k++) {
                int chn = pp->bgr ? 2 - k : k;
                float px = (x[((size_t)chn * H + y) * W + xx] * pp->std[chn] + pp->mean[chn]) * 255.0f;
                o[k] = (uint8_t)(px < 0 ? 0 : px > 255 ? 255 : px + 0.5f);
            }
            if (v > 0.05f) {
                colour(v, heat);
                for (int k = 0; k < 3; k++) o[k] = (uint8_t)((o[k] + heat[k] + 1) / 2);
            }
        }
    out->w = W;
    out->h = H;
    out->data = d;
    return DN_OK;
}

dn_status dn_gradcam_png(const dn_model *m, dn_session *s, const float *x, int layer, int cls, uint8_t **png, size_t *len,
                         int *used, int *pred) {
    *png = NULL;
    *len = 0;
    if (layer < 1 || layer > 4) return dn_fail(DN_ERR_ARG, "gradcam: layer %d is not 1..4", layer);
    int C, ch, cw;
    dn_session_stage_shape(s, layer, &C, &ch, &cw);
    float *map = dn_malloc((size_t)ch * cw * sizeof(float));
    if (!map) return dn_fail(DN_ERR_NOMEM, "gradcam: out of memory");
    dn_image ov = {0};
    float ref = m->ood ? m->ood->cam_ref[layer - 1] : 0;
    dn_status st = dn_gradcam(m, s, x, layer, cls, map, &ch, &cw, used, pred);
    if (!st) st = dn_gradcam_overlay(x, m->pp.crop, m->pp.crop, &m->pp, map, ch, cw, ref, &ov);
    free(map);
    if (!st) st = dn_png_encode(&ov, png, len);
    free(ov.data);
    return st;
}

static int cmp_f(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

dn_status dn_gradcam_reference(const dn_model *m, const char *const *paths, int n, float ref[4]) {
    for (int L = 0; L < 4; L++) ref[L] = 0;
    if (n < 1) return dn_fail(DN_ERR_ARG, "gradcam reference: no images");
    dn_session *s = NULL;
    dn_status st = dn_session_new(m, 1, 0, &s);
    if (st) return st;
    int C, H, W;
    dn_session_stage_shape(s, 1, &C, &H, &W); /* layer1 has the largest map */
    size_t per = (size_t)H * W;
    float *vals = dn_malloc((size_t)n * per * sizeof(float));
    int used = 0;
    if (!vals) { st = dn_fail(DN_ERR_NOMEM, "gradcam reference: out of memory"); goto done; }
    for (int L = 1; L <= 4 && !st; L++) {
        size_t cnt = 0;
        used = 0;
        for (int i = 0; i < n; i++) {
            dn_image img;
            memset(&img, 0, sizeof img); /* dn_image_load leaves stride/format unset */
            if (dn_image_load(paths[i], &img)) continue; /* unreadable: the caller already counted it */
            st = dn_preprocess(&img, &m->pp, dn_session_input(s));
            dn_image_free(&img);
            int ch, cw;
            if (!st) st = dn_gradcam(m, s, dn_session_input(s), L, -1, vals + cnt, &ch, &cw, NULL, NULL);
            if (st) goto done;
            cnt += (size_t)ch * cw;
            used++;
        }
        if (!cnt) break;
        qsort(vals, cnt, sizeof(float), cmp_f);
        ref[L - 1] = vals[(size_t)(0.99 * (double)(cnt - 1))];
        if (!(ref[L - 1] > 0)) ref[L - 1] = vals[cnt - 1] > 0 ? vals[cnt - 1] : 0;
    }
    if (!used && !st) st = dn_fail(DN_ERR_IO, "gradcam reference: none of the %d images could be read", n);
done:
    free(vals);
    dn_session_free(s);
    return st;
}
