"""The OpenVINO backend (CPU plugin, fp32 inference precision: int8 layers stay int8)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import CheckpointError, FastSAMError
from ..export.metadata import INPUT_NAME, OUTPUT_NAMES, parse_metadata
from ..export.openvino import RT_INFO_PATH
from ..extras import require
from ._common import check_input, describe

__all__ = ["OpenVINOBackend"]


def _xml_of(path: Path) -> Path:
    if path.is_dir():
        xmls = sorted(path.glob("*.xml"))
        if len(xmls) != 1:
            raise CheckpointError(f"{path}: expected one OpenVINO .xml in the directory, found {len(xmls)}")
        return xmls[0]
    return path


class OpenVINOBackend:
    """An OpenVINO IR (the ``.xml`` with its ``.bin``, or the directory holding them), or an
    in-memory ``openvino.Model``, compiled for the CPU with as many threads as torch uses.

    Inference runs in fp32 unless ``half`` asks for bf16 (only on CPUs with bf16 units, e.g. AVX512-BF16
    or AMX): about 3x faster there, at bf16 rounding of every activation. OpenVINO's own default
    would pick bf16 silently on such CPUs; we never do.
    """

    name = "openvino"

    def __init__(self, model: Any, source: str | None = None, half: bool = False) -> None:
        ov = require("openvino")
        core = ov.Core()
        if isinstance(model, (str, Path)):
            xml = _xml_of(Path(model))
            self.source = source or str(model)
            if not xml.with_suffix(".bin").is_file():
                raise CheckpointError(f"{xml}: its weights file {xml.with_suffix('.bin').name} is missing")
            try:
                model = core.read_model(str(xml))
            except Exception as exc:
                raise CheckpointError(f"{self.source}: not a readable OpenVINO model ({describe(exc)})") from None
        else:
            self.source = source or "<openvino model>"
        text = model.get_rt_info(RT_INFO_PATH).astype(str) if model.has_rt_info(RT_INFO_PATH) else None
        meta = parse_metadata(text, self.source)
        if half and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            raise FastSAMError("half precision (bf16) needs a CPU with bf16 support; this one has none (drop half)")
        precision = "bf16" if half else "f32"
        config = {
            "INFERENCE_NUM_THREADS": torch.get_num_threads(),
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": precision,
        }
        try:
            self.compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:
            raise CheckpointError(f"{self.source}: OpenVINO cannot compile it ({describe(exc)})") from None
        try:
            self.compiled.input(INPUT_NAME)
            self._outputs = [self.compiled.output(n) for n in OUTPUT_NAMES]
        except RuntimeError:
            raise CheckpointError(f"{self.source}: graph inputs/outputs are not fastsam's") from None
        self.request = self.compiled.create_infer_request()
        self.metadata = meta
        self.config, self.strides, self.shape = meta.config, meta.strides, meta.shape
        self.default_imgsz = meta.imgsz
        self.provenance: dict[str, Any] = {
            **meta.provenance,
            "precision": meta.precision,
            "backend": self.name,
            "inference_precision": precision,
        }

    @classmethod
    def from_weights(cls, weights: Any, half: bool = False) -> OpenVINOBackend:
        """Export ``weights`` to a dynamic-shape graph in a temporary directory and compile that."""
        from ..export import export_model

        source = str(weights) if isinstance(weights, (str, Path)) else "<network>"
        with tempfile.TemporaryDirectory(prefix="fastsam-ov-") as tmp:
            xml = export_model(weights, "openvino", Path(tmp) / "model", dynamic=True)
            return cls(xml, source=source, half=half)  # compiled before the files go

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        x = check_input(images, self.shape, self.metadata.batch, self.source)
        try:
            result = self.request.infer({INPUT_NAME: x})
        except Exception as exc:
            raise FastSAMError(
                f"{self.source}: OpenVINO failed on a {tuple(x.shape)} input ({describe(exc)})"
            ) from None
        preds, protos = (np.array(result[o]) for o in self._outputs)  # copies: the request reuses its buffers
        return torch.from_numpy(preds), torch.from_numpy(protos)
