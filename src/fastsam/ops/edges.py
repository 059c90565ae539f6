"""Edge maps from soft masks: Sobel magnitude of each mask's probability map, max over masks, then
edge NMS (thinning along the gradient normal).

This is the zero-shot edge recipe of the FastSAM paper (§4.2, after SAM's): "Sobel filtering of
unthresholded mask probability maps" and "edge NMS". The NMS is the one of Dollár and Zitnick's
Structured Edge toolbox that HED and SAM's post-processing use: the orientation comes from second
derivatives of the triangle-smoothed edge map, a pixel is kept when it is at least as strong (times
1.01) as its two bilinear neighbours at distance 1 along the normal, and responses within 5 pixels
of the image border fade linearly. Written from that description with numpy; no code is shared.

All maps are (H, W) float32 in image rows x columns; edge values lie in [0, 1].
"""

from __future__ import annotations

import numpy as np

__all__ = ["conv_tri", "edge_nms", "edge_orientation", "max_sobel", "sobel_magnitude"]

#: A unit step in a probability map gives a Sobel x or y response of 4 (weights 1, 2, 1 times a
#: difference of 1); dividing by it maps a sharp 0 -> 1 mask border to an edge strength of 1.
SOBEL_STEP = 4.0


def sobel_magnitude(prob: np.ndarray) -> np.ndarray:
    """Gradient magnitude of a (h, w) map by the 3x3 Sobel operator, divided by :data:`SOBEL_STEP`.

    The map is extended by replicating its border pixels (so the frame itself is no edge)."""
    p = np.pad(np.asarray(prob, dtype=np.float32), 1, mode="edge")
    smooth_rows = p[:-2] + 2 * p[1:-1] + p[2:]  # (h, w + 2): vertical smoothing
    smooth_cols = p[:, :-2] + 2 * p[:, 1:-1] + p[:, 2:]  # (h + 2, w)
    gx = smooth_rows[:, 2:] - smooth_rows[:, :-2]
    gy = smooth_cols[2:] - smooth_cols[:-2]
    return (np.hypot(gx, gy) / SOBEL_STEP).astype(np.float32)


def max_sobel(image_size: tuple[int, int], regions: np.ndarray, probs: list[np.ndarray] | tuple) -> np.ndarray:
    """Max over masks of the Sobel magnitude of each probability map (0 outside its box).

    Args:
        image_size: (H, W). regions: (N, 4) r0, r1, c0, c1 of each crop. probs: N float crops.

    Each crop is evaluated with one pixel of its surroundings: 0 inside the image (the mask is 0
    outside its box), replicated at the image border. Returns (H, W) float32 in [0, 1].
    """
    h, w = image_size
    out = np.zeros((h, w), dtype=np.float32)
    for (r0, r1, c0, c1), prob in zip(np.asarray(regions).reshape(-1, 4).tolist(), probs):
        if r1 <= r0 or c1 <= c0:
            continue
        # window: the crop plus a ring of one pixel, where it lies inside the image
        a, b, c, d = max(r0 - 1, 0), min(r1 + 1, h), max(c0 - 1, 0), min(c1 + 1, w)
        win = np.zeros((b - a, d - c), dtype=np.float32)
        win[r0 - a : r0 - a + (r1 - r0), c0 - c : c0 - c + (c1 - c0)] = prob
        mag = sobel_magnitude(win)
        np.maximum(out[a:b, c:d], mag, out=out[a:b, c:d])
    return np.minimum(out, 1.0, out=out)


def conv_tri(image: np.ndarray, r: int) -> np.ndarray:
    """Separable triangle filter of radius ``r`` (weights 1..r+1..1 over (r+1)²), symmetric padding."""
    x = np.asarray(image, dtype=np.float32)
    if r <= 0:
        return x.copy()
    f = np.concatenate([np.arange(1, r + 2), np.arange(r, 0, -1)]).astype(np.float32) / np.float32((r + 1) ** 2)
    for axis in (0, 1):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (r, r)
        xp = np.pad(x, pad, mode="symmetric")
        n = x.shape[axis]
        acc = np.zeros_like(x)
        for i, wgt in enumerate(f):
            acc += wgt * (xp[i : i + n] if axis == 0 else xp[:, i : i + n])
        x = acc
    return x


def edge_orientation(edges: np.ndarray) -> np.ndarray:
    """Normal orientation in [0, pi) of each pixel of an edge map (radians; 0 = along +columns).

    From second derivatives of the map smoothed by :func:`conv_tri` (radius 4):
    ``atan(Oyy * sign(-Oxy) / (Oxx + 1e-5)) mod pi``, x = columns, y = rows, central differences."""
    s = conv_tri(edges, 4)
    ox, oy = np.gradient(s, axis=1), np.gradient(s, axis=0)
    oxx = np.gradient(ox, axis=1)
    oxy, oyy = np.gradient(oy, axis=1), np.gradient(oy, axis=0)
    return np.mod(np.arctan(oyy * np.sign(-oxy) / (oxx + 1e-5)), np.pi).astype(np.float32)


def _bilinear(image: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Values of ``image`` at fractional (rows, cols), coordinates clamped inside the image."""
    h, w = image.shape
    y = np.clip(rows, 0, h - 1.001)
    x = np.clip(cols, 0, w - 1.001)
    y0, x0 = y.astype(np.int64), x.astype(np.int64)
    dy, dx = y - y0, x - x0
    return (
        image[y0, x0] * (1 - dy) * (1 - dx)
        + image[y0 + 1, x0] * dy * (1 - dx)
        + image[y0, x0 + 1] * (1 - dy) * dx
        + image[y0 + 1, x0 + 1] * dy * dx
    )


def edge_nms(
    edges: np.ndarray, orientation: np.ndarray, radius: int = 1, border: int = 5, margin: float = 1.01
) -> np.ndarray:
    """Non-maximum suppression of an edge map along the normal ``orientation`` (see the module
    docstring): keep a pixel whose value times ``margin`` is not below its bilinear neighbours at
    distances 1..``radius`` on both sides; fade the ``border`` pixels next to the frame. (H, W) float32."""
    e = np.asarray(edges, dtype=np.float32)
    h, w = e.shape
    ys, xs = np.nonzero(e)
    keep = np.ones(ys.size, dtype=bool)
    cos, sin = np.cos(orientation[ys, xs]), np.sin(orientation[ys, xs])
    strength = e[ys, xs] * margin
    for d in range(-radius, radius + 1):
        if d:
            keep &= strength >= _bilinear(e, ys + d * sin, xs + d * cos)
    out = np.zeros_like(e)
    out[ys[keep], xs[keep]] = e[ys[keep], xs[keep]]
    s = min(border, w // 2, h // 2)
    for i in range(s):  # noisy estimates near the frame fade out linearly
        out[:, i] *= i / s
        out[:, w - 1 - i] *= i / s
        out[i, :] *= i / s
        out[h - 1 - i, :] *= i / s
    return out
