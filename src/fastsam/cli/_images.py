"""``fastsam segment`` and ``fastsam prompt``: everything mode over image files, records and overlays out.

Everything that can be checked before the network runs is checked first, in this order: options
(numbers, device, sizes), sources (existing regular files or directories), output names (none may
replace an input), then the model. Outputs are written atomically (:mod:`fastsam.io.atomic`), so a
crash or a full disk never leaves a half-written record.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import FastSAMError, ImageTooLargeError
from ..io.atomic import write_atomic
from ._image_run import INDEX, ImageRun

if TYPE_CHECKING:
    import numpy as np

    from ..config import PredictConfig
    from ..results import Segments
    from ..tiling import TileConfig

__all__ = ["OUTPUT_SUFFIXES", "plan_outputs", "prompt", "segment"]

EXIT_USAGE = 2
#: What each image writes: OUT/<stem>.json (records) and OUT/<stem>.png (overlay).
OUTPUT_SUFFIXES = (".json", ".png")

Handler = Callable[["np.ndarray", "Segments"], "tuple[list[dict[str, Any]], np.ndarray]"]


def _unique_stem(name: str, used: set[str]) -> str:
    stem = Path(name).stem or "image"
    candidate, n = stem, 1
    while candidate in used:  # two inputs with the same stem must not overwrite each other
        candidate = f"{stem}_{n}"
        n += 1
    used.add(candidate)
    return candidate


def plan_outputs(items: list[tuple[str, Any]], out: Path, suffixes: tuple[str, ...] = OUTPUT_SUFFIXES) -> list[str]:
    """Output stems for ``items`` ((name, source) pairs, in order); raise :class:`FastSAMError` if an
    output file would be one of the input files (same resolved path, or the same file by device and
    inode: hard links, case-insensitive file systems). Checked before any work, so a refused run
    changes nothing. Image outputs (the default ``suffixes``) never take the stem of OUT/index.json."""
    index = suffixes == OUTPUT_SUFFIXES
    used = {Path(INDEX).stem} if index else set()
    stems = [_unique_stem(name, used) for name, _ in items]
    by_path: dict[Path, str] = {}
    by_inode: dict[tuple[int, int], str] = {}
    for name, source in items:
        if isinstance(source, (str, os.PathLike)):
            path = Path(source)
            by_path[path.resolve()] = name
            try:
                st = path.stat()
                by_inode[(st.st_dev, st.st_ino)] = name
            except OSError:  # a missing input is reported when it is loaded
                pass
    targets = [out / f"{stem}{suffix}" for stem in stems for suffix in suffixes] + ([out / INDEX] if index else [])
    for target in targets:
        hit = by_path.get(target.resolve())
        if hit is None and target.exists():
            st = target.stat()
            hit = by_inode.get((st.st_dev, st.st_ino))
        if hit is not None:
            raise FastSAMError(f"output {target} would overwrite the input {hit}; choose another --out directory")
    return stems


def _options(args: argparse.Namespace, default_imgsz: int) -> PredictConfig:
    from ..config import PredictConfig

    imgsz = default_imgsz if args.imgsz is None else args.imgsz
    if imgsz > args.max_imgsz:
        raise FastSAMError(
            f"--imgsz {imgsz} is over the limit of {args.max_imgsz} (network memory grows with its "
            "square; raise the limit with --max-imgsz)"
        )
    return PredictConfig(
        imgsz=imgsz, conf=args.conf, iou=args.iou, retina_masks=not args.no_retina, max_det=args.max_det
    )


def _progress(items: list, enabled: bool | None) -> Any:
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is optional: plain iteration
        return iter(items)
    disable = None if enabled is None else not enabled
    if enabled is None and len(items) < 2:
        disable = True
    return tqdm(items, desc="segment", unit="img", disable=disable, file=sys.stderr)


def _load(source: Any, max_pixels: int) -> np.ndarray:
    from ..io.images import load_image

    try:
        return load_image(source, max_pixels=max_pixels)
    except ImageTooLargeError as exc:
        raise FastSAMError(f"{exc} (raise the limit with --max-pixels)") from None


def _tiles(args: argparse.Namespace) -> TileConfig | None:
    """``--tile`` / ``--tile-overlap`` as a TileConfig (None without --tile), checked before any work."""
    tile, overlap = getattr(args, "tile", None), getattr(args, "tile_overlap", None)
    if tile is None:
        if overlap is not None:
            raise FastSAMError("--tile-overlap needs --tile SIZE")
        return None
    from ..tiling import TileConfig

    try:
        return TileConfig(tile, overlap)
    except FastSAMError as exc:
        raise FastSAMError(str(exc).replace("tile size", "--tile").replace("tile overlap", "--tile-overlap")) from None


def run_images(args: argparse.Namespace, handle: Handler) -> int:
    """Run everything mode on every source image and write what ``handle(rgb, segments)`` returns."""
    from PIL import Image

    from ..config import PredictConfig
    from ..devices import resolve_device
    from ..io.images import iter_sources
    from ..shard import local_device, shard_from_env
    from ._runtime import open_model
    from ._video import run_videos, split_videos

    shard = shard_from_env()  # under torchrun: this rank's share of the inputs, on cuda:LOCAL_RANK
    args.device = local_device(args.device, shard)
    tiles = _tiles(args)
    if (videos := split_videos(args)) and tiles is not None:
        raise FastSAMError("--tile is for images; videos and streams are segmented frame by frame without tiles")
    if videos:  # videos, streams, frame directories: OUT/<stem>.jsonl and .mp4
        rc = run_videos(args, mine, handle) if (mine := shard.take(videos)) else 0
        return max(rc, run_images(args, handle)) if args.sources else rc
    _options(args, PredictConfig().imgsz)  # bad options fail before the model is loaded
    resolve_device(args.device)
    if args.max_pixels > (Image.MAX_IMAGE_PIXELS or 0):
        Image.MAX_IMAGE_PIXELS = args.max_pixels  # our limit is checked first; Pillow's must not be lower
    items = [item for src in args.sources for item in iter_sources(src)]
    stems = plan_outputs(items, args.out)
    run = ImageRun(args, items, stems, shard)  # --resume of another run's OUT fails here
    model = open_model(args)
    cfg = _options(args, model.default_imgsz)  # the size the model was trained at, unless --imgsz says otherwise
    progress = _progress(run.begin(), args.progress)

    def finish(name: str, stem: str, rgb: np.ndarray, segments: Segments) -> bool:
        """Records and picture of one image, written to OUT; False (reported) on a user error."""
        try:
            records, picture = handle(rgb, segments)
        except FastSAMError as exc:  # a prompt outside this image: report it, go on with the others
            print(f"fastsam: error: {name}: {exc}", file=sys.stderr)
            run.failed(stem, f"{name}: {exc}")
            return False
        run.writing()
        write_atomic(args.out / f"{stem}.json", json.dumps(records).encode())
        buf = io.BytesIO()
        # zlib level 1: a preview image; level 6 (Pillow's default) takes ~2.5x longer for ~10% fewer bytes
        Image.fromarray(picture).save(buf, format="PNG", compress_level=1)
        write_atomic(args.out / f"{stem}.png", buf.getvalue())  # last: both files there = image done (--resume)
        run.done(stem, len(records))
        if not getattr(progress, "disable", True):
            progress.set_postfix_str(f"{stem}: {len(segments)} masks")
        elif args.progress is None:
            n = len(records)
            print(f"{name}: {n} record{'' if n == 1 else 's'} -> {args.out / stem}.json, .png", file=sys.stderr)
        return True

    # Writing an image's results (records, overlay, PNG: mostly one core) overlaps the next image's
    # network pass (both cores). One write is in flight at a time, so messages and names keep the
    # input order, and an exception from a write (e.g. a full disk) surfaces at the next image.
    # With --batch, images wait (decoded) until their batch of one letterboxed shape has run.
    loaded: dict[int, tuple[str, str, np.ndarray]] = {}

    def decoded() -> Iterator[np.ndarray]:
        for (name, source), stem in progress:
            try:
                rgb = _load(source, args.max_pixels)
            except FastSAMError as exc:
                print(f"fastsam: error: {exc}", file=sys.stderr)
                run.failed(stem, str(exc))
                continue
            loaded[next(positions)] = (name, stem, rgb)  # the position iter_batched reports it under
            yield rgb

    positions = itertools.count()
    with ThreadPoolExecutor(1, thread_name_prefix="fastsam-write") as writer:
        pending: Future[bool] | None = None
        if tiles is not None:
            from ..tiling import segment_tiled

            results: Iterator[tuple[int, Segments]] = (
                (i, segment_tiled(model, rgb, cfg, tiles, args.batch)) for i, rgb in enumerate(decoded())
            )
        elif args.batch == 1:
            results = ((i, model.segment(rgb, cfg)) for i, rgb in enumerate(decoded()))
        else:
            from ..batching import iter_batched

            results = iter_batched(model, decoded(), cfg, args.batch)
        for i, segments in results:
            name, stem, rgb = loaded.pop(i)
            if pending is not None:
                pending.result()  # a write's exception surfaces here
            pending = writer.submit(finish, name, stem, rgb, segments)
        if pending is not None:
            pending.result()
    # every failure is in the run's results: rank 0 (or one process) reports all of them
    return 0 if run.finish() else EXIT_USAGE  # rank 0: after the other ranks, OUT/index.json


def segment(args: argparse.Namespace) -> int:
    from ..viz import overlay

    def handle(rgb: np.ndarray, segments: Segments) -> tuple[list[dict[str, Any]], np.ndarray]:
        return segments.to_records(), overlay(rgb, segments)

    return run_images(args, handle)


def _text_scorer(args: argparse.Namespace) -> Any:
    """The CLIP scorer for ``--text``: ``--clip-weights``, else the shipped demo CLIP (on this process's
    GPU under torchrun, as the model)."""
    from ..devices import resolve_device
    from ..shard import local_device, shard_from_env
    from ..text import check_clip_model, get_scorer

    args.device = local_device(args.device, shard_from_env())
    resolve_device(args.device)
    weights = args.clip_weights
    if weights is None:
        from ..weights import default_clip_path

        try:
            weights = default_clip_path()
        except FastSAMError as exc:
            raise FastSAMError(f"--text needs --clip-weights PATH ({exc})") from exc
    elif not weights.is_file():
        raise FastSAMError(f"CLIP weights not found: {weights} (--clip-weights)")
    check_clip_model(weights, args.clip_model)
    return get_scorer(weights, args.clip_model, args.device)


def prompt(args: argparse.Namespace) -> int:
    import numpy as np

    from ..prompts import select_by_boxes, select_by_points
    from ..results import Segments
    from ..viz import draw_prompts, overlay_masks

    if not (args.point or args.box or args.text):
        raise FastSAMError("give at least one --point, --box or --text")
    if any(not t.strip() for t in args.text):
        raise FastSAMError("text prompts must be non-empty (--text)")
    scorer = _text_scorer(args) if args.text else None
    points = [p[:2] for p in args.point]
    labels = [int(p[2]) for p in args.point]

    def nothing(segments: Segments) -> Segments:
        """One empty mask: the record of a prompt that selects nothing."""
        return Segments.from_masks(np.zeros((1, *segments.image_size), bool), np.zeros(1))

    def handle(rgb: np.ndarray, segments: Segments) -> tuple[list[dict[str, Any]], np.ndarray]:
        parts: list[tuple[Segments, dict[str, Any]]] = []
        if points:
            sel = select_by_points(segments, points, labels, mode=args.point_mode)
            top = sel.indices[np.argmax(segments.scores[sel.indices])] if sel.indices.size else None
            merged = Segments.from_masks(
                sel.mask[None],
                np.array([segments.scores[top] if top is not None else 0.0]),
                np.array([segments.stability[top] if top is not None else 0.0]),
            )
            parts.append(
                (merged, {"type": "points", "points": points, "labels": labels, "indices": sel.indices.tolist()})
            )
        if args.box:
            for b, k in zip(args.box, select_by_boxes(segments, args.box)):
                one = segments[[int(k)]] if k >= 0 else nothing(segments)
                parts.append((one, {"type": "box", "box": b, "indices": [int(k)] if k >= 0 else []}))
        if args.text:
            from ..text import select_by_text

            assert scorer is not None  # made above whenever there is a --text
            hits = select_by_text(segments, rgb, args.text, scorer, threshold=args.text_threshold)
            for text, idx in zip(args.text, hits):
                if idx.size == 0:  # like a box that overlaps no mask: an empty record says so
                    parts.append((nothing(segments), {"type": "text", "text": text, "indices": []}))
                for k in idx:
                    parts.append((segments[[int(k)]], {"type": "text", "text": text, "indices": [int(k)]}))
        records = []
        for seg, about in parts:
            for rec in seg.to_records():
                rec["prompt"] = about
                records.append(rec)
        masks = np.stack([seg.mask(0) for seg, _ in parts]) if parts else np.zeros((0, *rgb.shape[:2]), bool)
        image = draw_prompts(overlay_masks(rgb, masks), points=points, labels=labels, boxes=args.box)
        return records, image

    return run_images(args, handle)
