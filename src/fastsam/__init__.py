"""fastsam: a clean, fast, safe implementation of FastSAM (Fast Segment Anything)."""

from .config import ModelConfig, PredictConfig
from .errors import CheckpointError, FastSAMError, ImageError, UnsafeCheckpointError
from .io.checkpoint import convert, load_model
from .nn.model import FastSAMNet, build_model
from .compat import FastSAMPrompt
from .predictor import FastSAM
from .prompts import PointSelection, select, select_by_boxes, select_by_points
from .results import Segments

__version__ = "0.1.0"

__all__ = [
    "FastSAM", "Segments", "FastSAMPrompt", "PointSelection", "select", "select_by_points", "select_by_boxes", "ModelConfig", "PredictConfig", "FastSAMNet", "build_model", "load_model",
    "convert", "FastSAMError", "CheckpointError", "UnsafeCheckpointError", "ImageError", "__version__",
]  # fmt: skip
