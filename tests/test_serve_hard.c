/* Hardening of `defectnet serve` (issue 9): each test is the regression test of one audit
 * finding, against the real in-process server on an ephemeral port (fixture model and
 * HTTP client in serve_http.h). Hostile clients are raw sockets; the slow-header client
 * connects from 127.0.0.2 so the normal client on 127.0.0.1 is a different address. */
#include "serve_http.h"
#include "core/sha256.h"
#include "serve/pipeline.h"
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>

/* A TCP connection to 127.0.0.1:port from source address src (NULL: any). -1 on failure. */
static int raw_connect(int port, const char *src) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    if (src) {
        struct sockaddr_in b = {0};
        b.sin_family = AF_INET;
        inet_pton(AF_INET, src, &b.sin_addr);
        if (bind(fd, (struct sockaddr *)&b, sizeof b)) { close(fd); return -1; }
    }
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a)) { close(fd); return -1; }
    return fd;
}

static int send_all(int fd, const void *d, size_t n) {
    return send(fd, d, n, MSG_NOSIGNAL) == (ssize_t)n ? 0 : -1;
}

/* 1 once the peer closed fd (EOF or error), 0 while it is open. Drains what arrived. */
static int peer_closed(int fd) {
    struct pollfd p = {fd, POLLIN, 0};
    while (poll(&p, 1, 0) > 0) {
        char buf[512];
        ssize_t k = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (k <= 0) return k == 0 || (errno != EAGAIN && errno != EINTR);
        if (p.revents & (POLLHUP | POLLERR)) return 1;
    }
    return 0;
}

static dn_server *start_with(dn_server_config *c, const char *dbname) {
    static char db[512];
    snprintf(db, sizeof db, "sqlite:%s/%s", g_dir, dbname);
    return start(c, db);
}

/* ------------------------------------------------------------ row 8: idempotency key */

TEST(request_id_with_another_image_is_409) {
    if (!g_ready) SKIP("model fixture could not be built");
    dn_server_config c = {0};
    dn_server *s = start_with(&c, "h8.db");
    CHECK(s != NULL);
    if (!s) return;
    int port = dn_server_port(s);
    size_t n1 = 0, n2 = 0;
    uint8_t *a = slurp(g_img[0], &n1), *b = slurp(g_img[1], &n2);
    const char *h[] = {"X-Request-Id: cam7-000123", NULL};
    resp r;
    CHECK(http(port, "POST", "/v1/predict", a, n1, h, &r) == 200);
    resp_free(&r);
    CHECK(http(port, "POST", "/v1/predict", a, n1, h, &r) == 200); /* a real retry */
    CHECK(r.body.s && strstr(r.body.s, "\"duplicate\":true"));
    resp_free(&r);
    CHECK(http(port, "POST", "/v1/predict", b, n2, h, &r) == 409);
    CHECK(is_json_error(&r, 409, "different image"));
    resp_free(&r);
    CHECK(db_count(s) == 1);
    free(a);
    free(b);
    dn_server_stop(s);
}

/* ------------------------------------------------------------ rows 5 and 9: strings */

TEST(strict_utf8_nul_and_argument_count) {
    if (!g_ready) SKIP("model fixture could not be built");
    dn_server_config c = {0};
    dn_server *s = start_with(&c, "h5.db");
    CHECK(s != NULL);
    if (!s) return;
    int port = dn_server_port(s);
    size_t n = 0;
    uint8_t *img = slurp(g_img[2], &n);
    resp r;
    /* surrogate, overlong 3-byte, above U+10FFFF, overlong 2-byte, lone continuation, truncated */
    const char *bad[] = {"%ED%A0%80", "%E0%80%AF", "%F4%90%80%80", "%C0%AF", "%80", "%E2%82", "a%00b", "%F5%80%80%80"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char q[200];
        snprintf(q, sizeof q, "/v1/predict?line=%s", bad[i]);
        CHECK_MSG(http(port, "POST", q, img, n, NULL, &r) == 400 && is_json_error(&r, 400, NULL), "line=%s", bad[i]);
        resp_free(&r);
    }
    const char *hb[] = {"X-Station: \xED\xA0\x80", NULL};
    CHECK(http(port, "POST", "/v1/predict", img, n, hb, &r) == 400 && is_json_error(&r, 400, "UTF-8"));
    resp_free(&r);
    /* valid multi-byte values are kept */
    CHECK(http(port, "POST", "/v1/predict?line=L%C3%A9-%E2%82%AC-%F0%9F%94%A7", img, n, NULL, &r) == 200);
    resp_free(&r);
    /* NUL in any query value (not only metadata): 400, not a silently cut value */
    CHECK(http(port, "GET", "/v1/predictions?line=a%00b", NULL, 0, NULL, &r) == 400 && is_json_error(&r, 400, "NUL"));
    resp_free(&r);
    /* what was stored is valid JSON for readers */
    CHECK(http(port, "GET", "/v1/predictions", NULL, 0, NULL, &r) == 200);
    dn_json *j = resp_json(&r);
    CHECK(j && dn_json_len(dn_json_get(j, "predictions")) == 1);
    dn_json_free(j);
    resp_free(&r);
    /* many query arguments: an answer (414), not a dropped connection; at any count */
    int counts[] = {DN_HTTP_MAX_ARGS + 1, 500, 2000};
    for (int k = 0; k < 3; k++) {
        dn_sb q = {0};
        dn_sb_puts(&q, "/v1/predictions?");
        for (int i = 0; i < counts[k]; i++) dn_sb_printf(&q, "%sa%d=b", i ? "&" : "", i);
        long code = http(port, "GET", q.s, NULL, 0, NULL, &r);
        CHECK_MSG(code == 414 || code == 431, "%d arguments: HTTP %ld", counts[k], code);
        resp_free(&r);
        dn_sb_free(&q);
    }
    char q[100];
    snprintf(q, sizeof q, "/v1/predictions?limit=5&line=x&a=1");
    CHECK(http(port, "GET", q, NULL, 0, NULL, &r) == 200);
    resp_free(&r);
    CHECK(db_count(s) == 1);
    free(img);
    dn_server_stop(s);
}

/* ------------------------------------------------------------ row 10: reports */

typedef struct {
    int port;
    long code;
    char retry[16];
    pthread_barrier_t *go;
} rep_arg;

static void *get_report(void *p) {
    rep_arg *a = p;
    const char *h[] = {"Authorization: Bearer tok-10", NULL};
    resp r;
    pthread_barrier_wait(a->go);
    a->code = http(a->port, "GET", "/v1/report?format=html", NULL, 0, h, &r);
    snprintf(a->retry, sizeof a->retry, "%s", r.retry_after);
    resp_free(&r);
    return NULL;
}

TEST(report_needs_token_and_is_limited) {
    if (!g_ready) SKIP("model fixture could not be built");
    /* a store big enough that a report takes a while: on tmpfs when there is one */
    char dbdir[300], db[400];
    if (access("/dev/shm", W_OK) == 0) snprintf(dbdir, sizeof dbdir, "/dev/shm");
    else snprintf(dbdir, sizeof dbdir, "%s", g_dir);
    snprintf(db, sizeof db, "sqlite:%s/dn-h10-%d.db", dbdir, (int)getpid());
    dn_server_config c = {0};
    c.token = "tok-10";
    c.report_slots = 1;
    dn_server *s = start(&c, db);
    CHECK(s != NULL);
    if (!s) return;
    int port = dn_server_port(s);
    dn_store *st = dn_server_store(s);
    char sha[65];
    memset(sha, 'a', 64);
    sha[64] = 0;
    int ins_ok = 1;
    for (int i = 0; i < 4000 && ins_ok; i++) {
        char line[16];
        snprintf(line, sizeof line, "L%d", i % 7);
        dn_pred_record rec = {.time = 1.7e9 + i * 30.0, .line = line, .source = "http", .image_sha256 = sha,
                              .model_sha256 = sha, .model_version = "t", .cls = g_names[i % NCLS],
                              .confidence = 0.9f, .scores_json = "{}", .uncertain = i % 5 == 0};
        int64_t id;
        int existed;
        ins_ok = dn_store_insert(st, &rec, &id, &existed) == DN_OK;
    }
    CHECK(ins_ok);
    resp r;
    CHECK(http(port, "GET", "/v1/report", NULL, 0, NULL, &r) == 401 && is_json_error(&r, 401, "token"));
    resp_free(&r);
    const char *h[] = {"Authorization: Bearer tok-10", NULL};
    CHECK(http(port, "GET", "/v1/report?format=csv", NULL, 0, h, &r) == 200);
    resp_free(&r);
    /* 6 reports at once with one slot: the others are told to come back (a burst whose
     * reports happen not to overlap proves nothing: up to 5 bursts); healthz meanwhile */
    enum { NR = 6 };
    int ok = 0, busy = 0, retry = 0, total = 0;
    for (int round = 0; round < 5 && !busy; round++) {
        pthread_barrier_t go;
        pthread_barrier_init(&go, NULL, NR + 1);
        rep_arg a[NR];
        pthread_t th[NR];
        for (int i = 0; i < NR; i++) {
            a[i] = (rep_arg){port, 0, "", &go};
            pthread_create(&th[i], NULL, get_report, &a[i]);
        }
        pthread_barrier_wait(&go);
        CHECK(http(port, "GET", "/healthz", NULL, 0, NULL, &r) == 200);
        resp_free(&r);
        for (int i = 0; i < NR; i++) {
            pthread_join(th[i], NULL);
            ok += a[i].code == 200;
            busy += a[i].code == 503;
            retry += a[i].code == 503 && a[i].retry[0];
        }
        total += NR;
        pthread_barrier_destroy(&go);
    }
    printf("  bursts of %d concurrent reports, 1 slot: %d answered 200, %d answered 503 + Retry-After\n", NR, ok, retry);
    CHECK(ok >= 1 && busy >= 1 && ok + busy == total && retry == busy);
    dn_server_stop(s);
    char f[500];
    snprintf(f, sizeof f, "%s/dn-h10-%d.db", dbdir, (int)getpid());
    unlink(f);
}

/* ------------------------------------------------------------ row 4: body budget */

TEST(buffered_bodies_have_a_global_budget) {
    if (!g_ready) SKIP("model fixture could not be built");
    dn_server_config c = {0};
    c.max_body = 1 << 20;
    c.body_budget = (2u << 20) + 1024; /* two unfinished 1 MiB bodies leave 1 KiB */
    dn_server *s = start_with(&c, "h4.db");
    CHECK(s != NULL);
    if (!s) return;
    int port = dn_server_port(s);
    size_t n = 0;
    uint8_t *img = slurp(g_img[3], &n);
    CHECK(n > 1024);
    int hold[2];
    char part[4096];
    memset(part, 'x', sizeof part);
    for (int i = 0; i < 2; i++) {
        hold[i] = raw_connect(port, NULL);
        const char *hdr = "POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n";
        CHECK(hold[i] >= 0 && send_all(hold[i], hdr, strlen(hdr)) == 0 && send_all(hold[i], part, sizeof part) == 0);
    }
    /* the holders' headers are processed asynchronously: wait (bounded) for the refusal */
    resp r = {0};
    long code = 0;
    for (int t = 0; t < 100 && code != 503; t++) {
        resp_free(&r);
        code = http(port, "POST", "/v1/predict", img, n, NULL, &r);
        if (code != 503) usleep(50000);
    }
    CHECK_MSG(code == 503 && is_json_error(&r, 503, "busy") && r.retry_after[0], "got %ld", code);
    resp_free(&r);
    int64_t before = db_count(s);
    for (int i = 0; i < 2; i++)
        if (hold[i] >= 0) close(hold[i]);
    /* the budget comes back when the holders go */
    code = 0;
    for (int t = 0; t < 100 && code != 200; t++) {
        code = http(port, "POST", "/v1/predict", img, n, NULL, &r);
        resp_free(&r);
        if (code != 200) usleep(50000);
    }
    CHECK(code == 200 && db_count(s) == before + 1);
    free(img);
    dn_server_stop(s);
}

/* ------------------------------------------------------------ row 2: slowloris */

typedef struct {
    int port, n, fds[64];
    double run_s;
    int accepted;        /* connections opened */
    int closed;          /* connections the server closed while they were trickling headers */
    double last_close;   /* seconds after the start */
} loris;

/* Opens n connections from 127.0.0.2 and sends a header line on each every 0.3 s without
 * ever finishing the headers, for run_s seconds. */
static void *loris_main(void *p) {
    loris *l = p;
    double t0 = dn_now();
    int open_n = 0;
    for (int i = 0; i < l->n; i++) {
        l->fds[i] = raw_connect(l->port, "127.0.0.2");
        const char *head = "GET /healthz HTTP/1.1\r\nHost: x\r\n";
        if (l->fds[i] >= 0 && send_all(l->fds[i], head, strlen(head)) == 0) open_n++;
    }
    int gone[64] = {0};
    l->accepted = open_n;
    while (dn_now() - t0 < l->run_s && l->closed < l->n) {
        usleep(300000);
        for (int i = 0; i < l->n; i++) {
            if (gone[i]) continue;
            if (l->fds[i] < 0 || peer_closed(l->fds[i]) || send_all(l->fds[i], "X-Pad: 1\r\n", 10)) {
                gone[i] = 1;
                l->closed++;
                l->last_close = dn_now() - t0;
            }
        }
    }
    for (int i = 0; i < l->n; i++)
        if (l->fds[i] >= 0) close(l->fds[i]);
    return NULL;
}

TEST(slow_headers_from_one_client_do_not_starve_others) {
    if (!g_ready) SKIP("model fixture could not be built");
    int fd2 = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in b = {0};
    b.sin_family = AF_INET;
    inet_pton(AF_INET, "127.0.0.2", &b.sin_addr);
    int can_bind = fd2 >= 0 && bind(fd2, (struct sockaddr *)&b, sizeof b) == 0;
    if (fd2 >= 0) close(fd2);
    if (!can_bind) SKIP("cannot bind 127.0.0.2 (no loopback /8)");
    dn_server_config c = {0};
    c.max_connections = 24;
    c.max_per_client = 6;
    c.header_timeout = 2;
    dn_server *s = start_with(&c, "h2.db");
    CHECK(s != NULL);
    if (!s) return;
    loris l = {.port = dn_server_port(s), .n = 60, .run_s = 8};
    pthread_t th;
    pthread_create(&th, NULL, loris_main, &l);
    usleep(500000); /* the attacker's connections are open and trickling */
    resp r;
    CHECK(http(l.port, "GET", "/healthz", NULL, 0, NULL, &r) == 200);
    resp_free(&r);
    CHECK(post_image(l.port, 4, "?line=L2", &r) == 200);
    resp_free(&r);
    pthread_join(th, NULL);
    printf("  %d slow-header connections from 127.0.0.2 (%d connected): %d closed by the server (last after "
           "%.1f s; per-client limit 6, header deadline 2 s)\n", l.n, l.accepted, l.closed, l.last_close);
    CHECK(l.closed == l.n); /* refused over the per-client limit, or cut at the header deadline */
    CHECK(http(l.port, "GET", "/healthz", NULL, 0, NULL, &r) == 200);
    resp_free(&r);
    dn_server_stop(s);
}

/* ------------------------------------------------------------ rows 3 and 5: drop folder */

/* Waits (bounded, 15 s) until the store holds n predictions. */
static int wait_stored(dn_server *s, int n) {
    for (int t = 0; t < 300; t++) {
        int64_t k = 0;
        dn_store_count(dn_server_store(s), NULL, &k);
        if (k >= n) return 1;
        usleep(50000);
    }
    return 0;
}

TEST(watch_refuses_symlinked_output_dirs) {
    if (!g_ready) SKIP("model fixture could not be built");
    char dir[400], outside[400], f[600], g[600], cmd[4096];
    snprintf(dir, sizeof dir, "%s/drop3", g_dir);
    snprintf(outside, sizeof outside, "%s/elsewhere", g_dir);
    mkdir(dir, 0755);
    mkdir(outside, 0755);
    snprintf(f, sizeof f, "%s/processed", dir);
    CHECK(symlink(outside, f) == 0);
    snprintf(f, sizeof f, "%s/rejected", dir);
    CHECK(symlink(outside, f) == 0);
    dn_server_config c = {0};
    c.watch_dir = dir;
    c.move_processed = 1;
    dn_server *s = start_with(&c, "h3.db");
    CHECK(s != NULL);
    if (!s) return;
    snprintf(f, sizeof f, "%s/part1.png", dir);
    snprintf(cmd, sizeof cmd, "cp '%s' '%s/.part1.png' && mv '%s/.part1.png' '%s'", g_img[1], dir, dir, f);
    CHECK(system(cmd) == 0);
    snprintf(g, sizeof g, "%s/junk.png", dir);
    CHECK(write_file(g, "not an image", 12) == 0);
    /* classified (stored), but neither file may end up behind the links */
    CHECK(wait_stored(s, 1));
    usleep(500000); /* the junk file's rejection, and the moves, come after */
    snprintf(cmd, sizeof cmd, "test -z \"$(ls -A '%s')\"", outside);
    CHECK_MSG(system(cmd) == 0, "files were moved through a symlink into %s", outside);
    CHECK(access(f, F_OK) == 0 && access(g, F_OK) == 0); /* left in place */
    dn_server_stop(s);
    /* a class directory that is a link is refused too */
    snprintf(cmd, sizeof cmd, "rm -f '%s/processed' '%s/rejected' && mkdir '%s/processed' && ln -s '%s' '%s/processed/%s'",
             dir, dir, dir, outside, dir, g_names[1]);
    CHECK(system(cmd) == 0);
    c.move_processed = 1;
    snprintf(f, sizeof f, "%s/part2.png", dir);
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", g_img[1], f);
    CHECK(system(cmd) == 0);
    s = start_with(&c, "h3b.db");
    CHECK(s != NULL);
    if (!s) return;
    CHECK(wait_stored(s, 1));
    usleep(300000);
    snprintf(cmd, sizeof cmd, "test -z \"$(ls -A '%s')\"", outside);
    CHECK_MSG(system(cmd) == 0, "files were moved through a symlinked class dir into %s", outside);
    dn_server_stop(s);
}

TEST(watch_skips_bad_file_names_and_escapes_logs) {
    if (!g_ready) SKIP("model fixture could not be built");
    char dir[400], logf[400], f[600];
    snprintf(dir, sizeof dir, "%s/drop5", g_dir);
    snprintf(logf, sizeof logf, "%s/serve5.log", g_dir);
    mkdir(dir, 0755);
    const char *bad[] = {"forged\n2026-01-01T00:00:00Z serve: watch: x -> ok.png", "bad\xff\xfe.png", "sur\xed\xa0\x80.png"};
    size_t n = 0;
    uint8_t *img = slurp(g_img[0], &n);
    for (int i = 0; i < 3; i++) {
        snprintf(f, sizeof f, "%s/%s", dir, bad[i]);
        CHECK(write_file(f, img, n) == 0);
    }
    snprintf(f, sizeof f, "%s/good.png", dir);
    CHECK(write_file(f, img, n) == 0);
    free(img);
    /* the server logs to stderr: capture it */
    fflush(stderr);
    int saved = dup(2), lf = open(logf, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(lf, 2);
    close(lf);
    char db[512];
    snprintf(db, sizeof db, "sqlite:%s/h5w.db", g_dir);
    dn_server_config c = {0};
    c.model_path = g_model;
    c.db_url = db;
    c.listen = "127.0.0.1:0";
    c.workers = 1;
    c.watch_dir = dir;
    dn_server *s = NULL;
    dn_status rc = dn_server_start(&c, &s);
    int ok = !rc && wait_stored(s, 1);
    usleep(500000); /* the three bad names are skipped around the good one */
    int64_t k = -1;
    if (s) {
        dn_store_count(dn_server_store(s), NULL, &k);
        dn_server_stop(s);
    }
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    CHECK(rc == DN_OK && ok);
    CHECK_MSG(k == 1, "%lld predictions stored (only good.png should be)", (long long)k);
    uint8_t *log = NULL;
    size_t ln = 0;
    CHECK(dn_read_file(logf, 1 << 20, &log, &ln) == DN_OK);
    int lines = 0, forged = 0, skipped = 0, invalid = 0;
    for (size_t i = 0, st = 0; log && i < ln; i++) {
        if (log[i] != '\n') continue;
        lines++;
        if (!(i - st > 21 && log[st + 4] == '-' && log[st + 19] == 'Z')) forged++; /* every line is timestamped */
        st = i + 1;
    }
    for (size_t i = 0; log && i < ln; i++) invalid += log[i] >= 0x80; /* the names' bytes are all escaped */
    skipped = log && memmem(log, ln, "not printable UTF-8, skipped", 28) != NULL;
    printf("  %d log lines, %d without a timestamp, %d non-ASCII bytes\n", lines, forged, invalid);
    CHECK(lines >= 4 && forged == 0 && skipped && invalid == 0);
    CHECK(log && memmem(log, ln, "forged\\x0A2026", 14) && memmem(log, ln, "bad\\xFF\\xFE.png", 15));
    free(log);
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    setup();
    if (!g_ready) printf("  setup failed: %s\n", dn_last_error());
    RUN(request_id_with_another_image_is_409);
    RUN(strict_utf8_nul_and_argument_count);
    RUN(report_needs_token_and_is_limited);
    RUN(buffered_bodies_have_a_global_budget);
    RUN(slow_headers_from_one_client_do_not_starve_others);
    RUN(watch_refuses_symlinked_output_dirs);
    RUN(watch_skips_bad_file_names_and_escapes_logs);
    if (g_dir[0]) h_rmrf(g_dir);
    curl_global_cleanup();
    return REPORT();
}
