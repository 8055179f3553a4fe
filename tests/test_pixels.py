"""The shared resize-and-crop: torchvision's Resize + CenterCrop on PIL images, pixel for pixel, without torch."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tagger.models.pixels import PixelSpec, resize_center_crop


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
def test_resize_center_crop_equals_torchvision(interpolation) -> None:
    from torchvision import transforms as T

    mode = {"bicubic": T.InterpolationMode.BICUBIC, "bilinear": T.InterpolationMode.BILINEAR}[interpolation]
    rng = np.random.default_rng(1)
    for size in (16, 96):
        ref = T.Compose([T.Resize(size, interpolation=mode), T.CenterCrop(size)])
        for w, h in [(size, size), (300, 199), (199, 300), (97, 1000), (size + 3, size), (33, 45)]:
            im = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
            out = resize_center_crop(im, size, interpolation)
            assert out.size == (size, size)
            assert np.array_equal(np.asarray(ref(im)), np.asarray(out)), (size, w, h)
            spec = PixelSpec(size, interpolation=interpolation)
            assert np.array_equal(np.asarray(spec.resize_crop(im)), np.asarray(out))


def test_pixels_imports_no_torch() -> None:
    code = "import sys, tagger.models.pixels\nsys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
