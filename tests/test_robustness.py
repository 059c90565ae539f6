"""Issue 10: one test per CLI / API defect found by hostile-input testing (each failed before its fix).

All runs use the shipped demo model (small and fast) and the shipped example photo unless a
defect needs more.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fastsam import FastSAM, FastSAMError
from fastsam.cli import main
from fastsam.prompts import select_by_boxes, validate_boxes
from fastsam.viz import overlay_masks

ROOT = Path(__file__).resolve().parents[1]
SHAPES = ROOT / "examples" / "shapes.jpg"  # 960x640


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- 1. outputs never replace inputs
def test_segment_out_dot_refuses_to_replace_the_input_png(tmp_path, capsys, monkeypatch, usage_error):
    photo = tmp_path / "photo.png"
    Image.open(SHAPES).save(photo)
    before = _snapshot(tmp_path)
    monkeypatch.chdir(tmp_path)
    rc = main(["segment", "photo.png", "--out", "."])
    line = usage_error(rc)
    assert "would overwrite the input photo.png" in line
    assert _snapshot(tmp_path) == before  # nothing written, nothing replaced


def test_segment_dir_into_itself_refuses_only_on_collision(tmp_path, capsys, usage_error):
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(SHAPES, photos / "a.jpg")
    Image.open(SHAPES).save(photos / "a.png")  # a.jpg's overlay would be photos/a.png
    before = _snapshot(photos)
    rc = main(["segment", str(photos), "--out", str(photos)])
    assert "a.png" in usage_error(rc)
    assert _snapshot(photos) == before
    (photos / "a.png").unlink()
    assert main(["segment", str(photos), "--out", str(photos)]) == 0  # no collision: outputs beside the input
    assert (photos / "a.jpg").read_bytes() == SHAPES.read_bytes()
    assert json.loads((photos / "a.json").read_text())


def test_output_that_is_a_hard_link_to_the_input_is_refused(tmp_path, capsys, usage_error):
    src = tmp_path / "in" / "x.jpg"
    src.parent.mkdir()
    shutil.copy(SHAPES, src)
    out = tmp_path / "out"
    out.mkdir()
    os.link(src, out / "x.png")  # same file under the output's name
    rc = main(["segment", str(src), "--out", str(out)])
    assert "would overwrite" in usage_error(rc)
    assert src.read_bytes() == SHAPES.read_bytes()


def test_writes_leave_no_temporary_files(tmp_path):
    assert main(["segment", str(SHAPES), "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.json", "shapes.json", "shapes.png"]


# ---------------------------------------------------------------- 2. devices
@pytest.mark.parametrize("device", ["bogus", "cuda:99", *(["cuda"] if not torch.cuda.is_available() else [])])
def test_bad_or_absent_device_is_one_line(tmp_path, capsys, device, usage_error):
    rc = main(["segment", str(SHAPES), "--device", device, "--out", str(tmp_path / "o")])
    assert "device" in usage_error(rc)
    assert not (tmp_path / "o").exists()
    with pytest.raises(FastSAMError, match="device"):
        FastSAM(device=device)


# ---------------------------------------------------------------- 3. empty text selections, non-finite floats
def test_text_prompt_that_selects_nothing_writes_an_empty_record(tmp_path, capsys):
    rc = main(["prompt", str(SHAPES), "--text", "a red star", "--text-threshold", "0.99", "--out", str(tmp_path)])
    assert rc == 0, capsys.readouterr().err
    records = json.loads((tmp_path / "shapes.json").read_text())
    assert len(records) == 1 and records[0]["area"] == 0
    assert records[0]["prompt"] == {"type": "text", "text": "a red star", "indices": []}
    overlay = np.asarray(Image.open(tmp_path / "shapes.png").convert("RGB"))
    assert np.array_equal(overlay, np.asarray(Image.open(SHAPES).convert("RGB")))  # nothing drawn


def test_text_prompt_on_an_image_without_masks(tmp_path, capsys):
    blank = tmp_path / "blank.png"
    Image.new("RGB", (200, 120), (128, 128, 128)).save(blank)
    assert len(FastSAM()(blank)) == 0
    rc = main(["prompt", str(blank), "--text", "a red star", "--out", str(tmp_path / "o")])
    assert rc == 0, capsys.readouterr().err
    records = json.loads((tmp_path / "o" / "blank.json").read_text())
    assert [r["prompt"]["indices"] for r in records] == [[]]
    assert Image.open(tmp_path / "o" / "blank.png").size == (200, 120)


def test_overlay_of_no_masks_is_the_image():
    img = np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    out = overlay_masks(img, np.zeros((0, 7, 9), bool))
    assert np.array_equal(out, img) and out is not img


@pytest.mark.parametrize("option", ["--text-threshold", "--conf", "--iou"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_numbers_are_refused(tmp_path, capsys, option, value, usage_error):
    rc = main(["prompt", str(SHAPES), "--text", "a star", option, value, "--out", str(tmp_path / "o")])
    line = usage_error(rc)
    assert option in line and "finite" in line
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------- 4. input size and pixel caps
def test_imgsz_has_an_upper_bound_that_an_option_raises(tmp_path, capsys, usage_error):
    rc = main(["segment", str(SHAPES), "--imgsz", "100000", "--out", str(tmp_path / "o")])
    assert "--max-imgsz" in usage_error(rc)
    rc = main(["segment", str(SHAPES), "--imgsz", "100000", "--max-imgsz", "200000", "--out", str(tmp_path / "o")])
    assert "imgsz" in usage_error(rc)  # still bounded by the API's hard limit
    with pytest.raises(FastSAMError, match="imgsz"):
        FastSAM()(SHAPES, imgsz=100000)
    assert not (tmp_path / "o").exists()


def test_pixel_cap_is_checked_before_decoding(tmp_path, capsys, usage_error):
    huge = tmp_path / "huge.png"
    Image.new("1", (12000, 12000)).save(huge)  # a few KB on disk, 144 MP (432 MB as RGB) decoded
    assert huge.stat().st_size < 200_000
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rc = main(["segment", str(huge), "--out", str(tmp_path / "o")])
    line = usage_error(rc)
    assert "12000x12000" in line and "--max-pixels" in line
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB: nothing decoded
    small = tmp_path / "small.png"
    Image.open(SHAPES).save(small)
    rc = main(["segment", str(small), "--max-pixels", "100000", "--out", str(tmp_path / "o")])
    assert "960x640" in usage_error(rc)
    assert main(["segment", str(small), "--max-pixels", "700000", "--out", str(tmp_path / "o")]) == 0


# ---------------------------------------------------------------- 5. FIFOs and devices as sources
def test_fifo_source_is_refused_at_once(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    proc = subprocess.run(
        [sys.executable, "-m", "fastsam.cli", "segment", str(fifo), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [f"fastsam: error: {fifo}: is a FIFO, not a regular file"]
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------- 6. messages users can act on
def test_clip_weights_that_are_an_image(tmp_path, capsys, usage_error):
    rc = main(["prompt", str(SHAPES), "--text", "a star", "--clip-weights", str(SHAPES), "--out", str(tmp_path)])
    line = usage_error(rc)
    assert "not a CLIP weight file" in line and "KeyError" not in line


def test_unknown_or_inapplicable_clip_model(tmp_path, capsys, usage_error):
    rc = main(["prompt", str(SHAPES), "--text", "a star", "--clip-model", "ViT-Nope-99", "--out", str(tmp_path)])
    assert "unknown CLIP model 'ViT-Nope-99'" in usage_error(rc)
    rc = main(["prompt", str(SHAPES), "--text", "a star", "--clip-model", "ViT-B-32", "--out", str(tmp_path)])
    assert "does not apply" in usage_error(rc)  # the demo CLIP names its own architecture


def test_convert_into_an_existing_directory(tmp_path, capsys, usage_error):
    from fastsam.weights import default_model_path

    target = tmp_path / "existing_dir"
    target.mkdir()
    rc = main(["convert", str(default_model_path()), str(target)])
    line = usage_error(rc)
    assert "existing_dir is a directory" in line and ".tmp" not in line
    assert not any(target.iterdir())


def test_negative_coordinates_parse_then_validate(tmp_path, capsys, usage_error):
    rc = main(["prompt", str(SHAPES), "--point", "-1,10", "--out", str(tmp_path / "o")])
    line = usage_error(rc)
    assert "point 0 (-1, 10) lies outside the 960x640 image" in line
    rc = main(["prompt", str(SHAPES), "--box", "-5,-5,300,200", "--out", str(tmp_path / "b")])
    assert rc == 0, capsys.readouterr().err  # reaches past the border: clipped (see 7)
    assert json.loads((tmp_path / "b" / "shapes.json").read_text())[0]["prompt"]["box"] == [-5, -5, 300, 200]


def test_record_count_is_singular_for_one(tmp_path, capsys):
    assert main(["prompt", str(SHAPES), "--point", "480,320", "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "shapes.jpg: 1 record -> " in err and "records" not in err


# ---------------------------------------------------------------- 7. boxes past the border are clipped
def test_boxes_are_clipped_like_the_original(tmp_path, capsys):
    seg = FastSAM()(SHAPES)
    assert np.array_equal(
        validate_boxes([[0, 0, 2000, 2000], [-10, 100, 400, 900]], (640, 960)), [[0, 0, 960, 640], [0, 100, 400, 640]]
    )
    over = select_by_boxes(seg, [[0, 0, 2000, 2000], [100, 300, 500, 9000]])
    inside = select_by_boxes(seg, [[0, 0, 960, 640], [100, 300, 500, 640]])
    assert np.array_equal(over, inside) and (inside >= 0).all()
    for bad, why in (([2000, 0, 2100, 50], "outside"), ([10, 10, 10, 50], "empty"), ([50, 10, 10, 50], "empty")):
        with pytest.raises(FastSAMError, match=why):
            validate_boxes([bad], (640, 960))
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["prompt", str(SHAPES), "--box", "0,0,2000,2000", "--out", str(a)]) == 0
    assert main(["prompt", str(SHAPES), "--box", "0,0,960,640", "--out", str(b)]) == 0
    ra, rb = (json.loads((d / "shapes.json").read_text()) for d in (a, b))
    assert [r["segmentation"] for r in ra] == [r["segmentation"] for r in rb] and ra[0]["area"] > 0
