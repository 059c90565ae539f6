"""Reading CLIP weight files without executing anything stored in them.

Three kinds of file hold CLIP weights: a ``torch.save`` state dict, a ``.safetensors`` file
(optionally self-describing: ``{"format": "fastsam-clip", "config": ...}`` metadata), and OpenAI's
TorchScript release, whose pickled module tree is read by an allow-listing unpickler (scripted
classes become inert placeholders; nothing is compiled or run). Building and scoring live in
:mod:`fastsam.text`.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, UnsafeCheckpointError
from . import safe_pickle

__all__ = ["CLIP_FORMAT", "CLIP_MEAN", "CLIP_STD", "read_clip_config", "read_clip_state_dict"]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
#: ``format`` metadata value of a self-describing CLIP safetensors file (config in ``config``).
CLIP_FORMAT = "fastsam-clip"
# config keys that would make open_clip fetch a tower from timm / the Hugging Face hub
_REMOTE_KEYS = ("timm_model_name", "hf_model_name", "hf_tokenizer_name")

_STORAGE_DTYPES = {
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "DoubleStorage": torch.float64,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


class _ArchiveUnpickler(safe_pickle.Unpickler):
    """Reads ``data.pkl`` of a TorchScript archive without compiling or running anything from it.

    ``__torch__.*`` classes (the archive's scripted modules) become inert placeholders, storage
    types map to dtypes, tensor bytes come from the archive's ``<prefix>/data/<key>`` records;
    everything else goes through the allow-list of :class:`fastsam.io.safe_pickle.Unpickler`.
    """

    def __init__(self, file: Any, archive: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(file)
        self._archive, self._prefix = archive, prefix
        self._storages: dict[str, torch.UntypedStorage] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "__torch__" or module.startswith("__torch__."):
            return safe_pickle._inert_class(module, name)
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage"):
            raise UnsafeCheckpointError(f"refusing to load: unexpected persistent id {pid!r:.80}")
        dtype, key = pid[1], str(pid[2])
        if not isinstance(dtype, torch.dtype) or not key.isalnum():
            raise CheckpointError(f"malformed storage reference {pid!r:.80} in the TorchScript archive")
        if key not in self._storages:
            raw = bytearray(self._archive.read(f"{self._prefix}/data/{key}"))
            self._storages[key] = (
                torch.frombuffer(raw, dtype=torch.uint8).untyped_storage() if raw else torch.UntypedStorage(0)
            )
        return torch.storage.TypedStorage(wrap_storage=self._storages[key], dtype=dtype, _internal=True)


def _walk(obj: Any, prefix: str, out: dict[str, torch.Tensor], seen: set[int]) -> bool:
    """Collect tensors of an inert module tree into ``out``; True if a QuickGELU module occurs."""
    if id(obj) in seen:
        return False
    seen.add(id(obj))
    quick = safe_pickle.is_inert(obj, "QuickGELU")
    state = obj.state if isinstance(obj.state, dict) else {}
    if "_parameters" in state or "_modules" in state:  # a plain pickled nn.Module
        items: dict[str, Any] = {}
        for part in ("_parameters", "_buffers", "_modules"):
            items.update(state.get(part) or {})
    else:  # a scripted module: one flat dict of attributes
        items = state
    for name, value in items.items():
        if isinstance(value, torch.Tensor):
            out[prefix + str(name)] = value
        elif safe_pickle.is_inert(value):
            quick |= _walk(value, f"{prefix}{name}.", out, seen)
    return quick


def _read_torchscript(path: Path, archive: zipfile.ZipFile) -> tuple[dict[str, torch.Tensor], bool]:
    pkls = [n for n in archive.namelist() if n.count("/") == 1 and n.endswith("/data.pkl")]
    if len(pkls) != 1:
        raise CheckpointError(
            f"{path} is a TorchScript archive of an unsupported layout; convert it to a "
            "state dict with open_clip (torch.save(model.state_dict(), ...))"
        )
    prefix = pkls[0].split("/")[0]
    with archive.open(pkls[0]) as f:
        root = _ArchiveUnpickler(f, archive, prefix).load()
    if not safe_pickle.is_inert(root):
        raise CheckpointError(f"{path}: the TorchScript archive does not hold a module")
    state: dict[str, torch.Tensor] = {}
    quick = _walk(root, "", state, set())
    return state, quick


def read_clip_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], bool, bool]:
    """Tensors of a CLIP weight file, without executing anything stored in it.

    Returns (state dict, uses QuickGELU (known only for TorchScript archives), is a TorchScript archive).
    """
    with open(path, "rb") as f:
        head = f.read(9)
    quick = scripted = False
    is_safetensors = path.suffix == ".safetensors" or (len(head) == 9 and head[8:9] == b"{")
    # torch.save writes a zip archive (or, before torch 1.6, a pickle: protocol 2+ starts with 0x80)
    if not (is_safetensors or zipfile.is_zipfile(path) or head[:1] == b"\x80"):
        raise CheckpointError(
            f"{path} is not a CLIP weight file (unknown format; expected a torch state dict, a "
            ".safetensors file or OpenAI's TorchScript release)"
        )
    try:
        if is_safetensors:
            from safetensors.torch import load_file

            obj: Any = load_file(str(path), device="cpu")
        elif zipfile.is_zipfile(path) and any("/code/" in n for n in zipfile.ZipFile(path).namelist()):
            with zipfile.ZipFile(path) as archive:
                obj, quick = _read_torchscript(path, archive)
            scripted = True
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except (CheckpointError, MemoryError):
        raise
    except pickle.UnpicklingError as e:
        why = str(e).partition("WeightsUnpickler error:")[2].strip().split("\n")[0] or str(e)[:200]
        raise UnsafeCheckpointError(
            f"refusing to load {path}: it is not a plain weight file ({why}); nothing in it was executed"
        ) from e
    except Exception as e:  # e.g. "KeyError: 105" from pickle on a JPEG: not worth showing
        why = "truncated file" if isinstance(e, EOFError) else "unknown format"
        raise CheckpointError(
            f"{path} is not a CLIP weight file ({why}; expected a torch state dict, a .safetensors "
            "file or OpenAI's TorchScript release)"
        ) from e
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a CLIP state dict")
    return {str(k).removeprefix("module."): v for k, v in obj.items()}, quick, scripted


def read_clip_config(path: Path) -> dict[str, Any] | None:
    """The open_clip configuration stored in a self-describing CLIP safetensors file, else None.

    The config is JSON: ``embed_dim`` (int), ``vision_cfg`` / ``text_cfg`` (dicts of
    ``open_clip.model.CLIPVisionCfg`` / ``CLIPTextCfg`` fields), optional ``quick_gelu`` (bool),
    ``mean`` / ``std`` (3 floats, RGB normalisation of [0, 1] pixels) and ``name``. Only
    data is read; fields that would make open_clip download a tower are refused.
    """
    with open(path, "rb") as f:
        head = f.read(9)
    if not (path.suffix == ".safetensors" or (len(head) == 9 and head[8:9] == b"{")):
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt", device="cpu") as fh:
            meta = fh.metadata() or {}
    except Exception as e:
        raise CheckpointError(f"cannot read CLIP weights {path}: {type(e).__name__}: {e}") from e
    if meta.get("format") != CLIP_FORMAT:
        return None
    try:
        cfg = json.loads(meta["config"])
        ok = (
            isinstance(cfg, dict)
            and isinstance(cfg.get("embed_dim"), int)
            and isinstance(cfg.get("vision_cfg"), dict)
            and isinstance(cfg.get("text_cfg"), dict)
        )
    except (KeyError, ValueError):
        ok = False
    if not ok:
        raise CheckpointError(
            f"{path}: invalid {CLIP_FORMAT} metadata (needs a JSON 'config' with embed_dim, vision_cfg and text_cfg)"
        )
    remote = [k for part in ("vision_cfg", "text_cfg") for k in _REMOTE_KEYS if cfg[part].get(k)]
    if remote:
        raise CheckpointError(f"{path}: its CLIP config needs downloads ({remote[0]}), which is not supported")
    for key in ("mean", "std"):
        value = cfg.get(key, CLIP_MEAN if key == "mean" else CLIP_STD)
        if not (isinstance(value, list | tuple) and len(value) == 3 and all(isinstance(v, int | float) for v in value)):
            raise CheckpointError(f"{path}: invalid {CLIP_FORMAT} metadata ({key} must be 3 numbers)")
    return cfg
