"""The PyTorch backend: our ``FastSAMNet`` (BatchNorm fused, channels-last on the fast path)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..config import recorded_imgsz
from ..io.checkpoint import load_model
from ..nn.fuse import fuse_conv_bn
from ..nn.model import FastSAMNet
from ..ops.decode import decode_predictions

__all__ = ["TorchBackend"]


class TorchBackend:
    """Forward pass in PyTorch on ``device``.

    Args:
        weights: a weight file or a built network (a network passed in is not fused in place).
        fuse: fold BatchNorm into convolutions (same outputs up to float rounding, faster).
        channels_last: NHWC convolutions (faster on x86 CPUs); defaults to ``fuse``.
    """

    name = "torch"
    shape: tuple[int, int] | None = None

    def __init__(
        self,
        weights: str | Path | FastSAMNet,
        device: torch.device,
        fuse: bool = True,
        channels_last: bool | None = None,
    ) -> None:
        owned = not isinstance(weights, FastSAMNet)
        model = weights if isinstance(weights, FastSAMNet) else load_model(weights, device="cpu")
        self.config = model.config
        self.provenance: dict[str, Any] = dict(getattr(model, "provenance", None) or {})
        self.default_imgsz = recorded_imgsz(self.provenance)
        self.strides: tuple[int, ...] = model.strides
        self.device = device
        self.network: torch.nn.Module = (fuse_conv_bn(model, inplace=owned) if fuse else model).to(device).eval()
        self.memory_format = torch.channels_last if (fuse if channels_last is None else channels_last) else None
        if self.memory_format is not None:
            self.network = self.network.to(memory_format=self.memory_format)

    def to(self, device: torch.device) -> None:
        self.device = device
        self.network.to(device)

    @torch.inference_mode()
    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        images = images.to(self.device, torch.float32)
        # convolutions follow the input's layout: make it the one this backend runs in
        images = images.contiguous(memory_format=self.memory_format or torch.contiguous_format)
        out = self.network(images)
        return decode_predictions(out, self.strides, self.config.reg_max), out.protos
