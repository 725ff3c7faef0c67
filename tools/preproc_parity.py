#!/usr/bin/python3
"""Reference tensors for defectnet's image decoding + preprocessing parity.

The reference is torchvision's eval transform on a PIL image converted to RGB:
    T.Resize(R) -> T.CenterCrop(C) -> T.ToTensor() -> T.Normalize(mean, std)
(Resize omitted when R == 0). Run with Debian's /usr/bin/python3 (torch 1.13,
torchvision 0.14, Pillow 9.4).

Modes
  fixtures OUTDIR
      Generates small images of awkward sizes and formats into OUTDIR and, for
      each, the expected tensor for small preprocessing sizes (committed as
      tests/fixtures/images so CI checks parity without torch). Writes
      OUTDIR/cases.txt.
  expect --resize R --crop C --out DIR [--per-dir N] PATH...
      For image files and/or directories (N files sampled evenly from each
      directory's sorted recursive listing) writes DIR/<i>.f32 and
      DIR/cases.txt. Used by tests/test_image.c at test time when torch exists.

cases.txt: one case per line, space separated:
    <image path> <resize> <crop> <tensor file> <label>
Image paths in `fixtures` mode are relative to OUTDIR; tensor files are always
relative to the cases.txt folder. Tensors are little-endian float32, 3 x C x C.
"""
import argparse
import io
import os
import sys

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]
EXTS = ('.jpg', '.jpeg', '.png', '.bmp', '.pgm', '.ppm', '.pnm')


def transform(resize, crop):
    steps = [T.Resize(resize)] if resize else []
    steps += [T.CenterCrop(crop), T.ToTensor(), T.Normalize(MEAN, STD)]
    return T.Compose(steps)


def expected(img, resize, crop):
    t = transform(resize, crop)(img.convert('RGB'))
    return t.numpy().astype('<f4')


def texture(h, w, rng, channels=3, noise=12):
    """Smooth gradients + blobs + mild noise: compresses well, exercises filters."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    out = []
    for c in range(channels):
        fx, fy = rng.uniform(0.02, 0.3, 2)
        v = 127 + 90 * np.sin(x * fx + c) * np.cos(y * fy - c)
        v += rng.normal(0, noise, (h, w))
        out.append(v)
    a = np.clip(np.stack(out, -1), 0, 255)
    return a


def make_fixtures(outdir):
    os.makedirs(outdir, exist_ok=True)
    rng = np.random.default_rng(1234)
    cases = []  # (file, label, PIL image used as reference)

    def save(name, img, label, ref=None, **kw):
        img.save(os.path.join(outdir, name), **kw)
        # Reference = what PIL decodes from the written file, unless given.
        r = ref if ref is not None else Image.open(os.path.join(outdir, name))
        cases.append((name, label, r))

    u8 = lambda a: a.astype(np.uint8)
    save('rgb_1x1.png', Image.fromarray(u8(np.array([[[200, 30, 90]]]))), '1x1 RGB PNG (upscale)')
    save('gray_3x500.png', Image.fromarray(u8(texture(500, 3, rng, 1)[..., 0])), '3x500 gray PNG')
    save('rgb_500x3.png', Image.fromarray(u8(texture(3, 500, rng))), '500x3 RGB PNG')
    save('rgb_257x255.png', Image.fromarray(u8(texture(255, 257, rng, noise=0))), '257x255 RGB PNG')
    save('rgb_640x480.jpg', Image.fromarray(u8(texture(480, 640, rng, noise=0))), '640x480 RGB JPEG q75',
         quality=75)
    save('prog_97x61.jpg', Image.fromarray(u8(texture(61, 97, rng))), 'progressive JPEG',
         quality=90, progressive=True)
    save('gray_64x48.jpg', Image.fromarray(u8(texture(48, 64, rng, 1)[..., 0])), 'grayscale JPEG')
    cmyk = Image.fromarray(u8(texture(30, 41, rng))).convert('CMYK')
    save('cmyk_41x30.jpg', cmyk, 'CMYK JPEG (Adobe inverted)', quality=95)
    pal = Image.fromarray(u8(texture(37, 50, rng))).quantize(colors=23)
    save('palette_50x37.png', pal, 'palette PNG')
    palt = Image.fromarray(u8(texture(20, 21, rng))).quantize(colors=7)
    save('palette_trns_21x20.png', palt, 'palette PNG with tRNS', transparency=3)
    bw = Image.fromarray(texture(27, 35, rng, 1)[..., 0] > 127)
    save('bilevel_35x27.png', bw, '1-bit PNG')
    a16 = (texture(61, 45, rng) * 257).astype(np.uint16)
    # Pillow cannot write 16-bit RGB PNG; write raw with our own minimal encoder.
    write_png16_rgb(os.path.join(outdir, 'rgb16_45x61.png'), a16)
    cases.append(('rgb16_45x61.png', '16-bit RGB PNG',
                  Image.open(os.path.join(outdir, 'rgb16_45x61.png'))))
    g16 = (texture(33, 26, rng, 1)[..., 0] * 257).astype(np.uint16)
    Image.fromarray(g16).save(os.path.join(outdir, 'gray16_26x33.png'))
    # PIL clips 16-bit grayscale to 255 on convert('RGB'); defectnet keeps the
    # high byte (documented in src/image/image.c), so the reference is the 8-bit image.
    cases.append(('gray16_26x33.png', '16-bit gray PNG (ref: high byte, PIL clips)',
                  Image.fromarray(u8(g16 >> 8))))
    rgba = np.concatenate([texture(29, 33, rng), rng.integers(0, 256, (29, 33, 1))], -1)
    save('rgba_33x29.png', Image.fromarray(u8(rgba), 'RGBA'), 'RGBA PNG (alpha dropped)')
    la = np.stack([texture(19, 23, rng, 1)[..., 0], rng.integers(0, 256, (19, 23))], -1)
    save('la_23x19.png', Image.fromarray(u8(la), 'LA'), 'gray+alpha PNG')
    save('gray_31x17.pgm', Image.fromarray(u8(texture(17, 31, rng, 1)[..., 0])), 'PGM P5')
    save('rgb_22x35.ppm', Image.fromarray(u8(texture(35, 22, rng))), 'PPM P6')
    save('rgb_37x23.bmp', Image.fromarray(u8(texture(23, 37, rng))), '24-bit BMP (row padding)')
    save('gray_45x30.bmp', Image.fromarray(u8(texture(30, 45, rng, 1)[..., 0])), '8-bit gray BMP')

    # Upscaling and downscaling (40/32), no resize with padding or cropping
    # (0/24) and an odd size (37/31) on a few cases to exercise half-pixel crops.
    lines = []
    n = 0
    for i, (name, label, ref) in enumerate(cases):
        sizes = [(40, 32), (0, 24)] + ([(37, 31)] if i % 4 == 0 else [])
        for r, c in sizes:
            t = expected(ref, r, c)
            tf = 'exp_%03d.f32' % n
            n += 1
            t.tofile(os.path.join(outdir, tf))
            lines.append('%s %d %d %s %s' % (name, r, c, tf, label.replace(' ', '_')))
    with open(os.path.join(outdir, 'cases.txt'), 'w') as f:
        f.write('\n'.join(lines) + '\n')
    print('wrote %d cases to %s' % (len(lines), outdir))


def write_png16_rgb(path, a):
    import struct
    import zlib
    h, w, _ = a.shape
    raw = b''.join(b'\x00' + a[y].astype('>u2').tobytes() for y in range(h))

    def chunk(t, d):
        c = struct.pack('>I', len(d)) + t + d
        return c + struct.pack('>I', zlib.crc32(t + d) & 0xffffffff)
    png = b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 16, 2, 0, 0, 0))
    png += chunk(b'IDAT', zlib.compress(raw, 9)) + chunk(b'IEND', b'')
    with open(path, 'wb') as f:
        f.write(png)


def list_images(d):
    out = []
    for root, dirs, files in os.walk(d):
        for f in files:
            if f.lower().endswith(EXTS):
                out.append(os.path.join(root, f))
    return sorted(out)


def make_expect(args):
    os.makedirs(args.out, exist_ok=True)
    paths = []
    for p in args.paths:
        if os.path.isdir(p):
            files = list_images(p)
            if files:
                step = max(1, len(files) // args.per_dir)
                paths += files[::step][:args.per_dir]
        else:
            paths.append(p)
    lines = []
    for i, p in enumerate(paths):
        im = Image.open(p)
        if im.mode in ('I', 'I;16', 'I;16B', 'I;16L'):
            # 16-bit grayscale: PIL's convert('RGB') clips to 255; defectnet keeps
            # the high byte (see src/image/image.c), so compare against that.
            im = Image.fromarray((np.array(im).astype(np.int64) >> 8).clip(0, 255).astype(np.uint8))
        t = expected(im, args.resize, args.crop)
        tf = '%05d.f32' % i
        t.tofile(os.path.join(args.out, tf))
        lines.append('%s %d %d %s real' % (os.path.abspath(p), args.resize, args.crop, tf))
    with open(os.path.join(args.out, 'cases.txt'), 'w') as f:
        f.write('\n'.join(lines) + '\n')
    print('wrote %d cases to %s' % (len(lines), args.out))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest='mode', required=True)
    f = sub.add_parser('fixtures')
    f.add_argument('outdir')
    e = sub.add_parser('expect')
    e.add_argument('--resize', type=int, default=256)
    e.add_argument('--crop', type=int, default=224)
    e.add_argument('--out', required=True)
    e.add_argument('--per-dir', type=int, default=10)
    e.add_argument('paths', nargs='+')
    a = ap.parse_args()
    torch.set_num_threads(1)
    if a.mode == 'fixtures':
        make_fixtures(a.outdir)
    else:
        make_expect(a)


if __name__ == '__main__':
    main()
