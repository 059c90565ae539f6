"""int8: NNCF post-training quantization of the OpenVINO graph, calibrated on the user's images.

What stays in fp32 was chosen by measurement (see the README's int8 section and
``bench/int8_scope.py``): the box decoding after the network (the DFL expectation is a convolution
over softmax probabilities: quantizing it moves every box edge) always; by default also the
prototype branch and the final 1x1 prediction convolutions of the head, whose outputs are the mask
logits' two factors (coefficients x prototypes: errors there change mask borders) and the box/score
logits. The choice is recorded in the file's metadata (``quantization.keep_fp32``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FastSAMError, ImageError
from ..extras import require
from ..io.images import iter_sources, load_image
from ..ops.letterbox import letterbox

__all__ = ["KEEP_FP32", "SCOPES", "load_calibration", "quantize_openvino"]

#: Layer-name patterns (regular expressions over the graph's node names) kept in fp32, by name.
SCOPES: dict[str, tuple[str, ...]] = {
    "none": (),
    "proto": (r"/network/head/proto/.*",),
    "preds": (r"/network/head/[a-z_]+\.\d+/pred/.*",),
    "proto+preds": (r"/network/head/proto/.*", r"/network/head/[a-z_]+\.\d+/pred/.*"),
    "head": (r"/network/head/.*",),
}
KEEP_FP32 = SCOPES["proto+preds"]


def load_calibration(sources: Any, limit: int = 64) -> list[np.ndarray]:
    """The first ``limit`` images of ``sources`` (a directory, files or arrays) as RGB arrays.

    Raises ``FastSAMError`` for no images, and ``ImageError`` naming a corrupt one."""
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise FastSAMError(f"calib_n must be an integer >= 1, got {limit!r}")
    if isinstance(sources, (str, Path)) and not Path(sources).exists():
        raise FastSAMError(f"{sources}: calibration images not found")
    images = []
    try:
        for _, item in iter_sources(sources):
            images.append(load_image(item))
            if len(images) >= limit:
                break
    except ImageError as exc:
        if "contains no images" in str(exc):
            raise FastSAMError(f"calibration: {exc}") from None
        raise
    if not images:
        raise FastSAMError("no calibration images given")
    return images


def _ignored_names(model: Any, patterns: Sequence[str]) -> list[str]:
    """Names of the quantizable ops to leave in fp32: those matching ``patterns``, and every
    convolution outside the network (the box decoding)."""
    compiled = [re.compile(p) for p in patterns]
    names = []
    for op in model.get_ops():
        if op.get_type_name() not in ("Convolution", "MatMul", "GroupConvolution", "ConvolutionBackpropData"):
            continue
        name = op.get_friendly_name()
        if not name.startswith("/network/") or any(c.fullmatch(name) for c in compiled):
            names.append(name)
    return names


def quantize_openvino(
    model: Any, images: list[np.ndarray], shape: tuple[int, int], dynamic: bool, keep_fp32: Sequence[str] | None = None
) -> tuple[Any, dict[str, Any]]:
    """Quantize ``model`` (weights and activations to int8, per-channel weights) on ``images``,
    each letterboxed as inference will see it: to the static ``shape``, or (dynamic) to the long
    side ``max(shape)`` with the usual minimal padding. Returns the model and what was done."""
    nncf = require("nncf")
    patterns = tuple(KEEP_FP32 if keep_fp32 is None else keep_fp32)
    imgsz = max(shape)

    def transform(rgb: np.ndarray) -> np.ndarray:
        x, _ = letterbox(rgb, imgsz, 32, shape=None if dynamic else shape)
        return np.ascontiguousarray(x.numpy())

    ignored = _ignored_names(model, patterns)
    quantized = nncf.quantize(
        model,
        nncf.Dataset(images, transform),
        subset_size=len(images),
        preset=nncf.QuantizationPreset.MIXED,
        ignored_scope=nncf.IgnoredScope(names=ignored, validate=False),
    )
    info = {
        "method": f"nncf {nncf.__version__} post-training quantization, preset mixed",
        "calibration_images": len(images),
        "keep_fp32": list(patterns),
        "fp32_layers": len(ignored),
    }
    return quantized, info
