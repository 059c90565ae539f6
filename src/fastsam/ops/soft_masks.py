"""Soft masks: per-mask probabilities (sigmoid of the mask logits, before the > 0 threshold) at
original resolution, inside each mask's box.

The retina path of :mod:`fastsam.ops.masks` thresholds the bilinearly upsampled logits at 0; here the
same upsampled logits (same tables, same un-padded prototype cut, same box regions) are kept as
float32 and passed through a sigmoid, so ``probs > 0.5`` is the hard mask up to float rounding at
logit 0. Outside its box a mask's probability is 0, as its hard mask is False there. Used by the
zero-shot edge recipe (Sobel on probability maps), which needs the soft values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import Tensor

from .letterbox import Letterbox
from .masks import AxisTable, _pixel_range, retina_tables

__all__ = ["SoftMasks", "retina_probabilities"]


@dataclass(frozen=True)
class SoftMasks:
    """Probability crops of one image's masks, in descending score order.

    Attributes:
        image_size: (H, W) of the original image.
        boxes: (N, 4) float32 xyxy detection boxes, original pixels.
        scores: (N,) float32 detection scores.
        regions: (N, 4) int64 r0, r1, c0, c1 (end exclusive) of each crop in the image.
        probs: N float32 arrays of shape (r1 - r0, c1 - c0), values in [0, 1].
    """

    image_size: tuple[int, int]
    boxes: np.ndarray
    scores: np.ndarray
    regions: np.ndarray
    probs: tuple[np.ndarray, ...]

    @classmethod
    def empty(cls, image_size: tuple[int, int]) -> SoftMasks:
        z = np.zeros((0, 4), dtype=np.float32)
        return cls((int(image_size[0]), int(image_size[1])), z, np.zeros(0, np.float32), z.astype(np.int64), ())

    def __len__(self) -> int:
        return len(self.probs)


def _upsample(logits: np.ndarray, origin: tuple[int, int], rows: AxisTable, cols: AxisTable) -> np.ndarray:
    """Bilinear values of the logits window at the output pixels ``rows`` x ``cols`` (float32)."""
    ia, ja = origin
    r0, r1 = rows.i0 - ia, rows.i1 - ia
    c0, c1 = cols.i0 - ja, cols.i1 - ja
    across0 = logits[r0][:, c0] * cols.w0 + logits[r0][:, c1] * cols.w1
    across1 = logits[r1][:, c0] * cols.w0 + logits[r1][:, c1] * cols.w1
    return (across0 * rows.w0[:, None] + across1 * rows.w1[:, None]).astype(np.float32)


def retina_probabilities(
    protos: Tensor, coefficients: Tensor, boxes: Tensor, geom: Letterbox
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Per mask, sigmoid of the retina logits inside its box.

    Args:
        protos: (nm, mh, mw) prototypes. coefficients: (N, nm).
        boxes: (N, 4) xyxy original pixels (mapped from the input frame and clipped), as for
            :func:`~fastsam.ops.masks.assemble_retina`.

    Returns:
        (regions (N, 4) int64 r0, r1, c0, c1; N float32 probability crops).
    """
    _nm, mh, mw = protos.shape
    h0, w0 = geom.orig_size
    row_table, col_table, (top, bottom, left, right) = retina_tables(mh, mw, geom)  # the retina path's own
    grid = np.ascontiguousarray(protos.float()[:, top:bottom, left:right].permute(1, 2, 0).numpy())
    coefs = coefficients.float().numpy()
    regions = np.zeros((len(coefs), 4), dtype=np.int64)
    probs: list[np.ndarray] = []
    for k, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        r0, r1 = _pixel_range(y1, y2, h0)
        c0, c1 = _pixel_range(x1, x2, w0)
        regions[k] = (r0, r1, c0, c1)
        if r1 <= r0 or c1 <= c0:
            probs.append(np.zeros((r1 - r0, c1 - c0), dtype=np.float32))
            continue
        ia, ib = int(row_table.i0[r0]), int(row_table.i1[r1 - 1]) + 1
        ja, jb = int(col_table.i0[c0]), int(col_table.i1[c1 - 1]) + 1
        logits = grid[ia:ib, ja:jb] @ coefs[k]
        value = _upsample(logits, (ia, ja), row_table[r0:r1], col_table[c0:c1])
        # sigmoid written to avoid overflow warnings for large negative logits
        probs.append((0.5 * (1.0 + np.tanh(0.5 * value))).astype(np.float32))
    return regions, probs
