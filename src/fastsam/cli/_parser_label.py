"""Options of ``fastsam label`` (auto-labelling a dataset)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ._parser_shard import add_rank_timeout
from ._values import DEFAULT_MAX_PIXELS, finite, positive_int

__all__ = ["add_label_parser"]


def add_label_parser(sub: Any) -> None:
    """``label`` on the command tree ``sub``."""
    # function-level import: _parser imports this module to build the command tree
    from ..config import PredictConfig
    from ._parser import _MODEL_HELP
    from ._runtime import add_runtime_options

    d = PredictConfig()
    lb = sub.add_parser(
        "label",
        help="auto-label images: a COCO or YOLO-seg training set of their masks",
        description="Everything mode on every image; writes a dataset that fastsam train / val and other tools "
        "read: --format coco: OUT/annotations.json (COCO instances, RLE or --polygons) + OUT/images/; --format "
        "yolo: OUT/images/, OUT/labels/<stem>.txt (YOLO-seg polygons) + OUT/data.yaml. Images are hard-linked "
        "(or copied); one class 'object', or one per --text (each mask takes the class CLIP finds most similar).",
    )
    lb.add_argument("sources", nargs="+", type=Path, help="image files, directories or .tar shards")
    lb.add_argument("--format", choices=["coco", "yolo"], required=True, help="dataset layout to write")
    lb.add_argument(
        "--out",
        "-o",
        type=Path,
        required=True,
        help="dataset directory to write (new or empty; never one holding an input)",
    )
    lb.add_argument("--resume", action="store_true", help="continue a run in --out, skipping images already labelled")
    add_rank_timeout(lb, "the dataset-wide file (COCO annotations.json, YOLO data.yaml)")
    lb.add_argument("--polygons", action="store_true", help="COCO segmentations as polygons (default RLE)")
    lb.add_argument(
        "--text",
        action="append",
        default=[],
        metavar="CLASS",
        help="class name (repeatable; CLIP text prompt, needs the 'text' extra); default one class 'object'",
    )
    lb.add_argument(
        "--clip-weights",
        type=Path,
        help="local CLIP weights for --text (default: the shipped demo CLIP, which knows only synthetic scenes)",
    )
    lb.add_argument("--clip-model", help="open_clip model name of --clip-weights (default ViT-B-32)")
    lb.add_argument("--model", "-m", type=Path, help=_MODEL_HELP)
    add_runtime_options(lb)
    lb.add_argument(
        "--imgsz", type=positive_int, help="network input long side (default: the model's training size, else 1024)"
    )
    lb.add_argument("--conf", type=finite, default=d.conf, help=f"score threshold (default {d.conf})")
    lb.add_argument("--iou", type=finite, default=d.iou, help=f"NMS IoU threshold (default {d.iou})")
    lb.add_argument(
        "--max-det", type=positive_int, default=d.max_det, help=f"maximum masks per image (default {d.max_det})"
    )
    lb.add_argument("--device", default="cpu", help="torch device (default cpu)")
    lb.add_argument(
        "--batch", type=positive_int, default=1, help="images of one letterboxed shape per forward pass (default 1)"
    )
    lb.add_argument(
        "--max-pixels",
        type=positive_int,
        default=DEFAULT_MAX_PIXELS,
        help=f"largest image accepted, width x height (default {DEFAULT_MAX_PIXELS})",
    )
    lb.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: when stderr is a terminal)",
    )
