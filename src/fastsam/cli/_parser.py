"""The ``fastsam`` argument parser: its commands and their options (value types in ``_values``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ._parser_label import add_label_parser
from ._parser_shard import add_shard_options
from ._parser_tile import add_tile_options
from ._parser_video import add_video_options
from ._parser_zeroshot import add_zeroshot_parsers
from ._runtime import add_runtime_options
from ._values import (
    DEFAULT_MAX_IMGSZ,
    DEFAULT_MAX_PIXELS,
    UsageError,
    _Parser,
    box,
    finite,
    normalise_argv,
    point,
    positive_int,
    size,
)

__all__ = ["DEFAULT_MAX_IMGSZ", "DEFAULT_MAX_PIXELS", "UsageError", "build_parser", "normalise_argv"]


class _VersionAction(argparse.Action):
    """``--version``: the version, and which implementation of the per-pixel kernels runs (looked up
    only when asked, so that other commands do not load the library for it)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        from .. import __version__
        from ..backends import available_backends
        from ..ops import _native

        kernels = "built" if _native.available() else "not built or disabled: numpy/torchvision fallbacks, slower"
        print(f"fastsam {__version__} (C kernels: {kernels}; backends: {', '.join(available_backends())})")
        parser.exit()


def _add_segment_options(p: argparse.ArgumentParser) -> None:
    from ..config import PredictConfig

    d = PredictConfig()
    p.add_argument(
        "--model",
        "-m",
        type=Path,
        help="weight file (a released FastSAM .pt or a fastsam .safetensors) or an exported model (.onnx, "
        "OpenVINO directory or .xml); default: the shipped demo model, trained on synthetic shapes only",
    )
    add_runtime_options(p)
    p.add_argument(
        "--imgsz",
        type=positive_int,
        help=f"network input long side (default: the size the model was trained at, else {d.imgsz})",
    )
    p.add_argument("--conf", type=finite, default=d.conf, help=f"score threshold (default {d.conf})")
    p.add_argument("--iou", type=finite, default=d.iou, help=f"NMS IoU threshold (default {d.iou})")
    p.add_argument(
        "--max-det", type=positive_int, default=d.max_det, help=f"maximum masks per image (default {d.max_det})"
    )
    p.add_argument(
        "--no-retina", action="store_true", help="low-resolution mask path of the original (default: retina masks)"
    )
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument(
        "--batch", type=positive_int, default=1, help="images of one letterboxed shape per forward pass (default 1)"
    )
    p.add_argument(
        "--out",
        "-o",
        type=Path,
        default=Path("out"),
        help="output directory (default ./out); outputs never replace an input file",
    )
    p.add_argument(
        "--max-pixels",
        type=positive_int,
        default=DEFAULT_MAX_PIXELS,
        help=f"largest image accepted, width x height (default {DEFAULT_MAX_PIXELS}); checked from the "
        "file header before decoding",
    )
    p.add_argument(
        "--max-imgsz",
        type=positive_int,
        default=DEFAULT_MAX_IMGSZ,
        help=f"largest --imgsz accepted (default {DEFAULT_MAX_IMGSZ}; memory grows with its square)",
    )
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: when stderr is a terminal)",
    )
    add_shard_options(p)
    add_tile_options(p)
    add_video_options(p)


_MODEL_HELP = "weight file or exported model (.onnx, OpenVINO directory); default: the shipped demo model"


_TRAIN_OPTIONS = (
    ("imgsz", positive_int, 640, "square training input size, a multiple of 32 (default 640)"),
    ("epochs", positive_int, 100, "epochs (default 100)"),
    ("batch", positive_int, 16, "global batch size, split over processes (default 16)"),
    ("optimizer", str, "auto", "SGD, AdamW or auto (default auto: YOLOv8's choice by run length)"),
    ("lr0", finite, 0.01, "initial learning rate (ignored by optimizer auto)"),
    ("lrf", finite, 0.01, "final learning rate as a fraction of lr0"),
    ("weight_decay", finite, 5e-4, "weight decay at the nominal batch 64"),
    ("warmup_epochs", finite, 3.0, "warm-up epochs (at least 100 iterations)"),
    ("close_mosaic", int, 10, "turn mosaic off for the last N epochs"),
    ("mosaic", finite, 1.0, "mosaic probability"),
    ("scale", finite, 0.5, "random scale gain range"),
    ("translate", finite, 0.1, "random translation (fraction of imgsz)"),
    ("fliplr", finite, 0.5, "horizontal flip probability"),
    ("reg_max", positive_int, None, "DFL bins of a fresh network (default 16; 26 for x, as FastSAM-x)"),
    ("workers", int, 2, "data-loading worker processes per training process"),
    ("seed", int, 0, "random seed (initialisation, shuffling, augmentation)"),
    ("device", str, "cpu", "torch device: cpu or cuda (each torchrun process uses cuda:LOCAL_RANK)"),
    ("val_period", positive_int, 1, "validate every N epochs"),
    ("limit", positive_int, None, "use only the first N training images"),
)
TRAIN_OPTION_NAMES = tuple(name for name, *_ in _TRAIN_OPTIONS)


def _add_image_commands(sub: Any) -> None:
    seg = sub.add_parser(
        "segment",
        help="segment everything in images",
        description="Segment everything; writes OUT/<stem>.json (SAM coco_rle records), OUT/<stem>.png (overlay) and "
        "OUT/index.json (each input's files and number of records, or its error). A run whose outputs would replace "
        "one of its input files is refused before any work. Many processes: torchrun --nproc_per_node N -m "
        "fastsam.cli segment ... (each takes every N-th input).",
    )
    seg.add_argument("sources", nargs="+", help="image files, directories or .tar shards")
    _add_segment_options(seg)
    pr = sub.add_parser(
        "prompt",
        help="select masks by points, boxes or text",
        description="Everything mode, then prompt selection; writes OUT/<stem>.json (one record per selected or "
        "merged mask; boxes in the order given; a prompt that selects nothing gets an empty record), "
        "OUT/<stem>.png and OUT/index.json.",
    )
    pr.add_argument("sources", nargs="+", help="image files, directories or .tar shards")
    pr.add_argument(
        "--point",
        action="append",
        type=point,
        default=[],
        metavar="X,Y[,LABEL]",
        help="point in original pixels; LABEL 1 = foreground (default), 0 = background",
    )
    pr.add_argument(
        "--box",
        action="append",
        type=box,
        default=[],
        metavar="X1,Y1,X2,Y2",
        help="box in original pixels, clipped to the image; one result per box, in order",
    )
    pr.add_argument("--text", action="append", default=[], help="text prompt (CLIP; needs the 'text' extra)")
    pr.add_argument(
        "--clip-weights",
        type=Path,
        help="local CLIP weights (open_clip or OpenAI ViT-B-32 file; default: the shipped demo CLIP, "
        "which knows only synthetic scenes)",
    )
    pr.add_argument("--clip-model", help="open_clip model name of --clip-weights (default ViT-B-32)")
    pr.add_argument("--text-threshold", type=finite, help="select every mask at or above this CLIP similarity")
    pr.add_argument(
        "--point-mode",
        choices=["merge", "individual"],
        default="merge",
        help="merge: the original's single merged mask; individual: every mask hit",
    )
    _add_segment_options(pr)


def _add_other_commands(sub: Any) -> None:
    conv = sub.add_parser(
        "convert", help="convert weights (or a training run's last.pt) to fastsam's safetensors format"
    )
    conv.add_argument("src", type=Path, help="weight file (released .pt or .safetensors)")
    conv.add_argument("dst", type=Path, help="output .safetensors file (never the input)")
    conv.add_argument(
        "--dtype", choices=["keep", "fp16", "fp32"], default="keep", help="tensor precision (default keep)"
    )
    conv.add_argument(
        "--predict-imgsz",
        type=positive_int,
        help="record this default inference size in the output (training checkpoints only)",
    )
    syn = sub.add_parser(
        "synth",
        help="write synthetic training scenes (SA-1B layout)",
        description="Deterministic synthetic scenes: OUT/sa_000001.jpg + OUT/sa_000001.json (SA-1B per-image JSON).",
    )
    syn.add_argument("--n", type=int, default=100, help="number of images (default 100)")
    syn.add_argument("--out", "-o", type=Path, required=True, help="output directory")
    syn.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    syn.add_argument(
        "--size",
        type=int,
        nargs=2,
        default=[480, 640],
        metavar=("H", "W"),
        help="image height and width in pixels (default 480 640)",
    )
    val = sub.add_parser(
        "val",
        help="class-agnostic COCO box and mask metrics on a dataset",
        description="Everything mode on every image of a dataset; prints AP / AR (all instances one class, "
        "maxDets 10, 100, 1000) and writes OUT/metrics.json.",
    )
    val.add_argument("--data", type=Path, required=True, help="dataset directory (or SA-1B .tar, COCO .json)")
    val.add_argument(
        "--format",
        default="auto",
        metavar="{auto,sa1b,coco,yolo}",
        help="dataset layout (default auto: detected from the directory contents)",
    )
    val.add_argument("--model", "-m", type=Path, help=_MODEL_HELP)
    add_runtime_options(val)
    val.add_argument("--out", "-o", type=Path, default=Path("out"), help="output directory (default ./out)")
    val.add_argument(
        "--imgsz", type=positive_int, help="network input long side (default: the model's training size, else 1024)"
    )
    val.add_argument("--conf", type=finite, default=0.001, help="score threshold (default 0.001)")
    val.add_argument("--iou", type=finite, default=0.7, help="NMS IoU threshold (default 0.7)")
    val.add_argument("--max-det", type=positive_int, default=1000, help="maximum masks per image (default 1000)")
    val.add_argument("--limit", type=int, help="evaluate only the first N images")
    val.add_argument("--device", default="cpu", help="torch device (default cpu)")
    val.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: when stderr is a terminal)",
    )
    tr = sub.add_parser(
        "train",
        help="train or fine-tune on a dataset (one process, or many under torchrun)",
        description="Train a fresh network (--model n|s|m|l|x) or fine-tune a weight file. Writes OUT/log.jsonl "
        "(losses per iteration), OUT/metrics.jsonl (with --val-data), OUT/weights/last.pt (resumable) and "
        "OUT/weights/model.safetensors (EMA weights). "
        "Multi-GPU / multi-node: torchrun --nproc_per_node N -m fastsam.cli train ...",
    )
    tr.add_argument("--data", type=Path, help="training dataset directory (SA-1B, COCO or YOLO layout)")
    tr.add_argument("--val-data", type=Path, help="validation dataset (metrics after each --val-period epochs)")
    tr.add_argument("--format", default="auto", metavar="{auto,sa1b,coco,yolo}", help="dataset layout (default auto)")
    tr.add_argument("--model", "-m", default="s", help="n|s|m|l|x (fresh) or a weight file to fine-tune (default s)")
    tr.add_argument("--resume", type=Path, help="continue a run from its OUT/weights/last.pt (other options ignored)")
    tr.add_argument("--out", "-o", type=Path, default=Path("runs/train"), help="output directory (default runs/train)")
    for name, typ, default, text in _TRAIN_OPTIONS:
        tr.add_argument(f"--{name.replace('_', '-')}", dest=name, type=typ, default=default, help=text)
    tr.add_argument("--cos-lr", action="store_true", help="cosine learning-rate decay (default linear)")
    tr.add_argument("--no-ema", action="store_true", help="do not keep an exponential moving average of the weights")
    tr.add_argument("--no-amp", action="store_true", help="fp32 on CUDA too (AMP is used on CUDA by default)")
    tr.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: when stderr is a terminal)",
    )


def _add_export_parser(sub: Any) -> None:
    ex = sub.add_parser(
        "export",
        help="export weights to ONNX or OpenVINO (fp32, fp16 or int8), with box decoding and metadata",
        description="Write the network and its box decoding as an ONNX file or an OpenVINO IR directory (.xml + "
        ".bin) that fastsam (FastSAM(path), --model PATH) and examples/onnx_standalone.py run with every prompt. "
        "Needs the 'onnx' or 'openvino' extra.",
    )
    ex.add_argument(
        "weights", type=Path, help="weight file: released .pt, fastsam .safetensors or a training run's last.pt"
    )
    ex.add_argument(
        "--format", choices=["onnx", "openvino"], required=True, help="onnx (a .onnx file) or openvino (a directory)"
    )
    ex.add_argument(
        "--out",
        "-o",
        type=Path,
        help="output .onnx file or OpenVINO directory (default: beside the weights, WEIGHTS.onnx or "
        "WEIGHTS_openvino_model/); never the weights",
    )
    ex.add_argument(
        "--imgsz",
        type=size,
        metavar="N|H,W",
        help="input size, rounded up to multiples of 32 (default: the size the weights record, else 1024); "
        "a static export letterboxes every image to it",
    )
    ex.add_argument("--dynamic", action="store_true", help="dynamic batch and input size (default: static batch 1)")
    ex.add_argument("--int8", action="store_true", help="int8 post-training quantization (NNCF; --format openvino)")
    ex.add_argument(
        "--calib", nargs="+", metavar="DIR_OR_FILES", help="calibration images for --int8 (required with it)"
    )
    ex.add_argument("--calib-n", type=positive_int, default=64, help="use at most N calibration images (default 64)")
    ex.add_argument(
        "--fp16", action="store_true", help="store the weights as fp16 (half the file; compute stays fp32 on CPU)"
    )


def _add_serve_parser(sub: Any) -> None:
    from ..config import PredictConfig

    d = PredictConfig()
    srv = sub.add_parser(
        "serve",
        help="web page and HTTP API (needs the 'serve' extra)",
        description="Serve a web page (open an image, click, drag, type) and a JSON API (/openapi.json) for "
        "everything mode and prompts. Binds to 127.0.0.1 unless --host says otherwise.",
    )
    srv.add_argument("--model", "-m", type=Path, help=_MODEL_HELP)
    add_runtime_options(srv)
    srv.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    srv.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0 picks a free one)")
    srv.add_argument(
        "--max-pixels", type=positive_int, default=25_000_000, help="largest image, width x height (default 25000000)"
    )
    srv.add_argument("--max-upload-mb", type=finite, default=25.0, help="largest request body in MiB (default 25)")
    srv.add_argument(
        "--max-prompt-kb", type=positive_int, default=1024, help="largest prompt (JSON) body in KiB (default 1024)"
    )
    srv.add_argument(
        "--max-pending",
        type=positive_int,
        default=2,
        help="most uploads being read, decoded or waiting for the model at once; more get 503 with "
        "Retry-After (default 2; bounds memory)",
    )
    srv.add_argument(
        "--clip-weights", type=Path, help="local CLIP weights for text prompts (default: the shipped demo CLIP, if any)"
    )
    srv.add_argument("--clip-model", help="open_clip model name of --clip-weights")
    srv.add_argument(
        "--imgsz",
        type=positive_int,
        help=f"network input long side (default: the model's training size, else {d.imgsz})",
    )
    srv.add_argument("--conf", type=finite, default=d.conf, help=f"score threshold (default {d.conf})")
    srv.add_argument("--iou", type=finite, default=d.iou, help=f"NMS IoU threshold (default {d.iou})")
    srv.add_argument("--device", default="cpu", help="torch device (default cpu)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fastsam", description="Fast Segment Anything (FastSAM).")
    parser.add_argument(
        "--version",
        action=_VersionAction,
        help="show the version, whether the C kernels are built and the backends available",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_image_commands(sub)
    _add_other_commands(sub)
    _add_export_parser(sub)
    _add_serve_parser(sub)
    add_zeroshot_parsers(sub)
    add_label_parser(sub)
    return parser
