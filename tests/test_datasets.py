"""Dataset readers: SA-1B (dir + tar), COCO, YOLO-seg, with broken cases reported as Problems."""

from __future__ import annotations

import json
import tarfile

import cv2
import numpy as np
import pytest

from fastsam.data.datasets import COCODataset, SA1BDataset, YOLODataset
from fastsam.data.synth import write_dataset
from fastsam.errors import FastSAMError

mask_utils = pytest.importorskip("pycocotools.mask")


def tight(m):
    ys, xs = np.nonzero(m)
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def check_boxes(s):
    assert s.boxes.dtype == np.float32 and s.boxes.shape == (len(s.masks), 4)
    for m, b in zip(s.masks, s.boxes):
        assert list(b) == tight(m)


def only(problems, needle):
    hits = [p for p in problems if needle in p.file]
    assert len(hits) == 1, problems
    return hits[0]


def test_sa1b_dir_and_tar(tmp_path):
    d = tmp_path / "sa"
    write_dataset(d, 3, seed=0, size=(96, 128))
    ds = SA1BDataset(d)
    assert len(ds) == 3 and ds.problems == []
    for i in range(3):
        s = ds[i]
        meta = json.loads((d / f"sa_{i + 1:06d}.json").read_text())
        assert s.name == f"sa_{i + 1:06d}" and s.image.shape == (96, 128, 3) and s.image.dtype == np.uint8
        expect = [
            mask_utils.decode({"size": a["segmentation"]["size"], "counts": a["segmentation"]["counts"].encode()})
            for a in meta["annotations"]
        ]
        assert s.masks.dtype == bool and s.masks.shape == (len(expect), 96, 128) and len(expect) > 0
        assert all(np.array_equal(m, e.astype(bool)) for m, e in zip(s.masks, expect))
        check_boxes(s)
        assert [list(b) for b in s.boxes] == [
            [x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in meta["annotations"])
        ]
    dir_samples = [ds[i] for i in range(3)]

    shard = tmp_path / "shards" / "sa_000000.tar"
    shard.parent.mkdir()
    with tarfile.open(shard, "w") as tf:
        for stem in ("sa_000001", "sa_000002"):
            for ext in (".jpg", ".json"):
                tf.add(d / f"{stem}{ext}", arcname=f"./{stem}{ext}")
    for root in (shard, shard.parent):
        t = SA1BDataset(root)
        assert len(t) == 2 and t.problems == []
        for i in range(2):
            assert np.array_equal(t[i].image, dir_samples[i].image)
            assert np.array_equal(t[i].masks, dir_samples[i].masks)
            assert np.array_equal(t[i].boxes, dir_samples[i].boxes)
    assert not any(p.suffix == ".json" for p in shard.parent.iterdir())  # nothing extracted


def test_sa1b_broken(tmp_path):
    d = tmp_path / "sa"
    write_dataset(d, 3, seed=0, size=(96, 128))
    meta = json.loads((d / "sa_000001.json").read_text())
    good = len(meta["annotations"])
    h, w = 96, 128
    empty = {"size": [h, w], "counts": mask_utils.encode(np.zeros((h, w), np.uint8, order="F"))["counts"].decode()}
    wrong_size = {"size": [h + 1, w], "counts": [h * w + w]}
    meta["annotations"] += [
        {"id": 101, "segmentation": empty},
        {"id": 102, "segmentation": wrong_size},
        {"id": 103, "segmentation": {"size": [h, w], "counts": "\x01\x02garbage~~~"}},
        {"id": 104, "segmentation": {"size": [h, w], "counts": [5, 10]}},  # does not sum to H*W
    ]
    (d / "sa_000001.json").write_text(json.dumps(meta))
    m2 = json.loads((d / "sa_000002.json").read_text())
    m2["image"]["file_name"] = "nope.jpg"
    (d / "sa_000099.json").write_text(json.dumps(m2))  # its image is missing (no nope.jpg, no sa_000099.jpg)
    (d / "sa_000098.json").write_text("{not json")

    ds = SA1BDataset(d)
    assert len(ds) == 3
    assert len(ds.problems) == 2
    assert "not found" in only(ds.problems, "sa_000099.json").what
    assert "malformed" in only(ds.problems, "sa_000098.json").what
    s = ds[0]
    assert len(s.masks) == good  # good annotations still load
    check_boxes(s)
    ps = [p for p in ds.problems if p.file.endswith("sa_000001.json")]
    assert len(ps) == 4
    for aid, word in ((101, "empty"), (102, "size"), (103, "decoded"), (104, "sum")):
        hits = [p for p in ps if f"annotation {aid}:" in p.what]
        assert len(hits) == 1 and word in hits[0].what, ps
    ds[0]
    assert len(ds.problems) == 6  # reported once only


def test_sa1b_corrupt_image_skips_to_next(tmp_path, caplog):
    d = tmp_path / "sa"
    write_dataset(d, 2, seed=0, size=(96, 128))
    (d / "sa_000001.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    ds = SA1BDataset(d)
    with caplog.at_level("WARNING"):
        s = ds[0]
    assert s.name == "sa_000002"
    assert "corrupt" in only(ds.problems, "sa_000001.jpg").what and "sa_000001.jpg" in caplog.text
    (d / "sa_000002.jpg").write_bytes(b"garbage")
    with pytest.raises(FastSAMError, match="no readable sample"):
        SA1BDataset(d)[1]


def _poly_mask(poly, h, w):
    m = np.zeros((h, w), np.uint8)
    cv2.fillPoly(m, [np.round(np.asarray(poly, float).reshape(-1, 2)).astype(np.int32)], 1)
    return m.astype(bool)


def test_coco(tmp_path):
    h, w = 60, 80
    img = np.random.default_rng(0).integers(0, 255, (h, w, 3), np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), img[:, :, ::-1])
    poly = [10, 10, 40, 12, 30, 40, 12, 35]
    partial = [60, 30, 100, 30, 100, 70, 60, 70]
    rle_mask = np.zeros((h, w), np.uint8, order="F")
    rle_mask[5:9, 50:70] = 1
    crle = mask_utils.encode(rle_mask)
    ann = [
        {"id": 1, "image_id": 1, "category_id": 3, "segmentation": [poly], "iscrowd": 0},
        {
            "id": 2,
            "image_id": 1,
            "category_id": 1,
            "segmentation": {"size": [h, w], "counts": crle["counts"].decode()},
            "iscrowd": 0,
        },
        {
            "id": 3,
            "image_id": 1,
            "category_id": 1,
            "segmentation": {"size": [h, w], "counts": [0, h * w]},
            "iscrowd": 1,
        },
        {"id": 4, "image_id": 1, "category_id": 1, "segmentation": [[200, 200, 220, 200, 220, 230]], "iscrowd": 0},
        {"id": 5, "image_id": 1, "category_id": 1, "segmentation": [partial], "iscrowd": 0},
        {"id": 6, "image_id": 1, "category_id": 1, "segmentation": {"size": [h, w], "counts": [0, 20, h * w - 20]}},
        {"id": 7, "image_id": 2, "category_id": 1, "segmentation": [poly], "iscrowd": 0},
    ]
    images = [
        {"id": 1, "file_name": "a.png", "width": w, "height": h},
        {"id": 2, "file_name": "missing.png", "width": w, "height": h},
    ]
    js = tmp_path / "inst.json"
    js.write_text(json.dumps({"images": images, "annotations": ann, "categories": []}))
    ds = COCODataset(tmp_path, js)
    assert len(ds) == 1
    assert "not found" in only(ds.problems, "missing.png").what
    s = ds[0]
    assert np.array_equal(s.image, img) and s.name == "a"
    uncompressed = np.zeros(h * w, bool)
    uncompressed[:20] = True
    expect = [_poly_mask(poly, h, w), rle_mask.astype(bool), _poly_mask(partial, h, w), uncompressed.reshape(w, h).T]
    assert s.masks.shape == (4, h, w)
    assert all(np.array_equal(a, b) for a, b in zip(s.masks, expect))
    assert s.boxes[2].tolist() == [60, 30, 80, 60]  # clipped to the image
    check_boxes(s)
    ps = [p for p in ds.problems if p.file.endswith("a.png")]
    assert len(ps) == 2
    assert [p for p in ps if "annotation 4:" in p.what and "outside" in p.what]
    assert [p for p in ps if "annotation 5:" in p.what and "clipped" in p.what]


def test_yolo(tmp_path):
    h, w = 50, 100
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "x.png"), np.full((h, w, 3), 120, np.uint8))
    cv2.imwrite(str(tmp_path / "images" / "y.png"), np.full((h, w, 3), 30, np.uint8))
    good = [0.1, 0.2, 0.5, 0.2, 0.4, 0.8]
    (tmp_path / "labels" / "x.txt").write_text(
        "0 " + " ".join(map(str, good)) + "\n1 0.1 0.2 0.3 0.4 0.5\n2 1.2 1.2 1.5 1.2 1.5 1.9\n"
    )
    ds = YOLODataset(tmp_path)
    assert len(ds) == 2
    s = ds[0]
    assert s.name == "x" and s.image.shape == (h, w, 3)
    pts = (np.array(good).reshape(-1, 2) * (w, h)).ravel()
    assert s.masks.shape == (1, h, w) and np.array_equal(s.masks[0], _poly_mask(pts, h, w))
    check_boxes(s)
    assert len(ds.problems) == 2 and all(p.file.endswith("x.txt") for p in ds.problems)
    assert [p for p in ds.problems if "line 2:" in p.what and "5 coordinates" in p.what]
    assert [p for p in ds.problems if "line 3:" in p.what and "outside" in p.what]
    e = ds[1]  # no label file -> no objects
    assert e.masks.shape == (0, h, w) and e.boxes.shape == (0, 4)
