"""Fold BatchNorm into the preceding convolution for inference.

Each BatchNorm is folded with its own eps (checkpoints may carry other values than YOLOv8's 1e-3,
per layer; see :func:`fastsam.nn.model.set_batchnorm_eps`).
"""

from __future__ import annotations

import copy
from typing import TypeVar, cast

import torch
from torch import nn

from .blocks import ConvBnAct

__all__ = ["fuse_conv_bn"]

_M = TypeVar("_M", bound=nn.Module)


def _fused_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    # y = gamma * (W x + b - mean) / sqrt(var + eps) + beta  =  W' x + b', with this layer's eps
    # a Conv2d's size attributes are 2-tuples (torch types them as tuple[int, ...])
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        cast(tuple[int, int], conv.kernel_size),
        cast(tuple[int, int], conv.stride),
        cast("str | tuple[int, int]", conv.padding),
        cast(tuple[int, int], conv.dilation),
        conv.groups,
        bias=True,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )
    # ConvBnAct's BatchNorm always tracks running statistics, and the fused conv has a bias
    assert bn.running_var is not None and bn.running_mean is not None and fused.bias is not None
    std = torch.sqrt(bn.running_var + bn.eps)
    scale = bn.weight / std
    with torch.no_grad():
        fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
        # beta - gamma * mean / std: the reference implementation's order of operations, so fused
        # outputs agree to the last bit where they can.
        bias = bn.bias - bn.weight * bn.running_mean / std
        fused.bias.copy_(bias if conv.bias is None else conv.bias * scale + bias)
    return fused.requires_grad_(False)


def fuse_conv_bn(model: _M, inplace: bool = False) -> _M:
    """Return ``model`` (in eval mode) with BatchNorm folded into the ConvBnAct convolutions.

    The result gives the same outputs up to float rounding; it cannot be trained further and its
    state dict no longer matches checkpoints. By default a copy is fused, so the original stays
    usable for saving; ``inplace=True`` saves the memory of a second copy.
    """
    fused = (model if inplace else copy.deepcopy(model)).eval()
    for module in fused.modules():
        if isinstance(module, ConvBnAct) and isinstance(module.bn, nn.BatchNorm2d):
            module.conv = _fused_conv(module.conv, module.bn)
            module.bn = nn.Identity()
    return fused
