"""Region captioning (RefCOCOg regions as visual prompts): BLEU, METEOR, ROUGE-L, CIDEr as upstream scores it.

Layout (Sa2VA's data preparation):
  DATA/region_caption/refcocog/finetune_refcocog_val_with_mask.json   (COCO: "images", "annotations"
      with "caption" and "segmentation"; each image entry is one region, its annotation the one whose
      "id" is the image's id, as upstream looks it up)
  DATA/glamm_data/images/coco2014/train2014/<file_name>
Every image entry is one sample: the picture with its annotation's segmentation as the one visual
prompt (polygons rasterised and summed, a list of RLE decoded and summed, an empty list an empty
region, as upstream's decode_mask), asked upstream's question; the answer cleaned as upstream's
script cleans it (clean_region_caption). Predictions are kept in OUT/predictions.<i>-of-<N>.jsonl;
OUT/region_cap_pred.json is upstream's results file (image_id, image_file, caption, prediction).
The caption metrics are pycocoevalcap's COCOEvalCap against the annotations' captions, as upstream's
metrics_region_cap.py computes them; they need pycocoevalcap (and Java for METEOR): without it the
captions are kept and metrics.json says the metrics were not computed.
"""

from __future__ import annotations

import argparse
import os
import re
from typing import Any

import numpy as np

from . import masks, runner

QUESTION = "Please give me a short description of the region in the picture marked by region1."
PROMPT = "<image>\n" + QUESTION
ANNOTATIONS = os.path.join("region_caption", "refcocog", "finetune_refcocog_val_with_mask.json")
IMAGES = os.path.join("glamm_data", "images", "coco2014", "train2014")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    runner.add_common_arguments(parser)
    parser.add_argument("--annotations", help=f"the COCO file of regions and captions (default: DATA/{ANNOTATIONS})")
    parser.add_argument("--images", help=f"the pictures' folder (default: DATA/{IMAGES})")


def clean_region_caption(prediction: str) -> str:
    """Upstream's cleaning of an answer, step for step (its oddities included: every "is" is removed,
    inside words too, so "this" becomes "th"): "<s>" and newlines removed; "region1", "Region1",
    "The region marked by", "The region marked as", "The region marked", "is", "shows" and ":"
    removed; triple then double spaces made single; the text after the last "ASSISTANT: "; every
    "<...>" tag and "[SEG]" removed; blanks collapsed, "'" then blanks stripped from the ends."""
    text = prediction.replace("<s>", "").replace("\n", "")
    for phrase in ("region1", "Region1", "The region marked by", "The region marked as", "The region marked",
                   "is", "shows", ":"):
        text = text.replace(phrase, "")
    text = text.replace("   ", " ").replace("  ", " ")
    text = text.split("ASSISTANT: ")[-1]
    text = re.sub(r"<.*?>", "", text).replace("[SEG]", "")
    return " ".join(text.split()).strip("'").strip()


def region_mask(segmentation: Any, height: int, width: int, where: str) -> np.ndarray:
    """The visual prompt [height, width] of an annotation's segmentation, as upstream's decode_mask: an
    empty list is an empty region; a list whose first entry is a list is polygons (pycocotools'
    rule for a list: 4 numbers a box), each rasterised and summed; otherwise a list of COCO RLE
    (one object also taken), decoded and summed."""
    if isinstance(segmentation, list) and not segmentation:
        return np.zeros((height, width), bool)
    try:
        if isinstance(segmentation, list) and isinstance(segmentation[0], list):
            rles = masks.polygons_to_rles(segmentation, height, width)
        else:
            parts = segmentation if isinstance(segmentation, list) else [segmentation]
            rles = []
            for rle in parts:
                if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
                    raise ValueError("a segmentation must be polygons or COCO RLE {\"size\": [h, w], \"counts\": ...}")
                rles.append(masks.segmentation_to_rle(rle, height, width))
        total = np.zeros((height, width), bool)
        for rle in rles:
            part = runner.decode_rle(rle, where)
            runner.check_mask_size(part, height, width, f"{where}: a region")
            total |= part.astype(bool)
        return total
    except ValueError as e:
        raise SystemExit(f"{where}: {e}") from None


class RegionCaptions:
    def __init__(self, data: str, annotations: str | None, images: str | None) -> None:
        self.path = annotations or os.path.join(data, ANNOTATIONS)
        if not os.path.exists(self.path):
            raise SystemExit(f"{self.path}: missing (region captions with masks)")
        coco = runner.read_json(self.path)
        for key in ("images", "annotations"):
            if not isinstance(coco, dict) or not isinstance(coco.get(key), list):
                raise SystemExit(f"{self.path}: no \"{key}\" list")
            if not all(isinstance(entry, dict) and "id" in entry for entry in coco[key]):
                raise SystemExit(f"{self.path}: every entry of \"{key}\" needs an \"id\"")
        if not coco["images"]:  # scoring nothing would print 0 as if it were a result
            raise SystemExit(f"{self.path}: no images")
        self.annotations = {ann["id"]: ann for ann in coco["annotations"]}
        self.image_dir = images or os.path.join(data, IMAGES)
        self.samples = []
        for image in coco["images"]:
            where = f"{self.path}: image {image['id']}"
            for field in ("file_name", "height", "width"):
                if field not in image:
                    raise SystemExit(f"{where}: no \"{field}\"")
            if image["id"] not in self.annotations or "segmentation" not in self.annotations[image["id"]]:
                raise SystemExit(f"{where}: no annotation of the same id with a \"segmentation\"")
            self.samples.append({"key": str(image["id"]), "image_id": image["id"], "file": image["file_name"],
                                 "height": int(image["height"]), "width": int(image["width"])})


def run(args: argparse.Namespace) -> dict[str, Any]:
    data = RegionCaptions(args.data, args.annotations, args.images)
    out = args.out or "eval-regioncap"
    samples = runner.select_samples(data.samples, args)
    if not args.score_only:
        model = runner.load_model(args)
        options = runner.generation_options(args)

        def predict(sample: dict[str, Any]) -> dict[str, Any]:
            where = f"{data.path}: image {sample['image_id']}"
            region = region_mask(data.annotations[sample["image_id"]]["segmentation"], sample["height"],
                                 sample["width"], where)
            result = model.predict_forward(image=os.path.join(data.image_dir, sample["file"]), text=PROMPT,
                                           mask_prompts=region[None], **options)
            return {"image_id": sample["image_id"], "image_file": sample["file"],
                    "caption": clean_region_caption(result["prediction"]), "prediction": result["prediction"]}

        runner.run_logged(samples, out, args, predict, "region captions")
    return score(data, out, args)


def score(data: RegionCaptions, out: str, args: argparse.Namespace) -> dict[str, Any]:
    sources: dict[str, str] = {}
    predictions = runner.all_predictions(out, sources)
    runner.require_predictions(len(predictions), out, args)
    split = runner.select_samples(data.samples, argparse.Namespace(limit=args.limit, shard="0/1"))
    results = []
    for sample in (s for s in split if s["key"] in predictions):
        record = predictions[sample["key"]]
        if not isinstance(record.get("caption"), str):
            raise SystemExit(f"{sources[sample['key']]}: image {sample['key']}: no \"caption\" text")
        results.append({"image_id": sample["image_id"], "image_file": sample["file"], "caption": record["caption"],
                        "prediction": record.get("prediction", record["caption"])})
    runner.write_json(os.path.join(out, "region_cap_pred.json"), results)
    result: dict[str, Any] = {"benchmark": "regioncap", "samples": len(results), "of": len(split)}
    runner.write_json(os.path.join(out, "metrics.json"), result)
    try:
        result["captions"] = caption_metrics(data.path, results)
    except ImportError:
        result["captions"] = "not computed: needs pycocoevalcap (and Java for METEOR)"
    except Exception as e:  # Java missing, METEOR or SPICE failing: the captions are kept
        result["captions"] = f"not computed: {type(e).__name__}: {e}"
    runner.write_json(os.path.join(out, "metrics.json"), result)
    return result


def caption_metrics(annotations: str, results: list[dict[str, Any]]) -> dict[str, float]:
    from pycocoevalcap.eval import COCOEvalCap  # type: ignore
    from pycocotools.coco import COCO  # type: ignore
    coco = COCO(annotations)
    result = coco.loadRes([{"image_id": r["image_id"], "caption": r["caption"]} for r in results])
    evaluator = COCOEvalCap(coco, result)
    evaluator.params["image_id"] = result.getImgIds()
    evaluator.evaluate()
    return {k: float(v) for k, v in evaluator.eval.items()}
