"""The atomic writer (tagger.atomic): files and folders replace their target only once complete,
fsynced, under unique temp names; a failure keeps the old content and leaves no temp behind."""
from __future__ import annotations

import errno
import os
import stat
import threading
from pathlib import Path

import numpy as np
import pytest

import tagger.atomic as atomic
from tagger.atomic import (TMP_PREFIX, atomic_dir, atomic_open, atomic_write_bytes, atomic_write_text, commit_dir,
                           temp_name)
from tagger.errors import SimulatedCrash


def _temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(TMP_PREFIX))


def test_text_and_bytes_replace_the_target(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "a.json"
    atomic_write_text(path, "é\n")
    assert path.read_bytes() == "é\n".encode("utf-8")
    atomic_write_bytes(path, b"x")
    assert path.read_bytes() == b"x"
    assert _temps(path.parent) == []


def test_a_failed_body_keeps_the_old_content_and_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "m.npy"
    with atomic_open(path) as fh:
        np.save(fh, np.arange(3))
    with pytest.raises(RuntimeError), atomic_open(path) as fh:
        fh.write(b"partial")
        raise RuntimeError("killed")
    assert np.load(path).tolist() == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["m.npy"]


def test_a_simulated_crash_leaves_the_temp_file_as_a_kill_would(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("old")
    with pytest.raises(SimulatedCrash), atomic_open(path) as fh:
        fh.write(b"new")
        raise SimulatedCrash("crash")
    assert path.read_text() == "old"
    (left,) = _temps(tmp_path)
    assert left.startswith(f"{TMP_PREFIX}a.txt.{os.getpid()}.")


def test_temp_names_are_unique_and_writers_do_not_collide(tmp_path: Path) -> None:
    target = tmp_path / "t.bin"
    assert len({temp_name(target) for _ in range(100)}) == 100
    barrier, errors = threading.Barrier(8), []

    def write(k: int) -> None:
        try:
            with atomic_open(target) as fh:
                barrier.wait(timeout=10)  # all eight temp files exist at once
                fh.write(bytes([k]) * 1000)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=write, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    data = target.read_bytes()
    assert len(data) == 1000 and len(set(data)) == 1  # one writer's whole content
    assert _temps(tmp_path) == []


@pytest.mark.parametrize("name", ["L" * 236 + ".jpg.xmp", "\u661f" * 80 + ".csv", "x" * 255],
                         ids=["sidecar", "cjk", "no-extension"])
def test_every_legal_name_is_written_under_a_temp_name_that_fits(tmp_path: Path, name: str) -> None:
    """A 244-byte sidecar name (an image named with 240 bytes: 80 CJK characters) is legal; its temp
    name, prefix, pid and random part added, must stay within the file system's 255 bytes too."""
    target = tmp_path / name
    names = {temp_name(target).name for _ in range(50)}
    assert len(names) == 50 and all(len(os.fsencode(n)) <= 255 and n.startswith(TMP_PREFIX) for n in names)
    assert all(os.fsencode(n).decode("utf-8") for n in names)  # cut between characters, never inside one
    if "." in name:
        ext = name.rsplit(".", 1)[1]
        assert all(f"~.{ext}.{os.getpid()}." in n for n in names)  # a cleaner still knows what it was for
    atomic_write_bytes(target, b"data", parents=False)
    assert target.read_bytes() == b"data" and _temps(tmp_path) == []
    with pytest.raises(SimulatedCrash), atomic_open(target) as fh:
        raise SimulatedCrash("crash")
    assert [len(os.fsencode(n)) <= 255 for n in _temps(tmp_path)] == [True]


def test_the_file_and_its_folder_are_fsynced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(atomic.os, "fsync", spy)
    atomic_write_bytes(tmp_path / "f.bin", b"data")
    assert synced[0].startswith(str(tmp_path / TMP_PREFIX))  # the temp file, before its rename
    assert synced[-1] == str(tmp_path)  # then the folder holding the new entry


def test_without_parents_a_missing_folder_is_an_error_and_nothing_is_made(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError), atomic_open(tmp_path / "missing" / "x.csv", parents=False) as fh:
        fh.write(b"x")
    assert list(tmp_path.iterdir()) == []


def test_mode_and_a_refusing_check_before_the_rename(tmp_path: Path) -> None:
    path = tmp_path / "s.xmp"
    with atomic_open(path, mode=0o600) as fh:
        fh.write(b"one")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600

    def refuse(tmp: Path) -> None:
        assert tmp.read_bytes() == b"two"  # complete when checked
        raise ValueError("target changed")

    with pytest.raises(ValueError), atomic_open(path, before_replace=refuse) as fh:
        fh.write(b"two")
    assert path.read_bytes() == b"one" and _temps(tmp_path) == []


def test_a_folder_appears_whole_and_replaces_the_old_one(tmp_path: Path) -> None:
    final = tmp_path / "out" / "site"
    with atomic_dir(final) as tmp:
        assert tmp.parent == final.parent and tmp.name.startswith(TMP_PREFIX)
        (tmp / "a.txt").write_text("1")
        assert not final.exists()  # nothing visible while it is filled
    assert sorted(p.name for p in final.iterdir()) == ["a.txt"]
    with atomic_dir(final) as tmp:
        (tmp / "b.txt").write_text("2")
    assert sorted(p.name for p in final.iterdir()) == ["b.txt"]  # replaced, not merged
    assert sorted(p.name for p in final.parent.iterdir()) == ["site"]


def test_a_failed_folder_leaves_the_old_one_and_no_temp(tmp_path: Path) -> None:
    final = tmp_path / "d"
    with atomic_dir(final) as tmp:
        (tmp / "keep.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(final) as tmp:
        (tmp / "new.txt").write_text("half")
        raise RuntimeError("killed")
    assert [p.name for p in tmp_path.iterdir()] == ["d"]
    assert (final / "keep.txt").read_text() == "old"


def test_keeping_an_existing_folder(tmp_path: Path) -> None:
    final = tmp_path / "c"
    final.mkdir()
    (final / "first.txt").write_text("first")
    with atomic_dir(final, replace=False) as tmp:
        (tmp / "second.txt").write_text("second")
    assert [p.name for p in final.iterdir()] == ["first.txt"] and _temps(tmp_path) == []


def test_a_folder_committed_by_another_writer_first_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    final, tmp = tmp_path / "shard", tmp_path / f"{TMP_PREFIX}shard.1.0"
    tmp.mkdir()
    (tmp / "mine").write_text("mine")
    real = os.rename

    def other_wins(src, dst):  # another writer's rename lands between our move-aside and ours
        Path(dst).mkdir()
        (Path(dst) / "theirs").write_text("theirs")
        return real(src, dst)

    monkeypatch.setattr(atomic.os, "rename", other_wins)
    assert commit_dir(tmp, final) is False
    assert [p.name for p in final.iterdir()] == ["theirs"] and not tmp.exists()


def test_a_failed_rename_puts_the_old_folder_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    final, tmp = tmp_path / "f", tmp_path / f"{TMP_PREFIX}f.1.0"
    final.mkdir()
    (final / "old").write_text("old")
    tmp.mkdir()

    def fail(src, dst):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(atomic.os, "rename", fail)
    with pytest.raises(OSError):
        commit_dir(tmp, final)
    assert (final / "old").read_text() == "old"


def test_every_file_of_a_folder_is_fsynced_before_its_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
        real(fd)

    monkeypatch.setattr(atomic.os, "fsync", spy)
    with atomic_dir(tmp_path / "x") as tmp:
        (tmp / "sub").mkdir()
        (tmp / "a").write_text("a")
        (tmp / "sub" / "b").write_text("b")
    assert {"a", "b", "sub"} <= set(synced)
