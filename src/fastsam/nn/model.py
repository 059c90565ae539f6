"""The FastSAM network: YOLOv8-seg backbone, PAN neck and segmentation head.

``FastSAMNet.forward`` always returns a :class:`HeadOutput` of raw maps (same contract in training
and inference); decoding boxes and scores is :func:`fastsam.ops.decode.decode_predictions`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import NamedTuple

import torch
from torch import Tensor, nn

from ..config import ModelConfig
from .blocks import BN_EPS, SPPF, Branch, C2f, ConvBnAct, Proto

__all__ = [
    "STRIDES",
    "Backbone",
    "FastSAMNet",
    "HeadOutput",
    "Neck",
    "SegmentHead",
    "batchnorm_eps",
    "build_model",
    "set_batchnorm_eps",
]

STRIDES = (8, 16, 32)


class HeadOutput(NamedTuple):
    """Raw network outputs.

    Attributes:
        box_logits: per level (B, 4*reg_max, H_l, W_l): DFL logits of the ltrb distances.
        cls_logits: per level (B, num_classes, H_l, W_l): class logits (before sigmoid).
        coefficients: (B, num_masks, A) mask coefficients, A = sum of H_l*W_l over the levels.
        protos: (B, num_masks, H/4, W/4) mask prototypes.
    """

    box_logits: list[Tensor]
    cls_logits: list[Tensor]
    coefficients: Tensor
    protos: Tensor


class Backbone(nn.Module):
    """CSP-Darknet backbone: image (B, 3, H, W) -> features at strides 8, 16, 32."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        ch, rep = cfg.channels, cfg.repeats
        self.stem = ConvBnAct(3, ch(64), 3, 2)
        self.down1 = ConvBnAct(ch(64), ch(128), 3, 2)
        self.c2f1 = C2f(ch(128), ch(128), rep(3), shortcut=True)
        self.down2 = ConvBnAct(ch(128), ch(256), 3, 2)
        self.c2f2 = C2f(ch(256), ch(256), rep(6), shortcut=True)
        self.down3 = ConvBnAct(ch(256), ch(512), 3, 2)
        self.c2f3 = C2f(ch(512), ch(512), rep(6), shortcut=True)
        self.down4 = ConvBnAct(ch(512), ch(1024), 3, 2)
        self.c2f4 = C2f(ch(1024), ch(1024), rep(3), shortcut=True)
        self.sppf = SPPF(ch(1024), ch(1024), 5)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = self.c2f1(self.down1(self.stem(x)))
        c3 = self.c2f2(self.down2(x))
        c4 = self.c2f3(self.down3(c3))
        c5 = self.sppf(self.c2f4(self.down4(c4)))
        return c3, c4, c5


class Neck(nn.Module):
    """PAN-FPN: top-down then bottom-up fusion of (c3, c4, c5) -> (p3, p4, p5), same strides."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        ch, n = cfg.channels, cfg.repeats(3)
        self.up = nn.Upsample(scale_factor=2.0, mode="nearest")
        self.topdown_p4 = C2f(ch(1024) + ch(512), ch(512), n, shortcut=False)
        self.topdown_p3 = C2f(ch(512) + ch(256), ch(256), n, shortcut=False)
        self.down_p3 = ConvBnAct(ch(256), ch(256), 3, 2)
        self.bottomup_p4 = C2f(ch(256) + ch(512), ch(512), n, shortcut=False)
        self.down_p4 = ConvBnAct(ch(512), ch(512), 3, 2)
        self.bottomup_p5 = C2f(ch(512) + ch(1024), ch(1024), n, shortcut=False)

    @property
    def out_channels(self) -> tuple[int, int, int]:
        return (
            self.topdown_p3.project.conv.out_channels,
            self.bottomup_p4.project.conv.out_channels,
            self.bottomup_p5.project.conv.out_channels,
        )

    def forward(self, feats: tuple[Tensor, Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        c3, c4, c5 = feats
        t4 = self.topdown_p4(torch.cat((self.up(c5), c4), dim=1))
        p3 = self.topdown_p3(torch.cat((self.up(t4), c3), dim=1))
        p4 = self.bottomup_p4(torch.cat((self.down_p3(p3), t4), dim=1))
        p5 = self.bottomup_p5(torch.cat((self.down_p4(p4), c5), dim=1))
        return p3, p4, p5


class SegmentHead(nn.Module):
    """Decoupled anchor-free head: box (DFL), class and mask-coefficient branches + prototypes."""

    def __init__(self, cfg: ModelConfig, in_channels: tuple[int, int, int]) -> None:
        super().__init__()
        c0 = in_channels[0]
        box_hidden = max(16, c0 // 4, 4 * cfg.reg_max)
        cls_hidden = max(c0, min(cfg.num_classes, 100))
        coef_hidden = max(c0 // 4, cfg.num_masks)
        self.reg_max = cfg.reg_max
        self.num_classes = cfg.num_classes
        self.num_masks = cfg.num_masks
        self.box_branch = nn.ModuleList(Branch(c, box_hidden, 4 * cfg.reg_max) for c in in_channels)
        self.cls_branch = nn.ModuleList(Branch(c, cls_hidden, cfg.num_classes) for c in in_channels)
        self.coef_branch = nn.ModuleList(Branch(c, coef_hidden, cfg.num_masks) for c in in_channels)
        self.proto = Proto(c0, cfg.proto_hidden, cfg.num_masks)

    def forward(self, feats: tuple[Tensor, Tensor, Tensor]) -> HeadOutput:
        batch = feats[0].shape[0]
        coefficients = torch.cat(
            [branch(f).view(batch, self.num_masks, -1) for branch, f in zip(self.coef_branch, feats)], dim=2
        )
        return HeadOutput(
            box_logits=[branch(f) for branch, f in zip(self.box_branch, feats)],
            cls_logits=[branch(f) for branch, f in zip(self.cls_branch, feats)],
            coefficients=coefficients,
            protos=self.proto(feats[0]),
        )


class FastSAMNet(nn.Module):
    """YOLOv8-seg network. Input (B, 3, H, W) RGB in [0, 1], H and W multiples of 32."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.backbone = Backbone(cfg)
        self.neck = Neck(cfg)
        self.head = SegmentHead(cfg, self.neck.out_channels)
        self.strides = STRIDES

    def forward(self, images: Tensor) -> HeadOutput:
        return self.head(self.neck(self.backbone(images)))


def build_model(cfg: ModelConfig | str = "s", **overrides: int) -> FastSAMNet:
    """Build a randomly initialised network from a config or a scale name ("n", "s", "m", "l", "x")."""
    if isinstance(cfg, str):
        cfg = ModelConfig(scale=cfg, **overrides)
    elif overrides:
        raise TypeError("pass overrides only together with a scale name")
    model = FastSAMNet(cfg)
    _init_weights(model)
    return model


def _init_weights(model: nn.Module) -> None:
    # YOLOv8 trains with these BN settings and no special conv init; keep torch defaults otherwise.
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps, m.momentum = 1e-3, 0.03


def batchnorm_eps(model: nn.Module) -> dict[str, float]:
    """The eps of every BatchNorm2d of ``model`` that differs from YOLOv8's ``BN_EPS``, by module name
    (``"backbone.stem.bn"``). Empty for a network with YOLOv8's eps throughout, or a fused one (its
    BatchNorms are folded away, their eps with them)."""
    return {
        name: float(m.eps) for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d) and m.eps != BN_EPS
    }


def set_batchnorm_eps(model: nn.Module, eps: Mapping[str, float]) -> None:
    """Give the named BatchNorm2d layers of ``model`` their own eps (others keep theirs).

    eps is a per-layer constant, not a tensor, so state dicts do not carry it: a checkpoint trained
    with another eps needs it set here to give its outputs. Raises ``KeyError`` for a name that is
    not a BatchNorm2d of ``model`` and ``ValueError`` for an eps that is not a finite positive number.
    """
    modules = dict(model.named_modules())
    for name, value in eps.items():
        module = modules.get(name)
        if not isinstance(module, nn.BatchNorm2d):
            raise KeyError(f"{name} is not a BatchNorm2d of the network")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
            raise ValueError(f"BatchNorm {name}: eps must be a finite positive number, got {value!r}")
        module.eps = float(value)
