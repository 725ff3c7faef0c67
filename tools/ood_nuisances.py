#!/usr/bin/python3
"""Nuisance images for the unknown-input measurement (docs/ood.md, RESULTS.md):
from N images of a folder (recursively, sorted, every k-th), write
  OUT/blank/      uniform mid-grey and black frames (an empty conveyor, a covered lens)
  OUT/saturated/  the part overexposed: 4x brightness, clipped
  OUT/blurred/    the part under a heavy Gaussian blur (radius 12: a dirty or defocused lens)
  OUT/rotcrop/    the part rotated by 30..60 degrees and cropped to its centre half
Usage: tools/ood_nuisances.py SRC_DIR OUT_DIR [--n 100]
Needs Pillow (Debian python3-pil)."""
import argparse
import os
import sys

from PIL import Image, ImageFilter


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("out")
    ap.add_argument("--n", type=int, default=100)
    a = ap.parse_args()
    files = []
    for root, _, names in os.walk(a.src):
        files += [os.path.join(root, f) for f in names if f.lower().endswith((".png", ".jpg", ".jpeg", ".bmp"))]
    files.sort()
    if not files:
        sys.exit("ood_nuisances.py: %s: no images" % a.src)
    step = max(1, len(files) // a.n)
    pick = files[::step][: a.n]
    for sub in ("blank", "saturated", "blurred", "rotcrop"):
        os.makedirs(os.path.join(a.out, sub), exist_ok=True)
    for i, f in enumerate(pick):
        im = Image.open(f).convert("RGB")
        w, h = im.size
        level = (128, 0, 200, 60)[i % 4]
        Image.new("RGB", (w, h), (level, level, level)).save(os.path.join(a.out, "blank", "%04d.png" % i))
        im.point(lambda v: min(255, v * 4)).save(os.path.join(a.out, "saturated", "%04d.png" % i))
        im.filter(ImageFilter.GaussianBlur(12)).save(os.path.join(a.out, "blurred", "%04d.png" % i))
        r = im.rotate(30 + (i * 7) % 31, resample=Image.BILINEAR)
        r.crop((w // 4, h // 4, w - w // 4, h - h // 4)).save(os.path.join(a.out, "rotcrop", "%04d.png" % i))
    print("wrote %d x 4 images to %s" % (len(pick), a.out))


if __name__ == "__main__":
    main()
