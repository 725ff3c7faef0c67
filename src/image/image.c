/* Image decoding: JPEG (libjpeg-turbo), PNG (libpng), BMP and binary PGM/PPM
 * (stb_image, after our own header validation).
 *
 * Every decoder produces 8-bit interleaved RGB exactly as PIL's
 * Image.open(path).convert('RGB') does for the same file, because the
 * preprocessing contract is defined against torchvision on PIL images:
 *  - grayscale is replicated to R=G=B, palette images are expanded through the
 *    palette (tRNS is ignored), alpha is dropped without compositing;
 *  - 16-bit samples keep their high byte (PIL's "RGB;16B" raw mode). One
 *    deliberate difference: PIL opens 16-bit *grayscale* as mode "I" and its
 *    convert('RGB') clips every value above 255 to white, destroying the image;
 *    we take the high byte there as well;
 *  - CMYK JPEGs use PIL's cmyk2rgb arithmetic (Adobe files are stored inverted);
 *  - no gamma, ICC or EXIF-orientation handling (PIL applies none on convert).
 * Dimensions are checked against DN_IMAGE_MAX_PIXELS before any pixel buffer is
 * allocated, and truncated data is an error, never a partially grey image. */
#include "core/core.h"

#include <jerror.h>
#include <jpeglib.h>
#include <png.h>
#include <setjmp.h>
#include <stb/stb_image.h>
#include <stdlib.h>
#include <string.h>

/* Largest file dn_image_load reads (a 64-Mpixel 32-bit BMP is 256 MiB). */
#define DN_IMAGE_MAX_FILE ((size_t)512 << 20)

void dn_image_free(dn_image *img) {
    if (!img) return;
    if (!img->borrowed) free(img->data); /* a wrapped frame belongs to the caller */
    memset(img, 0, sizeof *img);
}

/* Validates w x h and allocates the RGB buffer of out. */
static dn_status alloc_rgb(const char *name, long w, long h, dn_image *out) {
    if (w <= 0 || h <= 0)
        return dn_fail(DN_ERR_FORMAT, "%s: invalid image dimensions %ldx%ld", name, w, h);
    if ((unsigned long long)w * (unsigned long long)h > DN_IMAGE_MAX_PIXELS)
        return dn_fail(DN_ERR_NOMEM, "%s: image declares %ldx%ld pixels, more than the limit of %u",
                       name, w, h, DN_IMAGE_MAX_PIXELS);
    out->data = dn_malloc((size_t)w * (size_t)h * 3);
    if (!out->data) return dn_fail_prefix(DN_ERR_NOMEM, "%s", name);
    out->w = (int)w;
    out->h = (int)h;
    return DN_OK;
}

/* ------------------------------------------------------------------ JPEG */

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jb;
    char msg[JMSG_LENGTH_MAX];
} jpeg_err;

static void jpeg_on_error(j_common_ptr c) {
    jpeg_err *e = (jpeg_err *)c->err;
    c->err->format_message(c, e->msg);
    longjmp(e->jb, 1);
}

/* Warnings that mean the data ended early are errors: a truncated upload must
 * not be classified as a half-grey image. Other corrupt-data warnings are
 * tolerated, as PIL tolerates them. */
static void jpeg_on_message(j_common_ptr c, int level) {
    if (level >= 0) return; /* trace messages */
    int code = c->err->msg_code;
    if (code == JWRN_JPEG_EOF || code == JWRN_HIT_MARKER) {
        jpeg_err *e = (jpeg_err *)c->err;
        c->err->format_message(c, e->msg);
        snprintf(e->msg, sizeof e->msg, "truncated JPEG (premature end of data)");
        longjmp(e->jb, 1);
    }
    c->err->num_warnings++;
}

static dn_status decode_jpeg(const uint8_t *buf, size_t len, const char *name, dn_image *out) {
    struct jpeg_decompress_struct ci;
    jpeg_err je;
    /* volatile: modified between setjmp and longjmp. */
    uint8_t *volatile row = NULL;
    dn_status volatile st = DN_OK;
    memset(&ci, 0, sizeof ci);
    ci.err = jpeg_std_error(&je.pub);
    je.pub.error_exit = jpeg_on_error;
    je.pub.emit_message = jpeg_on_message;
    je.msg[0] = 0;
    if (setjmp(je.jb)) {
        if (st == DN_OK) st = dn_fail(DN_ERR_FORMAT, "%s: %s", name, je.msg);
        goto fail;
    }
    jpeg_create_decompress(&ci);
    jpeg_mem_src(&ci, buf, (unsigned long)len);
    jpeg_read_header(&ci, TRUE);
    int cmyk = ci.jpeg_color_space == JCS_CMYK || ci.jpeg_color_space == JCS_YCCK;
    ci.out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
    if ((st = alloc_rgb(name, ci.image_width, ci.image_height, out)) != DN_OK) goto fail;
    jpeg_start_decompress(&ci);
    int inv = cmyk && ci.saw_Adobe_marker; /* Adobe CMYK is stored inverted */
    if (cmyk) {
        row = dn_malloc((size_t)ci.output_width * 4);
        if (!row) { st = DN_ERR_NOMEM; goto fail; }
    }
    while (ci.output_scanline < ci.output_height) {
        uint8_t *dst = out->data + (size_t)ci.output_scanline * out->w * 3;
        JSAMPROW rp = cmyk ? (JSAMPROW)row : (JSAMPROW)dst;
        if (jpeg_read_scanlines(&ci, &rp, 1) != 1) {
            st = dn_fail(DN_ERR_FORMAT, "%s: truncated JPEG (premature end of data)", name);
            goto fail;
        }
        if (cmyk) {
            for (int x = 0; x < out->w; x++) {
                int k = row[4 * x + 3];
                if (inv) k = 255 - k;
                int nk = 255 - k;
                for (int ch = 0; ch < 3; ch++) {
                    int c = row[4 * x + ch];
                    if (inv) c = 255 - c;
                    int t = c * nk + 128; /* PIL's MULDIV255 */
                    int v = nk - (((t >> 8) + t) >> 8);
                    dst[3 * x + ch] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
                }
            }
        }
    }
    jpeg_finish_decompress(&ci);
    jpeg_destroy_decompress(&ci);
    free(row);
    return DN_OK;
fail:
    jpeg_destroy_decompress(&ci);
    free(row);
    dn_image_free(out);
    return st;
}

/* ------------------------------------------------------------------- PNG */

typedef struct {
    const uint8_t *buf;
    size_t len, pos;
    const char *name;
    char msg[200];
} png_src;

static void png_on_error(png_structp p, png_const_charp msg) {
    png_src *s = png_get_error_ptr(p);
    snprintf(s->msg, sizeof s->msg, "%s", msg);
    png_longjmp(p, 1);
}
static void png_on_warning(png_structp p, png_const_charp msg) { (void)p; (void)msg; }

static void png_read_mem(png_structp p, png_bytep dst, size_t n) {
    png_src *s = png_get_io_ptr(p);
    if (n > s->len - s->pos) png_error(p, "truncated PNG (premature end of data)");
    memcpy(dst, s->buf + s->pos, n);
    s->pos += n;
}

static dn_status decode_png(const uint8_t *buf, size_t len, const char *name, dn_image *out) {
    png_src src = {buf, len, 0, name, {0}};
    png_structp volatile p = NULL;
    png_infop volatile info = NULL;
    png_bytep *volatile rows = NULL;
    dn_status volatile st = DN_OK;

    p = png_create_read_struct(PNG_LIBPNG_VER_STRING, &src, png_on_error, png_on_warning);
    if (!p) return dn_fail(DN_ERR_NOMEM, "%s: cannot create PNG reader", name);
    info = png_create_info_struct(p);
    if (!info) { st = dn_fail(DN_ERR_NOMEM, "%s: cannot create PNG reader", name); goto fail; }
    if (setjmp(png_jmpbuf(p))) {
        if (st == DN_OK) st = dn_fail(DN_ERR_FORMAT, "%s: %s", name, src.msg);
        goto fail;
    }
    png_set_read_fn(p, &src, png_read_mem);
    png_read_info(p, info);
    png_uint_32 w, h;
    int depth, ctype, interlace;
    png_get_IHDR(p, info, &w, &h, &depth, &ctype, &interlace, NULL, NULL);
    if ((st = alloc_rgb(name, (long)w, (long)h, out)) != DN_OK) goto fail;
    /* Transforms chosen to reproduce PIL's convert('RGB'); no tRNS_to_alpha,
     * no gamma. */
    if (ctype == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(p);
    if ((ctype == PNG_COLOR_TYPE_GRAY || ctype == PNG_COLOR_TYPE_GRAY_ALPHA) && depth < 8)
        png_set_expand_gray_1_2_4_to_8(p);
    if (depth == 16) png_set_strip_16(p); /* high byte, as PIL */
    /* Expansion turns tRNS into an alpha channel; drop it like any alpha. */
    if ((ctype & PNG_COLOR_MASK_ALPHA) || png_get_valid(p, info, PNG_INFO_tRNS)) png_set_strip_alpha(p);
    if (ctype == PNG_COLOR_TYPE_GRAY || ctype == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(p);
    png_set_interlace_handling(p);
    png_read_update_info(p, info);
    if (png_get_rowbytes(p, info) != (size_t)w * 3) {
        st = dn_fail(DN_ERR_UNSUPPORTED, "%s: unsupported PNG layout (color type %d, depth %d)", name,
                     ctype, depth);
        goto fail;
    }
    rows = dn_malloc(sizeof(png_bytep) * h);
    if (!rows) { st = DN_ERR_NOMEM; goto fail; }
    for (png_uint_32 y = 0; y < h; y++) rows[y] = out->data + (size_t)y * w * 3;
    png_read_image(p, rows);
    png_read_end(p, NULL);
    free(rows);
    png_destroy_read_struct((png_structpp)&p, (png_infopp)&info, NULL);
    return DN_OK;
fail:
    free(rows);
    png_destroy_read_struct((png_structpp)&p, info ? (png_infopp)&info : NULL, NULL);
    dn_image_free(out);
    return st;
}

/* ---------------------------------------------------------- BMP, PGM/PPM */

static uint32_t rd_le32(const uint8_t *p) {
    return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint16_t rd_le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

/* stb_image reads zeros past the end of a buffer instead of failing, so the
 * header is validated here: supported layout, dimensions within the limit and
 * enough bytes for the declared pixels. */
static dn_status check_bmp(const uint8_t *b, size_t len, const char *name) {
    if (len < 26) return dn_fail(DN_ERR_FORMAT, "%s: truncated BMP header", name);
    uint32_t off = rd_le32(b + 10), hsz = rd_le32(b + 14);
    long w, h;
    unsigned bpp, comp = 0;
    if (hsz == 12) {
        w = rd_le16(b + 18);
        h = rd_le16(b + 20);
        bpp = rd_le16(b + 24);
    } else if (hsz == 40 || hsz == 52 || hsz == 56 || hsz == 108 || hsz == 124) {
        if (len < 14 + 40) return dn_fail(DN_ERR_FORMAT, "%s: truncated BMP header", name);
        w = (int32_t)rd_le32(b + 18);
        h = (int32_t)rd_le32(b + 22);
        bpp = rd_le16(b + 28);
        comp = rd_le32(b + 30);
    } else {
        return dn_fail(DN_ERR_FORMAT, "%s: corrupt BMP header (unknown header size %u)", name, hsz);
    }
    if (h < 0) h = -h;
    if (w <= 0 || h <= 0) return dn_fail(DN_ERR_FORMAT, "%s: invalid BMP dimensions %ldx%ld", name, w, h);
    if ((unsigned long long)w * (unsigned long long)h > DN_IMAGE_MAX_PIXELS)
        return dn_fail(DN_ERR_NOMEM, "%s: image declares %ldx%ld pixels, more than the limit of %u",
                       name, w, h, DN_IMAGE_MAX_PIXELS);
    if (bpp != 1 && bpp != 4 && bpp != 8 && bpp != 16 && bpp != 24 && bpp != 32)
        return dn_fail(DN_ERR_FORMAT, "%s: corrupt BMP header (%u bits per pixel)", name, bpp);
    if (comp != 0 && comp != 3)
        return dn_fail(DN_ERR_UNSUPPORTED, "%s: unsupported BMP compression %u", name, comp);
    unsigned long long stride = (((unsigned long long)w * bpp + 31) / 32) * 4;
    if (off > len || stride * (unsigned long long)h > len - off)
        return dn_fail(DN_ERR_FORMAT, "%s: truncated BMP (pixel data needs %llu bytes at offset %u, file has %zu)",
                       name, stride * (unsigned long long)h, off, len);
    return DN_OK;
}

/* Reads one PNM header integer; skips whitespace and '#' comments. */
static int pnm_int(const uint8_t *b, size_t len, size_t *pos, long *v) {
    size_t i = *pos;
    for (;;) {
        while (i < len && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r')) i++;
        if (i < len && b[i] == '#') {
            while (i < len && b[i] != '\n') i++;
            continue;
        }
        break;
    }
    if (i >= len || b[i] < '0' || b[i] > '9') return -1;
    long x = 0;
    while (i < len && b[i] >= '0' && b[i] <= '9') {
        x = x * 10 + (b[i++] - '0');
        if (x > 100000000L) return -1;
    }
    *v = x;
    *pos = i;
    return 0;
}

static dn_status check_pnm(const uint8_t *b, size_t len, const char *name) {
    if (b[1] != '5' && b[1] != '6')
        return dn_fail(DN_ERR_UNSUPPORTED, "%s: unsupported PNM variant P%c (only binary P5/P6)", name, b[1]);
    size_t pos = 2;
    long w, h, maxv;
    if (pnm_int(b, len, &pos, &w) || pnm_int(b, len, &pos, &h) || pnm_int(b, len, &pos, &maxv))
        return dn_fail(DN_ERR_FORMAT, "%s: corrupt PNM header", name);
    if (w <= 0 || h <= 0 || maxv <= 0 || maxv > 65535)
        return dn_fail(DN_ERR_FORMAT, "%s: corrupt PNM header (%ldx%ld, maxval %ld)", name, w, h, maxv);
    if ((unsigned long long)w * (unsigned long long)h > DN_IMAGE_MAX_PIXELS)
        return dn_fail(DN_ERR_NOMEM, "%s: image declares %ldx%ld pixels, more than the limit of %u",
                       name, w, h, DN_IMAGE_MAX_PIXELS);
    pos++; /* the single whitespace byte after maxval */
    unsigned long long need = (unsigned long long)w * h * (b[1] == '6' ? 3 : 1) * (maxv > 255 ? 2 : 1);
    if (pos > len || need > len - pos)
        return dn_fail(DN_ERR_FORMAT, "%s: truncated PNM (pixel data needs %llu bytes, file has %zu)",
                       name, need, len > pos ? len - pos : 0);
    return DN_OK;
}

static dn_status decode_stb(const uint8_t *buf, size_t len, const char *name, dn_image *out) {
    if (len > (size_t)0x7fffffff) return dn_fail(DN_ERR_NOMEM, "%s: file too large", name);
    int w, h, n;
    if (!stbi_info_from_memory(buf, (int)len, &w, &h, &n))
        return dn_fail(DN_ERR_FORMAT, "%s: corrupt image header (%s)", name, stbi_failure_reason());
    /* stb reports a top-down BMP's height as stored (negative) but decodes it upright */
    long lh = h < 0 && buf[0] == 'B' ? -(long)h : h;
    dn_status st = alloc_rgb(name, w, lh, out);
    if (st) return st;
    uint8_t *px = stbi_load_from_memory(buf, (int)len, &w, &h, &n, 3);
    if (!px) {
        dn_image_free(out);
        return dn_fail(DN_ERR_FORMAT, "%s: cannot decode image (%s)", name, stbi_failure_reason());
    }
    if (w != out->w || h != out->h) {
        stbi_image_free(px);
        dn_image_free(out);
        return dn_fail(DN_ERR_FORMAT, "%s: inconsistent image dimensions", name);
    }
    memcpy(out->data, px, (size_t)w * h * 3);
    stbi_image_free(px);
    return DN_OK;
}

/* ---------------------------------------------------------------- public */

dn_status dn_image_decode(const void *bytes, size_t len, const char *name, dn_image *out) {
    if (!out) return dn_fail(DN_ERR_ARG, "dn_image_decode: out is NULL");
    *out = (dn_image){0}; /* packed DN_RGB8, owned: a decoded image sets every field */
    if (!name) name = "<memory>";
    const uint8_t *b = bytes;
    if (!b || len == 0) return dn_fail(DN_ERR_FORMAT, "%s: empty file (0 bytes)", name);
    if (len >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF) return decode_jpeg(b, len, name, out);
    if (len >= 8 && !memcmp(b, "\x89PNG\r\n\x1a\n", 8)) return decode_png(b, len, name, out);
    if (len >= 2 && b[0] == 'B' && b[1] == 'M') {
        dn_status st = check_bmp(b, len, name);
        return st ? st : decode_stb(b, len, name, out);
    }
    if (len >= 2 && b[0] == 'P' && b[1] >= '1' && b[1] <= '7') {
        dn_status st = check_pnm(b, len, name);
        return st ? st : decode_stb(b, len, name, out);
    }
    return dn_fail(DN_ERR_FORMAT, "%s: not an image (unrecognised content; JPEG, PNG, BMP, PGM/PPM supported)",
                   name);
}

dn_status dn_image_load(const char *path, dn_image *out) {
    if (!out) return dn_fail(DN_ERR_ARG, "dn_image_load: out is NULL");
    *out = (dn_image){0}; /* packed DN_RGB8, owned: a decoded image sets every field */
    if (!path) return dn_fail(DN_ERR_ARG, "dn_image_load: path is NULL");
    uint8_t *buf;
    size_t len;
    dn_status st = dn_read_file(path, DN_IMAGE_MAX_FILE, &buf, &len);
    if (st) return st;
    st = dn_image_decode(buf, len, path, out);
    free(buf);
    return st;
}
