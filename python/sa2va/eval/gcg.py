"""Grounded conversation generation (GranD-f GCG): mask AP, mIoU, recall, and captions.

Layout (Sa2VA's data preparation):
  DATA/glamm_data/images/grandf/val_test/<image_id>.jpg
  DATA/glamm_data/annotations/gcg_val_test/<split>_gcg_coco_mask_gt.json      (COCO instances, RLE)
  DATA/glamm_data/annotations/gcg_val_test/<split>_gcg_coco_caption_gt.json   (captions, phrase labels)
Every image of the split's caption file is one sample, asked upstream's question (with its five
spaces); OUT/<image_id>.json is upstream's per-image file {image_id, caption, phrases, pred_masks
(COCO RLE per [SEG])}, caption and phrases derived from the answer as upstream's GCG script does.
Scores: COCO mask AP (all predictions score 1.0, category 1; AP50 is what GCG tables report), mIoU
and recall as upstream (metrics.py). Recall's phrase similarity is upstream's BERT (bert-base-uncased,
mean of the last hidden states, cosine) when --bert names a local model folder and transformers is
installed; otherwise a bag-of-words cosine stands in, and the result says so. Caption metrics (METEOR,
CIDEr, ...) need pycocoevalcap (and Java); without it they are left out with a note.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable

import numpy as np

from . import cocoeval, masks, metrics, runner

QUESTION = ("Could you please give me a brief description of the image? Please respond with interleaved"
            "     segmentation masks for the corresponding parts of the answer.")
PROMPT = "<image>\n" + QUESTION


def add_arguments(parser: argparse.ArgumentParser) -> None:
    runner.add_common_arguments(parser)
    parser.add_argument("--split", required=True, choices=["val", "test"])
    parser.add_argument("--images", help="image folder (default: DATA/glamm_data/images/grandf/val_test)")
    parser.add_argument("--bert", help="a local bert-base-uncased folder for recall's phrase similarity "
                        "(needs transformers and torch)")


class Gcg:
    def __init__(self, data: str, split: str, images: str | None) -> None:
        root = os.path.join(data, "glamm_data") if os.path.isdir(os.path.join(data, "glamm_data")) else data
        ann_dir = os.path.join(root, "annotations", "gcg_val_test")
        self.mask_gt_path = os.path.join(ann_dir, f"{split}_gcg_coco_mask_gt.json")
        self.caption_gt_path = os.path.join(ann_dir, f"{split}_gcg_coco_caption_gt.json")
        for path in (self.mask_gt_path, self.caption_gt_path):
            if not os.path.exists(path):
                raise SystemExit(f"{path}: missing (GCG {split} ground truth)")
        self.mask_gt = runner.read_json(self.mask_gt_path)
        self.caption_gt = runner.read_json(self.caption_gt_path)
        for path, value in ((self.mask_gt_path, self.mask_gt), (self.caption_gt_path, self.caption_gt)):
            for key, field in (("images", "id"), ("annotations", "image_id")):
                if not isinstance(value, dict) or not isinstance(value.get(key), list):
                    raise SystemExit(f"{path}: no \"{key}\" list")
                if not all(isinstance(entry, dict) and field in entry for entry in value[key]):
                    raise SystemExit(f"{path}: every entry of \"{key}\" needs an \"{field}\"")
        if not self.caption_gt["images"]:  # scoring nothing would print 0 as if it were a result
            raise SystemExit(f"{self.caption_gt_path}: no images")
        self.image_dir = images or os.path.join(root, "images", "grandf", "val_test")
        self.samples = [{"key": str(img["id"]), "image_id": img["id"],
                         "file": img.get("file_name") or f"{img['id']}.jpg"} for img in self.caption_gt["images"]]


def run(args: argparse.Namespace) -> dict[str, Any]:
    data = Gcg(args.data, args.split, args.images)
    out = args.out or f"eval-gcg-{args.split}"
    os.makedirs(out, exist_ok=True)
    samples = runner.select_samples(data.samples, args)
    if not args.score_only:
        model = runner.load_model(args)
        options = runner.generation_options(args)
        import sa2va
        done = {s["key"] for s in samples if os.path.exists(prediction_path(out, s["image_id"]))}

        def predict(sample: dict[str, Any]) -> dict[str, Any]:
            result = model.predict_forward(image=os.path.join(data.image_dir, sample["file"]), text=PROMPT, **options)
            answer = result["prediction"]
            return {"image_id": sample["image_id"], "caption": sa2va.clean_caption(answer),
                    "phrases": sa2va.extract_phrases(answer),
                    "pred_masks": [masks.encode(m[0]) for m in result["prediction_masks"]]}

        def save(record: dict[str, Any]) -> None:
            runner.write_json(prediction_path(out, record["image_id"]), {k: v for k, v in record.items() if k != "key"})

        runner.run_missing(samples, lambda s: s["key"], done, predict, save, f"gcg {args.split}", args.quiet)
    return score(data, out, args)


def prediction_path(out: str, image_id: Any) -> str:
    return os.path.join(out, f"{image_id}.json")


def bert_similarity(model_dir: str) -> Callable[[str, str], float]:
    import torch  # noqa: F401  (transformers needs it)
    from transformers import AutoModel, AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    cache: dict[str, np.ndarray] = {}

    def embed(text: str) -> np.ndarray:
        if text not in cache:
            import torch
            with torch.no_grad():
                inputs = tokenizer(text, return_tensors="pt", max_length=512, truncation=True)
                cache[text] = model(**inputs).last_hidden_state[0].mean(dim=0).numpy()
        return cache[text]

    def similarity(a: str, b: str) -> float:
        ea, eb = embed(a), embed(b)
        return float(np.dot(ea, eb) / (np.linalg.norm(ea) * np.linalg.norm(eb)))

    return similarity


def score(data: Gcg, out: str, args: argparse.Namespace) -> dict[str, Any]:
    wanted = runner.select_samples(data.samples, argparse.Namespace(limit=args.limit, shard="0/1"))
    predictions: dict[Any, dict[str, Any]] = {}
    for sample in wanted:
        path = prediction_path(out, sample["image_id"])
        if os.path.exists(path):
            pred = runner.read_json(path)
            if isinstance(pred, dict) and "caption" not in pred and len(pred) == 1:  # upstream's {name: {...}} too
                pred = next(iter(pred.values()))
            if not isinstance(pred, dict):
                raise SystemExit(f"{path}: not a JSON object {{image_id, caption, phrases, pred_masks}}")
            predictions[sample["image_id"]] = pred
    runner.require_predictions(len(predictions), out, args)
    image_ids = [s["image_id"] for s in wanted if s["image_id"] in predictions]
    result: dict[str, Any] = {"benchmark": "gcg", "split": args.split, "samples": len(image_ids), "of": len(wanted)}

    # Every mask decoded and checked first, so that a bad one is named (AP decodes them again).
    images = {img["id"]: img for img in data.mask_gt["images"]}
    gt_by_image: dict[Any, list[np.ndarray]] = {i: [] for i in image_ids}
    for i in image_ids:
        if i not in images:
            raise SystemExit(f"{data.mask_gt_path}: no image {i!r} (listed in {data.caption_gt_path})")
        if not all(isinstance(images[i].get(k), int) for k in ("height", "width")):
            raise SystemExit(f"{data.mask_gt_path}: image {i!r}: no integer \"height\" and \"width\"")
    for ann in data.mask_gt["annotations"]:
        if ann["image_id"] in gt_by_image:
            img = images[ann["image_id"]]
            where = f"{data.mask_gt_path}: annotation {ann.get('id')} (image {ann['image_id']!r})"
            missing = [k for k in ("id", "category_id", "area", "segmentation") if k not in ann]
            if missing:  # what COCO's evaluation reads
                raise SystemExit(f"{where}: no \"{missing[0]}\"")
            try:
                rle = masks.segmentation_to_rle(ann["segmentation"], img["height"], img["width"])
            except (ValueError, TypeError) as e:
                raise SystemExit(f"{where}: {e}") from None
            gt_by_image[ann["image_id"]].append(runner.decode_rle(rle, where))
    pred_by_image: dict[Any, list[np.ndarray]] = {}
    for i in image_ids:
        path = prediction_path(out, i)
        pred = predictions[i]
        if not isinstance(pred.get("pred_masks"), list):
            raise SystemExit(f"{path}: no \"pred_masks\" list")
        if not isinstance(pred.get("phrases"), list):
            raise SystemExit(f"{path}: no \"phrases\" list")
        pred_by_image[i] = [runner.decode_rle(r, f"{path}: mask {k}") for k, r in enumerate(pred["pred_masks"])]
        for k, m in enumerate(pred_by_image[i]):
            runner.check_mask_size(m, images[i]["height"], images[i]["width"], f"{path}: mask {k}")

    # Mask AP over the scored images (all predictions score 1.0, category 1).
    chosen = set(image_ids)
    gt = dict(data.mask_gt)
    gt["images"] = [img for img in data.mask_gt["images"] if img["id"] in chosen]
    gt["annotations"] = [a for a in data.mask_gt["annotations"] if a["image_id"] in chosen]
    detections = [{"image_id": image_id, "category_id": 1, "segmentation": rle, "score": 1.0}
                  for image_id in image_ids for rle in predictions[image_id]["pred_masks"]]
    stats = cocoeval.evaluate_segm(gt, detections, cat_ids=[1])
    result["AP50"] = stats["AP50"]
    result["AP"] = stats["AP"]
    result["coco_segm"] = stats

    result["mIoU"] = float(np.mean([metrics.greedy_miou(pred_by_image[i], gt_by_image[i]) for i in image_ids])) \
        if image_ids else 0.0

    labels: dict[Any, list[str]] = {}
    for a in data.caption_gt["annotations"]:  # an image's first caption annotation, as upstream's loadAnns(...)[0]
        labels.setdefault(a["image_id"], a.get("labels", []))
    similarity, how = metrics.bag_of_words_similarity, "bag-of-words cosine (not upstream's BERT: pass --bert)"
    if args.bert:
        try:
            similarity, how = bert_similarity(args.bert), "bert"
        except ImportError as e:  # torch or transformers not installed: the documented stand-in
            how = f"bag-of-words cosine (not upstream's BERT: --bert needs torch and transformers; {e})"
            print(f"note: --bert needs torch and transformers ({e}): recall's phrase similarity is a "
                  f"bag-of-words cosine instead", file=sys.stderr)
    positives = matched = 0
    for i in image_ids:
        gt_labels = labels.get(i, [])
        positives += len(gt_labels)
        try:
            matched += metrics.greedy_recall_matches(gt_by_image[i], gt_labels, pred_by_image[i],
                                                     predictions[i]["phrases"], similarity)
        except IndexError:  # more masks than phrases: upstream counts the image as no match
            pass
    result["recall"] = matched / positives if positives else 0.0
    result["recall_text_similarity"] = how

    runner.write_json(os.path.join(out, "metrics.json"), result)  # kept should the caption metrics fail
    try:
        result["captions"] = caption_metrics(data, predictions, image_ids)
    except ImportError:
        result["captions"] = "not computed: needs pycocoevalcap (and Java for METEOR)"
    except Exception as e:  # Java missing, METEOR or SPICE failing: the mask metrics still stand
        result["captions"] = f"not computed: {type(e).__name__}: {e}"
    runner.write_json(os.path.join(out, "metrics.json"), result)
    return result


def caption_metrics(data: Gcg, predictions: dict[Any, dict[str, Any]], image_ids: list[Any]) -> dict[str, float]:
    from pycocoevalcap.eval import COCOEvalCap  # type: ignore
    from pycocotools.coco import COCO  # type: ignore
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        res_path = os.path.join(tmp, "captions.json")
        with open(res_path, "w", encoding="utf-8") as f:
            json.dump([{"image_id": i, "caption": predictions[i]["caption"]} for i in image_ids], f)
        coco = COCO(data.caption_gt_path)
        result = coco.loadRes(res_path)
        evaluator = COCOEvalCap(coco, result)
        evaluator.params["image_id"] = result.getImgIds()
        evaluator.evaluate()
        return {k: float(v) for k, v in evaluator.eval.items()}
