"""Batched everything mode: several letterboxed images per forward pass, decoded one by one.

A batch holds images of one letterboxed input shape (the letterbox keeps each image's own minimum
rectangle, so images of different sizes or aspect ratios go to different batches). Each image keeps
its exact geometry, and post-processing runs per image, so a batch gives the records batch 1 gives;
the network's float rounding may differ in the last bits between batch sizes (masks then agree to
IoU >= 0.99, boxes to far below a pixel). Letterboxing of the next images runs in a thread while
the network works on the current batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from .config import PredictConfig
from .errors import FastSAMError
from .ops.letterbox import Letterbox, letterbox
from .results import Segments

if TYPE_CHECKING:
    from .predictor import FastSAM

__all__ = ["effective_batch", "iter_batched", "segment_batch"]


def effective_batch(model: FastSAM, batch: int) -> int:
    """``batch``, checked; a static export (fixed batch 1) runs one image per pass whatever is asked."""
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise FastSAMError(f"batch must be a whole number >= 1, got {batch!r}")
    fixed = getattr(getattr(model.backend, "metadata", None), "batch", None)
    return int(fixed) if isinstance(fixed, int) and fixed >= 1 else batch


def _run(model: FastSAM, group: list[tuple[int, Tensor, Letterbox]], cfg: PredictConfig) -> list[tuple[int, Segments]]:
    """One forward pass over letterboxed (1, 3, H, W) inputs of one shape; Segments per image."""
    preds, protos = model.forward(torch.cat([x for _, x, _ in group]))
    if model.post != "device":
        preds, protos = preds.cpu(), protos.cpu()
    return [(i, model.postprocess(preds[k], protos[k], geom, cfg)) for k, (i, _, geom) in enumerate(group)]


def iter_batched(
    model: FastSAM, images: Iterable[np.ndarray], cfg: PredictConfig, batch: int
) -> Iterator[tuple[int, Segments]]:
    """(position, Segments) for each (H, W, 3) uint8 RGB image of ``images``, ``batch`` images of
    one letterboxed shape per forward pass. Results come as soon as their batch ran: positions are
    not in order when shapes are mixed; every image is yielded once, the last partial batches at the end."""
    n = effective_batch(model, batch)
    model.check_input_size(cfg)
    shape = model.backend.shape
    groups: dict[tuple[int, ...], list[tuple[int, Tensor, Letterbox]]] = {}
    with ThreadPoolExecutor(1, thread_name_prefix="fastsam-letterbox") as pool:
        pending: Future[tuple[Tensor, Letterbox]] | None = None
        position = -1
        for i, rgb in enumerate(images):
            nxt = pool.submit(letterbox, rgb, cfg.input_size, cfg.stride, shape=shape)
            if pending is not None:
                yield from _add(model, groups, position, pending.result(), n, cfg)
            pending, position = nxt, i
        if pending is not None:
            yield from _add(model, groups, position, pending.result(), n, cfg)
    for group in groups.values():
        if group:
            yield from _run(model, group, cfg)


def _add(
    model: FastSAM,
    groups: dict[tuple[int, ...], list[tuple[int, Tensor, Letterbox]]],
    position: int,
    item: tuple[Tensor, Letterbox],
    n: int,
    cfg: PredictConfig,
) -> Iterator[tuple[int, Segments]]:
    x, geom = item
    group = groups.setdefault(tuple(x.shape), [])
    group.append((position, x, geom))
    if len(group) == n:
        groups[tuple(x.shape)] = []
        yield from _run(model, group, cfg)


def segment_batch(model: FastSAM, images: Sequence[np.ndarray], cfg: PredictConfig, batch: int) -> list[Segments]:
    """Segments of every RGB image, in input order, ``batch`` images per forward pass."""
    out: list[Segments | None] = [None] * len(images)
    for i, seg in iter_batched(model, images, cfg, batch):
        out[i] = seg
    return [s for s in out if s is not None]
