"""Assigner and loss terms on hand-checkable cases."""

from __future__ import annotations

import math

import pytest
import torch

from fastsam.nn.model import HeadOutput, build_model
from fastsam.train.assign import TaskAlignedAssigner, bbox_ciou
from fastsam.train.loss import SegmentationLoss, crop_sum, dfl_loss


def t(*rows: list[float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


# -- CIoU ------------------------------------------------------------------------------------------
def test_ciou_identical_boxes_is_one() -> None:
    box = t([1.0, 2.0, 5.0, 4.0])
    assert bbox_ciou(box, box).item() == pytest.approx(1.0, abs=1e-6)


def test_ciou_disjoint_same_shape_is_minus_distance_ratio() -> None:
    # IoU 0, same aspect (v = 0); centres (1, 1) and (5, 1): d^2 = 16; enclosing box 6 x 2: c^2 = 40.
    a, b = t([0.0, 0.0, 2.0, 2.0]), t([4.0, 0.0, 6.0, 2.0])
    assert bbox_ciou(a, b).item() == pytest.approx(-16 / 40, abs=1e-6)


def test_ciou_same_centre_rotated_aspect() -> None:
    # 4 x 2 against 2 x 4 around the same centre: overlap 2 x 2 = 4, union 12, IoU 1/3; d = 0.
    a, b = t([0.0, 0.0, 4.0, 2.0]), t([1.0, -1.0, 3.0, 3.0])
    iou = 1 / 3
    v = 4 / math.pi**2 * (math.atan(2 / 4) - math.atan(4 / 2)) ** 2
    alpha = v / (v - iou + 1)
    assert bbox_ciou(a, b).item() == pytest.approx(iou - alpha * v, abs=1e-6)


# -- DFL and cropping ------------------------------------------------------------------------------
def test_dfl_uniform_logits_cost_log_bins() -> None:
    logits = torch.zeros(3, 4, 16)
    target = torch.tensor([[0.0, 3.25, 7.5, 14.98]] * 3)
    assert torch.allclose(dfl_loss(logits, target), torch.full((3,), math.log(16)), atol=1e-6)


def test_dfl_interpolates_between_the_two_neighbour_bins() -> None:
    logits = torch.randn(1, 4, 8, generator=torch.Generator().manual_seed(0))
    target = torch.tensor([[2.25, 0.0, 6.5, 4.0]])
    logp = torch.log_softmax(logits, -1)[0]
    expected = (
        -((0.75 * logp[0, 2] + 0.25 * logp[0, 3]) + logp[1, 0] + (0.5 * logp[2, 6] + 0.5 * logp[2, 7]) + logp[3, 4]) / 4
    )
    assert dfl_loss(logits, target).item() == pytest.approx(expected.item(), abs=1e-6)


def test_crop_sum_counts_cells_inside_half_open_box() -> None:
    values = torch.ones(2, 8, 8)
    boxes = torch.tensor([[1.0, 2.0, 4.0, 5.0], [0.0, 0.0, 8.0, 8.0]])
    assert crop_sum(values, boxes).tolist() == [9.0, 64.0]


# -- assigner --------------------------------------------------------------------------------------
def _assign(scores, pred_boxes, anchors, gt_boxes, topk=10, valid=None):
    b, m = gt_boxes.shape[:2]
    valid = torch.ones(b, m, dtype=torch.bool) if valid is None else valid
    return TaskAlignedAssigner(topk=topk)(
        scores, pred_boxes, anchors, torch.zeros(b, m, dtype=torch.long), gt_boxes, valid
    )


def test_assigner_picks_anchors_inside_and_normalises_by_best_alignment() -> None:
    gt = torch.tensor([[[0.0, 0.0, 10.0, 10.0]]])
    anchors = torch.tensor([[5.0, 5.0], [2.0, 2.0], [15.0, 5.0]])  # two inside, one outside
    pred = torch.tensor([[[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 5.0], [0.0, 0.0, 10.0, 10.0]]])
    scores = torch.full((1, 3, 1), 0.25)
    res = _assign(scores, pred, anchors, gt)
    assert res.fg_mask.tolist() == [[True, True, False]]
    assert torch.equal(res.boxes[0, 0], gt[0, 0]) and torch.equal(res.boxes[0, 1], gt[0, 0])
    # metric = 0.25^0.5 * ciou^6; best anchor has CIoU 1 -> its target is the best IoU (1), the other
    # gets (its metric / best metric) * 1 = ciou^6.
    ciou1 = bbox_ciou(gt[0, 0].double(), pred[0, 1].double()).item()
    assert res.scores[0, :, 0].tolist() == pytest.approx([1.0, ciou1**6, 0.0], abs=1e-5)


def test_assigner_topk_limits_anchors_per_object() -> None:
    gt = torch.tensor([[[0.0, 0.0, 10.0, 10.0]]])
    anchors = torch.tensor([[5.0, 5.0], [2.0, 2.0]])
    pred = torch.tensor([[[0.0, 0.0, 10.0, 5.0], [0.0, 0.0, 10.0, 10.0]]])
    res = _assign(torch.full((1, 2, 1), 0.5), pred, anchors, gt, topk=1)
    assert res.fg_mask.tolist() == [[False, True]]


def test_assigner_anchor_claimed_twice_keeps_larger_overlap() -> None:
    gt = torch.tensor([[[0.0, 0.0, 10.0, 10.0], [4.0, 4.0, 8.0, 8.0]]])
    anchors = torch.tensor([[6.0, 6.0]])  # inside both
    pred = torch.tensor([[[4.0, 4.0, 8.0, 8.0]]])  # matches the small box exactly
    res = _assign(torch.full((1, 1, 1), 0.5), pred, anchors, gt)
    assert res.fg_mask.tolist() == [[True]] and res.gt_index.tolist() == [[1]]
    assert res.boxes[0, 0].tolist() == [4.0, 4.0, 8.0, 8.0]


def test_assigner_ignores_padding_slots_and_handles_no_objects() -> None:
    gt = torch.tensor([[[0.0, 0.0, 10.0, 10.0]]])
    anchors = torch.tensor([[5.0, 5.0]])
    pred = gt.clone()
    res = _assign(torch.full((1, 1, 1), 0.5), pred, anchors, gt, valid=torch.tensor([[False]]))
    assert not res.fg_mask.any() and res.scores.sum() == 0
    empty = _assign(torch.full((1, 1, 1), 0.5), pred, anchors, torch.zeros(1, 0, 4))
    assert not empty.fg_mask.any() and empty.scores.shape == (1, 1, 1)


# -- full loss -------------------------------------------------------------------------------------
def _outputs(batch: int = 1, size: int = 64, reg_max: int = 16, nm: int = 4) -> HeadOutput:
    """Zero head outputs for a (size x size) input: every logit 0, every prototype 0."""
    shapes = [(size // s, size // s) for s in (8, 16, 32)]
    a = sum(h * w for h, w in shapes)
    return HeadOutput(
        box_logits=[torch.zeros(batch, 4 * reg_max, h, w, requires_grad=True) for h, w in shapes],
        cls_logits=[torch.zeros(batch, 1, h, w, requires_grad=True) for h, w in shapes],
        coefficients=torch.zeros(batch, nm, a, requires_grad=True),
        protos=torch.zeros(batch, nm, size // 4, size // 4, requires_grad=True),
    )


def test_zero_outputs_give_log2_mask_and_cls_terms() -> None:
    out = _outputs(batch=2)
    boxes = torch.tensor([[8.0, 8.0, 40.0, 40.0], [16.0, 0.0, 64.0, 24.0]])
    masks = torch.rand(2, 16, 16)
    loss = SegmentationLoss(reg_max=16, strides=(8, 16, 32))(out, boxes, torch.tensor([0, 1]), masks)
    box, mask, cls, dfl = loss.items.tolist()
    # Logit 0: BCE = log 2 for every pixel whatever the target; summed over the box / its area = log 2.
    assert mask == pytest.approx(7.5 * math.log(2), rel=1e-5)
    # Uniform DFL bins: log(16) per side, and the weights cancel with the normaliser.
    assert dfl == pytest.approx(1.5 * math.log(16), rel=1e-5)
    assert box > 0 and cls > 0
    assert loss.total.item() == pytest.approx(2 * sum(loss.items.tolist()), rel=1e-6)


def test_image_without_objects_only_pays_classification() -> None:
    out = _outputs(batch=1)
    loss = SegmentationLoss(reg_max=16)(
        out, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), torch.zeros(0, 16, 16)
    )
    box, mask, cls, dfl = loss.items.tolist()
    assert box == mask == dfl == 0.0
    a = 8 * 8 + 4 * 4 + 2 * 2
    assert cls == pytest.approx(0.5 * a * math.log(2), rel=1e-5)  # score sum clamps to 1


def test_loss_backpropagates_into_every_head_branch() -> None:
    torch.manual_seed(0)
    model = build_model("n")
    model.train()
    out = model(torch.rand(2, 3, 64, 64))
    boxes = torch.tensor([[4.0, 4.0, 40.0, 30.0], [10.0, 20.0, 60.0, 60.0], [0.0, 0.0, 20.0, 20.0]])
    masks = torch.zeros(3, 16, 16)
    masks[0, 1:8, 1:10] = 1
    masks[1, 5:15, 3:15] = 1
    masks[2, :5, :5] = 1
    loss = SegmentationLoss(reg_max=16)(out, boxes, torch.tensor([0, 0, 1]), masks)
    assert torch.isfinite(loss.total) and all(v > 0 for v in loss.items.tolist())
    loss.total.backward()
    for name in ("box_branch", "cls_branch", "coef_branch", "proto"):
        grads = [p.grad for p in getattr(model.head, name).parameters()]
        assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0, name
