"""Single-label template sentences appended to every text corpus (one label each)."""
from __future__ import annotations

import logging
from collections.abc import Sequence

logger = logging.getLogger(__name__)

PHOTO_TEMPLATE = "a photo of a {}."

# Short photo/depiction descriptions with one slot for the class name. Written for this
# project: they vary image quality, medium, size, viewpoint and context.
PROMPT_TEMPLATES: tuple[str, ...] = (
    "a blurry photo of a {}.",
    "a sharp photo of the {}.",
    "a grainy snapshot of a {}.",
    "an out-of-focus picture of the {}.",
    "a low-resolution image of a {}.",
    "a high-resolution photo of the {}.",
    "an overexposed photo of a {}.",
    "a dark, underexposed photo of the {}.",
    "a brightly lit photo of a {}.",
    "a black and white photo of the {}.",
    "a faded old photograph of a {}.",
    "a cropped photo of the {}.",
    "a close-up photo of a {}.",
    "a wide shot with a {} in it.",
    "a photo of a small {}.",
    "a photo of a large {}.",
    "a photo of the tiny {}.",
    "a photo of the huge {}.",
    "a photo of one {}.",
    "a photo of many {}.",
    "a photo of a {} seen from above.",
    "a photo of a {} seen from the side.",
    "a photo of a {} in the corner of the frame.",
    "a photo of a {} partly hidden behind something.",
    "a photo of a {} on a plain background.",
    "a photo of a {} on a cluttered background.",
    "a snapshot of my {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a photo of a weird-looking {}.",
    "a photo of a nice {}.",
    "a photo of an unusual {}.",
    "a drawing of the {}.",
    "a pencil sketch of a {}.",
    "a doodle of a {}.",
    "a cartoon {}.",
    "a painting of the {}.",
    "a watercolor painting of a {}.",
    "an oil painting of the {}.",
    "a digital illustration of a {}.",
    "clip art of a {}.",
    "an icon of a {}.",
    "pixel art of the {}.",
    "an embroidered {}.",
    "a sculpture of a {}.",
    "a toy {}.",
    "a plastic model of the {}.",
    "a 3d rendering of a {}.",
    "a tattoo of a {}.",
    "graffiti of a {}.",
    "a {} printed on a t-shirt.",
    "a sticker shaped like a {}.",
    "a screenshot showing a {}.",
    "a video frame with a {}.",
    "a jpeg-compressed photo of a {}.",
    "a noisy photo of the {}.",
    "a photo of a {} taken at night.",
    "a photo of a {} taken outdoors.",
    "a photo of a {} taken indoors.",
    "there is a {} in this picture.",
    "an image containing a {}.",
    "a picture of a {}.",
    "itap of a {}.",
)


def template_sentences(class_names: Sequence[str], n_photo_copies: int = 9,
                       templates: Sequence[str] = PROMPT_TEMPLATES) -> list[tuple[str, str]]:
    """``(sentence, class)`` pairs: per class, ``n_photo_copies`` x ``"a photo of a {c}."`` then the templates."""
    out: list[tuple[str, str]] = []
    for c in class_names:
        out.extend((PHOTO_TEMPLATE.format(c), c) for _ in range(n_photo_copies))
        out.extend((t.format(c), c) for t in templates)
    return out
