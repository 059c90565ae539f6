"""Huge images: peak memory (RSS) and time of ``fastsam segment`` on one large image, with and
without ``--tile``, each in a fresh process; optionally ultralytics' FastSAM on the same image.

    python bench/tiling.py [--size 8000] [--tile 1024] [--imgsz 1024] [--model CKPT]
                           [--ultralytics CKPT] [--work DIR] [--threads 2]

Image: a synthetic ``--size`` x ``--size`` scene (gradient background, 400 solid shapes from 20 to
600 px across; PNG, written once to ``WORK/scene-<size>.png``).

Rows (each a new process, measured by ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` from a wrapper
that runs only it; wall time includes start-up, model loading, decoding and writing the records
and the overlay PNG):

* ``load``: Python + ``fastsam.io.images.load_image`` of the image: the floor every row pays;
* ``whole``: ``fastsam segment IMAGE`` (one downscaled pass: what an untiled run does);
* ``tiled``: ``fastsam segment IMAGE --tile SIZE`` (tiles at ``--imgsz`` plus the whole-image pass);
* ``ultra`` (with ``--ultralytics CKPT``): ultralytics' ``FastSAM(ckpt)(image, retina_masks=True)``
  then its ``masks.data`` (dense (N, H, W) masks at full resolution). It may not fit in memory
  at 8000 px (a 4512x4512 image took 49 GB in ultralytics' issue tracker); the row then reports
  the failure. ultralytics is a benchmark-only reference.

``--model`` defaults to the shipped demo model (``--imgsz`` then defaults to 448, its predict
size); the FastSAM-s/-x test checkpoints (``python tests/reference/ultra_ref.py make DIR``) are
the realistic case.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

WRAP = (
    "import resource, subprocess, sys, time; t = time.perf_counter(); "
    "rc = subprocess.run(sys.argv[1:]).returncode; "
    "print('RSS', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, time.perf_counter() - t, rc)"
)


def scene(size: int, path: Path) -> None:
    """A size x size PNG of 400 solid shapes on a gradient (built in uint8, one shape at a time)."""
    import cv2

    rng = np.random.default_rng(0)
    ramp = np.linspace(70, 150, size, dtype=np.float32).astype(np.uint8)
    img = np.empty((size, size, 3), np.uint8)
    img[:] = np.stack([ramp, ramp[::-1], np.full(size, 110, np.uint8)], 1)[None]
    for _ in range(400):
        r = int(rng.uniform(10, 300))
        cx, cy = (int(v) for v in rng.integers(0, size, 2))
        colour = tuple(int(v) for v in rng.integers(20, 240, 3))
        if rng.random() < 0.5:
            cv2.circle(img, (cx, cy), r, colour, -1)
        else:
            cv2.rectangle(img, (cx - r, cy - r // 2), (cx + r, cy + r // 2), colour, -1)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    assert ok
    path.write_bytes(buf.tobytes())


def measure(argv: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """(peak RSS in MB, wall s, exit code) of ``argv`` run alone under a wrapper process."""
    out = subprocess.run([sys.executable, "-c", WRAP, *argv], env=env, capture_output=True, text=True)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RSS ")][-1].split()
    if int(line[3]) != 0:
        print(out.stderr[-2000:], file=sys.stderr)
    return int(line[1]) / 1024, float(line[2]), int(line[3])


ULTRA = """
import sys, numpy as np
from ultralytics import FastSAM
from PIL import Image
Image.MAX_IMAGE_PIXELS = None
img = np.asarray(Image.open(sys.argv[2]).convert("RGB"))[:, :, ::-1].copy()
r = FastSAM(sys.argv[1])(img, imgsz=int(sys.argv[3]), retina_masks=True, conf=0.4, iou=0.9, verbose=False)[0]
print("masks", 0 if r.masks is None else int(r.masks.data.shape[0]))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=8000)
    ap.add_argument("--tile", type=int, default=1024)
    ap.add_argument("--imgsz", type=int)
    ap.add_argument("--model", type=Path)
    ap.add_argument("--ultralytics", type=Path, metavar="CKPT")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "fastsam-bench-tiling")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    imgsz = a.imgsz or (448 if a.model is None else 1024)
    a.work.mkdir(parents=True, exist_ok=True)
    image = a.work / f"scene-{a.size}.png"
    if not image.exists():
        scene(a.size, image)
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), YOLO_OFFLINE="1", YOLO_VERBOSE="False")
    env.setdefault("YOLO_CONFIG_DIR", str(a.work / "yolo"))
    model = [] if a.model is None else ["--model", str(a.model)]
    common = [sys.executable, "-m", "fastsam.cli", "segment", str(image), *model, "--imgsz", str(imgsz)]
    common += ["--max-pixels", str(a.size * a.size), "--no-progress"]
    load = "import sys; from fastsam.io.images import load_image; load_image(sys.argv[1], max_pixels=None)"
    rows: list[tuple[str, list[str]]] = [
        ("load", [sys.executable, "-c", load, str(image)]),
        ("whole", [*common, "--out", str(a.work / "whole")]),
        ("tiled", [*common, "--tile", str(a.tile), "--out", str(a.work / "tiled")]),
    ]
    if a.ultralytics is not None:
        rows.append(("ultra", [sys.executable, "-c", ULTRA, str(a.ultralytics), str(image), str(imgsz)]))
    name = "demo model" if a.model is None else a.model.name
    print(f"{a.size}x{a.size} image, {name}, imgsz {imgsz}, tile {a.tile}, {a.threads} threads\n")
    print("| row | peak RSS (MB) | wall (s) | masks | note |\n|---|---|---|---|---|")
    for label, argv in rows:
        rss, wall, rc = measure(argv, env)
        masks = "-"
        if label in ("whole", "tiled") and rc == 0:
            masks = str(len(json.loads((a.work / label / f"{image.stem}.json").read_text())))
        note = "ok" if rc == 0 else f"failed (exit {rc}: out of memory?)"
        print(f"| {label} | {rss:.0f} | {wall:.1f} | {masks} | {note} |", flush=True)


if __name__ == "__main__":
    main()
