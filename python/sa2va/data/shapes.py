"""A generated referring-segmentation dataset: coloured shapes on a noisy background, one sample per
image asking for some of its shapes by colour and kind, masks as COCO polygons (squares, triangles)
or RLE (circles). Small enough to fine-tune the tiny test model on in minutes."""

from __future__ import annotations

import json
import os
import random
from typing import Any

import numpy as np

from ..eval import masks
from . import templates

COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220), "yellow": (230, 210, 40)}
KINDS = ("circle", "square", "triangle")


def _shape(kind: str, rng: random.Random, size: int) -> tuple[np.ndarray, Any]:
    """The mask of one shape and its segmentation as written to the dataset."""
    r = rng.uniform(0.12, 0.2) * size
    cx, cy = rng.uniform(r, size - r), rng.uniform(r, size - r)
    if kind == "circle":
        yy, xx = np.mgrid[0:size, 0:size]
        mask = ((xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2 <= r * r).astype(np.uint8)
        return mask, masks.encode(mask)
    if kind == "square":
        poly = [cx - r, cy - r, cx + r, cy - r, cx + r, cy + r, cx - r, cy + r]
    else:
        poly = [cx, cy - r, cx + r, cy + r, cx - r, cy + r]
    poly = [round(v, 2) for v in poly]
    mask = masks.decode({"size": [size, size], "counts": masks.counts_to_string(masks.polygon_counts(poly, size, size))})
    return mask, [poly]


def make_image(rng: random.Random, size: int) -> tuple[np.ndarray, list[tuple[str, Any, np.ndarray]]]:
    """An image with two or three distinct shapes (later ones on top), and each visible shape's
    phrase, segmentation and mask: its polygon or RLE when whole, the RLE of what is left of it when
    a later shape covers part of it."""
    nrng = np.random.default_rng(rng.randrange(1 << 30))
    image = nrng.normal(128, 12, (size, size, 3)).clip(0, 255).astype(np.uint8)
    picks = rng.sample([(c, k) for c in COLOURS for k in KINDS], rng.choice((2, 3)))
    drawn: list[tuple[str, Any, np.ndarray, np.ndarray]] = []
    for colour, kind in picks:
        mask, segmentation = _shape(kind, rng, size)
        image[mask.astype(bool)] = COLOURS[colour]
        drawn = [(p, s, whole, visible & (1 - mask)) for p, s, whole, visible in drawn]
        drawn.append((f"{colour} {kind}", segmentation, mask, mask.copy()))
    out = []
    for phrase, segmentation, whole, visible in drawn:
        if visible.sum() < 0.01 * visible.size:
            continue
        out.append((phrase, segmentation if np.array_equal(whole, visible) else masks.encode(visible), visible))
    return image, out


def write_dataset(out: str, count: int, seed: int, size: int = 224, turns: int = 2) -> str:
    """Writes <out>/images/*.png and <out>/data.jsonl; returns the JSONL path."""
    from PIL import Image

    rng = random.Random(seed)
    os.makedirs(os.path.join(out, "images"), exist_ok=True)
    path = os.path.join(out, "data.jsonl")
    with open(path, "w") as f:
        for i in range(count):
            image, shapes = make_image(rng, size)
            name = f"images/{i:04d}.png"
            Image.fromarray(image).save(os.path.join(out, name))
            chosen = rng.sample(shapes, min(turns, len(shapes)))
            conversation = []
            for t, (phrase, _, _) in enumerate(chosen):
                question = templates.image_question(phrase, rng.choice(templates.SEG_QUESTIONS))
                conversation.append({"from": "human", "value": ("<image>\n" if t == 0 else "") + question})
                conversation.append({"from": "gpt", "value": rng.choice(templates.ANSWER_LIST)})
            sample = {"image": name, "conversations": conversation, "masks": [s for _, s, _ in chosen]}
            f.write(json.dumps(sample) + "\n")
    return path
