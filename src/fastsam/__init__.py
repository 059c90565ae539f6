"""fastsam: a clean, fast, safe implementation of FastSAM (Fast Segment Anything)."""

from .config import ModelConfig, PredictConfig
from .errors import CheckpointError, FastSAMError, ImageError, UnsafeCheckpointError
from .io.checkpoint import convert, load_model
from .nn.model import FastSAMNet, build_model
from .predictor import FastSAM
from .results import Segments

__version__ = "0.1.0"

__all__ = [
    "FastSAM", "Segments", "ModelConfig", "PredictConfig", "FastSAMNet", "build_model", "load_model",
    "convert", "FastSAMError", "CheckpointError", "UnsafeCheckpointError", "ImageError", "__version__",
]  # fmt: skip
