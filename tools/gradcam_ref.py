#!/usr/bin/python3
"""PyTorch reference for Grad-CAM parity (tests/test_explain.c, docs/ood.md).

Loads the narrow fixture model tests/fixtures/resnet/r18n.pth into torchvision's
ResNet layout (tools/make_fixtures.py: narrow_resnet), draws N seeded 3 x S x S
inputs, and for each input, for the predicted class and for class 3, and for
layer1..layer4 computes the usual Grad-CAM recipe in eval mode:
    A = stage output (forward hook), g = d logit_c / d A (logit.backward()),
    alpha_k = mean_hw g_k, cam = relu(sum_k alpha_k A_k).
Writes OUT_DIR/gradcam_input.f32 (N x 3 x S x S), OUT_DIR/gradcam_cam.f32
(for n, for class in (pred, 3), for layer 1..4: the h x w map, concatenated) and
OUT_DIR/gradcam.json ({"n", "size", "pred": [...], "shapes": [[h, w] x 4]}).
Usage: /usr/bin/python3 tools/gradcam_ref.py [OUT_DIR] [--n 2] [--size 64]
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import narrow_resnet  # noqa: E402


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("out", nargs="?", default=os.path.join(here, "..", "tests", "fixtures", "gradcam"))
    ap.add_argument("--model", default=os.path.join(here, "..", "tests", "fixtures", "resnet", "r18n.pth"))
    ap.add_argument("--n", type=int, default=2)
    ap.add_argument("--size", type=int, default=64)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    sd = torch.load(a.model, map_location="cpu")
    layers = [len({k.split(".")[1] for k in sd if k.startswith("layer%d." % i)}) for i in range(1, 5)]
    widths = [sd["conv1.weight"].shape[0]] + [sd["layer%d.0.conv1.weight" % i].shape[0] for i in range(1, 5)]
    m = narrow_resnet(layers, widths, sd["fc.weight"].shape[0])
    m.load_state_dict(sd)
    m.eval()
    gen = torch.Generator().manual_seed(1234)
    x = torch.randn(a.n, 3, a.size, a.size, generator=gen)
    stages = [m.layer1, m.layer2, m.layer3, m.layer4]
    cams, preds, shapes = [], [], None
    for i in range(a.n):
        xi = x[i:i + 1]
        with torch.no_grad():
            pred = int(m(xi).argmax(1))
        preds.append(pred)
        for cls in (pred, 3):
            got = []
            for st in stages:
                keep = {}
                h = st.register_forward_hook(lambda mod, inp, out: keep.__setitem__("a", out))
                m.zero_grad()
                logits = m(xi)
                h.remove()
                A = keep["a"]
                g = torch.autograd.grad(logits[0, cls], A)[0]
                alpha = g.mean(dim=(2, 3), keepdim=True)
                cam = torch.relu((alpha * A).sum(1))[0].detach()
                got.append(cam)
            shapes = [list(c.shape) for c in got]
            cams += [c.reshape(-1) for c in got]
    x.numpy().astype("<f4").tofile(os.path.join(a.out, "gradcam_input.f32"))
    torch.cat(cams).numpy().astype("<f4").tofile(os.path.join(a.out, "gradcam_cam.f32"))
    with open(os.path.join(a.out, "gradcam.json"), "w") as f:
        json.dump({"n": a.n, "size": a.size, "pred": preds, "shapes": shapes}, f)
        f.write("\n")
    print("wrote Grad-CAM reference for %d inputs to %s" % (a.n, a.out))


if __name__ == "__main__":
    main()
