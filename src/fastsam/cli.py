"""Command line: ``fastsam segment``, ``prompt``, ``convert`` and ``synth``.

User errors (missing or corrupt files, bad options) print one line on stderr and exit with 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from .errors import FastSAMError

if TYPE_CHECKING:
    import numpy as np

    from .results import Segments

__all__ = ["main"]

EXIT_USAGE = 2


def _add_segment_options(p: argparse.ArgumentParser) -> None:
    from .config import PredictConfig

    d = PredictConfig()
    p.add_argument("--model", "-m", type=Path,
                   help="weight file: a released FastSAM .pt or a fastsam .safetensors (default: the shipped demo "
                   "model, trained on synthetic shapes only)")  # fmt: skip
    p.add_argument("--imgsz", type=int,
                   help=f"network input long side (default: the size the model was trained at, else {d.imgsz})")
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
    parser.add_argument("--version", action=_VersionAction, help="show the version and whether the C kernels are built")
    sub = parser.add_subparsers(dest="command", required=True)
    seg = sub.add_parser(
        "segment",
        help="segment everything in images",
        description="Segment everything; writes OUT/<stem>.json (SAM coco_rle records) and OUT/<stem>.png (overlay).",
    )
    seg.add_argument("sources", nargs="+", help="image files or directories")
    _add_segment_options(seg)
    pr = sub.add_parser(
        "prompt",
        help="select masks by points, boxes or text",
        description="Everything mode, then prompt selection; writes OUT/<stem>.json (one record per selected or "
        "merged mask; boxes in the order given) and OUT/<stem>.png.",
    )
    pr.add_argument("sources", nargs="+", help="image files or directories")
    pr.add_argument("--point", action="append", type=_point, default=[], metavar="X,Y[,LABEL]",
                    help="point in original pixels; LABEL 1 = foreground (default), 0 = background")
    pr.add_argument("--box", action="append", type=_box, default=[], metavar="X1,Y1,X2,Y2",
                    help="box in original pixels; one result per box, in order")
    pr.add_argument("--text", action="append", default=[], help="text prompt (CLIP)")
    pr.add_argument("--clip-weights", type=Path,
                    help="local CLIP weights (open_clip or OpenAI ViT-B-32 file; default: the shipped demo CLIP, "
                    "which knows only synthetic scenes)")  # fmt: skip
    pr.add_argument("--clip-model", help="open_clip model name of --clip-weights (default ViT-B-32)")
    pr.add_argument("--text-threshold", type=float, help="select every mask at or above this CLIP similarity")
    pr.add_argument("--point-mode", choices=["merge", "individual"], default="merge",
                    help="merge: the original's single merged mask; individual: every mask hit")  # fmt: skip
    _add_segment_options(pr)
    conv = sub.add_parser("convert", help="convert weights (or a training run's last.pt) to fastsam's safetensors format")
    conv.add_argument("src", type=Path, help="weight file (released .pt or .safetensors)")
    conv.add_argument("dst", type=Path, help="output .safetensors file")
    conv.add_argument("--dtype", choices=["keep", "fp16", "fp32"], default="keep", help="tensor precision (default keep)")
    conv.add_argument("--predict-imgsz", type=int,
                      help="record this default inference size in the output (training checkpoints only)")  # fmt: skip
    syn = sub.add_parser(
        "synth",
        help="write synthetic training scenes (SA-1B layout)",
        description="Deterministic synthetic scenes: OUT/sa_000001.jpg + OUT/sa_000001.json (SA-1B per-image JSON).",
    )
    syn.add_argument("--n", type=int, default=100, help="number of images (default 100)")
    syn.add_argument("--out", "-o", type=Path, required=True, help="output directory")
    syn.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    syn.add_argument("--size", type=int, nargs=2, default=[480, 640], metavar=("H", "W"),
                     help="image height and width in pixels (default 480 640)")  # fmt: skip
    val = sub.add_parser(
        "val",
        help="class-agnostic COCO box and mask metrics on a dataset",
        description="Everything mode on every image of a dataset; prints AP / AR (all instances one class, "
        "maxDets 10, 100, 1000) and writes OUT/metrics.json.",
    )
    val.add_argument("--data", type=Path, required=True, help="dataset directory (or SA-1B .tar, COCO .json)")
    val.add_argument("--format", default="auto", metavar="{auto,sa1b,coco,yolo}",
                     help="dataset layout (default auto: detected from the directory contents)")
    val.add_argument("--model", "-m", type=Path, help="weight file (default: the shipped demo model)")
    val.add_argument("--out", "-o", type=Path, default=Path("out"), help="output directory (default ./out)")
    val.add_argument("--imgsz", type=int,
                     help="network input long side (default: the model's training size, else 1024)")
    val.add_argument("--conf", type=float, default=0.001, help="score threshold (default 0.001)")
    val.add_argument("--iou", type=float, default=0.7, help="NMS IoU threshold (default 0.7)")
    val.add_argument("--max-det", type=int, default=1000, help="maximum masks per image (default 1000)")
    val.add_argument("--limit", type=int, help="evaluate only the first N images")
    val.add_argument("--device", default="cpu", help="torch device (default cpu)")
    val.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                     help="progress bar (default: when stderr is a terminal)")  # fmt: skip
    tr = sub.add_parser(
        "train",
        help="train or fine-tune on a dataset (one process, or many under torchrun)",
        description="Train a fresh network (--model n|s|m|l|x) or fine-tune a weight file. Writes OUT/log.jsonl "
        "(losses per iteration), OUT/metrics.jsonl (with --val-data), OUT/weights/last.pt (resumable) and "
        "OUT/weights/model.safetensors (EMA weights). Multi-GPU / multi-node: torchrun --nproc_per_node N -m fastsam.cli train ...",
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
    tr.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                    help="progress bar (default: when stderr is a terminal)")  # fmt: skip
    _add_serve_parser(sub)
    return parser


def _add_serve_parser(sub) -> None:
    from .config import PredictConfig

    d = PredictConfig()
    srv = sub.add_parser(
        "serve",
        help="web page and HTTP API (needs the 'serve' extra)",
        description="Serve a web page (open an image, click, drag, type) and a JSON API (/openapi.json) for "
        "everything mode and prompts. Binds to 127.0.0.1 unless --host says otherwise.",
    )
    srv.add_argument("--model", "-m", type=Path, help="weight file (default: the shipped demo model)")
    srv.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    srv.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0 picks a free one)")
    srv.add_argument("--max-pixels", type=int, default=25_000_000,
                     help="largest image, width x height (default 25000000)")  # fmt: skip
    srv.add_argument("--max-upload-mb", type=float, default=25.0, help="largest request body in MiB (default 25)")
    srv.add_argument("--clip-weights", type=Path,
                     help="local CLIP weights for text prompts (default: the shipped demo CLIP, if any)")  # fmt: skip
    srv.add_argument("--clip-model", help="open_clip model name of --clip-weights")
    srv.add_argument("--imgsz", type=int,
                     help=f"network input long side (default: the model's training size, else {d.imgsz})")  # fmt: skip
    srv.add_argument("--conf", type=float, default=d.conf, help=f"score threshold (default {d.conf})")
    srv.add_argument("--iou", type=float, default=d.iou, help=f"NMS IoU threshold (default {d.iou})")
    srv.add_argument("--device", default="cpu", help="torch device (default cpu)")


_TRAIN_OPTIONS = (
    ("imgsz", int, 640, "square training input size, a multiple of 32 (default 640)"),
    ("epochs", int, 100, "epochs (default 100)"),
    ("batch", int, 16, "global batch size, split over processes (default 16)"),
    ("optimizer", str, "auto", "SGD, AdamW or auto (default auto: YOLOv8's choice by run length)"),
    ("lr0", float, 0.01, "initial learning rate (ignored by optimizer auto)"),
    ("lrf", float, 0.01, "final learning rate as a fraction of lr0"),
    ("weight_decay", float, 5e-4, "weight decay at the nominal batch 64"),
    ("warmup_epochs", float, 3.0, "warm-up epochs (at least 100 iterations)"),
    ("close_mosaic", int, 10, "turn mosaic off for the last N epochs"),
    ("mosaic", float, 1.0, "mosaic probability"),
    ("scale", float, 0.5, "random scale gain range"),
    ("translate", float, 0.1, "random translation (fraction of imgsz)"),
    ("fliplr", float, 0.5, "horizontal flip probability"),
    ("reg_max", int, None, "DFL bins of a fresh network (default 16; 26 for x, as FastSAM-x)"),
    ("workers", int, 2, "data-loading worker processes per training process"),
    ("seed", int, 0, "random seed (initialisation, shuffling, augmentation)"),
    ("device", str, "cpu", "torch device: cpu or cuda (each torchrun process uses cuda:LOCAL_RANK)"),
    ("val_period", int, 1, "validate every N epochs"),
    ("limit", int, None, "use only the first N training images"),
)


def _numbers(text: str, counts: tuple[int, ...], what: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in counts:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return values


def _point(text: str) -> list[float]:
    v = _numbers(text, (2, 3), "X,Y or X,Y,LABEL")
    if len(v) == 3 and v[2] not in (0.0, 1.0):
        raise argparse.ArgumentTypeError(f"point label must be 0 or 1, got {text!r}")
    return v if len(v) == 3 else [*v, 1.0]


def _box(text: str) -> list[float]:
    return _numbers(text, (4,), "X1,Y1,X2,Y2")


def _version() -> str:
    from . import __version__

    return __version__


class _VersionAction(argparse.Action):
    """``--version``: the version, and which implementation of the per-pixel kernels runs (looked up
    only when asked, so that other commands do not load the library for it)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        from .ops import _native

        kernels = "built" if _native.available() else "not built or disabled: numpy/torchvision fallbacks, slower"
        print(f"fastsam {_version()} (C kernels: {kernels})")
        parser.exit()


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
    from .viz import overlay

    def handle(rgb, segments):
        return segments.to_records(), overlay(rgb, segments)

    return _run_images(args, handle)


def _prompt(args: argparse.Namespace) -> int:
    import numpy as np

    from .prompts import select_by_boxes, select_by_points
    from .results import Segments
    from .viz import draw_prompts, overlay_masks

    if not (args.point or args.box or args.text):
        raise FastSAMError("give at least one --point, --box or --text")
    scorer = None
    if args.text:
        from .text import get_scorer

        weights = args.clip_weights
        if weights is None:
            from .weights import default_clip_path

            try:
                weights = default_clip_path()
            except FastSAMError as exc:
                raise FastSAMError(f"--text needs --clip-weights PATH ({exc})") from exc
        scorer = get_scorer(weights, args.clip_model, args.device)
    points = [p[:2] for p in args.point]
    labels = [int(p[2]) for p in args.point]

    def handle(rgb, segments: Segments):
        parts: list[tuple[Segments, dict]] = []
        if points:
            sel = select_by_points(segments, points, labels, mode=args.point_mode)
            top = sel.indices[np.argmax(segments.scores[sel.indices])] if sel.indices.size else None
            merged = Segments.from_masks(
                sel.mask[None], np.array([segments.scores[top] if top is not None else 0.0]),
                np.array([segments.stability[top] if top is not None else 0.0]),
            )
            parts.append((merged, {"type": "points", "points": points, "labels": labels,
                                   "indices": sel.indices.tolist()}))  # fmt: skip
        if args.box:
            for box, k in zip(args.box, select_by_boxes(segments, args.box)):
                one = segments[[int(k)]] if k >= 0 else Segments.from_masks(
                    np.zeros((1, *segments.image_size), bool), np.zeros(1))
                parts.append((one, {"type": "box", "box": box, "indices": [int(k)] if k >= 0 else []}))
        if args.text:
            from .text import select_by_text

            for text, idx in zip(args.text, select_by_text(segments, rgb, args.text, scorer,
                                                             threshold=args.text_threshold)):  # fmt: skip
                for k in idx:
                    parts.append((segments[[int(k)]], {"type": "text", "text": text, "indices": [int(k)]}))
        records = []
        for seg, prompt in parts:
            for rec in seg.to_records():
                rec["prompt"] = prompt
                records.append(rec)
        masks = np.stack([seg.mask(0) for seg, _ in parts]) if parts else np.zeros((0, *rgb.shape[:2]), bool)
        image = draw_prompts(overlay_masks(rgb, masks), points=points, labels=labels, boxes=args.box)
        return records, image

    return _run_images(args, handle)


def _run_images(args: argparse.Namespace, handle) -> int:
    """Run everything mode on every source image and write what ``handle(rgb, segments)`` returns."""
    import io
    from concurrent.futures import Future, ThreadPoolExecutor

    from PIL import Image

    from .config import PredictConfig
    from .io.images import iter_sources, load_image
    from .predictor import FastSAM

    def options(default_imgsz: int) -> PredictConfig:
        return PredictConfig(imgsz=default_imgsz if args.imgsz is None else args.imgsz, conf=args.conf,
                             iou=args.iou, retina_masks=not args.no_retina, max_det=args.max_det)  # fmt: skip

    options(PredictConfig().imgsz)  # bad options fail before the model is loaded
    items = [item for src in args.sources for item in iter_sources(src)]
    model = FastSAM(args.model, device=args.device, cache_size=0)
    cfg = options(model.default_imgsz)  # the size the model was trained at, unless --imgsz says otherwise
    args.out.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    progress = _progress(items, args.progress)

    def finish(name: str, rgb: np.ndarray, segments: Segments) -> bool:
        """Records and picture of one image, written to OUT; False (reported) on a user error."""
        try:
            records, picture = handle(rgb, segments)
        except FastSAMError as exc:  # a prompt outside this image: report it, go on with the others
            print(f"fastsam: error: {name}: {exc}", file=sys.stderr)
            return False
        stem = _unique_stem(name, used)
        _write_atomic(args.out / f"{stem}.json", json.dumps(records).encode())
        buf = io.BytesIO()
        # zlib level 1: a preview image; level 6 (Pillow's default) takes ~2.5x longer for ~10% fewer bytes
        Image.fromarray(picture).save(buf, format="PNG", compress_level=1)
        _write_atomic(args.out / f"{stem}.png", buf.getvalue())
        if not getattr(progress, "disable", True):
            progress.set_postfix_str(f"{stem}: {len(segments)} masks")
        elif args.progress is None:
            print(f"{name}: {len(records)} records -> {args.out / stem}.json, .png", file=sys.stderr)
        return True

    # Writing an image's results (records, overlay, PNG: mostly one core) overlaps the next image's
    # network pass (both cores). One write is in flight at a time, so messages and names keep the
    # input order, and an exception from a write (e.g. a full disk) surfaces at the next image.
    failures = 0
    with ThreadPoolExecutor(1, thread_name_prefix="fastsam-write") as writer:
        pending: Future | None = None
        for name, source in progress:
            try:
                rgb = load_image(source)
            except FastSAMError as exc:
                print(f"fastsam: error: {exc}", file=sys.stderr)
                failures += 1
                continue
            segments = model.segment(rgb, cfg)
            if pending is not None:
                failures += not pending.result()
            pending = writer.submit(finish, name, rgb, segments)
        if pending is not None:
            failures += not pending.result()
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
    if _is_training_checkpoint(args.src):
        from .train.trainer import export_checkpoint

        if args.predict_imgsz is not None and (args.predict_imgsz < 32 or args.predict_imgsz % 32):
            raise FastSAMError(f"--predict-imgsz must be a positive multiple of 32, got {args.predict_imgsz}")
        path = export_checkpoint(args.src, args.dst, dtype=dtype, predict_imgsz=args.predict_imgsz)
    else:
        if args.predict_imgsz is not None:
            raise FastSAMError("--predict-imgsz applies to training checkpoints (OUT/weights/last.pt) only")
        path = convert(args.src, args.dst, dtype=dtype)
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


def _synth(args: argparse.Namespace) -> int:
    from .data.synth import write_dataset

    if args.n < 0 or min(args.size) < 16:
        raise FastSAMError("--n must be >= 0 and --size H W at least 16 pixels each")
    paths = write_dataset(args.out, args.n, args.seed, size=(args.size[0], args.size[1]))
    print(f"wrote {len(paths)} images to {args.out}", file=sys.stderr)
    return 0


def _train(args: argparse.Namespace) -> int:
    import logging

    from .train.trainer import TrainConfig, Trainer

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
        options = {name: getattr(args, name) for name, *_ in _TRAIN_OPTIONS}
        cfg = TrainConfig(data=str(args.data), val_data=str(args.val_data) if args.val_data else None,
                          data_format=args.format, model=args.model, out=str(args.out), cos_lr=args.cos_lr,
                          ema=not args.no_ema, amp=not args.no_amp, **options)  # fmt: skip
        trainer = Trainer(cfg, progress=progress)
    result = trainer.train(log=lambda s: print(s, file=sys.stderr))
    if trainer.dist.main:
        print(f"wrote {result.weights} and {result.out_dir / 'weights' / 'last.pt'}", file=sys.stderr)
    return 0


def _val(args: argparse.Namespace) -> int:
    import logging

    from .config import PredictConfig
    from .predictor import FastSAM
    from .train.evaluate import default_imgsz, evaluate, format_table, metrics_json, open_dataset

    # Check the cheap things (options, dataset) before loading a model.
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
        from .weights import default_model_path

        args.model = default_model_path()
    model = FastSAM(args.model, device=args.device, cache_size=0)
    imgsz = default_imgsz(model) if args.imgsz is None else args.imgsz
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    metrics = evaluate(model, dataset, imgsz=imgsz, conf=args.conf, iou=args.iou, max_det=args.max_det,
                       limit=args.limit, progress=progress)  # fmt: skip
    problems = dataset.problems
    for p in problems[:5]:
        print(f"fastsam: warning: {p.file}: {p.what}", file=sys.stderr)
    if problems:
        print(f"fastsam: warning: the dataset reported {len(problems)} problem(s)"
              + (" (first 5 shown)" if len(problems) > 5 else ""), file=sys.stderr)  # fmt: skip
    record = {**metrics, "data": str(args.data), "format": fmt, "model": str(args.model), "imgsz": imgsz,
              "conf": args.conf, "iou": args.iou, "max_det": args.max_det, "problems": len(problems)}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    _write_atomic(args.out / "metrics.json", metrics_json(record))
    print(format_table(metrics))
    print(f"{metrics['images']} images, {metrics['instances']} instances, {metrics['detections']} detections, "
          f"{metrics['seconds']:.1f} s -> {args.out / 'metrics.json'}")  # fmt: skip
    return 0


def _serve(args: argparse.Namespace) -> int:
    from .config import PredictConfig

    if not 0 <= args.port <= 65535 or args.max_pixels < 1 or args.max_upload_mb <= 0:
        raise FastSAMError("--port must be in 0..65535, --max-pixels and --max-upload-mb positive")
    PredictConfig(imgsz=PredictConfig().imgsz if args.imgsz is None else args.imgsz, conf=args.conf, iou=args.iou)  # checked before loading
    try:
        from .serve import run
    except ImportError as exc:  # fastapi / uvicorn are an optional extra
        raise FastSAMError(f"fastsam serve needs the 'serve' extra ({exc.name} is missing): "
                           "pip install 'fastsam[serve]'") from exc  # fmt: skip
    return run(args.model, host=args.host, port=args.port, device=args.device, imgsz=args.imgsz, conf=args.conf,
               iou=args.iou, max_pixels=args.max_pixels, max_body_bytes=int(args.max_upload_mb * 1024 * 1024),
               clip_weights=args.clip_weights, clip_model=args.clip_model)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fastsam`` command; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "segment":
            return _segment(args)
        if args.command == "prompt":
            return _prompt(args)
        if args.command == "synth":
            return _synth(args)
        if args.command == "serve":
            return _serve(args)
        if args.command == "val":
            return _val(args)
        if args.command == "train":
            return _train(args)
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
