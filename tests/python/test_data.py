"""sa2va.data: upstream's prompt templates, the RefCOCO, video (MeViS, Ref-YouTube-VOS, Ref-SAV),
grounded-caption, LLaVA, ChatUniVi and Osprey (visual prompt) converters on tiny datasets in the official layouts (every line
checked, then trained on by `sa2va train`), the generated shapes."""
import json
import os
import pickle
import random
import re
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


def expect_each_refused(path, original, cases, args):
    """Each (change, message): the annotation file written with the change made to a copy of
    `original`, the conversion ends with that message."""
    for change, message in cases:
        broken = json.loads(json.dumps(original))
        change(broken)
        path.write_text(json.dumps(broken))
        with pytest.raises(SystemExit, match=message):
            data_main.main(args)


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


def train_one_step(cli, lines, tiny_dir, tmp_path):
    """`sa2va train` on the converted lines as one batch: one optimiser step with finite losses, and the
    masks reached the mask loss."""
    path = tmp_path / "mixed.jsonl"
    convert.write_jsonl(str(path), iter(lines))
    run = subprocess.run([cli, "train", "--model", str(tiny_dir), "--data", str(path), "--out", str(tmp_path / "run"),
                          "--lora-r", "2", "--lora-alpha", "4", "--batch", str(len(lines)), "--grad-accum", "1",
                          "--mask-points", "64", "--threads", "2"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    log = read_jsonl(tmp_path / "run" / "train_log.jsonl")
    assert len(log) == 1 and all(np.isfinite(log[0][k]) for k in ("loss", "llm", "mask", "dice"))
    assert log[0]["mask"] > 0
    return run


def test_converted_data_trains(refcoco_layout, mevis_layout, tiny_dir, tmp_path):
    cli = os.environ.get("SA2VA_CLI")
    if not cli:
        pytest.skip("SA2VA_CLI not set")
    lines = list(convert.refcoco_samples(str(refcoco_layout[0]), "refcocog", "train", None, 2, 1, random.Random(0)))
    lines += list(convert.refvos_samples(str(mevis_layout[0]), "mevis", 2, 2, 1, random.Random(0)))
    train_one_step(cli, lines, tiny_dir, tmp_path)
    assert (tmp_path / "run" / "model" / "model.safetensors").exists()


def glamm(data, annotation, value):
    path = data / "glamm_data" / "annotations" / annotation
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))
    return path


def gcg_question(turn):
    assert turn["from"] == "human" and turn["value"].startswith("<image>\n")
    assert turn["value"].removeprefix("<image>\n") in templates.GCG_QUESTIONS
    return turn["value"]


@pytest.fixture()
def grandf_layout(tmp_path):
    data = tmp_path / "data"
    cat, mat_a, mat_b = box(24, 32, 2, 12, 2, 14), box(24, 32, 14, 20, 0, 10), box(24, 32, 16, 24, 8, 30)
    red, car = box(24, 32, 0, 4, 0, 4), box(24, 32, 4, 8, 4, 8)
    cat_runs = {"size": [24, 32], "counts": masks.encode_counts(cat)}  # uncompressed: compressed on the way
    pictures = [
        # Listed out of caption order, one null grounding; the second mask of "a mat" is united with the first.
        {"file_name": "g1.jpg", "height": 24, "width": 32, "caption": '"A cat sits on a mat."', "groundings": {
            "a mat": {"token_positives": [14, 19], "rle_masks": [masks.encode(mat_a), masks.encode(mat_b)]},
            "nothing": None,
            "A cat": {"token_positives": [0, 5], "rle_masks": [cat_runs]}}},
        {"file_name": "g2.jpg", "height": 24, "width": 32, "caption": "Empty.", "groundings": {"x": None}},
        # Nested phrases: tagged from the last start to the first in the edited text, as upstream does.
        {"file_name": "g3.jpg", "height": 24, "width": 32, "caption": "a red car", "groundings": {
            "red car": {"token_positives": [2, 9], "rle_masks": [masks.encode(car)]},
            "a red car": {"token_positives": [0, 9], "rle_masks": [masks.encode(red)]}}},
        # The outer tag's " </p> [SEG]" lands inside the inner one's "[SEG]": unusable, skipped.
        {"file_name": "g4.jpg", "height": 24, "width": 32, "caption": "a dog and a cat here", "groundings": {
            "a": {"token_positives": [0, 17], "rle_masks": [masks.encode(cat)]},
            "b": {"token_positives": [2, 5], "rle_masks": [masks.encode(cat)]}}},
    ]
    for k, picture in enumerate(pictures):
        random_image(data / "glamm_data" / "images" / "grandf" / "train" / picture["file_name"], 32, 24, k)
    glamm(data, "GranDf_HA_GCG_train.json", pictures)
    return data, {"cat": masks.encode(cat), "mat": masks.encode(mat_a | mat_b), "red": masks.encode(red),
                  "car": masks.encode(car)}


def test_grandf_captions_are_tagged_as_upstream(grandf_layout, tmp_path, capsys):
    data, expected = grandf_layout
    out = tmp_path / "grandf.jsonl"
    assert data_main.main(["gcg", "--data", str(data), "--dataset", "grandf", "--repeats", "3", "--seed", "2",
                           "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "6 samples" in printed
    assert "skipped 2 of 4 pictures: 1 no grounded phrase, 1 tags cut by phrase positions" in printed
    lines = read_jsonl(out)
    assert [os.path.basename(line["image"]) for line in lines] == ["g1.jpg", "g3.jpg"] * 3
    assert all(os.path.isabs(line["image"]) and os.path.exists(line["image"]) for line in lines)
    questions = set()
    for line in lines:
        human, gpt = line["conversations"]
        questions.add(gcg_question(human))
        if line["image"].endswith("g1.jpg"):
            assert gpt == {"from": "gpt", "value": "<p> A cat </p> [SEG] sits on <p> a mat </p> [SEG]."}
            assert line["masks"] == [expected["cat"], expected["mat"]]  # in the phrases' order in the caption
        else:
            assert gpt["value"] == "<p> a <p> red </p> [SEG] car </p> [SEG]"
            assert line["masks"] == [expected["red"], expected["car"]]  # sorted by start: [0, 9] before [2, 9]
    assert len(questions) > 1  # drawn anew per line
    again = tmp_path / "again.jsonl"
    data_main.main(["gcg", "--data", str(data), "--dataset", "grandf", "--repeats", "3", "--seed", "2",
                    "--out", str(again)])
    assert again.read_text() == out.read_text()  # the seed decides


def test_openpsg_reads_the_grandf_format_from_its_own_files(tmp_path):
    data = tmp_path / "data"
    random_image(data / "glamm_data" / "images" / "coco2017" / "train2017" / "p.jpg", 32, 24, 0)
    m = masks.encode(box(24, 32, 0, 10, 0, 10))
    glamm(data, "OpenPsgGCG_train.json", [{"file_name": "train2017/p.jpg", "height": 24, "width": 32,
                                           "caption": "A sheep on grass.", "groundings": {
                                               "A sheep": {"token_positives": [0, 7], "rle_masks": [m]}}}])
    (line,) = list(convert.gcg_samples(convert.gcg_captions(str(data), "psg", None)[0], 1, random.Random(0)))
    assert line["image"] == str(data / "glamm_data" / "images" / "coco2017" / "train2017" / "p.jpg")
    assert line["conversations"][1]["value"] == "<p> A sheep </p> [SEG] on grass." and line["masks"] == [m]


def test_refcocog_gcg_finds_trims_and_orders_phrases_as_upstream(tmp_path, capsys):
    data = tmp_path / "data"
    rle = masks.encode(box(24, 32, 4, 20, 10, 30))
    man = [[2, 2, 20, 2, 20, 16, 2, 16], [24, 2, 4, 6]]  # the 4-number entry: a box [x, y, w, h], as pycocotools
    dog = [[0, 0, 8, 0, 8, 8, 0, 8]]
    pictures = [
        {"r1": {"img_file_name": "COCO_train2014_1.jpg", "caption": '"The man and his dog play."', "refs": [
            {"sentence": "the man and", "bbox": [0, 0, 1, 1], "segmentation": man},
            {"sentence": "and his dog", "bbox": [0, 0, 1, 1], "segmentation": rle},
            {"sentence": "a cow", "bbox": [0, 0, 1, 1], "segmentation": dog}]}},  # not in the caption
        # Listed against the caption's order: upstream trims walking the file's order, which cuts
        # "a dog" to end at -1 (one before the start of "a man"), i.e. before the caption's last letter.
        {"r2": {"img_file_name": "COCO_train2014_2.jpg", "caption": "A man and a dog", "refs": [
            {"sentence": "a dog", "bbox": [0, 0, 1, 1], "segmentation": dog},
            {"sentence": "a man", "bbox": [0, 0, 1, 1], "segmentation": man}]}},
        {"r3": {"img_file_name": "COCO_train2014_3.jpg", "caption": "Nothing here.", "refs": [
            {"sentence": "a cow", "bbox": [0, 0, 1, 1], "segmentation": dog}]}},
    ]
    glamm(data, "RefCOCOg_GCG_train.json", pictures)
    out = tmp_path / "r.jsonl"
    assert data_main.main(["gcg", "--data", str(data), "--dataset", "refcocog", "--out", str(out)]) == 0
    assert "skipped 1 of 3 pictures: 1 no grounded phrase" in capsys.readouterr().out
    first, second = read_jsonl(out)
    assert first["image"].endswith(os.path.join("glamm_data", "images", "coco2014", "train2014", "COCO_train2014_1.jpg"))
    gcg_question(first["conversations"][0])
    assert first["conversations"][1]["value"] == "<p> the man </p> [SEG] <p> and his dog </p> [SEG] play."
    boxed = [[2, 2, 20, 2, 20, 16, 2, 16], [24, 2, 24, 8, 28, 8, 28, 2]]
    assert first["masks"] == [boxed, rle]
    assert second["conversations"][1]["value"] == "<p> a man </p> [SEG] and <p> a do </p> [SEG]g"
    assert second["masks"] == [boxed, dog]


@pytest.fixture()
def flickr_layout(tmp_path):
    data = tmp_path / "data"
    dogs, ball = masks.encode(box(40, 48, 0, 20, 0, 20)), masks.encode(box(40, 48, 20, 30, 20, 30))
    images = [{"id": 1, "file_name": "1.jpg", "height": 40, "width": 48, "caption": "Two dogs chase a ball."},
              {"id": 2, "file_name": "2.jpg", "height": 40, "width": 48, "caption": "Two dogs"},
              {"id": 3, "file_name": "3.jpg", "height": "20", "width": "48", "caption": "A small picture here"},
              {"id": 4, "file_name": "4.jpg", "height": 40, "width": 48, "caption": "Nothing is usable here"}]
    for image in images:
        random_image(data / "glamm_data" / "images" / "flickr30k" / "Flickr30K" / image["file_name"],
                     int(image["width"]), int(image["height"]), image["id"])

    def ann(id_, image_id, bbox, area, spans, rle, **extra):
        return {"id": id_, "image_id": image_id, "bbox": bbox, "area": area, "tokens_positive": spans,
                "sam_mask": rle, **extra}
    annotations = [ann(11, 1, [20, 20, 10, 10], 100, [[15, 21]], ball),
                   ann(12, 1, [0, 0, 20, 20], 400, [[0, 8], [0, 3]], dogs),  # the first span counts
                   ann(13, 1, [0, 0, 5, 5], 25, [[9, 14]], dogs, ignore=True),
                   ann(14, 1, [60, 60, 5, 5], 25, [[9, 14]], dogs),  # outside the picture
                   ann(15, 1, [0, 0, 5, 5], 0, [[9, 14]], dogs),  # no area
                   ann(16, 1, [0, 0, 0.5, 5], 2, [[9, 14]], dogs),  # under a pixel wide
                   ann(21, 2, [0, 0, 5, 5], 25, [[0, 3]], dogs),
                   ann(41, 4, [0, 0, 5, 5], 25, [[0, 7]], dogs, ignore=True)]
    path = glamm(data, "flickr_mergedGT_GCG_train.json", {"images": images, "annotations": annotations})
    return data, path, dogs, ball


def test_flickr_gcg_uses_upstreams_filters(flickr_layout, tmp_path, capsys):
    data, _, dogs, ball = flickr_layout
    out = tmp_path / "f.jsonl"
    assert data_main.main(["gcg", "--data", str(data), "--dataset", "flickr", "--out", str(out)]) == 0
    assert ("skipped 3 of 4 pictures: 1 caption under 3 words, 1 under 32 pixels on a side, "
            "1 no grounded phrase") in capsys.readouterr().out
    (line,) = read_jsonl(out)
    assert line["image"] == str(data / "glamm_data" / "images" / "flickr30k" / "Flickr30K" / "1.jpg")
    gcg_question(line["conversations"][0])
    assert line["conversations"][1]["value"] == "<p> Two dogs </p> [SEG] chase <p> a ball </p> [SEG]."
    assert line["masks"] == [dogs, ball]


def test_bad_caption_sets_end_in_a_message_naming_the_file(grandf_layout, flickr_layout, tmp_path):
    data, _ = grandf_layout
    out = tmp_path / "g.jsonl"
    out.write_text("earlier\n")
    with pytest.raises(SystemExit, match="OpenPsgGCG_train.json: cannot read"):
        data_main.main(["gcg", "--data", str(data), "--dataset", "psg", "--out", str(out)])
    path = data / "glamm_data" / "annotations" / "GranDf_HA_GCG_train.json"
    pictures = json.loads(path.read_text())
    pictures[2]["groundings"]["red car"]["rle_masks"][0] = masks.encode(box(20, 30, 0, 4, 0, 4))
    path.write_text(json.dumps(pictures))
    with pytest.raises(SystemExit, match=r"GranDf_HA_GCG_train.json: entry 2 \(g3.jpg\), grounding 'red car': "
                                         r"a 20x30 mask for a 24x32 picture"):
        data_main.main(["gcg", "--data", str(data), "--dataset", "grandf", "--out", str(out)])
    pictures[2]["groundings"]["red car"] = {"token_positives": [2], "rle_masks": []}
    path.write_text(json.dumps(pictures))
    with pytest.raises(SystemExit, match="a phrase position must be \\[start, end\\]"):
        data_main.main(["gcg", "--data", str(data), "--dataset", "grandf", "--out", str(out)])
    assert out.read_text() == "earlier\n" and not os.path.exists(str(out) + ".partial")
    flickr_data, flickr_path, _, _ = flickr_layout
    coco = json.loads(flickr_path.read_text())
    coco["annotations"][1]["id"] = 11
    flickr_path.write_text(json.dumps(coco))
    with pytest.raises(SystemExit, match="flickr_mergedGT_GCG_train.json: annotation id 11 appears twice"):
        data_main.main(["gcg", "--data", str(flickr_data), "--dataset", "flickr", "--out", str(out)])
    glamm(data, "GranDf_HA_GCG_train.json", [pictures[1]])
    with pytest.raises(SystemExit, match="no usable picture \\(1 no grounded phrase of 1 skipped\\)"):
        data_main.main(["gcg", "--data", str(data), "--dataset", "grandf", "--out", str(out)])


@pytest.fixture()
def llava_layout(tmp_path):
    images = tmp_path / "llava_images"
    random_image(images / "coco" / "train2017" / "1.jpg", 32, 24, 0)
    random_image(images / "ocr_vqa" / "images" / "2.jpg", 32, 24, 1)

    def turn(role, value):
        return {"from": role, "value": value}
    samples = [
        {"id": "a", "image": "coco/train2017/1.jpg", "conversations": [
            turn("human", "<image>\nWhat is this? "), turn("gpt", " A cat. "), turn("human", "Colour?"),
            turn("gpt", "Grey.")]},
        {"id": "b", "image": "ocr_vqa/images/2.jpg", "conversations": [
            turn("gpt", "Hello."), turn("human", "Who wrote this book?\n<image>"), turn("gpt", "Someone.")]},
        {"id": "c", "conversations": [turn("human", "Tell me a joke."), turn("gpt", "No.")]},
        {"id": "d", "image": "coco/train2017/missing.jpg", "conversations": [
            turn("human", "<image>\nWhat?"), turn("gpt", "Nothing.")]},
        {"id": "e", "image": "coco/train2017/1.jpg", "conversations": [
            turn("human", "<image>\nWhat?"), turn("gpt", "  ")]},
    ]
    path = tmp_path / "llava_v1_5_mix665k.json"
    path.write_text(json.dumps(samples))
    return path, images, samples


def test_llava_conversations_are_kept_and_text_only_skipped(llava_layout, tmp_path, capsys):
    path, images, samples = llava_layout
    out = tmp_path / "llava.jsonl"
    assert data_main.main(["llava", "--data", str(path), "--images", str(images), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "2 samples" in printed
    assert "skipped 3 of 5 samples: 1 text only, 1 picture not found, 1 an empty answer" in printed
    a, b = read_jsonl(out)
    assert a == {"image": str(images / "coco" / "train2017" / "1.jpg"), "masks": [], "conversations": [
        {"from": "human", "value": "<image>\nWhat is this?"}, {"from": "gpt", "value": "A cat."},
        {"from": "human", "value": "Colour?"}, {"from": "gpt", "value": "Grey."}]}
    # A leading answer is dropped, as upstream drops it; "<image>" stays where it stands.
    assert b["conversations"] == [{"from": "human", "value": "Who wrote this book?\n<image>"},
                                  {"from": "gpt", "value": "Someone."}]
    bad = tmp_path / "bad.json"
    samples[1]["conversations"].insert(1, {"from": "human", "value": "Again?"})
    bad.write_text(json.dumps(samples))
    with pytest.raises(SystemExit, match=r"bad.json: sample 1 \(b\): turns must alternate human, gpt "
                                         r"\(got human, human, gpt\)"):
        data_main.main(["llava", "--data", str(bad), "--images", str(images), "--out", str(out)])
    del samples[1]["conversations"][1]
    samples[0]["conversations"][2]["value"] = "<image>\nColour?"
    bad.write_text(json.dumps(samples))
    with pytest.raises(SystemExit, match=r"sample 0 \(a\): \"<image>\" must appear at most once, in the first"):
        data_main.main(["llava", "--data", str(bad), "--images", str(images), "--out", str(out)])
    assert len(read_jsonl(out)) == 2  # the earlier output stays


def test_caption_and_chat_data_trains(grandf_layout, llava_layout, tiny_dir, tmp_path):
    cli = os.environ.get("SA2VA_CLI")
    if not cli:
        pytest.skip("SA2VA_CLI not set")
    lines = list(convert.gcg_samples(convert.gcg_captions(str(grandf_layout[0]), "grandf", None)[0], 1,
                                     random.Random(0)))
    lines += convert.llava_samples(str(llava_layout[0]), str(llava_layout[1]), {})
    train_one_step(cli, lines, tiny_dir, tmp_path)


@pytest.fixture()
def osprey_layout(tmp_path):
    """Osprey-724K's layout: two files of entries (polygons, compressed RLE, runs) and COCO pictures
    in two of the four folders."""
    root = tmp_path / "data" / "osprey-724k"
    random_image(root / "coco" / "train2014" / "a.jpg", 40, 30, 0)
    random_image(root / "coco" / "val2017" / "b.jpg", 40, 30, 1)
    rle = masks.encode(box(30, 40, 5, 20, 10, 30))
    runs = {"size": [30, 40], "counts": masks.rle_counts(masks.encode(box(30, 40, 0, 10, 0, 10)))}
    polygon = [[2, 2, 30, 2, 30, 25, 2, 25]]

    def turn(role, value):
        return {"from": role, "value": value}
    conversation = [
        {"file_name": "a.jpg", "height": 30, "width": 40, "annotation": [{"segmentation": polygon}, {"segmentation": rle}],
         "conversations": [turn("human", "What is <region1>? "), turn("human", " And <region2>? "),
                           turn("gpt", "A <b>cat</b>."), turn("human", "Colour of region2?"), turn("gpt", "Grey."),
                           turn("human", "Left over?")]},
        {"file_name": "b.jpg", "height": 30, "width": 40, "annotation": [{"segmentation": runs}],
         "conversations": [turn("human", "Is region1 round?"), turn("gpt", "No.")]},
        {"file_name": "missing.jpg", "height": 30, "width": 40, "annotation": [{"segmentation": polygon}],
         "conversations": [turn("human", "What?"), turn("gpt", "A box.")]},
        {"file_name": "a.jpg", "height": 30, "width": 40, "annotation": [],
         "conversations": [turn("human", "What?"), turn("gpt", "Nothing.")]},
        {"file_name": "b.jpg", "height": 30, "width": 40, "annotation": [{"segmentation": polygon}],
         "conversations": [turn("human", "What?"), turn("gpt", " ")]},
        {"file_name": "b.jpg", "height": 30, "width": 40, "annotation": [{"segmentation": polygon}],
         "conversations": [turn("gpt", "Hello."), turn("human", "What?"), turn("gpt", "A box.")]},
        {"file_name": "a.jpg", "height": 31, "width": 40, "annotation": [{"segmentation": polygon}],
         "conversations": [turn("human", "What?"), turn("gpt", "A box.")]},
    ]
    description = [{"file_name": "b.jpg", "height": 30, "width": 40,
                    "annotation": [{"segmentation": polygon}, {"segmentation": runs}],
                    "description": ["A large <grey> box.", "A small corner."]}]
    files = root / "Osprey-724K"
    files.mkdir(parents=True)
    (files / "osprey_conversation.json").write_text(json.dumps(conversation))
    (files / "osprey_short_form.json").write_text(json.dumps(conversation[:2]))
    (files / "osprey_detail_description.json").write_text(json.dumps(description))
    return tmp_path / "data", root, conversation


def test_osprey_regions_and_texts_are_read_as_upstream_reads_them(osprey_layout, tmp_path, capsys):
    data, root, conversation = osprey_layout
    out = tmp_path / "osprey.jsonl"
    assert data_main.main(["osprey", "--data", str(data), "--form", "conversation", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "2 samples" in printed
    assert ("skipped 5 of 7 entries: 1 picture not found, 1 no region, 1 an empty answer, 1 a conversation "
            "starting with an answer, 1 a size that is not its picture's") in printed
    a, b = read_jsonl(out)
    assert a["image"] == str(root / "coco" / "train2014" / "a.jpg")
    assert b["image"] == str(root / "coco" / "val2017" / "b.jpg")  # the first folder that holds it
    assert a["masks"] == [] and len(a["regions"]) == 2
    assert a["regions"][0] == conversation[0]["annotation"][0]["segmentation"]
    assert masks.decode(a["regions"][1]).sum() == 15 * 20
    assert b["regions"][0]["size"] == [30, 40]  # runs compressed
    # Brackets removed, the first question's end stripped and the next joined as it is (as upstream
    # strips only the message holding the image), "<image>" first without a newline (the trainer's
    # region list ends in one), a question without answer dropped.
    assert a["conversations"] == [{"from": "human", "value": "<image>What is region1? And region2? "},
                                  {"from": "gpt", "value": "A bcat/b."},
                                  {"from": "human", "value": "Colour of region2?"}, {"from": "gpt", "value": "Grey."}]
    short = tmp_path / "short.jsonl"
    assert data_main.main(["osprey", "--data", str(data), "--form", "short", "--out", str(short)]) == 0
    assert read_jsonl(short)[1]["conversations"][0]["value"] == (
        "<image>Is region1 round? Answer the question using a single word or phrase.")
    described = tmp_path / "described.jsonl"
    assert data_main.main(["osprey", "--data", str(data), "--form", "description", "--repeats", "2", "--seed", "3",
                           "--out", str(described)]) == 0
    lines = read_jsonl(described)
    assert len(lines) == 2
    for line in lines:
        first, _, second, _ = [t["value"] for t in line["conversations"]]
        assert first.startswith("<image>") and "region1" in first and "<region>" not in first
        assert first[len("<image>"):] in [q.replace("<region>", "region1") for q in templates.DETAILED_QUESTIONS]
        assert second in [q.replace("<region>", "region2") for q in templates.DETAILED_QUESTIONS]
        assert [t["value"] for t in line["conversations"][1::2]] == ["A large grey box.", "A small corner."]
    assert lines[0] != lines[1] or len(templates.DETAILED_QUESTIONS) == 1  # two draws


def test_bad_osprey_entries_are_named(osprey_layout, tmp_path):
    data, root, conversation = osprey_layout
    path = root / "Osprey-724K" / "osprey_part_level.json"
    args = ["osprey", "--data", str(data), "--form", "part", "--out", str(tmp_path / "o.jsonl")]
    expect_each_refused(path, conversation, [
        (lambda d: d[0].pop("height"), r"entry 0: needs \"height\" and \"width\""),
        (lambda d: d[1]["annotation"][0].pop("segmentation"), r"entry 1: region 1 has no \"segmentation\""),
        (lambda d: d[0]["annotation"][0].update(segmentation=[[1, 2, 3]]), r"entry 0: region 1: polygon 0 has 3 numbers"),
        (lambda d: d[0]["annotation"][1]["segmentation"].update(size=[20, 40]),
         r"entry 0: region 2: a 20x40 mask for a 30x40 picture"),
        (lambda d: d[1]["conversations"].append({"from": "system", "value": "x"}), r"entry 1: turn 2 must be"),
        (lambda d: d[1]["conversations"][1].update(value="[SEG]"), r"entry 1: holds \"\[SEG\]\" but has no masks"),
        (lambda d: d[0]["annotation"][0].update(segmentation=[[1, 2, 3, 4, 5, float("nan")]]),
         r"entry 0: region 1: a polygon must be a list of numbers"),
    ], args)


def test_visual_prompt_data_trains(osprey_layout, tiny_dir, tmp_path):
    cli = os.environ.get("SA2VA_CLI")
    if not cli:
        pytest.skip("SA2VA_CLI not set")
    data, root, _ = osprey_layout
    lines = convert.osprey_samples(str(root / "Osprey-724K" / "osprey_conversation.json"), "conversation",
                                   [str(root / "coco" / "train2014"), str(root / "coco" / "val2017")], 1,
                                   random.Random(0), {})
    path = tmp_path / "regions.jsonl"
    convert.write_jsonl(str(path), iter(lines))
    run = subprocess.run([cli, "train", "--model", str(tiny_dir), "--data", str(path), "--out", str(tmp_path / "run"),
                          "--lora-r", "2", "--lora-alpha", "4", "--batch", "2", "--grad-accum", "1",
                          "--threads", "2"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    log = read_jsonl(tmp_path / "run" / "train_log.jsonl")
    assert len(log) == 1 and np.isfinite(log[0]["llm"]) and log[0]["llm"] > 0
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


def sav_object(i, k):
    """Object k's mask on annotated frame i of the synthetic SA-V video: each object and frame its own box."""
    return box(24, 32, 2 * k, 2 * k + 4 + i, 3 * k, 3 * k + 5 + i)


@pytest.fixture()
def refsav_layout(tmp_path):
    data = tmp_path / "data"
    sav = data / "video_datas" / "sam_v_full"
    frames = tmp_path / "sav_frames"

    def video(name, n_frames, objects, annotate=True, extract=True, every_frame=False, size=(24, 32)):
        rel = f"sav_000/sav_train/sav_000/{name}"
        if annotate:
            masklet = [[masks.encode(sav_object(i, k) if size == (24, 32) else np.zeros(size, np.uint8))
                        for k in range(3)] for i in range(n_frames)]
            (sav / rel).parent.mkdir(parents=True, exist_ok=True)
            (sav / f"{rel}_manual.json").write_text(json.dumps({"video_id": name, "masklet": masklet}))
        if extract:  # SA-V's script keeps every 4th frame under its number; ffmpeg writes them all
            for f in range(4 * n_frames) if every_frame else range(0, 4 * n_frames, 4):
                random_image(frames / name / f"{f:05d}.jpg", size[1], size[0], f)
        return {"video_id": name, "video_path": f"{rel}.mp4", "anno_path": f"{rel}_manual.json", "objects": objects}
    captions = {  # keys are masklet indices; listed out of order, object 1 has no caption
        "2": {"obj_id": 2, "formated": "A red ball rolls to the right. ", "short_caps": ["A red ball", "A ball"]},
        "0": {"obj_id": 0, "formated": "The man who waves.", "short_caps": ["A man waving"]}}
    expressions = {
        "sav_000001": video("sav_000001", 8, captions),
        "sav_000002": video("sav_000002", 3, {"1": {"formated": "Some box.", "short_caps": ["A box"]}},
                            every_frame=True, size=(20, 30)),
        "sav_000003": video("sav_000003", 2, {}),
        "sav_000004": video("sav_000004", 2, captions, annotate=False),
        "sav_000005": video("sav_000005", 2, captions, extract=False),
    }
    path = data / "video_datas" / "sam_v_final_v3.json"
    path.write_text(json.dumps(expressions))
    return data, frames, path


def sav_frame_numbers(line, video):
    assert all(os.path.dirname(p) == os.path.abspath(video) for p in line["frames"])
    numbers = [int(os.path.basename(p)[:-4]) for p in line["frames"]]
    assert all(n % 4 == 0 for n in numbers) and numbers == sorted(numbers)
    return [n // 4 for n in numbers]  # the annotated frames


def test_refsav_converter_draws_objects_and_frames_as_upstream(refsav_layout, tmp_path, capsys):
    data, frames, _ = refsav_layout
    out = tmp_path / "refsav.jsonl"
    assert data_main.main(["refsav", "--data", str(data), "--frame-dir", str(frames), "--frames", "5",
                           "--per-video", "4", "--repeats", "3", "--seed", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "6 samples" in printed
    assert "skipped 3 of 5 videos: 1 no objects, 1 annotation not found, 1 frames not extracted" in printed
    lines = read_jsonl(out)
    assert len(lines) == 6
    long = {"A red ball rolls to the right. ": 2, "The man who waves.": 0, "Some box.": 1}
    prefix = "Please segment the object according to the description: "
    for line, name in zip(lines, ["sav_000001", "sav_000002"] * 3):
        chosen = sav_frame_numbers(line, frames / name)
        if name == "sav_000001":  # 8 annotated frames > 5 + 1: no repeats
            assert len(set(chosen)) == 5
        else:  # 3 annotated frames: drawn with replacement, every frame extracted
            assert len(chosen) == 5 and set(chosen) <= {0, 1, 2}
        turns = line["conversations"]
        assert [t["from"] for t in turns] == ["human", "gpt"] * 4 and len(line["masks"]) == 4
        assert turns[0]["value"].startswith("<image>" + prefix)  # no newline, as refvos
        for k in range(4):
            question = turns[2 * k]["value"].removeprefix("<image>")
            assert question.startswith(prefix) and turns[2 * k + 1]["value"] in templates.ANSWER_LIST
            index = long[question.removeprefix(prefix)]  # the caption as written: case, spaces, full stop
            got = [masks.decode(m) for m in line["masks"][k]]
            size = (24, 32) if name == "sav_000001" else (20, 30)
            expected = [sav_object(f, index) if name == "sav_000001" else np.zeros(size, np.uint8) for f in chosen]
            assert all(np.array_equal(g, e) for g, e in zip(got, expected))
    again = tmp_path / "again.jsonl"
    data_main.main(["refsav", "--data", str(data), "--frame-dir", str(frames), "--frames", "5",
                    "--per-video", "4", "--repeats", "3", "--seed", "1", "--out", str(again)])
    assert again.read_text() == out.read_text()  # the seed decides


def test_refsav_short_captions(refsav_layout, tmp_path):
    data, frames, _ = refsav_layout
    videos, skipped, total = convert.refsav_videos(str(data), str(frames), "short")
    assert [v.name for v in videos] == ["sav_000001", "sav_000002"] and total == 5 and sum(skipped.values()) == 3
    phrases = {"red ball": 2, "ball": 2, "man waving": 0, "box": 1}  # every "A " removed, case kept
    for line in convert.refsav_samples(videos[:1], 3, 5, "short", 4, random.Random(0)):
        chosen = sav_frame_numbers(line, frames / "sav_000001")
        for k in range(5):
            question = line["conversations"][2 * k]["value"].removeprefix("<image>")
            phrase = next(p for p in sorted(phrases, key=len, reverse=True)
                          if question in [q.format(class_name=p) for q in templates.SEG_QUESTIONS])
            assert line["masks"][k] == [masks.encode(sav_object(f, phrases[phrase])) for f in chosen]
    # Either kind per sample, drawn anew for each.
    kinds = set()
    for line in convert.refsav_samples(videos, 2, 3, "long_short", 8, random.Random(0)):
        questions = [t["value"] for t in line["conversations"][0::2]]
        long = ["the description:" in q for q in questions]
        assert len(set(long)) == 1
        kinds.add(long[0])
    assert kinds == {True, False}


def test_bad_refsav_data_ends_in_a_message_naming_the_file(refsav_layout, tmp_path):
    data, frames, path = refsav_layout
    out = tmp_path / "r.jsonl"
    out.write_text("earlier\n")
    args = ["refsav", "--data", str(data), "--frame-dir", str(frames), "--frames", "3", "--out", str(out)]
    expressions = json.loads(path.read_text())
    manual = data / "video_datas" / "sam_v_full" / "sav_000" / "sav_train" / "sav_000" / "sav_000002_manual.json"
    cases = [
        (lambda e: e["sav_000001"]["objects"].update({"x": {"formated": "y"}}),
         r"sam_v_final_v3.json: video sav_000001, object x: an object's key must be its masklet index"),
        (lambda e: e["sav_000001"]["objects"]["0"].pop("formated"),
         r"video sav_000001, object 0: no string \"formated\""),
        (lambda e: e["sav_000001"].update(objects={"7": {"formated": "absent"}}),
         r"sav_000001_manual.json: annotated frame \d, object 7: the frame has 3 objects"),
        (lambda e: e["sav_000001"].pop("anno_path"), r"video sav_000001: no str \"anno_path\""),
        (lambda e: e["sav_000002"]["objects"]["1"].update(formated="a [SEG]"),
         r"video sav_000002, object 1: a caption holds \"\[SEG\]\""),
    ]
    expect_each_refused(path, expressions, cases, args)
    path.write_text(json.dumps({"v": dict(expressions["sav_000001"], objects={"0": {"formated": "x"}})}))
    with pytest.raises(SystemExit, match=r"object 0: \"short_caps\" must be a non-empty list of strings "
                                         r"\(needed by --mode short\)"):
        data_main.main(args + ["--mode", "short"])
    path.write_text(json.dumps(expressions))
    masklet = json.loads(manual.read_text())
    for per_object in masklet["masklet"]:
        per_object[1] = masks.encode(np.zeros((10, 10), np.uint8))
    manual.write_text(json.dumps(masklet))
    with pytest.raises(SystemExit, match=r"sav_000002_manual.json: annotated frame \d, object 1: "
                                         r"a 10x10 mask for a 20x30 picture"):
        data_main.main(args)
    manual.write_text(json.dumps({"video_id": "sav_000002"}))
    with pytest.raises(SystemExit, match=r"sav_000002_manual.json: \"masklet\" must be a non-empty list"):
        data_main.main(args)
    manual.write_text("{broken")
    with pytest.raises(SystemExit, match=r"sav_000002_manual.json: not valid JSON"):
        data_main.main(args)
    for f in (frames / "sav_000001").iterdir():
        f.unlink()
    with pytest.raises(SystemExit, match=r"sav_000001/\d{5}.jpg: missing \(annotated frame \d of video sav_000001\)"):
        data_main.main(args)
    assert out.read_text() == "earlier\n" and not os.path.exists(str(out) + ".partial")
    with pytest.raises(SystemExit, match=r"no usable video \(3 frames not extracted, 1 no objects, "
                                         r"1 annotation not found of 5 skipped\)"):
        data_main.main(["refsav", "--data", str(data), "--frame-dir", str(tmp_path / "none"), "--out", str(out)])


@pytest.fixture()
def chatunivi_layout(tmp_path):
    data = tmp_path / "data"
    frames = tmp_path / "chat_frames"
    for folder, count in (("v_long", 12), ("v_short", 3), ("clips/v_sub", 6)):
        for f in range(count):
            random_image(frames / folder / f"{f:05d}.jpg", 32, 24, f)

    def turn(role, value):
        return {"from": role, "value": value}
    samples = [
        {"id": "a", "video": "v_long.mp4", "conversations": [
            turn("human", "<image>\nWhat happens in the video?"), turn("gpt", "A man runs."),
            turn("human", "Where?"), turn("gpt", "On a beach.")]},
        {"id": "b", "video": "v_short.mkv", "conversations": [  # the extension does not matter
            turn("human", "Describe it.\n<image>"), turn("gpt", " It is short. ")]},
        {"id": "c", "video": "v_missing.mp4", "conversations": [turn("human", "<image>\nWhat?"), turn("gpt", "No.")]},
        {"id": "d", "video": "v_long.mp4", "conversations": [turn("human", "<image>\nWhat?"), turn("gpt", " ")]},
        {"id": "e", "video": "clips/v_sub.mp4", "conversations": [
            turn("human", "<image>\nWho?"), turn("gpt", "A dog.")]},
    ]
    path = data / "video_datas" / "chat_univi" / "video_chat.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(samples))
    return data, frames, path, samples


def test_chatunivi_draws_one_frame_per_part_and_keeps_the_chat(chatunivi_layout, tmp_path, capsys):
    data, frames, _, _ = chatunivi_layout
    out = tmp_path / "chat.jsonl"
    assert data_main.main(["chatunivi", "--data", str(data), "--frame-dir", str(frames), "--repeats", "4",
                           "--seed", "3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "12 samples" in printed
    assert "skipped 2 of 5 samples: 1 frames not extracted, 1 an empty answer" in printed
    lines = read_jsonl(out)
    assert [os.path.dirname(line["frames"][0]) for line in lines] == \
        [str(frames / "v_long"), str(frames / "v_short"), str(frames / "clips" / "v_sub")] * 4
    drawn = set()
    for line in lines:
        assert line["masks"] == []
        numbers = [int(os.path.basename(p)[:-4]) for p in line["frames"]]
        assert all(os.path.exists(p) for p in line["frames"])
        folder = os.path.basename(os.path.dirname(line["frames"][0]))
        if folder == "v_long":  # 12 frames cut at linspace(0, 12, 6) -> 0, 2, 4, 7, 9, 12: one from each part
            assert all(lo <= n < hi for n, lo, hi in zip(numbers, [0, 2, 4, 7, 9], [2, 4, 7, 9, 12]))
            assert len(numbers) == 5
            drawn.add(tuple(numbers))
            assert line["conversations"] == [
                {"from": "human", "value": "<image>\nWhat happens in the video?"},
                {"from": "gpt", "value": "A man runs."},
                {"from": "human", "value": "Where?"}, {"from": "gpt", "value": "On a beach."}]
        elif folder == "v_short":  # no more frames than asked for: all of them
            assert numbers == [0, 1, 2]
            # "<image>" removed where it stood and put first; nothing stripped, as upstream.
            assert line["conversations"] == [{"from": "human", "value": "<image>Describe it.\n"},
                                             {"from": "gpt", "value": " It is short. "}]
        else:  # 6 frames: parts [0, 1), [1, 2), [2, 3), [3, 4), [4, 6)
            assert numbers[:4] == [0, 1, 2, 3] and numbers[4] in (4, 5)
    assert len(drawn) > 1  # drawn anew per line
    again = tmp_path / "again.jsonl"
    data_main.main(["chatunivi", "--data", str(data), "--frame-dir", str(frames), "--repeats", "4",
                    "--seed", "3", "--out", str(again)])
    assert again.read_text() == out.read_text()


def test_bad_chatunivi_data_ends_in_a_message_naming_the_file(chatunivi_layout, tmp_path):
    data, frames, path, samples = chatunivi_layout
    out = tmp_path / "c.jsonl"
    out.write_text("earlier\n")
    args = ["chatunivi", "--data", str(data), "--frame-dir", str(frames), "--out", str(out)]
    cases = [
        (lambda s: s[0]["conversations"].pop(), r"video_chat.json: sample 0 \(a\): needs as many human turns as "
                                                r"gpt turns, at least one \(got 2 and 1\)"),
        (lambda s: s[1]["conversations"][1].update(value="Sure, [SEG]."), r"sample 1 \(b\): holds \"\[SEG\]\""),
        (lambda s: s[4].pop("video"), r"sample 4 \(e\): no str \"video\""),
        (lambda s: s[4]["conversations"][1].update({"from": "bot"}), r"sample 4 \(e\): turn 1 must be"),
    ]
    expect_each_refused(path, samples, cases, args)
    path.write_text(json.dumps(samples))
    (frames / "v_long" / "00005.jpg").unlink()
    with pytest.raises(SystemExit, match=r"v_long: frame 00005.jpg is missing \(frames are numbered from 00000"):
        data_main.main(args)
    (frames / "v_long" / "frame_5.jpg").write_bytes(b"")
    with pytest.raises(SystemExit, match=r"v_long: frame_5.jpg is not a frame name as ffmpeg's %05d.jpg writes it"):
        data_main.main(args)
    path.write_text("{broken")
    with pytest.raises(SystemExit, match="video_chat.json: not valid JSON"):
        data_main.main(args)
    assert out.read_text() == "earlier\n" and not os.path.exists(str(out) + ".partial")


def test_video_referring_and_chat_data_trains(refsav_layout, chatunivi_layout, tiny_dir, tmp_path):
    cli = os.environ.get("SA2VA_CLI")
    if not cli:
        pytest.skip("SA2VA_CLI not set")
    videos, _, _ = convert.refsav_videos(str(refsav_layout[0]), str(refsav_layout[1]), "long")
    lines = list(convert.refsav_samples(videos[:1], 2, 2, "long", 1, random.Random(0)))
    _, chats = convert.chatunivi_chats(str(chatunivi_layout[0]), str(chatunivi_layout[1]), {})
    lines += list(convert.chatunivi_samples(chats[:1], 2, 1, random.Random(0)))
    train_one_step(cli, lines, tiny_dir, tmp_path)


def refused(args):
    """The one-line message a conversion ends with (no traceback)."""
    with pytest.raises(SystemExit) as e:
        data_main.main([str(a) for a in args])
    message = e.value.code
    assert isinstance(message, str) and "\n" not in message, message
    return message


def test_bad_video_entries_are_named(mevis_layout, tmp_path):
    data, frames, _, _ = mevis_layout
    base = data / "video_datas" / "mevis" / "train"
    out = tmp_path / "m.jsonl"
    out.write_text("earlier\n")
    args = ["refvos", "--data", data, "--dataset", "mevis", "--out", out]
    mask_path = base / "mask_dict.json"
    mask_dict = json.loads(mask_path.read_text())
    for entry, message in (([5, 5], r"mask_dict.json: annotation 0, frame \d: not a COCO RLE"),
                           ({"size": [24, 32], "counts": "zz"}, r"mask_dict.json: annotation 0, frame \d: .*outside"),
                           ({"size": [24, 32], "counts": [5]}, r"mask_dict.json: annotation 0, frame \d: RLE runs cover "
                                                               r"5 pixels, not 24 x 32")):
        mask_path.write_text(json.dumps(dict(mask_dict, **{"0": [entry] * len(frames)})))
        assert re.search(message, refused(args))
    mask_path.write_text(json.dumps(mask_dict))
    meta_path = base / "meta_expressions.json"
    meta = json.loads(meta_path.read_text())
    cases = [
        (lambda m: m["videos"]["vid"]["expressions"]["0"].pop("exp"),
         r"meta_expressions.json: video vid, expression 0: no string \"exp\""),
        (lambda m: m["videos"]["vid"].pop("frames"), r"meta_expressions.json: video vid: no \"frames\" list"),
        (lambda m: m["videos"]["vid"].update(expressions=[]), r"meta_expressions.json: video vid: no \"expressions\" object"),
        # Nothing to draw from: refused, not an empty file.
        (lambda m: m.update(videos={}), r"meta_expressions.json: no usable video"),
        (lambda m: m["videos"]["vid"].update(expressions={}), r"meta_expressions.json: no usable video"),
    ]
    expect_each_refused(meta_path, meta, cases, [str(a) for a in args])
    assert out.read_text() == "earlier\n" and sorted(p.name for p in tmp_path.iterdir()) == ["data", "m.jsonl"]


def test_bad_refcoco_entries_are_named(refcoco_layout, tmp_path, capsys):
    data, _ = refcoco_layout
    root = data / "ref_seg" / "refcocog"
    out = tmp_path / "r.jsonl"
    args = ["refcoco", "--data", data, "--dataset", "refcocog", "--per-image", "12", "--out", out]
    refs_path = root / "refs(umd).p"
    refs = pickle.loads(refs_path.read_bytes())
    instances_path = root / "instances.json"
    instances = json.loads(instances_path.read_text())

    def write_refs(value):
        with open(refs_path, "wb") as f:
            pickle.dump(value, f, protocol=2)

    # "raw" alone is enough (the sentence as written); without either text the ref is named.
    write_refs([dict(refs[0], sentences=[{"raw": "The Left Thing."}])] + refs[1:])
    assert data_main.main([str(a) for a in args]) == 0
    assert "the left thing" in out.read_text()
    write_refs([dict(refs[0], sentences=[{"tokens": ["x"]}])] + refs[1:])
    assert re.search(r"refs\(umd\).p: ref 1: a sentence needs \"raw\" or \"sent\"", refused(args))
    write_refs([dict(r, sentences=[]) for r in refs])
    assert re.search(r"refs\(umd\).p: no sentences in split 'train'", refused(args))
    write_refs([{k: v for k, v in r.items() if k != "split"} for r in refs])
    assert re.search(r"refs\(umd\).p: expected a list of refs, each with a \"split\"", refused(args))
    write_refs(refs)
    capsys.readouterr()
    expect_each_refused(instances_path, instances, [
        (lambda i: i["annotations"][0].pop("segmentation"), r"instances.json: annotation 1: no \"segmentation\""),
        (lambda i: i["annotations"][0].update(segmentation=[[1, 2, 3]]),
         r"instances.json: annotation 1: segmentation entry 0 has 3 numbers"),
        (lambda i: i["annotations"][0].update(segmentation=[[2, 2, 20, 2, 20, 16], "x"]),
         r"instances.json: annotation 1: a polygon must be a list of numbers"),
        (lambda i: i["annotations"][1].update(segmentation={"size": [24, 32], "counts": "zz"}),
         r"instances.json: annotation 2: .*outside"),
        (lambda i: i["images"][0].pop("height"), r"instances.json: image 7: no integer \"height\" and \"width\""),
        (lambda i: i.pop("annotations"), r"instances.json: no \"annotations\" list"),
    ], [str(a) for a in args])
    # Upstream rasterises each polygon of an object alone: a 4-number entry is a box wherever it stands.
    boxed = json.loads(json.dumps(instances))
    boxed["annotations"][0]["segmentation"] = [[2, 2, 20, 2, 20, 16], [24, 2, 4, 6]]
    boxed["annotations"][2]["segmentation"] = [[0, 0, 30, 10]]
    instances_path.write_text(json.dumps(boxed))
    assert data_main.main([str(a) for a in args]) == 0
    written = [m for line in read_jsonl(out) for m in line["masks"]]
    assert [[2, 2, 20, 2, 20, 16], [24, 2, 24, 8, 28, 8, 28, 2]] in written
    assert [[0, 0, 0, 10, 30, 10, 30, 0]] in written


def test_bad_caption_masks_are_refused(grandf_layout, tmp_path):
    data, _ = grandf_layout
    path = data / "glamm_data" / "annotations" / "GranDf_HA_GCG_train.json"
    pictures = json.loads(path.read_text())
    args = ["gcg", "--data", data, "--dataset", "grandf", "--out", tmp_path / "g.jsonl"]
    for rle, message in (({"size": [24, 32], "counts": "zz"}, r"entry 0 \(g1.jpg\), grounding 'A cat': .*outside"),
                         ({"size": [24, 32], "counts": [5]},
                          r"entry 0 \(g1.jpg\), grounding 'A cat': RLE runs cover 5 pixels, not 24 x 32")):
        broken = json.loads(json.dumps(pictures))
        broken[0]["groundings"]["A cat"]["rle_masks"] = [rle]
        path.write_text(json.dumps(broken))
        assert re.search(message, refused(args))


def test_write_jsonl_uses_its_own_temporary_file(tmp_path):
    """Two conversions into one file at once (simulated by starting the second from inside the first)
    each write their own temporary file; the last to finish wins, nothing is left beside it."""
    path = tmp_path / "out.jsonl"

    def samples():
        yield {"n": 1}
        convert.write_jsonl(str(path), iter([{"n": "other"}]))
        yield {"n": 2}

    assert convert.write_jsonl(str(path), samples()) == 2
    assert read_jsonl(path) == [{"n": 1}, {"n": 2}] and [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_unforeseen_data_errors_end_in_one_line(monkeypatch, tmp_path):
    def broken(*_):
        raise KeyError("segmentation")
    monkeypatch.setattr(convert, "refcoco_samples", broken)
    assert refused(["refcoco", "--data", tmp_path, "--dataset", "refcoco", "--out", tmp_path / "x"]) == \
        "error: KeyError: 'segmentation'"
