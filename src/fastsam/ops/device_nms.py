"""Score filter and greedy NMS in torch, on whatever device the predictions live on, batched over images.

The CPU path (``predictor.select_detections`` + ``boxes.nms_first_k``) copies predictions to the
host and runs a C kernel per image. Here everything stays on the device: one stable sort per image
row, then NMS over blocks of sorted candidates. Within a block, greedy suppression is the unique
fixed point of ``keep[j] = alive[j] and not any(keep[i] and iou[i, j] > t for i < j)``; iterating
that map from ``keep = alive`` fixes one more leading position per step (position 0 never depends
on anything), so it converges in at most ``block`` steps and, NMS chains being short, in a handful
in practice. Boxes kept by earlier blocks suppress a block's boxes before it is resolved. Each
image stops once ``max_det`` boxes are kept, as the CPU path does.

Host syncs (the only Python loops): one to learn the candidate counts, and per block one per
fixed-point step plus one for the early exit — none per detection.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .boxes import MAX_NMS_CANDIDATES

__all__ = ["DeviceDetections", "iou_threshold32", "nms", "nms_sorted_batched", "select_batched"]

#: as ``predictor.CLASS_OFFSET``: separates classes in NMS (FastSAM has one class)
CLASS_OFFSET = 7680
BLOCK = 512  # sorted candidates resolved at once: (B, BLOCK, BLOCK) booleans per step


@dataclass(frozen=True)
class DeviceDetections:
    """NMS output of a batch, padded to ``max_det`` slots per image, on the predictions' device.

    Attributes:
        boxes: (B, K, 4) float32 xyxy, input pixels (no class offset). scores: (B, K) float32.
        classes: (B, K) int64. coefficients: (B, K, nm) float32. counts: (B,) int64 kept per image;
        slots at or past an image's count hold zeros.
    """

    boxes: Tensor
    scores: Tensor
    classes: Tensor
    coefficients: Tensor
    counts: Tensor


def iou_threshold32(iou: float) -> float:
    """The float32 threshold ``f`` with ``x > f`` exactly when ``float64(x) > iou`` for every float32 ``x``.

    torchvision (and our C kernel) compare a float32 IoU with a double threshold; comparing two
    float32 tensors must give the same answer. When float32(iou) rounds up past ``iou``, the float32
    equal to it must still count as "greater", so the threshold steps one float down.
    """
    f = np.float32(iou)
    if float(f) > iou:
        f = np.nextafter(f, np.float32(-np.inf))
    return float(f)


def _pairwise_iou(a: Tensor, b: Tensor) -> Tensor:
    """(B, N, 4) x (B, M, 4) xyxy -> (B, N, M) IoU with torchvision's float32 arithmetic (no eps:
    0 / 0 gives NaN, which suppresses nothing, as there)."""
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    w = (
        torch.minimum(a[..., :, None, 2], b[..., None, :, 2]) - torch.maximum(a[..., :, None, 0], b[..., None, :, 0])
    ).clamp_(min=0)
    h = (
        torch.minimum(a[..., :, None, 3], b[..., None, :, 3]) - torch.maximum(a[..., :, None, 1], b[..., None, :, 1])
    ).clamp_(min=0)
    inter = w * h
    return inter / (area_a[..., :, None] + area_b[..., None, :] - inter)


def nms_sorted_batched(boxes: Tensor, valid: Tensor, iou: float, k: int, block: int = BLOCK) -> tuple[Tensor, Tensor]:
    """Greedy NMS per image over boxes already sorted by descending score; the first ``k`` kept.

    Args:
        boxes: (B, N, 4) xyxy, float32, sorted per image (ties in their input order).
        valid: (B, N) bool: candidate positions (padding and dropped boxes are False).
        iou: suppress a box whose IoU with a kept, higher-ranked box is > ``iou``.
        k: kept boxes wanted per image (``max_det``).

    Returns:
        (kept (B, k) int64 positions into N in rank order, padded with -1; counts (B,) int64).
    """
    b, n = boxes.shape[:2]
    dev = boxes.device
    thr = iou_threshold32(iou)
    # kept boxes so far, one spare slot (index k) that absorbs writes past k and is never valid
    kept_pos = torch.full((b, k + 1), -1, dtype=torch.int64, device=dev)
    kept_box = torch.zeros((b, k + 1, 4), dtype=boxes.dtype, device=dev)
    kept_ok = torch.zeros((b, k + 1), dtype=torch.bool, device=dev)
    counts = torch.zeros(b, dtype=torch.int64, device=dev)
    upper = torch.ones(block, block, dtype=torch.bool, device=dev).triu_(1)  # i < j
    for start in range(0, n, block):
        end = min(n, start + block)
        m = end - start
        blk, alive = boxes[:, start:end], valid[:, start:end] & (counts < k)[:, None]
        if k > 0:  # suppressed by boxes kept in earlier blocks
            hit = (_pairwise_iou(kept_box, blk) > thr) & kept_ok[:, :, None]
            alive = alive & ~hit.any(1)
        sup = (_pairwise_iou(blk, blk) > thr) & upper[:m, :m]  # sup[i, j]: i suppresses j
        supf = sup.to(boxes.dtype)
        keep = alive
        for _ in range(m):  # fixed point; see the module docstring
            new = alive & ~(torch.bmm(keep.to(boxes.dtype)[:, None, :], supf)[:, 0] > 0)
            if torch.equal(new, keep):
                break
            keep = new
        rank = counts[:, None] + keep.cumsum(1) - 1
        slot = torch.where(keep & (rank < k), rank, torch.full_like(rank, k))
        pos = torch.arange(start, end, device=dev).expand(b, m)
        kept_pos.scatter_(1, slot, pos)
        kept_box.scatter_(1, slot[..., None].expand(b, m, 4), blk)
        kept_ok.scatter_(1, slot, keep)
        kept_ok[:, k] = False
        counts = torch.clamp(counts + keep.sum(1), max=k)
        if bool((counts >= k).all()):
            break
    kept_pos[:, k:] = -1
    return kept_pos[:, :k], counts


def nms(boxes: Tensor, scores: Tensor, iou: float) -> Tensor:
    """``torchvision.ops.nms`` on any device, without torchvision: (N, 4) xyxy, (N,) -> kept indices
    (int64) in descending score order; equal scores keep their input order."""
    order = scores.argsort(descending=True, stable=True)
    n = boxes.shape[0]
    if n == 0:
        return order
    kept, count = nms_sorted_batched(
        boxes[order].float()[None], torch.ones(1, n, dtype=torch.bool, device=boxes.device), iou, n
    )
    return order[kept[0, : int(count[0])]]


def select_batched(preds: Tensor, num_classes: int, conf: float, iou: float, max_det: int) -> DeviceDetections:
    """Score filter (> conf) and NMS of a batch of decoded predictions, as ``predictor.select_detections``.

    Args:
        preds: (B, 4 + nc + nm, A) decoded predictions (xywh input pixels, class scores, coefficients).

    The candidates of an image are its scores > conf, in descending score order (ties: anchor
    order), at most ``MAX_NMS_CANDIDATES`` of them, as on the CPU path.
    """
    preds = preds.float()
    b = preds.shape[0]
    dev = preds.device
    scores, classes = preds[:, 4 : 4 + num_classes].max(1)  # (B, A)
    cand = scores > conf  # strictly greater, as the original
    ranked = torch.where(cand, scores, torch.full_like(scores, -1.0))
    order = ranked.argsort(dim=1, descending=True, stable=True)
    n_valid = cand.sum(1).clamp_(max=MAX_NMS_CANDIDATES)
    n = int(n_valid.max()) if b else 0  # sync: how far the candidate lists reach
    order = order[:, :n]
    valid = torch.arange(n, device=dev)[None, :] < n_valid[:, None]
    xywh = preds[:, :4].gather(2, order[:, None, :].expand(b, 4, n)).transpose(1, 2)
    boxes = torch.cat((xywh[..., :2] - xywh[..., 2:] / 2, xywh[..., :2] + xywh[..., 2:] / 2), 2)  # xywh_to_xyxy
    cls = classes.gather(1, order)
    kept, counts = nms_sorted_batched(boxes + cls[..., None].to(boxes.dtype) * CLASS_OFFSET, valid, iou, max_det)
    ok = kept >= 0
    pos = kept.clamp(min=0)
    anchor = order.gather(1, pos) if n else torch.zeros_like(pos)
    nm = preds.shape[1] - 4 - num_classes
    coefs = preds[:, 4 + num_classes :].gather(2, anchor[:, None, :].expand(b, nm, max_det)).transpose(1, 2)
    zero = ~ok
    return DeviceDetections(
        boxes=(
            boxes.gather(1, pos[..., None].expand(b, max_det, 4)) if n else torch.zeros(b, max_det, 4, device=dev)
        ).masked_fill(zero[..., None], 0.0),
        scores=scores.gather(1, anchor).masked_fill(zero, 0.0),
        classes=classes.gather(1, anchor).masked_fill(zero, 0),
        coefficients=coefs.masked_fill(zero[..., None], 0.0),
        counts=counts,
    )
