"""Property-based hostile inputs (hypothesis) for every validator and selector.

The one property: whatever a caller passes, the library answers with a result of the documented
shape or a :class:`FastSAMError` (a one-line user error), never another exception.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fastsam import FastSAMError
from fastsam.cli._values import box, finite, point, positive_int
from fastsam.config import PredictConfig
from fastsam.devices import resolve_device
from fastsam.io.images import load_image
from fastsam.prompts import select, select_by_boxes, select_by_points, validate_boxes, validate_points
from fastsam.results import Segments
from fastsam.text import select_by_text

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
H, W = 24, 32

# numbers as hostile callers send them: huge, tiny, negative, NaN, infinities, ints and bools
numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(10**12), 10**12), st.booleans())
coords = st.one_of(st.floats(-50, 80), numbers)
junk = st.one_of(st.none(), st.text(max_size=5), numbers, st.lists(numbers, max_size=3))
pairs = st.lists(st.one_of(st.lists(coords, min_size=2, max_size=2), st.lists(coords, max_size=4), junk), max_size=6)
quads = st.lists(st.one_of(st.lists(coords, min_size=4, max_size=4), st.lists(coords, max_size=6), junk), max_size=5)
labels = st.one_of(st.none(), st.lists(st.one_of(st.integers(-2, 3), st.floats(), st.text(max_size=2)), max_size=6))


def _segments(seed: int, n: int) -> Segments:
    """n random rectangular-ish masks on an H x W image (some empty, some overlapping)."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, H, W), bool)
    for k in range(n):
        y0, x0 = rng.integers(0, H), rng.integers(0, W)
        masks[k, y0 : y0 + rng.integers(0, H), x0 : x0 + rng.integers(0, W)] = True
        masks[k] &= rng.random((H, W)) > 0.1
    return Segments.from_masks(masks, np.sort(rng.random(n))[::-1].astype(np.float32))


segments = st.builds(_segments, st.integers(0, 2**16), st.integers(0, 6))


def _only_fastsam_errors(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except FastSAMError as exc:
        assert str(exc) and "\n" not in str(exc)  # one line for the CLI / server
        return None


@SETTINGS
@given(pairs, labels)
def test_validate_points(points, labs):
    out = _only_fastsam_errors(validate_points, points, labs, (H, W))
    if out is not None:
        pts, lab = out
        assert pts.shape == (len(pts), 2) and np.isfinite(pts).all()
        assert ((pts[:, 0] >= 0) & (pts[:, 0] < W) & (pts[:, 1] >= 0) & (pts[:, 1] < H)).all()
        assert set(lab.tolist()) <= {0, 1} and lab.shape == (len(pts),)


@SETTINGS
@given(st.one_of(quads, st.lists(coords, min_size=4, max_size=4)))
def test_validate_boxes_clips_or_refuses(boxes):
    out = _only_fastsam_errors(validate_boxes, boxes, (H, W))
    if out is not None:
        assert out.ndim == 2 and out.shape[1] == 4 and np.isfinite(out).all()
        assert (out[:, 0] < out[:, 2]).all() and (out[:, 1] < out[:, 3]).all()  # area inside the image
        assert (out >= 0).all() and (out[:, [0, 2]] <= W).all() and (out[:, [1, 3]] <= H).all()


@SETTINGS
@given(segments, pairs, labels, st.sampled_from(["merge", "individual", "bogus"]), st.integers(-3, 5))
def test_select_by_points(seg, points, labs, mode, close):
    out = _only_fastsam_errors(select_by_points, seg, points, labs, mode=mode, close_kernel=close)
    if out is not None:
        assert out.mask.shape == (H, W) and out.mask.dtype == bool
        assert ((out.indices >= 0) & (out.indices < len(seg))).all()


@SETTINGS
@given(segments, st.one_of(quads, st.lists(coords, min_size=4, max_size=4)))
def test_select_by_boxes(seg, boxes):
    out = _only_fastsam_errors(select_by_boxes, seg, boxes)
    if out is not None:
        assert out.dtype == np.int64 and ((out >= -1) & (out < len(seg))).all()


@SETTINGS
@given(segments, st.one_of(st.none(), pairs), labels, st.one_of(st.none(), quads))
def test_select_union(seg, points, labs, boxes):
    out = _only_fastsam_errors(select, seg, points=points, labels=labs, boxes=boxes)
    if out is not None:
        assert np.array_equal(out, np.unique(out)) and ((out >= 0) & (out < len(seg))).all()


class _Scorer:
    """A CLIP stand-in: similarity from the crop's mean colour, deterministic."""

    def similarity(self, crops, texts):
        base = np.array([c.mean() / 255.0 for c in crops])
        return np.stack([np.cos(base * (i + 1)) for i in range(len(texts))])


@SETTINGS
@given(
    segments,
    st.one_of(st.text(max_size=8), st.lists(st.one_of(st.text(max_size=8), junk), max_size=3)),
    st.one_of(st.none(), numbers),
    st.integers(-5, 50),
)
def test_select_by_text(seg, texts, threshold, min_area):
    rgb = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    out = _only_fastsam_errors(select_by_text, seg, rgb, texts, _Scorer(), threshold=threshold, min_area=min_area)
    if out is not None:
        assert all(((a >= 0) & (a < len(seg))).all() for a in out)


@SETTINGS
@given(
    st.one_of(st.integers(-10, 10**6), numbers, st.text(max_size=3)),
    numbers,
    numbers,
    st.one_of(st.integers(-5, 10**4), numbers),
)
def test_predict_config(imgsz, conf, iou, max_det):
    cfg = _only_fastsam_errors(PredictConfig, imgsz=imgsz, conf=conf, iou=iou, max_det=max_det)
    if cfg is not None:
        assert 32 <= cfg.input_size <= 16384 + 31 and cfg.input_size % 32 == 0
        assert 0 <= cfg.conf <= 1 and 0 <= cfg.iou <= 1 and cfg.max_det >= 1


dtypes = st.sampled_from(
    [
        np.uint8,
        np.uint16,
        np.int32,
        np.int64,
        np.uint32,
        np.float32,
        np.float64,
        np.bool_,
        np.int8,
        np.complex64,
        np.float16,
    ]
)
shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6)


@SETTINGS
@given(hnp.arrays(dtypes, shapes))
def test_load_image_arrays(arr):
    out = _only_fastsam_errors(load_image, arr)
    if out is not None:
        assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3 and out.shape[:2] == arr.shape[:2]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300), st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"BM"]))
def test_load_image_files(tmp_path_factory, data, magic):
    path = tmp_path_factory.mktemp("img") / "x.png"
    path.write_bytes(magic + data)
    out = _only_fastsam_errors(load_image, path, max_pixels=10**6)
    if out is not None:
        assert out.dtype == np.uint8 and out.ndim == 3


@SETTINGS
@given(st.one_of(st.text(max_size=12), st.sampled_from(["cpu", "cuda:99", "mps", "xpu", "cuda:-1", "cpu:0", ""])))
def test_resolve_device(name):
    dev = _only_fastsam_errors(resolve_device, name)
    if dev is not None:
        assert dev.type in ("cpu", "cuda", "mps", "xpu") or dev.type


@pytest.mark.parametrize("parse", [finite, positive_int, point, box])
@SETTINGS
@given(text=st.one_of(st.text(max_size=20), st.lists(st.floats(), max_size=5).map(lambda v: ",".join(map(str, v)))))
def test_cli_value_types(parse, text):
    try:
        value = parse(text)
    except argparse.ArgumentTypeError as exc:
        assert str(exc)
        return
    values = value if isinstance(value, list) else [value]
    assert all(math.isfinite(v) for v in values)
