"""``FastSAM`` as ultralytics (and the original repo, which is built on it) calls it: every call
returns a list with one ultralytics-shaped ``Results`` per image.

    from fastsam.compat import FastSAM               # instead of: from ultralytics import FastSAM
    results = FastSAM("FastSAM-s.pt")("bus.jpg", retina_masks=True, imgsz=1024, conf=0.4, iou=0.9)
    masks = results[0].masks.data                    # (N, H, W) uint8 tensor
    results = model("bus.jpg", bboxes=[[20, 200, 300, 900]], points=[[300, 500]], labels=[1])

The defaults are ultralytics' (``conf`` 0.25, ``iou`` 0.7, ``retina_masks`` False, ``imgsz`` from
the weight file), and numpy images are BGR, as ultralytics reads them. The masks are fastsam's:
the original FastSAM pipeline, exact with the released weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import FastSAMError
from ..predictor import FastSAM as _FastSAM
from ..results_ultralytics import Results
from ..ultralytics_call import predict_ultralytics

__all__ = ["FastSAM"]

# ultralytics predict() options that change nothing here, accepted so that existing calls run
_IGNORED = {"verbose": None, "save": False, "show": False, "stream": False, "half": False, "augment": False}


class FastSAM(_FastSAM):
    """A [FastSAM][fastsam.FastSAM] whose call (and ``predict``) follows ultralytics' ``FastSAM``."""

    def __call__(
        self,
        source: Any,
        imgsz: int | None = None,
        conf: float = 0.25,
        iou: float = 0.7,
        retina_masks: bool = False,
        max_det: int = 300,
        device: str | torch.device | None = None,
        *,
        bboxes: Any = None,
        points: Any = None,
        labels: Any = None,
        texts: str | Sequence[str] | None = None,
        clip_weights: str | Path | None = None,
        **options: Any,
    ) -> list[Results]:
        """Everything mode, then the prompts (if any): one Results per image, always in a list."""
        for key, value in options.items():
            if key not in _IGNORED:
                raise FastSAMError(
                    f"unsupported option {key}={value!r} (fastsam.compat.FastSAM takes the prompt "
                    "keywords and imgsz, conf, iou, retina_masks, max_det, device)"
                )
            if key != "verbose" and bool(value) != bool(_IGNORED[key]):
                raise FastSAMError(f"{key}={value!r} is not supported; use Results.plot() and save the image yourself")
        cfg = self.call_config(imgsz, conf, iou, retina_masks, max_det, device)
        return predict_ultralytics(
            self,
            source,
            cfg,
            bboxes=bboxes,
            points=points,
            labels=labels,
            texts=texts,
            clip_weights=clip_weights,
            bgr_arrays=True,
        )

    predict = __call__
