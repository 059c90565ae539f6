"""Weights shipped inside the package (small demo models trained on synthetic scenes).

Nothing here is downloaded: the files are part of the installed package. Use the released FastSAM
weights (passed by path) for real photographs.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import FastSAMError

__all__ = ["DEMO_CLIP_FILE", "DEMO_MODEL_FILE", "default_clip_path", "default_model_path"]

DEMO_MODEL_FILE = "fastsam-demo.safetensors"
DEMO_CLIP_FILE = "clip-demo.safetensors"
_HERE = Path(__file__).resolve().parent


def _shipped(name: str, what: str) -> Path:
    path = _HERE / name
    if not path.is_file():
        raise FastSAMError(f"this installation ships no {what} ({path} is missing); pass weights by path")
    return path


def default_model_path() -> Path:
    """The shipped demo segmentation model (n scale, trained on synthetic shapes; see MODEL_CARD.md)."""
    return _shipped(DEMO_MODEL_FILE, "demo segmentation model")


def default_clip_path() -> Path:
    """The shipped tiny CLIP for text prompts on synthetic scenes (see MODEL_CARD.md)."""
    return _shipped(DEMO_CLIP_FILE, "demo CLIP model")
