"""``fastsam export``: weights -> an ONNX file or an OpenVINO IR that runs the whole pipeline.

The graph holds the network and the box decoding (:mod:`.graph`); the file holds its metadata
(:mod:`.metadata`); int8 is NNCF post-training quantization on the user's images (:mod:`.quantize`).
Everything is written atomically: a failed export leaves no partial file, and never replaces the
weights it was made from.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..config import recorded_imgsz
from ..errors import FastSAMError
from ..extras import require
from ..io.atomic import atomic_path
from ..nn.model import FastSAMNet
from .metadata import ExportMetadata, parse_metadata

__all__ = ["ExportMetadata", "build_metadata", "export_model", "input_shape", "parse_metadata", "prepare_network"]

FORMATS = ("onnx", "openvino")


def input_shape(imgsz: int | Sequence[int]) -> tuple[int, int]:
    """``N`` -> (N, N); ``(H, W)`` -> (H, W); each rounded up to a multiple of 32, as the predictor does."""
    sizes = [imgsz] if isinstance(imgsz, int) else list(imgsz)
    if len(sizes) == 1:
        sizes = sizes * 2
    if len(sizes) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or not 32 <= v <= 16384 for v in sizes):
        raise FastSAMError(f"imgsz must be N or H,W with each in [32, 16384], got {imgsz!r}")
    return int(math.ceil(sizes[0] / 32) * 32), int(math.ceil(sizes[1] / 32) * 32)


def prepare_network(weights: str | Path | FastSAMNet) -> tuple[FastSAMNet, dict[str, Any]]:
    """Load ``weights`` as a fused fp32 CPU network, with the provenance an export records."""
    from .. import __version__
    from ..io.checkpoint import load_model
    from ..nn.fuse import fuse_conv_bn

    source: dict[str, Any]
    if isinstance(weights, FastSAMNet):
        net, source = fuse_conv_bn(weights.float().cpu().eval()), {"weights": "<in-memory network>"}
        own = dict(getattr(weights, "provenance", None) or {})
    else:
        path = Path(weights)
        net = fuse_conv_bn(load_model(path), inplace=True)
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        source = {"weights": path.name, "weights_sha256": digest.hexdigest()}
        own = dict(getattr(net, "provenance", None) or {})
    import torch

    source.update(
        fastsam=__version__, torch=torch.__version__, exported=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    )
    if own:
        source["source_provenance"] = {k: v for k, v in own.items() if isinstance(v, (str, int, float, bool))}
    return net.eval(), source


def build_metadata(
    net: FastSAMNet,
    provenance: dict[str, Any],
    shape: tuple[int, int],
    dynamic: bool,
    imgsz: int,
    precision: str = "fp32",
    quantization: dict[str, Any] | None = None,
) -> ExportMetadata:
    return ExportMetadata(
        config=net.config,
        strides=tuple(net.strides),
        shape=None if dynamic else shape,
        batch=None if dynamic else 1,
        imgsz=imgsz,
        names={i: "object" for i in range(net.config.num_classes)},
        precision=precision,
        quantization=quantization or {},
        provenance=provenance,
    )


def _default_imgsz(net: FastSAMNet) -> int:
    return recorded_imgsz(dict(getattr(net, "provenance", None) or {}))


def export_model(
    weights: str | Path | FastSAMNet,
    format: str,
    out: str | Path,
    imgsz: int | Sequence[int] | None = None,
    dynamic: bool = False,
    int8: bool = False,
    calib: Any = None,
    calib_n: int = 64,
    fp16: bool = False,
    keep_fp32: Sequence[str] | None = None,
) -> Path:
    """Export ``weights`` to ``out`` and return the written model path (the ``.onnx``, or the IR's ``.xml``).

    Args:
        format: "onnx" (``out`` is the ``.onnx`` file) or "openvino" (``out`` is a directory that
            receives ``<name>.xml`` and ``.bin``).
        imgsz: N (an N x N input) or (H, W); default: the size the weights record, else 1024. With
            ``dynamic`` it is only the tracing size and the recommended imgsz.
        dynamic: free batch, height and width (multiples of 32); static (batch 1, ``imgsz``) otherwise.
        int8: NNCF post-training quantization (OpenVINO), calibrated on ``calib`` (a directory,
            image files or arrays; at most ``calib_n`` are used). Refused without calibration images.
        fp16: weights stored as float16 (compute stays fp32 on the CPU).
        keep_fp32: layer-name patterns left unquantized with int8 (default: :data:`.quantize.KEEP_FP32`).
    """
    if format not in FORMATS:
        raise FastSAMError(f"unknown export format {format!r}; expected one of {', '.join(FORMATS)}")
    if int8 and fp16:
        raise FastSAMError("choose one of int8 and fp16")
    if int8 and format != "openvino":
        raise FastSAMError("int8 export is for --format openvino (NNCF post-training quantization)")
    if int8 and calib is None:
        raise FastSAMError(
            "int8 export needs calibration images (--calib DIR_OR_FILES): "
            "quantizing on random noise would give wrong masks"
        )
    require("onnx")
    if format == "openvino":
        require("openvino")
    if int8:
        require("nncf")
    out = Path(out)
    if (
        not isinstance(weights, FastSAMNet)
        and Path(weights).exists()
        and out.exists()
        and out.resolve() == Path(weights).resolve()
    ):
        raise FastSAMError(f"{out}: the output would replace the weights it is exported from")
    net, provenance = prepare_network(weights)
    size = imgsz if imgsz is not None else _default_imgsz(net)
    shape = input_shape(size)
    calib_images = None
    if int8:
        from .quantize import load_calibration

        calib_images = load_calibration(calib, calib_n)  # fail on bad images before the slow export
    precision = "int8" if int8 else "fp16" if fp16 else "fp32"
    meta = build_metadata(net, provenance, shape, dynamic, max(shape), "fp32" if int8 else precision)
    if format == "onnx":
        from .graph import export_onnx

        if out.is_dir():
            raise FastSAMError(f"{out}: is a directory; --format onnx writes a .onnx file")
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out) as tmp:
            export_onnx(net, tmp, shape, meta, dynamic)
        return out
    return _export_openvino(net, out, shape, meta, dynamic, calib_images, keep_fp32)


def _export_openvino(
    net: FastSAMNet,
    out: Path,
    shape: tuple[int, int],
    meta: ExportMetadata,
    dynamic: bool,
    calib_images: list | None,
    keep_fp32: Sequence[str] | None,
) -> Path:
    from .graph import export_onnx
    from .openvino import save_openvino, to_openvino

    if out.exists() and not out.is_dir():
        raise FastSAMError(f"{out}: is a file; --format openvino writes a directory (.xml + .bin)")
    out.mkdir(parents=True, exist_ok=True)
    name = out.name.removesuffix("_openvino_model").removesuffix("_openvino") or "model"
    with tempfile.TemporaryDirectory(dir=out, prefix=".export-") as tmp:
        onnx_path = export_onnx(net, Path(tmp) / "model.onnx", shape, meta, dynamic)
        model = to_openvino(onnx_path)
        if calib_images is not None:
            from .quantize import quantize_openvino

            model, info = quantize_openvino(model, calib_images, shape, dynamic, keep_fp32)
            meta = ExportMetadata(**{**meta.__dict__, "precision": "int8", "quantization": info})
        staged = save_openvino(model, Path(tmp) / "ir", name, meta)
        # each file lands by an atomic rename: the directory never holds a half-written model
        for part in (staged.with_suffix(".bin"), staged):
            os.replace(part, out / part.name)
    for stale in out.glob(".export-*"):
        shutil.rmtree(stale, ignore_errors=True)
    return out / f"{name}.xml"
