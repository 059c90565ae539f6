"""The tracker (Segments in, ids out): mask IoU from crops, Hungarian association, birth rules,
max age, re-identification with motion, and its config's checks."""

from __future__ import annotations

import numpy as np
import pytest

from fastsam.errors import FastSAMError
from fastsam.ops.crop_iou import crop_iou
from fastsam.results import Segments
from fastsam.track import Tracker, TrackerConfig, associate
from fastsam.video import track_colors

H, W = 120, 160


def rect(x: int, y: int, w: int, h: int) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[max(0, y) : max(0, y + h), max(0, x) : max(0, x + w)] = True
    return m


def frame(*masks: np.ndarray, scores: list[float] | None = None) -> Segments:
    s = np.array(scores if scores is not None else [0.9] * len(masks), np.float32)
    if not masks:
        return Segments.empty((H, W))
    return Segments.from_masks(np.stack(masks), s)


def dense_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    inter = (a[:, None] & b[None]).sum((2, 3))
    union = (a[:, None] | b[None]).sum((2, 3))
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def test_crop_iou_equals_dense_iou_and_prunes_only_impossible_pairs() -> None:
    rng = np.random.default_rng(0)
    masks = []
    for _ in range(12):
        x, y = rng.integers(0, W - 30), rng.integers(0, H - 30)
        m = rect(int(x), int(y), int(rng.integers(5, 40)), int(rng.integers(5, 40)))
        m &= rng.random((H, W)) < 0.8  # holes: the crop is not full
        masks.append(m)
    seg = frame(*masks[:6])
    other = Segments.from_masks(np.stack(masks[6:]), np.ones(6))
    want = dense_iou(seg.masks, other.masks)
    got = crop_iou(seg.regions, seg.crops, seg.areas, other.regions, other.crops, other.areas)
    np.testing.assert_allclose(got, want, atol=1e-12)
    self_iou = crop_iou(seg.regions, seg.crops, seg.areas, seg.regions, seg.crops, seg.areas)
    np.testing.assert_allclose(np.diag(self_iou), 1.0)
    pruned = crop_iou(seg.regions, seg.crops, seg.areas, other.regions, other.crops, other.areas, min_iou=0.3)
    np.testing.assert_allclose(pruned[want >= 0.3], want[want >= 0.3])  # nothing that matters is dropped
    assert (pruned[want < 0.3] <= want[want < 0.3]).all()


def test_crop_iou_of_a_shifted_region_reaching_outside_the_image() -> None:
    seg = frame(rect(0, 0, 20, 20))
    shifted = seg.regions + np.array([-10, -10, -10, -10])  # the mask moved up-left, half outside
    iou = crop_iou(shifted, seg.crops, seg.areas, frame(rect(0, 0, 10, 10)).regions, [np.ones((10, 10), bool)], [100])
    assert iou[0, 0] == pytest.approx(100 / 400)


def greedy(iou: np.ndarray, min_iou: float) -> list[tuple[int, int]]:
    """Greedy association (largest IoU first), the usual shortcut the Hungarian algorithm beats."""
    pairs, rows, cols = [], set(), set()
    for flat in np.argsort(-iou, axis=None):
        r, c = np.unravel_index(flat, iou.shape)
        if r not in rows and c not in cols and iou[r, c] >= min_iou:
            pairs.append((int(r), int(c)))
            rows.add(r)
            cols.add(c)
    return sorted(pairs)


def test_hungarian_beats_greedy_on_a_crafted_case() -> None:
    iou = np.array([[0.9, 0.8], [0.8, 0.1]])
    assert greedy(iou, 0.3) == [(0, 0)]  # greedy takes 0.9 and leaves track 1 unmatched
    assert associate(iou, 0.3) == [(0, 1), (1, 0)]  # optimal: both matched, total 1.6
    assert associate(np.array([[0.2, 0.1]]), 0.3) == []
    assert associate(np.zeros((0, 3)), 0.3) == []


def test_tracker_uses_the_optimal_assignment() -> None:
    # two tracks A (wide) and B; in the next frame mask X overlaps A most, but also B, and mask Y
    # overlaps only A: greedy would give A->X and lose B; the optimal assignment is A->Y, B->X.
    a, b = rect(0, 0, 60, 20), rect(40, 0, 30, 20)
    tracker = Tracker(TrackerConfig(birth_overlap=1.0, momentum=0.0))
    ids0 = tracker.update(frame(a, b))
    x, y = rect(10, 0, 55, 20), rect(0, 0, 30, 20)
    iou = crop_iou(*_parts(frame(a, b)), *_parts(frame(x, y)))
    assert iou[0, 0] > iou[0, 1] > 0.3 and iou[1, 0] > 0.3 and iou[1, 1] == 0
    assert greedy(iou, 0.3) == [(0, 0)]
    ids1 = tracker.update(frame(x, y))
    assert ids1.tolist() == [ids0[1], ids0[0]]


def _parts(seg: Segments) -> tuple[np.ndarray, tuple[np.ndarray, ...], np.ndarray]:
    return seg.regions, seg.crops, seg.areas


def test_ids_persist_across_frames_whatever_the_mask_order() -> None:
    tracker = Tracker()
    ids = tracker.update(frame(rect(10, 10, 30, 30), rect(100, 50, 30, 30)))
    assert ids.tolist() == [1, 2]
    for t in range(1, 6):  # both move 3 px per frame; the masks come in swapped order
        ids = tracker.update(frame(rect(100 - 3 * t, 50, 30, 30), rect(10 + 3 * t, 10, 30, 30)))
        assert ids.tolist() == [2, 1]
    assert tracker.track_ids == [1, 2]


def test_birth_needs_score_area_and_no_duplicate_of_a_tracked_mask() -> None:
    cfg = TrackerConfig(birth_score=0.5, birth_area=100, birth_overlap=0.7)
    tracker = Tracker(cfg)
    big, small, faint = rect(10, 10, 30, 30), rect(100, 10, 8, 8), rect(100, 60, 30, 30)
    duplicate = rect(10, 10, 30, 26)  # IoU 0.87 with `big`
    ids = tracker.update(frame(big, duplicate, small, faint, scores=[0.9, 0.8, 0.9, 0.3]))
    assert ids.tolist() == [1, -1, -1, -1]
    part = rect(10, 10, 30, 12)  # IoU 0.4 with `big`: a part of it is a new object
    assert tracker.update(frame(big, part, scores=[0.9, 0.8])).tolist() == [1, 2]
    with pytest.raises(FastSAMError, match="birth_overlap"):
        TrackerConfig(birth_overlap=0)


def test_lost_tracks_are_reidentified_within_max_age_then_forgotten() -> None:
    tracker = Tracker(TrackerConfig(max_age=3))
    obj = rect(50, 50, 30, 30)
    assert tracker.update(frame(obj)).tolist() == [1]
    assert tracker.update(frame(obj)).tolist() == [1]  # seen twice: min_hits, kept while unseen
    for _ in range(3):  # unseen for max_age frames
        assert tracker.update(frame()).tolist() == []
    assert tracker.update(frame(obj)).tolist() == [1]  # re-identified
    for _ in range(4):  # unseen for max_age + 1 frames: forgotten
        tracker.update(frame())
    assert tracker.track_ids == []
    assert tracker.update(frame(obj)).tolist() == [2]  # a new id; ids are never reused
    assert tracker.update(frame()).tolist() == []  # track 2 was seen once: forgotten when lost
    assert tracker.track_ids == []


def test_reidentification_follows_the_motion_while_unseen() -> None:
    tracker = Tracker(TrackerConfig(max_age=5))
    for t in range(4):  # 8 px per frame to the right
        assert tracker.update(frame(rect(10 + 8 * t, 40, 20, 20))).tolist() == [1]
    for _ in range(3):  # hidden for 3 frames
        tracker.update(frame())
    # it reappears 32 px from where it was last seen: no overlap with the old mask, but with the prediction
    assert not (rect(34, 40, 20, 20) & rect(66, 40, 20, 20)).any()
    assert tracker.update(frame(rect(66, 40, 20, 20))).tolist() == [1]
    still = Tracker(TrackerConfig(max_age=5, momentum=0.0))  # no motion model: a new track
    for t in range(4):
        still.update(frame(rect(10 + 8 * t, 40, 20, 20)))
    for _ in range(3):
        still.update(frame())
    assert still.update(frame(rect(66, 40, 20, 20))).tolist() == [2]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"match_iou": 1.5}, "match_iou"),
        ({"momentum": -0.1}, "momentum"),
        ({"max_age": -1}, "max_age"),
        ({"min_hits": 0}, "min_hits"),
        ({"birth_score": float("nan")}, "birth_score"),
    ],
)
def test_tracker_config_refuses_bad_values(kwargs: dict, message: str) -> None:
    with pytest.raises(FastSAMError, match=message):
        TrackerConfig(**kwargs)


def test_track_colours_are_fixed_per_id_and_differ_between_ids() -> None:
    ids = np.arange(1, 65)
    a, b = track_colors(ids), track_colors(ids[::-1])[::-1]
    assert a.shape == (64, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)  # a colour depends on the id only, not on its position
    assert len({tuple(c) for c in a}) == 64
    assert a.min() >= 32


def test_mask_iou_estimates_large_masks_on_a_grid_and_keeps_small_ones_exact() -> None:
    from fastsam.ops.crop_iou import mask_iou

    rng = np.random.default_rng(1)
    h, w = 720, 1280
    big = []
    for _ in range(8):  # large masks with a regular 8 px texture, as upsampled masks have
        m = np.zeros((h, w), bool)
        y, x = int(rng.integers(0, 400)), int(rng.integers(0, 900))
        m[y : y + 300, x : x + 360] = True
        m[y : y + 300 : 8, :] = False
        big.append(m)
    small = np.zeros((h, w), bool)
    small[10:30, 10:30] = True
    a = Segments.from_masks(np.stack([*big[:4], small]), np.ones(5))
    b = Segments.from_masks(np.stack([*big[4:], small]), np.ones(5))
    want = dense_iou(a.masks, b.masks)
    got = mask_iou(a.regions, a.crops, a.areas, b.regions, b.crops, b.areas, frame_size=(h, w), cache={})
    assert np.abs(got - want).max() < 0.03  # grid estimate for the large pairs
    assert got[4, 4] == 1.0  # the small pair is computed exactly


def test_mask_iou_kernels_equal_the_numpy_path(monkeypatch) -> None:
    """The C kernels (exact pairs, grid samples) give the numpy fallback's numbers exactly, for
    regions reaching outside the frame and for non-contiguous crops."""
    from fastsam.ops import _native
    from fastsam.ops.crop_iou import crop_iou, mask_iou

    assert _native.available(), "the C kernel is not built (pip install -e . needs a C compiler)"
    rng = np.random.default_rng(5)
    masks = rng.random((24, H, W)) < 0.02
    for k, m in enumerate(masks):  # blobs of all sizes, some at the borders
        y, x, s = int(rng.integers(-20, H)), int(rng.integers(-20, W)), int(rng.integers(3, 90))
        m[max(0, y) : max(0, y + s), max(0, x) : max(0, x + s + k)] = True
    seg = Segments.from_masks(masks, np.ones(len(masks)))
    shifted = seg.regions + np.array([-7, -7, 5, 5])  # predicted regions partly outside the frame
    strided = [np.asarray(c)[:, ::1].T.copy().T for c in seg.crops]  # Fortran-ordered: not C-contiguous
    args = (seg.regions[:12], strided[:12], seg.areas[:12], shifted[12:], seg.crops[12:], seg.areas[12:])
    got = {}
    for native in ("1", "0"):
        monkeypatch.setenv("FASTSAM_NATIVE", native)
        got[native] = (crop_iou(*args), mask_iou(*args, frame_size=(H, W), cache={}), mask_iou(*args))
    for a, b in zip(got["1"], got["0"]):
        np.testing.assert_array_equal(a, b)
    assert (got["1"][0] > 0).sum() > 10 and (got["1"][1] > 0).sum() > 10
