"""Auto-labelling: everything-mode masks written as a training set other tools read (``fastsam label``).

Two layouts, both read back by :func:`fastsam.data.detect.open_dataset` (so ``fastsam train`` and
``fastsam val`` take them as they are):

* **COCO** (:class:`COCOWriter`): ``DATASET/annotations.json`` (COCO instances: ``images``,
  ``annotations`` with ``segmentation`` as compressed RLE, or outer-contour polygons, ``area`` (mask
  pixels), ``bbox`` (tight mask box, XYWH), ``iscrowd`` 0 and the detection ``score``,
  ``categories``) and the images under ``DATASET/images/``.
* **YOLO-seg** (:class:`YOLOWriter`): ``DATASET/images/<stem>.<ext>``, ``DATASET/labels/<stem>.txt``
  (one line per mask: ``class x1 y1 x2 y2 ...``, the mask's largest outer contour normalised to
  [0, 1]; an image without masks gets an empty file) and ``DATASET/data.yaml`` (``path``, ``train``,
  ``val``, ``names``, as ultralytics reads it).

Images are hard-linked from the input when the file system allows it, else copied; an input whose
suffix is not an image suffix is stored decoded, as PNG. Every file is written atomically
(:mod:`fastsam.io.atomic`), and the work per image is recorded as soon as it is done
(``DATASET/.fastsam-label/``: the options and, for COCO, one part per image), so that ``resume``
skips the images already labelled and a killed run never leaves a half-written file.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import FastSAMError
from ..io.atomic import atomic_path, write_atomic
from ..io.images import IMAGE_SUFFIXES
from ..io.tar_sources import TarMember
from ..shard import Shard, wait_until

if TYPE_CHECKING:
    from ..results import Segments

__all__ = ["FORMATS", "STATE_DIR", "COCOWriter", "YOLOWriter", "open_writer"]

FORMATS = ("coco", "yolo")
#: Per-run bookkeeping inside the dataset (options, COCO parts); hidden from the dataset readers.
STATE_DIR = ".fastsam-label"


def _place_image(source: Path | TarMember, rgb: np.ndarray, images: Path, stem: str) -> str:
    """Put the image of ``source`` into ``images`` as ``<stem><ext>``; returns the file name.

    A hard link (or, across file systems, a copy) of the input file; the member's bytes for a member
    of a tar shard; the decoded ``rgb`` as PNG when the input's suffix is not an image suffix (the
    readers pick images by suffix). The destination is replaced atomically, so the input itself is
    never written to.
    """
    if isinstance(source, TarMember):
        name = f"{stem}{Path(source.member).suffix}"
        write_atomic(images / name, source.read_bytes())
        return name
    suffix = source.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="PNG", compress_level=1)
        write_atomic(images / f"{stem}.png", buf.getvalue())
        return f"{stem}.png"
    name = f"{stem}{source.suffix}"
    with atomic_path(images / name) as tmp:
        tmp.unlink()
        try:
            os.link(source, tmp)
        except OSError:  # another file system, no hard links: a copy
            shutil.copyfile(source, tmp)
    return name


def _largest_polygon(polygons: list[np.ndarray]) -> np.ndarray | None:
    """The outer contour (K, 2) with the largest area, among those with at least 3 points."""
    import cv2

    ok = [p for p in polygons if len(p) >= 3]
    return max(ok, key=lambda p: abs(cv2.contourArea(p.astype(np.float32)))) if ok else None


class _Writer:
    """Shared: the dataset directory, class names, per-run options and image placement."""

    format = ""

    def __init__(self, root: str | os.PathLike, names: list[str], *, polygons: bool = False) -> None:
        if not names:
            raise FastSAMError("a dataset needs at least one class name")
        self.root = Path(root)
        self.names = list(names)
        self.polygons = polygons
        self.images = self.root / "images"
        self.state = self.root / STATE_DIR

    def _options(self) -> dict[str, Any]:
        return {"format": self.format, "names": self.names, "polygons": self.polygons}

    def start(self, resume: bool, shard: Shard | None = None, share: Sequence[str] = ()) -> None:
        """Create the layout. Refuses a non-empty directory unless ``resume``; with ``resume`` the
        directory must be empty or an earlier run of the same format, class names and polygon option.

        Under torchrun (a ``shard`` of more than one rank) rank 0 does this; the others wait until rank
        0 has recorded the same options, and refuse (without ``resume``) if their ``share`` (stems) is
        labelled already: a dataset of an earlier run.
        """
        if shard is not None and shard.rank > 0:
            self._join(resume, shard, share)
            return
        if self.root.exists() and not self.root.is_dir():
            raise FastSAMError(f"{self.root}: exists and is not a directory (--out)")
        has_files = self.root.is_dir() and any(self.root.iterdir())
        meta = self.state / "options.json"
        if has_files and not resume:
            raise FastSAMError(f"{self.root}: directory is not empty; choose a new --out or pass --resume")
        if has_files:
            try:
                before = json.loads(meta.read_text())
            except (OSError, ValueError):
                raise FastSAMError(f"{self.root}: not a dataset written by fastsam label (cannot --resume)") from None
            if before != self._options():
                raise FastSAMError(f"{self.root}: written with other options {before}; --resume needs the same ones")
        self.images.mkdir(parents=True, exist_ok=True)
        (self.state / "parts").mkdir(parents=True, exist_ok=True)
        write_atomic(meta, json.dumps(self._options()).encode())

    def _join(self, resume: bool, shard: Shard, share: Sequence[str]) -> None:
        meta = self.state / "options.json"

        def ready() -> bool:
            try:
                return bool(json.loads(meta.read_text()) == self._options())
            except (OSError, ValueError):
                return False

        wait_until(ready, 600.0, f"{shard.describe()}: rank 0 has not started the dataset {self.root}")
        if not resume and any(self.done(stem) for stem in share):
            raise FastSAMError(f"{self.root}: directory is not empty; choose a new --out or pass --resume")

    def done(self, stem: str) -> bool:  # pragma: no cover - overridden
        raise NotImplementedError

    def add(
        self, stem: str, source: Path | TarMember, rgb: np.ndarray, segments: Segments, classes: np.ndarray
    ) -> None:
        """One image and its masks (``classes``: index into ``names`` per mask); empty masks are left out."""
        raise NotImplementedError  # pragma: no cover - overridden

    def finish(self, stems: list[str]) -> Path:
        """Write the dataset-wide file(s) over the images ``stems`` (in order); returns the main file."""
        raise NotImplementedError  # pragma: no cover - overridden


class COCOWriter(_Writer):
    """COCO instances layout (see the module docstring)."""

    format = "coco"

    def _part(self, stem: str) -> Path:
        return self.state / "parts" / f"{stem}.json"

    def done(self, stem: str) -> bool:
        return self._part(stem).is_file()

    def add(
        self, stem: str, source: Path | TarMember, rgb: np.ndarray, segments: Segments, classes: np.ndarray
    ) -> None:
        file_name = _place_image(source, rgb, self.images, stem)
        h, w = rgb.shape[:2]
        keep = np.flatnonzero(segments.areas > 0)
        rles = segments.to_rle()
        polys = segments.to_polygons() if self.polygons else []
        bboxes = segments.mask_boxes()
        anns = []
        for k in keep.tolist():
            if self.polygons:
                seg: Any = [p.reshape(-1).astype(float).tolist() for p in polys[k] if len(p) >= 3]
                if not seg:  # a mask too thin for a polygon: its RLE
                    seg = rles[k]
            else:
                seg = rles[k]
            anns.append(
                {
                    "category_id": int(classes[k]) + 1,
                    "segmentation": seg,
                    "area": int(segments.areas[k]),
                    "bbox": [int(v) for v in bboxes[k]],
                    "iscrowd": 0,
                    "score": round(float(segments.scores[k]), 5),
                }
            )
        part = {"image": {"file_name": file_name, "width": int(w), "height": int(h)}, "annotations": anns}
        write_atomic(self._part(stem), json.dumps(part).encode())

    def finish(self, stems: list[str]) -> Path:
        images: list[dict[str, Any]] = []
        annotations: list[dict[str, Any]] = []
        for image_id, stem in enumerate(stems, 1):
            if not self.done(stem):
                continue
            part = json.loads(self._part(stem).read_text())
            images.append({"id": image_id, **part["image"]})
            for a in part["annotations"]:
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, **a})
        data = {
            "info": {"description": "written by fastsam label"},
            "images": images,
            "annotations": annotations,
            "categories": [{"id": i + 1, "name": n, "supercategory": "object"} for i, n in enumerate(self.names)],
        }
        path = self.root / "annotations.json"
        write_atomic(path, json.dumps(data).encode())
        return path


class YOLOWriter(_Writer):
    """YOLO-seg layout (see the module docstring)."""

    format = "yolo"

    def __init__(self, root: str | os.PathLike, names: list[str]) -> None:
        super().__init__(root, names, polygons=True)  # YOLO-seg labels are polygons
        self.labels = self.root / "labels"

    def start(self, resume: bool, shard: Shard | None = None, share: Sequence[str] = ()) -> None:
        super().start(resume, shard, share)
        self.labels.mkdir(exist_ok=True)

    def done(self, stem: str) -> bool:
        return (self.labels / f"{stem}.txt").is_file()

    def add(
        self, stem: str, source: Path | TarMember, rgb: np.ndarray, segments: Segments, classes: np.ndarray
    ) -> None:
        _place_image(source, rgb, self.images, stem)
        h, w = rgb.shape[:2]
        lines = []
        for k, polys in enumerate(segments.to_polygons()):
            poly = _largest_polygon(polys) if segments.areas[k] > 0 else None
            if poly is None:  # empty, or too thin for a polygon of 3 points
                continue
            xy = poly.astype(np.float64) / (w, h)
            lines.append(" ".join([str(int(classes[k])), *(f"{v:.6f}" for v in xy.reshape(-1))]))
        # the label file last: it marks the image as done
        write_atomic(self.labels / f"{stem}.txt", "".join(f"{line}\n" for line in lines).encode())

    def finish(self, stems: list[str]) -> Path:
        names = "\n".join(f"  {i}: {json.dumps(n)}" for i, n in enumerate(self.names))
        text = (
            "# written by fastsam label (YOLO-seg); fastsam train/val --data DATASET read it too\n"
            f"path: {json.dumps(str(self.root.resolve()))}\ntrain: images\nval: images\nnames:\n{names}\n"
        )
        path = self.root / "data.yaml"
        write_atomic(path, text.encode())
        return path


def open_writer(fmt: str, root: str | os.PathLike, names: list[str], *, polygons: bool = False) -> _Writer:
    """The writer of ``fmt`` ("coco" or "yolo") for the dataset directory ``root``."""
    if fmt == "coco":
        return COCOWriter(root, names, polygons=polygons)
    if fmt == "yolo":
        return YOLOWriter(root, names)
    raise FastSAMError(f"unknown label format {fmt!r}; expected one of {', '.join(FORMATS)}")
