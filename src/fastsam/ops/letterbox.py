"""Letterbox resize (the original's ``auto`` rectangle) and the inverse mapping of boxes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["Letterbox", "letterbox"]

PAD_VALUE = 114


@dataclass(frozen=True)
class Letterbox:
    """Geometry of one letterboxed image.

    Attributes:
        orig_size: (h0, w0) of the original image.
        input_size: (H, W) of the network input; both multiples of the stride.
        resized: (h, w) of the image inside the input, before padding.
        pad: (top, left) padding in input pixels.
    """

    orig_size: tuple[int, int]
    input_size: tuple[int, int]
    resized: tuple[int, int]
    pad: tuple[int, int]

    @property
    def gain(self) -> float:
        """Input pixels per original pixel, as the original's ``scale_boxes`` computes it."""
        (h0, w0), (h, w) = self.orig_size, self.input_size
        return min(h / h0, w / w0)

    def boxes_to_original(self, boxes: Tensor) -> Tensor:
        """(N, 4) xyxy in input pixels -> original pixels, clipped to the image (new tensor)."""
        (h0, w0), (h, w) = self.orig_size, self.input_size
        g = self.gain
        pad_x = round((w - w0 * g) / 2 - 0.1)
        pad_y = round((h - h0 * g) / 2 - 0.1)
        out = boxes.clone()
        out[:, [0, 2]] = ((out[:, [0, 2]] - pad_x) / g).clamp_(0, w0)
        out[:, [1, 3]] = ((out[:, [1, 3]] - pad_y) / g).clamp_(0, h0)
        return out


def letterbox(
    image: np.ndarray, imgsz: int, stride: int = 32, shape: tuple[int, int] | None = None
) -> tuple[Tensor, Letterbox]:
    """Resize keeping aspect ratio so the long side is ``imgsz``, pad to the next stride multiple.

    Same arithmetic as the original (ultralytics ``LetterBox(auto=True)``): scale
    r = min(S/h, S/w), size (round(w r), round(h r)), OpenCV bilinear resize, padding value 114
    split as top = round(dh - 0.1), bottom = round(dh + 0.1).

    Args:
        image: (h0, w0, 3) uint8, RGB.
        imgsz: target long side S (a multiple of ``stride``).
        shape: a fixed (H, W) input instead (a static export's; ultralytics' ``auto=False``): scale
            r = min(H/h, W/w), then pad to exactly (H, W), centred. ``imgsz`` is then ignored.

    Returns:
        (1, 3, H, W) float32 tensor in [0, 1] (RGB), and the geometry. The tensor is in channels-last
        memory (a view of the HWC image's layout): the layout the fast path convolves in, so no
        transposing copy is made.
    """
    import cv2

    h0, w0 = image.shape[:2]
    th, tw = shape if shape is not None else (imgsz, imgsz)
    r = min(th / h0, tw / w0)
    new_w, new_h = max(round(w0 * r), 1), max(round(h0 * r), 1)
    if shape is not None:
        dw, dh = (tw - new_w) / 2, (th - new_h) / 2
    else:
        dw, dh = (imgsz - new_w) % stride / 2, (imgsz - new_h) % stride / 2
    if (new_w, new_h) != (w0, h0):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    if top or bottom or left or right:
        image = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)
    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).unsqueeze(0).float().div_(255.0)
    geom = Letterbox((h0, w0), (image.shape[0], image.shape[1]), (new_h, new_w), (top, left))
    return tensor, geom
