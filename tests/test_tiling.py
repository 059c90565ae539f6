"""Huge images by tiles (``tile=`` / ``--tile``): windows, the join of cut masks, deduplication, and
the demo model on a 4000x3000 scene whose objects cross tile borders."""

from __future__ import annotations

import itertools
import json

import cv2
import numpy as np
import pytest
from PIL import Image

from fastsam import FastSAM, FastSAMError
from fastsam.cli import main
from fastsam.config import PredictConfig
from fastsam.results import Segments
from fastsam.tiling import TileConfig, merge_tiles, segment_tiled, tile_windows


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def _disk(size: tuple[int, int], cy: int, cx: int, r: int) -> np.ndarray:
    yy, xx = np.mgrid[: size[0], : size[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _rect(size: tuple[int, int], r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    m = np.zeros(size, bool)
    m[r0:r1, c0:c1] = True
    return m


def _parts(size, tiles, objects, skip=()) -> list[tuple[tuple[int, int, int, int], Segments]]:
    """What a perfect network would give per tile: each object's part inside the window (in image
    pixels), except the (tile, object) pairs in ``skip`` (a missed piece)."""
    parts = []
    for t, (r0, r1, c0, c1) in enumerate(tile_windows(size, tiles)):
        inside = np.zeros(size, bool)
        inside[r0:r1, c0:c1] = True
        pieces = [m & inside for k, m in enumerate(objects) if (m & inside).any() and (t, k) not in skip]
        masks = np.stack(pieces) if pieces else np.zeros((0, *size), bool)
        scores = np.linspace(0.9, 0.5, len(pieces)) if pieces else np.zeros(0)
        parts.append(((r0, r1, c0, c1), Segments.from_masks(masks, scores)))
    return parts


def _matches(seg: Segments, gt: np.ndarray, thr: float = 0.5) -> list[float]:
    return [iou for k in range(len(seg)) if (iou := _iou(seg.mask(k), gt)) >= thr]


def test_windows_cover_the_image_with_the_overlap() -> None:
    tiles = TileConfig(400, 100)
    wins = tile_windows((1000, 1300), tiles)
    rows = sorted({w[:2] for w in wins})
    cols = sorted({w[2:] for w in wins})
    assert rows[0][0] == 0 and rows[-1][1] == 1000 and cols[0][0] == 0 and cols[-1][1] == 1300
    for axis in (rows, cols):
        assert all(b - a == 400 for a, b in axis)
        assert all(prev[1] - nxt[0] >= 100 for prev, nxt in itertools.pairwise(axis))  # neighbours share >= overlap
    assert len(wins) == len(rows) * len(cols) == 3 * 4
    assert tile_windows((300, 400), tiles) == [(0, 300, 0, 400)]  # no larger than a tile: one window
    assert TileConfig(400).stride == 300  # default overlap: a quarter


def test_pieces_cut_by_tile_borders_are_joined_into_one_mask() -> None:
    size, tiles = (1000, 1300), TileConfig(400, 100)
    big = _disk(size, 450, 600, 260)  # crosses every border around the middle: in no tile whole
    bar_a = _rect(size, 120, 170, 150, 1200)  # two long objects side by side across three borders
    bar_b = _rect(size, 170, 220, 150, 1200)
    small = _rect(size, 800, 850, 60, 140)  # whole in one tile
    twice = _disk(size, 500, 1000, 40)  # whole in two overlapping tiles: seen twice
    objects = [big, bar_a, bar_b, small, twice]
    merged = merge_tiles(_parts(size, tiles, objects), None, size, tiles)
    assert len(merged) == len(objects)
    for gt in objects:
        assert _matches(merged, gt) == [1.0]  # one mask each, exactly the object
    assert np.all(np.diff(merged.scores) <= 0)
    x1, y1, x2, y2 = merged.boxes[next(k for k in range(len(merged)) if _iou(merged.mask(k), big) == 1.0)]
    assert (x1, y1, x2, y2) == (340.0, 190.0, 861.0, 711.0)  # the pieces' boxes' union


def test_whole_image_pass_fills_missed_pieces_and_loses_to_finer_tile_masks() -> None:
    size, tiles = (1000, 1300), TileConfig(400, 100)
    big = _disk(size, 450, 600, 260)
    small = _disk(size, 820, 100, 30)
    objects = [big, small]
    wins = tile_windows(size, tiles)
    missed = {(t, 0) for t, w in enumerate(wins) if w[2] >= 600}  # the right half of the big disk
    coarse_small = cv2.dilate(small.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)  # 30% larger
    whole = Segments.from_masks(np.stack([big, coarse_small]), np.array([0.8, 0.7]))
    merged = merge_tiles(_parts(size, tiles, objects, skip=missed), whole, size, tiles)
    assert len(merged) == 2
    assert _matches(merged, big) == [1.0]  # the cut, unjoined half lost to the complete whole-image mask
    assert _matches(merged, small) == [1.0]  # the full-resolution tile mask beat the coarse one


def test_a_split_large_object_is_taken_from_the_whole_image_pass() -> None:
    size, tiles = (1000, 1300), TileConfig(600, 150)
    obj = _rect(size, 100, 400, 100, 420)  # whole in the first tile, long side 320 >= 600 / 2
    part = obj & _rect(size, 0, 1000, 0, 330)  # the network split it: a closed 72% in the tile
    parts = [(w, Segments.empty(size)) for w in tile_windows(size, tiles)]
    parts[0] = (parts[0][0], Segments.from_masks(part[None], np.array([0.9])))
    merged = merge_tiles(parts, Segments.from_masks(obj[None], np.array([0.6])), size, tiles)
    assert len(merged) == 1 and _iou(merged.mask(0), obj) == 1.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"size": 16}, "tile size"), ({"size": 400, "overlap": 400}, "overlap"), ({"dedup_iou": 0.0}, "dedup_iou")],
)
def test_tile_config_is_checked(kwargs, match) -> None:
    with pytest.raises(FastSAMError, match=match):
        TileConfig(**kwargs)


def _scene(h: int = 3000, w: int = 4000, seed: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    """Eight solid shapes 120..220 px across on a gradient, most across tile borders; their masks."""
    rng = np.random.default_rng(seed)
    img = np.empty((h, w, 3), np.float32)
    img[:] = np.array([90, 110, 100], np.float32) + (np.arange(w, dtype=np.float32) / w * 60)[None, :, None]
    colours = [(220, 40, 40), (40, 200, 60), (40, 60, 220), (230, 210, 40), (200, 60, 200), (40, 200, 210)]
    centres = [(700, 900), (1350, 1600), (2300, 700), (700, 2500), (1500, 3300), (2400, 2200), (2500, 3500)]
    masks = []
    for k, (cy, cx) in enumerate(centres):
        m = np.zeros((h, w), np.uint8)
        ay, ax = (int(v) for v in rng.uniform(60, 110, 2))
        if k % 2:
            cv2.ellipse(m, (cx, cy), (ax, ay), float(rng.uniform(0, 180)), 0, 360, 1, -1)
        else:
            cv2.rectangle(m, (cx - ax, cy - ay), (cx + ax, cy + ay), 1, -1)
        img[m.astype(bool)] = colours[k % len(colours)]
        masks.append(m.astype(bool))
    img += rng.normal(0, 3, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), masks


@pytest.mark.slow
def test_demo_model_on_a_4000x3000_scene_gives_one_mask_per_object() -> None:
    rgb, objects = _scene()
    model, cfg, tiles = FastSAM(cache_size=0), PredictConfig(imgsz=448), TileConfig(448)
    wins = tile_windows(rgb.shape[:2], tiles)
    crossing = [
        k
        for k, m in enumerate(objects)
        if not any(m[r0:r1, c0:c1].sum() == m.sum() for r0, r1, c0, c1 in wins)  # in no tile whole
    ]
    assert len(crossing) >= 3  # the scene tests the join
    whole = model._segment_rgb(rgb, cfg)
    merged = segment_tiled(model, rgb, cfg, tiles, batch=4)
    tiles_only = segment_tiled(model, rgb, cfg, TileConfig(448, whole_image=False), batch=4)
    for k, gt in enumerate(objects):
        assert len(_matches(merged, gt, 0.8)) == 1, k  # one mask, not a piece per tile
        found = _matches(whole, gt)
        if found and max(found) >= 0.9:  # where the whole-image pass finds it
            assert max(_matches(merged, gt)) >= 0.9, k
        if found:  # never worse than the whole-image pass
            assert max(_matches(merged, gt)) >= max(found) - 0.01, k
    joined = [k for k in crossing if _matches(tiles_only, objects[k], 0.9)]
    assert joined  # some objects in no tile whole are found from the tiles' pieces alone
    iou = np.array([[_iou(merged.mask(i), merged.mask(j)) for j in range(len(merged))] for i in range(len(merged))])
    assert (iou[~np.eye(len(merged), dtype=bool)] < TileConfig().dedup_iou).all()  # no duplicates
    assert merged.image_size == (3000, 4000) and merged.regions[:, [1, 3]].max(0).tolist() <= [3000, 4000]


def test_cli_tile_writes_records_in_image_pixels(tmp_path) -> None:
    rgb, _ = _scene(900, 1300, seed=1)
    src = tmp_path / "wide.png"
    Image.fromarray(rgb).save(src)
    args = ["segment", str(src), "--imgsz", "320", "--tile", "320", "--tile-overlap", "64", "--no-progress"]
    assert main([*args, "--batch", "3", "--out", str(tmp_path / "out")]) == 0
    records = json.loads((tmp_path / "out" / "wide.json").read_text())
    expected = FastSAM(cache_size=0)(rgb, imgsz=320, tile=320, tile_overlap=64).to_records()
    assert len(records) == len(expected) > 0
    for a, b in zip(records, expected):
        assert a["segmentation"]["size"] == [900, 1300] and a["crop_box"] == [0, 0, 1300, 900]
        assert a["bbox"] == b["bbox"] and abs(a["predicted_iou"] - b["predicted_iou"]) < 1e-4
    assert Image.open(tmp_path / "out" / "wide.png").size == (1300, 900)


@pytest.mark.parametrize(
    ("extra", "needle"),
    [(["--tile", "320", "--tile-overlap", "320"], "--tile-overlap"), (["--tile-overlap", "10"], "--tile SIZE")],
)
def test_cli_tile_options_are_checked(usage_error, tmp_path, extra, needle) -> None:
    line = usage_error(main(["segment", "x.jpg", *extra, "--out", str(tmp_path)]))
    assert needle in line and not (tmp_path / "x.json").exists()


def test_tile_with_prompts_is_refused() -> None:
    with pytest.raises(FastSAMError, match="everything mode"):
        FastSAM(cache_size=0)(np.zeros((64, 64, 3), np.uint8), tile=64, points=[[3, 3]])


def test_overlay_blends_tall_images_band_by_band_as_one_piece() -> None:
    from fastsam import viz

    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (2 * viz.BAND + 37, 90, 3), dtype=np.uint8)
    masks = np.stack([_disk(image.shape[:2], 500, 40, 300), _rect(image.shape[:2], 20, 1000, 10, 50)])
    seg = Segments.from_masks(masks, np.array([0.9, 0.8]))
    got = viz.overlay(image, seg)
    out = image.astype(np.float32)  # the blend in one piece
    labels, palette = seg.label_map(), viz._colors(2, None, 0)
    covered = labels > 0
    out[covered] = out[covered] * (1 - viz.ALPHA) + palette[labels[covered]] * viz.ALPHA
    edge = np.zeros(image.shape[:2], np.uint8)
    for crop, (r0, _, c0, _) in zip(seg.crops, seg.regions):
        viz._draw_contours(edge, crop, (int(c0), int(r0)))
    on = viz._thicken(edge) > 0
    out[on] = out[on] * (1 - viz.CONTOUR_ALPHA) + np.asarray(viz.CONTOUR_COLOR, np.float32) * viz.CONTOUR_ALPHA
    np.testing.assert_array_equal(got, np.clip(np.rint(out), 0, 255).astype(np.uint8))
    assert on.any() and covered[viz.BAND - 1 : viz.BAND + 1].any()  # the masks cross band borders
