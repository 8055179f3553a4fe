"""Does a person's keywords, imported with `tagger import-keywords`, improve the tags?

Toy scenes are encoded (toy-rn, local Ray), the text classifier trained and a first run tagged.
Then 200 of the images get sidecars carrying their truth the ways photo tools write it (digiKam:
capitalised keywords, a ``shapes|<label>`` hierarchy and TagsList; darktable: lower-case keywords
plus ``holiday``; Lightroom ``photo.xmp``: a synonym as the keyword), `import-keywords` maps them to
labels, and two uses of the imported set are scored on the *other* images (micro F1 of positives):
``tag --calibrate-with`` and a head trained on them (``train --head ovml --annotations``).

    python bench/keywords_import.py [--n 600] [--labelled 200] [--out bench-keywords]
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import time
from pathlib import Path

from typer.testing import CliRunner

from tagger.catalog import Catalog
from tagger.cli import app
from tagger.toyworld import LABEL_SYNONYMS, LABELS
from tagger.toyworld.export import export_scenes

runner = CliRunner()
XMP = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
       '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/" '
       'xmlns:lr="http://ns.adobe.com/lightroom/1.0/" xmlns:digiKam="http://www.digikam.org/ns/1.0/" '
       'xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:Rating="3">{body}</rdf:Description></rdf:RDF></x:xmpmeta>')


def cli(*args: str) -> dict:
    out = runner.invoke(app, [*args, "--json"], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")][-1]


def bag(tag: str, items: list[str], kind: str = "Bag") -> str:
    return f"<{tag}><rdf:{kind}>" + "".join(f"<rdf:li>{i}</rdf:li>" for i in items) + f"</rdf:{kind}></{tag}>"


def write_sidecar(image: Path, labels: list[str], k: int) -> None:
    """The truth of one image as one of three photo tools would keep it."""
    if k % 3 == 0:  # digiKam
        body = (bag("dc:subject", [lab.title() for lab in labels] + ["Family"])
                + bag("lr:hierarchicalSubject", [f"shapes|{lab}" for lab in labels])
                + bag("digiKam:TagsList", [f"shapes/{lab}" for lab in labels], "Seq"))
        Path(f"{image}.xmp").write_text(XMP.format(body=body), encoding="utf-8")
    elif k % 3 == 1:  # darktable
        body = bag("dc:subject", labels + ["holiday"]) + bag("lr:hierarchicalSubject", ["darktable|format|jpg"])
        Path(f"{image}.xmp").write_text(XMP.format(body=body), encoding="utf-8")
    else:  # Lightroom's photo.xmp, a synonym as the keyword
        words = [LABEL_SYNONYMS[lab][0] if LABEL_SYNONYMS.get(lab) else lab for lab in labels]
        image.with_suffix(".xmp").write_text(XMP.format(body=bag("dc:subject", words)), encoding="utf-8")


def micro_f1(ws: Path, truth: dict[str, list[str]], uris: set[str]) -> dict:
    with Catalog.open(ws / "catalog.duckdb", read_only=True) as cat:
        pred = {(u, lab) for u, lab in cat.current_positives() if u in uris}
    true = {(u, lab) for u in uris for lab in truth[u]}
    hit = len(pred & true)
    p, r = hit / max(len(pred), 1), hit / max(len(true), 1)
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(2 * p * r / max(p + r, 1e-9), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--labelled", type=int, default=200)
    ap.add_argument("--out", default="bench-keywords")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    base = Path(a.out).resolve()
    shutil.rmtree(base, ignore_errors=True)
    t0 = time.time()
    truth = export_scenes(base / "images", a.n)
    ws = base / "ws"
    with Catalog.open(ws / "catalog.duckdb") as cat:
        cat.add_labels(list(LABELS), {k: list(v) for k, v in LABEL_SYNONYMS.items()})
    cli("encode", str(base / "images"), "-w", str(ws), "--model", "toy-rn", "--partition-size", "100",
        "--num-gpus", "0")
    cli("generate-text", "-w", str(ws), "--n-sentences", "4000")
    cli("train", "-w", str(ws))
    cli("tag", "-w", str(ws))
    uris = sorted(truth)
    random.Random(a.seed).shuffle(uris)
    labelled, held_out = uris[:a.labelled], set(uris[a.labelled:])
    res: dict = {"images": a.n, "labelled": a.labelled, "held_out": len(held_out),
                 "baseline": micro_f1(ws, truth, held_out)}
    for k, uri in enumerate(labelled):
        if truth[uri]:
            write_sidecar(Path(uri), truth[uri], k)
    imported = cli("import-keywords", "-w", str(ws), "--out", str(base / "labelled.csv"), "--no-embedded")
    got: dict[str, set[str]] = {}
    for line in (base / "labelled.csv").read_text().splitlines()[1:]:
        uri, label, _ = line.rsplit(",", 2)
        got.setdefault(uri, set()).add(label)
    res["import"] = {k: imported[k] for k in ("labelled", "tags", "unmapped")}
    res["import"]["exact_images"] = sum(got.get(u, set()) == set(truth[u]) for u in labelled if truth[u])
    cli("tag", "-w", str(ws), "--calibrate-with", str(base / "labelled.csv"))
    res["calibrate_with"] = micro_f1(ws, truth, held_out)
    head = cli("train", "-w", str(ws), "--head", "ovml", "--annotations", str(base / "labelled.csv"))
    cli("tag", "-w", str(ws), "--classifier-id", head["classifier_id"], "--calibrate-with", str(base / "labelled.csv"))
    res["ovml_head_and_calibrate_with"] = micro_f1(ws, truth, held_out)
    res["seconds"] = round(time.time() - t0, 1)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
