"""Sidecars as exiftool, digiKam and darktable write them, tag runs with chosen positives, and
exiftool read-backs: shared by the export, merge, hostile-path and keyword-import tests."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from typer.testing import CliRunner

from tagger.catalog import Catalog
from tagger.cli import app
from tagger.workspace import Workspace

EXIFTOOL = shutil.which("exiftool")
runner = CliRunner()

# digiKam (Exiv2): namespaces on the description, TagsList as a Seq, a colour label and a pick label
DIGIKAM = """<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="XMP Core 4.4.0-Exiv2">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:dc="http://purl.org/dc/elements/1.1/"
    xmlns:digiKam="http://www.digikam.org/ns/1.0/"
    xmlns:MicrosoftPhoto="http://ns.microsoft.com/photo/1.0/"
    xmlns:lr="http://ns.adobe.com/lightroom/1.0/"
    xmp:Rating="4" xmp:Label="Red" digiKam:ColorLabel="1" digiKam:PickLabel="2">
   <digiKam:TagsList><rdf:Seq><rdf:li>places/Paris</rdf:li><rdf:li>family</rdf:li></rdf:Seq></digiKam:TagsList>
   <MicrosoftPhoto:LastKeywordXMP><rdf:Bag><rdf:li>places/Paris</rdf:li><rdf:li>family</rdf:li></rdf:Bag></MicrosoftPhoto:LastKeywordXMP>
   <lr:hierarchicalSubject><rdf:Bag><rdf:li>places|Paris</rdf:li><rdf:li>family</rdf:li></rdf:Bag></lr:hierarchicalSubject>
   <dc:subject><rdf:Bag><rdf:li>Paris</rdf:li><rdf:li>family</rdf:li><rdf:li>holiday</rdf:li></rdf:Bag></dc:subject>
   <dc:title><rdf:Alt><rdf:li xml:lang="x-default">Sunset</rdf:li></rdf:Alt></dc:title>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
<?xpacket end="w"?>
"""

# darktable: an XML declaration, settings as attributes, the edit history as a Seq of attribute-only items
DARKTABLE = """<?xml version="1.0" encoding="UTF-8"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="XMP Core 4.4.0-Exiv2">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:exif="http://ns.adobe.com/exif/1.0/"
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:xmpMM="http://ns.adobe.com/xap/1.0/mm/"
    xmlns:dc="http://purl.org/dc/elements/1.1/"
    xmlns:lr="http://ns.adobe.com/lightroom/1.0/"
    xmlns:darktable="http://darktable.sf.net/"
   exif:DateTimeOriginal="2021:07:14 18:02:11"
   xmp:Rating="3"
   xmpMM:DerivedFrom="a.jpg"
   darktable:import_timestamp="63790000000000000"
   darktable:xmp_version="5"
   darktable:raw_params="0"
   darktable:auto_presets_applied="1"
   darktable:history_end="2"
   darktable:iop_order_version="2">
   <darktable:colorlabels><rdf:Seq><rdf:li>0</rdf:li><rdf:li>2</rdf:li></rdf:Seq></darktable:colorlabels>
   <dc:subject><rdf:Bag><rdf:li>holiday</rdf:li><rdf:li>star</rdf:li></rdf:Bag></dc:subject>
   <lr:hierarchicalSubject><rdf:Bag><rdf:li>places|Paris</rdf:li><rdf:li>darktable|format|jpg</rdf:li></rdf:Bag></lr:hierarchicalSubject>
   <darktable:history>
    <rdf:Seq>
     <rdf:li darktable:num="0" darktable:operation="exposure" darktable:enabled="1" darktable:modversion="6"
      darktable:params="0000000000000000000000000000803f" darktable:multi_name="" darktable:multi_priority="0"
      darktable:blendop_version="11" darktable:blendop_params="gz14eJxjYIAAFgYYOOHEgAZY"/>
     <rdf:li darktable:num="1" darktable:operation="colorbalancergb" darktable:enabled="1" darktable:modversion="5"
      darktable:params="cdcccc3d0000000000000000" darktable:multi_name="" darktable:multi_priority="0"
      darktable:blendop_version="11" darktable:blendop_params="gz14eJxjYIAAFgYYOOHEgAZY"/>
    </rdf:Seq>
   </darktable:history>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
"""

#: the person's keywords of each fixture form (flat, hierarchical)
PERSON = {"exiftool": ({"holiday", "family", "star"}, {"places|Paris"}),
          "digikam": ({"Paris", "family", "holiday"}, {"places|Paris", "family"}),
          "darktable": ({"holiday", "star"}, {"places|Paris", "darktable|format|jpg"})}


def write_exiftool_sidecar(path: Path) -> None:
    """A sidecar made by exiftool itself, from scratch."""
    args = ["-XMP-dc:Subject=holiday", "-XMP-dc:Subject=family", "-XMP-dc:Subject=star",
            "-XMP-lr:HierarchicalSubject=places|Paris", "-XMP-digiKam:TagsList=places/Paris",
            "-XMP-xmp:Rating=4", "-XMP-dc:Title=Sunset", "-XMP-xmp:Label=Red", "-XMP-photoshop:Urgency=2"]
    out = subprocess.run([EXIFTOOL, "-q", *args, str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and path.is_file(), out.stderr


def write_fixture(form: str, path: Path) -> None:
    if form == "exiftool":
        write_exiftool_sidecar(path)
    else:
        path.write_text(DIGIKAM if form == "digikam" else DARKTABLE, encoding="utf-8")


def exif(path: Path, *extra: str) -> dict:
    out = subprocess.run([EXIFTOOL, "-j", "-struct", *extra, str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    row = json.loads(out.stdout)[0]
    for key in ("SourceFile", "FileModifyDate", "FileAccessDate", "FileInodeChangeDate", "FileSize",
                "FilePermissions", "Directory", "FileName", "ExifToolVersion"):
        row.pop(key, None)
    return row


def as_set(value) -> set[str]:
    return set() if value is None else {str(v) for v in (value if isinstance(value, list) else [value])}


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def tag_run(root: Path, positives: dict[str, set[str]], labels: list[str]) -> int:
    """A new current run over ``positives``' images, every label scored, the given ones positive."""
    with Catalog.open(Workspace.at(root).catalog) as cat:
        uris = sorted(positives)
        ids = np.asarray(cat.register_images(uris), np.int64)
        cat.add_labels([lab for lab in labels if lab not in set(cat.active_labels())])
        run = cat.start_run("tag", model_id="m", labels=labels)
        pos = [lab in positives[u] for u in uris for lab in labels]
        n = len(pos)
        path = root / f"tags-{run}.parquet"
        pq.write_table(pa.table({
            "image_id": np.repeat(ids, len(labels)), "label": pa.array(labels * len(uris)),
            "score": np.linspace(0, 1, n).astype(np.float32), "confidence": np.linspace(0.5, 1, n).astype(np.float32),
            "positive": pos}), path)
        cat.load_tags(run, path)
        cat.finish_run(run)
        cat.set_current(run)
        return run


def photo_library(tmp_path: Path, sidecars: "dict[str, bytes | None]", positives: set[str], labels: list[str],
                  ext: str = ".xmp") -> tuple[Path, dict[str, Path]]:
    """Images ``<name>.jpg`` in ``tmp_path/photos`` with the given sidecars ``<name>.jpg<ext>`` (None: no
    sidecar yet) and a workspace ``tmp_path/ws`` whose current run has ``positives`` on each of them."""
    folder = tmp_path / "photos"
    folder.mkdir()
    paths = {}
    for name, data in sidecars.items():
        (folder / f"{name}.jpg").write_bytes(b"jpeg")
        paths[name] = folder / f"{name}.jpg{ext}"
        if data is not None:
            paths[name].write_bytes(data)
    root = tmp_path / "ws"
    tag_run(root, {str(folder / f"{n}.jpg"): set(positives) for n in sidecars}, labels)
    return root, paths
