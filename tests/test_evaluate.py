"""Class-agnostic COCO metrics (hand-computed cases, pycocotools cross-check), ``evaluate`` and ``fastsam val``."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pycocotools.mask as mask_utils
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from fastsam import FastSAM
from fastsam.cli import main
from fastsam.config import PredictConfig
from fastsam.data.datasets import SA1BDataset, Sample, masks_to_boxes
from fastsam.data.synth import write_dataset
from fastsam.errors import FastSAMError
from fastsam.io.checkpoint import save_safetensors
from fastsam.nn.model import build_model
from fastsam.results import Segments
from fastsam.train.evaluate import (
    METRIC_KEYS,
    coco_metrics,
    default_imgsz,
    detect_format,
    evaluate,
    format_table,
    open_dataset,
)

SIZE = (64, 96)
AREA_KEYS = {k for k in METRIC_KEYS if "_small@" in k or "_medium@" in k or "_large@" in k}
MAIN_KEYS = [k for k in METRIC_KEYS if k not in AREA_KEYS]


def square(r: int, c: int, s: int, size: tuple[int, int] = SIZE) -> np.ndarray:
    m = np.zeros(size, bool)
    m[r : r + s, c : c + s] = True
    return m


def gt(*masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    m = np.stack(masks)
    return m, masks_to_boxes(m)


def pred(masks: list[np.ndarray], scores: list[float]) -> Segments:
    return Segments.from_masks(np.stack(masks), np.asarray(scores, np.float32))


# Two images, two 20x20 squares each (area 400: COCO "small").
IMAGES = [[square(5, 5, 20), square(30, 40, 20)], [square(10, 10, 20), square(10, 60, 20)]]
GT = [gt(*ms) for ms in IMAGES]


def assert_all(metrics: dict, expected: dict[str, float]) -> None:
    for key, value in expected.items():
        for kind in ("mask", "box"):
            assert metrics[f"{kind}_{key}"] == pytest.approx(value, abs=1e-12), (kind, key, metrics)


# --------------------------------------------------------------------------- hand-computed metrics
def test_exact_copies_score_one():
    m = coco_metrics(GT, [pred(ms, [0.9, 0.8]) for ms in IMAGES])
    assert set(m) == set(METRIC_KEYS)
    assert_all(m, {"AP": 1, "AP50": 1, "AP75": 1, "AR@10": 1, "AR@100": 1, "AR@1000": 1, "AR_small@1000": 1})
    # no ground truth of medium or large area: undefined, not 0 or 1
    assert all(math.isnan(m[f"{k}_AR_{a}@1000"]) for k in ("mask", "box") for a in ("medium", "large"))


def test_iou_exactly_0_6_matches_three_thresholds():
    """20x20 squares shifted 5 px: IoU = 300/500 = 0.6 exactly, a match at 0.50, 0.55, 0.60 (IoU >= t),
    none from 0.65: AR = AP = 3/10 at every maxDets."""
    shifted = [[np.roll(m, 5, axis=1) for m in ms] for ms in IMAGES]
    rle = mask_utils.encode(np.asfortranarray(np.stack([IMAGES[0][0], shifted[0][0]], -1).astype(np.uint8)))
    assert mask_utils.iou(rle[1:], rle[:1], [0])[0, 0] == 0.6
    m = coco_metrics(GT, [pred(ms, [0.9, 0.8]) for ms in shifted])
    assert_all(m, {"AP": 0.3, "AP50": 1, "AP75": 0, "AR@10": 0.3, "AR@100": 0.3, "AR@1000": 0.3})


def test_missing_object_halves_recall():
    """One of two objects per image found exactly: recall 0.5; precision 1 up to recall 0.5, nothing
    beyond, so 51 of COCO's 101 recall points (0, 0.01, ..., 0.50) have precision 1."""
    m = coco_metrics(GT, [pred(ms[:1], [0.9]) for ms in IMAGES])
    assert_all(m, {"AP": 51 / 101, "AP50": 51 / 101, "AR@10": 0.5, "AR@100": 0.5, "AR@1000": 0.5})


def test_max_dets_cut_the_lowest_scores():
    """Ten disjoint false positives outrank the only true match (11th): AR@10 = 0, AR@100 = AR@1000 = 1;
    AP (at 1000 detections) = the precision 1/11 at every recall point."""
    target = square(40, 40, 20)
    fps = [square(2, 2 + 9 * k, 4) for k in range(10)]
    scores = [0.9 - 0.01 * k for k in range(10)] + [0.5]
    m = coco_metrics([gt(target)], [pred([*fps, target], scores)])
    assert_all(m, {"AR@10": 0.0, "AR@100": 1.0, "AR@1000": 1.0, "AP": 1 / 11, "AP50": 1 / 11})


def test_false_positive_between_true_positives():
    """Scores TP 0.9, FP 0.8, TP 0.7 on two objects: (recall, precision) = (.5, 1), (.5, .5), (1, 2/3).
    101-point interpolation: precision 1 at recall 0..0.50 (51 points), 2/3 at 0.51..1 (50 points)."""
    a, b = square(5, 5, 20), square(30, 60, 20)
    fp = square(40, 5, 15)
    m = coco_metrics([gt(a, b)], [pred([a, fp, b], [0.9, 0.8, 0.7])])
    ap = (51 * 1 + 50 * 2 / 3) / 101
    assert_all(m, {"AP": ap, "AP50": ap, "AP75": ap, "AR@10": 1, "AR@1000": 1})
    # the false positive on top instead: precision 0, 1/2, 2/3 -> interpolated 2/3 everywhere
    m = coco_metrics([gt(a, b)], [pred([fp, a, b], [0.9, 0.8, 0.7])])
    assert_all(m, {"AP": 2 / 3, "AR@100": 1})


def test_box_metrics_use_the_detection_boxes():
    """Exact masks, but detection boxes shifted 5 px (box IoU 0.6): masks score 1, boxes 0.3."""
    boxes = [masks_to_boxes(np.stack(ms)) + np.array([5, 0, 5, 0], np.float32) for ms in IMAGES]
    preds = [(b, np.array([0.9, 0.8]), np.stack(ms)) for b, ms in zip(boxes, IMAGES)]
    m = coco_metrics(GT, preds)
    assert m["mask_AP"] == 1 and m["mask_AR@100"] == 1
    assert m["box_AP"] == pytest.approx(0.3) and m["box_AR@100"] == pytest.approx(0.3) and m["box_AP50"] == 1


def test_input_forms_agree():
    """Sample or (masks, boxes); Segments, (boxes, scores, masks) or a mapping: the same numbers."""
    rng = np.random.default_rng(0)
    preds = [
        pred([np.roll(m, int(rng.integers(0, 8)), axis=0) for m in ms] + [square(50, 80, 10)], list(rng.random(3)))
        for ms in IMAGES
    ]
    ref = coco_metrics(GT, preds)
    samples = [Sample(np.zeros((*SIZE, 3), np.uint8), m, b.astype(np.float32), f"im{i}") for i, (m, b) in enumerate(GT)]
    tuples = [(p.boxes, p.scores, p.masks) for p in preds]
    dicts = [{"boxes": p.boxes, "scores": p.scores, "masks": p.masks} for p in preds]
    for g, d in ((samples, preds), (GT, tuples), (samples, dicts)):
        m = coco_metrics(g, d)
        assert m.keys() == ref.keys()
        for k in ref:
            assert m[k] == pytest.approx(ref[k], nan_ok=True), k
    assert 0 < ref["mask_AP"] < 1


def _random_case(seed: int):
    """Three images with small, medium and large objects and jittered, partly wrong predictions."""
    rng = np.random.default_rng(seed)
    size = (240, 320)
    gts, preds = [], []
    for _ in range(3):
        masks = [square(int(rng.integers(0, 200)), int(rng.integers(0, 280)), s, size) for s in (12, 20, 45, 60)]
        masks.append(square(int(rng.integers(0, 100)), int(rng.integers(0, 150)), 120, size))
        masks = [m for m in masks if m.any()]
        gts.append(gt(*masks))
        pm = [np.roll(m, tuple(rng.integers(-4, 5, 2)), axis=(0, 1)) for m in masks]
        pm += [
            square(int(rng.integers(0, 220)), int(rng.integers(0, 300)), int(rng.integers(5, 80)), size)
            for _ in range(14)
        ]
        keep = [m for m in pm if m.any()]
        boxes = masks_to_boxes(np.stack(keep)) + rng.normal(0, 1.5, (len(keep), 4)).astype(np.float32)
        preds.append((boxes, rng.random(len(keep)), np.stack(keep)))
    return size, gts, preds


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_pycocotools_summarize_where_it_means_the_same(seed):
    """Independent pycocotools run (loadRes, summarize) with maxDets [10, 100, 1000]: its stats are
    AP/AP50/AP75 at maxDets[2] = 1000, AR at 10/100/1000, area ARs at 1000 - our keys, by name."""
    size, gts, preds = _random_case(seed)
    ours = coco_metrics(gts, preds)
    images = [{"id": i + 1, "height": size[0], "width": size[1]} for i in range(len(gts))]
    anns, res_segm, res_box = [], [], []
    for i, ((masks, boxes), (pboxes, scores, pmasks)) in enumerate(zip(gts, preds)):
        for m, b in zip(masks, boxes):
            rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "category_id": 1,
                    "segmentation": rle,
                    "area": float(m.sum()),
                    "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                    "iscrowd": 0,
                }
            )
        for b, s, m in zip(pboxes.tolist(), scores.tolist(), pmasks):
            rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
            res_segm.append({"image_id": i + 1, "category_id": 1, "segmentation": rle, "score": s})
            res_box.append(
                {"image_id": i + 1, "category_id": 1, "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "score": s}
            )
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {"images": images, "annotations": anns, "categories": [{"id": 1}]}
        coco.createIndex()
        for kind, iou_type, res in (("mask", "segm", res_segm), ("box", "bbox", res_box)):
            ev = COCOeval(coco, coco.loadRes(res), iou_type)
            ev.params.maxDets = [10, 100, 1000]
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
            s = ev.stats
            expected = {
                "AP": s[0],
                "AP50": s[1],
                "AP75": s[2],
                "AR@10": s[6],
                "AR@100": s[7],
                "AR@1000": s[8],
                "AR_small@1000": s[9],
                "AR_medium@1000": s[10],
                "AR_large@1000": s[11],
            }
            for key, value in expected.items():
                assert value > -1
                assert ours[f"{kind}_{key}"] == pytest.approx(value, abs=1e-12), (kind, key)
    assert 0 < ours["mask_AP"] < 1 and ours["mask_AR@10"] < ours["mask_AR@100"]


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(FastSAMError, match="2 ground-truth images but 1"):
        coco_metrics(GT, [pred(IMAGES[0], [0.9, 0.8])])
    with pytest.raises(FastSAMError, match="size"):
        coco_metrics(GT[:1], [pred([square(0, 0, 5, (32, 32))], [0.9])])
    with pytest.raises(FastSAMError, match="no ground-truth instances"):
        coco_metrics([(np.zeros((0, *SIZE), bool), np.zeros((0, 4)))], [pred(IMAGES[0], [0.9, 0.8])])
    with pytest.raises(FastSAMError, match="boxes of shape"):
        coco_metrics([(np.stack(IMAGES[0]), np.zeros((3, 4)))], [pred(IMAGES[0], [0.9, 0.8])])
    with pytest.raises(FastSAMError, match="missing key"):
        coco_metrics(GT[:1], [{"boxes": np.zeros((0, 4)), "scores": np.zeros(0)}])


def test_empty_predictions_score_zero():
    m = coco_metrics(GT, [Segments.empty(SIZE), Segments.empty(SIZE)])
    assert all(m[k] == 0 for k in MAIN_KEYS)


# --------------------------------------------------------------------------------------- evaluate
@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("synth")
    write_dataset(d, 3, seed=0, size=(96, 128))
    return d


@pytest.fixture(scope="module")
def random_model(tmp_path_factory) -> Path:
    """A random-weight n-scale model whose provenance records imgsz 128."""
    net = build_model("n")
    path = tmp_path_factory.mktemp("model") / "n.safetensors"
    return save_safetensors(net.state_dict(), net.config, path, provenance={"imgsz": 128})


@pytest.fixture(scope="module")
def random_predictor(random_model) -> FastSAM:
    return FastSAM(random_model)


class Oracle:
    """A predictor that answers with the ground truth (scores descending) and records its configs."""

    def __init__(self, dataset):
        self.truth = {s.image.tobytes(): s for s in (dataset[i] for i in range(len(dataset)))}
        self.configs: list[PredictConfig] = []

    def segment(self, image, cfg):
        self.configs.append(cfg)
        s = self.truth[image.tobytes()]
        return Segments.from_masks(s.masks, np.linspace(0.9, 0.1, len(s.masks)))


def test_evaluate_oracle_scores_one_and_passes_options(synth_dir):
    ds = SA1BDataset(synth_dir)
    oracle = Oracle(ds)
    out = evaluate(oracle, ds, imgsz=256, conf=0.01, iou=0.6, max_det=50, progress=False)
    counts = [len(ds[i].masks) for i in range(3)]
    assert max(counts) > 10  # so that maxDets 10 matters
    assert all(out[k] == 1 for k in MAIN_KEYS if "@10" not in k or "@100" in k)
    # only the 10 best-scored masks of each image count for AR@10
    ar10 = sum(min(10, c) for c in counts) / sum(counts)
    assert out["mask_AR@10"] == pytest.approx(ar10) and out["box_AR@10"] == pytest.approx(ar10)
    assert out["images"] == 3 and out["instances"] == sum(counts) == out["detections"]
    assert out["seconds"] >= 0
    assert oracle.configs == [PredictConfig(imgsz=256, conf=0.01, iou=0.6, retina_masks=True, max_det=50)] * 3
    assert evaluate(oracle, ds, imgsz=256, limit=2, progress=False)["images"] == 2


def test_evaluate_skips_corrupt_images_without_double_counting(tmp_path):
    write_dataset(tmp_path, 3, seed=0, size=(96, 128))
    oracle = Oracle(SA1BDataset(tmp_path))
    (tmp_path / "sa_000002.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    ds = SA1BDataset(tmp_path)
    out = evaluate(oracle, ds, imgsz=128, progress=False)
    assert out["images"] == 2 and len(oracle.configs) == 2 and out["mask_AP"] == 1
    assert any("sa_000002.jpg" in p.file for p in ds.problems)
    with pytest.raises(FastSAMError, match="no images"):
        evaluate(oracle, [], imgsz=128, progress=False)


@pytest.mark.slow
def test_evaluate_random_model(synth_dir, random_predictor):
    """A real (random-weight) model: every key present, values in [0, 1] (area ARs may be undefined),
    and the same numbers as coco_metrics over predictor.segment with the same options."""
    ds = SA1BDataset(synth_dir)
    model = random_predictor
    out = evaluate(model, ds, imgsz=128, max_det=100, progress=False)
    assert set(METRIC_KEYS) | {"images", "instances", "detections", "seconds"} == set(out)
    assert all(0 <= out[k] <= 1 for k in MAIN_KEYS)
    assert all(math.isnan(out[k]) or 0 <= out[k] <= 1 for k in AREA_KEYS)
    cfg = PredictConfig(imgsz=128, conf=0.001, iou=0.7, max_det=100)
    samples = [ds[i] for i in range(len(ds))]
    direct = coco_metrics(samples, [model.segment(s.image, cfg) for s in samples])
    for k in METRIC_KEYS:
        assert out[k] == pytest.approx(direct[k], nan_ok=True)
    assert out["detections"] > 0 and out["instances"] == sum(len(s.masks) for s in samples)


def test_default_imgsz_reads_provenance(random_predictor):
    assert default_imgsz(random_predictor) == 128  # read from the safetensors metadata
    net = build_model("n")
    assert default_imgsz(SimpleNamespace(network=net)) == 1024  # a network without provenance
    for value, expected in (("640", 640), ("big", 1024), (16, 1024), (None, 1024)):
        net.provenance = {"imgsz": value}
        assert default_imgsz(SimpleNamespace(network=net)) == expected, value


# ---------------------------------------------------------------------------------------- datasets
def _write_jpg(path: Path, size=(64, 80)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((*size, 3), 128, np.uint8))


def test_detect_and_open_coco(tmp_path):
    """COCO's own layout: annotations/instances_x.json + a sibling image folder."""
    _write_jpg(tmp_path / "val" / "a.jpg")
    m = square(10, 20, 15, (64, 80))
    rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode()
    coco = {
        "images": [{"id": 7, "file_name": "a.jpg", "height": 64, "width": 80}],
        "annotations": [{"id": 1, "image_id": 7, "segmentation": rle, "iscrowd": 0, "category_id": 1}],
        "categories": [{"id": 1, "name": "x"}],
    }
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "captions_x.json").write_text(json.dumps({"images": [], "annotations": []}))
    (tmp_path / "annotations" / "instances_x.json").write_text(json.dumps(coco))
    assert detect_format(tmp_path) == "coco"
    ds, fmt = open_dataset(tmp_path)
    assert fmt == "coco" and len(ds) == 1
    np.testing.assert_array_equal(ds[0].masks[0], m)


def test_detect_and_open_yolo(tmp_path):
    _write_jpg(tmp_path / "images" / "a.jpg")
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("0 0.25 0.25 0.5 0.25 0.5 0.5 0.25 0.5\n")
    assert detect_format(tmp_path) == "yolo"
    ds, fmt = open_dataset(tmp_path, "yolo")
    assert fmt == "yolo" and ds[0].masks.shape[0] == 1 and ds[0].masks[0].sum() > 200


def test_detect_sa1b_and_errors(synth_dir, tmp_path):
    assert detect_format(synth_dir) == "sa1b"
    ds, fmt = open_dataset(synth_dir, "auto")
    assert fmt == "sa1b" and len(ds) == 3
    with pytest.raises(FastSAMError, match="no dataset found"):
        open_dataset(tmp_path)
    with pytest.raises(FastSAMError, match="data directory not found"):
        open_dataset(tmp_path / "nope")
    with pytest.raises(FastSAMError, match="unknown dataset format 'voc'"):
        open_dataset(synth_dir, "voc")
    with pytest.raises(FastSAMError, match="no COCO annotations"):
        open_dataset(synth_dir.parent, "coco")


def test_format_table():
    m = coco_metrics(GT, [pred(ms, [0.9, 0.8]) for ms in IMAGES])
    lines = format_table(m).splitlines()
    assert len(lines) == 3 and lines[0].split()[:6] == ["AP", "AP50", "AP75", "AR@10", "AR@100", "AR@1000"]
    assert lines[1].split()[0] == "mask" and lines[1].split()[1:8] == ["1.0000"] * 7 and lines[1].endswith("n/a")
    assert lines[2].split()[0] == "box"


# --------------------------------------------------------------------------------------------- CLI
def _one_error_line(capsys, rc: int) -> str:
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastsam: error:") and "Traceback" not in err, err
    return lines[0]


@pytest.mark.slow
def test_cli_val_writes_metrics(synth_dir, random_model, tmp_path, capsys):
    data = tmp_path / "data"
    write_dataset(data, 2, seed=3, size=(96, 128))
    (data / "zz.json").write_text("{not json")
    (data / "zz.jpg").write_bytes(b"")
    out = tmp_path / "out"
    rc = main(["val", "--data", str(data), "--model", str(random_model), "--out", str(out), "--max-det", "100"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    record = json.loads((out / "metrics.json").read_text())
    assert set(METRIC_KEYS) <= set(record)
    assert all(0 <= record[k] <= 1 for k in MAIN_KEYS)
    assert record["images"] == 2 and record["imgsz"] == 128 and record["format"] == "sa1b"
    assert record["max_det"] == 100 and record["problems"] == 1
    assert "mask" in cap.out and "box" in cap.out and "AR@1000" in cap.out
    warnings = [line for line in cap.err.splitlines() if line.startswith("fastsam: warning:")]
    assert any("zz.json" in w and "malformed JSON" in w for w in warnings)
    assert any("1 problem" in w for w in warnings)
    assert not [p for p in out.iterdir() if p.name != "metrics.json"]  # no temporary file left


def test_cli_val_errors(synth_dir, random_model, tmp_path, capsys, monkeypatch):
    model = ["--model", str(random_model), "--out", str(tmp_path / "out")]
    assert "not found" in _one_error_line(capsys, main(["val", "--data", str(tmp_path / "nope"), *model]))
    (tmp_path / "empty").mkdir()
    assert "no dataset found" in _one_error_line(capsys, main(["val", "--data", str(tmp_path / "empty"), *model]))
    line = _one_error_line(capsys, main(["val", "--data", str(synth_dir), "--format", "voc", *model]))
    assert "'voc'" in line and "sa1b" in line
    line = _one_error_line(capsys, main(["val", "--data", str(synth_dir), "--model", str(tmp_path / "w.pt")]))
    assert "w.pt" in line
    line = _one_error_line(capsys, main(["val", "--data", str(synth_dir), "--conf", "2", *model]))
    assert "conf" in line
    import fastsam.weights

    monkeypatch.setattr(fastsam.weights, "_HERE", tmp_path)  # as if no demo model were shipped
    line = _one_error_line(capsys, main(["val", "--data", str(synth_dir), "--out", str(tmp_path / "out")]))
    assert "demo segmentation model" in line
    assert not (tmp_path / "out" / "metrics.json").exists()
