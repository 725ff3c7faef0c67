#!/usr/bin/python3
"""Writes tests/fixtures/eval/calib.{bin,json}: small fixed logit sets and the
temperature PyTorch fits on them (the reference for tests/test_eval.c).

Each case: n x k float32 logits (little endian) followed by n int32 labels,
concatenated in case order in calib.bin; calib.json lists the cases with
their offsets, the fitted T and the NLL at T = 1 and at T. The fit minimises
F.cross_entropy(logits / T, y) over log T with LBFGS (strong Wolfe) in
float64 until the gradient is ~1e-12, i.e. the exact optimum.

Run: /usr/bin/python3 tools/make_calib_fixtures.py [outdir]"""
import json
import os
import sys

import torch
import torch.nn.functional as F


def make_case(seed, n, k, scale, noise):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, k, (n,), generator=g)
    base = torch.randn(n, k, generator=g) * noise
    # the true class gets a margin; a share of samples are wrong on purpose
    margin = torch.rand(n, generator=g) * 3.0
    wrong = torch.rand(n, generator=g) < 0.2
    other = (y + torch.randint(1, k, (n,), generator=g)) % k
    tgt = torch.where(wrong, other, y)
    base[torch.arange(n), tgt] += margin
    return (base * scale).float(), y.int()


def fit_t(logits, y):
    z = logits.double()
    yl = y.long()
    logt = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([logt], lr=1.0, max_iter=1000, tolerance_grad=1e-14, tolerance_change=1e-16,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(z / logt.exp(), yl)
        loss.backward()
        return loss

    for _ in range(5):
        opt.step(closure)
    T = float(logt.exp())
    with torch.no_grad():
        nb = float(F.cross_entropy(z, yl))
        na = float(F.cross_entropy(z / T, yl))
    return T, nb, na


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "eval")
    os.makedirs(out, exist_ok=True)
    cases = [("overconfident", 1, 200, 5, 4.0, 1.0), ("underconfident", 2, 150, 3, 0.4, 0.5),
             ("many_classes", 3, 120, 9, 1.5, 1.0)]
    blob = bytearray()
    meta = []
    for name, seed, n, k, scale, noise in cases:
        logits, y = make_case(seed, n, k, scale, noise)
        T, nb, na = fit_t(logits, y)
        off = len(blob)
        blob += logits.numpy().astype("<f4").tobytes()
        blob += y.numpy().astype("<i4").tobytes()
        meta.append({"name": name, "offset": off, "n": n, "k": k, "temperature": T, "nll_before": nb, "nll_after": na})
    with open(os.path.join(out, "calib.bin"), "wb") as f:
        f.write(blob)
    with open(os.path.join(out, "calib.json"), "w") as f:
        json.dump({"torch": torch.__version__, "cases": meta}, f, indent=1)
        f.write("\n")
    print(json.dumps(meta, indent=1))


if __name__ == "__main__":
    main()
