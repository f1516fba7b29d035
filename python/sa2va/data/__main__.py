"""python -m sa2va.data refcoco|refvos|refsav|gcg|llava|chatunivi|osprey|shapes|shapes-demo ... : training data for
`sa2va train`."""

from __future__ import annotations

import argparse
import os
import pickle
import random
import sys

from . import convert, demo, shapes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sa2va.data", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("refcoco", help="RefCOCO / RefCOCO+ / RefCOCOg to JSONL", description=convert.__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="the data root (holding ref_seg/ and glamm_data/)")
    p.add_argument("--dataset", required=True, choices=["refcoco", "refcoco+", "refcocog"])
    p.add_argument("--split", default="train")
    p.add_argument("--images", default=None, help="COCO train2014 folder (default: DATA/glamm_data/images/coco2014/train2014)")
    p.add_argument("--per-image", type=int, default=5, help="expressions per image (upstream: 5)")
    p.add_argument("--repeats", type=int, default=1, help="independent draws per image")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output .jsonl")
    p = commands.add_parser("refvos", help="MeViS / ReVOS / Ref-YouTube-VOS to JSONL", description=convert.__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="the data root (holding video_datas/)")
    p.add_argument("--dataset", required=True, choices=["mevis", "revos", "refytvos"])
    p.add_argument("--frames", type=int, default=5, help="frames per sample (upstream: 5)")
    p.add_argument("--per-video", type=int, default=5, help="expressions per sample (upstream: 5)")
    p.add_argument("--repeats", type=int, default=1, help="independent draws per video")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output .jsonl")
    p = commands.add_parser("refsav", help="Ref-SAV (Sa2VA's captions of SA-V objects) to JSONL",
                            description=convert.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="the data root (holding video_datas/)")
    p.add_argument("--frame-dir", required=True,
                   help="SA-V frames extracted as <video name>/NNNNN.jpg, numbered by the original frame")
    p.add_argument("--expressions", default=None,
                   help="the caption file (default: DATA/video_datas/sam_v_final_v3.json)")
    p.add_argument("--sav", default=None,
                   help="the folder the annotation paths are under (default: DATA/video_datas/sam_v_full)")
    p.add_argument("--mode", choices=["long", "short", "long_short"], default="long",
                   help="long captions (upstream), short ones, or either per sample")
    p.add_argument("--frames", type=int, default=5, help="frames per sample (upstream: 5)")
    p.add_argument("--per-video", type=int, default=5, help="objects per sample (upstream: 5)")
    p.add_argument("--repeats", type=int, default=1, help="independent draws per video (upstream: 4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output .jsonl")
    p = commands.add_parser("gcg", help="grounded captions (GranD-f, RefCOCOg, Flickr, OpenPSG) to JSONL",
                            description=convert.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="the data root (holding glamm_data/)")
    p.add_argument("--dataset", required=True, choices=list(convert.GCG_LAYOUT))
    p.add_argument("--images", default=None, help="the pictures' folder (default: upstream's under DATA/glamm_data/images)")
    p.add_argument("--repeats", type=int, default=1, help="independent draws per picture (upstream: GranD-f 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output .jsonl")
    p = commands.add_parser("llava", help="LLaVA-665K image chat to JSONL", description=convert.__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="the JSON list (llava_v1_5_mix665k.json)")
    p.add_argument("--images", required=True, help="the folder its \"image\" paths are under (upstream: llava_images/)")
    p.add_argument("--out", required=True, help="output .jsonl")
    p = commands.add_parser("chatunivi", help="ChatUniVi video chat to JSONL", description=convert.__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="the data root (holding video_datas/chat_univi/video_chat.json)")
    p.add_argument("--frame-dir", required=True,
                   help="every frame extracted as <\"video\" without extension>/NNNNN.jpg from 00000")
    p.add_argument("--frames", type=int, default=5, help="frames per sample (upstream: 5)")
    p.add_argument("--repeats", type=int, default=1, help="independent draws per sample")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output .jsonl")
    p = commands.add_parser("osprey", help="Osprey-724K visual prompts (regions) to JSONL", description=convert.__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="the data root (holding osprey-724k/)")
    p.add_argument("--form", required=True, choices=list(convert.OSPREY_FILES),
                   help="which Osprey-724K file, read as upstream reads it")
    p.add_argument("--file", default=None, help="the JSON file (default: DATA/osprey-724k/Osprey-724K/<the form's file>)")
    p.add_argument("--images", action="append", default=None,
                   help="a folder to look for pictures in, in order; repeat it for several (default: "
                        "DATA/osprey-724k/coco/train2014, val2014, train2017, val2017)")
    p.add_argument("--repeats", type=int, default=1, help="independent draws per entry (the description form's questions)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output .jsonl")
    p = commands.add_parser("shapes", help="a generated coloured-shapes dataset")
    p.add_argument("--out", required=True, help="output folder (images/ and data.jsonl)")
    p.add_argument("--count", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p = commands.add_parser("shapes-demo", help="fine-tune on generated shapes; loss and held-out IoU before/after",
                            description=demo.__doc__)
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--cli", default=None, help="the sa2va program (default: $SA2VA_CLI or sa2va on PATH)")
    p.add_argument("--train-images", type=int, default=16)
    p.add_argument("--held-out", type=int, default=8)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--check", action="store_true", help="exit 1 unless the loss fell and the held-out IoU rose")
    args = parser.parse_args(argv)
    for name in ("per_image", "per_video", "frames", "repeats", "count", "train_images", "held_out", "epochs", "threads"):
        if getattr(args, name, 1) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")

    if args.command == "shapes-demo":
        return shapes_demo(args)
    try:
        return convert_data(args)
    except (OSError, ValueError, KeyError, IndexError, TypeError, EOFError, pickle.UnpicklingError) as e:
        # Data the checks did not foresee: a message, not a traceback.
        raise SystemExit(f"error: {type(e).__name__}: {e}") from None


def convert_data(args: argparse.Namespace) -> int:
    report = ""  # the pictures or samples a converter skipped
    if args.command == "refcoco":
        n = convert.write_jsonl(args.out, convert.refcoco_samples(args.data, args.dataset, args.split, args.images,
                                                                  args.per_image, args.repeats, random.Random(args.seed)))
    elif args.command == "refvos":
        n = convert.write_jsonl(args.out, convert.refvos_samples(args.data, args.dataset, args.frames, args.per_video,
                                                                 args.repeats, random.Random(args.seed)))
    elif args.command == "refsav":
        videos, skipped, total = convert.refsav_videos(args.data, args.frame_dir, args.mode, args.expressions, args.sav)
        n = convert.write_jsonl(args.out, convert.refsav_samples(videos, args.frames, args.per_video, args.mode,
                                                                 args.repeats, random.Random(args.seed)))
        report = convert.skip_report(skipped, total, "videos")
    elif args.command == "gcg":
        captions, skipped, total = convert.gcg_captions(args.data, args.dataset, args.images)
        n = convert.write_jsonl(args.out, convert.gcg_samples(captions, args.repeats, random.Random(args.seed)))
        report = convert.skip_report(skipped, total, "pictures")
    elif args.command == "llava":
        skipped: dict[str, int] = {}
        lines = convert.llava_samples(args.data, args.images, skipped)
        n = convert.write_jsonl(args.out, iter(lines))
        report = convert.skip_report(skipped, len(lines) + sum(skipped.values()), "samples")
    elif args.command == "osprey":
        skipped = {}
        root = os.path.join(args.data, "osprey-724k")
        path = args.file or os.path.join(root, "Osprey-724K", convert.OSPREY_FILES[args.form])
        folders = args.images or [os.path.join(root, "coco", f) for f in convert.OSPREY_IMAGE_FOLDERS]
        lines = convert.osprey_samples(path, args.form, folders, args.repeats, random.Random(args.seed), skipped)
        n = convert.write_jsonl(args.out, iter(lines))
        report = convert.skip_report(skipped, len(lines) // args.repeats + sum(skipped.values()), "entries")
    elif args.command == "chatunivi":
        skipped = {}
        _, chats = convert.chatunivi_chats(args.data, args.frame_dir, skipped)
        n = convert.write_jsonl(args.out, convert.chatunivi_samples(chats, args.frames, args.repeats,
                                                                    random.Random(args.seed)))
        report = convert.skip_report(skipped, len(chats) + sum(skipped.values()), "samples")
    else:  # shapes
        path = shapes.write_dataset(args.out, args.count, args.seed)
        print(path)
        return 0
    print(f"{args.out}: {n} samples")
    if report:
        print(f"{args.out}: {report}")
    return 0


def shapes_demo(args: argparse.Namespace) -> int:
    import sa2va

    try:
        result = demo.run(args.model, args.out, demo.find_cli(args.cli), args.train_images, args.held_out,
                          args.epochs, args.threads, args.seed)
    except sa2va.Error as e:  # the model's own one-line message
        print(f"shapes-demo: {e}", file=sys.stderr)
        return 1
    problems = demo.check(result) if args.check else []
    for problem in problems:
        print(f"shapes-demo: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
