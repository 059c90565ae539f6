"""Zero-shot edges: the BSDS protocol on maps with known answers, the edge recipe's pieces, the
``fastsam zeroshot edges`` / ``fastsam edges`` commands (resume, limit, shards, errors)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from _zeroshot_data import write_bsds, write_mat
from PIL import Image

from fastsam.cli import main
from fastsam.ops.edges import edge_nms, edge_orientation, max_sobel, sobel_magnitude
from fastsam.zeroshot import bsds
from fastsam.zeroshot._runner import RunOptions, Shard
from fastsam.zeroshot.edges import evaluate_edges

SIZE = (160, 200)  # diagonal 256 px: the tolerance is 1.9 px


def _square(offset: int = 0) -> np.ndarray:
    b = np.zeros(SIZE, dtype=bool)
    r0, r1, c0, c1 = 40 + offset, 120 + offset, 50, 150
    b[r0, c0:c1] = b[r1 - 1, c0:c1] = True
    b[r0:r1, c0] = b[r0:r1, c1 - 1] = True
    return b


def _lines(offset: int = 0) -> np.ndarray:
    b = np.zeros(SIZE, dtype=bool)
    b[40 + offset, 20:180] = True
    b[60:140, 100 + offset] = True
    return b


def test_ground_truth_as_prediction_scores_one() -> None:
    gts = [_lines(), _lines(1)]  # two annotators, one pixel apart (within the 1.9 px tolerance)
    m = bsds.summarise([bsds.image_counts(_lines().astype(float), gts)])
    assert m["ods"] == pytest.approx(1.0, abs=1e-12) and m["ois"] == pytest.approx(1.0, abs=1e-12)
    assert m["r50"] == pytest.approx(1.0)
    # a closed contour: thinning drops its four 4-connected corner pixels, nothing more
    m = bsds.summarise([bsds.image_counts(_square().astype(float), [_square(), _square(1)])])
    assert 0.99 < m["ods"] < 1.0


def test_prediction_shifted_past_the_tolerance_scores_low() -> None:
    m = bsds.summarise([bsds.image_counts(_square(6).astype(float), [_square()])])
    # only the vertical sides' overlap survives a 6 px shift
    assert m["ods"] < 0.6 and m["ois"] < 0.6
    far = np.zeros(SIZE)
    far[150, 20:180] = 1.0
    assert bsds.summarise([bsds.image_counts(far, [_square()])])["ods"] == 0.0


def test_half_detected_straight_edge_has_the_hand_computed_scores() -> None:
    gt = np.zeros(SIZE, dtype=bool)
    gt[80, 20:180] = True  # 160 px
    half = np.zeros(SIZE)
    half[80, 20:100] = 1.0  # the first 80 px, at full strength
    m = bsds.summarise([bsds.image_counts(half, [gt])])
    assert m["ods_recall"] == pytest.approx(0.5) and m["ods_precision"] == pytest.approx(1.0)
    assert m["ods"] == pytest.approx(2 / 3) and m["ois"] == pytest.approx(2 / 3)
    assert m["r50"] == pytest.approx(0.5) and m["ap"] == 0.0  # one recall value: BSDS's area is 0
    # the other half at strength 0.5: recall 1 for t <= 0.5, 0.5 above; precision 1 throughout
    graded = half.copy()
    graded[80, 100:180] = 0.5
    c = bsds.image_counts(graded, [gt])
    t = bsds.thresholds()
    assert (c[0] == np.where(t <= 0.5, 160, 80)).all() and (c[1] == 160).all() and (c[2] == c[3]).all()
    m = bsds.summarise([c])
    assert m["ods"] == pytest.approx(1.0) and m["ap"] == pytest.approx(0.51)  # P = 1 on recall 0.50..1.00


def test_matching_is_a_maximum_one_to_one_matching_within_the_distance() -> None:
    from scipy.optimize import linear_sum_assignment

    rng = np.random.default_rng(3)
    for _ in range(20):
        pred, gt = rng.random((12, 12)) > 0.8, rng.random((12, 12)) > 0.8
        mp, mg = bsds.correspond(pred, gt, 1.5)
        p, g = np.argwhere(pred), np.argwhere(gt)
        d = np.hypot(*(p[:, None, :] - g[None, :, :]).transpose(2, 0, 1))
        rows, cols = linear_sum_assignment(-(d <= 1.5).astype(float))
        best = int((d[rows, cols] <= 1.5).sum())  # the largest number of pairs within the distance
        assert mp.sum() == mg.sum() == best
        assert not (mp & ~pred).any() and not (mg & ~gt).any()


def test_sobel_step_is_one_and_nms_thins_a_ridge() -> None:
    step = np.zeros((20, 20), dtype=np.float32)
    step[:, 10:] = 1.0
    mag = sobel_magnitude(step)
    assert mag[:, 9:11].min() == pytest.approx(1.0) and mag[:, :8].max() == 0.0 and mag[:, 12:].max() == 0.0
    # a mask crop inside the image: its box border is an edge, the image frame is none
    e = max_sobel((40, 40), np.array([[10, 30, 10, 30]]), [np.ones((20, 20), np.float32)])
    assert e[10, 15] == pytest.approx(1.0) and e[20, 20] == 0.0 and e.max() <= 1.0
    ridge = np.zeros((40, 40), dtype=np.float32)
    ridge[:, 19], ridge[:, 20], ridge[:, 21] = 0.5, 1.0, 0.5
    thin = edge_nms(ridge, edge_orientation(ridge))
    assert (thin[5:35, 20] == 1.0).all() and thin[:, 19].max() == 0.0 and thin[:, 21].max() == 0.0
    assert thin[0].max() == 0.0  # the frame fades out


def test_probabilities_agree_with_the_hard_masks() -> None:
    from fastsam import FastSAM
    from fastsam.config import PredictConfig
    from fastsam.data.synth import render_scene

    model = FastSAM(cache_size=0)
    rgb, _ = render_scene(np.random.default_rng(5), (96, 128))
    cfg = PredictConfig(imgsz=160, conf=0.25)
    seg, soft = model.segment(rgb, cfg), model.probabilities(rgb, cfg)
    assert len(seg) == len(soft) > 0
    np.testing.assert_array_equal(seg.scores, soft.scores)
    np.testing.assert_array_equal(seg.regions, soft.regions)
    disagree = sum(int(((p > 0.5) != c).sum()) for p, c in zip(soft.probs, seg.crops))
    assert disagree <= 2, disagree  # float rounding at logit 0 only


def test_pred_dir_shards_and_errors(tmp_path: Path, usage_error) -> None:
    root = tmp_path / "bsds"
    ids = write_bsds(root, 3)
    pred = tmp_path / "pred"
    pred.mkdir()
    for k in ids:
        truth = __import__("scipy.io").io.loadmat(str(root / "groundTruth/test" / f"{k}.mat"))["groundTruth"]
        Image.fromarray(truth[0, 0]["Boundaries"][0, 0].astype(np.uint8) * 255).save(pred / f"{k}.png")
    # annotator 1's boundaries as the prediction: annotator 2 is it shifted by 1 px (within tolerance)
    assert main(["zeroshot", "edges", "--data", str(root), "--pred-dir", str(pred), "--out", str(tmp_path / "a")]) == 0
    whole = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert whole["ods"] == pytest.approx(1.0) and whole["ois"] == pytest.approx(1.0) and whole["images"] == 3
    # two ranks: rank 1 writes its share and returns None, rank 0 merges: the same figures
    out = tmp_path / "sharded"
    assert evaluate_edges(root, out, pred_dir=pred, run=RunOptions(shard=Shard(1, 2))) is None
    assert sorted(p.stem for p in (out / "parts").glob("1*.json")) == [ids[1]]
    merged = evaluate_edges(root, out, pred_dir=pred, run=RunOptions(shard=Shard(0, 2)))
    assert merged is not None and merged["ods"] == whole["ods"] and merged["images"] == 3
    # errors: one line, exit 2
    assert "no such directory" in usage_error(main(["zeroshot", "edges", "--data", str(tmp_path / "nope")]))
    (pred / f"{ids[2]}.png").unlink()
    line = usage_error(
        main(["zeroshot", "edges", "--data", str(root), "--pred-dir", str(pred), "-o", str(tmp_path / "b")])
    )
    assert "missing edge map" in line
    (root / "groundTruth/test" / f"{ids[0]}.mat").write_bytes(b"not a mat file")
    line = usage_error(
        main(["zeroshot", "edges", "--data", str(root), "--pred-dir", str(pred), "-o", str(tmp_path / "c")])
    )
    assert "not a BSDS ground-truth file" in line
    (root / "groundTruth/test" / f"{ids[0]}.mat").unlink()
    line = usage_error(
        main(["zeroshot", "edges", "--data", str(root), "--pred-dir", str(pred), "-o", str(tmp_path / "d")])
    )
    assert "missing ground truth" in line


@pytest.mark.slow
def test_model_run_resume_limit_and_the_edges_command(tmp_path: Path, usage_error) -> None:
    root = tmp_path / "bsds"
    ids = write_bsds(root, 2)
    out = tmp_path / "run"
    base = ["zeroshot", "edges", "--data", str(root), "--out", str(out), "--imgsz", "160"]
    assert main([*base, "--limit", "1"]) == 0
    first = json.loads((out / "metrics.json").read_text())
    assert first["images"] == 1 and sorted(p.name for p in (out / "maps").iterdir()) == [f"{ids[0]}.png"]
    part = out / "parts" / f"{ids[0]}.json"
    before = part.stat().st_mtime_ns
    assert "--resume" in usage_error(main(base))  # a second run never overwrites the first
    assert main([*base, "--resume"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["images"] == 2 and part.stat().st_mtime_ns == before  # the done image was not redone
    assert all(0.0 <= m[k] <= 1.0 for k in ("ods", "ois", "ap")) and m["ods"] > 0.2
    assert {"ods", "ois", "ap", "r50", "skipped", "model", "imgsz"} <= set(m)
    assert "other options" in usage_error(main([*base[:-1], "192", "--resume"]))
    # the maps score the same through --pred-dir, and `fastsam edges` writes the same map
    assert (
        main(["zeroshot", "edges", "--data", str(root), "--pred-dir", str(out / "maps"), "-o", str(tmp_path / "p")])
        == 0
    )
    again = json.loads((tmp_path / "p" / "metrics.json").read_text())
    assert math.isclose(again["ods"], m["ods"]) and math.isclose(again["ap"], m["ap"])
    img = root / "images" / "test" / f"{ids[1]}.jpg"
    assert main(["edges", str(img), "--out", str(tmp_path / "e"), "--imgsz", "160"]) == 0
    written = np.asarray(Image.open(tmp_path / "e" / f"{ids[1]}_edges.png"))
    np.testing.assert_array_equal(written, np.asarray(Image.open(out / "maps" / f"{ids[1]}.png")))
    assert "no such image" in usage_error(main(["edges", str(tmp_path / "missing.jpg")]))


def test_unreadable_image_is_a_counted_skip(tmp_path: Path) -> None:
    root = tmp_path / "bsds"
    ids = write_bsds(root, 2)
    (root / "images" / "test" / f"{ids[1]}.jpg").write_bytes(b"broken")
    write_mat(root / "groundTruth" / "test" / f"{ids[1]}.mat", [np.zeros((96, 128), bool)])

    class Blank:  # a model whose only mask is the whole image (edge map: 0 inside, faded frame)
        def probabilities(self, image, config):
            from fastsam.ops.soft_masks import SoftMasks

            h, w = image.shape[:2]
            z = np.zeros((1, 4), np.float32)
            return SoftMasks(
                (h, w), z, np.ones(1, np.float32), np.array([[0, h, 0, w]]), (np.ones((h, w), np.float32),)
            )

    m = evaluate_edges(root, tmp_path / "o", predictor=Blank())
    assert m is not None and m["images"] == 1 and m["skipped"] == 1 and m["skipped_files"] == [ids[1]]
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["skipped"] == 1


@pytest.mark.parametrize("task", ["edges", "proposals", "instances"])
def test_zeroshot_page_shows_each_task_help(task: str) -> None:
    import re

    from test_docs import DOCS, _help

    text = (DOCS / "cli" / "zeroshot.md").read_text()
    shown = re.search(rf"Output of `fastsam zeroshot {task} --help`:\n\n```text\n(.*?)\n```", text, re.S)
    assert shown and shown.group(1).strip() == _help("zeroshot", task), f"paste `fastsam zeroshot {task} --help`"


def test_a_missing_extra_is_one_line_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from fastsam.errors import FastSAMError
    from fastsam.zeroshot import _deps

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "skimage" else real(name, *a))
    with pytest.raises(FastSAMError, match=r"skimage is not installed: pip install 'fastsam\[zeroshot\]'"):
        _deps.need("skimage.morphology")
