"""Training-time augmentation (YOLOv8-style): square letterbox, 4-image mosaic, random affine, HSV, flips.

Frames: images are (H, W, 3) uint8 RGB; masks are (K, H, W) bool in the same pixel grid; a point is
(x, y) with x = column; pixel (x, y) is ``image[y, x]`` and its centre sits at integer coordinates
(OpenCV's convention for ``warpAffine``; ``resize`` is centre-aligned, so both agree).

Every random choice comes from the ``np.random.Generator`` passed in, so a caller that seeds it per
sample gets exactly reproducible augmentation.

Masks follow the image through every geometric step with nearest-neighbour sampling. Internally they
travel bit-packed (8 instances per uint8 plane, :func:`pack_masks`): nearest-neighbour resampling
moves whole bytes, so it is exact on packed bits, and one OpenCV call warps 8 instances at once -
8x less work than warping each bool mask (measured: 40 masks 480x640 -> 640x640 take ~70 ms one by
one, ~25 ms packed including packing and unpacking).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import cv2
import numpy as np

from ..errors import FastSAMError
from ..ops.letterbox import PAD_VALUE
from .maskbits import is_affine, pack_masks, resize_bits, unpack_masks, warp_bits

__all__ = [
    "AugmentConfig",
    "Layer",
    "affine_matrix",
    "augment_hsv",
    "flip_lr",
    "flip_ud",
    "letterbox_layers",
    "letterbox_square",
    "mosaic4",
    "mosaic_layers",
    "pack_masks",
    "random_affine",
    "unpack_masks",
    "warp_image",
]


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation hyper-parameters (YOLOv8 names and meanings; defaults are its training defaults
    except ``min_area``).

    Attributes:
        mosaic: probability of a 4-image mosaic.
        degrees: rotation drawn uniformly in [-degrees, +degrees].
        translate: shift of the image centre, uniform in +/- translate * output size (per axis).
        scale: zoom drawn uniformly in [1 - scale, 1 + scale] (must be < 1).
        shear: shear angles (degrees) drawn uniformly in [-shear, +shear], per axis.
        perspective: perspective coefficients drawn uniformly in [-perspective, +perspective].
        hsv_h, hsv_s, hsv_v: hue shift (fraction of the hue circle), saturation and value gains:
            each drawn uniformly in [-gain, +gain]; hue is added, saturation/value multiply (1 + g).
        fliplr, flipud: probabilities of a left-right / up-down flip.
        min_area: instances whose visible area after augmentation is below this many input pixels are dropped.
    """

    mosaic: float = 1.0
    degrees: float = 0.0
    translate: float = 0.1
    scale: float = 0.5
    shear: float = 0.0
    perspective: float = 0.0
    hsv_h: float = 0.015
    hsv_s: float = 0.7
    hsv_v: float = 0.4
    fliplr: float = 0.5
    flipud: float = 0.0
    min_area: int = 4

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise FastSAMError(f"AugmentConfig.{f.name} must be a finite number >= 0, got {v!r}")
        for name in ("mosaic", "fliplr", "flipud"):
            if getattr(self, name) > 1:
                raise FastSAMError(f"AugmentConfig.{name} is a probability, got {getattr(self, name)} (> 1)")
        if self.scale >= 1:
            raise FastSAMError(f"AugmentConfig.scale must be < 1 (zoom range 1 +/- scale), got {self.scale}")
        if self.translate > 1:
            raise FastSAMError(f"AugmentConfig.translate must be <= 1, got {self.translate}")
        if int(self.min_area) != self.min_area:
            raise FastSAMError(f"AugmentConfig.min_area must be a whole number of pixels, got {self.min_area}")


def _translation(x: float, y: float) -> np.ndarray:
    return np.array([[1, 0, x], [0, 1, y], [0, 0, 1]], np.float64)


# ----------------------------------------------------------------------------------------------
# Layers: masks of one source image placed on a canvas without materialising the canvas for them.


@dataclass
class Layer:
    """Instances of one source image on a canvas: ``bits`` (C, h, w) packed masks of ``k`` instances
    whose pixel (0, 0) sits at canvas pixel ``offset`` = (x, y); outside that window they are empty.

    A mosaic keeps four layers instead of a (K, 2S, 2S) canvas of masks, and the affine warps each
    layer straight to the output (composing the offset into the matrix), which is pixel-for-pixel
    what warping the materialised canvas would give: the offset is an integer shift.
    """

    bits: np.ndarray
    k: int
    offset: tuple[int, int]

    def warp(self, matrix: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
        """(C, out_h, out_w) bits of this layer after the canvas -> output ``matrix`` (3x3)."""
        return warp_bits(self.bits, matrix @ _translation(*self.offset), out_hw)


def _materialise(layers: Sequence[Layer], canvas_hw: tuple[int, int]) -> np.ndarray:
    """(sum k, H, W) bool masks of ``layers`` on a canvas of ``canvas_hw``."""
    out = [np.zeros((0, *canvas_hw), bool)]
    for layer in layers:
        full = np.zeros((layer.bits.shape[0], *canvas_hw), np.uint8)
        (x, y), (h, w) = layer.offset, layer.bits.shape[1:]
        full[:, y : y + h, x : x + w] = layer.bits
        out.append(unpack_masks(full, layer.k))
    return np.concatenate(out)


def _check_pair(image: np.ndarray, masks: np.ndarray) -> None:
    if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8):
        got = getattr(image, "shape", type(image).__name__)
        raise FastSAMError(f"augmentation expects an (H, W, 3) uint8 RGB image, got {got}")
    if not (isinstance(masks, np.ndarray) and masks.ndim == 3 and masks.dtype == bool):
        got = getattr(masks, "shape", type(masks).__name__)
        raise FastSAMError(f"augmentation expects (K, H, W) bool masks, got {got}")
    if masks.shape[1:] != image.shape[:2]:
        raise FastSAMError(f"masks of size {masks.shape[1:]} do not match the image size {image.shape[:2]}")


def _fit(image: np.ndarray, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Resize so the long side is ``size`` (aspect kept; bilinear like inference ``letterbox``).
    Returns the image and the (h, w) it got."""
    h0, w0 = image.shape[:2]
    r = min(size / h0, size / w0)
    new_h, new_w = max(round(h0 * r), 1), max(round(w0 * r), 1)
    if (new_h, new_w) != (h0, w0):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return image, (new_h, new_w)


def _fit_layer(image: np.ndarray, masks: np.ndarray, boxes: np.ndarray | None, size: int) -> tuple[np.ndarray, Layer]:
    """Image and packed masks resized to long side ``size``; the layer's offset is (0, 0)."""
    if boxes is not None and np.shape(boxes) != (len(masks), 4):
        boxes = None  # not usable as packing windows: read the whole masks
    img, hw = _fit(image, size)
    return img, Layer(resize_bits(pack_masks(masks, boxes), hw), len(masks), (0, 0))


def letterbox_layers(
    image: np.ndarray, masks: np.ndarray, size: int, boxes: np.ndarray | None = None
) -> tuple[np.ndarray, list[Layer]]:
    """:func:`letterbox_square` with the masks left as one :class:`Layer` (see there)."""
    _check_pair(image, masks)
    img, layer = _fit_layer(image, masks, boxes, size)
    h, w = img.shape[:2]
    # same split as the inference letterbox: top = round(dh - 0.1), bottom = round(dh + 0.1)
    top, left = round((size - h) / 2 - 0.1), round((size - w) / 2 - 0.1)
    canvas = np.full((size, size, 3), PAD_VALUE, np.uint8)
    canvas[top : top + h, left : left + w] = img
    layer.offset = (left, top)
    return canvas, [layer]


def letterbox_square(image: np.ndarray, masks: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Resize so the long side is ``size`` (keeping the aspect ratio), centre on a gray (114) square.

    The image is resized bilinearly and split-padded exactly like the inference letterbox
    (:func:`fastsam.ops.letterbox.letterbox`, top = round(dh - 0.1)), masks nearest-neighbour.

    Args:
        image: (H, W, 3) uint8 RGB.
        masks: (K, H, W) bool.

    Returns:
        (size, size, 3) uint8 image and (K, size, size) bool masks.
    """
    canvas, layers = letterbox_layers(image, masks, size)
    return canvas, _materialise(layers, (size, size))


def _item_parts(item: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    if hasattr(item, "image") and hasattr(item, "masks"):
        return item.image, item.masks, getattr(item, "boxes", None)
    image, masks = item
    return image, masks, None


def mosaic_layers(
    rng: np.random.Generator, items: Sequence[Any], size: int, centre: tuple[int, int] | None = None
) -> tuple[np.ndarray, list[Layer]]:
    """:func:`mosaic4` with the masks left as :class:`Layer` objects (see there)."""
    if len(items) != 4:
        raise FastSAMError(f"a mosaic needs 4 images, got {len(items)}")
    s2 = 2 * size
    if centre is None:  # the four images meet at a random point of the central half of the canvas
        xc, yc = (int(v) for v in rng.uniform(size / 2, 3 * size / 2, 2))
    else:
        xc, yc = (int(v) for v in centre)
        if not (0 <= xc <= s2 and 0 <= yc <= s2):
            raise FastSAMError(f"mosaic centre {centre} is outside the {s2}x{s2} canvas")
    canvas = np.full((s2, s2, 3), PAD_VALUE, np.uint8)
    layers = []
    for j, item in enumerate(items):
        image, masks, boxes = _item_parts(item)
        _check_pair(image, masks)
        img, layer = _fit_layer(image, masks, boxes, size)
        h, w = img.shape[:2]
        # canvas window of image j: its inner corner touches the centre (0 top-left, 1 top-right,
        # 2 bottom-left, 3 bottom-right); whatever sticks out of the canvas is cut off
        x1, x2 = (max(xc - w, 0), xc) if j in (0, 2) else (xc, min(xc + w, s2))
        y1, y2 = (max(yc - h, 0), yc) if j in (0, 1) else (yc, min(yc + h, s2))
        # matching window of the image: the part next to that inner corner
        sx1 = w - (x2 - x1) if j in (0, 2) else 0
        sy1 = h - (y2 - y1) if j in (0, 1) else 0
        sx2, sy2 = sx1 + (x2 - x1), sy1 + (y2 - y1)
        canvas[y1:y2, x1:x2] = img[sy1:sy2, sx1:sx2]
        layer.bits, layer.offset = layer.bits[:, sy1:sy2, sx1:sx2], (x1, y1)
        layers.append(layer)
    return canvas, layers


def mosaic4(
    rng: np.random.Generator, items: Sequence[Any], size: int, centre: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Four images on a (2 size) x (2 size) gray (114) canvas, meeting at a random centre.

    Each item (``(image, masks)`` or a :class:`~fastsam.data.datasets.Sample`) is first resized so its
    long side is ``size``. Item 0 goes top-left of the centre (its bottom-right corner on it), 1
    top-right, 2 bottom-left, 3 bottom-right; parts outside the canvas are cut off.

    Args:
        rng: draws the centre (x, y), uniform in [size/2, 3 size/2) per axis, unless ``centre`` is given.
        items: 4 x (image (H, W, 3) uint8 RGB, masks (K, H, W) bool).

    Returns:
        (2 size, 2 size, 3) uint8 canvas and (K0 + K1 + K2 + K3, 2 size, 2 size) bool masks, in
        item order (instances cut off entirely stay, as empty masks).
    """
    canvas, layers = mosaic_layers(rng, items, size, centre)
    return canvas, _materialise(layers, canvas.shape[:2])


def affine_matrix(
    rng: np.random.Generator, cfg: AugmentConfig, in_size: tuple[int, int], out_size: tuple[int, int]
) -> np.ndarray:
    """Random 3x3 map from input to output pixel coordinates (YOLOv8's ``random_perspective`` recipe).

    The input centre goes to the origin, then perspective, rotation + scale, shear, and finally a
    translation to the output centre shifted by up to ``translate`` * output size. With every range
    at zero the map is a pure shift of centre onto centre (the identity when the sizes agree).

    Args:
        in_size, out_size: (H, W) of the input and output images.
    """
    (ih, iw), (oh, ow) = in_size, out_size
    centre = _translation(-iw / 2, -ih / 2)
    persp = np.eye(3)
    persp[2, :2] = rng.uniform(-cfg.perspective, cfg.perspective, 2)
    angle = math.radians(rng.uniform(-cfg.degrees, cfg.degrees))
    zoom = rng.uniform(1 - cfg.scale, 1 + cfg.scale)
    rot = np.eye(3)
    rot[:2, :2] = zoom * np.array([[math.cos(angle), math.sin(angle)], [-math.sin(angle), math.cos(angle)]])
    shear = np.eye(3)
    shear[0, 1], shear[1, 0] = np.tan(np.radians(rng.uniform(-cfg.shear, cfg.shear, 2)))
    tx, ty = rng.uniform(0.5 - cfg.translate, 0.5 + cfg.translate, 2)
    return _translation(tx * ow, ty * oh) @ shear @ rot @ persp @ centre


def warp_image(image: np.ndarray, matrix: np.ndarray, out_size: int) -> np.ndarray:
    """Bilinear warp of an (H, W, 3) uint8 image by a 3x3 ``matrix``; gray (114) outside."""
    if image.shape[:2] == (out_size, out_size) and np.array_equal(matrix, np.eye(3)):
        return image
    dsize, fill = (out_size, out_size), (PAD_VALUE,) * 3
    if is_affine(matrix):
        return cv2.warpAffine(image, np.ascontiguousarray(matrix[:2]), dsize, flags=cv2.INTER_LINEAR, borderValue=fill)
    return cv2.warpPerspective(image, matrix, dsize, flags=cv2.INTER_LINEAR, borderValue=fill)


def _check_border(in_hw: tuple[int, int], out_size: int, border: int | None) -> None:
    if in_hw[0] != in_hw[1]:
        raise FastSAMError(f"random_affine expects a square image, got {in_hw[0]}x{in_hw[1]}")
    if border is not None and in_hw[0] + 2 * border != out_size:
        raise FastSAMError(
            f"border {border} does not turn a {in_hw[0]} px image into {out_size} px (out_size = input + 2 * border)"
        )


def random_affine(
    rng: np.random.Generator,
    image: np.ndarray,
    masks: np.ndarray,
    cfg: AugmentConfig,
    out_size: int,
    border: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Random rotation / scale / shear / translation / perspective (:func:`affine_matrix`), warping
    the square input onto an ``out_size`` square: the image bilinearly with gray (114) fill, the
    masks nearest-neighbour (nothing outside).

    ``border`` is YOLOv8's margin: out_size = input size + 2 * border, so a mosaic canvas of 2S with
    border -S/2 is cropped back to S; None derives it. Empty masks are kept (see ``min_area``, applied
    by the dataset).

    Returns:
        (out_size, out_size, 3) uint8 image and (K, out_size, out_size) bool masks.
    """
    _check_pair(image, masks)
    _check_border(image.shape[:2], out_size, border)
    matrix = affine_matrix(rng, cfg, image.shape[:2], (out_size, out_size))
    layer = Layer(pack_masks(masks), len(masks), (0, 0))
    return warp_image(image, matrix, out_size), unpack_masks(layer.warp(matrix, (out_size, out_size)), len(masks))


def augment_hsv(rng: np.random.Generator, image: np.ndarray, cfg: AugmentConfig) -> np.ndarray:
    """Random hue shift and saturation / value gains of an (H, W, 3) uint8 RGB image (new array).

    Hue moves by u_h * hsv_h of the hue circle, saturation and value are scaled by (1 + u_s * hsv_s),
    (1 + u_v * hsv_v) with u_* uniform in [-1, 1], through lookup tables on OpenCV's 8-bit HSV.
    All gains zero: the image is returned unchanged (no lossy HSV round trip).
    """
    gains = np.array([cfg.hsv_h, cfg.hsv_s, cfg.hsv_v])
    if not gains.any():
        return image
    r = rng.uniform(-1, 1, 3) * gains
    x = np.arange(256, dtype=np.float64)
    lut_h = np.mod(x + r[0] * 180, 180).astype(np.uint8)  # OpenCV hue is 0..179
    lut_s = np.clip(x * (1 + r[1]), 0, 255).astype(np.uint8)
    lut_v = np.clip(x * (1 + r[2]), 0, 255).astype(np.uint8)
    h, s, v = cv2.split(cv2.cvtColor(image, cv2.COLOR_RGB2HSV))
    hsv = cv2.merge((cv2.LUT(h, lut_h), cv2.LUT(s, lut_s), cv2.LUT(v, lut_v)))
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def flip_lr(image: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror left-right: column x goes to W - 1 - x. Returns contiguous copies."""
    return np.ascontiguousarray(image[:, ::-1]), np.ascontiguousarray(masks[:, :, ::-1])


def flip_ud(image: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror up-down: row y goes to H - 1 - y. Returns contiguous copies."""
    return np.ascontiguousarray(image[::-1]), np.ascontiguousarray(masks[:, ::-1])
