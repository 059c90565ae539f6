"""Video speed: fastsam's ``FastSAM.stream`` (tracking off and on) and ``fastsam segment VIDEO
--track`` against a plain loop over ultralytics' FastSAM predictor on the same frames.

    python bench/video.py [--seconds 2] [--fps 15] [--imgsz 640] [--ckpt /tmp/ckpts/FastSAM-s.pt]
                          [--work DIR] [--rows ROW ...] [--threads 2]

Clip: a synthetic 1280x720 video (``--seconds`` x ``--fps`` frames; the issue's figure is 30 s)
of 24 shapes of the kinds ``fastsam synth`` draws, moving and turning over a textured
background, written once with PyAV (MPEG-4, 8 Mb/s) to ``WORK/clip-<seconds>s-<fps>fps.mp4``.

Model: the FastSAM-s test checkpoint (random weights, written by ultralytics:
``python tests/reference/ultra_ref.py make DIR``), imgsz 640, retina masks, conf 0.4, iou 0.9,
max_det 300, ``--threads`` torch threads in every process (ultralytics' ``OMP_NUM_THREADS=1``
default is overridden).

Rows (one process each, run one after the other; frames/s = frames / wall time of the loop,
model loading excluded, decoding included):

* ``ultra``: ultralytics' ``FastSAM(pt).predict(frame)`` on each frame decoded with PyAV (BGR, as
  ultralytics expects for arrays), then its dense ``masks.data``: a plain loop;
* ``ultra-track``: ultralytics' ``FastSAM(pt).track(clip, stream=True, persist=True)``
  (ByteTrack), when it runs offline (it needs the ``lap`` package);
* ``ours``: ``for f in FastSAM(pt).stream(clip, imgsz=640): f.segments.masks`` (dense masks too,
  to compare like with like);
* ``ours-track``: the same with ``track=True``; the time inside ``Tracker.update`` is reported, and
  what tracking adds to the per-frame time against the ``ours`` row;
* ``ours-cli``: ``fastsam segment clip.mp4 --track --out DIR`` as a process (JSONL records and
  the overlay mp4 written; includes start-up and model loading).
* ``demo``, ``demo-track``: ``ours`` and ``ours-track`` with the shipped demo model (trained on
  such shapes, at its own imgsz): masks that persist from frame to frame, as a trained model's do.
  The random-weight checkpoint's 300 masks per frame change from frame to frame (nearly every
  mask starts a track), the worst case for the tracker.

Ratios are frames/s over ultralytics' plain loop. ultralytics is a benchmark-only reference.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROWS = ("ultra", "ultra-track", "ours", "ours-track", "ours-cli", "demo", "demo-track")
LABELS = {
    "ultra": "ultralytics predict loop",
    "ultra-track": "ultralytics track (ByteTrack)",
    "ours": "ours stream",
    "ours-track": "ours stream, track=True",
    "ours-cli": "ours `fastsam segment --track` (JSONL + mp4)",
    "demo": "ours stream, demo model",
    "demo-track": "ours stream, demo model, track=True",
}
PREDICT = {"conf": 0.4, "iou": 0.9, "max_det": 300, "retina_masks": True}
H, W = 720, 1280


def _env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(YOLO_OFFLINE="1", YOLO_AUTOINSTALL="0", YOLO_VERBOSE="False", OMP_NUM_THREADS=str(threads))
    env.setdefault("YOLO_CONFIG_DIR", "/tmp/yolocfg")
    return env


def make_clip(path: Path, seconds: float, fps: int) -> int:
    """The synthetic clip (see the module docstring); returns its frame count."""
    import cv2

    from fastsam.data.synth import PALETTE
    from fastsam.video import VideoWriter

    rng = np.random.default_rng(0)
    n = max(1, round(seconds * fps))
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    background = np.stack([90 + 40 * np.sin(xx / 97), 110 + 30 * np.cos(yy / 61), 100 + 20 * np.sin((xx + yy) / 43)], 2)
    background += 14 * np.sign(np.sin((xx * 0.8 + yy * 0.6) / 9))[..., None]
    colours = list(PALETTE.values())
    objs = [
        (
            colours[int(rng.integers(len(colours)))],
            int(rng.choice([0, 3, 4, 5, 6, 10])),  # 0: ellipse, 10: star, else a polygon
            rng.uniform(80, W - 80),
            rng.uniform(80, H - 80),
            rng.uniform(-4, 4),
            rng.uniform(-3, 3),
            rng.uniform(20, 70),
            rng.uniform(-0.05, 0.05),
        )
        for _ in range(24)
    ]
    with VideoWriter(path, fps, bits_per_pixel=8_000_000 / (W * H * fps)) as video:  # 8 Mb/s
        for t in range(n):
            img = background.copy()
            for colour, sides, x, y, vx, vy, r, spin in objs:
                cx, cy = (x + vx * t) % W, (y + vy * t) % H
                mask = np.zeros((H, W), np.uint8)
                if sides == 0:
                    axes = (round(r), round(r * 0.7))
                    cv2.ellipse(mask, (round(cx), round(cy)), axes, np.degrees(spin * t), 0, 360, 1, -1)
                else:
                    k = 10 if sides == 10 else sides
                    a = np.arange(k) * 2 * np.pi / k + spin * t
                    rr = np.where(np.arange(k) % 2, r * 0.45, r) if sides == 10 else np.full(k, r)
                    pts = np.stack([cx + rr * np.cos(a), cy + rr * np.sin(a)], 1)
                    cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
                img[mask.astype(bool)] = colour
            video.write(np.clip(img, 0, 255).astype(np.uint8))
    return n


# -- workers (one process per row) ---------------------------------------------------------------
def worker(row: str, clip: Path, ckpt: Path, imgsz: int, threads: int) -> dict[str, Any]:
    import torch

    torch.set_num_threads(threads)
    if row == "ultra":
        import av
        from ultralytics import FastSAM as UltraFastSAM

        model = UltraFastSAM(str(ckpt))
        with av.open(str(clip)) as box:
            first = next(box.decode(video=0)).to_ndarray(format="bgr24")
        model.predict(first, imgsz=imgsz, device="cpu", verbose=False, **PREDICT)  # warm-up, predictor built
        frames, masks = 0, 0
        start = time.perf_counter()
        with av.open(str(clip)) as box:
            for frame in box.decode(video=0):
                res = model.predict(
                    frame.to_ndarray(format="bgr24"), imgsz=imgsz, device="cpu", verbose=False, **PREDICT
                )
                masks += 0 if res[0].masks is None else len(res[0].masks.data)
                frames += 1
        return {"frames": frames, "seconds": time.perf_counter() - start, "masks": masks / max(frames, 1)}
    if row == "ultra-track":
        from ultralytics import FastSAM as UltraFastSAM

        model = UltraFastSAM(str(ckpt))
        frames, masks = 0, 0
        start = time.perf_counter()
        for res in model.track(
            str(clip), stream=True, persist=True, imgsz=imgsz, device="cpu", verbose=False, **PREDICT
        ):
            masks += 0 if res.masks is None else len(res.masks.data)
            frames += 1
        return {"frames": frames, "seconds": time.perf_counter() - start, "masks": masks / max(frames, 1)}
    import fastsam
    from fastsam.track import Tracker

    spent = [0.0]
    update = Tracker.update

    def timed(self: Tracker, segments: Any) -> np.ndarray:
        t = time.perf_counter()
        try:
            return update(self, segments)
        finally:
            spent[0] += time.perf_counter() - t

    Tracker.update = timed  # type: ignore[method-assign]
    demo = row.startswith("demo")
    model = fastsam.FastSAM(None if demo else ckpt, cache_size=0)
    size = None if demo else imgsz
    track = row.endswith("-track")
    warm = model.stream(clip, track=track, imgsz=size, **PREDICT)
    next(warm), next(warm)  # warm-up: imports, and (tracking) a first association
    warm.close()
    frames, masks, tracks = 0, 0, set()
    start = time.perf_counter()
    for f in model.stream(clip, track=track, imgsz=size, **PREDICT):
        masks += len(f.segments.masks)
        if f.track_ids is not None:
            tracks.update(f.track_ids[f.track_ids >= 0].tolist())
        frames += 1
    seconds = time.perf_counter() - start
    return {
        "frames": frames,
        "seconds": seconds,
        "masks": masks / max(frames, 1),
        "track_s": spent[0],
        "tracks": len(tracks),
    }


def run_row(row: str, args: argparse.Namespace, clip: Path) -> dict[str, Any]:
    env = _env(args.threads)
    if row == "ours-cli":
        out = args.work / "cli-out"
        cmd = [sys.executable, "-m", "fastsam.cli", "segment", str(clip), "--model", str(args.ckpt), "--imgsz",
               str(args.imgsz), "--track", "--out", str(out), "--no-progress"]  # fmt: skip
        start = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1][:160]}
        frames = sum(1 for _ in (out / f"{clip.stem}.jsonl").open())
        return {"frames": frames, "seconds": seconds, "notes": "process wall time: start-up and loading included"}
    cmd = [sys.executable, __file__, "--worker", row, "--clip", str(clip), "--ckpt", str(args.ckpt), "--imgsz",
           str(args.imgsz), "--threads", str(args.threads)]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1][:160]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(results: dict[str, dict[str, Any]], frames: int) -> str:
    base = results.get("ultra", {})
    base_fps = base["frames"] / base["seconds"] if "seconds" in base else None
    lines = [
        "| row | frames | ms / frame | frames/s | vs ultralytics loop | masks / frame | notes |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for row, r in results.items():
        if "error" in r:
            lines.append(f"| {LABELS[row]} | - | - | - | - | - | error: {r['error']} |")
            continue
        fps = r["frames"] / r["seconds"]
        notes = r.get("notes", "")
        if "track_s" in r and row.endswith("-track"):
            per = 1e3 * r["track_s"] / r["frames"]
            notes = f"association {per:.1f} ms/frame"
            plain = results.get(row[: -len("-track")], {})
            if "seconds" in plain:  # what tracking adds to the per-frame time, against the same row without it
                added = 100 * (r["seconds"] / r["frames"] / (plain["seconds"] / plain["frames"]) - 1)
                notes += f"; adds {added:.1f}% to the per-frame time"
            notes += f"; {r['tracks']} track ids"
        ratio = f"{fps / base_fps:.2f}x" if base_fps else "-"
        masks = f"{r['masks']:.0f}" if "masks" in r else "-"
        lines.append(f"| {LABELS[row]} | {r['frames']} | {1e3 / fps:.0f} | {fps:.2f} | {ratio} | {masks} | {notes} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=2.0, help="clip length in seconds (default 2; the issue: 30)")
    p.add_argument("--fps", type=int, default=15, help="clip frame rate (default 15)")
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--ckpt", type=Path, default=Path("/tmp/ckpts/FastSAM-s.pt"))
    p.add_argument("--work", type=Path, default=Path("/tmp/fastsam-bench-video"))
    p.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--worker", choices=ROWS, help=argparse.SUPPRESS)
    p.add_argument("--clip", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.clip, args.ckpt, args.imgsz, args.threads)))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    clip = args.work / f"clip-{args.seconds:g}s-{args.fps}fps.mp4"
    if not clip.exists():
        make_clip(clip, args.seconds, args.fps)
    import av

    with av.open(str(clip)) as box:
        frames = box.streams.video[0].frames
    results = {row: run_row(row, args, clip) for row in args.rows}
    print(
        f"FastSAM-s test checkpoint ({args.ckpt.name}) · synthetic {W}x{H} clip, {frames} frames "
        f"({args.seconds:g} s at {args.fps} fps) · imgsz {args.imgsz} · {args.threads} threads\n"
    )
    print(table(results, frames))


if __name__ == "__main__":
    main()
