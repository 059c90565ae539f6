"""Compatibility with the FastSAM APIs people already call.

* ``FastSAMPrompt`` (`fastsam.compat.prompt`): the original repo's prompt class, with its return types.
* ``FastSAM`` (`fastsam.compat.model`): ultralytics' call convention, lists of ``Results``.
* ``Results``, ``Masks``, ``Boxes`` (`fastsam.results_ultralytics`): ultralytics-shaped result views.
* The original's ``utils/tools.py`` helpers (`fastsam.compat.tools`): ``convert_box_xywh_to_xyxy``,
  ``box_prompt(masks, bbox, h, w)``, ``point_prompt``, ``text_prompt``, ``format_results``, ...
"""

from __future__ import annotations

from ..results_ultralytics import Boxes, Masks, Results
from .model import FastSAM
from .prompt import FastSAMPrompt
from .tools import (
    box_prompt,
    convert_box_xywh_to_xyxy,
    crop_image,
    fast_process,
    filter_masks,
    format_results,
    get_bbox_from_mask,
    point_prompt,
    segment_image,
    text_prompt,
)

__all__ = [
    "Boxes",
    "FastSAM",
    "FastSAMPrompt",
    "Masks",
    "Results",
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
