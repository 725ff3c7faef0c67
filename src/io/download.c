/* Verified download with libcurl (see download.h). */
#include "io/download.h"
#include "core/core.h"
#include "core/sha256.h"
#include "io/safetensors.h"
#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    FILE *f;
    dn_sha256_ctx sha;
    uint64_t got, max;
    int write_error, too_big;
} sink;

static size_t on_data(char *p, size_t sz, size_t n, void *ud) {
    sink *s = ud;
    size_t len = sz * n;
    if (s->max && s->got + len > s->max) { s->too_big = 1; return 0; }
    if (fwrite(p, 1, len, s->f) != len) { s->write_error = 1; return 0; }
    dn_sha256_update(&s->sha, p, len);
    s->got += len;
    return len;
}

static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow) {
    (void)ultotal; (void)ulnow;
    static double last;
    double t = dn_now();
    if (ud && dltotal > 0 && t - last > 0.5) {
        fprintf(stderr, "\r%s: %.1f / %.1f MB", (const char *)ud, dlnow / 1e6, dltotal / 1e6);
        last = t;
    }
    return 0;
}

static int valid_hex64(const char *s) {
    if (!s || strlen(s) != 64) return 0;
    for (int i = 0; i < 64; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
    return 1;
}

dn_status dn_download(const char *url, const char *out_path, const char *expected, uint64_t max_bytes, int quiet) {
    if (!url || !out_path) return dn_fail(DN_ERR_ARG, "download: NULL url or output path");
    if (!valid_hex64(expected))
        return dn_fail(DN_ERR_ARG, "%s: expected sha256 must be 64 lower-case hex digits (refusing unverified download)", url);
    char *tmp;
    int fd;
    dn_status st0 = dn_tmpfile_beside(out_path, "part", &tmp, &fd);
    if (st0) return st0;
    sink s;
    memset(&s, 0, sizeof s);
    s.f = fdopen(fd, "wb");
    s.max = max_bytes;
    dn_sha256_init(&s.sha);
    dn_status st = DN_OK;
    CURL *c = NULL;
    int global = 0;
    if (!s.f) { close(fd); st = dn_fail(DN_ERR_IO, "%s: %s", tmp, strerror(errno)); goto done; }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) { st = dn_fail(DN_ERR_NET, "%s: libcurl init failed", url); goto done; }
    global = 1; /* reference-counted by libcurl; released below */
    c = curl_easy_init();
    if (!c) { st = dn_fail(DN_ERR_NET, "%s: libcurl init failed", url); goto done; }
    char errbuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https,http,file");
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 5L);
    curl_easy_setopt(c, CURLOPT_FAILONERROR, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 30L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1024L);  /* abort if < 1 KB/s ... */
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 60L);     /* ... for a minute */
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &s);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "defectnet/" DN_VERSION);
    if (!quiet) {
        curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
        curl_easy_setopt(c, CURLOPT_XFERINFODATA, (void *)out_path);
    }
    CURLcode rc = curl_easy_perform(c);
    if (!quiet) fprintf(stderr, "\n");
    if (s.too_big) { st = dn_fail(DN_ERR_NET, "%s: download exceeds %llu bytes, aborted", url, (unsigned long long)max_bytes); goto done; }
    if (s.write_error) { st = dn_fail(DN_ERR_IO, "%s: write failed: %s", tmp, strerror(errno)); goto done; }
    if (rc != CURLE_OK) { st = dn_fail(DN_ERR_NET, "%s: download failed: %s", url, errbuf[0] ? errbuf : curl_easy_strerror(rc)); goto done; }
    if (fflush(s.f) != 0 || fsync(fileno(s.f)) != 0) { st = dn_fail(DN_ERR_IO, "%s: write failed: %s", tmp, strerror(errno)); goto done; }
    uint8_t d[32];
    char hex[65];
    dn_sha256_final(&s.sha, d);
    dn_sha256_hex(d, hex);
    if (strcmp(hex, expected)) {
        st = dn_fail(DN_ERR_NET, "%s: sha256 mismatch (got %s, expected %s); file refused", url, hex, expected);
        goto done;
    }
    if (fclose(s.f) != 0) { s.f = NULL; st = dn_fail(DN_ERR_IO, "%s: write failed: %s", tmp, strerror(errno)); goto done; }
    s.f = NULL;
    if (chmod(tmp, 0644) != 0 || rename(tmp, out_path) != 0) { st = dn_fail(DN_ERR_IO, "%s: cannot move into place: %s", out_path, strerror(errno)); goto done; }
done:
    if (c) curl_easy_cleanup(c);
    if (global) curl_global_cleanup();
    if (s.f) fclose(s.f);
    if (st) unlink(tmp);
    if (s.sha.md) { /* a failed download never reached the final digest: release its context */
        uint8_t junk[32];
        dn_sha256_final(&s.sha, junk);
    }
    free(tmp);
    return st;
}
