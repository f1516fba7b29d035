"""sa2va.eval: every metric on small hand-computed cases, and each benchmark command end to end on
tiny datasets written here in the layouts of Sa2VA's data preparation, with the tiny model."""
import json
import math
import os
import pickle
import re

import numpy as np
import pytest
from PIL import Image

import sa2va
from sa2va.eval import __main__ as eval_main
from sa2va.eval import cocoeval, masks, metrics, runner


def box_mask(h, w, y0, y1, x0, x1):
    m = np.zeros((h, w), np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


# ------------------------------------------------------------------------------ COCO masks
def test_rle_of_a_small_mask_by_hand():
    m = np.array([[0, 1], [1, 1], [0, 0]], np.uint8)
    # Column-major 0,1,0 | 1,1,0 -> runs 1,1,1,2,1; the 4th is written as 2 - 1, the 5th as 1 - 1.
    assert masks.encode_counts(m) == [1, 1, 1, 2, 1]
    assert masks.encode(m) == {"size": [3, 2], "counts": "11110"}
    assert np.array_equal(masks.decode({"size": [3, 2], "counts": "11110"}), m)
    # A mask that starts inside begins with an empty background run.
    assert masks.encode_counts(np.ones((2, 2), np.uint8)) == [0, 4]


def test_rle_string_negative_differences_and_long_values_by_hand():
    # 2 - 5 = -3: low 5 bits 0b11101 (29) carry the sign, so one character, chr(29 + 48) = 'M'.
    assert masks.counts_to_string([0, 5, 10, 2]) == "05:M"
    # 100 = 0b11_00100: group 4 with the continuation bit (36 -> 'T'), then 3 -> '3'.
    assert masks.counts_to_string([100]) == "T3"
    for counts in ([0, 5, 10, 2], [100], [3, 70000, 1, 1, 69999, 4]):
        assert masks.counts_from_string(masks.counts_to_string(counts)) == counts
    with pytest.raises(ValueError):
        masks.counts_from_string("T")  # ends inside a value
    with pytest.raises(ValueError):
        masks.decode({"size": [2, 2], "counts": [1, 2]})  # covers 3 of 4 pixels


def test_overlapping_values_flip_runs_as_upstreams_round_trip():
    # A column 0,1,2,2,1,0 (two polygons overlap) starts a run at every change and decodes by parity.
    column = np.array([[0], [1], [2], [2], [1], [0]], np.uint8)
    assert masks.decode_counts(masks.encode_counts(column), 6, 1)[:, 0].tolist() == [0, 1, 0, 0, 1, 0]


def test_polygons_rasterise_as_pycocotools():
    # The box [0, 2] x [0, 2] covers the 2 x 2 pixels at the origin.
    assert masks.polygon_counts([0, 0, 2, 0, 2, 2, 0, 2], 4, 4) == [0, 2, 2, 2, 10]
    # Values pycocotools' rleFrPoly gives for a shifted box and a triangle.
    assert masks.polygon_counts([0.5, 0.5, 2.5, 0.5, 2.5, 2.5, 0.5, 2.5], 4, 4) == [5, 2, 2, 2, 5]
    assert masks.polygon_counts([1, 0, 3, 2, 1, 4], 5, 5) == [5, 3, 3, 1, 13]
    # A first entry of exactly four numbers makes the list boxes [x, y, w, h].
    assert masks.decode(masks.polygons_to_rles([[1, 1, 2, 1]], 4, 4)[0]).sum() == 2
    # Polygons of one annotation are united for COCO scoring.
    both = masks.segmentation_to_rle([[0, 0, 2, 0, 2, 2, 0, 2], [1, 1, 3, 1, 3, 3, 1, 3]], 4, 4)
    assert masks.area(both) == 7


def test_iou_matrix_crowd_and_size_mismatch():
    d = box_mask(4, 4, 0, 2, 0, 2)
    g = box_mask(4, 4, 0, 2, 0, 4)
    assert masks.iou_matrix([d], [g]).tolist() == [[0.5]]
    assert masks.iou_matrix([d], [g], [1]).tolist() == [[1.0]]  # crowd: |D and G| / |D|
    assert masks.iou_matrix([d], [np.zeros((3, 3))]).tolist() == [[-1.0]]


# --------------------------------------------------------------------------------- RefCOCO
def test_ciou_and_giou_by_hand():
    score = metrics.ReferringImageScore()
    gt = box_mask(4, 4, 0, 2, 0, 2)              # 4 pixels
    pred = box_mask(4, 4, 1, 3, 1, 3)            # 4 pixels, 1 shared: I = 1, U = 7
    score.add_image([pred, None], [gt, gt])      # the second expression produced no mask
    empty = np.zeros((4, 4), np.uint8)
    score.add_image([empty], [empty])            # empty union: 0 / 1e-5 + 1
    score.add_image([gt], [gt])                  # perfect: I = U = 4
    assert score.ciou == pytest.approx((1 + 4) / (7 + 4), rel=1e-6)
    assert score.giou == pytest.approx((1 / 7 + 0 + 1 + 4 / (4 + 1e-5)) / 4, rel=1e-6)


# ------------------------------------------------------------------------------------ J, F
def test_j_by_hand():
    gt = np.stack([box_mask(4, 4, 0, 2, 0, 2), np.zeros((4, 4)), box_mask(4, 4, 0, 4, 0, 4), box_mask(4, 4, 0, 1, 0, 1)])
    pred = np.stack([box_mask(4, 4, 0, 2, 0, 2), np.zeros((4, 4)), box_mask(4, 4, 0, 4, 0, 2), box_mask(4, 4, 3, 4, 3, 4)])
    assert metrics.frame_j(gt, pred).tolist() == [1.0, 1.0, 0.5, 0.0]


def test_seg2bmap_by_hand():
    seg = box_mask(4, 4, 1, 3, 1, 3)
    boundary = metrics.seg2bmap(seg)
    # Pixels that differ from the right, lower or lower-right neighbour (outside pixels included).
    expected = {(0, 0), (0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1), (2, 2)}
    assert {tuple(p) for p in np.argwhere(boundary)} == expected


def test_disk_and_tolerance():
    assert metrics.disk(1).astype(int).tolist() == [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    # 480 x 854: ceil(0.008 * 979.6) = 8 pixels.
    assert math.ceil(0.008 * math.hypot(480, 854)) == 8


def test_boundary_f_by_hand():
    gt = box_mask(20, 20, 5, 15, 5, 15)
    assert metrics.boundary_f(gt, gt) == 1.0
    empty = np.zeros_like(gt)
    assert metrics.boundary_f(empty, empty) == 1.0
    assert metrics.boundary_f(empty, gt) == 0.0      # P = 1, R = 0
    assert metrics.boundary_f(gt, empty) == 0.0      # P = 0, R = 1
    # Tolerance ceil(0.008 * 28.3) = 1 pixel: a one-pixel shift still matches every boundary pixel...
    assert metrics.boundary_f(box_mask(20, 20, 6, 16, 5, 15), gt) == 1.0
    # ...while a far square matches none.
    assert metrics.boundary_f(box_mask(20, 20, 0, 3, 0, 3), gt) == 0.0
    # Shifted by 3 rows: the two vertical sides' pixels within 1 pixel of the other boundary match.
    shifted = box_mask(20, 20, 8, 18, 5, 15)
    pb, gb = metrics.seg2bmap(shifted), metrics.seg2bmap(gt)
    k = metrics.disk(1)
    p = np.count_nonzero(pb & metrics.dilate(gb, k)) / np.count_nonzero(pb)
    r = np.count_nonzero(gb & metrics.dilate(pb, k)) / np.count_nonzero(gb)
    assert 0 < p < 1 and 0 < r < 1
    assert metrics.boundary_f(shifted, gt) == pytest.approx(2 * p * r / (p + r))


def test_dilate_stays_inside_the_frame():
    m = np.zeros((3, 3), bool)
    m[0, 0] = True
    assert metrics.dilate(m, metrics.disk(1)).astype(int).tolist() == [[1, 1, 0], [1, 0, 0], [0, 0, 0]]


def dilate_point_by_point(mask, kernel):
    """The definition (cv2.dilate with a zero border): the OR of the mask shifted by every kernel point."""
    h, w = mask.shape
    r = kernel.shape[0] // 2
    padded = np.zeros((h + 2 * r, w + 2 * r), bool)
    padded[r:r + h, r:r + w] = mask
    out = np.zeros((h, w), bool)
    for dy, dx in zip(*np.nonzero(kernel)):
        out |= padded[dy:dy + h, dx:dx + w]
    return out


def test_dilate_equals_its_definition():
    rng = np.random.RandomState(3)
    ring = metrics.disk(3)
    ring[2:5, 2:5] &= ~metrics.disk(1)  # rows that are not one run of columns
    for h, w, density, kernel in ((40, 60, 0.01, metrics.disk(1)), (40, 60, 0.002, metrics.disk(8)),
                                  (37, 23, 0.05, metrics.disk(5)), (90, 160, 0.001, metrics.disk(18)),
                                  (12, 70, 0.02, metrics.disk(30)), (30, 30, 0.02, ring), (1, 1, 1.0, metrics.disk(2))):
        mask = rng.rand(h, w) < density
        mask[0, -1] = mask[-1, 0] = True  # corners: the kernel reaches past the frame
        assert np.array_equal(metrics.dilate(mask, kernel), dilate_point_by_point(mask, kernel)), (h, w, kernel.shape)
    assert not metrics.dilate(np.zeros((5, 5), bool), metrics.disk(2)).any()


def test_summaries_by_hand():
    assert metrics.summarize_jf([(1.0, 0.5), (0.5, 0.5)]) == {"J": 75.0, "F": 50.0, "J&F": 62.5}
    # ReVOS rounds each expression to 2 decimals before the group means; overall = mean of groups.
    revos = metrics.summarize_revos([(0.12345, 0.5, 1.0, 1.0, 0), (0.5, 0.5, 0.5, 0.0, 1), (0.9, 0.9, 0.9, 0.9, 2)])
    # Rounded as numpy rounds (upstream's values are numpy floats): 12.345000000000001 -> 12.34 (the
    # scaled 1234.5 to even), 2.675 -> 2.68, where Python's round gives 12.35 and 2.67.
    assert revos["referring"]["J"] == 12.34 and revos["reason"]["R"] == 0.0
    assert revos["overall"]["J"] == pytest.approx((12.34 + 50.0) / 2)
    assert revos["overall"]["JF"] == pytest.approx(((12.34 + 50) / 2 + 50) / 2)
    assert metrics.summarize_revos([(0.02675, 0.5, 1.0, 1.0, 0)])["referring"]["J"] == 2.68


def test_revos_accuracy_and_robustness_by_hand():
    gt = box_mask(4, 4, 0, 2, 0, 2)[None]
    pred = box_mask(4, 4, 0, 2, 0, 4)[None]                 # 4 pixels outside the target
    fg = box_mask(4, 4, 0, 4, 0, 2)[None]                   # foreground area 8
    assert metrics.frame_accuracy(gt, pred).tolist() == [12 / 16]
    assert metrics.frame_robustness(gt, pred, fg)[0] == pytest.approx(1 - 4 / 8)
    assert metrics.frame_robustness(gt, box_mask(4, 4, 0, 4, 0, 4)[None], box_mask(4, 4, 0, 1, 0, 1)[None])[0] == 0.0


# ------------------------------------------------------------------------------------- GCG
def test_greedy_miou_by_hand():
    g1, g2 = box_mask(4, 8, 0, 4, 0, 4), box_mask(4, 8, 0, 4, 4, 8)
    p1 = box_mask(4, 8, 0, 4, 0, 2)                 # IoU with g1 = 0.5
    p2 = box_mask(4, 8, 0, 4, 4, 8)                 # IoU with g2 = 1
    p3 = box_mask(4, 8, 0, 1, 0, 1)                 # IoU with g1 = 1/16, left unpaired
    assert metrics.greedy_miou([p1, p2, p3], [g1, g2]) == pytest.approx(0.75)
    assert metrics.greedy_miou([], [g1]) == 0.0
    assert metrics.greedy_miou([box_mask(4, 8, 0, 1, 7, 8)], [g1]) == 0.0  # disjoint: no pair


def test_greedy_recall_stops_at_the_first_failing_pair():
    g1, g2 = box_mask(4, 8, 0, 4, 0, 4), box_mask(4, 8, 0, 4, 4, 8)
    same = lambda a, b: 1.0 if a == b else 0.0  # noqa: E731
    # Best pair (g2, p2) passes; next (g1, p1) at IoU 0.5 passes: 2 matches.
    assert metrics.greedy_recall_matches([g1, g2], ["a", "b"], [box_mask(4, 8, 0, 4, 0, 2), g2], ["a", "b"], same) == 2
    # Ties go to the first pair: (g1, p1) matches, then (g2, p2)'s phrases differ.
    assert metrics.greedy_recall_matches([g1, g2], ["a", "b"], [g1, g2], ["a", "x"], same) == 1
    # The best pair's phrases differ: matching stops there although (g1, p1) at IoU 0.75 would pass.
    assert metrics.greedy_recall_matches([g1, g2], ["a", "b"], [box_mask(4, 8, 0, 4, 0, 3), g2], ["a", "x"], same) == 0
    assert metrics.bag_of_words_similarity("a red car", "the red car") == pytest.approx(2 / 3)


def coco_gt(masks_by_image):
    images, annotations = [], []
    for image_id, gts in masks_by_image.items():
        h, w = gts[0].shape
        images.append({"id": image_id, "height": h, "width": w})
        for g in gts:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1,
                                "segmentation": masks.encode(g), "area": int(g.sum()), "iscrowd": 0})
    return {"images": images, "annotations": annotations, "categories": [{"id": 1}]}


def det(image_id, m, score=1.0):
    return {"image_id": image_id, "category_id": 1, "segmentation": masks.encode(m), "score": score}


def test_mask_ap_perfect_and_missed():
    g1, g2 = box_mask(10, 10, 0, 4, 0, 4), box_mask(10, 10, 5, 10, 5, 10)
    gt = coco_gt({"a": [g1, g2]})
    assert cocoeval.evaluate_segm(gt, [det("a", g1), det("a", g2)])["AP"] == pytest.approx(1.0)
    # One hit then one miss, GT2 never found: precision 1 up to recall 0.5 (51 of 101 points).
    stats = cocoeval.evaluate_segm(gt, [det("a", g1, 0.9), det("a", box_mask(10, 10, 0, 2, 8, 10), 0.8)])
    assert stats["AP"] == pytest.approx(51 / 101) and stats["AP50"] == pytest.approx(51 / 101)
    assert stats["AR100"] == pytest.approx(0.5)


def test_mask_ap_thresholds_and_score_order():
    g = box_mask(10, 10, 0, 8, 0, 1)                        # 8 pixels
    partial = box_mask(10, 10, 0, 5, 0, 1)                  # IoU 5/8: a match at 0.50, 0.55, 0.60 only
    stats = cocoeval.evaluate_segm(coco_gt({"a": [g]}), [det("a", partial)])
    assert stats["AP50"] == pytest.approx(1.0) and stats["AP75"] == pytest.approx(0.0)
    assert stats["AP"] == pytest.approx(0.3)
    # A false detection ranked first: precision 0.5 at every recall point.
    stats = cocoeval.evaluate_segm(coco_gt({"a": [g]}), [det("a", box_mask(10, 10, 0, 1, 5, 6), 0.9), det("a", g, 0.5)])
    assert stats["AP"] == pytest.approx(0.5)
    # Equal scores keep the given order (stable sort), as the GCG predictions all score 1.0.
    stats = cocoeval.evaluate_segm(coco_gt({"a": [g]}), [det("a", g), det("a", box_mask(10, 10, 0, 1, 5, 6))])
    assert stats["AP"] == pytest.approx(1.0)
    # Small objects (area < 32^2) only: the medium and large ranges are undefined (-1).
    assert stats["AP_medium"] == -1.0 and stats["AP_small"] == pytest.approx(1.0)


# ------------------------------------------------------------------- end to end, tiny datasets
ANSWER = "It is [SEG]."


def random_image(path, w, h, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.random.RandomState(seed).rand(h, w, 3) * 255).astype(np.uint8)).save(path, quality=95)


def run_eval(capsys, *argv):
    assert eval_main.main([str(a) for a in argv]) == 0
    return json.loads(capsys.readouterr().out)


def model_args(tiny_dir):
    return ["--model", tiny_dir, "--precision", "f32", "--forced-answer", ANSWER, "--quiet"]


@pytest.fixture(scope="module")
def refcoco_data(tmp_path_factory):
    data = tmp_path_factory.mktemp("refcoco-data")
    root = data / "ref_seg" / "refcoco"
    root.mkdir(parents=True)
    images = [{"id": 11, "file_name": "COCO_train2014_000000000011.jpg", "height": 24, "width": 32},
              {"id": 12, "file_name": "COCO_train2014_000000000012.jpg", "height": 20, "width": 30}]
    for i, img in enumerate(images):
        random_image(data / "glamm_data" / "images" / "coco2014" / "train2014" / img["file_name"],
                     img["width"], img["height"], i)
    square = box_mask(24, 32, 2, 20, 4, 26)
    annotations = [
        # Two overlapping polygons: summed as upstream (the overlap flips in the RLE round trip).
        {"id": 101, "image_id": 11, "category_id": 1, "iscrowd": 0,
         "segmentation": [[2, 2, 20, 2, 20, 16, 2, 16], [10, 8, 28, 8, 28, 22, 10, 22]]},
        {"id": 102, "image_id": 11, "category_id": 1, "iscrowd": 0, "segmentation": masks.encode(square)},
        {"id": 103, "image_id": 12, "category_id": 1, "iscrowd": 0, "segmentation": [[0, 0, 30, 0, 30, 10, 0, 10]]},
    ]
    (root / "instances.json").write_text(json.dumps({"images": images, "annotations": annotations,
                                                     "categories": [{"id": 1, "name": "thing"}]}))
    refs = [
        {"ref_id": 1, "ann_id": 101, "image_id": 11, "category_id": 1, "split": "val", "file_name": "x_1.jpg",
         "sentences": [{"sent": "the left thing", "raw": "The left thing", "sent_id": 1},
                       {"sent": "left object", "raw": "Left object", "sent_id": 2}]},
        {"ref_id": 2, "ann_id": 102, "image_id": 11, "category_id": 1, "split": "testA", "file_name": "x_2.jpg",
         "sentences": [{"sent": "a square", "raw": "a square", "sent_id": 3}]},
        {"ref_id": 3, "ann_id": 103, "image_id": 12, "category_id": 1, "split": "val", "file_name": "x_3.jpg",
         "sentences": [{"sent": "the top band", "raw": "the top band", "sent_id": 4}]},
    ]
    with open(root / "refs(unc).p", "wb") as f:
        pickle.dump(refs, f, protocol=2)
    return data


def test_refcoco_end_to_end_shards_resume_and_rescore(refcoco_data, tiny_dir, tiny_model, tmp_path, capsys):
    out = tmp_path / "out"
    common = ["refcoco", "--data", refcoco_data, "--dataset", "refcoco", "--split", "val", "--out", out]
    run_eval(capsys, *common, "--shard", "0/2", *model_args(tiny_dir))
    partial = run_eval(capsys, *common, "--shard", "1/2", *model_args(tiny_dir))
    assert partial["samples"] == 3 and partial["of"] == 3

    # The kept predictions are the model's answers and first masks for upstream's prompt.
    lines = [json.loads(line) for path in sorted(out.glob("predictions.*.jsonl")) for line in path.read_text().splitlines()]
    assert sorted(r["key"] for r in lines) == ["11/1/0", "11/1/1", "12/3/0"]
    first = next(r for r in lines if r["key"] == "11/1/0")
    assert first["prompt"] == "<image>\n Please segment the left thing in this image."
    direct = tiny_model.predict_forward(image=refcoco_data / "glamm_data/images/coco2014/train2014/COCO_train2014_000000000011.jpg",
                                        text=first["prompt"], answer=ANSWER)
    assert first["prediction"] == direct["prediction"]
    assert np.array_equal(masks.decode(first["mask"]), direct["prediction_masks"][0][0])

    # cIoU / gIoU against ground truth built here: polygons summed then run through the RLE round trip.
    summed = sum(masks.decode(r) for r in masks.polygons_to_rles([[2, 2, 20, 2, 20, 16, 2, 16], [10, 8, 28, 8, 28, 22, 10, 22]], 24, 32))
    assert summed.max() == 2
    gt_11 = masks.decode_counts(masks.encode_counts(summed), 24, 32)
    gt_12 = masks.decode(masks.polygons_to_rles([[0, 0, 30, 0, 30, 10, 0, 10]], 20, 30)[0])
    by_key = {r["key"]: masks.decode(r["mask"]).astype(bool) for r in lines}
    pairs = [(by_key["11/1/0"], gt_11), (by_key["11/1/1"], gt_11), (by_key["12/3/0"], gt_12)]
    inter = [np.count_nonzero(p & g.astype(bool)) for p, g in pairs]
    union = [np.count_nonzero(p | g.astype(bool)) for p, g in pairs]
    assert partial["cIoU"] == pytest.approx(sum(inter) / sum(union), rel=1e-6)
    assert partial["gIoU"] == pytest.approx(np.mean([i / (u + 1e-5) for i, u in zip(inter, union)]), rel=1e-5)

    # Resume: a torn last line (killed mid-write) is dropped and only that sample runs again.
    shard0 = out / "predictions.0-of-2.jsonl"
    kept = shard0.read_text().splitlines()
    shard0.write_text(kept[0] + "\n" + kept[1][: len(kept[1]) // 2])
    again = run_eval(capsys, *common, "--shard", "0/2", *model_args(tiny_dir))
    assert shard0.read_text().splitlines()[0] == kept[0] and len(shard0.read_text().splitlines()) == 2
    # Re-scored without the model, every shard together: the same numbers.
    rescored = run_eval(capsys, *common, "--score-only")
    assert rescored["cIoU"] == again["cIoU"] == partial["cIoU"]
    assert json.loads((out / "metrics.json").read_text())["gIoU"] == rescored["gIoU"]
    # testA holds the other ref.
    test_a = run_eval(capsys, "refcoco", "--data", refcoco_data, "--dataset", "refcoco", "--split", "testA",
                      "--out", tmp_path / "a", *model_args(tiny_dir))
    assert test_a["samples"] == 1


def write_video(folder, frames, w, h, seed):
    for k, name in enumerate(frames):
        random_image(folder / f"{name}.jpg", w, h, seed + k)


def rle_list(mask_frames):
    return [masks.encode(m) if m.any() else None for m in mask_frames]


def check_video_scores(out, video_gt, result, keys, with_revos=None):
    """Recomputes J and F (and ReVOS' A, R) from the kept predictions and the ground truth here."""
    kept = {}
    for path in out.glob("predictions.*.jsonl"):
        for line in path.read_text().splitlines():
            r = json.loads(line)
            kept[r["key"]] = np.stack([masks.decode(m) for m in r["prediction_masks"]])
    rows = []
    for key in keys:
        gt, pred = video_gt[key], kept[key]
        rows.append((metrics.frame_j(gt, pred).mean(), metrics.frame_f(gt, pred).mean()))
    if with_revos is None:
        assert result["J"] == round(100 * np.mean([r[0] for r in rows]), 2)
        assert result["F"] == round(100 * np.mean([r[1] for r in rows]), 2)
    return kept, rows


def test_mevis_end_to_end_results_json_and_submission(tiny_dir, tiny_model, tmp_path, capsys):
    data = tmp_path / "data"
    base = data / "video_datas" / "mevis" / "valid_u"
    frames = ["00000", "00001"]
    write_video(base / "JPEGImages" / "vid_a", frames, 32, 24, 5)
    obj1 = np.stack([box_mask(24, 32, 0, 12, 0, 16), box_mask(24, 32, 2, 14, 2, 18)])
    obj2 = np.stack([box_mask(24, 32, 12, 24, 16, 32), np.zeros((24, 32), np.uint8)])
    meta = {"videos": {"vid_a": {"frames": frames, "expressions": {
        "0": {"exp": "the left cat", "obj_id": [0], "anno_id": [7]},
        "1": {"exp": "which animals move?", "obj_id": [0, 1], "anno_id": [7, 8]}}}}}
    (base / "meta_expressions.json").write_text(json.dumps(meta))
    (base / "mask_dict.json").write_text(json.dumps({"7": rle_list(obj1), "8": rle_list(obj2)}))

    out = tmp_path / "out"
    result = run_eval(capsys, "refvos", "--data", data, "--dataset", "mevis", "--out", out, "--submit", *model_args(tiny_dir))
    assert result["samples"] == 2
    check_video_scores(out, {"vid_a/0": obj1, "vid_a/1": obj1 + obj2}, result, ["vid_a/0", "vid_a/1"])
    assert result["J&F"] == pytest.approx((result["J"] + result["F"]) / 2, abs=0.01)

    results = json.loads((out / "results.json").read_text())
    item = results["vid_a"]["1"]
    assert item["exp"] == "which animals move?"  # a question is passed as it is, as upstream
    assert results["vid_a"]["0"]["exp"] == "<image>\nPlease segment the left cat."
    assert item["frames"] == frames and len(item["prediction_masks"]) == 2
    direct = tiny_model.predict_forward(video=[base / "JPEGImages/vid_a" / f"{f}.jpg" for f in frames],
                                        text="<image>\nPlease segment the left cat.", answer=ANSWER)
    assert np.array_equal(np.stack([masks.decode(m) for m in results["vid_a"]["0"]["prediction_masks"]]),
                          direct["prediction_masks"][0])
    png = np.array(Image.open(out / "Annotations" / "vid_a" / "0" / "00001.png"))
    assert set(np.unique(png)) <= {0, 255}
    assert np.array_equal(png == 255, direct["prediction_masks"][0][1])


def test_revos_davis_and_refytvos_layouts(tiny_dir, tmp_path, capsys):
    data = tmp_path / "data" / "video_datas"
    frames = ["00000", "00001"]
    # ReVOS: frames directly under revos/<video>/, sizes and expression types in the meta file.
    write_video(data / "revos" / "v1", frames, 30, 20, 9)
    gt = np.stack([box_mask(20, 30, 0, 10, 0, 10), box_mask(20, 30, 5, 15, 5, 15)])
    meta = {"videos": {"v1": {"height": 20, "width": 30, "frames": frames, "expressions": {
        "0": {"exp": "the box", "anno_id": [3], "obj_id": [0], "type_id": 0},
        "1": {"exp": "what would a cat chase", "anno_id": [3], "obj_id": [0], "type_id": 1}}}}}
    (data / "revos" / "meta_expressions_valid_.json").write_text(json.dumps(meta))
    (data / "revos" / "mask_dict.json").write_text(json.dumps({"3": rle_list(gt)}))
    fg = np.stack([box_mask(20, 30, 0, 20, 0, 15)] * 2)
    (data / "revos" / "mask_dict_foreground.json").write_text(
        json.dumps({"v1": {"masks_rle": [masks.encode(m) for m in fg], "foreground_ratio": [0.5, 0.5]}}))
    out = tmp_path / "revos"
    result = run_eval(capsys, "refvos", "--data", data.parent, "--dataset", "revos", "--out", out, *model_args(tiny_dir))
    kept, rows = check_video_scores(out, {"v1/0": gt, "v1/1": gt}, result, ["v1/0", "v1/1"], with_revos=True)
    a = [metrics.frame_accuracy(gt, kept[k]).mean() for k in ("v1/0", "v1/1")]
    r = [metrics.frame_robustness(gt, kept[k], fg).mean() for k in ("v1/0", "v1/1")]
    expected = metrics.summarize_revos([(rows[0][0], rows[0][1], a[0], r[0], 0), (rows[1][0], rows[1][1], a[1], r[1], 1)])
    assert result["overall"] == pytest.approx(expected["overall"])
    assert result["referring"]["J"] == round(100 * rows[0][0], 2)

    # Ref-DAVIS17: ground truth in mask_dict.pkl, annotation ids numbered over sorted videos and ids.
    base = data / "davis17"
    write_video(base / "valid" / "JPEGImages" / "dog", frames, 32, 24, 3)
    (base / "meta_expressions" / "valid").mkdir(parents=True)
    (base / "meta_expressions" / "valid" / "meta_expressions.json").write_text(
        json.dumps({"videos": {"dog": {"frames": frames, "expressions": {"0": {"exp": "a dog", "obj_id": "1"}}}}}))
    dog = np.stack([box_mask(24, 32, 4, 20, 4, 28)] * 2)
    with open(base / "valid" / "mask_dict.pkl", "wb") as f:
        pickle.dump({"0": [dict(masks.encode(m), counts=masks.encode(m)["counts"].encode()) for m in dog]}, f)
    result = run_eval(capsys, "refvos", "--data", data.parent, "--dataset", "davis", "--out", tmp_path / "davis",
                      *model_args(tiny_dir))
    check_video_scores(tmp_path / "davis", {"dog/0": dog}, result, ["dog/0"])

    # Ref-YouTube-VOS: no ground truth here, so the submission folder is what counts.
    write_video(data / "rvos" / "valid" / "JPEGImages" / "yt1", frames, 24, 16, 1)
    (data / "rvos" / "meta_expressions" / "valid").mkdir(parents=True)
    (data / "rvos" / "meta_expressions" / "valid" / "meta_expressions.json").write_text(
        json.dumps({"videos": {"yt1": {"frames": frames, "expressions": {"0": {"exp": "a person"}}}}}))
    out = tmp_path / "yt"
    result = run_eval(capsys, "refvos", "--data", data.parent, "--dataset", "refytvos", "--out", out, "--submit",
                      *model_args(tiny_dir))
    assert "J" not in result and "online server" in result["note"]
    assert sorted(p.name for p in (out / "Annotations" / "yt1" / "0").iterdir()) == ["00000.png", "00001.png"]


def write_gcg_data(data):
    """A two-image GCG layout: images, mask and caption ground truth."""
    ann = data / "glamm_data" / "annotations" / "gcg_val_test"
    ann.mkdir(parents=True)
    ids = ["sa_1", "sa_2"]
    for k, image_id in enumerate(ids):
        random_image(data / "glamm_data" / "images" / "grandf" / "val_test" / f"{image_id}.jpg", 32, 24, 20 + k)
    gt_masks = {"sa_1": [box_mask(24, 32, 0, 12, 0, 32), box_mask(24, 32, 12, 24, 0, 32)],
                "sa_2": [box_mask(24, 32, 0, 24, 0, 16)]}
    gt_labels = {"sa_1": ["a cat", "the grass"], "sa_2": ["a dog"]}
    mask_gt = {"images": [{"id": i, "height": 24, "width": 32, "file_name": f"{i}.jpg"} for i in ids],
               "categories": [{"id": 1, "name": "object"}], "annotations": []}
    for i in ids:
        for m in gt_masks[i]:
            mask_gt["annotations"].append({"id": len(mask_gt["annotations"]) + 1, "image_id": i, "category_id": 1,
                                           "segmentation": masks.encode(m), "area": int(m.sum()),
                                           "bbox": masks.bbox(masks.encode(m)), "iscrowd": 0})
    caption_gt = {"images": [{"id": i} for i in ids],
                  "annotations": [{"id": k + 1, "image_id": i, "caption": "A cat on the grass.", "labels": gt_labels[i]}
                                  for k, i in enumerate(ids)]}
    # A second caption of an image: its phrases are not the ones scored (upstream takes the first).
    caption_gt["annotations"].append({"id": 9, "image_id": "sa_1", "caption": "Grass.", "labels": ["a lawn"]})
    (ann / "val_gcg_coco_mask_gt.json").write_text(json.dumps(mask_gt))
    (ann / "val_gcg_coco_caption_gt.json").write_text(json.dumps(caption_gt))
    return ids, gt_masks, gt_labels, mask_gt


def test_gcg_end_to_end(tiny_dir, tmp_path, capsys):
    data = tmp_path / "data"
    ids, gt_masks, gt_labels, mask_gt = write_gcg_data(data)
    out = tmp_path / "out"
    answer = "<p> A cat </p> [SEG] sits on <p> the grass </p> [SEG]."
    args = ["gcg", "--data", data, "--split", "val", "--out", out, "--model", tiny_dir, "--precision", "f32",
            "--forced-answer", answer, "--quiet"]
    result = run_eval(capsys, *args)
    pred = json.loads((out / "sa_1.json").read_text())
    assert set(pred) == {"image_id", "caption", "phrases", "pred_masks"}
    assert pred["image_id"] == "sa_1" and pred["phrases"] == ["A cat", "the grass"]
    assert pred["caption"] == "A cat sits on the grass ."  # upstream keeps the space [SEG] leaves
    assert len(pred["pred_masks"]) == 2 and pred["pred_masks"][0]["size"] == [24, 32]

    preds = {i: [masks.decode(m) for m in json.loads((out / f"{i}.json").read_text())["pred_masks"]] for i in ids}
    assert result["mIoU"] == pytest.approx(np.mean([metrics.greedy_miou(preds[i], gt_masks[i]) for i in ids]))
    detections = [det(i, m) for i in ids for m in preds[i]]
    assert result["AP50"] == cocoeval.evaluate_segm(mask_gt, detections, [1])["AP50"]
    matched = 0
    for i in ids:
        try:
            matched += metrics.greedy_recall_matches(gt_masks[i], gt_labels[i], preds[i], ["A cat", "the grass"],
                                                     metrics.bag_of_words_similarity)
        except IndexError:
            pass
    assert result["recall"] == pytest.approx(matched / 3)
    assert "bag-of-words" in result["recall_text_similarity"]
    # Resume: the images already written are not asked again; re-scoring needs no model.
    before = (out / "sa_1.json").stat().st_mtime_ns
    assert run_eval(capsys, *args)["mIoU"] == result["mIoU"]
    assert (out / "sa_1.json").stat().st_mtime_ns == before
    assert run_eval(capsys, "gcg", "--data", data, "--split", "val", "--out", out, "--score-only")["AP"] == result["AP"]


def test_region_captions_are_cleaned_as_upstream_cleans_them():
    from sa2va.eval.regioncap import clean_region_caption
    # every "is" goes, inside words too; ":" goes before "ASSISTANT: " is looked for
    assert clean_region_caption("Region1 shows: a small grey cat, this is it.<|im_end|>") == "a small grey cat, th it."
    assert clean_region_caption("<s>ASSISTANT: The region marked by region1 is a dog.") == "ASSISTANT a dog."
    assert clean_region_caption("'A red <p>car</p> [SEG]\n parked.'") == "A red car parked."
    assert clean_region_caption("The region marked as  a  tree") == "a tree"


def write_region_caption_data(data):
    images = data / "glamm_data" / "images" / "coco2014" / "train2014"
    for i, (w, h) in enumerate([(40, 30), (32, 24), (40, 30)]):
        random_image(images / f"COCO_{i}.jpg", w, h, i)
    rle = masks.encode(np.pad(np.ones((10, 12), np.uint8), ((4, 10), (6, 14))))
    coco = {"images": [{"id": 10 + i, "file_name": f"COCO_{i}.jpg", "width": w, "height": h}
                       for i, (w, h) in enumerate([(40, 30), (32, 24), (40, 30)])],
            "annotations": [{"id": 10, "image_id": 10, "caption": "a grey box", "segmentation": [[2, 2, 30, 2, 30, 25, 2, 25]]},
                            {"id": 11, "image_id": 11, "caption": "a corner", "segmentation": [rle]},
                            {"id": 12, "image_id": 12, "caption": "nothing", "segmentation": []}]}
    path = data / "region_caption" / "refcocog" / "finetune_refcocog_val_with_mask.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(coco))
    return path, coco


def test_region_captions_end_to_end(tiny_dir, tmp_path, capsys):
    data = tmp_path / "data"
    path, coco = write_region_caption_data(data)
    out = tmp_path / "out"
    args = ["regioncap", "--data", data, "--out", out, "--model", tiny_dir, "--precision", "f32",
            "--forced-answer", "Region1 shows: a small grey cat, this is it.", "--quiet"]
    result = run_eval(capsys, *args)
    assert result["benchmark"] == "regioncap" and result["samples"] == 3 and result["of"] == 3
    assert result["captions"].startswith("not computed") or "CIDEr" in result["captions"]
    kept = json.loads((out / "region_cap_pred.json").read_text())
    assert [r["image_id"] for r in kept] == [10, 11, 12]
    assert all(r["caption"] == "a small grey cat, th it." for r in kept)
    assert kept[0]["image_file"] == "COCO_0.jpg" and kept[0]["prediction"].startswith("Region1 shows:")
    # The visual prompts as given to the model: a list of RLE decoded and summed, an empty list empty.
    from sa2va.eval.regioncap import region_mask
    assert region_mask(coco["annotations"][1]["segmentation"], 24, 32, "x").sum() == 10 * 12
    assert not region_mask([], 30, 40, "x").any()
    # Re-scoring needs no model; a bad segmentation or a missing annotation is named.
    assert run_eval(capsys, "regioncap", "--data", data, "--out", out, "--score-only")["samples"] == 3
    coco["annotations"][0]["segmentation"] = [[1, 2, 3]]
    path.write_text(json.dumps(coco))
    with pytest.raises(SystemExit, match=r"image 10: segmentation: the first entry has 3 numbers"):
        eval_main.main([str(a) for a in ["regioncap", "--data", data, "--out", tmp_path / "o2", "--model", tiny_dir,
                                         "--precision", "f32", "--forced-answer", "x", "--quiet"]])
    del coco["annotations"][2]
    path.write_text(json.dumps(coco))
    with pytest.raises(SystemExit, match=r"image 12: no annotation of the same id"):
        eval_main.main(["regioncap", "--data", str(data), "--score-only", "--out", str(out)])


def test_bad_layouts_and_arguments_say_what_is_wrong(tmp_path, capsys):
    with pytest.raises(SystemExit, match="refs\\(unc\\).p"):
        eval_main.main(["refcoco", "--data", str(tmp_path), "--dataset", "refcoco", "--split", "val"])
    with pytest.raises(SystemExit, match="meta_expressions.json: missing"):
        eval_main.main(["refvos", "--data", str(tmp_path), "--dataset", "mevis"])
    with pytest.raises(SystemExit, match="gcg_coco_mask_gt.json: missing"):
        eval_main.main(["gcg", "--data", str(tmp_path), "--split", "val"])
    from sa2va.eval import runner
    with pytest.raises(SystemExit, match="i/N"):
        runner.parse_shard("3")
    with pytest.raises(SystemExit, match="0 <= i < N"):
        runner.parse_shard("2/2")


def test_bad_data_and_predictions_end_in_a_message_not_a_traceback(tmp_path, capsys, monkeypatch):
    from sa2va.eval import gcg
    data = tmp_path / "data"
    ids, gt_masks, _, _ = write_gcg_data(data)
    gcg_args = ["gcg", "--data", str(data), "--split", "val", "--score-only", "--out"]
    # Scoring a folder that holds no predictions (or does not exist) is a mistake, not a score of 0.
    with pytest.raises(SystemExit, match="no predictions to score"):
        eval_main.main(gcg_args + [str(tmp_path / "absent")])
    out = tmp_path / "out"
    out.mkdir()

    def write_prediction(image_id, mask_list, phrases=None):
        (out / f"{image_id}.json").write_text(json.dumps(
            {"image_id": image_id, "caption": "a cat", "phrases": phrases or ["a cat"] * len(mask_list),
             "pred_masks": [masks.encode(m) for m in mask_list]}))

    (out / "sa_1.json").write_text("{not json")
    with pytest.raises(SystemExit, match="sa_1.json: not valid JSON"):
        eval_main.main(gcg_args + [str(out)])
    write_prediction("sa_1", [np.ones((10, 10), np.uint8)])
    with pytest.raises(SystemExit, match="sa_1.json: mask 0: a 10x10 mask for a 24x32 ground truth"):
        eval_main.main(gcg_args + [str(out)])
    # A caption metric that fails (Java missing, say) leaves the mask metrics standing.
    write_prediction("sa_1", gt_masks["sa_1"], ["a cat", "the grass"])

    def failing(*_):
        raise RuntimeError("java: not found")

    monkeypatch.setattr(gcg, "caption_metrics", failing)
    result = run_eval(capsys, *gcg_args, out)
    assert result["captions"] == "not computed: RuntimeError: java: not found"
    assert result["mIoU"] == pytest.approx(1.0) and result["samples"] == 1
    assert result["recall"] == 1.0  # the phrases of the image's first caption annotation
    assert json.loads((out / "metrics.json").read_text())["mIoU"] == result["mIoU"]

    # A split scored here without its ground truth file is an error, not "nothing to score".
    davis = tmp_path / "video" / "davis17"
    (davis / "meta_expressions" / "valid").mkdir(parents=True)
    meta = {"videos": {"dog": {"frames": ["00000", "00001"], "expressions": {"0": {"exp": "a dog", "obj_id": "1"}}}}}
    (davis / "meta_expressions" / "valid" / "meta_expressions.json").write_text(json.dumps(meta))
    with pytest.raises(SystemExit, match="mask_dict.pkl: missing \\(davis valid ground truth\\)"):
        eval_main.main(["refvos", "--data", str(tmp_path / "video"), "--dataset", "davis", "--score-only"])
    # Predictions with fewer frames, or another size, than the ground truth; a damaged RLE.
    base = tmp_path / "video" / "mevis" / "valid_u"
    base.mkdir(parents=True)
    (base / "meta_expressions.json").write_text(json.dumps(
        {"videos": {"v": {"frames": ["00000", "00001"], "expressions": {"0": {"exp": "a cat", "anno_id": [7]}}}}}))
    gt = np.stack([box_mask(24, 32, 0, 12, 0, 16)] * 2)
    (base / "mask_dict.json").write_text(json.dumps({"7": rle_list(gt)}))
    video_out = tmp_path / "video-out"
    video_out.mkdir()
    video_args = ["refvos", "--data", str(tmp_path / "video"), "--dataset", "mevis", "--score-only", "--out", str(video_out)]
    for predicted, message in (([gt[0]], "expression v/0: 1 predicted masks for 2 frames"),
                               ([gt[0], np.ones((24, 30), np.uint8)], "expression v/0, frame 1: the prediction: a 24x30 mask")):
        (video_out / "predictions.0.jsonl").write_text(json.dumps({"key": "v/0", "prediction_masks": rle_list(predicted)}) + "\n")
        with pytest.raises(SystemExit, match=message):
            eval_main.main(video_args)
    (video_out / "predictions.0.jsonl").write_text(json.dumps(
        {"key": "v/0", "prediction_masks": [{"size": [24, 32], "counts": 5}] * 2}) + "\n")
    with pytest.raises(SystemExit, match="predictions.0.jsonl:1: expression v/0, frame 0: RLE counts must be"):
        eval_main.main(video_args)


def test_video_scoring_in_several_processes_equals_one(tmp_path, capsys):
    """--jobs N scores expressions in N forked processes: the same numbers as one process, and a bad
    prediction met in a worker ends in the same message as in one process."""
    base = tmp_path / "video" / "mevis" / "valid_u"
    base.mkdir(parents=True)
    frames = ["00000", "00001", "00002"]
    rng = np.random.RandomState(4)
    gt = {7: (rng.rand(3, 24, 32) > 0.5).astype(np.uint8), 8: np.stack([box_mask(24, 32, 2, 20, 3, 25)] * 3)}
    meta = {"videos": {v: {"frames": frames, "expressions": {str(e): {"exp": f"thing {e}", "anno_id": [7 + e % 2]}
                                                             for e in range(3)}} for v in ("a", "b")}}
    (base / "meta_expressions.json").write_text(json.dumps(meta))
    (base / "mask_dict.json").write_text(json.dumps({str(k): rle_list(v) for k, v in gt.items()}))
    out = tmp_path / "out"
    out.mkdir()
    records = []
    for v in ("a", "b"):
        for e in range(3):
            pred = (rng.rand(3, 24, 32) > 0.4).astype(np.uint8)
            records.append({"key": f"{v}/{e}", "prediction_masks": [masks.encode(m) for m in pred]})
    (out / "predictions.0-of-1.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    args = ["refvos", "--data", tmp_path / "video", "--dataset", "mevis", "--score-only", "--quiet", "--out", out]
    one = run_eval(capsys, *args, "--jobs", "1")
    several = run_eval(capsys, *args, "--jobs", "3")
    assert one == several and one["samples"] == 6
    per_expression = []
    for r in records:
        pred = np.stack([masks.decode(m) for m in r["prediction_masks"]])
        truth = gt[7 + int(r["key"][-1]) % 2]
        per_expression.append((metrics.frame_j(truth, pred).mean(), metrics.frame_f(truth, pred).mean()))
    assert one["J"] == round(100 * np.mean([j for j, _ in per_expression]), 2)

    records[4]["prediction_masks"][2] = masks.encode(np.ones((24, 30), np.uint8))
    (out / "predictions.0-of-1.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    for jobs in ("1", "2"):
        with pytest.raises(SystemExit, match="expression b/1, frame 2: the prediction: a 24x30 mask"):
            eval_main.main([str(a) for a in args] + ["--jobs", jobs])
    records[4]["prediction_masks"][2] = {"size": [24, 32], "counts": 5}  # not an RLE: a data error
    (out / "predictions.0-of-1.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(SystemExit, match="predictions.0-of-1.jsonl:5: expression b/1, frame 2: RLE counts must be"):
        eval_main.main([str(a) for a in args] + ["--jobs", "2"])
    with pytest.raises(SystemExit, match="--jobs 0: need at least 1"):
        eval_main.main([str(a) for a in args] + ["--jobs", "0"])
    # A worker that dies (as one killed for memory) ends the map with a message, not a wait.
    with pytest.raises(SystemExit, match="a scoring process died"):
        runner.map_in_processes(lambda x: os._exit(9) if x == 2 else x, [1, 2, 3, 4], 2, "test", True)
    assert runner.map_in_processes(lambda x: x * x, [1, 2, 3], 2, "test", True) == [1, 4, 9]


# ------------------------------------------------------------------ errors, submission, sharding
def eval_error(*argv):
    """The one-line message a run ends with (SystemExit's text: exit status 1, no traceback)."""
    with pytest.raises(SystemExit) as e:
        eval_main.main([str(a) for a in argv])
    message = e.value.code
    assert isinstance(message, str) and "\n" not in message and "Traceback" not in message, message
    return message


def test_model_errors_end_in_one_line(refcoco_data, tiny_dir, tmp_path):
    # An image missing under --images: the model's own error, as a line.
    message = eval_error("refcoco", "--data", refcoco_data, "--dataset", "refcoco", "--split", "val",
                         "--images", tmp_path / "no-images", "--out", tmp_path / "out", *model_args(tiny_dir))
    assert message.startswith("error: ") and "COCO_train2014_000000000011.jpg" in message
    # A video whose frames folder is missing.
    base = tmp_path / "video" / "mevis" / "valid_u"
    base.mkdir(parents=True)
    (base / "meta_expressions.json").write_text(json.dumps(
        {"videos": {"v": {"frames": ["00000"], "expressions": {"0": {"exp": "a cat", "anno_id": [7]}}}}}))
    (base / "mask_dict.json").write_text(json.dumps({"7": [None]}))
    message = eval_error("refvos", "--data", tmp_path / "video", "--dataset", "mevis", "--out", tmp_path / "v",
                         *model_args(tiny_dir))
    assert message.startswith("error: ") and "00000.jpg" in message


def write_mevis(base, videos, mask_dict=None):
    base.mkdir(parents=True, exist_ok=True)
    (base / "meta_expressions.json").write_text(json.dumps({"videos": videos}))
    if mask_dict is not None:
        (base / "mask_dict.json").write_text(json.dumps(mask_dict))


def test_malformed_data_names_the_file_and_the_sample(refcoco_data, tmp_path):
    # RefCOCO: a damaged prediction, then an image and a segmentation missing from instances.json.
    out = tmp_path / "refcoco-out"
    out.mkdir()
    common = ["refcoco", "--data", refcoco_data, "--dataset", "refcoco", "--split", "val", "--score-only",
              "--out", out]
    good = masks.encode(np.zeros((24, 32), np.uint8))
    (out / "predictions.0-of-1.jsonl").write_text(
        json.dumps({"key": "11/1/0", "mask": good}) + "\n" + json.dumps({"key": "11/1/1", "mask": {"size": [24, 32], "counts": "z"}}) + "\n")
    message = eval_error(*common)
    assert "predictions.0-of-1.jsonl:2: expression 11/1/1:" in message and "outside '0'..'o'" in message
    (out / "predictions.0-of-1.jsonl").write_text(json.dumps({"key": "11/1/0"}) + "\n")
    assert "predictions.0-of-1.jsonl:1: expression 11/1/0: no \"mask\"" in eval_error(*common)
    (out / "predictions.0-of-1.jsonl").write_text("[1, 2]\n")
    assert "predictions.0-of-1.jsonl:1: not a JSON object with a \"key\"" in eval_error(*common)
    (out / "predictions.0-of-1.jsonl").write_text(json.dumps({"key": "11/1/0", "mask": good}) + "\n")
    broken = tmp_path / "broken-refcoco"
    import shutil
    shutil.copytree(refcoco_data / "ref_seg", broken / "ref_seg")
    instances_path = broken / "ref_seg" / "refcoco" / "instances.json"
    instances = json.loads(instances_path.read_text())
    common[2] = broken
    no_image = dict(instances, images=instances["images"][1:])
    instances_path.write_text(json.dumps(no_image))
    assert re.search(r"instances.json: no image 11 .*ref 1", eval_error(*common))
    no_segmentation = json.loads(json.dumps(instances))
    del no_segmentation["annotations"][0]["segmentation"]
    instances_path.write_text(json.dumps(no_segmentation))
    assert "instances.json: annotation 101: no \"segmentation\"" in eval_error(*common)
    del no_segmentation["annotations"]
    instances_path.write_text(json.dumps(no_segmentation))
    assert "instances.json: no \"annotations\" list" in eval_error(*common)

    # Video: the ground truth's RLE, the expressions file, the predictions.
    base = tmp_path / "video" / "mevis" / "valid_u"
    gt = rle_list(np.stack([box_mask(24, 32, 0, 12, 0, 16)] * 2))
    videos = {"v": {"frames": ["00000", "00001"], "expressions": {"0": {"exp": "a cat", "anno_id": [7]}}}}
    video_out = tmp_path / "video-out"
    video_out.mkdir()
    video_args = ["refvos", "--data", tmp_path / "video", "--dataset", "mevis", "--score-only", "--jobs", "1",
                  "--out", video_out]
    (video_out / "predictions.0-of-1.jsonl").write_text(json.dumps({"key": "v/0", "prediction_masks": gt}) + "\n")
    write_mevis(base, videos, {"7": [gt[0], {"size": [24, 32], "counts": "z"}]})
    message = eval_error(*video_args)
    assert "mask_dict.json: annotation 7, frame 1 (expression v/0):" in message and "outside '0'..'o'" in message
    write_mevis(base, videos, {"7": [gt[0], [5, 5]]})
    assert "mask_dict.json: annotation 7, frame 1 (expression v/0): not a COCO RLE" in eval_error(*video_args)
    write_mevis(base, videos, {"7": gt})
    (base / "meta_expressions.json").write_text(json.dumps({"video": videos}))
    assert "meta_expressions.json: no \"videos\" object" in eval_error(*video_args)
    write_mevis(base, {"v": {"frames": ["00000"], "expressions": {"0": {"anno_id": [7]}}}})
    assert "meta_expressions.json: video v, expression 0: no string \"exp\"" in eval_error(*video_args)
    write_mevis(base, {"v": {"frames": ["00000"]}})
    assert "meta_expressions.json: video v: no \"expressions\" object" in eval_error(*video_args)
    write_mevis(base, videos)
    for record, expected in (({"key": "v/0"}, "predictions.0-of-1.jsonl:1: expression v/0: no \"prediction_masks\" list"),
                             ({"key": "v/0", "prediction_masks": []},
                              "predictions.0-of-1.jsonl:1: expression v/0: 0 predicted masks for 2 frames"),
                             ({"key": "v/0", "prediction_masks": [gt[0], {"size": [24, 32], "counts": "zz"}]},
                              "predictions.0-of-1.jsonl:1: expression v/0, frame 1: ")):
        (video_out / "predictions.0-of-1.jsonl").write_text(json.dumps(record) + "\n")
        assert expected in eval_error(*video_args)

    # GCG: a prediction file without its masks.
    data = tmp_path / "gcg"
    write_gcg_data(data)
    gcg_out = tmp_path / "gcg-out"
    gcg_out.mkdir()
    (gcg_out / "sa_1.json").write_text(json.dumps({"image_id": "sa_1", "caption": "a cat", "phrases": []}))
    message = eval_error("gcg", "--data", data, "--split", "val", "--score-only", "--out", gcg_out)
    assert "sa_1.json: no \"pred_masks\" list" in message


def test_size_mismatch_names_the_prediction_and_the_ground_truth(tmp_path):
    base = tmp_path / "video" / "mevis" / "valid_u"
    gt = np.stack([box_mask(32, 40, 0, 12, 0, 16)] * 2)
    write_mevis(base, {"v": {"frames": ["00000", "00001"], "expressions": {"0": {"exp": "a cat", "anno_id": [7]}}}},
                {"7": rle_list(gt)})
    out = tmp_path / "out"
    out.mkdir()
    (out / "predictions.0-of-1.jsonl").write_text(json.dumps(
        {"key": "v/0", "prediction_masks": rle_list(np.ones((2, 10, 10), np.uint8))}) + "\n")
    message = eval_error("refvos", "--data", tmp_path / "video", "--dataset", "mevis", "--score-only", "--out", out)
    assert "expression v/0, frame 0: the prediction: a 10x10 mask for a 32x40 ground truth" in message


def test_empty_splits_are_refused(tmp_path):
    write_mevis(tmp_path / "video" / "mevis" / "valid_u", {}, {})
    message = eval_error("refvos", "--data", tmp_path / "video", "--dataset", "mevis", "--score-only",
                         "--out", tmp_path / "out")
    assert "meta_expressions.json: no expressions" in message
    data = tmp_path / "gcg"
    write_gcg_data(data)
    caption = data / "glamm_data" / "annotations" / "gcg_val_test" / "val_gcg_coco_caption_gt.json"
    caption.write_text(json.dumps({"images": [], "annotations": []}))
    assert "val_gcg_coco_caption_gt.json: no images" in eval_error("gcg", "--data", data, "--split", "val",
                                                                    "--score-only", "--out", tmp_path / "g")


def test_polygons_follow_pycocotools_list_rule(refcoco_data, tmp_path):
    square = [0, 0, 4, 0, 4, 4, 0, 4]
    # A first entry of more than 4 numbers: every entry a polygon (a later 4-number one traces 2 points: empty).
    union = masks.segmentation_to_rle([square, [1, 1, 2, 1]], 6, 6)
    assert masks.area(union) == 16
    # A first entry of exactly 4: every entry a box; anything else is not read.
    assert masks.area(masks.segmentation_to_rle([[0, 0, 2, 2], [3, 3, 1, 1]], 6, 6)) == 5
    for bad, text in (([[1, 2, 3]], "first entry has 3 numbers"), ([[0, 0, 2, 2], square], "entry 1 has 8 numbers"),
                      ([[0, 0, "a", 1, 2, 3]], "numbers"), ([5, 6, 7, 8, 9, 10], "a list of lists")):
        with pytest.raises(ValueError, match=text):
            masks.segmentation_to_rle(bad, 6, 6)
    # In the ground truth: an error naming the annotation, not a silent empty mask.
    broken = tmp_path / "broken"
    import shutil
    shutil.copytree(refcoco_data / "ref_seg", broken / "ref_seg")
    path = broken / "ref_seg" / "refcoco" / "instances.json"
    instances = json.loads(path.read_text())
    instances["annotations"][2]["segmentation"] = [[1, 2, 3]]
    path.write_text(json.dumps(instances))
    out = tmp_path / "out"
    out.mkdir()
    (out / "predictions.0-of-1.jsonl").write_text(
        json.dumps({"key": "12/3/0", "mask": masks.encode(np.zeros((20, 30), np.uint8))}) + "\n")
    message = eval_error("refcoco", "--data", broken, "--dataset", "refcoco", "--split", "val", "--score-only",
                         "--out", out)
    assert "instances.json: annotation 103: " in message and "first entry has 3 numbers" in message


def test_revos_needs_video_sizes_and_empty_groups_are_null(tiny_dir, tmp_path, capsys):
    data = tmp_path / "data" / "video_datas"
    frames = ["00000", "00001"]
    gt = np.stack([box_mask(20, 30, 0, 10, 0, 10), box_mask(20, 30, 5, 15, 5, 15)])
    meta = {"videos": {"v1": {"height": 20, "width": 30, "frames": frames, "expressions": {
        "0": {"exp": "the box", "anno_id": [3], "type_id": 0},
        "1": {"exp": "what would a cat chase", "anno_id": [3], "type_id": 1}}}}}
    (data / "revos").mkdir(parents=True)
    (data / "revos" / "mask_dict.json").write_text(json.dumps({"3": rle_list(gt)}))
    fg = [masks.encode(box_mask(20, 30, 0, 20, 0, 15))] * 2
    (data / "revos" / "mask_dict_foreground.json").write_text(json.dumps({"v1": {"masks_rle": fg}}))
    out = tmp_path / "out"
    out.mkdir()
    (out / "predictions.0-of-1.jsonl").write_text(
        "".join(json.dumps({"key": f"v1/{e}", "prediction_masks": rle_list(gt)}) + "\n" for e in ("0", "1")))
    args = ["refvos", "--data", data.parent, "--dataset", "revos", "--score-only", "--quiet", "--out", out]
    meta_path = data / "revos" / "meta_expressions_valid_.json"
    no_height = json.loads(json.dumps(meta))
    del no_height["videos"]["v1"]["height"]
    meta_path.write_text(json.dumps(no_height))
    assert "meta_expressions_valid_.json: video v1: no integer \"height\" and \"width\"" in eval_error(*args)
    meta_path.write_text(json.dumps(meta))
    # --limit 1 scores a referring expression only: the reasoning group and overall are undefined.
    result = run_eval(capsys, *args, "--limit", "1")
    assert result["referring"]["J"] == 100.0
    assert result["reason"] == {k: "n/a" for k in ("J", "F", "A", "R", "JF")} and result["overall"]["JF"] == "n/a"

    def no_nan(text):
        raise ValueError(f"{text} in metrics.json")
    saved = json.loads((out / "metrics.json").read_text(), parse_constant=no_nan)
    assert saved["reason"]["J"] is None and saved["overall"]["J"] is None and saved["referring"]["JF"] == 100.0
    # A group's JF is the mean of its J and F means, as upstream's scorer computes it.
    groups = metrics.summarize_revos([(0.5, 0.25, 1, 1, 0), (0.1, 0.3, 1, 1, 0)])
    assert groups["referring"]["JF"] == pytest.approx((30.0 + 27.5) / 2)


def test_submit_writes_annotations_from_kept_predictions(tiny_dir, tmp_path, capsys):
    base = tmp_path / "data" / "video_datas" / "mevis" / "valid"
    frames = ["00000", "00001"]
    write_video(base / "JPEGImages" / "vid", frames, 32, 24, 5)
    write_mevis(base, {"vid": {"frames": frames, "expressions": {"0": {"exp": "a cat"}, "1": {"exp": "a dog"}}}})
    common = ["refvos", "--data", tmp_path / "data", "--dataset", "mevis", "--split", "valid", "--jobs", "1"]
    # Predictions kept from a run without --submit: a resumed run with --submit writes every PNG.
    out = tmp_path / "out"
    run_eval(capsys, *common, "--out", out, "--shard", "0/2", *model_args(tiny_dir))
    run_eval(capsys, *common, "--out", out, "--shard", "0/2", "--submit", *model_args(tiny_dir))
    assert sorted(p.name for p in (out / "Annotations" / "vid" / "0").iterdir()) == ["00000.png", "00001.png"]
    assert not (out / "Annotations" / "vid" / "1").exists()  # the other shard's sample
    # --score-only --submit: from the kept predictions alone.
    scored = tmp_path / "scored"
    scored.mkdir()
    cat = np.stack([box_mask(24, 32, 0, 10, 0, 10), box_mask(24, 32, 2, 12, 3, 13)])
    (scored / "predictions.0-of-1.jsonl").write_text("".join(
        json.dumps({"key": f"vid/{e}", "prediction_masks": [masks.encode(m) for m in cat * (e == "0")]}) + "\n"
        for e in ("0", "1")))
    run_eval(capsys, *common, "--out", scored, "--score-only", "--submit")
    for e in ("0", "1"):
        for k, frame in enumerate(frames):
            png = np.array(Image.open(scored / "Annotations" / "vid" / e / f"{frame}.png"))
            assert np.array_equal(png, cat[k] * 255 * (e == "0"))
    assert not [p for p in scored.rglob("*") if p.is_file() and not p.name.endswith((".png", ".json", ".jsonl"))]


def test_atomic_writes_use_their_own_temporary_file(tmp_path, monkeypatch):
    """Shards run at once write metrics.json and results.json into one folder: a write that starts while
    another is under way (simulated here by writing again from inside the first) must not take the
    other's temporary file."""
    path = tmp_path / "metrics.json"
    real_dump = json.dump
    nested = []

    def dump_with_a_concurrent_write(value, f, **kwargs):
        if not nested:
            nested.append(1)
            runner.write_json(str(path), {"writer": "other"})
        real_dump(value, f, **kwargs)

    monkeypatch.setattr(runner.json, "dump", dump_with_a_concurrent_write)
    runner.write_json(str(path), {"writer": "this"})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"writer": "this"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # as open() would create it


def test_gcg_bert_without_transformers_falls_back_to_bag_of_words(tmp_path, capsys, monkeypatch):
    data = tmp_path / "data"
    ids, gt_masks, _, _ = write_gcg_data(data)
    out = tmp_path / "out"
    out.mkdir()
    (out / "sa_1.json").write_text(json.dumps({"image_id": "sa_1", "caption": "a cat", "phrases": ["a cat", "the grass"],
                                               "pred_masks": [masks.encode(m) for m in gt_masks["sa_1"]]}))
    monkeypatch.setitem(__import__("sys").modules, "torch", None)  # as if not installed
    monkeypatch.setitem(__import__("sys").modules, "transformers", None)
    assert eval_main.main(["gcg", "--data", str(data), "--split", "val", "--score-only", "--out", str(out),
                           "--bert", str(tmp_path / "bert-base-uncased")]) == 0
    printed = capsys.readouterr()
    result = json.loads(printed.out)
    assert "bag-of-words" in result["recall_text_similarity"] and "torch" in result["recall_text_similarity"]
    assert "--bert" in printed.err and "bag-of-words" in printed.err
    assert json.loads((out / "metrics.json").read_text())["recall_text_similarity"] == result["recall_text_similarity"]
