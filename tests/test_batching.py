"""Batched forward passes (``batch=`` / ``--batch``) give the records batch 1 gives."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from fastsam import FastSAM, FastSAMError
from fastsam.batching import iter_batched
from fastsam.cli import main
from fastsam.config import PredictConfig


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def _assert_same(one, many) -> None:
    """Same detections: each of batch 1's has one counterpart with its score (to 1e-4), box (to 0.5
    px) and mask (IoU >= 0.99). Two detections whose scores tie to float rounding may swap places."""
    assert len(one) == len(many)
    for a, b in zip(one, many):
        assert a.image_size == b.image_size and len(a) == len(b)
        np.testing.assert_allclose(np.sort(a.scores), np.sort(b.scores), atol=1e-4)
        used: set[int] = set()
        for k in range(len(a)):
            near = np.flatnonzero(np.abs(b.scores - a.scores[k]) <= 1e-4)
            dist = np.abs(b.boxes[near] - a.boxes[k]).max(1)
            j = int(near[np.argmin(dist)])
            assert dist.min() <= 0.5 and j not in used and abs(j - k) <= 2, (k, j)
            assert _iou(a.mask(k), b.mask(j)) >= 0.99
            used.add(j)


@pytest.fixture(scope="module")
def images(ultra_assets, tmp_path_factory):
    """Mixed sizes and kinds: two photos (two letterbox shapes), a grayscale and an RGBA image."""
    tmp = tmp_path_factory.mktemp("batch")
    bus, zidane = ultra_assets / "bus.jpg", ultra_assets / "zidane.jpg"
    gray = tmp / "gray.png"
    Image.open(zidane).convert("L").save(gray)
    rgba = tmp / "rgba.png"
    Image.open(bus).convert("RGBA").resize((405, 540)).save(rgba)
    return [bus, zidane, gray, bus, rgba, zidane]


@pytest.mark.slow
def test_batched_call_equals_batch_one(small_ckpt, images) -> None:
    model = FastSAM(small_ckpt, cache_size=0)
    one = model(images, imgsz=320)
    for batch in (2, 4):
        _assert_same(one, model(images, imgsz=320, batch=batch))
    with pytest.raises(FastSAMError, match="batch"):
        model(images, imgsz=320, batch=0)


@pytest.mark.slow
def test_iter_batched_groups_by_shape_and_yields_every_image_once(small_ckpt, images) -> None:
    model = FastSAM(small_ckpt, cache_size=0)
    rgbs = [np.asarray(Image.open(p).convert("RGB")) for p in images]
    seen = [i for i, _ in iter_batched(model, iter(rgbs), PredictConfig(imgsz=320), 2)]
    assert sorted(seen) == list(range(len(rgbs)))
    # bus, bus (one shape) run together as soon as the second arrives: before the zidanes' batch
    assert seen.index(3) < seen.index(5)


@pytest.mark.slow
def test_cli_batch_writes_the_same_records(small_ckpt, images, tmp_path) -> None:
    from pycocotools import mask as mask_utils

    srcs = [str(p) for p in images[:3]]
    common = ["segment", *srcs, "--model", str(small_ckpt), "--imgsz", "256", "--no-progress"]
    assert main([*common, "--out", str(tmp_path / "one")]) == 0
    assert main([*common, "--out", str(tmp_path / "four"), "--batch", "4"]) == 0
    for stem in ("bus", "zidane", "gray"):
        a = json.loads((tmp_path / "one" / f"{stem}.json").read_text())
        b = json.loads((tmp_path / "four" / f"{stem}.json").read_text())
        assert len(a) == len(b) > 0
        for ra in a:  # near-tied scores may swap places: match each record by score and box
            rb = min(
                (r for r in b if abs(r["predicted_iou"] - ra["predicted_iou"]) <= 1e-4),
                key=lambda r: np.abs(np.subtract(r["bbox"], ra["bbox"])).max(),
            )
            np.testing.assert_allclose(ra["bbox"], rb["bbox"], atol=1)
            ma, mb = (mask_utils.decode(r["segmentation"]).astype(bool) for r in (ra, rb))
            assert _iou(ma, mb) >= 0.99
        assert (tmp_path / "four" / f"{stem}.png").is_file()


def test_cli_batch_must_be_positive(usage_error, tmp_path) -> None:
    line = usage_error(main(["segment", "x.jpg", "--batch", "0", "--out", str(tmp_path)]))
    assert "--batch" in line
