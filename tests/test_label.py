"""``fastsam label``: COCO and YOLO-seg datasets of the demo model's masks, read back by val and train."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from fastsam import FastSAM
from fastsam.cli import main
from fastsam.config import PredictConfig
from fastsam.data.datasets import COCODataset, YOLODataset
from fastsam.data.synth import write_dataset

SIZE = (160, 224)
OPTS = ["--conf", "0.4", "--iou", "0.9", "--max-det", "100", "--no-progress"]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("label_scenes")
    write_dataset(root, 3, seed=11, size=SIZE)
    return root


def _digests(root: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.iterdir())}


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_coco_round_trip_val_recalls_every_label(scenes: Path, tmp_path: Path, capsys) -> None:
    before = _digests(scenes)
    ds = tmp_path / "coco"
    assert main(["label", str(scenes), "--format", "coco", "--out", str(ds), *OPTS]) == 0
    data = json.loads((ds / "annotations.json").read_text())
    assert data["categories"] == [{"id": 1, "name": "object", "supercategory": "object"}]
    assert [im["file_name"] for im in data["images"]] == [f"sa_00000{i}.jpg" for i in (1, 2, 3)]
    assert all((im["height"], im["width"]) == SIZE for im in data["images"])
    assert len({a["id"] for a in data["annotations"]}) == len(data["annotations"]) > 3
    # each annotation: compressed RLE whose area and tight XYWH box are the ones stored
    reader = COCODataset(ds / "images", ds / "annotations.json")
    samples = [reader[i] for i in range(len(reader))]
    by_image = [[a for a in data["annotations"] if a["image_id"] == im["id"]] for im in data["images"]]
    for sample, anns in zip(samples, by_image):
        assert len(sample.masks) == len(anns)
        for m, box, a in zip(sample.masks, sample.boxes, anns):
            assert a["iscrowd"] == 0 and isinstance(a["segmentation"]["counts"], str) and 0 < a["score"] <= 1
            assert a["area"] == int(m.sum())
            assert a["bbox"] == [box[0], box[1], box[2] - box[0], box[3] - box[1]]
    # the same model and options on the written dataset find every label exactly: AR@100 = 1
    assert main(["val", "--data", str(ds), "--out", str(tmp_path / "val"), *OPTS]) == 0
    metrics = json.loads((tmp_path / "val" / "metrics.json").read_text())
    assert metrics["format"] == "coco" and metrics["images"] == 3
    assert metrics["instances"] == len(data["annotations"])
    assert metrics["mask_AR@100"] == 1.0 and metrics["mask_AP"] == 1.0
    # and they are the model's masks: the first image's labels equal a direct everything-mode pass
    seg = FastSAM().segment(samples[0].image, PredictConfig(imgsz=448, conf=0.4, iou=0.9, max_det=100))
    assert np.array_equal(samples[0].masks, seg.masks[seg.areas > 0])
    # the inputs are untouched; the dataset's images are the same bytes (hard links or copies)
    assert _digests(scenes) == before
    assert all((ds / "images" / n).read_bytes() == (scenes / n).read_bytes() for n in before if n.endswith(".jpg"))
    assert "3 of 3 images labelled" in capsys.readouterr().err


def test_coco_polygons_decode_to_the_rle_masks(scenes: Path, tmp_path: Path) -> None:
    rle, poly = tmp_path / "rle", tmp_path / "poly"
    src = str(scenes / "sa_000002.jpg")
    assert main(["label", src, "--format", "coco", "--out", str(rle), *OPTS]) == 0
    assert main(["label", src, "--format", "coco", "--out", str(poly), "--polygons", *OPTS]) == 0
    anns = json.loads((poly / "annotations.json").read_text())["annotations"]
    assert anns and all(isinstance(a["segmentation"], list) for a in anns)
    a, b = (
        COCODataset(rle / "images", rle / "annotations.json")[0],
        COCODataset(poly / "images", poly / "annotations.json")[0],
    )
    assert len(a.masks) == len(b.masks) == len(anns)
    # outer contours: the same masks, holes (rings) filled
    assert np.median([_iou(x, y) for x, y in zip(a.masks, b.masks)]) > 0.99
    assert min((x & y).sum() / x.sum() for x, y in zip(a.masks, b.masks)) > 0.85


@pytest.mark.slow
def test_yolo_dataset_reads_back_and_trains_one_epoch(scenes: Path, tmp_path: Path) -> None:
    before = _digests(scenes)
    ds, coco = tmp_path / "yolo", tmp_path / "coco"
    assert main(["label", str(scenes), "--format", "yolo", "--out", str(ds), *OPTS]) == 0
    assert main(["label", str(scenes), "--format", "coco", "--out", str(coco), *OPTS]) == 0
    assert sorted(p.name for p in (ds / "labels").iterdir()) == [f"sa_00000{i}.txt" for i in (1, 2, 3)]
    yaml = (ds / "data.yaml").read_text()
    assert 'train: images\nval: images\nnames:\n  0: "object"\n' in yaml and f'path: "{ds.resolve()}"' in yaml
    reader, ref = YOLODataset(ds), COCODataset(coco / "images", coco / "annotations.json")
    assert len(reader) == 3 and not reader.problems
    for i in range(3):
        lines = (ds / "labels" / f"sa_00000{i + 1}.txt").read_text().splitlines()
        cols = [line.split() for line in lines]
        assert all(c[0] == "0" and len(c) % 2 == 1 and all(0 <= float(v) <= 1 for v in c[1:]) for c in cols)
        got, want = reader[i], ref[i]
        assert len(got.masks) == len(lines) == len(want.masks)  # demo-model masks are one blob each
        assert np.median([_iou(x, y) for x, y in zip(got.masks, want.masks)]) > 0.8
    assert _digests(scenes) == before
    out = tmp_path / "run"
    argv = ["train", "--data", str(ds), "--model", "n", "--imgsz", "64", "--epochs", "1", "--batch", "2"]
    assert main([*argv, "--workers", "0", "--out", str(out), "--no-progress"]) == 0
    assert (out / "weights" / "model.safetensors").is_file()
    assert len((out / "log.jsonl").read_text().splitlines()) >= 1


def test_text_classes_are_the_clip_argmax(scenes: Path, tmp_path: Path) -> None:
    from fastsam.text import get_scorer, mask_crops
    from fastsam.weights import default_clip_path

    names = ["a red star", "a blue ellipse"]
    ds = tmp_path / "text"
    src = [str(scenes / "sa_000001.jpg"), str(scenes / "sa_000003.jpg")]
    assert (
        main(["label", *src, "--format", "coco", "--out", str(ds), "--text", names[0], "--text", names[1], *OPTS]) == 0
    )
    data = json.loads((ds / "annotations.json").read_text())
    assert [c["name"] for c in data["categories"]] == names and [c["id"] for c in data["categories"]] == [1, 2]
    scorer, model = get_scorer(default_clip_path()), FastSAM()
    got, want = [], []
    for im in data["images"]:
        rgb = COCODataset(ds / "images", ds / "annotations.json")[im["id"] - 1].image
        seg = model.segment(rgb, PredictConfig(imgsz=448, conf=0.4, iou=0.9, max_det=100))
        seg = seg[seg.areas > 0]
        sims = scorer.similarity(mask_crops(seg, rgb, np.arange(len(seg))), names)
        want += (np.argmax(sims, axis=0) + 1).tolist()
        got += [a["category_id"] for a in data["annotations"] if a["image_id"] == im["id"]]
    assert got == want and set(want) == {1, 2}  # both classes occur: the argmax decides, not a default


def test_resume_labels_only_what_is_missing(scenes: Path, tmp_path: Path, monkeypatch) -> None:
    ds = tmp_path / "yolo"
    argv = ["label", str(scenes), "--format", "yolo", "--out", str(ds), *OPTS]
    assert main(argv) == 0
    kept = (ds / "labels" / "sa_000001.txt").stat().st_mtime_ns
    (ds / "labels" / "sa_000002.txt").unlink()
    calls = []
    original = FastSAM.segment
    monkeypatch.setattr(FastSAM, "segment", lambda self, img, cfg=None: calls.append(1) or original(self, img, cfg))
    assert main([*argv, "--resume"]) == 0
    assert len(calls) == 1 and (ds / "labels" / "sa_000002.txt").is_file()
    assert (ds / "labels" / "sa_000001.txt").stat().st_mtime_ns == kept
    assert main([*argv[:4], "--format", "coco", "--out", str(ds), "--resume", *OPTS]) == 2  # other options


def test_errors_are_one_line_and_write_nothing(scenes: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "ds"
    bad = [
        (["label", str(tmp_path / "missing.jpg"), "--format", "coco", "--out", str(out)], "no such file"),
        (["label", str(scenes), "--format", "voc", "--out", str(out)], "invalid choice"),
        (["label", str(scenes), "--format", "coco", "--out", str(scenes)], "inside the output"),
        (["label", str(scenes), "--format", "coco", "--out", str(out), "--text", "a", "--text", "a"], "must differ"),
        (["label", str(scenes), "--format", "coco", "--out", str(out), "--conf", "2"], "conf"),
    ]
    for argv, what in bad:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert what in err and len(err.splitlines()) == 1, err
    assert not out.exists()
    full = tmp_path / "full"
    full.mkdir()
    (full / "x.txt").write_text("mine")
    assert main(["label", str(scenes), "--format", "yolo", "--out", str(full)]) == 2
    assert "not empty" in capsys.readouterr().err and sorted(p.name for p in full.iterdir()) == ["x.txt"]
