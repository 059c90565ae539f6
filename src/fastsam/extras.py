"""Optional dependencies: imported on use, with one error line naming the extra that installs them."""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from .errors import FastSAMError

__all__ = ["installed", "require"]

#: module -> extra of ``pip install 'fastsam[...]'`` that provides it
EXTRAS = {
    "onnxruntime": "onnx",
    "onnx": "onnx",
    "openvino": "openvino",
    "nncf": "openvino",
    "av": "video",
    "scipy": "video",
}


def installed(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it)."""
    return importlib.util.find_spec(module) is not None


def require(module: str) -> Any:
    """Import an optional dependency, or raise ``FastSAMError`` naming the extra to install."""
    if not installed(module):
        raise FastSAMError(f"{module} is not installed: pip install 'fastsam[{EXTRAS.get(module, module)}]'")
    return importlib.import_module(module)
