"""Zero-shot instance segmentation prompted by a detector's boxes (paper Table 6, ViTDet-H boxes).

For every image: everything mode once (conf 0.4, NMS IoU 0.9, 300 masks: the original's defaults),
then each detector box (a COCO results entry with ``bbox``, ``category_id``, ``score``) selects
the mask with the highest IoU with the filled box (:func:`fastsam.prompts.select_by_boxes`). The
mask takes the detector's category and score. A box that overlaps no mask keeps the filled box as
its mask (counted as ``boxes_without_mask``); a box with no area inside the image is dropped
(``boxes_dropped``). Mask AP by pycocotools (COCO: ``AP``, ``AP50``, ``AP75``, ``APs``, ``APm``,
``APl`` of ``COCOeval.stats``) or by lvis (``--lvis``: the same plus ``APr``, ``APc``, ``APf`` of
``LVISEval.results``, 300 detections per image).
"""

from __future__ import annotations

import contextlib
import io
import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from ..config import PredictConfig
from ..errors import FastSAMError
from ..io.images import load_image
from ..prompts import select_by_boxes
from ._coco import coco_api, find_images, images_of, load_annotations, lvis_api, lvis_numpy, read_results
from ._deps import need
from ._runner import RunOptions, run_parts
from .report import write_metrics

__all__ = ["INSTANCE_CONFIG", "evaluate_instances", "mask_ap", "prompt_masks"]

INSTANCE_CONFIG = PredictConfig(imgsz=1024, conf=0.4, iou=0.9, max_det=300)
_COCO_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
_LVIS_KEYS = (*_COCO_KEYS, "APr", "APc", "APf")


def prompt_masks(seg: Any, boxes: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int, int]:
    """Results (category, score, RLE) for one image's detector boxes on its Segments.

    Returns (results, boxes without a mask, boxes dropped)."""
    from pycocotools import mask as mask_utils

    h, w = seg.image_size
    out, empty, dropped = [], 0, 0
    keep, xyxy = [], []
    for d in boxes:
        x, y, bw, bh = (float(v) for v in d["bbox"])
        x1, y1, x2, y2 = max(x, 0.0), max(y, 0.0), min(x + bw, float(w)), min(y + bh, float(h))
        if x2 <= x1 or y2 <= y1:
            dropped += 1
            continue
        keep.append(d)
        xyxy.append([x1, y1, x2, y2])
    picks = select_by_boxes(seg, xyxy) if keep else np.zeros(0, dtype=np.int64)
    for d, (x1, y1, x2, y2), k in zip(keep, xyxy, picks.tolist()):
        if k >= 0:
            rle = dict(seg[[k]].to_rle()[0])  # from the crop, no dense mask
        else:  # no mask under the box: the filled box stands in for it
            empty += 1
            m = np.zeros((h, w), dtype=bool)
            m[int(np.ceil(y1 - 0.5)) : int(np.ceil(y2 - 0.5)), int(np.ceil(x1 - 0.5)) : int(np.ceil(x2 - 0.5))] = True
            rle = _rle(m)
        rle["counts"] = rle["counts"].decode() if isinstance(rle["counts"], bytes) else rle["counts"]
        out.append(
            {
                "image_id": int(d["image_id"]),
                "category_id": int(d["category_id"]),
                "score": float(d["score"]),
                "segmentation": rle,
                "bbox": [float(v) for v in mask_utils.toBbox(rle)],
            }
        )
    return out, empty, dropped


def _rle(mask: np.ndarray) -> dict[str, Any]:
    from pycocotools import mask as mask_utils

    return dict(mask_utils.encode(np.asfortranarray(mask.astype(np.uint8))))


def mask_ap(
    dataset: dict[str, Any], results: list[dict[str, Any]], image_ids: list[int], lvis: bool
) -> dict[str, float]:
    """Mask AP of ``results`` on ``image_ids``: pycocotools' stats[0:6] or lvis' results (see the module docstring)."""
    if not results:
        raise FastSAMError("no masks to evaluate (the detections hold no box inside an evaluated image)")
    # without "bbox" both loaders take a result as a mask: area and box from the RLE (lvis would
    # otherwise give a mask the area of its box)
    results = [{k: v for k, v in r.items() if k != "bbox"} for r in results]
    if lvis:
        lvis_mod = need("lvis")
        gt = lvis_api(dataset)
        with lvis_numpy():
            res = lvis_mod.LVISResults(gt, results, max_dets=300)
            ev = lvis_mod.LVISEval(gt, res, "segm")
            ev.params.img_ids = sorted(image_ids)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        return {k: math.nan if ev.results[k] == -1 else float(ev.results[k]) for k in _LVIS_KEYS}
    from pycocotools.cocoeval import COCOeval

    gt = coco_api(dataset)
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "segm")
        ev.params.imgIds = sorted(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {k: math.nan if v == -1 else float(v) for k, v in zip(_COCO_KEYS, ev.stats[:6])}


def evaluate_instances(
    ann: Path,
    boxes: Path,
    data: Path,
    out: Path,
    *,
    predictor: Any,
    lvis: bool = False,
    config: PredictConfig = INSTANCE_CONFIG,
    run: RunOptions | None = None,
    options: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Box-prompted masks on the images of ``ann``; writes OUT/metrics.json, returns the metrics (rank 0)."""
    run = run or RunOptions()
    dataset = load_annotations(ann, lvis)
    images = images_of(dataset)[: run.limit]
    detections = read_results(boxes, {im.id for im in images_of(dataset)}, need_category=True)
    by_image: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for d in detections:
        by_image[int(d["image_id"])].append(d)
    files = find_images(data, images)
    record: dict[str, Any] = {
        "task": "instances",
        "ann": str(ann),
        "boxes": str(boxes),
        "data": str(data),
        "lvis": lvis,
    }
    record.update(options or {}, imgsz=config.imgsz, conf=config.conf, iou=config.iou, max_det=config.max_det)

    def work(key: str) -> dict[str, Any]:
        path = files[int(key)]
        if path is None:
            return {"skipped": "image file not found"}
        if not by_image.get(int(key)):
            return {"results": [], "empty": 0, "dropped": 0}
        try:
            seg = predictor.segment(load_image(path), config)
        except FastSAMError as exc:
            return {"skipped": str(exc)}
        results, empty, dropped = prompt_masks(seg, by_image[int(key)])
        return {"results": results, "empty": empty, "dropped": dropped}

    start = time.perf_counter()
    parts = run_parts(out, [str(im.id) for im in images], work, record, run, desc="instances")
    if parts is None:
        return None
    ok = {k: v for k, v in parts.items() if "skipped" not in v}
    skipped = sorted(k for k in parts if k not in ok)
    if not ok:
        raise FastSAMError(f"no image could be evaluated ({len(skipped)} skipped)")
    results = [r for v in ok.values() for r in v["results"]]
    metrics: dict[str, Any] = mask_ap(dataset, results, [int(k) for k in ok], lvis)
    metrics.update(
        record,
        images=len(ok),
        masks=len(results),
        boxes_without_mask=sum(v["empty"] for v in ok.values()),
        boxes_dropped=sum(v["dropped"] for v in ok.values()),
        skipped=len(skipped),
        skipped_ids=skipped[:20],
        seconds=round(time.perf_counter() - start, 3),
    )
    write_metrics(out, metrics)
    return metrics
