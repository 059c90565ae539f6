"""The ``zeroshot`` extra (scipy, scikit-image, lvis): imported on use, one error line when missing.

Named here rather than in :mod:`fastsam.extras`: scipy also belongs to other extras there, and a
zero-shot run should name the extra that installs everything it needs.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from ..errors import FastSAMError

__all__ = ["EXTRA_HINT", "need"]

EXTRA_HINT = "pip install 'fastsam[zeroshot]'"


def need(module: str) -> Any:
    """Import ``module`` (dotted names allowed), or raise ``FastSAMError`` naming the zeroshot extra."""
    top = module.split(".")[0]
    if importlib.util.find_spec(top) is None:
        raise FastSAMError(f"{top} is not installed: {EXTRA_HINT}")
    return importlib.import_module(module)
