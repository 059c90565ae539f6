"""The shipped demo model: small, safe format, the default everywhere, and good enough on synthetic scenes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from fastsam import FastSAM
from fastsam.cli import main
from fastsam.data.datasets import SA1BDataset
from fastsam.data.synth import render_scene, write_dataset
from fastsam.io.checkpoint import read_weights
from fastsam.train.evaluate import evaluate
from fastsam.weights import default_model_path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
#: Seeds of the scenes the demo model saw: training 1, validation 900001. These are neither.
HELD_OUT_SEED = 31337


def test_shipped_file_is_small_fp16_safetensors_with_provenance() -> None:
    path = default_model_path()
    assert path.stat().st_size <= 10 * 1024 * 1024
    with safe_open(str(path), "pt") as fh:
        dtypes = {fh.get_slice(k).get_dtype() for k in fh.keys()}  # noqa: SIM118 - safe_open is not iterable
    assert "F16" in dtypes and "F32" not in dtypes
    weights = read_weights(path)
    assert weights.config.scale == "n" and weights.config.num_classes == 1
    assert weights.provenance["trained_by"] == "fastsam train" and weights.provenance["imgsz"] == 320
    # Trained at 320; predicting at 448 finds small objects better (chosen on the validation scenes).
    assert weights.provenance["predict_imgsz"] == 448 and FastSAM().default_imgsz == 448


@pytest.mark.slow
def test_demo_model_reaches_its_bar_on_held_out_synthetic_scenes(tmp_path: Path) -> None:
    write_dataset(tmp_path, 200, seed=HELD_OUT_SEED, size=(320, 320))
    metrics = evaluate(FastSAM(), SA1BDataset(tmp_path), progress=False)
    print(json.dumps({k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)}))
    assert metrics["images"] == 200
    assert metrics["mask_AR@100"] >= 0.5, metrics


@pytest.mark.slow
def test_readme_main_command_segments_the_shipped_example(tmp_path: Path, capsys) -> None:
    assert main(["segment", str(EXAMPLES / "shapes.jpg"), "--out", str(tmp_path)]) == 0
    records = json.loads((tmp_path / "shapes.json").read_text())
    # The example holds six shapes (circle, rectangle, ring, star, ellipse, triangle): each one is
    # found as a mask that covers it well.
    boxes = [r["bbox"] for r in records if r["predicted_iou"] > 0.5]
    assert 6 <= len(boxes) <= 20, len(boxes)
    red_circle = (100, 110, 240, 240)  # x, y, w, h of the red disc in examples/shapes.jpg
    best = max(_box_iou(b, red_circle) for b in boxes)
    assert best > 0.8, best
    assert (tmp_path / "shapes.png").is_file()


def _box_iou(a: list[float], b: tuple[float, ...]) -> float:
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0.0, min(ax2, bx2) - max(a[0], b[0]))
    ih = max(0.0, min(ay2, by2) - max(a[1], b[1]))
    inter = iw * ih
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def test_fine_tuning_starts_from_the_shipped_weights(tmp_path: Path) -> None:
    from fastsam.train.trainer import TrainConfig, Trainer

    write_dataset(tmp_path / "d", 2, seed=HELD_OUT_SEED, size=(64, 64))
    cfg = TrainConfig(
        data=str(tmp_path / "d"),
        model=str(default_model_path()),
        out=str(tmp_path / "o"),
        imgsz=64,
        epochs=1,
        batch=2,
        workers=0,
    )
    trainer = Trainer(cfg, progress=False)
    shipped = read_weights(default_model_path()).state
    own = trainer.model.state_dict()
    assert all(torch.equal(own[k].cpu(), shipped[k].float()) for k in shipped if own[k].is_floating_point())


@pytest.mark.slow
def test_text_prompt_with_both_demo_models_finds_the_red_star(tmp_path: Path) -> None:
    # examples/scene.jpg is render_scene(default_rng(2000), (320, 320)); its one red star has
    # COCO box [234, 237, 68, 68].
    rc = main(["prompt", str(EXAMPLES / "scene.jpg"), "--text", "a red star", "--out", str(tmp_path)])
    assert rc == 0
    records = json.loads((tmp_path / "scene.json").read_text())
    assert len(records) == 1 and records[0]["prompt"]["text"] == "a red star"
    assert _box_iou(records[0]["bbox"], (234, 237, 68, 68)) > 0.7, records[0]["bbox"]


@pytest.mark.slow
def test_text_prompts_with_the_demo_detector_on_held_out_scenes() -> None:
    from fastsam.text import ClipScorer
    from fastsam.train.clip_demo import text_accuracy
    from fastsam.weights import default_clip_path

    scenes = [render_scene(np.random.default_rng([HELD_OUT_SEED, i]), (320, 320)) for i in range(20)]
    result = text_accuracy(ClipScorer(default_clip_path()), scenes, FastSAM())
    print(f"text prompt with the demo detector: {result.correct}/{result.total}")
    # Measured 128/181 (71%) when shipped; with ground-truth masks as candidates the same CLIP picks
    # 94% (tests/test_clip_demo.py). The gap is the detector: merged or partial masks.
    assert result.total >= 60 and result.accuracy >= 0.6, result.misses
