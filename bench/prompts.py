"""Prompt latency after one everything-mode pass: fastsam's selectors vs the original's algorithm.

    python bench/prompts.py [--runs 50]

Builds a FastSAM-s checkpoint with ultralytics (random, non-degenerate weights), runs everything
mode once on the 1280x720 ``zidane.jpg`` (imgsz 1024, conf 0.4, iou 0.9 -> ~300 masks), then times
point and box prompts. The reference is a loop that follows the original FastSAM's algorithm over
the same masks as dense (N, H, W) arrays (what its Results hold): points — sort by area, paint
each mask containing a point with the point's label, smaller masks last; boxes — per mask, pixels
inside the box / (box area + mask area - those pixels), argmax. Medians in ms and ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "0")
os.environ.setdefault("YOLO_VERBOSE", "False")
os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="yolo-cfg-"))

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "reference"))
import ultra_ref


def original_points(masks: np.ndarray, points: list[list[int]], labels: list[int]) -> np.ndarray:
    areas = masks.sum((1, 2))
    out = np.zeros(masks.shape[1:], dtype=np.uint8)
    for i in np.argsort(-areas, kind="stable"):
        for (x, y), lab in zip(points, labels):
            if masks[i, y, x]:
                out[masks[i]] = lab
    return out >= 1


def original_box(masks: np.ndarray, box: list[int]) -> int:
    x1, y1, x2, y2 = box
    inside = masks[:, y1:y2, x1:x2].sum((1, 2))
    union = (y2 - y1) * (x2 - x1) + masks.sum((1, 2)) - inside
    return int(np.argmax(inside / union))


def median_ms(fn, runs: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=50)
    args = ap.parse_args()
    torch.set_num_threads(2)
    from fastsam import FastSAM, select_by_boxes, select_by_points

    work = Path(tempfile.mkdtemp(prefix="fastsam-bench-"))
    ckpt = work / "FastSAM-s.pt"
    ultra_ref.save(ultra_ref.build("s", 16, seed=0), ckpt, 1024)
    image = Path(ultra_ref._assets()) / "zidane.jpg"
    model = FastSAM(ckpt)
    t = time.perf_counter()
    seg = model(image, imgsz=1024, conf=0.4, iou=0.9)
    everything_ms = (time.perf_counter() - t) * 1000
    dense = seg.masks  # the reference works on what the original holds: dense masks
    points, labels = [[620, 360], [300, 200]], [1, 0]
    box = [400, 100, 900, 600]
    ours_pts = select_by_points(seg, points, labels).mask
    assert np.array_equal(ours_pts, original_points(dense, points, labels)), "point results differ"
    assert int(select_by_boxes(seg, [box])[0]) == original_box(dense, box), "box results differ"
    print(
        f"{len(seg)} masks on zidane.jpg 1280x720, everything mode {everything_ms:.0f} ms (once); "
        f"medians of {args.runs} runs, ms"
    )
    print(f"{'prompt':<8} {'original algorithm':>18} {'fastsam':>8} {'ratio':>7}")
    rows = (
        ("points", lambda: original_points(dense, points, labels), lambda: select_by_points(seg, points, labels)),
        ("box", lambda: original_box(dense, box), lambda: select_by_boxes(seg, [box])),
    )
    for name, ref, ours in rows:
        r, o = median_ms(ref, args.runs), median_ms(ours, args.runs)
        print(f"{name:<8} {r:>18.2f} {o:>8.2f} {r / o:>6.1f}x")


if __name__ == "__main__":
    main()
