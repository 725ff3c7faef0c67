/* defectnet download: fetch torchvision's ImageNet ResNet-18 weights, verified.
 *
 *   defectnet download [--out DIR] [--url URL --sha256 HEX]
 *
 * Default: https://download.pytorch.org/models/resnet18-f37072fd.pth into DIR
 * (default "."), checked against its full SHA-256 (see src/io/download.h); a
 * mismatch is refused and nothing is kept. An already present file with the right
 * digest is not downloaded again. --url needs --sha256 (no unverified downloads).
 * After download the file is loaded once to prove it is a usable model.
 * Exit: 0 file present and verified, 2 usage/download/verification error, 3 internal. */
#include "cli/args.h"
#include "core/core.h"
#include "core/progress.h"
#include "core/sha256.h"
#include "io/download.h"
#include "nn/model.h"
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *f) {
    fprintf(f, "usage: defectnet download [-o|--out DIR] [--url URL --sha256 HEX]\n"
               "  Fetches torchvision's ImageNet ResNet-18 weights (resnet18-f37072fd.pth) into DIR\n"
               "  (default .), verified against their SHA-256; --url needs --sha256.\n" DN_EXIT_HELP);
}

int cmd_download(int argc, char **argv) {
    const char *dir = ".", *url = NULL, *sha = NULL;
    enum { O_URL = 256, O_SHA };
    static const dn_opt opts[] = {{"out", 'o', DN_ARG_REQ, NULL}, {"url", O_URL, DN_ARG_REQ, NULL}, {"sha256", O_SHA, DN_ARG_REQ, NULL}, {0}};
    dn_args a;
    dn_args_init(&a, "download", argc, argv, opts);
    for (int c; (c = dn_args_next(&a)) != -1;) {
        switch (c) {
        case 'h': usage(stdout); return 0;
        case 'o': dir = a.val; break;
        case O_URL: url = a.val; break;
        case O_SHA: sha = a.val; break;
        default: return DN_EXIT_USAGE; /* already reported in one line */
        }
    }
    if (dn_args_npos(&a)) return dn_usage_error("download", "unexpected argument '%s'", dn_args_pos(&a, 0));
    if (url && !sha) {
        return dn_usage_error("download", "--url needs --sha256 (refusing an unverified download)");
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
    dn_status st = dn_download(url, out, sha, limit, !dn_progress_enabled());
    if (st) return dn_cli_fail("download", st);
    dn_model *m;
    if ((st = dn_model_load(out, &m))) {
        fprintf(stderr, "defectnet download: %s: verified digest but not loadable: %s\n", out, dn_last_error());
        return dn_exit_code(st);
    }
    printf("%s: sha256 %s verified; %s, %d classes\n", out, sha, m->arch, m->num_classes);
    dn_model_free(m);
    return 0;
}
