"""``fastsam serve``: the web page and HTTP API (the ``serve`` extra).

Checks what it can before loading a model or touching a file, so that a refused command changes nothing.
"""

from __future__ import annotations

import argparse

from ..errors import FastSAMError

__all__ = ["serve"]


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
        post=args.post,
        compile=args.compile,
    )
