"""How the commands that run a model open it: ``--backend``, ``--half``, ``--post``, ``--compile``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..predictor import FastSAM

__all__ = ["BACKEND_CHOICES", "POST_CHOICES", "add_runtime_options", "open_model"]

#: fastsam.backends.BACKENDS, spelled out: importing the backends (and torch) costs every command time
BACKEND_CHOICES = ("torch", "onnxruntime", "openvino")
#: fastsam.predictor.POST_MODES, likewise
POST_CHOICES = ("auto", "kernels", "device")


def add_runtime_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--backend",
        choices=BACKEND_CHOICES,
        help="runtime of the network (default: by the model file: weights -> torch, .onnx -> onnxruntime, "
        "OpenVINO -> openvino); weights on onnxruntime/openvino are converted in memory",
    )
    p.add_argument(
        "--half",
        action="store_true",
        help="half precision: fp16 network on a CUDA device (torch backend), bf16 on the openvino backend "
        "(CPUs with bf16 units: AVX512-BF16, AMX); post-processing stays fp32",
    )
    p.add_argument(
        "--post",
        choices=POST_CHOICES,
        default="auto",
        help="where post-processing runs: kernels (C kernels on the host), device (torch on the network's "
        "device); default auto: kernels on the CPU, device elsewhere",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the network (torch backend): each new input shape compiles on its first image "
        "(seconds to a minute), later ones run faster; for videos and batches of one size",
    )


def open_model(args: argparse.Namespace, device: Any = None) -> FastSAM:
    """The ``--model`` of ``args`` on ``device`` (default ``--device``), with the runtime options above
    and no result cache (a command never asks twice about one image)."""
    from ..predictor import FastSAM

    return FastSAM(
        args.model,
        device=args.device if device is None else device,
        cache_size=0,
        backend=args.backend,
        half=args.half,
        post=getattr(args, "post", "auto"),
        compile=getattr(args, "compile", False),
    )
