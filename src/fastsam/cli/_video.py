"""``fastsam segment`` and ``fastsam prompt`` on videos, streams and frame directories.

A source is a video when it is a URL (``rtsp://`` ...), a file with a video suffix
(:data:`fastsam.video.VIDEO_SUFFIXES`), or a directory given with ``--frames`` or ``--track`` (a
directory stays a set of separate images otherwise, as before). Each video writes
``OUT/<stem>.jsonl`` (one line per processed frame: ``{"frame", "time", "records"}``, records as
for an image, plus ``track_id`` with ``--track``) and ``OUT/<stem>.mp4`` (the overlay video), both
atomically: a failed or interrupted run leaves neither (a URL stream interrupted with Ctrl-C ends
there and keeps what it wrote: a live stream has no other end).

Frames that do not decode are counted and reported on stderr; the exit code is 2 only when
nothing of a video decoded (or for the user errors every command reports).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import FastSAMError
from ..io.atomic import atomic_path
from ._images import EXIT_USAGE, Handler, _options, plan_outputs

if TYPE_CHECKING:
    import numpy as np

    from ..video import StreamFrame, VideoReader

__all__ = ["VIDEO_OUTPUTS", "run_videos", "split_videos"]

#: What each video writes: OUT/<stem>.jsonl (records per frame) and OUT/<stem>.mp4 (overlay video).
VIDEO_OUTPUTS = (".jsonl", ".mp4")

FrameFn = Callable[["StreamFrame"], "tuple[list[dict[str, Any]], np.ndarray]"]


def _is_video(source: str, as_frames: bool) -> bool:
    from ..video import VIDEO_SUFFIXES, is_url

    path = Path(source)
    return is_url(source) or path.suffix.lower() in VIDEO_SUFFIXES or (as_frames and path.is_dir())


def split_videos(args: argparse.Namespace) -> list[str]:
    """The sources of ``args`` that are videos; ``args.sources`` keeps the others (images)."""
    as_frames = args.frames or args.track
    videos = [s for s in args.sources if _is_video(s, as_frames)]
    args.sources = [s for s in args.sources if not _is_video(s, as_frames)]
    return videos


def _stem(source: str) -> str:
    return Path(source.rstrip("/")).stem or "stream"


def _open(source: str, args: argparse.Namespace) -> VideoReader:
    from ..video import VideoReader

    reader = VideoReader(source, args.vid_stride, args.start, args.end, fps=args.fps, max_pixels=args.max_pixels)
    if reader.size is not None and reader.size[0] * reader.size[1] > args.max_pixels:
        h, w = reader.size
        reader.close()
        raise FastSAMError(f"{source}: frames are {w}x{h}, over the limit of {args.max_pixels} (--max-pixels)")
    return reader


def run_videos(args: argparse.Namespace, videos: list[str], handle: Handler) -> int:
    """Everything mode (and prompts, tracking) on every frame of each video; see the module docstring."""
    from ..config import PredictConfig
    from ..devices import resolve_device
    from ..extras import require
    from ._runtime import open_model

    _options(args, PredictConfig().imgsz)  # bad options fail before anything is opened
    resolve_device(args.device)
    require("av")
    if args.track:
        require("scipy")
    if args.command == "prompt" and args.track and args.text:
        raise FastSAMError("--text with --track on a video is not supported; use --point or --box")
    stems = plan_outputs([(v, Path(v)) for v in videos], args.out, VIDEO_OUTPUTS)
    todo = list(zip(videos, stems))
    if getattr(args, "resume", False):  # both outputs are written atomically: existing means complete
        done = {s for s in stems if all((args.out / f"{s}{suffix}").is_file() for suffix in VIDEO_OUTPUTS)}
        for source, stem in todo:
            if stem in done:
                print(f"{source}: {args.out / stem}.jsonl, .mp4 are complete: skipped (--resume)", file=sys.stderr)
        todo = [(v, s) for v, s in todo if s not in done]
        if not todo:
            return 0
    failures = 0
    readers: list[tuple[str, str, VideoReader]] = []
    for source, stem in todo:
        try:
            readers.append((source, stem, _open(source, args)))
        except FastSAMError as exc:
            print(f"fastsam: error: {exc}", file=sys.stderr)
            failures += 1
    if not readers:
        return EXIT_USAGE
    model = open_model(args)
    cfg = _options(args, model.default_imgsz)
    for source, stem, reader in readers:
        try:
            frame_fn = _frame_fn(args, handle)
            failures += not _run_one(args, model, cfg, source, stem, reader, frame_fn)
        except FastSAMError as exc:
            print(f"fastsam: error: {exc}", file=sys.stderr)
            failures += 1
        finally:
            reader.close()
    return EXIT_USAGE if failures else 0


def _is_url(source: str) -> bool:
    from ..video import is_url

    return is_url(source)


def _progress(args: argparse.Namespace, reader: VideoReader, stem: str) -> Any:
    enabled = sys.stderr.isatty() if args.progress is None else args.progress
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is optional: no bar
        return None
    expected = reader.report.expected
    total = None if expected is None else -(-expected // reader.vid_stride)
    return tqdm(total=total, desc=stem, unit="frame", disable=not enabled, file=sys.stderr)


def _run_one(
    args: argparse.Namespace, model: Any, cfg: Any, source: str, stem: str, reader: Any, frame_fn: FrameFn
) -> bool:
    """One video -> OUT/<stem>.jsonl and OUT/<stem>.mp4; False (reported) when nothing decoded."""
    from ..video import VideoWriter, stream

    args.out.mkdir(parents=True, exist_ok=True)
    frames = 0
    bar = _progress(args, reader, stem)
    stop_early = _is_url(source)  # a live stream ends when the user says so
    with ExitStack() as stack:
        jsonl = stack.enter_context(atomic_path(args.out / f"{stem}.jsonl"))
        lines = stack.enter_context(jsonl.open("w"))
        fps = reader.fps / reader.vid_stride
        video = stack.enter_context(VideoWriter(args.out / f"{stem}.mp4", fps))
        # records, overlay and encoding (mostly one core) overlap the next frame's network pass;
        # one frame in flight, so lines and video frames keep their order
        writer = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="fastsam-write"))

        def finish(frame: StreamFrame) -> None:
            records, picture = frame_fn(frame)
            line = {"frame": frame.index, "time": round(frame.time, 6), "records": records}
            lines.write(json.dumps(line) + "\n")
            video.write(picture)

        pending: Future[None] | None = None
        try:
            for frame in stream(model._segment_rgb, source, cfg, track=args.track, reader=reader):
                if pending is not None:
                    pending.result()
                pending = writer.submit(finish, frame)
                frames += 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix_str(f"{len(frame.segments)} masks")
        except KeyboardInterrupt:
            if not stop_early:
                raise
        if pending is not None:
            pending.result()
        if bar is not None:
            bar.close()
        if frames == 0:
            raise FastSAMError(f"{source}: no frame could be decoded{_errors(reader.report)}")
    report = reader.report
    if report.errors or report.missing:
        lost = max(report.errors, report.missing)
        print(f"fastsam: warning: {source}: {lost} frame(s) could not be decoded{_errors(report)}", file=sys.stderr)
    if bar is None or bar.disable:
        print(f"{source}: {frames} frame{'' if frames == 1 else 's'} -> {args.out / stem}.jsonl, .mp4", file=sys.stderr)
    return True


def _errors(report: Any) -> str:
    return f" ({report.messages[0]})" if report.messages else ""


def _frame_fn(args: argparse.Namespace, handle: Handler) -> FrameFn:
    """What each frame writes: the image handler's records and picture, or, with --track, records
    with track ids and an overlay coloured by track (prompts: the tracks selected on frame one)."""
    if not args.track:
        return lambda frame: handle(frame.image, frame.segments)
    if args.command == "prompt":
        from ._video_prompt import follow_prompts

        return follow_prompts(args)
    return _tracked_frame


def _tracked_frame(frame: StreamFrame) -> tuple[list[dict[str, Any]], np.ndarray]:
    from ..video import track_colors
    from ..viz import overlay

    assert frame.track_ids is not None
    records = frame.segments.to_records()
    for rec, tid in zip(records, frame.track_ids.tolist()):
        rec["track_id"] = tid if tid >= 0 else None  # a mask no track claims (low score, a duplicate)
    shown, ids = frame.tracked()
    return records, overlay(frame.image, shown, colors=track_colors(ids))
