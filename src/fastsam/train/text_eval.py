"""Scoring text prompts on synthetic scenes: how often "a <colour> <shape>" selects the right object.

Used to measure the shipped demo CLIP (:mod:`fastsam.train.clip_demo`) with ground-truth masks or a
detector's masks as the candidates.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import FastSAMError
from ..formats import rle_decode
from ..results import Segments
from ..text import TextScorer, select_by_text

__all__ = ["TextAccuracy", "gt_segments", "text_accuracy"]


def gt_segments(anns: Sequence[dict], image_size: tuple[int, int]) -> Segments:
    """Segments of the annotations' visible masks, in annotation order (scores all 1)."""
    if not anns:
        return Segments.empty(image_size)
    masks = np.stack([rle_decode(a["segmentation"]).astype(bool) for a in anns])
    return Segments.from_masks(masks, np.ones(len(anns), np.float32))


@dataclass
class TextAccuracy:
    """Result of :func:`text_accuracy`: ``correct`` of ``total`` prompts; ``misses`` lists
    (scene index, prompt, chosen caption or None) for the wrong ones."""

    correct: int
    total: int
    misses: list[tuple[int, str, str | None]]

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0


def _targets(anns: Sequence[dict], min_area: int) -> list[int]:
    """Indices of objects whose caption is unique in the scene and whose visible area is >= ``min_area``."""
    counts: dict[str, int] = {}
    for a in anns:
        counts[a["caption"]] = counts.get(a["caption"], 0) + 1
    return [k for k, a in enumerate(anns) if counts[a["caption"]] == 1 and a["area"] >= min_area]


def text_accuracy(
    scorer: TextScorer,
    scenes: Iterable[tuple[np.ndarray, list[dict]]],
    candidates: Any = "gt",
    *,
    min_area: int = 400,
    iou: float = 0.5,
    predict_config: Any = None,
) -> TextAccuracy:
    """How often the prompt "a <colour> <shape>" selects the right object (via :func:`select_by_text`).

    Targets: objects whose caption is unique in their scene and whose visible area is >= ``min_area``
    px. ``scenes`` yields ((H, W, 3) uint8 RGB, synth annotations). ``candidates="gt"``: the scene's
    ground-truth visible masks are the candidates, right = the target's own mask is chosen. Otherwise
    ``candidates`` is a predictor (``.segment(image, predict_config)``, e.g. :class:`fastsam.predictor.FastSAM`,
    or a callable image -> Segments) and right = the chosen mask has IoU >= ``iou`` with the target's mask.
    """
    correct, total = 0, 0
    misses: list[tuple[int, str, str | None]] = []
    for s, (img, anns) in enumerate(scenes):
        targets = _targets(anns, min_area)
        if not targets:
            continue
        size = (img.shape[0], img.shape[1])
        gt = gt_segments(anns, size)
        if isinstance(candidates, str):
            if candidates != "gt":
                raise FastSAMError(f"candidates must be 'gt' or a predictor, got {candidates!r}")
            seg = gt
        elif hasattr(candidates, "segment"):
            seg = candidates.segment(img, predict_config) if predict_config is not None else candidates.segment(img)
        else:
            seg = candidates(img)
        prompts = [anns[k]["caption"] for k in targets]
        chosen = select_by_text(seg, img, prompts, scorer)
        for k, prompt, pick in zip(targets, prompts, chosen):
            total += 1
            if pick.size == 0:
                misses.append((s, prompt, None))
                continue
            j = int(pick[0])
            if seg is gt:
                ok, got = j == k, anns[j]["caption"]
            else:
                a, b = seg.mask(j), gt.mask(k)
                ok, got = (a & b).sum() >= iou * (a | b).sum(), f"mask {j}"
            correct += int(ok)
            if not ok:
                misses.append((s, prompt, got))
    return TextAccuracy(correct, total, misses)
