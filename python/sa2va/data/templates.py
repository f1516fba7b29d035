"""Upstream Sa2VA's training prompts: the referring-segmentation questions and answers its datasets
draw from at random (the same lists for images and videos), and the grounded-caption questions."""

from __future__ import annotations

SEG_QUESTIONS = [
    "Can you segment the {class_name} in this image?",
    "Please segment {class_name} in this image.",
    "What is {class_name} in this image? Please respond with segmentation mask.",
    "What is {class_name} in this image? Please output segmentation mask.",
    "Can you segment the {class_name} in this image",
    "Please segment {class_name} in this image",
    "What is {class_name} in this image? Please respond with segmentation mask",
    "What is {class_name} in this image? Please output segmentation mask",
    "Could you provide a segmentation mask for the {class_name} in this image?",
    "Please identify and segment the {class_name} in this image.",
    "Where is the {class_name} in this picture? Please respond with a segmentation mask.",
    "Can you highlight the {class_name} in this image with a segmentation mask?",
    "Could you provide a segmentation mask for the {class_name} in this image",
    "Please identify and segment the {class_name} in this image",
    "Where is the {class_name} in this picture? Please respond with a segmentation mask",
    "Can you highlight the {class_name} in this image with a segmentation mask",
]

ANSWER_LIST = [
    "It is [SEG].",
    "Sure, [SEG].",
    "Sure, it is [SEG].",
    "Sure, the segmentation result is [SEG].",
    "[SEG].",
]

# Sa2VA's grounded-caption questions ask for a brief description (the "detailed" wording is GLaMM's);
# the grammar slips are upstream's and are kept, since the model was trained on them.
GCG_QUESTIONS = [
    "Could you please give me a brief description of the image? Please respond with interleaved "
    "segmentation masks for the corresponding parts of the answer.",
    "Can you provide a brief description of the this image? Please output with interleaved segmentation "
    "masks for the corresponding phrases.",
    "Please briefly describe the contents of the image. Please respond with interleaved segmentation masks "
    "for the corresponding parts of the answer.",
    "Could you give a brief explanation of what can be found within this picture? Please output with "
    "interleaved segmentation masks for the corresponding phrases.",
    "Could you give me an brief explanation of this picture? Please respond with interleaved segmentation "
    "masks for the corresponding phrases.",
    "Could you provide me with a briefly analysis of this photo? Please output with interleaved segmentation "
    "masks for the corresponding parts of the answer.",
]


def image_question(phrase: str, template: str) -> str:
    """An image referring question as upstream's RefCOCO dataset asks it: the phrase lower-cased
    without a final full stop."""
    phrase = phrase.lower()
    if phrase.endswith("."):
        phrase = phrase[:-1]
    return template.format(class_name=phrase)


def video_question(expression: str, template: str) -> str:
    """A video referring question as upstream's video datasets ask it: an expression containing '?'
    is already a question and is used as written; otherwise every '.' removed, the ends stripped and
    the template filled with it lower-cased."""
    if "?" in expression:
        return expression
    return template.format(class_name=expression.replace(".", "").strip().lower())
