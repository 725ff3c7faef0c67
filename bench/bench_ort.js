// ONNX Runtime (npm onnxruntime-node, CPU) side of bench/run.sh.
// Usage: node bench_ort.js --model out/resnet18.onnx --input out/input.f32 --batch 32 \
//          [--threads 2] [--iters 10] [--warmup 2]
// Prints one JSON line: img/s, latency percentiles per batch (ms), peak RSS (MB),
// and the top-1 class of each image of the first batch (cross-checked by run.sh).
'use strict';
const fs = require('fs');
const ort = require('onnxruntime-node');

function arg(name, def) {
  const i = process.argv.indexOf('--' + name);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : def;
}
function pct(sorted, p) {
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(p / 100 * sorted.length) - 1));
  return sorted[i];
}

async function main() {
  const model = arg('model', 'out/resnet18.onnx');
  const batch = parseInt(arg('batch', '1'), 10);
  const threads = parseInt(arg('threads', '2'), 10);
  const iters = parseInt(arg('iters', '10'), 10);
  const warmup = parseInt(arg('warmup', '2'), 10);
  const buf = fs.readFileSync(arg('input', 'out/input.f32'));
  const per = 3 * 224 * 224;
  const avail = buf.length / 4 / per;
  if (batch < 1 || batch > avail) throw new Error(`batch ${batch} not in 1..${avail} (input file)`);
  const all = new Float32Array(buf.buffer, buf.byteOffset, avail * per);
  const x = new ort.Tensor('float32', Float32Array.from(all.subarray(0, batch * per)), [batch, 3, 224, 224]);
  const sess = await ort.InferenceSession.create(model, {
    intraOpNumThreads: threads, interOpNumThreads: 1, executionMode: 'sequential',
    graphOptimizationLevel: 'all',
  });
  let out;
  for (let i = 0; i < warmup; i++) out = await sess.run({ input: x });
  const lat = [];
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < iters; i++) {
    const s = process.hrtime.bigint();
    out = await sess.run({ input: x });
    lat.push(Number(process.hrtime.bigint() - s) / 1e6);
  }
  const total = Number(process.hrtime.bigint() - t0) / 1e9;
  const cu = process.cpuUsage(c0);
  const logits = out.logits.data;
  const nc = logits.length / batch;
  const top1 = [];
  for (let b = 0; b < batch; b++) {
    let best = 0;
    for (let c = 1; c < nc; c++) if (logits[b * nc + c] > logits[b * nc + best]) best = c;
    top1.push(best);
  }
  lat.sort((a, b) => a - b);
  console.log(JSON.stringify({
    system: 'onnxruntime', mode: 'fp32', version: require('onnxruntime-node/package.json').version,
    batch, threads, iters, img_s: batch * iters / total,
    p50_ms: pct(lat, 50), p90_ms: pct(lat, 90), p99_ms: pct(lat, 99),
    rss_mb: process.resourceUsage().maxRSS / 1024, cpu_ms_per_img: (cu.user + cu.system) / 1e3 / (batch * iters), top1,
  }));
}
main().catch((e) => { console.error('bench_ort: ' + e.message); process.exit(1); });
