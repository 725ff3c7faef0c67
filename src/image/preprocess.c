/* Preprocessing equal to torchvision's eval transform on a PIL RGB image:
 *   Resize(resize) -> CenterCrop(crop) -> ToTensor -> Normalize(mean, std).
 *
 * Resize follows torchvision 0.14 (shorter side -> resize, longer side ->
 * int(resize * long / short)) and PIL's ImagingResample for 8-bit images with
 * the BILINEAR filter: a triangle filter whose support grows with the
 * downscale factor (antialiasing), coefficients normalised to sum 1 and
 * converted to fixed point with 22 fractional bits, a horizontal pass and then
 * a vertical pass, each rounded and clipped to uint8; a pass is skipped when
 * that dimension does not change. Only the output rows/columns that survive
 * the centre crop are computed: every output sample depends only on its own
 * coefficients, so this is bit-exact with resizing the whole image.
 *
 * CenterCrop follows torchvision: top = int(round((h - crop) / 2)) with
 * Python's round-half-to-even, and zero padding (pixel value 0) when the
 * image is smaller than the crop. ToTensor/Normalize are computed in float32
 * in the same order as torch: (v / 255 - mean) / std. With pp->bgr set, output
 * channel c is source channel 2 - c and mean[c]/std[c] belong to output
 * channel c. out must hold 3 * crop * crop floats (CHW); caller owns it. */
#include "core/core.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define PRECISION_BITS 22
/* Limits that keep a hostile preproc contract from exhausting memory. */
#define DN_PREPROC_MAX_SIDE 16384

void dn_preproc_default(dn_preproc *pp) {
    pp->resize = 256;
    pp->crop = 224;
    pp->mean[0] = 0.485f; pp->mean[1] = 0.456f; pp->mean[2] = 0.406f;
    pp->std[0] = 0.229f; pp->std[1] = 0.224f; pp->std[2] = 0.225f;
    pp->bgr = 0;
}

/* Fixed-point filter taps for output samples [from, to) of a 1-D resize of
 * insz -> outsz samples. For output j, taps k[(j-from)*ksize + t] apply to
 * input samples lo[j-from] + t, t < n[j-from]. */
typedef struct {
    int ksize;
    int *lo, *n;
    int32_t *k;
} taps;

static void taps_free(taps *t) {
    free(t->lo);
    free(t->n);
    free(t->k);
    memset(t, 0, sizeof *t);
}

static double triangle(double x) {
    if (x < 0.0) x = -x;
    return x < 1.0 ? 1.0 - x : 0.0;
}

static dn_status taps_make(int insz, int outsz, int from, int to, taps *t) {
    memset(t, 0, sizeof *t);
    double scale = (double)insz / outsz, fscale = scale < 1.0 ? 1.0 : scale;
    double support = 1.0 * fscale;
    int ksize = (int)ceil(support) * 2 + 1;
    int cnt = to - from;
    double *w = dn_malloc(sizeof(double) * (size_t)ksize);
    t->lo = dn_malloc(sizeof(int) * (size_t)cnt);
    t->n = dn_malloc(sizeof(int) * (size_t)cnt);
    t->k = dn_calloc((size_t)cnt * (size_t)ksize, sizeof(int32_t));
    if (!w || !t->lo || !t->n || !t->k) {
        free(w);
        taps_free(t);
        return DN_ERR_NOMEM;
    }
    t->ksize = ksize;
    for (int j = from; j < to; j++) {
        double center = (j + 0.5) * scale, ss = 1.0 / fscale, sum = 0.0;
        int lo = (int)(center - support + 0.5), hi = (int)(center + support + 0.5);
        if (lo < 0) lo = 0;
        if (hi > insz) hi = insz;
        int n = hi - lo;
        for (int i = 0; i < n; i++) {
            w[i] = triangle((i + lo - center + 0.5) * ss);
            sum += w[i];
        }
        int32_t *k = t->k + (size_t)(j - from) * ksize;
        for (int i = 0; i < n; i++) {
            double v = sum != 0.0 ? w[i] / sum : w[i];
            k[i] = (int32_t)(v < 0 ? -0.5 + v * (1 << PRECISION_BITS) : 0.5 + v * (1 << PRECISION_BITS));
        }
        t->lo[j - from] = lo;
        t->n[j - from] = n;
    }
    free(w);
    return DN_OK;
}

static inline uint8_t clip8(int32_t v) {
    v >>= PRECISION_BITS; /* arithmetic shift: floor, as PIL */
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

/* torchvision CenterCrop offset along one axis: index of the resized image
 * that lands on output index 0 (negative when padding is added). */
static int crop_start(int r, int c) {
    if (c > r) return -((c - r) / 2);
    int d = r - c, k = d / 2;
    if (d % 2 == 0) return k;
    return (k % 2 == 0) ? k : k + 1; /* Python round(k + 0.5): half to even */
}

/* A one-channel copy of a packed 3-channel image whose pixels all have
 * R == G == B; NULL when some pixel is coloured (or out of memory). */
static uint8_t *gray_copy(const dn_image *img, size_t in_stride) {
    const int w = img->w, h = img->h;
    int y = 0, x = 0;
    for (y = 0; y < h; y++) {
        const uint8_t *r = img->data + (size_t)y * in_stride;
        for (x = 0; x < w && r[3 * x] == r[3 * x + 1] && r[3 * x] == r[3 * x + 2]; x++) {}
        if (x < w) return NULL;
    }
    uint8_t *gray = dn_malloc((size_t)w * h);
    if (!gray) return NULL;
    for (y = 0; y < h; y++)
        for (x = 0; x < w; x++) gray[(size_t)y * w + x] = img->data[(size_t)y * in_stride + 3 * x];
    return gray;
}

/* Horizontal resampling of one row of nc (1 or 3) interleaved channels into
 * ncx output pixels. */
static void hpass_row(const taps *th, const uint8_t *src, int nc, int ncx, uint8_t *dst) {
    for (int j = 0; j < ncx; j++) {
        const int32_t *k = th->k + (size_t)j * th->ksize;
        const uint8_t *s = src + (size_t)th->lo[j] * nc;
        int32_t a0 = 1 << (PRECISION_BITS - 1), a1 = a0, a2 = a0;
        if (nc == 1) {
            for (int i = 0; i < th->n[j]; i++) a0 += s[i] * k[i];
            dst[j] = clip8(a0);
            continue;
        }
        for (int i = 0; i < th->n[j]; i++) {
            a0 += s[3 * i + 0] * k[i];
            a1 += s[3 * i + 1] * k[i];
            a2 += s[3 * i + 2] * k[i];
        }
        dst[3 * j + 0] = clip8(a0);
        dst[3 * j + 1] = clip8(a1);
        dst[3 * j + 2] = clip8(a2);
    }
}

/* Vertical resampling of output row y from the rows starting at s (rowlen
 * bytes each). Row-wise accumulation (vectorisable) in acc; integer sums are
 * exact, so the order of the taps does not change the result. */
static void vpass_row(const taps *tv, int y, const uint8_t *s, size_t rowlen, int32_t *acc, uint8_t *dst) {
    const int32_t *k = tv->k + (size_t)y * tv->ksize;
    for (size_t x = 0; x < rowlen; x++) acc[x] = 1 << (PRECISION_BITS - 1);
    for (int i = 0; i < tv->n[y]; i++) {
        const uint8_t *row = s + (size_t)i * rowlen;
        const int32_t ki = k[i];
        for (size_t x = 0; x < rowlen; x++) acc[x] += row[x] * ki;
    }
    for (size_t x = 0; x < rowlen; x++) dst[x] = clip8(acc[x]);
}

dn_status dn_preprocess(const dn_image *img, const dn_preproc *pp, float *out) {
    if (!img || !img->data || img->w <= 0 || img->h <= 0)
        return dn_fail(DN_ERR_ARG, "dn_preprocess: empty image");
    if (img->format != DN_RGB8 && img->format != DN_GRAY8 && img->format != DN_BGR8)
        return dn_fail(DN_ERR_ARG, "dn_preprocess: unknown pixel format %d", img->format);
    /* Source layout: packed RGB8 from the decoders, or a wrapped camera frame
     * (GRAY8/RGB8/BGR8 with a row stride) read in place. */
    const int in_ch = img->format == DN_GRAY8 ? 1 : 3;
    const size_t in_stride = img->stride ? img->stride : (size_t)img->w * in_ch;
    if (in_stride < (size_t)img->w * in_ch) return dn_fail(DN_ERR_ARG, "dn_preprocess: row stride below width");
    if (!pp || !out) return dn_fail(DN_ERR_ARG, "dn_preprocess: NULL argument");
    if (pp->crop <= 0 || pp->crop > DN_PREPROC_MAX_SIDE || pp->resize < 0 || pp->resize > DN_PREPROC_MAX_SIDE)
        return dn_fail(DN_ERR_ARG, "preprocessing: invalid sizes (resize %d, crop %d)", pp->resize, pp->crop);
    for (int c = 0; c < 3; c++)
        if (!(pp->std[c] != 0.0f) || !isfinite(pp->std[c]) || !isfinite(pp->mean[c]))
            return dn_fail(DN_ERR_ARG, "preprocessing: invalid mean/std for channel %d", c);

    const int w = img->w, h = img->h, C = pp->crop;
    /* Resized size, as torchvision computes it. */
    long rw = w, rh = h;
    if (pp->resize > 0) {
        if (w <= h) {
            rw = pp->resize;
            rh = (long)((double)pp->resize * h / w);
        } else {
            rh = pp->resize;
            rw = (long)((double)pp->resize * w / h);
        }
        if (rw > (1L << 30) || rh > (1L << 30))
            return dn_fail(DN_ERR_ARG, "preprocessing: %dx%d image resizes to an absurd size", w, h);
    }
    const int need_h = rw != w, need_v = rh != h;
    const int sx = crop_start((int)rw, C), sy = crop_start((int)rh, C);
    /* Resized columns/rows that survive the crop: [cx0, cx1) x [cy0, cy1). */
    int cx0 = sx < 0 ? 0 : sx, cx1 = sx + C > rw ? (int)rw : sx + C;
    int cy0 = sy < 0 ? 0 : sy, cy1 = sy + C > rh ? (int)rh : sy + C;
    int ncx = cx1 - cx0, ncy = cy1 - cy0;

    taps th = {0}, tv = {0};
    uint8_t *gray = NULL, *tmp = NULL, *res = NULL;
    int32_t *acc = NULL;
    dn_status st = DN_OK;
    /* Grayscale fast path: when R == G == B everywhere (the usual defect
     * camera image), the three channels would be resampled identically, so
     * one channel is resampled and reused: same result, a third of the work. */
    const uint8_t *src0 = img->data;
    int nc = in_ch;
    size_t src_stride = in_stride;
    if (nc == 3 && (gray = gray_copy(img, in_stride))) {
        src0 = gray;
        nc = 1;
        src_stride = (size_t)w;
    }
    int yfirst = cy0, ylast = cy1; /* source rows the vertical pass reads */
    if (need_v) {
        if ((st = taps_make(h, (int)rh, cy0, cy1, &tv))) goto fail;
        yfirst = tv.lo[0];
        ylast = tv.lo[ncy - 1] + tv.n[ncy - 1];
    }
    if (need_h && (st = taps_make(w, (int)rw, cx0, cx1, &th))) goto fail;
    int nrows = ylast - yfirst;
    const size_t rowlen = (size_t)ncx * nc; /* bytes per row after the horizontal pass */
    tmp = dn_malloc((size_t)nrows * rowlen);
    res = dn_malloc((size_t)ncy * rowlen);
    acc = dn_malloc(sizeof(int32_t) * rowlen);
    if (!tmp || !res || !acc) { st = DN_ERR_NOMEM; goto fail; }

    /* Horizontal pass (or column copy) over the needed source rows. */
    for (int y = 0; y < nrows; y++) {
        const uint8_t *src = src0 + (size_t)(y + yfirst) * src_stride;
        uint8_t *dst = tmp + (size_t)y * rowlen;
        if (need_h) hpass_row(&th, src, nc, ncx, dst);
        else memcpy(dst, src + (size_t)cx0 * nc, rowlen);
    }
    /* Vertical pass (or row copy). */
    for (int y = 0; y < ncy; y++) {
        uint8_t *dst = res + (size_t)y * rowlen;
        if (need_v) vpass_row(&tv, y, tmp + (size_t)(tv.lo[y] - yfirst) * rowlen, rowlen, acc, dst);
        else memcpy(dst, tmp + (size_t)y * rowlen, rowlen);
    }

    /* ToTensor + Normalize through a per-channel table (same float32 ops). */
    float lut[3][256];
    for (int c = 0; c < 3; c++)
        for (int v = 0; v < 256; v++) lut[c][v] = ((float)v / 255.0f - pp->mean[c]) / pp->std[c];
    /* Output columns [ox0, ox0 + ncx) and rows [oy0, oy0 + ncy) hold image
     * pixels; the rest is CenterCrop's zero padding. */
    const int ox0 = cx0 - sx, oy0 = cy0 - sy;
    for (int c = 0; c < 3; c++) {
        /* source channel feeding output channel c (a BGR8 source swaps the order once more) */
        int sc = nc == 1 ? 0 : (pp->bgr != 0) != (img->format == DN_BGR8) ? 2 - c : c;
        const float *lc = lut[c];
        float *o = out + (size_t)c * C * C;
        for (int y = 0; y < C; y++) {
            float *orow = o + (size_t)y * C;
            if (y < oy0 || y >= oy0 + ncy) {
                for (int x = 0; x < C; x++) orow[x] = lc[0];
                continue;
            }
            const uint8_t *r = res + (size_t)(y - oy0) * rowlen + sc;
            for (int x = 0; x < ox0; x++) orow[x] = lc[0];
            for (int x = 0; x < ncx; x++) orow[ox0 + x] = lc[r[(size_t)nc * x]];
            for (int x = ox0 + ncx; x < C; x++) orow[x] = lc[0];
        }
    }
fail:
    taps_free(&th);
    taps_free(&tv);
    free(gray);
    free(tmp);
    free(res);
    free(acc);
    return st;
}
