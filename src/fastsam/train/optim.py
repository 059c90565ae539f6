"""Optimiser and weight averaging of the training loop (YOLOv8's recipe): three parameter groups, and
an exponential moving average of the weights whose decay ramps up from zero."""

from __future__ import annotations

import math
from copy import deepcopy

import torch
from torch import nn

__all__ = ["ModelEMA", "build_optimizer"]


class ModelEMA:
    """Exponential moving average of a model's floating-point state, decay ramping up as
    ``decay * (1 - exp(-updates / tau))`` so that early averages are not dominated by the random init."""

    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = 2000.0, updates: int = 0) -> None:
        self.ema = deepcopy(model).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.decay, self.tau, self.updates = decay, tau, updates

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.tau))
        state = model.state_dict()
        for key, value in self.ema.state_dict().items():
            if value.dtype.is_floating_point:
                value.mul_(d).add_(state[key].detach(), alpha=1 - d)
            else:
                value.copy_(state[key])


def build_optimizer(model: nn.Module, name: str, lr: float, momentum: float, weight_decay: float
                    ) -> torch.optim.Optimizer:  # fmt: skip
    """Three groups: 0 = conv/linear weights (decay), 1 = normalisation weights, 2 = biases (no decay).
    The order matters: warm-up treats group 2 (biases) differently."""
    decay, norm, bias = [], [], []
    for module in model.modules():
        for pname, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            if pname == "bias":
                bias.append(p)
            elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)):
                norm.append(p)
            else:
                decay.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": norm, "weight_decay": 0.0},
              {"params": bias, "weight_decay": 0.0}]  # fmt: skip
    if name == "SGD":
        opt: torch.optim.Optimizer = torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True)
    else:
        opt = torch.optim.AdamW(groups, lr=lr, betas=(momentum, 0.999))
    return opt
