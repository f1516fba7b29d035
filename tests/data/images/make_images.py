#!/usr/bin/python3
"""Regenerates the decoder test images and their reference pixels with PIL.

Each <name>.<ext> has a <name>.rgb next to it: the raw bytes of Image.open(file).convert('RGB')
(height x width x 3). Run from this folder: python3 make_images.py
"""
import random
import struct
import zlib

from PIL import Image

W, H = 19, 13
rng = random.Random(4)


def pattern(channels, maxval=255):
    """Gradients plus noise: every sample value region is exercised, files stay small."""
    data = []
    for y in range(H):
        for x in range(W):
            for c in range(channels):
                v = (x * 13 + y * 7 + c * 50) * maxval // 400 + rng.randint(0, maxval // 8)
                data.append(min(v, maxval))
    return data


def png_chunk(kind, payload):
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def raw_png(path, color_type, bit_depth, rows, extra=b""):
    """A PNG written by hand, for layouts PIL cannot save (short palettes, 16-bit RGB)."""
    ihdr = struct.pack(">IIBBBBB", W, H, bit_depth, color_type, 0, 0, 0)
    body = b"".join(b"\0" + r for r in rows)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + extra +
                png_chunk(b"IDAT", zlib.compress(body)) + png_chunk(b"IEND", b""))


def rgb_image():
    im = Image.new("RGB", (W, H))
    im.putdata([tuple(p) for p in zip(*[iter(pattern(3))] * 3)])
    return im


def save_reference(path):
    im = Image.open(path)
    im.load()
    ref = im.convert("RGB")
    with open(path.rsplit(".", 1)[0] + ".rgb", "wb") as f:
        f.write(ref.tobytes())


files = []
rgb = rgb_image()
rgb.save("rgb.png"); files.append("rgb.png")
rgba = rgb.copy(); rgba.putalpha(Image.linear_gradient("L").resize((W, H)))
rgba.save("rgba.png"); files.append("rgba.png")
gray = rgb.convert("L"); gray.save("gray.png"); files.append("gray.png")
la = gray.copy().convert("LA"); la.putalpha(128); la.save("gray_alpha.png"); files.append("gray_alpha.png")
pal = rgb.quantize(colors=16); pal.save("palette.png"); files.append("palette.png")
pal.info["transparency"] = 3; pal.save("palette_trns.png", transparency=3); files.append("palette_trns.png")
gray.convert("1").save("gray1.png"); files.append("gray1.png")

# 16-bit gray (PIL mode I; convert('RGB') clips), 16-bit RGB and RGBA, 4-bit gray, a 4-entry palette
# with indices past its end, gray+alpha 16-bit, and an Adam7-interlaced RGB file, written by hand.
g16 = pattern(1, 600)
raw_png("gray16.png", 0, 16, [b"".join(struct.pack(">H", v) for v in g16[y * W:(y + 1) * W]) for y in range(H)])
files.append("gray16.png")
c16 = pattern(3, 65535)
raw_png("rgb16.png", 2, 16, [b"".join(struct.pack(">H", v) for v in c16[y * W * 3:(y + 1) * W * 3]) for y in range(H)])
files.append("rgb16.png")
a16 = pattern(4, 65535)
raw_png("rgba16.png", 6, 16, [b"".join(struct.pack(">H", v) for v in a16[y * W * 4:(y + 1) * W * 4]) for y in range(H)])
files.append("rgba16.png")
la16 = pattern(2, 65535)
raw_png("gray_alpha16.png", 4, 16, [b"".join(struct.pack(">H", v) for v in la16[y * W * 2:(y + 1) * W * 2]) for y in range(H)])
files.append("gray_alpha16.png")
g4 = pattern(1, 15)
raw_png("gray4.png", 0, 4, [bytes((g4[y * W + x] << 4) | (g4[y * W + x + 1] if x + 1 < W else 0)
                                   for x in range(0, W, 2)) for y in range(H)])
files.append("gray4.png")
short_palette = bytes([255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30])
idx = [rng.randint(0, 9) for _ in range(W * H)]
raw_png("palette_short.png", 3, 8, [bytes(idx[y * W:(y + 1) * W]) for y in range(H)],
        png_chunk(b"PLTE", short_palette) + png_chunk(b"tRNS", bytes([0, 128])))
files.append("palette_short.png")
gray_trns = pattern(1)
raw_png("gray_trns.png", 0, 8, [bytes(gray_trns[y * W:(y + 1) * W]) for y in range(H)],
        png_chunk(b"tRNS", struct.pack(">H", gray_trns[5])))
files.append("gray_trns.png")

def adam7(path):
    """PIL cannot write Adam7-interlaced PNGs: pass-by-pass rows, no filtering."""
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
    px = rgb.load()
    body = b""
    for x0, y0, dx, dy in passes:
        xs = list(range(x0, W, dx)); ys = list(range(y0, H, dy))
        if not xs or not ys:
            continue
        for y in ys:
            body += b"\0" + b"".join(bytes(px[x, y]) for x in xs)
    ihdr = struct.pack(">IIBBBBB", W, H, 8, 2, 0, 0, 1)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(body)) +
                png_chunk(b"IEND", b""))
adam7("rgb_interlaced.png"); files.append("rgb_interlaced.png")

# JPEG: baseline 4:2:0, 4:4:4, 4:2:2, progressive, grayscale, Adobe CMYK.
rgb.save("baseline.jpg", quality=90); files.append("baseline.jpg")
rgb.save("yuv444.jpg", quality=90, subsampling=0); files.append("yuv444.jpg")
rgb.save("yuv422.jpg", quality=90, subsampling=1); files.append("yuv422.jpg")
rgb.save("progressive.jpg", quality=90, progressive=True); files.append("progressive.jpg")
gray.save("grayscale.jpg", quality=90); files.append("grayscale.jpg")
rgb.convert("CMYK").save("cmyk.jpg", quality=90); files.append("cmyk.jpg")

for name in files:
    save_reference(name)
print("\n".join(files))
