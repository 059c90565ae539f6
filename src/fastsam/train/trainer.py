"""Training and fine-tuning loop: one process, or many through ``torchrun`` (DistributedDataParallel).

Recipe (YOLOv8 defaults, which FastSAM trained with): SGD or AdamW ("auto" picks as YOLOv8 does),
three parameter groups (conv weights with decay; BatchNorm weights and all biases without), linear
warm-up of learning rate, momentum and gradient accumulation, linear or cosine decay to ``lr0 * lrf``,
nominal batch 64 through accumulation, gradient-norm clipping at 10, an exponential moving average of
the weights (the EMA is what gets evaluated and exported), AMP on CUDA, mosaic switched off for the last
``close_mosaic`` epochs.

Determinism and exact resume: every random choice comes from ``seed`` (model init, the epoch's
shuffle, each sample's augmentation from ``(seed, epoch, index)``), optimiser steps never straddle an
epoch boundary, and ``last.pt`` holds the model, EMA, optimiser, scaler, counters and the loss history,
so a resumed run continues with exactly the losses the uninterrupted run would have had (on CPU).

Distributed: ``--batch`` is the global batch; each of the ``WORLD_SIZE`` processes gets
``batch / WORLD_SIZE`` images of the same global shuffle. Each process multiplies its loss by the world
size so that DDP's gradient average equals the summed gradient of one process accumulating the same
micro-batches. BatchNorm statistics are per process (no SyncBatchNorm), as in YOLOv8.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Callable
from copy import deepcopy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ..config import ModelConfig
from ..devices import resolve_device
from ..errors import FastSAMError
from ..io.checkpoint import load_state_strict, read_weights, save_safetensors
from ..nn.model import FastSAMNet, batchnorm_eps, build_model, set_batchnorm_eps
from .checkpoints import atomic_torch_save, export_checkpoint, provenance_of, read_training_checkpoint
from .config import DEFAULT_REG_MAX, TrainConfig
from .loss import LossGains, SegmentationLoss
from .optim import ModelEMA, apply_schedule, build_optimizer, choose_optimizer

__all__ = [
    "LOSS_NAMES",
    "ModelEMA",
    "TrainConfig",
    "Trainer",
    "build_optimizer",
    "export_checkpoint",
    "open_dataset",
    "read_training_checkpoint",
]

logger = logging.getLogger(__name__)
LOSS_NAMES = ("box", "mask", "cls", "dfl")


def open_dataset(path: str | os.PathLike, fmt: str = "auto") -> Any:
    """A class-agnostic dataset from a directory (see :mod:`fastsam.data.datasets`)."""
    from ..train.evaluate import open_dataset as _open  # one place knows the layouts

    return _open(path, fmt)[0]


@dataclass
class _Dist:
    world: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _dist_from_env() -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return _Dist(world, int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")))


@dataclass
class TrainResult:
    out_dir: Path
    weights: Path  # final EMA weights, our safetensors format
    history: list[dict] = field(default_factory=list)  # one entry per iteration
    metrics: list[dict] = field(default_factory=list)  # one entry per validated epoch


class Trainer:
    """Runs :class:`TrainConfig`. ``model``/``train_set``/``val_set`` may be given directly (tests,
    notebooks); otherwise they are built from the config."""

    def __init__(
        self,
        cfg: TrainConfig,
        model: FastSAMNet | None = None,
        train_set: Any = None,
        val_set: Any = None,
        resume: dict | None = None,
        progress: bool = True,
    ) -> None:
        self.cfg = cfg
        self.dist = _dist_from_env()
        self.progress = progress and self.dist.main
        self.device = resolve_device(cfg.device)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.dist.local_rank)
            self.device = torch.device("cuda", self.dist.local_rank)
        if self.dist.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        if cfg.batch % self.dist.world:
            raise FastSAMError(f"batch {cfg.batch} is not divisible by the {self.dist.world} processes")
        self.out = Path(cfg.out)
        torch.manual_seed(cfg.seed)
        self.model = model if model is not None else self._build_model()
        for m in self.model.modules():  # YOLOv8's BN momentum (also for fine-tuned released weights)
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = 0.03
        self.model.to(self.device).train()
        self.train_set = train_set if train_set is not None else self._train_set()
        if val_set is None and cfg.val_data is not None:
            val_set = open_dataset(cfg.val_data, cfg.data_format)
        self.val_set = val_set
        mc = self.model.config
        self.criterion = SegmentationLoss(
            mc.reg_max, mc.num_classes, self.model.strides, LossGains(cfg.box, cfg.cls, cfg.dfl)
        )
        self.per_rank_batch = cfg.batch // self.dist.world
        self.accumulate = max(round(cfg.nbs / cfg.batch), 1)
        self.batches_per_epoch = math.ceil(len(self.train_set) / cfg.batch)
        self.opt_name, lr0, momentum = choose_optimizer(self.cfg, len(self.train_set), self.model.config.num_classes)
        self.lr0 = lr0
        decay = cfg.weight_decay * cfg.batch * self.accumulate / cfg.nbs
        self.optimizer = build_optimizer(self.model, self.opt_name, lr0, momentum, decay)
        for g in self.optimizer.param_groups:
            g["initial_lr"] = lr0
        self.momentum = momentum
        self.use_amp = cfg.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.ema = ModelEMA(self.model) if cfg.ema else None
        self.epoch = 0
        self.iteration = 0  # optimiser-independent count of batches seen (drives warm-up)
        self.history: list[dict] = []
        self.metrics: list[dict] = []
        if resume is not None:
            self._load_state(resume)
        self.ddp_model: nn.Module = self.model
        if self.dist.world > 1:
            ids = [self.dist.local_rank] if self.device.type == "cuda" else None
            self.ddp_model = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)

    # -- construction -----------------------------------------------------------------------------
    def _build_model(self) -> FastSAMNet:
        spec = self.cfg.model
        if len(spec) == 1 and spec in "nsmlx":
            reg_max = self.cfg.reg_max or DEFAULT_REG_MAX.get(spec, 16)
            return build_model(ModelConfig(scale=spec, reg_max=reg_max))
        if self.cfg.reg_max is not None:
            raise FastSAMError("--reg-max applies to fresh networks only (a weight file fixes it)")
        weights = read_weights(spec)
        model = build_model(weights.config)
        load_state_strict(model, weights.state, source=spec)
        set_batchnorm_eps(model, weights.bn_eps)  # a per-layer constant, not in the state dict: keep it
        return model.float()

    def _train_set(self) -> Any:
        from .augment import AugmentConfig
        from .data import TrainDataset

        cfg = self.cfg
        source = open_dataset(cfg.data, cfg.data_format)
        if cfg.limit is not None:
            source = torch.utils.data.Subset(source, range(min(cfg.limit, len(source))))
        aug = AugmentConfig(
            mosaic=cfg.mosaic,
            degrees=cfg.degrees,
            translate=cfg.translate,
            scale=cfg.scale,
            hsv_h=cfg.hsv_h,
            hsv_s=cfg.hsv_s,
            hsv_v=cfg.hsv_v,
            fliplr=cfg.fliplr,
        )
        return TrainDataset(source, cfg.imgsz, aug, seed=cfg.seed)

    # -- state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "format": "fastsam-train",
            "version": 1,
            "config": dataclasses.asdict(self.cfg),
            "model_config": self.model.config.to_dict(),
            "model": self.model.state_dict(),
            "ema": self.ema.ema.state_dict() if self.ema else None,
            "ema_updates": self.ema.updates if self.ema else 0,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "iteration": self.iteration,
            "history": self.history,
            "metrics": self.metrics,
            "images": len(self.train_set),
            "bn_eps": batchnorm_eps(self.model),
        }

    def _load_state(self, state: dict) -> None:
        load_state_strict(self.model, state["model"], source="resume checkpoint")
        if self.ema is not None and state.get("ema") is not None:
            load_state_strict(self.ema.ema, state["ema"], source="resume checkpoint (ema)")
            self.ema.updates = int(state["ema_updates"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.iteration = int(state["epoch"]), int(state["iteration"])
        self.history, self.metrics = list(state["history"]), list(state["metrics"])

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, **overrides: Any) -> Trainer:
        """Resume from ``last.pt`` (read with ``weights_only=True``: nothing in it is executed)."""
        state = read_training_checkpoint(path)
        cfg = TrainConfig(**{**state["config"], **overrides})
        torch.manual_seed(cfg.seed)
        model = build_model(ModelConfig(**state["model_config"]))
        return cls(cfg, model=model, resume=state)

    # -- loop -------------------------------------------------------------------------------------
    def _loader(self, epoch: int) -> torch.utils.data.DataLoader:
        from .data import collate

        mosaic = epoch < self.cfg.epochs - self.cfg.close_mosaic
        if hasattr(self.train_set, "set_epoch"):
            self.train_set.set_epoch(epoch, mosaic=mosaic)
        sampler: torch.utils.data.DistributedSampler[Any] = torch.utils.data.DistributedSampler(
            self.train_set, num_replicas=self.dist.world, rank=self.dist.rank, shuffle=True, seed=self.cfg.seed
        )
        sampler.set_epoch(epoch)
        return torch.utils.data.DataLoader(
            self.train_set,
            batch_size=self.per_rank_batch,
            sampler=sampler,
            collate_fn=collate,
            num_workers=self.cfg.workers,
            pin_memory=self.device.type == "cuda",
        )

    def loss(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward + loss of one (per-process) batch; returns (loss to backpropagate, items)."""
        batch = batch.to(self.device)
        images = batch.images.float() / 255.0
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.use_amp):
            out = self.ddp_model(images)
        result = self.criterion(out, batch.boxes, batch.batch_idx, batch.masks)
        return result.total * self.dist.world, result.items

    def _optimizer_step(self) -> None:
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm=self.cfg.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.model)

    def train(self, stop_after_epochs: int | None = None, log: Callable[[str], None] | None = None) -> TrainResult:
        """Train from ``self.epoch`` to ``cfg.epochs`` (or only ``stop_after_epochs`` more epochs)."""
        cfg = self.cfg
        log = log or (lambda s: logger.info(s))
        end = cfg.epochs if stop_after_epochs is None else min(cfg.epochs, self.epoch + stop_after_epochs)
        if self.dist.main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1))
            log(
                f"training {self.model.config.scale} (reg_max {self.model.config.reg_max}) on {len(self.train_set)} "
                f"images, imgsz {cfg.imgsz}, {self.opt_name} lr {self.lr0}, batch {cfg.batch} x {self.dist.world} "
                f"process(es), accumulate {self.accumulate}, epochs {self.epoch}->{end}"
            )
        log_file = (self.out / "log.jsonl").open("a") if self.dist.main else None
        try:
            while self.epoch < end:
                self._train_epoch(log_file)
                self.epoch += 1
                if self.val_set is not None and (self.epoch % cfg.val_period == 0 or self.epoch == cfg.epochs):
                    self._validate(log)
                if self.dist.main:
                    atomic_torch_save(self.state_dict(), self.out / "weights" / "last.pt")
        finally:
            if log_file is not None:
                log_file.close()
        weights = self.out / "weights" / "model.safetensors"
        if self.dist.main:
            self.export(weights)
        if self.dist.world > 1:
            dist.barrier()
        return TrainResult(self.out, weights, self.history, self.metrics)

    def _train_epoch(self, log_file: Any) -> None:
        from tqdm import tqdm

        loader = self._loader(self.epoch)
        nb = len(loader)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        pending = 0
        start = time.perf_counter()
        bar = tqdm(
            loader,
            total=nb,
            desc=f"epoch {self.epoch + 1}/{self.cfg.epochs}",
            disable=not self.progress,
            dynamic_ncols=True,
        )
        for i, batch in enumerate(bar):
            accumulate = apply_schedule(
                self.optimizer,
                self.cfg,
                self.lr0,
                self.momentum,
                self.accumulate,
                self.batches_per_epoch,
                self.epoch,
                self.iteration,
            )
            loss, items = self.loss(batch)
            self.scaler.scale(loss).backward()
            pending += 1
            # Step every `accumulate` batches, and always at the end of the epoch (nothing straddles epochs).
            if pending >= accumulate or i == nb - 1:
                self._optimizer_step()
                pending = 0
            self.iteration += 1
            if self.dist.world > 1:
                dist.all_reduce(items)
                items /= self.dist.world
            record = {
                "epoch": self.epoch,
                "iter": self.iteration,
                **dict(zip(LOSS_NAMES, items.tolist())),
                "lr": self.optimizer.param_groups[0]["lr"],
                "instances": int(batch.boxes.shape[0]),
            }
            self.history.append(record)
            if log_file is not None:
                log_file.write(json.dumps(record) + "\n")
            bar.set_postfix({k: f"{record[k]:.3f}" for k in LOSS_NAMES})
        if log_file is not None:
            log_file.flush()
        logger.info("epoch %d: %.1f s", self.epoch + 1, time.perf_counter() - start)

    def eval_network(self) -> FastSAMNet:
        """The network to evaluate/export: the EMA when enabled."""
        return (self.ema.ema if self.ema is not None else self.model).eval()

    def _validate(self, log: Callable[[str], None]) -> None:
        if not self.dist.main:
            return
        from ..predictor import FastSAM
        from .evaluate import evaluate

        predictor = FastSAM(deepcopy(self.eval_network()).cpu(), device=self.device, cache_size=0)
        metrics = evaluate(
            predictor, self.val_set, imgsz=self.cfg.imgsz, conf=self.cfg.val_conf, iou=self.cfg.val_iou, progress=False
        )
        # Undefined metrics (NaN, e.g. AR of a size range without objects) are left out: strict JSON.
        metrics = {
            "epoch": self.epoch,
            **{k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)},
        }
        self.metrics.append(metrics)
        with (self.out / "metrics.jsonl").open("a") as fh:
            fh.write(json.dumps(metrics, allow_nan=False) + "\n")
        shown = ", ".join(f"{k} {metrics[k]:.3f}" for k in ("mask_AR@100", "mask_AP", "box_AR@100") if k in metrics)
        log(f"epoch {self.epoch}: {shown}")
        self.model.train()

    def export(self, path: str | os.PathLike, dtype: torch.dtype | None = None) -> Path:
        """Write the EMA network in fastsam's safetensors format, with its training provenance."""
        net = self.eval_network()
        provenance = provenance_of(dataclasses.asdict(self.cfg), self.epoch, len(self.train_set), self.metrics)
        return save_safetensors(
            net.state_dict(), net.config, path, provenance=provenance, dtype=dtype, bn_eps=batchnorm_eps(self.model)
        )
