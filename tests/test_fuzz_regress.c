/* Replays every committed fuzz input (every file in tests/fuzz/corpus/TARGET/: hand-written
 * seeds and inputs that once crashed, leaked or broke the error contract) through
 * the same entry points the libFuzzer drivers use (tests/fuzz/targets.h). Under
 * `make SAN=1 test` ASan/UBSan/LSan watch every replay; in any build each input
 * must keep the contract checked by the target (one-line error naming the input,
 * consistent results). Run from the repository root, like the other tests. */
#include "harness.h"
#include "fuzz/targets.h"
#include <dirent.h>

#define CORPUS "tests/fuzz/corpus/"

static int name_cmp(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Replays the folder of one target; the folder must exist and hold >= 1 input. */
static void replay(const char *target, fz_fn fn) {
    char dir[256];
    snprintf(dir, sizeof dir, CORPUS "%s", target);
    DIR *d = opendir(dir);
    CHECK_MSG(d != NULL, "%s: cannot open the committed corpus", dir);
    if (!d) return;
    char *names[512];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 512)
        if (e->d_name[0] != '.') names[n++] = strdup(e->d_name);
    closedir(d);
    qsort(names, (size_t)n, sizeof *names, name_cmp);
    CHECK_MSG(n > 0, "%s: no inputs", dir);
    for (int i = 0; i < n; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        uint8_t *buf = NULL;
        size_t len = 0;
        dn_status st = dn_read_file(path, (size_t)64 << 20, &buf, &len);
        CHECK_MSG(st == DN_OK, "%s: %s", path, dn_last_error());
        if (!st) {
            dn_clear_error();
            int rc = fn(buf, len);
            CHECK_MSG(rc == 0, "%s: contract broken (%d): %s", path, rc, dn_last_error());
        }
        free(buf);
        free(names[i]);
    }
}

TEST(fuzz_regress_image) { replay("image", fz_image); }
TEST(fuzz_regress_zip) { replay("zip", fz_zip); }
TEST(fuzz_regress_pickle) { replay("pickle", fz_pickle); }
TEST(fuzz_regress_pth) { replay("pth", fz_pth); }
TEST(fuzz_regress_safetensors) { replay("safetensors", fz_safetensors); }
TEST(fuzz_regress_model_meta) { replay("model_meta", fz_model_meta); }
TEST(fuzz_regress_rules) { replay("rules", fz_rules); }
TEST(fuzz_regress_json) { replay("json", fz_json); }
TEST(fuzz_regress_manifest) { replay("manifest", fz_manifest); }
TEST(fuzz_regress_names) { replay("names", fz_names); }
TEST(fuzz_regress_multipart) { replay("multipart", fz_multipart); }
TEST(fuzz_regress_http) { replay("http", fz_http); }
TEST(fuzz_regress_mqtt) { replay("mqtt", fz_mqtt); }
TEST(fuzz_regress_mqtt_packet) { replay("mqtt_packet", fz_mqtt_packet); }

/* The contract checker itself must reject what it is meant to reject, or the
 * replays above could not fail on a broken message. */
TEST(fuzz_contract_checker) {
    dn_fail(DN_ERR_FORMAT, "%s: bad", FZ_LABEL);
    CHECK(fz_check_error(1, FZ_LABEL) == 0);
    dn_fail(DN_ERR_FORMAT, "two\nlines %s", FZ_LABEL); /* dn_fail folds it to one line */
    CHECK(fz_check_error(1, FZ_LABEL) == 0 && !strchr(dn_last_error(), '\n'));
    dn_fail(DN_ERR_FORMAT, "something: bad");
    CHECK(fz_check_error(1, FZ_LABEL) == -2);
    CHECK(fz_check_error(0, NULL) == 0);
    dn_clear_error();
    CHECK(fz_check_error(0, NULL) == -1);
}

int main(void) {
    RUN(fuzz_contract_checker);
    RUN(fuzz_regress_image);
    RUN(fuzz_regress_zip);
    RUN(fuzz_regress_pickle);
    RUN(fuzz_regress_pth);
    RUN(fuzz_regress_safetensors);
    RUN(fuzz_regress_model_meta);
    RUN(fuzz_regress_rules);
    RUN(fuzz_regress_json);
    RUN(fuzz_regress_manifest);
    RUN(fuzz_regress_names);
    RUN(fuzz_regress_multipart);
    RUN(fuzz_regress_http);
    RUN(fuzz_regress_mqtt);
    RUN(fuzz_regress_mqtt_packet);
    fz_cleanup();
    fz_model_release();
    return REPORT();
}
