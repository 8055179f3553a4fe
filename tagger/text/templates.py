"""Single-label template sentences appended to every text corpus (one label each)."""
from __future__ import annotations

import logging
from collections.abc import Collection, Sequence

from ..method.names import fill

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


def _modifier(template: str) -> str:
    """The word right before the slot (``small`` in ``"a photo of a small {}."``), lower case."""
    words = template.split("{}", 1)[0].split()
    return words[-1].lower() if words else ""


def _names_a_label(template: str, known: Collection[str], longest: int = 4) -> bool:
    """Whether the template's own words (the slot left out) hold a name of ``known`` (casefolded):
    ``"a photo of a {} on a plain background."`` names ``plain background`` when that is a label."""
    for part in template.casefold().split("{}"):
        words = [w.strip(".,!?:;") for w in part.split()]
        for i in range(len(words)):
            for j in range(i + 1, min(len(words), i + longest) + 1):
                if " ".join(words[i:j]) in known:
                    return True
    return False


def template_sentences(class_names: Sequence[str], n_photo_copies: int = 9,
                       templates: Sequence[str] = PROMPT_TEMPLATES,
                       names: Collection[str] = ()) -> list[tuple[str, str]]:
    """``(sentence, class)`` pairs: per class, ``n_photo_copies`` x ``"a photo of a {c}."`` then the templates.

    ``names`` are the vocabulary's labels and synonyms (casefolded): a template whose word before
    the slot makes the class another label's name (``"a photo of a small {}."`` for ``star`` when
    ``small star`` is a label) is left out for that class, as is one that puts a second such word
    before a class that already starts with it; a template whose own words name a label is left
    out for every class. Without ``names`` every template is kept.
    """
    known = {n.casefold() for n in names}
    firsts = {n.split(" ", 1)[0] for n in known if " " in n}
    templates = [t for t in templates if not _names_a_label(t, known)] if known else list(templates)
    out: list[tuple[str, str]] = []
    for c in class_names:
        out.extend((fill(PHOTO_TEMPLATE, c), c) for _ in range(n_photo_copies))
        lead = c.split(" ", 1)[0].casefold() if " " in c else ""
        for t in templates:
            mod = _modifier(t)
            if known and (f"{mod} {c.casefold()}" in known or (lead in firsts and mod in firsts)):
                continue
            out.append((fill(t, c), c))
    return out
