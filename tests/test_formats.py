"""Tests of fastsam.formats (COCO RLE, boxes, polygons from mask crops) against pycocotools, and of
fastsam.results.Segments built from hand-made crops."""

from __future__ import annotations

import cv2
import numpy as np
import pycocotools.mask as coco
import pytest
from PIL import Image

from fastsam.formats import crop_polygons, mask_bbox_xywh, paste, rle_counts, rle_decode, rle_encode, rle_string
from fastsam.ops import _native
from fastsam.ops.masks import MaskCrops
from fastsam.results import Segments


def _full(crop, region, size):
    """Independent reference: the full (H, W) mask."""
    out = np.zeros(size, bool)
    r0, r1, c0, c1 = region
    out[r0:r1, c0:c1] = crop
    return out


def _coco_string(mask):
    return coco.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode()


def _edge_cases():
    """Named (crop, region, size) cases: borders, tiny/full/empty masks, first/last pixel set."""
    h, w = 9, 13
    rng = np.random.default_rng(7)
    one_first, one_last = np.zeros((h, w), bool), np.zeros((h, w), bool)
    one_first[0, 0] = True
    one_last[-1, -1] = True
    return {
        "region-top-left": (rng.random((4, 5)) > 0.4, (0, 4, 0, 5), (h, w)),
        "region-bottom-right-no-last": (np.pad(np.ones((3, 3), bool), ((0, 1), (0, 1))), (5, 9, 9, 13), (h, w)),
        "region-whole-image": (rng.random((h, w)) > 0.5, (0, h, 0, w), (h, w)),
        "1x1-region": (np.ones((1, 1), bool), (4, 5, 6, 7), (h, w)),
        "1x1-image": (np.ones((1, 1), bool), (0, 1, 0, 1), (1, 1)),
        "empty-crop": (np.zeros((3, 4), bool), (2, 5, 3, 7), (h, w)),
        "crop-0x0": (np.zeros((0, 0), bool), (3, 3, 2, 2), (h, w)),
        "first-pixel": (one_first, (0, h, 0, w), (h, w)),
        "first-pixel-small-region": (np.array([[True, False], [False, True]]), (0, 2, 0, 2), (h, w)),
        "last-pixel": (one_last, (0, h, 0, w), (h, w)),
        "last-pixel-small-region": (np.array([[False, False], [True, True]]), (7, 9, 11, 13), (h, w)),
        "full-image-mask": (np.ones((h, w), bool), (0, h, 0, w), (h, w)),
        "single-column": (np.ones((h, 1), bool), (0, h, 5, 6), (h, w)),
        "single-row": (np.ones((1, w), bool), (4, 5, 0, w), (h, w)),
    }


def _random_cases(n=240, seed=0):
    """Seeded random crops: sizes 1..60, densities 0.02..0.98, regions often touching a border."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        h, w = (int(v) for v in rng.integers(1, 61, size=2))
        r0, c0 = int(rng.integers(0, h)), int(rng.integers(0, w))
        r1, c1 = int(rng.integers(r0 + 1, h + 1)), int(rng.integers(c0 + 1, w + 1))
        if rng.random() < 0.5:  # push the region onto one or more image borders
            r0, r1, c0, c1 = [(0, r1, c0, c1), (r0, h, c0, c1), (r0, r1, 0, c1), (r0, r1, c0, w)][rng.integers(4)]
        density = rng.choice([0.02, 0.2, 0.5, 0.8, 0.98])
        yield rng.random((r1 - r0, c1 - c0)) < density, (r0, r1, c0, c1), (h, w)


EDGE = _edge_cases()


@pytest.mark.parametrize("name", list(EDGE))
def test_rle_edge_cases_match_pycocotools(name):
    """String, decoding (ours and pycocotools') and bbox agree with pycocotools on edge cases."""
    crop, region, size = EDGE[name]
    full = _full(crop, region, size)
    counts = rle_counts(crop, region, size)
    assert sum(counts) == size[0] * size[1]
    assert all(c >= 0 for c in counts)
    s = rle_string(counts)
    np.testing.assert_array_equal(paste(crop, region, size), full)
    np.testing.assert_array_equal(rle_decode({"size": list(size), "counts": counts}), full)
    np.testing.assert_array_equal(rle_decode({"size": list(size), "counts": s}), full)
    np.testing.assert_array_equal(coco.decode({"size": list(size), "counts": s.encode()}).astype(bool), full)
    assert s == _coco_string(full), f"{name}: counts {counts}"


def test_rle_random_masks_match_pycocotools():
    """240 random masks: our compressed string equals pycocotools' encode, byte for byte."""
    bad = []
    for k, (crop, region, size) in enumerate(_random_cases()):
        full = _full(crop, region, size)
        if rle_string(rle_counts(crop, region, size)) != _coco_string(full):
            bad.append((k, region, size, "last pixel set" if full[-1, -1] else "last pixel clear"))
    assert not bad, f"{len(bad)} of 240 differ, e.g. {bad[:5]}"


@pytest.mark.parametrize("kernel", ["native", "numpy"])
def test_rle_encode_matches_pycocotools(kernel, monkeypatch):
    """rle_encode (the compiled kernel .ci/run builds, and the numpy fallback) gives pycocotools'
    string for every edge case and 240 random masks, in one batch."""
    if kernel == "native":
        assert _native.available(), "the C kernel is not built (pip install -e . needs a C compiler)"
    else:
        monkeypatch.setenv("FASTSAM_NATIVE", "0")
    cases = list(EDGE.values()) + list(_random_cases(seed=2))
    for size in {c[2] for c in cases}:  # one batch per image size, as Segments.to_rle calls it
        batch = [(crop, region) for crop, region, sz in cases if sz == size]
        strings = rle_encode([c for c, _ in batch], [r for _, r in batch], size)
        assert strings == [_coco_string(_full(c, r, size)) for c, r in batch]


def test_rle_encode_long_strings():
    """A checkerboard (a run per pixel) overflows the kernel's first buffer (~4 runs per column):
    the second call with the reported length gives pycocotools' string, next to a plain mask."""
    assert _native.available(), "the C kernel is not built (pip install -e . needs a C compiler)"
    board = (np.indices((200, 40)).sum(0) % 2).astype(bool)
    crops, regions = [board, np.ones((5, 5), bool)], [(3, 203, 2, 42), (0, 5, 0, 5)]
    strings = rle_encode(crops, regions, (210, 45))
    assert len(strings[0]) > 13 * (4 * 40 + 8)  # longer than the first buffer
    assert strings == [_coco_string(_full(c, r, (210, 45))) for c, r in zip(crops, regions)]


def test_rle_encode_refuses_a_crop_outside_its_image():
    assert _native.available(), "the C kernel is not built (pip install -e . needs a C compiler)"
    with pytest.raises(ValueError, match="does not fit region"):
        rle_encode([np.ones((3, 3), bool)], [(7, 10, 0, 3)], (9, 13))
    with pytest.raises(ValueError, match="does not fit region"):
        rle_encode([np.ones((2, 3), bool)], [(0, 3, 0, 3)], (9, 13))


def test_rle_random_masks_decode():
    """Our RLE (list and string) decodes to the full mask, with ours and with pycocotools."""
    for crop, region, size in _random_cases(seed=1):
        full = _full(crop, region, size)
        counts = rle_counts(crop, region, size)
        s = rle_string(counts)
        assert sum(counts) == full.size
        np.testing.assert_array_equal(rle_decode({"size": list(size), "counts": counts}), full)
        np.testing.assert_array_equal(rle_decode({"size": list(size), "counts": s.encode()}), full)
        np.testing.assert_array_equal(coco.decode({"size": list(size), "counts": s.encode()}).astype(bool), full)
        # and our decoder reads pycocotools' strings
        np.testing.assert_array_equal(rle_decode({"size": list(size), "counts": _coco_string(full)}), full)


def test_bbox_matches_pycocotools():
    """mask_bbox_xywh == pycocotools.toBbox for non-empty masks, [0, 0, 0, 0] for empty ones."""
    cases = list(_random_cases(seed=2)) + list(EDGE.values())
    n_empty = 0
    for crop, region, size in cases:
        full = _full(crop, region, size)
        ours = mask_bbox_xywh(crop, region)
        if not full.any():
            n_empty += 1
            assert ours == [0, 0, 0, 0]
            continue
        ref = coco.toBbox(coco.encode(np.asfortranarray(full.astype(np.uint8)))).astype(int).tolist()
        assert ours == ref, (region, size)
    assert n_empty >= 2
    # hand-checked: pixels at rows 3..5, cols 7..8 of a crop at (10, 20, 30, 40)
    crop = np.zeros((10, 10), bool)
    crop[3:6, 7:9] = True
    assert mask_bbox_xywh(crop, (10, 20, 30, 40)) == [37, 13, 2, 3]


def _fill(polys, size):
    out = np.zeros(size, np.uint8)
    cv2.fillPoly(out, [np.round(p).astype(np.int32).reshape(-1, 1, 2) for p in polys], 1)
    return out.astype(bool)


def _check_polys(polys, size):
    for p in polys:
        assert p.ndim == 2 and p.shape[1] == 2 and p.dtype == np.float32 and len(p) >= 1
        assert (p[:, 0] >= 0).all() and (p[:, 0] <= size[1] - 1).all()  # x = column
        assert (p[:, 1] >= 0).all() and (p[:, 1] <= size[0] - 1).all()  # y = row


def test_polygons_rectangle_exact_with_offset():
    """A filled rectangle: one contour, offset by the region (x = column, y = row), fills back exactly."""
    size = (30, 40)
    region = (3, 20, 6, 25)
    crop = np.zeros((17, 19), bool)
    crop[2:12, 2:14] = True  # image rows 5..14, cols 8..19
    polys = crop_polygons(crop, region)
    assert len(polys) == 1
    _check_polys(polys, size)
    p = polys[0]
    assert (p[:, 0].min(), p[:, 0].max(), p[:, 1].min(), p[:, 1].max()) == (8, 19, 5, 14)
    np.testing.assert_array_equal(_fill(polys, size), _full(crop, region, size))


def test_polygons_disk_and_borders():
    """A disk touching the image's bottom-right: fill differs from the mask only on contour pixels."""
    size = (50, 60)
    yy, xx = np.mgrid[0 : size[0], 0 : size[1]]
    full = (yy - 38) ** 2 + (xx - 47) ** 2 <= 13**2
    region = (20, 50, 30, 60)
    crop = full[20:50, 30:60]
    assert full[region[0] : region[1], region[2] : region[3]].sum() == full.sum()
    polys = crop_polygons(crop, region)
    assert len(polys) == 1
    _check_polys(polys, size)
    filled = _fill(polys, size)
    kernel = np.ones((3, 3), np.uint8)
    inner = cv2.erode(full.astype(np.uint8), kernel, borderType=cv2.BORDER_REPLICATE).astype(bool)
    outer = cv2.dilate(full.astype(np.uint8), kernel).astype(bool)
    diff = filled ^ full
    assert not (diff & (inner | ~outer)).any()  # only at the contour ring
    assert diff.sum() <= 0.1 * full.sum()
    # same points as cv2 on the full mask
    ref, _ = cv2.findContours(full.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    assert sorted(map(tuple, polys[0].tolist())) == sorted(map(tuple, ref[0].reshape(-1, 2).astype(float).tolist()))


def test_polygons_components_and_empty():
    """Two blobs give two contours; empty and (0, 0) crops give none."""
    crop = np.zeros((10, 10), bool)
    crop[1:3, 1:3] = True
    crop[6:9, 5:9] = True
    polys = crop_polygons(crop, (0, 10, 0, 10))
    assert len(polys) == 2
    np.testing.assert_array_equal(_fill(polys, (10, 10)), crop)
    assert crop_polygons(np.zeros((4, 4), bool), (0, 4, 0, 4)) == []
    assert crop_polygons(np.zeros((0, 0), bool), (2, 2, 3, 3)) == []


# ------------------------------------------------------------------------------------- Segments
SIZE = (20, 30)


@pytest.fixture
def seg():
    """Three overlapping masks (areas 174 > 60 > 35); none touches the last image pixel."""
    regions = np.array([[2, 13, 3, 19], [5, 11, 10, 20], [9, 16, 15, 20]], np.int64)
    big = np.ones((11, 16), bool)
    big[0, 0] = False  # not a plain rectangle
    big[5, 7] = False
    mid = np.ones((6, 10), bool)
    small = np.ones((7, 5), bool)
    boxes = np.array([[3, 2, 19, 13], [10, 5, 20, 11], [15.5, 9, 20, 16]], np.float32)
    crops = MaskCrops(regions, [big, mid, small], np.array([0.95, 0.85, 0.75], np.float32))
    return Segments.from_crops(SIZE, boxes, np.array([0.9, 0.8, 0.7]), crops)


def _expected_masks(seg):
    return np.stack([_full(c, r, SIZE) for c, r in zip(seg.crops, seg.regions.tolist())])


def test_segments_masks_areas_boxes(seg):
    """Dense masks are the pasted crops; areas and tight mask boxes (XYWH) are right."""
    exp = _expected_masks(seg)
    assert len(seg) == 3 and seg.masks.shape == (3, *SIZE) and seg.masks.dtype == bool
    np.testing.assert_array_equal(seg.masks, exp)
    np.testing.assert_array_equal(seg.mask(2), exp[2])
    np.testing.assert_array_equal(seg.areas, [174, 60, 35])
    np.testing.assert_array_equal(seg.mask_boxes(), [[3, 2, 16, 11], [10, 5, 10, 6], [15, 9, 5, 7]])


def test_segments_label_map_smaller_wins(seg):
    """0 = background, mask i -> i + 1; at overlaps the smaller mask's label is kept."""
    exp = _expected_masks(seg)
    areas = exp.sum(axis=(1, 2))
    want = np.zeros(SIZE, np.uint16)
    for y in range(SIZE[0]):
        for x in range(SIZE[1]):
            hits = np.flatnonzero(exp[:, y, x])
            if hits.size:
                want[y, x] = hits[np.argmin(areas[hits])] + 1
    got = seg.label_map()
    assert got.dtype == np.uint16
    np.testing.assert_array_equal(got, want)
    assert got[10, 16] == 3 and got[6, 12] == 2 and got[3, 4] == 1 and got[0, 0] == 0


@pytest.mark.parametrize(
    "index, picked",
    [(1, [1]), (slice(1, None), [1, 2]), (np.array([True, False, True]), [0, 2]), ([2, 0], [2, 0]), (-1, [2])],
)
def test_segments_getitem(seg, index, picked):
    """int / slice / bool array / index list select the right subset, as Segments."""
    sub = seg[index]
    assert isinstance(sub, Segments) and len(sub) == len(picked)
    np.testing.assert_array_equal(sub.masks, _expected_masks(seg)[picked])
    np.testing.assert_array_equal(sub.scores, seg.scores[picked])
    np.testing.assert_array_equal(sub.stability, seg.stability[picked])
    np.testing.assert_array_equal(sub.boxes, seg.boxes[picked])
    np.testing.assert_array_equal(sub.regions, seg.regions[picked])
    np.testing.assert_array_equal(sub.areas, seg.areas[picked])


def test_segments_records(seg):
    """to_records: SAM-style fields with values matching the masks, boxes and scores."""
    exp = _expected_masks(seg)
    recs = seg.to_records()
    assert len(recs) == 3
    for k, r in enumerate(recs):
        rle = r["segmentation"]
        assert rle["size"] == list(SIZE) and isinstance(rle["counts"], str)
        np.testing.assert_array_equal(coco.decode({"size": rle["size"], "counts": rle["counts"].encode()}), exp[k])
        assert rle["counts"] == _coco_string(exp[k])
        assert r["area"] == int(exp[k].sum())
        assert r["bbox"] == coco.toBbox(coco.encode(np.asfortranarray(exp[k].astype(np.uint8)))).astype(int).tolist()
        assert r["predicted_iou"] == pytest.approx(float(seg.scores[k]))
        assert r["stability_score"] == pytest.approx([0.95, 0.85, 0.75][k])
        assert r["crop_box"] == [0, 0, SIZE[1], SIZE[0]]
        x1, y1, x2, y2 = seg.boxes[k].tolist()
        assert r["box_xyxy"] == pytest.approx([x1, y1, x2, y2])
        assert len(r["point_coords"]) == 1
        assert r["point_coords"][0] == pytest.approx([(x1 + x2) / 2, (y1 + y2) / 2])
    assert [r["predicted_iou"] for r in recs] == pytest.approx([0.9, 0.8, 0.7])
    assert recs[2]["point_coords"][0] == pytest.approx([17.75, 12.5])


def test_segments_save_pngs(seg, tmp_path):
    """One 8-bit 0/255 PNG per mask plus a 16-bit label PNG equal to label_map()."""
    paths = seg.save_pngs(tmp_path / "out")
    names = [p.name for p in paths]
    assert names == ["mask_0000.png", "mask_0001.png", "mask_0002.png", "mask_labels.png"]
    exp = _expected_masks(seg)
    for k in range(3):
        with Image.open(paths[k]) as im:
            assert im.mode == "L"
            arr = np.asarray(im)
        assert set(np.unique(arr).tolist()) == {0, 255}
        np.testing.assert_array_equal(arr == 255, exp[k])
    with Image.open(paths[3]) as im:
        assert im.mode.startswith("I")
        labels = np.asarray(im).astype(np.int64)
    np.testing.assert_array_equal(labels, seg.label_map().astype(np.int64))
    assert labels.max() == 3


def test_segments_to_polygons_uses_crop_offsets():
    """Segments.to_polygons: one list of (K, 2) contours per mask, in image coordinates."""
    import numpy as np

    from fastsam import Segments

    m = np.zeros((2, 30, 40), bool)
    m[0, 5:15, 10:20] = True
    polys = Segments.from_masks(m, np.array([0.9, 0.8])).to_polygons()
    assert len(polys) == 2 and polys[1] == []
    (contour,) = polys[0]
    assert contour[:, 0].min() == 10 and contour[:, 0].max() == 19
    assert contour[:, 1].min() == 5 and contour[:, 1].max() == 14
