"""Loading and saving weights.

Formats, recognised by content (not by file name):

* **fastsam safetensors** (our own): tensors under our readable names, plus JSON metadata
  ``{"format": "fastsam", "config": {...}, "provenance": {...}}`` and, only for networks whose
  BatchNorm eps is not YOLOv8's 1e-3 everywhere, ``"bn_eps": {"default": 1e-05, "layers":
  {"backbone.stem.bn": 0.0001}}``: ``default`` applies to every BatchNorm not listed in ``layers``
  (either may be absent; a missing ``default`` and a file without the field mean 1e-3). eps is a
  per-layer constant, not a tensor, so it needs its own field to survive a conversion.
* **ultralytics pickles** (the released ``FastSAM-s.pt`` / ``FastSAM-x.pt``): read through the
  allow-listing unpickler in :mod:`fastsam.io.ultralytics`; nothing inside is executed.

Loading is strict: missing, unexpected or mis-shaped tensors raise :class:`CheckpointError`
naming them.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..config import ModelConfig
from ..errors import CheckpointError
from ..nn.blocks import BN_EPS
from ..nn.model import FastSAMNet, set_batchnorm_eps
from .atomic import atomic_path
from .ultralytics import read_ultralytics_checkpoint

__all__ = ["LoadedWeights", "convert", "load_model", "load_state_strict", "read_weights", "save_safetensors"]

FORMAT_NAME = "fastsam"
FORMAT_VERSION = "1"


@dataclass
class LoadedWeights:
    """A state dict in our names, the architecture it fits, where it came from, and the eps of each
    BatchNorm that differs from ``BN_EPS`` (by our layer name; apply with
    :func:`fastsam.nn.model.set_batchnorm_eps`: loading the tensors alone is not enough)."""

    state: dict[str, Tensor]
    config: ModelConfig
    provenance: dict[str, Any] = field(default_factory=dict)
    bn_eps: dict[str, float] = field(default_factory=dict)


def _sniff(path: Path) -> str:
    if not path.exists():
        raise CheckpointError(f"{path}: weight file not found")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, expected a weight file")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path}: weight file is empty")
    with path.open("rb") as fh:
        head = fh.read(16)
    # safetensors: little-endian u64 header length, then a JSON header. Test it first: the length's
    # first byte may well be 0x80, which also starts a pickle.
    if len(head) >= 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") <= size - 8:
        return "safetensors"
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":
        return "pickle"
    raise CheckpointError(f"{path}: not a weight file (neither a PyTorch checkpoint nor safetensors)")


def _read_safetensors(path: Path) -> LoadedWeights:
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable safetensors file ({exc})") from None
    if meta.get("format") != FORMAT_NAME or "config" not in meta:
        raise CheckpointError(f"{path}: safetensors file without fastsam metadata (was it written by fastsam convert?)")
    try:
        cfg = ModelConfig(**json.loads(meta["config"]))
        provenance = json.loads(meta.get("provenance", "{}"))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: invalid fastsam metadata ({exc})") from None
    try:
        bn_eps = _parse_bn_eps(meta.get("bn_eps"), _batchnorm_names(state))
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    return LoadedWeights(state, cfg, provenance, bn_eps)


def _batchnorm_names(state: Mapping[str, Tensor]) -> list[str]:
    """Our BatchNorm layer names, from the tensors they own (``backbone.stem.bn.running_var``)."""
    return sorted(k[: -len(".running_var")] for k in state if k.endswith(".running_var"))


def _valid_eps(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def _parse_bn_eps(field_text: str | None, names: list[str]) -> dict[str, float]:
    """The ``bn_eps`` metadata field -> eps of every BatchNorm other than ``BN_EPS``, by layer name."""
    if field_text is None:
        return {}
    try:
        spec = json.loads(field_text)
    except ValueError as exc:
        raise CheckpointError(f"invalid bn_eps metadata ({exc})") from None
    if not isinstance(spec, dict) or set(spec) - {"default", "layers"} or not isinstance(spec.get("layers", {}), dict):
        raise CheckpointError('invalid bn_eps metadata: expected {"default": eps, "layers": {layer: eps}}')
    default, layers = spec.get("default", BN_EPS), spec.get("layers", {})
    if not _valid_eps(default):
        raise CheckpointError(f"bn_eps metadata: default eps {default!r} is not a finite positive number")
    for name, value in layers.items():
        if name not in names:
            raise CheckpointError(f"bn_eps metadata names {name!r}, which is not a BatchNorm of the network")
        if not _valid_eps(value):
            raise CheckpointError(
                f"bn_eps metadata: BatchNorm {name} has eps {value!r}; expected a finite positive number"
            )
    full = {name: float(layers.get(name, default)) for name in names}
    return {name: value for name, value in full.items() if value != BN_EPS}


def _format_bn_eps(bn_eps: Mapping[str, float], names: list[str]) -> str | None:
    """Per-layer eps -> the ``bn_eps`` field (the most common eps as default), or None if all are BN_EPS."""
    unknown = sorted(set(bn_eps) - set(names))
    if unknown:
        raise CheckpointError(f"eps given for {unknown[0]}, which is not a BatchNorm of the state dict")
    bad = [name for name, value in bn_eps.items() if not _valid_eps(value)]
    if bad:
        raise CheckpointError(f"BatchNorm {bad[0]} has eps {bn_eps[bad[0]]!r}; expected a finite positive number")
    full = {name: float(bn_eps.get(name, BN_EPS)) for name in names}
    if all(value == BN_EPS for value in full.values()):
        return None
    default = Counter(full.values()).most_common(1)[0][0]
    spec: dict[str, Any] = {"default": default}
    layers = {name: value for name, value in full.items() if value != default}
    if layers:
        spec["layers"] = layers
    return json.dumps(spec)


def read_weights(path: str | Path) -> LoadedWeights:
    """Read a weight file of any supported format (see module docstring) without building a model."""
    path = Path(path)
    kind = _sniff(path)
    if kind == "safetensors":
        return _read_safetensors(path)
    state, cfg, meta, bn_eps = read_ultralytics_checkpoint(path)
    meta["source_file"] = path.name
    return LoadedWeights(state, cfg, meta, bn_eps)


def load_state_strict(
    model: FastSAMNet, state: dict[str, Tensor], source: str = "checkpoint", assign: bool = False
) -> None:
    """Copy ``state`` into ``model`` (cast to the model's dtype); raise naming every mismatch.

    ``assign=True`` makes the tensors of ``state`` the model's own instead (dtype kept): the way to
    fill a network built on the meta device without allocating it first.
    """
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(
        f"{k} {tuple(state[k].shape)} (expected {tuple(own[k].shape)})"
        for k in set(own) & set(state)
        if state[k].shape != own[k].shape
    )
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
        if items:
            shown = ", ".join(items[:5]) + (f", ... ({len(items)} in all)" if len(items) > 5 else "")
            problems.append(f"{label}: {shown}")
    if problems:
        raise CheckpointError(f"{source} does not fit the network; " + "; ".join(problems))
    if assign:
        model.load_state_dict(state, strict=True, assign=True)
        return
    with torch.no_grad():
        for key, value in state.items():
            own[key].copy_(value)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> FastSAMNet:
    """Build the network described by a weight file and load it strictly (fp32, eval mode)."""
    weights = read_weights(path)
    with torch.device("meta"):
        model = FastSAMNet(weights.config)
    # The file's tensors become the network's (no random init, no second allocation; and no
    # to_empty(), whose first call imports sympy: most of a second on a cold start).
    load_state_strict(model, weights.state, source=str(path), assign=True)
    try:
        set_batchnorm_eps(model, weights.bn_eps)  # per-layer constants: not in the tensors
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"{path}: {exc.args[0]}") from None
    model.provenance = weights.provenance  # type: ignore[assignment]
    return model.float().eval().to(device)


def save_safetensors(
    state: dict[str, Tensor],
    config: ModelConfig,
    path: str | os.PathLike[str],
    provenance: dict[str, Any] | None = None,
    dtype: torch.dtype | None = None,
    bn_eps: Mapping[str, float] | None = None,
) -> Path:
    """Write our own format: safetensors of ``state`` (optionally cast to ``dtype``) plus JSON metadata.

    ``bn_eps``: eps of the BatchNorm layers that differ from ``BN_EPS`` (by layer name, as
    :func:`fastsam.nn.model.batchnorm_eps` gives them), recorded in the ``bn_eps`` field.
    """
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {}
    for key, value in state.items():
        value = value.detach().cpu()
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        tensors[key] = value.contiguous()
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "config": json.dumps(config.to_dict()),
        "provenance": json.dumps(provenance or {}, sort_keys=True, default=str),
    }
    eps_field = _format_bn_eps(bn_eps or {}, _batchnorm_names(state))
    if eps_field is not None:
        meta["bn_eps"] = eps_field
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:  # never a half-written file under the final name
        save_file(tensors, str(tmp), metadata=meta)
    return path


def convert(src: str | Path, dst: str | Path, dtype: torch.dtype | None = None) -> Path:
    """Convert any supported weight file to our safetensors format (keeps the source dtype by default)."""
    weights = read_weights(src)
    with torch.device("meta"):
        probe = FastSAMNet(weights.config)
    # Validate before writing so that a bad source never produces an output file.
    own = probe.state_dict()
    bad = set(own) ^ set(weights.state) or {k for k in own if own[k].shape != weights.state[k].shape}
    if bad:
        load_state_strict(FastSAMNet(weights.config), weights.state, source=str(src))
    provenance = dict(weights.provenance)
    provenance.setdefault("converted_from", Path(src).name)
    return save_safetensors(weights.state, weights.config, dst, provenance, dtype=dtype, bn_eps=weights.bn_eps)
