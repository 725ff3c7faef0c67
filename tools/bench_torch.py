#!/usr/bin/python3
"""PyTorch side of bench/run.sh (Debian python3-torch, torch.set_num_threads).

Inference: torchvision ResNet-18 with the given weights, eval mode, no_grad.
Training (--train all|head): forward + backward + SGD(momentum 0.9) step on
batches of the shared input with fixed labels, every layer trainable (all) or
only a new fc head trainable with the backbone frozen in eval mode (head, the
PyTorch-tutorial way: the backbone still runs forward every step).

Int8 (--int8): torchvision.models.quantization.resnet18 with the same weights,
fuse_model(), post-training static quantization with the default qconfig of
the best quantized engine this torch has (onednn, else fbgemm, else qnnpack),
calibrated on every image of --input (defectnet's int8 calibrates on the same
images); also reports its top-1 agreement with the fp32 model on them.

Prints one JSON line like bench/bench_ort.js.
Usage: /usr/bin/python3 tools/bench_torch.py --weights W --input bench/out/input.f32 --batch 32
           [--threads 2] [--iters 10] [--warmup 2] [--train all|head] [--classes 6] [--int8]
"""
import argparse
import json
import resource
import sys
import time

import numpy as np
import torch
import torchvision


def pct(s, p):
    i = min(len(s) - 1, max(0, int(np.ceil(p / 100 * len(s))) - 1))
    return s[i]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--train", choices=["all", "head"], default=None)
    ap.add_argument("--classes", type=int, default=6)
    ap.add_argument("--int8", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    per = 3 * 224 * 224
    raw = np.fromfile(a.input, dtype="<f4")
    avail = raw.size // per
    if a.batch < 1 or a.batch > avail:
        sys.exit(f"bench_torch: batch {a.batch} not in 1..{avail} (input file)")
    x = torch.from_numpy(raw[: a.batch * per].copy()).reshape(a.batch, 3, 224, 224)
    m = torchvision.models.resnet18()
    m.load_state_dict(torch.load(a.weights, map_location="cpu"))
    lat = []
    top1 = []
    extra = {}
    if a.int8:
        m, extra = int8_model(a.weights, m, raw, per)
    if a.train is None:
        m.eval()
        with torch.no_grad():
            for _ in range(a.warmup):
                out = m(x)
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(a.iters):
                s = time.perf_counter()
                out = m(x)
                lat.append((time.perf_counter() - s) * 1e3)
            total, cpu = time.perf_counter() - t0, time.process_time() - c0
        top1 = out.argmax(1).tolist()
        mode = "int8" if a.int8 else "fp32"
    else:
        m.fc = torch.nn.Linear(512, a.classes)
        if a.train == "head":
            for n, p in m.named_parameters():
                p.requires_grad = n.startswith("fc.")
            m.eval()  # frozen backbone: BatchNorm uses running statistics
        else:
            m.train()
        params = [p for p in m.parameters() if p.requires_grad]
        opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)
        y = torch.arange(a.batch) % a.classes
        lossf = torch.nn.CrossEntropyLoss()

        def step():
            opt.zero_grad(set_to_none=True)
            loss = lossf(m(x), y)
            loss.backward()
            opt.step()

        for _ in range(a.warmup):
            step()
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(a.iters):
            s = time.perf_counter()
            step()
            lat.append((time.perf_counter() - s) * 1e3)
        total, cpu = time.perf_counter() - t0, time.process_time() - c0
        mode = "train-" + a.train
    lat.sort()
    print(json.dumps({
        "system": "pytorch", "mode": mode, "version": torch.__version__, "batch": a.batch,
        "threads": a.threads, "iters": a.iters, "img_s": a.batch * a.iters / total,
        "p50_ms": pct(lat, 50), "p90_ms": pct(lat, 90), "p99_ms": pct(lat, 99),
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "cpu_ms_per_img": cpu * 1e3 / (a.batch * a.iters), "top1": top1, **extra,
    }))


def int8_model(weights, fp32, raw, per):
    """PyTorch's own int8 ResNet-18 (fused, static, calibrated on all input images)."""
    from torch.ao import quantization as tq
    engines = torch.backends.quantized.supported_engines
    engine = next((e for e in ("onednn", "fbgemm", "qnnpack") if e in engines), None)
    if engine is None:
        sys.exit("bench_torch: this torch has no quantized engine")
    torch.backends.quantized.engine = engine
    xs = torch.from_numpy(raw[: (raw.size // per) * per].copy()).reshape(-1, 3, 224, 224)
    q = torchvision.models.quantization.resnet18(weights=None, quantize=False)
    q.load_state_dict(torch.load(weights, map_location="cpu"))
    q.eval()
    q.fuse_model()
    q.qconfig = tq.get_default_qconfig(engine)
    tq.prepare(q, inplace=True)
    with torch.no_grad():
        for i in range(0, xs.shape[0], 8):
            q(xs[i:i + 8])
    tq.convert(q, inplace=True)
    fp32.eval()
    with torch.no_grad():
        t32 = fp32(xs).argmax(1)
        t8 = q(xs).argmax(1)
    agree = int((t32 == t8).sum())
    return q, {"quant_engine": engine, "calib_images": int(xs.shape[0]),
               "agree_fp32": f"{agree}/{xs.shape[0]}"}


if __name__ == "__main__":
    main()
