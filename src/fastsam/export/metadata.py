"""The metadata an exported model carries, so that the file alone is enough to run it.

One JSON document, stored under the key ``fastsam`` (ONNX ``metadata_props``; OpenVINO ``rt_info``
at ``["fastsam", "metadata"]``). Written by :mod:`fastsam.export`, read and checked by every
non-PyTorch backend. The graph's contract, for anyone reading the file without fastsam:

* input ``images``: (B, 3, H, W) float32 RGB in [0, 1], letterboxed (pad value 114/255); H and W
  multiples of 32 (``input.shape`` for a static export, any for a dynamic one);
* output ``preds``: (B, 4 + nc + nm, A) float32: box centre x, centre y, width, height in input
  pixels, sigmoid class scores, raw mask coefficients; anchors level by level (stride 8 first);
* output ``protos``: (B, nm, H/4, W/4) float32 mask prototypes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..config import ModelConfig
from ..errors import CheckpointError

__all__ = ["EXPORT_FORMAT", "EXPORT_VERSION", "META_KEY", "ExportMetadata", "parse_metadata"]

EXPORT_FORMAT = "fastsam-export"
EXPORT_VERSION = 1
META_KEY = "fastsam"
INPUT_NAME = "images"
OUTPUT_NAMES = ("preds", "protos")


@dataclass(frozen=True)
class ExportMetadata:
    """What an exported graph is.

    Attributes:
        config: the network architecture (scale, classes, masks, reg_max).
        strides: feature strides of the head levels, in input pixels.
        shape: (H, W) of a static export's input; None when the export is dynamic.
        batch: the fixed batch size of a static export; None when dynamic.
        imgsz: the input long side the model recommends.
        names: class index -> name.
        precision: "fp32", "fp16" (fp16 weights, fp32 compute) or "int8".
        quantization: for int8, how it was made (method, calibration images, layers kept in fp32).
        provenance: the source weight file and the tools that exported it.
    """

    config: ModelConfig
    strides: tuple[int, ...]
    shape: tuple[int, int] | None
    batch: int | None
    imgsz: int
    names: dict[int, str]
    precision: str = "fp32"
    quantization: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def dynamic(self) -> bool:
        return self.shape is None

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": EXPORT_FORMAT,
                "version": EXPORT_VERSION,
                "model": self.config.to_dict(),
                "strides": list(self.strides),
                "input": {
                    "name": INPUT_NAME,
                    "dynamic": self.dynamic,
                    "shape": list(self.shape) if self.shape else None,
                    "batch": self.batch,
                    "layout": "NCHW RGB float32 in [0, 1], letterboxed, pad 114",
                },
                "outputs": list(OUTPUT_NAMES),
                "imgsz": self.imgsz,
                "names": {str(k): v for k, v in self.names.items()},
                "precision": self.precision,
                "quantization": self.quantization,
                "provenance": self.provenance,
            },
            sort_keys=True,
        )


def parse_metadata(text: str | None, source: str) -> ExportMetadata:
    """Parse and check the ``fastsam`` metadata of an exported model; ``CheckpointError`` naming
    ``source`` when it is absent (a graph we did not export) or malformed."""
    if not text:
        raise CheckpointError(
            f"{source}: has no fastsam metadata (not exported by 'fastsam export'; "
            "re-export it from the weights with 'fastsam export')"
        )
    try:
        doc = json.loads(text)
        if doc.get("format") != EXPORT_FORMAT:
            raise ValueError(f"format {doc.get('format')!r}")
        if int(doc.get("version", 0)) > EXPORT_VERSION:
            raise ValueError(f"export version {doc['version']} is newer than this fastsam reads ({EXPORT_VERSION})")
        model = doc["model"]
        kwargs: dict[str, Any] = {k: int(v) if k != "scale" else str(v) for k, v in model.items()}
        config = ModelConfig(**kwargs)
        strides = tuple(int(s) for s in doc["strides"])
        inp = doc["input"]
        shape = None if inp.get("dynamic") else tuple(int(v) for v in inp["shape"])
        if shape is not None and (len(shape) != 2 or any(v <= 0 or v % 32 for v in shape)):
            raise ValueError(f"input shape {shape}")
        batch = None if inp.get("batch") is None else int(inp["batch"])
        names = {int(k): str(v) for k, v in doc.get("names", {"0": "object"}).items()}
        return ExportMetadata(
            config=config,
            strides=strides,
            shape=shape,
            batch=batch,
            imgsz=int(doc.get("imgsz", max(shape) if shape else 1024)),
            names=names,
            precision=str(doc.get("precision", "fp32")),
            quantization=dict(doc.get("quantization") or {}),
            provenance=dict(doc.get("provenance") or {}),
        )
    except CheckpointError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        detail = exc.args[0] if exc.args else type(exc).__name__
        raise CheckpointError(f"{source}: malformed fastsam metadata ({detail})") from None
