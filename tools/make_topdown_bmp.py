"""Writes top-down BMP fixtures (negative height: first stored row is the top row)
and PIL's decoding of them, for tests/test_image.c (issue 9 row 7).

Each top-down file is made from a committed bottom-up fixture by reversing its pixel
rows and negating the height field; PIL decodes it independently, and its RGB bytes
are the expected output (<name>.rgb, h*w*3 bytes, row-major from the top).

    /usr/bin/python3 tools/make_topdown_bmp.py      (run from the repository root)
"""
import struct
from PIL import Image

FIX = "tests/fixtures/images/"


def topdown(src, dst):
    b = bytearray(open(FIX + src, "rb").read())
    off, hsz = struct.unpack_from("<II", b, 10)
    assert hsz >= 40, "needs a BITMAPINFOHEADER or later"
    w, h = struct.unpack_from("<ii", b, 18)
    bpp = struct.unpack_from("<H", b, 28)[0]
    assert h > 0, "source must be bottom-up"
    stride = (w * bpp + 31) // 32 * 4
    rows = [bytes(b[off + y * stride: off + (y + 1) * stride]) for y in range(h)]
    b[off: off + h * stride] = b"".join(reversed(rows))
    struct.pack_into("<i", b, 22, -h)
    open(FIX + dst, "wb").write(bytes(b))
    im = Image.open(FIX + dst).convert("RGB")
    assert im.size == (w, h)
    ref = Image.open(FIX + src).convert("RGB")
    assert im.tobytes() == ref.tobytes(), "PIL sees a different picture"
    open(FIX + dst[:-4] + ".rgb", "wb").write(im.tobytes())
    print(dst, w, h, bpp)


topdown("rgb_37x23.bmp", "topdown_37x23.bmp")
topdown("gray_45x30.bmp", "topdown_45x30.bmp")
