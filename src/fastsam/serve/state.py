"""Server state that outlives a request: everything-mode results cached per image content hash.

Nothing here knows about HTTP. An :class:`ImageEntry` holds one decoded image, its ``Segments`` and
the serialised everything-mode records; :class:`ResultCache` keeps the most recently used entries
under a count AND a byte budget, so prompts on a known image never rerun the network.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..results import Segments

__all__ = ["ImageEntry", "ResultCache", "image_id"]


def image_id(rgb: np.ndarray) -> str:
    """Content hash of an (H, W, 3) uint8 RGB image: 32 hex digits of BLAKE2b over the pixels and shape.

    Hashing decoded pixels (not the uploaded file) gives the same id to a PNG and a lossless
    re-encoding of it, so they share one cached result.
    """
    h = hashlib.blake2b(digest_size=16)
    h.update(repr(rgb.shape).encode())
    h.update(np.ascontiguousarray(rgb).data)
    return h.hexdigest()


@dataclass(eq=False)
class ImageEntry:
    """One uploaded image and its everything-mode result.

    Attributes:
        id: :func:`image_id` of ``rgb``.
        rgb: (H, W, 3) uint8 RGB original image (text prompts crop from it).
        segments: everything-mode masks in original pixels, descending score.
        records: ``segments.to_records()`` (SAM coco_rle records), computed once.
        records_json: ``records`` serialised as a JSON array (sent as is).
        everything_ms: time the network and mask assembly took for this image.
    """

    id: str
    rgb: np.ndarray
    segments: Segments
    records: list[dict[str, Any]]
    records_json: bytes
    everything_ms: float
    nbytes: int = field(init=False)

    def __post_init__(self) -> None:
        crops = sum(int(c.nbytes) for c in self.segments.crops)
        self.nbytes = int(self.rgb.nbytes) + crops + 2 * len(self.records_json)  # dicts cost ~ their JSON again

    @classmethod
    def build(cls, key: str, rgb: np.ndarray, segments: Segments, everything_ms: float) -> ImageEntry:
        records = segments.to_records()  # also fills segments.areas, which every point prompt reads
        return cls(key, rgb, segments, records, json.dumps(records, separators=(",", ":")).encode(), everything_ms)

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the image."""
        return self.segments.image_size


class ResultCache:
    """Thread-safe LRU of :class:`ImageEntry`, bounded by entry count and by total bytes.

    An entry larger than ``max_bytes`` on its own is still kept (alone) so that the request that
    made it can be answered and prompted once; it is evicted by the next insertion.
    """

    def __init__(self, max_items: int, max_bytes: int) -> None:
        if max_items < 1 or max_bytes < 1:
            raise ValueError("cache limits must be >= 1")
        self.max_items, self.max_bytes = int(max_items), int(max_bytes)
        self._items: OrderedDict[str, ImageEntry] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> ImageEntry | None:
        """The entry for ``key`` (marked most recently used), or None."""
        with self._lock:
            entry = self._items.get(key)
            if entry is not None:
                self._items.move_to_end(key)
            return entry

    def put(self, entry: ImageEntry) -> None:
        """Insert (or refresh) ``entry``, then evict least recently used entries until within both limits."""
        with self._lock:
            old = self._items.pop(entry.id, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._items[entry.id] = entry
            self._bytes += entry.nbytes
            while len(self._items) > 1 and (len(self._items) > self.max_items or self._bytes > self.max_bytes):
                _, gone = self._items.popitem(last=False)
                self._bytes -= gone.nbytes

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    @property
    def nbytes(self) -> int:
        with self._lock:
            return self._bytes

    def keys(self) -> list[str]:
        """Ids, least recently used first."""
        with self._lock:
            return list(self._items)
