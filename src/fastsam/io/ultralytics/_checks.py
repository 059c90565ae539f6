"""What a released checkpoint's pickled modules must hold for this network: layer classes, constants
(BatchNorm eps, strides, upsampling), and the wiring of yolov8-seg.yaml. Pure reads of inert objects."""

from __future__ import annotations

import math
import numbers
from typing import Any, cast

import torch
from torch import Tensor, nn

from ...config import ModelConfig
from ...errors import CheckpointError
from ...nn.blocks import BN_EPS, SPPF, Bottleneck, Branch, C2f, ConvBnAct, Proto
from ...nn.model import STRIDES, FastSAMNet, SegmentHead
from .. import safe_pickle
from ._layout import _CONCAT_INDEX, _FROM, _NUM_LAYERS, _module_paths


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
    ConvBnAct: "Conv",
    C2f: "C2f",
    Bottleneck: "Bottleneck",
    SPPF: "SPPF",
    Proto: "Proto",
    SegmentHead: "Segment",
    Branch: "Sequential",
    nn.ModuleList: "ModuleList",
    nn.Conv2d: "Conv2d",
    nn.ConvTranspose2d: "ConvTranspose2d",
    nn.BatchNorm2d: "BatchNorm2d",
    nn.SiLU: "SiLU",
    nn.MaxPool2d: "MaxPool2d",
    nn.Upsample: "Upsample",
}
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
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not (math.isfinite(value) and cast(float, value) > 0)
    ):
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
            if (
                parent_obj is not None
                and parent_ours is not None
                and safe_pickle.is_inert(parent_obj, _THEIR_CLASS.get(type(parent_ours), "?"))
            ):  # a real ultralytics module without this layer: e.g. a Conv fused without its BatchNorm
                assert expected is not None  # every module of our network has an ultralytics class
                hint = " (was it saved after fusing Conv and BatchNorm?)" if expected == "BatchNorm2d" else ""
                raise CheckpointError(f"layer {where} is missing; this network needs {_a(expected)} there{hint}")
            continue
        name, state = obj._pickled_name.split(".")[-1], obj.state
        if obj.pickled_name == "torch.nn.modules.module.Module":
            continue  # a plain nn.Module holding tensors (a state dict pickled as a tree): no constants
        if type(ours) in _LEAF_CONSTANTS:
            assert expected is not None  # every leaf class is in _THEIR_CLASS
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
                raise CheckpointError(
                    f"Concat model.{index} has d {_shown(state.get('d'))}; this network supports only 1"
                )
        frm = state.get("f", _OPAQUE)
        if frm is not _OPAQUE and _norm(frm) != _norm(_FROM.get(index, -1)):
            raise CheckpointError(
                f"layer model.{index} takes its input from {_shown(frm)}; this network feeds it {_FROM.get(index, -1)}"
            )
