"""The formats a photo library holds: HEIC (phones) and AVIF images, made here from toy scenes,
are listed, decode like their JPEG twins and get the same top labels from the toy CLIP; a broken
one is an error row."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tagger.models import load_clip
from tagger.models.dense import image_features
from tagger.models.preprocess import pixel_spec
from tagger.method.zeroshot import class_embeddings
from tagger.pipeline.decode import HEIF_SUPPORTED, Decoder
from tagger.pipeline.sources import scan_images
from tagger.toyworld import LABELS
from tagger.toyworld.export import export_scenes

N = 8
pytestmark = pytest.mark.skipif(not HEIF_SUPPORTED, reason="pillow-heif is not installed")


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    """Per scene: the JPEG twin, a HEIC and an AVIF of the same pixels (quality 95), plus a broken HEIC."""
    folder = tmp_path_factory.mktemp("photos")
    export_scenes(folder / "src", N)
    out = []
    for i, src in enumerate(sorted((folder / "src").iterdir())):
        with Image.open(src) as im:
            rgb = im.convert("RGB")
        paths = {fmt: folder / f"scene{i}.{ext}" for fmt, ext in (("JPEG", "jpg"), ("HEIF", "heic"), ("AVIF", "avif"))}
        for fmt, path in paths.items():
            rgb.save(path, format=fmt, quality=95)
        out.append(paths)
    data = out[0]["HEIF"].read_bytes()
    (folder / "broken.heic").write_bytes(data[: len(data) // 2])
    return folder, out


def test_heic_and_avif_are_listed_and_really_encoded(twins):
    folder, pairs = twins
    listing = scan_images(folder / "*.*")
    names = {p.rsplit("/", 1)[-1] for p in listing.images.column("uri").to_pylist()}
    assert {p[f].name for p in pairs for f in ("JPEG", "HEIF", "AVIF")} | {"broken.heic"} == names
    with Image.open(pairs[0]["HEIF"]) as im:
        assert im.format == "HEIF"
    with Image.open(pairs[0]["AVIF"]) as im:
        assert im.format == "AVIF"


def test_heic_and_avif_tag_like_their_jpeg_twins(twins):
    folder, pairs = twins
    clip = load_clip("toy-vit", device="cpu")
    spec = pixel_spec("toy-vit")
    decoder = Decoder(preprocess=spec.to_uint8, size=spec.image_size)
    uris = [str(p[f]) for p in pairs for f in ("JPEG", "HEIF", "AVIF")] + [str(folder / "broken.heic")]
    out = decoder({"image_id": np.arange(len(uris)), "uri": np.array(uris, dtype=object)})
    assert list(out["status"][:-1]) == ["ok"] * (len(uris) - 1), list(out["error"])
    assert out["status"][-1] == "error" and out["error"][-1]  # a broken HEIC is an error row, with its reason
    import torch
    with torch.no_grad():
        g, _ = image_features(clip.model, spec.normalize(out["pixels"][:-1], clip.device, clip.dtype))
    g = g.float().numpy()
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    top = np.argsort(-(g @ class_embeddings(clip, LABELS).T), axis=1)[:, :3].reshape(N, 3, 3)
    for k, (jpeg, heic, avif) in enumerate(top):
        assert jpeg[0] == heic[0] == avif[0], (k, jpeg, heic, avif)          # the same best label
        assert set(jpeg) == set(heic) == set(avif), (k, jpeg, heic, avif)    # and the same top three
    cos = (g.reshape(N, 3, -1)[:, :1] * g.reshape(N, 3, -1)[:, 1:]).sum(-1)
    assert cos.min() > 0.97, cos
