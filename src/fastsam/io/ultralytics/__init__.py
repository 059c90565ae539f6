"""The one package that knows ultralytics' checkpoint layout (numbering in ``_layout``, checks in ``_checks``).

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
from torch import Tensor

from ...config import SCALES, ModelConfig
from ...errors import CheckpointError, UnsafeCheckpointError
from ...nn.model import FastSAMNet
from .. import safe_pickle
from ._checks import _module_state, layer_constants
from ._layout import DFL_KEY, key_map

__all__ = [
    "from_ultralytics",
    "infer_config",
    "key_map",
    "layer_constants",
    "read_ultralytics_checkpoint",
    "to_ultralytics",
]


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
                scale=scale, num_classes=num_classes, num_masks=num_masks, reg_max=reg_max4 // 4, proto_channels=base
            )
    raise CheckpointError(f"unknown YOLOv8 scale: stem width {stem}, P5 width {p5}, {blocks} bottleneck(s) in layer 2")


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=safe_pickle)  # allow-listed
    except UnsafeCheckpointError:
        raise
    except (
        pickle.UnpicklingError,
        EOFError,
        RuntimeError,
        zipfile.BadZipFile,
        ValueError,
        KeyError,
        AttributeError,
        TypeError,
        IndexError,
        OSError,
    ) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({first})") from None


def read_ultralytics_checkpoint(
    path: str | Path,
) -> tuple[dict[str, Tensor], ModelConfig, dict[str, Any], dict[str, float]]:
    """Read a pickled ultralytics FastSAM / YOLOv8-seg checkpoint without importing ultralytics.

    Returns:
        (state dict in our names with the checkpoint's dtypes, derived ModelConfig, metadata with
        ``ultralytics_version``, ``date``, ``train_args`` (plain values only) and ``source_dtype``,
        BatchNorm eps other than ``BN_EPS`` by our layer name (empty for a bare state dict, which
        stores none: YOLOv8's eps is assumed)).
    """
    path = Path(path)
    ckpt = _torch_load(path)
    if isinstance(ckpt, dict) and ("model" in ckpt or "ema" in ckpt):
        model_obj: Any = ckpt.get("ema") if ckpt.get("ema") is not None else ckpt.get("model")
    else:
        model_obj = ckpt
    if isinstance(model_obj, dict) and all(isinstance(v, Tensor) for v in model_obj.values()):
        state = dict(model_obj)  # a bare ultralytics state dict
        modules: dict[str, Any] = {}
    elif safe_pickle.is_inert(model_obj):
        if not safe_pickle.is_inert(model_obj, "SegmentationModel"):
            raise CheckpointError(f"{path}: holds a {model_obj._pickled_name}, expected a SegmentationModel (FastSAM)")
        state, modules = {}, {}
        try:
            _module_state(model_obj, "", state, modules)
        except CheckpointError as exc:
            raise CheckpointError(f"{path}: {exc}") from None
    else:
        raise CheckpointError(f"{path}: not an ultralytics checkpoint (top level is {type(ckpt).__name__})")
    try:
        cfg = infer_config(state)
        renamed = from_ultralytics(state, cfg)
        eps = layer_constants(modules, cfg) if modules else {}
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
    return renamed, cfg, meta, eps
