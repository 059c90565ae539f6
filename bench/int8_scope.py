"""Which layers stay fp32 in an int8 export: accuracy and speed of each choice, measured.

For every scope of ``fastsam.export.quantize.SCOPES``: quantize (NNCF, calibration scenes made by
``fastsam synth`` with a seed the evaluation does not use), then on held-out synthetic scenes
(seed 31337, the model card's test seed) the mask AR@100 of fp32 and int8, the share of fp32 masks
with an int8 match of IoU >= 0.9, and the forward time of each, measured alternately in this
process (2 threads). ``--weights`` takes another model (e.g. a FastSAM-x test checkpoint: random
weights, so only the agreement figures mean something there).

    python bench/int8_scope.py [--weights W] [--imgsz 448] [--scenes 100] [--calib 32]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fastsam import FastSAM
from fastsam.config import PredictConfig
from fastsam.data.synth import write_dataset
from fastsam.export import export_model
from fastsam.export.quantize import SCOPES
from fastsam.ops.agreement import best_match_iou
from fastsam.ops.letterbox import letterbox
from fastsam.train.evaluate import evaluate, open_dataset


def agreement(ref: FastSAM, other: FastSAM, images: list[Path], cfg: PredictConfig) -> tuple[float, float, int]:
    """(share of ref masks matched with IoU >= 0.9, mean best IoU, ref mask count) over ``images``."""
    ious = []
    for path in images:
        a, b = ref.segment(path, cfg), other.segment(path, cfg)
        ious.append(best_match_iou(a.masks, b.masks))
    allv = np.concatenate(ious) if ious else np.zeros(0)
    return float((allv >= 0.9).mean()) if len(allv) else 1.0, float(allv.mean()) if len(allv) else 1.0, len(allv)


def forward_ms(models: list[FastSAM], x: torch.Tensor, runs: int) -> list[float]:
    times: list[list[float]] = [[] for _ in models]
    for m in models:
        m.forward(x)  # warm-up
    for _ in range(runs):  # alternate, so the machine's drift hits all alike
        for i, m in enumerate(models):
            t = time.perf_counter()
            m.forward(x)
            times[i].append((time.perf_counter() - t) * 1e3)
    return [statistics.median(t) for t in times]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default=None)
    ap.add_argument("--imgsz", type=int, default=448)
    ap.add_argument("--scenes", type=int, default=100)
    ap.add_argument("--calib", type=int, default=32)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--scopes", default=",".join(SCOPES))
    args = ap.parse_args()
    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp(prefix="int8-scope-"))
    write_dataset(work / "calib", args.calib, seed=4242, size=(320, 320))
    write_dataset(work / "test", args.scenes, seed=31337, size=(320, 320))
    weights = args.weights
    if weights is None:
        from fastsam.weights import default_model_path

        weights = default_model_path()
    cfg = PredictConfig(imgsz=args.imgsz)
    fp32 = FastSAM(export_model(weights, "openvino", work / "fp32", dynamic=True), cache_size=0)
    dataset, _ = open_dataset(work / "test")
    images = sorted((work / "test").glob("*.jpg"))

    def ar(m):
        return evaluate(m, dataset, imgsz=args.imgsz, progress=False)["mask_AR@100"]

    base_ar = ar(fp32)
    x, _ = letterbox(np.asarray(__import__("PIL.Image").Image.open(images[0]).convert("RGB")), cfg.input_size)
    rows = []
    for scope in args.scopes.split(","):
        xml = export_model(
            weights,
            "openvino",
            work / f"int8-{scope}",
            dynamic=True,
            int8=True,
            calib=work / "calib",
            calib_n=args.calib,
            keep_fp32=SCOPES[scope],
        )
        q = FastSAM(xml, cache_size=0)
        matched, mean_iou, n = agreement(fp32, q, images, cfg)
        t_fp32, t_int8 = forward_ms([fp32, q], x, args.runs)
        rows.append((scope, base_ar, ar(q), matched, mean_iou, n, t_fp32, t_int8))
    print(f"weights: {weights}; imgsz {args.imgsz}; {args.scenes} held-out scenes; {args.calib} calibration scenes\n")
    print(
        "| keep fp32 | AR@100 fp32 | AR@100 int8 | drop | fp32 masks matched (IoU>=0.9) | mean best IoU | "
        "forward fp32 ms | forward int8 ms | speed-up |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for scope, a32, a8, m, miou, n, t32, t8 in rows:
        print(
            f"| {scope} | {a32:.3f} | {a8:.3f} | {a32 - a8:+.3f} | {m:.1%} of {n} | {miou:.3f} | {t32:.1f} | "
            f"{t8:.1f} | {t32 / t8:.2f}x |"
        )


if __name__ == "__main__":
    main()
