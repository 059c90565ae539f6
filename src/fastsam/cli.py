"""Command line: ``fastsam segment`` and ``fastsam convert``.

User errors (missing or corrupt files, bad options) print one line on stderr and exit with 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Sequence

from .errors import FastSAMError

__all__ = ["main"]

EXIT_USAGE = 2


def _add_segment_options(p: argparse.ArgumentParser) -> None:
    from .config import PredictConfig

    d = PredictConfig()
    p.add_argument("--model", "-m", required=True, help="weight file: a released FastSAM .pt or a fastsam .safetensors")
    p.add_argument("--imgsz", type=int, default=d.imgsz, help=f"network input long side (default {d.imgsz})")
    p.add_argument("--conf", type=float, default=d.conf, help=f"score threshold (default {d.conf})")
    p.add_argument("--iou", type=float, default=d.iou, help=f"NMS IoU threshold (default {d.iou})")
    p.add_argument("--max-det", type=int, default=d.max_det, help=f"maximum masks per image (default {d.max_det})")
    p.add_argument("--no-retina", action="store_true", help="low-resolution mask path of the original (default: retina masks)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--out", "-o", type=Path, default=Path("out"), help="output directory (default ./out)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: when stderr is a terminal)")  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastsam", description="Fast Segment Anything (FastSAM).")
    parser.add_argument("--version", action="version", version=f"fastsam {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    seg = sub.add_parser(
        "segment",
        help="segment everything in images",
        description="Segment everything; writes OUT/<stem>.json (SAM coco_rle records) and OUT/<stem>.png (overlay).",
    )
    seg.add_argument("sources", nargs="+", help="image files or directories")
    _add_segment_options(seg)
    conv = sub.add_parser("convert", help="convert weights to fastsam's safetensors format")
    conv.add_argument("src", type=Path, help="weight file (released .pt or .safetensors)")
    conv.add_argument("dst", type=Path, help="output .safetensors file")
    conv.add_argument("--dtype", choices=["keep", "fp16", "fp32"], default="keep", help="tensor precision (default keep)")
    return parser


def _version() -> str:
    from . import __version__

    return __version__


def _unique_stem(name: str, used: set[str]) -> str:
    stem = Path(name).stem or "image"
    candidate, n = stem, 1
    while candidate in used:  # two inputs with the same stem must not overwrite each other
        candidate = f"{stem}_{n}"
        n += 1
    used.add(candidate)
    return candidate


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _segment(args: argparse.Namespace) -> int:
    import io

    from PIL import Image

    from .config import PredictConfig
    from .io.images import iter_sources, load_image
    from .predictor import FastSAM
    from .viz import overlay

    cfg = PredictConfig(imgsz=args.imgsz, conf=args.conf, iou=args.iou, retina_masks=not args.no_retina,
                        max_det=args.max_det)  # fmt: skip
    items = [item for src in args.sources for item in iter_sources(src)]
    model = FastSAM(args.model, device=args.device, cache_size=0)
    args.out.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    failures = 0
    progress = _progress(items, args.progress)
    for name, source in progress:
        try:
            rgb = load_image(source)
        except FastSAMError as exc:
            print(f"fastsam: error: {exc}", file=sys.stderr)
            failures += 1
            continue
        segments = model.segment(rgb, cfg)
        stem = _unique_stem(name, used)
        records = segments.to_records()
        _write_atomic(args.out / f"{stem}.json", json.dumps(records).encode())
        buf = io.BytesIO()
        Image.fromarray(overlay(rgb, segments)).save(buf, format="PNG")
        _write_atomic(args.out / f"{stem}.png", buf.getvalue())
        if not getattr(progress, "disable", True):
            progress.set_postfix_str(f"{stem}: {len(segments)} masks")
        elif args.progress is None:
            print(f"{name}: {len(segments)} masks -> {args.out / stem}.json, .png", file=sys.stderr)
    return EXIT_USAGE if failures else 0


def _progress(items: list, enabled: bool | None):
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is optional: plain iteration
        return iter(items)
    disable = None if enabled is None else not enabled
    if enabled is None and len(items) < 2:
        disable = True
    return tqdm(items, desc="segment", unit="img", disable=disable, file=sys.stderr)


def _convert(args: argparse.Namespace) -> int:
    import torch

    from .io.checkpoint import convert

    dtype = {"keep": None, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    if args.dst.exists() and args.dst.resolve() == args.src.resolve():
        raise FastSAMError("output would overwrite the input; choose another path")
    path = convert(args.src, args.dst, dtype=dtype)
    print(f"wrote {path}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fastsam`` command; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "segment":
            return _segment(args)
        return _convert(args)
    except FastSAMError as exc:
        print(f"fastsam: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # unwritable output directory, disk full ...
        print(f"fastsam: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("fastsam: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
