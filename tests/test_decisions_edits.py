"""A vocabulary edit a person makes does not silently kill a label: synonyms made of words the text
tower does not know, added to a label its images show, leave the label present and tagged (toy-rn,
held-out toy scenes, the classifier trained as `tagger train` does)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from tagger.evaluate.datasets import read_toy
from tagger.evaluate.harness import embed_dataset
from tagger.method.comc import ComcConfig
from tagger.text.comcfit import fit_comc_generated
from tagger.method.decisions import fit_anchored
from tagger.models import load_clip
from tagger.pipeline.tag import prompt_vectors
from tagger.toyworld import LABEL_SYNONYMS, LABELS

# words no toy caption uses, so the toy text tower never learnt them
UNKNOWN = {"pentagon": ["ravioli gallon", "hectare"], "hexagon": ["honeycomb cell", "persimmon"],
           "square": ["colloquy stealth", "dill"], "moon": ["surfboard clearing", "elf"],
           "fish": ["paragraph bosom", "silo"]}


@pytest.fixture(scope="module")
def scenes():
    clip = load_clip("toy-rn", device="cpu")
    return clip, embed_dataset(clip, read_toy(n=600, split="val"))


def decide(clip, data, synonyms):
    """Decide as a tag run does: anchors, and each image's best zero-shot match by the class prompts."""
    model = fit_comc_generated(clip, LABELS, synonyms, ComcConfig())
    s = model.scores(data.global_, data.patches.astype("float32"))
    top1 = (data.global_ @ prompt_vectors(model).T).argmax(1)
    return model.classifier.anchors, fit_anchored(s, list(LABELS), model.classifier.anchors,
                                                  zeroshot_top1=top1), s


def test_unknown_synonyms_keep_the_labels_their_images_show(scenes):
    clip, data = scenes
    y = data.labels.astype(bool)
    _, before, s0 = decide(clip, data, LABEL_SYNONYMS)
    edited = {k: list(v) + UNKNOWN.get(k, []) for k, v in LABEL_SYNONYMS.items()}
    anchors, after, s1 = decide(clip, data, edited)
    tp0 = (before.positive(s0) & y).sum(0)
    tp1 = (after.positive(s1) & y).sum(0)
    for name in UNKNOWN:
        j = LABELS.index(name)
        assert after.present[j], (name, after.reason(j))
        assert tp1[j] >= 0.8 * tp0[j], (name, tp0[j], tp1[j], after.reason(j))
    # the unreadable sentences drag the plain reading of some label; the gates read the better one
    plain = replace(anchors, robust_separation=None).separation()
    assert (anchors.separation() >= plain).all()
    assert np.all(anchors.separation()[[LABELS.index(n) for n in UNKNOWN]] >= 2.0)
