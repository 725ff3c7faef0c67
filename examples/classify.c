/* Classify image files with a defectnet model through the public C API only.
 *   classify MODEL IMAGE...
 * Prints "IMAGE CLASS CONFIDENCE [uncertain]" per image; exit 0 if every image
 * was classified, 1 if some could not be read, 2 on a bad model or usage.
 * Build against an installed library: cc classify.c $(pkg-config --cflags --libs defectnet) */
#include <defectnet.h>
#include <stdio.h>

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL IMAGE...\n", argv[0]);
        return 2;
    }
    printf("defectnet %s\n", dn_version());
    dn_model *m = NULL;
    dn_status st = dn_model_load(argv[1], &m);
    if (st != DN_OK) {
        fprintf(stderr, "classify: %s (%s)\n", dn_last_error(), dn_status_str(st));
        return 2;
    }
    printf("model %s: %s, %d classes, sha256 %.12s\n", argv[1], dn_model_arch(m), dn_model_num_classes(m),
           dn_model_sha256(m));
    dn_session *s = NULL;
    if ((st = dn_session_create(m, NULL, &s)) != DN_OK) {
        fprintf(stderr, "classify: %s\n", dn_last_error());
        dn_model_free(m);
        return 2;
    }
    int bad = 0;
    for (int i = 2; i < argc; i++) {
        dn_image img = {0};
        dn_prediction p;
        if (dn_image_load(argv[i], &img) != DN_OK || dn_session_classify(s, &img, &p, NULL) != DN_OK) {
            fprintf(stderr, "classify: %s\n", dn_last_error());
            bad++;
        } else {
            printf("%s %s %.4f%s\n", argv[i], dn_model_class_name(m, p.cls), p.confidence, p.uncertain ? " uncertain" : "");
        }
        dn_image_free(&img);
    }
    dn_session_free(s);
    dn_model_free(m);
    return bad ? 1 : 0;
}
