"""Tests of the Python API: ``FastSAM(weights)(source, ...) -> Segments``.

Runs on a FastSAM-s checkpoint with seeded random weights (``small_ckpt``) at small ``imgsz``.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import fastsam
from fastsam import FastSAM, ImageError, PredictConfig, Segments
from fastsam.ops.boxes import snap_and_expand_full_boxes

ROOT = Path(__file__).resolve().parents[1]
SHAPES = ROOT / "examples" / "shapes.jpg"
IMGSZ = 320


@pytest.fixture(scope="module")
def model(small_ckpt: Path) -> FastSAM:
    """Fused model without the result cache, so every call really runs."""
    return FastSAM(small_ckpt, cache_size=0)


@pytest.fixture(scope="module")
def zidane(ultra_assets: Path) -> Path:
    return ultra_assets / "zidane.jpg"


@pytest.fixture(scope="module")
def base(model: FastSAM, zidane: Path) -> Segments:
    """zidane.jpg at imgsz 320 with default options."""
    return model(zidane, imgsz=IMGSZ)


def _rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _assert_same(a: Segments, b: Segments) -> None:
    assert a.image_size == b.image_size
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.stability, b.stability)
    np.testing.assert_array_equal(a.masks, b.masks)


def _mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of two (N, H, W) mask stacks, index by index (empty vs empty = 1)."""
    inter = (a & b).sum((1, 2))
    union = (a | b).sum((1, 2))
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


# ---------------------------------------------------------------------------------- results
@pytest.mark.parametrize("name", ["zidane.jpg", "bus.jpg"])
def test_segments_are_consistent(model, ultra_assets, name):
    """Shapes, dtypes, ranges, order, and masks confined to their boxes."""
    path = ultra_assets / name
    w, h = Image.open(path).size
    seg = model(path, imgsz=IMGSZ)
    assert isinstance(seg, Segments)
    assert seg.image_size == (h, w)
    n = len(seg)
    assert 50 <= n <= 300  # the random checkpoint gives many masks; max_det caps them
    assert seg.boxes.shape == (n, 4) and seg.boxes.dtype == np.float32
    x1, y1, x2, y2 = seg.boxes.T
    assert (x1 >= 0).all() and (y1 >= 0).all() and (x2 <= w).all() and (y2 <= h).all()
    assert (x1 <= x2).all() and (y1 <= y2).all()
    assert (np.diff(seg.scores) <= 0).all() and (seg.scores > 0.4).all()
    assert ((seg.stability >= 0) & (seg.stability <= 1)).all()
    masks = seg.masks
    assert masks.shape == (n, h, w) and masks.dtype == bool
    np.testing.assert_array_equal(seg.areas, masks.sum((1, 2)))
    assert seg.areas.sum() > 0
    cols, rows = np.arange(w), np.arange(h)
    for k in range(n):
        in_cols = (cols >= x1[k]) & (cols < x2[k])
        in_rows = (rows >= y1[k]) & (rows < y2[k])
        assert not masks[k][:, ~in_cols].any() and not masks[k][~in_rows].any(), f"mask {k} leaves its box"


def test_path_array_and_pil_inputs_agree(model, zidane, base):
    """A path, an RGB array and a Pillow image give identical results; BGR does not (numpy is RGB)."""
    rgb = _rgb(zidane)
    _assert_same(model(rgb, imgsz=IMGSZ), base)
    _assert_same(model(Image.open(zidane), imgsz=IMGSZ), base)
    bgr = model(np.ascontiguousarray(rgb[:, :, ::-1]), imgsz=IMGSZ)
    assert len(bgr) != len(base) or not np.array_equal(bgr.scores, base.scores)


def test_list_and_directory_inputs(small_ckpt, tmp_path):
    """Lists and directories give lists of Segments in order; an image-less directory raises."""
    cached = FastSAM(small_ckpt)
    photo = _rgb(SHAPES)
    d = tmp_path / "imgs"
    d.mkdir()
    Image.fromarray(photo[:200, :300]).save(d / "a.png")
    Image.fromarray(photo[300:, 500:]).save(d / "b.png")
    (d / "notes.txt").write_text("not an image")
    one_a, one_b = cached(d / "a.png", imgsz=256), cached(d / "b.png", imgsz=256)
    assert one_a.image_size == (200, 300) and one_b.image_size == (340, 460)
    listed = cached([d / "b.png", str(d / "a.png")], imgsz=256)
    assert isinstance(listed, list) and [s.image_size for s in listed] == [(340, 460), (200, 300)]
    _assert_same(listed[0], one_b)
    _assert_same(listed[1], one_a)
    from_dir = cached(d, imgsz=256)
    assert isinstance(from_dir, list) and len(from_dir) == 2  # notes.txt is skipped
    _assert_same(from_dir[0], one_a)
    _assert_same(from_dir[1], one_b)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    with pytest.raises(ImageError):
        cached(empty)


# ---------------------------------------------------------------------------------- options
def test_higher_conf_keeps_a_subset(model, zidane, base):
    """conf=0.6 keeps exactly the default run's detections scoring above 0.6."""
    hi = model(zidane, imgsz=IMGSZ, conf=0.6)
    assert 0 < len(hi) < len(base) and (hi.scores > 0.6).all()
    _assert_same(hi, base[np.flatnonzero(base.scores > 0.6)])


def test_max_det_is_top_k_of_default(model, zidane, base):
    top = model(zidane, imgsz=IMGSZ, max_det=5)
    assert len(top) == 5
    _assert_same(top, base[:5])


def test_conf_one_gives_empty_segments(model, zidane):
    seg = model(zidane, imgsz=IMGSZ, conf=1.0)
    assert isinstance(seg, Segments) and len(seg) == 0
    assert seg.image_size == (720, 1280)
    assert seg.masks.shape == (0, 720, 1280) and seg.boxes.shape == (0, 4)
    assert seg.to_records() == []


def test_low_resolution_masks(model, zidane, base):
    """retina_masks=False: same detections, masks at original size, close to the retina masks.

    Thresholds are pooled/median IoU: with random weights the masks are ragged and the original's
    retina path truncates the padding offset at prototype resolution, so small masks disagree.
    """
    low = model(zidane, imgsz=IMGSZ, retina_masks=False)
    np.testing.assert_array_equal(low.boxes, base.boxes)
    np.testing.assert_array_equal(low.scores, base.scores)
    assert low.masks.shape == base.masks.shape
    assert not np.array_equal(low.masks, base.masks)
    iou = _mask_iou(low.masks, base.masks)
    pooled = (low.masks & base.masks).sum() / (low.masks | base.masks).sum()
    assert pooled > 0.8 and np.median(iou) > 0.8, (pooled, np.median(iou), iou.mean())


@pytest.mark.parametrize(
    "option, value", [("conf", 1.5), ("conf", -0.1), ("iou", -0.1), ("iou", 1.1), ("imgsz", 0), ("max_det", 0)]
)
def test_out_of_range_options_raise(model, zidane, option, value):
    with pytest.raises(ValueError, match=option):
        model(zidane, **{option: value})


def test_cache_returns_same_object(small_ckpt, model):
    cfg = PredictConfig(imgsz=256)
    cached = FastSAM(small_ckpt)
    first = cached.segment(SHAPES, cfg)
    assert cached.segment(SHAPES, cfg) is first
    assert cached.segment(SHAPES, PredictConfig(imgsz=256, max_det=3)) is not first  # options are in the key
    a, b = model.segment(SHAPES, cfg), model.segment(SHAPES, cfg)
    assert a is not b
    _assert_same(a, b)
    _assert_same(a, first)


def test_unfused_model_agrees(small_ckpt, zidane, base):
    """Folding BatchNorm changes scores by ~1e-5: same detections up to one, matched masks agree."""
    plain = FastSAM(small_ckpt, fuse=False, cache_size=0)(zidane, imgsz=IMGSZ)
    assert abs(len(plain) - len(base)) <= 1
    ious = []
    for k in range(len(base)):
        close = np.flatnonzero(np.abs(plain.boxes - base.boxes[k]).max(1) <= 2.0)
        if close.size:
            ious.append(_mask_iou(plain.masks[close], np.repeat(base.masks[k : k + 1], close.size, 0)).max())
    assert len(ious) >= len(base) - 1
    assert np.mean(np.array(ious) >= 0.99) >= 0.99


# ---------------------------------------------------------------------------------- weights
@pytest.mark.parametrize("dtype", [None, torch.float32])
def test_safetensors_weights_give_identical_results(small_ckpt, zidane, base, tmp_path, dtype):
    from safetensors import safe_open

    path = fastsam.convert(small_ckpt, tmp_path / "s.safetensors", dtype=dtype)
    with safe_open(str(path), framework="pt") as fh:
        dtypes = {fh.get_tensor(k).dtype for k in fh.keys()} - {torch.int64}  # noqa: SIM118 - safe_open is not iterable
    assert dtypes == {dtype or torch.float16}  # the .pt holds fp16 tensors; keep by default
    _assert_same(FastSAM(path, cache_size=0)(zidane, imgsz=IMGSZ), base)


# ------------------------------------------------------------------------------ box rule
def test_snap_and_expand_full_boxes():
    """Sides within 20 px snap to the border; boxes with IoU > 0.9 with the frame become the frame."""
    h, w = 480, 640
    boxes = torch.tensor(
        [
            [10.0, 15.0, 300.0, 200.0],  # top-left sides snap
            [100.0, 100.0, 625.0, 465.0],  # right and bottom sides snap (right uses W, bottom H)
            [25.0, 30.0, 600.0, 440.0],  # away from the border, IoU 0.77: unchanged
            [21.0, 21.0, 619.0, 459.0],  # just outside the band: unchanged
            [0.0, 0.0, 640.0, 440.0],  # IoU 0.92 -> frame
            [5.0, 30.0, 630.0, 470.0],  # snaps to IoU 0.94 -> frame
            [0.0, 0.0, 640.0, 420.0],  # IoU 0.875: unchanged
        ]
    )
    before = boxes.clone()
    out = snap_and_expand_full_boxes(boxes, (h, w))
    expected = torch.tensor(
        [
            [0.0, 0.0, 300.0, 200.0],
            [100.0, 100.0, 640.0, 480.0],
            [25.0, 30.0, 600.0, 440.0],
            [21.0, 21.0, 619.0, 459.0],
            [0.0, 0.0, 640.0, 480.0],
            [0.0, 0.0, 640.0, 480.0],
            [0.0, 0.0, 640.0, 420.0],
        ]
    )
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    torch.testing.assert_close(boxes, before, rtol=0, atol=0)  # the input is not modified


# ---------------------------------------------------------------------------- side effects
AUDIT_SCRIPT = textwrap.dedent(
    """
    import os, sys, tempfile
    import torch  # torch's own import runs `ldconfig -p` (cuda.pathfinder); fastsam is audited below
    TMP = os.path.realpath(tempfile.gettempdir())
    events, opened = [], []
    def hook(event, args):
        if event == "open":
            opened.append(args[0])
        if event in ("socket.connect", "subprocess.Popen", "os.system", "os.posix_spawn", "os.exec"):
            events.append((event, repr(args)[:200]))
        elif event == "open" and not isinstance(args[0], int):
            path, mode, flags = args
            writing = any(c in mode for c in "wax+") if mode else bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
            real = os.path.realpath(os.fsdecode(path))
            if writing and not real.startswith(TMP + os.sep) and real != os.devnull:
                events.append((event, real, mode))
    sys.addaudithook(hook)
    import fastsam
    seg = fastsam.FastSAM(sys.argv[1])(sys.argv[2], imgsz=256)
    assert len(seg) > 0, "no masks"
    assert any(str(p).endswith("shapes.jpg") for p in opened), "the audit hook saw nothing"
    assert not events, events
    assert "ultralytics" not in sys.modules, "ultralytics was imported"
    print("ok", len(seg))
    """
)


def test_no_side_effects(small_ckpt):
    """No network, no subprocesses, no writes outside the temp dir, no ultralytics import."""
    proc = subprocess.run(
        [sys.executable, "-c", AUDIT_SCRIPT, str(small_ckpt), str(SHAPES)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("ok ")


def test_pixels_are_hashed_only_for_the_cache(monkeypatch):
    """With cache_size=0 nothing is looked up, so the image is not hashed (~4 ms at 720p); with a
    cache, the same pixels hit the cache."""
    import hashlib
    import types

    import fastsam.predictor as predictor
    from fastsam.nn.model import build_model

    calls = []

    def spy(data, **kw):
        calls.append(len(memoryview(data).cast("B")))
        return hashlib.blake2b(data, **kw)

    monkeypatch.setattr(predictor, "hashlib", types.SimpleNamespace(blake2b=spy))
    torch.manual_seed(0)
    net = build_model("n")
    image = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    cfg = PredictConfig(imgsz=64)
    result = FastSAM(net, cache_size=0).segment(image, cfg)
    assert isinstance(result, Segments) and result.image_size == (40, 60)
    assert calls == []
    cached = FastSAM(net, cache_size=2)
    first = cached.segment(image, cfg)
    assert cached.segment(image.copy(), cfg) is first
    assert calls == [40 * 60 * 3] * 2  # every pixel byte, once per call
