"""Thumbnails for the report: made once per image content from the source file (PIL, EXIF orientation
applied) into a cache folder, and copied from there into each report that shows them. A thumbnail is
made only from the bytes the catalog encoded (their sha256, where it knows it): a file swapped since
shows none rather than another picture."""
from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
from pathlib import Path

from PIL import Image, ImageOps

from ..uris import to_local_path
from ..atomic import atomic_open

__all__ = ["THUMB_SIZE", "ThumbnailCache"]

logger = logging.getLogger(__name__)

#: The longest side of a thumbnail, in pixels.
THUMB_SIZE = 192


def _key(uri: str, content_hash: str | None) -> str:
    """A file name per image content: its sha256 when the catalog knows it, else one of the URI."""
    if content_hash:
        return content_hash[:32]
    return "u" + hashlib.sha256(uri.encode("utf-8")).hexdigest()[:31]


class ThumbnailCache:
    """``cache/<key>.jpg`` per image content; :meth:`place` copies one into a site folder."""

    def __init__(self, cache_dir: str | os.PathLike, size: int = THUMB_SIZE) -> None:
        self.dir, self.size = Path(cache_dir), int(size)
        self.made = self.reused = self.failed = 0
        self._bad: set[str] = set()

    def _make(self, uri: str, content_hash: str | None, target: Path) -> bool | None:
        """Write the thumbnail; False when the source cannot be read as an image, None when its bytes
        are no longer the ones encoded (it may be put back: not remembered as bad)."""
        local = to_local_path(uri)
        if local is None:  # remote sources are not fetched for a report
            return False
        try:
            data = Path(local).read_bytes()
            if content_hash and hashlib.sha256(data).hexdigest() != content_hash:
                logger.info("no thumbnail for %s: the file changed after it was encoded", uri)
                return None
            with Image.open(io.BytesIO(data)) as src:
                src.draft("RGB", (self.size, self.size))  # JPEG: decode at a reduced scale
                im = ImageOps.exif_transpose(src)
                im.thumbnail((self.size, self.size))
                if im.mode not in ("RGB", "L"):
                    im = im.convert("RGB")
                with atomic_open(target) as fh:
                    im.save(fh, "JPEG", quality=82, optimize=True)
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            logger.info("no thumbnail for %s: %s", uri, e)
            return False
        return True

    def thumbnail(self, uri: str, content_hash: str | None) -> Path | None:
        """The cached thumbnail of an image, made now if missing; None when the source cannot be read
        or no longer holds the bytes encoded."""
        key = _key(uri, content_hash)
        target = self.dir / f"{key}.jpg"
        if target.is_file():
            self.reused += 1
            return target
        if key in self._bad:
            return None
        made = self._make(uri, content_hash, target)
        if made:
            self.made += 1
            return target
        if made is False:
            self._bad.add(key)
        self.failed += 1
        return None

    def place(self, uri: str, content_hash: str | None, site_dir: Path) -> str | None:
        """Copy the image's thumbnail into ``site_dir`` (once); its file name there, or None."""
        src = self.thumbnail(uri, content_hash)
        if src is None:
            return None
        dst = site_dir / src.name
        if not dst.exists():
            try:
                os.link(src, dst)  # same filesystem: no copy
            except OSError:
                shutil.copyfile(src, dst)
        return src.name
