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


@pytest.fixture(scope="module")
def one_faiss_thread():
    """Small indexes train slower with OpenMP threads contending on a busy machine."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)
