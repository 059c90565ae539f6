"""Letterbox geometry, NMS, and in-box mask assembly against dense references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

from fastsam.ops import _native
from fastsam.ops.boxes import box_iou, nms_first_k, snap_and_expand_full_boxes
from fastsam.ops.letterbox import Letterbox, letterbox
from fastsam.ops.masks import _threshold_window, assemble_input_frame, assemble_retina, bilinear_table


@pytest.mark.parametrize(
    "hw,imgsz,input_size,resized,pad",
    [
        ((720, 1280), 1024, (576, 1024), (576, 1024), (0, 0)),
        ((1080, 810), 640, (640, 480), (640, 480), (0, 0)),
        ((720, 1280), 640, (384, 640), (360, 640), (12, 0)),
        ((37, 100), 64, (32, 64), (24, 64), (4, 0)),  # r = 0.64: 23.68 rounds to 24, pad 8 split 4/4
        ((603, 1072), 1024, (576, 1024), (576, 1024), (0, 0)),  # the original's dogs.jpg example
    ],
)
def test_letterbox_geometry(hw, imgsz, input_size, resized, pad):
    img = np.full((*hw, 3), 200, np.uint8)
    x, geom = letterbox(img, imgsz)
    assert tuple(x.shape) == (1, 3, *input_size)
    assert geom.input_size == input_size and geom.resized == resized and geom.pad == pad
    top = pad[0]
    if top:  # padding rows hold 114/255, image rows 200/255
        assert torch.allclose(x[0, :, :top], torch.tensor(114 / 255))
        assert torch.allclose(x[0, :, top : top + resized[0]], torch.tensor(200 / 255))


def test_boxes_to_original_inverts_letterbox():
    geom = Letterbox((720, 1280), (384, 640), (360, 640), (12, 0))
    boxes_in = torch.tensor([[10.0, 12.0, 330.0, 200.0], [0.0, 0.0, 640.0, 384.0]])
    out = geom.boxes_to_original(boxes_in)
    assert torch.allclose(out[0], torch.tensor([20.0, 0.0, 660.0, 376.0]))
    assert out[1].tolist() == [0.0, 0.0, 1280.0, 720.0]  # clipped to the image


@pytest.mark.parametrize("kernel", ["native", "torchvision"])
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("iou", [0.5, 0.9])
def test_nms_first_k_equals_torchvision(seed, iou, kernel, monkeypatch):
    """Both NMS paths (the C kernel, and torchvision on growing candidate sets) keep exactly what
    torchvision keeps, in its order, including among tied scores and duplicate boxes."""
    if kernel == "native":
        assert _native.available(), "the C kernel is not built (pip install -e . needs a C compiler)"
    else:
        monkeypatch.setenv("FASTSAM_NATIVE", "0")
    g = torch.Generator().manual_seed(seed)
    n = 3000
    xy = torch.rand(n, 2, generator=g) * 500
    wh = torch.rand(n, 2, generator=g) * 120 + 5
    boxes = torch.cat((xy, xy + wh), 1)
    boxes[::50] = boxes[1::50]  # exact duplicates (IoU 1)
    scores = torch.rand(n, generator=g)
    scores[::7] = scores[3::7][: scores[::7].numel()]  # ties: stable order decides
    scores = (scores * 64).round() / 64  # many more ties
    full = torchvision.ops.nms(boxes, scores, iou)
    for k in (1, 7, 300, 5000):
        assert torch.equal(nms_first_k(boxes, scores, iou, k), full[:k])


def test_native_nms_edge_cases():
    assert _native.available(), "the C kernel is not built (pip install -e . needs a C compiler)"
    assert _native.nms_sorted(np.zeros((0, 4), np.float32), 0.5, 10).tolist() == []
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 10, 9]], np.float32)
    assert _native.nms_sorted(boxes, 0.5, 10).tolist() == [0, 2]  # 1 and 3 overlap box 0
    assert _native.nms_sorted(boxes, 0.95, 10).tolist() == [0, 2, 3]  # IoU(0, 3) = 0.9 is kept
    assert _native.nms_sorted(boxes, 0.5, 1).tolist() == [0]
    assert _native.nms_sorted(boxes, 0.5, 0).tolist() == []
    with pytest.raises(ValueError, match="must be"):
        _native.nms_sorted(np.zeros((3, 5), np.float32), 0.5, 1)


def test_full_box_rule():
    boxes = torch.tensor(
        [
            [15.0, 10.0, 630.0, 370.0],  # snaps to the frame, IoU 1 -> frame
            [5.0, 30.0, 600.0, 380.0],  # x1 and y2 snap; IoU (600*354)/(640*384) = 0.864 -> stays
            [100.0, 100.0, 200.0, 200.0],  # untouched
            [2.0, 3.0, 639.0, 360.0],  # IoU 0.9375 after snapping -> frame (a second full box)
        ]
    )
    out = snap_and_expand_full_boxes(boxes, (384, 640))
    assert out[0].tolist() == [0.0, 0.0, 640.0, 384.0]
    assert out[1].tolist() == [0.0, 30.0, 600.0, 384.0]
    assert out[2].tolist() == [100.0, 100.0, 200.0, 200.0]
    assert out[3].tolist() == [0.0, 0.0, 640.0, 384.0]
    assert boxes[0, 0] == 15.0  # input not modified


def test_box_iou_hand_values():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    b = torch.tensor([[5.0, 0.0, 15.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    assert torch.allclose(box_iou(a, b), torch.tensor([[50 / 150, 0.0]]), atol=1e-6)


def test_bilinear_table_reproduces_interpolate():
    src = torch.randn(1, 1, 7, 11)
    for out_h, out_w in ((30, 41), (7, 11), (3, 5)):
        ref = F.interpolate(src, (out_h, out_w), mode="bilinear", align_corners=False)[0, 0].numpy()
        rt, ct = bilinear_table(7, out_h), bilinear_table(11, out_w)
        s = src[0, 0].numpy()
        across = s[:, ct.i0] * ct.w0 + s[:, ct.i1] * ct.w1
        ours = across[rt.i0] * rt.w0[:, None] + across[rt.i1] * rt.w1[:, None]
        assert np.allclose(ours, ref, atol=1e-5)


def _random_case(seed: int, n: int = 40):
    g = torch.Generator().manual_seed(seed)
    protos = torch.randn(8, 24, 40, generator=g)
    protos = F.avg_pool2d(protos[None], 3, 1, 1)[0] * 4  # smooth, like real prototypes
    coef = torch.randn(n, 8, generator=g)
    xy = torch.rand(n, 2, generator=g) * torch.tensor([150.0, 80.0])
    wh = torch.rand(n, 2, generator=g) * torch.tensor([120.0, 70.0]) + 1
    return protos, coef, torch.cat((xy, xy + wh), 1)


@pytest.mark.parametrize("seed", range(3))
def test_retina_masks_equal_dense_reference(seed):
    """Dense reference = the original's process: cut padding, upsample all, crop by box, > 0."""
    protos, coef, boxes_in = _random_case(seed)
    geom = Letterbox((90, 150), (96, 160), (90, 150), (3, 5))
    boxes = geom.boxes_to_original(boxes_in)
    crops = assemble_retina(protos, coef, boxes, geom)
    logits = (coef @ protos.view(8, -1)).view(-1, 24, 40)
    gain = min(24 / 90, 40 / 150)
    pw, ph = (40 - 150 * gain) / 2, (24 - 90 * gain) / 2
    cut = logits[:, int(ph) : int(24 - ph), int(pw) : int(40 - pw)]
    up = F.interpolate(cut[None], (90, 150), mode="bilinear", align_corners=False)[0]
    cols, rows = torch.arange(150.0), torch.arange(90.0)
    inside = (
        (cols[None, None] >= boxes[:, 0, None, None])
        & (cols[None, None] < boxes[:, 2, None, None])
        & (rows[None, :, None] >= boxes[:, 1, None, None])
        & (rows[None, :, None] < boxes[:, 3, None, None])
    )
    dense = ((up > 0) & inside).numpy()
    ours = np.zeros_like(dense)
    for k, (crop, (r0, r1, c0, c1)) in enumerate(zip(crops.crops, crops.regions)):
        ours[k, r0:r1, c0:c1] = crop
    assert (ours != dense).sum() <= 2  # float rounding at logits ~ 0
    hi = ((up > 1) & inside).sum((1, 2)).float()
    lo = ((up > -1) & inside).sum((1, 2)).float()
    expected = torch.where(lo > 0, hi / lo.clamp(min=1), torch.zeros_like(lo)).numpy()
    assert np.allclose(crops.stability, expected, atol=1e-3)


def test_low_resolution_masks_equal_dense_reference():
    """Original non-retina path: crop at prototype resolution, upsample to the input, > 0; then our
    documented nearest sampling to the original frame."""
    protos, coef, boxes_in = _random_case(5)
    geom = Letterbox((45, 75), (96, 160), (90, 150), (3, 5))
    crops = assemble_input_frame(protos, coef, boxes_in, geom)
    logits = (coef @ protos.view(8, -1)).view(-1, 24, 40)
    pb = boxes_in * torch.tensor([40 / 160, 24 / 96, 40 / 160, 24 / 96])
    c, r = torch.arange(40.0), torch.arange(24.0)
    keep = (
        (c[None, None] >= pb[:, 0, None, None])
        & (c[None, None] < pb[:, 2, None, None])
        & (r[None, :, None] >= pb[:, 1, None, None])
        & (r[None, :, None] < pb[:, 3, None, None])
    )
    up = F.interpolate((logits * keep)[None], (96, 160), mode="bilinear", align_corners=False)[0] > 0
    ys = np.minimum(np.floor((np.arange(45) + 0.5) * 90 / 45).astype(int), 89) + 3
    xs = np.minimum(np.floor((np.arange(75) + 0.5) * 150 / 75).astype(int), 149) + 5
    dense = up.numpy()[:, ys][:, :, xs]
    ours = np.zeros_like(dense)
    for k, (crop, (r0, r1, c0, c1)) in enumerate(zip(crops.crops, crops.regions)):
        ours[k, r0:r1, c0:c1] = crop
    assert (ours != dense).sum() <= 2


def test_stability_of_constant_logits():
    protos = torch.ones(1, 8, 8)
    geom = Letterbox((32, 32), (32, 32), (32, 32), (0, 0))
    box = torch.tensor([[4.0, 4.0, 20.0, 12.0]])
    for value, stability in ((2.0, 1.0), (0.5, 0.0)):
        crops = assemble_retina(protos, torch.tensor([[value]]), box, geom)
        assert crops.crops[0].shape == (8, 16) and crops.crops[0].all()
        assert crops.stability[0] == pytest.approx(stability)


@pytest.mark.parametrize("kernel", ["numpy", "native"])
def test_region_kernels_are_bit_exact_separable_bilinear(kernel):
    """Both region kernels (numpy, and the compiled one .ci/run builds) compute exactly, to the last
    bit, w0 * src[:, i0] + w1 * src[:, i1] along x, then the same along y: masks and stability
    counts must equal that plain formula's, not just be close."""
    rng = np.random.default_rng(3)
    logits = (rng.standard_normal((24, 40)) * 3).astype(np.float32)
    rt, ct = bilinear_table(24, 90), bilinear_table(40, 150)
    regions = [(11, 77, 7, 131), (0, 90, 0, 150), (40, 41, 149, 150), (3, 9, 60, 61)]
    windows, origins = [], []
    for r0, r1, c0, c1 in regions:
        ia, ib, ja, jb = rt.i0[r0], rt.i1[r1 - 1] + 1, ct.i0[c0], ct.i1[c1 - 1] + 1
        windows.append(np.ascontiguousarray(logits[ia:ib, ja:jb]))
        origins.append((ia, ja))
    if kernel == "native":
        assert _native.available(), "the C kernel is not built (pip install -e . needs a C compiler)"
        masks, counts = _native.threshold_windows(windows, np.array(origins), np.array(regions), rt, ct, threads=2)
    else:
        masks, counts = [], []
        for src, origin, (r0, r1, c0, c1) in zip(windows, origins, regions):
            mask, n_hi, n_lo = _threshold_window(src, origin, rt[r0:r1], ct[c0:c1])
            masks.append(mask)
            counts.append((n_hi, n_lo))
    across = logits[:, ct.i0] * ct.w0 + logits[:, ct.i1] * ct.w1
    value = across[rt.i0] * rt.w0[:, None] + across[rt.i1] * rt.w1[:, None]
    for (r0, r1, c0, c1), mask, (n_hi, n_lo) in zip(regions, masks, np.asarray(counts).tolist()):
        expected = value[r0:r1, c0:c1]
        assert mask.dtype == bool
        np.testing.assert_array_equal(mask, expected > 0)
        assert (n_hi, n_lo) == (np.count_nonzero(expected > 1), np.count_nonzero(expected > -1))
    assert 0 < masks[0].sum() < masks[0].size


def test_native_kernel_refuses_windows_that_do_not_cover_their_region():
    """The C kernel follows table indices into the window: a window one row short is refused before
    any memory is read."""
    assert _native.available(), "the C kernel is not built (pip install -e . needs a C compiler)"
    rt, ct = bilinear_table(24, 90), bilinear_table(40, 150)
    region = np.array([[11, 77, 7, 131]])
    ia, ib, ja, jb = rt.i0[11], rt.i1[76] + 1, ct.i0[7], ct.i1[130] + 1
    short = np.zeros((ib - ia - 1, jb - ja), dtype=np.float32)
    with pytest.raises(ValueError, match="does not cover"):
        _native.threshold_windows([short], np.array([[ia, ja]]), region, rt, ct)
    with pytest.raises(ValueError, match="float32"):
        _native.threshold_windows([np.zeros((ib - ia, jb - ja))], np.array([[ia, ja]]), region, rt, ct)
    with pytest.raises(ValueError, match="inside the tables"):
        _native.threshold_windows([short], np.array([[ia, ja]]), np.array([[11, 95, 7, 131]]), rt, ct)


@pytest.mark.parametrize("frame", ["retina", "input"])
def test_native_and_numpy_region_paths_agree(frame, monkeypatch):
    """The whole assembly gives identical crops and stability with and without the C kernel."""
    assert _native.available(), "the C kernel is not built (pip install -e . needs a C compiler)"
    protos, coef, boxes_in = _random_case(11, n=60)
    geom = Letterbox((90, 150), (96, 160), (90, 150), (3, 5))
    runs = []
    for setting in ("1", "0"):
        monkeypatch.setenv("FASTSAM_NATIVE", setting)
        if frame == "retina":
            runs.append(assemble_retina(protos, coef, geom.boxes_to_original(boxes_in), geom))
        else:
            runs.append(assemble_input_frame(protos, coef, boxes_in, geom))
    fast, slow = runs
    np.testing.assert_array_equal(fast.regions, slow.regions)
    np.testing.assert_array_equal(fast.stability, slow.stability)
    assert all(a.shape == b.shape and np.array_equal(a, b) for a, b in zip(fast.crops, slow.crops))
    assert sum(int(c.sum()) for c in fast.crops) > 0


def _shards_in_child() -> None:
    rt, ct = bilinear_table(24, 90), bilinear_table(40, 150)
    window = np.ones((24, 40), dtype=np.float32)
    regions = np.array([[0, 90, 0, 150], [5, 50, 10, 60]])
    masks, _ = _native.threshold_windows([window, window], np.zeros((2, 2)), regions, rt, ct, threads=2)
    raise SystemExit(0 if all(m.all() for m in masks) else 3)


def test_native_thread_pool_works_in_a_forked_child():
    """A child forked after the kernel's thread pool exists (e.g. a fork-based worker) gets a new pool
    instead of submitting to threads it does not have (which would hang)."""
    import multiprocessing

    assert _native.available(), "the C kernel is not built (pip install -e . needs a C compiler)"
    rt, ct = bilinear_table(24, 90), bilinear_table(40, 150)
    window = np.ones((24, 40), dtype=np.float32)
    _native.threshold_windows([window, window], np.zeros((2, 2)), np.array([[0, 9, 0, 9], [1, 5, 2, 7]]), rt, ct, 2)
    child = multiprocessing.get_context("fork").Process(target=_shards_in_child)
    child.start()
    child.join(60)
    if child.exitcode is None:
        child.kill()
    assert child.exitcode == 0
