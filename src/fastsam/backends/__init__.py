"""Where the forward pass runs: PyTorch, ONNX Runtime or OpenVINO, behind one seam.

A backend is "images in, decoded predictions + prototypes out": ``forward((B, 3, H, W) float32
tensor) -> (preds (B, 4 + nc + nm, A), protos (B, nm, H/4, W/4))`` as CPU (or device) tensors,
plus what the predictor needs to drive it (``config``, ``strides``, ``provenance``, the fixed input
``shape`` of a static export). Everything above (letterbox, NMS, full-image box rule, masks,
prompts, records) is the same code for all of them.

:func:`open_backend` chooses by content, as weight files are: an ONNX file, an OpenVINO IR (the
``.xml`` or the directory holding it), or a weight file for PyTorch, which can also be converted on
the fly for ``backend="onnxruntime" | "openvino"``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from ..config import ModelConfig
from ..errors import CheckpointError, FastSAMError
from ..extras import installed

__all__ = ["BACKENDS", "Backend", "available_backends", "open_backend", "sniff_model"]

BACKENDS = ("torch", "onnxruntime", "openvino")


class Backend(Protocol):
    """The forward pass of one model (see the module docstring)."""

    name: str
    config: ModelConfig
    strides: tuple[int, ...]
    provenance: dict[str, Any]
    #: (H, W) a static export takes (images are letterboxed to it); None = any multiple of 32
    shape: tuple[int, int] | None
    #: the recommended input long side
    default_imgsz: int

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]: ...


def available_backends() -> list[str]:
    """The backends whose runtime is installed (``torch`` always)."""
    return ["torch"] + [b for b in BACKENDS[1:] if installed(b)]


def _openvino_xml(path: Path) -> Path | None:
    if path.is_dir():
        xmls = sorted(path.glob("*.xml"))
        if len(xmls) > 1:
            raise CheckpointError(
                f"{path}: holds several OpenVINO models ({', '.join(p.name for p in xmls)}); pass the .xml"
            )
        return xmls[0] if xmls else None
    with path.open("rb") as fh:
        head = fh.read(512).lstrip()
    return path if head.startswith(b"<?xml") or head.startswith(b"<net") else None


def sniff_model(path: str | Path) -> str:
    """What a model path holds: ``"openvino"`` (an IR ``.xml`` or a directory with one), ``"onnx"``
    or ``"weights"`` (anything else: the weight loader tells pickles and safetensors apart, and
    refuses the rest)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: model file not found")
    if path.is_dir():
        if _openvino_xml(path) is not None:
            return "openvino"
        raise CheckpointError(f"{path}: is a directory without an OpenVINO model (.xml), expected a model file")
    if _openvino_xml(path) is not None:
        return "openvino"
    with path.open("rb") as fh:
        head = fh.read(2)
    # ONNX ModelProto starts with field 1 (ir_version, varint: tag 0x08) and a small version number
    if len(head) == 2 and head[0] == 0x08 and 3 <= head[1] <= 30:
        return "onnx"
    return "weights"


def open_backend(
    model: Any,
    backend: str | None = None,
    device: torch.device | None = None,
    fuse: bool = True,
    channels_last: bool | None = None,
    half: bool = False,
    compile: bool = False,
) -> Backend:
    """Open ``model`` (a path, or a built ``FastSAMNet``) on ``backend`` (None: by content).

    A weight file with ``backend="onnxruntime"`` or ``"openvino"`` is exported to a dynamic-shape
    graph in memory first (seconds; nothing is written beside it). Exported graphs run on the CPU.
    ``half``: fp16 network on the torch backend with a CUDA device; bf16 on the openvino backend
    (CPUs with bf16 units). Refused elsewhere. ``compile``: ``torch.compile`` the network (torch
    backend only; each new input shape compiles once, on its first call).
    """
    if backend is not None and backend not in BACKENDS:
        raise FastSAMError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    device = device or torch.device("cpu")
    kind = "weights" if not isinstance(model, (str, Path)) else sniff_model(model)
    if kind != "weights" and backend == "torch":
        raise FastSAMError(
            f"{model}: is an exported {kind} model; it runs on backend "
            f"{'onnxruntime' if kind == 'onnx' else 'openvino'}, not torch"
        )
    if kind == "openvino" and backend == "onnxruntime":
        raise FastSAMError(f"{model}: is an OpenVINO model; ONNX Runtime cannot run it (export with --format onnx)")
    wanted = backend or {"weights": "torch", "onnx": "onnxruntime", "openvino": "openvino"}[kind]
    if wanted != "torch" and device.type != "cpu":
        raise FastSAMError(f"backend {wanted} runs on the CPU here; got device {device} (use backend='torch')")
    if half and wanted != "openvino" and not (wanted == "torch" and device.type == "cuda"):
        raise FastSAMError(
            f"half precision is offered on the openvino backend (bf16 on CPUs that have it); backend {wanted} "
            "runs fp32 (use backend='openvino', or drop half)"
        )
    if compile and wanted != "torch":
        raise FastSAMError(f"compile is torch.compile, for backend 'torch'; backend {wanted} compiles its own graph")
    if wanted == "torch":
        from .pytorch import TorchBackend

        return TorchBackend(model, device, fuse=fuse, channels_last=channels_last, half=half, compile=compile)
    if wanted == "onnxruntime":
        from .ort import OrtBackend

        return OrtBackend.from_weights(model) if kind == "weights" else OrtBackend(model)
    from .openvino import OpenVINOBackend

    return OpenVINOBackend.from_weights(model, half) if kind == "weights" else OpenVINOBackend(model, half=half)
