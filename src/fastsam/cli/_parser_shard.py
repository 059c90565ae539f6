"""Options of ``fastsam segment`` / ``prompt`` (and ``label``) for long runs: resume, many processes."""

from __future__ import annotations

import argparse

from ..shard import DEFAULT_WAIT_S
from ._values import positive_int

__all__ = ["add_rank_timeout", "add_shard_options"]


def add_rank_timeout(p: argparse.ArgumentParser, writes: str) -> None:
    """``--rank-timeout``: rank 0's wait for the other torchrun ranks before it writes ``writes``."""
    p.add_argument(
        "--rank-timeout",
        type=positive_int,
        default=int(DEFAULT_WAIT_S),
        metavar="SECONDS",
        help=f"under torchrun (each rank takes every WORLD_SIZE-th input): how long rank 0 waits for the other "
        f"ranks' shares before it writes {writes} (default {int(DEFAULT_WAIT_S)})",
    )


def add_shard_options(p: argparse.ArgumentParser) -> None:
    """``--resume`` and ``--rank-timeout`` of ``segment`` and ``prompt``."""
    p.add_argument(
        "--resume",
        action="store_true",
        help="skip inputs whose outputs in --out are complete (a killed run continues where it stopped; refused "
        "if --out holds a run of other options; a video: when its .jsonl and .mp4 both exist); without it, "
        "outputs of an earlier run are replaced",
    )
    add_rank_timeout(p, "OUT/index.json")
