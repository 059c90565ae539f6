"""The PyTorch backend: our ``FastSAMNet`` (BatchNorm fused, channels-last on the fast path)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..config import recorded_imgsz
from ..errors import FastSAMError
from ..io.checkpoint import load_model
from ..nn.fuse import fuse_conv_bn
from ..nn.model import FastSAMNet, HeadOutput
from ..ops.decode import decode_predictions

__all__ = ["TorchBackend"]


class TorchBackend:
    """Forward pass in PyTorch on ``device``.

    Args:
        weights: a weight file or a built network (a network passed in is not fused in place).
        fuse: fold BatchNorm into convolutions (same outputs up to float rounding, faster).
        channels_last: NHWC convolutions (faster on x86 CPUs); defaults to ``fuse``.
        half: fp16 network (CUDA devices only; the caller checks). Its raw head outputs are cast to
            float32 before box decoding: fp16 box coordinates past 1024 px would be 1 px apart.
        compile: ``torch.compile`` the network for static shapes (``dynamic=False``): each new input
            shape compiles on its first call (seconds to a minute: a warm-up paid once per shape,
            so for a video or a batch of one size, not for a folder of mixed sizes), later calls
            run the compiled kernels. Outputs equal the eager network's up to float rounding.
    """

    name = "torch"
    shape: tuple[int, int] | None = None

    def __init__(
        self,
        weights: str | Path | FastSAMNet,
        device: torch.device,
        fuse: bool = True,
        channels_last: bool | None = None,
        half: bool = False,
        compile: bool = False,
    ) -> None:
        owned = not isinstance(weights, FastSAMNet)
        model = weights if isinstance(weights, FastSAMNet) else load_model(weights, device="cpu")
        self.config = model.config
        self.provenance: dict[str, Any] = dict(getattr(model, "provenance", None) or {})
        self.default_imgsz = recorded_imgsz(self.provenance)
        self.strides: tuple[int, ...] = model.strides
        self.device = device
        self.dtype = torch.float16 if half else torch.float32
        if half:
            self.provenance["inference_precision"] = "f16"
        net = fuse_conv_bn(model, inplace=owned) if fuse else model
        # a network passed in is not converted in place
        self.network: torch.nn.Module = (
            (copy.deepcopy(net) if half and not owned and not fuse else net).to(device, self.dtype).eval()
        )
        self.memory_format = torch.channels_last if (fuse if channels_last is None else channels_last) else None
        if self.memory_format is not None:
            self.network = self.network.to(memory_format=self.memory_format)
        if compile:
            self.provenance["compiled"] = True
            self.network = torch.compile(self.network, dynamic=False)  # type: ignore[assignment]

    def to(self, device: torch.device) -> None:
        if self.dtype == torch.float16 and device.type != "cuda":
            raise FastSAMError(f"this model runs fp16 (half=True), on CUDA only; device {device} needs half=False")
        self.device = device
        self.network.to(device)

    @torch.inference_mode()
    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        images = images.to(self.device, self.dtype)
        # convolutions follow the input's layout: make it the one this backend runs in
        images = images.contiguous(memory_format=self.memory_format or torch.contiguous_format)
        out = self.network(images)
        if self.dtype != torch.float32:  # post-processing (box decoding on) in float32
            out = HeadOutput(
                [t.float() for t in out.box_logits],
                [t.float() for t in out.cls_logits],
                out.coefficients.float(),
                out.protos.float(),
            )
        return decode_predictions(out, self.strides, self.config.reg_max), out.protos
