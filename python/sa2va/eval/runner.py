"""What every benchmark shares: samples split into shards, predictions kept one JSON line per
sample (so an interrupted run resumes and a finished one can be re-scored without the model), a
progress line with an ETA, and the model loaded from the command line's options."""

from __future__ import annotations

import argparse
import concurrent.futures
import concurrent.futures.process
import glob
import json
import multiprocessing
import os
import sys
import tempfile
import time
from typing import Any, Iterable, Sequence


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="the data folder of Sa2VA's data preparation (see README)")
    parser.add_argument("--model", help="model folder (Hugging Face layout); not needed with --score-only")
    parser.add_argument("--out", help="where predictions and results go (default: eval-<benchmark>-<dataset>-<split>)")
    parser.add_argument("--shard", default="0/1", help="i/N: run the i-th of N interleaved parts (0-based)")
    parser.add_argument("--limit", type=int, default=0, help="only the first N samples (0: all)")
    parser.add_argument("--score-only", action="store_true", help="score the kept predictions; do not run the model")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="bf16", choices=["bf16", "f32"])
    parser.add_argument("--weights", default="bf16", choices=["bf16", "q8_0", "q4_0"])
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--max-new-tokens", type=int, default=2048)
    parser.add_argument("--forced-answer", help="teacher-force this answer instead of generating one "
                        "(scores the masks alone; tests)")
    parser.add_argument("--quiet", action="store_true", help="no progress line")


def parse_shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(v) for v in text.split("/"))
    except ValueError:
        raise SystemExit(f"--shard {text!r}: expected i/N, e.g. 0/4") from None
    if count < 1 or not 0 <= index < count:
        raise SystemExit(f"--shard {text!r}: need 0 <= i < N")
    return index, count


def select_samples(samples: Sequence[Any], args: argparse.Namespace) -> list[Any]:
    """The samples this run is for: --limit first, then this shard's interleaved part."""
    if args.limit and args.limit > 0:
        samples = samples[: args.limit]
    index, count = parse_shard(args.shard)
    return [s for i, s in enumerate(samples) if i % count == index]


class PredictionLog:
    """predictions.<i>-of-<N>.jsonl in the output folder: one line per finished sample, flushed as
    it is written; a torn last line (the run was killed mid-write) is ignored on reading."""

    def __init__(self, out_dir: str, shard: str) -> None:
        index, count = parse_shard(shard)
        os.makedirs(out_dir, exist_ok=True)
        self.path = os.path.join(out_dir, f"predictions.{index}-of-{count}.jsonl")
        if os.path.exists(self.path):  # cut a torn last line so that appending starts a fresh one
            with open(self.path, "rb+") as f:
                content = f.read()
                if content and not content.endswith(b"\n"):
                    f.truncate(content.rfind(b"\n") + 1)
        self.done = {record["key"] for record in read_jsonl(self.path)}
        self._file = None

    def append(self, record: dict[str, Any]) -> None:
        if self._file is None:
            self._file = open(self.path, "a", encoding="utf-8")
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()
        self.done.add(record["key"])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _numbered_jsonl(path: str) -> list[tuple[int, dict[str, Any]]]:
    """(line number, record) of a predictions file; every record an object with a string "key"."""
    records = []
    if not os.path.exists(path):
        return records
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    for number, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines) - 1:  # torn last line: the sample runs again
                continue
            raise SystemExit(f"{path}:{number + 1}: not a JSON line") from None
        if not isinstance(record, dict) or not isinstance(record.get("key"), str):
            raise SystemExit(f"{path}:{number + 1}: not a JSON object with a \"key\"")
        records.append((number + 1, record))
    return records


def read_jsonl(path: str) -> list[dict[str, Any]]:
    return [record for _, record in _numbered_jsonl(path)]


def all_predictions(out_dir: str, sources: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """Every kept prediction of every shard, by sample key; `sources` gets each one's "FILE:LINE"."""
    records: dict[str, dict[str, Any]] = {}
    for path in sorted(glob.glob(os.path.join(out_dir, "predictions.*.jsonl"))):
        for number, record in _numbered_jsonl(path):
            records[record["key"]] = record
            if sources is not None:
                sources[record["key"]] = f"{path}:{number}"
    return records


class Progress:
    """A one-line progress bar on stderr: done/total, rate and the time left."""

    def __init__(self, total: int, label: str, quiet: bool = False) -> None:
        self.total, self.label, self.quiet = total, label, quiet
        self.done = 0
        self.start = time.monotonic()

    def step(self, n: int = 1) -> None:
        self.done += n
        if self.quiet:
            return
        elapsed = time.monotonic() - self.start
        rate = elapsed / self.done if self.done else 0.0
        left = rate * (self.total - self.done)
        width = 30
        filled = int(width * self.done / self.total) if self.total else width
        sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
                         f"{rate:.2f} s/sample ETA {format_seconds(left)} ")
        if self.done >= self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def default_jobs() -> int:
    """The CPUs this process may use, at most 8 (each worker holds one expression's masks)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 8))


_TASK: Any = None  # what map_in_processes' workers run: set before they fork, so it is inherited, not sent


def _run_task(item: Any) -> tuple[str | None, Any]:
    try:
        return None, _TASK(item)
    except SystemExit as e:  # a worker's SystemExit would end it and break the pool: sent back instead
        return ("" if e.code is None else str(e.code)), None


def map_in_processes(task, items: Sequence[Any], jobs: int, label: str, quiet: bool) -> list[Any]:
    """[task(item) for item in items] in `jobs` forked processes (what `task` reads, the ground truth,
    is inherited, not sent), in order, with a progress line. A SystemExit in a worker ends the map
    with its message; other exceptions come back as they were raised."""
    global _TASK
    progress = Progress(len(items), label, quiet)
    results: list[Any] = []
    if jobs <= 1 or len(items) < 2:
        for item in items:
            results.append(task(item))
            progress.step()
        return results
    _TASK = task
    try:
        # A worker that dies (killed for memory, say) ends the map with an error instead of a wait.
        with concurrent.futures.ProcessPoolExecutor(min(jobs, len(items)),
                                                    mp_context=multiprocessing.get_context("fork")) as pool:
            try:
                for error, value in pool.map(_run_task, items, chunksize=1):
                    if error is not None:
                        raise SystemExit(error)
                    results.append(value)
                    progress.step()
            except concurrent.futures.process.BrokenProcessPool:
                raise SystemExit("a scoring process died (out of memory?): run again with fewer --jobs") from None
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
    finally:
        _TASK = None
    return results


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def load_model(args: argparse.Namespace):
    if not args.model:
        raise SystemExit("--model is needed to run the model (or pass --score-only)")
    import sa2va
    try:
        return sa2va.Model(args.model, device=args.device, precision=args.precision, weights=args.weights,
                           threads=args.threads)
    except sa2va.Error as e:
        raise SystemExit(f"cannot load the model: {e}") from None


def generation_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {"max_new_tokens": args.max_new_tokens}
    if args.forced_answer:
        options["answer"] = args.forced_answer
    return options


def run_missing(samples: Iterable[Any], key_of, done: set, predict, save, label: str, quiet: bool) -> None:
    """Runs `predict(sample) -> record` and `save(record)` for every sample whose key is not done."""
    todo = [s for s in samples if key_of(s) not in done]
    progress = Progress(len(todo), label, quiet)
    for sample in todo:
        record = predict(sample)
        record["key"] = key_of(sample)
        save(record)
        progress.step()


def run_logged(samples: Sequence[Any], out_dir: str, args: argparse.Namespace, predict, label: str) -> None:
    """Runs `predict` for this shard's samples that predictions.<i>-of-<N>.jsonl does not hold yet,
    keeping each result there as it finishes (samples are dicts with a "key")."""
    log = PredictionLog(out_dir, args.shard)
    try:
        run_missing(samples, lambda s: s["key"], log.done, predict, log.append, label, args.quiet)
    finally:
        log.close()


def read_json(path: str) -> Any:
    """A JSON file, or SystemExit naming it when it cannot be read or parsed."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as e:
        raise SystemExit(f"{path}: cannot read ({e.strerror or e})") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise SystemExit(f"{path}: not valid JSON ({e})") from None


def read_pickle(path: str) -> Any:
    """A pickle file (Python 2 ones with non-ASCII bytes too), or SystemExit naming it."""
    import pickle
    try:
        with open(path, "rb") as f:
            try:
                return pickle.load(f)
            except UnicodeDecodeError:  # a Python 2 pickle with non-ASCII bytes
                f.seek(0)
                return pickle.load(f, encoding="latin1")
    except OSError as e:
        raise SystemExit(f"{path}: cannot read ({e.strerror or e})") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError) as e:
        raise SystemExit(f"{path}: not a readable pickle ({type(e).__name__}: {e})") from None


def require_predictions(count: int, out: str, args: Any) -> None:
    """--score-only over a folder without predictions is a mistake, not a score of 0."""
    if getattr(args, "score_only", False) and count == 0:
        raise SystemExit(f"{out}: no predictions to score (run without --score-only first)")


def check_mask_size(mask: Any, height: int, width: int, what: str) -> None:
    if tuple(mask.shape) != (height, width):
        raise SystemExit(f"{what}: a {mask.shape[0]}x{mask.shape[1]} mask for a {height}x{width} ground truth")


def decode_rle(rle: Any, what: str) -> Any:
    """masks.decode, or SystemExit naming `what` when `rle` is not a readable COCO RLE."""
    from . import masks
    size = rle.get("size") if isinstance(rle, dict) else None
    if (not isinstance(rle, dict) or "counts" not in rle or not isinstance(size, (list, tuple)) or len(size) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in size)):
        raise SystemExit(f"{what}: not a COCO RLE {{\"size\": [h, w], \"counts\": ...}}")
    try:
        return masks.decode(rle)
    except (ValueError, TypeError, UnicodeDecodeError) as e:
        raise SystemExit(f"{what}: {e}") from None


def _process_umask() -> int:
    """The umask now: read from /proc (setting it to read it would race with other threads' files),
    else as it was at import."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return _UMASK_AT_IMPORT


def _umask_at_import() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


_UMASK_AT_IMPORT = _umask_at_import()


def atomic_write(path: str, write, binary: bool = False) -> None:
    """Calls write(file) on a temporary file of its own beside `path`, then renames it to `path`: a
    reader never sees half a file, and processes writing the same path at once (shards) do not
    share a temporary name."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with open(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            os.fchmod(f.fileno(), 0o666 & ~_process_umask())  # as open() would create it, not mkstemp's 0600
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_json(path: str, value: Any) -> None:
    atomic_write(path, lambda f: json.dump(value, f, indent=1, ensure_ascii=False))
