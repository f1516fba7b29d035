"""Training data for `sa2va train` from the layouts of Sa2VA's data preparation.

refcoco   RefCOCO / RefCOCO+ / RefCOCOg (DATA/ref_seg/<dataset>/refs(unc|umd).p + instances.json,
          COCO train2014 images): per image, --per-image expressions drawn with replacement from its
          (object, sentence) pairs, each a question from SEG_QUESTIONS (the sentence as written,
          REFER's "raw", lower-cased, final '.' dropped) and an answer from ANSWER_LIST, as one conversation ("<image>\\n" before the
          first question); masks are the objects' COCO polygons or RLE as stored.
refvos    MeViS (mevis/train), ReVOS (revos, meta_expressions_train_.json), Ref-YouTube-VOS
          (rvos/train, mask_dict.pkl) under DATA/video_datas: per video, --per-video expressions drawn
          with replacement, --frames frames drawn without replacement (with, when the video has at
          most frames + 1) and sorted; an expression holding '?' is the question as written, others
          go through SEG_QUESTIONS (every '.' removed, stripped, lower-cased); the frames come first ("<image>" then the question, no newline, as
          upstream's stripped frame tokens); a mask per expression and frame: the union of its
          annotations (an absent one is empty), as COCO RLE. Ref-YouTube-VOS expressions carry no
          annotation ids: they are numbered 0, 1, ... over the videos in the file's order and each
          video's expression ids sorted, as upstream numbers its mask_dict.pkl.
Upstream draws these at every visit of a sample; here each line is one draw, and --repeats writes
that many independent draws per image or video (upstream lists RefCOCO 4x, MeViS 4x, ReVOS 10x,
Ref-YouTube-VOS 4x).
"""

from __future__ import annotations

import json
import os
import random
from typing import Any, Iterator

import numpy as np

from ..eval import masks, runner
from ..eval.refcoco import SPLIT_BY, dataset_dir, load_pickle, split_refs
from ..eval.refvos import load_annotations
from . import templates


def refcoco_samples(data: str, dataset: str, split: str, images: str | None, per_image: int,
                    repeats: int, rng: random.Random) -> Iterator[dict[str, Any]]:
    root = dataset_dir(data, dataset)
    refs_path = os.path.join(root, f"refs({SPLIT_BY[dataset]}).p")
    refs = split_refs(load_pickle(refs_path), split)
    if not refs:
        raise SystemExit(f"{refs_path}: no refs in split {split!r}")
    instances_path = os.path.join(root, "instances.json")
    instances = runner.read_json(instances_path)
    image_info = {img["id"]: img for img in instances["images"]}
    annotations = {ann["id"]: ann for ann in instances["annotations"]}
    image_dir = images or os.path.join(data, "glamm_data", "images", "coco2014", "train2014")
    pairs: dict[Any, list[tuple[Any, str]]] = {}
    for ref in refs:
        for sentence in ref["sentences"]:
            # "raw" is the sentence as written (upstream's choice); "sent" REFER's tokens without punctuation.
            pairs.setdefault(ref["image_id"], []).append((ref["ann_id"], sentence.get("raw", sentence["sent"])))
        if ref["ann_id"] not in annotations or ref["image_id"] not in image_info:
            raise SystemExit(f"{instances_path}: no annotation {ref['ann_id']} or image {ref['image_id']} of ref "
                             f"{ref.get('ref_id')} in {refs_path}")
    for _ in range(repeats):
        for image_id, choices in pairs.items():
            picked = [choices[rng.randrange(len(choices))] for _ in range(per_image)]
            conversation, sample_masks = [], []
            for t, (ann_id, sentence) in enumerate(picked):
                question = templates.image_question(sentence, rng.choice(templates.SEG_QUESTIONS))
                conversation.append({"from": "human", "value": ("<image>\n" if t == 0 else "") + question})
                conversation.append({"from": "gpt", "value": rng.choice(templates.ANSWER_LIST)})
                segmentation = annotations[ann_id]["segmentation"]
                if isinstance(segmentation, dict):  # crowd RLE: the size from the image
                    img = image_info[image_id]
                    segmentation = masks.segmentation_to_rle(segmentation, img["height"], img["width"])
                sample_masks.append(segmentation)
            yield {"image": os.path.abspath(os.path.join(image_dir, image_info[image_id]["file_name"])),
                   "conversations": conversation, "masks": sample_masks}


def refvos_layout(data: str, dataset: str) -> tuple[str, str, str]:
    """(frames folder, expressions file, mask file) of a training split."""
    root = os.path.join(data, "video_datas") if os.path.isdir(os.path.join(data, "video_datas")) else data
    if dataset == "mevis":
        base = os.path.join(root, "mevis", "train")
        return os.path.join(base, "JPEGImages"), os.path.join(base, "meta_expressions.json"), os.path.join(base, "mask_dict.json")
    if dataset == "revos":
        base = os.path.join(root, "revos")
        frames = os.path.join(base, "JPEGImages") if os.path.isdir(os.path.join(base, "JPEGImages")) else base
        return frames, os.path.join(base, "meta_expressions_train_.json"), os.path.join(base, "mask_dict.json")
    if dataset == "refytvos":
        base = os.path.join(root, "rvos")
        return (os.path.join(base, "train", "JPEGImages"),
                os.path.join(base, "meta_expressions", "train", "meta_expressions.json"),
                os.path.join(base, "mask_dict.pkl"))
    raise SystemExit(f"unknown video dataset {dataset!r}")


def _union(rles: list[Any], shape: tuple[int, int] | None) -> tuple[np.ndarray | None, tuple[int, int] | None]:
    total = None
    for rle in rles:
        if rle is None:
            continue
        m = masks.decode(masks.segmentation_to_rle(rle, *rle["size"]))
        total = m if total is None else (total | m)
        shape = m.shape
    return total, shape


def refvos_samples(data: str, dataset: str, frames: int, per_video: int, repeats: int,
                   rng: random.Random) -> Iterator[dict[str, Any]]:
    frames_dir, meta_path, mask_path = refvos_layout(data, dataset)
    for path in (meta_path, mask_path):
        if not os.path.exists(path):
            raise SystemExit(f"{path}: missing ({dataset} training data)")
    meta = load_annotations(meta_path)
    if not isinstance(meta, dict) or not isinstance(meta.get("videos"), dict):
        raise SystemExit(f"{meta_path}: no \"videos\" object")
    videos = meta["videos"]
    mask_dict = load_annotations(mask_path)
    if dataset == "refytvos":  # anno_id: a count over the videos in file order, each one's expressions sorted
        count = 0
        for info in videos.values():
            for key in sorted(info["expressions"]):
                info["expressions"][key]["anno_id"] = [str(count)]
                count += 1
    for video, info in videos.items():  # every expression's masks are there, before anything is written
        for exp_id, exp in info.get("expressions", {}).items():
            if "anno_id" not in exp:
                raise SystemExit(f"{meta_path}: video {video}, expression {exp_id}: no anno_id")
            for a in exp["anno_id"]:
                if str(a) not in mask_dict or len(mask_dict[str(a)]) < len(info.get("frames", [])):
                    raise SystemExit(f"{mask_path}: annotation {a} of video {video} is missing or has fewer "
                                     f"than its {len(info.get('frames', []))} frames")
    for _ in range(repeats):
        for video, info in videos.items():
            names = sorted(info["frames"])
            expressions = [info["expressions"][k] for k in sorted(info["expressions"])]
            if not names or not expressions:
                continue
            if len(names) > frames + 1:
                chosen = sorted(rng.sample(range(len(names)), frames))
            else:
                chosen = sorted(rng.randrange(len(names)) for _ in range(frames))
            picked = [expressions[rng.randrange(len(expressions))] for _ in range(per_video)]
            conversation, sample_masks = [], []
            for t, exp in enumerate(picked):
                question = templates.video_question(exp["exp"], rng.choice(templates.SEG_QUESTIONS))
                conversation.append({"from": "human", "value": ("<image>" if t == 0 else "") + question})
                conversation.append({"from": "gpt", "value": rng.choice(templates.ANSWER_LIST)})
                anno_ids = exp["anno_id"]
                per_frame, shape = [], None
                for f in chosen:
                    m, shape = _union([mask_dict[str(a)][f] for a in anno_ids], shape)
                    per_frame.append(m)
                if shape is None:  # no annotation anywhere: the frame's size from the picture
                    from PIL import Image

                    with Image.open(os.path.join(frames_dir, video, names[chosen[0]] + ".jpg")) as im:
                        shape = (im.height, im.width)
                sample_masks.append([masks.encode(m if m is not None else np.zeros(shape, np.uint8))
                                     for m in per_frame])
            yield {"frames": [os.path.abspath(os.path.join(frames_dir, video, names[f] + ".jpg")) for f in chosen],
                   "conversations": conversation, "masks": sample_masks}


def write_jsonl(path: str, samples: Iterator[dict[str, Any]]) -> int:
    """Writes beside, then renames: a conversion that fails midway leaves an earlier file as it was."""
    count = 0
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    partial = path + ".partial"
    try:
        with open(partial, "w", encoding="utf-8") as f:
            for sample in samples:
                f.write(json.dumps(sample) + "\n")
                count += 1
    except BaseException:
        if os.path.exists(partial):
            os.remove(partial)
        raise
    os.replace(partial, path)
    return count
