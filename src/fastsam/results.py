"""Typed per-image results of everything-mode segmentation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from . import formats
from .ops.masks import MaskCrops

__all__ = ["Segments"]


@dataclass(frozen=True, eq=False)
class Segments:
    """Masks of one image, in descending score order.

    Masks are stored compactly (a boolean crop per mask inside its box); ``masks`` builds the dense
    (N, H, W) array on first access. All coordinates are original-image pixels.

    Attributes:
        image_size: (H, W) of the original image.
        boxes: (N, 4) float32 detection boxes, xyxy (after the full-image box rule).
        scores: (N,) float32 detection scores (FastSAM's only confidence; a box score).
        stability: (N,) float32 stability scores: IoU of the mask logits thresholded at +1 and -1
            (SAM's definition), evaluated inside the box. Low values flag unreliable masks.
    """

    image_size: tuple[int, int]
    boxes: np.ndarray
    scores: np.ndarray
    stability: np.ndarray
    regions: np.ndarray = field(repr=False)
    crops: tuple[np.ndarray, ...] = field(repr=False)

    @classmethod
    def from_crops(
        cls, image_size: tuple[int, int], boxes: np.ndarray, scores: np.ndarray, crops: MaskCrops
    ) -> Segments:
        return cls(
            image_size=(int(image_size[0]), int(image_size[1])),
            boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
            scores=np.asarray(scores, dtype=np.float32).reshape(-1),
            stability=np.asarray(crops.stability, dtype=np.float32),
            regions=np.asarray(crops.regions, dtype=np.int64).reshape(-1, 4),
            crops=tuple(crops.crops),
        )

    @classmethod
    def from_masks(
        cls, masks: np.ndarray, scores: np.ndarray, stability: np.ndarray | None = None, boxes: np.ndarray | None = None
    ) -> Segments:
        """Segments from dense (K, H, W) bool masks (e.g. merged prompt results); crops are the tight
        mask boxes, and ``boxes`` default to them (xyxy, exclusive ends)."""
        masks = np.asarray(masks, dtype=bool)
        regions, crops, tight = [], [], []
        for m in masks:
            rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
            if rows.size == 0:
                regions.append((0, 0, 0, 0))
                crops.append(np.zeros((0, 0), dtype=bool))
                tight.append((0.0, 0.0, 0.0, 0.0))
                continue
            r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
            regions.append((r0, r1, c0, c1))
            crops.append(m[r0:r1, c0:c1].copy())
            tight.append((float(c0), float(r0), float(c1), float(r1)))
        k = len(masks)
        stab = np.zeros(k, dtype=np.float32) if stability is None else stability
        return cls.from_crops(
            masks.shape[1:],
            np.asarray(tight if boxes is None else boxes),
            scores,
            MaskCrops(np.asarray(regions).reshape(-1, 4), crops, np.asarray(stab)),
        )

    @classmethod
    def empty(cls, image_size: tuple[int, int]) -> Segments:
        return cls.from_crops(image_size, np.zeros((0, 4)), np.zeros(0), MaskCrops(np.zeros((0, 4)), [], np.zeros(0)))

    def __len__(self) -> int:
        return len(self.crops)

    def __getitem__(self, index: int | slice | Sequence[int] | np.ndarray) -> Segments:
        """Subset by int, slice, index list or boolean array (always returns Segments)."""
        idx = np.arange(len(self))[index]
        idx = np.atleast_1d(idx)
        return Segments(
            self.image_size,
            self.boxes[idx],
            self.scores[idx],
            self.stability[idx],
            self.regions[idx],
            tuple(self.crops[i] for i in idx),
        )

    @cached_property
    def areas(self) -> np.ndarray:
        """(N,) int64 mask pixel counts."""
        return np.array([int(c.sum()) for c in self.crops], dtype=np.int64)

    @cached_property
    def masks(self) -> np.ndarray:
        """(N, H, W) bool masks (built once, on first access)."""
        out = np.zeros((len(self), *self.image_size), dtype=bool)
        for k, (crop, (r0, r1, c0, c1)) in enumerate(zip(self.crops, self.regions)):
            if crop.size:
                out[k, r0:r1, c0:c1] = crop
        return out

    def mask(self, i: int) -> np.ndarray:
        """(H, W) bool mask ``i`` without building all masks."""
        return formats.paste(self.crops[i], self.regions[i], self.image_size)

    def mask_boxes(self) -> np.ndarray:
        """(N, 4) int64 tight mask boxes, XYWH in pixel counts (zeros for empty masks)."""
        return np.array(
            [formats.mask_bbox_xywh(c, r) for c, r in zip(self.crops, self.regions)], dtype=np.int64
        ).reshape(-1, 4)

    def to_rle(self) -> list[dict[str, Any]]:
        """COCO compressed RLE per mask: ``{"size": [H, W], "counts": str}``."""
        h, w = self.image_size
        return [{"size": [h, w], "counts": s} for s in formats.rle_encode(list(self.crops), self.regions, (h, w))]

    def to_polygons(self) -> list[list[np.ndarray]]:
        """Outer contours per mask: a list of (K, 2) float32 (x, y) arrays per mask."""
        return [formats.crop_polygons(c, r) for c, r in zip(self.crops, self.regions)]

    def to_records(self) -> list[dict[str, Any]]:
        """Records in the format of SAM's automatic mask generator (``output_mode="coco_rle"``).

        Each record: ``segmentation`` (COCO RLE), ``area``, ``bbox`` (tight mask box, XYWH),
        ``predicted_iou`` (the detection score: FastSAM predicts no IoU), ``stability_score``,
        ``point_coords`` (the centre of the detection box: FastSAM has no generating point),
        ``crop_box`` (the whole image, XYWH) and ``box_xyxy`` (the detection box, float).
        Records follow descending score order.
        """
        h, w = self.image_size
        records = []
        for k, (rle, bbox) in enumerate(zip(self.to_rle(), self.mask_boxes().tolist())):
            x1, y1, x2, y2 = (float(v) for v in self.boxes[k])
            records.append(
                {
                    "segmentation": rle,
                    "area": int(self.areas[k]),
                    "bbox": bbox,
                    "predicted_iou": float(self.scores[k]),
                    "stability_score": float(self.stability[k]),
                    "point_coords": [[(x1 + x2) / 2, (y1 + y2) / 2]],
                    "crop_box": [0, 0, w, h],
                    "box_xyxy": [x1, y1, x2, y2],
                }
            )
        return records

    def label_map(self) -> np.ndarray:
        """(H, W) uint16 map: 0 = background, i + 1 = mask i. Where masks overlap the smaller wins."""
        if len(self) >= 65535:
            raise ValueError("label_map supports at most 65534 masks")
        out = np.zeros(self.image_size, dtype=np.uint16)
        for k in np.argsort(-self.areas, kind="stable"):
            crop = self.crops[k]
            if crop.size:
                r0, r1, c0, c1 = self.regions[k]
                out[r0:r1, c0:c1][crop] = k + 1
        return out

    def save_pngs(self, directory: str | Path, stem: str = "mask") -> list[Path]:
        """Write one 8-bit PNG per mask (255 = mask) and ``<stem>_labels.png`` (16-bit label map)."""
        from PIL import Image

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        paths = []
        for k in range(len(self)):
            p = directory / f"{stem}_{k:04d}.png"
            Image.fromarray(self.mask(k).astype(np.uint8) * 255).save(p)
            paths.append(p)
        labels = directory / f"{stem}_labels.png"
        Image.fromarray(self.label_map()).save(labels)
        paths.append(labels)
        return paths
