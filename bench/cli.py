"""Cold start, one photo, results on disk: ``fastsam segment`` vs ultralytics' FastSAM, as a user runs them.

    python bench/cli.py [--imgsz 1024] [--runs 3]

Each run is a fresh process (imports, weight loading, first forward pass included) on ultralytics'
1280x720 ``zidane.jpg``, with the same checkpoint (built with ultralytics, random non-degenerate
weights; see tests/reference/ultra_ref.py) and the original's options: conf 0.4, iou 0.9, retina
masks, max_det 300.

* fastsam: ``fastsam segment IMAGE --model CKPT --out DIR`` writes the SAM-style JSON (COCO RLE per
  mask) and the overlay PNG.
* ultralytics: ``FastSAM(CKPT)(IMAGE, ..., save=True)`` writes its annotated image. It runs at its own
  default thread count (1 on this 2-core machine; pass --ultra-threads to change that).

Prints medians of wall time and their ratio (ultralytics / fastsam: > 1 means fastsam is faster).
ultralytics is a benchmark-only reference; the package never imports it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "reference"))

ULTRA = """
import sys
from ultralytics import FastSAM
from ultralytics.utils import torch_utils
threads = int(sys.argv[4])
if threads:
    torch_utils.NUM_THREADS = threads
FastSAM(sys.argv[1])(sys.argv[2], device="cpu", imgsz=int(sys.argv[3]), conf=0.4, iou=0.9, retina_masks=True,
                     max_det=300, save=True, project=sys.argv[5], name="run", exist_ok=True, verbose=False)
"""


def timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr[-2000:]}")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--imgsz", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--checkpoint", type=Path, help="existing FastSAM .pt (default: build FastSAM-s)")
    ap.add_argument("--ultra-threads", type=int, default=0, help="torch threads for ultralytics (0: its default)")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="fastsam-bench-cli-"))
    env = dict(
        os.environ, YOLO_OFFLINE="1", YOLO_AUTOINSTALL="0", YOLO_VERBOSE="False", YOLO_CONFIG_DIR=str(work / "yolo-cfg")
    )
    import ultra_ref

    ckpt = args.checkpoint
    if ckpt is None:
        ckpt = work / "FastSAM-s.pt"
        ultra_ref.save(ultra_ref.build("s", 16, seed=0), ckpt, 1024)
    image = Path(ultra_ref._assets()) / "zidane.jpg"
    ours = [
        sys.executable,
        "-m",
        "fastsam.cli",
        "segment",
        str(image),
        "--model",
        str(ckpt),
        "--imgsz",
        str(args.imgsz),
        "--out",
        str(work / "fastsam"),
    ]
    theirs = [
        sys.executable,
        "-c",
        ULTRA,
        str(ckpt),
        str(image),
        str(args.imgsz),
        str(args.ultra_threads),
        str(work / "ultralytics"),
    ]
    times_ours, times_theirs = [], []
    for _ in range(args.runs):  # alternate, so that machine noise hits both alike
        times_ours.append(timed(ours, env))
        times_theirs.append(timed(theirs, env))
    written = sorted(p.name for p in (work / "fastsam").iterdir())
    u, f = statistics.median(times_theirs), statistics.median(times_ours)
    threads = args.ultra_threads or "its default"
    print(f"cold process, {image.name} 1280x720, imgsz {args.imgsz}, {ckpt.name}, runs {args.runs} (medians, s)")
    print(f"fastsam segment (writes {', '.join(written)}): {f:.2f} s")
    print(f"ultralytics FastSAM(..., save=True), threads {threads}: {u:.2f} s")
    print(f"ratio {u / f:.2f}x")


if __name__ == "__main__":
    main()
