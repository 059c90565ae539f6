"""Test clips: moving synthetic shapes (of the kinds the demo model was trained on) with known masks
and identities per frame, written with PyAV."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

H, W = 240, 320
BACKGROUND = (90, 110, 100)


@dataclass(frozen=True)
class _Mover:
    """An object: colour, polygon sides (0 = ellipse), centre at frame 0 (x, y), velocity (px/frame),
    radius, and the frames [hide_from, hide_to) in which it is not drawn."""

    color: tuple[int, int, int]
    sides: int
    x: float
    y: float
    vx: float
    vy: float
    r: int
    hide_from: int = -1
    hide_to: int = -1


MOVERS = (
    _Mover((220, 30, 30), 0, 40, 60, 4.0, 0.5, 26),  # red ellipse, left to right along the top
    _Mover((30, 60, 210), 4, 280, 180, -4.0, 0.0, 28),  # blue square, right to left along the bottom
    _Mover((240, 220, 40), 6, 250, 50, -1.0, 2.0, 24),  # yellow hexagon, down the right side
    _Mover((40, 170, 50), 0, 60, 170, 1.0, -0.5, 22, hide_from=14, hide_to=18),  # green disc, hidden a while
)


def _mask(m: _Mover, t: int) -> np.ndarray:
    out = np.zeros((H, W), np.uint8)
    cx, cy = m.x + m.vx * t, m.y + m.vy * t
    if m.sides == 0:
        cv2.ellipse(out, (round(cx), round(cy)), (m.r, round(m.r * 0.75)), 0, 0, 360, 1, -1)
    else:
        a = np.arange(m.sides) * 2 * np.pi / m.sides + 0.3 + 0.03 * t
        pts = np.stack([cx + m.r * np.cos(a), cy + m.r * np.sin(a)], 1)
        cv2.fillPoly(out, [np.round(pts).astype(np.int32)], 1)
    return out.astype(bool)


def scene(t: int) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Frame ``t``: (H, W, 3) uint8 RGB and {identity: (H, W) bool mask} of the objects drawn."""
    img = np.full((H, W, 3), BACKGROUND, np.uint8)
    masks = {}
    for ident, m in enumerate(MOVERS):
        if m.hide_from <= t < m.hide_to:
            continue
        mask = _mask(m, t)
        img[mask] = m.color
        masks[ident] = mask
    return img, masks


def write_clip(path: Path, frames: int = 32, fps: int = 8, faststart: bool = False) -> list[dict[int, np.ndarray]]:
    """Write ``frames`` frames at ``fps`` to ``path`` (mp4/mpeg4, high quality); return the masks."""
    import av

    truth = []
    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", format="mp4" if path.suffix == ".mp4" else None, options=options) as box:
        stream = box.add_stream("mpeg4", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.bit_rate = 4_000_000
        for t in range(frames):
            img, masks = scene(t)
            truth.append(masks)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = t
            for packet in stream.encode(frame):
                box.mux(packet)
        for packet in stream.encode():
            box.mux(packet)
    return truth
