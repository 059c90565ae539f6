"""Options of ``fastsam segment`` and ``fastsam prompt`` for videos, streams and frame directories."""

from __future__ import annotations

import argparse
import math

from ._values import positive_int

__all__ = ["add_video_options"]


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number of seconds >= 0, got {text!r}")
    return value


def _fps(text: str) -> float:
    value = _seconds(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a frame rate > 0, got {text!r}")
    return value


def add_video_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "videos and streams",
        "A SOURCE that is a video file (.mp4, .mkv, .mov, .avi, .webm, ...), a URL (rtsp://, http://, ...) "
        "or, with --frames or --track, a directory of frame images writes OUT/<stem>.jsonl (one line per "
        "processed frame: frame, time, records) and OUT/<stem>.mp4 (overlay video). Needs the 'video' extra.",
    )
    g.add_argument(
        "--vid-stride", type=positive_int, default=1, metavar="N", help="process every N-th frame (default 1)"
    )
    g.add_argument("--start", type=_seconds, metavar="S", help="first second to process (default 0)")
    g.add_argument("--end", type=_seconds, metavar="S", help="stop before this second (default: the end)")
    g.add_argument(
        "--track",
        action="store_true",
        help="persistent ids across frames (track_id in records, one colour per track); prompt: follow the "
        "objects the prompts select on the first frame",
    )
    g.add_argument(
        "--frames",
        action="store_true",
        help="directories are the frames of one video, in name order (default: each image on its own, unless --track)",
    )
    g.add_argument("--fps", type=_fps, help="frame rate of a frame directory (default 30)")
