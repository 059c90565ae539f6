"""Ultralytics-shaped views of a [Segments][fastsam.Segments] result, without importing ultralytics.

Code written against ultralytics' (or the original FastSAM repo's) results reads
``results[0].masks.data``, ``results[0].boxes.xyxy`` and friends. :class:`Results` wraps one image's
``Segments`` and the image itself and answers those names with the shapes, dtypes and devices
ultralytics 8.4 documents:

* ``masks.data``: (N, H, W) ``torch.uint8`` 0/1 tensor at the original resolution, built lazily from
  the compact crops on first access; ``masks`` is None when nothing was detected, as in ultralytics.
* ``masks.xy`` / ``masks.xyn``: per mask a (K, 2) float32 array of outline points (pixels /
  normalised); a mask in several pieces lists the outlines of all pieces one after the other
  (ultralytics bridges them with extra segments).
* ``boxes.data`` (N, 6) float32: x1 y1 x2 y2 conf cls; ``xyxy``, ``xywh`` (centre x, centre y, w, h),
  ``xyxyn``, ``xywhn``, ``conf``, ``cls``; ``id`` is None (no tracking).
* ``orig_img``: the (H, W, 3) uint8 **BGR** image; ``orig_shape``: (H, W); ``plot()``: a BGR overlay.

One difference by construction: ``masks.data`` is always at the original image size. ultralytics
keeps non-retina masks in the letterboxed input frame; fastsam maps them back, as its prompts do.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Any

import numpy as np
import torch

from .results import Segments
from .viz import draw_prompts, overlay

__all__ = ["Boxes", "Masks", "Results"]

NAMES = {0: "object"}  # FastSAM's single class, as its released checkpoints name it


class Boxes:
    """Detection boxes of one image, ultralytics' ``Boxes`` layout: ``data`` (N, 6) = xyxy, conf, cls."""

    def __init__(self, data: torch.Tensor, orig_shape: tuple[int, int]) -> None:
        self.data = data
        self.orig_shape = orig_shape

    @classmethod
    def from_segments(cls, segments: Segments, device: torch.device | str = "cpu") -> Boxes:
        n = len(segments)
        data = np.zeros((n, 6), dtype=np.float32)
        data[:, :4] = segments.boxes
        data[:, 4] = segments.scores
        return cls(torch.from_numpy(data).to(device), segments.image_size)

    @property
    def xyxy(self) -> torch.Tensor:
        """(N, 4) float32 boxes, x1 y1 x2 y2 in original pixels."""
        return self.data[:, :4]

    @property
    def conf(self) -> torch.Tensor:
        """(N,) float32 detection scores."""
        return self.data[:, 4]

    @property
    def cls(self) -> torch.Tensor:
        """(N,) float32 class ids (always 0: FastSAM has one class)."""
        return self.data[:, 5]

    @property
    def id(self) -> None:
        """Track ids: none (these are single-image results)."""
        return None

    @property
    def is_track(self) -> bool:
        return False

    @property
    def xywh(self) -> torch.Tensor:
        """(N, 4) float32 boxes, centre x, centre y, width, height."""
        b = self.xyxy
        return torch.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1)

    def _scale(self) -> torch.Tensor:
        h, w = self.orig_shape
        return torch.tensor([w, h, w, h], dtype=self.data.dtype, device=self.data.device)

    @property
    def xyxyn(self) -> torch.Tensor:
        """``xyxy`` divided by the image width and height."""
        return self.xyxy / self._scale()

    @property
    def xywhn(self) -> torch.Tensor:
        """``xywh`` divided by the image width and height."""
        return self.xywh / self._scale()

    @property
    def shape(self) -> torch.Size:
        return self.data.shape

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: Any) -> Boxes:
        return Boxes(self.data[_rows(index)].reshape(-1, 6), self.orig_shape)

    def cpu(self) -> Boxes:
        return Boxes(self.data.cpu(), self.orig_shape)

    def to(self, *args: Any, **kwargs: Any) -> Boxes:
        return Boxes(self.data.to(*args, **kwargs), self.orig_shape)

    def numpy(self) -> np.ndarray:
        """``data`` as a (N, 6) float32 numpy array."""
        return self.data.cpu().numpy()


class Masks:
    """Masks of one image, ultralytics' ``Masks`` layout; ``data`` is built from the crops on first use."""

    def __init__(self, segments: Segments, device: torch.device | str = "cpu") -> None:
        self.segments = segments
        self.orig_shape = segments.image_size
        self.device = torch.device(device)

    @cached_property
    def data(self) -> torch.Tensor:
        """(N, H, W) torch.uint8 0/1 masks at the original resolution."""
        # a copy: writing into ``data`` (some downstream code does) must not change the cached Segments
        return torch.from_numpy(self.segments.masks.astype(np.uint8)).to(self.device)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.segments), *self.orig_shape))

    @cached_property
    def xy(self) -> list[np.ndarray]:
        """Per mask, a (K, 2) float32 array of outline points (x, y) in pixels; (0, 2) if empty."""
        out = []
        for pieces in self.segments.to_polygons():
            out.append(np.concatenate(pieces).astype(np.float32) if pieces else np.zeros((0, 2), np.float32))
        return out

    @property
    def xyn(self) -> list[np.ndarray]:
        """``xy`` divided by the image width and height."""
        h, w = self.orig_shape
        return [p / np.array([w, h], dtype=np.float32) for p in self.xy]

    def __len__(self) -> int:
        return len(self.segments)

    def __getitem__(self, index: Any) -> Masks:
        return Masks(self.segments[_rows(index)], self.device)

    def cpu(self) -> Masks:
        return Masks(self.segments, "cpu")

    def to(self, device: torch.device | str) -> Masks:
        return Masks(self.segments, device)

    def numpy(self) -> np.ndarray:
        """(N, H, W) uint8 0/1 masks."""
        return self.segments.masks.astype(np.uint8)


class Results:
    """One image's result with the attribute names of ultralytics' ``Results``.

    Args:
        segments: the everything-mode (or prompt-selected) masks of the image.
        orig_img: the image, (H, W, 3) uint8 BGR (ultralytics' convention; fastsam's own API is RGB).
        path: the image's file name, or "" for arrays.
        device: where ``masks.data`` and ``boxes.data`` live (the model's device).
        speed: milliseconds per stage, as ultralytics reports them.
    """

    def __init__(
        self,
        segments: Segments,
        orig_img: np.ndarray,
        path: str = "",
        device: torch.device | str = "cpu",
        speed: dict[str, float | None] | None = None,
    ) -> None:
        if tuple(orig_img.shape[:2]) != tuple(segments.image_size):
            raise ValueError(f"image size {orig_img.shape[:2]} differs from the masks' {segments.image_size}")
        self.segments = segments
        self.orig_img = orig_img
        self.orig_shape = segments.image_size
        self.path = path
        self.names = dict(NAMES)
        self.device = torch.device(device)
        self.speed: dict[str, float | None] = dict(
            speed or {"preprocess": None, "inference": None, "postprocess": None}
        )
        self.boxes = Boxes.from_segments(segments, self.device)
        self.masks: Masks | None = Masks(segments, self.device) if len(segments) else None
        self.probs = self.keypoints = self.obb = None  # the other tasks' outputs: none for FastSAM

    @classmethod
    def from_rgb(cls, segments: Segments, image_rgb: np.ndarray, **kwargs: Any) -> Results:
        """Results of ``segments`` on an (H, W, 3) uint8 RGB image (fastsam's convention)."""
        return cls(segments, np.ascontiguousarray(image_rgb[..., ::-1]), **kwargs)

    def __len__(self) -> int:
        return len(self.segments)

    def __getitem__(self, index: Any) -> Results:
        """The detections ``index`` selects (int, slice, list or boolean mask), as a Results."""
        return Results(self.segments[_rows(index)], self.orig_img, self.path, self.device, self.speed)

    def __repr__(self) -> str:
        return f"Results({self.path or 'image'}: {len(self)} masks, {self.orig_shape[1]}x{self.orig_shape[0]})"

    def cpu(self) -> Results:
        return self.to("cpu")

    def to(self, device: torch.device | str) -> Results:
        return Results(self.segments, self.orig_img, self.path, device, self.speed)

    def numpy(self) -> Results:
        return self.cpu()

    def plot(
        self,
        boxes: bool = True,
        masks: bool = True,
        contours: bool = True,
        img: np.ndarray | None = None,
        seed: int = 0,
    ) -> np.ndarray:
        """The image with masks (and boxes) drawn over it: (H, W, 3) uint8 BGR, as ultralytics' ``plot()``.

        ``img`` (BGR, same size) draws on another image instead of ``orig_img``.
        """
        base = self.orig_img if img is None else np.asarray(img)
        rgb = np.ascontiguousarray(base[..., ::-1])
        if masks and len(self):
            rgb = overlay(rgb, self.segments, contours=contours, seed=seed)
        if boxes and len(self):
            rgb = draw_prompts(rgb, boxes=self.segments.boxes.tolist())
        return np.ascontiguousarray(rgb[..., ::-1])

    def summary(self, normalize: bool = False, decimals: int = 5) -> list[dict[str, Any]]:
        """One dict per detection: name, class, confidence, box (and the mask outline as segments)."""
        h, w = self.orig_shape
        sx, sy = (1.0 / w, 1.0 / h) if normalize else (1.0, 1.0)
        polys = self.masks.xy if self.masks is not None else []
        out = []
        for i, (box, score) in enumerate(zip(self.segments.boxes.tolist(), self.segments.scores.tolist())):
            x1, y1, x2, y2 = box
            row: dict[str, Any] = {
                "name": self.names[0],
                "class": 0,
                "confidence": round(score, decimals),
                "box": {
                    k: round(v, decimals)
                    for k, v in zip(("x1", "y1", "x2", "y2"), (x1 * sx, y1 * sy, x2 * sx, y2 * sy))
                },
            }
            if polys:
                row["segments"] = {
                    "x": [round(float(v) * sx, decimals) for v in polys[i][:, 0]],
                    "y": [round(float(v) * sy, decimals) for v in polys[i][:, 1]],
                }
            out.append(row)
        return out


def _rows(index: Any) -> Any:
    """An index over detections in a form both numpy and torch accept (tensors become arrays)."""
    if isinstance(index, torch.Tensor):
        index = index.cpu().numpy()
    if isinstance(index, (int, np.integer)):
        return [int(index)]
    if isinstance(index, (Sequence, np.ndarray)) and not isinstance(index, str):
        arr = np.asarray(index)
        return arr.astype(np.int64) if arr.size == 0 else arr
    return index
