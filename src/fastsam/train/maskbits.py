"""Bit-packed instance masks for augmentation: (C, H, W) uint8 planes, instance k is bit (k % 8) of
plane k // 8, so that resizing and warping K masks costs ceil(K / 8) OpenCV calls, not K."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

__all__ = ["is_affine", "pack_masks", "resize_bits", "unpack_masks", "warp_bits"]


def pack_masks(masks: np.ndarray, boxes: np.ndarray | None = None) -> np.ndarray:
    """(K, H, W) bool -> (ceil(K / 8), H, W) uint8 bit planes (instance k = bit k % 8 of plane k // 8).

    ``boxes`` ((K, 4) xyxy, exclusive ends, e.g. ``Sample.boxes``), when given, must contain every
    set pixel of its mask; only those windows are read, which makes packing cost scale with the
    objects' size instead of K * H * W.
    """
    k, h, w = masks.shape
    planes = np.zeros(((k + 7) // 8, h, w), np.uint8)
    u8 = masks.view(np.uint8)
    for i in range(k):
        if boxes is None:
            planes[i >> 3] |= u8[i] << (i & 7)
            continue
        x1, y1, x2, y2 = (int(v) for v in boxes[i])
        if x2 > x1 and y2 > y1:
            planes[i >> 3, y1:y2, x1:x2] |= u8[i, y1:y2, x1:x2] << (i & 7)
    return planes


def unpack_masks(bits: np.ndarray, k: int) -> np.ndarray:
    """(C, H, W) uint8 bit planes -> (k, H, W) bool (inverse of :func:`pack_masks`)."""
    out = np.empty((k, *bits.shape[1:]), np.uint8)
    for i in range(k):
        np.right_shift(bits[i >> 3], i & 7, out=out[i])
    np.bitwise_and(out, 1, out=out)
    return out.view(bool)


def per_plane(fn: Any, bits: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Apply an OpenCV resampler ``fn((H, W) uint8) -> (h, w) uint8`` to each plane of (C, H, W).

    One call per plane measured as fast as one multi-channel call on (H, W, C), which would need
    two transposes (OpenCV also caps channels at 128)."""
    out = np.empty((bits.shape[0], *out_hw), np.uint8)
    for c, plane in enumerate(bits):
        out[c] = fn(plane)  # OpenCV takes row-strided views (mosaic crops) without a copy
    return out


def resize_bits(bits: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of bit planes (centre-aligned, same grid as the bilinear image resize)."""
    if bits.shape[1:] == out_hw:
        return bits
    size = (out_hw[1], out_hw[0])
    return per_plane(lambda a: cv2.resize(a, size, interpolation=cv2.INTER_NEAREST_EXACT), bits, out_hw)


def warp_bits(bits: np.ndarray, matrix: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour warp of (C, H, W) bit planes by a 3x3 ``matrix`` (input -> output pixel
    coordinates); a perspective warp when its last row is not (0, 0, 1). Outside the input: 0."""
    size = (out_hw[1], out_hw[0])
    if is_affine(matrix):
        m = np.ascontiguousarray(matrix[:2])
        fn = lambda a: cv2.warpAffine(a, m, size, flags=cv2.INTER_NEAREST, borderValue=0)  # noqa: E731
    else:
        fn = lambda a: cv2.warpPerspective(a, matrix, size, flags=cv2.INTER_NEAREST, borderValue=0)  # noqa: E731
    return per_plane(fn, bits, out_hw)


def is_affine(matrix: np.ndarray) -> bool:
    return bool(matrix[2, 0] == 0 and matrix[2, 1] == 0 and matrix[2, 2] == 1)
