"""Sa2VA — dense grounded understanding of images and videos — without a Python stack.

    import sa2va
    from PIL import Image

    model = sa2va.Model("Sa2VA-1B")                     # loads once; share it between threads
    out = model.predict_forward(image=Image.open("girl.jpg"),
                                text="<image>Please segment the girl in the yellow dress.")
    out["prediction"]          # 'Sure, [SEG].<|im_end|>'
    out["prediction_masks"][0] # numpy bool array [1, H, W]

The call and its result are those of upstream Sa2VA's predict_forward; see help(sa2va.Model).
"""

from ._sa2va import (
    Error,
    MaskStream,
    Model,
    __version__,
    clean_caption,
    extract_phrases,
    profiling_report,
    set_profiling,
)

__all__ = [
    "Error",
    "MaskStream",
    "Model",
    "__version__",
    "clean_caption",
    "extract_phrases",
    "profiling_report",
    "set_profiling",
]
