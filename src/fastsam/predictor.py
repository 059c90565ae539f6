"""Everything-mode segmentation: ``FastSAM(weights)(image) -> Segments``.

Pipeline (same steps and constants as the original FastSAM predictor):
letterbox -> network (fp32) -> decode -> score filter (> conf) -> NMS (iou, max_det) ->
border snap + full-image box rule (input frame) -> masks = coefficients x prototypes, bilinear,
cropped to the box, logits > 0.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from .backends import Backend, open_backend
from .config import PredictConfig
from .devices import resolve_device
from .errors import FastSAMError
from .io.images import ImageSource, iter_sources, load_image
from .nn.model import FastSAMNet
from .ops.boxes import MAX_NMS_CANDIDATES, nms_first_k, snap_and_expand_full_boxes, xywh_to_xyxy
from .ops.letterbox import Letterbox, letterbox
from .ops.masks import assemble_input_frame, assemble_retina
from .ops.soft_masks import SoftMasks, retina_probabilities
from .results import Segments

if TYPE_CHECKING:
    from .results_ultralytics import Results

__all__ = ["Detections", "FastSAM", "select_detections"]

CLASS_OFFSET = 7680  # separates classes in NMS when a model has several (FastSAM has one)
POST_MODES = ("auto", "kernels", "device")  # FastSAM(post=...): where post-processing runs


@dataclass(frozen=True)
class Detections:
    """NMS output in the input frame: boxes (K, 4) xyxy, scores (K,), classes (K,), coefficients (K, nm)."""

    boxes: Tensor
    scores: Tensor
    classes: Tensor
    coefficients: Tensor


def select_detections(preds: Tensor, num_classes: int, cfg: PredictConfig) -> Detections:
    """Score filter and NMS over one image's decoded predictions (4 + nc + nm, A)."""
    preds = preds.t()
    scores, classes = preds[:, 4 : 4 + num_classes].max(1)
    keep = scores > cfg.conf  # strictly greater, as the original
    preds, scores, classes = preds[keep], scores[keep], classes[keep]
    if preds.shape[0] > MAX_NMS_CANDIDATES:
        top = scores.argsort(descending=True)[:MAX_NMS_CANDIDATES]
        preds, scores, classes = preds[top], scores[top], classes[top]
    boxes = xywh_to_xyxy(preds[:, :4])
    offset = classes[:, None].to(boxes.dtype) * CLASS_OFFSET
    idx = nms_first_k(boxes + offset, scores, cfg.iou, cfg.max_det)
    return Detections(boxes[idx], scores[idx], classes[idx], preds[idx, 4 + num_classes :])


class FastSAM:
    """Everything-mode FastSAM on one device.

    Args:
        weights: a weight file (released ultralytics ``.pt`` or our safetensors), an exported model
            (``.onnx``; an OpenVINO ``.xml`` or the directory holding it: see ``fastsam export``) or
            a built network; None takes the shipped demo model (trained on synthetic shapes only).
        device: torch device; CPU unless told otherwise (exported models run on the CPU).
        backend: "torch", "onnxruntime" or "openvino"; None chooses by the file's content. A weight
            file on onnxruntime/openvino is exported in memory first (a few seconds).
        fuse: fold BatchNorm into convolutions for inference (same outputs up to float rounding, faster).
        channels_last: run convolutions in NHWC memory layout (faster on x86 CPUs; float rounding
            differs slightly). Defaults to ``fuse``: the fast path, or the bit-exact plain one.
        cache_size: number of (image, options) results kept, so that prompts on the same image
            reuse one forward pass.
        half: half-precision network: fp16 on the torch backend with a CUDA device; bf16 on the
            openvino backend, on CPUs with bf16 units (about 3x faster there). Masks differ from
            fp32 by that rounding. Post-processing stays fp32.
        compile: ``torch.compile`` the network (torch backend): the first call at each input shape
            compiles (a warm-up of seconds to a minute), later ones run faster on GPUs; for
            videos and batches of one size (see `fastsam.backends.pytorch.TorchBackend`).
        post: where post-processing runs: "kernels" (on the host, the C kernels), "device" (in
            torch on the network's device, :mod:`fastsam.ops.device_post`; same masks up to float
            rounding of the logits), "auto": kernels on the CPU, device elsewhere.

    Call it like the original: ``FastSAM("FastSAM-x.pt")(image, imgsz=1024, conf=0.4, iou=0.9,
    retina_masks=True, max_det=300)``. ``imgsz`` defaults to the size recorded in a fastsam weight
    file (its training size), else 1024. One image gives a [Segments][fastsam.Segments]; a list or a directory
    gives a list. numpy inputs are RGB. A static-shape export letterboxes every image to its fixed
    input size and refuses another ``imgsz``.
    """

    def __init__(
        self,
        weights: str | Path | FastSAMNet | None = None,
        device: str | torch.device = "cpu",
        fuse: bool = True,
        cache_size: int = 4,
        channels_last: bool | None = None,
        backend: str | None = None,
        half: bool = False,
        post: str = "auto",
        compile: bool = False,
    ) -> None:
        if post not in POST_MODES:
            raise FastSAMError(f"post must be one of {', '.join(POST_MODES)}; got {post!r}")
        self.post_mode = post
        self.device = resolve_device(device)
        if weights is None:
            from .weights import default_model_path

            weights = default_model_path()
        self.backend: Backend = open_backend(
            weights, backend, self.device, fuse=fuse, channels_last=channels_last, half=half, compile=compile
        )
        self.config = self.backend.config
        self.provenance: dict[str, Any] = dict(self.backend.provenance)
        self.default_imgsz = self.backend.default_imgsz
        self.strides = self.backend.strides
        self._cache: OrderedDict[tuple[str, PredictConfig], Segments] = OrderedDict()
        self._cache_size = cache_size
        self.provenance["post"] = self.post

    @property
    def post(self) -> str:
        """Where post-processing runs now: "kernels" or "device" (``post="auto"`` follows the device)."""
        if self.post_mode != "auto":
            return self.post_mode
        return "kernels" if self.device.type == "cpu" else "device"

    @property
    def network(self) -> torch.nn.Module:
        """The PyTorch network (torch backend only)."""
        net = getattr(self.backend, "network", None)
        if net is None:
            raise FastSAMError(f"the {self.backend.name} backend has no PyTorch network")
        return net

    # -- network -------------------------------------------------------------------------------
    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """(B, 3, H, W) RGB in [0, 1] -> (decoded predictions (B, 4 + nc + nm, A), protos (B, nm, H/4, W/4))."""
        return self.backend.forward(images)

    # -- everything mode -------------------------------------------------------------------------
    def segment(self, image: ImageSource, config: PredictConfig | None = None) -> Segments:
        """Segment everything in one image (cached per image content and options)."""
        cfg = config or PredictConfig(imgsz=self.default_imgsz)
        rgb = load_image(image)
        if self._cache_size <= 0:
            return self._segment_rgb(rgb, cfg)  # no cache: do not hash the pixels (~4 ms at 720p)
        key = (hashlib.blake2b(np.ascontiguousarray(rgb).data, digest_size=16).hexdigest() + str(rgb.shape), cfg)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        result = self._segment_rgb(rgb, cfg)
        self._cache[key] = result
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return result

    def check_input_size(self, cfg: PredictConfig) -> None:
        """Refuse an ``imgsz`` that a static-shape export cannot take."""
        shape = self.backend.shape
        if shape is not None and cfg.input_size != max(shape):
            raise FastSAMError(
                f"this model is a static export for {shape[0]}x{shape[1]} inputs (imgsz {max(shape)}); "
                f"imgsz {cfg.imgsz} needs an export with --dynamic or --imgsz {cfg.imgsz}"
            )

    def call_config(
        self,
        imgsz: int | None,
        conf: float,
        iou: float,
        retina_masks: bool,
        max_det: int,
        device: str | torch.device | None = None,
    ) -> PredictConfig:
        """The options of a call as a PredictConfig; ``device``, as in the original's call, moves the
        network there for this and later calls (torch backend only)."""
        if device is not None and (wanted := resolve_device(device)) != self.device:
            if self.backend.name != "torch":
                raise FastSAMError(
                    f"the {self.backend.name} backend runs on the CPU; device {wanted} needs backend 'torch'"
                )
            self.device = wanted
            self.backend.to(wanted)  # type: ignore[attr-defined]
        return PredictConfig(
            imgsz=self.default_imgsz if imgsz is None else imgsz,
            conf=conf,
            iou=iou,
            retina_masks=retina_masks,
            max_det=max_det,
        )

    def _forward_rgb(self, rgb: np.ndarray, cfg: PredictConfig, host: bool = True) -> tuple[Tensor, Tensor, Letterbox]:
        """Letterbox + network: one image's (preds, protos, geometry), on the host unless ``host=False``."""
        self.check_input_size(cfg)
        x, geom = letterbox(rgb, cfg.input_size, cfg.stride, shape=self.backend.shape)
        preds, protos = self.forward(x)
        if not host:
            return preds[0], protos[0], geom
        return preds[0].cpu(), protos[0].cpu(), geom

    def _segment_rgb(self, rgb: np.ndarray, cfg: PredictConfig) -> Segments:
        # post="device" keeps the network's outputs where they are
        return self.postprocess(*self._forward_rgb(rgb, cfg, host=self.post != "device"), cfg)

    def probabilities(self, image: ImageSource, config: PredictConfig | None = None) -> SoftMasks:
        """Everything mode, soft: the same detections as :meth:`segment` (retina frame), each with the
        sigmoid of its mask logits inside its box instead of the thresholded mask (not cached)."""
        cfg = config or PredictConfig(imgsz=self.default_imgsz)
        preds, protos, geom = self._forward_rgb(load_image(image), cfg)
        det = select_detections(preds.float(), self.config.num_classes, cfg)
        if det.boxes.shape[0] == 0:
            return SoftMasks.empty(geom.orig_size)
        boxes = geom.boxes_to_original(snap_and_expand_full_boxes(det.boxes, geom.input_size))
        regions, probs = retina_probabilities(protos, det.coefficients, boxes, geom)
        return SoftMasks(geom.orig_size, boxes.numpy(), det.scores.numpy(), regions, tuple(probs))

    def postprocess(self, preds: Tensor, protos: Tensor, geom: Letterbox, cfg: PredictConfig) -> Segments:
        """One image: decoded predictions (4 + nc + nm, A) and protos (nm, mh, mw) -> Segments."""
        if self.post == "device":
            from .ops.device_post import postprocess_batch

            out = postprocess_batch(
                preds[None],
                protos[None],
                [geom],
                self.config.num_classes,
                cfg.conf,
                cfg.iou,
                cfg.max_det,
                cfg.retina_masks,
            ).to_host()[0]
            return Segments.from_crops(geom.orig_size, out.boxes, out.scores, out.crops)
        preds, protos = preds.cpu(), protos.cpu()
        det = select_detections(preds.float(), self.config.num_classes, cfg)
        if det.boxes.shape[0] == 0:
            return Segments.empty(geom.orig_size)
        boxes_in = snap_and_expand_full_boxes(det.boxes, geom.input_size)
        boxes = geom.boxes_to_original(boxes_in)
        if cfg.retina_masks:
            crops = assemble_retina(protos, det.coefficients, boxes, geom)
        else:
            crops = assemble_input_frame(protos, det.coefficients, boxes_in, geom)
        return Segments.from_crops(geom.orig_size, boxes.numpy(), det.scores.numpy(), crops)

    def __call__(
        self,
        source: Any,
        imgsz: int | None = None,
        conf: float = 0.4,
        iou: float = 0.9,
        retina_masks: bool = True,
        max_det: int = 300,
        device: str | torch.device | None = None,
        *,
        bboxes: Any = None,
        points: Any = None,
        labels: Any = None,
        texts: str | Sequence[str] | None = None,
        clip_weights: str | Path | None = None,
        batch: int = 1,
        tile: int | None = None,
        tile_overlap: int | None = None,
    ) -> Segments | list[Segments] | list[Results]:
        """Segment everything in ``source``: a path, array or Pillow image (-> Segments), or a list or
        directory of them (-> list of Segments). ``device``, as in the original's call, moves the
        network there for this and later calls.

        Prompts in the call, as ultralytics takes them (``bboxes``, ``points`` with ``labels``,
        ``texts`` with local ``clip_weights``; several kinds are OR-ed), return what ultralytics
        returns: a list with one ultralytics-shaped [Results][fastsam.results_ultralytics.Results]
        per image, holding the selected masks in score order (see `fastsam.prompts.select_ultralytics`).

        ``batch`` > 1 runs that many images of one letterboxed shape per forward pass (see
        `fastsam.batching`); the results are those of batch 1.

        ``tile`` (pixels) segments huge images by overlapping tiles of that size (``tile_overlap``
        pixels shared; default a quarter) plus a downscaled whole-image pass, merged into one set of
        masks (see `fastsam.tiling`); ``batch`` then counts tiles.
        """
        cfg = self.call_config(imgsz, conf, iou, retina_masks, max_det, device)
        if tile is None and tile_overlap is not None:
            raise FastSAMError("tile_overlap needs tile (the tile size in pixels)")
        prompted = bboxes is not None or points is not None or labels is not None or texts is not None
        if prompted and tile is not None:
            raise FastSAMError("tile= is for everything mode; prompts select among one pass's masks")
        if prompted:
            from .ultralytics_call import predict_ultralytics

            return predict_ultralytics(
                self, source, cfg, bboxes=bboxes, points=points, labels=labels, texts=texts, clip_weights=clip_weights
            )
        single = not isinstance(source, (list, tuple)) and not (
            isinstance(source, (str, Path)) and Path(source).is_dir()
        )
        if tile is not None:
            from .tiling import TileConfig, segment_tiled

            tiles = TileConfig(tile, tile_overlap)
            results = [segment_tiled(self, load_image(item), cfg, tiles, batch) for _, item in iter_sources(source)]
        elif batch != 1:
            from .batching import segment_batch

            results = segment_batch(self, [load_image(item) for _, item in iter_sources(source)], cfg, batch)
        else:
            results = [self.segment(item, cfg) for _, item in iter_sources(source)]
        if single:
            if not results:
                raise FastSAMError("no image given")
            return results[0]
        return results

    def stream(
        self,
        source: str | Path,
        track: bool = False,
        vid_stride: int = 1,
        start: float | None = None,
        end: float | None = None,
        tracker: Any = None,
        imgsz: int | None = None,
        conf: float = 0.4,
        iou: float = 0.9,
        retina_masks: bool = True,
        max_det: int = 300,
    ) -> Any:
        """Everything mode on each selected frame of a video, URL (``rtsp://`` ...) or frame directory:
        yields a `fastsam.video.StreamFrame` per frame (index, time in s, Segments, ``track_ids``
        (N,) int64 with ``track=True``, else None). ``vid_stride`` keeps every N-th frame,
        ``start``/``end`` are seconds; ``tracker`` is a `fastsam.track.TrackerConfig`. Frames are
        decoded ahead in a thread, a few at a time. Needs the 'video' extra (PyAV, scipy)."""
        from .video.stream import stream

        cfg = PredictConfig(
            imgsz=imgsz or self.default_imgsz, conf=conf, iou=iou, retina_masks=retina_masks, max_det=max_det
        )
        return stream(self._segment_rgb, source, cfg, track, vid_stride, start, end, tracker)
