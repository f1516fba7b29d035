"""COCO mask AP ('segm'), computed as pycocotools' COCOeval does (evaluate, accumulate, summarize).

Ground truth: COCO instance annotations {id, image_id, category_id, segmentation, area, iscrowd};
detections: {image_id, category_id, segmentation, score}. For each image and category, detections
are sorted by score (stable) and cut to the largest maxDets; at each IoU threshold 0.50:0.05:0.95 a
detection takes the unmatched ground truth of highest IoU >= the threshold (crowd ground truth can be
matched again; a later equal IoU wins; ignored ground truth only when nothing else is left), and one
matched to ignored ground truth, or unmatched and outside the area range, is ignored. Over all
images, detections sorted by score (stable) give cumulative precision/recall; precision is made
monotone from the right and read at the recall points 0:0.01:1 (the first detection reaching each);
AP is the mean of those values over thresholds (and categories) where defined.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Sequence

import numpy as np

from . import masks

IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
MAX_DETS = [1, 10, 100]
AREA_RANGES = [[0 ** 2, 1e5 ** 2], [0 ** 2, 32 ** 2], [32 ** 2, 96 ** 2], [96 ** 2, 1e5 ** 2]]
STAT_NAMES = ["AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large",
              "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large"]


def evaluate_segm(gt: dict[str, Any], detections: Sequence[dict[str, Any]], cat_ids: Sequence[int] | None = None) -> dict[str, float]:
    """The 12 COCO summary numbers (AP, AP50, ... AR_large) of `detections` against the ground truth
    dataset `gt` (COCO instance json as a dict); -1 where undefined, as COCOeval."""
    images = {img["id"]: img for img in gt["images"]}
    img_ids = sorted(np.unique([img["id"] for img in gt["images"]]).tolist())
    cat_ids = sorted(np.unique(list(cat_ids) if cat_ids is not None else [c["id"] for c in gt["categories"]]).tolist())

    def rle_of(ann: dict[str, Any]) -> np.ndarray:
        img = images[ann["image_id"]]
        return masks.decode(masks.segmentation_to_rle(ann["segmentation"], img["height"], img["width"]))

    gts: dict[tuple, list] = defaultdict(list)
    dts: dict[tuple, list] = defaultdict(list)
    for ann in gt["annotations"]:
        if ann["category_id"] in cat_ids:
            g = dict(ann)
            g["ignore"] = bool(g.get("iscrowd", 0))
            g["mask"] = rle_of(ann)
            gts[g["image_id"], g["category_id"]].append(g)
    for index, det in enumerate(detections):
        if det["image_id"] not in images:
            raise ValueError(f"detection for image {det['image_id']!r}, which the ground truth does not have")
        if det["category_id"] in cat_ids:
            d = dict(det)
            d["id"] = index + 1
            d["iscrowd"] = 0
            d["mask"] = rle_of(det)
            d["area"] = int(np.count_nonzero(d["mask"]))
            dts[d["image_id"], d["category_id"]].append(d)

    max_det = MAX_DETS[-1]
    ious = {}
    for img in img_ids:
        for cat in cat_ids:
            g, d = gts[img, cat], dts[img, cat]
            if not g and not d:
                ious[img, cat] = []
                continue
            order = np.argsort([-x["score"] for x in d], kind="mergesort")
            d = [d[i] for i in order][:max_det]
            ious[img, cat] = (masks.iou_matrix([x["mask"] for x in d], [x["mask"] for x in g],
                                               [int(x.get("iscrowd", 0)) for x in g]) if d and g else [])

    def evaluate_image(img: Any, cat: int, area_range: list[float], max_det: int):
        g, d = gts[img, cat], dts[img, cat]
        if not g and not d:
            return None
        for x in g:
            x["_ignore"] = 1 if (x["ignore"] or x["area"] < area_range[0] or x["area"] > area_range[1]) else 0
        g_order = np.argsort([x["_ignore"] for x in g], kind="mergesort")
        g = [g[i] for i in g_order]
        d_order = np.argsort([-x["score"] for x in d], kind="mergesort")
        d = [d[i] for i in d_order[:max_det]]
        iscrowd = [int(x.get("iscrowd", 0)) for x in g]
        iou = ious[img, cat]
        iou = iou[:, g_order] if len(iou) > 0 else iou
        T, G, D = len(IOU_THRESHOLDS), len(g), len(d)
        gtm = np.zeros((T, G))
        dtm = np.zeros((T, D))
        gt_ignore = np.array([x["_ignore"] for x in g])
        dt_ignore = np.zeros((T, D))
        if len(iou) > 0:
            for t_index, t in enumerate(IOU_THRESHOLDS):
                for d_index, det in enumerate(d):
                    best = min([t, 1 - 1e-10])
                    m = -1
                    for g_index in range(G):
                        if gtm[t_index, g_index] > 0 and not iscrowd[g_index]:
                            continue
                        if m > -1 and gt_ignore[m] == 0 and gt_ignore[g_index] == 1:
                            break
                        if iou[d_index, g_index] < best:
                            continue
                        best = iou[d_index, g_index]
                        m = g_index
                    if m == -1:
                        continue
                    dt_ignore[t_index, d_index] = gt_ignore[m]
                    dtm[t_index, d_index] = g[m]["id"]
                    gtm[t_index, m] = det["id"]
        outside = np.array([x["area"] < area_range[0] or x["area"] > area_range[1] for x in d]).reshape((1, D))
        dt_ignore = np.logical_or(dt_ignore, np.logical_and(dtm == 0, np.repeat(outside, T, 0)))
        return {"dtMatches": dtm, "dtScores": [x["score"] for x in d], "gtIgnore": gt_ignore, "dtIgnore": dt_ignore}

    evals = [evaluate_image(img, cat, area, max_det) for cat in cat_ids for area in AREA_RANGES for img in img_ids]

    T, R, K, A, M = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS), len(cat_ids), len(AREA_RANGES), len(MAX_DETS)
    precision = -np.ones((T, R, K, A, M))
    recall = -np.ones((T, K, A, M))
    n_img, n_area = len(img_ids), len(AREA_RANGES)
    for k in range(K):
        for a in range(A):
            for m_index, max_d in enumerate(MAX_DETS):
                E = [evals[k * n_area * n_img + a * n_img + i] for i in range(n_img)]
                E = [e for e in E if e is not None]
                if not E:
                    continue
                scores = np.concatenate([e["dtScores"][0:max_d] for e in E])
                order = np.argsort(-scores, kind="mergesort")
                dtm = np.concatenate([e["dtMatches"][:, 0:max_d] for e in E], axis=1)[:, order]
                dt_ig = np.concatenate([e["dtIgnore"][:, 0:max_d] for e in E], axis=1)[:, order]
                gt_ig = np.concatenate([e["gtIgnore"] for e in E])
                npig = np.count_nonzero(gt_ig == 0)
                if npig == 0:
                    continue
                tps = np.logical_and(dtm, np.logical_not(dt_ig))
                fps = np.logical_and(np.logical_not(dtm), np.logical_not(dt_ig))
                tp_sum = np.cumsum(tps, axis=1).astype(dtype=float)
                fp_sum = np.cumsum(fps, axis=1).astype(dtype=float)
                for t, (tp, fp) in enumerate(zip(tp_sum, fp_sum)):
                    nd = len(tp)
                    rc = tp / npig
                    pr = (tp / (fp + tp + np.spacing(1))).tolist()
                    q = [0.0] * R
                    recall[t, k, a, m_index] = rc[-1] if nd else 0
                    for i in range(nd - 1, 0, -1):
                        if pr[i] > pr[i - 1]:
                            pr[i - 1] = pr[i]
                    inds = np.searchsorted(rc, RECALL_THRESHOLDS, side="left")
                    for ri, pi in enumerate(inds):
                        if pi >= nd:
                            break
                        q[ri] = pr[pi]
                    precision[t, :, k, a, m_index] = np.array(q)

    def summarize(ap: bool, iou_threshold: float | None = None, area: int = 0, max_d: int = 100) -> float:
        m_index = MAX_DETS.index(max_d)
        if ap:
            s = precision[..., area, m_index]
            if iou_threshold is not None:
                s = s[np.where(iou_threshold == IOU_THRESHOLDS)[0]]
        else:
            s = recall[..., area, m_index]
            if iou_threshold is not None:
                s = s[np.where(iou_threshold == IOU_THRESHOLDS)[0]]
        valid = s[s > -1]
        return -1.0 if len(valid) == 0 else float(np.mean(valid))

    stats = [summarize(True), summarize(True, 0.5), summarize(True, 0.75), summarize(True, area=1),
             summarize(True, area=2), summarize(True, area=3), summarize(False, max_d=1), summarize(False, max_d=10),
             summarize(False), summarize(False, area=1), summarize(False, area=2), summarize(False, area=3)]
    return dict(zip(STAT_NAMES, stats))
