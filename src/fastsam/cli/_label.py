"""``fastsam label``: everything mode over images, written as a COCO or YOLO-seg training set.

Checked before the model loads, so that a refused command writes nothing: the options, the device,
the sources (existing image files or directories, none inside the output dataset), the output
directory (new or empty, or an earlier run of the same options with ``--resume``), the CLIP weights
of ``--text``. The layouts and the files are those of :mod:`fastsam.data.label`. An image that
fails to decode is reported and left out; the run then exits with 2 after writing the others.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import FastSAMError

if TYPE_CHECKING:
    import numpy as np

    from ..results import Segments

__all__ = ["label", "mask_classes"]

EXIT_USAGE = 2


def mask_classes(segments: Segments, rgb: np.ndarray, names: list[str], scorer: Any) -> np.ndarray:
    """Class index per mask: the text of ``names`` with the highest CLIP similarity to the mask's crop
    (:func:`fastsam.text.mask_crops`); all zeros without a scorer or with a single name."""
    import numpy as np

    from ..text import mask_crops

    n = len(segments)
    if scorer is None or len(names) < 2 or n == 0:
        return np.zeros(n, np.int64)
    sims = np.asarray(scorer.similarity(mask_crops(segments, rgb, np.arange(n)), names))  # (texts, masks)
    return np.argmax(sims, axis=0).astype(np.int64)


def _sources(args: argparse.Namespace) -> list[tuple[str, Path]]:
    from ..io.images import iter_sources

    for src in args.sources:
        if not src.exists():
            raise FastSAMError(f"{src}: no such file or directory")
    items = [(name, Path(str(path))) for src in args.sources for name, path in iter_sources(src)]
    out = args.out.resolve()
    for name, path in items:
        if path.resolve().is_relative_to(out):
            raise FastSAMError(f"input {name} is inside the output dataset {args.out}; choose another --out")
    return items


def _stems(items: list[tuple[str, Path]]) -> list[str]:
    from ._images import _unique_stem

    used: set[str] = set()
    return [_unique_stem(name, used) for name, _ in items]


def _bar(items: list, enabled: bool | None) -> Any:
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is optional: plain iteration
        return iter(items)
    disable = (len(items) < 2 or not sys.stderr.isatty()) if enabled is None else not enabled
    return tqdm(items, desc="label", unit="img", disable=disable, file=sys.stderr)


def label(args: argparse.Namespace) -> int:
    from ..config import PredictConfig
    from ..data.label import open_writer
    from ..devices import resolve_device
    from ..predictor import FastSAM
    from ._images import _load, _text_scorer

    PredictConfig(imgsz=1024 if args.imgsz is None else args.imgsz, conf=args.conf, iou=args.iou, max_det=args.max_det)
    resolve_device(args.device)
    if any(not t.strip() for t in args.text):
        raise FastSAMError("class names must be non-empty (--text)")
    if len(set(args.text)) != len(args.text):
        raise FastSAMError("class names must differ (--text)")
    names = list(args.text) or ["object"]
    items = _sources(args)
    stems = _stems(items)
    writer = open_writer(args.format, args.out, names, polygons=args.polygons)
    scorer = _text_scorer(args) if len(names) > 1 else None
    if args.model is None:
        from ..weights import default_model_path

        args.model = default_model_path()
    model = FastSAM(args.model, device=args.device, cache_size=0, backend=args.backend, half=args.half)
    cfg = PredictConfig(
        imgsz=model.default_imgsz if args.imgsz is None else args.imgsz,
        conf=args.conf,
        iou=args.iou,
        retina_masks=True,
        max_det=args.max_det,
    )
    writer.start(args.resume)  # only now: a run refused above leaves nothing behind
    todo = [(item, stem) for item, stem in zip(items, stems) if not (args.resume and writer.done(stem))]
    bar = _bar(todo, args.progress)
    failures = 0
    loaded: dict[int, tuple[Path, str, np.ndarray]] = {}
    positions = itertools.count()

    def decoded() -> Iterator[np.ndarray]:
        nonlocal failures
        for (_, path), stem in bar:
            try:
                rgb = _load(path, args.max_pixels)
            except FastSAMError as exc:
                print(f"fastsam: error: {exc}", file=sys.stderr)
                failures += 1
                continue
            loaded[next(positions)] = (path, stem, rgb)
            yield rgb

    if args.batch == 1:
        results: Iterator[tuple[int, Segments]] = ((i, model.segment(rgb, cfg)) for i, rgb in enumerate(decoded()))
    else:
        from ..batching import iter_batched

        results = iter_batched(model, decoded(), cfg, args.batch)
    for i, segments in results:
        path, stem, rgb = loaded.pop(i)
        writer.add(stem, path, rgb, segments, mask_classes(segments, rgb, names, scorer))
    main_file = writer.finish(stems)
    done = sum(writer.done(s) for s in stems)
    print(f"{done} of {len(stems)} images labelled -> {main_file}", file=sys.stderr)
    return EXIT_USAGE if failures else 0
