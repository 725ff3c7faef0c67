/* `defectnet serve`: runs the HTTP service until SIGTERM/SIGINT; SIGHUP reloads
 * the model and rules. Signals are blocked in every thread and taken synchronously
 * by the main thread with sigtimedwait, so no work happens in a signal handler. */
#include "cli/args.h"
#include "core/core.h"
#include "serve/bus.h"
#include "serve/http.h"
#include "serve/kafka.h"
#include "serve/mqtt_in.h"
#include "serve/pipeline.h"
#include "serve/store.h"
#include "trust/review.h"
#include "trust/drift.h"
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void serve_usage(FILE *f) {
    fprintf(f,
            "usage: defectnet serve -m|--model M [--db sqlite:FILE | postgres://...] [--rules FILE]\n"
            "         [--watch DIR [--move-processed] [--watch-line L] [--watch-station S] [--watch-camera C]]\n"
            "         [--listen 127.0.0.1:8080] [--workers N] [--queue N]\n"
            "         [--token-file F] [--store-images DIR [--heatmaps unknown,uncertain,defect]] [--dry-run] [--max-body BYTES]\n"
            "         [--body-timeout S] [--idle-timeout S] [--session-threads N] [--batch N] [--ok-classes a,b]\n"
            "         [--header-timeout S] [--max-connections N] [--max-per-client N] [--body-budget BYTES]\n"
            "         [--report-slots N] [--quiet] [--node ID] [--good-class NAME] [--drift-window 500|1h]\n"
            "         [--mqtt-in mqtt://HOST:PORT --mqtt-topic FILTER [--mqtt-group NAME] [--mqtt-fields line,camera]\n"
            "          [--mqtt-file-root DIR] [--mqtt-dead-letter TOPIC] [--mqtt-inflight N] [--mqtt-max-payload BYTES]\n"
            "          [--mqtt-session-expiry S]]\n"
            "         [--mqtt-out mqtt://HOST:PORT] [--mqtt-results TEMPLATE] [--mqtt-last TEMPLATE] [--sparkplug GROUP/NODE]\n"
            "         [--mqtt-user NAME [--mqtt-password-file F]] [--kafka HOST:PORT,... --kafka-topic T]\n"
            "         [--plc-topic TEMPLATE [--plc-deadline-ms 1000] [--plc-failsafe reject] [--plc-ok-classes a,b]]\n"
            "         [--review POLICY [--review-agree N]] [--shadow M2]\n"
            "  --db defaults to sqlite:defectnet.db. --listen binds 127.0.0.1 unless told otherwise.\n"
            "  SIGHUP or POST /v1/admin/reload reloads model + rules; SIGTERM/SIGINT shut down gracefully.\n"
            "  See docs/serve.md for the endpoints, docs/fleet.md for MQTT ingestion, results on the bus\n"
            "  (templates use {line} {station} {camera} {part} {class} {decision}) and several nodes.\n"
            "  --node defaults to the host name: recorded with every prediction (column node) and the\n"
            "  MQTT session id of this node (a restarted node gets its unacknowledged messages again).\n"
            "  --good-class NAME: the class meaning \"good part\" (default: the model's, see `defectnet info`);\n"
            "  decisions follow the model's stored policy (eval --target-escape/--cost) for that class.\n"
            "  --heatmaps KINDS: Grad-CAM overlays (PNG) beside the image copies for these predictions,\n"
            "  comma separated: unknown, uncertain, defect (accepted, not the good class), good, or all;\n"
            "  the path is recorded with the prediction (\"heatmap\") and linked from reports (docs/ood.md).\n"
            "  --drift-window N|DURATION: drift is measured per line/camera over the last N predictions\n"
            "  (default 500) or the last 90s/30m/1h/2d against the model's reference (GET /v1/drift, /metrics,\n"
            "  rule condition \"drift\"; docs/drift.md).\n"
            "  --review POLICY: queue predictions for human review (GET /review, /v1/review; docs/review.md),\n"
            "  comma separated: unknown, uncertain, accepted, class:NAME, sample:RATE (of accepted ones),\n"
            "  cap:N/h (items per rolling hour), agree:N, e.g. \"uncertain,unknown,class:scratch,sample:0.01,cap:100/h\".\n"
            "  --review-agree N: a label is final when N reviewers gave it (default 1); disagreements are listed\n"
            "  by GET /v1/review/disagreements. Images are shown only with --store-images.\n"
            "  --shadow M2: a candidate model also classifies every image; its answers are only logged\n"
            "  (table shadow_predictions; `defectnet compare --db`), never answered or acted on.\n"
            DN_EXIT_HELP);
}

/* Reads the token file: first line, surrounding whitespace removed. Caller frees. */
static char *read_token(const char *path) {
    uint8_t *d = NULL;
    size_t n = 0;
    if (dn_read_file(path, 4096, &d, &n)) {
        fprintf(stderr, "defectnet serve: --token-file: %s\n", dn_last_error());
        return NULL;
    }
    char *t = dn_malloc(n + 1);
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

/* Everything the command line says, parsed (checked by serve_check). */
typedef struct serve_opts {
    dn_server_config c;
    dn_mqtt_in_config mc;
    dn_bus_config bc;
    const char *token_file, *node, *mqtt_pw_file, *kafka_brokers, *kafka_topic;
    int want_bus;                   /* results bus needed (set by serve_check) */
    char *token, *mqtt_pw;          /* read from their files by serve_check; owned */
    char host[256], bus_id[300];    /* default node id and the bus client id */
} serve_opts;

/* Parses the command line into *o. Returns -1 to go on, else the exit code (--help: 0). */
static int serve_parse(int argc, char **argv, serve_opts *o) {
    dn_server_config c = {0};
    const char *token_file = NULL;
    dn_mqtt_in_config mc = {0};
    dn_bus_config bc = {0};
    const char *node = NULL, *mqtt_pw_file = NULL, *kafka_brokers = NULL, *kafka_topic = NULL;
    static const dn_opt opts[] = {
        {"dry-run", 256, DN_ARG_NONE, NULL},
        {"move-processed", 257, DN_ARG_NONE, NULL},
        {"quiet", 258, DN_ARG_NONE, NULL},
        {"model", 'm', DN_ARG_REQ, NULL},
        {"good-class", 259, DN_ARG_REQ, NULL},
        {"db", 260, DN_ARG_REQ, NULL},
        {"rules", 261, DN_ARG_REQ, NULL},
        {"watch", 262, DN_ARG_REQ, NULL},
        {"watch-line", 263, DN_ARG_REQ, NULL},
        {"watch-station", 264, DN_ARG_REQ, NULL},
        {"watch-camera", 265, DN_ARG_REQ, NULL},
        {"listen", 266, DN_ARG_REQ, NULL},
        {"token-file", 267, DN_ARG_REQ, NULL},
        {"store-images", 268, DN_ARG_REQ, NULL},
        {"heatmaps", 330, DN_ARG_REQ, NULL},
        {"ok-classes", 269, DN_ARG_REQ, NULL},
        {"node", 270, DN_ARG_REQ, NULL},
        {"mqtt-in", 271, DN_ARG_REQ, NULL},
        {"mqtt-topic", 272, DN_ARG_REQ, NULL},
        {"mqtt-group", 273, DN_ARG_REQ, NULL},
        {"mqtt-fields", 274, DN_ARG_REQ, NULL},
        {"mqtt-file-root", 275, DN_ARG_REQ, NULL},
        {"mqtt-dead-letter", 276, DN_ARG_REQ, NULL},
        {"mqtt-inflight", 277, DN_ARG_REQ, NULL},
        {"mqtt-max-payload", 278, DN_ARG_REQ, NULL},
        {"mqtt-session-expiry", 279, DN_ARG_REQ, NULL},
        {"mqtt-out", 280, DN_ARG_REQ, NULL},
        {"mqtt-results", 281, DN_ARG_REQ, NULL},
        {"mqtt-last", 282, DN_ARG_REQ, NULL},
        {"sparkplug", 283, DN_ARG_REQ, NULL},
        {"mqtt-user", 284, DN_ARG_REQ, NULL},
        {"mqtt-password-file", 285, DN_ARG_REQ, NULL},
        {"kafka", 286, DN_ARG_REQ, NULL},
        {"plc-topic", 287, DN_ARG_REQ, NULL},
        {"plc-failsafe", 288, DN_ARG_REQ, NULL},
        {"plc-ok-classes", 289, DN_ARG_REQ, NULL},
        {"plc-deadline-ms", 290, DN_ARG_REQ, NULL},
        {"kafka-topic", 291, DN_ARG_REQ, NULL},
        {"workers", 292, DN_ARG_REQ, NULL},
        {"queue", 293, DN_ARG_REQ, NULL},
        {"batch", 294, DN_ARG_REQ, NULL},
        {"session-threads", 295, DN_ARG_REQ, NULL},
        {"max-body", 296, DN_ARG_REQ, NULL},
        {"body-timeout", 297, DN_ARG_REQ, NULL},
        {"idle-timeout", 298, DN_ARG_REQ, NULL},
        {"header-timeout", 299, DN_ARG_REQ, NULL},
        {"max-connections", 300, DN_ARG_REQ, NULL},
        {"max-per-client", 301, DN_ARG_REQ, NULL},
        {"body-budget", 302, DN_ARG_REQ, NULL},
        {"report-slots", 303, DN_ARG_REQ, NULL},
        {"drift-window", 304, DN_ARG_REQ, NULL},
        {"review", 305, DN_ARG_REQ, NULL},
        {"review-agree", 306, DN_ARG_REQ, NULL},
        {"shadow", 307, DN_ARG_REQ, NULL},
        {0}};
    dn_args ga;
    dn_args_init(&ga, "serve", argc, argv, opts);
    for (int key; (key = dn_args_next(&ga)) != -1;) {
        const char *a = ga.canon, *val = ga.val;
        long long v = 0;
        if (key == 'h') { serve_usage(stdout); return 0; }
        if (key == '?') return DN_EXIT_USAGE;
        if (!strcmp(a, "--dry-run")) { c.dry_run = 1; continue; }
        if (!strcmp(a, "--move-processed")) { c.move_processed = 1; continue; }
        if (!strcmp(a, "--quiet")) { c.quiet = 1; continue; }
        if (!strcmp(a, "--model")) c.model_path = val;
        else if (!strcmp(a, "--good-class")) c.good_class = val;
        else if (!strcmp(a, "--db")) c.db_url = val;
        else if (!strcmp(a, "--rules")) c.rules_path = val;
        else if (!strcmp(a, "--watch")) c.watch_dir = val;
        else if (!strcmp(a, "--watch-line")) c.watch_line = val;
        else if (!strcmp(a, "--watch-station")) c.watch_station = val;
        else if (!strcmp(a, "--watch-camera")) c.watch_camera = val;
        else if (!strcmp(a, "--listen")) c.listen = val;
        else if (!strcmp(a, "--token-file")) token_file = val;
        else if (!strcmp(a, "--store-images")) c.store_images = val;
        else if (!strcmp(a, "--heatmaps")) c.heatmaps = val;
        else if (!strcmp(a, "--ok-classes")) c.ok_classes = val;
        else if (!strcmp(a, "--node")) node = val;
        else if (!strcmp(a, "--mqtt-in")) mc.url = val;
        else if (!strcmp(a, "--mqtt-topic")) mc.topic = val;
        else if (!strcmp(a, "--mqtt-group")) mc.group = val;
        else if (!strcmp(a, "--mqtt-fields")) mc.fields = val;
        else if (!strcmp(a, "--mqtt-file-root")) mc.file_root = val;
        else if (!strcmp(a, "--mqtt-dead-letter")) mc.dead_letter = val;
        else if (!strcmp(a, "--mqtt-inflight")) { if (dn_arg_long(&ga, 1, 256, &v)) return DN_EXIT_USAGE; mc.inflight = (int)v; }
        else if (!strcmp(a, "--mqtt-max-payload")) { if (dn_arg_long(&ga, 1024, 256L << 20, &v)) return DN_EXIT_USAGE; mc.max_payload = (size_t)v; }
        else if (!strcmp(a, "--mqtt-session-expiry")) { if (dn_arg_long(&ga, 1, 0x7fffffffL, &v)) return DN_EXIT_USAGE; mc.session_expiry = (int)v; }
        else if (!strcmp(a, "--mqtt-out")) bc.url = val;
        else if (!strcmp(a, "--mqtt-results")) bc.results_topic = val;
        else if (!strcmp(a, "--mqtt-last")) bc.last_topic = val;
        else if (!strcmp(a, "--sparkplug")) bc.sparkplug = val;
        else if (!strcmp(a, "--mqtt-user")) mc.username = bc.username = val;
        else if (!strcmp(a, "--mqtt-password-file")) mqtt_pw_file = val;
        else if (!strcmp(a, "--kafka")) kafka_brokers = val;
        else if (!strcmp(a, "--plc-topic")) bc.plc_topic = val;
        else if (!strcmp(a, "--plc-failsafe")) bc.plc_failsafe = val;
        else if (!strcmp(a, "--plc-ok-classes")) bc.plc_ok_classes = val;
        else if (!strcmp(a, "--plc-deadline-ms")) { if (dn_arg_long(&ga, 1, 600000, &v)) return DN_EXIT_USAGE; bc.plc_deadline_ms = (int)v; }
        else if (!strcmp(a, "--kafka-topic")) kafka_topic = val;
        else if (!strcmp(a, "--workers")) { if (dn_arg_long(&ga, 1, 256, &v)) return DN_EXIT_USAGE; c.workers = (int)v; }
        else if (!strcmp(a, "--queue")) { if (dn_arg_long(&ga, 1, 1000000, &v)) return DN_EXIT_USAGE; c.queue = (int)v; }
        else if (!strcmp(a, "--batch")) { if (dn_arg_long(&ga, 1, DN_SERVE_MAX_BATCH, &v)) return DN_EXIT_USAGE; c.batch = (int)v; }
        else if (!strcmp(a, "--session-threads")) { if (dn_arg_long(&ga, 1, 256, &v)) return DN_EXIT_USAGE; c.session_threads = (int)v; }
        else if (!strcmp(a, "--max-body")) { if (dn_arg_long(&ga, 1024, 1L << 30, &v)) return DN_EXIT_USAGE; c.max_body = (size_t)v; }
        else if (!strcmp(a, "--body-timeout")) { if (dn_arg_long(&ga, 1, 3600, &v)) return DN_EXIT_USAGE; c.body_timeout = (int)v; }
        else if (!strcmp(a, "--idle-timeout")) { if (dn_arg_long(&ga, 1, 3600, &v)) return DN_EXIT_USAGE; c.idle_timeout = (int)v; }
        else if (!strcmp(a, "--header-timeout")) { if (dn_arg_long(&ga, 1, 3600, &v)) return DN_EXIT_USAGE; c.header_timeout = (int)v; }
        else if (!strcmp(a, "--max-connections")) { if (dn_arg_long(&ga, 1, 100000, &v)) return DN_EXIT_USAGE; c.max_connections = (int)v; }
        else if (!strcmp(a, "--max-per-client")) { if (dn_arg_long(&ga, 1, 100000, &v)) return DN_EXIT_USAGE; c.max_per_client = (int)v; }
        else if (!strcmp(a, "--body-budget")) { if (dn_arg_long(&ga, 1 << 20, 1L << 40, &v)) return DN_EXIT_USAGE; c.body_budget = (size_t)v; }
        else if (!strcmp(a, "--report-slots")) { if (dn_arg_long(&ga, 1, 64, &v)) return DN_EXIT_USAGE; c.report_slots = (int)v; }
        else if (!strcmp(a, "--drift-window")) {
            dn_drift_cfg dc;
            if (dn_drift_window_parse(val, &dc)) return dn_usage_error("serve", "%s", dn_last_error());
            c.drift_window = val;
        }
        else if (!strcmp(a, "--review")) {
            dn_review_policy rp;
            if (dn_review_policy_parse(val, "--review", &rp)) return dn_usage_error("serve", "%s", dn_last_error());
            dn_review_policy_free(&rp);
            c.review = val;
        }
        else if (!strcmp(a, "--review-agree")) { if (dn_arg_long(&ga, 1, 9, &v)) return DN_EXIT_USAGE; c.review_agree = (int)v; }
        else if (!strcmp(a, "--shadow")) c.shadow_model = val;
        else return dn_usage_error("serve", "unknown option %s", a);
    }
    if (dn_args_npos(&ga)) return dn_usage_error("serve", "unexpected argument '%s'", dn_args_pos(&ga, 0));
    memset(o, 0, sizeof *o);
    o->c = c;
    o->mc = mc;
    o->bc = bc;
    o->token_file = token_file;
    o->node = node;
    o->mqtt_pw_file = mqtt_pw_file;
    o->kafka_brokers = kafka_brokers;
    o->kafka_topic = kafka_topic;
    return -1;
}

/* Refuses option combinations that cannot work and bad MQTT/bus settings before anything
 * starts; reads the token and password files; fills in the node id. 0 or the exit code. */
static int serve_check(serve_opts *o) {
    dn_server_config *c = &o->c;
    dn_mqtt_in_config *mc = &o->mc;
    dn_bus_config *bc = &o->bc;
    if (!c->model_path) return dn_usage_error("serve", "--model is required (see defectnet serve --help)");
    if (c->move_processed && !c->watch_dir) {
        fprintf(stderr, "defectnet serve: --move-processed needs --watch DIR\n");
        return 2;
    }
    if (!mc->url != !mc->topic) {
        fprintf(stderr, "defectnet serve: --mqtt-in and --mqtt-topic go together\n");
        return 2;
    }
    if (!mc->url && (mc->group || mc->fields || mc->file_root || mc->dead_letter || mc->inflight || mc->max_payload || mc->session_expiry)) {
        fprintf(stderr, "defectnet serve: the --mqtt-group/-fields/-file-root/-dead-letter/-inflight/-max-payload/-session-expiry options need --mqtt-in\n");
        return 2;
    }
    o->want_bus = bc->results_topic || bc->last_topic || bc->sparkplug || mc->dead_letter || bc->plc_topic;
    if ((bc->plc_failsafe || bc->plc_ok_classes || bc->plc_deadline_ms) && !bc->plc_topic) {
        fprintf(stderr, "defectnet serve: --plc-deadline-ms/--plc-failsafe/--plc-ok-classes need --plc-topic\n");
        return 2;
    }
    if (!bc->url) bc->url = mc->url;
    if (o->want_bus && !bc->url) {
        fprintf(stderr, "defectnet serve: --mqtt-results/--mqtt-last/--sparkplug/--mqtt-dead-letter need --mqtt-out or --mqtt-in\n");
        return 2;
    }
    if (!o->node) {
        if (gethostname(o->host, sizeof o->host - 1) || !o->host[0]) snprintf(o->host, sizeof o->host, "defectnet");
        o->node = o->host;
    }
    snprintf(o->bus_id, sizeof o->bus_id, "%s-bus", o->node);
    mc->client_id = o->node;
    bc->client_id = o->bus_id;
    if (!o->kafka_brokers != !o->kafka_topic || (o->kafka_brokers && !mc->url)) {
        fprintf(stderr, "defectnet serve: --kafka and --kafka-topic go together and need --mqtt-in (MQTT-ingested predictions are exported)\n");
        return 2;
    }
    if (o->mqtt_pw_file) {
        if (!mc->username && !bc->username) {
            fprintf(stderr, "defectnet serve: --mqtt-password-file needs --mqtt-user\n");
            return 2;
        }
        if (!(o->mqtt_pw = read_token(o->mqtt_pw_file))) return 2;
        mc->password = bc->password = o->mqtt_pw;
    }
    /* bad MQTT/bus options are refused before anything starts */
    if ((mc->url && dn_mqtt_in_check(mc)) || (o->want_bus && dn_bus_check(bc))) {
        fprintf(stderr, "defectnet serve: %s\n", dn_last_error());
        return 2;
    }
    if (o->token_file && !(o->token = read_token(o->token_file))) return 2;
    c->token = o->token;
    return 0;
}

/* Waits for signals: SIGHUP reloads model and rules, SIGTERM/SIGINT return. */
static void serve_wait(dn_server *s, const sigset_t *set) {
    for (;;) {
        int sig = sigwaitinfo(set, NULL);
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
}

/* Starts the HTTP service (with its pipeline), the results bus, the Kafka export and MQTT
 * ingestion, serves until SIGTERM/SIGINT, then stops them (the server first: its last
 * predictions still reach the bus and Kafka). Returns the exit code. */
static int serve_run(serve_opts *o) {
    /* Block the signals before any thread exists so all threads inherit the mask. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    dn_server *s = NULL;
    if (dn_server_start(&o->c, &s)) {
        fprintf(stderr, "defectnet serve: %s\n", dn_last_error());
        return 1;
    }
    dn_bus *bus = NULL;
    dn_kafka *kafka = NULL;
    dn_mqtt_in *mi = NULL;
    int rc = 1;
    if (dn_store_set_node(dn_server_store(s), o->node)) {
        fprintf(stderr, "defectnet serve: out of memory\n");
        goto stop;
    }
    if (o->want_bus && dn_bus_start(&o->bc, &bus)) goto fail;
    o->mc.bus = bus;
    dn_pipeline_set_bus(dn_server_pipeline(s), bus); /* HTTP and drop-folder results too */
    if (o->kafka_brokers && dn_kafka_start(o->kafka_brokers, o->kafka_topic, &kafka)) goto fail;
    o->mc.kafka = kafka;
    dn_pipeline_set_kafka(dn_server_pipeline(s), kafka); /* HTTP and drop-folder records too */
    if (o->mc.url && dn_mqtt_in_start(dn_server_pipeline(s), &o->mc, &mi)) goto fail;
    int h_in = mi ? dn_server_add_health(s, dn_mqtt_in_health, mi) : -1;
    int h_bus = bus ? dn_server_add_health(s, dn_bus_health, bus) : -1;
    /* one line on stdout with the bound port, for scripts that use --listen HOST:0 */
    printf("listening %d\n", dn_server_port(s));
    fflush(stdout);
    serve_wait(s, &set);
    dn_server_remove_health(s, h_in);
    dn_server_remove_health(s, h_bus);
    rc = 0;
    goto stop;
fail:
    fprintf(stderr, "defectnet serve: %s\n", dn_last_error());
stop:
    dn_mqtt_in_stop(mi); /* unacknowledged messages stay with the broker */
    dn_server_stop(s);
    dn_kafka_stop(kafka);
    dn_bus_stop(bus);
    if (!rc) fprintf(stderr, "defectnet serve: stopped\n");
    return rc;
}

int cmd_serve(int argc, char **argv) {
    serve_opts o;
    int rc = serve_parse(argc, argv, &o);
    if (rc >= 0) return rc;
    rc = serve_check(&o);
    if (!rc) rc = serve_run(&o);
    free(o.token);
    free(o.mqtt_pw);
    return rc;
}
