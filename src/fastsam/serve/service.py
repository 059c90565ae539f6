"""What the routes do, without HTTP: uploads to cached everything-mode results, prompts to selections.

Everything here is synchronous and CPU-bound; the app calls it from worker threads. The predictor
runs under a lock (one network run at a time: it uses all cores anyway), and uploads hold one of
``max_pending`` :class:`Slots` from before their body is read until their result is cached, so
the number of bodies and decoded images in memory at once is bounded (see :mod:`fastsam.serve.app`
for the resulting memory ceiling).
"""

from __future__ import annotations

import threading
import time
from typing import Any, Protocol

import numpy as np

from ..config import PredictConfig
from ..errors import FastSAMError
from ..formats import rle_encode
from ..prompts import select_by_boxes, select_by_points
from ..results import Segments
from .schemas import ApiError, PromptRequest, parse_prompt
from .state import ImageEntry, ResultCache, image_id
from .uploads import decode_image, multipart_file

__all__ = ["NO_CLIP_MESSAGE", "Predictor", "Service", "Slots"]

NO_CLIP_MESSAGE = "text prompts are unavailable: the server has no CLIP weights (start it with --clip-weights PATH)"


class Predictor(Protocol):
    """What the app needs of a model: everything mode on an (H, W, 3) uint8 RGB array."""

    def segment(self, image: np.ndarray, config: PredictConfig | None = None) -> Segments: ...


class Slots:
    """A counting semaphore that never waits: :meth:`try_acquire` is False when all ``n`` are taken.

    ``peak`` is the most slots ever held at once (tests read it)."""

    def __init__(self, n: int) -> None:
        self.n, self.used, self.peak = n, 0, 0
        self._lock = threading.Lock()

    def try_acquire(self) -> bool:
        with self._lock:
            if self.used >= self.n:
                return False
            self.used += 1
            self.peak = max(self.peak, self.used)
            return True

    def release(self) -> None:
        with self._lock:
            self.used -= 1


def _paint(canvas: np.ndarray, segments: Segments, k: int) -> None:
    crop, (r0, r1, c0, c1) = segments.crops[k], segments.regions[k]
    if crop.size:
        canvas[r0:r1, c0:c1] |= crop


def _mask_rle(mask: np.ndarray) -> dict[str, Any]:
    h, w = mask.shape
    return {"size": [h, w], "counts": rle_encode([mask], [(0, h, 0, w)], (h, w))[0]}


class Service:
    """The app's state: predictor (behind a lock), result cache, optional CLIP scorer (behind its own
    lock), and the upload slots."""

    def __init__(
        self,
        predictor: Predictor,
        scorer: Any,
        config: PredictConfig,
        max_pixels: int,
        cache: ResultCache,
        max_pending: int,
        max_parts: int,
    ) -> None:
        self.predictor, self.scorer, self.config = predictor, scorer, config
        self.max_pixels, self.cache, self.max_parts = max_pixels, cache, max_parts
        self.slots = Slots(max_pending)
        self.model_lock = threading.Lock()  # one network run at a time: it uses all cores anyway
        self.scorer_lock = threading.Lock()

    def upload(self, payload: list[bytes], content_type: str) -> tuple[ImageEntry, bool]:
        """Decode, then the cached result for these pixels or a new everything-mode run.

        ``payload`` is a one-item list holding the request body; it is emptied here so that the body
        is freed as soon as it is decoded (the caller keeps no other reference to it).
        """
        data = payload.pop()
        if content_type.lower().startswith("multipart/"):
            data = multipart_file(data, content_type, self.max_parts)
        rgb = decode_image(data, self.max_pixels)
        del data  # while this upload waits for the model, only its pixels stay in memory
        key = image_id(rgb)
        entry = self.cache.get(key)
        if entry is not None:
            return entry, True
        with self.model_lock:
            entry = self.cache.get(key)  # a concurrent upload of the same image may have finished
            if entry is not None:
                return entry, True
            t = time.perf_counter()
            try:
                segments = self.predictor.segment(rgb, self.config)
            except FastSAMError as e:
                raise ApiError(422, f"cannot segment this image: {e}") from None
            elapsed = (time.perf_counter() - t) * 1000
            # cached before the lock is released, so that concurrent uploads of this image wait for it
            # instead of running the network again
            entry = ImageEntry.build(key, rgb, segments, elapsed)
            self.cache.put(entry)
        return entry, False

    def entry(self, key: str) -> ImageEntry:
        entry = self.cache.get(key)
        if entry is None:
            raise ApiError(
                404,
                f"unknown image id {key[:64]!r}: upload the image first (results are kept for "
                "a limited number of images)",
            )
        return entry

    def prompt_body(self, key: str, body: bytes, content_type: str | None) -> dict[str, Any]:
        """:meth:`prompt` for a raw request body: parsed and validated first (422), then the id (404)."""
        req = parse_prompt(body, content_type)
        return self.prompt(self.entry(key), req)

    def prompt(self, entry: ImageEntry, req: PromptRequest) -> dict[str, Any]:
        """Selections of every prompt kind, their union and the combined (H, W) mask as RLE."""
        t = time.perf_counter()
        if req.labels is not None and req.points is None:
            raise ApiError(422, "labels given without points")
        if req.points is None and req.boxes is None and not req.texts:
            raise ApiError(422, "no prompt: give at least one of points, boxes or texts")
        if req.texts and self.scorer is None:
            raise ApiError(501, NO_CLIP_MESSAGE)
        seg = entry.segments
        canvas = np.zeros(seg.image_size, dtype=bool)
        chosen: set[int] = set()
        by: dict[str, Any] = {}
        try:
            if req.points is not None:
                sel = select_by_points(seg, req.points, req.labels, mode=req.point_mode)
                canvas |= sel.mask  # the merged mask: background points cut their masks out
                by["points"] = sel.indices.tolist()
                chosen.update(by["points"])
            if req.boxes is not None:
                by["boxes"] = select_by_boxes(seg, req.boxes).tolist()
                for k in by["boxes"]:
                    if k >= 0:
                        _paint(canvas, seg, k)
                        chosen.add(k)
            if req.texts:
                from ..text import select_by_text

                with self.scorer_lock:
                    hits = select_by_text(seg, entry.rgb, req.texts, self.scorer, threshold=req.text_threshold)
                by["texts"] = [h.tolist() for h in hits]
                for k in {int(k) for h in hits for k in h}:
                    _paint(canvas, seg, k)
                    chosen.add(k)
        except FastSAMError as e:
            raise ApiError(422, f"invalid prompt: {e}") from None
        indices = sorted(chosen)
        return {
            "id": entry.id,
            "indices": indices,
            "by_prompt": by,
            "mask": _mask_rle(canvas),
            "mask_area": int(np.count_nonzero(canvas)),
            "records": [entry.records[k] for k in indices] if req.include_records else None,
            "elapsed_ms": (time.perf_counter() - t) * 1000,
        }
