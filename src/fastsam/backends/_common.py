"""Shared checks of the exported-graph backends."""

from __future__ import annotations

import numpy as np
from torch import Tensor

from ..errors import FastSAMError

__all__ = ["check_input", "describe"]


def describe(exc: BaseException) -> str:
    """The first line of a runtime's exception text, shortened: enough to say what went wrong."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def check_input(images: Tensor, shape: tuple[int, int] | None, batch: int | None, source: str) -> np.ndarray:
    """(B, 3, H, W) float tensor -> contiguous float32 NCHW array, after checking it fits the graph."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise FastSAMError(f"{source}: expected a (B, 3, H, W) input, got {tuple(images.shape)}")
    h, w = int(images.shape[2]), int(images.shape[3])
    if shape is not None and (h, w) != tuple(shape):
        raise FastSAMError(
            f"{source}: is a static export for {shape[0]}x{shape[1]} inputs, got {h}x{w} "
            "(re-export with --dynamic, or with this --imgsz)"
        )
    if h % 32 or w % 32:
        raise FastSAMError(f"{source}: input height and width must be multiples of 32, got {h}x{w}")
    if batch is not None and images.shape[0] != batch:
        raise FastSAMError(f"{source}: is a static export for batch {batch}, got batch {images.shape[0]}")
    return np.ascontiguousarray(images.detach().cpu().float().numpy())
