"""``fastsam convert``: a released ``.pt``, a safetensors file or a training run's ``last.pt`` to fastsam's safetensors.

Checks what it can before loading a model or touching a file, so that a refused command changes nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import FastSAMError

__all__ = ["convert"]


def convert(args: argparse.Namespace) -> int:
    import torch

    from ..io.checkpoint import convert as convert_weights

    dtype = {"keep": None, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    if not args.src.is_file():
        raise FastSAMError(
            f"{args.src}: "
            + ("is a directory, expected a weight file" if args.src.is_dir() else "weight file not found")
        )
    if args.dst.is_dir():
        raise FastSAMError(
            f"{args.dst} is a directory; give the output file's path, e.g. {args.dst / 'model.safetensors'}"
        )
    if args.dst.exists() and (args.dst.resolve() == args.src.resolve() or args.dst.samefile(args.src)):
        raise FastSAMError(f"output {args.dst} would overwrite the input {args.src}; choose another path")
    if _is_training_checkpoint(args.src):
        from ..train.trainer import export_checkpoint

        if args.predict_imgsz is not None and (args.predict_imgsz < 32 or args.predict_imgsz % 32):
            raise FastSAMError(f"--predict-imgsz must be a positive multiple of 32, got {args.predict_imgsz}")
        path = export_checkpoint(args.src, args.dst, dtype=dtype, predict_imgsz=args.predict_imgsz)
    else:
        if args.predict_imgsz is not None:
            raise FastSAMError("--predict-imgsz applies to training checkpoints (OUT/weights/last.pt) only")
        path = convert_weights(args.src, args.dst, dtype=dtype)
    print(f"wrote {path}", file=sys.stderr)
    return 0


def _is_training_checkpoint(path: Path) -> bool:
    """A ``fastsam train`` ``last.pt`` (plain tensors and numbers, read with ``weights_only=True``)."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # anything else (released .pt, safetensors, garbage) goes through `convert`
        return False
    return isinstance(state, dict) and state.get("format") == "fastsam-train"
