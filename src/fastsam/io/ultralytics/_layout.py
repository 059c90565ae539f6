"""ultralytics' layer numbering and child names for our modules (yolov8-seg.yaml), and the key map."""

from __future__ import annotations

from torch import nn

from ...nn.blocks import SPPF, Bottleneck, Branch, C2f, ConvBnAct, Proto
from ...nn.model import FastSAMNet, SegmentHead

# Index of each of our top-level modules in ultralytics' ``model`` Sequential (yolov8-seg.yaml).
_LAYER_INDEX = {
    "backbone.stem": 0,
    "backbone.down1": 1,
    "backbone.c2f1": 2,
    "backbone.down2": 3,
    "backbone.c2f2": 4,
    "backbone.down3": 5,
    "backbone.c2f3": 6,
    "backbone.down4": 7,
    "backbone.c2f4": 8,
    "backbone.sppf": 9,
    "neck.topdown_p4": 12,
    "neck.topdown_p3": 15,
    "neck.down_p3": 16,
    "neck.bottomup_p4": 18,
    "neck.down_p4": 19,
    "neck.bottomup_p5": 21,
    "head": 22,
}

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
