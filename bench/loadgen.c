/* loadgen: a small HTTP load client for `defectnet serve` (libcurl, one keep-alive
 * connection per thread), and the checker for the crash test.
 *
 *   loadgen --port P [--host 127.0.0.1] --image F [--image F2 ...] [-c 16] [-d 60]
 *           [--token T] [--line L] [--ids FILE] [--tag NAME]
 *     Posts images round-robin to /v1/predict for -d seconds over -c connections.
 *     Every request carries a unique X-Request-Id "<tag>-<conn>-<seq>"; after a
 *     transport error (server down) the same request is retried with the same id, so
 *     a prediction committed just before a crash is answered from the store, not
 *     recorded twice. Prints
 *     throughput, p50/p90/p99/max latency of 200 answers, counts per status code and
 *     transport errors. --ids appends "<prediction id> <request id>" for every 200
 *     (flushed per line, so the file is complete even if the server dies mid-run).
 *     Exit status 0 if every request was answered 200, 1 otherwise.
 *
 *   loadgen --verify DB_URL --ids FILE
 *     Checks that every prediction answered 200 is in the database exactly once:
 *     each listed id exists with the listed request id, no request id appears in two
 *     rows, and no listed id is listed twice. Prints the counts; exit 0 if all hold.
 */
#include "core/core.h"
#include "serve/store.h"
#include <curl/curl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    char *data;
    size_t len;
} blob;

typedef struct {
    int idx;
    const char *host, *token, *line, *tag;
    int port;
    double end;
    blob *imgs;
    int nimg;
    FILE *ids;
    pthread_mutex_t *ids_mu;
    /* results */
    double *lat;
    size_t nlat, cap;
    long codes[600];
    long transport, dups;
    char buf[8192];
    size_t blen;
} conn;

static size_t on_body(char *p, size_t sz, size_t n, void *ud) {
    conn *c = ud;
    size_t k = sz * n, room = sizeof c->buf - 1 - c->blen;
    size_t m = k < room ? k : room; /* keep the head: "id" comes first */
    memcpy(c->buf + c->blen, p, m);
    c->blen += m;
    c->buf[c->blen] = 0;
    return k;
}

static void *run_conn(void *arg) {
    conn *c = arg;
    CURL *h = curl_easy_init();
    if (!h) return NULL;
    char url[512], hid[128], auth[300], line[200];
    snprintf(url, sizeof url, "http://%s:%d/v1/predict", c->host, c->port);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 30L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
    for (long seq = 0; dn_now() < c->end; seq++) {
        blob *b = &c->imgs[(c->idx + seq) % c->nimg];
        struct curl_slist *hd = NULL;
        snprintf(hid, sizeof hid, "X-Request-Id: %s-%d-%ld", c->tag, c->idx, seq);
        hd = curl_slist_append(hd, hid);
        hd = curl_slist_append(hd, "Content-Type: application/octet-stream");
        hd = curl_slist_append(hd, "Expect:");
        if (c->token) {
            snprintf(auth, sizeof auth, "Authorization: Bearer %s", c->token);
            hd = curl_slist_append(hd, auth);
        }
        if (c->line) {
            snprintf(line, sizeof line, "X-Line: %s", c->line);
            hd = curl_slist_append(hd, line);
        }
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hd);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, b->data);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)b->len);
        c->blen = 0;
        c->buf[0] = 0;
        double t0 = dn_now();
        CURLcode rc = curl_easy_perform(h);
        double dt = dn_now() - t0;
        curl_slist_free_all(hd);
        long code = 0;
        if (rc == CURLE_OK) curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
        if (rc != CURLE_OK || code <= 0 || code >= 600) {
            c->transport++;
            usleep(20000); /* server down (crash test): do not spin */
            seq--;         /* retry the same request id: the server may have committed it */
            continue;
        }
        c->codes[code]++;
        if (code != 200) continue;
        if (c->nlat == c->cap) {
            size_t nc = c->cap ? c->cap * 2 : 4096;
            double *nl = realloc(c->lat, nc * sizeof *nl);
            if (!nl) continue;
            c->lat = nl;
            c->cap = nc;
        }
        c->lat[c->nlat++] = dt;
        if (strstr(c->buf, "\"duplicate\":true")) c->dups++;
        if (c->ids) {
            const char *p = strstr(c->buf, "\"id\":");
            if (p) {
                pthread_mutex_lock(c->ids_mu);
                fprintf(c->ids, "%lld %s-%d-%ld\n", atoll(p + 5), c->tag, c->idx, seq);
                fflush(c->ids);
                pthread_mutex_unlock(c->ids_mu);
            }
        }
    }
    curl_easy_cleanup(h);
    return NULL;
}

static int cmpd(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pct(const double *v, size_t n, double p) {
    if (!n) return 0;
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return v[i < n ? i : n - 1];
}

/* ---------------------------------------------------------------- verify */

typedef struct { int64_t id; char rid[96]; } idrow;
static int cmp_rid(const void *a, const void *b) { return strcmp(((const idrow *)a)->rid, ((const idrow *)b)->rid); }
static int cmp_id(const void *a, const void *b) {
    int64_t x = ((const idrow *)a)->id, y = ((const idrow *)b)->id;
    return (x > y) - (x < y);
}

typedef struct { idrow *v; size_t n, cap; } rid_acc;
static int collect_rid(void *ctx, const dn_pred_row *r) {
    rid_acc *a = ctx;
    if (!r->request_id) return 0;
    if (a->n == a->cap) {
        size_t nc = a->cap ? a->cap * 2 : 4096;
        idrow *nv = realloc(a->v, nc * sizeof *nv);
        if (!nv) return 1;
        a->v = nv;
        a->cap = nc;
    }
    a->v[a->n].id = r->id;
    snprintf(a->v[a->n].rid, sizeof a->v[a->n].rid, "%s", r->request_id);
    a->n++;
    return 0;
}

static int verify(const char *db, const char *idsfile) {
    FILE *f = fopen(idsfile, "r");
    if (!f) { perror(idsfile); return 2; }
    idrow *rows = NULL;
    size_t n = 0, cap = 0;
    char line[256];
    while (fgets(line, sizeof line, f)) {
        long long id;
        char rid[96];
        if (sscanf(line, "%lld %95s", &id, rid) != 2) continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 4096;
            idrow *nr = realloc(rows, cap * sizeof *nr);
            if (!nr) { fclose(f); free(rows); return 2; }
            rows = nr;
        }
        rows[n].id = id;
        snprintf(rows[n].rid, sizeof rows[n].rid, "%s", rid);
        n++;
    }
    fclose(f);
    dn_store *s = NULL;
    if (dn_store_open(db, &s)) { fprintf(stderr, "loadgen: %s\n", dn_last_error()); free(rows); return 2; }
    /* all rows with a request id, to look for duplicates and missing ones */
    rid_acc all = {0};
    dn_pred_filter flt = {0};
    if (dn_store_scan(s, &flt, collect_rid, &all)) { fprintf(stderr, "loadgen: %s\n", dn_last_error()); return 2; }
    int64_t total = 0;
    dn_store_count(s, NULL, &total);
    if (all.n > 1) qsort(all.v, all.n, sizeof *all.v, cmp_rid);
    size_t dup_rid = 0;
    for (size_t i = 1; i < all.n; i++) dup_rid += !strcmp(all.v[i].rid, all.v[i - 1].rid);
    if (n > 1) qsort(rows, n, sizeof *rows, cmp_id);
    size_t dup_listed = 0, missing = 0, mismatch = 0;
    for (size_t i = 0; i < n; i++) {
        if (i && rows[i].id == rows[i - 1].id) dup_listed++;
        idrow key;
        snprintf(key.rid, sizeof key.rid, "%s", rows[i].rid);
        idrow *hit = all.n ? bsearch(&key, all.v, all.n, sizeof *all.v, cmp_rid) : NULL;
        if (!hit) missing++;
        else if (hit->id != rows[i].id) mismatch++;
    }
    printf("verify: %zu predictions answered 200 listed; database has %lld rows (%zu with a request id)\n", n,
           (long long)total, all.n);
    printf("verify: missing=%zu id_mismatch=%zu listed_twice=%zu request_id_in_two_rows=%zu\n", missing, mismatch,
           dup_listed, dup_rid);
    int ok = !missing && !mismatch && !dup_listed && !dup_rid;
    printf("verify: %s\n", ok ? "OK every 200 is in the database exactly once" : "FAILED");
    free(all.v);
    free(rows);
    dn_store_close(s);
    return ok ? 0 : 1;
}

static void usage(void) {
    fprintf(stderr, "usage: loadgen --port P --image F [--image F ...] [-c 16] [-d 60] [--host H] [--token T]\n"
                    "               [--line L] [--ids FILE] [--tag NAME]\n"
                    "       loadgen --verify DB_URL --ids FILE\n");
}

int main(int argc, char **argv) {
    const char *host = "127.0.0.1", *token = NULL, *line = NULL, *idsfile = NULL, *vdb = NULL, *tag = NULL;
    const char *images[64];
    int nimg = 0, port = 0, nconn = 16;
    double dur = 60;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc) { usage(); return 2; }
        const char *v = argv[++i];
        if (!strcmp(a, "--port")) port = atoi(v);
        else if (!strcmp(a, "--host")) host = v;
        else if (!strcmp(a, "--image") && nimg < 64) images[nimg++] = v;
        else if (!strcmp(a, "-c")) nconn = atoi(v);
        else if (!strcmp(a, "-d")) dur = atof(v);
        else if (!strcmp(a, "--token")) token = v;
        else if (!strcmp(a, "--line")) line = v;
        else if (!strcmp(a, "--ids")) idsfile = v;
        else if (!strcmp(a, "--verify")) vdb = v;
        else if (!strcmp(a, "--tag")) tag = v;
        else { usage(); return 2; }
    }
    if (vdb) {
        if (!idsfile) { usage(); return 2; }
        return verify(vdb, idsfile);
    }
    if (port <= 0 || port > 65535 || !nimg || nconn < 1 || nconn > 1024 || !(dur > 0)) { usage(); return 2; }
    signal(SIGPIPE, SIG_IGN);
    blob imgs[64];
    for (int i = 0; i < nimg; i++) {
        uint8_t *d = NULL;
        if (dn_read_file(images[i], 64u << 20, &d, &imgs[i].len)) { fprintf(stderr, "loadgen: %s\n", dn_last_error()); return 2; }
        imgs[i].data = (char *)d;
    }
    char tagbuf[64];
    if (!tag) { snprintf(tagbuf, sizeof tagbuf, "lg%ld", (long)getpid()); tag = tagbuf; }
    FILE *ids = NULL;
    if (idsfile && !(ids = fopen(idsfile, "a"))) { perror(idsfile); return 2; }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    conn *cs = calloc((size_t)nconn, sizeof *cs);
    pthread_t *th = calloc((size_t)nconn, sizeof *th);
    if (!cs || !th) return 2;
    double t0 = dn_now();
    for (int i = 0; i < nconn; i++) {
        cs[i] = (conn){.idx = i, .host = host, .token = token, .line = line, .tag = tag, .port = port,
                       .end = t0 + dur, .imgs = imgs, .nimg = nimg, .ids = ids, .ids_mu = &mu};
        pthread_create(&th[i], NULL, run_conn, &cs[i]);
    }
    size_t nl = 0;
    long codes[600] = {0}, transport = 0, dups = 0;
    for (int i = 0; i < nconn; i++) {
        pthread_join(th[i], NULL);
        nl += cs[i].nlat;
        transport += cs[i].transport;
        dups += cs[i].dups;
        for (int k = 0; k < 600; k++) codes[k] += cs[i].codes[k];
    }
    double wall = dn_now() - t0;
    double *lat = malloc((nl ? nl : 1) * sizeof *lat);
    size_t k = 0;
    for (int i = 0; i < nconn; i++) {
        if (lat && cs[i].nlat) memcpy(lat + k, cs[i].lat, cs[i].nlat * sizeof *lat);
        k += cs[i].nlat;
        free(cs[i].lat);
    }
    long total = transport, ok = codes[200];
    for (int c = 0; c < 600; c++) total += codes[c];
    if (lat && nl > 1) qsort(lat, nl, sizeof *lat, cmpd);
    printf("loadgen: %d connections, %.1f s, %ld requests, %ld answered 200, %ld failed (non-200 or transport)\n",
           nconn, wall, total, ok, total - ok);
    printf("loadgen: throughput %.1f req/s (200s); latency of 200s: p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms\n",
           ok / wall, 1e3 * pct(lat, nl, 0.5), 1e3 * pct(lat, nl, 0.9), 1e3 * pct(lat, nl, 0.99),
           nl && lat ? 1e3 * lat[nl - 1] : 0.0);
    printf("loadgen: status codes:");
    for (int c = 0; c < 600; c++)
        if (codes[c]) printf(" %d=%ld", c, codes[c]);
    printf(" transport_errors=%ld\n", transport);
    if (dups) printf("loadgen: %ld retried requests were answered from the store (\"duplicate\": committed before a crash)\n", dups);
    free(lat);
    free(cs);
    free(th);
    for (int i = 0; i < nimg; i++) free(imgs[i].data);
    if (ids) fclose(ids);
    curl_global_cleanup();
    return total == ok ? 0 : 1;
}
