/* defectnet download: fetch torchvision's ImageNet ResNet-18 weights, verified.
 *
 *   defectnet download [--out DIR] [--url URL --sha256 HEX]
 *
 * Default: https://download.pytorch.org/models/resnet18-f37072fd.pth into DIR
 * (default "."), checked against its full SHA-256 (see src/io/download.h); a
 * mismatch is refused and nothing is kept. An already present file with the right
 * digest is not downloaded again. --url needs --sha256 (no unverified downloads).
 * After download the file is loaded once to prove it is a usable model.
 * Exit: 0 file present and verified, 1 failure, 2 usage. */
#include "core/core.h"
#include "core/sha256.h"
#include "io/download.h"
#include "nn/model.h"
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int cmd_download(int argc, char **argv) {
    const char *dir = ".", *url = NULL, *sha = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("usage: defectnet download [--out DIR] [--url URL --sha256 HEX]\n");
            return 0;
        } else if (!strcmp(argv[i], "--out") && i + 1 < argc) dir = argv[++i];
        else if (!strcmp(argv[i], "--url") && i + 1 < argc) url = argv[++i];
        else if (!strcmp(argv[i], "--sha256") && i + 1 < argc) sha = argv[++i];
        else {
            fprintf(stderr, "defectnet download: unknown or incomplete argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (url && !sha) {
        fprintf(stderr, "defectnet download: --url needs --sha256 (refusing an unverified download)\n");
        return 2;
    }
    const char *name = DN_RESNET18_FILE;
    int is_default = !url;
    if (url) {
        const char *sl = strrchr(url, '/');
        name = sl && sl[1] ? sl + 1 : "download.pth";
    } else {
        url = DN_RESNET18_URL;
        sha = DN_RESNET18_SHA256;
    }
    char out[4096];
    snprintf(out, sizeof out, "%s/%s", dir, name);
    char have[65];
    if (access(out, F_OK) == 0 && dn_sha256_file(out, have) == DN_OK && !strcmp(have, sha)) {
        printf("%s: already present, sha256 %s verified\n", out, have);
        return 0;
    }
    uint64_t limit = is_default ? (uint64_t)DN_RESNET18_SIZE : ((uint64_t)8 << 30);
    fprintf(stderr, "downloading %s\n", url);
    if (dn_download(url, out, sha, limit, !isatty(2))) {
        fprintf(stderr, "defectnet download: %s\n", dn_last_error());
        return 1;
    }
    dn_model *m;
    if (dn_model_load(out, &m)) {
        fprintf(stderr, "defectnet download: %s: verified digest but not loadable: %s\n", out, dn_last_error());
        return 1;
    }
    printf("%s: sha256 %s verified; %s, %d classes\n", out, sha, m->arch, m->num_classes);
    dn_model_free(m);
    return 0;
}
