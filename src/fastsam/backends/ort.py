"""The ONNX Runtime backend (CPU execution provider)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import CheckpointError, FastSAMError
from ..export.metadata import INPUT_NAME, META_KEY, OUTPUT_NAMES, parse_metadata
from ..extras import require
from ._common import check_input, describe

__all__ = ["OrtBackend"]


class OrtBackend:
    """An exported ``.onnx`` (or its bytes) run by ONNX Runtime, with as many threads as torch uses."""

    name = "onnxruntime"

    def __init__(self, model: str | Path | bytes, source: str | None = None) -> None:
        ort = require("onnxruntime")
        self.source = source or str(model)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3  # its warnings are not the user's business; errors still raise
        try:
            self.session = ort.InferenceSession(
                model if isinstance(model, bytes) else str(model), opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ORT raises its own exception types for corrupt or invalid graphs
            raise CheckpointError(f"{self.source}: not a readable ONNX model ({describe(exc)})") from None
        meta = parse_metadata(self.session.get_modelmeta().custom_metadata_map.get(META_KEY), self.source)
        names_in = [i.name for i in self.session.get_inputs()]
        names_out = [o.name for o in self.session.get_outputs()]
        if names_in != [INPUT_NAME] or names_out != list(OUTPUT_NAMES):
            raise CheckpointError(f"{self.source}: graph inputs/outputs {names_in}/{names_out} are not fastsam's")
        self.metadata = meta
        self.config, self.strides, self.shape = meta.config, meta.strides, meta.shape
        self.default_imgsz = meta.imgsz
        self.provenance: dict[str, Any] = {**meta.provenance, "precision": meta.precision, "backend": self.name}

    @classmethod
    def from_weights(cls, weights: Any) -> OrtBackend:
        """Export ``weights`` to a dynamic-shape ONNX graph in a temporary directory and run that."""
        from ..export import export_model

        with tempfile.TemporaryDirectory(prefix="fastsam-onnx-") as tmp:
            path = export_model(weights, "onnx", Path(tmp) / "model.onnx", dynamic=True)
            data = path.read_bytes()
        return cls(data, source=str(weights) if isinstance(weights, (str, Path)) else "<network>")

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        x = check_input(images, self.shape, self.metadata.batch, self.source)
        try:
            preds, protos = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: x})
        except Exception as exc:
            raise FastSAMError(
                f"{self.source}: ONNX Runtime failed on a {tuple(x.shape)} input ({describe(exc)})"
            ) from None
        return torch.from_numpy(np.asarray(preds)), torch.from_numpy(np.asarray(protos))
