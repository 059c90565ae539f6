"""The runtime options every model-running command shares: --post, --compile (and their API)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from fastsam import FastSAM, FastSAMError
from fastsam.cli import main
from fastsam.config import PredictConfig
from fastsam.data.synth import render_scene


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    rgb, _ = render_scene(np.random.default_rng(7), (240, 320))
    path = tmp_path_factory.mktemp("runtime") / "scene.png"
    Image.fromarray(rgb).save(path)
    return rgb, path


def _records(out) -> list[dict]:
    return json.loads((out / "scene.json").read_text())


def test_cli_post_device_gives_the_kernels_records(scene, tmp_path) -> None:
    from pycocotools import mask as mask_utils

    _, path = scene
    common = ["segment", str(path), "--imgsz", "320", "--no-progress"]
    assert main([*common, "--out", str(tmp_path / "k"), "--post", "kernels"]) == 0
    assert main([*common, "--out", str(tmp_path / "d"), "--post", "device"]) == 0
    a, b = _records(tmp_path / "k"), _records(tmp_path / "d")
    assert len(a) == len(b) > 0
    for ra, rb in zip(a, b):
        assert abs(ra["predicted_iou"] - rb["predicted_iou"]) < 1e-5
        np.testing.assert_allclose(ra["box_xyxy"], rb["box_xyxy"], atol=1e-3)
        ma, mb = (mask_utils.decode(r["segmentation"]).astype(bool) for r in (ra, rb))
        assert (ma & mb).sum() / max((ma | mb).sum(), 1) >= 0.99


def test_post_and_compile_are_checked(usage_error, scene, tmp_path) -> None:
    _, path = scene
    line = usage_error(main(["segment", str(path), "--compile", "--backend", "onnxruntime", "--out", str(tmp_path)]))
    assert "compile" in line and "torch" in line
    assert not any(tmp_path.iterdir())
    with pytest.raises(FastSAMError, match="post must be one of"):
        FastSAM(post="gpu")


@pytest.mark.slow
def test_compiled_network_gives_the_eager_masks(scene) -> None:
    rgb, _ = scene
    cfg = PredictConfig(imgsz=320)
    eager = FastSAM(cache_size=0).segment(rgb, cfg)
    model = FastSAM(cache_size=0, compile=True)
    assert model.provenance["compiled"] is True
    compiled = model.segment(rgb, cfg)  # the first call compiles for this input shape
    assert len(compiled) == len(eager) > 0
    np.testing.assert_allclose(compiled.scores, eager.scores, atol=1e-4)
    np.testing.assert_allclose(compiled.boxes, eager.boxes, atol=0.05)
    for k in range(len(eager)):
        a, b = eager.mask(k), compiled.mask(k)
        assert (a & b).sum() / max((a | b).sum(), 1) >= 0.99
