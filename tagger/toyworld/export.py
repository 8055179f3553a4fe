"""Write toy scenes to an image folder with a ground-truth file (a corpus for demos and tests)."""
from __future__ import annotations

import json
from pathlib import Path

from .scenes import make_scene
from .vocab import LABELS


def export_scenes(folder: str | Path, n: int, split: str = "corpus", start: int = 0,
                  bad_files: bool = False) -> dict[str, list[str]]:
    """Write scenes ``start..start+n`` of ``split`` (JPEG, every third PNG) into ``folder``.

    Returns ``{path: [labels]}`` and also writes it to ``<folder>-truth.json``. With
    ``bad_files`` a corrupt JPEG and an empty PNG are added (they must become error rows).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    truth = {}
    for i in range(start, start + n):
        scene = make_scene(i, split)
        path = folder / f"scene-{i:06d}.{'png' if i % 3 == 0 else 'jpg'}"
        if path.suffix == ".jpg":
            scene.image.save(path, quality=95)
        else:
            scene.image.save(path)
        truth[str(path.resolve())] = [LABELS[j] for j in range(len(LABELS)) if scene.labels[j]]
    if bad_files:
        (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
        (folder / "empty.png").write_bytes(b"")
    (folder.parent / f"{folder.name}-truth.json").write_text(json.dumps(truth))
    return truth


def main() -> None:
    import argparse
    p = argparse.ArgumentParser(description="Write a toy-world image corpus with ground truth.")
    p.add_argument("folder")
    p.add_argument("--n", type=int, default=3000)
    p.add_argument("--split", default="corpus")
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--bad-files", action="store_true")
    a = p.parse_args()
    truth = export_scenes(a.folder, a.n, a.split, a.start, a.bad_files)
    print(f"wrote {len(truth)} scenes to {a.folder}")


if __name__ == "__main__":
    main()
