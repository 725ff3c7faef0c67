/* inotify folder watcher (see watch.h). One thread: it scans, then waits on the
 * inotify descriptor and a stop pipe with poll(). Classification blocks the thread
 * in dn_pipeline_classify (waiting for queue space instead of being refused). */
#include "serve/watch.h"
#include "core/core.h"
#include "core/sha256.h"
#include "serve/pipeline.h"
#include "serve/metrics.h"
#include "serve/multipart.h"
#include "serve/store.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define WATCH_MAX_FILE (256u << 20)
#define WATCH_SETTLE_S 2.0

struct dn_watch {
    dn_pipeline *p;
    char dir[PATH_MAX];
    int dfd;                        /* the watched directory, opened once (moves are relative to it) */
    int move;
    char *line, *station, *camera;
    char **pending;                 /* scanned files not yet settled (names) */
    size_t npending, cpending;
    int ifd, stop_pipe[2];
    pthread_t th;
    atomic_long handled;
};

long dn_watch_handled(dn_watch *w) { return atomic_load(&w->handled); }

static int ignored_name(const char *n) {
    size_t l = strlen(n);
    if (!l || n[0] == '.') return 1;
    if (n[l - 1] == '~') return 1;
    if (l > 4 && !strcmp(n + l - 4, ".tmp")) return 1;
    if (l > 5 && !strcmp(n + l - 5, ".part")) return 1;
    return 0;
}

/* Directory-safe version of a class name. */
static void safe_name(const char *in, char *out, size_t n) {
    size_t k = 0;
    for (const char *p = in; *p && k + 1 < n; p++) {
        out[k] = (*p == '/' || *p == '\\' || (*p == '.' && k == 0)) ? '_' : *p;
        k++;
    }
    out[k] = 0;
    if (!k) snprintf(out, n, "_");
}

/* The subdirectory name of parent (created if missing), opened without following a
 * symbolic link: processed/ or rejected/ replaced by a link to elsewhere is refused
 * (ELOOP/ENOTDIR) instead of receiving the files. -1 with errno set on failure. */
static int open_subdir(int parent, const char *name) {
    if (mkdirat(parent, name, 0755) && errno != EEXIST) return -1;
    return openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
}

/* Moves DIR/name into DIR/sub1[/sub2]/ (an existing name gets "-<id>" appended), by
 * directory descriptors and renameat, so no symbolic link on the way is followed. */
static void move_to(dn_watch *w, const char *name, const char *sub1, const char *sub2, int64_t id) {
    int d1 = open_subdir(w->dfd, sub1), d2 = -1, dst = d1, moved = 0;
    char sn[128] = "", dn[300];
    if (d1 >= 0 && sub2) {
        safe_name(sub2, sn, sizeof sn);
        dst = d2 = open_subdir(d1, sn);
    }
    if (dst >= 0) {
        struct stat st;
        snprintf(dn, sizeof dn, "%.255s", name);
        if (fstatat(dst, dn, &st, AT_SYMLINK_NOFOLLOW) == 0) snprintf(dn, sizeof dn, "%.255s-%lld", name, (long long)id);
        moved = renameat(w->dfd, name, dst, dn) == 0;
    }
    int e = errno;
    if (!moved)
        dn_pipeline_log(w->p, "watch: cannot move %s/%s into %s%s%s/: %s", w->dir, name, sub1, sn[0] ? "/" : "", sn,
                        e == ELOOP || e == ENOTDIR ? "it is a symbolic link or not a directory (refused)" : strerror(e));
    if (d2 >= 0) close(d2);
    if (d1 >= 0) close(d1);
}

static void handle_file(dn_watch *w, const char *name) {
    if (ignored_name(name)) return;
    char path[PATH_MAX + 256];
    snprintf(path, sizeof path, "%s/%s", w->dir, name);
    struct stat st;
    if (lstat(path, &st) || !S_ISREG(st.st_mode)) return;
    dn_metrics *m = dn_pipeline_metrics(w->p);
    dn_store *store = dn_pipeline_store(w->p);
    if (!dn_utf8_printable(name)) {
        /* it would reach the store, JSON answers, MQTT topics and logs: not classified */
        dn_pipeline_log(w->p, "watch: %s: file name is not printable UTF-8, skipped%s", path,
                        w->move ? " (moved to rejected/)" : "");
        dn_metrics_watch(m, "bad_name");
        if (w->move) move_to(w, name, "rejected", NULL, 0);
        atomic_fetch_add(&w->handled, 1);
        return;
    }
    uint8_t *data = NULL;
    size_t len = 0;
    if (dn_read_file(path, WATCH_MAX_FILE, &data, &len)) {
        dn_pipeline_log(w->p, "watch: %s", dn_last_error());
        dn_metrics_watch(m, "unreadable");
        atomic_fetch_add(&w->handled, 1);
        return;
    }
    uint8_t dg[32];
    char sha[65];
    dn_sha256(data, len, dg);
    dn_sha256_hex(dg, sha);
    int64_t id = 0;
    if (dn_store_find_source(store, path, sha, &id) == DN_OK && id > 0) {
        dn_metrics_watch(m, "already_logged");
        if (w->move) {
            dn_pred_row row;
            int found = 0;
            if (dn_store_get(store, id, &row, &found) == DN_OK && found) {
                move_to(w, name, "processed", row.cls, id);
                dn_pred_row_clear(&row);
            }
        }
        free(data);
        atomic_fetch_add(&w->handled, 1);
        return;
    }
    dn_classify_req rq = {0};
    rq.data = data;
    rq.len = len;
    rq.source = "watch";
    rq.line = w->line;
    rq.station = w->station;
    rq.camera = w->camera;
    rq.source_path = path;
    dn_classify_res res;
    if (dn_pipeline_classify(w->p, &rq, &res)) {
        free(data);
        return; /* shutting down: the file stays and is picked up at the next start */
    }
    free(data);
    if (res.http_code == 200) {
        dn_metrics_watch(m, "classified");
        dn_pipeline_log(w->p, "watch: %s -> %s (id %lld)", path, res.cls, (long long)res.id);
        if (w->move) move_to(w, name, "processed", res.cls, res.id);
    } else if (res.http_code >= 400 && res.http_code < 500) {
        dn_metrics_watch(m, "rejected");
        dn_pipeline_log(w->p, "watch: %s rejected: %.300s", path, res.json ? res.json : "");
        if (w->move) move_to(w, name, "rejected", NULL, 0);
    } else {
        /* store/server trouble: leave the file for the next scan */
        dn_metrics_watch(m, "failed");
        dn_pipeline_log(w->p, "watch: %s failed: %.300s", path, res.json ? res.json : "");
    }
    free(res.json);
    atomic_fetch_add(&w->handled, 1);
}

/* A file found by a scan (not by an event) may still be open by its writer. Its
 * IN_CLOSE_WRITE will come (the watch exists before any scan), but a file closed
 * just before the watch was added would never produce one; so scanned files
 * modified in the last WATCH_SETTLE_S seconds are deferred and looked at again once
 * unchanged for that long. Handling is idempotent (path + sha256 in the store). */
static int is_settled(dn_watch *w, const char *name) {
    char path[PATH_MAX + 256];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", w->dir, name);
    if (lstat(path, &st)) return 1; /* let handle_file decide */
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    double age = (double)(now.tv_sec - st.st_mtim.tv_sec) + 1e-9 * (double)(now.tv_nsec - st.st_mtim.tv_nsec);
    return age >= WATCH_SETTLE_S;
}

static void defer(dn_watch *w, const char *name) {
    for (size_t i = 0; i < w->npending; i++)
        if (!strcmp(w->pending[i], name)) return;
    if (w->npending == w->cpending) {
        size_t nc = w->cpending ? w->cpending * 2 : 16;
        char **np = dn_realloc(w->pending, nc * sizeof *np);
        if (!np) return; /* its close event (if any) still comes */
        w->pending = np;
        w->cpending = nc;
    }
    char *d = dn_strdup(name);
    if (d) w->pending[w->npending++] = d;
}

static void scan(dn_watch *w) {
    DIR *d = opendir(w->dir);
    if (!d) return;
    /* collect first: handling renames entries out of the directory */
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (ignored_name(de->d_name)) continue;
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 64;
            char **nn = dn_realloc(names, nc * sizeof *nn);
            if (!nn) break;
            names = nn;
            cap = nc;
        }
        if (!(names[n] = dn_strdup(de->d_name))) break;
        n++;
    }
    closedir(d);
    for (size_t i = 0; i < n; i++) {
        if (is_settled(w, names[i])) handle_file(w, names[i]);
        else defer(w, names[i]); /* may still be being written */
        free(names[i]);
    }
    free(names);
}

/* Handles deferred files that have settled; drops the ones that are gone. */
static void run_pending(dn_watch *w) {
    size_t k = 0;
    for (size_t i = 0; i < w->npending; i++) {
        char *nm = w->pending[i];
        char path[PATH_MAX + 256];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", w->dir, nm);
        if (lstat(path, &st)) { free(nm); continue; } /* handled through an event, or removed */
        if (!is_settled(w, nm)) { w->pending[k++] = nm; continue; }
        handle_file(w, nm);
        free(nm);
    }
    w->npending = k;
}

static void *watch_main(void *arg) {
    dn_watch *w = arg;
    scan(w);
    char buf[16384] __attribute__((aligned(__alignof__(struct inotify_event))));
    for (;;) {
        struct pollfd p[2] = {{w->ifd, POLLIN, 0}, {w->stop_pipe[0], POLLIN, 0}};
        int r = poll(p, 2, w->npending ? 250 : -1);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0 || p[1].revents) break;
        if (w->npending) run_pending(w);
        if (!(p[0].revents & POLLIN)) continue;
        ssize_t len = read(w->ifd, buf, sizeof buf);
        if (len <= 0) continue;
        for (char *q = buf; q < buf + len;) {
            struct inotify_event *ev = (struct inotify_event *)q;
            q += sizeof *ev + ev->len;
            if (ev->mask & IN_Q_OVERFLOW) { scan(w); continue; }
            if (ev->mask & IN_IGNORED) continue;
            if (ev->len && !(ev->mask & IN_ISDIR)) handle_file(w, ev->name);
            /* stop promptly even in a burst of events */
            struct pollfd sp = {w->stop_pipe[0], POLLIN, 0};
            if (poll(&sp, 1, 0) > 0) return NULL;
        }
    }
    return NULL;
}

static void watch_free(dn_watch *w) {
    if (w->dfd >= 0) close(w->dfd);
    for (size_t i = 0; i < w->npending; i++) free(w->pending[i]);
    free(w->pending);
    free(w->line);
    free(w->station);
    free(w->camera);
    free(w);
}

dn_status dn_watch_start(dn_pipeline *p, const char *dir, int move_processed, const char *line,
                         const char *station, const char *camera, dn_watch **out) {
    *out = NULL;
    dn_watch *w = dn_calloc(1, sizeof *w);
    if (!w) return DN_ERR_NOMEM;
    w->dfd = -1;
    w->line = line ? dn_strdup(line) : NULL;
    w->station = station ? dn_strdup(station) : NULL;
    w->camera = camera ? dn_strdup(camera) : NULL;
    if ((line && !w->line) || (station && !w->station) || (camera && !w->camera)) {
        watch_free(w);
        return DN_ERR_NOMEM;
    }
    w->p = p;
    w->move = move_processed;
    w->ifd = -1;
    w->dfd = -1;
    w->stop_pipe[0] = w->stop_pipe[1] = -1;
    struct stat st;
    if (!realpath(dir, w->dir) || stat(w->dir, &st) || !S_ISDIR(st.st_mode) ||
        (w->dfd = open(w->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
        watch_free(w);
        return dn_fail(DN_ERR_IO, "%s: --watch is not a directory", dir);
    }
    w->ifd = inotify_init1(IN_CLOEXEC);
    if (w->ifd < 0 || pipe(w->stop_pipe)) {
        dn_status rc = dn_fail(DN_ERR_IO, "%s: inotify: %s", dir, strerror(errno));
        if (w->ifd >= 0) close(w->ifd);
        watch_free(w);
        return rc;
    }
    if (inotify_add_watch(w->ifd, w->dir, IN_CLOSE_WRITE | IN_MOVED_TO) < 0) {
        dn_status rc = dn_fail(DN_ERR_IO, "%s: cannot watch: %s", dir, strerror(errno));
        close(w->ifd);
        close(w->stop_pipe[0]);
        close(w->stop_pipe[1]);
        watch_free(w);
        return rc;
    }
    if (pthread_create(&w->th, NULL, watch_main, w)) {
        close(w->ifd);
        close(w->stop_pipe[0]);
        close(w->stop_pipe[1]);
        watch_free(w);
        return dn_fail(DN_ERR_NOMEM, "%s: cannot start watcher thread", dir);
    }
    *out = w;
    return DN_OK;
}

void dn_watch_stop(dn_watch *w) {
    if (!w) return;
    if (write(w->stop_pipe[1], "x", 1) != 1) { /* the thread still ends at its next poll */ }
    pthread_join(w->th, NULL);
    close(w->ifd);
    close(w->stop_pipe[0]);
    close(w->stop_pipe[1]);
    watch_free(w);
}
