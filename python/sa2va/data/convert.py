"""Training data for `sa2va train` from the layouts of Sa2VA's data preparation.

refcoco   RefCOCO / RefCOCO+ / RefCOCOg (DATA/ref_seg/<dataset>/refs(unc|umd).p + instances.json,
          COCO train2014 images): per image, --per-image expressions drawn with replacement from its
          (object, sentence) pairs, each a question from SEG_QUESTIONS (the sentence as written,
          REFER's "raw", lower-cased, final '.' dropped) and an answer from ANSWER_LIST, as one conversation ("<image>\\n" before the
          first question); masks are the objects' COCO polygons (a 4-number entry, a box, as its
          outline: see _polygons) or RLE as stored.
refvos    MeViS (mevis/train), ReVOS (revos, meta_expressions_train_.json), Ref-YouTube-VOS
          (rvos/train, mask_dict.pkl) under DATA/video_datas: per video, --per-video expressions drawn
          with replacement, --frames frames drawn without replacement (with, when the video has at
          most frames + 1) and sorted; an expression holding '?' is the question as written, others
          go through SEG_QUESTIONS (every '.' removed, stripped, lower-cased); the frames come first ("<image>" then the question, no newline, as
          upstream's stripped frame tokens); a mask per expression and frame: the union of its
          annotations (an absent one is empty), as COCO RLE. Ref-YouTube-VOS expressions carry no
          annotation ids: they are numbered 0, 1, ... over the videos in the file's order and each
          video's expression ids sorted, as upstream numbers its mask_dict.pkl.
gcg       grounded captions: GranD-f, RefCOCOg-GCG, Flickr30k-GCG, OpenPSG-GCG (DATA/glamm_data/annotations/
          GranDf_HA_GCG_train.json, RefCOCOg_GCG_train.json, flickr_mergedGT_GCG_train.json,
          OpenPsgGCG_train.json; pictures under glamm_data/images/grandf/train, coco2014/train2014,
          flickr30k/Flickr30K, coco2017): per picture one question from GCG_QUESTIONS after "<image>\n"
          and the caption with each grounded phrase as "<p> phrase </p> [SEG]", the masks in the order
          of the phrases' starts, as upstream's GCG map functions make them; pictures upstream cannot
          train on (no grounded phrase; Flickr: a caption under 3 words, a side under 32 pixels) are
          skipped and counted.
llava     LLaVA-665K image chat (llava_v1_5_mix665k.json, pictures under --images): conversations as
          upstream reads them (leading gpt turns dropped, texts stripped, "<image>" where it stands);
          text-only samples, missing pictures and empty answers are skipped and counted.
refsav    Ref-SAV: Sa2VA's object captions on SA-V videos (DATA/video_datas/sam_v_final_v3.json; the
          annotations, <video>_manual.json, under video_datas/sam_v_full at each video's "anno_path"),
          frames extracted beforehand into --frame-dir/<video name>/NNNNN.jpg (numbered by the original
          frame, as SA-V's extraction script writes every 4th frame; ffmpeg's %05d.jpg from 0 of every
          frame serves too): per video, --per-video objects drawn with replacement, --frames of the
          annotated frames (every 4th video frame) drawn as refvos draws them; "<image>" then the first
          question; --mode long (upstream's) asks "Please segment the object according to the
          description: " + the object's "formated" caption as written, short a SEG_QUESTIONS template
          with one of its "short_caps" (every "A " removed), long_short either, per sample; answers
          from ANSWER_LIST; masks the object's SA-V RLE on each chosen frame. Videos without objects,
          annotation or extracted frames are skipped and counted.
chatunivi ChatUniVi video chat (DATA/video_datas/chat_univi/video_chat.json), frames extracted into
          --frame-dir/<"video" without its extension>/NNNNN.jpg (ffmpeg's %05d.jpg from 0, every
          frame): --frames frames, one drawn from each of that many equal parts of the video (every
          frame when it has no more); human turns with "<image>" removed, paired in order with the gpt
          turns as written, "<image>" before the first; no masks. Samples with an empty answer or
          without extracted frames are skipped and counted.
osprey    Osprey-724K visual prompts (DATA/osprey-724k/Osprey-724K/osprey_conversation.json,
          osprey_part_level.json, osprey_lvis_positive_negative.json, osprey_detail_description.json,
          osprey_short_form.json: --form conversation|part|positive-negative|description|short;
          pictures in the first of DATA/osprey-724k/coco/train2014, val2014, train2017, val2017 that
          holds them): each entry's regions (polygons or RLE) as "regions", its texts as upstream's
          Osprey datasets form them (every '<' and '>' removed; the short form's questions ending in
          "Answer the question using a single word or phrase."; the description form one
          DETAILED_QUESTIONS question per region), "<image>" before the first question; no masks.
          Entries without regions, conversations starting with an answer, empty answers, pictures
          not found and entries whose size is not their picture's are skipped and counted.
Upstream draws these at every visit of a sample; here each line is one draw, and --repeats writes
that many independent draws per image or video (upstream lists RefCOCO 4x, MeViS 4x, ReVOS 10x,
Ref-YouTube-VOS 4x, GranD-f 10x, Ref-SAV 4x).
"""

from __future__ import annotations

import json
import math
import os
import random
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from ..eval import masks, runner
from ..eval.refcoco import SPLIT_BY, check_ref, dataset_dir, image_size, load_pickle, read_instances, split_refs
from ..eval.refvos import load_annotations
from . import templates


def refcoco_samples(data: str, dataset: str, split: str, images: str | None, per_image: int,
                    repeats: int, rng: random.Random) -> Iterator[dict[str, Any]]:
    root = dataset_dir(data, dataset)
    refs_path = os.path.join(root, f"refs({SPLIT_BY[dataset]}).p")
    refs = split_refs(load_pickle(refs_path), split, refs_path)
    if not refs:
        raise SystemExit(f"{refs_path}: no refs in split {split!r}")
    instances_path = os.path.join(root, "instances.json")
    image_info, annotations = read_instances(instances_path)
    image_dir = images or os.path.join(data, "glamm_data", "images", "coco2014", "train2014")
    pairs: dict[Any, list[tuple[Any, str]]] = {}
    segmentations: dict[Any, Any] = {}  # by annotation id, checked once
    for ref in refs:
        check_ref(ref, refs_path, instances_path, image_info, annotations)
        for sentence in ref["sentences"]:
            # "raw" is the sentence as written (upstream's choice); "sent" REFER's tokens without punctuation.
            text = sentence.get("raw", sentence.get("sent")) if isinstance(sentence, dict) else None
            if not isinstance(text, str):
                raise SystemExit(f"{refs_path}: ref {ref['ref_id']}: a sentence needs \"raw\" or \"sent\"")
            pairs.setdefault(ref["image_id"], []).append((ref["ann_id"], text))
        if ref["ann_id"] not in segmentations:  # sized by the ref's picture, as upstream reads it
            size = image_size(image_info[ref["image_id"]], f"{instances_path}: image {ref['image_id']}")
            segmentations[ref["ann_id"]] = _segmentation(annotations[ref["ann_id"]], size,
                                                         f"{instances_path}: annotation {ref['ann_id']}")
    if not pairs:  # nothing to draw from: refused rather than an empty file
        raise SystemExit(f"{refs_path}: no sentences in split {split!r}")
    for _ in range(repeats):
        for image_id, choices in pairs.items():
            picked = [choices[rng.randrange(len(choices))] for _ in range(per_image)]
            conversation, sample_masks = [], []
            for t, (ann_id, sentence) in enumerate(picked):
                question = templates.image_question(sentence, rng.choice(templates.SEG_QUESTIONS))
                conversation.append({"from": "human", "value": ("<image>\n" if t == 0 else "") + question})
                conversation.append({"from": "gpt", "value": rng.choice(templates.ANSWER_LIST)})
                sample_masks.append(segmentations[ann_id])
            yield {"image": os.path.abspath(os.path.join(image_dir, image_info[image_id]["file_name"])),
                   "conversations": conversation, "masks": sample_masks}


def _segmentation(ann: dict[str, Any], size: tuple[int, int], where: str) -> Any:
    """A COCO annotation's segmentation as the training format takes it: RLE checked against the
    picture (and compressed), polygons as _polygons gives them."""
    if "segmentation" not in ann:
        raise SystemExit(f"{where}: no \"segmentation\"")
    segmentation = ann["segmentation"]
    if isinstance(segmentation, dict):
        return _whole_rle(segmentation, size, where)
    if isinstance(segmentation, list):
        return _polygons(segmentation, where)
    raise SystemExit(f"{where}: a segmentation must be polygons or COCO RLE")


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


def _union(rles: list[Any], anno_ids: list[Any], frame: int, mask_path: str,
           shape: tuple[int, int] | None) -> tuple[np.ndarray | None, tuple[int, int] | None]:
    """One frame's union of an expression's annotations (None where all are absent), each checked
    and named; `shape` is the size seen last, kept for frames without any."""
    total = None
    for anno_id, rle in zip(anno_ids, rles):
        if rle is None:
            continue
        where = f"{mask_path}: annotation {anno_id}, frame {frame}"
        m = masks.decode(_whole_rle(rle, None if total is None else total.shape, where))
        total = m if total is None else (total | m)
        shape = m.shape
    return total, shape


def _draw_frames(count: int, frames: int, rng: random.Random) -> list[int]:
    """Upstream's video frame draw: without replacement when the video has more than frames + 1,
    with replacement otherwise; sorted."""
    if count > frames + 1:
        return sorted(rng.sample(range(count), frames))
    return sorted(rng.randrange(count) for _ in range(frames))


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
    for video, info in videos.items():
        where = f"{meta_path}: video {video}"
        if not isinstance(info, dict):
            raise SystemExit(f"{where}: a video must be an object")
        if not isinstance(info.get("frames"), list) or not all(isinstance(f, str) for f in info["frames"]):
            raise SystemExit(f"{where}: no \"frames\" list (frame names)")
        if not isinstance(info.get("expressions"), dict):
            raise SystemExit(f"{where}: no \"expressions\" object")
        for exp_id, exp in info["expressions"].items():
            if not isinstance(exp, dict) or not isinstance(exp.get("exp"), str):
                raise SystemExit(f"{where}, expression {exp_id}: no string \"exp\"")
    mask_dict = load_annotations(mask_path)
    if not isinstance(mask_dict, dict):
        raise SystemExit(f"{mask_path}: expected {{annotation id: [RLE or null per frame]}}")
    if dataset == "refytvos":  # anno_id: a count over the videos in file order, each one's expressions sorted
        count = 0
        for info in videos.values():
            for key in sorted(info["expressions"]):
                info["expressions"][key]["anno_id"] = [str(count)]
                count += 1
    for video, info in videos.items():  # every expression's masks are there, before anything is written
        for exp_id, exp in info["expressions"].items():
            if not isinstance(exp.get("anno_id"), list):
                raise SystemExit(f"{meta_path}: video {video}, expression {exp_id}: no anno_id")
            for a in exp["anno_id"]:
                if not isinstance(mask_dict.get(str(a)), list) or len(mask_dict[str(a)]) < len(info["frames"]):
                    raise SystemExit(f"{mask_path}: annotation {a} of video {video} is missing or has fewer "
                                     f"than its {len(info['frames'])} frames")
    if not any(info["frames"] and info["expressions"] for info in videos.values()):
        raise SystemExit(f"{meta_path}: no usable video (none has both frames and expressions)")
    for _ in range(repeats):
        for video, info in videos.items():
            names = sorted(info["frames"])
            expressions = [info["expressions"][k] for k in sorted(info["expressions"])]
            if not names or not expressions:
                continue
            chosen = _draw_frames(len(names), frames, rng)
            picked = [expressions[rng.randrange(len(expressions))] for _ in range(per_video)]
            conversation, sample_masks = [], []
            for t, exp in enumerate(picked):
                question = templates.video_question(exp["exp"], rng.choice(templates.SEG_QUESTIONS))
                conversation.append({"from": "human", "value": ("<image>" if t == 0 else "") + question})
                conversation.append({"from": "gpt", "value": rng.choice(templates.ANSWER_LIST)})
                anno_ids = exp["anno_id"]
                per_frame, shape = [], None
                for f in chosen:
                    m, shape = _union([mask_dict[str(a)][f] for a in anno_ids], anno_ids, f, mask_path, shape)
                    per_frame.append(m)
                if shape is None:  # no annotation anywhere: the frame's size from the picture
                    from PIL import Image

                    with Image.open(os.path.join(frames_dir, video, names[chosen[0]] + ".jpg")) as im:
                        shape = (im.height, im.width)
                sample_masks.append([masks.encode(m if m is not None else np.zeros(shape, np.uint8))
                                     for m in per_frame])
            yield {"frames": [os.path.abspath(os.path.join(frames_dir, video, names[f] + ".jpg")) for f in chosen],
                   "conversations": conversation, "masks": sample_masks}


# ------------------------------------------------------------------------------------- Ref-SAV
# The question for Ref-SAV's long captions ("formated"); its short captions go through SEG_QUESTIONS,
# which upstream's Ref-SAV dataset repeats word for word.
REFSAV_QUESTION = "Please segment the object according to the description: {class_name}"
SAV_FRAME_STEP = 4  # SA-V annotates every 4th frame of its 24 fps videos: masklet entry i is frame 4i


@dataclass
class SavVideo:
    name: str                  # the caption file's key
    annotation: str            # the SA-V manual annotation json (absolute)
    frames: str                # the folder of its extracted frames (absolute)
    objects: list[tuple[int, str | None, list[str] | None]]  # (masklet index, long caption, short captions)


def refsav_layout(data: str, expressions: str | None, sav: str | None) -> tuple[str, str]:
    """(caption file, SA-V folder the annotation paths are under), upstream's by default."""
    root = os.path.join(data, "video_datas") if os.path.isdir(os.path.join(data, "video_datas")) else data
    return expressions or os.path.join(root, "sam_v_final_v3.json"), sav or os.path.join(root, "sam_v_full")


def _captions(obj: dict[str, Any], mode: str, where: str) -> tuple[str | None, list[str] | None]:
    long, short = obj.get("formated"), obj.get("short_caps")
    if mode != "short" and not isinstance(long, str):
        raise SystemExit(f"{where}: no string \"formated\" (the long caption)")
    if mode != "long" and (not isinstance(short, list) or not short or not all(isinstance(c, str) for c in short)):
        raise SystemExit(f"{where}: \"short_caps\" must be a non-empty list of strings (needed by --mode {mode})")
    for text in ([long] if mode != "short" else []) + (short if mode != "long" else []):
        if "[SEG]" in text or "<image>" in text:
            raise SystemExit(f"{where}: a caption holds \"[SEG]\" or \"<image>\"")
    return (long if mode != "short" else None), (short if mode != "long" else None)


def refsav_videos(data: str, frame_dir: str, mode: str, expressions: str | None = None,
                  sav: str | None = None) -> tuple[list[SavVideo], dict[str, int], int]:
    """Every usable video of the caption file, checked, with the skipped ones counted by reason:
    (videos, skipped, videos in the file). Objects are kept in the file's order, each key being the
    object's index in the annotation's per-frame masklet lists, as upstream indexes them."""
    path, sav_dir = refsav_layout(data, expressions, sav)
    loaded = runner.read_json(path)
    if not isinstance(loaded, dict):
        raise SystemExit(f"{path}: expected {{video id: {{\"video_path\", \"anno_path\", \"objects\"}}}}")
    skipped: dict[str, int] = {}
    videos = []
    for name, entry in loaded.items():
        where = f"{path}: video {name}"
        if not isinstance(entry, dict):
            raise SystemExit(f"{where}: a video must be an object")
        video_path = _field(entry, "video_path", str, where)
        anno_path = _field(entry, "anno_path", str, where)
        objects = []
        for key, obj in _field(entry, "objects", dict, where).items():
            what = f"{where}, object {key}"
            if not (key.isascii() and key.isdigit()):
                raise SystemExit(f"{what}: an object's key must be its masklet index (a non-negative integer)")
            if not isinstance(obj, dict):
                raise SystemExit(f"{what}: an object must be an object")
            objects.append((int(key), *_captions(obj, mode, what)))
        if not objects:  # upstream cannot draw from no object
            skipped["no objects"] = skipped.get("no objects", 0) + 1
            continue
        annotation = os.path.join(sav_dir, anno_path)
        if not os.path.isfile(annotation):
            skipped["annotation not found"] = skipped.get("annotation not found", 0) + 1
            continue
        # SA-V's frame extraction names the folder after the video file.
        folder = os.path.join(frame_dir, os.path.splitext(os.path.basename(video_path))[0])
        if not os.path.isdir(folder):
            skipped["frames not extracted"] = skipped.get("frames not extracted", 0) + 1
            continue
        videos.append(SavVideo(name, os.path.abspath(annotation), os.path.abspath(folder), objects))
    if not videos:
        raise SystemExit(f"{path}: no usable video ({_skip_text(skipped)} of {len(loaded)} skipped)")
    return videos, skipped, len(loaded)


def _masklet(path: str) -> list[list[Any]]:
    annotation = runner.read_json(path)
    masklet = annotation.get("masklet") if isinstance(annotation, dict) else None
    if not isinstance(masklet, list) or not masklet or not all(isinstance(f, list) for f in masklet):
        raise SystemExit(f"{path}: \"masklet\" must be a non-empty list (per annotated frame) of lists "
                         f"(per object) of COCO RLE")
    return masklet


def _frame_size(path: str, where: str) -> tuple[int, int]:
    from PIL import Image

    if not os.path.isfile(path):
        raise SystemExit(f"{path}: missing ({where})")
    try:
        with Image.open(path) as im:
            return im.height, im.width
    except OSError as e:
        raise SystemExit(f"{path}: not a readable picture ({e})") from None


def _whole_rle(value: Any, size: tuple[int, int] | None, where: str) -> dict[str, Any]:
    """A checked RLE whose runs cover the whole picture (its own size where `size` is None; only the
    runs are summed: no decoding)."""
    rle = _rle(value, size, where)
    size = size or tuple(rle["size"])
    try:
        covered = sum(masks.rle_counts(rle))
    except (ValueError, UnicodeDecodeError) as e:
        raise SystemExit(f"{where}: {e}") from None
    if covered != size[0] * size[1]:
        raise SystemExit(f"{where}: RLE runs cover {covered} pixels, not {size[0]} x {size[1]}")
    return rle


def refsav_samples(videos: list[SavVideo], frames: int, per_video: int, mode: str, repeats: int,
                   rng: random.Random) -> Iterator[dict[str, Any]]:
    """Per video and repeat, as upstream's Ref-SAV dataset draws: --per-video objects with replacement
    (both of upstream's branches draw with replacement), frames of the annotated ones as refvos draws
    them, "<image>" before the first question; a long caption asked as written, a short one with every
    "A " removed through SEG_QUESTIONS; per object and frame its SA-V mask as stored."""
    for _ in range(repeats):
        for video in videos:
            masklet = _masklet(video.annotation)
            picked = [video.objects[rng.randrange(len(video.objects))] for _ in range(per_video)]
            chosen = _draw_frames(len(masklet), frames, rng)
            paths = [os.path.join(video.frames, f"{SAV_FRAME_STEP * f:05d}.jpg") for f in chosen]
            sizes = [_frame_size(p, f"annotated frame {f} of video {video.name}") for p, f in zip(paths, chosen)]
            short = mode == "short" or (mode == "long_short" and rng.random() < 0.5)  # one choice per sample
            conversation, sample_masks = [], []
            for t, (index, long, shorts) in enumerate(picked):
                if short:
                    phrase = shorts[rng.randrange(len(shorts))].replace("A ", "")
                    question = rng.choice(templates.SEG_QUESTIONS).format(class_name=phrase)
                else:
                    question = REFSAV_QUESTION.format(class_name=long)
                conversation.append({"from": "human", "value": ("<image>" if t == 0 else "") + question})
                conversation.append({"from": "gpt", "value": rng.choice(templates.ANSWER_LIST)})
                per_frame = []
                for f, size in zip(chosen, sizes):
                    where = f"{video.annotation}: annotated frame {f}, object {index}"
                    if index >= len(masklet[f]):
                        raise SystemExit(f"{where}: the frame has {len(masklet[f])} objects")
                    per_frame.append(_whole_rle(masklet[f][index], size, where))
                sample_masks.append(per_frame)
            yield {"frames": paths, "conversations": conversation, "masks": sample_masks}


# ------------------------------------------------------------------------------------ video chat
@dataclass
class VideoChat:
    frames: str                # the folder of the video's extracted frames (absolute)
    count: int                 # its frames: 00000.jpg ... count - 1
    questions: list[str]       # "<image>" removed
    answers: list[str]


def _extracted_frames(folder: str) -> int:
    """How many frames a folder holds, named as ffmpeg's %05d.jpg from 00000 (0 without the folder)."""
    if not os.path.isdir(folder):
        return 0
    numbers = set()
    for name in os.listdir(folder):
        stem, ext = os.path.splitext(name)
        if ext != ".jpg":
            continue
        if not (stem.isascii() and stem.isdigit()) or f"{int(stem):05d}" != stem:
            raise SystemExit(f"{folder}: {name} is not a frame name as ffmpeg's %05d.jpg writes it")
        numbers.add(int(stem))
    missing = next((i for i in range(len(numbers)) if i not in numbers), None)
    if missing is not None:
        raise SystemExit(f"{folder}: frame {missing:05d}.jpg is missing (frames are numbered from 00000 "
                         f"without gaps)")
    return len(numbers)


def chatunivi_chats(data: str, frame_dir: str, skipped: dict[str, int]) -> tuple[str, list[VideoChat]]:
    """ChatUniVi's video chat as upstream's dataset reads it, everything checked first: (file, chats).
    Each sample's human turns with "<image>" removed pair with its gpt turns in order (no other
    change); skipped and counted in `skipped`: samples with an empty answer (the trainer refuses
    them) and samples whose video has no extracted frames."""
    root = os.path.join(data, "video_datas") if os.path.isdir(os.path.join(data, "video_datas")) else data
    path = os.path.join(root, "chat_univi", "video_chat.json")
    loaded = runner.read_json(path)
    if not isinstance(loaded, list):
        raise SystemExit(f"{path}: expected a list of samples")
    counts: dict[str, int] = {}  # frame folder -> its frames, listed once however many samples share it
    chats = []
    for index, entry in enumerate(loaded):
        where = f"{path}: sample {index}" + (f" ({entry['id']})" if isinstance(entry, dict) and "id" in entry else "")
        if not isinstance(entry, dict):
            raise SystemExit(f"{where}: a sample must be an object")
        video = _field(entry, "video", str, where)
        turns = _field(entry, "conversations", list, where)
        for t, turn in enumerate(turns):
            if (not isinstance(turn, dict) or turn.get("from") not in ("human", "gpt")
                    or not isinstance(turn.get("value"), str)):
                raise SystemExit(f"{where}: turn {t} must be {{\"from\": \"human\" or \"gpt\", \"value\": text}}")
        questions = [turn["value"].replace("<image>", "") for turn in turns if turn["from"] == "human"]
        answers = [turn["value"] for turn in turns if turn["from"] == "gpt"]
        if not questions or len(questions) != len(answers):
            raise SystemExit(f"{where}: needs as many human turns as gpt turns, at least one "
                             f"(got {len(questions)} and {len(answers)})")
        if any("[SEG]" in text for text in questions + answers):
            raise SystemExit(f"{where}: holds \"[SEG]\" but has no masks")
        if any("<image>" in text for text in answers):
            raise SystemExit(f"{where}: an answer holds \"<image>\"")
        if any(not text.strip() for text in answers):
            skipped["an empty answer"] = skipped.get("an empty answer", 0) + 1
            continue
        folder = os.path.abspath(os.path.join(frame_dir, os.path.splitext(video)[0]))
        if folder not in counts:
            counts[folder] = _extracted_frames(folder)
        if not counts[folder]:
            skipped["frames not extracted"] = skipped.get("frames not extracted", 0) + 1
            continue
        chats.append(VideoChat(folder, counts[folder], questions, answers))
    if not chats:
        raise SystemExit(f"{path}: no usable sample ({_skip_text(skipped)} of {len(loaded)} skipped)")
    return path, chats


def _segment_frames(count: int, frames: int, rng: random.Random) -> list[int]:
    """Upstream's video-chat draw: every frame of a video of at most `frames`; otherwise the video cut
    at numpy.linspace(0, count, frames + 1) (truncated to integers) and one frame drawn from each part."""
    if count <= frames:
        return list(range(count))
    bounds = np.linspace(0, count, num=frames + 1, dtype=int)
    return [rng.randrange(int(bounds[i]), int(bounds[i + 1])) for i in range(frames)]


def chatunivi_samples(chats: list[VideoChat], frames: int, repeats: int,
                      rng: random.Random) -> Iterator[dict[str, Any]]:
    """Per sample and repeat: the drawn frames, "<image>" before the first question, no masks."""
    for _ in range(repeats):
        for chat in chats:
            chosen = _segment_frames(chat.count, frames, rng)
            conversation = []
            for t, (question, answer) in enumerate(zip(chat.questions, chat.answers)):
                conversation.append({"from": "human", "value": ("<image>" if t == 0 else "") + question})
                conversation.append({"from": "gpt", "value": answer})
            yield {"frames": [os.path.join(chat.frames, f"{f:05d}.jpg") for f in chosen],
                   "conversations": conversation, "masks": []}


# ------------------------------------------------------------------------------ grounded captions
# Annotation file and picture folder of each grounded-caption set under DATA/glamm_data, as named by
# upstream's training config.
GCG_LAYOUT = {
    "refcocog": ("annotations/RefCOCOg_GCG_train.json", "images/coco2014/train2014"),
    "grandf": ("annotations/GranDf_HA_GCG_train.json", "images/grandf/train"),
    "flickr": ("annotations/flickr_mergedGT_GCG_train.json", "images/flickr30k/Flickr30K"),
    "psg": ("annotations/OpenPsgGCG_train.json", "images/coco2017"),
}


@dataclass
class GroundedCaption:
    image: str             # absolute path
    answer: str            # the caption with every phrase tagged
    masks: list[Any]       # one per [SEG], in the answer's order


def tag_caption(caption: str, spans: list[list[int]]) -> str:
    """The caption with "<p> phrase </p> [SEG]" put around each [start, end) span, as upstream's
    GCG map functions do: the spans are handled from the last start to the first (ties in their given
    order: a stable sort), each one cut, with Python's slicing, out of the text as edited so far.
    Overlapping or nested spans are not repaired here, as upstream does not repair them."""
    for k in sorted(range(len(spans)), key=lambda i: spans[i][0], reverse=True):
        start, end = spans[k]
        caption = caption[:start] + "<p> " + caption[start:end] + " </p> [SEG]" + caption[end:]
    return caption


def _by_start(spans: list[list[int]], masks_: list[Any]) -> tuple[list[list[int]], list[Any]]:
    order = sorted(range(len(spans)), key=lambda k: spans[k][0])
    return [spans[k] for k in order], [masks_[k] for k in order]


def _span(value: Any, where: str) -> list[int]:
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        raise SystemExit(f"{where}: a phrase position must be [start, end] (integers), not {json.dumps(value)}")
    return [value[0], value[1]]


def _number(v: Any) -> bool:
    """A finite number (JSON has no NaN or infinity: a line holding one could not be read back)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _rle(value: Any, size: tuple[int, int] | None, where: str) -> dict[str, Any]:
    """A COCO RLE with compressed counts; its size checked against the picture's when that is known."""
    if not isinstance(value, dict) or "counts" not in value or "size" not in value:
        raise SystemExit(f"{where}: not a COCO RLE {{\"size\": [h, w], \"counts\": ...}}")
    hw = value["size"]
    if not isinstance(hw, (list, tuple)) or len(hw) != 2 or not all(isinstance(v, int) and v > 0 for v in hw):
        raise SystemExit(f"{where}: RLE \"size\" must be [height, width], not {json.dumps(hw)}")
    if size is not None and tuple(hw) != size:
        raise SystemExit(f"{where}: a {hw[0]}x{hw[1]} mask for a {size[0]}x{size[1]} picture")
    counts = value["counts"]
    if not isinstance(counts, (str, bytes, list)):
        raise SystemExit(f"{where}: RLE \"counts\" must be a string or a list of runs")
    if isinstance(counts, list) and not all(isinstance(c, int) and c >= 0 for c in counts):
        raise SystemExit(f"{where}: RLE runs must be non-negative integers")
    try:
        return masks.segmentation_to_rle(value, hw[0], hw[1])
    except ValueError as e:  # bytes counts that are not ASCII
        raise SystemExit(f"{where}: {e}") from None


def _polygons(value: Any, where: str) -> list[list[float]]:
    """COCO polygons as the JSONL takes them. Upstream's training rasterises each entry alone
    (pycocotools' frPyObjects([entry])), so an entry of exactly 4 numbers is a box [x, y, w, h]
    wherever it stands; it is written as that box's outline, traced from the same corners (the same
    pixels), so that no 4-number entry reaches the trainer, which reads a list whose first entry has
    4 numbers as a list of boxes (pycocotools' rule for a whole list)."""
    if not isinstance(value, list):
        raise SystemExit(f"{where}: polygons must be a list of lists of numbers")
    if not value:  # pycocotools reads no empty list, and neither does the trainer
        raise SystemExit(f"{where}: an empty polygon list")
    out = []
    for k, polygon in enumerate(value):
        if not isinstance(polygon, list) or not all(_number(v) for v in polygon):
            raise SystemExit(f"{where}: a polygon must be a list of numbers [x0, y0, x1, y1, ...]")
        if len(polygon) == 4:
            x, y, w, h = polygon
            polygon = [x, y, x, y + h, x + w, y + h, x + w, y]
        elif len(polygon) < 6 or len(polygon) % 2:
            raise SystemExit(f"{where}: segmentation entry {k} has {len(polygon)} numbers: 4 are a box "
                             f"[x, y, w, h], a polygon needs an even number, at least 6")
        out.append(polygon)
    return out


def _rle_union(rles: Any, size: tuple[int, int] | None, where: str) -> dict[str, Any]:
    """One phrase's RLE list as one mask (upstream sums them; the format's mask is their union)."""
    if not isinstance(rles, list):
        raise SystemExit(f"{where}: \"rle_masks\" must be a list of COCO RLE")
    parts = [_whole_rle(r, size, where) for r in rles]
    if len(parts) == 1:
        return parts[0]
    if not parts:
        if size is None:
            raise SystemExit(f"{where}: an empty mask list and no \"height\"/\"width\" to size it")
        return masks.encode(np.zeros(size, np.uint8))
    if len({tuple(p["size"]) for p in parts}) != 1:
        raise SystemExit(f"{where}: one phrase's masks differ in size")
    try:
        total = masks.decode(parts[0])
        for p in parts[1:]:
            total |= masks.decode(p)
    except ValueError as e:
        raise SystemExit(f"{where}: {e}") from None
    return masks.encode(total)


def _picture_size(entry: dict[str, Any], where: str) -> tuple[int, int] | None:
    if "height" not in entry or "width" not in entry:
        return None
    try:
        return int(entry["height"]), int(entry["width"])
    except (TypeError, ValueError):
        raise SystemExit(f"{where}: \"height\" and \"width\" must be integers") from None


def _field(entry: dict[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in entry or not isinstance(entry[key], kind):
        raise SystemExit(f"{where}: no {kind.__name__} \"{key}\"")
    return entry[key]


def _refcocog_caption(entry: dict[str, Any], where: str) -> tuple[str, list[list[int]], list[Any]]:
    """Upstream's RefCOCOg-GCG parsing: the caption without quotes and outer blanks, lower-cased; a
    ref counts when its sentence, lower-cased, is in it, and sits where str.find finds the sentence as
    written (-1, -1 when its case differs: upstream's positions). Sorted by start; then each ref,
    walked in the file's order (upstream walks the unsorted list), has its end moved to one before the
    start of the first later-listed ref starting at or before that end."""
    caption = _field(entry, "caption", str, where).strip('"').strip().lower()
    size = _picture_size(entry, where)
    refs = _field(entry, "refs", list, where)
    spans, segs = [], []
    for ref in refs:
        if not isinstance(ref, dict):
            raise SystemExit(f"{where}: each ref must be an object")
        sentence = _field(ref, "sentence", str, where)
        if "segmentation" not in ref:
            raise SystemExit(f"{where}: ref {sentence!r} has no \"segmentation\"")
        if sentence.lower() not in caption:
            continue
        start = caption.find(sentence)
        spans.append([start, start + len(sentence) if start != -1 else -1])
        seg = ref["segmentation"]
        if isinstance(seg, dict):
            segs.append(_whole_rle(seg, size, where))
        elif isinstance(seg, list):
            segs.append(_polygons(seg, where))
        else:
            raise SystemExit(f"{where}: ref {sentence!r}: a segmentation must be polygons or COCO RLE")
    listed = spans  # the same [start, end] lists, in the file's order
    spans, segs = _by_start(spans, segs)
    for i in range(len(listed)):
        for j in range(i + 1, len(listed)):
            if listed[i][1] >= listed[j][0]:
                listed[i][1] = listed[j][0] - 1
                break
    return caption, spans, segs


def _grandf_caption(entry: dict[str, Any], where: str) -> tuple[str, list[list[int]], list[Any]]:
    """Upstream's GranD-f / OpenPSG parsing: the caption without quotes and outer blanks (case kept);
    each grounding that is not null gives its "token_positives" [start, end] and the union of its
    "rle_masks"; sorted by start."""
    caption = _field(entry, "caption", str, where).strip('"').strip()
    size = _picture_size(entry, where)
    spans, segs = [], []
    for phrase, grounding in _field(entry, "groundings", dict, where).items():
        if grounding is None:
            continue
        if not isinstance(grounding, dict) or "token_positives" not in grounding or "rle_masks" not in grounding:
            raise SystemExit(f"{where}: grounding {phrase!r} needs \"token_positives\" and \"rle_masks\"")
        spans.append(_span(grounding["token_positives"], f"{where}, grounding {phrase!r}"))
        segs.append(_rle_union(grounding["rle_masks"], size, f"{where}, grounding {phrase!r}"))
    spans, segs = _by_start(spans, segs)
    return caption, spans, segs


def _flickr_caption(image: dict[str, Any], anns: list[dict[str, Any]],
                    where: str) -> tuple[str, list[list[int]], list[Any]]:
    """Upstream's Flickr parsing: the caption as it is; an annotation is used unless it is marked
    "ignore", its box [x, y, w, h] does not overlap the picture, its "area" is not positive or the box
    is under 1 pixel wide or high; each used one gives its first "tokens_positive" span and its
    "sam_mask"; sorted by start."""
    caption = image["caption"]
    height, width = image["height"], image["width"]
    spans, segs = [], []
    for ann in anns:
        if ann.get("ignore", False):
            continue
        what = f"{where}, annotation {ann.get('id')}"
        box, area = ann.get("bbox"), ann.get("area")
        if not isinstance(box, list) or len(box) != 4 or not all(_number(v) for v in box) or not _number(area):
            raise SystemExit(f"{what}: needs \"bbox\" [x, y, w, h] and a numeric \"area\"")
        x, y, w, h = box
        overlap_w = max(0, min(x + w, width) - max(x, 0))
        overlap_h = max(0, min(y + h, height) - max(y, 0))
        if overlap_w * overlap_h == 0 or area <= 0 or w < 1 or h < 1:
            continue
        positives = ann.get("tokens_positive")
        if not isinstance(positives, list) or not positives:
            raise SystemExit(f"{what}: no \"tokens_positive\" spans")
        if "sam_mask" not in ann:
            raise SystemExit(f"{what}: no \"sam_mask\"")
        spans.append(_span(positives[0], what))
        segs.append(_whole_rle(ann["sam_mask"], (height, width), what))
    spans, segs = _by_start(spans, segs)
    return caption, spans, segs


def _flickr_images(path: str, coco: Any, skipped: dict[str, int]) -> Iterator[tuple[str, dict, list, str]]:
    """Upstream's Flickr selection: the images in the file's order, less those whose caption has
    fewer than 3 space-separated words, then those under 32 pixels on a side; annotation ids must be
    unique."""
    if not (isinstance(coco, dict) and isinstance(coco.get("images"), list)
            and isinstance(coco.get("annotations"), list)):
        raise SystemExit(f"{path}: not COCO-style (\"images\" and \"annotations\" lists)")
    by_image: dict[Any, list[dict[str, Any]]] = {}
    seen: set[Any] = set()
    for ann in coco["annotations"]:
        if not isinstance(ann, dict) or "image_id" not in ann or "id" not in ann:
            raise SystemExit(f"{path}: every annotation needs \"id\" and \"image_id\"")
        if ann["id"] in seen:
            raise SystemExit(f"{path}: annotation id {ann['id']} appears twice")
        seen.add(ann["id"])
        by_image.setdefault(ann["image_id"], []).append(ann)
    for image in coco["images"]:
        where = f"{path}: image {image.get('id') if isinstance(image, dict) else image!r}"
        if not isinstance(image, dict) or "id" not in image:
            raise SystemExit(f"{where}: an image needs an \"id\"")
        _field(image, "file_name", str, where)
        _field(image, "caption", str, where)
        size = _picture_size(image, where)
        if size is None:
            raise SystemExit(f"{where}: no \"height\"/\"width\"")
        image = dict(image, height=size[0], width=size[1])
        if len(image["caption"].split(" ")) < 3:
            skipped["caption under 3 words"] = skipped.get("caption under 3 words", 0) + 1
            continue
        if min(size) < 32:
            skipped["under 32 pixels on a side"] = skipped.get("under 32 pixels on a side", 0) + 1
            continue
        yield image["file_name"], image, by_image.get(image["id"], []), where


def gcg_captions(data: str, dataset: str, images: str | None) -> tuple[list[GroundedCaption], dict[str, int], int]:
    """Every usable picture of a grounded-caption set, checked, with the skipped ones counted by
    reason: (captions, skipped, pictures in the file)."""
    if dataset not in GCG_LAYOUT:
        raise SystemExit(f"unknown grounded-caption dataset {dataset!r}")
    annotation, folder = GCG_LAYOUT[dataset]
    path = os.path.join(data, "glamm_data", annotation)
    image_dir = images or os.path.join(data, "glamm_data", folder)
    loaded = runner.read_json(path)
    skipped: dict[str, int] = {}
    parsed: list[tuple[str, str, list[list[int]], list[Any]]] = []
    if dataset == "flickr":
        total = len(loaded.get("images", [])) if isinstance(loaded, dict) else 0
        for file_name, image, anns, where in _flickr_images(path, loaded, skipped):
            parsed.append((file_name, *_flickr_caption(image, anns, where)))
    else:
        if not isinstance(loaded, list):
            raise SystemExit(f"{path}: expected a list of pictures")
        total = len(loaded)
        for index, entry in enumerate(loaded):
            where = f"{path}: entry {index}"
            if dataset == "refcocog":  # each entry is {id: picture}
                if not isinstance(entry, dict) or len(entry) != 1:
                    raise SystemExit(f"{where}: expected {{id: picture}}")
                key, entry = next(iter(entry.items()))
                where = f"{path}: entry {index} ({key})"
                if not isinstance(entry, dict):
                    raise SystemExit(f"{where}: a picture must be an object")
                file_name = _field(entry, "img_file_name", str, where)
                parsed.append((file_name, *_refcocog_caption(entry, where)))
            else:
                if not isinstance(entry, dict):
                    raise SystemExit(f"{where}: a picture must be an object")
                file_name = _field(entry, "file_name", str, where)
                parsed.append((file_name, *_grandf_caption(entry, f"{where} ({file_name})")))
    captions = []
    for file_name, caption, spans, segs in parsed:
        if not segs:  # upstream has no mask to train and serves another picture instead
            skipped["no grounded phrase"] = skipped.get("no grounded phrase", 0) + 1
            continue
        if "<image>" in caption or "[SEG]" in caption:
            raise SystemExit(f"{path}: {file_name}: the caption itself holds \"<image>\" or \"[SEG]\"")
        answer = tag_caption(caption, spans)
        if answer.count("[SEG]") != len(segs):  # a tag cut through an earlier one's "[SEG]"
            skipped["tags cut by phrase positions"] = skipped.get("tags cut by phrase positions", 0) + 1
            continue
        captions.append(GroundedCaption(os.path.abspath(os.path.join(image_dir, file_name)), answer, segs))
    if not captions:
        raise SystemExit(f"{path}: no usable picture ({_skip_text(skipped)} of {total} skipped)")
    return captions, skipped, total


def gcg_samples(captions: list[GroundedCaption], repeats: int, rng: random.Random) -> Iterator[dict[str, Any]]:
    """Per picture and repeat: a question drawn from GCG_QUESTIONS after "<image>\\n", the tagged caption."""
    for _ in range(repeats):
        for c in captions:
            question = "<image>\n" + rng.choice(templates.GCG_QUESTIONS)
            yield {"image": c.image,
                   "conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": c.answer}],
                   "masks": c.masks}


# ----------------------------------------------------------------------------------- image chat
def llava_samples(path: str, images: str, skipped: dict[str, int]) -> list[dict[str, Any]]:
    """LLaVA-665K's list as training lines, everything checked first. Kept as upstream's LLaVA dataset
    reads it: leading gpt turns dropped, every text stripped, "<image>" where it stands. Skipped and
    counted in `skipped`: text-only samples (the trainer needs a picture), samples whose picture is
    not under `images` (upstream serves another sample when a picture does not open) and samples
    with an empty answer (the trainer refuses them)."""
    data = runner.read_json(path)
    if not isinstance(data, list):
        raise SystemExit(f"{path}: expected a list of samples")
    out = []
    for index, entry in enumerate(data):
        where = f"{path}: sample {index}" + (f" ({entry['id']})" if isinstance(entry, dict) and "id" in entry else "")
        if not isinstance(entry, dict) or not isinstance(entry.get("conversations"), list):
            raise SystemExit(f"{where}: needs a \"conversations\" list")
        turns = entry["conversations"]
        for t, turn in enumerate(turns):
            if (not isinstance(turn, dict) or turn.get("from") not in ("human", "gpt")
                    or not isinstance(turn.get("value"), str)):
                raise SystemExit(f"{where}: turn {t} must be {{\"from\": \"human\" or \"gpt\", \"value\": text}}")
        while turns and turns[0]["from"] == "gpt":
            turns = turns[1:]
        roles = [turn["from"] for turn in turns]
        if not turns or len(turns) % 2 or roles != ["human", "gpt"] * (len(turns) // 2):
            raise SystemExit(f"{where}: turns must alternate human, gpt (got {', '.join(roles) or 'none'})")
        texts = [turn["value"].strip() for turn in turns]
        if any("[SEG]" in text for text in texts):
            raise SystemExit(f"{where}: holds \"[SEG]\" but has no masks")
        if entry.get("image") is None:
            skipped["text only"] = skipped.get("text only", 0) + 1
            continue
        if not isinstance(entry["image"], str):
            raise SystemExit(f"{where}: \"image\" must be one path")
        if sum(text.count("<image>") for text in texts) > 1 or any("<image>" in text for text in texts[1:]):
            raise SystemExit(f"{where}: \"<image>\" must appear at most once, in the first question")
        if any(not text for text in texts[1::2]):
            skipped["an empty answer"] = skipped.get("an empty answer", 0) + 1
            continue
        image = os.path.abspath(os.path.join(images, entry["image"]))
        if not os.path.isfile(image):
            skipped["picture not found"] = skipped.get("picture not found", 0) + 1
            continue
        out.append({"image": image,
                    "conversations": [{"from": turn["from"], "value": text} for turn, text in zip(turns, texts)],
                    "masks": []})
    if not out:
        raise SystemExit(f"{path}: no usable sample ({_skip_text(skipped)} of {len(data)} skipped)")
    return out


# ------------------------------------------------------------------------------ visual prompts
# Osprey-724K's files under DATA/osprey-724k/Osprey-724K, by the form upstream reads each in.
OSPREY_FILES = {
    "conversation": "osprey_conversation.json",
    "part": "osprey_part_level.json",
    "positive-negative": "osprey_lvis_positive_negative.json",
    "description": "osprey_detail_description.json",
    "short": "osprey_short_form.json",
}
OSPREY_IMAGE_FOLDERS = ["train2014", "val2014", "train2017", "val2017"]  # under DATA/osprey-724k/coco
OSPREY_SHORT_LIMIT = " Answer the question using a single word or phrase."


def _osprey_region(segmentation: Any, size: tuple[int, int], where: str) -> Any:
    """A region's segmentation as upstream's annToMask reads it: COCO RLE (compressed or runs) checked
    against the picture, or a polygon list rasterised as one list (pycocotools' rule: a first entry of
    4 numbers makes every entry a box [x, y, w, h]), which is the trainer's rule too, so it is kept."""
    if isinstance(segmentation, dict):
        return _whole_rle(segmentation, size, where)
    if not isinstance(segmentation, list) or not segmentation:
        raise SystemExit(f"{where}: a segmentation must be a non-empty polygon list or COCO RLE")
    boxes = isinstance(segmentation[0], list) and len(segmentation[0]) == 4
    for k, polygon in enumerate(segmentation):
        if not isinstance(polygon, list) or not all(_number(v) for v in polygon):
            raise SystemExit(f"{where}: a polygon must be a list of numbers [x0, y0, x1, y1, ...]")
        if boxes and len(polygon) != 4:
            raise SystemExit(f"{where}: entry {k} of a list of boxes [x, y, w, h] has {len(polygon)} numbers")
        if not boxes and (len(polygon) < 6 or len(polygon) % 2):
            raise SystemExit(f"{where}: polygon {k} has {len(polygon)} numbers: it needs an even number, at least 6")
    return segmentation


def _unbracketed(text: Any, where: str) -> str:
    """Upstream removes every '<' and '>' from Osprey's texts ("<region1>" becomes "region1")."""
    if not isinstance(text, str):
        raise SystemExit(f"{where}: a text must be a string")
    return text.replace("<", "").replace(">", "")


def _osprey_turns(entry: dict[str, Any], form: str, rng: random.Random, where: str) -> list[tuple[str, str]] | None:
    """(question, answer) pairs as upstream's Osprey datasets form them, before the region list that
    the trainer puts after the image: conversations with every '<' and '>' removed (the short form's
    questions ending in OSPREY_SHORT_LIMIT), the first question's end stripped (upstream strips the
    message that holds the image), consecutive questions joined as they are, a last question without
    answer dropped; the description form one DETAILED_QUESTIONS question per region's description.
    None for a conversation that starts with an answer (upstream asserts that it does not)."""
    if form == "description":
        descriptions = _field(entry, "description", list, where)
        return [(rng.choice(templates.DETAILED_QUESTIONS).strip().replace("<region>", f"region{i + 1}"),
                 _unbracketed(d, f"{where}: description {i}")) for i, d in enumerate(descriptions)]
    limit = OSPREY_SHORT_LIMIT if form == "short" else ""
    turns = _field(entry, "conversations", list, where)
    pairs, question = [], ""
    for t, turn in enumerate(turns):
        if not isinstance(turn, dict) or turn.get("from") not in ("human", "gpt"):
            raise SystemExit(f"{where}: turn {t} must be {{\"from\": \"human\" or \"gpt\", \"value\": text}}")
        value = _unbracketed(turn.get("value"), f"{where}: turn {t}")
        if turn["from"] == "human":
            question += (value + limit).rstrip() if t == 0 else value + limit
        else:
            pairs.append((question, value))
            question = ""
    return None if turns and turns[0]["from"] == "gpt" else pairs


def osprey_samples(path: str, form: str, image_folders: list[str], repeats: int, rng: random.Random,
                   skipped: dict[str, int]) -> list[dict[str, Any]]:
    """Osprey-724K's entries ({"file_name", "height", "width", "annotation": [{"segmentation"}],
    "conversations" or "description"}) as training lines with "regions", everything checked first.
    The first question starts with "<image>" (no newline: the trainer's region list, which follows the
    image, ends in one), so that the tokens are those of upstream's Osprey datasets. Skipped and
    counted: entries without regions or without a question and answer, conversations that start with
    an answer, conversations with an empty answer (the trainer refuses them), pictures in none of
    `image_folders`, and entries whose height and width are not their picture's."""
    data = runner.read_json(path)
    if not isinstance(data, list):
        raise SystemExit(f"{path}: expected a list of entries")
    out = []

    def skip(reason: str) -> None:
        skipped[reason] = skipped.get(reason, 0) + 1

    for index, entry in enumerate(data):
        where = f"{path}: entry {index}"
        if not isinstance(entry, dict):
            raise SystemExit(f"{where}: an entry must be an object")
        file_name = _field(entry, "file_name", str, where)
        size = _picture_size(entry, where)
        if size is None:
            raise SystemExit(f"{where}: needs \"height\" and \"width\"")
        annotations = _field(entry, "annotation", list, where)
        regions = []
        for k, ann in enumerate(annotations):
            if not isinstance(ann, dict) or "segmentation" not in ann:
                raise SystemExit(f"{where}: region {k + 1} has no \"segmentation\"")
            regions.append(_osprey_region(ann["segmentation"], size, f"{where}: region {k + 1}"))
        image = next((os.path.abspath(os.path.join(folder, file_name)) for folder in image_folders
                      if os.path.isfile(os.path.join(folder, file_name))), None)
        draws = [_osprey_turns(entry, form, rng, where) for _ in range(repeats)]
        if any("[SEG]" in text for pairs in draws for pair in pairs or [] for text in pair):
            raise SystemExit(f"{where}: holds \"[SEG]\" but has no masks")
        if not regions:
            skip("no region")
            continue
        if draws[0] is None:
            skip("a conversation starting with an answer")
            continue
        if not draws[0]:
            skip("no question and answer")
            continue
        if any(not answer.strip() for pairs in draws for _, answer in pairs):
            skip("an empty answer")
            continue
        if image is None:
            skip("picture not found")
            continue
        # The trainer reads regions at the picture's size (upstream at the entry's, then at the 16x16
        # token grid): an entry whose size is not its picture's would stop a run midway.
        if _frame_size(image, where) != size:
            skip("a size that is not its picture's")
            continue
        for pairs in draws:
            conversation = []
            for t, (question, answer) in enumerate(pairs):
                conversation.append({"from": "human", "value": "<image>" + question if t == 0 else question})
                conversation.append({"from": "gpt", "value": answer})
            out.append({"image": image, "regions": regions, "conversations": conversation, "masks": []})
    if not out:
        raise SystemExit(f"{path}: no usable entry ({_skip_text(skipped)} of {len(data)} skipped)")
    return out


def _skip_text(skipped: dict[str, int]) -> str:
    return ", ".join(f"{n} {reason}" for reason, n in skipped.items()) or "none"


def skip_report(skipped: dict[str, int], total: int, what: str) -> str:
    """"skipped 3 of 10 pictures: 2 no grounded phrase, 1 ...", or "" when none was."""
    count = sum(skipped.values())
    return f"skipped {count} of {total} {what}: {_skip_text(skipped)}" if count else ""


def write_jsonl(path: str, samples: Iterator[dict[str, Any]]) -> int:
    """Writes beside (a temporary file of its own), then renames: a conversion that fails midway
    leaves an earlier file as it was."""
    count = 0

    def write(f) -> None:
        nonlocal count
        for sample in samples:
            f.write(json.dumps(sample, allow_nan=False) + "\n")
            count += 1

    runner.atomic_write(path, write)
    return count
