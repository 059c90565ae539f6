"""fastsam: a clean, fast, safe implementation of FastSAM (Fast Segment Anything)."""

from .compat import FastSAMPrompt
from .config import ModelConfig, PredictConfig
from .errors import CheckpointError, FastSAMError, ImageError, UnsafeCheckpointError
from .io.checkpoint import convert, load_model
from .nn.model import FastSAMNet, build_model
from .predictor import FastSAM
from .prompts import PointSelection, select, select_by_boxes, select_by_points
from .results import Segments

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "FastSAM",
    "FastSAMError",
    "FastSAMNet",
    "FastSAMPrompt",
    "ImageError",
    "ModelConfig",
    "PointSelection",
    "PredictConfig",
    "Segments",
    "UnsafeCheckpointError",
    "__version__",
    "build_model",
    "convert",
    "load_model",
    "select",
    "select_by_boxes",
    "select_by_points",
]
