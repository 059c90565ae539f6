"""How far two sets of masks agree: the yardstick for exported, quantized and batched outputs."""

from __future__ import annotations

import numpy as np

__all__ = ["best_match_iou", "mask_iou_matrix"]


def mask_iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, H, W) and (M, H, W) bool masks -> (N, M) IoU (0 where both masks are empty)."""
    fa = a.reshape(len(a), -1).astype(np.float32)
    fb = b.reshape(len(b), -1).astype(np.float32)
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def best_match_iou(reference: np.ndarray, other: np.ndarray) -> np.ndarray:
    """For each mask of ``reference`` (N, H, W), its highest IoU with any mask of ``other``: (N,)."""
    if len(reference) == 0:
        return np.zeros(0, np.float32)
    if len(other) == 0:
        return np.zeros(len(reference), np.float32)
    return mask_iou_matrix(reference, other).max(1)
