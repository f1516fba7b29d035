#!/usr/bin/env python3
"""Side-by-side benchmark comparison of two builds on the same machine.

    bench/compare.py OLD_BUILD_DIR NEW_BUILD_DIR [--rounds N] [--only REGEX]

Runs every benchmark below from OLD_BUILD_DIR/bench and NEW_BUILD_DIR/bench, alternating old and
new for N rounds (so both see the same machine conditions), keeps the best wall and CPU time of
each, and prints a Markdown table with the ratios old/new (> 1: the new build is faster). CPU time
is the process's (all threads): on a shared machine it is the steadier of the two. Run it from the
repository root (the benchmarks read tests/data), on an idle machine.
"""
import argparse
import json
import os
import re
import subprocess
import sys

# (program, Google Benchmark filter) pairs: the hot paths of every stage.
BENCHMARKS = [
    ("gemm_bench", "BM_Linear/.*"),
    ("attention_bench", "BM_Attention/(sam2_memory_cross|vit|llm_prefill).*"),
    ("internvit_bench", "BM_InternVitTileBf16.*"),
    ("llm_bench", "BM_Llm(Prefill|Decode).*"),
    ("sam2_bench", "BM_Sam2(EncodeBf16|DecodeF32).*"),
    ("tokenizer_bench", "BM_(EncodeImagePrompt|DecodeCorpus)"),
]


def run(build, program, pattern):
    path = os.path.join(build, "bench", program)
    out = subprocess.run([path, "--benchmark_filter=" + pattern, "--benchmark_format=json"],
                         capture_output=True, text=True, check=True).stdout
    results = {}
    for b in json.loads(out)["benchmarks"]:
        if b.get("run_type") == "aggregate":
            continue
        scale = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}[b["time_unit"]]
        results[b["name"]] = (b["real_time"] * scale, b["cpu_time"] * scale)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="", help="run only programs matching this regular expression")
    args = parser.parse_args()
    best = {}
    for program, pattern in BENCHMARKS:
        if args.only and not re.search(args.only, program):
            continue
        for _ in range(args.rounds):
            for side, build in (("old", args.old), ("new", args.new)):
                for name, (wall, cpu) in run(build, program, pattern).items():
                    key = (program, name, side)
                    old_wall, old_cpu = best.get(key, (float("inf"), float("inf")))
                    best[key] = (min(old_wall, wall), min(old_cpu, cpu))
                print(f"ran {program} ({side}) {os.getloadavg()[0]:.2f} load", file=sys.stderr, flush=True)
    print("| benchmark | old wall | new wall | old/new wall | old/new CPU time |")
    print("| --- | --- | --- | --- | --- |")
    for program, name in sorted({(p, n) for p, n, _ in best}):
        old, new = best.get((program, name, "old")), best.get((program, name, "new"))
        if old is None or new is None:
            continue
        fmt = lambda s: f"{s * 1e3:.3f} ms" if s < 1 else f"{s:.3f} s"
        short = name.split("/process_time")[0].split("/real_time")[0]
        print(f"| {program} {short} | {fmt(old[0])} | {fmt(new[0])} | {old[0] / new[0]:.2f} | {old[1] / new[1]:.2f} |")


if __name__ == "__main__":
    main()
