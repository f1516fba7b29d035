"""The Python module against the conformance fixtures and against the `sa2va` program."""
import gc
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import sa2va
from conftest import REPO, iou, read_safetensors

# Masks may differ from the goldens on pixels whose logit is within ~1e-4 of 0.
MIN_IOU = 0.99


def golden(tiny_dir: Path, case: str) -> dict:
    return read_safetensors(tiny_dir / "goldens" / f"{case}.safetensors")


def run_cli(cli, model_dir, out_dir, *args) -> dict:
    """`sa2va run` in f32 with --out; returns result.json."""
    command = [str(cli), "run", "--model", str(model_dir), "--precision", "f32", "--out", str(out_dir), *map(str, args)]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads((out_dir / "result.json").read_text())


def png_mask(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L")) > 0


# ---- images ---------------------------------------------------------------------------------------


def test_image_masks_match_the_upstream_goldens(tiny_model, tiny_dir, tiny_meta):
    case = tiny_meta["image"]
    out = tiny_model.predict_forward(image=Image.open(tiny_dir / case["image"]), text=case["prompt"],
                                     answer=case["answer"])
    assert out["prediction"] == case["prediction"]
    masks = out["prediction_masks"]
    assert len(masks) == 1
    assert masks[0].dtype == np.bool_ and masks[0].shape == (1, case["height"], case["width"])
    assert iou(masks[0], golden(tiny_dir, "image")["seg0.mask"]) >= MIN_IOU
    assert len(out["scores"]) == 1 and 0.0 <= out["scores"][0] <= 1.0
    assert out["phrases"] == [""]
    assert out["content"] == "Sure, [SEG]." and out["finish_reason"] == "stop"


def test_an_image_is_the_same_as_a_path_a_pil_image_or_an_array(tiny_model, tiny_dir, tiny_meta):
    case = tiny_meta["image"]
    path = tiny_dir / case["image"]
    results = [
        tiny_model.predict_forward(image=image, text=case["prompt"], answer=case["answer"])
        for image in (str(path), path, Image.open(path), Image.open(path).convert("RGBA"),
                      np.asarray(Image.open(path).convert("RGB")))
    ]
    for r in results[1:]:
        assert r["prediction"] == results[0]["prediction"]
        np.testing.assert_array_equal(r["prediction_masks"][0], results[0]["prediction_masks"][0])


def test_grounded_caption_pairs_phrases_with_masks(tiny_model, tiny_dir, tiny_meta):
    case = tiny_meta["multiseg"]
    out = tiny_model.predict_forward(image=Image.open(tiny_dir / case["image"]), text=case["prompt"],
                                     answer=case["answer"])
    assert out["prediction"] == case["prediction"]
    assert out["phrases"] == ["a", "b"]
    assert out["caption"] == sa2va.clean_caption(case["prediction"]) == "a and b ."  # upstream keeps the space before "."
    gold = golden(tiny_dir, "multiseg")
    assert len(out["prediction_masks"]) == 2
    for k, mask in enumerate(out["prediction_masks"]):
        assert iou(mask, gold[f"seg{k}.mask"]) >= MIN_IOU


def test_visual_prompts_in_upstream_form(tiny_model, tiny_dir, tiny_meta):
    case = tiny_meta["vp"]
    gold = golden(tiny_dir, "vp")
    regions = gold["mask_prompts_u8"].astype(bool)  # [2, H, W]
    out = tiny_model.predict_forward(image=Image.open(tiny_dir / case["image"]), text=case["prompt"],
                                     mask_prompts=[regions], answer=case["answer"])
    assert iou(out["prediction_masks"][0], gold["seg0.mask"]) >= MIN_IOU
    # One HxW array per region gives the same answer.
    again = tiny_model.predict_forward(image=Image.open(tiny_dir / case["image"]), text=case["prompt"],
                                       mask_prompts=[regions[0], regions[1]], answer=case["answer"])
    np.testing.assert_array_equal(again["prediction_masks"][0], out["prediction_masks"][0])


# ---- video ----------------------------------------------------------------------------------------


def video_frames(tiny_dir, case):
    return [Image.open(tiny_dir / f) for f in case["frames"]]


@pytest.fixture(scope="module")
def video_result(tiny_model, tiny_dir, tiny_meta):
    """The video case asked with its frames as a list of PIL images."""
    case = tiny_meta["video"]
    return tiny_model.predict_forward(video=video_frames(tiny_dir, case), text=case["prompt"], answer=case["answer"])


def test_video_masks_match_the_upstream_goldens(tiny_model, tiny_dir, tiny_meta, video_result):
    case = tiny_meta["video"]
    gold = golden(tiny_dir, "video")["seg0.mask"]
    frames = video_frames(tiny_dir, case)
    assert video_result["prediction"] == case["prediction"]
    masks = video_result["prediction_masks"][0]
    assert masks.shape == (len(frames), case["height"], case["width"]) and masks.dtype == np.bool_
    for t in range(len(frames)):
        assert iou(masks[t], gold[t]) >= MIN_IOU, f"frame {t}"


def test_video_masks_stream_frame_by_frame(tiny_model, tiny_dir, tiny_meta, video_result):
    case = tiny_meta["video"]
    frames = video_frames(tiny_dir, case)
    whole = video_result
    # The same video as a TxHxWx3 array (a frame folder: see the comparison with the program).
    stacked = np.stack([np.asarray(f.convert("RGB")) for f in frames])
    stream = tiny_model.predict_stream(video=stacked, text=case["prompt"], answer=case["answer"])
    assert stream.answer()["prediction"] == case["prediction"]
    seen = []
    for frame_index, masks in stream:
        assert len(masks) == 1
        np.testing.assert_array_equal(masks[0], whole["prediction_masks"][0][frame_index])
        seen.append(frame_index)
    assert seen == list(range(len(frames)))
    assert stream.answer()["scores"] == whole["scores"]
    # An image streams as one frame.
    image_case = tiny_meta["image"]
    image_stream = list(tiny_model.predict_stream(image=tiny_dir / image_case["image"], text=image_case["prompt"],
                                                  answer=image_case["answer"]))
    assert [index for index, _ in image_stream] == [0] and len(image_stream[0][1]) == 1


def test_a_stream_dropped_early_stops_and_frees_the_model(tiny_model, tiny_dir, tiny_meta):
    case = tiny_meta["video"]
    stream = tiny_model.predict_stream(video=video_frames(tiny_dir, case), text=case["prompt"], answer=case["answer"])
    assert next(iter(stream))[0] == 0
    del stream
    gc.collect()
    # The model still answers.
    assert tiny_model.predict_forward(text="Hello", max_new_tokens=2)["prediction_masks"] == []


def test_ctrl_c_cancels_a_stream_and_reaches_the_caller(tiny_model, tiny_dir, tiny_meta):
    """Python runs signal handlers only when it gets control: while the main thread waits in C++ for
    the next frame, it takes it every 100 ms; the handler's exception is raised and the prediction
    cancelled (the frames after it never come). predict_forward takes it the same way."""
    class Interrupted(Exception):
        pass

    def interrupt(signum, frame):
        raise Interrupted

    case = tiny_meta["video"]
    frames = video_frames(tiny_dir, case) * 3
    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        stream = tiny_model.predict_stream(video=frames, text=case["prompt"], answer=case["answer"])
        received = []
        ctrl_c = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT))
        ctrl_c.start()  # while next() waits for a frame (each takes far longer than handing one over)
        with pytest.raises(Interrupted):
            for index, _ in stream:
                received.append(index)
        ctrl_c.join()
        received += [index for index, _ in stream]
        assert len(received) < len(frames) - 1, "the stream ran on after Ctrl+C"  # (one frame may be lost in the raise)

        ctrl_c = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT))
        ctrl_c.start()
        with pytest.raises(Interrupted):
            tiny_model.predict_forward(video=frames, text=case["prompt"], answer=case["answer"])
        ctrl_c.join()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert tiny_model.predict_forward(text="Hello", max_new_tokens=2)["prediction_masks"] == []


# ---- the same answers as the program --------------------------------------------------------------


@pytest.mark.parametrize("scenario", ["generated", "segmentation", "grounded caption", "visual prompt"])
def test_image_requests_give_the_same_text_and_masks_as_the_program(scenario, tiny_model, tiny_dir, tiny_meta, cli,
                                                                   tmp_path):
    case = tiny_meta[{"generated": "image", "segmentation": "image", "grounded caption": "multiseg",
                      "visual prompt": "vp"}[scenario]]
    image = tiny_dir / case["image"]
    args, kwargs = [], {}
    if scenario == "generated":  # free generation: the tiny model's answer has no [SEG]
        args, kwargs = ["--max-new-tokens", 6], {"max_new_tokens": 6}
    else:
        args, kwargs = ["--answer", case["answer"]], {"answer": case["answer"]}
    if scenario == "visual prompt":
        regions = golden(tiny_dir, "vp")["mask_prompts_u8"].astype(bool)
        for k, region in enumerate(regions):
            Image.fromarray(region.astype(np.uint8) * 255).save(tmp_path / f"region{k + 1}.png")
            args += ["--mask-prompt", tmp_path / f"region{k + 1}.png"]
        kwargs["mask_prompts"] = [regions]
    result = run_cli(cli, tiny_dir, tmp_path / "out", "--image", image, "--prompt", case["prompt"], *args)
    out = tiny_model.predict_forward(image=image, text=case["prompt"], **kwargs)
    assert out["prediction"] == result["text"]
    assert out["past_text"] == result["past_text"]
    assert out["caption"] == result["caption"]
    assert out["phrases"] == [m["phrase"] for m in result["masks"]]
    assert len(out["prediction_masks"]) == len(result["masks"]) == (0 if scenario == "generated" else case["num_seg"])
    for k, mask in enumerate(out["prediction_masks"]):
        np.testing.assert_array_equal(mask[0], png_mask(tmp_path / "out" / "masks" / f"{k}.png"))


def test_a_later_turn_and_a_text_only_turn_match_the_program(tiny_model, tiny_dir, tiny_meta, cli, tmp_path):
    case = tiny_meta["image"]
    image = tiny_dir / case["image"]
    first = tiny_model.predict_forward(image=image, text=case["prompt"], answer=case["answer"])
    # A later turn about the same image: the image is passed again with the previous past_text.
    second = tiny_model.predict_forward(image=image, text="And the blue box?", past_text=first["past_text"],
                                        answer=case["answer"])
    result = run_cli(cli, tiny_dir, tmp_path / "turn2", "--image", image, "--prompt", "And the blue box?",
                     "--past-text", first["past_text"], "--answer", case["answer"])
    assert second["prediction"] == result["text"] and second["past_text"] == result["past_text"]
    assert second["past_text"].startswith(first["past_text"])
    np.testing.assert_array_equal(second["prediction_masks"][0][0], png_mask(tmp_path / "turn2" / "masks" / "0.png"))
    # Text only: no visual input, so a [SEG] in the answer gives no mask.
    text_only = tiny_model.predict_forward(text="Hello there", answer=case["answer"])
    result = run_cli(cli, tiny_dir, tmp_path / "text", "--prompt", "Hello there", "--answer", case["answer"])
    assert text_only["prediction"] == result["text"] and text_only["prediction_masks"] == []
    assert result["masks"] == []


def test_video_gives_the_same_masks_as_the_program(tiny_model, tiny_dir, tiny_meta, cli, tmp_path, video_result):
    case = tiny_meta["video"]
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, f in enumerate(case["frames"]):
        shutil.copy(tiny_dir / f, folder / f"{i:05d}.png")
    result = run_cli(cli, tiny_dir, tmp_path / "out", "--video", folder, "--prompt", case["prompt"],
                     "--answer", case["answer"])
    out = tiny_model.predict_forward(video=folder, text=case["prompt"], answer=case["answer"])
    assert out["prediction"] == result["text"]
    np.testing.assert_array_equal(out["prediction_masks"][0], video_result["prediction_masks"][0])
    for t in range(len(case["frames"])):
        np.testing.assert_array_equal(out["prediction_masks"][0][t],
                                      png_mask(tmp_path / "out" / "masks" / "0" / f"{t:05d}.png"))


# ---- errors ---------------------------------------------------------------------------------------


def test_library_errors_raise_sa2va_error(tiny_model, tiny_dir, tmp_path):
    with pytest.raises(sa2va.Error, match="no-such-model"):
        sa2va.Model(tmp_path / "no-such-model")
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    with pytest.raises(sa2va.Error, match="corrupt.png"):
        tiny_model.predict_forward(image=corrupt, text="<image>What is this?")
    with pytest.raises(sa2va.Error, match="empty prompt"):
        tiny_model.predict_forward(text="   ")
    with pytest.raises(sa2va.Error, match="not both"):
        tiny_model.predict_forward(image=np.zeros((4, 4, 3), np.uint8), video=[np.zeros((4, 4, 3), np.uint8)], text="hi")
    with pytest.raises(sa2va.Error, match="need an image"):
        tiny_model.predict_forward(text="hi", mask_prompts=[np.ones((4, 4), bool)])
    with pytest.raises(sa2va.Error, match="no frames"):
        tiny_model.predict_forward(video=[], text="<image>hi")
    with pytest.raises(sa2va.Error, match="precision"):
        sa2va.Model(tiny_dir, precision="fp8")
    with pytest.raises(sa2va.Error, match="max_new_tokens"):
        tiny_model.predict_forward(text="hi", max_new_tokens=0)
    # A folder given as an image, a path with a NUL (which would open a shorter path), an empty mask.
    with pytest.raises(sa2va.Error, match=f"{tmp_path}: a folder, not an image file"):
        tiny_model.predict_forward(image=tmp_path, text="<image>hi")
    with pytest.raises(ValueError, match="image: embedded null byte"):
        tiny_model.predict_forward(image=str(tiny_dir / "inputs" / "image.png") + "\0.txt", text="<image>hi")
    with pytest.raises(ValueError, match="path: embedded null byte"):
        sa2va.Model(str(tiny_dir) + "\0junk")
    with pytest.raises(sa2va.Error, match=r"mask_prompts\[0\]: the mask is empty"):
        tiny_model.predict_forward(image=np.zeros((4, 4, 3), np.uint8), text="<image>hi",
                                   mask_prompts=[np.zeros((0, 5), bool)])
    assert issubclass(sa2va.Error, RuntimeError)


def test_stop_ends_the_content_before_the_stop_string(tiny_model):
    whole = tiny_model.predict_forward(text="Tell me a story.", max_new_tokens=24)
    content = whole["content"]
    stop = content[len(content) // 2:len(content) // 2 + 2]
    assert stop
    for given in (stop, [stop, "never in this answer"]):
        stopped = tiny_model.predict_forward(text="Tell me a story.", max_new_tokens=24, stop=given)
        assert stopped["content"] == content[:content.index(stop)]
        assert stopped["finish_reason"] == "stop"


def test_a_failed_stream_keeps_its_error_for_the_answer(tiny_model, tiny_dir, tiny_meta, tmp_path):
    case = tiny_meta["video"]
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, f in enumerate(case["frames"]):
        shutil.copy(tiny_dir / f, folder / f"{i:05d}.png")
    (folder / "00002.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    stream = tiny_model.predict_stream(video=folder, text=case["prompt"], answer=case["answer"])
    with pytest.raises(sa2va.Error, match="00002.png"):
        for _ in stream:
            pass
    with pytest.raises(sa2va.Error, match="00002.png"):  # the same error, not "cancelled"
        stream.answer()
    assert list(stream) == []


def test_wrong_argument_types_raise_type_error_naming_the_argument(tiny_model, tiny_dir):
    cases = [
        (dict(text=42), "text"),
        (dict(text=None), "text"),
        (dict(text="hi", past_text=3), "past_text"),
        (dict(image=np.zeros((4, 4, 3), np.float32), text="<image>hi"), "image"),
        (dict(image=np.zeros((4, 4), np.uint8), text="<image>hi"), "image"),
        (dict(image=3.5, text="<image>hi"), "image"),
        (dict(video=[np.zeros((4, 4, 3), np.uint8), 7], text="<image>hi"), r"video\[1\]"),
        (dict(video=12, text="<image>hi"), "video"),
        (dict(image=np.zeros((4, 4, 3), np.uint8), text="<image>hi", mask_prompts=[np.ones((4, 4), np.float32)]),
         r"mask_prompts\[0\]"),
        (dict(text="hi", max_new_tokens="5"), "max_new_tokens"),
        (dict(text="hi", temperature="hot"), "temperature"),
        (dict(text="hi", uniform_frames=1), "uniform_frames"),
        (dict(text="hi", no_such_option=1), "no_such_option"),
        (dict(text="hi", temperature=True), "temperature"),
    ]
    for kwargs, name in cases:
        with pytest.raises(TypeError, match=name):
            tiny_model.predict_forward(**kwargs)
    with pytest.raises(TypeError, match="stop"):
        tiny_model.predict_forward(text="hi", stop=3)
    with pytest.raises(TypeError, match=r"stop\[1\]"):
        tiny_model.predict_forward(text="hi", stop=["a", 3])
    with pytest.raises(TypeError, match=r"predict_stream\(\) got an unexpected keyword argument 'foo'"):
        tiny_model.predict_stream(text="hi", foo=1)
    # numpy scalars are numbers, and a uint8 dtype carrying metadata is still uint8.
    assert isinstance(tiny_model.predict_forward(text="hi", temperature=np.float32(0.0),
                                                 max_new_tokens=np.int64(2))["prediction"], str)
    tagged = np.zeros((4, 4, 3), np.uint8).view(np.dtype("u1", metadata={"source": "camera"}))
    assert isinstance(tiny_model.predict_forward(image=tagged, text="<image>hi", max_new_tokens=2)["prediction"], str)
    with pytest.raises(TypeError, match="path"):
        sa2va.Model(123)
    # Objects made by __new__ alone have no model behind them: TypeError, not a crash.
    for cls, use in ((sa2va.Model, lambda o: o.template_name), (sa2va.Model, lambda o: o.predict_forward(text="hi")),
                     (sa2va.Model, lambda o: o.predict_stream(text="hi")), (sa2va.MaskStream, lambda o: o.answer()),
                     (sa2va.MaskStream, lambda o: next(o))):
        with pytest.raises(TypeError, match="not initialised"):
            use(cls.__new__(cls))
    with pytest.raises(TypeError, match="threads"):
        sa2va.Model(tiny_dir, threads="many")


def test_values_python_holds_but_the_library_cannot_take_are_refused_by_name(tiny_model, tiny_dir, tmp_path):
    image = np.zeros((8, 8, 3), np.uint8)
    # A lone surrogate (what bytes decoded with errors="surrogateescape" leave) has no UTF-8 form.
    with pytest.raises(ValueError, match="text.*UTF-8"):
        tiny_model.predict_forward(image=image, text="<image>\udcff")
    with pytest.raises(ValueError, match="answer.*UTF-8"):
        tiny_model.predict_forward(image=image, text="<image>hi", answer="\udcff")
    for name, value in [("max_new_tokens", 2**64), ("top_k", -(2**70)), ("seed", 2**64), ("seed", -(2**63) - 1)]:
        with pytest.raises(sa2va.Error, match=name):
            tiny_model.predict_forward(image=image, text="<image>hi", **{name: value})
    with pytest.raises(sa2va.Error, match="temperature"):
        tiny_model.predict_forward(image=image, text="<image>hi", temperature=10**400)
    # Seeds are 64-bit either way round, as torch.manual_seed takes them: -1 is 2**64 - 1.
    sampled = [tiny_model.predict_forward(image=image, text="<image>hi", temperature=1.0, max_new_tokens=8,
                                          seed=seed)["generated_ids"] for seed in (-1, 2**64 - 1, 7)]
    assert sampled[0] == sampled[1]
    assert sampled[0] != sampled[2]


def test_a_path_whose_name_is_not_utf8_opens(tiny_model, tiny_dir, tiny_meta, tmp_path):
    import os
    case = tiny_meta["image"]
    source = tiny_dir / case["image"]
    odd = tmp_path / os.fsdecode(b"frame-\xff.png")  # a Latin-1 name on a UTF-8 file system
    shutil.copy(source, odd)
    a = tiny_model.predict_forward(image=odd, text=case["prompt"], answer=case["answer"])
    b = tiny_model.predict_forward(image=source, text=case["prompt"], answer=case["answer"])
    assert a["prediction"] == b["prediction"]
    np.testing.assert_array_equal(a["prediction_masks"][0], b["prediction_masks"][0])
    # An error quoting such a path is still sa2va.Error, the odd byte kept as a surrogate.
    missing = os.fsdecode(b"/nonexistent-\xff.png")
    with pytest.raises(sa2va.Error) as error:
        tiny_model.predict_forward(image=missing, text=case["prompt"])
    assert missing in str(error.value)
    with pytest.raises(sa2va.Error):
        sa2va.Model(tmp_path / os.fsdecode(b"no-model-\xff"))


# ---- threads --------------------------------------------------------------------------------------


def test_calls_from_several_threads_give_the_answers_of_calls_made_alone(tiny_model, tiny_dir, tiny_meta):
    image = tiny_dir / tiny_meta["image"]["image"]
    requests = [dict(image=image, text=f"<image>Please segment thing {i}.", max_new_tokens=4) for i in range(3)]
    requests.append(dict(image=image, text=tiny_meta["image"]["prompt"], answer=tiny_meta["image"]["answer"]))
    alone = [tiny_model.predict_forward(**r) for r in requests]
    together = [None] * len(requests)

    def ask(i):
        together[i] = tiny_model.predict_forward(**requests[i])

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a, b in zip(alone, together):
        assert a["prediction"] == b["prediction"]
        assert len(a["prediction_masks"]) == len(b["prediction_masks"])
        for x, y in zip(a["prediction_masks"], b["prediction_masks"]):
            np.testing.assert_array_equal(x, y)


def test_the_gil_is_released_while_predicting(tiny_model, tiny_dir, tiny_meta):
    case = tiny_meta["image"]
    ticks = []
    stop = threading.Event()

    def count():
        while not stop.is_set():
            ticks.append(1)
            stop.wait(0.001)

    counter = threading.Thread(target=count)
    counter.start()
    before = len(ticks)
    tiny_model.predict_forward(image=tiny_dir / case["image"], text=case["prompt"], answer=case["answer"])
    during = len(ticks) - before
    stop.set()
    counter.join()
    # Holding the GIL for the whole call would leave the counter at most one switch interval.
    assert during > 5


_FORKED_MODEL = None  # inherited by the forked worker below


def _predict_in_forked_child(request):
    return _FORKED_MODEL.predict_forward(**request)


def test_a_model_loaded_before_a_fork_works_in_the_child(tiny_model, tiny_dir, tiny_meta):
    """multiprocessing's default on Linux forks: the child has the model but not its threads."""
    global _FORKED_MODEL
    case = tiny_meta["image"]
    request = dict(image=str(tiny_dir / case["image"]), text=case["prompt"], answer=case["answer"])
    here = tiny_model.predict_forward(**request)  # the model's threads have run before the fork
    _FORKED_MODEL = tiny_model
    try:
        with multiprocessing.get_context("fork").Pool(1) as pool:
            there = pool.apply_async(_predict_in_forked_child, (request,)).get(timeout=120)
    finally:
        _FORKED_MODEL = None
    assert there["prediction"] == here["prediction"]
    np.testing.assert_array_equal(there["prediction_masks"][0], here["prediction_masks"][0])


# ---- the package itself ---------------------------------------------------------------------------


def test_help_reads_as_the_manual():
    doc = sa2va.Model.__doc__
    for word in ("precision", "weights", "threads", "sa2va.Error"):
        assert word in doc
    for word in ("image", "video", "past_text", "mask_prompts", "prediction_masks", "max_new_tokens"):
        assert word in sa2va.Model.predict_forward.__doc__
    assert "frame by frame" in sa2va.Model.predict_stream.__doc__
    package = Path(sa2va.__file__).parent
    assert (package / "_sa2va.pyi").exists() and (package / "py.typed").exists()
    assert sa2va.__version__.count(".") == 2


def test_the_example_segments_and_saves_masks(tiny_dir, tiny_meta, tmp_path):
    case = tiny_meta["image"]
    done = subprocess.run(
        [sys.executable, str(REPO / "examples" / "segment_image.py"), str(tiny_dir), str(tiny_dir / case["image"]),
         "Please segment the red circle.", "--answer", case["answer"], "--out", str(tmp_path)],
        capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert case["prediction"] in done.stdout
    mask = png_mask(tmp_path / "mask_0.png")
    assert mask.shape == (case["height"], case["width"]) and mask.any()
