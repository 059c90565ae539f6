"""Zero-shot object proposals on COCO (paper Table 3) and LVIS v1 (Tables 4 and 5).

Proposals: everything mode at ``max_det`` 1000 (conf 0.001, NMS IoU 0.9 by default); a proposal is
a detection box (FastSAM's stage-1 box, as the paper uses) and its mask, scored by the detection
score. Class-agnostic: every annotated instance of every category is one ground-truth object.

Metrics (metrics.json; fractions; ``kind`` = box metrics unprefixed, mask ones prefixed ``mask_``):

* ``AR@10``, ``AR@100``, ``AR@1000``: recall averaged over IoU 0.50:0.05:0.95 with the top 10 / 100 /
  1000 proposals per image; ``AR_small@1000``, ``AR_medium@1000``, ``AR_large@1000`` by COCO's
  area ranges (< 32², 32²..96², > 96² pixels of annotated area).
* ``AUC``: the area under the AR-vs-number-of-proposals curve with a **logarithmic** x axis from 1
  to 1000 proposals, normalised to [0, 1]: ``∫ AR(n) d(log n) / log 1000``, by the trapezoid rule
  over AR at n = 1, 2, 3, 4, 5, 6, 8, 10, 13, ..., 1000 (31 log-spaced counts). The paper does not
  spell its definition out; this one reproduces its Table 3 from the table's own AR columns to
  within 0.6 points with AR(1) taken as 0 (FastSAM 15.7 / 47.3 / 63.7 -> 31.6, printed 32.2;
  SAM-H E64 31.7 against 32.1; OLN-Box 33.9 against 34.3), the gap being AR(1).
* LVIS (``lvis=True``, through the lvis package, 1000 proposals): the same box and mask ARs at
  1000, and ``mask_AR_rare@1000``, ``mask_AR_common@1000``, ``mask_AR_frequent@1000``: the share
  of ground-truth objects of the categories of that frequency that lvis' matching recovers
  (mean over IoU thresholds, pooled over objects, as everything is one class). No AUC on LVIS.

COCO goes through pycocotools' ``COCOeval`` (``useCats = 0``), LVIS through ``LVISEval`` on a
class-agnostic copy of the annotations (one category; lvis 0.5.3's own ``use_cats = 0`` path
finds no ground truth).
"""

from __future__ import annotations

import contextlib
import io
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..config import PredictConfig
from ..errors import FastSAMError
from ..io.images import load_image
from ._coco import coco_api, find_images, images_of, load_annotations, lvis_api, lvis_numpy, read_results
from ._runner import RunOptions, run_parts
from .report import write_metrics

__all__ = ["AUC_DETS", "PROPOSAL_CONFIG", "auc", "coco_proposal_metrics", "evaluate_proposals", "lvis_proposal_metrics"]

PROPOSAL_CONFIG = PredictConfig(imgsz=1024, conf=0.001, iou=0.9, max_det=1000)
#: proposal counts of the AR curve (log-spaced from 1 to 1000; 10, 100 and 1000 among them)
AUC_DETS: tuple[int, ...] = tuple(sorted({round(float(v)) for v in np.logspace(0, 3, 31)} | {10, 100, 1000}))
_AREAS = ("small", "medium", "large")


def auc(dets: tuple[int, ...] | list[int], ar: np.ndarray | list[float]) -> float:
    """Trapezoid area under AR(n) over log n from dets[0] to dets[-1], divided by the log span."""
    x = np.log(np.asarray(dets, dtype=np.float64))
    y = np.asarray(ar, dtype=np.float64)
    return float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)) / (x[-1] - x[0]))


def _mean_valid(v: np.ndarray) -> float:
    v = v[v > -1]
    return float(v.mean()) if v.size else math.nan


def coco_proposal_metrics(
    dataset: dict[str, Any], dets: list[dict[str, Any]], image_ids: list[int], iou_type: str = "bbox"
) -> dict[str, float]:
    """Class-agnostic AR@n, area ARs and AUC with pycocotools (keys without the ``mask_`` prefix)."""
    from pycocotools.cocoeval import COCOeval

    gt = coco_api(dataset)
    dt = coco_api(
        {**{k: v for k, v in dataset.items() if k != "annotations"}, "annotations": _numbered(dets, iou_type)}
    )
    ev = COCOeval(gt, dt, iou_type)
    ev.params.imgIds, ev.params.useCats, ev.params.maxDets = sorted(image_ids), 0, list(AUC_DETS)
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
    recall, p = ev.eval["recall"], ev.params  # (T, K=1, A, M)
    area = {label: i for i, label in enumerate(p.areaRngLbl)}
    curve = [_mean_valid(recall[:, :, area["all"], m]) for m in range(len(AUC_DETS))]
    out = {f"AR@{n}": curve[AUC_DETS.index(n)] for n in (10, 100, 1000)}
    for a in _AREAS:
        out[f"AR_{a}@1000"] = _mean_valid(recall[:, :, area[a], len(AUC_DETS) - 1])
    out["AUC"] = auc(AUC_DETS, np.nan_to_num(curve))
    return out


def _numbered(dets: list[dict[str, Any]], iou_type: str) -> list[dict[str, Any]]:
    """Results as loadRes would make them: ids from 1, area of the box (bbox) or the mask (segm)."""
    from pycocotools import mask as mask_utils

    out = []
    for k, d in enumerate(dets):
        w, h = d["bbox"][2:]
        a = float(mask_utils.area(d["segmentation"])) if iou_type == "segm" else float(w * h)
        out.append({**d, "id": k + 1, "area": a, "iscrowd": 0, "category_id": d.get("category_id", 1)})
    return out


def _defined(v: float) -> float:
    """lvis marks an undefined figure (no ground truth in range) with -1: NaN here, null in JSON."""
    return math.nan if v == -1 else float(v)


def lvis_proposal_metrics(
    dataset: dict[str, Any], dets: list[dict[str, Any]], image_ids: list[int], iou_type: str = "bbox"
) -> dict[str, float]:
    """Class-agnostic AR@1000, area ARs (and for masks the frequency-group ARs) with the lvis package."""
    from ._deps import need

    lvis_mod = need("lvis")
    freq = {c["id"]: c.get("frequency", "f") for c in dataset["categories"]}
    group = {a["id"]: freq.get(a["category_id"], "f") for a in dataset["annotations"]}
    agnostic = {
        "images": [{**im, "neg_category_ids": [], "not_exhaustive_category_ids": []} for im in dataset["images"]],
        "annotations": [{**a, "category_id": 1} for a in dataset["annotations"]],
        "categories": [{"id": 1, "name": "object", "frequency": "f"}],
    }
    gt = lvis_api(agnostic)
    # a segm result without "bbox" gets its mask's area (lvis gives a box's area otherwise)
    drop = "bbox" if iou_type == "segm" else "segmentation"
    results = [{**{k: v for k, v in d.items() if k != drop}, "category_id": 1} for d in dets]
    if not results:
        raise FastSAMError("no proposals to evaluate")
    with lvis_numpy():
        res = lvis_mod.LVISResults(gt, results, max_dets=1000)
        ev = lvis_mod.LVISEval(gt, res, iou_type)
        ev.params.max_dets, ev.params.img_ids = 1000, sorted(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    out = {"AR@1000": _defined(ev.results["AR@1000"])}
    for a in _AREAS:
        out[f"AR_{a}@1000"] = _defined(ev.results[f"AR{a[0]}@1000"])
    if iou_type == "segm":  # pooled recall of each frequency group, from lvis' own matches (area "all")
        hit = {g: np.zeros(len(ev.params.iou_thrs)) for g in "rcf"}
        total = dict.fromkeys("rcf", 0)
        for e in ev.eval_imgs:
            if e is None or list(e["area_rng"]) != list(ev.params.area_rng[0]):
                continue
            for k, gid in enumerate(e["gt_ids"]):
                g = group[gid]
                total[g] += 1
                hit[g] += e["gt_matches"][:, k] > 0
        for g, name in zip("rcf", ("rare", "common", "frequent")):
            out[f"AR_{name}@1000"] = float(hit[g].mean() / total[g]) if total[g] else math.nan
    return out


def proposal_metrics(
    dataset: dict[str, Any], dets: list[dict[str, Any]], image_ids: list[int], lvis: bool
) -> dict[str, float]:
    """Box metrics (unprefixed) and, when every proposal has a mask, mask metrics (``mask_`` prefix)."""
    fn = lvis_proposal_metrics if lvis else coco_proposal_metrics
    out = fn(dataset, dets, image_ids, "bbox")
    if dets and all("segmentation" in d for d in dets):
        out.update({f"mask_{k}": v for k, v in fn(dataset, dets, image_ids, "segm").items()})
    return out


def evaluate_proposals(
    ann: Path,
    out: Path,
    *,
    data: Path | None = None,
    predictor: Any = None,
    pred: Path | None = None,
    lvis: bool = False,
    config: PredictConfig = PROPOSAL_CONFIG,
    run: RunOptions | None = None,
    options: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Proposals of ``predictor`` on the images of ``ann`` under ``data`` (or the results file ``pred``),
    scored as the module docstring says; writes OUT/metrics.json, returns the metrics (rank 0)."""
    if (predictor is None) == (pred is None):
        raise FastSAMError("give a model or --pred (one of them)")
    run = run or RunOptions()
    dataset = load_annotations(ann, lvis)
    images = images_of(dataset)[: run.limit]
    record: dict[str, Any] = {"task": "proposals", "ann": str(ann), "lvis": lvis, **(options or {})}
    start = time.perf_counter()
    if pred is not None:
        wanted = {im.id for im in images}
        dets = [d for d in read_results(pred, {im.id for im in images_of(dataset)}) if int(d["image_id"]) in wanted]
        record["pred"] = str(pred)
        done, skipped = sorted(wanted), {}
    else:
        if data is None:
            raise FastSAMError("--data (the image directory) is needed to run a model")
        files = find_images(data, images)
        record.update(data=str(data), imgsz=config.imgsz, conf=config.conf, iou=config.iou, max_det=config.max_det)

        def work(key: str) -> dict[str, Any]:
            path = files[int(key)]
            if path is None:
                return {"skipped": "image file not found"}
            try:
                seg = predictor.segment(load_image(path), config)
            except FastSAMError as exc:
                return {"skipped": str(exc)}
            b = seg.boxes.astype(np.float64)
            xywh = np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)
            return {"boxes": np.round(xywh, 2).tolist(), "scores": seg.scores.tolist(), "rles": seg.to_rle()}

        parts = run_parts(out, [str(im.id) for im in images], work, record, run, desc="proposals")
        if parts is None:
            return None
        skipped = {k: v["skipped"] for k, v in parts.items() if "skipped" in v}
        done = [int(k) for k, v in parts.items() if "skipped" not in v]
        dets = [
            {"image_id": int(k), "category_id": 1, "bbox": b, "score": s, "segmentation": r}
            for k, v in parts.items()
            if "skipped" not in v
            for b, s, r in zip(v["boxes"], v["scores"], v["rles"])
        ]
    if not done:
        raise FastSAMError(f"no image could be evaluated ({len(skipped)} skipped)")
    metrics: dict[str, Any] = proposal_metrics(dataset, dets, done, lvis)
    metrics.update(
        record, images=len(done), proposals=len(dets), skipped=len(skipped), skipped_ids=sorted(skipped)[:20]
    )
    metrics["seconds"] = round(time.perf_counter() - start, 3)
    write_metrics(out, metrics)
    return metrics
