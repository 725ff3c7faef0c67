/* int8 deployment of a model (issue 14 item 3): activation calibration and the
 * per-conv scale record (kernels/int8.h has the arithmetic).
 *
 * The record lives in the model metadata (saved with the model, docs/model-format.md):
 *   quant.int8 = {"version":1,"method":"percentile","percentile":99.99,"images":N,
 *                 "scales":{"layer1.0.conv1":0.0123,...}}
 * scales: the u8 quantization step of each conv's input (its calibrated range
 * / 255), "%.9g" so floats round-trip exactly. The 7x7 stem reads the signed
 * normalised image and stays fp32 (no scale). Weights are quantized per output
 * channel from the BatchNorm-folded fp32 weights when a session is planned
 * (deterministic, so the stored file needs no second copy of them). With
 * quant.mode "int8" the engine runs every conv that has a scale in int8
 * (dn_quant_conv_impl), the rest fp32. */
#ifndef DN_QUANT_INT8_H
#define DN_QUANT_INT8_H
#include "nn/model.h"
#include <stdio.h>

#define DN_META_QUANT_INT8 "quant.int8"

typedef enum { DN_CALIB_MINMAX = 0, DN_CALIB_PERCENTILE } dn_calib_method;
#define DN_CALIB_DEFAULT_PCT 99.99
/* minmax: 7 of 1170 validation images flipped vs 8 with percentile 99.99 (NEU-CLS tie, DeepPCB-crops
 * 0.9940 vs 0.9900, elpv 0.9925 vs 0.9950; BENCHMARKS.md, int8): a narrow call */
#define DN_CALIB_DEFAULT DN_CALIB_MINMAX

/* Parses "minmax" | "percentile" (DN_ERR_ARG with a one-line message otherwise). */
dn_status dn_calib_method_parse(const char *s, dn_calib_method *out);

/* The input scale of conv `name`: DN_OK with *scale > 0, or *scale = 0 if the
 * model has no record or no scale for that conv; DN_ERR_FORMAT (one line naming
 * label, the key and the conv) if the record is damaged. */
dn_status dn_int8_scale(const dn_model *m, const char *name, float *scale);
/* Validates the whole record of meta (absent: DN_OK). Called at model load. */
dn_status dn_int8_check(const dn_meta *meta, const char *label);

/* Runs the fp32 model over n preprocessed images x (n x 3 x crop x crop) and
 * writes the record into m's metadata: per conv input the maximum (minmax, the
 * default) or the pct-th percentile of its values (percentile; histogram of 4096
 * bins per conv). m must not be used by a session concurrently. */
dn_status dn_int8_calibrate(dn_model *m, const float *x, int n, dn_calib_method method, double pct, int batch,
                            int threads, FILE *log);
#endif
