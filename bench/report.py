#!/usr/bin/python3
"""Summarise bench/run.sh results (one JSON object per line): median over rounds
per (system, mode, batch), ratios against ONNX Runtime (inference) and PyTorch
(training), top-1 agreement with ONNX Runtime on the shared input. Prints a
Markdown table; with --append also appends it to the given file."""
import argparse
import datetime
import json
import statistics
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--cmd", default="bench/run.sh")
    ap.add_argument("--cpu", default="?")
    ap.add_argument("--load", default="?")
    ap.add_argument("--append")
    a = ap.parse_args()
    rows = {}
    for line in open(a.results):
        line = line.strip()
        if not line.startswith("{"):
            continue
        r = json.loads(line)
        key = (r["system"], r["mode"], r["batch"])
        rows.setdefault(key, []).append(r)
    if not rows:
        sys.exit("bench/report.py: no results")

    def med(rs, k):
        return statistics.median(x[k] for x in rs)

    ref_top1 = {b: rs[0]["top1"] for (s, m, b), rs in rows.items() if s == "onnxruntime"}
    base = {}
    for (s, m, b), rs in rows.items():
        if s == "onnxruntime" or (s == "pytorch" and m.startswith("train")):
            base[(m if m.startswith("train") else "infer", b)] = (med(rs, "img_s"), med(rs, "p50_ms"),
                                                                 med(rs, "cpu_ms_per_img"))
    order = {"onnxruntime": 0, "defectnet": 1, "pytorch": 2}
    out = []
    out.append(f"### {datetime.datetime.utcnow().strftime('%Y-%m-%d %H:%M UTC')}: `{a.cmd}`")
    out.append("")
    out.append(f"CPU: {a.cpu}; load average before -> after: {a.load}; "
               f"{len(next(iter(rows.values())))} round(s), medians shown; ResNet-18 224x224, 2 threads unless noted.")
    out.append("")
    out.append("| system | mode (impl) | batch | img/s | p50 ms | p90 ms | p99 ms | peak RSS MB | CPU ms/img | img/s vs baseline | p50 vs baseline | CPU/img vs baseline | top-1 = ORT |")
    out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for key in sorted(rows, key=lambda k: (k[1].startswith("train"), k[2], order.get(k[0], 9), k[1])):
        s, m, b = key
        rs = rows[key]
        ips, p50, p90, p99 = med(rs, "img_s"), med(rs, "p50_ms"), med(rs, "p90_ms"), med(rs, "p99_ms")
        rss = max(x["rss_mb"] for x in rs)
        bk = (m if m.startswith("train") else "infer", b)
        cpu = med(rs, "cpu_ms_per_img")
        ratio = lat = cratio = "-"
        if bk in base:
            ratio = f"{ips / base[bk][0]:.2f}x"
            lat = f"{p50 / base[bk][1]:.2f}x"
            cratio = f"{cpu / base[bk][2]:.2f}x"
        agree = "-"
        if not m.startswith("train") and b in ref_top1 and rs[0].get("top1"):
            t, ref = rs[0]["top1"], ref_top1[b]
            agree = f"{sum(int(x == y) for x, y in zip(t, ref))}/{len(ref)}"
        impl = rs[0].get("impl")
        label = f"{m} ({impl})" if impl and impl != m else m
        out.append(f"| {s} | {label} | {b} | {ips:.1f} | {p50:.1f} | {p90:.1f} | {p99:.1f} | {rss:.0f} | {cpu:.1f} | {ratio} | {lat} | {cratio} | {agree} |")
    out.append("")
    out.append("Baseline: ONNX Runtime fp32 at the same batch for inference rows, PyTorch for training rows "
               "(img/s ratio > 1 = faster; p50 and CPU ratios < 1 = lower latency / less CPU). CPU ms/img is the "
               "process CPU time (all threads, spin-waiting included) per image: a cost measure that stays "
               "meaningful when other load on the machine slows the wall clock.")
    text = "\n".join(out) + "\n"
    print(text)
    if a.append:
        with open(a.append, "a") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    main()
