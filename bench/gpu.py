"""One prepared GPU session: parity on the device, an AMP training smoke test, and the speed table.

    python bench/gpu.py                       # device cuda, FastSAM-x and -s at 1024 (~5 min on an H200)
    python bench/gpu.py --device cpu --quick  # tiny sizes: proves the script runs end to end
    python bench/gpu.py --compile             # also FastSAM(compile=True) rows, with the warm-up stated
    python bench/gpu.py --skip parity train speed   # only the max_det 1000 memory check

Needs only torch, numpy and this package; ultralytics (optional) builds the random-weight test
checkpoints (tests/reference/ultra_ref.py, unless ``--ckpts DIR`` holds FastSAM-s.pt/FastSAM-x.pt)
and is the reference predictor of the speed table. No network access. Writes
``bench/results/gpu-<device>[-quick].md``.

1. Parity. (a) post-processing alone: the device path on the device's network outputs against the
   C kernels on the same outputs copied to the host (boxes and scores equal, each mask IoU >= 0.99);
   (b) end to end against the CPU run: fp32 every mask matched with IoU >= 0.99, fp16 >= 0.98
   (masks matched by box, as the two networks round differently).
2. Training: two epochs of the n model on synthetic scenes with AMP (CUDA), losses finite.
3. Speed: ours (post="device") vs ultralytics' predictor, per image: forward, post-processing, end
   to end with masks on the device and on the host; batch 1 and 8; fp32 and fp16; peak memory.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastsam import FastSAM, PredictConfig, Segments
from fastsam.io.images import load_image
from fastsam.ops.device_post import postprocess_batch
from fastsam.ops.letterbox import letterbox

ROOT = Path(__file__).resolve().parents[1]
CONF, IOU, MAX_DET = 0.4, 0.9, 300


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timed(fn: Callable[[], Any], dev: torch.device, reps: int, warmup: int = 2) -> float:
    """Median wall time of ``fn`` in ms, the device synchronised after each call."""
    for _ in range(warmup):
        fn()
        sync(dev)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        sync(dev)
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def checkpoints(args: argparse.Namespace, work: Path) -> dict[str, Path]:
    if args.ckpts:
        return {k: Path(args.ckpts) / f"FastSAM-{k}.pt" for k in ("s", "x")}
    if not have("ultralytics"):
        sys.exit("bench/gpu.py: no --ckpts and ultralytics is not installed to build the test checkpoints")
    env = dict(os.environ, YOLO_OFFLINE="1", YOLO_AUTOINSTALL="0", YOLO_VERBOSE="False")
    env["YOLO_CONFIG_DIR"] = str(work / "yolo-cfg")
    subprocess.run([sys.executable, str(ROOT / "tests/reference/ultra_ref.py"), "make", str(work)], env=env, check=True)
    return {k: work / f"FastSAM-{k}.pt" for k in ("s", "x")}


def photos(quick: bool, work: Path) -> list[Path]:
    """zidane.jpg (1280x720, the benchmark photo) and bus.jpg from ultralytics, else synthetic scenes."""
    from PIL import Image

    spec = importlib.util.find_spec("ultralytics")
    if spec is not None and spec.submodule_search_locations:
        assets = Path(next(iter(spec.submodule_search_locations))) / "assets"
        paths = [assets / "zidane.jpg", assets / "bus.jpg"]
    else:
        from fastsam.data.synth import render_scene

        paths = []
        for i, size in enumerate(((720, 1280), (1080, 810))):
            img, _ = render_scene(np.random.default_rng(i), size)
            paths.append(work / f"scene{i}.jpg")
            Image.fromarray(img).save(paths[-1])
    if quick:  # a quarter of the size: retina masks cost their pixels on a CPU
        small = []
        for p in paths:
            im = Image.open(p)
            small.append(work / f"small-{p.name}")
            im.resize((im.width // 4, im.height // 4), Image.BILINEAR).save(small[-1])
        paths = small
    return paths


def crop_iou(a: Segments, i: int, b: Segments, j: int) -> float:
    """Mask IoU of a[i] and b[j] from their crops (pasted into the union of their regions)."""
    (ar0, ar1, ac0, ac1), (br0, br1, bc0, bc1) = a.regions[i], b.regions[j]
    r0, r1, c0, c1 = min(ar0, br0), max(ar1, br1), min(ac0, bc0), max(ac1, bc1)
    if r1 <= r0 or c1 <= c0:
        return 1.0
    ma = np.zeros((r1 - r0, c1 - c0), bool)
    mb = np.zeros_like(ma)
    ma[ar0 - r0 : ar1 - r0, ac0 - c0 : ac1 - c0] = a.crops[i]
    mb[br0 - r0 : br1 - r0, bc0 - c0 : bc1 - c0] = b.crops[j]
    union = (ma | mb).sum()
    return 1.0 if union == 0 else float((ma & mb).sum() / union)


def matched_ious(ref: Segments, got: Segments) -> np.ndarray:
    """For each reference mask, the best IoU among the masks whose box is within 8 px of its box."""
    out = np.zeros(len(ref))
    for i in range(len(ref)):
        near = np.flatnonzero(np.abs(got.boxes - ref.boxes[i]).max(1) <= 8.0)
        out[i] = max((crop_iou(ref, i, got, j) for j in near), default=0.0)
    return out


def parity(cases: list[tuple[str, Path | None, list[Path], int]], dev: torch.device) -> list[str]:
    """``cases``: (name, checkpoint (None: the demo model), photos, imgsz). TF32 convolutions (on by
    default in cuDNN) are turned off here: fp32 must mean fp32 to compare with the CPU."""
    lines = []
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    for name, ckpt, images, imgsz in cases:
        cpu = FastSAM(ckpt, device="cpu", post="kernels", cache_size=0)
        ours = FastSAM(ckpt, device=dev, post="device", cache_size=0)
        variants = [("fp32", ours, 0.99)]
        if dev.type == "cuda":
            variants.append(("fp16", FastSAM(ckpt, device=dev, half=True, post="device", cache_size=0), 0.98))
        cfg = PredictConfig(imgsz=imgsz, conf=CONF, iou=IOU, max_det=MAX_DET)
        for photo in images:
            # (a) post-processing alone, on this device's network outputs
            x, geom = letterbox(load_image(photo), cfg.input_size, cfg.stride)
            preds, protos = ours.forward(x)
            on_dev = ours.postprocess(preds[0], protos[0], geom, cfg)
            on_host = cpu.postprocess(preds[0].cpu(), protos[0].cpu(), geom, cfg)
            same = len(on_dev) == len(on_host) and np.array_equal(on_dev.boxes, on_host.boxes)
            same = same and np.array_equal(on_dev.scores, on_host.scores)
            ious = [crop_iou(on_host, k, on_dev, k) for k in range(len(on_host))] if same else [0.0]
            stab = float(np.abs(on_dev.stability - on_host.stability).max(initial=0)) if same else math.inf
            ok = same and min(ious, default=1.0) >= 0.99 and stab <= 1e-3
            lines.append(
                f"- {name} {photo.name}: device post vs C kernels on the same outputs: {len(on_dev)} vs "
                f"{len(on_host)} masks, boxes/scores equal {same}, min IoU {min(ious, default=1.0):.4f}, "
                f"stability diff {stab:.1e} -> {'PASS' if ok else 'FAIL'}"
            )
            # (b) end to end against the CPU run
            ref = cpu(photo, imgsz=imgsz, conf=CONF, iou=IOU, max_det=MAX_DET)
            assert isinstance(ref, Segments)
            for tag, model, need in variants:
                got = model(photo, imgsz=imgsz, conf=CONF, iou=IOU, max_det=MAX_DET)
                assert isinstance(got, Segments)
                best = matched_ious(ref, got)
                frac = float((best >= need).mean()) if len(best) else 1.0
                lines.append(
                    f"- {name} {photo.name} {tag} on {dev.type} vs CPU: {len(got)} vs {len(ref)} masks, "
                    f"{frac:.1%} matched with IoU >= {need} (min {best.min(initial=1.0):.4f}) -> "
                    f"{'PASS' if frac == 1.0 and len(got) == len(ref) else 'FAIL'}"
                )
    if dev.type != "cuda":
        lines.append("- fp16: CUDA only, not run on this device")
    lines.append(
        "- (random-weight checkpoints have no margin for rounding: their fp16 agreement says little; "
        "the demo model's does)"
    )
    torch.backends.cudnn.allow_tf32 = tf32
    return lines


def train_smoke(dev: torch.device, work: Path, quick: bool) -> list[str]:
    from fastsam.data.synth import write_dataset
    from fastsam.train.config import TrainConfig
    from fastsam.train.trainer import Trainer

    size = 96 if quick else 320
    write_dataset(work / "synth", 8, seed=0, size=(size, size))
    run = {"epochs": 2, "batch": 4, "workers": 0, "warmup_epochs": 0.0, "close_mosaic": 0, "amp": True}
    cfg = TrainConfig(str(work / "synth"), "n", str(work / "train"), imgsz=size, device=str(dev), **run)
    t = time.perf_counter()
    trainer = Trainer(cfg, progress=False)
    result = trainer.train()
    finite = all(math.isfinite(v) for h in result.history for k, v in h.items() if k in ("box", "mask", "cls", "dfl"))
    return [
        f"- training, n model, {size}px, 2 epochs, batch 4 on {dev.type}: AMP {trainer.use_amp}, "
        f"{len(result.history)} iterations, losses finite {finite}, grad scale {trainer.scaler.get_scale():g}, "
        f"{time.perf_counter() - t:.1f} s -> {'PASS' if finite and result.weights.exists() else 'FAIL'}"
    ]


def peak_mb(dev: torch.device, fn: Callable[[], Any]) -> str:
    if dev.type != "cuda":
        return "-"
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(dev)
    fn()
    sync(dev)
    return f"{torch.cuda.max_memory_allocated(dev) / 2**20:.0f}"


def bench_ours(
    ckpt: Path, photo: Path, dev: torch.device, imgsz: int, batch: int, half: bool, reps: int, compile: bool = False
) -> dict:
    model = FastSAM(ckpt, device=dev, half=half, post="device", cache_size=0, compile=compile)
    rgb = load_image(photo)
    cfg = PredictConfig(imgsz=imgsz)
    nc = model.config.num_classes

    def prepare() -> tuple[torch.Tensor, list]:
        xs, geoms = zip(*(letterbox(rgb, cfg.input_size, cfg.stride) for _ in range(batch)))
        return torch.cat(xs).to(dev, non_blocking=True), list(geoms)

    x, geoms = prepare()
    t = time.perf_counter()
    preds, protos = model.forward(x)
    sync(dev)
    warmup = time.perf_counter() - t  # with compile=True: compiling for this input shape

    def post() -> Any:
        return postprocess_batch(preds, protos, geoms, nc, CONF, IOU, MAX_DET, True)

    def e2e(host: bool) -> Any:
        xb, gb = prepare()
        p, q = model.forward(xb)
        out = postprocess_batch(p, q, gb, nc, CONF, IOU, MAX_DET, True)
        if host:
            return [Segments.from_crops(g.orig_size, r.boxes, r.scores, r.crops) for g, r in zip(gb, out.to_host())]
        return out

    kernels = FastSAM(ckpt, device="cpu", post="kernels", cache_size=0)
    host_post = timed(
        lambda: [kernels.postprocess(preds[i].cpu(), protos[i].cpu(), geoms[i], cfg) for i in range(batch)],
        dev,
        max(2, reps // 3),
        1,
    )
    return {
        "forward": timed(lambda: model.forward(x), dev, reps) / batch,
        "post": timed(post, dev, reps) / batch,
        "e2e_dev": timed(lambda: e2e(False), dev, reps) / batch,
        "e2e_host": timed(lambda: e2e(True), dev, reps) / batch,
        "masks": len(post().boxes[0]),
        "peak": peak_mb(dev, lambda: e2e(True)),
        "note": f"C-kernel post on the host: {host_post / batch:.1f} ms/img"
        + (f"; torch.compile warm-up (first forward) {warmup:.1f} s" if compile else ""),
    }


def bench_ultralytics(
    ckpt: Path, photo: Path, dev: torch.device, imgsz: int, batch: int, half: bool, reps: int
) -> dict:
    from ultralytics import FastSAM as UltraFastSAM

    model = UltraFastSAM(str(ckpt))
    bgr = np.ascontiguousarray(load_image(photo)[:, :, ::-1])
    device = "cpu" if dev.type == "cpu" else str(dev.index or 0)
    kw: dict[str, Any] = dict(device=device, imgsz=imgsz, conf=CONF, iou=IOU, max_det=MAX_DET, retina_masks=True)
    kw.update(verbose=False, **({"half": True} if half else {}))  # 'half' is deprecated there: only when wanted

    def run(host: bool) -> Any:
        res = model.predict([bgr] * batch, **kw)
        if host:
            return [r.masks.data.cpu() for r in res if r.masks is not None]
        return res

    run(False)
    speeds = [model.predict([bgr] * batch, **kw)[0].speed for _ in range(reps)]
    res = run(False)
    return {
        "forward": statistics.median(s["inference"] for s in speeds),
        "post": statistics.median(s["postprocess"] for s in speeds),
        "e2e_dev": timed(lambda: run(False), dev, reps) / batch,
        "e2e_host": timed(lambda: run(True), dev, reps) / batch,
        "masks": 0 if res[0].masks is None else len(res[0].masks.data),
        "peak": peak_mb(dev, lambda: run(True)),
        "note": "",
    }


def memory_rows(ckpt: Path, photo: Path, dev: torch.device, work: Path, quick: bool) -> list[str]:
    """The original's users ran out of memory at max_det 1000 on large photos: peak device memory
    of one call at max_det 1000 (conf 0.05, so that the cap is reached) on a 3000x2000 image."""
    from PIL import Image

    w, h = (750, 500) if quick else (3000, 2000)
    big = work / f"big-{w}x{h}.jpg"
    Image.open(photo).convert("RGB").resize((w, h), Image.BILINEAR).save(big)
    imgsz = 256 if quick else 1024
    rows = [
        f"## Memory: max_det 1000 on a {w}x{h} image, {ckpt.stem} at {imgsz}, conf 0.05, retina masks",
        "",
        "| impl | masks | peak device MB | s |",
        "|---|---|---|---|",
    ]
    ours = FastSAM(ckpt, device=dev, post="device", cache_size=0)
    runs: list[tuple[str, Callable[[], int]]] = [
        ("fastsam", lambda: len(ours(big, imgsz=imgsz, conf=0.05, max_det=1000)))  # type: ignore[arg-type]
    ]
    if have("ultralytics"):
        from ultralytics import FastSAM as UltraFastSAM

        ultra = UltraFastSAM(str(ckpt))
        device = "cpu" if dev.type == "cpu" else str(dev.index or 0)

        def run_ultra() -> int:
            r = ultra(str(big), device=device, imgsz=imgsz, conf=0.05, iou=IOU, max_det=1000, retina_masks=True,
                      verbose=False)[0]  # fmt: skip
            return 0 if r.masks is None else len(r.masks.data)

        runs.append(("ultralytics", run_ultra))
    for impl, fn in runs:
        fn()  # warm-up
        t = time.perf_counter()
        try:
            if dev.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(dev)
            count = fn()
            sync(dev)
            peak = f"{torch.cuda.max_memory_allocated(dev) / 2**20:.0f}" if dev.type == "cuda" else "-"
            rows.append(f"| {impl} | {count} | {peak} | {time.perf_counter() - t:.2f} |")
        except torch.OutOfMemoryError as exc:
            rows.append(f"| {impl} | - | out of memory: {str(exc).splitlines()[0][:80]} | - |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (imgsz 256, batch 1 and 2, 3 repetitions)")
    ap.add_argument("--ckpts", help="directory with FastSAM-s.pt and FastSAM-x.pt (default: built with ultralytics)")
    ap.add_argument("--out", help="markdown output (default bench/results/gpu-<device>[-quick].md)")
    ap.add_argument("--skip", nargs="*", default=[], choices=["parity", "train", "speed", "memory"])
    ap.add_argument("--compile", action="store_true", help="also rows with FastSAM(compile=True) (torch.compile)")
    args = ap.parse_args()
    dev = torch.device(args.device)
    imgsz, batches, reps = (256, (1, 2), 3) if args.quick else (1024, (1, 8), 10)
    precisions = (False, True) if dev.type == "cuda" else (False,)
    work = Path(tempfile.mkdtemp(prefix="fastsam-gpu-"))
    t0 = time.perf_counter()
    ckpts = checkpoints(args, work)
    images = photos(args.quick, work)
    gpu = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"
    lines = [f"# bench/gpu.py on {gpu} (torch {torch.__version__}){' --quick' if args.quick else ''}", ""]
    if "parity" not in args.skip:
        demo = [ROOT / "examples" / "shapes.jpg", ROOT / "examples" / "scene.jpg"]
        cases = [(f"FastSAM-{k}", p, images, imgsz) for k, p in ckpts.items()]
        cases.append(("demo model", None, demo, FastSAM().default_imgsz))
        lines += ["## Parity", "", *parity(cases, dev), ""]
        print("\n".join(lines), flush=True)
    if "train" not in args.skip:
        lines += ["## Training smoke test", "", *train_smoke(dev, work, args.quick), ""]
        print(lines[-2], flush=True)
    if "speed" not in args.skip:
        photo = images[0]
        w, h = load_image(photo).shape[1::-1]
        lines += [
            f"## Speed: {photo.name} ({w}x{h}), imgsz {imgsz}, retina masks, ms per image",
            "",
            "| model | batch | precision | impl | forward | post | e2e (masks on device) "
            "| e2e (masks on host) | masks | peak MB |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        notes = []
        for name in ("x", "s"):
            for batch in batches:
                for half in precisions:
                    impls = [("fastsam", bench_ours)] + (
                        [("ultralytics", bench_ultralytics)] if have("ultralytics") else []
                    )
                    if args.compile:
                        impls.append(("fastsam compiled", functools.partial(bench_ours, compile=True)))
                    for impl, fn in impls:
                        r = fn(ckpts[name], photo, dev, imgsz, batch, half, reps)
                        cells = [f"FastSAM-{name}", batch, "fp16" if half else "fp32", impl]
                        cells += [f"{r[k]:.2f}" for k in ("forward", "post", "e2e_dev", "e2e_host")]
                        row = "| " + " | ".join(map(str, [*cells, r["masks"], r["peak"]])) + " |"
                        lines.append(row)
                        print(row, flush=True)
                        if r["note"]:
                            notes.append(f"- FastSAM-{name} batch {batch} {'fp16' if half else 'fp32'}: {r['note']}")
        lines += ["", *notes, ""]
        lines.append("ultralytics' forward/post are its own `Results.speed` figures (per image).")
    if "memory" not in args.skip:
        memory = memory_rows(ckpts["x"], images[0], dev, work, args.quick)
        lines += ["", *memory, ""]
        print("\n".join(memory), flush=True)
    lines.append(f"\nTotal {time.perf_counter() - t0:.0f} s.")
    out = Path(args.out or ROOT / "bench" / "results" / f"gpu-{dev.type}{'-quick' if args.quick else ''}.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[-3:]))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
