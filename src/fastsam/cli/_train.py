"""``fastsam train``: train or fine-tune (one process, or many under ``torchrun``).

Checks what it can before loading a model or touching a file, so that a refused command changes nothing.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import FastSAMError
from ._parser import TRAIN_OPTION_NAMES

__all__ = ["train"]


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
