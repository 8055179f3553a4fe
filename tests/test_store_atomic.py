"""The atomic writer: whole values and file handles replace the target only on success."""
from __future__ import annotations

import numpy as np
import pytest

from tagger.store.atomic import TMP_PREFIX, atomic_open, atomic_write_bytes, atomic_write_text


def test_text_and_bytes_replace_the_target(tmp_path) -> None:
    path = tmp_path / "sub" / "a.json"
    atomic_write_text(path, "é\n")
    assert path.read_bytes() == "é\n".encode("utf-8")
    atomic_write_bytes(path, b"x")
    assert path.read_bytes() == b"x"
    assert not [p for p in path.parent.iterdir() if p.name.startswith(TMP_PREFIX)]


def test_a_failed_body_keeps_the_old_content_and_no_temp_file(tmp_path) -> None:
    path = tmp_path / "m.npy"
    with atomic_open(path) as fh:
        np.save(fh, np.arange(3))
    with pytest.raises(RuntimeError), atomic_open(path) as fh:
        fh.write(b"partial")
        raise RuntimeError("killed")
    assert np.load(path).tolist() == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["m.npy"]
