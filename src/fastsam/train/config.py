"""The frozen configuration of a training run (``fastsam train``'s options), stored in ``last.pt``."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import FastSAMError

__all__ = ["DEFAULT_REG_MAX", "TrainConfig"]

#: FastSAM-x was trained with 26 DFL bins; the other scales keep YOLOv8's 16.
DEFAULT_REG_MAX = {"x": 26}


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run depends on; stored in ``last.pt`` so that ``--resume`` needs nothing else."""

    data: str
    model: str = "s"  # scale letter (fresh network) or a weight file (fine-tuning)
    out: str = "runs/train"
    val_data: str | None = None
    data_format: str = "auto"
    imgsz: int = 640
    epochs: int = 100
    batch: int = 16  # global batch (all processes together)
    nbs: int = 64  # nominal batch: gradients are accumulated up to this many images
    optimizer: str = "auto"  # "SGD", "AdamW" or "auto"
    lr0: float = 0.01
    lrf: float = 0.01
    momentum: float = 0.937
    weight_decay: float = 5e-4
    warmup_epochs: float = 3.0
    warmup_momentum: float = 0.8
    warmup_bias_lr: float = 0.1
    cos_lr: bool = False
    box: float = 7.5
    cls: float = 0.5
    dfl: float = 1.5
    close_mosaic: int = 10
    mosaic: float = 1.0
    scale: float = 0.5
    translate: float = 0.1
    degrees: float = 0.0
    fliplr: float = 0.5
    hsv_h: float = 0.015
    hsv_s: float = 0.7
    hsv_v: float = 0.4
    ema: bool = True
    amp: bool = True  # only on CUDA
    workers: int = 2
    seed: int = 0
    device: str = "cpu"
    reg_max: int | None = None  # fresh networks only; default 16 (26 for x)
    max_grad_norm: float = 10.0
    val_period: int = 1
    val_conf: float = 0.001
    val_iou: float = 0.7
    limit: int | None = None  # use only the first N training images (smoke tests, debugging)

    def __post_init__(self) -> None:
        if self.imgsz % 32 or self.imgsz < 32:
            raise FastSAMError(f"imgsz must be a positive multiple of 32, got {self.imgsz}")
        for name in ("epochs", "batch", "nbs"):
            if getattr(self, name) < 1:
                raise FastSAMError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.optimizer not in ("auto", "SGD", "AdamW"):
            raise FastSAMError(f"optimizer must be SGD, AdamW or auto, got {self.optimizer!r}")
