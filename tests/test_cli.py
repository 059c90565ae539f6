"""Tests of the ``fastsam`` command line, run in-process through ``fastsam.cli.main``
(plus one run of the installed console script)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_utils
import pytest
from PIL import Image

from fastsam import FastSAM, load_model
from fastsam.cli import main

ROOT = Path(__file__).resolve().parents[1]
SHAPES = ROOT / "examples" / "shapes.jpg"
RECORD_KEYS = {
    "segmentation",
    "area",
    "bbox",
    "predicted_iou",
    "stability_score",
    "point_coords",
    "crop_box",
    "box_xyxy",
}


@pytest.fixture(scope="module")
def zidane(ultra_assets: Path) -> Path:
    return ultra_assets / "zidane.jpg"


@pytest.fixture(scope="module")
def segment(small_ckpt: Path, tmp_path_factory):
    """Run ``fastsam segment SOURCES --model small_ckpt --imgsz 320 [ARGS]`` into a fresh directory."""

    def run(*sources, args=()):
        out = tmp_path_factory.mktemp("out")
        rc = main(
            ["segment", *map(str, sources), "--model", str(small_ckpt), "--imgsz", "320", "--out", str(out), *args]
        )
        return rc, out

    return run


@pytest.fixture(scope="module")
def default_run(segment, zidane):
    rc, out = segment(zidane)
    assert rc == 0
    return out


def _records(path: Path) -> list[dict]:
    return json.loads(path.read_text())


def _decode(records: list[dict]) -> np.ndarray:
    return np.stack([mask_utils.decode(r["segmentation"]).astype(bool) for r in records])


def _error_lines(err: str) -> list[str]:
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("fastsam: error:")]


# ------------------------------------------------------------------------------ segment
def test_segment_writes_json_and_png(default_run, small_ckpt, zidane):
    """Records in SAM's coco_rle format that match the API's masks; an overlay PNG."""
    assert sorted(p.name for p in default_run.iterdir()) == ["index.json", "zidane.json", "zidane.png"]
    records = _records(default_run / "zidane.json")
    assert isinstance(records, list) and len(records) > 50
    for r in records:
        assert set(r) == RECORD_KEYS
        assert r["segmentation"]["size"] == [720, 1280] and isinstance(r["segmentation"]["counts"], str)
        assert r["crop_box"] == [0, 0, 1280, 720]
    scores = [r["predicted_iou"] for r in records]
    assert scores == sorted(scores, reverse=True)
    api = FastSAM(small_ckpt, cache_size=0)(zidane, imgsz=320)
    masks = _decode(records)
    np.testing.assert_array_equal(masks, api.masks)
    np.testing.assert_allclose(scores, api.scores, rtol=1e-6)
    np.testing.assert_array_equal([r["area"] for r in records], masks.sum((1, 2)))
    for r in records:
        np.testing.assert_array_equal(r["bbox"], mask_utils.toBbox(r["segmentation"]))

    png = Image.open(default_run / "zidane.png")
    assert png.size == (1280, 720) and png.mode == "RGB"
    drawn, photo = np.asarray(png), np.asarray(Image.open(zidane).convert("RGB"))
    covered = masks.any(0)
    changed = (drawn != photo).any(2)
    assert changed[covered].mean() > 0.5


def _far_from_masks(masks: np.ndarray) -> np.ndarray:
    """Pixels at least 3 px away from every mask (outside fills and 2 px contours)."""
    union = masks.any(0).astype(np.uint8)
    return cv2.dilate(union, np.ones((7, 7), np.uint8)) == 0


def test_max_det_and_untouched_background(segment, zidane):
    """--max-det 3 gives 3 records; the overlay leaves pixels far from every mask unchanged."""
    rc, out = segment(zidane, args=["--max-det", "3"])
    assert rc == 0
    records = _records(out / "zidane.json")
    assert len(records) == 3
    far = _far_from_masks(_decode(records))
    assert far.mean() > 0.1  # not vacuous
    drawn, photo = np.asarray(Image.open(out / "zidane.png")), np.asarray(Image.open(zidane).convert("RGB"))
    np.testing.assert_array_equal(drawn[far], photo[far])
    assert (drawn[~far] != photo[~far]).any()


def test_conf_and_iou_are_honoured(segment, zidane, default_run):
    default = _records(default_run / "zidane.json")
    rc, out = segment(zidane, args=["--conf", "0.6"])
    assert rc == 0
    hi = _records(out / "zidane.json")
    assert 0 < len(hi) < len(default) and all(r["predicted_iou"] > 0.6 for r in hi)
    rc, out = segment(zidane, args=["--conf", "0.6", "--iou", "0.5"])
    assert rc == 0
    strict = _records(out / "zidane.json")
    assert 0 < len(strict) < len(hi)  # more suppression at a lower NMS threshold


def test_no_retina(segment, zidane, default_run):
    """--no-retina: same detections, different (low-resolution) masks at the original size."""
    default = _records(default_run / "zidane.json")
    rc, out = segment(zidane, args=["--no-retina"])
    assert rc == 0
    low = _records(out / "zidane.json")
    assert [r["box_xyxy"] for r in low] == [r["box_xyxy"] for r in default]
    assert all(r["segmentation"]["size"] == [720, 1280] for r in low)
    assert [r["segmentation"]["counts"] for r in low] != [r["segmentation"]["counts"] for r in default]


def _small_images(directory: Path, n: int) -> list[Path]:
    photo = np.asarray(Image.open(SHAPES).convert("RGB"))
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = directory / f"img{i}.png"
        Image.fromarray(photo[i * 200 : i * 200 + 240, i * 300 : i * 300 + 320]).save(p)
        paths.append(p)
    return paths


def test_directory_source(segment, tmp_path):
    _small_images(tmp_path / "src", 2)
    (tmp_path / "src" / "readme.txt").write_text("skipped")
    rc, out = segment(tmp_path / "src", args=["--max-det", "20"])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["img0.json", "img0.png", "img1.json", "img1.png", "index.json"]


def test_same_stem_inputs_do_not_overwrite(segment, tmp_path):
    a, b = _small_images(tmp_path / "a", 2)
    (tmp_path / "b").mkdir()
    b = b.rename(tmp_path / "b" / a.name)
    rc, out = segment(a, b, args=["--max-det", "20"])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["img0.json", "img0.png", "img0_1.json", "img0_1.png", "index.json"]
    first, second = _records(out / "img0.json"), _records(out / "img0_1.json")
    assert first and second and first != second


# -------------------------------------------------------------------------- user errors
def test_missing_image(segment, tmp_path, capsys, usage_error):
    rc, _ = segment(tmp_path / "nope.jpg")
    assert "nope.jpg" in usage_error(rc)


def test_corrupt_image(segment, tmp_path, capsys, usage_error):
    bad = tmp_path / "x.jpg"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    rc, _ = segment(bad)
    assert "x.jpg" in usage_error(rc)


@pytest.mark.parametrize("kind", ["missing", "jpeg"])
def test_bad_model_path(zidane, tmp_path, capsys, kind, usage_error):
    model = tmp_path / "none.pt" if kind == "missing" else zidane
    rc = main(["segment", str(zidane), "--model", str(model), "--out", str(tmp_path / "out")])
    usage_error(rc)
    assert not (tmp_path / "out" / "zidane.json").exists()


@pytest.mark.parametrize("args", [["--conf", "2"], ["--iou", "-1"], ["--imgsz", "0"], ["--max-det", "0"]])
def test_out_of_range_option(segment, zidane, capsys, args, usage_error):
    rc, _ = segment(zidane, args=args)
    line = usage_error(rc)
    name = args[0].lstrip("-")
    assert name in line or name.replace("-", "_") in line, line


def test_unknown_option_exits_2(segment, zidane, capsys, usage_error):
    rc, out = segment(zidane, args=["--bogus"])
    assert "--bogus" in usage_error(rc)  # one line, no usage block
    assert not any(out.iterdir())


def test_output_directory_is_a_file(zidane, small_ckpt, tmp_path, capsys, usage_error):
    out = tmp_path / "out"
    out.write_text("a file")
    rc = main(["segment", str(zidane), "--model", str(small_ckpt), "--imgsz", "320", "--out", str(out)])
    assert "out" in usage_error(rc)
    assert out.read_text() == "a file"


def test_batch_with_one_bad_image(segment, tmp_path, capsys):
    """The good image is still written; the bad one is reported; exit code 2."""
    (good,) = _small_images(tmp_path / "src", 1)
    bad = tmp_path / "src" / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    rc, out = segment(bad, good, args=["--max-det", "20"])
    err = capsys.readouterr().err
    assert rc == 2
    errors = _error_lines(err)
    assert len(errors) == 1 and "bad.jpg" in errors[0]
    assert sorted(p.name for p in out.iterdir()) == ["img0.json", "img0.png", "index.json"]
    assert _records(out / "img0.json")
    assert "bad.jpg" in json.loads((out / "index.json").read_text())["images"][0]["error"]


# ------------------------------------------------------------------------------ convert
def test_convert(small_ckpt, tmp_path, capsys):
    dst = tmp_path / "w" / "s.safetensors"
    assert main(["convert", str(small_ckpt), str(dst)]) == 0
    assert str(dst) in capsys.readouterr().err
    net = load_model(dst)
    assert sum(p.numel() for p in net.parameters()) > 1_000_000


def test_convert_refuses_to_overwrite_its_input(small_ckpt, tmp_path, capsys, usage_error):
    src = tmp_path / "s.pt"
    src.write_bytes(small_ckpt.read_bytes())
    rc = main(["convert", str(src), str(tmp_path / "." / "s.pt")])
    usage_error(rc)
    assert src.read_bytes() == small_ckpt.read_bytes()


# ------------------------------------------------------------------------- console script
def test_console_script(small_ckpt, tmp_path):
    """The installed ``fastsam`` entry point runs a segmentation end to end."""
    exe = Path(sys.executable).parent / ("fastsam.exe" if os.name == "nt" else "fastsam")
    proc = subprocess.run(
        [
            str(exe),
            "segment",
            str(SHAPES),
            "--model",
            str(small_ckpt),
            "--imgsz",
            "256",
            "--max-det",
            "5",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert len(_records(tmp_path / "shapes.json")) == 5
    assert Image.open(tmp_path / "shapes.png").size == (960, 640)


@pytest.mark.parametrize("native,expected", [("1", "C kernels: built;"), ("0", "C kernels: not built or disabled")])
def test_version_says_whether_the_c_kernels_run(native, expected, monkeypatch, capsys):
    monkeypatch.setenv("FASTSAM_NATIVE", native)
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("fastsam ") and expected in out
    # the runtimes that are installed here (the test extra has all three)
    assert out.rstrip().endswith("backends: torch, onnxruntime, openvino)")
