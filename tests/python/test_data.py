"""sa2va.data: upstream's prompt templates, the RefCOCO and video converters on tiny datasets in the
official layouts (every line checked, then trained on by `sa2va train`), the generated shapes."""
import json
import os
import pickle
import random
import subprocess

import numpy as np
import pytest
from PIL import Image

from sa2va.data import __main__ as data_main
from sa2va.data import convert, demo, shapes, templates
from sa2va.eval import masks


def random_image(path, w, h, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.random.RandomState(seed).rand(h, w, 3) * 255).astype(np.uint8)).save(path, quality=95)


def box(h, w, y0, y1, x0, x1):
    m = np.zeros((h, w), np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def read_jsonl(path):
    return [json.loads(line) for line in open(path, encoding="utf-8")]


def test_templates_as_upstream_asks():
    assert len(templates.SEG_QUESTIONS) == 16 and len(templates.ANSWER_LIST) == 5 and len(templates.GCG_QUESTIONS) == 6
    assert templates.image_question("The Red Car.", "Please segment {class_name} in this image.") == \
        "Please segment the red car in this image."
    assert templates.video_question("Which Dog runs?", "Please segment {class_name}.") == "Which Dog runs?"
    assert templates.video_question("The Dog", "Please segment {class_name}.") == "Please segment the dog."
    # Every '.' removed and the ends stripped, as upstream's video datasets clean an expression.
    assert templates.video_question(" The dog. running. ", "Please segment {class_name}.") == "Please segment the dog running."
    assert all("brief" in q for q in templates.GCG_QUESTIONS)  # Sa2VA's wording, not GLaMM's "detailed"
    assert all(a.count("[SEG]") == 1 for a in templates.ANSWER_LIST)


@pytest.fixture()
def refcoco_layout(tmp_path):
    data = tmp_path / "data"
    root = data / "ref_seg" / "refcocog"
    root.mkdir(parents=True)
    images = [{"id": 7, "file_name": "COCO_train2014_000000000007.jpg", "height": 24, "width": 32},
              {"id": 8, "file_name": "COCO_train2014_000000000008.jpg", "height": 20, "width": 30}]
    for i, img in enumerate(images):
        random_image(data / "glamm_data" / "images" / "coco2014" / "train2014" / img["file_name"],
                     img["width"], img["height"], i)
    rle = masks.encode(box(24, 32, 2, 20, 4, 26))
    annotations = [
        {"id": 1, "image_id": 7, "category_id": 1, "iscrowd": 0, "segmentation": [[2, 2, 20, 2, 20, 16, 2, 16]]},
        {"id": 2, "image_id": 7, "category_id": 1, "iscrowd": 1,
         "segmentation": {"size": [24, 32], "counts": masks.rle_counts(rle)}},
        {"id": 3, "image_id": 8, "category_id": 1, "iscrowd": 0, "segmentation": [[0, 0, 30, 0, 30, 10, 0, 10]]},
    ]
    (root / "instances.json").write_text(json.dumps({"images": images, "annotations": annotations}))
    refs = [
        {"ref_id": 1, "ann_id": 1, "image_id": 7, "split": "train",
         "sentences": [{"sent": "the left thing", "raw": "The left, thing."}]},  # "raw" is what is asked
        {"ref_id": 2, "ann_id": 2, "image_id": 7, "split": "train", "sentences": [{"sent": "a square"}]},
        {"ref_id": 3, "ann_id": 3, "image_id": 8, "split": "train", "sentences": [{"sent": "top band"}]},
        {"ref_id": 4, "ann_id": 3, "image_id": 8, "split": "val", "sentences": [{"sent": "not in train"}]},
    ]
    with open(root / "refs(umd).p", "wb") as f:
        pickle.dump(refs, f, protocol=2)
    return data, rle


def test_refcoco_converter_writes_upstreams_conversations(refcoco_layout, tmp_path, capsys):
    data, rle = refcoco_layout
    out = tmp_path / "refcocog.jsonl"
    assert data_main.main(["refcoco", "--data", str(data), "--dataset", "refcocog", "--per-image", "3",
                           "--repeats", "2", "--out", str(out)]) == 0
    assert "4 samples" in capsys.readouterr().out
    lines = read_jsonl(out)
    assert len(lines) == 4  # 2 images x 2 draws
    phrases = {"the left, thing": [[2, 2, 20, 2, 20, 16, 2, 16]], "a square": rle,
               "top band": [[0, 0, 30, 0, 30, 10, 0, 10]]}
    for line in lines:
        assert os.path.isabs(line["image"]) and os.path.exists(line["image"])
        turns = line["conversations"]
        assert [t["from"] for t in turns] == ["human", "gpt"] * 3
        assert turns[0]["value"].startswith("<image>\n") and not turns[2]["value"].startswith("<image>")
        for k in range(3):
            question = turns[2 * k]["value"].removeprefix("<image>\n")
            phrase = next(p for p in phrases if p in question)  # lower-cased, final '.' dropped
            assert question in [q.format(class_name=phrase) for q in templates.SEG_QUESTIONS]
            assert turns[2 * k + 1]["value"] in templates.ANSWER_LIST
            assert line["masks"][k] == phrases[phrase]
        assert "not in train" not in json.dumps(line)


@pytest.fixture()
def mevis_layout(tmp_path):
    data = tmp_path / "data"
    base = data / "video_datas" / "mevis" / "train"
    frames = [f"{i:05d}" for i in range(8)]
    for k, name in enumerate(frames):
        random_image(base / "JPEGImages" / "vid" / f"{name}.jpg", 32, 24, k)
    a = [box(24, 32, 0, 10, 0, 10 + i) for i in range(8)]
    b = [box(24, 32, 12, 24, 16, 32) for _ in range(8)]
    mask_dict = {"0": [masks.encode(m) for m in a], "1": [masks.encode(m) if i % 2 else None for i, m in enumerate(b)]}
    meta = {"videos": {"vid": {"frames": frames, "expressions": {
        "0": {"exp": "The Left Box", "anno_id": [0, 1]},
        "1": {"exp": "which box moves?", "anno_id": [0]}}}}}
    (base / "meta_expressions.json").write_text(json.dumps(meta))
    (base / "mask_dict.json").write_text(json.dumps(mask_dict))
    return data, frames, a, b


def test_video_converter_samples_frames_and_unites_annotations(mevis_layout, tmp_path, capsys):
    data, frames, a, b = mevis_layout
    out = tmp_path / "mevis.jsonl"
    assert data_main.main(["refvos", "--data", str(data), "--dataset", "mevis", "--frames", "5", "--per-video", "4",
                           "--repeats", "3", "--seed", "1", "--out", str(out)]) == 0
    lines = read_jsonl(out)
    assert len(lines) == 3
    for line in lines:
        chosen = [frames.index(os.path.basename(p)[:-4]) for p in line["frames"]]
        assert len(chosen) == 5 and chosen == sorted(chosen) and len(set(chosen)) == 5  # 8 > 5 + 1: no repeats
        turns = line["conversations"]
        assert len(turns) == 8 and turns[0]["value"].startswith("<image>") and not turns[0]["value"].startswith("<image>\n")
        for k in range(4):
            question = turns[2 * k]["value"].removeprefix("<image>")
            assert turns[2 * k + 1]["value"] in templates.ANSWER_LIST
            got = [masks.decode(m) for m in line["masks"][k]]
            if question == "which box moves?":  # a question: as written, one annotation
                expected = [a[f] for f in chosen]
            else:
                assert question in [q.format(class_name="the left box") for q in templates.SEG_QUESTIONS]
                expected = [a[f] | (b[f] if f % 2 else 0) for f in chosen]  # the union; absent = empty
            assert all(np.array_equal(g, e) for g, e in zip(got, expected))
    # A short video: frames drawn with replacement.
    short = list(convert.refvos_samples(str(data), "mevis", 9, 1, 1, random.Random(0)))[0]
    assert len(short["frames"]) == 9


def test_ref_youtube_vos_annotations_are_numbered_as_upstream(tmp_path):
    # Its expressions carry no anno_id: upstream counts them over the videos in file order, each
    # video's expression ids sorted as strings.
    base = tmp_path / "data" / "video_datas" / "rvos"
    frames = ["00000", "00001"]
    videos = {"vb": {"frames": frames, "expressions": {"10": {"exp": "a cat"}, "2": {"exp": "a dog"}}},
              "va": {"frames": frames, "expressions": {"0": {"exp": "a bird"}}}}
    for video in videos:
        for k, name in enumerate(frames):
            random_image(base / "train" / "JPEGImages" / video / f"{name}.jpg", 16, 12, k)
    (base / "meta_expressions" / "train").mkdir(parents=True)
    (base / "meta_expressions" / "train" / "meta_expressions.json").write_text(json.dumps({"videos": videos}))
    # vb/10 -> "0", vb/2 -> "1", va/0 -> "2": masks told apart by their area.
    object_masks = {str(n): [masks.encode(box(12, 16, 0, n + 1, 0, 2))] * 2 for n in range(3)}
    with open(base / "mask_dict.pkl", "wb") as f:
        pickle.dump(object_masks, f)
    area_of = {"a cat": 2, "a dog": 4, "a bird": 6}
    seen = set()
    for sample in convert.refvos_samples(str(tmp_path / "data"), "refytvos", 2, 4, 2, random.Random(3)):
        for k in range(4):
            question = sample["conversations"][2 * k]["value"]
            name = next(n for n in area_of if n in question)
            seen.add(name)
            assert all(masks.area(m) == area_of[name] for m in sample["masks"][k]), (name, question)
    assert seen == set(area_of)


def test_bad_layouts_end_in_a_message_naming_the_file(refcoco_layout, mevis_layout, tmp_path):
    data, _ = refcoco_layout
    root = data / "ref_seg" / "refcocog"
    (root / "instances.json").write_text("{broken")
    with pytest.raises(SystemExit, match="instances.json: not valid JSON"):
        data_main.main(["refcoco", "--data", str(data), "--dataset", "refcocog", "--out", str(tmp_path / "r.jsonl")])
    (root / "refs(umd).p").write_bytes(b"not a pickle")
    with pytest.raises(SystemExit, match="refs\\(umd\\).p: not a readable pickle"):
        data_main.main(["refcoco", "--data", str(data), "--dataset", "refcocog", "--out", str(tmp_path / "r.jsonl")])
    video_data, frames, _, _ = mevis_layout
    base = video_data / "video_datas" / "mevis" / "train"
    out = tmp_path / "m.jsonl"
    out.write_text("earlier\n")
    meta = json.loads((base / "meta_expressions.json").read_text())
    meta["videos"]["vid"]["expressions"]["0"]["anno_id"] = [0, 5]
    (base / "meta_expressions.json").write_text(json.dumps(meta))
    with pytest.raises(SystemExit, match="mask_dict.json: annotation 5 of video vid is missing"):
        data_main.main(["refvos", "--data", str(video_data), "--dataset", "mevis", "--out", str(out)])
    assert out.read_text() == "earlier\n"  # a failed conversion leaves the earlier file
    assert not os.path.exists(str(out) + ".partial")
    del meta["videos"]["vid"]["expressions"]["0"]["anno_id"]
    (base / "meta_expressions.json").write_text(json.dumps(meta))
    with pytest.raises(SystemExit, match="video vid, expression 0: no anno_id"):
        data_main.main(["refvos", "--data", str(video_data), "--dataset", "mevis", "--out", str(out)])
    with pytest.raises(SystemExit):
        data_main.main(["refvos", "--data", str(video_data), "--dataset", "mevis", "--frames", "0", "--out", str(out)])
    # The demonstration replaces only an earlier demonstration's folder.
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match="not an earlier demo's folder"):
        demo.run("unused-model", str(keep), "unused-cli")
    assert (keep / "notes.txt").read_text() == "mine"


def test_converted_data_trains(refcoco_layout, mevis_layout, tiny_dir, tmp_path):
    cli = os.environ.get("SA2VA_CLI")
    if not cli:
        pytest.skip("SA2VA_CLI not set")
    lines = list(convert.refcoco_samples(str(refcoco_layout[0]), "refcocog", "train", None, 2, 1, random.Random(0)))
    lines += list(convert.refvos_samples(str(mevis_layout[0]), "mevis", 2, 2, 1, random.Random(0)))
    path = tmp_path / "mixed.jsonl"
    convert.write_jsonl(str(path), iter(lines))
    run = subprocess.run([cli, "train", "--model", str(tiny_dir), "--data", str(path), "--out", str(tmp_path / "run"),
                          "--lora-r", "2", "--lora-alpha", "4", "--batch", "3", "--grad-accum", "1",
                          "--mask-points", "64", "--threads", "2"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    log = read_jsonl(tmp_path / "run" / "train_log.jsonl")
    assert len(log) == 1 and all(np.isfinite(log[0][k]) for k in ("loss", "llm", "mask", "dice"))
    assert log[0]["mask"] > 0  # the masks reached the loss
    assert (tmp_path / "run" / "model" / "model.safetensors").exists()


def test_generated_shapes_match_their_masks(tmp_path):
    path = shapes.write_dataset(str(tmp_path / "s"), 6, seed=3, size=96)
    again = shapes.write_dataset(str(tmp_path / "t"), 6, seed=3, size=96)
    assert open(path).read() == open(again).read()  # deterministic
    for line in read_jsonl(path):
        image = np.array(Image.open(tmp_path / "s" / line["image"]))
        for k, segmentation in enumerate(line["masks"]):
            phrase = [t["value"] for t in line["conversations"]][2 * k]
            colour = next(c for c in shapes.COLOURS if c in phrase)
            if isinstance(segmentation, dict):
                m = masks.decode(segmentation)
            else:
                m = masks.decode({"size": [96, 96], "counts": masks.counts_to_string(
                    masks.polygon_counts(segmentation[0], 96, 96))})
            assert m.sum() > 0
            assert (image[m.astype(bool)] == shapes.COLOURS[colour]).all()  # the mask is exactly that shape's pixels
