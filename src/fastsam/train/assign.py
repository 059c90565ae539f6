"""Task-aligned label assignment (TOOD / YOLOv8) and the box-overlap measures the loss shares with it.

Frames: every box here is ``xyxy`` in one common frame (input pixels for the assigner, grid units of
each anchor's level inside the loss); anchor points are (x, y) cell centres in that same frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["AssignResult", "TaskAlignedAssigner", "bbox_ciou"]

EPS = 1e-9


def bbox_ciou(a: Tensor, b: Tensor, eps: float = 1e-7) -> Tensor:
    """Complete IoU (Zheng et al., 2020) of boxes ``a`` and ``b``, xyxy, broadcast over leading dims.

    CIoU = IoU - d^2 / c^2 - alpha * v, with d the centre distance, c the diagonal of the enclosing
    box and v the aspect-ratio discrepancy; alpha is treated as a constant (no gradient), as in the
    paper. Returns (...,) values in [-1.5, 1].
    """
    ax1, ay1, ax2, ay2 = a.unbind(-1)
    bx1, by1, bx2, by2 = b.unbind(-1)
    aw, ah = ax2 - ax1, ay2 - ay1 + eps
    bw, bh = bx2 - bx1, by2 - by1 + eps
    inter = (torch.minimum(ax2, bx2) - torch.maximum(ax1, bx1)).clamp(0) * (
        torch.minimum(ay2, by2) - torch.maximum(ay1, by1)
    ).clamp(0)
    union = aw * ah + bw * bh - inter + eps
    iou = inter / union
    cw = torch.maximum(ax2, bx2) - torch.minimum(ax1, bx1)
    ch = torch.maximum(ay2, by2) - torch.minimum(ay1, by1)
    c2 = cw.pow(2) + ch.pow(2) + eps
    d2 = ((bx1 + bx2 - ax1 - ax2).pow(2) + (by1 + by2 - ay1 - ay2).pow(2)) / 4
    v = (4 / math.pi**2) * (torch.atan(bw / bh) - torch.atan(aw / ah)).pow(2)
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (d2 / c2 + v * alpha)


@dataclass
class AssignResult:
    """Per-anchor targets for a batch of B images and A anchors.

    Attributes:
        fg_mask: (B, A) bool: anchor is assigned to some ground truth.
        gt_index: (B, A) int64: index of the assigned ground truth among the image's M slots
            (0 where ``fg_mask`` is False).
        boxes: (B, A, 4) target boxes xyxy (same frame as the inputs).
        scores: (B, A, C) soft class targets: one-hot label x normalised alignment metric.
    """

    fg_mask: Tensor
    gt_index: Tensor
    boxes: Tensor
    scores: Tensor


class TaskAlignedAssigner:
    """Assign each ground truth its ``topk`` anchors of largest alignment ``score^alpha * IoU^beta``.

    Candidates are anchors whose centre lies strictly inside the ground-truth box. An anchor picked by
    several ground truths keeps the one it overlaps most. Class targets are scaled so that, per ground
    truth, the best-aligned anchor gets that ground truth's best IoU (TOOD's normalisation).
    """

    def __init__(self, topk: int = 10, num_classes: int = 1, alpha: float = 0.5, beta: float = 6.0) -> None:
        self.topk, self.num_classes, self.alpha, self.beta = topk, num_classes, alpha, beta

    @torch.no_grad()
    def __call__(
        self,
        pred_scores: Tensor,
        pred_boxes: Tensor,
        anchors: Tensor,
        gt_labels: Tensor,
        gt_boxes: Tensor,
        gt_valid: Tensor,
    ) -> AssignResult:
        """
        Args:
            pred_scores: (B, A, C) predicted class probabilities (after sigmoid).
            pred_boxes: (B, A, 4) predicted boxes xyxy.
            anchors: (A, 2) anchor centres (x, y).
            gt_labels: (B, M) int64 class of each ground-truth slot.
            gt_boxes: (B, M, 4) ground-truth boxes xyxy.
            gt_valid: (B, M) bool: slot holds a real ground truth (images have M or fewer).
        """
        b, a, c = pred_scores.shape
        m = gt_boxes.shape[1]
        device = pred_scores.device
        if m == 0:
            return AssignResult(
                torch.zeros(b, a, dtype=torch.bool, device=device),
                torch.zeros(b, a, dtype=torch.long, device=device),
                torch.zeros(b, a, 4, device=device),
                torch.zeros(b, a, c, device=device),
            )
        # Anchor centre strictly inside the box (distance to every side > EPS): (B, M, A).
        lt = anchors.view(1, 1, a, 2) - gt_boxes[..., None, :2]
        rb = gt_boxes[..., None, 2:] - anchors.view(1, 1, a, 2)
        inside = torch.cat((lt, rb), -1).amin(-1) > EPS
        candidate = inside & gt_valid[..., None]

        overlaps = torch.zeros(b, m, a, dtype=pred_boxes.dtype, device=device)
        score = torch.zeros_like(overlaps)
        bi, mi, ai = candidate.nonzero(as_tuple=True)
        overlaps[bi, mi, ai] = bbox_ciou(gt_boxes[bi, mi], pred_boxes[bi, ai]).clamp_(0)
        score[bi, mi, ai] = pred_scores[bi, ai, gt_labels[bi, mi]]
        metric = score.pow(self.alpha) * overlaps.pow(self.beta)  # (B, M, A), 0 outside candidates

        # Top-k anchors per ground truth; zero-metric picks are discarded by the candidate mask.
        k = min(self.topk, a)
        top = metric.topk(k, dim=-1).indices  # (B, M, k)
        picked = torch.zeros_like(candidate).scatter_(-1, top, True)
        pos = picked & candidate  # (B, M, A)

        # An anchor claimed by several ground truths keeps the one with the largest overlap.
        multi = pos.sum(1, keepdim=True) > 1  # (B, 1, A)
        if multi.any():
            best = torch.zeros_like(pos).scatter_(1, overlaps.argmax(1, keepdim=True), True)
            pos = torch.where(multi, best & candidate, pos)
        fg = pos.any(1)  # (B, A)
        gt_index = pos.to(torch.uint8).argmax(1)  # (B, A)

        batch = torch.arange(b, device=device)[:, None]
        boxes = gt_boxes[batch, gt_index]  # (B, A, 4)
        labels = gt_labels[batch, gt_index].clamp(0, c - 1)
        scores = torch.zeros(b, a, c, dtype=pred_scores.dtype, device=device)
        scores.scatter_(2, labels.unsqueeze(-1), 1.0)
        scores *= fg.unsqueeze(-1)

        # Normalise: per ground truth, alignment / its max alignment x its max IoU; per anchor, max over gts.
        metric = metric * pos
        max_metric = metric.amax(-1, keepdim=True)
        max_iou = (overlaps * pos).amax(-1, keepdim=True)
        norm = (metric * max_iou / (max_metric + EPS)).amax(1)  # (B, A)
        return AssignResult(fg, gt_index, boxes, scores * norm.unsqueeze(-1))
