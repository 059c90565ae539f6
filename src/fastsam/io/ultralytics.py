"""The one module that knows ultralytics' checkpoint layout.

* :func:`key_map` maps our readable parameter names to ultralytics' numbered names
  (``head.coef_branch.0.pred.weight`` <-> ``model.22.cv4.0.2.weight``), derived from the module tree
  so it holds for every scale and depth.
* :func:`read_ultralytics_checkpoint` reads a released ``.pt`` (a pickled dict holding a
  ``SegmentationModel``) through the allow-listing unpickler and returns a state dict in our names,
  the architecture derived from tensor shapes, and provenance metadata. ultralytics is never imported.
"""

from __future__ import annotations

import math
import numbers
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..config import SCALES, ModelConfig
from ..errors import CheckpointError, UnsafeCheckpointError
from ..nn.blocks import BN_EPS, C2f, SPPF, Bottleneck, Branch, ConvBnAct, Proto
from ..nn.model import STRIDES, FastSAMNet, SegmentHead
from . import safe_pickle

__all__ = [
    "key_map", "to_ultralytics", "from_ultralytics", "infer_config", "layer_constants", "read_ultralytics_checkpoint",
]  # fmt: skip

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
_UPSAMPLE_INDEX = (10, 13)  # our one ``neck.up``
_CONCAT_INDEX = (11, 14, 17, 20)
_NUM_LAYERS = 23
# Inputs ("f") of the layers that do not take the previous one's output: the wiring of yolov8-seg.yaml.
_FROM = {11: [-1, 6], 14: [-1, 4], 17: [-1, 12], 20: [-1, 9], 22: [15, 18, 21]}


def _module_paths(model: FastSAMNet) -> dict[str, tuple[str, nn.Module]]:
    """Every ultralytics module path of the network (``"model.0.bn"``) -> (our path, our module).

    ``neck.up`` appears twice: ultralytics has one Upsample per use (layers 10 and 13)."""
    out: dict[str, tuple[str, nn.Module]] = {}

    def walk(module: nn.Module, ours: str, theirs: str) -> None:
        out[theirs] = (ours, module)
        names = _CHILD_NAMES.get(type(module), {})
        for name, child in module.named_children():  # ModuleList indices and nn layers keep their names
            walk(child, f"{ours}.{name}", f"{theirs}.{names.get(name, name)}")

    for prefix, index in _LAYER_INDEX.items():
        walk(model.get_submodule(prefix), prefix, f"model.{index}")
    for index in _UPSAMPLE_INDEX:
        walk(model.neck.up, "neck.up", f"model.{index}")
    return out


def key_map(model: FastSAMNet) -> dict[str, str]:
    """Map every state-dict key of ``model`` to the ultralytics key of the same tensor."""
    out: dict[str, str] = {}
    for theirs, (ours, module) in _module_paths(model).items():
        for name, _ in module.named_parameters(recurse=False):
            out[f"{ours}.{name}"] = f"{theirs}.{name}"
        for name, _ in module.named_buffers(recurse=False):
            if name not in module._non_persistent_buffers_set:
                out[f"{ours}.{name}"] = f"{theirs}.{name}"
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


def _module_state(obj: Any, prefix: str, out: dict[str, Tensor], modules: dict[str, Any]) -> None:
    """Collect parameters and persistent buffers from a placeholder of a pickled nn.Module tree, and
    every placeholder by its module path (``modules["model.0.bn"]``) for :func:`layer_constants`."""
    state = obj.state if safe_pickle.is_inert(obj) else None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint module {prefix.rstrip('.') or '<root>'} has no readable state")
    modules[prefix.rstrip(".")] = obj
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
            _module_state(child, f"{prefix}{name}.", out, modules)


# ultralytics' class at each position of our tree. Leaf layers must be of exactly this class (an
# Identity where we have SiLU is a layer without activation) and have our constants, compared below;
# containers are checked where they are of this class. Plain ``nn.Module`` placeholders (a state dict
# pickled as a module tree) carry no constants and are only checked by their tensors.
_THEIR_CLASS: dict[type, str] = {
    ConvBnAct: "Conv", C2f: "C2f", Bottleneck: "Bottleneck", SPPF: "SPPF", Proto: "Proto", SegmentHead: "Segment",
    Branch: "Sequential", nn.ModuleList: "ModuleList", nn.Conv2d: "Conv2d", nn.ConvTranspose2d: "ConvTranspose2d",
    nn.BatchNorm2d: "BatchNorm2d", nn.SiLU: "SiLU", nn.MaxPool2d: "MaxPool2d", nn.Upsample: "Upsample",
}  # fmt: skip
# Constants of the leaf layers that change outputs and that this network fixes. BatchNorm's eps is
# not among them: it is read per layer.
_LEAF_CONSTANTS: dict[type, tuple[str, ...]] = {
    nn.Conv2d: ("kernel_size", "stride", "padding", "dilation", "groups", "padding_mode"),
    nn.ConvTranspose2d: ("kernel_size", "stride", "padding", "output_padding", "dilation", "groups", "padding_mode"),
    nn.BatchNorm2d: ("affine", "track_running_stats"),
    nn.SiLU: (),
    nn.MaxPool2d: ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"),
    nn.Upsample: ("size", "scale_factor", "mode", "align_corners", "recompute_scale_factor"),
}
_OPAQUE = object()  # what a value of an unexpected type normalises to: equal to none of ours


def _norm(value: Any) -> Any:
    """(3, 3) -> 3, (2.0, 2.0) -> 2.0 (torch stores some constants per dimension, some once)."""
    if isinstance(value, (tuple, list)):
        items = tuple(_norm(v) for v in value)
        return items[0] if items and all(v is not _OPAQUE and v == items[0] for v in items) else items
    return value if value is None or isinstance(value, (bool, int, float, str)) else _OPAQUE


def _shown(value: Any) -> str:
    text = repr(value) if _norm(value) is not _OPAQUE else f"a {type(value).__name__}"
    return text if len(text) <= 60 else text[:57] + "..."


def _a(name: str) -> str:
    return f"{'an' if name[:1] in 'AEIOU' else 'a'} {name}"


def _read_eps(state: dict[str, Any], where: str) -> float:
    value = state.get("eps", _OPAQUE)
    if value is _OPAQUE:
        raise CheckpointError(f"BatchNorm {where} has no eps")
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (math.isfinite(value) and value > 0):
        raise CheckpointError(f"BatchNorm {where} has eps {_shown(value)}; expected a finite positive number")
    return float(value)


def _composite_problem(name: str, state: dict[str, Any], ours: nn.Module, cfg: ModelConfig) -> str | None:
    """What an ultralytics container of the expected class stores that our module cannot follow
    (absent attributes are older ultralytics versions' fixed behaviour, which is ours)."""
    got = {k: _norm(state[k]) if k in state else None for k in ("add", "c", "n", "nc", "nm", "reg_max")}
    if isinstance(ours, Bottleneck) and "add" in state and got["add"] != ours.shortcut:
        return f"residual add {_shown(state['add'])}; this network has {ours.shortcut} there"
    if isinstance(ours, C2f) and "c" in state and got["c"] != ours.hidden:
        return f"hidden width c {_shown(state['c'])}; this network has {ours.hidden}"
    if isinstance(ours, SPPF):  # ultralytics 8.4 made the pool count and a residual add configurable
        if "n" in state and got["n"] != 3:
            return f"n {_shown(state['n'])} chained max-pools; this network supports only 3"
        if "add" in state and got["add"] not in (False, None):
            return f"residual add {_shown(state['add'])}; this network has none"
    if isinstance(ours, SegmentHead):
        stride = state.get("stride")
        if isinstance(stride, Tensor) and stride.tolist() != [float(v) for v in STRIDES]:
            return f"strides {stride.tolist()}; this network has {list(STRIDES)}"
        for key, want in (("nc", cfg.num_classes), ("nm", cfg.num_masks), ("reg_max", cfg.reg_max)):
            if key in state and got[key] != want:
                return f"{key} {_shown(state[key])}, but its tensors give {want}"
    return None


def layer_constants(modules: dict[str, Any], cfg: ModelConfig) -> dict[str, float]:
    """Check the per-layer constants of a pickled module tree against the network of ``cfg``.

    Args:
        modules: placeholders by ultralytics module path, as :func:`_module_state` collects them.
    Returns:
        the eps of every BatchNorm whose eps is not ``BN_EPS``, by our module name: the one constant
        read from the file (ultralytics runs each layer with the eps it stores).
    Raises:
        CheckpointError naming the layer and the value for any constant this network cannot
        represent: a missing BatchNorm or activation, another activation, conv stride / padding /
        dilation / groups, max-pool kernel, upsampling factor or mode, rewired layer inputs, ...
    """
    with torch.device("meta"):
        probe = FastSAMNet(cfg)
    paths = _module_paths(probe)
    eps: dict[str, float] = {}
    for theirs, (ours_name, ours) in paths.items():
        expected = _THEIR_CLASS.get(type(ours))
        where = f"{theirs} ({ours_name})"
        obj = modules.get(theirs)
        if obj is None:
            parent, _, _ = theirs.rpartition(".")
            parent_ours = paths.get(parent, (None, None))[1]
            parent_obj = modules.get(parent)
            if parent_obj is not None and parent_ours is not None and safe_pickle.is_inert(
                parent_obj, _THEIR_CLASS.get(type(parent_ours), "?")
            ):  # a real ultralytics module without this layer: e.g. a Conv fused without its BatchNorm
                hint = " (was it saved after fusing Conv and BatchNorm?)" if expected == "BatchNorm2d" else ""
                raise CheckpointError(f"layer {where} is missing; this network needs {_a(expected)} there{hint}")
            continue
        name, state = obj._pickled_name.split(".")[-1], obj.state
        if obj.pickled_name == "torch.nn.modules.module.Module":
            continue  # a plain nn.Module holding tensors (a state dict pickled as a tree): no constants
        if type(ours) in _LEAF_CONSTANTS:
            if name != expected:
                raise CheckpointError(f"layer {where} is {_a(name)}; this network has {_a(expected)} there")
            for key in _LEAF_CONSTANTS[type(ours)]:
                if key in state and _norm(state[key]) != _norm(getattr(ours, key)):
                    raise CheckpointError(
                        f"{name} {where} has {key} {_shown(state[key])}; this network supports only "
                        f"{_shown(getattr(ours, key))}"
                    )
            if isinstance(ours, nn.BatchNorm2d):
                value = _read_eps(state, where)
                if value != BN_EPS:
                    eps[ours_name] = value
        elif name == expected:
            problem = _composite_problem(name, state, ours, cfg)
            if problem:
                raise CheckpointError(f"{name} {where} has {problem}")
    _check_wiring(modules)
    return eps


def _check_wiring(modules: dict[str, Any]) -> None:
    """The top-level layers: no extra ones, Concat along channels, each fed by the yolov8-seg inputs."""
    stride = modules[""].state.get("stride") if "" in modules else None
    if isinstance(stride, Tensor) and stride.tolist() != [float(v) for v in STRIDES]:
        raise CheckpointError(f"the model has strides {stride.tolist()}; this network has {list(STRIDES)}")
    seq = modules.get("model")
    if seq is not None and safe_pickle.is_inert(seq, "Sequential"):
        present = {k for k, v in (seq.state.get("_modules") or {}).items() if v is not None}
        extra, wanted = sorted(present - {str(i) for i in range(_NUM_LAYERS)}), set(map(str, range(_NUM_LAYERS)))
        if extra:
            raise CheckpointError(f"layer model.{extra[0]} is not part of the YOLOv8-seg network")
        if wanted - present:
            raise CheckpointError(f"layer model.{min(wanted - present, key=int)} is missing")
    for index in range(_NUM_LAYERS):
        obj = modules.get(f"model.{index}")
        if obj is None:
            continue
        name, state = obj._pickled_name.split(".")[-1], obj.state
        if index in _CONCAT_INDEX:
            if name != "Concat":
                raise CheckpointError(f"layer model.{index} is {_a(name)}; this network has a Concat there")
            if _norm(state.get("d", 1)) != 1:
                raise CheckpointError(f"Concat model.{index} has d {_shown(state.get('d'))}; this network supports only 1")
        frm = state.get("f", _OPAQUE)
        if frm is not _OPAQUE and _norm(frm) != _norm(_FROM.get(index, -1)):
            raise CheckpointError(
                f"layer model.{index} takes its input from {_shown(frm)}; this network feeds it {_FROM.get(index, -1)}"
            )


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=safe_pickle)  # allow-listed
    except UnsafeCheckpointError:
        raise
    except (pickle.UnpicklingError, EOFError, RuntimeError, zipfile.BadZipFile, ValueError, KeyError,
            AttributeError, TypeError, IndexError, OSError) as exc:  # fmt: skip
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({first})") from None


def read_ultralytics_checkpoint(path: str | Path
                                ) -> tuple[dict[str, Tensor], ModelConfig, dict[str, Any], dict[str, float]]:  # fmt: skip
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
        model_obj = ckpt.get("ema") if ckpt.get("ema") is not None else ckpt.get("model")
    else:
        model_obj = ckpt
    if isinstance(model_obj, dict) and all(isinstance(v, Tensor) for v in model_obj.values()):
        state = dict(model_obj)  # a bare ultralytics state dict
        modules: dict[str, Any] = {}
    elif safe_pickle.is_inert(model_obj):
        if not safe_pickle.is_inert(model_obj, "SegmentationModel"):
            raise CheckpointError(
                f"{path}: holds a {model_obj._pickled_name}, expected a SegmentationModel (FastSAM)"
            )
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
