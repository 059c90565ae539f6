"""The functional helpers of the original repo's ``utils/tools.py``, for code that imports them.

Same names, arguments and return types as the original (Grounded-Segment-Anything's FastSAM demo
calls ``box_prompt(results[0].masks.data, box, h, w)``; Gradio-style apps call ``format_results``,
``point_prompt`` and ``text_prompt``). Masks are (N, H, W) tensors or arrays as ``masks.data``
gives them; boxes are xyxy pixels of the original image; ``target_height`` / ``target_width`` are
the original image's size (masks of another size get the coordinates scaled, as the original does).

Differences, on purpose: points outside the masks raise FastSAMError (the original raised
IndexError or wrapped around); ``text_prompt`` takes local CLIP weights (``clip_weights=``, default
the shipped demo CLIP) instead of downloading ViT-B/32; ``fast_process`` writes atomically.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import FastSAMError
from ..io.images import load_image
from ..results import Segments
from ..results_ultralytics import Results

__all__ = [
    "box_prompt",
    "convert_box_xywh_to_xyxy",
    "crop_image",
    "fast_process",
    "filter_masks",
    "format_results",
    "get_bbox_from_mask",
    "point_prompt",
    "segment_image",
    "text_prompt",
]


def convert_box_xywh_to_xyxy(box: Sequence[float]) -> list[float]:
    """[x, y, w, h] -> [x1, y1, x2, y2]."""
    x, y, w, h = box[:4]
    return [x, y, x + w, y + h]


def segment_image(image: Any, bbox: Sequence[int]) -> Any:
    """A Pillow RGB image the size of ``image``, white except inside ``bbox`` (xyxy), where it keeps
    ``image``'s pixels (the original's CLIP crop)."""
    from PIL import Image

    arr = load_image(image)
    x1, y1, x2, y2 = (int(v) for v in bbox[:4])
    out = np.full_like(arr, 255)
    out[y1:y2, x1:x2] = arr[y1:y2, x1:x2]
    return Image.fromarray(out)


def format_results(result: Results | Segments, filter: int = 0) -> list[dict[str, Any]]:
    """One dict per mask with at least ``filter`` pixels: ``id``, ``segmentation`` ((H, W) bool),
    ``bbox`` (the detection's (6,) tensor row: xyxy, conf, cls), ``score`` and ``area``."""
    res = result if isinstance(result, Results) else Results.from_rgb(result, _blank(result))
    out = []
    for i in range(len(res)):
        mask = res.segments.mask(i)
        area = int(mask.sum())
        if area < filter:
            continue
        out.append({"id": i, "segmentation": mask, "bbox": res.boxes.data[i], "score": res.boxes.conf[i], "area": area})
    return out


def _blank(seg: Segments) -> np.ndarray:
    return np.zeros((*seg.image_size, 3), dtype=np.uint8)


def filter_masks(annotations: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], set[int]]:
    """Sort by area (largest first, in place) and drop a mask mostly (> 80 %) inside a larger one."""
    annotations.sort(key=lambda a: a["area"], reverse=True)
    to_remove: set[int] = set()
    for i, a in enumerate(annotations):
        for j in range(i + 1, len(annotations)):
            b = annotations[j]
            if j not in to_remove and b["area"] < a["area"]:
                inter = np.logical_and(a["segmentation"], b["segmentation"]).sum()
                if inter / max(int(np.sum(b["segmentation"])), 1) > 0.8:
                    to_remove.add(j)
    return [a for i, a in enumerate(annotations) if i not in to_remove], to_remove


def get_bbox_from_mask(mask: np.ndarray) -> list[int]:
    """[x1, y1, x2, y2] (exclusive ends) of all of the mask's pixels."""
    m = np.asarray(mask).astype(bool)
    rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
    if rows.size == 0:
        raise FastSAMError("get_bbox_from_mask: the mask is empty")
    return [int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1]


def crop_image(
    annotations: list[dict[str, Any]], image: Any
) -> tuple[list[Any], list[list[int]], list[Any], list[int], list[dict[str, Any]]]:
    """The original's CLIP crops: (crops, their boxes, [], ids of masks <= 100 px left out, annotations)."""
    from PIL import Image

    pil = Image.fromarray(load_image(image))
    mask_h, mask_w = np.asarray(annotations[0]["segmentation"]).shape
    if pil.size != (mask_w, mask_h):
        pil = pil.resize((mask_w, mask_h))
    crops, boxes, filter_id = [], [], []
    for i, ann in enumerate(annotations):
        if np.sum(ann["segmentation"]) <= 100:
            filter_id.append(i)
            continue
        box = get_bbox_from_mask(ann["segmentation"])
        crops.append(segment_image(pil, box))
        boxes.append(box)
    return crops, boxes, [], filter_id, annotations


def _as_tensor(masks: Any) -> torch.Tensor:
    if isinstance(masks, torch.Tensor):
        return masks
    return torch.from_numpy(np.asarray(masks))


def box_prompt(
    masks: Any, bbox: Sequence[float], target_height: int, target_width: int
) -> tuple[np.ndarray, torch.Tensor]:
    """The mask (as a numpy array of ``masks``' dtype) with the highest IoU with the filled box, and
    its index (a 0-d tensor). The box is scaled to the masks' size, rounded and clipped as in the original."""
    m = _as_tensor(masks)
    if m.ndim != 3 or len(m) == 0:
        raise FastSAMError(f"box_prompt needs (N, H, W) masks with N >= 1, got shape {tuple(m.shape)}")
    h, w = int(m.shape[1]), int(m.shape[2])
    b = [float(v) for v in bbox[:4]]
    if (h, w) != (target_height, target_width):
        sx, sy = w / target_width, h / target_height
        b = [float(int(b[0] * sx)), float(int(b[1] * sy)), float(int(b[2] * sx)), float(int(b[3] * sy))]
    x1, y1 = max(round(b[0]), 0), max(round(b[1]), 0)
    x2, y2 = min(round(b[2]), w), min(round(b[3]), h)
    if x2 <= x1 or y2 <= y1:
        raise FastSAMError(f"box {list(bbox)} has no area inside the {w}x{h} masks")
    mf = m.float()
    inside = mf[:, y1:y2, x1:x2].sum(dim=(1, 2))
    union = (y2 - y1) * (x2 - x1) + mf.sum(dim=(1, 2)) - inside
    idx = torch.argmax(inside / union)
    return m[idx].cpu().numpy(), idx


def _mask_of(annotation: Any) -> np.ndarray:
    return np.asarray(annotation["segmentation"] if isinstance(annotation, dict) else annotation)


def point_prompt(
    masks: Sequence[Any],
    points: Sequence[Sequence[float]],
    pointlabel: Sequence[int],
    target_height: int,
    target_width: int,
) -> tuple[np.ndarray, int]:
    """The original functional rule: sum (+ for label 1, - for label 0) of every mask containing
    each point, thresholded at >= 1: an (H, W) bool mask, and 0. ``masks``: annotation dicts or arrays."""
    if len(masks) == 0:
        raise FastSAMError("point_prompt needs at least one mask")
    h, w = _mask_of(masks[0]).shape[:2]
    pts = [[float(p[0]), float(p[1])] for p in points]
    if (h, w) != (target_height, target_width):
        pts = [[int(x * w / target_width), int(y * h / target_height)] for x, y in pts]
    ipts = [(int(x), int(y)) for x, y in pts]
    for k, (x, y) in enumerate(ipts):
        if not (0 <= x < w and 0 <= y < h):
            raise FastSAMError(f"point {k} ({points[k][0]}, {points[k][1]}) lies outside the {w}x{h} masks")
    acc = np.zeros((h, w), dtype=np.float64)
    for ann in masks:
        mask = _mask_of(ann).astype(np.float64)
        for (x, y), label in zip(ipts, pointlabel):
            if mask[y, x] == 1:
                acc += mask if label == 1 else -mask
    return acc >= 1, 0


def text_prompt(
    annotations: list[dict[str, Any]],
    text: Any,
    image: Any = None,
    device: str = "cpu",
    wider: bool = False,
    threshold: float = 0.9,
    clip_weights: str | Path | None = None,
) -> tuple[np.ndarray, int]:
    """The mask CLIP finds most similar to ``text`` among masks > 100 px: its (H, W) bool
    ``segmentation`` and its position in ``annotations``. ``wider`` swaps it for the largest mask
    holding more than ``threshold`` of its pixels. Also takes the original's ``(annotations, args)``
    with ``args.text_prompt``, ``args.img_path`` and ``args.device``."""
    from ..text import mask_crops, scorer_or_demo

    if hasattr(text, "text_prompt"):  # the original's argparse namespace
        args = text
        text, image, device = args.text_prompt, args.img_path, getattr(args, "device", device)
    if image is None:
        raise FastSAMError("text_prompt needs the image (a path, array or Pillow image)")
    rgb = load_image(image)
    seg = Segments.from_masks(np.stack([_mask_of(a).astype(bool) for a in annotations]), np.ones(len(annotations)))
    eligible = np.flatnonzero(seg.areas > 100)
    if eligible.size == 0:
        raise FastSAMError("text_prompt: no mask is larger than 100 pixels")
    scorer = scorer_or_demo(clip_weights, None, device, "text_prompt needs local CLIP weights: clip_weights=PATH")
    sims = np.asarray(scorer.similarity(mask_crops(seg, rgb, eligible), [str(text)]))[0]
    best = int(eligible[int(np.argmax(sims))])
    if wider:
        chosen = seg.masks[best]
        for k in np.argsort(-seg.areas, kind="stable"):
            if (seg.masks[k] & chosen).sum() / max(int(chosen.sum()), 1) > threshold:
                best = int(k)
                break
    return _mask_of(annotations[best]).astype(bool), best


def fast_process(
    annotations: Any,
    args: Any,
    mask_random_color: bool,
    bbox: Sequence[float] | None = None,
    points: Sequence[Sequence[float]] | None = None,
    edges: bool = False,
) -> None:
    """Draw ``annotations`` over ``args.img_path`` and write ``args.output/<image name>`` (the
    original's plotting entry point; reads ``better_quality``, ``withContours`` and ``point_label``)."""
    from .prompt import FastSAMPrompt

    prompt = FastSAMPrompt(args.img_path, None)
    out = Path(args.output) / os.path.basename(str(args.img_path))
    prompt.plot(
        annotations,
        out,
        bboxes=None if bbox is None else [list(bbox)],
        points=points,
        point_label=getattr(args, "point_label", None),
        mask_random_color=mask_random_color,
        better_quality=bool(getattr(args, "better_quality", True)),
        withContours=bool(getattr(args, "withContours", True)),
    )
