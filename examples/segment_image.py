#!/usr/bin/env python3
"""Segments what a sentence describes in an image and saves one PNG per [SEG].

    python3 examples/segment_image.py MODEL_DIR IMAGE "Please segment the girl in the yellow dress." --out masks/
"""
import argparse
from pathlib import Path

from PIL import Image

import sa2va


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="Sa2VA model folder")
    parser.add_argument("image", help="JPEG or PNG image")
    parser.add_argument("text", help="what to segment, e.g. 'Please segment the cat.'")
    parser.add_argument("--out", default=".", help="folder for mask_<k>.png (default: here)")
    parser.add_argument("--answer", help="use this answer instead of generating one (teacher forcing)")
    args = parser.parse_args()

    model = sa2va.Model(args.model)
    image = Image.open(args.image)
    result = model.predict_forward(image=image, text="<image>" + args.text, answer=args.answer)
    print(result["prediction"])

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for k, masks in enumerate(result["prediction_masks"]):  # one bool array [1, H, W] per [SEG]
        mask = masks[0]
        Image.fromarray(mask.astype("uint8") * 255).save(out / f"mask_{k}.png")
        phrase = result["phrases"][k]
        print(f"mask {k}: {mask.mean():.1%} of the image{', phrase: ' + phrase if phrase else ''} -> mask_{k}.png")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except sa2va.Error as error:
        raise SystemExit(f"error: {error}")
