"""Huge images: everything mode on overlapping tiles plus a downscaled whole-image pass, merged.

A network input of ``imgsz`` sees a 8000x8000 photo at 1/8 of its resolution: small objects vanish.
Here the image is cut into overlapping ``size`` x ``size`` windows, each segmented like an image of
its own (letterboxed to ``imgsz``: at full resolution when ``size <= imgsz``), and the whole image
is segmented once more, downscaled, for objects larger than a tile. The passes are merged:

1. **Join**: an object crossing a tile border is cut into pieces, one per tile. Two pieces from
   overlapping tiles are the same object when their masks agree inside the tiles' common window
   (mask IoU >= ``join_iou`` there, one-to-one); joined pieces become one mask (their union).
2. **Deduplicate**: masks of every pass overlapping by mask IoU >= ``dedup_iou`` are one object;
   one is kept, in this order of trust: tile masks that are whole (full resolution), then the
   whole-image pass (complete, coarser), then tile masks still cut by a tile border that no
   neighbour continued (a missed piece: partial). A tile mask that duplicates a clearly larger
   (``> COMPLETE_RATIO`` x its area) whole-image mask of an object large for a tile (long side
   ``>= LARGE_FRACTION`` of it) is taken for a part of that object and loses to it: the network
   splits objects that fill much of its input, while small objects are coarse in the whole pass.

Masks stay compact crops in image pixels throughout (:class:`~fastsam.results.Segments`), so memory
grows with the tile size and the objects, not with the image: a dense (N, H, W) stack is never built.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from .config import PredictConfig
from .errors import FastSAMError
from .ops.crop_iou import crop_iou
from .ops.masks import MaskCrops
from .results import Segments

if TYPE_CHECKING:
    from .predictor import FastSAM

__all__ = ["TileConfig", "merge_tiles", "segment_tiled", "tile_windows"]

#: A tile's window in image pixels: (r0, r1, c0, c1), ends exclusive.
Window = tuple[int, int, int, int]


class _Mask(NamedTuple):
    """A candidate of the merge: one mask in image pixels."""

    box: Any
    score: float
    stability: float
    region: np.ndarray
    crop: np.ndarray
    area: int


#: A mask within this many pixels of a tile edge touches it (retina masks end a pixel short at times).
EDGE_MARGIN = 2
#: A whole-image mask this much larger than a tile mask it duplicates is the more complete one.
COMPLETE_RATIO = 1.1
#: ... when that object's long side is at least this fraction of the tile size.
LARGE_FRACTION = 0.5
#: Masks compared per chunk when deduplicating: bounds the (chunk, N) IoU matrix in memory.
_CHUNK = 256


@dataclass(frozen=True)
class TileConfig:
    """How a huge image is tiled.

    Attributes:
        size: tile side in image pixels; each tile is letterboxed to the network's ``imgsz``, so
            ``size == imgsz`` segments at full resolution.
        overlap: pixels shared by neighbouring tiles (default ``size // 4``); objects smaller than
            it are whole in some tile, larger ones are joined across the border.
        join_iou: mask IoU inside the common window above which two tiles' pieces are one object.
        dedup_iou: mask IoU above which two final masks are duplicates (one is kept).
        whole_image: also segment the whole image, downscaled, for objects larger than a tile.
    """

    size: int = 1024
    overlap: int | None = None
    join_iou: float = 0.5
    dedup_iou: float = 0.6
    whole_image: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 32:
            raise FastSAMError(f"tile size must be a whole number of pixels >= 32, got {self.size!r}")
        if self.overlap is not None and (
            isinstance(self.overlap, bool) or not isinstance(self.overlap, int) or not 0 <= self.overlap < self.size
        ):
            raise FastSAMError(
                f"tile overlap must be a whole number of pixels in [0, {self.size}), got {self.overlap!r}"
            )
        for name in ("join_iou", "dedup_iou"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise FastSAMError(f"{name} must be in (0, 1], got {getattr(self, name)!r}")

    @property
    def stride(self) -> int:
        return self.size - (self.size // 4 if self.overlap is None else self.overlap)


def _starts(n: int, size: int, stride: int) -> list[int]:
    """Tile origins along one axis of ``n`` pixels: evenly spread, first at 0, last ending at ``n``,
    no two further apart than ``stride`` (so neighbours share at least ``size - stride`` pixels)."""
    if n <= size:
        return [0]
    k = -(-(n - size) // stride) + 1
    return [int(v) for v in np.round(np.linspace(0, n - size, k))]


def tile_windows(image_size: tuple[int, int], tiles: TileConfig) -> list[Window]:
    """(r0, r1, c0, c1) windows (end exclusive) covering an (H, W) image, row-major."""
    h, w = image_size
    rows, cols = _starts(h, tiles.size, tiles.stride), _starts(w, tiles.size, tiles.stride)
    return [(r, min(r + tiles.size, h), c, min(c + tiles.size, w)) for r in rows for c in cols]


def _shift(seg: Segments, window: Window, image_size: tuple[int, int]) -> Segments:
    """A tile's Segments moved into the whole image's pixel frame."""
    r0, _, c0, _ = window
    return Segments(
        image_size,
        seg.boxes + np.array([c0, r0, c0, r0], dtype=np.float32),
        seg.scores,
        seg.stability,
        seg.regions + np.array([r0, r0, c0, c0], dtype=np.int64),
        seg.crops,
    )


def _clip(seg: Segments, window: Window) -> tuple[np.ndarray, np.ndarray, list, np.ndarray]:
    """Masks of ``seg`` inside ``window``: (indices, regions, crops, areas) of those with pixels there."""
    r0, r1, c0, c1 = window
    reg = seg.regions
    rr0, rr1 = np.maximum(reg[:, 0], r0), np.minimum(reg[:, 1], r1)
    cc0, cc1 = np.maximum(reg[:, 2], c0), np.minimum(reg[:, 3], c1)
    idx, regions, crops, areas = [], [], [], []
    for k in np.flatnonzero((rr1 > rr0) & (cc1 > cc0)).tolist():
        part = seg.crops[k][rr0[k] - reg[k, 0] : rr1[k] - reg[k, 0], cc0[k] - reg[k, 2] : cc1[k] - reg[k, 2]]
        n = int(np.count_nonzero(part))
        if n:
            idx.append(k)
            regions.append((rr0[k], rr1[k], cc0[k], cc1[k]))
            crops.append(part)
            areas.append(n)
    return np.array(idx, dtype=np.int64), np.array(regions, dtype=np.int64).reshape(-1, 4), crops, np.array(areas)


def _touches(
    crop: np.ndarray, region: np.ndarray, window: Window, image_size: tuple[int, int]
) -> list[tuple[int, int]]:
    """Interior edges of the tile ``window`` that a mask reaches, as (axis, coordinate) lines:
    axis 0 = a row boundary, 1 = a column boundary; image borders are not interior."""
    r0, r1, c0, c1 = (int(v) for v in region)
    t0, t1, u0, u1 = window
    h, w = image_size
    out = []
    if t0 > 0 and r0 <= t0 + EDGE_MARGIN and crop[: t0 + EDGE_MARGIN - r0].any():
        out.append((0, t0))
    if t1 < h and r1 >= t1 - EDGE_MARGIN and crop[max(0, t1 - EDGE_MARGIN - r0) :].any():
        out.append((0, t1))
    if u0 > 0 and c0 <= u0 + EDGE_MARGIN and crop[:, : u0 + EDGE_MARGIN - c0].any():
        out.append((1, u0))
    if u1 < w and c1 >= u1 - EDGE_MARGIN and crop[:, max(0, u1 - EDGE_MARGIN - c0) :].any():
        out.append((1, u1))
    return out


class _Sets:
    """Union-find over (tile, mask) pieces."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        self.parent[self.find(i)] = self.find(j)


def _join_pairs(a: Segments, b: Segments, common: Window, join_iou: float) -> list[tuple[int, int]]:
    """One-to-one (i, j) pieces of tiles a and b that agree inside their ``common`` window."""
    ia, ra, ca, na = _clip(a, common)
    ib, rb, cb, nb = _clip(b, common)
    if ia.size == 0 or ib.size == 0:
        return []
    iou = crop_iou(ra, ca, na, rb, cb, nb, min_iou=join_iou)
    pairs, used_a, used_b = [], set(), set()
    for flat in np.argsort(-iou, axis=None, kind="stable").tolist():
        i, j = divmod(flat, iou.shape[1])
        if iou[i, j] < join_iou:
            break
        if i not in used_a and j not in used_b:  # greedy by agreement: a piece joins one piece per neighbour
            used_a.add(i)
            used_b.add(j)
            pairs.append((int(ia[i]), int(ib[j])))
    return pairs


def _mask(seg: Segments, k: int) -> _Mask:
    return _Mask(
        seg.boxes[k], float(seg.scores[k]), float(seg.stability[k]), seg.regions[k], seg.crops[k], int(seg.areas[k])
    )


def _union(members: list[tuple[Segments, int]]) -> _Mask:
    """One mask from pieces. Score: the best piece's;
    stability: the pieces' area-weighted mean; box: the pieces' boxes' union. One piece is itself
    (its crop is not copied: a tile pass's masks are most of the memory a tiled run holds)."""
    if len(members) == 1:
        return _mask(*members[0])
    regions = np.stack([seg.regions[k] for seg, k in members])
    r0, c0 = regions[:, 0].min(), regions[:, 2].min()
    r1, c1 = regions[:, 1].max(), regions[:, 3].max()
    crop = np.zeros((r1 - r0, c1 - c0), dtype=bool)
    for seg, k in members:
        q = seg.regions[k]
        crop[q[0] - r0 : q[1] - r0, q[2] - c0 : q[3] - c0] |= seg.crops[k]
    boxes = np.stack([seg.boxes[k] for seg, k in members])
    box = np.array([boxes[:, 0].min(), boxes[:, 1].min(), boxes[:, 2].max(), boxes[:, 3].max()], dtype=np.float32)
    areas = np.array([seg.areas[k] for seg, k in members], dtype=np.float64)
    stab = np.array([seg.stability[k] for seg, k in members], dtype=np.float64)
    stability = float((areas * stab).sum() / areas.sum()) if areas.sum() else float(stab.mean())
    score = max(float(seg.scores[k]) for seg, k in members)
    region = np.array([r0, r1, c0, c1], dtype=np.int64)
    return _Mask(box, score, stability, region, crop, int(np.count_nonzero(crop)))


def _continued(region: np.ndarray, line: tuple[int, int], side_low: bool) -> bool:
    """Whether a joined mask's region reaches past a tile edge ``line`` (so a neighbour continued it)."""
    axis, at = line
    lo, hi = (region[0], region[1]) if axis == 0 else (region[2], region[3])
    return bool(lo < at - EDGE_MARGIN) if side_low else bool(hi > at + EDGE_MARGIN)


def merge_tiles(
    parts: list[tuple[Window, Segments]], whole: Segments | None, image_size: tuple[int, int], tiles: TileConfig
) -> Segments:
    """Join and deduplicate tile passes (``parts``: window and its Segments, already in image pixels)
    and the whole-image pass into one Segments (see the module's docstring), in score order."""
    offsets = np.cumsum([0] + [len(seg) for _, seg in parts])
    sets = _Sets(int(offsets[-1]))
    for a in range(len(parts)):
        for b in range(a + 1, len(parts)):
            (p0, p1, q0, q1), (s0, s1, t0, t1) = parts[a][0], parts[b][0]
            common = (max(p0, s0), min(p1, s1), max(q0, t0), min(q1, t1))
            if common[1] > common[0] and common[3] > common[2]:
                for i, j in _join_pairs(parts[a][1], parts[b][1], common, tiles.join_iou):
                    sets.union(int(offsets[a]) + i, int(offsets[b]) + j)
    groups: dict[int, list[tuple[int, int]]] = {}
    for t, (_, seg) in enumerate(parts):
        for k in range(len(seg)):
            groups.setdefault(sets.find(int(offsets[t]) + k), []).append((t, k))
    cand: list[_Mask] = []
    rank: list[int] = []  # 0: whole tile mask, 1: whole-image pass, 2: cut tile mask (see docstring)
    for members in groups.values():
        pieces = [(parts[t][1], k) for t, k in members]
        mask = _union(pieces)
        cut = False
        for t, k in members:
            seg = parts[t][1]
            for line in _touches(seg.crops[k], seg.regions[k], parts[t][0], image_size):
                low = line[1] == parts[t][0][2 * line[0]]  # the tile's top/left edge: continued below it
                cut |= not _continued(mask.region, line, low)
        cand.append(mask)
        rank.append(2 if cut else 0)
    if whole is not None:
        cand += [_mask(whole, k) for k in range(len(whole))]
        rank += [1] * len(whole)
    return _dedup(cand, np.array(rank), image_size, tiles.dedup_iou, LARGE_FRACTION * tiles.size)


def _dedup(cand: list[_Mask], rank: np.ndarray, image_size: tuple[int, int], thr: float, large: float) -> Segments:
    """Greedy mask-IoU suppression in (rank, -score) order; the kept masks in descending score order."""
    if not cand:
        return Segments.empty(image_size)
    scores = np.array([c.score for c in cand])
    regions = np.stack([np.asarray(c.region, dtype=np.int64) for c in cand])
    crops = [c.crop for c in cand]
    areas = np.array([c.area for c in cand], dtype=np.int64)
    _demote(rank, regions, crops, areas, thr, large)
    order = np.lexsort((-scores, rank))
    suppressed = np.zeros(len(cand), dtype=bool)
    keep = []
    for start in range(0, len(order), _CHUNK):
        block = order[start : start + _CHUNK]
        iou = crop_iou(regions[block], [crops[i] for i in block], areas[block], regions, crops, areas, min_iou=thr)
        for row, i in enumerate(block.tolist()):
            if suppressed[i] or areas[i] == 0:
                continue
            keep.append(i)
            hits = iou[row] >= thr
            hits[i] = False
            suppressed |= hits
    keep_arr = np.array(keep, dtype=np.int64)
    keep_arr = keep_arr[np.argsort(-scores[keep_arr], kind="stable")]
    return Segments.from_crops(
        image_size,
        np.stack([np.asarray(cand[i].box, dtype=np.float32) for i in keep_arr]),
        scores[keep_arr],
        MaskCrops(regions[keep_arr], [crops[i] for i in keep_arr], np.array([cand[i].stability for i in keep_arr])),
    )


def _demote(rank: np.ndarray, regions: np.ndarray, crops: list, areas: np.ndarray, thr: float, large: float) -> None:
    """Rank 3 (after the whole-image pass) for whole tile masks (rank 0) that duplicate a whole-image
    mask (rank 1) more than ``COMPLETE_RATIO`` times their area whose region's long side is at least
    ``large`` pixels, in place."""
    sides = np.maximum(regions[:, 1] - regions[:, 0], regions[:, 3] - regions[:, 2])
    tile, whole = np.flatnonzero(rank == 0), np.flatnonzero((rank == 1) & (sides >= large))
    if tile.size == 0 or whole.size == 0:
        return
    for start in range(0, tile.size, _CHUNK):
        t = tile[start : start + _CHUNK]
        iou = crop_iou(
            regions[t], [crops[i] for i in t], areas[t], regions[whole], [crops[i] for i in whole], areas[whole], thr
        )
        larger = (iou >= thr) & (areas[whole][None, :] > COMPLETE_RATIO * areas[t][:, None])
        rank[t[larger.any(1)]] = 3


def _tile_passes(
    model: FastSAM, rgb: np.ndarray, cfg: PredictConfig, windows: list[Window], batch: int
) -> Iterator[tuple[int, Segments]]:
    """(window index, Segments in tile pixels) for every window; tiles of one shape batch together."""

    def crops() -> Iterator[np.ndarray]:
        for r0, r1, c0, c1 in windows:  # one tile copied at a time (the letterbox reads it contiguous)
            yield np.ascontiguousarray(rgb[r0:r1, c0:c1])

    if batch == 1:
        for i, tile in enumerate(crops()):
            yield i, model._segment_rgb(tile, cfg)
        return
    from .batching import iter_batched

    yield from iter_batched(model, crops(), cfg, batch)


def segment_tiled(model: FastSAM, rgb: np.ndarray, cfg: PredictConfig, tiles: TileConfig, batch: int = 1) -> Segments:
    """Everything mode on an (H, W, 3) uint8 RGB image by tiles (see the module's docstring); masks,
    boxes and records in the image's own pixels. An image no larger than one tile is segmented once."""
    h, w = rgb.shape[:2]
    windows = tile_windows((h, w), tiles)
    if len(windows) == 1:
        return model._segment_rgb(rgb, cfg)
    parts: list[tuple[Window, Segments] | None] = [None] * len(windows)
    for i, seg in _tile_passes(model, rgb, cfg, windows, batch):
        parts[i] = (windows[i], _shift(seg, windows[i], (h, w)))
    whole = model._segment_rgb(rgb, cfg) if tiles.whole_image else None
    return merge_tiles([p for p in parts if p is not None], whole, (h, w), tiles)
