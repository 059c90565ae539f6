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

    from ..io.tar_sources import TarMember
    from ..results import Segments
    from ..shard import Shard

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


def _sources(args: argparse.Namespace) -> list[tuple[str, Path | TarMember]]:
    from ..io.images import iter_sources
    from ..io.tar_sources import TarMember

    for src in args.sources:
        if not src.exists():
            raise FastSAMError(f"{src}: no such file or directory")
    items = [
        (name, path if isinstance(path, TarMember) else Path(str(path)))
        for src in args.sources
        for name, path in iter_sources(src)
    ]
    out = args.out.resolve()
    for name, path in items:
        if (path.tar if isinstance(path, TarMember) else path).resolve().is_relative_to(out):
            raise FastSAMError(f"input {name} is inside the output dataset {args.out}; choose another --out")
    return items


def _stems(items: list[tuple[str, Path | TarMember]]) -> list[str]:
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
    from ..shard import clear_done, local_device, shard_from_env
    from ._images import _load, _text_scorer
    from ._runtime import open_model

    shard = shard_from_env()  # under torchrun: this rank's share of the images, on cuda:LOCAL_RANK
    args.device = local_device(args.device, shard)
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
    model = open_model(args)
    cfg = PredictConfig(
        imgsz=model.default_imgsz if args.imgsz is None else args.imgsz,
        conf=args.conf,
        iou=args.iou,
        retina_masks=True,
        max_det=args.max_det,
    )
    mine = shard.take(list(zip(items, stems)))
    writer.start(args.resume, shard, [stem for _, stem in mine])  # only now: a refused run leaves nothing behind
    todo = [(item, stem) for item, stem in mine if not (args.resume and writer.done(stem))]
    if shard.world > 1:
        print(f"fastsam: {shard.describe()}: {len(todo)} of {len(items)} images to label", file=sys.stderr)
    bar = _bar(todo, args.progress)
    failures: dict[str, str] = {}
    loaded: dict[int, tuple[Path | TarMember, str, np.ndarray]] = {}
    positions = itertools.count()

    def decoded() -> Iterator[np.ndarray]:
        for (_, path), stem in bar:
            try:
                rgb = _load(path, args.max_pixels)
            except FastSAMError as exc:
                print(f"fastsam: error: {exc}", file=sys.stderr)
                failures[stem] = str(exc)
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
    if not _merged(args, writer, shard, [stem for _, stem in mine], failures):
        return 0  # another rank than 0: its share is in the dataset, its failures reported by rank 0
    main_file = writer.finish(stems)
    clear_done(writer.state)  # the done files of the ranks
    done = sum(writer.done(s) for s in stems)
    print(f"{done} of {len(stems)} images labelled -> {main_file}", file=sys.stderr)
    return EXIT_USAGE if failures else 0


def _merged(args: argparse.Namespace, writer: Any, shard: Shard, share: list[str], failures: dict[str, str]) -> bool:
    """Under torchrun: this rank's done file (each stem of its ``share``: ``{}``, or ``{"error"}``),
    and on rank 0 the wait for every other rank's. True where the dataset-wide file is to be written."""
    if shard.world == 1:
        return True
    from ..shard import options_key, wait_for_ranks, write_done
    from ._image_run import run_options

    key = options_key(run_options(args))
    write_done(writer.state, shard, key, {s: {"error": failures[s]} if s in failures else {} for s in share})
    if shard.rank != 0:
        return False

    def complete(results: dict[str, Any]) -> bool:
        return all("error" in r or writer.done(s) for s, r in results.items())

    others = wait_for_ranks(writer.state, shard, key, complete, float(args.rank_timeout))
    failures.update({s: r["error"] for s, r in others.items() if "error" in r})
    return True
