/* Test helpers for the service tests (test_store.c, test_serve.c): temporary
 * directories, free loopback ports, and a throwaway PostgreSQL server.
 *
 * The PostgreSQL server is a real one: initdb + pg_ctl from /usr/lib/postgresql/<v>/bin
 * (or $DN_PG_BIN) in a temporary directory, listening on 127.0.0.1:<free port> with
 * trust authentication. PostgreSQL refuses to run as root, so when the tests run
 * as root the cluster is created and started as the "postgres" user (falling back
 * to "nobody") with runuser. h_pg_start returns 0 and sets why[] when it cannot
 * start a server so callers can SKIP visibly. */
#ifndef DN_TEST_SERVE_UTIL_H
#define DN_TEST_SERVE_UTIL_H
#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

/* A fresh temporary directory (static buffer per call site is the caller's). */
static inline int h_tmpdir(char *buf, size_t n, const char *tag) {
    const char *t = getenv("TMPDIR");
    snprintf(buf, n, "%s/dn-%s-XXXXXX", t && *t ? t : "/tmp", tag);
    return mkdtemp(buf) ? 0 : -1;
}

static inline void h_rmrf(const char *path) {
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", path);
}

/* A currently free TCP port on 127.0.0.1 (0 on failure). */
static inline int h_free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return 0;
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t l = sizeof a;
    int port = 0;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(fd, (struct sockaddr *)&a, &l) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

/* 1 if something accepts TCP connections on 127.0.0.1:port within secs seconds. */
static inline int h_port_accepts(int port, double secs) {
    for (int i = 0; i <= (int)(secs * 40); i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {0};
        a.sin_family = AF_INET;
        a.sin_port = htons((uint16_t)port);
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        int ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
        if (fd >= 0) close(fd);
        if (ok) return 1;
        usleep(25000);
    }
    return 0;
}

typedef struct h_pg {
    char dir[512];      /* temp dir holding data/ and the socket */
    char bin[600];      /* postgres bin dir */
    char user[32];      /* OS user running the server ("" = current user) */
    int port;
    char url[256];      /* postgres://dn@127.0.0.1:PORT/postgres */
} h_pg;

static inline int h_pg_find_bin(char *bin, size_t n) {
    const char *e = getenv("DN_PG_BIN");
    char probe[600];
    if (e && *e) {
        snprintf(probe, sizeof probe, "%s/initdb", e);
        if (access(probe, X_OK) == 0) { snprintf(bin, n, "%s", e); return 1; }
        return 0;
    }
    DIR *d = opendir("/usr/lib/postgresql");
    if (!d) return 0;
    struct dirent *de;
    int best = 0;
    while ((de = readdir(d))) {
        int v = atoi(de->d_name);
        if (v <= best) continue;
        snprintf(probe, sizeof probe, "/usr/lib/postgresql/%s/bin/initdb", de->d_name);
        if (access(probe, X_OK) == 0) { best = v; snprintf(bin, n, "/usr/lib/postgresql/%s/bin", de->d_name); }
    }
    closedir(d);
    return best > 0;
}

/* Runs a shell command, as pg->user when set. Output goes to dir/log. */
static inline int h_pg_sh(const h_pg *pg, const char *cmd) {
    char full[5000];
    if (pg->user[0])
        snprintf(full, sizeof full, "cd / && runuser -u %s -- sh -c '%s' >>'%s/log' 2>&1", pg->user, cmd, pg->dir);
    else
        snprintf(full, sizeof full, "cd / && sh -c '%s' >>'%s/log' 2>&1", cmd, pg->dir);
    return system(full);
}

static inline int h_pg_start(h_pg *pg, char *why, size_t whyn) {
    memset(pg, 0, sizeof *pg);
    if (!h_pg_find_bin(pg->bin, sizeof pg->bin)) {
        snprintf(why, whyn, "PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/initdb; set DN_PG_BIN)");
        return 0;
    }
    if (geteuid() == 0) {
        struct passwd *pw = getpwnam("postgres");
        if (!pw) pw = getpwnam("nobody");
        if (!pw || access("/usr/sbin/runuser", X_OK) != 0) {
            snprintf(why, whyn, "running as root without a postgres/nobody user or runuser");
            return 0;
        }
        snprintf(pg->user, sizeof pg->user, "%s", pw->pw_name);
    }
    if (h_tmpdir(pg->dir, sizeof pg->dir, "pg")) { snprintf(why, whyn, "mkdtemp failed"); return 0; }
    if (pg->user[0]) {
        struct passwd *pw = getpwnam(pg->user);
        if (chown(pg->dir, pw->pw_uid, pw->pw_gid) != 0) { snprintf(why, whyn, "chown temp dir failed"); goto fail; }
    }
    pg->port = h_free_port();
    char cmd[4000];
    snprintf(cmd, sizeof cmd, "%s/initdb -D %s/data -A trust -U dn --no-sync -E UTF8", pg->bin, pg->dir);
    if (h_pg_sh(pg, cmd)) { snprintf(why, whyn, "initdb failed (see %.150s/log)", pg->dir); goto fail; }
    snprintf(cmd, sizeof cmd,
             "%s/pg_ctl -D %s/data -w -t 60 -l %s/server.log -o \"-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off\" start",
             pg->bin, pg->dir, pg->dir, pg->port, pg->dir);
    if (h_pg_sh(pg, cmd)) { snprintf(why, whyn, "pg_ctl start failed (see %.150s/server.log)", pg->dir); goto fail; }
    snprintf(pg->url, sizeof pg->url, "postgres://dn@127.0.0.1:%d/postgres", pg->port);
    return 1;
fail:
    h_rmrf(pg->dir);
    pg->dir[0] = 0;
    return 0;
}

/* Stops (up = 0) or starts again (up = 1) the server of pg, keeping its data and port. */
static inline int h_pg_power(h_pg *pg, int up) {
    char cmd[4000];
    if (up)
        snprintf(cmd, sizeof cmd,
                 "%s/pg_ctl -D %s/data -w -t 60 -l %s/server.log -o \"-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off\" start",
                 pg->bin, pg->dir, pg->dir, pg->port, pg->dir);
    else
        snprintf(cmd, sizeof cmd, "%s/pg_ctl -D %s/data -w -m fast stop", pg->bin, pg->dir);
    return h_pg_sh(pg, cmd);
}

static inline void h_pg_stop(h_pg *pg) {
    if (!pg->dir[0]) return;
    char cmd[2000];
    snprintf(cmd, sizeof cmd, "%s/pg_ctl -D %s/data -w -m fast stop", pg->bin, pg->dir);
    h_pg_sh(pg, cmd);
    h_rmrf(pg->dir);
    pg->dir[0] = 0;
}
#endif
