"""Streaming over a dataset with per-image partial results: resume, ``--limit``, torchrun sharding.

Every image's result (or the reason it was skipped) is one small JSON file, ``OUT/parts/<key>.json``,
written atomically as soon as the image is done, so memory stays bounded by one image and an
interrupted run loses at most the image in flight. ``OUT/parts/config.json`` records the options
that decide the results; ``--resume`` refuses to continue a run made with other options, and a new
run refuses an ``OUT`` that already holds parts (nothing is overwritten).

Under ``torchrun`` (``RANK`` / ``WORLD_SIZE`` in the environment) rank r takes the images
``r, r + W, r + 2W, ...`` of the (limited) list; every rank writes its own parts, and rank 0 merges
once a part exists for every image, waiting for the others (no process group is needed). Ranks
other than 0 return None.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ..errors import FastSAMError
from ..io.atomic import write_atomic
from ..shard import DEFAULT_WAIT_S, Shard, shard_from_env

__all__ = ["RunOptions", "Shard", "run_parts", "shard_from_env"]

_T = TypeVar("_T")


@dataclass(frozen=True)
class RunOptions:
    """How a task walks its dataset: the first ``limit`` images (None: all), ``resume`` a partial run in
    OUT, this process's ``shard`` (None: alone), a ``progress`` bar, rank 0's ``wait_s`` for the others."""

    limit: int | None = None
    resume: bool = False
    shard: Shard | None = None
    progress: bool = False
    wait_s: float = DEFAULT_WAIT_S

    def __post_init__(self) -> None:
        if self.limit is not None and (not isinstance(self.limit, int) or self.limit < 1):
            raise FastSAMError(f"--limit must be an integer >= 1, got {self.limit!r}")


def _progress(items: Sequence[_T], enabled: bool, desc: str) -> Iterable[_T]:
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, total=len(items), desc=desc, unit="img", file=sys.stderr)


def _part(parts: Path, key: str) -> Path:
    return parts / f"{key}.json"


def run_parts(
    out: Path,
    keys: Sequence[str],
    work: Callable[[str], dict[str, Any]],
    config: dict[str, Any],
    run: RunOptions | None = None,
    desc: str = "zeroshot",
) -> dict[str, dict[str, Any]] | None:
    """Run ``work(key)`` for this shard's keys that have no part yet; on rank 0, return every part.

    Args:
        out: output directory (parts go to ``out/parts``).
        keys: image keys in dataset order (file-name safe), already limited.
        work: one image -> a JSON-serialisable dict (``{"skipped": reason}`` for a counted skip).
        config: the options that decide the results (compared on ``resume``).
        run: resume, shard, progress and rank 0's wait (``limit`` is the caller's: ``keys`` are limited).

    Returns:
        key -> part for every key (rank 0), else None.
    """
    run = run or RunOptions()
    shard, resume, wait_s = run.shard or Shard(), run.resume, run.wait_s
    parts = out / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    recorded = parts / "config.json"
    fresh = json.dumps(config, sort_keys=True, default=str)
    mine = shard.take(keys)
    if recorded.exists():
        old = recorded.read_text()
        if old.strip() and json.dumps(json.loads(old), sort_keys=True) != fresh:
            raise FastSAMError(f"{out} holds a run made with other options; use another --out (or the same options)")
    if not resume and any(_part(parts, k).exists() for k in mine):
        raise FastSAMError(f"{out} already holds results of a run: pass --resume to continue it, or another --out")
    if shard.rank == 0:
        write_atomic(recorded, (fresh + "\n").encode())
    todo = [k for k in mine if not _part(parts, k).exists()]
    for key in _progress(todo, run.progress, desc):
        write_atomic(_part(parts, key), json.dumps(work(key)).encode())
    if shard.rank != 0:
        return None
    deadline = time.monotonic() + wait_s
    while missing := [k for k in keys if not _part(parts, k).exists()]:
        if time.monotonic() > deadline:
            raise FastSAMError(
                f"{len(missing)} image(s) have no result from the other ranks after {wait_s:.0f} s "
                f"(first: {missing[0]}); run again with --resume to finish them"
            )
        time.sleep(1.0)
    results: dict[str, dict[str, Any]] = {}
    for k in keys:
        try:
            results[k] = json.loads(_part(parts, k).read_text())
        except (OSError, ValueError) as exc:
            raise FastSAMError(
                f"{_part(parts, k)}: unreadable partial result ({exc}); delete it and --resume"
            ) from None
    return results
