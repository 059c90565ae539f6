"""Training checkpoints (``OUT/weights/last.pt``): atomic saves, safe reading, export to safetensors.

``last.pt`` holds only tensors, numbers and strings, so it is read with ``weights_only=True``:
nothing in it is executed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..config import ModelConfig
from ..errors import FastSAMError
from ..io.atomic import atomic_path
from ..io.checkpoint import load_state_strict, save_safetensors
from ..nn.model import build_model, set_batchnorm_eps

__all__ = ["atomic_torch_save", "export_checkpoint", "provenance_of", "read_training_checkpoint"]


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then a rename: a crash mid-save keeps the
    previous checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def provenance_of(config: dict[str, Any], epochs: int, images: int | None, metrics: list[dict]) -> dict[str, Any]:
    """What a weight file exported from a run records about it (``config``: the run's TrainConfig as a dict)."""
    out: dict[str, Any] = {
        "trained_by": "fastsam train",
        "imgsz": config["imgsz"],
        "epochs": epochs,
        "data": str(config["data"]),
        "seed": config["seed"],
    }
    if images is not None:
        out["images"] = images
    if metrics:
        out["metrics"] = metrics[-1]
    return out


def read_training_checkpoint(path: str | os.PathLike) -> dict:
    """``last.pt`` as a dict (read with ``weights_only=True``: nothing in it is executed)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FastSAMError(f"{path}: no such checkpoint") from None
    except Exception as exc:
        raise FastSAMError(f"{path}: not a fastsam training checkpoint ({type(exc).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != "fastsam-train":
        raise FastSAMError(f"{path}: not a fastsam training checkpoint (written by `fastsam train`)")
    return state


def export_checkpoint(
    path: str | os.PathLike, dst: str | os.PathLike, dtype: torch.dtype | None = None, predict_imgsz: int | None = None
) -> Path:
    """Write the weights of a training checkpoint (its EMA when it has one) in fastsam's safetensors format,
    e.g. to ship a model from a run that was stopped early. ``predict_imgsz`` records a default inference
    size other than the training size (e.g. larger, for small objects)."""
    state = read_training_checkpoint(path)
    model = build_model(ModelConfig(**state["model_config"]))
    load_state_strict(model, state["ema"] if state.get("ema") is not None else state["model"], source=str(path))
    bn_eps = {str(k): float(v) for k, v in (state.get("bn_eps") or {}).items()}  # absent before eps was kept
    set_batchnorm_eps(model, bn_eps)
    provenance = provenance_of(state["config"], int(state["epoch"]), state.get("images"), list(state["metrics"]))
    if predict_imgsz is not None:
        provenance["predict_imgsz"] = int(predict_imgsz)
    return save_safetensors(model.state_dict(), model.config, dst, provenance=provenance, dtype=dtype, bn_eps=bn_eps)
