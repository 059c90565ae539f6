"""Synthetic SA-1B-layout scenes: determinism, exact visible masks, captions, sizes, file layout."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from fastsam.data.synth import MIN_AREA, PALETTE, SHAPES, _annotations, _Shape, _shape_mask, render_scene, write_dataset

SIZE = (480, 640)


@pytest.fixture(scope="module")
def scenes():
    return [render_scene(np.random.default_rng([7, i]), SIZE) for i in range(20)]


def _decode(ann: dict) -> np.ndarray:
    rle = dict(ann["segmentation"], counts=ann["segmentation"]["counts"].encode())
    return mask_utils.decode(rle).astype(bool), rle


def test_render_determinism():
    a_img, a_ann = render_scene(np.random.default_rng(3), SIZE)
    b_img, b_ann = render_scene(np.random.default_rng(3), SIZE)
    c_img, c_ann = render_scene(np.random.default_rng(4), SIZE)
    assert a_img.shape == (*SIZE, 3) and a_img.dtype == np.uint8
    assert np.array_equal(a_img, b_img) and a_ann == b_ann
    assert not np.array_equal(a_img, c_img) and a_ann != c_ann


def test_write_dataset_deterministic(tmp_path):
    size = (120, 160)
    pa = write_dataset(tmp_path / "a", 3, seed=5, size=size)
    pb = write_dataset(tmp_path / "b", 3, seed=5, size=size)
    pc = write_dataset(tmp_path / "c", 3, seed=6, size=size)
    assert [p.name for p in pa] == ["sa_000001.jpg", "sa_000002.jpg", "sa_000003.jpg"]
    for a, b, c in zip(pa, pb, pc):
        ja, jb, jc = (p.with_suffix(".json").read_bytes() for p in (a, b, c))
        assert ja == jb and ja != jc
        ia, ib, ic = (cv2.imread(str(p)) for p in (a, b, c))
        assert np.array_equal(ia, ib) and not np.array_equal(ia, ic)
    assert not list((tmp_path / "a").glob(".*.tmp"))
    # image i is reproducible on its own: a 3-image set's 2nd image equals a 2-image set's 2nd image
    p2 = write_dataset(tmp_path / "d", 2, seed=5, size=size)
    assert p2[1].with_suffix(".json").read_bytes() == pa[1].with_suffix(".json").read_bytes()


def test_sa1b_layout(tmp_path):
    size = (100, 150)
    (path,) = write_dataset(tmp_path, 1, seed=0, size=size)
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["image"] == {"image_id": 1, "file_name": "sa_000001.jpg", "width": 150, "height": 100}
    img = cv2.imread(str(path))
    assert img.shape == (100, 150, 3)
    assert 3 <= len(meta["annotations"]) <= 40
    assert {"id", "segmentation", "bbox", "area", "caption", "shape", "color"} <= set(meta["annotations"][0])


def test_counts_and_shape_kinds(scenes):
    counts = [len(anns) for _, anns in scenes]
    assert all(3 <= c <= 40 for c in counts), counts
    kinds = {a["shape"] for _, anns in scenes for a in anns}
    assert kinds == set(SHAPES)


def test_annotations_exact(scenes):
    for img, anns in scenes:
        h, w = img.shape[:2]
        union = np.zeros((h, w), np.int32)
        assert [a["id"] for a in anns] == list(range(1, len(anns) + 1))
        for a in anns:
            m, rle = _decode(a)
            assert m.shape == (h, w) and a["segmentation"]["size"] == [h, w]
            assert int(m.sum()) == a["area"] >= MIN_AREA
            assert mask_utils.area(rle) == a["area"]
            assert np.allclose(mask_utils.toBbox(rle), a["bbox"])
            assert all(isinstance(v, int) for v in a["bbox"])
            union += m
            assert a["color"] in PALETTE and a["shape"] in SHAPES
            assert a["caption"] == f"a {a['color']} {a['shape']}"
        assert union.max() <= 1  # visible parts are pairwise disjoint


def test_size_range(scenes):
    sides = [max(a["bbox"][2:]) for _, anns in scenes for a in anns]
    assert min(sides) <= 20
    assert max(sides) >= min(SIZE) / 3


def test_occlusion_removes_covered_area():
    size = (100, 120)
    back = _Shape("ellipse", "red", 60, 50, 30, 0.0, {"aspect": 1.0})
    front = _Shape("polygon", "blue", 60, 50, 12, 0.3, {"n": 4, "jitter": np.zeros(4), "radii": np.ones(4)})
    anns, full = _annotations([back, front], size)
    assert [a["shape"] for a in anns] == ["ellipse", "polygon"]
    vis_back, _ = _decode(anns[0])
    vis_front, _ = _decode(anns[1])
    assert np.array_equal(vis_back, full[0] & ~full[1])
    assert np.array_equal(vis_front, full[1])
    assert not vis_back[50, 60] and vis_front[50, 60]
    assert anns[0]["area"] == int(full[0].sum() - (full[0] & full[1]).sum())
    # fully hidden objects are dropped
    tiny = _Shape("ellipse", "green", 60, 50, 4, 0.0, {"aspect": 1.0})
    anns2, _ = _annotations([tiny, back], size)
    assert [a["color"] for a in anns2] == ["red"]


def test_ring_has_hole():
    ring = _Shape("ring", "cyan", 50, 50, 30, 0.0, {"aspect": 1.0, "inner": 0.5})
    m = _shape_mask(ring, (100, 100))
    assert not m[50, 50] and m[50, 50 + 25] and not m[50, 50 + 35]


def test_cli_synth_writes_dataset(tmp_path, capsys):
    """`fastsam synth` writes the SA-1B layout; a bad size is a one-line error with exit 2."""
    from fastsam.cli import main

    assert main(["synth", "--n", "2", "--out", str(tmp_path / "s"), "--seed", "3", "--size", "96", "128"]) == 0
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [
        "sa_000001.jpg",
        "sa_000001.json",
        "sa_000002.jpg",
        "sa_000002.json",
    ]
    capsys.readouterr()
    assert main(["synth", "--n", "1", "--out", str(tmp_path / "t"), "--size", "8", "8"]) == 2
    assert capsys.readouterr().err.startswith("fastsam: error:")
