"""``fastsam export``: weights -> an ONNX file or an OpenVINO directory (see :mod:`fastsam.export`).

Options are checked before the (slow) export starts; the library refuses what only it can judge
(an output that would replace the weights, int8 without calibration images, a missing extra).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..errors import FastSAMError

__all__ = ["export"]


def export(args: argparse.Namespace) -> int:
    from ..export import export_model

    if not args.weights.exists():
        raise FastSAMError(f"{args.weights}: weight file not found")
    if args.weights.is_dir():
        raise FastSAMError(f"{args.weights}: is a directory, expected a weight file (.pt or .safetensors)")
    if args.calib is not None and not args.int8:
        raise FastSAMError("--calib is for --int8 (the images int8 quantization is calibrated on)")
    if args.int8 and not args.calib:
        raise FastSAMError(
            "--int8 needs calibration images: --calib DIR_OR_FILES (a few dozen photos like the ones "
            "you will segment); quantizing without them would give wrong masks"
        )
    out = args.out if args.out is not None else _default_out(args)
    started = time.perf_counter()
    path = export_model(
        args.weights,
        args.format,
        out,
        imgsz=args.imgsz,
        dynamic=args.dynamic,
        int8=args.int8,
        calib=args.calib if args.calib is None or len(args.calib) > 1 else args.calib[0],
        calib_n=args.calib_n,
        fp16=args.fp16,
    )
    print(f"wrote {path} ({time.perf_counter() - started:.1f} s)", file=sys.stderr)
    return 0


def _default_out(args: argparse.Namespace) -> Path:
    """``model.pt`` -> ``model.onnx`` / ``model_openvino_model/`` beside it (ultralytics' names)."""
    stem = args.weights.with_suffix("")
    if args.format == "onnx":
        return stem.with_name(stem.name + (".int8" if args.int8 else "") + ".onnx")
    return stem.with_name(stem.name + ("_int8" if args.int8 else "") + "_openvino_model")
