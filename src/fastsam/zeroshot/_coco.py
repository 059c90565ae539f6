"""COCO / LVIS v1 annotation files for the proposal and instance tasks: loading and checking them,
finding their images, reading results files, and running pycocotools' or lvis' evaluation.

Checks made before any work: the file is JSON with ``images`` and ``annotations``; every
annotation's ``image_id`` names an image (pycocotools would fail later with a bare KeyError, and
a dropped annotation would silently raise recall); LVIS files carry the per-image
``neg_category_ids`` / ``not_exhaustive_category_ids`` and per-category ``frequency`` the lvis
package needs. LVIS v1 images have no ``file_name``: the name is the last part of ``coco_url``
(``.../val2017/000000397133.jpg``), looked up as ``DATA/<name>`` or ``DATA/<split>/<name>``.

lvis 0.5.3 (the current release) calls ``np.float`` in ``LVISEval.accumulate``, an alias numpy
removed in 1.24; :func:`lvis_numpy` puts it back for the duration of an lvis call only.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FastSAMError
from ._deps import need

__all__ = ["AnnImage", "coco_api", "find_images", "load_annotations", "lvis_api", "lvis_numpy", "read_results"]


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise FastSAMError(f"{path}: no such {what} file")
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise FastSAMError(f"{path}: not a JSON {what} file ({exc})") from None


def load_annotations(path: Path, lvis: bool = False) -> dict[str, Any]:
    """The annotation file as a dict, checked (see the module docstring)."""
    data = _read_json(path, "annotation")
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise FastSAMError(f"{path}: not a COCO/LVIS annotation file (no 'images' list)")
    if not isinstance(data.get("annotations"), list):
        raise FastSAMError(f"{path}: not a COCO/LVIS annotation file (no 'annotations' list)")
    try:
        ids = {int(im["id"]) for im in data["images"]}
        orphans = [a for a in data["annotations"] if int(a["image_id"]) not in ids]
    except (KeyError, TypeError, ValueError) as exc:
        raise FastSAMError(f"{path}: an image or annotation lacks a valid id ({exc})") from None
    if orphans:
        raise FastSAMError(
            f"{path}: {len(orphans)} annotation(s) refer to image ids with no image entry "
            f"(first: annotation {orphans[0].get('id')} -> image {orphans[0]['image_id']})"
        )
    data.setdefault("categories", [])
    if lvis:
        bad = [
            im.get("id")
            for im in data["images"]
            if "neg_category_ids" not in im or "not_exhaustive_category_ids" not in im
        ]
        if bad:
            raise FastSAMError(
                f"{path}: image {bad[0]} has no neg_category_ids / not_exhaustive_category_ids (not LVIS v1)"
            )
        if any(c.get("frequency") not in ("r", "c", "f") for c in data["categories"]):
            raise FastSAMError(f"{path}: every LVIS category needs a frequency of 'r', 'c' or 'f'")
    return data


@dataclass(frozen=True)
class AnnImage:
    """One image of an annotation file: its id, the file name it gives and (H, W)."""

    id: int
    name: str
    split: str
    height: int
    width: int


def images_of(data: dict[str, Any]) -> list[AnnImage]:
    """The file's images in id order (LVIS names from ``coco_url``)."""
    out = []
    for im in data["images"]:
        url = str(im.get("coco_url", ""))
        name = str(im.get("file_name") or url.rsplit("/", 1)[-1])
        split = url.rsplit("/", 2)[-2] if url.count("/") >= 2 else ""
        out.append(AnnImage(int(im["id"]), name, split, int(im.get("height", 0)), int(im.get("width", 0))))
    return sorted(out, key=lambda a: a.id)


def find_images(data_dir: Path, images: list[AnnImage]) -> dict[int, Path | None]:
    """Image id -> its file under ``data_dir`` (None when it is not there: a counted skip)."""
    if not data_dir.is_dir():
        raise FastSAMError(f"{data_dir}: no such image directory")
    out: dict[int, Path | None] = {}
    for im in images:
        candidates = [data_dir / im.name] + ([data_dir / im.split / im.name] if im.split else [])
        out[im.id] = next((c for c in candidates if c.is_file()), None)
    return out


def read_results(path: Path, image_ids: set[int], need_category: bool = False) -> list[dict[str, Any]]:
    """A COCO results file (list of ``image_id``, ``bbox`` [x, y, w, h], ``score`` [, ``category_id``,
    ``segmentation``]) whose images are all in the annotation file."""
    data = _read_json(path, "results")
    if not isinstance(data, list):
        raise FastSAMError(f"{path}: a COCO results file is a JSON list of detections")
    keys = ("image_id", "bbox", "score") + (("category_id",) if need_category else ())
    for k, d in enumerate(data):
        if not isinstance(d, dict) or any(key not in d for key in keys):
            raise FastSAMError(f"{path}: detection {k} lacks one of {', '.join(keys)}")
        if int(d["image_id"]) not in image_ids:
            raise FastSAMError(f"{path}: detection {k} is for image {d['image_id']}, which the annotations lack")
        if not (isinstance(d["bbox"], list) and len(d["bbox"]) == 4):
            raise FastSAMError(f"{path}: detection {k}: bbox must be [x, y, w, h]")
    return data


def coco_api(dataset: dict[str, Any]) -> Any:
    """A pycocotools ``COCO`` over an in-memory dataset (its progress lines silenced)."""
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def lvis_api(dataset: dict[str, Any]) -> Any:
    """An lvis ``LVIS`` over an in-memory dataset (the package only reads files: its loader is bypassed)."""
    lvis_mod = need("lvis")
    api = lvis_mod.LVIS.__new__(lvis_mod.LVIS)
    import logging

    api.logger = logging.getLogger("lvis.lvis")
    api.dataset = dataset
    with lvis_numpy():
        api._create_index()
    return api


@contextlib.contextmanager
def lvis_numpy() -> Iterator[None]:
    """``np.float`` (removed in numpy 1.24, used by lvis 0.5.3) for the duration of the block."""
    import logging

    quiet = logging.getLogger("lvis")
    level, quiet.level = quiet.level, logging.ERROR  # lvis warns on every in-memory results list
    had = "float" in np.__dict__
    if not had:
        setattr(np, "float", float)  # noqa: B010 (the removed alias, spelled so that linters see no use of it)
    try:
        yield
    finally:
        quiet.level = level
        if not had:
            delattr(np, "float")
