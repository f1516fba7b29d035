"""The metrics of Sa2VA's evaluations, computed as upstream's scorers compute them.

RefCOCO/+/g (cIoU, gIoU) -- per expression, I = |pred and gt|, U = |pred or gt| of the first [SEG]
  mask. cIoU = sum I / (sum U + 1e-10) over the expressions that produced a mask; gIoU = the mean over
  all expressions of I / (U + 1e-5), plus 1 when U == 0, with 0 for an expression without a mask.
  Sums are float32, accumulated per image then over images, as upstream's torch/numpy meters do.
Referring video (J, F) -- per frame J = |P and G| / |P or G| (1 when the union is empty); F = the
  boundary F-measure: boundaries by seg2bmap, each dilated by a disk of radius
  ceil(0.008 * sqrt(H^2 + W^2)) pixels, precision = matched predicted boundary pixels / predicted,
  recall = matched ground-truth boundary pixels / ground truth, F = 2PR / (P + R) (0 when P + R = 0;
  an empty predicted boundary gives P = 1, R = 0, an empty ground-truth one P = 0, R = 1, both empty
  F = 1). Per expression the frame means; the dataset value is the mean over expressions, x 100.
ReVOS also reports A (pixel accuracy per frame) and R (robustness: 1 - predicted pixels outside the
  target / the frame's all-object foreground area, floored at 0), with each expression's values rounded
  to 2 decimals before the referring / reasoning means, a group's JF the mean of its J and F, and
  "overall" the mean of the two groups.
GCG -- mIoU: per image, greedy one-to-one pairs of highest IoU until the best is 0, the mean of the
  paired IoUs (0 without pairs), averaged over the split's images. Recall: greedy pairs by IoU that
  stop at the first best pair with IoU < 0.5 or phrase similarity < 0.5; matches / ground-truth
  phrases. Mask AP: see cocoeval.py.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np


# ------------------------------------------------------------------------------- RefCOCO
class ReferringImageScore:
    """cIoU and gIoU over a split, fed one image (all its expressions) at a time."""

    def __init__(self) -> None:
        self.intersection = np.float32(0)
        self.union = np.float32(0)
        self.giou_sum = np.float32(0)
        self.count = 0

    def add_image(self, predictions: Sequence[np.ndarray | None], targets: Sequence[np.ndarray]) -> None:
        """predictions[i]: the H x W mask of expression i, or None when the answer had no [SEG]."""
        if len(predictions) != len(targets):
            raise ValueError("one prediction (or None) per expression is needed")
        inter_img, union_img, giou_img = np.float32(0), np.float32(0), np.float32(0)
        for pred, target in zip(predictions, targets):
            if pred is None:
                continue
            p, g = np.asarray(pred, bool), np.asarray(target, bool)
            if p.shape != g.shape:
                raise ValueError(f"predicted mask {p.shape} and ground truth {g.shape} differ in size")
            inter = np.float32(np.count_nonzero(p & g))
            union = np.float32(np.count_nonzero(p | g))
            inter_img += inter
            union_img += union
            giou_img += inter / (union + np.float32(1e-5))
            if union == 0:
                giou_img += np.float32(1.0)
        n = len(targets)
        self.intersection += inter_img
        self.union += union_img
        if n:
            self.giou_sum += np.float32(giou_img / np.float32(n)) * np.float32(n)
        self.count += n

    @property
    def ciou(self) -> float:
        return float(self.intersection / (self.union + np.float32(1e-10)))

    @property
    def giou(self) -> float:
        return float(self.giou_sum / self.count) if self.count else 0.0


# ------------------------------------------------------------------------------ video J, F
def frame_j(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """J per frame of [T, H, W] (or one [H, W]) masks."""
    g, p = np.asarray(gt).astype(bool), np.asarray(pred).astype(bool)
    inter = np.sum(p & g, axis=(-2, -1))
    union = np.sum(p | g, axis=(-2, -1))
    with np.errstate(divide="ignore", invalid="ignore"):
        j = inter / union
    j = np.where(np.isclose(union, 0), 1.0, j)
    return j


def seg2bmap(seg: np.ndarray) -> np.ndarray:
    """Boundary pixels: those that differ from their right, lower or lower-right neighbour (outside
    counts as background); the last row compares only to the right, the last column only below."""
    seg = np.asarray(seg).astype(bool)
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = (seg ^ e) | (seg ^ s) | (seg ^ se)
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = False
    return b


def disk(radius: float) -> np.ndarray:
    """skimage.morphology.disk: the (2r+1)^2 grid points with x^2 + y^2 <= r^2."""
    r = np.arange(-radius, radius + 1)
    x, y = np.meshgrid(r, r)
    return (x ** 2 + y ** 2) <= radius ** 2


def dilate(mask: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Binary dilation by a symmetric kernel centred on its middle; nothing enters from outside.

    Only the rectangle the foreground can reach is computed, and a kernel row that is one run of
    columns (every row of a disk) is one sliding-window "any" along x, read off cumulative sums: the
    cost grows with the kernel's height, not its area (a 1080p frame's disk has ~1000 points).
    """
    mask = np.asarray(mask, bool)
    h, w = mask.shape
    r = kernel.shape[0] // 2
    out = np.zeros_like(mask)
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return out
    y0, y1 = max(int(ys.min()) - r, 0), min(int(ys.max()) + r + 1, h)
    x0, x1 = max(int(xs.min()) - r, 0), min(int(xs.max()) + r + 1, w)
    hh, ww = y1 - y0, x1 - x0
    padded = np.zeros((hh + 2 * r, ww + 2 * r), bool)
    padded[r:r + hh, r:r + ww] = mask[y0:y1, x0:x1]
    sums = np.zeros((hh + 2 * r, ww + 2 * r + 1), np.int32)
    np.cumsum(padded, axis=1, out=sums[:, 1:])
    crop = out[y0:y1, x0:x1]
    for dy in range(kernel.shape[0]):
        cols = np.nonzero(kernel[dy])[0]
        if len(cols) == 0:
            continue
        a, b = int(cols[0]), int(cols[-1])
        if b - a + 1 == len(cols):  # columns a..b: any of padded[y, x + a .. x + b]
            crop |= sums[dy:dy + hh, b + 1:b + 1 + ww] > sums[dy:dy + hh, a:a + ww]
        else:
            for dx in cols:
                crop |= padded[dy:dy + hh, dx:dx + ww]
    return out


def boundary_f(pred: np.ndarray, gt: np.ndarray, bound_th: float = 0.008) -> float:
    """The boundary F-measure of one frame (DAVIS' f_measure)."""
    pred = np.asarray(pred).astype(bool)
    gt = np.asarray(gt).astype(bool)
    bound_pix = bound_th if bound_th >= 1 else math.ceil(bound_th * math.hypot(*pred.shape))
    fg_boundary = seg2bmap(pred)
    gt_boundary = seg2bmap(gt)
    kernel = disk(bound_pix)
    fg_dil = dilate(fg_boundary, kernel)
    gt_dil = dilate(gt_boundary, kernel)
    n_fg = int(np.count_nonzero(fg_boundary))
    n_gt = int(np.count_nonzero(gt_boundary))
    if n_fg == 0 and n_gt > 0:
        precision, recall = 1.0, 0.0
    elif n_fg > 0 and n_gt == 0:
        precision, recall = 0.0, 1.0
    elif n_fg == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    else:
        precision = np.count_nonzero(fg_boundary & gt_dil) / n_fg
        recall = np.count_nonzero(gt_boundary & fg_dil) / n_gt
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def frame_f(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    gt, pred = np.asarray(gt), np.asarray(pred)
    if gt.ndim == 2:
        return np.array(boundary_f(pred, gt))
    return np.array([boundary_f(p, g) for p, g in zip(pred, gt)])


def frame_accuracy(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """ReVOS' A: per frame, the share of pixels whose uint8 values are equal (as upstream, a ground
    truth of 2 where two objects overlap never equals a prediction)."""
    gt = np.asarray(gt, np.uint8)
    pred = np.asarray(pred, np.uint8)
    return np.array([np.mean(g == p) for g, p in zip(gt, pred)])


def frame_robustness(gt: np.ndarray, pred: np.ndarray, foreground: np.ndarray) -> np.ndarray:
    """ReVOS' R: per frame max(1 - neg / (pos + 1e-6), 0) with neg = sum((1 - gt) * pred) in uint8
    (so a ground truth of 2 wraps to 255, as upstream) and pos = the frame's foreground area."""
    gt = np.asarray(gt, np.uint8)
    pred = np.asarray(pred, np.uint8)
    foreground = np.asarray(foreground, np.uint8)
    out = []
    for g, p, f in zip(gt, pred, foreground):
        neg = ((np.uint8(1) - g) * p).sum()
        pos = f.sum()
        out.append(max(1 - neg / (pos + 1e-6), 0.0))
    return np.array(out)


def summarize_jf(per_expression: Sequence[tuple[float, float]]) -> dict[str, float]:
    """MeViS / DAVIS / Ref-YouTube-VOS: {'J', 'F', 'J&F'} x 100 rounded to 2 decimals."""
    if not per_expression:
        return {"J": 0.0, "F": 0.0, "J&F": 0.0}
    j = float(np.mean([v[0] for v in per_expression]))
    f = float(np.mean([v[1] for v in per_expression]))
    return {"J": round(100 * j, 2), "F": round(100 * f, 2), "J&F": round(100 * (j + f) / 2, 2)}


def summarize_revos(per_expression: Sequence[tuple[float, float, float, float, int]]) -> dict[str, dict[str, float | None]]:
    """ReVOS: (J, F, A, R, type_id) per expression -> {'referring', 'reason', 'overall'} x
    {'J', 'F', 'A', 'R', 'JF'} (type 0 referring, 1 reasoning, 2 left out). A group's JF is the mean
    of its J and F, as upstream's scorer has it; a group without expressions is None (upstream's
    NaN), and so is overall then."""
    # Upstream rounds numpy floats, whose round() scales and rounds (2.675 -> 2.68) where Python's
    # rounds the exact binary value (2.67).
    def r2(v: float) -> float:
        return float(round(np.float64(100 * v), 2))

    rows = [{"J": r2(j), "F": r2(f), "A": r2(a), "R": r2(r), "type_id": t} for j, f, a, r, t in per_expression]
    groups: dict[str, dict[str, float | None]] = {}
    for name, type_id in (("referring", 0), ("reason", 1)):
        chosen = [row for row in rows if row["type_id"] == type_id]
        stats: dict[str, float | None] = {}
        for key in ("J", "F", "A", "R"):
            stats[key] = float(np.mean([row[key] for row in chosen])) if chosen else None
        stats["JF"] = (stats["J"] + stats["F"]) / 2 if chosen else None
        groups[name] = stats
    both = groups["referring"]["J"] is not None and groups["reason"]["J"] is not None
    groups["overall"] = {k: (groups["referring"][k] + groups["reason"][k]) / 2 if both else None
                         for k in ("J", "F", "A", "R", "JF")}
    return groups


# ------------------------------------------------------------------------------------- GCG
def _iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.count_nonzero(np.logical_and(a, b))
    union = np.count_nonzero(np.logical_or(a, b))
    return inter / union if union else float("nan")


def greedy_miou(pred_masks: Sequence[np.ndarray], gt_masks: Sequence[np.ndarray]) -> float:
    """One image's mIoU: pair the highest-IoU prediction and ground truth, remove both, repeat while
    the best IoU is above 0 (a NaN from two empty masks stops it, as upstream's np.max)."""
    m = np.zeros((len(pred_masks), len(gt_masks)))
    for i, p in enumerate(pred_masks):
        for j, g in enumerate(gt_masks):
            m[i, j] = _iou(p, g)
    paired = []
    while m.size > 0 and np.max(m) > 0:
        i, j = np.unravel_index(np.argmax(m, axis=None), m.shape)
        paired.append(m[i, j])
        m = np.delete(np.delete(m, i, axis=0), j, axis=1)
    return float(np.mean(paired)) if paired else 0.0


def greedy_recall_matches(gt_masks: Sequence[np.ndarray], gt_labels: Sequence[str], pred_masks: Sequence[np.ndarray],
                          pred_labels: Sequence[str], text_similarity: Callable[[str, str], float],
                          iou_threshold: float = 0.5, text_threshold: float = 0.5) -> int:
    """Matches of one image for GCG recall, as upstream's find_best_matches: repeatedly take the pair
    of highest IoU (ground truth x prediction); stop at the first whose IoU or phrase similarity is
    below its threshold; otherwise count it and clear its row and column. Raises IndexError where
    upstream does (a best prediction without a phrase) -- callers count such an image as 0 matches."""
    ious = np.zeros((len(gt_masks), len(pred_masks)))
    for i, g in enumerate(gt_masks):
        for j, p in enumerate(pred_masks):
            ious[i, j] = _iou(g, p)
    sims = np.zeros((len(gt_labels), len(pred_labels)))
    for i, g in enumerate(gt_labels):
        for j, p in enumerate(pred_labels):
            sims[i, j] = text_similarity(g, p)
    matches = 0
    while ious.size > 0:
        i, j = np.unravel_index(np.argmax(ious), ious.shape)
        if ious[i, j] < iou_threshold or sims[i, j] < text_threshold:
            break
        matches += 1
        ious[i, :] = 0
        ious[:, j] = 0
        sims[i, :] = 0
        sims[:, j] = 0
    return matches


def bag_of_words_similarity(a: str, b: str) -> float:
    """Cosine of lower-cased word counts: the stand-in for upstream's BERT phrase similarity when no
    BERT model is given (not upstream's number; reported as such)."""
    import collections
    import re
    wa = collections.Counter(re.findall(r"\w+", a.lower()))
    wb = collections.Counter(re.findall(r"\w+", b.lower()))
    dot = sum(wa[w] * wb[w] for w in wa)
    na = math.sqrt(sum(v * v for v in wa.values()))
    nb = math.sqrt(sum(v * v for v in wb.values()))
    return dot / (na * nb) if na and nb else 0.0
