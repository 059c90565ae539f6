"""The original FastSAM prompt API, so that scripts written for it keep working.

    from fastsam import FastSAM, FastSAMPrompt
    model = FastSAM("FastSAM-x.pt")
    everything = model("dog.jpg", device="cpu", retina_masks=True, imgsz=1024, conf=0.4, iou=0.9)
    prompt = FastSAMPrompt("dog.jpg", everything, device="cpu")
    ann = prompt.point_prompt(points=[[620, 360]], pointlabel=[1])
    prompt.plot(annotations=ann, output_path="out/dog.jpg")

Return types are the original's: ``everything_prompt()`` a float32 0/1 torch tensor (N, H, W) on
the model's device, ``box_prompt()`` a float32 numpy array (K, H, W), ``point_prompt()`` and
``text_prompt()`` a bool numpy array (1, H, W); every prompt returns ``[]`` when nothing was
segmented. ``img`` is the image (RGB for paths and Pillow images, the array as given otherwise)
and ``results`` the everything-mode results as a list of ultralytics-shaped ``Results``.

Differences from the original, on purpose: ``box_prompt`` keeps the boxes' order when it drops
repeated masks (the original's set lost it); out-of-range coordinates raise ``FastSAMError``;
``text_prompt`` uses local CLIP weights (``clip_weights=``) or, like ``fastsam prompt --text``, the
shipped demo CLIP when none are given; nothing is downloaded; colours are right for every input kind.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from ..errors import FastSAMError
from ..io.images import load_image
from ..prompts import select_by_boxes, select_by_points
from ..results import Segments
from ..results_ultralytics import Results
from ..viz import draw_prompts, overlay_masks

__all__ = ["FastSAMPrompt"]


class FastSAMPrompt:
    """Prompt selection over one everything-mode result, with the original's method names."""

    def __init__(
        self,
        image: Any,
        results: Segments | Results | Sequence[Segments | Results] | None,
        device: str = "cpu",
        clip_weights: str | Path | None = None,
        clip_model: str = "ViT-B-32",
    ) -> None:
        self.image = load_image(image)  # RGB
        self._image_path = Path(image).resolve() if isinstance(image, (str, Path)) else None
        if isinstance(results, (list, tuple)):
            results = results[0] if results else None
        if isinstance(results, Results):
            results = results.segments
        # a list, tuple or Results was unwrapped above: what is left is one Segments or None
        self.segments = cast("Segments | None", results)
        self.device = device
        self.clip_weights = clip_weights
        self.clip_model = clip_model
        if self.segments is not None and tuple(self.segments.image_size) != self.image.shape[:2]:
            raise FastSAMError(
                f"image size {self.image.shape[:2]} differs from the results' {self.segments.image_size}"
            )

    @property
    def img(self) -> np.ndarray:
        """The image as the original keeps it: (H, W, 3) uint8 (RGB for paths and Pillow images)."""
        return self.image

    @property
    def ori_img(self) -> np.ndarray:
        """The image in BGR, as the original's early versions kept it (``cv2.imread``)."""
        return np.ascontiguousarray(self.image[..., ::-1])

    @property
    def results(self) -> list[Results] | None:
        """The everything-mode results, as the original's list of Results (None if none were given)."""
        if self.segments is None:
            return None
        return [Results.from_rgb(self.segments, self.image, device=_torch_device(self.device))]

    def _nothing(self) -> bool:
        return self.segments is None or len(self.segments) == 0

    def everything_prompt(self) -> torch.Tensor | list[Any]:
        """All masks, (N, H, W) float32 0/1 torch tensor in score order (``[]`` if none)."""
        if self.segments is None or len(self.segments) == 0:
            return []
        return torch.from_numpy(self.segments.masks.astype(np.float32)).to(_torch_device(self.device))

    def box_prompt(
        self, bbox: Sequence[float] | None = None, bboxes: Sequence[Sequence[float]] | None = None
    ) -> np.ndarray | list[Any]:
        """Per box (xyxy, original pixels) the mask with the highest IoU with it: (K, H, W) float32,
        one mask per distinct choice, in the order of the boxes (``[]`` if nothing was segmented)."""
        boxes = [bbox] if bboxes is None else list(bboxes)
        if boxes == [None]:
            raise FastSAMError("box_prompt needs bbox=[x1, y1, x2, y2] or bboxes=[[...], ...]")
        if self.segments is None or len(self.segments) == 0:
            return []
        seg = self.segments
        idx = select_by_boxes(seg, cast("list[Sequence[float]]", boxes))  # [None] was refused above
        picked = list(dict.fromkeys(int(k) for k in idx))  # repeated choices once, boxes' order kept
        # a box that overlaps no mask gets an empty mask (the original's argmax would take mask 0)
        return np.stack([seg.mask(k) if k >= 0 else np.zeros(seg.image_size, bool) for k in picked]).astype(np.float32)

    def point_prompt(self, points: Sequence[Sequence[float]], pointlabel: Sequence[int]) -> np.ndarray | list[Any]:
        """The original's merged mask for foreground (1) / background (0) points: (1, H, W) bool."""
        if self.segments is None or len(self.segments) == 0:
            return []
        return select_by_points(self.segments, points, pointlabel).mask[None]

    def text_prompt(self, text: str, clip_weights: str | Path | None = None) -> np.ndarray | list[Any]:
        """The mask whose crop CLIP finds most similar to ``text``: (1, H, W) bool.

        CLIP weights: ``clip_weights`` here, else the constructor's, else the shipped demo CLIP (the
        CLI's default too; it knows only synthetic scenes: pass a real CLIP for photographs)."""
        from ..text import scorer_or_demo, select_by_text

        if self.segments is None or len(self.segments) == 0:
            return []
        needs = "text_prompt needs local CLIP weights: FastSAMPrompt(..., clip_weights=PATH)"
        scorer = scorer_or_demo(clip_weights or self.clip_weights, self.clip_model, self.device, needs)
        idx = select_by_text(self.segments, self.image, [text], scorer)[0]
        if idx.size == 0:
            return []
        return self.segments.mask(int(idx[0]))[None]

    def plot_to_result(
        self,
        annotations: Any,
        bboxes: Sequence[Sequence[float]] | None = None,
        points: Sequence[Sequence[float]] | None = None,
        point_label: Sequence[int] | None = None,
        mask_random_color: bool = True,
        better_quality: bool = True,
        retina: bool = False,
        withContours: bool = True,
    ) -> np.ndarray:
        """The image with ``annotations`` ((K, H, W) masks: tensor, array, list of dicts or ``[]``)
        drawn over it, as an (H, W, 3) uint8 RGB array at the original resolution.

        ``retina`` is accepted for compatibility; masks are always at original resolution.
        """
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
        return draw_prompts(out, points=points, labels=point_label, boxes=bboxes)

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
        """Write :meth:`plot_to_result` to ``output_path`` (atomically; never over the input image)."""
        from PIL import Image

        from ..io.atomic import atomic_path

        out = self.plot_to_result(
            annotations, bboxes, points, point_label, mask_random_color, better_quality, retina, withContours
        )
        path = Path(output_path)
        if self._image_path is not None and path.resolve() == self._image_path:
            raise FastSAMError(f"{path}: the plot would replace the input image")
        path.parent.mkdir(parents=True, exist_ok=True)
        fmt = Image.registered_extensions().get(path.suffix.lower())
        if fmt is None:
            raise FastSAMError(f"{path}: unknown image format {path.suffix!r} (use .png or .jpg)")
        with atomic_path(path) as tmp:
            Image.fromarray(out).save(tmp, format=fmt)


def _torch_device(device: str | torch.device) -> torch.device:
    """The prompt's device, checked as everywhere in fastsam (a missing GPU is a clear error)."""
    from ..devices import resolve_device

    return resolve_device(device)


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
