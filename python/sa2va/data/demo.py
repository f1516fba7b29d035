"""Fine-tuning on generated shapes, end to end: a training set and a held-out set of coloured-shape
images, the held-out masks of the model before training, `sa2va train`, and the held-out masks of
the merged model it writes. Prints the training loss at the start and the end and the held-out mean
IoU before and after; writes OUT/demo.json."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from typing import Any

import numpy as np

from ..eval import masks
from . import shapes


def _mask_of(segmentation: Any, height: int, width: int) -> np.ndarray:
    if isinstance(segmentation, dict):
        return masks.decode(segmentation)
    total = np.zeros((height, width), np.uint8)
    for polygon in segmentation:
        total |= masks.decode({"size": [height, width],
                               "counts": masks.counts_to_string(masks.polygon_counts(polygon, height, width))})
    return total


def held_out_iou(model_dir: str, data: str, threads: int) -> float:
    """Mean IoU of the first question of every sample, the answer given as "Sure, [SEG].", in f32."""
    from PIL import Image

    import sa2va

    model = sa2va.Model(model_dir, precision="f32", threads=threads)
    folder = os.path.dirname(os.path.abspath(data))
    ious = []
    with open(data, encoding="utf-8") as f:
        for line in f:
            sample = json.loads(line)
            image = np.array(Image.open(os.path.join(folder, sample["image"])).convert("RGB"))
            h, w = image.shape[:2]
            question = sample["conversations"][0]["value"]
            predicted = model.predict_forward(image=image, text=question, answer="Sure, [SEG].")["prediction_masks"][0]
            predicted = predicted[0] if predicted.ndim == 3 else predicted
            truth = _mask_of(sample["masks"][0], h, w).astype(bool)
            union = np.logical_or(predicted, truth).sum()
            ious.append(float(np.logical_and(predicted, truth).sum() / union) if union else 1.0)
    return float(np.mean(ious))


def run(model: str, out: str, cli: str, train_images: int = 16, held_out: int = 8, epochs: int = 2,
        threads: int = 2, seed: int = 0, extra: list[str] | None = None) -> dict[str, Any]:
    if os.path.exists(out):  # an earlier demo's folder is replaced; anything else is left alone
        earlier = set(os.listdir(out)) <= {"train", "heldout", "run", "demo.json"} if os.path.isdir(out) else False
        if not earlier:
            raise SystemExit(f"{out}: exists and is not an earlier demo's folder (choose a new --out)")
    if not os.path.isfile(os.path.join(model, "config.json")):
        raise SystemExit(f"{model}: not a model folder (no config.json)")
    if not (os.path.isfile(cli) and os.access(cli, os.X_OK)):
        raise SystemExit(f"{cli}: not an executable sa2va program (pass --cli or set SA2VA_CLI)")
    if os.path.exists(out):
        shutil.rmtree(out)
    train_data = shapes.write_dataset(os.path.join(out, "train"), train_images, seed)
    held_data = shapes.write_dataset(os.path.join(out, "heldout"), held_out, seed + 1, turns=1)
    before = held_out_iou(model, held_data, threads)
    command = [cli, "train", "--model", model, "--data", train_data, "--out", os.path.join(out, "run"),
               "--lora-r", "8", "--lora-alpha", "16", "--lr", "1e-3", "--batch", "2", "--grad-accum", "1",
               "--epochs", str(epochs), "--threads", str(threads), "--seed", str(seed)] + (extra or [])
    print("$ " + " ".join(command), flush=True)
    if subprocess.run(command).returncode != 0:  # its own error line is above
        raise SystemExit(f"shapes-demo: {cli} train failed")
    with open(os.path.join(out, "run", "train_log.jsonl"), encoding="utf-8") as f:
        log = [json.loads(line) for line in f]
    after = held_out_iou(os.path.join(out, "run", "model"), held_data, threads)
    head = log[: max(1, len(log) // 8)]
    tail = log[-max(1, len(log) // 8):]
    result = {
        "steps": len(log),
        "loss_start": float(np.mean([r["loss"] for r in head])),
        "loss_end": float(np.mean([r["loss"] for r in tail])),
        "mask_loss_start": float(np.mean([r["mask"] + r["dice"] for r in head])),
        "mask_loss_end": float(np.mean([r["mask"] + r["dice"] for r in tail])),
        "heldout_iou_before": before,
        "heldout_iou_after": after,
    }
    with open(os.path.join(out, "demo.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    print(f"training loss {result['loss_start']:.3f} -> {result['loss_end']:.3f} "
          f"(masks {result['mask_loss_start']:.3f} -> {result['mask_loss_end']:.3f}) over {len(log)} steps; "
          f"held-out mean IoU {before:.3f} -> {after:.3f}", flush=True)
    return result


def check(result: dict[str, Any]) -> list[str]:
    """What falls short of a working fine-tune: the loss well below its start, the held-out masks better."""
    problems = []
    if not result["loss_end"] < 0.75 * result["loss_start"]:
        problems.append(f"the training loss went from {result['loss_start']:.3f} to {result['loss_end']:.3f}")
    if not result["mask_loss_end"] < 0.8 * result["mask_loss_start"]:
        problems.append(f"the mask losses went from {result['mask_loss_start']:.3f} to {result['mask_loss_end']:.3f}")
    if not result["heldout_iou_after"] > result["heldout_iou_before"] + 0.05:
        problems.append(f"the held-out IoU went from {result['heldout_iou_before']:.3f} to {result['heldout_iou_after']:.3f}")
    return problems


def find_cli(given: str | None) -> str:
    cli = given or os.environ.get("SA2VA_CLI") or shutil.which("sa2va")
    if cli and os.sep not in cli:  # a program name: looked up on PATH
        cli = shutil.which(cli) or cli
    if not cli:
        sys.exit("the sa2va program was not found: pass --cli or set SA2VA_CLI")
    return cli
