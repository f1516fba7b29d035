"""Shared set-up of the Python tests: the fixtures folder, the CLI, one loaded tiny model."""
import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


def fixtures_dir() -> Path:
    return Path(os.environ.get("SA2VA_FIXTURES", REPO.parent / "shared" / "fixtures"))


def fixture(name: str) -> Path:
    """The fixture folder `name`; a missing one skips the test, or fails it under CI=true."""
    path = fixtures_dir() / name
    if not path.is_dir():
        message = f"fixture {path} not found (set SA2VA_FIXTURES)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


_DTYPES = {"F32": np.float32, "I64": np.int64, "I32": np.int32, "U8": np.uint8, "BOOL": np.bool_}


def read_safetensors(path: Path) -> dict:
    """The tensors of a safetensors file as numpy arrays (the dtypes the fixtures use)."""
    data = path.read_bytes()
    (header_size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + header_size])
    body = data[8 + header_size:]
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        array = np.frombuffer(body[begin:end], dtype=_DTYPES[info["dtype"]])
        tensors[name] = array.reshape(info["shape"])
    return tensors


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


@pytest.fixture(scope="session")
def tiny_dir() -> Path:
    return fixture("sa2va-tiny")


@pytest.fixture(scope="session")
def tiny_meta(tiny_dir) -> dict:
    return json.loads((tiny_dir / "meta.json").read_text())["cases"]


@pytest.fixture(scope="session")
def tiny_model(tiny_dir):
    import sa2va
    return sa2va.Model(tiny_dir, precision="f32")


@pytest.fixture(scope="session")
def cli() -> Path:
    path = Path(os.environ.get("SA2VA_CLI", REPO / "build" / "sa2va"))
    if not path.exists():
        pytest.fail(f"the sa2va program {path} is not built (set SA2VA_CLI)")
    return path
