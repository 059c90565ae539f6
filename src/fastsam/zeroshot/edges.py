"""Zero-shot edge detection on BSDS500 (paper Table 2): FastSAM's edge maps, scored by the BSDS protocol.

Edge map of an image (:func:`edge_map`): everything mode, the probability map of every mask
(sigmoid of its logits, :meth:`fastsam.FastSAM.probabilities`), Sobel magnitude, max over masks,
edge NMS (:mod:`fastsam.ops.edges`), quantised to 8 bits as a PNG stores it.

Dataset (:func:`bsds_images`): ``ROOT/images/<split>/<id>.jpg`` and ``ROOT/groundTruth/<split>/<id>.mat``,
each ``.mat`` holding ``groundTruth``, a 1 x K cell of structs with a ``Boundaries`` (H, W) map per
annotator. :func:`evaluate_edges` scores either the model's maps (also written to
``OUT/maps/<id>.png``) or someone else's 8-bit PNGs (``pred_dir/<id>.png``, values / 255) with the
protocol of :mod:`fastsam.zeroshot.bsds`, and writes ``OUT/metrics.json``: ``ods``, ``ois``,
``ap``, ``r50``, ``ods_threshold``, ``ods_recall``, ``ods_precision``, ``images``, ``skipped``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import PredictConfig
from ..errors import FastSAMError
from ..io.atomic import atomic_path
from ..io.images import ImageSource, load_image
from ..ops.edges import edge_nms, edge_orientation, max_sobel
from . import bsds
from ._deps import need
from ._runner import RunOptions, run_parts
from .report import write_metrics

__all__ = [
    "EDGE_CONFIG",
    "BsdsImage",
    "bsds_images",
    "edge_map",
    "evaluate_edges",
    "load_boundaries",
    "quantise",
    "save_png",
]

#: everything-mode options of the edge recipe: the original's defaults (conf 0.4, iou 0.9, 300 masks)
EDGE_CONFIG = PredictConfig(imgsz=1024, conf=0.4, iou=0.9, max_det=300)
_SUFFIXES = (".jpg", ".jpeg", ".png")


def edge_map(predictor: Any, image: ImageSource, config: PredictConfig = EDGE_CONFIG) -> np.ndarray:
    """(H, W) float32 edge strengths in [0, 1] of one image (see the module docstring), not quantised."""
    soft = predictor.probabilities(image, config)
    strength = max_sobel(soft.image_size, soft.regions, soft.probs)
    return edge_nms(strength, edge_orientation(strength))


def quantise(edges: np.ndarray) -> np.ndarray:
    """[0, 1] floats -> uint8 (round(255 e)), the values an 8-bit PNG holds."""
    return np.clip(np.rint(np.asarray(edges, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)


def save_png(path: Path, edges: np.ndarray) -> None:
    """Write an edge map (float [0, 1] or uint8) as an 8-bit grayscale PNG, atomically."""
    from PIL import Image

    data = edges if edges.dtype == np.uint8 else quantise(edges)
    with atomic_path(path) as tmp:
        Image.fromarray(data, mode="L").save(tmp, format="PNG")


@dataclass(frozen=True)
class BsdsImage:
    """One image of a BSDS split: its id (file stem), image file and ground-truth ``.mat``."""

    key: str
    image: Path
    truth: Path


def bsds_images(root: Path, split: str = "test") -> list[BsdsImage]:
    """The images of ``root``'s split, sorted by id; missing folders or ``.mat`` files raise ``FastSAMError``."""
    images, truth = root / "images" / split, root / "groundTruth" / split
    for d in (root, images, truth):
        if not d.is_dir():
            raise FastSAMError(f"{d}: no such directory (BSDS layout: images/<split>/, groundTruth/<split>/)")
    files = sorted(p for p in images.iterdir() if p.suffix.lower() in _SUFFIXES and not p.name.startswith("."))
    if not files:
        raise FastSAMError(f"{images}: no .jpg or .png images")
    out = []
    for p in files:
        mat = truth / f"{p.stem}.mat"
        if not mat.is_file():
            raise FastSAMError(f"{mat}: missing ground truth of {p.name}")
        out.append(BsdsImage(p.stem, p, mat))
    return out


def load_boundaries(mat: Path) -> list[np.ndarray]:
    """The annotators' (H, W) bool boundary maps of a BSDS ``.mat``; unreadable files raise ``FastSAMError``."""
    sio = need("scipy.io")
    try:
        cells = sio.loadmat(str(mat))["groundTruth"]
        maps = [np.asarray(c["Boundaries"][0, 0]) > 0 for c in np.asarray(cells).ravel()]
    except Exception as exc:  # scipy raises ValueError, TypeError, KeyError ... for bad files
        raise FastSAMError(f"{mat}: not a BSDS ground-truth file ({type(exc).__name__}: {exc})") from None
    if not maps or any(m.ndim != 2 for m in maps):
        raise FastSAMError(f"{mat}: groundTruth holds no (H, W) Boundaries map")
    return maps


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    if not path.is_file():
        raise FastSAMError(f"{path}: missing edge map (--pred-dir needs <id>.png for every image)")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("L"), dtype=np.float64) / 255.0
    except OSError as exc:
        raise FastSAMError(f"{path}: unreadable edge map ({exc})") from None


def evaluate_edges(
    data: Path,
    out: Path,
    *,
    predictor: Any = None,
    pred_dir: Path | None = None,
    split: str = "test",
    config: PredictConfig = EDGE_CONFIG,
    run: RunOptions | None = None,
    options: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Score one BSDS split; returns the metrics (rank 0; None on other ranks) and writes OUT/metrics.json.

    Exactly one of ``predictor`` (a :class:`~fastsam.FastSAM`) and ``pred_dir`` is given. ``options``
    are recorded in metrics.json and compared on ``resume`` (e.g. the model's path).
    """
    if (predictor is None) == (pred_dir is None):
        raise FastSAMError("give a model or --pred-dir (one of them)")
    if pred_dir is not None and not pred_dir.is_dir():
        raise FastSAMError(f"{pred_dir}: no such directory")
    run = run or RunOptions()
    need("scipy"), need("skimage")
    items = bsds_images(data, split)[: run.limit]
    by_key = {it.key: it for it in items}
    maps = out / "maps"
    if predictor is not None:
        maps.mkdir(parents=True, exist_ok=True)

    def work(key: str) -> dict[str, Any]:
        it = by_key[key]
        truth = load_boundaries(it.truth)
        if pred_dir is not None:
            pb = _read_png(pred_dir / f"{key}.png")
        else:
            try:
                rgb = load_image(it.image)
            except FastSAMError as exc:
                return {"skipped": str(exc)}
            edges = quantise(edge_map(predictor, rgb, config))
            save_png(maps / f"{key}.png", edges)
            pb = edges / 255.0
        if truth[0].shape != pb.shape:
            raise FastSAMError(f"{it.truth}: ground truth {truth[0].shape} but the edge map is {pb.shape}")
        return {"counts": bsds.image_counts(pb, truth).tolist()}

    record: dict[str, Any] = {"task": "edges", "data": str(data), "split": split, **(options or {})}
    if pred_dir is None:
        record.update(imgsz=config.imgsz, conf=config.conf, iou=config.iou, max_det=config.max_det)
    else:
        record["pred_dir"] = str(pred_dir)
    start = time.perf_counter()
    parts = run_parts(out, [it.key for it in items], work, record, run, desc="edges")
    if parts is None:
        return None
    done = {k: v for k, v in parts.items() if "counts" in v}
    skipped = {k: v["skipped"] for k, v in parts.items() if "counts" not in v}
    if not done:
        raise FastSAMError(f"no image could be scored ({len(skipped)} skipped)")
    metrics: dict[str, Any] = bsds.summarise([np.asarray(v["counts"]) for v in done.values()])
    metrics.update(record, images=len(done), skipped=len(skipped), skipped_files=sorted(skipped)[:20])
    metrics["seconds"] = round(time.perf_counter() - start, 3)
    write_metrics(out, metrics)
    return metrics
