/* Verified downloads (libcurl). The file is streamed into a temporary file next
 * to the destination while its SHA-256 is computed; only when the digest equals
 * the expected one is it renamed into place, otherwise it is deleted and the
 * download refused. Protocols allowed: https, http, file (file:// is what the
 * tests use; no test touches the network).
 *
 * torchvision's ResNet-18 (IMAGENET1K_V1): torchvision publishes the first 8 hex
 * digits of the SHA-256 in the file name (f37072fd); the full digest below is the
 * one recorded for that exact file (46,830,571 bytes) by several independent
 * public projects, and it starts with the published prefix. */
#ifndef DN_DOWNLOAD_H
#define DN_DOWNLOAD_H
#include "defectnet.h"
#include <stdint.h>

#define DN_RESNET18_URL "https://download.pytorch.org/models/resnet18-f37072fd.pth"
#define DN_RESNET18_FILE "resnet18-f37072fd.pth"
#define DN_RESNET18_SHA256 "f37072fd47e89c5e827621c5baffa7500819f7896bbacec160b1a16c560e07ec"
#define DN_RESNET18_SIZE 46830571u

/* Downloads url to out_path if its sha256 equals expected_sha256 (64 lower-case
 * hex digits, required). max_bytes > 0 aborts larger transfers. quiet = 0 prints
 * progress to stderr. */
dn_status dn_download(const char *url, const char *out_path, const char *expected_sha256, uint64_t max_bytes, int quiet);
#endif
