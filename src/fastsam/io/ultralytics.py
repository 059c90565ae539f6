"""The one module that knows ultralytics' checkpoint layout.

* :func:`key_map` maps our readable parameter names to ultralytics' numbered names
  (``head.coef_branch.0.pred.weight`` <-> ``model.22.cv4.0.2.weight``), derived from the module tree
  so it holds for every scale and depth.
* :func:`read_ultralytics_checkpoint` reads a released ``.pt`` (a pickled dict holding a
  ``SegmentationModel``) through the allow-listing unpickler and returns a state dict in our names,
  the architecture derived from tensor shapes, and provenance metadata. ultralytics is never imported.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..config import SCALES, ModelConfig
from ..errors import CheckpointError, UnsafeCheckpointError
from ..nn.blocks import BN_EPS, C2f, SPPF, Bottleneck, Branch, ConvBnAct, Proto
from ..nn.model import Backbone, FastSAMNet, Neck, SegmentHead
from . import safe_pickle

__all__ = ["key_map", "to_ultralytics", "from_ultralytics", "infer_config", "read_ultralytics_checkpoint"]

# Index of each of our top-level modules in ultralytics' ``model`` Sequential (yolov8-seg.yaml).
_LAYER_INDEX = {
    "backbone.stem": 0, "backbone.down1": 1, "backbone.c2f1": 2, "backbone.down2": 3,
    "backbone.c2f2": 4, "backbone.down3": 5, "backbone.c2f3": 6, "backbone.down4": 7,
    "backbone.c2f4": 8, "backbone.sppf": 9, "neck.topdown_p4": 12, "neck.topdown_p3": 15,
    "neck.down_p3": 16, "neck.bottomup_p4": 18, "neck.down_p4": 19, "neck.bottomup_p5": 21,
    "head": 22,
}  # fmt: skip

# Child names per module type: ours -> ultralytics'.
_CHILD_NAMES: dict[type, dict[str, str]] = {
    C2f: {"expand": "cv1", "project": "cv2", "blocks": "m"},
    Bottleneck: {"conv1": "cv1", "conv2": "cv2"},
    SPPF: {"reduce": "cv1", "project": "cv2", "pool": "m"},
    Proto: {"conv1": "cv1", "upsample": "upsample", "conv2": "cv2", "out": "cv3"},
    Branch: {"conv1": "0", "conv2": "1", "pred": "2"},
    SegmentHead: {"box_branch": "cv2", "cls_branch": "cv3", "coef_branch": "cv4", "proto": "proto"},
    ConvBnAct: {"conv": "conv", "bn": "bn", "act": "act"},
}

DFL_KEY = "model.22.dfl.conv.weight"


def _module_map(module: nn.Module, ours: str, theirs: str, out: dict[str, str]) -> None:
    for name, _ in module.named_parameters(recurse=False):
        out[f"{ours}{name}"] = f"{theirs}{name}"
    for name, buf in module.named_buffers(recurse=False):
        if name in module._non_persistent_buffers_set:
            continue
        out[f"{ours}{name}"] = f"{theirs}{name}"
    names = _CHILD_NAMES.get(type(module), {})
    for name, child in module.named_children():
        their_name = names.get(name, name)  # ModuleList indices and nn layers keep their names
        _module_map(child, f"{ours}{name}.", f"{theirs}{their_name}.", out)


def key_map(model: FastSAMNet) -> dict[str, str]:
    """Map every state-dict key of ``model`` to the ultralytics key of the same tensor."""
    out: dict[str, str] = {}
    for prefix, index in _LAYER_INDEX.items():
        module = model.get_submodule(prefix)
        _module_map(module, f"{prefix}.", f"model.{index}.", out)
    missing = set(model.state_dict()) - set(out)
    if missing:  # a module was added to the network without a place in the map
        raise AssertionError(f"key map does not cover {sorted(missing)[:5]}")
    return out


def dfl_weight(reg_max: int) -> Tensor:
    """The fixed DFL projection ultralytics stores as a conv weight: (1, reg_max, 1, 1) = 0..reg_max-1."""
    return torch.arange(reg_max, dtype=torch.float32).view(1, reg_max, 1, 1)


def to_ultralytics(model: FastSAMNet) -> dict[str, Tensor]:
    """State dict of ``model`` under ultralytics' names (including the fixed DFL weight)."""
    mapping = key_map(model)
    sd = {mapping[k]: v for k, v in model.state_dict().items()}
    sd[DFL_KEY] = dfl_weight(model.config.reg_max)
    return sd


def from_ultralytics(state: dict[str, Tensor], cfg: ModelConfig) -> dict[str, Tensor]:
    """Rename an ultralytics state dict to our names; unknown keys are kept under their own name so
    that strict loading reports them."""
    with torch.device("meta"):  # only the module tree is needed, not weights
        probe = FastSAMNet(cfg)
    inverse = {v: k for k, v in key_map(probe).items()}
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key == DFL_KEY:
            if value.shape != (1, cfg.reg_max, 1, 1) or not torch.equal(value.float(), dfl_weight(cfg.reg_max)):
                raise CheckpointError(f"{DFL_KEY} is not the fixed DFL projection 0..{cfg.reg_max - 1}")
            continue
        out[inverse.get(key, key)] = value
    return out


def infer_config(state: dict[str, Tensor]) -> ModelConfig:
    """Derive scale, classes, mask count and reg_max from the tensor shapes of an ultralytics state dict."""
    try:
        stem = state["model.0.conv.weight"].shape[0]
        p5 = state["model.9.cv2.conv.weight"].shape[0]
        blocks = len({k.split(".")[3] for k in state if k.startswith("model.2.m.")})
        num_classes = state["model.22.cv3.0.2.weight"].shape[0]
        reg_max4 = state["model.22.cv2.0.2.weight"].shape[0]
        num_masks = state["model.22.cv4.0.2.weight"].shape[0]
        proto_hidden = state["model.22.proto.cv1.conv.weight"].shape[0]
    except KeyError as exc:
        raise CheckpointError(f"not a YOLOv8-seg (FastSAM) checkpoint: tensor {exc.args[0]} is missing") from None
    if reg_max4 % 4:
        raise CheckpointError(f"box branch has {reg_max4} outputs, not a multiple of 4")
    for scale, s in SCALES.items():
        probe = ModelConfig(scale=scale)
        if (probe.channels(64), probe.channels(1024), probe.repeats(3)) == (stem, p5, blocks):
            base = round(proto_hidden / s.width)
            return ModelConfig(
                scale=scale,
                num_classes=num_classes,
                num_masks=num_masks,
                reg_max=reg_max4 // 4,
                proto_channels=base,
            )
    raise CheckpointError(
        f"unknown YOLOv8 scale: stem width {stem}, P5 width {p5}, {blocks} bottleneck(s) in layer 2"
    )


def _module_state(obj: Any, prefix: str, out: dict[str, Tensor]) -> None:
    """Collect parameters and persistent buffers from a placeholder of a pickled nn.Module tree."""
    state = obj.state if safe_pickle.is_inert(obj) else None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint module {prefix or '<root>'} has no readable state")
    if safe_pickle.is_inert(obj, "BatchNorm2d") and abs(float(state.get("eps", BN_EPS)) - BN_EPS) > 1e-12:
        # The network hard-codes YOLOv8's eps; a different one would silently change every output.
        raise CheckpointError(f"BatchNorm {prefix.rstrip('.')} has eps {state.get('eps')}, expected {BN_EPS}")
    skip = state.get("_non_persistent_buffers_set") or set()
    for group in ("_parameters", "_buffers"):
        for name, value in (state.get(group) or {}).items():
            if value is None or name in skip:
                continue
            if not isinstance(value, Tensor):
                raise CheckpointError(f"checkpoint entry {prefix}{name} is not a tensor")
            out[f"{prefix}{name}"] = value.detach()
    for name, child in (state.get("_modules") or {}).items():
        if child is not None:
            _module_state(child, f"{prefix}{name}.", out)


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=safe_pickle)  # allow-listed
    except UnsafeCheckpointError:
        raise
    except (pickle.UnpicklingError, EOFError, RuntimeError, zipfile.BadZipFile, ValueError, KeyError,
            AttributeError, TypeError, IndexError, OSError) as exc:  # fmt: skip
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({first})") from None


def read_ultralytics_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], ModelConfig, dict[str, Any]]:
    """Read a pickled ultralytics FastSAM / YOLOv8-seg checkpoint without importing ultralytics.

    Returns:
        (state dict in our names with the checkpoint's dtypes, derived ModelConfig, metadata with
        ``ultralytics_version``, ``date``, ``train_args`` (plain values only) and ``source_dtype``).
    """
    path = Path(path)
    ckpt = _torch_load(path)
    if isinstance(ckpt, dict) and ("model" in ckpt or "ema" in ckpt):
        model_obj = ckpt.get("ema") if ckpt.get("ema") is not None else ckpt.get("model")
    else:
        model_obj = ckpt
    if isinstance(model_obj, dict) and all(isinstance(v, Tensor) for v in model_obj.values()):
        state = dict(model_obj)  # a bare ultralytics state dict
    elif safe_pickle.is_inert(model_obj):
        if not safe_pickle.is_inert(model_obj, "SegmentationModel"):
            raise CheckpointError(
                f"{path}: holds a {model_obj._pickled_name}, expected a SegmentationModel (FastSAM)"
            )
        state = {}
        try:
            _module_state(model_obj, "", state)
        except CheckpointError as exc:
            raise CheckpointError(f"{path}: {exc}") from None
    else:
        raise CheckpointError(f"{path}: not an ultralytics checkpoint (top level is {type(ckpt).__name__})")
    try:
        cfg = infer_config(state)
        renamed = from_ultralytics(state, cfg)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    meta: dict[str, Any] = {"source_format": "ultralytics"}
    if isinstance(ckpt, dict):
        for key in ("version", "date"):
            if isinstance(ckpt.get(key), str):
                meta["ultralytics_version" if key == "version" else "date"] = ckpt[key]
        args = ckpt.get("train_args")
        if isinstance(args, dict):
            meta["train_args"] = {k: v for k, v in args.items() if isinstance(v, (str, int, float, bool))}
    meta["source_dtype"] = str(state["model.0.conv.weight"].dtype).replace("torch.", "")
    return renamed, cfg, meta
