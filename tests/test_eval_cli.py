"""`tagger eval` runs offline on the shipped toy models and ends with a JSON line of metrics."""
import json

import pytest
from typer.testing import CliRunner

from tagger.cli import app


@pytest.mark.parametrize("model,head", [("toy-vit", "zsclip"), ("toy-rn", "zsclip-ensemble-std")])
def test_eval_toy_json(model, head, tmp_path, monkeypatch):
    monkeypatch.setenv("TAGGER_CACHE", str(tmp_path))
    res = CliRunner().invoke(app, ["eval", "--dataset", "toy", "--n", "200", "--model", model, "--head", head,
                                   "--json"])
    assert res.exit_code == 0, res.output
    metrics = json.loads(res.output.strip().splitlines()[-1])
    assert metrics["model"] == model and metrics["n_images"] == 200
    for key in ("mAP", "F1@3", "F1@5"):
        assert 0.0 <= metrics[key] <= 100.0
    assert list(tmp_path.glob("eval/*.npz"))  # embeddings were cached for the next head


def test_eval_unknown_head_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TAGGER_CACHE", str(tmp_path))
    res = CliRunner().invoke(app, ["eval", "--dataset", "toy", "--n", "20", "--head", "nope"])
    assert res.exit_code == 2 and "unknown head" in res.output
