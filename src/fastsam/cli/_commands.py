"""``fastsam convert``, ``synth``, ``train``, ``val`` and ``serve``: thin wrappers over the library.

Each checks what it can before loading a model or touching a file (options, devices, paths), so
that a refused command changes nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import FastSAMError
from ..io.atomic import write_atomic
from ._parser import TRAIN_OPTION_NAMES

__all__ = ["convert", "serve", "synth", "train", "val"]


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


def synth(args: argparse.Namespace) -> int:
    from ..data.synth import write_dataset

    if args.n < 0 or min(args.size) < 16:
        raise FastSAMError("--n must be >= 0 and --size H W at least 16 pixels each")
    paths = write_dataset(args.out, args.n, args.seed, size=(args.size[0], args.size[1]))
    print(f"wrote {len(paths)} images to {args.out}", file=sys.stderr)
    return 0


def train(args: argparse.Namespace) -> int:
    import logging

    from ..train.trainer import TrainConfig, Trainer

    if args.resume is None:
        from ..devices import resolve_device

        resolve_device(args.device)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    if args.resume is not None:
        trainer = Trainer.from_checkpoint(args.resume)
        trainer.progress = progress and trainer.dist.main
    else:
        if args.data is None:
            raise FastSAMError("give --data DIR (or --resume OUT/weights/last.pt)")
        if not args.data.exists():
            raise FastSAMError(f"{args.data}: no such dataset")
        options = {name: getattr(args, name) for name in TRAIN_OPTION_NAMES}
        cfg = TrainConfig(
            data=str(args.data),
            val_data=str(args.val_data) if args.val_data else None,
            data_format=args.format,
            model=args.model,
            out=str(args.out),
            cos_lr=args.cos_lr,
            ema=not args.no_ema,
            amp=not args.no_amp,
            **options,
        )
        trainer = Trainer(cfg, progress=progress)
    result = trainer.train(log=lambda s: print(s, file=sys.stderr))
    if trainer.dist.main:
        print(f"wrote {result.weights} and {result.out_dir / 'weights' / 'last.pt'}", file=sys.stderr)
    return 0


def val(args: argparse.Namespace) -> int:
    import logging

    from ..config import PredictConfig
    from ..devices import resolve_device
    from ..predictor import FastSAM
    from ..train.evaluate import default_imgsz, evaluate, format_table, metrics_json, open_dataset

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
    model = FastSAM(args.model, device=args.device, cache_size=0, backend=args.backend, half=args.half)
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


def serve(args: argparse.Namespace) -> int:
    from ..config import PredictConfig
    from ..devices import resolve_device

    resolve_device(args.device)
    if not 0 <= args.port <= 65535 or args.max_pixels < 1 or args.max_upload_mb <= 0:
        raise FastSAMError("--port must be in 0..65535, --max-pixels and --max-upload-mb positive")
    PredictConfig(
        imgsz=PredictConfig().imgsz if args.imgsz is None else args.imgsz, conf=args.conf, iou=args.iou
    )  # checked before loading
    try:
        from ..serve import run
    except ImportError as exc:  # fastapi / uvicorn are an optional extra
        raise FastSAMError(
            f"fastsam serve needs the 'serve' extra ({exc.name} is missing): pip install 'fastsam[serve]'"
        ) from exc
    return run(
        args.model,
        host=args.host,
        port=args.port,
        device=args.device,
        imgsz=args.imgsz,
        conf=args.conf,
        iou=args.iou,
        max_pixels=args.max_pixels,
        max_body_bytes=int(args.max_upload_mb * 1024 * 1024),
        max_prompt_bytes=args.max_prompt_kb * 1024,
        max_pending=args.max_pending,
        clip_weights=args.clip_weights,
        clip_model=args.clip_model,
        backend=args.backend,
        half=args.half,
    )
