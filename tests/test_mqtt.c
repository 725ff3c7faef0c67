/* MQTT ingestion, the result bus (JSON, retained last result, Sparkplug B) and the
 * fleet guarantees, against real components started here: mosquitto brokers
 * (/usr/sbin/mosquitto, SKIP if absent), the real prediction pipeline with the
 * committed narrow ResNet fixture, SQLite files and a PostgreSQL server (SKIP if
 * absent). Publishers and subscribers are libmosquitto clients (MQTT 5).
 *
 * What must hold: a message is acknowledged only after its prediction is committed
 * (dead database: not acknowledged, committed once the database is back; a node
 * that stops before acknowledging gets the message again and answers it from the
 * store); bad messages are acknowledged, counted and dead-lettered; a dead broker is
 * reconnected; nodes in one shared-subscription group split the stream; schema
 * migrations by several nodes at once are safe. */
#include "harness.h"
#include "serve_util.h"
#include "core/core.h"
#include "core/json.h"
#include "core/utf8.h"
#include "serve/bus.h"
#include "serve/kafka.h"
#include "serve/metrics.h"
#include "serve/mqtt_in.h"
#include "serve/pipeline.h"
#include "serve/sparkplug.h"
#include "serve/store.h"
#include <fcntl.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <postgresql/libpq-fe.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/wait.h>
#include <time.h>

#define MODEL "tests/fixtures/resnet/r18n.pth"
#define IMG "tests/fixtures/images/rgba_33x29.png"
static char g_dir[256];
static uint8_t *g_img;
static size_t g_img_len;

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}
/* Polls cond every 20 ms for up to secs; evaluates to the final value. */
#define WAIT_FOR(cond, secs) ({ double _e = now_s() + (secs); while (!(cond) && now_s() < _e) usleep(20000); (cond); })

/* ------------------------------------------------------------ broker */

typedef struct { pid_t pid; int port; char conf[400]; } broker;

static int broker_up(broker *b) {
    b->pid = fork();
    if (b->pid == 0) {
        int fd = open("/dev/null", O_WRONLY);
        if (fd >= 0) { dup2(fd, 1); dup2(fd, 2); }
        execl("/usr/sbin/mosquitto", "mosquitto", "-c", b->conf, (char *)NULL);
        _exit(127);
    }
    return h_port_accepts(b->port, 5) ? 0 : -1;
}
/* Writes the config for a free port; start = also start it. */
static int broker_new_auth(broker *b, const char *tag, const char *pwfile, int start) {
    memset(b, 0, sizeof *b);
    b->pid = -1;
    if (access("/usr/sbin/mosquitto", X_OK)) return -1;
    b->port = h_free_port();
    snprintf(b->conf, sizeof b->conf, "%s/mosquitto-%s.conf", g_dir, tag);
    FILE *f = fopen(b->conf, "w");
    if (!f) return -1;
    fprintf(f, "listener %d 127.0.0.1\npersistence false\nmax_queued_messages 0\n", b->port);
    if (pwfile) fprintf(f, "allow_anonymous false\npassword_file %s\n", pwfile);
    else fprintf(f, "allow_anonymous true\n");
    fclose(f);
    return start ? broker_up(b) : 0;
}
static int broker_new(broker *b, const char *tag, int start) { return broker_new_auth(b, tag, NULL, start); }
static void broker_kill(broker *b, int sig) {
    if (b->pid > 0) { kill(b->pid, sig); waitpid(b->pid, NULL, 0); }
    b->pid = -1;
}

/* ------------------------------------------------------------ clients */

typedef struct rx_msg { char topic[256]; char *payload; int len; int retain; char error[256]; } rx_msg;
typedef struct client {
    struct mosquitto *mq;
    pthread_mutex_t mu;
    int connected, published, subscribed;
    rx_msg msgs[256];
    int n;
    const char *sub;
} client;

static void c_conn(struct mosquitto *mq, void *o, int rc, int fl, const mosquitto_property *p) {
    client *c = o;
    if (rc) return;
    if (c->sub) mosquitto_subscribe_v5(mq, NULL, c->sub, 1, 0, NULL);
    pthread_mutex_lock(&c->mu); c->connected = 1; pthread_mutex_unlock(&c->mu);
}
static void c_pub(struct mosquitto *mq, void *o, int mid, int rc, const mosquitto_property *p) {
    client *c = o;
    pthread_mutex_lock(&c->mu); c->published++; pthread_mutex_unlock(&c->mu);
}
static void c_sub(struct mosquitto *mq, void *o, int mid, int n, const int *g, const mosquitto_property *p) {
    client *c = o;
    pthread_mutex_lock(&c->mu); c->subscribed = 1; pthread_mutex_unlock(&c->mu);
}
static void c_msg(struct mosquitto *mq, void *o, const struct mosquitto_message *m, const mosquitto_property *p) {
    client *c = o;
    pthread_mutex_lock(&c->mu);
    if (c->n < 256) {
        rx_msg *r = &c->msgs[c->n++];
        snprintf(r->topic, sizeof r->topic, "%s", m->topic);
        r->payload = malloc((size_t)m->payloadlen + 1);
        if (r->payload) { if (m->payloadlen) memcpy(r->payload, m->payload, (size_t)m->payloadlen); r->payload[m->payloadlen] = 0; }
        r->len = m->payloadlen;
        r->retain = m->retain;
        for (const mosquitto_property *q = p; q; q = mosquitto_property_next(q)) {
            char *k = NULL, *v = NULL;
            if (mosquitto_property_identifier(q) == MQTT_PROP_USER_PROPERTY &&
                mosquitto_property_read_string_pair(q, MQTT_PROP_USER_PROPERTY, &k, &v, false) && k && !strcmp(k, "error"))
                snprintf(r->error, sizeof r->error, "%s", v);
            free(k);
            free(v);
        }
    }
    pthread_mutex_unlock(&c->mu);
}
static int c_get(client *c, int *field) {
    pthread_mutex_lock(&c->mu);
    int v = *field;
    pthread_mutex_unlock(&c->mu);
    return v;
}

/* Connects a client (and subscribes to sub when not NULL). 0 on success. */
static int client_open(client *c, int port, const char *sub) {
    memset(c, 0, sizeof *c);
    pthread_mutex_init(&c->mu, NULL);
    c->sub = sub;
    c->mq = mosquitto_new(NULL, true, c);
    if (!c->mq) return -1;
    mosquitto_int_option(c->mq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
    mosquitto_connect_v5_callback_set(c->mq, c_conn);
    mosquitto_publish_v5_callback_set(c->mq, c_pub);
    mosquitto_subscribe_v5_callback_set(c->mq, c_sub);
    mosquitto_message_v5_callback_set(c->mq, c_msg);
    if (mosquitto_connect(c->mq, "127.0.0.1", port, 30) || mosquitto_loop_start(c->mq)) return -1;
    if (!WAIT_FOR(c_get(c, &c->connected), 5)) return -1;
    if (sub && !WAIT_FOR(c_get(c, &c->subscribed), 5)) return -1;
    return 0;
}
static void client_close(client *c) {
    if (c->mq) {
        mosquitto_disconnect(c->mq);
        mosquitto_loop_stop(c->mq, false);
        mosquitto_destroy(c->mq);
    }
    for (int i = 0; i < c->n; i++) free(c->msgs[i].payload);
    pthread_mutex_destroy(&c->mu);
    c->mq = NULL;
}
/* Publishes QoS 1 with user properties (NULL-terminated key/value list) and waits
 * for the broker's PUBACK. */
static int publish(client *c, const char *topic, const void *d, size_t n, ...) {
    mosquitto_property *props = NULL;
    va_list ap;
    va_start(ap, n);
    for (;;) {
        const char *k = va_arg(ap, const char *);
        if (!k) break;
        const char *v = va_arg(ap, const char *);
        if (!strcmp(k, "content-type")) mosquitto_property_add_string(&props, MQTT_PROP_CONTENT_TYPE, v);
        else mosquitto_property_add_string_pair(&props, MQTT_PROP_USER_PROPERTY, k, v);
    }
    va_end(ap);
    int before = c_get(c, &c->published);
    int e = mosquitto_publish_v5(c->mq, NULL, topic, (int)n, d, 1, false, props);
    mosquitto_property_free_all(&props);
    if (e) return -1;
    return WAIT_FOR(c_get(c, &c->published) > before, 5) ? 0 : -1;
}
static int count_topic(client *c, const char *prefix) {
    int k = 0;
    pthread_mutex_lock(&c->mu);
    for (int i = 0; i < c->n; i++) k += !strncmp(c->msgs[i].topic, prefix, strlen(prefix));
    pthread_mutex_unlock(&c->mu);
    return k;
}

/* ------------------------------------------------------------ pipeline */

static dn_pipeline *pipe_open(const char *db) {
    dn_pipeline_config pc = {0};
    pc.model_path = MODEL;
    pc.db_url = db;
    pc.workers = 1;
    pc.quiet = 1;
    dn_pipeline *p = NULL;
    if (dn_pipeline_open(&pc, &p)) { printf("  pipeline: %s\n", dn_last_error()); return NULL; }
    return p;
}
static int64_t rows(dn_pipeline *p) {
    dn_pred_filter f = {0};
    int64_t n = -1;
    if (dn_store_count(dn_pipeline_store(p), &f, &n)) return -1;
    return n;
}
static long stat_of(dn_mqtt_in *m, int which) {
    dn_mqtt_in_stats s;
    dn_mqtt_in_stats_get(m, &s);
    switch (which) {
    case 0: return s.classified;
    case 1: return s.duplicates;
    case 2: return s.rejected;
    case 3: return s.acked;
    case 4: return s.commit_failures;
    case 5: return s.connected;
    case 6: return s.received;
    default: return s.connects;
    }
}
enum { S_CLS, S_DUP, S_REJ, S_ACK, S_FAIL, S_CONN, S_RECV, S_CONNECTS };

static dn_mqtt_in_config in_cfg(int port, const char *id) {
    static char url[64];
    snprintf(url, sizeof url, "mqtt://127.0.0.1:%d", port);
    dn_mqtt_in_config c = {0};
    c.url = url;
    c.topic = "plant/+/+/image";
    c.fields = "line,camera";
    c.group = "defectnet";
    c.client_id = id;
    c.inflight = 2;
    c.keepalive = 5;
    return c;
}

/* ------------------------------------------------------------ unit tests */

TEST(url_and_text) {
    char h[64];
    int port;
    CHECK(dn_mqtt_parse_url("mqtt://broker.plant:1884", h, sizeof h, &port) == DN_OK && !strcmp(h, "broker.plant") && port == 1884);
    CHECK(dn_mqtt_parse_url("mqtt://10.0.0.1", h, sizeof h, &port) == DN_OK && port == 1883);
    CHECK(dn_mqtt_parse_url("mqtt://[::1]:99", h, sizeof h, &port) == DN_OK && !strcmp(h, "::1") && port == 99);
    CHECK(dn_mqtt_parse_url("http://x:1", h, sizeof h, &port) != DN_OK && strstr(dn_last_error(), "http://x:1"));
    CHECK(dn_mqtt_parse_url("mqtt://x:0", h, sizeof h, &port) != DN_OK);
    CHECK(dn_mqtt_parse_url("mqtt://x:1/path", h, sizeof h, &port) != DN_OK);
    CHECK(dn_mqtt_parse_url("mqtt://:1", h, sizeof h, &port) != DN_OK);
    CHECK(dn_utf8_text("line-1 \xc3\xa4\xe2\x82\xac", 12));
    CHECK(!dn_utf8_text("a\x01", 2));
    CHECK(!dn_utf8_text("\xc0\xaf", 2));          /* overlong */
    CHECK(!dn_utf8_text("\xed\xa0\x80", 3));      /* surrogate */
    CHECK(!dn_utf8_text("\xe2\x82", 2));          /* truncated */
    CHECK(!dn_utf8_text("\xc2\x85", 2));          /* C1 control */
}

TEST(topic_templates) {
    dn_bus_result r = {0};
    r.line = "L1";
    r.camera = "cam/7+#";
    r.cls = "scratch";
    r.uncertain = 1;
    char t[64];
    CHECK(dn_bus_topic("plant/{line}/{station}/{camera}/{class}/{decision}", &r, t, sizeof t) == DN_OK);
    CHECK(!strcmp(t, "plant/L1/_/cam_7__/scratch/uncertain"));
    CHECK(dn_bus_topic("x/{unknown}/{line", &r, t, sizeof t) == DN_OK && !strcmp(t, "x/{unknown}/{line"));
    CHECK(dn_bus_topic("{line}{line}{line}{line}{line}{line}{line}{line}{line}{line}{line}{line}{line}{line}{line}{line}{line}{line}{line}{line}{line}{line}{line}{line}{line}{line}{line}{line}{line}{line}{line}{line}{line}",
                       &r, t, sizeof t) != DN_OK);
}

TEST(sparkplug_roundtrip) {
    dn_spb_metric m[4] = {{"class", DN_SPB_STRING, 0, 0, "crack"}, {"confidence", DN_SPB_FLOAT, 0, 0.75f, NULL},
                          {"prediction_id", DN_SPB_INT64, 1234567890123LL, 0, NULL}, {"ok", DN_SPB_BOOLEAN, 1, 0, NULL}};
    uint8_t *p;
    size_t n;
    CHECK(dn_spb_encode(1700000000123ULL, 300, m, 4, &p, &n) == DN_OK);
    uint64_t ts;
    int seq, k;
    dn_spb_metric o[8];
    dn_spb_decoded *d = NULL;
    CHECK(dn_spb_decode(p, n, &ts, &seq, o, 8, &k, &d) == DN_OK);
    CHECK(ts == 1700000000123ULL && seq == 300 % 256 && k == 4);
    if (k == 4) {
        CHECK(!strcmp(o[0].name, "class") && o[0].type == DN_SPB_STRING && !strcmp(o[0].s, "crack"));
        CHECK(o[1].type == DN_SPB_FLOAT && o[1].f == 0.75f);
        CHECK(o[2].type == DN_SPB_INT64 && o[2].i == 1234567890123LL);
        CHECK(o[3].type == DN_SPB_BOOLEAN && o[3].i == 1);
    }
    dn_spb_free(d);
    free(p);
    /* NDEATH has no seq; garbage is refused */
    CHECK(dn_spb_encode(1, -1, m, 1, &p, &n) == DN_OK);
    CHECK(dn_spb_decode(p, n, &ts, &seq, o, 8, &k, &d) == DN_OK && seq == -1);
    dn_spb_free(d);
    free(p);
    uint8_t junk[5] = {0xff, 0xff, 0xff, 0xff, 0xff};
    CHECK(dn_spb_decode(junk, 5, &ts, &seq, o, 8, &k, &d) != DN_OK && d == NULL);
    CHECK(dn_spb_encode(1, 0, m, 65, &p, &n) != DN_OK);
}

TEST(bad_config) {
    dn_mqtt_in *m = NULL;
    dn_pipeline *fake = (dn_pipeline *)&m; /* never used: every config below is refused first */
    dn_mqtt_in_config c = in_cfg(1, "n1");
    c.topic = "plant/ab+/image";
    CHECK(dn_mqtt_in_start(fake, &c, &m) != DN_OK && strstr(dn_last_error(), "plant/ab+/image"));
    c = in_cfg(1, "n1");
    c.group = "a/b";
    CHECK(dn_mqtt_in_start(fake, &c, &m) != DN_OK && strstr(dn_last_error(), "group"));
    c = in_cfg(1, "");
    CHECK(dn_mqtt_in_start(fake, &c, &m) != DN_OK && strstr(dn_last_error(), "client id"));
    c = in_cfg(1, "n1");
    c.fields = "line,camera,part";
    CHECK(dn_mqtt_in_start(fake, &c, &m) != DN_OK && strstr(dn_last_error(), "3 names for 2"));
    c = in_cfg(1, "n1");
    c.fields = "line,serial";
    CHECK(dn_mqtt_in_start(fake, &c, &m) != DN_OK && strstr(dn_last_error(), "serial"));
    c = in_cfg(1, "n1");
    c.file_root = "/nonexistent/root";
    CHECK(dn_mqtt_in_start(fake, &c, &m) != DN_OK && strstr(dn_last_error(), "/nonexistent/root"));
    c = in_cfg(1, "n1");
    c.url = "mqtts://x";
    CHECK(dn_mqtt_in_start(fake, &c, &m) != DN_OK && strstr(dn_last_error(), "mqtts://x"));
    dn_bus *b = NULL;
    dn_bus_config bc = {.url = "mqtt://127.0.0.1:1", .client_id = "id", .sparkplug = "only-group"};
    CHECK(dn_bus_start(&bc, &b) != DN_OK && strstr(dn_last_error(), "only-group"));
    CHECK(m == NULL && b == NULL);
}

/* ------------------------------------------------------------ end to end */

TEST(ingest_results_sparkplug_and_redelivered_id) {
    broker br;
    if (broker_new(&br, "e2e", 1)) { broker_kill(&br, SIGTERM); SKIP("mosquitto broker not available (/usr/sbin/mosquitto)"); }
    char db[400];
    snprintf(db, sizeof db, "sqlite:%s/e2e.db", g_dir);
    dn_pipeline *p = pipe_open(db);
    CHECK(p && dn_store_set_node(dn_pipeline_store(p), "n1") == DN_OK);
    client sub, pub;
    CHECK(client_open(&sub, br.port, "#") == 0);
    CHECK(client_open(&pub, br.port, NULL) == 0);
    char url[64];
    snprintf(url, sizeof url, "mqtt://127.0.0.1:%d", br.port);
    dn_bus_config bc = {.url = url, .client_id = "n1-bus", .results_topic = "res/{line}/{camera}", .last_topic = "last/{line}/{camera}", .sparkplug = "Plant1/n1", .keepalive = 5};
    dn_bus *bus = NULL;
    CHECK(dn_bus_start(&bc, &bus) == DN_OK);
    CHECK(bus && WAIT_FOR(dn_bus_connected(bus), 5));
    dn_mqtt_in_config c = in_cfg(br.port, "n1");
    c.bus = bus;
    dn_mqtt_in *m = NULL;
    CHECK(p && dn_mqtt_in_start(p, &c, &m) == DN_OK);
    if (!m) goto out;
    CHECK(WAIT_FOR(stat_of(m, S_CONN), 5));
    usleep(200000); /* SUBACK */
    CHECK(publish(&pub, "plant/L1/C1/image", g_img, g_img_len, "id", "a1", NULL) == 0);
    CHECK(publish(&pub, "plant/L1/C2/image", g_img, g_img_len, "id", "a2", "part", "P-9", NULL) == 0);
    CHECK(publish(&pub, "plant/L2/C1/image", g_img, g_img_len, "id", "a3", "line", "L2b", NULL) == 0);
    CHECK(WAIT_FOR(stat_of(m, S_ACK) == 3, 20));
    CHECK(stat_of(m, S_CLS) == 3 && rows(p) == 3);
    /* metadata from the topic levels; a user property wins over the topic */
    dn_pred_row *r = NULL;
    size_t n = 0;
    dn_pred_filter f = {0};
    CHECK(dn_store_list(dn_pipeline_store(p), &f, &r, &n) == DN_OK && n == 3);
    if (n == 3) {
        CHECK(!strcmp(r[0].line, "L1") && !strcmp(r[0].camera, "C1") && !strcmp(r[0].request_id, "a1") && !strcmp(r[0].source, "mqtt"));
        CHECK(r[0].node && !strcmp(r[0].node, "n1"));
        CHECK(!strcmp(r[1].part, "P-9"));
        CHECK(!strcmp(r[2].line, "L2b") && !strcmp(r[2].camera, "C1"));
    }
    /* results: JSON per prediction, retained last per camera, Sparkplug births and data */
    CHECK(WAIT_FOR(count_topic(&sub, "res/") == 3, 5));
    CHECK(count_topic(&sub, "res/L1/C1") == 1 && count_topic(&sub, "last/L1/C2") == 1);
    CHECK(count_topic(&sub, "spBv1.0/Plant1/NBIRTH/n1") == 1);
    CHECK(WAIT_FOR(count_topic(&sub, "spBv1.0/Plant1/DDATA/n1/") == 3, 5));
    CHECK(count_topic(&sub, "spBv1.0/Plant1/DBIRTH/n1/C1") == 1 && count_topic(&sub, "spBv1.0/Plant1/DBIRTH/n1/C2") == 1);
    pthread_mutex_lock(&sub.mu);
    int seen_ddata = 0;
    for (int i = 0; i < sub.n; i++) {
        if (strcmp(sub.msgs[i].topic, "spBv1.0/Plant1/DDATA/n1/C2")) continue;
        uint64_t ts;
        int seq, k;
        dn_spb_metric o[8];
        dn_spb_decoded *d;
        if (dn_spb_decode((uint8_t *)sub.msgs[i].payload, (size_t)sub.msgs[i].len, &ts, &seq, o, 8, &k, &d) == DN_OK) {
            seen_ddata = k == 5 && n == 3 && !strcmp(o[0].name, "class") && !strcmp(o[0].s, r[1].cls) && seq > 0 &&
                         o[3].i == r[1].id && !strcmp(o[4].s, "P-9");
            dn_spb_free(d);
        }
        if (strncmp(sub.msgs[i].topic, "res/", 4) == 0) CHECK(strstr(sub.msgs[i].payload, "\"class\""));
    }
    pthread_mutex_unlock(&sub.mu);
    CHECK(seen_ddata);
    dn_pred_rows_free(r, n);
    /* a late subscriber reads the retained last verdict at once */
    client late;
    CHECK(client_open(&late, br.port, "last/#") == 0);
    CHECK(WAIT_FOR(count_topic(&late, "last/") == 3, 5));
    CHECK(late.n > 0 && late.msgs[0].retain);
    client_close(&late);
    /* the same id again (a camera retrying): answered from the store, not recorded */
    CHECK(publish(&pub, "plant/L1/C1/image", g_img, g_img_len, "id", "a1", NULL) == 0);
    CHECK(WAIT_FOR(stat_of(m, S_ACK) == 4, 20));
    CHECK(stat_of(m, S_DUP) == 1 && rows(p) == 3);
    dn_mqtt_in_stop(m);
    dn_bus_stop(bus); /* NDEATH through the will (disconnect reason 0x04) */
    CHECK(WAIT_FOR(count_topic(&sub, "spBv1.0/Plant1/NDEATH/n1") == 1, 5));
out:
    client_close(&sub);
    client_close(&pub);
    dn_pipeline_close(p);
    broker_kill(&br, SIGTERM);
}

/* HTTP / drop-folder predictions go onto the same results bus once committed
 * (pipeline hook); a duplicate request id is answered from the store, not republished. */
TEST(http_results_on_the_bus) {
    broker br;
    if (broker_new(&br, "httpbus", 1)) { broker_kill(&br, SIGTERM); SKIP("mosquitto broker not available (/usr/sbin/mosquitto)"); }
    char db[400];
    snprintf(db, sizeof db, "sqlite:%s/httpbus.db", g_dir);
    dn_pipeline *p = pipe_open(db);
    CHECK(p && dn_store_set_node(dn_pipeline_store(p), "h1") == DN_OK);
    client sub;
    CHECK(client_open(&sub, br.port, "#") == 0);
    char url[64];
    snprintf(url, sizeof url, "mqtt://127.0.0.1:%d", br.port);
    dn_bus_config bc = {.url = url, .client_id = "h1-bus", .results_topic = "res/{line}/{camera}", .last_topic = "last/{line}/{camera}", .keepalive = 5};
    dn_bus *bus = NULL;
    CHECK(dn_bus_start(&bc, &bus) == DN_OK && WAIT_FOR(dn_bus_connected(bus), 5));
    if (!p || !bus) goto out;
    dn_pipeline_set_bus(p, bus);
    dn_classify_req q = {.data = g_img, .len = g_img_len, .line = "L9", .camera = "C9", .request_id = "h-1", .source = "http"};
    dn_classify_res res = {0};
    CHECK(dn_pipeline_classify(p, &q, &res) == DN_OK && res.http_code == 200);
    free(res.json);
    CHECK(WAIT_FOR(count_topic(&sub, "res/L9/C9") == 1, 5));
    CHECK(WAIT_FOR(count_topic(&sub, "last/L9/C9") == 1, 5));
    memset(&res, 0, sizeof res);
    CHECK(dn_pipeline_classify(p, &q, &res) == DN_OK && res.http_code == 200); /* same id: duplicate */
    free(res.json);
    q.request_id = "h-2";
    q.source = "watch";
    memset(&res, 0, sizeof res);
    CHECK(dn_pipeline_classify(p, &q, &res) == DN_OK && res.http_code == 200);
    free(res.json);
    CHECK(WAIT_FOR(count_topic(&sub, "res/L9/C9") == 2, 5));
    usleep(300000);
    CHECK(count_topic(&sub, "res/L9/C9") == 2 && rows(p) == 2); /* the duplicate was not republished */
    CHECK(dn_pipeline_bus_failures(p) == 0);
    dn_pipeline_set_bus(p, NULL);
    /* the record (and /v1/predictions, which prints rows this way) names the node */
    dn_pred_row *r = NULL;
    size_t n = 0;
    dn_pred_filter f = {0};
    CHECK(dn_store_list(dn_pipeline_store(p), &f, &r, &n) == DN_OK && n == 2);
    if (n) {
        dn_sb js = {0};
        dn_pred_row_json_open(&js, &r[0]);
        CHECK(js.s && strstr(js.s, "\"node\":\"h1\""));
        dn_sb_free(&js);
    }
    dn_pred_rows_free(r, n);
out:
    client_close(&sub);
    dn_pipeline_close(p);
    dn_bus_stop(bus);
    broker_kill(&br, SIGTERM);
}

TEST(bad_payloads_acked_counted_dead_lettered) {
    broker br;
    if (broker_new(&br, "bad", 1)) { broker_kill(&br, SIGTERM); SKIP("mosquitto broker not available (/usr/sbin/mosquitto)"); }
    char db[400], root[400], sub_dir[500], img[600], link[600], outside[600];
    snprintf(db, sizeof db, "sqlite:%s/bad.db", g_dir);
    snprintf(root, sizeof root, "%s/share", g_dir);
    snprintf(sub_dir, sizeof sub_dir, "%s/cam1", root);
    snprintf(img, sizeof img, "%s/part1.png", sub_dir);
    snprintf(outside, sizeof outside, "%s/outside.png", g_dir);
    snprintf(link, sizeof link, "%s/escape.png", sub_dir);
    mkdir(root, 0777);
    mkdir(sub_dir, 0777);
    FILE *f1 = fopen(img, "wb"), *f2 = fopen(outside, "wb");
    if (f1) { fwrite(g_img, 1, g_img_len, f1); fclose(f1); }
    if (f2) { fwrite(g_img, 1, g_img_len, f2); fclose(f2); }
    CHECK(symlink(outside, link) == 0);
    dn_pipeline *p = pipe_open(db);
    client sub, pub;
    CHECK(client_open(&sub, br.port, "dead/#") == 0);
    CHECK(client_open(&pub, br.port, NULL) == 0);
    char url[64];
    snprintf(url, sizeof url, "mqtt://127.0.0.1:%d", br.port);
    dn_bus_config bc = {.url = url, .client_id = "n2-bus", .keepalive = 5};
    dn_bus *bus = NULL;
    CHECK(dn_bus_start(&bc, &bus) == DN_OK && WAIT_FOR(dn_bus_connected(bus), 5));
    dn_mqtt_in_config c = in_cfg(br.port, "n2");
    c.bus = bus;
    c.dead_letter = "dead/defectnet";
    c.file_root = root;
    c.max_payload = 4096;
    dn_mqtt_in *m = NULL;
    CHECK(p && dn_mqtt_in_start(p, &c, &m) == DN_OK);
    if (!m) goto out;
    CHECK(WAIT_FOR(stat_of(m, S_CONN), 5));
    usleep(200000);
    char big[5000], longv[200];
    memset(big, 'x', sizeof big);
    memset(longv, 'v', sizeof longv - 1);
    longv[sizeof longv - 1] = 0;
    const char *env_ok = "{\"id\":\"e1\",\"file\":\"cam1/part1.png\",\"part\":\"S-1\"}";
    const char *env_up = "{\"id\":\"e2\",\"file\":\"../outside.png\"}";
    const char *env_link = "{\"id\":\"e3\",\"file\":\"cam1/escape.png\"}";
    const char *env_abs = "{\"id\":\"e4\",\"file\":\"/etc/passwd\"}";
    const char *env_bad = "{\"id\":\"e5\",\"file\":";
    const char *env_type = "{\"id\":7,\"file\":\"cam1/part1.png\"}";
    CHECK(publish(&pub, "plant/L1/C1/image", "not an image", 12, "id", "b1", NULL) == 0);
    CHECK(publish(&pub, "plant/L1/C1/image", g_img, g_img_len, NULL) == 0);                 /* no id */
    CHECK(publish(&pub, "plant/L1/C1/image", big, sizeof big, "id", "b3", NULL) == 0);      /* oversized */
    CHECK(publish(&pub, "plant/L1/C1/image", g_img, g_img_len, "id", "b4", "camera", longv, NULL) == 0);
    CHECK(publish(&pub, "plant/L1/C1/image", env_up, strlen(env_up), NULL) == 0);
    CHECK(publish(&pub, "plant/L1/C1/image", env_link, strlen(env_link), NULL) == 0);
    CHECK(publish(&pub, "plant/L1/C1/image", env_abs, strlen(env_abs), NULL) == 0);
    CHECK(publish(&pub, "plant/L1/C1/image", env_bad, strlen(env_bad), "content-type", "application/json", NULL) == 0);
    CHECK(publish(&pub, "plant/L1/C1/image", env_type, strlen(env_type), NULL) == 0);
    CHECK(publish(&pub, "plant/L1/C1/image", "", 0, "id", "b10", NULL) == 0);
    CHECK(publish(&pub, "plant/L1/C1/image", env_ok, strlen(env_ok), NULL) == 0);
    CHECK(WAIT_FOR(stat_of(m, S_ACK) == 11, 20));
    CHECK(stat_of(m, S_REJ) == 10 && stat_of(m, S_CLS) == 1 && rows(p) == 1);
    CHECK(WAIT_FOR(count_topic(&sub, "dead/defectnet") == 10, 5));
    pthread_mutex_lock(&sub.mu);
    int why_ok = 1;
    for (int i = 0; i < sub.n; i++) why_ok &= sub.msgs[i].error[0] != 0;
    int oversized = 0, outside_root = 0;
    for (int i = 0; i < sub.n; i++) {
        oversized |= strstr(sub.msgs[i].error, "exceeds the limit") != NULL;
        outside_root |= strstr(sub.msgs[i].error, "outside the file root") != NULL;
    }
    pthread_mutex_unlock(&sub.mu);
    CHECK(why_ok && oversized && outside_root);
    if (!(why_ok && oversized && outside_root))
        for (int i = 0; i < sub.n; i++) printf("  dead letter %d: %s\n", i, sub.msgs[i].error);
    dn_sb out = {0};
    dn_metrics_render(dn_pipeline_metrics(p), 0, 0, &out);
    CHECK(out.s && strstr(out.s, "defectnet_mqtt_messages_total{result=\"rejected\"} 10"));
    CHECK(out.s && strstr(out.s, "defectnet_mqtt_messages_total{result=\"classified\"} 1"));
    dn_sb_free(&out);
    dn_pred_row *r = NULL;
    size_t n = 0;
    dn_pred_filter f = {0};
    CHECK(dn_store_list(dn_pipeline_store(p), &f, &r, &n) == DN_OK && n == 1 && r && !strcmp(r[0].part, "S-1") && !strcmp(r[0].request_id, "e1"));
    dn_pred_rows_free(r, n);
    dn_mqtt_in_stop(m);
out:
    dn_bus_stop(bus);
    client_close(&sub);
    client_close(&pub);
    dn_pipeline_close(p);
    broker_kill(&br, SIGTERM);
}

/* A node that committed but did not acknowledge (its result could not be put on the
 * bus), then stopped: the broker redelivers to the restarted node (same session id),
 * which answers from the store: one row. */
TEST(redelivery_after_restart_recorded_once) {
    broker br;
    if (broker_new(&br, "redeliver", 1)) { broker_kill(&br, SIGTERM); SKIP("mosquitto broker not available (/usr/sbin/mosquitto)"); }
    char db[400];
    snprintf(db, sizeof db, "sqlite:%s/redeliver.db", g_dir);
    dn_pipeline *p = pipe_open(db);
    client pub;
    CHECK(client_open(&pub, br.port, NULL) == 0);
    char dead_url[64];
    snprintf(dead_url, sizeof dead_url, "mqtt://127.0.0.1:%d", h_free_port()); /* nobody listens */
    dn_bus_config bc = {.url = dead_url, .client_id = "n3-bus", .results_topic = "res/{camera}", .keepalive = 5};
    dn_bus *bus = NULL;
    CHECK(dn_bus_start(&bc, &bus) == DN_OK);
    dn_mqtt_in_config c = in_cfg(br.port, "n3");
    c.bus = bus;
    dn_mqtt_in *m = NULL;
    CHECK(p && dn_mqtt_in_start(p, &c, &m) == DN_OK);
    if (!m) goto out;
    CHECK(WAIT_FOR(stat_of(m, S_CONN), 5));
    usleep(200000);
    CHECK(publish(&pub, "plant/L1/C1/image", g_img, g_img_len, "id", "r1", NULL) == 0);
    CHECK(WAIT_FOR(stat_of(m, S_FAIL) >= 1, 20));
    CHECK(rows(p) == 1 && stat_of(m, S_ACK) == 0);
    dn_mqtt_in_stop(m);
    m = NULL;
    c.bus = NULL;
    CHECK(dn_mqtt_in_start(p, &c, &m) == DN_OK);
    if (!m) goto out;
    CHECK(WAIT_FOR(stat_of(m, S_ACK) == 1, 20));
    CHECK(stat_of(m, S_DUP) == 1 && stat_of(m, S_CLS) == 0 && rows(p) == 1);
    dn_mqtt_in_stop(m);
    /* and nothing left for a third start */
    CHECK(dn_mqtt_in_start(p, &c, &m) == DN_OK);
    if (m) {
        CHECK(WAIT_FOR(stat_of(m, S_CONN), 5));
        usleep(500000);
        CHECK(stat_of(m, S_RECV) == 0);
        dn_mqtt_in_stop(m);
    }
out:
    dn_bus_stop(bus);
    client_close(&pub);
    dn_pipeline_close(p);
    broker_kill(&br, SIGTERM);
}

TEST(dead_broker_reconnects) {
    broker br;
    if (broker_new(&br, "dead", 0) || access("/usr/sbin/mosquitto", X_OK)) SKIP("mosquitto broker not available (/usr/sbin/mosquitto)");
    char db[400];
    snprintf(db, sizeof db, "sqlite:%s/deadbroker.db", g_dir);
    dn_pipeline *p = pipe_open(db);
    dn_mqtt_in_config c = in_cfg(br.port, "n4");
    dn_mqtt_in *m = NULL;
    CHECK(p && dn_mqtt_in_start(p, &c, &m) == DN_OK); /* the broker is not there yet */
    if (!m) { dn_pipeline_close(p); return; }
    usleep(700000);
    CHECK(stat_of(m, S_CONN) == 0 && stat_of(m, S_CONNECTS) == 0);
    CHECK(broker_up(&br) == 0);
    CHECK(WAIT_FOR(stat_of(m, S_CONN), 15));
    usleep(200000);
    client pub;
    CHECK(client_open(&pub, br.port, NULL) == 0);
    CHECK(publish(&pub, "plant/L1/C1/image", g_img, g_img_len, "id", "d1", NULL) == 0);
    CHECK(WAIT_FOR(stat_of(m, S_ACK) == 1, 20));
    client_close(&pub);
    broker_kill(&br, SIGKILL); /* the broker dies under the node */
    CHECK(WAIT_FOR(stat_of(m, S_CONN) == 0, 15));
    CHECK(broker_up(&br) == 0);
    CHECK(WAIT_FOR(stat_of(m, S_CONNECTS) == 2 && stat_of(m, S_CONN), 20));
    usleep(300000);
    CHECK(client_open(&pub, br.port, NULL) == 0);
    CHECK(publish(&pub, "plant/L1/C1/image", g_img, g_img_len, "id", "d2", NULL) == 0);
    CHECK(WAIT_FOR(stat_of(m, S_ACK) == 2, 20));
    CHECK(rows(p) == 2);
    client_close(&pub);
    dn_mqtt_in_stop(m);
    dn_pipeline_close(p);
    broker_kill(&br, SIGTERM);
}

TEST(broker_credentials) {
    char pw[400], cmd[700];
    snprintf(pw, sizeof pw, "%s/passwd", g_dir);
    snprintf(cmd, sizeof cmd, "mosquitto_passwd -c -b '%s' node1 s3cret >/dev/null 2>&1", pw);
    if (access("/usr/sbin/mosquitto", X_OK) || system(cmd) != 0) SKIP("mosquitto / mosquitto_passwd not available");
    chmod(pw, 0644);
    chmod(g_dir, 0755); /* mosquitto started as root reads the password file as user mosquitto */
    broker br;
    if (broker_new_auth(&br, "auth", pw, 1)) { broker_kill(&br, SIGTERM); SKIP("mosquitto did not start with a password file"); }
    char db[400];
    snprintf(db, sizeof db, "sqlite:%s/auth.db", g_dir);
    dn_pipeline *p = pipe_open(db);
    dn_mqtt_in_config c = in_cfg(br.port, "auth1");
    c.username = "node1";
    c.password = "wrong";
    dn_mqtt_in *m = NULL;
    CHECK(p && dn_mqtt_in_start(p, &c, &m) == DN_OK);
    usleep(800000);
    CHECK(m && stat_of(m, S_CONNECTS) == 0); /* refused by the broker */
    dn_mqtt_in_stop(m);
    m = NULL;
    c.password = "s3cret";
    CHECK(p && dn_mqtt_in_start(p, &c, &m) == DN_OK);
    CHECK(m && WAIT_FOR(stat_of(m, S_CONN), 5));
    char url[64];
    snprintf(url, sizeof url, "mqtt://127.0.0.1:%d", br.port);
    dn_bus_config bc = {.url = url, .client_id = "auth1-bus", .results_topic = "r/{camera}", .username = "node1", .password = "s3cret"};
    dn_bus *bus = NULL;
    CHECK(dn_bus_start(&bc, &bus) == DN_OK && WAIT_FOR(dn_bus_connected(bus), 5));
    dn_mqtt_in_stop(m);
    dn_bus_stop(bus);
    dn_pipeline_close(p);
    broker_kill(&br, SIGTERM);
}

TEST(shared_group_splits_the_stream) {
    broker br;
    if (broker_new(&br, "group", 1)) { broker_kill(&br, SIGTERM); SKIP("mosquitto broker not available (/usr/sbin/mosquitto)"); }
    char db[400];
    snprintf(db, sizeof db, "sqlite:%s/group.db", g_dir);
    dn_pipeline *p = pipe_open(db);
    dn_mqtt_in_config c1 = in_cfg(br.port, "g1"), c2 = in_cfg(br.port, "g2");
    dn_mqtt_in *m1 = NULL, *m2 = NULL;
    CHECK(p && dn_mqtt_in_start(p, &c1, &m1) == DN_OK && dn_mqtt_in_start(p, &c2, &m2) == DN_OK);
    client pub;
    CHECK(client_open(&pub, br.port, NULL) == 0);
    if (!m1 || !m2) goto out;
    CHECK(WAIT_FOR(stat_of(m1, S_CONN) && stat_of(m2, S_CONN), 5));
    usleep(300000);
    for (int i = 0; i < 12; i++) {
        char id[16];
        snprintf(id, sizeof id, "g%d", i);
        CHECK(publish(&pub, "plant/L1/C1/image", g_img, g_img_len, "id", id, NULL) == 0);
    }
    CHECK(WAIT_FOR(stat_of(m1, S_ACK) + stat_of(m2, S_ACK) == 12, 30));
    CHECK(stat_of(m1, S_CLS) > 0 && stat_of(m2, S_CLS) > 0 && rows(p) == 12);
out:
    dn_mqtt_in_stop(m1);
    dn_mqtt_in_stop(m2);
    client_close(&pub);
    dn_pipeline_close(p);
    broker_kill(&br, SIGTERM);
}

/* A PLC that acknowledges camera C1 only: C2's verdict times out into the fail-safe. */
static void plc_msg(struct mosquitto *mq, void *o, const struct mosquitto_message *m, const mosquitto_property *p) {
    client *c = o;
    c_msg(mq, o, m, p);
    if (!strstr(m->topic, "/C1/request")) return;
    dn_json *j = dn_json_parse(m->payload, (size_t)m->payloadlen, NULL, 0);
    char ack[300], body[64];
    snprintf(ack, sizeof ack, "%.*s/ack", (int)(strlen(m->topic) - 8), m->topic);
    snprintf(body, sizeof body, "{\"seq\":%.0f}", dn_json_num(dn_json_get(j, "seq"), -1));
    dn_json_free(j);
    mosquitto_publish_v5(c->mq, NULL, ack, (int)strlen(body), body, 1, false, NULL);
}

TEST(plc_handshake_failsafe) {
    broker br;
    if (broker_new(&br, "plc", 1)) { broker_kill(&br, SIGTERM); SKIP("mosquitto broker not available (/usr/sbin/mosquitto)"); }
    char db[400], url[64];
    snprintf(db, sizeof db, "sqlite:%s/plc.db", g_dir);
    snprintf(url, sizeof url, "mqtt://127.0.0.1:%d", br.port);
    dn_pipeline *p = pipe_open(db);
    client plc, pub;
    CHECK(client_open(&plc, br.port, "plc/+/+/request") == 0);
    mosquitto_message_v5_callback_set(plc.mq, plc_msg);
    CHECK(client_open(&pub, br.port, NULL) == 0);
    dn_bus_config bc = {.url = url, .client_id = "plc-bus", .plc_topic = "plc/{line}/{camera}", .plc_deadline_ms = 400,
                        .plc_failsafe = "reject"};
    dn_bus *bus = NULL;
    CHECK(dn_bus_start(&bc, &bus) == DN_OK && WAIT_FOR(dn_bus_connected(bus), 5));
    dn_mqtt_in_config c = in_cfg(br.port, "plc1");
    c.bus = bus;
    dn_mqtt_in *m = NULL;
    CHECK(p && dn_mqtt_in_start(p, &c, &m) == DN_OK);
    if (!m) goto out;
    CHECK(WAIT_FOR(stat_of(m, S_CONN), 5));
    usleep(300000);
    CHECK(publish(&pub, "plant/L1/C1/image", g_img, g_img_len, "id", "p1", NULL) == 0);
    CHECK(publish(&pub, "plant/L1/C2/image", g_img, g_img_len, "id", "p2", NULL) == 0);
    CHECK(publish(&pub, "plant/L1/C1/image", g_img, g_img_len, "id", "p3", NULL) == 0);
    CHECK(WAIT_FOR(stat_of(m, S_ACK) == 3, 20));
    int64_t fs = 0;
    CHECK(WAIT_FOR(dn_store_count_outcomes(dn_pipeline_store(p), "failsafe", &fs) == DN_OK && fs == 1, 5));
    usleep(500000);
    CHECK(dn_store_count_outcomes(dn_pipeline_store(p), "failsafe", &fs) == DN_OK && fs == 1);
    /* requests carried per-camera sequence numbers: C1 got 1 and 2, C2 got 1 */
    CHECK(count_topic(&plc, "plc/L1/C1/request") == 2 && count_topic(&plc, "plc/L1/C2/request") == 1);
    pthread_mutex_lock(&plc.mu);
    int seq2 = 0;
    for (int i = 0; i < plc.n; i++)
        if (!strcmp(plc.msgs[i].topic, "plc/L1/C1/request") && strstr(plc.msgs[i].payload, "\"seq\":2")) seq2 = 1;
    pthread_mutex_unlock(&plc.mu);
    CHECK(seq2);
    dn_mqtt_in_stop(m);
out:
    dn_bus_stop(bus);
    client_close(&plc);
    client_close(&pub);
    dn_pipeline_close(p);
    broker_kill(&br, SIGTERM);
}

/* Kafka export against librdkafka's built-in mock cluster (Debian ships no broker):
 * delivery acknowledged before the MQTT input is, keys line/camera read back by a
 * consumer, a broker that is down fails the export within its timeout. */
TEST(kafka_export_mock_cluster) {
#if defined(__SANITIZE_THREAD__)
    /* librdkafka's threads are not instrumented; its mock cluster dies with a SEGV at
     * start under TSan (seen in CI). The ASan and plain stages run this test. */
    SKIP("librdkafka mock cluster under ThreadSanitizer (run by the ASan and plain stages)");
#endif
    char err[256];
    rd_kafka_conf_t *c0 = rd_kafka_conf_new();
    rd_kafka_t *rk0 = rd_kafka_new(RD_KAFKA_PRODUCER, c0, err, sizeof err);
    rd_kafka_mock_cluster_t *mc = rk0 ? rd_kafka_mock_cluster_new(rk0, 1) : NULL;
    if (!mc) { if (rk0) rd_kafka_destroy(rk0); SKIP("librdkafka mock cluster unavailable: %s", err); }
    CHECK(rd_kafka_mock_topic_create(mc, "predictions", 2, 1) == RD_KAFKA_RESP_ERR_NO_ERROR);
    const char *boot = rd_kafka_mock_cluster_bootstraps(mc);
    dn_kafka *k = NULL;
    CHECK(dn_kafka_start(boot, "bad topic!", &k) != DN_OK && strstr(dn_last_error(), "bad topic!") && !k);
    CHECK(dn_kafka_start(boot, "predictions", &k) == DN_OK);
    if (!k) goto out;
    CHECK(dn_kafka_export(k, "L0/C0", "{\"id\":0}", 8, 10000) == DN_OK && dn_kafka_delivered(k) == 1);
    broker br;
    if (broker_new(&br, "kafka", 1) == 0) {
        char db[400];
        snprintf(db, sizeof db, "sqlite:%s/kafka.db", g_dir);
        dn_pipeline *p = pipe_open(db);
        dn_mqtt_in_config c = in_cfg(br.port, "k1");
        c.kafka = k;
        dn_mqtt_in *m = NULL;
        client pub;
        CHECK(client_open(&pub, br.port, NULL) == 0);
        CHECK(p && dn_mqtt_in_start(p, &c, &m) == DN_OK);
        if (m) {
            CHECK(WAIT_FOR(stat_of(m, S_CONN), 5));
            usleep(200000);
            CHECK(publish(&pub, "plant/L1/C1/image", g_img, g_img_len, "id", "k1", NULL) == 0);
            CHECK(publish(&pub, "plant/L2/C7/image", g_img, g_img_len, "id", "k2", NULL) == 0);
            CHECK(WAIT_FOR(stat_of(m, S_ACK) == 2, 20));
            CHECK(dn_kafka_delivered(k) == 3); /* MQTT records exported once, by mqtt_in */
            dn_mqtt_in_stop(m);
            /* an HTTP prediction is exported by the pipeline once committed */
            dn_pipeline_set_kafka(p, k);
            dn_classify_req q = {.data = g_img, .len = g_img_len, .line = "L3", .camera = "C3", .request_id = "kh", .source = "http"};
            dn_classify_res res = {0};
            CHECK(dn_pipeline_classify(p, &q, &res) == DN_OK && res.http_code == 200);
            free(res.json);
            CHECK(dn_kafka_delivered(k) == 4 && dn_pipeline_bus_failures(p) == 0);
            dn_pipeline_set_kafka(p, NULL);
        }
        client_close(&pub);
        dn_pipeline_close(p);
    }
    broker_kill(&br, SIGTERM);
    /* read the records back: keys are line/camera, values the prediction JSON */
    rd_kafka_conf_t *cc = rd_kafka_conf_new();
    rd_kafka_conf_set(cc, "bootstrap.servers", boot, err, sizeof err);
    rd_kafka_conf_set(cc, "group.id", "test", err, sizeof err);
    rd_kafka_conf_set(cc, "auto.offset.reset", "earliest", err, sizeof err);
    rd_kafka_t *cons = rd_kafka_new(RD_KAFKA_CONSUMER, cc, err, sizeof err);
    CHECK(cons != NULL);
    if (cons) {
        rd_kafka_poll_set_consumer(cons);
        rd_kafka_topic_partition_list_t *tl = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(tl, "predictions", RD_KAFKA_PARTITION_UA);
        CHECK(rd_kafka_subscribe(cons, tl) == RD_KAFKA_RESP_ERR_NO_ERROR);
        rd_kafka_topic_partition_list_destroy(tl);
        int got = 0, keys_ok = 1, json_ok = 1;
        double until = now_s() + 20;
        while (got < 4 && now_s() < until) {
            rd_kafka_message_t *msg = rd_kafka_consumer_poll(cons, 200);
            if (!msg) continue;
            if (!msg->err) {
                got++;
                char key[64] = "";
                snprintf(key, sizeof key, "%.*s", (int)msg->key_len, (const char *)msg->key);
                keys_ok &= !strcmp(key, "L0/C0") || !strcmp(key, "L1/C1") || !strcmp(key, "L2/C7") || !strcmp(key, "L3/C3");
                if (strcmp(key, "L0/C0")) json_ok &= msg->len > 10 && memmem(msg->payload, msg->len, "\"class\"", 7) != NULL;
            }
            rd_kafka_message_destroy(msg);
        }
        CHECK_MSG(got == 4 && keys_ok && json_ok, "got %d records, keys ok %d, json ok %d", got, keys_ok, json_ok);
        rd_kafka_consumer_close(cons);
        rd_kafka_destroy(cons);
    }
    /* the Kafka broker goes down: the export fails within its timeout */
    CHECK(rd_kafka_mock_broker_set_down(mc, 1) == RD_KAFKA_RESP_ERR_NO_ERROR);
    CHECK(dn_kafka_export(k, "L9/C9", "{}", 2, 1500) != DN_OK && strstr(dn_last_error(), "predictions"));
    CHECK(rd_kafka_mock_broker_set_up(mc, 1) == RD_KAFKA_RESP_ERR_NO_ERROR);
    CHECK(dn_kafka_export(k, "L9/C9", "{}", 2, 20000) == DN_OK);
out:
    dn_kafka_stop(k);
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(rk0);
}

/* ------------------------------------------------------------ PostgreSQL */

static h_pg g_pg;
static int g_pg_ok;
static char g_pg_why[256];

static int pg_exec(const char *sql) {
    PGconn *c = PQconnectdb(g_pg.url);
    int ok = PQstatus(c) == CONNECTION_OK;
    if (ok) {
        PGresult *r = PQexec(c, sql);
        ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
        PQclear(r);
    }
    PQfinish(c);
    return ok ? 0 : -1;
}

TEST(dead_database_not_acked_until_committed) {
    if (!g_pg_ok) SKIP("%s", g_pg_why);
    broker br;
    if (broker_new(&br, "deaddb", 1)) { broker_kill(&br, SIGTERM); SKIP("mosquitto broker not available (/usr/sbin/mosquitto)"); }
    CHECK(pg_exec("CREATE DATABASE deaddb") == 0);
    char db[300];
    snprintf(db, sizeof db, "postgres://dn@127.0.0.1:%d/deaddb", g_pg.port);
    dn_pipeline *p = pipe_open(db);
    dn_mqtt_in_config c = in_cfg(br.port, "n5");
    dn_mqtt_in *m = NULL;
    client pub;
    CHECK(client_open(&pub, br.port, NULL) == 0);
    CHECK(p && dn_mqtt_in_start(p, &c, &m) == DN_OK);
    if (!m) goto out;
    CHECK(WAIT_FOR(stat_of(m, S_CONN), 5));
    usleep(200000);
    CHECK(publish(&pub, "plant/L1/C1/image", g_img, g_img_len, "id", "x1", NULL) == 0);
    CHECK(WAIT_FOR(stat_of(m, S_ACK) == 1, 20));
    CHECK(h_pg_power(&g_pg, 0) == 0); /* the database goes away */
    CHECK(publish(&pub, "plant/L1/C1/image", g_img, g_img_len, "id", "x2", NULL) == 0);
    CHECK(WAIT_FOR(stat_of(m, S_FAIL) >= 2, 30));
    CHECK(stat_of(m, S_ACK) == 1); /* x2 not acknowledged while not committed */
    CHECK(h_pg_power(&g_pg, 1) == 0);
    CHECK(WAIT_FOR(stat_of(m, S_ACK) == 2, 40));
    CHECK(stat_of(m, S_CLS) == 2 && rows(p) == 2);
out:
    dn_mqtt_in_stop(m);
    client_close(&pub);
    dn_pipeline_close(p);
    broker_kill(&br, SIGTERM);
}

typedef struct { const char *url; dn_status rc; char err[256]; } mig_arg;
static void *mig_open(void *a) {
    mig_arg *x = a;
    dn_store *s = NULL;
    x->rc = dn_store_open(x->url, &s);
    if (x->rc) snprintf(x->err, sizeof x->err, "%s", dn_last_error());
    dn_store_close(s);
    return NULL;
}

TEST(concurrent_migrations_by_many_nodes) {
    if (!g_pg_ok) SKIP("%s", g_pg_why);
    CHECK(pg_exec("CREATE DATABASE migdb") == 0);
    char url[300];
    snprintf(url, sizeof url, "postgres://dn@127.0.0.1:%d/migdb", g_pg.port);
    enum { N = 8 };
    pthread_t th[N];
    mig_arg a[N];
    for (int i = 0; i < N; i++) {
        a[i].url = url;
        a[i].rc = DN_OK;
        a[i].err[0] = 0;
        pthread_create(&th[i], NULL, mig_open, &a[i]);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        CHECK_MSG(a[i].rc == DN_OK, "node %d: %s", i, a[i].err);
    }
    PGconn *c = PQconnectdb(url);
    PGresult *r = PQexec(c, "SELECT count(*), max(version) FROM schema_version");
    CHECK(PQresultStatus(r) == PGRES_TUPLES_OK && atoi(PQgetvalue(r, 0, 0)) == DN_STORE_SCHEMA_VERSION &&
          atoi(PQgetvalue(r, 0, 1)) == DN_STORE_SCHEMA_VERSION);
    PQclear(r);
    PQfinish(c);
}

/* ------------------------------------------------------------ hostile broker */

/* A broker that does not check what it forwards (mosquitto refuses topics with
 * control characters or invalid UTF-8 from publishers, so this is the only way such a
 * topic reaches us): a scripted peer on a loopback port that answers CONNECT and
 * SUBSCRIBE, sends one PUBLISH (QoS 1, id property) with the given topic and records
 * the PUBACK. */
typedef struct { int lfd; const char *topic; size_t tlen; int puback_pid; pthread_mutex_t mu; } hostile;

static int hb_read(int fd, uint8_t *t, uint8_t *body, size_t cap, size_t *n) {
    uint8_t b[5];
    size_t used = 0, rem = 0;
    if (recv(fd, b, 1, MSG_WAITALL) != 1) return -1;
    *t = b[0] >> 4;
    for (size_t i = 1; i < 5; i++) {
        if (recv(fd, b + i, 1, MSG_WAITALL) != 1) return -1;
        int k = dn_mqtt_remaining_len(b + 1, i, &rem, &used);
        if (k < 0) return -1;
        if (k) break;
    }
    if (rem > cap || (rem && recv(fd, body, rem, MSG_WAITALL) != (ssize_t)rem)) return -1;
    *n = rem;
    return 0;
}

static void hb_send(int fd, unsigned type, unsigned flags, dn_mqtt_wbuf *body) {
    dn_mqtt_wbuf pk = {0};
    if (!dn_mqtt_frame(&pk, type, flags, body)) (void)!send(fd, pk.p, pk.n, MSG_NOSIGNAL);
    free(pk.p);
    free(body->p);
}

static void *hostile_main(void *arg) {
    hostile *h = arg;
    int fd = accept(h->lfd, NULL, NULL);
    if (fd < 0) return NULL;
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    uint8_t t, body[4096];
    size_t n;
    while (!hb_read(fd, &t, body, sizeof body, &n)) {
        dn_mqtt_wbuf b = {0};
        if (t == DN_MQTT_CONNECT) {
            dn_mqtt_put_u8(&b, 0); /* no session present */
            dn_mqtt_put_u8(&b, 0); /* success */
            dn_mqtt_put_u8(&b, 0); /* no properties */
            hb_send(fd, DN_MQTT_CONNACK, 0, &b);
        } else if (t == DN_MQTT_SUBSCRIBE && n >= 2) {
            dn_mqtt_put(&b, body, 2);
            dn_mqtt_put_u8(&b, 0);
            dn_mqtt_put_u8(&b, 1); /* granted QoS 1 */
            hb_send(fd, DN_MQTT_SUBACK, 0, &b);
            dn_mqtt_wbuf pb = {0}, pr = {0};
            dn_mqtt_put_u16(&pb, (unsigned)h->tlen);
            dn_mqtt_put(&pb, h->topic, h->tlen);
            dn_mqtt_put_u16(&pb, 7);
            dn_mqtt_put_u8(&pr, 0x26);
            dn_mqtt_put_str(&pr, "id");
            dn_mqtt_put_str(&pr, "hostile-1");
            dn_mqtt_put_varint(&pb, pr.n);
            dn_mqtt_put(&pb, pr.p, pr.n);
            free(pr.p);
            dn_mqtt_put(&pb, g_img, g_img_len);
            hb_send(fd, DN_MQTT_PUBLISH, 2, &pb);
        } else if (t == DN_MQTT_PUBACK && n >= 2) {
            pthread_mutex_lock(&h->mu);
            h->puback_pid = body[0] << 8 | body[1];
            pthread_mutex_unlock(&h->mu);
        } else if (t == DN_MQTT_DISCONNECT) {
            break;
        }
    }
    close(fd);
    return NULL;
}

static int hostile_pid(hostile *h) {
    pthread_mutex_lock(&h->mu);
    int v = h->puback_pid;
    pthread_mutex_unlock(&h->mu);
    return v;
}

/* A topic with a newline (a forged log line after it) and invalid UTF-8, from a broker
 * that forwards it: the message is rejected and acknowledged, and the log gets exactly
 * one line for it, escaped by the serve log (\x0A, \xFF), valid UTF-8 throughout. */
TEST(hostile_topic_logged_as_one_escaped_line) {
    static const char topic[] = "plant/L1\n2026-01-01T00:00:00Z serve: forged line/\xff\xfe/image";
    hostile h = {.topic = topic, .tlen = sizeof topic - 1};
    pthread_mutex_init(&h.mu, NULL);
    int port = h_free_port();
    h.lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int one = 1;
    setsockopt(h.lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    CHECK(h.lfd >= 0 && bind(h.lfd, (struct sockaddr *)&a, sizeof a) == 0 && listen(h.lfd, 4) == 0);
    pthread_t th;
    pthread_create(&th, NULL, hostile_main, &h);
    char db[400], logp[400];
    snprintf(db, sizeof db, "sqlite:%s/hostile.db", g_dir);
    snprintf(logp, sizeof logp, "%s/hostile.log", g_dir);
    dn_pipeline_config pc = {0};
    pc.model_path = MODEL;
    pc.db_url = db;
    pc.workers = 1;
    pc.quiet = 0; /* logging on: the point of the test */
    dn_pipeline *p = NULL;
    CHECK(dn_pipeline_open(&pc, &p) == DN_OK);
    fflush(stderr);
    int saved = dup(2), lf = open(logp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(lf, 2);
    dn_mqtt_in_config c = in_cfg(port, "hostile");
    c.group = NULL;
    dn_mqtt_in *m = NULL;
    if (p && dn_mqtt_in_start(p, &c, &m) == DN_OK) {
        WAIT_FOR(hostile_pid(&h) == 7, 10);
        dn_mqtt_in_stop(m);
    }
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    close(lf);
    shutdown(h.lfd, SHUT_RDWR);
    pthread_join(th, NULL);
    close(h.lfd);
    CHECK(hostile_pid(&h) == 7); /* rejected and acknowledged */
    CHECK(p && rows(p) == 0);
    uint8_t *log = NULL;
    size_t n = 0;
    CHECK(dn_read_file(logp, 1 << 20, &log, &n) == DN_OK);
    int lines = 0, rejected = 0, escaped = 0, forged = 0, bad = 0;
    for (char *l = (char *)log, *e; log && l < (char *)log + n; l = e + 1) {
        e = memchr(l, '\n', (size_t)((char *)log + n - l));
        if (!e) e = (char *)log + n;
        lines++;
        bad |= !dn_utf8_text(l, (size_t)(e - l)) || !(l[0] >= '0' && l[0] <= '9') || !memmem(l, (size_t)(e - l), " serve: ", 8);
        forged |= !strncmp(l, "2026-01-01T00:00:00Z", 20);
        if (memmem(l, (size_t)(e - l), "rejected", 8)) {
            rejected++;
            static const char want[] = "plant/L1\\x0A2026-01-01T00:00:00Z serve: forged line/\\xFF\\xFE/image";
            escaped = memmem(l, (size_t)(e - l), want, sizeof want - 1) != NULL;
        }
    }
    CHECK_MSG(rejected == 1 && escaped && !forged && !bad, "%d lines, %d rejected, escaped %d, forged %d, bad %d:\n%.*s",
              lines, rejected, escaped, forged, bad, (int)n, log ? (char *)log : "");
    free(log);
    dn_pipeline_close(p);
    pthread_mutex_destroy(&h.mu);
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    if (h_tmpdir(g_dir, sizeof g_dir, "mqtt")) { printf("cannot make a temp dir\n"); return 1; }
    if (dn_read_file(IMG, 1 << 20, &g_img, &g_img_len)) { printf("%s\n", dn_last_error()); return 1; }
    mosquitto_lib_init();
    RUN(url_and_text);
    RUN(topic_templates);
    RUN(sparkplug_roundtrip);
    RUN(bad_config);
    RUN(ingest_results_sparkplug_and_redelivered_id);
    RUN(http_results_on_the_bus);
    RUN(bad_payloads_acked_counted_dead_lettered);
    RUN(hostile_topic_logged_as_one_escaped_line);
    RUN(redelivery_after_restart_recorded_once);
    RUN(dead_broker_reconnects);
    RUN(shared_group_splits_the_stream);
    RUN(broker_credentials);
    RUN(plc_handshake_failsafe);
    RUN(kafka_export_mock_cluster);
    g_pg_ok = h_pg_start(&g_pg, g_pg_why, sizeof g_pg_why);
    RUN(dead_database_not_acked_until_committed);
    RUN(concurrent_migrations_by_many_nodes);
    if (g_pg_ok) h_pg_stop(&g_pg);
    free(g_img);
    h_rmrf(g_dir);
    mosquitto_lib_cleanup();
    return REPORT();
}
