"""Referring video object segmentation: MeViS, Ref-YouTube-VOS, ReVOS, Ref-DAVIS17 (J, F, J&F).

Layouts (Sa2VA's data preparation), under DATA/video_datas/:
  mevis     mevis/<split>/JPEGImages/<video>/<frame>.jpg, meta_expressions.json, mask_dict.json
            (split valid_u has ground truth; valid is scored by the online server: --submit)
  refytvos  rvos/valid/JPEGImages/<video>/..., rvos/meta_expressions/valid/meta_expressions.json
            (no ground truth: --submit)
  revos     revos/<video>/<frame>.jpg (or revos/JPEGImages/<video>/), revos/meta_expressions_valid_.json,
            revos/mask_dict.json, revos/mask_dict_foreground.json
  davis     davis17/valid/JPEGImages/<video>/..., davis17/meta_expressions/valid/meta_expressions.json,
            davis17/valid/mask_dict.pkl (or mask_dict.json)
Every expression of every video is one sample (videos in file order, expression ids sorted as
strings); the model sees all frames (sorted by name) with upstream's "<image>\\nPlease segment {exp}."
(an expression holding '?' is passed as it is, as upstream does; the model then puts the video first,
as on any first turn). The first [SEG]'s masks are kept, all-empty frames when there is none.
mask_dict maps an annotation id to one COCO RLE (or null: absent) per frame; an expression's ground
truth is the sum of its annotations' masks. For Ref-DAVIS17 the annotation ids are numbered over the
sorted videos and their sorted expression ids, as upstream's scorer does.
Outputs: OUT/results.json in upstream's layout {video: {exp_id: {index, video_id, exp_id,
text_prediction, frames, exp, prediction_masks: [RLE per frame]}}}; with --submit also
OUT/Annotations/<video>/<exp_id>/<frame>.png (0/255) for the online servers.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import numpy as np

from . import masks, metrics, runner

PROMPT = "<image>\nPlease segment {}."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    runner.add_common_arguments(parser)
    parser.add_argument("--dataset", required=True, choices=["mevis", "refytvos", "revos", "davis"])
    parser.add_argument("--split", default=None, help="mevis: valid_u (default, scored here) or valid")
    parser.add_argument("--submit", action="store_true", help="also write Annotations/ PNGs for the online server")
    parser.add_argument("--jobs", type=int, default=runner.default_jobs(),
                        help="processes scoring expressions (default: the CPUs this process may use)")


def load_annotations(path: str) -> Any:
    """A JSON or (by its .pkl suffix) pickle annotation file."""
    if path.endswith(".pkl"):
        return runner.read_pickle(path)
    return runner.read_json(path)


def _first(*paths: str) -> str | None:
    return next((p for p in paths if os.path.exists(p)), None)


class RefVos:
    def __init__(self, data: str, dataset: str, split: str | None) -> None:
        root = os.path.join(data, "video_datas") if os.path.isdir(os.path.join(data, "video_datas")) else data
        self.dataset = dataset
        self.mask_dict = None
        self.foreground = None
        if dataset == "mevis":
            split = split or "valid_u"
            base = os.path.join(root, "mevis", split)
            self.frames_dir = os.path.join(base, "JPEGImages")
            meta = os.path.join(base, "meta_expressions.json")
            mask_path = _first(os.path.join(base, "mask_dict.json"))
        elif dataset == "refytvos":
            split = split or "valid"
            self.frames_dir = os.path.join(root, "rvos", split, "JPEGImages")
            meta = os.path.join(root, "rvos", "meta_expressions", split, "meta_expressions.json")
            mask_path = None
        elif dataset == "revos":
            split = split or "valid"
            base = os.path.join(root, "revos")
            self.frames_dir = base if not os.path.isdir(os.path.join(base, "JPEGImages")) else os.path.join(base, "JPEGImages")
            meta = os.path.join(base, f"meta_expressions_{split}_.json")
            mask_path = _first(os.path.join(base, "mask_dict.json"))
            fg = os.path.join(base, "mask_dict_foreground.json")
            if mask_path and not os.path.exists(fg):
                raise SystemExit(f"{fg}: missing (ReVOS' robustness score needs it)")
            self.foreground = load_annotations(fg) if mask_path else None
        else:
            split = split or "valid"
            base = os.path.join(root, "davis17")
            self.frames_dir = os.path.join(base, split, "JPEGImages")
            meta = os.path.join(base, "meta_expressions", split, "meta_expressions.json")
            mask_path = _first(os.path.join(base, split, "mask_dict.pkl"), os.path.join(base, split, "mask_dict.json"))
        if not os.path.exists(meta):
            raise SystemExit(f"{meta}: missing ({dataset} expressions)")
        # Splits scored here must have their ground truth (MeViS valid and Ref-YouTube-VOS are scored online).
        if mask_path is None and (dataset in ("revos", "davis") or (dataset == "mevis" and split == "valid_u")):
            where = os.path.join(base, split, "mask_dict.pkl") if dataset == "davis" else os.path.join(base, "mask_dict.json")
            raise SystemExit(f"{where}: missing ({dataset} {split} ground truth)")
        self.split = split
        self.meta_path, self.mask_path = meta, mask_path
        self.foreground_path = fg if dataset == "revos" else None
        self.videos = check_videos(load_annotations(meta), meta, dataset, mask_path is not None)
        if mask_path:
            self.mask_dict = load_annotations(mask_path)
            if not isinstance(self.mask_dict, dict):
                raise SystemExit(f"{mask_path}: expected {{annotation id: [RLE or null per frame]}}")
        if self.foreground is not None and not isinstance(self.foreground, dict):
            raise SystemExit(f"{fg}: expected {{video: {{\"masks_rle\": [RLE per frame]}}}}")
        if dataset == "davis":  # annotation ids numbered as upstream's scorer numbers them
            count = 0
            for video in sorted(self.videos):
                for exp_id in sorted(self.videos[video]["expressions"]):
                    self.videos[video]["expressions"][exp_id]["anno_id"] = [count]
                    count += 1
        self.samples = []
        for video, info in self.videos.items():
            for exp_id in sorted(info["expressions"]):
                exp = info["expressions"][exp_id]["exp"]
                self.samples.append({"key": f"{video}/{exp_id}", "video": video, "exp_id": exp_id, "exp": exp,
                                     "frames": sorted(info["frames"])})
        if not self.samples:  # scoring nothing would print 0 as if it were a result
            raise SystemExit(f"{meta}: no expressions")

    def frame_path(self, video: str, frame: str) -> str:
        return os.path.join(self.frames_dir, video, frame + ".jpg")

    @property
    def has_ground_truth(self) -> bool:
        return self.mask_dict is not None


def check_videos(meta: Any, path: str, dataset: str, scored: bool) -> dict[str, Any]:
    """The expressions file's videos, each field the run or the scoring reads checked, with the file,
    video and expression named."""
    if not isinstance(meta, dict) or not isinstance(meta.get("videos"), dict):
        raise SystemExit(f"{path}: no \"videos\" object")
    for video, info in meta["videos"].items():
        where = f"{path}: video {video}"
        if not isinstance(info, dict):
            raise SystemExit(f"{where}: a video must be an object")
        frames = info.get("frames")
        if not isinstance(frames, list) or not frames or not all(isinstance(f, str) for f in frames):
            raise SystemExit(f"{where}: no \"frames\" list (frame names)")
        if not isinstance(info.get("expressions"), dict):
            raise SystemExit(f"{where}: no \"expressions\" object")
        if dataset == "revos" and scored:  # ReVOS scores at the size its expressions file gives
            if not all(isinstance(info.get(k), int) and not isinstance(info.get(k), bool) and info[k] > 0
                       for k in ("height", "width")):
                raise SystemExit(f"{where}: no integer \"height\" and \"width\" (ReVOS scores at them)")
        for exp_id, exp in info["expressions"].items():
            what = f"{where}, expression {exp_id}"
            if not isinstance(exp, dict) or not isinstance(exp.get("exp"), str):
                raise SystemExit(f"{what}: no string \"exp\"")
            if scored and dataset != "davis" and not isinstance(exp.get("anno_id"), list):
                raise SystemExit(f"{what}: no \"anno_id\" list")
    return meta["videos"]


def prompt_for(exp: str) -> str:
    return PROMPT.format(exp) if "?" not in exp else exp


def run(args: argparse.Namespace) -> dict[str, Any]:
    data = RefVos(args.data, args.dataset, args.split)
    out = args.out or f"eval-refvos-{args.dataset}-{data.split}"
    samples = runner.select_samples(data.samples, args)
    if args.jobs < 1:
        raise SystemExit(f"--jobs {args.jobs}: need at least 1")
    if not args.score_only:
        model = runner.load_model(args)
        options = runner.generation_options(args)

        def predict(sample: dict[str, Any]) -> dict[str, Any]:
            paths = [data.frame_path(sample["video"], f) for f in sample["frames"]]
            prompt = prompt_for(sample["exp"])
            stream = model.predict_stream(video=paths, text=prompt, **options)
            answer = stream.answer()
            rles: list[dict[str, Any]] = []
            for _, frame_masks in stream:
                rles.append(masks.encode(frame_masks[0]))  # the first [SEG]
            if not rles:  # no [SEG]: empty masks at the video's size
                from PIL import Image
                with Image.open(paths[0]) as first:
                    w, h = first.size
                rles = [masks.encode(np.zeros((h, w), np.uint8)) for _ in paths]
            return {"video_id": sample["video"], "exp_id": sample["exp_id"], "text_prediction": answer["prediction"],
                    "frames": sample["frames"], "exp": prompt, "prediction_masks": rles}

        runner.run_logged(samples, out, args, predict, f"{args.dataset} {data.split}")
        del predict, model  # the scoring processes fork: without the model's memory and threads
    return score(data, out, args)


def save_annotations(out: str, sample: dict[str, Any], record: dict[str, Any], source: str) -> None:
    from PIL import Image
    rles = prediction_masks(sample, record, source)
    folder = os.path.join(out, "Annotations", sample["video"], sample["exp_id"])
    os.makedirs(folder, exist_ok=True)
    for k, (frame, rle) in enumerate(zip(sample["frames"], rles)):
        mask = runner.decode_rle(rle, f"{source}: expression {sample['key']}, frame {k}")
        image = Image.fromarray(mask * np.uint8(255), mode="L")
        runner.atomic_write(os.path.join(folder, frame + ".png"), lambda f: image.save(f, format="PNG"), binary=True)


def write_submission(data: RefVos, out: str, args: argparse.Namespace, predictions: dict[str, dict[str, Any]],
                     sources: dict[str, str]) -> None:
    """Annotations/ PNGs from the kept predictions of this run's samples (its --shard and --limit), so
    that a resumed or --score-only run writes them as a run that predicted them would."""
    chosen = [s for s in runner.select_samples(data.samples, args) if s["key"] in predictions]
    runner.map_in_processes(lambda s: save_annotations(out, s, predictions[s["key"]], sources[s["key"]]), chosen,
                            args.jobs, "writing Annotations", args.quiet)


def results_json(data: RefVos, predictions: dict[str, dict[str, Any]]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for index, sample in enumerate(data.samples):
        record = predictions.get(sample["key"])
        if record is None:
            continue
        item = {k: v for k, v in record.items() if k != "key"}
        item["index"] = index
        results.setdefault(sample["video"], {})[sample["exp_id"]] = item
    return results


def prediction_masks(sample: dict[str, Any], record: dict[str, Any], source: str) -> list[Any]:
    """A kept prediction's masks, one per frame of the expression's video at least."""
    rles = record.get("prediction_masks")
    what = f"{source}: expression {sample['key']}"
    if not isinstance(rles, list):
        raise SystemExit(f"{what}: no \"prediction_masks\" list")
    if len(rles) < len(sample["frames"]):
        raise SystemExit(f"{what}: {len(rles)} predicted masks for {len(sample['frames'])} frames")
    return rles


def expression_scores(data: RefVos, sample: dict[str, Any], record: dict[str, Any], source: str) -> tuple:
    video = data.videos[sample["video"]]
    frames = video["frames"]  # upstream indexes ground truth and predictions by this list's order
    anno_ids = video["expressions"][sample["exp_id"]]["anno_id"]
    what = f"expression {sample['key']}"
    predicted = prediction_masks(sample, record, source)
    for anno_id in anno_ids:
        entry = data.mask_dict.get(str(anno_id))
        if not isinstance(entry, list) or len(entry) < len(frames):
            raise SystemExit(f"{data.mask_path}: annotation {anno_id} ({what}) is missing or has fewer than its "
                             f"{len(frames)} frames")

    def gt_mask(anno_id: Any, k: int) -> np.ndarray:
        return runner.decode_rle(data.mask_dict[str(anno_id)][k], f"{data.mask_path}: annotation {anno_id}, "
                                                                   f"frame {k} ({what})")

    if data.dataset == "revos":
        h, w = video["height"], video["width"]
        size_of = f"video (\"height\" and \"width\" in {data.meta_path})"
    else:  # the ground truth's size; where the object is absent from every frame, the prediction's
        first = next(((a, k) for k in range(len(frames)) for a in anno_ids if data.mask_dict[str(a)][k]), None)
        h, w = gt_mask(*first).shape if first else runner.decode_rle(predicted[0], f"{source}: {what}, frame 0").shape
        size_of = "ground truth"
    gt = np.zeros((len(frames), h, w), np.uint8)
    pred = np.zeros((len(frames), h, w), np.uint8)
    for k in range(len(frames)):
        for anno_id in anno_ids:
            if data.mask_dict[str(anno_id)][k]:
                decoded = gt_mask(anno_id, k)
                if decoded.shape != (h, w):
                    raise SystemExit(f"{data.mask_path}: annotation {anno_id}, frame {k} ({what}): a "
                                     f"{decoded.shape[0]}x{decoded.shape[1]} mask for a {h}x{w} {size_of}")
                gt[k] += decoded
        decoded = runner.decode_rle(predicted[k], f"{source}: {what}, frame {k}")
        if decoded.shape != (h, w):
            raise SystemExit(f"{source}: {what}, frame {k}: the prediction: a {decoded.shape[0]}x{decoded.shape[1]} "
                             f"mask for a {h}x{w} {size_of}")
        pred[k] += decoded
    j = float(metrics.frame_j(gt, pred).mean())
    f = float(metrics.frame_f(gt, pred).mean())
    if data.dataset != "revos":
        return j, f
    entry = data.foreground.get(sample["video"])
    fg_rles = entry.get("masks_rle") if isinstance(entry, dict) else None
    if not isinstance(fg_rles, list) or len(fg_rles) < len(frames):
        raise SystemExit(f"{data.foreground_path}: video {sample['video']}: no \"masks_rle\" list of its "
                         f"{len(frames)} frames")
    fg = np.zeros_like(gt)
    for k in range(len(frames)):
        decoded = runner.decode_rle(fg_rles[k], f"{data.foreground_path}: video {sample['video']}, frame {k}")
        if decoded.shape != (h, w):
            raise SystemExit(f"{data.foreground_path}: video {sample['video']}, frame {k}: a {decoded.shape[0]}x"
                             f"{decoded.shape[1]} mask for a {h}x{w} {size_of}")
        fg[k] = decoded
    a = float(metrics.frame_accuracy(gt, pred).mean())
    r = float(metrics.frame_robustness(gt, pred, fg).mean())
    return j, f, a, r, video["expressions"][sample["exp_id"]].get("type_id", 0)


def score(data: RefVos, out: str, args: argparse.Namespace) -> dict[str, Any]:
    sources: dict[str, str] = {}
    predictions = runner.all_predictions(out, sources)
    runner.require_predictions(len(predictions), out, args)
    runner.write_json(os.path.join(out, "results.json"), results_json(data, predictions))
    if args.submit:
        write_submission(data, out, args, predictions, sources)
    wanted = runner.select_samples(data.samples, argparse.Namespace(limit=args.limit, shard="0/1"))
    done = [s for s in wanted if s["key"] in predictions]
    result: dict[str, Any] = {"benchmark": "refvos", "dataset": data.dataset, "split": data.split,
                              "samples": len(done), "of": len(wanted)}
    if not data.has_ground_truth:
        result["note"] = "no ground truth in this split: submit OUT/Annotations (--submit) to the online server"
    else:
        per_expression = runner.map_in_processes(lambda s: expression_scores(data, s, predictions[s["key"]],
                                                                             sources[s["key"]]), done,
                                                 args.jobs, f"scoring {data.dataset} {data.split}", args.quiet)
        if data.dataset == "revos":
            result.update(metrics.summarize_revos(per_expression))
        else:
            result.update(metrics.summarize_jf(per_expression))
    runner.write_json(os.path.join(out, "metrics.json"), result)
    return result
