"""OpenVINO IR from our ONNX export: ``DIR/<name>.xml`` + ``.bin``, metadata in ``rt_info``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .metadata import META_KEY, ExportMetadata

__all__ = ["RT_INFO_PATH", "save_openvino", "to_openvino"]

#: Where the metadata JSON lives in the IR's rt_info.
RT_INFO_PATH = [META_KEY, "metadata"]


def to_openvino(onnx_path: Path) -> Any:
    """Read an ONNX export into an ``openvino.Model`` (shapes as exported: static or dynamic)."""
    import openvino as ov

    return ov.convert_model(str(onnx_path))


def save_openvino(model: Any, directory: Path, name: str, meta: ExportMetadata) -> Path:
    """Write ``directory/name.xml`` (+ ``.bin``) with ``meta`` in its rt_info; returns the ``.xml``.
    fp16 precision compresses the weights to float16 (compute stays fp32 on the CPU)."""
    import openvino as ov

    model.set_rt_info(meta.to_json(), RT_INFO_PATH)
    directory.mkdir(parents=True, exist_ok=True)
    xml = directory / f"{name}.xml"
    ov.save_model(model, str(xml), compress_to_fp16=meta.precision == "fp16")
    return xml
