"""Mask encodings computed from compact crops: COCO RLE, polygons, mask boxes.

A mask is given as a boolean ``crop`` placed at ``region`` = (r0, r1, c0, c1) of an (H, W) image;
everything outside the region is background. Nothing here builds the full (H, W) mask unless asked.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "crop_polygons",
    "mask_bbox_xywh",
    "paste",
    "rle_counts",
    "rle_counts_from_string",
    "rle_decode",
    "rle_encode",
    "rle_string",
]


def paste(crop: np.ndarray, region: np.ndarray | tuple[int, int, int, int], size: tuple[int, int]) -> np.ndarray:
    """Full (H, W) bool mask from a crop."""
    out = np.zeros(size, dtype=bool)
    r0, r1, c0, c1 = (int(v) for v in region)
    if crop.size:
        out[r0:r1, c0:c1] = crop
    return out


def rle_counts(crop: np.ndarray, region: np.ndarray | tuple[int, int, int, int], size: tuple[int, int]) -> list[int]:
    """Uncompressed COCO RLE counts (column-major runs, starting with background) of a cropped mask."""
    h, w = size
    r0, r1, c0, c1 = (int(v) for v in region)
    if crop.size == 0 or not crop.any():
        return [h * w]
    # Column-major pixels of the columns c0..c1 only; columns outside are all background.
    cols = np.zeros((c1 - c0, h), dtype=bool)
    cols[:, r0:r1] = crop.T
    flat = cols.ravel()
    base = c0 * h
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1 + base
    edges = [0]
    if flat[0]:
        edges.append(base)
    edges.extend(changes.tolist())
    if flat[-1] and base + flat.size < h * w:  # a run reaching the last pixel ends at h * w anyway
        edges.append(base + flat.size)
    edges.append(h * w)
    return np.diff(np.asarray(edges, dtype=np.int64)).tolist()


def rle_encode(crops: list[np.ndarray], regions: np.ndarray | list, size: tuple[int, int]) -> list[str]:
    """COCO compressed RLE strings of cropped masks in an (H, W) image, one per crop.

    The compiled kernel when it is built (one pass over each crop), else numpy; same strings.
    """
    from .ops import _native

    fast = _native.rle_strings(crops, regions, size)
    if fast is not None:
        return fast
    return [rle_string(rle_counts(c, r, size)) for c, r in zip(crops, np.asarray(regions).reshape(-1, 4))]


def rle_string(counts: list[int]) -> str:
    """COCO's compressed RLE string: each count (after the second, as a difference to the count two
    places earlier) written in 5-bit groups, low first, 0x20 marking continuation, offset by 48."""
    x = np.asarray(counts, dtype=np.int64)
    if x.size == 0:
        return ""
    if x.size > 3:
        x = x.copy()
        x[3:] -= np.asarray(counts[1:-2], dtype=np.int64)
    chars = np.zeros((x.size, 13), dtype=np.uint8)  # 13 groups of 5 bits cover any int64
    length = np.zeros(x.size, dtype=np.int64)
    active = np.ones(x.size, dtype=bool)
    for k in range(13):
        c = x & 0x1F
        x = x >> 5  # arithmetic shift: negative differences end at -1
        more = np.where(c & 0x10, x != -1, x != 0)
        chars[active, k] = (c[active] | np.where(more[active], 0x20, 0)) + 48
        length[active] += 1
        active &= more
        if not active.any():
            break
    return chars[np.arange(13)[None, :] < length[:, None]].tobytes().decode("ascii")


def rle_counts_from_string(s: str) -> list[int]:
    """Counts of a COCO compressed RLE string (inverse of :func:`rle_string`)."""
    counts: list[int] = []
    p = 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def rle_decode(rle: dict) -> np.ndarray:
    """(H, W) bool mask from ``{"size": [H, W], "counts": str | list[int]}``."""
    h, w = rle["size"]
    counts = rle["counts"]
    if isinstance(counts, (bytes, str)):
        counts = rle_counts_from_string(counts.decode() if isinstance(counts, bytes) else counts)
    flat = np.zeros(h * w, dtype=bool)
    pos, val = 0, False
    for n in counts:
        if val:
            flat[pos : pos + n] = True
        pos += n
        val = not val
    return flat.reshape(w, h).T


def mask_bbox_xywh(crop: np.ndarray, region: np.ndarray | tuple[int, int, int, int]) -> list[int]:
    """Tight box of the mask pixels, COCO convention: [x, y, width, height] in pixel counts."""
    if crop.size == 0:
        return [0, 0, 0, 0]
    rows = np.flatnonzero(crop.any(1))
    if rows.size == 0:
        return [0, 0, 0, 0]
    cols = np.flatnonzero(crop.any(0))
    r0, c0 = int(region[0]), int(region[2])
    return [c0 + int(cols[0]), r0 + int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]


def crop_polygons(crop: np.ndarray, region: np.ndarray | tuple[int, int, int, int]) -> list[np.ndarray]:
    """Outer contours of a mask as (K, 2) float32 arrays of (x, y) pixel coordinates in the image."""
    import cv2

    if crop.size == 0 or not crop.any():
        return []
    contours, _ = cv2.findContours(crop.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    offset = np.array([int(region[2]), int(region[0])], dtype=np.float32)
    return [c.reshape(-1, 2).astype(np.float32) + offset for c in contours]
