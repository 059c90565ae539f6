"""Training data pipeline: augmentation geometry, determinism, targets (boxes, cell coverage), batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastsam.data.datasets import SA1BDataset, Sample, masks_to_boxes
from fastsam.data.synth import write_dataset
from fastsam.errors import FastSAMError
from fastsam.ops.letterbox import letterbox
from fastsam.train.augment import (
    AugmentConfig,
    affine_matrix,
    augment_hsv,
    flip_lr,
    flip_ud,
    letterbox_square,
    mosaic4,
    pack_masks,
    random_affine,
    unpack_masks,
)
from fastsam.train.data import TrainBatch, TrainDataset, collate, instance_targets

# every random geometric / photometric change off: the affine is the identity on an S x S input
STILL = AugmentConfig(mosaic=0.0, translate=0.0, scale=0.0, hsv_h=0.0, hsv_s=0.0, hsv_v=0.0, fliplr=0.0)
HEAVY = AugmentConfig(degrees=30.0, translate=0.2, scale=0.6, shear=10.0, perspective=0.001, flipud=0.5)


@pytest.fixture(scope="module")
def sa1b(tmp_path_factory: pytest.TempPathFactory) -> SA1BDataset:
    d = tmp_path_factory.mktemp("sa1b")
    write_dataset(d, 6, seed=3, size=(96, 128))
    return SA1BDataset(d)


def sample(masks: list[np.ndarray], size: tuple[int, int] = (64, 64), name: str = "s", value: int = 50) -> Sample:
    h, w = size
    m = np.stack(masks) if masks else np.zeros((0, h, w), bool)
    return Sample(np.full((h, w, 3), value, np.uint8), m, masks_to_boxes(m), name)


def rect(size: tuple[int, int], x1: int, y1: int, x2: int, y2: int) -> np.ndarray:
    m = np.zeros(size, bool)
    m[y1:y2, x1:x2] = True
    return m


def cells(masks: np.ndarray) -> np.ndarray:
    """Reference area downsample: (K, H, W) bool -> (K, H/4, W/4) fraction covered."""
    k, h, w = masks.shape
    return masks.reshape(k, h // 4, 4, w // 4, 4).mean((2, 4))


def test_pack_unpack_roundtrip_and_targets_match_naive() -> None:
    rng = np.random.default_rng(0)
    masks = rng.random((19, 32, 40)) < 0.02  # 19: planes not full, sparse and some empty
    masks[4] = False
    masks[7, 5:9, 3:30] = True
    bits = pack_masks(masks)
    assert bits.shape == (3, 32, 40) and bits.dtype == np.uint8
    assert np.array_equal(unpack_masks(bits, 19), masks)
    assert np.array_equal(pack_masks(masks, masks_to_boxes(masks)), bits)  # box windows read only
    keep, boxes, counts = instance_targets(bits, 19, min_area=2)
    area = masks.sum((1, 2))
    assert np.array_equal(keep, area >= 2) and not keep[4]
    assert np.array_equal(boxes, masks_to_boxes(masks[keep]))
    assert np.array_equal(counts / 16, cells(masks[keep]))
    keep0, boxes0, counts0 = instance_targets(pack_masks(np.zeros((0, 32, 40), bool)), 0, 4)
    assert keep0.shape == (0,) and boxes0.shape == (0, 4) and counts0.shape == (0, 8, 10)


def test_flips_move_a_known_mask() -> None:
    img = np.zeros((6, 8, 3), np.uint8)
    img[1, 2] = 255
    masks = rect((6, 8), 1, 2, 3, 5)[None]  # columns 1..2, rows 2..4
    fi, fm = flip_lr(img, masks)
    assert fi[1, 5].tolist() == [255] * 3 and fi.sum() == 3 * 255  # column 2 -> 8 - 1 - 2
    assert masks_to_boxes(fm).tolist() == [[5, 2, 7, 5]] and fm.sum() == masks.sum()
    fi, fm = flip_ud(img, masks)
    assert fi[4, 2].tolist() == [255] * 3 and fi.sum() == 3 * 255
    assert masks_to_boxes(fm).tolist() == [[1, 1, 3, 4]]
    assert fm.flags.c_contiguous and np.array_equal(flip_ud(fi, fm)[1], masks)


def test_letterbox_square_geometry() -> None:
    img = np.zeros((128, 256, 3), np.uint8)
    img[:] = (10, 20, 200)
    img[32:96, 64:128] = 255
    masks = rect((128, 256), 64, 32, 128, 96)[None]
    out, m = letterbox_square(img, masks, 64)  # gain 1/4: 32 x 64 image, 16 gray rows above and below
    assert out.shape == (64, 64, 3) and m.shape == (1, 64, 64) and m.dtype == bool
    assert (out[:16] == 114).all() and (out[48:] == 114).all()
    assert (out[16:48, :2] == (10, 20, 200)).all()
    assert masks_to_boxes(m).tolist() == [[16, 24, 32, 40]] and m.sum() == 16 * 16
    assert (out[25:39, 17:31] == 255).all()


@pytest.mark.parametrize("h", [96, 94])  # even and odd padding (top 8, bottom 8 / top 8, bottom 9)
def test_letterbox_square_matches_inference_letterbox(h: int) -> None:
    rng = np.random.default_rng(h)
    img = rng.integers(0, 256, (h, 128, 3), dtype=np.uint8)
    out, m = letterbox_square(img, np.zeros((0, h, 128), bool), 64)
    ref, geom = letterbox(img, 64)  # here the inference letterbox also pads to a 64 x 64 square
    assert geom.input_size == (64, 64) and m.shape == (0, 64, 64)
    assert np.array_equal(out, (ref[0] * 255).round().byte().permute(1, 2, 0).numpy())


def test_identity_affine_and_border_check() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    masks = np.stack([rect((64, 64), 3, 4, 20, 9), rect((64, 64), 0, 0, 64, 1)])
    assert np.array_equal(affine_matrix(rng, STILL, (64, 64), (64, 64)), np.eye(3))
    out, m = random_affine(rng, img, masks, STILL, 64)
    assert np.array_equal(out, img) and np.array_equal(m, masks)
    big, big_masks = np.tile(img, (2, 2, 1)), np.tile(masks, (1, 2, 2))
    out, m = random_affine(rng, big, big_masks, STILL, 64, -32)  # a 128 canvas cropped to its centre
    assert np.array_equal(out, np.roll(img, (-32, -32), (0, 1)))
    assert np.array_equal(m, np.roll(masks, (-32, -32), (1, 2)))
    with pytest.raises(FastSAMError, match="border 0 does not turn a 128 px image into 64 px"):
        random_affine(rng, big, big_masks, STILL, 64, 0)


def test_affine_with_scale_maps_a_known_box() -> None:
    cfg = AugmentConfig(mosaic=0.0, translate=0.0, scale=0.5)
    img = np.full((64, 64, 3), 30, np.uint8)
    masks = rect((64, 64), 24, 28, 40, 36)[None]  # 16 x 8 px box around the centre (32, 32)
    for seed in range(5):
        mat = affine_matrix(np.random.default_rng(seed), cfg, (64, 64), (64, 64))
        s = mat[0, 0]
        assert 0.5 <= s <= 1.5 and mat[1, 1] == s and mat[0, 1] == mat[1, 0] == 0
        assert np.allclose(mat[:2, 2], 32 - 32 * s)  # zoom about the centre
        _, m = random_affine(np.random.default_rng(seed), img, masks, cfg, 64)
        # pixel x covers [x - 0.5, x + 0.5): the box edges x - 0.5 map to s (x - 0.5 - 32) + 32
        expect = [s * (v - 0.5 - 32) + 32 + 0.5 for v in (24, 28, 40, 36)]
        assert np.abs(masks_to_boxes(m)[0] - expect).max() <= 1.0, (s, masks_to_boxes(m), expect)
        assert abs(m.sum() - 128 * s * s) <= 2 * (16 + 8) * s + 4


def test_hsv_keeps_dtype_range_and_masks(sa1b: SA1BDataset) -> None:
    img = sa1b[0].image
    out = augment_hsv(np.random.default_rng(1), img, AugmentConfig(hsv_h=0.5, hsv_s=0.9, hsv_v=0.9))
    assert out.dtype == np.uint8 and out.shape == img.shape and not np.array_equal(out, img)
    assert np.abs(out.astype(int) - img).max() > 20
    gray = np.full((4, 4, 3), 100, np.uint8)  # no saturation: any hue shift keeps it gray
    g = augment_hsv(np.random.default_rng(2), gray, AugmentConfig(hsv_h=0.5, hsv_s=0.0, hsv_v=0.0))
    assert np.abs(g.astype(int) - 100).max() <= 1
    assert augment_hsv(np.random.default_rng(3), img, STILL) is img  # no gains: no lossy round trip
    plain = AugmentConfig(hsv_h=0.0, hsv_s=0.0, hsv_v=0.0)
    a, b = TrainDataset(sa1b, 64, plain, seed=4), TrainDataset(sa1b, 64, AugmentConfig(), seed=4)
    for i in range(3):
        x, y = a[i], b[i]
        assert torch.equal(x["boxes"], y["boxes"]) and torch.equal(x["masks"], y["masks"])
        assert y["image"].dtype == torch.uint8 and not torch.equal(x["image"], y["image"])


def test_mosaic_places_four_images_in_quadrants() -> None:
    items = []
    yy, xx = np.mgrid[0:32, 0:32]
    for j in range(4):
        img = np.stack([xx * 4, yy * 4, np.full_like(xx, 50 * (j + 1))], -1).astype(np.uint8)
        items.append((img, np.ones((1, 32, 32), bool)))
    canvas, masks = mosaic4(np.random.default_rng(0), items, 32, centre=(20, 40))
    assert canvas.shape == (64, 64, 3) and masks.shape == (4, 64, 64)
    # (canvas window, first source pixel (x, y)) of each item around the centre (20, 40)
    windows = [
        ((0, 8, 20, 40), (12, 0)),
        ((20, 8, 52, 40), (0, 0)),
        ((0, 40, 20, 64), (12, 0)),
        ((20, 40, 52, 64), (0, 0)),
    ]
    covered = np.zeros((64, 64), bool)
    for j, ((x1, y1, x2, y2), (sx, sy)) in enumerate(windows):
        patch = canvas[y1:y2, x1:x2]
        assert (patch[..., 2] == 50 * (j + 1)).all(), j
        assert patch[0, 0, 0] == sx * 4 and patch[0, 0, 1] == sy * 4 and patch[-1, -1, 0] == (sx + x2 - x1 - 1) * 4
        assert masks_to_boxes(masks[j : j + 1]).tolist() == [[x1, y1, x2, y2]]
        assert masks[j].sum() == (x2 - x1) * (y2 - y1)
        covered[y1:y2, x1:x2] = True
    assert (canvas[~covered] == 114).all() and not masks[:, ~covered].any()
    for seed in range(20):  # a random centre lies in the central half of the canvas
        _, m = mosaic4(np.random.default_rng(seed), items, 32)
        x0, y0 = masks_to_boxes(m[3:])[0, :2]
        assert 16 <= x0 < 48 and 16 <= y0 < 48
    with pytest.raises(FastSAMError, match="a mosaic needs 4 images, got 3"):
        mosaic4(np.random.default_rng(0), items[:3], 32)


@pytest.mark.parametrize("cfg", [AugmentConfig(), HEAVY, None], ids=["default", "heavy", "val"])
def test_boxes_are_tight_boxes_of_masks(sa1b: SA1BDataset, cfg: AugmentConfig | None) -> None:
    ds = TrainDataset(sa1b, 96, cfg, seed=7)
    total = 0
    for epoch in range(2):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            img, full = ds.full_resolution(i)
            it = ds[i]
            assert np.array_equal(it["image"].permute(1, 2, 0).numpy(), img)
            assert it["boxes"].dtype == torch.float32 and it["masks"].shape == (len(full), 24, 24)
            assert np.array_equal(it["boxes"].numpy(), masks_to_boxes(full))
            assert np.array_equal(it["masks"].numpy(), cells(full).astype(np.float32))
            assert (full.sum((1, 2)) >= 4).all()
            total += len(full)
    assert total > 20


def test_image_and_masks_stay_aligned() -> None:
    """White objects on black: after any augmentation the masks must still cover the white pixels."""
    src = []
    for j in range(3):
        boxes = [(4 + 7 * j, 6, 30, 24), (40, 10 + 5 * j, 76, 22 + 5 * j), (10, 36, 22, 60), (50, 40, 70, 58)]
        masks = np.stack([rect((64, 80), *b) for b in boxes])
        img = np.where(masks.any(0)[..., None], 255, 0).astype(np.uint8).repeat(3, 2)
        src.append(Sample(img, masks, masks_to_boxes(masks), f"s{j}"))
    cfg = AugmentConfig(
        degrees=20,
        translate=0.2,
        scale=0.4,
        shear=5,
        perspective=0.0005,
        hsv_h=0.0,
        hsv_s=0.0,
        hsv_v=0.0,
        fliplr=0.5,
        flipud=0.5,
        min_area=40,
    )
    ds = TrainDataset(src, 64, cfg, seed=11)
    checked = 0
    for epoch in range(4):
        ds.set_epoch(epoch)
        for i in range(3):
            img, masks = ds.full_resolution(i)
            white = img[..., 0] > 200
            union = masks.any(0)
            assert white.sum() > 0 and (white & union).sum() >= 0.85 * white.sum(), (epoch, i)
            for m in masks:
                assert (white & m).sum() >= 0.75 * m.sum(), (epoch, i)
                checked += 1
    assert checked > 20


def test_validation_is_the_square_letterbox(sa1b: SA1BDataset) -> None:
    s = sa1b[2]
    out, m = letterbox_square(s.image, s.masks, 64)
    it = TrainDataset(sa1b, 64)[2]
    m = m[m.sum((1, 2)) >= 4]
    assert np.array_equal(it["image"].permute(1, 2, 0).numpy(), out)
    assert np.array_equal(it["boxes"].numpy(), masks_to_boxes(m)) and len(m) > 0


def test_tiny_instances_are_dropped() -> None:
    masks = [
        rect((64, 64), 1, 1, 2, 2),
        rect((64, 64), 10, 10, 13, 11),
        rect((64, 64), 20, 20, 22, 22),
        rect((64, 64), 30, 30, 40, 40),
    ]
    src = [sample(masks)]
    it = TrainDataset(src, 64)[0]  # validation: default min_area 4
    assert it["boxes"].tolist() == [[20, 20, 22, 22], [30, 30, 40, 40]]
    it = TrainDataset(src, 64, AugmentConfig(mosaic=0.0, translate=0.0, scale=0.0, fliplr=0.0, min_area=5))[0]
    assert it["boxes"].tolist() == [[30, 30, 40, 40]]


def test_masks_are_cell_coverage() -> None:
    src = [sample([rect((64, 64), 8, 8, 12, 12), rect((64, 64), 16, 16, 18, 20), rect((64, 64), 41, 41, 44, 44)])]
    m = TrainDataset(src, 64, STILL)[0]["masks"]
    assert m.shape == (3, 16, 16) and m.dtype == torch.float32
    assert m[0, 2, 2] == 1.0 and m[0].sum() == 1.0  # a full 4x4-aligned block
    assert m[1, 4, 4] == 0.5 and m[1].sum() == 0.5  # half a cell
    assert m[2].sum() == 9 / 16 and m[2, 10, 10] == 9 / 16  # a 3 x 3 object survives the downsample


def test_determinism_and_epochs(sa1b: SA1BDataset) -> None:
    a, b = TrainDataset(sa1b, 64, HEAVY, seed=1), TrainDataset(sa1b, 64, HEAVY, seed=1)
    a.set_epoch(3)
    b.set_epoch(3)
    for i in (0, 4):
        x, y = a[i], b[i]
        assert all(torch.equal(x[k], y[k]) for k in ("image", "boxes", "masks")) and x["name"] == y["name"]
    b.set_epoch(4)
    assert not torch.equal(a[0]["image"], b[0]["image"])
    c = TrainDataset(sa1b, 64, HEAVY, seed=2)
    c.set_epoch(3)
    assert not torch.equal(a[0]["image"], c[0]["image"])
    assert a[-1]["name"] == a[5]["name"] == sa1b[5].name
    with pytest.raises(IndexError, match="index 6 out of range"):
        a[6]


def test_close_mosaic_phase(sa1b: SA1BDataset) -> None:
    cfg = AugmentConfig(mosaic=1.0, translate=0.0, scale=0.0, hsv_h=0.0, hsv_s=0.0, hsv_v=0.0, fliplr=0.0)
    ds = TrainDataset(sa1b, 64, cfg)
    plain, _ = letterbox_square(sa1b[1].image, sa1b[1].masks, 64)
    assert not np.array_equal(ds[1]["image"].permute(1, 2, 0).numpy(), plain)
    ds.set_epoch(5, mosaic=False)
    assert np.array_equal(ds[1]["image"].permute(1, 2, 0).numpy(), plain)


def test_collate_with_an_empty_image() -> None:
    src = [
        sample([rect((64, 64), 0, 0, 8, 8), rect((64, 64), 8, 8, 24, 24)], name="a"),
        sample([], name="b"),
        sample([rect((64, 64), 32, 32, 40, 48)], name="c"),
    ]
    ds = TrainDataset(src, 64, STILL)
    empty = ds[1]
    assert empty["boxes"].shape == (0, 4) and empty["masks"].shape == (0, 16, 16)
    assert empty["image"].shape == (3, 64, 64)
    batch = collate([ds[i] for i in range(3)])
    assert isinstance(batch, TrainBatch)
    assert batch.images.shape == (3, 3, 64, 64) and batch.images.dtype == torch.uint8
    assert batch.batch_idx.tolist() == [0, 0, 2] and batch.batch_idx.dtype == torch.int64
    assert batch.boxes.tolist() == [[0, 0, 8, 8], [8, 8, 24, 24], [32, 32, 40, 48]]
    assert batch.masks.shape == (3, 16, 16) and batch.names == ["a", "b", "c"]
    moved = batch.to("cpu")
    assert torch.equal(moved.masks, batch.masks) and moved.names == batch.names
    nothing = collate([ds[1], ds[1]])
    assert nothing.boxes.shape == (0, 4) and nothing.batch_idx.shape == (0,) and nothing.masks.shape == (0, 16, 16)


def test_bad_options() -> None:
    src = [sample([])]
    with pytest.raises(FastSAMError, match="imgsz must be a positive multiple of 32, got 100"):
        TrainDataset(src, 100)
    with pytest.raises(FastSAMError, match="TrainDataset source is empty"):
        TrainDataset([], 64)
    with pytest.raises(FastSAMError, match=r"AugmentConfig.scale must be < 1"):
        AugmentConfig(scale=1.0)
    with pytest.raises(FastSAMError, match=r"AugmentConfig.fliplr is a probability, got 2"):
        AugmentConfig(fliplr=2)
    with pytest.raises(FastSAMError, match=r"AugmentConfig.degrees must be a finite number >= 0, got -1"):
        AugmentConfig(degrees=-1)
    with pytest.raises(FastSAMError, match="epoch must be an integer >= 0"):
        TrainDataset(src, 64).set_epoch(-1)
    with pytest.raises(FastSAMError, match=r"masks of size \(5, 5\) do not match the image size \(64, 64\)"):
        letterbox_square(np.zeros((64, 64, 3), np.uint8), np.zeros((1, 5, 5), bool), 32)


def test_dataloader_workers_give_the_same_batches(sa1b: SA1BDataset) -> None:
    ds = TrainDataset(sa1b, 64, AugmentConfig(), seed=5)
    ds.set_epoch(2)

    def batches(workers: int) -> list[TrainBatch]:
        loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=workers, collate_fn=collate)
        return list(loader)

    one, two = batches(0), batches(2)
    assert len(one) == len(two) == 3
    for x, y in zip(one, two):
        assert x.names == y.names
        for key in ("images", "boxes", "batch_idx", "masks"):
            assert torch.equal(getattr(x, key), getattr(y, key)), key
