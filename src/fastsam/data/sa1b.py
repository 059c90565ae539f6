"""SA-1B reader: per-image JSON pairs in folders or .tar shards (contract: :mod:`fastsam.data.datasets`)."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FastSAMError, ImageError
from ..io.images import load_image
from ._common import Sample, _BadAnnotation, _Base, _decode_image_bytes, _decode_rle

__all__ = ["SA1BDataset"]


def _member_bytes(tf: tarfile.TarFile, member: str | tarfile.TarInfo) -> bytes:
    """Bytes of a regular-file member (the index keeps only those, for which extractfile gives a file)."""
    f = tf.extractfile(member)
    assert f is not None
    return f.read()


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
                        meta = json.loads(_member_bytes(tf, members[name]))
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
            tf = tarfile.open(path)  # noqa: SIM115 - cached: one open archive per process for random access
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
            assert container is not None  # "tar" entries always name their shard
            jfile, ifile = f"{container}:{js}", f"{container}:{img}"
            try:
                tf = self._tar(container)
                raw = _member_bytes(tf, js)
                data = _member_bytes(tf, img)
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
