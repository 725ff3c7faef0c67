/* Webhook transport (see transport.h): one HTTP(S) POST of the prediction JSON with
 * X-Defectnet-Rule / X-Defectnet-Prediction-Id and the rule's extra headers; success is
 * a 2xx answer within the timeout. No redirects; https verified against the system CAs
 * or the action's ca_file. The curl handle is kept between sends, so its connection cache
 * gives keep-alive to the same receiver. */
#include "serve/transport.h"
#include "core/core.h"
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct webhook {
    dn_transport base;        /* first: a dn_transport * is a webhook * */
    CURL *curl;               /* created by the first send */
} webhook;

typedef struct { char buf[200]; size_t len; } body_snip;

static size_t curl_write(char *p, size_t sz, size_t n, void *ud) {
    body_snip *b = ud;
    dn_transport_snip(b->buf, sizeof b->buf, &b->len, p, sz * n);
    return sz * n;
}

static int curl_progress(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un) {
    const dn_action_call *c = ud;
    return c->should_stop(c->stop_ctx); /* non-zero aborts the transfer */
}

static int webhook_send(dn_transport *t, const dn_action_call *call, char *detail, size_t cap) {
    webhook *w = (webhook *)t;
    const dn_action_def *act = call->act;
    if (!w->curl && !(w->curl = curl_easy_init())) {
        snprintf(detail, cap, "curl_easy_init failed");
        return 0;
    }
    CURL *c = w->curl;
    curl_easy_reset(c); /* keeps the connection cache: keep-alive to the same receiver */
    struct curl_slist *hdrs = NULL, *sl;
    char rule_hdr[256], id_hdr[64];
    snprintf(rule_hdr, sizeof rule_hdr, "X-Defectnet-Rule: %s", call->rule);
    snprintf(id_hdr, sizeof id_hdr, "X-Defectnet-Prediction-Id: %lld", (long long)call->ev->id);
    const char *fixed[] = {"Content-Type: application/json", "Expect:", rule_hdr, id_hdr};
    for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++) {
        if (!(sl = curl_slist_append(hdrs, fixed[i]))) goto oom;
        hdrs = sl;
    }
    for (char **h = act->headers; h && *h; h++) {
        if (!(sl = curl_slist_append(hdrs, *h))) goto oom;
        hdrs = sl;
    }
    char errbuf[CURL_ERROR_SIZE] = "";
    body_snip body = {.len = 0};
    body.buf[0] = 0;
    long ms = (long)(act->timeout_s * 1000);
    if (ms < 1) ms = 1;
    curl_easy_setopt(c, CURLOPT_URL, act->url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, call->ev->json);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(call->ev->json));
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "defectnet/" DN_VERSION);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, ms);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    if (act->ca_file) curl_easy_setopt(c, CURLOPT_CAINFO, act->ca_file); /* else the system bundle */
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, curl_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, curl_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, (void *)call);
    CURLcode rc = curl_easy_perform(c);
    long code = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, NULL);
    curl_slist_free_all(hdrs);
    if (rc != CURLE_OK) {
        snprintf(detail, cap, "%s", errbuf[0] ? errbuf : curl_easy_strerror(rc));
        return 0;
    }
    snprintf(detail, cap, "HTTP %ld%s%s", code, body.len ? ": " : "", body.buf);
    return code >= 200 && code < 300;
oom:
    curl_slist_free_all(hdrs);
    snprintf(detail, cap, "out of memory");
    return 0;
}

static void webhook_describe(const dn_action_call *c, char *detail, size_t cap) {
    snprintf(detail, cap, "would POST the prediction JSON (%zu bytes) to %s, timeout %g s", strlen(c->ev->json),
             c->act->url, c->act->timeout_s);
}

static void webhook_close(dn_transport *t) {
    webhook *w = (webhook *)t;
    if (w->curl) curl_easy_cleanup(w->curl);
    free(w);
}

dn_transport *dn_transport_webhook_new(void) {
    webhook *w = dn_calloc(1, sizeof *w);
    if (!w) return NULL;
    w->base.send = webhook_send;
    w->base.describe = webhook_describe;
    w->base.close = webhook_close;
    return &w->base;
}
