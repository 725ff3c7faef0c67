/* Rules and actions against real components started by the test:
 *  - a mosquitto broker (/usr/sbin/mosquitto) on a free loopback port, plus a libmosquitto
 *    subscriber in the test,
 *  - a libmicrohttpd webhook receiver in the test,
 *  - real commands via posix_spawn (sh, cat, sleep).
 * Submit latency is printed (no timing assertion beyond a "did not block for seconds"
 * sanity bound). */
#include "harness.h"
#include "serve/actions.h"
#include "core/core.h"
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <mosquitto.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char g_dir[256];

/* ------------------------------------------------------------ helpers */

static void msleep(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static char *write_tmp(const char *name, const char *text) {
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    FILE *f = fopen(path, "w");
    if (!f) return NULL;
    fputs(text, f);
    fclose(f);
    return path;
}

static char *slurp(const char *path) {
    uint8_t *d;
    size_t n;
    if (dn_read_file(path, 1 << 20, &d, &n)) return NULL;
    return (char *)d;
}

/* Loads rules from text (printf format) written to g_dir/name. */
static dn_rules *rules_from(const char *name, const char *fmt, ...) DN_PRINTF(2, 3);
static dn_rules *rules_from(const char *name, const char *fmt, ...) {
    char text[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    const char *p = write_tmp(name, text);
    dn_rules *r = NULL;
    if (!p || dn_rules_load(p, &r)) {
        printf("  rules load failed: %s\n", dn_last_error());
        return NULL;
    }
    return r;
}

/* A free loopback port: bind to port 0, read it back, close. */
static int free_port(void) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof a;
    int port = -1;
    if (s >= 0 && bind(s, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(s, (struct sockaddr *)&a, &l) == 0)
        port = ntohs(a.sin_port);
    if (s >= 0) close(s);
    return port;
}

static int can_connect(int port) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int ok = s >= 0 && connect(s, (struct sockaddr *)&a, sizeof a) == 0;
    if (s >= 0) close(s);
    return ok;
}

static int count_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    while (d && readdir(d)) n++;
    if (d) closedir(d);
    return n;
}

static int count_threads(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    int n = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "Threads:", 8)) n = atoi(line + 8);
    if (f) fclose(f);
    return n;
}

/* ------------------------------------------------------------ outcome collector */

#define MAXO 512
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int n;
    struct { long long id; char rule[64], kind[16], target[256], status[16], detail[512]; int attempts; } o[MAXO];
} collector;

static void col_init(collector *c) {
    memset(c, 0, sizeof *c);
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
}
static void col_destroy(collector *c) {
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
}

static void on_outcome(void *ctx, const dn_action_outcome *o) {
    collector *c = ctx;
    pthread_mutex_lock(&c->mu);
    if (c->n < MAXO) {
        c->o[c->n].id = (long long)o->prediction_id;
        snprintf(c->o[c->n].rule, sizeof c->o[0].rule, "%s", o->rule);
        snprintf(c->o[c->n].kind, sizeof c->o[0].kind, "%s", o->kind);
        snprintf(c->o[c->n].target, sizeof c->o[0].target, "%s", o->target);
        snprintf(c->o[c->n].status, sizeof c->o[0].status, "%s", o->status);
        snprintf(c->o[c->n].detail, sizeof c->o[0].detail, "%s", o->detail);
        c->o[c->n].attempts = o->attempts;
        c->n++;
    }
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

/* Waits until at least n outcomes arrived or secs passed; returns the count. */
static int col_wait(collector *c, int n, double secs) {
    double end = dn_now() + secs;
    pthread_mutex_lock(&c->mu);
    while (c->n < n && dn_now() < end) {
        pthread_mutex_unlock(&c->mu);
        msleep(5);
        pthread_mutex_lock(&c->mu);
    }
    int got = c->n;
    pthread_mutex_unlock(&c->mu);
    return got;
}

static int col_count(collector *c, const char *rule, const char *status) {
    int k = 0;
    pthread_mutex_lock(&c->mu);
    for (int i = 0; i < c->n; i++)
        if ((!rule || !strcmp(c->o[i].rule, rule)) && (!status || !strcmp(c->o[i].status, status))) k++;
    pthread_mutex_unlock(&c->mu);
    return k;
}

static char g_json[512];
static dn_pred_event make_event(long long id, double t, const char *line, const char *cls, float conf) {
    snprintf(g_json, sizeof g_json,
             "{\"id\":%lld,\"time\":%.1f,\"line\":\"%s\",\"class\":\"%s\",\"confidence\":%.3f,"
             "\"scores\":[0.1,0.2,0.7]}", id, t, line ? line : "", cls, conf);
    dn_pred_event ev = {.id = id, .time = t, .line = line, .station = "S1", .camera = "cam0",
                        .part = "P-1", .cls = cls, .confidence = conf, .uncertain = conf < 0.5f,
                        .json = g_json};
    return ev;
}

/* ------------------------------------------------------------ webhook receiver (libmicrohttpd) */

typedef struct {
    struct MHD_Daemon *d;
    int port;
    pthread_mutex_t mu;
    int hits;
    int fail_first;               /* answer 500 to this many requests first */
    char body[1024], rule_hdr[128], token[128], ctype[128], path[128];
} receiver;

typedef struct { char buf[4096]; size_t len; } upload;

static enum MHD_Result rx_handler(void *cls, struct MHD_Connection *con, const char *url, const char *method,
                                  const char *version, const char *data, size_t *size, void **con_cls) {
    receiver *r = cls;
    if (!*con_cls) {
        upload *u = calloc(1, sizeof *u);
        if (!u) return MHD_NO;
        *con_cls = u;
        return MHD_YES;
    }
    upload *u = *con_cls;
    if (*size) {
        size_t n = *size;
        if (u->len + n >= sizeof u->buf) n = sizeof u->buf - 1 - u->len;
        memcpy(u->buf + u->len, data, n);
        u->len += n;
        *size = 0;
        return MHD_YES;
    }
    unsigned code = 200;
    pthread_mutex_lock(&r->mu);
    r->hits++;
    if (r->hits <= r->fail_first) code = 500;
    snprintf(r->body, sizeof r->body, "%.*s", (int)u->len, u->buf);
    const char *h = MHD_lookup_connection_value(con, MHD_HEADER_KIND, "X-Defectnet-Rule");
    snprintf(r->rule_hdr, sizeof r->rule_hdr, "%s", h ? h : "");
    h = MHD_lookup_connection_value(con, MHD_HEADER_KIND, "X-Token");
    snprintf(r->token, sizeof r->token, "%s", h ? h : "");
    h = MHD_lookup_connection_value(con, MHD_HEADER_KIND, "Content-Type");
    snprintf(r->ctype, sizeof r->ctype, "%s", h ? h : "");
    snprintf(r->path, sizeof r->path, "%s %s", method, url);
    pthread_mutex_unlock(&r->mu);
    static const char ok[] = "{\"received\":true}";
    struct MHD_Response *resp = MHD_create_response_from_buffer(sizeof ok - 1, (void *)ok, MHD_RESPMEM_PERSISTENT);
    enum MHD_Result ret = MHD_queue_response(con, code, resp);
    MHD_destroy_response(resp);
    return ret;
}

static void rx_completed(void *cls, struct MHD_Connection *con, void **con_cls, enum MHD_RequestTerminationCode t) {
    free(*con_cls);
    *con_cls = NULL;
}

/* key/cert (PEM text) non-NULL: HTTPS receiver. */
static int rx_start_tls(receiver *r, int fail_first, const char *key, const char *cert) {
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->mu, NULL);
    r->fail_first = fail_first;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION;
    if (key)
        r->d = MHD_start_daemon(flags | MHD_USE_TLS, 0, NULL, NULL, rx_handler, r, MHD_OPTION_SOCK_ADDR, &a,
                                MHD_OPTION_NOTIFY_COMPLETED, rx_completed, r, MHD_OPTION_HTTPS_MEM_KEY, key,
                                MHD_OPTION_HTTPS_MEM_CERT, cert, MHD_OPTION_END);
    else
        r->d = MHD_start_daemon(flags, 0, NULL, NULL, rx_handler, r, MHD_OPTION_SOCK_ADDR, &a,
                                MHD_OPTION_NOTIFY_COMPLETED, rx_completed, r, MHD_OPTION_END);
    if (!r->d) return -1;
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(r->d, MHD_DAEMON_INFO_BIND_PORT);
    r->port = info ? info->port : 0;
    return r->port > 0 ? 0 : -1;
}

static int rx_start(receiver *r, int fail_first) { return rx_start_tls(r, fail_first, NULL, NULL); }

static void rx_stop(receiver *r) {
    if (r->d) MHD_stop_daemon(r->d);
    pthread_mutex_destroy(&r->mu);
}

static int rx_hits(receiver *r) {
    pthread_mutex_lock(&r->mu);
    int h = r->hits;
    pthread_mutex_unlock(&r->mu);
    return h;
}

/* A TCP listener that never accepts: connections complete in the kernel backlog and
 * then hang, like a wedged receiver. */
static int blackhole(int *port) {
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof a;
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 64) ||
        getsockname(s, (struct sockaddr *)&a, &l)) {
        if (s >= 0) close(s);
        return -1;
    }
    *port = ntohs(a.sin_port);
    return s;
}

/* ------------------------------------------------------------ mosquitto broker + subscriber */

static pid_t g_broker = -1;
static int g_broker_port;

/* Starts /usr/sbin/mosquitto on 127.0.0.1:port with extra config lines; waits until it
 * accepts connections. Returns the pid or -1. */
static pid_t spawn_broker(int port, const char *extra, const char *name) {
    if (access("/usr/sbin/mosquitto", X_OK)) return -1;
    char conf[1024], fname[64];
    snprintf(conf, sizeof conf, "listener %d 127.0.0.1\npersistence false\n%s", port,
             extra ? extra : "allow_anonymous true\n");
    snprintf(fname, sizeof fname, "%s.conf", name);
    const char *cpath = write_tmp(fname, conf);
    char cfg[512], logp[512];
    snprintf(cfg, sizeof cfg, "%s", cpath);
    snprintf(logp, sizeof logp, "%s/%s.log", g_dir, name);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        int fd = open(logp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) { dup2(fd, 1); dup2(fd, 2); }
        execl("/usr/sbin/mosquitto", "mosquitto", "-c", cfg, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 500; i++) {
        if (can_connect(port)) return pid;
        if (waitpid(pid, NULL, WNOHANG) == pid) return -1;
        msleep(10);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

static int broker_start_on(int port) {
    g_broker_port = port;
    g_broker = spawn_broker(port, NULL, "mosquitto");
    return g_broker > 0 ? 0 : -1;
}

static int broker_start(void) { return broker_start_on(free_port()); }

static void broker_stop(void) {
    if (g_broker > 0) {
        kill(g_broker, SIGTERM);
        waitpid(g_broker, NULL, 0);
        g_broker = -1;
    }
}

typedef struct {
    pthread_mutex_t mu;
    int n, subscribed;
    char topic[256], payload[1024];
    int qos, retain;
} sub_state;

static void sub_on_message(struct mosquitto *m, void *ud, const struct mosquitto_message *msg) {
    sub_state *s = ud;
    pthread_mutex_lock(&s->mu);
    s->n++;
    snprintf(s->topic, sizeof s->topic, "%s", msg->topic);
    snprintf(s->payload, sizeof s->payload, "%.*s", msg->payloadlen, (const char *)msg->payload);
    s->qos = msg->qos;
    s->retain = msg->retain;
    pthread_mutex_unlock(&s->mu);
}

static void sub_on_subscribe(struct mosquitto *m, void *ud, int mid, int n, const int *granted) {
    sub_state *s = ud;
    pthread_mutex_lock(&s->mu);
    s->subscribed = 1;
    pthread_mutex_unlock(&s->mu);
}

static void sub_on_connect(struct mosquitto *m, void *ud, int rc) {
    if (rc == 0) mosquitto_subscribe(m, NULL, "factory/#", 1);
}

static struct mosquitto *sub_start(sub_state *s) {
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
    struct mosquitto *m = mosquitto_new(NULL, true, s);
    if (!m) return NULL;
    mosquitto_connect_callback_set(m, sub_on_connect);
    mosquitto_message_callback_set(m, sub_on_message);
    mosquitto_subscribe_callback_set(m, sub_on_subscribe);
    if (mosquitto_connect(m, "127.0.0.1", g_broker_port, 30) != MOSQ_ERR_SUCCESS ||
        mosquitto_loop_start(m) != MOSQ_ERR_SUCCESS) {
        mosquitto_destroy(m);
        return NULL;
    }
    for (int i = 0; i < 500; i++) {
        pthread_mutex_lock(&s->mu);
        int ok = s->subscribed;
        pthread_mutex_unlock(&s->mu);
        if (ok) return m;
        msleep(10);
    }
    mosquitto_disconnect(m);
    mosquitto_loop_stop(m, false);
    mosquitto_destroy(m);
    return NULL;
}

static void sub_stop(struct mosquitto *m, sub_state *s) {
    if (m) {
        mosquitto_disconnect(m);
        mosquitto_loop_stop(m, false);
        mosquitto_destroy(m);
    }
    pthread_mutex_destroy(&s->mu);
}

/* ------------------------------------------------------------ rules parsing */

static int load_err(const char *name, const char *text, char *msg, size_t cap) {
    const char *p = write_tmp(name, text);
    dn_rules *r = NULL;
    dn_status st = dn_rules_load(p, &r);
    snprintf(msg, cap, "%s", dn_last_error());
    dn_rules_free(r);
    return st;
}

TEST(rules_example_file_parses) {
    dn_rules *r = NULL;
    dn_status st = dn_rules_load("examples/rules.json", &r);
    CHECK_MSG(st == DN_OK, "%s", dn_last_error());
    CHECK(dn_rules_count(r) >= 3);
    CHECK(dn_rules_name(r, 0) && *dn_rules_name(r, 0));
    dn_rules_free(r);
}

/* Deterministic mutations of examples/rules.json (byte flips, deletions, truncations,
 * duplicated spans): each either parses or fails with one line naming the source; no crash,
 * no leak (run under ASan). */
TEST(rules_parser_survives_mutations) {
    char *orig = slurp("examples/rules.json");
    CHECK(orig);
    if (!orig) return;
    size_t n = strlen(orig);
    char *buf = malloc(2 * n + 16);
    dn_rng rng;
    dn_rng_seed(&rng, 1234);
    static const char junk[] = "{}[],:\"0123456789.-+eEtrufalsn \\u";
    int parsed = 0, failed = 0, bad_msg = 0;
    for (int it = 0; it < 3000 && buf; it++) {
        memcpy(buf, orig, n + 1);
        size_t len = n;
        int edits = 1 + (int)dn_rng_below(&rng, 4);
        for (int e = 0; e < edits; e++) {
            size_t pos = dn_rng_below(&rng, (uint32_t)len);
            switch (dn_rng_below(&rng, 4)) {
            case 0: buf[pos] = junk[dn_rng_below(&rng, sizeof junk - 1)]; break;
            case 1: memmove(buf + pos, buf + pos + 1, len - pos); len--; break;
            case 2: len = pos; buf[len] = 0; break;
            default: { /* duplicate a span */
                size_t sl = 1 + dn_rng_below(&rng, 40);
                if (pos + sl > len) sl = len - pos;
                if (len + sl < 2 * n + 8) {
                    memmove(buf + pos + sl, buf + pos, len - pos + 1);
                    len += sl;
                }
            }
            }
            if (len == 0) break;
        }
        dn_rules *r = NULL;
        dn_status st = dn_rules_parse(buf, len, "mut.json", &r);
        if (st == DN_OK) { parsed++; CHECK(r && dn_rules_count(r) >= 0); dn_rules_free(r); }
        else {
            failed++;
            const char *m = dn_last_error();
            if (strncmp(m, "mut.json: ", 10) || strchr(m, '\n')) {
                if (!bad_msg) printf("  bad message: %s\n", m);
                bad_msg++;
            }
        }
    }
    printf("  3000 mutated files: %d parsed, %d refused\n", parsed, failed);
    CHECK(bad_msg == 0);
    CHECK(failed > 0);
    free(buf);
    free(orig);
}

TEST(rules_error_bad_json) {
    char m[1100];
    CHECK(load_err("bad.json", "{\"rules\": [ {\"name\": \"x\", } ]}", m, sizeof m) == DN_ERR_FORMAT);
    CHECK_MSG(strstr(m, "bad.json") && strstr(m, "invalid JSON") && strstr(m, "line 1"), "%s", m);
    CHECK(!strchr(m, '\n'));
    printf("  message: %s\n", m);
}

TEST(rules_error_unknown_condition) {
    char m[1100];
    CHECK(load_err("unk.json",
                   "{\"rules\": [{\"name\": \"scratch-alarm\", \"when\": {\"colour\": \"red\"},\n"
                   " \"actions\": [{\"type\": \"command\", \"argv\": [\"true\"]}]}]}", m, sizeof m) == DN_ERR_FORMAT);
    CHECK_MSG(strstr(m, "unk.json") && strstr(m, "rule 'scratch-alarm'") && strstr(m, "unknown condition \"colour\""),
              "%s", m);
    printf("  message: %s\n", m);
}

TEST(rules_error_missing_action_target) {
    char m[1100];
    CHECK(load_err("miss.json",
                   "{\"rules\": [{\"name\": \"hook\", \"when\": {},\n"
                   " \"actions\": [{\"type\": \"command\", \"argv\": [\"true\"]}, {\"type\": \"webhook\"}]}]}",
                   m, sizeof m) == DN_ERR_FORMAT);
    CHECK_MSG(strstr(m, "miss.json") && strstr(m, "rule 'hook'") && strstr(m, "action 2 (webhook)") &&
              strstr(m, "missing \"url\""), "%s", m);
    printf("  message: %s\n", m);
    CHECK(load_err("miss2.json",
                   "{\"rules\": [{\"name\": \"pub\", \"when\": {}, \"actions\": [{\"type\": \"mqtt\", \"topic\": \"a/b\"}]}]}",
                   m, sizeof m) == DN_ERR_FORMAT);
    CHECK_MSG(strstr(m, "rule 'pub'") && strstr(m, "missing \"broker\""), "%s", m);
    CHECK(load_err("miss3.json",
                   "{\"rules\": [{\"name\": \"cmd\", \"when\": {}, \"actions\": [{\"type\": \"command\"}]}]}",
                   m, sizeof m) == DN_ERR_FORMAT);
    CHECK_MSG(strstr(m, "rule 'cmd'") && strstr(m, "missing \"argv\""), "%s", m);
}

TEST(rules_error_bad_type) {
    char m[1100];
    CHECK(load_err("type.json",
                   "{\"rules\": [{\"name\": \"conf\", \"when\": {\"min_confidence\": \"high\"},\n"
                   " \"actions\": [{\"type\": \"command\", \"argv\": [\"true\"]}]}]}", m, sizeof m) == DN_ERR_FORMAT);
    CHECK_MSG(strstr(m, "type.json") && strstr(m, "rule 'conf'") && strstr(m, "\"min_confidence\" must be a number"),
              "%s", m);
    printf("  message: %s\n", m);
    CHECK(load_err("type2.json",
                   "{\"rules\": [{\"name\": \"q\", \"when\": {}, \"actions\": [{\"type\": \"mqtt\", "
                   "\"broker\": \"mqtt://127.0.0.1:1883\", \"topic\": \"a/{lane}\"}]}]}", m, sizeof m) == DN_ERR_FORMAT);
    CHECK_MSG(strstr(m, "unknown placeholder {lane}"), "%s", m);
    CHECK(load_err("type3.json",
                   "{\"rules\": [{\"name\": \"n\", \"when\": {\"n_of_last\": {\"n\": 6, \"m\": 5}}, "
                   "\"actions\": [{\"type\": \"command\", \"argv\": [\"true\"]}]}]}", m, sizeof m) == DN_ERR_FORMAT);
    CHECK_MSG(strstr(m, "rule 'n'") && strstr(m, "n_of_last.n"), "%s", m);
    CHECK(load_err("type4.json", "[1,2]", m, sizeof m) == DN_ERR_FORMAT);
    CHECK_MSG(strstr(m, "type4.json") && strstr(m, "top level must be an object"), "%s", m);
    CHECK(load_err("type5.json",
                   "{\"rules\": [{\"name\": \"d\", \"when\": {}, \"actions\": [{\"type\": \"command\", \"argv\": [\"true\"]}]},"
                   "{\"name\": \"d\", \"when\": {}, \"actions\": [{\"type\": \"command\", \"argv\": [\"true\"]}]}]}",
                   m, sizeof m) == DN_ERR_FORMAT);
    CHECK_MSG(strstr(m, "rule 'd'") && strstr(m, "duplicate"), "%s", m);
    dn_rules *r = NULL;
    CHECK(dn_rules_load("/nonexistent/rules.json", &r) == DN_ERR_IO && !r);
    CHECK(strstr(dn_last_error(), "/nonexistent/rules.json"));
}

/* ------------------------------------------------------------ command actions */

TEST(command_gets_prediction_json_on_stdin) {
    char out[300], rules_txt[1024];
    snprintf(out, sizeof out, "%s/cmd_out.json", g_dir);
    unlink(out);
    snprintf(rules_txt, sizeof rules_txt, "cat > '%s'; echo $DN_RULE $DN_CLASS $DN_LINE > '%s.env'", out, out);
    dn_rules *r = rules_from("cmd.json",
                             "{\"rules\": [{\"name\": \"divert\", \"when\": {\"class\": [\"scratches\", \"crazing\"],"
                             " \"min_confidence\": 0.6}, \"actions\": [{\"type\": \"command\", "
                             "\"argv\": [\"sh\", \"-c\", \"%s\"], \"timeout_s\": 10}]}]}", rules_txt);
    CHECK(r);
    if (!r) return;
    collector c;
    col_init(&c);
    dn_actions *a = NULL;
    CHECK(dn_actions_new(r, 0, on_outcome, &c, &a) == DN_OK);
    dn_rules_free(r); /* the executor keeps its own reference */
    dn_pred_event ev = make_event(1, 1000, "L1", "pitted_surface", 0.9f);
    CHECK(dn_actions_submit(a, &ev) == 0);  /* class not in the set */
    ev = make_event(2, 1001, "L1", "scratches", 0.5f);
    CHECK(dn_actions_submit(a, &ev) == 0);  /* below min_confidence */
    ev = make_event(3, 1002, "L1", "scratches", 0.95f);
    char expect[512];
    snprintf(expect, sizeof expect, "%s", g_json);
    CHECK(dn_actions_submit(a, &ev) == 1);
    CHECK(col_wait(&c, 1, 20) == 1);
    CHECK_MSG(!strcmp(c.o[0].status, "ok"), "%s: %s", c.o[0].status, c.o[0].detail);
    CHECK(c.o[0].id == 3 && !strcmp(c.o[0].rule, "divert") && !strcmp(c.o[0].kind, "command"));
    CHECK(c.o[0].attempts == 1);
    char *got = slurp(out);
    CHECK_MSG(got && !strcmp(got, expect), "stdin got: %s", got ? got : "(none)");
    free(got);
    char envp[320];
    snprintf(envp, sizeof envp, "%s.env", out);
    got = slurp(envp);
    CHECK_MSG(got && !strcmp(got, "divert scratches L1\n"), "env: %s", got ? got : "(none)");
    free(got);
    dn_actions_free(a);
    col_destroy(&c);
}

TEST(command_failure_retried_then_failed) {
    char cnt[300];
    snprintf(cnt, sizeof cnt, "%s/attempts.txt", g_dir);
    unlink(cnt);
    dn_rules *r = rules_from("cmdfail.json",
                             "{\"rules\": [{\"name\": \"stop-line\", \"when\": {}, \"actions\": [{\"type\": \"command\","
                             " \"argv\": [\"sh\", \"-c\", \"echo x >> '%s'; echo conveyor offline >&2; exit 3\"],"
                             " \"retries\": 2, \"backoff_s\": 0.02}, "
                             "{\"type\": \"command\", \"argv\": [\"/nonexistent/defectnet-hook\"], \"retries\": 0}]}]}",
                             cnt);
    CHECK(r);
    if (!r) return;
    collector c;
    col_init(&c);
    dn_actions *a = NULL;
    CHECK(dn_actions_new(r, 0, on_outcome, &c, &a) == DN_OK);
    dn_rules_free(r);
    dn_pred_event ev = make_event(7, 1000, "L2", "inclusion", 0.8f);
    CHECK(dn_actions_submit(a, &ev) == 2);
    CHECK(col_wait(&c, 2, 20) == 2);
    for (int i = 0; i < 2; i++) {
        CHECK(!strcmp(c.o[i].status, "failed"));
        if (strstr(c.o[i].target, "nonexistent")) {
            CHECK_MSG(c.o[i].attempts == 1 && strstr(c.o[i].detail, "cannot run"), "%s", c.o[i].detail);
        } else {
            CHECK_MSG(c.o[i].attempts == 3 && strstr(c.o[i].detail, "exit 3") &&
                      strstr(c.o[i].detail, "conveyor offline"), "%d %s", c.o[i].attempts, c.o[i].detail);
        }
        printf("  %s: %s\n", c.o[i].target, c.o[i].detail);
    }
    char *got = slurp(cnt);
    CHECK(got && !strcmp(got, "x\nx\nx\n"));
    free(got);
    dn_actions_free(a);
    col_destroy(&c);
}

static int proc_alive(pid_t pid) {
    char p[64], buf[512];
    snprintf(p, sizeof p, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(p, "r");
    if (!f) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *rp = strrchr(buf, ')');
    return rp && rp[1] == ' ' && rp[2] != 'Z' && rp[2] != 'X';
}

/* A payload much larger than a pipe buffer reaches the command intact (partial writes). */
TEST(command_large_payload) {
    char out[300];
    snprintf(out, sizeof out, "%s/big.json", g_dir);
    unlink(out);
    dn_rules *r = rules_from("big.json.rules",
                             "{\"rules\": [{\"name\": \"big\", \"when\": {}, \"actions\": [{\"type\": \"command\", "
                             "\"argv\": [\"sh\", \"-c\", \"sleep 0.2; cat > '%s'\"]}]}]}", out);
    CHECK(r);
    if (!r) return;
    size_t n = 600000;
    char *js = malloc(n + 64);
    CHECK(js);
    if (!js) { dn_rules_free(r); return; }
    int k = snprintf(js, n + 64, "{\"id\":5,\"pad\":\"");
    for (size_t i = 0; i < n; i++) js[k + i] = (char)('a' + i % 26);
    strcpy(js + k + n, "\"}");
    collector c;
    col_init(&c);
    dn_actions *a = NULL;
    CHECK(dn_actions_new(r, 0, on_outcome, &c, &a) == DN_OK);
    dn_rules_free(r);
    dn_pred_event ev = make_event(5, 1000, "L1", "x", 0.9f);
    ev.json = js;
    CHECK(dn_actions_submit(a, &ev) == 1);
    CHECK(col_wait(&c, 1, 30) == 1);
    CHECK_MSG(!strcmp(c.o[0].status, "ok"), "%s", c.o[0].detail);
    char *got = slurp(out);
    CHECK(got && strlen(got) == strlen(js) && !strcmp(got, js));
    free(got);
    free(js);
    dn_actions_free(a);
    col_destroy(&c);
}

TEST(command_timeout_killed) {
    char pidf[300];
    snprintf(pidf, sizeof pidf, "%s/child.pid", g_dir);
    unlink(pidf);
    dn_rules *r = rules_from("timeout.json",
                             "{\"rules\": [{\"name\": \"slow\", \"when\": {}, \"actions\": [{\"type\": \"command\","
                             " \"argv\": [\"sh\", \"-c\", \"sleep 60 & echo $! > '%s'; wait\"],"
                             " \"timeout_s\": 0.5, \"retries\": 0}]}]}", pidf);
    CHECK(r);
    if (!r) return;
    collector c;
    col_init(&c);
    dn_actions *a = NULL;
    CHECK(dn_actions_new(r, 0, on_outcome, &c, &a) == DN_OK);
    dn_rules_free(r);
    dn_pred_event ev = make_event(9, 1000, "L1", "patches", 0.99f);
    double t0 = dn_now();
    CHECK(dn_actions_submit(a, &ev) == 1);
    CHECK(col_wait(&c, 1, 30) == 1);
    double el = dn_now() - t0;
    CHECK_MSG(!strcmp(c.o[0].status, "failed") && strstr(c.o[0].detail, "timeout"), "%s", c.o[0].detail);
    printf("  outcome after %.2f s: %s\n", el, c.o[0].detail);
    CHECK(el < 20); /* sanity: the 60 s sleep was not waited for */
    char *pid_s = slurp(pidf);
    CHECK(pid_s);
    if (pid_s) {
        pid_t child = (pid_t)atoi(pid_s);
        int alive = 1;
        for (int i = 0; i < 200 && alive; i++) { alive = proc_alive(child); if (alive) msleep(10); }
        CHECK_MSG(!alive, "grandchild %d (sleep 60) still running: process group not killed", (int)child);
        if (alive) kill(child, SIGKILL);
    }
    free(pid_s);
    dn_actions_free(a);
    col_destroy(&c);
}

/* ------------------------------------------------------------ webhook */

TEST(webhook_post_received) {
    receiver rx;
    if (rx_start(&rx, 0)) SKIP("cannot start the libmicrohttpd receiver");
    dn_rules *r = rules_from("hook.json",
                             "{\"rules\": [{\"name\": \"notify\", \"when\": {\"class\": \"scratches\"}, "
                             "\"actions\": [{\"type\": \"webhook\", \"url\": \"http://127.0.0.1:%d/hooks/defect\","
                             " \"headers\": {\"X-Token\": \"s3cret\"}, \"timeout_s\": 10}]}]}", rx.port);
    CHECK(r);
    if (!r) { rx_stop(&rx); return; }
    collector c;
    col_init(&c);
    dn_actions *a = NULL;
    CHECK(dn_actions_new(r, 0, on_outcome, &c, &a) == DN_OK);
    dn_rules_free(r);
    dn_pred_event ev = make_event(11, 1000, "L3", "scratches", 0.77f);
    char expect[512];
    snprintf(expect, sizeof expect, "%s", g_json);
    CHECK(dn_actions_submit(a, &ev) == 1);
    CHECK(col_wait(&c, 1, 20) == 1);
    CHECK_MSG(!strcmp(c.o[0].status, "ok") && strstr(c.o[0].detail, "HTTP 200"), "%s", c.o[0].detail);
    CHECK(!strcmp(c.o[0].kind, "webhook"));
    pthread_mutex_lock(&rx.mu);
    CHECK_MSG(!strcmp(rx.body, expect), "body: %s", rx.body);
    CHECK(!strcmp(rx.rule_hdr, "notify"));
    CHECK(!strcmp(rx.token, "s3cret"));
    CHECK(!strcmp(rx.ctype, "application/json"));
    CHECK(!strcmp(rx.path, "POST /hooks/defect"));
    pthread_mutex_unlock(&rx.mu);
    dn_actions_free(a);
    rx_stop(&rx);
    col_destroy(&c);
}

TEST(webhook_500_retried_until_ok) {
    receiver rx;
    if (rx_start(&rx, 2)) SKIP("cannot start the libmicrohttpd receiver");
    dn_rules *r = rules_from("hook500.json",
                             "{\"rules\": [{\"name\": \"flaky\", \"when\": {}, \"actions\": [{\"type\": \"webhook\","
                             " \"url\": \"http://127.0.0.1:%d/h\", \"retries\": 3, \"backoff_s\": 0.05}]}]}", rx.port);
    CHECK(r);
    if (!r) { rx_stop(&rx); return; }
    collector c;
    col_init(&c);
    dn_actions *a = NULL;
    CHECK(dn_actions_new(r, 0, on_outcome, &c, &a) == DN_OK);
    dn_rules_free(r);
    dn_pred_event ev = make_event(12, 1000, "L3", "crazing", 0.7f);
    CHECK(dn_actions_submit(a, &ev) == 1);
    CHECK(col_wait(&c, 1, 20) == 1);
    CHECK_MSG(!strcmp(c.o[0].status, "ok") && c.o[0].attempts == 3, "%s after %d: %s", c.o[0].status,
              c.o[0].attempts, c.o[0].detail);
    CHECK(rx_hits(&rx) == 3);
    dn_actions_free(a);
    rx_stop(&rx);
    col_destroy(&c);
}

/* HTTPS receiver with a self-signed certificate (made with openssl at test time): the
 * webhook verifies it against "ca_file", and refuses it without. */
TEST(webhook_https_ca_file) {
    if (access("/usr/bin/openssl", X_OK)) SKIP("openssl not installed (needed to make a test certificate)");
    if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) SKIP("libmicrohttpd built without TLS");
    char cmd[1200], keyp[300], certp[300];
    snprintf(keyp, sizeof keyp, "%s/key.pem", g_dir);
    snprintf(certp, sizeof certp, "%s/cert.pem", g_dir);
    snprintf(cmd, sizeof cmd, "/usr/bin/openssl req -x509 -newkey rsa:2048 -nodes -keyout '%s' -out '%s' -days 2 "
             "-subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 >/dev/null 2>&1", keyp, certp);
    if (system(cmd) != 0) SKIP("openssl could not make a test certificate");
    char *key = slurp(keyp), *cert = slurp(certp);
    CHECK(key && cert);
    receiver rx;
    if (!key || !cert || rx_start_tls(&rx, 0, key, cert)) {
        free(key); free(cert);
        SKIP("cannot start the HTTPS receiver");
    }
    dn_rules *r = rules_from("https.json",
                             "{\"rules\": [{\"name\": \"verified\", \"when\": {\"line\": \"L1\"}, \"actions\": [{\"type\": \"webhook\", "
                             "\"url\": \"https://127.0.0.1:%d/secure\", \"ca_file\": \"%s\"}]},"
                             "{\"name\": \"unverified\", \"when\": {\"line\": \"L2\"}, \"actions\": [{\"type\": \"webhook\", "
                             "\"url\": \"https://127.0.0.1:%d/secure\", \"retries\": 0}]}]}", rx.port, certp, rx.port);
    CHECK(r);
    collector c;
    col_init(&c);
    dn_actions *a = NULL;
    if (r) {
        CHECK(dn_actions_new(r, 0, on_outcome, &c, &a) == DN_OK);
        dn_rules_free(r);
        dn_pred_event ev = make_event(13, 1000, "L1", "scratches", 0.9f);
        char expect[512];
        snprintf(expect, sizeof expect, "%s", g_json);
        CHECK(dn_actions_submit(a, &ev) == 1);
        CHECK(col_wait(&c, 1, 20) == 1);
        CHECK_MSG(!strcmp(c.o[0].status, "ok") && strstr(c.o[0].detail, "HTTP 200"), "%s", c.o[0].detail);
        pthread_mutex_lock(&rx.mu);
        CHECK_MSG(!strcmp(rx.body, expect), "%s", rx.body);
        pthread_mutex_unlock(&rx.mu);
        ev = make_event(14, 1001, "L2", "scratches", 0.9f);
        CHECK(dn_actions_submit(a, &ev) == 1);
        CHECK(col_wait(&c, 2, 20) == 2);
        CHECK_MSG(!strcmp(c.o[1].status, "failed") && strstr(c.o[1].detail, "certificate"), "%s", c.o[1].detail);
        printf("  without ca_file: %s\n", c.o[1].detail);
        CHECK(rx_hits(&rx) == 1);
        dn_actions_free(a);
    }
    char m[1100];
    CHECK(load_err("badca.json", "{\"rules\": [{\"name\": \"h\", \"when\": {}, \"actions\": [{\"type\": \"webhook\", "
                   "\"url\": \"https://x/\", \"ca_file\": \"/nonexistent/ca.pem\"}]}]}", m, sizeof m) == DN_ERR_FORMAT);
    CHECK_MSG(strstr(m, "rule 'h'") && strstr(m, "/nonexistent/ca.pem"), "%s", m);
    rx_stop(&rx);
    free(key);
    free(cert);
    col_destroy(&c);
}

/* Unreachable webhook (closed port) and a wedged one (accepts, never answers): retried with
 * backoff then failed; submit never waits on them; a command action on the same
 * predictions completes while the dead targets are still retrying. */
TEST(dead_webhook_does_not_block) {
    int closed = free_port(), bh_port = 0;
    int bh = blackhole(&bh_port);
    CHECK(bh >= 0);
    if (bh < 0) return;
    char out[300];
    snprintf(out, sizeof out, "%s/alive.txt", g_dir);
    unlink(out);
    dn_rules *r = rules_from("dead.json",
                             "{\"queue_capacity\": 64, \"drain_s\": 0.2, \"rules\": ["
                             "{\"name\": \"refused\", \"when\": {}, \"actions\": [{\"type\": \"webhook\", "
                             "\"url\": \"http://127.0.0.1:%d/x\", \"retries\": 2, \"backoff_s\": 0.05, \"timeout_s\": 2}]},"
                             "{\"name\": \"wedged\", \"when\": {}, \"actions\": [{\"type\": \"webhook\", "
                             "\"url\": \"http://127.0.0.1:%d/x\", \"retries\": 1, \"backoff_s\": 0.05, \"timeout_s\": 0.3}]},"
                             "{\"name\": \"local\", \"when\": {}, \"actions\": [{\"type\": \"command\", "
                             "\"argv\": [\"sh\", \"-c\", \"cat >> '%s'; echo >> '%s'\"]}]}]}",
                             closed, bh_port, out, out);
    CHECK(r);
    if (!r) { close(bh); return; }
    collector c;
    col_init(&c);
    dn_actions *a = NULL;
    CHECK(dn_actions_new(r, 0, on_outcome, &c, &a) == DN_OK);
    dn_rules_free(r);
    const int N = 10;
    double worst = 0, total = 0;
    for (int i = 0; i < N; i++) {
        dn_pred_event ev = make_event(100 + i, 1000 + i, "L1", "scratches", 0.9f);
        double t0 = dn_now();
        int fired = dn_actions_submit(a, &ev);
        double dt = dn_now() - t0;
        CHECK(fired == 3);
        total += dt;
        if (dt > worst) worst = dt;
    }
    printf("  dn_actions_submit latency with dead targets: mean %.1f us, max %.1f us (%d submits)\n",
           total / N * 1e6, worst * 1e6, N);
    CHECK(worst < 2.0); /* sanity only: it must not wait on a target */
    /* the wedged webhook needs >= 10 x 2 x 0.3 s; all command outcomes arrive well before */
    double end = dn_now() + 30;
    while (col_count(&c, "local", NULL) < N && dn_now() < end) msleep(10);
    int wedged_done = col_count(&c, "wedged", NULL);
    CHECK(col_count(&c, "local", "ok") == N);
    CHECK_MSG(wedged_done < N, "the wedged webhook finished first (%d)", wedged_done);
    CHECK(dn_actions_pending(a) > 0);
    /* now wait for everything */
    end = dn_now() + 60;
    while (col_count(&c, NULL, NULL) < 3 * N && dn_now() < end) msleep(20);
    CHECK(col_count(&c, "refused", "failed") == N);
    CHECK(col_count(&c, "wedged", "failed") == N);
    CHECK(dn_actions_pending(a) == 0);
    pthread_mutex_lock(&c.mu);
    for (int i = 0; i < c.n; i++) {
        if (!strcmp(c.o[i].rule, "refused")) {
            CHECK_MSG(c.o[i].attempts == 3, "%d", c.o[i].attempts);
            if (c.o[i].id == 100) printf("  refused: %s\n", c.o[i].detail);
        }
        if (!strcmp(c.o[i].rule, "wedged")) {
            CHECK(c.o[i].attempts == 2);
            if (c.o[i].id == 100) printf("  wedged: %s\n", c.o[i].detail);
        }
    }
    pthread_mutex_unlock(&c.mu);
    char *got = slurp(out);
    int lines = 0;
    for (char *p = got; p && *p; p++) lines += *p == '\n';
    CHECK(lines == N);
    free(got);
    dn_actions_free(a);
    close(bh);
    col_destroy(&c);
}

/* ------------------------------------------------------------ MQTT */

TEST(mqtt_publish_qos1_received) {
    if (g_broker < 0) SKIP("mosquitto broker not available (/usr/sbin/mosquitto)");
    sub_state s;
    struct mosquitto *sub = sub_start(&s);
    CHECK(sub);
    if (!sub) return;
    dn_rules *r = rules_from("mqtt.json",
                             "{\"rules\": [{\"name\": \"publish\", \"when\": {\"class\": [\"scratches\"]}, "
                             "\"actions\": [{\"type\": \"mqtt\", \"broker\": \"mqtt://127.0.0.1:%d\", "
                             "\"topic\": \"factory/{line}/defect/{class}\", \"qos\": 1}]}]}", g_broker_port);
    CHECK(r);
    if (!r) { sub_stop(sub, &s); return; }
    collector c;
    col_init(&c);
    dn_actions *a = NULL;
    CHECK(dn_actions_new(r, 0, on_outcome, &c, &a) == DN_OK);
    dn_rules_free(r);
    dn_pred_event ev = make_event(21, 1000, "L/7", "scratches", 0.88f); /* '/' in a value is sanitised */
    char expect[512];
    snprintf(expect, sizeof expect, "%s", g_json);
    CHECK(dn_actions_submit(a, &ev) == 1);
    CHECK(col_wait(&c, 1, 20) == 1);
    CHECK_MSG(!strcmp(c.o[0].status, "ok") && strstr(c.o[0].detail, "PUBACK"), "%s", c.o[0].detail);
    CHECK_MSG(strstr(c.o[0].target, "factory/L_7/defect/scratches"), "%s", c.o[0].target);
    /* second message reuses the same connection */
    ev = make_event(22, 1001, "L8", "scratches", 0.91f);
    CHECK(dn_actions_submit(a, &ev) == 1);
    CHECK(col_wait(&c, 2, 20) == 2);
    CHECK(!strcmp(c.o[1].status, "ok"));
    for (int i = 0; i < 500; i++) {
        pthread_mutex_lock(&s.mu);
        int n = s.n;
        pthread_mutex_unlock(&s.mu);
        if (n >= 2) break;
        msleep(10);
    }
    pthread_mutex_lock(&s.mu);
    CHECK_MSG(s.n == 2, "subscriber got %d messages", s.n);
    CHECK_MSG(!strcmp(s.topic, "factory/L8/defect/scratches"), "%s", s.topic);
    CHECK_MSG(!strcmp(s.payload, g_json), "%s", s.payload);
    CHECK(s.qos == 1);
    pthread_mutex_unlock(&s.mu);
    (void)expect;
    dn_actions_free(a);
    sub_stop(sub, &s);
    col_destroy(&c);
}

TEST(mqtt_retained_message) {
    if (g_broker < 0) SKIP("mosquitto broker not available (/usr/sbin/mosquitto)");
    dn_rules *r = rules_from("mqttret.json",
                             "{\"rules\": [{\"name\": \"status\", \"when\": {}, "
                             "\"actions\": [{\"type\": \"mqtt\", \"broker\": \"mqtt://127.0.0.1:%d\", "
                             "\"topic\": \"factory/{line}/last\", \"retain\": true}]}]}", g_broker_port);
    CHECK(r);
    if (!r) return;
    collector c;
    col_init(&c);
    dn_actions *a = NULL;
    CHECK(dn_actions_new(r, 0, on_outcome, &c, &a) == DN_OK);
    dn_rules_free(r);
    dn_pred_event ev = make_event(31, 1000, "R1", "rolled-in_scale", 0.66f);
    CHECK(dn_actions_submit(a, &ev) == 1);
    CHECK(col_wait(&c, 1, 20) == 1);
    CHECK_MSG(!strcmp(c.o[0].status, "ok"), "%s", c.o[0].detail);
    dn_actions_free(a);
    /* a subscriber connecting afterwards still gets it */
    sub_state s;
    struct mosquitto *sub = sub_start(&s);
    CHECK(sub);
    for (int i = 0; sub && i < 500; i++) {
        pthread_mutex_lock(&s.mu);
        int n = s.n;
        pthread_mutex_unlock(&s.mu);
        if (n >= 1) break;
        msleep(10);
    }
    pthread_mutex_lock(&s.mu);
    CHECK(s.n == 1 && s.retain && !strcmp(s.topic, "factory/R1/last") && !strcmp(s.payload, g_json));
    pthread_mutex_unlock(&s.mu);
    if (sub) { /* clear the retained message for later tests */
        mosquitto_publish(sub, NULL, "factory/R1/last", 0, NULL, 1, true);
        msleep(50);
    }
    sub_stop(sub, &s);
    col_destroy(&c);
}

/* The broker goes away and comes back on the same port: the executor's connection
 * reconnects and a retried publish gets through. */
TEST(mqtt_broker_restart_reconnects) {
    if (g_broker < 0) SKIP("mosquitto broker not available (/usr/sbin/mosquitto)");
    dn_rules *r = rules_from("mqttre.json",
                             "{\"drain_s\": 0.5, \"rules\": [{\"name\": \"re\", \"when\": {}, "
                             "\"actions\": [{\"type\": \"mqtt\", \"broker\": \"mqtt://127.0.0.1:%d\", "
                             "\"topic\": \"factory/{line}/re\", \"timeout_s\": 1, \"retries\": 12, \"backoff_s\": 0.2, "
                             "\"backoff_max_s\": 1}]}]}", g_broker_port);
    CHECK(r);
    if (!r) return;
    collector c;
    col_init(&c);
    dn_actions *a = NULL;
    CHECK(dn_actions_new(r, 0, on_outcome, &c, &a) == DN_OK);
    dn_rules_free(r);
    dn_pred_event ev = make_event(35, 1000, "R2", "patches", 0.9f);
    CHECK(dn_actions_submit(a, &ev) == 1);
    CHECK(col_wait(&c, 1, 20) == 1);
    CHECK_MSG(!strcmp(c.o[0].status, "ok") && c.o[0].attempts == 1, "%s", c.o[0].detail);
    int port = g_broker_port;
    broker_stop();
    ev = make_event(36, 1001, "R2", "patches", 0.9f);
    CHECK(dn_actions_submit(a, &ev) == 1);
    msleep(1500); /* a few failed attempts against the dead broker */
    CHECK(c.n == 1);
    g_broker_port = port;
    int restarted = broker_start_on(port) == 0;
    CHECK(restarted);
    CHECK(col_wait(&c, 2, 40) == 2);
    CHECK_MSG(!strcmp(c.o[1].status, "ok") && c.o[1].attempts > 1, "%s after %d: %s", c.o[1].status,
              c.o[1].attempts, c.o[1].detail);
    printf("  after broker restart: %s, %d attempts: %s\n", c.o[1].status, c.o[1].attempts, c.o[1].detail);
    dn_actions_free(a);
    col_destroy(&c);
}

/* A broker requiring a password: the right credentials publish, wrong ones are reported
 * as refused at once (not after the timeout). */
TEST(mqtt_credentials) {
    if (g_broker < 0) SKIP("mosquitto broker not available (/usr/sbin/mosquitto)");
    if (access("/usr/bin/mosquitto_passwd", X_OK)) SKIP("mosquitto_passwd not installed");
    char pw[400], cmd[600], extra[600];
    snprintf(pw, sizeof pw, "%s/passwd", g_dir);
    snprintf(cmd, sizeof cmd, "/usr/bin/mosquitto_passwd -b -c '%s' line1 's3cret pass' >/dev/null 2>&1", pw);
    CHECK(system(cmd) == 0);
    /* a broker started as root drops to the "mosquitto" user before reading the file */
    chmod(g_dir, 0755);
    chmod(pw, 0644);
    snprintf(extra, sizeof extra, "allow_anonymous false\npassword_file %s\n", pw);
    int port = free_port();
    pid_t auth = spawn_broker(port, extra, "mosquitto-auth");
    CHECK(auth > 0);
    if (auth <= 0) return;
    dn_rules *r = rules_from("mqttauth.json",
                             "{\"rules\": [{\"name\": \"good\", \"when\": {}, \"actions\": [{\"type\": \"mqtt\", "
                             "\"broker\": \"mqtt://127.0.0.1:%d\", \"topic\": \"factory/{line}\", \"username\": \"line1\", "
                             "\"password\": \"s3cret pass\", \"client_id\": \"defectnet-test-good\"}]},"
                             "{\"name\": \"bad\", \"when\": {}, \"actions\": [{\"type\": \"mqtt\", "
                             "\"broker\": \"mqtt://127.0.0.1:%d\", \"topic\": \"factory/{line}\", \"username\": \"line1\", "
                             "\"password\": \"wrong\", \"timeout_s\": 10, \"retries\": 0}]}]}", port, port);
    CHECK(r);
    if (!r) { kill(auth, SIGTERM); waitpid(auth, NULL, 0); return; }
    collector c;
    col_init(&c);
    dn_actions *a = NULL;
    CHECK(dn_actions_new(r, 0, on_outcome, &c, &a) == DN_OK);
    dn_rules_free(r);
    dn_pred_event ev = make_event(33, 1000, "L1", "patches", 0.9f);
    CHECK(dn_actions_submit(a, &ev) == 2);
    CHECK(col_wait(&c, 2, 30) == 2);
    CHECK(col_count(&c, "good", "ok") == 1);
    CHECK(col_count(&c, "bad", "failed") == 1);
    for (int i = 0; i < c.n; i++)
        if (!strcmp(c.o[i].rule, "bad")) {
            CHECK_MSG(strstr(c.o[i].detail, "refused") && strstr(c.o[i].detail, "not authorised") &&
                      !strstr(c.o[i].detail, "within"), "%s", c.o[i].detail);
            printf("  wrong password: %s\n", c.o[i].detail);
        }
    dn_actions_free(a);
    kill(auth, SIGTERM);
    waitpid(auth, NULL, 0);
    col_destroy(&c);
}

TEST(mqtt_unreachable_broker_retried_then_failed) {
    int closed = free_port();
    dn_rules *r = rules_from("mqttdead.json",
                             "{\"drain_s\": 0.2, \"rules\": [{\"name\": \"nobroker\", \"when\": {}, "
                             "\"actions\": [{\"type\": \"mqtt\", \"broker\": \"mqtt://127.0.0.1:%d\", "
                             "\"topic\": \"factory/{line}\", \"timeout_s\": 0.2, \"retries\": 2, \"backoff_s\": 0.05}]}]}",
                             closed);
    CHECK(r);
    if (!r) return;
    collector c;
    col_init(&c);
    dn_actions *a = NULL;
    CHECK(dn_actions_new(r, 0, on_outcome, &c, &a) == DN_OK);
    dn_rules_free(r);
    double worst = 0;
    for (int i = 0; i < 3; i++) {
        dn_pred_event ev = make_event(40 + i, 1000 + i, "L1", "patches", 0.9f);
        double t0 = dn_now();
        CHECK(dn_actions_submit(a, &ev) == 1);
        double dt = dn_now() - t0;
        if (dt > worst) worst = dt;
    }
    printf("  dn_actions_submit latency with a dead broker: max %.1f us\n", worst * 1e6);
    CHECK(worst < 2.0);
    CHECK(col_wait(&c, 3, 60) == 3);
    for (int i = 0; i < c.n; i++)
        CHECK_MSG(!strcmp(c.o[i].status, "failed") && c.o[i].attempts == 3 && strstr(c.o[i].detail, "unreachable"),
                  "%s %d %s", c.o[i].status, c.o[i].attempts, c.o[i].detail);
    printf("  %s\n", c.o[0].detail);
    dn_actions_free(a);
    col_destroy(&c);
}

/* ------------------------------------------------------------ history conditions (dry-run) */

TEST(n_of_m_per_line) {
    dn_rules *r = rules_from("nofm.json",
                             "{\"rules\": [{\"name\": \"burst\", \"when\": {\"class\": \"scratches\", "
                             "\"n_of_last\": {\"n\": 3, \"m\": 5}}, \"actions\": [{\"type\": \"command\", "
                             "\"argv\": [\"true\"]}]}]}");
    CHECK(r);
    if (!r) return;
    collector c;
    col_init(&c);
    dn_actions *a = NULL;
    CHECK(dn_actions_new(r, 1, on_outcome, &c, &a) == DN_OK);
    dn_rules_free(r);
    /* line L1; the reference below recomputes the expectation from the definition */
    const char *seq1[] = {"scratches", "scratches", "ok", "scratches", "scratches", "ok", "ok", "scratches", "ok"};
    const int want1[] = {0, 0, 0, 1, 1, 0, 0, 1, 0}; /* worked by hand, must agree */
    int fired[9], id = 0;
    for (int i = 0; i < 9; i++) {
        dn_pred_event ev = make_event(++id, 1000 + i, "L1", seq1[i], 0.9f);
        fired[i] = dn_actions_submit(a, &ev);
        /* interleave another line's scratches: they must not count for L1 */
        ev = make_event(++id, 1000 + i, "L2", "scratches", 0.9f);
        int f2 = dn_actions_submit(a, &ev);
        CHECK(f2 == (i >= 2));
    }
    /* reference: count of scratches among the last 5 L1 events, fire when current is S and >= 3 */
    for (int i = 0; i < 9; i++) {
        int cnt = 0;
        for (int k = i - 4 < 0 ? 0 : i - 4; k <= i; k++) cnt += !strcmp(seq1[k], "scratches");
        int want = !strcmp(seq1[i], "scratches") && cnt >= 3;
        CHECK_MSG(fired[i] == want, "event %d fired %d want %d", i, fired[i], want);
        CHECK(want == want1[i]);
    }
    dn_actions_free(a);
    int expect_outcomes = 0;
    for (int i = 0; i < 9; i++) expect_outcomes += fired[i];
    expect_outcomes += 7; /* L2 */
    CHECK(c.n == expect_outcomes);
    CHECK(col_count(&c, NULL, "dry-run") == c.n);
    col_destroy(&c);
}

TEST(rate_window_and_cooldown) {
    dn_rules *r = rules_from("rate.json",
                             "{\"rules\": ["
                             "{\"name\": \"rate\", \"when\": {\"class\": \"patches\", \"rate\": {\"above_per_hour\": 2}}, "
                             "\"actions\": [{\"type\": \"command\", \"argv\": [\"true\"]}]},"
                             "{\"name\": \"rate-all-lines\", \"when\": {\"class\": \"patches\", \"rate\": "
                             "{\"above_per_hour\": 6, \"window_s\": 600, \"per_line\": false}}, "
                             "\"actions\": [{\"type\": \"command\", \"argv\": [\"true\"]}]},"
                             "{\"name\": \"cool\", \"when\": {\"class\": \"inclusion\"}, \"cooldown_s\": 10, "
                             "\"actions\": [{\"type\": \"command\", \"argv\": [\"true\"]}]},"
                             "{\"name\": \"cool-line\", \"when\": {\"class\": \"crazing\"}, \"cooldown_s\": 10, "
                             "\"cooldown_per_line\": true, \"actions\": [{\"type\": \"command\", \"argv\": [\"true\"]}]}]}");
    CHECK(r);
    if (!r) return;
    collector c;
    col_init(&c);
    dn_actions *a = NULL;
    CHECK(dn_actions_new(r, 1, on_outcome, &c, &a) == DN_OK);
    dn_rules_free(r);
    /* rule "rate": > 2 per hour on one line -> the 3rd within 3600 s fires.
     * rule "rate-all-lines": > 6/h over 600 s = more than 1 in 600 s across lines. */
    struct { double t; const char *line; int rate, all; } seq[] = {
        {0, "L1", 0, 0},       /* L1: {0};             all (600 s): {0} */
        {100, "L1", 0, 1},     /* L1: {0,100};         all: {0,100} -> 2 > 1 */
        {200, "L2", 0, 1},     /* L2: {200};           all: {0,100,200} */
        {300, "L1", 1, 1},     /* L1: {0,100,300} = 3 in an hour -> fires; all: {100,200,300} */
        {3650, "L1", 1, 0},    /* L1: (50,3650] = {100,300,3650} -> fires; all: {3650} */
        {3700, "L1", 1, 1},    /* L1: {300,3650,3700}; all: {3650,3700} */
        {5000, "L1", 1, 0},    /* L1: (1400,5000] = {3650,3700,5000}; all: {5000} */
        {9000, "L1", 0, 0},    /* L1: (5400,9000] = {9000} -> expired; all: {9000} */
    };
    for (size_t i = 0; i < sizeof seq / sizeof *seq; i++) {
        dn_pred_event ev = make_event((long long)i + 1, 1e9 + seq[i].t, seq[i].line, "patches", 0.9f);
        int before = c.n;
        int f = dn_actions_submit(a, &ev);
        CHECK_MSG(f == seq[i].rate + seq[i].all, "event %zu: fired %d want %d", i, f, seq[i].rate + seq[i].all);
        col_wait(&c, before + f, 10);
        int got_rate = 0, got_all = 0;
        pthread_mutex_lock(&c.mu);
        for (int k = before; k < c.n; k++) {
            got_rate += !strcmp(c.o[k].rule, "rate");
            got_all += !strcmp(c.o[k].rule, "rate-all-lines");
        }
        pthread_mutex_unlock(&c.mu);
        CHECK_MSG(got_rate == seq[i].rate && got_all == seq[i].all, "event %zu: rate %d/%d all %d/%d", i,
                  got_rate, seq[i].rate, got_all, seq[i].all);
    }
    /* cooldown per rule: 0 fires, 5 suppressed (even on another line), 11 fires, 12 suppressed */
    double ct[] = {0, 5, 11, 12};
    const char *cl[] = {"L9", "L8", "L9", "L9"};
    int cw[] = {1, 0, 1, 0};
    for (int i = 0; i < 4; i++) {
        dn_pred_event ev = make_event(100 + i, 2e9 + ct[i], cl[i], "inclusion", 0.9f);
        CHECK_MSG(dn_actions_submit(a, &ev) == cw[i], "cooldown event %d", i);
    }
    /* cooldown per line: a storm on one line does not silence another */
    double pt[] = {0, 1, 2, 3, 12};
    const char *pl[] = {"L1", "L2", "L1", "L2", "L1"};
    int pw[] = {1, 1, 0, 0, 1};
    for (int i = 0; i < 5; i++) {
        dn_pred_event ev = make_event(200 + i, 3e9 + pt[i], pl[i], "crazing", 0.9f);
        CHECK_MSG(dn_actions_submit(a, &ev) == pw[i], "per-line cooldown event %d", i);
    }
    dn_actions_free(a);
    col_destroy(&c);
}

TEST(dry_run_reports_without_doing) {
    receiver rx;
    if (rx_start(&rx, 0)) SKIP("cannot start the libmicrohttpd receiver");
    char out[300];
    snprintf(out, sizeof out, "%s/dry.txt", g_dir);
    unlink(out);
    dn_rules *r = rules_from("dry.json",
                             "{\"rules\": [{\"name\": \"everything\", \"when\": {\"uncertain\": true}, \"actions\": ["
                             "{\"type\": \"command\", \"argv\": [\"sh\", \"-c\", \"cat > '%s'\"]},"
                             "{\"type\": \"webhook\", \"url\": \"http://127.0.0.1:%d/h\"},"
                             "{\"type\": \"mqtt\", \"broker\": \"mqtt://127.0.0.1:%d\", \"topic\": \"factory/{line}/{class}\"}]}]}",
                             out, rx.port, g_broker_port > 0 ? g_broker_port : 1883);
    CHECK(r);
    if (!r) { rx_stop(&rx); return; }
    collector c;
    col_init(&c);
    dn_actions *a = NULL;
    CHECK(dn_actions_new(r, 1, on_outcome, &c, &a) == DN_OK);
    dn_rules_free(r);
    dn_pred_event ev = make_event(51, 1000, "L4", "crazing", 0.9f);
    CHECK(dn_actions_submit(a, &ev) == 0); /* confident: not uncertain */
    ev = make_event(52, 1001, "L4", "crazing", 0.3f);
    CHECK(dn_actions_submit(a, &ev) == 3);
    CHECK(col_wait(&c, 3, 20) == 3);
    CHECK(col_count(&c, "everything", "dry-run") == 3);
    for (int i = 0; i < c.n; i++) {
        CHECK(c.o[i].attempts == 0);
        printf("  %s: %s\n", c.o[i].kind, c.o[i].detail);
        if (!strcmp(c.o[i].kind, "mqtt")) CHECK(strstr(c.o[i].detail, "factory/L4/crazing"));
        if (!strcmp(c.o[i].kind, "webhook")) CHECK(strstr(c.o[i].detail, "would POST"));
        if (!strcmp(c.o[i].kind, "command")) CHECK(strstr(c.o[i].detail, "would run"));
    }
    dn_actions_free(a);
    CHECK(rx_hits(&rx) == 0);
    CHECK(access(out, F_OK) != 0);
    rx_stop(&rx);
    col_destroy(&c);
}

/* "decision" condition: a set of accepted | uncertain | unknown; unknown comes from the
 * event's decision (the OOD detector), uncertain from either field. Real commands run. */
TEST(decision_condition_unknown_and_uncertain) {
    char out[300], m[1100];
    snprintf(out, sizeof out, "%s/decision.txt", g_dir);
    unlink(out);
    dn_rules *r = rules_from("decision.json",
                             "{\"rules\": [{\"name\": \"not-sure\", \"when\": {\"decision\": [\"unknown\", \"uncertain\"]},"
                             " \"actions\": [{\"type\": \"command\", \"shell\": \"echo $DN_CLASS >> '%s'\"}]},"
                             "{\"name\": \"unknown-only\", \"when\": {\"decision\": \"unknown\"},"
                             " \"actions\": [{\"type\": \"command\", \"argv\": [\"true\"]}]}]}", out);
    CHECK(r);
    if (!r) return;
    collector c;
    col_init(&c);
    dn_actions *a = NULL;
    CHECK(dn_actions_new(r, 0, on_outcome, &c, &a) == DN_OK);
    dn_rules_free(r);
    if (!a) { col_destroy(&c); return; }
    dn_pred_event ev = make_event(61, 1000, "L5", "accepted-part", 0.95f);
    ev.ood_score = 0.1f;
    CHECK(dn_actions_submit(a, &ev) == 0);                 /* accepted: neither rule */
    ev = make_event(62, 1001, "L5", "odd-part", 0.97f);    /* confident but unlike the training data */
    ev.decision = DN_DECISION_UNKNOWN;
    ev.ood_score = 9.5f;
    CHECK(dn_pred_event_decision(&ev) == DN_DECISION_UNKNOWN);
    CHECK(dn_actions_submit(a, &ev) == 2);
    ev = make_event(63, 1002, "L5", "unsure-part", 0.3f); /* uncertain through the old field only */
    CHECK(dn_pred_event_decision(&ev) == DN_DECISION_UNCERTAIN);
    CHECK(dn_actions_submit(a, &ev) == 1);
    CHECK(col_wait(&c, 3, 20) == 3);
    CHECK(col_count(&c, "not-sure", "ok") == 2);
    CHECK(col_count(&c, "unknown-only", "ok") == 1);
    dn_actions_free(a);
    char *got = slurp(out);
    CHECK_MSG(got && strstr(got, "odd-part") && strstr(got, "unsure-part") && !strstr(got, "accepted-part"), "%s",
              got ? got : "(no output)");
    free(got);
    col_destroy(&c);
    /* bad words are refused at load with one line naming file, rule and value */
    CHECK(load_err("decision_bad.json",
                   "{\"rules\": [{\"name\": \"typo\", \"when\": {\"decision\": [\"unknwon\"]},"
                   " \"actions\": [{\"type\": \"command\", \"argv\": [\"true\"]}]}]}", m, sizeof m) == DN_ERR_FORMAT);
    CHECK_MSG(strstr(m, "decision_bad.json") && strstr(m, "rule 'typo'") && strstr(m, "\"unknwon\"") && !strchr(m, '\n'),
              "%s", m);
    printf("  message: %s\n", m);
    CHECK(load_err("decision_bad2.json",
                   "{\"rules\": [{\"name\": \"num\", \"when\": {\"decision\": 2},"
                   " \"actions\": [{\"type\": \"command\", \"argv\": [\"true\"]}]}]}", m, sizeof m) == DN_ERR_FORMAT);
    CHECK_MSG(strstr(m, "rule 'num'") && strstr(m, "\"decision\" must be a string or an array"), "%s", m);
    CHECK(load_err("decision_bad3.json",
                   "{\"rules\": [{\"name\": \"empty\", \"when\": {\"decision\": []},"
                   " \"actions\": [{\"type\": \"command\", \"argv\": [\"true\"]}]}]}", m, sizeof m) == DN_ERR_FORMAT);
    CHECK_MSG(strstr(m, "rule 'empty'") && strstr(m, "empty array"), "%s", m);
}

/* ------------------------------------------------------------ hot swap, queue, shutdown */

TEST(hot_swap_rules) {
    char out[300];
    snprintf(out, sizeof out, "%s/swap.txt", g_dir);
    unlink(out);
    dn_rules *r1 = rules_from("swap1.json",
                              "{\"rules\": [{\"name\": \"old\", \"when\": {\"class\": \"scratches\"}, \"actions\": ["
                              "{\"type\": \"command\", \"argv\": [\"sh\", \"-c\", \"sleep 0.3; echo old >> '%s'\"]}]}]}", out);
    dn_rules *r2 = rules_from("swap2.json",
                              "{\"rules\": [{\"name\": \"new\", \"when\": {\"class\": \"patches\"}, \"actions\": ["
                              "{\"type\": \"command\", \"argv\": [\"sh\", \"-c\", \"echo new >> '%s'\"]}]}]}", out);
    CHECK(r1 && r2);
    if (!r1 || !r2) { dn_rules_free(r1); dn_rules_free(r2); return; }
    collector c;
    col_init(&c);
    dn_actions *a = NULL;
    int threads0 = count_threads();
    CHECK(dn_actions_new(r1, 0, on_outcome, &c, &a) == DN_OK);
    dn_rules_free(r1);
    CHECK(count_threads() == threads0 + 1); /* one target, one worker */
    dn_pred_event ev = make_event(61, 1000, "L1", "scratches", 0.9f);
    CHECK(dn_actions_submit(a, &ev) == 1);
    CHECK(dn_actions_set_rules(a, r2) == DN_OK); /* the old job is still running or queued */
    ev = make_event(62, 1001, "L1", "scratches", 0.9f);
    CHECK(dn_actions_submit(a, &ev) == 0);
    ev = make_event(63, 1002, "L1", "patches", 0.9f);
    CHECK(dn_actions_submit(a, &ev) == 1);
    CHECK(col_wait(&c, 2, 20) == 2);
    CHECK(col_count(&c, "old", "ok") == 1);
    CHECK(col_count(&c, "new", "ok") == 1);
    /* the old target's worker drained its queue and exited: reloads do not pile up threads */
    for (int i = 0; i < 500 && count_threads() != threads0 + 1; i++) msleep(10);
    CHECK_MSG(count_threads() == threads0 + 1, "threads %d, want %d", count_threads(), threads0 + 1);
    for (int i = 0; i < 20; i++) CHECK(dn_actions_set_rules(a, r2) == DN_OK);
    CHECK(count_threads() == threads0 + 1); /* same targets: workers reused */
    /* alternate between two target sets: each reload retires the other set's worker */
    dn_rules *r3 = rules_from("swap3.json",
                              "{\"rules\": [{\"name\": \"new\", \"when\": {\"class\": \"patches\"}, \"actions\": ["
                              "{\"type\": \"command\", \"argv\": [\"true\"]}]}]}");
    CHECK(r3);
    for (int i = 0; r3 && i < 40; i++) CHECK(dn_actions_set_rules(a, i % 2 ? r2 : r3) == DN_OK);
    for (int i = 0; i < 500 && count_threads() != threads0 + 1; i++) msleep(10);
    CHECK_MSG(count_threads() == threads0 + 1, "after 40 reloads: threads %d, want %d", count_threads(), threads0 + 1);
    dn_rules_free(r3);
    dn_rules_free(r2);
    dn_actions_free(a);
    char *got = slurp(out);
    CHECK(got && strstr(got, "old\n") && strstr(got, "new\n"));
    free(got);
    col_destroy(&c);
}

TEST(queue_full_never_blocks) {
    dn_rules *r = rules_from("qfull.json",
                             "{\"queue_capacity\": 2, \"drain_s\": 10, \"rules\": [{\"name\": \"slow\", \"when\": {}, "
                             "\"actions\": [{\"type\": \"command\", \"argv\": [\"sleep\", \"0.2\"]}]}]}");
    CHECK(r);
    if (!r) return;
    collector c;
    col_init(&c);
    dn_actions *a = NULL;
    CHECK(dn_actions_new(r, 0, on_outcome, &c, &a) == DN_OK);
    dn_rules_free(r);
    const int N = 10;
    for (int i = 0; i < N; i++) {
        dn_pred_event ev = make_event(70 + i, 1000 + i, "L1", "x", 0.9f);
        CHECK(dn_actions_submit(a, &ev) == 1);
    }
    int full = col_count(&c, "slow", "failed");
    printf("  %d of %d reported \"queue full\" at submit\n", full, N);
    CHECK(full >= N - 3); /* capacity 2 + at most one running */
    pthread_mutex_lock(&c.mu);
    for (int i = 0; i < c.n; i++)
        if (!strcmp(c.o[i].status, "failed")) CHECK(!strcmp(c.o[i].detail, "queue full"));
    pthread_mutex_unlock(&c.mu);
    dn_actions_free(a); /* drains the queued ones (drain_s 10) */
    CHECK(c.n == N);
    CHECK(col_count(&c, "slow", "ok") == N - full);
    col_destroy(&c);
}

TEST(shutdown_bounded_no_leaked_threads) {
    int bh_port = 0;
    int bh = blackhole(&bh_port);
    CHECK(bh >= 0);
    if (bh < 0) return;
    int threads0 = count_threads(), fds0 = count_fds();
    dn_rules *r = rules_from("shutdown.json",
                             "{\"drain_s\": 0.5, \"rules\": [{\"name\": \"hang\", \"when\": {}, \"actions\": ["
                             "{\"type\": \"webhook\", \"url\": \"http://127.0.0.1:%d/\", \"timeout_s\": 60, \"retries\": 5},"
                             "{\"type\": \"command\", \"argv\": [\"sleep\", \"60\"], \"timeout_s\": 120},"
                             "{\"type\": \"mqtt\", \"broker\": \"mqtt://127.0.0.1:%d\", \"topic\": \"t\", \"timeout_s\": 60}]}]}",
                             bh_port, bh_port);
    CHECK(r);
    if (!r) { close(bh); return; }
    collector c;
    col_init(&c);
    dn_actions *a = NULL;
    CHECK(dn_actions_new(r, 0, on_outcome, &c, &a) == DN_OK);
    dn_rules_free(r);
    CHECK(count_threads() > threads0);
    for (int i = 0; i < 3; i++) {
        dn_pred_event ev = make_event(80 + i, 1000 + i, "L1", "x", 0.9f);
        CHECK(dn_actions_submit(a, &ev) == 3);
    }
    msleep(200);
    double t0 = dn_now();
    dn_actions_free(a);
    double el = dn_now() - t0;
    printf("  dn_actions_free with hung targets took %.2f s (drain_s 0.5)\n", el);
    CHECK(el < 10); /* sanity: bounded by drain_s, not by the 60 s timeouts */
    CHECK(c.n == 9);
    CHECK(col_count(&c, NULL, "failed") == 9);
    msleep(50);
    CHECK_MSG(count_threads() == threads0, "threads %d before, %d after", threads0, count_threads());
    CHECK_MSG(count_fds() == fds0, "open fds %d before, %d after", fds0, count_fds());
    close(bh);
    col_destroy(&c);
}

TEST(history_survives_reload) {
    const char *txt = "{\"rules\": [{\"name\": \"three\", \"when\": {\"class\": \"scratches\", "
                      "\"n_of_last\": {\"n\": 3, \"m\": %d}}, \"actions\": [{\"type\": \"command\", "
                      "\"argv\": [\"true\"]}]}]}";
    dn_rules *r1 = rules_from("hist1.json", txt, 3);
    dn_rules *r2 = rules_from("hist2.json", txt, 3);
    dn_rules *r3 = rules_from("hist3.json", txt, 4);
    CHECK(r1 && r2 && r3);
    if (!r1 || !r2 || !r3) { dn_rules_free(r1); dn_rules_free(r2); dn_rules_free(r3); return; }
    collector c;
    col_init(&c);
    dn_actions *a = NULL;
    CHECK(dn_actions_new(r1, 1, on_outcome, &c, &a) == DN_OK);
    dn_pred_event ev = make_event(1, 1000, "L1", "scratches", 0.9f);
    CHECK(dn_actions_submit(a, &ev) == 0);
    CHECK(dn_actions_submit(a, &ev) == 0);
    CHECK(dn_actions_set_rules(a, r2) == DN_OK); /* same rule, same window: history kept */
    CHECK(dn_actions_submit(a, &ev) == 1);
    CHECK(dn_actions_set_rules(a, r3) == DN_OK); /* window changed: history starts fresh */
    CHECK(dn_actions_submit(a, &ev) == 0);
    CHECK(dn_actions_submit(a, &ev) == 0);
    CHECK(dn_actions_submit(a, &ev) == 1);
    dn_actions_free(a);
    dn_rules_free(r1); dn_rules_free(r2); dn_rules_free(r3);
    CHECK(c.n == 2);
    col_destroy(&c);
}

static atomic_int g_cnt_ok, g_cnt_failed, g_cnt_full;
static void count_outcome(void *ctx, const dn_action_outcome *o) {
    if (!strcmp(o->status, "ok")) atomic_fetch_add(&g_cnt_ok, 1);
    else if (!strcmp(o->status, "failed")) {
        atomic_fetch_add(&g_cnt_failed, 1);
        if (!strcmp(o->detail, "queue full")) atomic_fetch_add(&g_cnt_full, 1);
    }
}
static int cmp_double(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

/* Issue 5 item 7 (actions part): with every target dead, predictions keep flowing.
 * Measures dn_actions_submit latency over many submits (printed; no timing assertion
 * beyond a "never blocked for seconds" sanity bound). */
TEST(submit_latency_under_dead_targets) {
    int closed = free_port(), bh_port = 0;
    int bh = blackhole(&bh_port);
    CHECK(bh >= 0);
    if (bh < 0) return;
    dn_rules *r = rules_from("latency.json",
                             "{\"queue_capacity\": 64, \"drain_s\": 0.2, \"rules\": [{\"name\": \"dead\", \"when\": {}, "
                             "\"actions\": ["
                             "{\"type\": \"webhook\", \"url\": \"http://127.0.0.1:%d/\", \"retries\": 2, \"backoff_s\": 0.05},"
                             "{\"type\": \"webhook\", \"url\": \"http://127.0.0.1:%d/\", \"timeout_s\": 0.5, \"retries\": 1},"
                             "{\"type\": \"mqtt\", \"broker\": \"mqtt://127.0.0.1:%d\", \"topic\": \"t/{line}\", "
                             "\"timeout_s\": 0.2, \"retries\": 1, \"backoff_s\": 0.05}]}]}",
                             closed, bh_port, closed);
    CHECK(r);
    if (!r) { close(bh); return; }
    atomic_store(&g_cnt_ok, 0);
    atomic_store(&g_cnt_failed, 0);
    atomic_store(&g_cnt_full, 0);
    dn_actions *a = NULL;
    CHECK(dn_actions_new(r, 0, count_outcome, NULL, &a) == DN_OK);
    dn_rules_free(r);
    enum { N = 3000 };
    static double lat[N];
    int fired = 0;
    for (int i = 0; i < N; i++) {
        dn_pred_event ev = make_event(1000 + i, 1e9 + i, i % 2 ? "L1" : "L2", "scratches", 0.9f);
        double t0 = dn_now();
        fired += dn_actions_submit(a, &ev);
        lat[i] = dn_now() - t0;
    }
    qsort(lat, N, sizeof *lat, cmp_double);
    printf("  %d submits, 3 dead targets: submit latency p50 %.1f us, p99 %.1f us, max %.1f us; "
           "%d queue-full outcomes at submit\n", N, lat[N / 2] * 1e6, lat[N * 99 / 100] * 1e6, lat[N - 1] * 1e6,
           atomic_load(&g_cnt_full));
    CHECK(fired == 3 * N);
    CHECK(lat[N - 1] < 2.0);
    double t0 = dn_now();
    dn_actions_free(a);
    printf("  shutdown with %d queued: %.2f s\n", 3 * N - atomic_load(&g_cnt_full), dn_now() - t0);
    CHECK(atomic_load(&g_cnt_ok) == 0);
    CHECK(atomic_load(&g_cnt_failed) == 3 * N); /* every fired action has exactly one outcome */
    close(bh);
}

TEST(bad_arguments) {
    dn_actions *a = NULL;
    CHECK(dn_actions_new(NULL, 0, NULL, NULL, &a) == DN_ERR_ARG && !a);
    CHECK(dn_actions_submit(NULL, NULL) == 0);
    CHECK(dn_actions_pending(NULL) == 0);
    dn_actions_free(NULL);
    dn_rules_free(NULL);
    CHECK(dn_rules_count(NULL) == 0);
}

static void rm_rf(const char *dir) {
    DIR *d = opendir(dir);
    struct dirent *e;
    char p[600];
    while (d && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    if (d) closedir(d);
    rmdir(dir);
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/dn_actions_XXXXXX");
    if (!mkdtemp(g_dir)) { printf("cannot create temp dir\n"); return 1; }
    signal(SIGPIPE, SIG_IGN);
    mosquitto_lib_init();
    if (broker_start()) printf("note: could not start /usr/sbin/mosquitto; MQTT delivery tests will SKIP\n");
    RUN(rules_example_file_parses);
    RUN(rules_error_bad_json);
    RUN(rules_parser_survives_mutations);
    RUN(rules_error_unknown_condition);
    RUN(rules_error_missing_action_target);
    RUN(rules_error_bad_type);
    RUN(command_gets_prediction_json_on_stdin);
    RUN(command_failure_retried_then_failed);
    RUN(command_large_payload);
    RUN(command_timeout_killed);
    RUN(webhook_post_received);
    RUN(webhook_500_retried_until_ok);
    RUN(webhook_https_ca_file);
    RUN(dead_webhook_does_not_block);
    RUN(mqtt_publish_qos1_received);
    RUN(mqtt_retained_message);
    RUN(mqtt_broker_restart_reconnects);
    RUN(mqtt_credentials);
    RUN(mqtt_unreachable_broker_retried_then_failed);
    RUN(n_of_m_per_line);
    RUN(rate_window_and_cooldown);
    RUN(dry_run_reports_without_doing);
    RUN(decision_condition_unknown_and_uncertain);
    RUN(hot_swap_rules);
    RUN(queue_full_never_blocks);
    RUN(shutdown_bounded_no_leaked_threads);
    RUN(history_survives_reload);
    RUN(submit_latency_under_dead_targets);
    RUN(bad_arguments);
    broker_stop();
    mosquitto_lib_cleanup();
    rm_rf(g_dir);
    return REPORT();
}
