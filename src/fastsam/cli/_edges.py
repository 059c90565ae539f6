"""``fastsam edges IMAGE...``: the zero-shot edge recipe on images, one 8-bit PNG each (OUT/<stem>_edges.png).

Outputs are refused before any work when one would replace an input or two inputs share a stem.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import FastSAMError

__all__ = ["edges"]


def edges(args: argparse.Namespace) -> int:
    from ..config import PredictConfig
    from ..io.images import load_image
    from ..zeroshot.edges import edge_map, save_png
    from ._zeroshot import load_model

    PredictConfig(imgsz=1024 if args.imgsz is None else args.imgsz, conf=args.conf, iou=args.iou, max_det=args.max_det)
    targets: dict[Path, Path] = {}
    inputs = {src.resolve() for src in args.sources}
    for src in args.sources:
        if not src.is_file():
            raise FastSAMError(f"{src}: no such image file")
        dst = args.out / f"{src.stem}_edges.png"
        if dst.resolve() in inputs:
            raise FastSAMError(f"{dst}: the output would replace an input; choose another --out")
        if dst in targets:
            raise FastSAMError(f"{src} and {targets[dst]} would both write {dst}")
        targets[dst] = src
    model, imgsz = load_model(args)
    cfg = PredictConfig(imgsz=imgsz, conf=args.conf, iou=args.iou, max_det=args.max_det)
    args.out.mkdir(parents=True, exist_ok=True)
    for dst, src in targets.items():
        save_png(dst, edge_map(model, load_image(src), cfg))
        print(dst)
    return 0
