"""``fastsam val``: class-agnostic COCO box and mask metrics of everything mode on a dataset.

Checks what it can before loading a model or touching a file, so that a refused command changes nothing.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import FastSAMError
from ..io.atomic import write_atomic

__all__ = ["val"]


def val(args: argparse.Namespace) -> int:
    import logging

    from ..config import PredictConfig
    from ..devices import resolve_device
    from ..train.evaluate import default_imgsz, evaluate, format_table, metrics_json, open_dataset
    from ._runtime import open_model

    # Check the cheap things (options, device, dataset) before loading a model.
    resolve_device(args.device)
    PredictConfig(imgsz=1024 if args.imgsz is None else args.imgsz, conf=args.conf, iou=args.iou, max_det=args.max_det)
    if args.limit is not None and args.limit < 1:
        raise FastSAMError(f"--limit must be >= 1, got {args.limit}")
    ds_logger = logging.getLogger("fastsam.data.datasets")
    if not ds_logger.handlers:  # problems are summarised below, not logged one by one
        ds_logger.addHandler(logging.NullHandler())
    dataset, fmt = open_dataset(args.data, args.format)
    if len(dataset) == 0:
        first = f" (first problem: {dataset.problems[0].file}: {dataset.problems[0].what})" if dataset.problems else ""
        raise FastSAMError(f"{args.data}: no images to evaluate{first}")
    if args.model is None:
        from ..weights import default_model_path

        args.model = default_model_path()
    model = open_model(args)
    imgsz = default_imgsz(model) if args.imgsz is None else args.imgsz
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    metrics = evaluate(
        model,
        dataset,
        imgsz=imgsz,
        conf=args.conf,
        iou=args.iou,
        max_det=args.max_det,
        limit=args.limit,
        progress=progress,
    )
    problems = dataset.problems
    for p in problems[:5]:
        print(f"fastsam: warning: {p.file}: {p.what}", file=sys.stderr)
    if problems:
        print(
            f"fastsam: warning: the dataset reported {len(problems)} problem(s)"
            + (" (first 5 shown)" if len(problems) > 5 else ""),
            file=sys.stderr,
        )
    record = {
        **metrics,
        "data": str(args.data),
        "format": fmt,
        "model": str(args.model),
        "imgsz": imgsz,
        "conf": args.conf,
        "iou": args.iou,
        "max_det": args.max_det,
        "problems": len(problems),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out / "metrics.json", metrics_json(record))
    print(format_table(metrics))
    print(
        f"{metrics['images']} images, {metrics['instances']} instances, {metrics['detections']} detections, "
        f"{metrics['seconds']:.1f} s -> {args.out / 'metrics.json'}"
    )
    return 0
