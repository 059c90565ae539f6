"""Frozen configuration objects: network architecture and everything-mode inference options.

The YOLOv8 scales are a small table in Python (no YAML is interpreted). Channel widths follow the
YOLOv8 rule: ``make_divisible(min(channels, max_channels) * width, 8)``; block repeats follow
``max(round(repeats * depth), 1)``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any

from .errors import FastSAMError

__all__ = ["MAX_IMGSZ", "SCALES", "ModelConfig", "PredictConfig", "Scale", "recorded_imgsz"]

#: Largest network input side the API accepts: a 16384x16384 input alone is 3 GiB of float32 and
#: the first layers' activations are tens of times that. The CLI's default limit is lower.
MAX_IMGSZ = 16384


@dataclass(frozen=True)
class Scale:
    """Depth/width multipliers of one YOLOv8 scale."""

    depth: float
    width: float
    max_channels: int


SCALES: dict[str, Scale] = {
    "n": Scale(0.33, 0.25, 1024),
    "s": Scale(0.33, 0.50, 1024),
    "m": Scale(0.67, 0.75, 768),
    "l": Scale(1.00, 1.00, 512),
    "x": Scale(1.00, 1.25, 512),
}


def _make_divisible(value: float, divisor: int = 8) -> int:
    return int(math.ceil(value / divisor) * divisor)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a YOLOv8-seg network as used by FastSAM.

    Attributes:
        scale: one of ``SCALES`` ("n", "s", "m", "l", "x").
        num_classes: detection classes; FastSAM uses a single class ("object").
        num_masks: mask coefficients per detection (= prototype channels).
        reg_max: DFL bins per box side (FastSAM-x: 26, FastSAM-s: 16).
        proto_channels: hidden width of the prototype branch before width scaling (256 in YOLOv8).
    """

    scale: str = "s"
    num_classes: int = 1
    num_masks: int = 32
    reg_max: int = 16
    proto_channels: int = 256

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise FastSAMError(f"unknown scale {self.scale!r}; expected one of {sorted(SCALES)}")
        for name in ("num_classes", "num_masks", "reg_max", "proto_channels"):
            if getattr(self, name) < 1:
                raise FastSAMError(f"{name} must be >= 1, got {getattr(self, name)}")

    def channels(self, base: int) -> int:
        """Scaled channel count for a base (``l``-scale) width."""
        s = SCALES[self.scale]
        return _make_divisible(min(base, s.max_channels) * s.width, 8)

    def repeats(self, base: int) -> int:
        """Scaled number of bottlenecks for a base repeat count."""
        return max(round(base * SCALES[self.scale].depth), 1)

    @property
    def proto_hidden(self) -> int:
        return self.channels(self.proto_channels)

    def to_dict(self) -> dict[str, int | str]:
        return {
            "scale": self.scale,
            "num_classes": self.num_classes,
            "num_masks": self.num_masks,
            "reg_max": self.reg_max,
            "proto_channels": self.proto_channels,
        }


@dataclass(frozen=True)
class PredictConfig:
    """Everything-mode options. Defaults are those of the original README (``Inference.py``).

    Attributes:
        imgsz: long side of the network input; rounded up to a multiple of 32.
        conf: keep detections whose score is strictly greater than this.
        iou: NMS IoU threshold.
        retina_masks: masks at original resolution (True) or upsampled in the letterboxed frame and
            then resized to the original (False).
        max_det: keep at most this many detections after NMS.
    """

    imgsz: int = 1024
    conf: float = 0.4
    iou: float = 0.9
    retina_masks: bool = True
    max_det: int = 300
    stride: int = field(default=32, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.imgsz, int) or isinstance(self.imgsz, bool) or not 32 <= self.imgsz <= MAX_IMGSZ:
            raise FastSAMError(f"imgsz must be an integer in [32, {MAX_IMGSZ}], got {self.imgsz!r}")
        for name in ("conf", "iou"):
            if not isinstance(getattr(self, name), numbers.Real) or isinstance(getattr(self, name), bool):
                raise FastSAMError(f"{name} must be a number in [0, 1], got {getattr(self, name)!r}")
        if not 0.0 <= self.conf <= 1.0:
            raise FastSAMError(f"conf must be in [0, 1], got {self.conf}")
        if not 0.0 <= self.iou <= 1.0:
            raise FastSAMError(f"iou must be in [0, 1], got {self.iou}")
        if not isinstance(self.max_det, int) or isinstance(self.max_det, bool) or self.max_det < 1:
            raise FastSAMError(f"max_det must be an integer >= 1, got {self.max_det!r}")

    @property
    def input_size(self) -> int:
        """``imgsz`` rounded up to the network stride (as the original does)."""
        return int(math.ceil(self.imgsz / self.stride) * self.stride)


def recorded_imgsz(provenance: dict[str, Any]) -> int:
    """The input size a fastsam weight file recommends (``predict_imgsz``, else the ``imgsz`` it was
    trained at), else the original's 1024."""
    try:
        value = int(provenance.get("predict_imgsz", provenance.get("imgsz")))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return PredictConfig().imgsz
    return value if value >= 32 else PredictConfig().imgsz
