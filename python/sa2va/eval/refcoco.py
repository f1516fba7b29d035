"""RefCOCO, RefCOCO+ and RefCOCOg referring segmentation: cIoU and gIoU.

Layout (Sa2VA's data preparation):
  DATA/ref_seg/refcoco/refs(unc).p, instances.json      (refcoco+ : refs(unc).p; refcocog: refs(umd).p)
  DATA/glamm_data/images/coco2014/train2014/COCO_train2014_*.jpg
Each expression (every sentence of every ref of the split) is one sample; the prompt is upstream's
"<image>\\n Please segment {sentence} in this image." and the first [SEG] mask is scored. The ground
truth of a ref is its annotation's polygons rasterised as pycocotools does and summed (then through a
COCO RLE round trip, as upstream: where polygons overlap the runs flip, see masks.py).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import numpy as np

from . import masks, metrics, runner

SPLIT_BY = {"refcoco": "unc", "refcoco+": "unc", "refcocog": "umd"}
PROMPT = "<image>\n Please segment {} in this image."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    runner.add_common_arguments(parser)
    parser.add_argument("--dataset", required=True, choices=["refcoco", "refcoco+", "refcocog"])
    parser.add_argument("--split", required=True, choices=["val", "testA", "testB", "test"])
    parser.add_argument("--images", help="folder of the COCO train2014 images "
                        "(default: DATA/glamm_data/images/coco2014/train2014)")


def dataset_dir(data: str, dataset: str) -> str:
    for candidate in (os.path.join(data, "ref_seg", dataset), os.path.join(data, dataset), data):
        if os.path.exists(os.path.join(candidate, f"refs({SPLIT_BY[dataset]}).p")):
            return candidate
    raise SystemExit(f"{data}: no ref_seg/{dataset}/refs({SPLIT_BY[dataset]}).p found")


def split_refs(refs: list[dict[str, Any]], split: str, path: str = "refs") -> list[dict[str, Any]]:
    """The refs of a split, as the REFER API selects them."""
    if not isinstance(refs, list) or not all(isinstance(r, dict) and isinstance(r.get("split"), str) for r in refs):
        raise SystemExit(f"{path}: expected a list of refs, each with a \"split\"")
    if split in ("testA", "testB", "testC"):
        return [r for r in refs if split[-1] in r["split"]]
    if split == "test":
        return [r for r in refs if "test" in r["split"]]
    return [r for r in refs if r["split"] == split]


def load_pickle(path: str) -> Any:
    return runner.read_pickle(path)


class RefCoco:
    def __init__(self, data: str, dataset: str, split: str, images: str | None) -> None:
        root = dataset_dir(data, dataset)
        refs_path = os.path.join(root, f"refs({SPLIT_BY[dataset]}).p")
        self.refs = split_refs(load_pickle(refs_path), split, refs_path)
        if not self.refs:
            raise SystemExit(f"{refs_path}: no refs in split {split!r}")
        self.instances_path = os.path.join(root, "instances.json")
        self.images, self.annotations = read_instances(self.instances_path)
        self.image_dir = images or os.path.join(data, "glamm_data", "images", "coco2014", "train2014")
        # Expressions grouped by image, images in order of their first ref, refs and sentences in order.
        self.by_image: dict[Any, list[dict[str, Any]]] = {}
        for ref in self.refs:
            check_ref(ref, refs_path, self.instances_path, self.images, self.annotations)
            for index, sentence in enumerate(ref["sentences"]):
                if not isinstance(sentence, dict) or not isinstance(sentence.get("sent"), str):
                    raise SystemExit(f"{refs_path}: ref {ref['ref_id']}, sentence {index}: no string \"sent\"")
                self.by_image.setdefault(ref["image_id"], []).append(
                    {"key": f"{ref['image_id']}/{ref['ref_id']}/{index}", "image_id": ref["image_id"],
                     "ann_id": ref["ann_id"], "sentence": sentence["sent"]})
        self.samples = [s for group in self.by_image.values() for s in group]
        if not self.samples:
            raise SystemExit(f"{refs_path}: no sentences in split {split!r}")

    def image_path(self, image_id: Any) -> str:
        return os.path.join(self.image_dir, self.images[image_id]["file_name"])

    def ground_truth(self, ann_id: Any) -> np.ndarray:
        ann = self.annotations[ann_id]
        where = f"{self.instances_path}: annotation {ann_id}"
        if ann.get("image_id") not in self.images:
            raise SystemExit(f"{where}: its image {ann.get('image_id')} is not in \"images\"")
        h, w = image_size(self.images[ann["image_id"]], f"{self.instances_path}: image {ann['image_id']}")
        if "segmentation" not in ann:
            raise SystemExit(f"{where}: no \"segmentation\"")
        segmentation = ann["segmentation"]
        try:
            if isinstance(segmentation, dict):
                return masks.decode(masks.segmentation_to_rle(segmentation, h, w))
            total = np.zeros((h, w), np.uint8)
            # An empty list is an empty mask, as upstream's RefCOCO loader has it.
            for rle in masks.polygons_to_rles(segmentation, h, w) if segmentation else []:
                total += masks.decode(rle)
        except (ValueError, TypeError) as e:
            raise SystemExit(f"{where}: {e}") from None
        return masks.decode_counts(masks.encode_counts(total), h, w)  # upstream's RLE round trip


def read_instances(path: str) -> tuple[dict[Any, dict[str, Any]], dict[Any, dict[str, Any]]]:
    """instances.json's images and annotations by id, or SystemExit naming what is missing."""
    instances = runner.read_json(path)
    for key in ("images", "annotations"):
        if not isinstance(instances, dict) or not isinstance(instances.get(key), list):
            raise SystemExit(f"{path}: no \"{key}\" list")
        for entry in instances[key]:
            if not isinstance(entry, dict) or "id" not in entry:
                raise SystemExit(f"{path}: every entry of \"{key}\" must be an object with an \"id\"")
    return ({img["id"]: img for img in instances["images"]}, {ann["id"]: ann for ann in instances["annotations"]})


def check_ref(ref: Any, refs_path: str, instances_path: str, images: dict, annotations: dict) -> None:
    """A ref's fields, and that its annotation and image are in instances.json."""
    if not isinstance(ref, dict) or not all(k in ref for k in ("ref_id", "ann_id", "image_id")):
        raise SystemExit(f"{refs_path}: every ref needs \"ref_id\", \"ann_id\" and \"image_id\"")
    if not isinstance(ref.get("sentences"), list):
        raise SystemExit(f"{refs_path}: ref {ref['ref_id']}: no \"sentences\" list")
    if ref["image_id"] not in images:
        raise SystemExit(f"{instances_path}: no image {ref['image_id']} (of ref {ref['ref_id']} in {refs_path})")
    if ref["ann_id"] not in annotations:
        raise SystemExit(f"{instances_path}: no annotation {ref['ann_id']} (of ref {ref['ref_id']} in {refs_path})")
    image = images[ref["image_id"]]
    where = f"{instances_path}: image {ref['image_id']}"
    image_size(image, where)
    if not isinstance(image.get("file_name"), str):
        raise SystemExit(f"{where}: no string \"file_name\"")


def image_size(image: dict[str, Any], where: str) -> tuple[int, int]:
    h, w = image.get("height"), image.get("width")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (h, w)):
        raise SystemExit(f"{where}: no integer \"height\" and \"width\"")
    return h, w


def run(args: argparse.Namespace) -> dict[str, Any]:
    data = RefCoco(args.data, args.dataset, args.split, args.images)
    out = args.out or f"eval-refcoco-{args.dataset}-{args.split}"
    samples = runner.select_samples(data.samples, args)
    if not args.score_only:
        model = runner.load_model(args)
        options = runner.generation_options(args)

        def predict(sample: dict[str, Any]) -> dict[str, Any]:
            result = model.predict_forward(image=data.image_path(sample["image_id"]),
                                           text=PROMPT.format(sample["sentence"]), **options)
            mask = result["prediction_masks"][0][0] if result["prediction_masks"] else None
            return {"image_id": sample["image_id"], "sentence": sample["sentence"], "prompt": PROMPT.format(sample["sentence"]),
                    "prediction": result["prediction"], "mask": masks.encode(mask) if mask is not None else None}

        runner.run_logged(samples, out, args, predict, f"{args.dataset} {args.split}")
    return score(data, out, args)


def score(data: RefCoco, out: str, args: argparse.Namespace) -> dict[str, Any]:
    sources: dict[str, str] = {}
    predictions = runner.all_predictions(out, sources)
    runner.require_predictions(len(predictions), out, args)
    wanted = {s["key"] for s in runner.select_samples(data.samples, argparse.Namespace(limit=args.limit, shard="0/1"))}
    meter = metrics.ReferringImageScore()
    scored = 0
    for group in data.by_image.values():
        group = [s for s in group if s["key"] in wanted and s["key"] in predictions]
        if not group:
            continue
        preds, targets = [], []
        for sample in group:
            record = predictions[sample["key"]]
            what = f"{sources[sample['key']]}: expression {sample['key']}"
            if "mask" not in record:
                raise SystemExit(f"{what}: no \"mask\"")
            preds.append(runner.decode_rle(record["mask"], what) if record["mask"] is not None else None)
            targets.append(data.ground_truth(sample["ann_id"]))
            if preds[-1] is not None:
                runner.check_mask_size(preds[-1], *targets[-1].shape, f"{what}: the prediction")
        meter.add_image(preds, targets)
        scored += len(group)
    result = {"benchmark": "refcoco", "dataset": args.dataset, "split": args.split, "samples": scored,
              "of": len(wanted), "cIoU": meter.ciou, "gIoU": meter.giou}
    runner.write_json(os.path.join(out, "metrics.json"), result)
    return result
