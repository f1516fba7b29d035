# Type stubs of the compiled module (the manual is in the docstrings: help(sa2va.Model)).
import os
from typing import Any, Iterator, Protocol, Sequence, TypedDict, Union

import numpy as np
import numpy.typing as npt

__version__: str

_Path = Union[str, os.PathLike[str]]
class _PILImageLike(Protocol):  # what the module takes for a PIL image: it has these and converts to RGB
    mode: str
    size: tuple[int, int]
    def convert(self, mode: str) -> Any: ...

# A PIL image (converted to RGB), an HxWx3 uint8 array, or the path of a JPEG/PNG file.
_ImageLike = Union[_PILImageLike, npt.NDArray[np.uint8], _Path]
# A list of frames, a TxHxWx3 uint8 array, or the path of a video file or frame folder.
_VideoLike = Union[Sequence[_ImageLike], npt.NDArray[np.uint8], _Path]
# Upstream's [KxHxW array], a list of HxW boolean arrays, or one HxW / KxHxW array.
_MaskPrompts = Union[Sequence[npt.NDArray[Any]], npt.NDArray[Any]]

class Error(RuntimeError): ...

class Answer(TypedDict, total=False):
    prediction: str
    phrases: list[str]
    caption: str
    past_text: str
    generated_ids: list[int]
    content: str
    finish_reason: str
    prompt_tokens: int
    scores: list[float]

class Prediction(TypedDict):
    prediction: str
    prediction_masks: list[npt.NDArray[np.bool_]]
    phrases: list[str]
    caption: str
    scores: list[float]
    past_text: str
    generated_ids: list[int]
    content: str
    finish_reason: str
    prompt_tokens: int

class MaskStream:
    def __iter__(self) -> Iterator[tuple[int, list[npt.NDArray[np.bool_]]]]: ...
    def __next__(self) -> tuple[int, list[npt.NDArray[np.bool_]]]: ...
    def answer(self) -> Answer: ...

class Model:
    def __init__(
        self,
        path: _Path,
        device: str = "cpu",
        precision: str = "bf16",
        weights: str = "bf16",
        threads: int = 0,
    ) -> None: ...
    def predict_forward(
        self,
        image: _ImageLike | None = None,
        video: _VideoLike | None = None,
        text: str = ...,  # required (None is refused); a default only because image and video come first
        past_text: str = "",
        mask_prompts: _MaskPrompts | None = None,
        *,
        max_new_tokens: int = 2048,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int = 0,
        max_tiles: int = 12,
        video_llm_frames: int = 5,
        uniform_frames: bool = False,
        answer: str | None = None,
        stop: str | Sequence[str] | None = None,
        tokenizer: Any = None,
    ) -> Prediction: ...
    def predict_stream(
        self,
        image: _ImageLike | None = None,
        video: _VideoLike | None = None,
        text: str = ...,  # required (None is refused); a default only because image and video come first
        past_text: str = "",
        mask_prompts: _MaskPrompts | None = None,
        *,
        max_new_tokens: int = 2048,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int = 0,
        max_tiles: int = 12,
        video_llm_frames: int = 5,
        uniform_frames: bool = False,
        answer: str | None = None,
        stop: str | Sequence[str] | None = None,
        tokenizer: Any = None,
    ) -> MaskStream: ...
    @property
    def template_name(self) -> str: ...

def extract_phrases(answer: str) -> list[str]: ...
def clean_caption(answer: str) -> str: ...
def set_profiling(enabled: bool) -> None: ...
def profiling_report() -> str: ...
