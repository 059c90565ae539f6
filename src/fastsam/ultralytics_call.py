"""ultralytics' call convention on a fastsam model: ``model(source, bboxes=, points=, labels=, texts=)``
-> a list with one ultralytics-shaped [Results][fastsam.results_ultralytics.Results] per image.

The everything-mode masks are fastsam's (the original FastSAM pipeline, one cached forward per
image); the prompt rule is ultralytics' (`fastsam.prompts.select_ultralytics`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import PredictConfig
from .errors import FastSAMError
from .io.images import iter_sources, load_image
from .prompts import select_ultralytics
from .results_ultralytics import Results

if TYPE_CHECKING:
    from .predictor import FastSAM

__all__ = ["predict_ultralytics"]


def _texts(texts: str | Sequence[str] | None) -> list[str] | None:
    if texts is None:
        return None
    items = [texts] if isinstance(texts, str) else list(texts)
    if not items or not all(isinstance(t, str) and t.strip() for t in items):
        raise FastSAMError(f"texts must be a non-empty string or a list of them, got {texts!r}")
    return items


def _scorer(model: FastSAM, clip_weights: str | Path | None) -> Any:
    from .text import scorer_or_demo

    return scorer_or_demo(clip_weights, None, model.device, "texts= needs local CLIP weights: pass clip_weights=PATH")


def predict_ultralytics(
    model: FastSAM,
    source: Any,
    cfg: PredictConfig,
    *,
    bboxes: Any = None,
    points: Any = None,
    labels: Any = None,
    texts: str | Sequence[str] | None = None,
    clip_weights: str | Path | None = None,
    bgr_arrays: bool = False,
) -> list[Results]:
    """Segment every image of ``source`` and apply the prompts to each (all images share them).

    ``bgr_arrays``: numpy images are BGR, as ultralytics reads them (fastsam's own API takes RGB).
    With no prompt, each Results holds every mask.
    """
    if labels is not None and points is None:
        raise FastSAMError("labels= needs points= (one label per point)")
    items = _texts(texts)
    scorer = _scorer(model, clip_weights) if items is not None else None
    out = []
    for name, item in iter_sources(source):
        t0 = time.perf_counter()
        if bgr_arrays and isinstance(item, np.ndarray) and item.ndim == 3 and item.shape[2] >= 3:
            item = np.ascontiguousarray(item[..., 2::-1])  # BGR(A) -> RGB
        rgb = load_image(item)
        t1 = time.perf_counter()
        seg = model.segment(rgb, cfg)
        t2 = time.perf_counter()
        if bboxes is not None or points is not None or items is not None:
            idx = select_ultralytics(
                seg, bboxes=bboxes, points=points, labels=labels, texts=items, image=rgb, scorer=scorer
            )
            seg = seg[idx]
        t3 = time.perf_counter()
        speed: dict[str, float | None] = {
            "preprocess": (t1 - t0) * 1e3,
            "inference": (t2 - t1) * 1e3,
            "postprocess": (t3 - t2) * 1e3,
        }
        path = name if isinstance(item, (str, Path)) else ""
        out.append(Results.from_rgb(seg, rgb, path=path, device=model.device, speed=speed))
    if not out:
        raise FastSAMError("no image given")
    return out
