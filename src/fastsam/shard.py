"""Many processes, many machines: this process's share of a list of inputs, and rank 0's wait.

Under ``torchrun`` (``RANK`` / ``WORLD_SIZE`` in the environment) rank r of W takes the items
``r, r + W, r + 2W, ...`` of a list every rank builds the same way (deterministic and balanced: the
shares differ by at most one item). No process group is needed: each rank writes its own outputs
to the shared output directory and, when its share is done, a small *done* file
(``rank-<r>-of-<W>.json``: the options' key and what happened to each of its items). Rank 0 waits
for the done files of the others (:func:`wait_for_ranks`), so the dataset-wide files it then writes
(an index, a merged COCO file) see every rank's work. This works across machines as long as the
output directory is shared storage (NFS, Lustre, a bucket mount).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .errors import FastSAMError
from .io.atomic import write_atomic

__all__ = [
    "Shard",
    "clear_done",
    "local_device",
    "options_key",
    "shard_from_env",
    "wait_for_ranks",
    "wait_until",
    "write_done",
]

_T = TypeVar("_T")

#: How long rank 0 waits for the other ranks' shares by default (a day: large runs are long).
DEFAULT_WAIT_S = 86400.0


@dataclass(frozen=True)
class Shard:
    """This process's place under torchrun: ``rank`` of ``world`` processes (0 of 1 alone)."""

    rank: int = 0
    world: int = 1

    def take(self, items: Sequence[_T]) -> list[_T]:
        """This rank's share of ``items``: positions ``rank, rank + world, ...``."""
        return [item for i, item in enumerate(items) if i % self.world == self.rank]

    def describe(self) -> str:
        return f"rank {self.rank} of {self.world}"


def shard_from_env() -> Shard:
    """``RANK`` / ``WORLD_SIZE`` as torchrun sets them (0 / 1 when absent)."""
    try:
        world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    except ValueError:
        raise FastSAMError("RANK and WORLD_SIZE must be whole numbers") from None
    if world < 1 or not 0 <= rank < world:
        raise FastSAMError(f"RANK {rank} is not in [0, WORLD_SIZE={world})")
    return Shard(rank, world)


def local_device(device: str, shard: Shard) -> str:
    """``cuda`` -> ``cuda:LOCAL_RANK`` under torchrun (one process per GPU); other devices as given."""
    if device == "cuda" and shard.world > 1:
        return f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    return device


def options_key(options: dict[str, Any]) -> str:
    """A short digest of the options that decide the results (JSON, sorted keys; others by ``str``)."""
    text = json.dumps(options, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def wait_until(ready: Callable[[], bool], wait_s: float, what: str, poll_s: float = 0.2) -> None:
    """Poll ``ready()`` until it holds; :class:`FastSAMError` naming ``what`` after ``wait_s`` seconds."""
    deadline = time.monotonic() + wait_s
    while not ready():
        if time.monotonic() > deadline:
            raise FastSAMError(f"{what} after {wait_s:.0f} s")
        time.sleep(poll_s)


def _done_path(state: Path, rank: int, world: int) -> Path:
    return state / f"rank-{rank}-of-{world}.json"


def write_done(state: Path, shard: Shard, key: str, results: dict[str, Any]) -> None:
    """Record that this rank's share is finished: ``results`` maps each of its items to what
    happened to it (JSON values). Rank 0 reads it in :func:`wait_for_ranks`."""
    state.mkdir(parents=True, exist_ok=True)
    body = {"key": key, "rank": shard.rank, "world": shard.world, "results": results}
    write_atomic(_done_path(state, shard.rank, shard.world), json.dumps(body).encode())


def _read_done(path: Path, key: str) -> dict[str, Any] | None:
    try:
        body = json.loads(path.read_text())
    except (OSError, ValueError):  # not there yet (an atomic write never shows a part of one)
        return None
    if not isinstance(body, dict) or body.get("key") != key or not isinstance(body.get("results"), dict):
        return None  # left by a run of other options: its rank has not reported for this one
    return body["results"]


def wait_for_ranks(
    state: Path,
    shard: Shard,
    key: str,
    complete: Callable[[dict[str, Any]], bool] | None = None,
    wait_s: float = DEFAULT_WAIT_S,
    poll_s: float = 0.2,
) -> dict[str, Any]:
    """On rank 0: the merged results of every other rank, once each has written its done file for
    the options ``key`` and ``complete(results)`` holds for it (e.g. every output it names exists).

    Raises :class:`FastSAMError` after ``wait_s`` seconds, naming the ranks still missing.
    """
    merged: dict[str, Any] = {}
    missing = list(range(1, shard.world))
    deadline = time.monotonic() + wait_s
    while True:
        for rank in list(missing):
            results = _read_done(_done_path(state, rank, shard.world), key)
            if results is not None and (complete is None or complete(results)):
                merged.update(results)
                missing.remove(rank)
        if not missing:
            return merged
        if time.monotonic() > deadline:
            raise FastSAMError(
                f"rank(s) {', '.join(map(str, missing))} of {shard.world} have not finished their share after "
                f"{wait_s:.0f} s (no {_done_path(state, missing[0], shard.world).name}); run again with --resume "
                "to finish it"
            )
        time.sleep(poll_s)


def clear_done(state: Path) -> None:
    """Remove the done files (rank 0, once the dataset-wide files are written), and ``state`` if empty."""
    for path in state.glob("rank-*-of-*.json"):
        path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # missing, or holding other files
        state.rmdir()
