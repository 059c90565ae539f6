"""The tiny demo CLIP shipped as ``fastsam/weights/clip-demo.safetensors``: build, train, evaluate.

It only knows the synthetic scenes of :mod:`fastsam.data.synth` (captions "a <colour> <shape>", 12
colours x 6 shapes). It is an ``open_clip.model.CLIP`` of a custom small configuration, built
directly (no download; the BPE vocabulary ships inside open_clip), trained contrastively on
object crops of in-memory scenes. Crops are made exactly as at inference: the ground-truth
visible mask of each object goes through :func:`fastsam.text.mask_crops` (mask only, CLIP-mean
background, square pad) and :func:`fastsam.text.resize_crops`.

The loss knows that only 72 captions exist and that many crops in a batch share one: every crop
is scored against all 72 captions (image->text cross-entropy), and every caption present in the
batch against all crops, with all crops of that caption as positives (text->image, multi-positive).
Smaller terms do the same for shape-only ("a star") and colour-only ("a red object") texts.

Train (writes the weights with their open_clip config in the safetensors metadata)::

    python -m fastsam.train.clip_demo --out src/fastsam/weights/clip-demo.safetensors --seed 0
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..data.synth import PALETTE, SHAPES, render_scene
from ..errors import FastSAMError
from ..io.atomic import atomic_path
from ..results import Segments
from ..text import CLIP_FORMAT, CLIP_MEAN, CLIP_STD, mask_crops, normalise_crops, resize_crops
from .text_eval import TextAccuracy, gt_segments, text_accuracy

__all__ = [
    "COLORS",
    "DEMO_CONFIG",
    "CropSet",
    "TextAccuracy",
    "build_clip",
    "caption",
    "gt_segments",
    "main",
    "make_crops",
    "save_clip",
    "scenes",
    "text_accuracy",
    "train",
]

log = logging.getLogger("fastsam.train.clip_demo")

COLORS: tuple[str, ...] = tuple(PALETTE)
#: Phrasings of a full caption seen in training; the first is the synth caption used at test time.
TEMPLATES: tuple[str, ...] = ("a {c} {s}", "{c} {s}", "the {c} {s}", "a photo of a {c} {s}", "a {c} {s} shape")
SHAPE_TEXT = "a {s}"
COLOR_TEXT = "a {c} object"

#: open_clip configuration of the shipped model. The token embedding (49408 x text width) is most
#: of the file, hence the narrow text tower; 48 px crops (6 x 6 patches) are enough for 6 shapes.
DEMO_CONFIG: dict[str, Any] = {
    "name": "fastsam-clip-demo",
    "embed_dim": 64,
    "vision_cfg": {"image_size": 48, "patch_size": 8, "width": 96, "layers": 3, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 3},
    "quick_gelu": False,
    "mean": list(CLIP_MEAN),
    "std": list(CLIP_STD),
}


def caption(color: str, shape: str, template: str = TEMPLATES[0]) -> str:
    """The text for an object: ``caption("red", "star") == "a red star"`` (synth's caption)."""
    return template.format(c=color, s=shape)


def build_clip(config: dict[str, Any] = DEMO_CONFIG) -> Any:
    """A randomly initialised ``open_clip.model.CLIP`` of ``config`` (see :data:`DEMO_CONFIG`)."""
    from open_clip.model import CLIP

    return CLIP(
        config["embed_dim"],
        dict(config["vision_cfg"]),
        dict(config["text_cfg"]),
        quick_gelu=bool(config.get("quick_gelu", False)),
    )


def scenes(
    seed: int, n: int, size: tuple[int, int] = (480, 640), start: int = 0
) -> Iterator[tuple[np.ndarray, list[dict]]]:
    """Scenes ``render_scene(np.random.default_rng([seed, i]), size)`` for i in [start, start + n):
    (H, W, 3) uint8 RGB image and synth annotations (visible masks as COCO RLE)."""
    for i in range(start, start + n):
        yield render_scene(np.random.default_rng([seed, i]), size)


@dataclass
class CropSet:
    """Training crops: ``images`` (N, S, S, 3) uint8 RGB, model-size crops as inference makes them;
    ``color`` / ``shape`` (N,) int64 indices into :data:`COLORS` / ``SHAPES``."""

    images: np.ndarray
    color: np.ndarray
    shape: np.ndarray
    n_scenes: int = 0

    @property
    def label(self) -> np.ndarray:
        """(N,) int64 caption class ``color * len(SHAPES) + shape``."""
        return self.color * len(SHAPES) + self.shape


def _perturb(mask: np.ndarray, rng: np.random.Generator, p: float) -> np.ndarray:
    """With probability ``p`` a 1-px dilation or erosion of an (H, W) bool mask (the imperfect masks of a
    detector); erosion only if at least half the area survives (thin bars would vanish)."""
    if rng.random() >= p:
        return mask
    kernel = np.ones((3, 3), np.uint8)
    if rng.random() < 0.5:
        return cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)
    eroded = cv2.erode(mask.astype(np.uint8), kernel).astype(bool)
    return eroded if eroded.sum() * 2 >= mask.sum() else mask


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """``img`` (H, W, 3) uint8 RGB after a JPEG round trip (the CLI reads scenes written as JPEG)."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover
        raise OSError("JPEG encoding failed")
    decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    assert decoded is not None  # the JPEG was encoded just above
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


def make_crops(
    seed: int,
    n_scenes: int,
    image_size: int = 48,
    *,
    min_area: int = 64,
    jpeg_p: float = 0.5,
    mask_p: float = 0.3,
    size: tuple[int, int] = (480, 640),
) -> CropSet:
    """Crops of every object with visible area >= ``min_area`` px in scenes i = 0..n_scenes-1 of ``seed``.

    Each crop is ``resize_crops(mask_crops(gt_segments(...), image, [k]), (S, S))``, the inference path,
    from the object's ground-truth mask; with probability ``mask_p`` that mask is first dilated or eroded
    by one pixel, and with probability ``jpeg_p`` the scene goes through JPEG (quality 85..95) first.
    The augmentation draws come from ``default_rng([seed, 1 << 20])``, apart from the scenes' own.
    """
    rng = np.random.default_rng([seed, 1 << 20])
    images, colors, shapes = [], [], []
    for img, anns in scenes(seed, n_scenes, size):
        if rng.random() < jpeg_p:
            img = _jpeg(img, int(rng.integers(85, 96)))
        keep = [a for a in anns if a["area"] >= min_area]
        if not keep:
            continue
        seg = gt_segments(keep, size)
        masks = np.stack([_perturb(seg.mask(k), rng, mask_p) for k in range(len(keep))])
        seg = Segments.from_masks(masks, np.ones(len(keep), np.float32))
        images.append(resize_crops(mask_crops(seg, img, np.arange(len(keep))), (image_size, image_size)))
        colors += [COLORS.index(a["color"]) for a in keep]
        shapes += [SHAPES.index(a["shape"]) for a in keep]
    if not images:
        raise FastSAMError(f"no objects of at least {min_area} px in {n_scenes} scenes")
    return CropSet(np.concatenate(images), np.array(colors, np.int64), np.array(shapes, np.int64), n_scenes)


def _dihedral(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Each (3, S, S) image of the (B, 3, S, S) batch under a random one of the 8 flips/rotations (objects
    appear at every orientation in the scenes; exact on square crops, no resampling)."""
    t = torch.randint(0, 8, (x.shape[0],), generator=gen)
    out = x.clone()
    for k in range(8):
        sel = t == k
        if sel.any():
            y = torch.rot90(x[sel], k % 4, dims=(2, 3))
            out[sel] = torch.flip(y, dims=(3,)) if k >= 4 else y
    return out


def _multi_positive(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Text->image loss: ``logits`` (B, C) image-vs-text, ``target`` (B,) class of each image. For each
    class present in the batch, -log of the softmax mass (over the B images) of its own images."""
    present = torch.unique(target)
    col = logits[:, present]  # (B, P)
    pos = target[:, None] == present[None, :]
    return (torch.logsumexp(col, 0) - torch.logsumexp(col.masked_fill(~pos, float("-inf")), 0)).mean()


def _two_way(img: torch.Tensor, txt: torch.Tensor, target: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Mean of image->text cross-entropy over all C texts and the multi-positive text->image loss;
    ``img`` (B, D), ``txt`` (C, D) L2-normalised, ``target`` (B,) in [0, C)."""
    logits = scale * img @ txt.T
    return 0.5 * (F.cross_entropy(logits, target) + _multi_positive(logits, target))


@dataclass
class _Texts:
    """Tokenised training texts: ``full`` (T, 72, L) per template, ``shape`` (6, L), ``color`` (12, L)."""

    full: torch.Tensor
    shape: torch.Tensor
    color: torch.Tensor


def _tokenise(context_length: int) -> _Texts:
    from open_clip.tokenizer import SimpleTokenizer

    tok = SimpleTokenizer(context_length=context_length)
    full = torch.stack([tok([caption(c, s, t) for c in COLORS for s in SHAPES]) for t in TEMPLATES])
    return _Texts(full, tok([SHAPE_TEXT.format(s=s) for s in SHAPES]), tok([COLOR_TEXT.format(c=c) for c in COLORS]))


@dataclass
class TrainConfig:
    """Optimisation settings (AdamW, linear warm-up then cosine decay to zero)."""

    steps: int = 2400
    batch: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup: int = 100
    canonical_p: float = 0.5  # share of steps whose full captions use the synth phrasing "a red star"
    part_weight: float = 0.25  # weight of the shape-only and colour-only terms each
    log_every: int = 50
    extra: dict = field(default_factory=dict)


def train(
    model: Any,
    data: CropSet,
    cfg: TrainConfig,
    seed: int = 0,
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
    on_log: Callable[[str], None] | None = None,
) -> list[float]:
    """Train ``model`` (an open_clip CLIP) in place on ``data``; returns the loss of every step."""
    gen = torch.Generator().manual_seed(seed)
    texts = _tokenise(int(model.context_length))
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.98),
        eps=1e-6,
    )

    def lr_at(step: int) -> float:
        if step < cfg.warmup:
            return cfg.lr * (step + 1) / cfg.warmup
        return 0.5 * cfg.lr * (1 + math.cos(math.pi * (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)))

    images = torch.from_numpy(data.images)
    label, color, shape = (torch.from_numpy(a) for a in (data.label, data.color, data.shape))
    n_cls = len(COLORS) * len(SHAPES)
    losses: list[float] = []
    model.train()
    t0 = time.time()
    for step in range(cfg.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        idx = torch.randint(0, len(images), (cfg.batch,), generator=gen)
        x = _dihedral(normalise_crops(images[idx].numpy(), mean, std), gen)
        if torch.rand((), generator=gen) < cfg.canonical_p:
            full = texts.full[0]
        else:  # every caption in a random phrasing
            pick = torch.randint(0, len(TEMPLATES), (n_cls,), generator=gen)
            full = texts.full[pick, torch.arange(n_cls)]
        img = F.normalize(model.encode_image(x), dim=-1)
        txt = F.normalize(model.encode_text(torch.cat([full, texts.shape, texts.color])), dim=-1)
        scale = model.logit_scale.exp()
        t_full, t_shape, t_color = txt.split([n_cls, len(SHAPES), len(COLORS)])
        loss = _two_way(img, t_full, label[idx], scale) + cfg.part_weight * (
            _two_way(img, t_shape, shape[idx], scale) + _two_way(img, t_color, color[idx], scale)
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():  # as in CLIP: a temperature of at most 1/100
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(float(loss.detach()))
        if on_log and (step % cfg.log_every == 0 or step == cfg.steps - 1):
            recent = losses[-cfg.log_every :]
            on_log(
                f"step {step + 1}/{cfg.steps} loss {sum(recent) / len(recent):.4f} lr {lr_at(step):.2e} "
                f"scale {float(scale.detach()):.1f} {time.time() - t0:.0f}s"
            )
    model.eval()
    return losses


def save_clip(
    model: Any,
    config: dict[str, Any],
    path: str | os.PathLike,
    provenance: dict[str, Any] | None = None,
    dtype: torch.dtype = torch.float16,
) -> Path:
    """Write ``model``'s state dict as ``dtype`` safetensors with metadata ``{"format": "fastsam-clip",
    "config": <config JSON>, "provenance": <JSON>}``, which :class:`fastsam.text.ClipScorer` reads."""
    from safetensors.torch import save_file

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {
        k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
        for k, v in model.state_dict().items()
    }
    meta = {
        "format": CLIP_FORMAT,
        "config": json.dumps(config, sort_keys=True),
        "provenance": json.dumps(provenance or {}, sort_keys=True, default=str),
    }
    with atomic_path(out) as tmp:
        save_file(state, str(tmp), metadata=meta)
        os.chmod(tmp, 0o644)  # safetensors writes 0600; the file is meant to be shipped and shared
    return out


def _parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = argparse.ArgumentParser(prog="python -m fastsam.train.clip_demo", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True, help="output .safetensors file")
    p.add_argument("--seed", type=int, default=0, help="scene seed (scenes default_rng([seed, i])) and torch seed")
    p.add_argument("--scenes", type=int, default=800, help="number of training scenes (default 800)")
    p.add_argument("--steps", type=int, default=d.steps, help=f"optimiser steps (default {d.steps})")
    p.add_argument("--batch", type=int, default=d.batch, help=f"crops per step (default {d.batch})")
    p.add_argument("--lr", type=float, default=d.lr, help=f"peak learning rate (default {d.lr})")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: fastest on a shared CPU)")
    p.add_argument("--eval-seed", type=int, default=1000, help="seed of the held-out evaluation scenes (default 1000)")
    p.add_argument("--eval-scenes", type=int, default=100, help="held-out scenes evaluated at the end (default 100)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Build, train, save and evaluate the demo CLIP; progress goes to stderr."""
    args = _parser().parse_args(argv)
    if args.eval_seed == args.seed:
        print("error: --eval-seed must differ from --seed (held-out scenes)", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.time()
    cfg = DEMO_CONFIG
    data = make_crops(args.seed, args.scenes, cfg["vision_cfg"]["image_size"])
    log.info("%d crops from %d scenes in %.0fs", len(data.images), args.scenes, time.time() - t0)
    model = build_clip(cfg)
    tc = TrainConfig(steps=args.steps, batch=args.batch, lr=args.lr)
    train(model, data, tc, seed=args.seed, mean=cfg["mean"], std=cfg["std"], on_log=log.info)
    wall = time.time() - t0
    provenance = {
        "trainer": "fastsam.train.clip_demo",
        "seed": args.seed,
        "scenes": args.scenes,
        "crops": len(data.images),
        "steps": args.steps,
        "batch": args.batch,
        "lr": args.lr,
        "threads": args.threads,
        "wall_s": round(wall),
        "torch": torch.__version__,
    }
    path = save_clip(model, cfg, args.out, provenance)
    log.info("wrote %s (%.2f MB) after %.0fs", path, path.stat().st_size / 1e6, wall)
    if args.eval_scenes > 0:
        from ..text import ClipScorer

        res = text_accuracy(ClipScorer(path), scenes(args.eval_seed, args.eval_scenes))
        log.info(
            "held-out accuracy (seed %d, %d scenes, GT candidates): %d/%d = %.4f",
            args.eval_seed,
            args.eval_scenes,
            res.correct,
            res.total,
            res.accuracy,
        )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
