"""Tiny datasets for the zero-shot tests, built in tmp_path: BSDS-layout scenes with several
annotators (``.mat`` written by scipy.io.savemat) and COCO / LVIS v1 annotation files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from skimage.morphology import thin

from fastsam.data.synth import render_scene


def boundary(mask: np.ndarray) -> np.ndarray:
    """Inner boundary of a bool mask: mask pixels with a 4-neighbour outside it (image edge excluded)."""
    m = np.pad(mask, 1, mode="edge")
    inner = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
    return mask & ~inner


def write_mat(path: Path, boundaries: list[np.ndarray]) -> None:
    """A BSDS ``groundTruth`` cell (1 x K structs with Segmentation and Boundaries)."""
    import scipy.io

    cell = np.empty((1, len(boundaries)), dtype=object)
    for k, b in enumerate(boundaries):
        cell[0, k] = {"Segmentation": np.ones(b.shape, dtype=np.uint16), "Boundaries": b.astype(np.uint8)}
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), {"groundTruth": cell})


def masks_of(anns: list[dict]) -> list[np.ndarray]:
    from pycocotools import mask as mask_utils

    return [mask_utils.decode(a["segmentation"]).astype(bool) for a in anns]


def write_bsds(root: Path, n: int = 2, size: tuple[int, int] = (96, 128), split: str = "test") -> list[str]:
    """n synthetic scenes as ROOT/images/<split>/<id>.jpg + groundTruth/<split>/<id>.mat (2 annotators:
    the object boundaries, and the same shifted by one pixel)."""
    ids = []
    for i in range(n):
        rgb, anns = render_scene(np.random.default_rng([7, i]), size)
        key = f"{100 + i}"
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(root / "images" / split / f"{key}.jpg", quality=95)
        b = np.zeros(size, dtype=bool)
        for m in masks_of(anns):
            b |= boundary(m)
        b = thin(b)  # one pixel wide, as BSDS boundaries are (and stable under the protocol's thinning)
        shifted = np.zeros_like(b)
        shifted[:, 1:] = b[:, :-1]
        write_mat(root / "groundTruth" / split / f"{key}.mat", [b, shifted])
        ids.append(key)
    return ids


def write_coco(root: Path, n: int = 2, size: tuple[int, int] = (96, 128), lvis: bool = False) -> Path:
    """n synthetic scenes as ROOT/images/*.jpg and ROOT/instances.json (COCO, or LVIS v1 with coco_url
    names, frequencies and federated lists); categories = the shape kinds."""
    kinds = ["polygon", "ellipse", "ring", "star", "blob", "bar"]
    freq = ["f", "c", "r", "f", "c", "r"]
    images, annotations = [], []
    (root / "images").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        rgb, anns = render_scene(np.random.default_rng([9, i]), size)
        name = f"{i + 1:012d}.jpg"
        Image.fromarray(rgb).save(root / "images" / name, quality=95)
        im = {"id": i + 1, "height": size[0], "width": size[1]}
        if lvis:
            im.update(
                coco_url=f"http://images.example/val2017/{name}", neg_category_ids=[], not_exhaustive_category_ids=[]
            )
        else:
            im["file_name"] = name
        images.append(im)
        for a in anns:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": kinds.index(a["shape"]) + 1,
                    "segmentation": a["segmentation"],
                    "bbox": a["bbox"],
                    "area": a["area"],
                    "iscrowd": 0,
                }
            )
    cats = [{"id": k + 1, "name": s} for k, s in enumerate(kinds)]
    if lvis:
        for c, f in zip(cats, freq):
            c["frequency"] = f
    ann = root / "instances.json"
    ann.write_text(json.dumps({"images": images, "annotations": annotations, "categories": cats}))
    return ann
