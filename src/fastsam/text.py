"""Text prompts: rank everything-mode masks by CLIP similarity to a phrase.

CLIP (via the optional ``open_clip`` package, ``pip install 'fastsam[text]'``) is built without
downloading anything and loaded from a local weight file only: either a built-in open_clip
architecture's weights, or a self-describing ``.safetensors`` file whose metadata holds its own
open_clip configuration (``{"format": "fastsam-clip", "config": ...}``, e.g. the shipped demo CLIP,
see :mod:`fastsam.train.clip_demo`). Each mask is shown to CLIP as its
tight box of the original image with everything outside the mask replaced by a neutral colour,
padded to a square. All crops of an image go through the image tower in one batch.
"""

from __future__ import annotations

import json
import logging
import pickle
import threading
import zipfile
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np
import torch

from .errors import CheckpointError, FastSAMError, UnsafeCheckpointError
from .io import safe_pickle
from .results import Segments

__all__ = [
    "BACKGROUND", "CLIP_FORMAT", "check_clip_model", "CLIP_MEAN", "CLIP_STD", "ClipScorer", "get_scorer", "mask_crops", "normalise_crops",
    "read_clip_config", "resize_crops", "select_by_text",
]  # fmt: skip

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
#: RGB fill outside the mask: the CLIP mean colour, which normalises to ~0 (see ``mask_crops``).
BACKGROUND = tuple(int(round(255 * m)) for m in CLIP_MEAN)
#: ``format`` metadata value of a self-describing CLIP safetensors file (config in ``config``).
CLIP_FORMAT = "fastsam-clip"
DEFAULT_CLIP_MODEL = "ViT-B-32"
# config keys that would make open_clip fetch a tower from timm / the Hugging Face hub
_REMOTE_KEYS = ("timm_model_name", "hf_model_name", "hf_tokenizer_name")

_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "HalfStorage": torch.float16, "DoubleStorage": torch.float64,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}  # fmt: skip


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
            self._storages[key] = torch.frombuffer(raw, dtype=torch.uint8).untyped_storage() if raw else \
                torch.UntypedStorage(0)  # fmt: skip
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
        raise CheckpointError(f"{path} is a TorchScript archive of an unsupported layout; convert it to a "
                              "state dict with open_clip (torch.save(model.state_dict(), ...))")  # fmt: skip
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
        raise CheckpointError(f"{path} is not a CLIP weight file (unknown format; expected a torch state dict, a "
                              ".safetensors file or OpenAI's TorchScript release)")  # fmt: skip
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
        raise CheckpointError(f"{path} is not a CLIP weight file ({why}; expected a torch state dict, a .safetensors "
                              "file or OpenAI's TorchScript release)") from e  # fmt: skip
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
        ok = isinstance(cfg, dict) and isinstance(cfg.get("embed_dim"), int) and \
            isinstance(cfg.get("vision_cfg"), dict) and isinstance(cfg.get("text_cfg"), dict)  # fmt: skip
    except (KeyError, ValueError):
        ok = False
    if not ok:
        raise CheckpointError(f"{path}: invalid {CLIP_FORMAT} metadata (needs a JSON 'config' with embed_dim, "
                              "vision_cfg and text_cfg)")  # fmt: skip
    remote = [k for part in ("vision_cfg", "text_cfg") for k in _REMOTE_KEYS if cfg[part].get(k)]
    if remote:
        raise CheckpointError(f"{path}: its CLIP config needs downloads ({remote[0]}), which is not supported")
    for key in ("mean", "std"):
        value = cfg.get(key, CLIP_MEAN if key == "mean" else CLIP_STD)
        if not (isinstance(value, list | tuple) and len(value) == 3 and all(isinstance(v, int | float) for v in value)):
            raise CheckpointError(f"{path}: invalid {CLIP_FORMAT} metadata ({key} must be 3 numbers)")
    return cfg


def _build_from_config(path: Path, cfg: dict[str, Any], device: str = "cpu") -> Any:
    """An open_clip ``CLIP`` built from a stored config (random weights; nothing is downloaded).
    On ``device="meta"`` nothing is allocated: shapes only, to vet a config before building it."""
    from open_clip.model import CLIP

    try:
        with torch.device(device):
            return CLIP(cfg["embed_dim"], dict(cfg["vision_cfg"]), dict(cfg["text_cfg"]),
                        quick_gelu=bool(cfg.get("quick_gelu", False)))  # fmt: skip
    except Exception as e:  # an unknown field (TypeError) or inconsistent sizes
        raise CheckpointError(f"{path}: cannot build CLIP from its stored config: {type(e).__name__}: {e}") from e


def _check_fits(path: Path, expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor], scripted: bool,
                model_name: str, hint: str) -> None:  # fmt: skip
    """Raise unless ``state`` has exactly the keys and shapes of ``expected`` (a model's state dict)."""
    missing = sorted(set(expected) - set(state))
    extra = sorted(k for k in set(state) - set(expected) if not (scripted or k.endswith("attn_mask")))
    bad = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or extra or bad:
        raise CheckpointError(f"{path} does not fit CLIP {model_name!r}: missing {missing[:3]}, unexpected "
                              f"{extra[:3]}, wrong shape {bad[:3]}{hint}")  # fmt: skip


class _QuietRandomInit(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


class TextScorer(Protocol):
    def similarity(self, crops: Sequence[np.ndarray], texts: Sequence[str]) -> np.ndarray: ...


class ClipScorer:
    """An open_clip CLIP model loaded once from a local file; scores image crops against texts.

    Args:
        weights: a ``torch.save`` state dict (optionally ``{"state_dict": ...}``, keys optionally
            prefixed ``module.``), a ``.safetensors`` file, or OpenAI's TorchScript release
            (e.g. ``ViT-B-32.pt``; its tensors are read without running its code, and its
            QuickGELU activation is detected). For state dicts converted from OpenAI's weights pass
            ``model_name="ViT-B-32-quickgelu"``. A self-describing safetensors file (metadata
            ``format: fastsam-clip``, like :func:`fastsam.weights.default_clip_path`) carries
            its own architecture, input size and normalisation.
        model_name: a built-in open_clip architecture (None: ``ViT-B-32``); ignored for a
            self-describing file, which is always built from its stored config.
        device: torch device for the model.
    """

    def __init__(self, weights: str | Path, model_name: str | None = None,
                 device: str | torch.device = "cpu") -> None:  # fmt: skip
        try:
            import open_clip
        except ImportError as e:
            raise FastSAMError("text prompts need the 'text' extra: pip install 'fastsam[text]'") from e
        path = Path(weights).expanduser()
        stored = read_clip_config(path) if path.is_file() else None
        if stored is not None:  # the file names its own architecture: model_name does not apply
            self._init_stored(path, stored, str(stored.get("name", CLIP_FORMAT)), device)
            return
        model_name = model_name or DEFAULT_CLIP_MODEL
        cfg = open_clip.get_model_config(model_name) if ":" not in model_name else None
        if cfg is None:
            raise FastSAMError(f"unknown CLIP model {model_name!r}; choose a built-in open_clip architecture")
        text_cfg = cfg.get("text_cfg", {})
        if "hf_tokenizer_name" in text_cfg or "hf_model_name" in text_cfg or "siglip" in model_name.lower():
            raise FastSAMError(f"CLIP model {model_name!r} needs files from the Hugging Face hub, "
                               "which is not supported (nothing is downloaded)")  # fmt: skip
        if not path.is_file():
            raise FastSAMError(f"CLIP weights not found: {path} (pass a local weight file with --clip-weights)")
        state, quick, scripted = read_clip_state_dict(path)
        root = logging.getLogger()
        quiet = _QuietRandomInit()
        root.addFilter(quiet)
        try:
            model = open_clip.create_model(model_name, pretrained=None, force_quick_gelu=quick)
        finally:
            root.removeFilter(quiet)
        self._finish(path, model, state, scripted, model_name, device)
        self.tokenizer = open_clip.get_tokenizer(model_name)

    def _init_stored(self, path: Path, cfg: dict[str, Any], name: str, device: str | torch.device) -> None:
        """Build a self-describing file's model from its stored config; its tokenizer is open_clip's
        bundled BPE (no download) with the stored context length."""
        from open_clip.tokenizer import SimpleTokenizer

        state, _, _ = read_clip_state_dict(path)
        # shapes first, on the meta device: a config of absurd sizes fails here without allocating them
        _check_fits(path, _build_from_config(path, cfg, "meta").state_dict(), state, False, name, "")
        model = _build_from_config(path, cfg)
        self._finish(path, model, state, False, name, device, hint="")
        self.mean, self.std = tuple(cfg.get("mean", CLIP_MEAN)), tuple(cfg.get("std", CLIP_STD))
        self.tokenizer = SimpleTokenizer(context_length=int(model.context_length))

    def _finish(self, path: Path, model: Any, state: dict[str, torch.Tensor], scripted: bool, model_name: str,
                device: str | torch.device, hint: str = " (is --clip-model right?)") -> None:  # fmt: skip
        """Load ``state`` into ``model`` strictly (dtypes are cast to the model's) and set it up for inference."""
        expected = model.state_dict()
        _check_fits(path, expected, state, scripted, model_name, hint)
        model.load_state_dict({k: state[k] for k in expected}, strict=True)
        from .devices import resolve_device

        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.model_name = model_name
        self.mean: tuple[float, ...] = CLIP_MEAN
        self.std: tuple[float, ...] = CLIP_STD
        size = getattr(model.visual, "image_size", 224)
        self.image_size: tuple[int, int] = (int(size), int(size)) if isinstance(size, int) else \
            (int(size[0]), int(size[1]))  # fmt: skip

    def preprocess(self, crops: Sequence[np.ndarray]) -> torch.Tensor:
        """(N, 3, h, w) float32 CLIP input: :func:`resize_crops` to the model's image size, then
        :func:`normalise_crops` with the model's mean/std (the OpenAI CLIP ones unless the file says)."""
        return normalise_crops(resize_crops(crops, self.image_size), self.mean, self.std)

    def similarity(self, crops: Sequence[np.ndarray], texts: Sequence[str]) -> np.ndarray:
        """(T, N) float32 cosine similarity of text t and crop n (L2-normalised embeddings)."""
        if not crops:
            return np.zeros((len(texts), 0), dtype=np.float32)
        with torch.inference_mode():
            img = self.model.encode_image(self.preprocess(crops).to(self.device)).float()
            txt = self.model.encode_text(self.tokenizer(list(texts)).to(self.device)).float()
            img = img / img.norm(dim=-1, keepdim=True)
            txt = txt / txt.norm(dim=-1, keepdim=True)
            return (txt @ img.T).cpu().numpy()


def resize_crops(crops: Sequence[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """(N, h, w, 3) uint8: each RGB uint8 (H, W, 3) crop resized to ``size`` = (h, w), bicubic (PIL).

    Training of the demo CLIP uses this very function, so its inputs match inference exactly.
    """
    from PIL import Image

    h, w = size
    return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(c)).resize((w, h), Image.BICUBIC))
                     for c in crops])  # fmt: skip


def normalise_crops(batch: np.ndarray, mean: Sequence[float] = CLIP_MEAN,
                    std: Sequence[float] = CLIP_STD) -> torch.Tensor:  # fmt: skip
    """(N, 3, h, w) float32 from (N, h, w, 3) uint8 RGB: scaled to [0, 1], minus ``mean``, over ``std``."""
    x = np.asarray(batch).astype(np.float32) / 255.0
    x = (x - np.float32(mean)) / np.float32(std)
    return torch.from_numpy(x.transpose(0, 3, 1, 2).copy())


_CACHE: dict[tuple[str, str, str], ClipScorer] = {}
_CACHE_LOCK = threading.Lock()


def check_clip_model(weights: str | Path, model_name: str | None) -> None:
    """Raise :class:`FastSAMError` if ``model_name`` cannot apply to ``weights``: an architecture
    open_clip does not know, or any name for a self-describing file (which is always built from its
    own stored config, so a name given for it would be silently ignored)."""
    if model_name is None:
        return
    try:
        import open_clip
    except ImportError as e:
        raise FastSAMError("text prompts need the 'text' extra: pip install 'fastsam[text]'") from e
    if open_clip.get_model_config(model_name) is None:
        known = ", ".join(m for m in open_clip.list_models() if m.startswith(("ViT-B", "RN50")))[:160]
        raise FastSAMError(f"unknown CLIP model {model_name!r}; choose a built-in open_clip architecture ({known}, ...)")
    path = Path(weights).expanduser()
    if path.is_file() and read_clip_config(path) is not None:
        raise FastSAMError(f"a CLIP model name ({model_name!r}) does not apply to {path}: the file carries its own "
                           "architecture")  # fmt: skip


def get_scorer(weights: str | Path, model_name: str | None = None, device: str | torch.device = "cpu") -> ClipScorer:
    """A process-wide :class:`ClipScorer` per (resolved weight path, model name, device)."""
    from .devices import resolve_device

    key = (str(Path(weights).expanduser().resolve()), model_name or "", str(resolve_device(device)))
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = ClipScorer(weights, model_name, device)
        return _CACHE[key]


def _check_image(segments: Segments, image_rgb: np.ndarray) -> np.ndarray:
    img = np.asarray(image_rgb)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise FastSAMError(f"image must be an (H, W, 3) uint8 RGB array, got {img.dtype} {img.shape}")
    if img.shape[:2] != tuple(segments.image_size):
        raise FastSAMError(f"image is {img.shape[1]}x{img.shape[0]} but the masks are for "
                           f"{segments.image_size[1]}x{segments.image_size[0]}")  # fmt: skip
    return img


def mask_crops(segments: Segments, image_rgb: np.ndarray, indices: Sequence[int] | np.ndarray) -> list[np.ndarray]:
    """Square (S, S, 3) uint8 RGB crops showing each mask ``indices[i]`` alone.

    Each crop is the tight box of the mask in the original image (``image_rgb``, (H, W, 3) uint8
    RGB, same frame as ``segments``); pixels outside the mask get :data:`BACKGROUND`, the CLIP mean
    colour, which normalises to ~0 and so reads as "nothing" to CLIP. A white or black fill would be
    seen as a colour of the object ("a white ...") and bias the ranking. The box is then padded,
    centred, to a square with the same colour, so CLIP's square input shows the whole object
    (a center crop would cut elongated objects off). An empty mask gives a 1x1 background crop.
    """
    img = _check_image(segments, image_rgb)
    bg = np.array(BACKGROUND, dtype=np.uint8)
    out = []
    for k in np.asarray(indices, dtype=np.int64).reshape(-1):
        crop, (r0, _, c0, _) = segments.crops[k], segments.regions[k]
        rows, cols = np.flatnonzero(crop.any(1)), np.flatnonzero(crop.any(0))
        if len(rows) == 0:
            out.append(np.tile(bg, (1, 1, 1)))
            continue
        m = crop[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        y0, x0 = r0 + rows[0], c0 + cols[0]
        h, w = m.shape
        side = max(h, w)
        sq = np.tile(bg, (side, side, 1))
        dy, dx = (side - h) // 2, (side - w) // 2
        sq[dy : dy + h, dx : dx + w] = np.where(m[..., None], img[y0 : y0 + h, x0 : x0 + w], bg)
        out.append(sq)
    return out


def select_by_text(segments: Segments, image_rgb: np.ndarray, texts: str | Sequence[str], scorer: TextScorer, *,
                   threshold: float | None = None, min_area: int = 100) -> list[np.ndarray]:  # fmt: skip
    """Masks matching each text, as int64 arrays of segment indices (one array per text).

    Masks with ``area <= min_area`` are never candidates. By default each array holds the single
    best mask (empty if no mask is a candidate); with ``threshold`` it holds every candidate whose
    cosine similarity is ``>= threshold``, most similar first. All texts share one image batch.
    ``image_rgb`` is the (H, W, 3) uint8 RGB original image the segments were computed on.
    """
    items = [texts] if isinstance(texts, str) else list(texts)
    if not items:
        raise FastSAMError("no text prompt given")
    for t in items:
        if not isinstance(t, str) or not t.strip():
            raise FastSAMError(f"text prompts must be non-empty strings, got {t!r}")
    if threshold is not None and not (isinstance(threshold, (int, float, np.floating)) and np.isfinite(threshold)):
        raise FastSAMError(f"text threshold must be a finite number (a cosine similarity in [-1, 1]), got {threshold!r}")
    _check_image(segments, image_rgb)
    eligible = np.flatnonzero(segments.areas > min_area).astype(np.int64)
    if eligible.size == 0:
        return [np.zeros(0, dtype=np.int64) for _ in items]
    sims = np.asarray(scorer.similarity(mask_crops(segments, image_rgb, eligible), items))
    out = []
    for row in sims:
        if threshold is None:
            out.append(eligible[[int(np.argmax(row))]])
        else:
            hit = np.flatnonzero(row >= threshold)
            out.append(eligible[hit[np.argsort(-row[hit], kind="stable")]])
    return out
