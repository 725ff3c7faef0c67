/* A camera loop on the public C API: frames arrive in the camera's own buffer
 * (here BGR8 rows with padding, as many industrial cameras deliver them, filled
 * by a stand-in for the camera SDK) and are classified in place with
 * dn_image_wrap (no copy, no conversion), in batches of up to 4 per forward.
 *   camera_loop MODEL [FRAMES]
 * The model may also come from memory (firmware image): this example reads the
 * file itself and uses dn_model_load_memory. Exit 0 ok, 2 bad model/usage. */
#include <defectnet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { W = 320, H = 240, PAD = 64, STRIDE = W * 3 + PAD, BATCH = 4 };

/* stand-in for the camera SDK: a textured part, a scratch on every third frame */
static void grab_frame(uint8_t *buf, int n) {
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            uint8_t v = (uint8_t)(120 + ((x * 7 + y * 13 + n * 5) % 23));
            if (n % 3 == 0 && abs(x - y - 40) < 2) v = 250;
            uint8_t *p = buf + (size_t)y * STRIDE + 3 * x;
            p[0] = v; p[1] = v; p[2] = (uint8_t)(v - 10); /* B, G, R */
        }
}

static void *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *b = n > 0 ? malloc((size_t)n) : NULL;
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) { free(b); b = NULL; }
    fclose(f);
    *len = b ? (size_t)n : 0;
    return b;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL [FRAMES]\n", argv[0]);
        return 2;
    }
    int frames = argc > 2 ? atoi(argv[2]) : 8;
    size_t len = 0;
    void *bytes = read_all(argv[1], &len);
    if (!bytes) { fprintf(stderr, "camera_loop: %s: cannot read\n", argv[1]); return 2; }
    dn_model *m = NULL;
    dn_status st = dn_model_load_memory(bytes, len, argv[1], &m);
    free(bytes);
    if (st != DN_OK) { fprintf(stderr, "camera_loop: %s\n", dn_last_error()); return 2; }
    const dn_preproc *pp = dn_model_preproc(m);
    printf("model: %d classes, input %dx%d, temperature %.3f, threshold %.3f\n", dn_model_num_classes(m), pp->crop,
           pp->crop, dn_model_temperature(m), dn_model_threshold(m));
    dn_session_options o;
    dn_session_options_default(&o);
    o.max_batch = BATCH;
    o.threads = 2;
    dn_session *s = NULL;
    if (dn_session_create(m, &o, &s) != DN_OK) { fprintf(stderr, "camera_loop: %s\n", dn_last_error()); dn_model_free(m); return 2; }
    uint8_t *ring = malloc((size_t)BATCH * STRIDE * H); /* the camera's frame buffers */
    dn_image imgs[BATCH];
    dn_prediction preds[BATCH];
    int done = 0, rc = 0;
    while (ring && done < frames) {
        int k = frames - done < BATCH ? frames - done : BATCH;
        for (int j = 0; j < k; j++) {
            grab_frame(ring + (size_t)j * STRIDE * H, done + j);
            dn_image_wrap(ring + (size_t)j * STRIDE * H, W, H, STRIDE, DN_BGR8, &imgs[j]);
        }
        if (dn_session_classify_images(s, imgs, k, preds, NULL) != DN_OK) {
            fprintf(stderr, "camera_loop: %s\n", dn_last_error());
            rc = 2;
            break;
        }
        for (int j = 0; j < k; j++)
            printf("frame %d: %s %.3f%s\n", done + j, dn_model_class_name(m, preds[j].cls), preds[j].confidence,
                   preds[j].uncertain ? " (uncertain: to review)" : "");
        done += k;
    }
    printf("%d frames classified in place\n", done);
    free(ring);
    dn_session_free(s);
    dn_model_free(m);
    return rc;
}
