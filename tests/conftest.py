"""Shared fixtures: a folder of toy-world images with ground truth, plus some bad files."""
from __future__ import annotations

from pathlib import Path

import pytest

from tagger.toyworld.export import export_scenes


@pytest.fixture(scope="session")
def toy_folder(tmp_path_factory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("toy") / "images"
    return folder, export_scenes(folder, 48, bad_files=True)
