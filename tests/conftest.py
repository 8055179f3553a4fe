"""Shared fixtures: a folder of toy-world images with ground truth, plus some bad files."""
from __future__ import annotations

from pathlib import Path

import faiss
import pytest

from tagger.models.registry import register_configs
from tagger.toyworld.export import export_scenes

register_configs()  # tests build toy models with open_clip.create_model directly


@pytest.fixture(scope="session")
def toy_folder(tmp_path_factory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("toy") / "images"
    return folder, export_scenes(folder, 48, bad_files=True)


@pytest.fixture
def labelled_workspace(tmp_path):
    """``labelled_workspace(labels, synonyms=None)``: a new workspace ``tmp_path/ws`` whose vocabulary
    holds ``labels`` (and their synonyms), nothing encoded; returns its root."""
    from tagger.catalog import Catalog
    from tagger.workspace import Workspace

    def make(labels, synonyms=None) -> Path:
        root = tmp_path / "ws"
        with Catalog.open(Workspace.at(root).catalog) as cat:
            cat.add_labels(list(labels), synonyms)
        return root
    return make


@pytest.fixture(scope="module")
def one_faiss_thread():
    """Small indexes train slower with OpenMP threads contending on a busy machine."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module (the verbs join it instead of starting their own); never a
    stray cluster of the machine (``address="local"``)."""
    import os

    import ray
    saved = {k: os.environ.get(k) for k in ("RAY_USAGE_STATS_ENABLED", "RAY_AUTH_MODE")}
    os.environ.update(RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
    for k, v in saved.items():
        os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


@pytest.fixture(scope="session")
def random_checkpoint(tmp_path_factory):
    """``random_checkpoint(model)``: a local checkpoint of ``model`` with seeded random weights."""
    import open_clip
    import torch

    made: dict[str, Path] = {}

    def make(model: str) -> Path:
        if model not in made:
            torch.manual_seed(0)
            path = tmp_path_factory.mktemp("ckpt") / f"{model}-random.pt"
            torch.save(open_clip.create_model(model).state_dict(), path)
            made[model] = path
        return made[model]
    return make
