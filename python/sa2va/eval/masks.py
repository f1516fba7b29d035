"""COCO masks in numpy, bit-exact with pycocotools (whose C library Debian does not package).

Run-length encoding (RLE): an H x W mask is read in column-major order (down each column, columns
left to right); ``counts`` are the lengths of the runs, the first run being background (so it may be
0). A new run starts wherever the pixel value changes -- any change, so a mask holding 2 where two
polygons overlap starts runs at 1->2 and 2->1 too, and decoding then alternates 0/1 by run parity
(upstream's RefCOCO ground truth goes through exactly this).

The compressed ``counts`` string: each count x (for i > 2 the difference x - counts[i-2]) in signed
5-bit groups, least significant first, one character per group: c = group | 0x20 while more groups
follow, written as chr(c + 48); a value ends when the rest is 0 (or -1 for negatives) and the last
group's sign bit 0x10 agrees.

Polygons are rasterised as pycocotools' rleFrPoly does: the outline is traced at 5x resolution, the
points where it crosses a pixel column's centre line are mapped back, and each such point toggles
inside/outside in column-major order (even-odd fill). A list of them is read as frPyObjects reads
it: a first entry of exactly 4 numbers makes the list boxes [x, y, w, h], of more polygons.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np


# ---------------------------------------------------------------------------------------- counts
def encode_counts(mask: np.ndarray) -> list[int]:
    """Run lengths of an H x W mask (any integer values; a run ends at every value change)."""
    flat = np.asarray(mask).astype(np.uint8, copy=False).flatten(order="F")
    if flat.size == 0:
        return [0]
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    edges = np.concatenate(([0], change, [flat.size]))
    counts = np.diff(edges).tolist()
    if flat[0] != 0:
        counts.insert(0, 0)
    return counts


def decode_counts(counts: Sequence[int], height: int, width: int) -> np.ndarray:
    """H x W uint8 mask of 0/1 from run lengths (runs alternate 0, 1, 0, ... column-major)."""
    counts = np.asarray(counts, dtype=np.int64)
    if (counts < 0).any() or int(counts.sum()) != height * width:
        raise ValueError(f"RLE counts cover {int(counts.sum())} pixels, not {height} x {width}")
    flat = np.repeat((np.arange(len(counts)) % 2).astype(np.uint8), counts)
    return flat.reshape((width, height)).T.copy()


def counts_to_string(counts: Sequence[int]) -> str:
    out = []
    for i, count in enumerate(counts):
        x = int(count) - (int(counts[i - 2]) if i > 2 else 0)
        more = True
        while more:
            c = x & 0x1F
            x >>= 5  # arithmetic shift, as C's on a signed long
            more = (x != -1) if (c & 0x10) else (x != 0)
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def counts_from_string(text: str) -> list[int]:
    counts: list[int] = []
    p = 0
    while p < len(text):
        x = k = 0
        more = True
        while more:
            if p >= len(text):
                raise ValueError("RLE string ends inside a value")
            c = ord(text[p]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"RLE string has a character outside '0'..'o': {text[p]!r}")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x & 0xFFFFFFFF)  # C stores it as an unsigned int
    return counts


# ------------------------------------------------------------------------- RLE objects (dicts)
def encode(mask: np.ndarray) -> dict[str, Any]:
    """{'size': [H, W], 'counts': str}, as pycocotools.mask.encode with counts decoded to str."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"encode: expected an H x W mask, got shape {mask.shape}")
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts_to_string(encode_counts(mask))}


def rle_counts(rle: dict[str, Any]) -> list[int]:
    """The run lengths of an RLE dict whose counts are a compressed string (or bytes) or a list."""
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    if not isinstance(counts, (str, list, tuple)):
        raise ValueError(f"RLE counts must be a string or a list, not {type(counts).__name__}")
    return counts_from_string(counts) if isinstance(counts, str) else [int(c) for c in counts]


def decode(rle: dict[str, Any]) -> np.ndarray:
    """H x W uint8 mask of an RLE dict (compressed string or uncompressed list counts)."""
    height, width = (int(v) for v in rle["size"])
    return decode_counts(rle_counts(rle), height, width)


def area(rle: dict[str, Any]) -> int:
    return int(sum(rle_counts(rle)[1::2]))


def bbox(rle: dict[str, Any]) -> list[float]:
    """[x, y, w, h] of the foreground, as pycocotools' toBbox (all zero when empty)."""
    m = decode(rle)
    ys, xs = np.nonzero(m)
    if len(xs) == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


# --------------------------------------------------------------------------------- polygons
def polygon_counts(xy: Sequence[float], height: int, width: int) -> list[int]:
    """Run lengths of one polygon [x0, y0, x1, y1, ...], as pycocotools' rleFrPoly."""
    scale = 5.0
    k = len(xy) // 2
    if k == 0:  # no point: pycocotools' loops all skip, leaving one background run
        return [height * width]
    trunc = lambda v: int(v)  # C's (int) conversion truncates toward zero  # noqa: E731
    x = [trunc(scale * float(xy[2 * j]) + 0.5) for j in range(k)]
    y = [trunc(scale * float(xy[2 * j + 1]) + 0.5) for j in range(k)]
    x.append(x[0])
    y.append(y[0])
    # Dense boundary points at 5x resolution, edge by edge.
    u: list[int] = []
    v: list[int] = []
    for j in range(k):
        xs, xe, ys, ye = x[j], x[j + 1], y[j], y[j + 1]
        dx, dy = abs(xe - xs), abs(ys - ye)
        flip = (dx >= dy and xs > xe) or (dx < dy and ys > ye)
        if flip:
            xs, xe, ys, ye = xe, xs, ye, ys
        if dx >= dy:
            s = (ye - ys) / dx if dx else 0.0
            for d in range(dx + 1):
                t = dx - d if flip else d
                u.append(t + xs)
                v.append(trunc(ys + s * t + 0.5))
        else:
            s = (xe - xs) / dy
            for d in range(dy + 1):
                t = dy - d if flip else d
                v.append(t + ys)
                u.append(trunc(xs + s * t + 0.5))
    # Where the outline crosses a column's centre: back to pixel coordinates.
    px: list[int] = []
    py: list[int] = []
    for j in range(1, len(u)):
        if u[j] == u[j - 1]:
            continue
        xd = float(u[j] if u[j] < u[j - 1] else u[j] - 1)
        xd = (xd + 0.5) / scale - 0.5
        if math.floor(xd) != xd or xd < 0 or xd > width - 1:
            continue
        yd = float(v[j] if v[j] < v[j - 1] else v[j - 1])
        yd = (yd + 0.5) / scale - 0.5
        yd = 0.0 if yd < 0 else (float(height) if yd > height else yd)
        px.append(int(xd))
        py.append(int(math.ceil(yd)))
    # Each crossing toggles inside/outside, column-major; the run lengths between toggles.
    a = sorted([px[j] * height + py[j] for j in range(len(px))] + [height * width])
    a = [a[0]] + [a[j] - a[j - 1] for j in range(1, len(a))]
    b = [a[0]]
    j = 1
    while j < len(a):
        if a[j] > 0:
            b.append(a[j])
            j += 1
        else:  # two toggles at one place cancel: merge the runs around them
            j += 1
            if j < len(a):
                b[-1] += a[j]
                j += 1
    return b


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def polygons_to_rles(polygons: Sequence[Sequence[float]], height: int, width: int) -> list[dict[str, Any]]:
    """One RLE per entry, read as pycocotools' frPyObjects reads a list: a first entry of exactly 4
    numbers makes every entry a box [x, y, w, h] (each must then have 4), one of more than 4 makes
    every entry a polygon (a later short one traces fewer than 3 points: empty); any other first
    entry is not read there, so it is a ValueError here, not a silently empty mask."""
    if not isinstance(polygons, (list, tuple)) or not all(isinstance(p, (list, tuple)) for p in polygons):
        raise ValueError("a segmentation list must be a list of lists of numbers (polygons or boxes)")
    for k, p in enumerate(polygons):
        if not all(_is_number(v) for v in p):
            raise ValueError(f"segmentation entry {k}: a polygon must be a list of numbers")
    if not polygons:
        return []
    first = len(polygons[0])
    if first == 4:
        for k, box in enumerate(polygons):
            if len(box) != 4:
                raise ValueError(f"segmentation entry {k} has {len(box)} numbers where the first entry's 4 make "
                                 f"every entry a box [x, y, w, h] (as pycocotools reads it)")
        return [box_to_rle(box, height, width) for box in polygons]
    if first < 4:
        raise ValueError(f"segmentation: the first entry has {first} numbers: pycocotools reads 4 as a box "
                         f"[x, y, w, h] and more as a polygon [x0, y0, x1, y1, ...]")
    return [{"size": [height, width], "counts": counts_to_string(polygon_counts(p, height, width))}
            for p in polygons]


def box_to_rle(box: Sequence[float], height: int, width: int) -> dict[str, Any]:
    xs, ys, w, h = (float(v) for v in box)
    xe, ye = xs + w, ys + h
    return {"size": [height, width],
            "counts": counts_to_string(polygon_counts([xs, ys, xs, ye, xe, ye, xe, ys], height, width))}


def segmentation_to_rle(segmentation: Any, height: int, width: int) -> dict[str, Any]:
    """A COCO annotation's segmentation as one RLE, as pycocotools' annToRLE: polygons are united,
    uncompressed RLE (list counts) is compressed, compressed RLE is used as it is."""
    if isinstance(segmentation, list):
        masks = [decode(r) for r in polygons_to_rles(segmentation, height, width)]
        union = np.zeros((height, width), np.uint8)
        for m in masks:
            union |= m
        return encode(union)
    if isinstance(segmentation, dict):
        if "counts" not in segmentation or "size" not in segmentation:
            raise ValueError("a segmentation object must be COCO RLE {\"size\": [h, w], \"counts\": ...}")
        if isinstance(segmentation["counts"], list):
            h, w = segmentation["size"]
            return {"size": [int(h), int(w)], "counts": counts_to_string([int(c) for c in segmentation["counts"]])}
        counts = segmentation["counts"]
        return {"size": list(segmentation["size"]),
                "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}
    raise ValueError(f"unknown segmentation type {type(segmentation).__name__}")


def iou_matrix(dt: Sequence[np.ndarray], gt: Sequence[np.ndarray], iscrowd: Iterable[int] | None = None) -> np.ndarray:
    """pycocotools' iou(dt, gt, iscrowd) on decoded masks: [len(dt), len(gt)] of |D and G| / |D or G|
    (|D and G| / |D| for crowd ground truth), 0 where they do not overlap, -1 where sizes differ."""
    crowd = list(iscrowd) if iscrowd is not None else [0] * len(gt)
    out = np.zeros((len(dt), len(gt)), dtype=np.float64)
    dt_flat = [np.asarray(d, bool) for d in dt]
    gt_flat = [np.asarray(g, bool) for g in gt]
    for i, d in enumerate(dt_flat):
        for j, g in enumerate(gt_flat):
            if d.shape != g.shape:
                out[i, j] = -1
                continue
            inter = int(np.count_nonzero(d & g))
            if inter == 0:
                continue
            union = int(np.count_nonzero(d)) if crowd[j] else int(np.count_nonzero(d | g))
            out[i, j] = inter / union
    return out
