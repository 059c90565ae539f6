"""Options of ``fastsam zeroshot edges|proposals|instances`` and ``fastsam edges``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ._values import finite, positive_int

__all__ = ["add_zeroshot_parsers"]

_TASKS = {
    # task: (help, conf, iou, max_det)
    "edges": ("BSDS500 edge detection: ODS, OIS, AP, R50 (paper Table 2)", 0.4, 0.9, 300),
    "proposals": ("COCO / LVIS class-agnostic proposals: AR@10/100/1000, AUC (Tables 3-5)", 0.001, 0.9, 1000),
    "instances": ("instance segmentation prompted by detector boxes: mask AP (Table 6)", 0.4, 0.9, 300),
}

_DESCRIPTIONS = {
    "edges": "Edge maps (Sobel on mask probabilities, edge NMS; also written to OUT/maps/<id>.png) or "
    "--pred-dir PNGs, scored by the BSDS protocol.",
    "proposals": "Class-agnostic box and mask proposals of everything mode (or of --pred), scored by "
    "pycocotools or, with --lvis, by lvis.",
    "instances": "Each detector box selects a mask of everything mode; the mask takes the box's category "
    "and score; mask AP.",
}


def _model_options(p: argparse.ArgumentParser, conf: float, iou: float, max_det: int) -> None:
    # function-level import: _parser imports this module to build the command tree
    from ._parser import _MODEL_HELP
    from ._runtime import add_runtime_options

    p.add_argument("--model", "-m", type=Path, help=_MODEL_HELP)
    add_runtime_options(p)
    p.add_argument(
        "--imgsz", type=positive_int, help="network input long side (default: the model's training size, else 1024)"
    )
    p.add_argument("--conf", type=finite, default=conf, help=f"score threshold (default {conf})")
    p.add_argument("--iou", type=finite, default=iou, help=f"NMS IoU threshold (default {iou})")
    p.add_argument("--max-det", type=positive_int, default=max_det, help=f"maximum masks per image (default {max_det})")
    p.add_argument("--device", default="cpu", help="torch device (default cpu; under torchrun cuda -> cuda:LOCAL_RANK)")


def _run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", "-o", type=Path, default=Path("out"), help="output directory (default ./out)")
    p.add_argument("--limit", type=positive_int, help="evaluate only the first N images")
    p.add_argument("--resume", action="store_true", help="continue the run in OUT (its per-image results in OUT/parts)")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: when stderr is a terminal)",
    )


def add_zeroshot_parsers(sub: Any) -> None:
    """``zeroshot`` (with its three tasks) and ``edges`` on the command tree ``sub``."""
    zs = sub.add_parser(
        "zeroshot",
        help="the paper's zero-shot evaluations (BSDS500 edges, COCO/LVIS proposals, box-prompted instances)",
        description="Zero-shot evaluation suite of the FastSAM paper. Each task streams over the dataset, keeps "
        "per-image results in OUT/parts (--resume continues; under torchrun each rank takes its share and rank 0 "
        "merges), writes OUT/metrics.json and prints our figures beside the paper's. Needs the 'zeroshot' extra.",
    )
    tasks = zs.add_subparsers(dest="task", required=True)
    parsers = {
        name: tasks.add_parser(name, help=spec[0], description=_DESCRIPTIONS[name]) for name, spec in _TASKS.items()
    }
    e, p, i = parsers["edges"], parsers["proposals"], parsers["instances"]
    e.add_argument("--data", type=Path, required=True, help="BSDS500 root (images/<split>/, groundTruth/<split>/)")
    e.add_argument("--split", default="test", help="split to evaluate (default test)")
    e.add_argument("--pred-dir", type=Path, help="score these 8-bit PNG edge maps (<id>.png) instead of a model")
    p.add_argument("--ann", type=Path, required=True, help="instances annotation file (COCO or LVIS v1 JSON)")
    p.add_argument("--data", type=Path, help="image directory (needed unless --pred is given)")
    p.add_argument("--lvis", action="store_true", help="LVIS v1 annotations, scored by the lvis package")
    p.add_argument("--pred", type=Path, help="score this COCO results file of proposals instead of a model")
    i.add_argument("--ann", type=Path, required=True, help="instances annotation file (COCO or LVIS v1 JSON)")
    i.add_argument("--data", type=Path, required=True, help="image directory")
    i.add_argument("--boxes", type=Path, required=True, help="detections: COCO results JSON (bbox, category_id, score)")
    i.add_argument("--lvis", action="store_true", help="LVIS v1 annotations, scored by the lvis package")
    for name, parser in parsers.items():
        _model_options(parser, *_TASKS[name][1:])
        _run_options(parser)
    ed = sub.add_parser(
        "edges",
        help="write edge maps of images (the zero-shot edge recipe)",
        description="Everything mode, Sobel on each mask's probability map, max over masks, edge NMS; writes "
        "OUT/<stem>_edges.png (8-bit).",
    )
    ed.add_argument("sources", nargs="+", type=Path, help="image files")
    ed.add_argument("--out", "-o", type=Path, default=Path("out"), help="output directory (default ./out)")
    _model_options(ed, *_TASKS["edges"][1:])
