"""Deterministic synthetic scenes for training a small demo segmentation model, in the SA-1B layout.

Frames: images are (H, W, 3) uint8 RGB arrays; a point is (x, y) in pixels with x = column and
y = row, pixel (x, y) is ``image[y, x]``. Boxes
are COCO ``[x, y, w, h]`` in pixel counts. Masks are drawn without anti-aliasing, so every mask is
the exact binary set of pixels an object paints; annotations hold the VISIBLE part after occlusion
by the objects drawn in front of it (objects are drawn back to front).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..formats import mask_bbox_xywh, rle_encode
from ..io.atomic import write_atomic

__all__ = ["MIN_AREA", "PALETTE", "SHAPES", "render_scene", "write_dataset"]

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (40, 170, 50),
    "blue": (30, 60, 210),
    "yellow": (240, 220, 40),
    "orange": (245, 140, 20),
    "purple": (130, 50, 170),
    "pink": (245, 150, 190),
    "cyan": (40, 210, 220),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
    "brown": (120, 75, 35),
    "gray": (128, 128, 128),
}
SHAPES: tuple[str, ...] = ("polygon", "ellipse", "ring", "star", "blob", "bar")
MIN_AREA = 20  # objects whose visible area is below this many pixels are dropped


@dataclass
class _Shape:
    """One object: ``kind`` in SHAPES, centre (cx, cy) = (column, row) in pixels, radius ``r`` (half
    its extent) in pixels, rotation ``angle`` in radians; ``params`` holds kind-specific values."""

    kind: str
    color: str
    cx: float
    cy: float
    r: float
    angle: float = 0.0
    params: dict = field(default_factory=dict)


def _random_shape(rng: np.random.Generator, size: tuple[int, int], inside: bool = False) -> _Shape:
    """A random object; radius log-uniform in [5, min(H, W) / 4] px (extent ~10 px to half the image)."""
    h, w = size
    r_max = max(6.0, min(h, w) / 4)
    # inside: a whole, mid-sized object (used to top up scenes that lost too much to occlusion)
    r = float(rng.uniform(10, max(11, r_max / 2))) if inside else float(np.exp(rng.uniform(np.log(5.0), np.log(r_max))))
    m = r if inside else 0.0
    cx, cy = float(rng.uniform(m, max(m + 1, w - m))), float(rng.uniform(m, max(m + 1, h - m)))
    kind = SHAPES[int(rng.integers(len(SHAPES)))]
    color = list(PALETTE)[int(rng.integers(len(PALETTE)))]
    p: dict = {}
    if kind == "polygon":
        n = int(rng.integers(3, 7))
        p["n"] = n
        p["jitter"] = rng.uniform(-0.2, 0.2, n) * np.pi / n
        p["radii"] = rng.uniform(0.8, 1.0, n)
    elif kind in ("ellipse", "ring"):
        p["aspect"] = 1.0 if rng.random() < 0.3 else float(rng.uniform(0.4, 1.0))
        if kind == "ring":
            p["aspect"] = max(p["aspect"], 0.7)
            p["inner"] = float(rng.uniform(0.45, 0.75))
    elif kind == "star":
        p["k"] = int(rng.integers(5, 9))
        p["inner"] = float(rng.uniform(0.35, 0.6))
    elif kind == "blob":
        amp = rng.uniform(0.0, 0.15, 3)
        p["amp"], p["phase"] = amp, rng.uniform(0, 2 * np.pi, 3)
    else:  # bar: rotated rectangle 2r long, 3..8 px wide
        p["width"] = int(rng.integers(3, 9))
    p["texture"] = ("plain", "stripes", "noise")[int(rng.choice(3, p=[0.6, 0.25, 0.15]))]
    p["jitter_rgb"] = rng.integers(-15, 16, 3)
    p["period"] = float(rng.uniform(4, 12))
    return _Shape(kind, color, cx, cy, r, float(rng.uniform(0, 2 * np.pi)), p)


def _shape_mask(s: _Shape, size: tuple[int, int]) -> np.ndarray:
    """Full (H, W) bool mask of every pixel the object covers (no anti-aliasing; clipped to the image)."""
    out = np.zeros(size, np.uint8)
    c, p = (s.cx, s.cy), s.params

    def poly(angles: np.ndarray, radii: np.ndarray) -> None:
        pts = np.stack([s.cx + radii * np.cos(angles), s.cy + radii * np.sin(angles)], 1)
        cv2.fillPoly(out, [np.round(pts).astype(np.int32)], 1, lineType=cv2.LINE_8)

    if s.kind == "polygon":
        n = p["n"]
        poly(s.angle + 2 * np.pi * np.arange(n) / n + p["jitter"], s.r * p["radii"])
    elif s.kind in ("ellipse", "ring"):
        centre = (round(c[0]), round(c[1]))
        axes = (max(1, round(s.r)), max(1, round(s.r * p["aspect"])))
        cv2.ellipse(out, centre, axes, np.degrees(s.angle), 0, 360, 1, -1, lineType=cv2.LINE_8)
        if s.kind == "ring":
            inner = (max(1, round(axes[0] * p["inner"])), max(1, round(axes[1] * p["inner"])))
            cv2.ellipse(out, centre, inner, np.degrees(s.angle), 0, 360, 0, -1, lineType=cv2.LINE_8)
    elif s.kind == "star":
        k = p["k"]
        poly(s.angle + np.pi * np.arange(2 * k) / k, s.r * np.where(np.arange(2 * k) % 2, p["inner"], 1.0))
    elif s.kind == "blob":
        phi = np.linspace(0, 2 * np.pi, 72, endpoint=False)
        wobble = sum(a * np.cos((j + 2) * phi + ph) for j, (a, ph) in enumerate(zip(p["amp"], p["phase"])))
        poly(phi + s.angle, s.r * (1 + wobble) / (1 + p["amp"].sum()))
    else:
        box = cv2.boxPoints(((s.cx, s.cy), (2 * s.r, float(p["width"])), float(np.degrees(s.angle))))
        cv2.fillPoly(out, [np.round(box).astype(np.int32)], 1, lineType=cv2.LINE_8)
    return out.astype(bool)


def _visible(masks: list[np.ndarray]) -> list[np.ndarray]:
    """Visible part of each mask when drawn back to front (later masks occlude earlier ones)."""
    owner = np.full(masks[0].shape if masks else (0, 0), -1, np.int32)
    for i, m in enumerate(masks):
        owner[m] = i
    return [owner == i for i in range(len(masks))]


def _annotations(shapes: list[_Shape], size: tuple[int, int]) -> tuple[list[dict], list[np.ndarray]]:
    """COCO-style annotations (visible parts, ids 1.. back to front) of the objects kept (area >= MIN_AREA),
    and the full masks of all ``shapes`` in order (for painting)."""
    h, w = size
    full = [_shape_mask(s, size) for s in shapes]
    anns: list[dict] = []
    for s, vis in zip(shapes, _visible(full)):
        area = int(vis.sum())
        if area < MIN_AREA:
            continue
        x, y, bw, bh = mask_bbox_xywh(vis, (0, h, 0, w))
        crop = vis[y : y + bh, x : x + bw]
        rle = rle_encode([crop], [(y, y + bh, x, x + bw)], (h, w))[0]
        anns.append(
            {
                "id": len(anns) + 1,
                "segmentation": {"size": [h, w], "counts": rle},
                "bbox": [x, y, bw, bh],
                "area": area,
                "caption": f"a {s.color} {s.kind}",
                "shape": s.kind,
                "color": s.color,
            }
        )
    return anns, full


def _background(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """Float (H, W, 3) background: colour gradient + low-frequency noise + optional stripes/checker."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a = float(rng.uniform(0, 2 * np.pi))
    t = (xx * np.cos(a) + yy * np.sin(a)) / max(h, w)
    t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
    c0, c1 = rng.uniform(40, 215, 3), rng.uniform(40, 215, 3)
    img = c0 + t[..., None] * (c1 - c0)
    low = rng.normal(0, 18, (int(rng.integers(3, 8)), int(rng.integers(3, 8)), 3)).astype(np.float32)
    img = img + cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC)
    tex = int(rng.integers(3))
    if tex == 1:
        b = float(rng.uniform(0, np.pi))
        amp, period = rng.uniform(8, 20), rng.uniform(6, 30)
        img += amp * np.sign(np.sin(2 * np.pi * (xx * np.cos(b) + yy * np.sin(b)) / period))[..., None]
    elif tex == 2:
        cell = int(rng.integers(8, 40))
        img += rng.uniform(8, 20) * (((xx // cell + yy // cell) % 2) * 2 - 1)[..., None]
    return img


def _paint(img: np.ndarray, s: _Shape, mask: np.ndarray, rng: np.random.Generator) -> None:
    """Paint one object's colour (with its jitter and optional texture) over ``mask`` of ``img`` in place."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return
    rgb = np.asarray(PALETTE[s.color], np.float32) + s.params["jitter_rgb"]
    shade = np.ones(ys.size, np.float32)
    if s.params["texture"] == "stripes":
        proj = xs * np.cos(s.angle) + ys * np.sin(s.angle)
        shade += 0.12 * np.sign(np.sin(2 * np.pi * proj / s.params["period"]))
    elif s.params["texture"] == "noise":
        shade += rng.normal(0, 0.06, ys.size).astype(np.float32)
    img[ys, xs] = rgb[None, :] * shade[:, None]


def render_scene(rng: np.random.Generator, size: tuple[int, int] = (480, 640)) -> tuple[np.ndarray, list[dict]]:
    """A random scene of ``size`` = (H, W): (H, W, 3) uint8 RGB image and 3..40 annotations (visible
    parts after occlusion, back to front) with COCO RLE ``segmentation``, ``bbox`` [x, y, w, h],
    ``area``, ``caption`` ("a red star"), ``shape`` and ``color``. Uses only ``rng``: deterministic."""
    _h, _w = size
    img = _background(rng, size)
    n = int(rng.integers(3, 41))
    shapes = [_random_shape(rng, size) for _ in range(n)]
    order = np.argsort(-np.array([s.r for s in shapes]) * rng.lognormal(0, 0.5, n), kind="stable")
    shapes = [shapes[i] for i in order]  # mostly large behind small
    anns, full = _annotations(shapes, size)
    while len(anns) < 3:  # too much lost to occlusion/borders: add whole objects on top
        shapes.append(_random_shape(rng, size, inside=True))
        anns, full = _annotations(shapes, size)
    for s, m in zip(shapes, full):
        _paint(img, s, m, rng)
    img = img + rng.normal(0, rng.uniform(1.5, 5.0), img.shape)
    img = cv2.GaussianBlur(np.clip(img, 0, 255).astype(np.float32), (3, 3), float(rng.uniform(0.3, 0.8)))
    return np.clip(np.round(img), 0, 255).astype(np.uint8), anns


def write_dataset(out_dir: str | os.PathLike, n: int, seed: int, size: tuple[int, int] = (480, 640)) -> list[Path]:
    """Write ``n`` scenes as ``sa_000001.jpg`` (JPEG quality 95) + ``sa_000001.json`` (SA-1B per-image
    layout: ``{"image": {...}, "annotations": [...]}``); image i (1-based) comes from
    ``np.random.default_rng([seed, i])``, so each is reproducible alone. Returns the image paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    h, w = size
    paths: list[Path] = []
    for i in range(1, n + 1):
        rgb, anns = render_scene(np.random.default_rng([seed, i]), size)
        name = f"sa_{i:06d}"
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
        if not ok:  # pragma: no cover
            raise OSError(f"JPEG encoding failed for {name}")
        write_atomic(out / f"{name}.jpg", buf.tobytes())
        meta = {"image": {"image_id": i, "file_name": f"{name}.jpg", "width": w, "height": h}, "annotations": anns}
        write_atomic(out / f"{name}.json", json.dumps(meta).encode())
        paths.append(out / f"{name}.jpg")
    return paths
