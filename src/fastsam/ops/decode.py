"""Decoding raw head maps into boxes and scores (anchor-free, DFL box regression)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..nn.model import HeadOutput

__all__ = ["decode_predictions", "dfl_expectation", "make_anchors"]


def make_anchors(
    shapes: Sequence[tuple[int, ...]],
    strides: tuple[int, ...],
    device: torch.device,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """Anchor points at cell centres, in grid units of their level; ``shapes`` are the (H, W) of each level.

    Returns:
        points (A, 2) as (x, y) = (col + 0.5, row + 0.5); strides (A, 1).
    """
    points, stride_col = [], []
    for (h, w), s in zip(shapes, strides):
        xs = torch.arange(w, device=device, dtype=dtype) + 0.5
        ys = torch.arange(h, device=device, dtype=dtype) + 0.5
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack((xx, yy), -1).view(-1, 2))
        stride_col.append(torch.full((h * w, 1), s, device=device, dtype=dtype))
    return torch.cat(points), torch.cat(stride_col)


def dfl_expectation(logits: Tensor, reg_max: int) -> Tensor:
    """(B, 4*reg_max, A) bin logits -> (B, 4, A) expected distances (softmax over bins, weights 0..reg_max-1).

    The expectation is a 1x1 convolution over the bin axis, as in the reference implementation: the
    same reduction order gives bit-identical distances (box edges feed discontinuous crops).
    """
    b, _, a = logits.shape
    prob = logits.view(b, 4, reg_max, a).transpose(2, 1).softmax(1)  # (B, reg_max, 4, A)
    bins = torch.arange(reg_max, device=logits.device, dtype=logits.dtype).view(1, reg_max, 1, 1)
    return F.conv2d(prob, bins).view(b, 4, a)


def decode_predictions(out: HeadOutput, strides: tuple[int, ...], reg_max: int) -> Tensor:
    """Raw head maps -> (B, 4 + num_classes + num_masks, A).

    Rows: box centre x, centre y, width, height in input pixels; sigmoid class scores; raw mask
    coefficients. Anchors are ordered level by level (stride 8 first), row-major within a level.
    """
    b = out.coefficients.shape[0]
    shapes = [tuple(x.shape[2:]) for x in out.box_logits]
    box = torch.cat([x.view(b, x.shape[1], -1) for x in out.box_logits], 2)
    cls = torch.cat([x.view(b, x.shape[1], -1) for x in out.cls_logits], 2)
    points, stride = make_anchors(shapes, strides, box.device, box.dtype)
    dist = dfl_expectation(box, reg_max)  # (B, 4, A) ltrb in grid units
    anchor = points.t().unsqueeze(0)  # (1, 2, A)
    lt, rb = dist[:, :2], dist[:, 2:]
    x1y1, x2y2 = anchor - lt, anchor + rb
    xywh = torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), 1) * stride.t().unsqueeze(0)
    return torch.cat((xywh, cls.sigmoid(), out.coefficients), 1)
