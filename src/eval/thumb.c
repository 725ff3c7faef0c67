/* Thumbnails for the eval report: box-filtered downscale, PNG encoding in
 * memory (libpng) and base64 (see report.h). */
#include "eval/report.h"
#include "core/core.h"
#include <png.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

dn_status dn_base64(const uint8_t *d, size_t n, char **out) {
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    *out = NULL;
    if (n > ((size_t)-1 / 4) * 3 - 3) return dn_fail(DN_ERR_NOMEM, "base64: input too large");
    size_t olen = (n + 2) / 3 * 4;
    char *o = dn_malloc(olen + 1), *p = o;
    if (!o) return DN_ERR_NOMEM;
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)d[i] << 16 | (uint32_t)d[i + 1] << 8 | d[i + 2];
        *p++ = tab[v >> 18]; *p++ = tab[(v >> 12) & 63]; *p++ = tab[(v >> 6) & 63]; *p++ = tab[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)d[i] << 16;
        *p++ = tab[v >> 18]; *p++ = tab[(v >> 12) & 63]; *p++ = '='; *p++ = '=';
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)d[i] << 16 | (uint32_t)d[i + 1] << 8;
        *p++ = tab[v >> 18]; *p++ = tab[(v >> 12) & 63]; *p++ = tab[(v >> 6) & 63]; *p++ = '=';
    }
    *p = 0;
    *out = o;
    return DN_OK;
}

typedef struct { uint8_t *b; size_t len, cap; int oom; char msg[160]; } membuf;

static void png_mem_write(png_structp p, png_bytep data, size_t n) {
    membuf *m = png_get_io_ptr(p);
    if (m->oom) return;
    if (m->len + n > m->cap) {
        size_t nc = m->cap ? m->cap : 4096;
        while (nc < m->len + n) nc *= 2;
        uint8_t *nb = dn_realloc(m->b, nc);
        if (!nb) { m->oom = 1; return; }
        m->b = nb;
        m->cap = nc;
    }
    memcpy(m->b + m->len, data, n);
    m->len += n;
}
static void png_mem_flush(png_structp p) { (void)p; }
static void png_enc_error(png_structp p, png_const_charp msg) {
    membuf *m = png_get_error_ptr(p);
    snprintf(m->msg, sizeof m->msg, "%s", msg);
    png_longjmp(p, 1);
}
static void png_enc_warning(png_structp p, png_const_charp msg) { (void)p; (void)msg; }

dn_status dn_png_encode(const dn_image *img, uint8_t **png, size_t *len) {
    *png = NULL;
    *len = 0;
    if (!img || !img->data || img->w < 1 || img->h < 1) return dn_fail(DN_ERR_ARG, "png encode: empty image");
    size_t npx = (size_t)img->w * (size_t)img->h;
    int gray = 1;
    for (size_t i = 0; i < npx && gray; i++) {
        const uint8_t *q = img->data + 3 * i;
        gray = q[0] == q[1] && q[1] == q[2];
    }
    uint8_t *rows = NULL;
    membuf m = {0};
    png_structp pp = png_create_write_struct(PNG_LIBPNG_VER_STRING, &m, png_enc_error, png_enc_warning);
    png_infop info = pp ? png_create_info_struct(pp) : NULL;
    if (!pp || !info) {
        png_destroy_write_struct(&pp, &info);
        return dn_fail(DN_ERR_NOMEM, "png encode: out of memory");
    }
    if (gray) {
        rows = dn_malloc(npx);
        if (!rows) { png_destroy_write_struct(&pp, &info); return DN_ERR_NOMEM; }
        for (size_t i = 0; i < npx; i++) rows[i] = img->data[3 * i];
    }
    /* nothing below modifies locals that are read after a longjmp except m */
    if (setjmp(png_jmpbuf(pp))) {
        png_destroy_write_struct(&pp, &info);
        free(rows);
        free(m.b);
        return dn_fail(DN_ERR_FORMAT, "png encode: %s", m.msg[0] ? m.msg : "libpng error");
    }
    png_set_write_fn(pp, &m, png_mem_write, png_mem_flush);
    png_set_IHDR(pp, info, (png_uint_32)img->w, (png_uint_32)img->h, 8, gray ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_set_compression_level(pp, 9);
    png_write_info(pp, info);
    size_t stride = gray ? (size_t)img->w : (size_t)img->w * 3;
    const uint8_t *base = gray ? rows : img->data;
    for (int y = 0; y < img->h; y++) png_write_row(pp, (png_const_bytep)(base + (size_t)y * stride));
    png_write_end(pp, info);
    png_destroy_write_struct(&pp, &info);
    free(rows);
    if (m.oom) { free(m.b); return dn_fail(DN_ERR_NOMEM, "png encode: out of memory"); }
    *png = m.b;
    *len = m.len;
    return DN_OK;
}

dn_status dn_thumb_png_base64(const dn_image *img, int max_side, char **out) {
    *out = NULL;
    if (!img || !img->data || img->w < 1 || img->h < 1) return dn_fail(DN_ERR_ARG, "thumbnail: empty image");
    if (max_side < 1) return dn_fail(DN_ERR_ARG, "thumbnail: size %d must be >= 1", max_side);
    int w = img->w, h = img->h, big = w > h ? w : h;
    int tw = w, th = h;
    if (big > max_side) {
        tw = (int)((double)w * max_side / big + 0.5);
        th = (int)((double)h * max_side / big + 0.5);
        if (tw < 1) tw = 1;
        if (th < 1) th = 1;
    }
    dn_image t = {.w = tw, .h = th, .data = dn_malloc((size_t)tw * th * 3)};
    if (!t.data) return DN_ERR_NOMEM;
    /* box filter: each output pixel averages its source rectangle */
    for (int oy = 0; oy < th; oy++) {
        int y0 = (int)((int64_t)oy * h / th), y1 = (int)((int64_t)(oy + 1) * h / th);
        if (y1 <= y0) y1 = y0 + 1;
        for (int ox = 0; ox < tw; ox++) {
            int x0 = (int)((int64_t)ox * w / tw), x1 = (int)((int64_t)(ox + 1) * w / tw);
            if (x1 <= x0) x1 = x0 + 1;
            uint32_t s[3] = {0, 0, 0};
            for (int y = y0; y < y1; y++)
                for (int x = x0; x < x1; x++) {
                    const uint8_t *q = img->data + ((size_t)y * w + x) * 3;
                    s[0] += q[0]; s[1] += q[1]; s[2] += q[2];
                }
            uint32_t cnt = (uint32_t)((y1 - y0) * (x1 - x0));
            uint8_t *d = t.data + ((size_t)oy * tw + ox) * 3;
            for (int c = 0; c < 3; c++) d[c] = (uint8_t)((s[c] + cnt / 2) / cnt);
        }
    }
    uint8_t *png = NULL;
    size_t len = 0;
    dn_status st = dn_png_encode(&t, &png, &len);
    free(t.data);
    if (st) return st;
    st = dn_base64(png, len, out);
    free(png);
    return st;
}

