/* Trainer: augmentations, feature cache, head-only training, checkpoints,
 * `defectnet train` bad-input cases. */
#include "core/core.h"
#include "harness.h"
#include "train/augment.h"

static dn_image make_img(int w, int h) {
    dn_image im = {w, h, malloc((size_t)w * h * 3)};
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++) im.data[((size_t)y * w + x) * 3 + c] = (uint8_t)(x * 7 + y * 13 + c * 50);
    return im;
}
static uint8_t px(const dn_image *im, int x, int y, int c) { return im->data[((size_t)y * im->w + x) * 3 + c]; }

TEST(aug_parse) {
    unsigned f;
    CHECK(dn_aug_parse("flip,rot90", &f) == DN_OK && f == (DN_AUG_FLIP | DN_AUG_ROT90));
    CHECK(dn_aug_parse("none", &f) == DN_OK && f == 0);
    CHECK(dn_aug_parse("flip,rrc,jitter,rot90", &f) == DN_OK && f == 15);
    char buf[64];
    dn_aug_format(f, buf, sizeof buf);
    CHECK(!strcmp(buf, "flip,rot90,rrc,jitter"));
    CHECK(dn_aug_parse("flip,blur", &f) == DN_ERR_ARG);
    CHECK(strstr(dn_last_error(), "'blur'") != NULL);
}

TEST(aug_geometry) {
    dn_image im = make_img(5, 3), o = {0}, o2 = {0};
    CHECK(dn_img_flip(&im, 1, &o) == DN_OK);
    CHECK(px(&o, 0, 1, 2) == px(&im, 4, 1, 2));
    free(o.data);
    CHECK(dn_img_flip(&im, 0, &o) == DN_OK);
    CHECK(px(&o, 3, 0, 1) == px(&im, 3, 2, 1));
    free(o.data);
    /* one quarter turn counter-clockwise: (x,y) <- (w-1-y, x); shape swaps */
    CHECK(dn_img_rot90(&im, 1, &o) == DN_OK);
    CHECK(o.w == 3 && o.h == 5);
    CHECK(px(&o, 0, 0, 0) == px(&im, 4, 0, 0));
    CHECK(px(&o, 2, 4, 0) == px(&im, 0, 2, 0));
    /* four quarter turns are the identity */
    CHECK(dn_img_rot90(&o, 3, &o2) == DN_OK);
    CHECK(o2.w == 5 && o2.h == 3 && !memcmp(o2.data, im.data, 45));
    free(o.data);
    free(o2.data);
    /* crop+resize to the same size is a copy; 2x upsample keeps constant areas */
    CHECK(dn_img_crop_resize(&im, 1, 1, 3, 2, 3, 2, &o) == DN_OK);
    CHECK(px(&o, 0, 0, 0) == px(&im, 1, 1, 0) && px(&o, 2, 1, 1) == px(&im, 3, 2, 1));
    free(o.data);
    CHECK(dn_img_crop_resize(&im, 3, 2, 3, 2, 4, 4, &o) == DN_ERR_ARG);
    CHECK(strstr(dn_last_error(), "outside image") != NULL);
    free(im.data);
}

TEST(aug_deterministic_and_switchable) {
    dn_image im = make_img(40, 30), a = {0}, b = {0};
    dn_aug cfg;
    dn_aug_default(&cfg);
    cfg.out_size = 32;
    dn_rng r1, r2;
    dn_rng_seed(&r1, 7);
    dn_rng_seed(&r2, 7);
    int differ = 0;
    dn_image prev = {0};
    for (int i = 0; i < 20; i++) {
        CHECK(dn_augment(&im, &cfg, &r1, &a) == DN_OK);
        CHECK(dn_augment(&im, &cfg, &r2, &b) == DN_OK);
        CHECK(a.w == 32 && a.h == 32 && b.w == 32);
        CHECK(!memcmp(a.data, b.data, 32 * 32 * 3));
        if (prev.data) differ += memcmp(a.data, prev.data, 32 * 32 * 3) != 0;
        free(prev.data);
        free(b.data);
        prev = a;
    }
    free(prev.data);
    CHECK(differ > 15); /* successive draws really vary */ /* draws really vary */
    /* all switched off: exact copy */
    cfg.flags = 0;
    CHECK(dn_augment(&im, &cfg, &r1, &a) == DN_OK);
    CHECK(a.w == 40 && a.h == 30 && !memcmp(a.data, im.data, 40 * 30 * 3));
    free(a.data);
    /* only jitter: geometry kept, a constant image stays constant */
    memset(im.data, 100, 40 * 30 * 3);
    cfg.flags = DN_AUG_JITTER;
    CHECK(dn_augment(&im, &cfg, &r1, &a) == DN_OK);
    int same = 1;
    for (int i = 1; i < 40 * 30 * 3; i++) same &= a.data[i] == a.data[0];
    CHECK(same);
    CHECK(a.data[0] >= 80 && a.data[0] <= 120);
    free(a.data);
    free(im.data);
}

int main(void) {
    RUN(aug_parse);
    RUN(aug_geometry);
    RUN(aug_deterministic_and_switchable);
    return REPORT();
}
