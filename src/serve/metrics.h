/* Service metrics in the Prometheus text exposition format (version 0.0.4).
 *
 * Exposed series:
 *   defectnet_http_requests_total{endpoint,code}      counter
 *   defectnet_predict_latency_seconds{le}             histogram (POST /v1/predict, receive->response)
 *   defectnet_predictions_total{class,decision}       counter (decision: accepted | uncertain | unknown)
 *   defectnet_ood_score{le}                           histogram of the ood_score of predictions whose model
 *                                                     has an unknown-input detector (docs/ood.md)
 *   defectnet_ood_threshold                           gauge: the current model's ood_score threshold
 *   defectnet_parts_total{outcome}                    counter: accepted_good | rejected (defect or uncertain;
 *                                                     models with a good class, eval/policy.h words)
 *   defectnet_expected_escape_rate / defectnet_expected_false_reject_rate
 *                                                     gauges: the model's decision policy as eval measured it
 *   defectnet_queue_depth / defectnet_queue_capacity  gauges (set by the caller on render)
 *   defectnet_inflight_requests                       gauge
 *   defectnet_action_outcomes_total{kind,status}      counter
 *   defectnet_model_reloads_total{result}             counter
 *   defectnet_watch_files_total{result}               counter
 *   defectnet_mqtt_messages_total{result}             counter (MQTT ingestion)
 *
 * Ownership: dn_metrics_new returns an object owned by the caller (dn_metrics_free).
 * Thread-safety: every function may be called from any thread. Label values are
 * copied and escaped on output; the number of distinct label sets is capped
 * (DN_METRICS_MAX_SERIES per family; further ones are folded into "other"). */
#ifndef DN_SERVE_METRICS_H
#define DN_SERVE_METRICS_H
#include "core/json.h"

#define DN_METRICS_MAX_SERIES 256

typedef struct dn_metrics dn_metrics;

dn_metrics *dn_metrics_new(void);
void dn_metrics_free(dn_metrics *m);
void dn_metrics_request(dn_metrics *m, const char *endpoint, int code);
void dn_metrics_latency(dn_metrics *m, double seconds);
/* decision: "accepted" | "uncertain" | "unknown"; ood_score NAN = none (not in the histogram) */
void dn_metrics_prediction(dn_metrics *m, const char *cls, const char *decision, float ood_score);
/* the current model's ood_score threshold; NAN: the model has no detector (not exposed) */
void dn_metrics_ood_threshold(dn_metrics *m, float threshold);
void dn_metrics_part(dn_metrics *m, int accepted_good);
/* the current model's expected escape / false-reject rates; < 0: unknown (not exposed) */
void dn_metrics_expected(dn_metrics *m, double escape, double false_reject);
void dn_metrics_action(dn_metrics *m, const char *kind, const char *status);
void dn_metrics_reload(dn_metrics *m, int ok);
void dn_metrics_watch(dn_metrics *m, const char *result);
void dn_metrics_mqtt(dn_metrics *m, const char *result);
void dn_metrics_inflight(dn_metrics *m, int delta);
/* Appends a label value escaped per the text format (for series rendered elsewhere,
 * e.g. the drift gauges of trust/drift.h). */
void dn_metrics_label(dn_sb *b, const char *v);
/* Appends the whole exposition; queue depth/capacity are sampled by the caller. */
void dn_metrics_render(dn_metrics *m, long queue_depth, long queue_capacity, dn_sb *out);

#endif
