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

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from .errors import CheckpointError, FastSAMError
from .io.clip_files import CLIP_FORMAT, CLIP_MEAN, CLIP_STD, read_clip_config, read_clip_state_dict
from .results import Segments

__all__ = [
    "BACKGROUND",
    "CLIP_FORMAT",
    "CLIP_MEAN",
    "CLIP_STD",
    "ClipScorer",
    "check_clip_model",
    "get_scorer",
    "mask_crops",
    "normalise_crops",
    "read_clip_config",
    "read_clip_state_dict",
    "resize_crops",
    "select_by_text",
]

#: RGB fill outside the mask: the CLIP mean colour, which normalises to ~0 (see ``mask_crops``).
BACKGROUND = tuple(round(255 * m) for m in CLIP_MEAN)
DEFAULT_CLIP_MODEL = "ViT-B-32"


def _build_from_config(path: Path, cfg: dict[str, Any], device: str = "cpu") -> Any:
    """An open_clip ``CLIP`` built from a stored config (random weights; nothing is downloaded).
    On ``device="meta"`` nothing is allocated: shapes only, to vet a config before building it."""
    from open_clip.model import CLIP

    try:
        with torch.device(device):
            return CLIP(
                cfg["embed_dim"],
                dict(cfg["vision_cfg"]),
                dict(cfg["text_cfg"]),
                quick_gelu=bool(cfg.get("quick_gelu", False)),
            )
    except Exception as e:  # an unknown field (TypeError) or inconsistent sizes
        raise CheckpointError(f"{path}: cannot build CLIP from its stored config: {type(e).__name__}: {e}") from e


def _check_fits(
    path: Path,
    expected: dict[str, torch.Tensor],
    state: dict[str, torch.Tensor],
    scripted: bool,
    model_name: str,
    hint: str,
) -> None:
    """Raise unless ``state`` has exactly the keys and shapes of ``expected`` (a model's state dict)."""
    missing = sorted(set(expected) - set(state))
    extra = sorted(k for k in set(state) - set(expected) if not (scripted or k.endswith("attn_mask")))
    bad = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or extra or bad:
        raise CheckpointError(
            f"{path} does not fit CLIP {model_name!r}: missing {missing[:3]}, unexpected "
            f"{extra[:3]}, wrong shape {bad[:3]}{hint}"
        )


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

    mean: tuple[float, ...]  # normalisation of the model's input (set by _finish, maybe overridden by the file)
    std: tuple[float, ...]

    def __init__(self, weights: str | Path, model_name: str | None = None, device: str | torch.device = "cpu") -> None:
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
            raise FastSAMError(
                f"CLIP model {model_name!r} needs files from the Hugging Face hub, "
                "which is not supported (nothing is downloaded)"
            )
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

    def _finish(
        self,
        path: Path,
        model: Any,
        state: dict[str, torch.Tensor],
        scripted: bool,
        model_name: str,
        device: str | torch.device,
        hint: str = " (is --clip-model right?)",
    ) -> None:
        """Load ``state`` into ``model`` strictly (dtypes are cast to the model's) and set it up for inference."""
        expected = model.state_dict()
        _check_fits(path, expected, state, scripted, model_name, hint)
        model.load_state_dict({k: state[k] for k in expected}, strict=True)
        from .devices import resolve_device

        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.model_name = model_name
        self.mean = CLIP_MEAN
        self.std = CLIP_STD
        size = getattr(model.visual, "image_size", 224)
        self.image_size: tuple[int, int] = (
            (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
        )

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
    return np.stack(
        [np.asarray(Image.fromarray(np.ascontiguousarray(c)).resize((w, h), Image.Resampling.BICUBIC)) for c in crops]
    )


def normalise_crops(
    batch: np.ndarray, mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD
) -> torch.Tensor:
    """(N, 3, h, w) float32 from (N, h, w, 3) uint8 RGB: scaled to [0, 1], minus ``mean``, over ``std``."""
    x: np.ndarray = np.asarray(batch).astype(np.float32) / 255.0
    x = (x - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
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
        raise FastSAMError(
            f"unknown CLIP model {model_name!r}; choose a built-in open_clip architecture ({known}, ...)"
        )
    path = Path(weights).expanduser()
    if path.is_file() and read_clip_config(path) is not None:
        raise FastSAMError(
            f"a CLIP model name ({model_name!r}) does not apply to {path}: the file carries its own architecture"
        )


def get_scorer(weights: str | Path, model_name: str | None = None, device: str | torch.device = "cpu") -> ClipScorer:
    """A process-wide :class:`ClipScorer` per (resolved weight path, model name, device)."""
    from .devices import resolve_device

    key = (str(Path(weights).expanduser().resolve()), model_name or "", str(resolve_device(device)))
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = ClipScorer(weights, model_name, device)
        return _CACHE[key]


def scorer_or_demo(
    weights: str | Path | None, model_name: str | None, device: str | torch.device, needs: str
) -> ClipScorer:
    """:func:`get_scorer` for ``weights``, or for the shipped demo CLIP when ``weights`` is None; an
    installation without it raises FastSAMError saying ``needs`` (e.g. "texts= needs ...")."""
    if weights is None:
        from .weights import default_clip_path

        try:
            weights = default_clip_path()
        except FastSAMError as exc:
            raise FastSAMError(f"{needs} ({exc})") from exc
    return get_scorer(weights, model_name, device)


def _check_image(segments: Segments, image_rgb: np.ndarray) -> np.ndarray:
    img = np.asarray(image_rgb)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise FastSAMError(f"image must be an (H, W, 3) uint8 RGB array, got {img.dtype} {img.shape}")
    if img.shape[:2] != tuple(segments.image_size):
        raise FastSAMError(
            f"image is {img.shape[1]}x{img.shape[0]} but the masks are for "
            f"{segments.image_size[1]}x{segments.image_size[0]}"
        )
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


def select_by_text(
    segments: Segments,
    image_rgb: np.ndarray,
    texts: str | Sequence[str],
    scorer: TextScorer,
    *,
    threshold: float | None = None,
    min_area: int = 100,
) -> list[np.ndarray]:
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
        raise FastSAMError(
            f"text threshold must be a finite number (a cosine similarity in [-1, 1]), got {threshold!r}"
        )
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
