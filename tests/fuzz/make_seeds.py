#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into tests/fuzz/corpus/<target>/.

Usage: make_seeds.py SA2VA_PROGRAM   (the built `sa2va`, used to write a tiny model's config.json)
The seeds are committed; rerun this only to change them.
"""
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")
REGRESSIONS = os.path.join(HERE, "regressions")
IMAGES = os.path.join(HERE, "..", "data", "images")
SEP = b"\n--part--\n"


def put(target, name, data):
    os.makedirs(os.path.join(CORPUS, target), exist_ok=True)
    with open(os.path.join(CORPUS, target, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def safetensors_bytes(tensors, metadata=None):
    header, blobs, offset = {}, [], 0
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    if metadata is not None:
        header["__metadata__"] = metadata
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def png(image):
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def main():
    program = sys.argv[1]
    shutil.rmtree(CORPUS, ignore_errors=True)

    put("safetensors", "f32", safetensors_bytes({"w": ("F32", [2, 2], struct.pack("<4f", 1, 2, 3, 4))}, {"format": "pt"}))
    put("safetensors", "mixed", safetensors_bytes({
        "a.weight": ("BF16", [3], b"\x80\x3f" * 3), "b.bias": ("I64", [1], struct.pack("<q", 7)),
        "c": ("F16", [0, 4], b""), "d": ("U8", [], b"\x01"), "e": ("I32", [2], struct.pack("<2i", -1, 5))}))
    put("safetensors", "empty", safetensors_bytes({}))
    # Regression: a header number too large for any type (once thrown past the reader).
    put("safetensors", "regress_number_overflow", struct.pack("<Q", 32) + b'{"a": 10000000000000000e8000000}')

    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([program, "make-model", "--preset", "tiny", "--out", tmp], check=True, capture_output=True)
        with open(os.path.join(tmp, "config.json")) as f:
            config = json.load(f)
    put("config", "tiny_qwen2", json.dumps(config, indent=1))
    internlm2 = json.loads(json.dumps(config))
    internlm2["template"] = "internlm2_chat"
    internlm2["llm_config"]["architectures"] = ["InternLM2ForCausalLM"]
    internlm2["llm_config"]["bias"] = False
    internlm2["llm_config"]["rope_scaling"] = {"type": "dynamic", "factor": 2.0}
    put("config", "tiny_internlm2", json.dumps(internlm2))
    phi3 = json.loads(json.dumps(config))
    phi3["template"] = "phi3_chat"
    phi3["llm_config"]["tie_word_embeddings"] = True
    put("config", "tiny_phi3", json.dumps(phi3))
    # Regression: a number too large for any type (once thrown past load_config).
    put("config", "regress_number_overflow", '{"llm_config": {"hidden_size": 3E333333}, "template": "qwen_chat"}')

    # A byte-level BPE tokenizer.json: the 256 single-character tokens of the project's Qwen2
    # tokenizer, a few merges and added tokens with every flag.
    with open(os.path.join(HERE, "..", "..", "data", "qwen2-sa2va-tokenizer.json")) as f:
        qwen = json.load(f)
    vocab = {}
    for text in qwen["model"]["vocab"]:
        if len(text) == 1:
            vocab[text] = len(vocab)
    for merged in ["ab", "Ġa", "Ġab", "he", "ll", "hell", "hello"]:
        vocab[merged] = len(vocab)
    small = dict(qwen)
    small["model"] = dict(qwen["model"], vocab=vocab,
                          merges=[["a", "b"], ["Ġ", "a"], ["Ġa", "b"], ["h", "e"], ["l", "l"], ["he", "ll"],
                                  ["hell", "o"]])
    added = []
    for i, (content, flags) in enumerate([("<|im_end|>", {"special": True}), ("[SEG]", {}),
                                          ("<p>", {"lstrip": True}), ("</p>", {"rstrip": True}),
                                          ("<IMG_CONTEXT>", {"special": True, "normalized": True}),
                                          ("word", {"single_word": True})]):
        entry = {"id": len(vocab) + i, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
                 "normalized": False, "special": False}
        entry.update(flags)
        added.append(entry)
    small["added_tokens"] = added
    text = json.dumps(small).encode()
    put("tokenizer_json", "small_bpe", text + SEP + "hello <p> ab</p> [SEG]<|im_end|> word wordy 2024 'll \u00e9\u4e2d".encode())
    put("tokenizer_json", "small_bpe_no_text", text)

    model_dir = os.path.join(HERE, "assets")
    del model_dir  # the SentencePiece model itself is fixed by the target; seeds are the added-token files
    added_tokens = json.dumps({"[SEG]": 92544, "<p>": 92545, "</p>": 92546, "<vp>": 92547, "</vp>": 92548,
                               "<IMG_CONTEXT>": 92549, "<img>": 92550, "</img>": 92551})
    tokenizer_config = json.dumps({
        "add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "pad_token": "</s>", "clean_up_tokenization_spaces": False,
        "added_tokens_decoder": {"0": {"content": "<unk>", "special": True}, "1": {"content": "<s>", "special": True},
                                 "2": {"content": "</s>", "special": True},
                                 "92544": {"content": "[SEG]", "special": False, "lstrip": False}},
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    special_map = json.dumps({"bos_token": "<s>", "eos_token": "</s>", "additional_special_tokens": ["<|im_end|>"]})
    put("added_tokens", "all_files", SEP.join([added_tokens.encode(), tokenizer_config.encode(), special_map.encode(),
                                               "<s>Please segment <p> the cat </p> [SEG].</s>\u2581x".encode()]))
    put("added_tokens", "added_only", added_tokens)
    put("added_tokens", "config_only", b"" + SEP + tokenizer_config.encode())
    # Regression: an id too large for any integer type (once undefined behaviour when converted).
    put("added_tokens", "regress_float_id", '{"[SEG]": 92544, "</p>/": 923333333333333333333333333333333333333333333333333333333333546}')

    put("prompt", "image_first_turn", SEP.join([b"<image>\nPlease segment the cat.", b"", b"It is [SEG].", b"\x01\x20\x10\x0c\x02\x10\x10\x01\x05\x07\x02"]))
    put("prompt", "later_turn", SEP.join([b"And the dog?", b"<|im_start|>user\n<image>\nWhat is it?<|im_end|>\n<|im_start|>assistant\nA cat.<|im_end|>\n",
                                          b"<p> A dog </p> [SEG] and <p>a ball</p>[SEG].", b"\x00"]))
    put("prompt", "video", SEP.join([b"Please segment the person.", b"", b"Sure, [SEG].", b"\x02\x07\x05\x09\x05\x01"]))
    put("prompt", "odd_text", SEP.join(["<IMG_CONTEXT><img></img> <image><image> \u00e9\r\n".encode(), b"<image>", b"'  <p>x</p>  \n", b"\x00"]))

    for name in sorted(os.listdir(IMAGES)):
        if name.endswith((".png", ".jpg")):
            with open(os.path.join(IMAGES, name), "rb") as f:
                put("image", name, f.read())

    mask = Image.new("L", (9, 7))
    mask.paste(255, (2, 1, 6, 5))
    mask_uri = "data:image/png;base64," + __import__("base64").b64encode(png(mask)).decode()
    put("mask_prompt", "box", json.dumps([{"box": [1.5, 2, 10, 4.25]}]) + SEP.decode() + "\x20\x18")
    put("mask_prompt", "rle_string", json.dumps([{"rle": {"size": [4, 5], "counts": "52203"}}]))
    put("mask_prompt", "rle_list", json.dumps([{"rle": {"size": [3, 3], "counts": [1, 3, 2, 3]}}, {"box": [0, 0, 0, 0]}]))
    put("mask_prompt", "png", json.dumps([{"png": mask_uri}]) + SEP.decode() + "\x08\x06")
    # Regression: a run length too large for any integer type (once undefined behaviour when converted).
    put("mask_prompt", "regress_float_run", '[{"rle": {"size": [6, 3], "counts": [1, 38, 5555555555555555555555555555555555555555555555555555555555555555555555553]}}]')

    frame_a = png(Image.new("RGB", (6, 4), (200, 10, 30)))
    frame_b = png(Image.new("RGB", (5, 3), (0, 90, 250)))
    with open(os.path.join(IMAGES, "baseline.jpg"), "rb") as f:
        jpeg = f.read()
    put("frame_folder", "three_frames", SEP.join([b"00000.png", frame_a, b"00001.jpg", jpeg, b"00002.PNG", frame_b,
                                                  b"notes.txt", b"ignored"]))
    put("frame_folder", "one_frame", SEP.join([b"a.jpeg", jpeg]))

    human = {"from": "human", "value": "<image>\nPlease segment the cat."}
    put("training_data", "image_rle_and_polygon", json.dumps({
        "image": "a.png", "conversations": [human, {"from": "gpt", "value": "[SEG] and [SEG]."}],
        "masks": [{"size": [7, 9], "counts": "52203"}, [[1, 1, 6, 1, 6, 5, 1, 5]]]}) + "\n")
    put("training_data", "video_runs", json.dumps({
        "frames": ["0.jpg", "1.jpg"], "conversations": [human, {"from": "gpt", "value": "Sure, [SEG]."},
                                                        {"from": "human", "value": "And?"}, {"from": "gpt", "value": "No."}],
        "masks": [[{"size": [7, 9], "counts": [10, 53]}, {"size": [7, 9], "counts": [63]}]]}) + "\n\n" +
        json.dumps({"image": "b.png", "conversations": [human, {"from": "gpt", "value": "A cat."}]}) + "\n")

    server_request_seeds()
    video_file_seeds()
    # Inputs a fuzzing run found that no recipe above writes (kept as found, minimized).
    for target in sorted(os.listdir(REGRESSIONS)):
        for name in sorted(os.listdir(os.path.join(REGRESSIONS, target))):
            with open(os.path.join(REGRESSIONS, target, name), "rb") as f:
                put(target, name, f.read())


def video_file_seeds():
    """Tiny videos (16x12 or so, 3-4 frames) in each container and codec family a user may send:
    rotation tags, full range and BT.709 tags, an audio stream beside the video, a raw H.264 stream
    whose frame size changes midway."""
    src = ["-f", "lavfi", "-i", "testsrc2=size=16x12:rate=4"]
    common = ["-frames:v", "3", "-map_metadata", "-1", "-fflags", "+bitexact", "-flags:v", "+bitexact"]
    cases = {
        "h264.mp4": ["-c:v", "libx264", "-pix_fmt", "yuv420p"],
        "h264_full_range_bt709.mkv": ["-c:v", "libx264", "-pix_fmt", "yuvj444p", "-color_primaries", "bt709",
                                      "-color_trc", "bt709", "-colorspace", "bt709"],
        "vp9.webm": ["-c:v", "libvpx-vp9", "-pix_fmt", "yuv420p"],
        "vp8.ivf": ["-c:v", "libvpx", "-f", "ivf"],
        "ffv1_rgb.mkv": ["-c:v", "ffv1", "-pix_fmt", "bgr0"],
        "mjpeg.avi": ["-c:v", "mjpeg", "-pix_fmt", "yuvj422p"],
        "palette.gif": ["-c:v", "gif"],
        "mpeg2.ts": ["-c:v", "mpeg2video"],
        "flv1.flv": ["-c:v", "flv"],
        "theora.ogg": ["-vf", "scale=32:32", "-c:v", "libtheora"],
        "raw.y4m": ["-pix_fmt", "yuv420p", "-f", "yuv4mpegpipe"],
        "hevc.mp4": ["-vf", "scale=32:32", "-c:v", "libx265", "-pix_fmt", "yuv420p", "-x265-params", "log-level=none"],
    }
    with tempfile.TemporaryDirectory() as tmp:
        def encode(name, args, extra_inputs=()):
            out = os.path.join(tmp, name)
            subprocess.run(["ffmpeg", "-loglevel", "error", *src, *extra_inputs, *common, *args, out], check=True)
            with open(out, "rb") as f:
                return f.read()
        for name, args in cases.items():
            put("video_file", name, encode(name, args))
        # A portrait phone recording: the track's display matrix (tkhd, version 0) turns it 90 degrees
        # clockwise.
        mp4 = bytearray(encode("rotated.mp4", cases["h264.mp4"]))
        box = mp4.index(b"tkhd") - 4
        assert mp4[box + 8] == 0, "tkhd version"
        one = 0x10000
        mp4[box + 48:box + 84] = struct.pack(">9i", 0, one, 0, -one, 0, 0, 0, 0, 0x40000000)
        put("video_file", "h264_rotate90.mp4", bytes(mp4))
        # Regression: an IVF header giving another frame size than the VP8 frames' (the video once
        # took the header's size for its frames').
        ivf = bytearray(encode("header.ivf", cases["vp8.ivf"]))
        ivf[12:16] = struct.pack("<2H", 8, 6)
        put("video_file", "regress_header_size.ivf", bytes(ivf))
        # Regression: a VP8 key frame declaring 14000x14000 (its 14-bit sizes after the start code
        # 9d 01 2a), which the decoder once allocated in full (196 MB) before the size was checked.
        start = ivf.index(b"\x9d\x01\x2a")
        ivf[start + 3:start + 7] = struct.pack("<2H", 14000, 14000)
        put("video_file", "regress_vp8_frame_14000.ivf", bytes(ivf))
        put("video_file", "mpeg4_with_audio.mov", encode("mpeg4_with_audio.mov", [
            "-map", "0:v", "-map", "1:a", "-c:v", "mpeg4", "-c:a", "pcm_u8", "-ar", "8000", "-t", "0.75"],
            ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=8000"]))
        small = encode("small.h264", ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-f", "h264"])
        src[-1] = "testsrc2=size=24x16:rate=4"
        larger = encode("larger.h264", ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-f", "h264"])
        put("video_file", "size_change.h264", small + larger)


def server_request_seeds():
    """Bodies of `sa2va serve`'s endpoints: chat completions with media and visual prompts, /v1/segment,
    /v1/sessions (an image, a video file, frames) and a session turn."""
    import base64

    def uri(data, mime):
        return "data:" + mime + ";base64," + base64.b64encode(data).decode()

    image = uri(png(Image.new("RGB", (6, 4), (200, 10, 30))), "image/png")
    frame = base64.b64encode(png(Image.new("RGB", (6, 4), (0, 90, 250)))).decode()  # bare base64
    mask = Image.new("L", (6, 4), 0)
    mask.paste(255, (1, 1, 4, 3))
    mask_uri = uri(png(mask), "image/png")
    user = lambda *parts: {"role": "user", "content": list(parts)}
    text = lambda t: {"type": "text", "text": t}
    put("server_request", "chat_image", json.dumps({
        "messages": [{"role": "system", "content": "Be brief."},
                     user({"type": "image_url", "image_url": {"url": image}}, text("Please segment the red.")),
                     {"role": "assistant", "content": "Sure, [SEG]."}, user(text("And now?"))],
        "max_tokens": 8, "temperature": 0.5, "top_p": 0.9, "top_k": 4, "seed": 3, "stream": True,
        "sa2va": {"mask_format": "polygon", "max_tokens": 4}}))
    put("server_request", "chat_frames_and_prompts", json.dumps({
        "messages": [user({"type": "image_url", "image_url": image}, {"type": "image_url", "image_url": {"url": frame}},
                          text("What moves?"))], "max_completion_tokens": 4}))
    put("server_request", "chat_visual_prompts", json.dumps({
        "messages": [user({"type": "image_url", "image_url": {"url": image}}, text("What is in <region>?"))],
        "sa2va": {"mask_prompts": [{"box": [1, 0.5, 3, 2]}, {"rle": {"size": [4, 6], "counts": "52203"}},
                                   {"png": mask_uri}], "mask_format": "png", "answer": "A dot."}}))
    put("server_request", "segment", json.dumps({
        "image": image, "expressions": ["the red", "the rest"], "prompt": "Where is {expression}?",
        "format": "rle", "max_tokens": 4}))
    put("server_request", "session_frames_turn", json.dumps({
        "frames": [image, frame, image], "text": "Please segment the blue.", "format": "polygon",
        "mask_prompts": [{"box": [0, 0, 2, 2]}], "seed": 1}))
    with tempfile.TemporaryDirectory() as tmp:
        video = os.path.join(tmp, "v.mp4")
        subprocess.run(["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=16x12:rate=4",
                        "-frames:v", "3", "-pix_fmt", "yuv420p", video], check=True)
        with open(video, "rb") as f:
            video_uri = uri(f.read(), "video/mp4")
    put("server_request", "session_video", json.dumps({"video": video_uri}))
    put("server_request", "chat_video", json.dumps({
        "messages": [user({"type": "video_url", "video_url": {"url": video_uri}}, text("What happens?"))]}))


if __name__ == "__main__":
    main()
