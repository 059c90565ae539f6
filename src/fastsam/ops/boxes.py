"""Box utilities, NMS with early exit, and the original's full-image box rule."""

from __future__ import annotations

import torch
from torch import Tensor

from . import _native

__all__ = ["box_iou", "nms_first_k", "snap_and_expand_full_boxes", "xywh_to_xyxy"]

MAX_NMS_CANDIDATES = 30000  # the original sorts and keeps at most this many before NMS
BORDER_SNAP = 20  # input pixels
FULL_BOX_IOU = 0.9


def xywh_to_xyxy(boxes: Tensor) -> Tensor:
    """(N, 4) centre-x, centre-y, width, height -> (N, 4) x1, y1, x2, y2."""
    half = boxes[:, 2:] / 2
    return torch.cat((boxes[:, :2] - half, boxes[:, :2] + half), 1)


def box_iou(a: Tensor, b: Tensor, eps: float = 1e-7) -> Tensor:
    """(N, 4) x (M, 4) xyxy -> (N, M) IoU."""
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp_(min=0).prod(2)
    area_a = (a[:, 2:] - a[:, :2]).prod(1)
    area_b = (b[:, 2:] - b[:, :2]).prod(1)
    return inter / (area_a[:, None] + area_b[None, :] - inter + eps)


def nms_first_k(boxes: Tensor, scores: Tensor, iou: float, k: int) -> Tensor:
    """Greedy NMS returning only the first ``k`` kept indices (in descending score order).

    Exactly equal to ``torchvision.ops.nms(boxes, scores, iou)[:k]`` (ties in score keep their input
    order), without its cost: a box can only be suppressed by higher-scoring boxes, so the greedy
    pass can stop once ``k`` boxes are kept. The compiled kernel does that directly; without it we
    run torchvision on growing top-m candidate sets until ``k`` boxes are kept.

    Args:
        boxes: (N, 4) xyxy. scores: (N,). Returns: (<= k,) int64 indices into ``boxes``.
    """
    n = boxes.shape[0]
    order = scores.argsort(descending=True, stable=True)
    if boxes.device.type == "cpu":
        kept = _native.nms_sorted(boxes[order].float().numpy(), iou, k)
        if kept is not None:
            return order[torch.from_numpy(kept)]
    from torchvision.ops import nms  # importing torchvision costs seconds on a cold start: fallback only

    m = min(n, max(2 * k, 512))
    while True:
        top = order[:m]
        keep = nms(boxes[top], scores[top], iou)
        if keep.numel() >= k or m == n:
            return top[keep[:k]]
        m = min(n, 2 * m)


def snap_and_expand_full_boxes(boxes: Tensor, input_size: tuple[int, int]) -> Tensor:
    """The original's full-image box rule, in input pixels, applied before masks are assembled.

    1. Snap box sides within 20 px of the input border onto it (so masks can reach the image edge;
       masks are cropped by their boxes).
    2. Every box whose IoU with the whole input frame exceeds 0.9 becomes the whole frame (its mask
       is then not cropped at all). The original only handles one such box and fails on several;
       we apply the rule to each of them.

    Args:
        boxes: (N, 4) xyxy input pixels. input_size: (H, W). Returns a new (N, 4) tensor.
    """
    h, w = input_size
    out = boxes.clone()
    out[:, 0] = torch.where(out[:, 0] < BORDER_SNAP, 0.0, out[:, 0])
    out[:, 1] = torch.where(out[:, 1] < BORDER_SNAP, 0.0, out[:, 1])
    out[:, 2] = torch.where(out[:, 2] > w - BORDER_SNAP, float(w), out[:, 2])
    out[:, 3] = torch.where(out[:, 3] > h - BORDER_SNAP, float(h), out[:, 3])
    frame = torch.tensor([[0.0, 0.0, float(w), float(h)]], dtype=out.dtype, device=out.device)
    full = box_iou(frame, out)[0] > FULL_BOX_IOU
    out[full] = frame
    return out
