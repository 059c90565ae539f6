"""Class-agnostic COCO box and mask metrics (pycocotools) and the evaluation loop behind ``fastsam val``.

Every instance belongs to one category ("object"): the metrics say how well the predicted masks and
boxes cover the annotated instances, whatever they are. Evaluation uses pycocotools' matching
(greedy by score, IoU thresholds 0.50:0.05:0.95, a match needs IoU >= threshold) and its
101-point interpolated precision, with ``maxDets = (10, 100, 1000)`` detections per image.

Metric keys (``kind`` is ``mask`` or ``box``); each is computed here from
``COCOeval.eval["precision"]`` (T, R, K, A, M) and ``["recall"]`` (T, K, A, M) at the maxDets index
its name says, because ``COCOeval.summarize()`` prints fixed labels and picks maxDets by position:

* ``kind_AP``, ``kind_AP50``, ``kind_AP75``: average precision over IoU 0.50:0.95 / at 0.50 / at 0.75,
  area "all", at most **1000** detections per image (the largest maxDet; class-agnostic proposals
  are many per image, e.g. ~100 annotated masks per SA-1B image, so 100 would cap recall).
* ``kind_AR@10``, ``kind_AR@100``, ``kind_AR@1000``: recall averaged over IoU 0.50:0.95 with at most
  that many detections per image (the highest-scoring ones), area "all".
* ``kind_AR_small@1000``, ``kind_AR_medium@1000``, ``kind_AR_large@1000``: the same for ground truth of
  area < 32², 32²..96², > 96² pixels (COCO's ranges; the area is the mask's pixel count for both
  kinds); NaN when the data holds no ground truth in that range.

Box metrics compare the predicted detection boxes with the tight boxes of the ground-truth masks
(COCO ``[x, y, w, h]``, from ``xyxy`` with exclusive ends). Masks are kept as COCO RLE only: each
image is encoded as soon as it is added, so memory grows with the RLE strings, not with H * W.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

from ..config import PredictConfig
from ..data.detect import DATASET_FORMATS, detect_format, open_dataset
from ..errors import FastSAMError
from ..results import Segments

__all__ = [
    "DATASET_FORMATS",
    "MAX_DETS",
    "METRIC_KEYS",
    "CocoAccumulator",
    "coco_metrics",
    "default_imgsz",
    "detect_format",
    "evaluate",
    "format_table",
    "metrics_json",
    "open_dataset",
]

_T = TypeVar("_T")

MAX_DETS: tuple[int, int, int] = (10, 100, 1000)
_AREAS = ("small", "medium", "large")


def _keys(kind: str) -> list[str]:
    return (
        [f"{kind}_AP", f"{kind}_AP50", f"{kind}_AP75"]
        + [f"{kind}_AR@{m}" for m in MAX_DETS]
        + [f"{kind}_AR_{a}@{MAX_DETS[-1]}" for a in _AREAS]
    )


METRIC_KEYS: tuple[str, ...] = tuple(_keys("mask") + _keys("box"))


# ---------------------------------------------------------------------------------------- encoding
def _xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) xyxy -> (N, 4) float64 COCO xywh (same pixel frame)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)


def _encode_dense(masks: np.ndarray) -> list[dict]:
    """(K, H, W) bool -> K COCO RLE dicts (pycocotools wants (H, W, K) uint8 in Fortran order)."""
    from pycocotools import mask as mask_utils

    if masks.shape[0] == 0:
        return []
    return mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))


def _ground_truth(item: Any, index: int) -> tuple[tuple[int, int], list[dict], np.ndarray, np.ndarray]:
    """A ``Sample`` or ``(masks (K, H, W) bool, boxes (K, 4) xyxy)`` -> (size, RLEs, xywh boxes, areas)."""
    if hasattr(item, "masks") and hasattr(item, "boxes"):
        masks, boxes = item.masks, item.boxes
    elif isinstance(item, (tuple, list)) and len(item) == 2:
        masks, boxes = item
    else:
        raise FastSAMError(f"ground truth of image {index}: expected a Sample or (masks, boxes)")
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3:
        raise FastSAMError(f"ground truth of image {index}: masks must be (K, H, W), got shape {masks.shape}")
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.size == 0 and masks.shape[0] == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.shape != (masks.shape[0], 4):
        raise FastSAMError(f"ground truth of image {index}: {masks.shape[0]} masks but boxes of shape {boxes.shape}")
    areas = masks.sum(axis=(1, 2), dtype=np.int64)
    return (masks.shape[1], masks.shape[2]), _encode_dense(masks), _xyxy_to_xywh(boxes), areas


def _predictions(item: Any, size: tuple[int, int], index: int) -> tuple[list[dict], np.ndarray, np.ndarray, np.ndarray]:
    """``Segments``, ``(boxes, scores, masks)`` or a mapping with those keys -> (RLEs, xywh boxes, areas, scores)."""
    if isinstance(item, Segments):
        if tuple(item.image_size) != tuple(size):
            raise FastSAMError(
                f"image {index}: predictions are for size {tuple(item.image_size)}, ground truth is {tuple(size)}"
            )
        # our RLE is built from the mask crops (byte-identical to pycocotools'), no dense (N, H, W) array
        return item.to_rle(), _xyxy_to_xywh(item.boxes), item.areas.astype(np.int64), item.scores.astype(np.float64)
    if isinstance(item, Mapping):
        try:
            item = (item["boxes"], item["scores"], item["masks"])
        except KeyError as exc:
            raise FastSAMError(f"predictions of image {index}: missing key {exc}") from None
    if not (isinstance(item, (tuple, list)) and len(item) == 3):
        raise FastSAMError(f"predictions of image {index}: expected Segments or (boxes, scores, masks)")
    boxes, scores, masks = (np.asarray(v) for v in item)
    masks = masks.astype(bool).reshape(-1, *size) if masks.size == 0 else masks.astype(bool)
    scores = scores.astype(np.float64).reshape(-1)
    if masks.ndim != 3 or masks.shape[1:] != tuple(size):
        raise FastSAMError(
            f"predictions of image {index}: masks of shape {masks.shape}, expected (N, {size[0]}, {size[1]})"
        )
    n = masks.shape[0]
    if scores.shape != (n,) or boxes.size != 4 * n:
        raise FastSAMError(
            f"predictions of image {index}: {n} masks but {scores.size} scores and boxes of shape {boxes.shape}"
        )
    return _encode_dense(masks), _xyxy_to_xywh(boxes), masks.sum(axis=(1, 2), dtype=np.int64), scores


class CocoAccumulator:
    """Collects (ground truth, predictions) image by image as COCO annotations, then evaluates.

    ``add`` encodes the masks to RLE at once, so no dense mask outlives the call.
    """

    def __init__(self) -> None:
        self._images: list[dict] = []
        self._gt: list[dict] = []
        self._dt: list[dict] = []

    @property
    def images(self) -> int:
        return len(self._images)

    @property
    def instances(self) -> int:
        return len(self._gt)

    @property
    def detections(self) -> int:
        return len(self._dt)

    def add(self, ground_truth: Any, predictions: Any) -> None:
        """One image: ground truth (``Sample`` or ``(masks, boxes)``) and its predictions (``Segments``,
        ``(boxes, scores, masks)`` or a mapping with those keys); see :func:`coco_metrics`."""
        index = len(self._images)
        size, g_rle, g_box, g_area = _ground_truth(ground_truth, index)
        d_rle, d_box, d_area, d_score = _predictions(predictions, size, index)
        image_id = index + 1  # pycocotools treats id 0 as "unmatched": every id starts at 1
        self._images.append({"id": image_id, "height": size[0], "width": size[1]})
        for rle, box, area in zip(g_rle, g_box.tolist(), g_area.tolist()):
            self._gt.append(
                {
                    "id": len(self._gt) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "segmentation": rle,
                    "bbox": box,
                    "area": area,
                    "iscrowd": 0,
                }
            )
        for rle, box, area, score in zip(d_rle, d_box.tolist(), d_area.tolist(), d_score.tolist()):
            self._dt.append(
                {
                    "id": len(self._dt) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "segmentation": rle,
                    "bbox": box,
                    "area": area,
                    "score": score,
                }
            )

    def compute(self) -> dict[str, float]:
        """The metrics of :data:`METRIC_KEYS` (see the module docstring)."""
        if not self._gt:
            raise FastSAMError("no ground-truth instances: nothing to evaluate against")
        out = _summarise(_run_cocoeval(self._images, self._gt, self._dt, "segm"), "mask")
        # A detection's area only decides whether an unmatched one counts in an area range: the mask
        # area for masks, the box area for boxes (as pycocotools' loadRes sets them). Swapped in place
        # rather than copying what may be a million annotation dicts.
        mask_areas = [d["area"] for d in self._dt]
        try:
            for d in self._dt:
                d["area"] = d["bbox"][2] * d["bbox"][3]
            out.update(_summarise(_run_cocoeval(self._images, self._gt, self._dt, "bbox"), "box"))
        finally:
            for d, a in zip(self._dt, mask_areas):
                d["area"] = a
        return out


def _coco(images: list[dict], anns: list[dict]) -> Any:
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "object"}]}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
        coco.createIndex()
    return coco


def _run_cocoeval(images: list[dict], gt: list[dict], dt: list[dict], iou_type: str) -> Any:
    from pycocotools.cocoeval import COCOeval

    ev = COCOeval(_coco(images, gt), _coco(images, dt), iou_type)
    ev.params.maxDets = list(MAX_DETS)
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
    return ev


def _mean_defined(values: np.ndarray) -> float:
    """Mean over entries > -1 (pycocotools marks undefined ones with -1); NaN if none."""
    v = values[values > -1]
    return float(v.mean()) if v.size else math.nan


def _summarise(ev: Any, kind: str) -> dict[str, float]:
    """Metrics from ``ev.eval``: precision (T, R, K, A, M), recall (T, K, A, M); K = 1 category."""
    p = ev.params
    precision, recall = ev.eval["precision"], ev.eval["recall"]
    area = {label: i for i, label in enumerate(p.areaRngLbl)}
    mdet = {m: i for i, m in enumerate(p.maxDets)}
    top = mdet[MAX_DETS[-1]]
    all_t = np.ones(len(p.iouThrs), dtype=bool)
    out = {
        f"{kind}_AP": _mean_defined(precision[all_t, :, :, area["all"], top]),
        f"{kind}_AP50": _mean_defined(precision[np.isclose(p.iouThrs, 0.50), :, :, area["all"], top]),
        f"{kind}_AP75": _mean_defined(precision[np.isclose(p.iouThrs, 0.75), :, :, area["all"], top]),
    }
    for m in MAX_DETS:
        out[f"{kind}_AR@{m}"] = _mean_defined(recall[:, :, area["all"], mdet[m]])
    for a in _AREAS:
        out[f"{kind}_AR_{a}@{MAX_DETS[-1]}"] = _mean_defined(recall[:, :, area[a], top])
    return out


def coco_metrics(ground_truth: Sequence[Any], predictions: Sequence[Any]) -> dict[str, float]:
    """Class-agnostic COCO mask and box metrics (keys :data:`METRIC_KEYS`, see the module docstring).

    Args:
        ground_truth: per image, a ``Sample`` or ``(masks, boxes)``: masks (K, H, W) bool, boxes
            (K, 4) xyxy pixels with exclusive ends (e.g. the tight mask boxes).
        predictions: per image, a :class:`~fastsam.results.Segments` or ``(boxes, scores, masks)``
            (or a mapping with those keys): boxes (N, 4) xyxy original pixels, scores (N,), masks
            (N, H, W) bool, for the same (H, W) as the ground truth.
    """
    if len(ground_truth) != len(predictions):
        raise FastSAMError(f"{len(ground_truth)} ground-truth images but {len(predictions)} prediction lists")
    acc = CocoAccumulator()
    for g, d in zip(ground_truth, predictions):
        acc.add(g, d)
    return acc.compute()


# -------------------------------------------------------------------------------------- evaluation
def default_imgsz(predictor: Any) -> int:
    """The ``imgsz`` recorded in the model's provenance (e.g. its training size), else 1024."""
    from ..config import recorded_imgsz

    if hasattr(predictor, "default_imgsz"):
        return int(predictor.default_imgsz)
    network = getattr(predictor, "network", predictor)
    return recorded_imgsz(dict(getattr(network, "provenance", None) or {}))


def _progress(items: Iterable[_T], enabled: bool, total: int) -> Iterable[_T]:
    if not enabled:
        return items
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is optional: plain iteration
        return items
    return tqdm(items, total=total, desc="val", unit="img", file=sys.stderr)


def evaluate(
    predictor: Any,
    dataset: Sequence[Any],
    *,
    imgsz: int | None = None,
    conf: float = 0.001,
    iou: float = 0.7,
    max_det: int = 1000,
    limit: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Everything mode over ``dataset`` (e.g. a :mod:`fastsam.data.datasets` reader), scored by
    :func:`coco_metrics`.

    ``predictor`` is a :class:`~fastsam.predictor.FastSAM` (anything with ``segment(image, PredictConfig)``);
    masks are retina (original resolution). ``imgsz`` None takes :func:`default_imgsz`. ``limit``
    evaluates the first that many samples only. Samples the reader finds corrupt are skipped (and
    are in ``dataset.problems``). Returns the metrics plus ``images`` (evaluated), ``instances``
    (ground truth), ``detections`` and ``seconds`` (wall time, inference and scoring).
    """
    cfg = PredictConfig(
        imgsz=default_imgsz(predictor) if imgsz is None else imgsz,
        conf=conf,
        iou=iou,
        retina_masks=True,
        max_det=max_det,
    )
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise FastSAMError(f"limit must be an integer >= 1, got {limit!r}")
    n = len(dataset) if limit is None else min(limit, len(dataset))
    if n == 0:
        raise FastSAMError("the dataset holds no images to evaluate")
    # Our readers hand back the NEXT good sample for a corrupt one (training keeps its length); for
    # evaluation that would count an image twice, so a sample whose index was marked bad is dropped.
    bad: set[int] = getattr(dataset, "_bad", set())
    acc = CocoAccumulator()
    start = time.perf_counter()
    for i in _progress(range(n), progress, n):
        sample = dataset[i]
        if i in bad:
            continue
        acc.add(sample, predictor.segment(sample.image, cfg))
    if acc.images == 0:
        raise FastSAMError("no readable image in the dataset")
    metrics: dict[str, Any] = dict(acc.compute())
    metrics.update(
        images=acc.images,
        instances=acc.instances,
        detections=acc.detections,
        seconds=round(time.perf_counter() - start, 3),
    )
    return metrics


# ------------------------------------------------------------------------------------------ output
def format_table(metrics: Mapping[str, Any]) -> str:
    """Mask and box rows of AP / AP50 / AP75 / AR@10 / AR@100 / AR@1000 (and area ARs), as text."""
    cols = ["AP", "AP50", "AP75"] + [f"AR@{m}" for m in MAX_DETS] + [f"AR{a[0].upper()}@{MAX_DETS[-1]}" for a in _AREAS]
    keys = ["AP", "AP50", "AP75"] + [f"AR@{m}" for m in MAX_DETS] + [f"AR_{a}@{MAX_DETS[-1]}" for a in _AREAS]
    width = max(len(c) for c in cols) + 1
    lines = ["     " + "".join(c.rjust(width) for c in cols)]
    for kind in ("mask", "box"):
        cells = []
        for k in keys:
            v = metrics.get(f"{kind}_{k}", math.nan)
            cells.append(("n/a" if v is None or math.isnan(v) else f"{v:.4f}").rjust(width))
        lines.append(kind.ljust(5) + "".join(cells))
    return "\n".join(lines)


def metrics_json(data: Mapping[str, Any]) -> bytes:
    """Strict JSON (undefined metrics, NaN, become null)."""

    def clean(v: Any) -> Any:
        if isinstance(v, float) and math.isnan(v):
            return None
        if isinstance(v, (np.integer, np.floating)):
            return clean(v.item())
        return v

    return (json.dumps({k: clean(v) for k, v in data.items()}, indent=2, allow_nan=False) + "\n").encode()
