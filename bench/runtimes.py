"""Runtime speed: ultralytics' FastSAM (PyTorch, its own ONNX and OpenVINO exports) vs fastsam
(PyTorch, ONNX Runtime fp32, OpenVINO fp32, OpenVINO int8), same checkpoint, same photo.

    python bench/runtimes.py [--scales s x] [--photos zidane bus] [--imgsz 1024 640] [--runs 5]
                             [--rows ROW ...] [--work DIR] [--calib-n N] [--shape square|rect]

Models: the FastSAM-s and FastSAM-x test checkpoints (random, non-degenerate weights) that
``python tests/reference/ultra_ref.py make OUTDIR`` writes (``FastSAM-s.pt``, ``FastSAM-x.pt``).

Photos: ``zidane`` is ultralytics' ``zidane.jpg`` (1280x720). ``bus``: no 1072x603 photo ships
with ultralytics or fastsam, so one is made deterministically from ultralytics' ``bus.jpg``
(810x1080): its central 810x456 band (rows 312-767), resized to 1072x603 with OpenCV bilinear
interpolation and written as JPEG quality 95 to ``WORK/photos/bus-1072x603.jpg``.

Rows (``--rows``, default all):

* ``ultra-torch``: ultralytics' ``FastSAM(pt).predict``;
* ``ultra-onnx``, ``ultra-openvino``: ultralytics' own ``FastSAM(pt).export(format=..., imgsz=...)``
  (its defaults: static, fp32) run through the same predictor, as a deploying user would. Offline,
  ultralytics skips ONNX simplification when ``onnxslim`` is not installed (noted in the row);
  ultralytics compiles OpenVINO with the CPU plugin's default inference precision, which is bf16
  on CPUs with AMX/AVX512-BF16 (the precision is noted in the row; ours is pinned to f32);
* ``torch``: ``fastsam.FastSAM(pt)``;
* ``ort``, ``openvino``: ``fastsam.export.export_model(pt, "onnx" | "openvino", imgsz=..., dynamic=False)``
  then ``fastsam.FastSAM(exported)``;
* ``int8``: ``export_model(pt, "openvino", int8=True, calib=..., calib_n=N)``, calibrated on
  ultralytics' ``bus.jpg`` and ``zidane.jpg`` plus fastsam's ``examples/*.jpg`` (4 images, the first
  ``--calib-n`` of them; the benchmark photos are the same as, or a crop of, two of the four).
* ``bf16``: the fp32 OpenVINO IR run with ``FastSAM(xml, half=True)`` (bf16 inference; only on CPUs
  with bf16 units, an error row elsewhere).

Static exports (ours and ultralytics') take an ``imgsz`` x ``imgsz`` input (``--shape square``, the
default of ``export(imgsz=N)``): a 16:9 photo is padded to a square there, while both PyTorch rows
letterbox to the minimal rectangle (1024x576 for these photos at 1024). ``--shape rect`` exports
both sides to that rectangle instead.

Settings: retina masks, conf 0.4, iou 0.9, max_det 300, 2 threads everywhere (torch, OpenCV, ONNX
Runtime sessions and OpenVINO compiled models, ultralytics' included: its ``OMP_NUM_THREADS=1``
default is overridden; ultralytics' ORT session and OpenVINO model are re-created with 2 threads).

Method: one process per configuration (model, photo, imgsz): a ``--worker prepare`` subprocess
makes the exports (cached in ``--work`` and reused by later runs), then a ``--worker time``
subprocess loads every row, warms each up, and times them interleaved in rounds (row order
rotated every round), reporting medians of ``--runs`` rounds:

* forward: ultralytics ``speed['inference']``; ours: the backend's ``forward`` call;
* post: ultralytics ``speed['postprocess']`` (it always builds dense masks); ours:
  ``FastSAM.postprocess`` plus materialising the dense ``Segments.masks``;
* end to end: the user-facing call on the image path until the masks are in hand
  (ultralytics ``predict(...)[0].masks.data``, ours ``FastSAM(...)(path).masks``).

Ratios > 1 mean the row is faster than ultralytics PyTorch / ultralytics' fastest working export.
Mask agreement of our exports (int8 first): share of our fp32 PyTorch masks on the same image
matched by a mask of the row with IoU >= 0.9 (``fastsam.ops.agreement.best_match_iou``), against
PyTorch run on the export's own input (same padding: what the runtime/precision changes) and, when
that differs, against the PyTorch row (minimal letterbox). Empty masks (FastSAM keeps them; their IoU
is undefined) are left out of the share and counted apart. ultralytics is a
benchmark-only reference; the package never imports it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
ULTRA_REF = REPO / "tests" / "reference" / "ultra_ref.py"
THREADS = 2
PREDICT = {"conf": 0.4, "iou": 0.9, "retina_masks": True, "max_det": 300}
RESULT_TAG = "RUNTIMES-RESULT "
ROWS: dict[str, str] = {
    "ultra-torch": "ultralytics PyTorch",
    "ultra-onnx": "ultralytics ONNX (ORT)",
    "ultra-openvino": "ultralytics OpenVINO",
    "torch": "ours PyTorch",
    "ort": "ours ONNX Runtime fp32",
    "openvino": "ours OpenVINO fp32",
    "int8": "ours OpenVINO int8",
    "bf16": "ours OpenVINO bf16 (--half)",
}
ULTRA_EXPORTS = ("ultra-onnx", "ultra-openvino")
OUR_EXPORTS = ("ort", "openvino", "int8", "bf16")
PHOTOS = {"zidane": (1280, 720), "bus": (1072, 603)}  # name -> (width, height)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("YOLO_OFFLINE", "1")
    env.setdefault("YOLO_AUTOINSTALL", "0")
    env.setdefault("YOLO_VERBOSE", "False")
    env.setdefault("OMP_NUM_THREADS", str(THREADS))  # else ultralytics' import sets 1
    return env


def one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    text = text.splitlines()[0] if text else ""
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def stamp(path: Path) -> str:
    st = path.stat()
    return f"{path.name}:{st.st_size}:{st.st_mtime_ns}"


# -- parent: inputs ------------------------------------------------------------------------------
def assets_dir() -> Path:
    out = subprocess.run(
        [sys.executable, "-c", "import ultralytics, os; print(os.path.dirname(ultralytics.__file__))"],
        capture_output=True,
        text=True,
        env=_env(),
        check=True,
    )
    return Path(out.stdout.strip().splitlines()[-1]) / "assets"


def ensure_checkpoints(work: Path, scales: list[str]) -> dict[str, Path]:
    """FastSAM-{scale}.pt built by ``ultra_ref.py make`` into WORK/ckpt (existing files are kept)."""
    ckpt = work / "ckpt"
    missing = [s for s in scales if not (ckpt / f"FastSAM-{s}.pt").is_file()]
    if missing:
        ckpt.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=work, prefix=".make-") as tmp:
            cmd = [sys.executable, str(ULTRA_REF), "make", tmp] + (["--only-s"] if missing == ["s"] else [])
            print(f"building test checkpoints {', '.join(f'FastSAM-{s}' for s in missing)} ...", flush=True)
            subprocess.run(cmd, env=_env(), check=True, stdout=subprocess.DEVNULL)
            for s in missing:
                os.replace(Path(tmp) / f"FastSAM-{s}.pt", ckpt / f"FastSAM-{s}.pt")
    return {s: ckpt / f"FastSAM-{s}.pt" for s in scales}


def ensure_photos(work: Path, names: list[str], assets: Path) -> dict[str, Path]:
    out = {}
    for name in names:
        if name == "zidane":
            out[name] = assets / "zidane.jpg"
            continue
        path = work / "photos" / "bus-1072x603.jpg"
        if not path.is_file():
            import cv2

            im = cv2.imread(str(assets / "bus.jpg"))  # 810x1080 (w x h)
            band = round(im.shape[1] * 603 / 1072)  # 456 rows: the 1072x603 aspect at full width
            top = (im.shape[0] - band) // 2
            im = cv2.resize(im[top : top + band], (1072, 603), interpolation=cv2.INTER_LINEAR)
            path.parent.mkdir(parents=True, exist_ok=True)
            ok, buf = cv2.imencode(".jpg", im, [cv2.IMWRITE_JPEG_QUALITY, 95])
            if not ok:
                raise RuntimeError("could not encode the bus photo")
            tmp = path.with_name(f".{path.name}.{os.getpid()}")
            tmp.write_bytes(buf.tobytes())
            os.replace(tmp, path)
        out[name] = path
    return out


def calibration_images(assets: Path) -> list[str]:
    return [str(assets / "bus.jpg"), str(assets / "zidane.jpg")] + [
        str(p) for p in sorted((REPO / "examples").glob("*.jpg"))
    ]


def input_shape(photo: str, imgsz: int, mode: str) -> tuple[int, int]:
    """(H, W) of the static exports: square, or the minimal letterbox rectangle of the photo."""
    if mode == "square":
        return imgsz, imgsz
    w0, h0 = PHOTOS[photo]
    r = imgsz / max(w0, h0)

    def up(v: int) -> int:
        return -(-round(v * r) // 32) * 32

    return up(h0), up(w0)


# -- parent: driving the workers -----------------------------------------------------------------
def run_worker(kind: str, spec: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--spec", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"fatal": f"{kind} worker timed out after {timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG) :])
    tail = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    return {"fatal": f"{kind} worker exited {proc.returncode}: {tail[-1] if tail else 'no output'}"}


def fmt_ratio(ref: float | None, value: float | None) -> str:
    return f"{ref / value:.2f}x" if ref and value else "–"


def report(cfg: dict[str, Any], result: dict[str, Any], rows: list[str]) -> dict[str, Any]:
    """Print the markdown table of one configuration; return its medians for the summary."""
    w, h = PHOTOS[cfg["photo"]]
    shape = "x".join(map(str, cfg["shape"]))
    print(
        f"\n### FastSAM-{cfg['scale']} · {cfg['photo']} {w}x{h} · imgsz {cfg['imgsz']} "
        f"(static exports {shape}) · medians of {cfg['runs']} rounds, ms\n"
    )
    if "fatal" in result:
        print(f"error: {result['fatal']}")
        return {}
    med = {
        k: {m: statistics.median(v[m]) for m in ("forward", "post", "e2e")}
        for k, v in result["rows"].items()
        if "error" not in v
    }
    ref = med.get("ultra-torch", {}).get("e2e")
    exports = [med[k]["e2e"] for k in ULTRA_EXPORTS if k in med]
    best_export = min(exports) if exports else None
    print(
        "| runtime | masks | forward ms | post ms | end to end ms "
        "| vs ultralytics PyTorch | vs ultralytics best export | notes |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for key in rows:
        row = result["rows"].get(key, {"error": "not run"})
        notes = "; ".join(row.get("notes", []))
        if "error" in row:
            error = row["error"].replace("|", "\\|")
            print(f"| {ROWS[key]} | error: {error} |  |  |  |  |  | {notes} |")
            continue
        m = med[key]
        print(
            f"| {ROWS[key]} | {row['masks']} | {m['forward']:.1f} | {m['post']:.1f} | {m['e2e']:.1f} | "
            f"{fmt_ratio(ref, m['e2e'])} | {fmt_ratio(best_export, m['e2e'])} | {notes} |"
        )
    agree = dict(result.get("agreement", {}))
    shapes = agree.pop("_shapes", {})
    if agree:
        print(
            f"\nmask agreement on {cfg['photo']} "
            "(share of our non-empty fp32 PyTorch masks matched with IoU >= 0.9, mean best IoU):"
        )
    for key in sorted(agree, key=lambda k: k not in ("int8", "bf16")):  # reduced precision first
        a = agree[key]
        if "error" in a:
            print(f"- {ROWS[key]}: error: {a['error']}")
            continue
        same, row = a["same"], a["row"]
        first = (
            f"vs PyTorch fp32 on the same {shapes.get('same', '?')} input: "
            f"{same['matched']:.1%} of {same['reference']} "
            f"({same['mean_iou']:.3f}; {same['empty']} empty there)"
        )
        parts = [first]
        if shapes.get("row") != shapes.get("same"):
            parts.append(
                f"vs the PyTorch row ({shapes.get('row', '?')} input): {row['matched']:.1%} of {row['reference']} "
                f"({row['mean_iou']:.3f}; {row['empty']} empty there)"
            )
        print(f"- {ROWS[key]} ({a['masks']} masks, {a['empty']} empty): " + "; ".join(parts))
    sys.stdout.flush()
    return {"med": med, "agreement": agree}


def summary_line(cfg: dict[str, Any], res: dict[str, Any]) -> str:
    med = res.get("med", {})
    head = f"FastSAM-{cfg['scale']} @{cfg['imgsz']} {cfg['photo']} end to end:"
    ours = {k: med[k]["e2e"] for k in ("torch", *OUR_EXPORTS) if k in med}
    fp32 = {k: v for k, v in ours.items() if k not in ("int8", "bf16")}
    ref = med.get("ultra-torch", {}).get("e2e")
    exports = {k: med[k]["e2e"] for k in ULTRA_EXPORTS if k in med}
    target = cfg["scale"] == "x" and cfg["imgsz"] == 1024
    if not ours:
        return f"{head} no row of ours ran"
    best = min(ours, key=ours.get)
    parts = [f"ours best ({ROWS[best]})"]
    r1 = fmt_ratio(ref, ours[best])
    parts.append(f"/ ultralytics PyTorch = {r1}" + (" (target >= 2.5x)" if target else ""))
    if exports:
        ubest = min(exports, key=exports.get)
        r2 = fmt_ratio(exports[ubest], ours[best])
        parts.append(
            f", ours best / ultralytics best export ({ROWS[ubest]}) = {r2}" + (" (target >= 1.3x)" if target else "")
        )
    else:
        parts.append(", ultralytics best export: none ran")
    if best in ("int8", "bf16") and fp32:
        fbest = min(fp32, key=fp32.get)
        parts.append(
            f"; best fp32 ({ROWS[fbest]}): {fmt_ratio(ref, fp32[fbest])} / "
            f"{fmt_ratio(min(exports.values()) if exports else None, fp32[fbest])}"
        )
    torch_ms = ours.get("torch")
    vs = [
        f"{k.replace('ort', 'ORT').replace('openvino', 'OV')} {fmt_ratio(torch_ms, ours[k])}"
        for k in ("ort", "openvino")
        if k in ours
    ]
    parts.append(f"; fp32 ORT/OV vs our torch: {', '.join(vs) if vs and torch_ms else '–'}")
    return " ".join([head, *parts]).replace(" ,", ",").replace(" ;", ";")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scales", nargs="+", default=["s", "x"], choices=["s", "x"])
    ap.add_argument("--photos", nargs="+", default=["zidane", "bus"], choices=list(PHOTOS))
    ap.add_argument("--imgsz", type=int, nargs="+", default=[1024, 640])
    ap.add_argument("--runs", type=int, default=5, help="timed rounds per configuration (medians; >= 5 for a result)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed calls per row before the rounds")
    ap.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    ap.add_argument(
        "--work",
        type=Path,
        default=Path(tempfile.gettempdir()) / "fastsam-bench-runtimes",
        help="cache of checkpoints, photos and exports, reused across runs",
    )
    ap.add_argument("--calib-n", type=int, default=4, help="int8 calibration images (at most the 4 available)")
    ap.add_argument("--shape", choices=["square", "rect"], default="square", help="input shape of the static exports")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per worker process")
    ap.add_argument("--worker", choices=["prepare", "time"], help=argparse.SUPPRESS)
    ap.add_argument("--spec", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        spec = json.loads(args.spec)
        out = prepare_worker(spec) if args.worker == "prepare" else time_worker(spec)
        print(RESULT_TAG + json.dumps(out), flush=True)
        return
    if any(n % 32 for n in args.imgsz):
        ap.error("--imgsz values must be multiples of 32")
    if args.runs < 1 or args.calib_n < 1:
        ap.error("--runs and --calib-n must be >= 1")
    rows = [k for k in ROWS if k in args.rows]
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    assets = assets_dir()
    ckpts = ensure_checkpoints(work, args.scales)
    photos = ensure_photos(work, args.photos, assets)
    calib = calibration_images(assets)[: args.calib_n]
    versions = run_worker("time", {"versions_only": True}, timeout=300)
    print(
        f"work {work}; {versions.get('versions', versions.get('fatal'))}; threads {THREADS}; "
        f"{PREDICT}; int8 calibration: {', '.join(Path(p).name for p in calib)}"
    )
    if args.runs < 5:
        print(f"NOTE: --runs {args.runs}: a smoke test, not a measurement (medians need >= 5 rounds)")
    done = []
    for scale in args.scales:
        for imgsz in args.imgsz:
            for photo in args.photos:
                shape = input_shape(photo, imgsz, args.shape)
                exp_dir = work / "exports" / f"FastSAM-{scale}-{shape[0]}x{shape[1]}"
                cfg = {
                    "scale": scale,
                    "photo": photo,
                    "imgsz": imgsz,
                    "shape": list(shape),
                    "runs": args.runs,
                    "warmup": args.warmup,
                    "rows": rows,
                    "ckpt": str(ckpts[scale]),
                    "image": str(photos[photo]),
                    "exports": str(exp_dir),
                    "calib": calib,
                    "shape_mode": args.shape,
                }
                t0 = time.perf_counter()
                prep = run_worker("prepare", cfg, timeout=args.timeout)
                cfg["artifacts"] = prep.get("artifacts", {})
                cfg["export_errors"] = prep.get("errors", {})
                if "fatal" in prep:
                    cfg["export_errors"] = {k: prep["fatal"] for k in rows if k in ULTRA_EXPORTS + OUR_EXPORTS}
                cfg["export_notes"] = prep.get("notes", {})
                t1 = time.perf_counter()
                result = run_worker("time", cfg, timeout=args.timeout)
                res = report(cfg, result, rows)
                print(f"(prepare {t1 - t0:.0f} s, timing {time.perf_counter() - t1:.0f} s)", flush=True)
                done.append((cfg, res))
    print("\n## Summary (ratios > 1: ours faster)\n")
    for cfg, res in done:
        print(summary_line(cfg, res))
    if not any(c["scale"] == "x" and c["imgsz"] == 1024 for c, _ in done):
        print("(target configuration FastSAM-x @1024 not run)")


# -- worker: exports -----------------------------------------------------------------------------
def _setup_threads() -> None:
    import cv2
    import torch

    torch.set_num_threads(THREADS)
    cv2.setNumThreads(THREADS)


def prepare_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Make the exports of one (model, input shape) that the rows need and the cache lacks."""
    import importlib.util

    _setup_threads()
    ckpt, exp = Path(spec["ckpt"]), Path(spec["exports"])
    shape, rows = tuple(spec["shape"]), spec["rows"]
    source = stamp(ckpt)
    if (exp / "SOURCE").is_file() and (exp / "SOURCE").read_text() != source:
        shutil.rmtree(exp)  # the checkpoint changed: every export of it is stale
    exp.mkdir(parents=True, exist_ok=True)
    (exp / "SOURCE").write_text(source)
    calib_tag = "calib-" + "-".join(Path(p).stem for p in spec["calib"])
    artifacts = {
        "ultra-onnx": exp / "ultra" / f"{ckpt.stem}.onnx",
        "ultra-openvino": exp / "ultra" / f"{ckpt.stem}_openvino_model",
        "ort": exp / "ours" / "model.onnx",
        "openvino": exp / "ours" / "fp32" / "fp32.xml",  # export_model names the IR after its directory
        "int8": exp / "ours" / f"int8-{calib_tag}" / f"int8-{calib_tag}.xml",
    }
    artifacts["bf16"] = artifacts["openvino"]
    errors, notes = {}, {}
    if "ultra-onnx" in rows and importlib.util.find_spec("onnxslim") is None:
        notes["ultra-onnx"] = ["onnxslim not installed: exported without simplification"]
    export_imgsz = shape[0] if shape[0] == shape[1] else list(shape)
    # the bf16 row runs the fp32 IR with half=True: it needs that export
    wanted = sorted({("openvino" if k == "bf16" else k) for k in rows}, key=list(ROWS).index)
    for key in [k for k in wanted if k in artifacts]:
        marker = exp / ".done" / (calib_tag if key == "int8" else key)  # written after a complete export
        if marker.is_file() and artifacts[key].exists():
            continue
        try:
            if key in ULTRA_EXPORTS:
                from ultralytics import FastSAM as UltraFastSAM

                pt = exp / "ultra" / ckpt.name  # ultralytics writes its exports beside the weights
                pt.parent.mkdir(parents=True, exist_ok=True)
                if not pt.exists():
                    try:
                        os.link(ckpt, pt)
                    except OSError:
                        shutil.copy2(ckpt, pt)
                fmt = "onnx" if key == "ultra-onnx" else "openvino"
                written = UltraFastSAM(str(pt)).export(format=fmt, imgsz=export_imgsz, device="cpu")
                if Path(written).resolve() != artifacts[key].resolve():
                    raise RuntimeError(f"ultralytics wrote {written}, expected {artifacts[key]}")
            else:
                from fastsam.export import export_model

                fmt = "onnx" if key == "ort" else "openvino"
                out = artifacts[key] if key == "ort" else artifacts[key].parent
                kw = {"int8": True, "calib": spec["calib"], "calib_n": len(spec["calib"])} if key == "int8" else {}
                written = export_model(ckpt, fmt, out, imgsz=shape, dynamic=False, **kw)
                if Path(written).resolve() != artifacts[key].resolve():
                    raise RuntimeError(f"export wrote {written}, expected {artifacts[key]}")
            marker.parent.mkdir(exist_ok=True)
            marker.write_text(source)
        except Exception as exc:
            errors[key] = f"export failed: {one_line(exc)}"
    return {"artifacts": {k: str(v) for k, v in artifacts.items()}, "errors": errors, "notes": notes}


# -- worker: timing ------------------------------------------------------------------------------
class Timed:
    """Wraps a callable; ``ms`` is the duration of its last call."""

    def __init__(self, fn: Any) -> None:
        self.fn, self.ms = fn, 0.0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.ms = (time.perf_counter() - t) * 1e3


def _pin_ultra_export(model: Any, path: Path) -> list[str]:
    """Re-create ultralytics' ORT session / OpenVINO compiled model with THREADS threads (its
    loaders leave the runtime's all-cores default); everything else as ultralytics set it."""
    backend = model.predictor.model.backend
    if hasattr(backend, "session"):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = THREADS, 1
        backend.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        return []
    import functools

    import openvino as ov

    core = ov.Core()
    xml = next(path.glob("*.xml"))
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": THREADS}  # ultralytics' hint, our threads
    backend.compile_model = functools.partial(core.compile_model, device_name="CPU", config=config)
    backend.ov_compiled_model = backend.compile_model(core.read_model(str(xml), str(xml.with_suffix(".bin"))))
    return [f"inference precision {_precision(backend.ov_compiled_model)}"]


def _precision(compiled: Any) -> str:
    value = compiled.get_property("INFERENCE_PRECISION_HINT")
    return value.to_string() if hasattr(value, "to_string") else str(value)


def time_worker(spec: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import torch
    from ultralytics import FastSAM as UltraFastSAM
    from ultralytics.utils import torch_utils

    import fastsam
    from fastsam.ops import _native
    from fastsam.ops.agreement import best_match_iou

    _setup_threads()
    torch_utils.NUM_THREADS = THREADS  # as bench/everything.py
    if spec.get("versions_only"):
        import onnxruntime
        import openvino
        import ultralytics

        kernels = "C" if _native.available() else "numpy fallback"
        return {
            "versions": f"fastsam {fastsam.__version__}, ultralytics {ultralytics.__version__}, torch "
            f"{torch.__version__}, onnxruntime {onnxruntime.__version__}, openvino "
            f"{openvino.__version__}; mask/NMS kernels: {kernels}"
        }

    image, imgsz, shape = spec["image"], spec["imgsz"], tuple(spec["shape"])
    artifacts = {k: Path(v) for k, v in spec["artifacts"].items()}
    rows = {
        k: {"forward": [], "post": [], "e2e": [], "notes": list(spec["export_notes"].get(k, []))} for k in spec["rows"]
    }
    ultra_imgsz = imgsz if shape[0] == shape[1] else list(shape)

    def ultra_call(model: Any, size: Any) -> tuple[float, float, float, np.ndarray]:
        t = time.perf_counter()
        res = model.predict(image, device="cpu", verbose=False, imgsz=size, **PREDICT)[0]
        masks = res.masks.data if res.masks is not None else torch.zeros(0, *res.orig_shape, dtype=torch.bool)
        e2e = (time.perf_counter() - t) * 1e3
        return res.speed["inference"], res.speed["postprocess"], e2e, masks.cpu().numpy().astype(bool)

    def ours_call(model: Any) -> tuple[float, float, float, np.ndarray]:
        t = time.perf_counter()
        seg = model(image, imgsz=imgsz, **PREDICT)
        t_masks = time.perf_counter()
        masks = seg.masks
        end = time.perf_counter()
        return model.backend.forward.ms, model.postprocess.ms + (end - t_masks) * 1e3, (end - t) * 1e3, masks

    calls: dict[str, Any] = {}
    models: dict[str, Any] = {}
    for key, row in rows.items():
        if key in spec["export_errors"]:
            row["error"] = spec["export_errors"][key]
            continue
        try:
            if key.startswith("ultra-"):
                path = Path(spec["ckpt"]) if key == "ultra-torch" else artifacts[key]
                model = UltraFastSAM(str(path))
                size = imgsz if key == "ultra-torch" else ultra_imgsz
                ultra_call(model, size)  # builds the predictor, which the pinning replaces parts of
                if key != "ultra-torch":
                    row["notes"] += _pin_ultra_export(model, path)
                calls[key] = lambda m=model, s=size: ultra_call(m, s)
            else:
                path = Path(spec["ckpt"]) if key == "torch" else artifacts[key]
                model = fastsam.FastSAM(path, cache_size=0, half=key == "bf16")
                model.backend.forward = Timed(model.backend.forward)
                model.postprocess = Timed(model.postprocess)
                if key in ("openvino", "int8", "bf16"):
                    row["notes"].append(f"inference precision {_precision(model.backend.compiled)}")
                calls[key] = lambda m=model: ours_call(m)
                models[key] = model
        except Exception as exc:
            row["error"] = one_line(exc)

    def guarded(key: str) -> Any:
        try:
            return calls[key]()
        except Exception as exc:
            rows[key]["error"] = one_line(exc)
            del calls[key]
            return None

    for _ in range(spec["warmup"]):
        for key in list(calls):
            guarded(key)
    masks: dict[str, np.ndarray] = {}
    order = list(calls)
    for r in range(spec["runs"]):
        k = r % max(len(order), 1)
        for key in order[k:] + order[:k]:  # rotated each round
            if key not in calls:
                continue
            out = guarded(key)
            if out is None:
                continue
            fwd, post, e2e, m = out
            rows[key]["forward"].append(fwd)
            rows[key]["post"].append(post)
            rows[key]["e2e"].append(e2e)
            masks[key] = m
    for key, row in rows.items():
        if key in masks:
            row["masks"] = len(masks[key])
        elif "error" not in row:
            row["error"] = "no timed run"

    agreement: dict[str, Any] = {}
    wanted = [k for k in OUR_EXPORTS if k in masks]
    if wanted:
        try:
            from fastsam.config import PredictConfig
            from fastsam.io.images import load_image
            from fastsam.ops.letterbox import letterbox

            ref_model = models.get("torch") or fastsam.FastSAM(Path(spec["ckpt"]), cache_size=0)
            cfg = PredictConfig(imgsz=imgsz, **PREDICT)
            # fp32 reference on the exports' own input (a static export pads to its fixed shape; the
            # torch row letterboxes to the minimal rectangle): isolates runtime/precision from padding
            x, geom = letterbox(load_image(image), cfg.input_size, cfg.stride, shape=shape)
            preds, protos = ref_model.forward(x)
            refs = {
                "same": ref_model.postprocess(preds[0].cpu(), protos[0].cpu(), geom, cfg).masks,
                "row": masks["torch"] if "torch" in masks else ref_model(image, imgsz=imgsz, **PREDICT).masks,
            }

            def nonempty(m: np.ndarray) -> np.ndarray:
                return m[m.reshape(len(m), -1).any(1)]

            for key in wanted:
                other = nonempty(masks[key])
                agreement[key] = {"masks": len(masks[key]), "empty": len(masks[key]) - len(other)}
                for name, ref in refs.items():
                    # FastSAM keeps empty masks; their IoU is undefined (0 in mask_iou_matrix), so the
                    # share is over the non-empty reference masks and the empty ones are counted apart
                    full = nonempty(ref)
                    best = best_match_iou(full, other)
                    agreement[key][name] = {
                        "matched": float((best >= 0.9).mean()) if len(best) else 1.0,
                        "mean_iou": float(best.mean()) if len(best) else 1.0,
                        "reference": len(full),
                        "empty": len(ref) - len(full),
                    }
            agreement["_shapes"] = {
                "same": "x".join(map(str, geom.input_size)),
                "row": "x".join(map(str, letterbox(load_image(image), cfg.input_size)[1].input_size)),
            }
        except Exception as exc:
            agreement = {k: {"error": one_line(exc)} for k in wanted}
    return {"rows": rows, "agreement": agreement}


if __name__ == "__main__":
    main()
