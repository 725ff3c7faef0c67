/* Simulated plant cameras for bench/fleet.sh and bench/fleet_capacity.sh: publishes a
 * bounded stream of images (MQTT 5, QoS 1) from C cameras, each message with a unique
 * id and line/camera in user properties, on plant/<line>/<camera>/image, and waits for
 * the broker's PUBACK of every one.
 *
 *   fleet_pub --url mqtt://127.0.0.1:1883 --count N [--cameras 4] [--rate MSG_PER_S]
 *             [--images a.png,b.jpg | --size BYTES] [--run ID] [--ids-out FILE]
 *             [--topic-prefix plant]
 *
 * --images: the payloads, cycled; --size: a synthetic payload of that many bytes
 * instead (broker capacity). --rate 0 (default) = as fast as the broker takes them
 * (at most 100 unacknowledged). --ids-out: the ids the broker acknowledged, one a line
 * (these count as "published"). Last line: "published P of N in S s: R msg/s, M MB/s". */
#include "core/core.h"
#include <errno.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int connected;
    long acked;
    int32_t by_mid[65536];  /* message index waiting for this mid, -1 = none */
    uint8_t *ok;             /* per message: acknowledged */
    long inflight;
} state;

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void on_connect(struct mosquitto *mq, void *o, int rc, int fl, const mosquitto_property *p) {
    state *s = o;
    pthread_mutex_lock(&s->mu);
    s->connected = rc == 0 ? 1 : -1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}
static void on_publish(struct mosquitto *mq, void *o, int mid, int rc, const mosquitto_property *p) {
    state *s = o;
    pthread_mutex_lock(&s->mu);
    int32_t i = s->by_mid[(uint16_t)mid];
    if (i >= 0 && rc < 0x80 && !s->ok[i]) { s->ok[i] = 1; s->acked++; }
    s->by_mid[(uint16_t)mid] = -1;
    s->inflight--;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static void usage(void) {
    fprintf(stderr, "usage: fleet_pub --url mqtt://HOST:PORT --count N [--cameras C] [--rate R] "
                    "[--images a,b | --size BYTES] [--run ID] [--ids-out FILE] [--topic-prefix P]\n");
}

int main(int argc, char **argv) {
    const char *url = NULL, *images = NULL, *run = "run", *ids_out = NULL, *prefix = "plant";
    long count = 0, cameras = 4, size = 0;
    double rate = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (!strcmp(a, "--url")) url = v;
        else if (!strcmp(a, "--count")) count = atol(v);
        else if (!strcmp(a, "--cameras")) cameras = atol(v);
        else if (!strcmp(a, "--rate")) rate = atof(v);
        else if (!strcmp(a, "--images")) images = v;
        else if (!strcmp(a, "--size")) size = atol(v);
        else if (!strcmp(a, "--run")) run = v;
        else if (!strcmp(a, "--ids-out")) ids_out = v;
        else if (!strcmp(a, "--topic-prefix")) prefix = v;
        else { fprintf(stderr, "fleet_pub: unknown option %s\n", a); usage(); return 2; }
    }
    if (argc % 2 == 0 || !url || count <= 0 || cameras <= 0 || cameras > 1000 || (!images && size <= 0)) { usage(); return 2; }
    char host[256];
    int port = 1883;
    if (strncmp(url, "mqtt://", 7) || sscanf(url + 7, "%255[^:]:%d", host, &port) < 1) {
        fprintf(stderr, "fleet_pub: %s: expected mqtt://HOST:PORT\n", url);
        return 2;
    }
    /* payloads */
    uint8_t *pl[64];
    size_t pn[64];
    int np = 0;
    if (images) {
        char *list = strdup(images);
        for (char *t = strtok(list, ","); t && np < 64; t = strtok(NULL, ",")) {
            if (dn_read_file(t, 64u << 20, &pl[np], &pn[np])) { fprintf(stderr, "fleet_pub: %s\n", dn_last_error()); return 1; }
            np++;
        }
        free(list);
    } else {
        pl[0] = malloc((size_t)size);
        if (!pl[0]) return 1;
        for (long i = 0; i < size; i++) pl[0][i] = (uint8_t)(i * 131 + 7);
        pn[0] = (size_t)size;
        np = 1;
    }
    state *s = calloc(1, sizeof *s);
    s->ok = calloc((size_t)count, 1);
    if (!s || !s->ok) return 1;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    for (int i = 0; i < 65536; i++) s->by_mid[i] = -1;
    mosquitto_lib_init();
    struct mosquitto *mq = mosquitto_new(NULL, true, s);
    mosquitto_int_option(mq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
    mosquitto_max_inflight_messages_set(mq, 100);
    mosquitto_connect_v5_callback_set(mq, on_connect);
    mosquitto_publish_v5_callback_set(mq, on_publish);
    if (mosquitto_connect(mq, host, port, 30) || mosquitto_loop_start(mq)) {
        fprintf(stderr, "fleet_pub: %s: cannot connect\n", url);
        return 1;
    }
    pthread_mutex_lock(&s->mu);
    while (!s->connected) pthread_cond_wait(&s->cv, &s->mu);
    int up = s->connected == 1;
    pthread_mutex_unlock(&s->mu);
    if (!up) { fprintf(stderr, "fleet_pub: %s: connection refused\n", url); return 1; }
    double t0 = now_s();
    size_t bytes = 0;
    for (long i = 0; i < count; i++) {
        if (rate > 0) {
            double due = t0 + i / rate, w = due - now_s();
            if (w > 0) usleep((useconds_t)(w * 1e6));
        }
        long cam = i % cameras;
        char topic[256], id[128], line[32], camera[32];
        snprintf(line, sizeof line, "L%ld", cam / 2 + 1);
        snprintf(camera, sizeof camera, "C%ld", cam + 1);
        snprintf(topic, sizeof topic, "%s/%s/%s/image", prefix, line, camera);
        snprintf(id, sizeof id, "%s-%s-%06ld", run, camera, i);
        mosquitto_property *props = NULL;
        mosquitto_property_add_string_pair(&props, MQTT_PROP_USER_PROPERTY, "id", id);
        mosquitto_property_add_string_pair(&props, MQTT_PROP_USER_PROPERTY, "line", line);
        mosquitto_property_add_string_pair(&props, MQTT_PROP_USER_PROPERTY, "camera", camera);
        pthread_mutex_lock(&s->mu);
        while (s->inflight >= 100) pthread_cond_wait(&s->cv, &s->mu);
        s->inflight++;
        int mid = 0;
        /* under the lock so on_publish cannot see the mid before it is recorded */
        int e = mosquitto_publish_v5(mq, &mid, topic, (int)pn[i % np], pl[i % np], 1, false, props);
        if (e) s->inflight--;
        else s->by_mid[(uint16_t)mid] = (int32_t)i;
        pthread_mutex_unlock(&s->mu);
        mosquitto_property_free_all(&props);
        if (e) { fprintf(stderr, "fleet_pub: %s: %s\n", id, mosquitto_strerror(e)); continue; }
        bytes += pn[i % np];
    }
    pthread_mutex_lock(&s->mu);
    double until = now_s() + 60;
    while (s->inflight > 0 && now_s() < until) {
        struct timespec dl;
        clock_gettime(CLOCK_REALTIME, &dl);
        dl.tv_sec += 1;
        pthread_cond_timedwait(&s->cv, &s->mu, &dl);
    }
    long acked = s->acked;
    pthread_mutex_unlock(&s->mu);
    double dt = now_s() - t0;
    mosquitto_disconnect(mq);
    mosquitto_loop_stop(mq, false);
    mosquitto_destroy(mq);
    if (ids_out) {
        FILE *f = fopen(ids_out, "w");
        if (!f) { fprintf(stderr, "fleet_pub: %s: %s\n", ids_out, strerror(errno)); return 1; }
        for (long i = 0; i < count; i++)
            if (s->ok[i]) fprintf(f, "%s-C%ld-%06ld\n", run, i % cameras + 1, i);
        if (fclose(f)) { fprintf(stderr, "fleet_pub: %s: write failed\n", ids_out); return 1; }
    }
    printf("published %ld of %ld in %.2f s: %.1f msg/s, %.1f MB/s\n", acked, count, dt, acked / dt, bytes / dt / 1e6);
    for (int i = 0; i < np; i++) free(pl[i]);
    free(s->ok);
    free(s);
    mosquitto_lib_cleanup();
    return acked == count ? 0 : 1;
}
