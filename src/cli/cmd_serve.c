/* `defectnet serve`: runs the HTTP service until SIGTERM/SIGINT; SIGHUP reloads
 * the model and rules. Signals are blocked in every thread and taken synchronously
 * by the main thread with sigtimedwait, so no work happens in a signal handler. */
#include "core/core.h"
#include "serve/http.h"
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void serve_usage(FILE *f) {
    fprintf(f,
            "usage: defectnet serve --model M [--db sqlite:FILE | postgres://...] [--rules FILE]\n"
            "         [--watch DIR [--move-processed] [--watch-line L] [--watch-station S] [--watch-camera C]]\n"
            "         [--listen 127.0.0.1:8080] [--workers N] [--queue N]\n"
            "         [--token-file F] [--store-images DIR] [--dry-run] [--max-body BYTES]\n"
            "         [--body-timeout S] [--idle-timeout S] [--session-threads N] [--batch N] [--ok-classes a,b]\n"
            "         [--quiet]\n"
            "  --db defaults to sqlite:defectnet.db. --listen binds 127.0.0.1 unless told otherwise.\n"
            "  SIGHUP or POST /v1/admin/reload reloads model + rules; SIGTERM/SIGINT shut down gracefully.\n"
            "  See docs/serve.md for the endpoints.\n");
}

static int parse_int(const char *opt, const char *v, long lo, long hi, long *out) {
    char *e;
    errno = 0;
    long x = strtol(v, &e, 10);
    if (errno || e == v || *e || x < lo || x > hi) {
        fprintf(stderr, "defectnet serve: %s '%s': expected an integer in %ld..%ld\n", opt, v, lo, hi);
        return -1;
    }
    *out = x;
    return 0;
}

/* Reads the token file: first line, surrounding whitespace removed. Caller frees. */
static char *read_token(const char *path) {
    uint8_t *d = NULL;
    size_t n = 0;
    if (dn_read_file(path, 4096, &d, &n)) {
        fprintf(stderr, "defectnet serve: --token-file: %s\n", dn_last_error());
        return NULL;
    }
    char *t = malloc(n + 1);
    if (!t) { free(d); return NULL; }
    memcpy(t, d, n);
    t[n] = 0;
    free(d);
    char *nl = strpbrk(t, "\r\n");
    if (nl) *nl = 0;
    char *b = t;
    while (*b == ' ' || *b == '\t') b++;
    size_t l = strlen(b);
    while (l && (b[l - 1] == ' ' || b[l - 1] == '\t')) b[--l] = 0;
    if (!l) {
        fprintf(stderr, "defectnet serve: %s: token file is empty\n", path);
        free(t);
        return NULL;
    }
    memmove(t, b, l + 1);
    return t;
}

int cmd_serve(int argc, char **argv) {
    dn_server_config c = {0};
    const char *token_file = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        long v = 0;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { serve_usage(stdout); return 0; }
        if (!strcmp(a, "--dry-run")) { c.dry_run = 1; continue; }
        if (!strcmp(a, "--move-processed")) { c.move_processed = 1; continue; }
        if (!strcmp(a, "--quiet")) { c.quiet = 1; continue; }
        if (i + 1 >= argc) {
            fprintf(stderr, "defectnet serve: %s: unknown option or missing value\n", a);
            serve_usage(stderr);
            return 2;
        }
        const char *val = argv[++i];
        if (!strcmp(a, "--model")) c.model_path = val;
        else if (!strcmp(a, "--db")) c.db_url = val;
        else if (!strcmp(a, "--rules")) c.rules_path = val;
        else if (!strcmp(a, "--watch")) c.watch_dir = val;
        else if (!strcmp(a, "--watch-line")) c.watch_line = val;
        else if (!strcmp(a, "--watch-station")) c.watch_station = val;
        else if (!strcmp(a, "--watch-camera")) c.watch_camera = val;
        else if (!strcmp(a, "--listen")) c.listen = val;
        else if (!strcmp(a, "--token-file")) token_file = val;
        else if (!strcmp(a, "--store-images")) c.store_images = val;
        else if (!strcmp(a, "--ok-classes")) c.ok_classes = val;
        else if (!strcmp(a, "--workers")) { if (parse_int(a, val, 1, 256, &v)) return 2; c.workers = (int)v; }
        else if (!strcmp(a, "--queue")) { if (parse_int(a, val, 1, 1000000, &v)) return 2; c.queue = (int)v; }
        else if (!strcmp(a, "--batch")) { if (parse_int(a, val, 1, DN_SERVE_MAX_BATCH, &v)) return 2; c.batch = (int)v; }
        else if (!strcmp(a, "--session-threads")) { if (parse_int(a, val, 1, 256, &v)) return 2; c.session_threads = (int)v; }
        else if (!strcmp(a, "--max-body")) { if (parse_int(a, val, 1024, 1L << 30, &v)) return 2; c.max_body = (size_t)v; }
        else if (!strcmp(a, "--body-timeout")) { if (parse_int(a, val, 1, 3600, &v)) return 2; c.body_timeout = (int)v; }
        else if (!strcmp(a, "--idle-timeout")) { if (parse_int(a, val, 1, 3600, &v)) return 2; c.idle_timeout = (int)v; }
        else {
            fprintf(stderr, "defectnet serve: unknown option %s\n", a);
            serve_usage(stderr);
            return 2;
        }
    }
    if (!c.model_path) {
        fprintf(stderr, "defectnet serve: --model is required\n");
        serve_usage(stderr);
        return 2;
    }
    if (c.move_processed && !c.watch_dir) {
        fprintf(stderr, "defectnet serve: --move-processed needs --watch DIR\n");
        return 2;
    }
    char *token = NULL;
    if (token_file && !(token = read_token(token_file))) return 2;
    c.token = token;

    /* Block the signals before any thread exists so all threads inherit the mask. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    dn_server *s = NULL;
    if (dn_server_start(&c, &s)) {
        fprintf(stderr, "defectnet serve: %s\n", dn_last_error());
        free(token);
        return 1;
    }
    /* one line on stdout with the bound port, for scripts that use --listen HOST:0 */
    printf("listening %d\n", dn_server_port(s));
    fflush(stdout);
    for (;;) {
        int sig = sigwaitinfo(&set, NULL);
        if (sig < 0) {
            if (errno == EINTR) continue;
            break;
        }
        if (sig == SIGHUP) {
            if (dn_server_reload(s)) fprintf(stderr, "defectnet serve: %s\n", dn_last_error());
            continue;
        }
        fprintf(stderr, "defectnet serve: %s received, finishing in-flight requests\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
        break;
    }
    dn_server_stop(s);
    free(token);
    fprintf(stderr, "defectnet serve: stopped\n");
    return 0;
}
