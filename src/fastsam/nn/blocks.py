"""Building blocks of the YOLOv8-seg network (pure torch, no I/O).

Attribute names are readable; ``fastsam.io.ultralytics`` maps them to and from ultralytics'
numbered state-dict keys (``cv1``, ``cv2``, ``m`` ...).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["SPPF", "Bottleneck", "Branch", "C2f", "ConvBnAct", "Proto"]

# Same BatchNorm hyper-parameters as YOLOv8 (matter for training and for exact eval numerics).
BN_EPS = 1e-3
BN_MOMENTUM = 0.03


class ConvBnAct(nn.Module):
    """Conv2d (no bias, 'same' padding) -> BatchNorm2d -> SiLU.

    After :func:`fastsam.nn.fuse.fuse_conv_bn` the BatchNorm is folded into ``conv`` (which then has
    a bias) and ``bn`` is an ``nn.Identity``.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int = 1, stride: int = 1, act: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False)
        self.bn: nn.Module = nn.BatchNorm2d(c_out, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act: nn.Module = nn.SiLU(inplace=True) if act else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    """Two 3x3 ConvBnAct with an optional residual connection (YOLOv8, expansion 1.0)."""

    def __init__(self, channels: int, shortcut: bool) -> None:
        super().__init__()
        self.conv1 = ConvBnAct(channels, channels, 3)
        self.conv2 = ConvBnAct(channels, channels, 3)
        self.shortcut = shortcut

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv2(self.conv1(x))
        return x + y if self.shortcut else y


class C2f(nn.Module):
    """CSP block with two convolutions: split, run ``n`` bottlenecks on one half, concat all, project."""

    def __init__(self, c_in: int, c_out: int, n: int, shortcut: bool) -> None:
        super().__init__()
        self.hidden = c_out // 2
        self.expand = ConvBnAct(c_in, 2 * self.hidden, 1)
        self.project = ConvBnAct((2 + n) * self.hidden, c_out, 1)
        self.blocks = nn.ModuleList(Bottleneck(self.hidden, shortcut) for _ in range(n))

    def forward(self, x: Tensor) -> Tensor:
        parts = list(self.expand(x).split(self.hidden, dim=1))
        for block in self.blocks:
            parts.append(block(parts[-1]))
        return self.project(torch.cat(parts, dim=1))


class SPPF(nn.Module):
    """Spatial pyramid pooling (fast): three chained 5x5 max-pools, concatenated."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 5) -> None:
        super().__init__()
        hidden = c_in // 2
        self.reduce = ConvBnAct(c_in, hidden, 1)
        self.project = ConvBnAct(hidden * 4, c_out, 1)
        self.pool = nn.MaxPool2d(kernel, stride=1, padding=kernel // 2)

    def forward(self, x: Tensor) -> Tensor:
        y0 = self.reduce(x)
        y1 = self.pool(y0)
        y2 = self.pool(y1)
        return self.project(torch.cat((y0, y1, y2, self.pool(y2)), dim=1))


class Proto(nn.Module):
    """Prototype branch: (B, c_in, H, W) -> (B, num_masks, 2H, 2W)."""

    def __init__(self, c_in: int, hidden: int, num_masks: int) -> None:
        super().__init__()
        self.conv1 = ConvBnAct(c_in, hidden, 3)
        self.upsample = nn.ConvTranspose2d(hidden, hidden, 2, 2, 0, bias=True)
        self.conv2 = ConvBnAct(hidden, hidden, 3)
        self.out = ConvBnAct(hidden, num_masks, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.conv2(self.upsample(self.conv1(x))))


class Branch(nn.Module):
    """One head branch at one pyramid level: two 3x3 ConvBnAct then a 1x1 prediction conv."""

    def __init__(self, c_in: int, hidden: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = ConvBnAct(c_in, hidden, 3)
        self.conv2 = ConvBnAct(hidden, hidden, 3)
        self.pred = nn.Conv2d(hidden, c_out, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.pred(self.conv2(self.conv1(x)))
