/* Sparkplug B payload encoding over the protoc-c code of sparkplug_b.proto (see sparkplug.h). */
#include "serve/sparkplug.h"
#include "core/core.h"
#include "serve/sparkplug_b.pb-c.h"
#include <stdlib.h>
#include <string.h>

dn_status dn_spb_encode(uint64_t ts_ms, int seq, const dn_spb_metric *m, int n, uint8_t **out, size_t *len) {
    *out = NULL;
    *len = 0;
    if (n < 0 || n > 64) return dn_fail(DN_ERR_ARG, "sparkplug: %d metrics (0..64)", n);
    Spb__Payload p = SPB__PAYLOAD__INIT;
    Spb__Payload__Metric mv[64], *mp[64];
    p.has_timestamp = 1;
    p.timestamp = ts_ms;
    if (seq >= 0) { p.has_seq = 1; p.seq = (uint64_t)(seq & 255); }
    for (int i = 0; i < n; i++) {
        Spb__Payload__Metric x = SPB__PAYLOAD__METRIC__INIT;
        x.name = (char *)m[i].name;
        x.has_timestamp = 1;
        x.timestamp = ts_ms;
        x.has_datatype = 1;
        x.datatype = (uint32_t)m[i].type;
        switch (m[i].type) {
        case DN_SPB_INT64: x.value_case = SPB__PAYLOAD__METRIC__VALUE_LONG_VALUE; x.long_value = (uint64_t)m[i].i; break;
        case DN_SPB_FLOAT: x.value_case = SPB__PAYLOAD__METRIC__VALUE_FLOAT_VALUE; x.float_value = m[i].f; break;
        case DN_SPB_BOOLEAN: x.value_case = SPB__PAYLOAD__METRIC__VALUE_BOOLEAN_VALUE; x.boolean_value = m[i].i != 0; break;
        case DN_SPB_STRING:
            if (!m[i].s) { x.has_is_null = 1; x.is_null = 1; break; }
            x.value_case = SPB__PAYLOAD__METRIC__VALUE_STRING_VALUE;
            x.string_value = (char *)m[i].s;
            break;
        default: return dn_fail(DN_ERR_ARG, "sparkplug: metric %s: unsupported type %d", m[i].name, m[i].type);
        }
        mv[i] = x;
        mp[i] = &mv[i];
    }
    p.n_metrics = (size_t)n;
    p.metrics = n ? mp : NULL;
    size_t sz = spb__payload__get_packed_size(&p);
    uint8_t *b = dn_malloc(sz ? sz : 1);
    if (!b) return DN_ERR_NOMEM;
    spb__payload__pack(&p, b);
    *out = b;
    *len = sz;
    return DN_OK;
}

struct dn_spb_decoded { Spb__Payload *p; };

dn_status dn_spb_decode(const uint8_t *data, size_t len, uint64_t *ts_ms, int *seq, dn_spb_metric *m, int cap,
                        int *n, dn_spb_decoded **keep) {
    *keep = NULL;
    *n = 0;
    Spb__Payload *p = spb__payload__unpack(NULL, len, data);
    if (!p) return dn_fail(DN_ERR_FORMAT, "sparkplug: payload of %zu bytes is not a Sparkplug B payload", len);
    dn_spb_decoded *d = dn_malloc(sizeof *d);
    if (!d) { spb__payload__free_unpacked(p, NULL); return DN_ERR_NOMEM; }
    d->p = p;
    *ts_ms = p->has_timestamp ? p->timestamp : 0;
    *seq = p->has_seq ? (int)p->seq : -1;
    for (size_t i = 0; i < p->n_metrics && *n < cap; i++) {
        const Spb__Payload__Metric *x = p->metrics[i];
        dn_spb_metric o = {0};
        o.name = x->name;
        o.type = (int)x->datatype;
        switch (x->value_case) {
        case SPB__PAYLOAD__METRIC__VALUE_LONG_VALUE: o.i = (int64_t)x->long_value; break;
        case SPB__PAYLOAD__METRIC__VALUE_INT_VALUE: o.i = x->int_value; break;
        case SPB__PAYLOAD__METRIC__VALUE_FLOAT_VALUE: o.f = x->float_value; break;
        case SPB__PAYLOAD__METRIC__VALUE_DOUBLE_VALUE: o.f = (float)x->double_value; break;
        case SPB__PAYLOAD__METRIC__VALUE_BOOLEAN_VALUE: o.i = x->boolean_value; break;
        case SPB__PAYLOAD__METRIC__VALUE_STRING_VALUE: o.s = x->string_value; break;
        default: break;
        }
        m[(*n)++] = o;
    }
    *keep = d;
    return DN_OK;
}

void dn_spb_free(dn_spb_decoded *d) {
    if (!d) return;
    spb__payload__free_unpacked(d->p, NULL);
    free(d);
}
