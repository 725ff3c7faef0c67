/* Training augmentations (see augment.h). */
#include "train/augment.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

void dn_aug_default(dn_aug *a) {
    a->flags = DN_AUG_FLIP | DN_AUG_ROT90 | DN_AUG_RRC | DN_AUG_JITTER;
    a->scale_min = 0.5f;
    a->out_size = 0;
    a->jitter_b = 0.2f;
    a->jitter_c = 0.2f;
}

static const struct { const char *name; unsigned bit; } aug_names[] = {
    {"flip", DN_AUG_FLIP}, {"rot90", DN_AUG_ROT90}, {"rrc", DN_AUG_RRC}, {"jitter", DN_AUG_JITTER}};

dn_status dn_aug_parse(const char *spec, unsigned *flags) {
    *flags = 0;
    if (!spec || !*spec || !strcmp(spec, "none")) return DN_OK;
    const char *p = spec;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        int found = 0;
        for (size_t i = 0; i < sizeof aug_names / sizeof aug_names[0]; i++)
            if (strlen(aug_names[i].name) == n && !strncmp(p, aug_names[i].name, n)) {
                *flags |= aug_names[i].bit;
                found = 1;
            }
        if (!found)
            return dn_fail(DN_ERR_ARG, "--aug: unknown augmentation '%.*s' (known: flip,rot90,rrc,jitter)", (int)n, p);
        p += n;
        if (*p == ',') p++;
    }
    return DN_OK;
}

void dn_aug_format(unsigned flags, char *buf, size_t n) {
    buf[0] = 0;
    size_t len = 0;
    for (size_t i = 0; i < sizeof aug_names / sizeof aug_names[0]; i++)
        if (flags & aug_names[i].bit) {
            int w = snprintf(buf + len, n - len, "%s%s", len ? "," : "", aug_names[i].name);
            if (w < 0 || (size_t)w >= n - len) break;
            len += (size_t)w;
        }
    if (!len) snprintf(buf, n, "none");
}

static dn_status img_new(int w, int h, dn_image *out) {
    out->w = out->h = 0;
    out->data = NULL;
    if (w <= 0 || h <= 0) return dn_fail(DN_ERR_ARG, "augment: empty image %dx%d", w, h);
    size_t n;
    if (dn_mul_overflow((size_t)w * 3, (size_t)h, &n)) return dn_fail(DN_ERR_NOMEM, "augment: image too large");
    out->data = dn_malloc(n);
    if (!out->data) return DN_ERR_NOMEM;
    out->w = w;
    out->h = h;
    return DN_OK;
}

static dn_status check_img(const dn_image *in) {
    if (!in || !in->data || in->w <= 0 || in->h <= 0) return dn_fail(DN_ERR_ARG, "augment: empty input image");
    return DN_OK;
}

/* Resize of the crop [x0, x0+cw) x [y0, y0+ch) to ow x oh with PIL's bilinear
 * filter: a triangle kernel whose support grows with the downscale factor
 * (antialiasing, as torchvision's RandomResizedCrop on PIL images), weights
 * normalised per output sample, separable (horizontal then vertical pass in
 * float), rounded once at the end. Without the antialiasing, crops shrunk to
 * a small network input alias fine textures and no longer look like the
 * antialiased eval images. */
static dn_status taps1d(int in, int out, float **w, int **lo, int *ksize) {
    double scale = (double)in / out, support = scale > 1 ? scale : 1.0;
    int k = (int)ceil(support) * 2 + 1;
    *w = dn_calloc((size_t)out * k, sizeof(float));
    *lo = dn_calloc((size_t)out, sizeof(int));
    if (!*w || !*lo) { free(*w); free(*lo); return DN_ERR_NOMEM; }
    for (int o = 0; o < out; o++) {
        double c = (o + 0.5) * scale;
        int a = (int)floor(c - support), b = (int)ceil(c + support);
        if (a < 0) a = 0;
        if (b > in) b = in;
        if (b - a > k) b = a + k;
        double tot = 0;
        for (int t = a; t < b; t++) {
            double v = 1 - fabs((t + 0.5 - c) / support);
            if (v < 0) v = 0;
            (*w)[(size_t)o * k + (t - a)] = (float)v;
            tot += v;
        }
        if (tot <= 0) { (*w)[(size_t)o * k] = 1; tot = 1; a = a < in ? a : in - 1; }
        for (int t = 0; t < k; t++) (*w)[(size_t)o * k + t] = (float)((*w)[(size_t)o * k + t] / tot);
        (*lo)[o] = a;
    }
    *ksize = k;
    return DN_OK;
}

dn_status dn_img_crop_resize(const dn_image *in, int x0, int y0, int cw, int ch, int ow, int oh, dn_image *out) {
    dn_status st = check_img(in);
    if (st) return st;
    if (cw <= 0 || ch <= 0 || x0 < 0 || y0 < 0 || x0 + cw > in->w || y0 + ch > in->h)
        return dn_fail(DN_ERR_ARG, "augment: crop %d,%d %dx%d outside image %dx%d", x0, y0, cw, ch, in->w, in->h);
    if ((st = img_new(ow, oh, out))) return st;
    float *wx = NULL, *wy = NULL, *tmp = NULL;
    int *lx = NULL, *ly = NULL, kx, ky;
    if ((st = taps1d(cw, ow, &wx, &lx, &kx)) || (st = taps1d(ch, oh, &wy, &ly, &ky))) goto done;
    tmp = dn_malloc((size_t)ch * ow * 3 * sizeof(float));
    if (!tmp) { st = DN_ERR_NOMEM; goto done; }
    for (int y = 0; y < ch; y++) {
        const uint8_t *row = in->data + ((size_t)(y0 + y) * in->w + x0) * 3;
        for (int x = 0; x < ow; x++)
            for (int c = 0; c < 3; c++) {
                float acc = 0;
                for (int t = 0; t < kx && lx[x] + t < cw; t++) acc += wx[(size_t)x * kx + t] * row[(lx[x] + t) * 3 + c];
                tmp[((size_t)y * ow + x) * 3 + c] = acc;
            }
    }
    for (int y = 0; y < oh; y++)
        for (int x = 0; x < ow; x++)
            for (int c = 0; c < 3; c++) {
                float acc = 0;
                for (int t = 0; t < ky && ly[y] + t < ch; t++)
                    acc += wy[(size_t)y * ky + t] * tmp[((size_t)(ly[y] + t) * ow + x) * 3 + c];
                int v = (int)(acc + 0.5f);
                out->data[((size_t)y * ow + x) * 3 + c] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
            }
done:
    free(wx); free(wy); free(lx); free(ly); free(tmp);
    if (st) { free(out->data); out->data = NULL; out->w = out->h = 0; }
    return st;
}

dn_status dn_img_flip(const dn_image *in, int horizontal, dn_image *out) {
    dn_status st = check_img(in);
    if (st || (st = img_new(in->w, in->h, out))) return st;
    for (int y = 0; y < in->h; y++)
        for (int x = 0; x < in->w; x++) {
            int sx = horizontal ? in->w - 1 - x : x, sy = horizontal ? y : in->h - 1 - y;
            memcpy(out->data + ((size_t)y * in->w + x) * 3, in->data + ((size_t)sy * in->w + sx) * 3, 3);
        }
    return DN_OK;
}

dn_status dn_img_rot90(const dn_image *in, int k, dn_image *out) {
    dn_status st = check_img(in);
    if (st) return st;
    k = ((k % 4) + 4) % 4;
    int ow = k % 2 ? in->h : in->w, oh = k % 2 ? in->w : in->h;
    if ((st = img_new(ow, oh, out))) return st;
    for (int y = 0; y < oh; y++)
        for (int x = 0; x < ow; x++) {
            int sx, sy; /* counter-clockwise, like numpy.rot90 / torch.rot90(dims=(H,W)) */
            switch (k) {
            case 0: sx = x; sy = y; break;
            case 1: sx = in->w - 1 - y; sy = x; break;
            case 2: sx = in->w - 1 - x; sy = in->h - 1 - y; break;
            default: sx = y; sy = in->h - 1 - x; break;
            }
            memcpy(out->data + ((size_t)y * ow + x) * 3, in->data + ((size_t)sy * in->w + sx) * 3, 3);
        }
    return DN_OK;
}

static void swap_img(dn_image *a, dn_image *b) {
    dn_image t = *a;
    *a = *b;
    *b = t;
}

static uint8_t clamp_u8(float v) { return v <= 0 ? 0 : v >= 255 ? 255 : (uint8_t)(v + 0.5f); }

static void jitter(dn_image *im, const dn_aug *a, dn_rng *rng) {
    size_t n = (size_t)im->w * im->h * 3;
    float b = 1 + a->jitter_b * (float)(2 * dn_rng_uniform(rng) - 1);
    float c = 1 + a->jitter_c * (float)(2 * dn_rng_uniform(rng) - 1);
    int contrast_first = dn_rng_below(rng, 2);
    for (int step = 0; step < 2; step++) {
        if ((step == 0) == (contrast_first != 0)) {
            /* contrast: blend with the mean grey (ITU-R 601 luma), as ColorJitter */
            double s = 0;
            for (size_t i = 0; i < n; i += 3)
                s += 0.299 * im->data[i] + 0.587 * im->data[i + 1] + 0.114 * im->data[i + 2];
            float mean = (float)(s / (n / 3));
            for (size_t i = 0; i < n; i++) im->data[i] = clamp_u8(mean + (im->data[i] - mean) * c);
        } else {
            for (size_t i = 0; i < n; i++) im->data[i] = clamp_u8(im->data[i] * b);
        }
    }
}

dn_status dn_augment(const dn_image *in, const dn_aug *a, dn_rng *rng, dn_image *out) {
    dn_status st = check_img(in);
    if (st) return st;
    dn_image cur = {0}, tmp = {0};
    if (a->flags & DN_AUG_RRC) {
        int W = in->w, H = in->h;
        double area = (double)W * H, lr0 = log(3.0 / 4), lr1 = log(4.0 / 3);
        int cw = 0, ch = 0, x0 = 0, y0 = 0, ok = 0;
        for (int t = 0; t < 10 && !ok; t++) {
            double ta = area * (a->scale_min + (1 - a->scale_min) * dn_rng_uniform(rng));
            double ar = exp(lr0 + (lr1 - lr0) * dn_rng_uniform(rng));
            cw = (int)lround(sqrt(ta * ar));
            ch = (int)lround(sqrt(ta / ar));
            if (cw > 0 && ch > 0 && cw <= W && ch <= H) {
                x0 = (int)dn_rng_below(rng, (uint32_t)(W - cw + 1));
                y0 = (int)dn_rng_below(rng, (uint32_t)(H - ch + 1));
                ok = 1;
            }
        }
        if (!ok) { /* fallback: whole image, ratio clamped to [3/4, 4/3] */
            double r = (double)W / H;
            if (r < 3.0 / 4) { cw = W; ch = (int)lround(W / (3.0 / 4)); }
            else if (r > 4.0 / 3) { ch = H; cw = (int)lround(H * (4.0 / 3)); }
            else { cw = W; ch = H; }
            if (cw > W) cw = W;
            if (ch > H) ch = H;
            x0 = (W - cw) / 2;
            y0 = (H - ch) / 2;
        }
        int ow = a->out_size > 0 ? a->out_size : W, oh = a->out_size > 0 ? a->out_size : H;
        if ((st = dn_img_crop_resize(in, x0, y0, cw, ch, ow, oh, &cur))) goto fail;
    } else {
        if ((st = img_new(in->w, in->h, &cur))) goto fail;
        memcpy(cur.data, in->data, (size_t)in->w * in->h * 3);
    }
    if (a->flags & DN_AUG_FLIP) {
        for (int hz = 1; hz >= 0; hz--)
            if (dn_rng_below(rng, 2)) {
                if ((st = dn_img_flip(&cur, hz, &tmp))) goto fail;
                swap_img(&cur, &tmp);
                free(tmp.data);
                tmp.data = NULL;
            }
    }
    if (a->flags & DN_AUG_ROT90) {
        int k = (int)dn_rng_below(rng, 4);
        if (k) {
            if ((st = dn_img_rot90(&cur, k, &tmp))) goto fail;
            swap_img(&cur, &tmp);
            free(tmp.data);
            tmp.data = NULL;
        }
    }
    if (a->flags & DN_AUG_JITTER) jitter(&cur, a, rng);
    *out = cur;
    return DN_OK;
fail:
    free(cur.data);
    free(tmp.data);
    out->data = NULL;
    out->w = out->h = 0;
    return st;
}
