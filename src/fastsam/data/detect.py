"""Which dataset layout a path holds (SA-1B, COCO, YOLO-seg), and the reader for it."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from ..errors import FastSAMError
from .datasets import COCODataset, SA1BDataset, YOLODataset

__all__ = ["DATASET_FORMATS", "detect_format", "open_dataset"]

DATASET_FORMATS: tuple[str, ...] = ("auto", "sa1b", "coco", "yolo")
_HEAD_BYTES = 1 << 20  # COCO files list "images" first; the head is enough to recognise one


def _head(path: Path) -> str:
    try:
        with path.open("rb") as fh:
            return fh.read(_HEAD_BYTES).decode("utf-8", errors="replace")
    except OSError:
        return ""


def _coco_annotations(root: Path) -> Path | None:
    """The first JSON in ``root`` or ``root/annotations`` that looks like COCO (an "images" list);
    ``instances*.json`` first (COCO's captions / keypoints files share the layout)."""
    cands = sorted(root.glob("*.json")) + sorted((root / "annotations").glob("*.json"))
    cands.sort(key=lambda p: not p.name.startswith("instances"))
    return next((p for p in cands if re.search(r'"images"\s*:\s*\[', _head(p))), None)


def _coco_images_dir(root: Path, annotations: Path) -> Path:
    """Where the first image named in ``annotations`` exists (images/, the root, a sibling folder)."""
    m = re.search(r'"file_name"\s*:\s*"([^"]+)"', _head(annotations))
    bases = [root / "images", root, annotations.parent, annotations.parent.parent / "images"]
    bases += sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    bases += sorted(p for p in annotations.parent.parent.iterdir() if p.is_dir())
    if m:
        for base in bases:
            if (base / m.group(1)).is_file():
                return base
    return root / "images" if (root / "images").is_dir() else annotations.parent


def _has_sa1b_pair(root: Path) -> bool:
    return any(js.with_suffix(".jpg").is_file() for js in root.glob("*.json")) or any(root.glob("*.tar"))


def detect_format(root: str | Path) -> str:
    """Dataset layout of ``root``: "yolo" (images/ + labels/), "sa1b" (``x.jpg`` + ``x.json`` pairs or
    ``.tar`` shards; also a single ``.tar``), "coco" (an annotations JSON in root or root/annotations;
    also the JSON file itself)."""
    root = Path(root)
    if root.is_file():
        if root.suffix.lower() == ".tar":
            return "sa1b"
        if root.suffix.lower() == ".json":
            return "coco"
        raise FastSAMError(f"{root}: not a dataset directory, .tar shard or COCO .json")
    if (root / "images").is_dir() and (root / "labels").is_dir():
        return "yolo"
    if _has_sa1b_pair(root):
        return "sa1b"
    if _coco_annotations(root) is not None:
        return "coco"
    raise FastSAMError(
        f"{root}: no dataset found (expected SA-1B *.jpg + *.json pairs, a COCO annotations JSON "
        "or YOLO images/ + labels/); pass --format"
    )


def open_dataset(root: str | os.PathLike[str], fmt: str = "auto") -> tuple[Any, str]:
    """A reader from :mod:`fastsam.data.datasets` for ``root`` and the format used (see :func:`detect_format`)."""
    if fmt not in DATASET_FORMATS:
        raise FastSAMError(f"unknown dataset format {fmt!r}; expected one of {', '.join(DATASET_FORMATS)}")
    root = Path(root)
    if not root.exists():
        raise FastSAMError(f"{root}: data directory not found")
    if fmt == "auto":
        fmt = detect_format(root)
    if fmt == "sa1b":
        return SA1BDataset(root), fmt
    if fmt == "yolo":
        return YOLODataset(root), fmt
    annotations = root if root.is_file() else _coco_annotations(root)
    if annotations is None:
        raise FastSAMError(f'{root}: no COCO annotations JSON (with an "images" list) in it or in annotations/')
    base = root.parent if root.is_file() else root
    return COCODataset(_coco_images_dir(base, annotations), annotations), fmt
