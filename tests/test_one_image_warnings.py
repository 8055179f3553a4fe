"""A one-image corpus fits degenerate score distributions (a spread of 0): deciding and scoring
them prints no numpy RuntimeWarning, and still gives a threshold and confidences in [0, 1]."""
from __future__ import annotations

import warnings

import numpy as np

from tagger.method.decisions import Decisions


def test_a_degenerate_fit_warns_nothing():
    labels = ["star", "moon"]
    d = Decisions(labels=labels, mu0=np.array([0.0, 0.1]), sd0=np.array([0.0, 0.0]),
                  mu1=np.array([2.0, 2.0]), sd1=np.array([0.5, 0.0]), prior=np.array([0.5, 0.0]),
                  present=np.array([True, True]), cutoff=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any RuntimeWarning fails the test
        t = d.thresholds()
        conf = d.confidence(np.array([[0.0, 0.1], [3.0, 3.0]]))
    assert t.shape == (2,) and not np.isnan(t).any()
    assert ((conf >= 0) & (conf <= 1)).all()
