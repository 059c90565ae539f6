"""The original FastSAM prompt API, so that scripts written for it keep working.

    from fastsam import FastSAM, FastSAMPrompt
    model = FastSAM("FastSAM-x.pt")
    everything = model("dog.jpg", device="cpu", retina_masks=True, imgsz=1024, conf=0.4, iou=0.9)
    prompt = FastSAMPrompt("dog.jpg", everything, device="cpu")
    ann = prompt.point_prompt(points=[[620, 360]], pointlabel=[1])
    prompt.plot(annotations=ann, output_path="out/dog.jpg")

Differences from the original, on purpose: annotations are numpy bool arrays (K, H, W) at original
resolution (the original returned torch tensors or numpy depending on the call); ``box_prompt``
returns one mask per box in the order given (the original lost the order); out-of-range
coordinates raise ``FastSAMError``; ``text_prompt`` uses local CLIP weights (``clip_weights=``)
or, like ``fastsam prompt --text``, the shipped demo CLIP when none are given; nothing is
downloaded; colours are right for every input kind.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np

from .errors import FastSAMError
from .io.images import load_image
from .prompts import select_by_boxes, select_by_points
from .results import Segments
from .viz import draw_prompts, overlay_masks

__all__ = ["FastSAMPrompt"]


class FastSAMPrompt:
    """Prompt selection over one everything-mode result, with the original's method names."""

    def __init__(
        self,
        image: Any,
        results: Segments | Sequence[Segments] | None,
        device: str = "cpu",
        clip_weights: str | Path | None = None,
        clip_model: str = "ViT-B-32",
    ) -> None:
        self.image = load_image(image)  # RGB
        if isinstance(results, (list, tuple)):
            results = results[0] if results else None
        # a list or tuple of results was unwrapped above: what is left is one result or None
        self.results = cast("Segments | None", results)
        self.device = device
        self.clip_weights = clip_weights
        self.clip_model = clip_model
        if self.results is not None and tuple(self.results.image_size) != self.image.shape[:2]:
            raise FastSAMError(f"image size {self.image.shape[:2]} differs from the results' {self.results.image_size}")

    def _empty(self) -> np.ndarray:
        return np.zeros((0, *self.image.shape[:2]), dtype=bool)

    def everything_prompt(self) -> np.ndarray:
        """All masks, (N, H, W) bool, in score order."""
        return self._empty() if self.results is None else self.results.masks

    def box_prompt(
        self, bbox: Sequence[float] | None = None, bboxes: Sequence[Sequence[float]] | None = None
    ) -> np.ndarray:
        """Per box (xyxy, original pixels) the mask with the highest IoU with it: (K, H, W) bool."""
        if self.results is None:
            return self._empty()
        boxes = [bbox] if bboxes is None else list(bboxes)
        if boxes == [None]:
            raise FastSAMError("box_prompt needs bbox=[x1, y1, x2, y2] or bboxes=[[...], ...]")
        idx = select_by_boxes(self.results, cast("list[Sequence[float]]", boxes))  # [None] was refused above
        return np.stack([self.results.mask(int(k)) if k >= 0 else np.zeros(self.results.image_size, bool) for k in idx])

    def point_prompt(self, points: Sequence[Sequence[float]], pointlabel: Sequence[int]) -> np.ndarray:
        """The original's merged mask for foreground (1) / background (0) points: (1, H, W) bool."""
        if self.results is None:
            return self._empty()
        return select_by_points(self.results, points, pointlabel).mask[None]

    def text_prompt(self, text: str, clip_weights: str | Path | None = None) -> np.ndarray:
        """The mask whose crop CLIP finds most similar to ``text``: (1, H, W) bool.

        CLIP weights: ``clip_weights`` here, else the constructor's, else the shipped demo CLIP (the
        CLI's default too; it knows only synthetic scenes: pass a real CLIP for photographs)."""
        from .text import get_scorer, select_by_text

        if self.results is None:
            return self._empty()
        weights = clip_weights or self.clip_weights
        if weights is None:
            from .weights import default_clip_path

            try:
                weights = default_clip_path()
            except FastSAMError as exc:
                raise FastSAMError(
                    f"text_prompt needs local CLIP weights: FastSAMPrompt(..., clip_weights=PATH) ({exc})"
                ) from exc
        scorer = get_scorer(weights, self.clip_model, self.device)
        idx = select_by_text(self.results, self.image, [text], scorer)[0]
        if idx.size == 0:
            return self._empty()
        return self.results.mask(int(idx[0]))[None]

    def plot(
        self,
        annotations: Any,
        output_path: str | Path,
        bboxes: Sequence[Sequence[float]] | None = None,
        points: Sequence[Sequence[float]] | None = None,
        point_label: Sequence[int] | None = None,
        mask_random_color: bool = True,
        better_quality: bool = True,
        retina: bool = False,
        withContours: bool = True,
    ) -> None:
        """Write the image with ``annotations`` ((K, H, W) masks) drawn over it to ``output_path``.

        ``retina`` is accepted for compatibility; masks are always at original resolution.
        """
        from PIL import Image

        masks = _as_masks(annotations, self.image.shape[:2])
        if better_quality and len(masks):
            import cv2

            close, open_ = np.ones((3, 3), np.uint8), np.ones((8, 8), np.uint8)
            masks = np.stack(
                [
                    cv2.morphologyEx(
                        cv2.morphologyEx(m.astype(np.uint8), cv2.MORPH_CLOSE, close), cv2.MORPH_OPEN, open_
                    )
                    for m in masks
                ]
            ).astype(bool)
        color = None if mask_random_color else (30, 144, 255)
        out = overlay_masks(self.image, masks, contours=withContours, color=color)
        out = draw_prompts(out, points=points, labels=point_label, boxes=bboxes)
        path = Path(output_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(out).save(path)


def _as_masks(annotations: Any, size: tuple[int, int]) -> np.ndarray:
    if isinstance(annotations, dict):
        annotations = [annotations]
    if isinstance(annotations, list) and annotations and isinstance(annotations[0], dict):
        annotations = [a["segmentation"] for a in annotations]
    if hasattr(annotations, "detach"):  # a torch tensor
        annotations = annotations.detach().cpu().numpy()
    masks = np.asarray(annotations)
    if masks.size == 0:
        return np.zeros((0, *size), dtype=bool)
    if masks.ndim == 2:
        masks = masks[None]
    if masks.shape[1:] != tuple(size):
        raise FastSAMError(f"annotations of size {masks.shape[1:]} do not match the image {size}")
    return masks.astype(bool)
