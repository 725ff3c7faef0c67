#!/usr/bin/python3
"""PyTorch side of bench/gradcam.sh: the cost of one Grad-CAM heatmap against the
forward pass, the usual recipe (torchvision ResNet-18, eval mode, a forward hook on
the stage output, logit.backward(), alpha = mean of the gradient over h x w,
cam = relu(sum_k alpha_k A_k)), batch 1, a seeded random 3 x S x S input, a new
6-class head, torch.set_num_threads(--threads). Median of --iters wall-clock runs
after one warm-up. Prints one line per measurement like bench/bench_gradcam.c.
Usage: /usr/bin/python3 tools/bench_gradcam_torch.py --weights W [--size 224]
           [--threads 1] [--iters 9] [--layer 4]
"""
import argparse
import time

import torch
import torchvision


def median_ms(fn, iters):
    fn()
    t = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        t.append((time.perf_counter() - t0) * 1e3)
    t.sort()
    return t[len(t) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", required=True)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iters", type=int, default=9)
    ap.add_argument("--layer", type=int, default=4, choices=[1, 2, 3, 4])
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(7)
    m = torchvision.models.resnet18()
    m.load_state_dict(torch.load(a.weights, map_location="cpu"))
    m.fc = torch.nn.Linear(512, 6)
    m.eval()
    x = torch.randn(1, 3, a.size, a.size)
    stage = [m.layer1, m.layer2, m.layer3, m.layer4][a.layer - 1]
    store = {}
    stage.register_forward_hook(lambda mod, inp, out: store.__setitem__("a", out))

    def forward():
        with torch.no_grad():
            m(x)

    def gradcam():
        m.zero_grad(set_to_none=True)
        logits = m(x)
        act = store["a"]
        act.retain_grad()
        logits[0, int(logits.argmax(1))].backward()
        alpha = act.grad.mean(dim=(2, 3), keepdim=True)
        return torch.relu((alpha * act).sum(1)).detach()

    f = median_ms(forward, a.iters)
    g = median_ms(gradcam, a.iters)
    print("pytorch %s, input %dx%d, batch 1, layer%d, %d thread(s), median of %d"
          % (torch.__version__, a.size, a.size, a.layer, a.threads, a.iters))
    print("pytorch   %-12s %9.2f ms  %5.2fx forward" % ("forward", f, 1.0))
    print("pytorch   %-12s %9.2f ms  %5.2fx forward" % ("gradcam map", g, g / f))


if __name__ == "__main__":
    main()
