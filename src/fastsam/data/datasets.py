"""Class-agnostic instance-segmentation readers (SA-1B, COCO, YOLO-seg) for training and evaluation.

Every reader gives :class:`Sample` objects: ``image`` (H, W, 3) uint8 RGB, ``masks`` (K, H, W) bool,
``boxes`` (K, 4) float32 ``xyxy`` in pixels (x = column, exclusive ends, i.e. a mask covering columns
3..5 has x1 = 3, x2 = 6), derived from the final masks; ``name`` identifies the image.

Bad input never stops a long run. Each problem is appended once to ``dataset.problems`` as a
:class:`Problem` (file name + one-line description) and logged once with ``logger.warning``:

* found while building the index (the constructor): malformed annotation files / label files that
  cannot be read, annotation files whose image is missing - those samples are left out of the index;
* found when a sample is decoded (``__getitem__``): empty masks, RLE whose size differs from the image,
  whose counts do not sum to H*W or cannot be decoded, polygons fully outside the image (skipped) or
  partly outside (clipped to the image, kept, reported), malformed annotations / label lines (skipped).
  The rest of that sample still loads; a sample may end up with K = 0.

Corrupt images (and annotation files that became unreadable) discovered in ``__getitem__``: the
sample is marked bad, a Problem is recorded, and the NEXT valid sample (cyclically, by index) is
returned instead, so a training loop keeps its length and never crashes; if every sample is bad a
:class:`~fastsam.errors.FastSAMError` is raised. Call :meth:`scan` to read everything once and
collect all problems up front (e.g. before an evaluation run).
"""

from __future__ import annotations

from ._common import Problem, Sample, masks_to_boxes
from .coco import COCODataset
from .sa1b import SA1BDataset
from .yolo import YOLODataset

__all__ = ["COCODataset", "Problem", "SA1BDataset", "Sample", "YOLODataset", "masks_to_boxes"]
