"""COCO instances JSON reader (contract: :mod:`fastsam.data.datasets`)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FastSAMError, ImageError
from ..io.images import load_image
from ._common import Sample, _BadAnnotation, _Base, _decode_rle, _fill_polygons, _parse_polygons

__all__ = ["COCODataset"]


class COCODataset(_Base):
    """COCO instances JSON: polygon, uncompressed-RLE and compressed-RLE segmentations; ``iscrowd``
    annotations are skipped silently (they are not instances); categories are ignored."""

    def __init__(self, images_dir: str | os.PathLike, annotations_json: str | os.PathLike) -> None:
        super().__init__()
        self.images_dir = Path(images_dir)
        self.annotations_json = Path(annotations_json)
        try:
            data = json.loads(self.annotations_json.read_text())
            images, anns = data["images"], data.get("annotations", [])
            if not isinstance(images, list) or not isinstance(anns, list):
                raise TypeError
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise FastSAMError(f"{self.annotations_json}: not a readable COCO instances file ({exc!r})") from None
        by_image: dict[Any, list[dict]] = {}
        for j, a in enumerate(anns):
            if not isinstance(a, dict) or "image_id" not in a:
                self._problem(self.annotations_json, f"annotation #{j}: malformed (no image_id), skipped")
                continue
            by_image.setdefault(a["image_id"], []).append(a)
        self._items: list[tuple[Path, list[dict]]] = []
        known = set()
        for j, im in enumerate(images):
            if not isinstance(im, dict) or "file_name" not in im or "id" not in im:
                self._problem(self.annotations_json, f"image entry #{j}: malformed (needs id and file_name), skipped")
                continue
            known.add(im["id"])
            path = self.images_dir / im["file_name"]
            if not path.is_file():
                self._problem(path, f"image not found (image id {im['id']}), skipped")
                continue
            self._items.append((path, by_image.get(im["id"], [])))
        for iid in by_image.keys() - known:
            self._problem(self.annotations_json, f"annotations reference unknown image id {iid}, skipped")

    def __len__(self) -> int:
        return len(self._items)

    def _load(self, i: int) -> Sample:
        path, anns = self._items[i]
        try:
            image = load_image(path)
        except ImageError as exc:
            raise ImageError(str(path), f"corrupt image, sample skipped ({exc})") from None
        size = image.shape[:2]
        masks: list[np.ndarray] = []
        for a in anns:
            label = f"annotation {a.get('id', '?')}"
            if a.get("iscrowd", 0):
                continue
            seg = a.get("segmentation")
            try:
                if isinstance(seg, dict):
                    m = _decode_rle(seg, size)
                elif isinstance(seg, list):
                    m, note = _fill_polygons(_parse_polygons(seg), size)
                    if note:
                        self._problem(path, f"{label}: {note}")
                else:
                    raise _BadAnnotation("missing or unknown segmentation")
            except _BadAnnotation as exc:
                self._problem(path, f"{label}: {exc}, skipped")
                continue
            self._keep(m, path, label, masks)
        return self._sample(image, masks, path.stem)
