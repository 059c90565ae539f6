"""``fastsam zeroshot edges|proposals|instances``: the paper's zero-shot evaluations (see :mod:`fastsam.zeroshot`).

Options, dataset layout and the output directory are checked before a model is loaded. Under
torchrun every rank evaluates its share; rank 0 merges, writes OUT/metrics.json and prints.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["load_model", "zeroshot"]


def load_model(args: argparse.Namespace, world: int = 1) -> tuple[Any, int]:
    """The model of ``--model`` (default: the demo model) on ``--device`` (cuda -> cuda:LOCAL_RANK under
    torchrun) and the imgsz to run it at."""
    from ..devices import resolve_device
    from ..shard import Shard, local_device
    from ..train.evaluate import default_imgsz
    from ._runtime import open_model

    device = local_device(args.device, Shard(0, world))
    resolve_device(device)
    if args.model is None:
        from ..weights import default_model_path

        args.model = default_model_path()
    model = open_model(args, device)
    return model, default_imgsz(model) if args.imgsz is None else args.imgsz


def zeroshot(args: argparse.Namespace) -> int:
    from ..config import PredictConfig
    from ..shard import shard_from_env
    from ..zeroshot._runner import RunOptions
    from ..zeroshot.report import format_rows

    shard = shard_from_env()
    # a bad value costs nothing: checked before the dataset or the model is touched
    PredictConfig(imgsz=1024 if args.imgsz is None else args.imgsz, conf=args.conf, iou=args.iou, max_det=args.max_det)
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    run = RunOptions(limit=args.limit, resume=args.resume, shard=shard, progress=progress)
    uses_model = not (args.task == "edges" and args.pred_dir) and not (args.task == "proposals" and args.pred)
    model, imgsz = load_model(args, shard.world) if uses_model else (None, 1024)
    cfg = PredictConfig(imgsz=imgsz, conf=args.conf, iou=args.iou, max_det=args.max_det)
    options = {"model": str(args.model)} if uses_model else {}
    common: dict[str, Any] = {"predictor": model, "config": cfg, "options": options, "run": run}
    table = args.task + ("-lvis" if getattr(args, "lvis", False) else "")
    if args.task == "edges":
        from ..zeroshot.edges import evaluate_edges

        metrics = evaluate_edges(args.data, args.out, pred_dir=args.pred_dir, split=args.split, **common)
    elif args.task == "proposals":
        from ..zeroshot.proposals import evaluate_proposals

        metrics = evaluate_proposals(args.ann, args.out, data=args.data, pred=args.pred, lvis=args.lvis, **common)
    else:
        from ..zeroshot.instances import evaluate_instances

        metrics = evaluate_instances(args.ann, args.boxes, args.data, args.out, lvis=args.lvis, **common)
    if metrics is None:  # another rank than 0: its share is in OUT/parts
        return 0
    print(format_rows(metrics, table))
    if table == "proposals-lvis":
        print(format_rows(metrics, table, [f"mask_AR_{g}@1000" for g in ("rare", "common", "frequent")]))
    skipped = f", {metrics['skipped']} skipped" if metrics.get("skipped") else ""
    print(f"{metrics['images']} images{skipped}, {metrics['seconds']:.1f} s -> {args.out / 'metrics.json'}")
    return 0
