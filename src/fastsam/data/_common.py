"""What the dataset readers share: :class:`Sample`, :class:`Problem`, the reader base class (bad-sample
bookkeeping) and mask/annotation decoding. The module docstring of :mod:`fastsam.data.datasets` states
the contract."""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from ..errors import FastSAMError, ImageError
from ..formats import rle_counts_from_string
from ..io.images import load_image

__all__ = ["Problem", "Sample", "masks_to_boxes"]

logger = logging.getLogger("fastsam.data.datasets")  # one logger for all readers (the CLI silences it by this name)


@dataclass
class Sample:
    image: np.ndarray  # (H, W, 3) uint8 RGB
    masks: np.ndarray  # (K, H, W) bool
    boxes: np.ndarray  # (K, 4) float32 xyxy pixels, exclusive ends
    name: str


@dataclass
class Problem:
    file: str
    what: str


class _BadAnnotation(Exception):
    """One annotation is unusable; its message becomes a Problem."""


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """(K, H, W) bool -> (K, 4) float32 tight xyxy boxes with exclusive ends (x = column)."""
    out = np.zeros((len(masks), 4), np.float32)
    for k, m in enumerate(masks):
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        if rows.size:
            out[k] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    return out


def _decode_rle(seg: Any, size: tuple[int, int]) -> np.ndarray:
    """Validated COCO RLE (compressed string or uncompressed list counts) -> (H, W) bool."""
    if not isinstance(seg, dict) or "size" not in seg or "counts" not in seg:
        raise _BadAnnotation("RLE segmentation lacks 'size' or 'counts'")
    try:
        rh, rw = (int(v) for v in seg["size"])
    except (TypeError, ValueError):
        raise _BadAnnotation(f"RLE size {seg['size']!r} is not [H, W]") from None
    if (rh, rw) != tuple(size):
        raise _BadAnnotation(f"RLE size {[rh, rw]} does not match the image size {list(size)}")
    counts = seg["counts"]
    if isinstance(counts, (str, bytes)):
        try:
            s = counts.decode("ascii") if isinstance(counts, bytes) else counts
            if any(not (48 <= ord(c) < 48 + 64) for c in s):
                raise ValueError("character out of range")
            counts = rle_counts_from_string(s)
        except (IndexError, ValueError, UnicodeDecodeError):
            raise _BadAnnotation("RLE counts string cannot be decoded") from None
    elif isinstance(counts, list):
        if not all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) for c in counts):
            raise _BadAnnotation("RLE counts list holds non-integers")
    else:
        raise _BadAnnotation(f"RLE counts of type {type(counts).__name__}")
    if any(c < 0 for c in counts):
        raise _BadAnnotation("RLE counts cannot be decoded (negative run length)")
    total = int(sum(counts))
    if total != rh * rw:
        raise _BadAnnotation(f"RLE counts sum to {total}, expected H*W = {rh * rw}")
    flat = np.zeros(rh * rw, dtype=bool)
    pos = 0
    for i, n in enumerate(counts):
        if i % 2:
            flat[pos : pos + n] = True
        pos += n
    return flat.reshape(rw, rh).T


def _fill_polygons(polys: list[np.ndarray], size: tuple[int, int]) -> tuple[np.ndarray, str | None]:
    """Rasterise (N, 2) float pixel polygons (x, y) with cv2.fillPoly. Returns the mask and a note
    ('clipped' when some vertex lies outside the image); raises if all of them lie fully outside."""
    h, w = size
    pts = np.concatenate(polys)
    if not np.isfinite(pts).all():
        raise _BadAnnotation("polygon has non-finite coordinates")
    if pts[:, 0].max() < 0 or pts[:, 0].min() > w or pts[:, 1].max() < 0 or pts[:, 1].min() > h:
        raise _BadAnnotation("polygon lies entirely outside the image")
    out = np.zeros((h, w), np.uint8)
    lim = 4 * max(h, w) + 16  # keep int32 coordinates sane; far vertices only move further out
    cv2.fillPoly(out, [np.clip(np.round(p), -lim, lim).astype(np.int32) for p in polys], 1, lineType=cv2.LINE_8)
    clipped = pts[:, 0].min() < 0 or pts[:, 0].max() > w or pts[:, 1].min() < 0 or pts[:, 1].max() > h
    return out.astype(bool), ("polygon partly outside the image, clipped" if clipped else None)


def _parse_polygons(seg: Any) -> list[np.ndarray]:
    if not seg or not all(isinstance(p, (list, tuple)) for p in seg):
        raise _BadAnnotation("polygon segmentation is not a list of coordinate lists")
    out = []
    for p in seg:
        try:
            a = np.asarray(p, dtype=np.float64)
        except (TypeError, ValueError):
            raise _BadAnnotation("polygon holds non-numbers") from None
        if a.ndim != 1 or a.size % 2 or a.size < 6:
            raise _BadAnnotation(f"polygon with {a.size} coordinates (need an even number >= 6)")
        out.append(a.reshape(-1, 2))
    return out


class _Base:
    """Shared bookkeeping: problems (deduplicated), bad-sample skipping, Sample assembly."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self._seen: set[tuple[str, str]] = set()
        self._bad: set[int] = set()

    def _problem(self, file: Any, what: str) -> None:
        key = (str(file), what)
        if key in self._seen:
            return
        self._seen.add(key)
        self.problems.append(Problem(str(file), what))
        logger.warning("%s: %s", file, what)

    def __len__(self) -> int:  # pragma: no cover - overridden
        raise NotImplementedError

    def _load(self, i: int) -> Sample:  # pragma: no cover - overridden
        raise NotImplementedError

    def __getitem__(self, i: int) -> Sample:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for a dataset of {n} samples")
        i %= n
        for j in range(n):
            k = (i + j) % n
            if k in self._bad:
                continue
            try:
                return self._load(k)
            except (ImageError, _BadAnnotation) as exc:
                self._bad.add(k)
                file, what = exc.args if len(exc.args) == 2 else ("?", str(exc))
                self._problem(file, what)
        raise FastSAMError(f"{type(self).__name__}: no readable sample ({len(self._bad)} of {n} are corrupt)")

    def scan(self) -> list[Problem]:
        """Decode every sample once (to collect all problems); returns ``problems``."""
        for i in range(len(self)):
            if i not in self._bad:
                self[i]
        return self.problems

    def _sample(self, image: np.ndarray, masks: list[np.ndarray], name: str) -> Sample:
        h, w = image.shape[:2]
        m = np.stack(masks) if masks else np.zeros((0, h, w), bool)
        return Sample(image=image, masks=m, boxes=masks_to_boxes(m), name=name)

    def _keep(self, mask: np.ndarray, file: Any, label: str, out: list[np.ndarray]) -> None:
        if not mask.any():
            self._problem(file, f"{label}: empty mask, skipped")
        else:
            out.append(mask)


def _decode_image_bytes(data: bytes, name: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return load_image(img)
    except ImageError:
        raise
    except Exception as exc:
        raise ImageError(f"{name}: corrupt image ({exc})") from None
