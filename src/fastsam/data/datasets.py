"""Class-agnostic instance-segmentation readers (SA-1B, COCO, YOLO-seg) for training and evaluation.

Every reader gives :class:`Sample` objects: ``image`` (H, W, 3) uint8 RGB, ``masks`` (K, H, W) bool,
``boxes`` (K, 4) float32 ``xyxy`` in pixels (x = column, exclusive ends, i.e. a mask covering columns
3..5 has x1 = 3, x2 = 6), derived from the final masks; ``name`` identifies the image.

Bad input never stops a long run. Each problem is appended once to ``dataset.problems`` as a
:class:`Problem` (file name + one-line description) and logged once with ``logger.warning``:

* found while building the index (the constructor): malformed annotation files / label files that
  cannot be read, annotation files whose image is missing - those samples are left out of the index;
* found when a sample is decoded (``__getitem__``): empty masks, RLE whose size differs from the image,
  whose counts do not sum to H*W or cannot be decoded, polygons fully outside the image (skipped) or
  partly outside (clipped to the image, kept, reported), malformed annotations / label lines (skipped).
  The rest of that sample still loads; a sample may end up with K = 0.

Corrupt images (and annotation files that became unreadable) discovered in ``__getitem__``: the
sample is marked bad, a Problem is recorded, and the NEXT valid sample (cyclically, by index) is
returned instead, so a training loop keeps its length and never crashes; if every sample is bad a
:class:`~fastsam.errors.FastSAMError` is raised. Call :meth:`scan` to read everything once and
collect all problems up front (e.g. before an evaluation run).
"""

from __future__ import annotations

import io
import json
import logging
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..errors import FastSAMError, ImageError
from ..formats import rle_counts_from_string
from ..io.images import IMAGE_SUFFIXES, load_image

__all__ = ["Sample", "Problem", "SA1BDataset", "COCODataset", "YOLODataset", "masks_to_boxes"]

logger = logging.getLogger(__name__)


@dataclass
class Sample:
    image: np.ndarray  # (H, W, 3) uint8 RGB
    masks: np.ndarray  # (K, H, W) bool
    boxes: np.ndarray  # (K, 4) float32 xyxy pixels, exclusive ends
    name: str


@dataclass
class Problem:
    file: str
    what: str


class _BadAnnotation(Exception):
    """One annotation is unusable; its message becomes a Problem."""


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """(K, H, W) bool -> (K, 4) float32 tight xyxy boxes with exclusive ends (x = column)."""
    out = np.zeros((len(masks), 4), np.float32)
    for k, m in enumerate(masks):
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        if rows.size:
            out[k] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    return out


def _decode_rle(seg: Any, size: tuple[int, int]) -> np.ndarray:
    """Validated COCO RLE (compressed string or uncompressed list counts) -> (H, W) bool."""
    if not isinstance(seg, dict) or "size" not in seg or "counts" not in seg:
        raise _BadAnnotation("RLE segmentation lacks 'size' or 'counts'")
    try:
        rh, rw = (int(v) for v in seg["size"])
    except (TypeError, ValueError):
        raise _BadAnnotation(f"RLE size {seg['size']!r} is not [H, W]") from None
    if (rh, rw) != tuple(size):
        raise _BadAnnotation(f"RLE size {[rh, rw]} does not match the image size {list(size)}")
    counts = seg["counts"]
    if isinstance(counts, (str, bytes)):
        try:
            s = counts.decode("ascii") if isinstance(counts, bytes) else counts
            if any(not (48 <= ord(c) < 48 + 64) for c in s):
                raise ValueError("character out of range")
            counts = rle_counts_from_string(s)
        except (IndexError, ValueError, UnicodeDecodeError):
            raise _BadAnnotation("RLE counts string cannot be decoded") from None
    elif isinstance(counts, list):
        if not all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) for c in counts):
            raise _BadAnnotation("RLE counts list holds non-integers")
    else:
        raise _BadAnnotation(f"RLE counts of type {type(counts).__name__}")
    if any(c < 0 for c in counts):
        raise _BadAnnotation("RLE counts cannot be decoded (negative run length)")
    total = int(sum(counts))
    if total != rh * rw:
        raise _BadAnnotation(f"RLE counts sum to {total}, expected H*W = {rh * rw}")
    flat = np.zeros(rh * rw, dtype=bool)
    pos = 0
    for i, n in enumerate(counts):
        if i % 2:
            flat[pos : pos + n] = True
        pos += n
    return flat.reshape(rw, rh).T


def _fill_polygons(polys: list[np.ndarray], size: tuple[int, int]) -> tuple[np.ndarray, str | None]:
    """Rasterise (N, 2) float pixel polygons (x, y) with cv2.fillPoly. Returns the mask and a note
    ('clipped' when some vertex lies outside the image); raises if all of them lie fully outside."""
    h, w = size
    pts = np.concatenate(polys)
    if not np.isfinite(pts).all():
        raise _BadAnnotation("polygon has non-finite coordinates")
    if pts[:, 0].max() < 0 or pts[:, 0].min() > w or pts[:, 1].max() < 0 or pts[:, 1].min() > h:
        raise _BadAnnotation("polygon lies entirely outside the image")
    out = np.zeros((h, w), np.uint8)
    lim = 4 * max(h, w) + 16  # keep int32 coordinates sane; far vertices only move further out
    cv2.fillPoly(out, [np.clip(np.round(p), -lim, lim).astype(np.int32) for p in polys], 1, lineType=cv2.LINE_8)
    clipped = pts[:, 0].min() < 0 or pts[:, 0].max() > w or pts[:, 1].min() < 0 or pts[:, 1].max() > h
    return out.astype(bool), ("polygon partly outside the image, clipped" if clipped else None)


def _parse_polygons(seg: Any) -> list[np.ndarray]:
    if not seg or not all(isinstance(p, (list, tuple)) for p in seg):
        raise _BadAnnotation("polygon segmentation is not a list of coordinate lists")
    out = []
    for p in seg:
        try:
            a = np.asarray(p, dtype=np.float64)
        except (TypeError, ValueError):
            raise _BadAnnotation("polygon holds non-numbers") from None
        if a.ndim != 1 or a.size % 2 or a.size < 6:
            raise _BadAnnotation(f"polygon with {a.size} coordinates (need an even number >= 6)")
        out.append(a.reshape(-1, 2))
    return out


class _Base:
    """Shared bookkeeping: problems (deduplicated), bad-sample skipping, Sample assembly."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self._seen: set[tuple[str, str]] = set()
        self._bad: set[int] = set()

    def _problem(self, file: Any, what: str) -> None:
        key = (str(file), what)
        if key in self._seen:
            return
        self._seen.add(key)
        self.problems.append(Problem(str(file), what))
        logger.warning("%s: %s", file, what)

    def __len__(self) -> int:  # pragma: no cover - overridden
        raise NotImplementedError

    def _load(self, i: int) -> Sample:  # pragma: no cover - overridden
        raise NotImplementedError

    def __getitem__(self, i: int) -> Sample:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for a dataset of {n} samples")
        i %= n
        for j in range(n):
            k = (i + j) % n
            if k in self._bad:
                continue
            try:
                return self._load(k)
            except (ImageError, _BadAnnotation) as exc:
                self._bad.add(k)
                file, what = exc.args if len(exc.args) == 2 else ("?", str(exc))
                self._problem(file, what)
        raise FastSAMError(f"{type(self).__name__}: no readable sample ({len(self._bad)} of {n} are corrupt)")

    def scan(self) -> list[Problem]:
        """Decode every sample once (to collect all problems); returns ``problems``."""
        for i in range(len(self)):
            if i not in self._bad:
                self[i]
        return self.problems

    def _sample(self, image: np.ndarray, masks: list[np.ndarray], name: str) -> Sample:
        h, w = image.shape[:2]
        m = np.stack(masks) if masks else np.zeros((0, h, w), bool)
        return Sample(image=image, masks=m, boxes=masks_to_boxes(m), name=name)

    def _keep(self, mask: np.ndarray, file: Any, label: str, out: list[np.ndarray]) -> None:
        if not mask.any():
            self._problem(file, f"{label}: empty mask, skipped")
        else:
            out.append(mask)


def _decode_image_bytes(data: bytes, name: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return load_image(img)
    except ImageError:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a corrupt image
        raise ImageError(f"{name}: corrupt image ({exc})") from None


class SA1BDataset(_Base):
    """SA-1B per-image pairs (``x.jpg`` + ``x.json``) from a directory, one ``.tar`` shard, or a
    directory of ``.tar`` shards (read in place with :mod:`tarfile`, never extracted)."""

    def __init__(self, root: str | os.PathLike) -> None:
        super().__init__()
        self.root = Path(root)
        # entries: (kind, container, json ref, image ref); kind "dir" -> refs are Paths, "tar" -> member names
        self._items: list[tuple[str, Path | None, Any, Any]] = []
        self._tars: dict[Path, tuple[int, tarfile.TarFile]] = {}
        if self.root.is_file() and tarfile.is_tarfile(self.root):
            self._index_tar(self.root)
        elif self.root.is_dir():
            self._index_dir(self.root)
            for t in sorted(self.root.glob("*.tar")):
                self._index_tar(t)
        else:
            raise FastSAMError(f"{self.root}: not a directory or a .tar shard")

    def _index_dir(self, d: Path) -> None:
        for js in sorted(d.glob("*.json")):
            try:
                meta = json.loads(js.read_text())
                fname = meta.get("image", {}).get("file_name") if isinstance(meta, dict) else None
            except (OSError, ValueError, AttributeError) as exc:
                self._problem(js, f"malformed JSON ({exc.__class__.__name__}), skipped")
                continue
            cands = ([d / Path(fname).name] if isinstance(fname, str) and fname else []) + [js.with_suffix(".jpg")]
            img = next((c for c in cands if c.is_file()), None)
            if img is None:
                self._problem(js, f"image {cands[0].name} not found, skipped")
                continue
            self._items.append(("dir", None, js, img))

    def _index_tar(self, t: Path) -> None:
        try:
            with tarfile.open(t) as tf:
                members = {m.name: m for m in tf.getmembers() if m.isfile()}
                by_base = {os.path.basename(n): n for n in members}
                for name in sorted(members):
                    if not name.endswith(".json"):
                        continue
                    label = f"{t}:{name}"
                    try:
                        meta = json.loads(tf.extractfile(members[name]).read())
                        fname = meta.get("image", {}).get("file_name") if isinstance(meta, dict) else None
                    except (OSError, ValueError, AttributeError, tarfile.TarError) as exc:
                        self._problem(label, f"malformed JSON ({exc.__class__.__name__}), skipped")
                        continue
                    stem_jpg = os.path.basename(name)[: -len(".json")] + ".jpg"
                    cands = ([os.path.basename(fname)] if isinstance(fname, str) and fname else []) + [stem_jpg]
                    img = next((by_base[c] for c in cands if c in by_base), None)
                    if img is None:
                        self._problem(label, f"image {cands[0]} not found in the shard, skipped")
                        continue
                    self._items.append(("tar", t, name, img))
        except (OSError, tarfile.TarError) as exc:
            self._problem(t, f"unreadable tar shard ({exc}), skipped")

    def _tar(self, path: Path) -> tarfile.TarFile:
        pid, tf = self._tars.get(path, (None, None))
        if tf is None or pid != os.getpid():  # reopen after fork (DataLoader workers)
            tf = tarfile.open(path)
            self._tars[path] = (os.getpid(), tf)
        return tf

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_tars"] = {}
        return state

    def __len__(self) -> int:
        return len(self._items)

    def _load(self, i: int) -> Sample:
        kind, container, js, img = self._items[i]
        if kind == "dir":
            jfile, ifile = str(js), str(img)
            try:
                raw = js.read_bytes()
            except OSError as exc:
                raise _BadAnnotation(jfile, f"unreadable JSON ({exc})") from None
            try:
                image = load_image(img)
            except ImageError as exc:
                raise ImageError(ifile, f"corrupt image, sample skipped ({exc})") from None
        else:
            jfile, ifile = f"{container}:{js}", f"{container}:{img}"
            try:
                tf = self._tar(container)
                raw = tf.extractfile(js).read()
                data = tf.extractfile(img).read()
            except (OSError, KeyError, tarfile.TarError) as exc:
                raise _BadAnnotation(jfile, f"unreadable tar member ({exc})") from None
            try:
                image = _decode_image_bytes(data, ifile)
            except ImageError as exc:
                raise ImageError(ifile, f"corrupt image, sample skipped ({exc})") from None
        try:
            meta = json.loads(raw)
            anns = meta["annotations"]
            if not isinstance(anns, list):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise _BadAnnotation(jfile, "malformed JSON (no 'annotations' list), sample skipped") from None
        size = image.shape[:2]
        masks: list[np.ndarray] = []
        for j, ann in enumerate(anns):
            label = f"annotation {ann.get('id', j) if isinstance(ann, dict) else j}"
            try:
                if not isinstance(ann, dict) or "segmentation" not in ann:
                    raise _BadAnnotation("no segmentation")
                m = _decode_rle(ann["segmentation"], size)
            except _BadAnnotation as exc:
                self._problem(jfile, f"{label}: {exc}, skipped")
                continue
            self._keep(m, jfile, label, masks)
        return self._sample(image, masks, Path(ifile.split(":")[-1]).stem)


class COCODataset(_Base):
    """COCO instances JSON: polygon, uncompressed-RLE and compressed-RLE segmentations; ``iscrowd``
    annotations are skipped silently (they are not instances); categories are ignored."""

    def __init__(self, images_dir: str | os.PathLike, annotations_json: str | os.PathLike) -> None:
        super().__init__()
        self.images_dir = Path(images_dir)
        self.annotations_json = Path(annotations_json)
        try:
            data = json.loads(self.annotations_json.read_text())
            images, anns = data["images"], data.get("annotations", [])
            if not isinstance(images, list) or not isinstance(anns, list):
                raise TypeError
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise FastSAMError(f"{self.annotations_json}: not a readable COCO instances file ({exc!r})") from None
        by_image: dict[Any, list[dict]] = {}
        for j, a in enumerate(anns):
            if not isinstance(a, dict) or "image_id" not in a:
                self._problem(self.annotations_json, f"annotation #{j}: malformed (no image_id), skipped")
                continue
            by_image.setdefault(a["image_id"], []).append(a)
        self._items: list[tuple[Path, list[dict]]] = []
        known = set()
        for j, im in enumerate(images):
            if not isinstance(im, dict) or "file_name" not in im or "id" not in im:
                self._problem(self.annotations_json, f"image entry #{j}: malformed (needs id and file_name), skipped")
                continue
            known.add(im["id"])
            path = self.images_dir / im["file_name"]
            if not path.is_file():
                self._problem(path, f"image not found (image id {im['id']}), skipped")
                continue
            self._items.append((path, by_image.get(im["id"], [])))
        for iid in by_image.keys() - known:
            self._problem(self.annotations_json, f"annotations reference unknown image id {iid}, skipped")

    def __len__(self) -> int:
        return len(self._items)

    def _load(self, i: int) -> Sample:
        path, anns = self._items[i]
        try:
            image = load_image(path)
        except ImageError as exc:
            raise ImageError(str(path), f"corrupt image, sample skipped ({exc})") from None
        size = image.shape[:2]
        masks: list[np.ndarray] = []
        for a in anns:
            label = f"annotation {a.get('id', '?')}"
            if a.get("iscrowd", 0):
                continue
            seg = a.get("segmentation")
            try:
                if isinstance(seg, dict):
                    m = _decode_rle(seg, size)
                elif isinstance(seg, list):
                    m, note = _fill_polygons(_parse_polygons(seg), size)
                    if note:
                        self._problem(path, f"{label}: {note}")
                else:
                    raise _BadAnnotation("missing or unknown segmentation")
            except _BadAnnotation as exc:
                self._problem(path, f"{label}: {exc}, skipped")
                continue
            self._keep(m, path, label, masks)
        return self._sample(image, masks, path.stem)


class YOLODataset(_Base):
    """YOLO-seg layout: ``root/images/<stem>.<ext>`` + ``root/labels/<stem>.txt``, one object per line
    ``cls x1 y1 x2 y2 ...`` with coordinates normalised to [0, 1]; the class is ignored. An image
    without a label file has no objects."""

    def __init__(self, root: str | os.PathLike) -> None:
        super().__init__()
        self.root = Path(root)
        img_dir, self._labels = self.root / "images", self.root / "labels"
        if not img_dir.is_dir():
            raise FastSAMError(f"{self.root}: no images/ directory (YOLO-seg layout)")
        self._items = sorted(p for p in img_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        stems = {p.stem for p in self._items}
        if self._labels.is_dir():
            for t in sorted(self._labels.glob("*.txt")):
                if t.stem not in stems:
                    self._problem(t, "label file has no image, skipped")

    def __len__(self) -> int:
        return len(self._items)

    def _load(self, i: int) -> Sample:
        path = self._items[i]
        try:
            image = load_image(path)
        except ImageError as exc:
            raise ImageError(str(path), f"corrupt image, sample skipped ({exc})") from None
        h, w = image.shape[:2]
        masks: list[np.ndarray] = []
        lab = self._labels / f"{path.stem}.txt"
        try:
            lines = lab.read_text().splitlines() if lab.is_file() else []
        except (OSError, UnicodeDecodeError) as exc:
            raise _BadAnnotation(str(lab), f"unreadable label file ({exc}), sample skipped") from None
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            label = f"line {n}"
            try:
                parts = line.split()
                try:
                    vals = np.array([float(v) for v in parts[1:]], np.float64)
                    float(parts[0])
                except ValueError:
                    raise _BadAnnotation("non-numeric value") from None
                if vals.size % 2 or vals.size < 6:
                    raise _BadAnnotation(f"{vals.size} coordinates (need an even number >= 6)")
                pts = vals.reshape(-1, 2) * (w, h)
                m, note = _fill_polygons([pts], (h, w))
                if note:
                    self._problem(lab, f"{label}: {note}")
            except _BadAnnotation as exc:
                self._problem(lab, f"{label}: {exc}, skipped")
                continue
            self._keep(m, lab, label, masks)
        return self._sample(image, masks, path.stem)
