"""Training samples: augmented, letterboxed images with instance boxes and prototype-resolution masks.

Frames: S = ``imgsz`` (a multiple of 32) is the square network input; boxes are xyxy in input pixels
with exclusive ends (x = column); masks are given at the prototype resolution S/4 as the fraction of
each 4x4 input-pixel cell the instance covers (an area downsample, so a 10 px object still leaves
cells near 0.4 instead of vanishing as it would under nearest-neighbour subsampling).

Determinism: every random choice for sample ``i`` in epoch ``e`` comes from
``np.random.default_rng([seed, e, i])``, so a sample is the same whichever DataLoader worker (or DDP
rank) builds it and a resumed run sees exactly the samples it would have seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import FastSAMError
from .augment import (
    AugmentConfig,
    Layer,
    affine_matrix,
    augment_hsv,
    letterbox_layers,
    mosaic_layers,
    unpack_masks,
    warp_image,
)

__all__ = ["TrainBatch", "TrainDataset", "collate", "instance_targets"]

MASK_STRIDE = 4  # prototype masks are 1/4 of the input resolution
INPUT_STRIDE = 32  # the network's largest stride: inputs must be multiples of it
_BYTE_SUM = np.uint32(0x01010101)  # multiplying by it adds the 4 bytes of a uint32 into its top byte
_NIBBLE_LOW_BIT = np.uint32(0x11111111)
_NIBBLE = np.uint32(0x0F0F0F0F)


@dataclass
class TrainBatch:
    """A collated batch.

    Attributes:
        images: (B, 3, S, S) uint8 RGB.
        boxes: (N, 4) float32 xyxy in input pixels, exclusive ends: tight boxes of the augmented masks.
        batch_idx: (N,) int64, which image of the batch each instance belongs to.
        masks: (N, S/4, S/4) float32 in [0, 1], fraction of each 4x4 cell covered by the instance.
        names: B sample names.
    """

    images: torch.Tensor
    boxes: torch.Tensor
    batch_idx: torch.Tensor
    masks: torch.Tensor
    names: list[str]

    def to(self, device: Any) -> TrainBatch:
        """The same batch with every tensor on ``device``."""
        return TrainBatch(
            self.images.to(device),
            self.boxes.to(device),
            self.batch_idx.to(device),
            self.masks.to(device),
            list(self.names),
        )


def collate(items: list[dict]) -> TrainBatch:
    """Stack :meth:`TrainDataset.__getitem__` dicts into a :class:`TrainBatch` (use as ``collate_fn``)."""
    if not items:
        raise FastSAMError("collate: empty list of samples")
    counts = [len(it["boxes"]) for it in items]
    return TrainBatch(
        images=torch.stack([it["image"] for it in items]),
        boxes=torch.cat([it["boxes"] for it in items]),
        batch_idx=torch.repeat_interleave(torch.arange(len(items)), torch.tensor(counts, dtype=torch.int64)),
        masks=torch.cat([it["masks"] for it in items]),
        names=[it["name"] for it in items],
    )


def _cell_counts(bits: np.ndarray, k: int) -> np.ndarray:
    """(C, H, W) uint8 bit planes -> (k, H/4, W/4) uint8 set pixels of each instance per 4x4 cell.

    Bit-parallel: 4 neighbouring pixels of a row are one uint32; masking with 0x11111111 keeps one
    bit per nibble (bit j in the low and j + 4 in the high nibble of each byte), so 4 rows add up
    without carries (<= 4 per nibble), and a multiply by 0x01010101 adds the 4 bytes (columns) into
    the top byte. About 30x faster than unpacking and a strided (K, H/4, 4, W/4, 4) sum."""
    c, h, w = bits.shape
    quad = np.ascontiguousarray(bits).view(np.uint32).reshape(c, h // 4, 4, w // 4)
    out = np.empty((c, 8, h // 4, w // 4), np.uint8)
    for j in range(4):
        f = (quad >> np.uint32(j)) & _NIBBLE_LOW_BIT
        s = f[:, :, 0] + f[:, :, 1] + f[:, :, 2] + f[:, :, 3]
        out[:, j] = ((s & _NIBBLE) * _BYTE_SUM) >> np.uint32(24)
        out[:, j + 4] = (((s >> np.uint32(4)) & _NIBBLE) * _BYTE_SUM) >> np.uint32(24)
    return out.reshape(8 * c, h // 4, w // 4)[:k]


def _occupied(bits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(C, H, W) bit planes -> (k, H) and (k, W) bool: rows / columns each instance touches."""
    c, _h, _w = bits.shape
    x = np.bitwise_or.reduce(np.ascontiguousarray(bits).view(np.uint64), axis=2)  # (C, H): 8 columns at once
    for shift in (32, 16, 8):  # fold the 8 bytes (columns) of each uint64 into its low byte
        x |= x >> np.uint64(shift)
    rows = (x & np.uint64(0xFF)).astype(np.uint8)
    cols = np.bitwise_or.reduce(bits, axis=1)  # (C, W)

    def spread(a: np.ndarray) -> np.ndarray:  # (C, n) bit planes -> (k, n) bool
        return np.unpackbits(a[:, None, :], axis=1, bitorder="little").reshape(8 * c, -1)[:k].view(bool)

    return spread(rows), spread(cols)


def _first_last(occupied: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, L) bool, each row with at least one True -> first index and last index + 1."""
    first = occupied.argmax(1)
    last = occupied.shape[1] - occupied[:, ::-1].argmax(1)
    return first, last


def instance_targets(bits: np.ndarray, k: int, min_area: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes and cell coverage of ``k`` packed instances (see :func:`~fastsam.train.augment.pack_masks`).

    Args:
        bits: (C, H, W) uint8 bit planes, H and W multiples of 8.
        min_area: instances with fewer set pixels are dropped (empty ones always).

    Returns:
        keep (k,) bool, boxes (n, 4) float32 tight xyxy (exclusive ends) and counts (n, H/4, W/4)
        uint8 (set pixels per 4x4 cell, 0..16) of the n kept instances, in order.
    """
    _, _h, _w = bits.shape
    counts = _cell_counts(bits, k)
    keep = counts.sum((1, 2), dtype=np.int64) >= max(int(min_area), 1)
    boxes = np.zeros((int(keep.sum()), 4), np.float32)
    if len(boxes):
        rows, cols = _occupied(bits, k)
        boxes[:, 1], boxes[:, 3] = _first_last(rows[keep])
        boxes[:, 0], boxes[:, 2] = _first_last(cols[keep])
    return keep, boxes, counts[keep]


def _check_imgsz(imgsz: Any) -> int:
    if isinstance(imgsz, bool) or not isinstance(imgsz, (int, np.integer)) or imgsz <= 0 or imgsz % INPUT_STRIDE:
        raise FastSAMError(f"imgsz must be a positive multiple of {INPUT_STRIDE}, got {imgsz!r}")
    return int(imgsz)


class TrainDataset(torch.utils.data.Dataset):
    """Training (or validation) samples of any :mod:`fastsam.data.datasets` dataset.

    With ``augment`` (YOLOv8 order): with probability ``mosaic`` a 4-image mosaic (sample i plus 3
    random others) on a 2S canvas, else a square letterbox to S; then a random affine (which crops
    a mosaic back to S), HSV jitter, flips; instances below ``min_area`` visible pixels are dropped.
    Without ``augment``: only the square letterbox (dropping instances below
    ``AugmentConfig().min_area`` pixels that the downscale left).

    Args:
        source: a dataset whose ``__getitem__`` returns a :class:`~fastsam.data.datasets.Sample`.
        imgsz: S, the square input size (a multiple of 32).
        seed: base seed; sample i of epoch e draws from ``np.random.default_rng([seed, e, i])``.

    Call :meth:`set_epoch` before each epoch (with DataLoader ``persistent_workers=True`` the
    workers keep the epoch they were started with, so keep it False).
    """

    def __init__(self, source: Any, imgsz: int, augment: AugmentConfig | None = None, seed: int = 0) -> None:
        self.imgsz = _check_imgsz(imgsz)
        if not (hasattr(source, "__len__") and hasattr(source, "__getitem__")):
            raise FastSAMError(f"TrainDataset source must be a dataset (len + indexing), got {type(source).__name__}")
        if len(source) == 0:
            raise FastSAMError("TrainDataset source is empty")
        if augment is not None and not isinstance(augment, AugmentConfig):
            raise FastSAMError(f"augment must be an AugmentConfig or None, got {type(augment).__name__}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise FastSAMError(f"seed must be an integer >= 0, got {seed!r}")
        self.source, self.augment, self.seed = source, augment, int(seed)
        self.epoch, self.mosaic = 0, True

    def set_epoch(self, epoch: int, mosaic: bool = True) -> None:
        """Select the epoch's random stream; ``mosaic=False`` turns mosaics off ("close_mosaic" phase)."""
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise FastSAMError(f"epoch must be an integer >= 0, got {epoch!r}")
        self.epoch, self.mosaic = int(epoch), bool(mosaic)

    def __len__(self) -> int:
        return len(self.source)

    def _index(self, i: int) -> int:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for a dataset of {n} samples")
        return int(i) % n

    def _build(self, i: int) -> tuple[np.ndarray, list[tuple[np.ndarray, int]], str]:
        """Sample i of the current epoch at full input resolution: (S, S, 3) uint8 image, per source
        image the (C, S, S) packed masks and their count, and the name."""
        i, s, cfg = self._index(i), self.imgsz, self.augment
        rng = np.random.default_rng([self.seed, self.epoch, i])
        first = self.source[i]
        layers: list[Layer]
        if cfg is None:
            canvas, layers = letterbox_layers(first.image, first.masks, s, first.boxes)
            return canvas, [(layer.warp(np.eye(3), (s, s)), layer.k) for layer in layers], first.name
        if rng.random() < cfg.mosaic and self.mosaic:
            others = [self.source[int(j)] for j in rng.integers(0, len(self), 3)]
            canvas, layers = mosaic_layers(rng, [first, *others], s)
        else:
            canvas, layers = letterbox_layers(first.image, first.masks, s, first.boxes)
        matrix = affine_matrix(rng, cfg, canvas.shape[:2], (s, s))
        image = augment_hsv(rng, warp_image(canvas, matrix, s), cfg)
        packed = [(layer.warp(matrix, (s, s)), layer.k) for layer in layers]
        if rng.random() < cfg.fliplr:  # flips after HSV (pixel-wise, so the order is immaterial)
            image, packed = image[:, ::-1], [(np.ascontiguousarray(b[:, :, ::-1]), k) for b, k in packed]
        if rng.random() < cfg.flipud:
            image, packed = image[::-1], [(np.ascontiguousarray(b[:, ::-1]), k) for b, k in packed]
        return np.ascontiguousarray(image), packed, first.name

    @property
    def _min_area(self) -> int:
        return int((self.augment or AugmentConfig()).min_area)

    def __getitem__(self, i: int) -> dict:
        """Sample ``i`` of the current epoch: {"image": (3, S, S) uint8 tensor, "boxes": (K, 4) float32
        xyxy input pixels, "masks": (K, S/4, S/4) float32 cell coverage, "name": str}."""
        image, packed, name = self._build(i)
        boxes, counts = [np.zeros((0, 4), np.float32)], [np.zeros((0, self.imgsz // 4, self.imgsz // 4), np.uint8)]
        for bits, k in packed:
            _, b, c = instance_targets(bits, k, self._min_area)
            boxes.append(b)
            counts.append(c)
        # numpy, not torch: torch's intra-op threads made this 10x slower on a busy 2-core machine
        masks = torch.from_numpy(np.concatenate(counts).astype(np.float32) * np.float32(1 / MASK_STRIDE**2))
        return {
            "image": torch.from_numpy(image.transpose(2, 0, 1).copy()),
            "boxes": torch.from_numpy(np.concatenate(boxes)),
            "masks": masks,
            "name": name,
        }

    def full_resolution(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Sample ``i`` as ``__getitem__`` builds it, before the mask downsample (for inspection and
        tests): (S, S, 3) uint8 image and (K, S, S) bool masks of the kept instances, same order."""
        image, packed, _ = self._build(i)
        out = [np.zeros((0, self.imgsz, self.imgsz), bool)]
        for bits, k in packed:
            keep, _, _ = instance_targets(bits, k, self._min_area)
            out.append(unpack_masks(bits, k)[keep])
        return image, np.concatenate(out)
