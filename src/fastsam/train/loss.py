"""YOLOv8-seg training loss as FastSAM used it: class-agnostic, one mask per instance.

Terms (gains box 7.5, cls 0.5, dfl 1.5; the mask term uses the box gain, as YOLOv8-seg does):

* box: (1 - CIoU) between predicted and target boxes of the assigned anchors, weighted by the soft
  class target of each anchor;
* dfl: distribution focal loss of the ltrb distances over ``reg_max`` bins, same weights;
* cls: BCE of the class logits against the task-aligned soft targets, all anchors;
* mask: per assigned anchor, BCE of (coefficients x prototypes) against its instance's mask, summed
  inside the target box (prototype frame) and divided by the box area, averaged over assigned anchors.

The box, dfl and cls sums are divided by the sum of soft targets, so they do not depend on how many
anchors were assigned. The total is multiplied by the batch size (YOLOv8's convention, which the
learning rates assume).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..nn.model import HeadOutput
from ..ops.decode import make_anchors
from .assign import TaskAlignedAssigner, bbox_ciou

__all__ = ["LossGains", "LossOutput", "SegmentationLoss", "crop_sum", "dfl_loss"]


@dataclass(frozen=True)
class LossGains:
    box: float = 7.5
    cls: float = 0.5
    dfl: float = 1.5


@dataclass
class LossOutput:
    """``total`` (scalar, gains applied, x batch size) drives backward; ``items`` (box, mask, cls, dfl)
    are the detached per-term values (gains applied, not multiplied by the batch size) for logging."""

    total: Tensor
    items: Tensor


def dfl_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Distribution focal loss.

    Args:
        logits: (N, 4, reg_max) bin logits of the four distances.
        target: (N, 4) target distances in bins, in [0, reg_max - 1).
    Returns:
        (N,) mean over the four sides of the cross-entropy towards the two bins around the target,
        weighted by linear interpolation.
    """
    left = target.long()
    w_right = target - left
    logp = F.log_softmax(logits, -1)
    nll_left = -logp.gather(-1, left.unsqueeze(-1)).squeeze(-1)
    nll_right = -logp.gather(-1, (left + 1).unsqueeze(-1)).squeeze(-1)
    return (nll_left * (1 - w_right) + nll_right * w_right).mean(-1)


def crop_sum(values: Tensor, boxes: Tensor) -> Tensor:
    """Sum of (N, H, W) ``values`` over the cells of each (N, 4) xyxy box (cell frame: column c covers
    [c, c + 1), a cell counts when its index satisfies x1 <= c < x2 and y1 <= r < y2)."""
    _n, h, w = values.shape
    cols = torch.arange(w, device=values.device, dtype=boxes.dtype)
    rows = torch.arange(h, device=values.device, dtype=boxes.dtype)
    in_cols = ((cols >= boxes[:, 0:1]) & (cols < boxes[:, 2:3])).to(values.dtype)  # (N, W)
    in_rows = ((rows >= boxes[:, 1:2]) & (rows < boxes[:, 3:4])).to(values.dtype)  # (N, H)
    # Separable: sum over columns inside, then over rows inside (no (N, H, W) mask is built).
    return ((values @ in_cols.unsqueeze(-1)).squeeze(-1) * in_rows).sum(1)


class SegmentationLoss:
    """Loss of a :class:`~fastsam.nn.model.FastSAMNet` on a training batch.

    Args:
        reg_max: DFL bins of the model; num_classes: classes (1 for FastSAM); strides: level strides.
    """

    def __init__(
        self,
        reg_max: int,
        num_classes: int = 1,
        strides: tuple[int, ...] = (8, 16, 32),
        gains: LossGains = LossGains(),
        topk: int = 10,
        alpha: float = 0.5,
        beta: float = 6.0,
    ) -> None:
        self.reg_max, self.num_classes, self.strides, self.gains = reg_max, num_classes, strides, gains
        self.assigner = TaskAlignedAssigner(topk=topk, num_classes=num_classes, alpha=alpha, beta=beta)

    def __call__(
        self, out: HeadOutput, boxes: Tensor, batch_idx: Tensor, masks: Tensor, labels: Tensor | None = None
    ) -> LossOutput:
        """
        Args:
            out: raw network outputs for B images of size (S, S).
            boxes: (N, 4) ground-truth boxes xyxy in input pixels.
            batch_idx: (N,) image index of each ground truth.
            masks: (N, S/4, S/4) float targets in [0, 1] at prototype resolution.
            labels: (N,) class indices; all 0 (class-agnostic) when omitted.
        """
        b = out.coefficients.shape[0]
        device = out.coefficients.device
        shapes = [tuple(x.shape[2:]) for x in out.box_logits]
        box_logits = torch.cat([x.flatten(2) for x in out.box_logits], 2).transpose(1, 2)  # (B, A, 4R)
        cls_logits = torch.cat([x.flatten(2) for x in out.cls_logits], 2).transpose(1, 2)  # (B, A, C)
        coef = out.coefficients.transpose(1, 2)  # (B, A, nm)
        a = box_logits.shape[1]
        anchors, stride = make_anchors(shapes, self.strides, device)  # grid units, (A, 2), (A, 1)

        # Predicted boxes in grid units of each anchor's level: expected ltrb distances around the anchor.
        prob = box_logits.float().view(b, a, 4, self.reg_max).softmax(-1)
        dist = prob @ torch.arange(self.reg_max, device=device, dtype=prob.dtype)
        pred_boxes = torch.cat((anchors - dist[..., :2], anchors + dist[..., 2:]), -1)  # (B, A, 4)

        gt_boxes, gt_labels, gt_valid, gt_rows = self._pad_targets(boxes, batch_idx, labels, b)
        assigned = self.assigner(
            cls_logits.detach().sigmoid().float(),
            (pred_boxes.detach() * stride).to(gt_boxes.dtype),
            anchors * stride,
            gt_labels,
            gt_boxes,
            gt_valid,
        )
        fg = assigned.fg_mask
        score_sum = assigned.scores.sum().clamp(min=1.0)

        loss_cls = F.binary_cross_entropy_with_logits(cls_logits.float(), assigned.scores, reduction="sum") / score_sum
        zero = cls_logits.sum() * 0.0
        loss_box = loss_dfl = loss_mask = zero
        if fg.any():
            weight = assigned.scores.sum(-1)[fg]  # (P,)
            target_grid = assigned.boxes / stride  # (B, A, 4) grid units
            ciou = bbox_ciou(pred_boxes[fg], target_grid[fg])
            loss_box = ((1.0 - ciou) * weight).sum() / score_sum
            anchor_fg = anchors.expand(b, a, 2)[fg]
            ltrb = torch.cat((anchor_fg - target_grid[fg][:, :2], target_grid[fg][:, 2:] - anchor_fg), -1)
            ltrb = ltrb.clamp(0, self.reg_max - 1 - 0.01)
            loss_dfl = (dfl_loss(box_logits[fg].float().view(-1, 4, self.reg_max), ltrb) * weight).sum() / score_sum
            loss_mask = self._mask_loss(out.protos, coef, fg, assigned.gt_index, gt_rows, assigned.boxes, masks)

        g = self.gains
        items = torch.stack((loss_box * g.box, loss_mask * g.box, loss_cls * g.cls, loss_dfl * g.dfl))
        return LossOutput(total=items.sum() * b, items=items.detach())

    @staticmethod
    def _pad_targets(
        boxes: Tensor, batch_idx: Tensor, labels: Tensor | None, b: int
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Ragged targets -> per-image slots: boxes (B, M, 4), labels (B, M), valid (B, M) and
        ``rows`` (B, M): the row of each slot in the ragged (N, ...) inputs (-1 for padding)."""
        device = boxes.device
        counts = torch.bincount(batch_idx, minlength=b) if batch_idx.numel() else torch.zeros(b, dtype=torch.long)
        m = int(counts.max()) if counts.numel() else 0
        out_boxes = torch.zeros(b, m, 4, device=device, dtype=torch.float32)
        out_labels = torch.zeros(b, m, dtype=torch.long, device=device)
        valid = torch.zeros(b, m, dtype=torch.bool, device=device)
        rows = torch.full((b, m), -1, dtype=torch.long, device=device)
        if m:
            order = torch.argsort(batch_idx, stable=True)
            img = batch_idx[order]
            starts = torch.cumsum(counts.to(device), 0) - counts.to(device)
            slot = torch.arange(order.numel(), device=device) - starts[img]
            out_boxes[img, slot] = boxes[order].float()
            if labels is not None:
                out_labels[img, slot] = labels[order].long()
            valid[img, slot] = True
            rows[img, slot] = order
        return out_boxes, out_labels, valid, rows

    def _mask_loss(
        self,
        protos: Tensor,
        coef: Tensor,
        fg: Tensor,
        gt_index: Tensor,
        gt_rows: Tensor,
        target_boxes: Tensor,
        masks: Tensor,
    ) -> Tensor:
        """Mean over assigned anchors of BCE(coef @ protos, instance mask) summed in the box / box area.

        Boxes are in input pixels; the prototype frame is the input frame divided by 4 (mask ratio)."""
        b, nm, mh, mw = protos.shape
        ratio = 4.0
        total = protos.sum() * 0.0
        count = 0
        for i in range(b):
            sel = fg[i]
            if not sel.any():
                continue
            rows = gt_rows[i, gt_index[i, sel]]  # (P_i,) rows into the ragged targets
            logits = (coef[i, sel].float() @ protos[i].float().view(nm, -1)).view(-1, mh, mw)
            target = masks[rows].to(logits.dtype)
            bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
            box = target_boxes[i, sel] / ratio
            area = ((box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1])).clamp(min=1e-6)
            total = total + (crop_sum(bce, box) / area).sum()
            count += int(sel.sum())
        return total / max(count, 1)
