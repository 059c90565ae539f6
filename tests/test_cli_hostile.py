"""Hostile command lines, table-driven: every one exits with 2 and one line on stderr, prints no
traceback, changes no file that existed before the run and leaves no partial output.

Each case runs in a fresh copy of a small workspace (a photo, broken files, a weight file, an empty
directory) with the workspace as the current directory; the whole tree is compared byte for byte
before and after.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from fastsam.cli import main
from fastsam.weights import default_model_path

ROOT = Path(__file__).resolve().parents[1]
SHAPES = ROOT / "examples" / "shapes.jpg"  # 960x640

SEG = ["segment", "photo.jpg"]
PROMPT = ["prompt", "photo.jpg"]
CASES: list[tuple[list[str], str]] = [
    # sources
    (["segment", "missing.jpg"], "missing.jpg: file not found"),
    (["segment", "corrupt.jpg"], "corrupt.jpg"),
    (["segment", "empty.png"], "empty.png"),
    (["segment", "truncated.png"], "truncated.png"),
    (["segment", "notes.txt"], "notes.txt: not a readable image"),
    (["segment", "noimages"], "contains no images"),
    (["segment"], "required: sources"),
    (["segment", "photo.png", "--out", "."], "would overwrite the input photo.png"),
    (["segment", "photo.png", "--out", "./sub/.."], "would overwrite the input photo.png"),
    # weights
    ([*SEG, "--model", "missing.pt"], "missing.pt"),
    ([*SEG, "--model", "photo.jpg"], "photo.jpg"),
    ([*SEG, "--model", "noimages"], "noimages"),
    ([*SEG, "--model", "truncated.safetensors"], "truncated.safetensors"),
    # numbers and sizes
    ([*SEG, "--conf", "2"], "conf"),
    ([*SEG, "--conf", "nan"], "--conf: expected a finite number"),
    ([*SEG, "--iou", "-inf"], "--iou: expected a finite number"),
    ([*SEG, "--iou", "-1"], "iou"),
    ([*SEG, "--imgsz", "0"], "--imgsz"),
    ([*SEG, "--imgsz", "abc"], "--imgsz"),
    ([*SEG, "--imgsz", "100000"], "--max-imgsz"),
    ([*SEG, "--max-det", "0"], "--max-det"),
    ([*SEG, "--max-det", "-5"], "--max-det"),
    ([*SEG, "--max-pixels", "0"], "--max-pixels"),
    ([*SEG, "--max-pixels", "1000"], "over the limit of 1000"),
    ([*SEG, "--device", "bogus"], "unknown device 'bogus'"),
    ([*SEG, "--device", "cuda:99"], "cuda:99"),
    ([*SEG, "--bogus"], "--bogus"),
    (["bogus-command"], "bogus-command"),
    # prompts
    (PROMPT, "give at least one --point, --box or --text"),
    ([*PROMPT, "--point", "1"], "--point"),
    ([*PROMPT, "--point", "a,b"], "--point"),
    ([*PROMPT, "--point", "1,2,5"], "point label must be 0 or 1"),
    ([*PROMPT, "--point", "nan,1"], "--point"),
    ([*PROMPT, "--point", "-1,10"], "lies outside the 960x640 image"),
    ([*PROMPT, "--point", "5000,10"], "lies outside the 960x640 image"),
    ([*PROMPT, "--box", "10,10,5,5"], "is empty"),
    ([*PROMPT, "--box", "-50,-50,-10,-10"], "lies outside the 960x640 image"),
    ([*PROMPT, "--box", "1,2,3"], "--box"),
    ([*PROMPT, "--point-mode", "bogus"], "--point-mode"),
    ([*PROMPT, "--text", ""], "text prompts must be non-empty"),
    ([*PROMPT, "--text", "a star", "--clip-weights", "photo.jpg"], "not a CLIP weight file"),
    ([*PROMPT, "--text", "a star", "--clip-weights", "missing.pt"], "CLIP weights not found"),
    ([*PROMPT, "--text", "a star", "--clip-model", "nope"], "unknown CLIP model 'nope'"),
    ([*PROMPT, "--text", "a star", "--text-threshold", "nan"], "--text-threshold"),
    # convert
    (["convert", "missing.pt", "x.safetensors"], "missing.pt"),
    (["convert", "photo.jpg", "x.safetensors"], "photo.jpg"),
    (["convert", "w.safetensors", "noimages"], "noimages is a directory"),
    (["convert", "w.safetensors", "./w.safetensors"], "would overwrite the input"),
    (["convert", "w.safetensors", "x.safetensors", "--predict-imgsz", "64"], "training checkpoints"),
    (["convert", "w.safetensors", "x.safetensors", "--dtype", "int3"], "--dtype"),
    # synth, val, train, serve
    (["synth", "--n", "-1", "--out", "s"], "--n"),
    (["synth", "--size", "4", "4", "--out", "s"], "--size"),
    (["val", "--data", "missing"], "missing"),
    (["val", "--data", "noimages", "--device", "bogus"], "unknown device"),
    (["val", "--data", "noimages", "--limit", "0"], "--limit"),
    (["train"], "--data"),
    (["train", "--data", "missing"], "missing"),
    (["train", "--data", "noimages", "--device", "bogus"], "unknown device"),
    (["train", "--data", "noimages", "--lr0", "nan"], "--lr0"),
    (["train", "--data", "noimages", "--epochs", "0"], "--epochs"),
    (["serve", "--port", "70000"], "--port"),
    (["serve", "--max-upload-mb", "nan"], "--max-upload-mb"),
    (["serve", "--device", "bogus"], "unknown device"),
    (["serve", "--conf", "5"], "conf"),
    (["serve", "--max-pending", "0"], "--max-pending"),
    (["serve", "--max-prompt-kb", "-1"], "--max-prompt-kb"),
]
if torch.cuda.is_available():  # the CI machine has no GPU: there "cuda" itself is the absent device
    CASES = [c for c in CASES if c[0][-1] != "cuda:99"]
else:
    CASES.append(([*SEG, "--device", "cuda"], "CUDA is not available"))


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("workspace")
    shutil.copy(SHAPES, root / "photo.jpg")
    Image.open(SHAPES).save(root / "photo.png")
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8)
    (root / "empty.png").write_bytes(b"")
    (root / "truncated.png").write_bytes((root / "photo.png").read_bytes()[:2000])
    (root / "notes.txt").write_text("not an image\n")
    (root / "noimages").mkdir()
    (root / "noimages" / "readme.md").write_text("nothing here\n")
    (root / "sub").mkdir()
    shutil.copy(default_model_path(), root / "w.safetensors")
    (root / "truncated.safetensors").write_bytes(default_model_path().read_bytes()[:5000])
    return root


def _tree(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("argv,message", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_hostile_command_line(template, tmp_path, monkeypatch, capsys, argv, message):
    work = tmp_path / "w"
    shutil.copytree(template, work)
    before = _tree(work)
    monkeypatch.chdir(work)
    rc = main(argv)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    lines = captured.err.strip().splitlines()
    assert rc == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith("fastsam: error: "), captured.err
    assert message in lines[0], lines[0]
    assert _tree(work) == before  # nothing changed, nothing added (no output directory, no temp file)
