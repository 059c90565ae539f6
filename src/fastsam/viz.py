"""Overlays at original resolution, without matplotlib."""

from __future__ import annotations

import numpy as np

from .results import Segments

__all__ = ["mask_colors", "overlay"]

ALPHA = 0.6  # mask opacity, as the original
CONTOUR_COLOR = (0, 0, 255)  # RGB; the original draws contours in blue at 0.8 opacity
CONTOUR_ALPHA = 0.8


def mask_colors(n: int, seed: int = 0) -> np.ndarray:
    """(n, 3) uint8 random colours, the same for the same ``seed``."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 3), dtype=np.uint8)


def overlay(image: np.ndarray, segments: Segments, contours: bool = True, color: tuple[int, int, int] | None = None,
            seed: int = 0) -> np.ndarray:  # fmt: skip
    """Draw masks over an (H, W, 3) uint8 RGB image; returns a new RGB image.

    Where masks overlap the smallest one is shown (as in the original's plot). ``color`` gives all
    masks one colour; otherwise each mask gets a random colour from ``seed``.
    """
    import cv2

    if image.shape[:2] != tuple(segments.image_size):
        raise ValueError(f"image size {image.shape[:2]} differs from the segments' {segments.image_size}")
    out = image.astype(np.float32)
    if len(segments):
        labels = segments.label_map()
        colors = np.zeros((len(segments) + 1, 3), dtype=np.float32)
        colors[1:] = np.asarray(color, dtype=np.float32) if color is not None else mask_colors(len(segments), seed)
        covered = labels > 0
        out[covered] = out[covered] * (1 - ALPHA) + colors[labels[covered]] * ALPHA
    if contours and len(segments):
        edge = np.zeros(segments.image_size, dtype=np.uint8)
        for crop, (r0, r1, c0, c1) in zip(segments.crops, segments.regions):
            if crop.size == 0 or not crop.any():
                continue
            found, _ = cv2.findContours(crop.astype(np.uint8), cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(edge, found, -1, 1, thickness=2, offset=(int(c0), int(r0)))
        on = edge > 0
        out[on] = out[on] * (1 - CONTOUR_ALPHA) + np.asarray(CONTOUR_COLOR, np.float32) * CONTOUR_ALPHA
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
