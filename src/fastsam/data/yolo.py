"""YOLO-seg polygon label reader (contract: :mod:`fastsam.data.datasets`)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import FastSAMError, ImageError
from ..io.images import IMAGE_SUFFIXES, load_image
from ._common import Sample, _BadAnnotation, _Base, _fill_polygons

__all__ = ["YOLODataset"]


class YOLODataset(_Base):
    """YOLO-seg layout: ``root/images/<stem>.<ext>`` + ``root/labels/<stem>.txt``, one object per line
    ``cls x1 y1 x2 y2 ...`` with coordinates normalised to [0, 1]; the class is ignored. An image
    without a label file has no objects."""

    def __init__(self, root: str | os.PathLike) -> None:
        super().__init__()
        self.root = Path(root)
        img_dir, self._labels = self.root / "images", self.root / "labels"
        if not img_dir.is_dir():
            raise FastSAMError(f"{self.root}: no images/ directory (YOLO-seg layout)")
        self._items = sorted(p for p in img_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        stems = {p.stem for p in self._items}
        if self._labels.is_dir():
            for t in sorted(self._labels.glob("*.txt")):
                if t.stem not in stems:
                    self._problem(t, "label file has no image, skipped")

    def __len__(self) -> int:
        return len(self._items)

    def _load(self, i: int) -> Sample:
        path = self._items[i]
        try:
            image = load_image(path)
        except ImageError as exc:
            raise ImageError(str(path), f"corrupt image, sample skipped ({exc})") from None
        h, w = image.shape[:2]
        masks: list[np.ndarray] = []
        lab = self._labels / f"{path.stem}.txt"
        try:
            lines = lab.read_text().splitlines() if lab.is_file() else []
        except (OSError, UnicodeDecodeError) as exc:
            raise _BadAnnotation(str(lab), f"unreadable label file ({exc}), sample skipped") from None
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            label = f"line {n}"
            try:
                parts = line.split()
                try:
                    vals = np.array([float(v) for v in parts[1:]], np.float64)
                    float(parts[0])
                except ValueError:
                    raise _BadAnnotation("non-numeric value") from None
                if vals.size % 2 or vals.size < 6:
                    raise _BadAnnotation(f"{vals.size} coordinates (need an even number >= 6)")
                pts = vals.reshape(-1, 2) * (w, h)
                m, note = _fill_polygons([pts], (h, w))
                if note:
                    self._problem(lab, f"{label}: {note}")
            except _BadAnnotation as exc:
                self._problem(lab, f"{label}: {exc}, skipped")
                continue
            self._keep(m, lab, label, masks)
        return self._sample(image, masks, path.stem)
