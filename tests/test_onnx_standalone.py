"""examples/onnx_standalone.py, run in a venv that has onnxruntime, numpy and Pillow but neither torch
nor fastsam, gives the masks of ``fastsam segment`` / ``fastsam prompt`` on the same ONNX file."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from fastsam import FastSAM
from fastsam.cli import main
from fastsam.export import export_model
from fastsam.formats import rle_decode
from fastsam.prompts import select_by_boxes, select_by_points

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "onnx_standalone.py"
DEMO = ROOT / "src" / "fastsam" / "weights" / "fastsam-demo.safetensors"
# what the example imports, and what onnxruntime itself imports
PACKAGES = ("numpy", "numpy.libs", "PIL", "pillow.libs", "onnxruntime", "flatbuffers", "google", "packaging")


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A venv holding only numpy, Pillow and onnxruntime (linked from this environment)."""
    venv = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    site = Path(
        subprocess.check_output(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
    )
    here = Path(sysconfig.get_paths()["purelib"])
    for name in PACKAGES:
        if (here / name).exists():
            (site / name).symlink_to(here / name)
    probe = (
        "import onnxruntime, numpy, PIL\nfor m in ('torch', 'fastsam', 'cv2'):\n    try:\n        __import__(m)\n"
        "        print('has', m)\n    except ImportError:\n        pass\n"
    )
    out = subprocess.run([python, "-c", probe], capture_output=True, text=True, cwd=venv)
    assert out.returncode == 0 and out.stdout == "", out.stdout + out.stderr
    return python


@pytest.fixture(scope="module")
def onnx_models(ultra_ckpts: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("standalone-exports")
    return {
        "demo": export_model(DEMO, "onnx", out / "demo.onnx", dynamic=True),
        "s": export_model(ultra_ckpts / "FastSAM-s.pt", "onnx", out / "s.onnx", imgsz=640, dynamic=True),
        "s-static": export_model(ultra_ckpts / "FastSAM-s.pt", "onnx", out / "s-static.onnx", imgsz=(384, 640)),
    }


def standalone(python: str, *args: object) -> subprocess.CompletedProcess:
    return subprocess.run([python, str(SCRIPT), *map(str, args)], capture_output=True, text=True, cwd=ROOT)


def segment_masks(model: Path, image: Path, out: Path, *extra: str) -> np.ndarray:
    """Masks that ``fastsam segment`` writes (its coco_rle records, in its order)."""
    assert main(["segment", str(image), "--model", str(model), "--out", str(out), "--no-progress", *extra]) == 0
    records = json.loads((out / f"{image.stem}.json").read_text())
    return np.array([rle_decode(r["segmentation"]) for r in records], dtype=bool)


@pytest.mark.parametrize(
    "name,image,imgsz",
    [
        ("demo", ROOT / "examples" / "scene.jpg", None),  # 320x320 upscaled to 448
        ("demo", ROOT / "examples" / "shapes.jpg", None),
        ("s", "zidane.jpg", 640),
        ("s", "bus.jpg", 512),  # ultralytics' photos, downscaled
        ("s-static", "zidane.jpg", None),  # the static graph's own shape
    ],
)
def test_masks_equal_fastsam_segment(bare_python, onnx_models, ultra_assets, tmp_path, name, image, imgsz) -> None:
    image = image if isinstance(image, Path) else ultra_assets / image
    model = onnx_models[name]
    size = ["--imgsz", str(imgsz)] if imgsz else []
    run = standalone(bare_python, model, image, "--out", tmp_path / "alone", *size)
    assert run.returncode == 0, run.stderr
    got = np.load(tmp_path / "alone" / f"{image.stem}.npz")
    ref = segment_masks(model, image, tmp_path / "cli", *size)
    assert len(ref) > 5 and got["masks"].shape == ref.shape
    assert np.array_equal(got["masks"], ref)  # bit-identical: same letterbox, NMS and float32 mask arithmetic
    api = FastSAM(model, cache_size=0)(image, imgsz=imgsz)
    np.testing.assert_array_equal(got["boxes"], api.boxes)
    np.testing.assert_array_equal(got["scores"], api.scores)
    assert (np.diff(got["scores"]) <= 0).all()
    png = tmp_path / "alone" / f"{image.stem}.png"
    from PIL import Image

    with Image.open(png) as im:
        assert im.size == (ref.shape[2], ref.shape[1])


def test_point_and_box_prompts_equal_fastsam(bare_python, onnx_models, tmp_path) -> None:
    image = ROOT / "examples" / "shapes.jpg"
    model = onnx_models["demo"]
    segments = FastSAM(model, cache_size=0)(image)
    # a point inside the largest-score mask, a box around the second mask
    r0, _r1, c0, _c1 = segments.regions[0]
    ys, xs = np.nonzero(segments.crops[0])
    point = (int(xs[len(xs) // 2]) + c0 + 0.5, int(ys[len(ys) // 2]) + r0 + 0.5)
    box = [float(v) for v in segments.boxes[1]]
    run = standalone(
        bare_python,
        model,
        image,
        "--out",
        tmp_path,
        "--point",
        "{:g},{:g}".format(*point),
        "--box",
        ",".join(f"{v:g}" for v in box),
    )
    assert run.returncode == 0, run.stderr
    got = np.load(tmp_path / f"{image.stem}.npz")
    sel = select_by_points(segments, [point])
    np.testing.assert_array_equal(got["point_indices"], sel.indices)
    np.testing.assert_array_equal(got["point_mask"], sel.mask)
    assert got["point_mask"].any()
    best = int(select_by_boxes(segments, [[float(f"{v:g}") for v in box]])[0])
    assert int(got["box_index"]) == best >= 0
    np.testing.assert_array_equal(got["box_mask"], segments.masks[best])
    # and as the CLI's prompt command writes it
    assert (
        main(
            [
                "prompt",
                str(image),
                "--model",
                str(model),
                "--point",
                "{:g},{:g}".format(*point),
                "--out",
                str(tmp_path / "cli"),
                "--no-progress",
            ]
        )
        == 0
    )
    records = json.loads((tmp_path / "cli" / f"{image.stem}.json").read_text())
    np.testing.assert_array_equal(rle_decode(records[0]["segmentation"]), got["point_mask"])


def test_errors_exit_2_with_one_line(bare_python, onnx_models, tmp_path, foreign_onnx) -> None:
    image = ROOT / "examples" / "shapes.jpg"
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not a protobuf at all" * 10)
    foreign = foreign_onnx
    bad_image = tmp_path / "bad.jpg"
    bad_image.write_bytes(b"\xff\xd8\xff garbage")
    demo = onnx_models["demo"]
    cases = [
        ((tmp_path / "missing.onnx", image), "missing.onnx: file not found"),
        ((demo, tmp_path / "missing.jpg"), "missing.jpg: file not found"),
        ((corrupt, image), "not a readable ONNX model"),
        ((foreign, image), "has no fastsam metadata"),
        ((demo, bad_image), "not a readable image"),
        ((demo, image, "--point", "5000,3"), "lies outside the 960x640 image"),
        ((demo, image, "--point", "1,a"), "--point must be 2 comma-separated numbers"),
        ((demo, image, "--box", "10,10,5,40"), "is empty or outside"),
        ((onnx_models["s-static"], image, "--imgsz", "512"), "static export for 384x640"),
        ((demo, image, "--imgsz", "0"), "--imgsz must be positive"),
    ]
    for args, message in cases:
        run = standalone(bare_python, *args, "--out", tmp_path / "o")
        assert run.returncode == 2, (args, run.stderr)
        assert message in run.stderr and "Traceback" not in run.stderr, (args, run.stderr)
        assert len(run.stderr.strip().splitlines()) == 1, run.stderr
    # an output that would replace the input is refused, and the input is untouched
    src = tmp_path / "in" / "shapes.png"
    src.parent.mkdir()
    src.write_bytes(image.read_bytes())
    before = src.read_bytes()
    run = standalone(bare_python, demo, src, "--out", src.parent)
    assert run.returncode == 2 and "would replace the input" in run.stderr
    assert src.read_bytes() == before
