"""Parity with ultralytics on checkpoints that ultralytics itself builds and saves.

The reference runs in its own process (tests/reference/ultra_ref.py). fastsam runs in another process
in which importing ultralytics raises (tests/reference/ours_run.py).

Two references per case:
* ``orig_*``: the ORIGINAL FastSAM pipeline rebuilt from ultralytics' ops (its NMS, scale_boxes,
  process_mask_native / crop_mask), with the original's border snap and full-image box applied in the
  input frame *before* masks are assembled, and empty masks kept. Today's ultralytics departs from
  the original on both points (it applies the rule to the reported boxes after the masks exist, and
  drops empty masks), and in its non-retina path (it crops after upsampling; the original crops
  the prototype-resolution logits first). We follow the original, so this is the exact reference.
* ``ul_*``: ultralytics' own ``FastSAM(...).predict`` as shipped, compared where the two agree by
  design (detections whose box the border rule does not touch).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import REFERENCE, run_script

pytestmark = [pytest.mark.parity, pytest.mark.slow]

CASES = {
    # name: (checkpoint, image, imgsz, retina)
    "s-zidane-1024": ("FastSAM-s.pt", "zidane.jpg", 1024, True),
    "s-bus-640": ("FastSAM-s.pt", "bus.jpg", 640, True),
    "s-zidane-640-lowres": ("FastSAM-s.pt", "zidane.jpg", 640, False),
    "x-bus-640": ("FastSAM-x.pt", "bus.jpg", 640, True),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request, ultra_ckpts: Path, ultra_assets: Path, tmp_path_factory):
    ckpt, image, imgsz, retina = CASES[request.param]
    tmp = tmp_path_factory.mktemp(request.param)
    flags = ["--imgsz", str(imgsz), "--conf", "0.4", "--iou", "0.9"] + ([] if retina else ["--no-retina"])
    ref, ours = tmp / "ref.npz", tmp / "ours.npz"
    args = [str(ultra_ckpts / ckpt), str(ultra_assets / image)]
    run_script([str(REFERENCE / "ultra_ref.py"), "run", *args, str(ref), *flags], tmp)
    run_script([str(REFERENCE / "ours_run.py"), *args, str(ref), str(ours), *flags], tmp)
    r, o = dict(np.load(ref)), dict(np.load(ours))
    _h, w = (int(v) for v in o["image_size"])
    for tag in ("plain", "fused"):
        o[f"{tag}_masks"] = np.unpackbits(o[f"{tag}_masks"], axis=-1, count=w).astype(bool)
    return request.param, retina, r, o


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, H, W) x (M, H, W) bool -> (N, M) mask IoU (empty vs empty counts as 1)."""
    fa, fb = a.reshape(len(a), -1).astype(np.float32), b.reshape(len(b), -1).astype(np.float32)
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def _match(boxes_a, masks_a, boxes_b, masks_b):
    """Greedy one-to-one matching by mask IoU; ties in score may reorder detections."""
    iou = _iou(masks_a, masks_b)
    iou = np.where(np.abs(boxes_a[:, None, :] - boxes_b[None, :, :]).max(-1) <= 2.0, iou, -1)
    pairs, used = [], set()
    for i in np.argsort(-iou.max(1)):
        for j in np.argsort(-iou[i]):
            if j not in used and iou[i, j] >= 0:
                used.add(j)
                pairs.append((i, j, iou[i, j]))
                break
    return pairs


def _to_original_frame(masks_in: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """The documented mapping of the non-retina path: each original pixel centre samples the nearest
    pixel of the letterboxed input mask, padding removed (letterbox pads evenly)."""
    h0, w0 = image_size
    h_in, w_in = masks_in.shape[1:]
    r = min(h_in / h0, w_in / w0)
    rh, rw = round(h0 * r), round(w0 * r)
    top, left = round((h_in - rh) / 2 - 0.1), round((w_in - rw) / 2 - 0.1)
    ys = np.minimum(np.floor((np.arange(h0) + 0.5) * rh / h0).astype(int), rh - 1) + top
    xs = np.minimum(np.floor((np.arange(w0) + 0.5) * rw / w0).astype(int), rw - 1) + left
    return masks_in[:, ys][:, :, xs]


def test_raw_head_outputs_match(case):
    """Decoded head (boxes, scores, coefficients) and prototypes agree to 1e-4 relative error, for
    the plain network and for the BatchNorm-fused one (each against ultralytics' own)."""
    _, _, r, o = case
    # plain: bit-identical in practice; fused: the two BN folds differ in the last bit of a few
    # weights, which a deep random network amplifies to ~1e-4
    for tag, suffix, tol in (("plain", "", 1e-5), ("fused", "_fused", 1e-3)):
        for key in ("head", "protos"):
            ref, ours = r[key + suffix], o[f"{tag}_{key}"]
            assert ours.shape == ref.shape
            rel = np.linalg.norm(ours - ref) / np.linalg.norm(ref)
            assert rel <= tol, f"{tag} {key}: relative error {rel:.2e}"


def test_everything_mode_matches_original_pipeline(case):
    """Same detections and masks as the original pipeline (rebuilt from ultralytics' ops)."""
    name, retina, r, o = case
    ref_masks = r["orig_masks"] if retina else _to_original_frame(r["orig_masks"], tuple(o["image_size"]))
    n = len(r["orig_scores"])
    assert n >= 50, f"{name}: the random checkpoint should give many masks, got {n}"
    assert len(o["plain_scores"]) == n
    np.testing.assert_allclose(o["plain_scores"], r["orig_scores"], rtol=1e-5)
    pairs = _match(o["plain_boxes"], o["plain_masks"], r["orig_boxes"], ref_masks)
    assert len(pairs) == n
    ious = np.array([p[2] for p in pairs])
    box_err = max(np.abs(o["plain_boxes"][i] - r["orig_boxes"][j]).max() for i, j, _ in pairs)
    assert ious.min() >= 0.99, f"{name}: worst mask IoU {ious.min():.4f}"
    assert box_err <= 1.0, f"{name}: box error {box_err:.3f} px"


def test_fused_model_matches_original_pipeline(case):
    """The default (BatchNorm-fused) network gives the same masks up to near-tied scores."""
    name, retina, r, o = case
    ref_masks = r["orig_masks"] if retina else _to_original_frame(r["orig_masks"], tuple(o["image_size"]))
    n = len(r["orig_scores"])
    assert abs(len(o["fused_scores"]) - n) <= 1
    pairs = _match(o["fused_boxes"], o["fused_masks"], r["orig_boxes"], ref_masks)
    # fusing changes scores by ~1e-5, which can swap near-tied detections at the max_det cut
    assert len(pairs) >= 0.99 * n
    ious = np.array([p[2] for p in pairs])
    if retina:
        assert np.mean(ious >= 0.99) >= 0.99, f"{name}: {np.sum(ious < 0.99)} masks below IoU 0.99"
    else:
        # The low-resolution path crops at prototype resolution (8 original pixels here). With these
        # random weights the DFL bins are nearly one-hot, so many box edges fall exactly on a
        # prototype pixel boundary, where fusing's ~1e-5 change can move the crop by a whole column
        # (the original has the same discontinuity); the plain network above is exact.
        assert ious.min() >= 0.9 and np.mean(ious >= 0.99) >= 0.95, f"{name}: worst IoU {ious.min():.3f}"


def test_matches_ultralytics_predictor_where_rules_agree(case):
    """Against ultralytics' shipped FastSAM predictor: every detection it returns is ours, with the
    same score; away from the image border (where its border rule only edits boxes afterwards) the
    masks agree to IoU >= 0.99 and boxes to 1 px. ultralytics drops empty masks; we keep them."""
    name, retina, r, o = case
    if not retina:
        pytest.xfail(
            "today's ultralytics crops after upsampling in the low-resolution path; the original (and we) crop before"
        )
    ul_boxes, ul_masks, ul_scores = r["ul_boxes"], r["ul_masks"], r["ul_scores"]
    nonempty = o["fused_masks"].any((1, 2))
    assert abs(int(nonempty.sum()) - len(ul_scores)) <= 1
    h, w = (int(v) for v in o["image_size"])
    margin = 20 / min(r["input"].shape[2] / h, r["input"].shape[3] / w) + 1
    inner = (
        (ul_boxes[:, 0] > margin)
        & (ul_boxes[:, 1] > margin)
        & (ul_boxes[:, 2] < w - margin)
        & (ul_boxes[:, 3] < h - margin)
    )
    assert inner.sum() >= 10, f"{name}: too few detections away from the border to compare"
    pairs = _match(ul_boxes[inner], ul_masks[inner], o["fused_boxes"], o["fused_masks"])
    assert len(pairs) >= inner.sum() - 1
    for i, j, iou in pairs:
        assert iou >= 0.99, f"{name}: mask IoU {iou:.4f}"
        assert np.abs(ul_boxes[inner][i] - o["fused_boxes"][j]).max() <= 1.0
        assert abs(ul_scores[inner][i] - o["fused_scores"][j]) <= 1e-3
