"""Everything-mode speed: ultralytics' FastSAM vs fastsam, same checkpoint, same photo, same process.

    python bench/everything.py [--scale s] [--imgsz 640 1024] [--runs 7]

Builds a FastSAM-format checkpoint with ultralytics (random, non-degenerate weights; see
tests/reference/ultra_ref.py), then times on ultralytics' 1280x720 ``zidane.jpg`` with retina masks,
conf 0.4, iou 0.9, max_det 300, both at 2 torch threads (ultralytics would silently use 1 here):

* forward: the network on the letterboxed input (both fused, fp32);
* post: everything after the forward (ultralytics: its own ``speed['postprocess']``);
* end to end: the user-facing call on the image path, returning results with masks.

Prints medians and ratios (ultralytics / fastsam: > 1 means fastsam is faster). ultralytics is a
benchmark-only reference; the package never imports it.
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

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "reference"))
import ultra_ref


def median_ms(fn, runs: int) -> tuple[float, object]:
    fn()  # warm-up
    times, out = [], None
    for _ in range(runs):
        t = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times), out


def paired_ms(fn_a, fn_b, runs: int) -> tuple[float, float, object, object]:
    """Medians of a and b timed alternately, so that machine noise hits both alike."""
    fn_a(), fn_b()  # warm-up
    ta, tb, out_a, out_b = [], [], None, None
    for _ in range(runs):
        t = time.perf_counter()
        out_a = fn_a()
        ta.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        out_b = fn_b()
        tb.append((time.perf_counter() - t) * 1000)
    return statistics.median(ta), statistics.median(tb), out_a, out_b


def bench_size(imgsz: int, ultra, ours, image: Path, runs: int) -> None:
    """Print the forward / post / end-to-end rows of one input size."""
    from fastsam import PredictConfig
    from fastsam.io.images import load_image
    from fastsam.ops.letterbox import letterbox

    kw = dict(imgsz=imgsz, conf=0.4, iou=0.9, retina_masks=True, max_det=300)
    cfg = PredictConfig(**kw)

    def ultra_call():
        return ultra.predict(str(image), device="cpu", verbose=False, **kw)[0]

    u_e2e, f_e2e, u_res, f_res = paired_ms(ultra_call, lambda: ours(image, **kw), runs)
    speeds = [ultra_call().speed for _ in range(runs)]
    u_post = statistics.median(s["postprocess"] for s in speeds)

    x, geom = letterbox(load_image(image), cfg.input_size)
    net = ultra.predictor.model.model  # the fused torch module ultralytics runs
    with torch.inference_mode():
        u_fwd, f_fwd, _, (preds, protos) = paired_ms(lambda: net(x), lambda: ours.forward(x), runs)
    f_post, _ = median_ms(lambda: ours.postprocess(preds[0], protos[0], geom, cfg), runs)
    counts = f"{len(u_res.masks.data) if u_res.masks is not None else 0}/{len(f_res)}"
    for stage, u, f in (("forward", u_fwd, f_fwd), ("post", u_post, f_post), ("end2end", u_e2e, f_e2e)):
        print(f"{imgsz:>5} {counts:>10} | {stage:<10} {u:>11.1f} {f:>9.1f} {u / f:>6.2f}x")
    # dense masks on demand (what ultralytics always builds) — reported, not in end2end
    dense, _ = median_ms(lambda: ours(image, **kw).masks, 3)
    print(f"{imgsz:>5} {'':>10} | {'e2e+dense':<10} {u_e2e:>11.1f} {dense:>9.1f} {u_e2e / dense:>6.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", default="s", choices=["s", "x"])
    ap.add_argument("--imgsz", type=int, nargs="+", default=[640, 1024])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--checkpoint", type=Path, help="existing FastSAM .pt (default: build one)")
    args = ap.parse_args()

    torch.set_num_threads(2)
    from ultralytics import FastSAM as UltraFastSAM
    from ultralytics.utils import torch_utils

    torch_utils.NUM_THREADS = 2  # ultralytics' predictor would otherwise drop to 1 thread here

    from fastsam import FastSAM

    work = Path(tempfile.mkdtemp(prefix="fastsam-bench-"))
    ckpt = args.checkpoint
    if ckpt is None:
        ckpt = work / f"FastSAM-{args.scale}.pt"
        ultra_ref.save(ultra_ref.build(args.scale, 16 if args.scale == "s" else 26, seed=0), ckpt, 1024)
    image = Path(ultra_ref._assets()) / "zidane.jpg"

    ultra = UltraFastSAM(str(ckpt))
    ours = FastSAM(ckpt, cache_size=0)
    from fastsam.ops import _native

    kernels = "C (fastsam.ops._kernels)" if _native.available() else "numpy fallback (C kernels not built)"
    print(
        f"checkpoint {ckpt.name}, image {image.name} 1280x720, torch {torch.__version__}, threads "
        f"{torch.get_num_threads()}, runs {args.runs} (medians, ms); mask/NMS kernels: {kernels}"
    )
    header = f"{'imgsz':>5} {'masks u/f':>10} | {'stage':<10} {'ultralytics':>11} {'fastsam':>9} {'ratio':>7}"
    print(header)
    print("-" * len(header))
    for imgsz in args.imgsz:
        bench_size(imgsz, ultra, ours, image, args.runs)


if __name__ == "__main__":
    main()
