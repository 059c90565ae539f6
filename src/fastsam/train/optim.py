"""Optimiser, schedule and weight averaging of the training loop (YOLOv8's recipe): three parameter
groups, linear or cosine learning-rate decay after a warm-up, and an exponential moving average of
the weights whose decay ramps up from zero."""

from __future__ import annotations

import math
from copy import deepcopy
from typing import Generic, TypeVar

import torch
from torch import nn

from .config import TrainConfig

__all__ = ["ModelEMA", "apply_schedule", "build_optimizer", "choose_optimizer", "lr_factor", "warmup_iters"]

_M = TypeVar("_M", bound=nn.Module)


class ModelEMA(Generic[_M]):
    """Exponential moving average of a model's floating-point state, decay ramping up as
    ``decay * (1 - exp(-updates / tau))`` so that early averages are not dominated by the random init."""

    def __init__(self, model: _M, decay: float = 0.9999, tau: float = 2000.0, updates: int = 0) -> None:
        self.ema: _M = deepcopy(model).eval()
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


def build_optimizer(
    model: nn.Module, name: str, lr: float, momentum: float, weight_decay: float
) -> torch.optim.Optimizer:
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
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": norm, "weight_decay": 0.0},
        {"params": bias, "weight_decay": 0.0},
    ]
    if name == "SGD":
        opt: torch.optim.Optimizer = torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True)
    else:
        opt = torch.optim.AdamW(groups, lr=lr, betas=(momentum, 0.999))
    return opt


def choose_optimizer(cfg: TrainConfig, n_images: int, num_classes: int) -> tuple[str, float, float]:
    """(optimizer name, lr0, momentum): the configured ones, or for ``auto`` YOLOv8's rule: long runs
    get SGD at 0.01, short ones AdamW at a class-count dependent rate."""
    if cfg.optimizer != "auto":
        return cfg.optimizer, cfg.lr0, cfg.momentum
    steps = math.ceil(n_images / max(cfg.batch, cfg.nbs)) * cfg.epochs
    if steps > 10_000:
        return "SGD", 0.01, 0.9
    return "AdamW", round(0.002 * 5 / (4 + num_classes), 6), 0.9


def lr_factor(cfg: TrainConfig, epoch: int) -> float:
    """Learning-rate multiplier of ``epoch``: linear (or cosine) from 1 down to ``lrf``."""
    if cfg.cos_lr:
        return ((1 - math.cos(epoch * math.pi / cfg.epochs)) / 2) * (cfg.lrf - 1) + 1
    return max(1 - epoch / cfg.epochs, 0) * (1.0 - cfg.lrf) + cfg.lrf


def warmup_iters(cfg: TrainConfig, batches_per_epoch: int) -> int:
    """Warm-up length in iterations (at least 100 when warm-up is on)."""
    return max(round(cfg.warmup_epochs * batches_per_epoch), 100) if cfg.warmup_epochs > 0 else 0


def apply_schedule(
    optimizer: torch.optim.Optimizer,
    cfg: TrainConfig,
    lr0: float,
    momentum: float,
    accumulate: int,
    batches_per_epoch: int,
    epoch: int,
    it: int,
) -> int:
    """Set lr/momentum of every parameter group for global iteration ``it``; returns the gradient
    accumulation count to use (ramped up during warm-up, as YOLOv8 does)."""
    base = lr0 * lr_factor(cfg, epoch)
    nw = warmup_iters(cfg, batches_per_epoch)
    if it >= nw:
        for g in optimizer.param_groups:
            g["lr"] = base
        return accumulate

    def interp(a: float, b: float) -> float:
        return a + (b - a) * it / nw

    for j, g in enumerate(optimizer.param_groups):
        g["lr"] = interp(cfg.warmup_bias_lr if j == 2 else 0.0, base)
        if "momentum" in g:
            g["momentum"] = interp(cfg.warmup_momentum, momentum)
        if "betas" in g:
            g["betas"] = (interp(cfg.warmup_momentum, momentum), g["betas"][1])
    return max(1, round(interp(1, cfg.nbs / cfg.batch)))
