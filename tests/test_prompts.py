"""Point and box selection on hand-built mask sets with hand-computed answers."""

from __future__ import annotations

import numpy as np
import pytest

from fastsam import FastSAMError, Segments, select_by_boxes, select_by_points
from fastsam.prompts import box_mask_iou

H, W = 40, 60


def rect(y0, y1, x0, x1):
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


@pytest.fixture()
def seg():
    """0: big background-ish rect, 1: medium rect inside 0, 2: small rect inside 1 (nested),
    3: rect overlapping 0's right edge, 4: an empty mask. Scores descend with the index."""
    masks = np.stack(
        [
            rect(0, 30, 0, 40),  # area 1200
            rect(5, 25, 5, 30),  # area 500, inside 0
            rect(10, 15, 10, 15),  # area 25, inside 1
            rect(20, 40, 35, 60),  # area 500, overlaps 0 at rows 20-30, cols 35-40
            np.zeros((H, W), bool),
        ]
    )
    return Segments.from_masks(masks, scores=np.array([0.9, 0.8, 0.7, 0.6, 0.5]))


def test_point_in_nested_masks_merges_all_containing(seg):
    """Original rule: every mask containing the positive point is painted (largest first)."""
    sel = select_by_points(seg, [[12, 12]], [1])
    assert sel.indices.tolist() == [0, 1, 2]
    assert np.array_equal(sel.mask, seg.mask(0) | seg.mask(1) | seg.mask(2))


def test_background_point_in_smaller_mask_cuts_it_out(seg):
    """A negative point inside mask 2 (and thus 1 and 0) with a positive point in 0 only: the
    negative label is painted over masks 0, 1, 2 in area order, so nothing of them survives, except
    that the positive point's mask 0 is repainted... by the last point's label per mask."""
    # positive at (2, 2) is inside mask 0 only; negative at (12, 12) is inside 0, 1, 2.
    sel = select_by_points(seg, [[2, 2], [12, 12]], [1, 0])
    # mask 0's last point is the negative one -> all cleared
    assert not sel.mask.any() and sel.indices.size == 0
    # order matters (the original loops points in order): positive last wins for mask 0
    sel = select_by_points(seg, [[12, 12], [2, 2]], [0, 1])
    expected = seg.mask(0) & ~seg.mask(1)  # 0 painted 1, then 1 and 2 (smaller) painted 0
    assert np.array_equal(sel.mask, expected) and sel.indices.tolist() == [0]


def test_smaller_mask_wins_conflicts(seg):
    """Positive point in the small mask 2, negative point in mask 1 outside mask 2."""
    sel = select_by_points(seg, [[12, 12], [7, 7]], [1, 0])
    # mask 0: last point inside it is (7,7) label 0; mask 1: (7,7) -> 0; mask 2: (12,12) -> 1
    assert np.array_equal(sel.mask, seg.mask(2)) and sel.indices.tolist() == [2]


def test_point_outside_every_mask_selects_nothing(seg):
    sel = select_by_points(seg, [[55, 2]], [1])
    assert sel.indices.size == 0 and not sel.mask.any()


def test_individual_mode_ultralytics_rule(seg):
    sel = select_by_points(seg, [[12, 12], [37, 25]], [1, 1], mode="individual")
    assert sel.indices.tolist() == [0, 1, 2, 3]
    sel = select_by_points(seg, [[37, 25]], [0], mode="individual")  # all negative: start from all
    assert sel.indices.tolist() == [1, 2, 4]


def test_closing_fills_small_gaps():
    m = rect(5, 20, 5, 30)
    m[10:12, 5:30] = False  # a 2-px gap splits the mask
    seg = Segments.from_masks(m[None], np.array([0.9]))
    closed = select_by_points(seg, [[6, 6]], close_kernel=5).mask
    assert closed[10:12, 10:25].all() and not select_by_points(seg, [[6, 6]]).mask[10:12, 10:25].any()


def test_box_picks_highest_iou_in_given_order(seg):
    boxes = [[35, 20, 60, 40], [5, 5, 30, 25], [10, 10, 15, 15], [0, 0, 40, 30]]
    assert select_by_boxes(seg, boxes).tolist() == [3, 1, 2, 0]


def test_box_iou_hand_computed(seg):
    iou = box_mask_iou(seg, np.array([0.0, 0.0, 30.0, 20.0]))
    # mask 0: inter 600, union 600 + 1200 - 600 = 1200 -> 0.5; mask 1: inter 15*25=375, union 600+500-375
    assert iou[0] == pytest.approx(0.5)
    assert iou[1] == pytest.approx(375 / 725)
    assert iou[2] == pytest.approx(25 / 600) and iou[3] == 0 and iou[4] == 0


def test_box_touching_no_mask_gives_minus_one(seg):
    assert select_by_boxes(seg, [[45, 2, 58, 15]]).tolist() == [-1]


@pytest.mark.parametrize(
    "points,labels,message",
    [
        ([[60, 5]], [1], "outside"),
        ([[-1, 5]], [1], "outside"),
        ([[5, 40]], [1], "outside"),
        ([], [], "no points"),
        ([[1, 1], [2, 2]], [1], "2 points but 1 labels"),
        ([[1, 1]], [2], "labels must be 1"),
        ([[1, 2, 3]], [1], "pairs"),
    ],
)
def test_bad_points_raise(seg, points, labels, message):
    with pytest.raises(FastSAMError, match=message):
        select_by_points(seg, points, labels)


@pytest.mark.parametrize(
    "boxes,message",
    [
        ([[61, 0, 70, 10]], "outside"),
        ([[-9, -9, 0, 5]], "outside"),
        ([[10, 10, 5, 20]], "empty"),
        ([], "no boxes"),
        ([[1, 2, 3]], "x1, y1, x2, y2"),
    ],
)
def test_bad_boxes_raise(seg, boxes, message):
    with pytest.raises(FastSAMError, match=message):
        select_by_boxes(seg, boxes)


def test_combined_prompts_are_a_union(seg):
    from fastsam import select

    assert select(seg).tolist() == [0, 1, 2, 3, 4]  # no prompt: everything
    assert select(seg, points=[[12, 12]], labels=[1]).tolist() == [0, 1, 2]
    assert select(seg, points=[[12, 12]], boxes=[[35, 20, 60, 40]]).tolist() == [0, 1, 2, 3]
    assert select(seg, boxes=[[35, 20, 60, 40], [45, 2, 58, 15]]).tolist() == [3]  # the box on no mask adds nothing
    with pytest.raises(FastSAMError, match="scorer"):
        select(seg, texts=["a dog"])
